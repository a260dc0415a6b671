//! The agent's configuration: one typed struct, loaded in layers — defaults, then an optional
//! JSON file, then `STRIDE_AGENT_*` environment variables, then command-line flags — with unknown
//! keys rejected at every layer.
//!
//! Values that depend on the machine (agent id, hostname, cpus, mem, disk) are `None` here and are
//! detected when the agent starts, so that loading a configuration never touches the node.
//! The loader takes the environment as an argument: nothing here reads process-wide state, so
//! tests and `stride dev` can build as many configurations as they like.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that configure the agent (`STRIDE_AGENT_WORK_DIR`, ...).
pub const ENV_PREFIX: &str = "STRIDE_AGENT_";

/// `PATH` given to tasks when the agent's environment has none.
pub const DEFAULT_TASK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the agent's gRPC API listens unless configured otherwise.
pub const DEFAULT_API_LISTEN: &str = "0.0.0.0:5052";

/// Everything the agent needs to know to run. Build one with [`Config::load`] (binaries) or
/// [`Config::for_dev`] and then adjust the public fields (tests, `stride dev`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Stable identity of this node. Default: a UUID generated once and kept in
    /// `<work_dir>/agent-id`, so a restarted agent is the same agent to the scheduler.
    pub agent_id: Option<String>,
    /// The name the scheduler places tasks by and tasks see as `HOST`. Default: the kernel's
    /// hostname.
    pub hostname: Option<String>,
    /// gRPC endpoints of the schedulers (`http://10.0.0.1:5051`); the agent finds the leader
    /// among them. Required.
    pub schedulers: Vec<String>,
    /// Where the agent keeps its state (`agent-id`, `epoch`, `tasks.journal`) and the task
    /// sandboxes.
    pub work_dir: PathBuf,
    /// CPUs offered to the scheduler. Default: the CPUs this process may run on.
    pub cpus: Option<f64>,
    /// Memory offered, in MiB. Default: `MemTotal` from `/proc/meminfo`.
    pub mem: Option<f64>,
    /// Disk offered, in MiB. Default: the space available to the agent in `work_dir`.
    pub disk: Option<f64>,
    /// Host ports offered to tasks, e.g. `31000-32000` or `31000-31999,33000-33099`.
    pub ports: PortRanges,
    /// Node attributes for constraints, written `rack_id:r1;zone:a`.
    pub attributes: Attributes,
    /// Fault domain: region.
    pub region: Option<String>,
    /// Fault domain: zone.
    pub zone: Option<String>,
    /// How long the sandbox of a task that is no longer tracked is kept, e.g. `24h`.
    #[serde(with = "duration_text")]
    pub sandbox_retention: Duration,
    /// `PATH` of the tasks' environment. Default: the `PATH` of the environment given to
    /// [`Config::load`], else [`DEFAULT_TASK_PATH`].
    pub task_path: String,
    /// Where the agent's own gRPC API (sandbox files, command checks) listens. Port 0 picks a
    /// free port, which is then the one advertised.
    pub api_listen: String,
    /// `host:port` the scheduler records for the API, which gateways and health checkers dial.
    /// Default: `<hostname>:<port of api_listen>`.
    pub api_advertise: Option<String>,
    /// Whether `container.docker.privileged: true` is honoured; otherwise such tasks fail.
    pub allow_privileged: bool,
    /// Whether volumes with an absolute `hostPath` may be mounted (Docker) or linked (MESOS);
    /// otherwise such tasks fail. Relative host paths stay inside the sandbox and are always
    /// allowed.
    pub allow_host_volumes: bool,
    /// The Docker Engine endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`). Default:
    /// bollard's default, which honours `DOCKER_HOST` of the agent's environment.
    pub docker_host: Option<String>,
    /// Whether process tasks are confined with cgroups (memory and CPU) where the node allows it.
    pub cgroups: bool,
    /// PEM CA of the cluster. With `tls_cert` and `tls_key`: the agent dials the schedulers
    /// over mutual TLS (`https://`, presenting its certificate) and its API accepts only
    /// clients with a certificate this CA signed.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate of this agent, signed by `tls_ca`; its SANs must name the host in
    /// `api_advertise` for clients of the agent API to accept it.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_id: None,
            hostname: None,
            schedulers: Vec::new(),
            work_dir: PathBuf::from("/var/lib/stride-agent"),
            cpus: None,
            mem: None,
            disk: None,
            ports: PortRanges(vec![PortRange {
                begin: 31000,
                end: 32000,
            }]),
            attributes: Attributes::default(),
            region: None,
            zone: None,
            sandbox_retention: Duration::from_secs(24 * 3600),
            task_path: DEFAULT_TASK_PATH.to_string(),
            api_listen: DEFAULT_API_LISTEN.to_string(),
            api_advertise: None,
            allow_privileged: false,
            allow_host_volumes: false,
            docker_host: None,
            cgroups: true,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: only JSON configuration files are supported")]
    Format { path: PathBuf },
    #[error("unknown configuration variable {0}")]
    UnknownVariable(String),
    #[error("unknown configuration key {0}")]
    UnknownKey(String),
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// A configuration for running an agent inside another process (tests, `stride dev`): the
    /// given work directory and schedulers, the API on a free loopback port (several agents may
    /// share the process), everything else default.
    pub fn for_dev(work_dir: impl Into<PathBuf>, schedulers: Vec<String>) -> Self {
        Self {
            work_dir: work_dir.into(),
            schedulers,
            api_listen: "127.0.0.1:0".into(),
            ..Self::default()
        }
    }

    /// Loads the layers in order: defaults, `file` (JSON), `STRIDE_AGENT_<KEY>` variables of `env`,
    /// then `overrides` (`(key, value)` pairs from flags, keys named like the fields). The
    /// result is validated.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        // The agent's own PATH is the natural default for its tasks; a file may still set another.
        if config.task_path == DEFAULT_TASK_PATH {
            if let Some(path) = env.get("PATH").filter(|p| !p.is_empty()) {
                config.task_path = path.clone();
            }
        }
        let mut vars: Vec<(&String, &String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let key = var[ENV_PREFIX.len()..].to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownVariable(var.clone()));
            }
            config.set(&key, value)?;
        }
        for (key, value) in overrides {
            config.set(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        if path.extension().is_some_and(|e| e != "json") {
            return Err(ConfigError::Format {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Sets one key from its text form, as written in the environment or on the command line.
    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Value {
            key: key.to_string(),
            message,
        };
        let text = || Some(value.to_string()).filter(|v| !v.is_empty());
        let flag = || -> Result<bool, ConfigError> {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" | "" => Ok(false),
                _ => Err(bad(format!("{value:?} is not true or false"))),
            }
        };
        let number = || -> Result<Option<f64>, ConfigError> {
            if value.is_empty() {
                return Ok(None);
            }
            value
                .parse::<f64>()
                .map(Some)
                .map_err(|e| bad(format!("{value:?} is not a number: {e}")))
        };
        match key {
            "agent_id" => self.agent_id = text(),
            "hostname" => self.hostname = text(),
            "schedulers" => {
                self.schedulers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "work_dir" => self.work_dir = PathBuf::from(value),
            "cpus" => self.cpus = number()?,
            "mem" => self.mem = number()?,
            "disk" => self.disk = number()?,
            "ports" => self.ports = value.parse().map_err(bad)?,
            "attributes" => self.attributes = value.parse().map_err(bad)?,
            "region" => self.region = text(),
            "zone" => self.zone = text(),
            "sandbox_retention" => self.sandbox_retention = parse_duration(value).map_err(bad)?,
            "task_path" => self.task_path = value.to_string(),
            "api_listen" => self.api_listen = value.trim().to_string(),
            "api_advertise" => self.api_advertise = text(),
            "allow_privileged" => self.allow_privileged = flag()?,
            "allow_host_volumes" => self.allow_host_volumes = flag()?,
            "docker_host" => self.docker_host = text(),
            "cgroups" => self.cgroups = flag()?,
            "tls_ca" => self.tls_ca = text().map(PathBuf::from),
            "tls_cert" => self.tls_cert = text().map(PathBuf::from),
            "tls_key" => self.tls_key = text().map(PathBuf::from),
            other => return Err(ConfigError::UnknownKey(other.to_string())),
        }
        Ok(())
    }

    /// Loads the mutual-TLS material named by `tls_ca`, `tls_cert` and `tls_key`: `None` when
    /// none is set.
    pub fn mutual_tls(&self) -> Result<Option<stride_proto::tls::MutualTls>, ConfigError> {
        stride_proto::tls::MutualTls::from_paths(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Checks what serde cannot: required values and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.schedulers.is_empty() {
            return Err(ConfigError::Invalid(
                "schedulers: at least one scheduler endpoint is required".into(),
            ));
        }
        for s in &self.schedulers {
            if s.trim().is_empty() {
                return Err(ConfigError::Invalid("schedulers: empty endpoint".into()));
            }
        }
        for (key, v) in [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(ConfigError::Value {
                        key: key.into(),
                        message: format!("{v} is not a non-negative number"),
                    });
                }
            }
        }
        if self.ports.0.iter().any(|r| r.begin > r.end) {
            return Err(ConfigError::Value {
                key: "ports".into(),
                message: "a range ends before it begins".into(),
            });
        }
        let tls = [&self.tls_ca, &self.tls_cert, &self.tls_key].map(Option::is_some);
        if tls.contains(&true) && tls.contains(&false) {
            return Err(ConfigError::Invalid(
                "tls_ca, tls_cert and tls_key go together: set all three or none".into(),
            ));
        }
        if self.work_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("work_dir: must not be empty".into()));
        }
        if self.api_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Value {
                key: "api_listen".into(),
                message: format!("{:?} is not an address like 0.0.0.0:5052", self.api_listen),
            });
        }
        if let Some(a) = &self.api_advertise {
            if a.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ConfigError::Value {
                    key: "api_advertise".into(),
                    message: format!("{a:?} is not an address like node-1:5052"),
                });
            }
        }
        Ok(())
    }
}

