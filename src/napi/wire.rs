//! What crosses into JavaScript per request and per event, and the numbers both sides read.
//! The enums are exported to JavaScript (`js/` imports them from the binding instead of
//! re-declaring them).

use super::delivery::{Crossing, Delivery};
use bytes::Bytes;
use koatty_serve_core::bridge::{
    BridgeError, BridgeEvent, ClientError, RequestBody, RequestHead, RequestSink,
};
use koatty_serve_core::tls::PeerInfo;
use koatty_serve_core::trace::RequestTrace;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::Cell;
use std::sync::{Arc, RwLock};
use tokio::sync::OwnedSemaphorePermit;

/// Request flags; bits 0–7 hold the HTTP version (10, 11, 20).
#[napi]
pub enum RequestFlag {
    /// TLS.
    Encrypted = 0x100,
    /// The body is streamed (pulled with `pullBody`), not inline.
    StreamedBody = 0x200,
    /// The client certificate was verified (`socket.authorized`).
    Authorized = 0x400,
    /// A WebSocket upgrade: the connection's events follow.
    WebSocket = 0x800,
    /// A gRPC call.
    Grpc = 0x1000,
    /// Native trace mode: the `http_timeout` timer runs natively.
    TraceTimer = 0x2000,
    /// A WebSocket upgrade waiting for `wsSelectProtocol` (the server has `handleProtocols`).
    WsChooseProtocol = 0x4000,
}

/// Event kinds (`onEvent(id, kind, chunk, message)`).
#[napi]
pub enum EventKind {
    BodyChunk = 1,
    BodyEnd = 2,
    BodyError = 3,
    Drain = 4,
    TraceTimeout = 5,
    /// `Closed + reason` (1 client gone, 2 timed out, 3 rejected).
    Closed = 10,
    ClosedLast = 13,
    WsText = 20,
    WsBinary = 21,
    WsPong = 22,
    /// message: `"<code> <bytes of the handler's written> <reason>"`.
    WsClosed = 23,
    /// The peer's close frame arrived, or the peer failed the protocol (after every message before
    /// it): answer with `wsCloseReply`.
    WsPeerClosing = 24,
    /// What the handler sent is written up to where a send's callback waits; message: the total
    /// bytes written.
    WsWritten = 25,
    GrpcMessage = 30,
    GrpcInputEnd = 31,
    GrpcInputError = 32,
    /// message: the cancel reason (1 client, 2 deadline, 3 shutdown).
    GrpcCancelled = 33,
    GrpcDrain = 34,
    /// A request head answered natively with an error (id 0); message:
    /// `"<code>\0<remote address>\0<remote port>\0<message>"`.
    ClientError = 40,
}

/// What the hot-path calls (`respond`, `write`, `end`, `grpcWrite`, `wsSend`) return; cheaper
/// than exceptions per request.
#[napi]
pub enum SendResult {
    /// Sent; more may follow without exceeding the high-water mark.
    Sent = 1,
    /// Queued; wait for `drain`.
    Full = 0,
    /// Sent, but the handler's `Content-Length` disagreed with the body (sent no more than
    /// announced; the connection closes).
    LengthMismatch = 2,
    Gone = -1,
    HeadersSent = -2,
    HeadersNotSent = -3,
    /// Too much queued for a peer that does not read: the connection was terminated.
    Backpressure = -4,
    /// A ping/pong payload over 125 bytes.
    ControlPayloadTooLarge = -5,
}

/// `respond`'s `framing` bits.
#[napi]
pub enum FramingFlag {
    /// The handler removed `Content-Length` (node's `_removedContLen`).
    RemovedContentLength = 1,
}

pub fn send_result(r: std::result::Result<bool, BridgeError>) -> i32 {
    (match r {
        Ok(true) => SendResult::Sent,
        Ok(false) => SendResult::Full,
        Err(e) => error_result(e),
    }) as i32
}

