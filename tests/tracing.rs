//! Trace context and span export: what the upstream receives as `traceparent` and
//! `tracestate`, and what a stub OTLP collector (OTLP/HTTP, protobuf) receives, over real
//! sockets, with the stand-in issuer and the echo upstream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mintproxy::demo::echo::Echo;
use mintproxy::server::Drained;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::{issuer, local_listener, serve_config, Issued};
use tokio::sync::{oneshot, watch};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CALLER_SECRET: &str = "caller-secret-token";
const QUERY_SECRET: &str = "query-secret-key";

/// A stub OTLP/HTTP collector: decodes each POST to /v1/traces, keeps its spans (and
/// the `service.name` they came with).
struct Collector {
    url: String,
    received: watch::Receiver<Vec<(String, Span)>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = local_listener().await;
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sender, received) = watch::channel(Vec::new());
        let sender = Arc::new(sender);
        mintproxy::demo::spawn_server(listener, move |request: Request<Incoming>| {
            let sender = sender.clone();
            async move {
                let wrong = request.method() != http::Method::POST
                    || request.uri().path() != "/v1/traces"
                    || request.headers()["content-type"] != "application/x-protobuf";
                let body = request.into_body().collect().await.unwrap().to_bytes();
                if wrong {
                    return answer(StatusCode::NOT_FOUND);
                }
                let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                sender.send_modify(|spans| {
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
                        }
                    }
                });
                answer(StatusCode::OK)
            }
        });
        Self { url, received }
    }

    /// Waits (10 s at most) until a span matching `wanted` has arrived.
    async fn span(&mut self, what: &str, wanted: impl Fn(&Span) -> bool) -> (String, Span) {
        let found = tokio::time::timeout(
            Duration::from_secs(10),
            self.received
                .wait_for(|spans| spans.iter().any(|(_, span)| wanted(span))),
        )
        .await
        .unwrap_or_else(|_| panic!("the collector received no {what} within 10 s"))
        .unwrap();
        found.iter().find(|(_, span)| wanted(span)).unwrap().clone()
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> Vec<(String, String)> {
    span.attributes
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                text(a.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    attributes(span)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The proxy as `serve` runs it, stopped (drained, its spans flushed) by the sender.
struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Drained>,
}

impl Running {
    async fn start(issued: &Issued, upstream: &str, extra: &[&str]) -> Self {
        let mut flags = issued.flags(upstream);
        flags.extend_from_slice(extra);
        let config = serve_config(&flags);
        let listener = local_listener().await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            mintproxy::app::run_proxy(listener.into(), &config, shutdown)
                .await
                .unwrap()
        });
        Self { addr, stop, done }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("the proxy drains and flushes within 30 s")
            .unwrap();
    }
}

/// The echo upstream of the issuer's tokens.
async fn echo(issued: &Issued) -> Arc<Echo> {
    Echo::start(local_listener().await, issued.issuer.clone()).unwrap()
}

