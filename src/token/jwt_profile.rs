//! The ZITADEL service-user flow: sign an assertion, trade it with the RFC 7523
//! `jwt-bearer` grant.

use std::path::PathBuf;
use std::time::SystemTime;

use super::assertion::{self, Claims};
use super::file::WatchedFile;
use super::keyfile::{KeyKind, SigningKey};
use super::{ChangeFuture, Endpoint, FetchFuture, TokenError, TokenSource};

/// The grant type of RFC 7523 section 2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Mints tokens for a ZITADEL service user from its key file, read anew when it changes.
#[derive(Debug)]
pub struct JwtProfileSource {
    key_file: WatchedFile,
    endpoint: Endpoint,
    scope: String,
}

impl JwtProfileSource {
    /// A source for the key in `key_file` at `endpoint`, asking for `scopes`.
    pub fn new(key_file: impl Into<PathBuf>, endpoint: Endpoint, scopes: &[String]) -> Self {
        Self {
            key_file: WatchedFile::new(key_file),
            endpoint,
            scope: scopes.join(" "),
        }
    }
}

/// Signs an assertion for `key`, addressed to the endpoint's issuer.
pub(crate) async fn signed_assertion(
    key_file: &WatchedFile,
    kind: KeyKind,
    endpoint: &Endpoint,
) -> Result<crate::secret::Assertion, TokenError> {
    let key = key_file.read(|path| SigningKey::from_file(path, kind))?;
    let audience = endpoint.issuer().await?;
    let claims = Claims::new(&key, audience, SystemTime::now(), assertion::DEFAULT_LIFETIME);
    assertion::sign(&key, &claims).map_err(TokenError::Sign)
}

impl TokenSource for JwtProfileSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let assertion = signed_assertion(&self.key_file, KeyKind::ServiceAccount, &self.endpoint).await?;
            let form = [
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", assertion.expose()),
                ("scope", &self.scope),
            ];
            self.endpoint.request(&form, None).await
        })
    }

    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(self.key_file.changed())
    }
}
