//! The proxy's own door and its behaviour under faults: browsers, slow and silent
//! clients, smuggling, oversized requests, slow and broken upstreams, limits.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::{json_response, spawn_server};
use support::{get, local_listener, raw, send, Issued};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The issuer, an echo upstream and a proxy started with `flags`.
async fn guarded(flags: &[&str]) -> (Issued, std::sync::Arc<Echo>, support::Proxy) {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), flags).await;
    (issued, echo, proxy)
}

/// A GET with extra headers; the status it got.
async fn get_with(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = Request::get(format!("http://{addr}/x"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::default()).unwrap()).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_cross_site_requests_are_refused() {
    let (_issued, echo, proxy) = guarded(&[]).await;
    let port = proxy.addr.port();
    let own = format!("http://localhost:{port}");
    // DNS rebinding: evil.example resolving to 127.0.0.1 still says Host: evil.example.
    assert_eq!(
        get_with(proxy.addr, &[("host", &format!("evil.example:{port}"))]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_with(proxy.addr, &[("origin", "https://evil.example")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_with(proxy.addr, &[("origin", "null")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_with(proxy.addr, &[("sec-fetch-site", "cross-site")]).await,
        StatusCode::FORBIDDEN
    );
    assert!(
        echo.seen().is_empty(),
        "refused requests never reach the upstream"
    );

    assert_eq!(
        get_with(proxy.addr, &[("origin", &own), ("sec-fetch-site", "same-origin")]).await,
        StatusCode::OK
    );
    let refused = send(
        Request::get(format!("http://{}/x", proxy.addr))
            .header("host", "evil.example")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(refused.json()["error"], "forbidden");
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains("--allow-host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_accepted() {
    let (_issued, _echo, proxy) = guarded(&["--allow-host", "proxy.internal"]).await;
    assert_eq!(
        get_with(proxy.addr, &[("host", "proxy.internal:1234")]).await,
        StatusCode::OK
    );
    assert_eq!(
        get_with(proxy.addr, &[("origin", "https://proxy.internal")]).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_path_allowlists_refuse_before_the_upstream() {
    let flags = [
        "--allow-method",
        "GET",
        "--allow-path",
        "/management/v1/",
        "--deny-path",
        "/management/v1/iam",
    ];
    let (_issued, echo, proxy) = guarded(&flags).await;
    assert_eq!(
        get(proxy.addr, "/management/v1/users").await.status,
        StatusCode::OK
    );
    assert_eq!(get(proxy.addr, "/admin/v1/x").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(proxy.addr, "/management/v1/iam/x").await.status,
        StatusCode::FORBIDDEN
    );
    let post = Request::post(format!("http://{}/management/v1/users", proxy.addr)).body(Full::default());
    assert_eq!(send(post.unwrap()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(echo.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let (_issued, _echo, proxy) = guarded(&["--header-read-timeout", "1s"]).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer)).await;
    assert!(
        closed.is_ok(),
        "a connection that sends nothing is not kept forever"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed only after the timeout"
    );

    // Half a header section, then nothing: closed too.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut Vec::new())).await;
    assert!(
        closed.is_ok(),
        "a stalled header section is not waited for forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_starve_a_normal_request() {
    let (_issued, _echo, proxy) = guarded(&[]).await;
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    assert_eq!(get(proxy.addr, "/normal").await.status, StatusCode::OK);
    // A bound against starvation, not a performance figure.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_not_smuggled() {
    let (_issued, echo, proxy) = guarded(&[]).await;
    let port = proxy.addr.port();
    // Content-Length says the body is "0\r\n\r", chunked says it ends at "0\r\n\r\n": a
    // front end and a back end that disagree would each see a different next request.
    let answer = raw(
        proxy.addr,
        &format!(
            "POST /a HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
        ),
    )
    .await;
    // hyper frames by Transfer-Encoding alone (RFC 9112 §6.3), drops Content-Length, and
    // closes the connection after answering, so nothing after the body is read as a request.
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let seen = echo.seen();
    assert_eq!(seen.len(), 1, "forwarded once");
    assert_eq!(seen[0].target, "/a");
    assert!(
        !seen[0].headers.contains_key("content-length"),
        "one framing upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_section_gets_431() {
    let (_issued, echo, proxy) = guarded(&["--max-header-size", "8192"]).await;
    let big = "a".repeat(20_000);
    let answer = raw(
        proxy.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n",
            proxy.addr.port()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(echo.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let (_issued, echo, proxy) = guarded(&["--max-body-size", "1000"]).await;
    let small =
        Request::post(format!("http://{}/up", proxy.addr)).body(Full::new(Bytes::from(vec![1u8; 1000])));
    assert_eq!(send(small.unwrap()).await.status, StatusCode::OK);
    let big =
        Request::post(format!("http://{}/up", proxy.addr)).body(Full::new(Bytes::from(vec![1u8; 100_000])));
    let answer = send(big.unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["error"], "body_too_large");
    assert_eq!(echo.seen().len(), 1);

    // A chunked body without a length is cut off at the limit too.
    let (mut upload, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(2);
    tokio::spawn(async move {
        for _ in 0..100 {
            if upload.send_data(Bytes::from(vec![2u8; 1000])).await.is_err() {
                break;
            }
        }
    });
    let request = Request::post(format!("http://{}/chunked", proxy.addr))
        .body(body)
        .unwrap();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    // The proxy answers 413 and closes while the client may still be writing; a client
    // that is still writing sees the connection cut instead of the answer. Either way the
    // upstream never gets the oversized body.
    match client.request(request).await {
        Ok(response) => assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(error) => assert!(format!("{error:?}").contains("BodyWrite"), "{error:?}"),
    }
    assert_eq!(
        echo.seen().len(),
        1,
        "the cut-off upload never reached the upstream whole"
    );
}

/// An upstream that waits `delay` before answering, or resets mid-response on `/reset`.
async fn faulty_upstream(delay: Duration) -> String {
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let raw_listener = local_listener().await;
    let reset_url = format!("http://{}", raw_listener.local_addr().unwrap());
    spawn_server(listener, move |_request| async move {
        tokio::time::sleep(delay).await;
        json_response(StatusCode::OK, &serde_json::json!({"late": true}))
    });
    // Promises 1000 bytes, sends 10, then closes.
    raw_upstream(raw_listener, |mut stream| async move {
        answer(
            &mut stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await;
    });
    format!("{url} {reset_url}")
}

/// Serves each connection `listener` accepts with `serve`, in a task of its own; counts
/// them.
fn raw_upstream<F, S>(listener: tokio::net::TcpListener, serve: F) -> Arc<AtomicUsize>
where
    F: Fn(TcpStream) -> S + Send + 'static,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    accepted
}

/// Reads a request (one read: the tests' requests are small) and writes `response`.
async fn answer(stream: &mut TcpStream, response: &[u8]) {
    let mut buffer = [0u8; 4096];
    let _ = stream.read(&mut buffer).await;
    let _ = stream.write_all(response).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gets_504() {
    let issued = support::issuer().await;
    let urls = faulty_upstream(Duration::from_secs(3)).await;
    let slow = urls.split(' ').next().unwrap();
    let proxy = support::proxy(&issued, slow, &["--upstream-timeout", "500ms"]).await;
    let started = Instant::now();
    let answer = get(proxy.addr, "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["error"], "upstream_timeout");
    assert!(answer.headers["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=http_response_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// An upstream that answers the first request on a connection at once and keeps the
/// connection, then leaves the next request on it unanswered; with the connections it
/// accepted.
async fn answers_once_then_stalls() -> (String, Arc<AtomicUsize>) {
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = raw_upstream(listener, |mut stream| async move {
        answer(&mut stream, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let _ = stream.read(&mut [0u8; 4096]).await;
        // Held open, unanswered.
        std::future::pending::<()>().await;
    });
    (url, accepted)
}

/// The response-head deadline lives on the upstream connection and is moved for each
/// request: on a kept-alive connection it must still end the second request in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_upstream_connection_that_stalls_gets_504_in_time() {
    let issued = support::issuer().await;
    let (url, accepted) = answers_once_then_stalls().await;
    let proxy = support::proxy(&issued, &url, &["--upstream-timeout", "500ms"]).await;
    assert_eq!(get(proxy.addr, "/first").await.status, StatusCode::OK);
    let started = Instant::now();
    let answer = get(proxy.addr, "/second").await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second request went on the first one's connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_response_breaks_only_that_response() {
    let issued = support::issuer().await;
    let urls = faulty_upstream(Duration::ZERO).await;
    let reset = urls.split(' ').nth(1).unwrap();
    let proxy = support::proxy(&issued, reset, &[]).await;
    // The head may reach the client before the cut, or the cut may come first (when the
    // proxy reads the reset at once, hyper drops the unflushed head): either way the
    // client sees the failure, never a short body passed off as whole.
    let outcome = support::client()
        .request(
            Request::get(format!("http://{}/", proxy.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    if let Ok(response) = outcome {
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        assert!(body.is_err(), "the client sees the truncation");
    }
    // The proxy itself is fine: it still answers on a fresh connection.
    let again = support::raw(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 403"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    let (_issued, _echo, proxy) = guarded(&["--max-connections", "2"]).await;
    let port = proxy.addr.port();
    let request = format!("GET /k HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    // Two connections are served and stay open (keep-alive), the first idle longer.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut connection = TcpStream::connect(proxy.addr).await.unwrap();
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = [0u8; 1024];
        let n = connection.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(connection);
    }
    // A third caller is served at once (well within the 10 s read timeout that would
    // otherwise free a slot)...
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        raw(
            proxy_addr(port),
            &format!("GET /q HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
        ),
    )
    .await
    .expect("a new caller is not locked out by idle connections");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...because the longest-idle connection was closed for it; the other is still open.
    let mut buffer = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buffer))
        .await
        .expect("the oldest idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    idle[1].write_all(request.as_bytes()).await.unwrap();
    let n = idle[1].read(&mut buffer).await.unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "the younger one still serves"
    );
    drop(proxy);
}

fn proxy_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn a_non_loopback_listen_address_needs_allow_remote() {
    let issuer_free = ["--upstream", "http://127.0.0.1:9", "--token-file", "Cargo.toml"];
    let mut flags = vec!["mintproxy", "serve", "--listen", "0.0.0.0:0"];
    flags.extend_from_slice(&issuer_free);
    let parse = |flags: &[&str]| -> Result<(), String> {
        use clap::Parser;
        match mintproxy::cli::Cli::try_parse_from(flags).unwrap().command {
            mintproxy::cli::Command::Serve(args) => args.load().map(|_| ()).map_err(|e| e.to_string()),
            _ => unreachable!(),
        }
    };
    let refused = parse(&flags).unwrap_err();
    assert!(
        refused.starts_with("--listen: 0.0.0.0:0 is not a loopback address"),
        "{refused}"
    );
    assert!(refused.contains("--allow-remote"), "{refused}");
    flags.push("--allow-remote");
    assert_eq!(parse(&flags), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    use tokio::io::AsyncBufReadExt;
    let issued = support::issuer().await;
    let urls = faulty_upstream(Duration::from_millis(1500)).await;
    let slow = urls.split(' ').next().unwrap();
    let token_file = issued.dir.path().join("token.txt");
    std::fs::write(&token_file, "static-token").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mintproxy"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            slow,
            "--token-file",
        ])
        .arg(&token_file)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let addr: std::net::SocketAddr = first
        .strip_prefix("mintproxy listening on http://")
        .unwrap()
        .parse()
        .unwrap();

    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "the request in flight completed");
    assert_eq!(answer.json()["late"], true);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}
