//! Windows of windows: a `GROUP BY` over the rows of a window aggregate that keys on their
//! window (`window_start`, `window_end`) is itself a window aggregate. Each of its groups is
//! one window of the operator below, complete once that operator has emitted the window, so
//! it closes when the watermark the operator below hands on passes the window's start, and
//! comes out once, final (Flink's window aggregation over a windowed table).
//!
//! ```sql
//! -- Nexmark q5: the largest count of bids per auction in each sliding window
//! WITH auction_bids AS (
//!     SELECT auction, COUNT(*) AS num, window_start, window_end FROM bid
//!     GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction)
//! SELECT MAX(num) AS maxn, window_start, window_end FROM auction_bids GROUP BY window_start, window_end
//! ```
//!
//! The operator below must be a `TUMBLE` or `HOP` emitting final results (each window once, in
//! the order of their ends). Without a window key, or over `SESSION` windows or `EMIT
//! CHANGES`, such a `GROUP BY` stays an unwindowed aggregate that updates.
//!
//! [`hand_on_watermarks`] then tells each window aggregate whose window bounds an operator
//! above reads as event time (a window of windows, a join on the window as in q5 and q7) to
//! hand its watermark on: the start of its first open window, which no bound of a window it
//! emits later is before. Other readers get nothing: their time columns (a key, an aggregate
//! of another column) may hold anything.

use std::sync::Arc;

use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
#[allow(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::ExecutionPlan;

use super::aggregate_exec::{WindowAggregateExec, WindowKind};
use super::planner_rule::{find_window, partial_below, window_kind};
use crate::sql::EmitMode;

/// Which bound of its window a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

/// The event time of a `GROUP BY` over windows: the start of the window each row belongs to
/// (`window_start` as keyed, or `window_end` less the window's size), over `input`'s columns.
/// `None` when no group key is a bound of the windows of a `TUMBLE` or `HOP` below.
///
/// ```sql
/// SELECT MAX(num), window_start, window_end FROM auction_bids GROUP BY window_start, window_end
/// -- time: window_start
/// SELECT SUM(n), window_end FROM per_user GROUP BY window_end   -- TUMBLE(ts, INTERVAL '1' MINUTE) below
/// -- time: window_end - INTERVAL '1' MINUTE
/// ```
pub fn input_window_time(input: &Arc<dyn ExecutionPlan>, group: &[(Arc<dyn PhysicalExpr>, String)]) -> Option<Arc<dyn PhysicalExpr>> {
    let bounds: Vec<(Arc<dyn PhysicalExpr>, Bound, WindowKind)> = group
        .iter()
        .filter_map(|(e, _)| {
            let c = e.downcast_ref::<Column>()?;
            let (bound, kind) = bound_of(input, c.index())?;
            Some((Arc::clone(e), bound, kind))
        })
        .collect();
    if let Some((e, _, _)) = bounds.iter().find(|(_, b, _)| *b == Bound::Start) {
        return Some(Arc::clone(e));
    }
    let (e, _, kind) = bounds.into_iter().next()?;
    let size = match kind {
        WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
        _ => return None,
    };
    let nanos = size.checked_mul(1_000_000)?;
    let length = Arc::new(Literal::new(ScalarValue::new_interval_mdn(0, 0, nanos)));
    Some(Arc::new(BinaryExpr::new(e, Operator::Minus, length)))
}

/// The operators that hand rows through with their columns as they are.
#[allow(deprecated)]
fn passes_through(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CoalesceBatchesExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some_and(|f| f.projection().is_none())
}

/// Whether column `index` of `plan`'s output is the start or end of the windows of a
/// `TUMBLE` or `HOP` aggregate emitting final results, traced through projections, filters
/// and repartitioning; and that window.
fn bound_of(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<(Bound, WindowKind)> {
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &p.expr().get(index)?.expr;
        if let Some(c) = expr.downcast_ref::<Column>() {
            return bound_of(p.input(), c.index());
        }
        let f = expr.downcast_ref::<ScalarFunctionExpr>()?;
        if f.name() != "get_field" {
            return None;
        }
        let [of, field] = f.args() else { return None };
        let column = of.downcast_ref::<Column>()?;
        let bound = match field.downcast_ref::<Literal>()?.value() {
            ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)) | ScalarValue::LargeUtf8(Some(n)) if n == "window_start" => Bound::Start,
            ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)) | ScalarValue::LargeUtf8(Some(n)) if n == "window_end" => Bound::End,
            _ => return None,
        };
        return window_of(p.input(), column.index()).map(|kind| (bound, kind));
    }
    if passes_through(plan) {
        return bound_of(plan.children().first()?, index);
    }
    None
}

/// The window of a `TUMBLE` or `HOP` aggregate emitting final results whose output column
/// `index` is its window value (DataFusion's aggregate not yet replaced, or ours).
fn window_of(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<WindowKind> {
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        let c = w.config();
        let closes = c.emit == EmitMode::Final && !c.of_input_windows && matches!(c.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. });
        return (closes && c.window_pos == Some(index)).then_some(c.kind);
    }
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        let partial = match agg.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => partial_below(agg.input())?,
            AggregateMode::Single | AggregateMode::SinglePartitioned => agg,
            _ => return None,
        };
        let (pos, f, args) = find_window(partial.group_expr().expr()).ok()??;
        let kind = window_kind(f, &args).ok()?;
        let fixed = matches!(kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. });
        return (fixed && pos == index && !partial.group_expr().has_grouping_set()).then_some(kind);
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let c = p.expr().get(index)?.expr.downcast_ref::<Column>()?;
        return window_of(p.input(), c.index());
    }
    if passes_through(plan) {
        return window_of(plan.children().first()?, index);
    }
    None
}

