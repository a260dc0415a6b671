//! Marathon's app definition (`App` in `app.raml`), its JSON shape and its defaults.
//!
//! The struct accepts what Marathon accepts (deprecated fields, `null` for absent values, unknown
//! fields ignored) and prints what Marathon prints (absent options and empty collections left out,
//! whole doubles as integers). [`App::normalize`] applies Marathon's canonicalisation: deprecated
//! fields become canonical ones and the defaults that depend on other fields are filled in.
//! Validation is in [`crate::validation`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::num::ser_f64;
use crate::path::PathId;
use crate::time::Timestamp;

/// Deserializes `null` as the type's default, as Marathon ≤1.4 clients send `"args": null`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An app definition. Fields whose default depends on other fields (`networks`,
/// `portDefinitions`, `upgradeStrategy`, `unreachableStrategy`) are `Option` until
/// [`App::normalize`] fills them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    #[serde(default)]
    pub id: PathId,
    /// The id exactly as given, for validation of its segments; never printed.
    #[serde(skip)]
    pub raw_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(
        default = "defaults::instances",
        deserialize_with = "null_or_instances"
    )]
    pub instances: i64,
    #[serde(
        default = "defaults::cpus",
        deserialize_with = "null_or_cpus",
        serialize_with = "ser_f64"
    )]
    pub cpus: f64,
    #[serde(
        default = "defaults::mem",
        deserialize_with = "null_or_mem",
        serialize_with = "ser_f64"
    )]
    pub mem: f64,
    #[serde(default, deserialize_with = "null_default", serialize_with = "ser_f64")]
    pub disk: f64,
    #[serde(default, deserialize_with = "null_default")]
    pub gpus: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub executor: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub constraints: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub networks: Vec<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default, deserialize_with = "null_default")]
    pub require_ports: bool,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fetch: Vec<FetchUri>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub health_checks: Vec<HealthCheck>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    #[serde(
        default = "defaults::backoff_seconds",
        deserialize_with = "null_or_backoff_seconds"
    )]
    pub backoff_seconds: i64,
    #[serde(
        default = "defaults::backoff_factor",
        deserialize_with = "null_or_backoff_factor",
        serialize_with = "ser_f64"
    )]
    pub backoff_factor: f64,
    #[serde(
        default = "defaults::max_launch_delay",
        deserialize_with = "null_or_max_launch_delay"
    )]
    pub max_launch_delay_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub kill_selection: KillSelection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<UnreachableStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub secrets: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_resources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,

    // Deprecated input, translated by `normalize` and never printed.
    #[serde(default, skip_serializing)]
    pub uris: Option<Vec<String>>,
    #[serde(default, skip_serializing)]
    pub ports: Option<Vec<i64>>,
    #[serde(default, skip_serializing)]
    pub ip_address: Option<Value>,
}

mod defaults {
    pub fn instances() -> i64 {
        1
    }
    pub fn cpus() -> f64 {
        1.0
    }
    pub fn mem() -> f64 {
        128.0
    }
    pub fn backoff_seconds() -> i64 {
        1
    }
    pub fn backoff_factor() -> f64 {
        1.15
    }
    pub fn max_launch_delay() -> i64 {
        300
    }
}

macro_rules! null_or {
    ($name:ident, $t:ty, $default:path) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
            Ok(Option::<$t>::deserialize(d)?.unwrap_or_else($default))
        }
    };
}
null_or!(null_or_instances, i64, defaults::instances);
null_or!(null_or_cpus, f64, defaults::cpus);
null_or!(null_or_mem, f64, defaults::mem);
null_or!(null_or_backoff_seconds, i64, defaults::backoff_seconds);
null_or!(null_or_backoff_factor, f64, defaults::backoff_factor);
null_or!(null_or_max_launch_delay, i64, defaults::max_launch_delay);

/// An `env` value: a plain string or a reference to a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one", serialize_with = "ser_f64")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one", serialize_with = "ser_f64")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// `"disabled"` or the two timeouts after which an unreachable instance is replaced and
/// forgotten.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled {
        inactive_after_seconds: i64,
        expunge_after_seconds: i64,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        Self::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

