//! Where tokens come from: the [`TokenSource`] trait, the sources, and the cache that
//! keeps one valid token per credential.

pub mod assertion;
pub mod cache;
pub mod client_credentials;
pub mod disk_cache;
pub mod endpoint;
pub mod exchange;
pub mod file;
pub mod jwt_profile;
pub mod keyfile;
pub mod static_token;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::AccessToken;

pub use cache::{CacheObserver, CachedToken, NoToken, RefreshPolicy, TokenCache};
pub use client_credentials::{ClientAuth, ClientCredentialsSource};
pub use endpoint::{Endpoint, Reason, TokenError};
pub use exchange::{ExchangeCache, ExchangeObserver, ExchangeOutcome, Exchanger, Subject};
pub use jwt_profile::JwtProfileSource;
pub use keyfile::{KeyFileError, KeyKind, SigningKey};
pub use static_token::StaticTokenSource;

/// A freshly issued access token and how long the issuer says it lives.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer token itself.
    pub access_token: AccessToken,
    /// `expires_in` from the token response; `None` for a token that does not expire by
    /// time (a token file), used until its source changes or an upstream refuses it.
    pub lifetime: Option<Duration>,
    /// The token's scopes, when known (not for a token file).
    pub scope: Option<Scope>,
}

/// A token's scopes, and whether the issuer stated them.
///
/// ZITADEL's token answers leave `scope` out, which RFC 6749 §5.1 allows when the grant is
/// exactly what was asked for; the requested scopes are then the best account, marked so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// Space-separated, as in the grant.
    pub list: String,
    /// Where the list comes from.
    pub source: ScopeSource,
}

/// Where a [`Scope`] list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")] // as `as_str` says it; kept in the token cache's files
pub enum ScopeSource {
    /// The issuer's answer stated it.
    Granted,
    /// The answer did not say; this is what the grant asked for.
    Requested,
}

impl ScopeSource {
    /// `granted` or `requested`, as logs and `token --format json` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Requested => "requested",
        }
    }
}

/// `openid profile (requested)`.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.list, self.source.as_str())
    }
}

/// The future a [`TokenSource`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// Completes when a source's inputs changed; see [`TokenSource::changed`].
pub type ChangeFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something that can obtain a new access token: one call, one token request.
///
/// Sources do not cache; wrap one in a [`TokenCache`] for that.
pub trait TokenSource: Send + Sync + 'static {
    /// Requests a new token.
    fn fetch(&self) -> FetchFuture<'_>;

    /// Completes when what the source reads (a key, secret or token file) has changed
    /// since the last fetch, so the cache fetches anew at once. Default: never.
    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(std::future::pending())
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch(&self) -> FetchFuture<'_> {
        (**self).fetch()
    }

    fn changed(&self) -> ChangeFuture<'_> {
        (**self).changed()
    }
}

impl TokenSource for Box<dyn TokenSource> {
    fn fetch(&self) -> FetchFuture<'_> {
        (**self).fetch()
    }

    fn changed(&self) -> ChangeFuture<'_> {
        (**self).changed()
    }
}

/// A fake source for unit tests: issues `token-1`, `token-2`, ... living `lifetime`, or
/// fails or panics when told to, and counts its fetches.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::{FetchFuture, RefreshPolicy, Token, TokenCache, TokenError, TokenSource};
    use crate::secret::AccessToken;

    pub(crate) struct Counting {
        pub(crate) fetches: AtomicUsize,
        pub(crate) failing: AtomicBool,
        /// Panics on this many fetches (counted down), as a buggy source would.
        pub(crate) panics: AtomicUsize,
        lifetime: Duration,
    }

    impl Counting {
        pub(crate) fn living(lifetime: Duration) -> Self {
            Self {
                fetches: AtomicUsize::new(0),
                failing: AtomicBool::new(false),
                panics: AtomicUsize::new(0),
                lifetime,
            }
        }
    }

    /// A cache over `source` with the default policy, never stopped.
    pub(crate) fn cache(source: &Arc<Counting>) -> TokenCache {
        cache_with(source, RefreshPolicy::default())
    }

    /// A cache over `source` with `policy`, never stopped.
    pub(crate) fn cache_with(source: &Arc<Counting>, policy: RefreshPolicy) -> TokenCache {
        TokenCache::spawn("test", source.clone(), policy, CancellationToken::new())
    }

    impl TokenSource for Counting {
        fn fetch(&self) -> FetchFuture<'_> {
            Box::pin(async move {
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                let told_to_panic = self
                    .panics
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
                if told_to_panic.is_ok() {
                    panic!("the fake source panics as told");
                }
                if self.failing.load(Ordering::SeqCst) {
                    return Err(TokenError::NotAHeader);
                }
                Ok(Token {
                    access_token: AccessToken::new(format!("token-{n}")),
                    lifetime: Some(self.lifetime),
                    scope: None,
                })
            })
        }
    }
}
