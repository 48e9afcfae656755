//! Plans a job on DataFusion: creates its sources, registers them as streaming tables, applies
//! our streaming rewrites (`WITHIN INTERVAL` for now) and builds the physical plan.
//!
//! ```sql
//! SELECT o.order_id, c.customer_name FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id
//! -- orders and customers become StreamingTable providers; DataFusion plans the join
//! ```

pub mod constant_divisors;
pub mod count_distinct_sets;
pub mod fixed_intervals;
pub mod flink_functions;
pub mod functions;
pub mod latency;
pub mod occurrence_counts;
pub mod partitioning;
pub mod shared_expressions;
pub mod shared_scan;
pub mod source_failure;
pub mod source_table;
pub mod text_times;
pub mod window_functions;
pub mod within;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use ferris_connectors::{FailureStrategy, Source};

use crate::connect::create_source;
use crate::error::{EngineError, Result};
use crate::event_time::WatermarkConfig;
use crate::job::JobSpec;
use crate::join::IntervalJoinRule;
use crate::window::StreamingAggregateRule;

/// A job ready to run: its DataFusion context, physical plan and live sources.
pub struct PlannedJob {
    /// The analysed job.
    pub spec: JobSpec,
    /// The DataFusion session the plan belongs to.
    pub ctx: SessionContext,
    /// The physical plan whose output goes to the sinks.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The job's sources, for metrics.
    pub sources: Vec<Arc<dyn Source>>,
    /// What the planner did that a user should see in `explain` (applied WITHIN clauses…).
    pub notes: Vec<String>,
    /// The job's checkpoint settings (`checkpoint.*`, `use_transactions`).
    pub checkpoints: crate::checkpoint::CheckpointConfig,
    /// The plan's stateful operators, and what would keep barriers from aligning.
    pub plan_checkpoints: crate::checkpoint::plan::PlanCheckpoints,
    /// Whether checkpoint barriers flow through the plan while it runs: a job with
    /// checkpoints that reads a stream, or a bounded one whose plan carries them. Otherwise a
    /// bounded job with checkpoints takes one, at the end of its input.
    pub barriers: bool,
    /// The sources that failed while the job ran and that it went on without
    /// ([`source_failure`]).
    pub source_failures: Arc<source_failure::SourceFailures>,
}

/// The parallelism of a job: `parallelism` if set, else the machine's cores.
pub fn parallelism(spec: &JobSpec) -> usize {
    spec.options.get_usize("parallelism").ok().flatten().unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(1)
}

