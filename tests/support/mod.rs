//! Test harness: the stand-in issuer (which verifies assertions as ZITADEL does and counts
//! token requests), upstreams, key files, and the proxy started on port 0.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mintproxy::cli::{Cli, Command};
use mintproxy::config::Config;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::issuer::Issuer;
use mintproxy::demo::keygen::GeneratedKey;
use mintproxy::server;
use mintproxy::token::RefreshPolicy;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An issuer with one registered service-user key, and that key as a file.
pub struct Issued {
    pub issuer: Arc<Issuer>,
    pub key: GeneratedKey,
    pub dir: TempDir,
    pub key_file: PathBuf,
}

impl Issued {
    /// `--upstream URL --key-file F --issuer ISSUER`: the single-upstream flags for this key.
    pub fn flags<'a>(&'a self, upstream: &'a str) -> Vec<&'a str> {
        let key_file = self.key_file.to_str().expect("temp paths are UTF-8");
        vec![
            "--upstream",
            upstream,
            "--key-file",
            key_file,
            "--issuer",
            self.issuer.url(),
        ]
    }
}

/// Starts the stand-in issuer and registers a fresh key, written to a key file.
pub async fn issuer() -> Issued {
    let issuer = Issuer::start(local_listener().await).unwrap();
    let key = GeneratedKey::new("test-key", "test-user");
    issuer.register_key(&key.key_id, &key.subject, &key.public_key_der());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("service-user.json");
    std::fs::write(&key_file, key.key_json()).unwrap();
    Issued {
        issuer,
        key,
        dir,
        key_file,
    }
}

pub async fn local_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A refresh policy with short backoff, so recovery tests take milliseconds.
pub fn fast_policy() -> RefreshPolicy {
    RefreshPolicy {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ..RefreshPolicy::default()
    }
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Parses `mintproxy serve` flags as the binary would (plus `--listen 127.0.0.1:0`).
pub fn serve_config(flags: &[&str]) -> Config {
    try_serve_config(flags).unwrap()
}

/// Like [`serve_config`], returning the configuration error as the user would see it.
pub fn try_serve_config(flags: &[&str]) -> Result<Config, String> {
    try_serve_config_on("127.0.0.1:0", flags)
}

/// Like [`try_serve_config`], listening on `listen` (e.g. `unix:/path`).
pub fn try_serve_config_on(listen: &str, flags: &[&str]) -> Result<Config, String> {
    let mut args = vec!["mintproxy", "serve", "--listen", listen];
    args.extend_from_slice(flags);
    match Cli::try_parse_from(args).map_err(|e| e.to_string())?.command {
        Command::Serve(serve) => serve.load().map_err(|e| e.to_string()),
        _ => unreachable!(),
    }
}

/// Starts the proxy for an already validated configuration.
pub async fn start(config: &Config, policy: RefreshPolicy) -> Proxy {
    let listener = local_listener().await;
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let proxy = mintproxy::app::build_proxy(config, Some(addr), policy, stop.clone()).unwrap();
    let shutdown = stop.clone().cancelled_owned();
    let options = mintproxy::app::server_options(config).unwrap();
    tokio::spawn(server::serve(listener.into(), proxy, options, shutdown));
    Proxy { addr, stop }
}

/// Starts the proxy for `upstream` with the issued key.
pub async fn proxy(issued: &Issued, upstream: &str, extra: &[&str]) -> Proxy {
    proxy_with_policy(issued, upstream, extra, fast_policy()).await
}

pub async fn proxy_with_policy(
    issued: &Issued,
    upstream: &str,
    extra: &[&str],
    policy: RefreshPolicy,
) -> Proxy {
    let mut flags = issued.flags(upstream);
    if extra.contains(&"--issuer") {
        flags.truncate(4); // the caller names its own issuer
    }
    flags.extend_from_slice(extra);
    start(&serve_config(&flags), policy).await
}

/// The issuer, the echo upstream (accepting the issuer's tokens) and the proxy before it.
pub struct Stack {
    pub issued: Issued,
    pub echo: Arc<Echo>,
    pub proxy: Proxy,
}

pub async fn stack() -> Stack {
    let issued = issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = proxy(&issued, echo.url(), &[]).await;
    Stack { issued, echo, proxy }
}

/// A plain HTTP client, as a legacy tool would be.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A complete response.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response: Response<_> = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(
        Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Writes raw bytes and reads until the server closes: for requests a client library
/// would refuse to send.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// What one finished run of the `mintproxy` binary produced.
#[derive(Debug)]
pub struct BinaryRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// The `mintproxy` binary in an environment cleared of `MINTPROXY_*` and `RUST_LOG` (so
/// the developer's shell cannot change what a test sees), killed when dropped.
pub fn binary() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mintproxy"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MINTPROXY_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").kill_on_drop(true);
    command
}

/// Runs the [`binary`] with `args` and `env` added, to completion, failing the test if it
/// takes over 60 s. Each run has a token cache of its own (`XDG_CACHE_HOME`, unless `env`
/// names one): tests share key ids, and issuers reuse ports.
pub async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> BinaryRun {
    let cache = tempfile::tempdir().unwrap();
    let mut command = binary();
    command
        .env("XDG_CACHE_HOME", cache.path())
        .args(args)
        .envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("mintproxy {args:?} did not finish within 60 s"))
        .expect("the mintproxy binary starts");
    BinaryRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a credential file readable by its owner only (mode 600 on Unix), creating
/// missing parent directories.
pub fn write_private(path: &std::path::Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A running proxy with metrics and its admin listener; dropping it stops both.
pub struct Operated {
    pub proxy: Proxy,
    pub admin: SocketAddr,
}

/// Starts the proxy for `config` as `serve --admin-listen` does, with the admin listener
/// on its own port 0.
pub async fn start_operated(config: &Config, policy: RefreshPolicy) -> Operated {
    use mintproxy::admin::{self, Admin};
    use mintproxy::metrics::Metrics;
    let listener = local_listener().await;
    let addr = listener.local_addr().unwrap();
    let admin_listener = local_listener().await;
    let admin_addr = admin_listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let built = mintproxy::app::build(
        config,
        Some(addr),
        policy,
        stop.clone(),
        Some(metrics.clone()),
        None,
    )
    .unwrap();
    let admin = Arc::new(Admin::new(built.caches, metrics));
    tokio::spawn(admin::serve(
        admin_listener,
        admin,
        stop.clone().cancelled_owned(),
    ));
    let options = mintproxy::app::server_options(config).unwrap();
    tokio::spawn(server::serve(
        listener.into(),
        built.proxy,
        options,
        stop.clone().cancelled_owned(),
    ));
    Operated {
        proxy: Proxy { addr, stop },
        admin: admin_addr,
    }
}

/// Writes `toml` as `mintproxy.toml` beside the issued key and loads it as `serve --config`
/// would, returning the configuration error as the user would see it.
pub fn file_config(issued: &Issued, toml: &str) -> Result<Config, String> {
    let file = issued.dir.path().join("mintproxy.toml");
    std::fs::write(&file, toml).unwrap();
    try_serve_config(&["--config", file.to_str().expect("temp paths are UTF-8")])
}

/// Writes a client secret file `name` beside the issued key; returns its name.
pub fn secret_file<'a>(issued: &Issued, name: &'a str, secret: &str) -> &'a str {
    write_private(&issued.dir.path().join(name), secret);
    name
}

/// A rustls server configuration (aws-lc-rs) serving the PEM certificate chain `cert` with
/// `key`, offering `alpn`.
pub fn tls_server_config(cert: &str, key: &str, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}
