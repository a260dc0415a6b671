//! The audit log: one record for every request that asks for a change (`POST`, `PUT`, `PATCH`,
//! `DELETE`), allowed or not: who, what (method, path, the app and group ids it touched),
//! when, the deployment it started, and how it ended.
//!
//! Each record is a `tracing` event with target `stride_audit` (so it can be routed with
//! `RUST_LOG=stride_audit=info`) and, when `audit_log` is configured, a JSON line appended to
//! that file:
//!
//! ```text
//! {"time":"2024-05-01T10:00:00.000Z","principal":"alice","method":"PUT","path":"/v2/apps/team-a/web",
//!  "query":"force=true","ids":["/team-a/web"],"status":200,"outcome":"ok",
//!  "deploymentId":"5ed4c0c5-…","clientIp":"10.0.0.7"}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use serde_json::{json, Value};
use stride_core::Timestamp;

use crate::auth::Caller;
use crate::state::Gateway;

/// Where records go besides `tracing`.
pub struct AuditLog {
    file: Option<(PathBuf, parking_lot::Mutex<File>)>,
}

impl AuditLog {
    /// Records to `tracing` only.
    pub fn tracing_only() -> Self {
        Self { file: None }
    }

    /// Records to `tracing` and, when given, appended to `path` (created if missing).
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        let file = match path {
            None => None,
            Some(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open the audit log {}: {e}", p.display()))?;
                Some((p.to_path_buf(), parking_lot::Mutex::new(f)))
            }
        };
        Ok(Self { file })
    }

    /// Writes one record.
    pub fn record(&self, record: &Value) {
        tracing::info!(
            target: "stride_audit",
            principal = record["principal"].as_str().unwrap_or("-"),
            method = record["method"].as_str().unwrap_or(""),
            path = record["path"].as_str().unwrap_or(""),
            ids = %record["ids"],
            status = record["status"].as_u64().unwrap_or(0),
            outcome = record["outcome"].as_str().unwrap_or(""),
            deployment_id = record["deploymentId"].as_str().unwrap_or(""),
            "audit"
        );
        if let Some((path, file)) = &self.file {
            let mut line = record.to_string();
            line.push('\n');
            // One write of the whole line to an O_APPEND file: records never interleave.
            if let Err(e) = file.lock().write_all(line.as_bytes()) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
            }
        }
    }
}

/// How a change ended, by status.
fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        401 => "unauthenticated",
        403 => "forbidden",
        400..=499 => "refused",
        _ => "failed",
    }
}

fn is_change(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Records every change request once its response is known.
pub(crate) async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !is_change(req.method()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let gateway = req.app_data::<web::Data<Gateway>>().cloned();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let query = req.query_string().to_string();
    let client_ip = req
        .connection_info()
        .realip_remote_addr()
        .unwrap_or_default()
        .to_string();
    let res = next.call(req).await?.map_into_boxed_body();
    let Some(gw) = gateway else {
        return Ok(res);
    };
    let caller = res.request().extensions().get::<Caller>().cloned();
    let status = res.status().as_u16();
    let deployment_id = res
        .headers()
        .get("marathon-deployment-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let record = json!({
        "time": Timestamp::now(),
        "principal": caller.as_ref().and_then(Caller::name),
        "method": method,
        "path": path,
        "query": query,
        "ids": caller.as_ref().map(Caller::touched).unwrap_or_default(),
        "status": status,
        "outcome": outcome(status),
        "deploymentId": deployment_id,
        "clientIp": client_ip,
    });
    gw.audit.record(&record);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_appended_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).expect("open");
        log.record(&json!({"principal": "alice", "status": 200}));
        log.record(&json!({"principal": "bob", "status": 403}));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["principal"], "bob");
        assert_eq!(outcome(201), "ok");
        assert_eq!(outcome(401), "unauthenticated");
        assert_eq!(outcome(422), "refused");
        assert_eq!(outcome(503), "failed");
    }
}
