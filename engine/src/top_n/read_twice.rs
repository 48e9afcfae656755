//! Top N per key over files read twice (Parquet, and text files not tailed): the keys and the
//! order first, to find the kept rows, then every column, of the kept rows only. Nothing but a
//! number per kept row is held.
//!
//! ```sql
//! -- Nexmark q19: the ten highest bids of every auction, every column of them
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
//! WHERE rank_number <= 10
//! -- BoundedTopNExec: partition_by=[auction@0], order_by=[price@2 DESC], n=10 ← SizedScanExec   becomes
//! -- ReadKeptRowsExec ← (BoundedTopNExec … ← RowPositionsExec ← read of auction, price;
//! --                     read of every column)
//! ```
//!
//! [`BoundedTopNExec`] holds the batches its kept rows are in until the input ends. Over
//! q18's and q19's bids (a bid in its auction's first ten, or its bidder's last on an
//! auction: half of them kept at the end, nearly all while they are fresh) that is the whole
//! input, 1.5 GB of text for 10M events, every page of it new memory. Here the first read
//! decodes only the columns the keys, the order and the routing read, numbers each row by
//! its place in its partition's read ([`RowPositionsExec`]), and the top N keeps those numbers
//! with the rank. The second read decodes every column again, partition by partition, in the
//! same order; [`ReadKeptRowsExec`] sorts each partition's kept numbers and filters each batch
//! to its kept rows, adding their rank, as it comes. The keys' columns are decoded twice; the
//! text is never held. A text file's first read checks every column the second reads (it
//! builds only its own), so a record malformed in any of them is skipped by both reads and
//! the numbers agree. The files must not change while the job reads them: a second read of
//! another length than the first (rows appended or removed in between) fails the job.
//!
//! Applied by [`ReadTwiceRule`] to a top N whose input is a scan, or a scan under the query's
//! `WHERE` and DataFusion's repartitions (the rows are numbered as the scan reads them, under
//! those: the `WHERE` runs on the first read, over the columns it needs, and the kept rows
//! passed it), that can read its source
//! again ([`SizedScanExec::read_twice`]: files read once, a job without checkpoints, no other
//! scan of the source), that outputs text, bytes or nested values it does not order or key
//! by, and that is at the top of the plan (under projections only: the operator's output is
//! partitioned as the reads are, not by key).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::{FutureExt, StreamExt};

use super::bounded_top_n_exec::{BoundedTopNConfig, KeptOut};
use super::BoundedTopNExec;
use crate::planner::source_table::{decodes_at_memory_speed, SizedScanExec};

/// The column [`RowPositionsExec`] appends.
const POSITION: &str = "__ferris_row_position";
/// A position is its partition's number shifted left by this, plus the row's place in it.
const PARTITION_SHIFT: u32 = 40;
/// Bits of a kept row's rank in [`ReadKeptRowsExec`]'s sorted numbers (a rank is at most
/// [`super::bounded_top_n_exec::MAX_LIMIT`], 100).
const RANK_BITS: u32 = 8;

/// Puts [`ReadKeptRowsExec`] in place of a top N over a scan that can read its source twice,
/// where that pays and nothing above relies on the top N's partitioning. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct ReadTwiceRule;

