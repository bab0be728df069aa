//! What a connection task learns from its socket: whether a request head has begun (to answer
//! `408 Request Timeout` to slow header senders) and when bytes last moved (`connectionTimeout`).
//!
//! hyper's HTTP/1 header timer ends the connection without a word, and it takes the socket with
//! it. [`Watched`] wraps the socket so that the connection task learns whether a request head had
//! begun to arrive when the timer fired (an idle keep-alive connection is closed silently, as
//! Node does), and gets the socket back in that case to write the 408 itself. When the server has
//! a `connectionTimeout`, it also stamps [`Activity`] on every read and write.

use crate::metrics::Metrics;
use crate::pool::Connection;
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
    /// The connection's entry among the live ones (its byte counts).
    connection: Arc<Connection>,
    /// Where HTTP/2 control frames seen on the socket are counted.
    metrics: Arc<Metrics>,
}

impl<I> HeadWatch<I> {
    pub(crate) fn new(
        activity: Arc<Activity>,
        connection: Arc<Connection>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(HeadWatch {
            partial_head: AtomicBool::new(false),
            reclaimed: Mutex::new(None),
            activity,
            connection,
            metrics,
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

/// A socket that marks [`HeadWatch`] when bytes arrive, counts the bytes both ways (and HTTP/2's
/// refusals, resets and GOAWAYs), and hands itself back when dropped with a partial head.
pub(crate) struct Watched<I> {
    inner: Option<I>,
    watch: Arc<HeadWatch<I>>,
    /// HTTP/2 frames read (from the client preface on) and written; `None` on HTTP/1.1.
    frames: Option<Box<Http2Frames>>,
}

/// Both directions of an HTTP/2 connection's frames, followed header to header.
struct Http2Frames {
    read: FrameScan,
    written: FrameScan,
    goaway_counted: bool,
}

impl<I> Watched<I> {
    /// `http2`: `Some(true)` when the connection speaks HTTP/2 (ALPN h2, gRPC), `Some(false)`
    /// when it may (a cleartext port serving both: the client preface tells), `None` when not.
    pub(crate) fn new(inner: I, watch: Arc<HeadWatch<I>>, http2: Option<bool>) -> Self {
        let frames = http2.map(|known| {
            Box::new(Http2Frames {
                read: FrameScan::after_preface(),
                written: if known {
                    FrameScan::default()
                } else {
                    FrameScan::off()
                },
                goaway_counted: false,
            })
        });
        Watched {
            inner: Some(inner),
            watch,
            frames,
        }
    }

    fn wrote(&mut self, polled: &Poll<io::Result<usize>>, written: &[io::IoSlice<'_>]) {
        let Poll::Ready(Ok(n)) = polled else { return };
        let n = *n;
        if n == 0 {
            return;
        }
        self.watch.activity.touch();
        self.watch
            .connection
            .bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
        if let Some(frames) = self.frames.as_deref_mut() {
            let metrics = &self.watch.metrics;
            let mut left = n;
            for slice in written {
                let part = &slice[..left.min(slice.len())];
                left -= part.len();
                frames.written.feed(part, |frame| match frame {
                    Frame::Reset(REFUSED_STREAM) => {
                        metrics.h2_stream_refused(frames.goaway_counted)
                    }
                    Frame::Reset(_) => {}
                    Frame::GoAway => {
                        if !frames.goaway_counted {
                            frames.goaway_counted = true;
                            metrics.h2_goaway_sent();
                        }
                    }
                });
                if left == 0 {
                    break;
                }
            }
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        self.watch
            .connection
            .bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if let Some(frames) = self.frames.as_deref_mut() {
            let metrics = &self.watch.metrics;
            frames.read.feed(bytes, |frame| {
                if let Frame::Reset(_) = frame {
                    metrics.h2_stream_reset();
                }
            });
            if frames.read.is_off() {
                // Not HTTP/2 after all (HTTP/1.1 on a port serving both).
                self.frames = None;
            } else if frames.written.is_off() && frames.read.past_preface() {
                // The client preface came: the server's frames follow from here.
                frames.written = FrameScan::default();
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
            this.read(&buf.filled()[before..]);
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
        this.wrote(&polled, &[io::IoSlice::new(buf)]);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.io().poll_write_vectored(cx, bufs);
        this.wrote(&polled, bufs);
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

const FRAME_HEADER: usize = 9;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// RST_STREAM's error code for a stream refused before any processing (RFC 9113 §7).
const REFUSED_STREAM: u32 = 0x7;
const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame [`FrameScan`] reports.
enum Frame {
    /// RST_STREAM, with its error code.
    Reset(u32),
    GoAway,
}

/// Follows one direction of an HTTP/2 byte stream from frame header to frame header, skipping
/// payloads (the bytes are only looked at, never copied or held), to count what hyper handles
/// without telling: RST_STREAM and GOAWAY. A header or an error code split across reads or
/// writes is put together.
#[derive(Default)]
struct FrameScan {
    /// Client preface bytes still to come (reading only).
    preface_left: usize,
    head: [u8; FRAME_HEADER],
    head_len: usize,
    kind: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// A RST_STREAM's error code, as its bytes arrive.
    code: [u8; 4],
    code_len: usize,
    /// Not HTTP/2 (the preface did not match), or not yet looking.
    off: bool,
}

impl FrameScan {
    fn after_preface() -> Self {
        FrameScan {
            preface_left: CLIENT_PREFACE.len(),
            ..Default::default()
        }
    }

    fn off() -> Self {
        FrameScan {
            off: true,
            ..Default::default()
        }
    }

    fn is_off(&self) -> bool {
        self.off
    }

    fn past_preface(&self) -> bool {
        !self.off && self.preface_left == 0
    }

    fn feed(&mut self, mut bytes: &[u8], mut seen: impl FnMut(Frame)) {
        while !bytes.is_empty() && !self.off {
            if self.preface_left > 0 {
                let at = CLIENT_PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(bytes.len());
                if bytes[..n] != CLIENT_PREFACE[at..at + n] {
                    self.off = true;
                    return;
                }
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.head_len < FRAME_HEADER {
                let n = (FRAME_HEADER - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == FRAME_HEADER {
                    let h = self.head;
                    self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    self.kind = h[3];
                    self.code_len = 0;
                    if self.kind == GOAWAY {
                        seen(Frame::GoAway);
                    }
                    if self.payload_left == 0 {
                        self.head_len = 0;
                    }
                }
            } else {
                let n = self.payload_left.min(bytes.len());
                if self.kind == RST_STREAM && self.code_len < 4 {
                    let take = (4 - self.code_len).min(n);
                    self.code[self.code_len..self.code_len + take].copy_from_slice(&bytes[..take]);
                    self.code_len += take;
                    if self.code_len == 4 {
                        seen(Frame::Reset(u32::from_be_bytes(self.code)));
                    }
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.head_len = 0;
                }
            }
        }
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
        let watch = HeadWatch::new(Activity::new(), Default::default(), Default::default());
        let mut watched = Watched::new(server, watch.clone(), None);
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
        let watch = HeadWatch::new(Activity::new(), Default::default(), Default::default());
        watch.head_complete();
        drop(Watched::new(server, watch.clone(), None));
        assert!(watch.take_reclaimed().is_none(), "no partial head: closed");
    }

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frame_scan_finds_resets_and_goaways_across_split_reads() {
        let mut wire = CLIENT_PREFACE.to_vec();
        wire.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        wire.extend(frame(0x0, 1, &[7; 300])); // DATA with bytes that look like frame types
        wire.extend(frame(RST_STREAM, 1, &REFUSED_STREAM.to_be_bytes()));
        wire.extend(frame(0x6, 0, &[0; 8])); // PING
        wire.extend(frame(RST_STREAM, 3, &8u32.to_be_bytes()));
        wire.extend(frame(GOAWAY, 0, &[0; 8]));
        for split in [1, 2, 5, 9, 13, 4096] {
            let mut scan = FrameScan::after_preface();
            let mut seen = Vec::new();
            for chunk in wire.chunks(split) {
                scan.feed(chunk, |f| {
                    seen.push(match f {
                        Frame::Reset(code) => format!("reset {code}"),
                        Frame::GoAway => "goaway".into(),
                    })
                });
            }
            assert_eq!(seen, ["reset 7", "reset 8", "goaway"], "split {split}");
            assert!(scan.past_preface());
        }
        let mut http1 = FrameScan::after_preface();
        http1.feed(b"GET / HTTP/1.1\r\n", |_| panic!("no frames in HTTP/1.1"));
        assert!(http1.is_off());
    }
}
