//! `StreamTopNExec`: keeps the first `N` rows of each `PARTITION BY` key in the `ORDER BY`
//! order (ties in arrival order, as `ROW_NUMBER` numbers them) and writes the changes of that
//! set after each input batch: `DELETE` for the rows that left it (or moved, when the rank is
//! selected), then `UPSERT` for the rows that entered it. Its state is the kept rows, encoded
//! as Arrow rows; it is accounted in the job's memory pool and written to checkpoints.
//! With `'state.ttl'`, a key that no row has come for in that long (processing time) is
//! forgotten, without output: a later row of it starts a new top N (a duplicate after that
//! long is a first row again).
//!
//! ```sql
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
//! WHERE rank_number <= 10
//! -- StreamTopNExec: partition_by=[auction], order_by=[price DESC], n=10
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream};
use futures::StreamExt;

use crate::checkpoint::operator::{execute_inputs, spawn_operator, Alignment, Checkpointing, InputItem, Inputs, Tagged};
use crate::checkpoint::state::{batch_of, OperatorState, StateTable};
use crate::window::aggregate_exec::OP_COLUMN;

/// What the operator computes; shared by its copies in a plan.
#[derive(Debug, Clone)]
pub struct TopNConfig {
    /// `PARTITION BY`, over the input's columns.
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// `ORDER BY`, over the input's columns.
    pub order_by: Vec<PhysicalSortExpr>,
    /// Rows kept per key.
    pub limit: usize,
    /// The rank column (`ROW_NUMBER`'s), appended to the input's columns.
    pub rank_field: Arc<Field>,
    /// Which of input + rank columns go out (the filter's projection).
    pub projection: Option<Vec<usize>>,
    /// Whether a change of rank alone is a change of the output (the rank is selected).
    pub rank_visible: bool,
    /// Whether the output carries the `_op` column.
    pub op_column: bool,
    /// `'state.ttl'`: a key no row has come for in this long is forgotten.
    pub state_ttl: Option<std::time::Duration>,
}

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct StreamTopNExec {
    input: Arc<dyn ExecutionPlan>,
    config: TopNConfig,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl StreamTopNExec {
    /// The top `config.limit` rows of each key of `input`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, config: TopNConfig) -> Result<Self> {
        if config.limit == 0 {
            return internal_err!("StreamTopNExec keeps at least one row per key");
        }
        let in_schema = input.schema();
        let mut fields: Vec<Arc<Field>> = in_schema.fields().iter().cloned().collect();
        fields.push(Arc::clone(&config.rank_field));
        let mut fields: Vec<Arc<Field>> = match &config.projection {
            Some(p) => p.iter().filter_map(|&i| fields.get(i).cloned()).collect(),
            None => fields,
        };
        if config.op_column {
            fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, in_schema.metadata().clone()));
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Unbounded { requires_infinite_memory: false },
        );
        Ok(Self { input, config, schema, props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new() })
    }

    /// What it computes.
    pub fn config(&self) -> &TopNConfig {
        &self.config
    }

    /// The same operator with a last `_op` column (`UPSERT` / `DELETE`) on its output.
    pub fn with_operation_column(&self) -> Result<Self> {
        Self::try_new(Arc::clone(&self.input), TopNConfig { op_column: true, ..self.config.clone() })
    }

    /// The same operator whose rank column is not read above it: a row that only changes rank
    /// is not a change.
    pub fn with_rank_hidden(&self) -> Result<Self> {
        Self::try_new(Arc::clone(&self.input), TopNConfig { rank_visible: false, ..self.config.clone() })
    }

    /// The index of the rank column in the output, if it goes out.
    pub fn rank_output_index(&self) -> Option<usize> {
        let rank = self.input.schema().fields().len();
        match &self.config.projection {
            Some(p) => p.iter().position(|&i| i == rank),
            None => Some(rank),
        }
    }
}

