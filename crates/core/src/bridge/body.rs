//! Bodies crossing the bridge: the response body fed from JavaScript (with backpressure and a
//! deadline) and the pump that reads a streamed request body one chunk per pull.

use super::{Bridge, BridgeEvent, CloseReason, PendingGuard, Shared, RESPONSE_HIGH_WATER_MARK};
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

enum Chunk {
    Data(Bytes),
    End,
    Abort,
}

#[derive(Default)]
struct StreamState {
    queued: AtomicUsize,
    written: AtomicUsize,
    want_drain: AtomicBool,
    ended: AtomicBool,
}

/// The JavaScript side's handle on a streaming response.
pub(crate) struct ResponseWriter {
    tx: mpsc::UnboundedSender<Chunk>,
    state: Arc<StreamState>,
    status: u16,
    /// The body length the head announced (`Content-Length`; 0 when no body may follow).
    declared: Option<u64>,
}

impl ResponseWriter {
    /// Queues a chunk; `false` means the caller should wait for `Drain`. The queue is bounded by
    /// that contract (as a Node Writable is), not by refusing data.
    pub(crate) fn write(&self, chunk: Bytes) -> bool {
        let len = chunk.len();
        self.state.written.fetch_add(len, Ordering::Relaxed);
        let queued = self.state.queued.fetch_add(len, Ordering::AcqRel) + len;
        let _ = self.tx.send(Chunk::Data(chunk));
        if queued < RESPONSE_HIGH_WATER_MARK {
            return true;
        }
        self.state.want_drain.store(true, Ordering::SeqCst);
        // The body may have emptied the queue between our add and the store above, without seeing
        // `want_drain`: then nobody would send Drain. Re-check and take the flag back if so.
        if self.state.queued.load(Ordering::SeqCst) < RESPONSE_HIGH_WATER_MARK
            && self.state.want_drain.swap(false, Ordering::SeqCst)
        {
            return true;
        }
        false
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn bytes_written(&self) -> usize {
        self.state.written.load(Ordering::Relaxed)
    }

    /// The bytes written disagree with the announced `Content-Length` (a response without a
    /// body — HEAD, 204, 304 — never disagrees: what is written there is dropped, as by node).
    pub(crate) fn length_mismatch(&self) -> bool {
        self.declared
            .is_some_and(|d| d != 0 && d != self.bytes_written() as u64)
    }

    /// More bytes were written than the `Content-Length` announced (hyper sent only those).
    pub(crate) fn overran_length(&self) -> bool {
        self.declared
            .is_some_and(|d| d != 0 && (self.bytes_written() as u64) > d)
    }

    pub(crate) fn finish(self) {
        self.state.ended.store(true, Ordering::Release);
        let _ = self.tx.send(Chunk::End);
    }

    pub(crate) fn abort(self) {
        let _ = self.tx.send(Chunk::Abort);
    }
}

pub(crate) fn channel(
    shared: Arc<Shared>,
    id: u32,
    status: u16,
    declared: Option<u64>,
) -> (ResponseWriter, StreamBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(StreamState::default());
    (
        ResponseWriter {
            tx,
            state: state.clone(),
            status,
            declared,
        },
        StreamBody {
            rx,
            state,
            shared,
            id,
            guard: None,
            deadline: None,
            done: false,
            discard_data: false,
            declared,
            sent: 0,
            peeked: None,
            owes_flush: true,
        },
    )
}

/// A response body streamed from JavaScript.
pub struct StreamBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
    state: Arc<StreamState>,
    shared: Arc<Shared>,
    id: u32,
    /// Held while the body streams, so a client that goes away removes the pending entry.
    guard: Option<PendingGuard>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    /// A response to HEAD: chunks are consumed but not sent.
    discard_data: bool,
    /// The length the head announced (0: no body may follow), and the bytes handed out so far.
    declared: Option<u64>,
    sent: u64,
    /// A chunk taken from the queue ahead of its turn (to see whether the body ends next).
    peeked: Option<Chunk>,
    /// The head or a chunk was handed to hyper and it has not been given a chance to flush since
    /// (it flushes when the body is pending). An abort then waits one turn: hyper fails the
    /// connection on a body error without flushing what it buffered, and the handler wrote it
    /// before it destroyed the response (as under node, whose socket has it by then).
    owes_flush: bool,
}

