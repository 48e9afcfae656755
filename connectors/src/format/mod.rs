//! Formats, shared by every connector that carries bytes (files, Kafka, S3): JSON, JSON Lines,
//! CSV, Avro and Parquet decoding into Arrow record batches, schema inference and the
//! `schema` key, and the one-pass decoders for flat JSON and CSV.
//!
//! ```sql
//! WITH ('orders.format' = 'csv', 'orders.delimiter' = ';', 'orders.schema' = 'id BIGINT, amount DOUBLE')
//! ```

pub mod avro;
pub mod csv_writer;
pub mod decode;
pub mod encode;
pub mod file_format;
mod flat_columns;
pub mod flat_csv;
pub mod flat_json;
pub mod iso_time;
pub mod registry;
pub mod schema;

pub use file_format::FileFormat;

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;

use crate::connector::KeyDoc;

/// Format keys of every connector that reads files or objects.
pub const READ_KEYS: &[KeyDoc] = &[
    KeyDoc::new("format", "csv, tsv, json (array or lines), jsonlines or parquet.").default("from the extension"),
    KeyDoc::new("schema", "The columns (`id BIGINT, amount DOUBLE, ts TIMESTAMP`); inferred from the data when absent."),
    KeyDoc::new("has_headers", "CSV: the first line names the columns.").default("true"),
    KeyDoc::new("header", "Alias of has_headers."),
    KeyDoc::new("delimiter", "CSV field separator.").default(","),
    KeyDoc::new("quote", "CSV quote character.").default("\""),
    KeyDoc::new("compression", "").unused("gzip is recognised from the data itself", &["gzip", "gz", "auto", "none"]),
    KeyDoc::new("encoding", "").unused("data is read as UTF-8", &["utf-8", "utf8"]),
];

/// Format keys of every connector that writes files or objects.
pub const WRITE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("format", "csv, jsonlines or parquet.").default("from the extension"),
    KeyDoc::new("compression", "gzip for text; snappy, zstd, lz4 or gzip for Parquet.").default("none"),
    KeyDoc::new("has_headers", "CSV: write a header line.").default("true"),
    KeyDoc::new("header", "Alias of has_headers."),
    KeyDoc::new("delimiter", "CSV field separator.").default(","),
    KeyDoc::new("quote", "CSV quote character.").default("\""),
    KeyDoc::new("encoding", "").unused("data is written as UTF-8", &["utf-8", "utf8"]),
];

/// A message (a Kafka record, a line) that could not be decoded, by its index in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage {
    /// Its index in the batch.
    pub index: usize,
    /// Why.
    pub message: String,
}

/// Gives `batch` exactly `schema`'s columns: found by name, cast where types differ, nulls
/// where a file lacks a column (files of one glob may differ).
pub fn adapt_batch(batch: RecordBatch, schema: &SchemaRef) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec());
    }
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), cols)
}
