//! Every way a dashboard call can fail, and how each one is answered: JSON
//! `{"error": <kind>, "reason": <text>, "status": <code>}` with that status.
//! The original answered a broken cache with a stack trace, or not at all.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgemeter_cloud::CacheError;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The cache refused or could not be reached: 503, the page retries.
    CacheUnavailable(String),
    /// The cache did not answer within [`crate::cache_call::CACHE_CALL_MS_MAX`]: 503.
    CacheTimeout { waited_ms: u64 },
    /// The cache answered something that breaks its own contract (say, a
    /// state twice, or more tuples than asked for): 500, a bug to fix.
    CacheInconsistent(String),
    /// The request's query is malformed or out of bounds: 400.
    BadRequest(String),
    /// No such route: 404.
    NotFound(String),
    /// The route exists, but not for this method: 405.
    MethodNotAllowed(String),
    /// A page file is missing (for Chart.js: `npm ci` was not run in `web/`): 404.
    AssetMissing { file: String, reason: String },
    /// A page file exists but could not be served (unreadable, too large): 500.
    AssetUnreadable { file: String, reason: String },
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    reason: String,
    status: u16,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::CacheUnavailable(_) | ApiError::CacheTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::CacheInconsistent(_) | ApiError::AssetUnreadable { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::AssetMissing { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The machine-readable kind, stable for clients.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::CacheUnavailable(_) => "cache_unavailable",
            ApiError::CacheTimeout { .. } => "cache_timeout",
            ApiError::CacheInconsistent(_) => "cache_inconsistent",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::AssetMissing { .. } => "asset_missing",
            ApiError::AssetUnreadable { .. } => "asset_unreadable",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::CacheUnavailable(reason) => write!(f, "cache unavailable: {reason}"),
            ApiError::CacheTimeout { waited_ms } => {
                write!(f, "cache did not answer within {waited_ms} ms")
            }
            ApiError::CacheInconsistent(reason) => write!(f, "cache is inconsistent: {reason}"),
            ApiError::BadRequest(reason) => write!(f, "bad request: {reason}"),
            ApiError::NotFound(path) => write!(f, "no such path: {path}"),
            ApiError::MethodNotAllowed(method) => write!(f, "method {method} is not allowed here"),
            ApiError::AssetMissing { file, reason } => write!(f, "{file} is missing: {reason}"),
            ApiError::AssetUnreadable { file, reason } => {
                write!(f, "{file} cannot be served: {reason}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

impl From<CacheError> for ApiError {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::Unavailable(reason) => ApiError::CacheUnavailable(reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "dashboard call failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "dashboard call refused");
        }
        let body = ErrorBody {
            error: self.kind(),
            reason: self.to_string(),
            status: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}
