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
}

/// One partition of the source, shared by the consumers.
struct Feed {
    /// The source's stream, opened by the first consumer that reads; `None` once it ended.
    input: tokio::sync::Mutex<Option<Input>>,
    /// Per consumer: batches read for it and not taken yet.
    queues: Mutex<Vec<Queue>>,
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
            })
            .collect();
        let started = Arc::new(Started { feeds, columns });
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
        lock(&feed.queues).get_mut(self.consumer).and_then(|q| q.batches.pop_front())
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
        }
    }
}
