//! Faults, and what Stride does about them: each test breaks a real cluster (real binaries, a
//! real Redis, real tasks) and measures how long it takes to recover and what, if anything, was
//! lost. The figures are printed (`RECOVERY | fault | what | seconds`) and appended to
//! `target/faults/recovery.txt`; docs/operations.md tabulates them.
//!
//! Covered elsewhere and not repeated here: a paused leader's gRPC write refused after it wakes
//! (`fencing.rs`), a lost agent's instances replaced and its return reconciled (`lifecycle.rs`),
//! one of three health checkers killed (`health.rs`). The partitions need root for iptables; the
//! compose test needs a Docker Engine; each prints why when it skips.

#[path = "../faults/mod.rs"]
mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faults::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use stride_core::instance::parse_task_id;
use stride_core::rendezvous::{check_owner, CheckSlot};
use stride_proto::v1::{
    app_change, control_client::ControlClient, AppChange, DeployRequest, RunSpecJson,
};
use stride_store::{RedisStore, StateStore};
use stride_tests::{pids_of_task, process_alive};

/// The main process of each task (the leader of its process group), by task id: the same pid
/// later means the task was not restarted. (Other processes with the task's environment may
/// come and go: a shell's short-lived children.)
fn pids(ids: &BTreeSet<String>) -> BTreeMap<String, Vec<i32>> {
    ids.iter().map(|id| (id.clone(), main_pid(id))).collect()
}

fn main_pid(task: &str) -> Vec<i32> {
    pids_of_task(task)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().nth(2).map(str::to_string))
                })
                .flatten()
                .is_some_and(|pgrp| pgrp == pid.to_string())
        })
        .collect()
}

/// The tasks of `app`, by the API.
async fn ids_of(stack: &Stack, app: &str) -> BTreeSet<String> {
    task_ids(&stack.api.get(&format!("/v2/apps{app}")).await.body["app"])
}

/// Posts until the gateway and the leader behind it accept (201); how long that took.
async fn first_write(stack: &Stack, id: &str, within: Duration) -> Duration {
    let body = json!({"id": id, "cmd": "sleep 100000", "cpus": 0.01, "mem": 8, "instances": 0})
        .to_string();
    timed(within, &format!("POST {id} to be accepted"), || {
        let body = body.clone();
        async move {
            try_call(&stack.api, "POST", "/v2/apps", Some(&body))
                .await
                .is_some_and(|(s, _)| s == 201)
        }
    })
    .await
}

/// Lines of a process's log that contain `needle`.
fn log_count(p: &stride_tests::Proc, needle: &str) -> usize {
    p.log_text().lines().filter(|l| l.contains(needle)).count()
}

/// Stepping down, as the elector and persister log it.
fn step_downs(p: &stride_tests::Proc) -> usize {
    log_count(p, "stepping down") + log_count(p, "write fenced")
}

async fn store(stack: &Stack) -> Arc<dyn StateStore> {
    Arc::new(
        RedisStore::connect(&stack.redis.url(), "stride")
            .await
            .unwrap_or_else(|e| panic!("redis: {e}")),
    )
}

/// Every stored event of `event_type`.
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

/// An app of the test server with an HTTP health check.
fn web_app(stack: &Stack, id: &str, instances: usize, delay: f64, interval: u64) -> Value {
    json!({
        "id": id,
        // `exec`: the server itself gets the SIGTERM and drains; under a shell that dies at
        // once, the agent would SIGKILL the rest of the process group, Mesos-style.
        "cmd": format!("exec python3 {} --delay {delay} $PORT0", stack.server_script().display()),
        "cpus": 0.05, "mem": 16, "instances": instances,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": interval, "timeoutSeconds": 1,
            "maxConsecutiveFailures": 3}],
    })
}

// ---------------------------------------------------------------------------------------------

