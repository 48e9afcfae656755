//! Keeps a plan's partitioning when a streaming rule swaps one of its operators. Our
//! operators run as one partition (they merge their inputs to track watermarks); DataFusion
//! planned the operators above for the partitioning of the one replaced, so we restore it.
//!
//! ```sql
//! SELECT … FROM (SELECT window_start, k, COUNT(*) AS n FROM s GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k) w
//! JOIN t ON w.k = t.k   -- the join expects w hash-partitioned on k, as DataFusion's aggregate was
//! ```

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::expressions::UnKnownColumn;
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
