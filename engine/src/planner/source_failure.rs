//! What a job does when one of its sources fails while it runs — the guide's "Partial Source
//! Failure" and `RetryWithBackoff` for sources.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT … FROM orders UNION ALL SELECT … FROM feed INTO out
//! WITH ('feed.type' = 'http_source', 'feed.failure_strategy' = 'RetryWithBackoff',
//!       'feed.max_retries' = '5', 'feed.retry_backoff' = '500ms', …)
//! ```
//!
//! A failed read of a source partition (its stream yields an error) is, by the source's
//! `failure_strategy` (its own, else the job's):
//! - `RetryWithBackoff`: read again after `retry_backoff`, doubling, up to `max_retries` times in
//!   a row, when the source [resumes after a failure](Source::resumes_after_failure) — the
//!   partition goes on after the last batch it handed out, so a retry repeats and skips nothing.
//!   Once the retries are spent it fails as under `LogAndContinue`.
//! - `LogAndContinue` (and `SendToDLQ`): in simple mode the partition ends, the source is marked
//!   `Failed` (its connection status in the REST API and Prometheus) and the job goes on with
//!   what it still reads; the run ends with an error naming the source, and a bounded job's last
//!   checkpoint is not marked finished (its input was not all read). Under `use_transactions`,
//!   or when every source of the job has failed, the job fails: a transactional job never goes
//!   on without one of its sources.
//! - `FailBatch`: the job fails.
//!
//! A source that does not resume after a failure (Kafka: librdkafka rides out outages itself,
//! and a reader left behind would leave its partitions unread) fails the job, whatever the
//! strategy.
//!
//! Tables re-read while the job runs (`refresh_interval`) keep their previous read when a new
//! one fails, and are not wrapped. A source whose files are not there at start is stood in for
//! in simple mode ([`stand_in`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use ferris_connectors::checkpoint::SourceCheckpoint;
use ferris_connectors::metrics::{ConnectionStatus, ConnectorMetrics};
use ferris_connectors::source::{Frontier, SourceSize};
use ferris_connectors::{FailureStrategy, Source};
use futures::StreamExt;
use tracing::{error, warn};

/// The sources of a job that failed while it ran and that it went on without: `(source,
/// why)`, in the order they failed.
#[derive(Debug, Default)]
pub struct SourceFailures {
    /// The job's sources, failed or not.
    sources: usize,
    failed: Mutex<Vec<(String, String)>>,
}

impl SourceFailures {
    /// No failure yet among a job's `sources` sources.
    pub fn new(sources: usize) -> Self {
        Self { sources, failed: Mutex::default() }
    }

    /// Records that `source` failed for `why` (its first failure is kept); true while some
    /// other source of the job has not failed, so that the job has something to go on with.
    pub fn record(&self, source: &str, why: String) -> bool {
        let mut all = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if !all.iter().any(|(s, _)| s == source) {
            all.push((source.to_string(), why));
        }
        all.len() < self.sources
    }

    /// Every failure so far.
    pub fn all(&self) -> Vec<(String, String)> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// True when `source` has failed.
    pub fn has_failed(&self, source: &str) -> bool {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|(s, _)| s == source)
    }

    /// The run's error when sources failed: each named with why, or None.
    pub fn summary(&self) -> Option<String> {
        let all = self.all();
        if all.is_empty() {
            return None;
        }
        let each: Vec<String> = all.iter().map(|(s, why)| format!("source '{s}' failed: {why}")).collect();
        Some(format!("{} (the job went on with its other sources; rows the failed source had not read were not processed)", each.join("; ")))
    }
}

/// The longest wait between two reads of a failed source.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a job treats a failure of one source: its strategy, and whether the job is transactional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnFailure {
    /// The source's `failure_strategy` (its own, else the job's).
    pub strategy: FailureStrategy,
    /// `use_transactions`: a failure that is not retried away fails the job.
    pub transactional: bool,
}

