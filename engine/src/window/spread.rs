//! A window aggregate by key spread over several tasks: the groups of each key live in one of
//! them, chosen by the hash of the key, so a job's cores share the work of a `GROUP BY
//! TUMBLE(…), key` as they share DataFusion's own aggregates.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*), SUM(amount) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k
//! -- WindowAggregateExec: window=TUMBLE(1000ms), …, spread over 2 tasks by key
//! ```
//!
//! Event time stays the input's: one router reads the input as the operator alone would, keeps
//! the watermark over its partitions, and hands each task its rows of a batch, then the
//! watermark after that batch. A task decides which rows are late by that watermark, and
//! closes windows when it passes them — the same rows late, the same windows, as one task
//! would have. Spread only where nothing depends on the order of the windows among keys (the
//! results go to the sinks through projections and filters), where the job takes no
//! checkpoints (one operator, one state) and reads bounded inputs, whose watermark moves with
//! the rows alone (and with the files' statistics: see [`crate::event_time::floor`]), sent to
//! the tasks as it moves.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{filter_record_batch, max, prep_null_mask_filter, take_record_batch};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::aggregate_exec::{coalesce, cutoff_at, eval, state_memory, Operator, OperatorMetrics, WindowAggregateConfig, WindowKind};
use crate::checkpoint::operator::{execute_inputs, spawn_operator, InputItem, Inputs};
use crate::event_time::{to_epoch_millis, PartitionWatermarks};
use crate::sql::EmitMode;

/// Whether an aggregate of `config` can be spread by key: windows by key emitting final
/// results, an event time that moves with the rows alone (no idle timeout).
pub fn can_spread(config: &WindowAggregateConfig) -> bool {
    matches!(config.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. } | WindowKind::Session { .. })
        && config.emit == EmitMode::Final
        && !config.keys.is_empty()
        && config.time.is_some()
        && !config.of_input_windows
        && !config.hands_on_watermark
        && !config.op_column
        && config.state_ttl.is_none()
        && config.watermark.idle_timeout.is_none()
}

/// What the router hands a task.
enum ToTask {
    /// The task's rows of an input batch.
    Rows(RecordBatch),
    /// The input's watermark: no row older than this is still to come.
    Watermark(i64),
    /// The input has ended.
    End,
}

/// Runs the aggregate over `tasks` tasks (see the module documentation).
pub(super) fn execute(
    input: &Arc<dyn ExecutionPlan>,
    config: Arc<WindowAggregateConfig>,
    metrics: &ExecutionPlanMetricsSet,
    tasks: usize,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let mut inputs = Inputs::new();
    let n = execute_inputs(input, 0, &context, &mut inputs)?;
    let late_out = crate::event_time::late::LateRows::find(&context);
    let batch_size = context.session_config().batch_size();
    let (results_tx, mut results) = mpsc::channel::<Result<Vec<RecordBatch>>>(tasks * 4);
    let mut to_tasks = Vec::with_capacity(tasks);
    let mut handles = Vec::with_capacity(tasks + 1);
    for t in 0..tasks {
        // partition 0 takes the rows and is done from the start; partition 1 is the router's
        // event time: the task's watermark is the input's, not its own rows'
        let mut op = Operator::new(Arc::clone(&config), 2, OperatorMetrics::new(metrics, t))?;
        op.late_out = late_out.clone();
        op.finish_partition(0)?;
        let mut memory = state_memory(&context, config.kind);
        let (tx, mut rx) = mpsc::channel::<ToTask>(8);
        to_tasks.push(tx);
        let results_tx = results_tx.clone();
        handles.push(SpawnedTask::spawn(async move {
            let mut ended = false;
            while let Some(message) = rx.recv().await {
                ended |= matches!(message, ToTask::End);
                let rows = match message {
                    ToTask::Rows(batch) => op.push(0, &batch),
                    ToTask::Watermark(w) => {
                        op.watermarks.floor(1, Some(w));
                        op.advance()
                    }
                    ToTask::End => op.finish_partition(1),
                };
                let rows = rows.and_then(|rows| memory.account(op.metrics.state_bytes.value()).map(|_| rows));
                let failed = rows.is_err();
                let rows = rows.and_then(|rows| coalesce(rows, batch_size));
                if (rows.as_ref().is_ok_and(|r| !r.is_empty()) || rows.is_err()) && results_tx.send(rows).await.is_err() {
                    return;
                }
                if failed {
                    return;
                }
            }
            // the router stopped before the input ended (it failed or panicked): the results
            // are not complete, and the job must not end as if they were
            if !ended {
                let _ = results_tx.send(ended_early()).await;
            }
        }));
    }
    let router_results = results_tx;
    let route_config = Arc::clone(&config);
    // the sources' floors of the time column, when it comes straight from them
    let floor_column = config.time.as_ref().and_then(|t| crate::event_time::floor::source_column(input, t));
    handles.push(SpawnedTask::spawn(async move {
        let routed = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(route(inputs, n, route_config, floor_column, to_tasks))).await {
            Ok(routed) => routed,
            Err(panic) => datafusion::common::internal_err!("a window aggregate's router panicked: {}", crate::checkpoint::operator::panic_message(&panic)),
        };
        if let Err(e) = routed {
            let _ = router_results.send(Err(e)).await;
        }
    }));
    let baseline = BaselineMetrics::new(metrics, 0);
    Ok(spawn_operator(Arc::clone(&config.schema), baseline, move |out| async move {
        // the tasks stop when this stream is dropped
        let _handles = handles;
        while let Some(rows) = results.recv().await {
            if !out.batches(rows?).await {
                return Ok(());
            }
        }
        out.end(None);
        Ok(())
    }))
}

