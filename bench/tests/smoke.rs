//! CI's smoke test of the benchmarks: `stride-bench --quick`, one run of every scenario, against
//! the debug binaries that `cargo build --workspace --bins --tests` (scripts/test) already made,
//! so CI needs no release build. The figures of a debug build mean nothing; what is checked is
//! that every scenario runs to the end, that every instance reached `TASK_RUNNING` and was
//! stored Running, and that the report carries each figure with its reference.
//!
//! The Docker scenario runs when an engine answers `docker info`, without the Swarm reference
//! (`--no-swarm`: a swarm initialised on a shared engine would be seen by other tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// The quick sizes, passed explicitly so that the assertions below know them.
const AGENTS: usize = 100;
const APPS: usize = 20;
const PER_APP: usize = 100;
const TOTAL: usize = APPS * PER_APP;

fn bin_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_stride-bench"));
    let dir = exe
        .parent()
        .expect("the bench binary has a directory")
        .to_path_buf();
    for name in ["stride-scheduler", "stride-api-gateway", "stride-agent"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
            dir.join(name).display()
        );
    }
    dir
}

/// Runs one scenario in quick mode; its JSON report.
fn run(scenario: &str) -> Value {
    let out_dir = tempfile::tempdir().expect("a temporary directory");
    let json = out_dir.path().join("results.json");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stride-bench"))
        .arg("--quick")
        .args(["--agents", &AGENTS.to_string()])
        .args(["--apps", &APPS.to_string()])
        .args(["--per-app", &PER_APP.to_string()])
        .args(["--instances", &TOTAL.to_string()])
        .arg("--no-swarm")
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--json")
        .arg(&json)
        .arg(scenario)
        .output()
        .expect("stride-bench starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{scenario}: {:.1} s\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "stride-bench --quick {scenario} failed ({}):\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report was written");
    let report: Value = serde_json::from_str(&text).expect("the JSON report parses");
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(0),
        "{scenario}: {}",
        report["errors"]
    );
    report
}

/// The row whose figure starts with `metric`.
fn row<'a>(report: &'a Value, metric: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["metric"].as_str().is_some_and(|m| m.starts_with(metric)))
        })
        .unwrap_or_else(|| panic!("no figure `{metric}…` in {}", report["rows"]))
}

/// The median of a figure, which must be a finite number (NaN serialises as null).
fn median(report: &Value, metric: &str) -> f64 {
    let r = row(report, metric);
    let v = r["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("`{metric}` has no number: {r}"));
    assert!(v.is_finite(), "`{metric}` is {v}");
    v
}

/// A figure's reference median, which must be positive.
fn reference(report: &Value, metric: &str) -> f64 {
    let r = row(report, metric);
    let v = r["reference_median"]
        .as_f64()
        .unwrap_or_else(|| panic!("`{metric}` has no reference: {r}"));
    assert!(v > 0.0, "the reference of `{metric}` is {v}");
    v
}

fn check_launch(report: &Value) {
    let rate = "instances a second, POST → all TASK_RUNNING and stored";
    assert!(median(report, rate) > 0.0);
    reference(report, rate);
    assert_eq!(
        median(report, "finished within the time limit"),
        1.0,
        "every instance must reach TASK_RUNNING and be stored Running"
    );
    assert_eq!(
        median(report, "instances stored Running at the end"),
        TOTAL as f64
    );
    assert!(median(report, "tasks launched on the fleet") >= TOTAL as f64);
    assert!(median(report, "scheduler RSS after") > 0.0);
    assert!(median(report, "CPU-seconds per 1,000 instances, scheduler") > 0.0);
}

#[test]
fn quick_mode_runs_every_scenario_to_the_end() {
    for scenario in ["launch-many", "launch-one", "launch-spread"] {
        check_launch(&run(scenario));
    }

    let api = run("api");
    for metric in [
        "GET /v2/apps p99",
        "GET /v2/apps p50",
        "POST /v2/apps p99",
        "POST /v2/apps p50",
    ] {
        assert!(median(&api, metric) > 0.0, "{metric}");
    }
    assert!(median(&api, "GET /v2/apps body") > 0.0);
    assert!(median(&api, "GET /v2/apps/{id} throughput") > 0.0);
    reference(&api, "GET /v2/apps/{id} throughput");
    reference(&api, "GET /v2/apps/{id} p99");

    let failover = run("failover");
    assert!(median(&failover, "kill -9 leader → write accepted") > 0.0);
    assert!(median(&failover, "new leader loads") >= 0.0);
    assert!(median(&failover, "leader RSS at") > 0.0);
    assert_eq!(
        median(&failover, "instances stored Running after the failover"),
        TOTAL as f64
    );

    let sleeps = run("sleeps");
    assert!(median(&sleeps, "100 sleep tasks: POST → all TASK_RUNNING") > 0.0);
    reference(&sleeps, "100 sleep tasks");

    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if docker {
        let containers = run("containers");
        assert!(median(&containers, "10 containers: POST → all TASK_RUNNING") > 0.0);
        reference(&containers, "10 containers: POST");
    } else {
        eprintln!("no Docker Engine answers `docker info`: the containers scenario is skipped");
    }
}
