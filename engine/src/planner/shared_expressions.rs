//! An expression that a filter computes for every row and the projection above it computes
//! again is computed once, below the filter, and both read its column.
//!
//! ```sql
//! SELECT auction,
//!        CASE WHEN LOWER(channel) = 'apple' THEN '0'
//!             ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id
//! FROM bid
//! WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL OR LOWER(channel) = 'apple'
//! -- ProjectionExec(… regexp_extract(url, …) …) ← FilterExec(regexp_extract(url, …) IS NOT NULL OR …) ← scan
//! -- becomes
//! -- ProjectionExec(… __shared_0 …) ← FilterExec(__shared_0 IS NOT NULL OR …)
//! --   ← ProjectionExec(every column, regexp_extract(url, …) AS __shared_0) ← scan
//! ```
//!
//! DataFusion shares an expression within one operator (its common subexpression
//! elimination), not between a filter and the projection above it, so Nexmark q21 matched
//! every bid's URL against its pattern in the filter and again, for most of the rows kept, in
//! the projection. Flink compiles a filter and its projection into one `Calc` that computes
//! such an expression once; this rule does the same with DataFusion's own operators.
//!
//! Only an expression the filter evaluates for every row of every batch is moved below it
//! (the predicate itself, either side of a comparison or arithmetic, a function's arguments,
//! the left side of `AND`/`OR`, the operand and first condition of `CASE`): evaluating it for
//! every row before the filter then evaluates nothing the filter would not have, so no error
//! appears that the query did not raise before (`WHERE x <> 0 AND 10 / x > 1` keeps `10 / x`
//! where it is). It must call a function (a column or a constant is read, not computed) and
//! must not be volatile (`RANDOM()` gives another value each time it is called); a struct's
//! field read (`get_field`) is not worth it. An expression the projection above reads only
//! inside a larger shared one is not computed on its own. A filter with a dynamic filter of a
//! join in its predicate, or projections with lambdas, are left alone, and so is a plan the
//! rule cannot rebuild with the same columns. A filter that had a projection of its own keeps
//! only the columns still read above it; one without gets none (the window operators' watermark
//! hand-on looks through filters without a projection).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, DynamicFilterPhysicalExpr, InListExpr, IsNotNullExpr, IsNullExpr, LambdaExpr, LambdaVariable, LikeExpr, Literal,
    NegativeExpr, NotExpr, TryCastExpr,
};
use datafusion::physical_expr::projection::{update_expr, ProjectionExpr};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

/// The name of the `n`th shared column (`__shared_0`, …).
fn shared_name(n: usize) -> String {
    format!("__shared_{n}")
}

/// The rule; runs once the plan is otherwise final.
#[derive(Debug, Default)]
pub struct SharedExpressionsRule;

