//! The connections to one upstream origin, kept alive between requests.
//!
//! hyper's `client::conn` speaks HTTP/1.1 and HTTP/2 on each connection; this module only
//! decides which connection a request takes. Idle HTTP/1.1 connections wait on a stack, the
//! most recently used on top (its socket is the warmest, and the least likely to have
//! passed the upstream's idle timeout); every request shares one HTTP/2 connection. Each
//! route holds its origin, so a request finds its connections without hashing, and an
//! HTTP/1.1 connection returns to the stack from the response body's last read, without a
//! task of its own.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;

use super::forward::{BoxError, OutboundBody, MAX_RESPONSE_HEAD};
use crate::chain::Chain;

/// An idle HTTP/1.1 connection older than this is closed rather than reused: by then the
/// upstream may be closing it (nginx keeps idle connections 75 s, Go's servers 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A request given back unsent goes on another connection at most this often in all.
const MAX_TAKES: usize = 8;

/// At most this many idle HTTP/1.1 connections per origin; more are closed.
const MAX_IDLE: usize = 512;

/// What dials the upstream: TCP, and TLS for `https` (rustls, with the proxy's trust).
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// A connection's byte stream.
type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: DNS, TCP or the TLS handshake failed, or the connect timeout passed.
    #[error("cannot connect: {}", Chain(&**.0))]
    Connect(#[source] BoxError),
    /// The connection failed while the request was sent or its response head read (hyper
    /// names which); the request body's own failures are among its causes.
    #[error("{}", Chain(.0))]
    Http(#[source] hyper::Error),
}

/// One upstream origin (`scheme://authority`) and its connections.
pub struct Origin {
    /// What the connector dials: the scheme and authority only.
    address: Uri,
    /// `Host` of an HTTP/1.1 request: the authority, without a default port.
    host: HeaderValue,
    connector: Connector,
    /// HTTP/2 with prior knowledge (h2c, or h2 over TLS whatever ALPN says).
    http2_only: bool,
    /// A TLS connection to this origin negotiated HTTP/2: open one at a time from now on.
    negotiated_h2: AtomicBool,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// The HTTP/2 connection every request shares.
    shared: Mutex<Option<http2::SendRequest<OutboundBody>>>,
    /// Held while an HTTP/2 connection opens, so that a burst of requests opens one.
    opening: tokio::sync::Mutex<()>,
}

/// An HTTP/1.1 connection between requests.
struct Idle {
    sender: http1::SendRequest<OutboundBody>,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    Http1 {
        sender: http1::SendRequest<OutboundBody>,
        /// Used before: it may have been closed by the upstream while it idled.
        reused: bool,
    },
    Http2 {
        sender: http2::SendRequest<OutboundBody>,
        /// Shared with earlier requests: it may be going away.
        reused: bool,
    },
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("address", &self.address)
            .field("http2_only", &self.http2_only)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// The origin of `scheme://authority`, dialled by `connector`; HTTP/2 with prior
    /// knowledge when `http2_only`.
    pub(crate) fn new(
        scheme: &Scheme,
        authority: &Authority,
        connector: Connector,
        http2_only: bool,
    ) -> Self {
        let address = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("a scheme and an authority make a URI");
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port == default_port => authority.host(),
            _ => authority.as_str(),
        };
        Self {
            address,
            host: HeaderValue::from_str(host).expect("an authority is a valid header value"),
            connector,
            http2_only,
            negotiated_h2: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` (its URI absolute) on a connection of this origin. A reused
    /// connection that turns out closed (or, on HTTP/2, going away) before the request left
    /// gives it back unsent, and it goes on another (RFC 9112 §9.3.1, RFC 9113 §8.7:
    /// nothing was sent, whatever the method), at most [`MAX_TAKES`] times.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<OutboundBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let absolute = request.uri().clone();
        let mut takes = 0;
        loop {
            takes += 1;
            let (failed, reused) = match self.take().await? {
                Taken::Http2 { mut sender, reused } => {
                    // The authority travels in `:authority`, from the absolute URI.
                    *request.uri_mut() = absolute.clone();
                    request.headers_mut().remove(header::HOST);
                    *request.version_mut() = Version::HTTP_2;
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(response.map(PooledBody::unpooled)),
                        Err(failed) => {
                            if failed.message().is_some() {
                                // Unsent: the connection takes no more streams.
                                self.forget_http2();
                            }
                            (failed, reused)
                        }
                    }
                }
                Taken::Http1 { mut sender, reused } => {
                    let target = absolute
                        .path_and_query()
                        .cloned()
                        .map_or_else(|| Uri::from_static("/"), Uri::from);
                    *request.uri_mut() = target;
                    request.headers_mut().insert(header::HOST, self.host.clone());
                    *request.version_mut() = Version::HTTP_11;
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(self.watch(response, sender)),
                        Err(failed) => (failed, reused),
                    }
                }
            };
            let mut failed = failed;
            match failed.take_message() {
                Some(unsent) if reused && takes < MAX_TAKES => request = unsent,
                _ => return Err(SendError::Http(failed.into_error())),
            }
        }
    }

    /// Forgets the shared HTTP/2 connection after it refused a request (it is going away,
    /// or sent GOAWAY), so the next request opens a new one instead.
    pub(crate) fn forget_http2(&self) {
        lock(&self.shared).take();
    }

    /// A connection for one request: the shared HTTP/2 one, an idle HTTP/1.1 one, or a
    /// new one.
    async fn take(&self) -> Result<Taken, SendError> {
        if let Some(sender) = self.live_http2() {
            return Ok(Taken::Http2 { sender, reused: true });
        }
        if !self.http2_only {
            while let Some(mut sender) = self.pop_idle() {
                // Ready once hyper has read the previous response to its end; an error
                // means the connection closed meanwhile.
                if sender.ready().await.is_ok() {
                    return Ok(Taken::Http1 { sender, reused: true });
                }
            }
        }
        // Out of line and boxed: opening a connection is rare, and its future (DNS, TCP,
        // TLS, the handshake) is large; inline, every request's future would carry it, and
        // hyper moves that future whole.
        Box::pin(self.open_new()).await
    }

    /// Opens a connection; HTTP/2 ones one at a time.
    async fn open_new(&self) -> Result<Taken, SendError> {
        if self.http2_only || self.negotiated_h2.load(Ordering::Relaxed) {
            let _opening = self.opening.lock().await;
            if let Some(sender) = self.live_http2() {
                return Ok(Taken::Http2 { sender, reused: true });
            }
            return self.open().await;
        }
        self.open().await
    }

    fn live_http2(&self) -> Option<http2::SendRequest<OutboundBody>> {
        let shared = lock(&self.shared);
        shared.as_ref().filter(|sender| !sender.is_closed()).cloned()
    }

    /// The most recently used idle connection that is still open and fresh.
    fn pop_idle(&self) -> Option<http1::SendRequest<OutboundBody>> {
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() > IDLE_TIMEOUT {
                // Everything below has idled longer still.
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Dials a new connection; HTTP/2 when the route asks for it or TLS's ALPN chose it.
    async fn open(&self) -> Result<Taken, SendError> {
        let io: Io = self
            .connector
            .clone()
            .oneshot(self.address.clone())
            .await
            .map_err(SendError::Connect)?;
        if self.http2_only || io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_RESPONSE_HEAD as u32)
                .handshake(io)
                .await
                .map_err(SendError::Http)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/2 connection closed");
                }
            });
            self.negotiated_h2.store(true, Ordering::Relaxed);
            *lock(&self.shared) = Some(sender.clone());
            return Ok(Taken::Http2 {
                sender,
                reused: false,
            });
        }
        let (sender, connection) = http1::Builder::new()
            .max_header_size(MAX_RESPONSE_HEAD)
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream HTTP/1.1 connection closed");
            }
        });
        Ok(Taken::Http1 {
            sender,
            reused: false,
        })
    }

    /// `response` with a body that gives `sender` back once read to its end, unless the
    /// connection cannot carry another request.
    fn watch(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<OutboundBody>,
    ) -> Response<PooledBody> {
        // After `101` the connection belongs to the tunnel. A response framed by both
        // `Transfer-Encoding` and `Content-Length` leaves doubt where it ended (RFC 9112
        // §6.3): whatever follows on the connection is not trusted to be the next response.
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS
            && !(response.headers().contains_key(header::TRANSFER_ENCODING)
                && response.headers().contains_key(header::CONTENT_LENGTH));
        let mut response = response.map(PooledBody::unpooled);
        if reusable {
            let body = response.body_mut();
            body.checkin = Some(Checkin {
                sender,
                origin: self.clone(),
            });
            body.checkin_if_done();
        }
        response
    }

    fn checkin(&self, sender: http1::SendRequest<OutboundBody>) {
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            idle.retain(|entry| !entry.sender.is_closed());
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A lock that a panic elsewhere cannot poison: the data (senders) stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An HTTP/1.1 connection to hand back when its response has been read.
struct Checkin {
    sender: http1::SendRequest<OutboundBody>,
    origin: Arc<Origin>,
}

/// An upstream response body. An HTTP/1.1 connection goes back to its origin's idle stack
/// when the body has been read to its end; a body dropped before that takes its connection
/// with it (hyper closes it: the rest of the response is still on the wire).
pub struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
}

impl PooledBody {
    fn unpooled(body: Incoming) -> Self {
        Self { body, checkin: None }
    }

    fn checkin_if_done(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }

    fn give_back(&mut self) {
        if let Some(Checkin { sender, origin }) = self.checkin.take() {
            origin.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // Trailers end a body, though hyper's body may not say so yet.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.give_back(),
            Poll::Ready(Some(Ok(_))) => self.checkin_if_done(),
            Poll::Ready(Some(Err(_))) => self.checkin = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