impl PhysicalOptimizerRule for ReadTwiceRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        at_the_top(plan)
    }

    fn name(&self) -> &str {
        "ferris_top_n_read_twice"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with the top N at its top (under projections and merges of partitions) read twice.
fn at_the_top(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<BoundedTopNExec>().is_some() {
        return Ok(read_twice(&plan)?.unwrap_or(plan));
    }
    let passes = plan.downcast_ref::<ProjectionExec>().is_some() || plan.downcast_ref::<CoalescePartitionsExec>().is_some();
    let children = plan.children();
    if !passes || children.len() != 1 {
        return Ok(plan);
    }
    let child = Arc::clone(children[0]);
    let new = at_the_top(Arc::clone(&child))?;
    if Arc::ptr_eq(&new, &child) {
        return Ok(plan);
    }
    plan.replace_children(vec![new], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
}

/// The top N `node` over two reads of its scan, when it is one over a scan that can read twice
/// and outputs text (or bytes, or nested values) it does not read for its keys.
fn read_twice(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(top) = node.downcast_ref::<BoundedTopNExec>() else { return Ok(None) };
    let Some(input) = top.children().first().map(|c| Arc::clone(*c)) else { return Ok(None) };
    // between the top N and the scan: the query's WHERE (filters without a projection or a
    // limit, which keep the scan's columns), and DataFusion's repartitions (by key, or round
    // robin under a filter, of a scan of fewer partitions than the session's); the top first
    let mut between: Vec<Between> = Vec::new();
    let mut scan_node = Arc::clone(&input);
    loop {
        if let Some(f) = scan_node.downcast_ref::<FilterExec>() {
            if f.projection().is_some() || f.fetch().is_some() {
                return Ok(None);
            }
            between.push(Between::Filter(Arc::clone(f.predicate())));
            scan_node = Arc::clone(f.input());
        } else if let Some(r) = scan_node.downcast_ref::<RepartitionExec>() {
            // (the rows are numbered under it, as the scan reads them: where they go after
            // does not change their numbers)
            match r.partitioning() {
                Partitioning::Hash(exprs, n) if !r.preserve_order() => between.push(Between::Hash(exprs.clone(), *n)),
                Partitioning::RoundRobinBatch(n) if !r.preserve_order() => between.push(Between::RoundRobin(*n)),
                _ => return Ok(None),
            }
            scan_node = Arc::clone(r.input());
        } else {
            break;
        }
    }
    let Some(scan) = scan_node.downcast_ref::<SizedScanExec>() else { return Ok(None) };
    let config = top.config();
    let schema = input.schema();
    let rank = schema.fields().len();
    // the columns the keys, the order and the routing read
    let mut narrow: Vec<usize> = config
        .partition_by
        .iter()
        .chain(config.order_by.iter().map(|o| &o.expr))
        .chain(top.route().into_iter().flatten())
        .chain(between.iter().flat_map(Between::exprs))
        .flat_map(collect_columns)
        .map(|c| c.index())
        .collect();
    narrow.sort_unstable();
    narrow.dedup();
    let out: Vec<usize> = config.projection.clone().unwrap_or_else(|| (0..=rank).collect());
    let pays = out.iter().any(|&c| c < rank && narrow.binary_search(&c).is_err() && !decodes_at_memory_speed(schema.field(c).data_type()));
    if !pays || narrow.is_empty() {
        return Ok(None);
    }
    // the top N over the first read, numbered: it outputs the positions of its kept rows and
    // their rank
    let mut fields: Vec<Arc<Field>> = narrow.iter().map(|&c| Arc::new(schema.field(c).clone())).collect();
    fields.push(Arc::new(Field::new(POSITION, DataType::UInt64, false)));
    let numbered = Arc::new(Schema::new(fields));
    let over = |e: &Arc<dyn PhysicalExpr>| reassign_expr_columns(Arc::clone(e), &numbered);
    let position = narrow.len();
    let keys = BoundedTopNConfig {
        partition_by: config.partition_by.iter().map(over).collect::<Result<_>>()?,
        order_by: config.order_by.iter().map(|o| Ok(PhysicalSortExpr { expr: over(&o.expr)?, options: o.options })).collect::<Result<_>>()?,
        limit: config.limit,
        rank_field: Arc::clone(&config.rank_field),
        projection: Some(vec![position, position + 1]),
    };
    let route = top.route().map(|r| r.iter().map(over).collect::<Result<Vec<_>>>()).transpose()?;
    let kept_schema = Arc::new(Schema::new(vec![Field::new(POSITION, DataType::UInt64, false), config.rank_field.as_ref().clone()]));
    let partitions = top.properties().output_partitioning().partition_count();
    let scan_partitions = input.output_partitioning().partition_count();
    let build = |input: Arc<dyn ExecutionPlan>| match &route {
        Some(r) => BoundedTopNExec::routed(input, keys.clone(), r.clone(), (Arc::clone(&kept_schema), Partitioning::UnknownPartitioning(partitions))),
        None => BoundedTopNExec::try_new(input, keys.clone(), None),
    };
    // tried on an empty input first: once the scan reads twice, it has left the source's
    // shared read, and the plan must use the two reads
    if build(Arc::new(EmptyExec::new(Arc::clone(&numbered)).with_partitions(scan_partitions))).is_err() {
        return Ok(None);
    }
    // each expression over the numbered first read, checked before the scan is split in two
    let between: Vec<Between> = between
        .iter()
        .map(|b| {
            Ok(match b {
                Between::Filter(p) => Between::Filter(over(p)?),
                Between::Hash(exprs, n) => Between::Hash(exprs.iter().map(over).collect::<Result<_>>()?, *n),
                Between::RoundRobin(n) => Between::RoundRobin(*n),
            })
        })
        .collect::<Result<_>>()?;
    let Some((first, second)) = scan.read_twice(&narrow) else { return Ok(None) };
    let numbering = RowPositionsExec::try_new(first)?;
    let counts = numbering.counts();
    // the rows are numbered as the scan reads them, before the WHERE and the repartition: the
    // second read, of every row, has the same numbers
    let mut numbered: Arc<dyn ExecutionPlan> = Arc::new(numbering);
    for b in between.into_iter().rev() {
        numbered = match b {
            Between::Filter(p) => Arc::new(FilterExec::try_new(p, numbered)?),
            Between::Hash(exprs, n) => Arc::new(RepartitionExec::try_new(numbered, Partitioning::Hash(exprs, n))?),
            Between::RoundRobin(n) => Arc::new(RepartitionExec::try_new(numbered, Partitioning::RoundRobinBatch(n))?),
        };
    }
    let kept = Arc::new(build(numbered)?);
    Ok(Some(Arc::new(ReadKeptRowsExec::try_new(kept, second, config.projection.clone(), node.schema())?.checking_counts(counts))))
}

/// What lies between a top N and the scan it reads twice.
enum Between {
    /// A `WHERE` clause: applied to the first read, after the rows are numbered (the kept
    /// rows passed it; the second read is not filtered again).
    Filter(Arc<dyn PhysicalExpr>),
    /// DataFusion's hash repartition by these expressions into so many partitions.
    Hash(Vec<Arc<dyn PhysicalExpr>>, usize),
    /// DataFusion's round robin of batches into so many partitions.
    RoundRobin(usize),
}

impl Between {
    /// The expressions it evaluates.
    fn exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        match self {
            Self::Filter(p) => std::slice::from_ref(p),
            Self::Hash(exprs, _) => exprs,
            Self::RoundRobin(_) => &[],
        }
    }
}

/// Its input's rows with their positions appended (`__ferris_row_position`, `UInt64`): the
/// partition's number shifted left by 40 bits, plus the row's place in the partition's
/// stream (from 0). A second execution of an input that reads the same rows in the same order
/// numbers them the same. It also counts each partition's rows ([`RowCounts`]).
#[derive(Debug)]
pub struct RowPositionsExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    counts: Arc<RowCounts>,
}

