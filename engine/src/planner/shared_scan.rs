//! One read of a source however many times the query names it. A self-join or a query that
//! uses a stream twice (Nexmark q5 and q7 join the bids with an aggregate of the bids) reads
//! the source once: each scan of the plan is a *consumer* of one shared set of partitions,
//! the union of the consumers' columns is read, and every batch is handed to each consumer
//! (projected to its columns; the columns are shared, not copied).
//!
//! ```sql
//! SELECT b.auction, b.price FROM bid b
//! JOIN (SELECT MAX(price) AS maxprice, window_end FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
//!   ON b.price = m.maxprice          -- `bid` is read once, not twice
//! ```
//!
//! Reading twice would be wrong for a Kafka source, not only slow: two sets of consumers in one
//! consumer group split the topic's partitions between them, and each scan would see part of it.
//!
//! Reading is driven by the consumers: one whose queue is empty reads the next batch of the
//! partition and queues it for the others, so no consumer waits for another (an operator that
//! reads one input to its end before the other, as a hash join's build side does, still runs).
//! A consumer that has not been executed yet gets everything from the start; one whose stream
//! is dropped (a `LIMIT` reached) or whose plan is gone stops receiving. Batches waiting in a
//! consumer's queue count as read (for Kafka commits) as rows held in operator state do.
//!
//! On a stream the queues are bounded ([`MAX_QUEUED`] batches): a consumer that reads for the
//! others waits while one of them has that many waiting, so a slow consumer slows the reading
//! down (back-pressure) instead of letting its queue grow without end. A bounded source's
//! queues are not: a hash join reads its build side to the end before its probe side starts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use ferris_connectors::Source;
use futures::StreamExt;

/// Batches a consumer of a stream may have waiting before the reading waits for it.
pub const MAX_QUEUED: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The scans of one source in one job's plan.
pub struct SharedScan {
    source: Arc<dyn Source>,
    state: Mutex<ScanState>,
}

impl fmt::Debug for SharedScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedScan").field("source", &self.source.name()).finish()
    }
}

#[derive(Default)]
struct ScanState {
    /// Every scan planned so far: its columns (indices into the source's schema) and whether
    /// its plan is still alive.
    consumers: Vec<(Weak<PlanSlot>, Vec<usize>)>,
    /// Per consumer: the filters it lets the source skip data by.
    filters: Vec<Vec<Expr>>,
    /// Set at the first execution: the partitions being read.
    started: Option<Arc<Started>>,
}

/// The source's partitions as read for every consumer.
struct Started {
    /// The union of the consumers' columns, ascending.
    feeds: Vec<Feed>,
    /// Per consumer: its columns as indices into the union; `None` when the plan is gone.
    columns: Vec<Option<Vec<usize>>>,
    /// The most batches a consumer may have waiting (a stream's queues), or none (bounded).
    bound: Option<usize>,
}

/// One partition of the source, shared by the consumers.
struct Feed {
    /// The source's stream, opened by the first consumer that reads; `None` once it ended.
    input: tokio::sync::Mutex<Option<Input>>,
    /// Per consumer: batches read for it and not taken yet.
    queues: Mutex<Vec<Queue>>,
    /// Woken when a consumer takes a batch or goes: room in the queues.
    room: tokio::sync::Notify,
}

enum Input {
    NotOpened(Arc<dyn PartitionStream>),
    Open(SendableRecordBatchStream),
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Result<RecordBatch>>,
    /// Its stream was dropped, or its plan never executed it and is gone: nothing more is kept.
    closed: bool,
}

/// Owned by a scan's partitions: alive while the plan holding the scan is.
#[derive(Debug)]
struct PlanSlot;

impl SharedScan {
    /// The shared reading of `source`.
    pub fn new(source: Arc<dyn Source>) -> Self {
        Self { source, state: Mutex::new(ScanState::default()) }
    }

    /// How many scans of the source the plan holds (more than one: the source is shared).
    pub fn scans(&self) -> usize {
        lock(&self.state).consumers.iter().filter(|(slot, _)| slot.strong_count() > 0).count()
    }

