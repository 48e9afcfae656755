//! Checkpoint barriers through a DataFusion plan.
//!
//! DataFusion's streams carry record batches only, so a barrier cannot travel inside them.
//! It travels instead through the places where the job hands batches from one task to another
//! — our operators' output channels and the runner's inputs, the *boundaries* — and is
//! inferred between them:
//!
//! - Every stream a boundary reads (one input partition of a window aggregate, one output
//!   partition of the plan for the runner) is a *chain* of DataFusion operators polled by the
//!   boundary's task, whose *leaves* are source partitions or other boundaries' outputs. A leaf
//!   registers with the chain's [`Scope`] when it is created (the boundary sets the scope while
//!   it executes its input).
//! - A source leaf passes barrier *n* when the coordinator has started it: it records the
//!   positions after the last batch it handed out and yields nothing more until released. A
//!   channel leaf passes *n* when it reads the barrier marker its upstream boundary sent.
//! - When a chain is pending and every one of its leaves has passed *n* (or ended), nothing
//!   of epoch *n* is left inside it: the operators between leaves and boundary keep no rows
//!   (the plan is checked for that, see `crate::checkpoint::plan`). The boundary's
//!   [`ScopedInput`] then yields [`Flow::Barrier`]. Once every input of the boundary has, it
//!   snapshots its state, sends the marker on, and releases its leaves (Flink's aligned
//!   checkpoints).
//!
//! ```sql
//! CREATE STREAM w AS SELECT window_start, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)
//! INTO out WITH ('checkpoint.interval' = '10s', …)
//! -- clicks (source leaves) → WindowAggregateExec (boundary; its output a channel leaf) → runner (boundary)
//! ```

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::RecordBatchStream;
use ferris_connectors::checkpoint::Positions;
use futures::Stream;
use tokio::sync::mpsc;

/// A checkpoint barrier's number: 1, 2, …; 0 before the first.
pub type BarrierId = u64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What goes through a boundary's channel: rows, or the barrier that ends an epoch.
#[derive(Debug)]
pub enum Flow {
    /// Rows.
    Batch(RecordBatch),
    /// Everything before this belongs to checkpoint `n`.
    Barrier(BarrierId),
    /// The operator has moved its event time to this (epoch milliseconds): no row it sends
    /// later is earlier. Lets the operators above close windows and join bands while no row
    /// comes (a later row held up in the operator still moves them on).
    Watermark(i64),
}

/// What a consumer of a shared read of a source gets (see
/// [`crate::planner::shared_scan`]): rows, or the place in the source's stream where a barrier
/// was put, with the source partition's positions there. Every consumer of the partition gets
/// the same barrier at the same place, after the same rows.
#[derive(Debug)]
pub enum Marked {
    /// Rows (or the read's error).
    Rows(Result<RecordBatch>),
    /// Barrier `n`, and where the partition had been read to when it was put in.
    Barrier(BarrierId, Positions),
}

/// A stream of [`Marked`] items: one consumer's share of a source partition.
pub type MarkedStream = Pin<Box<dyn Stream<Item = Marked> + Send>>;

/// What a leaf reports when it passes a barrier or ends.
#[derive(Debug)]
pub enum LeafEvent {
    /// Source leaf `leaf` (partition `partition` of source `source`) passed barrier `barrier`
    /// with these positions.
    Passed { leaf: usize, barrier: BarrierId, source: String, partition: usize, positions: Positions },
    /// The leaf's stream ended; its last positions.
    Finished { leaf: usize, source: String, partition: usize, positions: Positions },
}

#[derive(Debug, Default)]
struct LeafInner {
    /// The last barrier this leaf passed.
    passed: BarrierId,
    /// The last barrier its boundary released it from.
    released: BarrierId,
    finished: bool,
    /// How far the boundary feeding a channel leaf has moved its event time.
    watermark: Option<i64>,
    /// The task polling the leaf, woken by a trigger or a release.
    waker: Option<Waker>,
}

/// The shared state of one leaf.
#[derive(Debug, Default)]
pub struct LeafState {
    inner: Mutex<LeafInner>,
}

impl LeafState {
    fn blocked(i: &LeafInner) -> bool {
        !i.finished && i.passed > i.released
    }

    fn store_waker(i: &mut LeafInner, cx: &Context<'_>) {
        match &i.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => i.waker = Some(cx.waker().clone()),
        }
    }

    fn wake(&self) {
        if let Some(w) = lock(&self.inner).waker.take() {
            w.wake();
        }
    }
}

