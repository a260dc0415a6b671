//! Running HAProxy in master-worker mode: `haproxy -W -S <master socket> -f <config>`.
//!
//! A reload is `reload` on the master CLI; the master re-executes itself with the new file, a
//! new worker takes the listening sockets over, old workers finish their connections (bounded
//! by `hard-stop-after`). It is confirmed through `show proc`: the reload counter went up and
//! the failure counter did not. A master that already answers on the socket (lb-sync
//! restarted, or HAProxy run by systemd) is adopted rather than started twice.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::runtime::{CliError, MasterSocket, ProcInfo};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {binary}: {source} (scripts/test installs haproxy)")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("HAProxy exited during start-up ({0})")]
    Exited(String),
    #[error("HAProxy's master socket does not answer: {0}")]
    NoMaster(CliError),
    #[error("no HAProxy master answers on {0} and lb-sync is not to start one")]
    NotRunning(PathBuf),
    #[error("the reload failed; the previous workers keep serving (show proc: {0:?})")]
    ReloadFailed(ProcInfo),
    #[error("the reload did not complete within {0:?}")]
    ReloadTimeout(Duration),
}

/// An HAProxy master, started by lb-sync or adopted.
pub struct Process {
    child: Option<Child>,
    pub master: MasterSocket,
    binary: PathBuf,
    config_file: PathBuf,
    admin_socket: PathBuf,
    manage: bool,
    reload_timeout: Duration,
}

impl Process {
    pub fn new(cfg: &crate::config::HaproxyConfig) -> Self {
        Self {
            child: None,
            master: MasterSocket {
                path: cfg.master_socket.clone(),
                timeout: Duration::from_secs(2),
            },
            binary: cfg.binary.clone(),
            config_file: cfg.config_file.clone(),
            admin_socket: cfg.admin_socket.clone(),
            manage: cfg.manage_process,
            reload_timeout: cfg.reload_timeout,
        }
    }

    /// Whether a child we started has exited.
    pub fn child_exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => {
                tracing::error!(%status, "HAProxy exited");
                self.child = None;
                true
            }
            Some(Err(_)) => true,
            _ => false,
        }
    }

    /// A running master: the one answering on the socket, or a new one (when managed).
    pub async fn ensure_running(&mut self) -> Result<ProcInfo, ProcessError> {
        if let Ok(info) = self.master.show_proc().await {
            if !info.workers.is_empty() {
                return Ok(info);
            }
        }
        if !self.manage {
            return Err(ProcessError::NotRunning(self.master.path.clone()));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        for stale in [&self.master.path, &self.admin_socket] {
            let _ = std::fs::remove_file(stale);
            if let Some(dir) = stale.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let mut child = Command::new(&self.binary)
            .arg("-W")
            .arg("-S")
            .arg(&self.master.path)
            .arg("-f")
            .arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Our own SIGTERM at shutdown shows as an ALERT; it is not one.
                    if line.contains("ALERT") && !line.contains("(Terminated)") {
                        tracing::warn!(target: "haproxy", "{line}");
                    } else {
                        tracing::debug!(target: "haproxy", "{line}");
                    }
                }
            });
        }
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + self.reload_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ProcessError::Exited(status.to_string()));
                }
            }
            match self.master.show_proc().await {
                Ok(info) if !info.workers.is_empty() => {
                    tracing::info!(pid = info.master_pid, "HAProxy started");
                    return Ok(info);
                }
                Ok(_) => {}
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ProcessError::NoMaster(e));
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::ReloadTimeout(self.reload_timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reloads and waits for the new worker; `ReloadFailed` leaves the old one serving.
    pub async fn reload(&mut self) -> Result<ProcInfo, ProcessError> {
        let before = self
            .master
            .show_proc()
            .await
            .map_err(ProcessError::NoMaster)?;
        self.master.reload().await.map_err(ProcessError::NoMaster)?;
        let deadline = tokio::time::Instant::now() + self.reload_timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Ok(now) = self.master.show_proc().await {
                if now.failed > before.failed {
                    return Err(ProcessError::ReloadFailed(now));
                }
                if now.reloads > before.reloads
                    && !now.workers.is_empty()
                    && now.workers != before.workers
                {
                    metrics::gauge!(crate::metrics::OLD_WORKERS).set(now.old_workers as f64);
                    return Ok(now);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::ReloadTimeout(self.reload_timeout));
            }
        }
    }

    /// Stops a master we started (adopted ones are left alone).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        tracing::info!("HAProxy stopped");
    }
}
