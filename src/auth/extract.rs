//! Extractors: how a handler learns who is calling.
//!
//! Every rejection answers the same 401 and logs its precise reason at debug
//! level, so a client learns nothing about why its token failed, and an
//! operator can still find out.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, Method, header, request::Parts},
};

use super::{ADMIN_SCOPE, PUBLISH_SCOPE, Principal};
use crate::{app::AppState, error::ApiError, ratelimit::retry_after_secs};

/// A caller with a valid bearer token.
pub struct AuthUser(pub Principal);

/// A caller whose token has the `publish` scope (backend services).
pub struct Publisher(pub Principal);

/// An operator's tool: a token with the `admin` scope (revocations).
pub struct Admin(pub Principal);

/// A stream client. `EventSource` cannot set headers, so besides the bearer
/// header the token may come as the `access_token` query parameter or the
/// `tidings_token` cookie (tried in that order).
pub struct StreamUser(pub Principal);

/// The name of the cookie a stream may carry its token in.
pub const TOKEN_COOKIE: &str = "tidings_token";

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// Also applies the per-caller write limit: every write goes through
    /// here, and a user token gets a burst, then a steady rate. Backends
    /// (scope `publish`) are limited per recipient instead.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or_else(|| reject("no bearer token"))?;
        let principal = verify(state, token)?;
        let writes = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
        if writes && !principal.has_scope(PUBLISH_SCOPE)
            && let Err(wait) = state.limiter.check_caller(&principal.user).await
        {
            return Err(ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) });
        }
        Ok(AuthUser(principal))
    }
}

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        if !principal.has_scope(PUBLISH_SCOPE) {
            return Err(ApiError::Forbidden("this token lacks the 'publish' scope".into()));
        }
        Ok(Publisher(principal))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        if !principal.has_scope(ADMIN_SCOPE) {
            return Err(ApiError::Forbidden("this token lacks the 'admin' scope".into()));
        }
        Ok(Admin(principal))
    }
}

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer_token(&parts.headers) {
            return verify(state, token).map(StreamUser);
        }
        if let Some(token) = query_token(parts.uri.query()) {
            return verify(state, &token).map(StreamUser);
        }
        if let Some(token) = cookie_token(&parts.headers) {
            return verify(state, &token).map(StreamUser);
        }
        Err(reject("no token in header, query or cookie"))
    }
}

fn verify(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let principal = state.keys.verify(token).map_err(|why| reject(&why))?;
    if state.revocations.is_revoked(&principal.user, principal.issued_at) {
        return Err(reject("the token was revoked"));
    }
    tracing::Span::current().record("user", principal.user.as_str());
    Ok(principal)
}

fn reject(why: &str) -> ApiError {
    tracing::debug!(reason = why, "authentication rejected");
    ApiError::Unauthorized
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
        .filter(|t| !t.is_empty())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == TOKEN_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_where_clients_put_them() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        assert_eq!(query_token(Some("last_event_id=4&access_token=a%2Eb")), Some("a.b".into()));
        headers.insert(header::COOKIE, "theme=dark; tidings_token=xyz".parse().unwrap());
        assert_eq!(cookie_token(&headers), Some("xyz".into()));
    }
}
