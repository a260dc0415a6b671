//! Reading stored state for the GET endpoints.
//!
//! Everything is JSON written by the leader with `stride-core`'s serde. An entry that does not
//! parse is skipped with a warning in lists (one bad record must not hide every app) and is a
//! 500 when it is the object asked for.
//!
//! The app listings are served from a [`Snapshot`] the [`SnapshotCache`] keeps: read whole
//! once, then brought up to date from the store's change feed (only the keys commits changed
//! are read again), with each app's `AppInfo` JSON kept per embed until something it shows
//! changes, so that a listing is mostly the concatenation of kept bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use serde::de::DeserializeOwned;
use serde_json::Value;
use stride_core::deployment::{DeploymentPlan, READINESS_RESULTS};
use stride_core::instance::Instance;
use stride_core::render::{app_info, AppStatus, Embed};
use stride_core::{App, PathId, Timestamp};
use stride_store::{collections, Changed, Changes, StateStore, StoreError};

use crate::error::Result;

fn parse_entry<T: DeserializeOwned>(collection: &str, key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(collection, key, error = %e, "skipping a stored entry that does not parse");
            None
        }
    }
}

async fn read_all<T: DeserializeOwned>(
    store: &dyn StateStore,
    collection: &str,
) -> Result<Vec<(String, T)>> {
    Ok(store
        .get_all(collection)
        .await?
        .into_iter()
        .filter_map(|(k, v)| parse_entry(collection, &k, &v).map(|t| (k, t)))
        .collect())
}

/// One app, `None` when absent.
pub async fn app(store: &dyn StateStore, id: &PathId) -> Result<Option<App>> {
    let key = id.to_string();
    match store.get(collections::APPS, &key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("app {key}: {e}")).into()),
    }
}

/// Every app, by id.
pub async fn apps(store: &dyn StateStore) -> Result<BTreeMap<PathId, App>> {
    Ok(read_all::<App>(store, collections::APPS)
        .await?
        .into_iter()
        .map(|(_, a)| (a.id.clone(), a))
        .collect())
}

/// Above this many candidate keys, [`app_instances`] reads the whole collection in one
/// request rather than one request per instance.
const ONE_BY_ONE_MAX: usize = 1_000;

/// The instances of one app. Every instance id starts with its app's safe path (in each of
/// Marathon's id formats), so only the keys with that prefix are read, and each is then checked
/// against its stored app id: far fewer bytes to move and parse than every instance when the
/// app is a small part of a large installation.
pub async fn app_instances(store: &dyn StateStore, app: &PathId) -> Result<Vec<Instance>> {
    let prefix = app.safe_path();
    let keys: Vec<String> = store
        .keys(collections::INSTANCES)
        .await?
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect();
    let candidates: Vec<(String, Instance)> = if keys.len() > ONE_BY_ONE_MAX {
        read_all(store, collections::INSTANCES).await?
    } else {
        let values = futures::future::try_join_all(
            keys.iter().map(|k| store.get(collections::INSTANCES, k)),
        )
        .await?;
        keys.into_iter()
            .zip(values)
            .filter_map(|(k, v)| {
                let i = parse_entry(collections::INSTANCES, &k, &v?)?;
                Some((k, i))
            })
            .collect()
    };
    Ok(candidates
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i: &Instance| i.app_id == *app)
        .collect())
}

pub async fn deployments(store: &dyn StateStore) -> Result<Vec<DeploymentPlan>> {
    let mut plans: Vec<DeploymentPlan> = read_all(store, collections::DEPLOYMENTS)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    plans.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.id.cmp(&b.id)));
    Ok(plans)
}

/// A readiness result as the leader stores it for `/v2/deployments`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredReadiness {
    app_id: String,
    app_version: Timestamp,
    result: Value,
}

/// The stored readiness results by app: (app version, `readinessCheckResults` entry), ordered
/// by instance.
pub async fn readiness_results(
    store: &dyn StateStore,
) -> Result<HashMap<PathId, Vec<(Timestamp, Value)>>> {
    let mut stored = read_all::<StoredReadiness>(store, READINESS_RESULTS).await?;
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: HashMap<PathId, Vec<(Timestamp, Value)>> = HashMap::new();
    for (_, r) in stored {
        out.entry(PathId::parse(&r.app_id))
            .or_default()
            .push((r.app_version, r.result));
    }
    Ok(out)
}

