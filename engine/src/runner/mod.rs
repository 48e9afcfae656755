//! The job runner: restores the last checkpoint, drives every output partition of the plan
//! and fans its batches out to all sinks, applies the failure strategy, takes checkpoints
//! (barriers through the plan, state to the store, sinks prepared then committed), falls back
//! to stdout when no sink can take rows, and stops cleanly (a last checkpoint, sinks flushed)
//! at the end of bounded input or on request (Ctrl-C).
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO a, b
//! WITH ('failure_strategy' = 'LogAndContinue', 'checkpoint.interval' = '10s', …);
//! ```

pub mod coordinator;
pub mod fanout;
pub mod live;
pub mod progress;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use ferris_connectors::checkpoint::{BarrierRequests, JobBarriers, Positions, ReplayTime};
use ferris_connectors::stdout::StdoutSink;
use ferris_connectors::{Delivery, FailureStrategy, Sink, Source};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::checkpoint::barrier::{InputEvent, LeafEvent, ScopedInput};
use crate::checkpoint::state::{decode, encode};
use crate::checkpoint::store::{Manifest, OperatorEntry, TableEntry, MANIFEST_VERSION};
use crate::checkpoint::{BarrierRuntime, CheckpointConfig, CheckpointContext, CheckpointError, CheckpointStore, Mode, OperatorEvent, OperatorState};
use crate::connect::create_sink;
use crate::error::describe_datafusion_error;
use crate::planner::PlannedJob;
use coordinator::Coordinator;
use fanout::{SinkEvent, SinkHandle, SinkMsg, DEFAULT_QUEUE_SIZE};

/// Which checkpoint a run starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Restore {
    /// The latest complete checkpoint of the job, if any (the default).
    #[default]
    Latest,
    /// None: a fresh start (`--no-restore`).
    Fresh,
    /// This one (`--from-checkpoint PATH`: a checkpoint's directory or its manifest).
    From(std::path::PathBuf),
}

/// How a job is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Show a progress line on stderr.
    pub progress: bool,
    /// Set to true to stop the job (sinks are flushed).
    pub stop: watch::Receiver<bool>,
    /// Where the job publishes its live counters (the job server), if anywhere.
    pub live: Option<Arc<live::LiveJob>>,
    /// Which checkpoint to start from.
    pub restore: Restore,
    /// Log the job's counters this often (the profile's `monitoring_enabled`), for logs that
    /// nobody watches on a terminal.
    pub monitor: Option<std::time::Duration>,
}

/// Counters of one source or sink at the end of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectorReport {
    /// Its name.
    pub name: String,
    /// Rows read or written.
    pub records: u64,
    /// Batches read or written.
    pub batches: u64,
    /// Malformed records (source) or failed batches (sink).
    pub errors: u64,
    /// True if it ended failed (a source: the job went on without it).
    pub failed: bool,
    /// For sinks: rows of failed batches let go (`LogAndContinue`).
    pub dropped: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job.
    pub name: String,
    /// Rows the query produced.
    pub rows_out: u64,
    /// Per source.
    pub sources: Vec<ConnectorReport>,
    /// Per sink.
    pub sinks: Vec<ConnectorReport>,
    /// Rows sent to stdout because every sink had failed.
    pub fallback_rows: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// True when stopped on request rather than at the end of input.
    pub stopped: bool,
    /// Rows that arrived after the watermark had closed their window, dropped.
    pub late_rows: u64,
    /// `late.sink`: its name and the late rows it wrote.
    pub late_sink: Option<(String, u64)>,
    /// Rows whose event time was null or unreadable, dropped by the window operators.
    pub untimed_rows: u64,
    /// State held by the streaming operators (windows, joins, event-time ordering) when the
    /// job ended, in bytes: zero after a bounded input, the live state of a stopped stream.
    pub state_bytes: u64,
    /// Checkpoints completed in this run.
    pub checkpoints: u64,
    /// Checkpoints that could not be completed (store unavailable, a sink failing to prepare).
    pub failed_checkpoints: u64,
    /// The checkpoint the run started from.
    pub restored_from: Option<u64>,
    /// The longest checkpoint of the run, from its barrier to its manifest written, in ms.
    pub checkpoint_max_ms: u64,
    /// All checkpoints' durations summed, in ms (the mean is this over `checkpoints`).
    pub checkpoint_total_ms: u64,
    /// The state files of the run's last checkpoint, in bytes.
    pub checkpoint_bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The sinks of a running job, and the stdout fallback used once no sink can take rows.
struct Outputs {
    name: String,
    sinks: Vec<SinkHandle>,
    fallback: Option<StdoutSink>,
    fallback_rows: u64,
    rows_out: Arc<AtomicU64>,
}

impl Outputs {
    /// Sends `batch` to every open sink (waiting while a queue is full: back-pressure).
    async fn deliver(&mut self, batch: arrow::record_batch::RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows_out.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut delivered = false;
        for s in self.sinks.iter_mut().filter(|s| s.is_open()) {
            if let Some(tx) = &s.tx {
                if tx.send(SinkMsg::Batch(batch.clone())).await.is_ok() {
                    delivered = true;
                } else {
                    s.tx = None;
                }
            }
        }
        if !delivered {
            let name = &self.name;
            let out = self.fallback.get_or_insert_with(|| {
                warn!(job = %name, "every sink has failed: writing results to stdout");
                StdoutSink::new("stdout-fallback")
            });
            if let Err(e) = out.write(&batch).await {
                warn!(job = %self.name, "stdout fallback failed: {e}");
            } else {
                self.fallback_rows += batch.num_rows() as u64;
            }
        }
    }

    /// Sends `msg(n)` to every open sink; the indices of those that got it.
    async fn broadcast(&mut self, which: impl Fn(&SinkHandle) -> bool, msg: impl Fn() -> SinkMsg) -> Vec<usize> {
        let mut got = Vec::new();
        for (i, s) in self.sinks.iter_mut().enumerate().filter(|(_, s)| s.is_open() && which(s)) {
            if let Some(tx) = &s.tx {
                if tx.send(msg()).await.is_ok() {
                    got.push(i);
                } else {
                    s.tx = None;
                }
            }
        }
        got
    }
}

/// What one output partition's task hands the runner.
enum PartitionMsg {
    Batch(arrow::record_batch::RecordBatch),
    Barrier(u64),
    Error(String),
    End,
}

/// What a barrier requested by a source answers: the source's positions at it, and (a job
/// that replays) the event time its open windows started from.
type BarrierReply = Option<(Positions, Option<ReplayTime>)>;

/// A Kafka source's request for a barrier now (a rebalance giving partitions away).
struct BarrierRequest {
    source: String,
    /// The operators drop their open windows at the barrier (their rows are read again).
    replay: bool,
    /// [`REQUEST_WAITING`], [`REQUEST_MARKED`] (a barrier dropping the windows has started: the
    /// source must wait for it) or [`REQUEST_CANCELLED`] (the source gave up waiting).
    state: Arc<std::sync::atomic::AtomicU8>,
    reply: std::sync::mpsc::Sender<BarrierReply>,
}

const REQUEST_WAITING: u8 = 0;
const REQUEST_MARKED: u8 = 1;
const REQUEST_CANCELLED: u8 = 2;

/// How long the job takes no barrier after answering a source's replay request, at most,
/// while the source seeks its partitions back.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(60);