/// A DataFusion session with our functions registered.
/// `memory_mb` caps the memory of the job's query execution (`FERRIS_MAX_MEMORY_MB`);
/// `streaming` is the job's window/stream aggregate planning rule.
pub fn new_context(
    partitions: usize,
    batch_size: usize,
    unbounded: bool,
    memory_mb: Option<usize>,
    streaming: StreamingAggregateRule,
) -> datafusion::error::Result<SessionContext> {
    let joins = IntervalJoinRule { watermark: streaming.watermark, int_scales: streaming.int_scales.clone(), all_joins: streaming.checkpoints };
    let over =
        window_functions::StreamWindowFunctionRule { watermark: streaming.watermark, int_scales: streaming.int_scales.clone(), state_ttl: streaming.state_ttl };
    let mut config =
        SessionConfig::new().with_target_partitions(partitions).with_batch_size(batch_size).with_coalesce_batches(!unbounded).with_information_schema(false);
    // rows already hashed by some of a GROUP BY's keys (a join's output on `a.id`, grouped by
    // `a.id, a.seller`: Nexmark q6) are grouped where they are, in one aggregate, once there are
    // as many partitions as the job has: hashing them again would not spread them wider
    config.options_mut().optimizer.subset_repartition_threshold = partitions.clamp(1, 4);
    // dynamic filters come from hash joins only: a TopK's (ORDER BY … LIMIT) is complete only
    // once it has read all its input, and a MIN/MAX's never is, so a scan waiting for one to be
    // complete before it reads would wait for itself (no scan of ours could use them anyway)
    config.options_mut().optimizer.enable_topk_dynamic_filter_pushdown = false;
    config.options_mut().optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(mb) = memory_mb {
        runtime = runtime.with_memory_limit(mb.saturating_mul(1 << 20), 1.0);
    }
    // our streaming operators go in just before the sanity check, which would refuse
    // DataFusion's aggregates over unbounded inputs
    let top_n = crate::top_n::StreamTopNRule { event_time_columns: streaming.event_time_columns.clone(), state_ttl: streaming.state_ttl };
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    // filters made while the plan runs (a hash join's on its probe side) are pushed down once
    // our operators are in place, so that the joins they come from are the ones that run
    rules.retain(|r| r.name() != "FilterPushdown(Post)");
    let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
    // in order: joins, top N per key, window functions, aggregates (the last two read the joins'
    // reach), then hash joins looked at again with the windows in place (and an aggregate of a
    // join's build-side groups computed in the join), a top N's join's
    // payload held aside, a top N's scan read twice, then dynamic filters
    rules.insert(at, Arc::new(datafusion::physical_optimizer::filter_pushdown::FilterPushdown::new_post_optimization()));
    // a top N over Parquet files: its keys read first, its kept rows read again
    rules.insert(at, Arc::new(crate::top_n::ReadTwiceRule));
    // a top N over a join: the build side's text held aside until the top N has kept its rows
    rules.insert(at, Arc::new(crate::top_n::LatePayloadRule));
    rules.insert(at, Arc::new(crate::join::SmallBuildSideRule));
    rules.insert(at, Arc::new(streaming));
    rules.insert(at, Arc::new(crate::window_function::SlidingRowsRule));
    rules.insert(at, Arc::new(over));
    rules.insert(at, Arc::new(top_n));
    rules.insert(at, Arc::new(joins));
    // last before the sanity check: a hash repartition feeding only another goes; then an
    // expression a filter and the projection above it both compute is computed once (the
    // plan is final by then: nothing pushes the filter back)
    let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
    rules.insert(at, Arc::new(partitioning::StackedRepartitionsRule));
    let at = at + 1;
    rules.insert(at, Arc::new(shared_expressions::SharedExpressionsRule));
    // then `x % 123` by multiplication in the filters and projections left
    rules.insert(at + 1, Arc::new(constant_divisors::ConstantDivisorsRule));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .with_optimizer_rules(occurrence_counts::before_common_expressions(datafusion::optimizer::Optimizer::new().rules))
        .build();
    let ctx = SessionContext::new_with_state(state);
    // COUNT(DISTINCT x) stays one aggregate (two stacked aggregates would hold a stream)
    ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    ctx.add_optimizer_rule(Arc::new(fixed_intervals::FixedIntervals));
    ctx.add_optimizer_rule(Arc::new(text_times::TextCasts));
    functions::register(&ctx);
    flink_functions::register(&ctx);
    crate::window::functions::register(&ctx);
    Ok(ctx)
}

