//! What is checked is what is forwarded: raw client bytes against the proxy, and a
//! recording raw upstream that asserts what arrived (nothing, or exactly the cleaned
//! request). Each test is one way a caller could reach past the operator's rules with the
//! service user's bearer attached.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream that records every request's raw bytes (head, body and trailers) and
/// answers each with `answer`.
struct Recorder {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recording = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recording = recording.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        match request_length(&buf) {
                            Complete(n) => {
                                let request = buf.drain(..n).collect::<Vec<u8>>();
                                recording
                                    .lock()
                                    .unwrap()
                                    .push(String::from_utf8_lossy(&request).into_owned());
                                if stream.write_all(answer).await.is_err() {
                                    return;
                                }
                            }
                            Partial => {
                                let mut piece = [0u8; 65536];
                                match stream.read(&mut piece).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&piece[..n]),
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

enum Length {
    Complete(usize),
    Partial,
}
use Length::{Complete, Partial};

/// How long the first request in `buf` is, once it is all there: its head, then a
/// `Content-Length` body or a chunked body with its trailers.
fn request_length(buf: &[u8]) -> Length {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return Partial;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        // The last chunk, then trailers up to an empty line.
        let body = &buf[head_end..];
        let Some(last) = find(body, b"\r\n0\r\n")
            .map(|i| i + 5)
            .or(body.starts_with(b"0\r\n").then_some(3))
        else {
            return Partial;
        };
        let rest = &body[last..];
        return if rest.starts_with(b"\r\n") {
            // No trailers: the empty line follows at once.
            Complete(head_end + last + 2)
        } else {
            match find(rest, b"\r\n\r\n") {
                Some(end) => Complete(head_end + last + end + 4),
                None => Partial,
            }
        };
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse::<usize>().unwrap());
    if buf.len() >= head_end + length {
        Complete(head_end + length)
    } else {
        Partial
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The proxy in front of `upstream` with the issued key and `extra` flags, and a request
/// line's `Host` for it.
async fn proxied(upstream: &Recorder, extra: &[&str]) -> (support::Issued, support::Proxy, String) {
    let issued = support::issuer().await;
    let proxy = support::proxy(&issued, &upstream.url, extra).await;
    let host = format!("localhost:{}", proxy.addr.port());
    (issued, proxy, host)
}

/// Sends `request` on a new connection and reads the answer until the proxy closes.
async fn exchange(proxy: &support::Proxy, request: &str) -> String {
    support::raw(proxy.addr, request).await
}

#[tokio::test]
async fn trace_and_track_are_refused_and_never_forwarded() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    for method in ["TRACE", "TRACK"] {
        let answer = exchange(
            &proxy,
            &format!("{method} / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_method_override_must_name_an_allowed_method() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &["--allow-method", "GET"]).await;
    for name in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"] {
        let answer = exchange(
            &proxy,
            &format!("GET /users/1 HTTP/1.1\r\nHost: {host}\r\n{name}: DELETE\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{name}: {answer}");
    }
    assert!(upstream.requests().is_empty());
    let allowed = exchange(
        &proxy,
        &format!("GET /users/1 HTTP/1.1\r\nHost: {host}\r\nX-HTTP-Method-Override: GET\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
}

#[tokio::test]
async fn two_hosts_or_a_host_against_the_target_are_a_400() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let two = exchange(
        &proxy,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let absolute = exchange(
        &proxy,
        &format!("GET http://{host}/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_content_length_list_reaches_the_client_as_one_field() {
    let upstream =
        Recorder::start(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello").await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = exchange(
        &proxy,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lengths: Vec<&str> = answer
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    assert_eq!(lengths.len(), 1, "{answer}");
    assert_eq!(lengths[0].split(':').nth(1).unwrap().trim(), "5");
    assert!(answer.ends_with("hello"));
}

#[tokio::test]
async fn differing_content_lengths_from_the_upstream_are_a_502() {
    let upstream = Recorder::start(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!").await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = exchange(
        &proxy,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
}

#[tokio::test]
async fn request_trailers_cannot_forge_forwarding_fields() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = exchange(
        &proxy,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\
             Trailer: X-Forwarded-For, X-Checksum\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\nX-Checksum: 42\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].contains("6.6.6.6"), "{}", requests[0]);
    assert!(requests[0].contains("hello"), "the body arrived: {}", requests[0]);
}

#[tokio::test]
async fn spellings_of_forwarding_fields_never_reach_the_upstream() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = exchange(
        &proxy,
        &format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nx_forwarded_for: 6.6.6.6\r\nX_Forwarded_Host: evil\r\n\
             Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let seen = requests[0].to_ascii_lowercase();
    assert!(!seen.contains("6.6.6.6") && !seen.contains("evil"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "the proxy's own: {seen}"
    );
}

#[tokio::test]
async fn head_size_limits_hold_both_ways() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    // 17 KB of request head against the 16 KiB default.
    let big = "a".repeat(17_000);
    let answer = exchange(
        &proxy,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(100)]
    );
    assert!(upstream.requests().is_empty());

    // 70 KB of response head against the 64 KiB limit.
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
            "b".repeat(70_000)
        )
        .into_boxed_str(),
    );
    let upstream = Recorder::start(head.as_bytes()).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        exchange(
            &proxy,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        ),
    )
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 502"),
        "{}",
        &answer[..answer.len().min(100)]
    );
}

#[tokio::test]
async fn path_rules_see_the_normalized_path_and_the_upstream_gets_it() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &["--deny-path", "/admin"]).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    // Spellings of /admin: refused by the rule they would have slipped past.
    for path in [
        "/%61dmin/users",
        "/x/../admin",
        "/x/%2e%2E/admin",
        "//admin",
        "/./admin",
    ] {
        let answer = exchange(&proxy, &get(path)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    // No single reading: refused outright.
    for path in [
        "/admin;x/users",
        "/x/..;/admin",
        "/x%2Fadmin",
        "/x%5Cadmin",
        "/x%00",
    ] {
        let answer = exchange(&proxy, &get(path)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // What passes is forwarded in the form that was checked, query untouched.
    let answer = exchange(&proxy, &get("/%75sers/./me/../42?q=%2e%2e")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = upstream.requests();
    assert!(
        requests[0].starts_with("GET /users/42?q=%2e%2e HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
}

#[tokio::test]
async fn without_path_rules_the_path_is_forwarded_as_sent() {
    let upstream = Recorder::start(OK).await;
    let (_issued, proxy, host) = proxied(&upstream, &[]).await;
    let answer = exchange(
        &proxy,
        &format!("GET /a;v=1/%61 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(upstream.requests()[0].starts_with("GET /a;v=1/%61 HTTP/1.1\r\n"));
}
