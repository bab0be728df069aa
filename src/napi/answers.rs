//! The calls JavaScript makes for every request, message or gRPC call it answers, as free
//! functions on a server's handle rather than methods of `NativeServer`. A `#[napi]` method
//! unwraps its receiver on each call (`napi_unwrap`, a type-tag check, a native-borrow
//! registration and its release): ≈ 5 % of the JS thread per request under a bare handler's load
//! (`perf`, session 9). A handle is an index into this thread's table of servers.

use super::wire::{
    chunk_bytes, error_result, send_result, Chunk, FramingFlag, SendResult, StagedView, StagingArea,
};
use koatty_serve_core::bridge::grpc::CallStatus;
use koatty_serve_core::bridge::{deferring_wakes, Framing, HeaderEncoding, WsOutbound};
use koatty_serve_core::host::{Host, WsSendError};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::RefCell;
use std::sync::Arc;

/// grpc-js's `WriteFlags.NoCompress`: a response message goes out uncompressed.
const WRITE_FLAG_NO_COMPRESS: u32 = 2;

/// Handles are `generation << SLOT_BITS | slot`: a slot is reused once its server is gone, with a
/// new generation, so a stale handle finds nothing rather than another server.
const SLOT_BITS: u32 = 16;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

#[derive(Default)]
struct Servers {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    host: Option<Arc<Host>>,
    /// Where JavaScript stages the small chunks it answers with (set by `connect`).
    staging: Option<Arc<StagingArea>>,
}

thread_local! {
    /// The servers made on this JavaScript thread (each Node.js thread has its own).
    static SERVERS: RefCell<Servers> = RefCell::new(Servers::default());
}

/// Makes `host` reachable by the returned handle. `None` when 65,536 servers are alive at once.
pub(super) fn register(host: Arc<Host>) -> Option<u32> {
    SERVERS.with(|s| {
        let mut s = s.borrow_mut();
        let slot = match s.free.pop() {
            Some(slot) => slot,
            None if s.slots.len() <= SLOT_MASK as usize => {
                s.slots.push(Slot::default());
                (s.slots.len() - 1) as u32
            }
            None => return None,
        };
        let entry = &mut s.slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1) & (u32::MAX >> SLOT_BITS);
        entry.host = Some(host);
        Some(entry.generation << SLOT_BITS | slot)
    })
}

/// Where the server behind `handle` reads staged chunks (its delivery's staging area).
pub(super) fn set_staging(handle: u32, staging: Arc<StagingArea>) {
    SERVERS.with(|s| {
        if let Some(entry) = s.borrow_mut().slots.get_mut((handle & SLOT_MASK) as usize) {
            if entry.generation == handle >> SLOT_BITS && entry.host.is_some() {
                entry.staging = Some(staging);
            }
        }
    });
}

/// The server is gone (its JavaScript object was collected): its handle finds nothing from now on.
pub(super) fn unregister(handle: u32) {
    // At the thread's exit the table may be gone already.
    let _ = SERVERS.try_with(|s| {
        let mut s = s.borrow_mut();
        let slot = handle & SLOT_MASK;
        if let Some(entry) = s.slots.get_mut(slot as usize) {
            if entry.generation == handle >> SLOT_BITS && entry.host.take().is_some() {
                entry.staging = None;
                s.free.push(slot);
            }
        }
    });
}

thread_local! {
    /// Answering calls made on this thread so far (see [`answers_made`]).
    static ANSWERS_MADE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many answering calls (`respond`, `wsSend`, `grpcReply`, …) this JavaScript thread has made:
/// the delivery tells by it whether a request's handler answered at once or will answer from a
/// later microtask (src/napi/delivery.rs).
pub(super) fn answers_made() -> u32 {
    ANSWERS_MADE.with(|n| n.get())
}

/// The server behind `handle`, for an answering call (counted).
fn host(handle: u32) -> Option<Arc<Host>> {
    served(handle).map(|(host, _)| host)
}

/// The server behind `handle` and where its small chunks are staged, for an answering call
/// (counted).
fn served(handle: u32) -> Option<(Arc<Host>, Option<StagedView>)> {
    ANSWERS_MADE.with(|n| n.set(n.get().wrapping_add(1)));
    SERVERS.with(|s| {
        let s = s.borrow();
        let entry = s.slots.get((handle & SLOT_MASK) as usize)?;
        if entry.generation != handle >> SLOT_BITS {
            return None;
        }
        let host = entry.host.clone()?;
        Some((host, entry.staging.as_ref().map(|area| area.view())))
    })
}

const GONE: i32 = SendResult::Gone as i32;

/// Answers a request: status, reason (`undefined`: node's phrase for the code), headers
/// (`name\0value\0…`, as requests arrive), with the whole body when `end`. Returns a
/// `SendResult`.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn respond(
    server: u32,
    id: u32,
    status: u32,
    reason: Option<String>,
    headers: String,
    #[napi(ts_arg_type = "Buffer | number | undefined | null")] body: Option<Chunk<'_>>,
    text: Option<String>,
    end: bool,
    framing: u32,
) -> i32 {
    let Some((host, staged)) = served(server) else {
        return GONE;
    };
    let removed_length = framing & FramingFlag::RemovedContentLength as u32 != 0;
    let encoding = HeaderEncoding::as_node_would(&headers, text.as_deref(), end, removed_length);
    let headers: Vec<&str> = if headers.is_empty() {
        Vec::new()
    } else {
        headers.split('\0').collect()
    };
    let framing = Framing {
        encoding,
        removed_length,
    };
    // js/response.js validated the code (100–999, as node's writeHead); it also schedules
    // `flushDeferredWakes` for the end of this turn.
    let sent = deferring_wakes(|| {
        host.bridge().respond_with(
            id,
            status.min(999) as u16,
            reason.as_deref(),
            &headers,
            framing,
            chunk_bytes(body, text, staged),
            end,
        )
    });
    match sent {
        Ok(sent) if sent.length_mismatch => SendResult::LengthMismatch as i32,
        other => send_result(other.map(|sent| sent.more)),
    }
}

