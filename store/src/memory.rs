//! The in-process store of `stride dev` and of tests: the same semantics as Redis, in a mutex.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{
    event_id_cmp, Batch, Candidate, Changed, Changes, LeaderRecord, Lease, Op, Result, StateStore,
    StoreError, StoredEvent, CHANGE_FEED_MAX_LEN, EVENT_STREAM_MAX_LEN,
};

#[derive(Default)]
struct Inner {
    collections: HashMap<String, BTreeMap<String, Bytes>>,
    epoch: u64,
    /// The lease value and when it expires.
    lease: Option<(String, Instant)>,
    events: VecDeque<StoredEvent>,
    /// Last stream id handed out, to keep ids strictly increasing.
    last_id: (u64, u64),
    /// Commits applied so far.
    commits: u64,
    /// What each of the last [`CHANGE_FEED_MAX_LEN`] commits changed, by commit number.
    feed: VecDeque<(u64, Vec<Changed>)>,
}

impl Inner {
    fn lease_token(&mut self) -> Option<&str> {
        if self
            .lease
            .as_ref()
            .is_some_and(|(_, exp)| *exp <= Instant::now())
        {
            self.lease = None;
        }
        self.lease.as_ref().map(|(t, _)| t.as_str())
    }

    fn next_id(&mut self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_id = if ms > self.last_id.0 {
            (ms, 0)
        } else {
            (self.last_id.0, self.last_id.1 + 1)
        };
        format!("{}-{}", self.last_id.0, self.last_id.1)
    }
}

/// A store held in memory. Cloning shares the same state.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    appended: Arc<Notify>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self
            .inner
            .lock()
            .collections
            .get(collection)
            .and_then(|c| c.get(key).cloned()))
    }

    async fn get_all(&self, collection: &str) -> Result<Vec<(String, Bytes)>> {
        Ok(self
            .inner
            .lock()
            .collections
            .get(collection)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn get_many(&self, collection: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let inner = self.inner.lock();
        let c = inner.collections.get(collection);
        Ok(keys
            .iter()
            .map(|k| c.and_then(|c| c.get(k).cloned()))
            .collect())
    }

    async fn keys(&self, collection: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .lock()
            .collections
            .get(collection)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn commit(&self, lease: &Lease, batch: Batch) -> Result<()> {
        let mut appended = false;
        {
            let mut inner = self.inner.lock();
            if inner.lease_token() != Some(lease.token().as_str()) {
                return Err(StoreError::Fenced);
            }
            inner.commits += 1;
            let mut changed = Vec::new();
            for op in batch.ops {
                match op {
                    Op::Put {
                        collection,
                        key,
                        value,
                    } => {
                        changed.push(Changed::Key {
                            collection: collection.clone(),
                            key: key.clone(),
                        });
                        inner
                            .collections
                            .entry(collection)
                            .or_default()
                            .insert(key, value);
                    }
                    Op::Delete { collection, key } => {
                        if let Some(c) = inner.collections.get_mut(&collection) {
                            c.remove(&key);
                        }
                        changed.push(Changed::Key { collection, key });
                    }
                    Op::Drop { collection } => {
                        inner.collections.remove(&collection);
                        changed.push(Changed::Collection { collection });
                    }
                    Op::Event { body } => {
                        let id = inner.next_id();
                        inner.events.push_back(StoredEvent { id, body });
                        while inner.events.len() > EVENT_STREAM_MAX_LEN {
                            inner.events.pop_front();
                        }
                        appended = true;
                    }
                }
            }
            let n = inner.commits;
            inner.feed.push_back((n, changed));
            while inner.feed.len() > CHANGE_FEED_MAX_LEN {
                inner.feed.pop_front();
            }
        }
        if appended {
            self.appended.notify_waiters();
        }
        Ok(())
    }

    async fn try_acquire(&self, candidate: &Candidate, ttl: Duration) -> Result<Option<Lease>> {
        let mut inner = self.inner.lock();
        if inner.lease_token().is_some() {
            return Ok(None);
        }
        inner.epoch += 1;
        let record = LeaderRecord {
            epoch: inner.epoch,
            scheduler_id: candidate.scheduler_id.clone(),
            grpc_address: candidate.grpc_address.clone(),
            http_address: candidate.http_address.clone(),
        };
        inner.lease = Some((record.token(), Instant::now() + ttl));
        Ok(Some(Lease { record }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut inner = self.inner.lock();
        if inner.lease_token() == Some(lease.token().as_str()) {
            inner.lease = Some((lease.token(), Instant::now() + ttl));
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.lease_token() == Some(lease.token().as_str()) {
            inner.lease = None;
        }
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderRecord>> {
        Ok(self
            .inner
            .lock()
            .lease_token()
            .and_then(LeaderRecord::from_token))
    }

    async fn lease_remaining(&self) -> Result<Option<Duration>> {
        let mut inner = self.inner.lock();
        inner.lease_token();
        Ok(inner
            .lease
            .as_ref()
            .map(|(_, expires)| expires.saturating_duration_since(Instant::now())))
    }

    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StoredEvent>> {
        let after = match after {
            Some(a) => a.to_string(),
            None => self.last_event_id().await?,
        };
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.appended.notified();
            {
                let inner = self.inner.lock();
                let found: Vec<StoredEvent> = inner
                    .events
                    .iter()
                    .filter(|e| event_id_cmp(&e.id, &after).is_gt())
                    .take(max)
                    .cloned()
                    .collect();
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn last_event_id(&self) -> Result<String> {
        Ok(self
            .inner
            .lock()
            .events
            .back()
            .map_or_else(|| "0".to_string(), |e| e.id.clone()))
    }

    async fn first_event_id(&self) -> Result<Option<String>> {
        Ok(self.inner.lock().events.front().map(|e| e.id.clone()))
    }

    async fn put_unfenced(&self, collection: &str, key: &str, value: Bytes) -> Result<()> {
        self.inner
            .lock()
            .collections
            .entry(collection.to_string())
            .or_default()
            .insert(key.to_string(), value);
        Ok(())
    }

    async fn delete_unfenced(&self, collection: &str, key: &str) -> Result<()> {
        if let Some(c) = self.inner.lock().collections.get_mut(collection) {
            c.remove(key);
        }
        Ok(())
    }

    async fn revision(&self) -> Result<Option<String>> {
        Ok(Some(self.inner.lock().commits.to_string()))
    }

    async fn changes_since(&self, revision: &str) -> Result<Option<Changes>> {
        let Ok(since) = revision.parse::<u64>() else {
            return Ok(None);
        };
        let inner = self.inner.lock();
        if since > inner.commits {
            return Ok(None);
        }
        let reaches =
            since == inner.commits || inner.feed.front().is_some_and(|(n, _)| *n <= since + 1);
        if !reaches {
            return Ok(None);
        }
        Ok(Some(Changes {
            revision: inner.commits.to_string(),
            changed: inner
                .feed
                .iter()
                .filter(|(n, _)| *n > since)
                .flat_map(|(_, c)| c.iter().cloned())
                .collect(),
        }))
    }
}
