//! Pushing the published records into another DNS server (BIND, Knot, PowerDNS) with RFC 2136
//! dynamic updates signed with TSIG (RFC 8945).
//!
//! Every changed RRset is replaced in one step ("delete RRset" then "add" each record, in one
//! UPDATE message, which the server applies atomically), batched, over TCP. Beside every name
//! it owns, lb-sync writes a TXT record `heritage=stride-lb-sync,owner=<owner_id>`: after a
//! restart or an outage it reads the zone back (AXFR, TSIG-signed) and diffs against what the
//! server really holds, deleting only names carrying its own TXT — records someone else wrote
//! are never touched. Where AXFR is refused, it falls back to what it remembers having pushed
//! and rewrites every wanted RRset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData as HData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::names::fqdn;
use super::zone::{RData, RType, Records};
use crate::config::UpdateConfig;

type Sets = BTreeMap<(String, RType), Vec<RData>>;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid dns.update configuration: {0}")]
    Config(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(SocketAddr, String),
    #[error("{server} answered {rcode}")]
    Rejected {
        server: SocketAddr,
        rcode: ResponseCode,
    },
    #[error("bad answer from {0}: {1}")]
    BadAnswer(SocketAddr, String),
}

impl PushError {
    /// A person must act (wrong key, policy): log as an error rather than a warning.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            PushError::Config(_)
                | PushError::Rejected {
                    rcode: ResponseCode::Refused
                        | ResponseCode::NotAuth
                        | ResponseCode::NotZone
                        | ResponseCode::BADSIG
                        | ResponseCode::BADKEY,
                    ..
                }
        )
    }
}

/// One RRset change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Replace {
        name: String,
        rtype: RType,
        data: Vec<RData>,
    },
    Delete {
        name: String,
        rtype: RType,
    },
}

impl Change {
    /// Records in the UPDATE message this change takes.
    fn weight(&self) -> usize {
        match self {
            Change::Replace { data, .. } => 1 + data.len(),
            Change::Delete { .. } => 1,
        }
    }
}

/// The changes that turn `current` into `desired`; with `force`, every desired RRset is
/// rewritten even where it seems unchanged.
pub fn diff(current: &Sets, desired: &Sets, force: bool) -> Vec<Change> {
    let mut out = Vec::new();
    for ((name, rtype), data) in desired {
        if force || current.get(&(name.clone(), *rtype)) != Some(data) {
            out.push(Change::Replace {
                name: name.clone(),
                rtype: *rtype,
                data: data.clone(),
            });
        }
    }
    for (name, rtype) in current.keys() {
        if !desired.contains_key(&(name.clone(), *rtype)) {
            out.push(Change::Delete {
                name: name.clone(),
                rtype: *rtype,
            });
        }
    }
    out
}

/// The RFC 2136 client and what it believes the server holds.
pub struct Pusher {
    server: SocketAddr,
    zone: Name,
    zone_text: String,
    signer: TSigner,
    owner_txt: String,
    /// Names never pushed: the server has its own apex and name servers.
    skip: BTreeSet<String>,
    ttl: u32,
    batch_records: usize,
    timeout: Duration,
    /// What the server holds of ours, as far as we know.
    pushed: Sets,
    /// Set at start and after any failure: read the zone back before the next diff.
    reconcile: bool,
}

