//! WebPKI with its trust anchors loaded at the first certificate to check, not at start.
//!
//! Reading and parsing the system's certificate store costs a sidecar memory and start-up
//! time on every process, and a proxy whose upstreams and token endpoints all speak plain
//! HTTP (a static token in front of a local service) never needs it. Handshake signatures
//! need no anchors: they are checked with the provider's algorithms, as WebPKI does.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// WebPKI over [`super::root_store`] and the extra anchors, built on first use.
#[derive(Debug)]
pub(super) struct LazyWebPki {
    provider: Arc<CryptoProvider>,
    /// `--upstream-ca`'s certificates, checked at start to be usable as anchors.
    extra: RootCertStore,
    webpki: OnceLock<Arc<WebPkiServerVerifier>>,
}

impl LazyWebPki {
    pub(super) fn new(provider: Arc<CryptoProvider>, extra: RootCertStore) -> Self {
        Self {
            provider,
            extra,
            webpki: OnceLock::new(),
        }
    }

    /// The verifier, loading the trust anchors the first time.
    fn webpki(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        if let Some(webpki) = self.webpki.get() {
            return Ok(webpki);
        }
        let mut roots = super::root_store();
        roots.roots.extend(self.extra.roots.iter().cloned());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        // Two first handshakes at once may both load them; one result is kept.
        Ok(self.webpki.get_or_init(|| webpki))
    }
}

impl ServerCertVerifier for LazyWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
