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

/// A downstream connection with a per-request read deadline.
#[derive(Debug)]
pub struct Guarded {
    inner: Stream,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    disarm: AtomicBool,
    expired: AtomicBool,
    replay: VecDeque<Bytes>,
}

impl Guarded {
    /// Wrap `inner`; each request must arrive in full within `limit` of its first byte.
    pub fn new(inner: Stream, limit: Duration) -> Guarded {
        Guarded {
            inner,
            limit,
            deadline: None,
            disarm: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            replay: VecDeque::new(),
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

    /// Whether a read failed because the deadline passed.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The guard of a type-erased stream, if it is one.
    pub fn of(stream: &Stream) -> Option<&Guarded> {
        stream.as_any().downcast_ref::<Guarded>()
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
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                this.expired.store(true, Ordering::Release);
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
        }
        res
    }
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
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        self.inner.shutdown().await
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
    limit: Duration,
    draining: Arc<AtomicBool>,
}

impl<A> App<A> {
    /// Wrap `inner`.
    pub fn new(inner: A, limit: Duration, draining: Arc<AtomicBool>) -> Self {
        App {
            inner: Arc::new(inner),
            limit,
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
            Box::new(Guarded::new(stream, self.limit))
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

    #[tokio::test(start_paused = true)]
    async fn deadline_starts_at_first_byte_and_disarm_stops_it() {
        let (client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), Duration::from_secs(5));
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
        let mut g = Guarded::new(Box::new(server), Duration::from_secs(5));
        let mut client = client;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        g.disarm();
        tokio::time::advance(Duration::from_secs(6)).await;
        client.write_all(b"next").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 4);
        assert!(!g.is_expired());
    }

    #[tokio::test]
    async fn replayed_bytes_come_before_the_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(Box::new(server), Duration::from_secs(5));
        g.replay(Bytes::from_static(b"hello "));
        g.replay(Bytes::from_static(b"world "));
        client.write_all(b"socket").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        g.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"hello world socket");
    }
}
