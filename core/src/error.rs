//! Errors as Marathon's API shows them, with one code type that every service maps to an HTTP
//! status (api-gateway) and a gRPC code (scheduler), so that a 409 raised in the leader reaches the
//! client as a 409 with the same body.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What went wrong, independent of transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Malformed request (400).
    BadRequest,
    /// Authentication missing or failed (401).
    Unauthenticated,
    /// Not allowed, or too many deployments (403).
    Forbidden,
    /// Unknown object (404).
    NotFound,
    /// Existing object or a deployment lock (409).
    Conflict,
    /// Invalid object (422).
    Unprocessable,
    /// No leader could be reached (502).
    NoLeader,
    /// A dependency is down or slow (503).
    Unavailable,
    /// A bug or an unexpected failure (500).
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unprocessable => 422,
            ErrorCode::NoLeader => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// One entry of a 422 body: every error found at one path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

/// An error with Marathon's body. `body` is the whole JSON the client sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {body}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            body: json!({ "message": message.into() }),
        }
    }

    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// 422 `Object is not valid` with one entry per path.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        Self {
            code: ErrorCode::Unprocessable,
            body: json!({ "message": "Object is not valid", "details": violations }),
        }
    }

    /// 400 for JSON that does not parse; `details` is the parser's message, a string.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::BadRequest,
            body: json!({ "message": "Invalid JSON", "details": detail.into() }),
        }
    }

    /// 422 for JSON that parses but has the wrong types.
    pub fn json_type(path: String, error: String) -> Self {
        Self {
            code: ErrorCode::Unprocessable,
            body: json!({ "message": "Invalid JSON", "details": [{ "path": path, "errors": [error] }] }),
        }
    }

    pub fn app_not_found(id: &crate::PathId) -> Self {
        Self::new(ErrorCode::NotFound, format!("App '{id}' does not exist"))
    }

    pub fn app_exists(id: &crate::PathId) -> Self {
        Self::new(
            ErrorCode::Conflict,
            format!("An app with id [{id}] already exists."),
        )
    }

    /// 409 for a change that touches apps under deployment.
    pub fn locked(deployment_ids: &[String]) -> Self {
        let first = deployment_ids.first().map(String::as_str).unwrap_or("");
        Self {
            code: ErrorCode::Conflict,
            body: json!({
                "message": format!(
                    "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'."
                ),
                "deployments": deployment_ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
            }),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}
