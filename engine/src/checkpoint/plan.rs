//! Makes a physical plan fit for barriers, and describes it for checkpoints.
//!
//! Barriers are inferred between the places where batches change task (see [`super::barrier`]):
//! DataFusion's own exchanges (`RepartitionExec`, `CoalescePartitionsExec`) move batches on
//! tasks the job does not see, and its coalescers hold rows back, so they are taken out of the
//! streaming part of the plan — our operators merge their input partitions themselves and the
//! runner reads every output partition. What remains between a source and one of our
//! operators (or the runner) must pass rows straight through: projections, filters, unions.
//! An operator that keeps rows of its own (a DataFusion sort, a window function's buffer, a
//! `LIMIT`'s count) cannot be checkpointed: the plan says so, a transactional job is refused,
//! and a simple one runs without operator state in its checkpoints.
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks WHERE kind = 'click'
//! GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! -- WindowAggregateExec ← FilterExec ← source: fit; the operator is stateful operator #0
//! ```

use std::sync::Arc;

use datafusion::common::Result;
#[allow(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::{displayable, ExecutionPlan};

use crate::event_time::watermark_sort::WatermarkSortExec;
use crate::join::IntervalJoinExec;
use crate::window::WindowAggregateExec;

/// A stateful operator of the plan, as checkpoints know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulOperator {
    /// Its position among the plan's stateful operators (pre-order).
    pub id: usize,
    /// The address of its plan node (see [`super::node_address`]).
    pub address: usize,
    /// What it is, for the compatibility check of a restore (`WindowAggregateExec: …`).
    pub shape: String,
    /// Its state can be rebuilt by reading its rows again: a `TUMBLE` or `HOP` window aggregate
    /// emitting final results, which reports the event time its open windows start from.
    pub replays: bool,
    /// The column its windows are on, when it is a plain column.
    pub time_column: Option<String>,
}

/// What checkpoints need to know about a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanCheckpoints {
    /// The stateful operators.
    pub operators: Vec<StatefulOperator>,
    /// Why barriers cannot be aligned through this plan, if they cannot.
    pub problem: Option<String>,
    /// Every row reaches the output through a stateful operator whose state can be rebuilt
    /// by reading rows again (and there is one): a Kafka source handing partitions over to
    /// another process of the job has the rows of open windows read again instead of moving
    /// the state.
    pub replays: bool,
}

fn is_ours(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<WindowAggregateExec>().is_some()
        || plan.downcast_ref::<IntervalJoinExec>().is_some()
        || plan.downcast_ref::<WatermarkSortExec>().is_some()
        || plan.downcast_ref::<crate::top_n::StreamTopNExec>().is_some()
        || plan.downcast_ref::<crate::window_function::StreamWindowFunctionExec>().is_some()
}

/// Operators that pass each batch on as they get it, holding nothing.
fn passes_through(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some_and(|f| f.batch_size() <= 1)
        || plan.downcast_ref::<UnionExec>().is_some()
        || plan.downcast_ref::<InterleaveExec>().is_some()
        || plan.downcast_ref::<crate::join::refresh::RefreshingScanExec>().is_some()
        || plan.name() == "CooperativeExec"
        || plan.name() == "StreamingTableExec"
        || plan.downcast_ref::<crate::planner::source_table::SizedScanExec>().is_some()
        || plan.name() == "EmptyExec"
        || plan.name() == "PlaceholderRowExec"
}

/// Takes DataFusion's exchanges and coalescers out of the streaming part of `plan`: from the
/// root and from under our operators, through projections, filters and unions. Below any other
/// operator (a hash join's build side, a sort) they stay: that operator needs them.
pub fn without_exchanges(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    strip(plan, true, false)
}

/// Takes DataFusion's exchanges and coalescers out from between two of our operators, and from
/// between one of ours and the job's output (through projections, filters and unions), in a
/// job without barriers. Our operators read every
/// partition of their input, so such an exchange only hashes rows again; and over a bounded
/// input DataFusion's exchange holds rows back until it has a full batch per partition, so
/// a window's one result would wait for the end of the input, and a join waiting for it would
/// hold the other side until then (Nexmark q5 and q7 with a watermark delay). Filters on the
/// way hand rows on as they get them, for the same reason. Exchanges over a source stay: they
/// spread its reading over several tasks.
///
/// ```sql
/// SELECT b.auction, b.price FROM bid b
/// JOIN (SELECT MAX(price) AS maxprice, window_end AS wend FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m
///   ON b.price = m.maxprice WHERE b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend
/// -- IntervalJoinExec ← ProjectionExec ← WindowAggregateExec: each window's maximum reaches the join when it closes
/// ```
pub fn without_exchanges_between_ours(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    // (the runner reads every output partition into one stream: an exchange between one of our
    // operators and the output only hashes the results again)
    strip(plan, true, true)
}

/// Whether every row `plan` hands on comes out of one of our operators, through operators
/// that pass rows on (exchanges included).
fn emitted_by_ours(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if is_ours(plan) {
        return true;
    }
    let children = plan.children();
    (is_exchange(plan) || passes_through(plan) || plan.downcast_ref::<FilterExec>().is_some())
        && !children.is_empty()
        && children.into_iter().all(emitted_by_ours)
}

