//! The client side of the wire (hyper's server, src/server/): raw HTTP/1 bytes to the
//! proxy over kept-alive TCP connections: pipelining, chunked and large request bodies
//! followed by more requests, HTTP/1.0 and `Connection: close`, HEAD, the idle timeout, the
//! proxy's own errors, streamed responses with their trailers, and shutdown.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one read may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// One response as it came off the wire.
struct Reply {
    status: u16,
    /// Lowercase names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The trailer section's lines, as sent.
    trailers: Vec<String>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(
            values.next().is_none(),
            "{name} appears twice: {:?}",
            self.headers
        );
        value
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client connection that reads responses one at a time off a shared buffer.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more into the buffer; `false` when the server closed.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("the server sends within the patience")
            .expect("reading from the proxy");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "closed in mid-response");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(at + 2).await;
                return String::from_utf8_lossy(&line[..at]).into_owned();
            }
            assert!(self.fill().await, "closed in mid-line");
        }
    }

    /// Reads exactly one response; `to_head` when it answers a HEAD (no body follows).
    async fn response(&mut self, to_head: bool) -> Reply {
        let (status, headers, length) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut head = httparse::Response::new(&mut fields);
            let parsed = head.parse(&self.buf).unwrap_or_else(|e| {
                panic!("{e}: {:?}", String::from_utf8_lossy(&self.buf));
            });
            if let httparse::Status::Complete(length) = parsed {
                let headers = head.headers.iter().map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                });
                break (head.code.unwrap(), headers.collect(), length);
            }
            assert!(self.fill().await, "closed before a response head");
        };
        self.buf.drain(..length);
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let length = reply.header("content-length").map(|v| v.parse().unwrap());
        let chunked = reply.header("transfer-encoding") == Some("chunked");
        if to_head || status == 204 || status == 304 {
            // No body, whatever the fields say.
        } else if let Some(length) = length {
            reply.body = self.take(length).await;
        } else if chunked {
            loop {
                let size = self.line().await;
                let size = size.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(size, 16).unwrap();
                if size == 0 {
                    loop {
                        match self.line().await {
                            line if line.is_empty() => break,
                            line => reply.trailers.push(line),
                        }
                    }
                    break;
                }
                let chunk = self.take(size + 2).await;
                assert!(chunk.ends_with(b"\r\n"), "chunk of {size} without its CRLF");
                reply.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            while self.fill().await {}
            reply.body = std::mem::take(&mut self.buf);
        }
        reply
    }

    /// Reads until `text` has arrived, leaving it in the buffer.
    async fn until(&mut self, text: &str) {
        while !String::from_utf8_lossy(&self.buf).contains(text) {
            assert!(self.fill().await, "closed before {text:?} arrived");
        }
    }

    /// Waits for the server to close, with nothing more sent; how long that took.
    async fn closed(&mut self) -> Duration {
        let start = Instant::now();
        assert!(!self.fill().await, "unexpected bytes: {:?}", self.buf);
        start.elapsed()
    }
}

/// A request with the `Host` the proxy accepts, `extra` fields, and `body`.
fn request(addr: SocketAddr, line: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let port = addr.port();
    let head = format!("{line}\r\nHost: localhost:{port}\r\n{extra}\r\n");
    [head.as_bytes(), body].concat()
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    request(addr, &format!("GET {path} HTTP/1.1"), "", b"")
}

/// Reads a 200 from the echo and checks it answered `target`.
async fn echoed(client: &mut Client, target: &str) -> Reply {
    let reply = client.response(false).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["target"], target);
    reply
}

/// The issuer, echo and proxy, and a client connected to the proxy.
async fn connected() -> (support::Stack, SocketAddr, Client) {
    let stack = stack().await;
    let addr = stack.proxy.addr;
    let client = Client::open(addr).await;
    (stack, addr, client)
}