/// What to do about one failed read.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Read again after this long.
    Retry(Duration),
    /// Fail the job with the error.
    Fail,
    /// End this partition and go on without it.
    GoOn,
}

impl OnFailure {
    /// The decision after `attempt` retries in a row already failed, for a source that
    /// `resumes` after a failure or not (Kafka: its reader cannot be left behind without
    /// leaving its partitions unread, and librdkafka rides out outages itself — what reaches
    /// the engine fails the job).
    fn decide(&self, resumes: bool, attempt: u32) -> Decision {
        if !resumes {
            return Decision::Fail;
        }
        if let Some(wait) = self.strategy.retry_wait(attempt) {
            return Decision::Retry(wait.min(MAX_BACKOFF));
        }
        match self.strategy {
            FailureStrategy::FailBatch => Decision::Fail,
            _ if self.transactional => Decision::Fail,
            _ => Decision::GoOn,
        }
    }
}

/// A source whose partitions fail by its [`OnFailure`]; everything else is the source's own.
#[derive(Debug)]
pub struct GuardedSource {
    inner: Arc<dyn Source>,
    on: OnFailure,
    failures: Arc<SourceFailures>,
}

impl GuardedSource {
    /// Wraps `inner`, recording in `failures` when the job goes on without it.
    pub fn new(inner: Arc<dyn Source>, on: OnFailure, failures: Arc<SourceFailures>) -> Self {
        Self { inner, on, failures }
    }

    fn guard(&self, partitions: Vec<Arc<dyn PartitionStream>>) -> Vec<Arc<dyn PartitionStream>> {
        partitions
            .into_iter()
            .map(|inner| {
                Arc::new(GuardedPartition(Arc::new(Guard {
                    inner,
                    source: self.inner.name().to_string(),
                    on: self.on,
                    resumes: self.inner.resumes_after_failure(),
                    metrics: self.inner.metrics(),
                    failures: Arc::clone(&self.failures),
                }))) as Arc<dyn PartitionStream>
            })
            .collect()
    }
}

impl Source for GuardedSource {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }
    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        self.guard(self.inner.partitions(projection))
    }
    fn partitions_pruned(&self, projection: Option<&[usize]>, scans: &[Vec<Expr>]) -> Vec<Arc<dyn PartitionStream>> {
        self.guard(self.inner.partitions_pruned(projection, scans))
    }
    fn metrics(&self) -> Arc<ConnectorMetrics> {
        self.inner.metrics()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn frontier(&self, partition: usize) -> Option<Frontier> {
        self.inner.frontier(partition)
    }
    fn floor_column(&self) -> Option<&str> {
        self.inner.floor_column()
    }
    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        self.inner.checkpoint()
    }
    fn resumes_after_failure(&self) -> bool {
        self.inner.resumes_after_failure()
    }
    fn refresh_interval(&self) -> Option<Duration> {
        self.inner.refresh_interval()
    }
    fn size(&self) -> Option<SourceSize> {
        self.inner.size()
    }
    fn can_prune(&self, filter: &Expr) -> bool {
        self.inner.can_prune(filter)
    }
    fn read_again(
        &self,
        projection: Option<&[usize]>,
        scans: &[Vec<Expr>],
        dynamic: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        self.inner.read_again(projection, scans, dynamic, count).map(|p| self.guard(p))
    }
    fn read_in_order(
        &self,
        projection: Option<&[usize]>,
        checked: Option<&[usize]>,
        scans: &[Vec<Expr>],
        count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        self.inner.read_in_order(projection, checked, scans, count).map(|p| self.guard(p))
    }
}

/// One partition of a [`GuardedSource`].
#[derive(Debug)]
struct GuardedPartition(Arc<Guard>);

/// A source partition and what its failures do.
#[derive(Debug)]
struct Guard {
    inner: Arc<dyn PartitionStream>,
    source: String,
    on: OnFailure,
    resumes: bool,
    metrics: Arc<ConnectorMetrics>,
    failures: Arc<SourceFailures>,
}