/// Last task failure per app id.
pub async fn task_failures(store: &dyn StateStore) -> Result<HashMap<String, Value>> {
    Ok(read_all::<Value>(store, collections::TASK_FAILURES)
        .await?
        .into_iter()
        .collect())
}

/// The stored versions of an app, newest first.
pub async fn app_versions(store: &dyn StateStore, id: &PathId) -> Result<Vec<Timestamp>> {
    let mut versions: Vec<Timestamp> = store
        .keys(&collections::app_versions(&id.to_string()))
        .await?
        .iter()
        .filter_map(|k| Timestamp::parse(k).ok())
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.dedup();
    Ok(versions)
}

/// One stored version of an app.
pub async fn app_version(
    store: &dyn StateStore,
    id: &PathId,
    version: Timestamp,
) -> Result<Option<Value>> {
    let collection = collections::app_versions(&id.to_string());
    match store.get(&collection, &version.to_string()).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{collection}/{version}: {e}")).into()),
    }
}

/// A running deployment as the listings show it: which apps it touches.
#[derive(Clone)]
struct PlanRef {
    id: String,
    version: Timestamp,
    apps: BTreeSet<PathId>,
}

impl From<DeploymentPlan> for PlanRef {
    fn from(p: DeploymentPlan) -> Self {
        Self {
            apps: p.affected_apps(),
            id: p.id,
            version: p.version,
        }
    }
}

/// What one app's `AppInfo` shows besides its definition and last task failure, and that
/// `AppInfo` as rendered. A copy is made to be changed, so it starts with nothing rendered.
#[derive(Default)]
struct AppState {
    /// The app's instances by store key.
    instances: BTreeMap<String, Arc<Instance>>,
    /// Running deployments that touch the app, in the order of `/v2/deployments`.
    deployment_ids: Vec<String>,
    /// `AppInfo` JSON by what it embeds, rendered from this state: emptied whenever the app's
    /// definition, instances, deployments or last task failure change.
    rendered: parking_lot::Mutex<Vec<(Embed, Bytes)>>,
}

impl Clone for AppState {
    fn clone(&self) -> Self {
        Self {
            instances: self.instances.clone(),
            deployment_ids: self.deployment_ids.clone(),
            rendered: Default::default(),
        }
    }
}

/// Everything the app listings need. Readers share it behind an `Arc`; the cache changes it in
/// place when no reader holds it, and otherwise changes a copy that shares every unchanged
/// part (each app's state, the app map when no app changed).
#[derive(Clone, Default)]
pub struct Snapshot {
    pub apps: Arc<BTreeMap<PathId, App>>,
    /// Last task failure by app id.
    pub failures: Arc<HashMap<String, Value>>,
    plans: Arc<BTreeMap<String, PlanRef>>,
    /// By app id: every app, and every app id that instances name.
    states: HashMap<PathId, Arc<AppState>>,
}

impl Snapshot {
    /// Reads everything, and which app each instance key belongs to.
    async fn load(store: &dyn StateStore) -> Result<(Self, HashMap<String, PathId>)> {
        let (apps, instances, plans, failures) = futures::try_join!(
            apps(store),
            read_all::<Instance>(store, collections::INSTANCES),
            read_all::<DeploymentPlan>(store, collections::DEPLOYMENTS),
            task_failures(store)
        )?;
        let mut snap = Self {
            apps: Arc::new(apps),
            failures: Arc::new(failures),
            plans: Arc::new(plans.into_iter().map(|(k, p)| (k, p.into())).collect()),
            states: HashMap::new(),
        };
        let mut owners = HashMap::with_capacity(instances.len());
        let mut states: HashMap<PathId, AppState> = HashMap::new();
        for (key, i) in instances {
            owners.insert(key.clone(), i.app_id.clone());
            states
                .entry(i.app_id.clone())
                .or_default()
                .instances
                .insert(key, Arc::new(i));
        }
        for id in snap.apps.keys() {
            states.entry(id.clone()).or_default();
        }
        for (id, state) in &mut states {
            state.deployment_ids = snap.deployment_ids(id);
        }
        snap.states = states.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Ok((snap, owners))
    }

