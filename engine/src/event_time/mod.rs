//! Event time: reading a column as milliseconds since the epoch, and the watermarks that say how
//! far event time has progressed.
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! WITH ('clicks.event_time' = 'ts', 'clicks.watermark.delay' = '5s', …)
//! ```

pub mod time_column;
pub mod watermark;
pub mod watermark_sort;

pub use time_column::to_epoch_millis;
pub use watermark::{PartitionWatermarks, WatermarkConfig};

/// Sends an operator's output batches downstream (empty ones skipped), counting them in
/// `baseline`; `false` when the consumer has gone and the operator should stop.
pub(crate) async fn forward(
    out: Vec<datafusion::arrow::record_batch::RecordBatch>,
    baseline: &datafusion::physical_plan::metrics::BaselineMetrics,
    tx: &tokio::sync::mpsc::Sender<datafusion::common::Result<datafusion::arrow::record_batch::RecordBatch>>,
) -> bool {
    for batch in out {
        if batch.num_rows() > 0 {
            baseline.record_output(batch.num_rows());
            if tx.send(Ok(batch)).await.is_err() {
                return false;
            }
        }
    }
    true
}
