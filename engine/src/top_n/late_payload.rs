//! Top N per key over a hash join: the build side's text is held aside while the join and the
//! top N run, and gathered for the kept rows only.
//!
//! ```sql
//! -- Nexmark q9: every auction with its highest bid in its lifetime
//! SELECT * FROM (
//!   SELECT a.*, b.price, b.date_time AS bid_date_time,
//!          ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time) AS rownum
//!   FROM auction a JOIN bid b ON a.id = b.auction
//!   WHERE b.date_time BETWEEN a.date_time AND a.expires
//! ) WHERE rownum <= 1
//! -- BoundedTopNExec ← HashJoinExec ← (auction, bid)                              becomes
//! -- PayloadGatherExec ← BoundedTopNExec ← HashJoinExec ← (PayloadStashExec ← auction, bid)
//! ```
//!
//! A hash join copies its build side's columns into every row it outputs. For text held as
//! views into the build side's pages, DataFusion's join then finds its output batches using a
//! sliver of those pages and copies the strings out (so that the batch does not keep the pages
//! alive): q9 copied each auction's 450 bytes of text once for every one of its 6.6M bids in
//! their lifetime, only for the top N to keep one bid of each auction.
//!
//! Here the build side's text columns that neither the join's keys and filter nor the top N's
//! keys and order read (the payload) are taken out of each build batch as it is read, held by
//! `PayloadStashExec` (a [`PayloadExec`]) in a stash the plan shares, and replaced by
//! placeholders of the same type: empty strings, and in one view column (the carrier) each
//! row's place in the stash (batch and row, as 11 ASCII characters inline in the view). The
//! join and the top N move 16-byte views that point nowhere; `PayloadGatherExec`, above the top
//! N, reads the places of the kept rows and gathers their values from the stash (views again:
//! no string is copied). The plan's schema is the same at every node.
//!
//! Applied by [`LatePayloadRule`] to a [`BoundedTopNExec`] (top N per key), or to DataFusion's
//! top K over bounded input (`ORDER BY … LIMIT n`: a `SortExec` with a fetch), over an inner
//! [`HashJoinExec`] (directly, or through a projection that only renames or reorders columns), when at least one payload column is a string or binary view that the
//! top N outputs (it carries the places).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryViewArray, RecordBatch, StringViewArray};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_datafusion_err, internal_err, JoinSide, JoinType, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream};
use futures::StreamExt;

use super::BoundedTopNExec;

/// Characters of a place in the carrier: 6 bits each, 66 bits for the 64 of (batch, row).
const PLACE_CHARS: usize = 11;

/// The payload columns of every build batch read, by batch number, and their memory.
#[derive(Default)]
struct Stash {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    batches: Vec<Vec<ArrayRef>>,
    /// The gather's partitions done with the stash: once all are, it is let go.
    gathered: usize,
    /// The data buffers already counted (views of several batches share a page's bytes).
    counted: HashSet<usize>,
    bytes: usize,
    memory: Option<crate::memory::StateMemory>,
}

impl fmt::Debug for Stash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stash").finish_non_exhaustive()
    }
}

impl Stash {
    /// Holds `columns` of one batch: its number, or an error when the job's memory limit cannot
    /// take them.
    fn hold(&self, columns: Vec<ArrayRef>, context: &Arc<TaskContext>) -> Result<u32> {
        let mut held = self.held.lock().map_err(|_| internal_datafusion_err!("PayloadStashExec: a task panicked while it held the stash"))?;
        let mut bytes = 0;
        for c in &columns {
            // the batch's own views (or offsets) and nulls, as much of them as its rows use (a
            // batch may be a slice of a larger one); the bytes they point into once for all
            // the batches that share them
            let data = c.to_data();
            let width = match c.data_type() {
                DataType::Utf8View | DataType::BinaryView => 16,
                DataType::LargeUtf8 | DataType::LargeBinary => 8,
                _ => 4,
            };
            bytes += (c.len() + 1) * width + c.len().div_ceil(8);
            for b in data.buffers().iter().skip(1) {
                if held.counted.insert(b.data_ptr().as_ptr() as usize) {
                    bytes += b.capacity();
                }
            }
        }
        let number = u32::try_from(held.batches.len()).map_err(|_| internal_datafusion_err!("PayloadStashExec holds at most 2^32 batches"))?;
        held.batches.push(columns);
        held.bytes += bytes;
        let total = held.bytes;
        let memory = held.memory.get_or_insert_with(|| {
            crate::memory::StateMemory::new(
                context,
                "PayloadStashExec (the text of a join's build side, until the top N has kept its rows)",
                "fewer or shorter text columns",
            )
        });
        memory.account(total)?;
        Ok(number)
    }

