//! Running one check: a hand-written HTTP/1.1 GET over `tokio::net::TcpStream` (through rustls
//! for HTTPS, certificates not verified, as Marathon), a TCP connect, or a COMMAND check run by
//! the task's agent over its gRPC API (with the replica's client certificate when the cluster
//! uses mutual TLS). One new connection per check, as Marathon does.
//!
//! Verdicts follow reference §7.2: 200–399 is healthy; a 1xx is ignored with `ignoreHttp1xx`;
//! anything else, a timeout or a connection error is unhealthy, the cause being the status line
//! or the error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use stride_proto::tls::{grpc_url, MutualTls};
use stride_proto::v1::agent_api_client::AgentApiClient;
use stride_proto::v1::CommandCheckRequest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::http::{self, Progress, Response, ResponseReader};
use crate::targets::{HealthSpec, Probe, ReadinessSpec, Target};

/// What a health check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(String),
    /// No verdict (a 1xx with `ignoreHttp1xx`, or the agent could not run a command check).
    Ignored(String),
}

/// What a readiness check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// 0 when nothing answered.
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub error: String,
}

/// Runs checks; shared by every probe task of a replica.
pub struct Prober {
    tls: TlsConnector,
    /// Agent API clients by address (a channel multiplexes every command check to that agent).
    agents: Mutex<HashMap<String, AgentApiClient<Channel>>>,
    /// Host names resolved recently (IP literals skip this).
    dns: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
    /// Mutual TLS towards the agents' APIs, when the cluster uses it.
    agent_tls: Option<MutualTls>,
}