impl Drop for StreamBody {
    /// hyper drops a body as soon as the head's length is satisfied (all `Content-Length`
    /// bytes written, or none allowed: HEAD, 204, 304), which may be before the handler calls
    /// `end()`. The response is complete on the wire but not ended: as under node, nothing is
    /// closed yet. The rest is read and dropped in a task until `end()`, `destroy()` or the
    /// request deadline; only then does the guard go (a body dropped for any other reason —
    /// the connection broke — drops it now, so the handler sees `'close'`).
    fn drop(&mut self) {
        let complete_on_wire = self.declared.is_some_and(|d| self.sent >= d);
        if self.done || self.guard.is_none() || !complete_on_wire {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = StreamBody {
            rx: std::mem::replace(&mut self.rx, mpsc::unbounded_channel().1),
            state: self.state.clone(),
            shared: self.shared.clone(),
            id: self.id,
            guard: self.guard.take(),
            deadline: self.deadline.take(),
            done: false,
            discard_data: true,
            declared: None,
            sent: 0,
            peeked: self.peeked.take(),
            owes_flush: false,
        };
        runtime.spawn(async move {
            while let Some(Ok(_)) = std::future::poll_fn(|cx| rest.poll_chunk(cx)).await {}
        });
    }
}

impl StreamBody {
    /// What the handler writes is read and dropped: no content may follow the head.
    pub(crate) fn discard_data(&mut self) {
        self.discard_data = true;
    }

    pub(crate) fn attach(&mut self, guard: PendingGuard, deadline: Instant) {
        self.guard = Some(guard);
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }
}

/// A response body: whole, or streamed from the handler.
pub enum ResponseBody {
    Full(Option<Bytes>),
    /// See [`ResponseBody::without_length`].
    Unsized {
        bytes: Option<Bytes>,
        taken: bool,
        /// See [`ResponseBody::short_of_length`].
        flush_before_end: bool,
    },
    Stream(StreamBody),
}

impl ResponseBody {
    pub fn full(bytes: Option<Bytes>) -> ResponseBody {
        ResponseBody::Full(bytes.filter(|b| !b.is_empty()))
    }

    /// A whole body whose length hyper is not told: it frames it from the head's
    /// `Content-Length` if there is one, else chunked (HTTP/1.1) or to the connection's close.
    pub fn without_length(bytes: Option<Bytes>) -> ResponseBody {
        ResponseBody::Unsized {
            bytes: bytes.filter(|b| !b.is_empty()),
            taken: false,
            flush_before_end: false,
        }
    }

    /// A whole body shorter than the head's `Content-Length`: hyper fails the connection at its
    /// end without flushing what it buffered, so the body is pending once before it ends. The
    /// head and what there is go out, then the connection closes (with nothing at all sent
    /// otherwise when the body was empty).
    pub fn short_of_length(bytes: Option<Bytes>) -> ResponseBody {
        ResponseBody::Unsized {
            bytes: bytes.filter(|b| !b.is_empty()),
            taken: false,
            flush_before_end: true,
        }
    }

