//! HTTP on hyper — HTTP/1.1, HTTP/2 over TLS (ALPN `h2`, with an `http/1.1` fallback) and
//! cleartext HTTP/2 with prior knowledge — handing requests to the bridge. TLS handshakes run in
//! the connection task under a timeout, never in the accept loop.

mod request_body;

use super::ws;
use crate::bridge::{
    simple_response, Bridge, ClientError, CloseConnection, FlatHeaders, ProtocolChoice,
    RefuseStream, RequestBody, RequestHead, ResponseBody, StatusReason, Unanswered,
    INLINE_BODY_LIMIT,
};
use crate::config::{Endpoints, Http2Settings, Limits, LiveLimits, ServerConfig, WsSettings};
use crate::conn::watch::{answer_request_timeout, is_header_timeout, Watched};
use crate::conn::{
    configure_http2, drive, establish, http2_builder, watch_connection, ConnRequests, ConnStream,
    ConnectionInfo, Preface, Tracked,
};
use crate::lifecycle::{BoxFuture, ConnectionHandler, Phase, PhaseSignal};
use crate::pool::WireProtocol;
use crate::tls::TlsSource;
use arc_swap::ArcSwapOption;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use request_body::RequestBodyPump;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

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
            remote_ip: conn.remote_ip.clone(),
            local_port: conn.local_port,
            encrypted: conn.peer.is_some(),
            peer: conn.peer.clone(),
            body: RequestBody::Upgrade,
        };
        let Some(opened) = self.bridge.open_websocket(head, choose_in_js).await else {
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
        let messages = opened.messages;
        let queues = ws::Outbound {
            control: outbound,
            messages,
        };
        tokio::spawn(ws::run(
            on_upgrade,
            bridge,
            id,
            settings.clone(),
            queues,
            phase,
        ));
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
        // Names go out in title case: hyper cannot keep the case the handler gave (node does;
        // README "Differences from node"), and title case is what handlers almost always write.
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .title_case_headers(true)
            .max_header_size(limits.max_header_size)
            .header_read_timeout(limits.header_read_timeout());
        if let Some(max) = custom_max_headers(&limits) {
            b.max_headers(max);
        }
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
            .title_case_headers(true)
            .max_buf_size(limits.max_header_size.max(8192))
            .header_read_timeout(limits.header_read_timeout());
        if let Some(max) = custom_max_headers(&limits) {
            b.http1().max_headers(max);
        }
        let mut h2 = b.http2();
        configure_http2!(h2, settings);
        b
    }

    /// hyper leaves a HEAD response's body out on HTTP/1 but sends it on HTTP/2, where clients
    /// (node, curl) then reset the stream: the body is dropped here, its length kept. On HTTP/1
    /// the `Connection`/`Keep-Alive` headers are node's. A handler that destroyed the request
    /// gets no response at all: the error makes hyper close the connection (HTTP/2: reset the
    /// stream) without writing.
    /// `ordinal`: the request's place on its connection (node's `maxRequestsPerSocket` on HTTP/1:
    /// the last one allowed closes the connection after its response, one past it gets 503).
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
        requests: &Arc<ConnRequests>,
        ordinal: usize,
    ) -> Result<Response<ResponseBody>, Unanswered> {
        let version = req.version();
        let head_on_h2 = version == Version::HTTP_2 && req.method() == http::Method::HEAD;
        let client_keeps_alive = client_wants_keep_alive(&req);
        let max_requests = match version {
            Version::HTTP_11 | Version::HTTP_10 => self.limits.load().max_requests_per_socket,
            _ => None,
        };
        if max_requests.is_some_and(|max| ordinal > max) {
            return Ok(closing(StatusCode::SERVICE_UNAVAILABLE));
        }
        let last_allowed = max_requests.is_some_and(|max| ordinal == max);
        if last_allowed {
            requests.close_after_response();
        }
        let mut response = self.respond(req, conn, requests).await;
        if let Some(unanswered) = Unanswered::marked(&response) {
            return Err(unanswered);
        }
        // The handler's reason phrase, in hyper's terms (HTTP/1 writes it).
        if let Some(StatusReason(reason)) = response.extensions_mut().remove::<StatusReason>() {
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason) {
                response.extensions_mut().insert(phrase);
            }
        }
        if let (Version::HTTP_11 | Version::HTTP_10, Some(client_keeps_alive)) =
            (version, client_keeps_alive)
        {
            // The server's shutdown, or this connection's own drain: hyper would append its
            // `close` to a `keep-alive` (node says `close`).
            let draining = conn.phase.current() != Phase::Running || requests.closing();
            // The hint is the idle time the connection really gets: one timer serves it and
            // headersTimeout (`Limits::header_read_timeout`), so the smaller of the two.
            let limits = self.limits.load();
            let idle = match limits.keep_alive_timeout {
                off if off.is_zero() => off,
                keep_alive => limits.header_read_timeout().unwrap_or(keep_alive),
            };
            node_connection_headers(
                &mut response,
                version,
                client_keeps_alive && !draining && !last_allowed,
                idle,
            );
        }
        if !head_on_h2 {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        let body = body.for_head(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    async fn respond(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
        requests: &Arc<ConnRequests>,
    ) -> Response<ResponseBody> {
        if self.endpoints.any() {
            if let Some(answer) = self.native_endpoint(&req) {
                return answer;
            }
        }
        if conn.refuses_new_work(self.bridge.metrics()) {
            // A stream opened before the client saw the GOAWAY: REFUSED_STREAM, which clients
            // retry (a 503 would count as processed).
            if req.version() == Version::HTTP_2 {
                return RefuseStream::response(ResponseBody::full(None));
            }
            let mut refused = closing(StatusCode::SERVICE_UNAVAILABLE);
            refused
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return refused;
        }
        if let Some(settings) = self.websocket.load_full() {
            if ws::is_upgrade(req.headers(), req.method()) {
                return self.upgrade(req, conn, settings).await;
            }
        }
        // HTTP/2 has a header-list size limit but no count: node:http's maxHeadersCount applies.
        if req.version() == Version::HTTP_2
            && req.headers().len() > self.limits.load().header_fields_limit()
        {
            return simple_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
        if req.version() == Version::HTTP_11 && !req.headers().contains_key(http::header::HOST) {
            return closing(StatusCode::BAD_REQUEST);
        }
        // node's parser knows its methods (`http.METHODS`, upper case) and answers 400 to any
        // other; hyper takes every token, and the app then answered 500 or 404 to `FOOBAR`.
        if req.version() <= Version::HTTP_11 && !is_node_method(req.method()) {
            self.bridge.client_error(ClientError {
                code: "HPE_INVALID_METHOD",
                message: "Invalid method encountered".into(),
                remote: conn.remote,
            });
            return closing(StatusCode::BAD_REQUEST);
        }
        let limits = self.limits.load_full();
        let deadline = limits.request_deadline(Instant::now());
        let (parts, body) = req.into_parts();
        let declared = body.size_hint().exact();
        if let (Some(max), Some(len)) = (limits.max_body_size, declared) {
            if len > max {
                return closing(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
        // The client waits for `100 Continue` before sending the body, which hyper sends at the
        // first read: the handler sees the head first and may refuse (node's 'checkContinue').
        let awaits_continue = parts.version == Version::HTTP_11
            && parts
                .headers
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (body_kind, pump) = if body.is_end_stream() {
            (RequestBody::Empty, None)
        } else if awaits_continue {
            (
                RequestBody::Streamed,
                Some(RequestBodyPump::after_continue(body)),
            )
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
            let path = h2_path(&parts.uri);
            let headers = h2_headers(&parts, &path, conn.peer.is_some());
            (20, path, headers)
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
            remote_ip: conn.remote_ip.clone(),
            local_port: conn.local_port,
            encrypted: conn.peer.is_some(),
            peer: conn.peer.clone(),
            body: body_kind,
        };
        // HTTP/1 only: an HTTP/2 stream that overran its length is cut alone.
        let connection = (http_version < 20).then(|| requests.clone() as Arc<dyn CloseConnection>);
        self.bridge
            .dispatch(head, pump, &limits, deadline, connection)
            .await
    }

    /// Picks HTTP/1.1 or HTTP/2 for a ready connection: by ALPN over TLS, by the preface on a
    /// cleartext port that serves both (`h2c`).
    fn mode_for(&self, info: &ConnectionInfo) -> Option<Mode> {
        let http2 = self.http2.load();
        if info.peer.is_none() {
            return Some(if http2.as_ref().is_some_and(|s| s.cleartext) {
                Mode::Detect
            } else {
                Mode::Http1
            });
        }
        if info.alpn() == Some("h2") {
            return Some(Mode::Http2);
        }
        if http2.as_ref().is_some_and(|h| !h.allow_http1) {
            // HTTP/2 only (`allowHTTP1: false`) and the client did not choose h2: refuse it.
            tracing::debug!(remote = %info.remote, "client without h2 ALPN refused (allowHTTP1 is false)");
            return None;
        }
        Some(Mode::Http1)
    }

    /// Serves one connection (plain or TLS) with HTTP/1.1 or HTTP/2.
    async fn serve_io(self: Arc<Self>, io: ConnStream, info: ConnectionInfo, mode: Mode) {
        let phase = info.phase.clone();
        let remote = info.remote;
        let (protocol, http2_frames) = match mode {
            Mode::Http1 => (WireProtocol::Http1, None),
            Mode::Http2 => (WireProtocol::Http2, Some(true)),
            // The first request (the client preface, for the frames) tells.
            Mode::Detect => (WireProtocol::Unknown, Some(false)),
        };
        let (head_watch, requests) = {
            let limits = self.limits.load();
            let (head_watch, requests) =
                watch_connection(&limits, io.socket_fd(), &phase, protocol);
            // h2c is known from its preface, already waiting in the socket: a session that never
            // makes a request is then drained as HTTP/2 is (GOAWAY at once), not as a fresh
            // HTTP/1 connection that may have a request on the wire. A part of the preface alone
            // gets the header timer a parser would run: hyper waits for the rest with none.
            if matches!(mode, Mode::Detect) {
                match crate::conn::peek_preface(io.socket_fd()) {
                    Preface::Http2 => requests.learned(true),
                    Preface::Partial => {
                        if let Some(within) = limits.header_read_timeout() {
                            requests.detect_within(within);
                        }
                    }
                    Preface::Other => {}
                }
            }
            (head_watch, requests)
        };
        let info = Arc::new(info);
        let this = self.clone();
        let tracker = requests.clone();
        let heads = head_watch.clone();
        let detecting = matches!(mode, Mode::Detect);
        let answer = move |req: Request<Incoming>| {
            if detecting {
                tracker.learned(req.version() == Version::HTTP_2);
            }
            // In flight until its response body is dropped (a drained connection waits for it).
            let in_flight = tracker.started();
            let ordinal = tracker.count_request();
            heads.head_complete();
            let this = this.clone();
            let info = info.clone();
            async move {
                let response = this
                    .handle(req, &info, in_flight.connection(), ordinal)
                    .await?;
                Ok::<_, Unanswered>(response.map(|body| Tracked::new(body, in_flight)))
            }
        };
        // HTTP/2 boxes each request's future: it is ≈ 3 KB (every protocol's answer path) and
        // hyper moves it into a task of its own per stream, where a pointer moves instead (+5 %
        // req/s, bench/RESULTS.md). HTTP/1 keeps it in the connection's task, unmoved: a box
        // there is an allocation for nothing.
        // Sockets are watched for slow HTTP/1 request heads (408) and for connectionTimeout.
        let http2 = self.http2.load_full();
        type ConnError = Box<dyn std::error::Error + Send + Sync>;
        let boxed = |e: hyper::Error| Box::new(e) as ConnError;
        let error: Option<ConnError> = match (mode, http2.as_deref()) {
            (Mode::Http2, Some(settings)) => {
                let io = Watched::new(io, head_watch.clone(), http2_frames);
                let conn = http2_builder(settings).serve_connection(
                    TokioIo::new(io),
                    service_fn(move |req| Box::pin(answer(req))),
                );
                drive(conn, phase, requests.clone(), |c| c.graceful_shutdown()).await;
                None
            }
            (Mode::Detect, Some(settings)) => {
                let builder = self.detecting_builder(settings);
                let io = Watched::new(io, head_watch.clone(), http2_frames);
                let conn = builder.serve_connection(
                    TokioIo::new(io),
                    service_fn(move |req| Box::pin(answer(req))),
                );
                let ended = drive(conn, phase, requests.clone(), |c| c.graceful_shutdown()).await;
                ended.and_then(Result::err)
            }
            _ if self.websocket.load().is_some() => {
                let conn = self
                    .http1_builder()
                    .serve_connection(
                        TokioIo::new(Watched::new(io, head_watch.clone(), None)),
                        service_fn(answer),
                    )
                    .with_upgrades();
                let ended = drive(conn, phase, requests.clone(), |c| c.graceful_shutdown()).await;
                ended.and_then(Result::err).map(boxed)
            }
            _ => {
                let conn = self.http1_builder().serve_connection(
                    TokioIo::new(Watched::new(io, head_watch.clone(), None)),
                    service_fn(answer),
                );
                let ended = drive(conn, phase, requests.clone(), |c| c.graceful_shutdown()).await;
                ended.and_then(Result::err).map(boxed)
            }
        };
        let (header_timeout, refused) = match error.as_deref() {
            Some(e) => (is_header_timeout(e), refused_head(e)),
            None => (false, None),
        };
        // The socket comes back only if a request head had begun; an idle one is closed silently.
        if let Some(io) = head_watch.take_reclaimed() {
            if header_timeout {
                answer_request_timeout(io).await;
                self.bridge.client_error(ClientError {
                    code: "ERR_HTTP_REQUEST_TIMEOUT",
                    message: "Request timeout".into(),
                    remote,
                });
            }
        }
        if let Some((code, message)) = refused {
            self.bridge.client_error(ClientError {
                code,
                message,
                remote,
            });
        }
    }
}

/// A request head hyper refused (and answered: 400, 414 or 431), as node's `'clientError'` code
/// (llhttp's) and message; `None` for any other end of a connection.
/// node's `http.METHODS` (node 20): what its HTTP/1 parser accepts, sorted.
const NODE_METHODS: [&str; 35] = [
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "M-SEARCH",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// Whether node's HTTP/1 parser accepts `method`.
fn is_node_method(method: &http::Method) -> bool {
    // The common ones without a search.
    matches!(
        *method,
        http::Method::GET | http::Method::POST | http::Method::HEAD
    ) || NODE_METHODS.binary_search(&method.as_str()).is_ok()
}

fn refused_head(error: &(dyn std::error::Error + 'static)) -> Option<(&'static str, String)> {
    let e = error.downcast_ref::<hyper::Error>()?;
    if !e.is_parse() {
        return None;
    }
    let text = e.to_string();
    let code = [
        ("invalid HTTP method", "HPE_INVALID_METHOD"),
        ("invalid HTTP version", "HPE_INVALID_VERSION"),
        ("invalid URI", "HPE_INVALID_URL"),
        ("URI too long", "HPE_HEADER_OVERFLOW"),
        ("message head is too large", "HPE_HEADER_OVERFLOW"),
        ("invalid HTTP header", "HPE_INVALID_HEADER_TOKEN"),
        ("invalid content-length", "HPE_INVALID_CONTENT_LENGTH"),
        ("invalid transfer-encoding", "HPE_INVALID_TRANSFER_ENCODING"),
        (
            "unexpected transfer-encoding",
            "HPE_INVALID_TRANSFER_ENCODING",
        ),
    ]
    .iter()
    .find(|(prefix, _)| text.starts_with(prefix))
    .map_or("HPE_INTERNAL", |(_, code)| code);
    Some((code, format!("Parse Error: {text}")))
}

/// node's http2 compatibility API shows the request target as `:path` (path and query).
fn h2_path(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

/// Pseudo-headers first, as node's http2 compatibility API includes them in `req.headers`.
fn h2_headers(parts: &http::request::Parts, path: &str, encrypted: bool) -> FlatHeaders {
    let authority = parts.uri.authority().map(|a| a.as_str());
    let scheme = parts
        .uri
        .scheme_str()
        .unwrap_or(if encrypted { "https" } else { "http" });
    let mut out = FlatHeaders::with_capacity(
        crate::bridge::map_text_len(&parts.headers)
            + 48
            + authority.map_or(0, str::len)
            + scheme.len()
            + path.len(),
    );
    out.push(":method", parts.method.as_str());
    if let Some(authority) = authority {
        out.push(":authority", authority);
    }
    out.push(":scheme", scheme);
    out.push(":path", path);
    out.extend_from_h2_map(&parts.headers);
    out
}

/// hyper parses up to this many header fields in a stack buffer; any other limit costs a heap
/// buffer of that many slots per request head.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The header-field limit to give hyper's HTTP/1 builders, when it is not hyper's own.
fn custom_max_headers(limits: &Limits) -> Option<usize> {
    let max = limits.header_fields_limit();
    (max != HYPER_DEFAULT_MAX_HEADERS).then_some(max)
}

/// Whether the client's request lets the connection live on (hyper's rules): HTTP/1.1 unless it
/// says `Connection: close`, HTTP/1.0 only when it says `Connection: keep-alive`. `None`: hyper
/// decides alone — a request with `Transfer-Encoding` may also have carried `Content-Length`
/// (a smuggling attempt hyper closes after, and whose `Content-Length` it removed from the
/// headers), so the server's own `Connection` header is left to hyper (README "Differences").
fn client_wants_keep_alive<B>(req: &Request<B>) -> Option<bool> {
    let has = |token: &str| {
        req.headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.headers().contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    Some(match req.version() {
        Version::HTTP_11 => !has("close"),
        Version::HTTP_10 => has("keep-alive"),
        _ => false,
    })
}

/// `Connection` and `Keep-Alive` as node's http server writes them (issue 15 §2):
/// `Connection: keep-alive` + `Keep-Alive: timeout=<keepAliveTimeout in whole s>` when the
/// connection lives on, `Connection: close` when it will close (the client asked, the server is
/// draining, or HTTP/1.0 without a known length). A handler's own `Connection` value is kept as
/// it set it, except that a connection that will close says only `close` (node would echo
/// `keep-alive` and hyper append `, close`; README "Differences from node").
fn node_connection_headers(
    response: &mut Response<ResponseBody>,
    version: Version,
    keep_alive: bool,
    keep_alive_timeout: Duration,
) {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if version == Version::HTTP_10 {
        // hyper reads the keep-alive rules of the response's own version: an HTTP/1.1 response
        // on an HTTP/1.0 connection would get `keep-alive` appended to our `close`.
        *response.version_mut() = Version::HTTP_10;
    }
    let closes = |v: &HeaderValue| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    };
    let length_known = match response.body() {
        ResponseBody::Full(_) => true,
        ResponseBody::Unsized { .. } | ResponseBody::Stream(_) => response
            .headers()
            .contains_key(http::header::CONTENT_LENGTH),
    };
    let headers = response.headers_mut();
    insert_date(headers);
    chunked_last(headers);
    let user_set = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .next()
        .is_some();
    if user_set {
        if headers.get_all(http::header::CONNECTION).iter().any(closes) {
            return;
        }
        if keep_alive {
            return;
        }
    }
    let keep_alive = keep_alive && (version == Version::HTTP_11 || length_known);
    if !keep_alive {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return;
    }
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("keep-alive"),
    );
    // A handler's own `Keep-Alive` is kept, as node keeps it.
    let hint = http::header::HeaderName::from_static("keep-alive");
    if !keep_alive_timeout.is_zero() && !headers.contains_key(&hint) {
        headers.insert(hint, keep_alive_value(keep_alive_timeout.as_secs()));
    }
}

/// `timeout=<s>`, formatted once per thread for the value in use (not once per response).
fn keep_alive_value(seconds: u64) -> HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        match &*cached {
            Some((s, value)) if *s == seconds => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&format!("timeout={seconds}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("timeout=5"));
                *cached = Some((seconds, value.clone()));
                value
            }
        }
    })
}

/// A handler's `Transfer-Encoding` that does not end in `chunked` (`gzip`) gets it appended here:
/// HTTP/1.1 needs `chunked` last to frame the body, and hyper's own appending also tacks
/// `, chunked` onto later multi-valued lines (`Connection: keep-alive, chunked`).
fn chunked_last(headers: &mut http::HeaderMap) {
    let Some(last) = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    else {
        return;
    };
    let ends_chunked = last.to_str().is_ok_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
    });
    if !ends_chunked {
        headers.append(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// `Date` as the first of the server's own headers, where node writes it (hyper would append
/// it last). Formatted once per second per thread, as hyper does.
fn insert_date(headers: &mut http::HeaderMap) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((u64::MAX, None)) };
    }
    if headers.contains_key(http::header::DATE) {
        return;
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let value = CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_none() {
            *cached = (
                second,
                HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok(),
            );
        }
        cached.1.clone()
    });
    if let Some(value) = value {
        headers.insert(http::header::DATE, value);
    }
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
            let limits = self.limits.load_full();
            let ready = establish(stream, remote, phase, self.tls.as_deref(), &limits).await;
            let Some((io, info)) = ready else { return };
            let Some(mode) = self.mode_for(&info) else {
                return;
            };
            // Boxed: the parser's state is allocated only once bytes came, so a silent
            // connection's task stays small.
            Box::pin(self.serve_io(io, info, mode)).await
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

#[cfg(test)]
mod tests;
