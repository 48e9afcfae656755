//! The `blackhole` sink (Flink's name): accepts every batch and discards it. For dry runs of a
//! pipeline and for benchmarks that measure the engine, not the disk.
//!
//! ```sql
//! CREATE STREAM q0 AS SELECT * FROM bids INTO nowhere WITH ('nowhere.type' = 'blackhole');
//! ```

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::Result;
use crate::sink::Sink;

/// A sink that discards what it receives.
#[derive(Debug)]
pub struct BlackholeSink {
    name: String,
}

impl BlackholeSink {
    /// A blackhole named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    fn name(&self) -> &str {
        &self.name
    }
    async fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