/// The runner's side of [`BarrierRequests`].
#[derive(Debug)]
struct Requests {
    tx: mpsc::UnboundedSender<BarrierRequest>,
    /// Since when a source is seeking partitions back after a replay barrier.
    handing_over: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The job rebuilds its windows by reading rows again (see [`PlanCheckpoints::replays`]).
    replays: bool,
    /// Where sources keep notes for the job's other processes: `handover/` in the job's
    /// checkpoint directory (a local one).
    notes: Option<std::path::PathBuf>,
    /// The job's barriers, and how far its window operator has emitted.
    runtime: Arc<BarrierRuntime>,
}

impl Requests {
    fn request(&self, source: &str, replay: bool, wait: Duration) -> BarrierReply {
        let (tx, rx) = std::sync::mpsc::channel();
        let state = Arc::new(std::sync::atomic::AtomicU8::new(REQUEST_WAITING));
        self.tx.send(BarrierRequest { source: source.to_string(), replay, state: Arc::clone(&state), reply: tx }).ok()?;
        match rx.recv_timeout(wait) {
            Ok(r) => r,
            // given up, unless a barrier dropping the windows has started: then its answer is
            // needed (the partitions must be sought back), however long it takes
            Err(_) if state.compare_exchange(REQUEST_WAITING, REQUEST_CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok() => None,
            Err(_) => rx.recv().ok().flatten(),
        }
    }
}

/// Whether no source is seeking partitions back after a replay barrier (or it has taken
/// longer than [`HAND_OVER_LIMIT`]).
fn barriers_allowed(handing_over: &std::sync::Mutex<Option<Instant>>) -> bool {
    let mut h = handing_over.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *h {
        Some(since) if since.elapsed() < HAND_OVER_LIMIT => false,
        Some(_) => {
            *h = None;
            true
        }
        None => true,
    }
}

impl BarrierRequests for Requests {
    fn request_and_wait(&self, source: &str, wait: Duration) -> Option<Positions> {
        self.request(source, false, wait).map(|(p, _)| p)
    }

    fn replays(&self, _source: &str) -> bool {
        self.replays
    }

    fn emitted_before(&self) -> Option<i64> {
        self.replays.then(|| self.runtime.emitted_before())
    }

    fn request_replay_and_wait(&self, source: &str, wait: Duration) -> Option<(Positions, ReplayTime)> {
        if !self.replays {
            return None;
        }
        match self.request(source, true, wait)? {
            (p, Some(t)) => Some((p, t)),
            _ => None,
        }
    }

    fn put_note(&self, name: &str, value: &str) {
        let Some(dir) = &self.notes else { return };
        // written aside and renamed: a reader never sees half a note
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&tmp, value)).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
        if let Err(e) = written {
            warn!("cannot keep the hand-over note {}: {e}", dir.join(name).display());
        }
    }

    fn note(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.notes.as_ref()?.join(name)).ok()
    }

    fn hand_over_done(&self) {
        *self.handing_over.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Where a run starts from: a checkpoint's manifest and its operators' states.
struct Restored {
    manifest: Manifest,
    states: HashMap<usize, OperatorState>,
}

fn ck(e: CheckpointError) -> String {
    e.to_string()
}

/// Reads the manifest named by `--from-checkpoint` (a checkpoint directory or its manifest)
/// and the store it belongs to.
fn store_of(path: &std::path::Path) -> Result<(CheckpointStore, u64), String> {
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().map(|p| p.to_path_buf()).unwrap_or_default() };
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("--from-checkpoint {}: not a checkpoint (a directory chk-NNNNNNNN, or its _manifest.json)", path.display()))?;
    let root = dir.parent().ok_or_else(|| format!("--from-checkpoint {}: not inside a checkpoint store", path.display()))?;
    let store = CheckpointStore::open(&root.display().to_string()).map_err(ck)?;
    Ok((store, id))
}

/// Loads checkpoint `id`'s operator states.
async fn load_states(store: &CheckpointStore, manifest: &Manifest) -> Result<HashMap<usize, OperatorState>, String> {
    let mut states = HashMap::new();
    for op in &manifest.operators {
        let mut tables = Vec::new();
        for (name, t) in &op.tables {
            let bytes = store.get(manifest.checkpoint, &t.file).await.map_err(ck)?;
            let batch = decode(bytes).map_err(ck)?;
            tables.push(crate::checkpoint::state::StateTable { name: name.clone(), batch, key_columns: Vec::new() });
        }
        states.insert(op.id, OperatorState { meta: op.meta.clone(), tables });
    }
    Ok(states)
}

/// Checks that `manifest` was taken with the plan `job` has now.
fn check_compatible(job: &PlannedJob, manifest: &Manifest, store: &str) -> Result<(), String> {
    let now = &job.plan_checkpoints.operators;
    let then = &manifest.operators;
    let refuse = |why: String| {
        Err(format!(
            "job '{}': checkpoint {} in {store} was taken with another query ({why}); its state cannot be restored into this one. Run with --no-restore to start afresh, or --from-checkpoint to pick another checkpoint",
            job.spec.name, manifest.checkpoint
        ))
    };
    if now.len() != then.len() && !(then.is_empty() && job.plan_checkpoints.problem.is_some()) {
        return refuse(format!("{} stateful operators then, {} now", then.len(), now.len()));
    }
    for (a, b) in then.iter().zip(now) {
        if crate::checkpoint::plan::shape_of(&a.shape) != b.shape {
            return refuse(format!("operator #{} was `{}`, now `{}`", a.id, a.shape, b.shape));
        }
    }
    Ok(())
}

