//! Sinks whose work is synchronous I/O (files on a disk that may be slow, a network mount, a
//! full pipe) run every call on tokio's blocking threads, so that a stalled disk never stalls
//! the runtime's workers — and with them the job's other sinks, its sources and the REST API.
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO archive
//! WITH ('archive.type' = 'file_sink', 'archive.path' = '/mnt/nfs/archive.jsonl', …);
//! ```
//!
//! [`OffRuntime`] wraps such a sink: each call takes the sink's lock (first come, first served)
//! and drives it on a blocking thread. A call the runner gives up on (`sink.write.timeout`)
//! keeps the lock until its thread finishes, so the next call waits for it: calls never overlap
//! and run in the order they were made.

use std::sync::Arc;

use tokio::sync::Mutex;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::checkpoint::Prepared;
use crate::error::{ConnectorError, Result};
use crate::sink::{Delivery, Sink};

/// A sink driven on tokio's blocking threads. See the module documentation.
pub struct OffRuntime<S> {
    name: String,
    transactional: bool,
    commit_is_final: bool,
    inner: Arc<Mutex<S>>,
}

impl<S: Sink + 'static> OffRuntime<S> {
    /// Wraps `sink`, whose async methods do their work without waiting on anything but the
    /// operating system (they are driven to completion on a blocking thread).
    pub fn new(sink: S) -> Self {
        Self { name: sink.name().to_string(), transactional: sink.transactional(), commit_is_final: sink.commit_is_final(), inner: Arc::new(Mutex::new(sink)) }
    }

    /// Runs `call` on the sink on a blocking thread, once the calls before it are done.
    async fn run<T: Send + 'static>(&self, call: impl FnOnce(&mut S) -> Result<T> + Send + 'static) -> Result<T> {
        let mut sink = Arc::clone(&self.inner).lock_owned().await;
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || call(&mut sink)).await.map_err(|e| ConnectorError::Other(format!("sink '{name}': {e}")))?
    }

    /// The sink itself, for the calls made before any data flows (nothing else holds it then);
    /// `None` if a call is still running.
    fn now(&self) -> Option<tokio::sync::MutexGuard<'_, S>> {
        self.inner.try_lock().ok()
    }

    fn busy(&self) -> ConnectorError {
        ConnectorError::Other(format!("sink '{}': still busy with an earlier call", self.name))
    }
}

#[async_trait]
impl<S: Sink + 'static> Sink for OffRuntime<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &arrow::datatypes::Schema) -> Result<()> {
        self.now().ok_or_else(|| self.busy())?.check_schema(schema)
    }

    fn takes_text_views(&self) -> bool {
        self.now().is_some_and(|s| s.takes_text_views())
    }

    fn attach_metrics(&mut self, metrics: Arc<crate::metrics::ConnectorMetrics>) {
        if let Some(mut sink) = self.now() {
            sink.attach_metrics(metrics)
        }
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = batch.clone();
        self.run(move |s| futures::executor::block_on(s.write(&batch))).await
    }

    async fn flush(&mut self) -> Result<()> {
        self.run(|s| futures::executor::block_on(s.flush())).await
    }

    async fn close(&mut self) -> Result<()> {
        self.run(|s| futures::executor::block_on(s.close())).await
    }

    fn transactional(&self) -> bool {
        self.transactional
    }

    fn set_delivery(&mut self, job: &str, delivery: Delivery) -> Result<()> {
        self.now().ok_or_else(|| self.busy())?.set_delivery(job, delivery)
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        self.run(move |s| futures::executor::block_on(s.prepare(checkpoint))).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.run(move |s| futures::executor::block_on(s.commit(checkpoint))).await
    }

    fn take_source_commits(&mut self, sources: &[(String, Arc<dyn crate::checkpoint::SourceCheckpoint>)]) -> Vec<String> {
        self.now().map(|mut s| s.take_source_commits(sources)).unwrap_or_default()
    }

    async fn commit_with_sources(&mut self, checkpoint: u64, sources: &crate::checkpoint::SourcePositions) -> Result<()> {
        let sources = sources.clone();
        self.run(move |s| futures::executor::block_on(s.commit_with_sources(checkpoint, &sources))).await
    }

    async fn last_committed(&mut self) -> Result<Option<u64>> {
        self.run(|s| futures::executor::block_on(s.last_committed())).await
    }

    fn commit_is_final(&self) -> bool {
        self.commit_is_final
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        self.run(move |s| futures::executor::block_on(s.recover(restored))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes a while per write and records the order of its calls.
    struct Slow {
        log: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    #[async_trait]
    impl Sink for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
            std::thread::sleep(std::time::Duration::from_millis(200));
            self.log.lock().unwrap().push(batch.num_rows() as u64);
            Ok(())
        }
        async fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        async fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }

    fn rows(n: usize) -> RecordBatch {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(arrow::array::Int64Array::from(vec![0; n]))]).unwrap()
    }

    /// A slow write does not hold the runtime's one worker: a timer on the same runtime fires
    /// meanwhile. A write given up on still finishes before the next one starts.
    #[tokio::test(flavor = "current_thread")]
    async fn slow_writes_leave_the_runtime_free_and_never_overlap() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink = OffRuntime::new(Slow { log: Arc::clone(&log) });
        let began = std::time::Instant::now();
        let ticked = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            began.elapsed()
        });
        sink.write(&rows(1)).await.unwrap();
        // on a held worker the timer could only start once the write had returned (measured
        // against the write's own end, not a fixed bound: a loaded machine delays both alike)
        let written = began.elapsed();
        assert!(ticked.await.unwrap() < written, "the timer waited for the write");
        // given up after 50 ms; the next write waits for it
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), sink.write(&rows(2))).await.is_err());
        sink.write(&rows(3)).await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
    }
}
