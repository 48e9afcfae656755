//! The physical optimizer rule that puts [`IntervalJoinExec`] in place of DataFusion's hash
//! joins (and the symmetric hash join it picks for two unbounded inputs, which cannot evict
//! state without sorted inputs) when the join condition bounds the event-time difference and
//! the job is a stream: an unbounded input, or a `watermark.delay` that asks for bounded state.
//!
//! A stream joined to a table (one input unbounded, the other bounded) takes the same operator
//! without a band: DataFusion's hash join would hold its output rows until a full batch, which
//! on a slow stream may never come; ours emits each probe's matches at once.
//!
//! ```sql
//! SELECT * FROM clicks c JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '5' MINUTES
//! -- HashJoinExec / SymmetricHashJoinExec → IntervalJoinExec(band = ±5 min)
//! SELECT o.*, c.name FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id
//! -- orders tailed, customers a file → IntervalJoinExec(band = none)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, JoinType, Result};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{HashJoinExec, SymmetricHashJoinExec};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use super::interval_join_exec::{IntervalJoinConfig, IntervalJoinExec};
use super::time_band::{equi_time_band, find_time_band};
use crate::event_time::WatermarkConfig;

/// One equi-join condition: the left and the right expression.
pub type JoinOn = (Arc<dyn datafusion::physical_plan::PhysicalExpr>, Arc<dyn datafusion::physical_plan::PhysicalExpr>);

/// The job's settings the rule plans with.
#[derive(Debug, Clone, Default)]
pub struct IntervalJoinRule {
    /// How watermarks move.
    pub watermark: WatermarkConfig,
    /// Integer event-time columns in epoch seconds, by name, with their multiplier to ms.
    pub int_scales: HashMap<String, i64>,
    /// The job takes checkpoints of an unbounded input: every equi-join becomes ours (its
    /// state can be checkpointed), joins of two tables too.
    pub all_joins: bool,
}

/// The input without the repartitioning DataFusion put in for its own join.
fn strip_exchange(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.downcast_ref::<RepartitionExec>().is_some() || plan.downcast_ref::<CoalescePartitionsExec>().is_some() {
        if let Some(child) = plan.children().first() {
            return strip_exchange(child);
        }
    }
    Arc::clone(plan)
}

struct JoinParts<'a> {
    left: &'a Arc<dyn ExecutionPlan>,
    right: &'a Arc<dyn ExecutionPlan>,
    on: &'a [(PhysicalExprRef, PhysicalExprRef)],
    filter: Option<&'a JoinFilter>,
    join_type: JoinType,
    join_schema: datafusion::arrow::datatypes::SchemaRef,
    projection: Option<Vec<usize>>,
    /// `NOT IN`: a null on the other side means no row passes (not ours to answer).
    null_aware: bool,
}

impl PhysicalOptimizerRule for IntervalJoinRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let parts = if let Some(j) = node.downcast_ref::<HashJoinExec>() {
                Some(JoinParts {
                    left: j.left(),
                    right: j.right(),
                    on: j.on(),
                    filter: j.filter(),
                    join_type: *j.join_type(),
                    join_schema: Arc::clone(j.join_schema()),
                    projection: j.projection.as_ref().map(|p| p.to_vec()),
                    null_aware: j.null_aware,
                })
            } else {
                node.downcast_ref::<SymmetricHashJoinExec>().map(|j| JoinParts {
                    left: j.left(),
                    right: j.right(),
                    on: j.on(),
                    filter: j.filter(),
                    join_type: *j.join_type(),
                    join_schema: j.schema(),
                    projection: None,
                    null_aware: false,
                })
            };
            match parts {
                Some(p) => match self.rewrite(&p, node.schema())? {
                    Some(new) => Ok(Transformed::yes(crate::planner::partitioning::keep_partitioning(&node, new)?)),
                    None => Ok(Transformed::no(node)),
                },
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ferris_interval_join"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl IntervalJoinRule {
    fn rewrite(&self, j: &JoinParts, schema: datafusion::arrow::datatypes::SchemaRef) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let supported = matches!(
            j.join_type,
            JoinType::Inner
                | JoinType::Left
                | JoinType::Right
                | JoinType::Full
                | JoinType::LeftSemi
                | JoinType::RightSemi
                | JoinType::LeftAnti
                | JoinType::RightAnti
        );
        if !supported || j.null_aware || j.on.is_empty() {
            return Ok(None);
        }
        let (lu, ru) = (j.left.boundedness().is_unbounded(), j.right.boundedness().is_unbounded());
        if !(lu || ru || self.watermark.delay_ms.is_some() || self.all_joins) {
            return Ok(None);
        }
        let band = match j.filter {
            Some(f) => find_time_band(f, &self.int_scales)?,
            None => None,
        };
        let band = band.or_else(|| equi_time_band(j.on, &j.left.schema(), &j.right.schema()));
        if band.is_none() {
            if lu && ru {
                return plan_err!(
                    "a join of two unbounded streams needs a time bound, or its state would grow forever: add WITHIN INTERVAL '5' MINUTES after the ON condition and name each source's event-time column ('x.event_time' = 'ts'), or bound the event times in the ON condition (b.ts BETWEEN a.ts - INTERVAL … AND a.ts + INTERVAL …)"
                );
            }
            if !(lu || ru || self.all_joins) {
                // bounded inputs without a band: DataFusion's hash join is the right tool
                return Ok(None);
            }
        }
        let config = IntervalJoinConfig {
            on: j.on.to_vec(),
            filter: j.filter.cloned(),
            join_type: j.join_type,
            band,
            watermarks: [self.watermark, self.watermark],
            ordered_output: false,
            join_schema: Arc::clone(&j.join_schema),
            projection: j.projection.clone(),
            schema,
        };
        // joins below hand their rows over in event-time order, as this one reads them by time
        let left = crate::planner::partitioning::without_round_robin(super::interval_join_exec::order_join_outputs(strip_exchange(j.left))?)?;
        let right = crate::planner::partitioning::without_round_robin(super::interval_join_exec::order_join_outputs(strip_exchange(j.right))?)?;
        let lag = |p: &Arc<dyn ExecutionPlan>| crate::window::planner_rule::with_join_lag(self.watermark, p);
        let config = IntervalJoinConfig { watermarks: [lag(&left), lag(&right)], ..config };
        Ok(Some(Arc::new(IntervalJoinExec::new(left, right, config))))
    }
}
