//! `/v2/groups` against the real processes: trees, dependency order, scaleBy, versions and
//! rollback, replacement of children, deletion.

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

async fn no_deployments(c: &Cluster) {
    c.api
        .until(
            Duration::from_secs(60),
            "deployments to finish",
            |api| async move {
                let r = api.try_get("/v2/deployments").await?;
                (r.body == json!([])).then_some(())
            },
        )
        .await;
}

fn ts(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deploys_in_dependency_order_and_rolls_back() {
    let c = Cluster::start(1, 2);
    wait_leader(&c).await;
    let shop = json!({
        "id": "/shop",
        "groups": [
            {"id": "db", "apps": [{"id": "store", "cmd": "sleep 100000", "cpus": 0.1, "mem": 16}]},
            {"id": "web", "dependencies": ["/shop/db"], "apps": [
                {"id": "api", "cmd": "sleep 100000", "cpus": 0.1, "mem": 16, "instances": 2},
                {"id": "ui", "cmd": "sleep 100000", "cpus": 0.1, "mem": 16, "dependencies": ["api"]}
            ]}
        ]
    });
    // The plan, first as a dry run.
    let r = c
        .api
        .put("/v2/groups/shop?dryRun=true", &shop.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let scale_order: Vec<String> = r.body["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["actions"][0]["action"] == "ScaleApplication")
        .map(|s| ts(&s["actions"][0]["app"]))
        .collect();
    assert_eq!(
        scale_order,
        vec!["/shop/db/store", "/shop/web/api", "/shop/web/ui"],
        "{}",
        r.text
    );
    assert_eq!(
        c.api.get("/v2/apps").await.body["apps"],
        json!([]),
        "a dry run changes nothing"
    );

    let r = c.api.post("/v2/groups", &shop.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.header("Marathon-Deployment-Id").is_some());
    assert!(r
        .header("Location")
        .is_some_and(|l| l.ends_with("/v2/groups/shop")));
    let r = c.api.post("/v2/groups", &shop.to_string()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "Group /shop is already created. Use PUT to change this group."
    );
    no_deployments(&c).await;

    // Dependencies ran first: each dependent started after what it depends on was running.
    let started = |tasks: &Value| -> String {
        tasks["tasks"]
            .as_array()
            .and_then(|t| t.iter().map(|x| ts(&x["startedAt"])).max())
            .unwrap_or_default()
    };
    let staged = |tasks: &Value| -> String {
        tasks["tasks"]
            .as_array()
            .and_then(|t| t.iter().map(|x| ts(&x["stagedAt"])).min())
            .unwrap_or_default()
    };
    let store = c.api.get("/v2/apps/shop/db/store/tasks").await.body;
    let api = c.api.get("/v2/apps/shop/web/api/tasks").await.body;
    let ui = c.api.get("/v2/apps/shop/web/ui/tasks").await.body;
    assert!(
        staged(&api) >= started(&store),
        "api waited for the db: {api} {store}"
    );
    assert!(staged(&ui) >= started(&api), "ui waited for api");

    // The tree.
    let g = c
        .api
        .get("/v2/groups/shop?embed=group.groups&embed=group.apps&embed=group.apps.counts")
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["id"], "/shop");
    let web = g.body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|x| x["id"] == "/shop/web")
        .cloned()
        .expect("web");
    assert_eq!(web["dependencies"], json!(["/shop/db"]));
    assert_eq!(web["apps"].as_array().map(Vec::len), Some(2));
    assert_eq!(web["apps"][0]["tasksRunning"], 2);
    let root = c.api.get("/v2/groups").await;
    assert_eq!(root.body["id"], "/");
    assert_eq!(root.body["groups"][0]["id"], "/shop");
    let apps = c.api.get("/v2/groups/shop/apps").await;
    assert_eq!(apps.body.as_array().map(Vec::len), Some(3));

    // scaleBy doubles every app, rounding up.
    let first_version = c.api.get("/v2/groups/shop/versions").await.body[0].clone();
    let r = c.api.put("/v2/groups/shop", r#"{"scaleBy": 2}"#).await;
    assert_eq!(r.status, 200, "{}", r.text);
    no_deployments(&c).await;
    assert_eq!(
        c.api.get("/v2/apps/shop/web/api").await.body["app"]["tasksRunning"],
        4
    );
    assert_eq!(
        c.api.get("/v2/apps/shop/db/store").await.body["app"]["tasksRunning"],
        2
    );

    // Roll back to the first version.
    let versions = c.api.get("/v2/groups/shop/versions").await.body;
    assert!(
        versions.as_array().is_some_and(|v| v.len() >= 2),
        "{versions}"
    );
    let old = c
        .api
        .get(&format!("/v2/groups/shop/versions/{}", ts(&first_version)))
        .await;
    assert_eq!(old.status, 200, "{}", old.text);
    let r = c
        .api
        .put(
            "/v2/groups/shop",
            &json!({"version": first_version}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{} {}", r.text, old.text);
    no_deployments(&c).await;
    assert_eq!(
        c.api.get("/v2/apps/shop/web/api").await.body["app"]["tasksRunning"],
        2
    );

    // A PUT that leaves an app out removes it.
    let r = c
        .api
        .put(
            "/v2/groups/shop/web",
            r#"{"apps":[{"id":"api","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":2}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    no_deployments(&c).await;
    assert_eq!(c.api.get("/v2/apps/shop/web/ui").await.status, 404);
    assert_eq!(
        c.api.get("/v2/apps/shop/web/api").await.body["app"]["tasksRunning"],
        2,
        "an unchanged app keeps its tasks"
    );

    // Cycles are refused.
    let r = c
        .api
        .put("/v2/groups/cyc", r#"{"apps":[{"id":"a","cmd":"sleep 1","dependencies":["b"]},{"id":"b","cmd":"sleep 1","dependencies":["a"]}]}"#)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);

    // Delete the whole group.
    let r = c.api.delete("/v2/groups/shop").await;
    assert_eq!(r.status, 200, "{}", r.text);
    no_deployments(&c).await;
    assert_eq!(c.api.get("/v2/apps").await.body["apps"], json!([]));
    assert_eq!(c.api.get("/v2/groups/shop").await.status, 404);
}