/// Runs `job` to completion (bounded sources drained) or until `opts.stop` turns true.
pub async fn run_job(job: PlannedJob, mut opts: RunOptions) -> JobReport {
    let start = Instant::now();
    let name = job.spec.name.clone();
    let rows_out = Arc::new(AtomicU64::new(0));
    let mut report = JobReport {
        name: name.clone(),
        rows_out: 0,
        sources: Vec::new(),
        sinks: Vec::new(),
        fallback_rows: 0,
        elapsed: Duration::ZERO,
        stopped: false,
        late_rows: 0,
        late_sink: None,
        untimed_rows: 0,
        state_bytes: 0,
        checkpoints: 0,
        failed_checkpoints: 0,
        restored_from: None,
        checkpoint_max_ms: 0,
        checkpoint_total_ms: 0,
        checkpoint_bytes: 0,
        error: None,
    };
    let mut out = Outputs { name: name.clone(), sinks: Vec::new(), fallback: None, fallback_rows: 0, rows_out: Arc::clone(&rows_out) };
    let mut leftovers = None;
    match prepare_and_run(&job, &mut opts, &mut out, &mut report, &rows_out).await {
        Ok(parts) => leftovers = parts,
        Err(e) => {
            report.error.get_or_insert(e);
        }
    }
    let Outputs { mut sinks, fallback, fallback_rows, .. } = out;
    // Close every queue, then wait for the sinks to flush.
    for s in sinks.iter_mut() {
        s.tx = None;
    }
    // each sink gets `stop.timeout` to write and close what it holds; one whose service is
    // slow or gone is abandoned (its rows were not acknowledged: a restart replays them from
    // the last checkpoint)
    let stop_timeout = job.checkpoints.stop_timeout;
    let deadline = tokio::time::Instant::now() + stop_timeout;
    for s in sinks.iter_mut() {
        if let Some(mut task) = s.task.take() {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(msg))) => {
                    report.error.get_or_insert(msg);
                }
                Ok(Err(e)) => {
                    report.error.get_or_insert(format!("sink '{}' panicked: {e}", s.name));
                }
                Err(_) => {
                    task.abort();
                    warn!(job = %name, sink = %s.name, "sink '{}' did not finish within {stop_timeout:?} ('stop.timeout'): abandoned", s.name);
                    report.error.get_or_insert(format!(
                        "sink '{}' did not finish writing within {stop_timeout:?} after the job stopped ('stop.timeout'): the rows it held were not acknowledged",
                        s.name
                    ));
                }
            }
        }
    }
    if let Some(mut f) = fallback {
        let _ = f.close().await;
    }
    report.rows_out = rows_out.load(Ordering::Relaxed);
    report.sources = job
        .sources
        .iter()
        .map(|s| ConnectorReport {
            name: s.name().to_string(),
            records: s.metrics().records(),
            batches: s.metrics().batches(),
            errors: s.metrics().errors(),
            failed: job.source_failures.has_failed(s.name()),
            dropped: 0,
        })
        .collect();
    // the job went on without a failed source: it did not read all of its input
    if let Some(failed) = job.source_failures.summary() {
        report.error.get_or_insert(failed);
    }
    report.sinks = sinks
        .iter()
        .map(|s| ConnectorReport {
            name: s.name.clone(),
            records: s.metrics.records(),
            batches: s.metrics.batches(),
            errors: s.metrics.errors(),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.metrics.dropped(),
        })
        .collect();
    report.fallback_rows = fallback_rows;
    report.elapsed = start.elapsed();
    report.late_rows = operator_counter(&job.plan, "late_rows_dropped");
    report.untimed_rows = operator_counter(&job.plan, "rows_without_event_time");
    report.state_bytes = operator_counter(&job.plan, "state_bytes");
    close_bounded(&report.name, (leftovers, job)).await;
    report
}

/// Opens the sinks, restores the latest checkpoint, and runs the job; returns the plan's
/// partitions (to be closed off the runtime).
async fn prepare_and_run(
    job: &PlannedJob,
    opts: &mut RunOptions,
    out: &mut Outputs,
    report: &mut JobReport,
    rows_out: &Arc<AtomicU64>,
) -> Result<Option<Vec<Part>>, String> {
    let name = job.spec.name.clone();
    let cfg: CheckpointConfig = job.checkpoints.clone();
    let unbounded = job.sources.iter().any(|s| !s.is_bounded());
    // barriers flow through streaming plans; a bounded job whose plan cannot carry them
    // commits once, at its end
    let barriers = job.barriers;
    let delivery = match (cfg.enabled, cfg.mode) {
        (false, _) => Delivery::Plain,
        (true, Mode::AtLeastOnce) => Delivery::AtLeastOnce,
        (true, Mode::ExactlyOnce) => Delivery::ExactlyOnce,
    };
    if let (Delivery::ExactlyOnce, Some(late)) = (delivery, &job.spec.late_sink) {
        // the late rows go out as they come, outside checkpoints: they would not be exactly once
        return Err(format!(
            "use_transactions: late sink '{}' cannot take part in transactions (late rows are written as they come, outside checkpoints); drop 'late.sink' (late rows are then counted and dropped) or run without use_transactions",
            late.name
        ));
    }
    let mut slots = open_sinks(job, delivery)?;
    let mut restore = opts.restore.clone();
    let store = match cfg.enabled {
        true => match CheckpointStore::open_exclusive(&cfg.dir).map_err(|e| format!("job '{name}': {e}"))? {
            Some(s) => Some(s),
            None if delivery == Delivery::ExactlyOnce => {
                // its sinks' transactions and staged files are the other process's too: a
                // Kafka sink would fence the other's producer, a file sink clear its staging
                return Err(format!(
                    "job '{name}': use_transactions: another process of this job holds {} (its checkpoints, its sinks' transactions and staged files); stop it, or give this one its own 'checkpoint.dir' and sinks",
                    cfg.dir
                ));
            }
            None => {
                // another process of the job runs from this directory: this one checkpoints
                // apart, starting from the group's offsets (its partitions are its own)
                let apart = format!("{}/instances/{}", cfg.dir.trim_end_matches('/'), std::process::id());
                warn!(job = %name, "{} is in use by another process of job '{name}': this one takes its checkpoints in {apart} and restores none", cfg.dir);
                restore = Restore::Fresh;
                CheckpointStore::open_exclusive(&apart).map_err(|e| format!("job '{name}': {e}"))?
            }
        },
        false => None,
    };
    let restored = match &store {
        Some(store) => choose_restore(job, &restore, store, &mut slots).await?,
        None => None,
    };
    if let Some(r) = &restored {
        report.restored_from = Some(r.manifest.checkpoint);
        if r.manifest.finished && !unbounded {
            info!(job = %name, "job '{name}' already completed (checkpoint {} in {}): its inputs were read to the end; run with --no-restore to read them again", r.manifest.checkpoint, cfg.dir);
            return Ok(None);
        }
        info!(job = %name, "restoring checkpoint {} from {}", r.manifest.checkpoint, cfg.dir);
        for source in &job.sources {
            if let (Some(c), Some(p)) = (source.checkpoint(), r.manifest.sources.get(source.name())) {
                c.restore(p).map_err(|e| format!("source '{}': {e}", source.name()))?;
            }
        }
    }
    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
    let (sink_tx, sink_rx) = mpsc::unbounded_channel();
    let queue = job.spec.options.get_usize("sink.queue_size").ok().flatten().unwrap_or(DEFAULT_QUEUE_SIZE);
    for SinkSlot { index, mut sink, strategy } in slots {
        let at = restored.as_ref().map(|r| (r.manifest.checkpoint, r.manifest.sinks.get(sink.name()).cloned().flatten()));
        let recovered = if cfg.enabled {
            match tokio::time::timeout(cfg.checkpoint_timeout, sink.recover(at)).await {
                Ok(r) => r,
                Err(_) => Err(ferris_connectors::ConnectorError::Other(format!("did not finish within {:?} ('checkpoint.timeout')", cfg.checkpoint_timeout))),
            }
        } else {
            Ok(())
        };
        if let Err(e) = recovered {
            let msg = format!("sink '{}': recovering from the checkpoint failed: {e}", sink.name());
            if delivery == Delivery::ExactlyOnce {
                return Err(msg);
            }
            warn!(job = %name, "{msg}");
        }
        out.sinks.push(SinkHandle::spawn(&name, index, sink, strategy, queue, cfg.sink_write_timeout, fatal_tx.clone(), sink_tx.clone()));
    }
    drop(fatal_tx);
    drop(sink_tx);
    let _progress = opts.progress.then(|| progress::Progress::start(name.clone(), job.sources.iter().map(|s| s.metrics()).collect(), Arc::clone(rows_out)));
    let _monitor =
        opts.monitor.map(|every| progress::Progress::log_every(name.clone(), job.sources.iter().map(|s| s.metrics()).collect(), Arc::clone(rows_out), every));
    if let Some(l) = &opts.live {
        let live_sinks =
            out.sinks.iter().map(|s| live::LiveSink { name: s.name.clone(), metrics: Arc::clone(&s.metrics), failed: Arc::clone(&s.failed) }).collect();
        l.attach(Arc::clone(rows_out), live_sinks, Arc::clone(&job.plan));
    }
    let late = match &job.spec.late_sink {
        Some(rel) => Some(start_late_sink(rel, &name)?),
        None => None,
    };
    let ctx = Run { job, cfg: &cfg, store, barriers, delivery, restored, late: late.as_ref().map(|(rows, _)| Arc::clone(rows)) };
    let result = ctx.run(opts, out, fatal_rx, sink_rx, report).await;
    if let Some((rows, task)) = late {
        // nothing more comes: the late sink writes what is queued and closes, within stop.timeout
        rows.close();
        let rel = job.spec.late_sink.as_ref().map_or(String::new(), |r| r.name.clone());
        let lost = rows.lost.load(Ordering::Relaxed);
        if lost > 0 {
            warn!(job = %name, "{lost} late rows only counted: the late sink '{rel}' was {} batches behind", crate::event_time::late::LATE_QUEUE);
        }
        match tokio::time::timeout(cfg.stop_timeout, task).await {
            Ok(Ok(written)) => report.late_sink = Some((rel, written)),
            _ => warn!(job = %name, "late sink '{rel}' did not finish within {:?} ('stop.timeout')", cfg.stop_timeout),
        }
    }
    result
}

