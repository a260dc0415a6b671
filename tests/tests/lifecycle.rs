//! Marathon's app lifecycle against real agents: kill (replaced), kill and scale, wipe,
//! `/v2/tasks/delete`, suspend, restart, identical redeploys, deployment conflicts and
//! rollback, constraints and the launch queue, agent loss.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use stride_tests::Cluster;

async fn wait_leader(c: &Cluster) {
    c.api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

const SLEEPY: &str = r#"{"id":"/life","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":3}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_scales_wipes_suspends_and_restarts() {
    let c = Cluster::start(1, 2);
    wait_leader(&c).await;
    assert_eq!(c.api.post("/v2/apps", SLEEPY).await.status, 201);
    let three = c
        .api
        .until_running("/life", 3, Duration::from_secs(60))
        .await;
    let victim = three[0]["id"].as_str().expect("id").to_string();

    // A plain kill: the task goes and a new one replaces it.
    let r = c.api.delete(&format!("/v2/apps/life/tasks/{victim}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["task"]["id"], victim.as_str());
    let after = c
        .api
        .until(
            Duration::from_secs(30),
            "the killed task to be replaced",
            |api| {
                let victim = victim.clone();
                async move {
                    let t = api.tasks("/life").await;
                    (t.len() == 3
                        && !ids(&t).contains(&victim)
                        && t.iter().all(|x| x["state"] == "TASK_RUNNING"))
                    .then_some(t)
                }
            },
        )
        .await;

    // Kill and scale: the app shrinks by one.
    let one = after[0]["id"].as_str().expect("id").to_string();
    let r = c
        .api
        .delete(&format!("/v2/apps/life/tasks/{one}?scale=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deploymentId"].is_string());
    let two = c
        .api
        .until_running("/life", 2, Duration::from_secs(30))
        .await;
    assert!(!ids(&two).contains(&one));
    assert_eq!(c.api.get("/v2/apps/life").await.body["app"]["instances"], 2);

    // scale and wipe together are refused.
    let r = c
        .api
        .delete("/v2/apps/life/tasks?scale=true&wipe=true")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["message"],
        "You cannot use scale and wipe at the same time."
    );

    // POST /v2/tasks/delete kills (and replaces) the listed tasks.
    let target = two[0]["id"].as_str().expect("id").to_string();
    let r = c
        .api
        .post("/v2/tasks/delete", &json!({"ids": [target]}).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.api
        .until(
            Duration::from_secs(30),
            "the deleted task to be replaced",
            |api| {
                let target = target.clone();
                async move {
                    let t = api.tasks("/life").await;
                    (t.len() == 2
                        && !ids(&t).contains(&target)
                        && t.iter().all(|x| x["state"] == "TASK_RUNNING"))
                    .then_some(())
                }
            },
        )
        .await;

    // Identical redeploy: nothing restarts.
    let before = ids(&c.api.tasks("/life").await);
    let version = c.api.get("/v2/apps/life").await.body["app"]["version"].clone();
    let r = c
        .api
        .put("/v2/apps/life", r#"{"cmd":"sleep 100000"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let same = c
        .api
        .until_running("/life", 2, Duration::from_secs(30))
        .await;
    assert_eq!(ids(&same), before, "an identical redeploy restarts nothing");
    assert_eq!(
        c.api.get("/v2/apps/life").await.body["app"]["version"],
        version
    );

    // Restart: every task replaced, a new version, lastConfigChangeAt moves.
    let r = c.api.post("/v2/apps/life/restart", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let restarted = c
        .api
        .until(Duration::from_secs(60), "a rolling restart", |api| {
            let before = before.clone();
            async move {
                let app = api.try_get("/v2/apps/life").await?.body["app"].clone();
                let t = app["tasks"].as_array()?.clone();
                let done =
                    app["deployments"] == json!([]) && t.len() == 2 && ids(&t).is_disjoint(&before);
                done.then_some(app)
            }
        })
        .await;
    assert_eq!(
        restarted["versionInfo"]["lastConfigChangeAt"],
        restarted["version"]
    );

    // Suspend.
    assert_eq!(
        c.api
            .put("/v2/apps/life", r#"{"instances":0}"#)
            .await
            .status,
        200
    );
    c.api
        .until_running("/life", 0, Duration::from_secs(30))
        .await;

    // Versions are listed and any one can be read back.
    let versions = c.api.get("/v2/apps/life/versions").await.body["versions"].clone();
    assert!(
        versions.as_array().is_some_and(|v| v.len() >= 3),
        "{versions}"
    );
    let v0 = versions[versions.as_array().map_or(0, |v| v.len() - 1)]
        .as_str()
        .expect("ts")
        .to_string();
    let old = c.api.get(&format!("/v2/apps/life/versions/{v0}")).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.body["instances"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_force_and_rollback() {
    let c = Cluster::start(1, 1);
    wait_leader(&c).await;
    // An app that cannot be placed keeps its deployment open.
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/big","cmd":"sleep 100000","cpus":64,"mem":16}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let deployment = r.header("Marathon-Deployment-Id").expect("deployment id");
    let r = c.api.put("/v2/apps/big", r#"{"cpus":0.1}"#).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["deployments"][0]["id"], deployment.as_str());
    assert!(r.body["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("App is locked by one or more deployments.")));

    // The queue shows why it waits, once the deployment's first pass has tried to place it.
    let q = c
        .api
        .until(
            Duration::from_secs(10),
            "/big tried and declined",
            |api| async move {
                let q = api.get("/v2/queue").await;
                let tried = q.body["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["declined"] != 0));
                tried.then_some(q)
            },
        )
        .await;
    assert_eq!(q.body["queue"][0]["app"]["id"], "/big");
    assert_eq!(q.body["queue"][0]["count"], 1);
    let reasons = q.body["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"].clone();
    assert!(
        reasons.as_array().is_some_and(|r| r
            .iter()
            .any(|x| x["reason"] == "InsufficientCpus" && x["declined"] == 1)),
        "{reasons}"
    );
    assert_eq!(c.api.get("/v2/deployments").await.body[0]["currentStep"], 2);

    // Rolling the deployment back removes the app it created.
    let r = c.api.delete(&format!("/v2/deployments/{deployment}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.api
        .until(
            Duration::from_secs(30),
            "the rollback to remove the app",
            |api| async move {
                let gone = api.try_get("/v2/apps/big").await?.status == 404;
                let idle = api.try_get("/v2/deployments").await?.body == json!([]);
                (gone && idle).then_some(())
            },
        )
        .await;

    // force=true overrides a lock; DELETE ?force=true stops in place with 202.
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/big","cmd":"sleep 100000","cpus":64,"mem":16}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let r = c
        .api
        .put("/v2/apps/big?force=true", r#"{"cpus":0.1}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.api
        .until_running("/big", 1, Duration::from_secs(30))
        .await;
    let r = c.api.put("/v2/apps/big", r#"{"cpus":32}"#).await;
    assert_eq!(r.status, 200);
    let d = r.body["deploymentId"].as_str().expect("id").to_string();
    let r = c
        .api
        .delete(&format!("/v2/deployments/{d}?force=true"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(c.api.get("/v2/deployments").await.body, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_spread_and_hold_back() {
    let c = Cluster::start(1, 2);
    wait_leader(&c).await;
    // Two agents (rack r0 and r1), UNIQUE hostname... both agents report 127.0.0.1, so spread by
    // the rack attribute instead.
    let r = c
        .api
        .post("/v2/apps", r#"{"id":"/spread","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":3,"constraints":[["rack_id","UNIQUE"]]}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    c.api
        .until(
            Duration::from_secs(30),
            "two tasks, one per rack",
            |api| async move {
                let t = api.tasks("/spread").await;
                let running = t.iter().filter(|x| x["state"] == "TASK_RUNNING").count();
                (running == 2).then_some(())
            },
        )
        .await;
    let q = c.api.get("/v2/queue").await;
    assert_eq!(
        q.body["queue"][0]["count"], 1,
        "the third waits: {}",
        q.text
    );
    let agents: BTreeSet<String> = c
        .api
        .tasks("/spread")
        .await
        .iter()
        .map(|t| t["slaveId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(agents.len(), 2);

    // A malformed constraint is a 422.
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/bad","cmd":"sleep 1","constraints":[["hostname","UNIQUE","x"]]}"#,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["details"][0]["errors"][0],
        "UNIQUE does not accept a value"
    );

    // LIKE pins to one rack.
    let r = c
        .api
        .post("/v2/apps", r#"{"id":"/pinned","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":2,"constraints":[["rack_id","LIKE","r1"]]}"#)
        .await;
    assert_eq!(r.status, 201);
    let t = c
        .api
        .until_running("/pinned", 2, Duration::from_secs(30))
        .await;
    assert!(t.iter().all(|x| x["slaveId"] == "agent-1"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_is_replaced_and_reconciled_on_return() {
    let mut c = Cluster::start(1, 2);
    // Only agent-0 at first, so every task lands there.
    c.agents[1].kill9();
    wait_leader(&c).await;
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/ha","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":2}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let before = ids(&c.api.until_running("/ha", 2, Duration::from_secs(30)).await);
    assert!(c
        .api
        .tasks("/ha")
        .await
        .iter()
        .all(|t| t["slaveId"] == "agent-0"));
    let pids: Vec<i32> = before
        .iter()
        .flat_map(|id| stride_tests::pids_of_task(id))
        .collect();
    assert!(
        before
            .iter()
            .all(|id| !stride_tests::pids_of_task(id).is_empty()),
        "both tasks run processes"
    );

    c.restart_agent(1);
    c.agents[0].kill9();
    // Agent-0's tasks keep running, but it is silent: after the agent timeout (10 s) the
    // default unreachableStrategy {0, 0} replaces its instances on agent-1.
    let replaced = c
        .api
        .until(
            Duration::from_secs(40),
            "replacements on agent-1",
            |api| async move {
                let t = api.tasks("/ha").await;
                let ok = t.len() == 2
                    && t.iter()
                        .all(|x| x["slaveId"] == "agent-1" && x["state"] == "TASK_RUNNING");
                ok.then_some(t)
            },
        )
        .await;
    assert!(
        ids(&replaced).is_disjoint(&before),
        "new instances replaced the lost ones"
    );
    assert!(
        pids.iter().all(|p| stride_tests::process_alive(*p)),
        "the lost agent's processes still run"
    );

    // Agent-0 returns with its old tasks: they are killed, and exactly two remain.
    c.restart_agent(0);
    c.api
        .until(
            Duration::from_secs(30),
            "stale tasks to be killed on the returning agent",
            |_| {
                let pids = pids.clone();
                async move {
                    pids.iter()
                        .all(|p| !stride_tests::process_alive(*p))
                        .then_some(())
                }
            },
        )
        .await;
    let t = c.api.until_running("/ha", 2, Duration::from_secs(10)).await;
    assert_eq!(ids(&t), ids(&replaced));
}
