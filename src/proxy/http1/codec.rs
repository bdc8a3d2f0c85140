//! HTTP/1.1 client messages as bytes, without I/O: the request head written, the response
//! head parsed (httparse), the response body framed (RFC 9112 §6.3) and decoded. Pure, so
//! the connection code, the unit tests and the fuzz target share it.

use std::mem::MaybeUninit;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::super::forward::{Outbound, MAX_RESPONSE_HEAD};
use super::super::headers::{is_hop_by_hop, list, strip_hop_by_hop};
use super::WireError;

/// Most fields in a response head or a trailer section (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body; `content-length: 0` written when `stated` (the client stated a length).
    Empty {
        /// The prepared fields carried a `Content-Length`.
        stated: bool,
    },
    /// A body of this many bytes.
    Length(u64),
    /// A body of unknown length: chunked, trailers after the last chunk.
    Chunked,
}

/// Writes `request`'s head into `out`: `method target HTTP/1.1` (the target in origin
/// form), `Host`, `Authorization` (the bearer given, never the client's), the prepared
/// fields as they are except framing ones, the `X-Forwarded-*` ones, and the framing of the
/// body.
pub(crate) fn encode_head(
    out: &mut BytesMut,
    request: &Outbound,
    host: &HeaderValue,
    authorization: &HeaderValue,
    framing: RequestFraming,
) {
    let method = request.method.as_str();
    let target = request.uri.path_and_query().map_or("/", |target| target.as_str());
    let size = request
        .headers
        .iter()
        .chain(request.forwarded.fields())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    out.reserve(method.len() + target.len() + host.len() + authorization.len() + size + 80);
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nhost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(b"\r\nauthorization: ");
    out.put_slice(authorization.as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &request.headers {
        if *name == header::HOST
            || *name == header::AUTHORIZATION
            || *name == header::CONTENT_LENGTH
            || *name == header::TRANSFER_ENCODING
        {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in request.forwarded.fields() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty { stated: false } => {}
        RequestFraming::Empty { stated: true } => out.put_slice(b"content-length: 0\r\n"),
        RequestFraming::Length(length) => {
            out.put_slice(b"content-length: ");
            put_decimal(out, length);
            out.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// The line before a chunk of `len` bytes.
pub(crate) fn chunk_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The last chunk and the trailer section that ends a chunked request body.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A parsed response head, as the client is to get it.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// The message's fields. A `101`'s are all there, for the tunnel to pass on; any other
    /// head's are without the connection's own (RFC 9110 §7.6.1), which [`ConnectionFields`]
    /// has read instead, and with one `Content-Length` holding one length, unless
    /// `Transfer-Encoding` frames the body.
    pub(crate) headers: HeaderMap,
    connection: ConnectionFields,
}

/// What the connection's own fields of a response head say about its body and the
/// connection, read as the head is parsed: the fields never enter the head's map, which
/// is cheaper than putting them there and taking them out again.
#[derive(Debug)]
struct ConnectionFields {
    /// `Connection: close`.
    close: bool,
    /// `Connection` names fields of the message (not only `keep-alive` or `close`).
    names_fields: bool,
    /// `Transfer-Encoding` is there; `Some(true)` when its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// `Content-Length` fields: none, one plain length, or several or a list.
    length_fields: LengthFields,
    /// The length they state, or why they state none.
    length: Result<Option<u64>, &'static str>,
}

/// How many `Content-Length` fields a head has, a list counting as several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LengthFields {
    None,
    One,
    Several,
}

impl Default for ConnectionFields {
    fn default() -> Self {
        Self {
            close: false,
            names_fields: false,
            transfer_encoding: None,
            length_fields: LengthFields::None,
            length: Ok(None),
        }
    }
}

impl ConnectionFields {
    /// Reads `name: value` if it is a field of the connection or `Content-Length`; true
    /// when the field stays out of the message's map: the connection's own, or a
    /// `Content-Length` after the first (`parse_head` folds them).
    fn read(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if *name == header::CONTENT_LENGTH {
            let first = self.length_fields == LengthFields::None;
            self.length_fields = if first && !value.contains(&b',') {
                LengthFields::One
            } else {
                LengthFields::Several
            };
            if let Ok(known) = self.length {
                self.length = content_length(value, known);
            }
            !first
        } else if *name == header::CONNECTION {
            for token in list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    self.names_fields = true;
                }
            }
            true
        } else if *name == header::TRANSFER_ENCODING {
            let last = list(value)
                .last()
                .map(|coding| coding.eq_ignore_ascii_case(b"chunked"));
            self.transfer_encoding = last.or(self.transfer_encoding).or(Some(false));
            true
        } else {
            is_hop_by_hop(name)
        }
    }
}

/// Parses a complete response head at the start of `buf`, taking it off: `None` while it
/// is incomplete; [`WireError::HeadTooLarge`] once over [`MAX_RESPONSE_HEAD`] without
/// an end. The field values share one copy of the head.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, WireError> {
    // Uninitialized slots: zeroing a hundred of them would cost more than the parse.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if length > MAX_RESPONSE_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Malformed("more than 100 header fields"))
        }
        Err(_) => return Err(WireError::Malformed("invalid status line or header field")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(WireError::Malformed("invalid status code"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let whole = status == StatusCode::SWITCHING_PROTOCOLS;
    // One copy of the head for every value to share; the read buffer stays ours.
    let head = Bytes::copy_from_slice(&buf[..length]);
    let base = buf.as_ptr() as usize;
    let value_of = |field: &httparse::Header<'_>| {
        let start = field.value.as_ptr() as usize - base;
        HeaderValue::from_maybe_shared(head.slice(start..start + field.value.len()))
            .map_err(|_| WireError::Malformed("invalid header value"))
    };
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    let mut connection = ConnectionFields::default();
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| WireError::Malformed("invalid header name"))?;
        let value = value_of(field)?;
        if !connection.read(&name, field.value) || whole {
            headers.append(name, value);
        }
    }
    if !whole {
        match (
            &connection.transfer_encoding,
            connection.length_fields,
            connection.length,
        ) {
            (None, LengthFields::None | LengthFields::One, Ok(_)) => {}
            // A list, or several fields, that agree: one value of it.
            (None, LengthFields::Several, Ok(Some(length))) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            // Read by Transfer-Encoding, a Content-Length beside it would make hyper cut
            // the body for the client (RFC 9112 §6.3); one that is not a length, none.
            _ => {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
        if connection.names_fields {
            // Rare: the fields `Connection` names go as a request's do, by the one function
            // that removes them, given the `Connection` fields back.
            for field in response.headers.iter() {
                if field.name.eq_ignore_ascii_case("connection") {
                    headers.append(header::CONNECTION, value_of(field)?);
                }
            }
            strip_hop_by_hop(&mut headers);
        }
    }
    buf.advance(length);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        connection,
    }))
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The body's framing (RFC 9112 §6.3), and whether the connection can carry another
/// request after it.
pub(crate) fn framing(method: &Method, head: &ResponseHead) -> Result<(Framing, bool), WireError> {
    let connection = &head.connection;
    let keep_alive = head.version == Version::HTTP_11 && !connection.close;
    if *method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if let Some(chunked) = connection.transfer_encoding {
        // With Content-Length beside it, the message may be an attempt at smuggling:
        // read it by Transfer-Encoding, then close (RFC 9112 §6.3).
        let alone = connection.length_fields == LengthFields::None;
        return Ok(if chunked {
            (Framing::Chunked, alone && keep_alive)
        } else {
            (Framing::UntilClose, false)
        });
    }
    Ok(match connection.length.map_err(WireError::Malformed)? {
        Some(length) => (Framing::Length(length), keep_alive),
        None => (Framing::UntilClose, false),
    })
}

