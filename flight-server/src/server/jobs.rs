//! The job registry of `ferris-sql serve` (the guide's StreamJobServer): deploys SQL, one job
//! per statement, runs each on its own task, and answers status and metrics while they run. A
//! job that fails is marked `Failed` with its error; the server and the other jobs go on.
//!
//! ```sql
//! -- POST /api/jobs with this text deploys the job 'big_orders'
//! CREATE STREAM big_orders AS SELECT * FROM orders WHERE amount > 100 INTO out WITH (…);
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use ferris_connectors::metrics::{ConnectionStatus, ConnectorMetrics};
use ferris_connectors::{ConnectorKind, ConnectorType, Properties, Role};
use ferris_engine::job::RelationSpec;

use super::catalog::Catalog;
use ferris_engine::config::{ConfigContext, Limits};
use ferris_engine::job::analyze_sql_with;
use ferris_engine::planner::plan_job_with;
use ferris_engine::runner::live::LiveJob;
use ferris_engine::runner::{run_job, RunOptions};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why a request was refused; becomes an HTTP status and `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The SQL or its configuration is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such job (404).
    #[error("no job named '{0}'")]
    NotFound(String),
    /// A job of that name exists (409).
    #[error("a job named '{0}' already exists; stop and delete it first")]
    Conflict(String),
    /// Another job publishes the Flight stream of that name (409).
    #[error("the Flight stream '{0}' is published by job '{1}'; give this job's flight_sink another 'stream'")]
    StreamInUse(String, String),
    /// The server holds its maximum of jobs (429).
    #[error("the server already runs {0} jobs (FERRIS_MAX_JOBS); delete one first")]
    TooManyJobs(usize),
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Reading and writing.
    Running,
    /// Asked to stop; flushing.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Bounded input done, sinks flushed.
    Completed,
    /// Ended with an error.
    Failed(String),
}

impl JobState {
    fn name(&self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Completed => "Completed",
            Self::Failed(_) => "Failed",
        }
    }
}

/// One deployed job.
pub struct Job {
    /// Its name (the stream's).
    pub name: String,
    /// The SQL statement's text as deployed.
    pub sql: String,
    started: Instant,
    started_at: SystemTime,
    state: Mutex<JobState>,
    stop: watch::Sender<bool>,
    /// Sources: name, type, counters.
    pub sources: Vec<(String, String, Arc<ConnectorMetrics>)>,
    /// Sinks: name, type.
    pub sink_types: Vec<(String, String)>,
    /// Live counters.
    pub live: Arc<LiveJob>,
    /// The live stream (and Flight SQL table) its flight sink publishes: the job's name unless
    /// the sink's `stream` says otherwise.
    pub stream: String,
    /// Set when the job is deleted: its end also drops its stream and tables.
    deleted: std::sync::atomic::AtomicBool,
}

impl Job {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        Self::lock(&self.state).clone()
    }

    /// Records processed: rows read by every source.
    pub fn records_processed(&self) -> u64 {
        self.sources.iter().map(|(_, _, m)| m.records()).sum()
    }

    /// The guide's JobMetrics document.
    pub fn metrics(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let records = self.records_processed();
        let sinks = self.live.sinks();
        let batches: u64 = self.sources.iter().map(|(_, _, m)| m.batches()).sum();
        let batches_failed: u64 = sinks.iter().map(|s| s.metrics.errors()).sum();
        let errors: u64 = self.sources.iter().map(|(_, _, m)| m.errors()).sum::<u64>() + batches_failed;
        let last = self.sources.iter().map(|(_, _, m)| m.last_record_ms.load(std::sync::atomic::Ordering::Relaxed)).max().unwrap_or(0);
        json!({
            "records_processed": records,
            "records_per_second": records as f64 / secs,
            "batches_processed": batches,
            "batches_failed": batches_failed,
            "last_record_time": (last > 0).then(|| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(last).map(|t| t.to_rfc3339())).flatten(),
            "errors": errors,
            "memory_usage_mb": process_rss_mb(),
            "state_bytes": self.live.operator_counter("state_bytes"),
            "late_rows_dropped": self.live.operator_counter("late_rows_dropped"),
            "rows_out": self.live.rows_out(),
            "uptime_seconds": secs,
            "sources": self.sources.iter().map(|(n, _, m)| (n.clone(), json!({"records": m.records(), "batches": m.batches(), "errors": m.errors()}))).collect::<BTreeMap<_, _>>(),
            "sinks": sinks.iter().map(|s| (s.name.clone(), json!({"records": s.metrics.records(), "batches": s.metrics.batches(), "errors": s.metrics.errors(), "dropped": s.metrics.dropped()}))).collect::<BTreeMap<_, _>>(),
        })
    }

    /// The guide's status document.
    pub fn status(&self) -> Value {
        let state = self.state();
        let finished = !matches!(state, JobState::Running | JobState::Stopping);
        let sources: BTreeMap<String, &str> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, (n, _, m))| {
                let s = if matches!(state, JobState::Failed(_)) && m.records() == 0 { ConnectionStatus::Failed } else { m.status() };
                (format!("source_{i}_{n}"), if finished && s == ConnectionStatus::Connected { "Closed" } else { s.as_str() })
            })
            .collect();
        let live = self.live.sinks();
        let sinks: BTreeMap<String, &str> = self
            .sink_types
            .iter()
            .enumerate()
            .map(|(i, (n, _))| {
                let sink = live.iter().find(|s| &s.name == n);
                let failed = sink.is_some_and(|s| s.failed.load(std::sync::atomic::Ordering::Relaxed));
                let s = if failed {
                    "Failed"
                } else if finished {
                    "Closed"
                } else {
                    // as its client last saw the connection (a broker away: Reconnecting)
                    sink.map_or("Connected", |s| s.metrics.status().as_str())
                };
                (format!("sink_{i}_{n}"), s)
            })
            .collect();
        let mut doc = json!({ "name": self.name, "status": state.name(), "sources": sources, "sinks": sinks, "metrics": self.metrics() });
        if let JobState::Failed(e) = &state {
            doc["error"] = json!(e);
        }
        doc
    }

    /// The summary line of `GET /api/jobs`.
    pub fn summary(&self) -> Value {
        json!({
            "name": self.name,
            "status": self.state().name(),
            "sources": self.sources.iter().map(|(n, t, _)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "sinks": self.sink_types.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "started_at": chrono::DateTime::<chrono::Utc>::from(self.started_at).to_rfc3339(),
            "records_processed": self.records_processed(),
            "sql": self.sql,
        })
    }
}

/// The process's resident memory (VmRSS), in MiB.
pub fn process_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Every job of the server.
pub struct Registry {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    ctx: ConfigContext,
    limits: Limits,
    catalog: Arc<Catalog>,
}

/// The sink every hosted job gets when it names no `flight_sink`: its output as a live stream
/// and a Flight SQL table, named after the job.
pub const IMPLICIT_FLIGHT_SINK: &str = "_flight";

impl Registry {
    /// An empty registry using `ctx` to resolve configuration and `limits` to refuse; jobs'
    /// tables go to `catalog`.
    pub fn new(ctx: ConfigContext, limits: Limits, catalog: Arc<Catalog>) -> Self {
        Self { jobs: Mutex::new(BTreeMap::new()), ctx, limits, catalog }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// All jobs, by name.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs().values().cloned().collect()
    }

    /// One job.
    pub fn get(&self, name: &str) -> Result<Arc<Job>, ApiError> {
        self.jobs().get(name).cloned().ok_or_else(|| ApiError::NotFound(name.to_string()))
    }

    /// Whether `/metrics` is served (the profile's `metrics_enabled`).
    pub fn metrics_enabled(&self) -> bool {
        self.limits.metrics_enabled
    }

    /// Deploys every statement of `sql` as a job; all or nothing. Returns the job names.
    pub async fn deploy(&self, sql: &str) -> Result<Vec<String>, ApiError> {
        let analysed = analyze_sql_with(sql, &self.ctx).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut specs = Vec::new();
        for (i, r) in analysed.into_iter().enumerate() {
            let mut spec = r.map_err(|e| ApiError::BadRequest(format!("statement {}: {e}", i + 1)))?;
            // FERRIS_BATCH_TIMEOUT_MS and the profile's batch_size, as `run` gives them
            self.limits.apply_job_defaults(&mut spec.options);
            specs.push(spec);
        }
        if specs.is_empty() {
            return Err(ApiError::BadRequest("the text holds no statement".into()));
        }
        {
            let jobs = self.jobs();
            for s in &specs {
                if jobs.contains_key(&s.name) {
                    return Err(ApiError::Conflict(s.name.clone()));
                }
            }
            if jobs.len() + specs.len() > self.limits.max_jobs {
                return Err(ApiError::TooManyJobs(self.limits.max_jobs));
            }
        }
        self.limits.check(specs.iter().map(|s| (s.name.as_str(), s.sources.len(), s.sinks.len()))).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut planned = Vec::new();
        for spec in specs {
            planned.push(plan_job_with(spec, self.limits.max_memory_mb).await.map_err(|e| ApiError::BadRequest(e.to_string()))?);
        }
        let mut names = Vec::new();
        let mut jobs = self.jobs();
        for mut p in planned {
            let name = p.spec.name.clone();
            if !p.spec.sinks.iter().any(|r| r.connector.kind == ConnectorKind::Flight) {
                p.spec.sinks.push(RelationSpec {
                    name: IMPLICIT_FLIGHT_SINK.to_string(),
                    connector: ConnectorType { kind: ConnectorKind::Flight, role: Role::Sink },
                    properties: Properties::new(IMPLICIT_FLIGHT_SINK),
                });
            }
            if jobs.contains_key(&name) {
                return Err(ApiError::Conflict(name));
            }
            let stream = p
                .spec
                .sinks
                .iter()
                .find(|r| r.connector.kind == ConnectorKind::Flight)
                .and_then(|r| r.properties.get("stream"))
                .unwrap_or(name.as_str())
                .to_string();
            if let Some(other) = jobs.values().find(|j| j.stream == stream) {
                return Err(ApiError::StreamInUse(stream, other.name.clone()));
            }
            let (stop, stop_rx) = watch::channel(false);
            let live = Arc::new(LiveJob::default());
            let job = Arc::new(Job {
                name: name.clone(),
                sql: sql.to_string(),
                started: Instant::now(),
                started_at: SystemTime::now(),
                state: Mutex::new(JobState::Running),
                stop,
                sources: p.spec.sources.iter().zip(&p.sources).map(|(r, s)| (r.name.clone(), r.connector.to_string(), s.metrics())).collect(),
                sink_types: p.spec.sinks.iter().map(|r| (r.name.clone(), r.connector.to_string())).collect(),
                live: Arc::clone(&live),
                stream: stream.clone(),
                deleted: std::sync::atomic::AtomicBool::new(false),
            });
            let watch = Arc::clone(&job);
            let catalog = Arc::clone(&self.catalog);
            let opts =
                RunOptions { progress: false, stop: stop_rx, live: Some(live), restore: ferris_engine::runner::Restore::Latest, monitor: self.limits.monitor };
            self.catalog.add_job(&p.spec, &stream, p.plan.schema());
            tokio::spawn(async move {
                // Its own task: a panic or error here only marks this job.
                let handle = tokio::spawn(run_job(p, opts));
                let state = match handle.await {
                    Ok(r) => match &r.error {
                        Some(e) => JobState::Failed(e.clone()),
                        None if r.stopped => JobState::Stopped,
                        None => JobState::Completed,
                    },
                    Err(e) => JobState::Failed(format!("the job panicked: {e}")),
                };
                match &state {
                    JobState::Failed(e) => warn!(job = %watch.name, "job failed: {e}"),
                    s => info!(job = %watch.name, "job {}", s.name().to_lowercase()),
                }
                *Job::lock(&watch.state) = state;
                if watch.deleted.load(std::sync::atomic::Ordering::SeqCst) {
                    // deleted while it ran: what its sinks opened late goes too
                    catalog.remove_job(&watch.name);
                    ferris_connectors::flight::hub().remove(&watch.stream);
                }
            });
            info!(job = %name, "deployed");
            jobs.insert(name.clone(), job);
            names.push(name);
        }
        Ok(names)
    }

    /// Asks a job to stop (its sinks are flushed).
    pub fn stop(&self, name: &str) -> Result<Arc<Job>, ApiError> {
        let job = self.get(name)?;
        if job.state() == JobState::Running {
            *Job::lock(&job.state) = JobState::Stopping;
            let _ = job.stop.send(true);
        }
        Ok(job)
    }

    /// Stops a job and forgets it, its live stream and its Flight SQL tables.
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let job = self.stop(name)?;
        job.deleted.store(true, std::sync::atomic::Ordering::SeqCst);
        self.jobs().remove(name);
        self.catalog.remove_job(name);
        ferris_connectors::flight::hub().remove(&job.stream);
        Ok(())
    }

    /// The job publishing the live stream `stream`.
    pub fn by_stream(&self, stream: &str) -> Option<Arc<Job>> {
        self.jobs().values().find(|j| j.stream == stream).cloned()
    }

    /// Stops every job (server shutdown).
    pub fn stop_all(&self) {
        for j in self.list() {
            let _ = self.stop(&j.name);
        }
    }
}
