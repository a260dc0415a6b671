//! Health checking end to end: `stride-health-checker` replicas beside the real scheduler,
//! gateway and agents, checking real processes (a small Python HTTP server whose answers the
//! test steers with files in the task's sandbox).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stride_core::instance::parse_task_id;
use stride_core::rendezvous::{check_owner, CheckSlot};
use stride_store::{RedisStore, StateStore};
use stride_tests::{bin, free_port, pids_of_task, Cluster, Proc};

/// Answers `/health` with 500 once `fail` exists in its sandbox (200 before), `/ready` with 200
/// once `ready` exists (503 before), anything else with 404; appends every request to `hits`.
const SERVER: &str = r#"
import http.server, os, sys, time
sandbox = os.environ.get('MESOS_SANDBOX', '.')
def has(name):
    return os.path.exists(os.path.join(sandbox, name))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(sandbox, 'hits'), 'a') as f:
            f.write('%f %s\n' % (time.time(), self.path))
        if self.path == '/health':
            code = 500 if has('fail') else 200
        elif self.path == '/ready':
            code = 200 if has('ready') else 503
        else:
            code = 404
        body = b'ok' if code == 200 else b'not ok'
        self.send_response(code)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;

/// Health-checker replicas of a test, with their metrics ports; logs printed on failure.
struct Checkers {
    procs: BTreeMap<usize, Proc>,
    metrics: BTreeMap<usize, u16>,
}

impl Checkers {
    fn start(c: &Cluster, n: usize) -> Self {
        let mut me = Self {
            procs: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        for i in 0..n {
            me.add(c, i);
        }
        me
    }

    fn add(&mut self, c: &Cluster, i: usize) {
        let port = free_port();
        let schedulers: Vec<String> = c
            .scheduler_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let proc = Proc::spawn(
            &format!("health-checker-{i}"),
            &bin("stride-health-checker"),
            &[
                "--redis".into(),
                c.redis.url(),
                "--id".into(),
                id(i),
                "--schedulers".into(),
                schedulers.join(","),
                "--metrics-listen".into(),
                format!("127.0.0.1:{port}"),
                "--flush".into(),
                "50ms".into(),
            ],
            c.dir.path(),
        );
        self.procs.insert(i, proc);
        self.metrics.insert(i, port);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(p) = self.procs.get_mut(&i) {
            p.kill9();
        }
        self.metrics.remove(&i);
    }

    /// A gauge or counter of replica `i`'s metrics, if it answers.
    async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        stride_tests::metric_at(*self.metrics.get(&i)?, name).await
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.procs.values() {
                eprintln!("===== {} =====\n{}", p.name, p.log_text());
            }
        }
    }
}

/// A block of `n` ports below the ephemeral range that nothing listens on right now. Agents of
/// these tests offer such a block rather than the shared default, which other tests' tasks on
/// this machine may hold.
fn free_block(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 97) as u16;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let lo = 20_000 + ((seed * 7 + k) % 50) * 200;
        let free = (lo..lo + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return lo;
        }
    }
}

/// Adds agent `i` with its own port block and API port (its tasks die with the cluster).
fn add_agent(c: &mut Cluster, i: usize) {
    let lo = free_block(100);
    let endpoints: Vec<String> = c
        .scheduler_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let agent = Proc::spawn(
        &format!("agent-{i}"),
        &bin("stride-agent"),
        &[
            "--schedulers".into(),
            endpoints.join(","),
            "--agent-id".into(),
            format!("agent-{i}"),
            "--hostname".into(),
            "127.0.0.1".into(),
            "--work-dir".into(),
            c.dir
                .path()
                .join(format!("agent-{i}"))
                .display()
                .to_string(),
            "--cpus".into(),
            "8".into(),
            "--mem".into(),
            "8192".into(),
            "--ports".into(),
            format!("{lo}-{}", lo + 99),
            "--api-listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ],
        c.dir.path(),
    );
    c.agents.push(agent);
}

/// One scheduler, one gateway, one agent of ours.
fn cluster() -> Cluster {
    let mut c = Cluster::start(1, 0);
    add_agent(&mut c, 0);
    c
}

fn id(i: usize) -> String {
    format!("checker-{i}")
}

async fn wait_for_leader(c: &Cluster) {
    c.api
        .until(Duration::from_secs(20), "a scheduler to lead", |_| async {
            c.leader_index().await
        })
        .await;
}

fn write_server(c: &Cluster) -> PathBuf {
    let path = c.dir.path().join("server.py");
    std::fs::write(&path, SERVER).unwrap_or_else(|e| panic!("server.py: {e}"));
    path
}

async fn store(c: &Cluster) -> Arc<dyn StateStore> {
    Arc::new(
        RedisStore::connect(&c.redis.url(), "stride")
            .await
            .unwrap_or_else(|e| panic!("redis: {e}")),
    )
}

/// Every stored event of `event_type`, oldest first.
async fn events(store: &Arc<dyn StateStore>, event_type: &str) -> Vec<Value> {
    store
        .read_events(Some("0"), 1_000_000, Duration::from_millis(1))
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.body).ok())
        .filter(|v| v["eventType"] == event_type)
        .collect()
}

