//! RFC 2136 pushes into a real BIND 9 (`named` from Debian's bind9), TSIG-signed, checked
//! with `dig` against BIND.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::json;
use stride_lb_sync::config::UpdateConfig;
use stride_lb_sync::dns::update::Pusher;
use stride_lb_sync::dns::zone::{RData, RType, Records};

/// `named` on 127.0.0.1:`port` with zone `mesos` open to updates signed with key `stride`.
struct Named {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Named {
    fn configure(dir: &Path, port: u16, secret: &str) {
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                r#"options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
key "stride" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "mesos" {{
  type primary;
  file "{d}/mesos.zone";
  update-policy {{ grant stride zonesub ANY; }};
  allow-transfer {{ key stride; }};
}};
"#
            ),
        )
        .expect("named.conf");
        std::fs::write(
            dir.join("mesos.zone"),
            "$TTL 60\n@ IN SOA ns1.mesos. root.mesos. 1 60 60 86400 5\n@ IN NS ns1.mesos.\nns1 IN A 127.0.0.1\nmanual IN A 192.0.2.1\n",
        )
        .expect("zone");
    }

    async fn start(dir: &Path, port: u16) -> Self {
        let log = std::fs::File::create(dir.join("named.log")).expect("log");
        let child = Command::new(binary("named"))
            .arg("-g")
            .arg("-c")
            .arg(dir.join("named.conf"))
            .args(["-p", &port.to_string(), "-n", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("named starts (scripts/test installs bind9)");
        let named = Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        let at = "@127.0.0.1".to_string();
        let p = port.to_string();
        eventually(Duration::from_secs(15), "named answers", || {
            let (at, p) = (at.clone(), p.clone());
            async move {
                let a = dig(&[
                    &at,
                    "-p",
                    &p,
                    "manual.mesos",
                    "A",
                    "+short",
                    "+time=1",
                    "+tries=1",
                ])
                .await;
                (a.trim() == "192.0.2.1").then_some(())
            }
        })
        .await;
        named
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn ask(&self, name: &str, t: &str) -> BTreeSet<String> {
        dig(&[
            "@127.0.0.1",
            "-p",
            &self.port.to_string(),
            name,
            t,
            "+short",
            "+time=1",
            "+tries=1",
        ])
        .await
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.stop();
    }
}

fn secret() -> String {
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(73).wrapping_add(std::process::id() as u8))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn update_config(port: u16, secret: &str) -> UpdateConfig {
    UpdateConfig {
        server: format!("127.0.0.1:{port}"),
        zone: "mesos".into(),
        key_name: "stride".into(),
        key_algorithm: "hmac-sha256".into(),
        key_secret: secret.into(),
        owner_id: "test".into(),
        batch_records: 50,
        timeout: Duration::from_secs(3),
        retry_max: Duration::from_millis(500),
        reconcile_interval: Duration::from_secs(300),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_pushed_to_bind_and_reconciled_after_outages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let secret = secret();
    Named::configure(dir.path(), port, &secret);
    let mut named = Named::start(dir.path(), port).await;

    let world = World::new().await;
    world
        .put_app(&app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 10000}]}),
        ))
        .await;
    world
        .put_app(&app(
            json!({"id": "/prod/api", "cmd": "x", "portDefinitions": [{"port": 10001}]}),
        ))
        .await;
    let w2 = running("/web", "127.0.0.2", &[31002], None);
    let w3 = running("/web", "127.0.0.3", &[31003], None);
    // Enough tasks that one UPDATE exceeds 512 bytes (it goes over TCP anyway).
    let api: Vec<_> = (10..30)
        .map(|i| running("/prod/api", &format!("127.0.1.{i}"), &[31100 + i], None))
        .collect();
    world.put_instances(&[w2.clone(), w3.clone()]).await;
    world.put_instances(&api).await;

    let lb_dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(lb_dir.path());
    cfg.haproxy.enabled = false;
    cfg.dns.update = Some(update_config(port, &secret));
    let lb = LbSync::start(cfg.clone(), world.dyn_store(), true).await;

    eventually(Duration::from_secs(10), "the A records in BIND", || async {
        (named.ask("web.marathon.mesos", "A").await == set(&["127.0.0.2", "127.0.0.3"]))
            .then_some(())
    })
    .await;
    let srv = named.ask("_web._tcp.marathon.mesos", "SRV").await;
    assert_eq!(srv.len(), 2, "{srv:?}");
    assert!(srv.iter().any(|l| l.contains(" 31002 ")));
    assert_eq!(named.ask("api-prod.marathon.mesos", "A").await.len(), 20);
    assert_eq!(
        named.ask("web.marathon.mesos", "TXT").await,
        set(&["\"heritage=stride-lb-sync,owner=test\""])
    );
    assert_eq!(named.ask("manual.mesos", "A").await, set(&["192.0.2.1"]));
    let serial_before: u64 = named
        .ask("mesos", "SOA")
        .await
        .iter()
        .next()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|n| n.parse().ok()))
        .expect("serial");
    assert!(serial_before > 1, "BIND bumped its serial");

    // Scale down: the record goes.
    world.put_instance(&killing(&w3)).await;
    eventually(
        Duration::from_secs(10),
        "scale-down reaches BIND",
        || async {
            (named.ask("web.marathon.mesos", "A").await == set(&["127.0.0.2"])).then_some(())
        },
    )
    .await;

    // BIND down while the state changes: retried, converges once it is back.
    named.stop();
    let w4 = running("/web", "127.0.0.4", &[31004], None);
    world.put_instance(&w4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let named_again = Named::start(dir.path(), port).await;
    eventually(
        Duration::from_secs(15),
        "convergence after the outage",
        || async {
            (named_again.ask("web.marathon.mesos", "A").await == set(&["127.0.0.2", "127.0.0.4"]))
                .then_some(())
        },
    )
    .await;

    // lb-sync restarts after an app went away meanwhile: the read-back (AXFR) finds its
    // stale records by their owner TXT and removes them; the manual record stays.
    lb.stop().await;
    world.delete_app("/prod/api").await;
    let lb = LbSync::start(cfg, world.dyn_store(), true).await;
    eventually(Duration::from_secs(15), "stale records removed", || async {
        named_again
            .ask("api-prod.marathon.mesos", "A")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(named_again
        .ask("api-prod.marathon.mesos", "TXT")
        .await
        .is_empty());
    assert_eq!(
        named_again.ask("manual.mesos", "A").await,
        set(&["192.0.2.1"])
    );
    assert_eq!(
        named_again.ask("web.marathon.mesos", "A").await,
        set(&["127.0.0.2", "127.0.0.4"])
    );
    lb.stop().await;
    drop(named);
    let _ = named_again.log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    Named::configure(dir.path(), port, &secret());
    let named = Named::start(dir.path(), port).await;
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut pusher = Pusher::new(&update_config(port, &wrong), "mesos", 5).expect("pusher");
    let mut records = Records::default();
    records.sets.insert(
        ("web.marathon.mesos.".into(), RType::A),
        vec![RData::A([10, 0, 0, 1].into())],
    );
    let err = pusher.sync(&records).await.expect_err("refused");
    assert!(err.needs_operator(), "{err}");
    assert!(named.ask("web.marathon.mesos", "A").await.is_empty());
}
