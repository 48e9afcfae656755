//! One consumer-group member per Kafka source and process. The source's readers (one per
//! DataFusion partition) share the member's partitions: each assigned partition's messages go
//! to a queue of their own (librdkafka's per-partition queues), handed to the reader with the
//! fewest, so a job never rebalances against itself.
//!
//! When another process of the same job joins or leaves, the partitions this one gives up are
//! drained and committed before the revoke completes: readers stop handing out their rows,
//! the job's commit barrier drains what is in flight to every sink, and the positions the sinks
//! acknowledged are committed synchronously, so the process that takes them over starts where
//! this one stopped. Cooperative rebalancing (`cooperative-sticky`, the default here) moves only
//! the partitions that change hands; the others keep flowing.
//!
//! ```sql
//! SELECT * FROM orders INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.topic' = 'orders', 'orders.consumers' = '4',
//!       'orders.partition.assignment.strategy' = 'cooperative-sticky', …)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::commit::CommitGate;
use crate::metrics::{ConnectionStatus, ConnectorMetrics};

use super::config::QuietContext;

pub(crate) type Member = BaseConsumer<GroupContext>;
type Queue = rdkafka::consumer::base_consumer::PartitionQueue<GroupContext>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a rebalance waits for the job to drain and commit what it read from the partitions
/// it gives up. Kafka waits for a member up to `max.poll.interval.ms` (5 minutes by default).
const REVOKE_DRAIN_WAIT: Duration = Duration::from_secs(30);
/// How often the member's thread serves the group (rebalances, errors, heartbeats' liveness).
const GROUP_POLL: Duration = Duration::from_millis(50);

/// One partition's queue, read by one reader.
pub(crate) struct PartQueue {
    pub topic: String,
    pub partition: i32,
    pub queue: Queue,
}

/// What one reader reads: its partitions' queues, and a bell rung when one has messages.
#[derive(Default)]
pub(crate) struct ReaderSlot {
    pub queues: Mutex<Vec<PartQueue>>,
    pub notify: Arc<Notify>,
    /// Messages the group's own queue returned for a partition of this reader (fetched before
    /// its queue was split off; rare): read before the queues.
    pub strays: Mutex<VecDeque<OwnedMessage>>,
}

/// State shared by the member, its rebalance callback and the readers.
pub(crate) struct GroupShared {
    name: String,
    pub slots: Vec<ReaderSlot>,
    /// The member's consumer, to split partition queues off in the rebalance callback.
    consumer: std::sync::OnceLock<std::sync::Weak<Member>>,
    gate: Arc<CommitGate>,
    /// Where partitions start when first assigned (positions restored from a checkpoint);
    /// the others start at the group's committed offsets.
    start_at: Mutex<HashMap<(String, i32), i64>>,
    metrics: Arc<ConnectorMetrics>,
    pub quiet: QuietContext,
    /// The member is leaving the group: its last revoke drains nothing (the job has stopped).
    closing: AtomicBool,
}

impl GroupShared {
    pub fn new(name: &str, readers: usize, gate: Arc<CommitGate>, metrics: Arc<ConnectorMetrics>) -> Self {
        Self {
            name: name.to_string(),
            slots: (0..readers.max(1)).map(|_| ReaderSlot::default()).collect(),
            consumer: std::sync::OnceLock::new(),
            gate,
            start_at: Mutex::new(HashMap::new()),
            metrics,
            quiet: QuietContext::new(format!("kafka source '{name}'")),
            closing: AtomicBool::new(false),
        }
    }

    /// Positions to start from when these partitions are assigned (a restored checkpoint).
    #[allow(dead_code)]
    pub fn start_at(&self, positions: impl IntoIterator<Item = ((String, i32), i64)>) {
        lock(&self.start_at).extend(positions);
    }

    fn assign(&self, consumer: &Member, tpl: &mut TopicPartitionList) {
        let parts = partitions(tpl);
        {
            let mut start = lock(&self.start_at);
            for (t, p) in &parts {
                if let Some(o) = start.remove(&(t.clone(), *p)) {
                    if let Err(e) = tpl.set_partition_offset(t, *p, Offset::Offset(o)) {
                        warn!(source = %self.name, "cannot start {t}/{p} at {o}: {e}");
                    }
                }
            }
        }
        // Each partition gets its own queue *before* it is assigned, so that none of its
        // messages ever reaches the group's queue (librdkafka then leaves the queue alone when
        // fetching starts). Pausing instead would lose what was fetched before the pause.
        let member = self.consumer.get().and_then(std::sync::Weak::upgrade);
        let mut queues = Vec::new();
        for (t, p) in &parts {
            match member.as_ref().and_then(|m| m.split_partition_queue(t, *p)) {
                Some(q) => queues.push(PartQueue { topic: t.clone(), partition: *p, queue: q }),
                None => {
                    warn!(source = %self.name, "no queue of its own for {t}/{p}: its messages come through the group's queue")
                }
            }
        }
        let assigned =
            if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
        if let Err(e) = assigned {
            warn!(source = %self.name, "assigning {} partitions failed: {e}", parts.len());
            return;
        }
        self.gate.assigned(&parts);
        for mut q in queues {
            let (i, slot) = self.slots.iter().enumerate().min_by_key(|(_, s)| lock(&s.queues).len()).unwrap_or((0, &self.slots[0]));
            debug!(source = %self.name, "{}/{} read by reader {i}", q.topic, q.partition);
            let bell = Arc::clone(&slot.notify);
            q.queue.set_nonempty_callback(move || bell.notify_one());
            lock(&slot.queues).push(q);
            slot.notify.notify_one();
        }
        let names: Vec<String> = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        info!(source = %self.name, "assigned partitions: {}", names.join(", "));
    }

