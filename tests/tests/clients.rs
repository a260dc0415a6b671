//! Marathon's own clients, unchanged, against Stride: the Python `marathon` package, the DC/OS
//! CLI's `dcos marathon` commands, and Prometheus' `marathon_sd` service discovery.
//! `scripts/test` installs them (a virtualenv under `target/venv-clients`, Debian's
//! `prometheus`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use stride_tests::{free_port, Api, Dev, Proc};

fn venv() -> PathBuf {
    let v = std::env::var_os("STRIDE_CLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv-clients"));
    assert!(
        v.join("bin/python").exists(),
        "{} is missing: scripts/test installs Marathon's clients there",
        v.display()
    );
    v
}

/// Runs a command: (success, stdout, stdout and stderr).
fn run_split(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout, text)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let (ok, _, text) = run_split(cmd);
    (ok, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_marathon_client_works_unchanged() {
    let dev = Dev::start().await;
    let api = dev.api.clone();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/marathon_python.py");
    let (ok, out) = tokio::task::spawn_blocking({
        let py = venv().join("bin/python");
        let base = api.base.clone();
        move || run(Command::new(py).arg(script).arg(base))
    })
    .await
    .expect("join");
    assert!(
        ok,
        "marathon-python against Stride:\n{out}\n{}",
        dev.proc.log_text()
    );
    println!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dcos_cli_marathon_commands_work() {
    let dev = Dev::start().await;
    let api = dev.api.clone();
    let dir = &dev.dir;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dcos = venv().join("bin/dcos");
    let base = api.base.clone();
    let app_file = dir.path().join("app.json");
    std::fs::write(
        &app_file,
        r#"{"id":"/cli-app","cmd":"sleep 100000","cpus":0.1,"mem":16,"instances":2}"#,
    )
    .expect("write");
    let group_file = dir.path().join("group.json");
    std::fs::write(
        &group_file,
        r#"{"id":"/cli-group","apps":[{"id":"one","cmd":"sleep 100000","cpus":0.1,"mem":16}]}"#,
    )
    .expect("write");
    let out = tokio::task::spawn_blocking(move || {
        let cli = |args: &[&str]| -> (bool, String) {
            run(Command::new(&dcos)
                .args(args)
                .env("HOME", &home)
                .env("DCOS_CONFIG", home.join("dcos.toml")))
        };
        let mut log = String::new();
        let mut check = |args: &[&str], want: &str| -> String {
            let (ok, out) = cli(args);
            log.push_str(&format!("$ dcos {}\n{out}\n", args.join(" ")));
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            assert!(
                ok && out.contains(want),
                "dcos {}: expected {want:?}\n...{tail}",
                args.join(" ")
            );
            out
        };
        check(&["config", "set", "core.dcos_url", &base], "");
        check(&["config", "set", "marathon.url", &base], "");
        check(&["marathon", "about"], "\"name\": \"marathon\"");
        check(
            &[
                "marathon",
                "app",
                "add",
                app_file.to_str().unwrap_or_default(),
            ],
            "Created deployment",
        );
        let mut tries = 0;
        loop {
            let (_, out, _) = run_split(
                Command::new(venv().join("bin/dcos"))
                    .args(["marathon", "app", "list", "--json"])
                    .env("HOME", &home)
                    .env("DCOS_CONFIG", home.join("dcos.toml")),
            );
            let apps: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            if apps[0]["tasksRunning"] == 2 {
                break;
            }
            tries += 1;
            assert!(tries < 100, "the app did not reach 2 running tasks: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
        check(
            &["marathon", "app", "show", "/cli-app"],
            "\"cmd\": \"sleep 100000\"",
        );
        check(&["marathon", "task", "list"], "/cli-app");
        check(
            &["marathon", "app", "update", "/cli-app", "instances=3"],
            "Created deployment",
        );
        check(&["marathon", "app", "version", "list", "/cli-app"], "Z\"");
        // With nothing deploying, the CLI says so and exits 1 (as against Marathon).
        let (_, out) = cli(&["marathon", "deployment", "list"]);
        assert!(
            out.contains("There are no deployments") || out.contains("APP"),
            "{out}"
        );
        check(
            &["marathon", "app", "restart", "/cli-app"],
            "Created deployment",
        );
        check(
            &[
                "marathon",
                "group",
                "add",
                group_file.to_str().unwrap_or_default(),
            ],
            "Created deployment",
        );
        check(&["marathon", "group", "list"], "/cli-group");
        check(
            &["marathon", "group", "show", "/cli-group"],
            "/cli-group/one",
        );
        check(&["marathon", "group", "remove", "/cli-group"], "");
        check(&["marathon", "app", "remove", "/cli-app"], "");
        let (_, out) = cli(&["marathon", "debug", "list"]);
        assert!(!out.contains("Traceback"), "{out}");
        log
    })
    .await
    .expect("join");
    println!("{out}");
    api.until(
        Duration::from_secs(30),
        "every app to be gone",
        |api| async move {
            (api.try_get("/v2/apps").await?.body["apps"] == serde_json::json!([])).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_tasks_with_marathon_sd() {
    let dev = Dev::start().await;
    let api = dev.api.clone();
    let dir = &dev.dir;
    let r = api
        .post("/v2/apps", r#"{"id":"/metrics-app","cmd":"python3 -m http.server $PORT0 --bind 127.0.0.1","cpus":0.1,"mem":32,"instances":2,"labels":{"team":"core"}}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tasks = api
        .until_running("/metrics-app", 2, Duration::from_secs(60))
        .await;
    let mut endpoints: Vec<String> = tasks
        .iter()
        .map(|t| format!("{}:{}", t["host"].as_str().unwrap_or(""), t["ports"][0]))
        .collect();
    endpoints.sort();

    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stride\n    marathon_sd_configs:\n      - servers: ['{}']\n        refresh_interval: 1s\n",
            api.base
        ),
    )
    .expect("config");
    let _prom = Proc::spawn(
        "prometheus",
        Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
        ],
        dir.path(),
    );
    let prom = Api::new(&format!("http://127.0.0.1:{port}"));
    let found = prom
        .until(
            Duration::from_secs(60),
            "Prometheus to discover both tasks",
            |p| {
                let endpoints = endpoints.clone();
                async move {
                    let r = p.try_get("/api/v1/targets").await?;
                    let targets = r.body["data"]["activeTargets"].as_array()?.clone();
                    let mut seen: Vec<String> = targets
                        .iter()
                        .filter(|t| t["discoveredLabels"]["__meta_marathon_app"] == "/metrics-app")
                        .filter_map(|t| {
                            t["discoveredLabels"]["__address__"]
                                .as_str()
                                .map(str::to_string)
                        })
                        .collect();
                    seen.sort();
                    (seen == endpoints).then_some(targets)
                }
            },
        )
        .await;
    let t = found
        .iter()
        .find(|t| t["discoveredLabels"]["__meta_marathon_app"] == "/metrics-app")
        .expect("a target");
    assert_eq!(
        t["discoveredLabels"]["__meta_marathon_app_label_team"],
        "core"
    );
}
