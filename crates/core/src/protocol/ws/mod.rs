//! WebSocket (RFC 6455), over the HTTP/1.1 upgrade of [`super::HttpProtocol`]: each connection is
//! one task that reads frames (`frames::FrameReader`) and writes what it and the handler send
//! (`Outgoing`); it pings on its own (`pingInterval`, peers missing `pongTimeout` are
//! terminated without waking JavaScript), bounds message size (1009), invalid UTF-8 (1007) and
//! protocol errors (1002), caps the bytes queued for a slow reader, and closes with 1001 when the
//! server drains.

mod frames;

use crate::bridge::{
    Bridge, BridgeEvent, MessageReceiver, WsOutbound, WsProgress, WsQueueReceiver,
};
use crate::config::WsSettings;
use crate::lifecycle::{Phase, PhaseSignal};
use crate::metrics::Metrics;
use crate::pool::{GracefulClose, WireProtocol};
use bytes::Bytes;
use frames::{FrameBatch, FrameReader, Incoming};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Bytes one event (message or pong) is charged on top of its payload against `maxReceiveQueue`:
/// what it costs beside the payload on its way to JavaScript, so that empty frames are bounded too.
const EVENT_OVERHEAD: usize = 256;

/// Whether a request asks for a WebSocket upgrade (RFC 6455 §4.2.1).
pub fn is_upgrade(headers: &HeaderMap, method: &http::Method) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    method == http::Method::GET
        && has_token(http::header::UPGRADE, "websocket")
        && has_token(http::header::CONNECTION, "upgrade")
}

/// A valid upgrade request: what the 101 needs.
pub struct Handshake {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// Subprotocols offered (`Sec-WebSocket-Protocol`), in the client's order, no duplicates.
    pub protocols: Vec<String>,
}

/// Why an upgrade request is refused: status and the body `ws` answers with.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub &'static str);

impl Refusal {
    pub fn response(&self) -> Response<crate::bridge::ResponseBody> {
        let mut r = Response::new(crate::bridge::ResponseBody::full(Some(Bytes::from_static(
            self.1.as_bytes(),
        ))));
        *r.status_mut() = self.0;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// Checks an upgrade request as `ws`'s `handleUpgrade` does (RFC 6455 §4.2.1): a key of 16
/// base64-encoded bytes, version 13, a well-formed subprotocol list.
pub fn check_handshake(headers: &HeaderMap) -> Result<Handshake, Refusal> {
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .filter(|k| is_valid_key(k))
        .ok_or(Refusal(
            StatusCode::BAD_REQUEST,
            "Missing or invalid Sec-WebSocket-Key header",
        ))?;
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "Missing or invalid Sec-WebSocket-Version header",
        ));
    }
    let mut offered = headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL).iter();
    let protocols = match offered.next() {
        None => Vec::new(),
        // Repeated header lines count as one list, as node joins them.
        Some(first) => {
            let mut joined = first.as_bytes().to_vec();
            for more in offered {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(more.as_bytes());
            }
            parse_protocols(&joined).ok_or(Refusal(
                StatusCode::BAD_REQUEST,
                "Invalid Sec-WebSocket-Protocol header",
            ))?
        }
    };
    Ok(Handshake {
        accept: derive_accept_key(key),
        protocols,
    })
}

/// `ws`'s key check: `/^[+/0-9A-Za-z]{22}==$/` (16 bytes in base64).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// RFC 7230 `tchar`.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A `Sec-WebSocket-Protocol` value as `ws`'s `subprotocol.parse` reads it: comma-separated
/// tokens, spaces or tabs around them (not leading the value, not trailing it), no empty or
/// repeated entries; `None` when it is malformed.
fn parse_protocols(header: &[u8]) -> Option<Vec<String>> {
    let mut protocols: Vec<String> = Vec::new();
    let mut add = |token: &[u8]| {
        let token = String::from_utf8_lossy(token).into_owned();
        if protocols.contains(&token) {
            return false;
        }
        protocols.push(token);
        true
    };
    let (mut start, mut end): (Option<usize>, Option<usize>) = (None, None);
    for (i, &c) in header.iter().enumerate() {
        if end.is_none() && is_token_char(c) {
            start.get_or_insert(i);
        } else if i != 0 && (c == b' ' || c == b'\t') {
            if end.is_none() && start.is_some() {
                end = Some(i);
            }
        } else if c == b',' {
            let s = start?;
            if !add(&header[s..end.unwrap_or(i)]) {
                return None;
            }
            (start, end) = (None, None);
        } else {
            return None;
        }
    }
    let s = start?;
    if end.is_some() || !add(&header[s..]) {
        return None;
    }
    Some(protocols)
}

/// The 101 for a checked handshake, with the chosen subprotocol if any; `Err` if the chosen
/// value cannot be a header value.
pub fn switching_protocols(
    accept: &str,
    protocol: Option<&str>,
) -> Result<Response<crate::bridge::ResponseBody>, http::header::InvalidHeaderValue> {
    let mut r = Response::new(crate::bridge::ResponseBody::full(None));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept)?,
    );
    if let Some(protocol) = protocol {
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol)?,
        );
    }
    Ok(r)
}

/// Pings read back to back (see `run`) before the peer is cut off: ws's `maxPendingAutoPongs`.
const MAX_PINGS_IN_A_ROW: u32 = 60;

/// What the handler's 'close' gets as the reason of a read that failed.
fn failure_reason(e: &WsError) -> String {
    match e {
        WsError::AttackAttempt => "Too many message fragments".into(),
        e => e.to_string(),
    }
}

