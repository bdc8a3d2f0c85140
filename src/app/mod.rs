//! Wiring: turns a validated configuration into running parts (token cache, upstream
//! client, proxy), shared by `serve`, `token`, `demo` and the tests; and assembles them
//! again on SIGHUP ([`reload`]).

pub mod reload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::reload::{Hangups, Reloader, Source};
use crate::access_log::{AccessLog, Writer as AccessLogWriter};
use crate::admin::{self, Admin};
use crate::config::{Config, Credential};
use crate::metrics::Metrics;
use crate::proxy::{
    self, Bearer, ForwardLimits, HostGuard, Proxy, RequestObserver, Route, Router, Routing, UpstreamClient,
};
use crate::server::{self, Drained, ListenAddr, Listener, ServerOptions};
use crate::tls::{self, TlsError};
use crate::token::{
    endpoint, CacheObserver, ExchangeCache, ExchangeObserver, RefreshPolicy, Token, TokenCache, TokenError,
    TokenSource,
};
use crate::trace::{ExportError, Exporter, Tracer};

/// A failure while starting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: ListenAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The token endpoint client cannot be built.
    #[error("cannot build the token endpoint client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The access log's writer thread cannot be started.
    #[error("cannot start the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    /// A route exchanges tokens with a credential that is no client (validation refuses
    /// this; a configuration built in code may not have been validated).
    #[error("credential {0:?} is a token file: it cannot authenticate a token exchange")]
    NotAClient(String),
    /// Span export cannot start.
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// The HTTP client for discovery and token requests, checking certificates per `trust`.
pub fn token_http_client(trust: &tls::Trust) -> Result<reqwest::Client, StartError> {
    Ok(endpoint::http_client(tls::client_config(trust)?)?)
}

/// Mints one token for `credential`, without caching: what `mintproxy token` does.
pub async fn mint_once(credential: &Credential, trust: &tls::Trust) -> Result<Token, MintError> {
    let source = credential.source(token_http_client(trust)?, None);
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

    /// `likely cause: ...`: the line `check --online` and `token` print under a failure.
    pub fn likely_cause(&self) -> Option<String> {
        self.diagnosis()
            .map(|diagnosis| format!("likely cause: {diagnosis}"))
    }
}

/// Binds the listen address (TCP or Unix socket).
pub async fn bind(addr: &ListenAddr) -> Result<Listener, StartError> {
    Listener::bind(addr).await.map_err(|source| StartError::Bind {
        addr: addr.clone(),
        source,
    })
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        addr: ListenAddr::Tcp(addr),
        source,
    })
}

/// Builds the proxy for `config` listening on `bound` (`None`: a Unix socket): starts one
/// token refresher per credential and the watch on key expiry (stopped by `stop`), and the
/// upstream client.
pub fn build_proxy(
    config: &Config,
    bound: Option<SocketAddr>,
    policy: RefreshPolicy,
    stop: CancellationToken,
) -> Result<Proxy, StartError> {
    Ok(build(config, bound, policy, stop, None, None)?.proxy)
}

/// A built proxy and the token caches behind it.
#[derive(Debug)]
pub struct Built {
    /// The proxy.
    pub proxy: Proxy,
    /// One token cache per minted credential, for readiness.
    pub caches: Vec<TokenCache>,
    /// Builds the same way again, for a reload.
    assembler: Assembler,
    /// The running credentials, for a reload to keep the unchanged ones.
    credentials: Credentials,
    /// The span export, when `config.otlp_endpoint` is set: to flush at shutdown.
    pub exporter: Option<Exporter>,
}

