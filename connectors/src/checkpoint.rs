//! What a connector does for checkpoints: a source says where each of its partitions has got
//! (Kafka offsets, file byte offsets) and starts again from there; a sink prepares what it
//! wrote at a barrier and makes it visible when the checkpoint is complete (two-phase commit).
//!
//! ```sql
//! CREATE STREAM totals AS SELECT … FROM orders INTO archive
//! WITH ('use_transactions' = 'true', 'checkpoint.interval' = '10s',
//!       'orders.type' = 'kafka_source', 'archive.type' = 'file_sink', …)
//! ```
//!
//! The engine drives the protocol (`ferris_engine::checkpoint`): at barrier *n* every reader of
//! a source records [`SourceCheckpoint::positions`] — the position after the last batch it
//! handed out — and every sink is asked to [`crate::Sink::prepare`]; once the checkpoint's
//! manifest is durable, sinks [`crate::Sink::commit`] and sources
//! [`SourceCheckpoint::commit`] (Kafka: the group's offsets). A restarted job calls
//! [`SourceCheckpoint::restore`] before reading and [`crate::Sink::recover`] before writing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// FNV-1a of `bytes`: a fingerprint that is the same on every run and build (checkpoint names
/// of ad-hoc queries, the row filter a recorded position was counted under).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

use crate::error::Result;

/// Read positions of a source: one entry per unit it reads (`topic/partition` → next offset,
/// `path#start` → `{"offset": …, "line": …, "done": …}`), as JSON values so each connector keeps
/// what it needs.
pub type Positions = BTreeMap<String, serde_json::Value>;

/// The positions of one source partition after the last batch it handed out, updated by the
/// partition's reader right before it yields a batch.
#[derive(Debug, Default, Clone)]
pub struct PositionCell(Arc<CellInner>);

#[derive(Debug, Default)]
struct CellInner {
    positions: Mutex<Positions>,
    /// Where an execution of the partition starts afresh (a restored checkpoint's positions).
    seed: Positions,
    /// The last execution read to its end.
    complete: std::sync::atomic::AtomicBool,
}

