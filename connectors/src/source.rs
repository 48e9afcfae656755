//! The source side of a connector: something that yields Arrow record batches, one stream per
//! partition, and that DataFusion reads as a (possibly unbounded) streaming table.
//!
//! ```sql
//! SELECT * FROM orders WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl')
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::commit::CommitGate;
use crate::metrics::ConnectorMetrics;

/// A configured, ready-to-read source.
pub trait Source: Debug + Send + Sync {
    /// The name it has in the query (`orders`).
    fn name(&self) -> &str;
    /// The schema of every batch it yields.
    fn schema(&self) -> SchemaRef;
    /// True when it ends by itself (a file read once); false when it tails or subscribes.
    fn is_bounded(&self) -> bool;
    /// One stream per partition (file split, Kafka partition); DataFusion reads them in parallel.
    /// With a projection (indices into [`Source::schema`]) only those columns are read, and
    /// every partition's schema is the projected one.
    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>>;
    /// Its counters: rows read, malformed records.
    fn metrics(&self) -> Arc<ConnectorMetrics>;
    /// A one-line description for `explain` (`file jsonl data/orders.jsonl (1 file)`).
    fn describe(&self) -> String;
    /// The barrier through which the job acknowledges delivered rows, for sources that commit
    /// read positions (Kafka offsets); `None` for sources that do not.
    fn commit_gate(&self) -> Option<Arc<CommitGate>> {
        None
    }
}