/// Creates the late sink `rel` and the task that writes what the operators hand it (outside
/// checkpoints, flushed at least once a second); returns the operators' channel and the task,
/// which ends with the number of rows written once the channel is closed.
fn start_late_sink(rel: &crate::job::RelationSpec, job: &str) -> Result<(Arc<crate::event_time::late::LateRows>, tokio::task::JoinHandle<u64>), String> {
    info!(job = %job, sink = %rel.name, "Creating late sink '{}' ({})", rel.name, rel.connector);
    let mut sink = crate::connect::blocking(|| {
        create_sink(rel, job).and_then(|mut s| {
            s.set_delivery(job, Delivery::Plain)?;
            Ok(s)
        })
    })
    .map_err(|e| format!("late sink '{}': {e}", rel.name))?;
    let (rows, mut rx) = crate::event_time::late::LateRows::new();
    let (job, name) = (job.to_string(), rel.name.clone());
    let task = tokio::spawn(async move {
        let mut written = 0u64;
        let mut flushed = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(batch)) => match sink.write(&batch).await {
                    Ok(()) => written += batch.num_rows() as u64,
                    Err(e) => warn!(job = %job, sink = %name, "late sink '{name}': {} late rows not written: {e}", batch.num_rows()),
                },
                Ok(None) => break,
                Err(_) => {}
            }
            if flushed.elapsed() >= Duration::from_secs(1) {
                if let Err(e) = sink.flush().await {
                    warn!(job = %job, sink = %name, "late sink '{name}': flush failed: {e}");
                }
                flushed = Instant::now();
            }
        }
        if let Err(e) = sink.close().await {
            warn!(job = %job, sink = %name, "late sink '{name}': closing failed: {e}");
        }
        written
    });
    Ok((rows, task))
}

/// Creates the job's sinks. Under `use_transactions` every sink must be able to take part,
/// every source must record positions, and the plan must carry barriers: otherwise the job
/// does not start, naming what cannot.
fn open_sinks(job: &PlannedJob, delivery: Delivery) -> Result<Vec<SinkSlot>, String> {
    let name = &job.spec.name;
    let transactional = delivery == Delivery::ExactlyOnce;
    if transactional {
        if let Some(s) = job.sources.iter().find(|s| s.checkpoint().is_none()) {
            return Err(format!("use_transactions: source '{}' cannot take part in transactions (it cannot say where it has read to)", s.name()));
        }
        if let Some(p) = &job.plan_checkpoints.problem {
            if job.sources.iter().any(|s| !s.is_bounded()) {
                return Err(format!("use_transactions: the query cannot be checkpointed: {p}"));
            }
        }
    }
    let default_strategy = FailureStrategy::from_properties(&job.spec.options, FailureStrategy::default());
    let output_schema = job.plan.schema();
    let mut slots = Vec::new();
    for (index, rel) in job.spec.sinks.iter().enumerate() {
        let strategy = match &default_strategy {
            Ok(d) => FailureStrategy::from_properties(&rel.properties, *d),
            Err(e) => Err(ferris_connectors::ConnectorError::Other(e.to_string())),
        };
        info!(job = %name, sink = %rel.name, "Creating sink '{}' ({})", rel.name, rel.connector);
        // a sink may talk to its service here (a producer's transactions, a database's table)
        let sink = crate::connect::blocking(|| {
            create_sink(rel, name).and_then(|mut s| {
                s.check_schema(&output_schema)?;
                if transactional && !s.transactional() {
                    return Err(ferris_connectors::ConnectorError::Other(format!(
                        "it cannot take part in transactions ({} writes rows as they come: at least once)",
                        rel.connector
                    )));
                }
                s.set_delivery(name, delivery)?;
                if transactional && job.spec.sinks.len() == 1 {
                    // the job's only sink may commit a source's positions inside its
                    // transaction, atomically with the rows (a Kafka source's offsets in a
                    // Kafka producer's); with more sinks, positions are committed once every
                    // sink has committed, as always
                    let offered: Vec<(String, Arc<dyn ferris_connectors::checkpoint::SourceCheckpoint>)> =
                        job.sources.iter().filter_map(|src| Some((src.name().to_string(), src.checkpoint()?))).collect();
                    for source in s.take_source_commits(&offered) {
                        info!(job = %name, sink = %rel.name, "source '{source}': its positions are committed inside the transactions of sink '{}'", rel.name);
                    }
                }
                Ok(s)
            })
        });
        match (sink, strategy) {
            (Ok(sink), Ok(strategy)) => {
                info!(job = %name, sink = %rel.name, "Successfully created sink '{}' ({})", rel.name, rel.connector);
                slots.push(SinkSlot { index, sink, strategy });
            }
            (Err(e), _) | (_, Err(e)) if transactional => return Err(format!("use_transactions: sink '{}': {e}", rel.name)),
            // a sink that cannot start stops the job before it reads anything; the stdout
            // fallback is for sinks that fail while running
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!("Job '{name}' failed to create sinks: Failed to create sink '{}' ({}): {e}", rel.name, rel.connector))
            }
        }
    }
    Ok(slots)
}

