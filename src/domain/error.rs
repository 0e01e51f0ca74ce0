//! The core's errors: why a use case refused or failed, in the domain's
//! words. The HTTP edge maps each to the contract's status and body once
//! (`impl From<DomainError> for ApiError` in `error.rs`); the core never
//! speaks HTTP.

use std::sync::Arc;

/// Why a use case did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    /// The thing does not exist for this caller (another user's included,
    /// so existence never leaks).
    #[error("not found")]
    NotFound,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A value breaks a rule, naming the field at fault when there is one.
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    /// Every recipient is over their limit; retry after this many seconds.
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The node's write queue is full; retry after this many seconds.
    #[error("the server is busy, retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    /// A dependency (the database) did not take the write.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged with its cause at the edge, answered generically.
    /// Shared, because one failed write batch answers many callers.
    #[error(transparent)]
    Internal(Arc<anyhow::Error>),
}

impl DomainError {
    /// A value that breaks a rule, naming its field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Invalid { field: Some(field.into()), message: message.into() }
    }

    /// An unexpected failure, kept with its cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        DomainError::Internal(Arc::new(cause.into()))
    }
}

impl From<sea_orm::DbErr> for DomainError {
    /// An unreachable database is `Unavailable` (503); any other database
    /// error is internal.
    fn from(err: sea_orm::DbErr) -> Self {
        if crate::store::is_unreachable(&err) {
            tracing::warn!(error = %err, "the database is unreachable");
            return DomainError::Unavailable("the database is unavailable; retry".into());
        }
        DomainError::internal(anyhow::Error::new(err).context("database"))
    }
}
