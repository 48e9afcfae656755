//! A `GROUP BY` of the build side's columns over an inner hash join, aggregated in the join
//! itself (a "groupjoin"): each build row's group is found once, when the build side is read,
//! and every probe row that meets it is added to that group's accumulators, without the joined
//! rows being made or hashed again by the aggregate.
//!
//! ```sql
//! -- Nexmark q4's inner query: the closing price of each auction
//! SELECT MAX(b.price) AS final, a.category
//! FROM auction a JOIN bid b ON a.id = b.auction
//! WHERE b.date_time BETWEEN a.date_time AND a.expires
//! GROUP BY a.id, a.category
//! -- AggregateExec(gby=[id, category], aggr=[max(price)]) ← HashJoinExec(on id = auction, filter)
//! -- becomes GroupJoinExec: 0.6M auctions grouped once; 9.2M bids probed, their prices added
//! -- to their auction's group by its number, as read (no repartition, no second hash table)
//! ```
//!
//! DataFusion's plan hashes every bid into a partition for the join, copies each joined row's
//! auction columns out of the build side, and then hashes `(id, category)` of every joined row
//! again to find its group: a fifth of q4's time went to the aggregate's hash table. Here the
//! build side (read whole, by one task, as a collected hash join builds it) is interned into
//! groups by its group columns: a build row's group is the same for every probe row it meets,
//! so a match needs only the row's number. The probe side is read as it comes, in as many
//! partitions as it has; they update one table, and the last partition to finish emits it:
//! the groups met by at least one joined row (an inner join gives no row for the others).
//!
//! It replaces an aggregate that emits final values (`Single`, or `SinglePartitioned` over the
//! join's partitions) or partial states (`Partial`, merged above) directly over an inner equi-join on one integer key, bounded on both
//! sides, when the aggregate groups by build-side columns alone (no grouping sets, no
//! `LIMIT`), its aggregates need no order of their input, and the sources' row counts do not
//! show a build side larger than the probe side. Join filters (q4's time band) and the
//! aggregates' `FILTER (WHERE …)` are evaluated on the joined pairs. Its output is in no
//! particular partition, so the planner puts it only where nothing above relies on the
//! aggregate's hash partitioning (see [`super::SmallBuildSideRule`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, JoinSide, JoinType, NullEquality, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};

/// Joined pairs evaluated at a time: a probe batch whose rows meet many build rows each is
/// aggregated in pieces of about this many pairs.
const PAIRS_AT_A_TIME: usize = 16_384;

/// What the operator computes, fixed at planning.
#[derive(Debug)]
struct Spec {
    /// The build side's key column and the probe side's.
    build_key: usize,
    probe_key: usize,
    /// The join's own filter (over its intermediate schema: build columns, then probe columns).
    filter: Option<JoinFilter>,
    /// The build side's columns the aggregate groups by, and their schema.
    group_columns: Vec<usize>,
    group_schema: SchemaRef,
    /// The aggregates, their arguments and `FILTER` clauses over the columns in `inputs`.
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    agg_filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The joined columns the aggregates read (side, column), in the schema `inputs_schema`.
    inputs: Vec<(JoinSide, usize)>,
    inputs_schema: SchemaRef,
    /// Partial states out (an aggregate above merges them), not final values.
    partial: bool,
    /// How it was planned, for `EXPLAIN`.
    shown: String,
}

/// The build side, read and grouped: shared by every probe partition.
struct Built {
    /// The build side's rows, in one batch.
    rows: RecordBatch,
    /// The first build row of each key, and the next of the same key for each row.
    index: KeyIndex,
    next: Vec<u32>,
    /// Each build row's group.
    group_of: Vec<u32>,
    groups: usize,
    /// The groups' key values, the accumulators, and which groups a joined row has met.
    table: Mutex<Table>,
}

struct Table {
    values: Box<dyn GroupValues>,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    met: Vec<bool>,
    memory: crate::memory::StateMemory,
    /// Bytes of the build side's rows and index, counted once.
    fixed: usize,
}

/// The first build row of each key: by `key - min` when the keys are dense, else hashed.
enum KeyIndex {
    Dense { min: i64, heads: Vec<u32> },
    Hashed(HashMap<i64, u32>),
}

