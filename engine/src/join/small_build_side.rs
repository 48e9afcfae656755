//! Hash joins with a side of one row per window, or a side far smaller than the other, build
//! their table from that side, whole.
//!
//! ```sql
//! SELECT b.auction, b.price FROM bid b
//! JOIN (SELECT MAX(price) AS maxprice, window_end AS wend FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
//!   ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend
//! -- HashJoinExec(Partitioned) ← Repartition(Hash) ← per-window maxima / Repartition(Hash) ← every bid
//! -- becomes HashJoinExec(CollectLeft) ← per-window maxima / every bid, as read
//! ```
//!
//! DataFusion chooses how a hash join runs before our window operators are in the plan, when
//! the side that aggregates by window is still its own aggregate, which it sizes like its input.
//! So a join of every bid with one row per window ran partitioned: every bid hashed and copied
//! into a partition, for a table of a few hundred rows. Once the windows are ours, this rule
//! looks again: a side that holds one row per window (a window aggregate without keys, or an
//! aggregate grouped by window bounds alone, Nexmark q5's maximum per window) becomes the
//! build side, collected whole, and the other side is probed as it comes, without a
//! repartition. Over any input with more rows than windows that side is the smaller one.
//!
//! The same goes for a side that the sources' row counts (Parquet footers) show to be at most
//! a quarter of the other (the small side seen through filters and projections, the other
//! through projections alone; Nexmark q20: the auctions of one category joined with every
//! bid): its table is built by one task, and the bids are probed where they are read instead
//! of hashed and copied into partitions.
//!
//! An aggregate grouped by build-side columns right above such a join (Nexmark q4's closing
//! price per auction) is computed in the join itself where the same holds for it:
//! [`super::group_join`].
//!
//! The join's output is then partitioned as its probe side, so the rule leaves a join alone
//! unless every operator between it and the next repartition (or the top) works a row or a
//! batch at a time (projections, filters, unions, partial aggregates): an aggregate by the join
//! key, a top N per key or another partitioned join may rely on its hash partitioning.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::sql::EmitMode;
use crate::window::{WindowAggregateExec, WindowKind};

/// The rule; runs after our window operators are in place.
#[derive(Debug, Default)]
pub struct SmallBuildSideRule;