impl Pusher {
    pub fn new(cfg: &UpdateConfig, domain: &str, ttl: u32) -> Result<Self, PushError> {
        let server: SocketAddr = cfg
            .server
            .parse()
            .map_err(|e| PushError::Config(format!("server {:?}: {e}", cfg.server)))?;
        let zone_text = fqdn(&cfg.zone);
        let zone = Name::from_ascii(&zone_text)
            .map_err(|e| PushError::Config(format!("zone {:?}: {e}", cfg.zone)))?;
        let algorithm = match cfg.key_algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => return Err(PushError::Config(format!("key_algorithm {other:?}"))),
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(cfg.key_secret.trim())
            .map_err(|e| PushError::Config(format!("key_secret is not base64: {e}")))?;
        let key_name = Name::from_ascii(fqdn(&cfg.key_name))
            .map_err(|e| PushError::Config(format!("key_name {:?}: {e}", cfg.key_name)))?;
        let signer = TSigner::new(key, algorithm, key_name, 300)
            .map_err(|e| PushError::Config(format!("TSIG: {e}")))?;
        let domain = fqdn(domain);
        Ok(Self {
            server,
            zone,
            zone_text,
            signer,
            owner_txt: format!("heritage=stride-lb-sync,owner={}", cfg.owner_id),
            skip: [format!("ns1.{domain}"), domain].into_iter().collect(),
            ttl,
            batch_records: cfg.batch_records.max(2),
            timeout: cfg.timeout,
            pushed: Sets::new(),
            reconcile: true,
        })
    }

    /// Asks for a read-back before the next sync.
    pub fn mark_for_reconcile(&mut self) {
        self.reconcile = true;
    }

    /// The RRsets to hold on the server: the records, plus an owner TXT at each name.
    pub fn desired(&self, records: &Records) -> Sets {
        let mut out = Sets::new();
        for ((name, rtype), data) in &records.sets {
            if self.skip.contains(name) || !in_zone(name, &self.zone_text) || data.is_empty() {
                continue;
            }
            out.insert((name.clone(), *rtype), data.clone());
            out.insert(
                (name.clone(), RType::Txt),
                vec![RData::Txt(self.owner_txt.clone())],
            );
        }
        out
    }

