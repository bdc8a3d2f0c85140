//! Prometheus metrics for the proxy and its token caches, served by the admin listener's
//! `/metrics`.
//!
//! The metrics wrap the components instead of living inside them: [`Metrics`] owns the
//! registry and observes the proxy ([`RequestObserver`]) and the token caches
//! ([`CacheObserver`]), which know nothing of Prometheus. Every label has a bounded set of values: route names and credential names
//! come from the configuration, methods and failures are folded into a few classes, and
//! statuses are HTTP status codes.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `mintproxy_requests_total` | counter | `route`, `method` (`read`, `write`, `other`), `status` (code) |
//! | `mintproxy_request_duration_seconds` | histogram | `route` |
//! | `mintproxy_upstream_errors_total` | counter | `route`, `kind` (`no_token`, `unreachable`, `timeout`, `body_too_large`, `client_body`, `truncated`) |
//! | `mintproxy_upstream_retries_total` | counter | `route`, `reason` (`unauthorized`: replayed with a new token after 401) |
//! | `mintproxy_bearer_injected_total` | counter | `route` |
//! | `mintproxy_client_authorization_replaced_total` | counter | `route` |
//! | `mintproxy_token_fetches_total` | counter | `credential`, `result` (`ok`, `rejected`, `unavailable`, `unreachable`, `unusable`, `file`, `other`) |
//! | `mintproxy_token_exchanges_total` | counter | `route`, `result` (`cached`, `exchanged`, or a failed fetch's result) |
//! | `mintproxy_token_expiry_timestamp_seconds` | gauge | `credential` |
//! | `mintproxy_credential_key_expiry_timestamp_seconds` | gauge | `credential` |
//! | `mintproxy_access_log_dropped_total` | counter | |
//! | `mintproxy_config_reloads_total` | counter | `result` (`ok`, `error`) |

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use fnv::FnvBuildHasher;
use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::proxy::{Failure, RequestObserver, RequestRecord};
use crate::token::{CacheObserver, ExchangeObserver, ExchangeOutcome, TokenError};

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram, in seconds: from a cached answer on loopback to
/// the default upstream timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    route: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    credential: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    route: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

/// One route's label value and its series in the per-route families, found with one
/// lookup per request (instead of one hash per family) and no allocation.
#[derive(Debug)]
struct RouteSeries {
    /// The route's name, leaked once: route names come from the configuration (and `-`
    /// for no route), so there are few.
    name: &'static str,
    duration: Histogram,
    /// The route's request counters by method class and status, found by a short scan (a
    /// route sees few combinations) instead of hashing the family's labels per request.
    requests: RwLock<Vec<(&'static str, u16, Counter)>>,
    /// Created at their first increment, so that a series appears with its first event.
    bearer_injected: OnceLock<Counter>,
    authorization_replaced: OnceLock<Counter>,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The registry and every metric family. Share it through an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    upstream_errors: Family<ErrorLabels, Counter>,
    upstream_retries: Family<RetryLabels, Counter>,
    bearer_injected: Family<RouteLabels, Counter>,
    authorization_replaced: Family<RouteLabels, Counter>,
    token_fetches: Family<FetchLabels, Counter>,
    token_exchanges: Family<ExchangeLabels, Counter>,
    token_expiry: Family<CredentialLabels, Gauge>,
    key_expiry: Family<CredentialLabels, Gauge>,
    access_log_dropped: Counter,
    reloads: Family<ReloadLabels, Counter>,
    /// FNV: route names are short and come from the configuration, so SipHash's protection
    /// against chosen keys buys nothing here and cost half of the metrics' per-request work.
    routes: RwLock<HashMap<&'static str, RouteSeries, FnvBuildHasher>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label: a few classes, so an odd method cannot add series.
fn method_class(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => "read",
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => "write",
        _ => "other",
    }
}

/// The `result` label of a failed token fetch: a refusal (4xx) says the credential is
/// wrong; an issuer answering 5xx or 429 is unavailable, and will likely recover by itself.
fn fetch_failure(error: &TokenError) -> &'static str {
    match error {
        TokenError::Rejected { status, .. } if *status >= 500 || *status == 429 => "unavailable",
        TokenError::Rejected { .. } | TokenError::KeyExpired { .. } => "rejected",
        TokenError::Transport { .. } | TokenError::Discovery { .. } => "unreachable",
        TokenError::Unusable { .. } | TokenError::NotAHeader => "unusable",
        TokenError::KeyFile(_) | TokenError::CredentialFile { .. } => "file",
        TokenError::Sign(_) => "other",
    }
}

