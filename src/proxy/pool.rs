//! Kept-alive HTTP/1.1 connections to plain-HTTP upstreams: the sidecar's hot path.
//!
//! hyper-util's general client (TLS, ALPN, HTTP/2) costs about a fifth of a forwarded
//! request's CPU in checkout, hashing and bookkeeping. For `http://` upstreams spoken to
//! in HTTP/1.1 this pool does the same job with a short list per upstream: take the most
//! recently used connection that is ready, send, put it back as soon as the response
//! head is in (hyper marks it ready again once the body has been read).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::forward::{OutboundBody, CONNECT_TIMEOUT};

/// Idle connections older than this are closed rather than reused (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// At most this many idle connections are kept per upstream; more are closed.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

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
    Http(#[from] hyper::Error),
}

/// Idle connections, most recently used last, per upstream authority.
#[derive(Debug, Default)]
pub struct Http1Pool {
    upstreams: Mutex<Vec<(Authority, Vec<Idle>)>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<OutboundBody>,
    since: Instant,
}

impl Http1Pool {
    /// Sends `request` (absolute URI, `http` scheme) over a kept-alive connection, or a
    /// new one. A request that a reused connection closed before it was written is sent
    /// once more on a fresh connection.
    pub async fn send(&self, mut request: Request<OutboundBody>) -> Result<Response<Incoming>, PoolError> {
        let authority = request
            .uri()
            .authority()
            .cloned()
            .expect("upstream URIs always carry an authority");
        *request.uri_mut() = origin_form(request.uri());
        loop {
            let (mut sender, reused) = match self.checkout(&authority) {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and its future would make every send larger.
                None => (Box::pin(connect(&authority)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(authority, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// The most recently used ready connection; closed and expired ones met on the way
    /// are dropped, busy ones (a response body still being read) stay.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<OutboundBody>> {
        let mut upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = &mut upstreams.iter_mut().find(|(a, _)| a == authority)?.1;
        while let Some(at) = idle
            .iter()
            .rposition(|c| c.sender.is_ready() || c.sender.is_closed())
        {
            let candidate = idle.remove(at);
            if candidate.sender.is_ready() && candidate.since.elapsed() < IDLE_TIMEOUT {
                return Some(candidate.sender);
            }
        }
        None
    }

    /// Puts a connection back on top; the oldest ones, at the bottom, go once expired.
    fn checkin(&self, authority: Authority, sender: SendRequest<OutboundBody>) {
        let now = Instant::now();
        let mut upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = match upstreams.iter().position(|(a, _)| *a == authority) {
            Some(index) => &mut upstreams[index].1,
            None => {
                upstreams.push((authority, Vec::new()));
                &mut upstreams.last_mut().expect("just pushed").1
            }
        };
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(Idle { sender, since: now });
        }
    }
}

/// `/path?query`: what an HTTP/1.1 request line carries to an origin server.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
        .into()
}

/// Opens a connection (`TCP_NODELAY`, upgrades allowed) and leaves hyper driving it in
/// its own task.
async fn connect(authority: &Authority) -> Result<SendRequest<OutboundBody>, PoolError> {
    let fail = |reason: String| PoolError::Connect {
        authority: authority.clone(),
        reason,
    };
    let address = (
        authority.host().trim_matches(['[', ']']),
        authority.port_u16().unwrap_or(80),
    );
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(fail(error.to_string())),
        Err(_) => return Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    };
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
