//! The in-task HTTP/1.1 server: a plain connection's requests are read, handled and
//! answered in the connection's own task, each head parsed in place and each response
//! written with one write.
//!
//! hyper's server cost the hot path a tenth of the proxy's own instructions per request
//! (2,600 of 25,400): its dispatcher, a timer per request, clock reads for it and for
//! `Date`. This server takes the requests a sidecar sees most and nothing else: a head
//! within the size limit, no body or one announced by `Content-Length` small enough to
//! read whole ([`Proxy::read_body_limit`]), no upgrade, no `Expect`. At the first request
//! it does not take (HTTP/2's preface, chunked or larger bodies, upgrades, anything
//! malformed) it hands the connection and every byte it read to hyper, which serves the
//! connection from then on and answers errors as before.

use std::cell::RefCell;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::slots::Slot;
use crate::proxy::http1::{Scan, MAX_HEADERS};
use crate::proxy::{ClientBody, Peer, Proxy, ProxyBody};

/// Read buffer per connection: most request heads fit, and an idle connection stays
/// small (nginx starts at 1 KiB). It doubles as larger heads and bodies need.
const READ_BUFFER: usize = 2 * 1024;
/// Body bytes gathered before a write; larger data frames are written as they are.
const WRITE_BUFFER: usize = 16 * 1024;

/// What the in-task server takes on, and for how long it waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Largest request head; hyper answers a larger one with 431.
    pub max_head: usize,
    /// Largest request body read whole.
    pub max_body: usize,
    /// How long a request (head and body) may take to arrive, and a connection may sit
    /// idle between requests: closed after one to two times this.
    pub read_timeout: Duration,
}

/// How the in-task server let go of a connection.
pub(super) enum Ended {
    /// It is finished: closed by either side, timed out, failed, or drained at shutdown.
    Closed,
    /// A request it does not take: hyper serves the connection from here, starting with
    /// these bytes.
    Handover(Bytes),
}

/// Serves `io` until it ends or hands it over; once `slot` is asked to close, the
/// connection closes when idle.
pub(super) async fn serve<S>(io: &mut S, proxy: &Proxy, peer: &Peer, limits: Limits, slot: &Slot) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection {
        io,
        buf: BytesMut::with_capacity(READ_BUFFER),
        out: Vec::new(),
        clock: Box::pin(tokio::time::sleep(limits.read_timeout)),
        served: 0,
        served_at_tick: 0,
        read_timeout: limits.read_timeout,
    };
    let stop = slot.closing();
    loop {
        let (head, fields) = loop {
            match parse(&connection.buf, limits) {
                Parsed::Head(head, fields) => break (head, fields),
                Parsed::Partial => {}
                Parsed::Refused => return Ended::Handover(connection.buf.freeze()),
            }
            match connection.read_more(stop).await {
                Read::Data => {}
                Read::Done => return Ended::Closed,
            }
        };
        let asked = head.asked;
        let request = match connection.take_request(head, &fields, stop).await {
            Ok(request) => request,
            Err(ended) => return ended,
        };
        let busy = slot.request();
        let response = proxy.handle(request, peer).await;
        let keep_alive = asked.keep_alive && !stop.is_cancelled();
        let written = connection.respond(response, &asked, keep_alive).await;
        drop(busy);
        match written {
            Ok(true) => connection.served += 1,
            Ok(false) => {
                let _ = connection.io.shutdown().await;
                return Ended::Closed;
            }
            Err(error) => {
                tracing::debug!(%error, "response to the client cut short");
                return Ended::Closed;
            }
        }
    }
}

/// One connection's state between requests.
struct Connection<'a, S> {
    io: &'a mut S,
    buf: BytesMut,
    out: Vec<u8>,
    /// Ticks every `read_timeout` while the connection waits for a request; see
    /// [`Connection::read_more`].
    clock: Pin<Box<Sleep>>,
    served: u64,
    served_at_tick: u64,
    read_timeout: Duration,
}

