//! OTLP/HTTP export (protobuf) of the proxy's spans through the OpenTelemetry SDK: a batch
//! processor whose bounded queue drops spans rather than wait (the SDK counts the drops
//! and logs them), exporting from its own thread.
//!
//! Attributes follow OpenTelemetry's HTTP semantic conventions, and none carries a
//! secret: no header is recorded (so no `Authorization`, no token), no query string (it
//! may carry an API key), no URL user info, no request or token body.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use url::Url;

use super::context::{self, Incoming};
use super::{Hop, Propagation};

/// How long a shutdown waits for the last spans to be sent.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// The service name unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
const SERVICE_NAME: &str = "mintproxy";

/// Why export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The SDK refused the exporter's settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running export: spans go to `{endpoint}` in batches.
#[derive(Debug, Clone)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts exporting to `endpoint` (the traces URL itself, e.g.
    /// `http://collector:4318/v1/traces`) with `client` (the proxy's own calls' client,
    /// which checks certificates against its trust).
    pub fn start(endpoint: &Url, client: reqwest::Client) -> Result<Self, ExportError> {
        let client = OtlpClient {
            client,
            runtime: OnceLock::new(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource())
            .build();
        tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
        Ok(Self { provider })
    }

    /// The tracer for the proxy's spans.
    pub fn tracer(&self) -> Tracer {
        Tracer {
            tracer: self.provider.tracer(SERVICE_NAME),
        }
    }

    /// Sends the spans still queued, waiting at most [`SHUTDOWN_FLUSH`]; later spans are
    /// dropped. Off the runtime's threads: the SDK's shutdown blocks.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH)).await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("sent the last spans"),
            Ok(Err(error)) => tracing::warn!(%error, "the last spans could not all be sent"),
            Err(error) => tracing::warn!(%error, "the span export did not shut down"),
        }
    }
}

