//! Moving `SUM`, `COUNT`, `AVG`, `MIN` and `MAX` over a `ROWS` frame of so many rows back, computed for every
//! key of a batch in one pass, over bounded input that DataFusion has sorted by the `PARTITION
//! BY` and `ORDER BY` of the `OVER` clause.
//!
//! ```sql
//! SELECT seller, AVG(final) OVER (PARTITION BY seller ORDER BY date_time, id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
//! FROM closed_auctions
//! -- BoundedWindowAggExec: wdw=[avg(final) … ROWS BETWEEN 10 PRECEDING AND CURRENT ROW], mode=[Sorted]
//! -- becomes SlidingRowsExec: avg(final) over 11 rows by [seller@1]
//! ```
//!
//! DataFusion's operator evaluates such a frame a partition at a time: for each key of each
//! batch it slices the batch, adds the new rows to an accumulator and retracts the old ones. With
//! many keys of a few rows each (Nexmark q6: 560 000 closed auctions of 106 000 sellers) the slicing
//! and the calls are the work. Here the keys' boundaries in a batch are found by one comparison
//! of neighbouring rows, and each row's frame is the rows back to the larger of its key's first
//! row and `n` rows before it: integers are summed by differences of running sums (exact, in
//! 128 bits), floating-point values by adding the frame's values in order (as many additions
//! per row as the frame has rows, so no error gathers over a key's rows); the least and
//! greatest integers or times by a queue of the rows that may still be a frame's extreme. The
//! last `n` values of
//! the last key of a batch are kept for the next batch, where that key may go on. The values are
//! those of DataFusion's operator: `SUM` and `AVG` are NULL over a frame without a non-NULL
//! value, `COUNT(x)` counts the non-NULL values, `COUNT(*)` the rows, `MIN` and `MAX` are NULL
//! over a frame without a non-NULL value.
//!
//! Other functions, frames and types stay on DataFusion's operator: the rule replaces an
//! operator only when every function of it is one of these.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode, PlanProperties, RecordBatchStream, SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};

/// Frames longer than this with floating-point values stay on DataFusion's operator (each row
/// adds its frame's values one by one).
const MAX_FLOAT_ROWS: usize = 256;

/// The function of one moving aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Sum,
    Count,
    Avg,
    Min,
    Max,
}

/// How the argument's values are added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Signed integers, summed as `i64` (`SUM` of any signed integer type is `Int64`).
    Signed,
    /// Unsigned integers, summed as `u64`.
    Unsigned,
    /// Floating point, summed as `f64`.
    Float,
}

/// One `f(x) OVER (… ROWS BETWEEN n PRECEDING AND CURRENT ROW)`.
#[derive(Debug, Clone)]
struct Moving {
    func: Func,
    arg: Arc<dyn PhysicalExpr>,
    values: Values,
    /// `n`: rows before the current one in its frame.
    back: usize,
    /// The result's type (`MIN` and `MAX`: the argument's, computed as 64-bit integers).
    out: DataType,
    name: String,
}

