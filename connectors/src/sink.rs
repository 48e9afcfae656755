//! The sink side of a connector: something that receives the job's output batches.
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders INTO archive
//! WITH ('archive.type' = 'file_sink', 'archive.path' = 'out/orders_{date}.jsonl');
//! ```

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use std::sync::Arc;

use crate::checkpoint::{Prepared, SourceCheckpoint, SourcePositions};
use crate::error::{ConnectorError, Result};

/// How a job delivers rows to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No checkpoints (a bounded job): rows are written as they come, flushed at the end.
    Plain,
    /// Checkpoints: rows are written as they come and made durable at each barrier; after a
    /// crash the job replays from the last checkpoint (at least once).
    AtLeastOnce,
    /// `use_transactions`: rows are staged and published when the checkpoint holding them is
    /// complete (exactly once).
    ExactlyOnce,
}

/// A configured, open sink. The job runner drives each sink on its own task, so a slow sink
/// back-pressures through its queue and a failed one does not stop the others.
#[async_trait]
pub trait Sink: Send {
    /// The name it has in the query (`archive`).
    fn name(&self) -> &str;
    /// Checks, before any data flows, that the sink can hold rows of `schema` (a CSV file
    /// cannot hold nested columns). An error here is reported as a failure to create the sink.
    fn check_schema(&self, _schema: &arrow::datatypes::Schema) -> Result<()> {
        Ok(())
    }
    /// The job's counters for this sink, handed over before the first write: a sink whose
    /// client notices a lost connection reports it there (`Reconnecting`), and `Connected`
    /// again once it writes.
    fn attach_metrics(&mut self, _metrics: std::sync::Arc<crate::metrics::ConnectorMetrics>) {}

    /// True when it takes text and bytes as views (`Utf8View`, `BinaryView`) as the operators
    /// hand them on: a sink that reads no column, or one that encodes views as it encodes plain
    /// text (CSV and JSON Lines files). Others (the default) get them as plain text,
    /// copied out once on their way in ([`crate::text_views`]).
    fn takes_text_views(&self) -> bool {
        false
    }

    /// Writes one batch. An error is handled by the job's failure strategy.
    async fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// True when the job may hand it the batches that queued while it was busy in one
    /// [`Sink::write_all`] call (a sink that waits once per call for its service to answer:
    /// Kafka's delivery reports). Others get one [`Sink::write`] per batch.
    fn groups_writes(&self) -> bool {
        false
    }

