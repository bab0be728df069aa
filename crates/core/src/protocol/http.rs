//! HTTP on hyper — HTTP/1.1, HTTP/2 over TLS (ALPN `h2`, with an `http/1.1` fallback) and
//! cleartext HTTP/2 with prior knowledge — handing requests to the bridge. TLS handshakes run in
//! the connection task under a timeout, never in the accept loop.

use super::head_watch::{answer_request_timeout, is_header_timeout, Activity, HeadWatch, Watched};
use super::ws;
use crate::bridge::{
    simple_response, Bridge, ProtocolChoice, RequestBody, RequestBodyPump, RequestHead,
    ResponseBody, INLINE_BODY_LIMIT,
};
use crate::config::{Endpoints, Http2Settings, Limits, LiveLimits, ServerConfig, WsSettings};
use crate::lifecycle::{BoxFuture, ConnectionHandler, Phase, PhaseSignal};
use crate::tls::{PeerInfo, TlsSource};
use arc_swap::ArcSwapOption;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection knows about itself, shared by its requests.
struct ConnectionInfo {
    remote: SocketAddr,
    local_port: u16,
    peer: Option<Arc<PeerInfo>>,
    /// The connection's phase (and its place in the connection count), which a WebSocket
    /// upgraded from it carries on.
    phase: PhaseSignal,
}

/// The same HTTP/2 settings on hyper's builder and on hyper-util's (different types, same methods).
macro_rules! configure_http2 {
    ($b:expr, $settings:expr) => {{
        let settings: &Http2Settings = $settings;
        $b.timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list_size)
            .max_send_buf_size(settings.max_send_buffer_size);
        if let Some(window) = settings.initial_window_size {
            $b.initial_stream_window_size(window)
                .initial_connection_window_size(window.saturating_mul(4));
        }
        if let Some(interval) = settings.keep_alive_interval {
            $b.keep_alive_interval(interval)
                .keep_alive_timeout(settings.keep_alive_timeout);
        }
    }};
}

#[derive(Clone, Copy)]
enum Mode {
    Http1,
    Http2,
    /// Cleartext port serving both: HTTP/2 when the client opens with the preface.
    Detect,
}

/// How long the handler may take to choose a subprotocol (`handleProtocols` is synchronous; this
/// only bounds a JavaScript thread that is stuck).
const PROTOCOL_CHOICE_TIMEOUT: Duration = Duration::from_secs(10);

/// An announced WebSocket that has not been handed its socket: dropped (refused, or the client
/// left while the handler chose), it tells the handler the connection ended.
struct UnopenedWebSocket<'a> {
    bridge: &'a Bridge,
    id: u32,
    reason: &'static str,
    /// Set once the connection task owns the WebSocket (it reports the end itself).
    handed_over: bool,
}

impl Drop for UnopenedWebSocket<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.bridge.ws_closed(self.id, 1006, self.reason.to_owned());
        }
    }
}

/// Serves HTTP connections for one server: the protocol part of the lifecycle.
pub struct HttpProtocol {
    bridge: Bridge,
    limits: LiveLimits,
    tls: Option<Arc<TlsSource>>,
    /// `None`: HTTP/1.1 only. Swapped by `updateConfig` (new connections take the new one).
    http2: ArcSwapOption<Http2Settings>,
    endpoints: Endpoints,
    /// `Some`: upgrade requests become WebSocket connections (the `ws`/`wss` server). Swapped by
    /// `updateConfig` (new WebSockets take the new one).
    websocket: ArcSwapOption<WsSettings>,
}

impl HttpProtocol {
    pub fn new(
        bridge: Bridge,
        limits: LiveLimits,
        tls: Option<Arc<TlsSource>>,
        http2: Option<Http2Settings>,
        endpoints: Endpoints,
        websocket: Option<WsSettings>,
    ) -> Self {
        HttpProtocol {
            bridge,
            limits,
            tls,
            http2: ArcSwapOption::from(http2.map(Arc::new)),
            endpoints,
            websocket: ArcSwapOption::from(websocket.map(Arc::new)),
        }
    }

