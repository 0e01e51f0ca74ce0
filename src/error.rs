//! The one error type of the HTTP API, mapped once to the contract's body:
//! `{"error": {"code", "message", "field"?}}`.
//!
//! Handlers and the domain return [`ApiError`]; nothing else builds an error
//! response. Internal failures are logged with their cause and answered with
//! a generic message, so no SQL or stack detail ever reaches a client.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Every way a request can fail, each variant documenting the status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`. The precise reason
    /// (expired, bad signature, missing) is logged at debug level and never
    /// told to the client.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403 `forbidden`: authenticated, but the token lacks the scope.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`: also for another user's resource, so existence never leaks.
    #[error("not found")]
    NotFound,
    /// 400 or 422 `invalid_request`: 400 when the request cannot be read
    /// (malformed JSON, unknown field), 422 when a value breaks a rule.
    #[error("{message}")]
    Invalid {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429 `rate_limited`, with `Retry-After` in seconds.
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503 `unavailable`: a dependency (the database) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `unavailable` with `Retry-After`: the node's write queue is full.
    /// Refusing at once keeps memory bounded and tells clients when to retry.
    #[error("the server is busy, retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    /// 500 `internal`: logged with its cause, answered generically.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A value that breaks a rule (422), naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A request that cannot be read at all (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: None,
        }
    }

    /// A request that cannot be read, where one field is at fault (400).
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// The error for a bare status that a layer below our handlers answered
    /// without a body (a 404 under `/docs/`, say), so that it too carries
    /// the contract's body. The status itself is kept by the caller.
    pub fn for_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::FORBIDDEN => ApiError::Forbidden("forbidden".into()),
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge("the request body is larger than this server accepts".into()),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable("the service is unavailable".into()),
            status if status.is_client_error() => ApiError::Invalid {
                status,
                message: status.canonical_reason().unwrap_or("invalid request").to_lowercase(),
                field: None,
            },
            status => ApiError::Internal(anyhow::anyhow!("a layer answered {status} without a body")),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Invalid { status, .. } => *status,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::Invalid { .. } => "invalid_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<crate::domain::DomainError> for ApiError {
    /// The one place the core's errors become the contract's.
    fn from(err: crate::domain::DomainError) -> Self {
        use crate::domain::DomainError;
        match err {
            DomainError::NotFound => ApiError::NotFound,
            DomainError::Forbidden(message) => ApiError::Forbidden(message),
            DomainError::Invalid { field, message } => ApiError::Invalid { status: StatusCode::UNPROCESSABLE_ENTITY, message, field },
            DomainError::RateLimited { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
            DomainError::Busy { retry_after_secs } => ApiError::Overloaded { retry_after_secs },
            DomainError::Unavailable(message) => ApiError::Unavailable(message),
            DomainError::Internal(cause) => ApiError::Internal(anyhow::anyhow!("{cause:#}")),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    /// As for the core's errors: unreachable is 503, anything else 500.
    fn from(err: sea_orm::DbErr) -> Self {
        if crate::store::is_unreachable(&err) {
            return crate::domain::DomainError::from(err).into();
        }
        ApiError::Internal(anyhow::Error::new(err).context("database"))
    }
}

/// The contract's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_request`, `payload_too_large`, `rate_limited`, `unavailable`, `internal`.
    #[schema(example = "invalid_request")]
    pub code: String,
    /// For humans; may change.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// The contract's error object for this error; an internal cause is
    /// logged here and answered generically.
    pub fn detail(&self) -> ErrorDetail {
        let message = match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let field = match self {
            ApiError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        ErrorDetail { code: self.code().to_owned(), message, field }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: self.detail() };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } | ApiError::Overloaded { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}
