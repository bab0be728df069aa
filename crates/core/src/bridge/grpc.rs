//! gRPC calls on the bridge: a call is announced with its path and metadata, request messages
//! follow as events (each holding a permit until the handler took it), and the handler answers
//! with initial metadata, messages and a final status through `grpc_*` calls. Every call in the
//! map is owned by a guard that reports cancellation when the client resets it or its deadline
//! passes, and removes it.

use super::{Bridge, BridgeError, BridgeEvent, InFlight, RequestHead, Shared};
use crate::config::Compression;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Queued response bytes above which `grpc_write` reports backpressure.
pub const GRPC_HIGH_WATER_MARK: usize = 64 * 1024;

/// How a call ends: a gRPC status code (0 = OK), its details and trailing metadata (flat pairs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStatus {
    pub code: i32,
    pub details: String,
    pub trailers: Vec<String>,
}

impl CallStatus {
    pub fn new(code: i32, details: impl Into<String>) -> Self {
        CallStatus {
            code,
            details: details.into(),
            trailers: Vec::new(),
        }
    }
}

/// What starts the response: initial metadata (flat header pairs), or an error before anything
/// was sent (a trailers-only response).
pub type CallHead = Result<Vec<String>, CallStatus>;

/// A response message, or the status that ends the response.
pub type CallOutput = Result<OutMessage, CallStatus>;

/// A response message and whether it may be compressed (grpc-js's `WriteFlags.NoCompress` clears
/// it); it is compressed only when the call's response encoding is not identity.
pub struct OutMessage {
    pub data: Bytes,
    pub compress: bool,
}

pub(crate) struct GrpcCall {
    head: Option<oneshot::Sender<CallHead>>,
    out: mpsc::UnboundedSender<CallOutput>,
    pub(crate) out_state: Arc<OutState>,
    /// When the call was handed over (its latency, as a request's).
    started: std::time::Instant,
}

#[derive(Default)]
pub(crate) struct OutState {
    pub(crate) queued: AtomicUsize,
    pub(crate) want_drain: AtomicBool,
    /// The handler's choice of response compression for the call ([`COMPRESSION_UNSET`]: the
    /// server's `defaultCompressionAlgorithm`), fixed once the head is sent.
    compression: AtomicU8,
}

const COMPRESSION_UNSET: u8 = 0;

impl OutState {
    /// What the handler chose with `grpc_set_compression`, if anything.
    pub(crate) fn compression(&self) -> Option<Compression> {
        match self.compression.load(Ordering::Acquire) {
            COMPRESSION_UNSET => None,
            n => Compression::from_number(u64::from(n - 1)),
        }
    }
}

/// Why a call ended without the handler finishing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallCancel {
    /// The client reset the stream or went away.
    Client = 1,
    /// `grpc-timeout` passed.
    Deadline = 2,
    /// The server is shutting down and the call was forced.
    Shutdown = 3,
}

/// Removes a call when the request side goes away before the handler ended it. Until the
/// response head goes out it also holds the call's share of the in-flight cap.
pub struct CallGuard {
    shared: Arc<Shared>,
    id: u32,
    pub(crate) reason: CallCancel,
    in_flight: Option<InFlight>,
}

impl CallGuard {
    /// The response head is out: the call leaves the in-flight cap (a server-streaming or bidi
    /// call may last for hours; as for HTTP responses, [`super::PendingGuard`]).
    pub(crate) fn head_sent(&mut self) {
        self.in_flight = None;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let removed = self
            .shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if removed.is_some() {
            self.shared.metrics.request_aborted();
            self.shared
                .sink
                .event(self.id, BridgeEvent::GrpcCancelled(self.reason));
        }
    }
}

/// A call as the protocol runs it: its id, the response head to wait for, the response
/// messages, the write-queue state shared with the handler side, and the guard that cancels it
/// if dropped.
pub(crate) struct OpenedCall {
    pub id: u32,
    pub head: oneshot::Receiver<CallHead>,
    pub output: mpsc::UnboundedReceiver<CallOutput>,
    pub out_state: Arc<OutState>,
    pub guard: CallGuard,
}

