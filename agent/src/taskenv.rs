//! The environment a task starts with, as Marathon and Mesos give it (reference §3.4): nothing
//! of the agent's own environment except `PATH`, then the task variables (`PORT0`, `PORTS`,
//! `HOST`, `MESOS_TASK_ID`, `MARATHON_APP_ID`, ...), then the app's `env`, which wins over the
//! task variables as in Marathon.

use std::collections::BTreeMap;
use std::path::Path;

use crate::process::RunAs;
use crate::task::LaunchSpec;

/// Builds the complete environment of a process task.
pub(crate) fn task_environment(
    spec: &LaunchSpec,
    agent_hostname: &str,
    sandbox: &Path,
    task_path: &str,
    user: Option<&RunAs>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), task_path.to_string());
    if let Some(user) = user {
        env.insert("USER".to_string(), user.name.clone());
        env.insert("LOGNAME".to_string(), user.name.clone());
        env.insert("HOME".to_string(), user.home.display().to_string());
    }
    // The task variables and the app's env win over the agent's defaults above.
    env.extend(task_variables(spec, agent_hostname, sandbox));
    env
}

/// The variables Marathon and Mesos give every task, then the app's `env`: for containers,
/// which keep their image's `PATH` and user, this is the whole environment. `sandbox` is the
/// sandbox as the task sees it.
pub(crate) fn task_variables(
    spec: &LaunchSpec,
    agent_hostname: &str,
    sandbox: &Path,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };

    let ports: Vec<String> = spec.host_ports.iter().map(u32::to_string).collect();
    for (i, port) in ports.iter().enumerate() {
        set(&format!("PORT{i}"), port.clone());
    }
    if let Some(first) = ports.first() {
        set("PORT", first.clone());
    }
    if !ports.is_empty() {
        set("PORTS", ports.join(","));
    }
    for (name, port) in spec.port_names.iter().zip(&ports) {
        if !name.is_empty() {
            set(&format!("PORT_{}", sanitize(name)), port.clone());
        }
    }

    let host = if spec.hostname.is_empty() {
        agent_hostname
    } else {
        &spec.hostname
    };
    set("HOST", host.to_string());
    set("MESOS_TASK_ID", spec.task_id.clone());
    set("MESOS_SANDBOX", sandbox.display().to_string());
    set("MARATHON_APP_ID", spec.app_id.clone());
    set("MARATHON_APP_VERSION", spec.app_version.clone());
    set(
        "MARATHON_APP_RESOURCE_CPUS",
        scala_double(spec.resources.cpus),
    );
    set(
        "MARATHON_APP_RESOURCE_MEM",
        scala_double(spec.resources.mem),
    );
    set(
        "MARATHON_APP_RESOURCE_DISK",
        scala_double(spec.resources.disk),
    );
    set(
        "MARATHON_APP_RESOURCE_GPUS",
        spec.resources.gpus.to_string(),
    );

    for (k, v) in &spec.env {
        set(k, v.clone());
    }
    env
}

/// Upper-cases a name and replaces everything but ASCII letters and digits by `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Formats a number the way Marathon (Scala's `Double.toString`) does: `1.0`, `0.5`, `128.0`.
fn scala_double(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::task::TaskResources;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            task_id: "web.instance-1._app.1".into(),
            app_id: "/prod/web".into(),
            app_version: "2024-01-01T00:00:00.000Z".into(),
            cmd: "env".into(),
            env: vec![
                ("FOO".into(), "bar".into()),
                ("HOST".into(), "overridden".into()),
            ],
            resources: TaskResources {
                cpus: 0.5,
                mem: 128.0,
                disk: 0.0,
                gpus: 0,
            },
            host_ports: vec![31000, 31001, 31002],
            port_names: vec!["http".into(), "".into(), "admin-api".into()],
            ..LaunchSpec::default()
        }
    }

    #[test]
    fn marathon_task_variables_are_set() {
        let sandbox = PathBuf::from("/w/sandboxes/t");
        let env = task_environment(&spec(), "node-1", &sandbox, "/bin", None);
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT2"), Some("31002"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001,31002"));
        assert_eq!(get("PORT_HTTP"), Some("31000"));
        assert_eq!(get("PORT_ADMIN_API"), Some("31002"));
        assert_eq!(get("MESOS_TASK_ID"), Some("web.instance-1._app.1"));
        assert_eq!(get("MESOS_SANDBOX"), Some("/w/sandboxes/t"));
        assert_eq!(get("MARATHON_APP_ID"), Some("/prod/web"));
        assert_eq!(get("MARATHON_APP_RESOURCE_CPUS"), Some("0.5"));
        assert_eq!(get("MARATHON_APP_RESOURCE_MEM"), Some("128.0"));
        assert_eq!(get("MARATHON_APP_RESOURCE_GPUS"), Some("0"));
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(
            get("HOST"),
            Some("overridden"),
            "the app's env wins, as in Marathon"
        );
    }

    #[test]
    fn host_falls_back_to_the_agent_and_ports_may_be_absent() {
        let spec = LaunchSpec {
            task_id: "t".into(),
            ..LaunchSpec::default()
        };
        let env = task_environment(&spec, "node-1", Path::new("/s"), "/bin", None);
        assert_eq!(env.get("HOST").map(String::as_str), Some("node-1"));
        assert!(!env.contains_key("PORT"));
        assert!(!env.contains_key("PORTS"));
    }
}
