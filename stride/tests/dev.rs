//! `stride dev` as a new user meets it: one process, the README's curl commands, real processes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use stride_tests::{pids_of_task, serves_http, Dev};

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works() {
    let dev = Dev::start().await;
    let api = dev.api.clone();

    let r = api
        .post(
            "/v2/apps",
            r#"{"id":"/web","cmd":"python3 -m http.server $PORT0","cpus":0.1,"mem":32,"instances":3}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}\n{}", r.text, dev.proc.log_text());
    assert!(r.header("Marathon-Deployment-Id").is_some());

    let three = api.until_running("/web", 3, Duration::from_secs(60)).await;
    for t in &three {
        let host = t["host"].as_str().expect("host").to_string();
        let port = t["ports"][0].as_u64().expect("port");
        api.until(Duration::from_secs(20), "the task to serve HTTP", |_| {
            let host = host.clone();
            async move { serves_http(&host, port).await.then_some(()) }
        })
        .await;
    }

    assert_eq!(
        api.put("/v2/apps/web", r#"{"instances":5}"#).await.status,
        200
    );
    let five = api.until_running("/web", 5, Duration::from_secs(60)).await;
    assert_eq!(
        api.put("/v2/apps/web", r#"{"instances":1}"#).await.status,
        200
    );
    let one = api.until_running("/web", 1, Duration::from_secs(60)).await;
    for id in ids(&five).difference(&ids(&one)) {
        api.until(
            Duration::from_secs(20),
            "killed tasks to leave no process",
            |_| {
                let id = id.clone();
                async move { pids_of_task(&id).is_empty().then_some(()) }
            },
        )
        .await;
    }

    assert_eq!(api.delete("/v2/apps/web").await.status, 200);
    api.until(
        Duration::from_secs(30),
        "the app and its last process to go",
        |api| {
            let last = one[0]["id"].as_str().unwrap_or_default().to_string();
            async move {
                let gone = api.try_get("/v2/apps/web").await?.status == 404;
                (gone && pids_of_task(&last).is_empty()).then_some(())
            }
        },
    )
    .await;
}
