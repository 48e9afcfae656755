//! The analysed form of a statement: a job with named sources, sinks and options.

use ferris_connectors::properties::KeySpec;
use ferris_connectors::{ConnectorType, Properties};

use crate::sql::FerrisStatement;

/// Job-level keys (no `name.` prefix) the engine understands.
pub const JOB_KEYS: KeySpec = KeySpec {
    exact: &[
        "use_transactions",
        "failure_strategy",
        "max_retries",
        "retry_backoff",
        "max_batch_size",
        "batch_timeout",
        "parallelism",
        "job.name",
        "sink.queue_size",
        "buffer_size",
        "emit.interval",
        "checkpoint.interval",
        "checkpoint.dir",
        "checkpoint.retain",
        "checkpoint.timeout",
        "sink.write.timeout",
        "stop.timeout",
        "memory.limit_mb",
        "late.sink",
        "state.ttl",
    ],
    prefixes: &["dlq.", "watermark."],
};

/// A named source or sink with its type and properties.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationSpec {
    /// The name in the query (`orders`).
    pub name: String,
    /// Its declared type (`file_source`).
    pub connector: ConnectorType,
    /// Its properties, prefix removed.
    pub properties: Properties,
}

/// A job: one statement, analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The job's name: the stream's or table's name, or `select_<n>` for a bare SELECT.
    pub name: String,
    /// The parsed statement.
    pub statement: FerrisStatement,
    /// Every relation read in FROM and JOIN, in order of appearance.
    pub sources: Vec<RelationSpec>,
    /// Every sink, in INTO order.
    pub sinks: Vec<RelationSpec>,
    /// `late.sink`: where rows behind the watermark go instead of being dropped.
    pub late_sink: Option<RelationSpec>,
    /// Job-level properties.
    pub options: Properties,
    /// Things the user should know: unknown keys, clauses carried but not applied.
    pub warnings: Vec<String>,
}

impl JobSpec {
    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&RelationSpec> {
        self.sources.iter().find(|s| s.name == name)
    }
}
