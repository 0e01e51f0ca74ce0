//! `/v1/preferences`: which notification types a user wants, on which channels.

use axum::{
    Json,
    extract::{Path, State},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::JsonBody;
use crate::{
    app::AppState,
    auth::AuthUser,
    domain::{
        notification::NotificationType,
        preference::{Preference, PreferenceUpdate},
    },
    error::{ApiError, ErrorBody},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(set))
}

/// The caller's preferences: every type they changed or received, with the
/// operator's default where they never chose.
#[utoipa::path(get, path = "/v1/preferences", tag = "preferences", security(("bearer" = [])),
    responses((status = 200, body = Vec<Preference>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Json<Vec<Preference>>, ApiError> {
    Ok(Json(state.notifications.preferences(&user.user).await?))
}

/// Sets the caller's preference for one type. A disabled type (or one with
/// `web` off, while the stream is the only delivering channel) is not stored
/// for the caller and is reported as `suppressed` to the publisher.
#[utoipa::path(put, path = "/v1/preferences/{type}", tag = "preferences", security(("bearer" = [])),
    params(("type" = String, Path, min_length = 1, max_length = 50, pattern = r"^[a-z0-9_.-]{1,50}$", description = "A notification type")),
    request_body = PreferenceUpdate,
    responses((status = 200, body = Preference), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set(State(state): State<AppState>, AuthUser(user): AuthUser, Path(kind): Path<String>, body: JsonBody<PreferenceUpdate>) -> Result<Json<Preference>, ApiError> {
    let kind = NotificationType::parse(&kind).map_err(|why| ApiError::invalid_field("type", format!("type {why}")))?;
    Ok(Json(state.notifications.set_preference(&user.user, &kind, body.value).await?))
}
