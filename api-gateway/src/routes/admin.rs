//! Marathon's operator endpoints (reference §1.8): `/logging` to read and change log levels at
//! run time, `/config` for the effective configuration, `/v2/plugins` for installed plugins.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use stride_core::parse::{from_value, parse_json};

use crate::auth::{Caller, SystemAction, SystemResource};
use crate::error::{GatewayError, Result};
use crate::http::json as json_response;
use crate::state::Gateway;

/// `{logger: level}` from tracing directives (`info,stride_scheduler=debug`); the bare level is
/// the `root` logger.
fn levels(directives: &str) -> BTreeMap<String, String> {
    directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| match d.split_once('=') {
            Some((target, level)) => (target.to_string(), level.to_uppercase()),
            None => ("root".to_string(), d.to_uppercase()),
        })
        .collect()
}

fn directives(levels: &BTreeMap<String, String>) -> String {
    levels
        .iter()
        .map(|(target, level)| {
            if target == "root" {
                level.to_lowercase()
            } else {
                format!("{target}={}", level.to_lowercase())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `GET /logging`.
pub(crate) async fn logging(caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Logging)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!(levels(&stride_telemetry::log_filter())),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LevelChange {
    logger: String,
    level: String,
    #[serde(default)]
    duration_seconds: Option<u64>,
}

/// `POST /logging {"logger","level","durationSeconds"}`: changes a level in this process,
/// for a while when a duration is given.
pub(crate) async fn set_logging(body: web::Bytes, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::Update, SystemResource::Logging)
        .await?;
    let change: LevelChange = from_value(parse_json(&body)?)?;
    let level = change.level.to_lowercase();
    if !["trace", "debug", "info", "warn", "error", "off"].contains(&level.as_str()) {
        return Err(GatewayError::unprocessable(format!(
            "Unknown level {}: use one of trace, debug, info, warn, error, off",
            change.level
        )));
    }
    if change.logger.is_empty() || change.logger.contains([',', '=', ' ']) {
        return Err(GatewayError::unprocessable(format!(
            "Invalid logger name {:?}",
            change.logger
        )));
    }
    let before = stride_telemetry::log_filter();
    let mut now = levels(&before);
    let logger = if change.logger.eq_ignore_ascii_case("root") {
        "root".to_string()
    } else {
        change.logger.replace('.', "::")
    };
    now.insert(logger, level.to_uppercase());
    stride_telemetry::set_log_filter(&directives(&now)).map_err(GatewayError::unprocessable)?;
    if let Some(seconds) = change.duration_seconds {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            if let Err(e) = stride_telemetry::set_log_filter(&before) {
                tracing::warn!(error = %e, "could not restore the log levels");
            }
        });
    }
    Ok(json_response(StatusCode::OK, &json!(now)))
}

/// `GET /config`: this gateway's effective configuration.
pub(crate) async fn config(gw: web::Data<Gateway>, caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Config)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(&gw.config).unwrap_or_default(),
    ))
}

/// `GET /v2/plugins`: Stride loads no Marathon plugins.
pub(crate) async fn plugins(caller: Caller) -> Result<HttpResponse> {
    caller
        .require_system(SystemAction::View, SystemResource::Config)
        .await?;
    Ok(json_response(StatusCode::OK, &json!({ "plugins": [] })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_round_trip() {
        let l = levels("info,stride_scheduler=debug");
        assert_eq!(l["root"], "INFO");
        assert_eq!(l["stride_scheduler"], "DEBUG");
        assert_eq!(directives(&l), "info,stride_scheduler=debug");
    }
}
