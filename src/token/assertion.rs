//! The RFC 7523 assertion a key signs to prove who it is: a service user's JWT profile
//! grant, or an application's `private_key_jwt` client authentication (same claims).
//!
//! ZITADEL compares `aud` to its issuer string exactly and rejects an `iat` more than a
//! second in the future, so `iat` is backdated a little to absorb clock skew.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::keyfile::SigningKey;
use crate::secret::Assertion;

/// How far `iat` is set into the past, so a clock slightly ahead of the issuer's still works.
pub const BACKDATE: Duration = Duration::from_secs(5);
/// The default lifetime of an assertion: it is used once, right away.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// ZITADEL refuses assertions that live longer than this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The claims of a JWT profile assertion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The service user's id (or the client id).
    pub iss: String,
    /// The service user's id again: the subject the token is for.
    pub sub: String,
    /// The issuer, exactly as its discovery document spells it.
    pub aud: String,
    /// Issued at (seconds since the epoch), backdated by [`BACKDATE`].
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

impl Claims {
    /// The claims for `key`, addressed to `audience`, issued around `now`.
    pub fn new(key: &SigningKey, audience: &str, now: SystemTime, lifetime: Duration) -> Self {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let iat = now.saturating_sub(BACKDATE).as_secs();
        Self {
            iss: key.subject.clone(),
            sub: key.subject.clone(),
            aud: audience.to_owned(),
            iat,
            exp: iat + lifetime.min(MAX_LIFETIME).as_secs(),
        }
    }
}

/// Signs the claims with RS256, `kid` = the key's id.
pub fn sign(key: &SigningKey, claims: &Claims) -> Result<Assertion, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.key_id.clone());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, key.signing_key()).map(Assertion::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::keygen::GeneratedKey;
    use crate::token::keyfile::KeyKind;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn assertion_has_the_zitadel_shape() {
        let generated = GeneratedKey::new("key-1", "user-1");
        let key = SigningKey::from_json(generated.key_json().as_bytes(), KeyKind::ServiceAccount).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let claims = Claims::new(&key, "https://issuer.example", now, Duration::from_secs(7200));
        assert_eq!(claims.iss, "user-1");
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.aud, "https://issuer.example");
        assert_eq!(claims.iat, 1_800_000_000 - BACKDATE.as_secs());
        assert_eq!(
            claims.exp - claims.iat,
            MAX_LIFETIME.as_secs(),
            "lifetime is capped at 1 h"
        );

        let jwt = sign(&key, &claims).unwrap();
        let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_audience(&["https://issuer.example"]);
        let decoding = DecodingKey::from_rsa_der(&generated.public_key_der());
        let decoded = jsonwebtoken::decode::<Claims>(jwt.expose(), &decoding, &validation).unwrap();
        assert_eq!(decoded.claims, claims);
    }
}
