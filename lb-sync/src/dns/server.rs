//! The DNS server: UDP and TCP listeners answering from the current [`CompiledZone`], and
//! forwarding names outside the domain to upstream resolvers when configured.
//!
//! The zone is swapped atomically ([`ArcSwapOption`]); a query reads whichever zone is current
//! when it arrives, never a half-built one. Every listener is one task with its own buffers, so
//! the hot path allocates nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::wire::{self, Action, AnswerOptions, CompiledZone, Transport};

/// What every listener shares.
pub struct Shared {
    pub zone: ArcSwapOption<CompiledZone>,
    /// The encoded apex, known before any zone is loaded.
    pub apex: Vec<u8>,
    pub forward: Vec<SocketAddr>,
    pub forward_timeout: Duration,
    pub options: AnswerOptions,
}

impl Shared {
    pub fn new(
        apex: &str,
        forward: Vec<SocketAddr>,
        forward_timeout: Duration,
        max_udp_payload: u16,
    ) -> Self {
        Self {
            zone: ArcSwapOption::empty(),
            apex: wire::apex_wire(apex),
            options: AnswerOptions {
                forwarding: !forward.is_empty(),
                max_udp_payload,
            },
            forward,
            forward_timeout,
        }
    }

    /// Answers one query into `out` (for the listeners, the benchmark and tests).
    pub fn answer(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Action {
        let zone = self.zone.load();
        wire::answer(
            zone.as_deref(),
            &self.apex,
            query,
            transport,
            self.options,
            out,
        )
    }
}

/// Serves UDP queries on `socket` until `stop` turns true.
pub async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    // Handles taken once: the per-query cost is an atomic add.
    let answered = metrics::counter!(crate::metrics::DNS_QUERIES, "transport" => "udp");
    let forwarded = metrics::counter!(crate::metrics::DNS_FORWARDED);
    loop {
        let (len, peer) = tokio::select! {
            biased;
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep going.
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let query = &buf[..len];
        match shared.answer(query, Transport::Udp, &mut out) {
            Action::Respond => {
                answered.increment(1);
                let _ = socket.send_to(&out, peer).await;
            }
            Action::Forward => {
                forwarded.increment(1);
                let query = query.to_vec();
                let socket = socket.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut reply = forward_udp(&shared, &query).await;
                    if reply.is_empty() {
                        wire::servfail(&query, &mut reply);
                    }
                    if !reply.is_empty() {
                        let _ = socket.send_to(&reply, peer).await;
                    }
                });
            }
            Action::Drop => {}
        }
    }
}

/// Serves DNS over TCP on `listener` until `stop` turns true.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_connection(stream, shared, stop).await;
        });
    }
}

/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

async fn serve_tcp_connection(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4096);
    let mut query = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        tokio::select! {
            r = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)) => match r {
                Ok(Ok(_)) => {}
                _ => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        }
        let len = u16::from_be_bytes(len) as usize;
        query.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let reply: &[u8] = match shared.answer(&query, Transport::Tcp, &mut out) {
            Action::Respond => {
                metrics::counter!(crate::metrics::DNS_QUERIES, "transport" => "tcp").increment(1);
                &out
            }
            Action::Forward => {
                metrics::counter!(crate::metrics::DNS_FORWARDED).increment(1);
                out = forward_tcp(&shared, &query).await;
                if out.is_empty() {
                    wire::servfail(&query, &mut out);
                }
                &out
            }
            Action::Drop => continue,
        };
        if reply.is_empty() {
            return Ok(());
        }
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(reply);
        stream.write_all(&framed).await?;
    }
}

/// A local address to send from towards `upstream`: loopback for loopback upstreams.
fn local_for(upstream: &SocketAddr) -> SocketAddr {
    match (upstream.ip().is_loopback(), upstream.ip()) {
        (true, IpAddr::V4(_)) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, IpAddr::V6(_)) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, IpAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, IpAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Asks each upstream in turn; the first answer wins. Empty when none answered.
async fn forward_udp(shared: &Shared, query: &[u8]) -> Vec<u8> {
    for upstream in &shared.forward {
        let Ok(sock) = UdpSocket::bind(local_for(upstream)).await else {
            continue;
        };
        if sock.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + shared.forward_timeout;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == *upstream && n >= 2 && buf[..2] == query[..2] => {
                    buf.truncate(n);
                    return buf;
                }
                Ok(Ok(_)) => continue,
                _ => break,
            }
        }
    }
    Vec::new()
}

async fn forward_tcp(shared: &Shared, query: &[u8]) -> Vec<u8> {
    for upstream in &shared.forward {
        let attempt = async {
            let mut s = TcpStream::connect(upstream).await?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
            framed.extend_from_slice(query);
            s.write_all(&framed).await?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(shared.forward_timeout, attempt).await {
            return reply;
        }
    }
    Vec::new()
}
