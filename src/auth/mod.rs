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

pub use extract::{AuthUser, Publisher, StreamUser};
pub use keys::JwtKeys;

/// The scope that lets a backend publish to any user and read statistics.
pub const PUBLISH_SCOPE: &str = "publish";

/// The claims Tidings reads. `exp` is required: a stream ends when it passes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    scopes: Vec<String>,
    /// When the token stops being valid, in seconds since the epoch.
    pub expires_at: u64,
}

impl Principal {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Time left until the token expires (zero if it already has).
    pub fn remaining(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.expires_at).saturating_sub(now)
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
        Some(Principal { user, scopes, expires_at: claims.exp })
    }
}
