//! From the config file, the environment and flags to the typed [`Config`] the program
//! runs on. Parsed first ([`raw`]), validated once here; every error names the key path
//! (`routes[1].credential: unknown credential "biling"`) or, for flags, the flag.

pub mod raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use url::Url;

use crate::cli::{AccessLogArgs, GuardArgs, ProxyArgs, Switch};
use crate::proxy::{Policy, Upstream};
use crate::server::ListenAddr;
use crate::token::file::WatchedFile;
use crate::token::{
    ClientAuth, ClientCredentialsSource, Endpoint, Exchanger, JwtProfileSource, KeyKind, SigningKey,
    StaticTokenSource, TokenSource,
};
use raw::{RawConfig, RawCredential, RawExchange, RawRoute};

/// The scopes ZITADEL's own SDKs ask for, so ZITADEL's APIs accept the token.
pub const DEFAULT_SCOPES: [&str; 2] = ["openid", "urn:zitadel:iam:org:project:id:zitadel:aud"];

/// [`DEFAULT_SCOPES`] as owned strings, as a credential holds them.
pub fn default_scopes() -> Vec<String> {
    DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
}

/// Where the proxy listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Where the admin listener (`/healthz`, `/readyz`, `/metrics`) listens, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Host names accepted besides the loopback names (`*`: any).
    pub allow_hosts: Vec<String>,
    /// Limits of the listener and of upstream calls.
    pub limits: Limits,
    /// How upstream and token endpoint certificates are checked.
    pub trust: crate::tls::Trust,
    /// TLS on the listener, if any.
    pub inbound_tls: Option<crate::tls::Inbound>,
    /// Credentials by name.
    pub credentials: BTreeMap<String, Credential>,
    /// Routes, in the order given.
    pub routes: Vec<RouteConfig>,
    /// The access log (flags and environment only; its shape follows `--log-format`).
    pub access_log: crate::access_log::Settings,
    /// Where spans are exported (OTLP/HTTP, the traces URL itself), if anywhere.
    pub otlp_endpoint: Option<Url>,
}

impl Config {
    /// Whether some route injects `credential`'s own token, so it is minted: a credential
    /// only token exchanges authenticate with mints nothing (its client may be allowed the
    /// exchange alone).
    pub fn mints(&self, credential: &str) -> bool {
        self.routes
            .iter()
            .any(|route| route.exchange.is_none() && route.credential == credential)
    }
}

/// Limits of the listener and of upstream calls (flags and environment only).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Longest wait for an upstream's response headers (504 after).
    pub upstream_timeout: Duration,
    /// Longest time for a client to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request header section (431 above).
    pub max_header_size: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Largest request body (413 above), if limited.
    pub max_body_size: Option<u64>,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// How long to keep serving, unready, between the shutdown signal and the drain.
    pub shutdown_delay: Duration,
}

impl Default for Limits {
    /// The flags' defaults, read from the flag definitions themselves (and the
    /// environment), so they are written down once.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let matches = GuardArgs::augment_args(clap::Command::new("defaults")).get_matches_from(["defaults"]);
        Self::from(&GuardArgs::from_arg_matches(&matches).expect("the flag defaults parse"))
    }
}

impl From<&GuardArgs> for Limits {
    fn from(args: &GuardArgs) -> Self {
        Self {
            upstream_timeout: args.upstream_timeout,
            header_read_timeout: args.header_read_timeout,
            max_header_size: args.max_header_size,
            max_connections: args.max_connections,
            max_body_size: args.max_body_size,
            shutdown_timeout: args.shutdown_timeout,
            shutdown_delay: args.shutdown_delay,
        }
    }
}

impl Default for crate::access_log::Settings {
    /// The flags' defaults (and the environment), as for [`Limits`].
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let matches =
            AccessLogArgs::augment_args(clap::Command::new("defaults")).get_matches_from(["defaults"]);
        Self::from(&AccessLogArgs::from_arg_matches(&matches).expect("the flag defaults parse"))
    }
}