    fn revoke(&self, consumer: &Member, tpl: &TopicPartitionList, error: bool) {
        let parts = partitions(tpl);
        let all = error || !matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        self.gate.revoke(&parts);
        for s in &self.slots {
            s.notify.notify_one();
        }
        if consumer.assignment_lost() || error {
            info!(source = %self.name, "lost {} partitions (the group session expired): their rows may be read again by their new owner", parts.len());
        } else if !self.gate.is_closed() && !self.closing.load(Ordering::Acquire) {
            // Hand the partitions over where the sinks are: drain what was read, commit it.
            let drained = self.gate.request_barrier(REVOKE_DRAIN_WAIT);
            let positions = self.gate.positions_of(&parts);
            if drained && !positions.is_empty() {
                let mut commit = TopicPartitionList::new();
                for (t, p, o) in &positions {
                    let _ = commit.add_partition_offset(t, *p, Offset::Offset(*o));
                }
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => {
                        debug!(source = %self.name, "committed {} revoked partitions: {positions:?}", positions.len())
                    }
                    Err(e) => {
                        warn!(source = %self.name, "commit of revoked partitions failed (their new owner reads some rows again): {e}")
                    }
                }
            } else if !drained {
                warn!(source = %self.name, "the job did not drain within {}s while giving up {} partitions: their new owner may read some rows again", REVOKE_DRAIN_WAIT.as_secs(), parts.len());
            }
        }
        self.gate.forget(&parts);
        for s in &self.slots {
            lock(&s.queues).retain(|q| !parts.iter().any(|(t, p)| *p == q.partition && *t == q.topic));
            lock(&s.strays).retain(|m| !parts.iter().any(|(t, p)| *p == m.partition() && t == m.topic()));
        }
        let unassigned = if all { consumer.unassign() } else { consumer.incremental_unassign(tpl) };
        if let Err(e) = unassigned {
            debug!(source = %self.name, "unassign: {e}");
        }
        info!(source = %self.name, "revoked {} partitions", parts.len());
    }

    /// A message the group's own queue returned: to the reader of its partition.
    fn stray(&self, msg: OwnedMessage) {
        debug!(source = %self.name, "stray message {}/{}@{}", msg.topic(), msg.partition(), msg.offset());
        for s in &self.slots {
            if lock(&s.queues).iter().any(|q| q.partition == msg.partition() && q.topic == msg.topic()) {
                lock(&s.strays).push_back(msg);
                s.notify.notify_one();
                return;
            }
        }
        if self.gate.is_revoked(msg.topic(), msg.partition()) {
            // given away meanwhile: its new owner reads it
            debug!(source = %self.name, "message {}/{}@{} of a partition given away: dropped", msg.topic(), msg.partition(), msg.offset());
            return;
        }
        // a partition without a queue of its own: the first reader takes its messages
        lock(&self.slots[0].strays).push_back(msg);
        self.slots[0].notify.notify_one();
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

/// The member's callbacks: rebalances, and librdkafka's logs through the connector's limiter.
pub(crate) struct GroupContext {
    pub shared: Arc<GroupShared>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.shared.quiet.log_line(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.shared.metrics.set_status(ConnectionStatus::Reconnecting);
        self.shared.quiet.client_error(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.shared.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.shared.revoke(consumer, tpl, false),
            other => {
                warn!(source = %self.shared.name, "rebalance error: {other:?}");
                self.shared.revoke(consumer, tpl, true);
            }
        }
    }
}

/// The group member: its consumer and the thread that serves the group.
pub(crate) struct GroupMember {
    consumer: Option<Arc<Member>>,
    pub shared: Arc<GroupShared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupMember {
    /// Joins the group with `consumer` (subscribed already) and starts serving it.
    pub fn start(consumer: Member, shared: Arc<GroupShared>) -> std::io::Result<Self> {
        let consumer = Arc::new(consumer);
        let _ = shared.consumer.set(Arc::downgrade(&consumer));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let consumer = Arc::clone(&consumer);
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new().name(format!("ferris-kafka-{}", shared.name)).spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match consumer.poll(GROUP_POLL) {
                        Some(Ok(msg)) => {
                            let owned = msg.detach();
                            drop(msg);
                            shared.stray(owned);
                        }
                        Some(Err(e)) => {
                            shared.metrics.set_status(ConnectionStatus::Reconnecting);
                            shared.quiet.failure(&format!("Kafka error: {e}"));
                        }
                        None => {}
                    }
                }
            })?
        };
        Ok(Self { consumer: Some(consumer), shared, stop, thread: Some(thread) })
    }

    /// The consumer, for commits (held weakly by committers, so that it closes with the member).
    pub fn consumer(&self) -> std::sync::Weak<Member> {
        self.consumer.as_ref().map(Arc::downgrade).unwrap_or_default()
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.shared.closing.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The queues hold the consumer: release them, then close it (leaving the group).
        for s in &self.shared.slots {
            lock(&s.queues).clear();
            lock(&s.strays).clear();
        }
        drop(self.consumer.take());
    }
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember").field("source", &self.shared.name).finish()
    }
}
