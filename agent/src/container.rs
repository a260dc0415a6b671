//! What a task's `container` asks for, decided before anything is started: a plain function
//! from the launch (and the agent's policy) to a plan, or to the message the task fails with.
//!
//! - no container, or a MESOS container without an image → a process; its volumes become links
//!   in the sandbox (persistent volumes, and host paths where the agent allows them).
//! - a DOCKER container → a container created through the Engine API: image, network (host or
//!   bridge with port bindings), volumes as binds, `parameters` as docker run flags, resources as
//!   limits, the task's environment and labels, named `stride-<task id>`.
//!
//! The Docker side of the plan is bollard's `ContainerCreateBody`, ready to send.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use stride_core::app::{Container, Volume};

use crate::fetcher::sandbox_relative;
use crate::task::{instance_id, LaunchSpec};
use crate::taskenv::task_variables;
use crate::volumes::{single_segment, volume_name};

/// Where a Docker task sees its sandbox (Mesos' choice, which apps rely on via `MESOS_SANDBOX`).
pub(crate) const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";

/// Container labels that identify Stride's containers.
pub(crate) const LABEL_TASK_ID: &str = "stride.task_id";
pub(crate) const LABEL_APP_ID: &str = "stride.app_id";
pub(crate) const LABEL_AGENT_ID: &str = "stride.agent_id";

/// The message of a MESOS container that names an image.
pub(crate) const MESOS_IMAGE_UNSUPPORTED: &str =
    "MESOS containers with an image are not supported; use DOCKER";

/// What the agent knows that the plan depends on.
pub(crate) struct PlanContext<'a> {
    pub agent_id: &'a str,
    pub agent_hostname: &'a str,
    /// The task's sandbox on the host.
    pub sandbox: &'a Path,
    /// `<work_dir>/volumes`.
    pub volumes_dir: &'a Path,
    pub allow_privileged: bool,
    pub allow_host_volumes: bool,
}

#[derive(Debug)]
pub(crate) enum Plan {
    Process(ProcessPlan),
    Docker(Box<DockerPlan>),
}

/// A process task: links to make in its sandbox before it starts.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessPlan {
    pub links: Vec<Link>,
}

/// `<sandbox>/<name>` → `target`; `persistent` names the volume to create first.
#[derive(Debug, PartialEq)]
pub(crate) struct Link {
    pub name: PathBuf,
    pub target: PathBuf,
    pub persistent: Option<String>,
}

#[derive(Debug)]
pub(crate) struct DockerPlan {
    pub name: String,
    pub image: String,
    pub force_pull: bool,
    /// Persistent volumes to create before the container (names under `volumes_dir`).
    pub volumes: Vec<String>,
    pub body: ContainerCreateBody,
}

/// Decides how `spec` runs. `Err` is the TASK_FAILED message.
pub(crate) fn plan(spec: &LaunchSpec, ctx: &PlanContext<'_>) -> Result<Plan, String> {
    if spec.container_json.trim().is_empty() {
        return Ok(Plan::Process(ProcessPlan::default()));
    }
    let container: Container = serde_json::from_str(&spec.container_json)
        .map_err(|e| format!("the task's container definition does not parse: {e}"))?;
    match container.kind.as_str() {
        "MESOS" => {
            if container
                .docker
                .as_ref()
                .is_some_and(|d| !d.image.trim().is_empty())
            {
                return Err(MESOS_IMAGE_UNSUPPORTED.into());
            }
            process_plan(spec, &container, ctx).map(Plan::Process)
        }
        "DOCKER" => docker_plan(spec, &container, ctx).map(|p| Plan::Docker(Box::new(p))),
        other => Err(format!(
            "container type {other} is not supported by this agent (DOCKER or MESOS)"
        )),
    }
}

fn process_plan(
    spec: &LaunchSpec,
    container: &Container,
    ctx: &PlanContext<'_>,
) -> Result<ProcessPlan, String> {
    let mut links = Vec::new();
    for volume in &container.volumes {
        check_volume_kind(volume)?;
        if volume.persistent.is_some() {
            let path = single_segment(&volume.container_path)?;
            let name = volume_name(&spec.app_id, path, instance_id(&spec.task_id));
            links.push(Link {
                name: PathBuf::from(path),
                target: ctx.volumes_dir.join(&name),
                persistent: Some(name),
            });
        } else if let Some(host) = &volume.host_path {
            let name = sandbox_relative(&volume.container_path)
                .map_err(|e| format!("volume containerPath for a MESOS container: {e}"))?;
            let target = host_source(host, ctx)?;
            links.push(Link {
                name,
                target,
                persistent: None,
            });
        }
    }
    Ok(ProcessPlan { links })
}

