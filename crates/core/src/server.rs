//! A running native server: the lifecycle with the protocol part chosen from the config, and the
//! bridge its requests cross. This is what the addon holds per JavaScript server object.

use crate::bridge::Bridge;
use crate::config::{GrpcSettings, Limits, LiveLimits, Protocol, ServerConfig};
use crate::error::Result;
use crate::lifecycle::{bind, ConnectionHandler, Server, ShutdownReport, Sweep};
use crate::metrics::Metrics;
use crate::protocol::grpc::MethodRegistry;
use crate::protocol::{GrpcProtocol, HttpProtocol};
use crate::tls::TlsSource;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct ServeHandle {
    bridge: Bridge,
    server: Server,
    /// The protocol part, for settings changed at run time.
    handler: Arc<dyn ConnectionHandler>,
    protocol: Protocol,
    limits: LiveLimits,
}

impl ServeHandle {
    /// Binds and starts serving `config.protocol`, handing requests to `bridge`.
    /// `bridge` outlives listeners (a restart binds a new one on the same bridge), so request ids
    /// stay unique for the JavaScript server object.
    /// `tls` is built by the caller (so configuration errors surface before binding).
    pub async fn start(
        config: &ServerConfig,
        bridge: Bridge,
        tls: Option<Arc<TlsSource>>,
        grpc_methods: MethodRegistry,
    ) -> Result<ServeHandle> {
        Self::start_on(config, bridge, tls, grpc_methods, None).await
    }

