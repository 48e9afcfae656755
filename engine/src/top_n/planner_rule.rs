//! Finds `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` kept to its first rows
//! (`WHERE rn <= N`, `rn < N`, `rn = 1`) over an unbounded input and plans it as a
//! [`StreamTopNExec`]. DataFusion would sort the whole stream first, which never ends; a window
//! function ordered by event time ascending is left to the window-function rule (its rows never
//! change once numbered). Over a bounded input the same pattern becomes a [`BoundedTopNExec`]
//! (one pass, no sort) where it can order by the `ORDER BY` columns.
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
use datafusion::physical_expr::{Distribution, PartitioningSatisfaction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use super::bounded_top_n_exec::{BoundedTopNConfig, BoundedTopNExec};
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
    // an integer: `rn < 3.5` is not `rn < 3`
    if !lit.value().data_type().is_integer() {
        return None;
    }
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

/// The `ROW_NUMBER` window a filter keeps the first rows of: the window's only expression,
/// its input and schema, the rows kept per key, and which of the window's output columns (its
/// input's, then the rank) the filter passes on.
struct RowNumberWindow<'a> {
    expr: &'a Arc<dyn datafusion::physical_plan::WindowExpr>,
    input: &'a Arc<dyn ExecutionPlan>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    limit: usize,
    projection: Option<Vec<usize>>,
}

/// Finds the window below `filter` — directly, or through a projection of plain columns that
/// DataFusion put between them (a query selecting some of the columns) — when it is one
/// `ROW_NUMBER` and the filter keeps its first rows.
fn row_number_window(filter: &FilterExec) -> Option<RowNumberWindow<'_>> {
    let mut node = filter.input();
    // the window's output column of each column of the filter's input
    let mut columns: Option<Vec<usize>> = None;
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        columns = Some(p.expr().iter().map(|e| e.expr.downcast_ref::<Column>().map(Column::index)).collect::<Option<Vec<_>>>()?);
        node = p.input();
    }
    let (exprs, input, schema) = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
        (w.window_expr(), w.input(), w.schema())
    } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
        (w.window_expr(), w.input(), w.schema())
    } else {
        return None;
    };
    if exprs.len() != 1 || !exprs[0].name().starts_with("row_number(") {
        return None;
    }
    let rank = schema.fields().len() - 1;
    let rank_in_filter = match &columns {
        Some(c) => c.iter().position(|&i| i == rank)?,
        None => rank,
    };
    let limit = limit_of(filter.predicate(), rank_in_filter)?;
    let projection = match (filter.projection().as_ref(), columns) {
        (Some(p), Some(c)) => Some(p.iter().map(|&i| c.get(i).copied()).collect::<Option<Vec<_>>>()?),
        (Some(p), None) => Some(p.to_vec()),
        (None, c) => c,
    };
    Some(RowNumberWindow { expr: &exprs[0], input, schema, limit, projection })
}

impl StreamTopNRule {
    /// The top-N operator for `filter`, if it keeps the first rows of a `ROW_NUMBER` over an
    /// unbounded input that the window-function rule cannot stream.
    fn top_n(&self, filter: &FilterExec) -> Result<Option<StreamTopNExec>> {
        let Some(w) = row_number_window(filter) else { return Ok(None) };
        if !w.input.boundedness().is_unbounded() {
            return Ok(None);
        }
        let rank = w.schema.fields().len() - 1;
        let order = w.expr.order_by();
        let by_event_time = order.len() == 1
            && !order[0].options.descending
            && order[0].expr.downcast_ref::<Column>().is_some_and(|c| self.event_time_columns.iter().any(|t| t.eq_ignore_ascii_case(c.name())));
        if order.is_empty() || by_event_time {
            return Ok(None);
        }
        let below = crate::planner::window_functions::below_sort(w.input).unwrap_or_else(|| Arc::clone(w.input));
        let source = crate::planner::partitioning::without_round_robin(below)?;
        let rank_visible = w.projection.as_ref().is_none_or(|p| p.contains(&rank));
        let config = TopNConfig {
            partition_by: w.expr.partition_by().to_vec(),
            order_by: order.to_vec(),
            limit: w.limit,
            rank_field: Arc::clone(&w.schema.fields()[rank]),
            projection: w.projection,
            rank_visible,
            op_column: false,
            state_ttl: self.state_ttl,
        };
        Ok(Some(StreamTopNExec::try_new(source, config)?))
    }
}