impl KeyIndex {
    fn first(&self, key: i64) -> u32 {
        match self {
            KeyIndex::Dense { min, heads } => key.checked_sub(*min).and_then(|d| usize::try_from(d).ok()).and_then(|d| heads.get(d)).copied().unwrap_or(NONE),
            KeyIndex::Hashed(m) => m.get(&key).copied().unwrap_or(NONE),
        }
    }

    /// The first row of `key`, to be set (`key` is within a dense index's span: it was built
    /// from these keys).
    fn slot(&mut self, key: i64) -> &mut u32 {
        match self {
            KeyIndex::Dense { min, heads } => &mut heads[(key - *min) as usize],
            KeyIndex::Hashed(m) => m.entry(key).or_insert(NONE),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KeyIndex::Dense { heads, .. } => heads.capacity() * 4,
            KeyIndex::Hashed(m) => m.capacity() * 16,
        }
    }
}

/// No row.
const NONE: u32 = u32::MAX;

type BuildResult = std::result::Result<Arc<Built>, Arc<DataFusionError>>;

/// Built once, by whichever partition asks first; the others wait for the same.
struct Once {
    build: Mutex<Option<Shared<BoxFuture<'static, BuildResult>>>>,
    /// Probe partitions still reading: the last to finish emits the groups (and lets the
    /// build go: executed again, the operator reads its build side again).
    remaining: AtomicUsize,
    partitions: usize,
}

/// An aggregate of build-side groups over an inner hash join, computed in the join (module
/// doc). `SELECT MAX(b.price), a.category FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.category`
pub struct GroupJoinExec {
    build: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
    spec: Arc<Spec>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    once: Arc<Once>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for GroupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupJoinExec({})", self.spec.shown)
    }
}

impl GroupJoinExec {
    fn new(build: Arc<dyn ExecutionPlan>, probe: Arc<dyn ExecutionPlan>, spec: Arc<Spec>, schema: SchemaRef) -> Self {
        let partitions = probe.output_partitioning().partition_count();
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        let once = Arc::new(Once { build: Mutex::new(None), remaining: AtomicUsize::new(partitions), partitions });
        Self { build, probe, spec, schema, props, once, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The shared build, started by the first partition to ask.
    fn built(&self, context: &Arc<TaskContext>) -> Shared<BoxFuture<'static, BuildResult>> {
        let mut slot = self.once.build.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = slot.as_ref() {
            return f.clone();
        }
        let (plan, spec, context) = (Arc::clone(&self.build), Arc::clone(&self.spec), Arc::clone(context));
        let f = async move { build(plan, spec, context).await.map(Arc::new).map_err(Arc::new) }.boxed().shared();
        *slot = Some(f.clone());
        f
    }
}

impl DisplayAs for GroupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "GroupJoinExec: {}", self.spec.shown)
    }
}