    /// Brings the server to `records`; returns the number of RRset changes sent.
    pub async fn sync(&mut self, records: &Records) -> Result<usize, PushError> {
        let desired = self.desired(records);
        let mut force = false;
        if self.reconcile {
            match self.read_back().await {
                Ok(actual) => self.pushed = actual,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the zone back (AXFR); rewriting every record");
                    force = true;
                }
            }
        }
        let changes = diff(&self.pushed, &desired, force);
        let total = changes.len();
        let mut batch: Vec<Change> = Vec::new();
        let mut weight = 0;
        for change in changes {
            if weight + change.weight() > self.batch_records && !batch.is_empty() {
                self.send_batch(std::mem::take(&mut batch)).await?;
                weight = 0;
            }
            weight += change.weight();
            batch.push(change);
        }
        if !batch.is_empty() {
            self.send_batch(batch).await?;
        }
        self.reconcile = false;
        Ok(total)
    }

    async fn send_batch(&mut self, batch: Vec<Change>) -> Result<(), PushError> {
        let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Update);
        msg.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        msg.add_zone(zone);
        for change in &batch {
            let (name, rtype) = match change {
                Change::Replace { name, rtype, .. } | Change::Delete { name, rtype } => {
                    (name, *rtype)
                }
            };
            let owner = Name::from_ascii(name)
                .map_err(|e| PushError::Config(format!("name {name:?}: {e}")))?;
            let mut delete = Record::update0(owner.clone(), 0, record_type(rtype));
            delete.dns_class = DNSClass::ANY;
            msg.add_update(delete.into_record_of_rdata());
            if let Change::Replace { data, .. } = change {
                for d in data {
                    let mut r = Record::from_rdata(owner.clone(), self.ttl, to_hickory(d)?);
                    r.dns_class = DNSClass::IN;
                    msg.add_update(r);
                }
            }
        }
        let reply = self.exchange(msg).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.reconcile = true;
                return Err(e);
            }
        };
        let [first] = reply.as_slice() else {
            self.reconcile = true;
            return Err(PushError::BadAnswer(self.server, "no single answer".into()));
        };
        if first.metadata.response_code != ResponseCode::NoError {
            self.reconcile = true;
            return Err(PushError::Rejected {
                server: self.server,
                rcode: first.metadata.response_code,
            });
        }
        for change in batch {
            match change {
                Change::Replace { name, rtype, data } => {
                    self.pushed.insert((name, rtype), data);
                }
                Change::Delete { name, rtype } => {
                    self.pushed.remove(&(name, rtype));
                }
            }
        }
        metrics::counter!(crate::metrics::DNS_UPDATES).increment(1);
        Ok(())
    }

    /// Our records on the server: every A/AAAA/SRV/TXT at names carrying our owner TXT.
    async fn read_back(&self) -> Result<Sets, PushError> {
        let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(self.zone.clone(), RecordType::AXFR));
        let replies = self.exchange(msg).await?;
        let mut all: Sets = Sets::new();
        for reply in &replies {
            if reply.metadata.response_code != ResponseCode::NoError {
                return Err(PushError::Rejected {
                    server: self.server,
                    rcode: reply.metadata.response_code,
                });
            }
            for r in &reply.answers {
                let name = r.name.to_ascii().to_ascii_lowercase();
                let Some(d) = from_hickory(&r.data) else {
                    continue;
                };
                let set = all.entry((name, d.rtype())).or_default();
                if !set.contains(&d) {
                    set.push(d);
                    set.sort();
                }
            }
        }
        let owned: BTreeSet<String> = all
            .iter()
            .filter(|((_, t), data)| {
                *t == RType::Txt && data.contains(&RData::Txt(self.owner_txt.clone()))
            })
            .map(|((n, _), _)| n.clone())
            .collect();
        all.retain(|(n, _), _| owned.contains(n));
        Ok(all)
    }

    /// Sends a signed message over TCP and reads the answers (several for AXFR, until the
    /// closing SOA), verifying their TSIG.
    async fn exchange(&self, mut msg: Message) -> Result<Vec<Message>, PushError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let axfr = msg
            .queries
            .first()
            .is_some_and(|q| q.query_type() == RecordType::AXFR);
        let mut verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| PushError::Config(format!("cannot sign: {e}")))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| PushError::Config(format!("cannot encode: {e}")))?;
        let server = self.server;
        let io = async move {
            let mut s = TcpStream::connect(server).await?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await?;
            let mut out = Vec::new();
            let mut soa_seen = 0;
            loop {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await?;
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut buf).await?;
                let parsed = Message::from_vec(&buf).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                let code = parsed.metadata.response_code;
                soa_seen += parsed
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .count();
                out.push((buf, parsed));
                if !axfr || code != ResponseCode::NoError || soa_seen >= 2 {
                    return Ok::<_, std::io::Error>(out);
                }
            }
        };
        let raw = tokio::time::timeout(self.timeout, io)
            .await
            .map_err(|_| PushError::Unreachable(server, "timed out".into()))?
            .map_err(|e| PushError::Unreachable(server, e.to_string()))?;
        let mut out = Vec::with_capacity(raw.len());
        for (buf, parsed) in raw {
            if parsed.metadata.response_code == ResponseCode::NoError {
                if let Some(v) = verifier.as_mut() {
                    v.verify(&buf)
                        .map_err(|e| PushError::BadAnswer(server, format!("TSIG: {e}")))?;
                }
            }
            out.push(parsed);
        }
        Ok(out)
    }
}

fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

fn rand_id() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

fn record_type(t: RType) -> RecordType {
    match t {
        RType::A => RecordType::A,
        RType::Aaaa => RecordType::AAAA,
        RType::Srv => RecordType::SRV,
        RType::Txt => RecordType::TXT,
    }
}

fn to_hickory(d: &RData) -> Result<HData, PushError> {
    Ok(match d {
        RData::A(v4) => HData::A(A(*v4)),
        RData::Aaaa(v6) => HData::AAAA(AAAA(*v6)),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => HData::SRV(SRV::new(
            *priority,
            *weight,
            *port,
            Name::from_ascii(&**target)
                .map_err(|e| PushError::Config(format!("target {target:?}: {e}")))?,
        )),
        RData::Txt(t) => HData::TXT(TXT::new(vec![t.clone()])),
    })
}

