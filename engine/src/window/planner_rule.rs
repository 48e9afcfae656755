//! The physical optimizer rule that puts [`WindowAggregateExec`] in place of DataFusion's
//! aggregate wherever a `GROUP BY` holds `TUMBLE`, `HOP` or `SESSION`, and wherever a grouped
//! aggregate reads an unbounded input (which DataFusion's aggregate would hold until an end
//! that never comes).
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! -- AggregateExec(Final) ← Repartition ← AggregateExec(Partial) ← input
//! -- becomes WindowAggregateExec ← input, with the same output schema
//! ```
//!
//! DataFusion has already resolved names, coerced types and built the aggregate expressions;
//! the rule reuses them, so everything DataFusion's `GROUP BY` accepts (FILTER, DISTINCT,
//! ORDER BY inside an aggregate, expressions as keys, HAVING above) works over windows too.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, Result};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use super::aggregate_exec::{aggregate_arguments, WindowAggregateConfig, WindowAggregateExec, WindowKind};
use super::functions::{interval_millis, WindowFunction};
use super::groups::AggregateSpec;
use crate::event_time::WatermarkConfig;
use crate::sql::EmitMode;

/// The job's settings the rule plans with.
#[derive(Debug, Clone)]
pub struct StreamingAggregateRule {
    /// How watermarks move.
    pub watermark: WatermarkConfig,
    /// The statement's `EMIT` clause.
    pub emit: Option<EmitMode>,
    /// With `EMIT CHANGES`, how often changed groups are written.
    pub changes_every: std::time::Duration,
    /// Integer event-time columns declared as epoch seconds (`event_time.format`), by column
    /// name, with their multiplier to milliseconds.
    pub int_scales: HashMap<String, i64>,
    /// The job takes checkpoints of an unbounded input: every grouped aggregate becomes ours
    /// (its state can be checkpointed), the bounded ones too.
    pub checkpoints: bool,
    /// `'state.ttl'`: an unwindowed `GROUP BY` on a stream forgets a key not updated for this
    /// long (processing time).
    pub state_ttl: Option<std::time::Duration>,
    /// The sources' event-time columns, by name (`ROW_NUMBER` ordered by one of them
    /// ascending numbers rows for good; in another order it is a changing top N).
    pub event_time_columns: Vec<String>,
}

impl PhysicalOptimizerRule for StreamingAggregateRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            if let Some(agg) = node.downcast_ref::<AggregateExec>() {
                if let Some(new) = self.rewrite(agg)? {
                    return Ok(Transformed::yes(crate::planner::partitioning::keep_partitioning(&node, new)?));
                }
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ferris_streaming_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `watermark` with its delay extended by the reach of the interval joins under `input`.
pub fn with_join_lag(watermark: WatermarkConfig, input: &Arc<dyn ExecutionPlan>) -> WatermarkConfig {
    let lag = crate::join::interval_join_exec::join_lag_ms(input);
    WatermarkConfig { delay_ms: watermark.delay_ms.map(|d| d.saturating_add(lag)), ..watermark }
}

/// The partial aggregate under a final one, through repartitioning.
pub(super) fn partial_below(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        return (*agg.mode() == AggregateMode::Partial).then_some(agg);
    }
    if plan.downcast_ref::<RepartitionExec>().is_some() || plan.downcast_ref::<CoalescePartitionsExec>().is_some() {
        return plan.children().first().and_then(|c| partial_below(c));
    }
    None
}

/// The input without a round-robin repartition on top (it only spreads batches for parallel
/// partial aggregation, which the window operator does not do).
fn strip_round_robin(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        if matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)) {
            return Arc::clone(r.input());
        }
    }
    Arc::clone(plan)
}

/// The window function call among the group expressions: its position, kind and arguments.
/// A window function among the group expressions: its position, kind and arguments.
pub(super) type FoundWindow = (usize, WindowFunction, Vec<Arc<dyn PhysicalExpr>>);

pub(super) fn find_window(group: &[(Arc<dyn PhysicalExpr>, String)]) -> Result<Option<FoundWindow>> {
    let mut found = None;
    for (i, (expr, _)) in group.iter().enumerate() {
        let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() else { continue };
        let Some(kind) = WindowFunction::from_name(f.name()) else { continue };
        if found.is_some() {
            return plan_err!("a GROUP BY can hold only one window function (TUMBLE, HOP or SESSION)");
        }
        found = Some((i, kind, f.args().to_vec()));
    }
    Ok(found)
}

/// The window a window function's call in `GROUP BY` names, its lengths constant.
pub(super) fn window_kind(f: WindowFunction, args: &[Arc<dyn PhysicalExpr>]) -> Result<WindowKind> {
    Ok(match f {
        WindowFunction::Tumble => WindowKind::Tumble { size: literal_millis(&args[1], "the TUMBLE size")? },
        WindowFunction::Hop => {
            let slide = literal_millis(&args[1], "the HOP slide")?;
            let size = literal_millis(&args[2], "the HOP size")?;
            if slide > size {
                return plan_err!("the HOP slide ({slide} ms) is longer than its size ({size} ms): rows would fall between windows");
            }
            WindowKind::Hop { size, slide }
        }
        WindowFunction::Session => WindowKind::Session { gap: literal_millis(&args[1], "the SESSION gap")? },
    })
}