impl Moving {
    /// `expr` as one of ours, or None when DataFusion's operator must evaluate it.
    fn of(expr: &Arc<dyn WindowExpr>, input: &SchemaRef) -> Option<Moving> {
        let frame = expr.get_window_frame();
        if frame.units != WindowFrameUnits::Rows || !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
            return None;
        }
        let back = match &frame.start_bound {
            // (None: UNBOUNDED PRECEDING)
            WindowFrameBound::Preceding(v) => super::bound_units(v).ok()??,
            WindowFrameBound::CurrentRow => 0,
            WindowFrameBound::Following(_) => return None,
        };
        let agg = super::aggregate_of(expr)?;
        if agg.is_distinct() || agg.ignore_nulls() || agg.is_reversed() || super::has_filter(expr) {
            return None;
        }
        let func = match agg.fun().name().to_ascii_lowercase().as_str() {
            "sum" => Func::Sum,
            "count" => Func::Count,
            "avg" | "mean" => Func::Avg,
            "min" => Func::Min,
            "max" => Func::Max,
            _ => return None,
        };
        let [arg] = agg.expressions().try_into().ok()?;
        let arg_type = arg.data_type(input).ok()?;
        let min_max = matches!(func, Func::Min | Func::Max);
        let values = match arg_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Values::Signed,
            // times as their 64-bit numbers
            DataType::Timestamp(..) if min_max => Values::Signed,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Values::Unsigned,
            // (MIN and MAX of floating point stay DataFusion's: its order of NaN and -0.0)
            DataType::Float32 | DataType::Float64 if !min_max => Values::Float,
            // COUNT needs no sum: any type
            _ if func == Func::Count => Values::Signed,
            _ => return None,
        };
        if values == Values::Float && back > MAX_FLOAT_ROWS {
            return None;
        }
        // the result's type must be the one this computes
        let out = expr.field().ok()?.data_type().clone();
        let ours = match (func, values) {
            (Func::Min | Func::Max, _) => arg_type.clone(),
            (Func::Count, _) => DataType::Int64,
            (Func::Avg, _) => DataType::Float64,
            (Func::Sum, Values::Signed) => DataType::Int64,
            (Func::Sum, Values::Unsigned) => DataType::UInt64,
            (Func::Sum, Values::Float) => DataType::Float64,
        };
        if out != ours {
            return None;
        }
        Some(Moving { func, arg, values, back, out, name: expr.name().to_string() })
    }

    /// The values of the rows of `ext` (a key's carried values, then a batch's) from `from` on,
    /// each over its frame; `starts[i]`: the first row of row `from + i`'s key in `ext`.
    fn evaluate(&self, ext: &ArrayRef, from: usize, starts: &[usize]) -> Result<ArrayRef> {
        let rows = ext.len();
        if matches!(self.func, Func::Min | Func::Max) {
            let values = integers(ext, self.values)?;
            let extreme = sliding_extremes(rows, from, starts, self.back, self.func == Func::Min, |i| values[i]);
            let result: ArrayRef = match self.values {
                Values::Unsigned => Arc::new(extreme.into_iter().map(|v| v.map(|v| v as u64)).collect::<UInt64Array>()),
                _ => Arc::new(extreme.into_iter().map(|v| v.map(|v| v as i64)).collect::<Int64Array>()),
            };
            return Ok(datafusion::arrow::compute::cast(&result, &self.out)?);
        }
        // the non-NULL values before each row
        let mut counts = Vec::with_capacity(rows + 1);
        counts.push(0i64);
        let nulls = ext.logical_nulls();
        let mut c = 0i64;
        for i in 0..rows {
            c += nulls.as_ref().is_none_or(|n| n.is_valid(i)) as i64;
            counts.push(c);
        }
        let frame = |i: usize| -> usize { starts[i].max((from + i).saturating_sub(self.back)) };
        let n = starts.len();
        if self.func == Func::Count {
            let out: Int64Array = (0..n).map(|i| Some(counts[from + i + 1] - counts[frame(i)])).collect();
            return Ok(Arc::new(out));
        }
        match self.values {
            Values::Signed | Values::Unsigned => {
                // running sums, NULLs as 0, in 128 bits: exact for any frame
                let mut sums = Vec::with_capacity(rows + 1);
                sums.push(0i128);
                let mut s = 0i128;
                for v in integers(ext, self.values)? {
                    s += v.unwrap_or(0);
                    sums.push(s);
                }
                let each = (0..n).map(|i| {
                    let lo = frame(i);
                    let k = counts[from + i + 1] - counts[lo];
                    (k > 0).then(|| (sums[from + i + 1] - sums[lo], k))
                });
                Ok(match (self.func, self.values) {
                    (Func::Avg, _) => Arc::new(each.map(|v| v.map(|(s, k)| s as f64 / k as f64)).collect::<Float64Array>()),
                    // (as DataFusion's sum, wrapping past the type's range)
                    (_, Values::Signed) => Arc::new(each.map(|v| v.map(|(s, _)| s as i64)).collect::<Int64Array>()),
                    _ => Arc::new(each.map(|v| v.map(|(s, _)| s as u64)).collect::<UInt64Array>()),
                })
            }
            Values::Float => {
                let v = datafusion::arrow::compute::cast(ext, &DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                let each = (0..n).map(|i| {
                    let (lo, hi) = (frame(i), from + i + 1);
                    let k = counts[hi] - counts[lo];
                    let s: f64 = (lo..hi).filter(|&j| v.is_valid(j)).map(|j| v.value(j)).sum();
                    (k > 0).then_some((s, k))
                });
                Ok(match self.func {
                    Func::Avg => Arc::new(each.map(|v| v.map(|(s, k)| s / k as f64)).collect::<Float64Array>()),
                    _ => Arc::new(each.map(|v| v.map(|(s, _)| s)).collect::<Float64Array>()),
                })
            }
        }
    }
}

