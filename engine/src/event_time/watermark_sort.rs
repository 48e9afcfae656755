//! `WatermarkSortExec`: puts a stream in event-time order. Rows wait until the watermark has
//! passed their time, then leave sorted by time (rows of equal time in arrival order). Rows
//! behind the watermark on arrival are late: counted (`late_rows_dropped`) and dropped, since
//! rows after them have already left.
//!
//! This is what lets DataFusion's window functions run on an unbounded stream: they need
//! their input ordered by the `ORDER BY` of the `OVER` clause.
//!
//! ```sql
//! SELECT device_id, ts, temperature,
//!        LAG(temperature, 1) OVER (PARTITION BY device_id ORDER BY ts) AS previous
//! FROM readings
//! WITH ('readings.event_time' = 'ts', 'readings.watermark.delay' = '5s', 'readings.watch' = 'true', …)
//! ```

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::lt;
use datafusion::arrow::compute::{
    concat, concat_batches, filter, filter_record_batch, is_not_null, lexsort_to_indices, max, not, take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::{to_epoch_millis, PartitionWatermarks, WatermarkConfig};
use crate::checkpoint::operator::{execute_inputs, spawn_operator, Alignment, Checkpointing, InputItem, Inputs};
use crate::checkpoint::state::{OperatorState, StateTable};

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct WatermarkSortExec {
    input: Arc<dyn ExecutionPlan>,
    order: PhysicalSortExpr,
    int_scale: i64,
    watermark: WatermarkConfig,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl WatermarkSortExec {
    /// Orders `input` by `order` (an ascending event-time expression).
    pub fn new(input: Arc<dyn ExecutionPlan>, order: PhysicalSortExpr, int_scale: i64, watermark: WatermarkConfig) -> Self {
        let schema = input.schema();
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        if let Some(lex) = LexOrdering::new(vec![order.clone()]) {
            eq.add_ordering(lex);
        }
        let boundedness = match input.boundedness() {
            Boundedness::Bounded => Boundedness::Bounded,
            Boundedness::Unbounded { .. } => Boundedness::Unbounded { requires_infinite_memory: false },
        };
        let props = PlanProperties::new(eq, Partitioning::UnknownPartitioning(1), EmissionType::Incremental, boundedness);
        Self { input, order, int_scale, watermark, props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for WatermarkSortExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WatermarkSortExec: order={}, watermark={}", self.order, self.watermark.describe())
    }
}

impl ExecutionPlan for WatermarkSortExec {
    fn name(&self) -> &str {
        "WatermarkSortExec"
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
        f(&self.order.expr)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("WatermarkSortExec takes one input");
        }
        Ok(Arc::new(Self::new(children.swap_remove(0), self.order.clone(), self.int_scale, self.watermark)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("WatermarkSortExec has one output partition, asked for {partition}");
        }
        let mut inputs = Inputs::new();
        let n = execute_inputs(&self.input, 0, &context, &mut inputs)?;
        let mut memory = crate::memory::StateMemory::new(&context, "WatermarkSortExec (rows ordered for window functions)", "a smaller watermark.delay");
        let checkpointing = Checkpointing::find(&context, crate::checkpoint::node_address(self));
        let mut state = SortState {
            time: Arc::clone(&self.order.expr),
            options: self.order.options,
            int_scale: self.int_scale,
            watermarks: PartitionWatermarks::new(self.watermark, n),
            buffer: Vec::new(),
            schema: self.schema(),
            late: MetricBuilder::new(&self.metrics).counter("late_rows_dropped", 0),
            untimed: MetricBuilder::new(&self.metrics).counter("rows_without_event_time", 0),
            state_rows: MetricBuilder::new(&self.metrics).gauge("state_rows", 0),
            state_bytes: MetricBuilder::new(&self.metrics).gauge("state_bytes", 0),
            late_out: crate::event_time::late::LateRows::find(&context),
        };
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        Ok(spawn_operator(self.schema(), baseline, move |out| async move {
            let Inputs { streams, scopes, keys } = inputs;
            let mut align = Alignment::new(&keys);
            if let Some(restored) = checkpointing.as_ref().and_then(Checkpointing::restored) {
                state.restore(&restored)?;
            }
            let mut merged = futures::stream::select_all(streams);
            while let Some((_, p, item)) = merged.next().await {
                for (i, scope) in scopes.iter().enumerate() {
                    state.watermarks.cap(i, scope.frontier());
                }
                let (rows, barrier) = match item? {
                    InputItem::Batch(batch) => (state.push(p, batch)?, None),
                    InputItem::End => {
                        state.watermarks.finish(p);
                        (state.release()?, align.ended((0, p)))
                    }
                    // the sources' frontiers may have moved while no row came
                    InputItem::Barrier(b) => (state.release()?, align.barrier((0, p), b)),
                    InputItem::Watermark(w) => {
                        state.watermarks.observe(p, Some(w));
                        (state.release()?, None)
                    }
                };
                memory.account(state.state_bytes.value())?;
                if !out.batches(rows.into_iter().collect()).await {
                    return Ok(());
                }
                // rows go out in order up to the watermark: the operators above may move on
                if checkpointing.is_some() && !out.watermark(state.watermarks.current()).await {
                    return Ok(());
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

struct SortState {
    time: Arc<dyn PhysicalExpr>,
    options: datafusion::arrow::compute::SortOptions,
    int_scale: i64,
    watermarks: PartitionWatermarks,
    buffer: Vec<(RecordBatch, Int64Array)>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    late: Count,
    untimed: Count,
    state_rows: Gauge,
    state_bytes: Gauge,
    /// The job's late sink, if it has one.
    late_out: Option<Arc<crate::event_time::late::LateRows>>,
}

impl SortState {
    /// The rows waiting for the watermark, and the watermarks, for a checkpoint.
    fn snapshot(&self) -> Result<OperatorState> {
        let mut tables = Vec::new();
        if !self.buffer.is_empty() {
            let batches: Vec<RecordBatch> = self.buffer.iter().map(|(b, _)| b.clone()).collect();
            tables.push(StateTable { name: "rows".into(), batch: concat_batches(&self.schema, &batches)?, key_columns: Vec::new() });
        }
        Ok(OperatorState { meta: serde_json::json!({ "watermarks": self.watermarks.snapshot() }), tables })
    }

    /// Restores [`SortState::snapshot`]: the waiting rows' times are evaluated again.
    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        self.watermarks.restore(&state.meta["watermarks"]);
        if let Some(rows) = state.table("rows") {
            let rows = crate::checkpoint::state::restored_batch(&self.schema, rows.columns())?;
            let times = to_epoch_millis(&self.time.evaluate(&rows)?.into_array(rows.num_rows())?, self.int_scale)?;
            self.buffer.push((rows, times));
        }
        self.update_state();
        Ok(())
    }

    fn push(&mut self, p: usize, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let times = to_epoch_millis(&self.time.evaluate(&batch)?.into_array(batch.num_rows())?, self.int_scale)?;
        let timed = is_not_null(&times)?;
        self.untimed.add(batch.num_rows() - timed.true_count());
        let wm = self.watermarks.current();
        let late = lt(&times, &Int64Array::new_scalar(wm))?;
        self.late.add(late.true_count());
        if let Some(l) = &self.late_out {
            l.send(&batch, &late)?;
        }
        let keep = datafusion::arrow::compute::and(&timed, &not(&late)?)?;
        self.watermarks.observe(p, max(&times));
        if keep.true_count() > 0 {
            // (text views kept would hold the pages they point into)
            let b = crate::memory::own_batch(filter_record_batch(&batch, &keep)?)?;
            let t = filter(&times, &keep)?.as_primitive::<Int64Type>().clone();
            self.buffer.push((b, t));
        }
        self.release()
    }

    fn update_state(&self) {
        self.state_rows.set(self.buffer.iter().map(|(b, _)| b.num_rows()).sum());
        self.state_bytes.set(self.buffer.iter().map(|(b, t)| b.get_array_memory_size() + datafusion::arrow::array::Array::get_array_memory_size(t)).sum());
    }

    /// Emits, in time order, every buffered row before the watermark.
    fn release(&mut self) -> Result<Option<RecordBatch>> {
        if self.watermarks.advance().is_none() || self.buffer.is_empty() {
            self.update_state();
            return Ok(None);
        }
        let wm = self.watermarks.current();
        let buffer = std::mem::take(&mut self.buffer);
        let batches: Vec<RecordBatch> = buffer.iter().map(|(b, _)| b.clone()).collect();
        let all = concat_batches(&self.schema, &batches)?;
        let times: Vec<&dyn datafusion::arrow::array::Array> = buffer.iter().map(|(_, t)| t as &dyn datafusion::arrow::array::Array).collect();
        let times = concat(&times)?.as_primitive::<Int64Type>().clone();
        let ready = lt(&times, &Int64Array::new_scalar(wm))?;
        let waiting = not(&ready)?;
        if waiting.true_count() > 0 {
            self.buffer.push((filter_record_batch(&all, &waiting)?, filter(&times, &waiting)?.as_primitive::<Int64Type>().clone()));
        }
        self.update_state();
        if ready.true_count() == 0 {
            return Ok(None);
        }
        let out = filter_record_batch(&all, &ready)?;
        // sort on the column itself (milliseconds would merge finer timestamps), then arrival
        let key: ArrayRef = self.time.evaluate(&out)?.into_array(out.num_rows())?;
        let arrival: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..out.num_rows() as u32));
        let order = lexsort_to_indices(&[SortColumn { values: key, options: Some(self.options) }, SortColumn { values: arrival, options: None }], None)?;
        Ok(Some(take_record_batch(&out, &order)?))
    }
}
