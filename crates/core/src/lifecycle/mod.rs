//! The one server lifecycle every protocol plugs into: bind → accept → serve connections →
//! drain → force → stopped.
//!
//! A protocol supplies a [`ConnectionHandler`] (how to serve one accepted connection, and how to
//! turn one away when `maxConnections` is reached); everything else — the listener, the accept
//! loop with back-off, connection accounting, and shutdown by notification rather than polling —
//! lives here once.

mod listener;

pub use listener::{bind, bind_now, BindOptions};

use crate::config::{LiveLimits, ServerConfig};
use crate::error::Result;
use crate::metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a connection is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// A restart replaced this listener: HTTP/2, gRPC and WebSocket connections are asked to go
    /// (GOAWAY, 1001), HTTP/1 ones close after their next response (`Connection: close`) or when
    /// idle past `keepAliveTimeout` — not at once, which would race a client reusing an idle
    /// keep-alive socket. Nothing is refused.
    Retiring,
    /// Shutdown step 1: finish what is in flight, accept no new requests, close when idle.
    Draining,
    /// Shutdown step 3: as `Draining`, and connections an option kept open through steps 1–2
    /// (WebSockets with `keepOpenDuringDrainDelay`) are asked to close too.
    Closing,
    /// Close now.
    Forced,
}

/// What node's `closeIdleConnections()` / `closeAllConnections()` ask of the HTTP connections open
/// at the time (later ones are not affected, and the server goes on accepting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Connections with no request in flight close (HTTP/1; HTTP/2 ones are left alone, as
    /// node's http server does not track them).
    Idle,
    /// Every connection closes now, requests in flight or not.
    All,
}

/// A connection's view of the server phase. It also holds the connection's place in the count:
/// whatever carries a clone on (a WebSocket upgraded from an HTTP connection) stays counted and
/// drained with the server.
#[derive(Clone)]
pub struct PhaseSignal(
    watch::Receiver<Phase>,
    Arc<ConnectionSlot>,
    /// Sweeps asked for since the connection was accepted (see [`Sweep`]).
    watch::Receiver<Option<Sweep>>,
);

impl PhaseSignal {
    pub fn current(&self) -> Phase {
        *self.0.borrow()
    }

    /// The connection's entry among the server's live connections (`getConnections()`).
    pub(crate) fn connection(&self) -> &Arc<crate::pool::Connection> {
        &self.1 .1
    }

    /// The server's counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.1 .0.metrics
    }

    /// Resolves with the next sweep asked for; never, once the server is gone.
    pub async fn next_sweep(&mut self) -> Sweep {
        loop {
            if self.2.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(sweep) = *self.2.borrow_and_update() {
                return sweep;
            }
        }
    }

    /// Resolves once the phase is at least `phase` (immediately if it already is).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.0.wait_for(|p| *p >= phase).await;
    }
}

/// A connection that can be asked to close after the response in flight (HTTP/1: no further
/// request is read on it). The bridge asks when a streamed body ran past its `Content-Length`:
/// hyper sent exactly the announced bytes, and the connection must not carry the rest.
pub trait CloseConnection: Send + Sync {
    fn close_after_response(&self);
}

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The protocol-specific part of a server.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Takes protocol settings changed at run time (`updateConfig`); new connections use them.
    fn update_settings(&self, _config: &ServerConfig) {}

    /// Serves one accepted connection until it closes, draining when the phase says so.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        phase: PhaseSignal,
    ) -> BoxFuture;

    /// Turns a connection away because `maxConnections` is reached. The default just closes it.
    fn reject(self: Arc<Self>, stream: TcpStream) -> BoxFuture {
        Box::pin(async move { drop(stream) })
    }
}

/// Counts open connections; waiters are woken by the last one closing (a watch channel).
struct ConnectionCount {
    open: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

/// A connection's place in the count, and its entry among the live connections.
struct ConnectionSlot(Arc<ConnectionCount>, Arc<crate::pool::Connection>);

impl ConnectionCount {
    fn open(self: &Arc<Self>, remote: SocketAddr) -> ConnectionSlot {
        self.open.send_modify(|n| *n += 1);
        self.metrics.connection_opened();
        let entry = self.metrics.connections.register(remote);
        ConnectionSlot(self.clone(), entry)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.metrics.connections.unregister(&self.1);
        self.0.open.send_modify(|n| *n -= 1);
        self.0.metrics.connection_closed();
    }
}

/// How the accept loop is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// Accept what is already queued, then close the socket.
    Close,
    /// Leave the queue to the socket's next owner.
    Handover,
}

