//! Keeps a plan's partitioning when a streaming rule swaps one of its operators. Our
//! operators run as one partition (they merge their inputs to track watermarks); DataFusion
//! planned the operators above for the partitioning of the one replaced, so we restore it.
//!
//! ```sql
//! SELECT … FROM (SELECT window_start, k, COUNT(*) AS n FROM s GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k) w
//! JOIN t ON w.k = t.k   -- the join expects w hash-partitioned on k, as DataFusion's aggregate was
//! ```

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::physical_expr::expressions::UnKnownColumn;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

/// `new`, repartitioned as `old` was when `old` had several partitions and `new` has fewer.
pub fn keep_partitioning(old: &Arc<dyn ExecutionPlan>, new: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let want = old.output_partitioning();
    let n = want.partition_count();
    if n <= 1 || new.output_partitioning().partition_count() == n {
        return Ok(new);
    }
    // a hash partitioning on columns that were projected away is no promise anyone relies on
    let known = match want {
        Partitioning::Hash(exprs, _) => exprs.iter().all(|e| {
            let mut ok = true;
            let _ = e.apply(|x| {
                if x.downcast_ref::<UnKnownColumn>().is_some() {
                    ok = false;
                }
                Ok(TreeNodeRecursion::Continue)
            });
            ok
        }),
        _ => false,
    };
    let partitioning = if known { want.clone() } else { Partitioning::RoundRobinBatch(n) };
    Ok(Arc::new(RepartitionExec::try_new(new, partitioning)?))
}

/// The input of an event-time operator without round-robin repartitions (through the
/// projections and filters above them). Round robin deals one stream's batches to
/// several partitions; each partition keeps its own watermark, and one that happens to get no
/// batch would hold the operator's watermark back for good.
pub fn without_round_robin(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    without_repartitions(plan, &|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)))
}

/// `plan` without the repartitions `drop` picks found below it through projections and
/// filters (the first one met, and any right below it that `drop` picks too).
fn without_repartitions(plan: Arc<dyn ExecutionPlan>, drop: &dyn Fn(&RepartitionExec) -> bool) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        if drop(r) {
            return without_repartitions(Arc::clone(r.input()), drop);
        }
        return Ok(plan);
    }
    let passes = plan.downcast_ref::<ProjectionExec>().is_some() || plan.downcast_ref::<FilterExec>().is_some();
    if !passes {
        return Ok(plan);
    }
    let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else { return Ok(plan) };
    let new_child = without_repartitions(Arc::clone(&child), drop)?;
    if Arc::ptr_eq(&new_child, &child) {
        return Ok(plan);
    }
    #[allow(deprecated)]
    plan.with_new_children(vec![new_child])
}

/// A hash repartition whose rows reach only another hash repartition (through projections and
/// filters) moves every row for nothing: the one above decides where each row goes. Left by
/// [`keep_partitioning`] when the operator above one of ours repartitions anyway:
///
/// ```sql
/// SELECT p.id FROM (SELECT id, window_start FROM person GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), id) p
/// JOIN (SELECT seller, window_start FROM auction GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), seller) a
///   ON p.id = a.seller AND p.window_start = a.window_start
/// -- each window aggregate was hash-partitioned on (its window, its keys), as DataFusion's
/// -- aggregate was; the join hashes on (id, window_start) again: the first goes
/// ```
///
/// Order-preserving repartitions stay (the order is what they are for).
#[derive(Debug, Default)]
pub struct StackedRepartitionsRule;

impl PhysicalOptimizerRule for StackedRepartitionsRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let hash = |r: &RepartitionExec| matches!(r.partitioning(), Partitioning::Hash(..)) && !r.preserve_order();
        plan.transform_down(|node| {
            let Some(outer) = node.downcast_ref::<RepartitionExec>().filter(|r| hash(r)) else { return Ok(Transformed::no(node)) };
            let input = Arc::clone(outer.input());
            let below = without_repartitions(Arc::clone(&input), &hash)?;
            if Arc::ptr_eq(&below, &input) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(Arc::new(RepartitionExec::try_new(below, outer.partitioning().clone())?) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "ferris_stacked_repartitions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_expr::projection::ProjectionExpr;
    use datafusion::physical_plan::empty::EmptyExec;

    fn hash(plan: Arc<dyn ExecutionPlan>, column: &str) -> Arc<dyn ExecutionPlan> {
        let i = plan.schema().index_of(column).unwrap();
        Arc::new(RepartitionExec::try_new(plan, Partitioning::Hash(vec![Arc::new(Column::new(column, i))], 2)).unwrap())
    }

    /// `b, a` of the input.
    fn swap(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let exprs = ["b", "a"].iter().map(|c| ProjectionExpr { expr: Arc::new(Column::new(c, plan.schema().index_of(c).unwrap())), alias: c.to_string() });
        Arc::new(ProjectionExec::try_new(exprs.collect::<Vec<_>>(), plan).unwrap())
    }

    fn repartitions(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut out = Vec::new();
        plan.apply(|p| {
            if let Some(r) = p.downcast_ref::<RepartitionExec>() {
                out.push(format!("{} {}", r.partitioning(), r.preserve_order()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        out
    }

    fn optimized(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        StackedRepartitionsRule.optimize(plan, &ConfigOptions::default()).unwrap()
    }

    /// Hash under a projection under hash: the lower goes (and two right below one another);
    /// round robin and hash under anything else stay.
    #[test]
    fn a_hash_repartition_feeding_only_another_goes() {
        let input: Arc<dyn ExecutionPlan> =
            Arc::new(EmptyExec::new(Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new("b", DataType::Int64, false)]))));
        let plan = hash(swap(hash(Arc::clone(&input), "a")), "b");
        let out = optimized(plan);
        assert_eq!(repartitions(&out), vec!["Hash([b@0], 2) false"]);
        assert_eq!(out.output_partitioning().partition_count(), 2);
        assert_eq!(out.schema().field(0).name(), "b");

        let out = optimized(hash(hash(hash(Arc::clone(&input), "a"), "b"), "a"));
        assert_eq!(repartitions(&out), vec!["Hash([a@0], 2) false"]);

        let round_robin: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(Arc::clone(&input), Partitioning::RoundRobinBatch(2)).unwrap());
        let out = optimized(hash(swap(round_robin), "b"));
        assert_eq!(repartitions(&out), vec!["Hash([b@0], 2) false", "RoundRobinBatch(2) false"]);

        // a hash under an operator other than a projection or filter is what that operator needs
        let coalesced: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(hash(Arc::clone(&input), "a")));
        assert_eq!(repartitions(&optimized(hash(coalesced, "b"))).len(), 2);
    }
}
