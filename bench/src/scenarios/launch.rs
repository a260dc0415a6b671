//! Targets 1 and 2: from the first `POST /v2/apps` to every instance `TASK_RUNNING` on the
//! simulated fleet and stored as Running, beside `redis-benchmark`'s pipelined SET rate against
//! the same Redis.
//!
//! Besides the rate, what limits it: each process's CPU and its time spent runnable but waiting
//! for a CPU (other work on the machine), the CPU cost per instance (which does not depend on
//! that other work), whether the leader kept its lease, and how slowly Redis answered. A run that
//! does not finish within its time limit still reports the rate it reached.

use std::time::{Duration, Instant};

use crate::client::quantile;
use crate::cluster::{redis_benchmark, rss_bytes, strip_ansi, CpuMeter, LeaseWatch, Stack};
use crate::progress;
use crate::report::{Measure, Target};

use super::{app_json, start_fleet, until, Ctx};

/// One launch scenario's shape.
pub struct Shape {
    pub scenario: &'static str,
    pub apps: usize,
    pub per_app: usize,
    /// `[["hostname","UNIQUE"],["rack_id","GROUP_BY"]]` on every app.
    pub spread: bool,
    /// Instances a second the issue asks for.
    pub target: f64,
}

/// How long after the fleet the store's events may take to show every instance Running before
/// the store is counted instead.
const EVENTS_AFTER_FLEET: Duration = Duration::from_secs(20);