/// The rows each partition of a [`RowPositionsExec`] has numbered so far: once the top N over
/// it has read its input, each partition's rows, which the second read must have too.
#[derive(Debug)]
pub struct RowCounts(Vec<AtomicU64>);

impl RowCounts {
    /// The rows partition `partition` numbered.
    fn get(&self, partition: usize) -> Option<u64> {
        self.0.get(partition).map(|c| c.load(Ordering::Acquire))
    }
}

impl RowPositionsExec {
    /// Numbers the rows of `input`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let counts = Arc::new(RowCounts((0..input.output_partitioning().partition_count()).map(|_| AtomicU64::new(0)).collect()));
        Self::counting_into(input, counts)
    }

    /// Its rows counted per partition.
    pub fn counts(&self) -> Arc<RowCounts> {
        Arc::clone(&self.counts)
    }

    fn counting_into(input: Arc<dyn ExecutionPlan>, counts: Arc<RowCounts>) -> Result<Self> {
        let mut fields: Vec<Arc<Field>> = input.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(POSITION, DataType::UInt64, false)));
        let schema = Arc::new(Schema::new(fields));
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            input.boundedness(),
        );
        Ok(Self { input, schema, props: Arc::new(props), counts })
    }
}

impl DisplayAs for RowPositionsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RowPositionsExec: {POSITION}")
    }
}

