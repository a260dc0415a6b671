//! lb-sync against Debian's HAProxy: real backends behind it, requests through it, while the
//! test changes the store the way the scheduler does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use serde_json::json;

/// Requests through HAProxy from a few workers until told to stop (at most `cap`).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, workers: usize, pace: Duration, cap: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let handles = (0..workers)
            .map(|_| {
                let (stop, sent, errors, seen) =
                    (stop.clone(), sent.clone(), errors.clone(), seen.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed)
                        && sent.fetch_add(1, Ordering::Relaxed) < cap
                    {
                        match get(addr, "load", "/").await {
                            Ok((200, body)) => *seen.lock().entry(body).or_insert(0) += 1,
                            Ok((status, body)) => {
                                errors.lock().push(format!("HTTP {status}: {body}"))
                            }
                            Err(e) => errors.lock().push(e),
                        }
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            errors,
            seen,
            workers: handles,
        }
    }

    async fn finish(self) -> (usize, Vec<String>, BTreeMap<String, usize>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let sent = self.sent.load(Ordering::Relaxed);
        let errors = self.errors.lock().clone();
        let seen = self.seen.lock().clone();
        (sent, errors, seen)
    }
}

async fn bodies(addr: SocketAddr, host: &str, n: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for _ in 0..n {
        if let Ok((200, body)) = get(addr, host, "/").await {
            out.insert(body);
        }
    }
    out
}

