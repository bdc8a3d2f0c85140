//! The request path: from a plain client request to an authenticated upstream request
//! and back.

pub(crate) mod bearer;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod guard;
pub mod headers;
pub(crate) mod http1;
pub mod normalize;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod relay;
pub(crate) mod report;
pub(crate) mod routes;
pub(crate) mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::either::Either as FutureEither;

use crate::trace::{Hop, Propagation, Tracer};
pub use bearer::Bearer;
use bearer::{Issued, Source};
pub use error::ProxyError;
pub(crate) use forward::{ForwardError, Outbound, OutboundBody, UpstreamBody, UpstreamClient};
pub(crate) use guard::HostGuard;
/// The HTTP/1.1 client's response decoder on a whole response, for the fuzz target.
#[doc(hidden)]
pub use http1::codec::decode_all;
pub use policy::Policy;
pub(crate) use pool::Origin;
pub use relay::Relay;
use report::Report;
pub use report::{Failure, RequestObserver, RequestRecord};
pub(crate) use routes::Router;
pub use upstream::Upstream;

/// Marks a request that arrived over TLS (set by the server), for `X-Forwarded-Proto`
/// and redirects.
#[derive(Debug, Clone, Copy)]
pub struct ArrivedOverTls;

/// The client end of a connection, worked out once for all of its requests.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its IP as `X-Forwarded-For` text (`None` on a Unix socket).
    forwarded_for: Option<HeaderValue>,
}

impl Peer {
    /// The peer at `addr` (`None` on a Unix socket).
    pub fn new(addr: Option<SocketAddr>) -> Self {
        Self {
            forwarded_for: addr.map(|addr| headers::forwarded_for(addr.ip())),
        }
    }
}

/// A response body going back to the client: the upstream's, streamed, or our own.
pub type ProxyBody = Either<Relay, Full<Bytes>>;

/// The status logged and counted for a request whose client went away before its answer
/// (nginx's "client closed request"); no client ever receives it.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

/// Request bodies up to this size are kept so a request refused with 401 can be replayed
/// with a fresh token.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// One route: which paths, where they go, which token they carry, what they may do.
#[derive(Debug)]
pub struct Route {
    /// Name for logs (the prefix as configured).
    pub name: String,
    /// Path prefix, without a trailing slash (`""` serves everything).
    pub prefix: String,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Where requests go.
    pub upstream: Upstream,
    /// Where its bearer tokens come from.
    pub tokens: Bearer,
    /// Extra headers set on every upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowlists.
    pub policy: Policy,
    /// Largest request body kept for a replay after 401.
    pub replay_limit: usize,
    /// The upstream's connections, made by `UpstreamClient::origin`.
    pub origin: Arc<Origin>,
}

/// Limits on forwarding.
#[derive(Debug, Clone)]
pub struct ForwardLimits {
    /// Longest wait for the upstream's response headers (504 after).
    pub upstream_timeout: Duration,
    /// Largest request body (413 above), if limited.
    pub max_body_size: Option<u64>,
    /// Largest request header section (431 above), checked on the parsed fields as well
    /// as by hyper's read buffer, which may take in more in one read.
    pub max_header_size: usize,
}

/// What a reload replaces as one: the routes, the Host guard, and the leases that keep
/// the refreshers of the routes' token caches running. A request takes one snapshot and
/// finishes on it, so a refresher stops only once no request uses its credential.
#[derive(Debug)]
pub(crate) struct Routing {
    router: Router,
    guard: HostGuard,
    /// Dropped with the last snapshot holding them; a lease a newer routing shares lives on.
    _leases: Vec<Arc<tokio_util::sync::DropGuard>>,
}

impl Routing {
    /// Requests that pass `guard` go through `router`, while `leases` keep what they need
    /// running.
    pub fn new(router: Router, guard: HostGuard, leases: Vec<Arc<tokio_util::sync::DropGuard>>) -> Self {
        Self {
            router,
            guard,
            _leases: leases,
        }
    }
}

/// A request ready to go upstream ([`Proxy::prepare`]): everything but its bearer and its
/// body's bytes.
struct Forwarding<'r> {
    /// Where its bearer comes from.
    source: Source<'r>,
    outbound: Outbound,
    body: Incoming,
    /// The client's side of an upgrade it asked for.
    client_upgrade: Option<OnUpgrade>,
    /// The scheme the client used.
    scheme: &'static str,
    /// The host the client asked for.
    client_host: Option<HeaderValue>,
}

