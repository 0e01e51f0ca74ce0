//! Signed links in mails: `/v1/unsubscribe/{token}` (turns a type's email
//! off for a user, no login) and `/v1/r/{token}` (records a click, then
//! redirects to the notification's stored `action_url`).
//!
//! A token is a JWT (HS256, `jsonwebtoken`) with an `aud` of its own per
//! purpose, so an unsubscribe token is never a redirect token, and neither
//! is ever a login: login tokens are checked for `sub`, which these lack,
//! and a token with an `aud` is refused unless the hub is set to that very
//! audience. The token names only ids; the redirect's target is read from
//! the stored notification, so a link can never send anyone to a URL of an
//! attacker's choosing.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{DomainError, notification::NotificationType, user_id::UserId};

/// The `aud` of unsubscribe tokens.
const UNSUBSCRIBE_AUDIENCE: &str = "tidings:unsubscribe";
/// The `aud` of redirect tokens.
const REDIRECT_AUDIENCE: &str = "tidings:redirect";
/// How long a link in a mail works: mail is read late, and an unsubscribe
/// link that stops working sends people to the spam button.
pub const LINK_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most types one unsubscribe link names (a digest's types).
const MAX_TYPES: usize = 100;

#[derive(Debug, Serialize, Deserialize)]
struct UnsubscribeClaims {
    aud: String,
    exp: u64,
    /// The user.
    uid: String,
    /// The types whose email the link turns off.
    types: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RedirectClaims {
    aud: String,
    exp: u64,
    uid: String,
    /// The notification.
    nid: i64,
    /// The channel the link was sent on, for click attribution.
    ch: String,
}

/// What a valid unsubscribe link asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub user: UserId,
    pub types: Vec<NotificationType>,
}

/// What a valid redirect link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub user: UserId,
    pub notification_id: i64,
    /// `email`: the channel whose click this is.
    pub channel: String,
}

/// Signs and checks the links, and builds their absolute URLs.
pub struct LinkSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The hub's public address, without a trailing slash.
    public_url: String,
}

impl LinkSigner {
    /// Links signed with `secret`, pointing at `public_url`.
    pub fn new(secret: &[u8], public_url: &str) -> Self {
        LinkSigner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The hub's public address (scheme, host, port, maybe a path prefix).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn expiry() -> u64 {
        (chrono::Utc::now() + chrono::Duration::from_std(LINK_LIFETIME).unwrap_or_default()).timestamp().max(0) as u64
    }

    fn sign(&self, claims: &impl Serialize) -> Result<String, DomainError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(DomainError::internal)
    }

    fn validation(audience: &str) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 0;
        validation
    }

    /// The absolute one-click unsubscribe URL for `user` and `types`.
    pub fn unsubscribe_url(&self, user: &str, types: &[&str]) -> Result<String, DomainError> {
        let claims = UnsubscribeClaims {
            aud: UNSUBSCRIBE_AUDIENCE.into(),
            exp: Self::expiry(),
            uid: user.to_owned(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
        };
        Ok(format!("{}/v1/unsubscribe/{}", self.public_url, self.sign(&claims)?))
    }

    /// The absolute tracked link to notification `id` of `user`.
    pub fn redirect_url(&self, user: &str, id: i64, channel: &str) -> Result<String, DomainError> {
        let claims = RedirectClaims { aud: REDIRECT_AUDIENCE.into(), exp: Self::expiry(), uid: user.to_owned(), nid: id, ch: channel.to_owned() };
        Ok(format!("{}/v1/r/{}", self.public_url, self.sign(&claims)?))
    }

    /// Checks an unsubscribe token: a forged, altered, expired or
    /// other-purpose token is not found.
    pub fn verify_unsubscribe(&self, token: &str) -> Result<Unsubscribe, DomainError> {
        let claims = jsonwebtoken::decode::<UnsubscribeClaims>(token, &self.decoding, &Self::validation(UNSUBSCRIBE_AUDIENCE))
            .map_err(|e| {
                tracing::debug!(error = %e, "an unsubscribe link was refused");
                DomainError::NotFound
            })?
            .claims;
        let user = UserId::parse(&claims.uid).map_err(|_| DomainError::NotFound)?;
        if claims.types.is_empty() || claims.types.len() > MAX_TYPES {
            return Err(DomainError::NotFound);
        }
        let types = claims.types.iter().map(|t| NotificationType::parse(t).map_err(|_| DomainError::NotFound)).collect::<Result<_, _>>()?;
        Ok(Unsubscribe { user, types })
    }

    /// Checks a redirect token, like [`LinkSigner::verify_unsubscribe`].
    pub fn verify_redirect(&self, token: &str) -> Result<Redirect, DomainError> {
        let claims = jsonwebtoken::decode::<RedirectClaims>(token, &self.decoding, &Self::validation(REDIRECT_AUDIENCE))
            .map_err(|e| {
                tracing::debug!(error = %e, "a redirect link was refused");
                DomainError::NotFound
            })?
            .claims;
        let user = UserId::parse(&claims.uid).map_err(|_| DomainError::NotFound)?;
        Ok(Redirect { user, notification_id: claims.nid, channel: claims.ch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[test]
    fn a_link_round_trips_and_names_what_it_was_signed_for() {
        let links = LinkSigner::new(b"0123456789abcdef0123456789abcdef", "https://hub.example.com/");
        let url = links.unsubscribe_url("alice", &["comment.created", "order.shipped"]).unwrap();
        assert!(url.starts_with("https://hub.example.com/v1/unsubscribe/"), "{url}");
        let found = links.verify_unsubscribe(token_of(&url)).unwrap();
        assert_eq!(found.user.as_str(), "alice");
        assert_eq!(found.types.iter().map(NotificationType::as_str).collect::<Vec<_>>(), ["comment.created", "order.shipped"]);

        let url = links.redirect_url("alice", 42, "email").unwrap();
        assert!(url.starts_with("https://hub.example.com/v1/r/"), "{url}");
        let found = links.verify_redirect(token_of(&url)).unwrap();
        assert_eq!((found.user.as_str(), found.notification_id, found.channel.as_str()), ("alice", 42, "email"));
    }

    #[test]
    fn a_link_of_one_purpose_or_another_key_or_altered_is_refused() {
        let links = LinkSigner::new(b"0123456789abcdef0123456789abcdef", "http://127.0.0.1:8080");
        let other = LinkSigner::new(b"fedcba9876543210fedcba9876543210", "http://127.0.0.1:8080");
        let unsubscribe = links.unsubscribe_url("alice", &["a"]).unwrap();
        let redirect = links.redirect_url("alice", 1, "email").unwrap();
        assert!(links.verify_redirect(token_of(&unsubscribe)).is_err(), "an unsubscribe token is no redirect");
        assert!(links.verify_unsubscribe(token_of(&redirect)).is_err(), "a redirect token is no unsubscribe");
        assert!(other.verify_unsubscribe(token_of(&unsubscribe)).is_err(), "another key");
        let mut altered = token_of(&unsubscribe).to_owned();
        altered.insert(altered.len() - 3, 'x');
        assert!(links.verify_unsubscribe(&altered).is_err());
        assert!(links.verify_unsubscribe("not-a-token").is_err());
    }
}