/// One `Content-Length` value (a list of equal lengths is accepted) checked against the
/// length `known` from earlier fields.
fn content_length(value: &[u8], known: Option<u64>) -> Result<Option<u64>, &'static str> {
    const INVALID: &str = "invalid Content-Length";
    let mut length = known;
    for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(INVALID);
        }
        let parsed = part
            .iter()
            .try_fold(0u64, |n, &digit| {
                n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
            })
            .ok_or(INVALID)?;
        if length.is_some_and(|l| l != parsed) {
            return Err("differing Content-Length values");
        }
        length = Some(parsed);
    }
    Ok(length)
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
pub(crate) enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section that ended a chunked body.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// Nothing more until more bytes arrive.
    NeedMore,
}

/// Body bytes up to this size are copied out of the read buffer, which then stays the
/// connection's own; larger ones take its memory with them.
const COPY_BELOW: usize = 4096;

/// Takes a response body off the front of a buffer by its framing.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// The next step; body bytes are split off `buf`, framing bytes consumed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(left) | State::Chunked(Chunk::Data(left)) if !buf.is_empty() => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::Chunked(Chunk::DataEnd),
                        _ => State::Chunked(Chunk::Data(left)),
                    };
                    return Ok(Step::Data(take_bytes(buf, take)));
                }
                State::UntilClose if !buf.is_empty() => {
                    let all = buf.len();
                    return Ok(Step::Data(take_bytes(buf, all)));
                }
                // httparse would take a line without digits as the last chunk; hyper refuses it.
                State::Chunked(Chunk::Size) if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err(WireError::Malformed("invalid chunk size line"));
                }
                State::Chunked(Chunk::Size) if !buf.is_empty() => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) if used <= MAX_CHUNK_LINE => {
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
                State::Chunked(Chunk::Trailers) if !buf.is_empty() => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((used, fields))) if used <= MAX_RESPONSE_HEAD => {
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
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => {
                            return Ok(Step::NeedMore)
                        }
                        _ => return Err(WireError::Malformed("invalid trailer section")),
                    }
                }
                _ => return Ok(Step::NeedMore),
            }
        }
    }

    /// The peer closed the connection: the end of a close-delimited body, an error for
    /// any other unfinished one.
    pub(crate) fn at_close(&mut self) -> Result<(), WireError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::UntilClose | State::Done => Ok(()),
            _ => Err(WireError::Truncated),
        }
    }

    /// Whether the body is complete.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Body bytes still to come, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }
}

