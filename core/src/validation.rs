//! Marathon's validation of app definitions (reference §3, §6.1, §7.1), collecting every
//! violation grouped by path, as the 422 body lists them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use regex::Regex;

use crate::app::{App, NetworkMode, UnreachableStrategy};
use crate::error::{ApiError, Violation};
use crate::path::PathId;

/// Collects errors per path, keeping the order in which paths were first seen.
#[derive(Default, Debug)]
pub struct Violations {
    order: Vec<String>,
    by_path: BTreeMap<String, Vec<String>>,
}

impl Violations {
    pub fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        let entry = self.by_path.entry(path.clone()).or_insert_with(|| {
            self.order.push(path);
            Vec::new()
        });
        if !entry.contains(&error) {
            entry.push(error);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn into_vec(mut self) -> Vec<Violation> {
        self.order
            .into_iter()
            .map(|path| Violation {
                errors: self.by_path.remove(&path).unwrap_or_default(),
                path,
            })
            .collect()
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.into_vec()))
        }
    }

    /// Adds every violation of `other` under `prefix` (for apps inside groups).
    pub fn extend_prefixed(&mut self, prefix: &str, other: Violations) {
        for v in other.into_vec() {
            for e in v.errors {
                let path = if v.path == "/" {
                    prefix.to_string()
                } else {
                    format!("{prefix}{}", v.path)
                };
                self.add(path, e);
            }
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn at_least(v: &mut Violations, path: &str, got: f64, min: f64) {
    if got < min || got.is_nan() {
        v.add(
            path,
            format!("got {}, expected {} or more", fmt_num(got), fmt_num(min)),
        );
    }
}

fn between(v: &mut Violations, path: &str, got: f64, lo: f64, hi: f64) {
    if !(lo..=hi).contains(&got) {
        v.add(
            path,
            format!("got {}, expected between {lo:.1} and {hi:.1}", fmt_num(got)),
        );
    }
}

const OPERATORS: [&str; 7] = [
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];
const HEALTH_PROTOCOLS: [&str; 7] = [
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_HTTP",
    "MESOS_HTTPS",
    "MESOS_TCP",
];
/// Longest regular expression a LIKE or UNLIKE constraint may carry.
pub const MAX_CONSTRAINT_REGEX: usize = 1024;

/// Longest app or group id accepted, in bytes (hostile input: ids end up in keys, task ids,
/// sandbox paths and every event).
pub const MAX_ID_LENGTH: usize = 500;

/// Most instances an app may ask for; a typo of a few digits should not plan a billion launches.
pub const MAX_INSTANCES: i64 = 1_000_000;

fn is_value_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-zA-Z0-9_/.-]*$").unwrap_or_else(|e| panic!("{e}")))
}

fn network_name_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$").unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Validates one constraint, adding errors at `path`.
pub fn validate_constraint(v: &mut Violations, path: &str, c: &[String]) {
    if c.len() < 2 || c.len() > 3 {
        v.add(path, "Each constraint must have either 2 or 3 fields");
        return;
    }
    if c[0].is_empty() {
        v.add(path, "missing field for constraint declaration");
    }
    let op = c[1].to_uppercase();
    if !OPERATORS.contains(&op.as_str()) {
        v.add(
            path,
            "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS",
        );
        return;
    }
    let value = c.get(2);
    match op.as_str() {
        "UNIQUE" if value.is_some() => v.add(path, "UNIQUE does not accept a value"),
        "GROUP_BY" => {
            if let Some(n) = value {
                if n.parse::<i64>().is_err() {
                    v.add(
                        path,
                        "GROUP BY must define an integer value or else no value at all",
                    );
                }
            }
        }
        "MAX_PER" if value.and_then(|n| n.parse::<i64>().ok()).is_none() => {
            v.add(path, "MAX_PER must have an integer value");
        }
        "MAX_PER" => {}
        "LIKE" | "UNLIKE" => match value {
            None => v.add(path, format!("{op} requires a non-empty value")),
            Some(re) if re.is_empty() => v.add(path, format!("{op} requires a non-empty value")),
            Some(re) if re.len() > MAX_CONSTRAINT_REGEX => v.add(
                path,
                format!("{op} regular expression is longer than {MAX_CONSTRAINT_REGEX} characters"),
            ),
            Some(re) => {
                if regex::RegexBuilder::new(&format!("^(?:{re})$"))
                    .size_limit(1 << 20)
                    .build()
                    .is_err()
                {
                    v.add(path, format!("'{re}' is not a valid regular expression"));
                }
            }
        },
        "IS" => match value {
            Some(val) if is_value_regex().is_match(val) => {}
            _ => v.add(path, "IS must have a value matching ^[a-zA-Z0-9_/.-]*$"),
        },
        _ => {}
    }
}

