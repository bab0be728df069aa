//! `NativeServer`: one per JavaScript server object. Converts between JavaScript values and the
//! core's [`Host`]; requests reach JavaScript through the [`JsSink`].

use super::answers::{self, ws_queue};
use super::delivery::Delivery;
use super::error::{js_error, Code};
use super::wire::{bytes_of, send_result, EventArgs, JsSink, RequestArgs, SendResult, StagingArea};
use koatty_serve_core::bridge::{
    deferring_wakes, flush_deferred_wakes, ProtocolChoice, WsOutbound,
};
use koatty_serve_core::config::Compression;
use koatty_serve_core::host::Host;
use koatty_serve_core::lifecycle::{BindOptions, Sweep};
use koatty_serve_core::trace::TraceSettings;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a server listens, or why it could not (`errorCode`/`errorMessage`: a Promise rejected
/// from Rust cannot carry a `code`, so the outcome says it and `js/` throws).
#[napi(object)]
pub struct ListenOutcome {
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub address: String,
    pub port: u32,
    pub family: String,
}

impl From<koatty_serve_core::Result<SocketAddr>> for ListenOutcome {
    fn from(result: koatty_serve_core::Result<SocketAddr>) -> Self {
        match result {
            Ok(addr) => ListenOutcome {
                error_code: None,
                error_message: None,
                address: addr.ip().to_string(),
                port: addr.port() as u32,
                family: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
            },
            Err(e) => ListenOutcome {
                error_code: Some(e.code().into()),
                error_message: Some(e.to_string()),
                address: String::new(),
                port: 0,
                family: String::new(),
            },
        }
    }
}

/// What shutdown step 3 found.
#[napi(object)]
pub struct DrainOutcome {
    pub drained: bool,
    pub open_at_start: u32,
    pub still_open: u32,
}

/// Runs `step` on the server's `Host` and resolves a Promise with its outcome. The future owns an
/// `Arc<Host>`: as a napi `async fn` method it borrowed the `NativeServer`, which a worker's exit
/// frees while the step still runs on the I/O thread (SIGSEGV, session 14's outside probe).
fn on_host<'env, T, F, Fut>(
    env: &'env Env,
    host: &Arc<Host>,
    step: F,
) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: FnOnce(Arc<Host>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let step = step(host.clone());
    env.spawn_future(async move { Ok(step.await) })
}

fn ms(ms: u32) -> Duration {
    Duration::from_millis(ms as u64)
}

#[napi]
pub struct NativeServer {
    host: Arc<Host>,
    sink: Arc<JsSink>,
    /// How the per-request calls (`respond`, `wsSend`, … in `answers`) find this server.
    handle: u32,
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        answers::unregister(self.handle);
    }
}

#[napi]
impl NativeServer {
    /// `optionsJson`: the server's options (already resolved by the JS layer). Bad options or TLS
    /// settings throw here, with their `code`.
    #[napi(constructor)]
    pub fn new(options_json: String) -> Result<Self, Code> {
        let sink = Arc::new(JsSink::default());
        let host = Arc::new(Host::new(&options_json, sink.clone()).map_err(js_error)?);
        let handle = answers::register(host.clone()).ok_or_else(|| {
            napi::Error::new("ERR_SERVER_LIMIT", "65,536 servers are open in this thread")
        })?;
        Ok(NativeServer { host, sink, handle })
    }

    /// What the per-request calls (`respond`, `wsSend`, `grpcReply`, …) take to find this server.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Native trace mode (js/trace/): with a header name, request ids are resolved natively and
    /// the `http_timeout` timer runs natively for requests from now on; `null` switches it off.
    #[napi]
    pub fn set_trace(&self, header_name: Option<String>, id_name: String, timeout_ms: f64) {
        let settings = header_name.map(|name| {
            let timeout = if timeout_ms.is_finite() && timeout_ms > 0.0 {
                timeout_ms.min(u32::MAX as f64) as u64
            } else {
                0
            };
            TraceSettings::new(&name, &id_name, Duration::from_millis(timeout))
        });
        self.host.bridge().set_trace(settings);
    }

    /// Whether `auto` TLS mode generated a self-signed development certificate.
    #[napi(getter)]
    pub fn generated_dev_certificate(&self) -> bool {
        self.host.generated_dev_certificate()
    }