    /// One of the gather's `partitions` is done (its stream ended or was dropped): the last one
    /// lets the held columns go, so that what runs above has the memory back.
    fn gathered(&self, partitions: usize) {
        if let Ok(mut held) = self.held.lock() {
            held.gathered += 1;
            if held.gathered >= partitions {
                held.batches = Vec::new();
                held.counted = HashSet::new();
                held.bytes = 0;
                held.gathered = 0;
                if let Some(m) = held.memory.as_mut() {
                    // (shrinking cannot fail)
                    let _ = m.account(0);
                }
            }
        }
    }
}

/// Tells the stash a gather partition is done when dropped (at the end of its stream, or when
/// the stream is dropped before its end).
struct GatherDone {
    stash: Arc<Stash>,
    partitions: usize,
}

impl Drop for GatherDone {
    fn drop(&mut self) {
        self.stash.gathered(self.partitions);
    }
}

/// A place, (batch, row), as the inline view of an 11-character ASCII string.
fn place_view(batch: u32, row: u32) -> u128 {
    let place = (u64::from(batch) << 32) | u64::from(row);
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&(PLACE_CHARS as u32).to_le_bytes());
    for (k, b) in bytes[4..4 + PLACE_CHARS].iter_mut().enumerate() {
        *b = b'0' + ((place >> (6 * k)) & 63) as u8;
    }
    u128::from_le_bytes(bytes)
}

/// The place a view of [`place_view`] holds.
fn place_of(view: u128) -> Option<(u32, u32)> {
    let bytes = view.to_le_bytes();
    if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize != PLACE_CHARS {
        return None;
    }
    let mut place = 0u64;
    for (k, b) in bytes[4..4 + PLACE_CHARS].iter().enumerate() {
        let six = b.checked_sub(b'0').filter(|v| *v < 64)?;
        place |= u64::from(six) << (6 * k);
    }
    Some(((place >> 32) as u32, place as u32))
}

/// `rows` placeholders of `data_type`: empty values, or the places of batch `batch` when
/// `carrier`.
fn placeholder(data_type: &DataType, rows: usize, carrier: Option<u32>) -> Result<ArrayRef> {
    if let Some(batch) = carrier {
        let views: Vec<u128> = (0..rows).map(|r| place_view(batch, r as u32)).collect();
        return Ok(match data_type {
            DataType::Utf8View => Arc::new(StringViewArray::try_new(ScalarBuffer::from(views), vec![], None)?),
            DataType::BinaryView => Arc::new(BinaryViewArray::try_new(ScalarBuffer::from(views), vec![], None)?),
            other => return internal_err!("PayloadStashExec: places are carried by a view column, not {other}"),
        });
    }
    ScalarValue::new_default(data_type)?.to_array_of_size(rows)
}

/// The types held aside: text and bytes.
fn is_payload_type(t: &DataType) -> bool {
    matches!(t, DataType::Utf8View | DataType::BinaryView | DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary)
}

