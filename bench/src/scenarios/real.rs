//! Targets 5 and 6: real work on one real `stride-agent`. `sleep` processes beside a shell loop
//! that forks as many; Docker containers beside as many parallel `docker run -d` and beside
//! Docker Swarm's `docker service create --replicas` on the same engine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::cluster::{cpu_seconds, strip_ansi, Stack};
use crate::progress;
use crate::report::{Measure, Target};

use super::{app_json, Ctx};

/// The image of the containers and of both Docker references.
pub const IMAGE: &str = "stride-test-busybox:latest";

/// Starts a stack with one real agent and waits until the leader has it.
async fn stack_with_agent(ctx: &Ctx) -> anyhow::Result<Stack> {
    let mut stack = Stack::start(&ctx.bins, 1).await?;
    stack.start_agent(&ctx.bins, 64, 65_536)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stack
            .agent
            .as_ref()
            .map(|a| strip_ansi(&a.log_text()))
            .unwrap_or_default();
        if log.contains("registered with the leader") {
            return Ok(stack);
        }
        if Instant::now() > deadline {
            bail!("the agent did not register within 30 s:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs `body`, the app `app`, and times it until `n` of its instances are stored Running.
async fn time_to_running(stack: &Stack, app: &str, body: String, n: usize) -> anyhow::Result<f64> {
    let from = stack.events_end().await?;
    let started = Instant::now();
    let r = stack.http.post("/v2/apps", body).await?;
    if r.status != 201 {
        bail!(
            "POST /v2/apps answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let seen = stack
        .until_running_events(app, n, from, Duration::from_secs(300))
        .await
        .map_err(|e| {
            let log = stack
                .agent
                .as_ref()
                .map(|a| a.log_text())
                .unwrap_or_default();
            anyhow::anyhow!("{e}\n{}", super::launch::tail(&strip_ansi(&log), 20))
        })?;
    Ok(seen.duration_since(started).as_secs_f64())
}

/// Removes an app and waits (a while) until nothing of it is Running.
async fn remove(stack: &Stack, id: &str) {
    let _ = stack.http.delete(&format!("/v2/apps{id}?force=true")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.running_instances().await.unwrap_or(0) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SLEEPS: &str = "5 · sleep tasks, one real agent";

pub async fn sleeps(ctx: &Ctx) -> anyhow::Result<Vec<Measure>> {
    let n = ctx.sizes.sleeps;
    // The loop's own time varies more than Stride's (0.25–0.63 s for 1,000 on this machine), so
    // each run's reference is the median of three loops.
    let mut loops = [shell_loop(n)?, shell_loop(n)?, shell_loop(n)?];
    loops.sort_by(f64::total_cmp);
    let shell = loops[1];
    let stack = stack_with_agent(ctx).await?;
    // CPU time is steadier than wall time on a shared machine: the agent's and the leader's.
    let agent_pid = stack.agent.as_ref().map(|a| a.pid());
    let leader_pid = stack
        .leader_index()
        .await
        .and_then(|i| stack.schedulers.get(i))
        .map(|s| s.pid());
    let cpu = |pid: Option<u32>| pid.and_then(cpu_seconds).unwrap_or(0.0);
    let (agent_before, leader_before) = (cpu(agent_pid), cpu(leader_pid));
    let took = time_to_running(
        &stack,
        "/bench/sleep",
        app_json("/bench/sleep", n, false, false),
        n,
    )
    .await?;
    let per_task_ms = |used: f64| 1000.0 * used / n.max(1) as f64;
    let agent_ms = per_task_ms(cpu(agent_pid) - agent_before);
    let leader_ms = per_task_ms(cpu(leader_pid) - leader_before);
    progress!(
        "{SLEEPS}: {n} sleeps RUNNING in {took:.2} s; the shell loop forks them in {shell:.2} s (median of {:.2} / {:.2} / {:.2}); \
         CPU per task: agent {agent_ms:.2} ms, leader {leader_ms:.2} ms",
        loops[0],
        loops[1],
        loops[2]
    );
    remove(&stack, "/bench/sleep").await;
    Ok(vec![
        Measure::new(
            SLEEPS,
            &format!("{n} sleep tasks: POST → all TASK_RUNNING"),
            "s",
            took,
        )
        .reference(
            &format!("bash loop forking {n} sleeps, median of 3"),
            shell,
            "s",
        )
        .target(Target::RatioAtMost(2.0)),
        Measure::new(SLEEPS, "agent CPU per sleep task", "ms", agent_ms),
        Measure::new(SLEEPS, "leader CPU per sleep task", "ms", leader_ms),
    ])
}

/// `bash -c 'for i in $(seq n); do sleep 1000 & done'`, timed; the sleeps are then killed.
fn shell_loop(n: usize) -> anyhow::Result<f64> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("for i in $(seq {n}); do sleep 1000 & done"))
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()?;
    let pgid = child.id() as i32;
    child.wait()?;
    let took = started.elapsed().as_secs_f64();
    let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
    Ok(took)
}

const CONTAINERS: &str = "6 · Docker containers, one real agent";

pub async fn containers(ctx: &Ctx) -> anyhow::Result<Vec<Measure>> {
    let n = ctx.sizes.containers;
    docker(&["info", "--format", "{{.ServerVersion}}"]).context("no Docker Engine here")?;
    ensure_image()?;
    let parallel = docker_run_parallel(n)?;
    let stack = stack_with_agent(ctx).await?;
    let app = json!({
        "id": "/bench/docker",
        "cmd": "sleep 1000",
        "cpus": 0.01,
        "mem": 32,
        "instances": n,
        "portDefinitions": [],
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}},
    });
    let took = time_to_running(&stack, "/bench/docker", app.to_string(), n).await;
    remove(&stack, "/bench/docker").await;
    remove_containers("stride.app_id=/bench/docker");
    drop(stack);
    let took = took?;
    let swarm = if ctx.swarm {
        swarm_service(n)
    } else {
        Err(anyhow::anyhow!("skipped (--no-swarm)"))
    };
    progress!(
        "{CONTAINERS}: {n} containers RUNNING in {took:.2} s; parallel docker run {parallel:.2} s; swarm {}",
        swarm.as_ref().map_or_else(|e| format!("unavailable ({e})"), |s| format!("{s:.2} s"))
    );
    let mut m = vec![Measure::new(
        CONTAINERS,
        &format!("{n} containers: POST → all TASK_RUNNING"),
        "s",
        took,
    )
    .reference(&format!("{n} parallel docker run -d"), parallel, "s")
    .target(Target::RatioAtMost(1.2))];
    match swarm {
        Ok(s) => m.push(
            Measure::new(
                CONTAINERS,
                &format!("{n} containers, against Docker Swarm"),
                "s",
                took,
            )
            .reference(&format!("docker service create --replicas {n}"), s, "s")
            .target(Target::RatioAtMost(1.0)),
        ),
        Err(e) => progress!("{CONTAINERS}: Docker Swarm reference unavailable: {e:#}"),
    }
    Ok(m)
}

/// Runs `docker args…`; its stdout, or an error with its stderr.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The busybox image the tests use, built by `stride_testkit::ensure_test_image` (from Debian's
/// busybox-static, no registry needed) unless it exists already.
fn ensure_image() -> anyhow::Result<()> {
    stride_testkit::ensure_test_image(IMAGE).map_err(|e| anyhow::anyhow!(e))
}

/// Force-removes every container with `label`.
fn remove_containers(label: &str) {
    let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("label={label}")]) else {
        return;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    for chunk in ids.chunks(50) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk);
        let _ = docker(&args);
    }
}

