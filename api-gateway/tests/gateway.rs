//! The gateway end to end over HTTP: a real server on `127.0.0.1:0`, a `MemoryStore` written by
//! the test, and a fake leader.

mod support;

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use stride_core::error::ApiError;
use stride_core::instance::Condition;
use stride_proto::v1::app_change::Change;
use stride_store::StateStore;
use support::*;

async fn body(r: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    let v =
        serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text:?}"))?;
    Ok((status, v))
}

/// `/web` with two launched instances (one running, one staging), one waiting for an offer,
/// and a running deployment.
async fn seed(h: &Harness) -> anyhow::Result<stride_core::App> {
    let web = app(
        "/web",
        json!({"cmd": "sleep 100", "instances": 3, "portDefinitions": [{"port": 10000}], "labels": {"tier": "front"}}),
    )?;
    h.put_app(&web).await?;
    h.put_app(&app(
        "/tools/db",
        json!({"cmd": "sleep 100", "labels": {"tier": "back"}}),
    )?)
    .await?;
    h.put_instance(&instance(
        &web,
        Condition::Running,
        "agent-1.example",
        &[31000],
    ))
    .await?;
    h.put_instance(&instance(
        &web,
        Condition::Staging,
        "agent-2.example",
        &[31001],
    ))
    .await?;
    let mut waiting = instance(&web, Condition::Scheduled, "", &[]);
    waiting.incarnation = 0;
    waiting.placement = None;
    h.put_instance(&waiting).await?;
    h.put_deployment(&scaling_plan("dep-running", &web)).await?;
    Ok(web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_without_asking_the_leader() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let post = |b: &'static str| {
        h.http
            .post(h.url("/v2/apps"))
            .header("content-type", "application/json")
            .body(b)
    };

    let (status, v) = body(post(r#"{"id": "/x", "cmd": "#).send().await?).await?;
    assert_eq!(status, 400);
    assert_eq!(v["message"], "Invalid JSON");
    assert!(v["details"].is_string(), "{v}");

    let (status, v) = body(
        post(r#"{"id": "/x", "cmd": "sleep 1", "args": ["a"]}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    assert_eq!(v["message"], "Object is not valid");
    let details = v["details"].as_array().context("details")?;
    assert!(
        details
            .iter()
            .all(|d| d["path"].is_string() && d["errors"].is_array()),
        "{v}"
    );
    assert!(details.iter().any(|d| d["path"] == "/"), "{v}");

    let (status, v) = body(
        post(r#"{"id": "/x", "cmd": "sleep 1", "instances": -1}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    assert!(
        v["details"]
            .as_array()
            .context("details")?
            .iter()
            .any(|d| d["path"] == "/instances"),
        "{v}"
    );

    let (status, v) = body(
        post(r#"{"id": "/x", "cmd": "sleep 1", "instances": "two"}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v["details"][0]["path"].clone()),
        (422, json!("/instances"))
    );

    // Updates: `version` only with `id`; array elements need an id; scale+wipe.
    let (status, v) = body(
        h.http
            .put(h.url("/v2/apps/web"))
            .body(r#"{"version": "2021-01-01T00:00:00.000Z", "cmd": "x"}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v),
        (
            422,
            json!({"message": "The 'version' field may only be combined with the 'id' field."})
        )
    );
    let (status, v) = body(
        h.http
            .put(h.url("/v2/apps"))
            .body(r#"[{"cmd": "sleep 5"}]"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v),
        (
            422,
            json!({"message": "requirement failed: App Update must have app id set"})
        )
    );
    let (status, v) = body(
        h.http
            .delete(h.url("/v2/apps/web/tasks?scale=true&wipe=true"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v),
        (
            400,
            json!({"message": "You cannot use scale and wipe at the same time."})
        )
    );
    let (status, v) = body(
        h.http
            .delete(h.url("/v2/apps/web/tasks/nonsense"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v),
        (404, json!({"message": "Task 'nonsense' does not exist"}))
    );

    assert!(
        h.leader.calls().is_empty(),
        "nothing reaches the leader: {:?}",
        h.leader.calls()
    );

    // Bodies over the limit get a JSON 413.
    let big = format!(
        r#"{{"id": "/x", "cmd": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, v) = body(h.http.post(h.url("/v2/apps")).body(big).send().await?).await?;
    assert_eq!(status, 413);
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("limit")),
        "{v}"
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_post_creates_through_the_leader() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let r = h
        .http
        .post(h.url("/v2/apps?force=True"))
        .json(&json!({"id": "web2", "cmd": "sleep 100", "instances": 2}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("location"), Some(format!("{}/v2/apps/web2", h.base)));
    assert_eq!(
        header("marathon-deployment-id").as_deref(),
        Some(DEPLOYMENT_ID)
    );
    let (_, v) = body(r).await?;
    assert_eq!(v["id"], "/web2");
    assert_eq!(v["version"], VERSION);
    assert_eq!(v["instances"], 2);
    for k in [
        "tasksStaged",
        "tasksRunning",
        "tasksHealthy",
        "tasksUnhealthy",
    ] {
        assert_eq!(v[k], 0, "{k}");
    }
    assert_eq!(v["deployments"], json!([{"id": DEPLOYMENT_ID}]));
    assert_eq!(v["tasks"], json!([]));

    let deploys = h.leader.deploys();
    assert_eq!(deploys.len(), 1);
    assert!(deploys[0].force);
    assert_eq!(
        deploys[0].origin.as_ref().map(|o| o.uri.as_str()),
        Some("/v2/apps")
    );
    assert_eq!(
        deploys[0].origin.as_ref().map(|o| o.client_ip.as_str()),
        Some("127.0.0.1")
    );
    match &deploys[0].changes[0].change {
        Some(Change::Create(spec)) => {
            let sent: Value = serde_json::from_str(&spec.json)?;
            assert_eq!(sent["id"], "/web2");
            assert_eq!(sent["cmd"], "sleep 100");
        }
        other => anyhow::bail!("expected a create, got {other:?}"),
    }
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_errors_are_rendered_as_marathon_does() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.leader.fail_next(ApiError::locked(&["d-1".to_string()]));
    let r = h
        .http
        .put(h.url("/v2/apps/web"))
        .json(&json!({"instances": 5}))
        .send()
        .await?;
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let (status, v) = body(r).await?;
    assert_eq!(status, 409);
    assert_eq!(
        v,
        json!({
            "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/d-1'.",
            "deployments": [{"id": "d-1"}]
        })
    );
    match &h.leader.deploys()[0].changes[0].change {
        Some(Change::Patch(p)) => {
            assert_eq!(p.app_id, "/web");
            assert!(p.create_if_missing);
        }
        other => anyhow::bail!("expected a patch, got {other:?}"),
    }

    // A successful partial update is 200 with the DeploymentResult and header.
    let r = h
        .http
        .patch(h.url("/v2/apps/web"))
        .json(&json!({"instances": 5}))
        .send()
        .await?;
    assert_eq!(
        r.headers()
            .get("marathon-deployment-id")
            .and_then(|v| v.to_str().ok()),
        Some(DEPLOYMENT_ID)
    );
    let (status, v) = body(r).await?;
    assert_eq!(
        (status, v),
        (
            200,
            json!({"deploymentId": DEPLOYMENT_ID, "version": VERSION})
        )
    );

    // Rollback and full replacement take their own shapes.
    h.http
        .put(h.url("/v2/apps/web"))
        .json(&json!({"id": "/web", "version": VERSION}))
        .send()
        .await?;
    h.http
        .put(h.url("/v2/apps/web?partialUpdate=false"))
        .json(&json!({"cmd": "sleep 7"}))
        .send()
        .await?;
    let deploys = h.leader.deploys();
    assert!(
        matches!(&deploys[2].changes[0].change, Some(Change::Rollback(r)) if r.app_id == "/web" && r.version == VERSION)
    );
    match &deploys[3].changes[0].change {
        Some(Change::Put(spec)) => {
            assert_eq!(serde_json::from_str::<Value>(&spec.json)?["id"], "/web")
        }
        other => anyhow::bail!("expected a put, got {other:?}"),
    }

    // DELETE forces by default; restart does not.
    h.http.delete(h.url("/v2/apps/web")).send().await?;
    h.http.post(h.url("/v2/apps/web/restart")).send().await?;
    let deploys = h.leader.deploys();
    assert!(
        matches!(&deploys[4].changes[0].change, Some(Change::Remove(id)) if id == "/web")
            && deploys[4].force
    );
    assert!(
        matches!(&deploys[5].changes[0].change, Some(Change::Restart(id)) if id == "/web")
            && !deploys[5].force
    );

    // Array updates are one deployment.
    let (status, _) = body(
        h.http
            .put(h.url("/v2/apps"))
            .json(&json!([{"id": "a", "instances": 1}, {"id": "/b", "instances": 2}]))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    let last = h.leader.deploys().pop().context("deploy")?;
    assert_eq!(last.changes.len(), 2);

    h.leader
        .fail_next(ApiError::app_not_found(&stride_core::PathId::parse(
            "/nope",
        )));
    let (status, v) = body(h.http.delete(h.url("/v2/apps/nope")).send().await?).await?;
    assert_eq!(
        (status, v),
        (404, json!({"message": "App '/nope' does not exist"}))
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_show_what_the_store_holds() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    seed(&h).await?;

    let (status, v) = body(h.http.get(h.url("/v2/apps")).send().await?).await?;
    assert_eq!(status, 200);
    let apps = v["apps"].as_array().context("apps")?;
    assert_eq!(
        apps.iter().map(|a| a["id"].clone()).collect::<Vec<_>>(),
        vec![json!("/tools/db"), json!("/web")]
    );
    let web = &apps[1];
    assert_eq!(
        (web["tasksRunning"].clone(), web["tasksStaged"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(web["deployments"], json!([{"id": "dep-running"}]));
    assert!(web.get("tasks").is_none(), "tasks only when embedded");

    let (_, v) = body(
        h.http
            .get(h.url("/v2/apps?embed=apps.tasks&label=tier==front"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(v["apps"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["apps"][0]["tasks"].as_array().map(Vec::len), Some(2));
    let (_, v) = body(
        h.http
            .get(h.url("/v2/apps?id=TOOLS&cmd=sleep"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(v["apps"][0]["id"], "/tools/db");
    let (status, v) = body(
        h.http
            .get(h.url("/v2/apps?label=tier%3D%3D"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Can not parse label selector")),
        "{v}"
    );

    let (status, v) = body(h.http.get(h.url("/v2/apps/web")).send().await?).await?;
    assert_eq!(status, 200);
    assert_eq!(v["app"]["tasksRunning"], 1);
    assert_eq!(v["app"]["tasks"].as_array().map(Vec::len), Some(2));
    let (status, v) = body(h.http.get(h.url("/v2/apps/nope")).send().await?).await?;
    assert_eq!(
        (status, v),
        (404, json!({"message": "App '/nope' does not exist"}))
    );

    let (_, v) = body(h.http.get(h.url("/v2/apps/tools/*")).send().await?).await?;
    assert_eq!(v["*"].as_array().map(Vec::len), Some(1));
    let (status, _) = body(h.http.get(h.url("/v2/apps/nogroup/*")).send().await?).await?;
    assert_eq!(status, 404);

    let (_, v) = body(h.http.get(h.url("/v2/apps/web/tasks")).send().await?).await?;
    let tasks = v["tasks"].as_array().context("tasks")?;
    assert_eq!(
        tasks.len(),
        2,
        "the instance waiting for an offer is no task yet"
    );
    let running = tasks
        .iter()
        .find(|t| t["state"] == "TASK_RUNNING")
        .context("running task")?;
    assert_eq!(running["host"], "agent-1.example");
    assert_eq!(running["ports"], json!([31000]));
    assert_eq!(running["servicePorts"], json!([]));
    assert_eq!(running["appId"], "/web");

    let (_, v) = body(h.http.get(h.url("/v2/tasks?status=running")).send().await?).await?;
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["tasks"][0]["servicePorts"], json!([10000]));
    let (_, v) = body(
        h.http
            .get(h.url("/v2/tasks?status[]=staging&status[]=running"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(2));
    let text = h
        .http
        .get(h.url("/v2/tasks"))
        .header("Accept", "text/plain")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("web\t10000\tagent-1.example:31000\n"),
        "{text:?}"
    );

    let (_, v) = body(h.http.get(h.url("/v2/apps/web/versions")).send().await?).await?;
    assert_eq!(v, json!({"versions": [VERSION]}));
    let (status, v) = body(
        h.http
            .get(h.url(&format!("/v2/apps/web/versions/{VERSION}")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, v["cmd"].clone()), (200, json!("sleep 100")));
    let (status, v) = body(
        h.http
            .get(h.url("/v2/apps/web/versions/2020-01-01T00:00:00.000Z"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v),
        (
            404,
            json!({"message": "App '/web' does not exist in version 2020-01-01T00:00:00.000Z"})
        )
    );
    let (status, _) = body(
        h.http
            .get(h.url("/v2/apps/web/versions/yesterday"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 422);

    let (_, v) = body(h.http.get(h.url("/v2/deployments")).send().await?).await?;
    assert_eq!(v[0]["id"], "dep-running");
    assert_eq!(v[0]["affectedApps"], json!(["/web"]));
    assert_eq!(v[0]["currentStep"], 1);
    assert_eq!(
        v[0]["currentActions"][0]["readinessCheckResults"],
        json!([])
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_paths_and_small_endpoints() -> anyhow::Result<()> {
    let h = Harness::start_with(|c| c.leader_poll_interval = Duration::from_millis(50)).await?;
    seed(&h).await?;
    for path in [
        "//v2/apps",
        "/v2/apps/",
        "/v2//apps",
        "/v2/apps//web",
        "/v2/apps/web/",
        "//v2/apps//web//tasks/",
    ] {
        let r = h.http.get(h.url(path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
    }

    let r = h.http.get(h.url("/v2/nope")).send().await?;
    let headers = r.headers().clone();
    let (status, v) = body(r).await?;
    assert_eq!(
        (status, v),
        (404, json!({"message": "URI not found: /v2/nope"}))
    );
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("x-marathon-leader"),
        Some(format!("http://{ADVERTISED}"))
    );
    assert_eq!(
        header("cache-control").as_deref(),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(header("expires").as_deref(), Some("0"));
    assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(header("x-xss-protection").as_deref(), Some("1; mode=block"));
    let (status, v) = body(h.http.get(h.url("/v2/groups")).send().await?).await?;
    assert_eq!((status, v["id"].as_str()), (200, Some("/")));
    let (status, v) = body(h.http.post(h.url("/v2/info")).send().await?).await?;
    assert_eq!((status, v["message"].is_string()), (405, true));

    for (method, path) in [
        ("GET", "/v2/pods"),
        ("POST", "/v2/pods"),
        ("DELETE", "/v2/pods/x/y"),
        ("GET", "/v2/pods/::status"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let (status, v) = body(h.http.request(m, h.url(path)).send().await?).await?;
        assert_eq!(
            (status, v),
            (
                404,
                json!({"message": "Pods are not supported by Stride yet; use apps"})
            ),
            "{method} {path}"
        );
    }
    assert_eq!(h.http.head(h.url("/v2/pods")).send().await?.status(), 404);

    let r = h.http.get(h.url("/ping")).send().await?;
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain")));
    assert_eq!(r.text().await?, "pong");
    let r = h
        .http
        .get(h.url("/ping"))
        .header("Accept", "application/json")
        .send()
        .await?;
    assert_eq!(r.text().await?, "\"pong\"");

    let (_, info) = body(h.http.get(h.url("/v2/info")).send().await?).await?;
    assert_eq!(info["name"], "marathon");
    assert_eq!(info["version"], "1.10.26");
    assert_eq!(info["elected"], true);
    assert_eq!(info["leader"], ADVERTISED);
    assert_eq!(info["http_config"]["http_port"], 8080);
    assert!(
        info["buildref"]
            .as_str()
            .is_some_and(|b| b.starts_with("stride "))
            && info["marathon_config"].is_object()
            && info["zookeeper_config"].is_object()
    );
    let (status, v) = body(h.http.get(h.url("/v2/leader")).send().await?).await?;
    assert_eq!((status, v), (200, json!({"leader": ADVERTISED})));
    let (status, v) = body(h.http.delete(h.url("/v2/leader")).send().await?).await?;
    assert_eq!(
        (status, v),
        (200, json!({"message": "Leadership abdicated"}))
    );

    let (status, v) = body(
        h.http
            .get(h.url("/v2/queue?embed=lastUnusedOffers"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, v), (200, json!({"queue": []})));
    assert_eq!(
        h.http
            .delete(h.url("/v2/queue/web/delay"))
            .send()
            .await?
            .status(),
        204
    );
    let r = h
        .http
        .delete(h.url("/v2/deployments/dep-running?force=true"))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    assert!(r.text().await?.is_empty());
    let r = h
        .http
        .delete(h.url("/v2/deployments/dep-running"))
        .send()
        .await?;
    assert_eq!(
        r.headers()
            .get("marathon-deployment-id")
            .and_then(|v| v.to_str().ok()),
        Some("revert-1")
    );
    let (status, v) = body(r).await?;
    assert_eq!(
        (status, v["deploymentId"].clone()),
        (200, json!("revert-1"))
    );

    // Kills: with scale a DeploymentResult, without the killed tasks.
    let (status, v) = body(
        h.http
            .delete(h.url("/v2/apps/web/tasks?scale=true&host=agent-1.example"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v["deploymentId"].clone()),
        (200, json!(DEPLOYMENT_ID))
    );
    h.leader
        .killed_tasks
        .lock()
        .push(json!({"id": "web.instance-1._app.1", "appId": "/web"}).to_string());
    let (status, v) = body(h.http.delete(h.url("/v2/apps/web/tasks")).send().await?).await?;
    assert_eq!(
        (status, v["tasks"][0]["id"].clone()),
        (200, json!("web.instance-1._app.1"))
    );
    let (status, v) = body(
        h.http
            .delete(h.url("/v2/apps/web/tasks/web.instance-1._app.1"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, v["task"]["appId"].clone()), (200, json!("/web")));
    let (status, v) = body(
        h.http
            .post(h.url("/v2/tasks/delete?force=1"))
            .json(&json!({"ids": ["web.instance-1._app.1"]}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, v["tasks"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let kills: Vec<_> = h
        .leader
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Kill(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(kills[0].app_ids, vec!["/web".to_string()]);
    assert_eq!(kills[0].host, "agent-1.example");
    assert!(kills[0].scale);
    assert_eq!(kills[2].task_ids, vec!["web.instance-1._app.1".to_string()]);
    assert!(kills[3].force);

    let r = h.http.get(h.url("/metrics/prometheus")).send().await?;
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await?;
    assert!(
        text.contains("stride_api_gateway_http_requests_total"),
        "{text}"
    );
    let (status, v) = body(h.http.get(h.url("/metrics")).send().await?).await?;
    assert_eq!((status, v["version"].clone()), (200, json!("4.0.0")));

    // Without a lease holder there is no leader to show.
    h.store.release(&h.lease).await?;
    let (status, v) = body(h.http.get(h.url("/v2/leader")).send().await?).await?;
    assert_eq!((status, v), (404, json!({"message": "There is no leader"})));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = h.http.get(h.url("/ping")).send().await?;
        if r.headers().get("x-marathon-leader").is_none() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "X-Marathon-Leader outlived the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, info) = body(h.http.get(h.url("/v2/info")).send().await?).await?;
    assert_eq!(
        (info["elected"].clone(), info["leader"].clone()),
        (json!(false), Value::Null)
    );
    h.stop().await
}

fn deployment_event(n: u32) -> Value {
    json!({"eventType": "deployment_info", "n": n, "timestamp": VERSION})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_resume_and_filter() -> anyhow::Result<()> {
    let h = Harness::start_with(|c| c.event_heartbeat = Duration::from_millis(100)).await?;

    let r = h.http.get(h.url("/v2/events")).send().await?;
    assert_eq!(r.status(), 405);

    let mut sse = SseReader::connect(&h, "/v2/events", None).await?;
    let attached = sse.next().await?;
    assert_eq!(attached.event, "event_stream_attached");
    assert_eq!(attached.data["eventType"], "event_stream_attached");
    assert_eq!(attached.data["remoteAddress"], "127.0.0.1");
    assert!(
        attached.id.is_none(),
        "the attach event is not stored and has no id"
    );

    h.publish(&deployment_event(1)).await?;
    let first = sse.next().await?;
    assert_eq!(first.event, "deployment_info");
    assert_eq!(first.data["n"], 1);
    let first_id = first.id.clone().context("stored events carry their id")?;
    h.publish(&deployment_event(2)).await?;
    let second = sse.next().await?;
    assert_eq!(second.data["n"], 2);
    drop(sse);

    h.publish(&deployment_event(3)).await?;
    let mut resumed = SseReader::connect(&h, "/v2/events", Some(&first_id)).await?;
    assert_eq!(resumed.next().await?.event, "event_stream_attached");
    let a = resumed.next().await?;
    let b = resumed.next().await?;
    assert_eq!(
        (a.data["n"].clone(), b.data["n"].clone()),
        (json!(2), json!(3))
    );
    assert!(
        resumed.stays_quiet(Duration::from_millis(300)).await,
        "nothing before or after"
    );
    h.publish(&deployment_event(4)).await?;
    assert_eq!(resumed.next().await?.data["n"], 4);

    let mut filtered = SseReader::connect(
        &h,
        "/v2/events?event_type=deployment_success&event_type=app_terminated_event",
        None,
    )
    .await?;
    h.publish(&deployment_event(5)).await?;
    h.publish(&json!({"eventType": "deployment_success", "id": "d", "timestamp": VERSION}))
        .await?;
    let only = filtered.next().await?;
    assert_eq!(only.event, "deployment_success");
    assert!(filtered.stays_quiet(Duration::from_millis(300)).await);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_ring_reads_the_store() -> anyhow::Result<()> {
    let h = Harness::start_with(|c| c.event_buffer = 2).await?;
    let mut sse = SseReader::connect(&h, "/v2/events?event_type=deployment_info", None).await?;
    h.publish(&deployment_event(1)).await?;
    let first_id = sse.next().await?.id.context("id")?;
    for n in 2..=5 {
        h.publish(&deployment_event(n)).await?;
        assert_eq!(sse.next().await?.data["n"], n);
    }
    // The ring holds 4 and 5; 2 and 3 come from the store.
    let mut resumed =
        SseReader::connect(&h, "/v2/events?event_type=deployment_info", Some(&first_id)).await?;
    for n in 2..=5 {
        assert_eq!(resumed.next().await?.data["n"], n);
    }
    assert!(resumed.stays_quiet(Duration::from_millis(300)).await);
    h.stop().await
}