impl PhysicalOptimizerRule for SharedExpressionsRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        // (a shape this rule cannot rebuild is left as it was: it only ever saves work)
        plan.transform_down(|node| {
            Ok(match share(&node) {
                Ok(Some(shared)) => Transformed::yes(shared),
                _ => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "ferris_shared_expressions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An expression to share: as the filter's input sees it (computed there), as its output
/// does, and as the top projection's input does (through the middle projection).
struct Found {
    below: Arc<dyn PhysicalExpr>,
    after_filter: Option<Arc<dyn PhysicalExpr>>,
    after_middle: Option<Arc<dyn PhysicalExpr>>,
}

/// `node`, a projection over a filter (or over a projection over a filter), with the
/// expressions both compute computed once below the filter; `None` when there are none.
fn share(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(top) = node.downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    // DataFusion's own sharing within the projection puts a projection of the common
    // expressions between the two: top ← middle ← filter
    let (middle, filter) = match top.input().downcast_ref::<FilterExec>() {
        Some(f) => (None, f),
        None => match top.input().downcast_ref::<ProjectionExec>() {
            Some(m) => match m.input().downcast_ref::<FilterExec>() {
                Some(f) => (Some(m), f),
                None => return Ok(None),
            },
            None => return Ok(None),
        },
    };
    let predicate = filter.predicate();
    if predicate.exists(|e| Ok(e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some()))? {
        return Ok(None);
    }
    // a lambda's variables are numbered after its input's columns, which this rule changes
    let lambda = |e: &Arc<dyn PhysicalExpr>| e.exists(|e| Ok(e.downcast_ref::<LambdaExpr>().is_some() || e.downcast_ref::<LambdaVariable>().is_some()));
    let projected = top.expr().iter().chain(middle.map(|m| m.expr()).unwrap_or_default());
    if lambda(predicate)? || projected.map(|p| lambda(&p.expr)).collect::<Result<Vec<_>>>()?.into_iter().any(|l| l) {
        return Ok(None);
    }
    let mut candidates = Vec::new();
    evaluated_for_every_row(predicate, &mut candidates);
    if candidates.is_empty() {
        return Ok(None);
    }
    let input = filter.input();
    let width = input.schema().fields().len();
    // the filter's output: its input's columns, or those its projection keeps
    let kept: Vec<usize> = match filter.projection() {
        Some(p) => p.to_vec(),
        None => (0..width).collect(),
    };
    let input_schema = input.schema();
    let filter_out: Vec<ProjectionExpr> = kept.iter().map(|&i| pass_through(&input_schema, i)).collect();
    let mut used = Vec::new();
    for c in candidates {
        let after_filter = update_expr(&c, &filter_out, false)?;
        let after_middle = match (middle, &after_filter) {
            (Some(m), Some(e)) => update_expr(e, m.expr(), false)?,
            (None, e) => e.clone(),
            (Some(_), None) => None,
        };
        let in_middle = match (middle, &after_filter) {
            (Some(m), Some(e)) => m.expr().iter().any(|p| contains(&p.expr, e)),
            _ => false,
        };
        let in_top = after_middle.as_ref().is_some_and(|e| top.expr().iter().any(|p| contains(&p.expr, e)));
        if in_middle || in_top {
            used.push(Found { below: c, after_filter, after_middle });
        }
    }
    if used.is_empty() {
        return Ok(None);
    }
    // the outermost first: an expression inside another one is replaced where it stands alone
    used.sort_by_key(|f| std::cmp::Reverse(size(&f.below)));
    let (shared, read) = build(top, middle, filter, &used)?;
    if read.iter().all(|r| *r) {
        return Ok(shared);
    }
    // an expression found above only inside a larger shared one is not computed on its own
    let used: Vec<Found> = used.into_iter().zip(read).filter_map(|(f, r)| r.then_some(f)).collect();
    if used.is_empty() {
        return Ok(None);
    }
    Ok(build(top, middle, filter, &used)?.0)
}

/// A rebuilt plan (`None`: not the columns it had) and which shared expressions it reads.
type Rebuilt = (Option<Arc<dyn ExecutionPlan>>, Vec<bool>);

/// `top` ← [`middle`] ← `filter` rebuilt with `used` computed below the filter, and whether
/// each of them is read by the filter or the projections once they are all replaced; `None`
/// when the columns would not be those `top` had.
fn build(top: &ProjectionExec, middle: Option<&ProjectionExec>, filter: &FilterExec, used: &[Found]) -> Result<Rebuilt> {
    let input = filter.input();
    let input_schema = input.schema();
    let width = input_schema.fields().len();
    let kept: Vec<usize> = match filter.projection() {
        Some(p) => p.to_vec(),
        None => (0..width).collect(),
    };
    let names: Vec<String> = (0..used.len()).map(shared_name).collect();
    // below the filter: every column, then the shared expressions
    let mut below: Vec<ProjectionExpr> = (0..width).map(|i| pass_through(&input_schema, i)).collect();
    below.extend(used.iter().zip(&names).map(|(f, n)| ProjectionExpr::new(Arc::clone(&f.below), n.clone())));
    let below: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(below, Arc::clone(input))?);
    let mut new_predicate = Arc::clone(filter.predicate());
    for (k, f) in used.iter().enumerate() {
        new_predicate = replace(new_predicate, &f.below, &names[k], width + k)?;
    }
    // the shared columns' places in the filter's output
    let at_filter = kept.len();
    let replaced = |exprs: &[ProjectionExpr], pick: &dyn Fn(&Found) -> Option<&Arc<dyn PhysicalExpr>>, first: usize| -> Result<Vec<ProjectionExpr>> {
        exprs
            .iter()
            .map(|p| {
                let mut e = Arc::clone(&p.expr);
                for (k, f) in used.iter().enumerate() {
                    if let Some(old) = pick(f) {
                        e = replace(e, old, &names[k], first + k)?;
                    }
                }
                Ok(ProjectionExpr::new(e, p.alias.clone()))
            })
            .collect()
    };
    let mut read = vec![false; used.len()];
    let mut mark = |exprs: &[ProjectionExpr], first: usize| {
        for p in exprs {
            let _ = p.expr.apply(|e| {
                if let Some(c) = e.downcast_ref::<Column>() {
                    if let Some(r) = c.index().checked_sub(first).and_then(|k| read.get_mut(k)) {
                        *r |= names.get(c.index() - first).is_some_and(|n| n == c.name());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
    };
    mark(&[ProjectionExpr::new(Arc::clone(&new_predicate), "")], width);
    // the filter's output: the columns it kept, then the shared ones
    let mut filter_out: Vec<usize> = kept.iter().copied().chain(width..width + used.len()).collect();
    let (consumer, top_exprs) = match middle {
        None => {
            let exprs = replaced(top.expr(), &|f| f.after_filter.as_ref(), at_filter)?;
            mark(&exprs, at_filter);
            (exprs, None)
        }
        Some(m) => {
            let mut exprs = replaced(m.expr(), &|f| f.after_filter.as_ref(), at_filter)?;
            mark(&exprs, at_filter);
            // the shared columns pass through to the top
            exprs.extend(
                names.iter().enumerate().map(|(k, n)| ProjectionExpr::new(Arc::new(Column::new(n, at_filter + k)) as Arc<dyn PhysicalExpr>, n.clone())),
            );
            let top_exprs = replaced(top.expr(), &|f| f.after_middle.as_ref(), m.expr().len())?;
            mark(&top_exprs, m.expr().len());
            // the middle's columns the top no longer reads are left out
            let (kept_middle, top_exprs) = read_only(&top_exprs, exprs.len())?;
            let exprs = kept_middle.iter().map(|&i| exprs[i].clone()).collect();
            (exprs, Some(top_exprs))
        }
    };
    // a filter that had a projection keeps only the columns still read above (the URL, once
    // its pattern's match is shared); one without keeps none (what reads a plan's watermarks
    // through filters looks through those without a projection)
    let (projection, consumer) = match filter.projection() {
        None => (None, consumer),
        Some(_) => {
            let (read_out, consumer) = read_only(&consumer, filter_out.len())?;
            filter_out = read_out.iter().map(|&i| filter_out[i]).collect();
            (Some(filter_out), consumer)
        }
    };
    // (a new builder: `FilterExecBuilder::from` would apply the projection on top of the old)
    let new_filter: Arc<dyn ExecutionPlan> = Arc::new(
        FilterExecBuilder::new(new_predicate, below)
            .with_default_selectivity(filter.default_selectivity())
            .with_batch_size(filter.batch_size())
            .with_fetch(filter.fetch())
            .apply_projection(projection)?
            .build()?,
    );
    let (exprs, top_input): (Vec<ProjectionExpr>, Arc<dyn ExecutionPlan>) = match top_exprs {
        None => (consumer, new_filter),
        Some(top_exprs) => (top_exprs, Arc::new(ProjectionExec::try_new(consumer, new_filter)?)),
    };
    let shared: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(exprs, top_input)?);
    // (the same columns as before, or the plan is left as it was)
    let (was, is) = (top.schema(), shared.schema());
    let same = was.fields().len() == is.fields().len()
        && was
            .fields()
            .iter()
            .zip(is.fields().iter())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type() && a.metadata() == b.metadata() && (a.is_nullable() || !b.is_nullable()));
    Ok((same.then_some(shared), read))
}

/// Column `i` of `schema`, passed on under its own name.
fn pass_through(schema: &datafusion::arrow::datatypes::Schema, i: usize) -> ProjectionExpr {
    let name = schema.field(i).name();
    ProjectionExpr::new(Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>, name)
}

/// The columns of an input of `width` columns that `exprs` read (all of them when they read
/// none), and `exprs` reading those alone, in that order.
fn read_only(exprs: &[ProjectionExpr], width: usize) -> Result<(Vec<usize>, Vec<ProjectionExpr>)> {
    let mut read = vec![false; width];
    for p in exprs {
        p.expr.apply(|e| {
            if let Some(c) = e.downcast_ref::<Column>() {
                if let Some(r) = read.get_mut(c.index()) {
                    *r = true;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    if !read.contains(&true) {
        return Ok(((0..width).collect(), exprs.to_vec()));
    }
    // each column's place among those read
    let mut place = vec![usize::MAX; width];
    let mut kept = Vec::new();
    for (i, r) in read.iter().enumerate() {
        if *r {
            place[i] = kept.len();
            kept.push(i);
        }
    }
    let exprs = exprs
        .iter()
        .map(|p| {
            let e = Arc::clone(&p.expr)
                .transform_up(|e| match e.downcast_ref::<Column>() {
                    Some(c) if place.get(c.index()).is_some_and(|&at| at != c.index()) => {
                        Ok(Transformed::yes(Arc::new(Column::new(c.name(), place[c.index()])) as Arc<dyn PhysicalExpr>))
                    }
                    _ => Ok(Transformed::no(e)),
                })
                .data()?;
            Ok(ProjectionExpr::new(e, p.alias.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((kept, exprs))
}

/// Pushes into `out` the subexpressions of `e` worth sharing that are evaluated for every row
/// whenever `e` is (see the module's doc).
fn evaluated_for_every_row(e: &Arc<dyn PhysicalExpr>, out: &mut Vec<Arc<dyn PhysicalExpr>>) {
    if worth_sharing(e) && !out.iter().any(|o| o == e) {
        out.push(Arc::clone(e));
    }
    let children: Vec<&Arc<dyn PhysicalExpr>> = if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        // the right side of AND/OR is skipped where the left decides
        match b.op() {
            Operator::And | Operator::Or => vec![b.left()],
            _ => vec![b.left(), b.right()],
        }
    } else if let Some(c) = e.downcast_ref::<CaseExpr>() {
        // later conditions and the results are evaluated only for the rows they reach; with
        // an operand, even the first condition is not evaluated where the operand is NULL
        match c.expr() {
            Some(operand) => vec![operand],
            None => c.when_then_expr().first().map(|(when, _)| when).into_iter().collect(),
        }
    } else if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
        // (COALESCE and the like may leave arguments unevaluated)
        if f.fun().short_circuits() {
            Vec::new()
        } else {
            f.args().iter().collect()
        }
    } else if e.downcast_ref::<IsNullExpr>().is_some()
        || e.downcast_ref::<IsNotNullExpr>().is_some()
        || e.downcast_ref::<NotExpr>().is_some()
        || e.downcast_ref::<NegativeExpr>().is_some()
        || e.downcast_ref::<CastExpr>().is_some()
        || e.downcast_ref::<TryCastExpr>().is_some()
        || e.downcast_ref::<InListExpr>().is_some()
        || e.downcast_ref::<LikeExpr>().is_some()
    {
        e.children()
    } else {
        // any other expression may evaluate its parts for some rows only
        Vec::new()
    };
    for c in children {
        evaluated_for_every_row(c, out);
    }
}

/// Whether `e` computes something (calls a function other than `get_field`, a struct's field
/// read, cheap and looked for by the window operators' watermark hand-on) and gives the same
/// value each time.
fn worth_sharing(e: &Arc<dyn PhysicalExpr>) -> bool {
    if e.downcast_ref::<Column>().is_some() || e.downcast_ref::<Literal>().is_some() || is_volatile(e) {
        return false;
    }
    let mut calls = false;
    let _ = e.apply(|s| {
        if let Some(f) = s.downcast_ref::<ScalarFunctionExpr>() {
            calls |= f.name() != "get_field";
        }
        Ok(TreeNodeRecursion::Continue)
    });
    calls
}

/// Whether `e` has `part` among its subexpressions (or is it).
fn contains(e: &Arc<dyn PhysicalExpr>, part: &Arc<dyn PhysicalExpr>) -> bool {
    e.exists(|s| Ok(s == part)).unwrap_or(false)
}

/// The number of nodes of `e`.
fn size(e: &Arc<dyn PhysicalExpr>) -> usize {
    let mut n = 0;
    let _ = e.apply(|_| {
        n += 1;
        Ok(TreeNodeRecursion::Continue)
    });
    n
}

/// `e` with every occurrence of `old` read from the column `name` at `index` instead.
fn replace(e: Arc<dyn PhysicalExpr>, old: &Arc<dyn PhysicalExpr>, name: &str, index: usize) -> Result<Arc<dyn PhysicalExpr>> {
    e.transform_down(|s| {
        if &s == old {
            Ok(Transformed::new(Arc::new(Column::new(name, index)) as Arc<dyn PhysicalExpr>, true, TreeNodeRecursion::Jump))
        } else {
            Ok(Transformed::no(s))
        }
    })
    .data()
}
