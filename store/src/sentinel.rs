//! Redis Sentinel: the `redis+sentinel://` URL, finding the master through the sentinels, and
//! the one connection to it that [`crate::RedisStore`] sends its commands over.
//!
//! ```text
//!  redis+sentinel://[user:pass@]s1:26379,s2:26379,s3:26379/<master-name>[?db=N&…]
//!
//!  SENTINEL MASTER <name> ──► every sentinel, at once ──► answers ranked by config-epoch
//!        │                                                        │
//!        └── none answers: retry until the deadline ◄─────────────┤
//!                                                                 ▼
//!               connect to the best address, AUTH/SELECT, ROLE must say "master"
//!                                                                 │
//!               kept until a command fails on the connection or answers READONLY/MASTERDOWN:
//!               then forgotten, and the next command asks the sentinels again
//! ```
//!
//! The newest `config-epoch` wins because a sentinel that missed a failover still names the old
//! master; `ROLE` is checked because an old master that restarts believes it is one until a
//! sentinel demotes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::redis_store::client;

/// The schemes of a Sentinel URL: plaintext, and TLS to the sentinels and the Redis nodes alike.
const SCHEMES: [(&str, bool); 2] = [("redis+sentinel://", false), ("rediss+sentinel://", true)];

/// The port sentinels listen on unless the URL says otherwise.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// How long one sentinel may take to connect and to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn is_sentinel_url(url: &str) -> bool {
    SCHEMES.iter().any(|(s, _)| url.starts_with(s))
}

/// A parsed `redis+sentinel://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// `rediss+sentinel://`: TLS to sentinels and nodes.
    pub tls: bool,
    /// `host:port` of each sentinel, in the URL's order.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// `user:password` (as written, percent-encoded) for the Redis nodes.
    pub userinfo: Option<String>,
    /// The database the nodes' connections select.
    pub db: i64,
    /// `user:password` for the sentinels (`sentinel_user`, `sentinel_password`), when they
    /// require one of their own.
    pub sentinel_userinfo: Option<String>,
    /// Query pairs that go to every connection unchanged (`tls_ca=…`, `protocol=resp3`).
    pub passthrough: Vec<String>,
}

impl SentinelUrl {
    /// Parses `redis+sentinel://[user:pass@]host[:port][,host[:port]…]/<master-name>[?query]`.
    /// The query may hold `db=N`, `sentinel_user=`, `sentinel_password=`, and anything a
    /// `redis://` URL takes; Stride's own parameters are taken off before.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls) = SCHEMES
            .iter()
            .find_map(|(s, tls)| url.strip_prefix(s).map(|r| (r, *tls)))
            .ok_or("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()).filter(|u| !u.is_empty()), h),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            sentinels.push(with_port(host)?);
        }
        if sentinels.is_empty() {
            return Err("a Sentinel URL names at least one sentinel (host:port)".into());
        }
        let master_name = path.trim_end_matches('/').to_string();
        if master_name.is_empty() || master_name.contains('/') {
            return Err(
                "a Sentinel URL ends with the monitored master's name: redis+sentinel://host:26379/mymaster"
                    .into(),
            );
        }
        let mut db = 0;
        let (mut s_user, mut s_pass) = (None, None);
        let mut passthrough = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "db" => {
                    db = value
                        .parse()
                        .map_err(|_| format!("db={value}: not a number"))?
                }
                "sentinel_user" => s_user = Some(value.to_string()),
                "sentinel_password" => s_pass = Some(value.to_string()),
                _ => passthrough.push(pair.to_string()),
            }
        }
        let sentinel_userinfo = match (s_user, s_pass) {
            (None, None) => None,
            (user, pass) => Some(format!(
                "{}:{}",
                user.unwrap_or_default(),
                pass.unwrap_or_default()
            )),
        };
        Ok(Self {
            tls,
            sentinels,
            master_name,
            userinfo,
            db,
            sentinel_userinfo,
            passthrough,
        })
    }

    fn url(&self, userinfo: Option<&str>, addr: &str, db: i64) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let mut url = format!("{scheme}://{auth}{addr}/{db}");
        if !self.passthrough.is_empty() {
            url.push('?');
            url.push_str(&self.passthrough.join("&"));
        }
        url
    }

    /// The URL of one sentinel (always database 0: sentinels have no other).
    pub fn sentinel_url(&self, addr: &str) -> String {
        self.url(self.sentinel_userinfo.as_deref(), addr, 0)
    }

    /// The URL of the Redis node at `addr`, with the credentials and database of the URL.
    pub fn node_url(&self, addr: &str) -> String {
        self.url(self.userinfo.as_deref(), addr, self.db)
    }
}

