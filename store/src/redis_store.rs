//! The Redis implementation: collections are hashes, the lease is a key with a TTL whose value
//! carries the epoch, and events are a Redis stream (so readers resume from the last id they saw).
//! Leader writes run in one Lua script that checks the lease first, so a batch is applied whole
//! or, when fenced, not at all.
//!
//! ## One Redis, or a master found through Sentinel
//! A `redis://` (or `rediss://`) URL names one server; redis-rs's `ConnectionManager` reconnects
//! to it. A `redis+sentinel://` URL names sentinels and a master name ([`crate::sentinel`]):
//! commands go to the master they name, and when a command fails on its connection, or the node
//! answers `READONLY` or `MASTERDOWN` because a failover demoted it, the store asks the sentinels
//! again and repeats the command on the new master, until the URL's `failover_timeout`.
//!
//! ## Writes survive losing the master
//! Replication is asynchronous, so a write the master acknowledged can be gone after a failover.
//! With `wait_replicas=N` (1 by default with Sentinel) every write is followed, in the same
//! pipeline, by `WAIT N <wait_timeout>`, and is reported done only when N replicas have it; when
//! fewer acknowledge in time the caller gets [`StoreError::Unavailable`], never `Ok`. That covers
//! the epoch increment of an election and every renewal as well as commits, so a new master
//! cannot hand out an epoch an earlier leader acted under.
//!
//! A commit repeated after its answer was lost (a broken connection, too few replicas) must not
//! apply its events twice: each commit carries an id, the script records the last applied one
//! (`<prefix>:last-commit`), and the same batch committed again under the same lease reuses the
//! id, so a repeat that finds it applied only waits for the replicas.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Cmd, RedisError, RedisFuture, Script, Value};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::sentinel::{is_sentinel_url, SentinelLink, SentinelUrl};
use crate::{
    Batch, Candidate, Changed, Changes, LeaderRecord, Lease, Op, Result, StateStore, StoreError,
    StoredEvent, CHANGE_FEED_MAX_LEN, EVENT_STREAM_MAX_LEN,
};

const COMMIT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
if redis.call('GET', KEYS[3]) == ARGV[2] then
  return 'APPLIED'
end
local changed = {}
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'P' then
    redis.call('HSET', ARGV[i+1], ARGV[i+2], ARGV[i+3])
    changed[#changed+1] = 'K' .. #ARGV[i+1] .. ':' .. ARGV[i+1] .. #ARGV[i+2] .. ':' .. ARGV[i+2]
    i = i + 4
  elseif op == 'D' then
    redis.call('HDEL', ARGV[i+1], ARGV[i+2])
    changed[#changed+1] = 'K' .. #ARGV[i+1] .. ':' .. ARGV[i+1] .. #ARGV[i+2] .. ':' .. ARGV[i+2]
    i = i + 3
  elseif op == 'X' then
    redis.call('DEL', ARGV[i+1])
    changed[#changed+1] = 'X' .. #ARGV[i+1] .. ':' .. ARGV[i+1]
    i = i + 2
  elseif op == 'E' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[i+1], '*', 'e', ARGV[i+2]); i = i + 3
  else
    return redis.error_reply('bad op ' .. tostring(op))
  end
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'c', ARGV[2], 'k', table.concat(changed))
redis.call('SET', KEYS[3], ARGV[2])
return 'OK'
"#;

/// Which of `ops` a later op of the same batch makes pointless: a put or delete of a key the
/// batch puts or deletes again later, or of a collection it drops later. A commit applies as a
/// whole, so nobody could read what they wrote, and the later op still names the key (or the
/// collection) in the change feed. An instance scheduled and launched in one pass is written
/// once, not twice.
fn superseded(ops: &[Op]) -> Vec<bool> {
    let mut later_keys: HashSet<(&str, &str)> = HashSet::new();
    let mut later_drops: HashSet<&str> = HashSet::new();
    let mut out = vec![false; ops.len()];
    for (n, op) in ops.iter().enumerate().rev() {
        match op {
            Op::Put {
                collection, key, ..
            }
            | Op::Delete { collection, key } => {
                let again = !later_keys.insert((collection, key));
                out[n] = again || later_drops.contains(collection.as_str());
            }
            Op::Drop { collection } => {
                later_drops.insert(collection);
            }
            Op::Event { .. } => {}
        }
    }
    out
}

/// The change feed after a revision: the last commit id, then what each later commit changed,
/// newest first; nil when the feed does not reach back to the revision, when its newest entry
/// is not the last commit's (a commit that wrote no entry), or when the entries to send would
/// pass `ARGV[2]` bytes (reading everything again is then the cheaper way).
const CHANGES: &str = r#"
local last = redis.call('GET', KEYS[2]) or ''
if last == ARGV[1] then return {last} end
local out = {last}
local size = 0
local most = tonumber(ARGV[2])
local top = '+'
while true do
  local page = redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', 128)
  if #page == 0 then return false end
  for _, e in ipairs(page) do
    local f = e[2]
    if #out == 1 and f[2] ~= last then return false end
    if f[2] == ARGV[1] then return out end
    size = size + #f[4]
    if size > most then return false end
    out[#out+1] = f[4]
  end
  top = '(' .. page[#page][1]
end
"#;

/// The most bytes of change feed entries one [`StateStore::changes_since`] reads: keys of about
/// 200,000 changes, beyond which a reader is better off reading everything again.
const CHANGES_MAX_BYTES: usize = 16 << 20;

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

/// A Lua script run with `EVALSHA`, loaded when the server does not know it (a fresh master).
struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    fn new(body: &'static str) -> Self {
        Self {
            body,
            sha: Script::new(body).get_hash().to_string(),
        }
    }

    fn cmd(&self, keys: &[String]) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.sha).arg(keys.len()).arg(keys);
        c
    }
}

