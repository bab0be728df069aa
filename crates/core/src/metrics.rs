//! Counters kept on the I/O threads with relaxed atomics, read on demand by `getMetrics()`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    pub(crate) active_connections: AtomicU64,
    pub(crate) total_connections: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    requests_total: AtomicU64,
    requests_active: AtomicU64,
    requests_failed: AtomicU64,
    requests_timed_out: AtomicU64,
    requests_aborted: AtomicU64,
    bytes_out: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub uptime_ms: u64,
    pub active_connections: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub requests_total: u64,
    pub requests_active: u64,
    pub requests_failed: u64,
    pub requests_timed_out: u64,
    pub requests_aborted: u64,
    pub bytes_out: u64,
    pub connections_per_second: f64,
    pub error_rate: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            active_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            requests_active: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            requests_timed_out: AtomicU64::new(0),
            requests_aborted: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.total_connections.fetch_add(1, Relaxed);
        self.active_connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.active_connections.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_rejected(&self) {
        self.rejected_connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_started(&self) {
        self.requests_total.fetch_add(1, Relaxed);
        self.requests_active.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_finished(&self, bytes: usize) {
        self.requests_active.fetch_sub(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn request_failed(&self) {
        self.requests_active.fetch_sub(1, Relaxed);
        self.requests_failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_aborted(&self) {
        self.requests_active.fetch_sub(1, Relaxed);
        self.requests_aborted.fetch_add(1, Relaxed);
    }

    /// Counted in addition to the abort that removes the entry.
    pub(crate) fn request_timed_out(&self) {
        self.requests_timed_out.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let uptime = self.started.elapsed();
        let total_connections = self.total_connections.load(Relaxed);
        let requests_total = self.requests_total.load(Relaxed);
        let failed = self.requests_failed.load(Relaxed) + self.requests_timed_out.load(Relaxed);
        MetricsSnapshot {
            uptime_ms: uptime.as_millis() as u64,
            active_connections: self.active_connections.load(Relaxed),
            total_connections,
            rejected_connections: self.rejected_connections.load(Relaxed),
            requests_total,
            requests_active: self.requests_active.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            requests_timed_out: self.requests_timed_out.load(Relaxed),
            requests_aborted: self.requests_aborted.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connections_per_second: total_connections as f64 / uptime.as_secs_f64().max(1e-3),
            error_rate: if requests_total == 0 { 0.0 } else { failed as f64 / requests_total as f64 },
        }
    }
}
