//! The job runner: drives a planned job's output stream and fans every batch out to all sinks,
//! applies the failure strategy, falls back to stdout when every sink has failed, and stops
//! cleanly (sinks flushed) at the end of bounded input or on request (Ctrl-C).
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO a, b WITH ('failure_strategy' = 'LogAndContinue', …);
//! ```

pub mod fanout;
pub mod live;
pub mod progress;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::physical_plan::execute_stream;
use ferris_connectors::commit::CommitGate;
use ferris_connectors::stdout::StdoutSink;
use ferris_connectors::{FailureStrategy, Sink};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::connect::create_sink;
use crate::error::describe_datafusion_error;
use crate::planner::PlannedJob;
use fanout::{SinkHandle, SinkMsg, DEFAULT_QUEUE_SIZE};

/// How a job is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Show a progress line on stderr.
    pub progress: bool,
    /// Set to true to stop the job (sinks are flushed).
    pub stop: watch::Receiver<bool>,
    /// Where the job publishes its live counters (the job server), if anywhere.
    pub live: Option<Arc<live::LiveJob>>,
}

/// Counters of one source or sink at the end of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectorReport {
    /// Its name.
    pub name: String,
    /// Rows read or written.
    pub records: u64,
    /// Malformed records (source) or failed batches (sink).
    pub errors: u64,
    /// For sinks: true if it ended failed.
    pub failed: bool,
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
    /// Rows whose event time was null or unreadable, dropped by the window operators.
    pub untimed_rows: u64,
    /// State held by the streaming operators (windows, joins, event-time ordering) when the
    /// job ended, in bytes: zero after a bounded input, the live state of a stopped stream.
    pub state_bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// How long a stopping job waits for in-flight rows to reach the sinks before its last commit.
const STOP_DRAIN: Duration = Duration::from_secs(5);
/// How long a commit barrier may wait for every reader to go quiet before it is retried.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// The sinks of a running job, and the stdout fallback used once every sink has failed.
struct Outputs {
    name: String,
    sinks: Vec<SinkHandle>,
    fallback: Option<StdoutSink>,
    fallback_rows: u64,
    rows_out: Arc<AtomicU64>,
}