struct Scripts {
    commit: Lua,
    changes: Lua,
    acquire: Lua,
    renew: Lua,
    release: Lua,
}

/// A Redis-backed store. Cheap to clone: connections are shared.
#[derive(Clone)]
pub struct RedisStore {
    /// Where commands go: one server, or the master Sentinel names.
    link: Link,
    /// Blocking stream reads need a connection of their own, or they would stall every other
    /// command behind them.
    reader: Arc<Mutex<Option<Reader>>>,
    prefix: String,
    options: Options,
    scripts: Arc<Scripts>,
    commits: Arc<CommitIds>,
}

#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per store: its size does not matter
enum Link {
    /// Commands pipelined over one auto-reconnecting connection to the URL's server.
    Direct {
        conn: ConnectionManager,
        client: redis::Client,
    },
    Sentinel(Arc<SentinelLink>),
}

/// The event reader's connection, and the master generation it was opened to (0 for a
/// direct link), so that it is replaced when the master is.
struct Reader {
    conn: MultiplexedConnection,
    generation: u64,
}

/// A connection of either link, to run commands and pipelines on.
#[derive(Clone)]
enum Conn {
    Direct(ConnectionManager),
    Master(MultiplexedConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Master(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Master(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(c) => c.get_db(),
            Conn::Master(c) => c.get_db(),
        }
    }
}

/// Names commits, so that one sent again after its answer was lost is applied once.
struct CommitIds {
    /// Unique to this store: commit ids of other processes never collide with ours.
    nonce: String,
    seq: AtomicU64,
    /// The last commit whose outcome is unknown: lease token, batch, id.
    unsettled: parking_lot::Mutex<Option<(String, Batch, String)>>,
}

impl CommitIds {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            nonce: format!("{:x}-{nanos:x}", std::process::id()),
            seq: AtomicU64::new(0),
            unsettled: parking_lot::Mutex::new(None),
        }
    }

    /// The id of the unsettled commit when this is that commit again, a new one otherwise.
    fn id_for(&self, token: &str, batch: &Batch) -> String {
        let mut unsettled = self.unsettled.lock();
        if let Some((t, b, id)) = unsettled.take() {
            if t == token && &b == batch {
                return id;
            }
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.nonce)
    }

    fn unsettled(&self, token: String, batch: Batch, id: String) {
        *self.unsettled.lock() = Some((token, batch, id));
    }
}

/// Stride's parameters in a Redis URL, taken off before the URL goes to the redis crate.
const STORE_PARAMS: [&str; 3] = ["wait_replicas", "wait_timeout", "failover_timeout"];

/// What the store's parameters of the URL ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    /// Replicas that must have a write (`WAIT`) before the store reports it done.
    wait_replicas: u32,
    /// How long one `WAIT` waits for them.
    wait_timeout: Duration,
    /// How long one call keeps looking for a master after a failure (Sentinel URLs).
    failover_timeout: Duration,
}