fn is_exchange(plan: &Arc<dyn ExecutionPlan>) -> bool {
    #[allow(deprecated)]
    let coalesce = plan.downcast_ref::<CoalesceBatchesExec>().is_some_and(|c| c.fetch().is_none());
    plan.downcast_ref::<RepartitionExec>().is_some() || plan.downcast_ref::<CoalescePartitionsExec>().is_some_and(|c| c.fetch().is_none()) || coalesce
}

/// `free`: `plan` hands its rows to one of our operators, or to the runner, through operators
/// that pass them on. `between`: only exchanges whose rows come out of one of our operators
/// are taken out (no exchange from the root), and filters on the way pass rows on at once.
fn strip(plan: Arc<dyn ExecutionPlan>, free: bool, between: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if free && is_exchange(&plan) {
        if let Some(child) = plan.children().first().filter(|c| !between || emitted_by_ours(c)) {
            return strip(Arc::clone(child), true, between);
        }
    }
    // (a filter that holds rows for a batch is one that will pass them on at once)
    let passes = passes_through(&plan) || (between && plan.downcast_ref::<FilterExec>().is_some());
    let child_free = is_ours(&plan) || (free && passes);
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let mut changed = false;
    let mut new_children = Vec::with_capacity(children.len());
    for c in children {
        let n = strip(Arc::clone(&c), child_free, between)?;
        changed |= !Arc::ptr_eq(&n, &c);
        new_children.push(n);
    }
    let plan = if changed {
        #[allow(deprecated)]
        plan.with_new_children(new_children)?
    } else {
        plan
    };
    if between && free {
        if let Some(f) = plan.downcast_ref::<FilterExec>().filter(|f| f.batch_size() > 1 && emitted_by_ours(&plan)) {
            return Ok(Arc::new(f.with_batch_size(1)?));
        }
    }
    Ok(plan)
}

/// The shape of a stateful operator, from its one-line display: what its state must match to
/// be restored. How long idle keys live (`, state=…`) is a setting, not the state's shape: a
/// job may change it and restore.
pub fn shape_of(display: &str) -> &str {
    display.split(", state=").next().unwrap_or(display).trim()
}

/// Numbers the stateful operators of `plan` and finds what would keep barriers from aligning.
pub fn describe(plan: &Arc<dyn ExecutionPlan>) -> PlanCheckpoints {
    let mut out = PlanCheckpoints::default();
    walk(plan, &mut out);
    out.replays = !out.operators.is_empty() && out.operators.iter().all(|o| o.replays) && through_replaying(plan);
    out
}

impl PlanCheckpoints {
    /// Whether a job of this plan hands its windows over between processes by reading them
    /// again (see [`PlanCheckpoints::replays`]): simple mode, one Kafka source with
    /// `event_time`, and one `TUMBLE` or `HOP` window on that very column (the source's replay log and
    /// the window's open windows then speak of the same time).
    pub fn replays_for(&self, spec: &crate::job::JobSpec, mode: super::Mode) -> bool {
        let [source] = spec.sources.as_slice() else { return false };
        let [op] = self.operators.as_slice() else { return false };
        self.replays
            && mode == super::Mode::AtLeastOnce
            && source.connector.kind == ferris_connectors::ConnectorKind::Kafka
            && source.properties.get("event_time").is_some_and(|c| op.time_column.as_deref() == Some(c))
    }
}

/// Whether every path from `plan` down to a source passes through a replaying operator.
fn through_replaying(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(w) = plan.downcast_ref::<WindowAggregateExec>() {
        return w.replays();
    }
    if is_ours(plan) {
        return false;
    }
    let children = plan.children();
    if children.is_empty() {
        // a source, unless it produces nothing of its own
        return plan.name() == "EmptyExec" || plan.name() == "PlaceholderRowExec";
    }
    children.into_iter().all(through_replaying)
}

fn walk(plan: &Arc<dyn ExecutionPlan>, out: &mut PlanCheckpoints) {
    if is_ours(plan) {
        let shape = shape_of(&displayable(plan.as_ref()).one_line().to_string()).to_string();
        let window = plan.downcast_ref::<WindowAggregateExec>();
        let replays = window.is_some_and(WindowAggregateExec::replays);
        let time_column = window
            .and_then(|w| w.config().time.clone())
            .and_then(|t| t.downcast_ref::<datafusion::physical_expr::expressions::Column>().map(|c| c.name().to_string()));
        out.operators.push(StatefulOperator { id: out.operators.len(), address: super::node_address(plan.as_ref()), shape, replays, time_column });
    } else if !passes_through(plan) && out.problem.is_none() {
        let what = displayable(plan.as_ref()).one_line().to_string();
        out.problem = Some(format!("{} keeps rows that a checkpoint cannot hold ({})", plan.name(), what.trim().chars().take(120).collect::<String>()));
    }
    for c in plan.children() {
        walk(c, out);
    }
}
