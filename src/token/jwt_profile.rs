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

/// An assertion, and the expiry of the key that signed it if that has passed.
pub(crate) struct SignedAssertion {
    pub(crate) assertion: crate::secret::Assertion,
    /// The key's user or client id: the assertion's `iss` and `sub`.
    pub(crate) subject: String,
    expired_at: Option<SystemTime>,
    key_file: PathBuf,
}

impl SignedAssertion {
    /// The outcome of the grant that carried this assertion: a refusal of an expired key
    /// names the expiry, so the user is not left guessing from the issuer's words.
    pub(crate) fn explain<T>(&self, outcome: Result<T, TokenError>) -> Result<T, TokenError> {
        outcome.map_err(|error| match (error, self.expired_at) {
            (
                refusal @ TokenError::Rejected {
                    status: 400..=499, ..
                },
                Some(expired_at),
            ) => TokenError::KeyExpired {
                path: self.key_file.clone(),
                expired_at,
                refusal: Box::new(refusal),
            },
            (error, _) => error,
        })
    }
}

/// Signs an assertion for `key`, addressed to the endpoint's issuer.
pub(crate) async fn signed_assertion(
    key_file: &WatchedFile,
    kind: KeyKind,
    endpoint: &Endpoint,
) -> Result<SignedAssertion, TokenError> {
    let key = key_file.read(|path| SigningKey::from_file(path, kind))?;
    let audience = endpoint.issuer().await?;
    let now = SystemTime::now();
    let claims = Claims::new(&key, audience, now, assertion::DEFAULT_LIFETIME);
    Ok(SignedAssertion {
        assertion: assertion::sign(&key, &claims).map_err(TokenError::Sign)?,
        subject: key.subject.clone(),
        expired_at: key.expired_at(now),
        key_file: key_file.path().to_path_buf(),
    })
}

impl TokenSource for JwtProfileSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let signed = signed_assertion(&self.key_file, KeyKind::ServiceAccount, &self.endpoint).await?;
            let form = [
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", signed.assertion.expose()),
                ("scope", &self.scope),
            ];
            signed.explain(self.endpoint.request(&form, None).await)
        })
    }

    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(self.key_file.changed())
    }
}
