//! Creates the connectors a job names: sources registered with DataFusion, sinks opened for the
//! runner. The one place that maps a connector type to its implementation.
//!
//! ```sql
//! WITH ('orders.type' = 'file_source', 'out.type' = 'file_sink', 'nowhere.type' = 'blackhole')
//! ```

use std::sync::Arc;

use ferris_connectors::blackhole::BlackholeSink;
use ferris_connectors::file::{FileSink, FileSource};
use ferris_connectors::flight::FlightSink;
use ferris_connectors::kafka::{KafkaSink, KafkaSource};
use ferris_connectors::stdout::StdoutSink;
use ferris_connectors::{ConnectorError, ConnectorKind, Properties, Sink, Source};

use crate::job::RelationSpec;

/// Adds to a property error where the value came from, when not inline (`configs/a.yaml:4`).
fn with_origin(rel: &RelationSpec, e: ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::InvalidProperty { key, message } => {
            let short = key.strip_prefix(&format!("{}.", rel.name)).unwrap_or(&key);
            match rel.properties.origin(short) {
                Some(origin) => ConnectorError::InvalidProperty { message: format!("{message} (set in {origin})"), key },
                None => ConnectorError::InvalidProperty { key, message },
            }
        }
        other => other,
    }
}

fn not_supported(rel: &RelationSpec) -> ConnectorError {
    ConnectorError::NotSupported { type_name: rel.connector.to_string(), name: rel.name.clone() }
}

/// Creates the source `rel`; `partitions` caps its parallelism.
pub fn create_source(rel: &RelationSpec, job: &Properties, partitions: usize, job_name: &str) -> Result<Arc<dyn Source>, ConnectorError> {
    match rel.connector.kind {
        ConnectorKind::File => Ok(Arc::new(FileSource::try_new(&rel.properties, job, partitions).map_err(|e| with_origin(rel, e))?)),
        ConnectorKind::Kafka => Ok(Arc::new(KafkaSource::try_new(&rel.properties, job, partitions, job_name).map_err(|e| with_origin(rel, e))?)),
        _ => Err(not_supported(rel)),
    }
}

/// Creates the sink `rel` of job `job_name`, checking what can be checked before data flows (the output
/// directory can be created).
pub fn create_sink(rel: &RelationSpec, job_name: &str) -> Result<Box<dyn Sink>, ConnectorError> {
    match rel.connector.kind {
        ConnectorKind::File => {
            let sink = FileSink::try_new(&rel.properties).map_err(|e| with_origin(rel, e))?;
            sink.check_writable()?;
            Ok(Box::new(sink))
        }
        ConnectorKind::Kafka => Ok(Box::new(KafkaSink::try_new(&rel.properties).map_err(|e| with_origin(rel, e))?)),
        ConnectorKind::Stdout => Ok(Box::new(StdoutSink::new(rel.name.clone()))),
        ConnectorKind::Blackhole => Ok(Box::new(BlackholeSink::try_new(&rel.properties).map_err(|e| with_origin(rel, e))?)),
        ConnectorKind::Flight => Ok(Box::new(FlightSink::try_new(&rel.properties, job_name).map_err(|e| with_origin(rel, e))?)),
        _ => Err(not_supported(rel)),
    }
}

/// How the sink `rel` takes part in checkpoints, for `explain`.
pub fn sink_delivery(rel: &RelationSpec) -> &'static str {
    match rel.connector.kind {
        ConnectorKind::File => "two-phase: staged files published when the checkpoint commits",
        ConnectorKind::Kafka => "two-phase: a Kafka transaction committed with the checkpoint",
        ConnectorKind::Blackhole => "takes part (writes nothing)",
        ConnectorKind::Stdout | ConnectorKind::Flight => "at least once by nature: rows are shown as they come",
        _ => "not supported yet",
    }
}

/// How the source `rel` takes part in checkpoints, for `explain`.
pub fn source_positions(rel: &RelationSpec) -> &'static str {
    match rel.connector.kind {
        ConnectorKind::File => "positions: byte offset (or Parquet rows) per file and split",
        ConnectorKind::Kafka => "positions: offset per topic partition",
        _ => "not supported yet",
    }
}
