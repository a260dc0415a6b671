//! Docker apps through the whole of Stride: a BRIDGE app answers on its host port, its
//! container shows in `docker ps` while it runs and is gone after destroy, and an agent restart
//! in the middle keeps it running with the same task id. Skipped (with a note) only where no
//! Docker Engine answers.

use std::process::Command;
use std::time::Duration;

use stride_tests::Cluster;

const IMAGE: &str = "stride-test-busybox:latest";

fn docker_ps(task_id: &str) -> Vec<String> {
    Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=stride.task_id={task_id}"),
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_container_serves_survives_an_agent_restart_and_goes_away() {
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: no Docker Engine answers `docker info`");
        return;
    }
    stride_testkit::ensure_test_image(IMAGE).expect("the test image builds");
    let mut c = Cluster::start(1, 1);
    c.api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
    let app = format!(
        r#"{{"id":"/boxed","cmd":"mkdir -p /www && echo hello-bridge > /www/index.html && httpd -f -p 8080 -h /www",
            "cpus":0.1,"mem":32,"instances":1,
            "container":{{"type":"DOCKER","docker":{{"image":"{IMAGE}"}},
                         "portMappings":[{{"containerPort":8080,"hostPort":0,"name":"http"}}]}},
            "networks":[{{"mode":"container/bridge"}}]}}"#
    );
    let r = c.api.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["container"]["portMappings"][0]["containerPort"],
        8080
    );
    let tasks = c
        .api
        .until_running("/boxed", 1, Duration::from_secs(60))
        .await;
    let task = tasks[0]["id"].as_str().expect("id").to_string();
    let port = tasks[0]["ports"][0].as_u64().expect("a host port");
    let body = c
        .api
        .until(
            Duration::from_secs(30),
            "the container to answer on its host port",
            |_| async move {
                let r = reqwest::get(format!("http://127.0.0.1:{port}/"))
                    .await
                    .ok()?;
                r.text().await.ok().filter(|t| t.contains("hello-bridge"))
            },
        )
        .await;
    assert!(body.contains("hello-bridge"));
    assert_eq!(docker_ps(&task).len(), 1, "docker ps shows the container");

    // The agent restarts: the container keeps running under the same task.
    c.agents[0].kill9();
    c.restart_agent(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c
        .api
        .until_running("/boxed", 1, Duration::from_secs(30))
        .await;
    assert_eq!(
        after[0]["id"],
        task.as_str(),
        "same task after the agent restart"
    );
    assert_eq!(docker_ps(&task).len(), 1);

    assert_eq!(c.api.delete("/v2/apps/boxed").await.status, 200);
    c.api
        .until(
            Duration::from_secs(30),
            "no container after destroy",
            |_| {
                let task = task.clone();
                async move { docker_ps(&task).is_empty().then_some(()) }
            },
        )
        .await;
}
