//! `/v1/users/{user_id}/contact`: how a backend tells the hub to reach a
//! user beyond the page. The work is in `crate::contacts`.

use axum::{
    Json,
    extract::{Path, State},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::JsonBody;
use crate::{
    app::AppState,
    auth::Publisher,
    contacts::Contact,
    domain::UserId,
    error::{ApiError, ErrorBody},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put, get))
}

fn user(raw: String) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|why| ApiError::invalid_field("user_id", format!("user id {why}")))
}

/// Sets a user's contact (scope `publish`): `email` (shape checked),
/// `locale` (BCP 47, picks the template), `time_zone` (IANA name). Fields
/// left out are cleared.
#[utoipa::path(put, path = "/v1/users/{user_id}/contact", tag = "contacts", security(("bearer" = [])), request_body = ContactBody,
    params(("user_id" = String, Path, min_length = 1, max_length = 255)),
    responses((status = 200, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put(State(state): State<AppState>, _publisher: Publisher, Path(raw): Path<String>, body: JsonBody<ContactBody>) -> Result<Json<Contact>, ApiError> {
    let user = user(raw)?;
    let ContactBody { email, locale, time_zone } = body.value;
    let contact = Contact { email, locale, time_zone }.validate()?;
    Ok(Json(state.contacts.set(&user, contact).await?))
}

/// A user's contact (scope `publish`); every field `null` when never set.
#[utoipa::path(get, path = "/v1/users/{user_id}/contact", tag = "contacts", security(("bearer" = [])),
    params(("user_id" = String, Path, min_length = 1, max_length = 255)),
    responses((status = 200, body = Contact), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get(State(state): State<AppState>, _publisher: Publisher, Path(raw): Path<String>) -> Result<Json<Contact>, ApiError> {
    Ok(Json(state.contacts.get(&user(raw)?).await?))
}

/// The body of `PUT /v1/users/{user_id}/contact`; unknown fields are refused.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    /// `local@domain`, at most 254 characters; checked for shape only.
    #[serde(default)]
    #[schema(max_length = 254)]
    email: Option<String>,
    /// A BCP 47 language tag such as `fr` or `pt-BR`.
    #[serde(default)]
    #[schema(max_length = 35)]
    locale: Option<String>,
    /// An IANA time zone name such as `Europe/Paris`.
    #[serde(default)]
    #[schema(max_length = 64)]
    time_zone: Option<String>,
}