fn from_hickory(d: &HData) -> Option<RData> {
    Some(match d {
        HData::A(a) => RData::A(a.0),
        HData::AAAA(a) => RData::Aaaa(a.0),
        HData::SRV(s) => RData::Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: s.target.to_ascii().to_ascii_lowercase().into(),
        },
        HData::TXT(t) => RData::Txt(
            t.txt_data
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        ),
        _ => return None,
    })
}

/// Keeps the server in step with the published records until `stop`: a push after every
/// change, retries with backoff after failures (each followed by a read-back), and a full
/// reconciliation every `reconcile_interval`.
pub async fn run(
    cfg: UpdateConfig,
    mut pusher: Pusher,
    mut records: watch::Receiver<Option<Arc<Records>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut next_reconcile = tokio::time::Instant::now() + cfg.reconcile_interval;
    loop {
        let current = records.borrow_and_update().clone();
        if let Some(current) = current {
            match pusher.sync(&current).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(changes = n, "pushed DNS records");
                    }
                    backoff = Duration::from_millis(250);
                    retry_at = None;
                    metrics::gauge!(crate::metrics::DNS_UPDATE_HEALTHY).set(1.0);
                }
                Err(e) => {
                    if e.needs_operator() {
                        tracing::error!(error = %e, "DNS update refused; retrying");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?backoff, "DNS update failed; retrying");
                    }
                    metrics::counter!(crate::metrics::DNS_UPDATE_FAILURES).increment(1);
                    metrics::gauge!(crate::metrics::DNS_UPDATE_HEALTHY).set(0.0);
                    pusher.mark_for_reconcile();
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(cfg.retry_max);
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = records.changed() => if r.is_err() { return },
            _ = retry => {}
            _ = tokio::time::sleep_until(next_reconcile) => {
                next_reconcile = tokio::time::Instant::now() + cfg.reconcile_interval;
                pusher.mark_for_reconcile();
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: [u8; 4]) -> RData {
        RData::A(ip.into())
    }

    #[test]
    fn diff_replaces_changed_sets_and_deletes_gone_ones() {
        let mut current = Sets::new();
        current.insert(("a.mesos.".into(), RType::A), vec![a([10, 0, 0, 1])]);
        current.insert(("b.mesos.".into(), RType::A), vec![a([10, 0, 0, 2])]);
        current.insert(("c.mesos.".into(), RType::A), vec![a([10, 0, 0, 3])]);
        let mut desired = Sets::new();
        desired.insert(("a.mesos.".into(), RType::A), vec![a([10, 0, 0, 1])]);
        desired.insert(
            ("b.mesos.".into(), RType::A),
            vec![a([10, 0, 0, 2]), a([10, 0, 0, 9])],
        );
        let changes = diff(&current, &desired, false);
        assert_eq!(
            changes,
            vec![
                Change::Replace {
                    name: "b.mesos.".into(),
                    rtype: RType::A,
                    data: vec![a([10, 0, 0, 2]), a([10, 0, 0, 9])],
                },
                Change::Delete {
                    name: "c.mesos.".into(),
                    rtype: RType::A,
                },
            ]
        );
        assert_eq!(diff(&current, &desired, true).len(), 3);
    }

    #[test]
    fn desired_skips_the_apex_and_adds_owner_records() {
        let cfg = UpdateConfig {
            key_secret: "c2VjcmV0".into(),
            ..UpdateConfig::default()
        };
        let p = Pusher::new(&cfg, "mesos", 5).expect("pusher");
        let mut r = Records::default();
        r.sets.insert(
            ("web.marathon.mesos.".into(), RType::A),
            vec![a([1, 2, 3, 4])],
        );
        r.sets
            .insert(("ns1.mesos.".into(), RType::A), vec![a([127, 0, 0, 1])]);
        let d = p.desired(&r);
        assert_eq!(d.len(), 2);
        assert!(d.contains_key(&("web.marathon.mesos.".to_string(), RType::Txt)));
    }
}
