//! The `blackhole` sink (Flink's name): accepts every batch and discards it. For dry runs of a
//! pipeline and for benchmarks that measure the engine, not the disk. `delay` makes it a slow
//! sink (each batch takes that long), to see back-pressure at work.
//!
//! ```sql
//! CREATE STREAM q0 AS SELECT * FROM bids INTO nowhere WITH ('nowhere.type' = 'blackhole');
//! CREATE STREAM slow AS SELECT * FROM bids INTO nowhere WITH ('nowhere.type' = 'blackhole', 'nowhere.delay' = '20ms');
//! ```

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext};
use crate::connector_type::ConnectorKind;
use crate::error::Result;
use crate::properties::Properties;
use crate::sink::Sink;

/// Keys a `blackhole` sink reads.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("delay", "Time each batch takes (a slow sink, to watch back-pressure).").default("0"),
    KeyDoc::new("format", "").unused("a blackhole writes nothing", &[]),
];

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(BlackholeSink::try_new(c.props)?))
}

/// The blackhole connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Blackhole,
    summary: "Discards every row (Flink's blackhole): dry runs and benchmarks.",
    source: None,
    sink: Some(RoleSpec { keys: &[SINK_KEYS], passthrough: None, checkpoints: "takes part (writes nothing)", create: create_sink }),
};

/// A sink that discards what it receives.
#[derive(Debug)]
pub struct BlackholeSink {
    name: String,
    delay: Option<Duration>,
}

impl BlackholeSink {
    /// A blackhole named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), delay: None }
    }

    /// A blackhole configured by `props` (`delay` per batch).
    pub fn try_new(props: &Properties) -> Result<Self> {
        Ok(Self { name: props.owner().to_string(), delay: props.get_duration("delay")?.filter(|d| !d.is_zero()) })
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    fn name(&self) -> &str {
        &self.name
    }
    /// Reads no column: text stays as the views the operators hand on (no copy for nothing).
    fn takes_text_views(&self) -> bool {
        true
    }
    async fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes nothing: nothing to stage, nothing to publish twice.
    fn transactional(&self) -> bool {
        true
    }
}