impl Metrics {
    /// A registry with every family registered (and no series until the first event).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mintproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method class (read, write, other) and status code",
            requests.clone(),
        );
        let duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS.iter().copied()));
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response headers, by route",
            Unit::Seconds,
            duration.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests the proxy answered itself because forwarding failed, by route and kind \
             (no_token, unreachable, timeout, body_too_large, client_body), and responses whose \
             body broke off after the status was sent (truncated)",
            upstream_errors.clone(),
        );
        let upstream_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent upstream a second time, by route and reason (unauthorized: \
             replayed with a new token after 401)",
            upstream_retries.clone(),
        );
        let bearer_injected = Family::<RouteLabels, Counter>::default();
        registry.register(
            "bearer_injected",
            "Requests the upstream answered that carried the minted bearer token, by route",
            bearer_injected.clone(),
        );
        let authorization_replaced = Family::<RouteLabels, Counter>::default();
        registry.register(
            "client_authorization_replaced",
            "Requests whose client-sent Authorization header was replaced by the minted one, by route",
            authorization_replaced.clone(),
        );
        let token_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "token_fetches",
            "Token requests by credential and result (ok, rejected, unavailable, unreachable, \
             unusable, file, other)",
            token_fetches.clone(),
        );
        let token_exchanges = Family::<ExchangeLabels, Counter>::default();
        registry.register(
            "token_exchanges",
            "Requests of exchange routes by route and how they got their token: cached (no \
             exchange), exchanged, or why the exchange failed (rejected, unavailable, unreachable, \
             unusable, file, other)",
            token_exchanges.clone(),
        );
        let token_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the current token of each credential expires, in Unix seconds",
            token_expiry.clone(),
        );
        let key_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_key_expiry_timestamp_seconds",
            "When the key of each credential expires (its key file's expirationDate), in Unix \
             seconds; absent for a key without one",
            key_expiry.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped, not waited for, because stderr did not keep up and the \
             buffer (--access-log-buffer) was full, or because stderr refused them",
            access_log_dropped.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of the config file on SIGHUP, by result (ok: applied; error: refused, the \
             running configuration stays)",
            reloads.clone(),
        );
        // Both series from the start, so an alert on the errors' increase sees the first.
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        Self {
            registry,
            requests,
            duration,
            upstream_errors,
            upstream_retries,
            bearer_injected,
            authorization_replaced,
            token_fetches,
            token_exchanges,
            token_expiry,
            key_expiry,
            access_log_dropped,
            reloads,
            routes: RwLock::default(),
        }
    }

    /// Records when `credential`'s key expires (`None`: its file names no expiry).
    pub fn key_expiry(&self, credential: &str, expires_at: Option<SystemTime>) {
        set_timestamp(&self.key_expiry, credential, expires_at);
    }

    /// The counter of dropped access log lines, for the access log to count in.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Counts a reload of the config file: applied (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Drops the token expiry of a credential no longer minted, so that no alert watches
    /// a token nobody renews.
    pub fn forget_token(&self, credential: &str) {
        set_timestamp(&self.token_expiry, credential, None);
    }

    fn count_fetch(&self, credential: &str, result: &'static str) {
        self.token_fetches
            .get_or_create(&FetchLabels {
                credential: credential.to_owned(),
                result,
            })
            .inc();
    }

    /// Runs `count` with the series of the route `name`, made at its first sight.
    fn with_route<T>(&self, name: &str, count: impl FnOnce(&RouteSeries) -> T) -> T {
        if let Some(route) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return count(route);
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if !routes.contains_key(name) {
            let name: &'static str = Box::leak(name.into());
            let route = RouteSeries {
                name,
                duration: self.duration.get_or_create_owned(&RouteLabels { route: name }),
                requests: RwLock::default(),
                bearer_injected: OnceLock::new(),
                authorization_replaced: OnceLock::new(),
            };
            routes.insert(name, route);
        }
        count(&routes[name])
    }

    /// Counts a request of `route` in its series for `method` and `status`, made at its first sight.
    fn count_request(&self, route: &RouteSeries, method: &'static str, status: u16) {
        let seen = |series: &[(&'static str, u16, Counter)]| {
            series
                .iter()
                .find(|(m, s, _)| *s == status && *m == method)
                .map(|(_, _, counter)| counter.inc())
                .is_some()
        };
        if seen(&route.requests.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut series = route.requests.write().unwrap_or_else(PoisonError::into_inner);
        if !seen(&series) {
            let labels = RequestLabels {
                route: route.name,
                method,
                status,
            };
            let counter = self.requests.get_or_create_owned(&labels);
            counter.inc();
            series.push((method, status, counter));
        }
    }

    /// Every metric in the OpenMetrics text format (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl RequestObserver for Metrics {
    /// Counts one finished request.
    fn request(&self, record: &RequestRecord<'_>) {
        self.with_route(record.route, |route| {
            self.count_request(route, method_class(record.method), record.status.as_u16());
            route.duration.observe(record.duration.as_secs_f64());
            let labels = RouteLabels { route: route.name };
            match record.failure {
                None => {
                    route
                        .bearer_injected
                        .get_or_init(|| self.bearer_injected.get_or_create_owned(&labels))
                        .inc();
                    if record.client_authorization {
                        route
                            .authorization_replaced
                            .get_or_init(|| self.authorization_replaced.get_or_create_owned(&labels))
                            .inc();
                    }
                }
                Some(failure) => {
                    if let Some(kind) = Failure::kind(failure) {
                        self.upstream_errors
                            .get_or_create(&ErrorLabels {
                                route: route.name,
                                kind,
                            })
                            .inc();
                    }
                }
            }
        });
    }

    /// Counts an upstream response whose body broke off after its status went to the client.
    fn truncated(&self, route: &str) {
        self.with_route(route, |route| {
            self.upstream_errors
                .get_or_create(&ErrorLabels {
                    route: route.name,
                    kind: "truncated",
                })
                .inc();
        });
    }

    /// Counts a request replayed with a new token after the upstream's 401.
    fn retried(&self, route: &str) {
        self.with_route(route, |route| {
            self.upstream_retries
                .get_or_create(&RetryLabels {
                    route: route.name,
                    reason: "unauthorized",
                })
                .inc();
        });
    }
}

impl CacheObserver for Metrics {
    /// Counts a successful token fetch for `credential` and records when the token
    /// expires (`None`: it does not expire by time).
    fn minted(&self, credential: &str, expires_at: Option<SystemTime>) {
        self.count_fetch(credential, "ok");
        set_timestamp(&self.token_expiry, credential, expires_at);
    }

    /// Counts a failed token fetch for `credential`, by a bounded reason.
    fn failed(&self, credential: &str, error: &TokenError) {
        self.count_fetch(credential, fetch_failure(error));
    }
}

impl ExchangeObserver for Metrics {
    /// Counts one exchange route request's token: cached, exchanged, or failed (by reason).
    fn exchanged(&self, route: &str, outcome: ExchangeOutcome<'_>) {
        let result = match outcome {
            ExchangeOutcome::Cached => "cached",
            ExchangeOutcome::Exchanged => "exchanged",
            ExchangeOutcome::Failed(error) => fetch_failure(error),
        };
        self.token_exchanges
            .get_or_create(&ExchangeLabels {
                route: route.to_owned(),
                result,
            })
            .inc();
    }
}

/// Sets `credential`'s series of a timestamp gauge to `at` in Unix seconds, or removes it.
fn set_timestamp(family: &Family<CredentialLabels, Gauge>, credential: &str, at: Option<SystemTime>) {
    let labels = CredentialLabels {
        credential: credential.to_owned(),
    };
    match at {
        Some(at) => {
            let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            family
                .get_or_create(&labels)
                .set(i64::try_from(seconds).unwrap_or(i64::MAX));
        }
        None => {
            family.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::time::Duration;

    /// The value of the sample `name{labels}` (labels as printed), if present.
    fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    fn record<'a>(
        method: &'a Method,
        status: u16,
        failure: Option<Failure>,
        auth: bool,
    ) -> RequestRecord<'a> {
        RequestRecord {
            route: "/api",
            method,
            path: "/api/users",
            status: StatusCode::from_u16(status).unwrap(),
            duration: Duration::from_millis(3),
            failure,
            client_authorization: auth,
        }
    }

    #[test]
    fn a_route_is_found_once_however_many_requests_name_it() {
        let metrics = Metrics::new();
        let first = metrics.with_route(&String::from("/api"), |route| route.name);
        let again = metrics.with_route(&String::from("/api"), |route| route.name);
        assert!(std::ptr::eq(first, again), "the same label value, not a new one");
        assert_eq!(metrics.with_route("-", |route| route.name), "-");
        assert_eq!(metrics.routes.read().unwrap().len(), 2);
        assert!(
            !metrics.encode().contains("bearer_injected_total{"),
            "no series before its first event"
        );
    }

    #[test]
    fn requests_are_counted_by_route_method_class_and_status() {
        let metrics = Metrics::new();
        let (get, post, brew) = (Method::GET, Method::POST, Method::from_bytes(b"BREW").unwrap());
        metrics.request(&record(&get, 200, None, true));
        metrics.request(&record(&get, 200, None, false));
        metrics.request(&record(&post, 201, None, false));
        metrics.request(&record(&brew, 403, Some(Failure::Refused), true));
        metrics.request(&record(&get, 502, Some(Failure::Unreachable), true));
        let text = metrics.encode();
        let at = |series: &str| sample(&text, series);
        assert_eq!(
            at(r#"mintproxy_requests_total{route="/api",method="read",status="200"}"#),
            Some(2.0)
        );
        assert_eq!(
            at(r#"mintproxy_requests_total{route="/api",method="write",status="201"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"mintproxy_requests_total{route="/api",method="other",status="403"}"#),
            Some(1.0)
        );
        assert_eq!(at(r#"mintproxy_bearer_injected_total{route="/api"}"#), Some(3.0));
        assert_eq!(
            at(r#"mintproxy_client_authorization_replaced_total{route="/api"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"mintproxy_upstream_errors_total{route="/api",kind="unreachable"}"#),
            Some(1.0)
        );
        assert!(
            !text.contains("kind=\"refused\""),
            "refusals are not upstream errors"
        );
        assert_eq!(
            at(r#"mintproxy_request_duration_seconds_count{route="/api"}"#),
            Some(5.0)
        );
        assert_eq!(
            at(r#"mintproxy_request_duration_seconds_bucket{le="0.005",route="/api"}"#),
            Some(5.0),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn token_fetches_and_expiry_are_recorded() {
        let metrics = Metrics::new();
        let expires = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        metrics.minted("zitadel", Some(expires));
        metrics.failed(
            "zitadel",
            &TokenError::Rejected {
                url: "http://issuer/oauth/v2/token".into(),
                status: 400,
                error: "invalid_grant".into(),
                description: None,
            },
        );
        metrics.failed(
            "zitadel",
            &TokenError::Transport {
                url: "http://issuer/oauth/v2/token".into(),
                reason: "connection refused".into(),
            },
        );
        metrics.failed(
            "zitadel",
            &TokenError::Rejected {
                url: "http://issuer/oauth/v2/token".into(),
                status: 503,
                error: "unexpected_response".into(),
                description: None,
            },
        );
        metrics.minted("pat", None);
        let text = metrics.encode();
        let at = |series: &str| sample(&text, series);
        assert_eq!(
            at(r#"mintproxy_token_fetches_total{credential="zitadel",result="ok"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"mintproxy_token_fetches_total{credential="zitadel",result="rejected"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"mintproxy_token_fetches_total{credential="zitadel",result="unreachable"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"mintproxy_token_fetches_total{credential="zitadel",result="unavailable"}"#),
            Some(1.0),
            "an issuer's 503 is not a refusal"
        );
        assert_eq!(
            at(r#"mintproxy_token_expiry_timestamp_seconds{credential="zitadel"}"#),
            Some(1_800_000_000.0)
        );
        assert_eq!(
            at(r#"mintproxy_token_expiry_timestamp_seconds{credential="pat"}"#),
            None
        );
    }

    #[test]
    fn reloads_are_counted_from_zero_and_a_dropped_credential_loses_its_gauges() {
        let metrics = Metrics::new();
        let reloads = |text: &str, result: &str| {
            sample(
                text,
                &format!(r#"mintproxy_config_reloads_total{{result="{result}"}}"#),
            )
        };
        let text = metrics.encode();
        assert_eq!(
            (reloads(&text, "ok"), reloads(&text, "error")),
            (Some(0.0), Some(0.0))
        );
        metrics.reloaded(true);
        metrics.reloaded(false);
        metrics.reloaded(false);
        let text = metrics.encode();
        assert_eq!(
            (reloads(&text, "ok"), reloads(&text, "error")),
            (Some(1.0), Some(2.0))
        );

        let expires = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        metrics.minted("gone", Some(expires));
        metrics.key_expiry("gone", Some(expires));
        metrics.minted("kept", Some(expires));
        metrics.forget_token("gone");
        metrics.key_expiry("gone", None);
        let text = metrics.encode();
        assert_eq!(
            sample(
                &text,
                r#"mintproxy_token_expiry_timestamp_seconds{credential="gone"}"#
            ),
            None
        );
        assert_eq!(
            sample(
                &text,
                r#"mintproxy_credential_key_expiry_timestamp_seconds{credential="gone"}"#
            ),
            None
        );
        assert_eq!(
            sample(
                &text,
                r#"mintproxy_token_expiry_timestamp_seconds{credential="kept"}"#
            ),
            Some(1_800_000_000.0)
        );
    }
}