enum Read {
    Data,
    /// The client closed, failed, took too long, or the server is stopping.
    Done,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    /// Reads more of a request. A connection that completes no request between two ticks
    /// of its clock is closed, idle or halfway through a request: no clock is read and no
    /// timer set per request. One idle between requests is closed when the server stops.
    async fn read_more(&mut self, stop: &CancellationToken) -> Read {
        if self.buf.capacity() - self.buf.len() < READ_BUFFER / 2 {
            self.buf.reserve(READ_BUFFER);
        }
        let idle = self.buf.is_empty();
        loop {
            let result = tokio::select! {
                biased;
                result = self.io.read_buf(&mut self.buf) => result,
                () = self.clock.as_mut() => {
                    if self.served == self.served_at_tick {
                        tracing::debug!("closing a client connection that sent no request in time");
                        return Read::Done;
                    }
                    self.served_at_tick = self.served;
                    let next = Instant::now() + self.read_timeout;
                    self.clock.as_mut().reset(next);
                    continue;
                }
                () = stop.cancelled(), if idle => return Read::Done,
            };
            return match result {
                Ok(0) => Read::Done,
                Ok(_) => Read::Data,
                Err(error) => {
                    tracing::debug!(%error, "reading from the client failed");
                    Read::Done
                }
            };
        }
    }

    /// Reads the rest of the request's body, then takes the request off the buffer.
    async fn take_request(
        &mut self,
        head: Head,
        fields: &[FieldRange],
        stop: &CancellationToken,
    ) -> Result<Request<ClientBody>, Ended> {
        while self.buf.len() < head.length + head.body {
            if let Read::Done = self.read_more(stop).await {
                return Err(Ended::Closed);
            }
        }
        take(&mut self.buf, &head, fields).map_err(Ended::Handover)
    }

    /// Writes `response`: its head and, unless the request or status rules one out, its
    /// body, framed by length, by chunks, or by closing the connection. `Ok(false)`: the
    /// connection closes now (asked, or the body was delimited by closing it).
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        asked: &Asked,
        keep_alive: bool,
    ) -> std::io::Result<bool> {
        let (parts, body) = response.into_parts();
        let (framing, keep_alive) = encode_head(&mut self.out, &parts, &body, asked, keep_alive);
        let trailers = asked.trailers.then(|| declared_trailers(&parts.headers));
        let result = self.write_body(body, framing, trailers).await;
        self.out.clear();
        if self.out.capacity() > 4 * WRITE_BUFFER {
            self.out = Vec::new();
        }
        result.map(|()| keep_alive)
    }

    async fn write_body(
        &mut self,
        body: ProxyBody,
        framing: Framing,
        trailers: Option<Vec<HeaderName>>,
    ) -> std::io::Result<()> {
        let mut left = match framing {
            Framing::Length(length) => length,
            Framing::Bodiless => {
                return self.flush().await;
            }
            Framing::Chunked | Framing::UntilClose => 0,
        };
        let mut body = pin!(body);
        loop {
            // What is ready goes out with the head in one write; the rest as it comes.
            let ready = body.as_mut().poll_frame(&mut Context::from_waker(Waker::noop()));
            let frame = match ready {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush().await?;
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Ok(fields), Framing::Chunked, Some(declared)) =
                        (frame.into_trailers(), framing, &trailers)
                    {
                        self.out.extend_from_slice(b"0\r\n");
                        encode_trailers(&mut self.out, &fields, declared);
                        self.out.extend_from_slice(b"\r\n");
                        return self.flush().await;
                    }
                    continue;
                }
            };
            match framing {
                Framing::Length(_) => {
                    left = left
                        .checked_sub(data.len() as u64)
                        .ok_or_else(|| std::io::Error::other("body longer than its Content-Length"))?;
                }
                Framing::Chunked if data.is_empty() => continue,
                Framing::Chunked => {
                    self.out
                        .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                }
                Framing::UntilClose | Framing::Bodiless => {}
            }
            if data.len() > WRITE_BUFFER {
                self.flush().await?;
                self.io.write_all(&data).await?;
            } else {
                self.out.extend_from_slice(&data);
            }
            if framing == Framing::Chunked {
                self.out.extend_from_slice(b"\r\n");
            }
            if self.out.len() > WRITE_BUFFER {
                self.flush().await?;
            }
        }
        if left > 0 {
            return Err(std::io::Error::other("body shorter than its Content-Length"));
        }
        if framing == Framing::Chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Byte ranges of a field's name and value within the head.
type FieldRange = (Range<usize>, Range<usize>);