    /// As [`ServeHandle::start`], taking over an already bound `listener` when given.
    ///
    /// This is the seed's template method, one driver for every protocol; the steps keep the
    /// seed's names and only [`ProtocolParts`] differ per protocol:
    /// 1. `initialize_connection_pool`: the live limits the connection pool enforces;
    /// 2. `create_protocol_server`: the protocol's connection handler;
    /// 3. `configure_server_options`: bind (address, `reusePort`, backlog) or take the listener
    ///    over (here, before [`ServeHandle::serve_on`]), and start the shared accept loop and
    ///    connection accounting;
    /// 4. `perform_protocol_specific_initialization`: whatever the protocol does once it listens.
    pub async fn start_on(
        config: &ServerConfig,
        bridge: Bridge,
        tls: Option<Arc<TlsSource>>,
        grpc_methods: MethodRegistry,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<ServeHandle> {
        let listener = match listener {
            Some(l) => l,
            None => bind(config.hostname.as_deref(), config.port, config.reuse_port).await?,
        };
        Self::serve_on(config, bridge, tls, grpc_methods, listener)
    }

    /// As [`ServeHandle::start_on`], on a socket already bound (synchronously, within the
    /// runtime: nothing here waits).
    pub fn serve_on(
        config: &ServerConfig,
        bridge: Bridge,
        tls: Option<Arc<TlsSource>>,
        grpc_methods: MethodRegistry,
        listener: tokio::net::TcpListener,
    ) -> Result<ServeHandle> {
        let parts = protocol_parts(config, grpc_methods);
        let limits = initialize_connection_pool(config);
        let handler = parts.create_protocol_server(config, &bridge, &limits, tls);
        let server = configure_server_options(handler.clone(), &bridge, &limits, listener)?;
        parts.perform_protocol_specific_initialization(config, &bridge, server.local_addr());
        Ok(ServeHandle {
            bridge,
            server,
            handler,
            protocol: config.protocol,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.bridge.metrics()
    }

    pub fn open_connections(&self) -> usize {
        self.server.open_connections()
    }

    /// node's `closeIdleConnections()` / `closeAllConnections()` (see [`Sweep`]).
    pub fn sweep(&self, sweep: Sweep) {
        self.server.sweep(sweep);
    }

    /// Applies new limits: `maxConnections` at the next accept, timeouts and body limits to new
    /// requests, header limits to new connections. Open connections are not touched.
    pub fn update_limits(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    /// Applies changed protocol settings (HTTP/2, WebSocket, gRPC `protocolSpecific`) to
    /// connections that open afterwards; open ones keep theirs.
    pub fn update_settings(&self, config: &ServerConfig) {
        self.handler.update_settings(config);
    }

    /// The lifecycle, for the shutdown steps (`stop_accepting`, `begin_draining`, `wait_closed`,
    /// `force_close`).
    pub fn lifecycle(&self) -> &Server {
        &self.server
    }

    /// Stops accepting, drains open connections for up to `timeout`, then closes the rest.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.server.shutdown(timeout).await
    }

    /// A restart replaced this listener: as [`ServeHandle::shutdown`], but idle HTTP/1 keep-alive
    /// connections are left to close by themselves (see [`crate::lifecycle::Phase::Retiring`]).
    pub async fn retire(&self, timeout: Duration) -> ShutdownReport {
        self.server.retire(timeout).await
    }
}

/// What differs per protocol when a server starts (see [`ServeHandle::start_on`] for the order).
trait ProtocolParts: Send + Sync {
    /// The protocol's connection handler.
    fn create_protocol_server(
        &self,
        config: &ServerConfig,
        bridge: &Bridge,
        limits: &LiveLimits,
        tls: Option<Arc<TlsSource>>,
    ) -> Arc<dyn ConnectionHandler>;

    /// Runs once the listener is up.
    fn perform_protocol_specific_initialization(
        &self,
        _config: &ServerConfig,
        _bridge: &Bridge,
        _local_addr: SocketAddr,
    ) {
    }
}

fn protocol_parts(config: &ServerConfig, grpc_methods: MethodRegistry) -> Box<dyn ProtocolParts> {
    match (config.protocol, &config.grpc) {
        (Protocol::Grpc, Some(settings)) => Box::new(GrpcParts {
            settings: settings.clone(),
            methods: grpc_methods,
        }),
        // HTTPS, HTTP/2 and WebSocket are HTTP servers with TLS, h2 or upgrades switched on.
        _ => Box::new(HttpParts),
    }
}

/// The limits every connection of the server reads (swapped at run time by `updateConfig`).
fn initialize_connection_pool(config: &ServerConfig) -> LiveLimits {
    Arc::new(ArcSwap::from_pointee(config.limits.clone()))
}

/// Starts accepting on the bound `listener` through the shared lifecycle.
fn configure_server_options(
    handler: Arc<dyn ConnectionHandler>,
    bridge: &Bridge,
    limits: &LiveLimits,
    listener: tokio::net::TcpListener,
) -> Result<Server> {
    let metrics = bridge.metrics().clone();
    Server::serve(listener, handler, metrics, limits.clone())
}

/// HTTP/1.1, HTTPS, HTTP/2 and WebSocket.
struct HttpParts;

impl ProtocolParts for HttpParts {
    fn create_protocol_server(
        &self,
        config: &ServerConfig,
        bridge: &Bridge,
        limits: &LiveLimits,
        tls: Option<Arc<TlsSource>>,
    ) -> Arc<dyn ConnectionHandler> {
        Arc::new(HttpProtocol::new(
            bridge.clone(),
            limits.clone(),
            tls,
            config.http2.clone(),
            config.endpoints.clone(),
            config.websocket.clone(),
        ))
    }

    fn perform_protocol_specific_initialization(
        &self,
        config: &ServerConfig,
        _bridge: &Bridge,
        local_addr: SocketAddr,
    ) {
        tracing::info!(
            protocol = config.protocol.as_str(),
            %local_addr,
            h2c = config.http2.as_ref().is_some_and(|h| h.cleartext),
            native_endpoints = config.endpoints.any(),
            "listening"
        );
    }
}

/// gRPC over HTTP/2; methods are registered from JavaScript (see [`crate::host::Host`]).
struct GrpcParts {
    settings: GrpcSettings,
    methods: MethodRegistry,
}

impl ProtocolParts for GrpcParts {
    fn create_protocol_server(
        &self,
        _config: &ServerConfig,
        bridge: &Bridge,
        limits: &LiveLimits,
        tls: Option<Arc<TlsSource>>,
    ) -> Arc<dyn ConnectionHandler> {
        Arc::new(GrpcProtocol::new(
            bridge.clone(),
            limits.clone(),
            tls,
            self.settings.clone(),
            self.methods.clone(),
        ))
    }

    fn perform_protocol_specific_initialization(
        &self,
        _config: &ServerConfig,
        _bridge: &Bridge,
        local_addr: SocketAddr,
    ) {
        let methods = self.methods.load().method_count();
        if methods == 0 {
            // Every call will be UNIMPLEMENTED (the health service still answers).
            tracing::warn!(%local_addr, "gRPC server listening with no registered method");
        } else {
            tracing::info!(%local_addr, methods, "gRPC server listening");
        }
    }
}