/// The proxy service. Cheap to clone: one per connection; every clone sees a
/// [`Proxy::replace`] made through any other.
#[derive(Debug, Clone)]
pub struct Proxy {
    routing: Arc<ArcSwap<Routing>>,
    limits: ForwardLimits,
    observer: Option<Arc<dyn RequestObserver>>,
    /// Makes each request's span, when spans are exported.
    tracer: Option<Tracer>,
}

impl Proxy {
    /// A proxy sending requests that pass the guard through the routes of `routing`.
    pub(crate) fn new(routing: Routing, limits: ForwardLimits) -> Self {
        Self {
            routing: Arc::new(ArcSwap::from_pointee(routing)),
            limits,
            observer: None,
            tracer: None,
        }
    }

    /// Serves new requests with `routing`; requests under way finish on the one they
    /// started with.
    pub(crate) fn replace(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }

    /// Gives every request a span made by `tracer`, when given.
    pub fn traced_by(mut self, tracer: Option<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Reports every request to `observer` (the access log, the metrics), when given.
    pub fn observed_by(mut self, observer: Option<Arc<dyn RequestObserver>>) -> Self {
        self.observer = observer;
        self
    }

    /// Handles one request from `peer`; failures become JSON error responses.
    ///
    /// A function returning its future, not an `async fn`, and so is [`Proxy::forward`]: an
    /// `async fn` keeps its arguments twice in its future (rust-lang/rust#62958), the
    /// request among them, and hyper moves this future whole.
    #[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
    pub fn handle<'a>(
        &'a self,
        mut request: Request<Incoming>,
        peer: &'a Peer,
    ) -> impl Future<Output = Response<ProxyBody>> + 'a {
        async move {
            // One snapshot for the whole request, however a reload changes the routes meanwhile.
            let routing = self.routing.load_full();
            let normalized = normalize_path(&routing.router, &mut request);
            // Shares the request's bytes; a copy of the path would cost an allocation.
            let uri = request.uri().clone();
            let path = uri.path();
            let carried = headers::Carried::by(request.headers());
            let grpc = carried.content_type && is_grpc(request.headers());
            let route = routing.router.find(path);
            let hop = match &self.tracer {
                None => Hop::untraced(request.headers(), carried.traceparent),
                Some(tracer) => tracer.server_span(
                    &request,
                    scheme(request.extensions()),
                    peer.forwarded_for.as_ref(),
                ),
            };
            let mut report = Report {
                observer: self
                    .observer
                    .as_deref()
                    .map(|observer| (observer, Instant::now())),
                method: request.method().clone(),
                path,
                route: route.map(|r| r.name.as_str()),
                client_authorization: carried.authorization,
                answered: None,
                span: hop.span,
            };
            let response = if request.method() == Method::CONNECT {
                Err(ProxyError::ConnectRefused)
            } else if is_trace(request.method()) {
                Err(ProxyError::TraceRefused(request.method().clone()))
            } else if headers::section_size(request.headers()) > self.limits.max_header_size {
                Err(ProxyError::RequestHeadTooLarge(self.limits.max_header_size))
            } else if let Err(ambiguous) = normalized {
                Err(ProxyError::Malformed(ambiguous.into()))
            } else if let Err(error) = routing.guard.check(request.uri(), request.headers()) {
                Err(error)
            } else {
                match route {
                    // Boxed: the sending half of the future (1.9 KiB) stays in one place
                    // on the heap, while hyper moves this future, now 0.6 KiB, whole.
                    Some(route) => {
                        Box::pin(self.forward(route, request, carried, peer, hop.propagation)).await
                    }
                    None => Err(ProxyError::NoRoute(path.to_owned())),
                }
            };
            let mut failure = None;
            let response = response.unwrap_or_else(|error| {
                tracing::debug!(%error, "request failed in the proxy");
                failure = Some(Failure::of(&error));
                error.to_response(grpc)
            });
            report.answered = Some((response.status(), failure));
            response
        }
    }

    /// Checks `request` against `route`'s policy and limits, and prepares what goes upstream:
    /// everything but the bearer and the body's bytes.
    fn prepare<'r>(
        &self,
        route: &'r Route,
        request: Request<Incoming>,
        carried: headers::Carried,
        peer: &Peer,
        trace: Propagation,
    ) -> Result<Forwarding<'r>, ProxyError> {
        let target = route.upstream_target(request.uri());
        route
            .policy
            .check(request.method(), target.path(), request.headers())?;
        let uri = route.upstream.uri_for(target);
        if let (Some(limit), Some(len)) = (self.limits.max_body_size, request.body().size_hint().exact()) {
            if len > limit {
                return Err(ProxyError::BodyTooLarge(limit));
            }
        }
        let source = route.tokens.source(request.headers())?;
        let (mut parts, body) = request.into_parts();
        let client_host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());

        // An upgrade (WebSocket) keeps its two hop-by-hop headers for the next hop.
        let upgrade = carried
            .connection
            .then(|| headers::upgrade_requested(&parts.headers))
            .flatten();
        // Whether `Upgrade` goes upstream: restored below, or among the route's headers.
        let upgrading = upgrade.is_some() || route.headers.iter().any(|(name, _)| name == header::UPGRADE);
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<OnUpgrade>());
        let mut headers = parts.headers;
        headers::strip_hop_by_hop(&mut headers);
        if carried.impostor {
            headers::drop_impostors(&mut headers);
        }
        if let Some(protocol) = upgrade {
            headers::restore_upgrade(&mut headers, protocol);
        }
        let scheme = scheme(&parts.extensions);
        // hyper's server has answered the client's `Expect: 100-continue` by reading the
        // body; the upstream gets the body without being asked.
        if carried.expect {
            headers.remove(header::EXPECT);
        }
        let forwarded = headers::ProxyFields::new(
            &headers,
            carried,
            peer.forwarded_for.as_ref(),
            scheme,
            client_host.as_ref(),
            &route.headers,
            trace,
        )
        .apply(&mut headers);
        Ok(Forwarding {
            source,
            outbound: Outbound {
                method: parts.method,
                uri,
                headers,
                forwarded,
                stated_length: carried.content_length,
                upgrade: upgrading,
            },
            body,
            client_upgrade,
            scheme,
            client_host,
        })
    }

    /// Prepares `request` ([`Proxy::prepare`]) and sends it upstream with its bearer, again
    /// with a fresh one after a 401 when its body was small enough to keep; hands the
    /// answer back for the client.
    fn forward<'a>(
        &'a self,
        route: &'a Arc<Route>,
        request: Request<Incoming>,
        carried: headers::Carried,
        peer: &Peer,
        trace: Propagation,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
        // Prepared before the future is made, so that the future holds the prepared request
        // once, and nothing of a refused one.
        let forwarding = match self.prepare(route, request, carried, peer, trace) {
            Ok(forwarding) => forwarding,
            Err(error) => return FutureEither::Right(std::future::ready(Err(error))),
        };
        // `forwarding` is used where it was captured, never moved into a local.
        FutureEither::Left(async move {
            let token = forwarding.source.issue().await?;
            let outbound = &forwarding.outbound;
            let body =
                buffer_if_small(forwarding.body, route.replay_limit, self.limits.max_body_size).await?;
            let response = match body {
                Either::Left(buffered) => {
                    let first = self
                        .send(route, outbound, token.header(), Either::Left(buffered.clone()))
                        .await?;
                    if first.status() != StatusCode::UNAUTHORIZED {
                        first
                    } else {
                        // Out of line and boxed, the refused response dropped first: replays are
                        // rare, and inline they would enlarge every request's future, which
                        // hyper moves whole.
                        drop(first);
                        Box::pin(self.replay(route, outbound, token, buffered)).await?
                    }
                }
                streaming => self.send(route, outbound, token.header(), streaming).await?,
            };
            match forwarding.client_upgrade {
                Some(client) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    Ok(tunnel(response, client))
                }
                _ => Ok(respond(
                    route,
                    response,
                    forwarding.scheme,
                    forwarding.client_host.as_ref(),
                )),
            }
            .map(|response| {
                response.map(|body| Either::Left(Relay::new(body, route.clone(), self.observer.clone())))
            })
        })
    }

    /// Sends the request again with a fresh token after the upstream refused `token` with
    /// 401.
    async fn replay(
        &self,
        route: &Route,
        outbound: &Outbound,
        token: Issued<'_>,
        body: Full<Bytes>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let fresh = token.replace().await?;
        tracing::debug!("replaying the request after 401 with a new token");
        if let Some(observer) = &self.observer {
            observer.retried(&route.name);
        }
        self.send(route, outbound, fresh.header(), Either::Left(body))
            .await
    }

    async fn send(
        &self,
        route: &Route,
        outbound: &Outbound,
        authorization: &HeaderValue,
        body: OutboundBody,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let timeout = self.limits.upstream_timeout;
        match forward::send(&route.origin, outbound, authorization, body, timeout).await {
            // An HTTP/1.1 head is held to the limit as it is read (`http1::codec`).
            Ok(response)
                if response.version() == Version::HTTP_2
                    && headers::section_size(response.headers()) > forward::MAX_RESPONSE_HEAD =>
            {
                Err(ProxyError::UpstreamHeadTooLarge(forward::MAX_RESPONSE_HEAD))
            }
            Ok(response) => Ok(response),
            Err(ForwardError::TimedOut(timeout)) => Err(ProxyError::UpstreamTimeout(timeout)),
            Err(ForwardError::BodyTooLarge(_)) => Err(ProxyError::BodyTooLarge(
                self.limits.max_body_size.unwrap_or_default(),
            )),
            Err(ForwardError::ClientAborted(error)) => Err(ProxyError::ClientBody(Box::new(error))),
            Err(ForwardError::HeadTooLarge(_)) => {
                Err(ProxyError::UpstreamHeadTooLarge(forward::MAX_RESPONSE_HEAD))
            }
            Err(ForwardError::Upstream(error)) => Err(ProxyError::UpstreamUnreachable(error)),
        }
    }
}

