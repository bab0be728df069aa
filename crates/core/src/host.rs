//! One server as JavaScript sees it: the options of the moment (a restart replaces them), the
//! bridge its requests cross, the gRPC methods the handler registered, the listener, and the one a
//! restart replaced until it is retired. The addon's `NativeServer` only converts to and from
//! this; restart orchestration and the shutdown primitives live here.

use crate::bridge::grpc::{CallStatus, OutMessage};
use crate::bridge::{Bridge, BridgeError, RequestSink, WsOutbound};
use crate::config::ServerConfig;
use crate::error::{Result, ServeError};
use crate::lifecycle::{BindOptions, Sweep};
use crate::metrics::{Metrics, Sections};
use crate::protocol::grpc::{GrpcRegistry, MethodRegistry, RequestShape};
use crate::server::ServeHandle;
use crate::tls::TlsSource;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Largest ping/pong payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// gRPC status RESOURCE_EXHAUSTED (a message over `maxSendMessageLength`).
const RESOURCE_EXHAUSTED: i32 = 8;

/// The options of the moment and the TLS settings built from them.
struct Current {
    config: ServerConfig,
    tls: Option<Arc<TlsSource>>,
}

/// Parses options JSON and builds TLS, so bad settings fail before anything binds.
fn prepare(options_json: &str) -> Result<Current> {
    let value: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
        ServeError::InvalidConfig(crate::config::ConfigError {
            key: "options".into(),
            message: e.to_string(),
        })
    })?;
    let config = ServerConfig::from_options(&value)?;
    let tls = config
        .tls_options()
        .and_then(|o| o.map(TlsSource::new).transpose())?
        .map(Arc::new);
    Ok(Current { config, tls })
}

type Slot = Arc<Mutex<Option<Arc<ServeHandle>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What shutdown step 3 found: whether every connection closed in time, how many were open when
/// it began, how many are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub drained: bool,
    pub open_at_start: usize,
    pub still_open: usize,
}

/// Waits up to `timeout` for every connection of `listeners` to close; whether they all did.
async fn all_closed(listeners: &[Arc<ServeHandle>], timeout: Duration) -> bool {
    let waits = listeners.iter().map(|l| l.lifecycle().wait_closed(timeout));
    futures_util::future::join_all(waits)
        .await
        .into_iter()
        .all(|closed| closed)
}

/// One JavaScript server object's native side. Cheap to clone (the clones share everything).
#[derive(Clone)]
pub struct Host {
    current: Arc<Mutex<Current>>,
    bridge: Bridge,
    grpc_methods: MethodRegistry,
    listener: Slot,
    /// The listener a restart replaced, until [`Host::retire_replaced`].
    replaced: Slot,
    /// Replaced listeners still draining in the background: a shutdown takes them in (their
    /// requests in flight are waited for and forced like the current listener's).
    retiring: Arc<Mutex<Vec<Arc<ServeHandle>>>>,
}

