//! The real topology: `stride-scheduler` ×N, `stride-api-gateway` and `stride-agent` ×M as
//! separate processes against a real `redis-server`, with agents running real processes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use stride_tests::{pids_of_task, serves_http, Cluster};

const WEB: &str = r#"{"id":"/web","cmd":"python3 -m http.server $PORT0 --bind 127.0.0.1","cpus":0.1,"mem":32,"instances":3}"#;

fn task_ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

async fn wait_for_leader(c: &Cluster) -> usize {
    c.api
        .until(Duration::from_secs(20), "a scheduler to lead", |_| async {
            c.leader_index().await
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_scales_and_goes_away_on_real_agents() {
    let c = Cluster::start(1, 2);
    wait_for_leader(&c).await;
    let r = c.api.post("/v2/apps", WEB).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r
        .header("Marathon-Deployment-Id")
        .is_some_and(|d| !d.is_empty()));
    assert_eq!(r.body["id"], "/web");
    assert_eq!(r.body["instances"], 3);
    assert_eq!(r.body["tasksRunning"], 0);
    assert_eq!(r.body["deployments"].as_array().map(Vec::len), Some(1));

    let tasks = c
        .api
        .until_running("/web", 3, Duration::from_secs(60))
        .await;
    for t in &tasks {
        let host = t["host"].as_str().expect("host");
        let port = t["ports"][0].as_u64().expect("a host port");
        assert!(
            (31000..33000).contains(&port),
            "port {port} from the agents' ranges"
        );
        c.api
            .until(
                Duration::from_secs(20),
                "the task to serve HTTP",
                |_| async move { serves_http(host, port).await.then_some(()) },
            )
            .await;
    }
    let list = c.api.get("/v2/apps").await;
    assert_eq!(list.body["apps"][0]["tasksRunning"], 3);
    assert_eq!(list.body["apps"][0]["deployments"], json!([]));

    // Scale up by two.
    let r = c.api.put("/v2/apps/web", r#"{"instances":5}"#).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deploymentId"].is_string());
    let five = c
        .api
        .until_running("/web", 5, Duration::from_secs(60))
        .await;
    assert!(
        task_ids(&tasks).is_subset(&task_ids(&five)),
        "scaling up keeps the running tasks"
    );

    // Scale down to one: four tasks and their whole process groups go.
    let r = c.api.put("/v2/apps/web", r#"{"instances":1}"#).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let one = c
        .api
        .until_running("/web", 1, Duration::from_secs(60))
        .await;
    let gone: Vec<String> = task_ids(&five)
        .difference(&task_ids(&one))
        .cloned()
        .collect();
    assert_eq!(gone.len(), 4);
    for id in &gone {
        c.api
            .until(
                Duration::from_secs(20),
                "killed tasks to leave no process",
                |_| {
                    let id = id.clone();
                    async move { pids_of_task(&id).is_empty().then_some(()) }
                },
            )
            .await;
    }
    let survivor = one[0]["id"].as_str().expect("id").to_string();
    assert!(
        !pids_of_task(&survivor).is_empty(),
        "the remaining task still runs"
    );

    // Destroy.
    let r = c.api.delete("/v2/apps/web").await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.api
        .until(
            Duration::from_secs(30),
            "the app to be gone",
            |api| async move { (api.try_get("/v2/apps/web").await?.status == 404).then_some(()) },
        )
        .await;
    c.api
        .until(Duration::from_secs(20), "its last process to end", |_| {
            let id = survivor.clone();
            async move { pids_of_task(&id).is_empty().then_some(()) }
        })
        .await;
    let r = c.api.get("/v2/apps").await;
    assert_eq!(r.body["apps"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_keeps_every_task() {
    let mut c = Cluster::start(2, 2);
    let first = wait_for_leader(&c).await;
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/sleepy","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":4}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let before = task_ids(
        &c.api
            .until_running("/sleepy", 4, Duration::from_secs(60))
            .await,
    );
    let pids: Vec<Vec<i32>> = before.iter().map(|id| pids_of_task(id)).collect();
    assert!(pids.iter().all(|p| !p.is_empty()));

    c.schedulers[first].kill9();
    let second = c
        .api
        .until(Duration::from_secs(20), "the standby to lead", |_| {
            let c = &c;
            async move { c.leader_index().await.filter(|i| *i != first) }
        })
        .await;
    assert_ne!(second, first);

    // A new app deploys through the new leader, on the agents that moved to it.
    let r = c
        .api
        .until(
            Duration::from_secs(20),
            "the new leader to accept writes",
            |api| async move {
                let r = api
                    .post(
                        "/v2/apps",
                        r#"{"id":"/after","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":2}"#,
                    )
                    .await;
                (r.status == 201).then_some(r)
            },
        )
        .await;
    assert_eq!(r.body["id"], "/after");
    c.api
        .until_running("/after", 2, Duration::from_secs(60))
        .await;

    // The old tasks are still the same tasks, same processes.
    let after = task_ids(
        &c.api
            .until_running("/sleepy", 4, Duration::from_secs(30))
            .await,
    );
    assert_eq!(before, after, "no task was replaced across the failover");
    for (id, p) in before.iter().zip(pids) {
        assert_eq!(pids_of_task(id), p, "task {id} kept its process");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_exits_is_relaunched_and_its_failure_recorded() {
    let c = Cluster::start(1, 1);
    wait_for_leader(&c).await;
    let r = c
        .api
        .post("/v2/apps", r#"{"id":"/flaky","cmd":"sleep 1; exit 3","cpus":0.1,"mem":16,"backoffSeconds":1,"backoffFactor":1.0}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = c
        .api
        .until(Duration::from_secs(30), "a first task", |api| async move {
            api.tasks("/flaky")
                .await
                .first()
                .and_then(|t| t["id"].as_str().map(str::to_string))
        })
        .await;
    let failure = c
        .api
        .until(
            Duration::from_secs(30),
            "lastTaskFailure and a relaunch",
            |api| {
                let first = first.clone();
                async move {
                    let app = api.try_get("/v2/apps/flaky").await?.body["app"].clone();
                    let f = app["lastTaskFailure"].clone();
                    let relaunched = app["tasks"]
                        .as_array()?
                        .iter()
                        .any(|t| t["id"] != first.as_str());
                    (f["state"] == "TASK_FAILED" && relaunched).then_some(f)
                }
            },
        )
        .await;
    assert_eq!(failure["appId"], "/flaky");
    assert!(
        failure["message"].as_str().is_some_and(|m| m.contains('3')),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_marathon_errors_and_changes_nothing() {
    let c = Cluster::start(1, 1);
    wait_for_leader(&c).await;
    let r = c.api.post("/v2/apps", r#"{"id": "/x", "cmd": "#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], "Invalid JSON");
    assert!(r.body["details"].is_string());

    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/x","cmd":"sleep 1","args":["sleep","1"]}"#,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["message"], "Object is not valid");
    assert_eq!(r.body["details"][0]["path"], "/");

    let r = c
        .api
        .post("/v2/apps", r#"{"id":"/x","cmd":"sleep 1","instances":-1}"#)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/instances");
    assert_eq!(
        r.body["details"][0]["errors"][0],
        "got -1, expected 0 or more"
    );

    let r = c
        .api
        .post("/v2/apps", r#"{"id":"/Bad_Id","cmd":"sleep 1"}"#)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/id");

    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/x","cmd":"sleep 1","instances":"two"}"#,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["message"], "Invalid JSON");

    let r = c.api.get("/v2/apps").await;
    assert_eq!(r.body["apps"], json!([]), "nothing was stored");
    let r = c.api.get("/v2/deployments").await;
    assert_eq!(r.body, json!([]), "no deployment was made");

    // A valid app, then a bad update: the app keeps its definition.
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/ok","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":0}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c.api.put("/v2/apps/ok", r#"{"cpus":-1}"#).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["path"], "/cpus");
    let r = c.api.get("/v2/apps/ok").await;
    assert_eq!(r.body["app"]["cpus"], 0.1);
}