/// A request head this server takes, as positions in the read buffer.
struct Head {
    method: Range<usize>,
    target: Range<usize>,
    version: Version,
    /// Length of the head in bytes.
    length: usize,
    /// Length of the body.
    body: usize,
    asked: Asked,
}

enum Parsed {
    Head(Head, Vec<FieldRange>),
    Partial,
    /// Not for this server: hyper takes it.
    Refused,
}

/// Parses the head at the start of `buf`, and decides whether this server takes it.
fn parse(buf: &[u8], limits: Limits) -> Parsed {
    // Uninitialized slots: zeroing a hundred of them would cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) if length <= limits.max_head => length,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_head => return Parsed::Partial,
        _ => return Parsed::Refused,
    };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Parsed::Refused;
    };
    let base = buf.as_ptr() as usize;
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let scan = Scan::of(request.headers.iter().map(|h| (h.name.as_bytes(), h.value)));
    let http10 = version == 0;
    let body = match scan.content_length {
        Ok(length) if !scan.transfer_encoding && !scan.upgrade && !scan.expect => length.unwrap_or(0),
        _ => return Parsed::Refused,
    };
    match usize::try_from(body) {
        Ok(body) if body <= limits.max_body && method != "CONNECT" => Parsed::Head(
            Head {
                method: range(method.as_bytes()),
                target: range(target.as_bytes()),
                version: if http10 {
                    Version::HTTP_10
                } else {
                    Version::HTTP_11
                },
                length,
                body,
                asked: Asked {
                    head: method == "HEAD",
                    http10,
                    keep_alive: if http10 { scan.keep_alive } else { !scan.close },
                    trailers: scan.te_trailers,
                },
            },
            request
                .headers
                .iter()
                .map(|h| (range(h.name.as_bytes()), range(h.value)))
                .collect(),
        ),
        _ => Parsed::Refused,
    }
}

/// Takes the request whose `head` and body start `buf` off it, its target and field values
/// sharing the head's bytes; `Err` with every byte read when a part of it is not valid for
/// `http`'s types (hyper answers it then).
fn take(buf: &mut BytesMut, head: &Head, fields: &[FieldRange]) -> Result<Request<ClientBody>, Bytes> {
    let bytes = buf.split_to(head.length).freeze();
    match head.request(&bytes, fields) {
        Some(mut request) => {
            *request.body_mut() = ClientBody::Read(buf.split_to(head.body).freeze());
            Ok(request)
        }
        None => {
            let mut read = BytesMut::from(bytes);
            read.extend_from_slice(buf);
            Err(read.freeze())
        }
    }
}

/// The requests the in-task server takes from a client that sent `bytes`, read `piece`
/// bytes at a time: each one's method, target, number of fields and body, then whether
/// the connection went to hyper. For the fuzz target and tests.
#[doc(hidden)]
pub fn decode_requests(bytes: &[u8], piece: usize) -> (Vec<(Method, Uri, usize, Bytes)>, bool) {
    let limits = Limits {
        max_head: 16 * 1024,
        max_body: 64 * 1024,
        read_timeout: Duration::ZERO,
    };
    let mut input = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let mut taken = Vec::new();
    loop {
        let wanted = match parse(&buf, limits) {
            Parsed::Refused => return (taken, true),
            Parsed::Partial => buf.len() + 1,
            Parsed::Head(head, fields) if buf.len() >= head.length + head.body => {
                match take(&mut buf, &head, &fields) {
                    Ok(request) => {
                        let body = match request.body() {
                            ClientBody::Read(body) => body.clone(),
                            ClientBody::Incoming(_) => Bytes::new(),
                        };
                        let fields = request.headers().len();
                        taken.push((request.method().clone(), request.uri().clone(), fields, body));
                        continue;
                    }
                    Err(_) => return (taken, true),
                }
            }
            Parsed::Head(head, _) => head.length + head.body,
        };
        while buf.len() < wanted {
            match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return (taken, false),
            }
        }
    }
}

