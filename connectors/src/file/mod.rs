//! The file connector: `file_source` reads CSV, JSON (array or lines), JSON Lines and Parquet,
//! plain or gzip, from a path or a glob; `file_sink` writes CSV, JSON Lines and Parquet with
//! path templates, append, gzip and rotation.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT * FROM orders INTO archive
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders*.jsonl', 'orders.format' = 'jsonlines',
//!       'archive.type' = 'file_sink', 'archive.path' = 'out/orders_{date}.csv', 'archive.format' = 'csv');
//! ```

pub mod decode;
pub mod format;
pub mod path_template;
pub mod schema;
pub mod sink;
pub mod source;

pub use format::FileFormat;
pub use sink::FileSink;
pub use source::FileSource;