    fn deployment_ids(&self, app: &PathId) -> Vec<String> {
        let mut plans: Vec<&PlanRef> = self
            .plans
            .values()
            .filter(|p| p.apps.contains(app))
            .collect();
        plans.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.id.cmp(&b.id)));
        plans.into_iter().map(|p| p.id.clone()).collect()
    }

    /// Every instance.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.states
            .values()
            .flat_map(|s| s.instances.values().map(AsRef::as_ref))
    }

    /// Instances grouped by app.
    pub fn instances_by_app(&self) -> HashMap<&PathId, Vec<&Instance>> {
        self.states
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(app, s)| (app, s.instances.values().map(AsRef::as_ref).collect()))
            .collect()
    }

    /// The instances of one app.
    pub fn app_instances(&self, app: &PathId) -> Vec<&Instance> {
        self.states
            .get(app)
            .map(|s| s.instances.values().map(AsRef::as_ref).collect())
            .unwrap_or_default()
    }

    /// What AppInfo shows of `app` besides its definition.
    pub fn status<'a>(&'a self, app: &PathId, instances: Vec<&'a Instance>) -> AppStatus<'a> {
        AppStatus {
            instances,
            deployment_ids: self
                .states
                .get(app)
                .map(|s| s.deployment_ids.clone())
                .unwrap_or_else(|| self.deployment_ids(app)),
            last_task_failure: self.failures.get(&app.to_string()),
            readiness: Vec::new(),
        }
    }

    /// `AppInfo` of `app` (one of [`Snapshot::apps`]) with what `embed` asks for, as JSON:
    /// rendered once for each state of the app and kept.
    pub fn app_info_json(&self, app: &App, embed: Embed) -> Bytes {
        let state = self.states.get(&app.id);
        if let Some(found) = state.and_then(|s| {
            s.rendered
                .lock()
                .iter()
                .find(|(e, _)| *e == embed)
                .map(|(_, b)| b.clone())
        }) {
            return found;
        }
        let status = self.status(&app.id, self.app_instances(&app.id));
        let bytes = Bytes::from(app_info(app, &status, embed).to_string());
        if let Some(s) = state {
            let mut rendered = s.rendered.lock();
            if !rendered.iter().any(|(e, _)| *e == embed) {
                rendered.push((embed, bytes.clone()));
            }
        }
        bytes
    }
}

/// The kept snapshot with what it takes to bring it up to date.
struct Kept {
    /// The store revision the snapshot holds at least every commit of.
    revision: String,
    snapshot: Arc<Snapshot>,
    /// The app each instance key belongs to, to find it again when the key is deleted.
    owners: HashMap<String, PathId>,
    /// The number of the sync that brought the snapshot up to date last.
    synced: u64,
}

/// Collections the listings hold: a change to any other is no concern of theirs.
const HELD: [&str; 4] = [
    collections::APPS,
    collections::INSTANCES,
    collections::DEPLOYMENTS,
    collections::TASK_FAILURES,
];

