//! The outbound HTTP client: a lean pool for plain HTTP/1.1, hyper-util's pooled client
//! over rustls for TLS and HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::combinators::MapErr;
use http_body_util::BodyExt;
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use tokio::time::Instant;

use super::headers::ProxyFields;
use super::http1::{WireBody, WireError};
use super::pool::{Http1Pool, PoolError};

/// How long connecting to an upstream may take before the request fails with 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body on its way upstream: buffered (replayable) or streamed as it arrives
/// ([`upload`]).
pub type OutboundBody = Either<Full<Bytes>, Upload>;

/// Why an upstream request got no response (the cause chain names the reason).
pub type ForwardError = Box<dyn std::error::Error + Send + Sync>;

/// The client's body streamed upstream: within the size limit, and its failures marked as
/// [`ClientAborted`].
pub type Upload = MapErr<Limited<Incoming>, fn(ForwardError) -> ForwardError>;

/// The client's request body broke off while it streamed upstream: the client's doing,
/// not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off")]
pub struct ClientAborted(#[source] pub ForwardError);

/// `body` streamed upstream, cut off after `limit` bytes.
pub fn upload(body: Incoming, limit: usize) -> Upload {
    fn mark(error: ForwardError) -> ForwardError {
        if error.is::<LengthLimitError>() {
            error
        } else {
            Box::new(ClientAborted(error))
        }
    }
    Limited::new(body, limit).map_err(mark as fn(ForwardError) -> ForwardError)
}

/// No response head arrived within the upstream timeout.
#[derive(Debug, thiserror::Error)]
#[error("no response within {0:?}")]
pub struct TimedOut(pub Duration);

/// A response body from the upstream: from hyper's client, or read in the request's task.
pub type UpstreamBody = Either<Incoming, WireBody>;

/// An upstream request without its credential: what a replay after 401 sends again with
/// a fresh token. Lent, not moved, so that a replay needs no copy of it. No `Debug`: it
/// holds the client's headers, its own credentials among them.
pub struct Outbound<'a> {
    /// The client's method.
    pub method: Method,
    /// Absolute: the upstream's origin and the target.
    pub uri: Uri,
    /// The client's end-to-end headers (its `Authorization` is replaced when sent).
    pub headers: HeaderMap,
    /// The fields the proxy sets over them.
    pub set: ProxyFields<'a>,
    /// HTTP/2 with prior knowledge.
    pub http2: bool,
}

/// One pooled client.
type Pool = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// The pooled upstream clients: HTTP/1.1 over plain TCP; HTTP/2 or HTTP/1.1 negotiated by
/// ALPN over TLS; HTTP/2 with prior knowledge (h2c, for plaintext gRPC servers) for routes
/// that ask for it.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    plain: Arc<Http1Pool>,
    negotiated: Pool,
    prior_knowledge: Pool,
}

impl UpstreamClient {
    /// Builds both pools; `tls` must have no ALPN set (the connector sets it).
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let negotiated = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http_connector());
        let prior_knowledge = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http_connector());
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.http2_only(true);
        Self {
            plain: Arc::default(),
            negotiated: Client::builder(TokioExecutor::new()).build(negotiated),
            prior_knowledge: h2.build(prior_knowledge),
        }
    }

    /// Sends `outbound` with `authorization`; [`TimedOut`] when no response head arrives
    /// within `timeout`. A plain-HTTP/1.1 request with a buffered body and no upgrade is
    /// exchanged in this task ([`super::http1`]), straight from the borrowed parts, under
    /// its connection's own reusable timer; anything else goes through hyper, which takes
    /// a copy.
    pub async fn request(
        &self,
        outbound: &Outbound<'_>,
        authorization: &HeaderValue,
        body: OutboundBody,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let in_task = !outbound.http2
            && outbound.uri.scheme() == Some(&Scheme::HTTP)
            && !outbound.headers.contains_key(header::UPGRADE);
        match body {
            Either::Left(mut buffered) if in_task => {
                let data = match buffered.frame().await {
                    Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                    _ => Bytes::new(),
                };
                let deadline = Instant::now() + timeout;
                match self.plain.send(outbound, authorization, data, deadline).await {
                    Ok(response) => Ok(response.map(Either::Right)),
                    Err(PoolError::Wire(WireError::TimedOut)) => Err(Box::new(TimedOut(timeout))),
                    Err(error) => Err(error.into()),
                }
            }
            body => {
                // A buffered body can go again should the upstream refuse it unread.
                let again = match &body {
                    Either::Left(buffered) => Some(buffered.clone()),
                    Either::Right(_) => None,
                };
                match (
                    self.through_hyper(outbound, authorization, body, timeout).await,
                    again,
                ) {
                    (Err(error), Some(body)) if refused_unprocessed(&*error) => {
                        tracing::debug!(%error, "the upstream closed its HTTP/2 connection before taking the request; sending it again");
                        self.through_hyper(outbound, authorization, Either::Left(body), timeout)
                            .await
                    }
                    (result, _) => result,
                }
            }
        }
    }

    /// Sends a copy of `outbound` through hyper's pooled client.
    async fn through_hyper(
        &self,
        outbound: &Outbound<'_>,
        authorization: &HeaderValue,
        body: OutboundBody,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let mut request = Request::new(body);
        *request.method_mut() = outbound.method.clone();
        *request.uri_mut() = outbound.uri.clone();
        let headers = request.headers_mut();
        *headers = outbound.headers.clone();
        outbound.set.apply(headers);
        headers.insert(header::AUTHORIZATION, authorization.clone());
        let (version, client) = if outbound.http2 {
            (Version::HTTP_2, &self.prior_knowledge)
        } else {
            (Version::HTTP_11, &self.negotiated)
        };
        *request.version_mut() = version;
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(response) => Ok(response?.map(Either::Left)),
            Err(_) => Err(Box::new(TimedOut(timeout))),
        }
    }
}

/// Whether an HTTP/2 upstream refused a request without processing it, so it may be sent
/// again (RFC 9113 §8.7): a graceful GOAWAY (`NO_ERROR`) that the request's stream came
/// after, as nginx sends after `keepalive_requests` (1,000 by default), or
/// `REFUSED_STREAM`.
fn refused_unprocessed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && match h2.reason() {
                    Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                    Some(h2::Reason::REFUSED_STREAM) => true,
                    _ => false,
                };
        }
        cause = error.source();
    }
    false
}

fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http
}
