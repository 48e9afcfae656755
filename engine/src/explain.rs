//! `ferris-sql explain`: what each statement becomes — sources and sinks with their types and
//! resolved properties (secrets masked), job options, warnings and the physical plan. A source
//! that cannot be reached is reported where the plan would be; the analysis still shows.
//!
//! ```sql
//! -- ferris-sql explain configs/ecommerce.sql --json
//! ```

use std::collections::BTreeMap;

use datafusion::physical_plan::displayable;
use serde::Serialize;

use crate::config::ConfigContext;
use crate::job::{analyze_sql_with, AnalysisError, JobSpec, RelationSpec};
use crate::planner::plan_job;

/// A source or sink as explained.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExplainedRelation {
    /// Its name.
    pub name: String,
    /// Its type (`file_source`).
    #[serde(rename = "type")]
    pub connector: String,
    /// Its properties, secrets masked.
    pub properties: BTreeMap<String, String>,
    /// Where each value not written inline came from (YAML file, variables).
    pub provenance: BTreeMap<String, String>,
}

/// One job as explained.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedJob {
    /// The job's name.
    pub name: String,
    /// `stream`, `table` or `select`.
    pub kind: String,
    /// 1-based line of the statement.
    pub line: u64,
    /// Its sources.
    pub sources: Vec<ExplainedRelation>,
    /// Its sinks.
    pub sinks: Vec<ExplainedRelation>,
    /// Job-level options, secrets masked.
    pub options: BTreeMap<String, String>,
    /// Where each option not written inline came from.
    pub options_provenance: BTreeMap<String, String>,
    /// `changes`, `final`, or null when not written.
    pub emit: Option<String>,
    /// WITHIN clauses as written.
    pub within: Vec<String>,
    /// Warnings from analysis and planning.
    pub warnings: Vec<String>,
    /// The physical plan, when it could be built.
    pub plan: Option<String>,
    /// Why the plan could not be built (a missing file, an unsupported source…).
    pub plan_error: Option<String>,
    /// How the job is processed: mode, checkpoints, who takes part (with the plan).
    pub processing: Option<ExplainedProcessing>,
}

/// The processing mode and checkpoints of a job, as `explain` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedProcessing {
    /// `exactly-once` (use_transactions) or `at-least-once`.
    pub mode: String,
    /// When checkpoints are taken, where, how many are kept.
    pub checkpoints: String,
    /// The stateful operators whose state is checkpointed.
    pub stateful_operators: Vec<String>,
    /// What keeps the plan's operator state out of checkpoints, if anything.
    pub problem: Option<String>,
    /// How processes of the job sharing a Kafka topic hand their windows over, when they read
    /// them again (`TUMBLE` or `HOP` windows, one source, simple mode).
    pub across_processes: Option<String>,
    /// Per source: how it takes part.
    pub sources: BTreeMap<String, String>,
    /// Per sink: how it takes part.
    pub sinks: BTreeMap<String, String>,
}

/// What happens to the job's operator state when Kafka partitions move between processes of
/// the job: read again (`TUMBLE`, `HOP`), or kept where it is (a window open then is written
/// by both processes).
fn across_processes(planned: &crate::planner::PlannedJob, unbounded: bool) -> Option<String> {
    let kafka = planned.spec.sources.iter().any(|s| s.connector.kind == ferris_connectors::ConnectorKind::Kafka);
    if !unbounded || !kafka || planned.plan_checkpoints.operators.is_empty() {
        return None;
    }
    Some(if planned.plan_checkpoints.replays_for(&planned.spec, planned.checkpoints.mode) {
        "open windows are read again when Kafka partitions change hands (each window is written once, by one process)".to_string()
    } else {
        "operator state stays in the process that read its rows: run one process of this job per consumer group (a window or join open when Kafka partitions change hands would be written by both processes, each with its share)".to_string()
    })
}

