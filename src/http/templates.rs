//! `/v1/templates/{type}`: an operator's templates per notification type.
//! The work is in `crate::templates`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{JsonBody, Query, query};
use crate::{
    app::AppState,
    auth::Admin,
    domain::notification::NotificationType,
    error::{ApiError, ErrorBody},
    templates::{Template, TemplateBody},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put, get, remove))
}

fn kind(raw: &str) -> Result<NotificationType, ApiError> {
    NotificationType::parse(raw).map_err(|why| ApiError::invalid_field("type", format!("type {why}")))
}

/// The query of `GET` and `DELETE`.
#[derive(serde::Deserialize)]
struct LocaleParams {
    #[serde(default, deserialize_with = "query::locale")]
    locale: Option<String>,
}

/// Stores the template of a type for one locale, or its default without
/// `locale` (scope `admin`). Strings use `{{ data.field }}` placeholders;
/// a publish of the type may then leave out `title` and `body`. A string
/// that is not a valid template → 422 naming it.
#[utoipa::path(put, path = "/v1/templates/{type}", tag = "templates", security(("bearer" = [])), request_body = TemplateBody,
    params(("type" = String, Path, pattern = r"^[a-z0-9_.-]{1,50}$")),
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The token lacks the `admin` scope"), (status = 422, body = ErrorBody)))]
async fn put(State(state): State<AppState>, _admin: Admin, Path(raw): Path<String>, body: JsonBody<TemplateBody>) -> Result<Json<Template>, ApiError> {
    Ok(Json(state.templates.put(&kind(&raw)?, body.value).await?))
}

/// The template of a type for `locale` exactly, or its default (scope `admin`).
#[utoipa::path(get, path = "/v1/templates/{type}", tag = "templates", security(("bearer" = [])),
    params(("type" = String, Path, pattern = r"^[a-z0-9_.-]{1,50}$"), ("locale" = Option<String>, Query, max_length = 35, description = "A BCP 47 tag; absent for the default")),
    responses((status = 200, body = Template), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get(State(state): State<AppState>, _admin: Admin, Path(raw): Path<String>, Query(params): Query<LocaleParams>) -> Result<Json<Template>, ApiError> {
    Ok(Json(state.templates.get(&kind(&raw)?, params.locale.as_deref()).await?))
}

/// Deletes the template of a type for `locale`, or without it every locale
/// of the type (scope `admin`).
#[utoipa::path(delete, path = "/v1/templates/{type}", tag = "templates", security(("bearer" = [])),
    params(("type" = String, Path, pattern = r"^[a-z0-9_.-]{1,50}$"), ("locale" = Option<String>, Query, max_length = 35, description = "Only this locale")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(State(state): State<AppState>, _admin: Admin, Path(raw): Path<String>, Query(params): Query<LocaleParams>) -> Result<StatusCode, ApiError> {
    state.templates.delete(&kind(&raw)?, params.locale.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
