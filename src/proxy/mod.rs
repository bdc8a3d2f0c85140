//! The request path: from a plain client request to an authenticated upstream request
//! and back.

pub mod forward;
pub mod headers;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};

use crate::error::{error_chain, ProxyError};
use crate::token::{CachedToken, TokenCache};
pub use forward::{OutboundBody, UpstreamClient};
pub use upstream::Upstream;

/// A response body going back to the client: the upstream's, streamed, or our own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Request bodies up to this size are kept so a request refused with 401 can be replayed
/// with a fresh token.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// One route's settings: where it goes, which token it carries, what it adds.
#[derive(Debug)]
pub struct Route {
    /// Where requests go.
    pub upstream: Upstream,
    /// The credential's token cache.
    pub tokens: TokenCache,
    /// Extra headers set on every upstream request (`--header`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest request body kept for a replay after 401.
    pub replay_limit: usize,
}

/// The proxy service. Cheap to clone: one per connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    route: Arc<Route>,
    client: UpstreamClient,
}

impl Proxy {
    /// A proxy sending every request through `route` with `client`.
    pub fn new(route: Route, client: UpstreamClient) -> Self {
        Self {
            route: Arc::new(route),
            client,
        }
    }

    /// Handles one request from `remote`; failures become JSON error responses.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let grpc = is_grpc(request.headers());
        let response = match self.forward(request, remote).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed in the proxy");
                error.to_response(grpc)
            }
        };
        tracing::info!(
            target: "mintproxy::access",
            %method,
            path,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            route = "default",
        );
        response
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::ConnectRefused);
        }
        let route = &*self.route;
        let token = route.tokens.token().await?;
        let (parts, body) = request.into_parts();
        let client_host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());

        let mut headers = parts.headers;
        headers::strip_hop_by_hop(&mut headers);
        headers.remove(header::AUTHORIZATION);
        headers.insert(header::HOST, route.upstream.host_header().clone());
        headers::add_forwarding(&mut headers, remote.ip(), "http", client_host.as_ref());
        for (name, value) in &route.headers {
            headers.insert(name.clone(), value.clone());
        }

        let outbound = Outbound {
            method: parts.method,
            uri: route.upstream.uri_for(parts.uri.path_and_query()),
            headers,
        };
        let body = buffer_if_small(body, route.replay_limit).await?;
        let response = match body {
            Either::Left(buffered) => {
                let first = self
                    .send(outbound.clone(), &token, Either::Left(buffered.clone()))
                    .await?;
                if first.status() != StatusCode::UNAUTHORIZED {
                    first
                } else {
                    route.tokens.reject(&token);
                    let fresh = route.tokens.token().await?;
                    tracing::debug!("replaying the request after 401 with a new token");
                    self.send(outbound, &fresh, Either::Left(buffered)).await?
                }
            }
            streaming => self.send(outbound, &token, streaming).await?,
        };
        Ok(self.respond(response, client_host.as_ref()))
    }

    async fn send(
        &self,
        outbound: Outbound,
        token: &CachedToken,
        body: OutboundBody,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut request = Request::new(body);
        *request.method_mut() = outbound.method;
        *request.uri_mut() = outbound.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = outbound.headers;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, token.header().clone());
        self.client
            .request(request)
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(error_chain(&e)))
    }

    /// Cleans the upstream's response for the client and points redirects at the proxy.
    fn respond(
        &self,
        response: Response<Incoming>,
        client_host: Option<&HeaderValue>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let (Some(location), Some(host)) = (parts.headers.get(header::LOCATION), client_host) {
            let proxy_origin = format!("http://{}", host.to_str().unwrap_or_default());
            let rewritten = location
                .to_str()
                .ok()
                .and_then(|l| self.route.upstream.rewrite_location(l, &proxy_origin))
                .and_then(|l| HeaderValue::try_from(l).ok());
            if let Some(rewritten) = rewritten {
                parts.headers.insert(header::LOCATION, rewritten);
            }
        }
        Response::from_parts(parts, Either::Left(body))
    }
}

/// The parts of an upstream request that a replay sends again.
#[derive(Clone)]
struct Outbound {
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
}

/// Buffers a body whose announced size fits `limit` (so it can be replayed); streams any
/// other body untouched.
async fn buffer_if_small(body: Incoming, limit: usize) -> Result<OutboundBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(Either::Left(Full::new(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(len) if len <= limit as u64 => {
            let collected = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| ProxyError::ClientBody(e.to_string()))?;
            Ok(Either::Left(Full::new(collected.to_bytes())))
        }
        _ => Ok(Either::Right(body)),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
