//! The Docker side of tasks, through the Engine API (bollard): pulling images (with credentials
//! from a `.docker/config.json` the task fetched), creating and starting containers from a
//! [`DockerPlan`], copying their output into the sandbox, waiting for them, stopping them with
//! the kill grace period, finding them again after an agent restart, and running commands in
//! them for COMMAND health checks.
//!
//! Containers outlive the agent: they are not tied to any connection of it, and they carry the
//! labels `stride.task_id`, `stride.app_id` and `stride.agent_id`, by which a restarted agent
//! finds its own (several agents may share one Docker Engine).
//!
//! ```text
//!  watch(container):  inspect ─┬─ running ─► follow logs ─► sandbox stdout/stderr
//!                              │             wait ─► inspect (exit code, OOMKilled) ─► remove
//!                              ├─ exited (while the agent was down) ─► copy logs ─► remove
//!                              └─ missing ─► Gone
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use crate::container::{DockerPlan, LABEL_AGENT_ID, LABEL_TASK_ID};

/// Ordinary requests; long ones (pull, wait, logs, exec) use [`LONG_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const LONG_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the log copier may lag behind a container's exit.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How often a container is polled when the wait request fails (the daemon restarted, say).
const POLL: Duration = Duration::from_secs(1);

/// Exit status of a process killed by SIGKILL (which the OOM killer sends).
const SIGKILL_EXIT: i64 = 137;
/// How long, in steps, a SIGKILLed container's `OOMKilled` is given to be set.
const OOM_SETTLE: Duration = Duration::from_millis(200);
const OOM_SETTLE_TRIES: usize = 5;

/// A lazily connected Docker Engine: the agent starts whether or not Docker is up, and Docker
/// tasks fail with a clear message while it is not.
pub(crate) struct DockerEngine {
    host: Option<String>,
    client: OnceCell<Docker>,
}

/// How a watched container ended.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ContainerOutcome {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// It had already stopped when the agent (re)attached: it ended while the agent was down.
    pub ended_unwatched: bool,
    /// The container no longer exists.
    pub gone: bool,
    /// Docker could not be asked.
    pub error: Option<String>,
}

/// A container of this agent, as listed by label.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub id: String,
    pub running: bool,
}

impl DockerEngine {
    pub fn new(host: Option<String>) -> Self {
        Self {
            host,
            client: OnceCell::new(),
        }
    }