impl Host {
    /// Validates `options_json` and builds TLS (bad settings fail here, before anything binds).
    pub fn new(options_json: &str, sink: Arc<dyn RequestSink>) -> Result<Host> {
        let current = prepare(options_json)?;
        let metrics = Metrics::default();
        metrics.set_sections(Sections::of(current.config.protocol));
        let bridge = Bridge::new(sink, current.config.limits.max_in_flight, Arc::new(metrics));
        Ok(Host {
            current: Arc::new(Mutex::new(current)),
            bridge,
            grpc_methods: Default::default(),
            listener: Default::default(),
            replaced: Default::default(),
            retiring: Default::default(),
        })
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    fn listener(&self) -> Option<Arc<ServeHandle>> {
        lock(&self.listener).clone()
    }

    /// Every listener with connections of this server: the current one, one a restart replaced,
    /// and those still retiring.
    fn all_listeners(&self) -> Vec<Arc<ServeHandle>> {
        let mut all: Vec<_> = self.listener().into_iter().collect();
        all.extend(lock(&self.replaced).clone());
        all.extend(lock(&self.retiring).iter().cloned());
        all
    }

    /// Drains `old` for up to `drain_timeout`, counted among the retiring listeners meanwhile.
    fn retire(
        &self,
        old: Arc<ServeHandle>,
        drain_timeout: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let retiring = self.retiring.clone();
        lock(&retiring).push(old.clone());
        async move {
            old.retire(drain_timeout).await;
            lock(&retiring).retain(|l| !Arc::ptr_eq(l, &old));
        }
    }

    fn config<R>(&self, f: impl FnOnce(&ServerConfig) -> R) -> R {
        f(&lock(&self.current).config)
    }

    /// Whether `auto` TLS mode generated a self-signed development certificate.
    pub fn generated_dev_certificate(&self) -> bool {
        lock(&self.current)
            .tls
            .as_ref()
            .is_some_and(|t| t.generated_dev_certificate())
    }

    /// Re-reads key and certificate for new handshakes (open connections keep theirs).
    pub fn reload_certificates(&self) -> Result<()> {
        match &lock(&self.current).tls {
            Some(t) => Ok(t.reload()?),
            None => Err(ServeError::Tls(crate::tls::TlsError(
                "this server does not use TLS".into(),
            ))),
        }
    }

    /// Binds and starts serving the current options.
    pub async fn listen(&self) -> Result<SocketAddr> {
        let (config, tls) = {
            let c = lock(&self.current);
            (c.config.clone(), c.tls.clone())
        };
        let handle =
            ServeHandle::start(&config, self.bridge.clone(), tls, self.grpc_methods.clone())
                .await?;
        let addr = handle.local_addr();
        *lock(&self.listener) = Some(Arc::new(handle));
        Ok(addr)
    }

    /// Binds `hostname:port` and starts serving the current options before returning, as node's
    /// `server.listen()` does (its `address()` is right at once). Runs within the tokio runtime
    /// (the accept loop is spawned on it); a host name is resolved on the calling thread.
    /// The address becomes the server's `hostname`/`port` options.
    pub fn listen_now(
        &self,
        hostname: Option<&str>,
        port: u16,
        bind: &BindOptions,
    ) -> Result<SocketAddr> {
        let listener = crate::lifecycle::bind_now(hostname, port, bind)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (config, tls) = {
            let mut c = lock(&self.current);
            c.config.hostname = hostname.map(str::to_owned);
            c.config.port = port;
            c.config.reuse_port = bind.reuse_port;
            (c.config.clone(), c.tls.clone())
        };
        let handle = ServeHandle::serve_on(
            &config,
            self.bridge.clone(),
            tls,
            self.grpc_methods.clone(),
            listener,
        )?;
        let addr = handle.local_addr();
        *lock(&self.listener) = Some(Arc::new(handle));
        Ok(addr)
    }

    /// Connections open on every listener of this server (node's `getConnections`).
    pub fn open_connections(&self) -> usize {
        self.all_listeners()
            .iter()
            .map(|l| l.open_connections())
            .sum()
    }

    /// node's `closeIdleConnections()` / `closeAllConnections()`: the connections open now, on
    /// every listener, close when idle or at once (see [`Sweep`]); accepting goes on.
    pub fn sweep(&self, sweep: Sweep) {
        if sweep == Sweep::Idle {
            self.bridge.metrics().connections().mark_busy_for_sweep();
        }
        for l in self.all_listeners() {
            l.sweep(sweep);
        }
    }

    /// Applies new options in place, without a restart: `maxConnections` at the next accept,
    /// timeouts and body limits to new requests, a new TLS key/certificate/passphrase to new
    /// handshakes. `ERR_RESTART_REQUIRED` when they need a restart.
    pub fn apply_in_place(&self, options_json: &str) -> Result<()> {
        let next = prepare(options_json)?;
        let mut current = lock(&self.current);
        if let (Some(now), Some(new_tls)) = (&current.tls, &next.tls) {
            if now.needs_restart_for(&new_tls.options()) {
                return Err(ServeError::RestartRequired(
                    "these ssl settings need a restart".into(),
                ));
            }
            now.adopt(new_tls);
        }
        if current.tls.is_some() != next.tls.is_some() {
            return Err(ServeError::RestartRequired(
                "turning TLS on or off needs a restart".into(),
            ));
        }
        if let Some(l) = self.listener() {
            l.update_limits(next.config.limits.clone());
            l.update_settings(&next.config);
        }
        self.bridge
            .set_max_in_flight(next.config.limits.max_in_flight);
        current.config = next.config;
        Ok(())
    }

    /// Restarts on new options with no refused connection: the new listener is bound first (or,
    /// on the same address, takes the old socket over); the old one keeps accepting until
    /// [`Host::retire_replaced`]. On failure the old server keeps running. A listener still
    /// waiting from an earlier restart drains for up to `drain_timeout` in the background.
    pub async fn restart(&self, options_json: &str, drain_timeout: Duration) -> Result<SocketAddr> {
        let next = prepare(options_json)?;
        let old = self.listener();
        // The same configured address (an ephemeral port included) keeps its socket: handed over.
        let same_address = old.is_some()
            && self.config(|c| c.hostname == next.config.hostname && c.port == next.config.port);
        let socket = match (&old, same_address) {
            (Some(o), true) => o.lifecycle().take_listener().await,
            _ => None,
        };
        let handle = ServeHandle::start_on(
            &next.config,
            self.bridge.clone(),
            next.tls.clone(),
            self.grpc_methods.clone(),
            socket,
        )
        .await?;
        self.bridge
            .set_max_in_flight(next.config.limits.max_in_flight);
        self.bridge
            .metrics()
            .set_sections(Sections::of(next.config.protocol));
        let addr = handle.local_addr();
        *lock(&self.listener) = Some(Arc::new(handle));
        *lock(&self.current) = next;
        let earlier = std::mem::replace(&mut *lock(&self.replaced), old);
        if let Some(earlier) = earlier {
            tokio::spawn(self.retire(earlier, drain_timeout));
        }
        Ok(addr)
    }

    /// The last step of a restart: the replaced listener stops accepting (its backlog is served)
    /// and its connections drain for up to `drain_timeout` — in the future returned, for the
    /// caller to run in the background. JavaScript asks once every request begun before the
    /// switch has connected, so none is reset or refused.
    pub fn retire_replaced(
        &self,
        drain_timeout: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let old = lock(&self.replaced).take();
        let retired = old.map(|old| self.retire(old, drain_timeout));
        async move {
            if let Some(retired) = retired {
                retired.await;
            }
        }
    }

    /// Shutdown step 1: stop new work everywhere — the listening socket closes, and every open
    /// connection is asked to drain (idle keep-alive ones close, HTTP/2 and gRPC get GOAWAY,
    /// WebSockets close 1001) while what is in flight finishes.
    pub async fn stop_accepting(&self) {
        for l in self.all_listeners() {
            let server = l.lifecycle();
            // The listener first: `accepting` turns false (health watchers learn NOT_SERVING,
            // late requests are refused), then every connection, those the close took in from
            // the backlog included, drains.
            server.stop_accepting().await;
            server.begin_draining();
        }
    }

    /// Shutdown step 2: waits up to `timeout` for the open connections to close by themselves
    /// (nothing is asked of them). Returns whether they all did.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        all_closed(&self.all_listeners(), timeout).await
    }

