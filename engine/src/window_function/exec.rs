//! `StreamWindowFunctionExec`: window functions over rows in event-time order (see the module
//! above), with each key's carried state in checkpoints.
//!
//! A batch of new rows is grouped by key. The functions of [`Fast`] are computed for all keys
//! in one pass over the rows. The others are evaluated a key at a time: for functions carried
//! by context, over the key's kept rows followed by its new ones (DataFusion evaluates the
//! whole run, the new rows' values are taken); for shifted ones, over the new rows alone, then
//! shifted by what the key had; running aggregates by the key's own accumulator. The output is the input's rows in their order with one column per function,
//! as DataFusion's `BoundedWindowAggExec` gives them.
//!
//! ```sql
//! SELECT device_id, LAG(temperature) OVER (PARTITION BY device_id ORDER BY ts) AS previous FROM readings
//! -- StreamWindowFunctionExec: [lag(…) (rows kept: first 0, last 1)] ← WatermarkSortExec ← source
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    make_comparator, new_empty_array, new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::kernels::cmp::{gt, lt};
use datafusion::arrow::compute::kernels::numeric::add_wrapping;
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, concat, concat_batches, is_null, lexsort_to_indices, or_kleene, take, take_record_batch, SortColumn};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, HashMap, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::{Carry, Shift};
use crate::checkpoint::operator::{execute_inputs, spawn_operator, Alignment, Checkpointing, InputItem, Inputs};
use crate::checkpoint::state::{OperatorState, StateTable};
use crate::event_time::time_column::to_epoch_millis;

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct StreamWindowFunctionExec {
    input: Arc<dyn ExecutionPlan>,
    exprs: Vec<Arc<dyn WindowExpr>>,
    carries: Vec<Carry>,
    schema: SchemaRef,
    /// `state.ttl`: a key no row has come for in that long is forgotten (its next row starts
    /// afresh: `ROW_NUMBER` 1, `LAG` null).
    state_ttl: Option<std::time::Duration>,
    /// An integer event time's multiplier to milliseconds (1000 for epoch seconds).
    int_scale: i64,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl StreamWindowFunctionExec {
    /// Window functions `exprs` (carried as `carries` says, see [`super::carries`]) over
    /// `input`, one partition in event-time order; `schema` is the input's columns then one
    /// per function.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, exprs: Vec<Arc<dyn WindowExpr>>, carries: Vec<Carry>, schema: SchemaRef) -> Result<Self> {
        if input.output_partitioning().partition_count() != 1 || exprs.len() != carries.len() {
            return internal_err!("StreamWindowFunctionExec takes one input partition and a carry per function");
        }
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        // rows come out in the input's order (rows written after rows held back wait for them)
        if let Some(order) = input.output_ordering() {
            eq.add_ordering(order.clone());
        }
        let boundedness = match input.boundedness() {
            Boundedness::Bounded => Boundedness::Bounded,
            Boundedness::Unbounded { .. } => Boundedness::Unbounded { requires_infinite_memory: false },
        };
        let props = PlanProperties::new(eq, Partitioning::UnknownPartitioning(1), EmissionType::Incremental, boundedness);
        Ok(Self { input, exprs, carries, schema, state_ttl: None, int_scale: 1, props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new() })
    }

    /// With `state.ttl`: keys idle that long are forgotten.
    pub fn with_state_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.state_ttl = ttl;
        self
    }

    /// `state.ttl`, if set.
    pub fn state_ttl(&self) -> Option<std::time::Duration> {
        self.state_ttl
    }

    /// With an integer event time in units of `int_scale` milliseconds (1000 for epoch
    /// seconds), for the watermark the rows held back hold.
    pub fn with_int_scale(mut self, int_scale: i64) -> Self {
        self.int_scale = int_scale;
        self
    }
}

