//! What a new leader loads, read from the store once and then kept current while this
//! scheduler stands by, so that taking over costs a catch-up read rather than reading
//! everything again.
//!
//! ```text
//!  standby:   read everything ──► Mirror ◄── every `poll`: changes_since(revision) → get_many
//!  elected:   stop following ──► catch up once (nobody else commits now) ──► LeaderState
//!  term over: follow again, from a full read
//! ```
//!
//! A [`Mirror`] holds the decoded apps and their version timestamps, groups and theirs, the
//! root's versions, instances, deployments and task failures, under the store revision it holds
//! every commit of. [`Mirror::read`] reads all of it; [`Mirror::catch_up`] reads again only the
//! keys the change feed names since that revision, and says so when the feed no longer reaches
//! back. [`Mirror::into_state`] moves it into a [`LeaderState`] through the same `load_*` calls
//! whether it was just read or followed for hours: a cold load is `read` then `into_state`, so
//! a term begun from a mirror starts from exactly what a cold load would give.
//!
//! Once a new leader holds the lease, the previous one is fenced and nobody else commits, so
//! the one catch-up after the election leaves the mirror exactly at the store's state.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use serde_json::Value;
use stride_core::deployment::DeploymentPlan;
use stride_core::group::GroupMeta;
use stride_core::instance::{Instance, InstanceId};
use stride_core::{App, PathId, Timestamp};
use stride_store::{collections, Changed, StateStore};
use tracing::{debug, info, warn};

use crate::state::{LeaderState, Tuning};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("store: {0}")]
    Store(#[from] stride_store::StoreError),
    #[error("stored {what} {key} is unreadable: {error}")]
    Corrupt {
        what: &'static str,
        key: String,
        error: String,
    },
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| LoadError::Corrupt {
        what,
        key: key.to_string(),
        error: e.to_string(),
    })
}

/// Decodes every stored value of a collection read whole and hands each, with its key, to `put`.
fn decode_each<T: serde::de::DeserializeOwned>(
    what: &'static str,
    entries: Vec<(String, Bytes)>,
    mut put: impl FnMut(String, T),
) -> Result<(), LoadError> {
    for (key, bytes) in entries {
        let value = decode(what, &key, &bytes)?;
        put(key, value);
    }
    Ok(())
}

/// The stored version timestamps of one app or group, oldest first (the keys of its versions
/// collection; a key that is not a timestamp is skipped).
fn versions_of(keys: &[String]) -> Vec<Timestamp> {
    let mut versions: Vec<Timestamp> = keys
        .iter()
        .filter_map(|v| Timestamp::parse(v).ok())
        .collect();
    versions.sort();
    versions
}

/// The version timestamps of each of `ids`, read concurrently: over one multiplexed
/// connection the requests go out together rather than one round trip each.
async fn read_versions(
    store: &dyn StateStore,
    collection: fn(&str) -> String,
    ids: impl Iterator<Item = &String>,
) -> Result<Vec<(String, Vec<Timestamp>)>, LoadError> {
    let reads = ids.map(|id| async move {
        let keys = store.keys(&collection(id)).await?;
        Ok::<_, LoadError>((id.clone(), versions_of(&keys)))
    });
    try_join_all(reads).await
}

/// The id of the root group, as group keys and versions collections name it.
const ROOT: &str = "/";

/// The collections a new leader loads whole, in the order [`Mirror::into_state`] loads them.
const HELD: [&str; 5] = [
    collections::APPS,
    collections::GROUPS,
    collections::INSTANCES,
    collections::DEPLOYMENTS,
    collections::TASK_FAILURES,
];

/// What a new leader loads, decoded, by store key. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    /// The store revision this holds every commit of.
    revision: String,
    apps: HashMap<String, App>,
    /// Version timestamps of each app in `apps` (and of no other).
    app_versions: HashMap<String, Vec<Timestamp>>,
    groups: HashMap<String, GroupMeta>,
    /// Version timestamps of each group in `groups`, and of the root.
    group_versions: HashMap<String, Vec<Timestamp>>,
    instances: HashMap<InstanceId, Instance>,
    deployments: HashMap<String, DeploymentPlan>,
    task_failures: HashMap<String, Value>,
}

/// What [`Mirror::catch_up`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaughtUp {
    /// Keys read again (of the held collections and versions collections).
    pub keys: usize,
}

impl Mirror {
    /// Reads everything. `None` when the store keeps no revisions, so that a mirror could not
    /// be followed; [`Mirror::read_unversioned`] reads it anyway.
    pub async fn read(store: &dyn StateStore) -> Result<Option<Self>, LoadError> {
        // The revision first: what is read after it may hold later commits too, which the next
        // catch-up reads again.
        let Some(revision) = store.revision().await? else {
            return Ok(None);
        };
        let mut m = Self::read_unversioned(store).await?;
        m.revision = revision;
        Ok(Some(m))
    }

