//! Fan-out: each sink runs on its own task behind a bounded queue. A slow sink back-pressures
//! the job; a failing sink is handled by the failure strategy and does not stop the others.
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO archive, audit, nowhere WITH (
//!   'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '3', 'retry_backoff' = '100ms', …);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use ferris_connectors::metrics::ConnectorMetrics;
use ferris_connectors::{ConnectorError, FailureStrategy, Sink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// Batches a sink's queue holds before the job waits for it.
pub const DEFAULT_QUEUE_SIZE: usize = 4;

/// What the runner sends a sink task.
#[derive(Debug)]
pub enum SinkMsg {
    /// Rows to write.
    Batch(RecordBatch),
    /// Make everything written so far durable, then answer whether it is (a commit barrier).
    Flush(tokio::sync::oneshot::Sender<bool>),
}

/// The runner's handle on one sink task.
pub struct SinkHandle {
    /// The sink's name.
    pub name: String,
    /// Its queue; `None` once closed.
    pub tx: Option<mpsc::Sender<SinkMsg>>,
    /// True while its last write failed (or it could not be created).
    pub failed: Arc<AtomicBool>,
    /// Its counters.
    pub metrics: Arc<ConnectorMetrics>,
    /// The task; yields a fatal error under `FailBatch`.
    pub task: Option<JoinHandle<Result<(), String>>>,
}

impl SinkHandle {
    /// A sink that could not be created: failed from the start.
    pub fn failed(name: &str) -> Self {
        Self { name: name.to_string(), tx: None, failed: Arc::new(AtomicBool::new(true)), metrics: Arc::new(ConnectorMetrics::default()), task: None }
    }

    /// Starts the task driving `sink`. A fatal error (FailBatch) is also sent on `fatal`.
    pub fn spawn(job: &str, sink: Box<dyn Sink>, strategy: FailureStrategy, queue: usize, fatal: mpsc::UnboundedSender<String>) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let failed = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ConnectorMetrics::default());
        let name = sink.name().to_string();
        let task = tokio::spawn(drive(job.to_string(), sink, rx, strategy, Arc::clone(&failed), Arc::clone(&metrics), fatal));
        Self { name, tx: Some(tx), failed, metrics, task: Some(task) }
    }

    /// True when the sink can take batches.
    pub fn is_healthy(&self) -> bool {
        self.tx.is_some() && !self.failed.load(Ordering::Relaxed)
    }
}

/// How long written rows may wait in a sink's buffers once the stream goes quiet.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

async fn write_with_strategy(sink: &mut dyn Sink, batch: &RecordBatch, strategy: FailureStrategy) -> Result<(), ConnectorError> {
    let FailureStrategy::RetryWithBackoff { max_retries, backoff } = strategy else {
        return sink.write(batch).await;
    };
    let mut wait = backoff;
    let mut attempt = 0;
    loop {
        match sink.write(batch).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= max_retries => return Err(e),
            Err(e) => {
                attempt += 1;
                warn!(sink = sink.name(), attempt, "write failed, retrying in {}ms: {e}", wait.as_millis());
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}

async fn drive(
    job: String,
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<SinkMsg>,
    strategy: FailureStrategy,
    failed: Arc<AtomicBool>,
    metrics: Arc<ConnectorMetrics>,
    fatal: mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    // Rows written are flushed within FLUSH_EVERY once the stream goes quiet, so a reader of
    // the sink (a tailed file) sees them; under load the sink's own buffering decides.
    let mut dirty = false;
    let mut last_flush = std::time::Instant::now();
    // Sink write latency, for Prometheus (a no-op unless a recorder is installed: `serve`).
    let write_seconds = ::metrics::histogram!("ferris_job_sink_write_seconds", "job" => job.clone(), "sink" => sink.name().to_string());
    loop {
        let next = if dirty {
            match tokio::time::timeout(FLUSH_EVERY.saturating_sub(last_flush.elapsed()), rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Err(e) = sink.flush().await {
                        warn!(job = %job, sink = sink.name(), "flush failed: {e}");
                    }
                    dirty = false;
                    last_flush = std::time::Instant::now();
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let batch = match next {
            None => break,
            Some(SinkMsg::Batch(b)) => b,
            Some(SinkMsg::Flush(ack)) => {
                let ok = match sink.flush().await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(job = %job, sink = sink.name(), "flush failed: {e}");
                        false
                    }
                };
                dirty = false;
                last_flush = std::time::Instant::now();
                let _ = ack.send(ok);
                continue;
            }
        };
        let began = std::time::Instant::now();
        let written = write_with_strategy(sink.as_mut(), &batch, strategy).await;
        write_seconds.record(began.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                metrics.add_batch(batch.num_rows());
                failed.store(false, Ordering::Relaxed);
                if !dirty {
                    dirty = true;
                    last_flush = std::time::Instant::now();
                }
            }
            Err(e) => {
                metrics.add_errors(1);
                failed.store(true, Ordering::Relaxed);
                if strategy == FailureStrategy::FailBatch {
                    let msg = format!("sink '{}' failed a batch of {} rows: {e}", sink.name(), batch.num_rows());
                    error!(job = %job, "{msg}");
                    let _ = fatal.send(msg.clone());
                    let _ = sink.close().await;
                    return Err(msg);
                }
                error!(job = %job, sink = sink.name(), "batch of {} rows lost ({strategy}): {e}", batch.num_rows());
            }
        }
    }
    if let Err(e) = sink.close().await {
        metrics.add_errors(1);
        let msg = format!("sink '{}' failed to flush: {e}", sink.name());
        error!(job = %job, "{msg}");
        return Err(msg);
    }
    Ok(())
}