/// Like [`build_proxy`], counting requests and token fetches in `metrics` and logging
/// requests to `access_log` when given, and handing back the token caches (for the admin
/// listener's readiness).
pub fn build(
    config: &Config,
    bound: Option<SocketAddr>,
    policy: RefreshPolicy,
    stop: CancellationToken,
    metrics: Option<Arc<Metrics>>,
    access_log: Option<Arc<AccessLog>>,
) -> Result<Built, StartError> {
    let outbound_tls = tls::client_config(&config.trust)?;
    let exporter = config
        .otlp_endpoint
        .as_ref()
        .map(|url| -> Result<Exporter, StartError> {
            Ok(Exporter::start(
                url,
                endpoint::http_client(outbound_tls.clone())?,
            )?)
        })
        .transpose()?;
    let tracer = exporter.as_ref().map(Exporter::tracer);
    let assembler = Assembler::new(outbound_tls, bound, policy, stop, metrics.clone(), tracer.clone())?;
    let (routing, credentials) = assembler.assemble(config, &Credentials::new())?;
    let limits = ForwardLimits {
        upstream_timeout: config.limits.upstream_timeout,
        max_body_size: config.limits.max_body_size,
        max_header_size: config.limits.max_header_size,
    };
    let proxy = Proxy::new(routing, limits)
        .observed_by(Observers::of(
            [
                access_log.map(|log| log as Arc<dyn RequestObserver>),
                metrics.map(|m| m as Arc<dyn RequestObserver>),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ))
        .traced_by(tracer);
    Ok(Built {
        proxy,
        caches: caches(&credentials),
        assembler,
        credentials,
        exporter,
    })
}

/// Turns a configuration into routes and running credentials: made once at start and kept,
/// so that a reload builds exactly as the start did.
#[derive(Debug)]
pub(crate) struct Assembler {
    bound: Option<SocketAddr>,
    policy: RefreshPolicy,
    /// Cancelled when the proxy stops: every refresher and key watch ends with it.
    stop: CancellationToken,
    metrics: Option<Arc<Metrics>>,
    /// The token endpoint client.
    http: reqwest::Client,
    upstreams: UpstreamClient,
    /// Makes the spans of token requests, when spans are exported.
    tracer: Option<Tracer>,
}

/// A credential whose refresher runs: its definition (to tell whether a reload changed
/// it), its token cache, and the lease that keeps the refresher running.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub definition: Credential,
    pub cache: TokenCache,
    lease: Arc<DropGuard>,
}

/// The running (minted) credentials, by name.
pub(crate) type Credentials = BTreeMap<String, Running>;

/// The token caches of `credentials`, for readiness.
pub(crate) fn caches(credentials: &Credentials) -> Vec<TokenCache> {
    credentials
        .values()
        .map(|running| running.cache.clone())
        .collect()
}

impl Assembler {
    /// Starts nothing yet: the clients for the token endpoints and the upstreams, checking
    /// certificates with `outbound_tls`; token requests in spans of `tracer` when given.
    fn new(
        outbound_tls: rustls::ClientConfig,
        bound: Option<SocketAddr>,
        policy: RefreshPolicy,
        stop: CancellationToken,
        metrics: Option<Arc<Metrics>>,
        tracer: Option<Tracer>,
    ) -> Result<Self, StartError> {
        Ok(Self {
            bound,
            policy,
            stop,
            metrics,
            http: endpoint::http_client(outbound_tls.clone())?,
            upstreams: UpstreamClient::new(outbound_tls),
            tracer,
        })
    }

    /// Cancelled when the proxy stops.
    pub fn stopped(&self) -> &CancellationToken {
        &self.stop
    }