    /// Reads everything, without the revision it holds.
    pub async fn read_unversioned(store: &dyn StateStore) -> Result<Self, LoadError> {
        let root = collections::group_versions(ROOT);
        let (apps, groups, deployments, task_failures, root_versions) = futures::try_join!(
            store.get_all(collections::APPS),
            store.get_all(collections::GROUPS),
            store.get_all(collections::DEPLOYMENTS),
            store.get_all(collections::TASK_FAILURES),
            store.keys(&root),
        )?;
        let mut m = Self::default();
        decode_each("app", apps, |key, app| {
            m.apps.insert(key, app);
        })?;
        decode_each("group", groups, |key, meta| {
            m.groups.insert(key, meta);
        })?;
        // The biggest read, with every versions read sent alongside it.
        let (instances, app_versions, group_versions) = futures::try_join!(
            async { Ok::<_, LoadError>(store.get_all(collections::INSTANCES).await?) },
            read_versions(store, collections::app_versions, m.apps.keys()),
            read_versions(store, collections::group_versions, m.groups.keys()),
        )?;
        m.app_versions = app_versions.into_iter().collect();
        m.group_versions = group_versions.into_iter().collect();
        m.group_versions
            .insert(ROOT.to_string(), versions_of(&root_versions));
        m.instances.reserve(instances.len());
        decode_each("instance", instances, |key, i| {
            m.instances.insert(InstanceId(key), i);
        })?;
        decode_each("deployment", deployments, |key, plan| {
            m.deployments.insert(key, plan);
        })?;
        decode_each("task failure", task_failures, |key, failure| {
            m.task_failures.insert(key, failure);
        })?;
        Ok(m)
    }

    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Brings the mirror up to the store's current revision, reading again only what the
    /// commits since its own changed. `None` when the change feed no longer reaches back to
    /// it (the caller reads everything again); the mirror is then unchanged. After an error it
    /// may be half brought up to date: the caller drops it.
    pub async fn catch_up(
        &mut self,
        store: &dyn StateStore,
    ) -> Result<Option<CaughtUp>, LoadError> {
        let Some(changes) = store.changes_since(&self.revision).await? else {
            return Ok(None);
        };
        if changes.changed.is_empty() {
            self.revision = changes.revision;
            return Ok(Some(CaughtUp::default()));
        }
        let app_prefix = collections::app_versions("");
        let group_prefix = collections::group_versions("");
        // Keys to read again per held collection, and whose versions to read again.
        let mut keys: [BTreeSet<String>; HELD.len()] = Default::default();
        let mut apps_versioned = BTreeSet::new();
        let mut groups_versioned = BTreeSet::new();
        for c in changes.changed {
            let (collection, key) = match c {
                Changed::Key { collection, key } => (collection, Some(key)),
                Changed::Collection { collection } => (collection, None),
            };
            if let Some(n) = HELD.iter().position(|h| *h == collection) {
                match key {
                    Some(key) => {
                        keys[n].insert(key);
                    }
                    // Dropped whole: what it holds now is what later commits wrote, which
                    // the feed names too.
                    None => self.clear(n),
                }
            } else if let Some(app) = collection.strip_prefix(&app_prefix) {
                apps_versioned.insert(app.to_string());
            } else if let Some(group) = collection.strip_prefix(&group_prefix) {
                groups_versioned.insert(group.to_string());
            }
        }
        // An app or group that changed may have come or gone: its versions are read again
        // with it, so that versions are held for exactly the apps and groups held.
        apps_versioned.extend(keys[0].iter().cloned());
        groups_versioned.extend(keys[1].iter().cloned());
        let keys = keys.map(|k| k.into_iter().collect::<Vec<String>>());
        let (values, app_versions, group_versions) = futures::try_join!(
            async {
                let reads = HELD
                    .iter()
                    .zip(&keys)
                    .map(|(collection, keys)| store.get_many(collection, keys));
                Ok::<_, LoadError>(try_join_all(reads).await?)
            },
            read_versions(store, collections::app_versions, apps_versioned.iter()),
            read_versions(store, collections::group_versions, groups_versioned.iter()),
        )?;
        let read =
            keys.iter().map(Vec::len).sum::<usize>() + app_versions.len() + group_versions.len();
        for (n, (keys, values)) in keys.iter().zip(values).enumerate() {
            for (key, value) in keys.iter().zip(values) {
                self.set(n, key, value)?;
            }
        }
        for (app, versions) in app_versions {
            if self.apps.contains_key(&app) {
                self.app_versions.insert(app, versions);
            } else {
                self.app_versions.remove(&app);
            }
        }
        for (group, versions) in group_versions {
            if group == ROOT || self.groups.contains_key(&group) {
                self.group_versions.insert(group, versions);
            } else {
                self.group_versions.remove(&group);
            }
        }
        self.revision = changes.revision;
        Ok(Some(CaughtUp { keys: read }))
    }

