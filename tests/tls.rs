//! TLS on both sides with a test CA: a TLS upstream and a TLS token endpoint trusted
//! through `--upstream-ca` (or not checked with `--insecure-skip-verify`), and a TLS
//! listener (HTTP/2 by ALPN, and client certificates with `--client-ca`).

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mintproxy::demo::echo::Echo;
use mintproxy::demo::json_response;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::{local_listener, Issued};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A test CA that issues certificates for `localhost` and `127.0.0.1`.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM text.
struct Certified {
    cert: String,
    key: String,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn issue(&self) -> Certified {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Certified {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write_pem(&self, issued: &Issued) -> PathBuf {
        write(issued, "ca.pem", &self.issuer.pem())
    }
}

fn write(issued: &Issued, name: &str, text: &str) -> PathBuf {
    let path = issued.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn server_config(certified: &Certified) -> Arc<rustls::ServerConfig> {
    support::tls_server_config(&certified.cert, &certified.key, &[b"h2", b"http/1.1"])
}

/// A TLS upstream recording each request's `Authorization`; its `https://localhost` URL.
async fn tls_upstream(ca: &TestCa) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = local_listener().await;
    let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let acceptor = TlsAcceptor::from(server_config(&ca.issue()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let bearer = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    record.lock().unwrap().push(bearer.unwrap_or_default());
                    async move {
                        Ok::<_, std::convert::Infallible>(json_response(
                            StatusCode::OK,
                            &serde_json::json!({"tls": true}),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

/// TLS in front of the stand-in issuer: its token endpoint as `https://localhost`.
async fn tls_token_endpoint(ca: &TestCa, issued: &Issued) -> String {
    let listener = local_listener().await;
    let url = format!(
        "https://localhost:{}/oauth/v2/token",
        listener.local_addr().unwrap().port()
    );
    let acceptor = TlsAcceptor::from(server_config(&ca.issue()));
    let plain = issued.issuer.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, plain) = (acceptor.clone(), plain.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut backend = tokio::net::TcpStream::connect(plain).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_and_token_endpoint_are_trusted_through_upstream_ca() {
    let issued = support::issuer().await;
    let ca = TestCa::new();
    let ca_file = ca.write_pem(&issued);
    let (upstream, seen) = tls_upstream(&ca).await;
    let token_endpoint = tls_token_endpoint(&ca, &issued).await;
    let flags = [
        "--token-endpoint",
        &token_endpoint,
        "--upstream-ca",
        ca_file.to_str().unwrap(),
    ];
    let proxy = support::proxy(&issued, &upstream, &flags).await;

    let answer = support::get(proxy.addr, "/over-tls").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["tls"], true);
    let seen = seen.lock().unwrap().clone();
    let token = seen[0].strip_prefix("Bearer ").unwrap();
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));

    // Without the CA, neither the token endpoint nor the upstream is trusted.
    let untrusted = support::proxy(&issued, &upstream, &["--token-endpoint", &token_endpoint]).await;
    let answer = support::get(untrusted.addr, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.json()["detail"].as_str().unwrap().contains("certificate"),
        "{}",
        answer.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    let issued = support::issuer().await;
    let ca = TestCa::new();
    let (upstream, seen) = tls_upstream(&ca).await;
    let proxy = support::proxy(&issued, &upstream, &["--insecure-skip-verify"]).await;
    assert_eq!(support::get(proxy.addr, "/").await.status, StatusCode::OK);
    assert!(seen.lock().unwrap()[0].starts_with("Bearer "));
}

/// A TLS client trusting `ca`, offering h2 and http/1.1, optionally with a client cert.
fn tls_client(ca: &TestCa, client_cert: Option<&Certified>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(certified) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(certified.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(certified.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One request over TLS to `addr`; the negotiated version and the status.
async fn get_over_tls(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> Result<(http::Version, StatusCode, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = Request::get(format!("https://localhost:{}/secure", addr.port()))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request).await
    }
    .map_err(|e| e.to_string())?;
    let (version, status) = (response.version(), response.status());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((version, status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_http2_by_alpn_and_can_require_client_certificates() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let ca = TestCa::new();
    let server = ca.issue();
    let cert = write(&issued, "proxy.crt", &server.cert);
    let key = write(&issued, "proxy.key", &server.key);
    let tls_flags = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let proxy = support::proxy(&issued, echo.url(), &tls_flags).await;

    let (version, status, body) = get_over_tls(&tls_client(&ca, None), proxy.addr).await.unwrap();
    assert_eq!((version, status), (http::Version::HTTP_2, StatusCode::OK));
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echoed["token_user"], "test-user");

    // mTLS: without a client certificate from the CA, no request gets through.
    let ca_file = ca.write_pem(&issued);
    let mut mtls_flags = tls_flags.to_vec();
    mtls_flags.extend(["--client-ca", ca_file.to_str().unwrap()]);
    let mtls = support::proxy(&issued, echo.url(), &mtls_flags).await;
    assert!(get_over_tls(&tls_client(&ca, None), mtls.addr).await.is_err());
    let client_cert = ca.issue();
    let (_, status, _) = get_over_tls(&tls_client(&ca, Some(&client_cert)), mtls.addr)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}