/// The sandbox of a running task, from its process's environment.
fn sandbox_of(task_id: &str) -> Option<PathBuf> {
    let pid = *pids_of_task(task_id).first()?;
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        std::str::from_utf8(kv)
            .ok()?
            .strip_prefix("MESOS_SANDBOX=")
            .map(PathBuf::from)
    })
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Times (seconds since the epoch) of the requests a task's server logged.
fn hits(sandbox: &Path) -> Vec<f64> {
    std::fs::read_to_string(sandbox.join("hits"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The app (`GET /v2/apps/{id}`), once `check` accepts it.
async fn app_until(
    c: &Cluster,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v2/apps{id}");
    let check = &check;
    c.api
        .until(within, what, |api| {
            let path = path.clone();
            async move {
                let r = api.try_get(&path).await?;
                check(&r.body["app"]).then(|| r.body["app"].clone())
            }
        })
        .await
}

fn healthy_and_deployed(n: usize) -> impl Fn(&Value) -> bool {
    move |a: &Value| {
        a["tasksHealthy"] == n
            && a["tasksRunning"] == n
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_its_health_check_is_killed_and_replaced() {
    let c = cluster();
    let _checkers = Checkers::start(&c, 1);
    wait_for_leader(&c).await;
    let server = write_server(&c);
    let app = json!({
        "id": "/flaky", "cmd": format!("python3 {} $PORT0", server.display()),
        "cpus": 0.1, "mem": 32, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 10, "intervalSeconds": 1, "timeoutSeconds": 1,
            "maxConsecutiveFailures": 2}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);

    let a = app_until(
        &c,
        "/flaky",
        Duration::from_secs(60),
        "the task to be healthy and the deployment done",
        healthy_and_deployed(1),
    )
    .await;
    assert_eq!(a["tasksUnhealthy"], 0);
    let task = &a["tasks"][0];
    let old = task["id"].as_str().expect("task id").to_string();
    let results = task["healthCheckResults"]
        .as_array()
        .expect("healthCheckResults");
    assert_eq!(results.len(), 1);
    let hc = &results[0];
    assert_eq!(hc["alive"], true);
    assert_eq!(hc["consecutiveFailures"], 0);
    assert!(hc["firstSuccess"].is_string() && hc["lastSuccess"].is_string());
    assert!(hc.get("lastFailure").is_none());
    let instance = parse_task_id(&old).expect("a task id").instance_id.0;
    assert_eq!(hc["instanceId"], instance.as_str());

    // The endpoint starts failing: after two counted failures, the third kills.
    let sandbox = sandbox_of(&old).expect("the task's sandbox");
    touch(&sandbox, "fail");
    let a = app_until(
        &c,
        "/flaky",
        Duration::from_secs(60),
        "the unhealthy task to be replaced by a healthy one",
        |a| {
            a["tasksHealthy"] == 1
                && a["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["id"] != old.as_str())
        },
    )
    .await;
    let failure = &a["lastTaskFailure"];
    assert_eq!(failure["taskId"], old.as_str(), "{a}");
    assert_eq!(failure["state"], "TASK_KILLED");
    assert_eq!(
        failure["message"],
        "Task was killed since health check failed. Reason: 500 Internal Server Error"
    );

    let store = store(&c).await;
    let kills = events(&store, "unhealthy_instance_kill_event").await;
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0]["taskId"], old.as_str());
    assert_eq!(kills[0]["instanceId"], instance.as_str());
    assert_eq!(kills[0]["appId"], "/flaky");
    assert_eq!(kills[0]["reason"], "500 Internal Server Error");
    let all = store
        .read_events(Some("0"), 1_000_000, Duration::from_millis(1))
        .await
        .unwrap_or_default();
    let mut failed_before_kill = 0;
    for e in &all {
        let v: Value = serde_json::from_slice(&e.body).unwrap_or(Value::Null);
        if v["eventType"] == "unhealthy_instance_kill_event" {
            break;
        }
        if v["eventType"] == "failed_health_check_event" && v["taskId"] == instance.as_str() {
            assert_eq!(v["healthCheck"]["path"], "/health");
            failed_before_kill += 1;
        }
    }
    assert_eq!(
        failed_before_kill, 3,
        "killed on the (max+1)-th counted failure"
    );
    let flips: Vec<Value> = events(&store, "health_status_changed_event")
        .await
        .into_iter()
        .filter(|e| e["instanceId"] == instance.as_str())
        .collect();
    assert_eq!(
        flips.iter().map(|e| e["alive"].clone()).collect::<Vec<_>>(),
        vec![json!(true), json!(false)]
    );
    assert!(events(&store, "instance_health_changed_event")
        .await
        .iter()
        .any(|e| e["instanceId"] == instance.as_str() && e["healthy"] == false));
    let added = events(&store, "add_health_check_event").await;
    assert!(added.iter().any(|e| e["appId"] == "/flaky"
        && e["healthCheck"]["protocol"] == "HTTP"
        && e["version"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_becomes_healthy_keeps_its_deployment_open() {
    let c = cluster();
    let _checkers = Checkers::start(&c, 1);
    wait_for_leader(&c).await;
    let server = write_server(&c);
    let app = json!({
        "id": "/sick", "cmd": format!("python3 {} $PORT0", server.display()),
        "cpus": 0.1, "mem": 32, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/missing", "gracePeriodSeconds": 0,
            "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 0}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &c,
        "/sick",
        Duration::from_secs(60),
        "three counted failures",
        |a| {
            a["tasks"][0]["healthCheckResults"][0]["consecutiveFailures"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        },
    )
    .await;
    let task = a["tasks"][0]["id"].clone();
    let hc = &a["tasks"][0]["healthCheckResults"][0];
    assert_eq!(hc["alive"], false);
    assert_eq!(hc["lastFailureCause"], "404 Not Found");
    assert!(hc.get("firstSuccess").is_none());
    assert_eq!(a["tasksUnhealthy"], 1);
    assert_eq!(a["tasksHealthy"], 0);
    // Three more intervals: still one deployment, and the task (maxConsecutiveFailures 0) lives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = c.api.get("/v2/apps/sick").await.body["app"].clone();
    assert_eq!(a["deployments"].as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(a["tasks"][0]["id"], task);
    assert!(
        a["tasks"][0]["healthCheckResults"][0]["consecutiveFailures"]
            .as_u64()
            .is_some_and(|n| n >= 5),
        "{a}"
    );
    let d = c.api.get("/v2/deployments").await;
    assert_eq!(d.body.as_array().map(Vec::len), Some(1), "{}", d.text);
    let store = store(&c).await;
    assert!(events(&store, "unhealthy_instance_kill_event")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_check_holds_the_deployment_until_ready() {
    let c = cluster();
    let _checkers = Checkers::start(&c, 1);
    wait_for_leader(&c).await;
    let server = write_server(&c);
    let app = json!({
        "id": "/slow", "cmd": format!("python3 {} $PORT0", server.display()),
        "cpus": 0.1, "mem": 32, "instances": 1,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 1}],
        "readinessChecks": [{"name": "warm", "protocol": "HTTP", "path": "/ready", "portName": "http",
            "intervalSeconds": 2, "timeoutSeconds": 1, "preserveLastResponse": true}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &c,
        "/slow",
        Duration::from_secs(60),
        "the task to be healthy",
        |a| a["tasksHealthy"] == 1,
    )
    .await;
    let task = a["tasks"][0]["id"].as_str().expect("task id").to_string();
    let sandbox = sandbox_of(&task).expect("sandbox");
    // Healthy but not ready: the readiness check has been asked and said no, for a while.
    c.api
        .until(Duration::from_secs(20), "readiness to be polled", |_| {
            let sandbox = sandbox.clone();
            async move {
                let s = std::fs::read_to_string(sandbox.join("hits")).unwrap_or_default();
                (s.matches("/ready").count() >= 2).then_some(())
            }
        })
        .await;
    let a = c.api.get("/v2/apps/slow").await.body["app"].clone();
    assert_eq!(
        a["deployments"].as_array().map(Vec::len),
        Some(1),
        "not ready: {a}"
    );
    // The deployment shows why it waits: the readiness check's last answer, on its current
    // action (reference §1.4, §5.6).
    let expected = json!([{"name": "warm", "taskId": task, "ready": false,
        "lastResponse": {"status": 503, "contentType": "text/plain", "body": "not ok"}}]);
    let expected = &expected;
    let shown = c
        .api
        .until(
            Duration::from_secs(10),
            "readinessCheckResults in /v2/deployments",
            |api| async move {
                let r = api.try_get("/v2/deployments").await?;
                let action = r.body[0]["currentActions"][0].clone();
                (action["readinessCheckResults"] == *expected).then_some(r.body)
            },
        )
        .await;
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown:#}");
    assert_eq!(shown[0]["affectedApps"], json!(["/slow"]));
    assert_eq!(shown[0]["currentActions"][0]["app"], "/slow");
    touch(&sandbox, "ready");
    app_until(
        &c,
        "/slow",
        Duration::from_secs(20),
        "the deployment to finish once ready",
        healthy_and_deployed(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_checks_and_a_dead_ones_share_moves() {
    const INTERVAL: u64 = 3;
    const TASKS: usize = 8;
    let c = cluster();
    let mut checkers = Checkers::start(&c, 3);
    wait_for_leader(&c).await;
    let server = write_server(&c);
    let app = json!({
        "id": "/fleet", "cmd": format!("python3 {} $PORT0", server.display()),
        "cpus": 0.05, "mem": 16, "instances": TASKS,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 20,
            "intervalSeconds": INTERVAL, "timeoutSeconds": 2, "maxConsecutiveFailures": 1}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &c,
        "/fleet",
        Duration::from_secs(90),
        "every task healthy",
        healthy_and_deployed(TASKS),
    )
    .await;
    let tasks: BTreeMap<String, String> = a["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| {
            let task = t["id"].as_str()?.to_string();
            let instance = parse_task_id(&task)?.instance_id.0;
            Some((instance, task))
        })
        .collect();
    assert_eq!(tasks.len(), TASKS);
    let share = |members: &[String], m: &str| -> BTreeSet<String> {
        tasks
            .keys()
            .filter(|i| check_owner(i, CheckSlot::Health(0), members) == Some(m))
            .cloned()
            .collect()
    };
    // Every replica owns exactly its rendezvous share.
    let all: Vec<String> = (0..3).map(id).collect();
    for i in 0..3 {
        let want = share(&all, &id(i)).len() as f64;
        c.api
            .until(
                Duration::from_secs(20),
                "each replica to own its share",
                |_| {
                    let checkers = &checkers;
                    async move {
                        (checkers
                            .metric(i, "stride_health_checker_checks_owned")
                            .await?
                            == want)
                            .then_some(())
                    }
                },
            )
            .await;
    }
    // Kill the replica with the largest share.
    let victim = (0..3)
        .max_by_key(|i| share(&all, &id(*i)).len())
        .unwrap_or(0);
    let moved = share(&all, &id(victim));
    assert!(!moved.is_empty());
    checkers.kill9(victim);
    let killed_at = epoch_now();
    let started = Instant::now();
    // Each of its checks runs again within two intervals.
    let survivors: Vec<String> = (0..3).filter(|i| *i != victim).map(id).collect();
    for instance in &moved {
        let sandbox = sandbox_of(&tasks[instance]).expect("sandbox");
        let within = Duration::from_secs(2 * INTERVAL).saturating_sub(started.elapsed());
        c.api
            .until(within, "the dead replica's check to run elsewhere", |_| {
                let sandbox = sandbox.clone();
                async move { hits(&sandbox).iter().any(|t| *t > killed_at).then_some(()) }
            })
            .await;
    }
    eprintln!(
        "the dead replica's {} checks all ran again {:?} after the kill",
        moved.len(),
        started.elapsed()
    );
    for i in (0..3).filter(|i| *i != victim) {
        let want = share(&survivors, &id(i)).len() as f64;
        let got = checkers
            .metric(i, "stride_health_checker_checks_owned")
            .await;
        assert_eq!(got, Some(want), "replica {i} owns its new share");
    }
    // Two more intervals: nothing healthy was killed, nothing failed.
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    let a = c.api.get("/v2/apps/fleet").await.body["app"].clone();
    let now: BTreeSet<String> = a["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(now, tasks.values().cloned().collect::<BTreeSet<_>>());
    assert_eq!(a["tasksHealthy"], TASKS);
    let store = store(&c).await;
    assert!(events(&store, "unhealthy_instance_kill_event")
        .await
        .is_empty());
    assert!(events(&store, "failed_health_check_event").await.is_empty());
    assert!(a.get("lastTaskFailure").is_none(), "{a}");
    // The leader refused nothing from the survivors for want of ownership after the move.
    for i in (0..3).filter(|i| *i != victim) {
        let accepted = checkers
            .metric(i, "stride_health_checker_results_accepted_total")
            .await;
        assert!(accepted.is_some_and(|n| n > 0.0), "replica {i} reports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_check_runs_in_the_task_on_its_agent() {
    let c = cluster();
    let _checkers = Checkers::start(&c, 1);
    wait_for_leader(&c).await;
    let app = json!({
        "id": "/cmd", "cmd": "sleep 100000", "cpus": 0.05, "mem": 16, "instances": 1,
        "healthChecks": [{"protocol": "COMMAND",
            "command": {"value": "test ! -e \"$MESOS_SANDBOX/fail\" || { echo broken; exit 3; }"},
            "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5,
            "maxConsecutiveFailures": 2, "delaySeconds": 0}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &c,
        "/cmd",
        Duration::from_secs(60),
        "the COMMAND check to pass",
        healthy_and_deployed(1),
    )
    .await;
    let old = a["tasks"][0]["id"].as_str().expect("task id").to_string();
    touch(&sandbox_of(&old).expect("sandbox"), "fail");
    let a = app_until(
        &c,
        "/cmd",
        Duration::from_secs(60),
        "the task to be killed by its COMMAND check and replaced",
        |a| {
            a["tasksHealthy"] == 1
                && a["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["id"] != old.as_str())
        },
    )
    .await;
    assert_eq!(a["lastTaskFailure"]["taskId"], old.as_str());
    assert_eq!(
        a["lastTaskFailure"]["message"],
        "Task was killed since health check failed. Reason: broken"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checking_follows_the_leader_across_a_failover() {
    use stride_proto::v1::health_reports_client::HealthReportsClient;
    use stride_proto::v1::HealthReportBatch;

    let mut c = Cluster::start(2, 0);
    add_agent(&mut c, 0);
    let _checkers = Checkers::start(&c, 1);
    wait_for_leader(&c).await;
    let leader = c.leader_index().await.expect("a leader");
    let follower = 1 - leader;

    // A scheduler that does not lead refuses reports and names the leader.
    // The follower may still be binding its port when the leader is already elected.
    let follower_url = format!("http://127.0.0.1:{}", c.scheduler_ports[follower]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match HealthReportsClient::connect(follower_url.clone()).await {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => {
                panic!("the follower did not listen within 20 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let refused = client
        .report(HealthReportBatch {
            replica_id: "x".into(),
            ..HealthReportBatch::default()
        })
        .await
        .expect_err("a follower refuses");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        refused
            .metadata()
            .get("x-stride-leader")
            .and_then(|v| v.to_str().ok()),
        Some(format!("127.0.0.1:{}", c.scheduler_ports[leader]).as_str())
    );

    let server = write_server(&c);
    let app = json!({
        "id": "/ha", "cmd": format!("python3 {} $PORT0", server.display()),
        "cpus": 0.1, "mem": 32, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 10,
            "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}]
    });
    let r = c.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &c,
        "/ha",
        Duration::from_secs(60),
        "the task to be healthy",
        healthy_and_deployed(1),
    )
    .await;
    let old = a["tasks"][0]["id"].as_str().expect("task id").to_string();

    // The leader dies; the other scheduler takes over, the records survive, and the checker's
    // results reach the new leader, which kills the task once it fails.
    c.schedulers[leader].kill9();
    c.api
        .until(
            Duration::from_secs(30),
            "the other scheduler to lead",
            |_| async { (c.leader_index().await == Some(follower)).then_some(()) },
        )
        .await;
    let a = c.api.get("/v2/apps/ha").await.body["app"].clone();
    assert_eq!(a["tasks"][0]["healthCheckResults"][0]["alive"], true, "{a}");
    touch(&sandbox_of(&old).expect("sandbox"), "fail");
    let a = app_until(
        &c,
        "/ha",
        Duration::from_secs(90),
        "the new leader to replace the failing task",
        |a| {
            a["tasksHealthy"] == 1
                && a["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["id"] != old.as_str())
        },
    )
    .await;
    assert_eq!(a["lastTaskFailure"]["taskId"], old.as_str());
}