    /// Empties the held collection `n` (of [`HELD`]).
    fn clear(&mut self, n: usize) {
        match n {
            0 => {
                self.apps.clear();
                self.app_versions.clear();
            }
            1 => {
                self.groups.clear();
                self.group_versions.retain(|g, _| g == ROOT);
            }
            2 => self.instances.clear(),
            3 => self.deployments.clear(),
            _ => self.task_failures.clear(),
        }
    }

    /// Sets `key` of the held collection `n` (of [`HELD`]) to what the store holds now.
    fn set(&mut self, n: usize, key: &str, value: Option<Bytes>) -> Result<(), LoadError> {
        fn put<T: serde::de::DeserializeOwned>(
            map: &mut HashMap<String, T>,
            what: &'static str,
            key: &str,
            value: Option<Bytes>,
        ) -> Result<(), LoadError> {
            match value {
                Some(bytes) => {
                    map.insert(key.to_string(), decode(what, key, &bytes)?);
                }
                None => {
                    map.remove(key);
                }
            }
            Ok(())
        }
        match n {
            0 => put(&mut self.apps, "app", key, value),
            1 => put(&mut self.groups, "group", key, value),
            2 => {
                let id = InstanceId(key.to_string());
                match value {
                    Some(bytes) => {
                        self.instances.insert(id, decode("instance", key, &bytes)?);
                    }
                    None => {
                        self.instances.remove(&id);
                    }
                }
                Ok(())
            }
            3 => put(&mut self.deployments, "deployment", key, value),
            _ => put(&mut self.task_failures, "task failure", key, value),
        }
    }

    /// The leader state this holds, built as a cold load builds it; elected at `now`.
    pub fn into_state(self, tuning: Tuning, now: Timestamp) -> LeaderState {
        let Mirror {
            revision: _,
            apps,
            mut app_versions,
            groups,
            mut group_versions,
            instances,
            deployments,
            task_failures,
        } = self;
        let mut state = LeaderState::new(tuning, now);
        for (key, app) in apps {
            state.load_app(app, app_versions.remove(&key).unwrap_or_default());
        }
        for (key, meta) in groups {
            state.load_group(meta, group_versions.get(&key).cloned().unwrap_or_default());
        }
        state.load_root_versions(group_versions.remove(ROOT).unwrap_or_default());
        state.load_instances(instances);
        for plan in deployments.into_values() {
            state.load_deployment(plan);
        }
        for (key, failure) in task_failures {
            state.load_task_failure(PathId::parse(&key), failure);
        }
        state
    }
}

/// Where a new leader's state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built ahead from the standby's mirror while the lease was running out, and still
    /// current at the election.
    Ahead,
    /// Built from the standby's mirror, caught up after the election.
    Mirror,
    /// Everything read from the store (no mirror, or the change feed did not reach it).
    Store,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Ahead => "mirror-ahead",
            Source::Mirror => "mirror",
            Source::Store => "store",
        })
    }
}

/// How a new leader's state was loaded, for its log line.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    pub source: Source,
    /// Reading: the catch-up of the mirror, or reading everything.
    pub read: Duration,
    /// Building the leader state after the election (for a state built ahead: waiting for
    /// that build to finish).
    pub build: Duration,
    /// How long a build ahead took, before or across the election.
    pub built_ahead: Option<Duration>,
    /// Keys read (a catch-up's; every instance's for a full read).
    pub keys: usize,
    pub instances: usize,
}

/// Follows the store into a [`Mirror`] while this scheduler stands by, and hands the mirror
/// over to a new term. When the lease has less than `build_ahead_below` left (its holder has
/// missed renewals: most likely it is gone), the leader state is built ahead from a copy of
/// the mirror, and kept until something is committed, so that an election finding nothing
/// committed since takes it as it is.
/// Cloning shares it.
#[derive(Clone)]
pub struct Standby {
    shared: Arc<Shared>,
}

/// How the standby follows the store.
#[derive(Clone, Copy, Debug)]
pub struct Following {
    /// How often the mirror catches up.
    pub poll: Duration,
    /// Below this much left on the lease, the leader state is built ahead.
    pub build_ahead_below: Duration,
}

