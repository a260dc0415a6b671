//! What can go wrong in a client command, and the exit code each outcome gives a script.
//!
//! The codes are a contract (`docs/cli.md`, `stride --help`): keep them stable.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// Exit codes a script can rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// The API refused the request: a 4xx other than 404 and 409 (400, 401, 403, 422, …).
    Refused = 1,
    /// Bad flags, an unreadable or malformed input file (clap uses 2 as well).
    Usage = 2,
    NotFound = 3,
    /// 409: the app is locked by a deployment, or the object already exists.
    Conflict = 4,
    /// `--wait` saw the deployment fail or be rolled back.
    DeploymentFailed = 5,
    /// `--wait` gave up; the deployment goes on.
    TimedOut = 6,
    /// No answer from Stride, or a 5xx.
    Unreachable = 7,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The text of `stride --help` that lists the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the API refused the request (a 4xx other than 404 and 409; 422 prints its details)
  2  usage error: bad flags, an unreadable or malformed input file
  3  not found (404)
  4  conflict (409): locked by a deployment (--force overrides), or already exists
  5  --wait: the deployment failed or was rolled back
  6  --wait: timed out (the deployment goes on)
  7  cannot reach Stride, or Stride answered 5xx";

#[derive(Debug)]
pub enum CliError {
    Usage(String),
    /// A non-2xx answer, with its body (JSON, or `Null` when it was not JSON).
    Api {
        status: u16,
        body: Value,
        text: String,
    },
    Unreachable(String),
    DeploymentFailed {
        id: String,
        reason: String,
    },
    TimedOut {
        id: String,
        after: Duration,
    },
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Api { status, .. } => match status {
                404 => Exit::NotFound,
                409 => Exit::Conflict,
                s if *s >= 500 => Exit::Unreachable,
                _ => Exit::Refused,
            },
            CliError::Unreachable(_) => Exit::Unreachable,
            CliError::DeploymentFailed { .. } => Exit::DeploymentFailed,
            CliError::TimedOut { .. } => Exit::TimedOut,
        }
    }

    /// What to print on stderr: the API's `message`, then one `path: error` line per error of
    /// its `details`.
    pub fn render(&self) -> String {
        match self {
            CliError::Usage(m) => format!("stride: {m}"),
            CliError::Unreachable(m) => format!("stride: {m}"),
            CliError::DeploymentFailed { id, reason } => {
                format!("stride: deployment {id} failed: {reason}")
            }
            CliError::TimedOut { id, after } => format!(
                "stride: timed out after {} waiting for deployment {id}; it goes on \
                 (`stride deployment watch {id}` follows it)",
                human_duration(*after)
            ),
            CliError::Api { status, body, text } => render_api_error(*status, body, text),
        }
    }
}

fn render_api_error(status: u16, body: &Value, text: &str) -> String {
    let mut out = match body.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None if !text.trim().is_empty() => format!("HTTP {status}: {}", text.trim()),
        None => format!("HTTP {status}"),
    };
    match body.get("details") {
        Some(Value::Array(details)) => {
            for d in details {
                let path = d.get("path").and_then(Value::as_str).unwrap_or("/");
                match d.get("errors") {
                    Some(Value::Array(errors)) => {
                        for e in errors {
                            let e = e.as_str().map_or_else(|| e.to_string(), str::to_string);
                            let _ = write!(out, "\n{path}: {e}");
                        }
                    }
                    Some(other) => {
                        let _ = write!(out, "\n{path}: {other}");
                    }
                    None => {}
                }
            }
        }
        Some(Value::String(s)) => {
            let _ = write!(out, "\n{s}");
        }
        _ => {}
    }
    if status == 409 && body.get("deployments").is_some() {
        out.push_str("\nhint: --force cancels the deployment that holds the lock");
    }
    out
}

/// `1h2m`, `5m`, `30s`, `1.5s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    if d.subsec_millis() != 0 && secs < 60 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(status: u16, body: Value) -> CliError {
        CliError::Api {
            status,
            text: body.to_string(),
            body,
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(api(404, json!({})).exit(), Exit::NotFound);
        assert_eq!(api(409, json!({})).exit(), Exit::Conflict);
        assert_eq!(api(422, json!({})).exit(), Exit::Refused);
        assert_eq!(api(400, json!({})).exit(), Exit::Refused);
        assert_eq!(api(403, json!({})).exit(), Exit::Refused);
        assert_eq!(api(500, json!({})).exit(), Exit::Unreachable);
        assert_eq!(api(503, json!({})).exit(), Exit::Unreachable);
    }

    #[test]
    fn validation_details_become_path_lines() {
        let e = api(
            422,
            json!({"message": "Object is not valid", "details": [
                {"path": "/cpus", "errors": ["got -1.0, expected 0.0 or more"]},
                {"path": "/id", "errors": ["must be lower case", "must not be empty"]},
            ]}),
        );
        assert_eq!(
            e.render(),
            "Object is not valid\n/cpus: got -1.0, expected 0.0 or more\n\
             /id: must be lower case\n/id: must not be empty"
        );
    }

    #[test]
    fn bodies_that_are_not_marathon_errors_still_say_something() {
        let e = CliError::Api {
            status: 502,
            body: Value::Null,
            text: "Bad Gateway".into(),
        };
        assert_eq!(e.render(), "HTTP 502: Bad Gateway");
    }

    #[test]
    fn durations_read_like_the_flags() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    }
}
