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
//! In a job taking checkpoints, a barrier is put into the shared read itself: the consumer
//! reading the partition when barrier *n* has started records the partition's positions and
//! appends *n* to every consumer's queue, after the rows read before it. Each consumer passes
//! *n* when it reaches it, so every scan's operators see the same rows before the barrier and
//! the positions cover exactly those (Nexmark q5/q7 and self-joins are checkpointed like any
//! other query).
//!
//! On a stream the queues are bounded ([`MAX_QUEUED`] batches): a consumer that reads for the
//! others waits while one of them has that many waiting, so a slow consumer slows the reading
//! down (back-pressure) instead of letting its queue grow without end. A bounded source's
//! queues are not: a hash join reads its build side to the end before its probe side starts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use ferris_connectors::Source;
use futures::StreamExt;

use crate::checkpoint::barrier::{BarrierRuntime, Marked, MarkedStream};
use crate::checkpoint::CheckpointContext;

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
    /// The source, for its positions at a barrier.
    source: Arc<dyn Source>,
    /// The job's barriers, when it takes checkpoints.
    barriers: Option<Arc<BarrierRuntime>>,
}

/// One partition of the source, shared by the consumers.
struct Feed {
    /// The source's stream, opened by the first consumer that reads; `None` once it ended.
    input: tokio::sync::Mutex<Option<Input>>,
    /// Per consumer: batches read for it and not taken yet.
    queues: Mutex<Vec<Queue>>,
    /// Woken when a consumer takes a batch or goes: room in the queues.
    room: tokio::sync::Notify,
    /// The last barrier put into the queues (changed only under `input`'s lock).
    marked: AtomicU64,
    /// The source partition's event-time floor as of the last batch read from it (see
    /// [`ferris_connectors::Source::floor_column`]).
    floor: Arc<ferris_connectors::EventTimeFloor>,
    /// The consumers waiting for the source to have more.
    waiters: Arc<Waiters>,
    /// The consumers waiting for the one reading to let the read go. (Not queued on the lock:
    /// tokio hands a lock to the next waiter in line when it is let go, and a waiter that is
    /// not polled then — its operator waiting on its output — would hold it for ever.)
    lock_waiters: Waiters,
}

/// The wakers of the consumers waiting for a partition's source to have more. The source is
/// polled with one waker that wakes them all, and no consumer holds the read while it waits:
/// whichever runs next reads for the others. (A consumer whose operator waits on its output
/// does not run; had it kept the read, a consumer whose operator must finish before that
/// output is taken — a hash join's build side over the same source — would wait for ever.)
#[derive(Default)]
struct Waiters(Mutex<Vec<std::task::Waker>>);

impl Waiters {
    fn add(&self, waker: &std::task::Waker) {
        let mut all = lock(&self.0);
        if !all.iter().any(|w| w.will_wake(waker)) {
            all.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        let all = std::mem::take(&mut *lock(&self.0));
        for w in all {
            w.wake();
        }
    }
}

/// Wakes the consumers waiting for the read when dropped (after the read's guard, declared
/// later, has let it go).
struct WakeOnDrop<'a>(&'a Waiters);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.wake_all();
    }
}

impl std::task::Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

enum Input {
    NotOpened(Arc<dyn PartitionStream>),
    Open(SendableRecordBatchStream),
}

#[derive(Default)]
struct Queue {
    /// With the partition's floor once each is handed out, when known.
    batches: VecDeque<(Marked, Option<i64>)>,
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