impl ExecutionPlan for RowPositionsExec {
    fn name(&self) -> &str {
        "RowPositionsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("RowPositionsExec takes one input");
        }
        Ok(Arc::new(Self::counting_into(children.swap_remove(0), Arc::clone(&self.counts))?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let Ok(first) = u64::try_from(partition).map(|p| p << PARTITION_SHIFT) else { return internal_err!("RowPositionsExec: partition {partition}") };
        if partition >= 1 << (u64::BITS - PARTITION_SHIFT) {
            return internal_err!("RowPositionsExec numbers at most {} partitions", 1u64 << (u64::BITS - PARTITION_SHIFT));
        }
        if partition >= self.counts.0.len() {
            return internal_err!("RowPositionsExec has no partition {partition}");
        }
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(&self.schema);
        let count = Arc::clone(&self.counts);
        count.0[partition].store(0, Ordering::Release);
        let mut next = 0u64;
        let stream = input.map(move |batch| {
            let batch = batch?;
            let rows = batch.num_rows() as u64;
            if next + rows > 1 << PARTITION_SHIFT {
                return Err(DataFusionError::ResourcesExhausted(format!("RowPositionsExec numbers at most 2^{PARTITION_SHIFT} rows a partition")));
            }
            let positions: ArrayRef = Arc::new(UInt64Array::from_iter_values((first + next)..(first + next + rows)));
            next += rows;
            count.0[partition].store(next, Ordering::Release);
            let mut columns = batch.columns().to_vec();
            columns.push(positions);
            Ok(RecordBatch::try_new_with_options(Arc::clone(&schema), columns, &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }
}

/// The kept rows of a top N, read again: `kept` (the top N over the first read, numbered by
/// [`RowPositionsExec`]) gives each kept row's position and rank; each partition of `rows`
/// (the second read, the same rows in the same order) is filtered to its kept rows, their
/// rank added, and projected as the top N it replaces projected its input and rank. Its
/// output is partitioned as the reads are.
#[derive(Debug)]
pub struct ReadKeptRowsExec {
    kept: Arc<dyn ExecutionPlan>,
    rows: Arc<dyn ExecutionPlan>,
    /// Which of the second read's columns and the rank go out.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// The run under way: the kept rows, read once for every partition.
    run: Mutex<Run>,
    /// The rows of each partition of the first read, which the second must have too.
    first_read: Option<Arc<RowCounts>>,
}

/// One run's kept rows, while its partitions are executed.
#[derive(Default)]
struct Run {
    kept: Option<Shared>,
    /// The partitions that have taken their kept rows.
    taken: Vec<bool>,
}

/// Every partition's kept rows (`row << 8 | rank`, the row's place in its partition's read;
/// unsorted), each taken by its partition, and their memory, held until every partition's read
/// is done with them.
struct KeptRows {
    lists: Vec<Mutex<Option<Vec<u64>>>>,
    _memory: Mutex<crate::memory::StateMemory>,
}
type KeptLists = Arc<KeptRows>;
type Shared = futures::future::Shared<futures::future::BoxFuture<'static, std::result::Result<KeptLists, Arc<DataFusionError>>>>;

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run").field("taken", &self.taken).finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> DataFusionError {
    DataFusionError::Internal("ReadKeptRowsExec: a partition panicked".into())
}

impl ReadKeptRowsExec {
    /// The rows of `rows` that `kept` names, with their rank, projected by `projection` into
    /// `schema`.
    pub fn try_new(kept: Arc<dyn ExecutionPlan>, rows: Arc<dyn ExecutionPlan>, projection: Option<Vec<usize>>, schema: SchemaRef) -> Result<Self> {
        let kept_schema = kept.schema();
        let numbers = kept_schema.fields().len() == 2 && kept_schema.fields().iter().all(|f| f.data_type() == &DataType::UInt64);
        if !numbers {
            return internal_err!("ReadKeptRowsExec reads positions and ranks, not {kept_schema:?}");
        }
        let width = rows.schema().fields().len() + 1;
        let columns = projection.clone().unwrap_or_else(|| (0..width).collect());
        let fits = columns.len() == schema.fields().len()
            && columns.iter().zip(schema.fields()).all(|(&c, f)| match c {
                c if c + 1 < width => rows.schema().field(c).data_type() == f.data_type(),
                c if c + 1 == width => f.data_type() == &DataType::UInt64,
                _ => false,
            });
        if !fits {
            return internal_err!("ReadKeptRowsExec: {schema:?} is not of the columns read");
        }
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(rows.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self { kept, rows, projection, schema, props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new(), run: Default::default(), first_read: None })
    }

    /// Checks that each partition of the second read has as many rows as the first read's
    /// numbered (`counts`, of the [`RowPositionsExec`] under `kept`): rows appended to or
    /// removed from a file between the reads fail the job rather than give other rows (a file
    /// rewritten with as many rows is not noticed).
    pub fn checking_counts(mut self, counts: Arc<RowCounts>) -> Self {
        self.first_read = Some(counts);
        self
    }

    /// The kept rows of the run `partition` belongs to (a new run when `partition` was taken in
    /// the one under way).
    fn kept_of_run(&self, partition: usize, context: &Arc<TaskContext>) -> Result<Shared> {
        let partitions = self.props.output_partitioning().partition_count();
        let mut run = self.run.lock().map_err(poisoned)?;
        if run.kept.is_none() || run.taken.get(partition).copied().unwrap_or(true) {
            run.kept = Some(self.read_kept(context, partitions)?);
            run.taken = vec![false; partitions];
        }
        let Some(kept) = run.kept.clone() else { return internal_err!("ReadKeptRowsExec: no run") };
        if let Some(t) = run.taken.get_mut(partition) {
            *t = true;
        }
        if run.taken.iter().all(|t| *t) {
            *run = Run::default();
        }
        Ok(kept)
    }

    /// Every partition of `kept`, read into a list per partition of the second read.
    fn read_kept(&self, context: &Arc<TaskContext>, partitions: usize) -> Result<Shared> {
        let streams: Vec<SendableRecordBatchStream> =
            (0..self.kept.output_partitioning().partition_count()).map(|i| self.kept.execute(i, Arc::clone(context))).collect::<Result<_>>()?;
        let mut memory = crate::memory::StateMemory::new(context, "ReadKeptRowsExec (the kept rows' positions)", "a smaller N, or fewer PARTITION BY keys");
        let read = async move {
            let mut lists: Vec<Vec<u64>> = vec![Vec::new(); partitions];
            let mut streams = futures::stream::select_all(streams);
            while let Some(batch) = streams.next().await {
                let batch = batch?;
                let (Some(positions), Some(ranks)) = (batch.column(0).as_primitive_opt::<UInt64Type>(), batch.column(1).as_primitive_opt::<UInt64Type>())
                else {
                    return internal_err!("ReadKeptRowsExec: positions and ranks are numbers");
                };
                for (&at, &rank) in positions.values().iter().zip(ranks.values()) {
                    let (partition, row) = ((at >> PARTITION_SHIFT) as usize, at & ((1 << PARTITION_SHIFT) - 1));
                    let Some(list) = lists.get_mut(partition) else { return internal_err!("ReadKeptRowsExec: a row of partition {partition}") };
                    list.push(row << RANK_BITS | (rank & ((1 << RANK_BITS) - 1)));
                }
                memory.account(lists.iter().map(|l| l.capacity() * 8).sum())?;
            }
            // (the sort of each list, in its partition, takes as much again for a while: not
            // counted)
            Ok(Arc::new(KeptRows { lists: lists.into_iter().map(|l| Mutex::new(Some(l))).collect(), _memory: Mutex::new(memory) }))
        };
        Ok(read.map(|r: Result<KeptLists>| r.map_err(Arc::new)).boxed().shared())
    }
}

impl DisplayAs for ReadKeptRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ReadKeptRowsExec: the top N's kept rows, read again")
    }
}

impl ExecutionPlan for ReadKeptRowsExec {
    fn name(&self) -> &str {
        "ReadKeptRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.kept, &self.rows]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 2 {
            return internal_err!("ReadKeptRowsExec takes two inputs");
        }
        let rows = children.swap_remove(1);
        let kept = children.swap_remove(0);
        let new = Self::try_new(kept, rows, self.projection.clone(), Arc::clone(&self.schema))?;
        Ok(Arc::new(match &self.first_read {
            Some(counts) => new.checking_counts(Arc::clone(counts)),
            None => new,
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let kept = self.kept_of_run(partition, &context)?;
        let (rows, schema, projection) = (Arc::clone(&self.rows), Arc::clone(&self.schema), self.projection.clone());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let first_read = self.first_read.clone();
        let stream = futures::stream::once(async move {
            let lists = kept.await.map_err(DataFusionError::Shared)?;
            let list = lists.lists.get(partition).map(|l| l.lock().map_err(poisoned).map(|mut l| l.take())).transpose()?.flatten();
            let Some(list) = list else { return internal_err!("ReadKeptRowsExec: partition {partition} was executed twice in one run") };
            // the second read starts once the first is over (every kept row is known)
            let first_read = first_read.as_ref().and_then(|c| c.get(partition));
            let batch_size = context.session_config().batch_size().max(1);
            Ok(Gather {
                rows: rows.execute(partition, context)?,
                kept: crate::radix_sort::radix_sorted(list),
                at: 0,
                offset: 0,
                out: KeptOut::passing_sparse(Arc::clone(&schema), batch_size),
                schema,
                projection,
                baseline,
                done: false,
                first_read,
                _lists: lists,
            })
        })
        .map(|gather: Result<Gather>| match gather {
            Ok(gather) => futures::stream::unfold(gather, |mut g| async move { g.next_batch().await.map(|b| (b, g)) }).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's second read, filtered to its kept rows.
struct Gather {
    rows: SendableRecordBatchStream,
    /// The partition's kept rows, `row << 8 | rank`, ascending.
    kept: Vec<u64>,
    /// The first of `kept` not yet out.
    at: usize,
    /// Rows of the second read so far.
    offset: u64,
    out: KeptOut,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    baseline: BaselineMetrics,
    done: bool,
    /// The rows the first read had in this partition, when known.
    first_read: Option<u64>,
    /// Every partition's kept rows (held for their memory's account).
    _lists: KeptLists,
}

impl Gather {
    /// The next batch of kept rows; None at the end of the read.
    async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(b) = self.out.next() {
                self.baseline.record_output(b.num_rows());
                return Some(Ok(b));
            }
            if self.done {
                self.baseline.done();
                return None;
            }
            match self.rows.next().await {
                Some(Ok(batch)) => {
                    let time = self.baseline.elapsed_compute().clone();
                    let timer = time.timer();
                    let taken = self.take(&batch);
                    timer.done();
                    if let Err(e) = taken {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    if self.at < self.kept.len() {
                        let left = self.kept.len() - self.at;
                        return Some(Err(DataFusionError::Execution(format!(
                            "the source changed between its two reads for the top N: {left} kept rows lie past the {} rows read the second time",
                            self.offset
                        ))));
                    }
                    if let Some(first) = self.first_read.filter(|&n| n != self.offset) {
                        return Some(Err(DataFusionError::Execution(format!(
                            "the source changed between its two reads for the top N: {first} rows the first time, {} the second",
                            self.offset
                        ))));
                    }
                    if let Err(e) = self.out.finish() {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Takes the kept rows of `batch`, the next rows of the read.
    fn take(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let end = self.offset + rows as u64;
        let from = self.at;
        while self.at < self.kept.len() && self.kept[self.at] >> RANK_BITS < end {
            self.at += 1;
        }
        let kept = self.at - from;
        let offset = self.offset;
        self.offset = end;
        if kept == 0 {
            return Ok(());
        }
        let mut ranks = vec![0u64; rows];
        for &k in &self.kept[from..self.at] {
            // (ascending, at or after `offset`: every earlier one was taken by an earlier batch)
            if let Some(r) = usize::try_from((k >> RANK_BITS) - offset).ok().and_then(|i| ranks.get_mut(i)) {
                *r = k & ((1 << RANK_BITS) - 1);
            }
        }
        let keep = BooleanArray::from(BooleanBuffer::collect_bool(rows, |i| ranks[i] != 0));
        let rank: ArrayRef = Arc::new(UInt64Array::from(ranks));
        let width = batch.num_columns();
        let column = |c: usize| if c < width { Arc::clone(batch.column(c)) } else { Arc::clone(&rank) };
        let columns: Vec<ArrayRef> = match &self.projection {
            Some(p) => p.iter().map(|&c| column(c)).collect(),
            None => (0..=width).map(column).collect(),
        };
        let full = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))?;
        let kept = keep.true_count();
        self.out.push(full, &keep, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::datasource::memory::MemorySourceConfig;

    /// A memory input of `parts` partitions of batches of `(id, text)`.
    fn input(parts: &[Vec<RecordBatch>]) -> Arc<dyn ExecutionPlan> {
        let schema = parts.iter().flatten().next().map(RecordBatch::schema).unwrap_or_else(|| Arc::new(Schema::empty()));
        MemorySourceConfig::try_new_exec(parts, schema, None).unwrap()
    }

    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("text", DataType::Utf8, false)]));
        let text: StringArray = ids.clone().map(|i| Some(format!("row {i}"))).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(text)]).unwrap()
    }

    /// A plan that outputs the given (position, rank) pairs as the kept rows, in one batch.
    fn kept(pairs: &[(u64, u64)]) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new(POSITION, DataType::UInt64, false), Field::new("rank", DataType::UInt64, false)]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(UInt64Array::from_iter_values(pairs.iter().map(|p| p.0))), Arc::new(UInt64Array::from_iter_values(pairs.iter().map(|p| p.1)))],
        )
        .unwrap();
        MemorySourceConfig::try_new_exec(&[vec![b]], schema, None).unwrap()
    }

    fn out_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false), Field::new("rank", DataType::UInt64, false)]))
    }

    async fn run(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<(String, u64)>> {
        let ctx = Arc::new(TaskContext::default());
        let mut rows = Vec::new();
        for p in 0..plan.output_partitioning().partition_count() {
            let batches: Vec<RecordBatch> = datafusion::physical_plan::common::collect(plan.execute(p, Arc::clone(&ctx))?).await?;
            for b in batches {
                let text = b.column(0).as_string::<i32>();
                let rank = b.column(1).as_primitive::<UInt64Type>();
                rows.extend((0..b.num_rows()).map(|i| (text.value(i).to_string(), rank.value(i))));
            }
        }
        Ok(rows)
    }

    /// Positions count rows per partition from 0, the partition's number above bit 40,
    /// whatever the batches' sizes.
    #[tokio::test]
    async fn positions_number_each_partitions_rows() {
        let plan = Arc::new(RowPositionsExec::try_new(input(&[vec![batch(0..3), batch(3..5)], vec![batch(10..12)]])).unwrap());
        let ctx = Arc::new(TaskContext::default());
        let mut seen = Vec::new();
        for p in 0..2 {
            for b in datafusion::physical_plan::common::collect(plan.execute(p, Arc::clone(&ctx)).unwrap()).await.unwrap() {
                let ids = b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let at = b.column(2).as_primitive::<UInt64Type>();
                seen.extend((0..b.num_rows()).map(|i| (ids.value(i), at.value(i))));
            }
        }
        let p1 = 1u64 << PARTITION_SHIFT;
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (10, p1), (11, p1 + 1)]);
    }

    /// The second read's rows at the kept positions, with their ranks, partition by partition
    /// in the read's order, whatever order the positions come in; the columns as projected.
    #[tokio::test]
    async fn kept_rows_are_gathered_from_the_second_read() {
        let p1 = 1u64 << PARTITION_SHIFT;
        let rows = input(&[vec![batch(0..4), batch(4..9)], vec![batch(100..103)]]);
        let kept = kept(&[(p1 + 2, 1), (7, 3), (0, 2), (4, 1), (p1, 10)]);
        let plan = Arc::new(ReadKeptRowsExec::try_new(kept, rows, Some(vec![1, 2]), out_schema()).unwrap());
        let got = run(plan).await.unwrap();
        let want: Vec<(String, u64)> =
            [("row 0", 2), ("row 4", 1), ("row 7", 3), ("row 100", 10), ("row 102", 1)].iter().map(|(t, r)| (t.to_string(), *r)).collect();
        assert_eq!(got, want);
    }

    /// A second read with another number of rows than the first numbered is an error, though
    /// every kept row is in it.
    #[tokio::test]
    async fn a_second_read_of_another_length_is_an_error() {
        let numbering = RowPositionsExec::try_new(input(&[vec![batch(0..4)]])).unwrap();
        let counts = numbering.counts();
        let ctx = Arc::new(TaskContext::default());
        datafusion::physical_plan::common::collect(numbering.execute(0, Arc::clone(&ctx)).unwrap()).await.unwrap();
        assert_eq!(counts.get(0), Some(4));
        let plan = |rows: std::ops::Range<i64>| {
            let checked = ReadKeptRowsExec::try_new(kept(&[(1, 1)]), input(&[vec![batch(rows)]]), Some(vec![1, 2]), out_schema()).unwrap();
            Arc::new(checked.checking_counts(Arc::clone(&counts)))
        };
        assert_eq!(run(plan(0..4)).await.unwrap(), vec![("row 1".to_string(), 1)]);
        let e = run(plan(0..5)).await.unwrap_err().to_string();
        assert!(e.contains("changed between its two reads") && e.contains("4 rows the first time, 5 the second"), "{e}");
    }

    /// A kept position past the end of the second read is an error (the file changed between
    /// the reads), not a row lost in silence.
    #[tokio::test]
    async fn a_position_past_the_second_read_is_an_error() {
        let rows = input(&[vec![batch(0..4)]]);
        let plan = Arc::new(ReadKeptRowsExec::try_new(kept(&[(1, 1), (9, 2)]), rows, Some(vec![1, 2]), out_schema()).unwrap());
        let e = run(plan).await.unwrap_err().to_string();
        assert!(e.contains("changed between its two reads") && e.contains("1 kept rows"), "{e}");
    }
}