/// Every configuration key, as used in files, `STRIDE_AGENT_<KEY>` and overrides.
const KEYS: &[&str] = &[
    "agent_id",
    "hostname",
    "schedulers",
    "work_dir",
    "cpus",
    "mem",
    "disk",
    "ports",
    "attributes",
    "region",
    "zone",
    "sandbox_retention",
    "task_path",
    "api_listen",
    "api_advertise",
    "allow_privileged",
    "allow_host_volumes",
    "docker_host",
    "cgroups",
    "tls_ca",
    "tls_cert",
    "tls_key",
];

/// One inclusive range of host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

/// The host ports offered to tasks, written `31000-32000` (ranges separated by commas; a single
/// port is a range of one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRanges(pub Vec<PortRange>);

impl FromStr for PortRanges {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (begin, end) = part.split_once('-').unwrap_or((part, part));
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("{part:?} is not a port range like 31000-32000"))
            };
            let (begin, end) = (port(begin)?, port(end)?);
            if begin == 0 || begin > end {
                return Err(format!("{part:?} is not a port range like 31000-32000"));
            }
            ranges.push(PortRange { begin, end });
        }
        Ok(Self(ranges))
    }
}

impl TryFrom<String> for PortRanges {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| format!("{}-{}", r.begin, r.end))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl From<PortRanges> for String {
    fn from(p: PortRanges) -> String {
        p.to_string()
    }
}

