//! Keeps a plan's partitioning when a streaming rule swaps one of its operators. Our
//! operators run as one partition (they merge their inputs to track watermarks); DataFusion
//! planned the operators above for the partitioning of the one replaced, so we restore it.
//!
//! ```sql
//! SELECT … FROM (SELECT window_start, k, COUNT(*) AS n FROM s GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k) w
//! JOIN t ON w.k = t.k   -- the join expects w hash-partitioned on k, as DataFusion's aggregate was
//! ```

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::physical_expr::expressions::UnKnownColumn;
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
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        if matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)) {
            return without_round_robin(Arc::clone(r.input()));
        }
        return Ok(plan);
    }
    let passes = plan.downcast_ref::<ProjectionExec>().is_some() || plan.downcast_ref::<FilterExec>().is_some();
    if !passes {
        return Ok(plan);
    }
    let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else { return Ok(plan) };
    let new_child = without_round_robin(Arc::clone(&child))?;
    if Arc::ptr_eq(&new_child, &child) {
        return Ok(plan);
    }
    #[allow(deprecated)]
    plan.with_new_children(vec![new_child])
}