struct Shared {
    store: Arc<dyn StateStore>,
    /// Off from an election until the term ends: a leader keeps no mirror.
    following: AtomicBool,
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// `None` until read (and while a term holds what it became).
    mirror: Option<Mirror>,
    ahead: Option<Ahead>,
}

/// A leader state built from a copy of the mirror at `revision`.
struct Ahead {
    revision: String,
    build: tokio::task::JoinHandle<(LeaderState, Duration)>,
}

/// What a new term takes over from the standby: one per election, moved once, so its size
/// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Taken {
    Ahead(LeaderState, Duration),
    Mirror(Mirror),
}

/// After a full read failed, how long before the next (a corrupt entry fails every one).
const RETRY_FULL_READ_AFTER: Duration = Duration::from_secs(5);

/// A standby builds the leader state ahead at most this often (a leader that keeps
/// committing while its renewals come late would otherwise have it build again and again).
const BUILD_AHEAD_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// How often a standby looks at the lease.
const LEASE_CHECK_EVERY: Duration = Duration::from_millis(100);

impl Standby {
    /// Starts following `store` on the tokio runtime. Stops when the last clone is dropped.
    pub fn start(store: Arc<dyn StateStore>, following: Following) -> Self {
        let shared = Arc::new(Shared {
            store,
            following: AtomicBool::new(true),
            slot: Default::default(),
        });
        tokio::spawn(follow(Arc::downgrade(&shared), following));
        Self { shared }
    }

    /// Stops following: a term begins, and will [`Standby::take`] the mirror.
    pub fn pause(&self) {
        self.shared.following.store(false, Ordering::SeqCst);
    }

    /// Hands over the mirror, caught up with the store, or the state built ahead when the
    /// store is still where it was built from. `None` when there is no mirror or the change
    /// feed no longer reaches it. After an error the mirror is gone (it may be half brought
    /// up to date).
    async fn take(&self) -> Result<Option<(Taken, CaughtUp)>, LoadError> {
        let mut slot = self.shared.slot.lock().await;
        let ahead = slot.ahead.take();
        let Some(mut mirror) = slot.mirror.take() else {
            return Ok(None);
        };
        let Some(caught) = mirror.catch_up(self.shared.store.as_ref()).await? else {
            return Ok(None);
        };
        if let Some(ahead) = ahead.filter(|a| a.revision == mirror.revision) {
            match ahead.build.await {
                Ok((state, took)) => return Ok(Some((Taken::Ahead(state, took), caught))),
                Err(e) => {
                    warn!(error = %e, "the leader state built ahead is lost; building it again")
                }
            }
        }
        Ok(Some((Taken::Mirror(mirror), caught)))
    }

    /// The term is over: follow the store again (from a full read).
    pub fn resume(&self) {
        self.shared.following.store(true, Ordering::SeqCst);
    }
}

async fn follow(shared: Weak<Shared>, following: Following) {
    let mut failed_at: Option<Instant> = None;
    let mut caught_at: Option<Instant> = None;
    let mut ahead_at: Option<Instant> = None;
    let mut every = tokio::time::interval(LEASE_CHECK_EVERY.min(following.poll));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(s) = shared.upgrade() else { return };
        if !s.following.load(Ordering::SeqCst) {
            continue;
        }
        let mut slot = s.slot.lock().await;
        // An election may have come in while this waited for the lock.
        if !s.following.load(Ordering::SeqCst) {
            continue;
        }
        let store = s.store.as_ref();
        let slot = &mut *slot;
        if let Some(mirror) = slot.mirror.as_mut() {
            let left = store.lease_remaining().await.ok().flatten();
            let suspect = left.is_some_and(|l| l < following.build_ahead_below);
            let due = caught_at.is_none_or(|t| t.elapsed() >= following.poll);
            let start_ahead = suspect
                && slot.ahead.is_none()
                && ahead_at.is_none_or(|t| t.elapsed() >= BUILD_AHEAD_AT_MOST_EVERY);
            if !due && !start_ahead {
                continue;
            }
            match mirror.catch_up(store).await {
                Ok(Some(_)) => {
                    caught_at = Some(Instant::now());
                    // Kept, whoever holds the lease now, for as long as nothing is committed:
                    // until then it is what an election would build.
                    if slot
                        .ahead
                        .take_if(|a| a.revision != mirror.revision)
                        .is_some()
                    {
                        info!("the store changed since the leader state was built ahead; dropped");
                    }
                    if start_ahead {
                        ahead_at = Some(Instant::now());
                        info!(
                            lease_left_ms = left.unwrap_or_default().as_millis() as u64,
                            "the leader has stopped renewing its lease; building the leader state ahead"
                        );
                        let copying = Instant::now();
                        let (mirror, ahead) = build_ahead(std::mem::take(mirror)).await;
                        debug!(took_ms = copying.elapsed().as_millis() as u64, "mirror copied");
                        slot.mirror = mirror;
                        slot.ahead = Some(ahead);
                    }
                    continue;
                }
                Ok(None) => info!(
                    "the change feed no longer reaches the standby's mirror; reading everything again"
                ),
                Err(e) => warn!(
                    error = %e,
                    "cannot bring the standby's mirror up to date; reading everything again"
                ),
            }
            slot.mirror = None;
            slot.ahead = None;
        }
        if failed_at.is_some_and(|t| t.elapsed() < RETRY_FULL_READ_AFTER) {
            continue;
        }
        let started = Instant::now();
        match Mirror::read(store).await {
            Ok(Some(mirror)) => {
                failed_at = None;
                caught_at = Some(Instant::now());
                info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    instances = mirror.instances(),
                    "standby mirror read from the store (cold read, without building the state)"
                );
                slot.mirror = Some(mirror);
            }
            Ok(None) => {
                info!("the store keeps no revisions: no standby mirror, a new leader reads everything");
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot read the standby's mirror; a new leader reads everything");
                failed_at = Some(Instant::now());
            }
        }
    }
}

