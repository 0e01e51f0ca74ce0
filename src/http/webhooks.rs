//! `/v1/webhooks`: an operator's endpoints for the webhook channel. The
//! work is in `crate::webhooks` and `crate::outbox::webhook`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::JsonBody;
use crate::{
    app::AppState,
    auth::Admin,
    error::{ApiError, ErrorBody},
    webhooks::Webhook,
};

/// The longest URL accepted.
const MAX_URL_CHARS: usize = 2048;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(remove))
}

/// The body of `POST /v1/webhooks`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An absolute http(s) URL.
    #[schema(max_length = 2048, pattern = r"^https?://")]
    url: String,
    /// Only these types (at most 100); absent for every type.
    #[serde(default)]
    #[schema(max_items = 100)]
    types: Option<Vec<String>>,
}

/// Registers a webhook endpoint (scope `admin`). The answer holds the
/// endpoint's `secret` (`whsec_...`): each delivery is signed with it
/// (Standard Webhooks). A URL that is not http(s) → 400.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = WebhookRequest,
    responses((status = 201, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The token lacks the `admin` scope"), (status = 422, body = ErrorBody)))]
async fn create(State(state): State<AppState>, _admin: Admin, body: JsonBody<WebhookRequest>) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    let request = body.value;
    let invalid = || ApiError::bad_field("url", "url must be an absolute http(s) URL");
    if request.url.chars().count() > MAX_URL_CHARS {
        return Err(invalid());
    }
    let url = url::Url::parse(&request.url).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok((StatusCode::CREATED, Json(state.webhooks.create(url, request.types).await?)))
}

/// Every registered endpoint, with its secret (scope `admin`).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Vec<Webhook>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<Webhook>>, ApiError> {
    Ok(Json(state.webhooks.list().await?.as_ref().clone()))
}

/// Removes an endpoint (scope `admin`); its pending deliveries fail.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(State(state): State<AppState>, _admin: Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