    /// Shutdown step 3: asks every connection (also those kept open through the drain delay) to
    /// finish and close, and waits up to `timeout`.
    pub async fn drain(&self, timeout: Duration) -> Drained {
        let all = self.all_listeners();
        let open = || all.iter().map(|l| l.open_connections()).sum::<usize>();
        let open_at_start = open();
        for l in &all {
            l.lifecycle().begin_closing();
        }
        let drained = all_closed(&all, timeout).await;
        Drained {
            drained,
            open_at_start,
            still_open: open(),
        }
    }

    /// Shutdown step 4: closes every remaining connection now (waits up to `grace` for them).
    /// Returns how many were closed.
    pub async fn force_close(&self, grace: Duration) -> usize {
        let all = self.all_listeners();
        let forced = all.iter().map(|l| l.lifecycle().force_close(grace));
        futures_util::future::join_all(forced)
            .await
            .into_iter()
            .sum()
    }

    /// Shutdown step 5: drops the listeners (steps 1–4 have closed their connections).
    pub fn release(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        lock(&self.listener).take();
        let replaced = self.retire_replaced(Duration::ZERO);
        lock(&self.retiring).clear();
        replaced
    }

    /// The counters now, with the requests pending in the handler and whether the server
    /// accepts, as JSON (`getMetrics()`; one conversion for every field, present and future).
    pub fn metrics_json(&self) -> String {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Report {
            #[serde(flatten)]
            snapshot: crate::metrics::MetricsSnapshot,
            pending_requests: usize,
            accepting: bool,
        }
        let metrics = self.bridge.metrics();
        let report = Report {
            snapshot: self.snapshot(),
            pending_requests: self.bridge.pending_count(),
            accepting: metrics.accepting(),
        };
        serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
    }

