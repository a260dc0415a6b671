//! Target 4: two schedulers, the fleet running 100,000 instances; `kill -9` the leader and time
//! until the new leader accepts a write (`POST /v2/apps` answered 201), how long it took to load
//! the state (its `state loaded ... took_ms=` log line), and the scheduler's RSS at that size.
//!
//! The standby keeps a mirror of the state, so the first takeover loads from it: built ahead
//! while the dead leader's lease ran out (`from=mirror-ahead`), or caught up and built after the
//! election (`from=mirror`). So that the cold figure stays in view, the killed scheduler is then
//! started again without a mirror (`--standby-poll 0s`) and the new leader killed in turn: that
//! second takeover reads everything from the store (`from=store`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cluster::{mirror_read_ms, rss_bytes, state_loaded, Stack, StateLoaded};
use crate::fleet::Fleet;
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
    progress!(
        "{S}: {total} instances running; leader RSS {rss:.0} MiB, standby {standby_rss:.0} MiB"
    );

    let warm = take_over(&mut stack, &fleet, leader, "p", z.agents).await?;
    if !warm.loaded.from.starts_with("mirror") {
        progress!(
            "{S}: the first takeover loaded from the {}, not from the standby's mirror",
            warm.loaded.from
        );
    }
    let new_rss = rss_bytes(stack.schedulers[standby].pid()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let mirror_ms = mirror_read_ms(&stack.schedulers[standby].log_text());

    // The killed scheduler again, standing by without a mirror; then the leader killed.
    stack.restart_scheduler(&ctx.bins, leader, &["--standby-poll", "0s"], "cold")?;
    until(
        "the restarted scheduler to start",
        Duration::from_millis(20),
        Duration::from_secs(30),
        || {
            stack.schedulers[leader]
                .log_text()
                .contains("scheduler starting")
        },
    )
    .await?;
    // Its elector campaigns from then on, and the warm takeover returned with every agent back.
    let cold = take_over(&mut stack, &fleet, standby, "q", z.agents).await?;
    fleet.stop().await;
    Ok(vec![
        Measure::new(
            S,
            "kill -9 leader → write accepted by the new leader",
            "s",
            warm.accepted.as_secs_f64(),
        )
        .target(Target::AtMost(3.0)),
        Measure::new(
            S,
            &format!(
                "new leader loads {total} instances (took_ms, from={})",
                warm.loaded.from
            ),
            "ms",
            warm.loaded.took_ms,
        )
        .target(Target::AtMost(2000.0)),
        Measure::new(
            S,
            "… of which the catch-up read (read_ms)",
            "ms",
            warm.loaded.read_ms,
        ),
        Measure::new(
            S,
            "… of which building the state after the election (build_ms)",
            "ms",
            warm.loaded.build_ms,
        ),
        Measure::new(
            S,
            "state built ahead, before the election (built_ahead_ms)",
            "ms",
            warm.loaded.built_ahead_ms,
        ),
        Measure::new(S, &format!("leader RSS at {total} instances"), "MiB", rss)
            .target(Target::AtMost(1024.0)),
        Measure::new(
            S,
            "standby RSS before the failover (with its mirror)",
            "MiB",
            standby_rss,
        ),
        Measure::new(S, "new leader RSS after the failover", "MiB", new_rss),
        Measure::new(
            S,
            "kill -9 → every agent re-registered",
            "s",
            warm.agents_back.as_secs_f64(),
        ),
        Measure::new(
            S,
            "tasks relaunched by the failover",
            "tasks",
            warm.relaunched as f64,
        ),
        Measure::new(
            S,
            "instances stored Running after the failover",
            "instances",
            warm.stored as f64,
        ),
        Measure::new(
            S,
            "standby's last full read of its mirror (took_ms, no build)",
            "ms",
            mirror_ms.unwrap_or(f64::NAN),
        ),
        Measure::new(
            S,
            "cold: kill -9 → write accepted, standby without a mirror",
            "s",
            cold.accepted.as_secs_f64(),
        ),
        Measure::new(
            S,
            &format!(
                "cold: new leader loads {total} instances (took_ms, from={})",
                cold.loaded.from
            ),
            "ms",
            cold.loaded.took_ms,
        ),
        Measure::new(
            S,
            "cold: … of which reading everything (read_ms)",
            "ms",
            cold.loaded.read_ms,
        ),
        Measure::new(
            S,
            "cold: … of which building the state (build_ms)",
            "ms",
            cold.loaded.build_ms,
        ),
        Measure::new(
            S,
            "cold: kill -9 → every agent re-registered",
            "s",
            cold.agents_back.as_secs_f64(),
        ),
        Measure::new(
            S,
            "cold: tasks relaunched by the failover",
            "tasks",
            cold.relaunched as f64,
        ),
    ])
}

/// What one takeover took.
struct TakeOver {
    accepted: Duration,
    loaded: StateLoaded,
    agents_back: Duration,
    relaunched: u64,
    stored: u64,
}

/// `kill -9` scheduler `leader`, then time until the other accepts a write (apps named
/// `/probe/<probe>-…`) and every agent is back with it.
async fn take_over(
    stack: &mut Stack,
    fleet: &Fleet,
    leader: usize,
    probe: &str,
    agents: usize,
) -> anyhow::Result<TakeOver> {
    let standby = 1 - leader;
    let launched = fleet.launched();
    progress!("{S}: kill -9 scheduler-{leader}");
    let killed = Instant::now();
    stack.schedulers[leader].kill9();
    let mut k = 0usize;
    let accepted = loop {
        k += 1;
        let body = app_json(&format!("/probe/{probe}-{k:05}"), 0, false, false);
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
    let loaded = state_loaded(&stack.schedulers[standby].log_text())
        .context("the new leader logged no `state loaded`")?;
    let back = until(
        "every agent to re-register",
        Duration::from_millis(20),
        Duration::from_secs(60),
        || fleet.registered() >= agents as i64,
    )
    .await?;
    // Long enough for a pass that would relaunch anything the new leader lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let relaunched = fleet.launched() - launched;
    let stored = stack.running_instances().await?;
    progress!(
        "{S}: write accepted {:.2} s after kill -9; state loaded from={} in {} ms (read {} ms, build {} ms, built ahead {} ms); agents back after {:.2} s; {relaunched} relaunched; {stored} stored Running",
        accepted.as_secs_f64(),
        loaded.from,
        loaded.took_ms,
        loaded.read_ms,
        loaded.build_ms,
        loaded.built_ahead_ms,
        back.duration_since(killed).as_secs_f64()
    );
    Ok(TakeOver {
        accepted,
        loaded,
        agents_back: back.duration_since(killed),
        relaunched,
        stored,
    })
}