impl Serialize for UnreachableStrategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Disabled => s.serialize_str("disabled"),
            Self::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => serde_json::json!({
                "inactiveAfterSeconds": inactive_after_seconds,
                "expungeAfterSeconds": expunge_after_seconds,
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for UnreachableStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Enabled {
            #[serde(default)]
            inactive_after_seconds: i64,
            #[serde(default)]
            expunge_after_seconds: i64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Enabled(Enabled),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "disabled" => Ok(Self::Disabled),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "unreachableStrategy must be \"disabled\" or an object, got \"{w}\""
            ))),
            Raw::Enabled(e) => Ok(Self::Enabled {
                inactive_after_seconds: e.inactive_after_seconds,
                expunge_after_seconds: e.expunge_after_seconds,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default = "container_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

fn container_mode() -> String {
    "container".to_string()
}

impl Network {
    pub fn host() -> Self {
        Self {
            mode: "host".into(),
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".to_string()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

impl FetchUri {
    /// The fetch entry Marathon makes of a deprecated `uris` element.
    pub fn from_uri(uri: &str) -> Self {
        const ARCHIVES: [&str; 7] = [
            ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
        ];
        Self {
            uri: uri.to_string(),
            extract: ARCHIVES.iter().any(|s| uri.ends_with(s)),
            executable: false,
            cache: false,
            dest_path: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandValue {
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandValue>,
    #[serde(default = "grace_period")]
    pub grace_period_seconds: i64,
    #[serde(default = "hc_interval")]
    pub interval_seconds: i64,
    #[serde(default = "hc_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "max_failures")]
    pub max_consecutive_failures: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_http1xx: bool,
    #[serde(default = "delay")]
    pub delay_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<String>,
}

fn http() -> String {
    "HTTP".into()
}
fn grace_period() -> i64 {
    300
}
fn hc_interval() -> i64 {
    60
}
fn hc_timeout() -> i64 {
    20
}
fn max_failures() -> i64 {
    3
}
fn delay() -> i64 {
    15
}

impl HealthCheck {
    /// Protocols Stride runs itself (from the health checkers) rather than on the agent.
    pub fn is_marathon_level(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTP" | "HTTPS" | "TCP")
    }

    pub fn uses_port(&self) -> bool {
        self.protocol != "COMMAND"
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "readiness_name")]
    pub name: String,
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default = "http_api")]
    pub port_name: String,
    #[serde(default = "readiness_interval")]
    pub interval_seconds: i64,
    #[serde(default = "readiness_timeout")]
    pub timeout_seconds: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub http_status_codes_for_ready: Vec<u16>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn readiness_name() -> String {
    "readinessCheck".into()
}
fn slash() -> String {
    "/".into()
}
fn http_api() -> String {
    "http-api".into()
}
fn readiness_interval() -> i64 {
    30
}
fn readiness_timeout() -> i64 {
    10
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_info: Option<Value>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: String,
    #[serde(default, deserialize_with = "null_default")]
    pub force_pull_image: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub privileged: bool,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub parameters: Vec<DockerParameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<Value>,
    // Deprecated input.
    #[serde(default, skip_serializing)]
    pub network: Option<String>,
    #[serde(default, skip_serializing)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing)]
    pub credential: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Which networking an app uses, decided by its `networks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    Host,
    Bridge,
    Container,
}

impl App {
    /// A minimal app with Marathon's defaults, for tests and factories.
    pub fn new(id: &str) -> Self {
        let mut app: App = serde_json::from_value(serde_json::json!({ "id": id }))
            .unwrap_or_else(|e| panic!("an app with only an id always parses: {e}"));
        app.normalize();
        app
    }

    pub fn network_mode(&self) -> NetworkMode {
        match self.networks.first().map(|n| n.mode.as_str()) {
            Some("container/bridge") => NetworkMode::Bridge,
            Some("container") => NetworkMode::Container,
            _ => NetworkMode::Host,
        }
    }

    pub fn has_persistent_volumes(&self) -> bool {
        self.container.as_ref().is_some_and(|c| {
            c.volumes
                .iter()
                .any(|v| v.persistent.is_some() || v.external.is_some())
        })
    }

    /// Canonicalises the definition as Marathon's normalisation does (reference §2).
    pub fn normalize(&mut self) {
        if let Some(uris) = self.uris.take() {
            if self.fetch.is_empty() {
                self.fetch = uris.iter().map(|u| FetchUri::from_uri(u)).collect();
            }
        }
        if let Some(container) = self.container.as_mut() {
            if let Some(docker) = container.docker.as_mut() {
                if let Some(network) = docker.network.take() {
                    if self.networks.is_empty() {
                        let mode = match network.as_str() {
                            "BRIDGE" => "container/bridge",
                            "USER" => "container",
                            _ => "host",
                        };
                        self.networks.push(Network {
                            mode: mode.into(),
                            name: None,
                            labels: BTreeMap::new(),
                        });
                    }
                }
                if let Some(mappings) = docker.port_mappings.take() {
                    if container.port_mappings.is_none() {
                        container.port_mappings = Some(mappings);
                    }
                }
            }
        }
        if self.networks.is_empty() {
            self.networks.push(Network::host());
        }
        let mode = self.network_mode();
        match mode {
            NetworkMode::Host => {
                if let Some(ports) = self.ports.take() {
                    if self.port_definitions.is_none() {
                        self.port_definitions = Some(
                            ports
                                .into_iter()
                                .map(|p| PortDefinition {
                                    port: p,
                                    protocol: tcp(),
                                    name: None,
                                    labels: BTreeMap::new(),
                                })
                                .collect(),
                        );
                    }
                }
                if self.port_definitions.is_none() {
                    self.port_definitions = Some(vec![PortDefinition {
                        port: 0,
                        protocol: tcp(),
                        name: Some("default".into()),
                        labels: BTreeMap::new(),
                    }]);
                }
            }
            NetworkMode::Bridge | NetworkMode::Container => {
                self.require_ports = false;
                let container = self.container.get_or_insert_with(|| Container {
                    kind: "MESOS".into(),
                    docker: None,
                    volumes: Vec::new(),
                    port_mappings: None,
                    linux_info: None,
                });
                let mappings = container.port_mappings.get_or_insert_with(|| {
                    vec![PortMapping {
                        container_port: 0,
                        host_port: None,
                        service_port: 0,
                        protocol: tcp(),
                        name: Some("default".into()),
                        labels: BTreeMap::new(),
                        network_names: Vec::new(),
                    }]
                });
                if mode == NetworkMode::Bridge {
                    for m in mappings.iter_mut() {
                        m.host_port.get_or_insert(0);
                    }
                }
            }
        }
        let has_ports = self.port_count() > 0;
        for hc in &mut self.health_checks {
            if hc.uses_port() && hc.port.is_none() && hc.port_index.is_none() && has_ports {
                hc.port_index = Some(0);
            }
            if matches!(
                hc.protocol.as_str(),
                "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
            ) {
                let path = hc.path.take().unwrap_or_else(|| "/".into());
                hc.path = Some(if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                });
            }
        }
        for rc in &mut self.readiness_checks {
            if rc.http_status_codes_for_ready.is_empty() {
                rc.http_status_codes_for_ready = vec![200];
            }
        }
        let resident = self.has_persistent_volumes();
        if self.upgrade_strategy.is_none() {
            self.upgrade_strategy = Some(if resident {
                UpgradeStrategy {
                    minimum_health_capacity: 0.5,
                    maximum_over_capacity: 0.0,
                }
            } else {
                UpgradeStrategy::default()
            });
        }
        if self.unreachable_strategy.is_none() {
            self.unreachable_strategy = Some(if resident {
                UnreachableStrategy::Disabled
            } else {
                UnreachableStrategy::default()
            });
        }
        if self.role.is_none() {
            self.role = Some("*".into());
        }
    }

    /// How many ports each task of this app gets a host port for.
    pub fn port_count(&self) -> usize {
        match self.network_mode() {
            NetworkMode::Host => self.port_definitions.as_ref().map_or(0, Vec::len),
            _ => self
                .container
                .as_ref()
                .and_then(|c| c.port_mappings.as_ref())
                .map_or(0, |m| m.iter().filter(|m| m.host_port.is_some()).count()),
        }
    }

    /// Host ports the app insists on (`requirePorts`, or fixed `hostPort`s in mappings).
    pub fn required_host_ports(&self) -> Vec<Option<u32>> {
        match self.network_mode() {
            NetworkMode::Host => self
                .port_definitions
                .iter()
                .flatten()
                .map(|p| (self.require_ports && p.port > 0).then_some(p.port as u32))
                .collect(),
            _ => self
                .container
                .iter()
                .flat_map(|c| c.port_mappings.iter().flatten())
                .filter_map(|m| m.host_port)
                .map(|hp| (hp > 0).then_some(hp as u32))
                .collect(),
        }
    }

    /// The service ports, in port order.
    pub fn service_ports(&self) -> Vec<i64> {
        match self.network_mode() {
            NetworkMode::Host => self
                .port_definitions
                .iter()
                .flatten()
                .map(|p| p.port)
                .collect(),
            _ => self
                .container
                .iter()
                .flat_map(|c| c.port_mappings.iter().flatten())
                .map(|m| m.service_port)
                .collect(),
        }
    }

    /// Port names in order, `None` where a port has none.
    pub fn port_names(&self) -> Vec<Option<String>> {
        match self.network_mode() {
            NetworkMode::Host => self
                .port_definitions
                .iter()
                .flatten()
                .map(|p| p.name.clone())
                .collect(),
            _ => self
                .container
                .iter()
                .flat_map(|c| c.port_mappings.iter().flatten())
                .filter(|m| m.host_port.is_some())
                .map(|m| m.name.clone())
                .collect(),
        }
    }

    pub fn upgrade(&self) -> UpgradeStrategy {
        self.upgrade_strategy.unwrap_or_default()
    }

    pub fn unreachable(&self) -> UnreachableStrategy {
        self.unreachable_strategy.unwrap_or_default()
    }

    /// The canonical JSON, as stored and as `GET /v2/apps/{id}/versions/{v}` shows it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The configuration without the fields the server sets, for "did anything change?".
    fn config_view(&self) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("version");
            o.remove("versionInfo");
            o.remove("instances");
        }
        v
    }

    /// Marathon's `isUpgrade`: a change that needs new tasks.
    pub fn is_upgrade(&self, to: &App) -> bool {
        self.config_view() != to.config_view()
    }

    /// Only `instances` differs.
    pub fn is_only_scale_change(&self, to: &App) -> bool {
        !self.is_upgrade(to) && self.instances != to.instances
    }

    /// Marathon's `needsRestart`: a configuration change, or a restart request (a new
    /// `lastConfigChangeAt` with the same configuration).
    pub fn needs_restart(&self, to: &App) -> bool {
        self.is_upgrade(to)
            || self.version_info.as_ref().map(|v| v.last_config_change_at)
                != to.version_info.as_ref().map(|v| v.last_config_change_at)
    }

    /// The version instances of this configuration are launched with: the time of the last
    /// configuration change.
    pub fn config_version(&self) -> Timestamp {
        self.version_info
            .as_ref()
            .map(|v| v.last_config_change_at)
            .or(self.version)
            .unwrap_or_default()
    }

    pub fn kill_grace_period_ms(&self) -> u64 {
        self.task_kill_grace_period_seconds
            .map_or(3_000, |s| (s.max(0) as u64).saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_marathon() {
        let app = App::new("/simple");
        let v = app.to_json();
        assert_eq!(v["instances"], json!(1));
        assert_eq!(v["cpus"], json!(1));
        assert_eq!(v["mem"], json!(128));
        assert_eq!(v["disk"], json!(0));
        assert_eq!(v["backoffFactor"], json!(1.15));
        assert_eq!(v["maxLaunchDelaySeconds"], json!(300));
        assert_eq!(v["networks"], json!([{"mode": "host"}]));
        assert_eq!(
            v["portDefinitions"],
            json!([{"port": 0, "protocol": "tcp", "name": "default"}])
        );
        assert_eq!(
            v["upgradeStrategy"],
            json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 1})
        );
        assert_eq!(
            v["unreachableStrategy"],
            json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        );
        assert_eq!(v["killSelection"], json!("YOUNGEST_FIRST"));
        assert_eq!(v["role"], json!("*"));
        assert_eq!(v["labels"], json!({}));
        assert!(v.get("args").is_none());
        assert!(v.get("version").is_none());
    }

    #[test]
    fn nulls_are_absent_and_deprecated_fields_translate() {
        let mut app: App = serde_json::from_value(json!({
            "id": "/a", "cmd": "sleep 1", "args": null, "container": null, "user": null,
            "uris": ["http://x/y.tgz", "http://x/z"], "ports": [0, 0], "instances": null
        }))
        .expect("parses");
        app.normalize();
        assert_eq!(app.instances, 1);
        assert!(app.fetch[0].extract);
        assert!(!app.fetch[1].extract);
        assert_eq!(app.port_definitions.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn scale_only_changes_are_not_upgrades() {
        let a = App::new("/a");
        let mut b = a.clone();
        b.instances = 5;
        assert!(!a.is_upgrade(&b));
        assert!(a.is_only_scale_change(&b));
        b.cmd = Some("sleep 2".into());
        assert!(a.is_upgrade(&b));
    }
}
