//! An issuer that cannot be reached gets its likely cause named, in the same words by
//! `mintproxy token`, `mintproxy check --online` and the proxy's 503 body. Each case is a
//! real socket: a plain-HTTP issuer dialled with `https://`, a TLS server dialled with
//! `http://`, a closed port, a name that cannot resolve (`.invalid`, RFC 6761) and a TLS
//! server with a self-signed certificate.

mod support;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{local_listener, Issued};
use tokio_rustls::TlsAcceptor;

/// One wrong issuer URL and the start of the likely cause it must get.
struct Case {
    what: &'static str,
    issuer: String,
    likely: &'static str,
}

/// A TLS server for `localhost` with a self-signed certificate, which completes handshakes
/// (when the client accepts its certificate) and then closes; its port.
async fn self_signed_tls_server() -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = local_listener().await;
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    port
}

/// A port nothing listens on: bound, then closed again.
async fn closed_port() -> u16 {
    local_listener().await.local_addr().unwrap().port()
}

async fn cases(issued: &Issued) -> Vec<Case> {
    let plain = issued.issuer.url().trim_start_matches("http://").to_owned();
    let tls_port = self_signed_tls_server().await;
    vec![
        Case {
            what: "a plain-HTTP issuer dialled with https://",
            issuer: format!("https://{plain}"),
            likely: "scheme mismatch: the server answered in plain HTTP, not TLS",
        },
        Case {
            what: "a TLS server dialled with http://",
            issuer: format!("http://localhost:{tls_port}"),
            likely: "scheme mismatch: the server did not answer in plain HTTP",
        },
        Case {
            what: "a closed port",
            issuer: format!("http://127.0.0.1:{}", closed_port().await),
            likely: "connection refused:",
        },
        Case {
            what: "a name that does not resolve",
            issuer: "https://issuer.invalid".to_owned(),
            likely: "DNS: the host name in the URL does not resolve",
        },
        Case {
            what: "a self-signed certificate",
            issuer: format!("https://localhost:{tls_port}"),
            likely: "certificate problem: the server's certificate is not signed by a trusted CA",
        },
    ]
}

/// The one `likely cause: ...` line in `text`, without its indentation.
fn likely_cause_line<'a>(text: &'a str, case: &Case, command: &str) -> &'a str {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("likely cause: "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: {command}: one likely cause line in {text}",
        case.what
    );
    lines[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn token_check_and_the_503_body_name_the_same_likely_cause() {
    let issued = support::issuer().await;
    let key_file = issued.key_file.to_str().unwrap();
    for case in cases(&issued).await {
        let token =
            support::run_binary(&["token", "--key-file", key_file, "--issuer", &case.issuer], &[]).await;
        assert_eq!(token.status.code(), Some(1), "{}: {token:#?}", case.what);
        assert_eq!(token.stdout, "", "{}", case.what);
        let line = likely_cause_line(&token.stderr, &case, "token");
        assert!(
            line.starts_with(&format!("likely cause: {}", case.likely)),
            "{}: token said {line:?}",
            case.what
        );

        let check = support::run_binary(
            &[
                "check",
                "--upstream",
                &case.issuer,
                "--key-file",
                key_file,
                "--online",
            ],
            &[],
        )
        .await;
        assert_eq!(check.status.code(), Some(1), "{}: {check:#?}", case.what);
        assert_eq!(
            likely_cause_line(&check.stdout, &case, "check --online"),
            line,
            "{}: check and token say the same",
            case.what
        );

        // The proxy answers at once with the same diagnosis in its 503 body.
        let proxy = support::proxy(&issued, "http://127.0.0.1:9", &["--issuer", &case.issuer]).await;
        let answer = support::get(proxy.addr, "/anything").await;
        assert_eq!(answer.status, 503, "{}: {:?}", case.what, answer.body);
        let body = answer.json();
        assert_eq!(
            format!("likely cause: {}", body["diagnosis"].as_str().unwrap_or_default()),
            line,
            "{}: the 503 body says the same: {body}",
            case.what
        );
    }
    assert_eq!(
        issued.issuer.token_requests(),
        0,
        "no case reached the issuer's token endpoint"
    );
}