/// Sends GET `path` with `fields` to the proxy at `addr`, over HTTP/2 when `http2`, and
/// returns the fields the upstream received.
async fn through(
    addr: std::net::SocketAddr,
    echo: &Echo,
    path: &str,
    fields: &[(&str, &str)],
    http2: bool,
) -> http::HeaderMap {
    let before = echo.seen().len();
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = echo.seen();
    assert_eq!(seen.len(), before + 1, "the upstream received the request");
    seen.last().unwrap().headers.clone()
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// `00-TRACE-SPAN-FLAGS` into its parts.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

#[tokio::test]
async fn a_callers_trace_continues_upstream_and_the_spans_reach_the_collector() {
    let issued = issuer().await;
    let echo = echo(&issued).await;
    let mut collector = Collector::start().await;
    let proxy = Running::start(&issued, echo.url(), &["--otlp-endpoint", &collector.url]).await;

    let port = proxy.addr.port();
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let authorization = format!("Bearer {CALLER_SECRET}");
    let received = through(
        proxy.addr,
        &echo,
        &format!("/things/42?api_key={QUERY_SECRET}"),
        &[
            ("traceparent", &caller),
            ("tracestate", "vendor=abc,other=1"),
            ("authorization", &authorization),
        ],
        false,
    )
    .await;
    let (trace_id, span_id, flags) = parts(&header(&received, "traceparent").expect("a traceparent"));
    assert_eq!(trace_id, TRACE_ID, "the caller's trace");
    assert_ne!(span_id, CALLER_SPAN, "the proxy's span, not the caller's");
    assert_eq!(flags, "01", "the caller's flags");
    assert_eq!(
        header(&received, "tracestate").as_deref(),
        Some("vendor=abc,other=1")
    );
    let token = header(&received, "authorization").unwrap();
    let token = token.strip_prefix("Bearer ").unwrap().to_owned();

    // The shutdown sends what the batch processor still holds.
    proxy.stop().await;
    let (service, server) = collector
        .span("SERVER span", |s| s.kind == SpanKind::Server as i32)
        .await;
    assert_eq!(service, "mintproxy");
    assert_eq!(hex(&server.trace_id), TRACE_ID);
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "the caller's span is its parent"
    );
    assert_eq!(
        hex(&server.span_id),
        span_id,
        "the upstream was told the proxy's span"
    );
    assert_eq!(server.name, "GET /");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/things/42"),
        ("url.scheme", "http"),
        ("http.route", "/"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("server.address", "127.0.0.1"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(attribute(&server, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(attribute(&server, "server.port"), Some(port.to_string()));

    // The token fetch: a CLIENT span of the POST to the issuer's token endpoint.
    let (_, fetch) = collector
        .span("token fetch span", |s| {
            s.kind == SpanKind::Client as i32
                && attribute(s, "http.request.method").as_deref() == Some("POST")
        })
        .await;
    assert_eq!(fetch.name, "POST");
    assert_eq!(
        attribute(&fetch, "http.response.status_code").as_deref(),
        Some("200")
    );
    let url = attribute(&fetch, "url.full").unwrap();
    assert!(url.starts_with(issued.issuer.url()), "{url}");
    assert!(fetch.parent_span_id.is_empty(), "a trace of its own");

    let everything = collector.received.borrow().clone();
    for (_, span) in &everything {
        for (key, value) in attributes(span) {
            for secret in [CALLER_SECRET, QUERY_SECRET, token.as_str(), "Bearer", "assertion"] {
                assert!(
                    !value.contains(secret) && !key.contains("authorization"),
                    "span {:?} attribute {key}={value} carries a secret",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn without_export_a_valid_context_passes_unchanged_and_a_malformed_one_is_dropped() {
    let issued = issuer().await;
    let echo = echo(&issued).await;
    let proxy = Running::start(&issued, echo.url(), &[]).await;
    let valid = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
    let malformed = format!("00-{}-{CALLER_SPAN}-01", TRACE_ID.to_uppercase());
    // (sent, over HTTP/2, passed on): nothing is exported, so the caller's own context
    // goes upstream as it came, or not at all.
    for (sent, http2, passed) in [(&valid, false, true), (&malformed, true, false)] {
        let received = through(
            proxy.addr,
            &echo,
            "/",
            &[("traceparent", sent), ("tracestate", "vendor=abc")],
            http2,
        )
        .await;
        let expected = |value: &str| passed.then(|| value.to_owned());
        assert_eq!(header(&received, "traceparent"), expected(sent), "{sent}");
        assert_eq!(header(&received, "tracestate"), expected("vendor=abc"), "{sent}");
    }

    let received = through(proxy.addr, &echo, "/", &[], false).await;
    assert_eq!(header(&received, "traceparent"), None, "no trace started");
    proxy.stop().await;
}

#[tokio::test]
async fn with_export_a_malformed_or_missing_context_starts_a_new_trace_over_http2_too() {
    // Batches leave every 50 ms rather than every 5 s: these spans arrive while the proxy
    // runs. (Read when an exporter starts; other tests here only see theirs sooner.)
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "50");
    let issued = issuer().await;
    let echo = echo(&issued).await;
    let mut collector = Collector::start().await;
    let proxy = Running::start(
        &issued,
        echo.url(),
        &[
            "--otlp-endpoint",
            &format!("{}/v1/traces", collector.url),
            "--upstream-http2",
        ],
    )
    .await;
    let all_zero = format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32));
    let received = through(
        proxy.addr,
        &echo,
        "/x",
        &[("traceparent", &all_zero), ("tracestate", "vendor=abc")],
        true,
    )
    .await;
    let (trace_id, span_id, flags) = parts(&header(&received, "traceparent").expect("a new traceparent"));
    assert_ne!(trace_id, "0".repeat(32));
    assert_ne!(span_id, CALLER_SPAN);
    assert_eq!(flags, "01", "sampled by default");
    assert_eq!(
        header(&received, "tracestate"),
        None,
        "no state without a valid parent"
    );

    let (_, server) = collector
        .span("SERVER span", |s| hex(&s.span_id) == span_id)
        .await;
    assert_eq!(hex(&server.trace_id), trace_id);
    assert!(server.parent_span_id.is_empty(), "the root of a new trace");
    assert_eq!(
        attribute(&server, "network.protocol.version").as_deref(),
        Some("2")
    );

    let received = through(proxy.addr, &echo, "/y", &[], false).await;
    let (_, span_id, _) = parts(&header(&received, "traceparent").expect("a traceparent without a caller's"));
    collector
        .span("span of a request without a traceparent", |s| {
            hex(&s.span_id) == span_id
        })
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn the_endpoint_follows_the_otlp_rules_and_bad_ones_are_named() {
    let issued = issuer().await;
    let endpoint = |url: &str| {
        let mut flags = issued.flags("http://127.0.0.1:1");
        flags.extend_from_slice(&["--otlp-endpoint", url]);
        support::try_serve_config(&flags).map(|config| config.otlp_endpoint.unwrap().to_string())
    };
    assert_eq!(
        endpoint("http://127.0.0.1:4318").unwrap(),
        "http://127.0.0.1:4318/v1/traces",
        "a base URL gets the signal's path"
    );
    assert_eq!(
        endpoint("https://traces.example.com/otlp/v1/traces").unwrap(),
        "https://traces.example.com/otlp/v1/traces",
        "a URL with a path is used as it is"
    );
    let error = endpoint("ftp://127.0.0.1:4318").unwrap_err();
    assert!(error.starts_with("--otlp-endpoint: "), "{error}");
    let error = endpoint("http://user:s3cret@127.0.0.1:4318").unwrap_err();
    assert!(
        error.contains("user info") && !error.contains("s3cret"),
        "{error}"
    );

    let file = issued.dir.path().join("traced.toml");
    std::fs::write(
        &file,
        format!(
            "otlp_endpoint = \"not a url\"\n[credentials.c]\nkey_file = {:?}\nissuer = {:?}\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\ncredential = \"c\"\n",
            issued.key_file,
            issued.issuer.url()
        ),
    )
    .unwrap();
    let error = support::try_serve_config(&["--config", file.to_str().unwrap()]).unwrap_err();
    assert!(error.starts_with("otlp_endpoint: "), "{error}");
}