    /// The counters now, with the gRPC methods' figures (kept with the method registry).
    fn snapshot(&self) -> crate::metrics::MetricsSnapshot {
        let mut snapshot = self.bridge.metrics().snapshot();
        if let Some(grpc) = &mut snapshot.grpc {
            grpc.calls_by_method = self.grpc_methods.load().method_figures();
        }
        snapshot
    }

    /// The newest `limit` live connections, newest first, as JSON (`getConnections()`).
    pub fn connections_json(&self, limit: usize) -> String {
        let list = self.bridge.metrics().connections().list(limit);
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    }

    /// Asks live connection `id` to close gracefully (`closeConnection(id)`); false when there is
    /// no such connection.
    pub fn close_connection(&self, id: u64) -> bool {
        self.bridge.metrics().connections().close(id)
    }

    /// Per-second samples of the last `seconds` seconds (at most 300), oldest first, as JSON.
    pub fn metrics_history_json(&self, seconds: usize) -> String {
        let samples = self.bridge.metrics().history(seconds);
        serde_json::to_string(&samples).unwrap_or_else(|_| "[]".into())
    }

    /// The counters in Prometheus text format (what `nativeEndpoints.metrics` serves).
    pub fn prometheus(&self) -> String {
        let metrics = self.bridge.metrics();
        self.snapshot()
            .prometheus(self.bridge.pending_count(), metrics.accepting())
    }

    // --- WebSocket -------------------------------------------------------------------------------

    /// Queues a message, ping or pong under `maxBufferedAmount`; returns where it ends among the
    /// bytes queued on the connection (see [`crate::bridge::Bridge::ws_send`]).
    /// `ERR_WS_CONTROL_PAYLOAD` for a ping/pong over 125 bytes (RFC 6455 §5.5).
    pub fn ws_send(&self, id: u32, message: WsOutbound) -> Result<u64, WsSendError> {
        if let WsOutbound::Ping(d) | WsOutbound::Pong(d) = &message {
            if d.len() > MAX_CONTROL_PAYLOAD {
                return Err(WsSendError::ControlPayloadTooLarge);
            }
        }
        self.bridge
            .ws_send(id, message, self.ws_max_buffered())
            .map_err(WsSendError::Bridge)
    }

    /// `maxBufferedAmount` in force: the unsent bytes a WebSocket connection may queue.
    pub fn ws_max_buffered(&self) -> usize {
        self.config(|c| {
            c.websocket
                .as_ref()
                .map(|w| w.max_buffered)
                .unwrap_or(usize::MAX)
        })
    }