/// What a [`PayloadExec`] does with the payload columns.
#[derive(Debug, Clone)]
pub enum PayloadStep {
    /// Below the join, on its build side (`PayloadStashExec`): takes the payload columns out of
    /// each batch into the stash and puts placeholders in.
    Stash {
        /// The payload columns of the input, in stash order.
        columns: Vec<usize>,
        /// Which of `columns` carries the places.
        carrier: usize,
    },
    /// Above the top N (`PayloadGatherExec`): puts the held values of the rows kept back.
    Gather {
        /// (column, stash column) of each payload column the top N outputs.
        columns: Vec<(usize, usize)>,
        /// The column that carries the places.
        carrier: usize,
    },
}

/// The two ends of a payload held aside, sharing one stash: see the module documentation.
#[derive(Debug)]
pub struct PayloadExec {
    input: Arc<dyn ExecutionPlan>,
    step: PayloadStep,
    stash: Arc<Stash>,
    props: Arc<PlanProperties>,
}

impl PayloadExec {
    fn new(input: Arc<dyn ExecutionPlan>, step: PayloadStep, stash: Arc<Stash>) -> Self {
        let props = match step {
            // the input's partitioning, but no order or constant: its placeholders have neither
            PayloadStep::Stash { .. } => {
                let p = input.properties();
                Arc::new(PlanProperties::new(EquivalenceProperties::new(input.schema()), p.partitioning.clone(), p.emission_type, p.boundedness))
            }
            PayloadStep::Gather { .. } => Arc::clone(input.properties()),
        };
        Self { input, step, stash, props }
    }
}

impl DisplayAs for PayloadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.input.schema();
        let name = |i: usize| schema.fields().get(i).map_or("?", |f| f.name().as_str());
        match &self.step {
            PayloadStep::Stash { columns, carrier } => {
                let names: Vec<&str> = columns.iter().map(|&i| name(i)).collect();
                let carrier = columns.get(*carrier).map_or("?", |&i| name(i));
                write!(f, "PayloadStashExec: holds [{}] aside until the top N, places in {carrier}", names.join(", "))
            }
            PayloadStep::Gather { columns, .. } => {
                let names: Vec<&str> = columns.iter().map(|&(i, _)| name(i)).collect();
                write!(f, "PayloadGatherExec: [{}] of the rows kept", names.join(", "))
            }
        }
    }
}

