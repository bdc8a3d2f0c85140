//! The listener side: accept connections, serve HTTP/1.1 and HTTP/2, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::tls::{self, TlsError};

use crate::proxy::{ArrivedOverTls, Proxy};
use http::Request;
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request header section, in bytes.
    pub max_header_size: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long in-flight requests may run on after shutdown begins.
    pub shutdown_timeout: Duration,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServerOptions {
    /// The listener settings of `config`: its limits, and TLS when configured.
    pub fn for_config(config: &Config) -> Result<Self, TlsError> {
        let limits = &config.limits;
        Ok(Self {
            header_read_timeout: limits.header_read_timeout,
            max_header_size: limits.max_header_size,
            max_connections: limits.max_connections,
            shutdown_timeout: limits.shutdown_timeout,
            tls: config
                .inbound_tls
                .as_ref()
                .map(tls::server_config)
                .transpose()?
                .map(Arc::new),
        })
    }
}

/// Serves `proxy` on an already bound `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish within the shutdown timeout.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper's minimum buffer is 8 KiB; a larger header section gets 431.
        .max_buf_size(options.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_size).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // At the limit, stop accepting: new connections wait in the kernel's queue.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let tls = options.tls.clone().map(TlsAcceptor::from);
        let proxy = proxy.clone();
        let over_tls = tls.is_some();
        let service = service_fn(move |mut request: Request<Incoming>| {
            if over_tls {
                request.extensions_mut().insert(ArrivedOverTls);
            }
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, remote).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_read_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            // hyper's header timeout starts with the first byte; a connection that sends
            // nothing would otherwise hold its slot forever.
            let mut first = [0u8; 1];
            if tokio::time::timeout(header_read_timeout, stream.peek(&mut first))
                .await
                .is_err()
            {
                tracing::debug!(%remote, "closing a connection that sent nothing");
                return;
            }
            let served = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        watcher
                            .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service))
                            .await
                    }
                    Ok(Err(error)) => Err(error.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(error) = served {
                tracing::debug!(%remote, error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(options.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?options.shutdown_timeout, "in-flight requests did not finish in time");
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
