//! The state store: everything that must outlive a process.
//!
//! [`StateStore`] is a small key-value interface over named collections (each a hash of key →
//! bytes), a leader lease with a fencing epoch, and an append-only event stream. Two
//! implementations pass the same conformance suite ([`conformance`]): [`RedisStore`] for the real
//! topology (one Redis, or a master found through Redis Sentinel) and [`MemoryStore`] for
//! `stride dev` and tests.
//!
//! ## Fencing
//! Leadership is a lease (`SET NX PX`, renewed by compare-and-extend) whose value embeds an
//! epoch bumped at every election. Every write of the leader goes through [`StateStore::commit`],
//! which applies a batch only if the lease still holds the caller's token, in one atomic step. A
//! deposed leader that wakes up after a pause therefore cannot change anything: its token is
//! gone, and it learns so from [`StoreError::Fenced`].
//!
//! ## The change feed
//! Every commit also records, in the same atomic step, which keys it wrote or deleted and which
//! collections it dropped, in a feed bounded to the last [`CHANGE_FEED_MAX_LEN`] commits. A
//! reader that keeps a copy of some collections under a [`StateStore::revision`] brings it up
//! to date with [`StateStore::changes_since`] and reads only those keys again; when the feed no
//! longer reaches back to its revision, it reads everything again.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod conformance;
pub mod history;
mod memory;
mod redis_store;
mod sentinel;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// The environment variable naming the store's URL, for every service.
pub const REDIS_URL_ENV: &str = "STRIDE_REDIS_URL";
/// The name some services read before `STRIDE_REDIS_URL`; still accepted when that is not set.
pub const REDIS_URL_ENV_ALIAS: &str = "STRIDE_REDIS";
/// The store of a service given no URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// The store URL a service uses: its `--redis` flag (which clap fills from
/// [`REDIS_URL_ENV`]), else [`REDIS_URL_ENV_ALIAS`] in `env`, else [`DEFAULT_REDIS_URL`].
pub fn redis_url(flag: Option<String>, env: &HashMap<String, String>) -> String {
    flag.filter(|u| !u.is_empty())
        .or_else(|| {
            [REDIS_URL_ENV, REDIS_URL_ENV_ALIAS]
                .iter()
                .find_map(|k| env.get(*k).filter(|u| !u.is_empty()).cloned())
        })
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string())
}

/// Collections the services use. Plain names, so the store needs no knowledge of the domain.
pub mod collections {
    /// App id → current app definition (JSON).
    pub const APPS: &str = "apps";
    /// Group id → group attributes (JSON).
    pub const GROUPS: &str = "groups";
    /// Instance id → instance (JSON).
    pub const INSTANCES: &str = "instances";
    /// Deployment id → running deployment plan (JSON).
    pub const DEPLOYMENTS: &str = "deployments";
    /// App id → last task failure (JSON).
    pub const TASK_FAILURES: &str = "task-failures";
    /// Agent id → agent record (JSON).
    pub const AGENTS: &str = "agents";
    /// Single values: `framework-id`, and the like.
    pub const META: &str = "meta";

    /// Versions of one app: version timestamp → definition.
    pub fn app_versions(app_id: &str) -> String {
        format!("app-versions:{app_id}")
    }

    /// Versions of one group: version timestamp → manifest (its attributes and the version of
    /// each direct child).
    pub fn group_versions(group_id: &str) -> String {
        format!("group-versions:{group_id}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's lease is no longer the current one: it must stop acting as leader.
    #[error("fenced: the leader lease is held by another term")]
    Fenced,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who leads, as recorded in the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderRecord {
    pub epoch: u64,
    pub scheduler_id: String,
    pub grpc_address: String,
    pub http_address: String,
}

impl LeaderRecord {
    /// The lease value: unique per term because the epoch is.
    pub fn token(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.epoch, self.scheduler_id, self.grpc_address, self.http_address
        )
    }

    pub fn from_token(token: &str) -> Option<Self> {
        let mut parts = token.splitn(4, '|');
        Some(Self {
            epoch: parts.next()?.parse().ok()?,
            scheduler_id: parts.next()?.to_string(),
            grpc_address: parts.next()?.to_string(),
            http_address: parts.next()?.to_string(),
        })
    }
}

/// A held lease: proof of leadership for one term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub record: LeaderRecord,
}

impl Lease {
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }
    pub fn token(&self) -> String {
        self.record.token()
    }
}

/// Who wants to lead (the epoch is assigned by the store on acquisition).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub scheduler_id: String,
    pub grpc_address: String,
    pub http_address: String,
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put {
        collection: String,
        key: String,
        value: Bytes,
    },
    Delete {
        collection: String,
        key: String,
    },
    /// Removes a whole collection.
    Drop {
        collection: String,
    },
    /// Appends an event (JSON) to the event stream.
    Event {
        body: Bytes,
    },
}

