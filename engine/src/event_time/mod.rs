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

/// One item of an operator's merged input: a batch of input partition `p` (`Some`), or the
/// end of partition `p` (`None`), so the operator can keep a watermark per partition.
pub(crate) type PartitionItem = (usize, Option<datafusion::common::Result<datafusion::arrow::record_batch::RecordBatch>>);

/// Executes every output partition of `input`, each stream tagged with its partition and
/// closed by an end marker, for an operator that merges them (`select_all`).
pub(crate) fn partition_streams(
    input: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    context: &std::sync::Arc<datafusion::execution::TaskContext>,
) -> datafusion::common::Result<Vec<futures::stream::BoxStream<'static, PartitionItem>>> {
    use datafusion::physical_plan::ExecutionPlanProperties;
    use futures::StreamExt;
    (0..input.output_partitioning().partition_count())
        .map(|p| {
            let stream = input.execute(p, std::sync::Arc::clone(context))?;
            Ok(stream.map(move |r| (p, Some(r))).chain(futures::stream::once(async move { (p, None) })).boxed())
        })
        .collect()
}