impl Options {
    fn parse(params: &[(&'static str, String)], sentinel: bool) -> Result<Self> {
        let mut o = Self {
            wait_replicas: u32::from(sentinel),
            wait_timeout: Duration::from_secs(1),
            failover_timeout: Duration::from_secs(10),
        };
        for (key, value) in params {
            let bad = |why: &str| StoreError::Unavailable(format!("{key}={value}: {why}"));
            match *key {
                "wait_replicas" => {
                    o.wait_replicas = value.parse().map_err(|_| bad("not a count"))?
                }
                "wait_timeout" => {
                    o.wait_timeout = parse_duration(value)
                        .ok_or_else(|| bad("not a duration such as 500ms or 2s"))?
                }
                "failover_timeout" => {
                    o.failover_timeout = parse_duration(value)
                        .ok_or_else(|| bad("not a duration such as 500ms or 2s"))?
                }
                _ => {}
            }
        }
        if o.wait_replicas > 0 && o.wait_timeout.is_zero() {
            // `WAIT n 0` blocks for ever.
            return Err(StoreError::Unavailable(
                "wait_timeout must be more than 0 when wait_replicas is set".into(),
            ));
        }
        Ok(o)
    }
}

/// `250ms`, `2s`, `1m`, or a bare number of milliseconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

/// How a call failed, in the terms that decide whether to send it again.
#[derive(Debug)]
enum CallError {
    /// The connection failed: the command may or may not have run.
    Transport(RedisError),
    /// The server refused the command, so it did not run.
    Refused {
        code: String,
        message: String,
    },
    Fenced,
    /// It ran, but fewer replicas than required acknowledged it in time; `reply` is its answer.
    NotReplicated {
        acked: i64,
        wanted: u32,
        timeout: Duration,
        reply: Value,
    },
    Other(String),
}

impl From<RedisError> for CallError {
    fn from(e: RedisError) -> Self {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return CallError::Transport(e);
        }
        match e.code() {
            Some(code) => CallError::Refused {
                code: code.to_string(),
                message: e.to_string(),
            },
            None => CallError::Other(e.to_string()),
        }
    }
}

impl From<CallError> for StoreError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Fenced => StoreError::Fenced,
            CallError::Transport(e) => StoreError::Unavailable(e.to_string()),
            CallError::Refused { message, .. } => StoreError::Unavailable(message),
            CallError::NotReplicated {
                acked,
                wanted,
                timeout,
                ..
            } => StoreError::Unavailable(format!(
                "the write reached {acked} of the {wanted} replicas required within {timeout:?}; \
                 it is not acknowledged"
            )),
            CallError::Other(e) => StoreError::Unavailable(e),
        }
    }
}

/// Error codes of a node that is not (or no longer) the master: find the master again.
const NOT_MASTER: [&str; 3] = ["READONLY", "MASTERDOWN", "LOADING"];
/// Error codes of a master that may take the command a moment later.
const BUSY: [&str; 2] = ["NOREPLICAS", "TRYAGAIN"];

/// Whether a call may be sent again after its connection failed under it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Running it twice is the same as once (reads, `HSET`, renewals, deduplicated commits).
    Safe,
    /// Running it twice is not (an election): report the failure instead.
    Once,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Query parameters of a Redis URL that are Stride's, not the redis crate's: TLS files.
const TLS_PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

