//! `IntervalJoinExec`: a symmetric hash join of two streams whose rows match when their keys
//! are equal and their event times are within a band. Each side keeps the rows that may still
//! find a partner; the other side's watermark evicts them. INNER, LEFT, RIGHT and FULL OUTER:
//! an outer row that found no partner is emitted null-padded once the watermark has passed its
//! band (it can no longer match), and never retracted. Semi joins (what DataFusion makes of
//! `EXISTS`, `IN`, or an inner join that reads one side's columns only against a side unique on
//! the keys) emit a row of their side once, at its first match; anti joins emit a row once the
//! watermark has passed its band without a match.
//!
//! ```sql
//! SELECT c.user_id, c.page, p.amount
//! FROM clicks c LEFT JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '5' MINUTES
//! WITH ('clicks.event_time' = 'ts', 'purchases.event_time' = 'ts', 'clicks.watermark.delay' = '10s', …)
//! -- Nexmark q5: the counts of each window that reach its maximum (a semi join on the window)
//! SELECT a.auction, a.num FROM auction_bids a JOIN max_per_window m
//!   ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn
//! ```
//!
//! A batch arriving on one side is hashed on its keys (DataFusion's vectorised hashing), probed
//! against the other side's index, and the candidate pairs are checked with Arrow kernels: keys
//! equal and the whole join condition (time band included) true. Rows whose own side's
//! watermark has passed them are late: counted (`late_rows_dropped`) and dropped, since their
//! partners may already be gone.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::{eq, lt};
use datafusion::arrow::compute::{and, filter, filter_record_batch, is_null, not, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, JoinSide, JoinType, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::time_band::TimeBand;
use crate::checkpoint::operator::{execute_inputs, spawn_operator, Alignment, Checkpointing, InputItem, Inputs};
use crate::checkpoint::state::{batch_of, OperatorState, StateTable};
use crate::event_time::{to_epoch_millis, PartitionWatermarks, WatermarkConfig};

/// What an interval join needs, shared by the plan node and its task.
#[derive(Debug)]
pub struct IntervalJoinConfig {
    /// Equi-join keys: (left expression, right expression).
    pub on: Vec<(PhysicalExprRef, PhysicalExprRef)>,
    /// The rest of the join condition, time band included.
    pub filter: Option<JoinFilter>,
    /// INNER, LEFT, RIGHT, FULL, or a semi or anti join of either side.
    pub join_type: JoinType,
    /// The event-time band; `None` for a stream joined to a table (rows of one side are kept
    /// until the other side has ended).
    pub band: Option<TimeBand>,
    /// How each side's watermark moves (left, right): the job's delay, plus the reach of the
    /// interval joins feeding that side.
    pub watermarks: [WatermarkConfig; 2],
    /// Left columns then right columns (outer sides nullable).
    pub join_schema: SchemaRef,
    /// Columns of the join schema to output, if not all.
    pub projection: Option<Vec<usize>>,
    /// Hold output rows until the output watermark passes them (set when an event-time
    /// operator reads this join's output).
    pub ordered_output: bool,
    /// The output schema.
    pub schema: SchemaRef,
}

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct IntervalJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    config: Arc<IntervalJoinConfig>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl IntervalJoinExec {
    /// An interval join of `left` and `right`.
    pub fn new(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, config: IntervalJoinConfig) -> Self {
        let unbounded = left.boundedness().is_unbounded() || right.boundedness().is_unbounded();
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&config.schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            if unbounded { Boundedness::Unbounded { requires_infinite_memory: false } } else { Boundedness::Bounded },
        );
        Self { left, right, config: Arc::new(config), props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl IntervalJoinExec {
    /// This join with ordered output (see [`IntervalJoinConfig::ordered_output`]).
    pub fn ordered(&self) -> Self {
        self.rebuilt(Arc::clone(&self.left), Arc::clone(&self.right), true, self.config.watermarks)
    }

    fn rebuilt(&self, left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, ordered_output: bool, watermarks: [WatermarkConfig; 2]) -> Self {
        let c = &self.config;
        let config = IntervalJoinConfig {
            on: c.on.clone(),
            filter: c.filter.clone(),
            join_type: c.join_type,
            band: c.band.clone(),
            watermarks,
            join_schema: Arc::clone(&c.join_schema),
            projection: c.projection.clone(),
            ordered_output,
            schema: Arc::clone(&c.schema),
        };
        Self::new(left, right, config)
    }

    /// The band's time expression of each side (left, right), if the join has a band.
    pub fn band_times(&self) -> Option<[&Arc<dyn PhysicalExpr>; 2]> {
        self.config.band.as_ref().map(|b| [&b.left_time, &b.right_time])
    }

    /// The inputs (left, right).
    pub fn inputs(&self) -> [&Arc<dyn ExecutionPlan>; 2] {
        [&self.left, &self.right]
    }

    /// This join over new inputs, the sides in `by_window` reading the window bounds of a window
    /// aggregate that hands its watermark on: their event time moves with it alone, not with
    /// the clock while they are quiet (between two windows).
    pub fn reading_windows(&self, left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, by_window: [bool; 2]) -> Self {
        let mut watermarks = self.config.watermarks;
        for (w, by) in watermarks.iter_mut().zip(by_window) {
            if by {
                w.advance_when_idle = false;
            }
        }
        self.rebuilt(left, right, self.config.ordered_output, watermarks)
    }

    fn band_is_set(&self) -> bool {
        self.config.band.is_some()
    }

    /// How far behind the latest input time an output row's event time can be: the band's
    /// reach (an operator above must wait this much longer for the join's rows).
    pub fn lag_ms(&self) -> i64 {
        self.config.band.as_ref().map_or(0, |b| b.lo.unsigned_abs().max(b.hi.unsigned_abs()).min(i64::MAX as u64) as i64)
    }
}

/// How far behind an operator's watermark the event times of the rows `plan` hands over can
/// be: an interval join with ordered output releases a pair once both its times are behind
/// the join's watermark, so one of them may trail by up to the band's reach; nested joins add
/// up. An operator above adds this to its watermark delay.
pub fn join_lag_ms(plan: &Arc<dyn ExecutionPlan>) -> i64 {
    let below = plan.children().iter().map(|c| join_lag_ms(c)).max().unwrap_or(0);
    match plan.downcast_ref::<IntervalJoinExec>() {
        Some(j) => below.saturating_add(j.lag_ms()),
        None => below,
    }
}

/// `plan` with every interval join in it (down to the sources) set to ordered output: for an
/// event-time operator reading it.
pub fn order_join_outputs(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up(|node| match node.downcast_ref::<IntervalJoinExec>() {
        Some(j) if j.band_is_set() && !j.config.ordered_output => Ok(Transformed::yes(Arc::new(j.ordered()) as Arc<dyn ExecutionPlan>)),
        _ => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

impl DisplayAs for IntervalJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let c = &self.config;
        let on: Vec<String> = c.on.iter().map(|(l, r)| format!("({l}, {r})")).collect();
        match &c.band {
            Some(b) => write!(
                f,
                "IntervalJoinExec: join_type={:?}, on=[{}], band=right.{} - left.{} in [{}ms, {}ms], watermark={}",
                c.join_type,
                on.join(", "),
                b.right_time,
                b.left_time,
                b.lo,
                b.hi,
                c.watermarks[0].describe()
            )
            .and_then(|_| if c.ordered_output { write!(f, ", output in event-time order") } else { Ok(()) }),
            None => write!(
                f,
                "IntervalJoinExec: join_type={:?}, on=[{}], band=none (stream to table: rows wait for the other side to end)",
                c.join_type,
                on.join(", ")
            ),
        }
    }
}

impl ExecutionPlan for IntervalJoinExec {
    fn name(&self) -> &str {
        "IntervalJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        let c = &self.config;
        let exprs = c.on.iter().flat_map(|(l, r)| [l, r]).chain(c.filter.as_ref().map(|f| f.expression()));
        datafusion::physical_plan::apply_expression_roots(exprs, f)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = match children.try_into() {
            Ok(c) => c,
            Err(_) => return internal_err!("IntervalJoinExec takes two inputs"),
        };
        Ok(Arc::new(Self { left, right, config: Arc::clone(&self.config), props: Arc::clone(&self.props), metrics: ExecutionPlanMetricsSet::new() }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("IntervalJoinExec has one output partition, asked for {partition}");
        }
        let late_out = crate::event_time::late::LateRows::find(&context);
        let mut memory = crate::memory::StateMemory::new(&context, "IntervalJoinExec", "a shorter WITHIN interval or watermark.delay, or fewer rows per key");
        let mut left_inputs = Inputs::new();
        let mut right_inputs = Inputs::new();
        let counts = [execute_inputs(&self.left, 0, &context, &mut left_inputs)?, execute_inputs(&self.right, 1, &context, &mut right_inputs)?];
        let checkpointing = Checkpointing::find(&context, crate::checkpoint::node_address(self));
        let side_schemas = [self.left.schema(), self.right.schema()];
        // a bounded side (a table) is read first, so stream rows need not wait in state for it
        let first = match (self.left.boundedness().is_unbounded(), self.right.boundedness().is_unbounded()) {
            (true, false) => Some(1),
            (false, true) => Some(0),
            _ => None,
        };
        // a lookup table with a refresh interval (not an outer side: its unmatched rows would
        // be emitted once per read) is read again that often and replaces the rows it had
        let join_type = self.config.join_type;
        let refresh = first.and_then(|f| {
            let outer = preserved(f, join_type) || emits_once(f, join_type);
            let side = if f == 0 { &self.left } else { &self.right };
            let every = super::refresh::refresh_interval(side)?;
            if outer {
                tracing::warn!(
                    "the table joined with a stream has a refresh_interval, but its rows are output once (the preserved side of an outer join, or the side of a semi or anti join): it is read once"
                );
                return None;
            }
            Some((f, every, Arc::clone(side)))
        });
        let refresh_context = Arc::clone(&context);
        let metrics = JoinMetrics {
            late: MetricBuilder::new(&self.metrics).counter("late_rows_dropped", 0),
            state_rows: MetricBuilder::new(&self.metrics).gauge("state_rows", 0),
            state_bytes: MetricBuilder::new(&self.metrics).gauge("state_bytes", 0),
        };
        let config = Arc::clone(&self.config);
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        Ok(spawn_operator(Arc::clone(&config.schema), baseline, move |out| async move {
            let keys: Vec<(usize, usize)> = left_inputs.keys.iter().chain(&right_inputs.keys).copied().collect();
            let scopes: Vec<_> = left_inputs.scopes.iter().chain(&right_inputs.scopes).cloned().collect();
            let mut align = Alignment::new(&keys);
            let mut left = futures::stream::select_all(left_inputs.streams);
            let mut right = futures::stream::select_all(right_inputs.streams);
            let mut remaining = [counts[0], counts[1]];
            let mut quiet_until: [Option<std::time::Instant>; 2] = [None, None];
            // a named idle_timeout lets event time go on with the clock once the inputs are
            // quiet: look at the watermarks while nothing comes, so the last bands close
            let idle_every = config
                .watermarks
                .iter()
                .filter(|w| w.advance_when_idle)
                .filter_map(|w| w.idle_timeout)
                .min()
                .map(|t| t.clamp(std::time::Duration::from_millis(10), std::time::Duration::from_millis(200)));
            let mut op = Joiner::new(Arc::clone(&config), counts, metrics, side_schemas);
            op.late_out = late_out;
            if let Some(state) = checkpointing.as_ref().and_then(Checkpointing::restored) {
                op.restore(&state)?;
                // a refreshed table is read again from the start, not restored
                if let Some((f, _, _)) = &refresh {
                    op.clear_side(*f);
                }
            }
            // the newest complete read, replacing any the join has not taken yet
            let (refresh_tx, mut refresh_rx) = tokio::sync::watch::channel::<Option<Arc<Vec<RecordBatch>>>>(None);
            let _refresher = refresh.as_ref().map(|(_, every, plan)| {
                let (every, plan, ctx) = (*every, Arc::clone(plan), Arc::clone(&refresh_context));
                datafusion::common::runtime::SpawnedTask::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        match super::refresh::read_again(Arc::clone(&plan), &ctx).await {
                            Ok(batches) => {
                                tracing::debug!(rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>(), "the joined table was read again");
                                if refresh_tx.send(Some(Arc::new(batches))).is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!("reading the joined table again failed, the join keeps the previous read: {e}"),
                        }
                    }
                })
            });
            loop {
                let (l_open, r_open) = (remaining[0] > 0, remaining[1] > 0);
                if !l_open && !r_open {
                    break;
                }
                // read the side that lags in event time (watermark alignment), or the table first
                let prefer = match first {
                    Some(f) if remaining[f] > 0 => Some(f),
                    _ => op.lagging_side().filter(|s| quiet_until[*s].is_none_or(|t| std::time::Instant::now() >= t)),
                };
                // a preferred side that stays silent does not stall the other for long: after
                // 100 ms without a batch it is left alone for a second (or until it speaks)
                let wait = std::time::Duration::from_millis(100);
                let preferred = match prefer {
                    Some(s) if remaining[s] > 0 => {
                        let read = if s == 0 { tokio::time::timeout(wait, left.next()).await } else { tokio::time::timeout(wait, right.next()).await };
                        if read.is_err() {
                            quiet_until[s] = Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
                        }
                        read.ok()
                    }
                    _ => None,
                };
                let tick = async {
                    match idle_every {
                        Some(every) => tokio::time::sleep(every).await,
                        None => std::future::pending().await,
                    }
                };
                let next = match preferred {
                    Some(item) => Some(item),
                    None => tokio::select! {
                        l = left.next(), if l_open => Some(l),
                        r = right.next(), if r_open => Some(r),
                        _ = tick => None,
                    },
                };
                let Some(next) = next else {
                    // nothing came for a while: idle inputs may have let the watermarks move
                    let rows = op.advance()?;
                    if !out.batches(rows).await {
                        return Ok(());
                    }
                    if let Some(w) = op.released_to().filter(|_| checkpointing.is_some()) {
                        if !out.watermark(w).await {
                            return Ok(());
                        }
                    }
                    continue;
                };
                let Some((side, p, item)) = next else { break };
                quiet_until[side] = None;
                // once the first read is complete, a newer one replaces it
                if let Some((f, _, _)) = &refresh {
                    if remaining[*f] == 0 && refresh_rx.has_changed().unwrap_or(false) {
                        let newest = refresh_rx.borrow_and_update().clone();
                        if let Some(batches) = newest {
                            tracing::debug!("the join takes the newer read of its table");
                            op.replace_side(*f, &batches)?;
                        }
                    }
                }
                for ((s, q), scope) in keys.iter().zip(&scopes) {
                    op.watermarks[*s].cap(*q, scope.frontier());
                }
                let (rows, barrier) = match item? {
                    InputItem::Batch(batch) => (op.push(side, p, &batch)?, None),
                    InputItem::End => {
                        remaining[side] = remaining[side].saturating_sub(1);
                        (op.finish(side, p)?, align.ended((side, p)))
                    }
                    InputItem::Barrier(b) => {
                        // a side waiting at the barrier is not silent: the other one goes on
                        quiet_until[side] = Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
                        (op.advance()?, align.barrier((side, p), b))
                    }
                    // the operator below moved its event time on without a row
                    InputItem::Watermark(w) => {
                        op.watermarks[side].observe(p, Some(w));
                        (op.advance()?, None)
                    }
                };
                memory.account(op.metrics.state_bytes.value())?;
                if !out.batches(rows).await {
                    return Ok(());
                }
                // ordered output is released up to the join's watermark: the operators above
                // may move on (a stream-to-table join, unordered, says nothing)
                if let Some(w) = op.released_to().filter(|_| checkpointing.is_some()) {
                    if !out.watermark(w).await {
                        return Ok(());
                    }
                }
                if let Some(b) = barrier {
                    quiet_until = [None, None];
                    if !out.pass_barrier(b, checkpointing.as_ref(), || op.snapshot(), &scopes).await? {
                        return Ok(());
                    }
                }
            }
            out.end(checkpointing.as_ref());
            Ok(())
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// True when `side`'s rows that find no partner are output: the outer side of an outer join,
/// the side of an anti join.
fn preserved(side: usize, join_type: JoinType) -> bool {
    matches!((side, join_type), (0, JoinType::Left | JoinType::Full | JoinType::LeftAnti) | (1, JoinType::Right | JoinType::Full | JoinType::RightAnti))
}

/// True when `side`'s rows are output once, at their first match (a semi join's side).
fn emits_once(side: usize, join_type: JoinType) -> bool {
    matches!((side, join_type), (0, JoinType::LeftSemi) | (1, JoinType::RightSemi))
}

/// True when matching pairs are output whole (not a semi or anti join).
fn emits_pairs(join_type: JoinType) -> bool {
    matches!(join_type, JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full)
}

struct JoinMetrics {
    late: Count,
    state_rows: Gauge,
    state_bytes: Gauge,
}

/// Rows of one side kept for matching.
struct Chunk {
    batch: RecordBatch,
    keys: Vec<ArrayRef>,
    /// The hash of each row's keys.
    hashes: Vec<u64>,
    matched: Vec<bool>,
    times: Int64Array,
    min_time: i64,
    max_time: i64,
    /// In the side's key index; else scanned by the probes that reach it (see
    /// [`SideState::unindexed`]).
    indexed: bool,
    /// Probes that scanned it while it was not indexed.
    scans: u32,
}

/// A hasher for keys that are already hashes or small counters: one multiplication (the high
/// bits, which hashbrown uses, come out well mixed).
#[derive(Default, Clone, Copy)]
struct MulHasher(u64);

impl std::hash::Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<MulHasher>>;

#[derive(Default)]
struct SideState {
    chunks: FastMap<u64, Chunk>,
    /// Chunks by their latest event time, for eviction.
    by_time: std::collections::BTreeSet<(i64, u64)>,
    /// Chunks by their earliest event time, for emitting expired outer rows early.
    by_min: std::collections::BTreeSet<(i64, u64)>,
    bytes: usize,
    next_id: u64,
    index: KeyIndex,
    /// Chunks not in `index`, oldest first. A chunk is indexed only once a second probe
    /// reaches it: the first one scans its rows against a table of the probing batch's keys
    /// instead (a side probed rarely by large batches, as bids by their auctions, is then
    /// never indexed row by row; a side probed often is indexed at its second probe, after
    /// one scan: at most about twice what indexing it at once would have cost).
    unindexed: Vec<u64>,
    rows: usize,
    stale: usize,
}

/// An output batch with the event time of each row.
type Timed = (RecordBatch, Int64Array);

/// No entry (the end of a chain).
const NO_ENTRY: u32 = u32::MAX;

/// Bytes a kept row costs beyond its columns: its key hash and its entry in the key index.
const ROW_OVERHEAD: usize = 8 + 12;

/// Where a side's rows are, by the hash of their keys: the newest entry of each hash, and for
/// every entry the one before it with the same hash (a chain, as in DataFusion's join hash
/// map). Inserting a batch allocates nothing per key; entries of evicted chunks stay in their
/// chains, skipped, until the index is built again from the chunks left.
#[derive(Default)]
struct KeyIndex {
    heads: FastMap<u64, u32>,
    entries: Vec<IndexEntry>,
}

#[derive(Clone, Copy)]
struct IndexEntry {
    chunk: u64,
    row: u32,
    next: u32,
}

impl KeyIndex {
    /// Indexes the rows of chunk `id`, whose key hashes are `hashes`.
    fn insert(&mut self, id: u64, hashes: &[u64]) -> Result<()> {
        if self.entries.len().saturating_add(hashes.len()) >= NO_ENTRY as usize {
            return datafusion::common::resources_err!("an interval join side holds more than {} rows", NO_ENTRY);
        }
        self.entries.reserve(hashes.len());
        for (row, h) in hashes.iter().enumerate() {
            let slot = self.entries.len() as u32;
            let next = match self.heads.entry(*h) {
                std::collections::hash_map::Entry::Occupied(mut e) => std::mem::replace(e.get_mut(), slot),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(slot);
                    NO_ENTRY
                }
            };
            self.entries.push(IndexEntry { chunk: id, row: row as u32, next });
        }
        Ok(())
    }

    /// The (chunk, row) of every entry with key hash `h`, evicted chunks' included.
    fn matches(&self, h: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let mut at = self.heads.get(&h).copied().unwrap_or(NO_ENTRY);
        std::iter::from_fn(move || {
            let e = self.entries.get(at as usize)?;
            at = e.next;
            Some((e.chunk, e.row))
        })
    }

    /// Forgets every entry, keeping the memory.
    fn clear(&mut self) {
        self.heads.clear();
        self.entries.clear();
    }

    /// Bytes held, roughly.
    fn bytes(&self) -> usize {
        self.heads.capacity() * 16 + self.entries.capacity() * std::mem::size_of::<IndexEntry>()
    }
}

/// Equality of a probe batch's key row and a kept chunk's, one pair at a time (what Arrow's
/// `eq` kernel gives for the same pair, a null key equal to nothing).
enum KeyEquality<'a> {
    /// One 64-bit integer key without nulls on either side (the common case).
    Int64(&'a [i64], &'a [i64]),
    /// Any other keys Arrow orders: a comparator per key column.
    Columns(Vec<(datafusion::arrow::array::DynComparator, &'a dyn datafusion::arrow::array::Array, &'a dyn datafusion::arrow::array::Array)>),
}

impl<'a> KeyEquality<'a> {
    /// `None` when a key's two sides differ in type, or are floating point or nested (left
    /// to the kernels).
    fn new(mine: &'a [ArrayRef], theirs: &'a [ArrayRef]) -> Result<Option<Self>> {
        use datafusion::arrow::datatypes::DataType;
        if mine.len() != theirs.len() || mine.is_empty() {
            return Ok(None);
        }
        if let ([m], [t]) = (mine, theirs) {
            if m.data_type() == &DataType::Int64 && t.data_type() == &DataType::Int64 && m.null_count() == 0 && t.null_count() == 0 {
                return Ok(Some(Self::Int64(
                    m.as_primitive::<datafusion::arrow::datatypes::Int64Type>().values(),
                    t.as_primitive::<datafusion::arrow::datatypes::Int64Type>().values(),
                )));
            }
        }
        let mut columns = Vec::with_capacity(mine.len());
        for (m, t) in mine.iter().zip(theirs) {
            let dt = m.data_type();
            let comparable = dt == t.data_type()
                && (dt.is_integer()
                    || matches!(
                        dt,
                        DataType::Boolean
                            | DataType::Utf8
                            | DataType::LargeUtf8
                            | DataType::Utf8View
                            | DataType::Binary
                            | DataType::LargeBinary
                            | DataType::BinaryView
                            | DataType::Date32
                            | DataType::Date64
                            | DataType::Timestamp(..)
                            | DataType::Decimal128(..)
                    ));
            if !comparable {
                return Ok(None);
            }
            let cmp = datafusion::arrow::array::make_comparator(m.as_ref(), t.as_ref(), Default::default())?;
            columns.push((cmp, m.as_ref(), t.as_ref()));
        }
        Ok(Some(Self::Columns(columns)))
    }

    /// True when row `i` of the probe batch and row `r` of the chunk have equal keys.
    #[inline(always)]
    fn equal(&self, i: usize, r: usize) -> bool {
        match self {
            Self::Int64(m, t) => m.get(i) == t.get(r),
            Self::Columns(columns) => columns.iter().all(|(cmp, m, t)| m.is_valid(i) && t.is_valid(r) && cmp(i, r).is_eq()),
        }
    }
}

/// What a probe decides each candidate pair by: the probing side, the band in whole
/// milliseconds (`right time − left time` within it), whether pairs can be decided on the
/// arrays in hand (no residual condition, every probing row timed), the probing rows' times.
struct PairCheck<'a> {
    side: usize,
    band: (i64, i64),
    inline: bool,
    times: &'a [i64],
}

/// The pairs a probe found in one chunk of the other side.
enum Found<'a> {
    /// Decided as found: keys equal and times within the band. Each pair's time is the later
    /// of its two.
    Pairs { equal: KeyEquality<'a>, theirs_times: &'a [i64], mine: Vec<u32>, theirs: Vec<u32>, times: Vec<i64> },
    /// Candidates (same key hash) for the kernels to decide.
    Candidates { mine: Vec<u32>, theirs: Vec<u32> },
    /// The chunk was evicted (its index entries stay until the index is built again).
    Gone,
}

impl<'a> Found<'a> {
    /// Nothing found yet in `chunk`, with room for `room` pairs.
    fn new(check: &PairCheck, keys: &'a [ArrayRef], chunk: &'a Chunk, room: usize) -> Result<Self> {
        if check.inline && chunk.times.null_count() == 0 {
            if let Some(equal) = KeyEquality::new(keys, &chunk.keys)? {
                let (mine, theirs, times) = (Vec::with_capacity(room), Vec::with_capacity(room), Vec::with_capacity(room));
                return Ok(Self::Pairs { equal, theirs_times: chunk.times.values(), mine, theirs, times });
            }
        }
        Ok(Self::Candidates { mine: Vec::with_capacity(room), theirs: Vec::with_capacity(room) })
    }

    /// Row `i` of the probing batch and row `r` of the chunk have the same key hash.
    #[inline(always)]
    fn offer(&mut self, check: &PairCheck, i: u32, r: u32) {
        match self {
            Self::Pairs { equal, theirs_times, mine, theirs, times } => {
                let (iu, ru) = (i as usize, r as usize);
                let (Some(&tm), Some(&tt)) = (check.times.get(iu), theirs_times.get(ru)) else { return };
                // right − left (times are within ±2^61 ms: no overflow)
                let d = if check.side == 0 { tt - tm } else { tm - tt };
                if d < check.band.0 || d > check.band.1 || !equal.equal(iu, ru) {
                    return;
                }
                mine.push(i);
                theirs.push(r);
                // a pair waits for the later of its two times: released, neither time is
                // ahead of what follows, whichever column an operator above reads as its time
                times.push(tm.max(tt));
            }
            Self::Candidates { mine, theirs } => {
                mine.push(i);
                theirs.push(r);
            }
            Self::Gone => {}
        }
    }
}

struct Joiner {
    config: Arc<IntervalJoinConfig>,
    /// Ordered output: rows waiting for the output watermark.
    pending: Vec<Timed>,
    sides: [SideState; 2],
    watermarks: [PartitionWatermarks; 2],
    hashes: Vec<u64>,
    /// The probing batch's keys by hash, for scanning chunks not indexed (reused).
    probe_index: KeyIndex,
    random: RandomState,
    metrics: JoinMetrics,
    /// Each input's schema (the rows a side keeps).
    side_schemas: [SchemaRef; 2],
    /// The join's schema as projected: what it outputs.
    output_schema: SchemaRef,
    /// Ordered output: every row earlier than this has been handed on.
    released_to: i64,
    /// The job's late sink, if it has one.
    late_out: Option<Arc<crate::event_time::late::LateRows>>,
}

/// True when `rows` are every row of a batch of `n` rows, in order (`0, 1, …, n-1`): the
/// batch's columns are then what a gather by `rows` would give.
fn every_row_in_order(rows: &UInt32Array, n: usize) -> bool {
    // (a fold over the plain values: the compiler vectorises it)
    rows.len() == n && rows.null_count() == 0 && rows.values().iter().zip(0u32..).fold(true, |all, (r, k)| all & (*r == k))
}

/// The least and the greatest of `times` (nulls skipped), in one pass; `None` when all are
/// null or there are none.
fn min_max(times: &Int64Array) -> Option<(i64, i64)> {
    if times.null_count() == 0 {
        let v = times.values();
        // (a fold over the plain values: the compiler vectorises it)
        let (lo, hi) = v.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        return (!v.is_empty()).then_some((lo, hi));
    }
    times.iter().flatten().fold(None, |acc, t| Some(acc.map_or((t, t), |(lo, hi): (i64, i64)| (lo.min(t), hi.max(t)))))
}

fn to_df(e: crate::checkpoint::CheckpointError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

impl Joiner {
    fn new(config: Arc<IntervalJoinConfig>, counts: [usize; 2], metrics: JoinMetrics, side_schemas: [SchemaRef; 2]) -> Self {
        // (as `RecordBatch::project` makes it, so every output batch has the same schema)
        let output_schema = match &config.projection {
            Some(p) => config.join_schema.project(p).map(Arc::new).unwrap_or_else(|_| Arc::clone(&config.schema)),
            None => Arc::clone(&config.join_schema),
        };
        let watermarks = [PartitionWatermarks::new(config.watermarks[0], counts[0]), PartitionWatermarks::new(config.watermarks[1], counts[1])];
        Self {
            config,
            pending: Vec::new(),
            released_to: i64::MIN,
            late_out: None,
            sides: [SideState::default(), SideState::default()],
            watermarks,
            hashes: Vec::new(),
            probe_index: KeyIndex::default(),
            random: RandomState::with_seed(0x5eed),
            metrics,
            side_schemas,
            output_schema,
        }
    }

    /// The rows each side keeps (with whether each found a partner and its event time), the
    /// output waiting for the watermark, and the watermarks: for a checkpoint.
    fn snapshot(&self) -> Result<OperatorState> {
        let mut tables = Vec::new();
        for (side, name) in [(0usize, "left"), (1, "right")] {
            let state = &self.sides[side];
            let mut parts = Vec::new();
            for (_, id) in &state.by_min {
                let Some(chunk) = state.chunks.get(id) else { continue };
                let mut cols: Vec<ArrayRef> = chunk.batch.columns().to_vec();
                cols.push(Arc::new(BooleanArray::from(chunk.matched.clone())));
                cols.push(Arc::new(chunk.times.clone()));
                cols.push(Arc::new(datafusion::arrow::array::UInt64Array::from(vec![*id; chunk.batch.num_rows()])));
                parts.push(batch_of(cols, chunk.batch.num_rows()).map_err(to_df)?);
            }
            if let Some(first) = parts.first() {
                let key_columns: Vec<usize> = Vec::new();
                tables.push(StateTable { name: name.into(), batch: datafusion::arrow::compute::concat_batches(first.schema_ref(), &parts)?, key_columns });
            }
        }
        let mut pending = Vec::new();
        for (batch, times) in &self.pending {
            let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
            cols.push(Arc::new(times.clone()));
            pending.push(batch_of(cols, batch.num_rows()).map_err(to_df)?);
        }
        if let Some(first) = pending.first() {
            tables.push(StateTable {
                name: "pending".into(),
                batch: datafusion::arrow::compute::concat_batches(first.schema_ref(), &pending)?,
                key_columns: Vec::new(),
            });
        }
        let meta = serde_json::json!({ "watermarks": [self.watermarks[0].snapshot(), self.watermarks[1].snapshot()] });
        Ok(OperatorState { meta, tables })
    }

    /// Restores [`Joiner::snapshot`]: each kept chunk is indexed again.
    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        for side in 0..2 {
            self.watermarks[side].restore(&state.meta["watermarks"][side]);
        }
        for (side, name) in [(0usize, "left"), (1, "right")] {
            let Some(table) = state.table(name) else { continue };
            let width = self.side_schemas[side].fields().len();
            if table.num_columns() != width + 3 {
                return internal_err!("the checkpoint's {name} rows have {} columns, this join's {name} side {}", table.num_columns() - 3, width);
            }
            let ids = table.column(width + 2).as_primitive::<datafusion::arrow::datatypes::UInt64Type>().clone();
            let ranges = datafusion::arrow::compute::partition(&[Arc::new(ids) as ArrayRef])?;
            for r in ranges.ranges() {
                let part = table.slice(r.start, r.end - r.start);
                let batch = crate::checkpoint::state::restored_batch(&self.side_schemas[side], &part.columns()[..width])?;
                let matched: Vec<bool> = part.column(width).as_boolean().iter().map(|m| m.unwrap_or(false)).collect();
                let times = part.column(width + 1).as_primitive::<datafusion::arrow::datatypes::Int64Type>().clone();
                let keys = self.hashed_keys(side, &batch)?;
                let span = min_max(&times);
                self.insert(side, batch, keys, matched, times, span)?;
            }
        }
        if let Some(table) = state.table("pending") {
            let width = self.config.schema.fields().len();
            let batch = crate::checkpoint::state::restored_batch(&self.config.schema, &table.columns()[..width])?;
            let times = table.column(width).as_primitive::<datafusion::arrow::datatypes::Int64Type>().clone();
            self.pending.push((batch, times));
        }
        self.update_state_metrics();
        Ok(())
    }

    /// Forgets every row `side` keeps.
    fn clear_side(&mut self, side: usize) {
        self.sides[side] = SideState::default();
        self.update_state_metrics();
    }

    /// Replaces the rows `side` (a table joined with a stream) keeps with `batches`, a newer
    /// read of the table.
    fn replace_side(&mut self, side: usize, batches: &[RecordBatch]) -> Result<()> {
        self.clear_side(side);
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let times = self.times(side, batch)?;
            let keys = self.hashed_keys(side, batch)?;
            let span = min_max(&times);
            self.insert(side, batch.clone(), keys, vec![false; batch.num_rows()], times, span)?;
        }
        self.update_state_metrics();
        Ok(())
    }

    /// The side whose event time is far behind the other's, if one is: reading only it for a
    /// while keeps the other side's rows from piling up in state (watermark alignment). Far
    /// means more than the band's width, and at least a second.
    fn lagging_side(&self) -> Option<usize> {
        let band = self.config.band.as_ref()?;
        let slack = band.hi.saturating_sub(band.lo).max(1000);
        let seen = |s: usize| self.watermarks[s].latest_time();
        match (seen(0), seen(1)) {
            (Some(l), Some(r)) if l.saturating_sub(r) > slack => Some(1),
            (Some(l), Some(r)) if r.saturating_sub(l) > slack => Some(0),
            _ => None,
        }
    }

    fn preserved(&self, side: usize) -> bool {
        preserved(side, self.config.join_type)
    }

    fn times(&self, side: usize, batch: &RecordBatch) -> Result<Int64Array> {
        let Some(band) = &self.config.band else {
            // no band: every row is "on time"
            return Ok(Int64Array::from(vec![0i64; batch.num_rows()]));
        };
        let (expr, scale) = if side == 0 { (&band.left_time, band.left_scale) } else { (&band.right_time, band.right_scale) };
        to_epoch_millis(&eval(expr, batch)?, scale)
    }

    /// `batch`'s join keys (of `side`), their hashes left in `self.hashes`.
    fn hashed_keys(&mut self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let keys: Vec<ArrayRef> = self.config.on.iter().map(|(l, r)| eval(if side == 0 { l } else { r }, batch)).collect::<Result<_>>()?;
        self.hashes.clear();
        self.hashes.resize(batch.num_rows(), 0);
        create_hashes(&keys, &self.random, &mut self.hashes)?;
        Ok(keys)
    }

    /// Output rows for `batch` of `side` with nulls on the other side.
    fn unmatched(&self, side: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let other_fields: Vec<_> = if side == 0 {
            self.config.join_schema.fields().iter().skip(batch.num_columns()).cloned().collect()
        } else {
            let left_len = self.config.join_schema.fields().len() - batch.num_columns();
            self.config.join_schema.fields().iter().take(left_len).cloned().collect()
        };
        let nulls: Vec<ArrayRef> = other_fields.iter().map(|f| new_null_array(f.data_type(), n)).collect();
        let columns =
            if side == 0 { batch.columns().iter().cloned().chain(nulls).collect() } else { nulls.into_iter().chain(batch.columns().iter().cloned()).collect() };
        self.output(columns, n)
    }

    /// The output rows of matching pairs: row `l.1[k]` of left batch `l.0` beside row `r.1[k]`
    /// of right batch `r.0`, only the columns the join outputs gathered.
    fn output_pairs(&self, l: (&RecordBatch, &UInt32Array), r: (&RecordBatch, &UInt32Array)) -> Result<RecordBatch> {
        let left_width = self.side_schemas[0].fields().len();
        // every row of a batch in order (a probing batch whose rows each found one partner in
        // one chunk): its columns as they are, not gathered (only whole batches: a slice would
        // keep, and have the operators above count, the rows it leaves out)
        let (l_all, r_all) = (every_row_in_order(l.1, l.0.num_rows()), every_row_in_order(r.1, r.0.num_rows()));
        let gather = |j: usize| {
            let (batch, rows, all, column) = if j < left_width { (l.0, l.1, l_all, j) } else { (r.0, r.1, r_all, j - left_width) };
            match batch.columns().get(column) {
                Some(c) if all => Ok(Arc::clone(c)),
                Some(c) => Ok(datafusion::arrow::compute::take(c.as_ref(), rows, None)?),
                None => internal_err!("the interval join outputs column {j}, of {} columns", left_width + r.0.num_columns()),
            }
        };
        let columns = match &self.config.projection {
            Some(p) => p.iter().map(|j| gather(*j)).collect::<Result<Vec<_>>>()?,
            None => (0..self.config.join_schema.fields().len()).map(gather).collect::<Result<Vec<_>>>()?,
        };
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(l.1.len()));
        Ok(RecordBatch::try_new_with_options(Arc::clone(&self.output_schema), columns, &options)?)
    }

    fn output(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        let full = RecordBatch::try_new_with_options(Arc::clone(&self.config.join_schema), columns, &options)?;
        Ok(match &self.config.projection {
            Some(p) => full.project(p)?,
            None => full,
        })
    }

    fn push(&mut self, side: usize, p: usize, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut out: Vec<Timed> = Vec::new();
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let times = self.times(side, batch)?;
        let span = min_max(&times);
        // late: behind this side's own watermark, partners may be gone
        let wm = if self.config.band.is_some() { self.watermarks[side].current() } else { i64::MIN };
        self.watermarks[side].observe(p, span.map(|s| s.1));
        // (mostly every row has a time and none is late: nothing to filter)
        let every_row = times.null_count() == 0 && span.is_none_or(|s| s.0 >= wm);
        let kept = if every_row {
            Some((batch.clone(), times, span))
        } else {
            // rows without a time cannot be placed in the band
            let untimed = is_null(&times)?;
            if untimed.true_count() > 0 && self.preserved(side) {
                let rows = self.unmatched(side, &filter_record_batch(batch, &untimed)?)?;
                let n = rows.num_rows();
                out.push((rows, Int64Array::from(vec![i64::MIN; n])));
            }
            let late = lt(&times, &Int64Array::new_scalar(wm))?;
            self.metrics.late.add(late.true_count());
            if let Some(l) = &self.late_out {
                l.send(batch, &late)?;
            }
            let keep = and(&not(&untimed)?, &not(&late)?)?;
            (keep.true_count() > 0)
                .then(|| -> Result<_> {
                    let times: Int64Array = filter(&times, &keep)?.as_primitive().clone();
                    let span = min_max(&times);
                    Ok((filter_record_batch(batch, &keep)?, times, span))
                })
                .transpose()?
        };
        if let Some((batch, times, span)) = kept {
            let keys = self.hashed_keys(side, &batch)?;
            let matched = self.probe(side, &batch, &times, span, &keys, &mut out)?;
            self.insert(side, batch, keys, matched, times, span)?;
        }
        let advanced = self.watermarks[side].advance().is_some();
        if advanced || self.watermarks[1 - side].all_finished() {
            self.evict(&mut out)?;
        }
        self.update_state_metrics();
        self.release(out)
    }

    /// Recomputes both sides' watermarks without new rows (the sources' frontiers or idleness
    /// may have changed): evicts what they passed and releases what waited for them.
    fn advance(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        // both sides advance (no short circuit)
        let moved: Vec<bool> = self.watermarks.iter_mut().map(|w| w.advance().is_some()).collect();
        let moved = moved.contains(&true);
        if !moved {
            return Ok(Vec::new());
        }
        self.evict(&mut out)?;
        self.update_state_metrics();
        self.release(out)
    }

    fn finish(&mut self, side: usize, p: usize) -> Result<Vec<RecordBatch>> {
        self.watermarks[side].finish(p);
        let mut out = Vec::new();
        if self.watermarks[side].advance().is_some() {
            self.evict(&mut out)?;
        }
        self.update_state_metrics();
        self.release(out)
    }

    /// With ordered output, the time before which every output row has been handed on (no
    /// later row is earlier); `None` for unordered output.
    fn released_to(&self) -> Option<i64> {
        (self.config.ordered_output && self.released_to > i64::MIN).then_some(self.released_to)
    }

    /// Output rows, each with its event time (the later of its sides'). With ordered output
    /// they wait until the join's output watermark (the smaller input watermark less the
    /// band's reach) has passed them: no row released later can be earlier, so an operator
    /// above that derives its watermark from the rows it sees never finds one late.
    fn release(&mut self, out: Vec<Timed>) -> Result<Vec<RecordBatch>> {
        if !self.config.ordered_output {
            return Ok(out.into_iter().map(|(b, _)| b).collect());
        }
        self.pending.extend(out.into_iter().filter(|(b, _)| b.num_rows() > 0));
        let done = self.watermarks[0].all_finished() && self.watermarks[1].all_finished();
        let lag = self.config.band.as_ref().map_or(0, |b| b.lo.unsigned_abs().max(b.hi.unsigned_abs()).min(i64::MAX as u64) as i64);
        let w = if done { i64::MAX } else { self.watermarks[0].current().min(self.watermarks[1].current()).saturating_sub(lag) };
        let mut released = Vec::new();
        let mut kept = Vec::new();
        for (batch, times) in std::mem::take(&mut self.pending) {
            let ready = lt(&times, &Int64Array::new_scalar(w))?;
            let n = ready.true_count();
            if n == batch.num_rows() || w == i64::MAX {
                released.push(batch);
            } else if n == 0 {
                kept.push((batch, times));
            } else {
                released.push(filter_record_batch(&batch, &ready)?);
                let wait = not(&ready)?;
                kept.push((filter_record_batch(&batch, &wait)?, filter(&times, &wait)?.as_primitive().clone()));
            }
        }
        self.pending = kept;
        self.released_to = self.released_to.max(w);
        // one batch per release: an operator above checks lateness against the watermark it
        // had before the batch, so rows released together are never late to each other
        if released.len() > 1 {
            let schema = released[0].schema();
            return Ok(vec![datafusion::arrow::compute::concat_batches(&schema, &released)?]);
        }
        Ok(released)
    }

    /// Matches `batch` of `side` against the other side's rows; returns which rows matched.
    /// `span`: the least and the greatest of `times`.
    fn probe(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        times: &Int64Array,
        span: Option<(i64, i64)>,
        keys: &[ArrayRef],
        out: &mut Vec<Timed>,
    ) -> Result<Vec<bool>> {
        let other = 1 - side;
        let mut matched = vec![false; batch.num_rows()];
        // the band decides the whole condition: checked on the times in hand, no filter
        let exact = self.config.band.as_ref().and_then(|b| b.exact);
        let residual = if exact.is_some() { None } else { self.config.filter.as_ref() };
        let check =
            PairCheck { side, band: exact.unwrap_or((i64::MIN, i64::MAX)), inline: residual.is_none() && times.null_count() == 0, times: times.values() };
        // chunks not indexed yet: indexed now if a probe scanned them before, else scanned
        let scan = self.index_or_scan(side, span)?;
        // pairs per chunk of the other side, decided as they are found where the keys and
        // times allow it (else collected for the kernels)
        // (evicted chunks are skipped, once per chunk; a batch's partners are mostly in few
        // chunks: the last one found is tried first)
        let chunks = &self.sides[other].chunks;
        let mut found: Vec<(u64, Found)> = Vec::new();
        if !scan.is_empty() {
            self.probe_index.clear();
            self.probe_index.insert(0, &self.hashes)?;
            for id in scan {
                let Some(chunk) = chunks.get(&id) else { continue };
                let mut f = Found::new(&check, keys, chunk, 0)?;
                for (r, h) in chunk.hashes.iter().enumerate() {
                    for (_, i) in self.probe_index.matches(*h) {
                        f.offer(&check, i, r as u32);
                    }
                }
                found.push((id, f));
            }
        }
        let scanned = found.len();
        let mut positions: FastMap<u64, usize> = FastMap::default();
        let mut last = usize::MAX;
        let n = self.hashes.len();
        let mut presized = false;
        for (i, h) in self.hashes.iter().enumerate() {
            for (chunk, row) in self.sides[other].index.matches(*h) {
                if found.get(last).is_none_or(|e| e.0 != chunk) {
                    last = match positions.get(&chunk) {
                        Some(at) => *at,
                        None => {
                            // (the first chunk found gets room for a partner of every row left:
                            // mostly one chunk holds them)
                            let f = match chunks.get(&chunk) {
                                Some(c) => Found::new(&check, keys, c, if presized { 0 } else { n - i })?,
                                None => Found::Gone,
                            };
                            presized |= !matches!(f, Found::Gone);
                            found.push((chunk, f));
                            positions.insert(chunk, found.len() - 1);
                            found.len() - 1
                        }
                    };
                }
                if let Some(e) = found.get_mut(last) {
                    e.1.offer(&check, i as u32, row);
                }
            }
        }
        // (the scanned chunks are not in the index: no chunk is found twice)
        debug_assert!(found[..scanned].iter().all(|(id, _)| !positions.contains_key(id)));
        found.sort_unstable_by_key(|e| e.0);
        let mut pairs = Vec::with_capacity(found.len());
        for (id, f) in found {
            let decided = match f {
                Found::Gone => continue,
                Found::Pairs { mine, theirs, times, .. } => (UInt32Array::from(mine), UInt32Array::from(theirs), Int64Array::from(times)),
                Found::Candidates { mine, .. } if mine.is_empty() => continue,
                Found::Candidates { mine, theirs } => {
                    let Some(chunk) = chunks.get(&id) else { continue };
                    match Self::pairs_by_kernels(side, self.config.filter.as_ref(), batch, keys, times, chunk, mine, theirs)? {
                        Some(decided) => decided,
                        None => continue,
                    }
                }
            };
            if !decided.0.is_empty() {
                pairs.push((id, decided));
            }
        }
        for (id, (mine_m, theirs_m, pair_times)) in pairs {
            let Some(chunk) = self.sides[other].chunks.get(&id) else { continue };
            let (mine_m, theirs_m) = (&mine_m, &theirs_m);
            let join_type = self.config.join_type;
            if emits_pairs(join_type) {
                // the columns output, gathered for the pairs that matched only
                let (left, right) = if side == 0 { ((batch, mine_m), (&chunk.batch, theirs_m)) } else { ((&chunk.batch, theirs_m), (batch, mine_m)) };
                out.push((self.output_pairs(left, right)?, pair_times));
            } else if emits_once(side, join_type) {
                // a semi join's new rows that found a partner, each once
                let mut first: Vec<u32> = mine_m.values().iter().copied().filter(|i| !matched[*i as usize]).collect();
                first.sort_unstable();
                first.dedup();
                if !first.is_empty() {
                    let idx = UInt32Array::from(first);
                    let rows = take_record_batch(batch, &idx)?;
                    let t = datafusion::arrow::compute::take(times, &idx, None)?.as_primitive().clone();
                    out.push((self.output(rows.columns().to_vec(), rows.num_rows())?, t));
                }
            } else if emits_once(other, join_type) {
                // a semi join's kept rows that found their first partner now
                let mut first: Vec<u32> = theirs_m.values().iter().copied().filter(|i| !chunk.matched[*i as usize]).collect();
                first.sort_unstable();
                first.dedup();
                if !first.is_empty() {
                    let idx = UInt32Array::from(first);
                    let rows = take_record_batch(&chunk.batch, &idx)?;
                    let t = datafusion::arrow::compute::take(&chunk.times, &idx, None)?.as_primitive().clone();
                    out.push((self.output(rows.columns().to_vec(), rows.num_rows())?, t));
                }
            }
            for i in mine_m.values() {
                matched[*i as usize] = true;
            }
            if let Some(chunk) = self.sides[other].chunks.get_mut(&id) {
                for i in theirs_m.values() {
                    chunk.matched[*i as usize] = true;
                }
            }
        }
        Ok(matched)
    }

    /// The pairs of a probe decided with Arrow kernels (where [`Found::Pairs`] cannot decide
    /// them on the arrays in hand): the key columns and the
    /// filter's columns gathered for every candidate pair, the condition evaluated over them.
    /// `None` when no pair matches.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn pairs_by_kernels(
        side: usize,
        filter_expr: Option<&JoinFilter>,
        batch: &RecordBatch,
        keys: &[ArrayRef],
        times: &Int64Array,
        chunk: &Chunk,
        mine: Vec<u32>,
        theirs: Vec<u32>,
    ) -> Result<Option<(UInt32Array, UInt32Array, Int64Array)>> {
        let mine = UInt32Array::from(mine);
        let theirs = UInt32Array::from(theirs);
        // keys equal (a null key matches nothing), on the key columns only
        let mut mask: Option<BooleanArray> = None;
        for (mk, tk) in keys.iter().zip(&chunk.keys) {
            let x = datafusion::arrow::compute::take(mk.as_ref(), &mine, None)?;
            let y = datafusion::arrow::compute::take(tk.as_ref(), &theirs, None)?;
            let e = eq(&x, &y)?;
            mask = Some(match mask {
                Some(m) => and(&m, &e)?,
                None => e,
            });
        }
        // the rest of the condition, on the columns it reads only
        if let Some(f) = filter_expr {
            let (left_batch, left_idx, right_batch, right_idx) =
                if side == 0 { (batch, &mine, &chunk.batch, &theirs) } else { (&chunk.batch, &theirs, batch, &mine) };
            let columns = f
                .column_indices()
                .iter()
                .map(|ci| {
                    let (b, idx) = if ci.side == JoinSide::Left { (left_batch, left_idx) } else { (right_batch, right_idx) };
                    datafusion::arrow::compute::take(b.column(ci.index).as_ref(), idx, None)
                })
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
            let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(mine.len()));
            let fb = RecordBatch::try_new_with_options(Arc::clone(f.schema()), columns, &options)?;
            let fm = eval(f.expression(), &fb)?.as_boolean().clone();
            mask = Some(match mask {
                Some(m) => and(&m, &fm)?,
                None => fm,
            });
        }
        let mask = mask.unwrap_or_else(|| BooleanArray::from(vec![true; mine.len()]));
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let mine_m = filter(&mine, &mask)?.as_primitive::<datafusion::arrow::datatypes::UInt32Type>().clone();
        let theirs_m = filter(&theirs, &mask)?.as_primitive::<datafusion::arrow::datatypes::UInt32Type>().clone();
        let t_mine = datafusion::arrow::compute::take(times, &mine_m, None)?;
        let t_theirs = datafusion::arrow::compute::take(&chunk.times, &theirs_m, None)?;
        let earlier = lt(&t_mine, &t_theirs)?;
        let pair_times = datafusion::arrow::compute::kernels::zip::zip(&earlier, &t_theirs, &t_mine)?.as_primitive().clone();
        Ok(Some((mine_m, theirs_m, pair_times)))
    }

    /// Keeps `batch` (its `times` within `span`) for the other side's rows to come.
    fn insert(&mut self, side: usize, batch: RecordBatch, keys: Vec<ArrayRef>, matched: Vec<bool>, times: Int64Array, span: Option<(i64, i64)>) -> Result<()> {
        let (min_time, max_time) = span.unwrap_or((i64::MIN, i64::MIN));
        // text views kept would hold, and count, the whole pages they point into (the keys
        // too: a key that is a column shares its views)
        let batch = crate::memory::own_batch(batch)?;
        let keys: Vec<ArrayRef> = keys.into_iter().map(crate::memory::own_bytes).collect();
        let hashes = std::mem::take(&mut self.hashes);
        let state = &mut self.sides[side];
        let id = state.next_id;
        state.next_id += 1;
        state.unindexed.push(id);
        state.rows += batch.num_rows();
        state.bytes += batch.get_array_memory_size() + batch.num_rows() * ROW_OVERHEAD;
        state.by_time.insert((max_time, id));
        state.by_min.insert((min_time, id));
        state.chunks.insert(id, Chunk { batch, keys, hashes, matched, times, min_time, max_time, indexed: false, scans: 0 });
        Ok(())
    }

    /// Before a probe of `side` with rows at times within `span`: the other side's chunks not indexed
    /// that the band lets these rows reach are indexed if a probe scanned them before, and
    /// returned to be scanned otherwise. Chunks out of reach stay as they are.
    fn index_or_scan(&mut self, side: usize, span: Option<(i64, i64)>) -> Result<Vec<u64>> {
        let other = 1 - side;
        if self.sides[other].unindexed.is_empty() {
            return Ok(Vec::new());
        }
        // the other side's times these rows can meet: right − left ∈ [lo, hi], where the band
        // is exact (else its bounds may be rounded, or a zone's day longer: no chunk is left out)
        let reach = match (self.config.band.as_ref().and_then(|b| b.exact), span) {
            (Some((lo, hi)), Some((first, last))) if side == 0 => (first.saturating_add(lo), last.saturating_add(hi)),
            (Some((lo, hi)), Some((first, last))) => (first.saturating_sub(hi), last.saturating_sub(lo)),
            _ => (i64::MIN, i64::MAX),
        };
        let state = &mut self.sides[other];
        let mut scan = Vec::new();
        let mut index = Vec::new();
        state.unindexed.retain(|id| {
            let Some(chunk) = state.chunks.get_mut(id) else { return false };
            if chunk.max_time < reach.0 || chunk.min_time > reach.1 {
                return true;
            }
            if chunk.scans == 0 {
                chunk.scans += 1;
                scan.push(*id);
                return true;
            }
            index.push(*id);
            false
        });
        for id in index {
            let state = &self.sides[other];
            let rows = state.chunks.get(&id).map_or(0, |c| c.hashes.len());
            // entries of evicted chunks count against the index's size until it is built again
            if state.stale > 0 && state.index.entries.len().saturating_add(rows) >= NO_ENTRY as usize {
                self.rebuild_index(other)?;
            }
            let state = &mut self.sides[other];
            if let Some(chunk) = state.chunks.get_mut(&id) {
                state.index.insert(id, &chunk.hashes)?;
                chunk.indexed = true;
            }
        }
        Ok(scan)
    }

    /// Builds `side`'s key index again from the chunks it keeps (without the entries of evicted
    /// ones).
    fn rebuild_index(&mut self, side: usize) -> Result<()> {
        let state = &mut self.sides[side];
        let mut index = KeyIndex { heads: FastMap::with_capacity_and_hasher(state.rows, Default::default()), entries: Vec::with_capacity(state.rows) };
        let mut ids: Vec<u64> = state.chunks.iter().filter(|(_, c)| c.indexed).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        for id in ids {
            let Some(chunk) = state.chunks.get(&id) else { continue };
            index.insert(id, &chunk.hashes)?;
        }
        state.index = index;
        state.stale = 0;
        Ok(())
    }

    /// Drops the rows the other side's watermark has put out of reach, emitting the unmatched
    /// rows of outer sides.
    fn evict(&mut self, out: &mut Vec<Timed>) -> Result<()> {
        let band = self.config.band.as_ref().map(|b| (b.lo, b.hi));
        for side in 0..2 {
            let other_wm = self.watermarks[1 - side].current();
            let other_done = self.watermarks[1 - side].all_finished();
            // a left row at t meets right rows in [t+lo, t+hi]; a right row at t, left rows in
            // [t-hi, t-lo]: it is out of reach once the other side's watermark passes t+hi (t-lo)
            let threshold = match band {
                _ if other_done => i64::MAX,
                Some((_, hi)) if side == 0 => other_wm.saturating_sub(hi),
                Some((lo, _)) => other_wm.saturating_add(lo),
                None => i64::MIN,
            };
            let state = &mut self.sides[side];
            let expired: Vec<u64> =
                if other_done { state.by_time.iter().map(|(_, id)| *id).collect() } else { state.by_time.range(..(threshold, 0)).map(|(_, id)| *id).collect() };
            for id in expired {
                let Some(chunk) = self.sides[side].chunks.remove(&id) else { continue };
                self.sides[side].by_time.remove(&(chunk.max_time, id));
                self.sides[side].by_min.remove(&(chunk.min_time, id));
                self.sides[side].bytes = self.sides[side].bytes.saturating_sub(chunk.batch.get_array_memory_size() + chunk.batch.num_rows() * ROW_OVERHEAD);
                self.sides[side].rows -= chunk.batch.num_rows();
                if chunk.indexed {
                    self.sides[side].stale += chunk.batch.num_rows();
                } else {
                    self.sides[side].unindexed.retain(|u| *u != id);
                }
                if self.preserved(side) {
                    let unmatched = BooleanArray::from(chunk.matched.iter().map(|m| !m).collect::<Vec<bool>>());
                    if unmatched.true_count() > 0 {
                        let rows = self.unmatched(side, &filter_record_batch(&chunk.batch, &unmatched)?)?;
                        out.push((rows, filter(&chunk.times, &unmatched)?.as_primitive().clone()));
                    }
                }
            }
            // outer rows out of reach in chunks that still hold rows within reach: emit them now
            if self.preserved(side) && !other_done {
                let partial: Vec<u64> = self.sides[side].by_min.range(..(threshold, 0)).map(|(_, id)| *id).collect();
                for id in partial {
                    let Some(chunk) = self.sides[side].chunks.get_mut(&id) else { continue };
                    let expired = lt(&chunk.times, &Int64Array::new_scalar(threshold))?;
                    let unmatched: Vec<bool> = chunk.matched.iter().zip(expired.iter()).map(|(m, e)| !m && e.unwrap_or(false)).collect();
                    if !unmatched.iter().any(|u| *u) {
                        continue;
                    }
                    for (m, u) in chunk.matched.iter_mut().zip(&unmatched) {
                        *m |= *u;
                    }
                    let mask = BooleanArray::from(unmatched);
                    let rows = filter_record_batch(&chunk.batch, &mask)?;
                    let times = filter(&chunk.times, &mask)?.as_primitive().clone();
                    out.push((self.unmatched(side, &rows)?, times));
                }
            }
            // build the index again once stale entries outnumber live ones
            let state = &mut self.sides[side];
            if state.chunks.is_empty() {
                state.index = KeyIndex::default();
                state.unindexed.clear();
                state.stale = 0;
            }
            if state.stale > state.rows.max(4096) {
                self.rebuild_index(side)?;
            }
        }
        Ok(())
    }

    fn update_state_metrics(&self) {
        self.metrics.state_rows.set(self.sides.iter().map(|s| s.rows).sum());
        self.metrics.state_bytes.set(self.sides.iter().map(|s| s.bytes + s.index.bytes()).sum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of a hash is found, across chunks, newest first; other hashes' are not.
    #[test]
    fn the_key_index_chains_every_row_of_a_hash() {
        let mut index = KeyIndex::default();
        index.insert(0, &[7, 8, 7]).unwrap();
        index.insert(1, &[9, 7]).unwrap();
        index.insert(2, &[]).unwrap();
        index.insert(3, &[8]).unwrap();
        assert_eq!(index.matches(7).collect::<Vec<_>>(), vec![(1, 1), (0, 2), (0, 0)]);
        assert_eq!(index.matches(8).collect::<Vec<_>>(), vec![(3, 0), (0, 1)]);
        assert_eq!(index.matches(9).collect::<Vec<_>>(), vec![(1, 0)]);
        assert_eq!(index.matches(10).count(), 0);
        assert_eq!(index.entries.len(), 6);
    }

    /// Only every row of the batch, in order, counts.
    #[test]
    fn every_row_in_order_is_the_whole_batch_from_its_first_row() {
        assert!(every_row_in_order(&UInt32Array::from(vec![0, 1, 2, 3]), 4));
        assert!(every_row_in_order(&UInt32Array::from(Vec::<u32>::new()), 0));
        assert!(!every_row_in_order(&UInt32Array::from(vec![0, 1, 2]), 4));
        assert!(!every_row_in_order(&UInt32Array::from(vec![1, 2, 3]), 3));
        assert!(!every_row_in_order(&UInt32Array::from(vec![0, 1, 1, 2]), 4));
        assert!(!every_row_in_order(&UInt32Array::from(vec![1, 0]), 2));
    }
}