fn close_code_for(e: &WsError) -> CloseCode {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
            CloseCode::Size
        }
        WsError::Utf8(_) => CloseCode::Invalid,
        WsError::Protocol(ProtocolError::InvalidCloseSequence) => CloseCode::Protocol,
        // The peer went away without a close frame: 1006, as ws reports it.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseCode::Abnormal,
        WsError::Protocol(_) => CloseCode::Protocol,
        // A message in more than `MAX_FRAGMENTS` frames: 1008, as ws closes it.
        WsError::AttackAttempt => CloseCode::Policy,
        _ => CloseCode::Abnormal,
    }
}

/// Runs one WebSocket connection once hyper hands over the upgraded socket; `id` was announced to
/// the handler with the upgrade request. `phase` keeps the connection counted by the lifecycle
/// until it ends.
///
/// One task per connection, kept small (thousands may idle): it reads frames, writes what waits
/// (a write in progress is one branch of its loop, so a peer that stops reading blocks only
/// writing, while terminate requests, deadlines and shutdown are still seen), and one timer
/// serves the next ping, the pong deadline and the closing handshake's deadline.
pub async fn run(
    on_upgrade: hyper::upgrade::OnUpgrade,
    bridge: Bridge,
    id: u32,
    settings: Arc<WsSettings>,
    outbound: Outbound,
    phase: PhaseSignal,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => return bridge.ws_closed(id, 1006, format!("upgrade failed: {e}")),
    };
    let Outbound {
        control: mut requests,
        mut messages,
    } = outbound;
    let (read_half, mut socket) = tokio::io::split(TokioIo::new(upgraded));
    let mut reader = FrameReader::new(read_half, settings.max_payload);
    let progress = bridge.ws_progress(id);
    let mut out = Outgoing::default();
    let metrics = bridge.metrics().clone();
    let report = WriteReport {
        progress: &progress,
        metrics: &metrics,
        bridge: &bridge,
        id,
    };
    // Among the live connections it is a WebSocket now, closed with 1001 when an operator asks.
    metrics
        .connections
        .set_protocol(phase.connection(), WireProtocol::WebSocket);
    let closer: Arc<dyn GracefulClose> = Arc::new(WsCloser {
        bridge: bridge.clone(),
        id,
    });
    phase.connection().set_closer(Arc::downgrade(&closer));
    // Bytes of events handed to JavaScript and not yet taken by the handler (`maxReceiveQueue`).
    let receive_budget = settings.max_receive_queue.clamp(1, MAX_RECEIVE_PERMITS);
    let receive_permits = Arc::new(Semaphore::new(receive_budget));
    // A received event waiting for budget; nothing more is read meanwhile.
    let mut waiting_event: Option<(Received, u32)> = None;
    // Shutdown step 1 or a restart (`Retiring` comes first in both), or step 3 (`Closing`) when
    // asked to stay through the drain delay; then `Forced`.
    let close_at = if settings.keep_open_during_drain_delay {
        Phase::Closing
    } else {
        Phase::Retiring
    };
    let mut draining = false;
    let mut next_ping =
        (!settings.ping_interval.is_zero()).then(|| Instant::now() + settings.ping_interval);
    // Each server ping carries an unguessable payload (a keyed MAC of the connection and a
    // counter); only a pong echoing one still unanswered proves the peer alive — not an
    // unsolicited pong, nor one predicting the next payload from those it saw.
    let mut ping_seq: u64 = 0;
    let mut unanswered = UnansweredPings::default();
    let mut pong_deadline: Option<Instant> = None;
    let mut pings_in_a_row: u32 = 0;
    // Set once the server sent its close frame: the peer has CLOSE_TIMEOUT to answer.
    let mut close_deadline: Option<Instant> = None;
    // The peer's close frame arrived first (or the peer failed the protocol): the reply (and the
    // code and reason the handler's 'close' gets) waits until the handler has taken the messages
    // before it (`CloseReply`), so that its answers to them go out first, as ws sends them; at
    // most until its deadline. (Boxed: every idle connection's task would carry it otherwise.)
    let mut peer_close: Option<Box<PeerClose>> = None;
    // 1005 ("no status") is never sent: it stands for a close frame without a code (`close()`
    // with no arguments, as ws sends it).
    let send_close = |out: &mut Outgoing, code: CloseCode, reason: String| {
        out.queue(Write::Close((code != CloseCode::Status).then(|| {
            CloseFrame {
                code,
                reason: reason.into(),
            }
        })));
        Some(Instant::now() + CLOSE_TIMEOUT)
    };
    // Made once, not per message (each would register a waiter on the server-wide phase channel).
    let phase_step = phase_reached(phase.clone(), close_at);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(phase_step, timer);
    let mut timer_at: Option<Instant> = None;
    let (code, reason, graceful) = loop {
        let reply_deadline = peer_close.as_ref().map(|p| p.deadline);
        let wake_at = [next_ping, pong_deadline, close_deadline, reply_deadline]
            .into_iter()
            .flatten()
            .min();
        if wake_at != timer_at {
            timer_at = wake_at;
            if let Some(at) = wake_at {
                timer.as_mut().reset(at);
            }
        }
        let event_cost = waiting_event.as_ref().map_or(0, |(_, cost)| *cost);
        // Reading pauses while a pong it owes waits for the write in progress, or a received
        // event waits for budget. What the handler sends does not pause it (that is bounded by
        // `maxBufferedAmount`).
        let reading = !out.has_pong() && waiting_event.is_none() && peer_close.is_none();
        tokio::select! {
            incoming = reader.next(), if reading => {
                let received = match incoming {
                    Ok(Incoming::Message { data, binary }) => {
                        metrics.ws_message_in(data.len());
                        Some(Received::Message { data, binary })
                    }
                    // Answered with a pong, unless our close frame is out (RFC 6455 §5.5.1).
                    Ok(Incoming::Ping(data)) => {
                        // Pings back to back in what was read (each answer a write of its own):
                        // past ws's `maxPendingAutoPongs` (60) the peer is flooding, and it is
                        // cut off as ws cuts it off (a ping flood kept a CPU busy: outside probe).
                        pings_in_a_row = if reader.has_buffered() { pings_in_a_row + 1 } else { 0 };
                        if pings_in_a_row >= MAX_PINGS_IN_A_ROW {
                            break (1006, "too many pings in a row".into(), false);
                        }
                        if close_deadline.is_none() {
                            out.queue(Write::Pong(data));
                        }
                        continue;
                    }
                    Ok(Incoming::Pong(data)) => {
                        if pong_deadline.is_some() && unanswered.answered_by(&data) {
                            pong_deadline = None;
                        }
                        Some(Received::Pong(data))
                    }
                    Ok(Incoming::Close(frame)) => {
                        // A code that may not be sent becomes 1002, as tungstenite replies: the
                        // handler hears the 1002, not a 1006 or 1005 the peer made up.
                        let echo = frame.map(|f| if f.code.is_allowed() { f } else {
                            CloseFrame { code: CloseCode::Protocol, reason: "Protocol violation".into() }
                        });
                        let (code, reason) = echo.as_ref().map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                        if close_deadline.is_some() {
                            // The answer to ours.
                            break (code, reason, true);
                        }
                        // The peer's close, echoed once the handler has taken what came before it.
                        peer_close = Some(PeerClose::waiting(echo, code, reason));
                        None
                    }
                    Err(e) => {
                        let code = close_code_for(&e);
                        if code == CloseCode::Abnormal {
                            break (1006, e.to_string(), false);
                        }
                        // Failed with `code` — the code alone on the wire, as ws sends it (the text
                        // would tell a client the server's limits; the handler's 'close' gets it) —
                        // after the handler's answers to what came before, as ws sends them.
                        let echo = Some(CloseFrame { code, reason: "".into() });
                        peer_close = Some(PeerClose::waiting(echo, u16::from(code), failure_reason(&e)));
                        None
                    }
                };
                let Some(received) = received else {
                    // The peer closed, or failed the protocol: nothing more is read, and the
                    // reply waits for the handler to take what came before (`CloseReply`).
                    next_ping = None;
                    pong_deadline = None;
                    bridge.emit(id, BridgeEvent::WsPeerClosing);
                    continue;
                };
                let cost = event_cost_of(received.len(), receive_budget);
                match receive_permits.clone().try_acquire_many_owned(cost) {
                    Ok(permit) => bridge.emit(id, received.into_event(permit)),
                    Err(_) => waiting_event = Some((received, cost)),
                }
            }
            // (An async block: the Arc is cloned only when this branch is polled.)
            permit = async { receive_permits.clone().acquire_many_owned(event_cost).await }, if waiting_event.is_some() => {
                let Ok(permit) = permit else { break (1011, String::new(), false) };
                if let Some((received, _)) = waiting_event.take() {
                    bridge.emit(id, received.into_event(permit));
                }
            }
            // Everything that waits is written from inside this poll, batch after batch; it
            // completes only when a pong went out (reading resumes) or writing failed.
            sent = std::future::poll_fn(|cx| out.poll_send(&mut socket, &mut messages, &report, cx)) => {
                if sent.is_err() {
                    break (1006, "write failed".into(), false);
                }
            }
            request = requests.next() => match request {
                Some(WsOutbound::CloseReply) => {
                    if let Some(peer) = peer_close.take() {
                        break (*peer).reply(&mut out);
                    }
                }
                // The handler closed while the peer's close waited for it: its frame is the reply.
                Some(WsOutbound::Close(code, reason)) if peer_close.is_some() => {
                    send_close(&mut out, CloseCode::from(code), reason);
                    let peer = peer_close.take().expect("checked");
                    break (peer.code, peer.reason, true);
                }
                Some(WsOutbound::Close(code, reason)) => {
                    close_deadline = close_deadline.or(send_close(&mut out, CloseCode::from(code), reason));
                }
                Some(WsOutbound::Terminate) | None => break (1006, String::new(), false),
                Some(message) => {
                    if let Some(write) = handler_write(message) {
                        out.queue(write);
                    }
                }
            },
            _ = &mut timer, if timer_at.is_some() => {
                let now = Instant::now();
                // The handler did not answer in time (its thread is blocked): reply anyway.
                if let Some(peer) = peer_close.take_if(|p| p.deadline <= now) {
                    break (*peer).reply(&mut out);
                }
                if close_deadline.is_some_and(|d| d <= now) {
                    break (1006, "closing handshake timed out".into(), false);
                }
                if pong_deadline.is_some_and(|d| d <= now) {
                    if waiting_event.is_some() {
                        // Reading waits for the handler: the pong may be unread, not missing.
                        pong_deadline = Some(now + settings.pong_timeout);
                    } else {
                        bridge.metrics().ws_dead_peer();
                        break (1006, "no pong within pongTimeout".into(), false);
                    }
                }
                if let Some(at) = next_ping.filter(|at| *at <= now) {
                    // The next one an interval after this one was due (or after now, if late).
                    next_ping = Some((at + settings.ping_interval).max(now));
                    ping_seq = ping_seq.wrapping_add(1);
                    if pong_deadline.is_none() {
                        pong_deadline = Some(now + settings.pong_timeout);
                    }
                    let payload = Bytes::copy_from_slice(&unanswered.sent(ping_payload(id, ping_seq)));
                    metrics.ws_ping_sent();
                    out.queue(Write::Frame(OpCode::Control(Control::Ping), payload, 0));
                }
            }
            signal = &mut phase_step => {
                if draining {
                    break (1006, "closed by server shutdown".into(), false);
                }
                // Shutdown step 1 (or step 3 with `keepOpenDuringDrainDelay`): close 1001.
                draining = true;
                phase_step.set(phase_reached(signal, Phase::Forced));
                // A live peer answers the close at once; one that went away silently must not
                // hold the shutdown for the whole closing-handshake timeout.
                let shutdown_deadline = Instant::now() + SHUTDOWN_CLOSE_TIMEOUT;
                close_deadline = Some(close_deadline.map_or(shutdown_deadline, |d| d.min(shutdown_deadline)));
                if let Some(peer) = peer_close.as_mut() {
                    // The handler's answers to what came before the peer's close still go first,
                    // within the shutdown's closing time.
                    peer.deadline = peer.deadline.min(shutdown_deadline);
                } else {
                    send_close(&mut out, CloseCode::Away, "server shutting down".into());
                }
            }
        }
    };
    if graceful {
        // The closing handshake's timers and futures live in a box of their own: only a connection
        // that is closing pays for them, not the thousands that idle (a task's allocation is its
        // largest state).
        Box::pin(async {
            // Write what waits (the handler's messages, a close reply, our close frame) within the
            // closing handshake's time — ws's closeTimeout from here, or what is left of ours (500 ms
            // once the server is shutting down; never past `Forced`) — then close our side.
            let mut deadline = close_deadline.unwrap_or_else(|| Instant::now() + CLOSE_TIMEOUT);
            let flush = async {
                let written = std::future::poll_fn(|cx| {
                    out.poll_write_waiting(&mut socket, &mut messages, &report, false, cx)
                })
                .await;
                written.is_ok()
                    && tokio::io::AsyncWriteExt::shutdown(&mut socket)
                        .await
                        .is_ok()
            };
            let cut_off = tokio::time::sleep_until(deadline);
            tokio::pin!(flush, cut_off);
            let flushed = loop {
                tokio::select! {
                    // The write first: a close frame forced out at its deadline (the handler did
                    // not answer within a shutdown's 500 ms) still goes if the socket takes it.
                    biased;
                    flushed = &mut flush => break flushed,
                    _ = &mut cut_off => break false,
                    // The handler's terminate() ends it at once.
                    request = requests.next() => if matches!(request, Some(WsOutbound::Terminate) | None) {
                        break false;
                    },
                    signal = &mut phase_step => {
                        if draining {
                            break false;
                        }
                        draining = true;
                        phase_step.set(phase_reached(signal, Phase::Forced));
                        let sooner = Instant::now() + SHUTDOWN_CLOSE_TIMEOUT;
                        if sooner < deadline {
                            deadline = sooner;
                            cut_off.as_mut().reset(sooner);
                        }
                    }
                }
            };
            if flushed {
                // Read (and drop) what the peer still sends until it closes its side: a socket closed
                // with unread bytes sends a reset, which can make the peer lose the close frame.
                // (A shutdown that reaches `Forced` ends it too.)
                let linger = tokio::time::timeout(LINGER, reader.discard_until_closed());
                tokio::select! {
                    _ = linger => {}
                    _ = &mut phase_step, if draining => {}
                }
            }
        })
        .await;
    }
    metrics.ws_closed(code);
    bridge.ws_closed(id, code, reason);
    drop(closer);
    drop(phase);
}

