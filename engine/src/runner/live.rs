//! Live counters of a running job, read by the job server's status, metrics and Prometheus
//! endpoints while the job runs (the end-of-run [`JobReport`](super::JobReport) says the same
//! once it stops).
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO out WITH (…)   -- GET /api/jobs/s/metrics
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::physical_plan::ExecutionPlan;
use ferris_connectors::metrics::ConnectorMetrics;

/// One sink as the runner sees it.
#[derive(Debug, Clone)]
pub struct LiveSink {
    /// Its name.
    pub name: String,
    /// Its counters.
    pub metrics: Arc<ConnectorMetrics>,
    /// True while its last write failed (or it could not be created).
    pub failed: Arc<AtomicBool>,
}

/// What a running job shares with whoever watches it.
#[derive(Debug, Default)]
pub struct LiveJob {
    rows_out: Mutex<Option<Arc<AtomicU64>>>,
    sinks: Mutex<Vec<LiveSink>>,
    plan: Mutex<Option<Arc<dyn ExecutionPlan>>>,
}

impl LiveJob {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by the runner once its sinks and plan exist.
    pub fn attach(&self, rows_out: Arc<AtomicU64>, sinks: Vec<LiveSink>, plan: Arc<dyn ExecutionPlan>) {
        *Self::lock(&self.rows_out) = Some(rows_out);
        *Self::lock(&self.sinks) = sinks;
        *Self::lock(&self.plan) = Some(plan);
    }

    /// Rows the query has produced so far.
    pub fn rows_out(&self) -> u64 {
        Self::lock(&self.rows_out).as_ref().map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// The sinks (empty until the job has started).
    pub fn sinks(&self) -> Vec<LiveSink> {
        Self::lock(&self.sinks).clone()
    }

    /// The sum of an operator counter over the plan (`state_bytes`, `late_rows_dropped`).
    pub fn operator_counter(&self, name: &str) -> u64 {
        Self::lock(&self.plan).as_ref().map_or(0, |p| super::operator_counter(p, name))
    }
}
