//! The HTTP/1.1 client, driven by the request's own task: no connection task, no dispatch
//! channel. The request future writes the request and reads the response head on the
//! connection it holds, polling both in one future, so an upstream that answers before
//! the body is sent (an early `413` or `401`) is heard instead of blocking the upload;
//! the response body reads on from the same connection and hands it back to its pool
//! ([`Home`]) once it ended cleanly. Generic over the byte stream: plain TCP or TLS.
//!
//! Cancellation: the connection is owned by the future, then by the response body; a
//! dropped future or body drops (closes) it, so a half-used connection never returns to
//! a pool.

pub(crate) mod codec;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use self::codec::{Decoder, Framing, RequestFraming, Step};
use super::forward::{BoxError, OutboundBody};

/// Room made in a connection's read buffer when it runs low.
const READ_BUFFER: usize = 8 * 1024;

/// What went wrong talking HTTP/1.1 to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection closed (EOF or reset) before any byte of a response arrived.
    #[error("the upstream closed the connection before answering")]
    Closed,
    /// The connection closed, or was reset, before any byte of the request was written:
    /// it may go on another connection, whatever its method.
    #[error("the upstream closed the connection before the request was sent")]
    Refused(#[source] io::Error),
    /// Writing the request failed.
    #[error("writing the request failed")]
    Write(#[source] io::Error),
    /// Reading the response failed.
    #[error("reading the response failed")]
    Read(#[source] io::Error),
    /// The connection closed in the middle of a response.
    #[error("the upstream closed the connection before the end of its response")]
    Truncated,
    /// The response is not HTTP/1.1 as RFC 9112 frames it.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The response head is larger than [`super::forward::MAX_RESPONSE_HEAD`].
    #[error(
        "the response head is larger than {} bytes",
        super::forward::MAX_RESPONSE_HEAD
    )]
    HeadTooLarge,
    /// No response head arrived by the deadline.
    #[error("no response head by the deadline")]
    TimedOut,
    /// The request body failed (the client's, or over the size limit).
    #[error("the request body failed")]
    RequestBody(#[source] BoxError),
}

impl WireError {
    /// Whether the upstream dropped the connection before any byte of its answer:
    /// a kept-alive connection it closed as the request came, typically.
    pub(crate) fn closed_before_answer(&self) -> bool {
        matches!(self, Self::Closed | Self::Refused(_))
    }
}

/// Where a connection goes when its response has been read to the end.
pub(crate) trait Home<S>: Send + Sync {
    /// Takes `conn` back for another request.
    fn put_back(&self, conn: Box<Conn<S>>);
}

/// One connection, the bytes read from it but not yet used, and its timer.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    buf: BytesMut,
    /// The deadline of the response head: one per connection, moved for each request
    /// (later each time, which takes tokio no lock), rather than a new one entered in the
    /// runtime's timer wheel and taken out again per request. Made on the first request.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Conn<S> {
    pub(crate) fn new(stream: S) -> Box<Self> {
        Box::new(Self {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
            deadline: None,
        })
    }

    /// The connection's timer, set to `deadline`.
    fn arm(&mut self, deadline: Instant) {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_BUFFER);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// A request that failed, with its body when nothing of it was sent (so it can go on
/// another connection).
pub(crate) struct Failed {
    pub(crate) error: WireError,
    pub(crate) body: Option<OutboundBody>,
}

/// The framing for `body`; `stated`: the prepared fields carry a `Content-Length`.
pub(crate) fn request_framing(body: &OutboundBody, stated: bool) -> RequestFraming {
    if body.is_end_stream() {
        return RequestFraming::Empty { stated };
    }
    match body.size_hint().exact() {
        Some(length) => RequestFraming::Length(length),
        None => RequestFraming::Chunked,
    }
}

/// Sends the request (`head`, from [`codec::encode_head`] with `framing`, then `body`) on
/// `conn` and reads the final response head, [`WireError::TimedOut`] when it is not in by
/// `deadline`. The response body reads on from `conn`, which goes back `home` when the
/// exchange left it reusable. A `101` hands the connection to the caller
/// ([`WireBody::take_upgrade`]) when `upgrade` (the request asked for one).
#[allow(clippy::too_many_arguments, reason = "one exchange's parts, each used once")]
pub(crate) async fn exchange<S>(
    mut conn: Box<Conn<S>>,
    head: Bytes,
    framing: RequestFraming,
    body: OutboundBody,
    method: &Method,
    upgrade: bool,
    home: Arc<dyn Home<S>>,
    deadline: Instant,
) -> Result<Response<WireBody<S>>, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    conn.arm(deadline);
    let mut conn = Some(conn);
    let mut sending = Some(Sending::new(head, framing, body));
    let mut answered = false;
    let head = std::future::poll_fn(|cx| {
        let conn = conn.as_mut().expect("polled after completion");
        let writing = sending.as_mut().expect("polled after completion");
        if !writing.finished() {
            if let Poll::Ready(Err(error)) = writing.poll_send(&mut conn.stream, cx) {
                match error {
                    SendFailure::Body(error) => return Poll::Ready(Err(WireError::RequestBody(error))),
                    SendFailure::Io(error) if writing.written == 0 => {
                        return Poll::Ready(Err(WireError::Refused(error)))
                    }
                    // The upstream may have answered and stopped reading: read on.
                    SendFailure::Io(error) => {
                        tracing::debug!(%error, "writing the request body upstream failed");
                    }
                }
            }
        }
        loop {
            // Most polls find nothing read yet: no parse then.
            if !conn.buf.is_empty() {
                match codec::parse_head(&mut conn.buf)? {
                    Some(head)
                        if head.status.is_informational()
                            && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        continue
                    }
                    Some(head) => return Poll::Ready(Ok(head)),
                    None => {}
                }
            }
            let fresh = conn.buf.is_empty() && !answered;
            let Poll::Ready(read) = conn.poll_read_more(cx) else {
                let timer = conn.deadline.as_mut().expect("armed above");
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(WireError::TimedOut));
                }
                return Poll::Pending;
            };
            match read {
                Ok(0) if fresh => return Poll::Ready(Err(WireError::Closed)),
                Ok(0) => return Poll::Ready(Err(WireError::Truncated)),
                Ok(_) => answered = true,
                Err(error) if fresh && is_reset(&error) => return Poll::Ready(Err(WireError::Closed)),
                Err(error) => return Poll::Ready(Err(WireError::Read(error))),
            }
        }
    })
    .await;
    let mut writing = sending.take().expect("taken once");
    let head = match head {
        Ok(head) => head,
        Err(error) => {
            let body = matches!(error, WireError::Refused(_))
                .then(|| writing.take_unsent())
                .flatten();
            return Err(Failed { error, body });
        }
    };
    let conn = conn.take().expect("taken once");
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(Failed {
                error: WireError::Malformed("101 Switching Protocols to a request that asked for no upgrade"),
                body: None,
            });
        }
        *response.headers_mut() = head.headers;
        return Ok(response.map(|()| WireBody::upgraded(conn)));
    }
    let (framing, reusable) = codec::framing(method, &head).map_err(|error| Failed { error, body: None })?;
    *response.headers_mut() = head.headers;
    // A request body not yet sent in full goes on while the response is read; that
    // connection is not reused.
    let home = (reusable && writing.complete()).then_some(home);
    let upload = (!writing.finished()).then(|| Box::new(writing));
    let mut body = WireBody {
        conn: Some(conn),
        home,
        decoder: Decoder::new(framing),
        upload,
        buffered: None,
        upgraded: false,
    };
    body.take_buffered();
    Ok(response.map(|()| body))
}