impl PositionCell {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cell at `positions` (a restored checkpoint's), where every fresh execution starts.
    pub fn seeded(positions: Positions) -> Self {
        Self(Arc::new(CellInner { positions: Mutex::new(positions.clone()), seed: positions, complete: Default::default() }))
    }

    /// The positions, locked for reading or updating.
    pub fn lock(&self) -> MutexGuard<'_, Positions> {
        self.0.positions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the positions.
    pub fn get(&self) -> Positions {
        self.lock().clone()
    }

    /// Where an execution of the partition starts: after the last batch the previous one
    /// handed out when that one failed or was dropped (read again under `RetryWithBackoff`,
    /// nothing repeated); from the seed again when it had read to its end (a table read
    /// twice in one query reads it all twice).
    pub fn start(&self) -> Positions {
        let mut positions = self.lock();
        if self.0.complete.swap(false, std::sync::atomic::Ordering::SeqCst) {
            positions.clone_from(&self.0.seed);
        }
        positions.clone()
    }

    /// [`PositionCell::start`] over `restored` (a checkpoint's positions of every unit).
    pub fn resume_from(&self, restored: &Positions) -> Positions {
        let mut at = restored.clone();
        at.extend(self.start());
        at
    }

    /// The execution under way has read to its end.
    fn mark_complete(&self) {
        self.0.complete.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A batch read by a source partition and the position of its unit once it is handed out.
pub type PositionedBatch = (arrow::record_batch::RecordBatch, Option<(String, serde_json::Value)>);

/// The stream of a source partition whose reader (on a blocking thread) sends batches with
/// their positions on `rx`: a unit's position in `cell` moves as its batch is handed out
/// downstream, not when it was read. So does the partition's event-time floor in `floor`, when
/// the reader marks a batch with one ([`crate::source::FLOOR_KEY`] in its schema's metadata,
/// taken off here).
pub fn positioned_stream(
    schema: arrow::datatypes::SchemaRef,
    rx: tokio::sync::mpsc::Receiver<datafusion::error::Result<PositionedBatch>>,
    cell: PositionCell,
    floor: Option<Arc<crate::source::EventTimeFloor>>,
) -> datafusion::physical_plan::SendableRecordBatchStream {
    let out_schema = Arc::clone(&schema);
    let stream = futures::stream::unfold((rx, false), move |(mut rx, failed)| {
        let cell = cell.clone();
        let floor = floor.clone();
        let schema = Arc::clone(&out_schema);
        async move {
            let Some(item) = rx.recv().await else {
                // the reader is done: read to the end unless it failed
                if !failed {
                    cell.mark_complete();
                }
                return None;
            };
            let failed = failed || item.is_err();
            let item = item.and_then(|(batch, position)| {
                if let Some((k, v)) = position {
                    cell.lock().insert(k, v);
                }
                let Some(t) = batch.schema_ref().metadata().get(crate::source::FLOOR_KEY).and_then(|t| t.parse::<i64>().ok()) else { return Ok(batch) };
                if let Some(floor) = &floor {
                    floor.set(t);
                }
                let rows = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                Ok(arrow::record_batch::RecordBatch::try_new_with_options(Arc::clone(&schema), batch.columns().to_vec(), &rows)?)
            });
            Some((item, (rx, failed)))
        }
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream))
}

/// Where a reader sends its batches with their positions.
pub type BatchSender = tokio::sync::mpsc::Sender<datafusion::error::Result<PositionedBatch>>;

/// A source's reader: given the positions restored from a checkpoint, reads and sends batches
/// until done or nobody listens (a database query, an API poller, a key scan).
pub type ReadFn = Arc<dyn Fn(Positions, BatchSender) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// The one partition of a source read by one async reader on a task of its own: its batches
/// move the partition's position as they are handed out, a reader error reaches the stream and
/// marks the source failed, a panic is an error too ([`crate::runtime::spawn_reader`]).
pub struct ReaderPartition {
    what: String,
    schema: arrow::datatypes::SchemaRef,
    cell: PositionCell,
    positions: UnitPositions,
    metrics: Arc<crate::metrics::ConnectorMetrics>,
    read: ReadFn,
}

impl std::fmt::Debug for ReaderPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderPartition").field("what", &self.what).field("schema", &self.schema).finish()
    }
}

impl ReaderPartition {
    /// The partition of `what` (`http source 'rates'`) yielding `schema`, its position kept in
    /// `positions` (which are reset to this one partition).
    pub fn partition(
        what: String,
        schema: arrow::datatypes::SchemaRef,
        positions: &UnitPositions,
        metrics: Arc<crate::metrics::ConnectorMetrics>,
        read: ReadFn,
    ) -> Arc<dyn datafusion::physical_plan::streaming::PartitionStream> {
        let cell = PositionCell::new();
        positions.set_cells(vec![cell.clone()]);
        Arc::new(Self { what, schema, cell, positions: positions.clone(), metrics, read })
    }
}

impl datafusion::physical_plan::streaming::PartitionStream for ReaderPartition {
    fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<datafusion::execution::TaskContext>) -> datafusion::physical_plan::SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        // executed again after a failure: on from the last batch handed out
        let read = (self.read)(self.cell.resume_from(&self.positions.restored()), tx.clone());
        let metrics = Arc::clone(&self.metrics);
        crate::runtime::spawn_reader(self.what.clone(), tx.clone(), async move {
            if let Err(e) = read.await {
                metrics.set_status(crate::metrics::ConnectionStatus::Failed);
                let _ = tx.send(Err(datafusion::error::DataFusionError::External(Box::new(e)))).await;
            }
        });
        positioned_stream(Arc::clone(&self.schema), rx, self.cell.clone(), None)
    }
}

