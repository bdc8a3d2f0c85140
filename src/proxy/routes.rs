//! Routing: the longest prefix wins; an optional prefix strip maps the client's path to
//! the upstream's.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::Uri;

use super::policy::under_prefix;
use super::Route;

/// The routes, longest prefix first.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    /// Some route lists paths: every request's path is normalized before routing.
    path_rules: bool,
}

impl Router {
    /// A router over `routes` (prefixes normalised without a trailing slash).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let path_rules = routes.iter().any(|route| route.policy.has_path_rules());
        Self { routes, path_rules }
    }

    /// Whether some route lists paths, so paths must be normalized before routing.
    pub fn has_path_rules(&self) -> bool {
        self.path_rules
    }

    /// The route serving `path`, if any.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|route| under_prefix(path, &route.prefix))
    }
}

impl Route {
    /// The path and query the upstream gets for the client's `uri`: the prefix removed
    /// when the route strips it. Otherwise the client's own, shared, not copied.
    pub fn upstream_target(&self, uri: &Uri) -> PathAndQuery {
        let client = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if !self.strip_prefix {
            return client;
        }
        let path = match &client.path()[self.prefix.len()..] {
            "" => "/",
            rest => rest,
        };
        let target = match client.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        PathAndQuery::try_from(target).expect("the end of a valid path, and its query, stay valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Policy, Upstream, UpstreamClient};
    use crate::token::{RefreshPolicy, StaticTokenSource, TokenCache};
    use tokio_util::sync::CancellationToken;

    fn route(prefix: &str, strip_prefix: bool) -> Route {
        let tokens = TokenCache::spawn(
            "unused",
            StaticTokenSource::new("/nonexistent"),
            RefreshPolicy::default(),
            CancellationToken::new(),
        );
        let upstream = Upstream::parse("http://127.0.0.1:1").unwrap();
        let client = UpstreamClient::new(crate::tls::client_config(&Default::default()).unwrap());
        Route {
            name: prefix.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            strip_prefix,
            origin: client.origin(&upstream, false),
            upstream,
            tokens: crate::proxy::Bearer::Minted(tokens),
            headers: Vec::new(),
            policy: Policy::default(),
            replay_limit: 0,
        }
    }

    #[tokio::test]
    async fn longest_prefix_wins_on_segment_boundaries() {
        let router = Router::new(vec![
            route("/", false),
            route("/api/", true),
            route("/api/v2/", true),
        ]);
        let found = |path| router.find(path).map(|r| r.name.as_str());
        assert_eq!(found("/api/v2/users"), Some("/api/v2/"));
        assert_eq!(found("/api/v1/users"), Some("/api/"));
        assert_eq!(found("/api"), Some("/api/"));
        assert_eq!(found("/apix"), Some("/"));
        let without_root = Router::new(vec![route("/api/", true)]);
        assert!(without_root.find("/other").is_none());
    }

    #[tokio::test]
    async fn stripping_keeps_the_leading_slash_and_query() {
        let target = |route: &Route, uri: &str| route.upstream_target(&uri.parse().unwrap());
        let strip = route("/billing/", true);
        assert_eq!(target(&strip, "/billing/invoices?a=1"), "/invoices?a=1");
        assert_eq!(target(&strip, "/billing"), "/");
        let keep = route("/billing/", false);
        assert_eq!(target(&keep, "/billing/invoices?a=1"), "/billing/invoices?a=1");
        assert_eq!(target(&keep, "http://elsewhere.example"), "/");
    }
}
