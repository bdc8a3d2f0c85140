//! The listener side: TCP or Unix socket, optional TLS, HTTP/1.1 and HTTP/2 with
//! upgrades, connection limits, and the drain on shutdown.
//!
//! Every connection is served by hyper (HTTP/1.1, or HTTP/2 by ALPN or prior knowledge),
//! so framing, limits and timeouts have one implementation.

mod header_timer;
mod slots;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::{ArrivedOverTls, Peer, Proxy};
use http::Request;
use hyper::body::{Body, Incoming};
use tokio_rustls::TlsAcceptor;

use self::header_timer::ConnectionTimer;
use self::slots::{Busy, Slot, Slots};

/// The listen backlog: room for a burst of new connections while the accept loop is busy
/// (the standard library's 128 overflowed under a burst of a thousand).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Where the proxy listens: a TCP address, or a Unix socket (`unix:/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `127.0.0.1:8080`.
    Tcp(SocketAddr),
    /// `unix:/run/mintproxy.sock`, created owner-only.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix("unix:") {
            Some("") => Err("unix: needs a path, e.g. unix:/run/mintproxy.sock".to_owned()),
            Some(path) => Ok(Self::Unix(PathBuf::from(path))),
            None => parse_tcp_addr(text).map(Self::Tcp),
        }
    }
}

/// A TCP address to listen on: `127.0.0.1:8080`, `[::1]:8080`, or a host name and port.
/// `localhost` is loopback (RFC 6761) without asking DNS; another name is resolved and its
/// first address bound, so one that resolves off this machine still needs `--allow-remote`.
pub fn parse_tcp_addr(text: &str) -> Result<SocketAddr, String> {
    parse_tcp_addr_with(text, |host, port| {
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map(Iterator::collect)
    })
}

fn parse_tcp_addr_with(
    text: &str,
    resolve: impl FnOnce(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let unlike = || format!("{text:?} is not an address like 127.0.0.1:8080, localhost:8080 or unix:/path");
    let (host, port) = text.rsplit_once(':').ok_or_else(unlike)?;
    let port: u16 = port.parse().map_err(|_| unlike())?;
    // Empty, or an IPv6 address without its brackets.
    if host.is_empty() || host.contains(':') {
        return Err(unlike());
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
    }
    let addrs = resolve(host, port).map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Only reachable from this machine: a loopback address or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(addr) => addr.ip().is_loopback(),
            Self::Unix(_) => true,
        }
    }

    /// How a client reaches it: `http://127.0.0.1:8080` or `unix:/path`.
    pub fn url(&self) -> String {
        match self {
            Self::Tcp(addr) => format!("http://{addr}"),
            Self::Unix(_) => self.to_string(),
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket, and its path (removed on shutdown).
    Unix(UnixListener, PathBuf),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl Listener {
    /// Binds `addr`. A Unix socket replaces a stale socket file and is made owner-only:
    /// whoever can connect acts with the credentials' rights.
    pub async fn bind(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.set_reuseaddr(true)?;
                socket.bind(*addr)?;
                Ok(Self::Tcp(socket.listen(LISTEN_BACKLOG)?))
            }
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket()) {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Self::Unix(listener, path.clone()))
            }
        }
    }

    /// The bound address (with the port picked for port 0).
    pub fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(ListenAddr::Tcp),
            Self::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    async fn accept(&self) -> std::io::Result<(Accepted, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                Ok((Accepted::Tcp(stream), Some(remote)))
            }
            Self::Unix(listener, _) => Ok((Accepted::Unix(listener.accept().await?.0), None)),
        }
    }
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Any connection, plain or TLS, TCP or Unix: one type for hyper (one allocation per
/// connection).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request header section, in bytes.
    pub max_header_size: usize,
    /// Most connections served at once; at the limit the longest-idle one is closed to
    /// admit a new one.
    pub max_connections: usize,
    /// How long in-flight requests may run on after shutdown begins.
    pub shutdown_timeout: Duration,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every request in flight was answered.
    Complete,
    /// The shutdown timeout cut this many requests short.
    Cut(usize),
}

