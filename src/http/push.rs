//! `/v1/push`: Web Push for browsers. The page fetches the hub's VAPID
//! public key, subscribes the browser with it, and posts the subscription;
//! the work is in `crate::push`.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::JsonBody;
use crate::{
    app::AppState,
    auth::AuthUser,
    error::{ApiError, ErrorBody},
    push::SubscriptionRequest,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(vapid_public_key)).routes(routes!(subscribe, unsubscribe))
}

/// The answer of `GET /v1/push/vapid_public_key`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VapidPublicKey {
    /// The P-256 public key, base64url (unpadded) of the 65-byte
    /// uncompressed point: the `applicationServerKey` of `pushManager.subscribe`.
    key: String,
}

/// The hub's VAPID public key, for `pushManager.subscribe`. Needs no
/// token: it is public. 404 when Web Push is off on this hub.
#[utoipa::path(get, path = "/v1/push/vapid_public_key", tag = "push",
    responses((status = 200, body = VapidPublicKey), (status = 404, body = ErrorBody, description = "Web Push is not configured on this hub")))]
async fn vapid_public_key(State(state): State<AppState>) -> Result<Json<VapidPublicKey>, ApiError> {
    let key = state.push.vapid.as_ref().ok_or(ApiError::NotFound)?;
    Ok(Json(VapidPublicKey { key: key.public_key().to_owned() }))
}

/// Subscribes the caller's browser: the body is its `PushSubscription` as
/// `JSON.stringify` gives it. The endpoint must be `https://` on a public
/// host (`TIDINGS_PUSH_ALLOW_INSECURE` lifts this for tests); `keys.p256dh`
/// a P-256 point and `keys.auth` 16 bytes, base64url. Posting the same
/// endpoint again replaces it (an endpoint is one browser). A user keeps up
/// to 20 devices; beyond, the oldest is dropped.
#[utoipa::path(post, path = "/v1/push/subscriptions", tag = "push", security(("bearer" = [])), request_body = SubscriptionRequest,
    responses((status = 201, description = "Subscribed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Web Push is not configured on this hub"), (status = 422, body = ErrorBody, description = "An endpoint or key that cannot be used, naming the field")))]
async fn subscribe(State(state): State<AppState>, AuthUser(principal): AuthUser, body: JsonBody<SubscriptionRequest>) -> Result<StatusCode, ApiError> {
    if state.push.vapid.is_none() {
        return Err(ApiError::NotFound);
    }
    let subscription = body.value.parse(state.push.allow_insecure)?;
    state.push_subscriptions.subscribe(&principal.user, subscription).await?;
    Ok(StatusCode::CREATED)
}

/// The body of `DELETE /v1/push/subscriptions`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    /// The endpoint the browser subscribed with.
    #[schema(max_length = 2048)]
    endpoint: String,
}

/// Unsubscribes one of the caller's browsers, by its endpoint: 204 whether
/// or not it was subscribed (another user's endpoint is left alone).
#[utoipa::path(delete, path = "/v1/push/subscriptions", tag = "push", security(("bearer" = [])), request_body = UnsubscribeRequest,
    responses((status = 204, description = "Not subscribed any more"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unsubscribe(State(state): State<AppState>, AuthUser(principal): AuthUser, body: JsonBody<UnsubscribeRequest>) -> Result<StatusCode, ApiError> {
    let raw = body.value.endpoint;
    if raw.chars().count() > crate::push::MAX_ENDPOINT_CHARS {
        return Err(ApiError::bad_field("endpoint", "endpoint must be at most 2048 characters"));
    }
    // Stored as the URL parser writes it; match the same form.
    let endpoint = url::Url::parse(&raw).map_or(raw, |url| url.to_string());
    state.push_subscriptions.unsubscribe(&principal.user, &endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}