fn targets(echo: &mintproxy::demo::echo::Echo) -> Vec<String> {
    echo.seen().into_iter().map(|seen| seen.target).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (stack, addr, mut client) = connected().await;
    client
        .send(&[get(addr, "/first"), get(addr, "/second")].concat())
        .await;
    echoed(&mut client, "/first").await;
    echoed(&mut client, "/second").await;
    assert_eq!(targets(&stack.echo), ["/first", "/second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_and_the_one_behind_it_in_one_write_are_both_served() {
    let (stack, addr, mut client) = connected().await;
    client.send(&get(addr, "/before")).await;
    echoed(&mut client, "/before").await;
    // The chunked POST and the GET behind it arrive in one write: both are served.
    let chunked = request(
        addr,
        "POST /chunked HTTP/1.1",
        "Transfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    );
    client.send(&[chunked, get(addr, "/after")].concat()).await;
    assert_eq!(echoed(&mut client, "/chunked").await.json()["body_bytes"], 12);
    echoed(&mut client, "/after").await;
    assert_eq!(targets(&stack.echo), ["/before", "/chunked", "/after"]);
    assert_eq!(stack.echo.seen()[1].body_len, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_replay_buffer_is_streamed_whole_after_a_served_request() {
    let (stack, addr, mut client) = connected().await;
    client.send(&get(addr, "/small")).await;
    echoed(&mut client, "/small").await;
    let body = vec![b'x'; 100_000];
    let line = "POST /big HTTP/1.1";
    client
        .send(&request(addr, line, "Content-Length: 100000\r\n", &body))
        .await;
    assert_eq!(echoed(&mut client, "/big").await.json()["body_bytes"], 100_000);
    assert_eq!(stack.echo.seen()[1].body_len, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_closes_unless_asked_to_keep_alive() {
    let (_stack, addr, mut client) = connected().await;
    client.send(&request(addr, "GET /once HTTP/1.0", "", b"")).await;
    let reply = echoed(&mut client, "/once").await;
    assert_ne!(reply.header("connection"), Some("keep-alive"));
    client.closed().await;

    let mut client = Client::open(addr).await;
    for path in ["/kept", "/again"] {
        let line = format!("GET {path} HTTP/1.0");
        client
            .send(&request(addr, &line, "Connection: keep-alive\r\n", b""))
            .await;
        let reply = echoed(&mut client, path).await;
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_and_then_closed() {
    let (_stack, addr, mut client) = connected().await;
    let line = "GET /last HTTP/1.1";
    client
        .send(&request(addr, line, "Connection: close\r\n", b""))
        .await;
    let reply = echoed(&mut client, "/last").await;
    assert_eq!(reply.header("connection"), Some("close"));
    client.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_response_has_no_body_before_the_next_response() {
    let (stack, addr, mut client) = connected().await;
    let head = request(addr, "HEAD /head HTTP/1.1", "", b"");
    client.send(&[head, get(addr, "/next")].concat()).await;
    let reply = client.response(true).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-length").is_some(), "{:?}", reply.headers);
    echoed(&mut client, "/next").await;
    assert_eq!(targets(&stack.echo), ["/head", "/next"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_read_timeout() {
    let issued = support::issuer().await;
    let listener = support::local_listener().await;
    let echo = mintproxy::demo::echo::Echo::start(listener, issued.issuer.clone()).unwrap();
    let flags = ["--header-read-timeout", "1s"];
    let proxy = support::proxy(&issued, echo.url(), &flags).await;
    let mut client = Client::open(proxy.addr).await;
    client.send(&get(proxy.addr, "/idle")).await;
    let reply = echoed(&mut client, "/idle").await;
    assert_eq!(reply.header("connection"), None, "kept alive");
    let waited = client.closed().await;
    assert!(waited >= Duration::from_millis(900), "closed after {waited:?}");
    assert!(waited <= Duration::from_secs(3), "closed after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_refusal_is_framed_and_dated_and_keeps_the_connection() {
    let (stack, addr, mut client) = connected().await;
    client
        .send(b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .await;
    let refused = client.response(false).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "forbidden");
    // Framed by length (the JSON above read whole, the next response right after it).
    assert!(
        refused.header("content-length").is_some(),
        "{:?}",
        refused.headers
    );
    assert_eq!(refused.header("transfer-encoding"), None);
    let date = refused.header("date").expect("a date");
    assert!(httpdate::parse_http_date(date).is_ok(), "date: {date}");
    assert_eq!(refused.header("connection"), None, "kept alive");
    client.send(&get(addr, "/allowed")).await;
    echoed(&mut client, "/allowed").await;
    assert_eq!(targets(&stack.echo), ["/allowed"]);
}

/// An upstream that answers every request with a chunked body: `hello`, then, once `go`
/// fires, `world` and an `x-checksum` trailer it declares. (Every connection is served:
/// hyper's pool may open a new one while the last is on its way back.)
async fn streaming_upstream(go: tokio::sync::mpsc::Receiver<()>) -> String {
    let listener = support::local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let go = std::sync::Arc::new(tokio::sync::Mutex::new(go));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if !buf.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    buf.clear();
                    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n";
                    stream
                        .write_all(format!("{head}5\r\nhello\r\n").as_bytes())
                        .await
                        .unwrap();
                    go.lock().await.recv().await;
                    let rest = "5\r\nworld\r\n0\r\nx-checksum: 42\r\n\r\n";
                    stream.write_all(rest.as_bytes()).await.unwrap();
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_goes_out_as_it_comes_with_trailers_for_who_takes_them() {
    let issued = support::issuer().await;
    let (go, wait) = tokio::sync::mpsc::channel(2);
    let upstream = streaming_upstream(wait).await;
    let proxy = support::proxy(&issued, &upstream, &[]).await;
    let mut client = Client::open(proxy.addr).await;
    // Sends the request; the first piece must reach the client while the upstream still
    // holds the rest, which it then releases.
    let streamed = async |client: &mut Client, line: &str, extra: &str| {
        client.send(&request(proxy.addr, line, extra, b"")).await;
        client.until("hello").await;
        go.send(()).await.unwrap();
        client.response(false).await
    };
    for (te, trailers) in [("TE: trailers\r\n", vec!["x-checksum: 42"]), ("", vec![])] {
        let reply = streamed(&mut client, "GET /stream HTTP/1.1", te).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        assert_eq!(reply.body, b"helloworld");
        assert_eq!(reply.trailers, trailers, "with {te:?}");
    }
    // An HTTP/1.0 client takes no chunks: the body ends with the connection, even though
    // it asked to keep it.
    let keep = "Connection: keep-alive\r\n";
    let reply = streamed(&mut client, "GET /stream HTTP/1.0", keep).await;
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.body, b"helloworld");
    client.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_idle_kept_alive_connection_at_once() {
    use mintproxy::server;
    let issued = support::issuer().await;
    let echo =
        mintproxy::demo::echo::Echo::start(support::local_listener().await, issued.issuer.clone()).unwrap();
    let config = support::serve_config(&issued.flags(echo.url()));
    let listener = support::local_listener().await;
    let addr = listener.local_addr().unwrap();
    let tokens = tokio_util::sync::CancellationToken::new();
    let proxy =
        mintproxy::app::build_proxy(&config, Some(addr), support::fast_policy(), tokens.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = mintproxy::app::server_options(&config).unwrap();
    assert!(
        options.shutdown_timeout >= Duration::from_secs(5),
        "the default drain is long"
    );
    let serving = tokio::spawn(server::serve(listener.into(), proxy, options, async {
        let _ = stopped.await;
    }));
    let mut client = Client::open(addr).await;
    client.send(&get(addr, "/before")).await;
    echoed(&mut client, "/before").await;

    stop.send(()).unwrap();
    let waited = client.closed().await;
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
    tokio::time::timeout(Duration::from_secs(2), serving)
        .await
        .expect("the server is done once its connections are")
        .unwrap();
    tokens.cancel();
}