impl ExecutionPlan for GroupJoinExec {
    fn name(&self) -> &str {
        "GroupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.build, &self.probe]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [build, probe] =
            <[Arc<dyn ExecutionPlan>; 2]>::try_from(children).map_err(|_| DataFusionError::Internal("GroupJoinExec takes two inputs".into()))?;
        Ok(Arc::new(Self::new(build, probe, Arc::clone(&self.spec), Arc::clone(&self.schema))))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(Arc::clone(&self.build), Arc::clone(&self.probe), Arc::clone(&self.spec), Arc::clone(&self.schema))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let built = self.built(&context);
        let probe = self.probe.execute(partition, Arc::clone(&context))?;
        let (spec, once, schema) = (Arc::clone(&self.spec), Arc::clone(&self.once), Arc::clone(&self.schema));
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let batch_size = context.session_config().batch_size().max(1);
        let out = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let built = built.await.map_err(DataFusionError::Shared)?;
            let mut probe = probe;
            while let Some(batch) = probe.next().await {
                let batch = batch?;
                let _timer = metrics.elapsed_compute().timer();
                add(&built, &spec, &batch)?;
            }
            // the last partition to finish emits every group
            let batches = if once.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _timer = metrics.elapsed_compute().timer();
                let batches = emit(&built, &spec, &out, batch_size);
                *once.build.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                once.remaining.store(once.partitions, Ordering::Release);
                batches?
            } else {
                Vec::new()
            };
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            metrics.record_output(rows);
            metrics.done();
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// A key column as 64-bit integers (its type is an integer one of at most 64 bits: checked at
/// planning).
fn keys_of(column: &ArrayRef) -> Result<ArrayRef> {
    Ok(if column.data_type() == &DataType::Int64 { Arc::clone(column) } else { cast(column, &DataType::Int64)? })
}

/// Reads the build side whole, indexes its keys and interns its rows' groups.
async fn build(plan: Arc<dyn ExecutionPlan>, spec: Arc<Spec>, context: Arc<TaskContext>) -> Result<Built> {
    let schema = plan.schema();
    let batches: Vec<RecordBatch> = match plan.output_partitioning().partition_count() {
        0 => Vec::new(),
        1 => plan.execute(0, Arc::clone(&context))?.try_collect().await?,
        _ => Arc::new(CoalescePartitionsExec::new(plan)).execute(0, Arc::clone(&context))?.try_collect().await?,
    };
    let rows = concat_batches(&schema, &batches)?;
    drop(batches);
    let n = rows.num_rows();
    if n >= NONE as usize {
        return Err(DataFusionError::ResourcesExhausted(format!("GroupJoinExec: a build side of {n} rows is more than it can number")));
    }
    let keys = keys_of(rows.column(spec.build_key))?;
    let keys = keys.as_primitive::<Int64Type>();
    let mut next = vec![NONE; n];
    let keyed: Vec<(usize, i64)> = (0..n).filter(|&i| keys.is_valid(i)).map(|i| (i, keys.value(i))).collect();
    let (min, max) = keyed.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &(_, k)| (lo.min(k), hi.max(k)));
    let span = (max as i128) - (min as i128) + 1;
    let mut index = if min <= max && span <= (2 * n as i128 + 1024) {
        KeyIndex::Dense { min, heads: vec![NONE; span as usize] }
    } else {
        KeyIndex::Hashed(HashMap::with_capacity(n))
    };
    // (rows are put at the front of their key's list from the last, so each list is in order)
    for &(i, k) in keyed.iter().rev() {
        let slot = index.slot(k);
        next[i] = *slot;
        *slot = i as u32;
    }
    drop(keyed);
    let mut values = new_group_values(Arc::clone(&spec.group_schema), &GroupOrdering::None)?;
    let cols: Vec<ArrayRef> = spec.group_columns.iter().map(|&i| Arc::clone(rows.column(i))).collect();
    let mut ids = Vec::with_capacity(n);
    if n > 0 {
        values.intern(&cols, &mut ids)?;
    }
    let groups = values.len();
    let group_of: Vec<u32> = ids.into_iter().map(|g| g as u32).collect();
    let accs = spec.aggs.iter().map(crate::window::groups::AggregateSpec::accumulator).collect::<Result<Vec<_>>>()?;
    let fixed = rows.get_array_memory_size() + index.bytes() + next.capacity() * 4 + group_of.capacity() * 4;
    let mut memory = crate::memory::StateMemory::new(&context, "GroupJoinExec (the build side of a join and its groups)", "a smaller build side");
    memory.account(fixed + values.size() + groups)?;
    Ok(Built { rows, index, next, group_of, groups, table: Mutex::new(Table { values, accs, met: vec![false; groups], memory, fixed }) })
}

/// Adds the pairs `batch` (of the probe side) makes with the build side to their groups.
fn add(built: &Built, spec: &Spec, batch: &RecordBatch) -> Result<()> {
    if batch.num_rows() == 0 || built.groups == 0 {
        return Ok(());
    }
    let keys = keys_of(batch.column(spec.probe_key))?;
    let keys = keys.as_primitive::<Int64Type>();
    let (mut builds, mut probes): (Vec<u32>, Vec<u32>) = (Vec::with_capacity(batch.num_rows()), Vec::with_capacity(batch.num_rows()));
    for (p, key) in keys.iter().enumerate() {
        let Some(key) = key else { continue };
        let mut b = built.index.first(key);
        while b != NONE {
            builds.push(b);
            probes.push(p as u32);
            b = built.next[b as usize];
        }
        if builds.len() >= PAIRS_AT_A_TIME {
            pairs(built, spec, batch, std::mem::take(&mut builds), std::mem::take(&mut probes))?;
        }
    }
    if !builds.is_empty() {
        pairs(built, spec, batch, builds, probes)?;
    }
    Ok(())
}

