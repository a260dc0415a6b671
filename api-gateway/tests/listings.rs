//! The app listings, kept up to date from the store's change feed, answer exactly what a gateway
//! that has just read everything answers: after every kind of change the feed carries, after a
//! collection dropped whole, and after the feed no longer reaches back to what a gateway holds.
//! Every read is made straight after the commit it must show.

mod support;

use serde_json::{json, Value};
use stride_core::instance::{Condition, HealthRecord, Instance};
use stride_core::{App, PathId};
use stride_store::{collections, Batch, MemoryStore, StateStore, CHANGE_FEED_MAX_LEN};
use support::*;

/// Every read the snapshot serves, with each embed and filter.
const PATHS: &[&str] = &[
    "/v2/apps",
    "/v2/apps?embed=apps.tasks",
    "/v2/apps?embed=apps.counts&embed=apps.deployments",
    "/v2/apps?embed=apps.readiness",
    "/v2/apps?embed=apps.lastTaskFailure",
    "/v2/apps?embed=apps.taskStats",
    "/v2/apps?embed=apps.tasks,apps.lastTaskFailure,apps.taskStats,apps.readiness",
    "/v2/apps?embed=apps.failures",
    "/v2/apps?cmd=sleep",
    "/v2/apps?id=WEB",
    "/v2/apps?label=tier==front",
    "/v2/apps?label=tier&embed=apps.tasks",
    "/v2/apps/prod/web",
    "/v2/apps/prod/web?embed=app.readiness&embed=app.taskStats",
    "/v2/apps/prod/db",
    "/v2/apps/other/x",
    "/v2/apps/prod/*",
    "/v2/apps/*?embed=apps.tasks",
    "/v2/apps/prod/web/tasks",
    "/v2/apps/prod/*/tasks",
    "/v2/groups?embed=group.apps&embed=group.apps.tasks&embed=group.apps.counts",
];

