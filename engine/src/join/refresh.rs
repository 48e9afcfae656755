//! Lookup tables that change while a job runs: a scan of a source with a `refresh_interval`
//! (a database table) is marked by [`RefreshingScanExec`], and a stream-to-table join
//! ([`super::IntervalJoinExec`] without a band) re-reads the marked side that often, replacing
//! the rows it matches against with the newest complete read.
//!
//! ```sql
//! SELECT m.symbol, r.risk_category FROM market_data m JOIN instruments r ON m.symbol = r.symbol
//! WITH ('instruments.type' = 'database_source', 'instruments.refresh_interval' = '5m', …)
//! -- IntervalJoinExec(band = none) ← RefreshingScanExec(every 300s) ← StreamingTableExec(instruments)
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream};
use datafusion::prelude::SessionConfig;

/// A scan that passes its rows through and says how often the table behind it should be read
/// again.
#[derive(Debug)]
pub struct RefreshingScanExec {
    input: Arc<dyn ExecutionPlan>,
    every: Duration,
}

impl RefreshingScanExec {
    /// Marks `input` (a source scan) as re-read `every` so often.
    pub fn new(input: Arc<dyn ExecutionPlan>, every: Duration) -> Self {
        Self { input, every }
    }

    /// How often the table is re-read.
    pub fn every(&self) -> Duration {
        self.every
    }
}

/// How often the table side `plan` can be read again: the shortest interval of its marked
/// scans, when every source scan under it is marked (a scan of another table, read once or
/// through a shared read, cannot be executed again: then `None`, and the side is read once).
pub fn refresh_interval(plan: &Arc<dyn ExecutionPlan>) -> Option<Duration> {
    fn walk(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Duration>, ()> {
        if let Some(r) = plan.downcast_ref::<RefreshingScanExec>() {
            return Ok(Some(r.every()));
        }
        if plan.name() == "StreamingTableExec" {
            return Err(());
        }
        let mut min: Option<Duration> = None;
        for c in plan.children() {
            if let Some(d) = walk(c)? {
                min = Some(min.map_or(d, |m| m.min(d)));
            }
        }
        Ok(min)
    }
    walk(plan).ok().flatten()
}

/// Reads `plan` (the table side of a join) once more, whole, outside the job's checkpoint
/// barriers: a context like `ctx` without the job's checkpointing.
pub async fn read_again(plan: Arc<dyn ExecutionPlan>, ctx: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
    let config = SessionConfig::from(ctx.session_config().options().as_ref().clone());
    let fresh = TaskContext::new(
        None,
        ctx.session_id(),
        config,
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        ctx.runtime_env(),
    );
    // (a plan read before holds what its operators built then: a hash join's table, a group
    // join's groups; read again, they are built anew)
    let plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan)?;
    datafusion::physical_plan::collect(plan, Arc::new(fresh)).await
}

impl DisplayAs for RefreshingScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RefreshingScanExec: re-read every {:?}", self.every)
    }
}

impl ExecutionPlan for RefreshingScanExec {
    fn name(&self) -> &str {
        "RefreshingScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match <[Arc<dyn ExecutionPlan>; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self { input, every: self.every })),
            Err(_) => internal_err!("RefreshingScanExec takes one input"),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
