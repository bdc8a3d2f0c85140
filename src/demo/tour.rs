//! The guided tour behind `mintproxy demo`: start every part, send a request, narrate.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::echo::Echo;
use super::issuer::Issuer;
use super::keygen::GeneratedKey;
use crate::app::{self, StartError};
use crate::cli::DemoArgs;
use crate::config::{default_scopes, Config, Credential, EndpointConfig, Limits, RouteConfig};
use crate::proxy::{Policy, Upstream};
use crate::server::{self, ListenAddr};

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A local socket could not be opened.
    #[error("cannot open a local socket: {0}")]
    Io(#[from] std::io::Error),
    /// The request through the proxy failed.
    #[error("the request through the proxy failed: {0}")]
    Request(String),
    /// The request went through but was not accepted.
    #[error("the request through the proxy answered {0}, expected 200 OK")]
    Status(StatusCode),
}

/// Runs the demo; with `--once`, exits after one request.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    println!("mintproxy demo: a stand-in issuer, an echo upstream and the proxy, all on 127.0.0.1.\n");

    let key = GeneratedKey::new("demo-key-1", "demo-service-user");
    println!(
        "1. Generated a 2048-bit RSA key for service user {:?} (keyId {:?}), in ZITADEL's key-file format.",
        key.subject, key.key_id
    );

    let issuer = Issuer::start(TcpListener::bind("127.0.0.1:0").await?)?;
    issuer.register_key(&key.key_id, &key.subject, &key.public_key_der());
    println!(
        "2. Stand-in issuer at {}: verifies each assertion as ZITADEL does (RS256 signature, kid,\n   iss = sub = user id, aud = issuer, iat/exp) and issues opaque tokens.",
        issuer.url()
    );

    let echo = Echo::start(TcpListener::bind("127.0.0.1:0").await?, issuer.clone())?;
    println!(
        "3. Echo upstream at {}: answers 401 unless the bearer was issued by the issuer, else echoes the request.",
        echo.url()
    );

    let key_dir = KeyDir::create()?;
    let key_file = key_dir.write("demo-service-user.json", &key.key_json())?;

    let (listener, moved) = bind_demo_listener(&args).await?;
    let addr = listener.local_addr()?;
    let config = Config {
        listen: ListenAddr::Tcp(addr),
        admin_listen: None,
        allow_hosts: Vec::new(),
        limits: Limits::default(),
        trust: crate::tls::Trust::default(),
        inbound_tls: None,
        credentials: [(
            "demo".to_owned(),
            Credential::JwtProfile {
                key_file,
                endpoint: EndpointConfig {
                    issuer: issuer.url().to_owned(),
                    token_endpoint: None,
                    scopes: default_scopes(),
                    params: Vec::new(),
                },
            },
        )]
        .into(),
        routes: vec![RouteConfig {
            prefix: String::new(),
            strip_prefix: false,
            upstream: Upstream::parse(echo.url()).expect("the echo's own URL parses"),
            credential: "demo".to_owned(),
            exchange: None,
            headers: Vec::new(),
            policy: Policy::default(),
            http2: false,
        }],
        access_log: crate::access_log::Settings::default(),
        otlp_endpoint: None,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let proxy = tokio::spawn(async move {
        let shutdown = async {
            tokio::select! {
                _ = stop_rx => {}
                () = server::shutdown_signal() => {}
            }
        };
        app::run_proxy(listener.into(), &config, shutdown).await
    });
    println!("4. Proxy at http://{addr}, pinned to the echo upstream; it discovers the token endpoint and mints a token.");
    if let Some(why) = moved {
        println!("   Note: not on {DEFAULT_DEMO_ADDR}, which is not available ({why}); use http://{addr}.");
    }
    println!();

    let result = send_one(addr, &issuer).await;
    if args.once || result.is_err() {
        let _ = stop_tx.send(());
        proxy.await.map_err(|e| DemoError::Request(e.to_string()))??;
        return result;
    }
    println!("\nThe proxy keeps running. Try it yourself:\n\n    curl -i http://{addr}/anything\n\nCtrl-C stops it.");
    proxy.await.map_err(|e| DemoError::Request(e.to_string()))??;
    println!("stopped.");
    Ok(())
}

/// A private directory for the demo's key file, removed when the demo ends.
struct KeyDir(std::path::PathBuf);

impl KeyDir {
    fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mintproxy-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self(dir))
    }

    fn write(&self, name: &str, contents: &str) -> std::io::Result<std::path::PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a lasting demo's proxy listens unless told otherwise: where `serve` would.
const DEFAULT_DEMO_ADDR: &str = crate::config::DEFAULT_LISTEN;

/// `--listen` if given; else 127.0.0.1:8080 for a lasting demo, and any free port for
/// `--once`. When 8080 cannot be had, any free port, and why 8080 could not, so the user is
/// told rather than left curling the wrong port.
async fn bind_demo_listener(args: &DemoArgs) -> Result<(TcpListener, Option<std::io::Error>), DemoError> {
    if let Some(addr) = args.listen {
        return Ok((TcpListener::bind(addr).await?, None));
    }
    let moved = if args.once {
        None
    } else {
        match TcpListener::bind(DEFAULT_DEMO_ADDR).await {
            Ok(listener) => return Ok((listener, None)),
            Err(error) => Some(error),
        }
    };
    Ok((TcpListener::bind("127.0.0.1:0").await?, moved))
}

async fn send_one(addr: SocketAddr, issuer: &Issuer) -> Result<(), DemoError> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(format!("http://{addr}/v2/users/me?demo=1"))
        .header(header::AUTHORIZATION, "Basic c3RhbGU6Y3JlZGVudGlhbHM=")
        .body(Empty::new())
        .expect("a static request is valid");
    println!("5. A plain client sends: GET http://{addr}/v2/users/me?demo=1, with no token (only a stale Basic header).");
    let response = client
        .request(request)
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?
        .to_bytes();
    let shown = serde_json::from_slice::<serde_json::Value>(&body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    println!(
        "   Answer: {status}, after {} token request(s) at the issuer.",
        issuer.token_requests()
    );
    println!("   What the upstream saw (the proxy replaced the Basic header with its bearer):\n");
    for line in shown.lines() {
        println!("     {line}");
    }
    if status != StatusCode::OK {
        return Err(DemoError::Status(status));
    }
    Ok(())
}