impl From<&AccessLogArgs> for crate::access_log::Settings {
    /// The access log the flags describe, in the default shape (`main` sets the one of
    /// `--log-format`).
    fn from(args: &AccessLogArgs) -> Self {
        Self {
            enabled: args.access_log == Switch::On,
            sample: args.access_log_sample,
            buffer: usize::try_from(args.access_log_buffer).unwrap_or(usize::MAX),
            shape: crate::access_log::Shape::default(),
        }
    }
}

/// Where a token comes from, validated (files exist and parse). Equal definitions mint
/// the same tokens: a reload keeps the token cache of a credential whose definition it
/// finds unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// ZITADEL service user key: JWT profile grant.
    JwtProfile {
        /// The key file.
        key_file: PathBuf,
        /// Issuer and scopes.
        endpoint: EndpointConfig,
    },
    /// Client credentials with a client secret (HTTP Basic).
    ClientSecret {
        /// The client id.
        client_id: String,
        /// The file holding the secret.
        secret_file: PathBuf,
        /// Issuer and scopes.
        endpoint: EndpointConfig,
    },
    /// Client credentials with `private_key_jwt` (a ZITADEL application key).
    ClientKey {
        /// The client id.
        client_id: String,
        /// The application key file.
        key_file: PathBuf,
        /// Issuer and scopes.
        endpoint: EndpointConfig,
    },
    /// A token kept in a file.
    StaticToken {
        /// The file.
        token_file: PathBuf,
    },
}

/// Where, for what scopes and with which parameters tokens are requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The issuer as given (discovery states the exact string used as `aud`).
    pub issuer: String,
    /// Token endpoint override.
    pub token_endpoint: Option<Url>,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// More form fields for every token request (`token_params`, `--token-param`).
    pub params: Vec<(String, String)>,
}

impl EndpointConfig {
    fn endpoint(&self, http: reqwest::Client, tracer: Option<&crate::trace::Tracer>) -> Endpoint {
        Endpoint::new(http, self.issuer.clone(), self.token_endpoint.clone())
            .with_params(self.params.clone())
            .traced_by(tracer.cloned())
    }
}

/// A client proving itself with an application's or a service user's key.
fn key_client(key_file: &Path, kind: KeyKind) -> ClientAuth {
    ClientAuth::Assertion {
        key_file: WatchedFile::new(key_file),
        kind,
    }
}

/// A client proving itself with a secret.
fn secret_client(client_id: &str, secret_file: &Path) -> ClientAuth {
    ClientAuth::Secret {
        client_id: client_id.to_owned(),
        file: WatchedFile::new(secret_file),
    }
}

impl Credential {
    /// The token source for this credential, using `http` for the token endpoint, its
    /// requests in spans made by `tracer` when given.
    pub fn source(
        &self,
        http: reqwest::Client,
        tracer: Option<&crate::trace::Tracer>,
    ) -> Box<dyn TokenSource> {
        match self {
            Self::JwtProfile { key_file, endpoint } => Box::new(JwtProfileSource::new(
                key_file,
                endpoint.endpoint(http, tracer),
                &endpoint.scopes,
            )),
            Self::ClientSecret {
                client_id,
                secret_file,
                endpoint,
            } => Box::new(ClientCredentialsSource::new(
                secret_client(client_id, secret_file),
                endpoint.endpoint(http, tracer),
                &endpoint.scopes,
            )),
            Self::ClientKey {
                key_file, endpoint, ..
            } => Box::new(ClientCredentialsSource::new(
                key_client(key_file, KeyKind::Application),
                endpoint.endpoint(http, tracer),
                &endpoint.scopes,
            )),
            Self::StaticToken { token_file } => Box::new(StaticTokenSource::new(token_file)),
        }
    }

