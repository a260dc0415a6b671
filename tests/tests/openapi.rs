//! `/openapi.json` describes the API as served: schemathesis (installed by `scripts/test` into
//! `target/venv-clients`) generates requests from it against `stride dev` and finds no server
//! error and no response that breaks the document; a second run logs in to real processes with
//! authentication on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stride_tests::{hash_password, Cluster, Dev, Flags};

fn schemathesis() -> PathBuf {
    let v = std::env::var_os("STRIDE_CLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv-clients"));
    let st = v.join("bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: scripts/test installs it",
        st.display()
    );
    st
}

/// Runs schemathesis against the document at `base`/openapi.json with `extra` arguments;
/// answers whether it passed and what it printed.
async fn run_schemathesis(base: &str, extra: &[&str]) -> (bool, String) {
    let st = schemathesis();
    let url = format!("{base}/openapi.json");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args([
                "run",
                &url,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "10",
                // The event stream never ends; abdication would take the leader away mid-run.
                "--exclude-path",
                "/v2/events",
                "--exclude-path",
                "/v2/leader",
                "--request-timeout",
                "10",
                "--suppress-health-check",
                "all",
                "--no-color",
            ])
            .args(extra)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
    })
    .await
    .expect("join")
    .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: String = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_broken_response() {
    let dev = Dev::start().await;
    let api = dev.api.clone();
    let doc = api.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let (ok, text) = run_schemathesis(&api.base, &[]).await;
    assert!(
        ok,
        "schemathesis found problems:\n{text}\n--- stride dev ---\n{}",
        dev.proc.log_text()
    );
}

/// The same against real processes with authentication on, schemathesis logging in as a user
/// who may do everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_credentials_finds_no_server_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let security = dir.path().join("auth.toml");
    std::fs::write(
        &security,
        format!(
            "[[users]]\nname = \"admin\"\npassword_hash = \"{}\"\nroles = [\"admin\"]\n\
             [roles.admin]\nsystem = [\"*\"]\npaths = [{{ prefix = \"/\", actions = [\"*\"] }}]\n",
            hash_password("schemathesis-pw")
        ),
    )
    .expect("security file");
    let cluster = Cluster::start_with(
        1,
        0,
        Flags {
            gateway: vec!["--auth-config".into(), security.display().to_string()],
            ..Flags::default()
        },
    );
    let admin = cluster.api.as_user("admin", "schemathesis-pw");
    admin
        .until(Duration::from_secs(60), "a leader", |api| async move {
            api.try_get("/v2/leader").await.filter(|r| r.status == 200)
        })
        .await;
    assert_eq!(cluster.api.get("/v2/apps").await.status, 401);
    let (ok, text) =
        run_schemathesis(&cluster.api.base, &["--auth", "admin:schemathesis-pw"]).await;
    assert!(ok, "schemathesis found problems:\n{text}");
}