/// The column of the joined pairs `(builds, probes)` taken from `side`'s column `i`.
fn joined(built: &Built, batch: &RecordBatch, side: JoinSide, i: usize, builds: &UInt32Array, probes: &UInt32Array) -> Result<ArrayRef> {
    Ok(match side {
        JoinSide::Left => take(built.rows.column(i).as_ref(), builds, None)?,
        _ => take(batch.column(i).as_ref(), probes, None)?,
    })
}

/// Adds joined pairs (build row, probe row) that pass the join's filter to their groups.
fn pairs(built: &Built, spec: &Spec, batch: &RecordBatch, builds: Vec<u32>, probes: Vec<u32>) -> Result<()> {
    let (mut builds, mut probes) = (UInt32Array::from(builds), UInt32Array::from(probes));
    if let Some(f) = &spec.filter {
        let cols = f.column_indices().iter().map(|c| joined(built, batch, c.side, c.index, &builds, &probes)).collect::<Result<Vec<_>>>()?;
        let opts = RecordBatchOptions::new().with_row_count(Some(builds.len()));
        let pairs = RecordBatch::try_new_with_options(Arc::clone(f.schema()), cols, &opts)?;
        let keep = f.expression().evaluate(&pairs)?.into_array(pairs.num_rows())?;
        let keep = keep.as_boolean();
        let keep = if keep.null_count() > 0 { prep_null_mask_filter(keep) } else { keep.clone() };
        if keep.true_count() < keep.len() {
            builds = filter(&builds, &keep)?.as_primitive().clone();
            probes = filter(&probes, &keep)?.as_primitive().clone();
        }
    }
    let n = builds.len();
    if n == 0 {
        return Ok(());
    }
    let groups: Vec<usize> = builds.values().iter().map(|&b| built.group_of[b as usize] as usize).collect();
    let cols = spec.inputs.iter().map(|&(side, i)| joined(built, batch, side, i, &builds, &probes)).collect::<Result<Vec<_>>>()?;
    let opts = RecordBatchOptions::new().with_row_count(Some(n));
    let inputs = RecordBatch::try_new_with_options(Arc::clone(&spec.inputs_schema), cols, &opts)?;
    let args = spec.args.iter().map(|a| a.iter().map(|e| e.evaluate(&inputs)?.into_array(n)).collect::<Result<Vec<_>>>()).collect::<Result<Vec<_>>>()?;
    let filters =
        spec.agg_filters.iter().map(|f| f.as_ref().map(|f| f.evaluate(&inputs)?.into_array(n)).transpose()).collect::<Result<Vec<Option<ArrayRef>>>>()?;
    let mut table = built.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Table { accs, met, values, memory, fixed } = &mut *table;
    for ((acc, args), f) in accs.iter_mut().zip(&args).zip(&filters) {
        acc.update_batch(args, &groups, f.as_ref().map(|f| f.as_boolean()), built.groups)?;
    }
    if met.len() != built.groups {
        return internal_err!("GroupJoinExec: its groups were emitted while pairs were still added");
    }
    for &g in &groups {
        met[g] = true;
    }
    let state: usize = accs.iter().map(|a| a.size()).sum();
    memory.account(*fixed + values.size() + met.len() + state)
}

