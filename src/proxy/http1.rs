//! HTTP/1.1 on the wire to a plain-HTTP upstream, inside the request's own task.
//!
//! hyper's client drives every connection from a task of its own, so a forwarded request
//! hops between tasks five times and pays hyper's dispatch at each hop. Here the request
//! task writes the request, reads the response head and, for the usual small response,
//! the whole body, then gives the connection back. Only what this path needs is here:
//! buffered request bodies (up to the replay limit) and no upgrades; streaming bodies and
//! upgrades go through hyper.

use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::forward::Outbound;
use super::headers::{is_hop_by_hop, list};
use super::pool::{Connection, Lease};

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a head or trailer section (hyper's limit too).
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line.
const MAX_CHUNK_LINE: usize = 4096;

/// What went wrong talking to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading or writing the socket failed.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before a complete response.
    #[error("upstream closed the connection before a complete response")]
    Closed {
        /// Whether any byte of a response had arrived (a request is only sent again when
        /// none had).
        partial: bool,
    },
    /// The response does not parse as HTTP/1.1.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    /// The request's deadline passed before the response head arrived.
    #[error("no response before the deadline")]
    TimedOut,
}

/// The request head and body, serialized, with `authorization` as the credential:
/// `Content-Length` comes from the body, any framing header the client sent is dropped.
pub fn encode_request(outbound: &Outbound<'_>, authorization: &HeaderValue, body: &[u8]) -> Vec<u8> {
    let path = outbound.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(outbound.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    // Framing is ours; the body is already in hand, so the client's
    // `Expect: 100-continue` was answered by this proxy and must not invite the upstream
    // to answer before reading the body; and the credential is ours.
    let ours = [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::AUTHORIZATION,
    ];
    for (name, value) in &outbound.headers {
        if !ours.contains(name) && !outbound.set.replaces(name) {
            field(name, value);
        }
    }
    for (name, value) in outbound.set.iter() {
        field(name, value);
    }
    field(&header::AUTHORIZATION, authorization);
    let needs_length = !body.is_empty()
        || outbound.headers.contains_key(header::CONTENT_LENGTH)
        || matches!(outbound.method, Method::POST | Method::PUT | Method::PATCH);
    if needs_length {
        let length = HeaderValue::from(body.len());
        field(&header::CONTENT_LENGTH, &length);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn is_reset(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Writes the serialized request on `connection`, before its deadline.
pub async fn write_request(connection: &mut Connection, bytes: &[u8]) -> Result<(), WireError> {
    tokio::select! {
        biased;
        written = connection.stream.write_all(bytes) => Ok(written?),
        () = connection.deadline.as_mut() => Err(WireError::TimedOut),
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Reads one final response head (1xx interim responses are skipped) and returns the
/// response, its body reading on from `connection`.
pub async fn read_response(
    mut connection: Connection,
    lease: Lease,
    method: &Method,
) -> Result<Response<WireBody>, WireError> {
    loop {
        let (head, length) = loop {
            if let Some(parsed) = parse_head(&connection.buf)? {
                break parsed;
            }
            if connection.buf.len() > MAX_HEAD {
                return Err(WireError::Malformed("response head too large"));
            }
            let partial = !connection.buf.is_empty();
            match connection.read_more_before_deadline().await? {
                Ok(0) => return Err(WireError::Closed { partial }),
                Ok(_) => {}
                // A reset before any byte of a response is the same news as a close.
                Err(error) if !partial && is_reset(&error) => return Err(WireError::Closed { partial }),
                Err(error) => return Err(error.into()),
            }
        };
        let head_bytes = connection.buf.split_to(length).freeze();
        let status = head.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Malformed(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        if status.is_informational() {
            continue;
        }
        let scan = Scan::of(head.fields(&head_bytes));
        let (framing, mut reusable) = framing(method, status, &scan)?;
        reusable &= head.version == Version::HTTP_11 && !scan.close;
        let headers = head.header_map(&head_bytes, &scan)?;
        let mut response = Response::new(WireBody::new(connection, lease, framing, reusable));
        *response.status_mut() = status;
        *response.version_mut() = head.version;
        *response.headers_mut() = headers;
        response.body_mut().take_buffered();
        return Ok(response);
    }
}

struct Head {
    status: StatusCode,
    version: Version,
    /// Byte ranges of each field's name and value within the head.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// A field's name and value, as sent.
pub(crate) type Field<'a> = (&'a [u8], &'a [u8]);

impl Head {
    /// Each field of the head held in `bytes`.
    fn fields<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = Field<'a>> {
        self.fields
            .iter()
            .map(move |(name, value)| (&bytes[name.clone()], &bytes[value.clone()]))
    }

    /// The end-to-end headers, their values sharing `bytes` (the head these ranges point
    /// into). Hop-by-hop fields never enter the map, and neither does a `Content-Length`
    /// beside `Transfer-Encoding`: the body was read by the latter, and the client is told
    /// its own framing (RFC 9112 §6.3).
    fn header_map(&self, bytes: &Bytes, scan: &Scan) -> Result<HeaderMap, WireError> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            let raw = &bytes[name.clone()];
            let hop = if scan.names_fields {
                is_hop_by_hop(raw, field_tokens(self.fields(bytes), b"connection"))
            } else {
                is_hop_by_hop(raw, std::iter::empty())
            };
            if hop || (scan.transfer_encoding && raw.eq_ignore_ascii_case(b"content-length")) {
                continue;
            }
            let name =
                HeaderName::from_bytes(raw).map_err(|_| WireError::Malformed("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone()))
                .map_err(|_| WireError::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// The list elements of every field called `name` (lowercase).
fn field_tokens<'a>(
    fields: impl Iterator<Item = Field<'a>>,
    name: &'static [u8],
) -> impl Iterator<Item = &'a [u8]> {
    fields
        .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
        .flat_map(|(_, value)| list(value))
}

/// What a head says about its framing, its connection and its hop-by-hop fields, found in
/// one pass before any field enters a header map. Shared by both directions: responses
/// read here, requests read by the in-task server (`crate::server::http1`).
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// The last transfer coding.
    last_coding: Option<&'a [u8]>,
    /// The `Content-Length` (`None`: no such field), or what is wrong with it.
    pub content_length: Result<Option<u64>, &'static str>,
    /// `Connection` says `close`.
    pub close: bool,
    /// `Connection` says `keep-alive` (what an HTTP/1.0 client needs to keep it).
    pub keep_alive: bool,
    /// `Connection` names fields beyond the fixed hop-by-hop ones (rare).
    names_fields: bool,
    /// An `Upgrade` field, or `Connection: upgrade`.
    pub upgrade: bool,
    /// An `Expect` field.
    pub expect: bool,
    /// `TE` lists `trailers`: the client takes trailer fields.
    pub te_trailers: bool,
}

impl<'a> Scan<'a> {
    /// Scans `fields`.
    pub fn of(fields: impl Iterator<Item = Field<'a>>) -> Self {
        let mut scan = Scan {
            transfer_encoding: false,
            last_coding: None,
            content_length: Ok(None),
            close: false,
            keep_alive: false,
            names_fields: false,
            upgrade: false,
            expect: false,
            te_trailers: false,
        };
        for (name, value) in fields {
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                scan.transfer_encoding = true;
                scan.last_coding = list(value).last().or(scan.last_coding);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                scan.content_length = scan.content_length.and_then(|known| content_length(value, known));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in list(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        scan.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        scan.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        scan.upgrade = true;
                    } else if !is_hop_by_hop(token, std::iter::empty()) {
                        scan.names_fields = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                scan.upgrade = true;
            } else if name.eq_ignore_ascii_case(b"expect") {
                scan.expect = true;
            } else if name.eq_ignore_ascii_case(b"te") {
                scan.te_trailers |= list(value).any(|coding| coding.eq_ignore_ascii_case(b"trailers"));
            }
        }
        scan
    }
}

/// One `Content-Length` value (a list of equal lengths is tolerated) checked against the
/// length `known` from earlier fields.
fn content_length(value: &[u8], known: Option<u64>) -> Result<Option<u64>, &'static str> {
    let mut length = known;
    for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let parsed = part
            .iter()
            .try_fold(0u64, |n, &digit| {
                n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
            })
            .ok_or("invalid Content-Length")?;
        if length.is_some_and(|l| l != parsed) {
            return Err("conflicting Content-Length values");
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// Parses a complete head at the start of `buf`: `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, WireError> {
    // Uninitialized slots: zeroing a hundred of them would cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::Malformed("too many headers")),
        Err(_) => return Err(WireError::Malformed("invalid status line or header")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(WireError::Malformed("invalid status code"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let fields = response
        .headers
        .iter()
        .map(|h| (range(h.name.as_bytes()), range(h.value)))
        .collect();
    Ok(Some((
        Head {
            status,
            version,
            fields,
        },
        length,
    )))
}

/// The body's framing, and whether the connection can carry another request after it.
fn framing(method: &Method, status: StatusCode, scan: &Scan) -> Result<(Framing, bool), WireError> {
    if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), true));
    }
    if scan.transfer_encoding {
        // With Content-Length beside it, the message may be an attempt at smuggling:
        // read it by Transfer-Encoding, then close (RFC 9112 §6.3).
        let alone = scan.content_length == Ok(None);
        return Ok(match scan.last_coding {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => (Framing::Chunked, alone),
            _ => (Framing::UntilClose, false),
        });
    }
    Ok(match scan.content_length.map_err(WireError::Malformed)? {
        Some(length) => (Framing::Length(length), true),
        None => (Framing::UntilClose, false),
    })
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What the decoder made of the bytes it was given.
#[derive(Debug)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section that ended a chunked body.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// Nothing more until more bytes arrive.
    NeedMore,
}

/// Takes a response body off the front of a buffer by its framing: pure, no I/O, so the
/// body reader and the fuzz target share it.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// The next step; body bytes are split off `buf`, framing bytes consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(0) => {
                    self.state = State::Done;
                    return Ok(Step::End);
                }
                State::Length(left) | State::Chunked(Chunk::Data(left)) if !buf.is_empty() => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::Chunked(Chunk::DataEnd),
                        _ => State::Chunked(Chunk::Data(left)),
                    };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                State::UntilClose if !buf.is_empty() => return Ok(Step::Data(buf.split().freeze())),
                // httparse would take a line without digits as the last chunk; hyper refuses it.
                State::Chunked(Chunk::Size) if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err(WireError::Malformed("invalid chunk size line"));
                }
                State::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = State::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => {
                        return Ok(Step::NeedMore)
                    }
                    _ => return Err(WireError::Malformed("invalid chunk size line")),
                },
                State::Chunked(Chunk::DataEnd) if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers) => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for field in fields {
                                let name = HeaderName::from_bytes(field.name.as_bytes());
                                let value = HeaderValue::from_bytes(field.value);
                                if let (Ok(name), Ok(value)) = (name, value) {
                                    trailers.append(name, value);
                                }
                            }
                            buf.advance(used);
                            self.state = State::Done;
                            return Ok(if trailers.is_empty() {
                                Step::End
                            } else {
                                Step::Trailers(trailers)
                            });
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(Step::NeedMore),
                        _ => return Err(WireError::Malformed("invalid trailer section")),
                    }
                }
                _ => return Ok(Step::NeedMore),
            }
        }
    }

    /// The peer closed the connection: the end of a close-delimited body, an error for
    /// any other.
    pub fn at_close(&mut self) -> Result<(), WireError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::UntilClose | State::Done | State::Length(0) => Ok(()),
            _ => Err(WireError::Closed { partial: true }),
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }
}

