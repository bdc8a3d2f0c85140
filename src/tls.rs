//! Outbound TLS: one rustls configuration, on aws-lc-rs, for upstreams and token endpoints.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

/// Trust anchors: the Mozilla roots built in (webpki-roots) plus the system's store, so a
/// corporate CA installed on the machine works as it does for curl.
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

/// A client configuration with the given trust anchors and ALPN protocols.
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