/// The checkpoint side of a source that reads units (files, objects) in partitions: the cells
/// of the partitions last made, and the positions restored from a checkpoint.
#[derive(Debug, Default, Clone)]
pub struct UnitPositions {
    /// One cell per partition of the last [`crate::Source::partitions`].
    pub cells: Arc<Mutex<Vec<PositionCell>>>,
    /// Positions restored from a checkpoint, by unit.
    pub restored: Arc<Mutex<Positions>>,
}

impl UnitPositions {
    /// A copy of the restored positions.
    pub fn restored(&self) -> Positions {
        self.restored.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records the cells of the partitions just made.
    pub fn set_cells(&self, cells: Vec<PositionCell>) {
        *self.cells.lock().unwrap_or_else(PoisonError::into_inner) = cells;
    }
}

impl SourceCheckpoint for UnitPositions {
    fn positions(&self, partition: usize) -> Positions {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner).get(partition).map(PositionCell::get).unwrap_or_default()
    }

    fn restore(&self, positions: &Positions) -> Result<()> {
        self.restored.lock().unwrap_or_else(PoisonError::into_inner).clone_from(positions);
        Ok(())
    }
}

/// A source whose positions are checkpointed.
pub trait SourceCheckpoint: Send + Sync + std::fmt::Debug {
    /// The positions of partition `partition` (an index into the last
    /// [`crate::Source::partitions`]): after the last batch its stream yielded.
    fn positions(&self, partition: usize) -> Positions;
    /// Start from `positions` (the merge of every partition's, from a checkpoint) instead of the
    /// beginning (files) or the group's offsets (Kafka). Called before the partitions run.
    fn restore(&self, positions: &Positions) -> Result<()>;
    /// A checkpoint with `positions` is complete: record them where the outside world looks
    /// (Kafka: commit the consumer group's offsets). With `last` (the job is stopping) the
    /// commit is waited for, a bounded time; otherwise it must not block.
    fn commit(&self, _positions: &Positions, _last: bool) {}

    /// Like [`SourceCheckpoint::commit`], for a job whose operator state can be rebuilt by
    /// reading rows again (see [`BarrierRequests::replays`]): every row with an event time before
    /// `replay.from` (epoch milliseconds) is in windows the job has emitted, so a process that
    /// starts without this one's state may start at the first row of each unit at or after it
    /// and skip the older ones up to `positions` (Kafka: the commit's metadata says so).
    fn commit_replayable(&self, positions: &Positions, last: bool, _replay: ReplayTime) {
        self.commit(positions, last);
    }

    /// How often the source would like its positions committed, if it has a say (Kafka's
    /// `commit.interval`): a job without operator state takes its barriers that often.
    fn commit_interval(&self) -> Option<Duration> {
        None
    }

    /// Merges `other` (another partition's positions, or another scan's of the same source)
    /// into `into`. Where both name the same unit the earlier position wins, so that a merge
    /// never skips rows: numbers and objects' `offset` fields are compared.
    fn merge(&self, into: &mut Positions, other: Positions) {
        merge_earliest(into, other);
    }

    /// The connector's own type, for a sink of the same connector that commits this source's
    /// positions inside its transaction (see [`crate::Sink::take_source_commits`]).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The positions of every source of a checkpoint, by source name (as the manifest holds them).
pub type SourcePositions = BTreeMap<String, Positions>;

/// The default merge of [`SourceCheckpoint::merge`]: the earlier of two positions of one unit.
pub fn merge_earliest(into: &mut Positions, other: Positions) {
    fn offset(v: &serde_json::Value) -> Option<i64> {
        v.as_i64().or_else(|| v.get("offset").and_then(serde_json::Value::as_i64))
    }
    for (k, v) in other {
        match into.get(&k) {
            Some(old) if offset(old).zip(offset(&v)).is_some_and(|(a, b)| a <= b) => {}
            Some(old) if offset(old).is_some() && offset(&v).is_none() => {}
            _ => {
                into.insert(k, v);
            }
        }
    }
}

/// Lets a source ask the job for a barrier now and wait for it (a Kafka rebalance giving
/// partitions away drains and commits them first). Put in the DataFusion session config by the
/// engine; a source finds it in the task context it is executed with.
pub trait BarrierRequests: Send + Sync + std::fmt::Debug {
    /// Starts a barrier (or waits for the one in flight to be followed by a new one) and blocks
    /// the calling thread until it has passed every operator and sink, at most `wait`. Returns
    /// the positions of `source` recorded at that barrier, or `None` when the job could not
    /// complete one in time or has stopped.
    fn request_and_wait(&self, source: &str, wait: Duration) -> Option<Positions>;