/// `host:port`, the sentinel default port added when there is none (`[v6]` kept as written).
fn with_port(host: &str) -> Result<String, String> {
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.ends_with(']')) => {
            p.parse::<u16>()
                .map_err(|_| format!("sentinel {host}: bad port {p}"))?;
            true
        }
        _ => false,
    };
    Ok(if has_port {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_SENTINEL_PORT}")
    })
}

/// The master's connection, as last found.
#[derive(Clone)]
pub(crate) struct Master {
    /// `host:port` the sentinels named.
    pub addr: String,
    /// For further connections to the same master (the blocking event reader's).
    pub client: redis::Client,
    pub conn: MultiplexedConnection,
    /// Distinguishes this connection from the ones before and after it, so that a failure
    /// seen on an old one does not throw away a newer one.
    pub generation: u64,
}

/// Finds the master through the sentinels and keeps one connection to it.
pub(crate) struct SentinelLink {
    url: SentinelUrl,
    /// The master in use; `None` after a failure until somebody needs it again. Held across
    /// discovery, so concurrent callers wait for one discovery instead of each starting theirs.
    current: Mutex<Option<Master>>,
    /// Generation of `current`, 0 when there is none: readable without the lock.
    current_generation: AtomicU64,
    next_generation: AtomicU64,
}

impl SentinelLink {
    pub fn new(url: SentinelUrl) -> Self {
        Self {
            url,
            current: Mutex::new(None),
            current_generation: AtomicU64::new(0),
            next_generation: AtomicU64::new(1),
        }
    }

    /// Generation of the master in use, 0 when it was forgotten.
    pub fn current_generation(&self) -> u64 {
        self.current_generation.load(Ordering::Acquire)
    }