fn take_bytes(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_BELOW {
        let bytes = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        bytes
    } else {
        buf.split_to(n).freeze()
    }
}

/// A whole response as [`decode_all`] read it.
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub status: StatusCode,
    /// The fields the client would get.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

/// Decodes one whole response held in `bytes` to a request with `method`, fed `piece`
/// bytes at a time as if read from a socket that then closed: the final head's status and
/// fields, body and trailers, or the error. For the fuzz target and tests.
#[doc(hidden)]
pub fn decode_all(bytes: &[u8], method: &Method, piece: usize) -> Result<Decoded, WireError> {
    let mut input = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let head = loop {
        match parse_head(&mut buf)? {
            Some(head) if head.status.is_informational() => {}
            Some(head) => break head,
            None => match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if buf.is_empty() => return Err(WireError::Closed),
                None => return Err(WireError::Truncated),
            },
        }
    };
    let (framing, _) = framing(method, &head)?;
    let mut decoder = Decoder::new(framing);
    let mut decoded = Decoded {
        status: head.status,
        headers: head.headers,
        body: Vec::new(),
        trailers: None,
    };
    loop {
        match decoder.decode(&mut buf)? {
            Step::Data(data) => decoded.body.extend_from_slice(&data),
            Step::Trailers(trailers) => {
                decoded.trailers = Some(trailers);
                return Ok(decoded);
            }
            Step::End => return Ok(decoded),
            Step::NeedMore => match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => {
                    decoder.at_close()?;
                    return Ok(decoded);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHead {
        parse_head(&mut BytesMut::from(text)).unwrap().unwrap()
    }

    fn framed(method: &Method, text: &str) -> Result<(Framing, bool), WireError> {
        framing(method, &head(text))
    }

    #[test]
    fn heads_parse_only_when_complete_and_within_limits() {
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
        assert!(parse_head(&mut partial).unwrap().is_none());
        assert_eq!(partial.len(), 36, "nothing taken off an incomplete head");
        let mut buf = BytesMut::from("HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\nrest");
        let parsed = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(parsed.status, StatusCode::NO_CONTENT);
        assert_eq!(parsed.headers["x-a"], "1");
        assert_eq!(&buf[..], b"rest");
        for bad in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 2OO OK\r\n\r\n",
        ] {
            assert!(matches!(
                parse_head(&mut BytesMut::from(bad)),
                Err(WireError::Malformed(_))
            ));
        }
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(matches!(
            parse_head(&mut BytesMut::from(
                format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_str()
            )),
            Err(WireError::Malformed(_))
        ));
        let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(matches!(
            parse_head(&mut BytesMut::from(big.as_str())),
            Err(WireError::HeadTooLarge)
        ));
        let complete = format!("{big}\r\n");
        assert!(matches!(
            parse_head(&mut BytesMut::from(complete.as_str())),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn heads_come_without_the_connections_fields() {
        let names = |head: &ResponseHead| -> Vec<String> {
            let mut names: Vec<String> = head
                .headers
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
                .collect();
            names.sort_unstable();
            names
        };
        let kept = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\n\
             x-a: 2\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: close\r\ntrailer: x-t\r\n\
             content-length: 5\r\n\r\n",
        );
        assert_eq!(names(&kept), ["content-length: 5", "trailer: x-t", "x-a: 2"]);
        let folded = head("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(names(&folded), ["content-length: 5", "x-a: 1"]);
        let chunked = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(names(&chunked), Vec::<String>::new(), "read by Transfer-Encoding");
        let differing = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n");
        assert_eq!(names(&differing), Vec::<String>::new());
        let named_first = head("HTTP/1.1 200 OK\r\nx-hop: 1\r\nconnection: x-hop\r\nx-a: 1\r\n\r\n");
        assert_eq!(names(&named_first), ["x-a: 1"]);
        let switching =
            head("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n");
        assert_eq!(
            names(&switching),
            ["connection: upgrade", "upgrade: websocket"],
            "for the tunnel"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        let ok = "HTTP/1.1 200 OK\r\n";
        let with = |fields: &str| format!("{ok}{fields}\r\n");
        assert_eq!(
            framed(&get, &with("content-length: 5\r\n")).unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed(&get, &with("content-length: 5, 5\r\ncontent-length: 5\r\n")).unwrap(),
            (Framing::Length(5), true)
        );
        for bad in [
            "content-length: 5\r\ncontent-length: 6\r\n",
            "content-length: 5, 6\r\n",
            "content-length: +5\r\n",
            "content-length: 99999999999999999999999\r\n",
        ] {
            assert!(framed(&get, &with(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            framed(&get, &with("transfer-encoding: gzip, chunked\r\n")).unwrap(),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framed(&get, &with("transfer-encoding: chunked\r\ncontent-length: 3\r\n")).unwrap(),
            (Framing::Chunked, false),
            "CL beside TE: read by TE, then close"
        );
        assert_eq!(
            framed(&get, &with("transfer-encoding: gzip\r\n")).unwrap(),
            (Framing::UntilClose, false)
        );
        assert_eq!(framed(&get, &with("")).unwrap(), (Framing::UntilClose, false));
        assert_eq!(
            framed(&get, &with("content-length: 2\r\nconnection: close\r\n")).unwrap(),
            (Framing::Length(2), false)
        );
        assert_eq!(
            framed(&get, "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n").unwrap(),
            (Framing::Length(2), false)
        );
        assert_eq!(
            framed(&Method::HEAD, &with("content-length: 5\r\n")).unwrap(),
            (Framing::Length(0), true)
        );
        for status in ["204 No Content", "304 Not Modified"] {
            assert_eq!(
                framed(&get, &format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n")).unwrap(),
                (Framing::Length(0), true)
            );
        }
    }

    #[test]
    fn bodies_decode_by_their_framing_whatever_the_read_sizes() {
        let get = Method::GET;
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n";
        let length = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhello!";
        let close = b"HTTP/1.1 200 OK\r\n\r\nhello!";
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nhello!";
        for piece in [1, 2, 3, 7, 1000] {
            for response in [&chunked[..], &length[..], &close[..], &interim[..]] {
                let decoded = decode_all(response, &get, piece).unwrap();
                assert_eq!(
                    (decoded.status, decoded.body.as_slice()),
                    (StatusCode::OK, &b"hello!"[..]),
                    "piece {piece}"
                );
            }
            let trailers = decode_all(chunked, &get, piece).unwrap().trailers;
            assert_eq!(trailers.unwrap()["x-t"], "1");
        }
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello!";
        assert!(matches!(decode_all(short, &get, 4), Err(WireError::Truncated)));
        let unfinished = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel";
        assert!(matches!(
            decode_all(unfinished, &get, 4),
            Err(WireError::Truncated)
        ));
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
        let long_line = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;{}",
            "x".repeat(MAX_CHUNK_LINE)
        );
        for piece in [100, 1 << 20] {
            assert!(matches!(
                decode_all(long_line.as_bytes(), &get, piece),
                Err(WireError::Malformed(_))
            ));
            let whole_line = format!("{long_line}\r\nx\r\n0\r\n\r\n");
            assert!(matches!(
                decode_all(whole_line.as_bytes(), &get, piece),
                Err(WireError::Malformed(_))
            ));
        }
        assert!(matches!(decode_all(b"", &get, 1), Err(WireError::Closed)));
        assert!(matches!(
            decode_all(b"HTTP/1.1 200", &get, 1),
            Err(WireError::Truncated)
        ));
    }

    #[test]
    fn request_heads_carry_host_the_bearer_the_prepared_fields_and_their_own_framing() {
        use super::super::super::headers::{Carried, ProxyFields};
        let outbound = |method: &Method| {
            let mut headers = HeaderMap::new();
            headers.insert("content-length", HeaderValue::from_static("999"));
            headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
            headers.insert("host", HeaderValue::from_static("client"));
            headers.insert("x-y", HeaderValue::from_static("z"));
            headers.insert("authorization", HeaderValue::from_static("Bearer the-client-s"));
            let peer = HeaderValue::from_static("10.0.0.2");
            let carried = Carried::by(&headers);
            let forwarded = ProxyFields::new(
                &headers,
                carried,
                Some(&peer),
                "http",
                None,
                &[],
                crate::trace::Propagation::AsReceived,
            )
            .apply(&mut headers);
            Outbound {
                method: method.clone(),
                uri: "http://upstream:8080/a?b=1".parse().unwrap(),
                headers,
                forwarded,
                stated_length: carried.content_length,
                upgrade: false,
            }
        };
        let host = HeaderValue::from_static("upstream:8080");
        let bearer = HeaderValue::from_static("Bearer t");
        let encode = |method: &Method, framing| {
            let mut out = BytesMut::new();
            encode_head(&mut out, &outbound(method), &host, &bearer, framing);
            String::from_utf8(out.to_vec()).unwrap()
        };
        let fields = "host: upstream:8080\r\nauthorization: Bearer t\r\nx-y: z\r\n\
                      x-forwarded-for: 10.0.0.2\r\nx-forwarded-proto: http\r\n";
        assert_eq!(
            encode(&Method::POST, RequestFraming::Length(5)),
            format!("POST /a?b=1 HTTP/1.1\r\n{fields}content-length: 5\r\n\r\n")
        );
        assert_eq!(
            encode(&Method::POST, RequestFraming::Chunked),
            format!("POST /a?b=1 HTTP/1.1\r\n{fields}transfer-encoding: chunked\r\n\r\n")
        );
        assert_eq!(
            encode(&Method::GET, RequestFraming::Empty { stated: false }),
            format!("GET /a?b=1 HTTP/1.1\r\n{fields}\r\n")
        );
        assert_eq!(
            encode(&Method::POST, RequestFraming::Empty { stated: true }),
            format!("POST /a?b=1 HTTP/1.1\r\n{fields}content-length: 0\r\n\r\n")
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("1"));
        assert_eq!(&last_chunk(Some(&trailers))[..], b"0\r\nx-sum: 1\r\n\r\n");
        assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
        assert_eq!(&chunk_line(255)[..], b"ff\r\n");
    }
}
