//! The request bridge: hands each request to a [`RequestSink`] (in the addon, a queue into
//! JavaScript, `src/napi/delivery.rs`) with plain positional values, and takes the answer back through
//! [`Bridge::respond`], [`Bridge::write`] and [`Bridge::end`], called from the JavaScript thread.
//!
//! Every request handed out lives in the pending map until it is answered, the client goes away, or
//! its deadline passes; a [`PendingGuard`] owned by whoever is waiting on it removes the entry when
//! that waiter is dropped, so no path can leak an entry. In-flight requests are capped by a
//! semaphore: when it is full, connections stop reading new requests (backpressure).

mod body;
pub mod grpc;
mod wake;
mod ws_queue;
pub use wake::{deferring_wakes, flush_deferred_wakes};
pub use ws_queue::{message_queue, MessageReceiver, MessageSender, WsProgress};

pub use body::{BodyChunks, BodyFeed, BodySource, ResponseBody};

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::trace::{RequestTrace, TraceSettings};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Bodies whose declared length is at most this are read whole in Rust and handed over with the
/// request head (one crossing instead of three); larger or chunked bodies are streamed on demand.
pub const INLINE_BODY_LIMIT: u64 = 64 * 1024;

/// Queued response bytes above which `write` reports backpressure (`false`), like a Writable's
/// highWaterMark; `drain` is signalled once the queue is empty again.
pub const RESPONSE_HIGH_WATER_MARK: usize = 64 * 1024;

/// How the request body reaches the handler.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (no Content-Length and no Transfer-Encoding, or a length of 0).
    Empty,
    /// The whole body, read in Rust because it was small.
    Inline(Bytes),
    /// Streamed: the handler asks for chunks with [`Bridge::pull_body`].
    Streamed,
    /// A WebSocket upgrade: the request opens a connection whose messages follow as events.
    Upgrade,
    /// A WebSocket upgrade whose subprotocol the handler chooses (`handleProtocols`): the 101
    /// waits for [`Bridge::ws_select_protocol`].
    UpgradeChoosingProtocol,
    /// A gRPC call: request messages follow as events.
    GrpcCall,
    /// A gRPC call whose whole request came with it: its one message, the client done sending
    /// (unary and server streaming: one crossing instead of three).
    GrpcCallWhole(Bytes),
}

/// What a handler is told about a request.
#[derive(Debug)]
pub struct RequestHead {
    pub id: u32,
    pub method: String,
    /// Request target as sent (path and query for origin-form).
    pub url: String,
    /// Names lower-case, in arrival order.
    pub headers: FlatHeaders,
    /// 10 = HTTP/1.0, 11 = HTTP/1.1, 20 = HTTP/2.
    pub http_version: u32,
    pub remote: SocketAddr,
    /// `remote`'s IP as text, shared by the connection's requests.
    pub remote_ip: Arc<str>,
    pub local_port: u16,
    pub encrypted: bool,
    /// TLS details of the connection (shared by its requests), when encrypted.
    pub peer: Option<Arc<crate::tls::PeerInfo>>,
    pub body: RequestBody,
}