/// Reads the input, keeps its watermark, and hands each task its rows and the watermark.
async fn route(inputs: Inputs, n: usize, config: Arc<WindowAggregateConfig>, floor_column: Option<String>, tasks: Vec<mpsc::Sender<ToTask>>) -> Result<()> {
    let Some(time_expr) = config.time.clone() else { return Ok(()) };
    let scopes = inputs.scopes;
    let mut watermarks = PartitionWatermarks::new(config.watermark, n);
    let random = RandomState::with_seed(0x5eed);
    let mut hashes: Vec<u64> = Vec::new();
    let mut merged = futures::stream::select_all(inputs.streams);
    let mut remaining = n;
    let count = tasks.len() as u64;
    while remaining > 0 {
        let Some((_, p, item)) = merged.next().await else { break };
        match item? {
            InputItem::Batch(batch) => {
                if batch.num_rows() == 0 {
                    continue;
                }
                let times = to_epoch_millis(&eval(&time_expr, &batch)?, config.int_scale)?;
                // late rows and rows without a time go to the first task as they are (it
                // counts them, and hands the late ones to the late sink): their keys are not
                // evaluated, as one task would not evaluate them
                let kept = gt_eq(&times, &Int64Array::new_scalar(cutoff_at(&config, watermarks.current())))?;
                // (a row without a time is not kept: nulls made false)
                let kept = if kept.null_count() > 0 { prep_null_mask_filter(&kept) } else { kept };
                watermarks.observe(p, max(&times));
                let on_time_rows = kept.true_count();
                let mut rows: Vec<Vec<u32>> = vec![Vec::new(); tasks.len()];
                if on_time_rows > 0 {
                    let on_time = if on_time_rows == batch.num_rows() { batch.clone() } else { filter_record_batch(&batch, &kept)? };
                    let keys = config.keys.iter().map(|(e, _)| eval(e, &on_time)).collect::<Result<Vec<_>>>()?;
                    hashes.clear();
                    hashes.resize(on_time.num_rows(), 0);
                    create_hashes(&keys, &random, &mut hashes)?;
                    let mut at = kept.values().set_indices();
                    for h in &hashes {
                        let Some(i) = at.next() else { break };
                        rows[(h % count) as usize].push(i as u32);
                    }
                }
                if on_time_rows < batch.num_rows() {
                    rows[0].extend(kept.iter().enumerate().filter(|(_, k)| *k != Some(true)).map(|(i, _)| i as u32));
                    rows[0].sort_unstable();
                }
                for (task, rows) in tasks.iter().zip(rows) {
                    if rows.is_empty() {
                        continue;
                    }
                    let part = if rows.len() == batch.num_rows() { batch.clone() } else { take_record_batch(&batch, &UInt32Array::from(rows))? };
                    if task.send(ToTask::Rows(part)).await.is_err() {
                        return ended_early();
                    }
                }
            }
            InputItem::End => {
                remaining -= 1;
                watermarks.finish(p);
            }
            // (a bounded job without checkpoints has neither)
            InputItem::Barrier(_) | InputItem::Watermark(_) => {}
        }
        if remaining == 0 {
            break;
        }
        // (the floors once the item's rows are handed on)
        if let Some(column) = &floor_column {
            crate::event_time::floor::read_floors(&mut watermarks, &scopes, column);
        }
        if let Some(w) = watermarks.advance() {
            for task in &tasks {
                if task.send(ToTask::Watermark(w)).await.is_err() {
                    return ended_early();
                }
            }
        }
    }
    for task in &tasks {
        if task.send(ToTask::End).await.is_err() {
            return ended_early();
        }
    }
    Ok(())
}

/// A task stopped before the input ended: it failed (its error is ahead of this one), or the
/// operator's output was dropped (no one reads this), or it panicked (the job must not end as
/// if its results were complete).
fn ended_early<T>() -> Result<T> {
    datafusion::common::internal_err!("a task of a window aggregate spread by key stopped before its input ended")
}

/// `plan` with its window aggregates by key spread over `tasks` tasks, where their results go
/// straight to the job's output (through projections, filters, unions and exchanges).
pub fn spread_keyed_windows(plan: Arc<dyn ExecutionPlan>, tasks: usize) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::union::UnionExec;
    if tasks < 2 {
        return Ok(plan);
    }
    if let Some(w) = plan.downcast_ref::<super::WindowAggregateExec>() {
        return Ok(if w.spread() == 1 && can_spread(w.config()) { Arc::new(w.spread_over(tasks)) } else { plan });
    }
    #[allow(deprecated)]
    let passes = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some_and(|f| f.fetch().is_none())
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some_and(|c| c.fetch().is_none())
        || plan.downcast_ref::<datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec>().is_some_and(|c| c.fetch().is_none())
        || plan.downcast_ref::<UnionExec>().is_some();
    if !passes {
        return Ok(plan);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let mut changed = false;
    let mut new_children = Vec::with_capacity(children.len());
    for c in children {
        let n = spread_keyed_windows(Arc::clone(&c), tasks)?;
        changed |= !Arc::ptr_eq(&n, &c);
        new_children.push(n);
    }
    if !changed {
        return Ok(plan);
    }
    #[allow(deprecated)]
    plan.with_new_children(new_children)
}