/// Status and body of `path`; `/v2/tasks`, whose order Marathon leaves open, as a sorted list.
async fn read(h: &Harness, path: &str) -> anyhow::Result<(u16, String)> {
    let r = h.http.get(h.url(path)).send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    if !path.starts_with("/v2/tasks") {
        return Ok((status, text));
    }
    let mut tasks: Vec<String> = serde_json::from_str::<Value>(&text)?["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(Value::to_string)
        .collect();
    tasks.sort();
    Ok((status, tasks.join("\n")))
}

/// `h` answers every read as a gateway started now over the same store does.
async fn same_as_fresh(h: &Harness, step: &str) -> anyhow::Result<()> {
    let fresh = Harness::start_on(h.store.clone(), h.lease.clone(), |c| {
        c.snapshot_refresh_interval = std::time::Duration::ZERO;
    })
    .await?;
    for path in PATHS.iter().chain(&["/v2/tasks"]) {
        let kept = read(h, path).await?;
        let read_afresh = read(&fresh, path).await?;
        assert_eq!(kept, read_afresh, "{step}: GET {path}");
    }
    fresh.stop().await
}

fn put_instance(b: &mut Batch, i: &Instance) -> anyhow::Result<()> {
    b.put(
        collections::INSTANCES,
        i.id.0.clone(),
        serde_json::to_string(i)?,
    );
    Ok(())
}

fn put_app(b: &mut Batch, a: &App) {
    b.put(collections::APPS, a.id.to_string(), a.to_json().to_string());
}

fn failure(app: &App, message: &str) -> Value {
    json!({
        "appId": app.id.to_string(),
        "host": "h1",
        "message": message,
        "state": "TASK_FAILED",
        "taskId": "t1",
        "timestamp": VERSION,
        "version": VERSION,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_listings_match_a_fresh_read_after_every_change() -> anyhow::Result<()> {
    let store = MemoryStore::new();
    let lease = Harness::lease(&store).await?;
    // One gateway syncing only when asked, one also keeping itself current in the background.
    let on_request = Harness::start_on(store.clone(), lease.clone(), |c| {
        c.snapshot_refresh_interval = std::time::Duration::ZERO;
    })
    .await?;
    let kept = Harness::start_on(store, lease, |c| {
        c.snapshot_refresh_interval = std::time::Duration::from_millis(5);
    })
    .await?;
    let (h, background) = (&on_request, &kept);
    let check = |step: &'static str| async move {
        same_as_fresh(h, step).await?;
        same_as_fresh(background, step).await
    };

    let web = app(
        "/prod/web",
        json!({"cmd": "sleep 100", "instances": 2, "labels": {"tier": "front"}}),
    )?;
    let db = app("/prod/db", json!({"cmd": "postgres", "instances": 1}))?;
    let x = app(
        "/other/x",
        json!({"cmd": "true", "labels": {"tier": "back"}}),
    )?;
    let mut web1 = instance(&web, Condition::Running, "h1", &[31000]);
    let web2 = instance(&web, Condition::Staging, "h2", &[31001]);
    let db1 = instance(&db, Condition::Running, "h3", &[]);
    let x1 = instance(&x, Condition::Running, "h1", &[]);
    let mut b = Batch::new();
    put_app(&mut b, &web);
    put_app(&mut b, &db);
    put_app(&mut b, &x);
    for i in [&web1, &web2, &db1, &x1] {
        put_instance(&mut b, i)?;
    }
    b.put(
        collections::DEPLOYMENTS,
        "d1",
        serde_json::to_string(&scaling_plan("d1", &web))?,
    );
    b.put(
        collections::TASK_FAILURES,
        db.id.to_string(),
        failure(&db, "out of memory").to_string(),
    );
    h.commit(b).await?;
    check("everything written at once").await?;

    web1.health = vec![HealthRecord {
        alive: false,
        consecutive_failures: 3,
        first_success: web.version,
        last_success: web.version,
        last_failure: web.version,
        last_failure_cause: Some("503".into()),
    }];
    let mut b = Batch::new();
    put_instance(&mut b, &web1)?;
    h.commit(b).await?;
    check("an instance's health changed").await?;

    let mut b = Batch::new();
    b.delete(collections::INSTANCES, web2.id.0.clone());
    h.commit(b).await?;
    check("an instance deleted").await?;

    let mut moved = db1.clone();
    moved.app_id = x.id.clone();
    let mut b = Batch::new();
    put_instance(&mut b, &moved)?;
    h.commit(b).await?;
    check("an instance key now names another app").await?;

    let web_v2 = app(
        "/prod/web",
        json!({"cmd": "nginx", "instances": 3, "labels": {"tier": "edge"}}),
    )?;
    let mut b = Batch::new();
    put_app(&mut b, &web_v2);
    h.commit(b).await?;
    check("an app's definition changed").await?;

    let mut b = Batch::new();
    b.delete(collections::DEPLOYMENTS, "d1").put(
        collections::DEPLOYMENTS,
        "d2",
        serde_json::to_string(&scaling_plan("d2", &db))?,
    );
    h.commit(b).await?;
    check("one deployment done, another started").await?;

    let mut b = Batch::new();
    b.delete(collections::TASK_FAILURES, db.id.to_string()).put(
        collections::TASK_FAILURES,
        web.id.to_string(),
        failure(&web, "killed").to_string(),
    );
    h.commit(b).await?;
    check("last task failures changed").await?;

    let mut b = Batch::new();
    b.delete(collections::APPS, x.id.to_string());
    h.commit(b).await?;
    check("an app deleted, its instances left").await?;

    let mut b = Batch::new();
    b.put(
        collections::app_versions(&web.id.to_string()),
        VERSION,
        web.to_json().to_string(),
    )
    .event(json!({"eventType": "noise"}).to_string());
    h.commit(b).await?;
    check("nothing the listings show").await?;

    let mut b = Batch::new();
    b.drop_collection(collections::INSTANCES);
    h.commit(b).await?;
    check("every instance dropped").await?;

    let mut b = Batch::new();
    put_instance(&mut b, &x1)?;
    put_app(&mut b, &x);
    h.commit(b).await?;
    for n in 0..CHANGE_FEED_MAX_LEN + 1 {
        let mut b = Batch::new();
        b.put("elsewhere", format!("k{n}"), "v");
        h.commit(b).await?;
    }
    let mut b = Batch::new();
    put_instance(&mut b, &web2)?;
    h.commit(b).await?;
    assert!(
        h.store.changes_since("1").await?.is_none(),
        "the feed no longer reaches the first commit"
    );
    check("the feed no longer reaches back").await?;

    for gw in [on_request, kept] {
        gw.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_straight_after_a_commit_shows_it() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let web = app("/web", json!({"cmd": "sleep 100", "instances": 1}))?;
    h.put_app(&web).await?;
    let mut shown = Vec::new();
    for n in 0..20 {
        let i = instance(&web, Condition::Running, &format!("h{n}"), &[]);
        h.put_instance(&i).await?;
        shown.push(i.id.0.clone());
        let list: Value = h.http.get(h.url("/v2/apps")).send().await?.json().await?;
        assert_eq!(list["apps"][0]["tasksRunning"], json!(n + 1), "listing {n}");
        let one: Value = h
            .http
            .get(h.url("/v2/apps/web"))
            .send()
            .await?
            .json()
            .await?;
        let ids: Vec<&str> = one["app"]["tasks"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["id"].as_str()).collect())
            .unwrap_or_default();
        for id in &shown {
            assert!(
                ids.iter().any(|t| t.starts_with(id.as_str())),
                "app {n}: {id} missing"
            );
        }
    }
    let id = PathId::parse("/web");
    let mut b = Batch::new();
    b.delete(collections::APPS, id.to_string());
    h.commit(b).await?;
    let r = h.http.get(h.url("/v2/apps/web")).send().await?;
    assert_eq!(r.status().as_u16(), 404);
    h.stop().await
}