impl PhysicalOptimizerRule for SmallBuildSideRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite(plan, true, config.optimizer.join_reordering)
    }

    fn name(&self) -> &str {
        "ferris_small_build_side"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with its joins rewritten; `free` when nothing above relies on how `plan`'s output is
/// partitioned.
/// `reorder`: sides may be swapped by their row counts (DataFusion's `join_reordering`).
fn rewrite(plan: Arc<dyn ExecutionPlan>, free: bool, reorder: bool) -> Result<Arc<dyn ExecutionPlan>> {
    // (these make their own partitioning whatever their input's)
    let resets = plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
    // these work a row or a batch at a time, whatever partition it is in; any other operator
    // (a top N per partition, an interleaved union, …) may rely on its input's partitioning
    // without saying so
    let indifferent = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<UnionExec>().is_some()
        || plan.downcast_ref::<AggregateExec>().is_some_and(|a| *a.mode() == AggregateMode::Partial);
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let mut rewritten = Vec::with_capacity(children.len());
    for child in children {
        rewritten.push(rewrite(child, resets || (free && indifferent), reorder)?);
    }
    let plan = replace_children_if_necessary(plan, rewritten)?;
    if !free {
        return Ok(plan);
    }
    if let Some(grouped) = aggregate_in_join(&plan)? {
        return Ok(grouped);
    }
    match plan.downcast_ref::<HashJoinExec>() {
        Some(join) => Ok(collect_small_side(join, reorder)?.unwrap_or(plan)),
        None => Ok(plan),
    }
}

/// An aggregate of the build side's groups over a hash join, computed in the join
/// ([`super::group_join`]): its build side read whole, its probe side as it comes; None when
/// it does not qualify, or when the build side is known to be the larger one (the sources' row
/// counts, or a probe side of one row per window): built by one task, it would then cost more
/// than the partitioned join saves.
fn aggregate_in_join(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = plan.downcast_ref::<AggregateExec>() else { return Ok(None) };
    let Some(join) = agg.input().downcast_ref::<HashJoinExec>() else { return Ok(None) };
    let (build, probe) = (unhashed(join.left()), unhashed(join.right()));
    if let (Some(b), Some(p)) = (rows_at_least(&build), rows_at_most(&probe)) {
        if b > p {
            return Ok(None);
        }
    }
    // (a probe side of one row per window, or far smaller than the build side, would leave
    // one task interning every build row for a handful of pairs)
    if one_row_per_window(&probe) || much_smaller(&probe, &build) {
        return Ok(None);
    }
    super::group_join::group_join(agg, build, spread(probe, join)?)
}

/// `join`, partitioned, with a side of one row per window or far smaller than the other: that
/// side collected whole as the build side, the other probed without its repartition (the sides
/// swapped by row counts only where `reorder`).
fn collect_small_side(join: &HashJoinExec, reorder: bool) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.partition_mode() != PartitionMode::Partitioned || join.null_aware {
        return Ok(None);
    }
    // (a table built from a stream would never be complete; an order of the output would be
    // lost with the sides' partitioning)
    if join.left().boundedness().is_unbounded() || join.right().boundedness().is_unbounded() || join.properties().output_ordering().is_some() {
        return Ok(None);
    }
    let (left, right) = (unhashed(join.left()), unhashed(join.right()));
    if one_row_per_window(&left) || much_smaller(&left, &right) {
        let new =
            join.builder().with_new_children(vec![whole(left), spread(right, join)?])?.with_partition_mode(PartitionMode::CollectLeft).reset_state().build()?;
        return Ok(Some(Arc::new(new)));
    }
    if (one_row_per_window(&right) || (reorder && much_smaller(&right, &left))) && join.join_type().supports_swap() {
        // the same join with the small side collected, then sides swapped so it builds
        let unswapped = join.builder().with_new_children(vec![spread(left, join)?, whole(right)])?.reset_state().build()?;
        return Ok(Some(unswapped.swap_inputs(PartitionMode::CollectLeft)?));
    }
    Ok(None)
}

/// A build side with at most `1 / SMALLER_BY` of the probe side's rows is collected whole.
const SMALLER_BY: usize = 4;

/// Whether `small` gives at most `1 / SMALLER_BY` of the rows `big` gives, as far as the
/// sources' row counts (Parquet footers) tell: `small`'s through filters, projections and
/// repartitioning (a filter gives fewer rows, so the source's count bounds them), `big`'s
/// through projections and repartitioning alone. A table built whole from `small` costs one
/// task its build, but no row of `big` is hashed and copied into a partition for it: Nexmark
/// q20, the bids joined with the auctions of one category.
fn much_smaller(small: &Arc<dyn ExecutionPlan>, big: &Arc<dyn ExecutionPlan>) -> bool {
    match (rows_at_most(small), rows_at_least(big)) {
        (Some(s), Some(b)) => s.saturating_mul(SMALLER_BY) <= b,
        _ => false,
    }
}

/// The rows `plan` gives at most: a source's exact count, seen through nodes that keep or drop rows.
fn rows_at_most(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    passthrough(plan).map_or_else(|| exact_rows(plan), rows_at_most)
}

/// The rows `plan` gives at least: a source's exact count, seen through nodes that keep every
/// row (not a filter, nor a node with a fetch: a `LIMIT` pushed into it).
fn rows_at_least(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    if plan.downcast_ref::<FilterExec>().is_some() || plan.fetch().is_some() {
        return None;
    }
    passthrough(plan).map_or_else(|| exact_rows(plan), rows_at_least)
}