pub async fn run(ctx: &Ctx, shape: &Shape) -> anyhow::Result<Vec<Measure>> {
    let agents = ctx.sizes.agents;
    let total = shape.apps * shape.per_app;
    let s = shape.scenario;
    let stack = Stack::start(&ctx.bins, 1).await?;
    let sets = redis_benchmark(stack.redis.port)?;
    let fleet = start_fleet(&stack, agents).await?;
    progress!(
        "{s}: {} apps × {} over {agents} agents",
        shape.apps,
        shape.per_app
    );
    let bodies: Vec<String> = (0..shape.apps)
        .map(|i| {
            app_json(
                &format!("/bench/app-{i:05}"),
                shape.per_app,
                true,
                shape.spread,
            )
        })
        .collect();
    // A tenth of the target rate, and at least a minute: enough to report a rate far below it.
    let within = Duration::from_secs(60 + (10.0 * total as f64 / shape.target) as u64);
    let cpu = CpuMeter::start(stack.pids());
    let lease = LeaseWatch::start(&stack.redis.url()).await?;
    let from = stack.events_end().await?;
    let events = tokio::spawn(crate::cluster::until_running_events(
        stack.redis.url(),
        "/bench".into(),
        total,
        from,
        within,
    ));
    let started = Instant::now();
    let posting = stack.http.post_all_retrying("/v2/apps", bodies, 8);
    let (posts, refused) = match tokio::time::timeout(within, posting).await {
        Ok(r) => r?,
        Err(_) => (Vec::new(), 0),
    };
    let posted = started.elapsed();
    let fleet_done = until(
        "every task RUNNING on the fleet",
        Duration::from_millis(5),
        within.saturating_sub(posted),
        || fleet.running() >= total as i64,
    )
    .await
    .ok();
    let lease = lease.finish().await;
    // The store follows the fleet; its event stream says when it has every instance Running.
    // Should the stream have been trimmed past the reader, the store is counted instead (a Lua
    // scan of every instance, which loads Redis while it runs).
    let via_events = match fleet_done {
        Some(_) => match tokio::time::timeout(EVENTS_AFTER_FLEET, events).await {
            Ok(Ok(Ok(seen))) => Ok(Some(seen)),
            Ok(Ok(Err(e))) => Err(format!("{e:#}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("not within {EVENTS_AFTER_FLEET:?} of the fleet")),
        },
        None => {
            events.abort();
            Ok(None)
        }
    };
    let stored = match via_events {
        Ok(seen) => seen,
        Err(why) => {
            progress!("{s}: the event stream did not show every instance Running ({why}); counting the store");
            stack
                .until_running(
                    total as u64,
                    Duration::from_millis(50),
                    within.saturating_sub(started.elapsed()),
                )
                .await
                .ok()
        }
    };
    let finished = stored.is_some();
    let end = stored.unwrap_or_else(Instant::now);
    let took = end.duration_since(started).as_secs_f64();
    let waiting = cpu.waiting_percent();
    let cpu = cpu.percent();
    let count_started = Instant::now();
    let running = stack.running_instances().await?;
    let count_ms = count_started.elapsed().as_secs_f64() * 1000.0;
    if finished && running != total as u64 {
        progress!("{s}: the events showed {total} instances Running, but the store holds {running} Running");
    }
    let done = if finished { total as u64 } else { running };
    let terms = stack.terms().await?;
    let rss = rss_bytes(stack.schedulers[0].pid()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let rate = done as f64 / took;
    progress!(
        "{s}: {done} of {total} instances stored Running in {took:.2} s = {rate:.0}/s{} (POSTs done at {:.2} s, fleet at {}); leader terms {terms}; redis SET -P 64 {sets:.0}/s",
        if finished { "" } else { " — NOT FINISHED within the time limit" },
        posted.as_secs_f64(),
        fleet_done.map_or("never".into(), |t| format!("{:.2} s", t.duration_since(started).as_secs_f64())),
    );
    if !finished {
        progress!(
            "{s}: scheduler log tail:\n{}",
            tail(&strip_ansi(&stack.schedulers[0].log_text()), 15)
        );
    }

    let per_thousand = total as f64 / 1000.0;
    // CPU cost per instance does not depend on what else the machine runs; with it, the rate an
    // idle machine could reach at best (every core busy with this and nothing else).
    let cpu_seconds: f64 = cpu.iter().map(|(_, p)| p / 100.0 * took).sum();
    let scheduler_seconds: f64 = cpu
        .iter()
        .filter(|(n, _)| n.starts_with("scheduler"))
        .map(|(_, p)| p / 100.0 * took)
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut m = vec![
        Measure::new(
            s,
            "instances a second, POST → all TASK_RUNNING and stored",
            "/s",
            rate,
        )
        .reference("redis-benchmark SET -P 64", sets, "SET/s")
        .target(Target::AtLeast(shape.target)),
        Measure::new(
            s,
            "finished within the time limit (1 yes, 0 no)",
            "",
            f64::from(u8::from(finished)),
        )
        .target(Target::AtLeast(1.0)),
        Measure::new(
            s,
            "time, POST → all stored Running (or the limit)",
            "s",
            took,
        ),
        Measure::new(
            s,
            "instances stored Running at the end",
            "instances",
            running as f64,
        )
        .target(Target::AtLeast(total as f64)),
        Measure::new(
            s,
            "leader terms (1: the leader kept its lease)",
            "terms",
            terms as f64,
        )
        .target(Target::AtMost(1.0)),
        Measure::new(
            s,
            "POSTs refused for want of a leader, then retried",
            "POSTs",
            refused as f64,
        ),
        Measure::new(
            s,
            "tasks launched on the fleet (above the instances: relaunches)",
            "tasks",
            fleet.launched() as f64,
        ),
    ];
    if shape.apps > 1 && !posts.is_empty() {
        m.push(Measure::new(
            s,
            "POST /v2/apps p99 while launching (8 in flight)",
            "ms",
            quantile(&posts, 0.99),
        ));
    }
    m.push(Measure::new(
        s,
        "CPU-seconds per 1,000 instances, all processes",
        "CPU-s",
        cpu_seconds * total as f64 / done.max(1) as f64 / per_thousand,
    ));
    m.push(Measure::new(
        s,
        "CPU-seconds per 1,000 instances, scheduler",
        "CPU-s",
        scheduler_seconds * total as f64 / done.max(1) as f64 / per_thousand,
    ));
    m.push(Measure::new(
        s,
        &format!("rate at that cost on {cores} idle cores, all busy"),
        "/s",
        cores * done as f64 / cpu_seconds.max(1e-9),
    ));
    for (name, pct) in cpu {
        m.push(Measure::new(
            s,
            &format!("CPU of {name}"),
            "% of a core",
            pct,
        ));
    }
    for (name, pct) in waiting {
        if name.starts_with("scheduler") || name == "redis" {
            m.push(Measure::new(
                s,
                &format!("{name} runnable but waiting for a CPU"),
                "% of the time",
                pct,
            ));
        }
    }
    m.push(Measure::new(s, "scheduler RSS after", "MiB", rss));
    m.push(Measure::new(
        s,
        "lowest lease TTL left (2 s lease)",
        "ms",
        lease.min_ttl_ms as f64,
    ));
    m.push(Measure::new(
        s,
        "slowest Redis answer to PTTL, POST → fleet done",
        "ms",
        lease.max_rtt_ms,
    ));
    m.push(Measure::new(
        s,
        "this bench's store check (Lua scan of every instance)",
        "ms",
        count_ms,
    ));
    fleet.stop().await;
    Ok(m)
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
