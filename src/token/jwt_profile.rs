//! The ZITADEL service-user flow: sign an assertion, trade it with the RFC 7523
//! `jwt-bearer` grant.

use std::time::{Duration, SystemTime};

use super::assertion::{self, Claims};
use super::{Endpoint, FetchFuture, ServiceAccountKey, TokenError, TokenSource};

/// The grant type of RFC 7523 section 2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Mints tokens for a ZITADEL service user from its key.
#[derive(Debug)]
pub struct JwtProfileSource {
    key: ServiceAccountKey,
    endpoint: Endpoint,
    scope: String,
    assertion_lifetime: Duration,
}

impl JwtProfileSource {
    /// A source for `key` at `endpoint`, asking for `scopes`.
    pub fn new(key: ServiceAccountKey, endpoint: Endpoint, scopes: &[String]) -> Self {
        Self {
            key,
            endpoint,
            scope: scopes.join(" "),
            assertion_lifetime: assertion::DEFAULT_LIFETIME,
        }
    }
}

impl TokenSource for JwtProfileSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let audience = self.endpoint.issuer().await?;
            let claims = Claims::new(
                &self.key,
                audience,
                SystemTime::now(),
                self.assertion_lifetime,
            );
            let assertion = assertion::sign(&self.key, &claims).map_err(TokenError::Sign)?;
            let form = [
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", assertion.expose()),
                ("scope", &self.scope),
            ];
            self.endpoint.request(&form).await
        })
    }
}
