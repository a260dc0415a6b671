//! Resident apps (local persistent volumes): an instance comes back on the agent that holds
//! its data, with the data intact, after its task ends and after an upgrade; destroying the app
//! releases the volume.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use stride_tests::Cluster;

const RESIDENT: &str = r#"{
  "id": "/keeper",
  "cmd": "echo $MARATHON_APP_VERSION >> data/log && sleep 100000",
  "cpus": 0.1, "mem": 16, "instances": 1,
  "container": {"type": "MESOS", "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 16}}]}
}"#;

fn volume_logs(agent_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(agent_dir.join("volumes")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("log"))
        .filter(|p| p.exists())
        .collect()
}

fn instance_of(task_id: &str) -> String {
    task_id
        .rsplit_once("._app.")
        .map(|(i, _)| i.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_instance_keeps_its_data_across_restarts_and_upgrades() {
    let c = Cluster::start(1, 1);
    c.api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
    let r = c.api.post("/v2/apps", RESIDENT).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["upgradeStrategy"]["maximumOverCapacity"], 0,
        "resident defaults"
    );
    assert_eq!(r.body["unreachableStrategy"], "disabled");
    let first = c
        .api
        .until_running("/keeper", 1, Duration::from_secs(30))
        .await;
    let task: String = first[0]["id"].as_str().expect("id").to_string();
    let agent_dir = c.dir.path().join("agent-0");
    let log = c
        .api
        .until(
            Duration::from_secs(10),
            "the task to write into its volume",
            |_| {
                let agent_dir = agent_dir.clone();
                async move { volume_logs(&agent_dir).into_iter().next() }
            },
        )
        .await;
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(lines(&log), 1);

    // The task is killed: the same instance comes back, with the next incarnation, same data.
    let r = c.api.delete(&format!("/v2/apps/keeper/tasks/{task}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let again: Value = c
        .api
        .until(
            Duration::from_secs(30),
            "the instance to come back in place",
            |api| {
                let task = task.clone();
                async move {
                    let t = api.tasks("/keeper").await;
                    let t = t.first()?.clone();
                    (t["id"] != task.as_str() && t["state"] == "TASK_RUNNING").then_some(t)
                }
            },
        )
        .await;
    let second = again["id"].as_str().expect("id").to_string();
    assert_eq!(instance_of(&second), instance_of(&task), "same instance");
    assert!(second.ends_with("._app.2"), "{second}");
    c.api
        .until(
            Duration::from_secs(10),
            "a second line in the same volume",
            |_| {
                let log = log.clone();
                async move { (lines(&log) == 2).then_some(()) }
            },
        )
        .await;

    // An upgrade restarts it in place too.
    let r = c
        .api
        .put("/v2/apps/keeper", r#"{"env":{"UPGRADED":"yes"}}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let third = c
        .api
        .until(
            Duration::from_secs(30),
            "the upgrade to finish in place",
            |api| {
                let second = second.clone();
                async move {
                    let app = api.try_get("/v2/apps/keeper").await?.body["app"].clone();
                    let t = app["tasks"].as_array()?.first()?.clone();
                    let done = app["deployments"].as_array()?.is_empty()
                        && t["id"] != second.as_str()
                        && t["state"] == "TASK_RUNNING";
                    done.then(|| t["id"].as_str().unwrap_or_default().to_string())
                }
            },
        )
        .await;
    assert_eq!(instance_of(&third), instance_of(&task));
    c.api
        .until(
            Duration::from_secs(10),
            "a third line in the same volume",
            |_| {
                let log = log.clone();
                async move { (lines(&log) == 3).then_some(()) }
            },
        )
        .await;

    // Destroying the app releases the volume.
    assert_eq!(c.api.delete("/v2/apps/keeper").await.status, 200);
    c.api
        .until(
            Duration::from_secs(30),
            "the volume to be destroyed",
            |_| {
                let agent_dir = agent_dir.clone();
                async move { volume_logs(&agent_dir).is_empty().then_some(()) }
            },
        )
        .await;
}
