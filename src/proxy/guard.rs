//! Slow-client protection. Pingora bounds each downstream read (keep-alive idle timeout) but
//! not the total time a client may take to send one request, so a client trickling one byte a
//! minute would hold a connection forever. [`Guarded`] wraps each accepted connection: the
//! first byte of a request arms a deadline (`limits.client_timeout`), and every read after it
//! fails with `TimedOut` once the deadline passes. The request filter disarms it once the whole
//! request (head and body) is in. Each connection has its own timer, so a slow client never
//! slows another.
//!
//! It also carries the replay queue used by `rebody`: bytes sluice already received and wants
//! pingora to read again (a synthesized request with the rewritten body) are served from
//! [`Guarded::replay`] before the socket is read again.
//!
//! And it closes connections the way nginx does (lingering close). When sluice refuses a
//! request before reading its body (413, 401, 429) the client is usually still uploading; a
//! plain close with unread bytes in the receive buffer makes the kernel answer with a reset, and
//! the client sees `EPIPE`/`ECONNRESET` instead of the refusal (and the official SDKs retry it).
//! So [`Shutdown::shutdown`] first sends FIN after the reply, then reads and discards what the
//! client still sends, for at most `limits.linger_secs` and `limits.linger_max_bytes`, and only
//! then closes. Discarded bytes are never buffered or parsed.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::Stream;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How every accepted connection is guarded.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Each request (head and body) must arrive within this much of its first byte.
    pub client_timeout: Duration,
    /// Lingering close: how long to keep discarding client bytes after the last reply
    /// (zero: close at once).
    pub linger: Duration,
    /// Lingering close: the most bytes discarded before closing anyway.
    pub linger_max_bytes: u64,
}

/// A downstream connection with a per-request read deadline.
#[derive(Debug)]
pub struct Guarded {
    inner: Stream,
    limit: Duration,
    linger: Duration,
    linger_max_bytes: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    disarm: AtomicBool,
    expired: AtomicBool,
    /// A request's first byte arrived and sluice has not seen its parsed head yet.
    in_head: AtomicBool,
    /// The previous response is done: a deadline already running (bytes of a pipelined request
    /// arrived while it was served) restarts now, so serving a long answer does not eat into
    /// the next request's time.
    restart: AtomicBool,
    replay: VecDeque<Bytes>,
    /// Set once the write side is shut: the lingering close in progress.
    lingering: Option<Lingering>,
}

/// A lingering close in progress: until when, and how many more bytes may be discarded.
#[derive(Debug)]
struct Lingering {
    until: Pin<Box<Sleep>>,
    left: u64,
}

impl Guarded {
    /// Wrap `inner` under `policy`.
    pub fn new(inner: Stream, policy: Policy) -> Guarded {
        Guarded {
            inner,
            limit: policy.client_timeout,
            linger: policy.linger,
            linger_max_bytes: policy.linger_max_bytes,
            deadline: None,
            disarm: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            in_head: AtomicBool::new(false),
            restart: AtomicBool::new(false),
            replay: VecDeque::new(),
            lingering: None,
        }
    }

    /// Queue bytes to be read before anything more from the socket.
    pub fn replay(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.replay.push_back(bytes);
        }
    }

    /// The current request has been read in full: stop its deadline. Takes effect at the next
    /// read, which is the only place the deadline is checked.
    pub fn disarm(&self) {
        self.disarm.store(true, Ordering::Release);
    }

    /// The current request's head was parsed: from now on a missed deadline is answered by
    /// sluice itself (408 in its JSON), not here.
    pub fn head_received(&self) {
        self.in_head.store(false, Ordering::Release);
    }

    /// The current response is complete: restart a deadline that a pipelined request already
    /// armed (takes effect at the next read).
    pub fn response_done(&self) {
        self.restart.store(true, Ordering::Release);
    }

    /// Whether a read failed because the deadline passed.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The guard of a type-erased stream, if it is one.
    pub fn of(stream: &Stream) -> Option<&Guarded> {
        stream.as_any().downcast_ref::<Guarded>()
    }

    /// The guard under a downstream session (HTTP/1 only).
    pub fn of_session(session: &pingora_core::protocols::http::ServerSession) -> Option<&Guarded> {
        session.as_http1().and_then(|h| Guarded::of(h.stream()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(front) = this.replay.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                this.replay.pop_front();
            }
            return Poll::Ready(Ok(()));
        }
        if this.disarm.swap(false, Ordering::AcqRel) {
            this.deadline = None;
        }
        if this.restart.swap(false, Ordering::AcqRel) {
            if let Some(d) = this.deadline.as_mut() {
                d.as_mut().reset(tokio::time::Instant::now() + this.limit);
            }
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                this.expired.store(true, Ordering::Release);
                if this.in_head.swap(false, Ordering::AcqRel) {
                    // pingora is still parsing the head and will only drop the connection:
                    // tell the client why first (best effort; a small write that fits the
                    // socket buffer).
                    let reply = slow_head_reply();
                    let inner = Pin::new(&mut this.inner);
                    if let Poll::Ready(Ok(n)) = inner.poll_write(cx, &reply) {
                        if n == reply.len() {
                            let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        }
                    }
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client did not send the request in time",
                )));
            }
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.deadline.is_none()
        {
            this.deadline = Some(Box::pin(tokio::time::sleep(this.limit)));
            this.in_head.store(true, Ordering::Release);
        }
        res
    }
}