/// How source `rel` takes part; under `use_transactions` a Kafka source says whether a Kafka
/// sink's transactions carry its group's offsets.
fn source_part(planned: &crate::planner::PlannedJob, rel: &crate::job::RelationSpec) -> String {
    use ferris_connectors::ConnectorKind::Kafka;
    let positions = crate::connect::source_positions(rel);
    if planned.checkpoints.mode != crate::checkpoint::Mode::ExactlyOnce || rel.connector.kind != Kafka {
        return positions.to_string();
    }
    // as the runner decides: the job's only sink, a Kafka sink reaching the same brokers as
    // the same user
    match planned.spec.sinks.as_slice() {
        [sink] if sink.connector.kind == Kafka && ferris_connectors::kafka::config::same_cluster_and_user(&sink.properties, &rel.properties) => {
            format!("{positions}; the group's offsets are committed inside the transactions of sink '{}'", sink.name)
        }
        _ => format!("{positions}; the group's offsets are committed once every sink has committed the checkpoint (inside a transaction only when the job's one sink is a Kafka sink on the same cluster, as the same user)"),
    }
}

fn processing(planned: &crate::planner::PlannedJob) -> ExplainedProcessing {
    let cfg = &planned.checkpoints;
    let unbounded = planned.sources.iter().any(|s| !s.is_bounded());
    let checkpoints = match (cfg.enabled, planned.barriers) {
        (false, _) => "off: a bounded job; its sinks are flushed at the end (set 'checkpoint.interval' or use_transactions to take them)".to_string(),
        (true, false) => format!("once, at the end of the input, in {} (keeping {}): the plan cannot carry barriers while it reads, or a memory limit keeps DataFusion's operators, which spill", cfg.dir, cfg.retain),
        (true, true) => format!("every {}ms in {} (keeping {})", cfg.interval.as_millis(), cfg.dir, cfg.retain),
    };
    ExplainedProcessing {
        mode: cfg.mode.name().to_string(),
        checkpoints,
        stateful_operators: planned.plan_checkpoints.operators.iter().map(|o| format!("#{} {}", o.id, o.shape)).collect(),
        problem: planned.plan_checkpoints.problem.clone(),
        across_processes: across_processes(planned, unbounded),
        sources: planned.spec.sources.iter().map(|r| (r.name.clone(), source_part(planned, r))).collect(),
        sinks: planned.spec.sinks.iter().map(|r| (r.name.clone(), crate::connect::sink_delivery(r).to_string())).collect(),
    }
}

/// A statement that could not be analysed.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedError {
    /// 1-based statement number.
    pub statement: usize,
    /// The error.
    pub error: String,
}

/// The application config file and profile in force.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ExplainedConfig {
    /// The config file found (`--config`, `FERRIS_CONFIG_FILE` or discovery), if any.
    pub file: Option<String>,
    /// The active profile.
    pub profile: Option<String>,
    /// How the profile was chosen.
    pub profile_source: Option<String>,
    /// The profile's variables, secrets masked.
    pub variables: BTreeMap<String, String>,
}

/// The whole explain output.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The configuration in force.
    pub config: ExplainedConfig,
    /// Jobs that were analysed.
    pub jobs: Vec<ExplainedJob>,
    /// Statements that were not.
    pub errors: Vec<ExplainedError>,
}

fn relation(r: &RelationSpec) -> ExplainedRelation {
    ExplainedRelation { name: r.name.clone(), connector: r.connector.to_string(), properties: r.properties.masked(), provenance: provenance(&r.properties) }
}

/// Where every property came from: its recorded origin, else `inline`.
fn provenance(p: &ferris_connectors::Properties) -> BTreeMap<String, String> {
    p.iter().map(|(k, _)| (k.to_string(), p.origin(k).unwrap_or("inline").to_string())).collect()
}

fn describe(spec: &JobSpec) -> ExplainedJob {
    use crate::sql::{EmitMode, StatementKind};
    ExplainedJob {
        name: spec.name.clone(),
        kind: match spec.statement.kind {
            StatementKind::Stream(_) => "stream",
            StatementKind::Table(_) => "table",
            StatementKind::Select => "select",
        }
        .into(),
        line: spec.statement.line,
        sources: spec.sources.iter().map(relation).collect(),
        sinks: spec.sinks.iter().map(relation).collect(),
        options: spec.options.masked(),
        options_provenance: provenance(&spec.options),
        emit: spec.statement.emit.map(|e| match e {
            EmitMode::Changes => "changes".into(),
            EmitMode::Final => "final".into(),
        }),
        within: spec.statement.within.iter().map(|w| w.text.clone()).collect(),
        warnings: spec.warnings.clone(),
        plan: None,
        plan_error: None,
        processing: None,
    }
}