/// Picks the checkpoint to start from and checks it fits the job. A sink whose commit cannot
/// be redone (a Kafka transaction) says which checkpoint it committed last: when the latest
/// one's commit did not happen, the run starts from the one before.
async fn choose_restore(job: &PlannedJob, restore: &Restore, store: &CheckpointStore, sinks: &mut [SinkSlot]) -> Result<Option<Restored>, String> {
    let name = &job.spec.name;
    let (store, mut manifest) = match restore {
        Restore::Fresh => return Ok(None),
        Restore::From(path) => {
            let (s, id) = store_of(path)?;
            let m = s.manifest(id).await.map_err(ck)?;
            (s, m)
        }
        Restore::Latest => match store.latest().await.map_err(ck)? {
            Some(m) => (store.clone(), m),
            None => return Ok(None),
        },
    };
    for slot in sinks.iter_mut() {
        let sink = &mut slot.sink;
        if !sink.commit_is_final() {
            continue;
        }
        let committed = sink.last_committed().await.map_err(|e| e.to_string())?;
        if committed.is_some_and(|c| c >= manifest.checkpoint) {
            continue;
        }
        // the latest checkpoint is complete but its transaction did not commit: the one before
        warn!(
            job = %name,
            "checkpoint {} was not committed by sink '{}' before the job stopped: starting from {}",
            manifest.checkpoint,
            sink.name(),
            committed.map_or("the beginning".to_string(), |c| format!("checkpoint {c}"))
        );
        match committed {
            Some(c) => {
                manifest = store.manifest(c).await.map_err(|e| {
                    format!(
                        "job '{name}': sink '{}' committed checkpoint {c} last, and that checkpoint cannot be read from {} ({e})",
                        sink.name(),
                        store.display()
                    )
                })?
            }
            None => return Ok(None),
        }
    }
    check_compatible(job, &manifest, store.display())?;
    let states = load_states(&store, &manifest).await?;
    Ok(Some(Restored { manifest, states }))
}

/// A sink created, before its task starts.
struct SinkSlot {
    index: usize,
    sink: Box<dyn Sink>,
    strategy: FailureStrategy,
}

/// One output partition of the plan, as the runner reads it.
struct Part {
    rx: mpsc::Receiver<PartitionMsg>,
    /// Delivered this barrier and waits for the others.
    blocked: Option<u64>,
    ended: bool,
    _task: datafusion::common::runtime::SpawnedTask<()>,
}

/// The next message of any partition that is neither ended nor waiting at a barrier.
async fn next_part(parts: &mut [Part]) -> (usize, Option<PartitionMsg>) {
    let live: Vec<(usize, &mut Part)> = parts.iter_mut().enumerate().filter(|(_, p)| !p.ended && p.blocked.is_none()).collect();
    if live.is_empty() {
        return futures::future::pending().await;
    }
    let (idx, futs): (Vec<usize>, Vec<_>) = live.into_iter().map(|(i, p)| (i, Box::pin(p.rx.recv()))).unzip();
    let (msg, k, _) = futures::future::select_all(futs).await;
    (idx[k], msg)
}

/// A checkpoint whose manifest is written, being committed: the sinks whose commit cannot be
/// redone first, then the others and the sources.
struct Committing {
    n: u64,
    /// The checkpoint at the end of the input (its manifest says `finished` only when every
    /// source was read to its end).
    last: bool,
    manifest: Manifest,
    /// The manifest's source positions, handed to every sink's commit.
    sources: Arc<ferris_connectors::checkpoint::SourcePositions>,
    waiting: Vec<usize>,
}

/// A Kafka source waiting for a barrier newer than `after`.
struct Waiting {
    request: BarrierRequest,
    after: u64,
}

/// One run of a planned job.
struct Run<'a> {
    job: &'a PlannedJob,
    cfg: &'a CheckpointConfig,
    store: Option<CheckpointStore>,
    barriers: bool,
    delivery: Delivery,
    restored: Option<Restored>,
    /// The channel to the late sink, for the operators.
    late: Option<Arc<crate::event_time::late::LateRows>>,
}