/// `plan`'s exact row count, when its statistics know it (a Parquet source's footers).
fn exact_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    #[allow(deprecated)]
    let stats = plan.partition_statistics(None).ok()?;
    match stats.num_rows {
        datafusion::common::stats::Precision::Exact(n) => Some(n),
        _ => None,
    }
}

/// A join input without the hash repartition the partitioned join put on it.
fn unhashed(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    match plan.downcast_ref::<RepartitionExec>() {
        Some(r) if matches!(r.partitioning(), Partitioning::Hash(..)) && !r.preserve_order() => Arc::clone(r.input()),
        _ => Arc::clone(plan),
    }
}

/// The probe side: in one partition, its batches spread over as many partitions as the join
/// had, as they are (round robin, nothing hashed or copied).
fn spread(plan: Arc<dyn ExecutionPlan>, join: &HashJoinExec) -> Result<Arc<dyn ExecutionPlan>> {
    let n = join.properties().output_partitioning().partition_count();
    Ok(if plan.output_partitioning().partition_count() == 1 && n > 1 {
        Arc::new(RepartitionExec::try_new(plan, Partitioning::RoundRobinBatch(n))?)
    } else {
        plan
    })
}

/// `plan` in one partition (a collected build side reads one).
fn whole(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    }
}

/// Whether `plan` gives one row per window: a `TUMBLE`/`HOP` aggregate without keys emitting
/// final results, or an aggregate grouped by the bounds of such windows alone, seen through
/// projections, filters and repartitioning.
fn one_row_per_window(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        return w.config().keys.is_empty() && closes_tumble_or_hop(w);
    }
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        let n = agg.group_expr().expr().len();
        return n > 0 && (0..n).all(|i| groups_by_window(agg, i));
    }
    passthrough(plan).is_some_and(one_row_per_window)
}

/// Whether `w` is a `TUMBLE` or `HOP` emitting final results (each window once).
fn closes_tumble_or_hop(w: &WindowAggregateExec) -> bool {
    let c = w.config();
    c.emit == EmitMode::Final && matches!(c.kind, WindowKind::Tumble { .. } | WindowKind::Hop { .. })
}

/// Whether group column `i` of `agg` (no grouping sets) is a window column of its input.
fn groups_by_window(agg: &AggregateExec, i: usize) -> bool {
    let group = agg.group_expr();
    group.groups().len() == 1 && group.expr().get(i).is_some_and(|(e, _)| e.downcast_ref::<Column>().is_some_and(|c| is_window_column(agg.input(), c.index())))
}

/// The input of a node that keeps its rows' groups (fewer rows at most), or `None`.
fn passthrough(plan: &Arc<dyn ExecutionPlan>) -> Option<&Arc<dyn ExecutionPlan>> {
    let keeps = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some();
    if keeps {
        plan.children().into_iter().next()
    } else {
        None
    }
}

/// Whether column `index` of `plan`'s output is a window (or its start or end) of a `TUMBLE` or
/// `HOP` aggregate emitting final results, traced through projections, filters, repartitioning
/// and the group columns of partial aggregates.
fn is_window_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        return w.config().window_pos == Some(index) && closes_tumble_or_hop(w);
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        return p.expr().get(index).is_some_and(|e| window_field_of(&e.expr).is_some_and(|i| is_window_column(p.input(), i)));
    }
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        return groups_by_window(agg, index);
    }
    if plan.downcast_ref::<FilterExec>().is_some_and(|f| f.projection().is_some()) {
        return false;
    }
    passthrough(plan).is_some_and(|input| is_window_column(input, index))
}

/// The input column an expression takes a window or one of its bounds from: a column, or
/// `get_field(column, …)` (`window_start`, `window_end`).
fn window_field_of(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.index());
    }
    let f = expr.downcast_ref::<ScalarFunctionExpr>()?;
    if f.name() != "get_field" {
        return None;
    }
    f.args().first()?.downcast_ref::<Column>().map(Column::index)
}