/// The URL without Stride's TLS parameters, and their values by name.
fn split_tls_params(url: &str) -> (String, Vec<(&'static str, String)>) {
    take_params(url, &TLS_PARAMS)
}

/// The URL without the query parameters `names`, and their values by name.
fn take_params(url: &str, names: &[&'static str]) -> (String, Vec<(&'static str, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let (fragment_free, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in fragment_free.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match names.iter().find(|k| **k == key) {
            Some(k) => taken.push((*k, value.to_string())),
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
    (clean, taken)
}

/// A client for `url`, with the CA and client certificate its TLS parameters name.
pub(crate) fn client(url: &str) -> Result<redis::Client> {
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
    /// Connects to `url`; every key starts with `prefix:`.
    ///
    /// - `redis://[user:password@]host:port/db`, or `rediss://` for TLS: one server.
    ///   `user:password` authenticates as that ACL user (`AUTH user password`); a password
    ///   alone (`redis://:password@host`) is `requirepass`'s. With `rediss://` the server's
    ///   certificate is checked against the system's roots, or against the PEM CA named by the
    ///   query parameter `tls_ca=/path`; `tls_cert=/path&tls_key=/path` present a client
    ///   certificate (for servers started with `tls-auth-clients yes`).
    /// - `redis+sentinel://[user:password@]host:port[,host:port…]/<master-name>[?db=N]`, or
    ///   `rediss+sentinel://`: the master the sentinels monitor under that name, found again
    ///   after every failover. The credentials are the Redis nodes'; `sentinel_user=` and
    ///   `sentinel_password=` are the sentinels' own, when they have any.
    ///
    /// Either form takes `wait_replicas=N` (default 1 with Sentinel, 0 otherwise) and
    /// `wait_timeout=1s`: a write is reported done only once N replicas acknowledged it within
    /// the timeout. Sentinel URLs take `failover_timeout=10s`, how long one call keeps looking
    /// for a master before it reports the store unavailable.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let (url, params) = take_params(url, &STORE_PARAMS);
        let sentinel = is_sentinel_url(&url);
        let options = Options::parse(&params, sentinel)?;
        let link = if sentinel {
            let link =
                SentinelLink::new(SentinelUrl::parse(&url).map_err(StoreError::Unavailable)?);
            // Fail now, as a direct connection does, rather than at the first command.
            link.master(Instant::now() + options.failover_timeout)
                .await
                .map_err(StoreError::Unavailable)?;
            Link::Sentinel(Arc::new(link))
        } else {
            let client = client(&url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(10) + options.wait_timeout))
                .set_number_of_retries(2);
            let conn = ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map_err(unavailable)?;
            Link::Direct { conn, client }
        };
        Ok(Self {
            link,
            reader: Default::default(),
            prefix: prefix.to_string(),
            options,
            scripts: Arc::new(Scripts {
                commit: Lua::new(COMMIT),
                changes: Lua::new(CHANGES),
                acquire: Lua::new(ACQUIRE),
                renew: Lua::new(RENEW),
                release: Lua::new(RELEASE),
            }),
            commits: Arc::new(CommitIds::new()),
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
    fn last_commit_key(&self) -> String {
        format!("{}:last-commit", self.prefix)
    }
    fn changes_key(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// Runs `op` on a connection. Through Sentinel, a failure that shows the master gone
    /// forgets it and runs `op` again on the one the sentinels name next (only if it did not
    /// run, unless `replay` is [`Replay::Safe`]), until the failover timeout.
    async fn call<T, F, Fut>(&self, replay: Replay, mut op: F) -> Result<T, CallError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let link = match &self.link {
            Link::Direct { conn, .. } => return op(Conn::Direct(conn.clone())).await,
            Link::Sentinel(link) => link,
        };
        let deadline = Instant::now() + self.options.failover_timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let master = link.master(deadline).await.map_err(CallError::Other)?;
            let err = match op(Conn::Master(master.conn.clone())).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let again = match &err {
                CallError::Transport(_) => {
                    link.forget(master.generation).await;
                    replay == Replay::Safe
                }
                CallError::Refused { code, .. } if NOT_MASTER.contains(&code.as_str()) => {
                    link.forget(master.generation).await;
                    true
                }
                CallError::Refused { code, .. } => BUSY.contains(&code.as_str()),
                CallError::NotReplicated { .. } => replay == Replay::Safe,
                CallError::Fenced | CallError::Other(_) => false,
            };
            if !again || Instant::now() + delay >= deadline {
                return Err(err);
            }
            debug!(master = %master.addr, error = ?err, "Redis call failed; trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends `cmd`, then (when `wait` and replicas are required) `WAIT` in the same pipeline,
    /// so both go over one connection; loads `lua` once if the server does not know it.
    async fn write(
        &self,
        conn: &mut Conn,
        cmd: &Cmd,
        lua: Option<&Lua>,
        wait: bool,
    ) -> Result<Value, CallError> {
        let wanted = if wait { self.options.wait_replicas } else { 0 };
        let mut loaded = false;
        loop {
            let mut p = redis::pipe();
            p.ignore_errors().add_command(cmd.clone());
            if wanted > 0 {
                p.cmd("WAIT")
                    .arg(wanted)
                    .arg(self.options.wait_timeout.as_millis() as u64);
            }
            let reply: Value = p.query_async(conn).await?;
            let mut replies = match reply {
                Value::Array(r) if !r.is_empty() => r.into_iter(),
                other => return Err(CallError::Other(format!("unexpected reply {other:?}"))),
            };
            let first = replies.next().unwrap_or(Value::Nil);
            if let Value::ServerError(e) = &first {
                // Redis 7 reports a script's `error_reply('FENCED')` as `ERR FENCED`.
                let fenced = e.code() == "FENCED"
                    || e.details()
                        .is_some_and(|d| d.split_whitespace().next() == Some("FENCED"));
                if fenced {
                    return Err(CallError::Fenced);
                }
                match (e.code(), lua) {
                    ("NOSCRIPT", Some(lua)) if !loaded => {
                        let _: String = redis::cmd("SCRIPT")
                            .arg("LOAD")
                            .arg(lua.body)
                            .query_async(conn)
                            .await?;
                        loaded = true;
                        continue;
                    }
                    (code, _) => {
                        return Err(CallError::Refused {
                            code: code.to_string(),
                            message: format!("{code} {}", e.details().unwrap_or_default()),
                        })
                    }
                }
            }
            if wanted > 0 {
                match replies.next() {
                    Some(Value::Int(n)) if n >= i64::from(wanted) => {}
                    Some(Value::Int(n)) => {
                        return Err(CallError::NotReplicated {
                            acked: n,
                            wanted,
                            timeout: self.options.wait_timeout,
                            reply: first,
                        })
                    }
                    other => {
                        return Err(CallError::Other(format!("unexpected WAIT reply {other:?}")))
                    }
                }
            }
            return Ok(first);
        }
    }

    /// The event reader's connection: to the server, or to the current master.
    async fn reader(&self, block: Duration) -> Result<(MultiplexedConnection, u64)> {
        let mut guard = self.reader.lock().await;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(30)));
        match &self.link {
            Link::Direct { client, .. } => {
                if let Some(r) = guard.as_ref() {
                    return Ok((r.conn.clone(), 0));
                }
                let conn = client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map_err(unavailable)?;
                *guard = Some(Reader {
                    conn: conn.clone(),
                    generation: 0,
                });
                Ok((conn, 0))
            }
            Link::Sentinel(link) => {
                let current = link.current_generation();
                if let Some(r) = guard.as_ref().filter(|r| r.generation == current) {
                    return Ok((r.conn.clone(), r.generation));
                }
                let master = link
                    .master(Instant::now() + self.options.failover_timeout)
                    .await
                    .map_err(StoreError::Unavailable)?;
                let conn = master
                    .client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map_err(unavailable)?;
                *guard = Some(Reader {
                    conn: conn.clone(),
                    generation: master.generation,
                });
                Ok((conn, master.generation))
            }
        }
    }

    /// Decodes one change feed entry: `K<n>:<collection key><n>:<key>` for a key,
    /// `X<n>:<collection key>` for a dropped collection, one after another.
    fn changed_of(&self, blob: &[u8]) -> Result<Vec<Changed>> {
        let corrupt = || StoreError::Corrupt("change feed entry does not decode".into());
        let coll_prefix = self.coll_key("");
        let mut rest = blob;
        let take = |rest: &mut &[u8]| -> Result<String> {
            let colon = rest.iter().position(|b| *b == b':').ok_or_else(corrupt)?;
            let len: usize = std::str::from_utf8(&rest[..colon])
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(corrupt)?;
            let end = colon + 1 + len;
            let s = rest.get(colon + 1..end).ok_or_else(corrupt)?;
            let s = String::from_utf8(s.to_vec()).map_err(|_| corrupt())?;
            *rest = &rest[end..];
            Ok(s)
        };
        let mut out = Vec::new();
        while let Some((op, tail)) = rest.split_first() {
            rest = tail;
            let coll = take(&mut rest)?;
            let collection = coll
                .strip_prefix(&coll_prefix)
                .ok_or_else(corrupt)?
                .to_string();
            match op {
                b'K' => out.push(Changed::Key {
                    collection,
                    key: take(&mut rest)?,
                }),
                b'X' => out.push(Changed::Collection { collection }),
                _ => return Err(corrupt()),
            }
        }
        Ok(out)
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

/// A script's string answer (a lease token).
fn token_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Bytes>> {
        let k = self.coll_key(collection);
        let v: Option<Vec<u8>> = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.hget(k, key).await?) }
            })
            .await?;
        Ok(v.map(Bytes::from))
    }

    async fn get_all(&self, collection: &str) -> Result<Vec<(String, Bytes)>> {
        let k = self.coll_key(collection);
        let v: Vec<(String, Vec<u8>)> = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.hgetall(k).await?) }
            })
            .await?;
        Ok(v.into_iter().map(|(k, b)| (k, Bytes::from(b))).collect())
    }

    async fn get_many(&self, collection: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.coll_key(collection)).arg(keys);
        let v: Vec<Option<Vec<u8>>> = self
            .call(Replay::Safe, |mut c| {
                let cmd = &cmd;
                async move { Ok(cmd.query_async(&mut c).await?) }
            })
            .await?;
        if v.len() != keys.len() {
            return Err(StoreError::Corrupt(format!(
                "HMGET of {} keys answered {} values",
                keys.len(),
                v.len()
            )));
        }
        Ok(v.into_iter().map(|b| b.map(Bytes::from)).collect())
    }

    async fn keys(&self, collection: &str) -> Result<Vec<String>> {
        let k = self.coll_key(collection);
        Ok(self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.hkeys(k).await?) }
            })
            .await?)
    }

    async fn commit(&self, lease: &Lease, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let token = lease.token();
        let id = self.commits.id_for(&token, &batch);
        let mut cmd = self.scripts.commit.cmd(&[
            self.lease_key(),
            self.events_key(),
            self.last_commit_key(),
            self.changes_key(),
        ]);
        cmd.arg(&token).arg(&id).arg(CHANGE_FEED_MAX_LEN);
        let superseded = superseded(&batch.ops);
        for (op, _) in batch.ops.iter().zip(superseded).filter(|(_, s)| !s) {
            match op {
                Op::Put {
                    collection,
                    key,
                    value,
                } => {
                    cmd.arg("P")
                        .arg(self.coll_key(collection))
                        .arg(key)
                        .arg(value.as_ref());
                }
                Op::Delete { collection, key } => {
                    cmd.arg("D").arg(self.coll_key(collection)).arg(key);
                }
                Op::Drop { collection } => {
                    cmd.arg("X").arg(self.coll_key(collection));
                }
                Op::Event { body } => {
                    cmd.arg("E").arg(EVENT_STREAM_MAX_LEN).arg(body.as_ref());
                }
            }
        }
        let result = self
            .call(Replay::Safe, |mut c| {
                let cmd = &cmd;
                async move {
                    self.write(&mut c, cmd, Some(&self.scripts.commit), true)
                        .await
                }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(CallError::Fenced) => Err(StoreError::Fenced),
            Err(e) => {
                // It may have been applied: the same batch again must not apply twice.
                self.commits.unsettled(token, batch, id);
                Err(e.into())
            }
        }
    }

    async fn try_acquire(&self, candidate: &Candidate, ttl: Duration) -> Result<Option<Lease>> {
        let tail = format!(
            "{}|{}|{}",
            candidate.scheduler_id, candidate.grpc_address, candidate.http_address
        );
        let mut cmd = self
            .scripts
            .acquire
            .cmd(&[self.lease_key(), self.epoch_key()]);
        cmd.arg(tail).arg(ttl.as_millis() as u64);
        // Not repeated after a lost answer: a second election would find the lease taken
        // (by the first) and report it lost.
        let reply = self
            .call(Replay::Once, |mut c| {
                let cmd = &cmd;
                async move {
                    self.write(&mut c, cmd, Some(&self.scripts.acquire), true)
                        .await
                }
            })
            .await;
        let token = match reply {
            Ok(Value::Nil) => return Ok(None),
            Ok(v) => {
                token_of(&v).ok_or_else(|| StoreError::Corrupt(format!("lease reply {v:?}")))?
            }
            Err(CallError::NotReplicated { reply, .. }) if token_of(&reply).is_some() => {
                // Won, but the new epoch is on the master alone and could be handed out again
                // after a failover: give the term back rather than lead in it.
                let token = token_of(&reply).unwrap_or_default();
                let lost = StoreError::Unavailable(format!(
                    "elected, but fewer than {} replicas acknowledged the new epoch within {:?}; \
                     the lease was given back",
                    self.options.wait_replicas, self.options.wait_timeout
                ));
                if let Some(record) = LeaderRecord::from_token(&token) {
                    if let Err(e) = self.release(&Lease { record }).await {
                        warn!(error = %e, "could not give back an unreplicated lease; it expires");
                    }
                }
                return Err(lost);
            }
            Err(e) => return Err(e.into()),
        };
        LeaderRecord::from_token(&token)
            .map(|record| Some(Lease { record }))
            .ok_or_else(|| StoreError::Corrupt(format!("lease value {token}")))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut cmd = self.scripts.renew.cmd(&[self.lease_key()]);
        cmd.arg(lease.token()).arg(ttl.as_millis() as u64);
        // Replicated too: a renewal only the old master saw would let a new master expire the
        // lease while its holder still leads.
        let v = self
            .call(Replay::Safe, |mut c| {
                let cmd = &cmd;
                async move {
                    self.write(&mut c, cmd, Some(&self.scripts.renew), true)
                        .await
                }
            })
            .await?;
        Ok(matches!(v, Value::Int(1)))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut cmd = self.scripts.release.cmd(&[self.lease_key()]);
        cmd.arg(lease.token());
        // A release lost in a failover only leaves the lease to expire: no WAIT.
        self.call(Replay::Safe, |mut c| {
            let cmd = &cmd;
            async move {
                self.write(&mut c, cmd, Some(&self.scripts.release), false)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderRecord>> {
        let k = self.lease_key();
        let v: Option<String> = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.get(k).await?) }
            })
            .await?;
        Ok(v.as_deref().and_then(LeaderRecord::from_token))
    }

    async fn lease_remaining(&self) -> Result<Option<Duration>> {
        let k = self.lease_key();
        let ms: i64 = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.pttl(k).await?) }
            })
            .await?;
        // -2: no lease; -1: a lease without expiry, which the store never sets.
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
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
        let (mut c, generation) = self.reader(block).await?;
        let opts = StreamReadOptions::default()
            .count(max)
            .block(block.as_millis().max(1) as usize);
        let reply: Option<StreamReadReply> =
            match c.xread_options(&[self.events_key()], &[after], &opts).await {
                Ok(r) => r,
                Err(e) => {
                    // Drop the reader so the next call reconnects, to the master of the moment.
                    *self.reader.lock().await = None;
                    if let Link::Sentinel(link) = &self.link {
                        if matches!(CallError::from(e.clone()), CallError::Transport(_)) {
                            link.forget(generation).await;
                        }
                    }
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
        let k = self.events_key();
        let r: StreamRangeReply = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.xrevrange_count(k, "+", "-", 1).await?) }
            })
            .await?;
        Ok(r.ids
            .first()
            .map_or_else(|| "0".to_string(), |i| i.id.clone()))
    }

    async fn first_event_id(&self) -> Result<Option<String>> {
        let k = self.events_key();
        let r: StreamRangeReply = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.xrange_count(k, "-", "+", 1).await?) }
            })
            .await?;
        Ok(r.ids.first().map(|i| i.id.clone()))
    }

    async fn put_unfenced(&self, collection: &str, key: &str, value: Bytes) -> Result<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.coll_key(collection))
            .arg(key)
            .arg(value.as_ref());
        self.call(Replay::Safe, |mut c| {
            let cmd = &cmd;
            async move { self.write(&mut c, cmd, None, true).await }
        })
        .await?;
        Ok(())
    }

    async fn delete_unfenced(&self, collection: &str, key: &str) -> Result<()> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.coll_key(collection)).arg(key);
        self.call(Replay::Safe, |mut c| {
            let cmd = &cmd;
            async move { self.write(&mut c, cmd, None, true).await }
        })
        .await?;
        Ok(())
    }

    /// The id of the last commit applied: every commit writes its own, unique one.
    async fn revision(&self) -> Result<Option<String>> {
        let k = self.last_commit_key();
        let v: Option<String> = self
            .call(Replay::Safe, |mut c| {
                let k = &k;
                async move { Ok(c.get(k).await?) }
            })
            .await?;
        Ok(Some(v.unwrap_or_default()))
    }

    async fn changes_since(&self, revision: &str) -> Result<Option<Changes>> {
        let mut cmd = self
            .scripts
            .changes
            .cmd(&[self.changes_key(), self.last_commit_key()]);
        cmd.arg(revision).arg(CHANGES_MAX_BYTES);
        let reply = self
            .call(Replay::Safe, |mut c| {
                let cmd = &cmd;
                async move {
                    self.write(&mut c, cmd, Some(&self.scripts.changes), false)
                        .await
                }
            })
            .await?;
        let parts = match reply {
            Value::Nil => return Ok(None),
            Value::Array(parts) => parts,
            other => return Err(StoreError::Corrupt(format!("change feed reply {other:?}"))),
        };
        let mut parts = parts.into_iter();
        let revision =
            parts.next().as_ref().and_then(token_of).ok_or_else(|| {
                StoreError::Corrupt("change feed reply without a revision".into())
            })?;
        let entries: Vec<Value> = parts.collect();
        let mut changed = Vec::new();
        // Newest first as the feed is read backwards; oldest first for the caller.
        for entry in entries.iter().rev() {
            let Value::BulkString(blob) = entry else {
                return Err(StoreError::Corrupt(format!("change feed entry {entry:?}")));
            };
            changed.extend(self.changed_of(blob)?);
        }
        Ok(Some(Changes { revision, changed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_a_later_op_makes_pointless_are_left_out() {
        let mut b = Batch::new();
        b.put("c", "a", Bytes::from_static(b"1"))
            .event(Bytes::from_static(b"{}"))
            .put("c", "a", Bytes::from_static(b"2"))
            .delete("c", "b")
            .put("c", "b", Bytes::from_static(b"3"))
            .put("d", "a", Bytes::from_static(b"4"))
            .put("c", "z", Bytes::from_static(b"5"))
            .drop_collection("d")
            .put("d", "a", Bytes::from_static(b"6"))
            .delete("c", "z");
        assert_eq!(
            superseded(&b.ops),
            [true, false, false, true, false, true, true, false, false, false]
        );
    }

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

    #[test]
    fn store_parameters_default_by_url_kind() {
        let (clean, params) = take_params(
            "redis+sentinel://s1,s2/m?db=2&wait_timeout=250ms&failover_timeout=30s",
            &STORE_PARAMS,
        );
        assert_eq!(clean, "redis+sentinel://s1,s2/m?db=2");
        let o = Options::parse(&params, true).expect("valid");
        assert_eq!(
            o.wait_replicas, 1,
            "Sentinel waits for one replica unless told"
        );
        assert_eq!(o.wait_timeout, Duration::from_millis(250));
        assert_eq!(o.failover_timeout, Duration::from_secs(30));

        let (_, params) = take_params("redis://h:6379/", &STORE_PARAMS);
        assert_eq!(
            Options::parse(&params, false).expect("valid").wait_replicas,
            0
        );
        let (_, params) = take_params("redis://h/?wait_replicas=2&wait_timeout=2", &STORE_PARAMS);
        let o = Options::parse(&params, false).expect("valid");
        assert_eq!(
            (o.wait_replicas, o.wait_timeout),
            (2, Duration::from_millis(2))
        );

        for bad in [
            "redis://h/?wait_replicas=x",
            "redis://h/?wait_timeout=1h",
            "redis://h/?wait_replicas=1&wait_timeout=0",
        ] {
            let (_, params) = take_params(bad, &STORE_PARAMS);
            assert!(Options::parse(&params, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_repeated_commit_keeps_its_id() {
        let ids = CommitIds::new();
        let mut b = Batch::new();
        b.put("c", "k", Bytes::from_static(b"v"));
        let first = ids.id_for("t1", &b);
        ids.unsettled("t1".into(), b.clone(), first.clone());
        assert_eq!(ids.id_for("t1", &b), first, "the same batch again");
        ids.unsettled("t1".into(), b.clone(), first.clone());
        assert_ne!(ids.id_for("t2", &b), first, "another term");
        let mut other = Batch::new();
        other.put("c", "k", Bytes::from_static(b"w"));
        ids.unsettled("t1".into(), b.clone(), first.clone());
        assert_ne!(ids.id_for("t1", &other), first, "another batch");
        assert_ne!(
            ids.id_for("t1", &b),
            first,
            "settled once another commit was sent"
        );
    }
}