    /// The routes and minted credentials of `config`. A credential whose whole definition
    /// equals one in `running` keeps its cache, and so its token; any other gets a cache
    /// and refresher of its own. Exchange routes get an exchange cache of their own. Also
    /// watches the configuration's key files for expiry. The refreshers and the watch run
    /// as long as the routing, or a request on it, lives.
    pub fn assemble(
        &self,
        config: &Config,
        running: &Credentials,
    ) -> Result<(Routing, Credentials), StartError> {
        let credentials: Credentials = config
            .credentials
            .iter()
            .filter(|(name, _)| config.mints(name))
            .map(|(name, definition)| {
                let kept = running
                    .get(name)
                    .filter(|running| running.definition == *definition);
                let running = kept.cloned().unwrap_or_else(|| self.start(name, definition));
                (name.clone(), running)
            })
            .collect();
        let key_watch = self.stop.child_token();
        crate::key_expiry::watch(config, self.metrics.clone(), key_watch.clone());
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let name = if route.prefix.is_empty() {
                    "/".to_owned()
                } else {
                    route.prefix.clone()
                };
                let tokens = match &route.exchange {
                    None => Bearer::Minted(credentials[route.credential.as_str()].cache.clone()),
                    Some(exchange) => {
                        let exchanger = config.credentials[&route.credential]
                            .exchanger(self.http.clone(), self.tracer.as_ref(), exchange)
                            .ok_or_else(|| StartError::NotAClient(route.credential.clone()))?;
                        let observer = self.metrics.clone().map(|m| m as Arc<dyn ExchangeObserver>);
                        Bearer::Exchanged(Arc::new(ExchangeCache::new(name.clone(), exchanger, observer)))
                    }
                };
                Ok(Route {
                    name,
                    prefix: route.prefix.clone(),
                    strip_prefix: route.strip_prefix,
                    upstream: route.upstream.clone(),
                    tokens,
                    headers: route.headers.clone(),
                    policy: route.policy.clone(),
                    replay_limit: proxy::DEFAULT_REPLAY_LIMIT,
                    origin: self.upstreams.origin(&route.upstream, route.http2),
                })
            })
            .collect::<Result<_, StartError>>()?;
        let leases = credentials
            .values()
            .map(|running| running.lease.clone())
            .chain([Arc::new(key_watch.drop_guard())])
            .collect();
        let guard = HostGuard::new(self.bound, &config.allow_hosts);
        Ok((Routing::new(Router::new(routes), guard, leases), credentials))
    }

    /// A token cache for `definition`, refreshing until its lease is dropped or the proxy
    /// stops.
    fn start(&self, name: &str, definition: &Credential) -> Running {
        let stop = self.stop.child_token();
        let cache = TokenCache::spawn_observed(
            name,
            definition.source(self.http.clone(), self.tracer.as_ref()),
            self.policy.clone(),
            stop.clone(),
            self.metrics.clone().map(|m| m as Arc<dyn CacheObserver>),
        );
        Running {
            definition: definition.clone(),
            cache,
            lease: Arc::new(stop.drop_guard()),
        }
    }
}

/// Several observers of the proxy, each told of everything.
#[derive(Debug)]
struct Observers(Vec<Arc<dyn RequestObserver>>);

impl Observers {
    /// One observer for all of `observers`: none, the one itself, or all of them in turn.
    fn of(mut observers: Vec<Arc<dyn RequestObserver>>) -> Option<Arc<dyn RequestObserver>> {
        match observers.len() {
            0 | 1 => observers.pop(),
            _ => Some(Arc::new(Self(observers))),
        }
    }
}

impl RequestObserver for Observers {
    fn request(&self, record: &proxy::RequestRecord<'_>) {
        self.0.iter().for_each(|observer| observer.request(record));
    }

    fn truncated(&self, route: &str) {
        self.0.iter().for_each(|observer| observer.truncated(route));
    }

    fn retried(&self, route: &str) {
        self.0.iter().for_each(|observer| observer.retried(route));
    }
}

/// The listener settings of `config`: its limits, and TLS when configured.
pub fn server_options(config: &Config) -> Result<ServerOptions, TlsError> {
    let limits = &config.limits;
    Ok(ServerOptions {
        header_read_timeout: limits.header_read_timeout,
        max_header_size: limits.max_header_size,
        max_connections: limits.max_connections,
        shutdown_timeout: limits.shutdown_timeout,
        tls: config
            .inbound_tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?
            .map(Arc::new),
    })
}

