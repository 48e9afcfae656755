//! `WindowAggregateExec`: a grouped aggregate over event-time windows that emits each window
//! when the watermark passes its end (`EMIT FINAL`), or every change as rows arrive
//! (`EMIT CHANGES`). It also runs unwindowed `GROUP BY` on unbounded inputs.
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! SELECT window_start, SUM(price) FROM bids GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)
//! SELECT window_start, window_end, user_id, COUNT(*) FROM clicks GROUP BY SESSION(ts, INTERVAL '30' SECOND), user_id
//! SELECT product, SUM(qty) FROM orders GROUP BY product EMIT CHANGES
//! ```
//!
//! Tumbling and sliding windows are aggregated by *pane* (a tumbling window is one pane; a
//! sliding window's pane is the greatest common divisor of size and slide). With `EMIT FINAL`
//! the open panes share hash tables keyed by (pane start, keys), one per chunk of panes
//! ([`super::pane_table`]): a batch of rows is interned in one pass whatever the number of
//! windows it spans. With `EMIT CHANGES` each pane has a table of its own that knows the groups
//! changed since the last flush. When a sliding window's pane is complete its partial state is
//! frozen, and a window is the merge of its panes' states, so a row is aggregated once, not once
//! per window it belongs to; the windows one watermark closes are merged by the numbers of their
//! keys, without hashing ([`super::hop_windows`]). Session windows buffer their rows
//! (evaluated columns only) until the watermark closes them. Rows whose window has already been
//! emitted are late: they are counted (`late_rows_dropped`) and dropped. A sliding row (`EMIT
//! FINAL`) the watermark has passed counts in its windows still open, as in Flink; it is late
//! only when all of them have closed.
//!
//! An unwindowed `GROUP BY` on a stream keeps every key it has seen, unless the job sets
//! `'state.ttl'`: a key not updated for that long (processing time, as Flink's idle state
//! retention) is forgotten — with `EMIT CHANGES` silently (its last row was written when it
//! changed; a later row starts it afresh), with `EMIT FINAL` by writing its final row then.
//!
//! ```sql
//! CREATE STREAM per_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id EMIT FINAL
//!     INTO out WITH ('state.ttl' = '30m', …)  -- a user idle for 30 minutes gets their row
//! ```
//!
//! Each input partition keeps its own watermark; the operator's is the smallest
//! ([`crate::event_time::PartitionWatermarks`]), so parallel file splits read out of step lose
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{filter, filter_record_batch, max, min, partition, sort_to_indices, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::functions::window_array;
use super::groups::{AggregateSpec, Emitted, Groups};
use super::hop_windows::{FrozenPane, HopWindows};
use super::pane_table::{split_by_start, PaneTable};
use super::session::SessionBuffer;
use crate::checkpoint::operator::{execute_inputs, spawn_operator, Alignment, Checkpointing, InputItem, Inputs};
use crate::checkpoint::state::{batch_of, restored_columns, OperatorState, StateTable};
use crate::event_time::{to_epoch_millis, PartitionWatermarks, WatermarkConfig};
use crate::sql::EmitMode;

/// The operation column of a changelog (`UPSERT`, `DELETE`).
pub const OP_COLUMN: &str = "_op";

/// The window of a [`WindowAggregateExec`], lengths in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `TUMBLE(ts, size)`
    Tumble {
        /// Window length.
        size: i64,
    },
    /// `HOP(ts, slide, size)`
    Hop {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// `SESSION(ts, gap)`
    Session {
        /// Inactivity that ends a session.
        gap: i64,
    },
    /// No window: an unwindowed `GROUP BY` on a stream.
    Global,
}

impl WindowKind {
    fn describe(&self) -> String {
        match self {
            Self::Tumble { size } => format!("TUMBLE({size}ms)"),
            Self::Hop { size, slide } => format!("HOP(slide={slide}ms, size={size}ms)"),
            Self::Session { gap } => format!("SESSION(gap={gap}ms)"),
            Self::Global => "none".into(),
        }
    }

    /// The pane length: every window is a whole number of panes.
    fn pane(&self) -> i64 {
        match *self {
            Self::Tumble { size } => size,
            Self::Hop { size, slide } => gcd(size, slide),
            _ => 1,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Everything a window aggregate needs, shared by the plan node and its running task.
#[derive(Debug, Clone)]
pub struct WindowAggregateConfig {
    /// The window.
    pub kind: WindowKind,
    /// The event-time expression (the window function's first argument); `None` for
    /// [`WindowKind::Global`].
    pub time: Option<Arc<dyn PhysicalExpr>>,
    /// Multiplier from an integer time column to milliseconds.
    pub int_scale: i64,
    /// Where the window column sits among the group columns of the output.
    pub window_pos: Option<usize>,
    /// The other group keys, in output order.
    pub keys: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// Aggregates and key schema.
    pub spec: AggregateSpec,
    /// The arguments of each aggregate (with its ORDER BY expressions appended).
    pub args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// `FILTER (WHERE …)` of each aggregate.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// How the watermark moves.
    pub watermark: WatermarkConfig,
    /// Final results only, or every change.
    pub emit: EmitMode,
    /// With `EMIT CHANGES`, how often changed groups are written (`'emit.interval'`).
    pub changes_every: std::time::Duration,
    /// The output schema: group columns, then aggregates (then `_op` with `op_column`).
    pub schema: SchemaRef,
    /// `EMIT CHANGES` of session windows: each row carries its operation in a last `_op`
    /// column (`UPSERT`, or `DELETE` for a session merged away). Set by
    /// [`WindowAggregateExec::with_operation_column`].
    pub op_column: bool,
    /// `'state.ttl'` of an unwindowed `GROUP BY` on a stream: a key not updated for this long
    /// is forgotten (see the module documentation).
    pub state_ttl: Option<std::time::Duration>,
    /// The `GROUP BY` keys on the windows of a window aggregate below (see
    /// [`super::cascade`]): `time` is each row's window start, and each group is emitted once
    /// the watermark passes it (a 1 ms `TUMBLE`).
    pub of_input_windows: bool,
    /// An operator above reads a bound of its windows as event time: it says how far it has
    /// emitted ([`WindowAggregateExec::handing_on_watermarks`]).
    pub hands_on_watermark: bool,
}

impl WindowAggregateConfig {
    fn expiry_every(&self) -> Option<std::time::Duration> {
        self.state_ttl.map(expiry_every)
    }
}

/// How often keys are looked at for expiry under `state.ttl` = `ttl`: a quarter of it, between
/// 50 ms and 10 s.
pub(crate) fn expiry_every(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(10))
}

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct WindowAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    config: Arc<WindowAggregateConfig>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Tasks the groups are spread over by their keys (1: the operator's own task only).
    spread: usize,
}

impl WindowAggregateExec {
    /// A window aggregate over `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>, config: WindowAggregateConfig) -> Self {
        let boundedness = input.boundedness();
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&config.schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            match boundedness {
                Boundedness::Bounded => Boundedness::Bounded,
                Boundedness::Unbounded { .. } => Boundedness::Unbounded { requires_infinite_memory: false },
            },
        );
        Self { input, config: Arc::new(config), props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new(), spread: 1 }
    }

    /// The same aggregate with its groups spread over `tasks` tasks by their keys (see
    /// [`super::spread`]).
    pub fn spread_over(&self, tasks: usize) -> Self {
        Self {
            input: Arc::clone(&self.input),
            config: Arc::clone(&self.config),
            props: Arc::clone(&self.props),
            metrics: ExecutionPlanMetricsSet::new(),
            spread: tasks.max(1),
        }
    }

    /// Tasks its groups are spread over (1 when they are not).
    pub fn spread(&self) -> usize {
        self.spread
    }

    /// The operator's input.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The operator's settings.
    pub fn config(&self) -> &WindowAggregateConfig {
        &self.config
    }

    /// True when its state can be rebuilt by reading its rows again: a `TUMBLE` or `HOP` window
    /// emitting final results. A row before the start of the oldest open window is in no
    /// window still open; one after it counts only in the windows still open (a `HOP` row is
    /// in several). Two processes of a job over Kafka hand such windows over that way.
    ///
    /// ```sql
    /// SELECT window_start, k, COUNT(*) FROM orders GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), k
    /// SELECT window_start, k, SUM(qty) FROM orders GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND), k
    /// ```
    pub fn replays(&self) -> bool {
        // (windows of windows are built from windows emitted already, which are not read again)
        self.forwards_watermark() && !self.config.of_input_windows
    }

    /// True when it hands its watermark to the operators above (set by
    /// [`super::cascade::hand_on_watermarks`]).
    pub fn hands_on_watermark(&self) -> bool {
        self.config.hands_on_watermark
    }

    /// The same operator, telling the operators above how far it has emitted: for an operator
    /// that reads a bound of its windows as event time (a window of windows, a join on the
    /// window), nothing else.
    pub fn handing_on_watermarks(&self) -> Self {
        Self::new(Arc::clone(&self.input), WindowAggregateConfig { hands_on_watermark: true, ..self.config.as_ref().clone() })
    }

    /// True when it can tell the operators above how far it has emitted: a `TUMBLE` or `HOP`
    /// window emitting final results emits its windows in order, so no row it sends later
    /// belongs to a window starting before its first open one, and neither bound of a window
    /// it sends later is earlier than that start.
    pub fn forwards_watermark(&self) -> bool {
        self.config.emit == EmitMode::Final && matches!(self.config.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. }) && self.config.time.is_some()
    }

    /// True when its rows need an operation of their own: `EMIT CHANGES` over `SESSION`
    /// windows retracts sessions that merge.
    pub fn retracts(&self) -> bool {
        self.config.emit == EmitMode::Changes && matches!(self.config.kind, WindowKind::Session { .. })
    }

    /// The same operator with a last `_op` column (`UPSERT` / `DELETE`) on its output.
    ///
    /// ```sql
    /// SELECT user_id, COUNT(*) FROM clicks GROUP BY SESSION(ts, INTERVAL '30' SECOND), user_id EMIT CHANGES
    /// ```
    pub fn with_operation_column(&self) -> Self {
        let c = &self.config;
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> = c.schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(OP_COLUMN, datafusion::arrow::datatypes::DataType::Utf8, false)));
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, c.schema.metadata().clone()));
        Self::new(Arc::clone(&self.input), WindowAggregateConfig { schema, op_column: true, ..c.as_ref().clone() })
    }
}

