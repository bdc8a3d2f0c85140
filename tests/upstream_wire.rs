//! The exchange with HTTP/1.1 upstreams (the in-house client, src/proxy/http1, over the
//! proxy's pool, src/proxy/pool.rs), mostly against a raw upstream, plain or TLS, that
//! answers with exactly the bytes each test scripts: framings hyper's servers would never
//! send, connection reuse, early answers, and upstreams that close; and the one HTTP/2
//! connection that requests share.

#[path = "support/peers.rs"]
mod peers;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

/// One scripted answer to the n-th request: the raw bytes, and whether to close the
/// connection after them.
type Script = Arc<dyn Fn(usize, &str) -> (Vec<u8>, bool) + Send + Sync>;

/// A raw upstream: what it was asked, how many connections it accepted, and one permit
/// per connection it has closed.
struct Raw {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
    closed: Arc<Semaphore>,
}

/// Starts an upstream answering the n-th request (counted over all connections) with
/// `script(n)`.
async fn raw_upstream(script: Script) -> Raw {
    raw_upstream_over(script, None).await
}

/// As [`raw_upstream`], over TLS with `acceptor` when given (then its URL names
/// `localhost`, which the certificate is for).
async fn raw_upstream_over(script: Script, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Raw {
    let listener = support::local_listener().await;
    let port = listener.local_addr().unwrap().port();
    let url = match acceptor {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let closed = Arc::new(Semaphore::new(0));
    let (seen, accepted, done) = (requests.clone(), connections.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            *accepted.lock().unwrap() += 1;
            let (seen, script, done, acceptor) =
                (seen.clone(), script.clone(), done.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_raw(stream, seen, script).await;
                        }
                    }
                    None => serve_raw(stream, seen, script).await,
                }
                done.add_permits(1);
            });
        }
    });
    Raw {
        url,
        requests,
        connections,
        closed,
    }
}