impl Kept {
    /// Applies what changed since `self.revision`, reading only the changed keys again.
    /// `false` when that cannot be done (a held collection was dropped whole).
    async fn apply(&mut self, store: &dyn StateStore, changes: Changes) -> Result<bool> {
        let mut keys: [BTreeSet<String>; 4] = Default::default();
        for c in changes.changed {
            let Some(n) = HELD.iter().position(|h| *h == c.collection()) else {
                continue;
            };
            match c {
                Changed::Key { key, .. } => {
                    keys[n].insert(key);
                }
                Changed::Collection { .. } => return Ok(false),
            }
        }
        let keys = keys.map(|k| k.into_iter().collect::<Vec<String>>());
        let (apps, instances, plans, failures) = futures::try_join!(
            store.get_many(collections::APPS, &keys[0]),
            store.get_many(collections::INSTANCES, &keys[1]),
            store.get_many(collections::DEPLOYMENTS, &keys[2]),
            store.get_many(collections::TASK_FAILURES, &keys[3]),
        )?;
        let snap = Arc::make_mut(&mut self.snapshot);
        // Apps whose `AppInfo` may show something else now.
        let mut touched: HashSet<PathId> = HashSet::new();

        if !keys[0].is_empty() {
            let apps_now = Arc::make_mut(&mut snap.apps);
            for (key, value) in keys[0].iter().zip(apps) {
                let id = PathId::parse(key);
                match value.and_then(|b| parse_entry::<App>(collections::APPS, key, &b)) {
                    Some(app) if app.id == id => {
                        apps_now.insert(id.clone(), app);
                    }
                    _ => {
                        apps_now.remove(&id);
                    }
                }
                touched.insert(id);
            }
        }

        for (key, value) in keys[1].iter().zip(instances) {
            let instance =
                value.and_then(|b| parse_entry::<Instance>(collections::INSTANCES, key, &b));
            let owner = instance.as_ref().map(|i| i.app_id.clone());
            if let Some(was) = self
                .owners
                .get(key)
                .filter(|was| Some(*was) != owner.as_ref())
            {
                if let Some(state) = snap.states.get_mut(was) {
                    Arc::make_mut(state).instances.remove(key);
                }
                touched.insert(was.clone());
            }
            match instance {
                Some(i) => {
                    let app = i.app_id.clone();
                    Arc::make_mut(snap.states.entry(app.clone()).or_default())
                        .instances
                        .insert(key.clone(), Arc::new(i));
                    self.owners.insert(key.clone(), app.clone());
                    touched.insert(app);
                }
                None => {
                    self.owners.remove(key);
                }
            }
        }

        if !keys[2].is_empty() {
            let plans_now = Arc::make_mut(&mut snap.plans);
            for (key, value) in keys[2].iter().zip(plans) {
                if let Some(old) = plans_now.remove(key) {
                    touched.extend(old.apps);
                }
                if let Some(plan) = value
                    .and_then(|b| parse_entry::<DeploymentPlan>(collections::DEPLOYMENTS, key, &b))
                {
                    let plan = PlanRef::from(plan);
                    touched.extend(plan.apps.iter().cloned());
                    plans_now.insert(key.clone(), plan);
                }
            }
        }

        if !keys[3].is_empty() {
            let failures_now = Arc::make_mut(&mut snap.failures);
            for (key, value) in keys[3].iter().zip(failures) {
                match value.and_then(|b| parse_entry::<Value>(collections::TASK_FAILURES, key, &b))
                {
                    Some(f) => failures_now.insert(key.clone(), f),
                    None => failures_now.remove(key),
                };
                touched.insert(PathId::parse(key));
            }
        }

        for id in touched {
            let deployment_ids = snap.deployment_ids(&id);
            let keep = snap.apps.contains_key(&id)
                || snap
                    .states
                    .get(&id)
                    .is_some_and(|s| !s.instances.is_empty());
            if !keep {
                snap.states.remove(&id);
                continue;
            }
            let state = Arc::make_mut(snap.states.entry(id).or_default());
            state.deployment_ids = deployment_ids;
            state.rendered.get_mut().clear();
        }
        self.revision = changes.revision;
        Ok(true)
    }
}

/// The last [`Snapshot`] and the store revision it is current at. A request is served from a
/// snapshot brought up to date by a sync that began after the request did, so it sees every
/// commit acknowledged before it began; requests that arrive while a sync runs share the next
/// one. A sync reads what changed since the kept revision from the store's change feed and
/// reads only those keys again; only when the feed no longer reaches back that far (or the
/// store keeps none and its revision moved) does it read everything again, while the others
/// wait for that read instead of making their own.
#[derive(Default)]
pub struct SnapshotCache {
    kept: tokio::sync::Mutex<Option<Kept>>,
    /// Syncs begun so far.
    syncs: AtomicU64,
    /// Set while a sync reads everything.
    loading: AtomicBool,
    /// When a request last asked for the snapshot, in milliseconds since the Unix epoch.
    asked_at_ms: AtomicU64,
    /// Syncs that read everything again because the change feed no longer reached back to
    /// the kept snapshot, so far.
    fell_behind: AtomicU64,
}

/// For this long after a request last asked for the snapshot, [`SnapshotCache::keep_current`]
/// renders the plain listing ahead of the next request at every sync; after it, only once every
/// [`IDLE_RENDER_EVERY`], so that a gateway nobody lists from spends little on rendering while
/// instances change by the thousand, and a listing after a quiet spell still finds most of its
/// apps rendered.
const RENDER_AHEAD_FOR: Duration = Duration::from_secs(60);
const IDLE_RENDER_EVERY: Duration = Duration::from_secs(5);

