//! Event time from the sources' statistics. A Parquet file says, in its footer, the least value
//! of each column in each row group; a source partition reading the row groups of files in
//! turn thus knows, as it hands each batch on, the least event time of every row it has still
//! to hand out: its *floor*. No row older than that can come, so an operator reading it may move
//! its watermark up to it — without a watermark delay, and making no row late. A bounded job
//! without a delay then closes its windows as the files are read instead of holding every
//! window until the end, and its results are the same.
//!
//! ```sql
//! CREATE STREAM per_minute AS
//! SELECT window_start, k, COUNT(*) AS n FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k
//! INTO out WITH ('t.type' = 'file_source', 't.path' = 'data/*.parquet', 't.event_time' = 'ts', …);
//! -- WindowAggregateExec: …, watermark=at end of input, …  (and up to the files' floors as read)
//! ```
//!
//! The floor a partition publishes must never pass a row the operator has not received: it is
//! published as the batch is handed on, and used only where every operator between the source
//! and ours hands each batch on as it comes ([`source_column`]: projections, filters that do
//! not gather rows into batches, our scan wrapper) — an exchange or a coalescing filter would
//! hold rows back while the floor moved past them.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

use crate::checkpoint::barrier::Scope;
use crate::event_time::PartitionWatermarks;
use crate::planner::source_table::SizedScanExec;

/// The one step down from `plan` towards the source that keeps column `index` as it is, with
/// its index below; None when `plan` computes it, gathers rows, or is not on a source's way.
fn step(plan: &Arc<dyn ExecutionPlan>, index: usize, filters_gather: bool) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let c = p.expr().get(index)?.expr.downcast_ref::<Column>()?;
        return Some((Arc::clone(p.input()), c.index()));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        if (filters_gather && f.batch_size() > 1) || f.fetch().is_some() {
            return None;
        }
        let below = match f.projection() {
            Some(p) => *p.get(index)?,
            None => index,
        };
        return Some((Arc::clone(f.input()), below));
    }
    if plan.downcast_ref::<CooperativeExec>().is_some() {
        return Some((Arc::clone(plan.children().first()?), index));
    }
    None
}

/// The column `index` of `plan`'s rows, when `plan` is the scan of a source whose partitions
/// publish that column's floor.
fn floor_of_scan(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<String> {
    let scan = plan.downcast_ref::<SizedScanExec>()?;
    let name = scan.schema().fields().get(index)?.name().clone();
    (scan.floor_column() == Some(name.as_str())).then_some(name)
}

/// The source column that `time` (an expression over `input`'s rows) is, unchanged, when each
/// partition of `input` hands the batches of one source partition straight on (see the module
/// documentation); the operator then reads that column's floors from its inputs' scopes.
pub fn source_column(input: &Arc<dyn ExecutionPlan>, time: &Arc<dyn PhysicalExpr>) -> Option<String> {
    scan_column(input, time, true)
}

/// The column `time` is at the scan of a source publishing its floor, down through `input`'s
/// projections and filters (`filters_gather`: a filter gathering rows into batches stops the
/// way; else the caller is about to make it hand them on).
fn scan_column(input: &Arc<dyn ExecutionPlan>, time: &Arc<dyn PhysicalExpr>, filters_gather: bool) -> Option<String> {
    let mut index = time.downcast_ref::<Column>()?.index();
    let mut plan = Arc::clone(input);
    loop {
        if plan.downcast_ref::<SizedScanExec>().is_some() {
            return floor_of_scan(&plan, index);
        }
        (plan, index) = step(&plan, index, filters_gather)?;
    }
}

/// Reads the floors of `column` its inputs' scopes hold into `watermarks` (input partition i
/// in `scopes[i]`), once the item last received has been taken in: it was handed out before
/// the floor that came with it. True when one rose.
pub fn read_floors(watermarks: &mut PartitionWatermarks, scopes: &[Arc<Scope>], column: &str) -> bool {
    let mut rose = false;
    for (i, scope) in scopes.iter().enumerate() {
        rose |= watermarks.floor(i, scope.floor(column));
    }
    rose
}

/// The time column of an operator that reads its sources' floors (None for any other node).
pub type TimeOf<'a> = &'a dyn Fn(&Arc<dyn ExecutionPlan>) -> Option<Arc<dyn PhysicalExpr>>;

/// Filters between a source and one of `ours` (operators that read floors) hand each batch on
/// as it comes, so that the operator may use the source's floors.
pub fn hand_on_batches_below(plan: Arc<dyn ExecutionPlan>, ours: TimeOf<'_>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(time) = ours(&node) else { return Ok(Transformed::no(node)) };
        let Some(input) = node.children().first().map(|c| Arc::clone(c)) else { return Ok(Transformed::no(node)) };
        // only a way that reaches a source publishing the column's floor
        if scan_column(&input, &time, false).is_none() {
            return Ok(Transformed::no(node));
        }
        let input = input
            .transform_down(|n| match n.downcast_ref::<FilterExec>() {
                Some(f) if f.batch_size() > 1 => Ok(Transformed::yes(Arc::new(f.with_batch_size(1)?) as Arc<dyn ExecutionPlan>)),
                _ => Ok(Transformed::no(n)),
            })?
            .data;
        #[allow(deprecated)]
        let node = node.with_new_children(vec![input])?;
        Ok(Transformed::yes(node))
    })
    .map(|t| t.data)
}
