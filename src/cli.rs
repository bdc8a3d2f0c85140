//! The command line: commands and flags. Every flag also reads `MINTPROXY_<FLAG>`; a flag
//! wins over the environment, which wins over the config file.
// The doc comments here are clap's `--help` text, written for a terminal, not rustdoc:
// `[::1]` and bare URLs are meant literally.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::server::ListenAddr;

/// Authenticating reverse proxy: send plain HTTP, it forwards with
/// `Authorization: Bearer <token>` minted from a ZITADEL service user's key.
#[derive(Debug, Parser)]
#[command(name = "mintproxy", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log lines on stderr as text (for people) or JSON (one object per line, for log
    /// collectors). The level comes from RUST_LOG.
    #[arg(long, global = true, env = "MINTPROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, display_order = 1000)]
    pub log_format: LogFormat,

    /// Worker threads for the async runtime (default: the CPUs this process may run on,
    /// so `taskset -c 0 mintproxy ...` gets one). With 1, everything runs on the main
    /// thread, which is the fastest way to use one core.
    #[arg(long, global = true, env = "MINTPROXY_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..), display_order = 1001)]
    pub threads: Option<u16>,
}

impl Cli {
    /// The runtime's worker thread count: `--threads`, or the CPUs this process may use.
    pub fn worker_threads(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            usize::from,
        )
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: one upstream from flags, or the routes of a config file.
    ///
    /// Example: `mintproxy serve --upstream https://my-instance.zitadel.cloud --key-file sa.json`
    Serve(ProxyArgs),
    /// Print a token for scripts, minted or from the on-disk cache: export TOKEN=$(mintproxy token ...)
    Token(TokenArgs),
    /// Run a command with the proxy beside it (on 127.0.0.1, a free port), its address in
    /// MINTPROXY_URL; exits with the command's status.
    ///
    /// Example: mintproxy exec --upstream https://my-instance.zitadel.cloud --key-file sa.json -- sh -c 'curl "$MINTPROXY_URL/auth/v1/users/me"'
    Exec(ExecArgs),
    /// Validate the configuration and every key file; --online also mints each credential once.
    ///
    /// Example: mintproxy check --config mintproxy.toml --online
    Check(CheckArgs),
    /// Run everything on this machine (stand-in issuer, echo upstream, proxy) and show a
    /// request going through. No ZITADEL needed.
    Demo(DemoArgs),
}

/// Which credential, at which issuer, with which scopes. Give exactly one of
/// `--key-file`, `--client-secret-file`, `--client-key-file` or `--token-file`.
#[derive(Debug, Clone, Default, Args)]
pub struct CredentialArgs {
    /// A ZITADEL service user's key file, as the console downloads it (JSON with keyId,
    /// key, userId), e.g. --key-file zitadel-admin-sa.json.
    #[arg(long, env = "MINTPROXY_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Client id for the client credentials grant, with --client-secret-file or
    /// --client-key-file, e.g. --client-id billing-svc.
    #[arg(long, env = "MINTPROXY_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,

    /// File holding the client secret (sent with HTTP Basic), e.g. --client-secret-file secret.txt.
    #[arg(long, env = "MINTPROXY_CLIENT_SECRET_FILE", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// A ZITADEL application key file (private_key_jwt), e.g. --client-key-file app-key.json.
    #[arg(long, env = "MINTPROXY_CLIENT_KEY_FILE", value_name = "PATH")]
    pub client_key_file: Option<PathBuf>,

    /// File holding a ready token (e.g. a ZITADEL personal access token); re-read when it
    /// changes, e.g. --token-file pat.txt.
    #[arg(long, env = "MINTPROXY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The issuer (your ZITADEL instance), e.g. `https://my-instance.zitadel.cloud`.
    /// Default for `serve`: the upstream's origin.
    #[arg(long, env = "MINTPROXY_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,