/// `ext`'s values as 128-bit integers, None for NULL: as `UInt64` for unsigned integers, else
/// as `Int64` (signed integers, times).
fn integers(ext: &ArrayRef, values: Values) -> Result<Vec<Option<i128>>> {
    Ok(match values {
        Values::Unsigned => {
            let wide = datafusion::arrow::compute::cast(ext, &DataType::UInt64)?;
            wide.as_primitive::<UInt64Type>().iter().map(|v| v.map(i128::from)).collect()
        }
        _ => {
            let wide = datafusion::arrow::compute::cast(ext, &DataType::Int64)?;
            wide.as_primitive::<Int64Type>().iter().map(|v| v.map(i128::from)).collect()
        }
    })
}

/// The least (`min`) or greatest value of each frame, for the rows of `ext` from `from` on
/// (`starts`: as for [`Moving::evaluate`]; the rows before `from` are of the key the first
/// row's key goes on from). A queue of the rows that may still be a frame's extreme: the frame
/// moves on by one row, so each row enters and leaves the queue once.
fn sliding_extremes(rows: usize, from: usize, starts: &[usize], back: usize, min: bool, value: impl Fn(usize) -> Option<i128>) -> Vec<Option<i128>> {
    let mut queue: std::collections::VecDeque<(usize, i128)> = std::collections::VecDeque::new();
    let mut out = Vec::with_capacity(rows.saturating_sub(from));
    let mut key_start = 0;
    for e in 0..rows {
        let start = if e < from { 0 } else { starts[e - from] };
        if start != key_start {
            queue.clear();
            key_start = start;
        }
        if let Some(v) = value(e) {
            // a row the new one beats can no longer be any frame's extreme
            while queue.back().is_some_and(|&(_, b)| if min { b >= v } else { b <= v }) {
                queue.pop_back();
            }
            queue.push_back((e, v));
        }
        let lo = start.max(e.saturating_sub(back));
        while queue.front().is_some_and(|&(i, _)| i < lo) {
            queue.pop_front();
        }
        if e >= from {
            out.push(queue.front().map(|&(_, v)| v));
        }
    }
    out
}

/// Moving aggregates over `ROWS` frames of sorted bounded input; see the module.
#[derive(Debug)]
pub struct SlidingRowsExec {
    input: Arc<dyn ExecutionPlan>,
    /// DataFusion's operator this replaces: its schema and properties are this one's.
    replaced: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    functions: Vec<Moving>,
    metrics: ExecutionPlanMetricsSet,
}

