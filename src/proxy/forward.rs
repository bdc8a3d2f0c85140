//! The outbound HTTP client: hyper-util's pooled client over rustls.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long connecting to an upstream may take before the request fails with 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body on its way upstream: buffered (replayable) or streamed as it arrives,
/// within the size limit.
pub type OutboundBody = Either<Full<Bytes>, Limited<Incoming>>;

/// The pooled upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// Builds the upstream client; `tls` must have no ALPN set (the connector sets it).
pub fn client(tls: rustls::ClientConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}