    /// The token exchange of `exchange`, authenticated as this credential's client (a
    /// service user's key signs a client assertion too); `None` for a token file, which
    /// is no client (validation refuses it). Its requests are in spans made by `tracer`
    /// when given.
    pub fn exchanger(
        &self,
        http: reqwest::Client,
        tracer: Option<&crate::trace::Tracer>,
        exchange: &ExchangeConfig,
    ) -> Option<Exchanger> {
        let (client, endpoint) = match self {
            Self::JwtProfile { key_file, endpoint } => {
                (key_client(key_file, KeyKind::ServiceAccount), endpoint)
            }
            Self::ClientSecret {
                client_id,
                secret_file,
                endpoint,
            } => (secret_client(client_id, secret_file), endpoint),
            Self::ClientKey {
                key_file, endpoint, ..
            } => (key_client(key_file, KeyKind::Application), endpoint),
            Self::StaticToken { .. } => return None,
        };
        Some(Exchanger::new(
            client,
            endpoint.endpoint(http, tracer),
            exchange.audience.clone(),
            &exchange.scopes,
        ))
    }

    /// One line saying what this credential is, for `check` (no secrets; parameters by
    /// name only).
    pub fn describe(&self) -> String {
        let params = match self {
            Self::JwtProfile { endpoint, .. }
            | Self::ClientSecret { endpoint, .. }
            | Self::ClientKey { endpoint, .. } => &endpoint.params[..],
            Self::StaticToken { .. } => &[],
        };
        let mut line = self.describe_kind();
        if !params.is_empty() {
            let names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
            line.push_str(&format!(", token parameters {}", names.join(", ")));
        }
        line
    }

    fn describe_kind(&self) -> String {
        match self {
            Self::JwtProfile { key_file, endpoint } => {
                format!("service user key {} at {}", key_file.display(), endpoint.issuer)
            }
            Self::ClientSecret {
                client_id, endpoint, ..
            } => format!("client {client_id:?} with a client secret at {}", endpoint.issuer),
            Self::ClientKey {
                client_id,
                key_file,
                endpoint,
            } => format!(
                "client {client_id:?} with application key {} at {}",
                key_file.display(),
                endpoint.issuer
            ),
            Self::StaticToken { token_file } => format!("token file {}", token_file.display()),
        }
    }

    /// The files holding secrets, to warn when others can read them.
    fn secret_files(&self) -> Vec<&Path> {
        match self {
            Self::JwtProfile { key_file, .. } | Self::ClientKey { key_file, .. } => vec![key_file],
            Self::ClientSecret { secret_file, .. } => vec![secret_file],
            Self::StaticToken { token_file } => vec![token_file],
        }
    }
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix, normalised without a trailing slash (`""` is the root).
    pub prefix: String,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Where the route goes.
    pub upstream: Upstream,
    /// The credential's name: whose token is injected, or, with `exchange`, which
    /// authenticates the exchange as a client.
    pub credential: String,
    /// Exchange the caller's token rather than inject the credential's own.
    pub exchange: Option<ExchangeConfig>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowlists.
    pub policy: Policy,
    /// Speak HTTP/2 with prior knowledge (h2c) to the upstream.
    pub http2: bool,
}

/// A route's token exchange (RFC 8693): what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// The `audience` asked for, if any.
    pub audience: Option<String>,
    /// The scopes asked for; none: the issuer decides.
    pub scopes: Vec<String>,
}

/// Configuration that cannot be used: where, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct ConfigError {
    /// The key path (`routes[1].credential`), flag (`--upstream`) or file.
    pub at: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn new(at: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            reason: reason.into(),
        }
    }
}

/// Whether keys are named as in the file or as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File,
    Flags,
}

/// Names a key for error messages: `credentials.billing.client_id` or `--client-id`.
struct At<'a> {
    origin: Origin,
    prefix: &'a str,
}

impl At<'_> {
    fn key(&self, key: &str) -> String {
        match self.origin {
            Origin::File => format!("{}.{key}", self.prefix),
            Origin::Flags => match key {
                "scopes" => "--scope".to_owned(),
                "project_ids" => "--project-id".to_owned(),
                "headers" => "--header".to_owned(),
                "allow_methods" => "--allow-method".to_owned(),
                "allow_paths" => "--allow-path".to_owned(),
                "deny_paths" => "--deny-path".to_owned(),
                "token_params" => "--token-param".to_owned(),
                other => format!("--{}", other.replace('_', "-")),
            },
        }
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key(key), reason)
    }
}

