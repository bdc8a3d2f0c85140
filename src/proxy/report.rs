//! What the proxy reports about each request: events for observers (the access log, the
//! admin listener's metrics) that wrap the proxy from outside, so the request path knows
//! nothing of log formats or Prometheus.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use super::error::ProxyError;
use super::CLIENT_CLOSED;

/// Told of every finished request, and of what happens to requests after their status.
pub trait RequestObserver: std::fmt::Debug + Send + Sync + 'static {
    /// A request ended (or its client went away: status [`CLIENT_CLOSED`]).
    fn request(&self, record: &RequestRecord<'_>);
    /// An upstream response of `route` broke off after its status went to the client.
    fn truncated(&self, route: &str);
    /// A request of `route` was replayed with a new token after the upstream's 401.
    fn retried(&self, route: &str);
}

/// One finished request, as the proxy reports it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// The route's name (`-` when no route matched).
    pub route: &'a str,
    /// The client's method.
    pub method: &'a Method,
    /// The request's path, without the query.
    pub path: &'a str,
    /// The status the client got.
    pub status: StatusCode,
    /// From the request's arrival to its response headers.
    pub duration: Duration,
    /// Why the proxy answered itself, if it did; `None`: the upstream answered.
    pub failure: Option<Failure>,
    /// Whether the client sent its own `Authorization` (which the proxy removes).
    pub client_authorization: bool,
}

/// Why the proxy answered a request itself: [`ProxyError`] folded into a few classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No valid token for the route's credential.
    NoToken,
    /// The upstream could not be reached, or broke off.
    Unreachable,
    /// The upstream did not answer in time.
    Timeout,
    /// The request body was larger than allowed.
    BodyTooLarge,
    /// The client's request body broke off: the client's doing, not the upstream's.
    ClientBody,
    /// Refused before forwarding: no route, policy, Host guard, `CONNECT`, no caller
    /// token or one the issuer would not exchange. These are the client's errors.
    Refused,
}

impl Failure {
    /// Its name, for failures on the way to or from the upstream (the `kind` label of
    /// `mintproxy_upstream_errors_total`, a span's `error.type`); refusals are the
    /// client's and show in the status only.
    pub fn kind(self) -> Option<&'static str> {
        match self {
            Self::NoToken => Some("no_token"),
            Self::Unreachable => Some("unreachable"),
            Self::Timeout => Some("timeout"),
            Self::BodyTooLarge => Some("body_too_large"),
            Self::ClientBody => Some("client_body"),
            Self::Refused => None,
        }
    }

    /// The class of `error`.
    pub fn of(error: &ProxyError) -> Self {
        match error {
            ProxyError::NoToken(_) => Self::NoToken,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamHeadTooLarge(_) => Self::Unreachable,
            ProxyError::UpstreamTimeout(_) => Self::Timeout,
            ProxyError::BodyTooLarge(_) => Self::BodyTooLarge,
            ProxyError::ClientBody(_) => Self::ClientBody,
            ProxyError::NoRoute(_)
            | ProxyError::NoCallerToken
            | ProxyError::ExchangeRefused(_)
            | ProxyError::Forbidden(_)
            | ProxyError::ConnectRefused
            | ProxyError::TraceRefused(_)
            | ProxyError::Malformed(_)
            | ProxyError::RequestHeadTooLarge(_) => Self::Refused,
        }
    }
}

/// One request's report (to the observers, and its span's end), made when it is dropped: at the end of
/// [`super::Proxy::handle`], or earlier when the client went away and hyper dropped the
/// request (an HTTP/2 stream reset, say), then as [`CLIENT_CLOSED`].
pub(super) struct Report<'a> {
    /// Who is told, and when the request arrived (no clock read without an observer).
    pub(super) observer: Option<(&'a dyn RequestObserver, Instant)>,
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) route: Option<&'a str>,
    pub(super) client_authorization: bool,
    /// The status sent, and why the proxy answered itself if it did; `None` until then.
    pub(super) answered: Option<(StatusCode, Option<Failure>)>,
    /// The request's span, when spans are exported.
    pub(super) span: Option<Box<crate::trace::ServerSpan>>,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        let (status, failure) = self.answered.unwrap_or((CLIENT_CLOSED, None));
        if let Some(span) = self.span.take() {
            span.end(self.route, status, failure.and_then(Failure::kind));
        }
        let Some((observer, started)) = self.observer else {
            return;
        };
        observer.request(&RequestRecord {
            route: self.route.unwrap_or("-"),
            method: &self.method,
            path: self.path,
            status,
            duration: started.elapsed(),
            failure,
            client_authorization: self.client_authorization,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::NoToken;

    #[test]
    fn every_proxy_error_has_a_class() {
        let cases = [
            (ProxyError::NoToken(NoToken::Stopped), Failure::NoToken),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                Failure::Timeout,
            ),
            (ProxyError::BodyTooLarge(1), Failure::BodyTooLarge),
            (ProxyError::ConnectRefused, Failure::Refused),
            (ProxyError::NoRoute("/x".into()), Failure::Refused),
        ];
        for (error, class) in cases {
            assert_eq!(Failure::of(&error), class, "{error}");
        }
    }
}
