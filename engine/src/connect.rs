//! Creates the connectors a job names, from the declarations in each connector's directory
//! ([`ferris_connectors::registry`]): sources registered with DataFusion, sinks opened for the
//! runner.
//!
//! ```sql
//! WITH ('orders.type' = 'file_source', 'out.type' = 's3_sink', 'nowhere.type' = 'blackhole')
//! ```

use std::sync::Arc;

use ferris_connectors::connector::{ConnectorSpec, SinkContext, SourceContext};
use ferris_connectors::{registry, ConnectorError, Properties, Role, Sink, Source};

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
    use ferris_connectors::ConnectorKind;
    match rel.connector.kind {
        // no server for them can be installed where FerrisStreams is tested: not built
        ConnectorKind::Elasticsearch | ConnectorKind::MongoDb => ConnectorError::Other(format!(
            "{} '{}' is not available in this build (FerrisStreams has no {} connector: no server to test one against)",
            rel.connector,
            rel.name,
            rel.connector.kind.name()
        )),
        _ => ConnectorError::NotSupported { type_name: rel.connector.to_string(), name: rel.name.clone() },
    }
}

fn spec(rel: &RelationSpec) -> Option<&'static ConnectorSpec> {
    registry::find(rel.connector.kind)
}

/// Creates the source `rel`; `partitions` caps its parallelism.
pub fn create_source(rel: &RelationSpec, job: &Properties, partitions: usize, job_name: &str) -> Result<Arc<dyn Source>, ConnectorError> {
    let role = spec(rel).and_then(|s| s.source).ok_or_else(|| not_supported(rel))?;
    (role.create)(&SourceContext { props: &rel.properties, job, partitions, job_name }).map_err(|e| with_origin(rel, e))
}

/// Runs `f`, which may block on a service (connecting, fetching metadata, waiting for the
/// first messages), without stalling the async runtime it is called from: on a multi-threaded
/// runtime the worker hands its other tasks on while `f` runs (a slow broker at deploy does not
/// freeze the REST API); elsewhere `f` simply runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Creates the sink `rel` of job `job_name`, checking what can be checked before data flows (the
/// output directory can be created, the bucket can be listed).
pub fn create_sink(rel: &RelationSpec, job_name: &str) -> Result<Box<dyn Sink>, ConnectorError> {
    let role = spec(rel).and_then(|s| s.sink).ok_or_else(|| not_supported(rel))?;
    // text the operators hand on as views reaches the sink as plain text
    (role.create)(&SinkContext { props: &rel.properties, job_name }).map(ferris_connectors::text_views::wrap).map_err(|e| with_origin(rel, e))
}

/// How the sink `rel` takes part in checkpoints, for `explain`.
pub fn sink_delivery(rel: &RelationSpec) -> &'static str {
    spec(rel).map_or("not supported yet", |s| s.checkpoints(Role::Sink))
}

/// How the source `rel` takes part in checkpoints, for `explain`.
pub fn source_positions(rel: &RelationSpec) -> &'static str {
    spec(rel).map_or("not supported yet", |s| s.checkpoints(Role::Source))
}