/// The peer's close frame, waiting for the handler to take what came before it: the reply to
/// send, and the code and reason the handler's 'close' gets.
struct PeerClose {
    echo: Option<CloseFrame>,
    code: u16,
    reason: String,
    /// When the reply goes out even if the handler has not answered.
    deadline: Instant,
}

impl PeerClose {
    fn waiting(echo: Option<CloseFrame>, code: u16, reason: String) -> Box<Self> {
        Box::new(PeerClose {
            echo,
            code,
            reason,
            deadline: Instant::now() + CLOSE_TIMEOUT,
        })
    }

    /// Queues the reply; what the connection's loop ends with.
    fn reply(self, out: &mut Outgoing) -> (u16, String, bool) {
        out.queue(Write::Close(self.echo));
        (self.code, self.reason, true)
    }
}

/// What the peer sent that goes to the handler, with its cost against `maxReceiveQueue`.
enum Received {
    Message { data: Bytes, binary: bool },
    Pong(Bytes),
}

impl Received {
    fn len(&self) -> usize {
        match self {
            Received::Message { data, .. } | Received::Pong(data) => data.len(),
        }
    }

    /// The event for the handler, holding the budget it takes until the handler has it.
    fn into_event(self, permit: tokio::sync::OwnedSemaphorePermit) -> BridgeEvent {
        let permit = Some(permit);
        match self {
            Received::Message { data, binary } => BridgeEvent::WsMessage {
                data,
                binary,
                permit,
            },
            Received::Pong(data) => BridgeEvent::WsPong { data, permit },
        }
    }
}

