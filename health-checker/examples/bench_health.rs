//! The health checker's throughput benchmark (run by `scripts/bench-health`, which also runs
//! `wrk` against the same target).
//!
//! ```text
//! bench_health serve --port P                      a small fast HTTP target (keep-alive or close)
//! bench_health replica --target P --checks N ...   one whole replica: store, tracker, probes,
//!                                                   batched reports to a counting stub leader
//! bench_health probe --target P --concurrency C    the HTTP probe alone, in a closed loop
//! ```
//!
//! `replica` gives the figure that matters: N tasks with an HTTP health check every
//! `--interval` seconds, all on the target, checked by one replica exactly as in production
//! (one new connection per check), and the results the stub leader received per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stride_core::app::{App, VersionInfo};
use stride_core::instance::{Condition, Instance, Placement};
use stride_core::{PathId, Timestamp};
use stride_health_checker::probe::Prober;
use stride_proto::v1::health_reports_server::{HealthReports, HealthReportsServer};
use stride_proto::v1::{HealthAck, HealthReportBatch, HealthVerdict};
use stride_store::{collections, Batch, Candidate, MemoryStore, StateStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// CPU time (user + system) this process has used, from `/proc/self/stat` (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// The same for process `pid` (`"self"` for this one).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 of the line; 12 and 13 after the command name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    match mode.as_str() {
        "serve" => runtime.block_on(serve(arg(&args, "--port", "18080"))),
        "replica" => runtime.block_on(replica(&args)),
        "probe" => runtime.block_on(probe(&args)),
        _ => {
            eprintln!("usage: bench_health serve|replica|probe [options]");
            std::process::exit(64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------------------------

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
const OK_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

async fn serve(port: String) {
    // A backlog as deep as the kernel allows (`somaxconn`), as production servers configure it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
    let _ = socket.set_reuseaddr(true);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("address: {e}"));
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind {port}: {e}"));
    let listener = socket
        .listen(65_535)
        .unwrap_or_else(|e| panic!("listen {port}: {e}"));
    eprintln!("serving on 127.0.0.1:{port}");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut filled = 0;
            loop {
                let n = match s.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                filled += n;
                // Answer every complete request in the buffer (wrk pipelines nothing, but be safe).
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = &buf[..end];
                    let close = head
                        .windows(17)
                        .any(|w| w.eq_ignore_ascii_case(b"connection: close"))
                        || head.windows(8).any(|w| w == b"HTTP/1.0");
                    if close {
                        // Dropping the socket closes it (FIN); no separate shutdown call.
                        let _ = s.write_all(OK_CLOSE).await;
                        return;
                    }
                    if s.write_all(OK).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
                if filled == buf.len() {
                    return;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// One replica against a stub leader
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counter {
    healthy: AtomicU64,
    other: AtomicU64,
}

struct StubLeader(Arc<Counter>);

#[tonic::async_trait]
impl HealthReports for StubLeader {
    async fn report(
        &self,
        request: Request<HealthReportBatch>,
    ) -> Result<Response<HealthAck>, Status> {
        let batch = request.into_inner();
        let healthy = batch
            .results
            .iter()
            .filter(|r| r.verdict == HealthVerdict::Healthy as i32)
            .count() as u64;
        self.0.healthy.fetch_add(healthy, Ordering::Relaxed);
        self.0
            .other
            .fetch_add(batch.results.len() as u64 - healthy, Ordering::Relaxed);
        Ok(Response::new(HealthAck {
            accepted: batch.results.len() as u32,
            not_owner: 0,
            stale: 0,
        }))
    }
}

async fn replica(args: &[String]) {
    let port: u32 = arg(args, "--target", "18080").parse().unwrap_or(18080);
    let checks: usize = arg(args, "--checks", "30000").parse().unwrap_or(30_000);
    let interval: i64 = arg(args, "--interval", "1").parse().unwrap_or(1);
    let seconds: u64 = arg(args, "--seconds", "10").parse().unwrap_or(10);
    let warmup: u64 = arg(args, "--warmup", "3").parse().unwrap_or(3);
    let concurrency: usize = arg(args, "--concurrency", "256").parse().unwrap_or(256);

    // The stub leader.
    let counter = Arc::new(Counter::default());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let leader_addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"))
        .to_string();
    let stub =
        HealthReportsServer::new(StubLeader(counter.clone())).max_decoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(stub)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // The store: one app with an HTTP check, `checks` running instances on the target.
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let lease = store
        .try_acquire(
            &Candidate {
                scheduler_id: "bench".into(),
                grpc_address: leader_addr.clone(),
                http_address: String::new(),
            },
            Duration::from_secs(3600),
        )
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("lease"));
    let mut app: App = serde_json::from_value(serde_json::json!({
        "id": "/bench", "cmd": "x", "instances": checks,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "intervalSeconds": interval,
            "timeoutSeconds": 5, "gracePeriodSeconds": 0}]
    }))
    .unwrap_or_else(|e| panic!("app: {e}"));
    app.normalize();
    app.version = Some(Timestamp(1_000));
    app.version_info = Some(VersionInfo {
        last_scaling_at: Timestamp(1_000),
        last_config_change_at: Timestamp(1_000),
    });
    let mut batch = Batch::new();
    batch.put(
        collections::APPS,
        app.id.to_string(),
        serde_json::to_vec(&app).unwrap_or_default(),
    );
    for _ in 0..checks {
        let mut i = Instance::scheduled(
            &PathId::parse("/bench"),
            app.config_version(),
            Timestamp(2_000),
        );
        i.condition = Condition::Running;
        i.incarnation = 1;
        i.host_ports = vec![port];
        i.placement = Some(Placement {
            agent_id: "a1".into(),
            hostname: "127.0.0.1".into(),
            attributes: Vec::new(),
        });
        batch.put(
            collections::INSTANCES,
            i.id.0.clone(),
            serde_json::to_vec(&i).unwrap_or_default(),
        );
    }
    store
        .commit(&lease, batch)
        .await
        .unwrap_or_else(|e| panic!("commit: {e}"));

    let mut config = stride_health_checker::Config::new("bench-replica");
    config.max_concurrent_checks = concurrency;
    config.schedulers = vec![leader_addr];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(stride_health_checker::run(config, store, async {
        let _ = stop_rx.await;
    }));

    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let (h0, o0) = (
        counter.healthy.load(Ordering::Relaxed),
        counter.other.load(Ordering::Relaxed),
    );
    let target_pid = arg(args, "--target-pid", "");
    let started = Instant::now();
    let (cpu0, target0) = (cpu_seconds(), cpu_seconds_of(&target_pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let target_cpu = cpu_seconds_of(&target_pid) - target0;
    let healthy = counter.healthy.load(Ordering::Relaxed) - h0;
    let other = counter.other.load(Ordering::Relaxed) - o0;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), replica).await;
    let demand = checks as f64 / interval as f64;
    let done = (healthy + other).max(1) as f64;
    println!(
        "replica: {:.0} checks/s reported ({healthy} healthy, {other} not) over {elapsed:.1}s; demand {demand:.0}/s; cpu {:.1} us/check; target cpu {:.1} us/check",
        done / elapsed,
        cpu * 1e6 / done,
        target_cpu * 1e6 / done
    );
}

// ---------------------------------------------------------------------------------------------
// The probe alone
// ---------------------------------------------------------------------------------------------

async fn probe(args: &[String]) {
    let port: u16 = arg(args, "--target", "18080").parse().unwrap_or(18080);
    let concurrency: usize = arg(args, "--concurrency", "256").parse().unwrap_or(256);
    let seconds: u64 = arg(args, "--seconds", "10").parse().unwrap_or(10);
    let prober = Arc::new(Prober::new());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let target_pid = arg(args, "--target-pid", "");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (cpu0, target0) = (cpu_seconds(), cpu_seconds_of(&target_pid));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (prober, done, failed) = (prober.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match prober
                    .get("127.0.0.1", port, "/health", false, Duration::from_secs(5))
                    .await
                {
                    Ok(r) if r.status == 200 => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let cpu = cpu_seconds() - cpu0;
    let target_cpu = cpu_seconds_of(&target_pid) - target0;
    let n = done.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "probe: {:.0} checks/s ({} failed) with {concurrency} in flight; cpu {:.1} us/check; target cpu {:.1} us/check",
        n / seconds as f64,
        failed.load(Ordering::Relaxed),
        cpu * 1e6 / n,
        target_cpu * 1e6 / n
    );
}
