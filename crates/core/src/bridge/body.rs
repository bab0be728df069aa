//! Bodies crossing the bridge: the response body fed from JavaScript (with backpressure and a
//! deadline) and the pump that reads a streamed request body one chunk per pull.

use super::{Bridge, BridgeEvent, CloseReason, PendingGuard, Shared, RESPONSE_HIGH_WATER_MARK};
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
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

    pub(crate) fn finish(self) {
        self.state.ended.store(true, Ordering::Release);
        let _ = self.tx.send(Chunk::End);
    }

    pub(crate) fn abort(self) {
        let _ = self.tx.send(Chunk::Abort);
    }
}

pub(crate) fn channel(shared: Arc<Shared>, id: u32, status: u16) -> (ResponseWriter, StreamBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(StreamState::default());
    (
        ResponseWriter {
            tx,
            state: state.clone(),
            status,
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
}

impl StreamBody {
    pub(crate) fn attach(&mut self, guard: PendingGuard, deadline: Instant) {
        self.guard = Some(guard);
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }
}

/// A response body: whole, or streamed from the handler.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(StreamBody),
}

impl ResponseBody {
    pub fn full(bytes: Option<Bytes>) -> ResponseBody {
        ResponseBody::Full(bytes.filter(|b| !b.is_empty()))
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
            ResponseBody::Full(None) => ResponseBody::Full(None),
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
            ResponseBody::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamBody {
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Chunk::Data(b))) => {
                let before = self.state.queued.fetch_sub(b.len(), Ordering::SeqCst);
                if before - b.len() < RESPONSE_HIGH_WATER_MARK
                    && self.state.want_drain.swap(false, Ordering::SeqCst)
                {
                    self.shared.sink.event(self.id, BridgeEvent::Drain);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Chunk::End)) => {
                self.done = true;
                Poll::Ready(None)
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
                Poll::Pending
            }
        }
    }
}

/// Bytes of a streamed body read ahead of the handler's pulls.
const READ_AHEAD: usize = 256 * 1024;

/// The request body broke: a malformed body (bad chunk) is answered 400 if the handler has not
/// answered yet; a client that went away ends the request. Either way the handler sees the error.
fn body_failed(bridge: &Bridge, id: u32, e: &hyper::Error) {
    let error = format!("ERR_REQUEST_BODY: request body failed: {e}");
    let malformed = e.is_parse()
        || e.is_user()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                )
            });
    if malformed {
        bridge.fail_request(id, StatusCode::BAD_REQUEST, error);
    } else {
        bridge.emit(id, BridgeEvent::BodyError(error));
        bridge.abandon(id);
    }
}

/// Reads a streamed request body, one frame per pull from the handler, so a large upload is never
/// buffered whole in Rust and a slow handler slows the client down (TCP backpressure).
pub struct RequestBodyPump {
    body: hyper::body::Incoming,
}

impl RequestBodyPump {
    pub fn new(body: hyper::body::Incoming) -> Self {
        RequestBodyPump { body }
    }

    pub(crate) async fn run(
        mut self,
        bridge: Bridge,
        id: u32,
        mut pulls: mpsc::Receiver<()>,
        max_body_size: Option<u64>,
        deadline: Instant,
    ) {
        let mut received: u64 = 0;
        // Up to READ_AHEAD bytes are read before the handler asks for them: a read is always
        // outstanding, so a client that resets or sends a malformed body is noticed even while the
        // handler is not reading (otherwise the request would hold its slot until requestTimeout).
        let mut ready: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let mut ready_bytes = 0usize;
        let mut ended = false;
        let mut wanted = false;
        loop {
            if wanted {
                if let Some(chunk) = ready.pop_front() {
                    ready_bytes -= chunk.len();
                    wanted = false;
                    bridge.emit(id, BridgeEvent::BodyChunk(chunk));
                } else if ended {
                    bridge.emit(id, BridgeEvent::BodyEnd);
                    return;
                }
            }
            tokio::select! {
                pull = pulls.recv() => match pull {
                    Some(()) => wanted = true,
                    None => return,
                },
                frame = self.body.frame(), if !ended && ready_bytes < READ_AHEAD => match frame {
                    None => ended = true,
                    Some(Err(e)) => return body_failed(&bridge, id, &e),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        received += data.len() as u64;
                        bridge.metrics().bytes_received(data.len());
                        if max_body_size.is_some_and(|max| received > max) {
                            bridge.fail_request(
                                id,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "ERR_BODY_TOO_LARGE: request body too large".into(),
                            );
                            return;
                        }
                        if !data.is_empty() {
                            ready_bytes += data.len();
                            ready.push_back(data);
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return self.timed_out(&bridge, id),
            }
        }
    }

    fn timed_out(self, bridge: &Bridge, id: u32) {
        bridge.fail_request(
            id,
            StatusCode::REQUEST_TIMEOUT,
            "ERR_REQUEST_TIMEOUT: request body not received in time".into(),
        );
    }
}