    /// The client, version-negotiated with the daemon; retried on every call until it works.
    async fn client(&self) -> Result<Docker, String> {
        self.client
            .get_or_try_init(|| async {
                let docker = match &self.host {
                    Some(host) => Docker::connect_with_host(host),
                    None => Docker::connect_with_defaults(),
                }
                .map_err(|e| format!("Docker is not available on this agent: {e}"))?
                .with_timeout(REQUEST_TIMEOUT);
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| format!("Docker is not available on this agent: {e}"))
            })
            .await
            .cloned()
    }

    async fn long_client(&self) -> Result<Docker, String> {
        Ok(self.client().await?.with_timeout(LONG_TIMEOUT))
    }

    /// Whether the daemon answers (for the start-up log line).
    pub async fn available(&self) -> Result<(), String> {
        self.client().await.map(|_| ())
    }

    /// Makes `image` present: pulled when forced or absent, with credentials from
    /// `<sandbox>/.docker/config.json` when the task fetched one.
    pub async fn ensure_image(
        &self,
        image: &str,
        force_pull: bool,
        sandbox: &Path,
    ) -> Result<(), String> {
        let docker = self.client().await?;
        if !force_pull {
            match docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(format!("cannot inspect image {image}: {e}")),
            }
        }
        let credentials = credentials_for(image, sandbox).await;
        let (from_image, tag) = split_tag(image);
        let options = CreateImageOptions {
            from_image: Some(from_image.to_string()),
            tag: Some(tag.to_string()),
            ..CreateImageOptions::default()
        };
        let docker = self.long_client().await?;
        let mut progress = docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(pull_error(image, &server_message(&e)));
            }
        }
        Ok(())
    }

    /// Creates and starts the planned container; returns its id. A container left with the
    /// same name by an earlier attempt is removed first; one that fails to start is removed.
    pub async fn create_and_start(&self, plan: &DockerPlan) -> Result<String, String> {
        let docker = self.client().await?;
        self.remove(&plan.name).await;
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..CreateContainerOptions::default()
        };
        let created = docker
            .create_container(Some(options), plan.body.clone())
            .await
            .map_err(|e| format!("cannot create the container: {}", server_message(&e)))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(format!(
                "cannot start the container: {}",
                server_message(&e)
            ));
        }
        Ok(created.id)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace` (rounded up to whole seconds, as
    /// Docker counts them).
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), String> {
        let docker = self.long_client().await?;
        let seconds = grace.as_millis().div_ceil(1000);
        let options = StopContainerOptions {
            t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
            ..StopContainerOptions::default()
        };
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_not_modified(&e) => Ok(()),
            Err(e) => Err(server_message(&e)),
        }
    }

    /// Removes a container (forcibly, so a running one is killed); absent is fine.
    pub async fn remove(&self, id_or_name: &str) {
        let Ok(docker) = self.client().await else {
            return;
        };
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(id_or_name, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(container = id_or_name, error = %e, "cannot remove a container")
            }
        }
    }

    /// This agent's containers by task id (running or not).
    pub async fn find_all(&self, agent_id: &str) -> Result<HashMap<String, Found>, String> {
        let docker = self.client().await?;
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{LABEL_AGENT_ID}={agent_id}")],
        )]
        .into();
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        let listed = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {e}"))?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let task_id = c.labels.as_ref()?.get(LABEL_TASK_ID)?.clone();
                let running = c
                    .state
                    .as_ref()
                    .is_some_and(|s| s.to_string().eq_ignore_ascii_case("running"));
                Some((task_id, Found { id: c.id?, running }))
            })
            .collect())
    }

    /// Follows a container until it ends, copying its output into the sandbox's `stdout` and
    /// `stderr`; then removes it. `fresh` is false when re-attaching after an agent restart:
    /// output already in the files (up to their modification time) is not copied again.
    pub async fn watch(&self, id: &str, sandbox: &Path, fresh: bool) -> ContainerOutcome {
        let docker = loop {
            match self.long_client().await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for Docker to watch a container");
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        let cutoff = if fresh {
            Cutoff::default()
        } else {
            Cutoff::from_files(sandbox)
        };
        let state = match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info.state.unwrap_or_default(),
            Err(e) if is_not_found(&e) => {
                return ContainerOutcome {
                    gone: true,
                    ended_unwatched: !fresh,
                    ..ContainerOutcome::default()
                }
            }
            Err(e) => {
                return ContainerOutcome {
                    error: Some(e.to_string()),
                    ..ContainerOutcome::default()
                }
            }
        };
        if state.running != Some(true) {
            if let Err(e) = copy_logs(&docker, id, sandbox, false, &cutoff).await {
                tracing::debug!(error = %e, "cannot copy the output of a stopped container");
            }
            self.remove(id).await;
            return ContainerOutcome {
                exit_code: state.exit_code,
                oom_killed: state.oom_killed == Some(true),
                ended_unwatched: !fresh,
                ..ContainerOutcome::default()
            };
        }

        let logs = {
            let (docker, id, sandbox) = (docker.clone(), id.to_string(), sandbox.to_path_buf());
            tokio::spawn(async move { copy_logs(&docker, &id, &sandbox, true, &cutoff).await })
        };
        // A watch dropped with the agent must not leave its copier appending behind the back of
        // the next agent's.
        let _copier = AbortOnDrop(logs.abort_handle());
        wait_until_stopped(&docker, id).await;
        let mut outcome = inspect_outcome(&docker, id).await;
        // The Engine may handle the container's exit before the kernel's OOM event: a SIGKILL
        // exit gets a moment for `OOMKilled` to catch up.
        for _ in 0..OOM_SETTLE_TRIES {
            if outcome.exit_code != Some(SIGKILL_EXIT) || outcome.oom_killed {
                break;
            }
            tokio::time::sleep(OOM_SETTLE).await;
            let again = inspect_outcome(&docker, id).await;
            if again.error.is_some() || again.gone {
                break;
            }
            outcome = again;
        }
        let abort = logs.abort_handle();
        match tokio::time::timeout(LOG_DRAIN, logs).await {
            Ok(Ok(Err(e))) => tracing::debug!(error = %e, "copying the container's output ended"),
            Err(_) => {
                abort.abort();
                tracing::warn!("the container's output was still streaming after it stopped");
            }
            _ => {}
        }
        self.remove(id).await;
        outcome
    }

    /// Runs `command` with `/bin/sh -c` inside a running container; the exit code and the
    /// first `limit` bytes of its combined output.
    pub async fn exec(
        &self,
        id: &str,
        command: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<(Option<i64>, String), String> {
        let docker = self.long_client().await?;
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec!["/bin/sh", "-c", command]),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot run the command in the container: {}",
                    server_message(&e)
                )
            })?;
        let mut output = Vec::new();
        let run = async {
            if let StartExecResults::Attached {
                output: mut out, ..
            } = docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| format!("cannot run the command in the container: {e}"))?
            {
                while let Some(chunk) = out.next().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    let bytes = chunk.into_bytes();
                    let room = limit.saturating_sub(output.len());
                    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(format!(
                    "the command timed out after {}s",
                    timeout.as_secs_f64()
                ))
            }
        }
        let code = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| e.to_string())?
            .exit_code;
        Ok((code, String::from_utf8_lossy(&output).into_owned()))
    }
}

/// How a stopped container ended, as `inspect` tells it.
async fn inspect_outcome(docker: &Docker, id: &str) -> ContainerOutcome {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            let state = info.state.unwrap_or_default();
            ContainerOutcome {
                exit_code: state.exit_code,
                oom_killed: state.oom_killed == Some(true),
                ..ContainerOutcome::default()
            }
        }
        Err(e) if is_not_found(&e) => ContainerOutcome {
            gone: true,
            ..ContainerOutcome::default()
        },
        Err(e) => ContainerOutcome {
            error: Some(e.to_string()),
            ..ContainerOutcome::default()
        },
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns once the container is not running, however Docker lets us find out.
async fn wait_until_stopped(docker: &Docker, id: &str) {
    let options = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut wait = docker.wait_container(id, Some(options));
    match wait.next().await {
        // A non-zero exit comes as an error carrying the code; either way it stopped.
        Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => return,
        Some(Err(e)) if is_not_found(&e) => return,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "waiting for the container failed; polling instead")
        }
        None => {}
    }
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => {}
            Err(e) if !is_not_found(&e) => {}
            _ => return,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Output already copied, when re-attaching after a restart: the sandbox files hold exactly
/// the container's output so far (the copier only appends), so their sizes say how much of each
/// stream to skip. Byte counts, not times: file times come from a coarser clock than Docker's
/// timestamps, and would both repeat and drop lines.
#[derive(Clone, Copy, Debug, Default)]
struct Cutoff {
    stdout: u64,
    stderr: u64,
}

impl Cutoff {
    fn from_files(sandbox: &Path) -> Self {
        let size = |name: &str| std::fs::metadata(sandbox.join(name)).map_or(0, |m| m.len());
        Self {
            stdout: size("stdout"),
            stderr: size("stderr"),
        }
    }
}

/// Appends the container's output to the sandbox files.
async fn copy_logs(
    docker: &Docker,
    id: &str,
    sandbox: &Path,
    follow: bool,
    cutoff: &Cutoff,
) -> Result<(), String> {
    let open = |name: &str| {
        let path: PathBuf = sandbox.join(name);
        async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        }
    };
    let (mut stdout, mut stderr) = (open("stdout").await?, open("stderr").await?);
    let mut skip = *cutoff;
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        ..LogsOptions::default()
    };
    let mut logs = docker.logs(id, Some(options));
    while let Some(item) = logs.next().await {
        let item = item.map_err(|e| e.to_string())?;
        let (file, skip, message) = match item {
            bollard::container::LogOutput::StdOut { message } => {
                (&mut stdout, &mut skip.stdout, message)
            }
            bollard::container::LogOutput::StdErr { message } => {
                (&mut stderr, &mut skip.stderr, message)
            }
            _ => continue,
        };
        let skipped = usize::try_from(*skip)
            .unwrap_or(usize::MAX)
            .min(message.len());
        *skip -= skipped as u64;
        file.write_all(&message[skipped..])
            .await
            .map_err(|e| format!("cannot write the container's output: {e}"))?;
    }
    stdout.flush().await.map_err(|e| e.to_string())?;
    stderr.flush().await.map_err(|e| e.to_string())
}

/// `registry:5000/team/app:1.2` → (`registry:5000/team/app`, `1.2`); no tag means `latest`
/// (an empty tag would make the Engine pull every tag). Digests stay on the name.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The registry an image comes from: its first component when that looks like a host.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; Docker Hub's aliases → `docker.io`.
fn normalize_registry(key: &str) -> String {
    let host = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// Credentials for pulling `image` from the Docker config file the task fetched, as Mesos
/// looked for it: `<sandbox>/.docker/config.json` (from a fetched `docker.tar.gz`) or
/// `<sandbox>/config.json`.
async fn credentials_for(image: &str, sandbox: &Path) -> Option<DockerCredentials> {
    for candidate in [".docker/config.json", "config.json"] {
        let Ok(text) = tokio::fs::read_to_string(sandbox.join(candidate)).await else {
            continue;
        };
        let found = parse_credentials(&text, registry_of(image));
        if found.is_some() {
            return found;
        }
    }
    None
}

fn parse_credentials(config: &str, registry: &str) -> Option<DockerCredentials> {
    use base64::Engine as _;
    let value: serde_json::Value = serde_json::from_str(config).ok()?;
    let (key, auth) = value
        .get("auths")?
        .as_object()?
        .iter()
        .find(|(k, _)| normalize_registry(k) == normalize_registry(registry))?;
    let text = |f: &str| auth.get(f).and_then(|v| v.as_str()).map(String::from);
    let (mut username, mut password) = (text("username"), text("password"));
    if let Some(encoded) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (u, p) = decoded.split_once(':')?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    Some(DockerCredentials {
        username,
        password,
        serveraddress: Some(key.clone()),
        identitytoken: text("identitytoken"),
        ..DockerCredentials::default()
    })
}

/// A pull failure, saying so plainly when no registry could be reached.
fn pull_error(image: &str, error: &str) -> String {
    const UNREACHABLE: [&str; 8] = [
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection refused",
        "network is unreachable",
        "TLS handshake timeout",
        "Client.Timeout",
        "temporary failure in name resolution",
    ];
    let lower = error.to_ascii_lowercase();
    if UNREACHABLE
        .iter()
        .any(|m| lower.contains(&m.to_ascii_lowercase()))
    {
        format!(
            "cannot pull image {image}: the registry {} could not be reached ({error})",
            registry_of(image)
        )
    } else {
        format!("cannot pull image {image}: {error}")
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The daemon's own words, without bollard's wrapping.
fn server_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_tag("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_tag("registry:5000/team/app:2"),
            ("registry:5000/team/app", "2")
        );
        assert_eq!(split_tag("app@sha256:abc"), ("app@sha256:abc", ""));
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("team/app"), "docker.io");
        assert_eq!(registry_of("registry:5000/team/app"), "registry:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn credentials_come_from_the_fetched_config() {
        let config = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpzM2NyM3Q="},
            "registry.example.com": {"username": "bob", "password": "pw"}
        }}"#;
        let hub = parse_credentials(config, "docker.io");
        assert_eq!(
            hub.as_ref().and_then(|c| c.username.as_deref()),
            Some("user")
        );
        assert_eq!(
            hub.as_ref().and_then(|c| c.password.as_deref()),
            Some("s3cr3t")
        );
        assert_eq!(
            hub.and_then(|c| c.serveraddress),
            Some("https://index.docker.io/v1/".into())
        );
        let other = parse_credentials(config, "registry.example.com");
        assert_eq!(other.and_then(|c| c.username), Some("bob".into()));
        assert!(parse_credentials(config, "quay.io").is_none());
        assert!(parse_credentials("not json", "docker.io").is_none());
    }

    #[test]
    fn unreachable_registries_are_named() {
        let m = pull_error(
            "stride-test:latest",
            r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host"#,
        );
        assert!(m.contains("could not be reached"), "{m}");
        assert!(m.contains("docker.io"), "{m}");
        let m = pull_error("x", "manifest unknown");
        assert_eq!(m, "cannot pull image x: manifest unknown");
    }
}