/// Events about an outstanding request, delivered to the handler side.
#[derive(Debug)]
pub enum BridgeEvent {
    /// A chunk of a streamed request body (answers one `pull_body`).
    BodyChunk(Bytes),
    /// The streamed request body is complete.
    BodyEnd,
    /// The request body failed: a limit was exceeded, the deadline passed or the client broke off.
    BodyError(String),
    /// The response queue has room again after `write` reported backpressure.
    Drain,
    /// The request is gone before its response completed (client disconnect, timeout, reset).
    Closed(CloseReason),
    /// What the handler sent to a WebSocket is written up to the point it asked about
    /// (`ws_notify_when_written`): the total bytes written.
    WsWritten(u64),
    /// A WebSocket message. The permit (its share of `maxReceiveQueue`) bounds the bytes a
    /// connection has in the handler's queue; the sink drops it once the handler has taken it.
    WsMessage {
        data: Bytes,
        binary: bool,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// A pong from the peer (the permit as for messages: a pong flood is bounded too).
    WsPong {
        data: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// The WebSocket connection ended (code 1006 when it ended without a close frame); `written`:
    /// the bytes of the handler's that went out (send callbacks up to there succeeded, the rest
    /// fail).
    WsClosed {
        code: u16,
        reason: String,
        written: u64,
    },
    /// The peer's close frame arrived, or the peer failed the protocol, after every message before
    /// it: the handler answers (`CloseReply`) once it has taken them, so its replies to them go out
    /// before the close frame, as with ws.
    WsPeerClosing,
    /// A gRPC request message (raw bytes; the permit as for WebSocket messages).
    GrpcMessage {
        data: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// The client finished sending (half-close).
    GrpcInputEnd,
    /// The request stream failed (e.g. a message over the size limit).
    GrpcInputError(String),
    /// The call ended before the handler finished it.
    GrpcCancelled(grpc::CallCancel),
    /// The response queue has room again after `grpc_write` reported backpressure.
    GrpcDrain,
    /// Native trace mode: the request's `http_timeout` passed before its response head (the JS
    /// tracer answers with koatty_trace's timeout error unless its middleware chain has settled).
    TraceTimeout,
}

/// What the handler asks of a WebSocket connection.
#[derive(Debug)]
pub enum WsOutbound {
    /// A message: binary, or text when the bytes are UTF-8 (the protocol sends invalid text as
    /// binary, as `ws` does for a Buffer).
    Message {
        data: Bytes,
        binary: bool,
    },
    /// A ping the handler sends.
    Ping(Bytes),
    /// An unsolicited pong the handler sends.
    Pong(Bytes),
    Close(u16, String),
    Terminate,
    /// The handler has taken everything the peer sent before its close frame (and queued its
    /// answers): the close reply may go out.
    CloseReply,
}

impl WsOutbound {
    /// Bytes it adds to `bufferedAmount`: a message's payload; a ping or pong counts its 2-byte
    /// frame head too, as in ws, so a handler sending them faster than the peer reads is bounded.
    pub fn buffered_len(&self) -> usize {
        const CONTROL_FRAME_HEAD: usize = 2;
        match self {
            WsOutbound::Message { data, .. } => data.len(),
            WsOutbound::Ping(data) | WsOutbound::Pong(data) => data.len() + CONTROL_FRAME_HEAD,
            WsOutbound::Close(..) | WsOutbound::Terminate | WsOutbound::CloseReply => 0,
        }
    }
}

/// A WebSocket connection's queues from the handler. `futures-channel`'s unbounded queue allocates
/// a node per item and almost nothing while empty; tokio's preallocates a 32-slot block and a
/// cache-padded channel (≈ 1.8 KiB each), which thousands of idle connections pay for nothing.
pub type WsQueue = futures_channel::mpsc::UnboundedSender<WsOutbound>;
/// The receiving end of a [`WsQueue`].
pub type WsQueueReceiver = futures_channel::mpsc::UnboundedReceiver<WsOutbound>;

/// Queues `item` for a WebSocket connection, after everything this turn already queued for it
/// (the sends may be held until the turn ends: `wake`); `Gone` once the connection's task is.
fn queue_soon(queue: &WsQueue, id: u32, item: WsOutbound) -> Result<(), BridgeError> {
    if queue.is_closed() {
        return Err(BridgeError::Gone(id));
    }
    let queue = queue.clone();
    wake::send_soon(move || {
        let _ = queue.unbounded_send(item);
    });
    Ok(())
}

struct WsConnection {
    /// Close and terminate requests, to the connection's task.
    tx: WsQueue,
    /// Messages, pings and pongs, straight to the connection's writer (one wake per message, not
    /// two); bounded by `max_buffered`.
    messages: MessageSender,
    progress: Arc<WsProgress>,
    /// Until the handler chose the subprotocol (`handleProtocols`): where its answer goes.
    protocol_choice: Option<oneshot::Sender<ProtocolChoice>>,
}

/// The handler's answer to a subprotocol offer.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolChoice {
    /// This protocol goes into the 101's `Sec-WebSocket-Protocol`.
    Selected(String),
    /// No protocol header (`handleProtocols` returned false).
    NoProtocol,
    /// `handleProtocols` threw: the upgrade is refused.
    Failed,
}

/// An announced WebSocket upgrade, before its 101.
pub struct OpenedWebSocket {
    pub id: u32,
    /// What the handler asks of the connection (close, terminate).
    pub outbound: WsQueueReceiver,
    /// What the handler sends (messages, pings, pongs), for the connection's writer.
    pub messages: MessageReceiver,
    /// The handler's subprotocol choice, when it was asked for one.
    pub protocol_choice: Option<oneshot::Receiver<ProtocolChoice>>,
    /// The upgrade's share of the in-flight cap: dropped once the upgrade is answered.
    pub in_flight: InFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away (or the connection broke).
    ClientGone = 1,
    /// The request deadline (`requestTimeout`) passed.
    TimedOut = 2,
    /// The server could not deliver the request (shutting down).
    Rejected = 3,
}

/// A client sent a request head that could not be served (malformed, too large, or too slow)
/// and was answered natively (400, 408, 413, 414, 431) before its connection closed: node's
/// `'clientError'`, for the handler side to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// node's code: llhttp's (`HPE_INVALID_HEADER_TOKEN`, `HPE_HEADER_OVERFLOW`, …) or
    /// `ERR_HTTP_REQUEST_TIMEOUT`.
    pub code: &'static str,
    pub message: String,
    pub remote: SocketAddr,
}

/// The handler side of the bridge (JavaScript in the addon, a closure in tests).
pub trait RequestSink: Send + Sync + 'static {
    /// Hands over a request, with what native trace mode attaches to it (`None` while trace
    /// mode is off, and for gRPC calls). Returns `false` if it cannot be delivered (the sink is
    /// closing).
    fn request(&self, head: RequestHead, trace: Option<RequestTrace>) -> bool;
    /// Delivers an event about request `id`.
    fn event(&self, id: u32, event: BridgeEvent);
    /// Tells of a request head answered natively with an error (see [`ClientError`]).
    fn client_error(&self, _error: ClientError) {}
}

/// Errors of the JavaScript-facing calls; the addon maps them to coded JS errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("ERR_REQUEST_GONE: request {0} is no longer pending (already answered, timed out or disconnected)")]
    Gone(u32),
    #[error("ERR_HTTP_HEADERS_SENT: headers of request {0} were already sent")]
    HeadersSent(u32),
    #[error("ERR_HTTP_HEADERS_NOT_SENT: request {0} has no response head yet")]
    HeadersNotSent(u32),
    #[error("ERR_WS_BACKPRESSURE: connection {0} has more unsent data queued than allowed; it was terminated")]
    Backpressure(u32),
}

impl BridgeError {
    pub fn code(&self) -> &'static str {
        match self {
            BridgeError::Gone(_) => "ERR_REQUEST_GONE",
            BridgeError::HeadersSent(_) => "ERR_HTTP_HEADERS_SENT",
            BridgeError::HeadersNotSent(_) => "ERR_HTTP_HEADERS_NOT_SENT",
            BridgeError::Backpressure(_) => "ERR_WS_BACKPRESSURE",
        }
    }
}

enum Stage {
    /// Waiting for the handler's response head.
    AwaitingHead(oneshot::Sender<Answer>),
    /// Head sent; streaming the body.
    Streaming(body::ResponseWriter),
}

/// What the handler side hands the task waiting for a response head: the response, and the
/// request's hold on its connection, let go of on the I/O thread (which holds it per request: a
/// count that stays on that thread's core).
type Answer = (Response<ResponseBody>, Option<Arc<dyn CloseConnection>>);

struct Pending {
    stage: Stage,
    /// When the request was handed over, for the latency figures.
    started: std::time::Instant,
    /// Wakes the request-body pump for one more chunk (streamed bodies only).
    pull: Option<mpsc::Sender<()>>,
    /// HTTP/2: header values always go out as latin1 (Node's http2 writes them one byte per char).
    http2: bool,
    /// A HEAD request: its response carries no body whatever the handler writes.
    head_request: bool,
    /// The request's connection, to close once its response is out (see [`CloseConnection`]).
    close_connection: Option<Arc<dyn CloseConnection>>,
}