/// Validates a normalized app. `raw_id` is the id as the client wrote it.
pub fn validate_app(app: &App) -> Violations {
    let mut v = Violations::default();
    let raw = app.raw_id.clone().unwrap_or_else(|| app.id.to_string());
    for e in PathId::segment_errors(&raw) {
        v.add("/id", e);
    }
    if app.id.is_root() {
        v.add("/id", "must not be root");
    }
    if raw.len() > MAX_ID_LENGTH {
        v.add(
            "/id",
            format!("must not be longer than {MAX_ID_LENGTH} characters"),
        );
    }
    if let Some(cmd) = &app.cmd {
        if cmd.chars().count() <= 1 {
            v.add("/cmd", "must not be an empty string");
        }
    }
    let has_cmd = app.cmd.is_some();
    let has_args = !app.args.is_empty();
    let has_container = app.container.is_some();
    if (has_cmd && has_args) || (!has_cmd && !has_args && !has_container) {
        v.add(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
        );
    }
    at_least(&mut v, "/instances", app.instances as f64, 0.0);
    if app.instances > MAX_INSTANCES {
        v.add(
            "/instances",
            format!("got {}, expected {MAX_INSTANCES} or less", app.instances),
        );
    }
    at_least(&mut v, "/cpus", app.cpus, 0.0);
    at_least(&mut v, "/mem", app.mem, 0.0);
    at_least(&mut v, "/disk", app.disk, 0.0);
    at_least(&mut v, "/gpus", app.gpus as f64, 0.0);
    if app.gpus > 0 {
        v.add(
            "/gpus",
            "Feature gpu_resources is not enabled. Enable with --enable_features gpu_resources)",
        );
    }
    at_least(&mut v, "/backoffSeconds", app.backoff_seconds as f64, 0.0);
    at_least(&mut v, "/backoffFactor", app.backoff_factor, 1.0);
    at_least(
        &mut v,
        "/maxLaunchDelaySeconds",
        app.max_launch_delay_seconds as f64,
        0.0,
    );
    if let Some(g) = app.task_kill_grace_period_seconds {
        at_least(&mut v, "/taskKillGracePeriodSeconds", g as f64, 0.0);
    }
    if let Some(u) = &app.upgrade_strategy {
        between(
            &mut v,
            "/upgradeStrategy/minimumHealthCapacity",
            u.minimum_health_capacity,
            0.0,
            1.0,
        );
        between(
            &mut v,
            "/upgradeStrategy/maximumOverCapacity",
            u.maximum_over_capacity,
            0.0,
            1.0,
        );
    }
    if let Some(UnreachableStrategy::Enabled {
        inactive_after_seconds,
        expunge_after_seconds,
    }) = app.unreachable_strategy
    {
        if inactive_after_seconds < 0 {
            v.add(
                "/unreachableStrategy/inactiveAfterSeconds",
                format!("got {inactive_after_seconds}, expected 0 or more"),
            );
        }
        if inactive_after_seconds > expunge_after_seconds {
            v.add(
                "/unreachableStrategy/inactiveAfterSeconds",
                format!("got {inactive_after_seconds}, expected less than or equal to {expunge_after_seconds}"),
            );
        }
    }
    if !app.executor.is_empty() {
        static RE: OnceLock<Regex> = OnceLock::new();
        let re = RE.get_or_init(|| {
            Regex::new(r"^((//cmd)|(/?[^/]+(/[^/]+)*)|)$").unwrap_or_else(|e| panic!("{e}"))
        });
        if !re.is_match(&app.executor) {
            v.add(
                "/executor",
                "must fully match regular expression '^(//cmd)|(/?[^/]+(/[^/]+)*)|$'",
            );
        }
    }
    for key in app.env.keys() {
        if key.is_empty() {
            v.add("/env", "must not contain an empty name");
        }
    }
    for (name, val) in &app.env {
        if let crate::app::EnvValue::Secret { secret } = val {
            if !app.secrets.contains_key(secret) {
                v.add(format!("/env/{name}"), "references an undefined secret");
            }
        }
    }
    for (i, c) in app.constraints.iter().enumerate() {
        validate_constraint(&mut v, &format!("/constraints({i})"), c);
    }
    for (i, f) in app.fetch.iter().enumerate() {
        if f.uri.is_empty() || f.uri.len() > 1024 {
            v.add(
                format!("/fetch({i})/uri"),
                "length must be between 1 and 1024",
            );
        }
    }
    if let Some(roles) = &app.accepted_resource_roles {
        if roles.is_empty() {
            v.add("/acceptedResourceRoles", "must not be empty");
        }
        let role = app.role.as_deref().unwrap_or("*");
        for r in roles {
            if r != "*" && r != role {
                v.add(
                    "/acceptedResourceRoles",
                    format!("acceptedResourceRoles can only contain * and {role}"),
                );
            }
        }
    }
    for (i, d) in app.dependencies.iter().enumerate() {
        if !PathId::segment_errors(d).is_empty() {
            v.add(
                format!("/dependencies({i})"),
                format!(
                    "must fully match regular expression '{}'",
                    crate::path::SEGMENT_PATTERN
                ),
            );
        }
    }
    validate_networking(app, &mut v);
    validate_container(app, &mut v);
    validate_checks(app, &mut v);
    v
}

