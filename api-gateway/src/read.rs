//! Reading stored state for the GET endpoints.
//!
//! Everything is JSON written by the leader with `stride-core`'s serde. An entry that does not
//! parse is skipped with a warning in lists (one bad record must not hide every app) and is a
//! 500 when it is the object asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use stride_core::deployment::{DeploymentPlan, READINESS_RESULTS};
use stride_core::instance::Instance;
use stride_core::render::AppStatus;
use stride_core::{App, PathId, Timestamp};
use stride_store::{collections, StateStore, StoreError};

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

pub async fn instances(store: &dyn StateStore) -> Result<Vec<Instance>> {
    Ok(read_all::<Instance>(store, collections::INSTANCES)
        .await?
        .into_iter()
        .map(|(_, i)| i)
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

/// Everything the app listings need, read together.
pub struct Snapshot {
    pub apps: BTreeMap<PathId, App>,
    pub instances: Vec<Instance>,
    pub deployments: Vec<DeploymentPlan>,
    pub failures: HashMap<String, Value>,
    /// Positions in `instances` by app.
    by_app: HashMap<PathId, Vec<usize>>,
}

impl Snapshot {
    pub async fn load(store: &dyn StateStore) -> Result<Self> {
        let (apps, instances, deployments, failures) = futures::try_join!(
            apps(store),
            instances(store),
            deployments(store),
            task_failures(store)
        )?;
        let mut by_app: HashMap<PathId, Vec<usize>> = HashMap::new();
        for (n, i) in instances.iter().enumerate() {
            by_app.entry(i.app_id.clone()).or_default().push(n);
        }
        Ok(Self {
            apps,
            instances,
            deployments,
            failures,
            by_app,
        })
    }

    /// Instances grouped by app.
    pub fn instances_by_app(&self) -> HashMap<&PathId, Vec<&Instance>> {
        self.by_app
            .iter()
            .map(|(app, ns)| (app, ns.iter().map(|n| &self.instances[*n]).collect()))
            .collect()
    }

    /// The instances of one app.
    pub fn app_instances(&self, app: &PathId) -> Vec<&Instance> {
        self.by_app
            .get(app)
            .map(|ns| ns.iter().map(|n| &self.instances[*n]).collect())
            .unwrap_or_default()
    }

    /// What AppInfo shows of `app` besides its definition.
    pub fn status<'a>(&'a self, app: &PathId, instances: Vec<&'a Instance>) -> AppStatus<'a> {
        AppStatus {
            instances,
            deployment_ids: deployment_ids(&self.deployments, app),
            last_task_failure: self.failures.get(&app.to_string()),
            readiness: Vec::new(),
        }
    }
}

/// The last [`Snapshot`] read and the store revision it was read under. Listings are served
/// from it for as long as no commit has been applied since; after one, the first reader reloads
/// it while the others wait for that read instead of making their own. A request always sees
/// every commit acknowledged before it began.
#[derive(Default)]
pub struct SnapshotCache {
    last: tokio::sync::Mutex<Option<(String, Arc<Snapshot>)>>,
}

impl SnapshotCache {
    pub async fn get(&self, store: &dyn StateStore) -> Result<Arc<Snapshot>> {
        if store.revision().await?.is_none() {
            return Ok(Arc::new(Snapshot::load(store).await?));
        }
        let mut last = self.last.lock().await;
        // Read under the lock: another reader may have just loaded what this one wants.
        let Some(rev) = store.revision().await? else {
            return Ok(Arc::new(Snapshot::load(store).await?));
        };
        if let Some((r, snap)) = last.as_ref() {
            if *r == rev {
                return Ok(snap.clone());
            }
        }
        // What is read may already include later commits; the next request then sees a newer
        // revision and reads again.
        let snap = Arc::new(Snapshot::load(store).await?);
        *last = Some((rev, snap.clone()));
        Ok(snap)
    }

    /// The kept snapshot when it is still current; `None` when it is not (or is being read
    /// again), without reading one.
    pub async fn fresh(&self, store: &dyn StateStore) -> Result<Option<Arc<Snapshot>>> {
        let Some(rev) = store.revision().await? else {
            return Ok(None);
        };
        let Ok(last) = self.last.try_lock() else {
            return Ok(None);
        };
        Ok(last
            .as_ref()
            .filter(|(r, _)| *r == rev)
            .map(|(_, snap)| snap.clone()))
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