impl Bridge {
    /// Announces a call once the in-flight cap has room; `None` when the handler side is closing.
    pub(crate) async fn open_grpc_call(&self, mut head: RequestHead) -> Option<OpenedCall> {
        let in_flight = self.admit().await?;
        let id = self.next_id();
        head.id = id;
        let (head_tx, head_rx) = oneshot::channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let out_state = Arc::new(OutState::default());
        self.shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                GrpcCall {
                    head: Some(head_tx),
                    out: out_tx,
                    out_state: out_state.clone(),
                    started: std::time::Instant::now(),
                },
            );
        let guard = CallGuard {
            shared: self.shared.clone(),
            id,
            reason: CallCancel::Client,
            in_flight: Some(in_flight),
        };
        self.shared.metrics.request_started();
        if self.shared.sink.request(head, None) {
            Some(OpenedCall {
                id,
                head: head_rx,
                output: out_rx,
                out_state,
                guard,
            })
        } else {
            drop(guard);
            None
        }
    }

    fn with_call<R>(&self, id: u32, f: impl FnOnce(&mut GrpcCall) -> R) -> Result<R, BridgeError> {
        let mut map = self
            .shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get_mut(&id).map(f).ok_or(BridgeError::Gone(id))
    }

    /// Sends the response head (initial metadata) now; later calls are ignored.
    pub fn grpc_send_metadata(&self, id: u32, metadata: Vec<String>) -> Result<(), BridgeError> {
        self.with_call(id, |c| {
            if let Some(tx) = c.head.take() {
                super::wake::send_soon(move || {
                    let _ = tx.send(Ok(metadata));
                });
            }
        })
    }

    /// Chooses the call's response compression; only before the head is sent
    /// ([`BridgeError::HeadersSent`] after). The client must accept it for it to apply.
    pub fn grpc_set_compression(
        &self,
        id: u32,
        compression: Compression,
    ) -> Result<(), BridgeError> {
        self.with_call(id, |c| {
            if c.head.is_none() {
                return Err(BridgeError::HeadersSent(id));
            }
            c.out_state
                .compression
                .store(compression as u8 + 1, Ordering::Release);
            Ok(())
        })?
    }

    /// Queues a response message (sending empty initial metadata first if none was sent);
    /// `compress: false` keeps this message uncompressed whatever the call's encoding.
    /// Returns whether the queue is below the high-water mark.
    pub fn grpc_write(&self, id: u32, message: Bytes, compress: bool) -> Result<bool, BridgeError> {
        self.with_call(id, |c| {
            let len = message.len();
            let queued = c.out_state.queued.fetch_add(len, Ordering::SeqCst) + len;
            let out = c.out.clone();
            let head = c.head.take();
            super::wake::send_soon(move || {
                let _ = out.send(Ok(OutMessage {
                    data: message,
                    compress,
                }));
                // The message is queued before the head is released: the stream task that wakes
                // on the head then finds it and h2 writes HEADERS and DATA together.
                if let Some(tx) = head {
                    let _ = tx.send(Ok(Vec::new()));
                }
            });
            if queued < GRPC_HIGH_WATER_MARK {
                return true;
            }
            c.out_state.want_drain.store(true, Ordering::SeqCst);
            // The stream may have drained between the add and the flag: take the flag back then.
            c.out_state.queued.load(Ordering::SeqCst) < GRPC_HIGH_WATER_MARK
                && c.out_state.want_drain.swap(false, Ordering::SeqCst)
        })
    }

    /// Ends the call with a status (0 = OK) and trailing metadata.
    pub fn grpc_end(&self, id: u32, status: CallStatus) -> Result<(), BridgeError> {
        self.grpc_finish(id, None, status)
    }

    /// A whole answer at once: `message`, then `status`. Both are queued before the head is
    /// released, so the three go out in one write.
    pub fn grpc_reply(
        &self,
        id: u32,
        message: OutMessage,
        status: CallStatus,
    ) -> Result<(), BridgeError> {
        self.grpc_finish(id, Some(message), status)
    }

    fn grpc_finish(
        &self,
        id: u32,
        message: Option<OutMessage>,
        status: CallStatus,
    ) -> Result<(), BridgeError> {
        let call = self
            .shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .ok_or(BridgeError::Gone(id))?;
        if let Some(message) = &message {
            call.out_state
                .queued
                .fetch_add(message.data.len(), Ordering::SeqCst);
        }
        let ok = status.code == 0;
        if ok {
            self.shared.metrics.request_finished(
                200,
                call.out_state.queued.load(Ordering::Relaxed),
                call.started.elapsed(),
            );
        } else {
            self.shared.metrics.request_failed();
        }
        let GrpcCall { head, out, .. } = call;
        super::wake::send_soon(move || {
            if let Some(message) = message {
                let _ = out.send(Ok(message));
            }
            match head {
                // Nothing sent yet: OK still needs headers first (queued after the status, so
                // that both go out in one write); an error becomes trailers-only.
                Some(tx) if ok => {
                    let _ = out.send(Err(status));
                    let _ = tx.send(Ok(Vec::new()));
                }
                Some(tx) => {
                    let _ = tx.send(Err(status));
                }
                None => {
                    let _ = out.send(Err(status));
                }
            }
        });
        Ok(())
    }

    /// Tells the handler about an ended call (deadline or shutdown) and answers the client.
    pub(crate) fn grpc_cancel(&self, id: u32, reason: CallCancel, status: CallStatus) {
        let call = self
            .shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(call) = call {
            if reason == CallCancel::Deadline {
                self.shared.metrics.request_timed_out();
            }
            self.shared.metrics.request_aborted();
            match call.head {
                Some(tx) => {
                    let _ = tx.send(Err(status));
                }
                None => {
                    let _ = call.out.send(Err(status));
                }
            }
            self.shared
                .sink
                .event(id, BridgeEvent::GrpcCancelled(reason));
        }
    }

    /// Calls in progress.
    pub fn grpc_call_count(&self) -> usize {
        self.shared
            .grpc_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