    /// The partitions for one more scan of the source, reading `projection` (all columns when
    /// `None`). A scan planned after reading has started reads the source on its own.
    pub fn partitions(self: &Arc<Self>, projection: Option<&[usize]>, filters: &[Expr]) -> Vec<Arc<dyn PartitionStream>> {
        let mut state = lock(&self.state);
        if state.started.is_some() {
            return self.source.partitions_pruned(projection, &[filters.to_vec()]);
        }
        let columns: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..self.source.schema().fields().len()).collect(),
        };
        let schema = match self.source.schema().project(&columns) {
            Ok(s) => Arc::new(s),
            Err(_) => return self.source.partitions_pruned(projection, &[filters.to_vec()]),
        };
        let slot = Arc::new(PlanSlot);
        let consumer = state.consumers.len();
        state.consumers.push((Arc::downgrade(&slot), columns));
        state.filters.push(filters.to_vec());
        let n = self.source.partitions(projection).len();
        (0..n)
            .map(|partition| {
                Arc::new(SharedPartition { scan: Arc::clone(self), slot: Arc::clone(&slot), consumer, partition, schema: Arc::clone(&schema) })
                    as Arc<dyn PartitionStream>
            })
            .collect()
    }

    /// Starts reading on the first execution: the union of the live consumers' columns.
    fn start(&self) -> Arc<Started> {
        let mut state = lock(&self.state);
        if let Some(s) = &state.started {
            return Arc::clone(s);
        }
        let live: Vec<Option<&Vec<usize>>> = state.consumers.iter().map(|(slot, cols)| (slot.strong_count() > 0).then_some(cols)).collect();
        let mut union: Vec<usize> = live.iter().flatten().flat_map(|c| c.iter().copied()).collect();
        union.sort_unstable();
        union.dedup();
        let all = union.len() == self.source.schema().fields().len();
        // an object is read when a live consumer's filters may want it
        let filters: Vec<Vec<Expr>> = live.iter().zip(&state.filters).filter(|(c, _)| c.is_some()).map(|(_, f)| f.clone()).collect();
        let partitions = self.source.partitions_pruned((!all).then_some(union.as_slice()), &filters);
        let columns =
            live.iter().map(|c| c.map(|cols| cols.iter().map(|i| union.binary_search(i).unwrap_or(0)).collect())).collect::<Vec<Option<Vec<usize>>>>();
        let feeds = partitions
            .into_iter()
            .map(|p| Feed {
                input: tokio::sync::Mutex::new(Some(Input::NotOpened(p))),
                queues: Mutex::new(columns.iter().map(|c| Queue { batches: VecDeque::new(), closed: c.is_none() }).collect()),
                room: tokio::sync::Notify::new(),
            })
            .collect();
        let bound = (!self.source.is_bounded()).then_some(MAX_QUEUED);
        let started = Arc::new(Started { feeds, columns, bound });
        state.started = Some(Arc::clone(&started));
        started
    }
}

/// One partition of one scan.
struct SharedPartition {
    scan: Arc<SharedScan>,
    /// Keeps the consumer registered while the plan lives.
    #[allow(dead_code)]
    slot: Arc<PlanSlot>,
    consumer: usize,
    partition: usize,
    schema: SchemaRef,
}

impl fmt::Debug for SharedPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPartition").field("scan", &self.scan).field("consumer", &self.consumer).field("partition", &self.partition).finish()
    }
}

impl PartitionStream for SharedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let started = self.scan.start();
        let reader = ConsumerReader { started, consumer: self.consumer, partition: self.partition, ctx, closed: Arc::new(AtomicBool::new(false)) };
        let stream = futures::stream::unfold(reader, |reader| async move { reader.next().await.map(|item| (item, reader)) });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

/// A consumer's stream of one partition.
struct ConsumerReader {
    started: Arc<Started>,
    consumer: usize,
    partition: usize,
    ctx: Arc<TaskContext>,
    closed: Arc<AtomicBool>,
}

impl ConsumerReader {
    fn feed(&self) -> Result<&Feed> {
        self.started
            .feeds
            .get(self.partition)
            .ok_or_else(|| DataFusionError::Internal(format!("shared scan: partition {} of {} planned but not read", self.partition, self.started.feeds.len())))
    }

    fn take(&self, feed: &Feed) -> Option<Result<RecordBatch>> {
        let item = lock(&feed.queues).get_mut(self.consumer).and_then(|q| q.batches.pop_front());
        if item.is_some() && self.started.bound.is_some() {
            feed.room.notify_waiters();
        }
        item
    }

    /// On a stream: waits until no other live consumer has [`MAX_QUEUED`] batches waiting.
    async fn wait_for_room(&self, feed: &Feed) {
        let Some(bound) = self.started.bound else { return };
        loop {
            let notified = feed.room.notified();
            tokio::pin!(notified);
            // registered before looking, so a batch taken in between still wakes us
            notified.as_mut().enable();
            let full = lock(&feed.queues).iter().enumerate().any(|(i, q)| i != self.consumer && !q.closed && q.batches.len() >= bound);
            if !full {
                return;
            }
            notified.await;
        }
    }

