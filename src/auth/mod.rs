//! Authentication: JWTs verified with `jsonwebtoken`, turned into a
//! [`Principal`] by extractors.
//!
//! - [`keys`]: which algorithm and key verify (and, for HS256, sign) tokens;
//! - [`extract`]: `AuthUser`, `Publisher` and `StreamUser`, the only ways a
//!   handler learns who is calling.

pub mod extract;
pub mod keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domain::UserId;

pub use extract::{Admin, AuthUser, Publisher, StreamUser};
pub use keys::JwtKeys;

/// The scope that lets a backend publish to any user and read statistics.
pub const PUBLISH_SCOPE: &str = "publish";

/// The scope of the operator's tools: revoking a user's tokens. Kept apart
/// from `publish` so that a backend that sends notifications cannot lock
/// users out.
pub const ADMIN_SCOPE: &str = "admin";

/// The longest time left that a token is taken to have. A validly signed
/// token may claim an `exp` that no clock can reach (`2^64 - 1`); adding
/// that to an `Instant` would panic, so anything beyond this counts as
/// "never, in practice" and a stream of such a token ends after ten years.
pub const MAX_REMAINING: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Most topic patterns read from one token: enough for any real grant,
/// few enough that checking them stays cheap.
pub const MAX_TOPIC_PATTERNS: usize = 64;

/// The claims Tidings reads. `exp` is required: a stream ends when it passes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the token was issued: what a revocation compares against.
    /// Optional, as in the JWT standard; a token without it counts as
    /// issued at the epoch, so every revocation of its user covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Patterns of the broadcast topics the holder may read (`*` any run
    /// without `:`, `**` any run), e.g. `["org:42:*", "status"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    scopes: Vec<String>,
    /// When the token stops being valid, in seconds since the epoch.
    pub expires_at: u64,
    /// When the token was issued (its `iat`, 0 without one), in seconds
    /// since the epoch: a revocation refuses tokens issued before its time,
    /// and an open stream remembers it to know whether a revocation ends it.
    pub issued_at: u64,
    /// The token's topic patterns (claim `topics`).
    pub topics: Vec<String>,
}

impl Principal {
    /// Whether the holder may read broadcast topic `name`: one of the
    /// token's patterns, or one the operator made public, matches it.
    pub fn may_read(&self, name: &str, public: &[String]) -> bool {
        self.topics.iter().chain(public).any(|pattern| crate::domain::topic::pattern_matches(pattern, name))
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Time left until the token expires (zero if it already has), at most
    /// [`MAX_REMAINING`], so that callers can add it to an `Instant` safely.
    pub fn remaining(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.expires_at).saturating_sub(now).min(MAX_REMAINING)
    }

    /// A principal for unit tests: `user`, no scope, these topic patterns.
    #[cfg(test)]
    pub fn for_tests(user: UserId, topics: &[&str]) -> Self {
        Principal { user, scopes: Vec::new(), expires_at: u64::MAX, issued_at: 0, topics: topics.iter().map(|t| (*t).to_owned()).collect() }
    }

    fn from_claims(claims: Claims) -> Option<Self> {
        let user = UserId::parse(claims.sub).ok()?;
        let scopes = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let topics = claims.topics.unwrap_or_default().into_iter().take(MAX_TOPIC_PATTERNS).collect();
        Some(Principal { user, scopes, expires_at: claims.exp, issued_at: claims.iat.unwrap_or(0), topics })
    }
}