    /// The body of a response to HEAD: no content, with the `Content-Length` a GET would have had
    /// when it is known. A streamed body is still read from the handler (and dropped), so its
    /// writes complete and drain as usual.
    pub fn for_head(self, headers: &mut http::HeaderMap) -> ResponseBody {
        match self {
            ResponseBody::Full(Some(b)) => {
                headers
                    .entry(http::header::CONTENT_LENGTH)
                    .or_insert_with(|| http::HeaderValue::from(b.len()));
                ResponseBody::Full(None)
            }
            ResponseBody::Full(None) | ResponseBody::Unsized { .. } => ResponseBody::Full(None),
            ResponseBody::Stream(mut s) => {
                s.discard_data = true;
                ResponseBody::Stream(s)
            }
        }
    }
}

fn aborted(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, what.to_string())
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Unsized {
                bytes,
                taken,
                flush_before_end,
            } => {
                *taken = true;
                if let Some(b) = bytes.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                if std::mem::take(flush_before_end) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(None)
            }
            ResponseBody::Stream(s) => loop {
                match s.poll_chunk(cx) {
                    Poll::Ready(Some(Ok(frame))) if s.discard_data && frame.is_data() => continue,
                    other => break other,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            // Never at its end before the first poll, so hyper frames it (even when empty).
            ResponseBody::Unsized {
                bytes,
                taken,
                flush_before_end,
            } => *taken && bytes.is_none() && !*flush_before_end,
            ResponseBody::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Unsized { .. } | ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamBody {
    /// Fewer bytes handed out than the head announced.
    fn short_of_declared(&self) -> bool {
        self.declared.is_some_and(|d| self.sent < d)
    }

    /// Puts `ending` (an end hyper will fail on, or an abort) back for the next poll and is
    /// pending once: hyper flushes what it buffered while the body is pending, and fails the
    /// connection without flushing (see `owes_flush`).
    fn flush_before(
        &mut self,
        ending: Chunk,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.owes_flush = false;
        self.peeked = Some(ending);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.peeked.take() {
            Some(chunk) => Poll::Ready(Some(chunk)),
            None => self.rx.poll_recv(cx),
        };
        match next {
            Poll::Ready(Some(Chunk::Data(b))) => {
                let before = self.state.queued.fetch_sub(b.len(), Ordering::SeqCst);
                if before - b.len() < RESPONSE_HIGH_WATER_MARK
                    && self.state.want_drain.swap(false, Ordering::SeqCst)
                {
                    self.shared.sink.event(self.id, BridgeEvent::Drain);
                }
                self.sent += b.len() as u64;
                // An end already queued is told now (`is_end_stream`), so hyper ends the body
                // with this chunk: one write less, and a body short of its Content-Length is
                // flushed before hyper closes the connection (ending it on a later poll makes
                // hyper fail the connection with the last chunk still unflushed).
                match self.rx.try_recv() {
                    // Short of the announced length, the end is a failure for hyper: it waits
                    // for its turn (below).
                    Ok(Chunk::End) if !self.short_of_declared() => self.done = true,
                    Ok(other) => self.peeked = Some(other),
                    Err(_) => {}
                }
                self.owes_flush = true;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            // hyper fails a body short of its Content-Length at its end, as it does an aborted one.
            Poll::Ready(Some(Chunk::End)) if self.owes_flush && self.short_of_declared() => {
                self.flush_before(Chunk::End, cx)
            }
            Poll::Ready(Some(Chunk::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Chunk::Abort)) if self.owes_flush => {
                self.flush_before(Chunk::Abort, cx)
            }
            Poll::Ready(Some(Chunk::Abort)) | Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(aborted("response aborted by the handler"))))
            }
            Poll::Pending => {
                let expired = match self.deadline.as_mut() {
                    Some(d) => {
                        d.as_mut().poll(cx).is_ready() && !self.state.ended.load(Ordering::Acquire)
                    }
                    None => false,
                };
                if expired {
                    if let Some(g) = self.guard.as_mut() {
                        g.set_reason(CloseReason::TimedOut);
                    }
                    self.shared.metrics.request_timed_out();
                    self.done = true;
                    return Poll::Ready(Some(Err(aborted(
                        "request timeout while streaming the response",
                    ))));
                }
                self.owes_flush = false;
                Poll::Pending
            }
        }
    }
}

/// Where a streamed request body goes: the protocol reads it off the wire (it knows the framing)
/// and hands it to the handler here, one chunk per pull ([`Bridge::pull_body`]).
pub struct BodyFeed {
    /// One item per chunk the handler asks for; closed once the request is answered or gone.
    pub pulls: mpsc::Receiver<()>,
    pub to_handler: BodyChunks,
    /// `maxBodySize`, if any.
    pub max_body_size: Option<u64>,
    /// The request deadline.
    pub deadline: Instant,
}

/// The handler's side of a [`BodyFeed`].
pub struct BodyChunks {
    bridge: Bridge,
    id: u32,
}

impl BodyChunks {
    /// Bytes read off the wire (counted as received whether or not the handler takes them).
    pub fn received(&self, bytes: usize) {
        self.bridge.metrics().bytes_received(bytes);
    }

    /// A chunk the handler asked for.
    pub fn chunk(&self, data: Bytes) {
        self.bridge.emit(self.id, BridgeEvent::BodyChunk(data));
    }

    /// The body is complete.
    pub fn end(&self) {
        self.bridge.emit(self.id, BridgeEvent::BodyEnd);
    }

    /// The body cannot be taken (malformed, too large, too slow): the handler's `req` gets
    /// `error`, and the client gets `status` if the handler has not answered yet.
    pub fn fail(&self, status: StatusCode, error: String) {
        self.bridge.fail_request(self.id, status, error);
    }

    /// The client broke off: the handler's `req` gets `error` and the request ends.
    pub fn broken(&self, error: String) {
        self.bridge.emit(self.id, BridgeEvent::BodyError(error));
        self.bridge.abandon(self.id);
    }
}

/// A request body read by a protocol and fed to the handler (see [`Bridge::dispatch`]).
pub trait BodySource: Send + 'static {
    fn feed(self, feed: BodyFeed) -> impl std::future::Future<Output = ()> + Send + 'static;
}

impl Bridge {
    pub(super) fn spawn_body_feed<B: BodySource>(
        &self,
        source: B,
        id: u32,
        pulls: mpsc::Receiver<()>,
        max_body_size: Option<u64>,
        deadline: Instant,
    ) {
        let feed = BodyFeed {
            pulls,
            to_handler: BodyChunks {
                bridge: self.clone(),
                id,
            },
            max_body_size,
            deadline,
        };
        tokio::spawn(source.feed(feed));
    }
}
