//! Forwarding: what reaches the upstream, what comes back, and the replay after 401.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mintproxy::demo::{json_response, spawn_server};
use support::{get, local_listener, raw, send, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_mints_a_new_token_and_replays_once() {
    let stack = stack().await;
    let issuer = &stack.issued.issuer;
    assert_eq!(get(stack.proxy.addr, "/before").await.status, StatusCode::OK);
    assert_eq!(issuer.token_requests(), 1);

    // The upstream stops accepting the cached token (revoked, say).
    issuer.revoke_all();
    let post = Request::post(format!("http://{}/after", stack.proxy.addr))
        .body(Full::new(Bytes::from_static(b"{\"small\":\"body\"}")))
        .unwrap();
    let answer = send(post).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["body_bytes"],
        16,
        "the replay carried the body again"
    );
    assert_eq!(issuer.token_requests(), 2, "exactly one new token");
    let seen = stack.echo.seen();
    assert_eq!(seen.len(), 3, "before, refused, replayed");
    assert_eq!(seen[1].target, "/after");
    assert_eq!(seen[2].target, "/after");
    assert_ne!(
        seen[1].headers[header::AUTHORIZATION],
        seen[2].headers[header::AUTHORIZATION]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_big_to_replay_gets_the_401_and_the_next_request_a_new_token() {
    let stack = stack().await;
    let issuer = &stack.issued.issuer;
    assert_eq!(get(stack.proxy.addr, "/warm").await.status, StatusCode::OK);
    issuer.revoke_all();

    let big = Bytes::from(vec![b'x'; 200 * 1024]);
    let answer = send(
        Request::put(format!("http://{}/upload", stack.proxy.addr))
            .body(Full::new(big))
            .unwrap(),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "a streamed body cannot be sent twice"
    );
    // The refused token was dropped, so the next request carries a fresh one.
    assert_eq!(get(stack.proxy.addr, "/next").await.status, StatusCode::OK);
    assert_eq!(issuer.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_go_and_the_bearer_stays() {
    let stack = stack().await;
    let port = stack.proxy.addr.port();
    let answer = raw(
        stack.proxy.addr,
        &format!(
            "GET /v2/users/me?limit=2&x=%20y HTTP/1.1\r\n\
             Host: localhost:{port}\r\n\
             Connection: authorization, x-hop, close\r\n\
             Authorization: Basic Y2xpZW50OnNlY3JldA==\r\n\
             X-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\n\
             Proxy-Authorization: Basic eDp5\r\n\
             TE: gzip, trailers\r\n\
             X-Forwarded-For: 10.1.2.3\r\n\
             Accept: application/json\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = &stack.echo.seen()[0];
    assert_eq!(seen.target, "/v2/users/me?limit=2&x=%20y");
    let headers = &seen.headers;
    let bearer = headers[header::AUTHORIZATION].to_str().unwrap();
    let token = bearer
        .strip_prefix("Bearer ")
        .expect("the client's Basic header was replaced");
    assert_eq!(
        stack.issued.issuer.token_user(token).as_deref(),
        Some("test-user")
    );
    assert_eq!(headers.get_all(header::AUTHORIZATION).iter().count(), 1);
    let echo_authority = stack.echo.url().trim_start_matches("http://");
    assert_eq!(headers[header::HOST], echo_authority);
    for gone in ["connection", "x-hop", "keep-alive", "proxy-authorization"] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(headers["te"], "trailers");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("localhost:{port}").as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = stack().await;
    let port = stack.proxy.addr.port();
    let mut stream = tokio::net::TcpStream::connect(stack.proxy.addr).await.unwrap();
    let request = format!("GET /half HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Nothing more to send: the client shuts its side and waits for the answer.
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered, then closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(stack.echo.seen()[0].target, "/half");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_headers_are_added() {
    let issued = support::issuer().await;
    let echo = mintproxy::demo::echo::Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &["--header", "x-zitadel-orgid: 123456"]).await;
    let client_says_other_org = Request::get(format!("http://{}/", proxy.addr))
        .header("x-zitadel-orgid", "999")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(client_says_other_org).await.status, StatusCode::OK);
    let seen = echo.seen();
    let values: Vec<_> = seen[0].headers.get_all("x-zitadel-orgid").iter().collect();
    assert_eq!(values, ["123456"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_cannot_pick_another_host() {
    let stack = stack().await;
    // Another host in the target: refused as a foreign host, nothing forwarded.
    let answer = raw(
        stack.proxy.addr,
        "GET http://internal.example:9999/secret?q=1 HTTP/1.1\r\nHost: internal.example:9999\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(stack.echo.seen().is_empty());

    // The proxy's own name in absolute form: only the path and query are used.
    let port = stack.proxy.addr.port();
    let answer = raw(
        stack.proxy.addr,
        &format!("GET http://localhost:{port}/secret?q=1 HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(stack.echo.seen()[0].target, "/secret?q=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused() {
    let stack = stack().await;
    let answer = raw(
        stack.proxy.addr,
        "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("\"error\":\"method_not_allowed\""), "{answer}");
    assert!(stack.echo.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_json_502() {
    let issued = support::issuer().await;
    // A port that was free a moment ago: nothing listens there now.
    let closed = local_listener().await.local_addr().unwrap();
    let proxy = support::proxy(&issued, &format!("http://{closed}"), &[]).await;
    let answer = get(proxy.addr, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error"], "upstream_unreachable");
    let proxy_status = answer.headers["proxy-status"].to_str().unwrap();
    assert!(
        proxy_status.starts_with("mintproxy; error=destination_unavailable; details="),
        "{proxy_status}"
    );

    let grpc = Request::post(format!("http://{}/svc/Method", proxy.addr))
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Full::default())
        .unwrap();
    let answer = send(grpc).await;
    assert_eq!(
        answer.headers["grpc-status"], "14",
        "UNAVAILABLE for gRPC callers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_the_upstream_point_back_at_the_proxy() {
    let issued = support::issuer().await;
    let listener = local_listener().await;
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let own = upstream.clone();
    spawn_server(listener, move |request| {
        let location = match request.uri().path() {
            "/api/login" => format!("{own}/api/next?step=2"),
            _ => "https://elsewhere.example/next".to_owned(),
        };
        async move {
            let mut response = json_response(StatusCode::FOUND, &serde_json::json!({}));
            response
                .headers_mut()
                .insert(header::LOCATION, location.parse().unwrap());
            response
        }
    });
    let proxy = support::proxy(&issued, &format!("{upstream}/api"), &[]).await;
    let answer = get(proxy.addr, "/login").await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.headers[header::LOCATION],
        format!("http://{}/next?step=2", proxy.addr).as_str()
    );
    let foreign = get(proxy.addr, "/other").await;
    assert_eq!(
        foreign.headers[header::LOCATION],
        "https://elsewhere.example/next"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let issued = support::issuer().await;
    let listener = local_listener().await;
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    // The upstream sends a first chunk, then holds the rest until the test has read it.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    spawn_server(listener, move |request: Request<hyper::body::Incoming>| {
        let mut release = release_rx.clone();
        async move {
            let bearer = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let bearer = bearer.unwrap_or_default();
            let uploaded = request.into_body().collect().await.unwrap().to_bytes().len();
            let (mut sender, body) = http_body_util::channel::Channel::<Bytes, hyper::Error>::new(1);
            tokio::spawn(async move {
                sender
                    .send_data(Bytes::from(format!("uploaded={uploaded};{bearer}")))
                    .await
                    .unwrap();
                release.wait_for(|go| *go).await.unwrap();
                sender.send_data(Bytes::from_static(b"last")).await.unwrap();
            });
            Response::new(body)
        }
    });
    let proxy = support::proxy(&issued, &upstream, &[]).await;

    // A chunked upload of 8 MiB, produced while it is sent.
    let (mut upload, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    tokio::spawn(async move {
        for _ in 0..128 {
            upload.send_data(Bytes::from(vec![7u8; 64 * 1024])).await.unwrap();
        }
    });
    let request = Request::post(format!("http://{}/stream", proxy.addr))
        .body(body)
        .unwrap();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives before the upstream sends the last")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    let (uploaded, bearer) = first.split_once(';').unwrap();
    assert_eq!(uploaded, format!("uploaded={}", 8 * 1024 * 1024));
    let token = bearer
        .strip_prefix("Bearer ")
        .expect("the upstream saw the bearer");
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
    release_tx.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_reaches_an_http1_upstream() {
    let stack = stack().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{}/h2?x=1", stack.proxy.addr))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &stack.echo.seen()[0];
    assert_eq!(seen.target, "/h2?x=1");
    let bearer = seen.headers[header::AUTHORIZATION].to_str().unwrap();
    assert!(stack
        .issued
        .issuer
        .token_user(bearer.trim_start_matches("Bearer "))
        .is_some());
    assert_eq!(
        seen.headers["x-forwarded-host"],
        stack.proxy.addr.to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upstream_s_hop_by_hop_fields_stay_behind() {
    // HTTP/2 itself refuses `Connection`, `Upgrade` and the like (RFC 9113 §8.2.2), not
    // `Proxy-Authenticate`, which answers the proxy, not the client.
    let listener = local_listener().await;
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let answer = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
                let response = Response::builder()
                    .header("proxy-authenticate", "Basic realm=\"upstream\"")
                    .header("x-kept", "1")
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), answer),
            );
        }
    });
    let issued = support::issuer().await;
    let proxy = support::proxy(&issued, &upstream, &["--upstream-http2"]).await;
    let answer = get(proxy.addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-kept"], "1");
    assert!(
        !answer.headers.contains_key("proxy-authenticate"),
        "{:?}",
        answer.headers
    );
}
