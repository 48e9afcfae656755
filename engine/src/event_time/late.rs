//! Late rows to a sink of their own instead of the floor: with `late.sink`, every row an
//! operator finds behind its watermark (a window already closed, a join band already evicted,
//! rows already ordered for window functions) goes to that sink as it comes, with the columns
//! the operator received. They are counted either way (`late_rows_dropped`).
//!
//! ```sql
//! CREATE STREAM per_minute AS SELECT window_start, COUNT(*) AS n FROM clicks
//! GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE) INTO totals
//! WITH ('late.sink' = 'late_clicks', 'late_clicks.type' = 'file_sink', 'late_clicks.path' = 'late.jsonl', …);
//! ```
//!
//! The late sink writes outside checkpoints (a crash may repeat or lose a few of its rows);
//! operators never wait for it: when it falls 64 batches behind, further late rows are only
//! counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use tokio::sync::mpsc;

/// Batches of late rows waiting for the late sink.
pub const LATE_QUEUE: usize = 64;

/// The job's channel to its late sink, found by the operators in the task context.
#[derive(Debug)]
pub struct LateRows {
    tx: Mutex<Option<mpsc::Sender<RecordBatch>>>,
    /// Late rows that could not be queued (the late sink behind, or closed).
    pub lost: AtomicU64,
}

impl LateRows {
    /// A channel to a late sink reading from the returned receiver.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<RecordBatch>) {
        let (tx, rx) = mpsc::channel(LATE_QUEUE);
        (Arc::new(Self { tx: Mutex::new(Some(tx)), lost: AtomicU64::new(0) }), rx)
    }

    /// The job's late channel, when it has a late sink.
    pub fn find(context: &TaskContext) -> Option<Arc<Self>> {
        context.session_config().get_extension::<Self>()
    }

    /// Hands on the rows of `batch` where `late` is true (none when there are none).
    pub fn send(&self, batch: &RecordBatch, late: &BooleanArray) -> datafusion::error::Result<()> {
        let n = late.true_count();
        if n == 0 {
            return Ok(());
        }
        let rows = if n == batch.num_rows() { batch.clone() } else { filter_record_batch(batch, late)? };
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = tx.as_ref().is_some_and(|tx| tx.try_send(rows).is_ok());
        if !sent {
            self.lost.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The job has ended: the late sink gets nothing more, and ends once it has written what
    /// is queued.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}