/// A guarded partition's reading: the stream of its current execution, and the retries in a
/// row since its last batch.
struct Reading {
    guard: Arc<Guard>,
    ctx: Arc<TaskContext>,
    stream: Option<SendableRecordBatchStream>,
    attempt: u32,
}

impl PartitionStream for GuardedPartition {
    fn schema(&self) -> &SchemaRef {
        self.0.inner.schema()
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let stream = Some(self.0.inner.execute(Arc::clone(&ctx)));
        let reading = Reading { guard: Arc::clone(&self.0), ctx, stream, attempt: 0 };
        let stream = futures::stream::unfold(reading, |mut r| async move {
            loop {
                let e = match r.stream.as_mut()?.next().await? {
                    Ok(batch) => {
                        if r.attempt > 0 {
                            r.attempt = 0;
                            r.guard.metrics.set_status(ConnectionStatus::Connected);
                        }
                        return Some((Ok(batch), r));
                    }
                    Err(e) => e,
                };
                let p = Arc::clone(&r.guard);
                match p.on.decide(p.resumes, r.attempt) {
                    Decision::Retry(wait) => {
                        r.attempt += 1;
                        p.metrics.set_status(ConnectionStatus::Reconnecting);
                        warn!(source = %p.source, attempt = r.attempt, "source '{}' failed: {e}; reading on from where it stopped in {}ms (RetryWithBackoff)", p.source, wait.as_millis());
                        // the failed execution goes before the next starts
                        r.stream = None;
                        tokio::time::sleep(wait).await;
                        r.stream = Some(p.inner.execute(Arc::clone(&r.ctx)));
                    }
                    Decision::Fail => {
                        p.metrics.set_status(ConnectionStatus::Failed);
                        r.stream = None;
                        let why = if p.on.transactional && p.on.strategy != FailureStrategy::FailBatch && p.resumes {
                            "; under use_transactions the job stops (it never goes on without one of its sources)"
                        } else {
                            ""
                        };
                        return Some((Err(DataFusionError::Execution(format!("source '{}' failed: {e}{why}", p.source))), r));
                    }
                    Decision::GoOn => {
                        p.metrics.set_status(ConnectionStatus::Failed);
                        r.stream = None;
                        let tried = if r.attempt > 0 { format!(" after {} retries", r.attempt) } else { String::new() };
                        if !p.failures.record(&p.source, format!("{e}{tried}")) {
                            let e = format!("source '{}' failed{tried}: {e}; the job has no other source left to go on with", p.source);
                            return Some((Err(DataFusionError::Execution(e)), r));
                        }
                        error!(source = %p.source, "source '{}' failed{tried}: {e}; the job goes on with its other sources ({})", p.source, p.on.strategy);
                        return None;
                    }
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(self.0.inner.schema()), stream))
    }
}

/// Stands in for a file source (read once, not watched) that could not be opened at start
/// because its files are not there (a path not found, no file matching a glob), in a job with
/// other sources that runs in
/// simple mode: with the columns its `schema` key declares it yields no rows, is shown `Failed`,
/// and the run ends naming it — the guide's "Source 2 (File): File not found", where simple mode
/// goes on with the sources it has. `None` when the source cannot be stood in for (another
/// error, or no declared `schema` to plan the query with): the job then stops at start.
pub fn stand_in(rel: &crate::job::RelationSpec, error: &ferris_connectors::ConnectorError) -> Option<Arc<dyn Source>> {
    use ferris_connectors::ConnectorError;
    let (name, props) = (rel.name.as_str(), &rel.properties);
    // a file not there, of a file source read once (a watched file may yet come)
    let missing = match error {
        ConnectorError::NoFiles { .. } => true,
        ConnectorError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    };
    if !missing || rel.connector.kind != ferris_connectors::ConnectorKind::File || props.get_bool("watch").ok().flatten() == Some(true) {
        return None;
    }
    let schema = ferris_connectors::format::schema::parse_schema(props.get("schema")?, &props.full_key("schema")).ok()?;
    let metrics = Arc::new(ConnectorMetrics::default());
    metrics.set_status(ConnectionStatus::Failed);
    Some(Arc::new(Unavailable { name: name.to_string(), schema, metrics, why: error.to_string() }))
}

/// A source that could not be opened (see [`stand_in`]): no rows, of its declared columns.
#[derive(Debug)]
struct Unavailable {
    name: String,
    schema: SchemaRef,
    metrics: Arc<ConnectorMetrics>,
    why: String,
}

impl Source for Unavailable {
    fn name(&self) -> &str {
        &self.name
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let (_, schema) = ferris_connectors::source::projected_columns(&self.schema, projection);
        vec![Arc::new(NoRows(schema))]
    }
    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.metrics)
    }
    fn describe(&self) -> String {
        format!("unavailable ({}): no rows", self.why)
    }
}

