//! Stream connections, written directly to the socket instead of through
//! hyper.
//!
//! hyper holds, for as long as a connection lives, its read buffer, its
//! buffer for response heads, its connection state and its dispatcher. For
//! an API call that lives a few milliseconds this is nothing; for a stream,
//! which lives for hours and is written a frame now and then, it was the
//! largest part of what an idle stream cost (BENCHMARKS.md, "the direct
//! stream path").
//!
//! So the accept loop reads a connection's first request head itself
//! ([`first_request`]). A `GET /v1/stream` is answered here
//! ([`serve_stream`]): the request goes through the same router as every
//! other (authentication, limits, CORS, the request log, metrics), and its
//! response is written straight to the socket, the head once, then each
//! frame the body yields, with nothing kept between frames. The connection
//! closes when the stream ends (`Connection: close`). Any other request,
//! and a stream opened later on a kept-alive connection, is served by
//! hyper ([`Replayed`] hands it the bytes already read).
//!
//! What a client sees is what hyper sent: the same head (plus `Date`,
//! which hyper also adds), chunked framing for HTTP/1.1, the body as it
//! comes for HTTP/1.0, and the connection closed at once when the client
//! closes its side.

use std::{
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, Method, Request, Response, Version, header},
};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tower::ServiceExt;

/// The path answered here.
const STREAM_PATH: &str = "/v1/stream";

/// The longest head read here; a longer one is left to hyper, which has its
/// own limits.
const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed here, at most; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// Frames gathered into one write when several are ready at once (a
/// replay's pages): fewer system calls, as hyper's write queue did.
const MAX_FRAMES_PER_WRITE: usize = 64;
const MAX_BYTES_PER_WRITE: usize = 256 * 1024;

/// How long the response head waits for the body's first frames before it
/// is written alone (see [`pump`]).
const HEAD_WAIT: Duration = Duration::from_millis(500);

/// What a connection's first request is.
pub(super) enum FirstRequest {
    /// `GET /v1/stream`, parsed, with nothing after its head.
    Stream(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, starting with these bytes.
    Other(Vec<u8>),
    /// The client closed, failed or timed out before its head was complete.
    Gone,
}

/// Reads the first request head (within `timeout`, measured as hyper's
/// header timeout is) and tells which path serves it.
pub(super) async fn first_request(socket: &mut TcpStream, timeout: Duration) -> FirstRequest {
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout(timeout, async {
        loop {
            let searched_up_to = head.len().saturating_sub(3);
            match socket.read_buf(&mut head).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if head[searched_up_to..].windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_HEAD {
                return true;
            }
        }
    })
    .await;
    match complete {
        Ok(true) => match stream_request(&head) {
            Some(request) => FirstRequest::Stream(Box::new(request)),
            None => FirstRequest::Other(head),
        },
        Ok(false) | Err(_) => FirstRequest::Gone,
    }
}

/// The request, if `head` is exactly one complete head of a plain
/// `GET /v1/stream` (with or without a query) over HTTP/1.x. Everything
/// else, including what hyper would refuse, is left to hyper.
fn stream_request(head: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    let is_stream = path.strip_prefix(STREAM_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('?'));
    if length != head.len() || parsed.method != Some("GET") || !is_stream {
        return None;
    }
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let mut request = Request::builder().method(Method::GET).uri(path).version(version).body(Body::empty()).ok()?;
    let map = request.headers_mut();
    map.reserve(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        // A GET with a body is unusual enough to leave to hyper, which
        // knows how to read past it.
        if name == header::CONTENT_LENGTH && field.value != b"0" || name == header::TRANSFER_ENCODING {
            return None;
        }
        map.append(name, HeaderValue::from_bytes(field.value).ok()?);
    }
    Some(request)
}

/// Answers a stream request through `router` and writes the response to
/// `socket` until the body ends or the client goes away.
pub(super) async fn serve_stream(mut socket: TcpStream, request: Request<Body>, router: Router) {
    let chunked = request.version() == Version::HTTP_11;
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let length = body.size_hint().exact();
    let head = encode_head(&Response::from_parts(parts, ()), length, chunked);
    let finished = match length {
        // A refusal (401, 429, 503): a small body, whole, in one write with
        // its head.
        Some(_) => match body.collect().await {
            Ok(collected) => write_frames(&mut socket, &head, &[collected.to_bytes()], false, false).await.is_ok(),
            Err(_) => false,
        },
        None => pump(&mut socket, &mut body, head, chunked).await,
    };
    if finished {
        let _ = socket.shutdown().await;
    }
}

/// The status line and headers, as hyper would write them for this
/// response, with the framing of `length` and `Connection: close`.
fn encode_head(response: &Response<()>, length: Option<u64>, chunked: bool) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if matches!(*name, header::CONNECTION | header::CONTENT_LENGTH | header::TRANSFER_ENCODING) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        Some(length) => head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes()),
        None if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if !response.headers().contains_key(header::DATE) {
        head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// What the body and the client have for the writer next.
enum Next {
    /// Frames ready now, and whether the body ended after them.
    Frames(Vec<Bytes>, bool),
    /// The body ended.
    Ended,
    /// The client closed its side, or the connection or the body failed.
    Gone,
}

/// Writes the body's frames as they come. Between frames nothing is held
/// but the body and the socket. True if the body ended (and its end was
/// written), false if the client went away first.
async fn pump(socket: &mut TcpStream, body: &mut Body, head: Vec<u8>, chunked: bool) -> bool {
    // The head leaves in one write with the body's first frames (a stream
    // holds its `retry` line until its starting state is read, see
    // `stream::body`), or alone once `HEAD_WAIT` has passed without any:
    // a client learns that its stream is open within that, however slow
    // the reads.
    let mut head = Some(head);
    loop {
        let ready = poll_fn(|cx| {
            if client_gone(socket, cx) {
                return Poll::Ready(Next::Gone);
            }
            ready_frames(Pin::new(&mut *body), cx)
        });
        let next = if head.is_some() {
            tokio::time::timeout(HEAD_WAIT, ready).await.unwrap_or(Next::Frames(Vec::new(), false))
        } else {
            ready.await
        };
        let (frames, ended) = match next {
            Next::Frames(frames, ended) => (frames, ended),
            Next::Ended => (Vec::new(), true),
            Next::Gone => return false,
        };
        if write_frames(socket, head.take().as_deref().unwrap_or_default(), &frames, chunked, ended).await.is_err() {
            return false;
        }
        if ended {
            return true;
        }
    }
}

/// The frames the body has ready, up to a write's worth; pending only when
/// it has none.
fn ready_frames(mut body: Pin<&mut Body>, cx: &mut Context<'_>) -> Poll<Next> {
    let mut frames = Vec::new();
    let mut bytes = 0;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    bytes += data.len();
                    frames.push(data);
                }
                if frames.len() >= MAX_FRAMES_PER_WRITE || bytes >= MAX_BYTES_PER_WRITE {
                    return Poll::Ready(Next::Frames(frames, false));
                }
            }
            Poll::Ready(None) if frames.is_empty() => return Poll::Ready(Next::Ended),
            Poll::Ready(None) => return Poll::Ready(Next::Frames(frames, true)),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "stream body failed");
                return Poll::Ready(Next::Gone);
            }
            Poll::Pending if frames.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Next::Frames(frames, false)),
        }
    }
}

