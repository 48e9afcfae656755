//! Counters shared between a connector and the job runner, read by the progress line, the
//! job summary and (later) the REST API and Prometheus.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

/// Counters of one source or sink. Cheap to update from any thread.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    /// Rows read (source) or written (sink).
    pub records: AtomicU64,
    /// Record batches read or written.
    pub batches: AtomicU64,
    /// Records that could not be decoded (source) or batches that failed (sink).
    pub errors: AtomicU64,
    /// Rows a sink failed to write and let go (`LogAndContinue`).
    pub dropped: AtomicU64,
    /// Bytes read or written, where known.
    pub bytes: AtomicU64,
    /// Files, objects or Parquet row groups a source skipped without reading (pruned by the
    /// WHERE clause).
    pub skipped: AtomicU64,
    /// When the last batch passed, in epoch milliseconds (0: never).
    pub last_record_ms: AtomicI64,
    /// The connection as last seen: see [`ConnectionStatus`].
    pub status: AtomicU8,
}

/// A connector's connection as the job server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Working.
    Connected,
    /// Lost; the client is reconnecting by itself.
    Reconnecting,
    /// Gave up (a sink whose last write failed, a source that ended in error).
    Failed,
}

impl ConnectionStatus {
    /// The guide's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Reconnecting => "Reconnecting",
            Self::Failed => "Failed",
        }
    }
}

impl ConnectorMetrics {
    /// Adds one batch of `rows` rows.
    pub fn add_batch(&self, rows: usize) {
        self.records.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.last_record_ms.store(now, Ordering::Relaxed);
    }

    /// Records the connection's state.
    pub fn set_status(&self, s: ConnectionStatus) {
        self.status.store(s as u8, Ordering::Relaxed);
    }

    /// The connection's state.
    pub fn status(&self) -> ConnectionStatus {
        match self.status.load(Ordering::Relaxed) {
            0 => ConnectionStatus::Connected,
            1 => ConnectionStatus::Reconnecting,
            _ => ConnectionStatus::Failed,
        }
    }

    /// Adds `n` errors.
    pub fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Rows so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Adds `rows` rows a sink let go.
    pub fn add_dropped(&self, rows: u64) {
        self.dropped.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows a sink failed to write and let go.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Errors so far: malformed records (source) or failed batches (sink).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Batches so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}