impl ExecutionPlan for PayloadExec {
    fn name(&self) -> &str {
        match self.step {
            PayloadStep::Stash { .. } => "PayloadStashExec",
            PayloadStep::Gather { .. } => "PayloadGatherExec",
        }
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

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("{} takes one input", self.name());
        }
        Ok(Arc::new(Self::new(children.swap_remove(0), self.step.clone(), Arc::clone(&self.stash))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = self.input.schema();
        let (step, stash, out) = (self.step.clone(), Arc::clone(&self.stash), Arc::clone(&schema));
        let done = matches!(step, PayloadStep::Gather { .. })
            .then(|| GatherDone { stash: Arc::clone(&stash), partitions: self.input.output_partitioning().partition_count() });
        let stream = input.map(move |batch| {
            let _done = &done;
            match &step {
                PayloadStep::Stash { columns, carrier } => hold(batch?, &out, columns, *carrier, &stash, &context),
                PayloadStep::Gather { columns, carrier } => gather(batch?, &out, columns, *carrier, &stash),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// `batch` with its payload `columns` held in the stash and placeholders in their place.
fn hold(batch: RecordBatch, schema: &SchemaRef, columns: &[usize], carrier: usize, stash: &Stash, context: &Arc<TaskContext>) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(batch);
    }
    let held: Vec<ArrayRef> = columns.iter().map(|&i| Arc::clone(batch.column(i))).collect();
    let number = stash.hold(held, context)?;
    let mut all = batch.columns().to_vec();
    for (k, &i) in columns.iter().enumerate() {
        all[i] = placeholder(schema.field(i).data_type(), rows, (k == carrier).then_some(number))?;
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), all)?)
}

/// `batch` with its payload columns gathered from the stash by the places its carrier holds.
fn gather(batch: RecordBatch, schema: &SchemaRef, columns: &[(usize, usize)], carrier: usize, stash: &Stash) -> Result<RecordBatch> {
    if batch.num_rows() == 0 {
        return Ok(batch);
    }
    let places = batch.column(carrier);
    if places.null_count() > 0 {
        return internal_err!("PayloadGatherExec: a kept row has no place");
    }
    let views = match places.data_type() {
        DataType::Utf8View => places.as_string_view().views(),
        DataType::BinaryView => places.as_binary_view().views(),
        other => return internal_err!("PayloadGatherExec: places in a {other} column"),
    };
    // each stash batch the rows come from, numbered in the order first met
    let mut local: HashMap<u32, usize> = HashMap::new();
    let mut from: Vec<u32> = Vec::new();
    let mut indices: Vec<(usize, usize)> = Vec::with_capacity(views.len());
    for v in views.iter() {
        let (b, r) = place_of(*v).ok_or_else(|| internal_datafusion_err!("PayloadGatherExec: a kept row's place is not one the stash gave"))?;
        let at = *local.entry(b).or_insert_with(|| {
            from.push(b);
            from.len() - 1
        });
        indices.push((at, r as usize));
    }
    let held = stash.held.lock().map_err(|_| internal_datafusion_err!("PayloadGatherExec: a task panicked while it held the stash"))?;
    // the stash batches the rows come from, in the order of `from`
    let batches: Vec<&Vec<ArrayRef>> = from
        .iter()
        .map(|b| held.batches.get(*b as usize).ok_or_else(|| internal_datafusion_err!("PayloadGatherExec: batch {b} is not in the stash")))
        .collect::<Result<_>>()?;
    if indices.iter().any(|(at, r)| batches.get(*at).and_then(|c| c.first()).is_none_or(|c| *r >= c.len())) {
        return internal_err!("PayloadGatherExec: a kept row's place is not in the stash");
    }
    let mut all = batch.columns().to_vec();
    for &(out, k) in columns {
        let values: Vec<&dyn Array> = batches
            .iter()
            .map(|c| c.get(k).map(|a| a.as_ref()).ok_or_else(|| internal_datafusion_err!("PayloadGatherExec: no stash column {k}")))
            .collect::<Result<_>>()?;
        all[out] = datafusion::arrow::compute::interleave(&values, &indices)?;
    }
    drop(held);
    Ok(RecordBatch::try_new(Arc::clone(schema), all)?)
}

/// Plans the two ends of a [`PayloadExec`] around a [`BoundedTopNExec`] or a top K over an
/// inner hash join. See the module documentation.
#[derive(Debug, Default)]
pub struct LatePayloadRule;

impl PhysicalOptimizerRule for LatePayloadRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match late_payload(&node)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ferris_late_payload"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The plan with the payload held aside, when `node` is a top N over a join with a payload.
fn late_payload(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // what the top N reads, and which of its input's columns (and its rank) it outputs
    let (top_reads, projection): (Vec<Arc<dyn PhysicalExpr>>, Option<Vec<usize>>) = if let Some(top) = node.downcast_ref::<BoundedTopNExec>() {
        let config = top.config();
        let reads = config.partition_by.iter().chain(config.order_by.iter().map(|o| &o.expr)).chain(top.route().into_iter().flatten()).cloned().collect();
        (reads, config.projection.clone())
    } else if let Some(sort) = node.downcast_ref::<SortExec>().filter(|s| s.fetch().is_some() && !node.boundedness().is_unbounded()) {
        // ORDER BY … LIMIT n: DataFusion's top K, partition by partition
        (sort.expr().iter().map(|e| Arc::clone(&e.expr)).collect(), None)
    } else {
        return Ok(None);
    };
    let Some(child) = node.children().first().map(|c| Arc::clone(*c)) else { return Ok(None) };
    // a projection of columns alone (a rename, a reorder) may stand between it and the join
    let (renames, join_node) = match child.downcast_ref::<ProjectionExec>() {
        Some(p) => {
            let columns: Option<Vec<usize>> = p.expr().iter().map(|e| e.expr.downcast_ref::<Column>().map(Column::index)).collect();
            let Some(columns) = columns else { return Ok(None) };
            (Some(columns), Arc::clone(p.input()))
        }
        None => (None, Arc::clone(&child)),
    };
    let Some(join) = join_node.downcast_ref::<HashJoinExec>() else { return Ok(None) };
    if *join.join_type() != JoinType::Inner {
        return Ok(None);
    }
    let left = Arc::clone(join.left());
    let left_schema = left.schema();
    let width = left_schema.fields().len();
    // the build side's column of each of the join's output columns (its projection, if any,
    // picks from the build side's columns and then the probe side's)
    let joined = join_node.schema().fields().len();
    let left_of = |o: usize| -> Option<usize> {
        let i = match &join.projection {
            Some(p) => *p.get(o)?,
            None => o,
        };
        (o < joined && i < width).then_some(i)
    };
    // the same for the top N's input columns
    let left_of = |o: usize| match &renames {
        Some(r) => r.get(o).copied().and_then(left_of),
        None => left_of(o),
    };
    // the build side's columns something below the gather reads
    let mut read: HashSet<usize> = HashSet::new();
    for (l, _) in join.on() {
        read.extend(collect_columns(l).iter().map(|c| c.index()));
    }
    if let Some(f) = join.filter() {
        read.extend(f.column_indices().iter().filter(|c| c.side == JoinSide::Left).map(|c| c.index));
    }
    for e in &top_reads {
        read.extend(collect_columns(e).iter().filter_map(|c| left_of(c.index())));
    }
    // the payload the top N outputs: (build side's column, the top N's output column)
    let out_of_top = |t: usize| match &projection {
        Some(p) => p.get(t).copied(),
        None => Some(t),
    };
    let outputs = node.schema().fields().len();
    let payload: Vec<(usize, usize)> = (0..outputs)
        .filter_map(|t| out_of_top(t).and_then(left_of).map(|i| (i, t)))
        .filter(|(i, _)| !read.contains(i) && is_payload_type(left_schema.field(*i).data_type()))
        .collect();
    let mut columns: Vec<usize> = payload.iter().map(|(i, _)| *i).collect();
    columns.sort_unstable();
    columns.dedup();
    let is_view = |i: usize| matches!(left_schema.field(i).data_type(), DataType::Utf8View | DataType::BinaryView);
    let Some(carrier) = columns.iter().position(|i| is_view(*i)) else { return Ok(None) };
    let Some(carrier_out) = payload.iter().find(|(i, _)| *i == columns[carrier]).map(|(_, t)| *t) else { return Ok(None) };
    let stash = Arc::new(Stash::default());
    let stash_over = |input: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        Arc::new(PayloadExec::new(input, PayloadStep::Stash { columns: columns.clone(), carrier }, Arc::clone(&stash)))
    };
    // below a repartitioning: it then moves placeholders too (it hashes the join's keys; one
    // that keeps an order might merge by a payload column: not there)
    if let Some(r) = left.downcast_ref::<RepartitionExec>() {
        let hashed = match r.partitioning() {
            datafusion::physical_plan::Partitioning::Hash(by, _) => by.iter().flat_map(|e| collect_columns(e).into_iter().map(|c| c.index())).collect(),
            _ => Vec::new(),
        };
        if r.preserve_order() || hashed.iter().any(|i| columns.contains(i)) {
            return Ok(None);
        }
    }
    let new_left = match left.downcast_ref::<RepartitionExec>() {
        Some(r) => Arc::clone(&left).replace_children(vec![stash_over(Arc::clone(r.input()))], recompute())?,
        None => stash_over(Arc::clone(&left)),
    };
    let new_join = Arc::clone(&join_node).replace_children(vec![new_left, Arc::clone(join.right())], recompute())?;
    let new_child = match renames {
        Some(_) => Arc::clone(&child).replace_children(vec![new_join], recompute())?,
        None => new_join,
    };
    let new_top = Arc::clone(node).replace_children(vec![new_child], recompute())?;
    let gathered = payload.iter().filter_map(|(i, t)| columns.iter().position(|c| c == i).map(|k| (*t, k))).collect();
    Ok(Some(Arc::new(PayloadExec::new(new_top, PayloadStep::Gather { columns: gathered, carrier: carrier_out }, stash))))
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_tables::{rows_and_plan, table};

    /// 200 auctions: text as views (a long description, every 7th NULL) and as plain text, a
    /// lifetime of 50 s; 5 000 bids on 211 ids (some of no auction), prices that tie, unique
    /// times, a note as a view.
    fn tables() -> (Arc<MemTable>, Arc<MemTable>) {
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
        let auctions = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, false),
            Field::new("descr", DataType::Utf8View, true),
            Field::new("t0", ts(), false),
            Field::new("t1", ts(), false),
            Field::new("extra", DataType::Utf8, false),
        ]);
        let a = table(auctions, 200, |f, r| -> ArrayRef {
            match f.name().as_str() {
                "id" => Arc::new(Int64Array::from_iter_values(r.map(|n| n as i64))),
                "name" => Arc::new(StringViewArray::from_iter_values(r.map(|n| format!("item {}", n % 50)))),
                "descr" => Arc::new(StringViewArray::from_iter(
                    r.map(|n| (n % 7 != 3).then(|| format!("the description of auction {n}, long enough to be out of line"))),
                )),
                "t0" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 1_000))),
                "t1" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| n as i64 * 1_000 + 50_000))),
                _ => Arc::new(StringArray::from_iter_values(r.map(|n| format!("x{n}")))),
            }
        });
        let bids = Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("price", DataType::Int64, false),
            Field::new("t", ts(), false),
            Field::new("note", DataType::Utf8View, false),
        ]);
        let b = table(bids, 5_000, |f, r| -> ArrayRef {
            match f.name().as_str() {
                "auction" => Arc::new(Int64Array::from_iter_values(r.map(|n| (n * 37 % 211) as i64))),
                "price" => Arc::new(Int64Array::from_iter_values(r.map(|n| (n * 7_919 % 40) as i64))),
                "t" => Arc::new(TimestampMillisecondArray::from_iter_values(r.map(|n| (n * 7_901 % 5_003) as i64 * 47))),
                _ => Arc::new(StringViewArray::from_iter_values(r.map(|n| format!("note {}", n % 9)))),
            }
        });
        (a, b)
    }

    /// Top N per key over joins, with and without the payload held aside: the same rows; the
    /// plan holds it aside exactly where a view column of the build side is output and read by
    /// nothing below the top N.
    #[test]
    fn the_rows_kept_get_their_own_text_back() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (a, b) = tables();
            for partitioned in [true, false] {
                let config = || {
                    let c = SessionConfig::new().with_target_partitions(2).with_batch_size(256);
                    if partitioned {
                        c.set_usize("datafusion.optimizer.hash_join_single_partition_threshold", 0)
                            .set_usize("datafusion.optimizer.hash_join_single_partition_threshold_rows", 0)
                    } else {
                        c
                    }
                };
                let plain = SessionContext::new_with_config(config());
                let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
                let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
                rules.insert(at, Arc::new(LatePayloadRule));
                rules.insert(at, Arc::new(crate::top_n::StreamTopNRule::default()));
                let state = SessionStateBuilder::new().with_config(config()).with_default_features().with_physical_optimizer_rules(rules).build();
                let ours = SessionContext::new_with_state(state);
                for ctx in [&plain, &ours] {
                    ctx.register_table("a", Arc::clone(&a) as _).unwrap();
                    ctx.register_table("b", Arc::clone(&b) as _).unwrap();
                }
                let top = |select: &str, window: &str, on: &str, keep: &str| {
                    format!("SELECT * FROM (SELECT {select}, ROW_NUMBER() OVER ({window}) AS rn FROM a JOIN b ON {on}) WHERE {keep}")
                };
                let lifetime = "a.id = b.auction AND b.t BETWEEN a.t0 AND a.t1";
                for (sql, held) in [
                    // q9: each auction with its best bid, all its columns
                    (top("a.*, b.price, b.t AS bt, b.note", "PARTITION BY a.id ORDER BY b.price DESC, b.t", lifetime, "rn <= 1"), true),
                    // three per auction, NULL descriptions among them
                    (top("a.descr, a.id, b.price, b.note", "PARTITION BY a.id ORDER BY b.price, b.t DESC", "a.id = b.auction", "rn <= 3"), true),
                    // the name is a key: the description alone is held
                    (top("a.name, a.descr, b.price", "PARTITION BY a.name ORDER BY b.price DESC, b.t", "a.id = b.auction", "rn <= 2"), true),
                    // the join reads the name: the description alone is held
                    (top("a.name, a.descr, a.extra, b.price", "PARTITION BY a.id ORDER BY b.t", "a.id = b.auction AND a.name <> b.note", "rn = 1"), true),
                    // only plain text is output: nothing to carry the places
                    (top("a.extra, a.id, b.price", "PARTITION BY a.id ORDER BY b.t DESC", "a.id = b.auction", "rn <= 2"), false),
                    // DataFusion's top K (bids' times are unique: no ties at the limit)
                    (format!("SELECT a.*, b.price, b.t AS bt FROM a JOIN b ON {lifetime} ORDER BY b.t DESC LIMIT 150"), true),
                    ("SELECT a.name, a.descr, b.note, b.t FROM a JOIN b ON a.id = b.auction ORDER BY b.price, b.t LIMIT 300".to_string(), true),
                    // ordered by the text itself: nothing else to hold
                    ("SELECT a.descr, b.t FROM a JOIN b ON a.id = b.auction ORDER BY a.descr DESC, b.t LIMIT 200".to_string(), false),
                ] {
                    let (want, plan) = rows_and_plan(&plain, &sql).await;
                    assert!(!plan.contains("Payload"), "{plan}");
                    let (got, plan) = rows_and_plan(&ours, &sql).await;
                    assert!(plan.contains("BoundedTopNExec") || plan.contains("TopK"), "{sql}\n{plan}");
                    assert_eq!(plan.contains("PayloadGatherExec") && plan.contains("PayloadStashExec"), held, "{sql}\n{plan}");
                    assert!(want.len() > 100, "{sql}: {} rows", want.len());
                    assert_eq!(got, want, "{sql} (partitioned: {partitioned})\n{plan}");
                }
                // once every kept row is out, the stash lets its columns and memory go
                let sql = top("a.*, b.price", "PARTITION BY a.id ORDER BY b.price DESC, b.t", lifetime, "rn <= 1");
                let plan = ours.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
                let rows: usize = datafusion::physical_plan::collect(Arc::clone(&plan), ours.task_ctx()).await.unwrap().iter().map(RecordBatch::num_rows).sum();
                assert!(rows > 100);
                let mut stashes = Vec::new();
                plan.apply(|node| {
                    if let Some(p) = node.downcast_ref::<PayloadExec>() {
                        let held = p.stash.held.lock().unwrap();
                        stashes.push((held.batches.len(), held.bytes));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
                assert_eq!(stashes, vec![(0, 0), (0, 0)]);
            }
        });
    }

    #[test]
    fn a_place_reads_back_as_written() {
        for (b, r) in [(0, 0), (1, 8191), (u32::MAX, u32::MAX), (12_345, 0), (0, u32::MAX)] {
            let v = place_view(b, r);
            assert_eq!(place_of(v), Some((b, r)));
            // a valid ASCII string of 11 characters, inline
            let a = StringViewArray::try_new(ScalarBuffer::from(vec![v]), vec![], None).unwrap();
            assert_eq!(a.value(0).len(), PLACE_CHARS);
            assert!(a.value(0).is_ascii());
        }
        assert_eq!(place_of(0), None);
    }
}
