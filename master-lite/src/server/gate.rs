//! Request framing between the connection loop and hyper: the loop reads each request head
//! itself ([`parse`]), so that a long poll can wait outside hyper, then lets hyper serve exactly
//! that one request through a [`Gate`] and takes the connection back once its response is out
//! ([`Served`]).
//!
//! The loop and hyper must agree on where a request ends, or the bytes of one request would be
//! read as another. So the loop frames only what is unambiguous: a head `httparse` (the parser
//! hyper itself uses, with the same settings) reads completely, with no `Transfer-Encoding`
//! and at most one `Content-Length` made of digits. Anything else goes to hyper with the rest
//! of the connection ([`Parsed::Hyper`]), framed by hyper alone, as before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Headers a request head may have (hyper's own default).
pub(crate) const MAX_HEADERS: usize = 100;

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An incomplete head: read more.
    Partial,
    /// A head the loop can frame.
    Head(Head),
    /// Framing left to hyper (a chunked or doubtful body, a head hyper will refuse): the
    /// connection is hyper's from here on.
    Hyper,
}

/// One request head, framed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes of the request, head and body.
    pub total: u64,
    /// The request target of a `GET` without a body (the only kind that may wait outside
    /// hyper), else `None`.
    pub get: Option<String>,
}

/// Frame the request at the start of `buf` (see the module doc).
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Parsed::Hyper,
    };
    let mut body: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Hyper;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = digits(h.value) else {
                return Parsed::Hyper;
            };
            if body.is_some_and(|b| b != n) {
                return Parsed::Hyper;
            }
            body = Some(n);
        }
    }
    let body = body.unwrap_or(0);
    let get = (req.method == Some("GET") && body == 0)
        .then(|| req.path.map(str::to_owned))
        .flatten();
    match (len as u64).checked_add(body) {
        Some(total) => Parsed::Head(Head { total, get }),
        None => Parsed::Hyper,
    }
}

/// Whether bytes read from `from` on may end a request head: they complete a blank line
/// (`\r\n\r\n`, or the bare `\n\n` httparse also takes).
pub(crate) fn may_end(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(3).min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// A `Content-Length` value: 1 to 19 ASCII digits, nothing else (hyper reads more forms, such
/// as `5, 5`; those go to hyper).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether the response of the request hyper serves through a [`Gate`] is fully written.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// hyper dropped the response body: it has the whole response in its write buffer.
    body_done: AtomicBool,
    /// A flush reached the socket after that: hyper's buffer is empty, the response is out.
    out: AtomicBool,
}

impl Served {
    /// The response is on the wire.
    pub(crate) fn is_out(&self) -> bool {
        self.out.load(Ordering::Acquire)
    }

    /// hyper is done with the response body.
    pub(crate) fn body_done(&self) {
        self.body_done.store(true, Ordering::Release);
    }
}

/// The connection as hyper sees it: first the bytes the loop already read, then the socket;
/// at most `allow` bytes in all (`u64::MAX`: the connection is hyper's). Past that, reads stay
/// pending (not EOF: hyper would take that for a client gone), so hyper serves the one request
/// and waits; the loop then takes the connection back.
pub(crate) struct Gate<I> {
    pub(crate) inner: I,
    /// Read by the loop, not yet given to hyper.
    pub(crate) pre: Bytes,
    /// Bytes hyper may still read.
    pub(crate) allow: u64,
    served: Arc<Served>,
}

impl<I> Gate<I> {
    pub(crate) fn new(inner: I, pre: Bytes, allow: u64, served: Arc<Served>) -> Self {
        Self {
            inner,
            pre,
            allow,
            served,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Gate<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.allow == 0 {
            // The loop takes over from here; nothing will wake this read.
            return Poll::Pending;
        }
        let room = usize::try_from(this.allow)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        if !this.pre.is_empty() {
            let n = room.min(this.pre.len());
            buf.put_slice(&this.pre.split_to(n));
            this.allow -= n as u64;
            return Poll::Ready(Ok(()));
        }
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
        let res = Pin::new(&mut this.inner).poll_read(cx, &mut part);
        let n = part.filled().len();
        if let Poll::Ready(Ok(())) = res {
            buf.advance(n);
            this.allow -= n as u64;
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Gate<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes its socket only once its write buffer is empty: a flush after the body
        // was dropped means the whole response went out.
        let done = self.served.body_done.load(Ordering::Acquire);
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        if done && matches!(res, Poll::Ready(Ok(()))) {
            self.served.out.store(true, Ordering::Release);
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that tells [`Served`] when hyper is done with it.
pub(crate) struct Tracked<B> {
    inner: B,
    served: Arc<Served>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, served: Arc<Served>) -> Self {
        Self { inner, served }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.served.body_done();
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn head(total: u64, get: Option<&str>) -> Parsed {
        Parsed::Head(Head {
            total,
            get: get.map(str::to_owned),
        })
    }

    #[test]
    fn frames_what_is_unambiguous_and_leaves_the_rest_to_hyper() {
        let poll = b"GET /v1/computers/c1/desired?wait=30&etag=7 HTTP/1.1\r\nHost: m\r\n\r\n";
        assert_eq!(
            parse(poll),
            head(
                poll.len() as u64,
                Some("/v1/computers/c1/desired?wait=30&etag=7")
            )
        );
        // Bytes after the head (a body, a pipelined request) are not part of it.
        let mut two = poll.to_vec();
        two.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&two), parse(poll));
        let post = b"POST /v1/x HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(parse(post), head(post.len() as u64 + 12, None));
        assert_eq!(parse(&poll[..poll.len() - 1]), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
        for hyper in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01 not http",
        ] {
            assert_eq!(
                parse(hyper),
                Parsed::Hyper,
                "{:?}",
                String::from_utf8_lossy(hyper)
            );
        }
        // A GET with a body may not wait.
        let get_body = b"GET /a HTTP/1.1\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(parse(get_body), head(get_body.len() as u64 + 1, None));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many),
            Parsed::Hyper,
            "too many headers: hyper answers"
        );
    }

    #[test]
    fn only_a_blank_line_may_end_a_head() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // Byte by byte: only the last byte completes the blank line.
        let ends: Vec<usize> = (1..=head.len())
            .filter(|&n| may_end(&head[..n], n - 1))
            .collect();
        assert_eq!(ends, vec![head.len()]);
        assert!(may_end(head, 0), "all at once");
        assert!(may_end(b"GET / HTTP/1.1\nHost: x\n\n", 20));
        assert!(!may_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(!may_end(b"", 0));
    }

    #[tokio::test]
    async fn a_gate_gives_the_buffered_bytes_then_the_socket_up_to_its_allowance() {
        let (mut client, server) = tokio::io::duplex(64);
        let served = Arc::new(Served::default());
        let mut gate = Gate::new(server, Bytes::from_static(b"abc"), 5, served.clone());
        client.write_all(b"defgh").await.unwrap();
        let mut got = vec![0; 16];
        let n = gate.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"abc");
        let n = gate.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"de", "no further than the allowance");
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), gate.read(&mut got));
        assert!(more.await.is_err(), "past the allowance a read waits");
        assert_eq!(gate.allow, 0);
        let mut rest = [0; 3];
        gate.inner.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"fgh", "the loop reads the rest");
        // Only a flush after the body is done marks the response out.
        gate.flush().await.unwrap();
        assert!(!served.is_out());
        drop(Tracked::new(
            http_body_util::Empty::<Bytes>::new(),
            served.clone(),
        ));
        gate.flush().await.unwrap();
        assert!(served.is_out());
    }
}