fn check_volume_kind(volume: &Volume) -> Result<(), String> {
    if volume.external.is_some() {
        return Err(format!(
            "external volumes are not supported by this agent (containerPath {})",
            volume.container_path
        ));
    }
    if volume.secret.is_some() {
        return Err(format!(
            "secret volumes are not supported by this agent (containerPath {})",
            volume.container_path
        ));
    }
    Ok(())
}

/// The host side of a `hostPath` volume: inside the sandbox when relative (always allowed),
/// anywhere when absolute (only where the agent allows host volumes).
fn host_source(host: &str, ctx: &PlanContext<'_>) -> Result<PathBuf, String> {
    if host.starts_with('/') {
        if !ctx.allow_host_volumes {
            return Err(format!(
                "host path volumes are not allowed on this agent (hostPath {host}; set allow_host_volumes to permit them)"
            ));
        }
        return Ok(PathBuf::from(host));
    }
    let relative = sandbox_relative(host).map_err(|e| format!("volume hostPath: {e}"))?;
    Ok(ctx.sandbox.join(relative))
}

fn docker_plan(
    spec: &LaunchSpec,
    container: &Container,
    ctx: &PlanContext<'_>,
) -> Result<DockerPlan, String> {
    let docker = container
        .docker
        .as_ref()
        .ok_or("a DOCKER container needs a docker section with an image")?;
    let image = docker.image.trim().to_string();
    if image.is_empty() {
        return Err("a DOCKER container needs an image".into());
    }
    if docker.privileged && !ctx.allow_privileged {
        return Err(
            "privileged containers are not allowed on this agent (set allow_privileged to permit them)"
                .into(),
        );
    }

    let mut env = task_variables(spec, ctx.agent_hostname, Path::new(SANDBOX_MOUNT));
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    let mut host = HostConfig {
        privileged: docker.privileged.then_some(true),
        ..HostConfig::default()
    };
    if spec.resources.mem > 0.0 {
        host.memory = Some((spec.resources.mem * 1024.0 * 1024.0) as i64);
    }
    if spec.resources.cpus > 0.0 {
        host.nano_cpus = Some((spec.resources.cpus * 1e9) as i64);
    }
    let mut body = ContainerCreateBody {
        image: Some(image.clone()),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
        ..ContainerCreateBody::default()
    };
    if !spec.cmd.is_empty() {
        body.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
        body.cmd = Some(vec![spec.cmd.clone()]);
    } else if !spec.args.is_empty() {
        body.cmd = Some(spec.args.clone());
    }

    // Network and ports.
    match spec.network_mode.as_str() {
        "" | "host" => host.network_mode = Some("host".into()),
        "container/bridge" => {
            host.network_mode = Some("bridge".into());
            let (exposed, bindings) = port_bindings(spec, container)?;
            for (container_port, host_port) in exposed.iter().filter_map(|(k, hp)| {
                hp.map(|hp| (k.split('/').next().unwrap_or_default().to_string(), hp))
            }) {
                env.entry(format!("PORT_{container_port}"))
                    .or_insert_with(|| host_port.to_string());
            }
            body.exposed_ports = Some(exposed.into_iter().map(|(k, _)| k).collect());
            host.port_bindings = Some(bindings);
        }
        other => {
            return Err(format!(
                "network mode {other} is not supported by this agent for Docker containers (use host or container/bridge)"
            ))
        }
    }

    // Volumes: the sandbox first, then the app's.
    let mut binds = vec![format!("{}:{SANDBOX_MOUNT}:rw", ctx.sandbox.display())];
    let mut persistent = Vec::new();
    for volume in &container.volumes {
        check_volume_kind(volume)?;
        let mode = match volume
            .mode
            .as_deref()
            .unwrap_or("RW")
            .to_ascii_uppercase()
            .as_str()
        {
            "RO" => "ro",
            "RW" => "rw",
            other => {
                return Err(format!(
                    "volume mode {other} is not supported (RO or RW), containerPath {}",
                    volume.container_path
                ))
            }
        };
        if volume.persistent.is_some() {
            let path = single_segment(&volume.container_path)?;
            let name = volume_name(&spec.app_id, path, instance_id(&spec.task_id));
            let source = ctx.volumes_dir.join(&name);
            binds.push(format!("{}:/{path}:{mode}", source.display()));
            binds.push(format!(
                "{}:{SANDBOX_MOUNT}/{path}:{mode}",
                source.display()
            ));
            persistent.push(name);
        } else if let Some(host_path) = &volume.host_path {
            let source = host_source(host_path, ctx)?;
            let target = if volume.container_path.starts_with('/') {
                volume.container_path.clone()
            } else {
                let relative = sandbox_relative(&volume.container_path)
                    .map_err(|e| format!("volume containerPath: {e}"))?;
                format!("{SANDBOX_MOUNT}/{}", relative.display())
            };
            binds.push(format!("{}:{target}:{mode}", source.display()));
        } else {
            return Err(format!(
                "volume {} has neither hostPath nor persistent",
                volume.container_path
            ));
        }
    }
    host.binds = Some(binds);

    for parameter in &docker.parameters {
        apply_parameter(
            &parameter.key,
            &parameter.value,
            &mut body,
            &mut host,
            &mut env,
            &mut labels,
        )?;
    }

    // Stride's own labels last: no parameter may disguise a container as another task's.
    labels.insert(LABEL_TASK_ID.into(), spec.task_id.clone());
    labels.insert(LABEL_APP_ID.into(), spec.app_id.clone());
    labels.insert(LABEL_AGENT_ID.into(), ctx.agent_id.to_string());
    body.labels = Some(labels);
    body.env = Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    body.host_config = Some(host);
    Ok(DockerPlan {
        name: container_name(&spec.task_id),
        image,
        force_pull: docker.force_pull_image,
        volumes: persistent,
        body,
    })
}