    async fn next(&self) -> Option<Result<RecordBatch>> {
        let feed = match self.feed() {
            Ok(f) => f,
            Err(e) => return if self.closed.swap(true, Ordering::Relaxed) { None } else { Some(Err(e)) },
        };
        if let Some(item) = self.take(feed) {
            return Some(item);
        }
        let mut input = feed.input.lock().await;
        // Another consumer may have read for us while we waited.
        if let Some(item) = self.take(feed) {
            return Some(item);
        }
        // back-pressure: a consumer that lags holds the reading up (its batches are taken
        // without this lock)
        self.wait_for_room(feed).await;
        if let Some(item) = self.take(feed) {
            return Some(item);
        }
        let stream = match input.as_mut()? {
            Input::Open(s) => s,
            Input::NotOpened(p) => {
                let s = p.execute(Arc::clone(&self.ctx));
                *input = Some(Input::Open(s));
                match input.as_mut() {
                    Some(Input::Open(s)) => s,
                    _ => return None,
                }
            }
        };
        let item = stream.next().await;
        let mut queues = lock(&feed.queues);
        match item {
            None => {
                *input = None;
                None
            }
            Some(Ok(batch)) => {
                let mut own = None;
                for (i, q) in queues.iter_mut().enumerate() {
                    let Some(Some(cols)) = self.started.columns.get(i) else { continue };
                    if q.closed && i != self.consumer {
                        continue;
                    }
                    let projected = batch.project(cols).map_err(DataFusionError::from);
                    if i == self.consumer {
                        own = Some(projected);
                    } else {
                        q.batches.push_back(projected);
                    }
                }
                own
            }
            Some(Err(e)) => {
                let message = e.to_string();
                for (i, q) in queues.iter_mut().enumerate() {
                    if i != self.consumer && !q.closed {
                        q.batches.push_back(Err(DataFusionError::Execution(message.clone())));
                    }
                }
                Some(Err(e))
            }
        }
    }
}

impl Drop for ConsumerReader {
    fn drop(&mut self) {
        if let Ok(feed) = self.feed() {
            if let Some(q) = lock(&feed.queues).get_mut(self.consumer) {
                q.closed = true;
                q.batches.clear();
            }
            feed.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;
    use ferris_connectors::metrics::ConnectorMetrics;

    /// A stream of numbered one-row batches that never ends.
    #[derive(Debug)]
    struct Endless {
        schema: SchemaRef,
        bounded: bool,
    }

    #[derive(Debug)]
    struct EndlessPartition(SchemaRef);

    impl PartitionStream for EndlessPartition {
        fn schema(&self) -> &SchemaRef {
            &self.0
        }
        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let schema = Arc::clone(&self.0);
            let s = futures::stream::iter(0i64..).map(move |i| Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![i]))])?));
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.0), s))
        }
    }

    impl Source for Endless {
        fn name(&self) -> &str {
            "endless"
        }
        fn schema(&self) -> SchemaRef {
            Arc::clone(&self.schema)
        }
        fn is_bounded(&self) -> bool {
            self.bounded
        }
        fn partitions(&self, _projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
            vec![Arc::new(EndlessPartition(Arc::clone(&self.schema)))]
        }
        fn metrics(&self) -> Arc<ConnectorMetrics> {
            Arc::new(ConnectorMetrics::default())
        }
        fn describe(&self) -> String {
            "endless".into()
        }
    }

    fn two_consumers(bounded: bool) -> (SendableRecordBatchStream, SendableRecordBatchStream) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let scan = Arc::new(SharedScan::new(Arc::new(Endless { schema, bounded })));
        let a = scan.partitions(None, &[]).remove(0);
        let b = scan.partitions(None, &[]).remove(0);
        let ctx = SessionContext::new().task_ctx();
        (a.execute(Arc::clone(&ctx)), b.execute(ctx))
    }

    fn value(b: &RecordBatch) -> i64 {
        b.column(0).as_any().downcast_ref::<Int64Array>().map_or(-1, |a| a.value(0))
    }

    #[tokio::test]
    async fn a_lagging_consumer_of_a_stream_holds_the_reading_up() {
        let (mut fast, mut slow) = two_consumers(false);
        let step = std::time::Duration::from_millis(200);
        // the fast one reads until the slow one has MAX_QUEUED batches waiting, then waits
        for i in 0..=MAX_QUEUED as i64 - 1 {
            let b = tokio::time::timeout(step, fast.next()).await.expect("room in the queue").unwrap().unwrap();
            assert_eq!(value(&b), i);
        }
        assert!(tokio::time::timeout(step, fast.next()).await.is_err(), "the slow consumer's queue is full: reading waits");
        // the slow one takes a batch: the reading goes on, and nothing was lost or reordered
        assert_eq!(value(&slow.next().await.unwrap().unwrap()), 0);
        let b = tokio::time::timeout(step, fast.next()).await.expect("room again").unwrap().unwrap();
        assert_eq!(value(&b), MAX_QUEUED as i64);
        for i in 1..=MAX_QUEUED as i64 {
            assert_eq!(value(&slow.next().await.unwrap().unwrap()), i);
        }
        // a consumer that goes away holds nothing up
        drop(slow);
        for _ in 0..3 * MAX_QUEUED {
            tokio::time::timeout(step, fast.next()).await.expect("nobody to wait for").unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_bounded_sources_queues_hold_a_whole_side() {
        let (mut first, _second) = two_consumers(true);
        // a hash join reads its build side to the end before its probe side: no bound
        for _ in 0..4 * MAX_QUEUED {
            first.next().await.unwrap().unwrap();
        }
    }
}
