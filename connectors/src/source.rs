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

use crate::checkpoint::SourceCheckpoint;
use crate::metrics::ConnectorMetrics;

/// How far event time has got in one source partition, over all the units it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontier {
    /// Some unit has not delivered a row yet and is not idle: no watermark may pass it.
    Holding,
    /// Every live unit has delivered rows at least this late (epoch milliseconds); the
    /// slowest unit is at this time.
    At(i64),
    /// Every live unit is held back on purpose, at this time (epoch milliseconds): a Kafka
    /// partition taken over from another process of the job, whose rows wait until this
    /// process's event time has reached the other's. Event time may reach it, not pass it,
    /// even before a row has come.
    Floor(i64),
}

impl Frontier {
    /// The slower of two frontiers: `Holding` holds; `Floor` only when both are.
    pub fn min(self, other: Frontier) -> Frontier {
        match (self, other) {
            (Frontier::Holding, _) | (_, Frontier::Holding) => Frontier::Holding,
            (Frontier::Floor(a), Frontier::Floor(b)) => Frontier::Floor(a.min(b)),
            (Frontier::At(a) | Frontier::Floor(a), Frontier::At(b) | Frontier::Floor(b)) => Frontier::At(a.min(b)),
        }
    }
}

/// What a bounded source knows of its size before reading it, for the planner (a hash join
/// builds its table on the smaller side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceSize {
    /// Rows, exactly (Parquet footers).
    pub rows: Option<u64>,
    /// Bytes of all its columns, roughly (uncompressed Parquet column chunks, text file sizes).
    pub bytes: Option<u64>,
}

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
    /// How far event time has got in partition `partition` (an index into the last
    /// [`Source::partitions`]) over every unit it reads (each Kafka partition of a reader), when
    /// the source tracks it: the operators then hold their watermark to the slowest unit, not
    /// to the fastest rows a reader happened to hand out. `None`: not tracked.
    fn frontier(&self, _partition: usize) -> Option<Frontier> {
        None
    }

    /// Its positions for checkpoints (Kafka offsets, file offsets); `None` for a source that
    /// cannot say where it is (it cannot take part in transactions).
    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        None
    }

    /// True when a partition executed again after its stream failed goes on after the last
    /// batch it handed out, repeating and skipping nothing (files, objects, database, API and
    /// Redis readers start from their position cell). The engine then retries a failed read
    /// under `RetryWithBackoff` by executing the partition again.
    ///
    /// ```sql
    /// WITH ('feed.type' = 'http_source', 'feed.failure_strategy' = 'RetryWithBackoff', 'feed.max_retries' = '5', …)
    /// ```
    fn resumes_after_failure(&self) -> bool {
        false
    }

    /// For a table that changes while the job runs (a database table joined with a stream):
    /// how often to read it again. A join with it uses the newest complete read from then on.
    ///
    /// ```sql
    /// SELECT * FROM trades t JOIN instruments i ON t.symbol = i.symbol   -- instruments re-read every 5 minutes
    /// WITH ('instruments.type' = 'database_source', 'instruments.refresh_interval' = '5m', …)
    /// ```
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Its size, when it is bounded and knows it without reading the data (see [`SourceSize`]).
    fn size(&self) -> Option<SourceSize> {
        None
    }

    /// True when the source can use `filter` (a WHERE conjunct on its columns) to skip data
    /// without reading it: Hive partitions of objects. Inexact: the filter still runs on rows.
    ///
    /// ```sql
    /// SELECT * FROM sales WHERE year = 2024   -- objects under year=2023/ are not read
    /// ```
    fn can_prune(&self, _filter: &datafusion::logical_expr::Expr) -> bool {
        false
    }

    /// Like [`Source::partitions`], reading only what one of `scans` needs: each scan's
    /// filters (those [`Source::can_prune`] accepted) must all hold. Same partition count.
    fn partitions_pruned(&self, projection: Option<&[usize]>, _scans: &[Vec<datafusion::logical_expr::Expr>]) -> Vec<Arc<dyn PartitionStream>> {
        self.partitions(projection)
    }

    /// For one scan alone, another read of a bounded source that also drops, while decoding,
    /// the rows `dynamic` rejects: a hash join's filter on its probe side, known once the join
    /// has read its build side. Nexmark q7 joins the bids with their maxima per window, and the
    /// probe reads the `price` column first and the other columns only for the few bids at a
    /// maximum:
    ///
    /// ```sql
    /// SELECT b.auction, b.price FROM bid b
    /// JOIN (SELECT MAX(price) AS maxprice FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
    ///   ON b.price = m.maxprice     -- the probe keeps `price IN (<the maxima>)` while decoding
    /// ```
    ///
    /// The read waits for the filter to be complete before it starts, so it yields the same rows
    /// however often it is executed. `scans` as for [`Source::partitions_pruned`]. Its rows
    /// count in the source's metrics only when `count` (no other scan reads the source). Its
    /// positions are its own, never in a checkpoint: only a job without barriers asks. None
    /// when the source cannot skip data so (streams, text files): the scan stays as planned.
    fn read_again(
        &self,
        _projection: Option<&[usize]>,
        _scans: &[Vec<datafusion::logical_expr::Expr>],
        _dynamic: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        _count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        None
    }

    /// The source read again on its own, the columns `projection`, handing out the same rows in
    /// the same order, partition by partition, as [`Source::partitions_pruned`] over `scans`
    /// does, however often it is executed; a record is good or bad by the columns `checked` (a
    /// superset of `projection`, or `projection`'s own when None). Two such reads, one of a few
    /// columns checked by the columns of the other, number the same rows: a top N per key
    /// reads its keys from the first and only its kept rows from the second:
    ///
    /// ```sql
    /// SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid)
    /// WHERE r <= 10   -- read auction, price (every column checked); then every column of the kept rows
    /// ```
    ///
    /// Rows count in the source's metrics only when `count`; positions are the read's own,
    /// never in a checkpoint. None when the source cannot (streams, tailed files).
    fn read_in_order(
        &self,
        _projection: Option<&[usize]>,
        _checked: Option<&[usize]>,
        _scans: &[Vec<datafusion::logical_expr::Expr>],
        _count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        None
    }

    /// The event-time column of which the source knows, before reading them, the least value
    /// of the rows it has still to hand out (Parquet files: their row groups' statistics), when
    /// it does. A partition executed while [`publishing_floor`] runs then publishes that
    /// [`EventTimeFloor`] as it hands out each batch. Windows over the column close as the read
    /// goes by, with no watermark delay and no row ever late:
    ///
    /// ```sql
    /// SELECT window_start, COUNT(*) FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)
    /// WITH ('bid.type' = 'file_source', 'bid.path' = 'bid.parquet', 'bid.event_time' = 'date_time')
    /// ```
    fn floor_column(&self) -> Option<&str> {
        None
    }
}