impl Outputs {
    /// Sends `batch` to every healthy sink (waiting while a queue is full: back-pressure).
    async fn deliver(&mut self, batch: arrow::record_batch::RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows_out.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut delivered = false;
        for s in self.sinks.iter_mut().filter(|s| s.is_healthy()) {
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

    /// Has every open sink flush what it was sent; true when all acknowledged.
    async fn flush_all(&mut self) -> bool {
        let mut waits = Vec::new();
        for s in self.sinks.iter().filter(|s| s.tx.is_some()) {
            let (ack, done) = tokio::sync::oneshot::channel();
            if let Some(tx) = &s.tx {
                if tx.send(SinkMsg::Flush(ack)).await.is_err() {
                    return false;
                }
            }
            waits.push(done);
        }
        let mut ok = true;
        for w in waits {
            ok &= w.await.unwrap_or(false);
        }
        if let Some(f) = &mut self.fallback {
            ok &= f.flush().await.is_ok();
        }
        ok
    }
}

/// Runs `job` to completion (bounded sources drained) or until `opts.stop` turns true.
pub async fn run_job(job: PlannedJob, mut opts: RunOptions) -> JobReport {
    let start = Instant::now();
    let name = job.spec.name.clone();
    let default_strategy = FailureStrategy::from_properties(&job.spec.options, FailureStrategy::default());
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let queue = job.spec.options.get_usize("sink.queue_size").ok().flatten().unwrap_or(DEFAULT_QUEUE_SIZE);
    let mut error: Option<String> = None;
    let mut sinks: Vec<SinkHandle> = Vec::new();
    let output_schema = job.plan.schema();
    for rel in &job.spec.sinks {
        let strategy = match &default_strategy {
            Ok(d) => FailureStrategy::from_properties(&rel.properties, *d),
            Err(e) => Err(ferris_connectors::ConnectorError::Other(e.to_string())),
        };
        let sink = create_sink(rel, &name).and_then(|s| s.check_schema(&output_schema).map(|()| s));
        match (sink, strategy) {
            (Ok(sink), Ok(strategy)) => {
                info!(job = %name, sink = %rel.name, "Successfully created sink '{}' ({})", rel.name, rel.connector);
                sinks.push(SinkHandle::spawn(&name, sink, strategy, queue, fatal_tx.clone()));
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!(job = %name, "Job '{name}' failed to create sinks: Failed to create sink '{}': {e}", rel.name);
                sinks.push(SinkHandle::failed(&rel.name));
            }
        }
    }
    drop(fatal_tx);

    let rows_out = Arc::new(AtomicU64::new(0));
    let _progress = opts.progress.then(|| progress::Progress::start(name.clone(), job.sources.iter().map(|s| s.metrics()).collect(), Arc::clone(&rows_out)));
    if let Some(l) = &opts.live {
        let live_sinks =
            sinks.iter().map(|s| live::LiveSink { name: s.name.clone(), metrics: Arc::clone(&s.metrics), failed: Arc::clone(&s.failed) }).collect();
        l.attach(Arc::clone(&rows_out), live_sinks, Arc::clone(&job.plan));
    }
    let mut out = Outputs { name: name.clone(), sinks, fallback: None, fallback_rows: 0, rows_out: Arc::clone(&rows_out) };
    let gates: Vec<Arc<CommitGate>> = job.sources.iter().filter_map(|s| s.commit_gate()).collect();
    let commit_every = gates.iter().map(|g| g.interval()).min().unwrap_or(Duration::from_secs(3600));
    let mut commit_tick = tokio::time::interval_at(tokio::time::Instant::now() + commit_every, commit_every);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut barrier_check = tokio::time::interval(Duration::from_millis(2));
    // When the open commit barrier was opened; None when no barrier is open.
    let mut barrier: Option<Instant> = None;
    let mut stopped = false;
    let mut stop_alive = true;
    let mut stop_deadline: Option<Instant> = None;
    // The query's stream, kept to be closed off the runtime at the end (see `close_bounded`).
    let mut finished_stream = None;
    match execute_stream(Arc::clone(&job.plan), job.ctx.task_ctx()) {
        Err(e) => error = Some(describe_datafusion_error(&e)),
        Ok(mut stream) => {
            loop {
                tokio::select! {
                    biased;
                    changed = opts.stop.changed(), if stop_alive && stop_deadline.is_none() => {
                        if changed.is_err() {
                            stop_alive = false; // nobody can ask us to stop any more
                        } else if *opts.stop.borrow() {
                            info!(job = %name, "stop requested: flushing sinks");
                            stopped = true;
                            if gates.is_empty() {
                                break;
                            }
                            // A last barrier, so that what the sinks received is committed.
                            stop_deadline = Some(Instant::now() + STOP_DRAIN);
                            if barrier.is_none() {
                                gates.iter().for_each(|g| g.open());
                                barrier = Some(Instant::now());
                            }
                        }
                    }
                    Some(msg) = fatal_rx.recv() => {
                        error = Some(msg);
                        break;
                    }
                    _ = commit_tick.tick(), if !gates.is_empty() && barrier.is_none() => {
                        gates.iter().for_each(|g| g.open());
                        barrier = Some(Instant::now());
                    }
                    // a rebalance is giving partitions away: drain and commit them now
                    _ = any_requested(&gates), if !gates.is_empty() && barrier.is_none() => {
                        gates.iter().for_each(|g| g.open());
                        barrier = Some(Instant::now());
                    }
                    _ = barrier_check.tick(), if barrier.is_some() => {
                        let quiet = gates.iter().all(|g| g.quiet());
                        if quiet {
                            // Nothing left the readers since: drain what is in flight, then have
                            // every sink acknowledge before committing.
                            let mut ended = false;
                            while let Some(next) = stream.next().now_or_never() {
                                match next {
                                    Some(Ok(batch)) => out.deliver(batch).await,
                                    Some(Err(e)) => {
                                        error = Some(describe_datafusion_error(&e));
                                        ended = true;
                                        break;
                                    }
                                    None => {
                                        ended = true;
                                        break;
                                    }
                                }
                            }
                            let acked = error.is_none() && out.flush_all().await;
                            if stop_deadline.is_some() {
                                gates.iter().for_each(|g| g.release_final(acked));
                            } else {
                                gates.iter().for_each(|g| g.release(acked));
                            }
                            barrier = None;
                            if ended || stop_deadline.is_some() {
                                break;
                            }
                        } else if let Some(opened) = barrier {
                            if let Some(deadline) = stop_deadline {
                                if Instant::now() >= deadline {
                                    warn!(job = %name, "stopping without a last commit: rows still in flight after {}s", STOP_DRAIN.as_secs());
                                    gates.iter().for_each(|g| g.release(false));
                                    break;
                                }
                            } else if opened.elapsed() > BARRIER_TIMEOUT.max(commit_every) {
                                // An operator is not reading some input (join alignment): try later.
                                debug!(job = %name, "commit barrier timed out; retrying at the next interval");
                                gates.iter().for_each(|g| g.release(false));
                                barrier = None;
                            }
                        }
                    }
                    next = stream.next() => match next {
                        None => break,
                        Some(Err(e)) => {
                            error = Some(describe_datafusion_error(&e));
                            break;
                        }
                        Some(Ok(batch)) => out.deliver(batch).await,
                    }
                }
            }
            finished_stream = Some(stream);
        }
    }
    gates.iter().for_each(|g| {
        g.release(false);
        g.close();
    });
    let Outputs { mut sinks, fallback, fallback_rows, .. } = out;
    // Close every queue, then wait for the sinks to flush.
    for s in sinks.iter_mut() {
        s.tx = None;
    }
    for s in sinks.iter_mut() {
        if let Some(task) = s.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    error.get_or_insert(msg);
                }
                Err(e) => {
                    error.get_or_insert(format!("sink '{}' panicked: {e}", s.name));
                }
            }
        }
    }
    if let Some(mut out) = fallback {
        let _ = out.close().await;
    }
    let report = JobReport {
        name,
        rows_out: rows_out.load(Ordering::Relaxed),
        sources: job
            .sources
            .iter()
            .map(|s| ConnectorReport { name: s.name().to_string(), records: s.metrics().records(), errors: s.metrics().errors(), failed: false })
            .collect(),
        sinks: sinks
            .iter()
            .map(|s| ConnectorReport {
                name: s.name.clone(),
                records: s.metrics.records(),
                errors: s.metrics.errors(),
                failed: s.failed.load(Ordering::Relaxed),
            })
            .collect(),
        fallback_rows,
        elapsed: start.elapsed(),
        stopped,
        late_rows: operator_counter(&job.plan, "late_rows_dropped"),
        untimed_rows: operator_counter(&job.plan, "rows_without_event_time"),
        state_bytes: operator_counter(&job.plan, "state_bytes"),
        error,
    };
    close_bounded(&report.name, (finished_stream, job)).await;
    report
}

/// Resolves when a source asks for a barrier now (never, without gates).
async fn any_requested(gates: &[Arc<CommitGate>]) {
    if gates.is_empty() {
        return futures::future::pending().await;
    }
    futures::future::select_all(gates.iter().map(|g| Box::pin(g.requested()))).await;
}

/// How long a finished job waits for its sources to close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Drops a job's stream and plan (its sources' clients) on a thread of its own and waits for
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
pub fn operator_counter(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>, name: &str) -> u64 {
    let own = plan.metrics().and_then(|m| m.sum_by_name(name)).map_or(0, |v| v.as_usize() as u64);
    own + plan.children().into_iter().map(|c| operator_counter(c, name)).sum::<u64>()
}
