//! A connector source as a DataFusion table: `scan` asks the source for just the projected
//! columns (a Parquet file reads only those column chunks, a JSON decoder skips the other
//! fields), then streams its partitions through DataFusion's `StreamingTableExec`.
//!
//! ```sql
//! SELECT auction, price FROM bid WHERE auction % 123 = 0   -- reads 2 of bid's 7 columns
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::Statistics;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter_pushdown::{ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream};
use ferris_connectors::Source;

use crate::checkpoint::CheckpointContext;

use super::shared_scan::{ScanPartition, SharedScan};

/// A [`Source`] registered with DataFusion.
#[derive(Debug)]
pub struct SourceTable {
    source: Arc<dyn Source>,
    /// For a job's plan: every scan of the table reads the source once between them.
    shared: Option<Arc<SharedScan>>,
    /// A scan on the probe side of a hash join may read the source again on its own, with the
    /// join's filter ([`Source::read_again`]): the job has no barriers.
    read_again: bool,
}

impl SourceTable {
    /// Wraps `source`; each scan reads it on its own (ad-hoc queries, planned again and again).
    pub fn new(source: Arc<dyn Source>) -> Self {
        Self { source, shared: None, read_again: false }
    }

    /// Wraps `source` for one job's plan: however often the query names the table, the source
    /// is read once ([`SharedScan`]).
    pub fn shared(source: Arc<dyn Source>) -> Self {
        Self { shared: Some(Arc::new(SharedScan::new(Arc::clone(&source)))), source, read_again: false }
    }

    /// Lets a scan on the probe side of a hash join read the source again on its own, dropping
    /// the rows the join's filter rejects while decoding ([`Source::read_again`]). Only for a
    /// job without barriers: the second read's positions are in no checkpoint.
    pub fn with_read_again(mut self) -> Self {
        self.read_again = true;
        self
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // filters a source can skip data by (Hive partitions) are handed to it; rows are still
        // filtered by DataFusion
        Ok(filters
            .iter()
            .map(|f| if self.source.can_prune(f) { TableProviderFilterPushDown::Inexact } else { TableProviderFilterPushDown::Unsupported })
            .collect())
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.source.schema().project(p)?),
            None => self.source.schema(),
        };
        let (partitions, consumer) = match &self.shared {
            Some(shared) => {
                let (partitions, consumer) = shared.partitions(projection.map(Vec::as_slice), filters);
                (partitions, consumer.map(|c| (Arc::clone(shared), c)))
            }
            None => (self.source.partitions_pruned(projection.map(Vec::as_slice), &[filters.to_vec()]).into_iter().map(ScanPartition::Own).collect(), None),
        };
        let partitions = partitions
            .into_iter()
            .enumerate()
            .map(|(index, inner)| Arc::new(LeafPartition { inner, source: Arc::clone(&self.source), index }) as Arc<dyn PartitionStream>)
            .collect();
        let columns = schema.fields().len();
        let exec: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(schema, partitions, None, Vec::new(), !self.source.is_bounded(), limit)?);
        Ok(match (self.source.refresh_interval(), self.source.size()) {
            (Some(every), _) => Arc::new(crate::join::refresh::RefreshingScanExec::new(exec, every)),
            (None, Some(size)) if self.source.is_bounded() => {
                // the bytes of the columns read, in proportion
                let all = self.source.schema().fields().len().max(1) as u64;
                let bytes = size.bytes.map(|b| b * columns as u64 / all);
                let again = self.read_again.then(|| {
                    Arc::new(ReadAgain {
                        source: Arc::clone(&self.source),
                        projection: projection.cloned(),
                        filters: filters.to_vec(),
                        limit,
                        shared: consumer,
                    })
                });
                let floor_column = self.source.floor_column().map(str::to_string);
                Arc::new(SizedScanExec { input: exec, rows: size.rows, bytes, again, dynamic: None, floor_column, read_ahead: None })
            }
            _ => exec,
        })
    }
}

