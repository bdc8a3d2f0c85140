//! Distributed tracing: the W3C trace context a caller sends is continued upstream, and,
//! with an OTLP endpoint, the proxy's spans are exported.
//!
//! Without an endpoint (the default) the proxy takes no part in a trace: a caller's valid
//! `traceparent` reaches the upstream as it came (so the upstream's span stays the
//! caller's child rather than the child of a span no one recorded), a malformed one is
//! removed, and no trace is started. The request path then costs one header lookup.
//! With an endpoint, every request gets a SERVER span, the child of the caller's span if
//! it sent one and the root of a new trace if not, and the upstream gets a `traceparent`
//! naming that span ([`Tracer::server_span`]).

mod context;
mod export;

use http::header::{HeaderMap, HeaderValue};

pub(crate) use context::{Incoming, TRACEPARENT, TRACESTATE};
pub(crate) use export::ServerSpan;
pub use export::{ExportError, Exporter, Tracer};

/// What goes upstream as `traceparent` and `tracestate`, decided once per request and
/// applied where the upstream request is prepared ([`crate::proxy::headers::ProxyFields`]).
#[derive(Debug)]
pub(crate) enum Propagation {
    /// The caller's fields, as they came (or none).
    AsReceived,
    /// Neither field: the caller's `traceparent` is malformed.
    Removed,
    /// The proxy's span continues the caller's trace: this `traceparent`, the caller's
    /// `tracestate`.
    Continued(HeaderValue),
    /// The proxy's span starts a trace: this `traceparent`, no `tracestate`.
    Started(HeaderValue),
}

impl Propagation {
    /// Sets the fields in `headers`, the caller's.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        match self {
            Self::AsReceived => {}
            Self::Removed => {
                headers.remove(&TRACEPARENT);
                headers.remove(&TRACESTATE);
            }
            Self::Continued(traceparent) => {
                headers.insert(TRACEPARENT.clone(), traceparent);
            }
            Self::Started(traceparent) => {
                headers.insert(TRACEPARENT.clone(), traceparent);
                headers.remove(&TRACESTATE);
            }
        }
    }
}

/// The trace side of one request: its span, when exporting, and what goes upstream.
#[derive(Debug)]
pub(crate) struct Hop {
    /// Boxed: it is large, and the request's future holds it.
    pub(crate) span: Option<Box<ServerSpan>>,
    pub(crate) propagation: Propagation,
}

impl Hop {
    /// A request while nothing is exported; `carries_traceparent`: the caller sent a
    /// `traceparent` (no lookup when it did not).
    pub(crate) fn untraced(headers: &HeaderMap, carries_traceparent: bool) -> Self {
        let propagation = if carries_traceparent {
            Self::checked(headers)
        } else {
            Propagation::AsReceived
        };
        Self {
            span: None,
            propagation,
        }
    }

    /// The caller's context as it came, unless malformed. Out of line: most requests
    /// carry none.
    #[inline(never)]
    fn checked(headers: &HeaderMap) -> Propagation {
        match Incoming::of(headers) {
            Incoming::Malformed => Propagation::Removed,
            Incoming::Absent | Incoming::Valid(_) => Propagation::AsReceived,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn untraced_requests_pass_a_valid_context_and_lose_a_malformed_one() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (traceparent, kept) in [(valid, true), ("00-garbage", false)] {
            let mut sent = headers(&[("traceparent", traceparent), ("tracestate", "a=1")]);
            Hop::untraced(&sent, true).propagation.apply(&mut sent);
            assert_eq!(sent.contains_key("traceparent"), kept, "{traceparent}");
            assert_eq!(sent.contains_key("tracestate"), kept, "{traceparent}");
        }
    }
}