/// `service.name` is `mintproxy` unless the environment names it (the SDK reads
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`).
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    }
}

/// Makes the proxy's spans. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracer {
    tracer: SdkTracer,
}

impl Tracer {
    /// Starts the SERVER span of `request`, from `client` (its IP as header text), the
    /// child of the caller's span when its `traceparent` is valid. Never inlined, so that
    /// [`crate::proxy::Proxy::handle`], which runs with export off too, stays as small
    /// as it was (inlined, this made it too large to be inlined into the server's task).
    #[inline(never)]
    pub(crate) fn server_span<B>(
        &self,
        request: &http::Request<B>,
        scheme: &'static str,
        client: Option<&HeaderValue>,
    ) -> Hop {
        let headers = request.headers();
        let incoming = Incoming::of(headers);
        let parent = match incoming {
            Incoming::Valid(parent) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                TraceFlags::new(parent.flags),
                true,
                trace_state(headers),
            )),
            Incoming::Absent | Incoming::Malformed => Context::new(),
        };
        let method = method_name(request.method());
        let mut attributes = Vec::with_capacity(8);
        attributes.push(KeyValue::new("http.request.method", method));
        if method == OTHER {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                request.method().as_str().to_owned(),
            ));
        }
        attributes.push(KeyValue::new("url.path", request.uri().path().to_owned()));
        attributes.push(KeyValue::new("url.scheme", scheme));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            protocol_version(request.version()),
        ));
        let host = request
            .uri()
            .authority()
            .map(http::uri::Authority::as_str)
            .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
        if let Some(host) = host.and_then(|host| host.parse::<http::uri::Authority>().ok()) {
            attributes.extend(server_address(&host));
        }
        if let Some(client) = client.and_then(|c| c.to_str().ok()) {
            attributes.push(KeyValue::new("client.address", client.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let traceparent = header_for(span.span_context());
        let propagation = match incoming {
            Incoming::Valid(_) => Propagation::Continued(traceparent),
            Incoming::Absent | Incoming::Malformed => Propagation::Started(traceparent),
        };
        Hop {
            span: Some(Box::new(ServerSpan { span, method })),
            propagation,
        }
    }

    /// Starts the CLIENT span of a request to `url` (a token or discovery request),
    /// the root of its own trace.
    pub(crate) fn client_span(&self, method: &Method, url: &Url) -> ClientSpan {
        let method_name = method_name(method);
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("http.request.method", method_name));
        // Without user info or query, which may carry credentials.
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        attributes.push(KeyValue::new("url.full", shown.to_string()));
        if let Some(host) = url.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = self
            .tracer
            .span_builder(method_name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::new());
        ClientSpan { span }
    }
}

/// The caller's `tracestate`, for the exported span; dropped when it does not parse.
fn trace_state(headers: &HeaderMap) -> TraceState {
    headers
        .get(&super::TRACESTATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| TraceState::from_str(text).ok())
        .unwrap_or_default()
}

fn header_for(span: &SpanContext) -> HeaderValue {
    context::traceparent(
        span.trace_id().to_bytes(),
        span.span_id().to_bytes(),
        span.trace_flags().to_u8(),
    )
}

/// `server.address` and `server.port` of `authority`.
fn server_address(authority: &http::uri::Authority) -> impl Iterator<Item = KeyValue> {
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    [
        Some(KeyValue::new("server.address", host.to_owned())),
        authority
            .port_u16()
            .map(|port| KeyValue::new("server.port", i64::from(port))),
    ]
    .into_iter()
    .flatten()
}

/// What the conventions call a method not among the known ones.
const OTHER: &str = "_OTHER";

/// The method as the conventions name it: one of the known methods, or `_OTHER` (so that
/// a caller cannot make span names of any text).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER,
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A request's SERVER span, ended with its answer.
#[derive(Debug)]
pub(crate) struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
    method: &'static str,
}

impl ServerSpan {
    /// Ends the span: the request matched `route` (if any) and got `status`, the proxy's
    /// own answer when `failure` names why (`unreachable`, `timeout`...). Never inlined, as
    /// [`Tracer::server_span`].
    #[inline(never)]
    pub(crate) fn end(mut self, route: Option<&str>, status: StatusCode, failure: Option<&'static str>) {
        if let Some(route) = route {
            self.span
                .set_attribute(KeyValue::new("http.route", route.to_owned()));
            self.span.update_name(format!("{} {route}", self.method));
        }
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        // A server span fails with a 5xx only: a 4xx is the client's error.
        if status.is_server_error() {
            let kind = failure.map_or_else(|| status.as_str().to_owned(), str::to_owned);
            self.span.set_attribute(KeyValue::new("error.type", kind));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

/// A token or discovery request's CLIENT span.
#[derive(Debug)]
pub(crate) struct ClientSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl ClientSpan {
    /// The `traceparent` the request carries, naming this span.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        header_for(self.span.span_context())
    }

    /// Ends the span: the server answered `status` (an error from 400 on), or `error`
    /// (a class, such as `timeout`) kept it from answering.
    pub(crate) fn end(mut self, answer: Result<StatusCode, &'static str>) {
        let error = match answer {
            Ok(status) => {
                self.span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                (status.is_client_error() || status.is_server_error()).then(|| status.as_str().to_owned())
            }
            Err(class) => Some(class.to_owned()),
        };
        if let Some(error) = error {
            self.span.set_attribute(KeyValue::new("error.type", error));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

/// reqwest as the exporter's HTTP client, on a runtime of its own: the SDK exports from
/// its batch thread, which blocks on the export, so the request must not need the
/// proxy's runtime (with `--threads 1` that runtime may itself be waiting for a flush).
/// The runtime is made on the batch thread, at the first export, so that it is never
/// made or dropped on one of the proxy's runtime threads (tokio forbids the drop there).
struct OtlpClient {
    client: reqwest::Client,
    runtime: OnceLock<std::io::Result<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let runtime = self
            .runtime
            .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build())
            .as_ref()
            .map_err(|error| format!("cannot start the exporter's runtime: {error}"))?;
        runtime.block_on(async {
            let response = self.client.execute(reqwest::Request::try_from(request)?).await?;
            let mut answer = http::Response::new(Bytes::new());
            *answer.status_mut() = response.status();
            *answer.headers_mut() = response.headers().clone();
            *answer.body_mut() = response.bytes().await?;
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_name(&Method::GET), "GET");
        assert_eq!(method_name(&Method::from_bytes(b"BREW").unwrap()), OTHER);
    }
}