    /// The partitions for one more scan of the source, reading `projection` (all columns when
    /// `None`), and the scan's consumer. A scan planned after reading has started reads the
    /// source on its own (no consumer).
    pub fn partitions(self: &Arc<Self>, projection: Option<&[usize]>, filters: &[Expr]) -> (Vec<ScanPartition>, Option<usize>) {
        let own = |p: Vec<Arc<dyn PartitionStream>>| (p.into_iter().map(ScanPartition::Own).collect(), None);
        let mut state = lock(&self.state);
        if state.started.is_some() {
            return own(self.source.partitions_pruned(projection, &[filters.to_vec()]));
        }
        let columns: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..self.source.schema().fields().len()).collect(),
        };
        let schema = match self.source.schema().project(&columns) {
            Ok(s) => Arc::new(s),
            Err(_) => return own(self.source.partitions_pruned(projection, &[filters.to_vec()])),
        };
        let slot = Arc::new(PlanSlot);
        let consumer = state.consumers.len();
        state.consumers.push((Arc::downgrade(&slot), columns));
        state.filters.push(filters.to_vec());
        let n = self.source.partitions(projection).len();
        let partitions = (0..n)
            .map(|partition| {
                ScanPartition::Shared(Arc::new(SharedPartition {
                    scan: Arc::clone(self),
                    slot: Arc::clone(&slot),
                    consumer,
                    partition,
                    schema: Arc::clone(&schema),
                }))
            })
            .collect();
        (partitions, Some(consumer))
    }

    /// Takes `consumer` out of the shared read: its scan reads the source on its own now
    /// ([`Source::read_again`]), and no batch is queued for it. True when another live consumer
    /// still reads the source.
    pub fn release(&self, consumer: usize) -> bool {
        let mut state = lock(&self.state);
        if let Some(c) = state.consumers.get_mut(consumer) {
            c.0 = Weak::new();
        }
        if let Some(started) = &state.started {
            for feed in &started.feeds {
                if let Some(q) = lock(&feed.queues).get_mut(consumer) {
                    q.closed = true;
                    q.batches.clear();
                }
            }
        }
        drop(state);
        self.others_live(consumer)
    }

    /// True when a live consumer other than `consumer` reads the source.
    pub fn others_live(&self, consumer: usize) -> bool {
        lock(&self.state).consumers.iter().enumerate().any(|(i, (slot, _))| i != consumer && slot.strong_count() > 0)
    }

    /// Starts reading on the first execution: the union of the live consumers' columns.
    fn start(&self, ctx: &TaskContext) -> Arc<Started> {
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
                marked: AtomicU64::new(0),
                floor: Arc::new(ferris_connectors::EventTimeFloor::default()),
                waiters: Arc::new(Waiters::default()),
                lock_waiters: Waiters::default(),
            })
            .collect();
        let bound = (!self.source.is_bounded()).then_some(MAX_QUEUED);
        let barriers = ctx.session_config().get_extension::<CheckpointContext>().map(|c| Arc::clone(&c.runtime));
        let started = Arc::new(Started { feeds, columns, bound, source: Arc::clone(&self.source), barriers });
        state.started = Some(Arc::clone(&started));
        started
    }
}

/// A partition of one scan of a source: read for this scan alone, or a share of a read.
#[derive(Debug)]
pub enum ScanPartition {
    /// The source's own partition.
    Own(Arc<dyn PartitionStream>),
    /// One consumer's share of a partition read once for every scan.
    Shared(Arc<SharedPartition>),
}

impl ScanPartition {
    /// The partition's columns.
    pub fn schema(&self) -> &SchemaRef {
        match self {
            Self::Own(p) => p.schema(),
            Self::Shared(p) => p.schema(),
        }
    }

    /// Its rows, without barriers.
    pub fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        match self {
            Self::Own(p) => p.execute(ctx),
            Self::Shared(p) => p.execute(ctx),
        }
    }
}