/// Starts building the leader state from a copy of `mirror` on a blocking thread, copying it
/// there too; gives `mirror` back once copied (`None` if the copy panicked).
async fn build_ahead(mirror: Mirror) -> (Option<Mirror>, Ahead) {
    let revision = mirror.revision.clone();
    let (back, mirror_back) = tokio::sync::oneshot::channel();
    let build = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let copy = mirror.clone();
        let _ = back.send(mirror);
        let state = copy.into_state(Tuning::default(), Timestamp::now());
        (state, started.elapsed())
    });
    (mirror_back.await.ok(), Ahead { revision, build })
}

/// A new term's state: from the standby (built ahead, or built from its mirror caught up)
/// when it has one; otherwise everything read from the store.
pub async fn load_for_term(
    standby: Option<&Standby>,
    store: &dyn StateStore,
    tuning: Tuning,
) -> Result<(LeaderState, Loaded), LoadError> {
    let now = Timestamp::now();
    let started = Instant::now();
    let taken = match standby {
        Some(s) => s.take().await?,
        None => None,
    };
    let (mirror, source, keys) = match taken {
        Some((Taken::Ahead(mut state, took), caught)) => {
            // Built before the election: the term starts now, with what this one is tuned to.
            state.elected_at = now;
            state.tuning = tuning;
            let instances = state.instances.len();
            let waited = started.elapsed();
            return Ok((
                state,
                Loaded {
                    source: Source::Ahead,
                    read: waited,
                    build: Duration::ZERO,
                    built_ahead: Some(took),
                    keys: caught.keys,
                    instances,
                },
            ));
        }
        Some((Taken::Mirror(mirror), caught)) => (mirror, Source::Mirror, caught.keys),
        None => {
            let mirror = Mirror::read_unversioned(store).await?;
            let keys = mirror.instances();
            (mirror, Source::Store, keys)
        }
    };
    let read = started.elapsed();
    let instances = mirror.instances();
    let building = Instant::now();
    let state = mirror.into_state(tuning, now);
    Ok((
        state,
        Loaded {
            source,
            read,
            build: building.elapsed(),
            built_ahead: None,
            keys,
            instances,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::json;
    use stride_core::instance::{Condition, InstanceId};
    use stride_store::{Candidate, Lease, MemoryStore, RedisStore};
    use stride_testkit::RedisServer;

    use super::*;
    use crate::state::{AgentCommand, AgentInfo, AgentStatus, Change, Effects, Origin};

    fn agent(id: &str) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            hostname: format!("{id}.local"),
            cpus: 8.0,
            mem: 16384.0,
            disk: 100000.0,
            gpus: 0,
            ports: vec![(31000, 32000)],
            attributes: vec![("rack".into(), id.into())],
            region: None,
            zone: None,
            api_address: String::new(),
        }
    }

    fn status(task_id: &str, condition: Condition, now: Timestamp) -> AgentStatus {
        AgentStatus {
            task_id: task_id.to_string(),
            condition,
            terminal: condition.is_terminal(),
            message: String::new(),
            reason: String::new(),
            timestamp: now,
            ports: vec![],
            ip_addresses: vec!["10.0.0.1".into()],
            healthy: None,
            exit_code: None,
        }
    }

    /// A leader driven through its inputs, committing every effect to the store.
    struct Driver {
        store: Arc<dyn StateStore>,
        lease: Lease,
        state: LeaderState,
        now: Timestamp,
    }

    impl Driver {
        async fn new(store: Arc<dyn StateStore>) -> Self {
            Self::leasing(store, Duration::from_secs(3600)).await
        }

        /// A leader whose lease lasts `ttl`, never renewed.
        async fn leasing(store: Arc<dyn StateStore>, ttl: Duration) -> Self {
            let candidate = Candidate {
                scheduler_id: "s1".into(),
                grpc_address: "127.0.0.1:1".into(),
                http_address: String::new(),
            };
            let lease = store
                .try_acquire(&candidate, ttl)
                .await
                .expect("the store answers")
                .expect("the lease is free");
            let now = Timestamp(1_700_000_000_000);
            Self {
                store,
                lease,
                state: LeaderState::new(Tuning::default(), now),
                now,
            }
        }

        async fn commit(&mut self, fx: Effects) -> Vec<(String, AgentCommand)> {
            self.store
                .commit(&self.lease, fx.batch)
                .await
                .expect("committed");
            fx.commands
        }

        async fn deploy(&mut self, changes: Vec<Change>) {
            self.now = self.now.plus_millis(1000);
            let (_, fx) = self
                .state
                .deploy(changes, true, &Origin::default(), BTreeMap::new(), self.now)
                .expect("deploys");
            self.commit(fx).await;
        }

        /// Reconcile passes whose launches come up Running, some of them failing once first.
        async fn settle(&mut self, fail_one: bool) {
            let mut failed = !fail_one;
            for _ in 0..8 {
                self.now = self.now.plus_millis(2_000);
                for a in AGENTS {
                    self.state.agent_seen(a, self.now);
                }
                let fx = self.state.reconcile(self.now);
                for (agent, command) in self.commit(fx).await {
                    match command {
                        AgentCommand::Launch(tasks) => {
                            for t in tasks {
                                let condition = if failed {
                                    Condition::Running
                                } else {
                                    failed = true;
                                    Condition::Failed
                                };
                                let s = status(&t.task_id, condition, self.now);
                                let fx = self.state.status(&agent, s, self.now);
                                self.commit(fx).await;
                            }
                        }
                        AgentCommand::Kill { task_id, .. } => {
                            let s = status(&task_id, Condition::Killed, self.now);
                            let fx = self.state.status(&agent, s, self.now);
                            self.commit(fx).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    const AGENTS: [&str; 3] = ["a1", "a2", "a3"];

    fn app(id: &str, instances: u32, cmd: &str) -> serde_json::Value {
        json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 16, "instances": instances,
               "portDefinitions": [{"port": 0}]})
    }

    /// What two leader states hold, compared in the terms the leader decides by: every
    /// collection loaded and every index built over them.
    fn assert_same(warm: &LeaderState, cold: &LeaderState) {
        warm.check_index();
        cold.check_index();
        assert_eq!(warm.apps, cold.apps, "apps");
        assert_eq!(warm.versions, cold.versions, "app versions");
        assert_eq!(warm.groups, cold.groups, "groups");
        assert_eq!(warm.group_versions, cold.group_versions, "group versions");
        assert_eq!(warm.children, cold.children, "apps by parent");
        assert_eq!(warm.instances, cold.instances, "instances");
        assert_eq!(warm.by_app, cold.by_app, "instances by app");
        assert_eq!(warm.deployments, cold.deployments, "deployments");
        assert_eq!(warm.task_failures, cold.task_failures, "task failures");
        assert_eq!(warm.last_version, cold.last_version, "last version");
        let (w, c) = (&warm.idx, &cold.idx);
        assert_eq!(w.by_agent, c.by_agent, "instances by agent");
        assert_eq!(w.pending, c.pending, "the launch queue");
        assert_eq!(w.dead, c.dead, "instances to replace");
        assert_eq!(w.held, c.held, "what each instance holds");
        assert_eq!(w.dirty_apps, c.dirty_apps, "apps to check");
        assert_eq!(w.counts, c.counts, "counts per app");
        assert_eq!((w.running, w.staged), (c.running, c.staged), "fleet counts");
        let placed = |idx: &crate::index::Index| -> BTreeSet<(PathId, Timestamp, InstanceId)> {
            idx.placed
                .iter()
                .flat_map(|(app, versions)| {
                    versions.iter().flat_map(move |(v, list)| {
                        list.entries()
                            .map(move |(id, _)| (app.clone(), *v, id.clone()))
                    })
                })
                .collect()
        };
        assert_eq!(placed(w), placed(c), "placed instances");
        // Sums of floats, added in another order.
        let agents: BTreeSet<&String> = w.usage.keys().chain(c.usage.keys()).collect();
        for a in agents {
            let (wu, cu) = (&w.usage[a], &c.usage[a]);
            assert_eq!(wu.ports, cu.ports, "ports used on {a}");
            assert_eq!(wu.gpus, cu.gpus, "gpus used on {a}");
            for (x, y) in [(wu.cpus, cu.cpus), (wu.mem, cu.mem), (wu.disk, cu.disk)] {
                assert!((x - y).abs() < 1e-6, "resources used on {a}: {x} != {y}");
            }
        }
    }

    async fn caught_up(store: &dyn StateStore, mut mirror: Mirror) -> Mirror {
        mirror
            .catch_up(store)
            .await
            .expect("catches up")
            .expect("the feed reaches");
        mirror
    }

    /// Follows `store` through apps created, updated and deleted, groups, instances launched,
    /// failed, replaced and expunged, deployments begun and finished, task failures and
    /// versions, catching up at every step; the state built from the mirror must be the one
    /// a cold load of the store gives.
    async fn a_followed_mirror_builds_what_a_cold_load_does(store: Arc<dyn StateStore>) {
        let mut d = Driver::new(store.clone()).await;
        for a in AGENTS {
            let fx = d.state.agent_registered(agent(a), 1, vec![], d.now);
            d.commit(fx).await;
        }
        d.deploy(vec![Change::Create(app("/web", 3, "sleep 100"))])
            .await;
        // Read while something is already stored, then followed.
        let mut mirror = Mirror::read(store.as_ref())
            .await
            .expect("reads")
            .expect("the store keeps revisions");
        d.settle(true).await;
        mirror = caught_up(store.as_ref(), mirror).await;
        d.deploy(vec![
            Change::Create(app("/db/pg", 2, "sleep 200")),
            Change::Create(app("/db/cache/redis", 1, "sleep 300")),
            Change::Create(app("/batch/job", 2, "sleep 400")),
        ])
        .await;
        mirror = caught_up(store.as_ref(), mirror).await;
        d.settle(false).await;
        // Updated: a new version, a rolling restart.
        d.deploy(vec![Change::Put(app("/web", 4, "sleep 101"))])
            .await;
        d.settle(true).await;
        mirror = caught_up(store.as_ref(), mirror).await;
        // Deleted: its instances killed and expunged, its versions dropped.
        d.deploy(vec![Change::Remove(PathId::parse("/batch/job"))])
            .await;
        d.settle(false).await;
        d.deploy(vec![Change::GroupRemove(PathId::parse("/db/cache"))])
            .await;
        mirror = caught_up(store.as_ref(), mirror).await;
        // Left half done: a deployment running, instances waiting for an offer.
        d.deploy(vec![
            Change::Put(app("/web", 6, "sleep 102")),
            Change::Create(app("/late", 2, "sleep 500")),
        ])
        .await;
        // An app deleted and created again between two catch-ups.
        d.deploy(vec![Change::Remove(PathId::parse("/db/pg"))])
            .await;
        d.settle(false).await;
        d.deploy(vec![
            Change::Create(app("/db/pg", 1, "sleep 201")),
            Change::Create(json!({"id": "/huge", "cmd": "sleep 1", "cpus": 100, "instances": 1})),
        ])
        .await;
        // Launched, no status yet; and one that fits no agent.
        d.now = d.now.plus_millis(1000);
        let fx = d.state.reconcile(d.now);
        d.commit(fx).await;
        let mirror = caught_up(store.as_ref(), mirror).await;

        let now = d.now;
        assert!(
            !d.state.task_failures.is_empty(),
            "a task failed on the way"
        );
        assert!(
            !d.state.deployments.is_empty(),
            "a deployment is left running"
        );
        let running = d
            .state
            .instances
            .values()
            .filter(|i| i.condition == Condition::Running)
            .count();
        assert!(running >= 5, "{running} instances running");
        assert!(
            !d.state.idx.pending.is_empty(),
            "an instance waits for an offer"
        );
        assert!(d.state.idx.staged > 0, "launches wait for a status");
        assert!(d.state.versions[&PathId::parse("/web")].len() >= 3);
        assert!(!d.state.groups.contains_key(&PathId::parse("/db/cache")));
        let warm = mirror.into_state(Tuning::default(), now);
        let cold = crate::elector::load_state(store.as_ref(), Tuning::default())
            .await
            .expect("loads");
        assert_same(&warm, &cold);
        // And both are what the leader that wrote it all holds.
        assert_eq!(warm.apps, d.state.apps);
        assert_eq!(warm.instances, d.state.instances);
        assert_eq!(warm.deployments, d.state.deployments);
        assert_eq!(warm.versions, d.state.versions);
        assert_eq!(warm.group_versions, d.state.group_versions);
    }

    #[tokio::test]
    async fn a_followed_mirror_builds_what_a_cold_load_does_in_memory() {
        a_followed_mirror_builds_what_a_cold_load_does(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn a_followed_mirror_builds_what_a_cold_load_does_on_redis() {
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), "mirror")
            .await
            .expect("connects");
        a_followed_mirror_builds_what_a_cold_load_does(Arc::new(store)).await;
    }

    async fn commit_elsewhere(d: &Driver, commits: usize) {
        for n in 0..commits {
            let mut b = stride_store::Batch::new();
            b.put(collections::META, format!("k{n}"), "v");
            d.store.commit(&d.lease, b).await.expect("committed");
        }
    }

    /// When the feed no longer reaches the mirror it says so, and a new term reads everything.
    #[tokio::test]
    async fn a_mirror_the_feed_no_longer_reaches_is_read_again() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let mut d = Driver::new(store.clone()).await;
        d.deploy(vec![Change::Create(app("/web", 2, "sleep 100"))])
            .await;
        let mut mirror = Mirror::read(store.as_ref())
            .await
            .expect("reads")
            .expect("a revision");
        commit_elsewhere(&d, stride_store::CHANGE_FEED_MAX_LEN + 1).await;
        assert_eq!(
            mirror.catch_up(store.as_ref()).await.expect("answers"),
            None
        );

        let standby = Standby::start(
            store.clone(),
            Following {
                poll: Duration::from_millis(10),
                build_ahead_below: Duration::ZERO,
            },
        );
        let read = || async {
            for _ in 0..500 {
                if standby.shared.slot.lock().await.mirror.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the standby never read its mirror");
        };
        read().await;
        standby.pause();
        d.deploy(vec![Change::Create(app("/api", 1, "sleep 100"))])
            .await;
        let (state, loaded) = load_for_term(Some(&standby), store.as_ref(), Tuning::default())
            .await
            .expect("loads");
        assert_eq!(loaded.source, Source::Mirror, "caught up from the feed");
        assert_eq!(state.apps.len(), 2);

        // The term ends; the standby reads again, then falls behind while an election pauses
        // it: the next term reads everything.
        standby.resume();
        read().await;
        standby.pause();
        commit_elsewhere(&d, stride_store::CHANGE_FEED_MAX_LEN + 1).await;
        let (state, loaded) = load_for_term(Some(&standby), store.as_ref(), Tuning::default())
            .await
            .expect("loads");
        assert_eq!(
            loaded.source,
            Source::Store,
            "the feed no longer reached the mirror"
        );
        assert_eq!(state.apps.len(), 2);
    }

    /// Until the standby has a mirror, and a state built ahead if `ahead`.
    async fn until_standing_by(standby: &Standby, ahead: bool) {
        for _ in 0..500 {
            let slot = standby.shared.slot.lock().await;
            if slot.mirror.is_some() && (!ahead || slot.ahead.is_some()) {
                return;
            }
            drop(slot);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the standby never got ready (ahead: {ahead})");
    }

    /// A leader that stops renewing: the standby builds its state ahead, and a term taking
    /// over takes it when nothing was committed since, and builds it again otherwise.
    #[tokio::test]
    async fn a_state_built_ahead_is_taken_while_it_is_current() {
        for commit_late in [false, true] {
            let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
            let mut d = Driver::leasing(store.clone(), Duration::from_millis(600)).await;
            for a in AGENTS {
                let fx = d.state.agent_registered(agent(a), 1, vec![], d.now);
                d.commit(fx).await;
            }
            d.deploy(vec![Change::Create(app("/web", 4, "sleep 100"))])
                .await;
            d.settle(true).await;
            let standby = Standby::start(
                store.clone(),
                Following {
                    poll: Duration::from_millis(20),
                    build_ahead_below: Duration::from_millis(400),
                },
            );
            until_standing_by(&standby, true).await;
            if commit_late {
                d.deploy(vec![Change::Create(app("/late", 1, "sleep 100"))])
                    .await;
            }
            for _ in 0..200 {
                if store.leader().await.expect("answers").is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            standby.pause();
            let (warm, loaded) = load_for_term(Some(&standby), store.as_ref(), Tuning::default())
                .await
                .expect("loads");
            let want = if commit_late {
                Source::Mirror
            } else {
                Source::Ahead
            };
            assert_eq!(loaded.source, want, "committed late: {commit_late}");
            let cold = crate::elector::load_state(store.as_ref(), Tuning::default())
                .await
                .expect("loads");
            assert_same(&warm, &cold);
            assert_eq!(warm.apps.len(), 1 + usize::from(commit_late));
        }
    }
}