/// Serves `proxy` on an already bound `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish within the shutdown timeout.
pub async fn serve(
    listener: Listener,
    proxy: Proxy,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Each connection gets its own timer ([`ConnectionTimer`]) below.
        .header_read_timeout(options.header_read_timeout)
        // A client may shut its sending side once its request is out and still get the
        // answer. It also spares hyper a read while a request is in flight, which costs a
        // fresh read buffer per request. The price: a client that vanishes mid-request is
        // noticed at the next write, not at once.
        .half_close(true)
        // hyper's minimum buffer is 8 KiB; a larger header section gets 431.
        .max_buf_size(options.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_size).unwrap_or(u32::MAX));
    // Connections being served, and the signal for them to finish.
    let serving = TaskTracker::new();
    let stop = CancellationToken::new();
    let slots = Slots::new(options.max_connections, stop.clone());
    tokio::pin!(shutdown);
    loop {
        let (accepted, remote) = tokio::select! {
            accepted = next_connection(|| listener.accept(), "accept failed") => accepted,
            () = &mut shutdown => break,
        };
        // At the limit, an idle connection makes room; while every connection has a
        // request in flight, the new one waits here and the next ones in the backlog.
        let slot = tokio::select! {
            slot = slots.acquire() => slot,
            () = &mut shutdown => break,
        };
        let tls = options.tls.clone().map(TlsAcceptor::from);
        let over_tls = tls.is_some();
        // One allocation per connection; each request then costs one reference count.
        let session = Arc::new(Session {
            proxy: proxy.clone(),
            peer: Peer::new(remote),
            slot,
        });
        let mut builder = builder.clone();
        builder.http1().timer(ConnectionTimer::default());
        let header_read_timeout = options.header_read_timeout;
        serving.spawn(async move {
            // hyper's header timeout starts once it reads a request head, after hyper-util
            // has read enough to tell HTTP/1.1 from HTTP/2 with no timeout of its own: a
            // connection that sends nothing would otherwise hold its slot forever.
            let deadline = tokio::time::Instant::now() + header_read_timeout;
            let closing = session.slot.closing();
            let io: Box<dyn Io> = match accepted {
                Accepted::Tcp(stream) => {
                    let _ = stream.set_nodelay(true);
                    let mut byte = [0u8; 1];
                    let first_byte = tokio::select! {
                        first = tokio::time::timeout_at(deadline, stream.peek(&mut byte)) => first.is_ok(),
                        () = closing.cancelled() => false,
                    };
                    if !first_byte {
                        tracing::debug!(?remote, "closing a connection that sent nothing");
                        return;
                    }
                    Box::new(stream)
                }
                Accepted::Unix(stream) => {
                    let readable = tokio::select! {
                        readable = tokio::time::timeout_at(deadline, stream.readable()) => readable.is_ok(),
                        () = closing.cancelled() => false,
                    };
                    if !readable {
                        return;
                    }
                    Box::new(stream)
                }
            };
            let io: Box<dyn Io> = match tls {
                None => io,
                // Boxed, like hyper's part below: a handshake's state is large.
                Some(tls) => match Box::pin(tokio::time::timeout_at(deadline, tls.accept(io))).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(error)) => {
                        tracing::debug!(?remote, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            Box::pin(serve_with_hyper(builder, io, session, over_tls, remote)).await;
        });
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    tracing::info!(
        in_flight = slots.in_flight(),
        deadline_s = options.shutdown_timeout.as_secs_f64(),
        "shutting down: draining in-flight requests (a second Ctrl-C stops at once)"
    );
    stop.cancel();
    serving.close();
    if tokio::time::timeout(options.shutdown_timeout, serving.wait())
        .await
        .is_ok()
    {
        return Drained::Complete;
    }
    let cut = slots.in_flight();
    tracing::warn!(
        requests_cut = cut,
        timeout = ?options.shutdown_timeout,
        "in-flight requests did not finish by the drain deadline"
    );
    Drained::Cut(cut)
}

/// What every request of a connection shares.
struct Session {
    proxy: Proxy,
    peer: Peer,
    slot: Slot,
}

/// The next connection `accept` gives. A failed accept (out of file descriptors and the
/// like) is logged as `failed` and retried after a pause, instead of spinning.
pub(crate) async fn next_connection<T, F>(mut accept: impl FnMut() -> F, failed: &'static str) -> T
where
    F: Future<Output = std::io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "{failed}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `io` with hyper (HTTP/1.1 or HTTP/2, upgrades) until it closes, closing it
/// gracefully once its slot is asked to. The caller boxes it, so that a connection's task
/// stays small while it waits for its first byte.
async fn serve_with_hyper(
    builder: auto::Builder<TokioExecutor>,
    io: Box<dyn Io>,
    session: Arc<Session>,
    over_tls: bool,
    remote: Option<SocketAddr>,
) {
    let closing = session.slot.closing().clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        if over_tls {
            request.extensions_mut().insert(ArrivedOverTls);
        }
        let session = Arc::clone(&session);
        async move {
            let busy = session.slot.request();
            let response = session.proxy.handle(request, &session.peer).await;
            Ok::<_, Infallible>(response.map(|body| InFlight { body, _busy: busy }))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(?remote, error = %error, "connection ended with an error");
    }
}

/// A response body that keeps its request counted as in flight until it has been sent or
/// dropped.
struct InFlight<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A shutdown signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit status of a process this signal stopped short: 128 + its number, as shells
    /// report it.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// SIGTERM and SIGINT, subscribed to once, so a signal sent between two waits still counts.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Interrupt,
            _ = self.terminate.recv() => Signal::Terminate,
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Two futures over the process's signals: the first SIGTERM or SIGINT completes the first
/// (begin the graceful drain), the next one the second (a caller who will not wait for the
/// drain: stop now), with that signal.
pub fn shutdown_signals() -> std::io::Result<(
    impl Future<Output = ()> + Send,
    impl Future<Output = Signal> + Send,
)> {
    let mut signals = Signals::new()?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        signals.recv().await;
        let _ = first_tx.send(());
        let _ = second_tx.send(signals.recv().await);
    });
    // The listening task only ends with the runtime: a closed channel is no signal.
    let first = async {
        if first_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let second = async {
        match second_rx.await {
            Ok(signal) => signal,
            Err(_) => std::future::pending().await,
        }
    };
    Ok((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(host: &str, _: u16) -> std::io::Result<Vec<SocketAddr>> {
        panic!("{host} must not be looked up")
    }

    #[test]
    fn localhost_and_bracketed_ipv6_are_loopback_without_dns() {
        for (text, expected) in [
            ("localhost:8080", "127.0.0.1:8080"),
            ("LocalHost:0", "127.0.0.1:0"),
            ("[::1]:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            let addr = parse_tcp_addr_with(text, no_dns).unwrap();
            assert_eq!(addr, expected.parse().unwrap(), "{text}");
            assert!(ListenAddr::Tcp(addr).is_local(), "{text}");
        }
    }

    #[test]
    fn a_name_listens_on_its_first_address_and_is_local_only_if_that_is_loopback() {
        let resolves_to = |ip: &'static str| {
            move |host: &str, port: u16| {
                assert_eq!((host, port), ("proxy.internal", 8080));
                Ok(vec![SocketAddr::new(ip.parse().unwrap(), port)])
            }
        };
        let remote = parse_tcp_addr_with("proxy.internal:8080", resolves_to("10.0.0.7")).unwrap();
        assert_eq!(remote, "10.0.0.7:8080".parse().unwrap());
        assert!(!ListenAddr::Tcp(remote).is_local(), "needs --allow-remote");
        let local = parse_tcp_addr_with("proxy.internal:8080", resolves_to("127.0.0.2")).unwrap();
        assert!(ListenAddr::Tcp(local).is_local());
    }

    #[test]
    fn bad_listen_addresses_say_what_is_wrong() {
        let unlike = |text: &str| {
            format!("{text:?} is not an address like 127.0.0.1:8080, localhost:8080 or unix:/path")
        };
        for text in [
            "localhost",
            "localhost:http",
            ":8080",
            "::1:8080",
            "localhost:70000",
        ] {
            assert_eq!(parse_tcp_addr_with(text, no_dns), Err(unlike(text)), "{text}");
        }
        let unresolvable = |_: &str, _: u16| Err(std::io::Error::other("no such host"));
        assert_eq!(
            parse_tcp_addr_with("proxy.invalid:8080", unresolvable),
            Err("cannot resolve \"proxy.invalid\": no such host".to_owned())
        );
        assert_eq!(
            "unix:".parse::<ListenAddr>(),
            Err("unix: needs a path, e.g. unix:/run/mintproxy.sock".to_owned())
        );
    }
}