pub fn error_result(e: BridgeError) -> SendResult {
    match e {
        BridgeError::Gone(_) => SendResult::Gone,
        BridgeError::HeadersSent(_) => SendResult::HeadersSent,
        BridgeError::HeadersNotSent(_) => SendResult::HeadersNotSent,
        BridgeError::Backpressure(_) => SendResult::Backpressure,
    }
}

/// A payload given as a Buffer (a ping's or pong's). The Buffer is borrowed for the call only
/// (`BufferSlice`: no reference is created, as a `Buffer` parameter would) and copied once.
pub fn bytes_of(body: Option<BufferSlice<'_>>) -> Option<Bytes> {
    chunk_bytes(body.map(Chunk::Buffer), None, None)
}

/// A chunk an answering call gives (`respond`, `write`, `end`, `wsSend`): a Buffer, or the length
/// of the bytes JavaScript copied to the start of its server's staging area (`js/wire.js`
/// `staged`). Small chunks are staged because reading a Buffer's bytes through Node-API
/// (`napi_get_buffer_info`) makes V8 move a typed array that lives in its heap (up to 64 bytes,
/// what node gives small chunks, and what an echo sends back) out to a `malloc`ed backing store:
/// 15 % of the JS thread under the WebSocket echo load (`perf`, session 14).
pub enum Chunk<'a> {
    Buffer(BufferSlice<'a>),
    Staged(u32),
}

impl FromNapiValue for Chunk<'_> {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut kind = 0;
        check_status!(unsafe { sys::napi_typeof(env, value, &mut kind) })?;
        Ok(if kind == sys::ValueType::napi_number {
            Chunk::Staged(unsafe { u32::from_napi_value(env, value) }?)
        } else {
            Chunk::Buffer(unsafe { BufferSlice::from_napi_value(env, value) }?)
        })
    }
}

impl TypeName for Chunk<'_> {
    fn type_name() -> &'static str {
        "Buffer | number"
    }

    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

/// A chunk given as a [`Chunk`] or as a string, copied once (from the Buffer or the staging area
/// `staged`); a staged length beyond the area is refused with `None`, which JavaScript never asks.
pub fn chunk_bytes(
    body: Option<Chunk<'_>>,
    text: Option<String>,
    staged: Option<StagedView>,
) -> Option<Bytes> {
    match (body, text) {
        (Some(Chunk::Buffer(b)), _) => Some(Bytes::copy_from_slice(&b)),
        (Some(Chunk::Staged(len)), _) => staged.and_then(|area| area.bytes(len as usize)),
        (None, Some(t)) => Some(Bytes::from(t)),
        (None, None) => None,
    }
}

/// Payloads up to this size reach JavaScript copied into memory V8 owns; larger ones are wrapped.
const COPY_LIMIT: usize = 16 * 1024;

/// Chunks shorter than this are staged (below), where copying out in JavaScript costs less than a
/// Buffer node makes from C++ (≈ 90 ns against ≈ 800 ns up to 64 bytes, about even at 4 KiB).
const STAGED_LIMIT: usize = 4 * 1024;

thread_local! {
    /// The JS thread's staging area while one call of `onRequest`/`onEvent` is being made.
    static STAGE: Cell<(*mut u8, usize)> = const { Cell::new((std::ptr::null_mut(), 0)) };
}

/// Memory JavaScript shares for staging chunks (`js/bridge.js`): a Buffer of its own, kept by
/// whoever holds this.
pub struct StagingArea {
    _buffer: Buffer,
    start: *mut u8,
    len: usize,
}

// SAFETY: the area is only written on the JS thread (`with_staging`); the Buffer's reference is
// dropped from any thread as napi-rs allows.
unsafe impl Send for StagingArea {}
unsafe impl Sync for StagingArea {}

/// A server's staging area as an answering call reads it, on the JS thread: valid while the
/// server's slot (src/napi/answers.rs) holds the area.
#[derive(Clone, Copy)]
pub struct StagedView {
    start: *const u8,
    len: usize,
}

