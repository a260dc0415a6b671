//! Target 3: the API at 10,000 apps and 100,000 tasks. `GET /v2/apps` and `POST /v2/apps`
//! latencies, one request at a time; `GET /v2/apps/{id}` throughput beside a static actix-web
//! server answering the same bytes, measured with the same client loop.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use stride_testkit::free_port;

use crate::client::{closed_loop, quantile, Http};
use crate::cluster::{CpuMeter, Proc};
use crate::progress;
use crate::report::{Measure, Target};

use super::{app_json, start_fleet, Ctx};

const S: &str = "3 · API at scale";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measure>> {
    let z = &ctx.sizes;
    let total = z.api_apps * z.api_per_app;
    let stack = crate::cluster::Stack::start(&ctx.bins, 1).await?;
    let fleet = start_fleet(&stack, z.agents).await?;
    // Populated in groups of 100 apps (POST /v2/groups), as a large installation is deployed:
    // 10,000 single-app POSTs would measure the POST path at every size on the way, not the
    // reads at this size; and one deployment of 1,000 apps × 10 or more starts more instances
    // at once than the leader places within one lease renewal today (see BENCHMARKS.md). No
    // host ports: 10,000 apps would outnumber Marathon's service port range (10000-20000).
    let per_group = z.api_apps.clamp(1, 100);
    let groups = z.api_apps.div_ceil(per_group);
    progress!(
        "{S}: creating {} apps × {} in {groups} groups",
        z.api_apps,
        z.api_per_app
    );
    let app = |i: usize| -> serde_json::Value {
        serde_json::from_str(&app_json(
            &app_id(i, per_group),
            z.api_per_app,
            false,
            false,
        ))
        .unwrap_or_default()
    };
    let bodies: Vec<String> = (0..groups)
        .map(|g| {
            let apps: Vec<serde_json::Value> = (g * per_group
                ..((g + 1) * per_group).min(z.api_apps))
                .map(app)
                .collect();
            serde_json::json!({"id": format!("/api/g{g:02}"), "apps": apps}).to_string()
        })
        .collect();
    let started = Instant::now();
    let (populate, _) = stack
        .http
        .post_all_retrying("/v2/groups", bodies, 1)
        .await?;
    stack
        .until_running(
            total as u64,
            Duration::from_millis(250),
            Duration::from_secs(300 + total as u64 / 100),
        )
        .await?;
    progress!(
        "{S}: {total} tasks running after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // POST /v2/apps, one at a time, against the full state.
    let mut post = Vec::with_capacity(z.api_posts);
    for k in 0..z.api_posts {
        let r = stack
            .http
            .post(
                "/v2/apps",
                app_json(&format!("/api/extra-{k:04}"), 1, false, false),
            )
            .await?;
        if r.status != 201 {
            bail!(
                "POST /v2/apps answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        post.push(r.took.as_secs_f64() * 1000.0);
    }

    // GET /v2/apps, one at a time.
    let cpu = CpuMeter::start(stack.pids());
    let mut list = Vec::with_capacity(z.api_gets);
    let mut size = 0usize;
    for _ in 0..z.api_gets {
        let r = stack.http.get("/v2/apps").await?;
        if r.status != 200 {
            bail!("GET /v2/apps answered {}", r.status);
        }
        size = r.body.len();
        list.push(r.took.as_secs_f64() * 1000.0);
    }
    let list_cpu = cpu.percent();
    progress!(
        "{S}: GET /v2/apps p50 {:.1} ms p99 {:.1} ms ({:.1} MB); POST p99 {:.1} ms",
        quantile(&list, 0.5),
        quantile(&list, 0.99),
        size as f64 / 1e6,
        quantile(&post, 0.99)
    );
    let mut slowest: Vec<(usize, f64)> = post.iter().copied().enumerate().collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    progress!(
        "{S}: POST /v2/apps p50 {:.1} ms p90 {:.1} ms; slowest (request: ms) {}",
        quantile(&post, 0.5),
        quantile(&post, 0.9),
        slowest
            .iter()
            .take(6)
            .map(|(k, ms)| format!("{k}: {ms:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // GET /v2/apps/{id}: the gateway, then the same bytes from a static server.
    let paths: Vec<String> = (0..z.api_apps)
        .step_by((z.api_apps / 100).max(1))
        .map(|i| format!("/v2/apps{}", app_id(i, per_group)))
        .collect();
    let sample = stack.http.get(&paths[0]).await?;
    if sample.status != 200 {
        bail!("GET {} answered {}", paths[0], sample.status);
    }
    let window = Duration::from_secs(z.api_seconds);
    let cpu = CpuMeter::start(stack.pids());
    let gateway = closed_loop(&stack.http, &paths, 16, Duration::from_secs(1), window).await;
    let one_cpu = cpu.percent();
    let body = stack.dir.path().join("static-body.json");
    std::fs::write(&body, &sample.body)?;
    let reference = static_reference(ctx, &body, &paths, window).await?;
    progress!(
        "{S}: GET /v2/apps/{{id}} {:.0}/s (p99 {:.1} ms, {} errors); static actix-web {:.0}/s",
        gateway.per_second,
        quantile(&gateway.latencies_ms, 0.99),
        gateway.errors,
        reference.per_second
    );
    fleet.stop().await;

    let mut m = vec![
        Measure::new(
            S,
            "GET /v2/apps p99 (sequential)",
            "ms",
            quantile(&list, 0.99),
        )
        .target(Target::AtMost(100.0)),
        Measure::new(
            S,
            "GET /v2/apps p50 (sequential)",
            "ms",
            quantile(&list, 0.5),
        ),
        Measure::new(S, "GET /v2/apps body", "MB", size as f64 / 1e6),
        Measure::new(
            S,
            "POST /v2/apps p99 (sequential, full state)",
            "ms",
            quantile(&post, 0.99),
        )
        .target(Target::AtMost(20.0)),
        Measure::new(
            S,
            "POST /v2/apps p50 (sequential, full state)",
            "ms",
            quantile(&post, 0.5),
        ),
        Measure::new(
            S,
            &format!("POST /v2/groups of {per_group} apps, median"),
            "ms",
            quantile(&populate, 0.5),
        ),
        Measure::new(
            S,
            "GET /v2/apps/{id} throughput (16 in flight)",
            "req/s",
            gateway.per_second,
        )
        .reference(
            "static actix-web, same body and client",
            reference.per_second,
            "req/s",
        ),
        Measure::new(
            S,
            "GET /v2/apps/{id} p99 (16 in flight)",
            "ms",
            quantile(&gateway.latencies_ms, 0.99),
        )
        .reference(
            "static actix-web",
            quantile(&reference.latencies_ms, 0.99),
            "ms",
        ),
    ];
    for (name, pct) in list_cpu {
        if ["gateway", "redis"].contains(&name.as_str()) {
            m.push(Measure::new(
                S,
                &format!("CPU of {name} during GET /v2/apps"),
                "% of a core",
                pct,
            ));
        }
    }
    for (name, pct) in one_cpu {
        if ["gateway", "redis"].contains(&name.as_str()) {
            m.push(Measure::new(
                S,
                &format!("CPU of {name} during GET /v2/apps/{{id}}"),
                "% of a core",
                pct,
            ));
        }
    }
    Ok(m)
}

/// Starts `stride-bench static-server` on a free port, runs the same loop against it.
async fn static_reference(
    ctx: &Ctx,
    body: &std::path::Path,
    paths: &[String],
    window: Duration,
) -> anyhow::Result<crate::client::LoopResult> {
    let port = free_port();
    let dir = body.parent().context("body file has a directory")?;
    let _server = Proc::spawn(
        "static-server",
        &ctx.exe,
        &[
            "static-server".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--body".into(),
            body.display().to_string(),
        ],
        dir,
    )?;
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http.get("/ping").await.is_ok_and(|r| r.status == 200) {
        if Instant::now() > deadline {
            bail!("the static server did not answer");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(closed_loop(&http, paths, 16, Duration::from_secs(1), window).await)
}

/// App `i` of the populated groups.
fn app_id(i: usize, per_group: usize) -> String {
    format!("/api/g{:02}/app-{i:05}", i / per_group)
}
