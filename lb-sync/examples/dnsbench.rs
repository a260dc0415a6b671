//! DNS queries per second: lb-sync's server on one core (a current-thread runtime on its own
//! thread) against a UDP load loop on 127.0.0.1, and, when `named` is installed, BIND 9 with
//! one worker thread serving the same records from a zone file, measured the same way in the
//! same run.
//!
//! `cargo run --release -p stride-lb-sync --example dnsbench [apps] [seconds] [rounds]`
//!
//! The load loop keeps a window of queries in flight on one socket (A and SRV questions over
//! the names of the zone) and counts answers. On a 2-core machine the load loop takes the other
//! core, so besides the answers per second it prints answers per CPU-second of the server
//! (read from /proc): what one fully busy core would answer.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stride_lb_sync::dns::names::{app_label, fqdn};
use stride_lb_sync::dns::server::{serve_udp, Shared};
use stride_lb_sync::dns::wire::{build_query, CompiledZone, ZoneParams};
use stride_lb_sync::dns::zone::{records, RData, Records, ZoneOptions};
use stride_lb_sync::snapshot::{AppEntry, Snapshot, Task};

fn snapshot(apps: usize) -> Snapshot {
    let mut entries: Vec<AppEntry> = (0..apps)
        .map(|i| {
            let mut app = stride_core::App::new(&format!("/team{}/app{i}", i % 20));
            app.port_definitions = Some(vec![stride_core::app::PortDefinition {
                port: 10_000 + i as i64,
                protocol: "tcp".into(),
                name: None,
                labels: Default::default(),
            }]);
            let tasks = (0..3)
                .map(|t| Task {
                    id: format!("app{i}.instance-{t}"),
                    host: format!("10.0.{}.{}", (i + t) / 250 % 250, (i + t) % 250 + 1).into(),
                    host_ip: format!("10.0.{}.{}", (i + t) / 250 % 250, (i + t) % 250 + 1)
                        .parse()
                        .ok(),
                    ip_addresses: Vec::new(),
                    ports: vec![31_000 + t as u32],
                })
                .collect();
            AppEntry { app, tasks }
        })
        .collect();
    entries.sort_by(|a, b| a.app.id.cmp(&b.app.id));
    Snapshot {
        apps: entries,
        agents: Vec::new(),
    }
}

/// The questions the load loop cycles through.
fn questions(snap: &Snapshot) -> Vec<(String, u16)> {
    snap.apps
        .iter()
        .flat_map(|a| {
            let l = app_label(&a.app.id);
            [
                (format!("{l}.marathon.mesos"), 1u16),
                (format!("_{l}._tcp.marathon.mesos"), 33u16),
            ]
        })
        .collect()
}

/// User + system CPU time of a process or thread, from its /proc stat file (10 ms ticks).
fn cpu(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Queries `server` for `secs` with `window` in flight; returns answers received.
fn load(server: SocketAddr, qs: &[Vec<u8>], secs: f64, window: usize) -> u64 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (mut inflight, mut answers, mut next) = (0usize, 0u64, 0usize);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        while inflight < window {
            let _ = sock.send(&qs[next % qs.len()]);
            next += 1;
            inflight += 1;
        }
        match sock.recv(&mut buf) {
            Ok(_) => {
                answers += 1;
                inflight -= 1;
            }
            Err(_) => inflight = 0, // lost: start a new window
        }
    }
    // Drain.
    while inflight > 0 && sock.recv(&mut buf).is_ok() {
        inflight -= 1;
    }
    answers
}

