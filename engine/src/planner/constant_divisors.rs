//! Filters and projections compute `integer % constant` by multiplication
//! ([`ferris_connectors::remainder`]), not with a division per row, and test `integer %
//! constant = 0` (or `<> 0`) by one multiplication and a comparison.
//!
//! ```sql
//! SELECT auction, price FROM bid WHERE auction % 123 = 0
//! -- FilterExec: auction@0 % 123 = 0   (the same plan, a divisibility test without a remainder)
//! ```
//!
//! The file source's row filters use the same expression; this rule covers the filters and
//! projections DataFusion plans above the sources (Kafka's, a filter the read did not take,
//! `SELECT id % 16 AS bucket`). Other operators' expressions are left as they are.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::Result;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use ferris_connectors::remainder::by_constants;

/// The rule; runs once the plan is otherwise final.
#[derive(Debug, Default)]
pub struct ConstantDivisorsRule;

impl PhysicalOptimizerRule for ConstantDivisorsRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                let input = f.input();
                let predicate = by_constants(Arc::clone(f.predicate()), &input.schema())?;
                if !predicate.transformed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt = FilterExecBuilder::new(predicate.data, Arc::clone(input))
                    .with_default_selectivity(f.default_selectivity())
                    .with_batch_size(f.batch_size())
                    .with_fetch(f.fetch())
                    .apply_projection(f.projection().as_ref().map(|p| p.to_vec()))?
                    .build()?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                let schema = p.input().schema();
                let mut changed = false;
                let mut exprs = Vec::with_capacity(p.expr().len());
                for e in p.expr() {
                    let t = by_constants(Arc::clone(&e.expr), &schema)?;
                    changed |= t.transformed;
                    exprs.push(ProjectionExpr { expr: t.data, alias: e.alias.clone() });
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                return Ok(Transformed::yes(Arc::new(ProjectionExec::try_new(exprs, Arc::clone(p.input()))?) as Arc<dyn ExecutionPlan>));
            }
            Ok(Transformed::no(node))
        })
        .data()
    }

    fn name(&self) -> &str {
        "ferris_constant_divisors"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// A session whose physical optimizer ends with the rule.
    fn with_rule() -> SessionContext {
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        rules.push(Arc::new(super::ConstantDivisorsRule));
        SessionContext::new_with_state(SessionStateBuilder::new().with_default_features().with_physical_optimizer_rules(rules).build())
    }

    /// Rows of `sql` over a table of `x` (BIGINT, nulls and negatives among them).
    async fn run(sql: &str) -> Vec<String> {
        let ctx = with_rule();
        ctx.sql("CREATE TABLE t (x BIGINT, y INT) AS VALUES (-7, -7), (7, 7), (NULL, NULL), (-9223372036854775808, 0), (9223372036854775807, 2147483647), (246, -246), (0, 5)")
            .await
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        text.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn remainders_in_filters_and_projections_are_datafusion_s() {
        let queries = [
            "SELECT x, x % 3 AS a, x % -123 AS b, y % 4 AS c, x % 1 AS d FROM t ORDER BY x NULLS FIRST",
            "SELECT x FROM t WHERE x % 123 = 0 ORDER BY x",
            "SELECT x, y FROM t WHERE y % 7 = 0 AND x % 2 = 1 OR x % -2 = -1 ORDER BY x",
            "SELECT x, x % 3 = 0 AS a, 0 <> y % 7 AS b, x % -2 != 0 AS c FROM t WHERE x % 123 <> 0 ORDER BY x NULLS FIRST",
        ];
        for q in queries {
            let ours = run(q).await;
            let plain = SessionContext::new();
            plain
                .sql("CREATE TABLE t (x BIGINT, y INT) AS VALUES (-7, -7), (7, 7), (NULL, NULL), (-9223372036854775808, 0), (9223372036854775807, 2147483647), (246, -246), (0, 5)")
                .await
                .unwrap();
            let batches = plain.sql(q).await.unwrap().collect().await.unwrap();
            let theirs: Vec<String> =
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string().lines().map(str::to_string).collect();
            assert_eq!(ours, theirs, "{q}");
        }
    }

    #[tokio::test]
    async fn the_plan_computes_the_remainder_by_multiplication() {
        let ctx = with_rule();
        ctx.sql("CREATE TABLE t (x BIGINT) AS VALUES (1), (2)").await.unwrap();
        let df = ctx.sql("SELECT x % 16 AS bucket FROM t WHERE x % 123 = 0 OR x % 7 = 1").await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let (mut remainders, mut tests) = (0, 0);
        datafusion::common::tree_node::TreeNode::apply(&plan, |node| {
            datafusion::physical_plan::ExecutionPlan::apply_expressions(node.as_ref(), &mut |e| {
                datafusion::common::tree_node::TreeNode::apply(e, |e| {
                    remainders += usize::from(e.downcast_ref::<ferris_connectors::remainder::RemainderByConstant>().is_some());
                    tests += usize::from(e.downcast_ref::<ferris_connectors::remainder::DivisibleByConstant>().is_some());
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                })
            })
        })
        .unwrap();
        // `x % 16` and `x % 7` as remainders, `x % 123 = 0` as a divisibility test
        assert_eq!((remainders, tests), (2, 1));
    }
}
