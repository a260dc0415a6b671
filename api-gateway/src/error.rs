//! The gateway's one error type. Whatever went wrong — a bad body, a Marathon error the leader
//! sent back, an unreachable store — it reaches the client as Marathon's JSON body with the
//! matching status (reference §0.3). It is logged here, where it becomes a response, and nowhere
//! else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use stride_core::error::{ApiError, ErrorCode};
use stride_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// An error with Marathon's body, raised here or by the leader.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The state store could not answer, or answered with data that does not parse.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Api(ApiError::new(code, message))
    }

    /// The error as Marathon shows it.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            GatewayError::Api(e) => e.clone(),
            GatewayError::Store(StoreError::Unavailable(m)) => {
                ApiError::unavailable(format!("The state store is unavailable: {m}"))
            }
            GatewayError::Store(e) => ApiError::internal(e.to_string()),
        }
    }

    /// 404 for a route that does not exist.
    pub fn uri_not_found(path: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("URI not found: {path}"))
    }

    /// 422 with a plain message (Marathon's IllegalArgumentException).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unprocessable, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        status_of(self.to_api_error().code)
    }

    fn error_response(&self) -> HttpResponse {
        let api = self.to_api_error();
        let status = status_of(api.code);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        HttpResponse::build(status).json(api.body)
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