/// One partition of one scan of a source read once for every scan.
pub struct SharedPartition {
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
        // barriers are passed by the leaf over `execute_marked`; a plain execution skips them
        let stream = self.execute_marked(ctx).filter_map(|item| async move {
            match item {
                Marked::Rows(rows) => Some(rows),
                Marked::Barrier(..) => None,
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

impl SharedPartition {
    /// This consumer's share of the partition, with the barriers put into the read.
    pub fn execute_marked(&self, ctx: Arc<TaskContext>) -> MarkedStream {
        let started = self.scan.start(&ctx);
        // executed to publish the floor: this consumer's, as of the last batch it took
        let floor = ferris_connectors::source::floor_to_publish();
        let reader = ConsumerReader { started, consumer: self.consumer, partition: self.partition, ctx, closed: Arc::new(AtomicBool::new(false)), floor };
        Box::pin(futures::stream::unfold(reader, |reader| async move { reader.next().await.map(|item| (item, reader)) }))
    }
}

/// A consumer's stream of one partition.
struct ConsumerReader {
    started: Arc<Started>,
    consumer: usize,
    partition: usize,
    ctx: Arc<TaskContext>,
    closed: Arc<AtomicBool>,
    /// Where this consumer publishes the floor of the batches it hands out, when asked to.
    floor: Option<Arc<ferris_connectors::EventTimeFloor>>,
}

impl ConsumerReader {
    fn feed(&self) -> Result<&Feed> {
        self.started
            .feeds
            .get(self.partition)
            .ok_or_else(|| DataFusionError::Internal(format!("shared scan: partition {} of {} planned but not read", self.partition, self.started.feeds.len())))
    }

    fn take(&self, feed: &Feed) -> Option<Marked> {
        let item = lock(&feed.queues).get_mut(self.consumer).and_then(|q| q.batches.pop_front());
        if item.is_some() && self.started.bound.is_some() {
            feed.room.notify_waiters();
        }
        let (item, floor) = item?;
        self.handed_out(floor);
        Some(item)
    }

    /// A batch read with the partition's floor at `floor` goes out: so does the floor.
    fn handed_out(&self, floor: Option<i64>) {
        if let (Some(cell), Some(t)) = (&self.floor, floor) {
            cell.set(t);
        }
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

    /// A barrier has started that this partition's queues have not had yet.
    fn barrier_due(&self, feed: &Feed) -> Option<u64> {
        let n = self.started.barriers.as_ref()?.triggered();
        (n > feed.marked.load(Ordering::Acquire)).then_some(n)
    }

    /// Puts barrier `n` into every live consumer's queue with the partition's positions (after
    /// the last batch read from it). Called with `input`'s lock held.
    fn mark(&self, feed: &Feed, n: u64) {
        feed.marked.store(n, Ordering::Release);
        let positions = self.started.source.checkpoint().map(|c| c.positions(self.partition)).unwrap_or_default();
        for (i, q) in lock(&feed.queues).iter_mut().enumerate() {
            if !q.closed || i == self.consumer {
                q.batches.push_back((Marked::Barrier(n, positions.clone()), None));
            }
        }
    }

    async fn next(&self) -> Option<Marked> {
        let feed = match self.feed() {
            Ok(f) => f,
            Err(e) => return if self.closed.swap(true, Ordering::Relaxed) { None } else { Some(Marked::Rows(Err(e))) },
        };
        // (declared before the guard: wakes the others once it has let the read go)
        let _release = WakeOnDrop(&feed.lock_waiters);
        let (item, mut input) = loop {
            if let Some(item) = self.take(feed) {
                return Some(item);
            }
            let mut input = std::future::poll_fn(|cx| {
                if let Ok(held) = feed.input.try_lock() {
                    return Poll::Ready(held);
                }
                feed.lock_waiters.add(cx.waker());
                // (it may have been let go in between)
                match feed.input.try_lock() {
                    Ok(held) => Poll::Ready(held),
                    Err(_) => Poll::Pending,
                }
            })
            .await;
            // Another consumer may have read for us while we waited.
            if let Some(item) = self.take(feed) {
                return Some(item);
            }
            if input.is_none() {
                return None;
            }
            if let Some(n) = self.barrier_due(feed) {
                self.mark(feed, n);
                return self.take(feed);
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
                    let s = ferris_connectors::source::publishing_floor(&feed.floor, || p.execute(Arc::clone(&self.ctx)));
                    *input = Some(Input::Open(s));
                    match input.as_mut() {
                        Some(Input::Open(s)) => s,
                        _ => return None,
                    }
                }
            };
            // one poll: a barrier that starts while the source has nothing to give goes in at
            // once; nothing to give, the read is let go until the source wakes the waiters
            let polled = std::future::poll_fn(|cx| {
                Poll::Ready(match self.barrier_due(feed) {
                    Some(n) => Some(Err(n)),
                    None => {
                        feed.waiters.add(cx.waker());
                        let waker = std::task::Waker::from(Arc::clone(&feed.waiters));
                        match stream.poll_next_unpin(&mut std::task::Context::from_waker(&waker)) {
                            Poll::Ready(item) => Some(Ok(item)),
                            Poll::Pending => None,
                        }
                    }
                })
            })
            .await;
            match polled {
                Some(Ok(item)) => break (item, input),
                Some(Err(n)) => {
                    self.mark(feed, n);
                    return self.take(feed);
                }
                None => {
                    drop(input);
                    feed.lock_waiters.wake_all();
                    // woken through `waiters` (or by a barrier), then look again
                    let mut waited = false;
                    std::future::poll_fn(|_| if std::mem::replace(&mut waited, true) { Poll::Ready(()) } else { Poll::Pending }).await;
                }
            }
        };
        let mut queues = lock(&feed.queues);
        match item {
            None => {
                *input = None;
                None
            }
            Some(Ok(batch)) => {
                let floor = feed.floor.get();
                let mut own = None;
                for (i, q) in queues.iter_mut().enumerate() {
                    let Some(Some(cols)) = self.started.columns.get(i) else { continue };
                    if q.closed && i != self.consumer {
                        continue;
                    }
                    let projected = batch.project(cols).map_err(DataFusionError::from);
                    if i == self.consumer {
                        own = Some(Marked::Rows(projected));
                    } else {
                        q.batches.push_back((Marked::Rows(projected), floor));
                    }
                }
                if own.is_some() {
                    self.handed_out(floor);
                }
                own
            }
            Some(Err(e)) => {
                let message = e.to_string();
                for (i, q) in queues.iter_mut().enumerate() {
                    if i != self.consumer && !q.closed {
                        q.batches.push_back((Marked::Rows(Err(DataFusionError::Execution(message.clone()))), None));
                    }
                }
                Some(Marked::Rows(Err(e)))
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
    use datafusion::arrow::record_batch::RecordBatch;
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
        let a = scan.partitions(None, &[]).0.remove(0);
        let b = scan.partitions(None, &[]).0.remove(0);
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

    /// Batches 0, 1, … up to a count the test raises, then nothing (a quiet stream); its
    /// position is the number of batches it has yielded.
    #[derive(Debug, Default)]
    struct Quiet {
        available: std::sync::atomic::AtomicI64,
        yielded: Arc<std::sync::atomic::AtomicI64>,
        more: tokio::sync::Notify,
    }

    #[derive(Debug)]
    struct QuietPartition(Arc<Quiet>, SchemaRef);

    impl PartitionStream for QuietPartition {
        fn schema(&self) -> &SchemaRef {
            &self.1
        }
        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let (quiet, schema) = (Arc::clone(&self.0), Arc::clone(&self.1));
            let s = futures::stream::unfold(0i64, move |i| {
                let (quiet, schema) = (Arc::clone(&quiet), Arc::clone(&schema));
                async move {
                    while quiet.available.load(Ordering::Acquire) <= i {
                        quiet.more.notified().await;
                    }
                    quiet.yielded.store(i + 1, Ordering::Release);
                    Some((RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![i]))]).map_err(DataFusionError::from), i + 1))
                }
            });
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.1), s))
        }
    }

    #[derive(Debug)]
    struct QuietPositions(Arc<std::sync::atomic::AtomicI64>);

    impl ferris_connectors::checkpoint::SourceCheckpoint for QuietPositions {
        fn positions(&self, _partition: usize) -> ferris_connectors::checkpoint::Positions {
            [("batches".to_string(), serde_json::json!(self.0.load(Ordering::Acquire)))].into()
        }
        fn restore(&self, _positions: &ferris_connectors::checkpoint::Positions) -> ferris_connectors::error::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct QuietSource(Arc<Quiet>, SchemaRef);

    impl QuietSource {
        fn release(&self, batches: i64) {
            self.0.available.fetch_add(batches, Ordering::AcqRel);
            self.0.more.notify_waiters();
        }
    }

    impl Source for QuietSource {
        fn name(&self) -> &str {
            "quiet"
        }
        fn schema(&self) -> SchemaRef {
            Arc::clone(&self.1)
        }
        fn is_bounded(&self) -> bool {
            false
        }
        fn partitions(&self, _projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
            vec![Arc::new(QuietPartition(Arc::clone(&self.0), Arc::clone(&self.1)))]
        }
        fn checkpoint(&self) -> Option<Arc<dyn ferris_connectors::checkpoint::SourceCheckpoint>> {
            Some(Arc::new(QuietPositions(Arc::clone(&self.0.yielded))))
        }
        fn metrics(&self) -> Arc<ConnectorMetrics> {
            Arc::new(ConnectorMetrics::default())
        }
        fn describe(&self) -> String {
            "quiet".into()
        }
    }

    fn passed(event: Option<crate::checkpoint::barrier::LeafEvent>) -> (usize, u64, serde_json::Value) {
        match event {
            Some(crate::checkpoint::barrier::LeafEvent::Passed { leaf, barrier, positions, .. }) => (leaf, barrier, positions["batches"].clone()),
            other => panic!("a barrier passed, not {other:?}"),
        }
    }

    /// A barrier started while the source is quiet goes into the read at once, and every
    /// consumer passes it after the same rows, with the positions after exactly those rows:
    /// the consumer that read them at once, the one that lags behind after taking them.
    #[tokio::test]
    async fn a_barrier_reaches_every_consumer_after_the_same_rows() {
        use crate::checkpoint::barrier::BarrierRuntime;
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let source = Arc::new(QuietSource(Arc::default(), Arc::clone(&schema)));
        let scan = Arc::new(SharedScan::new(Arc::clone(&source) as Arc<dyn Source>));
        let shared = |p: Vec<ScanPartition>| match p.into_iter().next() {
            Some(ScanPartition::Shared(s)) => s,
            other => panic!("a shared partition, not {other:?}"),
        };
        let (a, b) = (shared(scan.partitions(None, &[]).0), shared(scan.partitions(None, &[]).0));
        let (events, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = BarrierRuntime::new(events);
        let (operators, _) = tokio::sync::mpsc::unbounded_channel();
        let checkpoints = CheckpointContext {
            runtime: Arc::clone(&runtime),
            ids: Default::default(),
            restored: Default::default(),
            events: operators,
            positions: Default::default(),
        };
        let config = datafusion::prelude::SessionConfig::new().with_extension(Arc::new(checkpoints));
        let ctx = SessionContext::new_with_config(config).task_ctx();
        let mut first = runtime.shared_leaf("quiet", 0, a.execute_marked(Arc::clone(&ctx)), Arc::clone(&schema), None);
        let mut second = runtime.shared_leaf("quiet", 0, b.execute_marked(ctx), Arc::clone(&schema), None);
        let step = std::time::Duration::from_secs(5);
        source.release(3);
        for i in 0..3 {
            assert_eq!(value(&first.next().await.unwrap().unwrap()), i);
        }
        // the source is quiet: the first consumer waits in the read, and the barrier wakes it
        let waiting = tokio::spawn(async move {
            let next = first.next().await.map(|b| b.map(|b| value(&b)));
            (next, first)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        runtime.trigger(1);
        let event = tokio::time::timeout(step, events_rx.recv()).await.expect("the first consumer passes the barrier");
        assert_eq!(passed(event), (0, 1, serde_json::json!(3)), "after the three batches it read");
        // rows that come after the barrier wait behind it
        source.release(2);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the first consumer holds after the barrier until its operator releases it");
        // the second consumer lags three batches behind: it gets them, then the barrier
        for i in 0..3 {
            assert_eq!(value(&tokio::time::timeout(step, second.next()).await.expect("queued rows").unwrap().unwrap()), i);
        }
        assert!(tokio::time::timeout(std::time::Duration::from_millis(100), second.next()).await.is_err(), "the second consumer holds at the barrier");
        assert_eq!(passed(events_rx.try_recv().ok()), (1, 1, serde_json::json!(3)), "the same place for both");
    }

    #[tokio::test]
    async fn a_bounded_sources_queues_hold_a_whole_side() {
        let (mut first, _second) = two_consumers(true);
        // a hash join reads its build side to the end before its probe side: no bound
        for _ in 0..4 * MAX_QUEUED {
            first.next().await.unwrap().unwrap();
        }
    }

    /// A source partition whose batches the test hands in.
    #[derive(Debug)]
    struct Fed {
        schema: SchemaRef,
        rx: Arc<Mutex<Option<tokio::sync::mpsc::Receiver<i64>>>>,
    }

    /// (the receiver is taken by the execution: the partitions made only to count them leave it)
    #[derive(Debug)]
    struct FedPartition(SchemaRef, Arc<Mutex<Option<tokio::sync::mpsc::Receiver<i64>>>>);

    impl PartitionStream for FedPartition {
        fn schema(&self) -> &SchemaRef {
            &self.0
        }
        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let schema = Arc::clone(&self.0);
            let rx = lock(&self.1).take();
            let s = futures::stream::unfold(rx, |rx| async move {
                let mut rx = rx?;
                let n = rx.recv().await?;
                Some((n, Some(rx)))
            })
            .map(move |i| Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![i]))])?));
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.0), s))
        }
    }

    impl Source for Fed {
        fn name(&self) -> &str {
            "fed"
        }
        fn schema(&self) -> SchemaRef {
            Arc::clone(&self.schema)
        }
        fn is_bounded(&self) -> bool {
            true
        }
        fn partitions(&self, _projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
            vec![Arc::new(FedPartition(Arc::clone(&self.schema), Arc::clone(&self.rx)))]
        }
        fn metrics(&self) -> Arc<ConnectorMetrics> {
            Arc::new(ConnectorMetrics::default())
        }
        fn describe(&self) -> String {
            "fed".into()
        }
    }

    /// A consumer that asked for a batch while the source had none, and is not polled again
    /// (its operator waits on its output), does not keep the other consumers from reading:
    /// they read for it, and it finds its batches when it runs again.
    #[tokio::test]
    async fn a_consumer_that_stops_waiting_holds_no_one_up() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let scan = Arc::new(SharedScan::new(Arc::new(Fed { schema, rx: Arc::new(Mutex::new(Some(rx))) })));
        let a = scan.partitions(None, &[]).0.remove(0);
        let b = scan.partitions(None, &[]).0.remove(0);
        let ctx = SessionContext::new().task_ctx();
        let (mut a, mut b) = (a.execute(Arc::clone(&ctx)), b.execute(ctx));
        let mut stalled = a.next();
        assert!(futures::poll!(&mut stalled).is_pending(), "nothing to read yet");
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let step = std::time::Duration::from_secs(2);
        for want in [1, 2] {
            let got = tokio::time::timeout(step, b.next()).await.expect("the other consumer reads on").unwrap().unwrap();
            assert_eq!(value(&got), want);
        }
        drop(tx);
        assert!(tokio::time::timeout(step, b.next()).await.expect("the end").is_none());
        // the stalled one, polled again, has every batch, in order
        assert_eq!(value(&stalled.await.unwrap().unwrap()), 1);
        assert_eq!(value(&a.next().await.unwrap().unwrap()), 2);
        assert!(a.next().await.is_none());
    }
}