impl StagedView {
    /// A copy of the first `len` bytes, or `None` beyond the area.
    fn bytes(self, len: usize) -> Option<Bytes> {
        debug_assert!(
            len <= self.len,
            "JavaScript staged more than the area holds"
        );
        // SAFETY: `len` bytes of the area's live Buffer, written by JavaScript on this thread.
        (len <= self.len)
            .then(|| Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(self.start, len) }))
    }
}

impl StagingArea {
    /// Where answering calls read what JavaScript staged.
    pub fn view(&self) -> StagedView {
        StagedView {
            start: self.start,
            len: self.len,
        }
    }

    pub fn new(mut buffer: Buffer) -> Self {
        let start = buffer.as_mut_ptr();
        let len = buffer.len();
        StagingArea {
            _buffer: buffer,
            start,
            len,
        }
    }

    /// On the JS thread: makes `call`, whose chunk (if small) is copied into this area and passed
    /// as its length. JavaScript copies it out before anything else runs (`unstage`).
    pub fn with_staging<R>(&self, call: impl FnOnce() -> R) -> R {
        struct Unstage;
        impl Drop for Unstage {
            fn drop(&mut self) {
                STAGE.set((std::ptr::null_mut(), 0));
            }
        }
        STAGE.set((self.start, self.len));
        let _unstage = Unstage;
        call()
    }
}

/// Bytes handed to JavaScript as a Buffer, or staged (`StagingArea`): their length, for
/// JavaScript to copy them out of the staging area into a Buffer of their own. Otherwise a small
/// payload is copied into a Buffer V8 allocates: one memcpy, where wrapping Rust memory costs a
/// finalizer, a global handle and external-memory accounting per Buffer (the larger share of a
/// small WebSocket message's cost on the JS thread). A large one is handed over without a copy
/// when the bytes are not shared.
pub struct JsBytes(pub Bytes);

impl ToNapiValue for JsBytes {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let bytes = val.0;
        // One chunk per call: the area is taken.
        let (area, capacity) = STAGE.replace((std::ptr::null_mut(), 0));
        let len = bytes.len();
        if !area.is_null() && len > 0 && len < STAGED_LIMIT && len <= capacity {
            // SAFETY: the area is `capacity` bytes of a live Buffer, written on the JS thread only.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, len) };
            return unsafe { u32::to_napi_value(env, len as u32) };
        }
        if bytes.is_empty() || bytes.len() > COPY_LIMIT {
            return unsafe { Buffer::to_napi_value(env, Buffer::from(Vec::from(bytes))) };
        }
        let mut data = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        check_status!(
            unsafe {
                sys::napi_create_buffer_copy(
                    env,
                    bytes.len(),
                    bytes.as_ptr().cast(),
                    &mut data,
                    &mut buffer,
                )
            },
            "Failed to copy bytes into a Buffer"
        )?;
        Ok(buffer)
    }
}

/// Text a connection's requests share (its remote IP), handed to JavaScript as a string without a
/// `String` made per request.
pub struct JsSharedText(pub Arc<str>);

impl ToNapiValue for JsSharedText {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe { <&str>::to_napi_value(env, &val.0) }
    }
}

/// A TLS connection's details as JSON (built once per connection, on first use), handed to
/// JavaScript as a string.
pub struct JsPeerDetails(pub Arc<PeerInfo>);

impl ToNapiValue for JsPeerDetails {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe { <&str>::to_napi_value(env, val.0.to_json()) }
    }
}

