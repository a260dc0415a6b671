//! The replica's view of the world and the schedule of the checks it owns, as a plain state
//! machine: stored state and membership go in ([`Tracker::apply`], [`Tracker::set_members`]),
//! checks that are due come out ([`Tracker::due`]). No I/O and no clock of its own, so tests
//! drive it with made-up times.
//!
//! ```text
//!   store snapshot + events ──► apps, instances, agents ──► targets_of ──┐
//!   live members ─────────────────────────────────────► check_owner == me? ──► owned ──► calendar by due time
//! ```
//!
//! A target newly owned (a new task, or a share taken over from a replica that died) is first
//! due within `min(interval, 1 s)` (spread by a hash of its key, so a takeover is not a burst),
//! Mesos-level checks not before `delaySeconds` after the task started; then every `interval`.
//! A check still running when it is due again is skipped, so one task never has two checks of
//! the same kind in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stride_core::agent::AgentRecord;
use stride_core::app::App;
use stride_core::instance::Instance;
use stride_core::rendezvous::{check_owner, spread, CheckSlot};
use stride_core::{PathId, Timestamp};
use tokio::time::Instant;

use crate::targets::{is_checked, targets_of, AppChecks, Target};

/// A change read from the store.
#[derive(Debug)]
pub enum Update {
    /// Everything, as a periodic resync reads it.
    Full {
        apps: Vec<App>,
        instances: Vec<Instance>,
        agents: Vec<AgentRecord>,
    },
    /// The whole set of apps.
    Apps(Vec<App>),
    /// Instances that changed, by id; `None` = gone.
    Instances(Vec<(String, Option<Instance>)>),
    /// The whole set of agents.
    Agents(Vec<AgentRecord>),
}

/// A check to run now. The probe clears `busy` when it is done.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub target: Arc<Target>,
    pub busy: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Owned {
    target: Arc<Target>,
    /// Matches the queue entry that is current; older entries are skipped when due.
    generation: u64,
    busy: Arc<AtomicBool>,
}

/// A scheduled run: the owned check's generation, instance and slot.
type Entry = (u64, Arc<str>, CheckSlot);

/// Due times in 1 ms buckets. Most owned checks are re-queued every interval, so the queue is
/// pushed and popped as often as checks run: a bucket holds the checks due together, and the
/// ordered map is only as big as the number of distinct milliseconds, which keeps this cheaper
/// than a binary heap of every check.
struct Calendar {
    origin: Instant,
    buckets: BTreeMap<u64, Vec<Entry>>,
}

impl Calendar {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            buckets: BTreeMap::new(),
        }
    }

    fn tick(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn at(&self, tick: u64) -> Instant {
        self.origin + Duration::from_millis(tick)
    }

    fn push(&mut self, at: Instant, entry: Entry) {
        let tick = self.tick(at);
        self.buckets.entry(tick).or_default().push(entry);
    }

    fn next(&self) -> Option<Instant> {
        self.buckets.keys().next().map(|t| self.at(*t))
    }

    /// The earliest bucket, if due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Vec<Entry>)> {
        let first = *self.buckets.keys().next()?;
        if first > self.tick(now) {
            return None;
        }
        let entries = self.buckets.remove(&first)?;
        Some((self.at(first), entries))
    }
}

/// See the module docs.
pub struct Tracker {
    me: String,
    /// Live replicas, sorted.
    members: Vec<String>,
    apps: HashMap<PathId, (Arc<App>, Arc<AppChecks>)>,
    /// Every instance as last read (without its health records, which are not needed here).
    instances: HashMap<Arc<str>, Instance>,
    by_app: HashMap<PathId, BTreeSet<Arc<str>>>,
    /// Agent id → its API address, for COMMAND checks.
    agents: HashMap<String, String>,
    /// The checks this replica owns, by instance.
    owned: HashMap<Arc<str>, Vec<(CheckSlot, Owned)>>,
    owned_count: usize,
    queue: Calendar,
    next_generation: u64,
}

/// Longest first delay of a newly owned check.
const MAX_FIRST_DELAY: Duration = Duration::from_secs(1);

