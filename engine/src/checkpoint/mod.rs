//! Checkpoints: barriers through the plan, operator state as Arrow data in a store, sources'
//! positions, and two-phase commits of the sinks — what makes a job survive a crash, and, with
//! `use_transactions`, exactly once.
//!
//! ```sql
//! CREATE STREAM totals AS
//! SELECT window_start, account, SUM(amount) AS total FROM payments
//! GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), account
//! INTO ledger
//! WITH ('use_transactions' = 'true', 'checkpoint.interval' = '10s', 'checkpoint.dir' = 'state/',
//!       'payments.type' = 'kafka_source', 'ledger.type' = 'file_sink', …)
//! ```
//!
//! Every `checkpoint.interval` the runner starts barrier *n* at the sources ([`barrier`]); each
//! source partition records its position, each of our stateful operators snapshots its state
//! once the barrier has come on all its inputs ([`operator`]), each sink prepares what it wrote
//! (`Sink::prepare`). When all have, the runner writes the checkpoint's manifest last
//! ([`store`]), then has the sinks commit and the sources commit their positions (Kafka offsets).
//! A restarted job restores every operator's state and every source's position from the latest
//! complete checkpoint, and has the sinks finish or undo what was prepared after it.

pub mod barrier;
pub mod operator;
pub mod plan;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferris_connectors::checkpoint::Positions;
use ferris_connectors::Properties;
use tokio::sync::mpsc;

pub use barrier::{BarrierId, BarrierRuntime, Flow};
pub use state::OperatorState;
pub use store::{CheckpointStore, Manifest};

/// What can go wrong with checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A `checkpoint.*` or `use_transactions` key has a bad value.
    #[error("'{key}': {message}")]
    Config {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint store could not be read or written.
    #[error("checkpoint store: {what}: {message}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        message: String,
    },
    /// A checkpoint's file is not what this version writes.
    #[error("checkpoint {what} cannot be read: {message}")]
    Corrupt {
        /// The file.
        what: String,
        /// Why.
        message: String,
    },
    /// The checkpoint was taken with another plan.
    #[error("{0}")]
    Incompatible(String),
    /// Encoding or decoding state.
    #[error("checkpoint state: {0}")]
    State(String),
}

/// The two processing modes of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sinks write as rows come; a crash replays from the last checkpoint: at least once.
    AtLeastOnce,
    /// `use_transactions`: sinks stage what they write and publish it when the checkpoint
    /// holding it is complete: exactly once.
    ExactlyOnce,
}

impl Mode {
    /// As the manifest and `explain` name it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::AtLeastOnce => "at-least-once",
            Mode::ExactlyOnce => "exactly-once",
        }
    }
}

/// A job's checkpoint settings (`checkpoint.*`, `use_transactions`).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Simple or transactional.
    pub mode: Mode,
    /// Whether checkpoints are taken at all.
    pub enabled: bool,
    /// How often (`checkpoint.interval`, default 10 s).
    pub interval: Duration,
    /// Where (`checkpoint.dir`, default `checkpoints/<job>`; `{job}` in it is the job's name).
    pub dir: String,
    /// Complete checkpoints kept (`checkpoint.retain`, default 3; at least 2 under transactions,
    /// so that a checkpoint whose Kafka transaction did not commit can fall back to the one
    /// before).
    pub retain: usize,
    /// How long a stopping job waits for its last checkpoint, and then for its sinks to write
    /// and close what they hold (`stop.timeout`, default 30 s): a slow or vanished service
    /// cannot hold a stop up for ever.
    pub stop_timeout: Duration,
    /// How long one call into a sink may take — a write (each attempt of a retried one), a
    /// flush, preparing or committing a checkpoint (`sink.write.timeout`, default 60 s): a
    /// service that stops answering fails that call (the failure strategy decides what
    /// follows) instead of holding the job, and every other sink, behind it.
    pub sink_write_timeout: Duration,
    /// How long writing a checkpoint's state and manifest, or a sink's recovery from one, may
    /// take (`checkpoint.timeout`, default 10 min); a checkpoint that takes longer fails.
    pub checkpoint_timeout: Duration,
}