/// While some route of `router` lists paths, routes and rules see, and the upstream gets,
/// the path in its normal form ([`normalize`]); a path without one is refused.
fn normalize_path(router: &Router, request: &mut Request<Incoming>) -> Result<(), normalize::Ambiguous> {
    if !router.has_path_rules() {
        return Ok(());
    }
    let uri = request.uri();
    let path = normalize::normalize(uri.path())?;
    if path != uri.path() {
        let target = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        // The normal form is a valid path by construction; should it not parse, the
        // request is refused rather than forwarded unnormalized.
        parts.path_and_query = Some(target.parse().map_err(|_| normalize::Ambiguous::NotAbsolute)?);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| normalize::Ambiguous::NotAbsolute)?;
    }
    Ok(())
}

/// Hands back the upstream's `101 Switching Protocols` and joins the two upgraded
/// connections once the client's has switched: the upstream's is the HTTP/1.1 client's
/// own stream, with any bytes that came after its response head.
fn tunnel(mut response: Response<UpstreamBody>, client: OnUpgrade) -> Response<UpstreamBody> {
    let Some(mut upstream) = response.body_mut().take_upgrade() else {
        return response;
    };
    tokio::spawn(async move {
        match client.await {
            Ok(client) => {
                let copied = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut upstream).await;
                tracing::debug!(?copied, "upgraded connection closed");
            }
            Err(error) => tracing::debug!(%error, "upgrade did not complete"),
        }
    });
    response
}

