//! The upstream's response body on its way back to the client, its trailers cleaned as a
//! request's are ([`super::headers::clean_trailers`]).
//!
//! A body that breaks off after its status was sent (the upstream closed early or sent
//! bad framing) is logged and counted as `truncated`: the client already holds a `200`,
//! and without this the request would be counted as served.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::{RequestObserver, Route, UpstreamBody};

/// An upstream response body, watched for breaking off.
pub struct Relay {
    body: UpstreamBody,
    route: Arc<Route>,
    observer: Option<Arc<dyn RequestObserver>>,
}

/// Shows the route, never the bytes: a response may carry a token.
impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("route", &self.route.name)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// `body`, answering a request of `route`; a break-off is reported to `observer`.
    pub(super) fn new(
        body: UpstreamBody,
        route: Arc<Route>,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Self {
        Self {
            body,
            route,
            observer,
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = <UpstreamBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_ok(super::forward::clean);
        if let Poll::Ready(Some(Err(error))) = &polled {
            tracing::warn!(route = %self.route.name, %error, "the upstream's response broke off");
            if let Some(observer) = &self.observer {
                observer.truncated(&self.route.name);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