impl Head {
    /// The request, its target and field values sharing `bytes` (the head); `None` when a
    /// part is not valid for `http`'s types.
    fn request(&self, bytes: &Bytes, fields: &[FieldRange]) -> Option<Request<ClientBody>> {
        let mut request = Request::new(ClientBody::Read(Bytes::new()));
        *request.method_mut() = Method::from_bytes(&bytes[self.method.clone()]).ok()?;
        *request.uri_mut() = Uri::from_maybe_shared(bytes.slice(self.target.clone())).ok()?;
        *request.version_mut() = self.version;
        let headers = request.headers_mut();
        headers.reserve(fields.len());
        for (name, value) in fields {
            let name = HeaderName::from_bytes(&bytes[name.clone()]).ok()?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone())).ok()?;
            headers.append(name, value);
        }
        Some(request)
    }
}

/// What the request asked of its response.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    http10: bool,
    keep_alive: bool,
    /// The client takes trailer fields (`TE: trailers`).
    trailers: bool,
}

/// How the response body is delimited for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Bodiless,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes the status line and fields into `out`, adding the framing, `Date` when absent,
/// and what the client needs to know of the connection: the framing, and whether the
/// connection stays open after the body.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    asked: &Asked,
    keep_alive: bool,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    let (mut announced, mut dated) = (None, false);
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            announced = announced.or(Some(value));
        } else if name == header::DATE {
            dated = true;
        }
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    let bodiless = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = keep_alive;
    let framing = if bodiless {
        Framing::Bodiless
    } else if let Some(length) = announced.and_then(|v| v.to_str().ok()?.parse().ok()) {
        Framing::Length(length)
    } else if let Some(length) = body.size_hint().exact() {
        field(b"content-length", length.to_string().as_bytes());
        Framing::Length(length)
    } else if !asked.http10 {
        field(b"transfer-encoding", b"chunked");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if !dated {
        with_date(|date| field(b"date", date));
    }
    if !keep_alive {
        field(b"connection", b"close");
    } else if asked.http10 {
        field(b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// The fields the response's `Trailer` declares: the only trailer fields sent (as hyper
/// does).
fn declared_trailers(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect()
}

/// Writes the trailer fields that were declared and may be trailers (RFC 9110 §6.5.1).
fn encode_trailers(out: &mut Vec<u8>, fields: &HeaderMap, declared: &[HeaderName]) {
    let forbidden = [
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::HOST,
        header::MAX_FORWARDS,
        header::SET_COOKIE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::TE,
    ];
    for (name, value) in fields {
        if declared.contains(name) && !forbidden.contains(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Calls `write` with the current `Date` field value, formatted once a second per thread.
fn with_date(write: impl FnOnce(&[u8])) {
    thread_local!(static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) });
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        write(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Either, Full};

    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_body: 64,
        read_timeout: Duration::from_secs(1),
    };

    fn taken(text: &str) -> (Head, Vec<FieldRange>) {
        match parse(text.as_bytes(), LIMITS) {
            Parsed::Head(head, fields) => (head, fields),
            _ => panic!("not taken: {text:?}"),
        }
    }

    #[test]
    fn simple_requests_are_taken_with_their_body_length_and_what_they_ask() {
        let (head, fields) = taken("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((head.body, fields.len()), (5, 2));
        assert!(head.asked.keep_alive && !head.asked.http10 && !head.asked.head && !head.asked.trailers);
        let (head, _) = taken("GET / HTTP/1.0\r\n\r\n");
        assert!(head.asked.http10 && !head.asked.keep_alive);
        let (head, _) = taken("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(head.asked.http10 && head.asked.keep_alive);
        let (head, _) = taken("HEAD / HTTP/1.1\r\nConnection: close\r\nTE: trailers\r\n\r\n");
        assert!(head.asked.head && !head.asked.keep_alive && head.asked.trailers);
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        for text in ["", "GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert!(
                matches!(parse(text.as_bytes(), LIMITS), Parsed::Partial),
                "{text:?}"
            );
        }
    }

    #[test]
    fn what_this_server_does_not_take_goes_to_hyper() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        let long_partial = format!("GET /{}", "a".repeat(2000));
        for text in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            &long,
            &long_partial,
        ] {
            assert!(
                matches!(parse(text.as_bytes(), LIMITS), Parsed::Refused),
                "{text:?}"
            );
        }
    }

    #[test]
    fn pipelined_requests_read_the_same_whatever_the_read_sizes() {
        let bytes = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                      POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (taken, handed_over) = decode_requests(bytes, 1 << 20);
        assert!(handed_over, "the chunked request goes to hyper");
        let summary: Vec<_> = taken
            .iter()
            .map(|(method, uri, fields, body)| (method.as_str(), uri.to_string(), *fields, &body[..]))
            .collect();
        assert_eq!(
            summary,
            [
                ("GET", "/a".to_owned(), 1, &b""[..]),
                ("POST", "/b".to_owned(), 1, &b"abc"[..])
            ]
        );
        for piece in [1, 2, 7, 40] {
            assert_eq!(
                decode_requests(bytes, piece),
                (taken.clone(), true),
                "piece {piece}"
            );
        }
        let (taken, handed_over) = decode_requests(b"GET /a HTTP/1.1\r\n\r\nGET /b HT", 3);
        assert_eq!(
            (taken.len(), handed_over),
            (1, false),
            "the second head is still coming"
        );
    }

    #[test]
    fn a_taken_head_becomes_a_request_sharing_its_bytes() {
        let text = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let (head, fields) = taken(text);
        let bytes = Bytes::from(text);
        let request = head.request(&bytes.slice(..head.length), &fields).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.version(), Version::HTTP_11);
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        // A target `http` cannot hold: hyper answers it.
        let text = "GET http://[::1/ HTTP/1.1\r\n\r\n";
        let (head, fields) = taken(text);
        assert!(head.request(&Bytes::from(text), &fields).is_none());
    }

    fn head_of(
        status: StatusCode,
        fields: &[(&str, &str)],
        body: &'static str,
        asked: Asked,
    ) -> (String, Framing) {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
        *response.status_mut() = status;
        for (name, value) in fields {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (parts, body) = response.into_parts();
        let mut out = Vec::new();
        let (framing, keep_alive) = encode_head(&mut out, &parts, &body, &asked, asked.keep_alive);
        assert_eq!(
            keep_alive, asked.keep_alive,
            "a body of known length keeps the connection"
        );
        (String::from_utf8(out).unwrap(), framing)
    }

    const GET_11: Asked = Asked {
        head: false,
        http10: false,
        keep_alive: true,
        trailers: false,
    };

    #[test]
    fn response_heads_carry_framing_date_and_the_connection_s_fate() {
        let (text, framing) = head_of(StatusCode::OK, &[("x-a", "1")], "hello", GET_11);
        assert_eq!(framing, Framing::Length(5));
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");

        let dated = [("date", "Sun, 22 Nov 2026 17:00:00 GMT"), ("content-length", "5")];
        let (text, framing) = head_of(StatusCode::OK, &dated, "hello", GET_11);
        assert_eq!(framing, Framing::Length(5));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 17:00:00 GMT\r\ncontent-length: 5\r\n\r\n"
        );

        let head = Asked { head: true, ..GET_11 };
        let (text, framing) = head_of(StatusCode::OK, &dated[..1], "", head);
        assert_eq!(framing, Framing::Bodiless);
        assert!(!text.contains("content-length"), "{text}");

        let (_, framing) = head_of(StatusCode::NOT_MODIFIED, &dated[..1], "", GET_11);
        assert_eq!(framing, Framing::Bodiless);

        let closing = Asked {
            keep_alive: false,
            ..GET_11
        };
        let (text, _) = head_of(StatusCode::OK, &dated[..1], "", closing);
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");

        let kept_10 = Asked {
            http10: true,
            ..GET_11
        };
        let (text, _) = head_of(StatusCode::OK, &dated[..1], "", kept_10);
        assert!(text.ends_with("connection: keep-alive\r\n\r\n"), "{text}");
    }

    #[test]
    fn only_declared_trailers_that_may_trail_are_sent() {
        let mut response = HeaderMap::new();
        response.append(
            header::TRAILER,
            HeaderValue::from_static("x-checksum, Content-Type"),
        );
        response.append(header::TRAILER, HeaderValue::from_static("grpc-status"));
        let declared = declared_trailers(&response);
        let mut trailers = HeaderMap::new();
        for (name, value) in [
            ("x-checksum", "1"),
            ("content-type", "x"),
            ("grpc-status", "0"),
            ("x-other", "2"),
        ] {
            trailers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut out = Vec::new();
        encode_trailers(&mut out, &trailers, &declared);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-checksum: 1\r\ngrpc-status: 0\r\n"
        );
    }
}