/// How long a resolved host name is reused (the JVM's default DNS cache, which Marathon had).
const DNS_TTL: Duration = Duration::from_secs(30);
/// After a complete response, how long to wait for the server's close, so it closes first.
const CLOSE_GRACE: Duration = Duration::from_millis(20);

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        Self::with_tls(None)
    }

    /// A prober that dials the agents' APIs (COMMAND checks) over mutual TLS when `agent_tls`
    /// is given. HTTPS checks of tasks are unaffected: they never verify certificates.
    pub fn with_tls(agent_tls: Option<MutualTls>) -> Self {
        Self {
            tls: TlsConnector::from(Arc::new(insecure_tls_config())),
            agents: Mutex::new(HashMap::new()),
            dns: Mutex::new(HashMap::new()),
            agent_tls,
        }
    }

    /// Runs one health check of `target`.
    pub async fn health(&self, target: &Target, spec: &HealthSpec) -> Verdict {
        match &spec.probe {
            Probe::Http {
                tls,
                path,
                ignore_1xx,
            } => {
                match self
                    .get(&target.host, target.port, path, *tls, spec.timeout)
                    .await
                {
                    Ok(r) if (200..400).contains(&r.status) => Verdict::Healthy,
                    Ok(r) if *ignore_1xx && (100..200).contains(&r.status) => {
                        Verdict::Ignored(r.status_line())
                    }
                    Ok(r) => Verdict::Unhealthy(r.status_line()),
                    Err(e) => Verdict::Unhealthy(e),
                }
            }
            Probe::Tcp => match self.connect(&target.host, target.port, spec.timeout).await {
                Ok(_) => Verdict::Healthy,
                Err(e) => Verdict::Unhealthy(e),
            },
            // Boxed, like TLS below: rare and large futures stay out of every check's state.
            Probe::Command { value } => match &target.agent_api {
                Some(api) => {
                    Box::pin(self.command(api, &target.task_id, value, spec.timeout)).await
                }
                None => Verdict::Ignored("the agent's API address is unknown".into()),
            },
        }
    }

    /// Runs one readiness check of `target`.
    pub async fn readiness(&self, target: &Target, spec: &ReadinessSpec) -> Readiness {
        match self
            .get(
                &target.host,
                target.port,
                &spec.path,
                spec.tls,
                spec.timeout,
            )
            .await
        {
            Ok(r) => Readiness {
                ready: spec.ready_codes.contains(&r.status),
                status: r.status,
                content_type: r.content_type,
                body: String::from_utf8_lossy(&r.body).into_owned(),
                error: String::new(),
            },
            Err(e) => Readiness {
                error: e,
                ..Readiness::default()
            },
        }
    }

    /// `GET http(s)://host:port/path` within `limit`.
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path: &str,
        tls: bool,
        limit: Duration,
    ) -> Result<Response, String> {
        let mut reader = ResponseReader::new();
        // One deadline over the whole check, so one timer; the reader stays out here, as a
        // status line already read is still an answer when time runs out.
        let outcome = timeout(limit, self.fetch(host, port, path, tls, &mut reader)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(Failure::Read(_))) | Err(_) if reader.status().is_some() => {}
            Ok(Err(Failure::Read(e) | Failure::Fatal(e))) => return Err(e),
            Err(_) => return Err(timed_out(limit)),
        }
        reader.finish().map_err(|e| e.to_string())
    }

    /// Connects, sends the request and reads the answer into `reader`, with no deadline of its
    /// own.
    async fn fetch(
        &self,
        host: &str,
        port: u16,
        path: &str,
        tls: bool,
        reader: &mut ResponseReader,
    ) -> Result<(), Failure> {
        let stream = self.open(host, port, true).await.map_err(Failure::Fatal)?;
        let request = http::request(host, port, path);
        if tls {
            Box::pin(self.tls_exchange(host, stream, &request, reader)).await
        } else {
            exchange(stream, &request, reader).await
        }
    }

    async fn tls_exchange(
        &self,
        host: &str,
        stream: TcpStream,
        request: &[u8],
        reader: &mut ResponseReader,
    ) -> Result<(), Failure> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Failure::Fatal(format!("invalid host name {host:?}: {e}")))?;
        let stream = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| Failure::Fatal(format!("TLS handshake failed: {e}")))?;
        exchange(stream, request, reader).await
    }

    /// A TCP connection within `limit`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<TcpStream, String> {
        timeout(limit, self.open(host, port, false))
            .await
            .map_err(|_| timed_out(limit))?
    }

    /// A TCP connection to the first of `host`'s addresses that accepts one; see [`dial`].
    async fn open(
        &self,
        host: &str,
        port: u16,
        request_follows: bool,
    ) -> Result<TcpStream, String> {
        let ips = self.resolve(host).await?;
        let mut last = String::from("no address");
        for ip in ips {
            match dial(SocketAddr::new(ip, port), request_follows).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{e} ({host}:{port})"),
            }
        }
        Err(last)
    }

    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some((ips, at)) = lock(&self.dns).get(host) {
            if at.elapsed() < DNS_TTL {
                return Ok(ips.clone());
            }
        }
        let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if found.is_empty() {
            return Err(format!("cannot resolve {host}"));
        }
        lock(&self.dns).insert(host.to_string(), (found.clone(), Instant::now()));
        Ok(found)
    }

    async fn command(&self, api: &str, task_id: &str, command: &str, limit: Duration) -> Verdict {
        let mut client = match self.agent(api) {
            Ok(c) => c,
            Err(e) => return Verdict::Ignored(e),
        };
        let mut request = tonic::Request::new(CommandCheckRequest {
            task_id: task_id.to_string(),
            command: command.to_string(),
            timeout_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX),
        });
        // The agent enforces the check's timeout; this only bounds a silent agent.
        let bound = limit + Duration::from_secs(5);
        request.set_timeout(bound);
        let answer = timeout(bound, client.run_command_check(request))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                if r.healthy {
                    Verdict::Healthy
                } else if r.output.trim().is_empty() {
                    Verdict::Unhealthy(format!("Command exited with status {}", r.exit_code))
                } else {
                    Verdict::Unhealthy(r.output.trim().to_string())
                }
            }
            // The agent could not say: no verdict rather than a failure of the task.
            Err(s) => Verdict::Ignored(format!(
                "agent {api} could not run the command check: {}",
                s.message()
            )),
        }
    }

    fn agent(&self, api: &str) -> Result<AgentApiClient<Channel>, String> {
        let mut agents = lock(&self.agents);
        if let Some(c) = agents.get(api) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(grpc_url(api, self.agent_tls.is_some()))
            .map_err(|e| format!("invalid agent API address {api:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(tls) = &self.agent_tls {
            endpoint = endpoint
                .tls_config(tls.client())
                .map_err(|e| format!("cannot set up TLS to agent {api}: {e}"))?;
        }
        let client = AgentApiClient::new(endpoint.connect_lazy());
        agents.insert(api.to_string(), client.clone());
        Ok(client)
    }
}