fn is_reset(error: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Why sending stopped.
enum SendFailure {
    Body(BoxError),
    Io(io::Error),
}

/// The request on its way out: bytes queued for the socket, and the body they come from.
struct Sending {
    /// Bytes to write, in order; at most three pieces (a chunk's line, data and CRLF).
    queue: [Bytes; 3],
    queued: usize,
    body: Option<OutboundBody>,
    /// A buffered body, kept to go again on another connection should nothing be written.
    replayable: Option<http_body_util::Full<Bytes>>,
    framing: RequestFraming,
    /// Body bytes a `Content-Length` still promises.
    promised: u64,
    /// Bytes written so far.
    written: u64,
    /// The socket has been flushed after the last byte.
    flushed: bool,
    /// Writing failed: the upstream stopped reading.
    broken: bool,
}

impl Sending {
    fn new(head: Bytes, framing: RequestFraming, body: OutboundBody) -> Self {
        let replayable = match (&body, framing) {
            (Either::Left(full), _) => Some(full.clone()),
            (Either::Right(_), RequestFraming::Empty { .. }) => Some(http_body_util::Full::default()),
            (Either::Right(_), _) => None,
        };
        let (body, promised) = match framing {
            RequestFraming::Empty { .. } => (None, 0),
            RequestFraming::Length(length) => (Some(body), length),
            RequestFraming::Chunked => (Some(body), 0),
        };
        let mut sending = Self {
            queue: Default::default(),
            queued: 0,
            body,
            replayable,
            framing,
            promised,
            written: 0,
            flushed: false,
            broken: false,
        };
        sending.push(head);
        // A buffered body goes in the same write as the head.
        if let Some(Either::Left(full)) = &mut sending.body {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(Some(Ok(frame))) = Pin::new(full).poll_frame(&mut cx) {
                if let Ok(data) = frame.into_data() {
                    sending.queue_data(data);
                }
            }
        }
        sending
    }

    /// The body, when nothing of the request was written and it can go again.
    fn take_unsent(&mut self) -> Option<OutboundBody> {
        if self.written > 0 {
            return None;
        }
        match self.replayable.take() {
            Some(full) => Some(Either::Left(full)),
            None => self.body.take().filter(|body| matches!(body, Either::Right(_))),
        }
    }

    /// Nothing more to write: all of it was written, or writing failed.
    fn finished(&self) -> bool {
        self.broken || self.complete()
    }

    /// All of the request was written and flushed.
    fn complete(&self) -> bool {
        !self.broken && self.flushed && self.queued == 0 && self.body.is_none()
    }

    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue[self.queued] = bytes;
            self.queued += 1;
        }
    }

    fn queue_data(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.framing == RequestFraming::Chunked {
            self.push(codec::chunk_line(data.len()));
            self.push(data);
            self.push(Bytes::from_static(b"\r\n"));
        } else {
            self.promised = self.promised.saturating_sub(data.len() as u64);
            self.push(data);
        }
    }

    /// Writes what is queued and what the body yields until the socket or the body makes
    /// it wait; `Ready(Ok)` once all is written and flushed.
    fn poll_send<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailure>> {
        let result = self.drive(stream, cx);
        if let Poll::Ready(Err(SendFailure::Io(_))) = &result {
            self.broken = true;
        }
        result
    }

    fn drive<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailure>> {
        loop {
            while self.queued > 0 {
                let slices: [io::IoSlice<'_>; 3] = [
                    io::IoSlice::new(&self.queue[0]),
                    io::IoSlice::new(&self.queue[1]),
                    io::IoSlice::new(&self.queue[2]),
                ];
                let n = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..self.queued]))
                    .map_err(SendFailure::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendFailure::Io(io::ErrorKind::WriteZero.into())));
                }
                self.written += n as u64;
                self.consume(n);
                self.flushed = false;
            }
            let Some(body) = &mut self.body else {
                if !self.flushed {
                    ready!(Pin::new(&mut *stream).poll_flush(cx)).map_err(SendFailure::Io)?;
                    self.flushed = true;
                }
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // Whatever is written waits for no more of the body.
                    if !self.flushed {
                        ready!(Pin::new(&mut *stream).poll_flush(cx)).map_err(SendFailure::Io)?;
                        self.flushed = true;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if self.framing != RequestFraming::Chunked && data.len() as u64 > self.promised {
                            return Poll::Ready(Err(SendFailure::Body(
                                "the request body is longer than its Content-Length".into(),
                            )));
                        }
                        self.queue_data(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.end(Some(&trailers))?;
                        }
                    }
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(SendFailure::Body(error))),
                Poll::Ready(None) => self.end(None)?,
            }
        }
    }

    /// The body ended (with `trailers`, if any).
    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), SendFailure> {
        self.body = None;
        match self.framing {
            RequestFraming::Chunked => self.push(codec::last_chunk(trailers)),
            _ if self.promised > 0 => {
                return Err(SendFailure::Body(
                    "the request body is shorter than its Content-Length".into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let first = &mut self.queue[0];
            let take = n.min(first.len());
            first.advance(take);
            n -= take;
            if first.is_empty() {
                self.queue.rotate_left(1);
                self.queued -= 1;
            }
        }
    }
}

/// A response body read from its connection by whoever polls it. Read to its end
/// cleanly, it gives the connection back home; dropped before, it closes it.
pub(crate) struct WireBody<S> {
    conn: Option<Box<Conn<S>>>,
    /// Where the connection goes afterwards; `None`: it cannot carry another request.
    home: Option<Arc<dyn Home<S>>>,
    decoder: Decoder,
    /// The rest of a request body the upstream answered before it was sent.
    upload: Option<Box<Sending>>,
    /// Body bytes already taken off the connection, handed out first.
    buffered: Option<Bytes>,
    /// A `101`: the connection is for [`WireBody::take_upgrade`].
    upgraded: bool,
}

/// Shows where the body is, never its bytes: a response may carry a token.
impl<S> std::fmt::Debug for WireBody<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireBody")
            .field("decoder", &self.decoder)
            .field("reusable", &self.home.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WireBody<S> {
    fn upgraded(conn: Box<Conn<S>>) -> Self {
        Self {
            conn: Some(conn),
            home: None,
            decoder: Decoder::new(Framing::Length(0)),
            upload: None,
            buffered: None,
            upgraded: true,
        }
    }

    /// The connection of a `101` response, with the bytes that came after its head.
    pub(crate) fn take_upgrade(&mut self) -> Option<Upgraded<S>> {
        if !self.upgraded {
            return None;
        }
        self.conn.take().map(|conn| Upgraded { conn })
    }

    /// A body of known length that has already arrived in full is taken now and the
    /// connection given back at once, before the response reaches the client.
    fn take_buffered(&mut self) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        let complete = self
            .decoder
            .remaining()
            .is_some_and(|left| left <= conn.buf.len() as u64);
        if complete {
            match self.decoder.decode(&mut conn.buf) {
                Ok(Step::Data(data)) => self.buffered = Some(data),
                Ok(_) => {}
                Err(_) => return,
            }
            self.finish();
        }
    }

    /// The body is complete: the connection goes home if nothing odd happened.
    fn finish(&mut self) {
        self.upload = None;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if conn.buf.is_empty() {
                home.put_back(conn);
            }
        }
    }

    fn fail(&mut self, error: WireError) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.conn = None;
        self.home = None;
        self.upload = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Body for WireBody<S> {
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
        if this.upgraded {
            return Poll::Ready(None);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(upload) = &mut this.upload {
                match upload.poll_send(&mut conn.stream, cx) {
                    Poll::Ready(Ok(())) => this.upload = None,
                    Poll::Ready(Err(SendFailure::Body(error))) => {
                        return this.fail(WireError::RequestBody(error))
                    }
                    // The upstream stopped reading; its answer may still come.
                    Poll::Ready(Err(SendFailure::Io(_))) => this.upload = None,
                    Poll::Pending => {}
                }
            }
            match this.decoder.decode(&mut conn.buf) {
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
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => match this.decoder.at_close() {
                    // A close-delimited body: the connection ends with it.
                    Ok(()) => {
                        this.conn = None;
                        this.upload = None;
                        return Poll::Ready(None);
                    }
                    Err(error) => return this.fail(error),
                },
                Ok(_) => {}
                Err(error) => return this.fail(WireError::Read(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && (self.upgraded || self.decoder.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.buffered.as_ref().map_or(0, |b| b.len() as u64);
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left + buffered),
            None => SizeHint::default(),
        }
    }
}

/// An upgraded connection (after `101`): the bytes that came after the response head,
/// then the stream itself.
pub(crate) struct Upgraded<S> {
    conn: Box<Conn<S>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Upgraded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = &mut self.conn;
        if !conn.buf.is_empty() {
            let n = conn.buf.len().min(out.remaining());
            out.put_slice(&conn.buf[..n]);
            conn.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut conn.stream).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Upgraded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn.stream).poll_shutdown(cx)
    }
}
