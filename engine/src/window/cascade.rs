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

/// `plan` without the repartitioning between it and the window aggregate below (through
/// projections and filters): that operator's windows come out in order in one stream, and the
/// operator reading them merges its inputs anyway.
pub fn without_exchanges(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    #[allow(deprecated)]
    let exchange = plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CoalesceBatchesExec>().is_some();
    if exchange {
        return match plan.children().first() {
            Some(child) => without_exchanges(Arc::clone(child)),
            None => Ok(plan),
        };
    }
    let keeps = plan.downcast_ref::<ProjectionExec>().is_some() || plan.downcast_ref::<FilterExec>().is_some();
    if !keeps {
        return Ok(plan);
    }
    let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else { return Ok(plan) };
    let stripped = without_exchanges(Arc::clone(&child))?;
    if Arc::ptr_eq(&stripped, &child) {
        return Ok(plan);
    }
    plan.replace_children(vec![stripped], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
}