async fn serve_raw<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    seen: Arc<Mutex<Vec<String>>>,
    script: Script,
) {
    let mut buf = Vec::new();
    loop {
        // One request: the head, then a Content-Length body.
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if buf.starts_with(b"POST /early") {
            // Answers from the head alone, reads none of the body, and holds the connection.
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            seen.lock().unwrap().push(head.clone());
            let (answer, _) = script(0, &head);
            if stream.write_all(&answer).await.is_ok() {
                std::future::pending::<()>().await;
            }
            return;
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request_text = String::from_utf8_lossy(&buf[..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        let index = {
            let mut seen = seen.lock().unwrap();
            seen.push(request_text.clone());
            seen.len() - 1
        };
        if request_text.starts_with("GET /slow") {
            // Keeps this connection busy, so concurrent requests open more.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (answer, close) = script(index, &request_text);
        if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn proxy_to(upstream: &Raw) -> (support::Issued, support::Proxy) {
    let issued = support::issuer().await;
    let proxy = support::proxy(&issued, &upstream.url, &[]).await;
    (issued, proxy)
}

fn fixed(answer: &'static str) -> Script {
    Arc::new(move |_, _| (answer.as_bytes().to_vec(), false))
}

#[tokio::test]
async fn requests_reuse_one_connection_and_carry_the_bearer_and_their_length() {
    let upstream = raw_upstream(fixed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..5 {
        let answer = support::get(proxy.addr, "/a?b=1").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok");
    }
    let answer = support::send(
        Request::post(format!("http://{}/post", proxy.addr))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.body, "ok");
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        1,
        "one kept-alive connection"
    );
    let requests = upstream.requests.lock().unwrap();
    assert!(
        requests[0].starts_with("GET /a?b=1 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("\r\nauthorization: Bearer "),
        "{}",
        requests[0]
    );
    assert!(
        requests[5].starts_with("POST /post HTTP/1.1\r\n"),
        "{}",
        requests[5]
    );
    assert!(
        requests[5].contains("\r\ncontent-length: 5\r\n"),
        "{}",
        requests[5]
    );
    assert!(requests[5].ends_with("\r\n\r\nhello"), "{}", requests[5]);
}

/// The chunked answer of [`CHUNKED_WITH_TRAILERS`]: a client that asks for trailers
/// gets them, and the body reassembled.
async fn get_chunked_with_trailers(proxy: &support::Proxy) {
    let response = support::client()
        .request(
            Request::get(format!("http://{}/", proxy.addr))
                .header("te", "trailers")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().map(|t| t["x-checksum"].clone()).unwrap(),
        "42"
    );
    assert_eq!(collected.to_bytes(), "hello, world");
}

const CHUNKED_WITH_TRAILERS: &str =
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
     5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-checksum: 42\r\n\r\n";

#[tokio::test]
async fn chunked_responses_are_decoded_with_their_trailers() {
    let upstream = raw_upstream(fixed(CHUNKED_WITH_TRAILERS)).await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..3 {
        get_chunked_with_trailers(&proxy).await;
    }
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        1,
        "chunked responses keep the connection"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_and_close_delimited_bodies_read_to_the_end() {
    let upstream = raw_upstream(Arc::new(|_, _| {
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\nx-kind: close-delimited\r\n\r\nall of this, until the close"
                .to_vec(),
            true,
        )
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["x-kind"], "close-delimited");
        assert_eq!(answer.body, "all of this, until the close");
    }
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        2,
        "a close-delimited body ends its connection"
    );
}

#[tokio::test]
async fn a_body_split_across_reads_arrives_whole() {
    let upstream = raw_upstream(Arc::new(|_, _| {
        let body = "x".repeat(300_000);
        (
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes(),
            false,
        )
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/big").await;
        assert_eq!(answer.headers["content-length"], "300000");
        assert_eq!(answer.body.len(), 300_000);
    }
    assert_eq!(*upstream.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_request() {
    // Answers as if keeping the connection, then closes it: the proxy's next request
    // finds it closed and must go out on a new connection, unseen by the client.
    let upstream = raw_upstream(Arc::new(|_, _| {
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..4 {
        let answer = support::get(proxy.addr, "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*upstream.connections.lock().unwrap(), 4);
}

#[tokio::test]
async fn malformed_responses_become_502_and_are_never_reused() {
    let upstream = raw_upstream(Arc::new(|n, _| match n {
        0 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(),
            false,
        ),
        1 => (b"HTTP/1.1 2OO OK\r\n\r\n".to_vec(), false),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/").await;
        assert_eq!(answer.status, 502, "{:?}", answer.body);
        assert!(answer.headers["proxy-status"]
            .to_str()
            .unwrap()
            .contains("mintproxy"));
    }
    assert_eq!(support::get(proxy.addr, "/").await.body, "ok");
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        3,
        "a connection that answered badly is dropped"
    );
}

#[tokio::test]
async fn hop_by_hop_response_fields_stay_behind_and_the_connection_is_kept() {
    let upstream = raw_upstream(fixed(
        "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive, TE\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Kept: 1\r\ncontent-length: 2\r\n\r\nok",
    ))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/").await;
        assert_eq!(answer.body, "ok");
        // TE is a request's field (RFC 9110 §10.1.4): in a response it says nothing.
        for gone in ["x-secret", "keep-alive", "proxy-authenticate", "upgrade", "te"] {
            assert!(!answer.headers.contains_key(gone), "{gone} reached the client");
        }
        assert!(answer
            .headers
            .get("connection")
            .is_none_or(|c| c != "X-Secret, keep-alive, TE"));
        assert_eq!(answer.headers["x-kept"], "1");
        assert_eq!(answer.headers["content-length"], "2");
    }
    assert_eq!(*upstream.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let upstream = raw_upstream(fixed("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")).await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..3 {
        let answer = support::send(
            Request::head(format!("http://{}/", proxy.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["content-length"], "1234");
        assert!(answer.body.is_empty());
    }
    assert_eq!(*upstream.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn transfer_encoding_beside_content_length_is_read_by_chunks() {
    let upstream = raw_upstream(fixed(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/").await;
        assert_eq!(answer.body, "hello", "not cut to the Content-Length");
        assert!(!answer.headers.contains_key("content-length"));
    }
    // Where such a response ended is in doubt (RFC 9112 §6.3): its connection is not
    // trusted with another request.
    assert_eq!(*upstream.connections.lock().unwrap(), 2);
}

#[tokio::test]
async fn http2_requests_share_one_upstream_connection() {
    use hyper::server::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    // An h2c upstream that counts its connections and answers after a pause, so that the
    // requests overlap.
    let listener = support::local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            *accepted.lock().unwrap() += 1;
            let service = hyper::service::service_fn(|_request| async {
                tokio::task::yield_now().await;
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(
                http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let issued = support::issuer().await;
    let proxy = support::proxy(&issued, &url, &["--upstream-http2"]).await;
    let answers = futures_util::future::join_all((0..20).map(|_| support::get(proxy.addr, "/"))).await;
    for answer in answers {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok");
    }
    assert_eq!(*connections.lock().unwrap(), 1, "one connection, opened once");
}

#[tokio::test]
async fn a_request_that_drops_the_upstream_connection_is_sent_at_most_twice() {
    // `/kill` makes the upstream close the connection without an answer.
    let upstream = raw_upstream(Arc::new(|_, request| {
        if request.starts_with("GET /kill") {
            (Vec::new(), true)
        } else {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
        }
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    // Four slow requests at once leave four kept-alive connections in the pool.
    let slow = || support::get(proxy.addr, "/slow");
    let answers = tokio::join!(slow(), slow(), slow(), slow());
    assert_eq!(answers.0.body, "ok");
    assert_eq!(*upstream.connections.lock().unwrap(), 4);
    let answer = support::get(proxy.addr, "/kill").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    let tries = upstream
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("GET /kill"))
        .count();
    assert_eq!(
        tries, 2,
        "once on a kept-alive connection, once more on a fresh one"
    );
}

#[tokio::test]
async fn an_early_answer_to_a_large_upload_arrives_and_its_connection_is_not_reused() {
    let upstream = raw_upstream(Arc::new(|_, request| {
        if request.starts_with("POST /early") {
            (
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 21\r\n\r\nupstream says too big".to_vec(),
                false,
            )
        } else {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
        }
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    // 64 MiB announced: far more than the socket buffers between proxy and upstream hold.
    let size = 64 << 20;
    let client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let head = format!(
        "POST /early HTTP/1.1\r\nHost: {}\r\nContent-Length: {size}\r\n\r\n",
        proxy.addr
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let upload = tokio::spawn(async move {
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if writer.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.ends_with(b"upstream says too big") {
            let mut chunk = [0u8; 4096];
            match reader.read(&mut chunk).await.unwrap() {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the upstream's early answer reaches the client while the upload is unsent");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("upstream says too big"), "{answer}");
    upload.abort();
    let next = support::get(proxy.addr, "/").await;
    assert_eq!(next.body, "ok");
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        2,
        "the connection with the upload half sent is not reused"
    );
}

#[tokio::test]
async fn over_tls_chunked_bodies_keep_their_trailers_and_close_delimited_ones_end_their_connection() {
    let certs = peers::Certs::new();
    let upstream = raw_upstream_over(
        Arc::new(|_, request| {
            if request.starts_with("GET /close") {
                (
                    b"HTTP/1.1 200 OK\r\nx-kind: close-delimited\r\n\r\nuntil the close".to_vec(),
                    true,
                )
            } else {
                (CHUNKED_WITH_TRAILERS.as_bytes().to_vec(), false)
            }
        }),
        Some(certs.acceptor()),
    )
    .await;
    let issued = support::issuer().await;
    let ca = certs.ca.to_str().unwrap();
    let proxy = support::proxy(&issued, &upstream.url, &["--upstream-ca", ca]).await;
    for _ in 0..3 {
        get_chunked_with_trailers(&proxy).await;
    }
    assert_eq!(
        *upstream.connections.lock().unwrap(),
        1,
        "one TLS connection for the chunked responses"
    );
    for _ in 0..2 {
        let answer = support::get(proxy.addr, "/close").await;
        assert_eq!(answer.headers["x-kind"], "close-delimited");
        assert_eq!(answer.body, "until the close");
    }
    // The first went on the kept-alive connection, the second on a new one: each body
    // ended with its connection.
    assert_eq!(*upstream.connections.lock().unwrap(), 2);
    let bearer = &upstream.requests.lock().unwrap()[0];
    assert!(bearer.contains("\r\nauthorization: Bearer "), "{bearer}");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_for_the_next_request() {
    // Answers as if keeping the connection, then closes it.
    let upstream = raw_upstream(Arc::new(|_, _| {
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    assert_eq!(support::get(proxy.addr, "/").await.body, "ok");
    upstream.closed.acquire().await.unwrap().forget();
    // A POST: sent on the closed connection it could not go again. It is not sent there.
    let answer = support::send(
        Request::post(format!("http://{}/post", proxy.addr))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(*upstream.connections.lock().unwrap(), 2);
    assert_eq!(upstream.requests.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_70_kb_response_head_is_refused_with_502() {
    let upstream = raw_upstream(Arc::new(|_, _| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
            "b".repeat(70_000)
        );
        (head.into_bytes(), false)
    }))
    .await;
    let (_issued, proxy) = proxy_to(&upstream).await;
    let answer = support::get(proxy.addr, "/").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "upstream_head_too_large");
}
