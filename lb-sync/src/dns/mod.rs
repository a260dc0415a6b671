//! DNS for service discovery, Mesos-DNS compatible and health-aware.
//!
//! ```text
//!  snapshot ──► zone::records (pure) ──► Records ──┬─► wire::CompiledZone ──► server (UDP, TCP)
//!                                                  └─► update::Publisher ──► RFC 2136 + TSIG ──► BIND, …
//! ```
//!
//! The zone is rebuilt only when the records change, and each rebuild gets a higher SOA serial
//! (`max(previous + 1, unix time)`, so a restart does not go backwards).

pub mod fasthash;
pub mod names;
pub mod server;
pub mod update;
pub mod wire;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::DnsConfig;
use crate::snapshot::Snapshot;
use server::Shared;
use wire::{CompiledZone, ZoneParams};
use zone::{Records, ZoneOptions};

/// Sockets the DNS server answers on, bound before [`crate::run_with`] so that tests can bind
/// `127.0.0.1:0` and learn the port.
#[derive(Default)]
pub struct DnsListeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl DnsListeners {
    /// Binds UDP and TCP on every configured address.
    pub async fn bind(config: &DnsConfig) -> std::io::Result<Self> {
        let mut l = Self::default();
        if !config.enabled {
            return Ok(l);
        }
        for addr in &config.listen {
            let addr: SocketAddr = addr.parse().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("dns.listen {addr:?}: {e}"),
                )
            })?;
            l.udp.push(UdpSocket::bind(addr).await?);
            l.tcp.push(TcpListener::bind(addr).await?);
        }
        Ok(l)
    }
}

/// Turns snapshots into the served zone and the records to push.
pub struct Publisher {
    shared: Arc<Shared>,
    opts: ZoneOptions,
    ttl: u32,
    negative_ttl: u32,
    last: Option<Arc<Records>>,
    serial: u32,
    records_tx: watch::Sender<Option<Arc<Records>>>,
}

impl Publisher {
    pub fn new(config: &DnsConfig, shared: Arc<Shared>) -> Self {
        let ns_address = config
            .ns_address
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Self {
            shared,
            opts: ZoneOptions {
                domain: names::fqdn(&config.domain),
                framework: config.framework.clone(),
                ns_address,
            },
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            last: None,
            serial: 0,
            records_tx: watch::channel(None).0,
        }
    }

    /// The records as last published, for the RFC 2136 publisher.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Records>>> {
        self.records_tx.subscribe()
    }

    /// Publishes `snapshot`; returns whether the records changed.
    pub fn publish(&mut self, snapshot: &Snapshot) -> bool {
        let records = zone::records(snapshot, &self.opts);
        if self.last.as_deref() == Some(&records) {
            return false;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as u32;
        self.serial = self.serial.wrapping_add(1).max(now);
        let params = ZoneParams {
            apex: self.opts.domain.clone(),
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            serial: self.serial,
        };
        let compiled = CompiledZone::compile(&records, &params);
        metrics::gauge!(crate::metrics::DNS_RECORDS).set(compiled.record_count as f64);
        self.shared.zone.store(Some(Arc::new(compiled)));
        let records = Arc::new(records);
        self.last = Some(records.clone());
        self.records_tx.send_replace(Some(records));
        true
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }
}