/// Decodes one whole response held in `bytes`, fed to the decoder `piece` bytes at a
/// time as if read from a socket that then closed: status and body, or the error. For the
/// fuzz target and tests.
#[doc(hidden)]
pub fn decode_all(bytes: &[u8], method: &Method, piece: usize) -> Result<(StatusCode, Vec<u8>), WireError> {
    let mut input = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let (head, length) = loop {
        if let Some(parsed) = parse_head(&buf)? {
            break parsed;
        }
        match input.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => {
                return Err(WireError::Closed {
                    partial: !buf.is_empty(),
                })
            }
        }
    };
    let head_bytes = buf.split_to(length).freeze();
    let scan = Scan::of(head.fields(&head_bytes));
    let (framing, _) = framing(method, head.status, &scan)?;
    head.header_map(&head_bytes, &scan)?;
    let mut decoder = Decoder::new(framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::Trailers(_) | Step::End => return Ok((head.status, body)),
            Step::NeedMore => match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => {
                    decoder.at_close()?;
                    return Ok((head.status, body));
                }
            },
        }
    }
}

/// A response body read from the upstream connection by whoever polls it; when it ends
/// cleanly the connection goes back to the pool.
pub struct WireBody {
    connection: Option<Connection>,
    lease: Option<Lease>,
    reusable: bool,
    decoder: Decoder,
    /// Body bytes already taken off the connection's buffer, handed out first.
    buffered: Option<Bytes>,
}

