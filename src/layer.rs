//! A tower [`Layer`] that adds `Authorization: Bearer <token>` from a [`TokenCache`] to
//! any HTTP client's requests, so an application can call ZITADEL-protected APIs
//! directly, without running the proxy.
//!
//! The proxy itself does more (header cleaning, buffering and replaying a refused
//! request); this layer is the embeddable core: await a valid token, set the header,
//! call the inner service, and drop the token when the upstream answers 401.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::token::{NoToken, TokenCache};

/// Adds a bearer token from a [`TokenCache`] to every request; wraps services in
/// [`Bearer`].
///
/// The header mode is *override*: whatever `Authorization` the caller set is removed and
/// replaced by the cached token, so a request can never leave with someone else's
/// credential. The value is marked sensitive, so hyper's HTTP/2 encoder and `Debug`
/// output leave it alone.
///
/// When the upstream answers `401 Unauthorized`, the token is dropped from the cache
/// ([`TokenCache::reject`]) and the *next* request carries a freshly minted one. The
/// refused request itself is **not** replayed: its body has been handed to the inner
/// service and a generic body cannot be sent twice. To retry, put a retry layer that can
/// clone requests (`tower::retry`) *outside* this one, so every attempt passes through
/// [`Bearer`] again and picks up the new token.
///
/// # Example
///
/// A hyper-util client that authenticates every request:
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty};
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use mintproxy::layer::BearerLayer;
/// use mintproxy::token::TokenCache;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # async fn example(cache: TokenCache) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // `cache` comes from `TokenCache::spawn(..)`, see `examples/cached_token.rs`.
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
/// let client = ServiceBuilder::new()
///     .layer(BearerLayer::new(cache))
///     .service(client);
///
/// let request = http::Request::get("http://api.internal/v1/things").body(Empty::new())?;
/// let response = client.oneshot(request).await?;
/// println!("{}", response.status());
/// let body = response.into_body().collect().await?.to_bytes();
/// # let _ = body;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BearerLayer {
    cache: TokenCache,
}

impl BearerLayer {
    /// A layer that takes its tokens from `cache`.
    pub fn new(cache: TokenCache) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bearer::new(inner, self.cache.clone())
    }
}

/// The service [`BearerLayer`] builds: sets the bearer header, then calls `S`.
///
/// `S` must be `Clone`: the token is awaited before `S` is called, so each call takes the
/// service that was polled ready and leaves a clone in its place (the tower-http
/// `AsyncRequireAuthorization` pattern). hyper-util's client is cheap to clone.
#[derive(Debug, Clone)]
pub struct Bearer<S> {
    inner: S,
    cache: TokenCache,
}

