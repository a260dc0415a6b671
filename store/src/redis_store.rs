//! The Redis implementation: collections are hashes, the lease is a key with a TTL whose value
//! carries the epoch, and events are a Redis stream (so readers resume from the last id they saw).
//! Leader writes run in one Lua script that checks the lease first, so a batch is applied whole
//! or, when fenced, not at all.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script, Value};
use tokio::sync::Mutex;

use crate::{
    Batch, Candidate, LeaderRecord, Lease, Op, Result, StateStore, StoreError, StoredEvent,
    EVENT_STREAM_MAX_LEN,
};

const COMMIT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local i = 2
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'P' then
    redis.call('HSET', ARGV[i+1], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'D' then
    redis.call('HDEL', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'X' then
    redis.call('DEL', ARGV[i+1]); i = i + 2
  elseif op == 'E' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[i+1], '*', 'e', ARGV[i+2]); i = i + 3
  else
    return redis.error_reply('bad op ' .. tostring(op))
  end
end
return 'OK'
"#;

const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local e = redis.call('INCR', KEYS[2])
local tok = e .. '|' .. ARGV[1]
redis.call('SET', KEYS[1], tok, 'PX', ARGV[2])
return tok
"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); return 1 end
return 0
"#;

/// A Redis-backed store. Cheap to clone: connections are shared.
#[derive(Clone)]
pub struct RedisStore {
    /// Commands, pipelined over one auto-reconnecting connection.
    conn: ConnectionManager,
    /// Blocking stream reads need a connection of their own, or they would stall every other
    /// command behind them.
    client: redis::Client,
    reader: std::sync::Arc<Mutex<Option<MultiplexedConnection>>>,
    prefix: String,
    commit: Script,
    acquire: Script,
    renew: Script,
    release: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Query parameters of a Redis URL that are Stride's, not the redis crate's: TLS files.
const TLS_PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

/// The URL without Stride's TLS parameters, and their values by name.
fn split_tls_params(url: &str) -> (String, Vec<(&'static str, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let (fragment_free, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in fragment_free.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match TLS_PARAMS.iter().find(|k| **k == key) {
            Some(k) => tls.push((*k, value.to_string())),
            None => kept.push(pair),
        }
    }
    let mut clean = base.to_string();
    if !kept.is_empty() {
        clean.push('?');
        clean.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        clean.push('#');
        clean.push_str(f);
    }
    (clean, tls)
}

/// A client for `url`, with the CA and client certificate its TLS parameters name.
fn client(url: &str) -> Result<redis::Client> {
    let (clean, tls) = split_tls_params(url);
    if tls.is_empty() {
        return redis::Client::open(clean).map_err(unavailable);
    }
    if !clean.starts_with("rediss://") {
        return Err(StoreError::Unavailable(
            "tls_ca, tls_cert and tls_key need a rediss:// URL".into(),
        ));
    }
    let read = |name: &str| -> Result<Option<Vec<u8>>> {
        match tls.iter().find(|(k, _)| *k == name) {
            None => Ok(None),
            Some((_, path)) => std::fs::read(path)
                .map(Some)
                .map_err(|e| StoreError::Unavailable(format!("{name} {path}: {e}"))),
        }
    };
    let client_tls = match (read("tls_cert")?, read("tls_key")?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreError::Unavailable(
                "tls_cert and tls_key go together".into(),
            ))
        }
    };
    redis::Client::build_with_tls(
        clean,
        redis::TlsCertificates {
            client_tls,
            root_cert: read("tls_ca")?,
        },
    )
    .map_err(unavailable)
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port/db`, or `rediss://` for TLS);
    /// every key starts with `prefix:`.
    ///
    /// `user:password` authenticates as that ACL user (`AUTH user password`); a password alone
    /// (`redis://:password@host`) is `requirepass`'s. With `rediss://` the server's certificate
    /// is checked against the system's roots, or against the PEM CA named by the query
    /// parameter `tls_ca=/path`; `tls_cert=/path&tls_key=/path` present a client certificate
    /// (for servers started with `tls-auth-clients yes`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            client,
            reader: Default::default(),
            prefix: prefix.to_string(),
            commit: Script::new(COMMIT),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    fn coll_key(&self, collection: &str) -> String {
        format!("{}:c:{collection}", self.prefix)
    }
    fn lease_key(&self) -> String {
        format!("{}:lease", self.prefix)
    }
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    fn events_key(&self) -> String {
        format!("{}:events", self.prefix)
    }

    async fn reader(&self, block: Duration) -> Result<MultiplexedConnection> {
        let mut guard = self.reader.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(30)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    fn events_from(reply: StreamRangeReply) -> Vec<StoredEvent> {
        reply
            .ids
            .into_iter()
            .map(|id| {
                let body = match id.map.get("e") {
                    Some(Value::BulkString(b)) => Bytes::from(b.clone()),
                    _ => Bytes::new(),
                };
                StoredEvent { id: id.id, body }
            })
            .collect()
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Bytes>> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c
            .hget(self.coll_key(collection), key)
            .await
            .map_err(unavailable)?;
        Ok(v.map(Bytes::from))
    }

    async fn get_all(&self, collection: &str) -> Result<Vec<(String, Bytes)>> {
        let mut c = self.conn.clone();
        let v: Vec<(String, Vec<u8>)> = c
            .hgetall(self.coll_key(collection))
            .await
            .map_err(unavailable)?;
        Ok(v.into_iter().map(|(k, b)| (k, Bytes::from(b))).collect())
    }

    async fn keys(&self, collection: &str) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        c.hkeys(self.coll_key(collection))
            .await
            .map_err(unavailable)
    }

    async fn commit(&self, lease: &Lease, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut inv = self.commit.key(self.lease_key());
        inv.key(self.events_key());
        inv.arg(lease.token());
        for op in &batch.ops {
            match op {
                Op::Put {
                    collection,
                    key,
                    value,
                } => {
                    inv.arg("P")
                        .arg(self.coll_key(collection))
                        .arg(key)
                        .arg(value.as_ref());
                }
                Op::Delete { collection, key } => {
                    inv.arg("D").arg(self.coll_key(collection)).arg(key);
                }
                Op::Drop { collection } => {
                    inv.arg("X").arg(self.coll_key(collection));
                }
                Op::Event { body } => {
                    inv.arg("E").arg(EVENT_STREAM_MAX_LEN).arg(body.as_ref());
                }
            }
        }
        let mut c = self.conn.clone();
        match inv.invoke_async::<Value>(&mut c).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("FENCED") => Err(StoreError::Fenced),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn try_acquire(&self, candidate: &Candidate, ttl: Duration) -> Result<Option<Lease>> {
        let mut c = self.conn.clone();
        let tail = format!(
            "{}|{}|{}",
            candidate.scheduler_id, candidate.grpc_address, candidate.http_address
        );
        let token: Option<String> = self
            .acquire
            .key(self.lease_key())
            .key(self.epoch_key())
            .arg(tail)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match token {
            None => Ok(None),
            Some(t) => LeaderRecord::from_token(&t)
                .map(|record| Some(Lease { record }))
                .ok_or_else(|| StoreError::Corrupt(format!("lease value {t}"))),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = self
            .renew
            .key(self.lease_key())
            .arg(lease.token())
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.lease_key())
            .arg(lease.token())
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderRecord>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.lease_key()).await.map_err(unavailable)?;
        Ok(v.as_deref().and_then(LeaderRecord::from_token))
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
        let mut c = self.reader(block).await?;
        let opts = StreamReadOptions::default()
            .count(max)
            .block(block.as_millis().max(1) as usize);
        let reply: Option<StreamReadReply> =
            match c.xread_options(&[self.events_key()], &[after], &opts).await {
                Ok(r) => r,
                Err(e) => {
                    // Drop the reader so the next call reconnects.
                    *self.reader.lock().await = None;
                    return Err(unavailable(e));
                }
            };
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| Self::events_from(StreamRangeReply { ids: k.ids }))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn last_event_id(&self) -> Result<String> {
        let mut c = self.conn.clone();
        let r: StreamRangeReply = c
            .xrevrange_count(self.events_key(), "+", "-", 1)
            .await
            .map_err(unavailable)?;
        Ok(r.ids
            .first()
            .map_or_else(|| "0".to_string(), |i| i.id.clone()))
    }

    async fn first_event_id(&self) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        let r: StreamRangeReply = c
            .xrange_count(self.events_key(), "-", "+", 1)
            .await
            .map_err(unavailable)?;
        Ok(r.ids.first().map(|i| i.id.clone()))
    }

    async fn put_unfenced(&self, collection: &str, key: &str, value: Bytes) -> Result<()> {
        let mut c = self.conn.clone();
        c.hset::<_, _, _, ()>(self.coll_key(collection), key, value.as_ref())
            .await
            .map_err(unavailable)
    }

    async fn delete_unfenced(&self, collection: &str, key: &str) -> Result<()> {
        let mut c = self.conn.clone();
        c.hdel::<_, _, ()>(self.coll_key(collection), key)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_off_the_url() {
        let (clean, tls) = split_tls_params(
            "rediss://app:pw@redis:6380/0?tls_ca=/etc/ca.pem&protocol=resp3&tls_cert=/c&tls_key=/k#insecure",
        );
        assert_eq!(
            clean,
            "rediss://app:pw@redis:6380/0?protocol=resp3#insecure"
        );
        assert_eq!(
            tls,
            vec![
                ("tls_ca", "/etc/ca.pem".to_string()),
                ("tls_cert", "/c".to_string()),
                ("tls_key", "/k".to_string())
            ]
        );
        let (clean, tls) = split_tls_params("redis://127.0.0.1:6379/");
        assert_eq!(clean, "redis://127.0.0.1:6379/");
        assert!(tls.is_empty());
        assert!(client("redis://h/?tls_ca=/x").is_err());
        assert!(client("rediss://h/?tls_cert=/x").is_err());
    }
}