/// Shows where the body is, never its bytes: a response may carry a token.
impl std::fmt::Debug for WireBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireBody")
            .field("connection", &self.connection)
            .field("decoder", &self.decoder)
            .field("buffered", &self.buffered.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl WireBody {
    fn new(connection: Connection, lease: Lease, framing: Framing, reusable: bool) -> Self {
        Self {
            connection: Some(connection),
            lease: Some(lease),
            reusable,
            decoder: Decoder::new(framing),
            buffered: None,
        }
    }

    /// A body of known length that has already arrived in full is taken now and the
    /// connection given back at once, before the response even reaches the client.
    fn take_buffered(&mut self) {
        let Some(connection) = &mut self.connection else {
            return;
        };
        let complete = self
            .decoder
            .remaining()
            .is_some_and(|left| left <= connection.buf.len() as u64);
        if complete {
            if let Ok(Step::Data(data)) = self.decoder.decode(&mut connection.buf) {
                self.buffered = Some(data);
            }
            self.finish();
        }
    }

    /// The body is complete: the connection is reused if nothing odd happened.
    fn finish(&mut self) {
        self.decoder.state = State::Done;
        if let (Some(connection), Some(lease)) = (self.connection.take(), self.lease.take()) {
            if self.reusable && connection.buf.is_empty() {
                lease.give_back(connection);
            }
        }
    }

    fn fail(&mut self, error: WireError) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.decoder.state = State::Done;
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = &mut *self;
        if let Some(data) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut connection.buf) {
                Ok(Step::Data(data)) => {
                    if this.decoder.is_done() {
                        // hyper stops polling once the body says it has ended.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(error) => return this.fail(error),
            }
            match ready!(connection.poll_read_more(cx)) {
                Ok(0) => match this.decoder.at_close() {
                    // A close-delimited body: the connection ends with it.
                    Ok(()) => {
                        this.connection = None;
                        return Poll::Ready(None);
                    }
                    Err(error) => return this.fail(error),
                },
                Ok(_) => {}
                Err(error) => return this.fail(error.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.buffered.as_ref().map_or(0, |b| b.len() as u64);
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left + buffered),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::ProxyFields;

    fn head(text: &str) -> (Head, usize) {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    fn scan<'a>(pairs: &'a [(&str, &str)]) -> Scan<'a> {
        Scan::of(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn heads_parse_only_when_complete() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n")
            .unwrap()
            .is_none());
        let (parsed, length) = head("HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\nrest");
        assert_eq!(parsed.status, StatusCode::NO_CONTENT);
        assert_eq!(length, "HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n".len());
        assert_eq!(parsed.fields.len(), 1);
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        let ok = StatusCode::OK;
        assert_eq!(
            framing(&get, ok, &scan(&[("content-length", "5")])).unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing(&get, ok, &scan(&[("content-length", "5, 5")])).unwrap(),
            (Framing::Length(5), true)
        );
        assert!(framing(
            &get,
            ok,
            &scan(&[("content-length", "5"), ("content-length", "6")])
        )
        .is_err());
        assert!(framing(&get, ok, &scan(&[("content-length", "+5")])).is_err());
        assert_eq!(
            framing(&get, ok, &scan(&[("transfer-encoding", "gzip, chunked")])).unwrap(),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing(
                &get,
                ok,
                &scan(&[("transfer-encoding", "chunked"), ("content-length", "3")])
            )
            .unwrap(),
            (Framing::Chunked, false),
            "CL beside TE: read by TE, then close"
        );
        assert_eq!(
            framing(&get, ok, &scan(&[("transfer-encoding", "gzip")])).unwrap(),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing(&get, ok, &scan(&[])).unwrap(),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing(&Method::HEAD, ok, &scan(&[("content-length", "5")])).unwrap(),
            (Framing::Length(0), true)
        );
        assert_eq!(
            framing(&get, StatusCode::NOT_MODIFIED, &scan(&[])).unwrap(),
            (Framing::Length(0), true)
        );
    }

    #[test]
    fn bodies_decode_by_their_framing_whatever_the_read_sizes() {
        let get = Method::GET;
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n";
        let length = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhello!";
        let close = b"HTTP/1.1 200 OK\r\n\r\nhello!";
        for piece in [1, 2, 3, 7, 1000] {
            for response in [&chunked[..], &length[..], &close[..]] {
                let (status, body) = decode_all(response, &get, piece).unwrap();
                assert_eq!(
                    (status, body.as_slice()),
                    (StatusCode::OK, &b"hello!"[..]),
                    "piece {piece}"
                );
            }
        }
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello!";
        assert!(matches!(
            decode_all(short, &get, 4),
            Err(WireError::Closed { partial: true })
        ));
        let unfinished = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel";
        assert!(decode_all(unfinished, &get, 4).is_err());
        let no_digits = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\n";
        assert!(matches!(
            decode_all(no_digits, &get, 100),
            Err(WireError::Malformed(_))
        ));
        let bad_end = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nxyz";
        assert!(matches!(
            decode_all(bad_end, &get, 100),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn requests_carry_their_own_length_our_fields_and_our_credential() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("x-y", HeaderValue::from_static("z"));
        headers.insert("expect", HeaderValue::from_static("100-continue"));
        headers.insert("authorization", HeaderValue::from_static("Basic client"));
        headers.insert("host", HeaderValue::from_static("localhost:8080"));
        let upstream = HeaderValue::from_static("upstream:8080");
        let post = Outbound {
            method: Method::POST,
            uri: "http://upstream:8080/a?b=1".parse().unwrap(),
            set: ProxyFields::new(&headers, &upstream, None, "http", None, &[]),
            headers,
            http2: false,
        };
        let bearer = HeaderValue::from_static("Bearer t");
        assert_eq!(
            String::from_utf8(encode_request(&post, &bearer, b"hello")).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nx-y: z\r\nhost: upstream:8080\r\nx-forwarded-proto: http\r\n\
             authorization: Bearer t\r\ncontent-length: 5\r\n\r\nhello"
        );
        let get = Outbound {
            method: Method::GET,
            uri: "http://upstream:8080/".parse().unwrap(),
            set: ProxyFields::new(&HeaderMap::new(), &upstream, None, "http", None, &[]),
            headers: HeaderMap::new(),
            http2: false,
        };
        assert_eq!(
            String::from_utf8(encode_request(&get, &bearer, b"")).unwrap(),
            "GET / HTTP/1.1\r\nhost: upstream:8080\r\nx-forwarded-proto: http\r\nauthorization: Bearer t\r\n\r\n"
        );
    }
}