/// Default `sink.write.timeout`.
pub const DEFAULT_SINK_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `checkpoint.timeout`.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Default `stop.timeout`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `checkpoint.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

impl CheckpointConfig {
    /// Reads the job options of job `job`. Checkpoints are on for transactional jobs, for jobs
    /// that set a `checkpoint.*` key, and for every job reading an unbounded source.
    pub fn from_options(options: &Properties, job: &str, unbounded: bool) -> Result<Self, CheckpointError> {
        let bad = |key: &str, e: ferris_connectors::ConnectorError| CheckpointError::Config { key: key.to_string(), message: e.to_string() };
        let transactional = options.get_bool("use_transactions").map_err(|e| bad("use_transactions", e))?.unwrap_or(false);
        let interval = options.get_duration("checkpoint.interval").map_err(|e| bad("checkpoint.interval", e))?;
        if interval.is_some_and(|d| d.is_zero()) {
            return Err(CheckpointError::Config { key: "checkpoint.interval".into(), message: "must be longer than 0".into() });
        }
        let dir = options.get("checkpoint.dir").map(str::to_string);
        let stop_timeout = options.get_positive_duration("stop.timeout").map_err(|e| bad("stop.timeout", e))?.unwrap_or(DEFAULT_STOP_TIMEOUT);
        let retain = options.get_usize("checkpoint.retain").map_err(|e| bad("checkpoint.retain", e))?;
        let sink_write_timeout =
            options.get_positive_duration("sink.write.timeout").map_err(|e| bad("sink.write.timeout", e))?.unwrap_or(DEFAULT_SINK_WRITE_TIMEOUT);
        let checkpoint_timeout =
            options.get_positive_duration("checkpoint.timeout").map_err(|e| bad("checkpoint.timeout", e))?.unwrap_or(DEFAULT_CHECKPOINT_TIMEOUT);
        let mode = if transactional { Mode::ExactlyOnce } else { Mode::AtLeastOnce };
        let min_retain = if transactional { 2 } else { 1 };
        Ok(Self {
            mode,
            enabled: transactional || unbounded || interval.is_some() || dir.is_some() || retain.is_some(),
            interval: interval.unwrap_or(DEFAULT_INTERVAL),
            // `{job}` in a shared `checkpoint.dir` (a profile's, for every job of a file) is the job
            dir: dir.map_or_else(|| format!("checkpoints/{job}"), |d| d.replace("{job}", job)),
            retain: retain.unwrap_or(3).max(min_retain),
            stop_timeout,
            sink_write_timeout,
            checkpoint_timeout,
        })
    }
}

/// What an operator tells the runner.
#[derive(Debug)]
pub enum OperatorEvent {
    /// Its state at a barrier.
    Snapshot {
        /// The operator (its position among the plan's stateful operators).
        operator: usize,
        /// The barrier.
        barrier: BarrierId,
        /// Its state.
        state: OperatorState,
    },
    /// It has ended: no state any more, nothing more to wait for.
    Finished {
        /// The operator.
        operator: usize,
    },
}

/// What the plan's stateful operators find in the task context when checkpoints are on: their
/// ids, the state to start from, and where to send snapshots.
#[derive(Debug)]
pub struct CheckpointContext {
    /// The run's barrier runtime.
    pub runtime: Arc<BarrierRuntime>,
    /// Operator id by the address of its plan node.
    pub ids: HashMap<usize, usize>,
    /// State restored from a checkpoint, by operator id.
    pub restored: std::sync::Mutex<HashMap<usize, OperatorState>>,
    /// Where operators send their snapshots.
    pub events: mpsc::UnboundedSender<OperatorEvent>,
    /// Positions restored, by source name (for sources that read them at execution).
    pub positions: HashMap<String, Positions>,
}

impl CheckpointContext {
    /// The context of the plan node at `node` (its address), if it takes part.
    pub fn operator(&self, node: usize) -> Option<usize> {
        self.ids.get(&node).copied()
    }

    /// The state to restore operator `id` from, taken (an operator restores once).
    pub fn take_restored(&self, id: usize) -> Option<OperatorState> {
        self.restored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id)
    }
}

/// The address of a plan node, as [`CheckpointContext::ids`] keys it.
pub fn node_address<T: ?Sized>(node: &T) -> usize {
    node as *const T as *const () as usize
}