    /// Scopes to request, replacing the default
    /// "openid urn:zitadel:iam:org:project:id:zitadel:aud". Repeat or separate by spaces.
    #[arg(
        long = "scope",
        env = "MINTPROXY_SCOPE",
        value_name = "SCOPE",
        value_delimiter = ' '
    )]
    pub scopes: Vec<String>,

    /// Adds the audience of your own project: urn:zitadel:iam:org:project:id:ID:aud,
    /// e.g. --project-id 263553227378802691.
    #[arg(
        long = "project-id",
        env = "MINTPROXY_PROJECT_ID",
        value_name = "ID",
        value_delimiter = ' '
    )]
    pub project_ids: Vec<String>,

    /// Token endpoint URL, skipping OIDC discovery,
    /// e.g. `--token-endpoint https://my-instance.zitadel.cloud/oauth/v2/token`.
    #[arg(long, env = "MINTPROXY_TOKEN_ENDPOINT", value_name = "URL")]
    pub token_endpoint: Option<String>,

    /// A form field sent with every token request, e.g. --token-param audience=billing-api
    /// or --token-param resource=https://api.example. Repeatable; in the environment, one
    /// per line.
    #[arg(
        long = "token-param",
        env = "MINTPROXY_TOKEN_PARAM",
        value_name = "NAME=VALUE",
        value_delimiter = '\n',
        value_parser = parse_token_param
    )]
    pub token_params: Vec<(String, String)>,
}

/// Reads `NAME=VALUE`; the value is never quoted back (it may be sensitive).
fn parse_token_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err("expected NAME=VALUE, e.g. audience=billing-api".to_owned()),
    }
}

impl CredentialArgs {
    /// Whether any credential flag was given.
    pub fn any(&self) -> bool {
        self.key_file.is_some()
            || self.client_id.is_some()
            || self.client_secret_file.is_some()
            || self.client_key_file.is_some()
            || self.token_file.is_some()
            || self.issuer.is_some()
            || !self.scopes.is_empty()
            || !self.project_ids.is_empty()
            || self.token_endpoint.is_some()
            || !self.token_params.is_empty()
    }
}

/// Per-route allowlists (the single route of the flags).
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Only these methods are forwarded (others get 403), e.g. --allow-method GET.
    #[arg(
        long = "allow-method",
        env = "MINTPROXY_ALLOW_METHOD",
        value_name = "METHOD",
        value_delimiter = ','
    )]
    pub allow_methods: Vec<String>,

    /// Only paths under these prefixes are forwarded, e.g. --allow-path /management/v1/.
    #[arg(
        long = "allow-path",
        env = "MINTPROXY_ALLOW_PATH",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub allow_paths: Vec<String>,

    /// Paths under these prefixes are refused, e.g. --deny-path /admin/.
    #[arg(
        long = "deny-path",
        env = "MINTPROXY_DENY_PATH",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub deny_paths: Vec<String>,
}

/// What defines the proxy: a config file, or one upstream and its credential as flags.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// TOML config file with credentials and routes (see docs/configuration.md), e.g. --config mintproxy.toml.
    #[arg(long, env = "MINTPROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on (default 127.0.0.1:8080), e.g. localhost:8080 or [::1]:8080; port
    /// 0 picks a free port and prints it; `unix:/run/mintproxy.sock` listens on a Unix socket
    /// (created owner-only).
    #[arg(long, env = "MINTPROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<ListenAddr>,

    /// Where every request goes, e.g. `https://my-instance.zitadel.cloud`.
    #[arg(long, env = "MINTPROXY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    /// Speak HTTP/2 with prior knowledge (h2c) to a plaintext upstream, e.g. a gRPC server
    /// or a local ZITADEL without TLS. (Over TLS, HTTP/2 is negotiated by ALPN anyway.)
    #[arg(long, env = "MINTPROXY_UPSTREAM_HTTP2")]
    pub upstream_http2: bool,

    /// The credential.
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// Extra header on every upstream request, e.g. --header 'x-zitadel-orgid: 1234'.
    /// Repeatable; in the environment, one per line.
    #[arg(
        long = "header",
        env = "MINTPROXY_HEADER",
        value_name = "'NAME: VALUE'",
        value_delimiter = '\n'
    )]
    pub headers: Vec<String>,

    /// Allowlists.
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Who may connect, and limits.
    #[command(flatten)]
    pub guard: GuardArgs,

    /// TLS towards upstreams and token endpoints.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// TLS on the listener.
    #[command(flatten)]
    pub listener_tls: ListenerTlsArgs,

    /// The admin listener.
    #[command(flatten)]
    pub admin: AdminArgs,

    /// The access log.
    #[command(flatten)]
    pub access_log: AccessLogArgs,

    /// Span export.
    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// Span export.