/// Outcome of a shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when draining began.
    pub connections_at_start: usize,
    /// Connections that had to be closed by force after the timeout.
    pub forced: usize,
}

/// A listening server.
pub struct Server {
    local_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    /// The last sweep asked for (each connection subscribes when accepted).
    sweeps: Arc<watch::Sender<Option<Sweep>>>,
    stop_accepting: watch::Sender<Stop>,
    connections: Arc<ConnectionCount>,
    accept_task: std::sync::Mutex<Option<JoinHandle<TcpListener>>>,
}

impl Server {
    /// Binds and starts accepting. Bind errors come back coded (`EADDRINUSE`, `EACCES`, …).
    /// `limits` is read at each accept, so `maxConnections` changes apply at run time.
    ///
    /// `listener`: an already bound socket to take over (a restart on the same address hands the
    /// old server's socket over, so not one connection is refused in between).
    pub async fn start(
        config: &ServerConfig,
        handler: Arc<dyn ConnectionHandler>,
        metrics: Arc<Metrics>,
        limits: LiveLimits,
        listener: Option<TcpListener>,
    ) -> Result<Server> {
        let listener = match listener {
            Some(l) => l,
            None => bind(config.hostname.as_deref(), config.port, config.reuse_port).await?,
        };
        Server::serve(listener, handler, metrics, limits)
    }

