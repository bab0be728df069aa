//! The live connections of a server as an operator sees them (`getConnections()`,
//! `closeConnection(id)`): one entry per accepted connection, put in the map at accept and taken
//! out when the connection closes — the only times the map's lock is taken besides a listing.
//! What a connection counts (requests, bytes, streams in flight) are relaxed atomics in its
//! entry, which its tasks already hold.

use crate::tls::PeerInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a connection speaks, once known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WireProtocol {
    /// Accepted, no request yet (first bytes, TLS handshake, or an h2c port not yet told).
    Unknown = 0,
    Http1 = 1,
    Http2 = 2,
    WebSocket = 3,
    Grpc = 4,
}

const PROTOCOLS: usize = 5;

impl WireProtocol {
    fn from_u8(n: u8) -> WireProtocol {
        match n {
            1 => WireProtocol::Http1,
            2 => WireProtocol::Http2,
            3 => WireProtocol::WebSocket,
            4 => WireProtocol::Grpc,
            _ => WireProtocol::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WireProtocol::Unknown => "unknown",
            WireProtocol::Http1 => "http1",
            WireProtocol::Http2 => "http2",
            WireProtocol::WebSocket => "websocket",
            WireProtocol::Grpc => "grpc",
        }
    }
}

/// How a connection is asked to close gracefully: HTTP/1 after the response in flight (idle:
/// at once), HTTP/2 and gRPC with GOAWAY, WebSocket with close 1001.
pub trait GracefulClose: Send + Sync {
    fn close_gracefully(&self);
}

/// One live connection.
pub struct Connection {
    pub id: u64,
    pub remote: SocketAddr,
    /// Unix time of the accept, in ms.
    pub since_ms: u64,
    protocol: AtomicU8,
    peer: OnceLock<Arc<PeerInfo>>,
    /// Requests (HTTP/2 streams, gRPC calls) begun on it.
    pub(crate) requests: AtomicU64,
    /// Bytes read from and written to it (after TLS).
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Requests (streams, calls) in flight; the drain logic reads it too (SeqCst there).
    pub(crate) streams: AtomicUsize,
    /// It had a request in flight, or none yet, when the last idle sweep was asked for: that
    /// sweep leaves it open even if its connection task gets to the sweep only after a request
    /// ended (node decides at `closeIdleConnections()`'s call).
    pub(crate) busy_at_sweep: AtomicBool,
    /// Weak: whoever serves the connection owns the closer, so an entry keeps nothing alive.
    closer: Mutex<Option<Weak<dyn GracefulClose>>>,
}

impl Default for Connection {
    /// An entry in no registry (unit tests).
    fn default() -> Self {
        Connection::new(0, SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl Connection {
    fn new(id: u64, remote: SocketAddr) -> Self {
        Connection {
            id,
            remote,
            since_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            protocol: AtomicU8::new(WireProtocol::Unknown as u8),
            peer: OnceLock::new(),
            requests: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
            busy_at_sweep: AtomicBool::new(false),
            closer: Mutex::new(None),
        }
    }

    pub fn protocol(&self) -> WireProtocol {
        WireProtocol::from_u8(self.protocol.load(Relaxed))
    }

    /// The TLS details, once the handshake is done.
    pub(crate) fn set_peer(&self, peer: Arc<PeerInfo>) {
        let _ = self.peer.set(peer);
    }

    /// Who closes the connection gracefully from now on (an upgrade hands it to the WebSocket).
    pub(crate) fn set_closer(&self, closer: Weak<dyn GracefulClose>) {
        *self.closer.lock().unwrap_or_else(|e| e.into_inner()) = Some(closer);
    }

    fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: self.id,
            protocol: self.protocol().as_str(),
            remote_address: self.remote.ip().to_string(),
            remote_port: self.remote.port(),
            since: self.since_ms,
            requests: self.requests.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            tls: self.peer.get().map(|p| TlsSummary {
                protocol: p.protocol.clone(),
                cipher: p.cipher.clone(),
                authorized: p.authorized,
            }),
            streams: self.streams.load(Relaxed),
        }
    }
}

/// One entry of `getConnections()`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSnapshot {
    pub id: u64,
    pub protocol: &'static str,
    pub remote_address: String,
    pub remote_port: u16,
    /// Unix time of the accept, in ms.
    pub since: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tls: Option<TlsSummary>,
    pub streams: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TlsSummary {
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    pub authorized: bool,
}

/// Every live connection of a server (all its listeners), by id; ids grow, so the newest are last.
#[derive(Default)]
pub struct Registry {
    live: Mutex<BTreeMap<u64, Arc<Connection>>>,
    last_id: AtomicU64,
    /// Open connections by [`WireProtocol`]: gauges read by `getMetrics()` without the lock.
    open: [AtomicI64; PROTOCOLS],
}

/// At most this many entries in one `getConnections()`.
pub const MAX_LISTED: usize = 10_000;

impl Registry {
    /// A connection was accepted.
    pub(crate) fn register(&self, remote: SocketAddr) -> Arc<Connection> {
        let id = self.last_id.fetch_add(1, Relaxed) + 1;
        let entry = Arc::new(Connection::new(id, remote));
        self.open[WireProtocol::Unknown as usize].fetch_add(1, Relaxed);
        self.lock().insert(id, entry.clone());
        entry
    }