/// `signal` once the server reaches `phase`, given back for the next wait.
async fn phase_reached(mut signal: PhaseSignal, phase: Phase) -> PhaseSignal {
    signal.reached(phase).await;
    signal
}

/// `closeConnection(id)` on a WebSocket: close 1001, as at shutdown (the closing handshake then
/// runs as for a handler's `close()`).
struct WsCloser {
    bridge: Bridge,
    id: u32,
}

impl GracefulClose for WsCloser {
    fn close_gracefully(&self) {
        let close = WsOutbound::Close(1001, "connection closed by the server".into());
        let _ = self.bridge.ws_control(self.id, close);
    }
}

/// Semaphore permits are counted in `u32` by `acquire_many`.
const MAX_RECEIVE_PERMITS: usize = u32::MAX as usize;

/// Budget an event takes: its payload and overhead, at most the whole budget (a message larger
/// than `maxReceiveQueue` still goes through, alone).
fn event_cost_of(payload: usize, budget: usize) -> u32 {
    payload.saturating_add(EVENT_OVERHEAD).min(budget) as u32
}

/// The payloads of the server's pings not yet answered (the newest few: a peer that leaves more
/// unanswered is reaped by its pong deadline anyway).
#[derive(Default)]
struct UnansweredPings(std::collections::VecDeque<[u8; 8]>);

