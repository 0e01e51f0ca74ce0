//! `/v1/revocations`: an operator refuses every token of a user issued
//! before an instant. The work is in `crate::revocation`.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::JsonBody;
use crate::{
    app::AppState,
    auth::Admin,
    domain::UserId,
    error::{ApiError, ErrorBody},
};

/// How far in the future `before` may lie: the caller's clock may be a
/// little ahead of ours. Beyond it, a revocation would also refuse tokens
/// not issued yet, which is a lock-out, not a revocation.
const CLOCK_SKEW_SECS: i64 = 60;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(revoke))
}

/// The body of `POST /v1/revocations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// The user whose tokens are revoked.
    #[schema(value_type = crate::domain::user_id::UserIdText)]
    pub user_id: String,
    /// Tokens issued (`iat`) before this instant are refused; default now.
    /// Tokens without `iat` count as issued at the epoch.
    #[serde(default)]
    pub before: Option<DateTime<Utc>>,
}

/// Revokes a user's tokens (scope `admin`): every token of `user_id` issued
/// before `before` (default: now) is refused with 401 from then on, on every
/// node, and the user's open streams that use such a token end at once.
#[utoipa::path(post, path = "/v1/revocations", tag = "revocations", security(("bearer" = [])), request_body = RevocationRequest,
    responses((status = 204, description = "Revoked"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The token lacks the `admin` scope"), (status = 422, body = ErrorBody)))]
async fn revoke(State(state): State<AppState>, Admin(_admin): Admin, body: JsonBody<RevocationRequest>) -> Result<StatusCode, ApiError> {
    let request = body.value;
    let user = UserId::parse(request.user_id).map_err(|why| ApiError::invalid_field("user_id", format!("user id {why}")))?;
    let now = Utc::now();
    let before = request.before.unwrap_or(now);
    if before.timestamp() > now.timestamp() + CLOCK_SKEW_SECS {
        return Err(ApiError::invalid_field("before", "before may not lie in the future: a revocation covers tokens already issued"));
    }
    state.revocations.revoke(user, before.timestamp().max(0) as u64).await?;
    Ok(StatusCode::NO_CONTENT)
}