#[derive(Debug, Clone, Default, Args)]
pub struct TracingArgs {
    /// Export spans of proxied requests and token fetches over OTLP/HTTP (protobuf) to this
    /// collector: e.g. http://127.0.0.1:4318 (spans go to /v1/traces), or a URL with a path,
    /// used as it is. Replaces the config file's otlp_endpoint.
    #[arg(long, env = "MINTPROXY_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// The access log: one line per request on stderr.
#[derive(Debug, Clone, Args)]
pub struct AccessLogArgs {
    /// One line per request on stderr (method, path without the query, status, duration,
    /// route), in the --log-format, as target mintproxy::access at RUST_LOG level info.
    /// Written by a background thread in large writes, never waited for: `off` saves its
    /// CPU and volume altogether.
    #[arg(long = "access-log", env = "MINTPROXY_ACCESS_LOG", value_enum, value_name = "on|off", hide_possible_values = true, default_value_t = Switch::On)]
    pub access_log: Switch,

    /// Log only this share of requests, picked at random, e.g. 0.1 for one in ten; 0 logs
    /// failures only. Failures are always logged: a status of 500 or above, or an answer
    /// of the proxy's own (refused, no token, upstream unreachable or too slow).
    #[arg(long, env = "MINTPROXY_ACCESS_LOG_SAMPLE", value_name = "SHARE", default_value = "1", value_parser = parse_share)]
    pub access_log_sample: f64,

    /// Bytes of access lines held for the writer thread. When stderr does not keep up
    /// and they fill it, lines are dropped (counted in mintproxy_access_log_dropped_total)
    /// rather than slowing requests down.
    #[arg(long, env = "MINTPROXY_ACCESS_LOG_BUFFER", value_name = "BYTES", default_value_t = crate::access_log::DEFAULT_BUFFER as u64, value_parser = clap::value_parser!(u64).range(1024..))]
    pub access_log_buffer: u64,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Reads a share from 0 to 1: `0.1`, `1`, `0`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{text:?} is not a share from 0 to 1, e.g. 0.1 for one request in ten"
        )),
    }
}

/// Exposure and limits of the listener and of upstream calls.
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// Accept a non-loopback --listen (or --admin-listen) address. Whoever reaches the
    /// proxy acts as the service user, so put it behind a firewall or mTLS first.
    #[arg(long, env = "MINTPROXY_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Another accepted Host (and Origin) name, besides localhost, 127.0.0.1 and `[::1]` on
    /// the listen port: e.g. --allow-host proxy.internal or --allow-host proxy.internal:8080.
    /// `*` accepts any Host (turns off the DNS-rebinding guard; for non-browser callers).
    #[arg(
        long = "allow-host",
        env = "MINTPROXY_ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,

    /// Longest wait for an upstream's response headers before answering 504, e.g. 30s, 500ms, 5m.
    #[arg(long, env = "MINTPROXY_UPSTREAM_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Longest time a client may take to send its request headers (slow or silent
    /// connections are closed; on plain HTTP/1.1 also idle ones, after one to two times
    /// this), e.g. 10s.
    #[arg(long, env = "MINTPROXY_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request header section in bytes; larger gets 431.
    #[arg(long, env = "MINTPROXY_MAX_HEADER_SIZE", value_name = "BYTES", default_value_t = 16 * 1024)]
    pub max_header_size: usize,

    /// Most connections served at once; more wait in the kernel's accept queue.
    #[arg(
        long,
        env = "MINTPROXY_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_connections: usize,

    /// Largest request body in bytes; larger gets 413. Default: no limit (bodies stream).
    #[arg(long, env = "MINTPROXY_MAX_BODY_SIZE", value_name = "BYTES")]
    pub max_body_size: Option<u64>,

    /// How long in-flight requests may finish after SIGTERM or SIGINT, e.g. 30s.
    #[arg(long, env = "MINTPROXY_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// After SIGTERM or SIGINT, keep serving this long with /readyz at 503 before the
    /// drain, so Kubernetes takes the Pod out of its Service first, e.g. 5s.
    #[arg(long, env = "MINTPROXY_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
}

/// Reads `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s or 5m"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        other => Err(format!("unknown unit {other:?} in {text:?}: use ms, s, m or h")),
    }
}

/// How upstream and token endpoint certificates are checked.
#[derive(Debug, Clone, Default, Args)]
pub struct TrustArgs {
    /// Also trust this CA (PEM) for upstreams and token endpoints, e.g. the self-signed CA
    /// of a ZITADEL in a cluster: --upstream-ca ca.pem.
    #[arg(long, env = "MINTPROXY_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// Do not check upstream and token endpoint certificates at all. Development only:
    /// anyone on the path can then read the tokens.
    #[arg(long, env = "MINTPROXY_INSECURE_SKIP_VERIFY")]
    pub insecure_skip_verify: bool,
}

