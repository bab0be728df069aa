//! `NativeServer`: one per JavaScript server object. It owns the bridge (requests go to JavaScript
//! through two threadsafe functions, answers come back through `respond`/`write`/`end`) and the
//! listener of the moment.

use bytes::Bytes;
use koatty_serve_core::bridge::{
    Bridge, BridgeError, BridgeEvent, Framing, HeaderEncoding, ProtocolChoice, RequestBody,
    RequestHead, RequestSink, WsOutbound,
};
use koatty_serve_core::config::ServerConfig;
use koatty_serve_core::protocol::grpc::{Compression, GrpcRegistry, RequestShape};
use koatty_serve_core::server::ServeHandle;
use koatty_serve_core::tls::TlsSource;
use koatty_serve_core::trace::{self, IdResolution, TraceRequest, TraceSettings};
use napi::bindgen_prelude::JsValuesTupleIntoVec;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// (id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetailsJson, traceId)
/// headers: `name\0value\0name\0value…` — one string instead of one per name and value, which is
/// what crossing into JavaScript costs most (HTTP forbids NUL in names and values).
/// flags: bits 0–7 HTTP version (10, 11, 20), bit 8 encrypted, bit 9 body streamed, bit 10 the
/// client certificate verified (`socket.authorized`), bit 13 the trace timer runs natively.
/// traceId (native trace mode only): koatty_trace's request id, resolved or generated natively; ''
/// for a WebSocket upgrade without one (a new id per message); absent when JavaScript must decide.
type RequestArgs = FnArgs<(
    u32,
    String,
    String,
    String,
    Option<Buffer>,
    u32,
    String,
    u32,
    Option<String>,
    Option<String>,
)>;
/// (id, kind, chunk, message) — kinds in `event_kind`.
type EventArgs = FnArgs<(u32, u32, Option<Buffer>, Option<String>)>;
/// (errorCode, errorMessage, address, port, family)
type ListenArgs = FnArgs<(Option<String>, Option<String>, String, u32, String)>;

const FLAG_ENCRYPTED: u32 = 1 << 8;
const FLAG_STREAMED_BODY: u32 = 1 << 9;
const FLAG_AUTHORIZED: u32 = 1 << 10;
const FLAG_WEBSOCKET: u32 = 1 << 11;
const FLAG_GRPC: u32 = 1 << 12;
const FLAG_TRACE_TIMER: u32 = 1 << 13;
/// A WebSocket upgrade waiting for `wsSelectProtocol` (the server has `handleProtocols`).
const FLAG_WS_CHOOSE_PROTOCOL: u32 = 1 << 14;

/// Largest ping/pong payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// grpc-js's `WriteFlags.NoCompress`: this response message goes out uncompressed.
const WRITE_FLAG_NO_COMPRESS: u32 = 2;

fn event_kind(e: &BridgeEvent) -> u32 {
    match e {
        BridgeEvent::BodyChunk(_) => 1,
        BridgeEvent::BodyEnd => 2,
        BridgeEvent::BodyError(_) => 3,
        BridgeEvent::Drain => 4,
        BridgeEvent::TraceTimeout => 5,
        BridgeEvent::Closed(reason) => 10 + *reason as u32,
        BridgeEvent::WsMessage { binary: false, .. } => 20,
        BridgeEvent::WsMessage { binary: true, .. } => 21,
        BridgeEvent::WsPong { .. } => 22,
        BridgeEvent::WsClosed { .. } => 23,
        BridgeEvent::GrpcMessage { .. } => 30,
        BridgeEvent::GrpcInputEnd => 31,
        BridgeEvent::GrpcInputError(_) => 32,
        BridgeEvent::GrpcCancelled(_) => 33,
        BridgeEvent::GrpcDrain => 34,
    }
}

struct JsFunctions {
    request: ThreadsafeFunction<RequestArgs, (), RequestArgs, Status, false>,
    event: ThreadsafeFunction<EventArgs, (), EventArgs, Status, false>,
}

/// Delivers bridge calls to JavaScript. Holds the threadsafe functions only while listening, so an
/// idle process can exit.
#[derive(Default)]
struct JsSink {
    functions: RwLock<Option<JsFunctions>>,
}

impl JsSink {
    fn set(&self, f: Option<JsFunctions>) {
        *self.functions.write().unwrap_or_else(|e| e.into_inner()) = f;
    }
}

impl RequestSink for JsSink {
    fn request(&self, head: RequestHead) -> bool {
        self.request_traced(head, None)
    }