    /// The master's connection: the one in use, or a new one found through the sentinels,
    /// retried with backoff until `deadline`.
    pub async fn master(&self, deadline: Instant) -> Result<Master, String> {
        let mut current = self.current.lock().await;
        if let Some(m) = current.as_ref() {
            return Ok(m.clone());
        }
        let mut delay = Duration::from_millis(20);
        loop {
            match self.discover().await {
                Ok((addr, client, conn)) => {
                    let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    info!(master = %addr, name = %self.url.master_name, "connected to the Redis master named by Sentinel");
                    let m = Master {
                        addr,
                        client,
                        conn,
                        generation,
                    };
                    *current = Some(m.clone());
                    self.current_generation.store(generation, Ordering::Release);
                    return Ok(m);
                }
                Err(e) => {
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    debug!(error = %e, "no Redis master yet; asking the sentinels again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// Drops the connection of `generation` (a failure was seen on it), unless a newer one
    /// has replaced it already.
    pub async fn forget(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            *current = None;
            self.current_generation.store(0, Ordering::Release);
        }
    }

    /// Asks every sentinel at once; tries the addresses they name, newest configuration
    /// first, until one is a master.
    async fn discover(&self) -> Result<(String, redis::Client, MultiplexedConnection), String> {
        let mut asks = JoinSet::new();
        for s in &self.url.sentinels {
            let url = self.url.sentinel_url(s);
            let name = self.url.master_name.clone();
            let s = s.clone();
            asks.spawn(async move {
                ask_sentinel(&url, &name)
                    .await
                    .map_err(|e| format!("sentinel {s}: {e}"))
            });
        }
        let mut named = Vec::new();
        let mut errors = Vec::new();
        while let Some(answer) = asks.join_next().await {
            match answer {
                Ok(Ok(a)) => named.push(a),
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        named.sort_by_key(|(epoch, _): &(u64, String)| std::cmp::Reverse(*epoch));
        let mut tried = Vec::new();
        for (_, addr) in named {
            if tried.contains(&addr) {
                continue;
            }
            match connect_master(&self.url.node_url(&addr)).await {
                Ok((client, conn)) => return Ok((addr, client, conn)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
            tried.push(addr);
        }
        Err(if errors.is_empty() {
            format!("no sentinel knows a master named {}", self.url.master_name)
        } else {
            format!(
                "no Redis master found for {}: {}",
                self.url.master_name,
                errors.join("; ")
            )
        })
    }
}

/// `SENTINEL MASTER <name>` on one sentinel: the master's `host:port` and the configuration
/// epoch it was learnt in.
async fn ask_sentinel(url: &str, name: &str) -> Result<(u64, String), String> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SENTINEL_TIMEOUT))
        .set_response_timeout(Some(SENTINEL_TIMEOUT));
    let mut conn = client(url)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let reply: Value = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(name)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let fields = fields(reply);
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let ip = get("ip").ok_or("no ip in SENTINEL MASTER")?;
    let port = get("port").ok_or("no port in SENTINEL MASTER")?;
    let epoch = get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let addr = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Ok((epoch, addr))
}

/// Connects to `url` and checks with `ROLE` that the node is a master.
async fn connect_master(url: &str) -> Result<(redis::Client, MultiplexedConnection), String> {
    let client = client(url).map_err(|e| e.to_string())?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let role: Value = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let role = match &role {
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    };
    match role.as_deref() {
        Some("master") => Ok((client, conn)),
        Some(other) => Err(format!("ROLE says {other}, not master")),
        None => Err("no answer to ROLE".into()),
    }
}

/// A reply of field/value pairs (a flat array in RESP2, a map in RESP3) as strings.
fn fields(reply: Value) -> Vec<(String, String)> {
    match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let u = SentinelUrl::parse(
            "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/stride?db=3&sentinel_password=sp&protocol=resp3",
        )
        .expect("parses");
        assert!(!u.tls);
        assert_eq!(
            u.sentinels,
            vec!["10.0.0.1:26379", "10.0.0.2:26379", "[::1]:26380"]
        );
        assert_eq!(u.master_name, "stride");
        assert_eq!(u.db, 3);
        assert_eq!(
            u.node_url("10.0.0.9:6379"),
            "redis://app:s%40cret@10.0.0.9:6379/3?protocol=resp3"
        );
        assert_eq!(
            u.sentinel_url("10.0.0.1:26379"),
            "redis://:sp@10.0.0.1:26379/0?protocol=resp3"
        );

        let u = SentinelUrl::parse("rediss+sentinel://s1/m/?tls_ca=/ca.pem").expect("parses");
        assert!(u.tls);
        assert_eq!(u.sentinels, vec!["s1:26379"]);
        assert_eq!(u.node_url("h:1"), "rediss://h:1/0?tls_ca=/ca.pem");

        assert!(SentinelUrl::parse("redis+sentinel://s1:26379/").is_err());
        assert!(SentinelUrl::parse("redis+sentinel:///m").is_err());
        assert!(SentinelUrl::parse("redis+sentinel://s1:x/m").is_err());
        assert!(SentinelUrl::parse("redis+sentinel://s1/m?db=x").is_err());
        assert!(SentinelUrl::parse("redis://s1/m").is_err());
        assert!(is_sentinel_url("rediss+sentinel://s1/m"));
        assert!(!is_sentinel_url("redis://s1/"));
    }

    #[test]
    fn sentinel_master_replies_are_read_as_fields() {
        let flat = Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"stride".to_vec()),
            Value::BulkString(b"ip".to_vec()),
            Value::BulkString(b"127.0.0.1".to_vec()),
        ]);
        assert_eq!(
            fields(flat),
            vec![
                ("name".to_string(), "stride".to_string()),
                ("ip".to_string(), "127.0.0.1".to_string())
            ]
        );
        let map = Value::Map(vec![(Value::SimpleString("port".into()), Value::Int(6379))]);
        assert_eq!(fields(map), vec![("port".to_string(), "6379".to_string())]);
    }
}