impl TrustArgs {
    /// The trust settings these flags describe.
    pub fn to_trust(&self) -> crate::tls::Trust {
        crate::tls::Trust {
            extra_ca: self.upstream_ca.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

/// TLS on the listener, and client certificates (mTLS).
#[derive(Debug, Clone, Default, Args)]
pub struct ListenerTlsArgs {
    /// Serve TLS with this certificate chain (PEM), e.g. --tls-cert proxy.crt --tls-key proxy.key.
    #[arg(long, env = "MINTPROXY_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "MINTPROXY_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates issued by this CA (mTLS); with it, a non-loopback
    /// --listen needs no --allow-remote.
    #[arg(long, env = "MINTPROXY_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

/// Flags of `mintproxy token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The credential (`--issuer` is required here, except for --token-file).
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// Take the credential from this config file instead, e.g. --config mintproxy.toml
    /// (its only credential) or --config mintproxy.toml --credential zitadel.
    #[arg(long, env = "MINTPROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The credential's name in the config file (needed when it holds several).
    #[arg(
        long = "credential",
        env = "MINTPROXY_CREDENTIAL",
        value_name = "NAME",
        requires = "config"
    )]
    pub credential_name: Option<String>,

    /// Certificate checks for the token endpoint.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// raw: the token alone; header: "Authorization: Bearer ..."; json: token, type, expiry,
    /// scopes; exec-credential: kubectl's ExecCredential, for a kubeconfig `exec` plugin.
    #[arg(long, env = "MINTPROXY_FORMAT", value_enum, default_value_t = TokenFormat::Raw)]
    pub format: TokenFormat,

    /// Mint a new token, neither reading nor writing the token cache (by default a token
    /// is kept in $XDG_CACHE_HOME/mintproxy, or ~/.cache/mintproxy, and reused while at
    /// least 5 minutes and a tenth of its lifetime are left).
    #[arg(long, env = "MINTPROXY_NO_CACHE")]
    pub no_cache: bool,
}

/// Flags of `mintproxy exec`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("listen", |arg| arg.help(
    "Address to listen on (default 127.0.0.1 with a free port, which MINTPROXY_URL names); \
     `unix:/path` listens on a Unix socket"
)))]
pub struct ExecArgs {
    /// The proxy, as for `serve`; it listens on 127.0.0.1 with a free port unless --listen
    /// says otherwise (the config file's `listen` is not used).
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Also put a token in MINTPROXY_TOKEN: a snapshot taken at start, never renewed (a
    /// long-running command should send its requests through MINTPROXY_URL instead).
    /// Needs a single credential.
    #[arg(long, env = "MINTPROXY_EXPORT_TOKEN")]
    pub export_token: bool,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How `mintproxy token` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// The bare access token and a newline.
    Raw,
    /// An `Authorization: Bearer ...` header line.
    Header,
    /// A JSON object with access_token, token_type, expires_in and scope.
    Json,
    /// kubectl's ExecCredential (client.authentication.k8s.io/v1) with the token and its
    /// expirationTimestamp.
    ExecCredential,
}

/// Flags of `mintproxy check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The configuration to check.
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Also mint one token per credential and show its expiry and scopes (never the token).
    #[arg(long, env = "MINTPROXY_ONLINE")]
    pub online: bool,
}

/// Flags of `mintproxy demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Send one request, print what happened, and exit.
    #[arg(long, env = "MINTPROXY_ONCE")]
    pub once: bool,

    /// Where the demo proxy listens (default 127.0.0.1:8080, or any free port with --once
    /// or when 8080 is taken), e.g. localhost:8081.
    #[arg(long, env = "MINTPROXY_LISTEN", value_name = "ADDR", value_parser = crate::server::parse_tcp_addr)]
    pub listen: Option<SocketAddr>,
}

/// The admin listener: health, readiness and metrics.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// Serve /healthz, /readyz and /metrics (Prometheus) on this address, e.g.
    /// --admin-listen 127.0.0.1:9090. A non-loopback address needs --allow-remote. Default: off.
    #[arg(long, env = "MINTPROXY_ADMIN_LISTEN", value_name = "ADDR", value_parser = crate::server::parse_tcp_addr)]
    pub admin_listen: Option<SocketAddr>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_share};
    use std::time::Duration;

    #[test]
    fn shares_run_from_0_to_1() {
        assert_eq!(parse_share("0.1"), Ok(0.1));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert_eq!(parse_share("0"), Ok(0.0));
        for bad in ["1.5", "-0.1", "NaN", "ten", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("5d").unwrap_err(),
            "unknown unit \"d\" in \"5d\": use ms, s, m or h"
        );
        assert!(parse_duration("fast").is_err());
    }
}
