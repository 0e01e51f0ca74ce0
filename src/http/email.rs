//! The links in mails and the channels the page may offer:
//!
//! - `GET /v1/channels`: the channels this hub delivers on (`web`, and
//!   `email`, `push`, `webhook` when configured), so the page shows a
//!   toggle per channel that does something.
//! - `GET /v1/unsubscribe/{token}`: a small page that asks to confirm;
//!   `POST` the same URL (the page's button, or a mailbox provider's
//!   one-click request of RFC 8058) turns the email channel of the link's
//!   types off for its user, with no login. GET changes nothing, because
//!   mail scanners fetch links.
//! - `GET /v1/r/{token}`: records a click on the notification the link
//!   names, for its user, then redirects (303) to that notification's
//!   stored `action_url`.

use std::sync::LazyLock;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::{AutoEscape, Environment, Value, context, value::Serde};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    auth::AuthUser,
    domain::DomainError,
    email::links::LinkSigner,
    error::{ApiError, ErrorBody},
    outbox::ChannelKind,
};

/// Pages load nothing, style inline, and post only to themselves.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{ title }}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5;">
<h1 style="font-size: 1.4rem;">{{ title }}</h1>
{% if done %}<p>You will no longer get emails about {{ types|join(", ") }}. Notifications still arrive on the page; you can turn email back on in its preferences.</p>
{% else %}<p>Stop emails about {{ types|join(", ") }}? Notifications still arrive on the page.</p>
<form method="post"><button type="submit" style="font: inherit; padding: .5rem 1rem;">Turn off these emails</button></form>
{% endif %}</body></html>
"#;

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_template("unsubscribe.html", PAGE).expect("the unsubscribe page parses");
    env
});

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(channels))
        .routes(routes!(confirm_unsubscribe, unsubscribe))
        .routes(routes!(redirect))
}

/// The channels this hub delivers on: `web` always; `email` when an SMTP
/// server is configured; `push` when Web Push is; `webhook` when at least
/// one endpoint is registered. The page offers a toggle for each.
#[utoipa::path(get, path = "/v1/channels", tag = "preferences", security(("bearer" = [])),
    responses((status = 200, body = Vec<String>, example = json!(["web", "email"])), (status = 401, body = ErrorBody)))]
async fn channels(State(state): State<AppState>, _user: AuthUser) -> Result<Json<Vec<&'static str>>, ApiError> {
    let mut names = vec!["web"];
    for kind in state.outbox.channels.kinds() {
        if kind == ChannelKind::Webhook && state.webhooks.list().await?.is_empty() {
            continue;
        }
        names.push(kind.as_str());
    }
    Ok(Json(names))
}

fn signer(state: &AppState) -> Result<&LinkSigner, ApiError> {
    state.links.as_deref().ok_or(ApiError::NotFound)
}

fn page(title: &str, types: &[String], done: bool) -> Result<Response, ApiError> {
    let body = PAGES
        .get_template("unsubscribe.html")
        .and_then(|t| t.render(context! { title, types => Value::from(Serde(types)), done }))
        .map_err(|e| ApiError::from(DomainError::internal(e)))?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}

/// The confirmation page of an unsubscribe link: changes nothing (mail
/// scanners fetch links); its button POSTs to the same URL.
#[utoipa::path(get, path = "/v1/unsubscribe/{token}", tag = "preferences",
    params(("token" = String, Path, description = "The signed token of a mail's List-Unsubscribe link")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody, description = "A forged, altered or expired link")))]
async fn confirm_unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let found = signer(&state)?.verify_unsubscribe(&token)?;
    let types: Vec<String> = found.types.iter().map(|t| t.as_str().to_owned()).collect();
    page("Unsubscribe", &types, false)
}

/// One-click unsubscribe (RFC 8058): turns the email channel of the
/// link's types off for its user, keeping the rest of each preference. The
/// body (`List-Unsubscribe=One-Click`) is not needed and not read.
/// Repeating it changes nothing more.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "preferences",
    params(("token" = String, Path, description = "The signed token of a mail's List-Unsubscribe link")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody, description = "A forged, altered or expired link")))]
async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let found = signer(&state)?.verify_unsubscribe(&token)?;
    state.notifications.turn_off_channel(&found.user, &found.types, ChannelKind::Email).await?;
    tracing::info!(user = found.user.as_str(), types = found.types.len(), "email turned off by an unsubscribe link");
    let types: Vec<String> = found.types.iter().map(|t| t.as_str().to_owned()).collect();
    page("Unsubscribed", &types, true)
}

/// A tracked link from a mail: records the click for the link's user (as
/// `POST /v1/notifications/{id}/click` would, marking it read), then
/// redirects to the notification's stored `action_url`; to the hub's page
/// when it has none, or when the notification is gone.
#[utoipa::path(get, path = "/v1/r/{token}", tag = "notifications",
    params(("token" = String, Path, description = "The signed token of a link in a mail")),
    responses((status = 303, description = "To the notification's action_url"), (status = 404, body = ErrorBody, description = "A forged, altered or expired link")))]
async fn redirect(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let links = signer(&state)?;
    let found = links.verify_redirect(&token)?;
    let target = match state.notifications.click_from_link(&found.user, found.notification_id).await {
        Ok(notification) => notification.action_url,
        Err(DomainError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let location = target.as_deref().and_then(|url| safe_target(url, links.public_url())).unwrap_or_else(|| format!("{}/", links.public_url()));
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|e| ApiError::from(DomainError::internal(e)))?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

/// Where a stored `action_url` may lead: an absolute http(s) URL, or a
/// path on the hub (resolved against its public URL). Anything else
/// (`javascript:`, `//host`) is not followed.
fn safe_target(action_url: &str, public_url: &str) -> Option<String> {
    let base = url::Url::parse(&format!("{public_url}/")).ok()?;
    let resolved = base.join(action_url).ok()?;
    let relative_ok = action_url.starts_with('/') && !action_url.starts_with("//") && !action_url.starts_with("/\\");
    let absolute_ok = url::Url::parse(action_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    (matches!(resolved.scheme(), "http" | "https") && (absolute_ok || relative_ok)).then(|| resolved.to_string())
}

#[cfg(test)]
mod tests {
    use super::safe_target;

    #[test]
    fn only_http_urls_and_paths_on_the_hub_are_followed() {
        let hub = "https://hub.example.com";
        assert_eq!(safe_target("https://shop.example.com/o/1", hub).as_deref(), Some("https://shop.example.com/o/1"));
        assert_eq!(safe_target("/orders/1", hub).as_deref(), Some("https://hub.example.com/orders/1"));
        for bad in ["javascript:alert(1)", "//evil.example.com/x", "/\\evil.example.com", "data:text/html,x", "orders/1", "mailto:a@b.c"] {
            assert_eq!(safe_target(bad, hub), None, "{bad}");
        }
    }
}