/// A source partition's event-time column and where it publishes that column's floor (see
/// [`ferris_connectors::Source::floor_column`]); None for one that publishes none.
pub type FloorCell = Option<(String, Arc<ferris_connectors::EventTimeFloor>)>;

/// How far event time has got in one source partition (see [`ferris_connectors::Frontier`]).
pub type FrontierFn = Arc<dyn Fn() -> Option<ferris_connectors::Frontier> + Send + Sync>;

/// The leaves of one chain, and how far its boundary has got.
#[derive(Default)]
pub struct Scope {
    leaves: Mutex<Vec<Arc<LeafState>>>,
    /// The event-time frontiers of the chain's source partitions that track one.
    frontiers: Mutex<Vec<FrontierFn>>,
    /// Every source partition of the chain (read by it alone): the column whose floor it
    /// publishes, and where; None for one that publishes none.
    floors: Mutex<Vec<FloorCell>>,
    /// Set when a leaf was created outside any boundary's scope (an operator of the plan
    /// started it on a task of its own): barriers cannot be aligned.
    completed: AtomicU64,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("leaves", &lock(&self.leaves).len()).field("completed", &self.completed).finish()
    }
}

impl Scope {
    /// How far event time has got over the chain's source partitions that track it: the
    /// slowest; `Holding` when one has not delivered yet; `Floor` when every one is held on
    /// purpose (see [`ferris_connectors::Frontier::min`]); `None` when none tracks it.
    pub fn frontier(&self) -> Option<ferris_connectors::Frontier> {
        use ferris_connectors::Frontier;
        let mut out: Option<Frontier> = None;
        for f in lock(&self.frontiers).iter() {
            if let Some(f) = f() {
                out = Some(out.map_or(f, |o: Frontier| o.min(f)));
            }
        }
        out
    }

    /// The least event time of `column` still to come from the chain's source partitions,
    /// when every one of them publishes that column's floor (see
    /// [`ferris_connectors::Source::floor_column`]) and each has published one; None otherwise.
    pub fn floor(&self, column: &str) -> Option<i64> {
        let floors = lock(&self.floors);
        if floors.is_empty() {
            return None;
        }
        floors.iter().try_fold(i64::MAX, |m, f| match f {
            Some((c, f)) if c == column => f.get().map(|t| m.min(t)),
            _ => None,
        })
    }

    /// A new, empty scope.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn add(&self, leaf: Arc<LeafState>) {
        lock(&self.leaves).push(leaf);
    }

    /// The event time every live leaf of the chain has reached, when every one of them is the
    /// output of an operator that says so ([`Flow::Watermark`]); `None` otherwise.
    fn watermark(&self) -> Option<i64> {
        let mut out: Option<i64> = None;
        for l in lock(&self.leaves).iter() {
            let i = lock(&l.inner);
            if i.finished {
                continue;
            }
            let w = i.watermark?;
            out = Some(out.map_or(w, |o| o.min(w)));
        }
        out
    }

    /// The barrier every live leaf has passed, when the boundary has not completed it yet;
    /// `None` otherwise (or when every leaf has ended).
    ///
    /// The runner starts one barrier at a time, so the leaves have all passed the same one. It
    /// is not always the one after the last completed: a restored job's first barrier is the
    /// restored checkpoint's next, and the boundary reports that one, not 1, 2, … up to it
    /// (which would ask the sinks to prepare checkpoints the restored run had already
    /// completed, and stage its rows under their numbers).
    fn aligned(&self) -> Option<BarrierId> {
        let leaves = lock(&self.leaves);
        let passed = leaves.iter().filter_map(|l| {
            let i = lock(&l.inner);
            (!i.finished).then_some(i.passed)
        });
        passed_by_all(passed, self.completed.load(Ordering::Acquire))
    }

    /// The boundary is done with barrier `n`: its leaves go on.
    pub fn release(&self, n: BarrierId) {
        self.completed.fetch_max(n, Ordering::AcqRel);
        for l in lock(&self.leaves).iter() {
            {
                let mut i = lock(&l.inner);
                i.released = i.released.max(n);
            }
            l.wake();
        }
    }
}