    // --- gRPC ------------------------------------------------------------------------------------

    /// The methods the handler serves (`/package.Service/Method`; others get UNIMPLEMENTED),
    /// shared by every listener: those whose request is a stream, those whose response is a
    /// stream, and the serialised `FileDescriptorProto`s for server reflection (`None`: no
    /// reflection). Returns why descriptors were rejected (reflection then lists the service
    /// names only), if they were.
    pub fn set_grpc_methods(
        &self,
        paths: Vec<String>,
        request_streams: Vec<String>,
        response_streams: Vec<String>,
        reflection_files: Option<Vec<Vec<u8>>>,
    ) -> Option<String> {
        let streams: std::collections::HashSet<String> = request_streams.into_iter().collect();
        let registry = GrpcRegistry::new(paths.into_iter().map(|p| {
            let shape = if streams.contains(&p) {
                RequestShape::Stream
            } else {
                RequestShape::Single
            };
            (p, shape)
        }))
        .with_streamed_responses(response_streams);
        let (registry, problem) = match reflection_files {
            None => (registry, None),
            Some(files) => registry.with_reflection(&files),
        };
        let registry = registry.keeping_figures_of(&self.grpc_methods.load());
        self.grpc_methods.store(registry);
        problem
    }

    /// Queues a serialised response message; `Ok(false)`: wait for drain. A message over
    /// `maxSendMessageLength` ends the call with RESOURCE_EXHAUSTED (as grpc-js, which checks
    /// before compressing) and is reported as `Gone`.
    /// `compress: false` keeps this message uncompressed (grpc-js's `WriteFlags.NoCompress`).
    pub fn grpc_write(
        &self,
        id: u32,
        message: bytes::Bytes,
        compress: bool,
    ) -> Result<bool, BridgeError> {
        self.check_send_size(id, &message)?;
        self.bridge.grpc_write(id, message, compress)
    }

    /// A message over `maxSendMessageLength` ends the call with RESOURCE_EXHAUSTED.
    fn check_send_size(&self, id: u32, message: &[u8]) -> Result<(), BridgeError> {
        let max = self.config(|c| {
            c.grpc
                .as_ref()
                .map(|g| g.max_send_message_length)
                .unwrap_or(usize::MAX)
        });
        if message.len() > max {
            let details = format!("Sent message larger than max ({} vs. {max})", message.len());
            let _ = self
                .bridge
                .grpc_end(id, CallStatus::new(RESOURCE_EXHAUSTED, details));
            return Err(BridgeError::Gone(id));
        }
        Ok(())
    }

    /// A unary answer at once: the message, then status OK with trailing metadata.
    pub fn grpc_reply(
        &self,
        id: u32,
        message: bytes::Bytes,
        compress: bool,
        trailers: Vec<String>,
    ) -> Result<(), BridgeError> {
        self.check_send_size(id, &message)?;
        self.bridge.grpc_reply(
            id,
            OutMessage {
                data: message,
                compress,
            },
            CallStatus {
                code: 0,
                details: "OK".into(),
                trailers,
            },
        )
    }
}

