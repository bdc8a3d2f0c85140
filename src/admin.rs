//! The admin listener: `/healthz`, `/readyz` and `/metrics` on their own address, apart
//! from the proxied paths (so no upstream path can collide with them, and probes and
//! scrapes never pass the Host guard or carry a token).
//!
//! Readiness says whether a request would be served: `/readyz` answers 200 while every
//! credential holds a valid token (or is replacing one an upstream refused, which
//! requests wait for), and 503 whenever a request would get `503 no_token` instead:
//! before the first token, and once a token expired and could not be renewed. A blink of
//! the issuer while the token is still valid does not show, since the previous token keeps
//! serving. It is 503 again from the shutdown signal on.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};
use crate::token::TokenCache;

/// How long a client may take to send a request's headers to the admin listener.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight admin requests may finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin endpoints report on: the token caches (readiness) and the metrics.
#[derive(Debug)]
pub struct Admin {
    /// One per credential; a reload replaces them.
    caches: ArcSwap<Vec<TokenCache>>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Admin {
    /// Reports on `caches` (one per credential) and serves `metrics`.
    pub fn new(caches: Vec<TokenCache>, metrics: Arc<Metrics>) -> Self {
        Self {
            caches: ArcSwap::from_pointee(caches),
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// Reports on `caches` from now on: the credentials of a reloaded configuration.
    pub(crate) fn replace_caches(&self, caches: Vec<TokenCache>) {
        self.caches.store(Arc::new(caches));
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Answers one admin request: `GET` or `HEAD` on `/healthz`, `/readyz` or `/metrics`.
    pub fn handle<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readiness(),
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /healthz, /readyz and /metrics\n",
            ),
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if request.method() == Method::HEAD {
            *response.body_mut() = Full::default();
        }
        response
    }

    /// 200 while every credential would serve a request, 503 when one would not and
    /// while draining; the body lists each credential's current state.
    fn readiness(&self) -> Response<Full<Bytes>> {
        let now = SystemTime::now();
        let mut all_serving = true;
        let credentials: Vec<serde_json::Value> = self
            .caches
            .load()
            .iter()
            .map(|cache| {
                let valid = cache.valid();
                all_serving &= cache.serving();
                let mut entry = json!({ "name": cache.name(), "restarts": cache.restarts() });
                match (&valid, cache.last_error()) {
                    (Some(_), _) => entry["state"] = json!("ready"),
                    (None, Some(_)) => entry["state"] = json!("failing"),
                    (None, None) => entry["state"] = json!("fetching"),
                }
                if let Some(expires_at) = valid.as_ref().and_then(|t| t.expires_at) {
                    let left = expires_at.duration_since(now).unwrap_or_default();
                    entry["expires_in_s"] = json!(left.as_secs());
                }
                if let Some(error) = cache.last_error() {
                    entry["last_error"] = json!(error.to_string());
                    if let Some(diagnosis) = error.diagnosis() {
                        entry["diagnosis"] = json!(diagnosis);
                    }
                }
                entry
            })
            .collect();
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = all_serving && !draining;
        let body = json!({
            "ready": ready,
            "draining": draining,
            "credentials": credentials,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves `admin` on an already bound `listener` (HTTP/1.1) until `shutdown` completes.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening on http://{addr} (/healthz, /readyz, /metrics)");
    }
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = crate::server::next_connection(|| listener.accept(), "admin accept failed") => accepted,
            () = &mut shutdown => break,
        };
        let admin = admin.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = admin.handle(&request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%remote, %error, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;
    use crate::token::{FetchFuture, RefreshPolicy, Token, TokenError, TokenSource};
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicBool;
    use tokio_util::sync::CancellationToken;

    /// Fails until told otherwise, then issues 10-minute tokens.
    #[derive(Default)]
    struct Switch {
        working: AtomicBool,
    }

    impl TokenSource for Switch {
        fn fetch(&self) -> FetchFuture<'_> {
            Box::pin(async move {
                if !self.working.load(Ordering::SeqCst) {
                    return Err(TokenError::NotAHeader);
                }
                Ok(Token {
                    access_token: AccessToken::new("t".to_owned()),
                    lifetime: Some(Duration::from_secs(600)),
                    scope: None,
                })
            })
        }
    }

    async fn get(admin: &Admin, method: Method, path: &str) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(path).body(()).unwrap();
        let response = admin.handle(&request);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_whether_a_request_would_be_served() {
        let stop = CancellationToken::new();
        let source = Arc::new(Switch::default());
        let metrics = Arc::new(Metrics::new());
        let policy = RefreshPolicy::default();
        let cache =
            TokenCache::spawn_observed("a", source.clone(), policy, stop.clone(), Some(metrics.clone()));
        let admin = Admin::new(vec![cache.clone()], metrics);
        tokio::time::sleep(Duration::from_millis(1)).await;

        let (status, body) = get(&admin, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["ready"], false);
        assert_eq!(body["credentials"][0]["name"], "a");
        assert_eq!(body["credentials"][0]["state"], "failing");
        assert!(body["credentials"][0]["last_error"].is_string());
        assert_eq!(get(&admin, Method::GET, "/healthz").await.0, StatusCode::OK);

        // The refresher retries within its backoff cap (10 s).
        source.working.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(cache.valid().is_some());
        let (status, body) = get(&admin, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["credentials"][0]["state"], "ready");
        assert!(body["credentials"][0]["expires_in_s"].as_u64().unwrap() > 500);

        // The issuer fails while the token is valid: still ready, it keeps serving.
        source.working.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert!(cache.valid().is_some() && cache.last_error().is_some());
        assert_eq!(get(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);
        // The token expires and cannot be renewed: requests would get 503, so does readiness.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(cache.valid().is_none());
        let (status, body) = get(&admin, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"state\":\"failing\""), "{body}");
        // Back when the issuer is.
        source.working.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(get(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);

        admin.drain();
        assert_eq!(
            get(&admin, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&admin, Method::GET, "/healthz").await.0, StatusCode::OK);
        stop.cancel();
    }

    #[tokio::test]
    async fn metrics_unknown_paths_and_methods() {
        let metrics = Arc::new(Metrics::new());
        let admin = Admin::new(Vec::new(), metrics.clone());
        // No credentials: ready at once.
        assert_eq!(get(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);
        crate::token::CacheObserver::minted(&*metrics, "a", None);
        let (status, body) = get(&admin, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE mintproxy_token_fetches counter"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(get(&admin, Method::GET, "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&admin, Method::GET, "/metrics/x").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&admin, Method::POST, "/healthz").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (status, body) = get(&admin, Method::HEAD, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    }
}