fn validate_networking(app: &App, v: &mut Violations) {
    let modes: BTreeSet<&str> = app.networks.iter().map(|n| n.mode.as_str()).collect();
    for (i, n) in app.networks.iter().enumerate() {
        if !matches!(n.mode.as_str(), "host" | "container" | "container/bridge") {
            v.add(
                format!("/networks({i})/mode"),
                "must be one of host, container, container/bridge",
            );
        }
        if let Some(name) = &n.name {
            if n.mode != "container" {
                v.add(format!("/networks({i})/name"), "must be empty");
            } else if name.len() > 63 || !network_name_regex().is_match(name) {
                v.add(
                    format!("/networks({i})/name"),
                    "must fully match regular expression '^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$'",
                );
            }
        }
    }
    if modes.len() > 1 {
        v.add("/networks", "may not mix network modes");
    } else if (modes.contains("host") || modes.contains("container/bridge"))
        && app.networks.len() > 1
    {
        v.add(
            "/networks",
            "host and container/bridge networks must be the only network",
        );
    }
    match app.network_mode() {
        NetworkMode::Host => {
            if app
                .container
                .as_ref()
                .is_some_and(|c| c.port_mappings.as_ref().is_some_and(|m| !m.is_empty()))
            {
                v.add(
                    "/container/portMappings",
                    "portMappings are not allowed with host-networking",
                );
            }
            let defs = app.port_definitions.as_deref().unwrap_or_default();
            let mut names = BTreeSet::new();
            let mut ports = BTreeSet::new();
            for (i, d) in defs.iter().enumerate() {
                if let Some(name) = &d.name {
                    if !names.insert(name.clone()) {
                        v.add("/portDefinitions", "Port names must be unique.");
                    }
                }
                if d.port != 0 && !ports.insert(d.port) {
                    v.add("/portDefinitions", "Ports must be unique.");
                }
                if !(0..=65535).contains(&d.port) {
                    v.add(
                        format!("/portDefinitions({i})/port"),
                        format!("got {}, expected between 0 and 65535", d.port),
                    );
                }
                if !matches!(d.protocol.as_str(), "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
                    v.add(
                        format!("/portDefinitions({i})/protocol"),
                        "must be one of tcp, udp, udp,tcp",
                    );
                }
            }
        }
        _ => {
            if app.port_definitions.as_ref().is_some_and(|d| !d.is_empty()) {
                v.add(
                    "/portDefinitions",
                    "portDefinitions are only allowed with host-networking",
                );
            }
            let mappings = app
                .container
                .as_ref()
                .and_then(|c| c.port_mappings.as_deref())
                .unwrap_or_default();
            let mut names = BTreeSet::new();
            for (i, m) in mappings.iter().enumerate() {
                if let Some(name) = &m.name {
                    if !names.insert(name.clone()) {
                        v.add("/container/portMappings", "Port names must be unique.");
                    }
                }
                for (field, val) in [
                    ("containerPort", Some(m.container_port)),
                    ("hostPort", m.host_port),
                    ("servicePort", Some(m.service_port)),
                ] {
                    if let Some(p) = val {
                        if !(0..=65535).contains(&p) {
                            v.add(
                                format!("/container/portMappings({i})/{field}"),
                                format!("got {p}, expected between 0 and 65535"),
                            );
                        }
                    }
                }
            }
        }
    }
}