/// Cleans the upstream's response for the client and points redirects at the proxy.
fn respond(
    route: &Route,
    response: Response<UpstreamBody>,
    scheme: &str,
    client_host: Option<&HeaderValue>,
) -> Response<UpstreamBody> {
    let (mut parts, body) = response.into_parts();
    // An HTTP/1.1 upstream's head comes without the connection's fields (`http1::codec`),
    // save a 101's, which here goes to a client that asked for no upgrade. HTTP/2 refuses
    // most of them (RFC 9113 §8.2.2), not `Proxy-Authenticate`.
    if parts.status == StatusCode::SWITCHING_PROTOCOLS || parts.version == Version::HTTP_2 {
        headers::strip_hop_by_hop(&mut parts.headers);
    }
    if let (Some(location), Some(host)) = (parts.headers.get(header::LOCATION), client_host) {
        let prefix = if route.strip_prefix {
            route.prefix.as_str()
        } else {
            ""
        };
        let proxy_base = format!("{scheme}://{}{prefix}", host.to_str().unwrap_or_default());
        let rewritten = location
            .to_str()
            .ok()
            .and_then(|l| route.upstream.rewrite_location(l, &proxy_base))
            .and_then(|l| HeaderValue::try_from(l).ok());
        if let Some(rewritten) = rewritten {
            parts.headers.insert(header::LOCATION, rewritten);
        }
    }
    Response::from_parts(parts, body)
}

/// Buffers a body whose announced size fits `replay_limit` (so it can be replayed);
/// streams any other body, cut off at `max_body_size` when one is set.
async fn buffer_if_small(
    body: Incoming,
    replay_limit: usize,
    max_body_size: Option<u64>,
) -> Result<OutboundBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(Either::Left(Full::new(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(len) if len <= replay_limit as u64 => {
            let collected = Limited::new(body, replay_limit)
                .collect()
                .await
                .map_err(ProxyError::ClientBody)?;
            Ok(Either::Left(Full::new(collected.to_bytes())))
        }
        _ => {
            let limit = max_body_size.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
            Ok(Either::Right(forward::upload(body, limit)))
        }
    }
}

/// The scheme the client used, by a request's `extensions`: `https` when it arrived over
/// TLS.
fn scheme(extensions: &http::Extensions) -> &'static str {
    if extensions.get::<ArrivedOverTls>().is_some() {
        "https"
    } else {
        "http"
    }
}

/// `TRACE`, or `TRACK` (its Microsoft twin).
fn is_trace(method: &Method) -> bool {
    *method == Method::TRACE || method.as_str() == "TRACK"
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