/// While no request has asked for the snapshot for [`RENDER_AHEAD_FOR`], the keeper syncs only
/// this often: an instance that changes several times in between (scheduled, staging,
/// running) is read once, and a gateway nobody asks spends little following the store. The
/// change feed's ~1,000 commits last far longer than this at any rate the leader commits; a
/// sync that found the feed no longer reached (and read everything) brings back the short
/// interval.
const IDLE_SYNC_EVERY: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SnapshotCache {
    /// The snapshot for a request: see the type's documentation.
    pub async fn get(&self, store: &dyn StateStore) -> Result<Arc<Snapshot>> {
        self.asked_at_ms.store(now_ms(), Ordering::Relaxed);
        self.sync(store).await
    }

    async fn sync(&self, store: &dyn StateStore) -> Result<Arc<Snapshot>> {
        let arrived = self.syncs.load(Ordering::SeqCst);
        let mut kept = self.kept.lock().await;
        if let Some(k) = kept.as_ref().filter(|k| k.synced > arrived) {
            return Ok(k.snapshot.clone());
        }
        let sync = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(k) = kept.as_mut() {
            match store.changes_since(&k.revision).await? {
                Some(changes) => {
                    if changes.revision == k.revision && changes.changed.is_empty() {
                        k.synced = sync;
                        return Ok(k.snapshot.clone());
                    }
                    if k.apply(store, changes).await? {
                        k.synced = sync;
                        return Ok(k.snapshot.clone());
                    }
                }
                None => {
                    if store.revision().await?.as_ref() == Some(&k.revision) {
                        k.synced = sync;
                        return Ok(k.snapshot.clone());
                    }
                }
            }
        }
        // Read under the lock: another reader may have just loaded what this one wants.
        let Some(revision) = store.revision().await? else {
            *kept = None;
            return Ok(Arc::new(Snapshot::load(store).await?.0));
        };
        if kept.is_some() {
            self.fell_behind.fetch_add(1, Ordering::Relaxed);
        }
        self.loading.store(true, Ordering::SeqCst);
        // What is read may already include later commits; the next sync reads them again.
        let loaded = Snapshot::load(store).await;
        self.loading.store(false, Ordering::SeqCst);
        let (snapshot, owners) = loaded?;
        let snapshot = Arc::new(snapshot);
        *kept = Some(Kept {
            revision,
            snapshot: snapshot.clone(),
            owners,
            synced: sync,
        });
        Ok(snapshot)
    }

    /// The snapshot brought up to date as [`SnapshotCache::get`] does, or `None` while another
    /// request reads everything, so that a caller that needs little can read that instead.
    pub async fn fresh(&self, store: &dyn StateStore) -> Result<Option<Arc<Snapshot>>> {
        if self.loading.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.get(store).await.map(Some)
    }

    /// Keeps the snapshot current, syncing every `every` while requests ask for it (every
    /// [`IDLE_SYNC_EVERY`] when none have for [`RENDER_AHEAD_FOR`]), and the plain listing
    /// (`GET /v2/apps`) rendered (at every sync while requests ask, less often when none do),
    /// so that requests find little to do. Ends when `stop` flips.
    pub async fn keep_current(
        &self,
        store: &dyn StateStore,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut rendered_at_ms = 0;
        let mut synced_at_ms = 0;
        let mut fell_behind_at_ms = 0;
        loop {
            let now = now_ms();
            let asked = self.asked_at_ms.load(Ordering::Relaxed);
            let wanted = now.saturating_sub(asked) <= RENDER_AHEAD_FOR.as_millis() as u64
                || now.saturating_sub(fell_behind_at_ms) <= RENDER_AHEAD_FOR.as_millis() as u64;
            if !wanted && now.saturating_sub(synced_at_ms) < IDLE_SYNC_EVERY.as_millis() as u64 {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            synced_at_ms = now;
            let fell_behind = self.fell_behind.load(Ordering::Relaxed);
            let synced = self.sync(store).await;
            if self.fell_behind.load(Ordering::Relaxed) != fell_behind {
                fell_behind_at_ms = now_ms();
            }
            match synced {
                Ok(snap) => {
                    let now = now_ms();
                    if now.saturating_sub(asked) <= RENDER_AHEAD_FOR.as_millis() as u64
                        || now.saturating_sub(rendered_at_ms)
                            >= IDLE_RENDER_EVERY.as_millis() as u64
                    {
                        rendered_at_ms = now;
                        let embed = listing_embed(Embed::default());
                        for app in snap.apps.values() {
                            snap.app_info_json(app, embed);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot bring the listings up to date"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// What the app listings embed: what was asked for, with counts and deployments always.
pub fn listing_embed(asked: Embed) -> Embed {
    Embed {
        counts: true,
        deployments: true,
        ..asked
    }
}

/// Running deployments that touch `app`.
pub fn deployment_ids(plans: &[DeploymentPlan], app: &PathId) -> Vec<String> {
    plans
        .iter()
        .filter(|p| p.touches(app))
        .map(|p| p.id.clone())
        .collect()
}