impl Run<'_> {
    fn merge(&self, source: &str, into: &mut Positions, other: Positions) {
        match self.job.sources.iter().find(|s| s.name() == source).and_then(|s| s.checkpoint()) {
            Some(c) => c.merge(into, other),
            None => ferris_connectors::checkpoint::merge_earliest(into, other),
        }
    }

    fn source(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.job.sources.iter().find(|s| s.name() == name)
    }

    async fn run(
        mut self,
        opts: &mut RunOptions,
        out: &mut Outputs,
        mut fatal_rx: mpsc::UnboundedReceiver<String>,
        mut sink_rx: mpsc::UnboundedReceiver<SinkEvent>,
        report: &mut JobReport,
    ) -> Result<Option<Vec<Part>>, String> {
        let job = self.job;
        let name = job.spec.name.clone();
        let (leaf_tx, mut leaf_rx) = mpsc::unbounded_channel::<LeafEvent>();
        let (op_tx, mut op_rx) = mpsc::unbounded_channel::<OperatorEvent>();
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<BarrierRequest>();
        let (write_tx, mut write_rx) = mpsc::unbounded_channel::<(u64, Result<(Manifest, u64), String>)>();
        // the task context: checkpoints' context for our operators and the source leaves
        let mut state = job.ctx.state();
        let runtime = BarrierRuntime::new(leaf_tx);
        if self.barriers {
            let ids = job.plan_checkpoints.operators.iter().map(|o| (o.address, o.id)).collect();
            let states = self.restored.as_mut().map(|r| std::mem::take(&mut r.states)).unwrap_or_default();
            let context =
                CheckpointContext { runtime: Arc::clone(&runtime), ids, restored: std::sync::Mutex::new(states), events: op_tx, positions: HashMap::new() };
            state.config_mut().set_extension(Arc::new(context));
        }
        let notes = (!self.cfg.dir.contains("://")).then(|| std::path::Path::new(&self.cfg.dir).join("handover"));
        let handing_over = Arc::new(std::sync::Mutex::new(None));
        state.config_mut().set_extension(Arc::new(JobBarriers(Arc::new(Requests {
            tx: req_tx,
            handing_over: Arc::clone(&handing_over),
            replays: self.replays(),
            notes,
            runtime: Arc::clone(&runtime),
        }))));
        if let Some(late) = &self.late {
            state.config_mut().set_extension(Arc::clone(late));
        }
        let task_ctx = Arc::new(datafusion::execution::TaskContext::from(&state));
        // text read as views is made plain where the partitions are read, in parallel, when a
        // sink wants it so (the sink's own copy, on its one task, then finds none left)
        let plain = out.sinks.iter().any(|s| !s.takes_text_views);
        // every output partition, read by a task of its own (the runner's inputs)
        let mut parts = Vec::new();
        for p in 0..job.plan.output_partitioning().partition_count() {
            let input = ScopedInput::execute(|| job.plan.execute(p, Arc::clone(&task_ctx))).map_err(|e| describe_datafusion_error(&e))?;
            let scope = input.scope();
            let (tx, rx) = mpsc::channel(2);
            let task = datafusion::common::runtime::SpawnedTask::spawn(pump(input, scope, tx, plain));
            parts.push(Part { rx, blocked: None, ended: false, _task: task });
        }
        let first_id = match &self.store {
            Some(s) => s.complete().await.map_err(ck)?.last().copied().unwrap_or(0).max(self.restored.as_ref().map_or(0, |r| r.manifest.checkpoint)) + 1,
            None => 1,
        };
        let open_sinks: Vec<usize> = out.sinks.iter().enumerate().filter(|(_, s)| s.is_open()).map(|(i, _)| i).collect();
        let mut coord = Coordinator::new(first_id, if self.barriers { runtime.source_leaves() } else { 0 }, job.plan_checkpoints.operators.len(), open_sinks);
        if !self.barriers {
            coord.ops = 0;
        }
        if runtime.has_unscoped_leaves() && self.barriers {
            warn!(job = %name, "a source is read outside the job's barrier scopes: checkpoints cannot complete");
        }
        // stateless jobs take their barriers as often as their sources like to commit
        let interval = if job.plan_checkpoints.operators.is_empty() {
            job.sources.iter().filter_map(|s| s.checkpoint().and_then(|c| c.commit_interval())).min().map_or(self.cfg.interval, |i| i.min(self.cfg.interval))
        } else {
            self.cfg.interval
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut committing: Option<Committing> = None;
        let mut writing = false;
        // the checkpoint being written is the one at the end of the input
        let mut writing_last = false;
        // stop requested: the deadline, and the last barrier started before the request (the
        // job stops once a newer one is committed)
        let mut stopping: Option<(Instant, u64)> = None;
        // every source resumes from its checkpointed positions: what comes after the stop's
        // last barrier is read again by the next run instead of being written twice
        let all_resume = job.sources.iter().all(|s| s.checkpoint().is_some());
        let mut past_last_barrier = false;
        let mut stop_alive = true;
        let mut input_done = false;
        let mut last_done = false;
        let mut warned_slow = false;
        loop {
            // a complete checkpoint is written (state, then the manifest last)
            if !writing && committing.is_none() && coord.complete() {
                writing = true;
                writing_last = coord.pending.as_ref().is_some_and(|p| p.last);
                let manifest_parts = self.manifest_parts(&mut coord);
                match (&self.store, manifest_parts) {
                    (Some(store), (n, manifest, tables)) => {
                        let store = store.clone();
                        let tx = write_tx.clone();
                        let limit = self.cfg.checkpoint_timeout;
                        tokio::spawn(async move {
                            let r = match tokio::time::timeout(limit, write_checkpoint(&store, manifest, tables)).await {
                                Ok(r) => r,
                                Err(_) => Err(format!("writing its state and manifest did not finish within {limit:?} ('checkpoint.timeout')")),
                            };
                            let _ = tx.send((n, r));
                        });
                    }
                    (None, (n, manifest, _)) => {
                        let _ = write_tx.send((n, Ok((manifest, 0))));
                    }
                }
            }
            if last_done || (input_done && !self.cfg.enabled) {
                break;
            }
            if let Some((deadline, _)) = stopping {
                if Instant::now() >= deadline {
                    warn!(job = %name, "stopping without a last checkpoint: it did not complete within {:?} ('stop.timeout') ({})", self.cfg.stop_timeout, coord.missing().map(|m| m.join(", ")).unwrap_or_default());
                    break;
                }
            }
            if let Some(p) = &coord.pending {
                if !warned_slow && p.started.elapsed() > (interval * 10).max(Duration::from_secs(60)) {
                    warned_slow = true;
                    warn!(job = %name, "checkpoint {} has waited {}s for: {}", p.n, p.started.elapsed().as_secs(), coord.missing().map(|m| m.join(", ")).unwrap_or_default());
                }
            }
            let can_start = self.barriers && coord.pending.is_none() && committing.is_none() && !writing && !input_done && barriers_allowed(&handing_over);
            // a stop waits for its last checkpoint until `stop.timeout`, even when nothing comes
            let stop_at = stopping.map(|(deadline, _)| tokio::time::Instant::from_std(deadline));
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {}
                changed = opts.stop.changed(), if stop_alive && stopping.is_none() => {
                    if changed.is_err() {
                        stop_alive = false;
                    } else if *opts.stop.borrow() {
                        info!(job = %name, "stop requested: flushing sinks");
                        report.stopped = true;
                        if !self.barriers {
                            break;
                        }
                        stopping = Some((Instant::now() + self.cfg.stop_timeout, coord.next.saturating_sub(1)));
                        if can_start {
                            self.start_barrier(&mut coord, &runtime, &waiting, &mut warned_slow);
                        }
                    }
                }
                Some(msg) = fatal_rx.recv() => return Err(msg),
                Some(ev) = leaf_rx.recv() => match ev {
                    LeafEvent::Passed { leaf, barrier, source, partition, positions } => coord.leaf_passed(leaf, barrier, (source, partition, positions)),
                    LeafEvent::Finished { leaf, source, partition, positions } => coord.leaf_finished(leaf, (source, partition, positions)),
                },
                Some(ev) = op_rx.recv() => match ev {
                    OperatorEvent::Snapshot { operator, barrier, state } => coord.snapshot(operator, barrier, state),
                    OperatorEvent::Finished { operator } => coord.op_finished(operator),
                },
                Some(ev) = sink_rx.recv() => match ev {
                    SinkEvent::Prepared { sink, n, result: Ok(prepared) } => coord.prepared(sink, n, prepared),
                    SinkEvent::Prepared { sink, n, result: Err(e) } => {
                        let msg = format!("sink '{}' could not prepare checkpoint {n}: {e}", out.sinks[sink].name);
                        if self.delivery == Delivery::ExactlyOnce {
                            return Err(msg);
                        }
                        if past_last_barrier {
                            // what came after the stop's last barrier was not written: without
                            // this checkpoint, nothing more is committed and it is read again
                            return Err(format!("the last checkpoint failed: {msg}"));
                        }
                        if runtime.is_replay(n) {
                            // the operators dropped their open windows for a hand-over: a
                            // restart from the last good checkpoint has them
                            return Err(format!("the checkpoint of a Kafka hand-over failed: {msg}"));
                        }
                        warn!(job = %name, "{msg}: the checkpoint is skipped");
                        report.failed_checkpoints += 1;
                        coord.pending = None;
                    }
                    SinkEvent::Committed { sink, n, result } => {
                        if let Err(e) = result {
                            let msg = format!("sink '{}' could not commit checkpoint {n}: {e}", out.sinks[sink].name);
                            if self.delivery == Delivery::ExactlyOnce {
                                return Err(msg);
                            }
                            warn!(job = %name, "{msg}");
                        }
                        if let Some(c) = committing.as_mut().filter(|c| c.n == n) {
                            c.waiting.retain(|s| *s != sink);
                            if c.waiting.is_empty() {
                                if let Some(c) = committing.take() {
                                    let n = c.n;
                                    let done = self.finish_commit(c, out, &mut waiting, &handing_over, stopping.is_some() || input_done, report).await;
                                    if done.last || stopping.is_some_and(|(_, after)| n > after) {
                                        last_done = true;
                                    }
                                }
                            }
                        }
                    }
                },
                Some(request) = req_rx.recv() => {
                    // a rebalance gives partitions away: a barrier now, newer than any in flight
                    let after = coord.pending.as_ref().map_or(coord.next.saturating_sub(1), |p| p.n);
                    waiting.push(Waiting { request, after });
                    if can_start {
                        self.start_barrier(&mut coord, &runtime, &waiting, &mut warned_slow);
                    }
                }
                Some((n, written)) = write_rx.recv() => {
                    writing = false;
                    match written {
                        Ok((manifest, bytes)) => {
                            report.checkpoints += 1;
                            if let Some(p) = coord.pending.as_ref().filter(|p| p.n == n) {
                                let ms = p.started.elapsed().as_millis() as u64;
                                report.checkpoint_max_ms = report.checkpoint_max_ms.max(ms);
                                report.checkpoint_total_ms += ms;
                            }
                            report.checkpoint_bytes = bytes;
                            debug!(job = %name, "checkpoint {n} written");
                            let sources = Arc::new(manifest.sources.clone());
                            let finals = out.broadcast(|s| s.commit_is_final, || SinkMsg::Commit(n, Arc::clone(&sources))).await;
                            let c = Committing { n, last: writing_last, manifest, sources, waiting: finals };
                            if c.waiting.is_empty() {
                                let done = self.finish_commit(c, out, &mut waiting, &handing_over, stopping.is_some() || input_done, report).await;
                                if done.last || stopping.is_some_and(|(_, after)| n > after) {
                                    last_done = true;
                                }
                            } else {
                                committing = Some(c);
                            }
                        }
                        Err(e) => {
                            report.failed_checkpoints += 1;
                            error!(job = %name, "checkpoint {n} failed: {e}; nothing after checkpoint {} is committed until one succeeds", n.saturating_sub(1));
                            if coord.pending.as_ref().is_some_and(|p| p.last) || stopping.is_some() {
                                return Err(format!("the last checkpoint failed: {e}"));
                            }
                            if runtime.is_replay(n) {
                                return Err(format!("the checkpoint of a Kafka hand-over failed: {e}"));
                            }
                        }
                    }
                    if coord.pending.as_ref().is_some_and(|p| p.n == n) {
                        coord.pending = None;
                    }
                }
                // while a source seeks back (no barrier meanwhile), look again soon: a stop or a
                // hand-over may be waiting for the next barrier
                _ = tokio::time::sleep(Duration::from_millis(100)), if !can_start && self.barriers && coord.pending.is_none() && committing.is_none() && !writing && !input_done => {}
                _ = tick.tick(), if can_start => {
                    self.start_barrier(&mut coord, &runtime, &waiting, &mut warned_slow);
                }
                (i, msg) = next_part(&mut parts) => match msg {
                    // after the stop's last barrier: read again by the next run (their positions
                    // are not committed), so not written now
                    Some(PartitionMsg::Batch(_)) if past_last_barrier => {}
                    Some(PartitionMsg::Batch(batch)) => out.deliver(batch).await,
                    Some(PartitionMsg::Barrier(n)) => {
                        parts[i].blocked = Some(n);
                        self.check_aligned(&mut parts, &mut coord, out).await;
                        if let (Some((_, after)), Some(p)) = (stopping, coord.pending.as_ref()) {
                            past_last_barrier |= p.n > after && p.aligned && all_resume;
                        }
                    }
                    Some(PartitionMsg::Error(e)) => return Err(e),
                    None | Some(PartitionMsg::End) => {
                        parts[i].ended = true;
                        self.check_aligned(&mut parts, &mut coord, out).await;
                        if parts.iter().all(|p| p.ended) {
                            input_done = true;
                            if self.cfg.enabled && coord.pending.is_none() && committing.is_none() && !writing {
                                self.start_last(&mut coord, out).await;
                            }
                        }
                    }
                },
            }
            // after a barrier in flight at the end of the input, the last checkpoint
            if input_done && self.cfg.enabled && coord.pending.is_none() && committing.is_none() && !writing && !last_done {
                self.start_last(&mut coord, out).await;
            }
            // a stop or a rebalance waits for the next barrier
            let wanted = stopping.is_some() || waiting.iter().any(|w| w.after >= coord.next.saturating_sub(1));
            if wanted && self.barriers && coord.pending.is_none() && committing.is_none() && !writing && !input_done && barriers_allowed(&handing_over) {
                self.start_barrier(&mut coord, &runtime, &waiting, &mut warned_slow);
            }
        }
        Ok(Some(parts))
    }

    fn start_barrier(&self, coord: &mut Coordinator, runtime: &Arc<BarrierRuntime>, waiting: &[Waiting], warned: &mut bool) {
        let n = coord.start(false);
        *warned = false;
        let mut marked = false;
        for w in waiting.iter().filter(|w| w.request.replay && w.after < n) {
            marked |= w.request.state.compare_exchange(REQUEST_WAITING, REQUEST_MARKED, Ordering::AcqRel, Ordering::Acquire).is_ok()
                || w.request.state.load(Ordering::Acquire) == REQUEST_MARKED;
        }
        if marked {
            // a hand-over of a job that replays: the operators drop their open windows here
            debug!(job = %self.job.spec.name, "barrier {n}: open windows are read again");
            runtime.mark_replay(n);
        }
        debug!(job = %self.job.spec.name, "barrier {n}");
        runtime.trigger(n);
    }

    /// Whether the job rebuilds its windows by reading rows again when a Kafka source hands
    /// partitions over (simple mode, one source, every row through a `TUMBLE` or `HOP` window).
    fn replays(&self) -> bool {
        self.barriers && self.job.sources.len() == 1 && self.job.plan_checkpoints.replays_for(&self.job.spec, self.cfg.mode)
    }

    /// The event time before which every row is in windows emitted, and how far the operators'
    /// inputs had got, from the operators' state in `manifest`, in a job that replays.
    fn replay_from(&self, manifest: &Manifest) -> Option<ReplayTime> {
        if !self.replays() || manifest.operators.is_empty() {
            return None;
        }
        let min_of = |key: &str| -> Option<i64> {
            manifest.operators.iter().map(|o| o.meta.get(key).and_then(serde_json::Value::as_i64)).collect::<Option<Vec<i64>>>()?.into_iter().min()
        };
        // (no hold: `TUMBLE` windows, or a checkpoint of an older version — a process taking a
        // partition over then has nothing to wait for)
        Some(ReplayTime { from: min_of("replay_from")?, hold: min_of("replay_hold").unwrap_or(i64::MIN) })
    }

    /// The checkpoint at the end of the input: everything has ended; the sinks prepare.
    async fn start_last(&self, coord: &mut Coordinator, out: &mut Outputs) {
        let n = coord.start(true);
        coord.aligned(n);
        let got = out.broadcast(|_| true, || SinkMsg::Prepare(n)).await;
        coord.sinks.retain(|s| got.contains(s));
    }

    /// When every partition has delivered the barrier (or ended), the sinks prepare it and the
    /// partitions go on. A barrier started once every partition had ended (the timer's tick
    /// chosen before the partitions' last messages were read) is delivered by none of them: it
    /// is aligned by their ends, every row before it out, or the job would wait for it, and
    /// for its last checkpoint, forever.
    async fn check_aligned(&self, parts: &mut [Part], coord: &mut Coordinator, out: &mut Outputs) {
        let n = match parts.iter().find_map(|p| p.blocked) {
            Some(n) => n,
            None => match coord.pending.as_ref() {
                Some(p) if !p.aligned && !p.last && parts.iter().all(|part| part.ended) => p.n,
                _ => return,
            },
        };
        if !parts.iter().all(|p| p.ended || p.blocked == Some(n)) {
            return;
        }
        coord.aligned(n);
        let got = out.broadcast(|_| true, || SinkMsg::Prepare(n)).await;
        coord.sinks.retain(|s| got.contains(s));
        for p in parts.iter_mut() {
            p.blocked = None;
        }
    }

    /// The manifest of the complete checkpoint in flight, and its state tables to write.
    fn manifest_parts(&self, coord: &mut Coordinator) -> (u64, Manifest, Vec<(String, crate::checkpoint::state::StateTable)>) {
        let sources = coord.positions(|s, into, other| self.merge(s, into, other));
        let p = coord.pending.as_ref();
        let n = p.map_or(0, |p| p.n);
        let last = p.is_some_and(|p| p.last);
        let mut operators = Vec::new();
        let mut tables = Vec::new();
        if let Some(p) = p {
            for op in &self.job.plan_checkpoints.operators {
                let state = p.ops.get(&op.id).cloned().unwrap_or_default();
                let mut entry = OperatorEntry { id: op.id, shape: op.shape.clone(), meta: state.meta.clone(), tables: BTreeMap::new() };
                for t in state.tables {
                    let file = format!("op-{}-{}.arrow", op.id, t.name);
                    entry.tables.insert(t.name.clone(), TableEntry { file: file.clone(), rows: t.batch.num_rows(), key_groups: Vec::new() });
                    tables.push((file, t));
                }
                operators.push(entry);
            }
        }
        let sinks = p
            .map(|p| self.job.spec.sinks.iter().enumerate().filter_map(|(i, rel)| p.prepared.get(&i).map(|prep| (rel.name.clone(), prep.clone()))).collect())
            .unwrap_or_default();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            job: self.job.spec.name.clone(),
            checkpoint: n,
            created_ms: chrono::Utc::now().timestamp_millis(),
            mode: self.cfg.mode.name().to_string(),
            // a source that failed was not read to its end
            finished: last && self.job.source_failures.all().is_empty(),
            operators,
            sources,
            sinks,
        };
        (n, manifest, tables)
    }

    /// After the sinks that commit first: the other sinks commit, the sources commit their
    /// positions, old checkpoints go, and rebalances waiting for this barrier are answered.
    async fn finish_commit(
        &self,
        c: Committing,
        out: &mut Outputs,
        waiting: &mut Vec<Waiting>,
        handing_over: &std::sync::Mutex<Option<Instant>>,
        last: bool,
        report: &mut JobReport,
    ) -> CommitDone {
        let n = c.n;
        out.broadcast(|s| !s.commit_is_final, || SinkMsg::Commit(n, Arc::clone(&c.sources))).await;
        let replay_from = self.replay_from(&c.manifest);
        let commit = move |cp: &dyn ferris_connectors::checkpoint::SourceCheckpoint, positions: &Positions, last: bool| match replay_from {
            Some(t) => cp.commit_replayable(positions, last, t),
            None => cp.commit(positions, last),
        };
        for (source, positions) in &c.manifest.sources {
            if let Some(cp) = self.source(source).and_then(|s| s.checkpoint()) {
                if last {
                    // the last commit waits for the broker's answer (a bounded time): off the
                    // runtime's workers, so that other jobs and the REST API go on meanwhile
                    let positions = positions.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || commit(cp.as_ref(), &positions, true)).await {
                        warn!(job = %self.job.spec.name, "source '{source}': the last commit of its positions failed: {e}");
                    }
                } else if replay_from.is_some() {
                    // a replayable commit also keeps a note for the job's other processes (a
                    // file): off the runtime's workers, and done before a hand-over is answered
                    let positions = positions.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || commit(cp.as_ref(), &positions, false)).await {
                        warn!(job = %self.job.spec.name, "source '{source}': the commit of its positions failed: {e}");
                    }
                } else {
                    commit(cp.as_ref(), positions, last);
                }
            }
        }
        let (answered, still): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(waiting).into_iter().partition(|w| w.after < n);
        *waiting = still;
        for w in answered {
            if w.request.state.load(Ordering::Acquire) == REQUEST_MARKED {
                // no barrier until the source has sought its partitions back
                *handing_over.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            }
            let _ = w.request.reply.send(c.manifest.sources.get(&w.request.source).cloned().map(|p| (p, replay_from)));
        }
        if let Some(store) = &self.store {
            let store = store.clone();
            let retain = self.cfg.retain;
            let job = self.job.spec.name.clone();
            tokio::spawn(async move {
                if let Err(e) = store.prune(retain).await {
                    warn!(job = %job, "pruning old checkpoints: {e}");
                }
            });
        }
        let _ = report;
        CommitDone { last: c.last }
    }
}

