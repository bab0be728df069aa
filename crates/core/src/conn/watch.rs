//! What a connection task learns from its socket: whether a request head has begun (to answer
//! `408 Request Timeout` to slow header senders) and when bytes last moved (`connectionTimeout`).
//!
//! hyper's HTTP/1 header timer ends the connection without a word, and it takes the socket with
//! it. [`Watched`] wraps the socket so that the connection task learns whether a request head had
//! begun to arrive when the timer fired (an idle keep-alive connection is closed silently, as
//! Node does), and gets the socket back in that case to write the 408 itself. When the server has
//! a `connectionTimeout`, it also stamps [`Activity`] on every read and write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// When a connection's bytes last moved, in ms since the first use of this clock.
#[derive(Default)]
pub(crate) struct Activity {
    last_ms: AtomicU64,
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        let a = Activity::default();
        a.touch();
        Arc::new(a)
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long until the connection has been quiet for `limit` (zero once it has).
    pub(crate) fn quiet_left(&self, limit: Duration) -> Duration {
        let quiet = now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
        limit.saturating_sub(Duration::from_millis(quiet))
    }
}

/// Shared between the wrapped socket, the connection's service and the connection task.
pub(crate) struct HeadWatch<I> {
    /// Bytes arrived since the last request head was complete.
    partial_head: AtomicBool,
    /// Where a dropped [`Watched`] leaves its socket when a head was partial.
    reclaimed: Mutex<Option<I>>,
    /// Stamped on every read and write (`connectionTimeout`, and a drained connection's quiet).
    activity: Arc<Activity>,
}

impl<I> HeadWatch<I> {
    pub(crate) fn new(activity: Arc<Activity>) -> Arc<Self> {
        Arc::new(HeadWatch {
            partial_head: AtomicBool::new(false),
            reclaimed: Mutex::new(None),
            activity,
        })
    }

    /// Called by the service: a whole request head has arrived.
    pub(crate) fn head_complete(&self) {
        if self.partial_head.load(Ordering::Relaxed) {
            self.partial_head.store(false, Ordering::Relaxed);
        }
    }

    /// The socket, if hyper dropped it while a request head was partial.
    pub(crate) fn take_reclaimed(&self) -> Option<I> {
        self.reclaimed.lock().ok()?.take()
    }
}

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Writes the 408 and closes, bounded so a client that does not read cannot hold the task.
pub(crate) async fn answer_request_timeout<I: AsyncWrite + Unpin>(mut io: I) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        io.write_all(REQUEST_TIMEOUT).await?;
        io.shutdown().await
    })
    .await;
}

/// A socket that marks [`HeadWatch`] when bytes arrive and hands itself back when dropped with a
/// partial head.
pub(crate) struct Watched<I> {
    inner: Option<I>,
    watch: Arc<HeadWatch<I>>,
}

impl<I> Watched<I> {
    pub(crate) fn new(inner: I, watch: Arc<HeadWatch<I>>) -> Self {
        Watched {
            inner: Some(inner),
            watch,
        }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            if *n > 0 {
                self.watch.activity.touch();
            }
        }
    }

    fn io(&mut self) -> Pin<&mut I>
    where
        I: Unpin,
    {
        // `inner` is only taken in `drop`.
        Pin::new(self.inner.as_mut().expect("socket present until drop"))
    }
}

impl<I> Drop for Watched<I> {
    fn drop(&mut self) {
        if self.watch.partial_head.load(Ordering::Relaxed) {
            if let Ok(mut slot) = self.watch.reclaimed.lock() {
                *slot = self.inner.take();
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = this.io().poll_read(cx, buf);
        if buf.filled().len() > before {
            if !this.watch.partial_head.load(Ordering::Relaxed) {
                this.watch.partial_head.store(true, Ordering::Relaxed);
            }
            this.watch.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.io().poll_write(cx, buf);
        this.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.io().poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }
}

/// Whether a connection ended at hyper's header-read timer.
pub(crate) fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(|e| e.is_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_socket_dropped_mid_head_is_handed_back_an_idle_one_is_not() {
        // Room for the whole 408 (70 bytes): the client reads only once it is written.
        let (client, server) = tokio::io::duplex(128);
        let watch = HeadWatch::new(Activity::new());
        let mut watched = Watched::new(server, watch.clone());
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 8];
        watched.read_exact(&mut buf).await.unwrap();
        drop(watched);
        let io = watch
            .take_reclaimed()
            .expect("partial head: socket handed back");
        answer_request_timeout(io).await;
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        assert_eq!(
            answer,
            "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );

        let (_client, server) = tokio::io::duplex(64);
        let watch = HeadWatch::new(Activity::new());
        watch.head_complete();
        drop(Watched::new(server, watch.clone()));
        assert!(watch.take_reclaimed().is_none(), "no partial head: closed");
    }
}