/// A partition that ends at once.
#[derive(Debug)]
struct NoRows(SchemaRef);

impl PartitionStream for NoRows {
    fn schema(&self) -> &SchemaRef {
        &self.0
    }
    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.0), futures::stream::empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A partition of rows 0..total in batches of one row that fails once, after `fail_after`
    /// rows on its first execution; it resumes after the last row handed out when `resumes`.
    #[derive(Debug)]
    struct Flaky {
        schema: SchemaRef,
        total: i64,
        fail_after: i64,
        handed: Arc<AtomicUsize>,
        executions: AtomicUsize,
        resumes: bool,
    }

    impl PartitionStream for Flaky {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }
        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let first = self.executions.fetch_add(1, Ordering::SeqCst) == 0;
            let start = if self.resumes { self.handed.load(Ordering::SeqCst) as i64 } else { 0 };
            let end = if first { self.fail_after } else { self.total };
            let mut items: Vec<datafusion::error::Result<RecordBatch>> =
                (start..end).map(|i| Ok(RecordBatch::try_new(Arc::clone(&self.schema), vec![Arc::new(Int64Array::from(vec![i]))])?)).collect();
            if first {
                // an error ends the execution, as a reader's does
                items.push(Err(DataFusionError::Execution("connection reset".into())));
            }
            // a row counts as handed out when the stream yields it
            let handed = Arc::clone(&self.handed);
            let items = futures::stream::iter(items).inspect(move |item| {
                if let Ok(b) = item {
                    let v = b.column(0).as_any().downcast_ref::<Int64Array>().map_or(0, |a| a.value(0));
                    handed.store(v as usize + 1, Ordering::SeqCst);
                }
            });
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), items))
        }
    }

    /// Reads a flaky partition of source `feed`, one of a job's `sources`.
    fn run_of(on: OnFailure, resumes: bool, sources: usize) -> (Vec<i64>, Option<String>, Arc<SourceFailures>, ConnectionStatus) {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let flaky = Flaky { schema, total: 10, fail_after: 4, handed: Arc::default(), executions: AtomicUsize::new(0), resumes };
        let failures = Arc::new(SourceFailures::new(sources));
        let metrics = Arc::new(ConnectorMetrics::default());
        let part = GuardedPartition(Arc::new(Guard {
            inner: Arc::new(flaky),
            source: "feed".into(),
            on,
            resumes,
            metrics: Arc::clone(&metrics),
            failures: Arc::clone(&failures),
        }));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let items: Vec<_> = rt.block_on(part.execute(Arc::new(TaskContext::default())).collect());
        let mut rows = Vec::new();
        let mut error = None;
        for item in items {
            match item {
                Ok(b) => rows.extend(b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().iter().copied()),
                Err(e) => error = Some(e.to_string()),
            }
        }
        (rows, error, failures, metrics.status())
    }

    fn run(on: OnFailure, resumes: bool) -> (Vec<i64>, Option<String>, Arc<SourceFailures>, ConnectionStatus) {
        run_of(on, resumes, 2)
    }

    const RETRY: FailureStrategy = FailureStrategy::RetryWithBackoff { max_retries: 3, backoff: Duration::from_millis(1) };

    #[test]
    fn a_retry_goes_on_after_the_last_row_handed_out() {
        let (rows, error, failures, status) = run(OnFailure { strategy: RETRY, transactional: false }, true);
        assert_eq!(rows, (0..10).collect::<Vec<_>>());
        assert_eq!(error, None);
        assert!(failures.all().is_empty());
        assert_eq!(status, ConnectionStatus::Connected);
    }

    #[test]
    fn simple_mode_goes_on_without_a_failed_source_and_records_it() {
        let (rows, error, failures, status) = run(OnFailure { strategy: FailureStrategy::LogAndContinue, transactional: false }, true);
        assert_eq!(rows, vec![0, 1, 2, 3]);
        assert_eq!(error, None);
        assert!(failures.has_failed("feed"));
        assert!(failures.summary().unwrap().contains("source 'feed' failed: Execution error: connection reset"), "{:?}", failures.summary());
        assert_eq!(status, ConnectionStatus::Failed);
        // the job's only source: nothing left to go on with
        let (rows, error, failures, _) = run_of(OnFailure { strategy: FailureStrategy::LogAndContinue, transactional: false }, true, 1);
        assert_eq!(rows, vec![0, 1, 2, 3]);
        assert_eq!(
            error.as_deref(),
            Some("Execution error: source 'feed' failed: Execution error: connection reset; the job has no other source left to go on with")
        );
        assert!(failures.has_failed("feed"));
        // a source that cannot resume (Kafka) is neither retried nor left behind: the job fails
        let (rows, error, failures, _) = run(OnFailure { strategy: RETRY, transactional: false }, false);
        assert_eq!((rows, error.as_deref()), (vec![0, 1, 2, 3], Some("Execution error: source 'feed' failed: Execution error: connection reset")));
        assert!(failures.all().is_empty());
    }

    #[test]
    fn a_transactional_job_or_failbatch_fails_on_a_source_failure() {
        let (rows, error, failures, status) = run(OnFailure { strategy: FailureStrategy::LogAndContinue, transactional: true }, true);
        assert_eq!(rows, vec![0, 1, 2, 3]);
        assert!(error.unwrap().contains("source 'feed' failed: Execution error: connection reset; under use_transactions the job stops"));
        assert!(failures.all().is_empty());
        assert_eq!(status, ConnectionStatus::Failed);
        let (_, error, _, _) = run(OnFailure { strategy: FailureStrategy::FailBatch, transactional: false }, true);
        assert_eq!(error.as_deref(), Some("Execution error: source 'feed' failed: Execution error: connection reset"));
        // retried first under transactions too
        let (rows, error, _, _) = run(OnFailure { strategy: RETRY, transactional: true }, true);
        assert_eq!((rows, error), ((0..10).collect(), None));
    }

    #[test]
    fn retries_wait_doubling_and_stop_at_max_retries() {
        let on = OnFailure { strategy: FailureStrategy::RetryWithBackoff { max_retries: 2, backoff: Duration::from_millis(100) }, transactional: false };
        assert_eq!(on.decide(true, 0), Decision::Retry(Duration::from_millis(100)));
        assert_eq!(on.decide(true, 1), Decision::Retry(Duration::from_millis(200)));
        assert_eq!(on.decide(true, 2), Decision::GoOn);
        assert_eq!(OnFailure { transactional: true, ..on }.decide(true, 2), Decision::Fail);
        assert_eq!(on.decide(false, 0), Decision::Fail);
        let long = OnFailure { strategy: FailureStrategy::RetryWithBackoff { max_retries: 40, backoff: Duration::from_secs(1) }, transactional: false };
        assert_eq!(long.decide(true, 30), Decision::Retry(MAX_BACKOFF));
    }
}
