//! Sources and sinks for FerrisStreams.
//!
//! A *source* turns an external system (files, Kafka, S3) into
//! Arrow [`RecordBatch`](arrow::record_batch::RecordBatch) streams that DataFusion reads as a
//! streaming table. A *sink* receives the job's output batches and writes them out.
//! Connectors know nothing of SQL or of each other: the engine's job runner wires them up.
//! Each connector has one directory declaring all of it ([`connector::ConnectorSpec`]);
//! [`registry`] lists them, and [`format`] holds the formats every byte-carrying one shares.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT * FROM orders INTO archive
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
//!       'archive.type' = 'file_sink',  'archive.path' = 'out/orders.csv', 'archive.format' = 'csv');
//! ```

pub mod batching;
pub mod blackhole;
pub mod blocking_sink;
pub mod checkpoint;
pub mod connector;
pub mod connector_type;
pub mod error;
pub mod failure;
pub mod file;
pub mod flight;
pub mod format;
pub mod hive_partitions;
pub mod http;
pub mod iceberg;
pub mod kafka;
pub mod metrics;
pub mod postgres;
pub mod properties;
pub mod redis;
pub mod registry;
pub mod remainder;
mod runtime;
pub mod s3;
pub mod sink;
pub mod source;
pub mod stdout;
pub mod text_views;

pub use connector_type::{ConnectorKind, ConnectorType, Role};
pub use error::{ConnectorError, Result};
pub use failure::FailureStrategy;
pub use properties::Properties;
pub use sink::{Delivery, Sink};
pub use source::{EventTimeFloor, Frontier, Source};