impl ProxyArgs {
    /// Loads the configuration: the config file, or the single-upstream flags; `--listen`
    /// (flag or environment) wins over the file's `listen`.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let (raw, origin, base) = match &self.config {
            Some(file) => {
                let policy = &self.policy;
                let route_flags = !policy.allow_methods.is_empty()
                    || !policy.allow_paths.is_empty()
                    || !policy.deny_paths.is_empty();
                if self.upstream.is_some() || self.credential.any() || !self.headers.is_empty() || route_flags
                {
                    return Err(ConfigError::new(
                        "--config",
                        "cannot be combined with --upstream, credential, --header or allowlist flags: \
                         put the route in the file",
                    ));
                }
                let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
                (RawConfig::from_file(file)?, Origin::File, base)
            }
            None => (self.to_raw()?, Origin::Flags, PathBuf::new()),
        };
        let allow_remote = self.guard.allow_remote || raw.allow_remote;
        let mut config = validate(raw, origin, &base)?;
        if let Some(listen) = &self.listen {
            config.listen = listen.clone();
        }
        let tls = &self.listener_tls;
        config.inbound_tls = match (&tls.tls_cert, &tls.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::Inbound {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: tls.client_ca.clone(),
            }),
            _ => None,
        };
        config.trust = self.trust.to_trust();
        let mutual_tls = tls.client_ca.is_some();
        if !config.listen.is_local() && !allow_remote && !mutual_tls {
            return Err(ConfigError::new(
                "--listen",
                format!(
                    "{} is not a loopback address: whoever reaches it acts with the credentials' rights; \
                     pass --allow-remote (allow_remote = true) once a firewall or mTLS keeps strangers out",
                    config.listen
                ),
            ));
        }
        config.admin_listen = self.admin.admin_listen;
        if let Some(admin) = config.admin_listen {
            check_admin_listen(admin, &config.listen, allow_remote)?;
        }
        config.allow_hosts.extend(self.guard.allow_hosts.iter().cloned());
        config.limits = Limits::from(&self.guard);
        config.access_log = crate::access_log::Settings::from(&self.access_log);
        if let Some(url) = &self.tracing.otlp_endpoint {
            config.otlp_endpoint =
                Some(otlp_endpoint(url).map_err(|reason| ConfigError::new("--otlp-endpoint", reason))?);
        }
        Ok(config)
    }
}

/// The admin address must differ from the proxy's (its paths must never shadow proxied
/// ones) and, like it, stay on loopback unless remote access is allowed.
fn check_admin_listen(admin: SocketAddr, listen: &ListenAddr, allow_remote: bool) -> Result<(), ConfigError> {
    let overlapping = match listen {
        ListenAddr::Tcp(listen) => {
            let overlapping_ip =
                admin.ip() == listen.ip() || admin.ip().is_unspecified() || listen.ip().is_unspecified();
            admin.port() != 0 && admin.port() == listen.port() && overlapping_ip
        }
        ListenAddr::Unix(_) => false,
    };
    if overlapping {
        return Err(ConfigError::new(
            "--admin-listen",
            format!(
                "{admin} is the proxy's own address (--listen {listen}): give the admin listener \
                 another port, e.g. --admin-listen 127.0.0.1:9090"
            ),
        ));
    }
    if !admin.ip().is_loopback() && !allow_remote {
        return Err(ConfigError::new(
            "--admin-listen",
            format!(
                "{admin} is not a loopback address; pass --allow-remote (allow_remote = true) to \
                 expose health, readiness and metrics beyond this machine"
            ),
        ));
    }
    Ok(())
}