/// What a finished commit says.
struct CommitDone {
    /// It was the checkpoint at the end of the input.
    last: bool,
}

/// Drives one output partition: its rows and barriers to the runner; the partition goes on
/// after a barrier once its marker is in the channel (the runner aligns the partitions).
/// `plain`: text read as views is copied out into plain text here.
async fn pump(mut input: ScopedInput, scope: Arc<crate::checkpoint::barrier::Scope>, tx: mpsc::Sender<PartitionMsg>, plain: bool) {
    loop {
        let msg = match input.next().await {
            Some(Ok(InputEvent::Batch(b))) if plain => match ferris_connectors::text_views::plain_batch(&b) {
                Ok(b) => PartitionMsg::Batch(b),
                Err(e) => {
                    let _ = tx.send(PartitionMsg::Error(format!("the text of the rows to write: {e}"))).await;
                    return;
                }
            },
            Some(Ok(InputEvent::Batch(b))) => PartitionMsg::Batch(b),
            Some(Ok(InputEvent::Watermark(_))) => continue,
            Some(Ok(InputEvent::Barrier(n))) => {
                if tx.send(PartitionMsg::Barrier(n)).await.is_err() {
                    return;
                }
                scope.release(n);
                continue;
            }
            Some(Err(e)) => {
                let _ = tx.send(PartitionMsg::Error(describe_datafusion_error(&e))).await;
                return;
            }
            None => {
                let _ = tx.send(PartitionMsg::End).await;
                return;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Writes a checkpoint: its state tables, then its manifest, last.
async fn write_checkpoint(
    store: &CheckpointStore,
    mut manifest: Manifest,
    tables: Vec<(String, crate::checkpoint::state::StateTable)>,
) -> Result<(Manifest, u64), String> {
    let mut total = 0u64;
    for (file, table) in tables {
        let (bytes, groups) = encode(&table).map_err(ck)?;
        total += bytes.len() as u64;
        store.put(manifest.checkpoint, &file, bytes).await.map_err(ck)?;
        for op in manifest.operators.iter_mut() {
            if let Some(t) = op.tables.get_mut(&table.name).filter(|t| t.file == file) {
                t.key_groups = groups.clone();
            }
        }
    }
    store.write_manifest(&manifest).await.map_err(ck)?;
    Ok((manifest, total))
}

/// How long a finished job waits for its sources to close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Drops a job's streams and plan (its sources' clients) on a thread of its own and waits for
/// that a bounded time. Closing a Kafka consumer leaves its group and can block for as long as
/// the broker is away; a stopping job must not hang on it, nor block the runtime's threads.
async fn close_bounded<T: Send + 'static>(job: &str, parts: T) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("ferris-close".into()).spawn(move || {
        drop(parts);
        let _ = tx.send(());
    });
    if spawned.is_err() {
        warn!(job = %job, "cannot start a thread to close the sources");
        return;
    }
    if tokio::time::timeout(CLOSE_WAIT, rx).await.is_err() {
        warn!(job = %job, "the sources did not close within {}s (a Kafka consumer leaving its group while the broker is away): not waiting longer", CLOSE_WAIT.as_secs());
    }
}

/// The sum of the counter `name` over every operator of `plan` (e.g. `late_rows_dropped` of
/// the window operators).
pub fn operator_counter(plan: &Arc<dyn ExecutionPlan>, name: &str) -> u64 {
    let own = plan.metrics().and_then(|m| m.sum_by_name(name)).map_or(0, |v| v.as_usize() as u64);
    own + plan.children().into_iter().map(|c| operator_counter(c, name)).sum::<u64>()
}