pub use crate::lifecycle::CloseConnection;

/// A value aligned to (and padded to) a cache line, so that writes to its neighbours do not take
/// the line away from another core (128: the pair of lines Intel prefetches together).
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Shared {
    sink: Arc<dyn RequestSink>,
    // Keyed by ids this side hands out, so a fast hasher is safe (no key is the client's): the
    // default SipHash was ≈ 3 % of the JS thread per request (`respond`'s lookups).
    // On a cache line of its own: both threads lock it for every request, and the I/O thread
    // writes this struct's reference count (beside it otherwise) for every request too.
    pending: CacheLine<Mutex<FxHashMap<u32, Pending>>>,
    websockets: Mutex<FxHashMap<u32, WsConnection>>,
    grpc_calls: Mutex<FxHashMap<u32, grpc::GrpcCall>>,
    next_id: AtomicU32,
    in_flight: Arc<Semaphore>,
    /// The in-flight cap now, and permits still to retire after it was lowered (they are
    /// forgotten as the requests holding them finish).
    max_in_flight: std::sync::atomic::AtomicUsize,
    permits_to_retire: std::sync::atomic::AtomicUsize,
    pub(crate) metrics: Arc<Metrics>,
    /// Native trace mode's settings, set by the JS tracer once it has read the app's config.
    trace: ArcSwapOption<TraceSettings>,
}

impl Shared {
    fn take(&self, id: u32) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Removes the entry only if its response head has (`streaming`) or has not been sent, checked
    /// under the same lock: taking it and putting it back would let a guard dropped in between
    /// miss it, and the entry would leak.
    fn take_in_stage(&self, id: u32, streaming: bool) -> Result<Pending, BridgeError> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id).map(|p| matches!(p.stage, Stage::Streaming(_))) {
            None => Err(BridgeError::Gone(id)),
            Some(is_streaming) if is_streaming == streaming => {
                Ok(map.remove(&id).expect("entry present"))
            }
            Some(true) => Err(BridgeError::HeadersSent(id)),
            Some(false) => Err(BridgeError::HeadersNotSent(id)),
        }
    }

    fn with<R>(&self, id: u32, f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
            .map(f)
    }
}

/// Removes a pending entry when its waiter goes away without the response having completed, and
/// tells the handler side. Until the response head goes out it also holds the request's share of
/// the in-flight cap.
pub struct PendingGuard {
    shared: Arc<Shared>,
    id: u32,
    reason: CloseReason,
    in_flight: Option<InFlight>,
}

impl PendingGuard {
    fn set_reason(&mut self, reason: CloseReason) {
        self.reason = reason;
    }

    /// The response head is out: the request leaves the in-flight cap, which bounds what waits
    /// for the handler's answer. A long-lived response (server-sent events, a download to a slow
    /// reader) held its unit for as long as it lasted, and enough of them — 4,096 subscribers at
    /// the default — stopped the server reading anyone's requests.
    fn head_sent(&mut self) {
        self.in_flight = None;
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.shared.take(self.id).is_some() {
            self.shared.metrics.request_aborted();
            self.shared
                .sink
                .event(self.id, BridgeEvent::Closed(self.reason));
        }
    }
}

/// One unit of the in-flight cap (`maxInFlight`), held while a request, a gRPC call or a
/// WebSocket upgrade waits for the handler's answer (its response head): every way in takes one,
/// so the cap bounds them all.
/// Dropped, it returns its unit — or retires it, when the cap was lowered meanwhile.
pub struct InFlight {
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let retire = self
            .shared
            .permits_to_retire
            .fetch_update(AcqRel, Acquire, |n| n.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (retire, self.permit.take()) {
            permit.forget();
        }
    }
}

/// One server's bridge. Cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