impl UnansweredPings {
    const KEPT: usize = 8;

    fn sent(&mut self, payload: [u8; 8]) -> [u8; 8] {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(payload);
        payload
    }

    /// Whether `pong` echoes one of them; if so, they are all answered.
    fn answered_by(&mut self, pong: &[u8]) -> bool {
        let hit = self.0.iter().any(|p| p[..] == *pong);
        if hit {
            self.0.clear();
        }
        hit
    }
}

/// Ping `seq` of connection `id`: the first 8 bytes of HMAC-SHA256 under a per-process random
/// key, so seeing earlier pings tells a peer nothing about the next one.
fn ping_payload(id: u32, seq: u64) -> [u8; 8] {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            // No system randomness: the clock, still not guessable to the nanosecond.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes[..16].copy_from_slice(&nanos.to_ne_bytes());
        }
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)
    });
    let mut message = [0u8; 12];
    message[..4].copy_from_slice(&id.to_be_bytes());
    message[4..].copy_from_slice(&seq.to_be_bytes());
    let tag = ring::hmac::sign(key, &message);
    let mut out = [0u8; 8];
    out.copy_from_slice(&tag.as_ref()[..8]);
    out
}

/// What a connection writes: its own frames waiting (pongs, pings, close frames), and the batch
/// being written. Its own frames go before the handler's messages waiting in their queue, except
/// that a close frame goes after every message the handler sent before asking for it; nothing goes
/// after a close frame.
#[derive(Default)]
struct Outgoing {
    waiting: std::collections::VecDeque<Write>,
    /// Whether a pong (answering the peer's ping) is among `waiting` (at most one).
    pong: bool,
    batch: FrameBatch,
    /// `batch` holds frames not yet written.
    writing: bool,
    /// What the frames in `batch` count in `bufferedAmount`.
    batch_buffered: usize,
    /// A close frame went into a batch.
    closed: bool,
    /// The handler's message queue ended.
    messages_done: bool,
}

impl Outgoing {
    fn has_pong(&self) -> bool {
        self.pong
    }

    /// Queues one of the connection's own writes. A pong still waiting answers this ping
    /// instead (RFC 6455 §5.5.3: the most recent ping may be the only one answered).
    fn queue(&mut self, write: Write) {
        if let Write::Pong(data) = write {
            if self.pong {
                if let Some(Write::Pong(waiting)) = self
                    .waiting
                    .iter_mut()
                    .find(|w| matches!(w, Write::Pong(_)))
                {
                    *waiting = data;
                }
                return;
            }
            self.pong = true;
            self.waiting.push_back(Write::Pong(data));
            return;
        }
        self.waiting.push_back(write);
    }

    /// Puts what waits into the batch — the connection's own writes, then the handler's messages
    /// — up to `WRITES_PER_BATCH`, and starts writing it. Returns the `bufferedAmount` bytes of
    /// messages dropped because a close frame went before them.
    fn fill(&mut self, messages: &mut MessageReceiver, metrics: &Metrics) -> usize {
        let mut taken = 0;
        let mut dropped = 0;
        while taken < WRITES_PER_BATCH {
            let write = match self.waiting.pop_front() {
                Some(write) => write,
                None => match messages.try_recv().and_then(handler_write) {
                    Some(write) => write,
                    None => break,
                },
            };
            taken += 1;
            if matches!(write, Write::Pong(_)) {
                self.pong = false;
            }
            if let Write::Close(_) = write {
                // The handler's messages sent before its close request go first; one sent after
                // it could not go out (no data frame follows a close frame): the channel is closed,
                // so its send fails (`ERR_WS_NOT_OPEN`) instead of being dropped unheard.
                messages.close();
                while let Some(message) = messages.try_recv() {
                    if let Some(write) = handler_write(message) {
                        dropped += self.add(write, metrics);
                    }
                }
            }
            dropped += self.add(write, metrics);
        }
        dropped
    }

    /// Writes what waits — the connection's own writes, then the handler's messages — batch
    /// after batch, until nothing is left: Ready(false). With `until_pong`, Ready(true) as soon as
    /// a pong the connection owed went into a batch (reading may resume). Pending while the socket
    /// is full.
    fn poll_write_waiting<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        socket: &mut W,
        messages: &mut MessageReceiver,
        report: &WriteReport<'_>,
        until_pong: bool,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<bool>> {
        use std::task::Poll;
        loop {
            if !self.writing {
                let owed_pong = self.pong;
                let dropped = self.fill(messages, report.metrics);
                report.progress.dropped(dropped);
                if until_pong && owed_pong && !self.pong {
                    return Poll::Ready(Ok(true));
                }
                if !self.writing {
                    return Poll::Ready(Ok(false));
                }
            }
            let written = std::task::ready!(self.poll_write(socket, cx))?;
            report.wrote(written);
        }
    }

