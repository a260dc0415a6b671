//! The Redis store through Sentinel, against real `redis-server` and `redis-sentinel`
//! processes: the conformance suite on the master the sentinels name; then the master killed
//! mid-stream of commits, and the store following the failover without losing or repeating an
//! acknowledged write, the lease still fenced. And a write no replica acknowledged is reported
//! failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stride_store::{conformance, Batch, Candidate, RedisStore, StateStore, StoreError};
use stride_testkit::{eventually, eventually_async, redis_cli, RedisHa, RedisServer};
use tokio::task::block_in_place;

fn candidate(id: &str) -> Candidate {
    Candidate {
        scheduler_id: id.to_string(),
        grpc_address: format!("127.0.0.1:{}", 5000 + id.len()),
        http_address: String::new(),
    }
}

/// Every event of the stream, oldest first.
async fn all_events(store: &RedisStore) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    let mut after = "0".to_string();
    loop {
        let got = store
            .read_events(Some(&after), 1000, Duration::from_millis(10))
            .await
            .expect("read events");
        let Some(last) = got.last() else {
            return bodies;
        };
        after = last.id.clone();
        bodies.extend(got.into_iter().map(|e| e.body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_conforms_and_survives_a_master_kill() {
    let mut ha = block_in_place(|| RedisHa::start(2, 3));
    let url = ha.url("failover_timeout=30s");

    // A master name no sentinel monitors: connecting fails, within its deadline.
    let started = Instant::now();
    let wrong = ha
        .url("failover_timeout=1s")
        .replace("/stride-ha", "/nobody");
    assert!(RedisStore::connect(&wrong, "x").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));

    let store = RedisStore::connect(&url, "stride-conf")
        .await
        .expect("connect through the sentinels");
    conformance::run_all(&store).await;

    // A leader with a lease that outlives the failover, committing batch after batch; a batch
    // that fails is committed again until acknowledged, as the scheduler's leader does.
    let store = Arc::new(
        RedisStore::connect(&url, "stride-ha")
            .await
            .expect("connect"),
    );
    let lease = store
        .try_acquire(&candidate("a"), Duration::from_secs(120))
        .await
        .expect("reachable")
        .expect("free lease");
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, lease, acked, stop) =
            (store.clone(), lease.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut b = Batch::new();
                b.put("acked", format!("k{n:05}"), format!("v{n}"))
                    .event(format!("{{\"n\":{n}}}"));
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match store.commit(&lease, b.clone()).await {
                        Ok(()) => break,
                        Err(StoreError::Fenced) => panic!("fenced: the lease must survive"),
                        Err(e) => {
                            assert!(
                                Instant::now() < deadline,
                                "commit {n} failing for 60 s: {e}"
                            );
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                acked.lock().expect("lock").push(n);
                n += 1;
            }
            failures
        })
    };
    let count = || acked.lock().expect("lock").len();
    eventually_async(
        Duration::from_secs(20),
        "commits before the kill",
        || async { (count() >= 20).then_some(()) },
    )
    .await;

    let old = ha.master_port().expect("the sentinels agree on a master");
    let before = count();
    let killed = Instant::now();
    block_in_place(|| ha.kill(old));
    let new = block_in_place(|| ha.wait_ready(Duration::from_secs(60)));
    assert_ne!(new, old, "a replica was promoted");
    let promoted = killed.elapsed();
    eventually_async(
        Duration::from_secs(30),
        "commits acknowledged by the new master",
        || async { (count() >= before + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = writer.await.expect("the writer never panics");
    println!(
        "RECOVERY | sentinel: master SIGKILL | promoted {:.1} s, writing again {:.1} s after the kill | {failures} failed attempts retried",
        promoted.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );

    // Every acknowledged write is there, once; the store reads from the new master.
    let acked = acked.lock().expect("lock").clone();
    let puts: HashMap<String, Bytes> = store
        .get_all("acked")
        .await
        .expect("get_all")
        .into_iter()
        .collect();
    for n in &acked {
        assert_eq!(
            puts.get(&format!("k{n:05}")),
            Some(&Bytes::from(format!("v{n}"))),
            "acknowledged write {n} was lost"
        );
    }
    let mut events: HashMap<Bytes, usize> = HashMap::new();
    for body in all_events(&store).await {
        *events.entry(body).or_default() += 1;
    }
    for n in &acked {
        assert_eq!(
            events.get(&Bytes::from(format!("{{\"n\":{n}}}"))),
            Some(&1),
            "the event of acknowledged commit {n} must be there exactly once"
        );
    }

    // The lease came through with its epoch, and fencing holds on the new master.
    assert!(
        store
            .renew(&lease, Duration::from_secs(120))
            .await
            .expect("renew on the new master"),
        "the replicated lease is still ours"
    );
    assert!(store
        .try_acquire(&candidate("b"), Duration::from_secs(60))
        .await
        .expect("reachable")
        .is_none());
    store.release(&lease).await.expect("release");
    let b = store
        .try_acquire(&candidate("b"), Duration::from_secs(60))
        .await
        .expect("reachable")
        .expect("free after release");
    assert!(
        b.epoch() > lease.epoch(),
        "the new master continues the epochs: {} after {}",
        b.epoch(),
        lease.epoch()
    );
    let mut late = Batch::new();
    late.put("acked", "late", Bytes::from_static(b"x"));
    match store.commit(&lease, late).await {
        Err(StoreError::Fenced) => {}
        other => panic!("the deposed term's write must be fenced, got {other:?}"),
    }
    assert_eq!(store.get("acked", "late").await.expect("get"), None);

    // A store connecting afresh finds the new master and the same state.
    let fresh = RedisStore::connect(&url, "stride-ha")
        .await
        .expect("connect");
    assert_eq!(
        fresh.leader().await.expect("leader").map(|l| l.epoch),
        Some(b.epoch())
    );
    assert_eq!(fresh.keys("acked").await.expect("keys").len(), puts.len());
    let epoch = redis_cli(new, &["GET", "stride-ha:epoch"]).expect("redis-cli");
    assert_eq!(epoch.trim(), b.epoch().to_string());

    // And the whole suite passes on the promoted master.
    let store = RedisStore::connect(&url, "stride-conf-2")
        .await
        .expect("connect");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_no_replica_acknowledged_are_reported_failed() {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port;
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port.to_string()]);
    let online = |n: usize| {
        move || {
            let info = redis_cli(port, &["INFO", "replication"])?;
            let in_sync = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            (info.contains(&format!("connected_slaves:{n}")) && in_sync == n).then_some(())
        }
    };
    block_in_place(|| eventually(Duration::from_secs(20), "the replica attached", online(1)));
    // Long enough for a replica on a busy machine to answer; the refusal below takes this long.
    let url = format!("redis://127.0.0.1:{port}/?wait_replicas=1&wait_timeout=2s");
    let store = RedisStore::connect(&url, "w").await.expect("connect");
    let lease = store
        .try_acquire(&candidate("a"), Duration::from_secs(30))
        .await
        .expect("acknowledged by the replica")
        .expect("free");
    let mut b = Batch::new();
    b.put("c", "k", Bytes::from_static(b"1"));
    store
        .commit(&lease, b)
        .await
        .expect("acknowledged by the replica");

    drop(replica);
    block_in_place(|| eventually(Duration::from_secs(20), "the replica gone", online(0)));
    let started = Instant::now();
    let mut b = Batch::new();
    b.put("c", "k", Bytes::from_static(b"2"));
    match store.commit(&lease, b).await {
        Err(StoreError::Unavailable(e)) => assert!(e.contains("replicas"), "{e}"),
        other => panic!("an unreplicated commit must fail, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(store
        .put_unfenced("m", "k", Bytes::from_static(b"x"))
        .await
        .is_err());
    assert!(store.renew(&lease, Duration::from_secs(30)).await.is_err());
    store
        .release(&lease)
        .await
        .expect("a release needs no replica");
    assert!(
        store
            .try_acquire(&candidate("b"), Duration::from_secs(30))
            .await
            .is_err(),
        "an election whose epoch no replica has is refused"
    );
    assert!(
        store.leader().await.expect("leader").is_none(),
        "and its lease given back"
    );
}
