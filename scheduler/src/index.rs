//! Indexes over the leader's instances, kept in step with every change, so that a reconcile
//! pass costs what changed rather than the size of the fleet: instances per agent, the launch
//! queue, instances whose task ended, the resources each agent has given out, the apps whose
//! instance count must be checked, each app's counts by condition and its placed instances as
//! the matcher reads them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stride_core::instance::{Condition, Goal, Instance, InstanceId};
use stride_core::matching::PlacedInstance;
use stride_core::{App, PathId, Timestamp};

/// What a placed instance holds on its agent, fixed when it was placed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Held {
    pub agent: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub ports: Vec<u32>,
}

/// The sum of what an agent's active instances hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    /// Host port → instances holding it (one, unless something went wrong).
    pub ports: BTreeMap<u32, u32>,
    /// The index's [`Index::port_changes`] when `ports` last changed: free port ranges worked
    /// out from `ports` hold while it stays the same.
    pub ports_changed: u64,
}

impl PartialEq for Usage {
    fn eq(&self, other: &Self) -> bool {
        self.cpus == other.cpus
            && self.mem == other.mem
            && self.disk == other.disk
            && self.gpus == other.gpus
            && self.ports == other.ports
    }
}

/// One app's instances counted by what the deployment steps ask of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppCounts {
    /// [`Instance::counts_toward_scale`].
    pub toward_scale: usize,
    /// Task active (`Condition::is_active`), whatever the goal.
    pub active: usize,
    /// Goal Running and task Running.
    pub running: usize,
    /// Goal Running, task Running and reported healthy.
    pub running_healthy: usize,
    /// Goal other than Running with the task still active.
    pub stopping: usize,
}