/// Writes applied together, atomically, under the lease.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(
        &mut self,
        collection: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            collection: collection.into(),
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, collection: impl Into<String>, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete {
            collection: collection.into(),
            key: key.into(),
        });
        self
    }

    pub fn drop_collection(&mut self, collection: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Drop {
            collection: collection.into(),
        });
        self
    }

    pub fn event(&mut self, body: impl Into<Bytes>) -> &mut Self {
        self.ops.push(Op::Event { body: body.into() });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

/// An event as stored, with its stream id (`<ms>-<seq>`, ordered).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: String,
    pub body: Bytes,
}

/// Compares two stream ids (`<ms>-<seq>`) numerically.
pub fn event_id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> (u64, u64) {
        let mut it = s.splitn(2, '-');
        let ms = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let seq = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        (ms, seq)
    }
    parts(a).cmp(&parts(b))
}

/// How many events the stream keeps (approximately; older ones are trimmed).
pub const EVENT_STREAM_MAX_LEN: usize = 100_000;

/// How many commits the change feed keeps (approximately; older ones are trimmed). It holds
/// keys only, never values, so it costs a fraction of what those commits wrote.
pub const CHANGE_FEED_MAX_LEN: usize = 1_000;

/// Something one commit changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Changed {
    /// A key it wrote or deleted: read it again to know which.
    Key { collection: String, key: String },
    /// A collection it dropped whole.
    Collection { collection: String },
}

impl Changed {
    pub fn collection(&self) -> &str {
        match self {
            Changed::Key { collection, .. } | Changed::Collection { collection } => collection,
        }
    }
}

/// What the commits after a revision changed, oldest first, and the revision they lead to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub revision: String,
    pub changed: Vec<Changed>,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Bytes>>;
    async fn get_all(&self, collection: &str) -> Result<Vec<(String, Bytes)>>;
    /// The values of `keys` of one collection, in their order (`None` where absent).
    async fn get_many(&self, collection: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(collection, key).await?);
        }
        Ok(values)
    }
    /// Keys of a collection without the values.
    async fn keys(&self, collection: &str) -> Result<Vec<String>>;

    /// Applies `batch` atomically if `lease` is still the current lease; [`StoreError::Fenced`]
    /// otherwise, with nothing applied.
    async fn commit(&self, lease: &Lease, batch: Batch) -> Result<()>;

    /// Takes the lease if nobody holds it, bumping the epoch.
    async fn try_acquire(&self, candidate: &Candidate, ttl: Duration) -> Result<Option<Lease>>;
    /// Extends the lease if it is still ours; `false` when it was lost.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool>;
    /// Gives the lease up if it is still ours.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// The current lease holder, if any.
    async fn leader(&self) -> Result<Option<LeaderRecord>>;
    /// How long the current lease has left before it expires unless renewed; `None` when
    /// nobody holds it, or when the store cannot tell. A standby reads it to see a leader that
    /// stopped renewing.
    async fn lease_remaining(&self) -> Result<Option<Duration>> {
        Ok(None)
    }

    /// Events after `after` (exclusive; `None` = only events appended from now on, `Some("0")`
    /// = from the oldest kept), waiting up to `block` for at least one.
    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StoredEvent>>;
    /// Id of the newest event, `"0"` when there is none.
    async fn last_event_id(&self) -> Result<String>;
    /// Id of the oldest event still kept, if any (a resume point before it has lost events).
    async fn first_event_id(&self) -> Result<Option<String>>;

    /// Unfenced single-value writes for processes that do not lead (membership, heartbeats).
    async fn put_unfenced(&self, collection: &str, key: &str, value: Bytes) -> Result<()>;
    async fn delete_unfenced(&self, collection: &str, key: &str) -> Result<()>;

    /// A token that changes whenever a commit is applied, so that a reader holding what it read
    /// under one token knows the committed state is unchanged while the token is. `None` when
    /// the store cannot tell: readers then read again every time. Unfenced writes do not count.
    async fn revision(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// What the commits applied after `revision` (a value [`StateStore::revision`] returned)
    /// changed, up to the revision the answer names, read in one atomic step. `None` when the
    /// change feed no longer reaches back to `revision` (trimmed, lost in a failover, or never
    /// a revision of this store), when so much changed that reading everything again is
    /// cheaper, or when the store keeps no feed: the reader must then read everything again.
    async fn changes_since(&self, revision: &str) -> Result<Option<Changes>> {
        let _ = revision;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_url_comes_from_the_flag_then_either_variable() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = env(&[
            ("STRIDE_REDIS_URL", "redis://new/"),
            ("STRIDE_REDIS", "redis://old/"),
        ]);
        assert_eq!(
            redis_url(Some("redis://flag/".into()), &both),
            "redis://flag/"
        );
        assert_eq!(redis_url(None, &both), "redis://new/");
        assert_eq!(
            redis_url(None, &env(&[("STRIDE_REDIS", "redis://old/")])),
            "redis://old/"
        );
        assert_eq!(redis_url(None, &env(&[])), DEFAULT_REDIS_URL);
    }
}