/// The groups met by at least one joined row, as the aggregate emits them (final values, or
/// partial states for an aggregate above to merge), in batches of `batch_size` rows.
fn emit(built: &Built, spec: &Spec, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
    let mut table = built.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // (an accumulator has as many groups as the build side once it has been updated at all)
    if !table.met.iter().any(|m| *m) {
        return Ok(Vec::new());
    }
    let mut cols = table.values.emit(EmitTo::All)?;
    for acc in table.accs.iter_mut() {
        if spec.partial {
            cols.extend(acc.state(EmitTo::All)?);
        } else {
            cols.push(acc.evaluate(EmitTo::All)?);
        }
    }
    let met = BooleanArray::from(std::mem::take(&mut table.met));
    let _ = table.memory.account(0);
    let cols = if met.true_count() < met.len() { cols.iter().map(|c| filter(c.as_ref(), &met)).collect::<std::result::Result<Vec<_>, _>>()? } else { cols };
    let all = RecordBatch::try_new(Arc::clone(schema), cols)?;
    let n = all.num_rows();
    Ok((0..n).step_by(batch_size).map(|at| all.slice(at, batch_size.min(n - at))).collect())
}

/// Whether `t` is an integer type of at most 64 bits, compared as such once cast to `BIGINT`.
fn integer_key(t: &DataType) -> bool {
    matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32)
}