/// Validates a credential given as flags (for `mintproxy token`); `--issuer` is required
/// for every kind but a token file.
pub fn validate_credential_flags(raw: &RawCredential) -> Result<Credential, ConfigError> {
    let at = At {
        origin: Origin::Flags,
        prefix: "",
    };
    validate_credential(raw, &at, Path::new(""), None)
}

/// Validates the credential `name` of a config file (for `mintproxy token --config`);
/// without a name, the file's only credential.
pub fn credential_from_file(file: &Path, name: Option<&str>) -> Result<Credential, ConfigError> {
    let raw = RawConfig::from_file(file)?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let known: Vec<&str> = raw.credentials.keys().map(String::as_str).collect();
    let (name, credential) = match (name, &known[..]) {
        (Some(name), _) => raw.credentials.get_key_value(name).ok_or_else(|| {
            ConfigError::new(
                "--credential",
                format!("no credential {name:?} in {} (it has {known:?})", file.display()),
            )
        })?,
        (None, [_]) => raw.credentials.iter().next().expect("one credential"),
        (None, []) => {
            return Err(ConfigError::new(
                file.display().to_string(),
                "holds no [credentials.NAME] table",
            ))
        }
        (None, _) => {
            return Err(ConfigError::new(
                "--credential",
                format!(
                    "{} holds {} credentials ({known:?}): name one, e.g. --credential {}",
                    file.display(),
                    known.len(),
                    known[0]
                ),
            ))
        }
    };
    let prefix = format!("credentials.{name}");
    let at = At {
        origin: Origin::File,
        prefix: &prefix,
    };
    validate_credential(credential, &at, &base, None)
}

