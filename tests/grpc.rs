//! gRPC end to end through the proxy: a tonic client speaking HTTP/2 (prior knowledge) to
//! mintproxy, mintproxy speaking h2c to a tonic server (`--upstream-http2`). The gRPC
//! health service gives a unary call, a server stream and an error status without code
//! generation.

mod support;

use std::sync::{Arc, Mutex};

use support::local_listener;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Starts a tonic health server that records the header fields of every call.
async fn grpc_upstream() -> (
    String,
    Arc<Mutex<Vec<http::HeaderMap>>>,
    tonic_health::server::HealthReporter,
) {
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("billing", tonic_health::ServingStatus::Serving)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let recorder = tower::util::MapRequestLayer::new(move |request: http::Request<tonic::body::Body>| {
        record.lock().unwrap().push(request.headers().clone());
        request
    });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(recorder)
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (url, seen, reporter)
}

/// A tonic client to the proxy (HTTP/2 with prior knowledge, as gRPC clients speak it).
async fn client(proxy: &support::Proxy) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_streaming_and_error_calls_pass_with_the_bearer() {
    let issued = support::issuer().await;
    let (upstream, seen, reporter) = grpc_upstream().await;
    let proxy = support::proxy(&issued, &upstream, &["--upstream-http2"]).await;
    let mut health = client(&proxy).await;

    // Unary.
    let answer = health.check(check("billing")).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);

    // An error status in the trailers reaches the client unchanged.
    let error = health.check(check("no-such-service")).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);

    // Server streaming: each update arrives as the server sends it.
    let mut updates = health.watch(check("billing")).await.unwrap().into_inner();
    let first = updates.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("billing", tonic_health::ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), updates.next())
        .await
        .expect("the update is streamed, not held back")
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), ServingStatus::NotServing);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for fields in seen {
        let bearer = fields[http::header::AUTHORIZATION].to_str().unwrap();
        let token = bearer.strip_prefix("Bearer ").expect("the upstream saw a bearer");
        assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_trace_context_continues_upstream() {
    let issued = support::issuer().await;
    let (upstream, seen, _reporter) = grpc_upstream().await;
    // Spans are made (and their export to a port nobody listens on fails, which the
    // calls never notice).
    let nobody = local_listener().await.local_addr().unwrap();
    let collector = format!("http://{nobody}");
    let proxy = support::proxy(
        &issued,
        &upstream,
        &["--upstream-http2", "--otlp-endpoint", &collector],
    )
    .await;
    let mut health = client(&proxy).await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(check("billing"));
    request
        .metadata_mut()
        .insert("traceparent", caller.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "vendor=abc".parse().unwrap());
    health.check(request).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let sent = seen[0]["traceparent"].to_str().unwrap();
    assert_eq!(&sent[..36], &caller[..36], "the caller's trace: {sent}");
    assert_ne!(&sent[36..52], &caller[36..52], "the proxy's span: {sent}");
    assert_eq!(&sent[52..], "-01");
    assert_eq!(seen[0]["tracestate"], "vendor=abc");
}
