//! `/v1/stats/notifications`: delivery statistics for backends.

use axum::{Json, extract::State, http::Uri};
use chrono::{DateTime, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::query_param;
use crate::{
    app::AppState,
    auth::Publisher,
    domain::notification::NotificationType,
    error::{ApiError, ErrorBody},
    notifications::TypeStats,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(notifications))
}

/// Per type: how many notifications were sent, read and clicked, and the
/// rates (scope `publish`). Computed from the stored notifications, so it
/// covers the retention window.
#[utoipa::path(get, path = "/stats/notifications", tag = "notifications", security(("bearer" = [])),
    params(
        ("type" = Option<String>, Query, max_length = 50, pattern = r"^[a-z0-9_.-]{0,50}$", description = "Only this type; empty means any"),
        ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: only notifications created since")),
    responses((status = 200, body = Vec<TypeStats>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn notifications(State(state): State<AppState>, _publisher: Publisher, uri: Uri) -> Result<Json<Vec<TypeStats>>, ApiError> {
    let query = uri.query();
    let kind = match query_param(query, "type").filter(|t| !t.is_empty()) {
        None => None,
        Some(raw) => Some(NotificationType::parse(&raw).map_err(|why| ApiError::bad_field("type", format!("type {why}")))?),
    };
    let since = match query_param(query, "since").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            DateTime::parse_from_rfc3339(&raw)
                .map_err(|_| ApiError::bad_field("since", "since must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
    };
    Ok(Json(state.notifications.stats(kind.as_ref(), since).await?))
}