fn validate_container(app: &App, v: &mut Violations) {
    let Some(c) = &app.container else { return };
    match c.kind.as_str() {
        "DOCKER" => match &c.docker {
            None => v.add("/container/docker", "must not be empty"),
            Some(d) => {
                if d.image.is_empty() {
                    v.add("/container/docker/image", "must not be empty");
                }
                if d.credential.is_some() {
                    v.add(
                        "/container/docker/credential",
                        "not allowed; use a Docker config fetched with the task",
                    );
                }
                if d.pull_config.is_some() {
                    v.add(
                        "/container/docker/pullConfig",
                        "pullConfig is not supported with Docker containerizer",
                    );
                }
            }
        },
        "MESOS" => {
            if let Some(d) = &c.docker {
                if !d.parameters.is_empty() {
                    v.add(
                        "/container/docker/parameters",
                        "parameters are only supported with Docker containerizer",
                    );
                }
            }
        }
        other => v.add(
            "/container/type",
            format!("container type {other} is not supported: use DOCKER, or MESOS for a command"),
        ),
    }
    for (i, vol) in c.volumes.iter().enumerate() {
        if vol.container_path.is_empty() {
            v.add(
                format!("/container/volumes({i})/containerPath"),
                "must not be empty",
            );
        }
        if let Some(mode) = &vol.mode {
            if mode != "RO" && mode != "RW" {
                v.add(
                    format!("/container/volumes({i})/mode"),
                    "must be one of RO, RW",
                );
            }
        }
    }
}

