//! Sending a prepared request upstream: every upstream, plain or TLS, goes through one
//! pool ([`super::pool`]): HTTP/1.1 by the in-house client ([`super::http1`]), HTTP/2 by
//! hyper's `client::conn`; one rule says when a request may go again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

use super::headers::XForwarded;
use super::http1::WireError;
use super::pool::{Connector, Origin, PooledBody, SendError};
use super::Upstream;
use crate::chain::caused_by;

/// How long connecting to an upstream may take before the request fails with 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response header section an upstream may send (502 above): hyper's limit on
/// an HTTP/1.1 head and on an HTTP/2 header list, and checked on the parsed fields.
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
    BodyTooLarge(#[source] SendError),
    /// The client's request body broke off while it streamed upstream: the client's
    /// doing, not the upstream's.
    #[error("the client's request body broke off")]
    ClientAborted(#[source] SendError),
    /// The upstream's response head is larger than [`MAX_RESPONSE_HEAD`].
    #[error("the response head is larger than allowed")]
    HeadTooLarge(#[source] SendError),
    /// The upstream could not be reached, refused the connection or the TLS handshake, or
    /// broke off before its response head.
    #[error(transparent)]
    Upstream(SendError),
}

impl From<SendError> for ForwardError {
    /// Sorts the error by what its causes say: a body error is ours or the client's.
    fn from(error: SendError) -> Self {
        match &error {
            SendError::Connect(_) => Self::Upstream(error),
            _ if caused_by::<LengthLimitError>(&error) => Self::BodyTooLarge(error),
            _ if caused_by::<ClientAborted>(&error) => Self::ClientAborted(error),
            SendError::Http2(cause) if cause.is_parse_too_large() => Self::HeadTooLarge(error),
            SendError::Http1(WireError::HeadTooLarge) => Self::HeadTooLarge(error),
            _ => Self::Upstream(error),
        }
    }
}

/// The client's body streamed upstream: within the size limit, its failures marked as the
/// client's ([`ClientAborted`]), its trailers cleaned ([`super::headers::clean_trailers`]).
#[derive(Debug)]
pub struct Upload {
    body: Limited<Incoming>,
}

/// `body` streamed upstream, cut off after `limit` bytes.
pub fn upload(body: Incoming, limit: usize) -> Upload {
    Upload {
        body: Limited::new(body, limit),
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx).map(|polled| {
            polled.map(|frame| {
                frame.map(clean).map_err(|error| {
                    if error.is::<LengthLimitError>() {
                        error
                    } else {
                        Box::new(ClientAborted(error))
                    }
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Marks a failure of the client's streamed body inside hyper's error.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's body failed")]
struct ClientAborted(#[source] BoxError);

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
pub type UpstreamBody = PooledBody;

/// An upstream request, prepared once, without its credential: every send (the first, a
/// replay after 401 with a fresh token, a resend after an HTTP/2 refusal) adds the bearer,
/// so every send carries the same fields. HTTP/1.1 writes its head straight from it
/// ([`super::http1::codec::encode_head`]); HTTP/2 takes a copy as a request
/// ([`Outbound::request`]). No `Debug`: it holds the client's headers, its own credentials
/// among them.
pub struct Outbound {
    /// The client's method.
    pub method: Method,
    /// Absolute: the upstream's origin and the target.
    pub uri: Uri,
    /// The client's end-to-end fields and the route's; still the client's `Host`, which
    /// the HTTP/1.1 client replaces with the origin's ([`Origin::send`]) and HTTP/2 drops
    /// for `:authority`; the client's `Authorization`, if any, which every send replaces
    /// with the bearer.
    pub headers: HeaderMap,
    /// The `X-Forwarded-*` fields, written beside `headers`.
    pub(crate) forwarded: XForwarded,
    /// `headers` carry `Content-Length`.
    pub(crate) stated_length: bool,
    /// `headers` carry `Upgrade`: a `101` answers it.
    pub upgrade: bool,
}

impl Outbound {
    /// A copy as a request with `authorization` and `body`, for HTTP/2.
    pub(crate) fn request(&self, authorization: &HeaderValue, body: OutboundBody) -> Request<OutboundBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        headers.remove(header::HOST);
        for (name, value) in self.forwarded.fields() {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(header::AUTHORIZATION, authorization.clone());
        request
    }
}

/// Makes the origins the routes send to, all dialling with one TLS configuration.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// HTTP/1.1 over plain TCP; over TLS, HTTP/2 or HTTP/1.1 as ALPN decides.
    negotiated: Connector,
    /// HTTP/2 with prior knowledge (h2c, for plaintext gRPC servers), for routes that ask.
    prior_knowledge: Connector,
}

impl UpstreamClient {
    /// Both connectors; `tls` must have no ALPN set (the connector sets it).
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
        Self {
            negotiated,
            prior_knowledge,
        }
    }

    /// The connections of one route to `upstream`, HTTP/2 with prior knowledge when
    /// `http2`.
    pub fn origin(&self, upstream: &Upstream, http2: bool) -> Arc<Origin> {
        let connector = if http2 {
            &self.prior_knowledge
        } else {
            &self.negotiated
        };
        Arc::new(Origin::new(
            upstream.scheme(),
            upstream.authority(),
            connector.clone(),
            http2,
        ))
    }
}

/// Sends `outbound` to `origin` with `authorization`; [`ForwardError::TimedOut`] when no
/// response head arrives within `timeout`. A request with a buffered body is sent once more
/// when the first try was safe to repeat ([`resendable`]).
pub async fn send(
    origin: &Arc<Origin>,
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
    let deadline = tokio::time::Instant::now() + timeout;
    let first = timed(
        origin.send(outbound, authorization, body, deadline).await,
        timeout,
    );
    match (first, again) {
        (Err(ForwardError::Upstream(error)), Some(body)) if resendable(&outbound.method, &error) => {
            tracing::debug!(%error, "the upstream closed the connection before answering; sending the request again");
            origin.forget_http2();
            let deadline = tokio::time::Instant::now() + timeout;
            // Boxed: rare, and inline it would double this future.
            let again = Box::pin(origin.send(outbound, authorization, Either::Left(body), deadline));
            timed(again.await, timeout)
        }
        (result, _) => result,
    }
}

/// A send's result, its deadline's passing named by the `timeout` it came from.
fn timed(
    result: Result<Response<UpstreamBody>, SendError>,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, ForwardError> {
    match result {
        Err(SendError::TimedOut) => Err(ForwardError::TimedOut(timeout)),
        result => Ok(result?),
    }
}

/// Whether a request that failed with `error` may be sent again (RFC 9110 §9.2.2, RFC 9113
/// §8.7): an HTTP/2 upstream refused it unprocessed (a graceful GOAWAY that its stream
/// came after, as nginx sends after `keepalive_requests`, or `REFUSED_STREAM`); hyper
/// cancelled it unsent because its connection closed first (a request queued on an HTTP/2
/// connection just as it went away); or it is idempotent and an HTTP/1.1 upstream closed
/// the connection before any byte of an answer (a kept-alive connection the upstream closed
/// as it was reused, typically). A request that no byte of left at all went on another
/// connection already, whatever its method ([`Origin::send`]).
fn resendable(method: &Method, error: &SendError) -> bool {
    match error {
        SendError::Http1(wire) => wire.closed_before_answer() && idempotent(method),
        SendError::Http2(hyper) if hyper.is_canceled() => true,
        SendError::Http2(hyper) if hyper.is_incomplete_message() => idempotent(method),
        // hyper names an HTTP/2 error only as its cause.
        SendError::Http2(hyper) => {
            std::iter::successors(std::error::Error::source(hyper), |error| error.source())
                .find_map(|error| error.downcast_ref::<h2::Error>())
                .is_some_and(|h2| {
                    h2.is_remote()
                        && match h2.reason() {
                            Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                            Some(h2::Reason::REFUSED_STREAM) => true,
                            _ => false,
                        }
                })
        }
        SendError::Connect(_) | SendError::TimedOut => false,
    }
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