fn zone_file(r: &Records, path: &Path) {
    let mut z = String::from(
        "$TTL 5\n@ IN SOA ns1.mesos. root.ns1.mesos. 1 60 600 86400 5\n@ IN NS ns1.mesos.\n",
    );
    for ((name, _), data) in &r.sets {
        for d in data {
            let _ = match d {
                RData::A(ip) => writeln!(z, "{name} IN A {ip}"),
                RData::Aaaa(ip) => writeln!(z, "{name} IN AAAA {ip}"),
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } => writeln!(z, "{name} IN SRV {priority} {weight} {port} {target}"),
                RData::Txt(t) => writeln!(z, "{name} IN TXT \"{t}\""),
            };
        }
    }
    std::fs::write(path, z).expect("zone file");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn named_binary() -> Option<String> {
    ["/usr/sbin/named", "/usr/local/sbin/named", "/sbin/named"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .map(|p| p.to_string())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let window = 64;

    let snap = snapshot(apps);
    let opts = ZoneOptions {
        domain: fqdn("mesos"),
        framework: "marathon".into(),
        ns_address: [127, 0, 0, 1].into(),
    };
    let recs = records(&snap, &opts);
    let qs: Vec<Vec<u8>> = questions(&snap)
        .iter()
        .enumerate()
        .map(|(i, (n, t))| build_query(i as u16, n, *t, Some(1232)))
        .collect();
    println!(
        "zone: {apps} apps, {} record sets; {} distinct questions; window {window}; {secs} s × {rounds} rounds",
        recs.sets.len(),
        qs.len()
    );

    // lb-sync's server, on its own thread with a current-thread runtime: one core.
    let shared = Arc::new(Shared::new(
        "mesos.",
        Vec::new(),
        Duration::from_secs(1),
        1232,
    ));
    shared.zone.store(Some(Arc::new(CompiledZone::compile(
        &recs,
        &ZoneParams {
            apex: "mesos.".into(),
            ttl: 5,
            negative_ttl: 5,
            serial: 1,
        },
    ))));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_shared = shared.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = addr_tx.send(sock.local_addr().expect("addr"));
            serve_udp(sock, server_shared, stop_rx).await;
        });
    });
    let addr = addr_rx.recv().expect("server address");
    let server_tid = find_server_thread();
    let _ = load(addr, &qs, 0.5, window); // warm-up
    let mut ours = Vec::new();
    let mut ours_core = Vec::new();
    for _ in 0..rounds {
        let c0 = server_tid.as_deref().map(cpu).unwrap_or_default();
        let t = Instant::now();
        let n = load(addr, &qs, secs, window);
        let el = t.elapsed().as_secs_f64();
        let c1 = server_tid.as_deref().map(cpu).unwrap_or_default();
        ours.push(n as f64 / el);
        let used = (c1 - c0).as_secs_f64();
        if used > 0.0 {
            ours_core.push(n as f64 / used);
        }
    }
    println!(
        "lb-sync (1 core):   median {:>9.0} answers/s   ({:.0} per CPU-second of the server thread)",
        median(ours),
        if ours_core.is_empty() { 0.0 } else { median(ours_core) }
    );

    let Some(named) = named_binary() else {
        println!("BIND 9:             named is not installed (scripts/test installs bind9)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("dnsbench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    zone_file(&recs, &dir.join("mesos.zone"));
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("port");
        s.local_addr().expect("addr").port()
    };
    let d = dir.display();
    std::fs::write(
        dir.join("named.conf"),
        format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; session-keyfile \"{d}/s.key\"; managed-keys-directory \"{d}\";\n listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; minimal-responses yes; notify no; }};\ncontrols {{ }};\nzone \"mesos\" {{ type primary; file \"{d}/mesos.zone\"; }};\n"
        ),
    )
    .expect("named.conf");
    let mut child = Command::new(named)
        .arg("-g")
        .arg("-c")
        .arg(dir.join("named.conf"))
        .args(["-p", &port.to_string(), "-n", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("named");
    let bind_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while load(bind_addr, &qs[..1], 0.05, 1) == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            println!("BIND 9:             did not start");
            return;
        }
    }
    let _ = load(bind_addr, &qs, 0.5, window);
    let stat = format!("/proc/{}/stat", child.id());
    let mut theirs = Vec::new();
    let mut theirs_core = Vec::new();
    for _ in 0..rounds {
        let c0 = cpu(&stat);
        let t = Instant::now();
        let n = load(bind_addr, &qs, secs, window);
        let el = t.elapsed().as_secs_f64();
        let used = (cpu(&stat) - c0).as_secs_f64();
        theirs.push(n as f64 / el);
        if used > 0.0 {
            theirs_core.push(n as f64 / used);
        }
    }
    println!(
        "BIND 9 (-n 1):      median {:>9.0} answers/s   ({:.0} per CPU-second of named)",
        median(theirs),
        if theirs_core.is_empty() {
            0.0
        } else {
            median(theirs_core)
        }
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server thread's /proc stat path: the thread of this process named like the spawned
/// one (the only other busy thread).
fn find_server_thread() -> Option<String> {
    let me = std::process::id();
    let main_tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    let tasks = std::fs::read_dir(format!("/proc/{me}/task")).ok()?;
    let mut candidates: Vec<String> = tasks
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|t| Some(t) != main_tid.as_ref())
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .map(|t| format!("/proc/{me}/task/{t}/stat"))
}