/// The one-pass operator for `filter` when it keeps the first rows of a `ROW_NUMBER` over a
/// bounded input that DataFusion sorts for it, each key in one partition of the sort's input.
fn bounded_top_n(filter: &FilterExec) -> Result<Option<BoundedTopNExec>> {
    let Some(w) = row_number_window(filter) else { return Ok(None) };
    // (a LIMIT pushed into the filter is left to DataFusion's plan)
    if w.input.boundedness().is_unbounded() || w.expr.partition_by().is_empty() || filter.fetch().is_some() {
        return Ok(None);
    }
    let Some(sort) = w.input.downcast_ref::<SortExec>() else { return Ok(None) };
    if sort.fetch().is_some() || sort.input().output_partitioning().partition_count() != sort.properties().output_partitioning().partition_count() {
        return Ok(None);
    }
    let below = Arc::clone(sort.input());
    // every key in one partition: hashed by the PARTITION BY (or a part of it), or all in one
    let partitioning = below.output_partitioning();
    let keyed = partitioning.partition_count() == 1
        || partitioning.satisfaction(&Distribution::KeyPartitioned(w.expr.partition_by().to_vec()), below.equivalence_properties(), true)
            != PartitioningSatisfaction::NotSatisfied;
    if !keyed || !BoundedTopNExec::supports(w.expr.order_by(), &below.schema(), w.limit) {
        return Ok(None);
    }
    let rank = w.schema.fields().len() - 1;
    let config = BoundedTopNConfig {
        partition_by: w.expr.partition_by().to_vec(),
        order_by: w.expr.order_by().to_vec(),
        limit: w.limit,
        rank_field: Arc::clone(&w.schema.fields()[rank]),
        projection: w.projection,
    };
    // the filter's output, as DataFusion planned it: column names, partitioning
    let output = (filter.schema(), filter.properties().output_partitioning().clone());
    // a hash repartitioning below, of as many input partitions as it makes at least: the
    // operator routes the rows itself, sharing the input's batches between its partitions
    // rather than copying every row into a batch of its partition (with fewer input partitions
    // the repartitioning's tasks read and route while the partitions keep their rows)
    if let Some(r) = below.downcast_ref::<RepartitionExec>() {
        if let Partitioning::Hash(by, n) = r.partitioning() {
            if !r.preserve_order() && *n >= 2 && r.input().output_partitioning().partition_count() >= *n && output.1.partition_count() == *n {
                return Ok(Some(BoundedTopNExec::routed(Arc::clone(r.input()), config, by.clone(), output)?));
            }
        }
    }
    Ok(Some(BoundedTopNExec::try_new(below, config, Some(output))?))
}

/// Plans [`BoundedTopNExec`] wherever nothing above relies on the order DataFusion's sort gave
/// the window's output (this operator gives its rows in no order): `order_needed` says whether
/// something above `plan` does — an operator that requires an input order (a merge of sorted
/// partitions, a sort-merge join), through operators that keep the order, or the query's own
/// `ORDER BY` when DataFusion found it already satisfied (a plan of one partition: its top has
/// no sort left to show it).
fn plan_bounded(plan: Arc<dyn ExecutionPlan>, order_needed: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        if !order_needed {
            if let Some(top) = bounded_top_n(filter)? {
                return Ok(Arc::new(top));
            }
        }
    }
    let required = plan.required_input_ordering();
    let keeps = plan.maintains_input_order();
    let mut changed = false;
    let mut children = Vec::new();
    for (i, child) in plan.children().into_iter().enumerate() {
        let needed = required.get(i).is_some_and(Option::is_some) || (order_needed && keeps.get(i).copied().unwrap_or(false));
        let new = plan_bounded(Arc::clone(child), needed)?;
        changed |= !Arc::ptr_eq(&new, child);
        children.push(new);
    }
    if changed {
        use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
        plan.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    } else {
        Ok(plan)
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
        .and_then(|plan| {
            let one_partition = plan.output_partitioning().partition_count() == 1;
            plan_bounded(plan, one_partition)
        })
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
