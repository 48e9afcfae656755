//! Finds `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` kept to its first rows
//! (`WHERE rn <= N`, `rn < N`, `rn = 1`) over an unbounded input and plans it as a
//! [`StreamTopNExec`]. DataFusion would sort the whole stream first, which never ends; a window
//! function ordered by event time ascending is left to the window-function rule (its rows never
//! change once numbered).
//!
//! ```sql
//! SELECT auction, bidder, price FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rn FROM bid
//! ) WHERE rn = 1
//! -- FilterExec: rn@7 = 1 ← BoundedWindowAggExec: row_number() … ← SortExec ← source
//! -- becomes StreamTopNExec: partition_by=[bidder, auction], order_by=[date_time DESC], n=1
//! ```

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use super::top_n_exec::{StreamTopNExec, TopNConfig};

/// Plans top-N per key over unbounded inputs as [`StreamTopNExec`].
#[derive(Debug, Clone, Default)]
pub struct StreamTopNRule {
    /// The job's event-time columns, by name: `ORDER BY` one of them ascending is left to the
    /// window-function rule.
    pub event_time_columns: Vec<String>,
    /// `'state.ttl'`: a key not updated for this long is forgotten.
    pub state_ttl: Option<std::time::Duration>,
}

fn literal_u64(e: &Arc<dyn PhysicalExpr>) -> Option<u64> {
    let lit = e.downcast_ref::<Literal>()?;
    let v = lit.value().cast_to(&datafusion::arrow::datatypes::DataType::Int64).ok()?;
    match v {
        ScalarValue::Int64(Some(n)) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn column_index(e: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(c) = e.downcast_ref::<Column>() {
        return Some(c.index());
    }
    e.downcast_ref::<CastExpr>().and_then(|c| column_index(c.expr()))
}

/// `rank <= N`, `rank < N`, `rank = 1` (either way round) on column `rank`: N.
fn limit_of(predicate: &Arc<dyn PhysicalExpr>, rank: usize) -> Option<usize> {
    let b = predicate.downcast_ref::<BinaryExpr>()?;
    let (op, n) = if column_index(b.left()) == Some(rank) {
        (*b.op(), literal_u64(b.right())?)
    } else if column_index(b.right()) == Some(rank) {
        (b.op().swap()?, literal_u64(b.left())?)
    } else {
        return None;
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n.checked_sub(1)?,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(limit).ok().filter(|l| *l > 0)
}

impl StreamTopNRule {
    /// The top-N operator for `filter`, if it keeps the first rows of a `ROW_NUMBER` over an
    /// unbounded input that the window-function rule cannot stream.
    fn top_n(&self, filter: &FilterExec) -> Result<Option<StreamTopNExec>> {
        let window = filter.input();
        let (exprs, input, schema) = if let Some(w) = window.downcast_ref::<BoundedWindowAggExec>() {
            (w.window_expr(), w.input(), w.schema())
        } else if let Some(w) = window.downcast_ref::<WindowAggExec>() {
            (w.window_expr(), w.input(), w.schema())
        } else {
            return Ok(None);
        };
        if !input.boundedness().is_unbounded() || exprs.len() != 1 || !exprs[0].name().starts_with("row_number(") {
            return Ok(None);
        }
        let rank = schema.fields().len() - 1;
        let Some(limit) = limit_of(filter.predicate(), rank) else { return Ok(None) };
        let order = exprs[0].order_by();
        let by_event_time = order.len() == 1
            && !order[0].options.descending
            && order[0].expr.downcast_ref::<Column>().is_some_and(|c| self.event_time_columns.iter().any(|t| t.eq_ignore_ascii_case(c.name())));
        if order.is_empty() || by_event_time {
            return Ok(None);
        }
        let below = crate::planner::window_functions::below_sort(input).unwrap_or_else(|| Arc::clone(input));
        let source = crate::planner::partitioning::without_round_robin(below)?;
        let projection = filter.projection().as_ref().map(|p| p.to_vec());
        let rank_visible = projection.as_ref().is_none_or(|p| p.contains(&rank));
        let config = TopNConfig {
            partition_by: exprs[0].partition_by().to_vec(),
            order_by: order.to_vec(),
            limit,
            rank_field: Arc::clone(&schema.fields()[rank]),
            projection,
            rank_visible,
            op_column: false,
            state_ttl: self.state_ttl,
        };
        Ok(Some(StreamTopNExec::try_new(source, config)?))
    }
}

impl PhysicalOptimizerRule for StreamTopNRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                if let Some(top) = self.top_n(filter)? {
                    return Ok(Transformed::yes(crate::planner::partitioning::keep_partitioning(&node, Arc::new(top))?));
                }
                return Ok(Transformed::no(node));
            }
            // a projection above that drops the rank: a row whose rank alone changed is no change
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                if let Some(top) = p.input().downcast_ref::<StreamTopNExec>() {
                    if top.config().rank_visible {
                        if let Some(rank) = top.rank_output_index() {
                            let reads_rank = p.expr().iter().any(|e| collect_columns(&e.expr).iter().any(|c| c.index() == rank));
                            if !reads_rank {
                                let hidden: Arc<dyn ExecutionPlan> = Arc::new(top.with_rank_hidden()?);
                                use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
                                let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                                return Ok(Transformed::yes(Arc::clone(&node).replace_children(vec![hidden], options)?));
                            }
                        }
                    }
                }
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ferris_stream_top_n"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_expr::expressions::lit;

    fn cmp(l: Arc<dyn PhysicalExpr>, op: Operator, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    }

    #[test]
    fn the_rank_bounds_are_read_either_way_round() {
        let rn: Arc<dyn PhysicalExpr> = Arc::new(Column::new("rn", 3));
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::LtEq, lit(10u64)), 3), Some(10));
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::Lt, lit(10i64)), 3), Some(9));
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::Eq, lit(1i64)), 3), Some(1));
        assert_eq!(limit_of(&cmp(lit(5i64), Operator::GtEq, Arc::clone(&rn)), 3), Some(5));
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::Eq, lit(2i64)), 3), None);
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::Gt, lit(2i64)), 3), None);
        assert_eq!(limit_of(&cmp(Arc::clone(&rn), Operator::Lt, lit(1i64)), 3), None);
        assert_eq!(limit_of(&cmp(Arc::new(Column::new("x", 2)), Operator::LtEq, lit(3i64)), 3), None);
    }
}
