//! COMMAND health checks of process tasks, run the way Mesos ran them: `/bin/sh -c <command>` in
//! the task's sandbox, with the task's environment and user, in a process group of its own that
//! is killed when the check times out. (Docker tasks run theirs with `docker exec`.)

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;

use crate::process::{self, RunAs};

/// The most output a check reports (for `lastFailureCause`).
pub(crate) const OUTPUT_LIMIT: usize = 4096;
/// A check without a timeout gets Marathon's default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How a check ended.
#[derive(Debug, PartialEq)]
pub(crate) struct CheckResult {
    pub healthy: bool,
    pub exit_code: i32,
    pub output: String,
}

impl CheckResult {
    pub fn from_exit(code: Option<i64>, output: String) -> Self {
        let exit_code = code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1);
        Self {
            healthy: exit_code == 0,
            exit_code,
            output,
        }
    }

    pub fn timed_out(timeout: Duration, output: String) -> Self {
        let mut output = output;
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!(
            "the command timed out after {}s",
            timeout.as_secs_f64()
        ));
        Self {
            healthy: false,
            exit_code: -1,
            output,
        }
    }
}

/// Runs `command` for a process task.
pub(crate) async fn run_in_sandbox(
    command: &str,
    sandbox: &Path,
    env: &std::collections::BTreeMap<String, String>,
    run_as: Option<&RunAs>,
    timeout: Duration,
) -> Result<CheckResult, String> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(sandbox)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = run_as {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the check: {e}"))?;
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let mut output = Vec::new();
    let run = async {
        // Both pipes are read to the end (a full pipe would block the check), keeping the start.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((status, out, err)) => {
            output.extend_from_slice(&out);
            output.extend_from_slice(&err);
            output.truncate(OUTPUT_LIMIT);
            let status = status.map_err(|e| format!("cannot wait for the check: {e}"))?;
            let code = status.code().map(i64::from).or_else(|| {
                std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + i64::from(s))
            });
            Ok(CheckResult::from_exit(
                code,
                String::from_utf8_lossy(&output).into_owned(),
            ))
        }
        Err(_) => {
            if let Some(pid) = pid {
                let _ = process::signal_group(pid, Signal::SIGKILL);
            }
            Ok(CheckResult::timed_out(timeout, String::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_report_exit_and_output() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let env = [
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("X".to_string(), "42".to_string()),
        ]
        .into_iter()
        .collect();
        let ok = run_in_sandbox("echo $X; pwd", dir.path(), &env, None, DEFAULT_TIMEOUT)
            .await
            .map_err(anyhow::Error::msg)?;
        assert!(ok.healthy);
        assert_eq!(
            ok.output,
            format!("42\n{}\n", dir.path().canonicalize()?.display())
        );
        let bad = run_in_sandbox(
            "echo no >&2; exit 3",
            dir.path(),
            &env,
            None,
            DEFAULT_TIMEOUT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        assert_eq!(
            (bad.healthy, bad.exit_code, bad.output.as_str()),
            (false, 3, "no\n")
        );
        let slow = run_in_sandbox(
            "sleep 5",
            dir.path(),
            &env,
            None,
            Duration::from_millis(200),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        assert!(!slow.healthy);
        assert!(slow.output.contains("timed out"), "{}", slow.output);
        Ok(())
    }
}
