//! Token verification keys.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{Claims, Principal};

/// Where verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// HS256 with a shared secret: Tidings can also mint tokens (`tidings token`).
    /// A `secrecy` secret: it never prints.
    Secret(secrecy::SecretSlice<u8>),
    /// RS256 or ES256 with the identity provider's public key (PEM): Tidings
    /// verifies only; tokens are minted by whoever holds the private key.
    PublicKey { algorithm: Algorithm, pem: Vec<u8> },
}

/// By hand only to keep the PEM's bytes out of logs (they are public, and long).
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(secret) => f.debug_tuple("Secret").field(secret).finish(),
            KeySource::PublicKey { algorithm, .. } => write!(f, "PublicKey({algorithm:?})"),
        }
    }
}

/// Verifies tokens, and mints them when the key is a shared secret.
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

/// The longest lifetime [`JwtKeys::mint`] gives a token: a hundred years.
/// Longer ones cannot be told apart in practice, and far longer ones do not
/// fit a clock (`tidings token --ttl 18446744073709551615`).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Why a key could not be loaded, or a token not minted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl JwtKeys {
    /// Loads keys. `audience`, when set, is required in every token; when
    /// unset, an `aud` claim is ignored rather than rejected, because most
    /// identity providers add one.
    pub fn new(source: &KeySource, audience: Option<&str>) -> Result<Self, KeyError> {
        let (decoding, encoding, algorithm) = match source {
            KeySource::Secret(secret) => {
                let secret = secrecy::ExposeSecret::expose_secret(secret);
                if secret.len() < 16 {
                    return Err(KeyError("invalid JWT key: the HS256 secret must be at least 16 bytes".into()));
                }
                (DecodingKey::from_secret(secret), Some(EncodingKey::from_secret(secret)), Algorithm::HS256)
            }
            KeySource::PublicKey { algorithm, pem } => {
                let decoding = match algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                    other => return Err(KeyError(format!("invalid JWT key: {other:?} is not supported; use RS256 or ES256"))),
                }
                .map_err(|e| KeyError(format!("invalid JWT key: {e}")))?;
                (decoding, None, *algorithm)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A stream ends exactly at `exp`; accepting tokens past it would let a
        // client reconnect into a stream that ends at once, in a loop.
        validation.leeway = 0;
        // A token issued for later (`nbf`) is not valid yet; jsonwebtoken
        // does not check that unless asked.
        validation.validate_nbf = true;
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtKeys { decoding, encoding, validation })
    }

    /// Verifies a token. The error is for debug logs only; clients always
    /// get the same 401.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| e.to_string())?;
        Principal::from_claims(data.claims).ok_or_else(|| "the sub claim is not a valid user id".to_owned())
    }

    /// Mints a token (HS256 only): for `tidings token`, the first-run demo
    /// and tests. A `ttl` over [`MAX_TTL`] is refused, not wrapped or panicked on.
    pub fn mint(&self, sub: &str, scope: Option<&str>, ttl: Duration) -> Result<String, KeyError> {
        self.mint_with(sub, scope, None, ttl)
    }

    /// Signs a token for `sub` that may read the broadcast topics matching
    /// `topics` (HS256 only), valid for `ttl`.
    pub fn mint_reader(&self, sub: &str, topics: &[&str], ttl: Duration) -> Result<String, KeyError> {
        self.mint_with(sub, None, Some(topics.iter().map(|t| (*t).to_owned()).collect()), ttl)
    }

    /// Signs a token with every claim Tidings reads (HS256 only).
    pub fn mint_with(&self, sub: &str, scope: Option<&str>, topics: Option<Vec<String>>, ttl: Duration) -> Result<String, KeyError> {
        let key = self
            .encoding
            .as_ref()
            .ok_or_else(|| KeyError("tokens can only be minted with an HS256 secret; with a public key, your identity provider mints them".into()))?;
        if ttl > MAX_TTL {
            return Err(KeyError(format!("the token lifetime (ttl) must be at most {} seconds", MAX_TTL.as_secs())));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let exp = now.checked_add(ttl).ok_or_else(|| KeyError("the token lifetime (ttl) is too long".into()))?;
        let claims = Claims { sub: sub.to_owned(), exp: exp.as_secs(), scope: scope.map(str::to_owned), iat: Some(now.as_secs()), topics };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).map_err(|e| KeyError(e.to_string()))
    }

    /// Whether [`mint`](Self::mint) works with these keys.
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&KeySource::Secret(b"0123456789abcdef0123".to_vec().into()), None).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_with_its_scopes() {
        let keys = keys();
        let token = keys.mint("alice", Some("publish other"), Duration::from_secs(60)).unwrap();
        let principal = keys.verify(&token).unwrap();
        assert_eq!(principal.user.as_str(), "alice");
        assert!(principal.has_scope("publish"));
        assert!(!principal.has_scope("admin"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims { sub: "alice".into(), exp: now - 1, scope: None, iat: None, topics: None };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"0123456789abcdef0123")).unwrap();
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn a_lifetime_beyond_any_clock_is_refused_not_panicked_on() {
        assert!(keys().mint("alice", None, Duration::from_secs(u64::MAX)).is_err());
        assert!(keys().mint("alice", None, MAX_TTL + Duration::from_secs(1)).is_err());
        assert!(keys().mint("alice", None, MAX_TTL).is_ok());
    }

    #[test]
    fn a_token_that_claims_never_to_expire_has_a_bounded_remaining_time() {
        let claims = Claims { sub: "alice".into(), exp: u64::MAX, scope: None, iat: None, topics: None };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"0123456789abcdef0123")).unwrap();
        let principal = keys().verify(&token).unwrap();
        assert_eq!(principal.remaining(), crate::auth::MAX_REMAINING);
    }

    #[test]
    fn a_minted_token_carries_its_issue_time_and_one_without_counts_as_issued_at_the_epoch() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let minted = keys().verify(&keys().mint("alice", None, Duration::from_secs(60)).unwrap()).unwrap();
        assert!(minted.issued_at >= now && minted.issued_at <= now + 1, "{}", minted.issued_at);
        let claims = Claims { sub: "alice".into(), exp: now + 60, scope: None, iat: None, topics: None };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"0123456789abcdef0123")).unwrap();
        assert_eq!(keys().verify(&token).unwrap().issued_at, 0);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = JwtKeys::new(&KeySource::Secret(b"another-secret-of-16".to_vec().into()), None).unwrap();
        let token = other.mint("alice", None, Duration::from_secs(60)).unwrap();
        assert!(keys().verify(&token).is_err());
    }
}
