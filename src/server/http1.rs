//! The in-task HTTP/1.1 server: a plain connection's requests are read, handled and
//! answered in the connection's own task, each head parsed in place and each response
//! written with one write.
//!
//! hyper's server costs the hot path about a third of the proxy's own instructions per
//! request: its dispatcher, a header map built twice, a clock read for every timer and
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

use crate::proxy::http1::{Scan, MAX_HEADERS};
use crate::proxy::{ClientBody, Peer, Proxy, ProxyBody};

/// Read buffer per connection; it grows for larger heads and bodies.
const READ_BUFFER: usize = 8 * 1024;
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

/// Serves `io` until it ends or hands it over.
pub(super) async fn serve<S>(
    io: &mut S,
    proxy: &Proxy,
    peer: &Peer,
    limits: Limits,
    stop: &CancellationToken,
) -> Ended
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
        let response = proxy.handle(request, peer).await;
        let keep_alive = asked.keep_alive && !stop.is_cancelled();
        match connection.respond(response, &asked, keep_alive).await {
            Ok(()) if keep_alive => connection.served += 1,
            Ok(()) => {
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
        if self.buf.capacity() - self.buf.len() < 1024 {
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

    /// Takes the parsed head and its body off the buffer as a request.
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
        let bytes = self.buf.split_to(head.length).freeze();
        match head.request(&bytes, fields) {
            Some(mut request) => {
                *request.body_mut() = ClientBody::Read(self.buf.split_to(head.body).freeze());
                Ok(request)
            }
            None => {
                let mut read = BytesMut::from(bytes);
                read.extend_from_slice(&self.buf);
                Err(Ended::Handover(read.freeze()))
            }
        }
    }

    /// Writes `response`: its head and, unless the request or status rules one out, its
    /// body, framed by length, by chunks, or by closing the connection.
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        asked: &Asked,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let (parts, body) = response.into_parts();
        let framing = encode_head(&mut self.out, &parts, &body, asked, keep_alive);
        let trailers = asked.trailers.then(|| declared_trailers(&parts.headers));
        let result = self.write_body(body, framing, trailers).await;
        self.out.clear();
        if self.out.capacity() > 4 * WRITE_BUFFER {
            self.out = Vec::new();
        }
        result
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
/// and what the client needs to know of the connection.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    asked: &Asked,
    keep_alive: bool,
) -> Framing {
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
    framing
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