/// A chunk of a response whose head went out (`res.write`). Returns a `SendResult`.
#[napi]
pub fn write(
    server: u32,
    id: u32,
    #[napi(ts_arg_type = "Buffer | number | undefined | null")] body: Option<Chunk<'_>>,
    text: Option<String>,
) -> i32 {
    let Some((host, staged)) = served(server) else {
        return GONE;
    };
    match chunk_bytes(body, text, staged) {
        Some(b) => send_result(host.bridge().write(id, b)),
        None => SendResult::Sent as i32,
    }
}

/// The end of a response whose head went out, with a last chunk (`res.end`).
#[napi]
pub fn end(
    server: u32,
    id: u32,
    #[napi(ts_arg_type = "Buffer | number | undefined | null")] body: Option<Chunk<'_>>,
    text: Option<String>,
) -> i32 {
    let Some((host, staged)) = served(server) else {
        return GONE;
    };
    match host.bridge().end(id, chunk_bytes(body, text, staged)) {
        Ok(true) => SendResult::LengthMismatch as i32,
        other => send_result(other.map(|_| true)),
    }
}

/// Queues a WebSocket message or control frame: the bytes now queued (`bufferedAmount`), or a
/// negative `SendResult`.
pub(super) fn ws_queue(host: &Host, id: u32, message: WsOutbound) -> f64 {
    // Held until the end of the turn, as every answer (js/wakes.js flushes).
    match deferring_wakes(|| host.ws_send(id, message)) {
        Ok(queued) => queued as f64,
        Err(WsSendError::ControlPayloadTooLarge) => {
            SendResult::ControlPayloadTooLarge as i32 as f64
        }
        Err(WsSendError::Bridge(e)) => error_result(e) as i32 as f64,
    }
}

/// Sends a WebSocket message. Returns where it ends among the bytes queued on the connection
/// since it opened (its callback waits for that many to be written: `wsNotifyWhenWritten`), or a
/// negative `SendResult` (`Gone`, `Backpressure`: terminated for exceeding its buffer limit).
#[napi]
pub fn ws_send(
    server: u32,
    id: u32,
    #[napi(ts_arg_type = "Buffer | number | undefined | null")] body: Option<Chunk<'_>>,
    text: Option<String>,
    binary: bool,
) -> f64 {
    let Some((host, staged)) = served(server) else {
        return GONE as f64;
    };
    match chunk_bytes(body, text, staged) {
        Some(data) => ws_queue(&host, id, WsOutbound::Message { data, binary }),
        None => 0.0,
    }
}

/// Queues a serialised response message: a `SendResult` (`Sent`, `Full`: wait for drain,
/// `Gone`: the call is gone, or was ended RESOURCE_EXHAUSTED for a message over
/// `maxSendMessageLength`). `flags`: grpc-js's write flags (`NoCompress`, 2: it goes out
/// uncompressed whatever the call's encoding).
#[napi]
pub fn grpc_write(server: u32, id: u32, message: BufferSlice<'_>, flags: u32) -> i32 {
    let Some(host) = host(server) else {
        return GONE;
    };
    let compress = flags & WRITE_FLAG_NO_COMPRESS == 0;
    let message = bytes::Bytes::copy_from_slice(&message);
    send_result(deferring_wakes(|| host.grpc_write(id, message, compress)))
}

/// A unary answer in one crossing: the message, then status OK with trailing metadata; `flags`
/// as `grpcWrite`.
#[napi]
pub fn grpc_reply(
    server: u32,
    id: u32,
    message: BufferSlice<'_>,
    trailers: Vec<String>,
    flags: u32,
) -> i32 {
    let Some(host) = host(server) else {
        return GONE;
    };
    let compress = flags & WRITE_FLAG_NO_COMPRESS == 0;
    let message = bytes::Bytes::copy_from_slice(&message);
    let sent = deferring_wakes(|| host.grpc_reply(id, message, compress, trailers));
    send_result(sent.map(|()| true))
}

/// Ends a gRPC call with a status code (0 = OK), details and trailing metadata.
#[napi]
pub fn grpc_end(server: u32, id: u32, code: i32, details: String, trailers: Vec<String>) -> bool {
    let Some(host) = host(server) else {
        return false;
    };
    let status = CallStatus {
        code,
        details,
        trailers,
    };
    deferring_wakes(|| host.bridge().grpc_end(id, status)).is_ok()
}