impl Tracker {
    pub fn new(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            members: Vec::new(),
            apps: HashMap::new(),
            instances: HashMap::new(),
            by_app: HashMap::new(),
            agents: HashMap::new(),
            owned: HashMap::new(),
            owned_count: 0,
            queue: Calendar::new(),
            next_generation: 0,
        }
    }

    /// How many checks this replica owns.
    pub fn owned(&self) -> usize {
        self.owned_count
    }

    /// How many instances are known.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The owned checks, for tests and the debug view: (instance id, slot).
    pub fn owned_keys(&self) -> Vec<(String, CheckSlot)> {
        let mut v: Vec<(String, CheckSlot)> = self
            .owned
            .iter()
            .flat_map(|(id, list)| list.iter().map(move |(s, _)| (id.to_string(), *s)))
            .collect();
        v.sort();
        v
    }

    /// When the next check is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.next()
    }

    /// A new set of live members (any order). Moves checks to and from this replica.
    pub fn set_members(&mut self, mut members: Vec<String>, now: Instant, wall: Timestamp) {
        members.sort();
        members.dedup();
        if members == self.members {
            return;
        }
        self.members = members;
        self.refresh_all(now, wall);
    }

    pub fn apply(&mut self, update: Update, now: Instant, wall: Timestamp) {
        match update {
            Update::Full {
                apps,
                instances,
                agents,
            } => {
                self.agents = agent_map(agents);
                self.apps = apps.into_iter().map(app_entry).collect();
                self.instances.clear();
                self.by_app.clear();
                for i in instances {
                    self.insert_instance(i);
                }
                // Owned checks of instances now gone are dropped by the refresh.
                self.refresh_all(now, wall);
            }
            Update::Apps(apps) => {
                let mut next: HashMap<PathId, (Arc<App>, Arc<AppChecks>)> = HashMap::new();
                let mut changed: Vec<PathId> = Vec::new();
                for app in apps {
                    match self.apps.remove(&app.id) {
                        Some(old) if *old.0 == app => {
                            next.insert(app.id.clone(), old);
                        }
                        _ => {
                            changed.push(app.id.clone());
                            let (id, e) = app_entry(app);
                            next.insert(id, e);
                        }
                    }
                }
                // What is left was removed.
                changed.extend(self.apps.keys().cloned());
                self.apps = next;
                for app in changed {
                    self.refresh_app(&app, now, wall);
                }
            }
            Update::Instances(list) => {
                for (id, inst) in list {
                    let key = self
                        .remove_instance(&id)
                        .unwrap_or_else(|| Arc::from(id.as_str()));
                    if let Some(i) = inst {
                        self.insert_instance(i);
                    }
                    self.refresh(&key, now, wall);
                }
            }
            Update::Agents(agents) => {
                let next = agent_map(agents);
                if next != self.agents {
                    self.agents = next;
                    let with_commands: Vec<PathId> = self
                        .apps
                        .iter()
                        .filter(|(_, (_, c))| c.has_command_checks())
                        .map(|(id, _)| id.clone())
                        .collect();
                    for app in with_commands {
                        self.refresh_app(&app, now, wall);
                    }
                }
            }
        }
    }

    /// Checks due at `now`, each rescheduled one interval on.
    pub fn due(&mut self, now: Instant) -> Vec<Dispatch> {
        let mut out = Vec::new();
        while let Some((at, entries)) = self.queue.pop_due(now) {
            for (generation, id, slot) in entries {
                let Some(o) = self
                    .owned
                    .get(&id)
                    .and_then(|l| l.iter().find(|(s, _)| *s == slot))
                    .map(|(_, o)| o)
                    .filter(|o| o.generation == generation)
                else {
                    continue;
                };
                let interval = o.target.spec.interval();
                let mut next = at + interval;
                if next <= now {
                    // Far behind (a stall): do not make up for lost ticks with a burst.
                    next = now + interval;
                }
                if !o.busy.swap(true, Ordering::AcqRel) {
                    out.push(Dispatch {
                        target: o.target.clone(),
                        busy: o.busy.clone(),
                    });
                }
                self.queue.push(next, (generation, id, slot));
            }
        }
        out
    }

    fn insert_instance(&mut self, mut i: Instance) {
        i.health = Vec::new();
        let key: Arc<str> = Arc::from(i.id.0.as_str());
        self.by_app
            .entry(i.app_id.clone())
            .or_default()
            .insert(key.clone());
        self.instances.insert(key, i);
    }

    fn remove_instance(&mut self, id: &str) -> Option<Arc<str>> {
        let (key, i) = self.instances.remove_entry(id)?;
        if let Some(set) = self.by_app.get_mut(&i.app_id) {
            set.remove(id);
            if set.is_empty() {
                self.by_app.remove(&i.app_id);
            }
        }
        Some(key)
    }

    fn refresh_all(&mut self, now: Instant, wall: Timestamp) {
        let ids: Vec<Arc<str>> = self
            .instances
            .keys()
            .chain(self.owned.keys())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in ids {
            self.refresh(&id, now, wall);
        }
    }

    fn refresh_app(&mut self, app: &PathId, now: Instant, wall: Timestamp) {
        let ids: Vec<Arc<str>> = self
            .by_app
            .get(app)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.refresh(&id, now, wall);
        }
    }

    /// Recomputes what this replica owns of one instance.
    fn refresh(&mut self, id: &Arc<str>, now: Instant, wall: Timestamp) {
        let wanted: Vec<Target> = match self.instances.get(id.as_ref()) {
            Some(i) => match self.apps.get(&i.app_id) {
                Some((_, checks)) if is_checked(checks, i) => {
                    let agents = &self.agents;
                    targets_of(checks, i, |a| agents.get(a).map(String::as_str))
                        .into_iter()
                        .filter(|t| {
                            check_owner(&t.instance_id, t.slot, &self.members)
                                == Some(self.me.as_str())
                        })
                        .collect()
                }
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let mut current = self.owned.remove(id).unwrap_or_default();
        self.owned_count -= current.len();
        let mut next = Vec::with_capacity(wanted.len());
        for t in wanted {
            let keep = current
                .iter()
                .position(|(s, o)| *s == t.slot && o.target.same_as(&t));
            match keep {
                Some(p) => next.push(current.swap_remove(p)),
                None => {
                    let slot = t.slot;
                    let first = first_due(&t, now, wall);
                    self.next_generation += 1;
                    let generation = self.next_generation;
                    self.queue.push(first, (generation, id.clone(), slot));
                    next.push((
                        slot,
                        Owned {
                            target: Arc::new(t),
                            generation,
                            busy: Arc::new(AtomicBool::new(false)),
                        },
                    ));
                }
            }
        }
        self.owned_count += next.len();
        if !next.is_empty() {
            self.owned.insert(id.clone(), next);
        }
    }
}

fn app_entry(app: App) -> (PathId, (Arc<App>, Arc<AppChecks>)) {
    let checks = Arc::new(AppChecks::of(&app));
    (app.id.clone(), (Arc::new(app), checks))
}

fn agent_map(agents: Vec<AgentRecord>) -> HashMap<String, String> {
    agents
        .into_iter()
        .map(|a| (a.agent_id, a.api_address))
        .collect()
}

/// When a newly owned check first runs.
fn first_due(t: &Target, now: Instant, wall: Timestamp) -> Instant {
    let window = t.spec.interval().min(MAX_FIRST_DELAY).as_millis() as u64;
    let mut at = now + Duration::from_millis(spread(&t.instance_id, t.slot, window));
    if t.not_before > wall {
        at = at.max(now + Duration::from_millis((t.not_before.0 - wall.0) as u64));
    }
    at
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stride_core::instance::Condition;

    use super::*;
    use crate::targets::fixtures::{app, running};

    fn web() -> App {
        app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}],
            "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 2}, {"protocol": "TCP", "intervalSeconds": 3}]}),
        )
    }

    fn instances(a: &App, n: usize) -> Vec<Instance> {
        (0..n).map(|k| running(a, &[31000 + k as u32])).collect()
    }

    fn full(a: &App, insts: &[Instance]) -> Update {
        Update::Full {
            apps: vec![a.clone()],
            instances: insts.to_vec(),
            agents: Vec::new(),
        }
    }

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replicas_split_the_checks_and_a_dead_ones_share_moves() {
        let a = web();
        let insts = instances(&a, 300);
        let now = Instant::now();
        let wall = Timestamp(10_000);
        let all = members(&["r1", "r2", "r3"]);
        let mut trackers: Vec<Tracker> = ["r1", "r2", "r3"]
            .iter()
            .map(|m| Tracker::new(*m))
            .collect();
        for t in &mut trackers {
            t.apply(full(&a, &insts), now, wall);
            assert_eq!(t.owned(), 0, "no members known: nothing owned");
            t.set_members(all.clone(), now, wall);
        }
        let shares: Vec<BTreeSet<(String, CheckSlot)>> = trackers
            .iter()
            .map(|t| t.owned_keys().into_iter().collect())
            .collect();
        assert_eq!(
            shares.iter().map(BTreeSet::len).sum::<usize>(),
            600,
            "each check owned once"
        );
        for s in &shares {
            assert!((150..250).contains(&s.len()), "uneven: {}", s.len());
        }
        // r3 dies: r1 and r2 keep theirs and split r3's.
        let survivors = members(&["r1", "r2"]);
        for t in trackers.iter_mut().take(2) {
            t.set_members(survivors.clone(), now, wall);
        }
        let after: Vec<BTreeSet<(String, CheckSlot)>> = trackers
            .iter()
            .take(2)
            .map(|t| t.owned_keys().into_iter().collect())
            .collect();
        assert!(shares[0].is_subset(&after[0]) && shares[1].is_subset(&after[1]));
        assert_eq!(after[0].len() + after[1].len(), 600);
        assert!(after[0].is_disjoint(&after[1]));
    }

    #[test]
    fn checks_run_every_interval_and_never_overlap() {
        let a = web();
        let insts = instances(&a, 1);
        let mut t = Tracker::new("me");
        let start = Instant::now();
        let wall = Timestamp(10_000);
        t.set_members(members(&["me"]), start, wall);
        t.apply(full(&a, &insts), start, wall);
        assert_eq!(t.owned(), 2);
        // Both first runs come within a second.
        let first = t.due(start + Duration::from_secs(1));
        assert_eq!(first.len(), 2);
        // The HTTP check (2 s) is due again at +2..3 s; the first is still running: skipped.
        let again = t.due(start + Duration::from_millis(3_050));
        assert!(
            again.is_empty(),
            "a check still in flight is not started twice"
        );
        for d in &first {
            d.busy.store(false, Ordering::Release);
        }
        // Both are due again by +6.1 s, whatever their first delays: the TCP check (3 s) was
        // either not yet due at +3.05 s or skipped then and put back to +6..6.05 s.
        let later = t.due(start + Duration::from_millis(6_100));
        assert_eq!(later.len(), 2);
        assert!(t
            .next_due()
            .is_some_and(|n| n > start + Duration::from_millis(6_100)));
    }

    #[test]
    fn instances_come_and_go_with_their_condition_and_version() {
        let a = web();
        let mut insts = instances(&a, 2);
        let mut t = Tracker::new("me");
        let now = Instant::now();
        let wall = Timestamp(10_000);
        t.set_members(members(&["me"]), now, wall);
        t.apply(full(&a, &insts), now, wall);
        assert_eq!(t.owned(), 4);
        insts[0].condition = Condition::Killing;
        t.apply(
            Update::Instances(vec![(insts[0].id.0.clone(), Some(insts[0].clone()))]),
            now,
            wall,
        );
        assert_eq!(t.owned(), 2);
        t.apply(
            Update::Instances(vec![(insts[1].id.0.clone(), None)]),
            now,
            wall,
        );
        assert_eq!(t.owned(), 0);
        // A new version of the app: the old instances are not checked; a new one is.
        let mut b = a.clone();
        b.version_info = Some(stride_core::app::VersionInfo {
            last_scaling_at: Timestamp(5_000),
            last_config_change_at: Timestamp(5_000),
        });
        let fresh = running(&b, &[32000]);
        t.apply(Update::Apps(vec![b]), now, wall);
        t.apply(
            Update::Instances(vec![
                (insts[0].id.0.clone(), Some(running(&a, &[31000]))),
                (fresh.id.0.clone(), Some(fresh.clone())),
            ]),
            now,
            wall,
        );
        let keys = t.owned_keys();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|(id, _)| *id == fresh.id.0));
        // The app goes away.
        t.apply(Update::Apps(Vec::new()), now, wall);
        assert_eq!(t.owned(), 0);
    }

    proptest::proptest! {
        #[test]
        fn replicas_partition_the_checks_and_a_death_moves_only_its_share(
            n in 1usize..40, replicas in 1usize..6, dead in 0usize..6
        ) {
            let a = web();
            let insts = instances(&a, n);
            let now = Instant::now();
            let wall = Timestamp(10_000);
            let names: Vec<String> = (0..replicas).map(|r| format!("r{r}")).collect();
            let mut trackers: Vec<Tracker> = names.iter().map(|m| Tracker::new(m.as_str())).collect();
            for t in &mut trackers {
                t.set_members(names.clone(), now, wall);
                t.apply(full(&a, &insts), now, wall);
            }
            let shares: Vec<BTreeSet<(String, CheckSlot)>> =
                trackers.iter().map(|t| t.owned_keys().into_iter().collect()).collect();
            let total: usize = shares.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<_> = shares.iter().flatten().cloned().collect();
            proptest::prop_assert_eq!(total, 2 * n, "every check owned once");
            proptest::prop_assert_eq!(union.len(), 2 * n);
            let dead = dead % replicas;
            let alive: Vec<String> = names.iter().filter(|m| **m != names[dead]).cloned().collect();
            let mut after: BTreeSet<(String, CheckSlot)> = BTreeSet::new();
            for (k, t) in trackers.iter_mut().enumerate() {
                if k == dead {
                    continue;
                }
                t.set_members(alive.clone(), now, wall);
                let mine: BTreeSet<_> = t.owned_keys().into_iter().collect();
                proptest::prop_assert!(shares[k].is_subset(&mine), "a survivor lost a check");
                proptest::prop_assert!(after.is_disjoint(&mine));
                after.extend(mine);
            }
            if replicas > 1 {
                proptest::prop_assert_eq!(after.len(), 2 * n, "the dead share is taken over");
            }
        }
    }

    #[test]
    fn a_resync_drops_what_is_gone_and_keeps_what_is_not() {
        let a = web();
        let insts = instances(&a, 3);
        let mut t = Tracker::new("me");
        let now = Instant::now();
        let wall = Timestamp(10_000);
        t.set_members(members(&["me"]), now, wall);
        t.apply(full(&a, &insts), now, wall);
        let first = t.due(now + Duration::from_secs(1));
        assert_eq!(first.len(), 6);
        t.apply(full(&a, &insts[..1]), now, wall);
        assert_eq!(t.owned(), 2);
        assert_eq!(t.owned_keys().len(), t.owned());
        // The survivor's schedule is untouched: its checks are still in flight, not restarted.
        assert!(t.due(now + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn mesos_checks_wait_for_their_delay() {
        let a = app(
            json!({"id": "/m", "cmd": "x", "portDefinitions": [{"port": 0}],
            "healthChecks": [{"protocol": "MESOS_TCP", "delaySeconds": 10, "intervalSeconds": 1}]}),
        );
        let insts = instances(&a, 1); // started at wall 3 000 ms: not before 13 000 ms
        let mut t = Tracker::new("me");
        let now = Instant::now();
        t.set_members(members(&["me"]), now, Timestamp(4_000));
        t.apply(full(&a, &insts), now, Timestamp(4_000));
        assert!(t.due(now + Duration::from_millis(8_900)).is_empty());
        assert_eq!(t.due(now + Duration::from_millis(9_000)).len(), 1);
    }
}