/// The least event time (epoch milliseconds, as the operators compute it) of the rows one
/// execution of a source partition has still to hand out, as of the last batch it handed out:
/// exact, from the data's own statistics, not a guess with a delay. Unknown until published.
#[derive(Debug)]
pub struct EventTimeFloor(std::sync::atomic::AtomicI64);

impl Default for EventTimeFloor {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicI64::new(i64::MIN))
    }
}

impl EventTimeFloor {
    /// The floor, when known.
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(std::sync::atomic::Ordering::Acquire)).filter(|&t| t != i64::MIN)
    }

    /// Publishes `t` (it only rises: a lower value is ignored).
    pub fn set(&self, t: i64) {
        self.0.fetch_max(t, std::sync::atomic::Ordering::AcqRel);
    }
}

thread_local! {
    static FLOOR_TO_PUBLISH: std::cell::RefCell<Option<Arc<EventTimeFloor>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `execute` (a source partition's `execute`) so that the partition publishes its
/// [`EventTimeFloor`] in `floor`, if it can.
pub fn publishing_floor<R>(floor: &Arc<EventTimeFloor>, execute: impl FnOnce() -> R) -> R {
    let before = FLOOR_TO_PUBLISH.with(|f| f.replace(Some(Arc::clone(floor))));
    let out = execute();
    FLOOR_TO_PUBLISH.with(|f| *f.borrow_mut() = before);
    out
}

/// Inside [`publishing_floor`]: where the partition being executed publishes its floor.
pub fn floor_to_publish() -> Option<Arc<EventTimeFloor>> {
    FLOOR_TO_PUBLISH.with(|f| f.borrow_mut().take())
}

/// The schema metadata key a reader sets on a batch to say what its partition's floor is once
/// the batch is handed out ([`crate::checkpoint::positioned_stream`] takes it off).
pub const FLOOR_KEY: &str = "ferris.event_time_floor";

/// The columns `projection` asks for of `schema` (all of them when `None`) and their schema: what
/// a source's [`Source::partitions`] reads and yields.
pub fn projected_columns(schema: &SchemaRef, projection: Option<&[usize]>) -> (Vec<usize>, SchemaRef) {
    let columns = projection.map_or_else(|| (0..schema.fields().len()).collect(), <[usize]>::to_vec);
    let projected = Arc::new(schema.project(&columns).unwrap_or_else(|_| schema.as_ref().clone()));
    (columns, projected)
}