impl SlidingRowsExec {
    /// `node` (DataFusion's window operator) as ours, or None when one of its functions, its
    /// frame or its input's order is not what this computes.
    pub fn of(node: &Arc<dyn ExecutionPlan>) -> Option<SlidingRowsExec> {
        let window = node.downcast_ref::<BoundedWindowAggExec>()?;
        if window.input_order_mode != InputOrderMode::Sorted || window.input().boundedness().is_unbounded() {
            return None;
        }
        let input = Arc::clone(window.input());
        let schema = input.schema();
        let exprs = window.window_expr();
        let first = exprs.first()?;
        let partition_by = first.partition_by().to_vec();
        let functions = exprs.iter().map(|e| Moving::of(e, &schema)).collect::<Option<Vec<_>>>()?;
        // the replaced operator's schema: the input's columns, then one per function
        let out = window.schema();
        if out.fields().len() != schema.fields().len() + functions.len() {
            return None;
        }
        Some(SlidingRowsExec { input, replaced: Arc::clone(node), partition_by, functions, metrics: ExecutionPlanMetricsSet::new() })
    }
}

impl DisplayAs for SlidingRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let functions: Vec<String> = self.functions.iter().map(|m| format!("{} over {} rows", m.name, m.back + 1)).collect();
        let keys: Vec<String> = self.partition_by.iter().map(|k| k.to_string()).collect();
        write!(f, "SlidingRowsExec: [{}] by [{}]", functions.join(", "), keys.join(", "))
    }
}