/// The scan of a bounded source that knows its size (rows from Parquet footers, bytes of the
/// files): it tells DataFusion's planner, which then builds a hash join's table on the smaller
/// side (Nexmark q13's side input, not the bids). Rows pass through untouched.
///
/// ```sql
/// SELECT b.auction, s.value FROM bid b JOIN side_input s ON b.auction % 10000 = s.key
/// -- SizedScanExec: rows=9200000 over the bids, rows=10000 over side_input: side_input is built
/// ```
///
/// On the probe side of a hash join, in a job without barriers, it also takes the join's
/// filter (DataFusion's dynamic filter: the build side's key bounds and values, known once the
/// join has read it) and then reads the source on its own, dropping the rows the filter
/// rejects while decoding, rather than sharing another scan's read ([`Source::read_again`]):
///
/// ```sql
/// SELECT b.auction, b.price FROM bid b
/// JOIN (SELECT MAX(price) AS maxprice FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
///   ON b.price = m.maxprice
/// -- SizedScanExec: rows=9200000, …, read again with the join's filter: DynamicFilter [ price IN (…) ]
/// ```
///
/// A probe side of numbers alone, which the filter would spare little decoding, is read as
/// planned instead, ahead of the join while it builds ([`late_decoding_pays`]):
///
/// ```sql
/// SELECT p.name, a.id FROM auction a JOIN person p ON a.seller = p.id WHERE p.state = 'or'
/// -- SizedScanExec: rows=600000, …, read ahead of the join: up to 113 batches
/// ```
#[derive(Debug)]
pub struct SizedScanExec {
    input: Arc<dyn ExecutionPlan>,
    rows: Option<u64>,
    bytes: Option<u64>,
    /// How to read the source again for this scan alone, when the job allows it.
    again: Option<Arc<ReadAgain>>,
    /// The hash join's filter the scan reads with, once it reads on its own.
    dynamic: Option<Arc<dyn PhysicalExpr>>,
    /// The source's column whose event-time floor its partitions publish
    /// ([`ferris_connectors::Source::floor_column`]).
    floor_column: Option<String>,
    /// On the probe side of a hash join, read ahead while the join builds its table: at most
    /// this many batches held ([`late_decoding_pays`] says when).
    read_ahead: Option<usize>,
}

/// What a scan needs to read its source again on its own.
#[derive(Debug)]
struct ReadAgain {
    source: Arc<dyn Source>,
    projection: Option<Vec<usize>>,
    filters: Vec<Expr>,
    limit: Option<usize>,
    /// The shared read the scan leaves, and its consumer there.
    shared: Option<(Arc<SharedScan>, usize)>,
}

impl ReadAgain {
    /// True when no other live scan reads the source (through the shared read or at all).
    fn alone(&self) -> bool {
        self.shared.as_ref().is_none_or(|(scan, consumer)| !scan.others_live(*consumer))
    }
}

impl SizedScanExec {
    /// Wraps the scan `input` of a source of `rows` rows and about `bytes` bytes.
    pub fn new(input: Arc<dyn ExecutionPlan>, rows: Option<u64>, bytes: Option<u64>) -> Self {
        Self { input, rows, bytes, again: None, dynamic: None, floor_column: None, read_ahead: None }
    }

    /// The source's column whose event-time floor its partitions publish, when they do (a read
    /// again with a join's filter does not).
    pub fn floor_column(&self) -> Option<&str> {
        self.floor_column.as_deref()
    }

    /// The scan reading the source on its own with `dynamic` (a parent's filter holding a hash
    /// join's dynamic filter), or None when the source cannot.
    fn reading_again(&self, again: &ReadAgain, dynamic: Arc<dyn PhysicalExpr>) -> Option<Self> {
        // a source no other scan reads counts its rows in this read
        let count = again.alone();
        let parts = again.source.read_again(again.projection.as_deref(), std::slice::from_ref(&again.filters), Arc::clone(&dynamic), count)?;
        if parts.len() != self.input.output_partitioning().partition_count() {
            return None;
        }
        let schema = self.input.schema();
        let input = StreamingTableExec::try_new(schema, parts, None, Vec::new(), false, again.limit).ok()?;
        if let Some((scan, consumer)) = &again.shared {
            scan.release(*consumer);
        }
        Some(Self { input: Arc::new(input), rows: self.rows, bytes: self.bytes, again: None, dynamic: Some(dynamic), floor_column: None, read_ahead: None })
    }

