//! Fan-out: each sink runs on its own task behind a bounded queue. A slow sink back-pressures
//! the job; a failing sink is handled by the failure strategy and does not stop the others.
//! At a checkpoint barrier each sink prepares what it wrote; when the checkpoint is complete it
//! commits (see [`ferris_connectors::Sink::prepare`]).
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO archive, audit, nowhere WITH (
//!   'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '3', 'retry_backoff' = '100ms', …);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use ferris_connectors::checkpoint::Prepared;
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
    /// Checkpoint barrier `n`: prepare everything written so far, then answer.
    Prepare(u64),
    /// Checkpoint `n` is complete: commit it, then answer. With every source's positions at
    /// it, for a sink that commits some inside its transaction.
    Commit(u64, Arc<ferris_connectors::checkpoint::SourcePositions>),
}

/// What a sink task tells the runner.
#[derive(Debug)]
pub enum SinkEvent {
    /// Sink `sink` (its index) prepared checkpoint `n`.
    Prepared {
        /// The sink's index.
        sink: usize,
        /// The checkpoint.
        n: u64,
        /// What it prepared (for the manifest), or why it could not.
        result: Result<Option<Prepared>, String>,
    },
    /// Sink `sink` committed checkpoint `n`.
    Committed {
        /// The sink's index.
        sink: usize,
        /// The checkpoint.
        n: u64,
        /// Or why it could not.
        result: Result<(), String>,
    },
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
    /// Its commit cannot be redone after a crash (a Kafka transaction): committed first.
    pub commit_is_final: bool,
    /// It takes text as views ([`Sink::takes_text_views`]): the blackhole.
    pub takes_text_views: bool,
}

impl SinkHandle {
    /// Starts the task driving `sink` (the job's sink number `index`). A fatal error
    /// (FailBatch) is also sent on `fatal`; prepare and commit answers on `events`. Each call
    /// into the sink may take `limit` (`sink.write.timeout`).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        job: &str,
        index: usize,
        mut sink: Box<dyn Sink>,
        strategy: FailureStrategy,
        queue: usize,
        limit: std::time::Duration,
        fatal: mpsc::UnboundedSender<String>,
        events: mpsc::UnboundedSender<SinkEvent>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let failed = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ConnectorMetrics::default());
        sink.attach_metrics(Arc::clone(&metrics));
        let name = sink.name().to_string();
        let commit_is_final = sink.commit_is_final();
        let takes_text_views = sink.takes_text_views();
        let ctx = SinkTask { job: job.to_string(), index, strategy, failed: Arc::clone(&failed), metrics: Arc::clone(&metrics), fatal, events, limit };
        let task = tokio::spawn(drive(ctx, sink, rx));
        Self { name, tx: Some(tx), failed, metrics, task: Some(task), commit_is_final, takes_text_views }
    }

    /// True when the sink takes batches: its queue is open. A sink whose last write failed
    /// still gets the next batches (the failure strategy decided about the failed one).
    pub fn is_open(&self) -> bool {
        self.tx.is_some()
    }
}

/// How long written rows may wait in a sink's buffers once the stream goes quiet.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `call` within `limit` (`sink.write.timeout`), or an error naming the key. A call cut off
/// may have done part of its work (a request already sent).
async fn bounded<T>(limit: std::time::Duration, what: &str, call: impl std::future::Future<Output = Result<T, ConnectorError>>) -> Result<T, ConnectorError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(ConnectorError::Other(format!("{what} did not finish within {limit:?} ('sink.write.timeout')"))),
    }
}

/// Rows a sink that groups its writes ([`Sink::groups_writes`]) is handed at once, at most.
const GROUP_ROWS: usize = 1 << 20;

/// `first` and the batches queued behind it in `rx` (for a sink that groups its writes), up to
/// [`GROUP_ROWS`]; a checkpoint message met on the way is handed back, to be handled after them.
fn queued_with(first: RecordBatch, rx: &mut mpsc::Receiver<SinkMsg>, groups: bool) -> (Vec<RecordBatch>, Option<SinkMsg>) {
    let mut rows = first.num_rows();
    let mut batches = vec![first];
    if !groups {
        return (batches, None);
    }
    while rows < GROUP_ROWS {
        match rx.try_recv() {
            Ok(SinkMsg::Batch(b)) => {
                rows += b.num_rows();
                batches.push(b);
            }
            Ok(other) => return (batches, Some(other)),
            Err(_) => break,
        }
    }
    (batches, None)
}