    /// Writes several batches as one unit: the failure strategy handles them together (a
    /// retry writes them all again). By default one [`Sink::write`] each.
    ///
    /// ```sql
    /// -- Kafka → Kafka: the batches that queue behind one round of delivery reports go out
    /// -- together, and their reports are waited for once
    /// CREATE STREAM s AS SELECT * FROM bids WHERE price > 1000 INTO out WITH ('out.type' = 'kafka_sink', …);
    /// ```
    async fn write_all(&mut self, batches: &[RecordBatch]) -> Result<()> {
        for b in batches {
            self.write(b).await?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (called at the end and on Ctrl-C).
    async fn flush(&mut self) -> Result<()>;
    /// Flushes and releases the sink; writes after `close` are errors. A transactional sink
    /// publishes nothing that was not committed: what it staged since is dropped.
    async fn close(&mut self) -> Result<()>;

    /// True when it can take part in transactions (`use_transactions`): what it writes stays
    /// invisible until [`Sink::commit`].
    fn transactional(&self) -> bool {
        false
    }

    /// How the job delivers to it; called once before the first write. `job` names the job
    /// (staged files and transactions are named after it).
    fn set_delivery(&mut self, _job: &str, _delivery: Delivery) -> Result<()> {
        Ok(())
    }

    /// Barrier `checkpoint`: everything written so far belongs to that checkpoint. Makes it
    /// durable; a transactional sink stages it without showing it, and returns what it needs
    /// to commit it after a crash (kept in the checkpoint's manifest).
    async fn prepare(&mut self, _checkpoint: u64) -> Result<Option<Prepared>> {
        self.flush().await.map(|()| None)
    }

    /// Checkpoint `checkpoint` is complete (its manifest is durable): makes what was prepared
    /// for it, and before it, visible. Called again after a crash for the checkpoint restored,
    /// so it must be idempotent.
    async fn commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }

    /// Under `use_transactions`, once before the first write: the job's sources, offered to a
    /// sink that can commit a source's positions inside its own transaction, atomically with
    /// the rows (a Kafka sink takes a Kafka source's consumer-group offsets on the same
    /// cluster into the producer's transaction). Returns the names of those it takes; they
    /// leave their commits to it from then on.
    ///
    /// ```sql
    /// CREATE STREAM copy AS SELECT * FROM orders INTO out WITH ('use_transactions' = 'true',
    ///   'orders.type' = 'kafka_source', 'out.type' = 'kafka_sink', …)
    /// ```
    fn take_source_commits(&mut self, _sources: &[(String, Arc<dyn SourceCheckpoint>)]) -> Vec<String> {
        Vec::new()
    }

    /// [`Sink::commit`] with the positions every source had at `checkpoint` (from its
    /// manifest), for a sink that took some sources' commits.
    async fn commit_with_sources(&mut self, checkpoint: u64, _sources: &SourcePositions) -> Result<()> {
        self.commit(checkpoint).await
    }

    /// For a sink whose commit cannot be redone after a crash (a Kafka transaction is aborted
    /// by a restart): the last checkpoint it committed, as recorded with its commit. A restart
    /// falls back to that checkpoint when the latest one's commit did not happen. `None`:
    /// the sink can finish any prepared checkpoint later (files), or keeps no record.
    async fn last_committed(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// True when [`Sink::commit`] cannot be redone after a crash: such sinks commit first.
    fn commit_is_final(&self) -> bool {
        false
    }

    /// Before the first write after a restart from checkpoint `restored` (with what this sink
    /// prepared at it, from the manifest): commits that, and drops anything staged after it.
    /// `None`: a fresh start; drops anything staged by an earlier run that never committed.
    async fn recover(&mut self, _restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        Ok(())
    }
}

/// Whether a sink that stages rows in open files or objects can go on. One that lost rows (a
/// part that failed to upload, a file that could not be written) is broken for good; so is one
/// whose call the engine cut off while rows were in its open files (`sink.write.timeout` drops
/// the call): the next call finds it still marked under way. Either way every later call fails,
/// so that no checkpoint completes without those rows.
///
/// ```sql
/// WITH ('lake.type' = 's3_sink', 'sink.write.timeout' = '60s', …)
/// ```
#[derive(Debug, Default)]
pub struct SinkHealth {
    broken: Option<String>,
    under_way: Option<&'static str>,
}

impl SinkHealth {
    /// Marks `what` (`a write`) as under way: rows are in open files until [`SinkHealth::done`].
    pub fn start(&mut self, what: &'static str) {
        self.under_way = Some(what);
    }

    /// The call marked by [`SinkHealth::start`] ended, well or with an error it reported.
    pub fn done(&mut self) {
        self.under_way = None;
    }

    /// Breaks the sink for good with `message`, returned as the error to report.
    pub fn broken_with(&mut self, message: String) -> ConnectorError {
        self.broken = Some(message.clone());
        ConnectorError::Other(message)
    }

    /// Err once the sink is broken. `sink` (`s3 sink 'lake'`) and `holding` (`open objects`)
    /// word the message of a call found cut off.
    pub fn check(&mut self, sink: &str, holding: &str) -> Result<()> {
        if let Some(what) = self.under_way.take() {
            self.broken = Some(format!(
                "{sink}: {what} was cut off halfway (sink.write.timeout), so rows of its {holding} are lost; the sink stops so that no checkpoint completes without them"
            ));
        }
        match &self.broken {
            Some(m) => Err(ConnectorError::Other(m.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_left_under_way_or_a_loss_breaks_the_sink_for_good() {
        let mut h = SinkHealth::default();
        h.start("a write");
        h.done();
        assert!(h.check("s3 sink 'x'", "open objects").is_ok(), "a call that ended leaves it whole");
        h.start("a write");
        let e = h.check("s3 sink 'x'", "open objects").unwrap_err().to_string();
        assert!(e.contains("s3 sink 'x': a write was cut off halfway") && e.contains("open objects"), "{e}");
        assert!(h.check("s3 sink 'x'", "open objects").is_err(), "for good");
        let mut h = SinkHealth::default();
        let e = h.broken_with("lost a part".into()).to_string();
        assert!(e.contains("lost a part"));
        assert!(h.check("s", "files").unwrap_err().to_string().contains("lost a part"));
    }
}