    /// Two reads of the source for this scan alone, in a job without barriers, where the
    /// source can read in order again (files read once, Parquet or text): one of the scan's
    /// columns `narrow` only, each record checked by every column the scan reads (its rows not
    /// counted in the source's metrics again), and one of every column the scan reads. Both
    /// hand out the same rows in the same order, partition by partition, as the scan would; a
    /// top N per key reads its keys from the first and only its kept rows from the second
    /// ([`crate::top_n::ReadTwiceRule`]). None when another scan shares the source's read, or
    /// the scan reads with a join's filter, ahead of a join or to a limit.
    pub fn read_twice(&self, narrow: &[usize]) -> Option<(Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>)> {
        let again = self.again.as_ref()?;
        if self.dynamic.is_some() || self.read_ahead.is_some() || again.limit.is_some() || !again.alone() {
            return None;
        }
        let columns = again.projection.clone().unwrap_or_else(|| (0..again.source.schema().fields().len()).collect());
        let narrow_columns: Vec<usize> = narrow.iter().map(|&c| columns.get(c).copied()).collect::<Option<_>>()?;
        let scans = std::slice::from_ref(&again.filters);
        let keys = again.source.read_in_order(Some(&narrow_columns), Some(&columns), scans, false)?;
        let rows = again.source.read_in_order(again.projection.as_deref(), None, scans, true)?;
        let partitions = self.input.output_partitioning().partition_count();
        if keys.len() != partitions || rows.len() != partitions {
            return None;
        }
        let schema = self.input.schema();
        let keys = StreamingTableExec::try_new(Arc::new(schema.project(narrow).ok()?), keys, None, Vec::new(), false, None).ok()?;
        let rows = StreamingTableExec::try_new(schema, rows, None, Vec::new(), false, None).ok()?;
        if let Some((scan, consumer)) = &again.shared {
            scan.release(*consumer);
        }
        Some((Arc::new(keys), Arc::new(rows)))
    }

    /// The scan reading ahead of the join above it, its batches held up to [`READ_AHEAD_BYTES`]
    /// (by the widths of its fixed-width columns and the session's batch size).
    fn reading_ahead(&self, batch_size: usize) -> Self {
        let row: usize = self.input.schema().fields().iter().map(|f| f.data_type().primitive_width().unwrap_or(1) + 1).sum();
        let batches = (READ_AHEAD_BYTES / (row.max(1) * batch_size.max(1))).clamp(2, 1024);
        Self {
            input: Arc::clone(&self.input),
            rows: self.rows,
            bytes: self.bytes,
            again: None,
            dynamic: None,
            floor_column: self.floor_column.clone(),
            read_ahead: Some(batches),
        }
    }
}

/// What a scan reading ahead of a hash join's build ([`SizedScanExec`]) holds at most, per partition.
const READ_AHEAD_BYTES: usize = 16 << 20;

/// True when the scan reads a column whose decoding the join's filter can spare for the rows it
/// drops: text, bytes, nested values. Numbers, times and booleans decode at memory speed, so
/// reading them only once the join has built its table (Nexmark q3's auctions: `id`, `seller`,
/// `category`) would delay the read by the whole build for little work saved; such a scan of a
/// source no other scan reads goes on as planned and reads ahead while the join builds, holding
/// up to [`READ_AHEAD_BYTES`] a partition, and the join drops the rows. (A scan sharing its
/// source's read with the build side still reads again: its batches would otherwise wait, all
/// of them, for the join to build its table.)
///
/// ```sql
/// SELECT p.name, a.id FROM auction a JOIN person p ON a.seller = p.id WHERE p.state = 'or'
/// -- the auctions' id and seller are read while the persons are: no "read again"
/// ```
fn late_decoding_pays(schema: &SchemaRef) -> bool {
    schema.fields().iter().any(|f| !decodes_at_memory_speed(f.data_type()))
}

/// True for a type whose values decode at memory speed: numbers, times, booleans (not text,
/// bytes or nested values). What makes reading a column late, or twice, cheap.
pub(crate) fn decodes_at_memory_speed(t: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    t.is_primitive() || matches!(t, DataType::Boolean | DataType::Null)
}

