//! A running native server: the lifecycle with the protocol part chosen from the config, and the
//! bridge its requests cross. This is what the addon holds per JavaScript server object.

use crate::bridge::Bridge;
use crate::config::{Limits, LiveLimits, Protocol, ServerConfig};
use crate::error::Result;
use crate::lifecycle::{ConnectionHandler, Server, ShutdownReport};
use crate::metrics::Metrics;
use crate::protocol::{GrpcProtocol, HttpProtocol};
use crate::tls::TlsSource;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct ServeHandle {
    bridge: Bridge,
    server: Server,
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
    ) -> Result<ServeHandle> {
        Self::start_on(config, bridge, tls, None).await
    }

    /// As [`ServeHandle::start`], taking over an already bound `listener` when given.
    pub async fn start_on(
        config: &ServerConfig,
        bridge: Bridge,
        tls: Option<Arc<TlsSource>>,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<ServeHandle> {
        let metrics = bridge.metrics().clone();
        let limits: LiveLimits = Arc::new(ArcSwap::from_pointee(config.limits.clone()));
        let handler: Arc<dyn ConnectionHandler> = match (config.protocol, &config.grpc) {
            (Protocol::Grpc, Some(settings)) => Arc::new(GrpcProtocol::new(
                bridge.clone(),
                limits.clone(),
                tls,
                settings.clone(),
                bridge.grpc_methods().clone(),
            )),
            // HTTP, HTTPS, HTTP/2 and WebSocket (an HTTP server whose upgrades become WebSockets).
            _ => Arc::new(HttpProtocol::new(
                bridge.clone(),
                limits.clone(),
                tls,
                config.http2.clone(),
                config.endpoints.clone(),
                config.websocket.clone(),
            )),
        };
        let server = Server::start(config, handler, metrics, limits.clone(), listener).await?;
        Ok(ServeHandle {
            bridge,
            server,
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

    /// Applies new limits: `maxConnections` at the next accept, timeouts and body limits to new
    /// requests, header limits to new connections. Open connections are not touched.
    pub fn update_limits(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
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
}
