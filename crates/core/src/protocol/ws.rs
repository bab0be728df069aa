//! WebSocket (RFC 6455) on tokio-tungstenite, over the HTTP/1.1 upgrade of [`super::HttpProtocol`]:
//! each connection is one task that reads frames, writes what the handler sends, pings on its own
//! (`pingInterval`, peers missing `pongTimeout` are terminated without waking JavaScript), bounds
//! message size (1009), invalid UTF-8 (1007) and protocol errors (1002), caps the bytes queued for a
//! slow reader, and closes with 1001 when the server drains.

use crate::bridge::{Bridge, BridgeEvent, WsOutbound};
use crate::config::WsSettings;
use crate::lifecycle::{Phase, PhaseSignal};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Messages of one connection handed to JavaScript and not yet processed, at most; past it the
/// connection stops reading (TCP backpressure) instead of queueing.
const MESSAGES_IN_FLIGHT: usize = 32;

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

/// The 101 answer for a valid upgrade request, or a 400/426 for a bad one.
pub fn handshake_response(
    req: &Request<Incoming>,
) -> Result<Response<crate::bridge::ResponseBody>, StatusCode> {
    let headers = req.headers();
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let accept = derive_accept_key(key.as_bytes());
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
        HeaderValue::from_str(&accept).map_err(|_| StatusCode::BAD_REQUEST)?,
    );
    Ok(r)
}

fn config(settings: &WsSettings) -> WebSocketConfig {
    // Small buffers: idle connections must stay cheap (tungstenite's defaults are 128 KiB each).
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload))
}

fn close_code_for(e: &WsError) -> CloseCode {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
            CloseCode::Size
        }
        WsError::Utf8(_) => CloseCode::Invalid,
        WsError::Protocol(ProtocolError::InvalidCloseSequence) => CloseCode::Protocol,
        WsError::Protocol(_) => CloseCode::Protocol,
        _ => CloseCode::Abnormal,
    }
}

/// Runs one WebSocket connection after the upgrade; `id` was announced to the handler with the
/// upgrade request. `phase` keeps the connection counted by the lifecycle until it ends.
pub async fn run(
    upgraded: Upgraded,
    bridge: Bridge,
    id: u32,
    settings: WsSettings,
    mut outbound: mpsc::UnboundedReceiver<WsOutbound>,
    phase: PhaseSignal,
) {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(config(&settings)),
    )
    .await;
    // Writing has its own task: a peer that stops reading blocks only the writer, while this loop
    // still sees terminate requests, pong deadlines and shutdown.
    let (sink, mut stream) = ws.split();
    let buffered = bridge.ws_buffered(id);
    let (writes, write_queue) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_loop(sink, write_queue, buffered));
    let in_flight = Arc::new(Semaphore::new(MESSAGES_IN_FLIGHT));
    let mut draining_signal = phase.clone();
    let mut forced_signal = phase.clone();
    let mut draining = false;
    let mut ping_timer = (!settings.ping_interval.is_zero()).then(|| {
        tokio::time::interval_at(
            Instant::now() + settings.ping_interval,
            settings.ping_interval,
        )
    });
    let mut pong_deadline: Option<Instant> = None;
    // Set once the server sent its close frame: the peer has CLOSE_TIMEOUT to answer.
    let mut close_deadline: Option<Instant> = None;
    let send_close = |writes: &mpsc::UnboundedSender<Write>, code: CloseCode, reason: String| {
        let _ = writes.send(Write::Close(CloseFrame {
            code,
            reason: reason.into(),
        }));
        Some(Instant::now() + CLOSE_TIMEOUT)
    };
    let (code, reason, graceful) = loop {
        let next_ping = async {
            match ping_timer.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let deadline = [pong_deadline, close_deadline].into_iter().flatten().min();
        let late = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { break (1006, String::new(), false) };
                match frame {
                    Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                        // A handler that falls behind slows this client down: no reading until a
                        // permit frees up (TCP backpressure), never an unbounded queue.
                        let Ok(permit) = in_flight.clone().acquire_owned().await else { break (1011, String::new(), false) };
                        let (data, binary) = match message {
                            Message::Text(text) => (Bytes::from(text), false),
                            Message::Binary(data) => (data, true),
                            _ => unreachable!(),
                        };
                        bridge.emit(id, BridgeEvent::WsMessage { data, binary, permit: Some(permit) });
                    }
                    // tungstenite queued the pong (or the close reply); the writer sends it.
                    Ok(Message::Ping(_)) => {
                        let _ = writes.send(Write::Flush);
                    }
                    Ok(Message::Pong(data)) => {
                        pong_deadline = None;
                        bridge.emit(id, BridgeEvent::WsPong(data));
                    }
                    Ok(Message::Close(frame)) => {
                        let _ = writes.send(Write::Flush);
                        let (code, reason) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                        break (code, reason, true);
                    }
                    Ok(Message::Frame(_)) => {}
                    Err(e) => {
                        let code = close_code_for(&e);
                        if code != CloseCode::Abnormal {
                            let reason = e.to_string();
                            send_close(&writes, code, reason.clone());
                            break (u16::from(code), reason, true);
                        }
                        break (1006, e.to_string(), false);
                    }
                }
            }
            out = outbound.recv() => match out {
                Some(WsOutbound::Message(message, len)) => {
                    let _ = writes.send(Write::Message(message, len));
                }
                Some(WsOutbound::Ping(data)) => {
                    let _ = writes.send(Write::Message(Message::Ping(data), 0));
                }
                Some(WsOutbound::Close(code, reason)) => {
                    close_deadline = close_deadline.or(send_close(&writes, CloseCode::from(code), reason));
                }
                Some(WsOutbound::Terminate) | None => break (1006, String::new(), false),
            },
            _ = next_ping => {
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + settings.pong_timeout);
                }
                let _ = writes.send(Write::Message(Message::Ping(Bytes::new()), 0));
            }
            _ = late => {
                if pong_deadline.is_some_and(|d| d <= Instant::now()) {
                    bridge.metrics().ws_dead_peer();
                    break (1006, "no pong within pongTimeout".into(), false);
                }
                break (1006, "closing handshake timed out".into(), false);
            }
            _ = &mut writer => break (1006, "write failed".into(), false),
            _ = draining_signal.reached(Phase::Draining), if !draining => {
                draining = true;
                close_deadline = close_deadline.or(send_close(&writes, CloseCode::Away, "server shutting down".into()));
            }
            _ = forced_signal.reached(Phase::Forced) => break (1006, "closed by server shutdown".into(), false),
        }
    };
    if graceful {
        // Let the writer send what is queued (a close reply, our close frame), briefly.
        drop(writes);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    } else {
        writer.abort();
    }
    bridge.ws_closed(id, code, reason);
    drop(phase);
}

enum Write {
    Message(Message, usize),
    Flush,
    Close(CloseFrame),
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;

/// Sends what the connection queues; a message's bytes leave `bufferedAmount` once written.
async fn write_loop(
    mut sink: Sink,
    mut queue: mpsc::UnboundedReceiver<Write>,
    buffered: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(write) = queue.recv().await {
        let result = match write {
            Write::Message(message, len) => {
                let r = sink.send(message).await;
                buffered.fetch_sub(len, Ordering::AcqRel);
                r
            }
            Write::Flush => sink.flush().await,
            Write::Close(frame) => sink.send(Message::Close(Some(frame))).await,
        };
        if result.is_err() {
            return;
        }
    }
}

/// How long a closing handshake may take after the server sent its close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