    /// Re-reads key and certificate for new handshakes (open connections keep theirs).
    #[napi]
    pub fn reload_certificates(&self) -> Result<(), Code> {
        self.host.reload_certificates().map_err(js_error)
    }

    /// Sets where requests and their events go: `onRequest(id, method, url, headers, body, flags,
    /// remoteAddress, remotePort, tlsDetails, traceId)` and `onEvent(id, kind, chunk, message)`,
    /// called in arrival order. Until `release`, the server keeps the event loop alive. A `body` or
    /// `chunk` under 4 KiB arrives as its length, its bytes at the start of `staging`, to be
    /// copied out before anything else runs; the answering calls (`answers`) read small chunks
    /// from the same area.
    #[napi]
    pub fn connect(
        &self,
        env: Env,
        on_request: FunctionRef<RequestArgs, ()>,
        on_event: FunctionRef<EventArgs, ()>,
        staging: Buffer,
    ) -> Result<()> {
        let staging = Arc::new(StagingArea::new(staging));
        answers::set_staging(self.handle, staging.clone());
        let connections_open = self.host.bridge().metrics().watch_connections_open();
        self.sink.set(Some(Delivery::new(
            &env,
            on_request,
            on_event,
            staging,
            connections_open,
        )?));
        Ok(())
    }

    /// Binds and serves (after `connect`).
    #[napi(ts_return_type = "Promise<ListenOutcome>")]
    pub fn listen<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ListenOutcome>> {
        let sink = self.sink.clone();
        on_host(env, &self.host, |host| async move {
            let started = host.listen().await;
            if started.is_err() {
                sink.set(None);
            }
            started.into()
        })
    }

