//! Wiring: turns a validated configuration into running parts (token cache, upstream
//! client, proxy), shared by `serve`, `token`, `demo` and the tests.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Credential};
use crate::proxy::{self, ForwardLimits, HostGuard, Proxy, Route, Router, UpstreamClient};
use crate::server::{self, ServerOptions};
use crate::tls;
use crate::token::{endpoint, RefreshPolicy, Token, TokenCache, TokenError, TokenSource};

/// A failure while starting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token endpoint client cannot be built.
    #[error("cannot build the token endpoint client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The HTTP client for discovery and token requests.
pub fn token_http_client() -> Result<reqwest::Client, StartError> {
    Ok(endpoint::http_client(tls::client_config(tls::root_store(), &[]))?)
}

/// Mints one token for `credential`, without caching: what `mintproxy token` does.
pub async fn mint_once(credential: &Credential) -> Result<Token, MintError> {
    let source = credential.source(token_http_client()?);
    Ok(source.fetch().await?)
}

/// Why `mint_once` failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Startup failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The token endpoint said no.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl MintError {
    /// The likely cause of a refusal, when one can be told.
    pub fn diagnosis(&self) -> Option<&'static str> {
        match self {
            Self::Token(error) => error.diagnosis(),
            Self::Start(_) => None,
        }
    }
}

/// Binds the listen address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Builds the proxy for `config` listening on `bound`: starts one token refresher per
/// credential (stopped by `stop`) and the upstream client.
pub fn build_proxy(
    config: &Config,
    bound: SocketAddr,
    policy: RefreshPolicy,
    stop: CancellationToken,
) -> Result<Proxy, StartError> {
    let roots = tls::root_store();
    let http = endpoint::http_client(tls::client_config(roots.clone(), &[]))?;
    let caches: std::collections::BTreeMap<&str, TokenCache> = config
        .credentials
        .iter()
        .map(|(name, credential)| {
            let cache = TokenCache::spawn(
                name.clone(),
                credential.source(http.clone()),
                policy.clone(),
                stop.clone(),
            );
            (name.as_str(), cache)
        })
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|route| Route {
            name: if route.prefix.is_empty() {
                "/".to_owned()
            } else {
                route.prefix.clone()
            },
            prefix: route.prefix.clone(),
            strip_prefix: route.strip_prefix,
            upstream: route.upstream.clone(),
            tokens: caches[route.credential.as_str()].clone(),
            headers: route.headers.clone(),
            policy: route.policy.clone(),
            replay_limit: proxy::DEFAULT_REPLAY_LIMIT,
            http2: route.http2,
        })
        .collect();
    let limits = ForwardLimits {
        upstream_timeout: config.limits.upstream_timeout,
        max_body_size: config.limits.max_body_size,
    };
    Ok(Proxy::new(
        Router::new(routes),
        UpstreamClient::new(tls::client_config(roots, &[])),
        HostGuard::new(bound, &config.allow_hosts),
        limits,
    ))
}

/// Runs the proxy on `listener` until `shutdown`, then drains and stops the refreshers.
pub async fn run_proxy(
    listener: TcpListener,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let bound = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let stop = CancellationToken::new();
    let proxy = build_proxy(config, bound, RefreshPolicy::default(), stop.clone())?;
    server::serve(listener, proxy, ServerOptions::from(&config.limits), shutdown).await;
    stop.cancel();
    Ok(())
}