fn validate_checks(app: &App, v: &mut Violations) {
    let ports = app.port_count() as i64;
    let mut mesos_checks = 0;
    for (i, hc) in app.health_checks.iter().enumerate() {
        let p = format!("/healthChecks({i})");
        if !HEALTH_PROTOCOLS.contains(&hc.protocol.as_str()) {
            v.add(
                format!("{p}/protocol"),
                format!("must be one of {}", HEALTH_PROTOCOLS.join(", ")),
            );
            continue;
        }
        if matches!(
            hc.protocol.as_str(),
            "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP"
        ) {
            mesos_checks += 1;
        }
        if hc.protocol == "COMMAND" {
            if hc.command.as_ref().is_none_or(|c| c.value.is_empty()) {
                v.add(format!("{p}/command"), "must not be empty");
            }
        } else {
            if hc.port.is_some() && hc.port_index.is_some() {
                v.add(
                    p.clone(),
                    "Health check must specify either a port or a portIndex, not both",
                );
            }
            match (hc.port, hc.port_index) {
                (None, None) | (None, Some(_)) if hc.port_index.is_none_or(|ix| ix < 0 || ix >= ports) => v.add(
                    p.clone(),
                    "Health check port indices must address an element of the ports array or container port mappings.",
                ),
                (Some(port), _) if !(0..=65535).contains(&port) => {
                    v.add(format!("{p}/port"), format!("got {port}, expected between 0 and 65535"))
                }
                _ => {}
            }
        }
        at_least(
            v,
            &format!("{p}/gracePeriodSeconds"),
            hc.grace_period_seconds as f64,
            0.0,
        );
        at_least(
            v,
            &format!("{p}/intervalSeconds"),
            hc.interval_seconds as f64,
            0.0,
        );
        at_least(
            v,
            &format!("{p}/timeoutSeconds"),
            hc.timeout_seconds as f64,
            0.0,
        );
        at_least(
            v,
            &format!("{p}/maxConsecutiveFailures"),
            hc.max_consecutive_failures as f64,
            0.0,
        );
    }
    if mesos_checks > 1 {
        v.add(
            "/healthChecks",
            "AppDefinition can contain at most one Mesos health check",
        );
    }
    if app.readiness_checks.len() > 1 {
        v.add("/readinessChecks", "must be less than or equal to 1");
    }
    let names = app.port_names();
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        let p = format!("/readinessChecks({i})");
        if !names
            .iter()
            .any(|n| n.as_deref() == Some(rc.port_name.as_str()))
        {
            v.add(
                format!("{p}/portName"),
                format!(
                    "no port named '{}' in portDefinitions or portMappings",
                    rc.port_name
                ),
            );
        }
        if rc.timeout_seconds <= 0 || rc.timeout_seconds >= rc.interval_seconds {
            v.add(
                format!("{p}/timeoutSeconds"),
                "must be greater than 0 and less than intervalSeconds",
            );
        }
        if !matches!(rc.protocol.as_str(), "HTTP" | "HTTPS") {
            v.add(format!("{p}/protocol"), "must be one of HTTP, HTTPS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(v: serde_json::Value) -> App {
        let mut a: App = serde_json::from_value(v).expect("parses");
        a.normalize();
        a
    }

    #[test]
    fn a_valid_app_has_no_violations() {
        let a = app(json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "instances": 3}));
        assert!(validate_app(&a).is_empty());
    }

    #[test]
    fn cmd_and_args_together_are_refused() {
        let a = app(json!({"id": "/web", "cmd": "sleep 1", "args": ["sleep", "1"]}));
        let v = validate_app(&a).into_vec();
        assert_eq!(v[0].path, "/");
    }

    #[test]
    fn negative_instances_and_bad_ids() {
        let mut a = app(json!({"id": "/Bad_Id", "cmd": "sleep 1", "instances": -1}));
        a.raw_id = Some("/Bad_Id".into());
        let v = validate_app(&a).into_vec();
        let paths: Vec<_> = v.iter().map(|x| x.path.as_str()).collect();
        assert!(paths.contains(&"/id"));
        assert!(paths.contains(&"/instances"));
        let inst = v
            .iter()
            .find(|x| x.path == "/instances")
            .expect("instances");
        assert_eq!(inst.errors, vec!["got -1, expected 0 or more"]);
    }

    #[test]
    fn huge_ids_and_instance_counts_are_refused() {
        let long = format!("/{}", ["segment"; 70].join("/"));
        let a = app(json!({"id": long, "cmd": "sleep 1", "instances": 1_000_001}));
        let v = validate_app(&a).into_vec();
        let errors = |path: &str| {
            v.iter()
                .find(|x| x.path == path)
                .map(|x| x.errors.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            errors("/id"),
            vec!["must not be longer than 500 characters"]
        );
        assert_eq!(
            errors("/instances"),
            vec!["got 1000001, expected 1000000 or less"]
        );
        let ok = app(json!({"id": "/web", "cmd": "sleep 1", "instances": 1_000_000}));
        assert!(validate_app(&ok).is_empty());
    }

    #[test]
    fn upgrade_strategy_range() {
        let a = app(
            json!({"id": "/a", "cmd": "sleep 1", "upgradeStrategy": {"minimumHealthCapacity": 1.1}}),
        );
        let v = validate_app(&a).into_vec();
        assert_eq!(v[0].path, "/upgradeStrategy/minimumHealthCapacity");
        assert_eq!(v[0].errors[0], "got 1.1, expected between 0.0 and 1.0");
    }

    #[test]
    fn constraints() {
        let mut v = Violations::default();
        validate_constraint(
            &mut v,
            "/c",
            &["hostname".into(), "UNIQUE".into(), "".into()],
        );
        validate_constraint(&mut v, "/d", &["hostname".into(), "FOO".into()]);
        validate_constraint(
            &mut v,
            "/e",
            &["rack".into(), "GROUP_BY".into(), "x".into()],
        );
        validate_constraint(&mut v, "/f", &["rack".into(), "LIKE".into(), "(".into()]);
        assert_eq!(v.into_vec().len(), 4);
    }
}