/// Why [`Host::ws_send`] did not queue.
#[derive(Debug)]
pub enum WsSendError {
    ControlPayloadTooLarge,
    Bridge(BridgeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::{BridgeEvent, RequestHead};

    struct NoSink;
    impl RequestSink for NoSink {
        fn request(&self, _: RequestHead, _: Option<crate::trace::RequestTrace>) -> bool {
            false
        }
        fn event(&self, _: u32, _: BridgeEvent) {}
    }

    #[test]
    fn bad_options_fail_with_their_code_before_binding() {
        let err = Host::new("{", Arc::new(NoSink))
            .err()
            .expect("invalid JSON");
        assert_eq!(err.code(), "ERR_INVALID_CONFIG");
        assert!(err.to_string().starts_with("ERR_INVALID_CONFIG: options: "));
        let err = Host::new(r#"{"protocol":"http","port":"x"}"#, Arc::new(NoSink))
            .err()
            .expect("bad port");
        assert_eq!(err.code(), "ERR_INVALID_CONFIG");
    }

    #[test]
    fn reloading_certificates_without_tls_is_a_tls_error() {
        let host = Host::new(r#"{"protocol":"http"}"#, Arc::new(NoSink)).unwrap();
        let err = host.reload_certificates().unwrap_err();
        assert_eq!(err.code(), "ERR_TLS_CONFIG");
        assert_eq!(
            err.to_string(),
            "ERR_TLS_CONFIG: this server does not use TLS"
        );
    }

    #[tokio::test]
    async fn shutdown_steps_before_listening_report_nothing_open() {
        let host = Host::new(r#"{"protocol":"http"}"#, Arc::new(NoSink)).unwrap();
        host.stop_accepting().await;
        assert!(host.wait_idle(Duration::ZERO).await);
        let d = host.drain(Duration::ZERO).await;
        assert_eq!((d.drained, d.open_at_start, d.still_open), (true, 0, 0));
        assert_eq!(host.force_close(Duration::ZERO).await, 0);
        host.release().await;
    }

    #[tokio::test]
    async fn restart_on_the_same_address_keeps_the_socket_and_retires_the_old_listener() {
        let options = r#"{"protocol":"http","hostname":"127.0.0.1","port":0}"#;
        let host = Host::new(options, Arc::new(NoSink)).unwrap();
        let first = host.listen().await.unwrap();
        let second = host.restart(options, Duration::ZERO).await.unwrap();
        assert_eq!(first, second, "the socket is handed over");
        assert!(lock(&host.replaced).is_some());
        host.retire_replaced(Duration::ZERO).await;
        assert!(lock(&host.replaced).is_none());
        host.release().await;
    }

    #[tokio::test]
    async fn a_failed_restart_keeps_the_old_listener() {
        let host = Host::new(
            r#"{"protocol":"http","hostname":"127.0.0.1","port":0}"#,
            Arc::new(NoSink),
        )
        .unwrap();
        host.listen().await.unwrap();
        let err = host
            .restart(r#"{"protocol":"http","port":-1}"#, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_CONFIG");
        assert!(host.listener().is_some());
        host.release().await;
    }

    #[tokio::test]
    async fn listen_now_binds_before_returning_and_a_taken_port_is_eaddrinuse() {
        let host = Host::new(r#"{"protocol":"http"}"#, Arc::new(NoSink)).unwrap();
        let bind = BindOptions::default();
        let addr = host.listen_now(Some("127.0.0.1"), 0, &bind).unwrap();
        assert_ne!(addr.port(), 0);
        // Bound and accepting already: a client connects at once.
        tokio::net::TcpStream::connect(addr).await.unwrap();
        let other = Host::new(r#"{"protocol":"http"}"#, Arc::new(NoSink)).unwrap();
        let err = other
            .listen_now(Some("127.0.0.1"), addr.port(), &bind)
            .unwrap_err();
        assert_eq!(err.code(), "EADDRINUSE");
        assert_eq!(
            err.to_string(),
            format!(
                "listen EADDRINUSE: address already in use 127.0.0.1:{}",
                addr.port()
            )
        );
        host.release().await;
    }

    #[test]
    fn control_frames_over_125_bytes_are_refused() {
        let host = Host::new(r#"{"protocol":"ws"}"#, Arc::new(NoSink)).unwrap();
        let big = bytes::Bytes::from(vec![0u8; 126]);
        assert!(matches!(
            host.ws_send(1, WsOutbound::Ping(big)),
            Err(WsSendError::ControlPayloadTooLarge)
        ));
        assert!(matches!(
            host.ws_send(1, WsOutbound::Ping(bytes::Bytes::from_static(b"x"))),
            Err(WsSendError::Bridge(BridgeError::Gone(1)))
        ));
    }
}
