//! VAPID (RFC 8292): the hub's P-256 key pair that identifies it to push
//! services. Browsers subscribe with the public key; every push carries a
//! short-lived ES256 JWT signed with the private key, whose `aud` is the
//! origin of the push endpoint, and the public key itself (`k=`).
//!
//! The key is generated on a first start and kept beside the database
//! (mode 0600), like the JWT secret, or given by the operator
//! (`TIDINGS_VAPID_PRIVATE_KEY`, the raw 32-byte scalar in base64url: what
//! `web-push generate-vapid-keys` prints). Changing it invalidates every
//! subscription: browsers subscribed with the old public key.
//!
//! The JWT is signed by `jsonwebtoken` (ES256 on RustCrypto). We do not use
//! `web-push-native`'s VAPID helper: it builds `aud` from the scheme and host
//! only, dropping a non-default port, which RFC 8292 (an origin) keeps.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::{SecretKey, elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
use serde::Serialize;

/// How long a push's VAPID token is valid: RFC 8292 allows at most 24 h;
/// 12 h leaves room for clock skew at the push service.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The hub's VAPID key pair.
pub struct VapidKey {
    secret: SecretKey,
    /// The public key as browsers take it: base64url of the uncompressed point.
    public: String,
    /// The private key as jsonwebtoken signs with it (PKCS#8 DER).
    encoding: EncodingKey,
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public).field("private", &"<redacted>").finish()
    }
}

/// The claims of a VAPID token.
#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl VapidKey {
    /// A fresh key pair.
    pub fn generate() -> anyhow::Result<Self> {
        Self::from_secret(SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng))
    }

    /// The key of a base64url (padded or not) 32-byte private scalar.
    pub fn from_base64url(text: &str) -> anyhow::Result<Self> {
        let text = text.trim().trim_end_matches('=');
        let bytes = URL_SAFE_NO_PAD.decode(text).context("the VAPID private key must be base64url")?;
        let secret = SecretKey::from_slice(&bytes).map_err(|_| anyhow::anyhow!("the VAPID private key must be a 32-byte P-256 scalar (base64url)"))?;
        Self::from_secret(secret)
    }

    fn from_secret(secret: SecretKey) -> anyhow::Result<Self> {
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let der = secret.to_pkcs8_der().map_err(|e| anyhow::anyhow!("encoding the VAPID key: {e}"))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        Ok(VapidKey { secret, public, encoding })
    }

    /// The private scalar in base64url, as it is kept in the key file.
    fn private_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.to_bytes())
    }

    /// The public key, base64url of the uncompressed point (65 bytes): the
    /// `applicationServerKey` browsers subscribe with.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header of a push to `endpoint`:
    /// `vapid t=<jwt>, k=<public key>`, the token valid for [`TOKEN_LIFETIME`].
    pub fn authorization(&self, endpoint: &url::Url, subject: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let audience = endpoint.origin().ascii_serialization();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims { aud: &audience, exp: (now + TOKEN_LIFETIME).as_secs(), sub: subject };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }

    /// The configured key, else the one kept at `path`, else a new one
    /// written there (mode 0600). Returns whether it was generated now.
    pub fn resolve(configured: Option<&str>, path: &Path) -> anyhow::Result<(Self, bool)> {
        if let Some(text) = configured {
            return Ok((Self::from_base64url(text).context("TIDINGS_VAPID_PRIVATE_KEY")?, false));
        }
        match std::fs::read_to_string(path) {
            Ok(existing) => Ok((Self::from_base64url(&existing).with_context(|| format!("reading the VAPID key in {}", path.display()))?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                crate::config::write_private(path, &key.private_base64url()).with_context(|| format!("writing the generated VAPID key to {}", path.display()))?;
                Ok((key, true))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Where the generated key is kept: beside the JWT secret
/// (`tidings.db` → `tidings.db.vapid`).
pub fn key_path(database_url: &str) -> PathBuf {
    crate::config::secret_path(database_url).with_extension("vapid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_base64url_form_and_publishes_an_uncompressed_point() {
        let key = VapidKey::generate().unwrap();
        let again = VapidKey::from_base64url(&key.private_base64url()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let point = URL_SAFE_NO_PAD.decode(key.public_key()).unwrap();
        assert_eq!((point.len(), point[0]), (65, 0x04));
    }

    #[test]
    fn a_token_names_the_endpoints_origin_with_its_port_and_verifies_with_the_public_key() {
        let key = VapidKey::generate().unwrap();
        let endpoint: url::Url = "http://127.0.0.1:8443/push/abc?x=1".parse().unwrap();
        let header = key.authorization(&endpoint, "mailto:ops@example.com").unwrap();
        let (token, k) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, key.public_key());
        let decoding = jsonwebtoken::DecodingKey::from_ec_der(&URL_SAFE_NO_PAD.decode(k).unwrap());
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["http://127.0.0.1:8443"]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }

    #[test]
    fn keys_that_are_not_p256_scalars_are_refused() {
        assert!(VapidKey::from_base64url("not base64!").is_err());
        assert!(VapidKey::from_base64url(&URL_SAFE_NO_PAD.encode([0u8; 32])).is_err());
        assert!(VapidKey::from_base64url(&URL_SAFE_NO_PAD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn the_key_file_lives_beside_the_secret() {
        assert_eq!(key_path("sqlite://tidings.db?mode=rwc"), PathBuf::from("tidings.db.vapid"));
        assert_eq!(key_path("postgres://u@h/db"), PathBuf::from("tidings.vapid"));
    }
}