/// The 408 for a client that did not finish sending its request head in time, in the same
/// OpenAI shape as every other sluice error.
fn slow_head_reply() -> Vec<u8> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let body = crate::error::body(
        408,
        "request_timeout",
        "The request was not received in time.",
        &request_id,
    )
    .to_string();
    let mut head = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\nx-request-id: {request_id}\r\n",
        body.len()
    );
    for (k, v) in super::response::SECURITY_HEADERS {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    /// Send FIN (after flushing the reply), then discard what the client still sends, bounded
    /// in time and bytes, so that closing never resets a connection whose reply is unread.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if this.linger.is_zero() {
                return Poll::Ready(Ok(()));
            }
            this.lingering = Some(Lingering {
                until: Box::pin(tokio::time::sleep(this.linger)),
                left: this.linger_max_bytes,
            });
        }
        let Some(l) = this.lingering.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            if l.left == 0 || l.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    l.left = l.left.saturating_sub(buf.filled().len() as u64);
                }
                // EOF (the client closed after reading the reply) or an error: done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
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
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        // The same lingering close as `poll_shutdown` (pingora calls either).
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A [`ServerApp`] that wraps every accepted connection in [`Guarded`] and refuses new
/// connections while the process drains for shutdown.
pub struct App<A> {
    inner: Arc<A>,
    policy: Policy,
    draining: Arc<AtomicBool>,
}

impl<A> App<A> {
    /// Wrap `inner`.
    pub fn new(inner: A, policy: Policy, draining: Arc<AtomicBool>) -> Self {
        App {
            inner: Arc::new(inner),
            policy,
            draining,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for App<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.draining.load(Ordering::Acquire) {
            // Stop accepting: a connection opened after SIGTERM is closed unanswered.
            return None;
        }
        let stream: Stream = if (*stream).as_any().is::<Guarded>() {
            stream
        } else {
            Box::new(Guarded::new(stream, self.policy))
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn policy(client_timeout: Duration) -> Policy {
        Policy {
            client_timeout,
            linger: Duration::from_secs(2),
            linger_max_bytes: 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_starts_at_first_byte_and_disarm_stops_it() {
        let (client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        let mut client = client;
        // Idle before the first byte is not limited.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        tokio::time::advance(Duration::from_secs(6)).await;
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(g.is_expired());

        let (client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        let mut client = client;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        g.disarm();
        tokio::time::advance(Duration::from_secs(6)).await;
        client.write_all(b"next").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 4);
        assert!(!g.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_armed_during_the_previous_response_restarts_when_it_is_done() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        let mut buf = [0u8; 16];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        g.disarm();
        // The next (pipelined) request starts while the first answer is still streaming.
        client.write_all(b"POS").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        tokio::time::advance(Duration::from_secs(4)).await;
        g.response_done();
        tokio::time::advance(Duration::from_secs(3)).await;
        client.write_all(b"T").await.unwrap();
        assert_eq!(
            g.read(&mut buf).await.unwrap(),
            1,
            "7 s after its first byte, 3 s after its turn"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(g.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn replayed_bytes_come_before_the_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        g.replay(Bytes::from_static(b"hello "));
        g.replay(Bytes::from_static(b"world "));
        client.write_all(b"socket").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        g.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"hello world socket");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lingers_until_the_client_closes_bounded_in_time_and_bytes() {
        // The client closes after sending some more: shutdown drains it and returns.
        let (mut client, server) = tokio::io::duplex(4096);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        client.write_all(&[b'x'; 300]).await.unwrap();
        drop(client);
        let t = tokio::time::Instant::now();
        AsyncWriteExt::shutdown(&mut g).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(10));

        // A client that keeps the connection open is cut after `linger`.
        let (client, server) = tokio::io::duplex(4096);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        let t = tokio::time::Instant::now();
        AsyncWriteExt::shutdown(&mut g).await.unwrap();
        assert!(t.elapsed() >= Duration::from_secs(2));
        drop(client);

        // One that keeps sending is cut after `linger_max_bytes`.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut g = Guarded::new(Box::new(server), policy(Duration::from_secs(5)));
        client.write_all(&[b'x'; 4000]).await.unwrap();
        let t = tokio::time::Instant::now();
        AsyncWriteExt::shutdown(&mut g).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(10));
        drop(client);
    }
}