impl Bridge {
    pub fn new(sink: Arc<dyn RequestSink>, max_in_flight: usize, metrics: Arc<Metrics>) -> Bridge {
        Bridge {
            shared: Arc::new(Shared {
                sink,
                pending: CacheLine(Mutex::new(FxHashMap::default())),
                websockets: Mutex::new(FxHashMap::default()),
                grpc_calls: Mutex::new(FxHashMap::default()),
                next_id: AtomicU32::new(1),
                in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
                max_in_flight: std::sync::atomic::AtomicUsize::new(max_in_flight.max(1)),
                permits_to_retire: std::sync::atomic::AtomicUsize::new(0),
                metrics,
                trace: ArcSwapOption::empty(),
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Tells the handler side of a request head answered natively with an error.
    pub fn client_error(&self, error: ClientError) {
        self.shared.sink.client_error(error);
    }

    /// Changes the in-flight cap at run time: raising adds permits now; lowering retires idle
    /// permits now and the rest as the requests holding them finish.
    pub fn set_max_in_flight(&self, max: usize) {
        use std::sync::atomic::Ordering::AcqRel;
        let max = max.max(1);
        let old = self.shared.max_in_flight.swap(max, AcqRel);
        if max > old {
            let mut add = max - old;
            // Cancel retirements still owed before adding permits.
            let owed = self.shared.permits_to_retire.swap(0, AcqRel);
            let cancelled = owed.min(add);
            add -= cancelled;
            self.shared
                .permits_to_retire
                .fetch_add(owed - cancelled, AcqRel);
            self.shared.in_flight.add_permits(add);
        } else if max < old {
            let cut = old - max;
            let now = self.shared.in_flight.forget_permits(cut);
            self.shared.permits_to_retire.fetch_add(cut - now, AcqRel);
        }
    }

    /// Native trace mode on (with the tracer's settings) or off, for requests dispatched from now on.
    pub fn set_trace(&self, settings: Option<TraceSettings>) {
        self.shared.trace.store(settings.map(Arc::new));
    }

    /// Requests handed to the handler and not finished.
    /// HTTP requests handed to the handler and not finished (`pendingRequests`; gRPC calls are in
    /// `requestsActive`).
    pub fn pending_count(&self) -> usize {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits for a unit of the in-flight cap (backpressure: the caller stops reading meanwhile).
    /// `None` once the cap is closed.
    pub(crate) async fn admit(&self) -> Option<InFlight> {
        let permit = self.shared.in_flight.clone().acquire_owned().await.ok()?;
        Some(InFlight {
            shared: self.shared.clone(),
            permit: Some(permit),
        })
    }

    pub(crate) fn next_id(&self) -> u32 {
        loop {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Hands a request to the sink and waits for the response head, within the request deadline.
    /// `body` is the request body still to be read, if it is streamed.
    pub async fn dispatch<B: BodySource>(
        &self,
        mut head: RequestHead,
        streamed_body: Option<B>,
        limits: &Limits,
        deadline: tokio::time::Instant,
        close_connection: Option<Arc<dyn CloseConnection>>,
    ) -> Response<ResponseBody> {
        let Some(in_flight) = self.admit().await else {
            return simple_response(StatusCode::SERVICE_UNAVAILABLE);
        };
        let id = self.next_id();
        head.id = id;
        let (head_tx, head_rx) = oneshot::channel();
        let pull = streamed_body.as_ref().map(|_| mpsc::channel::<()>(1));
        {
            let mut map = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.insert(
                id,
                Pending {
                    stage: Stage::AwaitingHead(head_tx),
                    pull: pull.as_ref().map(|(tx, _)| tx.clone()),
                    started: std::time::Instant::now(),
                    http2: head.http_version >= 20,
                    head_request: head.method == "HEAD",
                    close_connection,
                },
            );
        }
        let mut guard = PendingGuard {
            shared: self.shared.clone(),
            id,
            reason: CloseReason::ClientGone,
            in_flight: Some(in_flight),
        };
        self.shared.metrics.request_started();
        if let (Some(source), Some((_, pull_rx))) = (streamed_body, pull) {
            self.spawn_body_feed(source, id, pull_rx, limits.max_body_size, deadline);
        }
        // Native trace mode: koatty_trace's `http_timeout` timer is this request's second deadline;
        // it only notifies the handler side, which then answers (or ignores it once its middleware
        // chain has settled). It lives as long as the wait for the response head; the JS tracer
        // takes over when the head goes out first.
        let settings = self.shared.trace.load_full();
        let trace_deadline = settings.as_ref().and_then(|t| t.timer_deadline(deadline));
        let trace = settings
            .map(|t| t.request_trace(&head.headers, &head.url, false, trace_deadline.is_some()));
        if !self.shared.sink.request(head, trace) {
            guard.set_reason(CloseReason::Rejected);
            return simple_response(StatusCode::SERVICE_UNAVAILABLE);
        }
        let mut head_rx = head_rx;
        if let Some(at) = trace_deadline {
            tokio::select! {
                biased;
                answered = &mut head_rx => return self.head_arrived(answered, guard, deadline),
                _ = tokio::time::sleep_until(at) => self.shared.sink.event(id, BridgeEvent::TraceTimeout),
            }
        }
        match tokio::time::timeout_at(deadline, head_rx).await {
            Ok(answered) => self.head_arrived(answered, guard, deadline),
            Err(_) => {
                guard.set_reason(CloseReason::TimedOut);
                drop(guard);
                self.shared.metrics.request_timed_out();
                simple_response(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    fn head_arrived(
        &self,
        answered: Result<Answer, oneshot::error::RecvError>,
        mut guard: PendingGuard,
        deadline: tokio::time::Instant,
    ) -> Response<ResponseBody> {
        match answered {
            Ok((mut response, _connection)) => {
                guard.head_sent();
                if let ResponseBody::Stream(s) = response.body_mut() {
                    s.attach(guard, deadline);
                }
                response
            }
            // The sender was dropped: the entry was destroyed by the handler side.
            Err(_) => simple_response(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// Sends the response head, with the whole body when `end` is true. Returns whether more body
    /// may be written without exceeding the high-water mark. Header values go out as UTF-8.
    pub fn respond<S: AsRef<str>>(
        &self,
        id: u32,
        status: u16,
        reason: Option<&str>,
        headers: &[S],
        body: Option<Bytes>,
        end: bool,
    ) -> Result<bool, BridgeError> {
        self.respond_encoded(id, status, reason, headers, HeaderEncoding::Utf8, body, end)
    }

    /// [`Bridge::respond`], with `encoding` saying how header values become bytes (HTTP/2
    /// responses always use latin1, as Node's http2 does).
    #[allow(clippy::too_many_arguments)]
    pub fn respond_encoded<S: AsRef<str>>(
        &self,
        id: u32,
        status: u16,
        reason: Option<&str>,
        headers: &[S],
        encoding: HeaderEncoding,
        body: Option<Bytes>,
        end: bool,
    ) -> Result<bool, BridgeError> {
        let framing = Framing {
            encoding,
            ..Framing::default()
        };
        self.respond_with(id, status, reason, headers, framing, body, end)
            .map(|sent| sent.more)
    }

    /// Sends the response head (with the whole body when `end`), framed as node frames it:
    /// `framing` says how header values become bytes and whether the handler removed
    /// `Content-Length`. A `Content-Length` that disagrees with a whole body is enforced (never
    /// more bytes than announced; the connection closes after the response) and reported in
    /// [`Sent::length_mismatch`].
    #[allow(clippy::too_many_arguments)]
    pub fn respond_with<S: AsRef<str>>(
        &self,
        id: u32,
        status: u16,
        reason: Option<&str>,
        headers: &[S],
        framing: Framing,
        body: Option<Bytes>,
        end: bool,
    ) -> Result<Sent, BridgeError> {
        // A whole response takes its entry now: one lock for what it reads and removes (the
        // handler's thread and the I/O thread both lock the map for every request).
        let whole = if end {
            Some(self.shared.take_in_stage(id, false)?)
        } else {
            None
        };
        let (http2, head_request) = match &whole {
            Some(pending) => (pending.http2, pending.head_request),
            None => self
                .shared
                .with(id, |p| (p.http2, p.head_request))
                .unwrap_or((false, false)),
        };
        let encoding = match framing.encoding {
            HeaderEncoding::Utf8 if http2 => HeaderEncoding::Latin1,
            other => other,
        };
        let mut response =
            build_response(status, reason, headers, encoding, ResponseBody::Full(None));
        // node's http2 sends no content on a 205 either (RFC 9110 §15.3.6); its http/1 does.
        let content_allowed = status_has_body(response.status())
            && !(http2 && response.status() == StatusCode::RESET_CONTENT);
        let no_body = head_request || !content_allowed;
        // Several values (an array, `2, 2`, `2, 3`) become one, or none when they disagree: a
        // list would let a body longer than one of them through (response smuggling).
        let conflicting_length = !single_content_length(response.headers_mut());
        let declared = declared_length(response.headers());
        if let Some(pending) = whole {
            let Stage::AwaitingHead(tx) = pending.stage else {
                unreachable!()
            };
            let connection = pending.close_connection;
            let body_len = body.as_ref().map_or(0, |b| b.len());
            self.shared
                .metrics
                .request_finished(status, body_len, pending.started.elapsed());
            let mut length_mismatch = false;
            *response.body_mut() = match (body.filter(|b| !b.is_empty()), declared) {
                // HEAD, 204, 304: nothing follows the head (node drops what was written). On
                // HTTP/2 a HEAD keeps the length a GET would have had (node's http2 does; its
                // http/1 sends none), unless the status allows no content: a length on a 204 is
                // a malformed response to HTTP/2 clients (node's client resets the stream).
                (body, declared) if no_body => {
                    if http2
                        && head_request
                        && declared.is_none()
                        && !framing.removed_length
                        && content_allowed
                    {
                        if let Some(b) = body {
                            response
                                .headers_mut()
                                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                        }
                    }
                    ResponseBody::Full(None)
                }
                (body, Some(announced)) if announced != body_len as u64 => {
                    length_mismatch = true;
                    // HTTP/1: the connection closes after this response (HTTP/2 has no
                    // `Connection`; a short stream there ends in a stream reset).
                    if !http2 {
                        response
                            .headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    match body {
                        // Cut to the announced length: the frame stays exact.
                        Some(b) if b.len() as u64 > announced => {
                            ResponseBody::Full(Some(b.slice(..announced as usize)))
                        }
                        // Short: sent as announced, hyper closes the connection at its end.
                        short => ResponseBody::short_of_length(short),
                    }
                }
                // No Content-Length of the server's own (node: chunked on HTTP/1.1).
                (body, None) if framing.removed_length => ResponseBody::without_length(body),
                (body, _) => ResponseBody::Full(body),
            };
            wake::send_soon(move || {
                let _ = tx.send((response, connection));
            });
            Ok(Sent {
                more: true,
                length_mismatch: length_mismatch || conflicting_length,
            })
        } else {
            let (writer, mut stream) = body::channel(
                self.shared.clone(),
                id,
                status,
                if no_body { Some(0) } else { declared },
            );
            // HTTP/1 framing sends nothing after such a head; hyper's HTTP/2 would send what is
            // written as DATA, which clients take for a malformed response (a stream reset).
            if http2 && no_body {
                stream.discard_data();
            }
            *response.body_mut() = ResponseBody::Stream(stream);
            let sent = self.shared.with(id, |p| {
                match std::mem::replace(&mut p.stage, Stage::Streaming(writer)) {
                    Stage::AwaitingHead(tx) => Ok(tx),
                    Stage::Streaming(old) => {
                        p.stage = Stage::Streaming(old);
                        Err(BridgeError::HeadersSent(id))
                    }
                }
            });
            let tx = sent.ok_or(BridgeError::Gone(id))??;
            if tx.is_closed() {
                self.shared.take(id);
                return Err(BridgeError::Gone(id));
            }
            wake::send_soon(move || {
                let _ = tx.send((response, None));
            });
            let more = match body {
                Some(chunk) if !chunk.is_empty() => self.write(id, chunk)?,
                _ => true,
            };
            Ok(Sent {
                more,
                length_mismatch: conflicting_length,
            })
        }
    }

    /// Queues a body chunk. Returns `false` when the queue is above the high-water mark; a
    /// [`BridgeEvent::Drain`] follows once it has emptied.
    pub fn write(&self, id: u32, chunk: Bytes) -> Result<bool, BridgeError> {
        self.shared
            .with(id, |p| match &p.stage {
                Stage::Streaming(w) => Ok(w.write(chunk)),
                Stage::AwaitingHead(_) => Err(BridgeError::HeadersNotSent(id)),
            })
            .ok_or(BridgeError::Gone(id))?
    }

    /// Ends a streamed response, optionally with a last chunk. Returns whether the bytes written
    /// disagree with the `Content-Length` the head announced (hyper sent no more than announced,
    /// and closes the connection when fewer arrived).
    pub fn end(&self, id: u32, chunk: Option<Bytes>) -> Result<bool, BridgeError> {
        let pending = self.shared.take_in_stage(id, true)?;
        let Stage::Streaming(w) = pending.stage else {
            unreachable!()
        };
        if let Some(c) = chunk.filter(|c| !c.is_empty()) {
            w.write(c);
        }
        self.shared.metrics.request_finished(
            w.status(),
            w.bytes_written(),
            pending.started.elapsed(),
        );
        let mismatch = w.length_mismatch();
        if w.overran_length() {
            if let Some(connection) = &pending.close_connection {
                connection.close_after_response();
            }
        }
        w.finish();
        Ok(mismatch)
    }

    /// Abandons a request from the handler side (node's `res.destroy()`): the connection is
    /// closed without a response if none was sent, and cut off if one is streaming. No `Closed`
    /// event follows.
    pub fn destroy(&self, id: u32) -> bool {
        match self.shared.take(id) {
            Some(Pending {
                stage: Stage::AwaitingHead(tx),
                ..
            }) => {
                self.shared.metrics.request_failed();
                let mut abort = Response::new(ResponseBody::Full(None));
                abort.extensions_mut().insert(AbortConnection);
                let _ = tx.send((abort, None));
                true
            }
            Some(Pending {
                stage: Stage::Streaming(w),
                ..
            }) => {
                self.shared.metrics.request_failed();
                w.abort();
                true
            }
            None => false,
        }
    }

    /// Asks for the next chunk of a streamed request body.
    pub fn pull_body(&self, id: u32) -> bool {
        let tx = self.shared.with(id, |p| p.pull.clone()).flatten();
        match tx {
            // A full channel means a pull is already outstanding; one is enough.
            Some(tx) => {
                let _ = tx.try_send(());
                true
            }
            None => false,
        }
    }

    /// Announces an accepted WebSocket upgrade to the handler (`choose_protocol`: asking it to
    /// choose the subprotocol), once the in-flight cap has room. `None` if the handler side is
    /// closing.
    pub async fn open_websocket(
        &self,
        mut head: RequestHead,
        choose_protocol: bool,
    ) -> Option<OpenedWebSocket> {
        let in_flight = self.admit().await?;
        let id = self.next_id();
        head.id = id;
        head.body = if choose_protocol {
            RequestBody::UpgradeChoosingProtocol
        } else {
            RequestBody::Upgrade
        };
        let (tx, rx) = futures_channel::mpsc::unbounded();
        let (messages, messages_rx) = message_queue();
        let (choice_tx, choice_rx) = if choose_protocol {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        self.shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                WsConnection {
                    tx,
                    messages,
                    progress: Default::default(),
                    protocol_choice: choice_tx,
                },
            );
        // Native trace mode: the upgrade request's id serves every message (koatty_trace §2.8).
        let trace = (self.shared.trace.load())
            .as_ref()
            .map(|t| t.request_trace(&head.headers, &head.url, true, false));
        if self.shared.sink.request(head, trace) {
            Some(OpenedWebSocket {
                id,
                outbound: rx,
                messages: messages_rx,
                protocol_choice: choice_rx,
                in_flight,
            })
        } else {
            self.shared
                .websockets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            None
        }
    }

    pub(crate) fn ws_progress(&self, id: u32) -> Arc<WsProgress> {
        self.shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|c| c.progress.clone())
            .unwrap_or_default()
    }

    /// A send's callback waits: the handler gets `WsWritten` once `at` bytes of what it sent are
    /// written (counted as `bufferedAmount` counts them). Returns the total written if they
    /// already are.
    pub fn ws_notify_when_written(&self, id: u32, at: u64) -> Result<Option<u64>, BridgeError> {
        self.with_websocket(id, |conn| Ok(conn.progress.notify_when_written(at)))
    }

    /// `f` on WebSocket connection `id`'s entry (under the map's lock); `Gone` without one.
    fn with_websocket<R>(
        &self,
        id: u32,
        f: impl FnOnce(&WsConnection) -> Result<R, BridgeError>,
    ) -> Result<R, BridgeError> {
        let map = self
            .shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f(map.get(&id).ok_or(BridgeError::Gone(id))?)
    }

    /// Queues a message, ping or pong; returns the bytes queued on the connection since it opened,
    /// these included: once that many are written, so are these ([`Bridge::ws_notify_when_written`]). Past
    /// `max_buffered` the connection is terminated instead and `Backpressure` returned — unless
    /// nothing else is queued: one message larger than the limit goes out alone (the limit is for
    /// a peer that does not read, not for big messages).
    pub fn ws_send(
        &self,
        id: u32,
        message: WsOutbound,
        max_buffered: usize,
    ) -> Result<u64, BridgeError> {
        let len = message.buffered_len();
        self.with_websocket(id, |conn| {
            let (before, position) = conn.progress.queued(len);
            if before + len > max_buffered && before > 0 {
                let _ = conn.tx.unbounded_send(WsOutbound::Terminate);
                return Err(BridgeError::Backpressure(id));
            }
            // Queued now, so that it lands before a close frame the writer queues in this turn or
            // fails now (`Gone`: ERR_WS_NOT_OPEN), never accepted and then dropped; only the wake
            // waits for the end of the turn.
            conn.messages
                .send_soon(message)
                .map_err(|_| BridgeError::Gone(id))?;
            Ok(position)
        })
    }

    pub fn ws_buffered_amount(&self, id: u32) -> usize {
        self.shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|c| c.progress.buffered())
            .unwrap_or(0)
    }

    /// The handler's subprotocol choice for an upgrade announced with `choose_protocol`.
    pub fn ws_select_protocol(&self, id: u32, choice: ProtocolChoice) -> Result<(), BridgeError> {
        let sender = self
            .shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
            .and_then(|c| c.protocol_choice.take())
            .ok_or(BridgeError::Gone(id))?;
        sender.send(choice).map_err(|_| BridgeError::Gone(id))
    }

    /// Sends a control request (close, terminate) to a WebSocket connection.
    pub fn ws_control(&self, id: u32, what: WsOutbound) -> Result<(), BridgeError> {
        self.with_websocket(id, |conn| queue_soon(&conn.tx, id, what))
    }

    /// Open WebSocket connections.
    pub fn websocket_count(&self) -> usize {
        self.shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A WebSocket connection ended: forget it and tell the handler.
    pub(crate) fn ws_closed(&self, id: u32, code: u16, reason: String) {
        let gone = self
            .shared
            .websockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let written = gone.map_or(0, |c| c.progress.written());
        self.shared.sink.event(
            id,
            BridgeEvent::WsClosed {
                code,
                reason,
                written,
            },
        );
    }

    /// The request body failed (too large, too slow, malformed): the handler's `req` gets `error`,
    /// and if the handler has not answered yet the client gets `status` and the connection closes.
    /// The entry is taken before the error reaches JavaScript, so a handler that answers its own
    /// status on `'error'` cannot overtake `status`. Returns false if the handler had answered.
    pub(crate) fn fail_request(&self, id: u32, status: StatusCode, error: String) -> bool {
        let taken = self.shared.take_in_stage(id, false);
        self.shared.sink.event(id, BridgeEvent::BodyError(error));
        let Ok(Pending {
            stage: Stage::AwaitingHead(tx),
            ..
        }) = taken
        else {
            return false;
        };
        self.shared.metrics.request_failed();
        let mut r = simple_response(status);
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        let _ = tx.send((r, None));
        // The handler's response object is done with too ('close'; the JS side forgets it).
        self.shared
            .sink
            .event(id, BridgeEvent::Closed(CloseReason::ClientGone));
        true
    }

    /// The client went away while its request was pending: forget it and tell the handler.
    pub(crate) fn abandon(&self, id: u32) {
        if self.shared.take(id).is_some() {
            self.shared.metrics.request_aborted();
            self.shared
                .sink
                .event(id, BridgeEvent::Closed(CloseReason::ClientGone));
        }
    }

    pub(crate) fn emit(&self, id: u32, event: BridgeEvent) {
        self.shared.sink.event(id, event);
    }
}

/// What a response to `respond_with` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// More body may be written without exceeding the high-water mark.
    pub more: bool,
    /// The handler's `Content-Length` disagreed with the whole body it gave.
    pub length_mismatch: bool,
}

/// How a response head is framed, as the handler left it.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub encoding: HeaderEncoding,
    /// The handler removed `Content-Length` (node's `removeHeader`): no length of the server's
    /// own, the body goes out chunked (HTTP/1.1).
    pub removed_length: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            encoding: HeaderEncoding::Utf8,
            removed_length: false,
        }
    }
}

/// Marks a "response" that is none: the handler destroyed the request before answering, and the
/// connection is to be closed without writing anything (HTTP/2: the stream is reset).
#[derive(Debug, Clone, Copy)]
pub struct AbortConnection;

impl std::fmt::Display for AbortConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the handler destroyed the request")
    }
}

impl std::error::Error for AbortConnection {}

/// Marks a "response" that is none: the request's HTTP/2 stream is reset with REFUSED_STREAM,
/// which tells the client it was not processed and may be sent again (grpc-js retries such a call
/// transparently, on another server when it has one; node's client refuses it as retryable).
#[derive(Debug, Clone, Copy)]
pub struct RefuseStream;

impl RefuseStream {
    /// A response carrying the mark (`body` is never sent).
    pub fn response<B>(body: B) -> http::Response<B> {
        let mut response = http::Response::new(body);
        response.extensions_mut().insert(RefuseStream);
        response
    }
}

/// Why hyper gets no response for a request (a service error): the connection is aborted
/// (HTTP/2: the stream reset with INTERNAL_ERROR), or the stream refused — hyper resets it with
/// the h2 reason it finds among the error's sources.
#[derive(Debug)]
pub enum Unanswered {
    Aborted,
    Refused(h2::Error),
}

impl Unanswered {
    /// The stream is reset with REFUSED_STREAM.
    pub fn refused() -> Self {
        Self::Refused(h2::Reason::REFUSED_STREAM.into())
    }

    /// What the mark in `response`'s extensions asks for, if it has one.
    pub fn marked<B>(response: &http::Response<B>) -> Option<Self> {
        let extensions = response.extensions();
        if extensions.get::<AbortConnection>().is_some() {
            Some(Self::Aborted)
        } else if extensions.get::<RefuseStream>().is_some() {
            Some(Self::refused())
        } else {
            None
        }
    }
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Aborted => AbortConnection.fmt(f),
            Self::Refused(_) => f.write_str("refused: the server stopped taking new work"),
        }
    }
}

impl std::error::Error for Unanswered {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Aborted => None,
            Self::Refused(reason) => Some(reason),
        }
    }
}

/// Whether a response with this status carries a body (not 1xx, 204, 304).
fn status_has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// The `Content-Length` the handler set, when it is one valid number.
/// Leaves at most one `Content-Length`: the handler's values (several headers, or a comma list)
/// collapse to one when they all agree; when they disagree or do not parse, none is left (the
/// body is then framed without it) and `false` is returned.
fn single_content_length(headers: &mut HeaderMap) -> bool {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return true;
    };
    let single = values.next().is_none() && !first.as_bytes().contains(&b',');
    if single {
        return true;
    }
    let mut agreed: Option<u64> = None;
    let mut valid = true;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or(",").split(',') {
            match (part.trim().parse::<u64>(), agreed) {
                (Ok(n), None) => agreed = Some(n),
                (Ok(n), Some(a)) if n == a => {}
                _ => valid = false,
            }
        }
    }
    headers.remove(http::header::CONTENT_LENGTH);
    match agreed.filter(|_| valid) {
        Some(n) => {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            true
        }
        None => false,
    }
}

/// The `Content-Length` the head announces (one value: see [`single_content_length`]).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A response with the status's reason phrase as a plain-text body.
pub fn simple_response(status: StatusCode) -> Response<ResponseBody> {
    let text = status.canonical_reason().unwrap_or("Error");
    let mut r = Response::new(ResponseBody::full(Some(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// How header values (JavaScript strings, every char ≤ 0xFF after Node's checks) become bytes.
/// Node's `http` writes the head as latin1, except when it goes out in one write with a string
/// body chunk: then head and chunk are UTF-8. Only non-ASCII values see the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEncoding {
    Latin1,
    Utf8,
}

impl HeaderEncoding {
    /// How Node's `http` would encode a head's header values: UTF-8 when the head goes out in one
    /// write with a string chunk — `end(nonEmptyString)`, a string `write` on a response that is
    /// not chunked, `write('')`/`flushHeaders()` — else latin1. `flat` is `name\0value\0…`;
    /// `text` is the chunk sent with the head when it is a string. `without_own_length`: the
    /// server adds no `Content-Length` (a head `writeHead` fixed, or one the handler removed), so
    /// without the handler's own the body is chunked and its first write is the chunk size.
    pub fn as_node_would(
        flat: &str,
        text: Option<&str>,
        end: bool,
        without_own_length: bool,
    ) -> HeaderEncoding {
        // ASCII values are the same bytes either way; latin1 spares the HTTP/2 check.
        let Some(text) = text.filter(|_| !flat.is_ascii()) else {
            return HeaderEncoding::Latin1;
        };
        let mut has_length = false;
        let mut chunked = false;
        let mut parts = flat.split('\0');
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if name.eq_ignore_ascii_case("content-length") {
                has_length = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked |= value.to_ascii_lowercase().contains("chunked");
            }
        }
        chunked |= without_own_length && !has_length;
        let utf8 = if end {
            !text.is_empty() && !chunked
        } else {
            text.is_empty() || (has_length && !chunked)
        };
        if utf8 {
            HeaderEncoding::Utf8
        } else {
            HeaderEncoding::Latin1
        }
    }
}

/// A response's custom reason phrase (node's `statusMessage`), for the protocol to write (HTTP/1;
/// HTTP/2 has none).
#[derive(Debug, Clone)]
pub struct StatusReason(pub Bytes);

fn build_response<S: AsRef<str>>(
    status: u16,
    reason: Option<&str>,
    flat_headers: &[S],
    encoding: HeaderEncoding,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *r.status_mut() = status;
    *r.headers_mut() = header_map_encoded(flat_headers, encoding);
    // A custom reason phrase (node's statusMessage); HTTP/1 only, HTTP/2 has none. None is
    // node's phrase for the code (`STATUS_CODES`), where it differs from hyper's; a code without
    // a standard phrase goes out as `<code> unknown`, as node writes it (hyper would write
    // `<none>`).
    let reason = reason
        .or_else(|| node_phrase(status))
        .or(status.canonical_reason().is_none().then_some("unknown"));
    if let Some(reason) = reason.filter(|r| Some(*r) != status.canonical_reason()) {
        r.extensions_mut()
            .insert(StatusReason(Bytes::copy_from_slice(reason.as_bytes())));
    }
    r
}

/// node's `STATUS_CODES` phrase where the http crate's canonical one differs (or has none).
fn node_phrase(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        203 => Some("Non-Authoritative Information"),
        418 => Some("I'm a Teapot"),
        509 => Some("Bandwidth Limit Exceeded"),
        _ => None,
    }
}

/// Converts `[name, value, …]` into a header map. Names and values were validated in JavaScript
/// (node's own validators); anything still invalid is skipped rather than sent.
pub fn header_map<S: AsRef<str>>(flat: &[S]) -> HeaderMap {
    header_map_encoded(flat, HeaderEncoding::Utf8)
}

fn header_map_encoded<S: AsRef<str>>(flat: &[S], encoding: HeaderEncoding) -> HeaderMap {
    // Room for the two a response usually gains later (hyper's HTTP/2 `content-length` and
    // `date`): sized to the handler's alone, the map grew and rehashed for them on every HTTP/2
    // response (`perf`, session 14).
    let mut map = HeaderMap::with_capacity(flat.len() / 2 + 2);
    for pair in flat.chunks_exact(2) {
        let text = pair[1].as_ref();
        let value = if encoding == HeaderEncoding::Latin1 && !text.is_ascii() {
            latin1_bytes(text).and_then(|b| HeaderValue::from_bytes(&b).ok())
        } else {
            HeaderValue::from_bytes(text.as_bytes()).ok()
        };
        if let (Ok(name), Some(value)) =
            (HeaderName::from_bytes(pair[0].as_ref().as_bytes()), value)
        {
            map.append(name, value);
        }
    }
    map
}

/// One byte per char, or `None` if a char is above 0xFF (Node rejects those in header values).
fn latin1_bytes(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// Turns a header map into the flat list handed to JavaScript.
pub fn flat_headers(map: &HeaderMap) -> FlatHeaders {
    let mut out = FlatHeaders::with_capacity(map_text_len(map));
    out.extend_from_map(map);
    out
}

/// About the bytes `map` takes as flat text (exact for ASCII values).
pub(crate) fn map_text_len(map: &HeaderMap) -> usize {
    map.iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 2)
        .sum()
}

/// Request headers as JavaScript receives them: `name\0value\0name\0value…` in one string (HTTP
/// forbids NUL in names and values), names lower-case, in arrival order. One allocation per
/// request where a `String` per name and per value cost two per header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlatHeaders(String);

impl FlatHeaders {
    pub fn with_capacity(bytes: usize) -> Self {
        FlatHeaders(String::with_capacity(bytes))
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.start_pair(name);
        self.0.push_str(value);
    }

    /// A value as Node's parsers read it: one character per byte (latin1), so `0xE9` is `é` and
    /// UTF-8 bytes show as their latin1 characters, exactly as in `req.headers` under node:http.
    pub fn push_latin1(&mut self, name: &str, value: &[u8]) {
        self.start_pair(name);
        match std::str::from_utf8(value) {
            Ok(ascii) if value.is_ascii() => self.0.push_str(ascii),
            _ => self.0.extend(value.iter().map(|&b| char::from(b))),
        }
    }

    /// Every field of `map`, in its order.
    pub fn extend_from_map(&mut self, map: &HeaderMap) {
        self.extend_where(map, |_| true);
    }

    /// The fields of an HTTP/2 request: those whose value starts or ends with a space or tab
    /// are left out, as node's http2 (nghttp2) leaves them out (RFC 9113 §8.2.1 forbids them).
    pub fn extend_from_h2_map(&mut self, map: &HeaderMap) {
        let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        self.extend_where(map, |value| !edge(value.first()) && !edge(value.last()));
    }

    /// The fields of `map` whose value `keep` accepts, in its order.
    fn extend_where(&mut self, map: &HeaderMap, keep: impl Fn(&[u8]) -> bool) {
        for (name, value) in map {
            if keep(value.as_bytes()) {
                self.push_latin1(name.as_str(), value.as_bytes());
            }
        }
    }

    fn start_pair(&mut self, name: &str) {
        if !self.0.is_empty() {
            self.0.push('\0');
        }
        self.0.push_str(name);
        self.0.push('\0');
    }

    /// The `(name, value)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = (!self.0.is_empty())
            .then(|| self.0.split('\0'))
            .into_iter()
            .flatten();
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for FlatHeaders {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut out = FlatHeaders::default();
        for (name, value) in pairs {
            out.push(name, value);
        }
        out
    }
}

#[cfg(test)]
mod tests;