/// (id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetailsJson, traceId)
/// headers: `name\0value\0name\0value…` — one string instead of one per name and value, which is
/// what crossing into JavaScript costs most (HTTP forbids NUL in names and values).
pub type RequestArgs = FnArgs<(
    u32,
    String,
    String,
    String,
    Option<JsBytes>,
    u32,
    JsSharedText,
    u32,
    Option<JsPeerDetails>,
    Option<String>,
)>;
/// One event for JavaScript: `onEvent(id, kind, chunk, message)`. A message's permit (its share
/// of the connection's receive budget) is let go as its arguments are made, on the JS thread just
/// before the handler runs: the message has left the queue the budget bounds. Releasing it there
/// needs no callback after the call (`call_with_return_value` boxed one per message and converted
/// the handler's return value for it).
pub struct EventArgs {
    id: u32,
    kind: u32,
    chunk: Option<JsBytes>,
    message: Option<String>,
    permit: Option<OwnedSemaphorePermit>,
}

impl EventArgs {
    /// A message the handler may answer (a WebSocket or gRPC message, a client stream's end).
    pub fn awaits_answer(&self) -> bool {
        const KINDS: [u32; 4] = [
            EventKind::WsText as u32,
            EventKind::WsBinary as u32,
            EventKind::GrpcMessage as u32,
            EventKind::GrpcInputEnd as u32,
        ];
        KINDS.contains(&self.kind)
    }

    fn new(id: u32, kind: u32, chunk: Option<JsBytes>, message: Option<String>) -> Self {
        EventArgs {
            id,
            kind,
            chunk,
            message,
            permit: None,
        }
    }
}

impl JsValuesTupleIntoVec for EventArgs {
    fn into_vec(self, env: sys::napi_env) -> Result<Vec<sys::napi_value>> {
        let EventArgs {
            id,
            kind,
            chunk,
            message,
            permit,
        } = self;
        // SAFETY: called by napi on the JS thread with its env, inside the call's handle scope.
        let values = unsafe {
            vec![
                u32::to_napi_value(env, id)?,
                u32::to_napi_value(env, kind)?,
                Option::<JsBytes>::to_napi_value(env, chunk)?,
                Option::<String>::to_napi_value(env, message)?,
            ]
        };
        drop(permit);
        Ok(values)
    }
}

fn event_kind(e: &BridgeEvent) -> u32 {
    (match e {
        BridgeEvent::BodyChunk(_) => EventKind::BodyChunk,
        BridgeEvent::BodyEnd => EventKind::BodyEnd,
        BridgeEvent::BodyError(_) => EventKind::BodyError,
        BridgeEvent::Drain => EventKind::Drain,
        BridgeEvent::TraceTimeout => EventKind::TraceTimeout,
        BridgeEvent::Closed(reason) => return EventKind::Closed as u32 + *reason as u32,
        BridgeEvent::WsMessage { binary: false, .. } => EventKind::WsText,
        BridgeEvent::WsMessage { binary: true, .. } => EventKind::WsBinary,
        BridgeEvent::WsPong { .. } => EventKind::WsPong,
        BridgeEvent::WsClosed { .. } => EventKind::WsClosed,
        BridgeEvent::WsPeerClosing => EventKind::WsPeerClosing,
        BridgeEvent::WsWritten(_) => EventKind::WsWritten,
        BridgeEvent::GrpcMessage { .. } => EventKind::GrpcMessage,
        BridgeEvent::GrpcInputEnd => EventKind::GrpcInputEnd,
        BridgeEvent::GrpcInputError(_) => EventKind::GrpcInputError,
        BridgeEvent::GrpcCancelled(_) => EventKind::GrpcCancelled,
        BridgeEvent::GrpcDrain => EventKind::GrpcDrain,
    }) as u32
}

/// Delivers bridge calls to JavaScript. Holds its delivery only while listening, so an idle process
/// can exit.
#[derive(Default)]
pub struct JsSink {
    delivery: RwLock<Option<Arc<Delivery>>>,
}

impl JsSink {
    /// Where requests and events go from now on (`None`: nowhere). A previous delivery is
    /// released: what it has queued is still delivered.
    pub fn set(&self, delivery: Option<Arc<Delivery>>) {
        let previous = std::mem::replace(
            &mut *self.delivery.write().unwrap_or_else(|e| e.into_inner()),
            delivery,
        );
        if let Some(previous) = previous {
            previous.release();
        }
    }

