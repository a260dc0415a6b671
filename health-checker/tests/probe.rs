//! The probes against real sockets: HTTP verdicts, 1xx, timeouts, TCP, HTTPS with a
//! self-signed certificate, and COMMAND checks through a fake agent API.

use std::sync::Arc;
use std::time::Duration;

use stride_core::rendezvous::CheckSlot;
use stride_core::Timestamp;
use stride_health_checker::probe::{Prober, Verdict};
use stride_health_checker::targets::{HealthSpec, PortRef, Probe, ReadinessSpec, Spec, Target};
use stride_proto::v1::agent_api_server::{AgentApi, AgentApiServer};
use stride_proto::v1::{
    CommandCheckRequest, CommandCheckResponse, ListFilesRequest, ListFilesResponse,
    ReadFileRequest, ReadFileResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tonic::{Request, Response, Status};

/// Serves `answer` to every connection after `delay`, holds the connection open for `hold`,
/// then closes it.
async fn serve(answer: &'static [u8], delay: Duration, hold: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = s.write_all(answer).await;
                tokio::time::sleep(hold).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// Serves one canned answer to every connection (after `delay`), then closes.
async fn canned(answer: &'static [u8], delay: Duration) -> u16 {
    serve(answer, delay, Duration::ZERO).await
}

/// Sends `head` at once, then holds the connection open for `hold` without finishing the body.
async fn stalling(head: &'static [u8], hold: Duration) -> u16 {
    serve(head, Duration::ZERO, hold).await
}

fn spec(probe: Probe) -> HealthSpec {
    HealthSpec {
        protocol: "HTTP",
        probe,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        delay: None,
        port: PortRef::Index(0),
    }
}

fn http(ignore_1xx: bool, tls: bool) -> HealthSpec {
    spec(Probe::Http {
        tls,
        path: "/health".into(),
        ignore_1xx,
    })
}

fn target(port: u16, spec: Spec, agent_api: Option<String>) -> Target {
    Target {
        instance_id: "app.instance-1".into(),
        task_id: "app.instance-1._app.1".into(),
        slot: CheckSlot::Health(0),
        app_version: Timestamp(1),
        spec,
        host: "127.0.0.1".into(),
        port,
        agent_api,
        not_before: Timestamp(0),
    }
}

async fn check(port: u16, s: HealthSpec) -> Verdict {
    let s = Arc::new(s);
    Prober::new()
        .health(&target(port, Spec::Health(s.clone()), None), &s)
        .await
}

#[tokio::test]
async fn http_verdicts_follow_marathon() {
    let ok = canned(b"HTTP/1.1 204 No Content\r\n\r\n", Duration::ZERO).await;
    assert_eq!(check(ok, http(false, false)).await, Verdict::Healthy);
    let redirect = canned(
        b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    assert_eq!(check(redirect, http(false, false)).await, Verdict::Healthy);
    let boom = canned(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        check(boom, http(false, false)).await,
        Verdict::Unhealthy("500 Internal Server Error".into())
    );
    let early = canned(b"HTTP/1.1 102 Processing\r\n\r\n", Duration::ZERO).await;
    assert!(matches!(
        check(early, http(true, false)).await,
        Verdict::Ignored(_)
    ));
    assert_eq!(
        check(early, http(false, false)).await,
        Verdict::Unhealthy("102 Processing".into())
    );
    let slow = canned(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(
        check(slow, http(false, false)).await,
        Verdict::Unhealthy("Timed out after 500ms".into())
    );
    let garbage = canned(b"SSH-2.0-OpenSSH_9.2\r\n", Duration::ZERO).await;
    assert!(matches!(
        check(garbage, http(false, false)).await,
        Verdict::Unhealthy(_)
    ));
}

#[tokio::test]
async fn a_status_line_read_before_the_timeout_is_the_answer() {
    // The body never completes: the status line decides, when the check times out.
    let ok = stalling(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(check(ok, http(false, false)).await, Verdict::Healthy);
    let unavailable = stalling(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        check(unavailable, http(false, false)).await,
        Verdict::Unhealthy("503 Service Unavailable".into())
    );
    // Without a whole status line by then, it is a timeout.
    let mute = stalling(b"HTTP/1.1 2", Duration::from_secs(3)).await;
    assert_eq!(
        check(mute, http(false, false)).await,
        Verdict::Unhealthy("Timed out after 500ms".into())
    );
}

#[tokio::test]
async fn tcp_is_healthy_when_it_connects() {
    let open = canned(b"", Duration::ZERO).await;
    assert_eq!(check(open, spec(Probe::Tcp)).await, Verdict::Healthy);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let Verdict::Unhealthy(cause) = check(closed, spec(Probe::Tcp)).await else {
        panic!("a refused connection is unhealthy");
    };
    assert!(cause.contains("refused"), "{cause}");
}

#[tokio::test]
async fn https_does_not_verify_certificates() {
    let cert = rcgen::generate_simple_self_signed(vec!["somewhere.invalid".into()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nready")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    assert_eq!(check(port, http(false, true)).await, Verdict::Healthy);
    // Plain HTTP to a TLS port is not an answer.
    assert!(matches!(
        check(port, http(false, false)).await,
        Verdict::Unhealthy(_)
    ));
    // Readiness over HTTPS, with the response kept.
    let r = Arc::new(ReadinessSpec {
        name: "readinessCheck".into(),
        tls: true,
        path: "/ready".into(),
        port_index: Some(0),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        ready_codes: vec![200],
        preserve_last_response: true,
    });
    let got = Prober::new()
        .readiness(&target(port, Spec::Readiness(r.clone()), None), &r)
        .await;
    assert!(got.ready, "{got:?}");
    assert_eq!(
        (got.status, got.content_type.as_str(), got.body.as_str()),
        (200, "text/plain", "ready")
    );
}

struct FakeAgent;

#[tonic::async_trait]
impl AgentApi for FakeAgent {
    async fn list_files(
        &self,
        _: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn read_file(
        &self,
        _: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn run_command_check(
        &self,
        request: Request<CommandCheckRequest>,
    ) -> Result<Response<CommandCheckResponse>, Status> {
        let r = request.into_inner();
        assert_eq!(r.task_id, "app.instance-1._app.1");
        assert_eq!(r.timeout_ms, 500);
        match r.command.as_str() {
            "true" => Ok(Response::new(CommandCheckResponse {
                healthy: true,
                exit_code: 0,
                output: String::new(),
            })),
            "false" => Ok(Response::new(CommandCheckResponse {
                healthy: false,
                exit_code: 1,
                output: String::new(),
            })),
            "talk" => Ok(Response::new(CommandCheckResponse {
                healthy: false,
                exit_code: 2,
                output: "database unreachable\n".into(),
            })),
            _ => Err(Status::not_found("no such task")),
        }
    }
}

#[tokio::test]
async fn command_checks_run_on_the_agent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = listener.local_addr().expect("addr").to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentApiServer::new(FakeAgent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let prober = Prober::new();
    let run = |command: &str| {
        let s = Arc::new(spec(Probe::Command {
            value: command.into(),
        }));
        let t = target(0, Spec::Health(s.clone()), Some(api.clone()));
        let prober = &prober;
        async move { prober.health(&t, &s).await }
    };
    assert_eq!(run("true").await, Verdict::Healthy);
    assert_eq!(
        run("false").await,
        Verdict::Unhealthy("Command exited with status 1".into())
    );
    assert_eq!(
        run("talk").await,
        Verdict::Unhealthy("database unreachable".into())
    );
    assert!(
        matches!(run("gone").await, Verdict::Ignored(_)),
        "an agent that cannot run the check gives no verdict"
    );
    let s = Arc::new(spec(Probe::Command {
        value: "true".into(),
    }));
    let unreachable = target(0, Spec::Health(s.clone()), Some("127.0.0.1:1".into()));
    assert!(matches!(
        prober.health(&unreachable, &s).await,
        Verdict::Ignored(_)
    ));
}