/// Node attributes, written `rack_id:r1;zone:a`: names and values, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Attributes(pub Vec<(String, String)>);

impl FromStr for Attributes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once(':') else {
                return Err(format!("{part:?} is not an attribute like rack_id:r1"));
            };
            let (name, value) = (name.trim(), value.trim());
            let valid = |t: &str| !t.is_empty() && !t.contains(char::is_whitespace);
            if !valid(name) || !valid(value) || value.contains(':') {
                return Err(format!("{part:?} is not an attribute like rack_id:r1"));
            }
            if pairs.iter().any(|(n, _): &(String, String)| n == name) {
                return Err(format!("attribute {name:?} is given twice"));
            }
            pairs.push((name.to_string(), value.to_string()));
        }
        Ok(Self(pairs))
    }
}

impl TryFrom<String> for Attributes {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}:{v}")).collect();
        f.write_str(&parts.join(";"))
    }
}

impl From<Attributes> for String {
    fn from(a: Attributes) -> String {
        a.to_string()
    }
}

/// Parses `500ms`, `30s`, `10m`, `24h`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 24h"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} is not a duration like 30s or 24h")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Writes a duration in the largest unit that divides it.
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("agent.json");
        std::fs::write(
            &file,
            r#"{"schedulers": ["http://a:5051"], "cpus": 2, "zone": "z1", "sandbox_retention": "2h", "work_dir": "/tmp/x"}"#,
        )?;
        let config = Config::load(
            Some(&file),
            &env(&[
                ("STRIDE_AGENT_CPUS", "4"),
                ("STRIDE_AGENT_ATTRIBUTES", "rack_id:r1;zone:a"),
                ("PATH", "/bin"),
            ]),
            &[("zone".into(), "z2".into())],
        )?;
        assert_eq!(config.schedulers, vec!["http://a:5051"]);
        assert_eq!(config.cpus, Some(4.0));
        assert_eq!(config.zone.as_deref(), Some("z2"));
        assert_eq!(config.sandbox_retention, Duration::from_secs(7200));
        assert_eq!(config.work_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.task_path, "/bin");
        assert_eq!(
            config.attributes.0,
            vec![
                ("rack_id".to_string(), "r1".to_string()),
                ("zone".to_string(), "a".to_string())
            ]
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_and_variables_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("agent.json");
        std::fs::write(&file, r#"{"schedulers": ["http://a:5051"], "cpu": 2}"#)?;
        assert!(matches!(
            Config::load(Some(&file), &env(&[]), &[]),
            Err(ConfigError::File { .. })
        ));
        let vars = env(&[
            ("STRIDE_AGENT_SCHEDULERS", "http://a:1"),
            ("STRIDE_AGENT_CPU", "1"),
        ]);
        assert!(matches!(
            Config::load(None, &vars, &[]),
            Err(ConfigError::UnknownVariable(_))
        ));
        Ok(())
    }

    #[test]
    fn schedulers_are_required() {
        assert!(matches!(
            Config::load(None, &env(&[]), &[]),
            Err(ConfigError::Invalid(_))
        ));
        let vars = env(&[("STRIDE_AGENT_SCHEDULERS", "http://a:1, http://b:2")]);
        let config = Config::load(None, &vars, &[]).ok();
        assert_eq!(
            config.map(|c| c.schedulers),
            Some(vec!["http://a:1".to_string(), "http://b:2".to_string()])
        );
    }

    #[test]
    fn attribute_syntax_is_checked() {
        assert!("rack_id".parse::<Attributes>().is_err());
        assert!(":x".parse::<Attributes>().is_err());
        assert!("a:1;a:2".parse::<Attributes>().is_err());
        assert!("a:b:c".parse::<Attributes>().is_err());
        assert_eq!("".parse::<Attributes>(), Ok(Attributes(vec![])));
        assert_eq!(
            "a:1;".parse::<Attributes>().map(|a| a.to_string()),
            Ok("a:1".to_string())
        );
        let vars = env(&[
            ("STRIDE_AGENT_SCHEDULERS", "http://a:1"),
            ("STRIDE_AGENT_ATTRIBUTES", "oops"),
        ]);
        assert!(matches!(
            Config::load(None, &vars, &[]),
            Err(ConfigError::Value { .. })
        ));
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(
            "31000-31999, 33000".parse::<PortRanges>(),
            Ok(PortRanges(vec![
                PortRange {
                    begin: 31000,
                    end: 31999
                },
                PortRange {
                    begin: 33000,
                    end: 33000
                }
            ]))
        );
        assert!("32000-31000".parse::<PortRanges>().is_err());
        assert!("x-1".parse::<PortRanges>().is_err());
        assert!("0-10".parse::<PortRanges>().is_err());
    }

    #[test]
    fn durations_round_trip() {
        for text in ["500ms", "30s", "10m", "36h", "7d"] {
            assert_eq!(
                parse_duration(text).map(format_duration),
                Ok(text.to_string())
            );
        }
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn api_and_container_settings_load() -> anyhow::Result<()> {
        let config = Config::load(
            None,
            &env(&[
                ("STRIDE_AGENT_SCHEDULERS", "http://a:1"),
                ("STRIDE_AGENT_ALLOW_PRIVILEGED", "true"),
                ("STRIDE_AGENT_API_LISTEN", "127.0.0.1:6000"),
            ]),
            &[
                ("api_advertise".into(), "node-1:6000".into()),
                ("cgroups".into(), "false".into()),
            ],
        )?;
        assert!(config.allow_privileged);
        assert!(!config.allow_host_volumes);
        assert!(!config.cgroups);
        assert_eq!(config.api_listen, "127.0.0.1:6000");
        assert_eq!(config.api_advertise.as_deref(), Some("node-1:6000"));
        assert_eq!(Config::default().api_listen, DEFAULT_API_LISTEN);
        for (key, value) in [
            ("api_listen", "nowhere"),
            ("api_advertise", "no-port"),
            ("allow_host_volumes", "maybe"),
        ] {
            let result = Config::load(
                None,
                &env(&[("STRIDE_AGENT_SCHEDULERS", "http://a:1")]),
                &[(key.into(), value.into())],
            );
            assert!(result.is_err(), "{key}={value} was accepted");
        }
        Ok(())
    }

    #[test]
    fn the_default_round_trips_through_json() -> anyhow::Result<()> {
        let config = Config::for_dev("/tmp/a", vec!["http://127.0.0.1:1".into()]);
        let back: Config = serde_json::from_str(&serde_json::to_string(&config)?)?;
        assert_eq!(back, config);
        Ok(())
    }
}
