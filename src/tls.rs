//! TLS on both sides, one rustls on aws-lc-rs: the client configuration for upstreams and
//! token endpoints (system and webpki roots, an extra CA, or no verification for
//! development), and the server configuration for an inbound TLS listener (with optional
//! client certificates).

mod lazy;
mod pinned;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// How outbound certificates are checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trust {
    /// A CA (PEM) trusted besides the system and webpki roots, e.g. a cluster's own CA.
    /// A certificate in it that is exactly the one a server presents is trusted as that
    /// server's own (pinned; a self-signed certificate), its name and dates still checked.
    pub extra_ca: Option<PathBuf>,
    /// Accept any certificate. Development only.
    pub insecure_skip_verify: bool,
}

/// Inbound TLS: the listener's certificate and, for mTLS, the CA its clients must present
/// certificates from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Require client certificates issued by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate could be read from the file.
    #[error("{}: no PEM certificate could be read: {reason}", path.display())]
    Certificates {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No private key could be read from the file (its contents are never shown).
    #[error("{}: no PEM private key could be read", path.display())]
    Key {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificates {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("the file holds no certificate".into()));
    }
    Ok(certs)
}

/// Trust anchors: the Mozilla roots built in (webpki-roots) plus the system's store, so a
/// corporate CA installed on the machine works as it does for curl. Outbound connections
/// load them at their first certificate check ([`client_config`]).
pub fn root_store() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping part of the system certificate store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system trust anchors");
    roots
}

/// The client configuration for `trust` (no ALPN: the connector or client sets it). The
/// trust anchors are loaded at the first certificate to check, so a proxy with only
/// plain-HTTP peers never reads the system's store.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions");
    let verifier: Arc<dyn ServerCertVerifier> = if trust.insecure_skip_verify {
        tracing::warn!(
            "--insecure-skip-verify: upstream and token endpoint certificates are NOT checked; \
             anyone on the path can read the tokens. Development only."
        );
        Arc::new(AcceptAnyCertificate(provider()))
    } else if let Some(ca) = &trust.extra_ca {
        let pinned = certificates(ca)?;
        let mut extra = RootCertStore::empty();
        for cert in &pinned {
            extra.add(cert.clone())?;
        }
        Arc::new(pinned::PinningVerifier::new(
            lazy::LazyWebPki::new(provider(), extra),
            pinned,
        ))
    } else {
        Arc::new(lazy::LazyWebPki::new(provider(), RootCertStore::empty()))
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The server configuration for an inbound TLS listener, offering HTTP/2 and HTTP/1.1.
pub fn server_config(inbound: &Inbound) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&inbound.cert)?;
    let key = PrivateKeyDer::from_pem_file(&inbound.key).map_err(|_| TlsError::Key {
        path: inbound.key.clone(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions");
    let builder = match &inbound.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure-skip-verify`: signatures are still checked, the certificate is not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
