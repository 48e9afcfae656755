//! Counters shared between a connector and the job runner, read by the progress line, the
//! job summary and (later) the REST API and Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one source or sink. Cheap to update from any thread.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    /// Rows read (source) or written (sink).
    pub records: AtomicU64,
    /// Record batches read or written.
    pub batches: AtomicU64,
    /// Records that could not be decoded (source) or batches that failed (sink).
    pub errors: AtomicU64,
    /// Bytes read or written, where known.
    pub bytes: AtomicU64,
}

impl ConnectorMetrics {
    /// Adds one batch of `rows` rows.
    pub fn add_batch(&self, rows: usize) {
        self.records.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` errors.
    pub fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Rows so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Batches so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}
