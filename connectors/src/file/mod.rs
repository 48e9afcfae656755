//! The file connector: `file_source` reads CSV, JSON (array or lines), JSON Lines and Parquet,
//! plain or gzip, from a path or a glob; `file_sink` writes CSV, JSON Lines and Parquet with
//! path templates, append, gzip and rotation.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT * FROM orders INTO archive
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders*.jsonl', 'orders.format' = 'jsonlines',
//!       'archive.type' = 'file_sink', 'archive.path' = 'out/orders_{date}.csv', 'archive.format' = 'csv');
//! ```

mod mapped;
pub mod path_template;
pub mod sink;
pub mod source;

use std::sync::Arc;

pub use crate::format::FileFormat;
pub use sink::FileSink;
pub use source::FileSource;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::Result;
use crate::format::{READ_KEYS, WRITE_KEYS};
use crate::sink::Sink;
use crate::source::Source;

/// The keys `file_source` reads besides the format keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("path", "A file, or a glob (`data/orders_*.csv`); `file:///data/orders.csv` too. Required."),
    KeyDoc::new("watch", "Tail the files: read lines as they are appended (csv and json lines).").default("false"),
    KeyDoc::new("poll_interval", "How often a tailed file is checked for new lines.").default("100ms"),
    KeyDoc::new("schema.inference.timeout", "A tailed file that is empty (or missing) at start: how long to wait for lines to infer the columns from.")
        .default("10s"),
];

/// The keys `file_sink` reads besides the format keys.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("path", "The file written (`file://` URLs too); `{date}`, `{hour}`, `{batch_id}`, … are filled in. Required."),
    KeyDoc::new("append", "Append to an existing file instead of replacing it.").default("false"),
    KeyDoc::new("rotation", "hourly or daily: a new file per period (with `{date}`/`{hour}` in the path).").default("never"),
    KeyDoc::new("max_files", "Keep only the newest n files of the path's template."),
    KeyDoc::new("buffer_size_bytes", "Write buffer of text files.").default("1048576"),
    KeyDoc::new(
        "partition_columns",
        "Columns whose values make Hive directories beside the file name (`dt=2024-01-05/part.jsonl`), left out of the rows; comma-separated.",
    ),
    // the guide's financial example asks for it: a compliance claim must not pass silently
    KeyDoc::new("encryption", "")
        .unused("files are written unencrypted; encrypt the volume they are on (or write to an S3 bucket with server-side encryption)", &[]),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(FileSource::try_new(c.props, c.job, c.partitions)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    let sink = FileSink::try_new(c.props)?;
    sink.check_writable()?;
    // encoding and writing files wait on the disk: off the runtime's workers
    Ok(Box::new(crate::blocking_sink::OffRuntime::new(sink)))
}

/// The file connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::File,
    summary: "Local files: CSV, JSON, JSON Lines and Parquet, plain or gzip; globs, tailing, path templates and rotation.",
    source: Some(RoleSpec {
        keys: &[SOURCE_KEYS, READ_KEYS],
        passthrough: None,
        checkpoints: "positions: byte offset (or Parquet rows) per file and split",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[SINK_KEYS, WRITE_KEYS],
        passthrough: None,
        checkpoints: "two-phase: staged files published when the checkpoint commits",
        create: create_sink,
    }),
};