/// `agg` computed in the join below it, with `build` and `probe` its sides as they are to be
/// read (the partitioned join's hash repartitions taken off by the caller); None when it does
/// not qualify (module doc).
pub(crate) fn group_join(agg: &AggregateExec, build: Arc<dyn ExecutionPlan>, probe: Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = agg.input().downcast_ref::<HashJoinExec>() else { return Ok(None) };
    let partial = match agg.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => false,
        AggregateMode::Partial => true,
        _ => return Ok(None),
    };
    if !agg.group_expr().is_single() || agg.group_expr().expr().is_empty() || agg.limit_options().is_some() {
        return Ok(None);
    }
    if agg.properties().output_ordering().is_some() || agg.aggr_expr().iter().any(|a| !a.order_bys().is_empty()) {
        return Ok(None);
    }
    if *join.join_type() != JoinType::Inner || join.null_equality() != NullEquality::NullEqualsNothing || join.null_aware {
        return Ok(None);
    }
    // (a dynamic filter of the join's, pushed into the probe side's scan, would never be
    // completed once the join is gone: the scan would wait for it forever; the planner puts
    // this operator in before the filters are pushed)
    if !join.dynamic_expressions_produced().is_empty() || ExecutionPlan::fetch(join).is_some() {
        return Ok(None);
    }
    if join.left().boundedness().is_unbounded() || join.right().boundedness().is_unbounded() {
        return Ok(None);
    }
    let [(l, r)] = join.on() else { return Ok(None) };
    let (Some(l), Some(r)) = (l.downcast_ref::<Column>(), r.downcast_ref::<Column>()) else { return Ok(None) };
    let (left, right) = (join.left().schema(), join.right().schema());
    let (lt, rt) = (left.field(l.index()).data_type(), right.field(r.index()).data_type());
    if !integer_key(lt) || lt != rt {
        return Ok(None);
    }
    // each of the join's output columns: (side, column of that side)
    let width = left.fields().len();
    let joined = join.schema().fields().len();
    let side_of = |o: usize| -> Option<(JoinSide, usize)> {
        let i = match &join.projection {
            Some(p) => *p.get(o)?,
            None => o,
        };
        (o < joined).then_some(if i < width { (JoinSide::Left, i) } else { (JoinSide::Right, i - width) })
    };
    // the groups: columns of the build side
    let mut group_columns = Vec::new();
    for (e, _) in agg.group_expr().expr() {
        match e.downcast_ref::<Column>().and_then(|c| side_of(c.index())) {
            Some((JoinSide::Left, i)) => group_columns.push(i),
            _ => return Ok(None),
        }
    }
    // the joined columns the aggregates read, renumbered
    let mut inputs: Vec<(JoinSide, usize)> = Vec::new();
    let mut fields: Vec<Field> = Vec::new();
    let agg_input = agg.input_schema();
    let mut renumber = |e: &Arc<dyn PhysicalExpr>| -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let mut ok = true;
        let out = Arc::clone(e)
            .transform(|x| {
                let Some(c) = x.downcast_ref::<Column>() else { return Ok(Transformed::no(x)) };
                let Some(at) = side_of(c.index()) else {
                    ok = false;
                    return Ok(Transformed::no(x));
                };
                let k = match inputs.iter().position(|&p| p == at) {
                    Some(k) => k,
                    None => {
                        inputs.push(at);
                        fields.push(agg_input.field(c.index()).as_ref().clone().with_name(format!("c{}", inputs.len() - 1)));
                        inputs.len() - 1
                    }
                };
                Ok(Transformed::yes(Arc::new(Column::new(&format!("c{k}"), k)) as Arc<dyn PhysicalExpr>))
            })
            .data()?;
        Ok(ok.then_some(out))
    };
    let mut args = Vec::new();
    for a in agg.aggr_expr() {
        let mut these = Vec::new();
        for e in a.expressions() {
            let Some(e) = renumber(&e)? else { return Ok(None) };
            these.push(e);
        }
        args.push(these);
    }
    let mut agg_filters = Vec::new();
    for f in agg.filter_expr() {
        agg_filters.push(match f {
            Some(f) => match renumber(f)? {
                Some(f) => Some(f),
                None => return Ok(None),
            },
            None => None,
        });
    }
    let group_schema = Arc::new(Schema::new(group_columns.iter().map(|&i| left.field(i).clone()).collect::<Vec<_>>()));
    let names = |cols: &[usize], s: &SchemaRef| cols.iter().map(|&i| s.field(i).name().clone()).collect::<Vec<_>>().join(", ");
    let shown = format!(
        "{}on=[({}, {})]{}, gby=[{}], aggr=[{}]",
        if partial { "partial states, " } else { "" },
        l.name(),
        r.name(),
        join.filter().map(|f| format!(", filter={}", f.expression())).unwrap_or_default(),
        names(&group_columns, &left),
        agg.aggr_expr().iter().map(|a| a.name().to_string()).collect::<Vec<_>>().join(", ")
    );
    let spec = Spec {
        build_key: l.index(),
        probe_key: r.index(),
        filter: join.filter().cloned(),
        group_columns,
        group_schema,
        aggs: agg.aggr_expr().to_vec(),
        args,
        agg_filters,
        inputs,
        inputs_schema: Arc::new(Schema::new(fields)),
        partial,
        shown,
    };
    Ok(Some(Arc::new(GroupJoinExec::new(build, probe, Arc::new(spec), agg.schema()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringViewArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_tables::{rows_and_plan, table};

    /// Auctions `a` (unique ids, 5 categories, a 50 s lifetime, a name); auctions `d` with ids
    /// that repeat (with other categories) and NULL ids, as `INT`; 5 000 bids `b` on 211 ids
    /// (some of no auction, every 13th NULL), prices that tie, a note.
    fn tables() -> Vec<(&'static str, Arc<MemTable>)> {
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
        let auctions = |key: DataType| {
            Schema::new(vec![
                Field::new("id", key, true),
                Field::new("cat", DataType::Int64, false),
                Field::new("t0", ts(), false),
                Field::new("t1", ts(), false),
                Field::new("name", DataType::Utf8View, true),
            ])
        };
        let a = table(auctions(DataType::Int64), 200, |f, r| -> ArrayRef {
            match f.name().as_str() {
                "id" => Arc::new(Int64Array::from_iter_values(r.map(|n| n as i64))),
                "cat" => Arc::new(Int64Array::from_iter_values(r.map(|n| (n % 5) as i64 + 10))),
                "t0" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 1_000))),
                "t1" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 1_000 + 50_000))),
                _ => Arc::new(StringViewArray::from_iter(r.map(|n| (n % 7 != 3).then(|| format!("item {}", n % 50))))),
            }
        });
        let d = table(auctions(DataType::Int32), 400, |f, r| -> ArrayRef {
            match f.name().as_str() {
                "id" => Arc::new(Int32Array::from_iter(r.map(|n| (n % 17 != 5).then_some((n * 7 % 150) as i32)))),
                "cat" => Arc::new(Int64Array::from_iter_values(r.map(|n| (n % 3) as i64))),
                "t0" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 500))),
                "t1" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 500 + 90_000))),
                _ => Arc::new(StringViewArray::from_iter(r.map(|n| Some(format!("lot {}", n % 4))))),
            }
        });
        let bids = Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("auction32", DataType::Int32, true),
            Field::new("price", DataType::Int64, false),
            Field::new("t", ts(), false),
            Field::new("note", DataType::Utf8View, false),
        ]);
        let b = table(bids, 5_000, |f, r| -> ArrayRef {
            match f.name().as_str() {
                "auction" => Arc::new(Int64Array::from_iter(r.map(|n| (n % 13 != 4).then_some((n * 37 % 211) as i64)))),
                "auction32" => Arc::new(Int32Array::from_iter(r.map(|n| (n % 13 != 4).then_some((n * 37 % 211) as i32)))),
                "price" => Arc::new(Int64Array::from_iter_values(r.map(|n| (n * 7_919 % 40) as i64))),
                "t" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| (n * 7_901 % 5_003) as i64 * 47))),
                _ => Arc::new(StringViewArray::from_iter_values(r.map(|n| format!("note {}", n % 9)))),
            }
        });
        // keys far apart (hashed, not by their offset): negative, the extremes, and as UINT
        let sparse = |n: usize| match n {
            0 => i64::MIN,
            1 => i64::MAX,
            n => (n as i64 - 150) * 1_000_003,
        };
        let s = table(
            Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("uid", DataType::UInt32, false), Field::new("cat", DataType::Int64, false)]),
            300,
            |f, r| -> ArrayRef {
                match f.name().as_str() {
                    "id" => Arc::new(Int64Array::from_iter_values(r.map(sparse))),
                    "uid" => Arc::new(UInt32Array::from_iter_values(r.map(|n| (n * 100_000) as u32))),
                    _ => Arc::new(Int64Array::from_iter_values(r.map(|n| (n % 4) as i64))),
                }
            },
        );
        let t = table(
            Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("uid", DataType::UInt32, false), Field::new("v", DataType::Int64, false)]),
            3_000,
            |f, r| -> ArrayRef {
                match f.name().as_str() {
                    "k" => Arc::new(Int64Array::from_iter_values(r.map(|n| sparse(n % 320)))),
                    "uid" => Arc::new(UInt32Array::from_iter_values(r.map(|n| (n % 320 * 100_000) as u32))),
                    _ => Arc::new(Int64Array::from_iter_values(r.map(|n| (n * 31 % 100) as i64))),
                }
            },
        );
        vec![("a", a), ("d", d), ("b", b), ("s", s), ("t", t)]
    }

    /// Aggregates over joins, computed in the join and by DataFusion's plan: the same rows; the
    /// join computes them exactly where the groups are the build side's columns. In two
    /// partitions (joined partitioned or with the build side collected) and in one; the rule
    /// where the engine's sessions put it, before the joins' filters are pushed into the scans.
    #[test]
    fn the_join_aggregates_as_the_plan_would() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            for (partitions, partitioned) in [(2, true), (2, false), (1, false)] {
                let config = || {
                    let c = SessionConfig::new().with_target_partitions(partitions).with_batch_size(256);
                    if partitioned {
                        // (grouped where the join's partitions are, as the engine's sessions do)
                        c.set_usize("datafusion.optimizer.subset_repartition_threshold", 2)
                            .set_usize("datafusion.optimizer.hash_join_single_partition_threshold", 0)
                            .set_usize("datafusion.optimizer.hash_join_single_partition_threshold_rows", 0)
                    } else {
                        c
                    }
                };
                let plain = SessionContext::new_with_config(config());
                let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
                rules.retain(|r| r.name() != "FilterPushdown(Post)");
                let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
                rules.insert(at, Arc::new(datafusion::physical_optimizer::filter_pushdown::FilterPushdown::new_post_optimization()));
                rules.insert(at, Arc::new(crate::join::SmallBuildSideRule));
                let state = SessionStateBuilder::new().with_config(config()).with_default_features().with_physical_optimizer_rules(rules).build();
                let ours = SessionContext::new_with_state(state);
                for ctx in [&plain, &ours] {
                    for (name, t) in tables() {
                        ctx.register_table(name, t as _).unwrap();
                    }
                }
                let lifetime = "a.id = b.auction AND b.t BETWEEN a.t0 AND a.t1";
                for (sql, grouped) in [
                    // Nexmark q4's inner query, and q4 itself
                    (format!("SELECT MAX(b.price) AS final, a.cat FROM a JOIN b ON {lifetime} GROUP BY a.id, a.cat"), Some(true)),
                    (format!("SELECT cat, AVG(final) FROM (SELECT MAX(b.price) AS final, a.cat FROM a JOIN b ON {lifetime} GROUP BY a.id, a.cat) GROUP BY cat"), Some(true)),
                    // grouped by a column that is not the key; several aggregates, one DISTINCT
                    (
                        "SELECT a.cat, COUNT(*), SUM(b.price), AVG(b.price), MIN(b.note), COUNT(DISTINCT b.price) FROM a JOIN b ON a.id = b.auction GROUP BY a.cat"
                            .into(),
                        Some(true),
                    ),
                    // aggregates of both sides, a FILTER clause, text groups with NULLs
                    (
                        "SELECT a.name, SUM(b.price * a.cat), MAX(a.t1) FILTER (WHERE b.price > 20), COUNT(b.note) FROM a JOIN b ON a.id = b.auction GROUP BY a.name"
                            .into(),
                        Some(true),
                    ),
                    // repeated and NULL keys on the build side, keys of INT
                    ("SELECT d.id, d.cat, COUNT(*), SUM(b.price) FROM d JOIN b ON d.id = b.auction32 GROUP BY d.id, d.cat".into(), Some(true)),
                    ("SELECT d.name, COUNT(*), MAX(b.t) FROM d JOIN b ON d.id = b.auction32 AND b.t < d.t1 GROUP BY d.name".into(), Some(true)),
                    // keys far apart, the extremes among them, and unsigned
                    ("SELECT s.id, s.cat, COUNT(*), SUM(t.v) FROM s JOIN t ON s.id = t.k GROUP BY s.id, s.cat".into(), Some(true)),
                    ("SELECT s.cat, COUNT(*), MAX(t.v) FROM s JOIN t ON s.uid = t.uid AND t.v > s.cat * 20 GROUP BY s.cat".into(), Some(true)),
                    // a join filter no pair passes, and a build side with no row
                    ("SELECT a.id, COUNT(*) FROM a JOIN b ON a.id = b.auction AND b.t > a.t1 + INTERVAL '1' DAY GROUP BY a.id".into(), Some(true)),
                    ("SELECT a.id, COUNT(*) FROM a JOIN b ON a.id = b.auction WHERE a.cat > 100 GROUP BY a.id".into(), Some(true)),
                    // written with the bids first: DataFusion swaps the sides, the auctions build
                    ("SELECT a.cat, COUNT(*), SUM(b.price) FROM b JOIN a ON b.auction = a.id GROUP BY a.cat".into(), Some(true)),
                    // grouped by the probe side: the aggregate's own
                    ("SELECT b.price, COUNT(*) FROM a JOIN b ON a.id = b.auction GROUP BY b.price".into(), Some(false)),
                    // grouped by an expression
                    ("SELECT a.cat + 1, COUNT(*) FROM a JOIN b ON a.id = b.auction GROUP BY a.cat + 1".into(), Some(false)),
                ] {
                    let (want, _) = rows_and_plan(&plain, &sql).await;
                    let (got, plan) = rows_and_plan(&ours, &sql).await;
                    if let Some(grouped) = grouped {
                        assert_eq!(plan.contains("GroupJoinExec"), grouped, "{sql}\n{plan}");
                    }
                    assert_eq!(got, want, "{sql} ({partitions} partitions, partitioned: {partitioned})\n{plan}");
                }
                // the same plan executed again, as a table side is read again (its states
                // reset): the same rows, its build side read again
                let sql = "SELECT a.cat, COUNT(*), SUM(b.price) FROM a JOIN b ON a.id = b.auction GROUP BY a.cat ORDER BY a.cat";
                let plan = ours.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
                let first = datafusion::physical_plan::collect(Arc::clone(&plan), ours.task_ctx()).await.unwrap();
                let plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan).unwrap();
                let again = datafusion::physical_plan::collect(plan, ours.task_ctx()).await.unwrap();
                let text = |b: &[RecordBatch]| datafusion::arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
                assert_eq!(text(&again), text(&first));
                assert_eq!(first.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
            }
        });
    }
}