impl<S> Bearer<S> {
    /// Wraps `inner`, taking tokens from `cache`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        Self { inner, cache }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Why a [`Bearer`] call failed: no token to send, or the inner service failed.
///
/// An enum rather than `Box<dyn Error + Send + Sync>` so callers keep the inner error's
/// type (hyper-util's `is_connect()`, say) and can tell "no token" (answer 503, the
/// upstream was never contacted) from a transport failure without downcasting. It still
/// converts into tower's `BoxError` with `?` or `.into()` when stacked with layers that
/// erase errors.
#[derive(Debug, thiserror::Error)]
pub enum BearerError<E> {
    /// The cache has no valid token; the request was not sent.
    #[error(transparent)]
    NoToken(NoToken),
    /// The inner service failed (readiness or the call itself).
    #[error(transparent)]
    Inner(E),
}

impl<E> BearerError<E> {
    /// The [`NoToken`] reason, when that is why the call failed.
    pub fn no_token(&self) -> Option<&NoToken> {
        match self {
            Self::NoToken(reason) => Some(reason),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, when that is why the call failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            Self::NoToken(_) => None,
        }
    }
}

/// The future [`Bearer`] returns.
///
/// Boxed: one allocation per request, which is noise next to a network round trip, and
/// it saves a hand-written state machine (the future of [`TokenCache::token`] is an
/// `async fn` future with no nameable type, so it would need boxing anyway) and a
/// pin-projection dependency. The cost is that the inner service and its future must be
/// `Send`.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, BearerError<E>>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Bearer<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BearerError<S::Error>;
    type Future = ResponseFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BearerError::Inner)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // `self.inner` is the instance `poll_ready` prepared; take it and leave a clone,
        // so the next caller polls its own and this one stays ready across the await.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.clone();
        Box::pin(async move {
            let token = cache.token().await.map_err(BearerError::NoToken)?;
            // `insert` drops every value the caller set, then adds ours (already marked
            // sensitive by the cache).
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.header().clone());
            let response = inner.call(request).await.map_err(BearerError::Inner)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                // Only the first 401 for this token mints; later ones find it replaced.
                cache.reject(&token);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::fake::{cache, Counting};
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    /// What the fake upstream saw: every `Authorization` value of every request, and
    /// whether each was marked sensitive.
    #[derive(Default)]
    struct Upstream {
        seen: Mutex<Vec<Vec<(String, bool)>>>,
        /// Statuses to answer, in order; 200 once the script runs out.
        script: Mutex<VecDeque<StatusCode>>,
    }

    impl Upstream {
        fn scripted(statuses: &[StatusCode]) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(statuses.iter().copied().collect()),
                ..Self::default()
            })
        }

        fn seen(&self) -> Vec<Vec<(String, bool)>> {
            self.seen.lock().unwrap().clone()
        }

        fn bearers(&self) -> Vec<String> {
            self.seen()
                .into_iter()
                .map(|values| {
                    assert_eq!(values.len(), 1, "exactly one Authorization: {values:?}");
                    values[0].0.clone()
                })
                .collect()
        }
    }

    /// The layer over a `service_fn` that records and answers as `upstream` says.
    fn client(
        cache: TokenCache,
        upstream: &Arc<Upstream>,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BearerError<Infallible>> + Clone {
        let upstream = upstream.clone();
        let inner = service_fn(move |request: Request<()>| {
            let values = request
                .headers()
                .get_all(AUTHORIZATION)
                .iter()
                .map(|v| (v.to_str().unwrap().to_owned(), v.is_sensitive()))
                .collect();
            upstream.seen.lock().unwrap().push(values);
            let status = upstream
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(StatusCode::OK);
            let mut response = Response::new(());
            *response.status_mut() = status;
            std::future::ready(Ok::<_, Infallible>(response))
        });
        ServiceBuilder::new()
            .layer(BearerLayer::new(cache))
            .service(inner)
    }

    fn get() -> Request<()> {
        Request::get("http://upstream.test/").body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn sets_the_bearer_and_overrides_the_callers_authorization() {
        let source = Arc::new(Counting::living(Duration::from_secs(600)));
        let upstream = Upstream::scripted(&[]);
        let client = client(cache(&source), &upstream);

        let mut request = get();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        headers.append(AUTHORIZATION, "Bearer someone-elses".parse().unwrap());
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        client.oneshot(get()).await.unwrap();
        assert_eq!(
            upstream.seen(),
            vec![
                vec![("Bearer token-1".to_owned(), true)],
                vec![("Bearer token-1".to_owned(), true)],
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_share_one_fetch() {
        let source = Arc::new(Counting::living(Duration::from_secs(600)));
        let upstream = Upstream::scripted(&[]);
        let client = client(cache(&source), &upstream);

        // Both start before the first token exists: both wait for the one fetch.
        let (a, b) = tokio::join!(client.clone().oneshot(get()), client.clone().oneshot(get()));
        a.unwrap();
        b.unwrap();
        client.oneshot(get()).await.unwrap();

        assert_eq!(upstream.bearers(), ["Bearer token-1"; 3]);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_has_the_next_request_carry_a_new_token() {
        let source = Arc::new(Counting::living(Duration::from_secs(600)));
        let upstream = Upstream::scripted(&[StatusCode::UNAUTHORIZED]);
        let client = client(cache(&source), &upstream);

        // The refused response is handed back as is: no replay in the layer.
        let refused = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let next = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        client.oneshot(get()).await.unwrap();

        assert_eq!(
            upstream.bearers(),
            ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
        );
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_token_fails_without_calling_the_upstream() {
        let source = Arc::new(Counting::living(Duration::from_secs(600)));
        source.failing.store(true, Ordering::SeqCst);
        let upstream = Upstream::scripted(&[]);
        let client = client(cache(&source), &upstream);

        let error = client.oneshot(get()).await.unwrap_err();
        assert!(matches!(error.no_token(), Some(NoToken::Failed(_))), "{error:?}");
        assert!(error.to_string().starts_with("no valid token"), "{error}");
        assert!(upstream.seen().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_pass_through() {
        let source = Arc::new(Counting::living(Duration::from_secs(600)));
        let inner = service_fn(|_: Request<()>| async {
            Err::<Response<()>, _>(std::io::Error::other("connection refused"))
        });
        let client = BearerLayer::new(cache(&source)).layer(inner);

        let error = client.oneshot(get()).await.unwrap_err();
        assert!(error.no_token().is_none());
        assert_eq!(error.to_string(), "connection refused");
        // Stacks with layers that erase errors.
        let erased: tower::BoxError = error.into();
        assert!(erased.downcast_ref::<BearerError<std::io::Error>>().is_some());
    }
}