impl DisplayAs for StreamWindowFunctionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<String> = self
            .exprs
            .iter()
            .zip(&self.carries)
            .map(|(e, c)| match c {
                Carry::Context { head, tail, ahead: 0 } => format!("{} (rows kept: first {head}, last {tail})", e.name()),
                Carry::Context { head, tail, ahead } => format!("{} (rows kept: first {head}, last {tail}; written {ahead} rows later)", e.name()),
                Carry::Shift(s) => format!("{} (shifted: {s:?})", e.name()),
                Carry::Accumulate { .. } => format!("{} (accumulated)", e.name()),
            })
            .collect();
        write!(f, "StreamWindowFunctionExec: [{}]", names.join(", "))?;
        match self.state_ttl {
            Some(ttl) => f.write_str(&crate::window::aggregate_exec::expiring_state(ttl)),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for StreamWindowFunctionExec {
    fn name(&self) -> &str {
        "StreamWindowFunctionExec"
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
        for e in &self.exprs {
            if datafusion::physical_plan::apply_expression_roots(e.all_expressions().args.iter(), f)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
            if crate::top_n::visit_keys_and_order(e.partition_by(), e.order_by(), f)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("StreamWindowFunctionExec takes one input");
        }
        Ok(Arc::new(
            Self::try_new(children.swap_remove(0), self.exprs.clone(), self.carries.clone(), Arc::clone(&self.schema))?
                .with_state_ttl(self.state_ttl)
                .with_int_scale(self.int_scale),
        ))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("StreamWindowFunctionExec has one output partition, asked for {partition}");
        }
        let mut inputs = Inputs::new();
        execute_inputs(&self.input, 0, &context, &mut inputs)?;
        let mut memory =
            crate::memory::StateMemory::new(&context, "StreamWindowFunctionExec (rows and values kept per key for window functions)", "fewer keys");
        let checkpointing = Checkpointing::find(&context, crate::checkpoint::node_address(self));
        let mut state = Keyed::try_new(self.exprs.clone(), self.carries.clone(), self.input.schema(), Arc::clone(&self.schema))?;
        state.state_rows = MetricBuilder::new(&self.metrics).gauge("state_rows", 0);
        state.state_bytes = MetricBuilder::new(&self.metrics).gauge("state_bytes", 0);
        state.expired = MetricBuilder::new(&self.metrics).counter("state_keys_expired", 0);
        state.state_ttl = self.state_ttl;
        state.int_scale = self.int_scale;
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        Ok(spawn_operator(Arc::clone(&self.schema), baseline, move |out| async move {
            let Inputs { streams, scopes, keys } = inputs;
            let mut align = Alignment::new(&keys);
            if let Some(restored) = checkpointing.as_ref().and_then(Checkpointing::restored) {
                state.restore(&restored)?;
            }
            // one input partition: its rows come in event-time order
            let mut merged = futures::stream::select_all(streams);
            while let Some((_, p, item)) = merged.next().await {
                let (rows, barrier, watermark) = match item? {
                    InputItem::Batch(batch) => (state.push(&batch)?, None, None),
                    // one input partition: the input has ended, the rows held back are written
                    InputItem::End => (state.finish()?, align.ended((0, p)), None),
                    InputItem::Barrier(b) => (state.tick()?, align.barrier((0, p), b), None),
                    InputItem::Watermark(w) => (state.tick()?, None, Some(state.watermark(w))),
                };
                memory.account(state.bytes())?;
                if !out.batches(rows.into_iter().collect()).await {
                    return Ok(());
                }
                if let Some(w) = watermark {
                    if !out.watermark(w).await {
                        return Ok(());
                    }
                }
                if let Some(b) = barrier {
                    if !out.pass_barrier(b, checkpointing.as_ref(), || state.snapshot(), &scopes).await? {
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

/// What one key carries from batch to batch.
#[derive(Debug)]
struct KeyState {
    /// Its first rows (at most the largest `head` of the functions).
    head: RecordBatch,
    /// Its last rows after `head` (at most the largest `tail`).
    tail: RecordBatch,
    /// Rows so far.
    rows: u64,
    /// Distinct event times so far.
    times: u64,
    /// Per function shifted by a value (`Sum`, `Count`, `Min`, `Max`): the key's last value.
    last: Vec<ScalarValue>,
    /// When a row of the key last came (Unix milliseconds), for `state.ttl`.
    touched: i64,
    /// Its rows not written yet: a function reads later rows of the key than have come.
    pending: RecordBatch,
    /// The event time (ms) of the first of them.
    pending_first: Option<i64>,
    /// Per function carried by [`Carry::Accumulate`]: the aggregate's accumulator over the
    /// key's rows written so far (none for the others); its state goes into checkpoints.
    acc: Vec<Option<Box<dyn Accumulator>>>,
}

/// What [`Keyed::evaluate`] gives: the rows not written before (`fresh`, grouped by key,
/// `ranges` each key's), how many of each key's are written now (the first ones), and the
/// functions' values for those, key after key.
struct Evaluated {
    fresh: RecordBatch,
    ranges: Vec<Range<usize>>,
    written: Vec<usize>,
    values: Vec<ArrayRef>,
}

/// A function computed over a whole batch of keys at once, in a pass over its rows, instead of
/// by DataFusion a key at a time (thousands of calls a batch with many keys). The same values:
/// the differential tests compare both with DataFusion's batch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// `ROW_NUMBER()`: the key's rows so far plus the row's place.
    RowNumber,
    /// `RANK()`: the key's rows so far plus the place of the row's first peer.
    Rank,
    /// `DENSE_RANK()`: the key's distinct times so far plus the row's time's place.
    DenseRank,
    /// A running `SUM` of integers (an `Int64` result): the key's last sum plus the running sum,
    /// over rows of one time together under `RANGE`/`GROUPS`.
    Sum { peers: bool },
    /// A running `COUNT(x)` or `COUNT(*)` (`star`), likewise.
    Count { peers: bool, star: bool },
    /// A running `MIN` or `MAX` (`max`) of integers (an `Int64` result), likewise.
    MinMax { peers: bool, max: bool },
    /// A running `SUM` of floating-point values (a `Float64` result): the key's last sum plus
    /// each row's (or each time's, under `RANGE`/`GROUPS`) sum, added as DataFusion's
    /// accumulator adds them, so that the values are DataFusion's to the last digit.
    SumFloat { peers: bool },
    /// `LAG(x, offset)` without a default: the row `offset` rows before in the key's context.
    Lag { offset: usize },
    /// `LEAD(x, offset)` without a default: the row `offset` rows after among the key's fresh
    /// rows (there when the row is written, but at the input's end or a key's expiry: null).
    Lead { offset: usize },
}

impl Fast {
    /// How `expr`, carried as `carry`, is computed over a whole batch, if it can be.
    fn of(expr: &Arc<dyn WindowExpr>, carry: Carry) -> Option<Fast> {
        let peers = expr.get_window_frame().units != datafusion::logical_expr::WindowFrameUnits::Rows;
        let function = |name: &str| super::window_udf(expr).filter(|udf| udf.fun().name() == name);
        let int64_result = expr.field().ok().is_some_and(|f| f.data_type() == &DataType::Int64);
        let plain = || super::aggregate_of(expr).filter(|a| !a.is_distinct() && a.expressions().len() == 1 && !super::has_filter(expr));
        match carry {
            Carry::Shift(Shift::Rows) if function("row_number").is_some() => Some(Fast::RowNumber),
            Carry::Shift(Shift::Rows) if function("rank").is_some() => Some(Fast::Rank),
            Carry::Shift(Shift::Times) if function("dense_rank").is_some() => Some(Fast::DenseRank),
            // (an Int64 sum is of integers: a sum of floats or decimals keeps DataFusion's order)
            Carry::Shift(Shift::Sum) if int64_result => {
                plain()?;
                Some(Fast::Sum { peers })
            }
            Carry::Shift(shift @ (Shift::Min | Shift::Max)) if int64_result => {
                plain()?;
                Some(Fast::MinMax { peers, max: shift == Shift::Max })
            }
            Carry::Shift(Shift::Sum) if expr.field().ok().is_some_and(|f| f.data_type() == &DataType::Float64) => {
                plain()?;
                Some(Fast::SumFloat { peers })
            }
            Carry::Shift(Shift::Count) if int64_result => {
                let a = plain()?;
                let star = a.expressions().first()?.downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null());
                Some(Fast::Count { peers, star })
            }
            // LAG and LEAD without a default (LAG(x, -n) is LEAD(x, n)): the carry holds the
            // offset (`Carry::of` has refused IGNORE NULLS and reversed ones)
            Carry::Context { head: 0, tail, ahead } => {
                let udf = function("lag").or_else(|| function("lead"))?;
                match (udf.args().len() <= 2, tail, ahead) {
                    (true, offset, 0) => Some(Fast::Lag { offset }),
                    // (the rows written have that many later rows of their key after them)
                    (true, 0, offset) => Some(Fast::Lead { offset }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value `LAG` or `LEAD` reads.
    fn lag_argument(expr: &Arc<dyn WindowExpr>) -> Option<Arc<dyn PhysicalExpr>> {
        super::window_udf(expr)?.args().first().cloned()
    }

    /// Whether it needs to know which rows share a time.
    fn needs_peers(&self) -> bool {
        matches!(
            self,
            Fast::Rank
                | Fast::DenseRank
                | Fast::Sum { peers: true }
                | Fast::Count { peers: true, .. }
                | Fast::SumFloat { peers: true }
                | Fast::MinMax { peers: true, .. }
        )
    }
}

/// Takes one key's first held-back time out of `held`.
fn unhold(held: &mut BTreeMap<i64, usize>, t: i64) {
    if let Some(n) = held.get_mut(&t) {
        *n -= 1;
        if *n == 0 {
            held.remove(&t);
        }
    }
}

/// Every key's state, and how to evaluate the functions.
struct Keyed {
    exprs: Vec<Arc<dyn WindowExpr>>,
    carries: Vec<Carry>,
    input_schema: SchemaRef,
    schema: SchemaRef,
    /// The `PARTITION BY` values of a key, as rows.
    converter: RowConverter,
    /// Their types (a restored key column is cast back: rows give dictionaries as values).
    key_types: Vec<DataType>,
    keys: HashMap<Key, KeyState>,
    /// No rows: what every key without kept or held rows shares (an empty batch per key and
    /// column would cost more than the state itself over 100 000 keys).
    empty: RecordBatch,
    head: usize,
    tail: usize,
    /// The most rows after a row any function reads (`LEAD(x, n)`, `n FOLLOWING`).
    ahead: usize,
    /// Per function: how it is computed over a whole batch at once, if it can be (else a
    /// key at a time by DataFusion).
    fast: Vec<Option<Fast>>,
    /// An integer event time's multiplier to milliseconds.
    int_scale: i64,
    /// Each key's first held-back time, counted (the watermark handed on stays behind it).
    held: BTreeMap<i64, usize>,
    /// Rows written, with their values, waiting for the rows held back before them (each batch
    /// in event-time order, with its times in ms), and their bytes.
    ready: Vec<(RecordBatch, Int64Array)>,
    ready_bytes: usize,
    /// Rows kept and bytes held by every key, kept up to date as keys move on.
    kept_rows: usize,
    kept_bytes: usize,
    state_rows: Gauge,
    state_bytes: Gauge,
    /// `state.ttl`, keys forgotten for it, and when keys were last looked at for it.
    state_ttl: Option<std::time::Duration>,
    expired: datafusion::physical_plan::metrics::Count,
    last_expiry: std::time::Instant,
}

/// A key: its `PARTITION BY` values in the row format of [`RowConverter`].
type Key = Vec<u8>;

/// The column of the context table that marks a key's first rows.
const HEAD_COLUMN: &str = "__ferris_head";

impl Keyed {
    fn try_new(exprs: Vec<Arc<dyn WindowExpr>>, carries: Vec<Carry>, input_schema: SchemaRef, schema: SchemaRef) -> Result<Self> {
        let empty = RecordBatch::new_empty(Arc::clone(&input_schema));
        let fast = exprs.iter().zip(&carries).map(|(e, c)| Fast::of(e, *c)).collect();
        let key_types: Vec<DataType> = match exprs.first() {
            Some(e) => e.partition_by().iter().map(|p| p.data_type(&input_schema)).collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let partition_by: Vec<SortField> = key_types.iter().cloned().map(SortField::new).collect();
        let (mut head, mut tail, mut ahead) = (0, 0, 0);
        for c in &carries {
            if let Carry::Context { head: h, tail: t, ahead: a } = c {
                head = head.max(*h);
                tail = tail.max(*t);
                ahead = ahead.max(*a);
            }
        }
        Ok(Self {
            exprs,
            carries,
            input_schema,
            schema,
            converter: RowConverter::new(partition_by)?,
            key_types,
            keys: HashMap::default(),
            fast,
            empty,
            head,
            tail,
            ahead,
            int_scale: 1,
            held: BTreeMap::new(),
            ready: Vec::new(),
            ready_bytes: 0,
            kept_rows: 0,
            kept_bytes: 0,
            state_rows: Gauge::new(),
            state_bytes: Gauge::new(),
            state_ttl: None,
            expired: datafusion::physical_plan::metrics::Count::new(),
            last_expiry: std::time::Instant::now(),
        })
    }

    /// The `PARTITION BY` values of `batch`'s rows.
    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let Some(first) = self.exprs.first() else { return Ok(Vec::new()) };
        first.partition_by().iter().map(|p| p.evaluate(batch).and_then(|v| v.into_array(batch.num_rows()))).collect()
    }

    /// Each row's key: its `PARTITION BY` values as converter rows (one empty key for every
    /// row when there is no `PARTITION BY`).
    fn row_keys(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Key>> {
        if columns.is_empty() {
            return Ok(vec![Key::new(); rows]);
        }
        let converted = self.converter.convert_columns(columns)?;
        Ok(converted.iter().map(|r| r.as_ref().to_vec()).collect())
    }

    fn empty_state(&self) -> Result<KeyState> {
        Ok(KeyState {
            head: self.empty.clone(),
            tail: self.empty.clone(),
            rows: 0,
            times: 0,
            last: self.exprs.iter().map(|e| e.field().and_then(|f| ScalarValue::try_from(f.data_type()))).collect::<Result<_>>()?,
            touched: crate::window::aggregate_exec::unix_millis(),
            pending: self.empty.clone(),
            pending_first: None,
            acc: self
                .exprs
                .iter()
                .zip(&self.carries)
                .map(|(e, c)| match (c, super::aggregate_of(e)) {
                    (Carry::Accumulate { .. }, Some(a)) => a.create_accumulator().map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Rows a key keeps, taken out of the batch they came in ([`compacted`]); none: the
    /// shared empty batch.
    fn own(&self, rows: RecordBatch) -> Result<RecordBatch> {
        if rows.num_rows() == 0 {
            return Ok(self.empty.clone());
        }
        crate::memory::own_batch(rows)
    }

    /// `batch`'s `rows` for a key to keep: copied (a slice would hold the whole batch), or the
    /// shared empty batch.
    fn copy(&self, batch: &RecordBatch, rows: Range<usize>) -> Result<RecordBatch> {
        if rows.is_empty() {
            return Ok(self.empty.clone());
        }
        self.own(take_record_batch(batch, &UInt32Array::from_iter_values(rows.map(|x| x as u32)))?)
    }

    /// A key seen for the first time.
    fn add_key(&mut self, k: Key) -> Result<()> {
        let s = self.empty_state()?;
        self.kept_bytes += kept_bytes(&s);
        self.keys.insert(k, s);
        Ok(())
    }

    /// Evaluates the functions for `batch` (rows in event-time order) and moves every key on.
    /// Rows whose functions read later rows of their key not come yet are held back (see
    /// [`Carry::Context`]), and the rows after them, of every key, wait for them: the rows that
    /// go out are in event-time order, as the input.
    fn push(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        self.expire()?;
        // the batch's keys in the order they first appear, and each key's rows in order
        let key_columns = self.key_columns(batch)?;
        // (each row's key read in place from the converted rows: a key is copied out once per
        // batch, not once per row)
        let converted = if key_columns.is_empty() { None } else { Some(self.converter.convert_columns(&key_columns)?) };
        let mut first_of: Vec<&[u8]> = Vec::new();
        let mut rows_of: Vec<Vec<u32>> = Vec::new();
        let mut place: HashMap<&[u8], usize> = HashMap::default();
        for i in 0..n {
            let k: &[u8] = converted.as_ref().map_or(&[], |c| c.row(i).data());
            match place.get(k) {
                Some(&p) => rows_of[p].push(i as u32),
                None => {
                    place.insert(k, first_of.len());
                    first_of.push(k);
                    rows_of.push(vec![i as u32]);
                }
            }
        }
        let order: Vec<Key> = first_of.iter().map(|k| k.to_vec()).collect();
        for k in &order {
            if !self.keys.contains_key(k) {
                self.add_key(k.clone())?;
            }
        }
        // the new rows grouped by key; where each new row went
        let grouped: Vec<u32> = rows_of.iter().flatten().copied().collect();
        let new_sorted = take_record_batch(batch, &UInt32Array::from(grouped.clone()))?;
        let mut new_ranges = Vec::with_capacity(order.len());
        let mut at = 0usize;
        for rows in &rows_of {
            let len = rows.len();
            new_ranges.push(at..at + len);
            at += len;
        }
        let evaluated = self.evaluate(&order, &new_sorted, &new_ranges, false)?;
        let written = if self.ahead == 0 {
            // every new row is written, nothing was held: the batch's own columns, then the
            // values put back in the batch's row order
            let mut back = vec![0u32; n];
            for (pos, row) in grouped.iter().enumerate() {
                back[*row as usize] = pos as u32;
            }
            let back = UInt32Array::from(back);
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            for values in &evaluated.values {
                columns.push(take(values, &back, None)?);
            }
            Some(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
        } else {
            self.make_ready(evaluated)?;
            self.release()?
        };
        Ok(written)
    }

    /// Between batches (a watermark, a barrier): keys idle past `state.ttl` write the rows they
    /// held back, and what no held row precedes any more goes out.
    fn tick(&mut self) -> Result<Option<RecordBatch>> {
        if self.ahead == 0 {
            return Ok(None);
        }
        self.expire()?;
        self.release()
    }

    /// Puts the rows [`Keyed::evaluate`] wrote among the rows ready to go out.
    fn make_ready(&mut self, evaluated: Evaluated) -> Result<()> {
        if let Some(batch) = self.in_time_order(evaluated)? {
            let times = self.times_of(&batch)?;
            self.ready_bytes += batch.get_array_memory_size();
            self.ready.push((batch, times));
        }
        Ok(())
    }

    /// The event times (ms) of output rows.
    fn times_of(&self, batch: &RecordBatch) -> Result<Int64Array> {
        match self.exprs.first().and_then(|e| e.order_by().first()) {
            Some(o) => to_epoch_millis(&o.expr.evaluate(batch)?.into_array(batch.num_rows())?, self.int_scale),
            None => Ok(Int64Array::from(vec![i64::MIN; batch.num_rows()])),
        }
    }

    /// The ready rows no row held back precedes (all of them when none is held), in event-time
    /// order: the output stays in event-time order, as the rows came in, so that the operators
    /// above never see a row older than one they have seen (they would count it late).
    fn release(&mut self) -> Result<Option<RecordBatch>> {
        if self.ready.is_empty() {
            return Ok(None);
        }
        let bound = self.held.keys().next().copied();
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut keep = Vec::with_capacity(self.ready.len());
        for (batch, times) in std::mem::take(&mut self.ready) {
            // each ready batch is in time order: a prefix of it goes
            let n = match bound {
                None => batch.num_rows(),
                Some(b) => times.values().partition_point(|&t| t <= b),
            };
            if n > 0 {
                out.push(batch.slice(0, n));
            }
            if n < batch.num_rows() {
                keep.push((batch.slice(n, batch.num_rows() - n), times.slice(n, batch.num_rows() - n)));
            }
        }
        self.ready = keep;
        self.ready_bytes = self.ready.iter().map(|(b, _)| b.get_array_memory_size()).sum();
        self.update_state();
        if out.is_empty() {
            return Ok(None);
        }
        let released = concat_batches(&self.schema, &out)?;
        if out.len() == 1 {
            return Ok(Some(released));
        }
        let times: ArrayRef = Arc::new(self.times_of(&released)?);
        let position: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..released.num_rows() as u32));
        let sorted = lexsort_to_indices(&[SortColumn { values: times, options: None }, SortColumn { values: position, options: None }], None)?;
        Ok(Some(take_record_batch(&released, &sorted)?))
    }

    /// The input has ended: every row held back is written, its functions reading no later rows
    /// (`LEAD` gives its default).
    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        let order: Vec<Key> = self.keys.iter().filter(|(_, s)| s.pending.num_rows() > 0).map(|(k, _)| k.clone()).collect();
        self.write_held(&order)?;
        self.release()
    }

    /// Writes every row `order`'s keys hold back, as if their input had ended, among the rows
    /// ready to go out.
    fn write_held(&mut self, order: &[Key]) -> Result<()> {
        if order.is_empty() {
            return Ok(());
        }
        let none = RecordBatch::new_empty(Arc::clone(&self.input_schema));
        let ranges = vec![0..0; order.len()];
        let evaluated = self.evaluate(order, &none, &ranges, true)?;
        self.make_ready(evaluated)
    }

    /// The rows written by [`Keyed::evaluate`] with their values, in event-time order.
    fn in_time_order(&self, evaluated: Evaluated) -> Result<Option<RecordBatch>> {
        let Evaluated { fresh, ranges, written, values } = evaluated;
        let total: usize = written.iter().sum();
        if total == 0 {
            return Ok(None);
        }
        let rows = UInt32Array::from_iter_values(ranges.iter().zip(&written).flat_map(|(r, w)| (r.start..r.start + w).map(|x| x as u32)));
        let mut columns = take_record_batch(&fresh, &rows)?.columns().to_vec();
        columns.extend(values);
        let out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let Some(order) = self.exprs.first().and_then(|e| e.order_by().first()) else { return Ok(Some(out)) };
        let times = order.expr.evaluate(&out)?.into_array(total)?;
        let position: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..total as u32));
        let sorted = lexsort_to_indices(&[SortColumn { values: times, options: Some(order.options) }, SortColumn { values: position, options: None }], None)?;
        Ok(Some(take_record_batch(&out, &sorted)?))
    }

    /// Evaluates the functions for `order`'s keys over their kept rows, the rows they hold back
    /// and their new rows (`new_sorted`, grouped by key, `new_ranges` each key's), writes the
    /// rows whose values are known (all of them with `all`) and moves the keys on.
    fn evaluate(&mut self, order: &[Key], new_sorted: &RecordBatch, new_ranges: &[Range<usize>], all: bool) -> Result<Evaluated> {
        // the rows not written yet: each key's held rows, then its new ones
        let (fresh, fresh_ranges) = if self.ahead == 0 { (new_sorted.clone(), new_ranges.to_vec()) } else { self.with_held(order, new_sorted, new_ranges)? };
        // whether each fresh row has the time of the row before it in its key (a peer): where
        // rows held back may be cut, ranks, running frames over peers, distinct times
        let needs_peers = (self.ahead > 0 && !all)
            || self.counts_times()
            || self.fast.iter().flatten().any(|f| f.needs_peers())
            || self.carries.contains(&Carry::Accumulate { peers: true });
        let peers = if needs_peers { self.peers(&fresh, &fresh_ranges)? } else { Vec::new() };
        let written = self.writable(&fresh_ranges, all, &peers);
        // with context: each key's kept rows, then its fresh rows
        let with_context = self.head + self.tail > 0;
        let (context_sorted, context_ranges) =
            if with_context { self.with_context(order, &fresh, &fresh_ranges)? } else { (fresh.clone(), fresh_ranges.clone()) };
        let input_width = self.input_schema.fields().len();
        let mut all_values = Vec::with_capacity(self.exprs.len());
        for e in 0..self.exprs.len() {
            let (expr, carry) = (Arc::clone(&self.exprs[e]), self.carries[e]);
            if let Some(fast) = self.fast.get(e).copied().flatten() {
                let values = self.evaluate_fast(fast, e, order, &fresh, &fresh_ranges, &written, &peers, &context_sorted, &context_ranges)?;
                let want = self.schema.field(input_width + e).data_type();
                all_values.push(if values.data_type() == want { values } else { cast(&values, want)? });
                continue;
            }
            let mut parts: Vec<ArrayRef> = Vec::with_capacity(order.len());
            for (i, k) in order.iter().enumerate() {
                let (fresh_len, write) = (fresh_ranges[i].len(), written[i]);
                if write == 0 {
                    continue;
                }
                let value = match carry {
                    Carry::Context { .. } => {
                        let r = &context_ranges[i];
                        let all = expr.evaluate(&context_sorted.slice(r.start, r.len()))?;
                        all.slice(all.len() - fresh_len, write)
                    }
                    Carry::Shift(shift) => {
                        let r = &fresh_ranges[i];
                        let values = expr.evaluate(&fresh.slice(r.start, r.len()))?.slice(0, write);
                        let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
                        let shifted = shifted(&values, shift, key, e)?;
                        if let Some(l) = key.last.get_mut(e) {
                            *l = ScalarValue::try_from_array(&shifted, shifted.len() - 1)?;
                        }
                        shifted
                    }
                    Carry::Accumulate { peers: with_peers } => {
                        let r = &fresh_ranges[i];
                        let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
                        let (before, acc) = (kept_bytes(key), key.acc.get_mut(e).and_then(Option::as_mut));
                        let acc = acc.ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without an aggregate's state".into()))?;
                        // (a row whose time is its previous row's goes in that row's group)
                        let same_time = if with_peers { peers.get(r.start..r.start + write) } else { None };
                        let values = accumulated(&expr, &fresh.slice(r.start, write), same_time, acc)?;
                        self.kept_bytes = (self.kept_bytes + kept_bytes(key)).saturating_sub(before);
                        values
                    }
                };
                parts.push(value);
            }
            let want = self.schema.field(input_width + e).data_type();
            let values = if parts.is_empty() {
                new_empty_array(want)
            } else {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                concat(&refs)?
            };
            all_values.push(if values.data_type() == want { values } else { cast(&values, want)? });
        }
        // the keys move on: rows, distinct times, kept rows, rows held back
        let written_ranges: Vec<Range<usize>> = fresh_ranges.iter().zip(&written).map(|(r, w)| r.start..r.start + w).collect();
        let times = self.distinct_times(&written_ranges, &peers);
        let now = crate::window::aggregate_exec::unix_millis();
        for (i, k) in order.iter().enumerate() {
            let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
            key.rows += written[i] as u64;
            key.times += times[i];
            if !new_ranges[i].is_empty() {
                key.touched = now;
            }
        }
        if with_context {
            // the context's written rows: all but the fresh rows held back
            let ranges: Vec<Range<usize>> =
                context_ranges.iter().zip(fresh_ranges.iter().zip(&written)).map(|(c, (f, w))| c.start..c.end - (f.len() - w)).collect();
            self.keep(order, &context_sorted, &ranges)?;
        }
        if self.ahead > 0 {
            self.hold(order, &fresh, &fresh_ranges, &written)?;
        }
        self.update_state();
        Ok(Evaluated { fresh, ranges: fresh_ranges, written, values: all_values })
    }

    /// Per fresh row: whether it has the event time of the row before it in its key (`ranges`
    /// each key's rows).
    fn peers(&self, fresh: &RecordBatch, ranges: &[Range<usize>]) -> Result<Vec<bool>> {
        let mut out = vec![false; fresh.num_rows()];
        let Some(order) = self.exprs.first().and_then(|e| e.order_by().first()) else { return Ok(out) };
        let times = order.expr.evaluate(fresh)?.into_array(fresh.num_rows())?;
        let same = make_comparator(times.as_ref(), times.as_ref(), order.options)?;
        for r in ranges {
            for (i, peer) in out.iter_mut().enumerate().take(r.end).skip(r.start + 1) {
                *peer = same(i - 1, i).is_eq();
            }
        }
        Ok(out)
    }

    /// A function's values for every key's written rows at once (see [`Fast`]), key after key
    /// as [`Keyed::evaluate`] gives them; the keys' last values move on.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_fast(
        &mut self,
        fast: Fast,
        e: usize,
        order: &[Key],
        fresh: &RecordBatch,
        ranges: &[Range<usize>],
        written: &[usize],
        peers: &[bool],
        context: &RecordBatch,
        context_ranges: &[Range<usize>],
    ) -> Result<ArrayRef> {
        let total: usize = written.iter().sum();
        let key_of = |keys: &HashMap<Key, KeyState>, k: &Key| -> Result<(u64, u64, Option<i64>)> {
            let s = keys.get(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
            let last = match s.last.get(e) {
                Some(ScalarValue::Int64(v)) => *v,
                _ => None,
            };
            Ok((s.rows, s.times, last))
        };
        match fast {
            Fast::RowNumber | Fast::Rank | Fast::DenseRank => {
                let mut out = Vec::with_capacity(total);
                for (i, k) in order.iter().enumerate() {
                    let (rows, times, _) = key_of(&self.keys, k)?;
                    let r = &ranges[i];
                    let (mut first, mut ordinal) = (0u64, 0u64);
                    for j in 0..written[i] {
                        let new_time = j == 0 || !peers.get(r.start + j).copied().unwrap_or(false);
                        if new_time {
                            first = j as u64;
                            ordinal += 1;
                        }
                        out.push(match fast {
                            Fast::RowNumber => rows + j as u64 + 1,
                            Fast::Rank => rows + first + 1,
                            _ => times + ordinal,
                        });
                    }
                }
                Ok(Arc::new(UInt64Array::from(out)))
            }
            Fast::Sum { peers: with_peers } | Fast::Count { peers: with_peers, .. } | Fast::MinMax { peers: with_peers, .. } => {
                let Some(aggregate) = super::aggregate_of(&self.exprs[e]) else { return internal_err!("{} is no aggregate", self.exprs[e].name()) };
                let arg = match aggregate.expressions().first() {
                    Some(a) => a.evaluate(fresh)?.into_array(fresh.num_rows())?,
                    None => return internal_err!("{} has no argument", self.exprs[e].name()),
                };
                // (a count reads only which values are null, as DataFusion's: a NULL literal, a
                // dictionary's null values and run ends count as null)
                let counted = arg.logical_nulls();
                let arg = if matches!(fast, Fast::Count { .. }) { new_null_array(&DataType::Int64, arg.len()) } else { cast(&arg, &DataType::Int64)? };
                let arg = datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(&arg).clone();
                let star = matches!(fast, Fast::Count { star: true, .. });
                let mut out: Vec<Option<i64>> = Vec::with_capacity(total);
                for (i, k) in order.iter().enumerate() {
                    let (_, _, last) = key_of(&self.keys, k)?;
                    let r = &ranges[i];
                    let start = out.len();
                    let mut acc = match fast {
                        Fast::Count { .. } => Some(last.unwrap_or(0)),
                        _ => last,
                    };
                    for j in r.start..r.start + written[i] {
                        if matches!(fast, Fast::Count { .. }) {
                            if star || counted.as_ref().is_none_or(|n| n.is_valid(j)) {
                                acc = acc.map(|a| a.wrapping_add(1));
                            }
                        } else if arg.is_valid(j) {
                            let v = arg.value(j);
                            acc = Some(match (fast, acc) {
                                (Fast::MinMax { max: true, .. }, Some(a)) => a.max(v),
                                (Fast::MinMax { max: false, .. }, Some(a)) => a.min(v),
                                (Fast::MinMax { .. }, None) => v,
                                (_, a) => a.unwrap_or(0).wrapping_add(v),
                            });
                        }
                        out.push(acc);
                    }
                    if with_peers {
                        // rows of one time share the value at the last of them
                        let mut shared = None;
                        for j in (0..written[i]).rev() {
                            if j + 1 == written[i] || !peers.get(r.start + j + 1).copied().unwrap_or(false) {
                                shared = out[start + j];
                            }
                            out[start + j] = shared;
                        }
                    }
                    if written[i] > 0 {
                        let value = out[out.len() - 1];
                        let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
                        if let Some(l) = key.last.get_mut(e) {
                            *l = ScalarValue::Int64(value);
                        }
                    }
                }
                Ok(Arc::new(Int64Array::from(out)))
            }
            Fast::SumFloat { peers: with_peers } => {
                let Some(aggregate) = super::aggregate_of(&self.exprs[e]) else { return internal_err!("{} is no aggregate", self.exprs[e].name()) };
                let arg = match aggregate.expressions().first() {
                    Some(a) => cast(&a.evaluate(fresh)?.into_array(fresh.num_rows())?, &DataType::Float64)?,
                    None => return internal_err!("{} has no argument", self.exprs[e].name()),
                };
                let arg = datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Float64Type>(&arg).clone();
                let mut out: Vec<Option<f64>> = Vec::with_capacity(total);
                for (i, k) in order.iter().enumerate() {
                    let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
                    let mut acc = match key.last.get(e) {
                        Some(ScalarValue::Float64(v)) => *v,
                        _ => None,
                    };
                    let (r, w) = (&ranges[i], written[i]);
                    let mut j = 0;
                    while j < w {
                        // a row, or the rows of one time: added as one sum, as DataFusion adds
                        // the rows that enter a running frame
                        let mut end = j + 1;
                        while with_peers && end < w && peers.get(r.start + end).copied().unwrap_or(false) {
                            end += 1;
                        }
                        if let Some(x) = datafusion::arrow::compute::sum(&arg.slice(r.start + j, end - j)) {
                            acc = Some(acc.unwrap_or(0.0) + x);
                        }
                        out.extend(std::iter::repeat_n(acc, end - j));
                        j = end;
                    }
                    if w > 0 {
                        if let Some(l) = key.last.get_mut(e) {
                            *l = ScalarValue::Float64(acc);
                        }
                    }
                }
                Ok(Arc::new(datafusion::arrow::array::Float64Array::from(out)))
            }
            Fast::Lag { offset } | Fast::Lead { offset } => {
                let Some(arg) = Fast::lag_argument(&self.exprs[e]) else { return internal_err!("{} has no argument", self.exprs[e].name()) };
                let values = arg.evaluate(context)?.into_array(context.num_rows())?;
                let lead = matches!(fast, Fast::Lead { .. });
                let mut indices: Vec<Option<u32>> = Vec::with_capacity(total);
                for (i, r) in context_ranges.iter().enumerate() {
                    // the fresh rows are the context's last ones
                    let first_fresh = r.end - ranges[i].len();
                    for p in first_fresh..first_fresh + written[i] {
                        let q = if lead { p.checked_add(offset).filter(|&q| q < r.end) } else { p.checked_sub(offset).filter(|&q| q >= r.start) };
                        indices.push(q.map(|q| q as u32));
                    }
                }
                Ok(take(&values, &UInt32Array::from(indices), None)?)
            }
        }
    }

    /// Per key, how many of its fresh rows can be written: all of them when nothing reads
    /// later rows (or `all`); else all but the last [`Keyed::ahead`], and never some rows of
    /// one time without the others (ranks and `RANGE` frames count peers together).
    fn writable(&self, ranges: &[Range<usize>], all: bool, peers: &[bool]) -> Vec<usize> {
        if self.ahead == 0 || all {
            return ranges.iter().map(|r| r.len()).collect();
        }
        ranges
            .iter()
            .map(|r| {
                let mut w = r.len().saturating_sub(self.ahead);
                while w > 0 && peers.get(r.start + w).copied().unwrap_or(false) {
                    w -= 1;
                }
                w
            })
            .collect()
    }

    /// Each key's rows held back, then its new rows, and each key's range in that.
    fn with_held(&self, order: &[Key], new_sorted: &RecordBatch, new_ranges: &[Range<usize>]) -> Result<(RecordBatch, Vec<Range<usize>>)> {
        self.each_key_after(order, new_sorted, new_ranges, |key| [Some(&key.pending), None])
    }

    /// Per key in `order`: the rows of its state `before` picks, then its rows of `batch`
    /// (`ranges` each key's), all in one batch, and each key's range in that.
    fn each_key_after(
        &self,
        order: &[Key],
        batch: &RecordBatch,
        ranges: &[Range<usize>],
        before: impl for<'k> Fn(&'k KeyState) -> [Option<&'k RecordBatch>; 2],
    ) -> Result<(RecordBatch, Vec<Range<usize>>)> {
        let mut pieces = Vec::with_capacity(order.len() * 3);
        let mut out = Vec::with_capacity(order.len());
        let mut at = 0usize;
        for (i, k) in order.iter().enumerate() {
            let start = at;
            if let Some(key) = self.keys.get(k) {
                for kept in before(key).into_iter().flatten().filter(|b| b.num_rows() > 0) {
                    at += kept.num_rows();
                    pieces.push(kept.clone());
                }
            }
            let r = &ranges[i];
            if !r.is_empty() {
                pieces.push(batch.slice(r.start, r.len()));
                at += r.len();
            }
            out.push(start..at);
        }
        Ok((concat_batches(&self.input_schema, &pieces)?, out))
    }

    /// Keeps each key's fresh rows not written as the rows it holds back (copied, so that the
    /// batch they came in is not held), and when the first of them came, for the watermark.
    fn hold(&mut self, order: &[Key], fresh: &RecordBatch, ranges: &[Range<usize>], written: &[usize]) -> Result<()> {
        let times = match self.exprs.first().and_then(|e| e.order_by().first()) {
            Some(o) => Some(to_epoch_millis(&o.expr.evaluate(fresh)?.into_array(fresh.num_rows())?, self.int_scale)?),
            None => None,
        };
        for (i, k) in order.iter().enumerate() {
            let r = &ranges[i];
            let held = r.start + written[i]..r.end;
            let first = times.as_ref().filter(|t| !held.is_empty() && t.is_valid(held.start)).map(|t| t.value(held.start));
            let pending = self.copy(fresh, held.clone())?;
            let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
            let (rows_before, bytes_before) = (kept_rows(key), kept_bytes(key));
            key.pending = pending;
            if key.pending_first != first {
                if let Some(old) = key.pending_first {
                    unhold(&mut self.held, old);
                }
                if let Some(new) = first {
                    *self.held.entry(new).or_default() += 1;
                }
                key.pending_first = first;
            }
            self.kept_rows = (self.kept_rows + kept_rows(key)).saturating_sub(rows_before);
            self.kept_bytes = (self.kept_bytes + kept_bytes(key)).saturating_sub(bytes_before);
        }
        Ok(())
    }

    /// The watermark to hand on for `w`: never past a row held back (it is written later).
    fn watermark(&self, w: i64) -> i64 {
        self.held.keys().next().map_or(w, |&first| w.min(first))
    }

    /// Each key's kept rows followed by its fresh rows, and each key's range in that.
    fn with_context(&self, order: &[Key], fresh: &RecordBatch, fresh_ranges: &[Range<usize>]) -> Result<(RecordBatch, Vec<Range<usize>>)> {
        self.each_key_after(order, fresh, fresh_ranges, |key| [Some(&key.head), Some(&key.tail)])
    }

    /// Keeps each key's first and last rows out of its kept and written rows (`ranges` in
    /// `context_sorted`; copied, string views' data too, so that the batch they came in is not
    /// held).
    fn keep(&mut self, order: &[Key], context_sorted: &RecordBatch, ranges: &[Range<usize>]) -> Result<()> {
        for (i, k) in order.iter().enumerate() {
            let r = &ranges[i];
            let head = self.head.min(r.len());
            let rest = r.len() - head;
            let tail = self.tail.min(rest);
            let (head, tail) = (self.copy(context_sorted, r.start..r.start + head)?, self.copy(context_sorted, r.end - tail..r.end)?);
            let key = self.keys.get_mut(k).ok_or_else(|| datafusion::error::DataFusionError::Internal("a key without state".into()))?;
            let (rows_before, bytes_before) = (kept_rows(key), kept_bytes(key));
            key.head = head;
            key.tail = tail;
            self.kept_rows = (self.kept_rows + kept_rows(key)).saturating_sub(rows_before);
            self.kept_bytes = (self.kept_bytes + kept_bytes(key)).saturating_sub(bytes_before);
        }
        Ok(())
    }

    /// Per key: how many distinct event times its new rows have (the `ORDER BY` value).
    fn distinct_times(&self, ranges: &[Range<usize>], peers: &[bool]) -> Vec<u64> {
        if !self.counts_times() {
            return vec![0; ranges.len()];
        }
        ranges.iter().map(|r| (r.start..r.end).filter(|&j| j == r.start || !peers.get(j).copied().unwrap_or(false)).count() as u64).collect()
    }

    /// Whether a function needs each key's distinct times (`DENSE_RANK`).
    fn counts_times(&self) -> bool {
        self.carries.contains(&Carry::Shift(Shift::Times)) && self.exprs.first().is_some_and(|e| !e.order_by().is_empty())
    }

    /// `state.ttl`: forgets the keys no row has come for in that long (looked at every
    /// fraction of it), first writing the rows they hold back, as if their input had ended.
    fn expire(&mut self) -> Result<()> {
        let Some(ttl) = self.state_ttl else { return Ok(()) };
        if self.last_expiry.elapsed() < crate::window::aggregate_exec::expiry_every(ttl) {
            return Ok(());
        }
        self.last_expiry = std::time::Instant::now();
        let cutoff = crate::window::aggregate_exec::idle_since(ttl);
        let held: Vec<Key> = self.keys.iter().filter(|(_, s)| s.touched < cutoff && s.pending.num_rows() > 0).map(|(k, _)| k.clone()).collect();
        self.write_held(&held)?;
        let before = self.keys.len();
        self.keys.retain(|_, k| k.touched >= cutoff);
        if self.keys.len() < before {
            self.expired.add(before - self.keys.len());
            self.kept_rows = self.keys.values().map(kept_rows).sum();
            self.kept_bytes = self.keys.values().map(kept_bytes).sum();
            self.update_state();
        }
        Ok(())
    }

    /// Bytes held: the kept rows, and a key's counters and last values.
    fn bytes(&self) -> usize {
        self.kept_bytes + self.ready_bytes + self.keys.len() * (std::mem::size_of::<KeyState>() + 48 + 64 * self.exprs.len())
    }

    fn update_state(&self) {
        self.state_rows.set(self.kept_rows);
        self.state_bytes.set(self.bytes());
    }

    /// Every key's state: its kept rows (`context`, with [`HEAD_COLUMN`]) and its counters and
    /// last values (`keys`, with the `PARTITION BY` values).
    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut tables = Vec::new();
        // every key with its state, once (looked up by key, a hash per key and column); the
        // aggregates' states taken out of their accumulators, which then go on from them
        let mut keyed_mut: Vec<(&Key, &mut KeyState)> = self.keys.iter_mut().collect();
        let mut acc_states: Vec<Vec<Vec<ScalarValue>>> = Vec::new();
        for (e, expr) in self.exprs.iter().enumerate() {
            let Some(aggregate) = super::aggregate_of(expr).filter(|_| matches!(self.carries.get(e), Some(Carry::Accumulate { .. }))) else { continue };
            let mut states = Vec::with_capacity(keyed_mut.len());
            for (_, s) in keyed_mut.iter_mut() {
                let Some(acc) = s.acc.get_mut(e).and_then(Option::as_mut) else { return internal_err!("a key without the state of {}", expr.name()) };
                let size = acc.size();
                let state = acc.state()?;
                // (state() consumes the accumulator's state: a new one goes on from it)
                let mut again = aggregate.create_accumulator()?;
                again.merge_batch(&state.iter().map(ScalarValue::to_array).collect::<Result<Vec<_>>>()?)?;
                self.kept_bytes = (self.kept_bytes + again.size()).saturating_sub(size);
                *acc = again;
                states.push(state);
            }
            acc_states.push(states);
        }
        let keyed: Vec<(&Key, &KeyState)> = keyed_mut.into_iter().map(|(k, s)| (k, &*s)).collect();
        let context_schema = Arc::new(Schema::new(
            self.input_schema.fields().iter().cloned().chain([Arc::new(Field::new(HEAD_COLUMN, DataType::Boolean, false))]).collect::<Vec<_>>(),
        ));
        let mut context: Vec<&RecordBatch> = Vec::new();
        let mut is_head: Vec<bool> = Vec::new();
        for (_, s) in &keyed {
            for (rows, head) in [(&s.head, true), (&s.tail, false)] {
                if rows.num_rows() > 0 {
                    context.push(rows);
                    is_head.extend(std::iter::repeat_n(head, rows.num_rows()));
                }
            }
        }
        if !context.is_empty() {
            let rows = concat_batches(&self.input_schema, context)?;
            let mut columns = rows.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from(is_head)));
            tables.push(StateTable { name: "context".into(), batch: RecordBatch::try_new(Arc::clone(&context_schema), columns)?, key_columns: Vec::new() });
        }
        // the rows held back, not written yet, and the rows written that wait for them
        let pending: Vec<&RecordBatch> = keyed.iter().map(|(_, s)| &s.pending).filter(|p| p.num_rows() > 0).collect();
        if !pending.is_empty() {
            tables.push(StateTable { name: "pending".into(), batch: concat_batches(&self.input_schema, pending)?, key_columns: Vec::new() });
        }
        if !self.ready.is_empty() {
            // (string views hold only their own bytes: taken from input batches, they share them)
            let batch = crate::memory::own_batch(concat_batches(&self.schema, self.ready.iter().map(|(b, _)| b))?)?;
            tables.push(StateTable { name: "ready".into(), batch, key_columns: Vec::new() });
        }
        if !keyed.is_empty() {
            let key_columns = if self.exprs.first().is_some_and(|e| !e.partition_by().is_empty()) {
                let parser = self.converter.parser();
                self.converter.convert_rows(keyed.iter().map(|(k, _)| parser.parse(k)))?
            } else {
                Vec::new()
            };
            let mut fields: Vec<Field> = key_columns.iter().enumerate().map(|(i, c)| Field::new(format!("key{i}"), c.data_type().clone(), true)).collect();
            let mut columns = key_columns;
            fields.push(Field::new("rows", DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::from_iter_values(keyed.iter().map(|(_, s)| s.rows))));
            fields.push(Field::new("times", DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::from_iter_values(keyed.iter().map(|(_, s)| s.times))));
            // a column of one value per key, as `field`'s type
            let column = |values: Vec<ScalarValue>, field: &Field| -> Result<ArrayRef> {
                let array = ScalarValue::iter_to_array(values)?;
                Ok(if array.data_type() == field.data_type() { array } else { cast(&array, field.data_type())? })
            };
            for (e, expr) in self.exprs.iter().enumerate() {
                let field = Field::new(format!("last{e}"), expr.field()?.data_type().clone(), true);
                columns.push(column(keyed.iter().map(|(_, s)| s.last.get(e).cloned().unwrap_or(ScalarValue::Null)).collect(), &field)?);
                fields.push(field);
            }
            // when each key's last row came, for state.ttl (last, so older checkpoints without it read)
            fields.push(Field::new("touched", DataType::Int64, false));
            columns.push(Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(keyed.iter().map(|(_, s)| s.touched))));
            // the aggregates' states ([`Carry::Accumulate`]), a column per state field
            let mut acc_states = acc_states.into_iter();
            for (e, expr) in self.exprs.iter().enumerate() {
                let Some(aggregate) = super::aggregate_of(expr).filter(|_| matches!(self.carries.get(e), Some(Carry::Accumulate { .. }))) else { continue };
                let states = acc_states.next().unwrap_or_default();
                for (j, state_field) in aggregate.state_fields()?.iter().enumerate() {
                    let field = Field::new(format!("acc{e}_{j}"), state_field.data_type().clone(), true);
                    columns.push(column(states.iter().map(|st| st.get(j).cloned().unwrap_or(ScalarValue::Null)).collect(), &field)?);
                    fields.push(field);
                }
            }
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            tables.push(StateTable { name: "keys".into(), batch, key_columns: Vec::new() });
        }
        self.update_state();
        Ok(OperatorState { meta: serde_json::json!({ "functions": self.exprs.len() }), tables })
    }

    /// Restores [`Keyed::snapshot`].
    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        self.keys.clear();
        self.held.clear();
        if let Some(keys) = state.table("keys") {
            let touched = keys
                .schema()
                .index_of("touched")
                .ok()
                .map(|i| datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(keys.column(i)).clone());
            let key_count = keys.schema().fields().iter().take_while(|f| f.name().starts_with("key")).count();
            let acc_columns: Vec<Vec<Option<ArrayRef>>> = self
                .exprs
                .iter()
                .zip(&self.carries)
                .enumerate()
                .map(|(e, (expr, c))| match (c, super::aggregate_of(expr)) {
                    (Carry::Accumulate { .. }, Some(a)) => Ok((0..a.state_fields()?.len())
                        .map(|j| keys.schema().index_of(&format!("acc{e}_{j}")).ok().map(|i| Arc::clone(keys.column(i))))
                        .collect()),
                    _ => Ok(Vec::new()),
                })
                .collect::<Result<_>>()?;
            let key_columns: Vec<ArrayRef> = keys.columns()[..key_count]
                .iter()
                .zip(&self.key_types)
                .map(|(c, t)| if c.data_type() == t { Ok(Arc::clone(c)) } else { cast(c, t) })
                .collect::<std::result::Result<_, _>>()?;
            let row_keys = self.row_keys(&key_columns, keys.num_rows())?;
            let rows = cast(keys.column(key_count), &DataType::UInt64)?;
            let times = cast(keys.column(key_count + 1), &DataType::UInt64)?;
            let (rows, times) = (
                datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::UInt64Type>(&rows).clone(),
                datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::UInt64Type>(&times).clone(),
            );
            for (i, k) in row_keys.into_iter().enumerate() {
                let mut s = self.empty_state()?;
                s.rows = rows.value(i);
                s.times = times.value(i);
                if let Some(t) = &touched {
                    s.touched = t.value(i);
                }
                for e in 0..self.exprs.len() {
                    if let Some(l) = s.last.get_mut(e) {
                        *l = ScalarValue::try_from_array(keys.column(key_count + 2 + e), i)?;
                    }
                    if let (Some(columns), Some(Some(acc))) = (acc_columns.get(e).filter(|c| !c.is_empty()), s.acc.get_mut(e)) {
                        let state = columns
                            .iter()
                            .enumerate()
                            .map(|(j, c)| match c {
                                Some(c) => Ok(c.slice(i, 1)),
                                None => internal_err!("a checkpoint lacks the state of {} (acc{e}_{j})", self.exprs[e].name()),
                            })
                            .collect::<Result<Vec<_>>>()?;
                        acc.merge_batch(&state)?;
                    }
                }
                self.keys.insert(k, s);
            }
        }
        if let Some(context) = state.table("context") {
            let width = self.input_schema.fields().len();
            let columns =
                context.columns().get(..width).ok_or_else(|| datafusion::error::DataFusionError::Internal("a checkpoint's kept rows lack columns".into()))?;
            let rows = RecordBatch::try_new(Arc::clone(&self.input_schema), columns.to_vec())?;
            let is_head = datafusion::arrow::array::AsArray::as_boolean(context.column(width)).clone();
            let key_columns = self.key_columns(&rows)?;
            let row_keys = self.row_keys(&key_columns, rows.num_rows())?;
            let mut by_key: HashMap<Key, (Vec<u32>, Vec<u32>)> = HashMap::default();
            for (i, k) in row_keys.into_iter().enumerate() {
                let entry = by_key.entry(k).or_default();
                if is_head.value(i) {
                    entry.0.push(i as u32);
                } else {
                    entry.1.push(i as u32);
                }
            }
            for (k, (head, tail)) in by_key {
                if !self.keys.contains_key(&k) {
                    let s = self.empty_state()?;
                    self.keys.insert(k.clone(), s);
                }
                let head = self.own(take_record_batch(&rows, &UInt32Array::from(head))?)?;
                let tail = self.own(take_record_batch(&rows, &UInt32Array::from(tail))?)?;
                if let Some(s) = self.keys.get_mut(&k) {
                    s.head = head;
                    s.tail = tail;
                }
            }
        }
        if let Some(pending) = state.table("pending") {
            let columns = pending
                .columns()
                .get(..self.input_schema.fields().len())
                .ok_or_else(|| datafusion::error::DataFusionError::Internal("a checkpoint's rows held back lack columns".into()))?;
            let rows = RecordBatch::try_new(Arc::clone(&self.input_schema), columns.to_vec())?;
            let key_columns = self.key_columns(&rows)?;
            let row_keys = self.row_keys(&key_columns, rows.num_rows())?;
            let mut by_key: HashMap<Key, Vec<u32>> = HashMap::default();
            for (i, k) in row_keys.into_iter().enumerate() {
                by_key.entry(k).or_default().push(i as u32);
            }
            let order: Vec<Key> = by_key.keys().cloned().collect();
            let grouped: Vec<u32> = order.iter().flat_map(|k| by_key[k].iter().copied()).collect();
            let sorted = take_record_batch(&rows, &UInt32Array::from(grouped))?;
            let mut ranges = Vec::with_capacity(order.len());
            let mut at = 0usize;
            for k in &order {
                ranges.push(at..at + by_key[k].len());
                at += by_key[k].len();
                if !self.keys.contains_key(k) {
                    let s = self.empty_state()?;
                    self.keys.insert(k.clone(), s);
                }
            }
            // none of them written yet
            self.hold(&order, &sorted, &ranges, &vec![0; order.len()])?;
        }
        self.ready.clear();
        if let Some(ready) = state.table("ready") {
            let ready = RecordBatch::try_new(Arc::clone(&self.schema), ready.columns().to_vec())?;
            let times: ArrayRef = Arc::new(self.times_of(&ready)?);
            let order = lexsort_to_indices(&[SortColumn { values: Arc::clone(&times), options: None }], None)?;
            let times = datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(&take(&times, &order, None)?).clone();
            self.ready.push((take_record_batch(&ready, &order)?, times));
        }
        self.ready_bytes = self.ready.iter().map(|(b, _)| b.get_array_memory_size()).sum();
        self.kept_rows = self.keys.values().map(kept_rows).sum();
        self.kept_bytes = self.keys.values().map(kept_bytes).sum();
        self.update_state();
        Ok(())
    }
}

/// `array` (a sum of `like`'s type and a last value) as `like`'s type: arrow's decimal sum widens
/// the precision by one; DataFusion's sum keeps its own (wrapping).
fn as_type_of(array: ArrayRef, like: &DataType) -> Result<ArrayRef> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Decimal128Type, Decimal256Type};
    Ok(match (array.data_type(), like) {
        (a, b) if a == b => array,
        (DataType::Decimal128(..), DataType::Decimal128(p, s)) => Arc::new(array.as_primitive::<Decimal128Type>().clone().with_precision_and_scale(*p, *s)?),
        (DataType::Decimal256(..), DataType::Decimal256(p, s)) => Arc::new(array.as_primitive::<Decimal256Type>().clone().with_precision_and_scale(*p, *s)?),
        _ => cast(&array, like)?,
    })
}

fn kept_rows(key: &KeyState) -> usize {
    key.head.num_rows() + key.tail.num_rows() + key.pending.num_rows()
}

fn kept_bytes(key: &KeyState) -> usize {
    let acc: usize = key.acc.iter().flatten().map(|a| a.size()).sum();
    // (no rows: the one empty batch every key shares)
    let rows = [&key.head, &key.tail, &key.pending].into_iter().filter(|b| b.num_rows() > 0).map(|b| b.get_array_memory_size()).sum::<usize>();
    rows + acc
}

/// A running aggregate's values for `rows` (a key's rows to write, in event-time order),
/// accumulated onto `acc`, the key's accumulator over its earlier rows: the rows of one time
/// together when `peers` says which rows have their previous row's time (`RANGE`/`GROUPS`),
/// else a row at a time, as DataFusion's running frames.
fn accumulated(expr: &Arc<dyn WindowExpr>, rows: &RecordBatch, peers: Option<&[bool]>, acc: &mut Box<dyn Accumulator>) -> Result<ArrayRef> {
    let Some(aggregate) = super::aggregate_of(expr) else { return internal_err!("{} is carried as an aggregate and is none", expr.name()) };
    let n = rows.num_rows();
    // (copied: an accumulator may keep what it is given, ARRAY_AGG its arrays, and a slice of
    // the batch would hold all of it)
    let all = UInt32Array::from_iter_values(0..n as u32);
    let args = aggregate
        .expressions()
        .iter()
        .map(|a| Ok(crate::memory::own_bytes(take(&a.evaluate(rows)?.into_array(n)?, &all, None)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut groups: Vec<Range<usize>> = Vec::with_capacity(n);
    for j in 0..n {
        match groups.last_mut() {
            Some(g) if j > 0 && peers.is_some_and(|p| p.get(j).copied().unwrap_or(false)) => g.end = j + 1,
            _ => groups.push(j..j + 1),
        }
    }
    let mut values: Vec<(ScalarValue, usize)> = Vec::with_capacity(groups.len());
    for g in groups {
        acc.update_batch(&args.iter().map(|a| a.slice(g.start, g.len())).collect::<Vec<_>>())?;
        values.push((acc.evaluate()?, g.len()));
    }
    if values.is_empty() {
        return Ok(new_empty_array(expr.field()?.data_type()));
    }
    ScalarValue::iter_to_array(values.into_iter().flat_map(|(v, len)| std::iter::repeat_n(v, len)))
}

/// `values` (a function over a key's new rows alone) shifted by the key's state.
fn shifted(values: &ArrayRef, shift: Shift, key: &KeyState, e: usize) -> Result<ArrayRef> {
    let by_count = |n: u64| -> Result<ArrayRef> {
        let n = ScalarValue::UInt64(Some(n)).cast_to(values.data_type())?;
        as_type_of(add_wrapping(values, &n.to_scalar()?)?, values.data_type())
    };
    let last = key.last.get(e).cloned().unwrap_or(ScalarValue::Null);
    match shift {
        Shift::Rows => by_count(key.rows),
        Shift::Times => by_count(key.times),
        _ if last.is_null() => Ok(Arc::clone(values)),
        Shift::Count => as_type_of(add_wrapping(values, &last.cast_to(values.data_type())?.to_scalar()?)?, values.data_type()),
        Shift::Sum => {
            // a sum still null over the new rows is the last sum
            let last = last.cast_to(values.data_type())?;
            let sum = as_type_of(add_wrapping(values, &last.to_scalar()?)?, values.data_type())?;
            Ok(zip(&is_null(values)?, &last.to_scalar()?, &sum)?)
        }
        Shift::Min | Shift::Max => {
            let last = last.cast_to(values.data_type())?;
            let better = if shift == Shift::Min { lt(&last.to_scalar()?, values)? } else { gt(&last.to_scalar()?, values)? };
            let take_last = or_kleene(&is_null(values)?, &better)?;
            let take_last: BooleanArray = take_last.iter().map(|b| Some(b.unwrap_or(false))).collect();
            Ok(zip(&take_last, &last.to_scalar()?, values)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    use datafusion::prelude::SessionContext;

    /// Rows in time order: key `k`, time `ts` (distinct per key unless `peers`), value `x`
    /// (null every 7th), and `seq` to put rows back in order.
    fn rows(n: usize, keys: usize, peers: bool, seed: u64) -> RecordBatch {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (mut k, mut ts, mut x, mut seq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut t = 1_000i64;
        let mut last_of_key = vec![i64::MIN; keys];
        for i in 0..n {
            let key = (next() % keys as u64) as usize;
            t += (next() % 3) as i64;
            // distinct per key unless peers are wanted
            let time = if peers || t > last_of_key[key] { t } else { last_of_key[key] + 1 };
            t = t.max(time);
            last_of_key[key] = time;
            k.push(format!("k{key}"));
            ts.push(time);
            x.push(if i % 7 == 3 { None } else { Some((next() % 100) as i64 - 20) });
            seq.push(i as i64);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("x", DataType::Int64, true),
            Field::new("seq", DataType::Int64, false),
            // the key again as a dictionary and as long string views; x as a decimal
            Field::new("kd", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
            Field::new("sv", DataType::Utf8View, false),
            Field::new("d", DataType::Decimal128(10, 2), true),
            // and as a float (aggregates of it need no cast, which would be a common expression)
            Field::new("f", DataType::Float64, true),
        ]));
        let kd: datafusion::arrow::array::DictionaryArray<datafusion::arrow::datatypes::Int32Type> = k.iter().map(|s| s.as_str()).collect();
        let sv = datafusion::arrow::array::StringViewArray::from_iter_values(k.iter().map(|s| format!("a key longer than a view: {s}")));
        let d = datafusion::arrow::array::Decimal128Array::from(x.iter().map(|v| v.map(|v| v as i128 * 101)).collect::<Vec<_>>())
            .with_precision_and_scale(10, 2)
            .unwrap();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(k)),
                Arc::new(Int64Array::from(ts)),
                Arc::new(Int64Array::from(x.clone())),
                Arc::new(Int64Array::from(seq)),
                Arc::new(kd),
                Arc::new(sv),
                Arc::new(d),
                Arc::new(datafusion::arrow::array::Float64Array::from(x.iter().map(|v| v.map(|v| v as f64 / 10.0)).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    /// Batches of `all` cut at random times (never between rows of one time, as the watermark
    /// sort releases them).
    fn cut(all: &RecordBatch, seed: u64) -> Vec<RecordBatch> {
        let ts = all.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let mut out = Vec::new();
        let (mut from, mut s) = (0usize, seed);
        for i in 1..all.num_rows() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if ts.value(i) != ts.value(i - 1) && (s >> 33) % 9 == 0 {
                out.push(all.slice(from, i - from));
                from = i;
            }
        }
        out.push(all.slice(from, all.num_rows() - from));
        out
    }

    /// A window operator's functions, input schema and output schema.
    type Node = (Vec<Arc<dyn WindowExpr>>, SchemaRef, SchemaRef);

    /// The window operators of DataFusion's plan of `sql` over `data` (table `t`), bottom up.
    async fn window_nodes(ctx: &SessionContext, sql: &str) -> Vec<Node> {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let mut out = Vec::new();
        fn walk(p: &Arc<dyn ExecutionPlan>, out: &mut Vec<Node>) {
            for c in p.children() {
                walk(c, out);
            }
            if let Some(w) = p.downcast_ref::<BoundedWindowAggExec>() {
                out.push((w.window_expr().to_vec(), w.input().schema(), w.schema()));
            } else if let Some(w) = p.downcast_ref::<WindowAggExec>() {
                out.push((w.window_expr().to_vec(), w.input().schema(), w.schema()));
            }
        }
        walk(&plan, &mut out);
        out
    }

    /// `batch`'s columns of `schema` (the input of a window operator), found by name.
    fn projected(batch: &RecordBatch, schema: &Schema) -> RecordBatch {
        let columns = schema.fields().iter().map(|f| batch.schema().index_of(f.name()).unwrap_or_else(|e| panic!("{e}"))).collect::<Vec<_>>();
        batch.project(&columns).unwrap()
    }

    /// `sql`'s answer by our operator fed `batches` (snapshot and restored through the state's
    /// encoding before batch `restart_at`), and by DataFusion over all rows, both by `seq`.
    async fn both(sql: &str, all: &RecordBatch, batches: &[RecordBatch], restart_at: usize) -> (String, String) {
        both_ordered(sql, all, batches, restart_at, "seq").await
    }

    /// [`both`], the answers ordered by `order_by` (the query's output names).
    async fn both_ordered(sql: &str, all: &RecordBatch, batches: &[RecordBatch], restart_at: usize, order_by: &str) -> (String, String) {
        let ctx = SessionContext::new();
        ctx.register_batch("t", all.clone()).unwrap();
        let want = ctx.sql(&format!("SELECT * FROM ({sql}) ORDER BY {order_by}")).await.unwrap().collect().await.unwrap();
        let nodes = window_nodes(&ctx, sql).await;
        assert!(!nodes.is_empty(), "{sql}: no window operator");
        let mut input: Vec<RecordBatch> = batches.to_vec();
        for (exprs, in_schema, out_schema) in nodes {
            let carries = crate::window_function::carries(&exprs).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let mut keyed = Keyed::try_new(exprs.clone(), carries.clone(), Arc::clone(&in_schema), Arc::clone(&out_schema)).unwrap();
            let mut out = Vec::new();
            for (i, b) in input.iter().enumerate() {
                if i == restart_at / 2 || i == restart_at + 3 {
                    // a checkpoint that the operator goes on from: taking it changes nothing
                    keyed.snapshot().unwrap();
                }
                if i == restart_at {
                    // a restart: the state through a checkpoint's encoding into a new operator
                    let snap = keyed.snapshot().unwrap();
                    let tables = snap
                        .tables
                        .iter()
                        .map(|t| {
                            let (bytes, _) = crate::checkpoint::state::encode(t).unwrap();
                            StateTable { name: t.name.clone(), batch: crate::checkpoint::state::decode(bytes).unwrap(), key_columns: Vec::new() }
                        })
                        .collect();
                    keyed = Keyed::try_new(exprs.clone(), carries.clone(), Arc::clone(&in_schema), Arc::clone(&out_schema)).unwrap();
                    keyed.restore(&OperatorState { meta: snap.meta, tables }).unwrap();
                }
                let b = projected(b, &in_schema);
                out.extend(keyed.push(&b).unwrap());
                // what is held back holds the watermark: each holding key counted once
                let holding = keyed.keys.values().filter(|s| s.pending.num_rows() > 0).count();
                assert_eq!(keyed.held.values().sum::<usize>(), holding, "{sql}: held-back keys counted");
                assert!(keyed.ahead > 0 || holding == 0, "{sql}: rows held back without a function reading ahead");
                assert!(holding > 0 || keyed.ready.is_empty(), "{sql}: rows waiting with nothing held back");
            }
            // the end of the input: every row held back is written
            out.extend(keyed.finish().unwrap());
            assert!(keyed.held.is_empty() && keyed.keys.values().all(|s| s.pending.num_rows() == 0), "{sql}: rows left held back");
            // in event-time order, as the watermark sort gave them (rows after rows held back
            // wait for them)
            let written = concat_batches(&out_schema, &out).unwrap();
            let ts = written.column(written.schema().index_of("ts").unwrap()).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            assert!(ts.values().windows(2).all(|w| w[0] <= w[1]), "{sql}: rows written out of event-time order");
            assert!(keyed.ready.is_empty() && keyed.ready_bytes == 0, "{sql}: rows left waiting");
            // a few rows per key, not the batches they came in (string views hold their data)
            // (aggregates' states apart: MEDIAN's and DISTINCT's hold the key's values)
            let states: usize = keyed.keys.values().flat_map(|s| s.acc.iter().flatten()).map(|a| a.size()).sum();
            let per_key = (keyed.kept_bytes - states) / keyed.keys.len().max(1);
            // (a third batch of rows per key, held back, when a function reads later rows)
            let bound = if keyed.ahead > 0 { 8192 } else { 4096 };
            // (over what a key's empty batches take, more with more columns)
            let empty = kept_bytes(&keyed.empty_state().unwrap());
            assert!(per_key < empty + bound, "{sql}: {per_key} bytes kept per key ({empty} when empty)");
            assert_eq!(keyed.kept_bytes, keyed.keys.values().map(kept_bytes).sum::<usize>(), "{sql}: bytes kept up to date");
            input = out;
        }
        let got_ctx = SessionContext::new();
        let got = concat_batches(&input[0].schema(), &input).unwrap();
        got_ctx.register_batch("o", got).unwrap();
        // the query's own projection on top of the window operators: long names to aliases
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let projection = plan.downcast_ref::<datafusion::physical_plan::projection::ProjectionExec>().expect("a projection on top");
        let outer: Vec<String> = projection
            .expr()
            .iter()
            .map(|p| {
                let column = p.expr.downcast_ref::<datafusion::physical_expr::expressions::Column>().expect("columns");
                format!("\"{}\" AS \"{}\"", column.name().replace('"', "\"\""), p.alias)
            })
            .collect();
        let got = got_ctx.sql(&format!("SELECT * FROM (SELECT {} FROM o) ORDER BY {order_by}", outer.join(", "))).await.unwrap().collect().await.unwrap();
        (pretty_format_batches(&got).unwrap().to_string(), pretty_format_batches(&want).unwrap().to_string())
    }

    const W: &str = "PARTITION BY k ORDER BY ts";

    /// Fails on the first line where `got` and `want` (printed tables) differ, showing both.
    /// The cells of `STDDEV` and `VAR` (columns `sd` and `vp`) may differ in their last digits
    /// (1e-12 relative): after a checkpoint they go on from their state (count, mean, squared
    /// deviations) merged into a new accumulator, which rounds otherwise than one accumulator
    /// fed every row. Every other cell, floating-point sums and averages too, is exact.
    fn same(got: &str, want: &str, what: &str) {
        let header: Vec<String> = want.lines().nth(1).unwrap_or_default().split('|').map(|c| c.trim().to_string()).collect();
        let cells_match = |g: &str, w: &str| {
            g == w
                || g.split('|').count() == w.split('|').count()
                    && g.split('|').zip(w.split('|')).enumerate().all(|(c, (a, b))| {
                        let (a, b) = (a.trim(), b.trim());
                        a == b
                            || header.get(c).is_some_and(|h| h == "sd" || h == "vp")
                                && matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if (x - y).abs() <= 1e-12 * x.abs().max(y.abs()))
                    })
        };
        if let Some((i, (g, w))) = got.lines().zip(want.lines()).enumerate().find(|(_, (g, w))| !cells_match(g, w)) {
            panic!("{what}: line {i} differs\n got: {g}\nwant: {w}\n(header: {})", want.lines().nth(1).unwrap_or_default());
        }
        assert_eq!(got.lines().count(), want.lines().count(), "{what}: lines");
    }

    /// `state.ttl`: a key no row has come for in that long is forgotten, and starts afresh;
    /// the time of each key's last row goes through a checkpoint.
    #[tokio::test]
    async fn idle_keys_expire_and_start_afresh() {
        let ctx = SessionContext::new();
        let all = rows(40, 2, false, 3);
        ctx.register_batch("t", all.clone()).unwrap();
        let sql = format!("SELECT k, ts, x, seq, ROW_NUMBER() OVER ({W}) AS rn, LAG(x) OVER ({W}) AS l FROM t");
        let (exprs, in_schema, out_schema) = window_nodes(&ctx, &sql).await.remove(0);
        let carries = crate::window_function::carries(&exprs).unwrap();
        let new = || {
            let mut k = Keyed::try_new(exprs.clone(), carries.clone(), Arc::clone(&in_schema), Arc::clone(&out_schema)).unwrap();
            k.state_ttl = Some(std::time::Duration::from_millis(300));
            k
        };
        let project = |b: &RecordBatch| projected(b, &in_schema);
        let rn = |out: &RecordBatch| -> Vec<u64> {
            let i = out.schema().fields().iter().position(|f| f.name().starts_with("row_number")).unwrap();
            out.column(i).as_any().downcast_ref::<UInt64Array>().unwrap().values().to_vec()
        };
        let first = all.slice(0, 20);
        let mut keyed = new();
        let out = keyed.push(&project(&first)).unwrap().unwrap();
        assert_eq!(rn(&out).iter().filter(|&&n| n == 1).count(), 2, "two keys numbered from 1: {:?}", rn(&out));
        // through a checkpoint, still within the TTL: numbering goes on
        let snap = keyed.snapshot().unwrap();
        let mut keyed = new();
        keyed.restore(&snap).unwrap();
        let out = keyed.push(&project(&all.slice(20, 5))).unwrap().unwrap();
        assert!(rn(&out).iter().all(|&n| n > 1), "within the TTL: {:?}", rn(&out));
        // idle past the TTL: every key starts afresh
        std::thread::sleep(std::time::Duration::from_millis(450));
        let out = keyed.push(&project(&all.slice(25, 15))).unwrap().unwrap();
        let numbers = rn(&out);
        assert_eq!(numbers.iter().filter(|&&n| n == 1).count(), 2, "each of the two keys starts at 1 again: {numbers:?}");
        assert_eq!(keyed.expired.value(), 2);
    }

    /// Keys with no rows kept or held share one empty batch: an empty batch per key and
    /// column cost more than the state itself (360 MB over 100 000 Nexmark bidders), and kept
    /// and held rows are copies, not slices holding the batch they came in.
    #[tokio::test]
    async fn keys_without_rows_share_one_empty_batch() {
        let ctx = SessionContext::new();
        let all = rows(4_000, 2_000, false, 9);
        ctx.register_batch("t", all.clone()).unwrap();
        let sql = format!("SELECT k, ts, x, seq, kd, sv, d, f, LAG(x) OVER ({W}) AS l, LEAD(x) OVER ({W}) AS n, AVG(x) OVER ({W}) AS a FROM t");
        let (exprs, in_schema, out_schema) = window_nodes(&ctx, &sql).await.remove(0);
        let carries = crate::window_function::carries(&exprs).unwrap();
        let mut keyed = Keyed::try_new(exprs, carries, Arc::clone(&in_schema), out_schema).unwrap();
        let project = |b: &RecordBatch| projected(b, &in_schema);
        for b in cut(&all, 3) {
            keyed.push(&project(&b)).unwrap();
        }
        assert!(keyed.keys.len() > 1_500, "{} keys", keyed.keys.len());
        let shared = |b: &RecordBatch| b.num_rows() == 0 && b.columns().iter().zip(keyed.empty.columns()).all(|(a, e)| Arc::ptr_eq(a, e));
        for s in keyed.keys.values() {
            assert!(shared(&s.head), "a key's empty first rows are the shared batch");
            assert!(s.tail.num_rows() == 1 || shared(&s.tail));
            assert!(s.pending.num_rows() == 1 || shared(&s.pending));
        }
        // a key's one kept row and one held row: a row's bytes, not a batch's
        let per_key = keyed.kept_bytes / keyed.keys.len();
        assert!(per_key < 2_048, "{per_key} bytes per key");
    }

    /// A kept row's string view holds its own bytes, not the batch's buffers it came from.
    #[test]
    fn kept_string_views_hold_only_their_own_bytes() {
        let long: Vec<String> = (0..10_000).map(|i| format!("a string longer than a view's twelve bytes, {i}")).collect();
        let views = datafusion::arrow::array::StringViewArray::from_iter_values(long.iter());
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(views)]).unwrap();
        let one = take_record_batch(&batch, &UInt32Array::from(vec![7u32])).unwrap();
        assert!(one.get_array_memory_size() > 100_000, "a taken view shares the batch's buffers: {}", one.get_array_memory_size());
        let kept = crate::memory::own_batch(one).unwrap();
        assert!(kept.get_array_memory_size() < 4_096, "{}", kept.get_array_memory_size());
        assert_eq!(datafusion::arrow::array::AsArray::as_string_view(kept.column(0)).value(0), long[7]);
    }

    #[tokio::test]
    async fn carried_functions_equal_datafusions_batch_answer_across_batches_and_a_restart() {
        let queries = [
            format!("SELECT k, ts, x, seq, LAG(x) OVER ({W}) AS l1, LAG(x, 3) OVER ({W}) AS l3, ROW_NUMBER() OVER ({W}) AS rn, FIRST_VALUE(x) OVER ({W}) AS fv, NTH_VALUE(x, 2) OVER ({W}) AS nv, LAST_VALUE(x) OVER ({W}) AS lv FROM t"),
            format!("SELECT k, ts, x, seq, SUM(x) OVER ({W}) AS s, COUNT(x) OVER ({W}) AS c, COUNT(*) OVER ({W}) AS cs, COUNT(sv) OVER ({W}) AS csv, COUNT(NULL) OVER ({W}) AS cn, SUM(f) OVER ({W}) AS sf, \
             SUM(f) OVER ({W} ROWS UNBOUNDED PRECEDING) AS sfr, MIN(x) OVER ({W}) AS mn, MAX(x) OVER ({W}) AS mx, RANK() OVER ({W}) AS r, DENSE_RANK() OVER ({W}) AS dr FROM t"),
            format!("SELECT k, ts, x, seq, AVG(x) OVER ({W} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS a5, SUM(x) OVER ({W} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3, MAX(x) OVER ({W} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS m2 FROM t"),
            "SELECT k, ts, x, seq, ROW_NUMBER() OVER (ORDER BY ts) AS rn, SUM(x) OVER (ORDER BY ts) AS s, LAG(x, 2) OVER (ORDER BY ts) AS l2 FROM t".to_string(),
            // a dictionary key, string views kept, a decimal sum, frames ending before the row
            "SELECT k, ts, x, seq, SUM(d) OVER (PARTITION BY kd ORDER BY ts) AS sd, LAG(sv) OVER (PARTITION BY kd ORDER BY ts) AS lsv, \
             FIRST_VALUE(x) OVER (PARTITION BY kd ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING) AS f2, \
             NTH_VALUE(x, 2) OVER (PARTITION BY kd ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS n2, \
             LAST_VALUE(x) OVER (PARTITION BY kd ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS l1, \
             SUM(x) OVER (PARTITION BY kd ORDER BY ts ROWS BETWEEN 3 PRECEDING AND 1 PRECEDING) AS s31, LAG(x, 2, -1) OVER (PARTITION BY kd ORDER BY ts) AS lagd FROM t"
                .to_string(),
            // functions reading later rows: rows held back until enough later rows of the key
            format!(
                "SELECT k, ts, x, seq, LEAD(x) OVER ({W}) AS ld1, LEAD(x, 3) OVER ({W}) AS ld3, LEAD(sv, 2) OVER ({W}) AS lsv, LEAD(x, 2, -1) OVER ({W}) AS ldd, \
                 LAG(x, -2) OVER ({W}) AS lagneg, LAG(x) OVER ({W}) AS l1, ROW_NUMBER() OVER ({W}) AS rn, SUM(x) OVER ({W}) AS s, \
                 RANK() OVER ({W}) AS r, DENSE_RANK() OVER ({W}) AS dr, FIRST_VALUE(x) OVER ({W}) AS fv FROM t"
            ),
            format!(
                "SELECT k, ts, x, seq, SUM(x) OVER ({W} ROWS BETWEEN 2 PRECEDING AND 3 FOLLOWING) AS s6, \
                 AVG(x) OVER ({W} ROWS BETWEEN CURRENT ROW AND 2 FOLLOWING) AS a3, MAX(d) OVER ({W} ROWS BETWEEN 1 FOLLOWING AND 2 FOLLOWING) AS m12, \
                 FIRST_VALUE(x) OVER ({W} ROWS BETWEEN 1 FOLLOWING AND 2 FOLLOWING) AS f12, \
                 LAST_VALUE(x) OVER ({W} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING) AS lv1, \
                 NTH_VALUE(x, 2) OVER ({W} ROWS BETWEEN UNBOUNDED PRECEDING AND 2 FOLLOWING) AS nv2, COUNT(x) OVER ({W} ROWS BETWEEN 4 PRECEDING AND 1 FOLLOWING) AS c FROM t"
            ),
            "SELECT k, ts, x, seq, LEAD(x, 2) OVER (ORDER BY ts) AS ld2, ROW_NUMBER() OVER (ORDER BY ts) AS rn, SUM(x) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS s3 FROM t".to_string(),
            // running aggregates no shift gives: the aggregate's state carried, beside a
            // function that holds rows back
            format!(
                "SELECT k, ts, x, seq, AVG(x) OVER ({W}) AS a, AVG(d) OVER ({W}) AS ad, BIT_XOR(x) OVER ({W}) AS bx, MEDIAN(f) OVER ({W}) AS md, \
                 COUNT(DISTINCT x) OVER ({W}) AS cd, SUM(DISTINCT x) OVER ({W}) AS sdx, \
                 AVG(f) OVER ({W} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ar, STDDEV(f) OVER ({W}) AS sd, \
                 VAR_POP(f) OVER (PARTITION BY kd ORDER BY ts ROWS UNBOUNDED PRECEDING) AS vp, LEAD(x) OVER ({W}) AS ld FROM t"
            ),
            "SELECT k, ts, x, seq, AVG(x) OVER (ORDER BY ts) AS a, ARRAY_AGG(x) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) AS xs FROM t".to_string(),
        ];
        for (q, sql) in queries.iter().enumerate() {
            // the queries without PARTITION BY order by ts alone: distinct times for all rows
            let all = if q == 9 {
                rows(300, 1, false, 11 + q as u64)
            } else if q == 3 || q == 7 {
                rows(3_000, 1, false, 11 + q as u64)
            } else {
                rows(3_000, 23, false, 7 + q as u64)
            };
            for seed in [1u64, 2, 3] {
                let batches = cut(&all, seed);
                assert!(batches.len() > 20, "{}", batches.len());
                let (got, want) = both(sql, &all, &batches, batches.len() / 2).await;
                same(&got, &want, &format!("{sql} (cut {seed})"));
            }
        }
    }

    /// Rows of one time in one key: ranks, dense ranks and running aggregates over the
    /// default RANGE frame include every peer, as in one batch.
    #[tokio::test]
    async fn peers_of_one_time_are_ranked_and_summed_together() {
        let all = rows(3_000, 5, true, 5);
        let sql = format!(
            "SELECT k, ts, x, seq, RANK() OVER ({W}) AS r, DENSE_RANK() OVER ({W}) AS dr, SUM(x) OVER ({W}) AS s, COUNT(*) OVER ({W}) AS c, MIN(x) OVER ({W}) AS mn, \
             AVG(x) OVER ({W}) AS a, COUNT(DISTINCT x) OVER ({W}) AS cd, SUM(f) OVER ({W}) AS sf FROM t"
        );
        for seed in [4u64, 5] {
            let batches = cut(&all, seed);
            let (got, want) = both(&sql, &all, &batches, batches.len() / 3).await;
            same(&got, &want, &format!("{sql} (cut {seed})"));
        }
        // with functions reading later rows, rows held back are never cut between peers. Only
        // functions of a row's place and time: which of the peers comes first is not defined
        let sql = format!(
            "SELECT k, ts, RANK() OVER ({W}) AS r, DENSE_RANK() OVER ({W}) AS dr, COUNT(*) OVER ({W}) AS c, ROW_NUMBER() OVER ({W}) AS rn, \
             LEAD(ts, 2) OVER ({W}) AS l2, LAG(ts) OVER ({W}) AS b1, MAX(ts) OVER ({W} ROWS BETWEEN 1 PRECEDING AND 3 FOLLOWING) AS m FROM t"
        );
        for seed in [6u64, 7] {
            let batches = cut(&all, seed);
            let (got, want) = both_ordered(&sql, &all, &batches, batches.len() / 3, "k, ts, rn").await;
            same(&got, &want, &format!("{sql} (cut {seed})"));
        }
    }

    /// Rows held back hold the watermark handed on at the first of them; writing them (at the
    /// end, or when their key has been idle past `state.ttl`) lets it go.
    #[tokio::test]
    async fn rows_held_back_hold_the_watermark_until_written() {
        let ctx = SessionContext::new();
        let all = rows(40, 2, false, 3);
        ctx.register_batch("t", all.clone()).unwrap();
        let sql = format!("SELECT k, ts, x, seq, LEAD(x) OVER ({W}) AS nx FROM t");
        let (exprs, in_schema, out_schema) = window_nodes(&ctx, &sql).await.remove(0);
        let carries = crate::window_function::carries(&exprs).unwrap();
        let project = |b: &RecordBatch| projected(b, &in_schema);
        let column = |b: &RecordBatch, name: &str| b.column(b.schema().index_of(name).unwrap()).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let (ts, k) = (column(&all, "ts"), all.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone());
        // each key's last row among the first 20 waits for its next; rows after the first of
        // them wait too, so that the output stays in event-time order
        let last_of = |key: &str| (0..20).filter(|&i| k.value(i) == key).max().unwrap();
        let held = [last_of("k0"), last_of("k1")];
        let first = held.iter().map(|&i| ts.value(i)).min().unwrap();
        let mut keyed = Keyed::try_new(exprs.clone(), carries.clone(), Arc::clone(&in_schema), Arc::clone(&out_schema)).unwrap();
        keyed.state_ttl = Some(std::time::Duration::from_millis(300));
        let mut out = vec![keyed.push(&project(&all.slice(0, 20))).unwrap().unwrap()];
        let mut released = column(&out[0], "seq").values().to_vec();
        released.sort();
        assert_eq!(released, (0..20).filter(|&i| ts.value(i as usize) < first).collect::<Vec<i64>>());
        assert_eq!(keyed.watermark(i64::MAX), first);
        assert_eq!(keyed.watermark(first - 5), first - 5, "an earlier watermark goes on as it is");
        // through a checkpoint: the same rows held and waiting, the same watermark
        let snap = keyed.snapshot().unwrap();
        let mut keyed = Keyed::try_new(exprs.clone(), carries.clone(), Arc::clone(&in_schema), Arc::clone(&out_schema)).unwrap();
        keyed.state_ttl = Some(std::time::Duration::from_millis(300));
        keyed.restore(&snap).unwrap();
        assert_eq!(keyed.watermark(i64::MAX), first);
        // idle past the TTL: the held rows are written (no later row: LEAD null), found at a
        // tick between batches
        std::thread::sleep(std::time::Duration::from_millis(450));
        out.extend(keyed.tick().unwrap());
        assert_eq!(keyed.expired.value(), 2);
        assert_eq!(keyed.watermark(i64::MAX), i64::MAX, "nothing held");
        out.extend(keyed.push(&project(&all.slice(20, 20))).unwrap());
        out.extend(keyed.finish().unwrap());
        assert_eq!(keyed.watermark(i64::MAX), i64::MAX);
        let got = concat_batches(&out_schema, &out).unwrap();
        let nx = got.column(got.num_columns() - 1).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let (seq, got_ts) = (column(&got, "seq"), column(&got, "ts"));
        assert!(got_ts.values().windows(2).all(|w| w[0] <= w[1]), "in event-time order: {:?}", got_ts.values());
        let mut seen: Vec<i64> = seq.values().to_vec();
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<i64>>(), "every row once");
        for i in 0..got.num_rows() {
            if held.contains(&(seq.value(i) as usize)) {
                assert!(nx.is_null(i), "an expired key's row saw no later row");
            }
        }
        assert_eq!(keyed.ready_bytes, 0);
    }

    #[tokio::test]
    async fn functions_that_read_later_rows_or_the_whole_partition_are_not_carried() {
        let ctx = SessionContext::new();
        ctx.register_batch("t", rows(10, 2, false, 1)).unwrap();
        for (f, why) in [
            ("AVG(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)", "ending before the current row"),
            ("COUNT(DISTINCT x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)", "DISTINCT in a window aggregate over a frame"),
            ("SUM(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND UNBOUNDED FOLLOWING)", "UNBOUNDED FOLLOWING"),
            ("SUM(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING)", "ending after the current row"),
            ("SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN CURRENT ROW AND 5 FOLLOWING)", "RANGE or GROUPS frame ending after"),
            ("SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN 5 PRECEDING AND CURRENT ROW)", "RANGE or GROUPS frame with a bounded start"),
            ("CUME_DIST()", "needs the whole partition"),
            ("MIN(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)", "ending before the current row"),
            ("LAST_VALUE(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND 5 PRECEDING)", "RANGE or GROUPS frame ending before"),
        ] {
            let over = if f.contains(" OVER ") { f.to_string() } else { format!("{f} OVER ({W})") };
            let nodes = window_nodes(&ctx, &format!("SELECT k, ts, x, seq, {over} AS v FROM t")).await;
            let err = crate::window_function::carries(&nodes[0].0).unwrap_err();
            assert!(err.contains(why), "{f}: {err}");
        }
    }
}