/// The expression's column, through casts that keep instants and `± constant`: the band time
/// of a join (`CAST(m.wend - INTERVAL '10' SECOND AS …)`) or a window-of-windows time.
fn time_column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.index());
    }
    if let Some(c) = expr.downcast_ref::<datafusion::physical_expr::expressions::CastExpr>() {
        return time_column(c.expr());
    }
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let constant = b.right().downcast_ref::<Literal>().is_some();
    (constant && matches!(b.op(), Operator::Plus | Operator::Minus)).then(|| time_column(b.left())).flatten()
}

/// `plan` with the window aggregate whose window bound is its output column `index` (traced
/// as [`bound_of`] does) handing its watermark on; `None` when that column is no such bound.
fn handing_on_below(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let rebuild =
        |child: Arc<dyn ExecutionPlan>| Arc::clone(plan).replace_children(vec![child], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute));
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let Some(e) = p.expr().get(index) else { return Ok(None) };
        let below = if let Some(c) = e.expr.downcast_ref::<Column>() {
            handing_on_below(p.input(), c.index())?
        } else {
            match e.expr.downcast_ref::<ScalarFunctionExpr>() {
                Some(f) if f.name() == "get_field" && bound_of(plan, index).is_some() => match f.args().first().and_then(|a| a.downcast_ref::<Column>()) {
                    Some(c) => window_handing_on(p.input(), c.index())?,
                    None => None,
                },
                _ => None,
            }
        };
        return below.map(rebuild).transpose();
    }
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        // a window of windows keys on the bounds of the windows below: its rows carry them
        // as key columns (the keys come first in its output)
        let c = w.config();
        let bound_key = c.of_input_windows
            && w.forwards_watermark()
            && c.keys.get(index).and_then(|(e, _)| e.downcast_ref::<Column>()).is_some_and(|k| bound_of(w.input(), k.index()).is_some());
        return Ok(bound_key.then(|| Arc::new(w.handing_on_watermarks()) as Arc<dyn ExecutionPlan>));
    }
    if passes_through(plan) {
        let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else { return Ok(None) };
        return handing_on_below(&child, index)?.map(rebuild).transpose();
    }
    Ok(None)
}

/// `plan` with the window aggregate whose window value is its output column `index` handing
/// its watermark on (through the operators [`window_of`] looks through).
fn window_handing_on(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let rebuild =
        |child: Arc<dyn ExecutionPlan>| Arc::clone(plan).replace_children(vec![child], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute));
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        let ours = w.config().window_pos == Some(index) && w.forwards_watermark() && !w.config().of_input_windows;
        return Ok(ours.then(|| Arc::new(w.handing_on_watermarks()) as Arc<dyn ExecutionPlan>));
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let Some(c) = p.expr().get(index).and_then(|e| e.expr.downcast_ref::<Column>()) else { return Ok(None) };
        return window_handing_on(p.input(), c.index())?.map(rebuild).transpose();
    }
    if passes_through(plan) {
        let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else { return Ok(None) };
        return window_handing_on(&child, index)?.map(rebuild).transpose();
    }
    Ok(None)
}

/// Sets every window aggregate whose window bounds an operator above reads as its event time
/// to hand its watermark on (see the module documentation): a window aggregate keyed on them
/// (a window of windows, or `TUMBLE(window_end, …)`) or an interval join whose band reads
/// them, which then no longer moves that side's event time with the clock while it is quiet.
///
/// ```sql
/// … JOIN (SELECT MAX(price) AS maxprice, window_end AS wend FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
///   ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend
/// -- the TUMBLE hands its watermark to the join: its last window's bids come out without a later window
/// ```
pub fn hand_on_watermarks(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_down(|node| {
        if let Some(w) = node.downcast_ref::<WindowAggregateExec>() {
            let Some(c) = w.config().time.as_ref().and_then(time_column) else { return Ok(Transformed::no(node)) };
            return Ok(match handing_on_below(w.input(), c)? {
                Some(input) => {
                    Transformed::yes(Arc::clone(&node).replace_children(vec![input], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?)
                }
                None => Transformed::no(node),
            });
        }
        if let Some(j) = node.downcast_ref::<crate::join::interval_join_exec::IntervalJoinExec>() {
            let Some(times) = j.band_times() else { return Ok(Transformed::no(node)) };
            let mut inputs = j.inputs().map(Arc::clone);
            let mut by_window = [false; 2];
            for side in 0..2 {
                if let Some(c) = time_column(times[side]) {
                    if let Some(new) = handing_on_below(&inputs[side], c)? {
                        inputs[side] = new;
                        by_window[side] = true;
                    }
                }
            }
            if by_window == [false, false] {
                return Ok(Transformed::no(node));
            }
            let [left, right] = inputs;
            return Ok(Transformed::yes(Arc::new(j.reading_windows(left, right, by_window)) as Arc<dyn ExecutionPlan>));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}