    /// Accepts a WebSocket upgrade: announces the connection (with its upgrade request) to the
    /// handler, answers 101, and runs it in its own task once hyper hands the socket over. The
    /// subprotocol is the first one offered, unless `handleProtocols` is set: then the 101 waits
    /// for the handler's choice.
    async fn upgrade(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
        settings: Arc<WsSettings>,
    ) -> Response<ResponseBody> {
        let handshake = match ws::check_handshake(req.headers()) {
            Ok(h) => h,
            Err(refusal) => return refusal.response(),
        };
        let choose_in_js = settings.choose_protocol && !handshake.protocols.is_empty();
        let head = RequestHead {
            id: 0,
            method: req.method().as_str().to_owned(),
            url: req.uri().to_string(),
            headers: crate::bridge::flat_headers(req.headers()),
            http_version: 11,
            remote: conn.remote,
            local_port: conn.local_port,
            encrypted: conn.peer.is_some(),
            peer: conn.peer.clone(),
            body: RequestBody::Upgrade,
        };
        let Some(opened) = self.bridge.open_websocket(head, choose_in_js) else {
            return closing(StatusCode::SERVICE_UNAVAILABLE);
        };
        let id = opened.id;
        // Until the socket is handed over, an upgrade that does not happen (refused, or the client
        // gone while the handler chose) must still end the connection the handler was told of.
        let mut pending = UnopenedWebSocket {
            bridge: &self.bridge,
            id,
            reason: "upgrade abandoned",
            handed_over: false,
        };
        let protocol = match opened.protocol_choice {
            None => handshake.protocols.into_iter().next(),
            Some(choice) => match tokio::time::timeout(PROTOCOL_CHOICE_TIMEOUT, choice).await {
                Ok(Ok(ProtocolChoice::Selected(p))) => Some(p),
                Ok(Ok(ProtocolChoice::NoProtocol)) => None,
                Ok(Ok(ProtocolChoice::Failed)) => {
                    pending.reason = "handleProtocols failed";
                    return closing(StatusCode::INTERNAL_SERVER_ERROR);
                }
                Ok(Err(_)) | Err(_) => {
                    pending.reason = "no subprotocol choice from the handler";
                    return closing(StatusCode::SERVICE_UNAVAILABLE);
                }
            },
        };
        let Ok(response) = ws::switching_protocols(&handshake.accept, protocol.as_deref()) else {
            pending.reason = "handleProtocols chose a value that is not a valid header value";
            return closing(StatusCode::INTERNAL_SERVER_ERROR);
        };
        pending.handed_over = true;
        let on_upgrade = hyper::upgrade::on(req);
        let bridge = self.bridge.clone();
        let phase = conn.phase.clone();
        let outbound = opened.outbound;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    ws::run(upgraded, bridge, id, (*settings).clone(), outbound, phase).await
                }
                Err(e) => bridge.ws_closed(id, 1006, format!("upgrade failed: {e}")),
            }
        });
        response
    }

    /// `/healthz`, `/readyz` and `/metrics` when enabled, answered here without JavaScript.
    fn native_endpoint(&self, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return None;
        }
        let path = req.uri().path();
        let is = |p: &Option<String>| p.as_deref() == Some(path);
        let metrics = self.bridge.metrics();
        let (status, content_type, body) = if is(&self.endpoints.healthz) {
            (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok".to_string(),
            )
        } else if is(&self.endpoints.readyz) {
            if metrics.accepting() {
                (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready".to_string(),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "shutting down".to_string(),
                )
            }
        } else if is(&self.endpoints.metrics) {
            let text = metrics
                .snapshot()
                .prometheus(self.bridge.pending_count(), metrics.accepting());
            (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        } else {
            return None;
        };
        let mut r = Response::new(ResponseBody::full(Some(bytes::Bytes::from(body))));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        Some(r)
    }

    fn http1_builder(&self) -> http1::Builder {
        let limits = self.limits.load();
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .max_header_size(limits.max_header_size)
            .header_read_timeout(header_read_timeout(&limits));
        b
    }

    fn http2_builder(&self, settings: &Http2Settings) -> http2::Builder<TokioExecutor> {
        let mut b = http2::Builder::new(TokioExecutor::new());
        configure_http2!(b, settings);
        b
    }

    /// HTTP/1.1 and HTTP/2 on one cleartext port, chosen by the first bytes (the h2 preface).
    fn detecting_builder(&self, settings: &Http2Settings) -> auto::Builder<TokioExecutor> {
        let limits = self.limits.load();
        let mut b = auto::Builder::new(TokioExecutor::new());
        // This builder has no header-size setting; its read buffer bounds the request head instead
        // (hyper answers 431 past it; 8 KiB is hyper's minimum).
        b.http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(limits.max_header_size.max(8192))
            .header_read_timeout(header_read_timeout(&limits));
        let mut h2 = b.http2();
        configure_http2!(h2, settings);
        b
    }

    /// hyper leaves a HEAD response's body out on HTTP/1 but sends it on HTTP/2, where clients
    /// (node, curl) then reset the stream: the body is dropped here, its length kept.
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
    ) -> Response<ResponseBody> {
        let head_on_h2 = req.version() == Version::HTTP_2 && req.method() == http::Method::HEAD;
        let response = self.respond(req, conn).await;
        if !head_on_h2 {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let body = body.for_head(&mut parts.headers);
        Response::from_parts(parts, body)
    }

    async fn respond(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
    ) -> Response<ResponseBody> {
        if self.endpoints.any() {
            if let Some(answer) = self.native_endpoint(&req) {
                return answer;
            }
        }
        if let Some(settings) = self.websocket.load_full() {
            if ws::is_upgrade(req.headers(), req.method()) {
                return self.upgrade(req, conn, settings).await;
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
        if req.version() == Version::HTTP_11 && !req.headers().contains_key(http::header::HOST) {
            return closing(StatusCode::BAD_REQUEST);
        }
        let limits = self.limits.load_full();
        let deadline = Instant::now() + limits.request_timeout;
        let (parts, body) = req.into_parts();
        let declared = body.size_hint().exact();
        if let (Some(max), Some(len)) = (limits.max_body_size, declared) {
            if len > max {
                return closing(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
        let (body_kind, pump) = if body.is_end_stream() {
            (RequestBody::Empty, None)
        } else if declared.is_some_and(|len| len <= INLINE_BODY_LIMIT) {
            match tokio::time::timeout_at(deadline, body.collect()).await {
                Ok(Ok(collected)) => {
                    let bytes = collected.to_bytes();
                    self.bridge.metrics().bytes_received(bytes.len());
                    (RequestBody::Inline(bytes), None)
                }
                Ok(Err(_)) => return closing(StatusCode::BAD_REQUEST),
                Err(_) => return closing(StatusCode::REQUEST_TIMEOUT),
            }
        } else {
            (RequestBody::Streamed, Some(RequestBodyPump::new(body)))
        };
        let (http_version, url, headers) = if parts.version == Version::HTTP_2 {
            (
                20,
                h2_path(&parts.uri),
                h2_headers(&parts, conn.peer.is_some()),
            )
        } else {
            let version = match parts.version {
                Version::HTTP_10 => 10,
                Version::HTTP_09 => 9,
                _ => 11,
            };
            (
                version,
                parts.uri.to_string(),
                crate::bridge::flat_headers(&parts.headers),
            )
        };
        let head = RequestHead {
            id: 0,
            method: parts.method.as_str().to_owned(),
            url,
            headers,
            http_version,
            remote: conn.remote,
            local_port: conn.local_port,
            encrypted: conn.peer.is_some(),
            peer: conn.peer.clone(),
            body: body_kind,
        };
        self.bridge.dispatch(head, pump, &limits, deadline).await
    }

    /// Serves one connection (plain or TLS) with HTTP/1.1 or HTTP/2.
    async fn serve_io<I>(
        self: Arc<Self>,
        io: I,
        info: ConnectionInfo,
        mode: Mode,
        phase: PhaseSignal,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let info = Arc::new(ConnectionInfo {
            phase: phase.clone(),
            ..info
        });
        let (head_watch, first) = watch_connection(&self.limits.load());
        let this = self.clone();
        let begun = first.clone();
        let heads = head_watch.clone();
        let service = service_fn(move |req| {
            begun.mark();
            heads.head_complete();
            let this = this.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(this.handle(req, &info).await) }
        });
        // Sockets are watched for slow HTTP/1 request heads (408) and for connectionTimeout.
        let http2 = self.http2.load_full();
        let header_timeout = match (mode, http2.as_deref()) {
            (Mode::Http2, Some(settings)) => {
                let conn = self
                    .http2_builder(settings)
                    .serve_connection(TokioIo::new(Watched::new(io, head_watch.clone())), service);
                drive(conn, phase, first, |c| c.graceful_shutdown()).await;
                false
            }
            (Mode::Detect, Some(settings)) => {
                let builder = self.detecting_builder(settings);
                let conn = builder
                    .serve_connection(TokioIo::new(Watched::new(io, head_watch.clone())), service);
                let ended = drive(conn, phase, first, |c| c.graceful_shutdown()).await;
                matches!(ended, Some(Err(e)) if is_header_timeout(&*e))
            }
            _ if self.websocket.load().is_some() => {
                let conn = self
                    .http1_builder()
                    .serve_connection(TokioIo::new(Watched::new(io, head_watch.clone())), service)
                    .with_upgrades();
                let ended = drive(conn, phase, first, |c| c.graceful_shutdown()).await;
                matches!(ended, Some(Err(e)) if is_header_timeout(&e))
            }
            _ => {
                let conn = self
                    .http1_builder()
                    .serve_connection(TokioIo::new(Watched::new(io, head_watch.clone())), service);
                let ended = drive(conn, phase, first, |c| c.graceful_shutdown()).await;
                matches!(ended, Some(Err(e)) if is_header_timeout(&e))
            }
        };
        // The socket comes back only if a request head had begun; an idle one is closed silently.
        if let Some(io) = head_watch.take_reclaimed() {
            if header_timeout {
                answer_request_timeout(io).await;
            }
        }
    }
}

/// Runs a connection until it ends; drains it (HTTP/1: `Connection: close` after the response in
/// flight, idle ones closed; HTTP/2: GOAWAY) when the phase says so, and drops it when forced.
/// Returns the connection's own outcome, or `None` when it was dropped (forced).
pub(crate) async fn drive<C: Future>(
    conn: C,
    phase: PhaseSignal,
    first: Arc<FirstRequest>,
    drain: impl Fn(std::pin::Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut draining_signal = phase.clone();
    let mut forced_signal = phase;
    let mut draining = false;
    let mut drained = false;
    loop {
        let quiet_left = first
            .idle
            .as_ref()
            .map(|(limit, activity)| activity.quiet_left(*limit));
        tokio::select! {
            ended = conn.as_mut() => return Some(ended),
            // connectionTimeout: no byte moved for that long. The connection drains as at
            // shutdown, so a request still in flight (a quiet long poll) completes first.
            _ = tokio::time::sleep(quiet_left.unwrap_or_default()), if quiet_left.is_some() && !drained => {
                if quiet_left.is_some_and(|left| left.is_zero()) {
                    tracing::debug!("connection idle past connectionTimeout; closing");
                    drained = true;
                    drain(conn.as_mut());
                }
            }
            _ = draining_signal.reached(Phase::Draining), if !draining => draining = true,
            // A connection that has not begun a request yet may have one on the wire: give it a
            // moment before draining (hyper would close such a connection at once).
            _ = first.begun_or(FRESH_CONNECTION_GRACE), if draining && !drained => {
                drained = true;
                drain(conn.as_mut());
            }
            _ = forced_signal.reached(Phase::Forced) => return None,
        }
    }
}

/// What a connection task watches: its socket (a begun request head, and when bytes last moved if
/// there is a `connectionTimeout`) and its first request.
pub(crate) fn watch_connection<I>(limits: &Limits) -> (Arc<HeadWatch<I>>, Arc<FirstRequest>) {
    let idle = limits
        .connection_timeout
        .map(|limit| (limit, Activity::new()));
    let watch = HeadWatch::new(idle.as_ref().map(|(_, a)| a.clone()));
    (watch, Arc::new(FirstRequest::with_idle(idle)))
}

/// How long a draining connection that has not begun its first request waits for one.
pub(crate) const FRESH_CONNECTION_GRACE: Duration = Duration::from_millis(1000);

/// Whether a connection has begun its first request (set by the service, read when draining), and
/// its idle limit (`connectionTimeout`) with the clock its socket stamps.
#[derive(Default)]
pub(crate) struct FirstRequest {
    begun: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    idle: Option<(Duration, Arc<Activity>)>,
}

impl FirstRequest {
    pub(crate) fn with_idle(idle: Option<(Duration, Arc<Activity>)>) -> Self {
        FirstRequest {
            idle,
            ..Default::default()
        }
    }

    pub(crate) fn mark(&self) {
        if !self.begun.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Resolves at once if a request has begun, else when one does or `grace` passes.
    async fn begun_or(&self, grace: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.begun.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(grace) => {}
        }
    }
}

/// What a gRPC call knows about its connection.
#[derive(Clone)]
pub(crate) struct ConnectionParts {
    pub(crate) remote: SocketAddr,
    pub(crate) local_port: u16,
    pub(crate) peer: Option<Arc<PeerInfo>>,
}

/// The TLS handshake, in the connection task, under `timeout`; abandoned when the server drains.
pub(crate) async fn accept_tls(
    tls: &TlsSource,
    stream: TcpStream,
    timeout: Duration,
    remote: SocketAddr,
    phase: &PhaseSignal,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, PeerInfo)> {
    let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(stream));
    let mut until_forced = phase.clone();
    let tls_stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return None;
            }
        },
        // A handshake under way when draining starts completes (its request is served with the
        // drain); only a forced close abandons it.
        _ = until_forced.reached(Phase::Forced) => return None,
    };
    let peer = tls.peer_info(tls_stream.get_ref().1);
    Some((tls_stream, peer))
}

/// node's http2 compatibility API shows the request target as `:path` (path and query).
fn h2_path(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

/// Pseudo-headers first, as node's http2 compatibility API includes them in `req.headers`.
fn h2_headers(parts: &http::request::Parts, encrypted: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(parts.headers.len() * 2 + 8);
    out.push(":method".to_owned());
    out.push(parts.method.as_str().to_owned());
    if let Some(authority) = parts.uri.authority() {
        out.push(":authority".to_owned());
        out.push(authority.as_str().to_owned());
    }
    out.push(":scheme".to_owned());
    out.push(
        parts
            .uri
            .scheme_str()
            .unwrap_or(if encrypted { "https" } else { "http" })
            .to_owned(),
    );
    out.push(":path".to_owned());
    out.push(h2_path(&parts.uri));
    out.extend(crate::bridge::flat_headers(&parts.headers));
    out
}

/// hyper's header-read timer runs from the moment a connection waits for the next request head, so
/// it bounds both idle keep-alive time and slow header senders (slowloris): the smaller of
/// `keepAliveTimeout` and `headersTimeout` applies (0 = that limit is off). Doing the idle timer
/// here rather than with a per-request activity signal keeps the hot path free of extra wake-ups.
fn header_read_timeout(limits: &Limits) -> Option<Duration> {
    [limits.keep_alive_timeout, limits.headers_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
}

fn closing(status: StatusCode) -> Response<ResponseBody> {
    let mut r = simple_response(status);
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

impl ConnectionHandler for HttpProtocol {
    fn update_settings(&self, config: &ServerConfig) {
        // Whether HTTP/2 or WebSockets are served at all does not change without a restart.
        if self.http2.load().is_some() {
            if let Some(h2) = &config.http2 {
                self.http2.store(Some(Arc::new(h2.clone())));
            }
        }
        if self.websocket.load().is_some() {
            if let Some(ws) = &config.websocket {
                self.websocket.store(Some(Arc::new(ws.clone())));
            }
        }
    }

    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        phase: PhaseSignal,
    ) -> BoxFuture {
        Box::pin(async move {
            let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
            let Some(tls) = self.tls.clone() else {
                // Cleartext HTTP/2 (prior knowledge) is told apart from HTTP/1.1 by its preface.
                let mode = if self.http2.load().as_ref().is_some_and(|s| s.cleartext) {
                    Mode::Detect
                } else {
                    Mode::Http1
                };
                let info = ConnectionInfo {
                    remote,
                    local_port,
                    peer: None,
                    phase: phase.clone(),
                };
                return self.serve_io(stream, info, mode, phase).await;
            };
            let handshake_timeout = self.limits.load().handshake_timeout;
            let Some((tls_stream, peer)) =
                accept_tls(&tls, stream, handshake_timeout, remote, &phase).await
            else {
                return;
            };
            let mode = if peer.alpn.as_deref() == Some("h2") {
                Mode::Http2
            } else {
                Mode::Http1
            };
            if matches!(mode, Mode::Http1)
                && self.http2.load().as_ref().is_some_and(|h| !h.allow_http1)
            {
                // HTTP/2 only (`allowHTTP1: false`) and the client did not choose h2: refuse it.
                tracing::debug!(%remote, "client without h2 ALPN refused (allowHTTP1 is false)");
                return;
            }
            let info = ConnectionInfo {
                remote,
                local_port,
                peer: Some(Arc::new(peer)),
                phase: phase.clone(),
            };
            self.serve_io(tls_stream, info, mode, phase).await
        })
    }

    fn reject(self: Arc<Self>, mut stream: TcpStream) -> BoxFuture {
        Box::pin(async move {
            if self.tls.is_some() {
                // Nothing readable can be said before a handshake; close at once.
                return;
            }
            const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nService Unavailable";
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(BUSY).await;
                let _ = stream.shutdown().await;
            })
            .await;
        })
    }
}
