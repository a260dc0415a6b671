//! The `stride` client as a script meets it: a real `stride dev`, the real binary run as a
//! process, and its stdout, stderr and exit code checked against the contract in `docs/cli.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use stride_tests::{free_port, kill_tasks_under, Api, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_stride");

/// What a finished `stride` run left.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self:?}"))
    }
}

/// A `stride` run in progress; its output goes to files, so it can be read while it runs.
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    args: Vec<String>,
}

impl Running {
    fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the exit, killing the run and failing the test after `within`.
    fn finish(mut self, within: Duration) -> Out {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Out {
                        code: status.code().unwrap_or(-1),
                        stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                        stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    }
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "stride {:?} did not exit within {within:?}; stderr:\n{}",
                        self.args,
                        self.stderr_so_far()
                    );
                }
            }
        }
    }
}

/// Runs `stride` against one API, from one scratch directory.
struct Cli {
    url: String,
    dir: PathBuf,
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

impl Cli {
    fn spawn(&self, args: &[&str], stdin: Option<&str>) -> Running {
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let stdout = self.dir.join(format!("run-{n}.out"));
        let stderr = self.dir.join(format!("run-{n}.err"));
        let mut all: Vec<String> = Vec::new();
        if !args.contains(&"--url") {
            all.extend(["--url".to_string(), self.url.clone()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(BIN);
        cmd.args(&all)
            .current_dir(&self.dir)
            .env_remove("STRIDE_URL")
            .env_remove("STRIDE_TOKEN")
            .env_remove("STRIDE_CREDENTIALS")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("start stride");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        Running {
            child,
            stdout,
            stderr,
            args: all,
        }
    }

    /// Runs `stride <args>` to its end (30 s at most).
    fn run(&self, args: &[&str]) -> Out {
        self.spawn(args, None).finish(Duration::from_secs(30))
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        self.spawn(args, Some(stdin))
            .finish(Duration::from_secs(30))
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).expect("write file");
        p.display().to_string()
    }

    /// Runs `stride <args>` until `check` accepts its output, or fails after `within`.
    fn until(
        &self,
        within: Duration,
        what: &str,
        args: &[&str],
        check: impl Fn(&Out) -> bool,
    ) -> Out {
        let deadline = Instant::now() + within;
        loop {
            let out = self.run(args);
            if check(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last run: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `stride dev` on a free port; its tasks die with the test, even a failed one.
struct Dev {
    proc: Proc,
    work: PathBuf,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start(rt: &tokio::runtime::Runtime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let work = dir.path().join("work");
        let proc = Proc::spawn(
            "stride-dev",
            Path::new(BIN),
            &[
                "dev".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--work-dir".into(),
                work.display().to_string(),
            ],
            dir.path(),
        );
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        rt.block_on(api.until(
            Duration::from_secs(30),
            "stride dev to answer /ping",
            |api| async move {
                api.try_get("/ping")
                    .await
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        ));
        Self {
            proc,
            work,
            api,
            _dir: dir,
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== stride dev =====\n{}", self.proc.log_text());
        }
        self.proc.terminate(Duration::from_secs(10));
        kill_tasks_under(&self.work);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

const SLEEPY: &str = r#"{"id":"/sleepy","cmd":"sleep 1000","cpus":0.01,"mem":16,"instances":1,"portDefinitions":[]}"#;
/// Asks for more CPUs than any agent here has, so its deployment stays open.
const BLOCKED: &str = r#"{"id":"/blocked","cmd":"sleep 1000","cpus":4096,"mem":16,"instances":1,"portDefinitions":[]}"#;

#[test]
fn the_client_drives_a_live_stride() {
    let rt = runtime();
    let dev = Dev::start(&rt);
    let tmp = scratch();
    let cli = Cli {
        url: dev.api.base.clone(),
        dir: tmp.path().to_path_buf(),
    };
    let api = &dev.api;

    let ping = cli.run(&["ping"]);
    assert_eq!((ping.code, ping.stdout.trim()), (0, "pong"), "{ping:?}");

    // add --wait: exits 0 once the deployment is over, with the instance running.
    let file = cli.file("sleepy.json", SLEEPY);
    let add = cli
        .spawn(&["app", "add", &file, "--wait", "--timeout", "60s"], None)
        .finish(Duration::from_secs(90));
    assert_eq!(add.code, 0, "{add:?}");
    assert!(add.stdout.contains("Created app /sleepy"), "{add:?}");
    assert!(add.stderr.contains("finished"), "{add:?}");
    let again = cli.run(&["app", "add", &file]);
    assert_eq!(again.code, 4, "an app that exists: {again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");
    let app = rt.block_on(api.get("/v2/apps/sleepy")).body;
    assert_eq!(app["app"]["tasksRunning"], 1, "{app}");
    assert_eq!(app["app"]["deployments"], serde_json::json!([]), "{app}");

    // list, as JSON and as a table.
    let list = cli.run(&["app", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let apps = list.json();
    let sleepy = apps["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "/sleepy"))
        .unwrap_or_else(|| panic!("no /sleepy in {apps}"));
    assert_eq!(sleepy["instances"], 1);
    let table = cli.run(&["app", "list"]);
    assert_eq!(table.code, 0, "{table:?}");
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("INSTANCES") && header.contains("STATUS"),
        "{table:?}"
    );
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("/sleepy "))
        .unwrap_or_else(|| panic!("no row for /sleepy: {table:?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["/sleepy", "1/1", "-", "0.01", "16", "Running"],
        "{row}"
    );

    // scale --wait: three running by the time it exits.
    let scale = cli
        .spawn(
            &["app", "scale", "sleepy", "3", "--wait", "--timeout", "60s"],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(scale.code, 0, "{scale:?}");
    rt.block_on(api.until_running("/sleepy", 3, Duration::from_secs(5)));

    let show = cli.run(&["app", "show", "/sleepy"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("3 running / 3 wanted"), "{show:?}");
    assert_eq!(show.stdout.matches("TASK_RUNNING").count(), 3, "{show:?}");
    let tasks = cli.run(&["app", "tasks", "sleepy", "--json"]);
    assert_eq!(
        tasks.json()["tasks"].as_array().map(Vec::len),
        Some(3),
        "{tasks:?}"
    );
    let versions = cli.run(&["app", "versions", "sleepy"]);
    assert_eq!(versions.code, 0, "{versions:?}");
    assert!(versions.stdout.lines().count() >= 2, "{versions:?}");

    // key=value update keeps the rest of env.
    let upd = cli
        .spawn(
            &[
                "app",
                "update",
                "sleepy",
                "env.A=1",
                "env.B=two",
                "--wait",
                "--timeout",
                "60s",
            ],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(upd.code, 0, "{upd:?}");
    let upd = cli.run(&["app", "update", "sleepy", "env.C=3"]);
    assert_eq!(upd.code, 0, "{upd:?}");
    let env = rt.block_on(api.get("/v2/apps/sleepy")).body["app"]["env"].clone();
    assert_eq!(env, serde_json::json!({"A": "1", "B": "two", "C": "3"}));

    // Not found: 3, with the API's message.
    let missing = cli.run(&["app", "show", "missing"]);
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(missing.stderr.contains("does not exist"), "{missing:?}");
    assert_eq!(cli.run(&["app", "scale", "missing", "2"]).code, 3);

    // An invalid definition: 1, with the 422 details as `path: error` lines.
    let bad = cli.file(
        "bad.json",
        r#"{"id":"/bad","cmd":"sleep 1","cpus":-1,"mem":16,"instances":-2}"#,
    );
    let invalid = cli.run(&["app", "add", &bad]);
    assert_eq!(invalid.code, 1, "{invalid:?}");
    let detail_lines: Vec<&str> = invalid
        .stderr
        .lines()
        .filter(|l| l.starts_with('/') && l.contains(": "))
        .collect();
    assert!(!detail_lines.is_empty(), "{invalid:?}");
    assert!(
        detail_lines
            .iter()
            .any(|l| l.starts_with("/cpus") || l.starts_with("/instances")),
        "{invalid:?}"
    );

    // An app that cannot be placed keeps its deployment open (read from stdin here).
    let blocked = cli.run_stdin(&["app", "add", "-"], BLOCKED);
    assert_eq!(blocked.code, 0, "{blocked:?}");
    let deployments = cli.run(&["deployment", "list", "--json"]).json();
    let blocked_deployment = deployments
        .as_array()
        .and_then(|ds| {
            ds.iter()
                .find(|d| d["affectedApps"] == serde_json::json!(["/blocked"]))
        })
        .and_then(|d| d["id"].as_str())
        .unwrap_or_else(|| panic!("no deployment of /blocked in {deployments}"))
        .to_string();
    let table = cli.run(&["deployment", "list"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&blocked_deployment)
                && l.contains("/blocked")
                && l.contains("ScaleApplication /blocked")),
        "{table:?}"
    );
    cli.until(
        Duration::from_secs(30),
        "/blocked to show as Waiting",
        &["app", "list"],
        |o| {
            o.stdout
                .lines()
                .any(|l| l.starts_with("/blocked ") && l.ends_with("Waiting"))
        },
    );
    let queue = cli.run(&["queue"]);
    assert_eq!(queue.code, 0, "{queue:?}");
    assert!(queue.stdout.starts_with("APP"), "{queue:?}");
    let queued = queue
        .stdout
        .lines()
        .find(|l| l.starts_with("/blocked "))
        .unwrap_or_else(|| panic!("no /blocked in the queue: {queue:?}"));
    assert!(
        queued.contains("Waiting") && queued.contains("InsufficientCpus"),
        "{queued}"
    );
    let reset = cli.run(&["queue", "reset", "blocked"]);
    assert_eq!(reset.code, 0, "{reset:?}");

    // A conflicting update: 4, with the 409 message.
    let conflict = cli.run(&["app", "update", "blocked", "instances=2"]);
    assert_eq!(conflict.code, 4, "{conflict:?}");
    assert!(
        conflict
            .stderr
            .contains("App is locked by one or more deployments"),
        "{conflict:?}"
    );
    let file_conflict = cli.file("two.json", r#"{"instances":2}"#);
    assert_eq!(
        cli.run(&["app", "update", "blocked", &file_conflict]).code,
        4
    );

    // A wait that runs out: 6, and the deployment goes on.
    let watch = cli.run(&[
        "deployment",
        "watch",
        &blocked_deployment,
        "--timeout",
        "1s",
    ]);
    assert_eq!(watch.code, 6, "{watch:?}");
    assert!(watch.stderr.contains("timed out"), "{watch:?}");
    assert_eq!(
        cli.run(&[
            "deployment",
            "watch",
            "no-such-deployment",
            "--timeout",
            "1s"
        ])
        .code,
        3
    );

    // A rollback ends the watched deployment as failed (5); the rollback itself succeeds.
    let watcher = cli.spawn(
        &[
            "deployment",
            "watch",
            &blocked_deployment,
            "--timeout",
            "60s",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watcher.stderr_so_far().contains("steps") {
        assert!(Instant::now() < deadline, "the watcher showed no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rollback = cli
        .spawn(
            &[
                "deployment",
                "rollback",
                &blocked_deployment,
                "--wait",
                "--timeout",
                "60s",
            ],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(rollback.code, 0, "{rollback:?}");
    assert!(
        rollback.stdout.contains("Rolling back deployment"),
        "{rollback:?}"
    );
    let watched = watcher.finish(Duration::from_secs(30));
    assert_eq!(watched.code, 5, "{watched:?}");
    assert!(watched.stderr.contains("failed"), "{watched:?}");
    assert_eq!(rt.block_on(api.get("/v2/apps/blocked")).status, 404);

    // Groups.
    let group = cli.file(
        "group.json",
        r#"{"id":"/grp","apps":[{"id":"web","cmd":"sleep 1000","cpus":0.01,"mem":16,"instances":1,"portDefinitions":[]}]}"#,
    );
    let gadd = cli
        .spawn(
            &["group", "add", &group, "--wait", "--timeout", "60s"],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(gadd.code, 0, "{gadd:?}");
    rt.block_on(api.until_running("/grp/web", 1, Duration::from_secs(5)));
    let gshow = cli.run(&["group", "show", "grp"]);
    assert_eq!(gshow.code, 0, "{gshow:?}");
    assert!(
        gshow
            .stdout
            .lines()
            .any(|l| l.starts_with("/grp/web ") && l.contains("1/1")),
        "{gshow:?}"
    );
    assert_eq!(
        cli.run(&["group", "show", "grp", "--json"]).json()["id"],
        "/grp"
    );
    let glist = cli.run(&["group", "list"]);
    assert!(
        glist.stdout.lines().any(|l| l.starts_with("/grp ")),
        "{glist:?}"
    );
    assert_eq!(cli.run(&["group", "show", "nope"]).code, 3);
    let gscale = cli
        .spawn(
            &["group", "scale", "grp", "2", "--wait", "--timeout", "60s"],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(gscale.code, 0, "{gscale:?}");
    rt.block_on(api.until_running("/grp/web", 2, Duration::from_secs(5)));
    let grm = cli
        .spawn(
            &["group", "remove", "grp", "--wait", "--timeout", "60s"],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(grm.code, 0, "{grm:?}");
    assert_eq!(rt.block_on(api.get("/v2/groups/grp")).status, 404);

    // Leader and info.
    let leader = cli.run(&["leader"]);
    assert_eq!(leader.code, 0, "{leader:?}");
    let port = dev
        .api
        .base
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        leader.stdout.trim().ends_with(&format!(":{port}")),
        "{leader:?}"
    );
    assert_eq!(
        cli.run(&["leader", "--json"]).json()["leader"],
        leader.stdout.trim()
    );
    let info = cli.run(&["info"]);
    assert_eq!(info.code, 0, "{info:?}");
    assert!(
        info.stdout.contains("ELECTED") && info.stdout.contains("true"),
        "{info:?}"
    );

    // kill: a plain kill leaves the instance count; the app refills.
    let before = rt.block_on(api.tasks("/sleepy"));
    let victim = before[0]["id"].as_str().unwrap_or_default().to_string();
    let kill = cli.run(&["app", "kill", "sleepy", &victim]);
    assert_eq!(kill.code, 0, "{kill:?}");
    assert!(kill.stdout.contains(&victim), "{kill:?}");

    // remove --wait: 0, and the app is gone.
    let rm = cli
        .spawn(
            &["app", "remove", "sleepy", "--wait", "--timeout", "60s"],
            None,
        )
        .finish(Duration::from_secs(90));
    assert_eq!(rm.code, 0, "{rm:?}");
    assert_eq!(rt.block_on(api.get("/v2/apps/sleepy")).status, 404);
    let empty = cli.run(&["app", "list", "--json"]).json();
    assert_eq!(empty["apps"], serde_json::json!([]), "{empty}");
}

#[test]
fn an_unreachable_stride_exits_7() {
    let tmp = scratch();
    let cli = Cli {
        url: format!("http://127.0.0.1:{}", free_port()),
        dir: tmp.path().to_path_buf(),
    };
    for args in [
        &["app", "list"][..],
        &["ping"],
        &["app", "scale", "x", "2", "--wait"],
    ] {
        let out = cli.run(args);
        assert_eq!(out.code, 7, "{args:?}: {out:?}");
        assert!(out.stderr.contains("cannot reach Stride"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let tmp = scratch();
    let cli = Cli {
        url: format!("http://127.0.0.1:{}", free_port()),
        dir: tmp.path().to_path_buf(),
    };
    let missing_file = cli.run(&["app", "add", "no-such-file.json"]);
    assert_eq!(missing_file.code, 2, "{missing_file:?}");
    assert!(
        missing_file.stderr.contains("no-such-file.json"),
        "{missing_file:?}"
    );
    let not_json = cli.file("x.json", "{not json");
    assert_eq!(cli.run(&["app", "add", &not_json]).code, 2);
    assert_eq!(cli.run(&["app", "frobnicate"]).code, 2);
    assert_eq!(cli.run(&["app", "scale", "x", "many"]).code, 2);
    assert_eq!(cli.run(&["app", "kill", "x", "--scale", "--wipe"]).code, 2);
    assert_eq!(cli.run(&["app", "kill", "x", "--wait"]).code, 2);
    assert_eq!(cli.run(&["app", "add", "f", "--timeout", "soon"]).code, 2);
    assert_eq!(cli.run(&["--url", "localhost:8080", "ping"]).code, 2);

    let help = cli.run(&["--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    for line in ["Exit codes:", "3  not found", "7  cannot reach Stride"] {
        assert!(
            help.stdout.contains(line),
            "{line:?} missing from:\n{}",
            help.stdout
        );
    }
}

/// A one-shot HTTP server: answers each of `answers` (status line, JSON body) to one request in
/// turn, and hands back the requests' heads.
fn fake_api(
    answers: Vec<(&'static str, &'static str)>,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, rx)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn credentials_are_sent_and_5xx_exits_7() {
    let tmp = scratch();
    let (url, requests) = fake_api(vec![
        ("200 OK", r#""pong""#),
        ("200 OK", r#"{"leader":"here:8080"}"#),
        ("200 OK", r#"{"leader":"here:8080"}"#),
        (
            "503 Service Unavailable",
            r#"{"message":"Could not determine the current leader"}"#,
        ),
    ]);
    let cli = Cli {
        url,
        dir: tmp.path().to_path_buf(),
    };
    let next = || {
        requests
            .recv_timeout(Duration::from_secs(10))
            .expect("a request")
    };

    assert_eq!(cli.run(&["--user", "ann:s3:cret", "ping"]).code, 0);
    // "ann:s3:cret" in base64.
    assert_eq!(
        header(&next(), "authorization"),
        Some("Basic YW5uOnMzOmNyZXQ=")
    );

    assert_eq!(
        cli.run(&["leader", "--token", "t0k"]).stdout.trim(),
        "here:8080"
    );
    assert_eq!(header(&next(), "authorization"), Some("Bearer t0k"));

    // From the environment, as a script would set it.
    let out = Command::new(BIN)
        .args(["leader"])
        .env("STRIDE_URL", &cli.url)
        .env("STRIDE_TOKEN", "from-env")
        .env_remove("STRIDE_CREDENTIALS")
        .output()
        .expect("run stride");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(header(&next(), "authorization"), Some("Bearer from-env"));

    let unavailable = cli.run(&["app", "list"]);
    assert_eq!(unavailable.code, 7, "{unavailable:?}");
    assert!(
        unavailable
            .stderr
            .contains("Could not determine the current leader"),
        "{unavailable:?}"
    );
    assert!(next().starts_with("GET /v2/apps "));
}
