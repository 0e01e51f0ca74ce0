//! `/v1/stats/notifications`: delivery statistics for backends.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{Query, query};
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
#[utoipa::path(get, path = "/v1/stats/notifications", tag = "notifications", security(("bearer" = [])),
    params(
        ("type" = Option<String>, Query, max_length = 50, pattern = r"^[a-z0-9_.-]{0,50}$", description = "Only this type; empty means any"),
        ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: only notifications created since")),
    responses((status = 200, body = Vec<TypeStats>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn notifications(State(state): State<AppState>, _publisher: Publisher, Query(params): Query<StatsParams>) -> Result<Json<Vec<TypeStats>>, ApiError> {
    Ok(Json(state.notifications.stats(params.kind.as_ref(), params.since).await?))
}

/// The query of [`notifications`].
#[derive(serde::Deserialize)]
struct StatsParams {
    #[serde(rename = "type", default, deserialize_with = "query::notification_type")]
    kind: Option<NotificationType>,
    #[serde(default, deserialize_with = "query::time")]
    since: Option<DateTime<Utc>>,
}