/// Explains every statement of `sql`. With `with_plan`, sources are created (files are read
/// for their schema) and the physical plan is shown.
pub async fn explain(sql: &str, with_plan: bool, ctx: &ConfigContext, config: ExplainedConfig) -> Result<Explanation, AnalysisError> {
    let mut out = Explanation { config, jobs: Vec::new(), errors: Vec::new() };
    for (i, result) in analyze_sql_with(sql, ctx)?.into_iter().enumerate() {
        match result {
            Err(e) => out.errors.push(ExplainedError { statement: i + 1, error: e.to_string() }),
            Ok(spec) => {
                let mut job = describe(&spec);
                if with_plan {
                    match plan_job(spec).await {
                        Ok(planned) => {
                            job.warnings.extend(planned.notes.iter().cloned());
                            let sources: Vec<String> = planned.sources.iter().map(|s| format!("{}: {}", s.name(), s.describe())).collect();
                            job.plan = Some(format!("{}\n{}", sources.join("\n"), displayable(planned.plan.as_ref()).indent(true)));
                            job.processing = Some(processing(&planned));
                        }
                        Err(e) => job.plan_error = Some(e.to_string()),
                    }
                }
                out.jobs.push(job);
            }
        }
    }
    Ok(out)
}

/// One `key = value` line per property, with its origin in brackets unless written inline.
fn write_properties(s: &mut String, indent: &str, values: &BTreeMap<String, String>, provenance: &BTreeMap<String, String>) {
    use std::fmt::Write;
    for (k, v) in values {
        let _ = match provenance.get(k).filter(|o| o.as_str() != "inline") {
            Some(origin) => writeln!(s, "{indent}{k} = {v}   [{origin}]"),
            None => writeln!(s, "{indent}{k} = {v}"),
        };
    }
}

/// Renders an explanation for a person.
pub fn render_text(e: &Explanation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(file) = &e.config.file {
        let _ = write!(s, "Config: {file}");
        if let Some(p) = &e.config.profile {
            let _ = write!(s, ", profile '{p}' ({})", e.config.profile_source.as_deref().unwrap_or("?"));
        }
        s.push('\n');
        for (k, v) in &e.config.variables {
            let _ = writeln!(s, "  {k} = {v}");
        }
        s.push('\n');
    }
    for job in &e.jobs {
        let _ = writeln!(s, "Job '{}' ({} at line {})", job.name, job.kind, job.line);
        if let Some(emit) = &job.emit {
            let _ = writeln!(s, "  emit: {emit}");
        }
        for w in &job.within {
            let _ = writeln!(s, "  within: {w}");
        }
        for (title, rels) in [("Sources", &job.sources), ("Sinks", &job.sinks)] {
            let _ = writeln!(s, "  {title}:");
            for r in rels {
                let _ = writeln!(s, "    {} ({})", r.name, r.connector);
                write_properties(&mut s, "      ", &r.properties, &r.provenance);
            }
        }
        if !job.options.is_empty() {
            let _ = writeln!(s, "  Options:");
            write_properties(&mut s, "    ", &job.options, &job.options_provenance);
        }
        for w in &job.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        if let Some(p) = &job.processing {
            let _ = writeln!(s, "  Processing: {} ({})", p.mode, if p.mode == "exactly-once" { "use_transactions" } else { "simple mode" });
            let _ = writeln!(s, "    checkpoints: {}", p.checkpoints);
            for o in &p.stateful_operators {
                let _ = writeln!(s, "    state of {o}");
            }
            if let Some(a) = &p.across_processes {
                let _ = writeln!(s, "    across processes: {a}");
            }
            if let Some(problem) = &p.problem {
                let _ = writeln!(s, "    no operator state in checkpoints: {problem}");
            }
            for (n, how) in &p.sources {
                let _ = writeln!(s, "    source {n}: {how}");
            }
            for (n, how) in &p.sinks {
                let _ = writeln!(s, "    sink {n}: {how}");
            }
        }
        match (&job.plan, &job.plan_error) {
            (Some(p), _) => {
                let _ = writeln!(s, "  Plan:");
                for line in p.lines() {
                    let _ = writeln!(s, "    {line}");
                }
            }
            (None, Some(err)) => {
                let _ = writeln!(s, "  Plan: unavailable: {err}");
            }
            _ => {}
        }
        s.push('\n');
    }
    for err in &e.errors {
        let _ = writeln!(s, "Statement {}: error: {}", err.statement, err.error);
    }
    s
}