    /// [`Self::poll_write_waiting`], then waits for the handler's next message and writes it,
    /// and so on. Ready when a pong the connection owed went into a batch (reading may resume),
    /// or with the error when writing failed.
    fn poll_send<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        socket: &mut W,
        messages: &mut MessageReceiver,
        report: &WriteReport<'_>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if std::task::ready!(self.poll_write_waiting(socket, messages, report, true, cx))? {
                return Poll::Ready(Ok(()));
            }
            if self.messages_done {
                return Poll::Pending;
            }
            match messages.poll_recv(cx) {
                Poll::Ready(Some(message)) => self.add_handler_message(message, report.metrics),
                Poll::Ready(None) => {
                    self.messages_done = true;
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A message the handler sent, taken from its queue while nothing was being written.
    fn add_handler_message(&mut self, message: WsOutbound, metrics: &Metrics) {
        if let Some(write) = handler_write(message) {
            // (Nothing is being written: what it counts is released when the batch is written.)
            let dropped = self.add(write, metrics);
            self.batch_buffered += dropped;
            self.writing = true;
        }
    }

    /// Adds a write to the batch; returns its `bufferedAmount` bytes if it is dropped instead.
    fn add(&mut self, write: Write, metrics: &Metrics) -> usize {
        let (opcode, payload, counted) = match write {
            Write::Frame(opcode, payload, counted) => (opcode, payload, counted),
            Write::Pong(payload) => (OpCode::Control(Control::Pong), payload, 0),
            Write::Close(frame) => {
                if !self.closed {
                    self.batch.push_close(frame);
                    self.closed = true;
                    self.writing = true;
                }
                return 0;
            }
        };
        if self.closed {
            return counted;
        }
        if let OpCode::Data(_) = opcode {
            metrics.ws_message_out(payload.len());
        }
        self.batch.push(opcode, payload);
        self.batch_buffered += counted;
        self.writing = true;
        0
    }

    /// Writes the batch; when it is all written, returns the `bufferedAmount` bytes it held.
    fn poll_write<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        socket: &mut W,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.batch.poll_write_to(socket, cx))?;
        self.writing = false;
        std::task::Poll::Ready(Ok(std::mem::take(&mut self.batch_buffered)))
    }
}

/// Where the writer reports what became of the handler's bytes.
struct WriteReport<'a> {
    progress: &'a WsProgress,
    metrics: &'a Metrics,
    bridge: &'a Bridge,
    id: u32,
}

impl WriteReport<'_> {
    /// `len` bytes of the handler's went to the socket: send callbacks waiting for them are told.
    fn wrote(&self, len: usize) {
        if let Some(total) = self.progress.wrote(len) {
            self.bridge.emit(self.id, BridgeEvent::WsWritten(total));
        }
    }
}

enum Write {
    /// A frame, and what it counts in `bufferedAmount`.
    Frame(OpCode, Bytes, usize),
    /// The answer to the peer's ping.
    Pong(Bytes),
    /// A close frame: nothing is written after it.
    Close(Option<CloseFrame>),
}

/// What the handler sends a connection: close/terminate requests (to its loop, at once) and
/// messages, pings and pongs (taken when nothing is being written; bounded by
/// `maxBufferedAmount`).
pub struct Outbound {
    pub control: WsQueueReceiver,
    pub messages: MessageReceiver,
}

/// Writes taken per batch: what is ready goes out together (one write for a burst), within this.
const WRITES_PER_BATCH: usize = 64;

/// A write for what the handler sent (close and terminate go to the connection's task). Text
/// that is not UTF-8 goes out binary (the handler's bytes as they are).
fn handler_write(message: WsOutbound) -> Option<Write> {
    let len = message.buffered_len();
    let (opcode, data) = match message {
        WsOutbound::Message { data, binary } => {
            let text = !binary && std::str::from_utf8(&data).is_ok();
            let kind = if text { Data::Text } else { Data::Binary };
            (OpCode::Data(kind), data)
        }
        WsOutbound::Ping(data) => (OpCode::Control(Control::Ping), data),
        WsOutbound::Pong(data) => (OpCode::Control(Control::Pong), data),
        WsOutbound::Close(..) | WsOutbound::Terminate | WsOutbound::CloseReply => return None,
    };
    Some(Write::Frame(opcode, data, len))
}

/// How long a closing handshake may take from the handler's `close()`: ws's `closeTimeout` (30 s).
/// It includes sending what the handler queued before the close frame, so a slow reader gets it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, after the closing handshake, the server reads and drops what the peer still sends
/// before it closes the socket (a peer that keeps its side open does not hold it longer).
const LINGER: Duration = Duration::from_secs(1);