/// The barrier every live input of a boundary or operator has passed (`passed`: each one's
/// last), when it is newer than `completed`; `None` otherwise, or with no live input. One
/// barrier is in flight at a time, but it need not be `completed + 1`: a restored job's first
/// is the restored checkpoint's next.
pub(crate) fn passed_by_all(passed: impl Iterator<Item = BarrierId>, completed: BarrierId) -> Option<BarrierId> {
    passed.min().filter(|&n| n > completed)
}

thread_local! {
    /// The scope of the chain a boundary is executing (creating) on this thread.
    static CURRENT: RefCell<Option<Arc<Scope>>> = const { RefCell::new(None) };
}

/// Runs `f` (a boundary executing one of its inputs) with `scope` as the scope new leaves join.
pub fn with_scope<T>(scope: &Arc<Scope>, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|c| c.replace(Some(Arc::clone(scope))));
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    out
}

/// Registers a source partition's event-time frontier with the scope being executed (the
/// operator reading the chain holds its watermark to it).
pub fn join_frontier(f: FrontierFn) {
    CURRENT.with(|c| {
        if let Some(s) = c.borrow().as_ref() {
            lock(&s.frontiers).push(f);
        }
    });
}

/// Registers a source partition being executed with the scope being executed (if any): the
/// column whose floor it publishes in the cell, or None.
pub fn join_floor(floor: FloorCell) {
    CURRENT.with(|c| {
        if let Some(s) = c.borrow().as_ref() {
            lock(&s.floors).push(floor);
        }
    });
}

/// Registers a new leaf with the scope being executed; false when there is none.
fn join_current(leaf: &Arc<LeafState>) -> bool {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(s) => {
            s.add(Arc::clone(leaf));
            true
        }
        None => false,
    })
}

/// The barriers of one run of a job: which one the sources should pass next, and the leaves to
/// wake when it starts.
#[derive(Debug)]
pub struct BarrierRuntime {
    triggered: AtomicU64,
    sources: Mutex<Vec<Arc<LeafState>>>,
    next_leaf: AtomicU64,
    events: mpsc::UnboundedSender<LeafEvent>,
    /// A leaf was created outside every boundary's scope: the plan cannot align barriers.
    unscoped: AtomicBool,
    /// The latest barrier at which operators drop their open windows (a Kafka hand-over in a
    /// job that rebuilds them by reading rows again); 0: none.
    replay: AtomicU64,
    /// In a job that replays: every window before this event time is emitted (the window
    /// operator's oldest open window), for Kafka partitions taken over from another process.
    emitted_before: std::sync::atomic::AtomicI64,
}