    /// Starts accepting on a bound `listener` (within the runtime, which it spawns the accept
    /// loop on).
    pub fn serve(
        listener: TcpListener,
        handler: Arc<dyn ConnectionHandler>,
        metrics: Arc<Metrics>,
        limits: LiveLimits,
    ) -> Result<Server> {
        let local_addr = listener.local_addr()?;
        let (phase, _) = watch::channel(Phase::Running);
        let sweeps = Arc::new(watch::channel(None).0);
        let (stop_accepting, stop_rx) = watch::channel(Stop::No);
        metrics.listener_started();
        let connections = Arc::new(ConnectionCount {
            open: watch::channel(0).0,
            metrics,
        });
        let task = tokio::spawn(accept_loop(
            listener,
            handler,
            stop_rx,
            Signals {
                phase: phase.subscribe(),
                sweeps: sweeps.clone(),
            },
            connections.clone(),
            limits,
        ));
        Ok(Server {
            local_addr,
            phase,
            sweeps,
            stop_accepting,
            connections,
            accept_task: std::sync::Mutex::new(Some(task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn open_connections(&self) -> usize {
        *self.connections.open.borrow()
    }

    /// Asks the connections open now to close: idle ones, or all (see [`Sweep`]).
    pub fn sweep(&self, sweep: Sweep) {
        self.sweeps.send_replace(Some(sweep));
    }

    /// Stops accepting and closes the listening socket. Connections already waiting in its backlog
    /// are accepted first (and then drain with the rest), so none is reset by the close.
    pub async fn stop_accepting(&self) {
        drop(self.stop(Stop::Close).await);
    }

    /// Stops accepting and hands the listening socket over (still bound; pending connections stay
    /// in its backlog for whoever accepts next). `None` if it was already stopped.
    pub async fn take_listener(&self) -> Option<TcpListener> {
        self.stop(Stop::Handover).await
    }

    async fn stop(&self, how: Stop) -> Option<TcpListener> {
        let _ = self.stop_accepting.send(how);
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match task {
            Some(task) => task.await.ok(),
            None => None,
        }
    }

    /// Asks every connection to finish what it has in flight and close (HTTP/1: `Connection:
    /// close` on the response in flight and idle ones closed at once; HTTP/2 and gRPC: GOAWAY;
    /// WebSocket: close 1001). Requests that still arrive are refused (503, UNAVAILABLE).
    pub fn begin_draining(&self) {
        self.advance(Phase::Draining);
    }

    /// As [`Server::begin_draining`], and connections kept open through the drain delay close too.
    pub fn begin_closing(&self) {
        self.advance(Phase::Closing);
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|p| {
            let changed = *p < to;
            if changed {
                *p = to;
            }
            changed
        });
    }

    /// Waits up to `timeout` for every connection to close; true if they all did.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let mut open = self.connections.open.subscribe();
        let closed = tokio::time::timeout(timeout, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        closed
    }

    /// Closes every remaining connection now; waits up to `grace` for their tasks to end.
    /// Returns how many were open when forced.
    pub async fn force_close(&self, grace: Duration) -> usize {
        let forced = self.open_connections();
        self.phase.send_replace(Phase::Forced);
        self.wait_closed(grace).await;
        forced
    }

    /// A restart's old listener: stop accepting, retire connections for up to `timeout` (see
    /// [`Phase::Retiring`]), then ask what is left to close (1 s) and force the rest.
    pub async fn retire(&self, timeout: Duration) -> ShutdownReport {
        self.wind_down(Phase::Retiring, timeout).await
    }

    /// The whole sequence: stop accepting, drain for up to `timeout`, then force what is left.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.wind_down(Phase::Closing, timeout).await
    }

    /// Stops accepting, moves connections to `first` and waits up to `timeout` for them to close;
    /// then, if `first` was gentler than `Closing`, asks the rest to close (1 s); then forces.
    async fn wind_down(&self, first: Phase, timeout: Duration) -> ShutdownReport {
        self.stop_accepting().await;
        let connections_at_start = self.open_connections();
        self.advance(first);
        let mut closed = self.wait_closed(timeout).await;
        if !closed && first < Phase::Closing {
            self.begin_closing();
            closed = self.wait_closed(Duration::from_secs(1)).await;
        }
        let forced = if closed {
            0
        } else {
            self.force_close(Duration::from_secs(1)).await
        };
        ShutdownReport {
            connections_at_start,
            forced,
        }
    }
}

/// What each accepted connection's [`PhaseSignal`] is made from.
struct Signals {
    phase: watch::Receiver<Phase>,
    sweeps: Arc<watch::Sender<Option<Sweep>>>,
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn ConnectionHandler>,
    mut stop: watch::Receiver<Stop>,
    signals: Signals,
    connections: Arc<ConnectionCount>,
    limits: LiveLimits,
) -> TcpListener {
    let listener = accept_until_stopped(
        listener,
        handler.clone(),
        &mut stop,
        &signals,
        &connections,
        limits,
    )
    .await;
    connections.metrics.listener_stopped();
    if *stop.borrow() == Stop::Close {
        // Connections the kernel already completed would be reset when the socket closes: take
        // them in (they are served, and drain, like the others). Accepted from the socket itself
        // until it has none: tokio's readiness may not have seen the newest ones yet.
        let socket = socket2::SockRef::from(&listener);
        loop {
            let (accepted, address) = match socket.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let stream = std::net::TcpStream::from(accepted);
            let (Some(remote), Ok(())) = (address.as_socket(), stream.set_nonblocking(true)) else {
                continue;
            };
            let Ok(stream) = TcpStream::from_std(stream) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            serve_counted(&handler, stream, remote, &signals, &connections);
        }
    }
    listener
}

/// Hands an accepted connection to the protocol, counted open until its phase signal is dropped.
fn serve_counted(
    handler: &Arc<dyn ConnectionHandler>,
    stream: TcpStream,
    remote: SocketAddr,
    signals: &Signals,
    connections: &Arc<ConnectionCount>,
) {
    // Subscribed now: only sweeps asked for from here on concern this connection.
    let signal = PhaseSignal(
        signals.phase.clone(),
        Arc::new(connections.open(remote)),
        signals.sweeps.subscribe(),
    );
    tokio::spawn(handler.clone().serve(stream, remote, signal));
}

async fn accept_until_stopped(
    listener: TcpListener,
    handler: Arc<dyn ConnectionHandler>,
    stop: &mut watch::Receiver<Stop>,
    signals: &Signals,
    connections: &Arc<ConnectionCount>,
    limits: LiveLimits,
) -> TcpListener {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s != Stop::No) => return listener,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning, and keep serving.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = stop.wait_for(|s| *s != Stop::No) => return listener,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if limits
            .load()
            .max_connections
            .is_some_and(|max| *connections.open.borrow() >= max)
        {
            connections.metrics.connection_rejected();
            tokio::spawn(handler.clone().reject(stream));
            continue;
        }
        serve_counted(&handler, stream, remote, signals, connections);
    }
}

#[cfg(test)]
pub(crate) mod tests;