    /// Whether the callbacks keep the event loop alive (node's `server.ref()`/`unref()`).
    pub fn set_referenced(&self, env: &Env, referenced: bool) {
        if let Some(delivery) = self.delivery().as_ref() {
            delivery.set_referenced(env, referenced);
        }
    }

    fn delivery(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Delivery>>> {
        self.delivery.read().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, crossing: Crossing) -> bool {
        self.delivery()
            .as_ref()
            .is_some_and(|delivery| delivery.send(crossing))
    }
}

/// A server collected without `release` (its host gone with it) lets the event loop end.
impl Drop for JsSink {
    fn drop(&mut self) {
        self.set(None);
    }
}

impl RequestSink for JsSink {
    fn request(&self, head: RequestHead, trace: Option<RequestTrace>) -> bool {
        let mut flags = head.http_version;
        let trace_id = trace.and_then(|t| {
            if t.timer_armed {
                flags |= RequestFlag::TraceTimer as u32;
            }
            t.id
        });
        if head.encrypted {
            flags |= RequestFlag::Encrypted as u32;
        }
        if head.peer.as_ref().is_some_and(|p| p.authorized) {
            flags |= RequestFlag::Authorized as u32;
        }
        let body = match head.body {
            RequestBody::Empty => None,
            RequestBody::Inline(b) => Some(JsBytes(b)),
            RequestBody::Streamed => {
                flags |= RequestFlag::StreamedBody as u32;
                None
            }
            RequestBody::Upgrade => {
                flags |= RequestFlag::WebSocket as u32;
                None
            }
            RequestBody::UpgradeChoosingProtocol => {
                flags |= RequestFlag::WebSocket as u32 | RequestFlag::WsChooseProtocol as u32;
                None
            }
            RequestBody::GrpcCall => {
                flags |= RequestFlag::Grpc as u32;
                None
            }
            // The request message; its presence says the client is done sending.
            RequestBody::GrpcCallWhole(message) => {
                flags |= RequestFlag::Grpc as u32;
                Some(JsBytes(message))
            }
        };
        let args = (
            head.id,
            head.method,
            head.url,
            head.headers.into_string(),
            body,
            flags,
            JsSharedText(head.remote_ip),
            head.remote.port() as u32,
            head.peer.map(JsPeerDetails),
            trace_id,
        );
        self.send(Crossing::Request(args.into()))
    }

    fn client_error(&self, error: ClientError) {
        let message = format!(
            "{}\0{}\0{}\0{}",
            error.code,
            error.remote.ip().to_canonical(),
            error.remote.port(),
            error.message
        );
        self.send(Crossing::Event(EventArgs::new(
            0,
            EventKind::ClientError as u32,
            None,
            Some(message),
        )));
    }

    fn event(&self, id: u32, event: BridgeEvent) {
        let kind = event_kind(&event);
        let (chunk, message) = match event {
            BridgeEvent::BodyChunk(b) => (Some(JsBytes(b)), None),
            BridgeEvent::BodyError(m) => (None, Some(m)),
            BridgeEvent::WsClosed {
                code,
                reason,
                written,
            } => (None, Some(format!("{code} {written} {reason}"))),
            BridgeEvent::WsWritten(total) => (None, Some(total.to_string())),
            BridgeEvent::GrpcInputError(m) => (None, Some(m)),
            BridgeEvent::GrpcCancelled(reason) => (None, Some((reason as u32).to_string())),
            BridgeEvent::WsMessage { data, permit, .. }
            | BridgeEvent::WsPong { data, permit }
            | BridgeEvent::GrpcMessage { data, permit } => {
                let args = EventArgs {
                    permit,
                    ..EventArgs::new(id, kind, Some(JsBytes(data)), None)
                };
                self.send(Crossing::Event(args));
                return;
            }
            _ => (None, None),
        };
        self.send(Crossing::Event(EventArgs::new(id, kind, chunk, message)));
    }
}
