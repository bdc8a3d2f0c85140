//! Where tokens come from: the [`TokenSource`] trait, the sources, and the cache that
//! keeps one valid token per credential.

pub mod assertion;
pub mod cache;
pub mod endpoint;
pub mod jwt_profile;
pub mod keyfile;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::AccessToken;

pub use cache::{CachedToken, NoToken, RefreshPolicy, TokenCache};
pub use endpoint::{Endpoint, TokenError};
pub use jwt_profile::JwtProfileSource;
pub use keyfile::{KeyFileError, ServiceAccountKey};

/// A freshly issued access token and how long the issuer says it lives.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer token itself.
    pub access_token: AccessToken,
    /// `expires_in` from the token response.
    pub lifetime: Duration,
    /// The granted scopes, when the issuer states them.
    pub scope: Option<String>,
}

/// The future a [`TokenSource`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// Something that can obtain a new access token: one call, one token request.
///
/// Sources do not cache; wrap one in a [`TokenCache`] for that.
pub trait TokenSource: Send + Sync + 'static {
    /// Requests a new token.
    fn fetch(&self) -> FetchFuture<'_>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch(&self) -> FetchFuture<'_> {
        (**self).fetch()
    }
}