impl BarrierRuntime {
    /// A runtime reporting leaf events on `events`.
    pub fn new(events: mpsc::UnboundedSender<LeafEvent>) -> Arc<Self> {
        Arc::new(Self {
            triggered: AtomicU64::new(0),
            sources: Mutex::new(Vec::new()),
            next_leaf: AtomicU64::new(0),
            events,
            unscoped: AtomicBool::new(false),
            replay: AtomicU64::new(0),
            emitted_before: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    /// Starts barrier `n` at every source leaf.
    pub fn trigger(&self, n: BarrierId) {
        self.triggered.fetch_max(n, Ordering::AcqRel);
        for l in lock(&self.sources).iter() {
            l.wake();
        }
    }

    /// At barrier `n` (not started yet) the operators drop their open windows: their rows are
    /// read again (see `ferris_connectors::checkpoint::BarrierRequests::replays`).
    pub fn mark_replay(&self, n: BarrierId) {
        self.replay.fetch_max(n, Ordering::AcqRel);
    }

    /// The window operator of a job that replays has emitted every window before `t`.
    pub fn publish_emitted_before(&self, t: i64) {
        self.emitted_before.store(t, Ordering::Release);
    }

    /// Every window before this event time is emitted (see
    /// [`BarrierRuntime::publish_emitted_before`]); the start of time until said.
    pub fn emitted_before(&self) -> i64 {
        self.emitted_before.load(Ordering::Acquire)
    }

    /// Whether operators drop their open windows at barrier `n`.
    pub fn is_replay(&self, n: BarrierId) -> bool {
        n != 0 && self.replay.load(Ordering::Acquire) == n
    }

    /// The last barrier started.
    pub fn triggered(&self) -> BarrierId {
        self.triggered.load(Ordering::Acquire)
    }

    /// Source leaves created so far.
    pub fn source_leaves(&self) -> usize {
        lock(&self.sources).len()
    }

    /// True when some leaf was created outside a boundary: barriers cannot complete.
    pub fn has_unscoped_leaves(&self) -> bool {
        self.unscoped.load(Ordering::Acquire)
    }

    /// Wraps partition `partition` of source `source` as a leaf of the scope being executed.
    /// `positions` gives the positions after the last batch the stream yielded.
    pub fn source_leaf(
        self: &Arc<Self>,
        source: &str,
        partition: usize,
        inner: SendableRecordBatchStream,
        positions: Option<Arc<dyn Fn() -> Positions + Send + Sync>>,
    ) -> SourceLeaf {
        let schema = inner.schema();
        self.leaf(source, partition, LeafInput::Own(inner), schema, positions)
    }

    /// Wraps one consumer's share of partition `partition` of a source read once for several
    /// scans: it passes barrier *n* where the reading put *n* into its stream (with the
    /// positions recorded there), not when the barrier is triggered — rows read before the
    /// barrier may still be waiting for this consumer. `positions` gives the positions at the
    /// end.
    pub fn shared_leaf(
        self: &Arc<Self>,
        source: &str,
        partition: usize,
        inner: MarkedStream,
        schema: SchemaRef,
        positions: Option<Arc<dyn Fn() -> Positions + Send + Sync>>,
    ) -> SourceLeaf {
        self.leaf(source, partition, LeafInput::Shared(inner), schema, positions)
    }

    /// A new source leaf of the scope being executed, woken by every trigger.
    fn leaf(
        self: &Arc<Self>,
        source: &str,
        partition: usize,
        inner: LeafInput,
        schema: SchemaRef,
        positions: Option<Arc<dyn Fn() -> Positions + Send + Sync>>,
    ) -> SourceLeaf {
        let state = Arc::new(LeafState::default());
        if !join_current(&state) {
            self.unscoped.store(true, Ordering::Release);
        }
        lock(&self.sources).push(Arc::clone(&state));
        let id = self.next_leaf.fetch_add(1, Ordering::AcqRel) as usize;
        SourceLeaf { runtime: Arc::clone(self), state, inner, schema, id, source: source.to_string(), partition, positions, ended: false }
    }
}

/// Where a source leaf's rows come from.
enum LeafInput {
    /// The partition's own stream: the leaf passes a barrier when it is triggered.
    Own(SendableRecordBatchStream),
    /// A share of a partition read once for several scans: barriers come inside the stream.
    Shared(MarkedStream),
}

/// A source partition's stream as a leaf: passes barriers, records its positions.
pub struct SourceLeaf {
    runtime: Arc<BarrierRuntime>,
    state: Arc<LeafState>,
    inner: LeafInput,
    schema: SchemaRef,
    id: usize,
    source: String,
    partition: usize,
    positions: Option<Arc<dyn Fn() -> Positions + Send + Sync>>,
    ended: bool,
}

impl SourceLeaf {
    fn positions(&self) -> Positions {
        self.positions.as_ref().map(|p| p()).unwrap_or_default()
    }
}

impl Stream for SourceLeaf {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if matches!(self.inner, LeafInput::Shared(_)) {
            return self.poll_shared(cx);
        }
        {
            let triggered = self.runtime.triggered();
            let mut i = lock(&self.state.inner);
            if triggered > i.passed && !i.finished {
                // barrier: where we are, then nothing more until released
                i.passed = triggered;
                drop(i);
                let positions = self.positions();
                let _ = self.runtime.events.send(LeafEvent::Passed {
                    leaf: self.id,
                    barrier: triggered,
                    source: self.source.clone(),
                    partition: self.partition,
                    positions,
                });
                i = lock(&self.state.inner);
            }
            if LeafState::blocked(&i) {
                LeafState::store_waker(&mut i, cx);
                return Poll::Pending;
            }
            LeafState::store_waker(&mut i, cx);
        }
        let polled = match &mut self.inner {
            LeafInput::Own(s) => s.as_mut().poll_next(cx),
            LeafInput::Shared(_) => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(None) => Poll::Ready(self.end()),
            other => other,
        }
    }
}

impl SourceLeaf {
    /// The stream ended: reports the last positions.
    fn end(&mut self) -> Option<Result<RecordBatch>> {
        self.ended = true;
        lock(&self.state.inner).finished = true;
        let positions = self.positions();
        let _ = self.runtime.events.send(LeafEvent::Finished { leaf: self.id, source: self.source.clone(), partition: self.partition, positions });
        None
    }

    /// A shared partition's consumer: passes each barrier where it comes in its stream, then
    /// holds until its boundary releases it.
    fn poll_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            {
                let mut i = lock(&self.state.inner);
                LeafState::store_waker(&mut i, cx);
                if LeafState::blocked(&i) {
                    return Poll::Pending;
                }
            }
            let LeafInput::Shared(inner) = &mut self.inner else { return Poll::Ready(None) };
            match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Marked::Rows(rows))) => return Poll::Ready(Some(rows)),
                Poll::Ready(Some(Marked::Barrier(n, positions))) => {
                    {
                        let mut i = lock(&self.state.inner);
                        // one checkpoint is in flight at a time: a barrier older than the one
                        // triggered is complete (a consumer that started late finds it queued)
                        if n <= i.passed || n < self.runtime.triggered() {
                            continue;
                        }
                        i.passed = n;
                    }
                    let _ = self.runtime.events.send(LeafEvent::Passed {
                        leaf: self.id,
                        barrier: n,
                        source: self.source.clone(),
                        partition: self.partition,
                        positions,
                    });
                    // loop: blocked now, until the boundary releases it
                }
                Poll::Ready(None) => return Poll::Ready(self.end()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl RecordBatchStream for SourceLeaf {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for SourceLeaf {
    fn drop(&mut self) {
        // A leaf dropped before its end (a LIMIT reached: the plan reads no more of it) is
        // finished where it stopped, for its chain and for the checkpoints, which would
        // otherwise wait for it to pass their barriers.
        if !self.ended {
            self.end();
        }
    }
}

/// A boundary's output as seen downstream: a leaf whose barriers are the markers in its channel.
pub struct ChannelLeaf {
    state: Arc<LeafState>,
    rx: mpsc::Receiver<Result<Flow>>,
    schema: SchemaRef,
    /// Joined a scope: markers block it until released. Outside any scope (a plan run without
    /// checkpoints) markers are skipped.
    scoped: bool,
    /// The task feeding the channel, aborted when the leaf is dropped.
    _task: Option<SpawnedTask<()>>,
}

impl ChannelLeaf {
    /// The receiving end of a boundary's output, joining the scope being executed.
    pub fn new(rx: mpsc::Receiver<Result<Flow>>, schema: SchemaRef) -> Self {
        let state = Arc::new(LeafState::default());
        let scoped = join_current(&state);
        Self { state, rx, schema, scoped, _task: None }
    }

    /// Keeps `task` (the producer) alive while the leaf is, aborting it when dropped.
    pub fn with_task(mut self, task: SpawnedTask<()>) -> Self {
        self._task = Some(task);
        self
    }
}

impl Stream for ChannelLeaf {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            {
                let mut i = lock(&self.state.inner);
                if LeafState::blocked(&i) {
                    LeafState::store_waker(&mut i, cx);
                    return Poll::Pending;
                }
                LeafState::store_waker(&mut i, cx);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(Flow::Batch(b)))) => return Poll::Ready(Some(Ok(b))),
                Poll::Ready(Some(Ok(Flow::Barrier(n)))) => {
                    if self.scoped {
                        let mut i = lock(&self.state.inner);
                        i.passed = i.passed.max(n);
                    }
                    // loop: blocked now, until the downstream boundary releases it
                }
                Poll::Ready(Some(Ok(Flow::Watermark(w)))) => {
                    // the boundary reading this chain reports it once the chain is idle
                    let mut i = lock(&self.state.inner);
                    i.watermark = Some(i.watermark.map_or(w, |o| o.max(w)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    lock(&self.state.inner).finished = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl RecordBatchStream for ChannelLeaf {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for ChannelLeaf {
    fn drop(&mut self) {
        lock(&self.state.inner).finished = true;
    }
}

/// What a boundary reads from one input: rows, a barrier every leaf of the chain has passed,
/// or the end.
#[derive(Debug)]
pub enum InputEvent {
    /// Rows.
    Batch(RecordBatch),
    /// The chain holds nothing more of this epoch.
    Barrier(BarrierId),
    /// Every leaf of the chain comes from an operator that has moved its event time this far.
    Watermark(i64),
}

/// One input of a boundary: the chain's stream and its scope.
pub struct ScopedInput {
    inner: SendableRecordBatchStream,
    scope: Arc<Scope>,
    reported: BarrierId,
    reported_watermark: i64,
}

impl ScopedInput {
    /// Executes an input with `execute` inside a fresh scope, so its leaves join it.
    pub fn execute(execute: impl FnOnce() -> Result<SendableRecordBatchStream>) -> Result<Self> {
        let scope = Scope::new();
        let inner = with_scope(&scope, execute)?;
        Ok(Self { inner, scope, reported: 0, reported_watermark: i64::MIN })
    }

    /// The scope, to release its leaves.
    pub fn scope(&self) -> Arc<Scope> {
        Arc::clone(&self.scope)
    }
}

impl Stream for ScopedInput {
    type Item = Result<InputEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(InputEvent::Batch(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.scope.aligned() {
                Some(n) if n > self.reported => {
                    self.reported = n;
                    Poll::Ready(Some(Ok(InputEvent::Barrier(n))))
                }
                _ => match self.scope.watermark() {
                    Some(w) if w > self.reported_watermark => {
                        self.reported_watermark = w;
                        Poll::Ready(Some(Ok(InputEvent::Watermark(w))))
                    }
                    _ => Poll::Pending,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;

    /// One source partition of `rows` batches, then quiet (a tailed source): it never ends.
    fn quiet_source(runtime: &Arc<BarrierRuntime>, rows: i64) -> Result<SendableRecordBatchStream> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches: Vec<Result<RecordBatch>> =
            (0..rows).map(|i| Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![i]))])?)).collect();
        let inner = RecordBatchStreamAdapter::new(Arc::clone(&schema), futures::stream::iter(batches).chain(futures::stream::pending()));
        Ok(Box::pin(runtime.source_leaf("s", 0, Box::pin(inner), None)))
    }

    async fn next(input: &mut ScopedInput) -> InputEvent {
        match tokio::time::timeout(std::time::Duration::from_secs(5), input.next()).await {
            Ok(Some(Ok(e))) => e,
            other => panic!("an event, not {other:?}"),
        }
    }

    /// A restored job's first barrier is the restored checkpoint's next (here 6): the boundary
    /// reports 6, not 1, 2, … 6, so no sink is asked to prepare a checkpoint the earlier run
    /// completed; the barriers after it follow one by one.
    #[tokio::test]
    async fn a_restored_jobs_first_barrier_is_reported_with_its_own_number() {
        let (events, _rx) = mpsc::unbounded_channel();
        let runtime = BarrierRuntime::new(events);
        let mut input = ScopedInput::execute(|| quiet_source(&runtime, 3)).unwrap();
        let scope = input.scope();
        runtime.trigger(6);
        assert!(matches!(next(&mut input).await, InputEvent::Barrier(6)));
        // held until the boundary releases it
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), input.next()).await.is_err());
        scope.release(6);
        assert!(matches!(next(&mut input).await, InputEvent::Batch(b) if b.num_rows() == 1));
        runtime.trigger(7);
        assert!(matches!(next(&mut input).await, InputEvent::Barrier(7)));
        scope.release(7);
        for _ in 0..2 {
            assert!(matches!(next(&mut input).await, InputEvent::Batch(_)));
        }
        // quiet now: nothing until the next barrier
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), input.next()).await.is_err());
        runtime.trigger(8);
        assert!(matches!(next(&mut input).await, InputEvent::Barrier(8)));
    }

    /// Two leaves: the barrier is reported once both have passed it, not when one has.
    #[tokio::test]
    async fn a_barrier_waits_for_every_leaf_of_the_chain() {
        let (events, _rx) = mpsc::unbounded_channel();
        let runtime = BarrierRuntime::new(events);
        let (mut first, mut second) = (None, None);
        let mut input = ScopedInput::execute(|| {
            first = Some(quiet_source(&runtime, 1)?);
            second = Some(quiet_source(&runtime, 1)?);
            // the chain polls the first leaf only until the test polls the second by hand
            first.take().ok_or_else(|| datafusion::error::DataFusionError::Internal("no leaf".into()))
        })
        .unwrap();
        let Some(mut second) = second else { panic!("two leaves") };
        runtime.trigger(3);
        // the first leaf passed 3, the second has not been polled since
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), input.next()).await.is_err());
        let waker = futures::task::noop_waker();
        let _ = second.as_mut().poll_next(&mut Context::from_waker(&waker));
        assert!(matches!(next(&mut input).await, InputEvent::Barrier(3)));
    }
}
