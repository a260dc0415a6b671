//! Indexes over the leader's instances, kept in step with every change, so that a reconcile
//! pass costs what changed rather than the size of the fleet: instances per agent, the launch
//! queue, instances whose task ended, the resources each agent has given out, and the apps whose
//! instance count must be checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stride_core::instance::{Condition, Goal, Instance, InstanceId};
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
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Usage {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    /// Host port → instances holding it (one, unless something went wrong).
    pub ports: BTreeMap<u32, u32>,
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
}

fn holds_resources(i: &Instance) -> bool {
    i.placement.is_some() && i.condition.is_active()
}

impl Index {
    /// Forgets `i` (its previous state).
    pub fn remove(&mut self, i: &Instance) -> Option<Held> {
        if let Some(agent) = i.agent_id() {
            if let Some(set) = self.by_agent.get_mut(agent) {
                set.remove(&i.id);
                if set.is_empty() {
                    self.by_agent.remove(agent);
                }
            }
        }
        self.pending.remove(&(i.since, i.id.clone()));
        self.dead.remove(&i.id);
        self.dirty_apps.insert(i.app_id.clone());
        let held = self.held.remove(&i.id);
        if let Some(h) = &held {
            let u = self.usage.entry(h.agent.clone()).or_default();
            u.cpus -= h.cpus;
            u.mem -= h.mem;
            u.disk -= h.disk;
            u.gpus = u.gpus.saturating_sub(h.gpus);
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

    /// Records `i`'s current state. `previous` is what it held before the change (kept when it
    /// still holds resources on the same agent); otherwise `app` gives what it holds now.
    pub fn add(&mut self, i: &Instance, app: Option<&App>, previous: Option<Held>) {
        if let Some(agent) = i.agent_id() {
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
        self.dirty_apps.insert(i.app_id.clone());
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
        let u = self.usage.entry(held.agent.clone()).or_default();
        u.cpus += held.cpus;
        u.mem += held.mem;
        u.disk += held.disk;
        u.gpus += held.gpus;
        for p in &held.ports {
            *u.ports.entry(*p).or_default() += 1;
        }
        self.held.insert(i.id.clone(), held);
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