impl DisplayAs for StreamTopNExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.config.partition_by.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.config.order_by.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "StreamTopNExec: partition_by=[{}], order_by=[{}], n={}, emits=changes{}",
            keys.join(", "),
            order.join(", "),
            self.config.limit,
            if self.config.rank_visible { " (rank selected)" } else { "" }
        )?;
        match self.config.state_ttl {
            Some(ttl) => f.write_str(&crate::window::aggregate_exec::expiring_state(ttl)),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for StreamTopNExec {
    fn name(&self) -> &str {
        "StreamTopNExec"
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
        super::visit_keys_and_order(&self.config.partition_by, &self.config.order_by, f)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("StreamTopNExec takes one input");
        }
        Ok(Arc::new(Self::try_new(children.swap_remove(0), self.config.clone())?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("StreamTopNExec has one output partition, asked for {partition}");
        }
        let mut inputs = Inputs::new();
        let partitions = execute_inputs(&self.input, 0, &context, &mut inputs)?;
        let mut memory = crate::memory::StateMemory::new(&context, "StreamTopNExec (the top rows of each key)", "a smaller N, or fewer PARTITION BY keys");
        let checkpointing = Checkpointing::find(&context, crate::checkpoint::node_address(self));
        let mut state = TopNState::try_new(self.input.schema(), self.config.clone(), Arc::clone(&self.schema), &self.metrics)?;
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        Ok(spawn_operator(Arc::clone(&self.schema), baseline, move |out| async move {
            let Inputs { streams, scopes, keys } = inputs;
            let mut align = Alignment::new(&keys);
            if let Some(restored) = checkpointing.as_ref().and_then(Checkpointing::restored) {
                state.restore(&restored)?;
            }
            let mut streams: Vec<futures::stream::BoxStream<'static, Option<Tagged>>> = streams.into_iter().map(|s| s.map(Some).boxed()).collect();
            if let Some(every) = state.expiry_every() {
                // idle keys expire while the input is quiet too
                streams.push(
                    futures::stream::unfold((), move |_| async move {
                        tokio::time::sleep(every).await;
                        Some((None, ()))
                    })
                    .boxed(),
                );
            }
            let mut merged = futures::stream::select_all(streams);
            // (the timer never ends: the loop ends when every input partition has)
            let mut remaining = partitions;
            while remaining > 0 {
                let Some(next) = merged.next().await else { break };
                let Some((_, p, item)) = next else {
                    state.expire();
                    memory.account(state.bytes + state.seen_bytes)?;
                    continue;
                };
                let (rows, barrier) = match item? {
                    InputItem::Batch(batch) => (state.push(&batch)?, None),
                    InputItem::End => {
                        remaining -= 1;
                        (None, align.ended((0, p)))
                    }
                    InputItem::Barrier(b) => (None, align.barrier((0, p), b)),
                    InputItem::Watermark(_) => (None, None),
                };
                memory.account(state.bytes + state.seen_bytes)?;
                if let Some(rows) = rows {
                    if !out.batches(vec![rows]).await {
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

/// One kept row: its `ORDER BY` values (comparable bytes), its arrival, its columns.
#[derive(Debug, Clone)]
struct Entry {
    order: OwnedRow,
    seq: u64,
    row: OwnedRow,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.order.row().as_ref().len() + self.row.row().as_ref().len() + std::mem::size_of::<Self>() + 2 * std::mem::size_of::<usize>()
    }

    fn before(&self, order: &[u8], seq: u64) -> bool {
        (self.order.row().as_ref(), self.seq) < (order, seq)
    }
}

/// Bytes of one entry of [`TopNState::seen`] besides its key: the time, the box and the table slot.
const SEEN_ENTRY: usize = 8 + 2 * std::mem::size_of::<usize>() + 8;

struct TopNState {
    config: TopNConfig,
    input_schema: SchemaRef,
    out_schema: SchemaRef,
    /// Encodes `PARTITION BY` values (none: one key).
    keys: Option<RowConverter>,
    order: RowConverter,
    rows: RowConverter,
    /// The kept rows of each key, best first.
    kept: HashMap<Box<[u8]>, Vec<Entry>>,
    next_seq: u64,
    /// Bytes of state, for the memory pool.
    bytes: usize,
    /// Rows kept.
    count: usize,
    /// With `state.ttl`: when a row of each key last came (Unix milliseconds).
    seen: HashMap<Box<[u8]>, i64>,
    /// Bytes of `seen`, for the memory pool.
    seen_bytes: usize,
    /// With `state.ttl`: when keys were last looked at for expiry.
    last_expiry: std::time::Instant,
    state_rows: Gauge,
    state_bytes: Gauge,
    expired: Count,
}

impl TopNState {
    fn try_new(input_schema: SchemaRef, config: TopNConfig, out_schema: SchemaRef, metrics: &ExecutionPlanMetricsSet) -> Result<Self> {
        let types = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| -> Result<Vec<DataType>> { exprs.map(|e| e.data_type(&input_schema)).collect() };
        let key_types = types(&mut config.partition_by.iter())?;
        let keys = if key_types.is_empty() { None } else { Some(RowConverter::new(key_types.into_iter().map(SortField::new).collect())?) };
        let order_types = types(&mut config.order_by.iter().map(|o| &o.expr))?;
        let order = RowConverter::new(order_types.into_iter().zip(&config.order_by).map(|(t, o)| SortField::new_with_options(t, o.options)).collect())?;
        let rows = RowConverter::new(input_schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(Self {
            config,
            input_schema,
            out_schema,
            keys,
            order,
            rows,
            kept: HashMap::new(),
            next_seq: 0,
            bytes: 0,
            count: 0,
            seen: HashMap::new(),
            seen_bytes: 0,
            last_expiry: std::time::Instant::now(),
            state_rows: MetricBuilder::new(metrics).gauge("state_rows", 0),
            state_bytes: MetricBuilder::new(metrics).gauge("state_bytes", 0),
            expired: MetricBuilder::new(metrics).counter("state_keys_expired", 0),
        })
    }

    /// How often keys are looked at for expiry (`state.ttl`).
    fn expiry_every(&self) -> Option<std::time::Duration> {
        self.config.state_ttl.map(crate::window::aggregate_exec::expiry_every)
    }

    /// Notes that rows of the keys `keys` came now.
    fn touch<'a>(&mut self, keys: impl Iterator<Item = &'a [u8]>) {
        let now = crate::window::aggregate_exec::unix_millis();
        for key in keys {
            match self.seen.get_mut(key) {
                Some(t) => *t = now,
                None => {
                    self.seen_bytes += key.len() + SEEN_ENTRY;
                    self.seen.insert(key.into(), now);
                }
            }
        }
    }

    /// `state.ttl`: forgets the keys no row has come for in that long.
    fn expire(&mut self) {
        let (Some(ttl), Some(every)) = (self.config.state_ttl, self.expiry_every()) else { return };
        if self.last_expiry.elapsed() < every {
            return;
        }
        self.last_expiry = std::time::Instant::now();
        let cutoff = crate::window::aggregate_exec::idle_since(ttl);
        let gone: Vec<Box<[u8]>> = self.seen.iter().filter(|(_, &t)| t < cutoff).map(|(k, _)| k.clone()).collect();
        for key in &gone {
            self.seen.remove(key);
            self.seen_bytes = self.seen_bytes.saturating_sub(key.len() + SEEN_ENTRY);
            if let Some(list) = self.kept.remove(key) {
                self.count -= list.len();
                self.bytes = self.bytes.saturating_sub(list.iter().map(Entry::bytes).sum::<usize>());
            }
        }
        self.expired.add(gone.len());
        self.state_rows.set(self.count);
        self.state_bytes.set(self.bytes);
    }

    fn evaluate(exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        exprs.map(|e| e.evaluate(batch)?.into_array(batch.num_rows())).collect()
    }

    /// Takes `batch` in; the changes it made, if any.
    fn push(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let seqs: Vec<u64> = (self.next_seq..self.next_seq + batch.num_rows() as u64).collect();
        self.next_seq += batch.num_rows() as u64;
        let changes = self.insert(batch, &seqs)?;
        self.output(changes)
    }

    /// Inserts the rows of `batch` (arrival numbers `seqs`); per changed key, its kept rows
    /// before the batch.
    fn insert(&mut self, batch: &RecordBatch, seqs: &[u64]) -> Result<HashMap<Box<[u8]>, Vec<Entry>>> {
        let mut before: HashMap<Box<[u8]>, Vec<Entry>> = HashMap::new();
        if batch.num_rows() == 0 {
            return Ok(before);
        }
        let key_rows = match &self.keys {
            Some(k) => Some(k.convert_columns(&Self::evaluate(&mut self.config.partition_by.iter(), batch)?)?),
            None => None,
        };
        let order_rows = self.order.convert_columns(&Self::evaluate(&mut self.config.order_by.iter().map(|o| &o.expr), batch)?)?;
        let limit = self.config.limit;
        if self.config.state_ttl.is_some() {
            // every row keeps its key alive, whether it enters the top N or not
            match &key_rows {
                Some(k) => self.touch(k.iter().map(|r| r.data())),
                None => self.touch(std::iter::once(&[][..])),
            }
        }
        let key_of = |i: usize| -> &[u8] { key_rows.as_ref().map_or(&[], |k| k.row(i).data()) };
        // a row after the N-th of its key (as the key stood before the batch: the batch only
        // raises the bar) changes nothing, and is never encoded
        let candidates: Vec<u32> = (0..batch.num_rows())
            .filter(|&i| {
                let (order, seq) = (order_rows.row(i), seqs[i]);
                !self.kept.get(key_of(i)).is_some_and(|l| l.len() >= limit && l.last().is_some_and(|last| last.before(order.data(), seq)))
            })
            .map(|i| i as u32)
            .collect();
        if candidates.is_empty() {
            return Ok(before);
        }
        let full_rows = if candidates.len() == batch.num_rows() {
            self.rows.convert_columns(batch.columns())?
        } else {
            let idx = datafusion::arrow::array::UInt32Array::from(candidates.clone());
            let picked =
                batch.columns().iter().map(|c| datafusion::arrow::compute::take(c.as_ref(), &idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
            self.rows.convert_columns(&picked)?
        };
        for (j, &i) in candidates.iter().enumerate() {
            let i = i as usize;
            let (key, order, seq) = (key_of(i), order_rows.row(i), seqs[i]);
            if !self.kept.contains_key(key) {
                self.kept.insert(key.into(), Vec::with_capacity(limit.min(16)));
            }
            let Some(list) = self.kept.get_mut(key) else { continue };
            if list.len() >= limit && list.last().is_some_and(|last| last.before(order.data(), seq)) {
                continue;
            }
            if !before.contains_key(key) {
                before.insert(key.into(), list.clone());
            }
            let at = list.partition_point(|e| e.before(order.data(), seq));
            let entry = Entry { order: order.owned(), seq, row: full_rows.row(j).owned() };
            self.bytes += entry.bytes();
            self.count += 1;
            list.insert(at, entry);
            if list.len() > limit {
                if let Some(out) = list.pop() {
                    self.bytes = self.bytes.saturating_sub(out.bytes());
                    self.count -= 1;
                }
            }
        }
        self.state_rows.set(self.count);
        self.state_bytes.set(self.bytes);
        Ok(before)
    }

    /// The changes of the keys in `before` as output rows: deletes, then upserts.
    fn output(&self, before: HashMap<Box<[u8]>, Vec<Entry>>) -> Result<Option<RecordBatch>> {
        let mut deletes: Vec<(&Entry, u64)> = Vec::new();
        let mut upserts: Vec<(&Entry, u64)> = Vec::new();
        for (key, old) in &before {
            let new: &[Entry] = self.kept.get(key).map_or(&[], Vec::as_slice);
            if self.config.rank_visible {
                for r in 0..old.len().max(new.len()) {
                    let (o, n) = (old.get(r), new.get(r));
                    if o.map(|e| e.seq) == n.map(|e| e.seq) {
                        continue;
                    }
                    if let Some(o) = o {
                        deletes.push((o, r as u64 + 1));
                    }
                    if let Some(n) = n {
                        upserts.push((n, r as u64 + 1));
                    }
                }
            } else {
                for (r, o) in old.iter().enumerate() {
                    if !new.iter().any(|n| n.seq == o.seq) {
                        deletes.push((o, r as u64 + 1));
                    }
                }
                for (r, n) in new.iter().enumerate() {
                    if !old.iter().any(|o| o.seq == n.seq) {
                        upserts.push((n, r as u64 + 1));
                    }
                }
            }
        }
        self.rows_out(&deletes, &upserts)
    }

    /// Output rows: `deletes` (`_op = 'DELETE'`), then `upserts`, each with its rank.
    fn rows_out(&self, deletes: &[(&Entry, u64)], upserts: &[(&Entry, u64)]) -> Result<Option<RecordBatch>> {
        let count = deletes.len() + upserts.len();
        if count == 0 {
            return Ok(None);
        }
        let all = deletes.iter().chain(upserts.iter());
        let mut columns = self.rows.convert_rows(all.clone().map(|(e, _)| e.row.row()))?;
        columns.push(Arc::new(UInt64Array::from_iter_values(all.map(|(_, r)| *r))));
        let mut columns: Vec<ArrayRef> = match &self.config.projection {
            Some(p) => p.iter().filter_map(|&i| columns.get(i).cloned()).collect(),
            None => columns,
        };
        if self.config.op_column {
            let ops = std::iter::repeat_n("DELETE", deletes.len()).chain(std::iter::repeat_n("UPSERT", upserts.len()));
            columns.push(Arc::new(StringArray::from_iter_values(ops)));
        }
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(count));
        Ok(Some(RecordBatch::try_new_with_options(Arc::clone(&self.out_schema), columns, &options)?))
    }

    /// The kept rows with their arrival numbers, for a checkpoint.
    fn snapshot(&self) -> Result<OperatorState> {
        let entries: Vec<(&[u8], &Entry)> = self.kept.iter().flat_map(|(k, list)| list.iter().map(move |e| (k.as_ref(), e))).collect();
        let mut tables = Vec::new();
        if !entries.is_empty() {
            let mut columns = self.rows.convert_rows(entries.iter().map(|(_, e)| e.row.row()))?;
            columns.push(Arc::new(UInt64Array::from_iter_values(entries.iter().map(|(_, e)| e.seq))));
            if self.config.state_ttl.is_some() {
                // when a row of its key last came, after the arrival number
                let now = crate::window::aggregate_exec::unix_millis();
                columns.push(Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                    entries.iter().map(|(k, _)| self.seen.get(*k).copied().unwrap_or(now)),
                )));
            }
            let key_columns: Vec<usize> =
                self.config.partition_by.iter().filter_map(|e| e.downcast_ref::<datafusion::physical_expr::expressions::Column>().map(|c| c.index())).collect();
            let key_columns = if key_columns.len() == self.config.partition_by.len() { key_columns } else { Vec::new() };
            tables.push(StateTable {
                name: "kept".into(),
                batch: batch_of(columns, entries.len()).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
                key_columns,
            });
        }
        Ok(OperatorState { meta: serde_json::json!({ "next_seq": self.next_seq }), tables })
    }

    /// Restores [`TopNState::snapshot`].
    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        self.next_seq = state.meta["next_seq"].as_u64().unwrap_or(0);
        if let Some(kept) = state.table("kept") {
            let n = self.input_schema.fields().len();
            let Some(seqs) = kept.column(n).as_any().downcast_ref::<UInt64Array>() else {
                return internal_err!("StreamTopNExec: the checkpoint's arrival column is not UInt64");
            };
            let seqs: Vec<u64> = seqs.values().to_vec();
            let rows = crate::checkpoint::state::restored_batch(&self.input_schema, &kept.columns()[..n])?;
            self.insert(&rows, &seqs)?;
            // the keys' last rows, when the checkpoint holds them (else: now, as inserted)
            let seen = kept.columns().get(n + 1).and_then(|c| c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>());
            if let (Some(seen), Some(keys)) = (seen, &self.keys) {
                let key_rows = keys.convert_columns(&Self::evaluate(&mut self.config.partition_by.iter(), &rows)?)?;
                for (i, key) in key_rows.iter().enumerate() {
                    self.seen.insert(key.data().into(), seen.value(i));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::expressions::Column;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, false)]))
    }

    fn state(limit: usize, rank_visible: bool) -> TopNState {
        let config = TopNConfig {
            partition_by: vec![Arc::new(Column::new("k", 0))],
            order_by: vec![PhysicalSortExpr { expr: Arc::new(Column::new("v", 1)), options: SortOptions { descending: true, nulls_first: false } }],
            limit,
            rank_field: Arc::new(Field::new("rn", DataType::UInt64, false)),
            projection: None,
            rank_visible,
            op_column: true,
            state_ttl: None,
        };
        let exec_schema = {
            let mut f: Vec<Arc<Field>> = schema().fields().iter().cloned().collect();
            f.push(Arc::clone(&config.rank_field));
            f.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
            Arc::new(Schema::new(f))
        };
        TopNState::try_new(schema(), config, exec_schema, &ExecutionPlanMetricsSet::new()).unwrap()
    }

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))), Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)))],
        )
        .unwrap()
    }

    fn changes(b: Option<RecordBatch>) -> Vec<String> {
        let Some(b) = b else { return Vec::new() };
        let (k, v, r, op) = (
            b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            b.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            b.column(2).as_primitive::<datafusion::arrow::datatypes::UInt64Type>(),
            b.column(3).as_string::<i32>(),
        );
        (0..b.num_rows()).map(|i| format!("{} k{} v{} #{}", op.value(i), k.value(i), v.value(i), r.value(i))).collect()
    }

    #[test]
    fn the_top_two_of_each_key_change_as_rows_come() {
        let mut s = state(2, true);
        let mut got = changes(s.push(&batch(&[(1, 10), (2, 5)])).unwrap());
        got.sort();
        assert_eq!(got, vec!["UPSERT k1 v10 #1", "UPSERT k2 v5 #1"]);
        // 20 goes first: 10 moves to rank 2
        let mut got = changes(s.push(&batch(&[(1, 20)])).unwrap());
        got.sort();
        assert_eq!(got, vec!["DELETE k1 v10 #1", "UPSERT k1 v10 #2", "UPSERT k1 v20 #1"]);
        // 1 is behind the top two: nothing
        assert!(changes(s.push(&batch(&[(1, 1)])).unwrap()).is_empty());
        // 15 pushes 10 out
        let mut got = changes(s.push(&batch(&[(1, 15)])).unwrap());
        got.sort();
        assert_eq!(got, vec!["DELETE k1 v10 #2", "UPSERT k1 v15 #2"]);
        // ties keep arrival order: a second 15 changes nothing
        assert!(changes(s.push(&batch(&[(1, 15)])).unwrap()).is_empty());
    }

    #[test]
    fn without_the_rank_only_entering_and_leaving_rows_are_changes() {
        let mut s = state(2, false);
        s.push(&batch(&[(1, 10), (1, 5)])).unwrap();
        // 20 enters and 5 leaves; 10's rank changes, which is no change here
        assert_eq!(changes(s.push(&batch(&[(1, 20)])).unwrap()), vec!["DELETE k1 v5 #2", "UPSERT k1 v20 #1"]);
        // within one batch a row that enters and leaves again is no change
        assert_eq!(changes(s.push(&batch(&[(1, 12), (1, 30)])).unwrap()), vec!["DELETE k1 v10 #2", "UPSERT k1 v30 #1"]);
    }

    /// `state.ttl`: a key no row came for in that long is forgotten (a row of another key does
    /// not keep it alive, a row of its own that does not enter its top N does), without output;
    /// its next row starts its top N afresh. The keys' times survive a checkpoint.
    #[test]
    fn idle_keys_expire_and_start_afresh() {
        let mut s = state(1, true);
        s.config.state_ttl = Some(std::time::Duration::from_millis(40));
        s.push(&batch(&[(1, 10), (2, 5), (3, 8)])).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        // k2 gets a row that does not enter (5 stays first): still a sign of life
        assert!(changes(s.push(&batch(&[(2, 1)])).unwrap()).is_empty());
        let snap = s.snapshot().unwrap();
        let seen = s.seen.clone();
        s.expire();
        assert_eq!((s.kept.len(), s.count), (1, 1), "k1 and k3 forgotten, k2 kept");
        // a restored copy knows the same times
        let mut r = state(1, true);
        r.config.state_ttl = s.config.state_ttl;
        r.restore(&snap).unwrap();
        assert_eq!(r.seen, seen);
        // k1 again, lower than before: a fresh first row, no DELETE of the forgotten 10
        assert_eq!(changes(s.push(&batch(&[(1, 3)])).unwrap()), vec!["UPSERT k1 v3 #1"]);
        assert_eq!(s.expired.value(), 2);
        assert_eq!(s.bytes, s.kept.values().flatten().map(Entry::bytes).sum::<usize>());
    }

    #[test]
    fn a_restored_state_goes_on_as_the_first() {
        let mut a = state(2, true);
        a.push(&batch(&[(1, 10), (1, 5), (2, 7)])).unwrap();
        let snap = a.snapshot().unwrap();
        let mut b = state(2, true);
        b.restore(&snap).unwrap();
        assert_eq!(b.bytes, a.bytes);
        let next = batch(&[(1, 7), (2, 9)]);
        let (mut x, mut y) = (changes(a.push(&next).unwrap()), changes(b.push(&next).unwrap()));
        x.sort();
        y.sort();
        assert_eq!(x, y);
        assert_eq!(x, vec!["DELETE k1 v5 #2", "DELETE k2 v7 #1", "UPSERT k1 v7 #2", "UPSERT k2 v7 #2", "UPSERT k2 v9 #1"]);
    }
}