/// The traces URL of an OTLP/HTTP endpoint, by the OTLP exporter specification's rules: a
/// URL without a path is the collector's base (`/v1/traces` is added, as for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); one with a path is the traces URL itself (as
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). User info is refused: it would be a credential
/// in a setting that is logged.
fn otlp_endpoint(text: &str) -> Result<Url, String> {
    // The value is not quoted: it may hold a password.
    let mut url = Url::parse(text).map_err(|e| format!("not a URL ({e}), e.g. http://127.0.0.1:4318"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("not an http:// or https:// URL, e.g. http://127.0.0.1:4318".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds user info: give the collector's credentials in \
                    OTEL_EXPORTER_OTLP_HEADERS instead"
            .to_owned());
    }
    if url.path() == "/" {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

fn validate(raw: RawConfig, origin: Origin, base: &Path) -> Result<Config, ConfigError> {
    let listen = match &raw.listen {
        Some(text) => text
            .parse()
            .map_err(|reason: String| ConfigError::new("listen", reason))?,
        None => DEFAULT_LISTEN.parse().expect("the default address parses"),
    };
    if raw.routes.is_empty() {
        return Err(ConfigError::new(
            "routes",
            "at least one [[routes]] table is needed",
        ));
    }
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
    for (index, route) in raw.routes.iter().enumerate() {
        let prefix = format!("routes[{index}]");
        let at = At {
            origin,
            prefix: &prefix,
        };
        let route = validate_route(route, &at, &raw.credentials)?;
        if let Some(other) = routes.iter().position(|r| r.prefix == route.prefix) {
            return Err(at.error(
                "prefix",
                format!(
                    "duplicate prefix {:?} (also routes[{other}])",
                    raw.routes[index].prefix
                ),
            ));
        }
        routes.push(route);
    }
    let mut credentials = BTreeMap::new();
    for (name, credential) in &raw.credentials {
        let prefix = format!("credentials.{name}");
        let at = At {
            origin,
            prefix: &prefix,
        };
        // With flags, the issuer defaults to the origin of the one upstream.
        let default_issuer = (origin == Origin::Flags).then(|| routes[0].upstream.origin());
        let credential = validate_credential(credential, &at, base, default_issuer.as_deref())?;
        credentials.insert(name.clone(), credential);
    }
    Ok(Config {
        listen,
        admin_listen: None,
        allow_hosts: raw.allow_hosts,
        limits: Limits::default(),
        trust: crate::tls::Trust::default(),
        inbound_tls: None,
        credentials,
        routes,
        access_log: crate::access_log::Settings::default(),
        otlp_endpoint: raw
            .otlp_endpoint
            .as_deref()
            .map(otlp_endpoint)
            .transpose()
            .map_err(|reason| ConfigError::new("otlp_endpoint", reason))?,
    })
}

fn validate_route(
    raw: &RawRoute,
    at: &At<'_>,
    credentials: &BTreeMap<String, RawCredential>,
) -> Result<RouteConfig, ConfigError> {
    if !raw.prefix.starts_with('/') {
        return Err(at.error("prefix", format!("{:?} must start with /", raw.prefix)));
    }
    let upstream = Upstream::parse(&raw.upstream).map_err(|e| at.error("upstream", e.to_string()))?;
    let (credential, exchange) = match (&raw.credential, &raw.exchange) {
        (Some(name), None) => {
            if !credentials.contains_key(name) {
                let reason = if at.origin == Origin::Flags {
                    "give one of --key-file, --client-secret-file, --client-key-file or --token-file".to_owned()
                } else {
                    format!("unknown credential {name:?}")
                };
                return Err(at.error("credential", reason));
            }
            (name.clone(), None)
        }
        (None, Some(exchange)) => validate_exchange(exchange, at, credentials)?,
        (Some(_), Some(_)) => {
            return Err(at.error(
                "exchange",
                format!(
                    "cannot be combined with {}: a route injects its credential's token or exchanges the caller's, not both",
                    at.key("credential")
                ),
            ))
        }
        (None, None) => {
            return Err(at.error(
                "credential",
                format!(
                    "is required, or {} = {{ credential = \"NAME\" }} to exchange the caller's token",
                    at.key("exchange")
                ),
            ))
        }
    };
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        // Only the name is quoted: a header value may be a secret.
        let fail = |reason: &str| at.error("headers", format!("{name:?}: {reason}"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| fail("invalid header name"))?;
        if name == http::header::AUTHORIZATION || name == http::header::HOST {
            return Err(fail("mintproxy sets this header itself"));
        }
        let value = HeaderValue::from_str(value).map_err(|_| fail("invalid header value"))?;
        // Names differing only in case are one header: the last one given wins.
        headers.retain(|(earlier, _)| *earlier != name);
        headers.push((name, value));
    }
    let methods = raw
        .allow_methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| at.error("allow_methods", format!("{m:?} is not an HTTP method")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let paths = |key: &str, list: &[String]| {
        list.iter()
            .map(|p| {
                if !p.starts_with('/') {
                    return Err(at.error(key, format!("{p:?} must start with /")));
                }
                // Requests are checked in their normal form, so a rule must be written in it.
                match crate::proxy::normalize::normalize(p) {
                    Ok(normal) if normal == *p => Ok(p.clone()),
                    Ok(normal) => Err(at.error(
                        key,
                        format!(
                            "{p:?} is not in normal form (requests are checked as {normal:?}); write it so"
                        ),
                    )),
                    Err(ambiguous) => Err(at.error(key, format!("{p:?} has {ambiguous}"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(RouteConfig {
        prefix: raw.prefix.trim_end_matches('/').to_owned(),
        strip_prefix: raw.strip_prefix,
        upstream,
        credential,
        exchange,
        http2: raw.http2,
        headers,
        policy: Policy::new(
            methods,
            paths("allow_paths", &raw.allow_paths)?,
            paths("deny_paths", &raw.deny_paths)?,
        ),
    })
}

/// Validates a route's `exchange`: its credential must be a client (not a token file).
fn validate_exchange(
    raw: &RawExchange,
    at: &At<'_>,
    credentials: &BTreeMap<String, RawCredential>,
) -> Result<(String, Option<ExchangeConfig>), ConfigError> {
    let name = &raw.credential;
    match credentials.get(name) {
        None => return Err(at.error("exchange.credential", format!("unknown credential {name:?}"))),
        Some(credential) if credential.token_file.is_some() => {
            return Err(at.error(
                "exchange.credential",
                format!(
                    "credential {name:?} is a token file, not a client: an exchange authenticates with \
                     client_secret_file, client_key_file or key_file"
                ),
            ))
        }
        Some(_) => {}
    }
    if raw.audience.as_deref().is_some_and(str::is_empty) {
        return Err(at.error(
            "exchange.audience",
            "is empty: leave it out, or name the audience",
        ));
    }
    let exchange = ExchangeConfig {
        audience: raw.audience.clone(),
        scopes: raw.scope.iter().filter(|s| !s.is_empty()).cloned().collect(),
    };
    Ok((name.clone(), Some(exchange)))
}

/// Validates a credential, and warns when others can read its files: every command that
/// uses a credential comes through here.
fn validate_credential(
    raw: &RawCredential,
    at: &At<'_>,
    base: &Path,
    default_issuer: Option<&str>,
) -> Result<Credential, ConfigError> {
    let credential = validate_credential_fields(raw, at, base, default_issuer)?;
    for file in credential.secret_files() {
        warn_if_readable_by_others(file);
    }
    Ok(credential)
}

fn validate_credential_fields(
    raw: &RawCredential,
    at: &At<'_>,
    base: &Path,
    default_issuer: Option<&str>,
) -> Result<Credential, ConfigError> {
    let resolve = |path: &PathBuf| base.join(path);
    let kinds = [
        raw.key_file.as_ref().map(|_| "key_file"),
        raw.client_secret_file.as_ref().map(|_| "client_secret_file"),
        raw.client_key_file.as_ref().map(|_| "client_key_file"),
        raw.token_file.as_ref().map(|_| "token_file"),
    ];
    let given: Vec<String> = kinds.iter().flatten().map(|k| at.key(k)).collect();
    let kind = match kinds.iter().flatten().collect::<Vec<_>>()[..] {
        [kind] => *kind,
        [] => {
            return Err(ConfigError::new(
                at.prefix_or("credential"),
                format!(
                    "no credential: give one of {}, {}, {} or {}",
                    at.key("key_file"),
                    at.key("client_secret_file"),
                    at.key("client_key_file"),
                    at.key("token_file")
                ),
            ))
        }
        _ => {
            return Err(ConfigError::new(
                at.prefix_or("credential"),
                format!(
                    "ambiguous credential: {} given, exactly one is needed",
                    given.join(" and ")
                ),
            ))
        }
    };
    if kind == "token_file" {
        if !raw.token_params.is_empty() {
            return Err(at.error(
                "token_params",
                format!(
                    "a token file makes no token request to send them with; they need {}, {} or {}",
                    at.key("key_file"),
                    at.key("client_secret_file"),
                    at.key("client_key_file")
                ),
            ));
        }
        let token_file = resolve(raw.token_file.as_ref().expect("kind says present"));
        check_secret_file(&token_file, at, "token_file")?;
        return Ok(Credential::StaticToken { token_file });
    }
    let endpoint = validate_endpoint(raw, at, default_issuer)?;
    match kind {
        "key_file" => {
            if raw.client_id.is_some() {
                return Err(at.error("client_id", format!("is not used with {}", at.key("key_file"))));
            }
            let key_file = resolve(raw.key_file.as_ref().expect("kind says present"));
            SigningKey::from_file(&key_file, KeyKind::ServiceAccount)
                .map_err(|e| at.error("key_file", e.to_string()))?;
            Ok(Credential::JwtProfile { key_file, endpoint })
        }
        "client_secret_file" => {
            let client_id = raw.client_id.clone().filter(|id| !id.is_empty()).ok_or_else(|| {
                at.error(
                    "client_id",
                    format!("is required with {}", at.key("client_secret_file")),
                )
            })?;
            let secret_file = resolve(raw.client_secret_file.as_ref().expect("kind says present"));
            check_secret_file(&secret_file, at, "client_secret_file")?;
            Ok(Credential::ClientSecret {
                client_id,
                secret_file,
                endpoint,
            })
        }
        _ => {
            let key_file = resolve(raw.client_key_file.as_ref().expect("kind says present"));
            let key = SigningKey::from_file(&key_file, KeyKind::Application)
                .map_err(|e| at.error("client_key_file", e.to_string()))?;
            let client_id = match &raw.client_id {
                Some(id) if *id != key.subject => {
                    return Err(at.error(
                        "client_id",
                        format!("{id:?} differs from the key file's clientId {:?}", key.subject),
                    ))
                }
                _ => key.subject,
            };
            Ok(Credential::ClientKey {
                client_id,
                key_file,
                endpoint,
            })
        }
    }
}

impl At<'_> {
    /// The credential's own path (`credentials.billing`), or `credential` for flags.
    fn prefix_or(&self, flags_name: &str) -> String {
        match self.origin {
            Origin::File => self.prefix.to_owned(),
            Origin::Flags => flags_name.to_owned(),
        }
    }
}

fn validate_endpoint(
    raw: &RawCredential,
    at: &At<'_>,
    default_issuer: Option<&str>,
) -> Result<EndpointConfig, ConfigError> {
    let issuer = raw
        .issuer
        .clone()
        .or_else(|| default_issuer.map(str::to_owned))
        .ok_or_else(|| at.error("issuer", "is required (the URL of your ZITADEL instance)"))?;
    let parsed =
        Url::parse(&issuer).map_err(|e| at.error("issuer", format!("{issuer:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(at.error("issuer", format!("{issuer:?} must be an http or https URL")));
    }
    let token_endpoint = raw
        .token_endpoint
        .as_deref()
        .map(|url| {
            Url::parse(url).map_err(|e| at.error("token_endpoint", format!("{url:?} is not a URL: {e}")))
        })
        .transpose()?;
    let mut scopes: Vec<String> = match &raw.scopes {
        Some(scopes) => scopes.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None => default_scopes(),
    };
    for id in raw.project_ids.iter().filter(|id| !id.is_empty()) {
        scopes.push(format!("urn:zitadel:iam:org:project:id:{id}:aud"));
    }
    Ok(EndpointConfig {
        issuer,
        token_endpoint,
        scopes,
        params: validate_token_params(&raw.token_params, at)?,
    })
}

/// The fields a grant sends itself (or a prefix of them): a parameter must not replace or
/// repeat one. Compared without regard to case.
const GRANT_FIELDS: [&str; 5] = ["grant_type", "assertion", "client_id", "client_secret", "scope"];
const GRANT_FIELD_PREFIXES: [&str; 3] = ["client_assertion", "subject_token", "actor_token"];

fn validate_token_params(
    params: &[(String, String)],
    at: &At<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    for (name, _) in params {
        let path = match at.origin {
            Origin::File => format!("{}.token_params.{name}", at.prefix),
            Origin::Flags => at.key("token_params"),
        };
        let lower = name.to_ascii_lowercase();
        let grants_own = GRANT_FIELDS.contains(&lower.as_str())
            || GRANT_FIELD_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix));
        if name.is_empty() {
            return Err(ConfigError::new(path, "a parameter needs a name"));
        }
        if grants_own {
            let hint = if lower == "scope" {
                format!("; give scopes with {}", at.key("scopes"))
            } else {
                String::new()
            };
            return Err(ConfigError::new(
                path,
                format!(
                    "{name:?} is a field the grant sends itself (grant_type, assertion, client_assertion*, \
                     client_id, client_secret, scope, subject_token*, actor_token*){hint}"
                ),
            ));
        }
    }
    Ok(params.to_vec())
}

/// A secret or token file must be readable and not empty; its contents are never quoted.
fn check_secret_file(path: &Path, at: &At<'_>, key: &str) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| at.error(key, format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(at.error(key, format!("{} is empty", path.display())));
    }
    Ok(())
}

/// Key hygiene: a secret file that group or others can read is worth a warning.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "credential file is readable by group or others; restrict it: chmod 600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}
