//! Window functions (`LAG`, `LEAD`, `ROW_NUMBER`, `FIRST_VALUE`, `LAST_VALUE`, aggregates
//! `OVER (… ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)`) on unbounded streams. DataFusion
//! evaluates them incrementally when its input is ordered by the `ORDER BY` of the `OVER`
//! clause, but orders the input with a sort that waits for the end of the stream. This rule
//! replaces that sort with [`WatermarkSortExec`], which releases rows in event-time order as
//! the watermark passes them, and puts over it our
//! [`crate::window_function::StreamWindowFunctionExec`], whose per-key state is checkpointed,
//! or, for functions it cannot carry (frames ending `UNBOUNDED FOLLOWING`, `CUME_DIST`, …),
//! DataFusion's operator keeping one state per `PARTITION BY` key.
//!
//! ```sql
//! SELECT device_id, ts, LAG(temperature, 1) OVER (PARTITION BY device_id ORDER BY ts) AS previous,
//!        AVG(temperature) OVER (PARTITION BY device_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS avg10
//! FROM readings
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, InputOrderMode};

use crate::event_time::watermark_sort::WatermarkSortExec;
use crate::event_time::WatermarkConfig;

/// Plans window functions over unbounded inputs on event-time order.
#[derive(Debug, Clone, Default)]
pub struct StreamWindowFunctionRule {
    /// How watermarks move.
    pub watermark: WatermarkConfig,
    /// Integer event-time columns in epoch seconds, by name, with their multiplier to ms.
    pub int_scales: HashMap<String, i64>,
    /// `state.ttl`: keys of our window-function operator idle that long are forgotten.
    pub state_ttl: Option<std::time::Duration>,
}

/// Below the sort (and exchanges) DataFusion put in for a window: the input proper; None when
/// `plan` is no such operator.
pub(crate) fn below_sort(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let is_exchange = plan.downcast_ref::<SortExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
    if !is_exchange {
        return None;
    }
    let child = plan.children().first().map(|c| Arc::clone(c))?;
    Some(below_sort(&child).unwrap_or(child))
}

impl PhysicalOptimizerRule for StreamWindowFunctionRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let (exprs, input) = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
                (w.window_expr().to_vec(), Arc::clone(w.input()))
            } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
                (w.window_expr().to_vec(), Arc::clone(w.input()))
            } else {
                return Ok(Transformed::no(node));
            };
            if !input.boundedness().is_unbounded() {
                return Ok(Transformed::no(node));
            }
            let Some(source) = below_sort(&input) else { return Ok(Transformed::no(node)) };
            let Some(order) = exprs.first().and_then(|e| e.order_by().first().cloned()) else {
                return plan_err!("a window function on a stream needs ORDER BY <event time> in its OVER clause");
            };
            if order.options.descending {
                return plan_err!("a window function on a stream can only order by event time ascending (ORDER BY {} DESC cannot be streamed)", order.expr);
            }
            if exprs.iter().any(|e| e.order_by().first().map(|o| o.expr.as_ref() != order.expr.as_ref()).unwrap_or(true)) {
                return plan_err!("window functions on a stream must all ORDER BY the same event time");
            }
            let int_scale = order.expr.downcast_ref::<Column>().and_then(|c| self.int_scales.get(c.name())).copied().unwrap_or(1);
            let source = super::partitioning::without_round_robin(crate::join::interval_join_exec::order_join_outputs(source)?)?;
            let watermark = crate::window::planner_rule::with_join_lag(self.watermark, &source);
            let sorted: Arc<dyn ExecutionPlan> = Arc::new(WatermarkSortExec::new(source, order, int_scale, watermark));
            // functions whose state between batches is small and known are ours, checkpointed;
            // the others run on DataFusion's operator (a checkpoint cannot hold its state)
            let window: Arc<dyn ExecutionPlan> = match crate::window_function::carries(&exprs) {
                Ok(carries) => Arc::new(
                    crate::window_function::StreamWindowFunctionExec::try_new(sorted, exprs, carries, node.schema())?
                        .with_state_ttl(self.state_ttl)
                        .with_int_scale(int_scale),
                ),
                Err(why) => {
                    tracing::debug!("window functions on DataFusion's operator: {why}");
                    Arc::new(BoundedWindowAggExec::try_new(exprs, sorted, InputOrderMode::Linear, false)?)
                }
            };
            Ok(Transformed::yes(super::partitioning::keep_partitioning(&node, window)?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ferris_stream_window_functions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