/// The leader killed during a deployment, paused past its lease, cut off from Redis; then Redis
/// itself killed and restarted from its append-only file. One cluster throughout: after each
/// fault it is whole again (the killed scheduler restarted as a standby).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_redis_faults_lose_nothing() {
    let mut stack = Stack::start(Spec {
        schedulers: 2,
        agents: 2,
        checkers: 1,
        ..Spec::default()
    })
    .await;
    let lease_ttl = Duration::from_secs(2);

    // Something long-running that no fault may touch.
    let steady =
        json!({"id": "/steady", "cmd": "sleep 100000", "cpus": 0.01, "mem": 8, "instances": 3});
    let r = stack.api.post("/v2/apps", &steady.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let steady_app = app_until(
        &stack.api,
        "/steady",
        Duration::from_secs(60),
        "/steady to run",
        settled(3, false),
    )
    .await;
    let steady_ids = task_ids(&steady_app);
    let steady_pids = pids(&steady_ids);
    assert!(
        steady_pids.values().all(|p| !p.is_empty()),
        "{steady_pids:?}"
    );

    // 1. kill -9 of the leader during a deployment. Each task of /slow listens only 2 s after
    // it starts, so its deployment (done when all four are healthy) is still running when the
    // leader dies.
    let fault = "kill -9 of the leader during a deployment";
    let (old, old_epoch) = stack.leader_within(Duration::from_secs(20)).await;
    let r = stack
        .api
        .post("/v2/apps", &web_app(&stack, "/slow", 4, 2.0, 1).to_string())
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let launched = stack
        .api
        .until(
            Duration::from_secs(30),
            "a first /slow task to be launched",
            |api| async move {
                let a = api.try_get("/v2/apps/slow").await?.body["app"].clone();
                let open = a["deployments"].as_array().is_some_and(|d| !d.is_empty());
                let ids = task_ids(&a);
                let started: BTreeSet<String> = ids
                    .into_iter()
                    .filter(|id| !pids_of_task(id).is_empty())
                    .collect();
                (open && !started.is_empty()).then_some(started)
            },
        )
        .await;
    let launched_pids = pids(&launched);
    stack.schedulers[old].kill9();
    let killed = Instant::now();
    let standby = timed(
        Duration::from_secs(10),
        "the standby to take the lease",
        || async {
            stack
                .leader()
                .await
                .is_some_and(|(i, e)| i != old && e > old_epoch)
        },
    )
    .await;
    let writes = first_write(&stack, "/probe-1", Duration::from_secs(20)).await + standby;
    figure(fault, "standby holds the lease", standby);
    figure(fault, "standby accepts writes", writes);
    assert!(
        standby <= Duration::from_secs(3),
        "a standby leads within 3 s, took {standby:?}"
    );
    let slow = app_until(
        &stack.api,
        "/slow",
        Duration::from_secs(60),
        "the deployment to finish under the new leader",
        settled(4, true),
    )
    .await;
    figure(fault, "the deployment finished", killed.elapsed());
    let final_slow = task_ids(&slow);
    assert!(
        launched.is_subset(&final_slow),
        "tasks launched before the kill kept: {launched:?} in {final_slow:?}"
    );
    for (id, p) in &launched_pids {
        assert_eq!(&main_pid(id), p, "task {id} was not restarted");
    }
    assert_eq!(ids_of(&stack, "/steady").await, steady_ids);
    note(
        fault,
        &format!(
            "{} tasks launched before the kill kept their processes; nothing restarted",
            launched.len()
        ),
    );
    stack.restart_scheduler(old);

    // 2. The leader paused (SIGSTOP) past its lease, then resumed. `fencing.rs` proves a write
    // it was asked for is refused; here the new leader changes what the paused one believes
    // (/steady grows to 4), and the resumed one must act on none of its stale state.
    let fault = "leader paused (SIGSTOP) past its lease";
    let (paused, paused_epoch) = stack.leader_within(Duration::from_secs(20)).await;
    let downs_before = step_downs(&stack.schedulers[paused]);
    stack.schedulers[paused].signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let standby = timed(
        Duration::from_secs(10),
        "the standby to take the expired lease",
        || async {
            stack
                .leader()
                .await
                .is_some_and(|(i, e)| i != paused && e > paused_epoch)
        },
    )
    .await;
    figure(fault, "standby holds the lease", standby);
    assert!(
        standby <= Duration::from_secs(3),
        "a standby leads within 3 s, took {standby:?}"
    );
    let r = stack
        .api
        .until(
            Duration::from_secs(10),
            "the new leader to scale /steady",
            |api| async move {
                let r =
                    try_call(&api, "PUT", "/v2/apps/steady", Some(r#"{"instances":4}"#)).await?;
                (r.0 == 200).then_some(r)
            },
        )
        .await;
    assert!(r.1["deploymentId"].is_string(), "{}", r.1);
    let four = task_ids(
        &app_until(
            &stack.api,
            "/steady",
            Duration::from_secs(30),
            "/steady at 4",
            settled(4, false),
        )
        .await,
    );
    tokio::time::sleep((lease_ttl * 2).saturating_sub(stopped.elapsed())).await;
    stack.schedulers[paused].signal(Signal::SIGCONT);
    let woke = timed(
        Duration::from_secs(10),
        "the resumed scheduler to step down",
        || async { step_downs(&stack.schedulers[paused]) > downs_before },
    )
    .await;
    figure(fault, "resumed leader steps down", woke);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (now, _) = stack.leader().await.expect("a leader");
    assert_ne!(
        now, paused,
        "the resumed scheduler did not take leadership back"
    );
    assert_eq!(
        ids_of(&stack, "/steady").await,
        four,
        "the stale leader killed nothing it thought surplus"
    );
    assert!(
        four.iter().all(|id| !pids_of_task(id).is_empty()),
        "every /steady task still runs"
    );
    note(
        fault,
        "the resumed leader wrote nothing and killed nothing; /steady kept its 4 tasks",
    );

    // 3. The leader cut off from Redis (it still reaches agents and gateways): it must step down
    // within its lease, a standby lead, and nothing it is asked meanwhile may take effect.
    match Firewall::new() {
        Err(why) => eprintln!("SKIPPED the leader-Redis partition: {why}"),
        Ok(mut fw) => {
            let fault = "leader cut off from Redis";
            let (cut, cut_epoch) = stack.leader_within(Duration::from_secs(20)).await;
            let downs_before = step_downs(&stack.schedulers[cut]);
            let mut client =
                ControlClient::connect(format!("http://127.0.0.1:{}", stack.scheduler_ports[cut]))
                    .await
                    .expect("the leader's gRPC answers");
            fw.cut(
                "leader-redis",
                stack.gid(SCHEDULER_GID + cut as u32),
                &[stack.redis.port],
            );
            let t0 = Instant::now();
            let down = timed(
                Duration::from_secs(10),
                "the cut-off leader to step down",
                || async { step_downs(&stack.schedulers[cut]) > downs_before },
            )
            .await;
            figure(fault, "old leader steps down", down);
            assert!(
                down <= lease_ttl,
                "the cut-off leader steps down within its lease ({lease_ttl:?}), took {down:?}"
            );
            timed(
                Duration::from_secs(10),
                "the standby to take the lease",
                || async {
                    stack
                        .leader()
                        .await
                        .is_some_and(|(i, e)| i != cut && e > cut_epoch)
                },
            )
            .await;
            let standby = t0.elapsed();
            figure(fault, "standby holds the lease", standby);
            // Straight to the deposed leader, as a gateway with a stale view would.
            let asked = tokio::time::timeout(
                Duration::from_secs(15),
                client.deploy(DeployRequest {
                    dry_run: false,
                    changes: vec![AppChange {
                        change: Some(app_change::Change::Create(RunSpecJson {
                            json: r#"{"id":"/split-brain","cmd":"sleep 1000","cpus":0.01,"mem":8}"#
                                .into(),
                        })),
                    }],
                    force: false,
                    origin: None,
                }),
            )
            .await;
            assert!(
                !matches!(asked, Ok(Ok(_))),
                "the cut-off scheduler must not accept a change: {asked:?}"
            );
            first_write(&stack, "/probe-2", Duration::from_secs(20)).await;
            figure(fault, "standby accepts writes", t0.elapsed());
            fw.heal("leader-redis");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let r = stack.api.get("/v2/apps/split-brain").await;
            assert_eq!(
                r.status, 404,
                "nothing the cut-off leader was asked took effect: {}",
                r.text
            );
            let (now, _) = stack.leader().await.expect("a leader");
            assert_ne!(now, cut, "healing does not hand leadership back");
            assert_eq!(ids_of(&stack, "/steady").await, four);
            assert!(four.iter().all(|id| !pids_of_task(id).is_empty()));
            note(
                fault,
                "no split brain: the cut-off leader's write was refused, no task was touched",
            );
        }
    }

    // 4. Redis killed (-9) and, after more than a lease, started again from its append-only
    // file: no state lost, every process reconnects.
    let fault = "Redis killed and restarted (append-only file)";
    let apps_before: BTreeMap<String, Value> = stack.api.get("/v2/apps").await.body["apps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or("").to_string(),
                a["version"].clone(),
            )
        })
        .collect();
    let slow_ids = ids_of(&stack, "/slow").await;
    let slow_pids = pids(&slow_ids);
    let steady_pids = pids(&four);
    let last_event = resp_sync(
        stack.redis.port,
        &["XREVRANGE", "stride:events", "+", "-", "COUNT", "1"],
    )
    .unwrap_or_default();
    // "*1 *2 $<n> <id> *2 ..." in RESP: the first line shaped like a stream id.
    let last_event_id = last_event
        .lines()
        .find(|l| {
            l.split_once('-')
                .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
        })
        .unwrap_or("")
        .to_string();
    assert!(
        !last_event_id.is_empty(),
        "events before the restart: {last_event:?}"
    );
    let (_, epoch_before) = stack.leader().await.expect("a leader");
    stack.redis.kill9();
    tokio::time::sleep(lease_ttl + Duration::from_secs(1)).await;
    stack.redis.restart();
    let t0 = Instant::now();
    let led = timed(
        Duration::from_secs(30),
        "a leader after Redis is back",
        || async { stack.leader().await.is_some_and(|(_, e)| e > epoch_before) },
    )
    .await;
    figure(fault, "a scheduler leads again", led);
    first_write(&stack, "/after-redis", Duration::from_secs(30)).await;
    figure(fault, "first write accepted", t0.elapsed());
    // The creation's own (empty) deployment may still be open for a moment: 409 until then.
    stack
        .api
        .until(
            Duration::from_secs(10),
            "the scale-up of /after-redis accepted",
            |api| async move {
                let r = api.put("/v2/apps/after-redis", r#"{"instances":1}"#).await;
                assert!(r.status == 200 || r.status == 409, "{}", r.text);
                (r.status == 200).then_some(())
            },
        )
        .await;
    app_until(
        &stack.api,
        "/after-redis",
        Duration::from_secs(30),
        "a new app to run after the restart",
        settled(1, false),
    )
    .await;
    figure(fault, "a new app runs", t0.elapsed());
    // Every app with the version it had; the same tasks, the same processes; the health checker
    // reports again; the event stream kept its history.
    let apps_after: BTreeMap<String, Value> = stack.api.get("/v2/apps").await.body["apps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["id"] != "/after-redis")
        .map(|a| {
            (
                a["id"].as_str().unwrap_or("").to_string(),
                a["version"].clone(),
            )
        })
        .collect();
    assert_eq!(
        apps_after, apps_before,
        "every app survived with its version"
    );
    let slow = app_until(
        &stack.api,
        "/slow",
        Duration::from_secs(30),
        "/slow healthy again",
        settled(4, true),
    )
    .await;
    assert_eq!(task_ids(&slow), slow_ids, "the same /slow tasks");
    assert_eq!(pids(&slow_ids), slow_pids, "no /slow task restarted");
    assert_eq!(pids(&four), steady_pids, "no /steady task restarted");
    assert_eq!(ids_of(&stack, "/steady").await, four);
    let kept = resp_sync(
        stack.redis.port,
        &["XRANGE", "stride:events", &last_event_id, &last_event_id],
    )
    .unwrap_or_default();
    assert!(
        kept.contains(&last_event_id),
        "the event stream kept its history: {kept:?}"
    );
    let (checked, _) = timed_count(&stack).await;
    note(
        fault,
        &format!(
            "{} apps with their versions, {} tasks with their ids and processes, the event stream: all kept; \
             health checker reporting again ({checked} results accepted)",
            apps_after.len(),
            four.len() + slow_ids.len()
        ),
    );
}

/// Results the health checker's leader accepted so far (waits until it reports at all).
async fn timed_count(stack: &Stack) -> (f64, Duration) {
    let started = Instant::now();
    let before = stack
        .checker_metric(0, "stride_health_checker_results_accepted_total")
        .await
        .unwrap_or(0.0);
    let after = stack
        .api
        .until(
            Duration::from_secs(20),
            "the health checker to report again",
            |_| async {
                let n = stack
                    .checker_metric(0, "stride_health_checker_results_accepted_total")
                    .await?;
                (n > before).then_some(n)
            },
        )
        .await;
    (after, started.elapsed())
}

// ---------------------------------------------------------------------------------------------

/// An agent cut off from everything, then a health checker cut off, then health checkers
/// scaled up while checks run. One cluster: one scheduler, three agents, two checkers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_an_agent_and_a_health_checker_and_scaling_checkers() {
    let mut fw = match Firewall::new() {
        Ok(fw) => fw,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let mut stack = Stack::start(Spec {
        schedulers: 1,
        agents: 3,
        checkers: 2,
        ..Spec::default()
    })
    .await;
    const INTERVAL: u64 = 2;
    const N: usize = 6;
    let mut app = web_app(&stack, "/fleet", N, 0.0, INTERVAL);
    // Marathon's unreachableStrategy: replace an unreachable instance after 1 s inactive,
    // forget it after 10 min (so the returning agent's copy is recognised and killed).
    app["unreachableStrategy"] = json!({"inactiveAfterSeconds": 1, "expungeAfterSeconds": 600});
    // At most three per agent: the instances are spread, and the others have room for
    // replacements.
    app["constraints"] = json!([["rack_id", "MAX_PER", "3"]]);
    let r = stack.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = app_until(
        &stack.api,
        "/fleet",
        Duration::from_secs(90),
        "/fleet healthy",
        settled(N, true),
    )
    .await;
    let store = store(&stack).await;

    // 1. An agent cut off (it and its tasks): its instances become unreachable and are replaced
    // as unreachableStrategy says; when it returns, reconciliation leaves exactly N.
    let fault = "an agent cut off from the network";
    let by_agent = |a: &Value, agent: &str| -> BTreeSet<String> {
        a["tasks"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter(|x| x["slaveId"] == agent)
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (victim, lost) = (0..3)
        .map(|i| (i, by_agent(&a, &format!("agent-{i}"))))
        .max_by_key(|(_, t)| t.len())
        .expect("three agents");
    assert!(!lost.is_empty());
    let lost_pids: Vec<i32> = lost.iter().flat_map(|id| pids_of_task(id)).collect();
    fw.cut("agent", stack.gid(AGENT_GID + victim as u32), &[]);
    let t0 = Instant::now();
    let lost_ref = &lost;
    stack
        .api
        .until(
            Duration::from_secs(40),
            "the cut-off agent's tasks to be unreachable",
            |api| async move {
                let a = api.try_get("/v2/apps/fleet").await?.body["app"].clone();
                let t = a["tasks"].as_array()?.clone();
                t.iter()
                    .filter(|x| x["id"].as_str().is_some_and(|id| lost_ref.contains(id)))
                    .all(|x| x["state"] == "TASK_UNREACHABLE")
                    .then_some(())
            },
        )
        .await;
    figure(fault, "its instances unreachable", t0.elapsed());
    let victim_id = format!("agent-{victim}");
    let victim_ref = victim_id.as_str();
    stack
        .api
        .until(
            Duration::from_secs(60),
            "replacements on the other agents",
            |api| async move {
                let a = api.try_get("/v2/apps/fleet").await?.body["app"].clone();
                let t = a["tasks"].as_array()?.clone();
                let serving = t
                    .iter()
                    .filter(|x| x["slaveId"] != victim_ref && x["state"] == "TASK_RUNNING")
                    .filter(|x| x["healthCheckResults"][0]["alive"] == true)
                    .count();
                (serving == N).then_some(())
            },
        )
        .await;
    figure(fault, "replaced, healthy elsewhere", t0.elapsed());
    assert!(
        lost_pids.iter().all(|p| process_alive(*p)),
        "the cut-off agent's tasks still run there"
    );
    fw.heal("agent");
    let t1 = Instant::now();
    // Marathon's rules from here: an instance back before `expungeAfterSeconds` counts again, so
    // the app has too many and the surplus goes by its killSelection (YOUNGEST_FIRST: some
    // replacements). Whatever goes, exactly N remain, and no process of any other task.
    let all_before: BTreeSet<String> = lost
        .union(&task_ids(
            &stack.api.get("/v2/apps/fleet").await.body["app"],
        ))
        .cloned()
        .collect();
    let mut last = Value::Null;
    let a = loop {
        let a = stack.api.get("/v2/apps/fleet").await.body["app"].clone();
        let kept = task_ids(&a);
        let strays: Vec<&String> = all_before
            .iter()
            .filter(|t| !kept.contains(*t) && !pids_of_task(t).is_empty())
            .collect();
        if settled(N, true)(&a) && strays.is_empty() {
            break a;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "exactly {N} healthy instances and no stray process after the agent returned; strays {strays:?}, app:\n{last:#}"
        );
        last = a;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    figure(fault, "reconciled after it returns", t1.elapsed());
    let survivors = task_ids(&a).intersection(&lost).count();
    note(
        fault,
        &format!(
            "{} instances replaced per unreachableStrategy; on return exactly {N} remain ({survivors} of the returning ones kept, YOUNGEST_FIRST)",
            lost.len()
        ),
    );

    // 2. A health checker cut off: it gives its checks up once its heartbeat has gone
    // unconfirmed for its lease, and the other takes them within the membership TTL; when it
    // returns (under a new registration), nothing it found while cut off, and nothing it could
    // not check, is held against any task.
    let fault = "a health checker cut off";
    let tasks: BTreeMap<String, String> = task_ids(&a)
        .into_iter()
        .filter_map(|t| Some((parse_task_id(&t)?.instance_id.0, t)))
        .collect();
    let members: Vec<String> = (0..2).map(checker_id).collect();
    let owned_by_1: Vec<&String> = tasks
        .keys()
        .filter(|i| check_owner(i, CheckSlot::Health(0), &members) == Some("checker-1"))
        .collect();
    let kills_before = events(&store, "unhealthy_instance_kill_event").await.len();
    let failed_before = events(&store, "failed_health_check_event").await.len();
    fw.cut("checker", stack.gid(CHECKER_GID + 1), &[]);
    let cut_at = epoch_now();
    let t0 = Instant::now();
    for instance in &owned_by_1 {
        let sandbox = sandbox_of(&tasks[*instance]).expect("sandbox");
        stack
            .api
            .until(
                Duration::from_secs(20),
                "the cut-off checker's checks to run on the other",
                |_| {
                    let sandbox = sandbox.clone();
                    async move {
                        hits(&sandbox)
                            .iter()
                            .any(|t| *t > cut_at + 0.5)
                            .then_some(())
                    }
                },
            )
            .await;
    }
    figure(fault, "its checks run on the other replica", t0.elapsed());
    let lapsed = "membership lapsed: dropping every check";
    stack
        .api
        .until(
            Duration::from_secs(10),
            "the cut-off checker to give its checks up",
            |_| async { (log_count(&stack.checkers[&1], lapsed) > 0).then_some(()) },
        )
        .await;
    let registered = log_count(&stack.checkers[&1], "registered in the membership");
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    fw.heal("checker");
    let t1 = Instant::now();
    let (share1, share0) = (
        owned_by_1.len() as f64,
        (tasks.len() - owned_by_1.len()) as f64,
    );
    stack
        .api
        .until(
            Duration::from_secs(30),
            "the returning checker to take its share back",
            |_| async {
                let one = stack
                    .checker_metric(1, "stride_health_checker_checks_owned")
                    .await?;
                let zero = stack
                    .checker_metric(0, "stride_health_checker_checks_owned")
                    .await?;
                (one == share1 && zero == share0).then_some(())
            },
        )
        .await;
    figure(fault, "back in its share after it returns", t1.elapsed());
    assert!(
        log_count(&stack.checkers[&1], "registered in the membership") > registered,
        "the returning checker registered again"
    );
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL)).await;
    let now = app_until(
        &stack.api,
        "/fleet",
        Duration::from_secs(10),
        "/fleet healthy",
        settled(N, true),
    )
    .await;
    assert_eq!(task_ids(&now), task_ids(&a), "no task was replaced");
    assert_eq!(
        events(&store, "unhealthy_instance_kill_event").await.len(),
        kills_before,
        "nothing killed"
    );
    let failed: Vec<Value> = events(&store, "failed_health_check_event")
        .await
        .into_iter()
        .skip(failed_before)
        .collect();
    assert!(
        failed.is_empty(),
        "no check may fail for want of a checker (cut at {cut_at:.3}, healed {:.3} s later): {failed:#?}",
        t1.duration_since(t0).as_secs_f64()
    );
    note(
        fault,
        &format!(
            "{} checks moved and came back; no failed check, no kill",
            owned_by_1.len()
        ),
    );

    // 3. Health checkers scaled from two to four while checks run: each new replica takes its
    // rendezvous share, no check is skipped for more than an interval or two, none fails.
    let fault = "health checkers scaled 2 -> 4 while checks run";
    let from = epoch_now();
    stack.add_checker(2);
    stack.add_checker(3);
    let t0 = Instant::now();
    let members: Vec<String> = (0..4).map(checker_id).collect();
    for i in 0..4 {
        let want = tasks
            .keys()
            .filter(|k| {
                check_owner(k, CheckSlot::Health(0), &members) == Some(checker_id(i).as_str())
            })
            .count() as f64;
        stack
            .api
            .until(
                Duration::from_secs(30),
                "each replica to own its share of four",
                |_| async {
                    (stack
                        .checker_metric(i, "stride_health_checker_checks_owned")
                        .await?
                        == want)
                        .then_some(())
                },
            )
            .await;
    }
    figure(fault, "shares rebalanced", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL)).await;
    let to = epoch_now();
    let mut worst: f64 = 0.0;
    for task in tasks.values() {
        let sandbox = sandbox_of(task).expect("sandbox");
        let mut times: Vec<f64> = hits(&sandbox)
            .into_iter()
            .filter(|t| *t >= from - INTERVAL as f64)
            .collect();
        times.sort_by(f64::total_cmp);
        times.push(to);
        let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        worst = worst.max(gap);
    }
    note(fault, &format!("longest gap between two checks of one task while scaling: {worst:.1} s (interval {INTERVAL} s)"));
    assert!(
        worst <= 2.0 * INTERVAL as f64 + 1.0,
        "checks kept running while scaling: longest gap {worst:.1} s"
    );
    let now = app_until(
        &stack.api,
        "/fleet",
        Duration::from_secs(10),
        "/fleet healthy",
        settled(N, true),
    )
    .await;
    assert_eq!(task_ids(&now), task_ids(&a));
    assert_eq!(
        events(&store, "unhealthy_instance_kill_event").await.len(),
        kills_before
    );
    assert_eq!(
        events(&store, "failed_health_check_event").await.len(),
        failed_before
    );
    for i in 0..4 {
        let owned = stack
            .checker_metric(i, "stride_health_checker_checks_owned")
            .await
            .unwrap_or(0.0);
        let accepted = stack
            .checker_metric(i, "stride_health_checker_results_accepted_total")
            .await;
        // Six checks over four replicas: a replica may own none.
        assert!(
            owned == 0.0 || accepted.is_some_and(|n| n > 0.0),
            "replica {i} reports its {owned} checks"
        );
    }
}

// ---------------------------------------------------------------------------------------------

/// A rolling restart of a four-instance app under a steady request loop through the HAProxy
/// lb-sync runs: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_through_haproxy_fails_no_request() {
    let stack = Stack::start(Spec {
        schedulers: 1,
        agents: 2,
        checkers: 1,
        lb_sync: true,
        ..Spec::default()
    })
    .await;
    let fault = "rolling restart of 4 instances behind HAProxy";
    let vhost = "web.faults.test";
    let mut app = web_app(&stack, "/web", 4, 0.0, 1);
    app["labels"] = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": vhost});
    // A service port of our own: HAProxy binds it, and the default (10000) may be taken by
    // another test's HAProxy on this machine.
    app["portDefinitions"] = json!([{"port": quiet_port(), "name": "http"}]);
    app["upgradeStrategy"] = json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5});
    app["taskKillGracePeriodSeconds"] = json!(5);
    let r = stack.api.post("/v2/apps", &app.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let before = task_ids(
        &app_until(
            &stack.api,
            "/web",
            Duration::from_secs(60),
            "/web healthy",
            settled(4, true),
        )
        .await,
    );
    let lb = stack.lb.as_ref().expect("lb-sync");
    let url = format!("http://127.0.0.1:{}/", lb.http_port);
    // Keep-alive to HAProxy as browsers do, but with an idle timeout below HAProxy's
    // `timeout http-keep-alive 1s`: a client reusing a connection the server is closing for
    // idleness fails with or without a restart, and would measure nothing about Stride.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    // Every instance serves through HAProxy before the load starts.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "HAProxy to serve all four instances; saw {seen:?}"
        );
        if let Ok(r) = client.get(&url).header("Host", vhost).send().await {
            if r.status().is_success() {
                seen.insert(r.text().await.unwrap_or_default());
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, before, "the answers name the tasks");
    let old_sandboxes: Vec<std::path::PathBuf> = before
        .iter()
        .map(|t| sandbox_of(t).expect("sandbox"))
        .collect();

    // The load: two clients, one request after another each.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(failures::Failures::default());
    let slowest = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (client, url, stop, ok, failures, slowest) = (
            client.clone(),
            url.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
            slowest.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut answered = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match client.get(&url).header("Host", vhost).send().await {
                    Ok(r) if r.status().is_success() => {
                        answered.insert(r.text().await.unwrap_or_default());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("HTTP {}", r.status())),
                    Err(e) => failures.push(format!("{:.3} {e:?}", epoch_now())),
                }
                slowest.fetch_max(sent.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let r = stack.api.post("/v2/apps/web/restart", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before_ref = &before;
    let after = stack
        .api
        .until(
            Duration::from_secs(120),
            "the rolling restart to finish",
            |api| async move {
                let a = api.try_get("/v2/apps/web").await?.body["app"].clone();
                (settled(4, true)(&a) && task_ids(&a).is_disjoint(before_ref)).then(|| task_ids(&a))
            },
        )
        .await;
    let restart = t0.elapsed();
    // Requests keep flowing to the new tasks for a while after the deployment ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = BTreeSet::new();
    for w in workers {
        answered.extend(w.await.unwrap_or_default());
    }
    let failed = failures.take();
    let total = ok.load(Ordering::Relaxed);
    figure(
        fault,
        "the restart (all four replaced and healthy)",
        restart,
    );
    // How long after its SIGTERM each old task still got traffic: lb-sync's delay in taking a
    // killed task out of HAProxy, which an app's drain time must cover.
    let routed_after_term = old_sandboxes
        .iter()
        .filter_map(|s| {
            let term = term_time(s)?;
            let last = hits_on(s, "/").into_iter().fold(f64::MIN, f64::max);
            Some((last - term).max(0.0))
        })
        .fold(0.0, f64::max);
    figure(
        fault,
        "HAProxy stops routing to a killed task (after its SIGTERM)",
        Duration::from_secs_f64(routed_after_term),
    );
    assert!(
        routed_after_term < 1.0,
        "lb-sync took a killed task out within its 1 s drain: {routed_after_term:.3} s"
    );
    note(
        fault,
        &format!(
            "{total} requests answered, {} failed, slowest {} ms",
            failed.len(),
            slowest.load(Ordering::Relaxed)
        ),
    );
    if !failed.is_empty() {
        let lb = stack
            .lb
            .as_ref()
            .map(|l| l.proc.log_text())
            .unwrap_or_default();
        eprintln!("===== lb-sync =====\n{lb}");
        let cfg =
            std::fs::read_to_string(stack.dir.path().join("lb/haproxy.cfg")).unwrap_or_default();
        eprintln!("===== haproxy.cfg =====\n{cfg}");
    }
    assert!(
        failed.is_empty(),
        "no request may fail during a rolling restart: {failed:?}"
    );
    assert!(total > 50, "the loop ran: {total} requests");
    assert!(
        after.is_subset(&answered),
        "every new task served through HAProxy: {after:?} vs {answered:?}"
    );
}

/// A tiny shared list of failures (std only).
mod failures {
    #[derive(Default)]
    pub struct Failures(std::sync::Mutex<Vec<String>>);
    impl Failures {
        pub fn push(&self, f: String) {
            if let Ok(mut v) = self.0.lock() {
                v.push(f);
            }
        }
        pub fn take(&self) -> Vec<String> {
            self.0
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default()
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// docker-compose.yml brought up from the images built here; the demo deployed through it; its
/// leader's container killed. Skipped only where no Docker Engine answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_bring_up_runs_the_demo_and_survives_its_leader() {
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: no Docker Engine answers `docker info`");
        return;
    }
    let started = Instant::now();
    let compose = compose::Compose::up();
    let fault = "compose: kill -9 of the leader's container";
    let api = compose.api();
    api.until(
        Duration::from_secs(60),
        "the compose API to name a leader",
        |api| async move { (api.try_get("/v2/leader").await?.status == 200).then_some(()) },
    )
    .await;
    figure(
        "compose",
        "image (if changed) built, up, a leader named",
        started.elapsed(),
    );

    // The demo, as a user runs it.
    let out = Command::new(compose.root.join("scripts/demo"))
        .envs(compose.demo_env())
        .output()
        .expect("scripts/demo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/demo failed:\n{text}\n{}",
        compose.logs()
    );
    eprintln!("{text}");
    assert!(text.contains("curl -H 'Host: web.stride.test'"), "{text}");
    figure(
        "compose",
        "scripts/demo done (web app healthy behind HAProxy, group deployed)",
        started.elapsed(),
    );

    // HAProxy serves the vhost from all three instances; DNS names them.
    let answers = compose.vhost_answers("web.stride.test", 12).await;
    assert_eq!(
        answers.len(),
        3,
        "three instances answer through HAProxy: {answers:?}"
    );
    if let Some(ips) = compose.dig("web-demo.marathon.mesos") {
        assert_eq!(ips.len(), 3, "three A records: {ips:?}");
    }
    // The group deployed in dependency order: each app's first task started after the last
    // task of what it depends on (RFC 3339 times in one format compare as text).
    let starts = |app: &str| -> Vec<String> {
        let mut t: Vec<String> = compose.get(&format!("/v2/apps/demo/shop/{app}"))["app"]["tasks"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x["startedAt"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        t.sort();
        t
    };
    let (db, api_, frontend) = (starts("db"), starts("api"), starts("frontend"));
    assert!(
        !db.is_empty() && !api_.is_empty() && !frontend.is_empty(),
        "{db:?} {api_:?} {frontend:?}"
    );
    assert!(
        db.last() <= api_.first() && api_.last() <= frontend.first(),
        "dependency order: {db:?} {api_:?} {frontend:?}"
    );

    // Scale the health checkers to three.
    compose.run(&["up", "-d", "--no-recreate", "--scale", "health-checker=3"]);
    let members = Instant::now();
    while compose.redis(&["HLEN", "stride:c:health-checkers"]).trim() != "3" {
        assert!(
            members.elapsed() < Duration::from_secs(30),
            "three health checkers registered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kill the leader's container: the other scheduler leads within 3 s, no task restarts.
    let web_before = compose.task_ids("/demo/web");
    let lease = compose.redis(&["GET", "stride:lease"]);
    let leader = lease.split('|').nth(1).expect("a lease").to_string();
    let epoch: u64 = lease
        .split('|')
        .next()
        .and_then(|e| e.trim().parse().ok())
        .expect("epoch");
    // `docker kill` on the container itself: the compose CLI would add its own start-up (about
    // a second) to the measurement.
    let container = compose.run(&["ps", "-q", &leader]).trim().to_string();
    let t0 = Instant::now();
    let killed = Command::new("docker")
        .args(["kill", "-s", "KILL", &container])
        .output()
        .expect("docker kill");
    assert!(
        killed.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    loop {
        let now = compose.redis(&["GET", "stride:lease"]);
        let e: u64 = now
            .split('|')
            .next()
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(0);
        if e > epoch && !now.contains(&format!("|{leader}|")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the standby container to lead"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let standby = t0.elapsed();
    figure(fault, "standby holds the lease", standby);
    assert!(
        standby <= Duration::from_secs(3),
        "a standby leads within 3 s, took {standby:?}"
    );
    let body = r#"{"id":"/after-kill","cmd":"sleep 100000","cpus":0.01,"mem":8,"instances":1}"#;
    api.until(
        Duration::from_secs(20),
        "the new leader to accept writes",
        |api| async move {
            (try_call(&api, "POST", "/v2/apps", Some(body)).await?.0 == 201).then_some(())
        },
    )
    .await;
    figure(fault, "standby accepts writes", t0.elapsed());
    api.until(
        Duration::from_secs(30),
        "the new app to run",
        |api| async move {
            (api.try_get("/v2/apps/after-kill").await?.body["app"]["tasksRunning"] == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        compose.task_ids("/demo/web"),
        web_before,
        "no task restarted across the failover"
    );
    // A container killed by hand stays down (Docker does not apply its restart policy); started
    // again, the scheduler joins as a standby and the lease stays where it is.
    let new_lease = compose.redis(&["GET", "stride:lease"]);
    let out = Command::new("docker")
        .args(["start", &container])
        .output()
        .expect("docker start");
    assert!(
        out.status.success(),
        "docker start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    let lease = compose.redis(&["GET", "stride:lease"]);
    assert_eq!(
        lease.split('|').take(2).collect::<Vec<_>>(),
        new_lease.split('|').take(2).collect::<Vec<_>>(),
        "the restarted scheduler stands by"
    );
    note(
        fault,
        "the demo's tasks kept their ids and kept serving; the killed scheduler, started again, stands by",
    );
}

#[path = "../faults/compose.rs"]
mod compose;