/// `"<containerPort>/<protocol>"` keys with their host port, and Docker's port map. Mappings
/// with a `hostPort` take the scheduler's host ports in order; `containerPort: 0` means the
/// host port.
#[allow(clippy::type_complexity)]
fn port_bindings(
    spec: &LaunchSpec,
    container: &Container,
) -> Result<
    (
        Vec<(String, Option<u32>)>,
        HashMap<String, Option<Vec<PortBinding>>>,
    ),
    String,
> {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut next = spec.host_ports.iter();
    for (i, mapping) in container.port_mappings.iter().flatten().enumerate() {
        let host_port = match mapping.host_port {
            Some(_) => Some(*next.next().ok_or_else(|| {
                format!(
                    "port mapping {i} needs a host port, but the scheduler assigned only {}",
                    spec.host_ports.len()
                )
            })?),
            None => None,
        };
        let container_port = match (mapping.container_port, host_port) {
            (0, Some(hp)) => hp,
            (0, None) => {
                return Err(format!(
                    "port mapping {i} has neither a containerPort nor a hostPort"
                ))
            }
            (cp, _) => u32::try_from(cp)
                .ok()
                .filter(|p| *p <= 65535)
                .ok_or_else(|| format!("port mapping {i}: containerPort {cp} is not a port"))?,
        };
        for protocol in mapping.protocol.split(',').map(str::trim) {
            let protocol = protocol.to_ascii_lowercase();
            if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(format!(
                    "port mapping {i}: protocol {protocol} is not tcp, udp or sctp"
                ));
            }
            let key = format!("{container_port}/{protocol}");
            exposed.push((key.clone(), host_port));
            if let Some(hp) = host_port {
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: None,
                        host_port: Some(hp.to_string()),
                    });
            }
        }
    }
    Ok((exposed, bindings))
}

/// The `docker run` flags Marathon's `parameters` may carry, as far as this agent supports them.
pub(crate) const SUPPORTED_PARAMETERS: [&str; 13] = [
    "label",
    "env",
    "hostname",
    "user",
    "workdir",
    "memory",
    "cpu-shares",
    "add-host",
    "cap-add",
    "cap-drop",
    "dns",
    "init",
    "read-only",
];

fn apply_parameter(
    key: &str,
    value: &str,
    body: &mut ContainerCreateBody,
    host: &mut HostConfig,
    env: &mut BTreeMap<String, String>,
    labels: &mut HashMap<String, String>,
) -> Result<(), String> {
    let key = key.trim().trim_start_matches('-');
    let bad = |why: &str| format!("docker parameter {key}={value:?}: {why}");
    let pair = || {
        value
            .split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad("expected NAME=VALUE"))
    };
    let flag = || match value.trim() {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad("expected true or false")),
    };
    match key {
        "label" => {
            let (k, v) = pair()?;
            labels.insert(k, v);
        }
        "env" | "e" => {
            let (k, v) = pair()?;
            env.insert(k, v);
        }
        "hostname" | "h" => body.hostname = Some(value.to_string()),
        "user" | "u" => body.user = Some(value.to_string()),
        "workdir" | "w" => body.working_dir = Some(value.to_string()),
        "memory" | "m" => {
            host.memory = Some(parse_bytes(value).ok_or_else(|| bad("not a size like 512m"))?)
        }
        "cpu-shares" | "c" => {
            host.cpu_shares = Some(value.trim().parse().map_err(|_| bad("not a number"))?)
        }
        "add-host" => host
            .extra_hosts
            .get_or_insert_with(Vec::new)
            .push(value.to_string()),
        "cap-add" => host
            .cap_add
            .get_or_insert_with(Vec::new)
            .push(value.to_string()),
        "cap-drop" => host
            .cap_drop
            .get_or_insert_with(Vec::new)
            .push(value.to_string()),
        "dns" => host
            .dns
            .get_or_insert_with(Vec::new)
            .push(value.to_string()),
        "init" => host.init = Some(flag()?),
        "read-only" => host.readonly_rootfs = Some(flag()?),
        other => {
            return Err(format!(
                "docker parameter '{other}' is not supported by this agent (supported: {})",
                SUPPORTED_PARAMETERS.join(", ")
            ))
        }
    }
    Ok(())
}

