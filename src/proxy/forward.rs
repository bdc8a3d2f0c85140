//! The outbound HTTP client: hyper-util's pooled client over rustls for every upstream,
//! plain or TLS, HTTP/1.1 or HTTP/2, so that every request is framed, limited and retried
//! by one implementation.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::combinators::{MapErr, MapFrame};
use http_body_util::BodyExt;
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::chain::{caused_by, Chain};

/// How long connecting to an upstream may take before the request fails with 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response header section an upstream may send (502 above): checked on the
/// parsed fields, and on HTTP/2 also as the header list size hyper accepts.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A request body on its way upstream: buffered (replayable) or streamed as it arrives
/// ([`upload`]).
pub type OutboundBody = Either<Full<Bytes>, Upload>;

/// Any error, boxed, as bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No response head arrived within the upstream timeout.
    #[error("no response within {0:?}")]
    TimedOut(Duration),
    /// The streamed request body passed the size limit.
    #[error("the request body is larger than allowed")]
    BodyTooLarge(#[source] hyper_util::client::legacy::Error),
    /// The client's request body broke off while it streamed upstream: the client's
    /// doing, not the upstream's.
    #[error("the client's request body broke off: {}", Chain(.0))]
    ClientAborted(#[source] hyper_util::client::legacy::Error),
    /// The upstream could not be reached, refused the connection or the TLS handshake, or
    /// broke off before its response head.
    #[error("{}", Chain(.0))]
    Upstream(#[source] hyper_util::client::legacy::Error),
}

impl From<hyper_util::client::legacy::Error> for ForwardError {
    /// Sorts hyper's error by what its causes say: a body error is ours or the client's.
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        if caused_by::<LengthLimitError>(&error) {
            Self::BodyTooLarge(error)
        } else if caused_by::<ClientAborted>(&error) {
            Self::ClientAborted(error)
        } else {
            Self::Upstream(error)
        }
    }
}

/// The client's body streamed upstream: within the size limit, its failures marked as the
/// client's ([`ClientAborted`]), its trailers cleaned ([`super::headers::clean_trailers`]).
pub type Upload =
    MapFrame<MapErr<Limited<Incoming>, fn(BoxError) -> BoxError>, fn(Frame<Bytes>) -> Frame<Bytes>>;

/// Marks a failure of the client's streamed body inside hyper's error.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's body failed")]
struct ClientAborted(#[source] BoxError);

/// `body` streamed upstream, cut off after `limit` bytes.
pub fn upload(body: Incoming, limit: usize) -> Upload {
    fn mark(error: BoxError) -> BoxError {
        if error.is::<LengthLimitError>() {
            error
        } else {
            Box::new(ClientAborted(error))
        }
    }
    Limited::new(body, limit)
        .map_err(mark as fn(BoxError) -> BoxError)
        .map_frame(clean as fn(Frame<Bytes>) -> Frame<Bytes>)
}

/// A frame with its trailers, if any, cleaned ([`super::headers::clean_trailers`]).
pub(super) fn clean(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            super::headers::clean_trailers(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// A response body from the upstream.
pub type UpstreamBody = Incoming;

/// An upstream request, prepared once, without its credential: every send (the first, a
/// replay after 401 with a fresh token, a resend after an HTTP/2 refusal) copies it and
/// adds the bearer, so every send carries the same fields. No `Debug`: it holds the
/// client's headers, its own credentials among them.
pub struct Outbound {
    /// The client's method.
    pub method: Method,
    /// Absolute: the upstream's origin and the target.
    pub uri: Uri,
    /// The client's end-to-end fields and the proxy's own (`X-Forwarded-*`, the route's);
    /// not `Host`, which hyper's client writes from `uri` on HTTP/1.1 only.
    pub headers: HeaderMap,
    /// HTTP/2 with prior knowledge.
    pub http2: bool,
}

/// One pooled client.
type Pool = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// The pooled upstream clients: HTTP/1.1 over plain TCP, HTTP/2 or HTTP/1.1 negotiated by
/// ALPN over TLS; and HTTP/2 with prior knowledge (h2c, for plaintext gRPC servers) for
/// routes that ask for it.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
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
        let mut builder = Client::builder(TokioExecutor::new());
        // (Not `http1_max_buf_size`: set, it makes hyper hold back a streamed response's
        // first pieces. The limit is checked on the parsed head instead.)
        builder.http2_max_header_list_size(MAX_RESPONSE_HEAD as u32);
        let negotiated = builder.build(negotiated);
        builder.http2_only(true);
        Self {
            negotiated,
            prior_knowledge: builder.build(prior_knowledge),
        }
    }

    /// Sends `outbound` with `authorization`; [`ForwardError::TimedOut`] when no response head arrives
    /// within `timeout`. A request with a buffered body is sent once more when the first
    /// try was safe to repeat ([`resendable`]).
    pub async fn request(
        &self,
        outbound: &Outbound,
        authorization: &HeaderValue,
        body: OutboundBody,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        // A buffered body can go again should the upstream refuse it unread.
        let again = match &body {
            Either::Left(buffered) => Some(buffered.clone()),
            Either::Right(_) => None,
        };
        match (
            self.through_hyper(outbound, authorization, body, timeout).await,
            again,
        ) {
            (Err(ForwardError::Upstream(error)), Some(body)) if resendable(&outbound.method, &error) => {
                tracing::debug!(%error, "the upstream closed the connection before answering; sending the request again");
                self.through_hyper(outbound, authorization, Either::Left(body), timeout)
                    .await
            }
            (result, _) => result,
        }
    }

    /// Sends a copy of `outbound` through hyper's pooled client.
    async fn through_hyper(
        &self,
        outbound: &Outbound,
        authorization: &HeaderValue,
        body: OutboundBody,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let mut request = Request::new(body);
        *request.method_mut() = outbound.method.clone();
        *request.uri_mut() = outbound.uri.clone();
        let headers = request.headers_mut();
        *headers = outbound.headers.clone();
        headers.insert(header::AUTHORIZATION, authorization.clone());
        let (version, client) = if outbound.http2 {
            (Version::HTTP_2, &self.prior_knowledge)
        } else {
            (Version::HTTP_11, &self.negotiated)
        };
        *request.version_mut() = version;
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(response) => Ok(response?),
            Err(_) => Err(ForwardError::TimedOut(timeout)),
        }
    }
}

/// Whether a request that failed with `error` may be sent again (RFC 9110 §9.2.2, RFC 9113
/// §8.7): an HTTP/2 upstream refused it unprocessed (a graceful GOAWAY that its stream
/// came after, as nginx sends after `keepalive_requests`, or `REFUSED_STREAM`); or it is
/// idempotent and an HTTP/1.1 upstream closed the connection before any answer (a
/// kept-alive connection the upstream closed as it was reused, typically).
fn resendable(method: &Method, error: &(dyn std::error::Error + 'static)) -> bool {
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
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return idempotent(method);
            }
        }
        cause = error.source();
    }
    false
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http
}
