//! Keeps an unbounded job's rows moving. DataFusion's operators coalesce small batches into
//! `batch_size` rows, which on a stream that trickles would hold rows back indefinitely. For
//! jobs that read an unbounded source, batches pass through as they come.
//!
//! ```sql
//! SELECT * FROM clicks WHERE kind = 'click'
//! WITH ('clicks.type' = 'file_source', 'clicks.path' = 'clicks.jsonl', 'clicks.watch' = 'true');
//! ```

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::ExecutionPlan;

/// Rewrites `plan` so that no filter waits to fill a batch before emitting.
pub fn pass_batches_through(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            // A target of one row makes every non-empty batch bypass the coalescer whole.
            return Ok(Transformed::yes(Arc::new(filter.with_batch_size(1)?) as Arc<dyn ExecutionPlan>));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}
