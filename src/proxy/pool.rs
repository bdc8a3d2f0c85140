//! Kept-alive HTTP/1.1 connections to plain-HTTP upstreams: the sidecar's hot path.
//!
//! The request's own task takes the most recently used connection, writes and reads on
//! it ([`super::http1`]), and the response body gives it back once read to the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderValue, Method, Response};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::forward::{Outbound, CONNECT_TIMEOUT};
use super::http1::{self, WireBody, WireError};

/// Idle connections older than this are closed rather than reused (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// At most this many idle connections are kept per upstream; more are closed.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// Read buffer per connection; it grows for larger heads.
const READ_BUFFER: usize = 8 * 1024;

/// Why a request did not get a response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// TCP connect failed or took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting to {authority}: {reason}")]
    Connect {
        /// The upstream.
        authority: Authority,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP/1.1 exchange failed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Idle connections, most recently used last, per upstream authority.
#[derive(Debug, Default)]
pub struct Http1Pool {
    upstreams: Mutex<Vec<(Authority, Vec<Idle>)>>,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

/// One upstream connection, the bytes read from it but not yet used, and the deadline of
/// its current request: one timer per connection, moved on per request, instead of a timer
/// set and cleared per request.
pub struct Connection {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
    pub(super) deadline: Pin<Box<Sleep>>,
}

/// Shows the socket and how much is buffered, never the bytes: a response may carry a
/// token.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Reads what is there (waiting for at least one byte) before the deadline; `Ok(0)`
    /// means the peer closed.
    pub(super) async fn read_more_before_deadline(&mut self) -> Result<std::io::Result<usize>, WireError> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(read) = self.poll_read_more(cx) {
                return Poll::Ready(Ok(read));
            }
            ready!(self.deadline.as_mut().poll(cx));
            Poll::Ready(Err(WireError::TimedOut))
        })
        .await
    }

    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_BUFFER);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Whether the upstream closed (or sent something unasked) while the connection sat
    /// idle. Asks the socket only when the runtime saw it become readable.
    fn went_stale(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        !matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// The right to put a connection back into the pool it came from.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Http1Pool>,
    authority: Authority,
}

impl Lease {
    /// Puts the connection back on top; the oldest ones, at the bottom, go once expired.
    pub(super) fn give_back(self, connection: Connection) {
        let now = Instant::now();
        let mut upstreams = self.pool.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = match upstreams.iter().position(|(a, _)| *a == self.authority) {
            Some(index) => &mut upstreams[index].1,
            None => {
                upstreams.push((self.authority, Vec::new()));
                &mut upstreams.last_mut().expect("just pushed").1
            }
        };
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        // Closed after the lock is released.
        let dead: Vec<Idle> = idle.drain(..expired).collect();
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(Idle {
                connection,
                since: now,
            });
        }
        drop(upstreams);
        drop(dead);
    }
}

impl Http1Pool {
    /// Sends `outbound` (absolute `http` URI) with `authorization` and a buffered `body`
    /// over a kept-alive connection, or a new one, and reads the response head by
    /// `deadline`. When a reused connection turns out to be closed before any of the
    /// response arrived, the request goes once more, on a fresh connection, if it was
    /// never written or is idempotent.
    pub async fn send(
        self: &Arc<Self>,
        outbound: &Outbound<'_>,
        authorization: &HeaderValue,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<WireBody>, PoolError> {
        let authority = outbound
            .uri
            .authority()
            .expect("upstream URIs always carry an authority");
        let wire = http1::encode_request(outbound, authorization, &body);
        let method = &outbound.method;
        let mut may_retry = true;
        loop {
            let pooled = if may_retry { self.checkout(authority) } else { None };
            let (mut connection, reused) = match pooled {
                Some(mut connection) => {
                    connection.deadline.as_mut().reset(deadline);
                    (connection, true)
                }
                // Boxed: connecting is rare, and its future would make every send larger.
                None => (Box::pin(connect(authority, deadline)).await?, false),
            };
            let retry = reused && may_retry;
            may_retry = false;
            let lease = Lease {
                pool: Arc::clone(self),
                authority: authority.clone(),
            };
            let result = match http1::write_request(&mut connection, &wire).await {
                Ok(()) => http1::read_response(connection, lease, method).await,
                Err(error) if retry => {
                    tracing::debug!(%error, "kept-alive upstream connection failed; sending on a new one");
                    continue;
                }
                Err(error) => Err(error),
            };
            match result {
                Err(WireError::Closed { partial: false }) if retry && idempotent(method) => {
                    tracing::debug!("kept-alive upstream connection closed; sending on a new one");
                }
                result => return Ok(result?),
            }
        }
    }

    /// The most recently used connection that is still open and not expired. Those found
    /// closed are dropped after the lock is released.
    fn checkout(&self, authority: &Authority) -> Option<Connection> {
        let mut dead = Vec::new();
        let found = {
            let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = &mut upstreams.iter_mut().find(|(a, _)| a == authority)?.1;
            loop {
                match idle.pop() {
                    Some(c) if c.since.elapsed() < IDLE_TIMEOUT && !c.connection.went_stale() => {
                        break Some(c.connection)
                    }
                    Some(c) => dead.push(c),
                    None => break None,
                }
            }
        };
        drop(dead);
        found
    }
}

/// Requests that may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Opens a connection with `TCP_NODELAY`, within [`CONNECT_TIMEOUT`] and before the
/// request's `deadline`.
async fn connect(authority: &Authority, deadline: Instant) -> Result<Connection, PoolError> {
    let fail = |reason: String| PoolError::Connect {
        authority: authority.clone(),
        reason,
    };
    let address = (
        authority.host().trim_matches(['[', ']']),
        authority.port_u16().unwrap_or(80),
    );
    let limit = deadline.min(Instant::now() + CONNECT_TIMEOUT);
    let stream = match tokio::time::timeout_at(limit, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(fail(error.to_string())),
        Err(_) if limit == deadline => return Err(WireError::TimedOut.into()),
        Err(_) => return Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    };
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    Ok(Connection {
        stream,
        buf: BytesMut::with_capacity(READ_BUFFER),
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
    })
}