async fn write_with_strategy(
    sink: &mut dyn Sink,
    batches: &[RecordBatch],
    strategy: FailureStrategy,
    limit: std::time::Duration,
) -> Result<(), ConnectorError> {
    let mut attempt = 0;
    loop {
        let call = async {
            match batches {
                [one] => sink.write(one).await,
                all => sink.write_all(all).await,
            }
        };
        let e = match bounded(limit, "the write", call).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(wait) = strategy.retry_wait(attempt) else { return Err(e) };
        attempt += 1;
        warn!(sink = sink.name(), attempt, "write failed, retrying in {}ms: {e}", wait.as_millis());
        tokio::time::sleep(wait).await;
    }
}

struct SinkTask {
    job: String,
    index: usize,
    strategy: FailureStrategy,
    failed: Arc<AtomicBool>,
    metrics: Arc<ConnectorMetrics>,
    fatal: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedSender<SinkEvent>,
    /// `sink.write.timeout`.
    limit: std::time::Duration,
}

async fn drive(t: SinkTask, mut sink: Box<dyn Sink>, mut rx: mpsc::Receiver<SinkMsg>) -> Result<(), String> {
    let job = t.job.as_str();
    // Rows written are flushed within FLUSH_EVERY once the stream goes quiet, so a reader of
    // the sink (a tailed file) sees them; under load the sink's own buffering decides.
    let mut dirty = false;
    let mut last_flush = std::time::Instant::now();
    // Sink write latency, for Prometheus (a no-op unless a recorder is installed: `serve`).
    let write_seconds = ::metrics::histogram!("ferris_job_sink_write_seconds", "job" => t.job.clone(), "sink" => sink.name().to_string());
    let groups = sink.groups_writes();
    // a checkpoint message taken from the queue while gathering batches, handled next
    let mut waiting: Option<SinkMsg> = None;
    loop {
        let next = if let Some(m) = waiting.take() {
            Some(m)
        } else if dirty {
            match tokio::time::timeout(FLUSH_EVERY.saturating_sub(last_flush.elapsed()), rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Err(e) = bounded(t.limit, "the flush", sink.flush()).await {
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
            Some(SinkMsg::Prepare(n)) => {
                let result = bounded(t.limit, "preparing the checkpoint", sink.prepare(n)).await.map_err(|e| {
                    warn!(job = %job, sink = sink.name(), "preparing checkpoint {n} failed: {e}");
                    e.to_string()
                });
                dirty = false;
                last_flush = std::time::Instant::now();
                let _ = t.events.send(SinkEvent::Prepared { sink: t.index, n, result });
                continue;
            }
            Some(SinkMsg::Commit(n, sources)) => {
                let result = bounded(t.limit, "committing the checkpoint", sink.commit_with_sources(n, &sources)).await.map_err(|e| {
                    error!(job = %job, sink = sink.name(), "committing checkpoint {n} failed: {e}");
                    e.to_string()
                });
                let _ = t.events.send(SinkEvent::Committed { sink: t.index, n, result });
                continue;
            }
        };
        // (a sink waiting once per call for its service takes what queued meanwhile at once)
        let (batches, after) = queued_with(batch, &mut rx, groups);
        waiting = after;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let began = std::time::Instant::now();
        let written = write_with_strategy(sink.as_mut(), &batches, t.strategy, t.limit).await;
        write_seconds.record(began.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                t.metrics.add_batch(rows);
                t.failed.store(false, Ordering::Relaxed);
                if !dirty {
                    dirty = true;
                    last_flush = std::time::Instant::now();
                }
            }
            Err(e) => {
                t.metrics.add_errors(1);
                t.failed.store(true, Ordering::Relaxed);
                // a sink that wrote part of the batch (an HTTP sink's accepted requests) says how much failed
                let lost = match &e {
                    ConnectorError::PartialWrite { failed_rows, .. } => (*failed_rows).min(rows),
                    _ => rows,
                };
                if t.strategy == FailureStrategy::FailBatch {
                    let msg = format!("sink '{}' failed a batch of {rows} rows: {e}", sink.name());
                    error!(job = %job, "{msg}");
                    let _ = t.fatal.send(msg.clone());
                    let _ = sink.close().await;
                    return Err(msg);
                }
                if lost < rows {
                    t.metrics.add_batch(rows - lost);
                    error!(job = %job, sink = sink.name(), "{lost} of a batch of {rows} rows lost ({}): {e}", t.strategy);
                } else {
                    error!(job = %job, sink = sink.name(), "batch of {rows} rows lost ({}): {e}", t.strategy);
                }
                t.metrics.add_dropped(lost as u64);
            }
        }
    }
    if let Err(e) = sink.close().await {
        t.metrics.add_errors(1);
        let msg = format!("sink '{}' failed to flush: {e}", sink.name());
        error!(job = %job, "{msg}");
        return Err(msg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    /// A sink recording the batches of each call; its first call takes 100 ms, so that the
    /// batches sent meanwhile queue behind it. It fails the calls numbered in `fail`.
    struct Recording {
        groups: bool,
        calls: Arc<std::sync::Mutex<Vec<Vec<i64>>>>,
        fail: Vec<usize>,
    }

    impl Recording {
        async fn call(&mut self, batches: &[RecordBatch]) -> Result<(), ConnectorError> {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(batches.iter().map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)).collect());
                calls.len()
            };
            if n == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if self.fail.contains(&n) {
                return Err(ConnectorError::Other("refused".into()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Sink for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        async fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
            self.call(std::slice::from_ref(batch)).await
        }
        fn groups_writes(&self) -> bool {
            self.groups
        }
        async fn write_all(&mut self, batches: &[RecordBatch]) -> Result<(), ConnectorError> {
            self.call(batches).await
        }
        async fn flush(&mut self) -> Result<(), ConnectorError> {
            Ok(())
        }
        async fn close(&mut self) -> Result<(), ConnectorError> {
            Ok(())
        }
    }

    fn batch(first: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(first..first + rows))]).unwrap()
    }

    /// Sends batches 0..6 (10 rows each) with a checkpoint barrier after the fourth; returns
    /// the calls, the rows counted written and lost, and whether the barrier came after the
    /// fourth batch was written.
    async fn run(groups: bool, strategy: FailureStrategy, fail: Vec<usize>) -> (Vec<Vec<i64>>, u64, u64, bool) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Recording { groups, calls: Arc::clone(&calls), fail };
        let (fatal, _fatal_rx) = mpsc::unbounded_channel();
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let mut h = SinkHandle::spawn("job", 0, Box::new(sink), strategy, 8, std::time::Duration::from_secs(5), fatal, events);
        let tx = h.tx.take().unwrap();
        for i in 0..6 {
            tx.send(SinkMsg::Batch(batch(i * 10, 10))).await.unwrap();
            // the others queue while the first call is under way
            while calls.lock().unwrap().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if i == 3 {
                tx.send(SinkMsg::Prepare(1)).await.unwrap();
            }
        }
        let prepared = match events_rx.recv().await {
            Some(SinkEvent::Prepared { n: 1, .. }) => calls.lock().unwrap().iter().flatten().any(|&f| f == 30),
            _ => false,
        };
        drop(tx);
        let _ = h.task.take().unwrap().await;
        let m = &h.metrics;
        let out = calls.lock().unwrap().clone();
        (out, m.records.load(Ordering::Relaxed), m.dropped.load(Ordering::Relaxed), prepared)
    }

    #[tokio::test]
    async fn batches_queued_behind_a_slow_call_are_written_together_and_the_barrier_waits() {
        // the first call holds the queue: batches 1–3 go in the next call, then the barrier,
        // then 4–5 (queued meanwhile)
        let (calls, rows, lost, prepared) = run(true, FailureStrategy::LogAndContinue, vec![]).await;
        assert_eq!(calls, [vec![0], vec![10, 20, 30], vec![40, 50]]);
        assert_eq!((rows, lost, prepared), (60, 0, true));
        // a sink that does not group gets a call per batch
        let (calls, rows, _, prepared) = run(false, FailureStrategy::LogAndContinue, vec![]).await;
        assert_eq!(calls, [vec![0], vec![10], vec![20], vec![30], vec![40], vec![50]]);
        assert_eq!((rows, prepared), (60, true));
    }

    #[tokio::test]
    async fn a_failed_group_is_retried_whole_or_counted_lost_whole() {
        let retry = FailureStrategy::RetryWithBackoff { max_retries: 2, backoff: std::time::Duration::from_millis(1) };
        let (calls, rows, lost, _) = run(true, retry, vec![2]).await;
        assert_eq!(calls, [vec![0], vec![10, 20, 30], vec![10, 20, 30], vec![40, 50]]);
        assert_eq!((rows, lost), (60, 0));
        let (calls, rows, lost, _) = run(true, FailureStrategy::LogAndContinue, vec![2]).await;
        assert_eq!(calls, [vec![0], vec![10, 20, 30], vec![40, 50]]);
        assert_eq!((rows, lost), (30, 30));
    }
}