/// A new connection to `addr`. With `request_follows`, the ACK of the server's SYN-ACK waits
/// for the request and rides on it: one segment less for both ends. (The kernel goes back to
/// acknowledging at once when the handshake completes, so nothing later is delayed.)
async fn dial(addr: SocketAddr, request_follows: bool) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if request_follows {
        let _ = socket2::SockRef::from(&socket).set_tcp_quickack(false);
    }
    socket.connect(addr).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn timed_out(limit: Duration) -> String {
    format!("Timed out after {limit:?}")
}

/// Sockets whose close can skip the FIN handshake once the server has closed its side.
trait ServerClosed {
    /// Called at the server's end of stream: the server's socket is then waiting for our FIN
    /// (FIN_WAIT_2); a reset frees it at once, without a TIME_WAIT there, and saves two segments
    /// per check. The server already closed, so it sees nothing.
    fn server_closed(&self);

    /// Whether the server's FIN is known to have arrived without reading again: it usually comes
    /// with the response, and the readiness the runtime already has says so.
    fn closed_by_server(&self) -> bool;
}

impl ServerClosed for TcpStream {
    fn server_closed(&self) {
        let _ = self.set_zero_linger();
    }

    fn closed_by_server(&self) -> bool {
        matches!(
            self.ready(Interest::READABLE).now_or_never(),
            Some(Ok(r)) if r.is_read_closed()
        )
    }
}

impl ServerClosed for tokio_rustls::client::TlsStream<TcpStream> {
    fn server_closed(&self) {
        let _ = self.get_ref().0.set_zero_linger();
    }

    /// TLS records may still be buffered (a `close_notify`), so read on.
    fn closed_by_server(&self) -> bool {
        false
    }
}

/// Why an exchange stopped short.
enum Failure {
    /// Reading failed: what was read so far is the answer if it has a status line.
    Read(String),
    /// No answer.
    Fatal(String),
}

/// Writes the request and reads the answer into `reader` until it is complete or the server
/// closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin + ServerClosed>(
    mut stream: S,
    request: &[u8],
    reader: &mut ResponseReader,
) -> Result<(), Failure> {
    stream
        .write_all(request)
        .await
        .map_err(|e| Failure::Fatal(e.to_string()))?;
    loop {
        match stream.read_buf(reader.buffer()).await {
            Err(e) => return Err(Failure::Read(e.to_string())),
            Ok(0) => {
                stream.server_closed();
                return Ok(());
            }
            Ok(_) if reader.len() >= http::MAX_RESPONSE => return Ok(()),
            Ok(_) => match reader.parse() {
                Err(e) => return Err(Failure::Fatal(e.to_string())),
                Ok(Progress::More) => {}
                Ok(Progress::Done) => {
                    // Let the server close first (it was asked to), so no TIME_WAIT is left here.
                    if stream.closed_by_server() {
                        stream.server_closed();
                        return Ok(());
                    }
                    let mut rest = [0u8; 64];
                    if let Ok(Ok(0)) = timeout(CLOSE_GRACE, stream.read(&mut rest)).await {
                        stream.server_closed();
                    }
                    return Ok(());
                }
            },
        }
    }
}

/// Marathon does not verify the certificates of HTTPS health checks; neither does Stride.
fn insecure_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
        // The ring provider supports the default versions; this is unreachable in practice.
        Err(_) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    }
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