    /// Whether the job rebuilds its operator state by reading rows again when a source gives
    /// partitions away: every stateful operator is a `TUMBLE` or `HOP` window aggregate emitting final
    /// results, every row reaches the sinks through one, and `source` is the job's only source.
    ///
    /// ```sql
    /// SELECT window_start, k, COUNT(*) FROM orders GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), k INTO out
    /// ```
    fn replays(&self, _source: &str) -> bool {
        false
    }

    /// Like [`BarrierRequests::request_and_wait`], for a job that [`replays`](Self::replays):
    /// at this barrier the operators drop their open windows (the source reads their rows
    /// again, or hands them to another process). Returns the positions and the event time
    /// before which every row is in windows already emitted (epoch milliseconds).
    fn request_replay_and_wait(&self, _source: &str, _wait: Duration) -> Option<(Positions, ReplayTime)> {
        None
    }

    /// In a job that [`replays`](Self::replays): the event time before which every row is in
    /// windows this process has emitted (the operators' oldest open window, epoch
    /// milliseconds). A partition taken over from another process is held until this reaches
    /// the other's, so that no window the other emitted is emitted again here. `None`: not
    /// tracked (nothing to wait for).
    fn emitted_before(&self) -> Option<i64> {
        None
    }

    /// The source has sought its partitions back after [`request_replay_and_wait`]
    /// (Self::request_replay_and_wait): the job takes barriers again (none is started in
    /// between, so that no checkpoint holds the dropped windows' positions without their rows).
    fn hand_over_done(&self) {}

    /// Keeps a small note where every process of the job finds it (the job's checkpoint
    /// directory): what a Kafka source hands over with a partition, for brokers that do not
    /// keep a commit's metadata. Blocks; call it off the async runtime.
    fn put_note(&self, _name: &str, _value: &str) {}

    /// The note `name`, if one was kept. Blocks; call it off the async runtime.
    fn note(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Where a job that rebuilds its windows by reading rows again stands at a checkpoint (see
/// [`BarrierRequests::replays`]), epoch milliseconds.
///
/// ```sql
/// SELECT window_start, k, COUNT(*) FROM orders GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND), k
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayTime {
    /// Every row before this event time is in windows already emitted (or was late): the start
    /// of the oldest window still open.
    pub from: i64,
    /// How far the operators' inputs had got (their watermark plus its delay): a process taking
    /// a partition over lets its own event time reach this, and no further, before it reads
    /// the partition's rows again.
    pub hold: i64,
}

/// The session-config extension carrying the job's [`BarrierRequests`].
#[derive(Debug, Clone)]
pub struct JobBarriers(pub Arc<dyn BarrierRequests>);

/// What a transactional sink keeps in a checkpoint's manifest to finish (or undo) its prepared
/// writes after a crash: the files it staged, the transaction it opened.
pub type Prepared = serde_json::Value;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merging_keeps_the_earlier_position_of_a_unit() {
        let mut a: Positions = [("t/0".to_string(), json!(10)), ("f#0".to_string(), json!({"offset": 50, "line": 3}))].into();
        merge_earliest(&mut a, [("t/0".to_string(), json!(7)), ("t/1".to_string(), json!(4)), ("f#0".to_string(), json!({"offset": 80}))].into());
        assert_eq!(a["t/0"], json!(7));
        assert_eq!(a["t/1"], json!(4));
        assert_eq!(a["f#0"], json!({"offset": 50, "line": 3}));
    }
}
