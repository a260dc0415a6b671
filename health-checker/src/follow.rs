//! Follows stored state for the tracker: a full read of apps, instances and agents at start and
//! every `resync` interval, and in between the event stream, whose events name what changed
//! (an instance's status or condition, an app's deployment), so only that is read again.
//!
//! The event id is taken *before* a full read, so nothing written meanwhile is missed; an event
//! seen twice only causes a harmless re-read. Every read has a deadline: one that passes counts
//! as a failed read (everything is read again shortly), so a store that stops answering never
//! holds this loop.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use stride_core::agent::AgentRecord;
use stride_core::instance::{parse_task_id, Instance};
use stride_core::App;
use stride_store::{collections, StateStore, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::tracker::Update;

/// Above this many changed instances in one go, read them all rather than one by one.
const MANY: usize = 256;
/// The longest one read of the store may take (a full read of a large cluster included).
const READ_DEADLINE: Duration = Duration::from_secs(20);
/// How long the event stream blocks waiting for news.
const EVENTS_BLOCK: Duration = Duration::from_millis(500);
/// How long an event read may take beyond its blocking time.
const EVENTS_DEADLINE: Duration = Duration::from_secs(5);

/// `read`, or a failure once `limit` has passed without an answer.
async fn within<T>(
    limit: Duration,
    read: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "no answer within {limit:?}"
        )))
    })
}

/// What the events of one read ask to read again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub instances: BTreeSet<String>,
    pub apps: bool,
}

impl Dirty {
    /// Notes what `event` (a stored event's JSON) changed.
    pub fn note(&mut self, event: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(event) else {
            return;
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match v.get("eventType").and_then(Value::as_str).unwrap_or("") {
            "instance_changed_event" => self.instances.extend(field("instanceId")),
            "status_update_event" => {
                if let Some(p) = field("taskId").as_deref().and_then(parse_task_id) {
                    self.instances.insert(p.instance_id.0);
                }
            }
            "api_post_event"
            | "group_change_success"
            | "deployment_info"
            | "deployment_success"
            | "deployment_failed"
            | "deployment_step_success"
            | "app_terminated_event" => self.apps = true,
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && !self.apps
    }
}

async fn read_all<T: DeserializeOwned>(
    store: &dyn StateStore,
    collection: &str,
) -> Result<Vec<T>, StoreError> {
    Ok(store
        .get_all(collection)
        .await?
        .into_iter()
        .filter_map(|(k, v)| match serde_json::from_slice(&v) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(collection, key = %k, error = %e, "skipping an entry that does not parse");
                None
            }
        })
        .collect())
}

async fn full(store: &dyn StateStore) -> Result<Update, StoreError> {
    Ok(Update::Full {
        apps: read_all::<App>(store, collections::APPS).await?,
        instances: read_all::<Instance>(store, collections::INSTANCES).await?,
        agents: read_all::<AgentRecord>(store, collections::AGENTS).await?,
    })
}

/// Agent ids read last, so an instance placed on an agent not seen yet (registered since)
/// makes the agents be read again: their API addresses have no events.
#[derive(Default)]
struct KnownAgents(HashSet<String>);

impl KnownAgents {
    fn note(&mut self, update: &Update) {
        let agents = match update {
            Update::Full { agents, .. } | Update::Agents(agents) => agents,
            _ => return,
        };
        self.0 = agents.iter().map(|a| a.agent_id.clone()).collect();
    }

    fn misses(&self, update: &Update) -> bool {
        let Update::Instances(list) = update else {
            return false;
        };
        list.iter()
            .filter_map(|(_, i)| i.as_ref()?.agent_id())
            .any(|a| !self.0.contains(a))
    }
}

async fn changed(store: &dyn StateStore, dirty: Dirty) -> Result<Vec<Update>, StoreError> {
    let mut out = Vec::new();
    if dirty.apps {
        out.push(Update::Apps(
            read_all::<App>(store, collections::APPS).await?,
        ));
        out.push(Update::Agents(
            read_all::<AgentRecord>(store, collections::AGENTS).await?,
        ));
    }
    if dirty.instances.len() > MANY {
        let all = read_all::<Instance>(store, collections::INSTANCES).await?;
        let mut list: Vec<(String, Option<Instance>)> = Vec::with_capacity(all.len());
        let present: BTreeSet<String> = all.iter().map(|i| i.id.0.clone()).collect();
        list.extend(
            dirty
                .instances
                .into_iter()
                .filter(|id| !present.contains(id))
                .map(|id| (id, None)),
        );
        list.extend(all.into_iter().map(|i| (i.id.0.clone(), Some(i))));
        out.push(Update::Instances(list));
    } else if !dirty.instances.is_empty() {
        let mut list = Vec::with_capacity(dirty.instances.len());
        for id in dirty.instances {
            let inst = match store.get(collections::INSTANCES, &id).await? {
                Some(b) => serde_json::from_slice::<Instance>(&b).ok(),
                None => None,
            };
            list.push((id, inst));
        }
        out.push(Update::Instances(list));
    }
    Ok(out)
}

/// Sends updates until `stop` turns true or the receiver is gone.
pub async fn run(
    store: Arc<dyn StateStore>,
    updates: mpsc::Sender<Update>,
    resync: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor: Option<String> = None;
    let mut known = KnownAgents::default();
    let mut last_full = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let step: Result<(), StoreError> = async {
            if cursor.is_none() || last_full.elapsed() >= resync {
                let id = within(READ_DEADLINE, store.last_event_id()).await?;
                let update = within(READ_DEADLINE, full(store.as_ref())).await?;
                known.note(&update);
                if updates.send(update).await.is_err() {
                    return Ok(());
                }
                cursor = Some(id);
                last_full = Instant::now();
            }
            let after = cursor.clone();
            let events = tokio::select! {
                r = within(
                    EVENTS_BLOCK + EVENTS_DEADLINE,
                    store.read_events(after.as_deref(), 2_000, EVENTS_BLOCK),
                ) => r?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            let mut dirty = Dirty::default();
            for e in &events {
                dirty.note(&e.body);
            }
            if let Some(last) = events.last() {
                cursor = Some(last.id.clone());
            }
            if !dirty.is_empty() {
                debug!(
                    instances = dirty.instances.len(),
                    apps = dirty.apps,
                    "re-reading"
                );
                let mut list = within(READ_DEADLINE, changed(store.as_ref(), dirty)).await?;
                if list.iter().any(|u| known.misses(u)) {
                    let agents = within(
                        READ_DEADLINE,
                        read_all::<AgentRecord>(store.as_ref(), collections::AGENTS),
                    )
                    .await?;
                    list.insert(0, Update::Agents(agents));
                }
                for u in list {
                    known.note(&u);
                    if updates.send(u).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
        .await;
        match step {
            Ok(()) => delay = Duration::from_millis(100),
            Err(e) => {
                warn!(error = %e, "cannot read the store; reading everything again shortly");
                cursor = None;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        if updates.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_what_to_read_again() {
        let mut d = Dirty::default();
        d.note(br#"{"eventType":"instance_changed_event","instanceId":"web.instance-1"}"#);
        d.note(br#"{"eventType":"status_update_event","taskId":"web.instance-2._app.3"}"#);
        d.note(br#"{"eventType":"health_status_changed_event","instanceId":"web.instance-9"}"#);
        d.note(b"not json");
        assert!(!d.apps);
        assert_eq!(
            d.instances.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["web.instance-1", "web.instance-2"]
        );
        d.note(br#"{"eventType":"deployment_info","plan":{}}"#);
        assert!(d.apps);
    }
}
