//! `flight_sink`: publishes the job's output to a live stream of the process's [`hub`]
//! (named after the job unless `stream` says otherwise). `ferris-sql serve` serves it over
//! Arrow Flight (`DoGet`) and as a Flight SQL table of the latest rows.
//!
//! ```sql
//! CREATE STREAM big_orders AS SELECT * FROM orders WHERE amount > 100 INTO live
//! WITH ('live.type' = 'flight_sink', 'live.retain.rows' = '10000');
//! ```
//!
//! [`hub`]: super::hub::hub

use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::hub::{hub, LiveStream};
use crate::connector::KeyDoc;
use crate::error::Result;
use crate::properties::Properties;
use crate::sink::Sink;

/// Keys a `flight_sink` understands.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("stream", "The stream's and its Flight SQL table's name (the DoGet ticket).").default("the job's name"),
    KeyDoc::new("retain.rows", "Rows kept for late subscribers and for the job's Flight SQL table.").default("10000"),
];

/// Rows kept for late subscribers and Flight SQL when `retain.rows` is not set.
pub const DEFAULT_RETAIN_ROWS: usize = 10_000;

/// A sink that publishes to a live stream.
#[derive(Debug)]
pub struct FlightSink {
    name: String,
    stream: Arc<LiveStream>,
}

impl FlightSink {
    /// Opens the stream `stream` (default: `job`) with `retain.rows` (default 10 000) kept.
    pub fn try_new(props: &Properties, job: &str) -> Result<Self> {
        let stream_name = props.get("stream").unwrap_or(job);
        let retain = props.get_usize("retain.rows")?.unwrap_or(DEFAULT_RETAIN_ROWS);
        let stream = hub().open(stream_name, retain)?;
        Ok(Self { name: props.owner().to_string(), stream })
    }

    /// The stream it publishes to.
    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }
}

#[async_trait]
impl Sink for FlightSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn check_schema(&self, schema: &Schema) -> Result<()> {
        self.stream.set_schema(Arc::new(schema.clone()));
        Ok(())
    }
    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.stream.publish(batch);
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        self.stream.close();
        Ok(())
    }
}

impl Drop for FlightSink {
    /// A job that ends without closing its sinks (an error) still ends its subscribers' streams.
    fn drop(&mut self) {
        self.stream.close();
    }
}