    /// node's `server.listen()`: sets where requests and their events go (as `connect`), binds and
    /// starts serving before it returns (see `Host::listen_now`). `referenced: false` (node's
    /// `unref()`): the server does not keep the event loop alive.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn listen_now(
        &self,
        env: Env,
        on_request: FunctionRef<RequestArgs, ()>,
        on_event: FunctionRef<EventArgs, ()>,
        staging: Buffer,
        hostname: Option<String>,
        port: u32,
        backlog: Option<u32>,
        ipv6_only: bool,
        reuse_port: bool,
        referenced: bool,
    ) -> Result<ListenOutcome> {
        self.connect(env, on_request, on_event, staging)?;
        self.sink.set_referenced(&env, referenced);
        let bind = BindOptions {
            reuse_port,
            backlog,
            ipv6_only,
        };
        // JavaScript checked the port (node's ERR_SOCKET_BAD_PORT).
        let port = port.min(u16::MAX as u32) as u16;
        let started = napi::bindgen_prelude::within_runtime_if_available(|| {
            self.host.listen_now(hostname.as_deref(), port, &bind)
        });
        if started.is_err() {
            self.sink.set(None);
        }
        Ok(started.into())
    }

    /// node's `ref()`/`unref()`: whether a listening server keeps the event loop alive.
    #[napi]
    pub fn set_referenced(&self, env: Env, referenced: bool) {
        self.sink.set_referenced(&env, referenced);
    }

    /// Connections open now (node's `getConnections`).
    #[napi]
    pub fn open_connections(&self) -> u32 {
        self.host.open_connections() as u32
    }

    /// node's `closeIdleConnections()` (`all: false`) and `closeAllConnections()` (`all: true`).
    #[napi]
    pub fn close_connections(&self, all: bool) {
        self.host.sweep(if all { Sweep::All } else { Sweep::Idle });
    }

    /// Applies new options in place, without a restart (see `Host::apply_in_place`).
    #[napi]
    pub fn apply_in_place(&self, options_json: String) -> Result<(), Code> {
        self.host.apply_in_place(&options_json).map_err(js_error)
    }

    /// Restarts on new options with no refused connection; on failure the old server keeps
    /// running.
    #[napi(ts_return_type = "Promise<ListenOutcome>")]
    pub fn restart<'env>(
        &self,
        env: &'env Env,
        options_json: String,
        drain_timeout_ms: u32,
    ) -> Result<PromiseRaw<'env, ListenOutcome>> {
        on_host(env, &self.host, |host| async move {
            host.restart(&options_json, ms(drain_timeout_ms))
                .await
                .into()
        })
    }

    /// The last step of a restart: the replaced listener drains in the background.
    #[napi]
    pub fn retire_replaced(&self, drain_timeout_ms: u32) {
        napi::bindgen_prelude::spawn(self.host.retire_replaced(ms(drain_timeout_ms)));
    }

    /// Shutdown step 1: stop new work everywhere.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop_accepting<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        on_host(env, &self.host, |host| async move {
            host.stop_accepting().await
        })
    }

    /// Shutdown step 2: resolves whether the open connections closed by themselves in time.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn wait_idle<'env>(
        &self,
        env: &'env Env,
        timeout_ms: u32,
    ) -> Result<PromiseRaw<'env, bool>> {
        on_host(env, &self.host, |host| async move {
            host.wait_idle(ms(timeout_ms)).await
        })
    }

    /// Shutdown step 3: ask every connection to finish and close, wait up to `timeoutMs`.
    #[napi(ts_return_type = "Promise<DrainOutcome>")]
    pub fn drain<'env>(
        &self,
        env: &'env Env,
        timeout_ms: u32,
    ) -> Result<PromiseRaw<'env, DrainOutcome>> {
        on_host(env, &self.host, |host| async move {
            let d = host.drain(ms(timeout_ms)).await;
            DrainOutcome {
                drained: d.drained,
                open_at_start: d.open_at_start as u32,
                still_open: d.still_open as u32,
            }
        })
    }

    /// Shutdown step 4: close every remaining connection; resolves how many were.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn force_close<'env>(
        &self,
        env: &'env Env,
        grace_ms: u32,
    ) -> Result<PromiseRaw<'env, u32>> {
        on_host(env, &self.host, |host| async move {
            host.force_close(ms(grace_ms)).await as u32
        })
    }

    /// Shutdown step 5: drop the listener and release the JavaScript callbacks, so an idle process
    /// can exit.
    #[napi]
    pub fn release(&self) {
        napi::bindgen_prelude::spawn(self.host.release());
        self.sink.set(None);
    }

    /// Abandons a request (node's `res.destroy()`).
    #[napi]
    pub fn destroy(&self, id: u32) -> bool {
        self.host.bridge().destroy(id)
    }

    /// Asks for the next chunk of a streamed request body.
    #[napi]
    pub fn pull_body(&self, id: u32) -> bool {
        self.host.bridge().pull_body(id)
    }

    /// The counters (`getMetrics()`), as JSON.
    #[napi]
    pub fn metrics_json(&self) -> String {
        self.host.metrics_json()
    }

    /// Per-second samples of the last `seconds` seconds, oldest first, as JSON.
    #[napi]
    pub fn metrics_history_json(&self, seconds: u32) -> String {
        self.host.metrics_history_json(seconds as usize)
    }

    /// The counters in Prometheus text format.
    #[napi]
    pub fn prometheus(&self) -> String {
        self.host.prometheus()
    }

    /// The newest `limit` live connections, newest first, as JSON.
    #[napi]
    pub fn connections_json(&self, limit: u32) -> String {
        self.host.connections_json(limit as usize)
    }

    /// Asks live connection `id` to close gracefully; false when there is none (`id` is a whole
    /// number, checked in JavaScript).
    #[napi]
    pub fn close_connection(&self, id: f64) -> bool {
        id.is_finite() && id >= 1.0 && self.host.close_connection(id as u64)
    }

    // --- WebSocket -------------------------------------------------------------------------------

    /// Sends a ping; as `wsSend` (`ControlPayloadTooLarge` over 125 bytes).
    #[napi]
    pub fn ws_ping(&self, id: u32, body: Option<BufferSlice<'_>>) -> f64 {
        ws_queue(
            &self.host,
            id,
            WsOutbound::Ping(bytes_of(body).unwrap_or_default()),
        )
    }

    /// Sends an (unsolicited) pong; as `wsPing`.
    #[napi]
    pub fn ws_pong(&self, id: u32, body: Option<BufferSlice<'_>>) -> f64 {
        ws_queue(
            &self.host,
            id,
            WsOutbound::Pong(bytes_of(body).unwrap_or_default()),
        )
    }

    /// Bytes queued and not yet written (`bufferedAmount`).
    #[napi]
    pub fn ws_buffered_amount(&self, id: u32) -> f64 {
        self.host.bridge().ws_buffered_amount(id) as f64
    }

    /// A send's callback waits until `at` bytes of what the handler sent are written: a
    /// `WsWritten` event comes then. Returns the total written when they already are (no event
    /// comes), -1 when they are not yet, -2 when the connection is gone.
    #[napi]
    pub fn ws_notify_when_written(&self, id: u32, at: f64) -> f64 {
        match self.host.bridge().ws_notify_when_written(id, at as u64) {
            Ok(Some(total)) => total as f64,
            Ok(None) => -1.0,
            Err(_) => -2.0,
        }
    }

    /// `maxBufferedAmount` in force (sends waiting in JavaScript behind a Blob count against it).
    #[napi]
    pub fn ws_max_buffered_amount(&self) -> f64 {
        self.host.ws_max_buffered() as f64
    }

    /// Starts the closing handshake (code 1000–4999, reason ≤ 123 bytes, checked in JS).
    #[napi]
    pub fn ws_close(&self, id: u32, code: u32, reason: String) -> bool {
        let close = WsOutbound::Close(code as u16, reason);
        deferring_wakes(|| self.host.bridge().ws_control(id, close)).is_ok()
    }

    /// The handler has taken every message before the peer's close frame (`WsPeerClosing`): the
    /// close reply goes out after what it sent.
    #[napi]
    pub fn ws_close_reply(&self, id: u32) -> bool {
        deferring_wakes(|| self.host.bridge().ws_control(id, WsOutbound::CloseReply)).is_ok()
    }

    /// Drops the connection at once.
    #[napi]
    pub fn ws_terminate(&self, id: u32) -> bool {
        deferring_wakes(|| self.host.bridge().ws_control(id, WsOutbound::Terminate)).is_ok()
    }

    /// The subprotocol `handleProtocols` chose (`null`: none; `failed`: it threw, the upgrade is
    /// refused with 500). False if the upgrade is gone.
    #[napi]
    pub fn ws_select_protocol(&self, id: u32, protocol: Option<String>, failed: bool) -> bool {
        let choice = match protocol {
            _ if failed => ProtocolChoice::Failed,
            Some(p) => ProtocolChoice::Selected(p),
            None => ProtocolChoice::NoProtocol,
        };
        self.host.bridge().ws_select_protocol(id, choice).is_ok()
    }

    // --- gRPC ------------------------------------------------------------------------------------

    /// The gRPC methods served, those with a request stream, those with a response stream, and the
    /// `FileDescriptorProto`s for reflection (`null`: off). Returns why descriptors were
    /// rejected, or `null`.
    #[napi]
    pub fn set_grpc_methods(
        &self,
        paths: Vec<String>,
        request_stream_paths: Vec<String>,
        response_stream_paths: Vec<String>,
        reflection_files: Option<Vec<Buffer>>,
    ) -> Option<String> {
        let files = reflection_files.map(|f| f.iter().map(|b| b.to_vec()).collect());
        self.host
            .set_grpc_methods(paths, request_stream_paths, response_stream_paths, files)
    }

    /// Sends a call's initial metadata (flat pairs; `-bin` values base64) now.
    #[napi]
    pub fn grpc_send_metadata(&self, id: u32, metadata: Vec<String>) -> bool {
        deferring_wakes(|| self.host.bridge().grpc_send_metadata(id, metadata)).is_ok()
    }

    /// Chooses the call's response compression (grpc-js's `compressionAlgorithms` number): a
    /// `SendResult` (`Sent`; `HeadersSent`: the response head went out; `Gone`: the call is gone
    /// or the number unknown).
    #[napi]
    pub fn grpc_set_compression(&self, id: u32, algorithm: u32) -> i32 {
        let Some(compression) = Compression::from_number(u64::from(algorithm)) else {
            return SendResult::Gone as i32;
        };
        let set = self.host.bridge().grpc_set_compression(id, compression);
        send_result(set.map(|()| true))
    }
}

/// Makes the sends that answers of this turn held back (see `deferring_wakes`): js/bridge.js calls
/// it once per turn of the event loop, from `setImmediate`. Returns how many there were.
#[napi]
pub fn flush_deferred_wakes_now() -> u32 {
    flush_deferred_wakes() as u32
}