/// Docker's sizes: `1024`, `512k`, `512m`, `1g`, `1.5g`, with an optional `b`/`ib`.
fn parse_bytes(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        _ => return None,
    };
    let bytes = number * scale;
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// `stride-<task id>` with everything Docker does not allow in names replaced by `_`.
pub(crate) fn container_name(task_id: &str) -> String {
    let clean: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("stride-{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskResources;

    fn spec(container: serde_json::Value, network: &str) -> LaunchSpec {
        LaunchSpec {
            task_id: "web.instance-1._app.2".into(),
            app_id: "/prod/web".into(),
            cmd: "httpd -f -p 8080".into(),
            resources: TaskResources {
                cpus: 0.5,
                mem: 64.0,
                disk: 0.0,
                gpus: 0,
            },
            host_ports: vec![31005, 31006],
            port_names: vec!["http".into(), "".into()],
            container_json: container.to_string(),
            network_mode: network.into(),
            labels: vec![("team".into(), "a".into())],
            ..LaunchSpec::default()
        }
    }

    fn ctx<'a>(sandbox: &'a Path, volumes: &'a Path) -> PlanContext<'a> {
        PlanContext {
            agent_id: "agent-1",
            agent_hostname: "node-1",
            sandbox,
            volumes_dir: volumes,
            allow_privileged: false,
            allow_host_volumes: false,
        }
    }

    fn docker(p: Result<Plan, String>) -> DockerPlan {
        match p {
            Ok(Plan::Docker(d)) => *d,
            other => panic!("expected a Docker plan, got {other:?}"),
        }
    }

    #[test]
    fn a_bridge_container_gets_its_ports_volumes_and_limits() {
        let (sandbox, volumes) = (Path::new("/w/sandboxes/t"), Path::new("/w/volumes"));
        let json = serde_json::json!({
            "type": "DOCKER",
            "docker": {"image": "busybox", "parameters": [
                {"key": "label", "value": "x=y"},
                {"key": "env", "value": "EXTRA=1"},
                {"key": "cap-add", "value": "NET_ADMIN"},
                {"key": "memory", "value": "128m"},
            ]},
            "portMappings": [
                {"containerPort": 8080, "hostPort": 0, "protocol": "tcp,udp"},
                {"containerPort": 0, "hostPort": 0},
                {"containerPort": 9000},
            ],
            "volumes": [
                {"containerPath": "data", "persistent": {"size": 10}, "mode": "RW"},
                {"containerPath": "/etc/x", "hostPath": "conf", "mode": "RO"},
            ],
        });
        let plan = docker(plan(
            &spec(json, "container/bridge"),
            &ctx(sandbox, volumes),
        ));
        assert_eq!(plan.name, "stride-web.instance-1._app.2");
        assert_eq!(plan.image, "busybox");
        let host = plan.body.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        let bindings = host.port_bindings.clone().unwrap_or_default();
        let port = |k: &str| {
            bindings
                .get(k)
                .cloned()
                .flatten()
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        };
        assert_eq!(port("8080/tcp").as_deref(), Some("31005"));
        assert_eq!(port("8080/udp").as_deref(), Some("31005"));
        assert_eq!(port("31006/tcp").as_deref(), Some("31006"));
        assert!(!bindings.contains_key("9000/tcp"));
        assert!(plan
            .body
            .exposed_ports
            .as_ref()
            .is_some_and(|p| p.contains(&"9000/tcp".to_string())));
        assert_eq!(host.memory, Some(128 * 1024 * 1024), "the parameter wins");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        let volume = "/w/volumes/prod_web#data#web.instance-1";
        assert_eq!(
            host.binds,
            Some(vec![
                "/w/sandboxes/t:/mnt/mesos/sandbox:rw".to_string(),
                format!("{volume}:/data:rw"),
                format!("{volume}:/mnt/mesos/sandbox/data:rw"),
                "/w/sandboxes/t/conf:/etc/x:ro".to_string(),
            ])
        );
        assert_eq!(
            plan.volumes,
            vec!["prod_web#data#web.instance-1".to_string()]
        );
        let labels = plan.body.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("stride.task_id").map(String::as_str),
            Some("web.instance-1._app.2")
        );
        assert_eq!(
            labels.get("stride.app_id").map(String::as_str),
            Some("/prod/web")
        );
        assert_eq!(
            labels.get("stride.agent_id").map(String::as_str),
            Some("agent-1")
        );
        assert_eq!(labels.get("x").map(String::as_str), Some("y"));
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        let env = plan.body.env.clone().unwrap_or_default();
        for wanted in [
            "PORT0=31005",
            "PORT_HTTP=31005",
            "PORT_8080=31005",
            "EXTRA=1",
            "MESOS_SANDBOX=/mnt/mesos/sandbox",
            "HOST=node-1",
        ] {
            assert!(env.contains(&wanted.to_string()), "{wanted} in {env:?}");
        }
        assert!(
            !env.iter().any(|e| e.starts_with("PATH=")),
            "the image keeps its PATH"
        );
        assert_eq!(
            plan.body.entrypoint,
            Some(vec!["/bin/sh".to_string(), "-c".to_string()])
        );
        assert_eq!(plan.body.cmd, Some(vec!["httpd -f -p 8080".to_string()]));
    }

    #[test]
    fn refusals_name_what_was_refused() {
        let (sandbox, volumes) = (Path::new("/s"), Path::new("/v"));
        let refuse = |json: serde_json::Value, network: &str| {
            plan(&spec(json, network), &ctx(sandbox, volumes))
                .err()
                .unwrap_or_default()
        };
        let m = refuse(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x", "parameters": [{"key": "volume", "value": "/:/host"}]}}),
            "host",
        );
        assert!(m.contains("'volume'"), "{m}");
        let m = refuse(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x", "privileged": true}}),
            "host",
        );
        assert!(m.contains("privileged"), "{m}");
        let m = refuse(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x"}, "volumes": [{"containerPath": "/x", "hostPath": "/etc", "mode": "RO"}]}),
            "host",
        );
        assert!(m.contains("host path volumes are not allowed"), "{m}");
        let m = refuse(
            serde_json::json!({"type": "MESOS", "docker": {"image": "x"}}),
            "host",
        );
        assert_eq!(m, MESOS_IMAGE_UNSUPPORTED);
        let m = refuse(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x"}}),
            "container",
        );
        assert!(m.contains("network mode container"), "{m}");
        let m = refuse(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x"}, "volumes": [{"containerPath": "a/b", "persistent": {"size": 1}}]}),
            "host",
        );
        assert!(m.contains("single relative path segment"), "{m}");
    }

    #[test]
    fn host_networking_and_args() {
        let mut s = spec(
            serde_json::json!({"type": "DOCKER", "docker": {"image": "x", "forcePullImage": true}}),
            "host",
        );
        s.cmd.clear();
        s.args = vec!["serve".into(), "--port=1".into()];
        s.user = "nobody".into();
        let p = docker(plan(&s, &ctx(Path::new("/s"), Path::new("/v"))));
        assert!(p.force_pull);
        assert_eq!(p.body.entrypoint, None, "args keep the image's entrypoint");
        assert_eq!(
            p.body.cmd,
            Some(vec!["serve".to_string(), "--port=1".to_string()])
        );
        assert_eq!(p.body.user.as_deref(), Some("nobody"));
        let host = p.body.host_config.unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.port_bindings, None);
    }

    #[test]
    fn mesos_containers_link_their_volumes() {
        let s = spec(
            serde_json::json!({"type": "MESOS", "volumes": [{"containerPath": "data", "persistent": {"size": 5}, "mode": "RW"}]}),
            "host",
        );
        match plan(&s, &ctx(Path::new("/s"), Path::new("/v"))) {
            Ok(Plan::Process(p)) => assert_eq!(
                p.links,
                vec![Link {
                    name: PathBuf::from("data"),
                    target: PathBuf::from("/v/prod_web#data#web.instance-1"),
                    persistent: Some("prod_web#data#web.instance-1".into()),
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_bytes("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5g"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_bytes("2048"), Some(2048));
        assert_eq!(parse_bytes("64MiB"), Some(64 * 1024 * 1024));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(container_name("a/b c"), "stride-a_b_c");
    }
}