impl DisplayAs for WindowAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let c = &self.config;
        let keys: Vec<&str> = c.keys.iter().map(|(_, n)| n.as_str()).collect();
        let aggs: Vec<String> = c.spec.aggs.iter().map(|a| a.name().to_string()).collect();
        write!(
            f,
            "WindowAggregateExec: window={}, time={}, keys=[{}], aggr=[{}], watermark={}, emit={}",
            if c.of_input_windows { "the input's windows".to_string() } else { c.kind.describe() },
            c.time.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            keys.join(", "),
            aggs.join(", "),
            c.watermark.describe(),
            match c.emit {
                EmitMode::Changes => "changes",
                EmitMode::Final => "final",
            }
        )?;
        if self.spread > 1 {
            write!(f, ", spread over {} tasks by key", self.spread)?;
        }
        if let Some(ttl) = c.state_ttl {
            f.write_str(&expiring_state(ttl))?;
        } else if matches!(c.kind, WindowKind::Global) && !c.keys.is_empty() && self.input.boundedness().is_unbounded() {
            // what the user should know of an endless GROUP BY without a window
            write!(f, ", state=unbounded (every key seen is kept; memory.limit_mb bounds it, state.ttl expires idle keys)")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for WindowAggregateExec {
    fn name(&self) -> &str {
        "WindowAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        let c = &self.config;
        let exprs = c.time.iter().chain(c.keys.iter().map(|(e, _)| e)).chain(c.args.iter().flatten()).chain(c.filters.iter().flatten());
        datafusion::physical_plan::apply_expression_roots(exprs, f)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("WindowAggregateExec takes one input");
        }
        let input = children.swap_remove(0);
        Ok(Arc::new(Self {
            input,
            config: Arc::clone(&self.config),
            props: Arc::clone(&self.props),
            metrics: ExecutionPlanMetricsSet::new(),
            spread: self.spread,
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("WindowAggregateExec has one output partition, asked for {partition}");
        }
        if self.spread > 1 {
            return super::spread::execute(&self.input, Arc::clone(&self.config), &self.metrics, self.spread, context);
        }
        let mut inputs = Inputs::new();
        let n = execute_inputs(&self.input, 0, &context, &mut inputs)?;
        let checkpointing = Checkpointing::find(&context, crate::checkpoint::node_address(self));
        // (whether the job's processes hand these windows over is the runner's to say; the
        // operator says how far it has emitted whenever it could)
        let replays = self.replays() && checkpointing.is_some() && self.input.boundedness().is_unbounded();
        let forwards = self.config.hands_on_watermark && self.forwards_watermark() && self.input.boundedness().is_unbounded();
        let mut memory = state_memory(&context, self.config.kind);
        let late_out = crate::event_time::late::LateRows::find(&context);
        let metrics = OperatorMetrics::new(&self.metrics, 0);
        // the sources' floors of the time column, when it comes straight from them
        let floor_column = self.config.time.as_ref().and_then(|t| crate::event_time::floor::source_column(&self.input, t));
        // the types of the aggregates' arguments, which session windows keep row by row (a
        // restore casts text kept otherwise then)
        let input_schema = self.input.schema();
        let arg_types: Vec<Vec<DataType>> =
            self.config.args.iter().map(|a| a.iter().map(|e| e.data_type(&input_schema)).collect::<Result<_>>()).collect::<Result<_>>()?;
        let config = Arc::clone(&self.config);
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        let batch_size = context.session_config().batch_size();
        Ok(spawn_operator(Arc::clone(&config.schema), baseline, move |out| async move {
            let Inputs { streams, scopes, keys } = inputs;
            let mut align = Alignment::new(&keys);
            let mut remaining = n;
            let changes = config.emit == EmitMode::Changes;
            let every = config.changes_every.max(std::time::Duration::from_millis(1));
            let mut streams: Vec<futures::stream::BoxStream<'static, Input>> =
                streams.into_iter().map(|s| s.map(|(_, p, item)| Input::Item(p, item)).boxed()).collect();
            // an idle input lets event time go on with the clock: look at the watermark while
            // nothing comes, so the last windows close
            let idle_every = config
                .watermark
                .idle_timeout
                .filter(|_| config.watermark.advance_when_idle)
                .map(|t| t.clamp(std::time::Duration::from_millis(10), std::time::Duration::from_millis(200)));
            let expiry_every = config.expiry_every();
            // a job rebuilding its `HOP` windows by reading rows again: the sources' frontiers
            // move without rows while a partition taken over waits (see `ferris_connectors::kafka`)
            let replays_every = (replays && matches!(config.kind, WindowKind::Hop { .. })).then_some(std::time::Duration::from_millis(50));
            if changes || idle_every.is_some() || expiry_every.is_some() || replays_every.is_some() {
                // a timer, so changes come out (and idle keys expire) even when the input goes quiet
                let every = [changes.then_some(every), idle_every, expiry_every, replays_every].into_iter().flatten().min().unwrap_or(every);
                let ticks = futures::stream::unfold((), move |_| async move {
                    tokio::time::sleep(every).await;
                    Some((Input::Tick, ()))
                });
                streams.push(ticks.boxed());
            }
            let mut merged = futures::stream::select_all(streams);
            let mut op = Operator::new(Arc::clone(&config), n, metrics)?;
            op.late_out = late_out;
            op.arg_types = arg_types;
            if let Some(state) = checkpointing.as_ref().and_then(Checkpointing::restored) {
                op.restore(&state)?;
            }
            while remaining > 0 {
                let Some(item) = merged.next().await else { break };
                for (i, scope) in scopes.iter().enumerate() {
                    op.watermarks.cap(i, scope.frontier());
                }
                let (mut rows, barrier) = match item {
                    Input::Item(p, Ok(InputItem::Batch(batch))) => (op.push(p, &batch)?, None),
                    Input::Item(p, Ok(InputItem::End)) => {
                        remaining -= 1;
                        (op.finish_partition(p)?, align.ended((0, p)))
                    }
                    // the sources' frontiers may have moved (a partition came back, or went
                    // idle) while no row came: windows they held close now
                    Input::Item(p, Ok(InputItem::Barrier(b))) => (op.advance()?, align.barrier((0, p), b)),
                    // the operator below moved its event time on without a row
                    Input::Item(p, Ok(InputItem::Watermark(w))) => {
                        op.watermarks.observe(p, Some(w));
                        (op.advance()?, None)
                    }
                    Input::Item(_, Err(e)) => return Err(e),
                    Input::Tick => {
                        let mut rows = if changes { op.tick()? } else { Vec::new() };
                        rows.extend(op.advance()?);
                        rows.extend(op.expire()?);
                        (rows, None)
                    }
                };
                if floor_column.as_deref().is_some_and(|c| crate::event_time::floor::read_floors(&mut op.watermarks, &scopes, c)) {
                    rows.extend(op.advance()?);
                }
                memory.account(op.metrics.state_bytes.value())?;
                if let Some(c) = checkpointing.as_ref().filter(|_| replays) {
                    c.publish_emitted_before(op.cutoff());
                }
                let handed_on = !rows.is_empty();
                if !out.batches(coalesce(rows, batch_size)?).await {
                    return Ok(());
                }
                // the operators above may close what waits for these windows (windows of
                // windows, joins on the window) without waiting for a later one
                if forwards && !out.watermark(op.cutoff()).await {
                    return Ok(());
                }
                if handed_on {
                    op.watermarks.note_busy();
                }
                if let Some(b) = barrier {
                    // pending changes go out before the barrier, so the state holds none
                    let mut pending = Vec::new();
                    op.flush_changes(&mut pending)?;
                    if !out.batches(pending).await {
                        return Ok(());
                    }
                    if !out.pass_barrier(b, checkpointing.as_ref(), || op.snapshot(), &scopes).await? {
                        return Ok(());
                    }
                    if checkpointing.as_ref().is_some_and(|c| c.replays_at(b)) {
                        // a Kafka hand-over: the open windows' rows are read again
                        op.drop_open_windows();
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

/// What the operator's task waits for: an item of an input partition, or a tick.
enum Input {
    Item(usize, Result<InputItem>),
    Tick,
}

pub(super) struct OperatorMetrics {
    pub(super) late: Count,
    pub(super) no_time: Count,
    pub(super) windows: Count,
    pub(super) state_bytes: Gauge,
    pub(super) state_groups: Gauge,
    pub(super) expired: Count,
}

impl OperatorMetrics {
    /// The metrics of partition (or task) `partition` of the operator.
    pub(super) fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            late: MetricBuilder::new(metrics).counter("late_rows_dropped", partition),
            no_time: MetricBuilder::new(metrics).counter("rows_without_event_time", partition),
            windows: MetricBuilder::new(metrics).counter("windows_emitted", partition),
            state_bytes: MetricBuilder::new(metrics).gauge("state_bytes", partition),
            state_groups: MetricBuilder::new(metrics).gauge("state_groups", partition),
            expired: MetricBuilder::new(metrics).counter("state_keys_expired", partition),
        }
    }
}

/// The operator's state in the job's memory pool, named for windows of `kind`, with what would
/// make it smaller.
pub(super) fn state_memory(context: &Arc<TaskContext>, kind: WindowKind) -> crate::memory::StateMemory {
    let (what, hint) = match kind {
        WindowKind::Global => (
            "WindowAggregateExec (unwindowed GROUP BY)",
            "an unwindowed GROUP BY on a stream keeps every key it has seen: group by a window (TUMBLE, HOP, SESSION), set 'state.ttl' to forget keys idle that long, or group by fewer keys",
        ),
        WindowKind::Session { .. } => ("WindowAggregateExec (SESSION)", "a shorter session gap or watermark.delay, or fewer keys"),
        _ => ("WindowAggregateExec", "shorter windows, a smaller watermark.delay, or fewer keys"),
    };
    crate::memory::StateMemory::new(context, what, hint)
}

/// Evaluated inputs of some rows: group keys, aggregate arguments and filters.
pub struct Evaluated {
    /// Group keys.
    pub keys: Vec<ArrayRef>,
    /// Arguments per aggregate.
    pub args: Vec<Vec<ArrayRef>>,
    /// Filters per aggregate.
    pub filters: Vec<Option<BooleanArray>>,
    /// Number of rows.
    pub rows: usize,
}

impl Evaluated {
    /// Rows `offset..offset + len` (zero-copy).
    pub(crate) fn slice(&self, offset: usize, len: usize) -> Self {
        Self {
            keys: self.keys.iter().map(|a| a.slice(offset, len)).collect(),
            args: self.args.iter().map(|a| a.iter().map(|a| a.slice(offset, len)).collect()).collect(),
            filters: self.filters.iter().map(|f| f.as_ref().map(|f| f.slice(offset, len))).collect(),
            rows: len,
        }
    }

    /// These rows and their panes (`panes`, one per row) ordered by pane: as they are when in
    /// order already (rows in time order: no sort, no copy), else sorted.
    pub(crate) fn in_pane_order(self, panes: Int64Array) -> Result<(Int64Array, Self)> {
        if panes.values().windows(2).all(|w| w[0] <= w[1]) {
            return Ok((panes, self));
        }
        let order = sort_to_indices(&panes, None, None)?;
        Ok((take(&panes, &order, None)?.as_primitive::<Int64Type>().clone(), self.take(&order)?))
    }

    /// The rows at `indices`, in their order.
    fn take(&self, indices: &datafusion::arrow::array::UInt32Array) -> Result<Self> {
        let t = |a: &ArrayRef| take(a, indices, None);
        Ok(Self {
            keys: self.keys.iter().map(t).collect::<std::result::Result<_, _>>()?,
            args: self.args.iter().map(|a| a.iter().map(t).collect::<std::result::Result<_, _>>()).collect::<std::result::Result<_, _>>()?,
            filters: self
                .filters
                .iter()
                .map(|f| f.as_ref().map(|f| take(f, indices, None).map(|a| a.as_boolean().clone())).transpose())
                .collect::<std::result::Result<_, _>>()?,
            rows: indices.len(),
        })
    }
}

/// The earliest event time a row may have and still count, at watermark `wm`: rows before it
/// are late.
pub(super) fn cutoff_at(config: &WindowAggregateConfig, wm: i64) -> i64 {
    if wm == i64::MIN {
        return i64::MIN;
    }
    match config.kind {
        // the first window still open: a row in it counts there (and in the later ones),
        // not in the windows before it, emitted already
        WindowKind::Hop { size, slide } if config.emit == EmitMode::Final => first_open_window(wm, size, slide),
        WindowKind::Tumble { .. } | WindowKind::Hop { .. } => {
            let p = config.kind.pane();
            // a pane ending at or before the watermark has been emitted or frozen
            wm.div_euclid(p) * p
        }
        // a session emitted ended at or before the watermark; a row before the watermark
        // could belong to it
        WindowKind::Session { .. } => wm,
        WindowKind::Global => i64::MIN,
    }
}

pub(super) fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

impl WindowAggregateConfig {
    fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let keys = self.keys.iter().map(|(e, _)| eval(e, batch)).collect::<Result<Vec<_>>>()?;
        let args = self.args.iter().map(|a| a.iter().map(|e| eval(e, batch)).collect::<Result<Vec<_>>>()).collect::<Result<Vec<_>>>()?;
        let filters =
            self.filters.iter().map(|f| f.as_ref().map(|e| eval(e, batch).map(|a| a.as_boolean().clone())).transpose()).collect::<Result<Vec<_>>>()?;
        Ok(Evaluated { keys, args, filters, rows: batch.num_rows() })
    }

    /// An output batch: the window column (if any) placed among the keys, then the aggregates.
    fn output(&self, window: Option<ArrayRef>, emitted: Emitted<ArrayRef>) -> Result<RecordBatch> {
        self.output_op(window, emitted, "UPSERT")
    }

    /// An output batch of windows `size` long whose starts are the first key column of
    /// `emitted` (a [`PaneTable`]'s).
    fn output_windows(&self, size: i64, mut emitted: Emitted<ArrayRef>) -> Result<RecordBatch> {
        let starts = emitted.keys.remove(0);
        let starts = starts.as_primitive::<Int64Type>();
        let ends = starts.unary::<_, Int64Type>(|s| s.saturating_add(size));
        let w = window_array(starts.values().clone(), ends.values().clone());
        self.output(Some(w), emitted)
    }

    /// [`Self::output`] with the operation `op` in the `_op` column, when there is one.
    fn output_op(&self, window: Option<ArrayRef>, emitted: Emitted<ArrayRef>, op: &str) -> Result<RecordBatch> {
        let rows = emitted.rows;
        let mut columns = emitted.keys;
        if let (Some(pos), Some(w)) = (self.window_pos, window) {
            columns.insert(pos.min(columns.len()), w);
        }
        columns.extend(emitted.aggs);
        if self.op_column {
            columns.push(Arc::new(datafusion::arrow::array::StringArray::from(vec![op; rows])));
        }
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { datafusion::arrow::compute::cast(&c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?)
    }
}

/// Joins runs of small output batches into batches of up to `target` rows: a batch of input
/// can close many small windows at once (1 s windows over 10 s of rows), each emitted as a
/// batch of its own, and a tiny batch costs the operators and sinks downstream about what a
/// full one does.
pub(super) fn coalesce(batches: Vec<RecordBatch>, target: usize) -> Result<Vec<RecordBatch>> {
    if batches.len() < 2 {
        return Ok(batches);
    }
    let mut out = Vec::new();
    let mut run: Vec<RecordBatch> = Vec::new();
    let (mut rows, mut bytes) = (0, 0);
    let flush = |run: &mut Vec<RecordBatch>, out: &mut Vec<RecordBatch>| -> Result<()> {
        match run.len() {
            0 => {}
            1 => out.append(run),
            _ => {
                out.push(datafusion::arrow::compute::concat_batches(&run[0].schema(), run.iter())?);
                run.clear();
            }
        }
        Ok(())
    };
    for b in batches {
        let size = b.get_array_memory_size();
        // (a byte bound too: long strings joined could pass the 2 GiB of a string column)
        if run.first().is_some_and(|f| rows + b.num_rows() > target || bytes + size > COALESCE_BYTES || f.schema() != b.schema()) {
            flush(&mut run, &mut out)?;
            (rows, bytes) = (0, 0);
        }
        rows += b.num_rows();
        bytes += size;
        run.push(b);
    }
    flush(&mut run, &mut out)?;
    Ok(out)
}

/// Output batches are joined up to this many bytes.
const COALESCE_BYTES: usize = 16 << 20;

/// `HOP`: the windows one close emits go out whenever they hold this many groups (a batch's
/// worth).
const HOP_WINDOW_GROUPS: usize = 8192;

/// Up to this many panes, the state's size is summed after every batch.
const SIZED_EVERY_BATCH: usize = 64;

/// The running state of one execution.
pub(super) struct Operator {
    config: Arc<WindowAggregateConfig>,
    pub(super) watermarks: PartitionWatermarks,
    /// `EMIT FINAL` of `TUMBLE` and `HOP`: every open pane in one table.
    table: Option<PaneTable>,
    /// `EMIT FINAL` of `HOP`: the windows a close emits, merged from their panes by key number
    /// (kept from close to close: the keys' numbering is kept).
    hop_windows: Option<HopWindows>,
    /// `EMIT CHANGES` of `TUMBLE` (one table per window) and `HOP` (per live pane), keyed by
    /// start: each table knows the groups changed since the last flush.
    panes: BTreeMap<i64, Groups>,
    /// Hop: frozen pane states, keyed by pane start.
    frozen: BTreeMap<i64, FrozenPane>,
    /// Hop: the first window start not yet closed (the windows before it were emitted, or
    /// closed empty).
    next_window: Option<i64>,
    sessions: Option<SessionBuffer>,
    global: Option<Groups>,
    /// With `state.ttl`: when each group of `global` was last updated (Unix milliseconds).
    global_updated: Vec<i64>,
    /// With `state.ttl`: when keys were last looked at for expiry.
    last_expiry: std::time::Instant,
    last_changes: std::time::Instant,
    /// When the state's size was last summed (over many panes it is summed every 100 ms).
    sized_at: std::cell::Cell<Option<std::time::Instant>>,
    pub(super) metrics: OperatorMetrics,
    /// The job's late sink, if it has one.
    pub(super) late_out: Option<Arc<crate::event_time::late::LateRows>>,
    /// The types of each aggregate's arguments, where known: a restore casts the arguments
    /// session windows kept to them (none: kept as restored).
    pub(super) arg_types: Vec<Vec<DataType>>,
}

impl Operator {
    pub(super) fn new(config: Arc<WindowAggregateConfig>, partitions: usize, metrics: OperatorMetrics) -> Result<Self> {
        let sessions = match config.kind {
            WindowKind::Session { gap } => Some(SessionBuffer::new(gap)),
            _ => None,
        };
        let global = match config.kind {
            WindowKind::Global => Some(Groups::new(&config.spec)?),
            _ => None,
        };
        let table = match config.kind {
            WindowKind::Tumble { .. } | WindowKind::Hop { .. } if config.emit == EmitMode::Final => Some(PaneTable::new(&config.spec, config.kind.pane())),
            _ => None,
        };
        let hop_windows = match (&table, config.kind) {
            (Some(_), WindowKind::Hop { .. }) => Some(HopWindows::new(&config.spec)?),
            _ => None,
        };
        Ok(Self {
            watermarks: PartitionWatermarks::new(config.watermark, partitions),
            config,
            table,
            hop_windows,
            panes: BTreeMap::new(),
            frozen: BTreeMap::new(),
            next_window: None,
            sessions,
            global,
            global_updated: Vec::new(),
            last_expiry: std::time::Instant::now(),
            last_changes: std::time::Instant::now(),
            sized_at: std::cell::Cell::new(None),
            metrics,
            late_out: None,
            arg_types: Vec::new(),
        })
    }

    /// The operator's state for a checkpoint (see [`crate::checkpoint::state`]): open panes
    /// and windows as accumulator states, frozen panes, session rows, the watermarks.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let config = Arc::clone(&self.config);
        let spec = &config.spec;
        let nkeys = spec.key_schema.fields().len();
        let keyed: Vec<usize> = (1..=nkeys).collect();
        let mut tables = Vec::new();
        let mut table = |name: &str, batches: Vec<RecordBatch>, key_columns: Vec<usize>| -> Result<()> {
            if let Some(first) = batches.first() {
                let batch = datafusion::arrow::compute::concat_batches(first.schema_ref(), &batches)?;
                tables.push(StateTable { name: name.to_string(), batch, key_columns });
            }
            Ok(())
        };
        let mut panes = Vec::new();
        if let Some(t) = self.table.as_mut() {
            // (the pane is the first key column: the same layout as a table per pane)
            for part in t.peek_state()? {
                panes.push(state_batch(None, &part)?);
            }
        }
        for (start, groups) in self.panes.iter_mut() {
            panes.push(state_batch(Some(*start), &groups.peek_state(spec)?)?);
        }
        table("panes", panes, keyed.clone())?;
        let frozen = self.frozen.iter().map(|(start, p)| state_batch(Some(*start), &p.state)).collect::<Result<Vec<_>>>()?;
        table("frozen", frozen, keyed.clone())?;
        if let Some(g) = self.global.as_mut() {
            let e = g.peek_state(spec)?;
            let mut batch = state_batch(None, &e)?;
            if config.state_ttl.is_some() {
                // when each key was last updated, after its state
                let mut cols = batch.columns().to_vec();
                let mut updated = self.global_updated.clone();
                updated.resize(e.rows, unix_millis());
                cols.push(Arc::new(Int64Array::from(updated)));
                batch = batch_of(cols, e.rows).map_err(to_df)?;
            }
            table("global", vec![batch], (0..nkeys).collect())?;
        }
        if let Some(sessions) = &self.sessions {
            if let Some((times, ev)) = sessions.snapshot_rows()? {
                let mut cols: Vec<ArrayRef> = vec![Arc::new(times)];
                cols.extend(ev.keys.iter().cloned());
                cols.extend(ev.args.iter().flatten().cloned());
                cols.extend(ev.filters.iter().flatten().map(|f| Arc::new(f.clone()) as ArrayRef));
                table("session_rows", vec![batch_of(cols, ev.rows).map_err(to_df)?], keyed.clone())?;
            }
            if let Some((keys, window, aggs)) = sessions.snapshot_emitted() {
                let rows = window.len();
                let cols: Vec<ArrayRef> = keys.into_iter().chain(std::iter::once(window)).chain(aggs).collect();
                table("session_emitted", vec![batch_of(cols, rows).map_err(to_df)?], (0..nkeys).collect())?;
            }
        }
        let widths: Vec<usize> = spec.aggs.iter().map(|a| a.state_fields().map(|f| f.len()).unwrap_or(1)).collect();
        let filters: Vec<bool> = config.filters.iter().map(Option::is_some).collect();
        // rows before this are in windows emitted (or were late): a process rebuilding the open
        // windows reads from the first row at or after it
        let replays = matches!(config.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. });
        let replay_from = replays.then(|| self.cutoff());
        // how far the inputs had got: a process taking rows over lets its event time reach it
        let wm = self.watermarks.current();
        // (`HOP` only: a `TUMBLE` row read again is in open windows only, nothing to wait for)
        let hop = matches!(config.kind, WindowKind::Hop { .. });
        let replay_hold = hop.then(|| if wm == i64::MIN { wm } else { wm.saturating_add(config.watermark.delay_ms.unwrap_or(0)) });
        let meta = serde_json::json!({
            "replay_from": replay_from,
            "replay_hold": replay_hold,
            "watermarks": self.watermarks.snapshot(),
            "next_window": self.next_window,
            "state_widths": widths,
            "filters": filters,
        });
        Ok(OperatorState { meta, tables })
    }

    /// Restores [`Operator::snapshot`].
    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        let config = Arc::clone(&self.config);
        let spec = &config.spec;
        let nkeys = spec.key_schema.fields().len();
        self.watermarks.restore(&state.meta["watermarks"]);
        self.next_window = state.meta["next_window"].as_i64();
        if let WindowKind::Hop { size, slide } = config.kind {
            // every window before the first open one is closed (a checkpoint of an older
            // version may name an earlier one that closed empty)
            if config.emit == EmitMode::Final {
                self.skip_closed_windows(size, slide);
            }
        }
        let widths: Vec<usize> = serde_json::from_value(state.meta["state_widths"].clone()).unwrap_or_default();
        if widths.len() != spec.aggs.len() {
            return internal_err!("the checkpoint holds {} aggregates' states, this window aggregate has {}", widths.len(), spec.aggs.len());
        }
        // text held as `Utf8` then and as views now (or back) is cast (restored_columns)
        let key_types: Vec<DataType> = spec.key_schema.fields().iter().map(|f| f.data_type().clone()).collect();
        let state_types: Vec<Vec<DataType>> =
            spec.aggs.iter().map(|a| a.state_fields().map(|f| f.iter().map(|f| f.data_type().clone()).collect()).unwrap_or_default()).collect();
        let as_now = |cols: &[ArrayRef], types: &[DataType]| restored_columns(cols, types);
        let emitted_of = |batch: &RecordBatch, first: usize| -> Result<Emitted<Vec<ArrayRef>>> {
            let cols = batch.columns();
            let keys = as_now(&cols[first..first + nkeys], &key_types)?;
            let mut at = first + nkeys;
            let aggs = widths
                .iter()
                .zip(&state_types)
                .map(|(w, types)| {
                    let a = as_now(&cols[at..at + w], types);
                    at += w;
                    a
                })
                .collect::<Result<_>>()?;
            Ok(Emitted { keys, aggs, rows: batch.num_rows() })
        };
        for (name, frozen) in [("panes", false), ("frozen", true)] {
            let Some(batch) = state.table(name) else { continue };
            if let (false, Some(t)) = (frozen, self.table.as_mut()) {
                let mut e = emitted_of(batch, 1)?;
                e.keys.insert(0, Arc::clone(batch.column(0)));
                t.merge(&e)?;
                continue;
            }
            for (start, part) in by_start(batch)? {
                let e = emitted_of(&part, 1)?;
                if frozen {
                    self.frozen.insert(start, FrozenPane::new(e));
                } else {
                    let mut g = Groups::new(spec)?;
                    g.merge(spec, &e)?;
                    self.panes.insert(start, g);
                }
            }
        }
        if let (Some(batch), Some(g)) = (state.table("global"), self.global.as_mut()) {
            g.merge(spec, &emitted_of(batch, 0)?)?;
            if config.state_ttl.is_some() {
                // the keys' last updates, when the checkpoint holds them (else: now)
                let width = nkeys + widths.iter().sum::<usize>();
                self.global_updated = match batch.columns().get(width).and_then(|c| c.as_primitive_opt::<Int64Type>()) {
                    Some(updated) if batch.num_columns() == width + 1 => updated.values().to_vec(),
                    _ => vec![unix_millis(); batch.num_rows()],
                };
            }
        }
        if let Some(sessions) = self.sessions.as_mut() {
            let rows = match state.table("session_rows") {
                None => None,
                Some(b) => {
                    let cols = b.columns();
                    let times = cols[0].as_primitive::<Int64Type>().clone();
                    let keys = as_now(&cols[1..1 + nkeys], &key_types)?;
                    let mut at = 1 + nkeys;
                    let args = config
                        .args
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            let v = as_now(&cols[at..at + a.len()], self.arg_types.get(i).map_or(&[][..], Vec::as_slice));
                            at += a.len();
                            v
                        })
                        .collect::<Result<_>>()?;
                    let filters = config
                        .filters
                        .iter()
                        .map(|f| {
                            f.as_ref().map(|_| {
                                let v = cols[at].as_boolean().clone();
                                at += 1;
                                v
                            })
                        })
                        .collect();
                    Some((times, Evaluated { keys, args, filters, rows: b.num_rows() }))
                }
            };
            let emitted = match state.table("session_emitted") {
                None => None,
                Some(b) => {
                    let cols = b.columns();
                    // (the values each session was emitted with: the aggregates' results)
                    let result_types: Vec<DataType> = spec.aggs.iter().map(|a| a.field().data_type().clone()).collect();
                    Some((as_now(&cols[..nkeys], &key_types)?, Arc::clone(&cols[nkeys]), as_now(&cols[nkeys + 1..], &result_types)?))
                }
            };
            sessions.restore(rows, emitted)?;
        }
        self.update_state_metrics();
        Ok(())
    }

    /// Drops every open window (`TUMBLE`, `HOP`): their rows are read again, by this process or
    /// by the one a Kafka hand-over gives their partitions to. The watermark stays.
    fn drop_open_windows(&mut self) {
        if matches!(self.config.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. }) {
            if let Some(t) = self.table.as_mut() {
                t.clear();
            }
            self.panes.clear();
            self.frozen.clear();
            self.update_state_metrics();
        }
    }

    /// The earliest event time a row may carry and still be counted.
    fn cutoff(&self) -> i64 {
        cutoff_at(&self.config, self.watermarks.current())
    }

    pub(super) fn push(&mut self, p: usize, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let Some(time_expr) = self.config.time.clone() else {
            self.update_global(batch)?;
            // (the unwindowed table's size counts too: its gauge and the memory limit)
            self.update_state_metrics();
            if self.last_changes.elapsed() >= self.config.changes_every {
                self.flush_changes(&mut out)?;
            }
            out.extend(self.expire()?);
            return Ok(out);
        };
        let times = to_epoch_millis(&eval(&time_expr, batch)?, self.config.int_scale)?;
        self.watermarks.observe(p, max(&times));
        // keep rows with an event time at or after the cutoff
        let nulls = times.null_count();
        let cutoff = self.cutoff();
        let keep = gt_eq(&times, &Int64Array::new_scalar(cutoff))?;
        let kept = keep.true_count();
        self.metrics.no_time.add(nulls);
        self.metrics.late.add(batch.num_rows() - kept - nulls);
        if let Some(l) = self.late_out.as_ref().filter(|_| batch.num_rows() > kept + nulls) {
            l.send(batch, &datafusion::arrow::compute::kernels::cmp::lt(&times, &Int64Array::new_scalar(cutoff))?)?;
        }
        if kept > 0 {
            let (batch, times) = if kept == batch.num_rows() {
                (batch.clone(), times)
            } else {
                let b = filter_record_batch(batch, &keep)?;
                let t = filter(&times, &keep)?.as_primitive::<Int64Type>().clone();
                (b, t)
            };
            match self.config.kind {
                WindowKind::Tumble { .. } | WindowKind::Hop { .. } => self.update_panes(&batch, &times)?,
                WindowKind::Session { .. } => {
                    let ev = self.config.evaluate(&batch)?;
                    if let Some(s) = self.sessions.as_mut() {
                        s.push(times, ev);
                    }
                }
                WindowKind::Global => {}
            }
        }
        if self.last_changes.elapsed() >= self.config.changes_every {
            self.flush_changes(&mut out)?;
        }
        if self.watermarks.advance().is_some() {
            self.close(&mut out)?;
        }
        self.update_state_metrics();
        Ok(out)
    }

    pub(super) fn finish_partition(&mut self, p: usize) -> Result<Vec<RecordBatch>> {
        self.watermarks.finish(p);
        let mut out = Vec::new();
        if self.watermarks.all_finished() {
            self.flush_changes(&mut out)?;
        }
        if self.watermarks.advance().is_some() {
            self.close(&mut out)?;
        }
        if self.watermarks.all_finished() && self.config.emit == EmitMode::Final {
            if let Some(g) = self.global.as_mut() {
                let emitted = g.emit_final(&self.config.spec)?;
                self.global_updated.clear();
                if emitted.rows > 0 {
                    out.push(self.config.output(None, emitted)?);
                }
            }
        }
        self.update_state_metrics();
        Ok(out)
    }

    /// Sets the state gauges (groups, bytes: what the job's memory limit counts). With more
    /// than [`SIZED_EVERY_BATCH`] panes, at most every 100 ms while the state only grows (at
    /// once after windows close; the limit may be passed by 100 ms of growth before the job
    /// stops): summing every pane's size for every batch cost more than the updates (windows
    /// of a bounded input without a watermark delay, all open until the end: 14% of the time,
    /// and quadratic).
    fn update_state_metrics(&self) {
        if self.table.as_ref().map_or(0, PaneTable::tables) + self.panes.len() + self.frozen.len() > SIZED_EVERY_BATCH {
            let now = std::time::Instant::now();
            if self.sized_at.get().is_some_and(|at| now.duration_since(at) < std::time::Duration::from_millis(100)) {
                return;
            }
            self.sized_at.set(Some(now));
        }
        let groups: usize = self.table.as_ref().map_or(0, PaneTable::len)
            + self.panes.values().map(Groups::len).sum::<usize>()
            + self.frozen.values().map(FrozenPane::rows).sum::<usize>()
            + self.global.as_ref().map_or(0, Groups::len)
            + self.sessions.as_ref().map_or(0, SessionBuffer::rows);
        let bytes: usize = self.table.as_ref().map_or(0, PaneTable::size)
            + self.panes.values().map(Groups::size).sum::<usize>()
            + self.frozen.values().map(FrozenPane::size).sum::<usize>()
            + self.hop_windows.as_ref().map_or(0, HopWindows::size)
            + self.global.as_ref().map_or(0, Groups::size)
            + self.global_updated.capacity() * std::mem::size_of::<i64>()
            + self.sessions.as_ref().map_or(0, |s| s.memory_size() + s.emitted_memory_size());
        self.metrics.state_groups.set(groups);
        self.metrics.state_bytes.set(bytes);
    }

    fn update_global(&mut self, batch: &RecordBatch) -> Result<()> {
        let ev = self.config.evaluate(batch)?;
        let config = Arc::clone(&self.config);
        let Some(g) = self.global.as_mut() else { return Ok(()) };
        let groups = g.update(&config.spec, &ev.keys, &ev.args, &ev.filters, ev.rows)?;
        if config.state_ttl.is_some() {
            let now = unix_millis();
            for &i in groups {
                if i >= self.global_updated.len() {
                    self.global_updated.resize(i + 1, now);
                }
                self.global_updated[i] = now;
            }
        }
        if config.emit == EmitMode::Changes {
            g.mark_touched();
        }
        Ok(())
    }

    /// `state.ttl`: forgets the keys of the unwindowed table not updated for that long; with
    /// `EMIT FINAL` their final rows are returned. Looks at most every
    /// [`WindowAggregateConfig::expiry_every`].
    fn expire(&mut self) -> Result<Vec<RecordBatch>> {
        let config = Arc::clone(&self.config);
        let (Some(ttl), Some(every)) = (config.state_ttl, config.expiry_every()) else { return Ok(Vec::new()) };
        if self.last_expiry.elapsed() < every || self.global.is_none() {
            return Ok(Vec::new());
        }
        self.last_expiry = std::time::Instant::now();
        let cutoff = idle_since(ttl);
        let expired = self.global_updated.iter().filter(|&&t| t < cutoff).count();
        if expired == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // changes waiting for the next flush go out first: the table is rebuilt below
        self.flush_changes(&mut out)?;
        let Some(g) = self.global.as_mut() else { return Ok(out) };
        let state = g.emit_state(&config.spec)?;
        let keep: BooleanArray = self.global_updated.iter().map(|&t| Some(t >= cutoff)).collect();
        let pick = |mask: &BooleanArray| -> Result<Emitted<Vec<ArrayRef>>> {
            Ok(Emitted {
                keys: state.keys.iter().map(|k| filter(k.as_ref(), mask)).collect::<std::result::Result<Vec<_>, _>>()?,
                aggs: state
                    .aggs
                    .iter()
                    .map(|s| s.iter().map(|a| filter(a.as_ref(), mask)).collect::<std::result::Result<Vec<_>, _>>())
                    .collect::<std::result::Result<Vec<_>, _>>()?,
                rows: mask.true_count(),
            })
        };
        let mut kept = Groups::new(&config.spec)?;
        kept.merge(&config.spec, &pick(&keep)?)?;
        *g = kept;
        if config.emit == EmitMode::Final {
            // an idle key's row is final now
            let mut gone = Groups::new(&config.spec)?;
            gone.merge(&config.spec, &pick(&datafusion::arrow::compute::not(&keep)?)?)?;
            out.push(config.output(None, gone.emit_final(&config.spec)?)?);
        }
        self.global_updated.retain(|&t| t >= cutoff);
        self.metrics.expired.add(expired);
        self.update_state_metrics();
        Ok(out)
    }

    /// `EMIT CHANGES`: the current values of every group changed since the last call.
    fn flush_changes(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.last_changes = std::time::Instant::now();
        if self.config.emit != EmitMode::Changes {
            return Ok(());
        }
        let config = Arc::clone(&self.config);
        if let WindowKind::Session { .. } = config.kind {
            return self.session_changes(out);
        }
        if let Some(g) = self.global.as_mut() {
            let touched = g.take_touched();
            if !touched.is_empty() {
                let emitted = g.snapshot(&config.spec, &touched)?;
                out.push(config.output(None, emitted)?);
            }
        }
        if let WindowKind::Hop { size, slide } = config.kind {
            // every open window holding a changed pane: the current values of the groups
            // changed in its panes (the others are as they were last written)
            let mut windows = std::collections::BTreeSet::new();
            let mut touched_of: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            for (&start, groups) in self.panes.iter_mut() {
                let touched = groups.take_touched();
                if !touched.is_empty() {
                    let first = (start - size + 1).div_euclid(slide) * slide + if (start - size + 1).rem_euclid(slide) == 0 { 0 } else { slide };
                    let mut ws = self.next_window.map_or(first, |n| n.max(first));
                    while ws <= start {
                        windows.insert(ws);
                        ws += slide;
                    }
                    touched_of.insert(start, touched);
                }
            }
            let keyed = !config.spec.key_schema.fields().is_empty();
            let converter = if keyed {
                Some(datafusion::arrow::row::RowConverter::new(
                    config.spec.key_schema.fields().iter().map(|f| datafusion::arrow::row::SortField::new(f.data_type().clone())).collect(),
                )?)
            } else {
                None
            };
            for ws in windows {
                let mut g = Groups::new(&config.spec)?;
                for (_, pane) in self.frozen.range(ws..ws.saturating_add(size)) {
                    g.merge(&config.spec, &pane.state)?;
                }
                let mut changed: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
                for (start, live) in self.panes.range_mut(ws..ws.saturating_add(size)) {
                    let state = live.peek_state(&config.spec)?;
                    if let (Some(conv), Some(touched)) = (&converter, touched_of.get(start)) {
                        let idx = datafusion::arrow::array::UInt32Array::from(touched.clone());
                        let keys = state.keys.iter().map(|k| take(k.as_ref(), &idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
                        let rows = conv.convert_columns(&keys)?;
                        changed.extend(rows.iter().map(|r| r.as_ref().to_vec()));
                    }
                    g.merge(&config.spec, &state)?;
                }
                let mut emitted = g.emit_final(&config.spec)?;
                if let Some(conv) = &converter {
                    let rows = conv.convert_columns(&emitted.keys)?;
                    let keep: BooleanArray = rows.iter().map(|r| Some(changed.contains(r.as_ref()))).collect();
                    if keep.true_count() < emitted.rows {
                        emitted = Emitted {
                            keys: emitted.keys.iter().map(|k| filter(k.as_ref(), &keep)).collect::<std::result::Result<Vec<_>, _>>()?,
                            aggs: emitted.aggs.iter().map(|a| filter(a.as_ref(), &keep)).collect::<std::result::Result<Vec<_>, _>>()?,
                            rows: keep.true_count(),
                        };
                    }
                }
                if emitted.rows > 0 {
                    let w = window_array(vec![ws; emitted.rows], vec![ws + size; emitted.rows]);
                    out.push(config.output(Some(w), emitted)?);
                }
            }
        }
        if let WindowKind::Tumble { size } = config.kind {
            for (&start, groups) in self.panes.iter_mut() {
                let touched = groups.take_touched();
                if !touched.is_empty() {
                    let emitted = groups.snapshot(&config.spec, &touched)?;
                    let w = window_array(vec![start; emitted.rows], vec![start + size; emitted.rows]);
                    out.push(config.output(Some(w), emitted)?);
                }
            }
        }
        Ok(())
    }

    /// `EMIT CHANGES` of sessions: retractions of merged sessions, then new and changed ones;
    /// sessions the watermark passed close.
    fn session_changes(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let wm = self.watermarks.current();
        let config = Arc::clone(&self.config);
        let Some(s) = self.sessions.as_mut() else { return Ok(()) };
        let changes = s.changes(&config.spec, wm)?;
        self.metrics.windows.add(changes.closed);
        if changes.retracted.is_some() && !config.op_column {
            return datafusion::common::internal_err!("session retractions without an _op column to carry them");
        }
        if let Some((window, emitted)) = changes.retracted {
            out.push(config.output_op(Some(window), emitted, "DELETE")?);
        }
        if let Some((window, emitted)) = changes.upserted {
            out.push(config.output_op(Some(window), emitted, "UPSERT")?);
        }
        Ok(())
    }

    /// A timer tick: flushes changes that have waited long enough.
    /// Recomputes the watermark without new rows (the frontiers or idleness of the inputs may
    /// have changed) and closes the windows it passed.
    pub(super) fn advance(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.config.time.is_some() && self.watermarks.advance().is_some() {
            self.close(&mut out)?;
            self.update_state_metrics();
        }
        Ok(out)
    }

    fn tick(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.last_changes.elapsed() >= self.config.changes_every {
            self.flush_changes(&mut out)?;
        }
        Ok(out)
    }

    /// Tumbling and sliding windows: route rows to their pane's table.
    fn update_panes(&mut self, batch: &RecordBatch, times: &Int64Array) -> Result<()> {
        let p = self.config.kind.pane();
        let panes = Int64Array::new(window_starts(times.values(), p).into(), times.nulls().cloned());
        let (Some(lo), Some(hi)) = (min(&panes), max(&panes)) else { return Ok(()) };
        // the keys and arguments once for the batch; each pane gets its rows' slice of them
        let ev = self.config.evaluate(batch)?;
        if let Some(t) = self.table.as_mut() {
            // a complete pane of a window still open (`HOP`): a row the watermark had passed,
            // counted in the windows not emitted yet. The pane is live again until the next
            // close freezes it (before any window is emitted)
            let thawed: Vec<i64> = self.frozen.range(lo..=hi).map(|(&s, _)| s).filter(|s| panes.values().contains(s)).collect();
            for start in thawed {
                if let Some(pane) = self.frozen.remove(&start) {
                    t.merge_pane(start, pane.state)?;
                }
            }
            return t.update(panes, ev);
        }
        if lo == hi {
            return self.update_pane(lo, &ev);
        }
        let (panes, ev) = ev.in_pane_order(panes)?;
        for r in partition(&[Arc::new(panes.clone()) as ArrayRef])?.ranges() {
            self.update_pane(panes.value(r.start), &ev.slice(r.start, r.end - r.start))?;
        }
        Ok(())
    }

    fn update_pane(&mut self, pane: i64, ev: &Evaluated) -> Result<()> {
        let config = Arc::clone(&self.config);
        if let Some(frozen) = self.frozen.remove(&pane) {
            // a complete pane of a window still open (`HOP`): a row the watermark had passed,
            // counted in the windows not emitted yet. The pane is live again until the next
            // close freezes it (before any window is emitted)
            let mut groups = Groups::new(&config.spec)?;
            groups.merge(&config.spec, &frozen.state)?;
            self.panes.insert(pane, groups);
        }
        let groups = match self.panes.entry(pane) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(Groups::new(&config.spec)?),
        };
        groups.update(&config.spec, &ev.keys, &ev.args, &ev.filters, ev.rows)?;
        if config.emit == EmitMode::Changes {
            groups.mark_touched();
        }
        Ok(())
    }

    /// Emits what the watermark has closed.
    fn close(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        // the state shrinks: its size is summed again at once (the memory limit reads it)
        self.sized_at.set(None);
        let wm = self.watermarks.current();
        let config = Arc::clone(&self.config);
        match config.kind {
            WindowKind::Tumble { size } => {
                if let Some(t) = self.table.as_mut() {
                    // windows starting at or before wm - size have ended
                    let (parts, windows) = t.take_final(closed_before(wm, size))?;
                    self.metrics.windows.add(windows);
                    for emitted in parts {
                        out.push(config.output_windows(size, emitted)?);
                    }
                }
                while let Some(entry) = self.panes.first_entry() {
                    let start = *entry.key();
                    if start.saturating_add(size) > wm {
                        break;
                    }
                    let mut groups = entry.remove();
                    let touched = groups.take_touched();
                    if config.emit == EmitMode::Changes && !touched.is_empty() {
                        // the window's last changes, before its state goes
                        let emitted = groups.snapshot(&config.spec, &touched)?;
                        let w = window_array(vec![start; emitted.rows], vec![start + size; emitted.rows]);
                        out.push(config.output(Some(w), emitted)?);
                    }
                    let emitted = groups.emit_final(&config.spec)?;
                    self.metrics.windows.add(1);
                    if config.emit == EmitMode::Final && emitted.rows > 0 {
                        let w = window_array(vec![start; emitted.rows], vec![start + size; emitted.rows]);
                        out.push(config.output(Some(w), emitted)?);
                    }
                }
            }
            WindowKind::Hop { size, slide } => {
                if config.emit == EmitMode::Changes {
                    // windows about to close get their last changes first
                    self.flush_changes(out)?;
                }
                self.close_hop(size, slide, wm, out)?
            }
            WindowKind::Session { .. } if config.emit == EmitMode::Changes => self.session_changes(out)?,
            WindowKind::Session { .. } => {
                if let Some(s) = self.sessions.as_mut() {
                    for (window, emitted) in s.close(&config.spec, wm)? {
                        self.metrics.windows.add(emitted.rows);
                        out.push(config.output(Some(window), emitted)?);
                    }
                }
            }
            WindowKind::Global => {}
        }
        Ok(())
    }

    fn close_hop(&mut self, size: i64, slide: i64, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let p = self.config.kind.pane();
        let spec = &self.config.spec;
        // freeze complete panes
        if let Some(t) = self.table.as_mut() {
            for states in t.take_state(closed_before(wm, p))? {
                self.frozen.extend(split_by_start(&states)?.into_iter().map(|(start, e)| (start, FrozenPane::new(e))));
            }
        }
        while let Some(entry) = self.panes.first_entry() {
            let start = *entry.key();
            if start.saturating_add(p) > wm {
                break;
            }
            let mut groups = entry.remove();
            let state = groups.emit_state(spec)?;
            self.frozen.insert(start, FrozenPane::new(state));
        }
        // emit complete windows, each the merge of its panes, found by the numbers of their keys
        if let Some(windows) = self.hop_windows.as_mut() {
            windows.renumber_if_sparse(self.frozen.values().map(FrozenPane::rows).sum())?;
        }
        while let Some((&first, _)) = self.frozen.first_key_value() {
            // the earliest window holding the first pane
            let earliest = (first - size + 1).div_euclid(slide) * slide + if (first - size + 1).rem_euclid(slide) == 0 { 0 } else { slide };
            let ws = self.next_window.map_or(earliest, |n| n.max(earliest));
            if ws.saturating_add(size) > wm {
                break;
            }
            self.metrics.windows.add(1);
            if let Some(windows) = self.hop_windows.as_mut() {
                windows.add_window(spec, ws, self.frozen.range_mut(ws..ws + size).map(|(_, p)| p))?;
                if windows.len() >= HOP_WINDOW_GROUPS {
                    // (many windows closing at once, as at the end of a bounded input: out in
                    // parts, the accumulators kept small)
                    out.push(self.config.output_windows(size, windows.emit(spec)?)?);
                }
            }
            let next = ws + slide;
            self.next_window = Some(next);
            while let Some(entry) = self.frozen.first_entry() {
                if *entry.key() >= next {
                    break;
                }
                entry.remove();
            }
        }
        if let Some(windows) = self.hop_windows.as_mut().filter(|w| !w.is_empty()) {
            out.push(self.config.output_windows(size, windows.emit(spec)?)?);
        }
        // every window before the first open one is closed now, emitted or empty: a row that
        // comes later for one of them must not bring it out again
        self.skip_closed_windows(size, slide);
        Ok(())
    }

    /// `HOP`: the next window to emit is at least the first one the watermark leaves open
    /// (those before it are closed, emitted or empty), and the panes only they need go.
    fn skip_closed_windows(&mut self, size: i64, slide: i64) {
        let wm = self.watermarks.current();
        if wm == i64::MIN {
            return;
        }
        let open = first_open_window(wm, size, slide);
        if self.next_window.is_none_or(|n| n < open) {
            self.next_window = Some(open);
            while let Some(entry) = self.frozen.first_entry() {
                if *entry.key() >= open {
                    break;
                }
                entry.remove();
            }
        }
    }
}

/// The first start of a `length` ms window or pane that watermark `wm` leaves open: those
/// before it have ended (`start + length <= wm`); at the end of the input, none is open.
fn closed_before(wm: i64, length: i64) -> i64 {
    if wm == i64::MAX {
        i64::MAX
    } else {
        wm.saturating_sub(length).saturating_add(1)
    }
}

/// The start of the window of `size` ms (a `TUMBLE`'s, a pane's) each of `times` falls in,
/// `t.div_euclid(size) * size`: one division per run of times in the same window (event times
/// come about in order), not one a row.
pub(crate) fn window_starts(times: &[i64], size: i64) -> Vec<i64> {
    // the window of the last time, [start, end)
    let (mut start, mut end) = (0i64, i64::MIN);
    times
        .iter()
        .map(|&t| {
            if t < start || t >= end {
                start = t.div_euclid(size).saturating_mul(size);
                end = start.saturating_add(size);
            }
            start
        })
        .collect()
}

/// The start of the first `HOP(slide, size)` window still open at watermark `wm`: the first
/// whose end is after it.
fn first_open_window(wm: i64, size: i64, slide: i64) -> i64 {
    if wm == i64::MIN {
        return i64::MIN;
    }
    wm.saturating_sub(size).div_euclid(slide).saturating_mul(slide).saturating_add(slide)
}

/// The wall clock in Unix milliseconds (0 before 1970).
pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Under `state.ttl` = `ttl`: a key last updated before this (Unix milliseconds) has been idle
/// too long.
pub(crate) fn idle_since(ttl: std::time::Duration) -> i64 {
    unix_millis().saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// How an operator whose keys expire under `state.ttl` = `ttl` ends its one-line display (the
/// checkpoint shape leaves `, state=…` out: a changed TTL restores).
pub(crate) fn expiring_state(ttl: std::time::Duration) -> String {
    format!(", state=keys idle for {ttl:?} expire (state.ttl)")
}

fn to_df(e: crate::checkpoint::CheckpointError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

/// A state table batch: the pane start (if any), the group keys, every aggregate's state columns.
fn state_batch(start: Option<i64>, e: &Emitted<Vec<ArrayRef>>) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    if let Some(s) = start {
        cols.push(Arc::new(Int64Array::from(vec![s; e.rows])));
    }
    cols.extend(e.keys.iter().cloned());
    cols.extend(e.aggs.iter().flatten().cloned());
    batch_of(cols, e.rows).map_err(to_df)
}

/// The rows of a panes table grouped by their pane start (column 0).
fn by_start(batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let order = sort_to_indices(batch.column(0), None, None)?;
    let sorted = take_record_batch(batch, &order)?;
    let starts = sorted.column(0).as_primitive::<Int64Type>().clone();
    let ranges = partition(&[Arc::clone(sorted.column(0))])?;
    Ok(ranges.ranges().into_iter().map(|r| (starts.value(r.start), sorted.slice(r.start, r.end - r.start))).collect())
}

/// The aggregate functions' evaluated arguments, as DataFusion's hash aggregate computes them:
/// the arguments, then the ORDER BY expressions of order-sensitive aggregates.
pub fn aggregate_arguments(aggs: &[Arc<AggregateFunctionExpr>]) -> Vec<Vec<Arc<dyn PhysicalExpr>>> {
    aggs.iter()
        .map(|agg| {
            let mut v = agg.expressions();
            v.extend(agg.order_bys().iter().map(|s| Arc::clone(&s.expr)));
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from((from..from + n).collect::<Vec<_>>()))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    /// Small windows' batches are joined up to the target, in order; a batch over the target
    /// stays whole; nothing is lost or reordered.
    #[test]
    fn small_output_batches_are_joined_up_to_the_target_in_order() {
        let input = vec![batch(0, 3), batch(3, 4), batch(7, 2), batch(9, 20), batch(29, 1), batch(30, 5)];
        let out = coalesce(input.clone(), 10).unwrap();
        assert_eq!(out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), vec![9, 20, 6]);
        assert_eq!(values(&out), (0..35).collect::<Vec<_>>());
        assert_eq!(coalesce(vec![batch(0, 3)], 10).unwrap().len(), 1);
        assert!(coalesce(Vec::new(), 10).unwrap().is_empty());
    }

    /// Window starts found once per run of times in the same window are each time's
    /// `div_euclid` window: times in order, out of order, negative, on the boundaries, and at
    /// ±2^61 ms (the most an event time may be).
    #[test]
    fn window_starts_are_each_times_floor() {
        let mut times: Vec<i64> = vec![0, 1, 9_999, 10_000, 10_001, -1, -10_000, -10_001, 5, 5, 1 << 61, -(1 << 61), 19_999, 20_000, 3];
        let mut seed = 11u64;
        let mut t = 1_700_000_000_000i64;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // mostly forward by up to 3 s, now and then back by up to 30 s
            t += ((seed >> 33) % 3_000) as i64 - if (seed >> 20).is_multiple_of(10) { 30_000 } else { 0 };
            times.push(t);
        }
        for size in [1, 7, 1_000, 10_000, 86_400_000] {
            let want: Vec<i64> = times.iter().map(|t| t.div_euclid(size) * size).collect();
            assert_eq!(window_starts(&times, size), want, "size {size}");
        }
    }
}
