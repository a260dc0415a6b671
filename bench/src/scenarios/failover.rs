//! Target 4: two schedulers, the fleet running 100,000 instances; `kill -9` the leader and time
//! until the new leader accepts a write (`POST /v2/apps` answered 201), how long it took to load
//! the state (its `state loaded ... took_ms=` log line), and the scheduler's RSS at that size.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cluster::{rss_bytes, state_loaded_ms, Stack};
use crate::progress;
use crate::report::{Measure, Target};

use super::{app_json, start_fleet, until, Ctx};

const S: &str = "4 · failover";

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measure>> {
    let z = &ctx.sizes;
    let total = z.failover_apps * z.failover_per_app;
    let mut stack = Stack::start(&ctx.bins, 2).await?;
    let fleet = start_fleet(&stack, z.agents).await?;
    let bodies: Vec<String> = (0..z.failover_apps)
        .map(|i| {
            app_json(
                &format!("/bench/app-{i:05}"),
                z.failover_per_app,
                true,
                false,
            )
        })
        .collect();
    stack.http.post_all_retrying("/v2/apps", bodies, 8).await?;
    stack
        .until_running(
            total as u64,
            Duration::from_millis(100),
            Duration::from_secs(120 + total as u64 / 200),
        )
        .await?;
    // Let the deployments finish and the leader settle before measuring it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = stack.leader_index().await.context("no leader")?;
    let standby = 1 - leader;
    let rss = rss_bytes(stack.schedulers[leader].pid()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let standby_rss =
        rss_bytes(stack.schedulers[standby].pid()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let launched = fleet.launched();
    progress!(
        "{S}: {total} instances running; leader RSS {rss:.0} MiB; kill -9 scheduler-{leader}"
    );

    let killed = Instant::now();
    stack.schedulers[leader].kill9();
    let mut k = 0usize;
    let accepted = loop {
        k += 1;
        let body = app_json(&format!("/probe/p-{k:05}"), 0, false, false);
        let r = stack
            .http
            .request(
                reqwest::Method::POST,
                "/v2/apps",
                Some(body),
                Some(Duration::from_secs(2)),
            )
            .await;
        if r.as_ref().is_ok_and(|r| r.status == 201) {
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!(
                "no write accepted 120 s after the leader was killed\n{}",
                super::launch::tail(&stack.schedulers[standby].log_text(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let load_ms = state_loaded_ms(&stack.schedulers[standby].log_text())
        .context("the new leader logged no `state loaded`")?;
    let back = until(
        "every agent to re-register",
        Duration::from_millis(20),
        Duration::from_secs(60),
        || fleet.registered() >= z.agents as i64,
    )
    .await?;
    // Long enough for a pass that would relaunch anything the new leader lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let relaunched = fleet.launched() - launched;
    let stored = stack.running_instances().await?;
    let new_rss = rss_bytes(stack.schedulers[standby].pid()).unwrap_or(0) as f64 / (1 << 20) as f64;
    progress!(
        "{S}: write accepted {:.2} s after kill -9; state loaded in {load_ms} ms; agents back after {:.2} s; {relaunched} relaunched; {stored} stored Running",
        accepted.as_secs_f64(),
        back.duration_since(killed).as_secs_f64()
    );
    fleet.stop().await;
    Ok(vec![
        Measure::new(
            S,
            "kill -9 leader → write accepted by the new leader",
            "s",
            accepted.as_secs_f64(),
        )
        .target(Target::AtMost(3.0)),
        Measure::new(
            S,
            &format!("new leader loads {total} instances (took_ms)"),
            "ms",
            load_ms,
        )
        .target(Target::AtMost(2000.0)),
        Measure::new(S, &format!("leader RSS at {total} instances"), "MiB", rss)
            .target(Target::AtMost(1024.0)),
        Measure::new(S, "standby RSS before the failover", "MiB", standby_rss),
        Measure::new(S, "new leader RSS after the failover", "MiB", new_rss),
        Measure::new(
            S,
            "kill -9 → every agent re-registered",
            "s",
            back.duration_since(killed).as_secs_f64(),
        ),
        Measure::new(
            S,
            "tasks relaunched by the failover",
            "tasks",
            relaunched as f64,
        ),
        Measure::new(
            S,
            "instances stored Running after the failover",
            "instances",
            stored as f64,
        ),
    ])
}