/// Runs the proxy on `listener` until `shutdown`, keeps serving for the shutdown delay,
/// then drains, stops the refreshers, writes out the access log and sends the last spans. With
/// `config.admin_listen`, also serves the admin endpoints there (with metrics), until the
/// drain ends; `/readyz` answers 503 from the shutdown signal on.
pub async fn run_proxy(
    listener: Listener,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Drained, StartError> {
    Ok(prepare(listener, config).await?.serve(shutdown).await)
}

/// The proxy of [`run_proxy`], built and with its token refreshers and admin listener
/// running, but not yet accepting: its first tokens can be awaited before anyone is told
/// where it listens (`mintproxy exec`). Dropped unserved, it stops the refreshers.
pub struct Prepared {
    listener: Listener,
    proxy: Proxy,
    caches: Vec<TokenCache>,
    admin: Option<Arc<Admin>>,
    options: ServerOptions,
    shutdown_delay: std::time::Duration,
    stop: tokio_util::sync::DropGuard,
    /// Writes out the access log's last lines once the drain is over.
    access_log_writer: Option<AccessLogWriter>,
    /// Applies a reloaded configuration.
    reloader: Reloader,
    /// Set by [`Prepared::reload_on`]: the signals that reload, and where from.
    reload: Option<(Hangups, Option<Source>)>,
    /// Sends the last spans once the drain is over.
    exporter: Option<Exporter>,
}

/// The first half of [`run_proxy`]: everything but accepting connections.
pub async fn prepare(listener: Listener, config: &Config) -> Result<Prepared, StartError> {
    let bound = match listener.local_addr() {
        Ok(ListenAddr::Tcp(addr)) => Some(addr),
        Ok(ListenAddr::Unix(_)) => None,
        Err(source) => {
            return Err(StartError::Bind {
                addr: config.listen.clone(),
                source,
            })
        }
    };
    let options = server_options(config)?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(bind_tcp(addr).await?),
        None => None,
    };
    let metrics = admin_listener.as_ref().map(|_| Arc::new(Metrics::new()));
    let dropped = metrics
        .as_ref()
        .map(|m| m.access_log_dropped())
        .unwrap_or_default();
    let (access_log, access_log_writer) = AccessLog::start(&config.access_log, dropped)
        .map_err(StartError::AccessLog)?
        .unzip();
    let stop = CancellationToken::new();
    let built = build(
        config,
        bound,
        RefreshPolicy::default(),
        stop.clone(),
        metrics.clone(),
        access_log,
    )?;
    let admin = metrics
        .clone()
        .map(|metrics| Arc::new(Admin::new(built.caches.clone(), metrics)));
    if let (Some(listener), Some(admin)) = (admin_listener, &admin) {
        tokio::spawn(admin::serve(
            listener,
            admin.clone(),
            stop.clone().cancelled_owned(),
        ));
    }
    let reloader = Reloader {
        running: config.clone(),
        credentials: built.credentials,
        assembler: built.assembler,
        proxy: built.proxy.clone(),
        admin: admin.clone(),
        metrics,
        reloads: 0,
    };
    Ok(Prepared {
        listener,
        proxy: built.proxy,
        caches: built.caches,
        admin,
        options,
        shutdown_delay: config.limits.shutdown_delay,
        stop: stop.drop_guard(),
        access_log_writer,
        reloader,
        reload: None,
        exporter: built.exporter,
    })
}

impl Prepared {
    /// One token cache per credential.
    pub fn caches(&self) -> &[TokenCache] {
        &self.caches
    }

    /// Once serving, reloads the configuration from `source` on every SIGHUP in
    /// `hangups`; with no source (flags only), logs that there is nothing to reload.
    pub fn reload_on(mut self, hangups: Hangups, source: Option<Source>) -> Self {
        self.reload = Some((hangups, source));
        self
    }

    /// The second half of [`run_proxy`]: serves until `shutdown`, then drains.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Drained {
        if let Some((hangups, source)) = self.reload {
            tokio::spawn(reload::on_hangups(self.reloader, hangups, source));
        }
        let (admin, delay) = (self.admin, self.shutdown_delay);
        let shutdown = async move {
            shutdown.await;
            if let Some(admin) = &admin {
                admin.drain();
            }
            if !delay.is_zero() {
                tracing::info!(
                    delay_s = delay.as_secs_f64(),
                    "shutdown signal: unready, serving on until the delay has passed"
                );
                tokio::time::sleep(delay).await;
            }
        };
        let drained = server::serve(self.listener, self.proxy, self.options, shutdown).await;
        drop(self.stop); // stops the refreshers and the admin listener
        if let Some(writer) = self.access_log_writer {
            // Joining the writer thread blocks: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(|| writer.finish()).await;
        }
        if let Some(exporter) = self.exporter {
            exporter.shutdown().await;
        }
        drained
    }
}