    fn request_traced(&self, head: RequestHead, trace: Option<TraceRequest<'_>>) -> bool {
        let guard = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let Some(f) = guard.as_ref() else {
            return false;
        };
        let mut flags = head.http_version;
        let trace_id = trace.and_then(|t| {
            if t.timer_armed {
                flags |= FLAG_TRACE_TIMER;
            }
            match trace::resolve_request_id(&head.headers, &head.url, t.settings) {
                IdResolution::Sent(id) => Some(id),
                // WebSocket: koatty_trace draws a new id per message, in JavaScript.
                IdResolution::Absent
                    if matches!(
                        head.body,
                        RequestBody::Upgrade | RequestBody::UpgradeChoosingProtocol
                    ) =>
                {
                    Some(String::new())
                }
                IdResolution::Absent => trace::uuid_v4(),
                IdResolution::Unresolved => None,
            }
        });
        if head.encrypted {
            flags |= FLAG_ENCRYPTED;
        }
        if head.peer.as_ref().is_some_and(|p| p.authorized) {
            flags |= FLAG_AUTHORIZED;
        }
        let body = match head.body {
            RequestBody::Empty => None,
            RequestBody::Inline(b) => Some(Buffer::from(b.to_vec())),
            RequestBody::Streamed => {
                flags |= FLAG_STREAMED_BODY;
                None
            }
            RequestBody::Upgrade => {
                flags |= FLAG_WEBSOCKET;
                None
            }
            RequestBody::UpgradeChoosingProtocol => {
                flags |= FLAG_WEBSOCKET | FLAG_WS_CHOOSE_PROTOCOL;
                None
            }
            RequestBody::GrpcCall => {
                flags |= FLAG_GRPC;
                None
            }
        };
        let args = (
            head.id,
            head.method,
            head.url,
            head.headers.join("\0"),
            body,
            flags,
            head.remote.ip().to_canonical().to_string(),
            head.remote.port() as u32,
            head.peer.as_ref().map(|p| p.to_json()),
            trace_id,
        );
        f.request
            .call(args.into(), ThreadsafeFunctionCallMode::NonBlocking)
            == Status::Ok
    }