/// `WITH RECURSIVE` is refused: each step of it would read its sources again, and a source is
/// read once per job (a stream cannot be read twice; a file's read goes on where it stopped).
///
/// ```sql
/// WITH RECURSIVE r(id) AS (SELECT id FROM t WHERE id = 7 UNION ALL SELECT t.id FROM r JOIN t ON t.id = r.id * 3) SELECT * FROM r
/// -- WITH RECURSIVE cannot run over sources: …
/// ```
fn refuse_recursion(plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut recursive = false;
    let _ = plan.apply_with_subqueries(|p| {
        recursive = matches!(p, datafusion::logical_expr::LogicalPlan::RecursiveQuery(_));
        Ok(if recursive { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    if recursive {
        return Err("WITH RECURSIVE cannot run over sources: each step would read them again, and a job reads each source once (a stream cannot be read twice). Unroll the steps as joins, or compute the recursion outside the job".into());
    }
    Ok(())
}

/// DataFusion refuses an operator that would wait for the end of an unbounded input by
/// printing the whole operator tree; the user gets the operator's name and what to write
/// instead.
///
/// ```sql
/// SELECT * FROM clicks c JOIN purchases p ON c.user_id = p.user_id   -- two streams, no time bound
/// -- this query cannot run on a stream: HashJoinExec would wait for the end of an unbounded input; …WITHIN INTERVAL…
/// ```
fn stream_refusal(e: datafusion::error::DataFusionError) -> datafusion::error::DataFusionError {
    const MARK: &str = "Cannot execute pipeline breaking queries, operator: ";
    let text = e.to_string();
    let Some(at) = text.find(MARK) else { return e };
    let name: String = text[at + MARK.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let hint = match name.as_str() {
        // NOT IN: a NULL arriving later would empty the answer
        "HashJoinExec" if text.contains("null_aware: true") => {
            "NOT IN over a stream cannot be answered before the stream ends (a NULL arriving later would leave no row): write NOT EXISTS (SELECT 1 FROM … WHERE …) with a time bound"
        }
        "HashJoinExec" | "SymmetricHashJoinExec" | "NestedLoopJoinExec" | "CrossJoinExec" | "SortMergeJoinExec" => {
            "a join of two streams needs a time bound: add WITHIN INTERVAL '5' MINUTES after the ON condition, bound the event times in it \
             (b.ts BETWEEN a.ts - INTERVAL '10' SECOND AND a.ts), or join the windows of two window aggregates on their bounds (a.window_start = b.window_start)"
        }
        "SortExec" | "SortPreservingMergeExec" => {
            "ORDER BY over a stream never ends: order the rows of a window, or keep a top N per key (ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= N)"
        }
        "AggregateExec" => "group by a window (TUMBLE, HOP or SESSION), or let the aggregate update (EMIT CHANGES)",
        _ => "it needs the whole of its input, which a stream never delivers",
    };
    datafusion::error::DataFusionError::Plan(format!("this query cannot run on a stream: {name} would wait for the end of an unbounded input; {hint}"))
}

/// Whether `plan` holds an aggregate that emits changes (`EMIT CHANGES`).
fn has_changelog(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let own = plan.downcast_ref::<crate::window::WindowAggregateExec>().is_some_and(|w| w.config().emit == crate::sql::EmitMode::Changes);
    own || plan.children().iter().any(|c| has_changelog(c))
}

/// `EMIT CHANGES` over `SESSION` windows: the window operator gives each row its own `_op`
/// (`DELETE` retracts a session that merged into a larger one), and the projections, filters
/// and pass-through operators above it carry that column to the output. None when the plan
/// has no such operator.
///
/// ```sql
/// SELECT window_start, window_end, user_id, COUNT(*) AS clicks
/// FROM clicks GROUP BY SESSION(ts, INTERVAL '30' SECOND), user_id EMIT CHANGES
/// ```
fn carry_operation_column(plan: &Arc<dyn ExecutionPlan>) -> datafusion::error::Result<Option<Arc<dyn ExecutionPlan>>> {
    use crate::window::aggregate_exec::OP_COLUMN;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_expr::projection::ProjectionExpr;
    #[allow(deprecated)]
    use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
    use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::Partitioning;
    let refuse = |name: &str| {
        datafusion::common::plan_err!(
            "a changelog with retractions (EMIT CHANGES over SESSION windows, a top N per key on a stream) carries an _op column that a {name} above it cannot carry; use EMIT FINAL for sessions, and only project and filter such a changelog"
        )
    };
    if let Some(t) = plan.downcast_ref::<crate::top_n::StreamTopNExec>() {
        return Ok(Some(Arc::new(t.with_operation_column()?)));
    }
    if let Some(w) = plan.downcast_ref::<crate::window::WindowAggregateExec>() {
        if w.retracts() {
            return Ok(Some(Arc::new(w.with_operation_column())));
        }
        // an aggregate above a retracting one would count its retractions as rows
        if w.children().iter().any(|c| has_retractions(c)) {
            return refuse(plan.name());
        }
        return Ok(None);
    }
    let children = plan.children();
    let mut carried = None;
    for c in &children {
        if let Some(new) = carry_operation_column(c)? {
            carried = Some(new);
            break;
        }
    }
    let Some(child) = carried else { return Ok(None) };
    if children.len() != 1 {
        return refuse(plan.name());
    }
    let op_index = child.schema().fields().len() - 1;
    let op = ProjectionExpr { expr: Arc::new(Column::new(OP_COLUMN, op_index)), alias: OP_COLUMN.to_string() };
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let exprs: Vec<ProjectionExpr> = p.expr().iter().cloned().chain(std::iter::once(op)).collect();
        return Ok(Some(Arc::new(ProjectionExec::try_new(exprs, child)?)));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let projection = f.projection().as_ref().map(|p| p.iter().copied().chain(std::iter::once(op_index)).collect::<Vec<usize>>());
        // keep the filter's settings: on a stream its batch size is 1 (rows pass at once)
        let filter = FilterExecBuilder::new(Arc::clone(f.predicate()), child)
            .apply_projection(projection)?
            .with_batch_size(f.batch_size())
            .with_fetch(f.fetch())
            .with_default_selectivity(f.default_selectivity())
            .build()?;
        return Ok(Some(Arc::new(filter)));
    }
    if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        return match r.partitioning() {
            // a round robin could reorder a session's DELETE and UPSERT: the rows stay in one stream
            Partitioning::RoundRobinBatch(_) => Ok(Some(child)),
            // by the group keys (DataFusion's, above an aggregate): a session's rows stay together, in order
            Partitioning::Hash(..) => Ok(Some(Arc::clone(plan).replace_children(vec![child], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?)),
            _ => refuse(plan.name()),
        };
    }
    // operators that hand their rows through in order, columns unchanged
    #[allow(deprecated)]
    let passes = plan.downcast_ref::<CoalesceBatchesExec>().is_some_and(|c| c.fetch().is_none())
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some_and(|c| c.fetch().is_none());
    if passes && plan.schema().fields() == children[0].schema().fields() {
        return Ok(Some(Arc::clone(plan).replace_children(vec![child], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?));
    }
    refuse(plan.name())
}

/// True when `plan` holds an operator that emits retractions (`EMIT CHANGES` over `SESSION`).
fn has_retractions(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<crate::window::WindowAggregateExec>().is_some_and(|w| w.retracts())
        || plan.downcast_ref::<crate::top_n::StreamTopNExec>().is_some()
        || plan.children().iter().any(|c| has_retractions(c))
}

/// Appends `_op = 'UPSERT'` to every row of a changelog: each row is the current value of its
/// key (the group key, with the window if any), so a keyed sink replaces what it had.
///
/// ```sql
/// SELECT product, SUM(qty) AS sold FROM orders GROUP BY product EMIT CHANGES
/// -- {"product":"p1","sold":3,"_op":"UPSERT"} then {"product":"p1","sold":5,"_op":"UPSERT"}
/// ```
fn with_operation_column(plan: Arc<dyn ExecutionPlan>) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::expressions::{lit, Column};
    use datafusion::physical_expr::projection::ProjectionExpr;
    let schema = plan.schema();
    let mut exprs: Vec<ProjectionExpr> =
        schema.fields().iter().enumerate().map(|(i, f)| ProjectionExpr { expr: Arc::new(Column::new(f.name(), i)), alias: f.name().clone() }).collect();
    exprs.push(ProjectionExpr { expr: lit("UPSERT"), alias: crate::window::aggregate_exec::OP_COLUMN.to_string() });
    Ok(Arc::new(datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, plan)?))
}

/// How long a Kafka consumer may go without rows before the watermark stops waiting for it,
/// unless `idle_timeout` says otherwise.
pub const KAFKA_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The name a job's checkpoints go under by default (`checkpoints/<name>`): a named job's
/// name; a bare `SELECT` (named `select_1`, … by its place in the file) adds a hash of its text,
/// so that one ad-hoc query never finds another's checkpoint.
fn checkpoint_name(spec: &JobSpec) -> String {
    if spec.statement.name().is_some() {
        return spec.name.clone();
    }
    // the same text gives the same name on every run and build
    let text = spec.statement.query.to_string();
    let h = ferris_connectors::checkpoint::fnv1a(text.bytes().chain(spec.statement.with.iter().flat_map(|(k, v)| k.bytes().chain(v.bytes()))));
    format!("{}-{:08x}", spec.name, h as u32)
}

/// The job's watermark settings and event-time formats, for the window operators.
///
/// The delay is the largest `watermark.delay` among the sources (or the job's own); without
/// one a bounded job's watermark waits for the end of input (exact results whatever the order),
/// and an unbounded job's follows the latest event time (rows are expected in order).
pub fn streaming_rule(spec: &JobSpec, unbounded: bool) -> std::result::Result<StreamingAggregateRule, String> {
    let mut delay: Option<i64> = None;
    let mut idle: Option<std::time::Duration> = None;
    let mut idle_named = false;
    let mut delay_named = false;
    let mut int_scales = HashMap::new();
    let props = spec.sources.iter().map(|s| &s.properties).chain(std::iter::once(&spec.options));
    for p in props {
        if let Some(d) = p.get_duration("watermark.delay").map_err(|e| e.to_string())? {
            delay_named = true;
            delay = Some(delay.unwrap_or(0).max(d.as_millis() as i64));
        }
        if let Some(d) = p.get_duration("idle_timeout").map_err(|e| e.to_string())? {
            idle = Some(idle.map_or(d, |x| x.min(d)));
            idle_named = true;
        }
        if let (Some(col), Some(fmt)) = (p.get("event_time"), p.get("event_time.format")) {
            if fmt.eq_ignore_ascii_case("epoch_seconds") {
                int_scales.insert(col.to_string(), 1000);
            }
        }
    }
    if delay.is_none() && unbounded {
        delay = Some(0);
    }
    if idle.is_none() && spec.sources.iter().any(|s| s.connector.kind == ferris_connectors::ConnectorKind::Kafka) {
        // A consumer without partitions (more consumers than partitions, or a rebalance)
        // must not hold the watermark back for ever.
        idle = Some(KAFKA_IDLE_TIMEOUT);
    }
    let mut event_time_columns: Vec<String> = spec.sources.iter().filter_map(|s| s.properties.get("event_time").map(str::to_string)).collect();
    if spec.sources.iter().any(|s| s.connector.kind == ferris_connectors::ConnectorKind::Kafka) {
        event_time_columns.push("_timestamp".into());
    }
    let changes_every = spec.options.get_duration("emit.interval").map_err(|e| e.to_string())?.unwrap_or(std::time::Duration::from_millis(100));
    Ok(StreamingAggregateRule {
        // a named idle_timeout also lets event time go on with the clock once every source is
        // quiet (Kafka's implicit one only stops idle consumers from holding the others back)
        // (a stream with an explicit delay only: a bounded job's windows close at its end)
        watermark: WatermarkConfig { delay_ms: delay, idle_timeout: idle, advance_when_idle: idle_named && delay_named && unbounded },
        emit: spec.statement.emit,
        changes_every,
        int_scales,
        checkpoints: false,
        state_ttl: spec.options.get_positive_duration("state.ttl").map_err(|e| e.to_string())?,
        event_time_columns,
    })
}

/// Whether an operator of `plan` expires idle keys (`state.ttl`).
fn expires_keys(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<crate::window::WindowAggregateExec>().is_some_and(|w| w.config().state_ttl.is_some())
        || plan.downcast_ref::<crate::top_n::StreamTopNExec>().is_some_and(|t| t.config().state_ttl.is_some())
        || plan.downcast_ref::<crate::window_function::StreamWindowFunctionExec>().is_some_and(|w| w.state_ttl().is_some())
        || plan.children().into_iter().any(expires_keys)
}

fn table_reference(name: &str) -> TableReference {
    match name.split_once('.') {
        Some((schema, table)) => TableReference::partial(schema.to_string(), table.to_string()),
        None => TableReference::bare(name.to_string()),
    }
}

/// Creates the job's sources, registers them and plans its query.
pub async fn plan_job(spec: JobSpec) -> Result<PlannedJob> {
    plan_job_with(spec, None).await
}

/// [`plan_job`] with a memory cap for query execution, in MiB.
pub async fn plan_job_with(spec: JobSpec, memory_mb: Option<usize>) -> Result<PlannedJob> {
    let partitions = parallelism(&spec);
    let batch_size = ferris_connectors::batching::BatchConfig::resolve(&ferris_connectors::Properties::new(""), &spec.options)
        .map(|b| b.size.min(1 << 16))
        .unwrap_or(ferris_connectors::batching::DEFAULT_BATCH_SIZE);
    let mut sources = Vec::new();
    let source_failures = Arc::new(source_failure::SourceFailures::new(spec.sources.len()));
    let simple_mode = !spec.options.get_bool("use_transactions").ok().flatten().unwrap_or(false);
    for rel in &spec.sources {
        tracing::info!(job = %spec.name, source = %rel.name, "Creating source '{}' ({})", rel.name, rel.connector);
        // a source may talk to its service here (Kafka metadata, a schema inferred from the
        // first messages, a database's columns): the runtime's other tasks go on meanwhile
        let source = match crate::connect::blocking(|| create_source(rel, &spec.options, partitions, &spec.name)) {
            Ok(source) => source,
            Err(error) => {
                // simple mode goes on with the sources it has when what one reads is not there
                let stand_in = if simple_mode && spec.sources.len() > 1 { source_failure::stand_in(rel, &error) } else { None };
                let Some(stand_in) = stand_in else {
                    return Err(EngineError::Source { job: spec.name.clone(), source_name: rel.name.clone(), error });
                };
                tracing::error!(job = %spec.name, source = %rel.name, "source '{}' ({}) could not be opened: {error}; the job goes on with its other sources (simple mode)", rel.name, rel.connector);
                source_failures.record(&rel.name, error.to_string());
                sources.push(stand_in);
                continue;
            }
        };
        tracing::info!(job = %spec.name, source = %rel.name, "Successfully created source '{}' ({}): {}", rel.name, rel.connector, source.describe());
        sources.push(source);
    }
    let unbounded = sources.iter().any(|s| !s.is_bounded());
    let checkpoints = crate::checkpoint::CheckpointConfig::from_options(&spec.options, &checkpoint_name(&spec), unbounded)
        .map_err(|e| EngineError::Failed { job: spec.name.clone(), message: e.to_string() })?;
    // the job's own memory.limit_mb, under the process's FERRIS_MAX_MEMORY_MB
    let own = spec.options.get_usize("memory.limit_mb").map_err(|e| EngineError::Failed { job: spec.name.clone(), message: e.to_string() })?;
    if own == Some(0) {
        return Err(EngineError::Failed { job: spec.name.clone(), message: "'memory.limit_mb' must be at least 1".into() });
    }
    let memory_mb = match (memory_mb, own) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let planning = Planning { spec: &spec, sources: &sources, source_failures: &source_failures, checkpoints: &checkpoints, partitions, batch_size, memory_mb };
    // barriers flow through streaming plans; a bounded job with checkpoints takes them too
    // where its plan carries them (our operators and stateless ones between sources and
    // sinks) and no memory limit is set, else it commits once, at the end of its input
    // (under a memory limit, DataFusion's operators, which spill, read a bounded input)
    let try_barriers = checkpoints.enabled && (unbounded || memory_mb.is_none());
    let (query, barriers) = match planning.plan(try_barriers).await {
        Ok(q) if unbounded || !try_barriers || carries_barriers(&q.plan_checkpoints, &sources) => (q, try_barriers),
        Err(e) if unbounded || !try_barriers => return Err(e),
        Ok(q) => {
            tracing::debug!(job = %spec.name, "checkpoints once, at the end of the input: {}", q.plan_checkpoints.problem.as_deref().unwrap_or("a source records no positions"));
            (planning.plan(false).await?, false)
        }
        Err(e) => {
            tracing::debug!(job = %spec.name, "checkpoints once, at the end of the input: planned with barriers, {e}");
            (planning.plan(false).await?, false)
        }
    };
    let PlannedQuery { ctx, plan, notes, plan_checkpoints } = query;
    Ok(PlannedJob { spec, ctx, plan, sources, notes, checkpoints, plan_checkpoints, barriers, source_failures })
}

/// Whether a bounded job's plan, planned with barriers, can take checkpoints while it reads:
/// nothing in it holds rows a checkpoint cannot, and every source records positions.
fn carries_barriers(plan: &crate::checkpoint::plan::PlanCheckpoints, sources: &[Arc<dyn Source>]) -> bool {
    plan.problem.is_none() && sources.iter().all(|s| s.checkpoint().is_some())
}

/// What planning a job's query takes, once its sources are created.
struct Planning<'a> {
    spec: &'a JobSpec,
    sources: &'a [Arc<dyn Source>],
    source_failures: &'a Arc<source_failure::SourceFailures>,
    checkpoints: &'a crate::checkpoint::CheckpointConfig,
    partitions: usize,
    batch_size: usize,
    memory_mb: Option<usize>,
}

/// A planned query (see the fields of [`PlannedJob`] of the same names).
struct PlannedQuery {
    ctx: SessionContext,
    plan: Arc<dyn ExecutionPlan>,
    notes: Vec<String>,
    plan_checkpoints: crate::checkpoint::plan::PlanCheckpoints,
}

impl Planning<'_> {
    /// Registers the sources in a new session and plans the query, for a run with barriers
    /// (`barriers`: our streaming operators, no exchanges between them) or without.
    async fn plan(&self, barriers: bool) -> Result<PlannedQuery> {
        let Self { spec, sources, source_failures, checkpoints, partitions, batch_size, memory_mb } = *self;
        let plan_err = |error| EngineError::Plan { job: spec.name.clone(), error };
        let unbounded = sources.iter().any(|s| !s.is_bounded());
        let mut streaming = streaming_rule(spec, unbounded).map_err(|message| EngineError::Failed { job: spec.name.clone(), message })?;
        streaming.checkpoints = barriers;
        let ctx = new_context(partitions, batch_size, unbounded, memory_mb, streaming).map_err(plan_err)?;
        // a bounded GROUP BY's distinct counts of one column share one set
        if !unbounded && !barriers && spec.statement.emit != Some(crate::sql::EmitMode::Changes) {
            ctx.add_optimizer_rule(Arc::new(count_distinct_sets::CountDistinctSetsRule));
        }
        let mut schemas: HashMap<String, SchemaRef> = HashMap::new();
        let transactional = checkpoints.enabled && checkpoints.mode == crate::checkpoint::Mode::ExactlyOnce;
        let job_strategy = FailureStrategy::from_properties(&spec.options, FailureStrategy::default())
            .map_err(|e| EngineError::Failed { job: spec.name.clone(), message: e.to_string() })?;
        for (rel, source) in spec.sources.iter().zip(sources) {
            // a table re-read while the job runs is read afresh each time, not through one shared
            // read, and keeps its previous read when a new one fails
            let table = Arc::new(if source.refresh_interval().is_some() {
                source_table::SourceTable::new(Arc::clone(source))
            } else {
                let on = source_failure::OnFailure {
                    strategy: FailureStrategy::from_properties(&rel.properties, job_strategy)
                        .map_err(|e| EngineError::Failed { job: spec.name.clone(), message: e.to_string() })?,
                    transactional,
                };
                let guarded = source_failure::GuardedSource::new(Arc::clone(source), on, Arc::clone(source_failures));
                let table = source_table::SourceTable::shared(Arc::new(guarded));
                // without checkpoints no position of a second read has to be recorded
                if checkpoints.enabled {
                    table
                } else {
                    table.with_read_again()
                }
            });
            ctx.register_table(table_reference(&rel.name), table as Arc<dyn datafusion::catalog::TableProvider>).map_err(plan_err)?;
            schemas.insert(rel.name.clone(), source.schema());
        }
        let mut query = spec.statement.query.clone();
        let failed = |message| EngineError::Failed { job: spec.name.clone(), message };
        // with a stream in the job, a bounded source is a table the stream looks rows up in
        let tables_of_streams: std::collections::HashSet<String> =
            if unbounded { sources.iter().filter(|s| s.is_bounded()).map(|s| s.name().to_ascii_lowercase()).collect() } else { Default::default() };
        let mut notes = within::apply_within(&mut query, spec, &schemas, &tables_of_streams).map_err(failed)?;
        if let Some(clause) = &spec.statement.window {
            notes.push(crate::window::sql_rewrite::apply_window_clause(&mut query, clause, spec).map_err(failed)?);
        }
        crate::window::sql_rewrite::rewrite_window_bounds(&mut query).map_err(failed)?;
        let state = ctx.state();
        let logical = state.statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(query)))).await.map_err(plan_err)?;
        refuse_recursion(&logical).map_err(failed)?;
        let mut plan = state.create_physical_plan(&logical).await.map_err(stream_refusal).map_err(plan_err)?;
        // window aggregates whose window bounds an operator above reads as event time say how far
        // they have emitted
        plan = crate::window::cascade::hand_on_watermarks(plan).map_err(plan_err)?;
        if unbounded || barriers {
            plan = latency::pass_batches_through(plan).map_err(plan_err)?;
        }
        if let Some(carried) = carry_operation_column(&plan).map_err(plan_err)? {
            plan = carried;
        } else if has_changelog(&plan) {
            plan = with_operation_column(plan).map_err(plan_err)?;
        }
        plan = if barriers { crate::checkpoint::plan::without_exchanges(plan) } else { crate::checkpoint::plan::without_exchanges_between_ours(plan) }
            .map_err(plan_err)?;
        // bounded input without checkpoints: windows by key that go straight to the output share
        // the job's cores (window::spread)
        if !checkpoints.enabled && !unbounded {
            plan = crate::window::spread::spread_keyed_windows(plan, state.config().target_partitions()).map_err(plan_err)?;
        }
        // filters between a source and a window hand each batch on as it comes, so that the window
        // may close as the source's statistics say no older row is to come (event_time::floor)
        plan = crate::event_time::floor::hand_on_batches_below(plan, &|n| {
            n.downcast_ref::<crate::window::WindowAggregateExec>().and_then(|w| w.config().time.clone())
        })
        .map_err(plan_err)?;
        if let Some(ttl) = spec.options.get("state.ttl") {
            if !expires_keys(&plan) {
                notes.push(format!(
                    "'state.ttl' = '{ttl}' is not applied: it forgets idle keys of an unwindowed GROUP BY, a top N per key or window functions on a stream, and this job has none of them (windows and bounded inputs free their state themselves)"
                ));
            }
        }
        // a source read by several scans puts barriers into its one read (planner::shared_scan)
        let plan_checkpoints = crate::checkpoint::plan::describe(&plan);
        Ok(PlannedQuery { ctx, plan, notes, plan_checkpoints })
    }
}
