//! The connections to one upstream origin, kept alive between requests.
//!
//! HTTP/1.1 is spoken by the in-house client ([`super::http1`]) inside the request's own
//! task, over plain TCP or TLS alike; HTTP/2 by hyper's `client::conn`. This module decides
//! which connection a request takes. Idle HTTP/1.1 connections wait on a stack, the most
//! recently used on top (its socket is the warmest, and the least likely to have passed the
//! upstream's idle timeout); every request shares one HTTP/2 connection. Each route holds
//! its origin, so a request finds its connections without hashing, and an HTTP/1.1
//! connection returns to the stack from the response body's last read, without a task of
//! its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant as Deadline;
use tower::ServiceExt;

use super::forward::{BoxError, Outbound, OutboundBody, MAX_RESPONSE_HEAD};
use super::http1::{self, codec, Conn, Home, Upgraded, WireBody, WireError};
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

/// What the connector hands over: TCP, or TLS over it.
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The rustls stream the connector makes, over hyper's adapters around the socket.
type TlsStream = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

/// An HTTP/1.1 connection's byte stream, unwrapped from the connector's.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    fn from_io(io: Io) -> Self {
        match io {
            MaybeHttpsStream::Http(tcp) => Self::Plain(tcp.into_inner()),
            MaybeHttpsStream::Https(tls) => Self::Tls(Box::new(tls.into_inner())),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0.inner().inner(),
        }
    }

    /// Whether the upstream closed (or sent something unasked, a TLS alert say) while the
    /// connection idled. No system call unless the runtime saw the socket become readable
    /// since the last read that emptied it: then one `recv` of a byte (any byte there
    /// condemns the connection, as nothing is due on an idle one).
    fn closed_while_idle(&self) -> bool {
        let tcp = self.tcp();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if tcp.poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        !matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, data),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, data),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: DNS, TCP or the TLS handshake failed, or the connect timeout passed.
    #[error("cannot connect: {}", Chain(&**.0))]
    Connect(#[source] BoxError),
    /// The HTTP/2 connection failed while the request was sent or its response head read
    /// (hyper names which); the request body's own failures are among its causes.
    #[error("{}", Chain(.0))]
    Http2(#[source] hyper::Error),
    /// The HTTP/1.1 exchange failed.
    #[error("{}", Chain(.0))]
    Http1(#[source] WireError),
    /// No response head by the deadline.
    #[error("no response head by the deadline")]
    TimedOut,
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
    conn: Box<Conn<Stream>>,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    Http1 {
        conn: Box<Conn<Stream>>,
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

    /// Sends `outbound` with `authorization` and `body` on a connection of this origin. A reused
    /// connection that turns out closed (or, on HTTP/2, going away) before any byte of the
    /// request left gives it back unsent, and it goes on another (RFC 9112 §9.3.1, RFC 9113
    /// §8.7: nothing was sent, whatever the method), at most [`MAX_TAKES`] times.
    /// [`SendError::TimedOut`] when no response head is in by `deadline`.
    pub(crate) async fn send(
        self: &Arc<Self>,
        outbound: &Outbound,
        authorization: &HeaderValue,
        mut body: OutboundBody,
        deadline: Deadline,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut takes = 0;
        loop {
            takes += 1;
            let (unsent, error, reused) = match self.take(deadline).await? {
                Taken::Http2 { mut sender, reused } => {
                    let mut request = outbound.request(authorization, body);
                    // The authority travels in `:authority`, from the absolute URI.
                    *request.version_mut() = Version::HTTP_2;
                    let sent = tokio::time::timeout_at(deadline, sender.try_send_request(request));
                    match sent.await.map_err(|_| SendError::TimedOut)? {
                        Ok(response) => return Ok(response.map(PooledBody::http2)),
                        Err(mut failed) => {
                            let unsent = failed.take_message().map(Request::into_body);
                            if unsent.is_some() {
                                // Unsent: the connection takes no more streams.
                                self.forget_http2();
                            }
                            (unsent, SendError::Http2(failed.into_error()), reused)
                        }
                    }
                }
                Taken::Http1 { conn, reused } => {
                    match self
                        .send_http1(conn, outbound, authorization, body, deadline)
                        .await
                    {
                        Ok(response) => return Ok(response.map(PooledBody::http1)),
                        Err(http1::Failed {
                            error: WireError::TimedOut,
                            ..
                        }) => return Err(SendError::TimedOut),
                        Err(http1::Failed { error, body }) => (body, SendError::Http1(error), reused),
                    }
                }
            };
            match unsent {
                Some(unsent) if reused && takes < MAX_TAKES => {
                    tracing::debug!(%error, "a kept-alive upstream connection closed; the request goes on another");
                    body = unsent;
                }
                _ => return Err(error),
            }
        }
    }

    /// One HTTP/1.1 exchange on `conn`: the head written from `outbound` with `Host`,
    /// `authorization`, the target in origin form and the body's framing. Returns the
    /// exchange's own future, not one of its own around it: one level less to move and poll.
    fn send_http1<'a>(
        self: &Arc<Self>,
        conn: Box<Conn<Stream>>,
        outbound: &'a Outbound,
        authorization: &HeaderValue,
        body: OutboundBody,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Response<WireBody<Stream>>, http1::Failed>> + 'a {
        let framing = http1::request_framing(&body, outbound.stated_length);
        let mut head = BytesMut::new();
        codec::encode_head(&mut head, outbound, &self.host, authorization, framing);
        let home: Arc<dyn Home<Stream>> = self.clone();
        http1::exchange(
            conn,
            head.freeze(),
            framing,
            body,
            &outbound.method,
            outbound.upgrade,
            home,
            deadline,
        )
    }

    /// Forgets the shared HTTP/2 connection after it refused a request (it is going away,
    /// or sent GOAWAY), so the next request opens a new one instead.
    pub(crate) fn forget_http2(&self) {
        lock(&self.shared).take();
    }

    /// A connection for one request: the shared HTTP/2 one, an idle HTTP/1.1 one, or a
    /// new one opened by `deadline`.
    async fn take(&self, deadline: Deadline) -> Result<Taken, SendError> {
        if let Some(sender) = self.live_http2() {
            return Ok(Taken::Http2 { sender, reused: true });
        }
        if !self.http2_only {
            if let Some(conn) = self.pop_idle() {
                return Ok(Taken::Http1 { conn, reused: true });
            }
        }
        // Out of line and boxed: opening a connection is rare, and its future (DNS, TCP,
        // TLS, the handshake) is large; inline, every request's future would carry it, and
        // hyper moves that future whole.
        Box::pin(tokio::time::timeout_at(deadline, self.open_new()))
            .await
            .map_err(|_| SendError::TimedOut)?
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

    /// The most recently used idle connection that is still open and fresh. Those found
    /// closed are dropped after the lock is released.
    fn pop_idle(&self) -> Option<Box<Conn<Stream>>> {
        let mut closed = Vec::new();
        let found = {
            let mut idle = lock(&self.idle);
            loop {
                match idle.pop() {
                    // Everything below has idled longer still.
                    Some(entry) if entry.since.elapsed() > IDLE_TIMEOUT => {
                        closed.push(entry);
                        closed.append(&mut idle);
                        break None;
                    }
                    Some(entry) if entry.conn.stream.closed_while_idle() => closed.push(entry),
                    Some(entry) => break Some(entry.conn),
                    None => break None,
                }
            }
        };
        drop(closed);
        found
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
                .map_err(SendError::Http2)?;
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
        Ok(Taken::Http1 {
            conn: Conn::new(Stream::from_io(io)),
            reused: false,
        })
    }
}

impl Home<Stream> for Origin {
    fn put_back(&self, conn: Box<Conn<Stream>>) {
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            idle.retain(|entry| !entry.conn.stream.closed_while_idle());
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// A lock that a panic elsewhere cannot poison: the data (connections) stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An upstream response body: read from an HTTP/1.1 connection in the reader's task
/// (which goes back to its origin's idle stack when the body has been read to its end, and
/// closes when the body is dropped before), or an HTTP/2 stream.
pub struct PooledBody(Inner);

enum Inner {
    Http1(WireBody<Stream>),
    Http2(Incoming),
}

/// Why an upstream response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// On HTTP/2.
    #[error(transparent)]
    Http2(hyper::Error),
    /// On HTTP/1.1.
    #[error(transparent)]
    Http1(WireError),
}

impl PooledBody {
    fn http1(body: WireBody<Stream>) -> Self {
        Self(Inner::Http1(body))
    }

    fn http2(body: Incoming) -> Self {
        Self(Inner::Http2(body))
    }

    /// After `101 Switching Protocols`: the upstream connection, for the tunnel.
    pub(crate) fn take_upgrade(&mut self) -> Option<Upgraded<Stream>> {
        match &mut self.0 {
            Inner::Http1(body) => body.take_upgrade(),
            Inner::Http2(_) => None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.0 {
            Inner::Http1(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Http1),
            Inner::Http2(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Http2),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Http1(body) => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}