/// True when `expr` holds a dynamic filter (a hash join's, filled in as the join runs).
fn is_dynamic(expr: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    let _ = expr.apply(|e| {
        found = e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some();
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

impl DisplayAs for SizedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        write!(f, "SizedScanExec: rows={}, bytes≈{}", show(self.rows), show(self.bytes))?;
        if let Some(d) = &self.dynamic {
            write!(f, ", read again with the join's filter: {d}")?;
        }
        if let Some(n) = self.read_ahead {
            write!(f, ", read ahead of the join: up to {n} batches")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SizedScanExec {
    fn name(&self) -> &str {
        "SizedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        // the join computes its filter only when a scan below it holds the filter
        match &self.dynamic {
            Some(d) => f(d),
            None => Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue),
        }
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        // the filters stay with the operators above: reading with one only drops rows early
        let result = FilterPushdownPropagation::all_unsupported(child_pushdown_result.clone());
        // the read waits for its filter to be complete: only a hash join's is before it reads
        // its probe side (a TopK's is complete once it has read all its input, which would be
        // this scan, and a MIN/MAX's never is); the job's session turns the others off
        let others = config.optimizer.enable_topk_dynamic_filter_pushdown || config.optimizer.enable_aggregate_dynamic_filter_pushdown;
        if phase != FilterPushdownPhase::Post || self.dynamic.is_some() || self.read_ahead.is_some() || others {
            return Ok(result);
        }
        let Some(again) = &self.again else { return Ok(result) };
        let dynamic: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result.parent_filters.iter().map(|f| Arc::clone(&f.filter)).filter(is_dynamic).collect();
        let Some(dynamic) = datafusion::physical_expr::conjunction_opt(dynamic) else { return Ok(result) };
        if again.alone() && !late_decoding_pays(&self.input.schema()) {
            let node = self.reading_ahead(config.execution.batch_size.get());
            return Ok(result.with_updated_node(Arc::new(node) as Arc<dyn ExecutionPlan>));
        }
        Ok(match self.reading_again(again, dynamic) {
            Some(node) => result.with_updated_node(Arc::new(node) as Arc<dyn ExecutionPlan>),
            None => result,
        })
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!("SizedScanExec takes one input");
        }
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            rows: self.rows,
            bytes: self.bytes,
            again: self.again.clone(),
            dynamic: self.dynamic.clone(),
            floor_column: self.floor_column.clone(),
            read_ahead: self.read_ahead,
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let Some(batches) = self.read_ahead else { return Ok(input) };
        // read from now on, not from when the join, its table built, first asks
        let mut ahead = datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder::new(self.schema(), batches);
        let tx = ahead.tx();
        ahead.spawn(async move {
            use futures::StreamExt;
            while let Some(batch) = input.next().await {
                let failed = batch.is_err();
                // the join went away (a LIMIT met, an empty build side): stop reading
                if tx.send(batch).await.is_err() || failed {
                    break;
                }
            }
            Ok(())
        });
        Ok(ahead.build())
    }

    fn statistics_from_inputs(&self, _input_stats: &[Arc<Statistics>], args: &StatisticsArgs) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        if args.partition().is_none() {
            if let Some(rows) = self.rows {
                stats.num_rows = Precision::Exact(usize::try_from(rows).unwrap_or(usize::MAX));
            }
            if let Some(bytes) = self.bytes {
                stats.total_byte_size = Precision::Inexact(usize::try_from(bytes).unwrap_or(usize::MAX));
            }
        }
        Ok(Arc::new(stats))
    }

    #[allow(deprecated)]
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        self.statistics_from_inputs(&[], &StatisticsArgs::new().with_partition(partition))
    }
}

/// A source partition that, in a job taking checkpoints, is a barrier leaf: it passes each
/// barrier with its position (see [`crate::checkpoint::barrier`]).
#[derive(Debug)]
struct LeafPartition {
    inner: ScanPartition,
    source: Arc<dyn Source>,
    index: usize,
}

impl PartitionStream for LeafPartition {
    fn schema(&self) -> &SchemaRef {
        self.inner.schema()
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (source, index) = (Arc::clone(&self.source), self.index);
        if source.frontier(index).is_some() || source.checkpoint().is_some() {
            crate::checkpoint::barrier::join_frontier(Arc::new(move || source.frontier(index)));
        }
        // the partition publishes its event-time floor, if it has one, as it hands each batch
        // on to this chain (a shared read: as this consumer takes it)
        let floor = self.source.floor_column().map(|c| (c.to_string(), Arc::new(ferris_connectors::EventTimeFloor::default())));
        crate::checkpoint::barrier::join_floor(floor.clone());
        match floor {
            Some((_, f)) => ferris_connectors::source::publishing_floor(&f, || self.execute_leaf(ctx)),
            None => self.execute_leaf(ctx),
        }
    }
}

impl LeafPartition {
    fn execute_leaf(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let Some(checkpoints) = ctx.session_config().get_extension::<CheckpointContext>() else { return self.inner.execute(ctx) };
        let index = self.index;
        let positions =
            self.source.checkpoint().map(|c| Arc::new(move || c.positions(index)) as Arc<dyn Fn() -> ferris_connectors::checkpoint::Positions + Send + Sync>);
        match &self.inner {
            ScanPartition::Own(p) => Box::pin(checkpoints.runtime.source_leaf(self.source.name(), index, p.execute(ctx), positions)),
            ScanPartition::Shared(p) => {
                let schema = Arc::clone(p.schema());
                Box::pin(checkpoints.runtime.shared_leaf(self.source.name(), index, p.execute_marked(ctx), schema, positions))
            }
        }
    }
}