/// How long the closing handshake may take when the server closes for shutdown.
pub const SHUTDOWN_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what an `async fn` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            hyper::upgrade::OnUpgrade,
            Bridge,
            u32,
            Arc<WsSettings>,
            Outbound,
            PhaseSignal,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Each idle connection's task is allocated at the size of its largest state: the closing
    /// handshake's timers, kept in the loop's future, once cost every connection ≈ 380 B of RSS
    /// (1,552 B here; 1,280 with them boxed, 1,288 with the peer's close waiting for the handler).
    #[test]
    fn an_idle_connection_task_stays_small() {
        let size = future_size(run);
        eprintln!("ws::run's future: {size} bytes");
        assert!(size <= 1_344, "ws::run's future is {size} bytes");
    }

    fn parsed(header: &str) -> Option<Vec<String>> {
        parse_protocols(header.as_bytes())
    }

    #[test]
    fn subprotocol_lists_parse_as_ws_parses_them() {
        assert_eq!(parsed("a"), Some(vec!["a".into()]));
        assert_eq!(
            parsed("graphql-transport-ws, graphql-ws"),
            Some(vec!["graphql-transport-ws".into(), "graphql-ws".into()])
        );
        assert_eq!(parsed("a ,\tb"), Some(vec!["a".into(), "b".into()]));
        for bad in ["", " a", "a ", "a,", ",a", "a,,b", "a b", "a,a", "a;b", "é"] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pongs_count_only_when_they_echo_an_unanswered_ping() {
        let mut pings = UnansweredPings::default();
        let first = pings.sent(ping_payload(7, 1));
        let second = pings.sent(ping_payload(7, 2));
        // Unpredictable: neither the next counter nor another connection gives the same bytes.
        assert_ne!(first, second);
        assert_ne!(ping_payload(7, 3), ping_payload(8, 3));
        assert!(!pings.answered_by(b""));
        assert!(!pings.answered_by(b"unsolicited"));
        assert!(
            !pings.answered_by(&ping_payload(7, 3)),
            "a ping not sent yet"
        );
        assert!(pings.answered_by(&first));
        // Answered: all of them, so an old one echoed again no longer counts.
        assert!(!pings.answered_by(&second));
        // Only the newest few are kept.
        for seq in 10..30 {
            pings.sent(ping_payload(7, seq));
        }
        assert!(!pings.answered_by(&ping_payload(7, 10)));
        assert!(pings.answered_by(&ping_payload(7, 29)));
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"abc",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZ*==",
            b"dGhlIHNhbXBsZSBub25jZQ===",
        ] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
    }
    // ---- the upgrade handshake

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn refusal(pairs: &[(&str, &str)]) -> Refusal {
        match check_handshake(&headers(pairs)) {
            Ok(_) => panic!("accepted: {pairs:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn a_valid_handshake_gets_the_rfc_accept_key_and_the_offered_protocols_in_order() {
        let h = check_handshake(&headers(&[
            ("sec-websocket-key", RFC_KEY),
            ("sec-websocket-version", "13"),
        ]))
        .unwrap();
        // RFC 6455 §1.3's example.
        assert_eq!(h.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(h.protocols.is_empty());
        // Several lines are one list, as node joins them.
        let h = check_handshake(&headers(&[
            ("sec-websocket-key", RFC_KEY),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-protocol", "v2"),
        ]))
        .unwrap();
        assert_eq!(h.protocols, ["chat", "superchat", "v2"]);
    }

    #[test]
    fn bad_handshakes_are_refused_as_ws_refuses_them() {
        let bad_key = Refusal(
            StatusCode::BAD_REQUEST,
            "Missing or invalid Sec-WebSocket-Key header",
        );
        let bad_version = Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "Missing or invalid Sec-WebSocket-Version header",
        );
        let bad_protocol = Refusal(
            StatusCode::BAD_REQUEST,
            "Invalid Sec-WebSocket-Protocol header",
        );
        assert_eq!(refusal(&[("sec-websocket-version", "13")]), bad_key);
        assert_eq!(
            refusal(&[
                ("sec-websocket-key", "c2hvcnQ="),
                ("sec-websocket-version", "13")
            ]),
            bad_key
        );
        // The key is checked first.
        assert_eq!(refusal(&[]), bad_key);
        assert_eq!(refusal(&[("sec-websocket-key", RFC_KEY)]), bad_version);
        assert_eq!(
            refusal(&[
                ("sec-websocket-key", RFC_KEY),
                ("sec-websocket-version", "8")
            ]),
            bad_version
        );
        assert_eq!(
            refusal(&[
                ("sec-websocket-key", RFC_KEY),
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "a,,b"),
            ]),
            bad_protocol
        );
        // A protocol repeated across lines is a duplicate.
        assert_eq!(
            refusal(&[
                ("sec-websocket-key", RFC_KEY),
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "a"),
                ("sec-websocket-protocol", "a"),
            ]),
            bad_protocol
        );
    }

    #[test]
    fn a_refusal_answers_its_status_and_text_and_closes() {
        let r = Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "Missing or invalid Sec-WebSocket-Version header",
        )
        .response();
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.headers()[http::header::CONNECTION], "close");
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(matches!(
            r.body(),
            crate::bridge::ResponseBody::Full(Some(b))
                if b == "Missing or invalid Sec-WebSocket-Version header"
        ));
    }

    #[test]
    fn upgrades_are_get_requests_with_both_tokens() {
        let upgrade =
            |method: http::Method, pairs: &[(&str, &str)]| is_upgrade(&headers(pairs), &method);
        let both = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert!(upgrade(http::Method::GET, &both));
        assert!(!upgrade(http::Method::POST, &both));
        assert!(!upgrade(http::Method::GET, &[("upgrade", "websocket")]));
        assert!(!upgrade(http::Method::GET, &[("connection", "upgrade")]));
        assert!(!upgrade(
            http::Method::GET,
            &[("upgrade", "h2c"), ("connection", "upgrade")]
        ));
    }

    #[test]
    fn the_101_carries_the_accept_key_and_the_chosen_protocol() {
        let r = switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None).unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = r.headers();
        assert_eq!(h[http::header::UPGRADE], "websocket");
        assert_eq!(h[http::header::CONNECTION], "Upgrade");
        assert_eq!(
            h[http::header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(!h.contains_key(http::header::SEC_WEBSOCKET_PROTOCOL));
        let r = switching_protocols("k", Some("superchat")).unwrap();
        assert_eq!(
            r.headers()[http::header::SEC_WEBSOCKET_PROTOCOL],
            "superchat"
        );
        // What handleProtocols returned cannot be a header value: no 101.
        assert!(switching_protocols("k", Some("bad\nvalue")).is_err());
    }

    // ---- frames and close codes

    #[test]
    fn text_goes_out_as_text_when_it_is_utf8_and_as_binary_when_not() {
        let frame = |message| match handler_write(message) {
            Some(Write::Frame(opcode, data, len)) => Some((u8::from(opcode), data, len)),
            _ => None,
        };
        let text = |data: &'static [u8]| {
            frame(WsOutbound::Message {
                data: Bytes::from_static(data),
                binary: false,
            })
        };
        assert_eq!(text("héllo".as_bytes()), Some((1, Bytes::from("héllo"), 6)));
        assert_eq!(
            text(b"\xff\xfe"),
            Some((2, Bytes::from_static(b"\xff\xfe"), 2))
        );
        // Binary stays binary, valid UTF-8 or not.
        let binary = WsOutbound::Message {
            data: Bytes::from_static(b"abc"),
            binary: true,
        };
        assert_eq!(frame(binary), Some((2, Bytes::from_static(b"abc"), 3)));
        // Control frames count their payload and a 2-byte head in bufferedAmount.
        let ping = WsOutbound::Ping(Bytes::from_static(b"p"));
        assert_eq!(frame(ping), Some((9, Bytes::from_static(b"p"), 3)));
        let pong = WsOutbound::Pong(Bytes::from_static(b"q"));
        assert_eq!(frame(pong), Some((10, Bytes::from_static(b"q"), 3)));
        // Close and terminate are the connection loop's, not frames to queue.
        assert!(handler_write(WsOutbound::Close(1000, String::new())).is_none());
        assert!(handler_write(WsOutbound::Terminate).is_none());
    }

    #[test]
    fn read_errors_close_with_the_codes_ws_uses() {
        let code = |e: WsError| u16::from(close_code_for(&e));
        assert_eq!(
            code(WsError::Capacity(CapacityError::MessageTooLong {
                size: 2,
                max_size: 1
            })),
            1009
        );
        assert_eq!(code(WsError::Utf8("bad".into())), 1007);
        assert_eq!(
            code(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            1006,
            "a peer gone without a close frame"
        );
        assert_eq!(
            code(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)),
            1002
        );
        assert_eq!(
            code(WsError::Protocol(ProtocolError::InvalidCloseSequence)),
            1002
        );
        // Not the peer's fault in the protocol's terms: no close frame, 1006 reported.
        assert_eq!(code(WsError::ConnectionClosed), 1006);
        assert_eq!(
            code(WsError::Io(std::io::ErrorKind::ConnectionReset.into())),
            1006
        );
    }

    // ---- flow control

    #[test]
    fn events_cost_their_payload_and_overhead_up_to_the_whole_budget() {
        assert_eq!(event_cost_of(0, 1 << 20), EVENT_OVERHEAD as u32);
        assert_eq!(event_cost_of(1000, 1 << 20), 1000 + EVENT_OVERHEAD as u32);
        // Larger than the budget: all of it (it goes through, alone).
        assert_eq!(event_cost_of(10 << 20, 1 << 20), 1 << 20);
        assert_eq!(event_cost_of(usize::MAX, 1 << 20), 1 << 20);
    }

    #[test]
    fn own_writes_go_first_a_close_after_the_messages_before_it_and_nothing_after_it() {
        let metrics = Metrics::default();
        let (handler, mut messages) = crate::bridge::message_queue();
        let mut out = Outgoing::default();
        let send = |text: &str| {
            assert!(handler
                .send_soon(WsOutbound::Message {
                    data: Bytes::copy_from_slice(text.as_bytes()),
                    binary: false,
                })
                .is_ok())
        };
        send("a");
        send("b");
        out.queue(Write::Pong(Bytes::from_static(b"1")));
        out.queue(Write::Pong(Bytes::from_static(b"2")));
        assert!(out.has_pong(), "reading pauses while the pong waits");
        assert_eq!(out.fill(&mut messages, &metrics), 0);
        assert!(out.writing && !out.has_pong());
        // Written: the latest pong only, then the messages.
        assert_eq!(
            written(&mut out),
            [&[0x8a, 1, b'2'][..], &[0x81, 1, b'a'], &[0x81, 1, b'b']].concat()
        );
        // A close request: the message sent before it goes first.
        send("c");
        out.queue(Write::Close(None));
        assert_eq!(out.fill(&mut messages, &metrics), 0);
        assert_eq!(
            written(&mut out),
            [&[0x81, 1, b'c'][..], &[0x88, 0]].concat()
        );
        // After it, nothing: the handler's channel is closed, so its send fails (ERR_WS_NOT_OPEN
        // in JavaScript) instead of being dropped unheard; a write of the connection's own is
        // dropped.
        let late = handler.send_soon(WsOutbound::Message {
            data: Bytes::from_static(b"late"),
            binary: false,
        });
        assert!(late.is_err(), "a send after the close frame fails");
        out.queue(Write::Frame(
            OpCode::Control(Control::Ping),
            Bytes::new(),
            0,
        ));
        assert_eq!(out.fill(&mut messages, &metrics), 0);
        assert!(!out.writing);
        out.add_handler_message(
            WsOutbound::Message {
                data: Bytes::from_static(b"xy"),
                binary: true,
            },
            &metrics,
        );
        assert_eq!(written(&mut out), b"", "nothing after the close frame");
    }

    /// What the batch writes (over a duplex).
    fn written(out: &mut Outgoing) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
            if out.writing {
                std::future::poll_fn(|cx| out.poll_write(&mut ours, cx))
                    .await
                    .unwrap();
            }
            drop(ours);
            let mut bytes = Vec::new();
            theirs.read_to_end(&mut bytes).await.unwrap();
            bytes
        })
    }
}