    fn event(&self, id: u32, event: BridgeEvent) {
        let guard = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let Some(f) = guard.as_ref() else { return };
        let kind = event_kind(&event);
        let (chunk, message) = match event {
            BridgeEvent::BodyChunk(b) => (Some(Buffer::from(b.to_vec())), None),
            BridgeEvent::BodyError(m) => (None, Some(m)),
            BridgeEvent::WsClosed { code, reason } => (None, Some(format!("{code} {reason}"))),
            BridgeEvent::GrpcInputError(m) => (None, Some(m)),
            BridgeEvent::GrpcCancelled(reason) => (None, Some((reason as u32).to_string())),
            BridgeEvent::WsMessage { data, permit, .. }
            | BridgeEvent::WsPong { data, permit }
            | BridgeEvent::GrpcMessage { data, permit } => {
                // The permit is released once the handler has taken the message (the callback runs
                // on the JS thread after it returns), bounding each connection's queue.
                let args = (id, kind, Some(Buffer::from(data.to_vec())), None::<String>).into();
                f.event.call_with_return_value(
                    args,
                    ThreadsafeFunctionCallMode::NonBlocking,
                    move |_, _| {
                        drop(permit);
                        Ok(())
                    },
                );
                return;
            }
            _ => (None, None),
        };
        f.event.call(
            (id, kind, chunk, message).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

#[napi(object)]
pub struct NativeMetrics {
    pub uptime_ms: f64,
    pub active_connections: f64,
    pub total_connections: f64,
    pub rejected_connections: f64,
    pub requests_total: f64,
    pub requests_active: f64,
    pub requests_failed: f64,
    pub requests_timed_out: f64,
    pub requests_aborted: f64,
    pub responses_5xx: f64,
    pub ws_dead_peers: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub connections_per_second: f64,
    pub error_rate: f64,
    pub average_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p90_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub pending_requests: f64,
    pub accepting: bool,
}

#[napi(object)]
pub struct NativeSecondSample {
    /// Unix time of the second, in ms.
    pub timestamp: f64,
    pub requests: f64,
    pub errors: f64,
    pub connections: f64,
    pub average_latency_ms: f64,
}

/// `respond`'s `framing` bit: the handler removed `Content-Length` (node's `_removedContLen`).
const FRAMING_REMOVED_CONTENT_LENGTH: u32 = 1;

/// `respond`/`end` result: sent, but the handler's `Content-Length` disagreed with the body (the
/// bridge sent no more than announced and closes the connection; JS reports
/// `ERR_HTTP_CONTENT_LENGTH_MISMATCH`).
const LENGTH_MISMATCH: i32 = 2;

/// Result codes of `respond`/`write`/`end` (cheaper than exceptions on the hot path; `js/` turns
/// the negative ones into coded errors).
fn code_of(r: std::result::Result<bool, BridgeError>) -> i32 {
    match r {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(BridgeError::Gone(_)) => -1,
        Err(BridgeError::HeadersSent(_)) => -2,
        Err(BridgeError::HeadersNotSent(_)) => -3,
        Err(BridgeError::Backpressure(_)) => -4,
    }
}

fn bytes_of(body: Option<Buffer>, text: Option<String>) -> Option<Bytes> {
    match (body, text) {
        (Some(b), _) => Some(Bytes::copy_from_slice(&b)),
        (None, Some(t)) => Some(Bytes::from(t)),
        (None, None) => None,
    }
}

/// How Node's `http` would encode the head's header values (only non-ASCII values differ): UTF-8
/// when the head goes out in one write with a string chunk — `end(nonEmptyString)`, a string
/// `write` on a response that is not chunked, `write('')`/`flushHeaders()` — else latin1.
/// `flat` is `name\0value\0…`; `text` is the chunk sent with the head when it is a string.
fn head_encoding(flat: &str, text: Option<&str>, end: bool) -> HeaderEncoding {
    // ASCII values are the same bytes either way; latin1 spares the HTTP/2 check in the bridge.
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

/// The configuration of the moment (a restart replaces it) and the TLS settings built from it.
struct Current {
    config: ServerConfig,
    tls: Option<Arc<TlsSource>>,
}

/// Parses options JSON and builds TLS, so bad settings fail before anything binds.
fn prepare(options_json: &str) -> std::result::Result<Current, String> {
    let value: serde_json::Value = serde_json::from_str(options_json)
        .map_err(|e| format!("ERR_INVALID_CONFIG: options: {e}"))?;
    let config =
        ServerConfig::from_options(&value).map_err(|e| format!("ERR_INVALID_CONFIG: {e}"))?;
    let tls = config
        .tls_options()
        .and_then(|o| o.map(TlsSource::new).transpose())
        .map_err(|e| e.to_string())?
        .map(Arc::new);
    Ok(Current { config, tls })
}

fn listen_args(result: koatty_serve_core::Result<std::net::SocketAddr>) -> ListenArgs {
    match result {
        Ok(addr) => {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            (
                None,
                None,
                addr.ip().to_string(),
                addr.port() as u32,
                family.to_string(),
            )
                .into()
        }
        Err(e) => (
            Some(e.code().to_string()),
            Some(e.to_string()),
            String::new(),
            0,
            String::new(),
        )
            .into(),
    }
}

type Callback<T> = ThreadsafeFunction<T, (), T, Status, false>;

fn callback<T: 'static + JsValuesTupleIntoVec>(f: Function<T, ()>) -> Result<Callback<T>> {
    f.build_threadsafe_function::<T>()
        .callee_handled::<false>()
        .build()
}

#[napi]
pub struct NativeServer {
    current: Arc<Mutex<Current>>,
    bridge: Bridge,
    sink: Arc<JsSink>,
    listener: Arc<Mutex<Option<Arc<ServeHandle>>>>,
    /// The listener a restart replaced, until JavaScript retires it (`retireReplaced`).
    replaced: Arc<Mutex<Option<Arc<ServeHandle>>>>,
}

impl NativeServer {
    fn listener(&self) -> Option<Arc<ServeHandle>> {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn current<R>(&self, f: impl FnOnce(&Current) -> R) -> R {
        f(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[napi]
impl NativeServer {
    /// `optionsJson`: the server's options (already resolved by the JS layer). Bad TLS settings
    /// throw here (`ERR_TLS_CONFIG: …`).
    #[napi(constructor)]
    pub fn new(options_json: String) -> Result<Self> {
        let current = prepare(&options_json).map_err(|m| Error::new(Status::InvalidArg, m))?;
        let sink = Arc::new(JsSink::default());
        let bridge = Bridge::new(
            sink.clone(),
            current.config.limits.max_in_flight,
            Default::default(),
        );
        Ok(NativeServer {
            current: Arc::new(Mutex::new(current)),
            bridge,
            sink,
            listener: Default::default(),
            replaced: Default::default(),
        })
    }

    /// Native trace mode (js/tracer.js): with a header name, request ids are resolved natively and
    /// the `http_timeout` timer runs natively for requests from now on; `null` switches it off.
    #[napi]
    pub fn set_trace(&self, header_name: Option<String>, id_name: String, timeout_ms: f64) {
        let settings = header_name.map(|name| {
            let ms = if timeout_ms.is_finite() && timeout_ms > 0.0 {
                timeout_ms.min(u32::MAX as f64) as u64
            } else {
                0
            };
            TraceSettings::new(&name, &id_name, Duration::from_millis(ms))
        });
        self.bridge.set_trace(settings);
    }

    /// Whether `auto` TLS mode generated a self-signed development certificate.
    #[napi(getter)]
    pub fn generated_dev_certificate(&self) -> bool {
        self.current(|c| {
            c.tls
                .as_ref()
                .is_some_and(|t| t.generated_dev_certificate())
        })
    }

    /// Re-reads key and certificate for new handshakes (open connections keep theirs). Returns an
    /// error message (`ERR_TLS_CONFIG: …`) instead of throwing, or null.
    #[napi]
    pub fn reload_certificates(&self) -> Option<String> {
        self.current(|c| match &c.tls {
            Some(t) => t.reload().err().map(|e| e.to_string()),
            None => Some("ERR_TLS_CONFIG: this server does not use TLS".to_string()),
        })
    }

    /// Binds and starts serving. `onListening(errCode, errMessage, address, port, family)` is called
    /// once, from the event loop; bind errors never throw here.
    #[napi]
    pub fn listen(
        &self,
        on_request: Function<RequestArgs, ()>,
        on_event: Function<EventArgs, ()>,
        on_listening: Function<ListenArgs, ()>,
    ) -> Result<()> {
        let request = on_request
            .build_threadsafe_function::<RequestArgs>()
            .callee_handled::<false>()
            .build()?;
        let event = on_event
            .build_threadsafe_function::<EventArgs>()
            .callee_handled::<false>()
            .build()?;
        let done = callback(on_listening)?;
        self.sink.set(Some(JsFunctions { request, event }));
        let (config, tls) = self.current(|c| (c.config.clone(), c.tls.clone()));
        let bridge = self.bridge.clone();
        let sink = self.sink.clone();
        let listener = self.listener.clone();
        napi::bindgen_prelude::spawn(async move {
            let started = ServeHandle::start(&config, bridge, tls)
                .await
                .map(|handle| {
                    let addr = handle.local_addr();
                    *listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handle));
                    addr
                });
            if started.is_err() {
                sink.set(None);
            }
            done.call(
                listen_args(started),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        Ok(())
    }

    /// Applies new options in place, without a restart: `maxConnections` at the next accept,
    /// timeouts and body limits to new requests, a new TLS key/certificate/passphrase to new
    /// handshakes. Returns an error message, or null.
    #[napi]
    pub fn apply_in_place(&self, options_json: String) -> Option<String> {
        let next = match prepare(&options_json) {
            Ok(n) => n,
            Err(m) => return Some(m),
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(now), Some(new_tls)) = (&current.tls, &next.tls) {
            if now.needs_restart_for(&new_tls.options()) {
                return Some("ERR_RESTART_REQUIRED: these ssl settings need a restart".to_string());
            }
            now.adopt(new_tls);
        }
        if current.tls.is_some() != next.tls.is_some() {
            return Some("ERR_RESTART_REQUIRED: turning TLS on or off needs a restart".to_string());
        }
        if let Some(l) = self.listener() {
            l.update_limits(next.config.limits.clone());
            l.update_settings(&next.config);
        }
        self.bridge
            .set_max_in_flight(next.config.limits.max_in_flight);
        let tls = current.tls.clone();
        current.config = next.config;
        current.tls = tls;
        None
    }

    /// Restarts on new options with no refused connection: the new listener is bound first (or,
    /// on the same address, takes the old socket over), then the old one drains for up to
    /// `drainTimeoutMs` in the background. On failure the old server keeps running.
    /// `onDone(errCode, errMessage, address, port, family)`.
    #[napi]
    pub fn restart(
        &self,
        options_json: String,
        drain_timeout_ms: u32,
        on_done: Function<ListenArgs, ()>,
    ) -> Result<()> {
        let done = callback(on_done)?;
        let next = match prepare(&options_json) {
            Ok(n) => n,
            Err(m) => {
                let code = m
                    .split(':')
                    .next()
                    .unwrap_or("ERR_INVALID_CONFIG")
                    .to_string();
                done.call(
                    (Some(code), Some(m), String::new(), 0, String::new()).into(),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
                return Ok(());
            }
        };
        let old = self.listener();
        // The same configured address (an ephemeral port included) keeps its socket: handed over.
        let same_address = old.is_some()
            && self.current(|c| {
                c.config.hostname == next.config.hostname && c.config.port == next.config.port
            });
        let bridge = self.bridge.clone();
        let listener = self.listener.clone();
        let current = self.current.clone();
        let replaced = self.replaced.clone();
        napi::bindgen_prelude::spawn(async move {
            let socket = match (&old, same_address) {
                (Some(o), true) => o.lifecycle().take_listener().await,
                _ => None,
            };
            let max_in_flight = next.config.limits.max_in_flight;
            let started =
                ServeHandle::start_on(&next.config, bridge.clone(), next.tls.clone(), socket).await;
            if started.is_ok() {
                bridge.set_max_in_flight(max_in_flight);
            }
            let result = started.map(|handle| {
                let addr = handle.local_addr();
                *listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handle));
                *current.lock().unwrap_or_else(|e| e.into_inner()) = next;
                addr
            });
            if result.is_ok() {
                // The old listener keeps accepting until JavaScript, having taken the new address,
                // retires it (`retireReplaced`); one still waiting from an earlier restart goes now.
                let earlier = replaced.lock().unwrap_or_else(|e| e.into_inner()).take();
                *replaced.lock().unwrap_or_else(|e| e.into_inner()) = old;
                if let Some(earlier) = earlier {
                    tokio::spawn(async move {
                        earlier
                            .retire(Duration::from_millis(drain_timeout_ms as u64))
                            .await;
                    });
                }
            }
            done.call(listen_args(result), ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(())
    }

    /// The last step of a restart: the replaced listener stops accepting (its backlog is served)
    /// and its connections drain for up to `drainTimeoutMs` in the background. JavaScript calls it
    /// once every request begun before the switch has connected, so none is reset or refused.
    #[napi]
    pub fn retire_replaced(&self, drain_timeout_ms: u32) {
        let replaced = self
            .replaced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(old) = replaced {
            napi::bindgen_prelude::spawn(async move {
                old.retire(Duration::from_millis(drain_timeout_ms as u64))
                    .await;
            });
        }
    }

    /// Shutdown step 1: stop new work everywhere — the listening socket closes, and every open
    /// connection is asked to drain (idle keep-alive ones close, HTTP/2 and gRPC get GOAWAY,
    /// WebSockets close 1001) while what is in flight finishes. `onDone()`.
    #[napi]
    pub fn stop_accepting(&self, on_done: Function<(), ()>) -> Result<()> {
        let done = callback(on_done)?;
        let listener = self.listener();
        napi::bindgen_prelude::spawn(async move {
            if let Some(l) = listener {
                let server = l.lifecycle();
                // The listener first: `accepting` turns false (health watchers learn NOT_SERVING,
                // late requests are refused), then every connection, those the close took in
                // from the backlog included, drains.
                server.stop_accepting().await;
                server.begin_draining();
            }
            done.call((), ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(())
    }

    /// Shutdown step 2: wait up to `timeoutMs` for the open connections to close by themselves
    /// (nothing is asked of them). `onDone(allClosed)`.
    #[napi]
    pub fn wait_idle(&self, timeout_ms: u32, on_done: Function<FnArgs<(bool,)>, ()>) -> Result<()> {
        let done = callback(on_done)?;
        let listener = self.listener();
        napi::bindgen_prelude::spawn(async move {
            let closed = match listener {
                Some(l) => {
                    l.lifecycle()
                        .wait_closed(Duration::from_millis(timeout_ms as u64))
                        .await
                }
                None => true,
            };
            done.call((closed,).into(), ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(())
    }

    /// Shutdown step 3: ask every connection (also those kept open through the drain delay) to
    /// finish and close, wait up to `timeoutMs`.
    /// `onDone(drained, openConnectionsAtStart, stillOpen)`.
    #[napi]
    pub fn drain(
        &self,
        timeout_ms: u32,
        on_done: Function<FnArgs<(bool, u32, u32)>, ()>,
    ) -> Result<()> {
        let done = callback(on_done)?;
        let listener = self.listener();
        napi::bindgen_prelude::spawn(async move {
            let (drained, at_start, left) = match listener {
                Some(l) => {
                    let server = l.lifecycle();
                    let at_start = server.open_connections();
                    server.begin_closing();
                    let drained = server
                        .wait_closed(Duration::from_millis(timeout_ms as u64))
                        .await;
                    (drained, at_start, server.open_connections())
                }
                None => (true, 0, 0),
            };
            done.call(
                (drained, at_start as u32, left as u32).into(),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        Ok(())
    }

    /// Shutdown step 4: close every remaining connection now (waits up to `graceMs` for them).
    /// `onDone(forced)`.
    #[napi]
    pub fn force_close(&self, grace_ms: u32, on_done: Function<FnArgs<(u32,)>, ()>) -> Result<()> {
        let done = callback(on_done)?;
        let listener = self.listener();
        napi::bindgen_prelude::spawn(async move {
            let forced = match listener {
                Some(l) => {
                    l.lifecycle()
                        .force_close(Duration::from_millis(grace_ms as u64))
                        .await
                }
                None => 0,
            };
            done.call(
                (forced as u32,).into(),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        Ok(())
    }

    /// Shutdown step 5: drop the listener and release the JavaScript callbacks, so an idle process
    /// can exit.
    #[napi]
    pub fn release(&self) {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // A restart's old listener not retired yet (shutdown right after updateConfig).
        self.retire_replaced(0);
        self.sink.set(None);
    }

    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn respond(
        &self,
        id: u32,
        status: u32,
        reason: Option<String>,
        headers: String,
        body: Option<Buffer>,
        text: Option<String>,
        end: bool,
        framing: u32,
    ) -> i32 {
        let encoding = head_encoding(&headers, text.as_deref(), end);
        // `name\0value\0…`, as requests arrive (see `RequestArgs`).
        let headers: Vec<&str> = if headers.is_empty() {
            Vec::new()
        } else {
            headers.split('\0').collect()
        };
        let framing = Framing {
            encoding,
            removed_length: framing & FRAMING_REMOVED_CONTENT_LENGTH != 0,
        };
        // js/response.js validated the code (100–999, as node's writeHead).
        match self.bridge.respond_with(
            id,
            status.min(999) as u16,
            reason.as_deref(),
            &headers,
            framing,
            bytes_of(body, text),
            end,
        ) {
            Ok(sent) if sent.length_mismatch => LENGTH_MISMATCH,
            other => code_of(other.map(|sent| sent.more)),
        }
    }

    #[napi]
    pub fn write(&self, id: u32, body: Option<Buffer>, text: Option<String>) -> i32 {
        match bytes_of(body, text) {
            Some(b) => code_of(self.bridge.write(id, b)),
            None => 1,
        }
    }

    #[napi]
    pub fn end(&self, id: u32, body: Option<Buffer>, text: Option<String>) -> i32 {
        match self.bridge.end(id, bytes_of(body, text)) {
            Ok(true) => LENGTH_MISMATCH,
            other => code_of(other.map(|_| true)),
        }
    }

    /// Abandons a request (node's `res.destroy()`): the connection closes without a response if
    /// none was sent, and is cut off if one is streaming.
    #[napi]
    pub fn destroy(&self, id: u32) -> bool {
        self.bridge.destroy(id)
    }

    /// Asks for the next chunk of a streamed request body.
    #[napi]
    pub fn pull_body(&self, id: u32) -> bool {
        self.bridge.pull_body(id)
    }

    #[napi]
    pub fn metrics(&self) -> NativeMetrics {
        let metrics = self.bridge.metrics();
        let m = metrics.snapshot();
        NativeMetrics {
            uptime_ms: m.uptime_ms as f64,
            active_connections: m.active_connections as f64,
            total_connections: m.total_connections as f64,
            rejected_connections: m.rejected_connections as f64,
            requests_total: m.requests_total as f64,
            requests_active: m.requests_active as f64,
            requests_failed: m.requests_failed as f64,
            requests_timed_out: m.requests_timed_out as f64,
            requests_aborted: m.requests_aborted as f64,
            responses_5xx: m.responses_5xx as f64,
            ws_dead_peers: m.ws_dead_peers as f64,
            bytes_in: m.bytes_in as f64,
            bytes_out: m.bytes_out as f64,
            connections_per_second: m.connections_per_second,
            error_rate: m.error_rate,
            average_latency_ms: m.average_latency_ms,
            p50_latency_ms: m.p50_latency_ms,
            p90_latency_ms: m.p90_latency_ms,
            p99_latency_ms: m.p99_latency_ms,
            pending_requests: self.bridge.pending_count() as f64,
            accepting: metrics.accepting(),
        }
    }

    fn ws_control_frame(&self, id: u32, body: Option<Buffer>, pong: bool) -> f64 {
        let data = body.map(|b| Bytes::copy_from_slice(&b)).unwrap_or_default();
        if data.len() > MAX_CONTROL_PAYLOAD {
            return -2.0;
        }
        let max = self.ws_max_buffered();
        match self.bridge.ws_send_control(id, data, pong, max) {
            Ok(queued) => queued as f64,
            Err(BridgeError::Backpressure(_)) => -4.0,
            Err(_) => -1.0,
        }
    }

    /// `maxBufferedAmount` of the running configuration.
    fn ws_max_buffered(&self) -> usize {
        self.current(|c| {
            c.config
                .websocket
                .as_ref()
                .map(|w| w.max_buffered)
                .unwrap_or(usize::MAX)
        })
    }

    /// Sends a WebSocket message. Returns the bytes now queued (`bufferedAmount`), or -1 when the
    /// connection is gone, -4 when it exceeded its buffer limit and was terminated.
    #[napi]
    pub fn ws_send(
        &self,
        id: u32,
        body: Option<Buffer>,
        text: Option<String>,
        binary: bool,
    ) -> f64 {
        let Some(data) = bytes_of(body, text) else {
            return 0.0;
        };
        let max = self.ws_max_buffered();
        match self.bridge.ws_send(id, data, binary, max) {
            Ok(queued) => queued as f64,
            Err(BridgeError::Backpressure(_)) => -4.0,
            Err(_) => -1.0,
        }
    }

    /// The gRPC method paths (`/package.Service/Method`) served, those of them whose request is a
    /// stream, those whose response is a stream, and the serialised `FileDescriptorProto`s for
    /// server reflection (`null` = no reflection). Other paths get UNIMPLEMENTED natively. Returns
    /// why descriptors were rejected (reflection then lists the service names only), or `null`.
    #[napi]
    pub fn set_grpc_methods(
        &self,
        paths: Vec<String>,
        request_stream_paths: Vec<String>,
        response_stream_paths: Vec<String>,
        reflection_files: Option<Vec<Buffer>>,
    ) -> Option<String> {
        let streams: std::collections::HashSet<String> = request_stream_paths.into_iter().collect();
        let registry = GrpcRegistry::new(paths.into_iter().map(|p| {
            let shape = if streams.contains(&p) {
                RequestShape::Stream
            } else {
                RequestShape::Single
            };
            (p, shape)
        }))
        .with_streamed_responses(response_stream_paths);
        let (registry, problem) = match reflection_files {
            None => (registry, None),
            Some(files) => {
                let files: Vec<Vec<u8>> = files.iter().map(|f| f.to_vec()).collect();
                registry.with_reflection(&files)
            }
        };
        self.bridge.grpc_methods().store(registry);
        problem
    }

    /// Sends a call's initial metadata (flat pairs; `-bin` values base64) now.
    #[napi]
    pub fn grpc_send_metadata(&self, id: u32, metadata: Vec<String>) -> bool {
        self.bridge.grpc_send_metadata(id, metadata).is_ok()
    }

    /// Chooses the call's response compression (grpc-js's `compressionAlgorithms` number):
    /// 1 = set, -2 = the response head was already sent, -1 = call gone (or unknown number).
    #[napi]
    pub fn grpc_set_compression(&self, id: u32, algorithm: u32) -> i32 {
        let Some(compression) = Compression::from_number(u64::from(algorithm)) else {
            return -1;
        };
        match self.bridge.grpc_set_compression(id, compression) {
            Ok(()) => 1,
            Err(e) => code_of(Err(e)),
        }
    }

    /// Queues a serialised response message: 1 = room, 0 = wait for drain, -1 = call gone.
    #[napi]
    pub fn grpc_write(&self, id: u32, message: Buffer) -> i32 {
        self.write_grpc_message(id, message, true)
    }

    /// As `grpc_write`, for a message written with grpc-js's `WriteFlags.NoCompress`: it goes out
    /// uncompressed whatever the call's encoding. (A method of its own keeps a flags argument
    /// off the per-message path.)
    #[napi]
    pub fn grpc_write_uncompressed(&self, id: u32, message: Buffer) -> i32 {
        self.write_grpc_message(id, message, false)
    }

    fn write_grpc_message(&self, id: u32, message: Buffer, compress: bool) -> i32 {
        // The limit applies to the message as serialised (grpc-js checks before compressing).
        let max = self.current(|c| {
            c.config
                .grpc
                .as_ref()
                .map(|g| g.max_send_message_length)
                .unwrap_or(usize::MAX)
        });
        if message.len() > max {
            let details = format!("Sent message larger than max ({} vs. {max})", message.len());
            let _ = self.bridge.grpc_end(id, 8, details, Vec::new());
            return -1;
        }
        code_of(
            self.bridge
                .grpc_write(id, Bytes::copy_from_slice(&message), compress),
        )
    }

    /// A unary answer in one crossing: the message, then status OK with trailing metadata;
    /// `flags`: grpc-js's write flags (`NoCompress`, 2: the message goes out uncompressed).
    /// 1 = sent, -1 = call gone (or the message was over `maxSendMessageLength`: ended with
    /// RESOURCE_EXHAUSTED, as `grpcWrite` does).
    #[napi]
    pub fn grpc_reply(
        &self,
        id: u32,
        message: Buffer,
        trailers: Vec<String>,
        flags: Option<u32>,
    ) -> i32 {
        let compress = flags.unwrap_or(0) & WRITE_FLAG_NO_COMPRESS == 0;
        if self.write_grpc_message(id, message, compress) < 0 {
            return -1;
        }
        match self.bridge.grpc_end(id, 0, "OK".to_string(), trailers) {
            Ok(()) => 1,
            Err(_) => -1,
        }
    }

    /// Ends a call with a status code (0 = OK), details and trailing metadata.
    #[napi]
    pub fn grpc_end(&self, id: u32, code: i32, details: String, trailers: Vec<String>) -> bool {
        self.bridge.grpc_end(id, code, details, trailers).is_ok()
    }

    /// Bytes queued and not yet written (`bufferedAmount`).
    #[napi]
    pub fn ws_buffered_amount(&self, id: u32) -> f64 {
        self.bridge.ws_buffered_amount(id) as f64
    }

    /// Starts the closing handshake (code 1000–4999, reason ≤ 123 bytes, checked in JS).
    #[napi]
    pub fn ws_close(&self, id: u32, code: u32, reason: String) -> bool {
        self.bridge
            .ws_control(id, WsOutbound::Close(code as u16, reason))
            .is_ok()
    }

    /// Drops the connection at once.
    #[napi]
    pub fn ws_terminate(&self, id: u32) -> bool {
        self.bridge.ws_control(id, WsOutbound::Terminate).is_ok()
    }

    /// The subprotocol `handleProtocols` chose for an upgrade (`null`: none; `failed`: it threw,
    /// the upgrade is refused with 500). False if the upgrade is gone.
    #[napi]
    pub fn ws_select_protocol(&self, id: u32, protocol: Option<String>, failed: bool) -> bool {
        let choice = match protocol {
            _ if failed => ProtocolChoice::Failed,
            Some(p) => ProtocolChoice::Selected(p),
            None => ProtocolChoice::NoProtocol,
        };
        self.bridge.ws_select_protocol(id, choice).is_ok()
    }

    /// Sends a ping. Returns what `ws_send` returns; -2 for a payload over 125 bytes (RFC 6455
    /// §5.5; JavaScript throws ws's RangeError first).
    #[napi]
    pub fn ws_ping(&self, id: u32, body: Option<Buffer>) -> f64 {
        self.ws_control_frame(id, body, false)
    }

    /// Sends an (unsolicited) pong; as `ws_ping`.
    #[napi]
    pub fn ws_pong(&self, id: u32, body: Option<Buffer>) -> f64 {
        self.ws_control_frame(id, body, true)
    }

    /// Per-second samples of the last `seconds` seconds (at most 300), oldest first.
    #[napi]
    pub fn metrics_history(&self, seconds: u32) -> Vec<NativeSecondSample> {
        self.bridge
            .metrics()
            .history(seconds as usize)
            .into_iter()
            .map(|s| NativeSecondSample {
                timestamp: s.second as f64 * 1000.0,
                requests: s.requests as f64,
                errors: s.errors as f64,
                connections: s.connections as f64,
                average_latency_ms: s.average_latency_ms,
            })
            .collect()
    }

    /// The counters in Prometheus text format (what `nativeEndpoints.metrics` serves).
    #[napi]
    pub fn prometheus(&self) -> String {
        let metrics = self.bridge.metrics();
        metrics
            .snapshot()
            .prometheus(self.bridge.pending_count(), metrics.accepting())
    }
}

/// Native trace mode's access line (koatty-trace.md §2.11.1), formatted as koatty_logger's winston
/// Console transport would and written to fd 1 in one `write(2)`, from the JavaScript thread at
/// the moment koatty_trace would write it (so lines stay in order with those JavaScript writes).
/// `endTime` and the timestamp are now. Returns `null` when all was written, else the bytes left
/// (fd 1 would block), for JavaScript to queue on its stdout stream. Throws
/// `ERR_TRACE_LOCAL_TIME` where the platform gives no local time (see `traceLocalOffset`).
#[napi]
pub fn trace_access_line(
    failed: bool,
    action: String,
    status: i32,
    start_ms: f64,
    request_id: String,
    path: String,
) -> Result<Option<Buffer>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now = trace::local_time(now_ms).ok_or_else(|| {
        Error::new(
            Status::GenericFailure,
            "ERR_TRACE_LOCAL_TIME: no local time on this platform",
        )
    })?;
    let line = trace::AccessLine {
        failed,
        action: &action,
        status: status.into(),
        start_ms: start_ms as i64,
        request_id: &request_id,
        end_ms: now_ms,
        path: &path,
    };
    let mut out = String::with_capacity(256);
    trace::push_access_line(&mut out, &line, &now, "\n");
    let written = trace::write_stdout(out.as_bytes());
    Ok((written < out.len()).then(|| Buffer::from(&out.as_bytes()[written..])))
}

/// Minutes east of UTC at `unixMs` in this process's time zone as the native access lines see it,
/// or `null` where they cannot (the JS tracer then formats lines itself).
#[napi]
pub fn trace_local_offset(unix_ms: f64) -> Option<i32> {
    trace::local_time(unix_ms as i64).map(|t| t.offset_minutes)
}
