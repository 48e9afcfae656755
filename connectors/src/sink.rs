//! The sink side of a connector: something that receives the job's output batches.
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO archive
//! WITH ('archive.type' = 'file_sink', 'archive.path' = 'out/orders_{date}.jsonl');
//! ```

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::Result;

/// A configured, open sink. The job runner drives each sink on its own task, so a slow sink
/// back-pressures through its queue and a failed one does not stop the others.
#[async_trait]
pub trait Sink: Send {
    /// The name it has in the query (`archive`).
    fn name(&self) -> &str;
    /// Checks, before any data flows, that the sink can hold rows of `schema` (a CSV file
    /// cannot hold nested columns). An error here is reported as a failure to create the sink.
    fn check_schema(&self, _schema: &arrow::datatypes::Schema) -> Result<()> {
        Ok(())
    }
    /// Writes one batch. An error is handled by the job's failure strategy.
    async fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable (called at the end and on Ctrl-C).
    async fn flush(&mut self) -> Result<()>;
    /// Flushes and releases the sink; writes after `close` are errors.
    async fn close(&mut self) -> Result<()>;
}
