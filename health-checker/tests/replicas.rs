//! Whole replicas in one process over a `MemoryStore`, reporting to a stub leader that records
//! who reported what: they split the checks by rendezvous, only the owner reports a check, and
//! when one stops the other takes its share over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stride_core::app::{App, VersionInfo};
use stride_core::instance::{Condition, Instance, Placement};
use stride_core::rendezvous::{check_owner, CheckSlot};
use stride_core::{PathId, Timestamp};
use stride_proto::v1::health_reports_server::{HealthReports, HealthReportsServer};
use stride_proto::v1::{HealthAck, HealthReportBatch, HealthVerdict};
use stride_store::{collections, Batch, Candidate, MemoryStore, StateStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// (replica, instance, when) of every healthy result.
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

struct Stub(Seen);

#[tonic::async_trait]
impl HealthReports for Stub {
    async fn report(
        &self,
        request: Request<HealthReportBatch>,
    ) -> Result<Response<HealthAck>, Status> {
        let b = request.into_inner();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for r in &b.results {
            if r.verdict == HealthVerdict::Healthy as i32 {
                seen.push((b.replica_id.clone(), r.instance_id.clone(), Instant::now()));
            }
        }
        Ok(Response::new(HealthAck {
            accepted: b.results.len() as u32,
            ..HealthAck::default()
        }))
    }
}

async fn target() -> u16 {
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
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

async fn setup(n: usize) -> (Arc<dyn StateStore>, Seen, Vec<String>) {
    let seen: Seen = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let leader = listener.local_addr().expect("addr").to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthReportsServer::new(Stub(seen.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let port = target().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let lease = store
        .try_acquire(
            &Candidate {
                scheduler_id: "s".into(),
                grpc_address: leader,
                http_address: String::new(),
            },
            Duration::from_secs(600),
        )
        .await
        .expect("store")
        .expect("lease");
    let mut app: App = serde_json::from_value(serde_json::json!({
        "id": "/web", "cmd": "x", "instances": n,
        "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 1, "gracePeriodSeconds": 0}]
    }))
    .expect("app");
    app.normalize();
    app.version = Some(Timestamp(1_000));
    app.version_info = Some(VersionInfo {
        last_scaling_at: Timestamp(1_000),
        last_config_change_at: Timestamp(1_000),
    });
    let mut batch = Batch::new();
    batch.put(
        collections::APPS,
        "/web",
        serde_json::to_vec(&app).expect("json"),
    );
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut i = Instance::scheduled(&PathId::parse("/web"), Timestamp(1_000), Timestamp(1_500));
        i.condition = Condition::Running;
        i.incarnation = 1;
        i.host_ports = vec![u32::from(port)];
        i.placement = Some(Placement {
            agent_id: "a".into(),
            hostname: "127.0.0.1".into(),
            attributes: Vec::new(),
        });
        ids.push(i.id.0.clone());
        batch.put(
            collections::INSTANCES,
            i.id.0.clone(),
            serde_json::to_vec(&i).expect("json"),
        );
    }
    store.commit(&lease, batch).await.expect("commit");
    (store, seen, ids)
}

fn start(
    store: &Arc<dyn StateStore>,
    id: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut config = stride_health_checker::Config::new(id);
    config.flush_interval = Duration::from_millis(20);
    let handle = tokio::spawn(stride_health_checker::run(config, store.clone(), async {
        let _ = rx.await;
    }));
    (tx, handle)
}

/// Instances reported by each replica since `after`.
fn reported(seen: &Seen, after: Instant) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (replica, instance, at) in seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if *at > after {
            out.entry(replica.clone())
                .or_default()
                .insert(instance.clone());
        }
    }
    out
}

async fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_checks_and_one_takes_over_when_the_other_stops() {
    let (store, seen, ids) = setup(40).await;
    let (_stop_a, a) = start(&store, "a");
    let (stop_b, b) = start(&store, "b");
    let members = vec!["a".to_string(), "b".to_string()];
    let share = |m: &str| -> BTreeSet<String> {
        ids.iter()
            .filter(|i| check_owner(i, CheckSlot::Health(0), &members) == Some(m))
            .cloned()
            .collect()
    };
    // Once both see each other, each checks exactly its share.
    let both = eventually(Duration::from_secs(10), "both replicas to check", || {
        let r = reported(&seen, Instant::now() - Duration::from_millis(1_500));
        (r.get("a") == Some(&share("a")) && r.get("b") == Some(&share("b"))).then_some(r)
    })
    .await;
    assert_eq!(both.values().map(BTreeSet::len).sum::<usize>(), 40);

    // b stops cleanly (it deregisters): a takes every check within two intervals.
    let _ = stop_b.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), b).await;
    let stopped = Instant::now();
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    eventually(Duration::from_secs(2), "a to check everything", || {
        let r = reported(&seen, stopped);
        (r.get("a") == Some(&all)).then_some(())
    })
    .await;
    assert!(
        !reported(&seen, stopped + Duration::from_millis(200)).contains_key("b"),
        "nothing from b after it stopped"
    );
    a.abort();
}
