//! A Unix socket listener: created owner-only, requests through it get the bearer.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mintproxy::demo::echo::Echo;
use mintproxy::server::{self, Listener};
use support::local_listener;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_a_unix_socket_carry_the_bearer() {
    use std::os::unix::fs::PermissionsExt;
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let socket = issued.dir.path().join("mintproxy.sock");
    let listen = format!("unix:{}", socket.display());
    let config = support::try_serve_config_on(&listen, &issued.flags(echo.url())).unwrap();

    let listener = Listener::bind(&config.listen).await.unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
    let stop = CancellationToken::new();
    let proxy = mintproxy::app::build_proxy(&config, None, support::fast_policy(), stop.clone()).unwrap();
    let options = mintproxy::app::server_options(&config).unwrap();
    let serving = tokio::spawn(server::serve(
        listener,
        proxy,
        options,
        stop.clone().cancelled_owned(),
    ));

    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    // What `curl --unix-socket` sends.
    let request = Request::get("/v2/users/me")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["token_user"], "test-user");
    assert!(
        body["headers"].get("x-forwarded-for").is_none(),
        "no client address on a Unix socket"
    );

    stop.cancel();
    serving.await.unwrap();
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}
