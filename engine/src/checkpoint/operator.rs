//! What every stateful operator of ours shares for checkpoints: its inputs, executed each in a
//! barrier scope of its own, whose barriers arrive as events; the alignment of a barrier over
//! all inputs; and an output channel that carries the barrier on after the operator's rows.
//!
//! ```sql
//! SELECT window_start, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)
//! -- WindowAggregateExec: barrier n on every input partition → snapshot → marker n downstream
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::BaselineMetrics;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream};
use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use tokio::sync::mpsc;

use super::barrier::{BarrierId, ChannelLeaf, Flow, InputEvent, Scope, ScopedInput};
use super::{CheckpointContext, OperatorEvent, OperatorState};

/// One item of an operator's merged inputs: `(side, partition, what)`.
pub type Tagged = (usize, usize, Result<InputItem>);

/// What one input partition delivered.
#[derive(Debug)]
pub enum InputItem {
    /// Rows.
    Batch(RecordBatch),
    /// Every row of epoch `n` has been delivered.
    Barrier(BarrierId),
    /// The partition has no more rows.
    End,
    /// The operators feeding the partition have moved their event time this far (epoch
    /// milliseconds): it counts as a row that late, for the watermark.
    Watermark(i64),
}

/// The inputs of an operator: one stream per input partition, and their scopes.
pub struct Inputs {
    /// Per input partition, tagged with `side` (0, or 0/1 for a join) and the partition.
    pub streams: Vec<BoxStream<'static, Tagged>>,
    /// The scopes to release after a barrier.
    pub scopes: Vec<Arc<Scope>>,
    /// `(side, partition)` of each stream.
    pub keys: Vec<(usize, usize)>,
}

/// Executes every output partition of `input` in a scope of its own, tagged with `side`.
pub fn execute_inputs(input: &Arc<dyn ExecutionPlan>, side: usize, context: &Arc<TaskContext>, into: &mut Inputs) -> Result<usize> {
    let n = input.output_partitioning().partition_count();
    for p in 0..n {
        let scoped = ScopedInput::execute(|| input.execute(p, Arc::clone(context)))?;
        into.scopes.push(scoped.scope());
        into.keys.push((side, p));
        let stream = scoped
            .map(move |item| {
                let item = item.map(|e| match e {
                    InputEvent::Batch(b) => InputItem::Batch(b),
                    InputEvent::Barrier(n) => InputItem::Barrier(n),
                    InputEvent::Watermark(w) => InputItem::Watermark(w),
                });
                (side, p, item)
            })
            .chain(futures::stream::once(async move { (side, p, Ok(InputItem::End)) }))
            .boxed();
        into.streams.push(stream);
    }
    Ok(n)
}

impl Inputs {
    /// No inputs yet.
    pub fn new() -> Self {
        Self { streams: Vec::new(), scopes: Vec::new(), keys: Vec::new() }
    }

    /// Lets every input go on after barrier `n`.
    pub fn release(scopes: &[Arc<Scope>], n: BarrierId) {
        for s in scopes {
            s.release(n);
        }
    }
}

impl Default for Inputs {
    fn default() -> Self {
        Self::new()
    }
}

/// Which inputs have delivered the barrier being aligned.
#[derive(Debug)]
pub struct Alignment {
    /// Per input: the last barrier it delivered; `None` once ended.
    inputs: HashMap<(usize, usize), Option<BarrierId>>,
    /// The last barrier completed.
    done: BarrierId,
}

impl Alignment {
    /// Alignment over the inputs `keys`.
    pub fn new(keys: &[(usize, usize)]) -> Self {
        Self { inputs: keys.iter().map(|k| (*k, Some(0))).collect(), done: 0 }
    }

    /// The barrier every live input has delivered, when not completed yet.
    fn complete(&mut self) -> Option<BarrierId> {
        let n = super::barrier::passed_by_all(self.inputs.values().flatten().copied(), self.done)?;
        self.done = n;
        Some(n)
    }

    /// Input `key` delivered barrier `n`: `Some(n)` when that completes it over every live input.
    pub fn barrier(&mut self, key: (usize, usize), n: BarrierId) -> Option<BarrierId> {
        if let Some(Some(b)) = self.inputs.get_mut(&key) {
            *b = (*b).max(n);
        }
        self.complete()
    }

    /// Input `key` ended: `Some(n)` when the others were waiting for it.
    pub fn ended(&mut self, key: (usize, usize)) -> Option<BarrierId> {
        self.inputs.insert(key, None);
        self.complete()
    }
}

/// The sending end of an operator's output.
pub struct Output {
    tx: mpsc::Sender<Result<Flow>>,
    baseline: BaselineMetrics,
    /// The last watermark sent.
    watermark: std::sync::atomic::AtomicI64,
}

