//! `/v1/presence`: set one's own status, read the presence of contacts.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{JsonBody, Query, query};
use crate::{
    app::AppState,
    auth::AuthUser,
    domain::UserId,
    error::{ApiError, ErrorBody},
    presence::{self, PresenceView, Status},
};

/// The most ids one presence query may name.
const MAX_IDS: usize = 500;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set, get))
}

/// The body of `POST /v1/presence`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    pub status: Status,
}

/// The query of [`get`].
#[derive(serde::Deserialize)]
struct GetParams {
    #[serde(default, deserialize_with = "query::comma_list::<_, MAX_IDS>")]
    user_ids: Vec<String>,
}

/// Sets the caller's status; `offline` while connected is "invisible".
#[utoipa::path(post, path = "/v1/presence", tag = "presence", security(("bearer" = [])), request_body = StatusUpdate,
    responses((status = 204, description = "Set"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn set(State(state): State<AppState>, AuthUser(user): AuthUser, body: JsonBody<StatusUpdate>) -> StatusCode {
    state.presence.set_status(&user.user, body.value.status);
    StatusCode::NO_CONTENT
}

/// The presence of the caller and of users who share a conversation with
/// them (with `TIDINGS_PRESENCE_VISIBILITY=contacts`: a conversation in
/// which both have sent a message); other ids are left out of the answer.
#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])),
    params(("user_ids" = Option<String>, Query, description = "Comma-separated user ids, at most 500; left out, the answer is empty")),
    responses((status = 200, body = Vec<PresenceView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get(State(state): State<AppState>, AuthUser(user): AuthUser, Query(params): Query<GetParams>) -> Result<Json<Vec<PresenceView>>, ApiError> {
    let asked: Vec<&str> = params.user_ids.iter().map(String::as_str).collect();
    let contacts = presence::watchers(&state.db, &user.user, state.presence_visibility).await?;
    let visible: Vec<UserId> = asked
        .into_iter()
        .filter(|id| *id == user.user.as_str() || contacts.iter().any(|c| c == id))
        .filter_map(|id| UserId::parse(id).ok())
        .collect();
    Ok(Json(state.presence.get(&visible).await))
}