    /// The connection closed (its last holder let go).
    pub(crate) fn unregister(&self, entry: &Connection) {
        self.lock().remove(&entry.id);
        self.open[entry.protocol.load(Relaxed) as usize].fetch_sub(1, Relaxed);
    }

    /// The connection now speaks `protocol` (called by whoever serves it, so never after
    /// [`Registry::unregister`]).
    pub(crate) fn set_protocol(&self, entry: &Connection, protocol: WireProtocol) {
        let before = entry.protocol.swap(protocol as u8, Relaxed);
        if before != protocol as u8 {
            self.open[before as usize].fetch_sub(1, Relaxed);
            self.open[protocol as usize].fetch_add(1, Relaxed);
        }
    }

    /// Open connections speaking `protocol`.
    pub fn open(&self, protocol: WireProtocol) -> u64 {
        self.open[protocol as usize].load(Relaxed).max(0) as u64
    }

    /// The newest `limit` connections whose protocol is known, newest first.
    pub fn list(&self, limit: usize) -> Vec<ConnectionSnapshot> {
        let limit = limit.min(MAX_LISTED);
        // Entries are copied out under the lock (a reference count each) and read after it.
        let entries: Vec<Arc<Connection>> = self
            .lock()
            .values()
            .rev()
            .filter(|c| c.protocol() != WireProtocol::Unknown)
            .take(limit)
            .cloned()
            .collect();
        entries.iter().map(|c| c.snapshot()).collect()
    }

    /// An idle sweep is being asked for: the connections with a request in flight now, or none
    /// begun yet, are spared by it (see [`Connection::busy_at_sweep`]).
    pub fn mark_busy_for_sweep(&self) {
        for connection in self.lock().values() {
            if connection.streams.load(Ordering::SeqCst) > 0
                || connection.requests.load(Relaxed) == 0
            {
                connection.busy_at_sweep.store(true, Ordering::Release);
            }
        }
    }

    /// Asks connection `id` to close gracefully; false when there is no such live connection
    /// (or it cannot be asked yet: no request has told what it speaks).
    pub fn close(&self, id: u64) -> bool {
        let Some(entry) = self.lock().get(&id).cloned() else {
            return false;
        };
        let closer = entry
            .closer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        match closer {
            Some(closer) => {
                closer.close_gracefully();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counted(std::sync::atomic::AtomicUsize);
    impl GracefulClose for Counted {
        fn close_gracefully(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn connections_are_listed_newest_first_and_closed_through_their_closer() {
        let registry = Registry::default();
        let remote = SocketAddr::from(([127, 0, 0, 1], 5000));
        let a = registry.register(remote);
        let b = registry.register(remote);
        let unknown = registry.register(remote);
        registry.set_protocol(&a, WireProtocol::Http1);
        registry.set_protocol(&b, WireProtocol::Http2);
        assert_eq!(registry.open(WireProtocol::Unknown), 1);
        assert_eq!(registry.open(WireProtocol::Http1), 1);
        let listed: Vec<u64> = registry.list(10).iter().map(|c| c.id).collect();
        assert_eq!(listed, vec![b.id, a.id], "newest first, unknown left out");
        assert_eq!(registry.list(1).len(), 1);

        let closer: Arc<dyn GracefulClose> = Arc::new(Counted(Default::default()));
        assert!(!registry.close(a.id), "no closer yet");
        a.set_closer(Arc::downgrade(&closer));
        assert!(registry.close(a.id));
        assert!(!registry.close(999));
        drop(closer);
        assert!(!registry.close(a.id), "the closer's owner is gone");

        registry.set_protocol(&a, WireProtocol::WebSocket);
        registry.unregister(&a);
        registry.unregister(&b);
        registry.unregister(&unknown);
        for p in [
            WireProtocol::Unknown,
            WireProtocol::Http1,
            WireProtocol::Http2,
            WireProtocol::WebSocket,
        ] {
            assert_eq!(registry.open(p), 0, "{p:?}");
        }
        assert!(registry.list(10).is_empty());
    }
}