impl AppCounts {
    fn apply(&mut self, i: &Instance, add: bool) {
        let step = |n: &mut usize, yes: bool| {
            if yes {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        let running = i.goal == Goal::Running && i.condition == Condition::Running;
        step(&mut self.toward_scale, i.counts_toward_scale());
        step(&mut self.active, i.condition.is_active());
        step(&mut self.running, running);
        step(
            &mut self.running_healthy,
            running && i.healthy == Some(true),
        );
        step(
            &mut self.stopping,
            i.goal != Goal::Running && i.condition.is_active(),
        );
    }
}

/// An app's placed instances of one configuration version, in the shape the matcher takes them,
/// with where each sits so that one can be taken out in O(1).
#[derive(Debug, Default)]
pub(crate) struct PlacedList {
    pub items: Vec<PlacedInstance>,
    ids: Vec<InstanceId>,
    pos: HashMap<InstanceId, usize>,
}

impl PlacedList {
    fn push(&mut self, id: &InstanceId, p: PlacedInstance) {
        if self.pos.contains_key(id) {
            return;
        }
        self.pos.insert(id.clone(), self.items.len());
        self.ids.push(id.clone());
        self.items.push(p);
    }

    fn take(&mut self, id: &InstanceId) {
        let Some(ix) = self.pos.remove(id) else {
            return;
        };
        self.items.swap_remove(ix);
        self.ids.swap_remove(ix);
        if let Some(moved) = self.ids.get(ix) {
            self.pos.insert(moved.clone(), ix);
        }
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (&InstanceId, &PlacedInstance)> {
        self.ids.iter().zip(&self.items)
    }
}

/// Placed where the matcher counts it: an active task with goal Running on an agent.
fn is_placed(i: &Instance) -> bool {
    i.condition.is_active() && i.goal == Goal::Running && i.placement.is_some()
}

fn counts_as_placed(i: &Instance) -> Option<PlacedInstance> {
    if !is_placed(i) {
        return None;
    }
    i.placement.as_ref().map(|p| PlacedInstance {
        agent_id: p.agent_id.clone(),
        hostname: p.hostname.clone(),
        attributes: p.attributes.clone(),
    })
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Placed instances (any condition) per agent.
    pub by_agent: HashMap<String, BTreeSet<InstanceId>>,
    /// The launch queue: scheduled instances with goal Running, oldest first.
    pub pending: BTreeSet<(Timestamp, InstanceId)>,
    /// Instances with goal Running whose task is terminal: to be replaced.
    pub dead: BTreeSet<InstanceId>,
    pub held: HashMap<InstanceId, Held>,
    pub usage: HashMap<String, Usage>,
    /// Apps whose instances changed since their count was last checked.
    pub dirty_apps: BTreeSet<PathId>,
    /// Each app's instances counted by condition (apps without instances are absent).
    pub counts: HashMap<PathId, AppCounts>,
    /// Each app's placed instances by configuration version (`Instance::app_version`).
    pub placed: HashMap<PathId, BTreeMap<Timestamp, PlacedList>>,
    /// Instances whose task is Running, and Staging or Starting, over the whole fleet.
    pub running: usize,
    pub staged: usize,
    /// Changes to any agent's [`Usage::ports`] so far.
    pub port_changes: u64,
}

fn holds_resources(i: &Instance) -> bool {
    i.placement.is_some() && i.condition.is_active()
}

impl Index {
    /// Forgets `i` (its previous state).
    pub fn remove(&mut self, i: &Instance) -> Option<Held> {
        self.remove_from(i, true, true)
    }

    /// Records `i`'s current state. `previous` is what it held before the change (kept when it
    /// still holds resources on the same agent); otherwise `app` gives what it holds now.
    pub fn add(&mut self, i: &Instance, app: Option<&App>, previous: Option<Held>) {
        self.add_to(i, app, previous, true, true);
    }

    /// [`Index::remove`] of `old` then [`Index::add`] of `new`, the same instance changed; a
    /// status that leaves it placed where it was keeps its entries by agent and among the
    /// placed instances.
    pub fn replace(&mut self, old: &Instance, new: &Instance, app: Option<&App>) {
        let moved = !(is_placed(old)
            && is_placed(new)
            && old.app_version == new.app_version
            && old.placement == new.placement);
        let other_agent = old.agent_id() != new.agent_id();
        let previous = self.remove_from(old, moved, other_agent);
        self.add_to(new, app, previous, moved, other_agent);
    }

    fn remove_from(&mut self, i: &Instance, placed: bool, agent: bool) -> Option<Held> {
        if let Some(agent) = i.agent_id().filter(|_| agent) {
            if let Some(set) = self.by_agent.get_mut(agent) {
                set.remove(&i.id);
                if set.is_empty() {
                    self.by_agent.remove(agent);
                }
            }
        }
        if i.goal == Goal::Running && i.condition == Condition::Scheduled {
            self.pending.remove(&(i.since, i.id.clone()));
        }
        self.dead.remove(&i.id);
        self.mark_dirty(&i.app_id);
        self.count(i, false);
        if placed && is_placed(i) {
            if let Some(versions) = self.placed.get_mut(&i.app_id) {
                if let Some(list) = versions.get_mut(&i.app_version) {
                    list.take(&i.id);
                    if list.is_empty() {
                        versions.remove(&i.app_version);
                    }
                }
                if versions.is_empty() {
                    self.placed.remove(&i.app_id);
                }
            }
        }
        let held = self.held.remove(&i.id);
        if let Some((h, u)) = held
            .as_ref()
            .and_then(|h| Some((h, self.usage.get_mut(&h.agent)?)))
        {
            u.cpus -= h.cpus;
            u.mem -= h.mem;
            u.disk -= h.disk;
            u.gpus = u.gpus.saturating_sub(h.gpus);
            if !h.ports.is_empty() {
                self.port_changes += 1;
                u.ports_changed = self.port_changes;
            }
            for p in &h.ports {
                if let Some(n) = u.ports.get_mut(p) {
                    *n -= 1;
                    if *n == 0 {
                        u.ports.remove(p);
                    }
                }
            }
        }
        held
    }

    fn add_to(
        &mut self,
        i: &Instance,
        app: Option<&App>,
        previous: Option<Held>,
        placed: bool,
        agent: bool,
    ) {
        if let Some(agent) = i.agent_id().filter(|_| agent) {
            self.by_agent
                .entry(agent.to_string())
                .or_default()
                .insert(i.id.clone());
        }
        if i.goal == Goal::Running && i.condition == Condition::Scheduled {
            self.pending.insert((i.since, i.id.clone()));
        }
        if i.goal == Goal::Running && i.condition.is_terminal() {
            self.dead.insert(i.id.clone());
        }
        self.mark_dirty(&i.app_id);
        self.count(i, true);
        if let Some(p) = counts_as_placed(i).filter(|_| placed) {
            if !self.placed.contains_key(&i.app_id) {
                self.placed.insert(i.app_id.clone(), BTreeMap::new());
            }
            if let Some(versions) = self.placed.get_mut(&i.app_id) {
                versions.entry(i.app_version).or_default().push(&i.id, p);
            }
        }
        if !holds_resources(i) {
            return;
        }
        let Some(agent) = i.agent_id() else { return };
        let held = match previous {
            Some(h) if h.agent == agent => Held {
                ports: i.host_ports.clone(),
                ..h
            },
            _ => Held {
                agent: agent.to_string(),
                cpus: app.map_or(0.0, |a| a.cpus),
                mem: app.map_or(0.0, |a| a.mem),
                disk: app.map_or(0.0, |a| a.disk),
                gpus: app.map_or(0, |a| a.gpus.max(0) as u32),
                ports: i.host_ports.clone(),
            },
        };
        if !self.usage.contains_key(&held.agent) {
            self.usage.insert(held.agent.clone(), Usage::default());
        }
        let Some(u) = self.usage.get_mut(&held.agent) else {
            return;
        };
        u.cpus += held.cpus;
        u.mem += held.mem;
        u.disk += held.disk;
        u.gpus += held.gpus;
        if !held.ports.is_empty() {
            self.port_changes += 1;
            u.ports_changed = self.port_changes;
        }
        for p in &held.ports {
            *u.ports.entry(*p).or_default() += 1;
        }
        self.held.insert(i.id.clone(), held);
    }
}

impl Index {
    fn mark_dirty(&mut self, app: &PathId) {
        if !self.dirty_apps.contains(app) {
            self.dirty_apps.insert(app.clone());
        }
    }

    fn count(&mut self, i: &Instance, add: bool) {
        let fleet = match i.condition {
            Condition::Running => Some(&mut self.running),
            Condition::Staging | Condition::Starting => Some(&mut self.staged),
            _ => None,
        };
        if let Some(n) = fleet {
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        }
        if !self.counts.contains_key(&i.app_id) {
            self.counts.insert(i.app_id.clone(), AppCounts::default());
        }
        if let Some(c) = self.counts.get_mut(&i.app_id) {
            c.apply(i, add);
            if *c == AppCounts::default() {
                self.counts.remove(&i.app_id);
            }
        }
    }

    /// `i`'s health changed in place (from `was`) without going through `remove`/`add`.
    pub fn health_changed(&mut self, i: &Instance, was: Option<bool>) {
        let (before, after) = (was == Some(true), i.healthy == Some(true));
        if before == after || i.goal != Goal::Running || i.condition != Condition::Running {
            return;
        }
        if let Some(c) = self.counts.get_mut(&i.app_id) {
            c.running_healthy = if after {
                c.running_healthy + 1
            } else {
                c.running_healthy.saturating_sub(1)
            };
        }
    }

    /// The app's counts (all zero for an app without instances).
    pub fn counts(&self, app: &PathId) -> AppCounts {
        self.counts.get(app).copied().unwrap_or_default()
    }
}

/// Port ranges without the ports in `used`.
pub(crate) fn free_ranges(ranges: &[(u32, u32)], used: &BTreeMap<u32, u32>) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(b, e) in ranges {
        let mut start = b;
        for (&p, _) in used.range(b..=e) {
            if p > start {
                out.push((start, p - 1));
            }
            start = p + 1;
        }
        if start <= e {
            out.push((start, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_cut_out_used_ports() {
        let used: BTreeMap<u32, u32> = [(31000, 1), (31005, 1), (31009, 1)].into_iter().collect();
        assert_eq!(
            free_ranges(&[(31000, 31009)], &used),
            vec![(31001, 31004), (31006, 31008)]
        );
        assert_eq!(free_ranges(&[(1, 3)], &BTreeMap::new()), vec![(1, 3)]);
    }
}