impl ExecutionPlan for SlidingRowsExec {
    fn name(&self) -> &str {
        "SlidingRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.replaced.properties()
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

    fn input_distribution_requirements(&self) -> datafusion::physical_plan::distribution_requirements::InputDistributionRequirements {
        self.replaced.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.replaced.required_input_ordering()
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.partition_by.iter().chain(self.functions.iter().map(|m| &m.arg)), f)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("SlidingRowsExec takes one input");
        }
        let input = children.swap_remove(0);
        let replaced = Arc::clone(&self.replaced).with_new_children(vec![Arc::clone(&input)])?;
        Ok(Arc::new(SlidingRowsExec {
            input,
            replaced,
            partition_by: self.partition_by.clone(),
            functions: self.functions.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(SlidingRowsStream {
            input,
            schema: self.schema(),
            partition_by: self.partition_by.clone(),
            functions: self.functions.clone(),
            last_key: None,
            tails: vec![None; self.functions.len()],
            baseline: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct SlidingRowsStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    functions: Vec<Moving>,
    /// The key of the last row seen.
    last_key: Option<Vec<ScalarValue>>,
    /// Per function, the last values (at most its `back`) of that key, owned.
    tails: Vec<Option<ArrayRef>>,
    baseline: BaselineMetrics,
}

impl SlidingRowsStream {
    fn process(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        if rows == 0 {
            return RecordBatch::try_new(Arc::clone(&self.schema), {
                let mut cols = batch.columns().to_vec();
                cols.extend(self.schema.fields()[batch.num_columns()..].iter().map(|f| datafusion::arrow::array::new_empty_array(f.data_type())));
                cols
            })
            .map_err(Into::into);
        }
        let keys = self.partition_by.iter().map(|k| k.evaluate(&batch)?.into_array(rows)).collect::<Result<Vec<_>>>()?;
        // the first row of each key's run in the batch
        let ranges = if keys.is_empty() { std::iter::once(0..rows).collect() } else { datafusion::arrow::compute::partition(&keys)?.ranges() };
        let key_at = |i: usize| keys.iter().map(|k| ScalarValue::try_from_array(k, i)).collect::<Result<Vec<_>>>();
        let goes_on = match &self.last_key {
            Some(last) => *last == key_at(0)?,
            None => false,
        };
        let mut columns = batch.columns().to_vec();
        for (f, m) in self.functions.iter().enumerate() {
            let arg = m.arg.evaluate(&batch)?.into_array(rows)?;
            let tail = if goes_on { self.tails[f].take() } else { None };
            let t = tail.as_ref().map_or(0, |a| a.len());
            let ext = match &tail {
                Some(tail) => datafusion::arrow::compute::concat(&[tail.as_ref(), arg.as_ref()])?,
                None => Arc::clone(&arg),
            };
            let mut starts = Vec::with_capacity(rows);
            for r in &ranges {
                let start = if r.start == 0 {
                    if goes_on {
                        0
                    } else {
                        t
                    }
                } else {
                    r.start + t
                };
                starts.extend(std::iter::repeat_n(start, r.len()));
            }
            columns.push(m.evaluate(&ext, t, &starts)?);
            // the last key's last values, for the next batch (copied: not the whole batch held)
            let last_start = starts.last().copied().unwrap_or(0);
            let keep_from = last_start.max(ext.len().saturating_sub(m.back));
            let kept = ext.slice(keep_from, ext.len() - keep_from);
            self.tails[f] = Some(datafusion::arrow::compute::concat(&[kept.as_ref()])?);
        }
        self.last_key = Some(key_at(rows - 1)?);
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl Stream for SlidingRowsStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.input.poll_next_unpin(cx);
        let out = match poll {
            Poll::Ready(Some(Ok(batch))) => {
                let elapsed = self.baseline.elapsed_compute().clone();
                let timer = elapsed.timer();
                let out = self.process(batch);
                timer.done();
                Poll::Ready(Some(out))
            }
            other => other,
        };
        self.baseline.record_poll(out)
    }
}

impl RecordBatchStream for SlidingRowsStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// Plans [`SlidingRowsExec`] for DataFusion's window operator over sorted bounded input where
/// every function of it is a moving `SUM`, `COUNT`, `AVG`, `MIN` or `MAX` over a `ROWS` frame.
#[derive(Debug, Default)]
pub struct SlidingRowsRule;

impl PhysicalOptimizerRule for SlidingRowsRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(ours) = SlidingRowsExec::of(&node) else {
                return Ok(Transformed::no(node));
            };
            Ok(Transformed::yes(Arc::new(ours) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ferris_sliding_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// The test table's columns as vectors.
    type Columns = (Vec<i64>, Vec<Option<i64>>, Vec<String>, Vec<i64>, Vec<Option<i64>>, Vec<Option<f64>>, Vec<Option<i32>>, Vec<Option<u32>>);

    /// `n` rows in two partitions: key `k` (skewed: a few keys have many rows, so runs span
    /// batches), a second key `k2`, time `ts` with ties, `seq`, and values with NULLs: `x`
    /// (Int64), `y` (Float64, exact eighths), `z` (Int32), `u` (UInt32).
    fn context(n: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new("k", DataType::Int64, true),
            Field::new("k2", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Float64, true),
            Field::new("z", DataType::Int32, true),
            Field::new("u", DataType::UInt32, true),
        ]));
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut cols: Columns = Default::default();
        for i in 0..n {
            let r = next();
            let k = if r % 3 == 0 { (r >> 8) % 4 } else { (r >> 8) % 300 };
            cols.0.push(i as i64);
            cols.1.push((k != 299).then_some(k as i64));
            cols.2.push(format!("g{}", (r >> 20) % 2));
            cols.3.push(((r >> 24) % 1000) as i64);
            let v = ((r >> 32) % 20_000) as i64 - 5_000;
            cols.4.push((i % 7 != 3).then_some(v));
            cols.5.push((i % 5 != 1).then_some(v as f64 / 8.0));
            cols.6.push((i % 11 != 0).then_some(v as i32));
            cols.7.push((i % 13 != 2).then_some(v.unsigned_abs() as u32));
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(cols.0)),
                Arc::new(Int64Array::from(cols.1)),
                Arc::new(StringArray::from(cols.2)),
                Arc::new(Int64Array::from(cols.3)),
                Arc::new(Int64Array::from(cols.4)),
                Arc::new(Float64Array::from(cols.5)),
                Arc::new(Int32Array::from(cols.6)),
                Arc::new(UInt32Array::from(cols.7)),
            ],
        )
        .unwrap();
        let half = n / 2;
        let parts = vec![vec![batch.slice(0, half)], vec![batch.slice(half, n - half)]];
        let table = MemTable::try_new(schema, parts).unwrap();
        // small batches: a key's rows run over many of them
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(37).with_target_partitions(2));
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    fn count(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
        plan.children().into_iter().map(|c| count(c, name)).sum::<usize>() + usize::from(plan.name() == name)
    }

    /// `sql`'s answer by DataFusion's plan and by the plan with our operator (which must be in
    /// it `ours` times), both ordered by `seq`.
    async fn both(ctx: &SessionContext, sql: &str, ours: usize) -> (String, String) {
        let sql = format!("SELECT * FROM ({sql}) ORDER BY seq");
        let plan = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
        // (a plan of its own: a plan's exchanges are executed once)
        let again = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
        let rewritten = SlidingRowsRule.optimize(again, &ConfigOptions::default()).unwrap();
        assert_eq!(count(&rewritten, "SlidingRowsExec"), ours, "{sql}:\n{}", datafusion::physical_plan::displayable(rewritten.as_ref()).indent(true));
        let want = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
        let got = datafusion::physical_plan::collect(rewritten, ctx.task_ctx()).await.unwrap();
        (pretty_format_batches(&got).unwrap().to_string(), pretty_format_batches(&want).unwrap().to_string())
    }

    #[tokio::test]
    async fn moving_sums_counts_averages_minima_and_maxima_equal_datafusions() {
        let ctx = context(5000);
        let w = "PARTITION BY k ORDER BY ts, seq";
        let cases = [
            (
                format!(
                    "SELECT seq, k, \
                     SUM(x) OVER ({w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s3, \
                     COUNT(x) OVER ({w} ROWS BETWEEN CURRENT ROW AND CURRENT ROW) AS c0, \
                     COUNT(*) OVER ({w} ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS n5, \
                     AVG(x) OVER ({w} ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS a10, \
                     SUM(y) OVER ({w} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS sy2, \
                     AVG(y) OVER ({w} ROWS BETWEEN 100 PRECEDING AND CURRENT ROW) AS ay100, \
                     SUM(u) OVER ({w} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS su1, \
                     AVG(z) OVER ({w} ROWS BETWEEN 7 PRECEDING AND CURRENT ROW) AS az7, \
                     SUM(z) OVER ({w} ROWS BETWEEN 1000 PRECEDING AND CURRENT ROW) AS sz1000, \
                     MIN(x) OVER ({w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS mn3, \
                     MAX(u) OVER ({w} ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS mxu10, \
                     MIN(z) OVER ({w} ROWS BETWEEN CURRENT ROW AND CURRENT ROW) AS mnz0, \
                     MAX(x) OVER ({w} ROWS BETWEEN 1000 PRECEDING AND CURRENT ROW) AS mx1000, \
                     MAX(to_timestamp_millis(ts * seq)) OVER ({w} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS mxt2 \
                     FROM t"
                ),
                1,
            ),
            // no PARTITION BY: one run through every batch
            ("SELECT seq, SUM(x) OVER (ORDER BY ts, seq ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS s4, AVG(y) OVER (ORDER BY ts, seq ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS a9 FROM t".to_string(), 1),
            // two keys, one of them text
            ("SELECT seq, COUNT(z) OVER (PARTITION BY k2, k ORDER BY ts, seq ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c2, AVG(u) OVER (PARTITION BY k2, k ORDER BY ts, seq ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS a3 FROM t".to_string(), 1),
            // not ours: a frame reading later rows, MIN of floating point, STDDEV, a RANGE frame
            (format!("SELECT seq, SUM(x) OVER ({w} ROWS BETWEEN 3 PRECEDING AND 1 FOLLOWING) AS f FROM t"), 0),
            (format!("SELECT seq, MIN(y) OVER ({w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS m FROM t"), 0),
            (format!("SELECT seq, STDDEV(x) OVER ({w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS m FROM t"), 0),
            ("SELECT seq, SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN 3 PRECEDING AND CURRENT ROW) AS r FROM t".to_string(), 0),
        ];
        for (sql, ours) in cases {
            let (got, want) = both(&ctx, &sql, ours).await;
            assert_eq!(got.lines().count(), 5000 + 4, "{sql}");
            assert!(got == want, "{sql}: our operator's answer differs from DataFusion's");
        }
    }
}