fn literal_millis(expr: &Arc<dyn PhysicalExpr>, what: &str) -> Result<i64> {
    match expr.downcast_ref::<Literal>() {
        Some(l) => interval_millis(l.value(), what),
        None => plan_err!("{what} must be a constant interval such as INTERVAL '1' MINUTE"),
    }
}

impl StreamingAggregateRule {
    fn rewrite(&self, agg: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let partial = match agg.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => match partial_below(agg.input()) {
                Some(p) => p,
                None => return Ok(None),
            },
            AggregateMode::Single | AggregateMode::SinglePartitioned => agg,
            _ => return Ok(None),
        };
        let group = partial.group_expr();
        let window = find_window(group.expr())?;
        let input = partial.input();
        let changes = self.emit == Some(EmitMode::Changes);
        // a global aggregate (no GROUP BY) over a stream is one group that updates; over
        // bounded input DataFusion's gives the one final row (unless changes are asked for)
        let unbounded = input.boundedness().is_unbounded();
        // a GROUP BY of the windows of a window aggregate below (window_start, window_end):
        // each group is one of its windows, final once that window has come out (on a stream,
        // or where a watermark delay asks for bounded state, as joins do)
        let of_input = match (&window, changes) {
            (None, false) if unbounded || self.watermark.delay_ms.is_some() => super::cascade::input_window_time(input, group.expr()),
            _ => None,
        };
        if window.is_none() && of_input.is_none() && !unbounded && !changes && (!self.checkpoints || group.expr().is_empty()) {
            return Ok(None);
        }
        if group.has_grouping_set() {
            return plan_err!("GROUPING SETS, CUBE and ROLLUP are not supported over windows or streams");
        }
        // an unwindowed GROUP BY on a stream never reaches a final result: it updates
        let emit = self.emit.unwrap_or(if window.is_none() && input.boundedness().is_unbounded() { EmitMode::Changes } else { EmitMode::Final });
        let (kind, time, window_pos) = match &window {
            None => (WindowKind::Global, None, None),
            Some((pos, f, args)) => (window_kind(*f, args)?, Some(Arc::clone(&args[0])), Some(*pos)),
        };
        let (kind, time, emit, watermark) = match &of_input {
            // a 1 ms window at the input window's start: it closes when the watermark passes
            // the start, i.e. once the operator below has emitted that window (no delay: its
            // windows come out in order)
            // (nor does it move with the clock: its input is quiet between two windows)
            Some(t) => (
                WindowKind::Tumble { size: 1 },
                Some(Arc::clone(t)),
                EmitMode::Final,
                WatermarkConfig { delay_ms: Some(0), idle_timeout: None, advance_when_idle: false },
            ),
            None => (kind, time, emit, self.watermark),
        };
        let input_schema = input.schema();
        let keys: Vec<(Arc<dyn PhysicalExpr>, String)> =
            group.expr().iter().enumerate().filter(|(i, _)| Some(*i) != window_pos).map(|(_, (e, n))| (Arc::clone(e), n.clone())).collect();
        let key_fields = keys.iter().map(|(e, n)| Ok(Field::new(n, e.data_type(&input_schema)?, e.nullable(&input_schema)?))).collect::<Result<Vec<_>>>()?;
        let int_scale = match of_input {
            // (the windows' bounds are timestamps)
            Some(_) => 1,
            None => time.as_ref().and_then(|t| t.downcast_ref::<Column>()).and_then(|c| self.int_scales.get(c.name())).copied().unwrap_or(1),
        };
        let aggs = partial.aggr_expr().to_vec();
        let config = WindowAggregateConfig {
            kind,
            time,
            int_scale,
            window_pos,
            keys,
            args: aggregate_arguments(&aggs),
            filters: partial.filter_expr().to_vec(),
            spec: AggregateSpec { aggs, key_schema: Arc::new(Schema::new(key_fields)) },
            watermark,
            emit,
            changes_every: self.changes_every,
            schema: agg.schema(),
            op_column: false,
            of_input_windows: of_input.is_some(),
            hands_on_watermark: false,
            state_ttl: self.state_ttl.filter(|_| matches!(kind, WindowKind::Global) && unbounded && !group.expr().is_empty()),
        };
        // joins below hand over their rows in event-time order, up to their reach
        let input = crate::planner::partitioning::without_round_robin(crate::join::interval_join_exec::order_join_outputs(strip_round_robin(input))?)?;
        // the windows below come out in order as one stream: read it so (the operator below
        // says how far it has emitted to its one reader)
        let input = if of_input.is_some() { crate::checkpoint::plan::without_exchanges(input)? } else { input };
        let config = WindowAggregateConfig { watermark: with_join_lag(config.watermark, &input), ..config };
        Ok(Some(Arc::new(WindowAggregateExec::new(input, config))))
    }
}