/// Whether the client has closed its side (or the socket failed). A client
/// has nothing to send on a stream: bytes it sends anyway are read into a
/// small buffer on the stack and dropped, a few per poll.
fn client_gone(socket: &TcpStream, cx: &mut Context<'_>) -> bool {
    let mut discard = [0u8; 256];
    for _ in 0..8 {
        match socket.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => match socket.try_read(&mut discard) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return true,
            },
        }
    }
    false
}

/// Writes `head` (if any), then `frames` as one chunk (HTTP/1.1) or as
/// they are, and the last chunk if a chunked body `ended`, in as few system
/// calls as the socket takes.
async fn write_frames(socket: &mut TcpStream, head: &[u8], frames: &[Bytes], chunked: bool, ended: bool) -> io::Result<()> {
    let total: usize = frames.iter().map(Bytes::len).sum();
    // Only a chunk of HTTP/1.1 has a size line.
    let size_line = if chunked && total > 0 { format!("{total:x}\r\n") } else { String::new() };
    let mut slices = Vec::with_capacity(frames.len() + 4);
    if !head.is_empty() {
        slices.push(IoSlice::new(head));
    }
    if !size_line.is_empty() {
        slices.push(IoSlice::new(size_line.as_bytes()));
    }
    slices.extend(frames.iter().map(|frame| IoSlice::new(frame)));
    if chunked && total > 0 {
        slices.push(IoSlice::new(b"\r\n"));
    }
    if chunked && ended {
        slices.push(IoSlice::new(b"0\r\n\r\n"));
    }
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = socket.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

/// A socket whose first bytes were already read: hyper reads those again,
/// then the socket. The copy is freed once hyper has taken it.
pub(super) struct Replayed {
    read: Vec<u8>,
    taken: usize,
    socket: TcpStream,
}

impl Replayed {
    pub(super) fn new(read: Vec<u8>, socket: TcpStream) -> Self {
        Replayed { read, taken: 0, socket }
    }
}

impl AsyncRead for Replayed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.taken);
            buf.put_slice(&this.read[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.read.len() {
                this.read = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_get_of_the_stream_is_taken() {
        let take = |head: &str| stream_request(head.as_bytes()).is_some();
        assert!(take("GET /v1/stream HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(take("GET /v1/stream?access_token=x&topic=a HTTP/1.0\r\n\r\n"));
        assert!(!take("GET /v1/streams HTTP/1.1\r\n\r\n"), "another path");
        assert!(!take("POST /v1/stream HTTP/1.1\r\n\r\n"), "another method");
        assert!(!take("OPTIONS /v1/stream HTTP/1.1\r\n\r\n"), "a preflight");
        assert!(!take("GET /v1/stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), "a body");
        assert!(!take("GET /v1/stream HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"), "a pipelined request");
        assert!(!take("GET /v1/stream HTTP/1.1\r\nBad Header\r\n\r\n"), "what hyper would refuse");
    }

    #[test]
    fn the_head_keeps_the_responses_headers_and_frames_the_body() {
        let response = Response::builder().status(200).header("content-type", "text/event-stream").header("x-accel-buffering", "no").body(()).unwrap();
        let head = String::from_utf8(encode_head(&response, None, true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("content-type: text/event-stream\r\n"));
        assert!(head.contains("x-accel-buffering: no\r\n"));
        assert!(head.contains("transfer-encoding: chunked\r\n"));
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("connection: close\r\n\r\n"));
        let refused = Response::builder().status(401).body(()).unwrap();
        let head = String::from_utf8(encode_head(&refused, Some(42), true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(head.contains("content-length: 42\r\n") && !head.contains("chunked"));
        let old_client = String::from_utf8(encode_head(&response, None, false)).unwrap();
        assert!(!old_client.contains("chunked") && !old_client.contains("content-length"), "HTTP/1.0: the body ends when the connection closes");
    }
}