async fn wait_ready(admin: &std::path::Path, backend: &str, want: &[u16], what: &str) {
    let mut want: Vec<u32> = want.iter().map(|p| u32::from(*p)).collect();
    want.sort_unstable();
    eventually(Duration::from_secs(10), what, || {
        let want = want.clone();
        async move { (ready_ports(admin, backend).await == want).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_serves_and_scaling_and_replacing_lose_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let sp = free_port();
    let backend = format!("web_{sp}");
    world
        .put_app(&app(
            json!({"id": "/web", "cmd": "x", "instances": 2, "portDefinitions": [{"port": sp}]}),
        ))
        .await;
    let mut live: Vec<(Backend, stride_core::instance::Instance)> = Vec::new();
    for i in 0..2 {
        let b = Backend::start(&format!("b{i}")).await;
        let inst = running("/web", "127.0.0.1", &[b.port], None);
        world.put_instance(&inst).await;
        live.push((b, inst));
    }
    let cfg = config(dir.path());
    let master = cfg.haproxy.master_socket.clone();
    let admin = cfg.haproxy.admin_socket.clone();
    let lb = LbSync::start(cfg, world.dyn_store(), false).await;
    let addr: SocketAddr = ([127, 0, 0, 1], sp).into();

    eventually(
        Duration::from_secs(15),
        "both instances answer through HAProxy",
        || async {
            let seen = bodies(addr, "web", 6).await;
            (seen == BTreeSet::from(["b0".to_string(), "b1".to_string()])).then_some(())
        },
    )
    .await;
    let reloads_at_start = reloads(&master).await;

    let load = Load::start(addr, 4, Duration::from_millis(4), 4_000);
    // Traffic flows through each intermediate state for a while.
    let hold = || tokio::time::sleep(Duration::from_millis(300));
    hold().await;
    let ports = |live: &Vec<(Backend, stride_core::instance::Instance)>| -> Vec<u16> {
        live.iter().map(|(b, _)| b.port).collect()
    };

    // Scale up within the spare slots: no reload.
    for i in 2..4 {
        let b = Backend::start(&format!("b{i}")).await;
        let inst = running("/web", "127.0.0.1", &[b.port], None);
        world.put_instance(&inst).await;
        live.push((b, inst));
    }
    wait_ready(&admin, &backend, &ports(&live), "scale to 4 in the runtime").await;
    hold().await;
    assert_eq!(
        reloads(&master).await,
        reloads_at_start,
        "scaling within the slots must not reload"
    );

    // Scale up beyond them: one hitless reload, runtime state kept.
    for i in 4..8 {
        let b = Backend::start(&format!("b{i}")).await;
        let inst = running("/web", "127.0.0.1", &[b.port], None);
        world.put_instance(&inst).await;
        live.push((b, inst));
    }
    wait_ready(&admin, &backend, &ports(&live), "scale to 8").await;
    hold().await;

    // Scale down to 3: mark killing, wait until HAProxy stops sending, then stop the task.
    let gone: Vec<_> = live.drain(3..).collect();
    for (_, inst) in &gone {
        world.put_instance(&killing(inst)).await;
    }
    wait_ready(&admin, &backend, &ports(&live), "scale down to 3").await;
    for (mut b, inst) in gone {
        b.stop();
        world.delete_instance(&inst).await;
    }
    hold().await;

    // Rolling replacement of every old instance, one at a time.
    for n in 0..3 {
        let b = Backend::start(&format!("r{n}")).await;
        let inst = running("/web", "127.0.0.1", &[b.port], None);
        world.put_instance(&inst).await;
        live.push((b, inst));
        wait_ready(&admin, &backend, &ports(&live), "replacement ready").await;
        let (mut old_b, old) = live.remove(0);
        world.put_instance(&killing(&old)).await;
        wait_ready(&admin, &backend, &ports(&live), "old instance out").await;
        old_b.stop();
        world.delete_instance(&old).await;
        hold().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, errors, seen) = load.finish().await;
    eprintln!(
        "load: {sent} requests, {} errors, per backend {seen:?}, reloads {}",
        errors.len(),
        reloads(&master).await - reloads_at_start
    );
    assert!(sent >= 1_000, "the load loop ran ({sent} requests)");
    assert!(
        errors.is_empty(),
        "requests failed: {:?}",
        &errors[..errors.len().min(10)]
    );
    for id in ["r0", "r1", "r2"] {
        assert!(seen.contains_key(id), "{id} got traffic: {seen:?}");
    }
    let after = bodies(addr, "web", 9).await;
    assert_eq!(
        after,
        BTreeSet::from(["r0".to_string(), "r1".to_string(), "r2".to_string()])
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_app_ids_and_health_gating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let sp = free_port();
    world
        .put_app(&app(json!({
            "id": "/shop/web", "cmd": "x",
            "portDefinitions": [{"port": sp}],
            "healthChecks": [{"protocol": "HTTP", "path": "/", "intervalSeconds": 1}],
            "labels": {"HAPROXY_0_VHOST": "shop.example.com,www.shop.example.com"}
        })))
        .await;
    let healthy = Backend::start("healthy").await;
    let sick = Backend::start("sick").await;
    let h = running("/shop/web", "127.0.0.1", &[healthy.port], Some(true));
    let sick_inst = running("/shop/web", "127.0.0.1", &[sick.port], Some(false));
    world.put_instances(&[h, sick_inst.clone()]).await;
    let cfg = config(dir.path());
    let http: SocketAddr = cfg.haproxy.http_bind.parse().expect("addr");
    let appid: SocketAddr = cfg.haproxy.appid_bind.parse().expect("addr");
    let master = cfg.haproxy.master_socket.clone();
    let lb = LbSync::start(cfg, world.dyn_store(), false).await;

    eventually(Duration::from_secs(15), "the vhost routes", || async {
        (get(http, "shop.example.com", "/").await.ok()? == (200, "healthy".into())).then_some(())
    })
    .await;
    assert_eq!(
        bodies(http, "www.shop.example.com", 6).await,
        BTreeSet::from(["healthy".to_string()]),
        "only the healthy instance serves, on every vhost"
    );
    let (status, _) = get(http, "unknown.example.com", "/").await.expect("answer");
    assert_eq!(status, 503, "an unknown host gets 503");
    let mut s = tokio::net::TcpStream::connect(appid)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Marathon-App-Id: /shop/web\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("healthy"),
        "{resp}"
    );

    // The sick instance recovers: served without a reload.
    let before = reloads(&master).await;
    let mut recovered = sick_inst.clone();
    recovered.healthy = Some(true);
    world.put_instance(&recovered).await;
    eventually(
        Duration::from_secs(5),
        "the recovered instance serves",
        || async {
            bodies(http, "shop.example.com", 6)
                .await
                .contains("sick")
                .then_some(())
        },
    )
    .await;
    assert_eq!(reloads(&master).await, before);
    let cfg_text = std::fs::read_to_string(dir.path().join("haproxy.cfg")).expect("cfg");
    assert!(cfg_text.contains("acl host_shop_example_com_shop_web hdr(host) -i shop.example.com"));
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_haproxy_refuses_is_left_out_and_the_rest_keeps_updating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let (good_port, bad_port) = (free_port(), free_port());
    world
        .put_app(&app(
            json!({"id": "/good", "cmd": "x", "portDefinitions": [{"port": good_port}]}),
        ))
        .await;
    world
        .put_app(&app(json!({
            "id": "/bad", "cmd": "x", "portDefinitions": [{"port": bad_port}],
            "labels": {"HAPROXY_0_BALANCE": "no-such-algorithm"}
        })))
        .await;
    let g1 = Backend::start("g1").await;
    let b1 = Backend::start("bad1").await;
    world
        .put_instances(&[
            running("/good", "127.0.0.1", &[g1.port], None),
            running("/bad", "127.0.0.1", &[b1.port], None),
        ])
        .await;
    let lb = LbSync::start(config(dir.path()), world.dyn_store(), false).await;
    let good: SocketAddr = ([127, 0, 0, 1], good_port).into();
    eventually(Duration::from_secs(20), "the good app serves", || async {
        (get(good, "x", "/").await.ok()? == (200, "g1".into())).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(dir.path().join("haproxy.cfg")).expect("cfg");
    assert!(
        !text.contains("backend bad_"),
        "the refused app is left out"
    );
    let g2 = Backend::start("g2").await;
    world
        .put_instance(&running("/good", "127.0.0.1", &[g2.port], None))
        .await;
    eventually(
        Duration::from_secs(10),
        "the good app keeps updating",
        || async { bodies(good, "x", 6).await.contains("g2").then_some(()) },
    )
    .await;
    // Fixing the label brings the app back.
    world
        .put_app(&app(
            json!({"id": "/bad", "cmd": "x", "portDefinitions": [{"port": bad_port}],
                             "labels": {"HAPROXY_0_BALANCE": "leastconn"}}),
        ))
        .await;
    let bad: SocketAddr = ([127, 0, 0, 1], bad_port).into();
    eventually(Duration::from_secs(10), "the fixed app serves", || async {
        (get(bad, "x", "/").await.ok()? == (200, "bad1".into())).then_some(())
    })
    .await;
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_shares_one_frontend_and_drains_the_old_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let (port, alt) = (free_port(), free_port());
    world
        .put_app(&app(json!({
            "id": "/web-blue", "cmd": "x", "instances": 3,
            "portDefinitions": [{"port": port}],
            "labels": {"HAPROXY_DEPLOYMENT_GROUP": "web", "HAPROXY_DEPLOYMENT_ALT_PORT": alt.to_string(),
                       "HAPROXY_DEPLOYMENT_COLOUR": "blue",
                       "HAPROXY_DEPLOYMENT_STARTED_AT": "2024-05-01T10:00:00.000Z"}
        })))
        .await;
    let mut blue = Vec::new();
    for i in 0..3 {
        let b = Backend::start(&format!("blue{i}")).await;
        let inst = running("/web-blue", "127.0.0.1", &[b.port], None);
        world.put_instance(&inst).await;
        blue.push((b, inst));
    }
    // marathon-lb drains the old tasks in the order of their ids.
    blue.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    let cfg = config(dir.path());
    let admin = cfg.haproxy.admin_socket.clone();
    let lb = LbSync::start(cfg, world.dyn_store(), false).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually(Duration::from_secs(15), "blue serves", || async {
        (bodies(addr, "web", 9).await.len() == 3).then_some(())
    })
    .await;

    // Green arrives on the alternate port but is served on the public one.
    world
        .put_app(&app(json!({
            "id": "/web-green", "cmd": "x", "instances": 1,
            "portDefinitions": [{"port": alt}],
            "labels": {"HAPROXY_DEPLOYMENT_GROUP": "web", "HAPROXY_DEPLOYMENT_ALT_PORT": port.to_string(),
                       "HAPROXY_DEPLOYMENT_COLOUR": "green", "HAPROXY_0_PORT": port.to_string(),
                       "HAPROXY_DEPLOYMENT_STARTED_AT": "2024-05-02T10:00:00.000Z"}
        })))
        .await;
    let mut green = Vec::new();
    let g = Backend::start("green0").await;
    let gi = running("/web-green", "127.0.0.1", &[g.port], None);
    world.put_instance(&gi).await;
    green.push((g, gi));
    let backend = format!("web_{port}");
    let mut want: Vec<u16> = vec![blue[1].0.port, blue[2].0.port, green[0].0.port];
    wait_ready(&admin, &backend, &want, "one healthy green drains one blue").await;
    let seen = bodies(addr, "web", 12).await;
    assert!(
        seen.contains("green0") && !seen.contains(&blue[0].0.id),
        "{seen:?}"
    );

    for i in 1..3 {
        let g = Backend::start(&format!("green{i}")).await;
        let gi = running("/web-green", "127.0.0.1", &[g.port], None);
        world.put_instance(&gi).await;
        green.push((g, gi));
    }
    want = green.iter().map(|(b, _)| b.port).collect();
    wait_ready(&admin, &backend, &want, "three green drain all blue").await;
    world.delete_app("/web-blue").await;
    for (_, inst) in &blue {
        world.delete_instance(inst).await;
    }
    wait_ready(&admin, &backend, &want, "green alone").await;
    let seen = bodies(addr, "web", 9).await;
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.starts_with("green")));
    let text = std::fs::read_to_string(dir.path().join("haproxy.cfg")).expect("cfg");
    assert!(text.contains(&format!("frontend web_{port}")));
    assert!(
        !text.contains(&format!("_{alt}\n")),
        "no frontend on the alternate port"
    );
    lb.stop().await;
}

/// A store that can be made unreachable for reads.
struct Flaky {
    inner: Arc<stride_store::MemoryStore>,
    down: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl stride_store::StateStore for Flaky {
    async fn get(&self, c: &str, k: &str) -> stride_store::Result<Option<bytes::Bytes>> {
        self.check()?;
        self.inner.get(c, k).await
    }
    async fn get_all(&self, c: &str) -> stride_store::Result<Vec<(String, bytes::Bytes)>> {
        self.check()?;
        self.inner.get_all(c).await
    }
    async fn keys(&self, c: &str) -> stride_store::Result<Vec<String>> {
        self.check()?;
        self.inner.keys(c).await
    }
    async fn commit(
        &self,
        l: &stride_store::Lease,
        b: stride_store::Batch,
    ) -> stride_store::Result<()> {
        self.inner.commit(l, b).await
    }
    async fn try_acquire(
        &self,
        c: &stride_store::Candidate,
        ttl: Duration,
    ) -> stride_store::Result<Option<stride_store::Lease>> {
        self.inner.try_acquire(c, ttl).await
    }
    async fn renew(&self, l: &stride_store::Lease, ttl: Duration) -> stride_store::Result<bool> {
        self.inner.renew(l, ttl).await
    }
    async fn release(&self, l: &stride_store::Lease) -> stride_store::Result<()> {
        self.inner.release(l).await
    }
    async fn leader(&self) -> stride_store::Result<Option<stride_store::LeaderRecord>> {
        self.inner.leader().await
    }
    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
        block: Duration,
    ) -> stride_store::Result<Vec<stride_store::StoredEvent>> {
        if self.down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(stride_store::StoreError::Unavailable("test outage".into()));
        }
        self.inner.read_events(after, max, block).await
    }
    async fn last_event_id(&self) -> stride_store::Result<String> {
        self.check()?;
        self.inner.last_event_id().await
    }
    async fn first_event_id(&self) -> stride_store::Result<Option<String>> {
        self.check()?;
        self.inner.first_event_id().await
    }
    async fn put_unfenced(&self, c: &str, k: &str, v: bytes::Bytes) -> stride_store::Result<()> {
        self.inner.put_unfenced(c, k, v).await
    }
    async fn delete_unfenced(&self, c: &str, k: &str) -> stride_store::Result<()> {
        self.inner.delete_unfenced(c, k).await
    }
}

impl Flaky {
    fn check(&self) -> stride_store::Result<()> {
        if self.down.load(Ordering::Relaxed) {
            Err(stride_store::StoreError::Unavailable("test outage".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_keeps_the_last_configuration_and_a_crashed_haproxy_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new().await;
    let sp = free_port();
    world
        .put_app(&app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": sp}]}),
        ))
        .await;
    let b1 = Backend::start("b1").await;
    world
        .put_instance(&running("/web", "127.0.0.1", &[b1.port], None))
        .await;
    let down = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn stride_store::StateStore> = Arc::new(Flaky {
        inner: world.store.clone(),
        down: down.clone(),
    });
    let mut cfg = config(dir.path());
    cfg.resync_interval = Duration::from_millis(200);
    let master = cfg.haproxy.master_socket.clone();
    let lb = LbSync::start(cfg, store, true).await;
    let dns = lb.dns.expect("dns");
    let addr: SocketAddr = ([127, 0, 0, 1], sp).into();
    eventually(Duration::from_secs(15), "served", || async {
        (get(addr, "x", "/").await.ok()? == (200, "b1".into())).then_some(())
    })
    .await;
    let file = dir.path().join("haproxy.cfg");
    let before = std::fs::read_to_string(&file).expect("cfg");

    down.store(true, Ordering::Relaxed);
    let b2 = Backend::start("b2").await;
    world
        .put_instance(&running("/web", "127.0.0.1", &[b2.port], None))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        std::fs::read_to_string(&file).expect("cfg"),
        before,
        "config kept"
    );
    assert_eq!(
        bodies(addr, "x", 4).await,
        BTreeSet::from(["b1".to_string()])
    );
    let a = dig(&[
        &format!("@{}", dns.ip()),
        "-p",
        &dns.port().to_string(),
        "web.marathon.mesos",
        "A",
        "+short",
    ])
    .await;
    assert_eq!(a.trim(), "127.0.0.1", "DNS keeps answering");

    down.store(false, Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "caught up after the outage",
        || async { (bodies(addr, "x", 6).await.len() == 2).then_some(()) },
    )
    .await;

    // HAProxy dies: lb-sync starts it again from the file.
    let proc_text = cli(&master, "show proc").await;
    let pid: i32 = proc_text
        .lines()
        .find(|l| l.contains("master"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("master pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    eventually(Duration::from_secs(10), "HAProxy restarted", || async {
        (bodies(addr, "x", 6).await.len() == 2).then_some(())
    })
    .await;
    lb.stop().await;
}