impl Output {
    /// Sends rows (empty batches skipped); false when the consumer has gone.
    pub async fn batches(&self, out: Vec<RecordBatch>) -> bool {
        for batch in out {
            if batch.num_rows() > 0 {
                self.baseline.record_output(batch.num_rows());
                if self.tx.send(Ok(Flow::Batch(batch))).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Tells the operators above that no row sent from now on is earlier than `w` (epoch
    /// milliseconds), when that is news; false when the consumer has gone.
    pub async fn watermark(&self, w: i64) -> bool {
        use std::sync::atomic::Ordering;
        if w == i64::MIN || self.watermark.fetch_max(w, Ordering::AcqRel) >= w {
            return true;
        }
        self.tx.send(Ok(Flow::Watermark(w))).await.is_ok()
    }

    /// Sends the barrier marker after the rows of its epoch.
    pub async fn barrier(&self, n: BarrierId) -> bool {
        self.tx.send(Ok(Flow::Barrier(n))).await.is_ok()
    }

    /// The operator's counters.
    pub fn baseline(&self) -> &BaselineMetrics {
        &self.baseline
    }

    /// Barrier `n` has come on every input: the operator's `state` goes to the checkpoint, the
    /// barrier downstream, and the inputs' scopes are released. False when the consumer is gone.
    pub async fn pass_barrier(
        &self,
        n: BarrierId,
        checkpointing: Option<&Checkpointing>,
        state: impl FnOnce() -> Result<crate::checkpoint::OperatorState>,
        scopes: &[Arc<Scope>],
    ) -> Result<bool> {
        if let Some(c) = checkpointing {
            c.snapshot(n, state()?);
        }
        if !self.barrier(n).await {
            return Ok(false);
        }
        Inputs::release(scopes, n);
        Ok(true)
    }

    /// Every input has ended: the operator is done, and out of later checkpoints.
    pub fn end(&self, checkpointing: Option<&Checkpointing>) {
        self.baseline.done();
        if let Some(c) = checkpointing {
            c.finished();
        }
    }
}

/// Runs an operator's task: `body` gets the [`Output`]; the returned stream is the output as a
/// leaf of the scope being executed, and aborts the task when dropped.
pub fn spawn_operator<F, Fut>(schema: SchemaRef, baseline: BaselineMetrics, body: F) -> SendableRecordBatchStream
where
    F: FnOnce(Output) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let errors = tx.clone();
    let fut = body(Output { tx, baseline, watermark: std::sync::atomic::AtomicI64::new(i64::MIN) });
    let task = SpawnedTask::spawn(async move {
        // a panic fails the job: its output must not end as if it were complete
        let result = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await {
            Ok(result) => result,
            Err(panic) => Err(datafusion::error::DataFusionError::Internal(format!("an operator panicked: {}", panic_message(&panic)))),
        };
        if let Err(e) = result {
            let _ = errors.send(Err(e)).await;
        }
    });
    Box::pin(ChannelLeaf::new(rx, schema).with_task(task))
}

/// The message a panic was raised with.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

/// An operator's view of checkpoints: its id, and where its snapshots go. Absent when the job
/// takes no checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    context: Arc<CheckpointContext>,
    id: usize,
}

impl Checkpointing {
    /// The checkpointing of the plan node at `node` (its address) in `context`'s job.
    pub fn find(context: &TaskContext, node: usize) -> Option<Self> {
        let ctx = context.session_config().get_extension::<CheckpointContext>()?;
        let id = ctx.operator(node)?;
        Some(Self { context: ctx, id })
    }

    /// The state to start from, if the job was restored.
    pub fn restored(&self) -> Option<OperatorState> {
        self.context.take_restored(self.id)
    }

    /// Hands the state at barrier `n` to the runner.
    pub fn snapshot(&self, n: BarrierId, state: OperatorState) {
        let _ = self.context.events.send(OperatorEvent::Snapshot { operator: self.id, barrier: n, state });
    }

    /// Whether the operator drops its open windows after barrier `n` (their rows are read
    /// again: a Kafka hand-over between processes of the job).
    pub fn replays_at(&self, n: BarrierId) -> bool {
        self.context.runtime.is_replay(n)
    }

    /// The operator (of a job that replays) has emitted every window before `t`.
    pub fn publish_emitted_before(&self, t: i64) {
        self.context.runtime.publish_emitted_before(t);
    }

    /// The operator has ended: nothing more of it will be in a checkpoint.
    pub fn finished(&self) {
        let _ = self.context.events.send(OperatorEvent::Finished { operator: self.id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_completes_once_every_live_input_has_it() {
        let mut a = Alignment::new(&[(0, 0), (0, 1), (1, 0)]);
        assert_eq!(a.barrier((0, 0), 1), None);
        assert_eq!(a.barrier((1, 0), 1), None);
        assert_eq!(a.barrier((0, 1), 1), Some(1));
        assert_eq!(a.barrier((0, 1), 2), None);
        assert_eq!(a.ended((0, 0)), None, "(1,0) has not delivered 2 yet");
        assert_eq!(a.barrier((1, 0), 2), Some(2));
        assert_eq!(a.ended((0, 1)), None);
        assert_eq!(a.ended((1, 0)), None, "nothing left to align");
    }

    /// A restored job's first barrier is the restored checkpoint's next: it completes under
    /// its own number, once, and the next follows.
    #[test]
    fn a_restored_jobs_first_barrier_completes_under_its_own_number() {
        let mut a = Alignment::new(&[(0, 0), (1, 0)]);
        assert_eq!(a.barrier((0, 0), 6), None);
        assert_eq!(a.barrier((1, 0), 6), Some(6));
        assert_eq!(a.barrier((1, 0), 6), None, "completed already");
        assert_eq!(a.barrier((1, 0), 7), None);
        assert_eq!(a.barrier((0, 0), 7), Some(7));
    }

    /// An operator that panics fails its output stream: it does not end as if complete.
    #[tokio::test]
    async fn a_panicking_operator_fails_its_output() {
        use futures::StreamExt;
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let metrics = datafusion::physical_plan::metrics::ExecutionPlanMetricsSet::new();
        let mut stream = spawn_operator(schema, BaselineMetrics::new(&metrics, 0), |_out| async move { panic!("boom") });
        let first = stream.next().await;
        let err = match first {
            Some(Err(e)) => e.to_string(),
            other => panic!("expected the panic as an error, got {:?}", other.map(|r| r.map(|b| b.num_rows()))),
        };
        assert!(err.contains("an operator panicked: boom"), "{err}");
    }
}
