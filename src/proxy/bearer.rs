//! Where a route's bearer token comes from: its credential's own cached token, or the
//! caller's token exchanged (RFC 8693); and how either is replaced after an upstream's 401.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::error::ProxyError;
use crate::token::{CachedToken, ExchangeCache, NoToken, Subject, TokenCache, TokenError};

/// A route's source of bearer tokens.
#[derive(Debug)]
pub enum Bearer {
    /// The credential's token, minted and refreshed in the background.
    Minted(TokenCache),
    /// The caller's `Authorization: Bearer` token exchanged for one meant for the upstream.
    Exchanged(Arc<ExchangeCache>),
}

/// The token one request sends, and where it came from, to replace it after a 401.
pub(crate) struct Issued<'a> {
    token: Arc<CachedToken>,
    from: Source<'a>,
}

/// A request's source of its bearer token ([`Bearer::source`]).
pub(crate) enum Source<'a> {
    Minted(&'a TokenCache),
    Exchanged(&'a ExchangeCache, Box<Subject>),
}

impl Bearer {
    /// Where the token for a request with the client's `headers` comes from: worked out
    /// before the request is taken apart. An exchange route needs the caller's bearer
    /// token (401 without).
    pub(crate) fn source(&self, headers: &HeaderMap) -> Result<Source<'_>, ProxyError> {
        Ok(match self {
            Self::Minted(cache) => Source::Minted(cache),
            Self::Exchanged(cache) => {
                let subject = Subject::from_headers(headers).ok_or(ProxyError::NoCallerToken)?;
                Source::Exchanged(cache, Box::new(subject))
            }
        })
    }
}

impl Issued<'_> {
    /// The `Authorization` value, marked sensitive.
    pub(crate) fn header(&self) -> &HeaderValue {
        self.token.header()
    }

    /// Drops the token the upstream refused with 401, and issues a new one from the same
    /// source (for an exchange route: for the same caller token).
    pub(crate) async fn replace(self) -> Result<Self, ProxyError> {
        match &self.from {
            Source::Minted(cache) => cache.reject(&self.token),
            Source::Exchanged(cache, subject) => cache.reject(subject, &self.token),
        }
        self.from.issue().await
    }
}

impl<'a> Source<'a> {
    /// The token.
    pub(crate) async fn issue(self) -> Result<Issued<'a>, ProxyError> {
        let token = match &self {
            Source::Minted(cache) => cache.token().await?,
            // Boxed: an exchange's future is large (1.6 KiB), and inline it would enlarge
            // every request's future, minted tokens' too, which hyper moves whole.
            Source::Exchanged(cache, subject) => {
                Box::pin(cache.token(subject)).await.map_err(exchange_failed)?
            }
        };
        Ok(Issued { token, from: self })
    }
}

/// A refusal the caller's token earned is passed on (401 or 403); any other failure,
/// the issuer unreachable or the proxy's own client refused (`invalid_client`), is the
/// proxy's, answered as for a credential without a token.
fn exchange_failed(error: TokenError) -> ProxyError {
    match &error {
        TokenError::Rejected {
            status, error: code, ..
        } if (400..500).contains(status) && *status != 429 && code != "invalid_client" => {
            ProxyError::ExchangeRefused(Box::new(error))
        }
        _ => ProxyError::NoToken(NoToken::Failed(Arc::new(error))),
    }
}