/// `n` `docker run -d` at once, timed until the last returns (each returns once its container
/// started).
fn docker_run_parallel(n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let children = (0..n)
        .map(|i| {
            Command::new("docker")
                .args(["run", "-d", "--label", "stride-bench=ref"])
                .arg(format!(
                    "--name=stride-bench-ref-{}-{i}",
                    std::process::id()
                ))
                .args([IMAGE, "sleep", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut failed = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            failed.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
    }
    let took = started.elapsed().as_secs_f64();
    remove_containers("stride-bench=ref");
    if let Some(e) = failed.first() {
        bail!("{} of {n} docker run failed: {e}", failed.len());
    }
    Ok(took)
}

/// `docker service create --replicas n` timed until it reports convergence; initialises a
/// single-node swarm first when the engine has none, and leaves it afterwards.
fn swarm_service(n: usize) -> anyhow::Result<f64> {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    let ours = match state.as_str() {
        "inactive" => {
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
            true
        }
        "active" => false,
        other => bail!("the engine's swarm is {other}"),
    };
    let name = format!("stride-bench-{}", std::process::id());
    let replicas = n.to_string();
    let started = Instant::now();
    let created = docker(&[
        "service",
        "create",
        "--detach=false",
        "--quiet",
        "--no-resolve-image",
        "--name",
        &name,
        "--replicas",
        &replicas,
        IMAGE,
        "sleep",
        "1000",
    ]);
    let took = started.elapsed().as_secs_f64();
    let _ = docker(&["service", "rm", &name]);
    let label = format!("com.docker.swarm.service.name={name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while docker(&["ps", "-aq", "--filter", &format!("label={label}")])
        .is_ok_and(|ids| !ids.is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    remove_containers(&label);
    if ours {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
    created?;
    Ok(took)
}
