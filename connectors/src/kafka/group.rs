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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::checkpoint::{JobBarriers, PositionCell, Positions, ReplayTime};
use crate::metrics::{ConnectionStatus, ConnectorMetrics};

use super::config::QuietContext;
use super::replay::{Replays, SkipRange};

pub(crate) type Member = BaseConsumer<GroupContext>;
type Queue = super::queue::PartitionQueue;

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

/// Where each reader has got (per partition, the offset after the last message it handed out)
/// and which partitions a rebalance is taking away.
#[derive(Debug, Default)]
pub(crate) struct ReadPositions {
    cells: Vec<PositionCell>,
    revoked: Mutex<HashSet<(String, i32)>>,
    revocations: AtomicU64,
    /// Per reader: each assigned partition's latest event time and when it last delivered.
    times: Vec<Mutex<HashMap<(String, i32), PartitionTime>>>,
    /// Partitions the restored checkpoint read that are not assigned again yet, and until when
    /// they hold event time back.
    awaited: Mutex<Awaited>,
    /// Restored positions of partitions not assigned to this member since: carried into every
    /// checkpoint until they are, so that a checkpoint taken meanwhile does not forget where
    /// they were (their rows up to there are in the restored state).
    carried: Mutex<HashMap<(String, i32), i64>>,
    /// The job rebuilds its windows by reading rows again (see [`super::replay`]): each
    /// partition's log of batches handed out, and the rows its readers drop.
    replays: Mutex<Replays>,
    replaying: AtomicBool,
    /// Partitions being read again (see [`super::replay`]) that hold event time back until
    /// their first row comes, however long they are silent, until then at most.
    replay_holds: Mutex<HashMap<(String, i32), std::time::Instant>>,
    /// Partitions taken over from another process, not read until this process has emitted
    /// its windows before the first time (the other's oldest open window), event time held at
    /// the second meanwhile (see [`super::replay`]).
    taken: Mutex<HashMap<(String, i32), (i64, i64)>>,
    any_taken: AtomicBool,
    /// A hand-over is rebuilding the job's windows: readers hand nothing out meanwhile.
    paused: AtomicBool,
    unpaused: Notify,
}

/// How long a partition being read again holds event time back, at most, before its first row.
const REPLAY_HOLD: Duration = Duration::from_secs(30);

/// Commits whose skips a partition's hand-over note keeps.
const NOTES_KEPT: usize = 8;

/// The key of a partition's replay log in a checkpoint's positions.
const REPLAY_LOG_SUFFIX: &str = "@replay";

/// Restored partitions not assigned again yet, and the deadline of their hold.
type Awaited = (HashSet<(String, i32)>, Option<std::time::Instant>);

/// How far one Kafka partition's event time has got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionTime {
    /// The latest event time it delivered, epoch milliseconds; `None` before its first row.
    pub max: Option<i64>,
    /// When it last delivered a message (or was assigned).
    pub last: std::time::Instant,
}

/// `topic/partition`, the key of a partition's position.
pub(crate) fn position_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The topic and partition of a position key.
pub(crate) fn parse_position_key(key: &str) -> Option<(String, i32)> {
    let (t, p) = key.rsplit_once('/')?;
    Some((t.to_string(), p.parse().ok()?))
}

impl ReadPositions {
    /// Positions for `readers` readers.
    pub fn new(readers: usize) -> Self {
        let n = readers.max(1);
        Self { cells: (0..n).map(|_| PositionCell::new()).collect(), times: (0..n).map(|_| Mutex::new(HashMap::new())).collect(), ..Self::default() }
    }

    /// Records that reader `reader` hands out messages up to `positions` (next offsets). Those
    /// of partitions revoked meanwhile are not recorded: they are returned, and their rows must
    /// not be handed out (the partition's new owner reads them).
    pub fn record(&self, reader: usize, positions: Vec<((String, i32), i64)>) -> Vec<(String, i32)> {
        let revoked = lock(&self.revoked);
        let mut dropped = Vec::new();
        let Some(cell) = self.cells.get(reader) else { return dropped };
        let mut cell = cell.lock();
        let mut carried = lock(&self.carried);
        for ((t, p), o) in positions {
            if revoked.contains(&(t.clone(), p)) {
                dropped.push((t, p));
            } else {
                cell.insert(position_key(&t, p), serde_json::Value::from(o));
                carried.remove(&(t, p));
            }
        }
        dropped
    }

    /// Takes the replay logs out of restored `positions` (`topic/partition@replay` keys) and
    /// keeps them; returns the partitions' offsets.
    pub fn restore_logs(&self, positions: &Positions) -> Positions {
        let mut offsets = Positions::new();
        let mut logs: HashMap<(String, i32), Vec<(i64, i64)>> = HashMap::new();
        for (k, v) in positions {
            match k.strip_suffix(REPLAY_LOG_SUFFIX) {
                Some(pk) => {
                    if let (Some(key), Ok(log)) = (parse_position_key(pk), serde_json::from_value::<Vec<(i64, i64)>>(v.clone())) {
                        logs.insert(key, log);
                    }
                }
                None => {
                    offsets.insert(k.clone(), v.clone());
                }
            }
        }
        let mut replays = lock(&self.replays);
        for k in offsets.keys() {
            if let Some(key) = parse_position_key(k) {
                let log = logs.remove(&key);
                replays.restored(key, log);
            }
        }
        offsets
    }

    /// Positions restored from a checkpoint, carried until their partitions are read again.
    pub fn carry(&self, restored: impl IntoIterator<Item = ((String, i32), i64)>) {
        lock(&self.carried).extend(restored);
    }

    /// The positions of reader `reader` (the first reader also carries the restored positions
    /// of partitions not assigned since).
    pub fn of_reader(&self, reader: usize) -> Positions {
        let mut out = self.cells.get(reader).map(PositionCell::get).unwrap_or_default();
        if reader == 0 {
            for ((t, p), o) in lock(&self.carried).iter() {
                out.entry(position_key(t, *p)).or_insert_with(|| serde_json::Value::from(*o));
            }
        }
        // each partition's replay log with the positions of the reader that logs it, as of the
        // same moment (a batch is logged before its position is recorded)
        if self.replaying() {
            let replays = lock(&self.replays);
            for key in replays.keys() {
                let pk = position_key(&key.0, key.1);
                if !out.contains_key(&pk) || out.contains_key(&format!("{pk}{REPLAY_LOG_SUFFIX}")) {
                    continue;
                }
                if let Some(log) = replays.checkpoint_log(&key) {
                    out.insert(format!("{pk}{REPLAY_LOG_SUFFIX}"), serde_json::json!(log));
                }
            }
        }
        out
    }

    /// Partitions a rebalance is taking away.
    pub fn revoke(&self, parts: &[(String, i32)]) {
        lock(&self.revoked).extend(parts.iter().cloned());
        self.revocations.fetch_add(1, Ordering::AcqRel);
    }

    /// Partitions assigned (again).
    pub fn assigned(&self, parts: &[(String, i32)]) {
        let mut r = lock(&self.revoked);
        let mut awaited = lock(&self.awaited);
        for p in parts {
            r.remove(p);
            awaited.0.remove(p);
        }
    }

    /// Partitions that may come to this member (a restored checkpoint's, or every partition of
    /// the topics at start): until they are assigned (a killed process's group member holds
    /// them until its session times out), or for `hold` at most (another process may own them
    /// now), they hold event time back. Otherwise the partitions that come first would carry
    /// the watermark past the rows still waiting in the others, and the answer after a crash
    /// would depend on the order of the group's assignments.
    pub fn await_partitions(&self, parts: impl IntoIterator<Item = (String, i32)>, hold: std::time::Duration) {
        let mut awaited = lock(&self.awaited);
        awaited.0.extend(parts);
        awaited.1 = Some(std::time::Instant::now() + hold);
    }

    /// True when the partition has been revoked.
    pub fn is_revoked(&self, topic: &str, partition: i32) -> bool {
        lock(&self.revoked).iter().any(|(t, p)| *p == partition && t == topic)
    }

    /// Bumped by every revocation.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Where reading `parts` has got (the offset after the last message handed out), for those
    /// that have a position.
    pub fn positions_of(&self, parts: &[(String, i32)]) -> Vec<((String, i32), i64)> {
        let mut out = Vec::new();
        for c in &self.cells {
            let c = c.lock();
            for (t, p) in parts {
                if let Some(o) = c.get(&position_key(t, *p)).and_then(serde_json::Value::as_i64) {
                    out.push(((t.clone(), *p), o));
                }
            }
        }
        out
    }

    /// Forgets the positions and event times of partitions given away (their replay logs too,
    /// unless `keep_logs`: partitions lost with the group session come back to this process
    /// with their rows still in its state).
    pub fn forget(&self, parts: &[(String, i32)], keep_logs: bool) {
        let keys: Vec<String> = parts.iter().map(|(t, p)| position_key(t, *p)).collect();
        for c in &self.cells {
            c.lock().retain(|k, _| !keys.contains(k));
        }
        for t in &self.times {
            lock(t).retain(|k, _| !parts.contains(k));
        }
        {
            let mut taken = lock(&self.taken);
            taken.retain(|k, _| !parts.contains(k));
            self.any_taken.store(!taken.is_empty(), Ordering::Release);
        }
        if !keep_logs {
            lock(&self.replays).forget(parts);
        }
    }

    /// The job rebuilds its windows by reading rows again: keep each partition's log.
    pub fn set_replaying(&self) {
        self.replaying.store(true, Ordering::Release);
    }

    /// Whether partitions keep replay logs.
    pub fn replaying(&self) -> bool {
        self.replaying.load(Ordering::Acquire)
    }

    /// The partitions' replay logs and skips.
    pub fn replays(&self) -> MutexGuard<'_, Replays> {
        lock(&self.replays)
    }

    /// `key`, taken over from another process whose windows before `before` are emitted, is not
    /// read until this process has emitted its own before `before`: a window the other emitted
    /// (a `HOP` window holds rows of several panes) is then closed here too, and its rows read
    /// again count only in the windows still open. Meanwhile the partition holds event time
    /// at `hold` (the other's), so that this process closes no window the other had open.
    pub fn take_over(&self, key: (String, i32), before: i64, hold: i64) {
        lock(&self.taken).insert(key, (before, hold));
        self.any_taken.store(true, Ordering::Release);
    }

    /// Whether `topic`/`partition` waits to be read (see [`ReadPositions::take_over`]).
    pub fn is_taken(&self, topic: &str, partition: i32) -> bool {
        self.any_taken.load(Ordering::Acquire) && lock(&self.taken).keys().any(|(t, p)| *p == partition && t == topic)
    }

    /// Whether some partition waits to be read.
    pub fn waiting_taken(&self) -> bool {
        self.any_taken.load(Ordering::Acquire)
    }

    /// Lets the partitions taken over be read whose wait is over, now that this process has
    /// emitted every window before `emitted_before` (`None`: it does not say; all are let go).
    /// Returns how many were let go. Until its first row comes, such a partition holds event
    /// time back (see [`ReadPositions::hold_replay`]).
    pub fn release_taken(&self, emitted_before: Option<i64>) -> usize {
        if !self.any_taken.load(Ordering::Acquire) {
            return 0;
        }
        let mut taken = lock(&self.taken);
        let ready: Vec<(String, i32)> = taken.iter().filter(|(_, (before, _))| emitted_before.is_none_or(|e| e >= *before)).map(|(k, _)| k.clone()).collect();
        for k in &ready {
            taken.remove(k);
            self.read_again(k);
        }
        self.any_taken.store(!taken.is_empty(), Ordering::Release);
        ready.len()
    }

    /// Holds every reader before its next batch until [`ReadPositions::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Lets the readers go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.unpaused.notify_waiters();
    }

    /// Waits while the readers are held.
    pub async fn wait_unpaused(&self) {
        loop {
            let notified = self.unpaused.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.paused.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// `key` (read up to `position`) is read again from `from`: its position goes back there
    /// and it holds event time back until its rows come again.
    fn rewound(&self, key: &(String, i32), from: i64) {
        let pk = position_key(&key.0, key.1);
        for c in &self.cells {
            let mut c = c.lock();
            if c.contains_key(&pk) {
                c.insert(pk.clone(), serde_json::Value::from(from));
            }
        }
        self.read_again(key);
    }

    /// `key`'s rows come again (sought back, or let go after a take-over): its event time is
    /// unknown until they do, and it holds event time back meanwhile.
    fn read_again(&self, key: &(String, i32)) {
        for t in &self.times {
            if let Some(pt) = lock(t).get_mut(key) {
                pt.max = None;
                pt.last = std::time::Instant::now();
            }
        }
        self.hold_replay(key);
    }

    /// `key` is read again: until its first row comes it holds event time back, even when
    /// silent longer than `idle_timeout` (its rows are in windows still open), for
    /// [`REPLAY_HOLD`] at most.
    pub fn hold_replay(&self, key: &(String, i32)) {
        lock(&self.replay_holds).insert(key.clone(), std::time::Instant::now() + REPLAY_HOLD);
    }

    /// Reader `reader` now reads `partition` of `topic`: its event time is unknown until its
    /// first row.
    pub fn track(&self, reader: usize, topic: &str, partition: i32) {
        if let Some(t) = self.times.get(reader) {
            lock(t).insert((topic.to_string(), partition), PartitionTime { max: None, last: std::time::Instant::now() });
        }
    }

    /// Reader `reader` handed out rows of these partitions, the latest at these event times
    /// (`None`: rows without a readable time, or messages that decoded to no row).
    pub fn delivered(&self, reader: usize, latest: impl IntoIterator<Item = ((String, i32), Option<i64>)>) {
        let Some(t) = self.times.get(reader) else { return };
        let mut t = lock(t);
        let now = std::time::Instant::now();
        for (k, max) in latest {
            let e = t.entry(k.clone()).or_insert(PartitionTime { max: None, last: now });
            // only rows with an event time keep a partition live: one whose rows have none
            // (a missing or unreadable column) goes idle instead of holding event time forever
            if let Some(m) = max {
                e.last = now;
                e.max = Some(e.max.map_or(m, |x| x.max(m)));
                if self.replaying() {
                    lock(&self.replay_holds).remove(&k);
                }
            }
        }
    }

    /// How far event time has got over reader `reader`'s partitions: the slowest live one
    /// (partitions silent for `idle` are skipped; a partition taken over from another process
    /// and waiting counts as at its hold, [`Frontier::Floor`](crate::source::Frontier::Floor),
    /// however quiet). `None` when it reads none, or all are idle.
    pub fn frontier(&self, reader: usize, idle: std::time::Duration) -> Option<crate::source::Frontier> {
        if self.paused.load(Ordering::Acquire) {
            // a hand-over: the windows dropped at its barrier are read again once it is done
            return Some(crate::source::Frontier::Holding);
        }
        {
            let awaited = lock(&self.awaited);
            if !awaited.0.is_empty() && awaited.1.is_some_and(|until| std::time::Instant::now() < until) {
                return Some(crate::source::Frontier::Holding);
            }
        }
        // (locks in the order `taken`, `times`, `replay_holds`, as `release_taken` takes them)
        let taken = if self.any_taken.load(Ordering::Acquire) { lock(&self.taken).clone() } else { HashMap::new() };
        let t = lock(self.times.get(reader)?);
        let holds = lock(&self.replay_holds);
        let now = std::time::Instant::now();
        let held = |k: &(String, i32), pt: &PartitionTime| pt.max.is_none() && holds.get(k).is_some_and(|until| now < *until);
        let mut out: Option<crate::source::Frontier> = None;
        for (k, pt) in t.iter() {
            // a partition taken over waits at the other process's event time
            let f = match (taken.get(k), pt.max) {
                (Some(&(_, hold)), _) => crate::source::Frontier::Floor(hold),
                _ if pt.last.elapsed() >= idle && !held(k, pt) => continue,
                (None, None) => return Some(crate::source::Frontier::Holding),
                (None, Some(m)) => crate::source::Frontier::At(m),
            };
            out = Some(out.map_or(f, |o| o.min(f)));
        }
        out
    }
}

/// State shared by the member, its rebalance callback and the readers.
pub(crate) struct GroupShared {
    name: String,
    pub slots: Vec<ReaderSlot>,
    /// The member's consumer, to split partition queues off in the rebalance callback.
    consumer: std::sync::OnceLock<std::sync::Weak<Member>>,
    pub positions: Arc<ReadPositions>,
    /// How the member asks the job for a barrier before giving partitions away.
    barriers: Option<JobBarriers>,
    /// Where partitions start when first assigned (positions restored from a checkpoint);
    /// the others start at the group's committed offsets.
    start_at: Mutex<HashMap<(String, i32), i64>>,
    /// Where partitions lost with the group session had got: if they come back to this member,
    /// reading resumes there (or at the group's committed offset, if another member has
    /// committed further meanwhile), so that rows already in the job's state are not read twice.
    resume_lost: Mutex<HashMap<(String, i32), i64>>,
    metrics: Arc<ConnectorMetrics>,
    pub quiet: QuietContext,
    /// The member is leaving the group: its last revoke drains nothing (the job has stopped).
    closing: AtomicBool,
    /// For event time: the subscribed topics, whose partitions all hold event time back until
    /// assigned to this member, for this long at most (see [`ReadPositions::await_partitions`]).
    pub hold: Option<(Vec<String>, Duration)>,
    /// The consumer group, naming the hand-over notes of its partitions.
    pub group_id: String,
}

impl GroupShared {
    pub fn new(
        name: &str,
        readers: usize,
        positions: Arc<ReadPositions>,
        barriers: Option<JobBarriers>,
        start_at: HashMap<(String, i32), i64>,
        metrics: Arc<ConnectorMetrics>,
    ) -> Self {
        Self {
            name: name.to_string(),
            slots: (0..readers.max(1)).map(|_| ReaderSlot::default()).collect(),
            consumer: std::sync::OnceLock::new(),
            positions,
            barriers,
            start_at: Mutex::new(start_at),
            resume_lost: Mutex::new(HashMap::new()),
            metrics,
            quiet: QuietContext::new(format!("kafka source '{name}'")),
            closing: AtomicBool::new(false),
            hold: None,
            group_id: String::new(),
        }
    }

    fn assign(&self, consumer: &Member, tpl: &mut TopicPartitionList) {
        let parts = partitions(tpl);
        // restored positions: where those partitions start, and their positions until read
        let mut starts: HashMap<(String, i32), i64> = HashMap::new();
        {
            let mut start = lock(&self.start_at);
            let mut lost = lock(&self.resume_lost);
            let mut back: Vec<((String, i32), i64)> = parts.iter().filter_map(|k| lost.remove(k).map(|o| (k.clone(), o))).collect();
            if !back.is_empty() {
                // another member may have read them meanwhile and committed further
                let mut ask = TopicPartitionList::new();
                for ((t, p), _) in &back {
                    ask.add_partition(t, *p);
                }
                if let Ok(committed) = consumer.committed_offsets(ask, Duration::from_secs(5)) {
                    for ((t, p), o) in &mut back {
                        if let Some(Offset::Offset(c)) = committed.find_partition(t, *p).map(|e| e.offset()) {
                            *o = (*o).max(c);
                        }
                    }
                }
                debug!(source = %self.name, "{} partitions lost with the session come back: resuming where they were", back.len());
            }
            for (t, p) in &parts {
                let from = start.remove(&(t.clone(), *p)).or_else(|| back.iter().find(|(k, _)| k.0 == *t && k.1 == *p).map(|(_, o)| *o));
                if let Some(o) = from {
                    if let Err(e) = tpl.set_partition_offset(t, *p, Offset::Offset(o)) {
                        warn!(source = %self.name, "cannot start {t}/{p} at {o}: {e}");
                    }
                    starts.insert((t.clone(), *p), o);
                }
            }
            if self.positions.replaying() {
                self.replay_assigned(consumer, &parts, &starts, &back);
            }
        }
        // Each partition gets its own queue *before* it is assigned, so that none of its
        // messages ever reaches the group's queue (librdkafka then leaves the queue alone when
        // fetching starts). Pausing instead would lose what was fetched before the pause.
        let member = self.consumer.get().and_then(std::sync::Weak::upgrade);
        let mut queues = Vec::new();
        for (t, p) in &parts {
            match member.as_ref().and_then(|m| Queue::split(m, t, *p)) {
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
        self.positions.assigned(&parts);
        for mut q in queues {
            let (i, slot) = self.slots.iter().enumerate().min_by_key(|(_, s)| lock(&s.queues).len()).unwrap_or((0, &self.slots[0]));
            debug!(source = %self.name, "{}/{} read by reader {i}", q.topic, q.partition);
            if let Some(o) = starts.get(&(q.topic.clone(), q.partition)) {
                self.positions.record(i, vec![((q.topic.clone(), q.partition), *o)]);
            }
            self.positions.track(i, &q.topic, q.partition);
            let bell = Arc::clone(&slot.notify);
            q.queue.set_nonempty_callback(move || bell.notify_one());
            lock(&slot.queues).push(q);
            slot.notify.notify_one();
        }
        let names: Vec<String> = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        info!(source = %self.name, "assigned partitions: {}", names.join(", "));
    }

    /// In a job that rebuilds its windows by reading rows again: partitions starting at the
    /// group's offset drop the rows its metadata says are in emitted windows; partitions that
    /// come back after a lost session keep no log (their rows are in this process's state).
    fn replay_assigned(&self, consumer: &Member, parts: &[(String, i32)], starts: &HashMap<(String, i32), i64>, back: &[((String, i32), i64)]) {
        let mut ask = TopicPartitionList::new();
        for (t, p) in parts {
            let key = (t.clone(), *p);
            if back.iter().any(|(k, _)| *k == key) {
                // lost with the session and back: its log (kept) still covers its rows in state
                let mut replays = self.positions.replays();
                if !replays.has(&key) {
                    replays.restored(key, None);
                }
            } else if !starts.contains_key(&key) {
                ask.add_partition(t, *p);
            }
        }
        if ask.count() == 0 {
            return;
        }
        let committed = match consumer.committed_offsets(ask.clone(), Duration::from_secs(5)) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(source = %self.name, "cannot read the committed offsets of {} partitions ({e}): rows of windows another process emitted may be counted again", ask.count());
                None
            }
        };
        for e in ask.elements() {
            let key = (e.topic().to_string(), e.partition());
            let meta = match committed.as_ref().and_then(|c| c.find_partition(e.topic(), e.partition())) {
                Some(c) if !c.metadata().is_empty() => Some(c.metadata().to_string()),
                Some(c) => match c.offset() {
                    // a broker that keeps no commit metadata (tansu): the note of that commit
                    Offset::Offset(o) => self.hand_over_note(&key, o),
                    _ => None,
                },
                None => None,
            };
            if meta.is_some() {
                debug!(source = %self.name, "{}/{}: starts with rows to skip: {meta:?}", key.0, key.1);
                self.positions.hold_replay(&key);
            }
            let gate = self.positions.replays().assigned(key.clone(), meta.as_deref());
            if let Some((before, hold)) = gate {
                debug!(source = %self.name, "{}/{}: read once this process has emitted its windows before {before}", key.0, key.1);
                self.positions.take_over(key, before, hold);
            }
        }
    }

    fn note_name(&self, key: &(String, i32)) -> String {
        let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect::<String>();
        format!("kafka-{}-{}-{}.json", clean(&self.group_id), clean(&key.0), key.1)
    }

    /// Adds `key`, read up to `position`, to `commit` at its replay point for `t`,
    /// the rows to skip named in the commit's metadata and in the hand-over note (a partition
    /// whose log does not cover its state is committed as read). Blocks.
    pub(crate) fn add_replay_commit(&self, commit: &mut TopicPartitionList, key: &(String, i32), position: i64, t: ReplayTime) {
        let (from, skips) = self.positions.replays().replay_point(key, position, t).unwrap_or((position, Vec::new()));
        self.put_hand_over_note(key, from, &skips);
        add_commit_with_skips(commit, key, from, &skips);
    }

    /// Keeps the skips of `key` committed at `from` where every process of the job finds them
    /// (the commit's metadata says the same, but not every broker keeps it). The note keeps
    /// the skips of the last few commits, each under its offset: a process killed between a
    /// note and its commit leaves the skips of the commit before in it. Blocks.
    fn put_hand_over_note(&self, key: &(String, i32), from: i64, skips: &[SkipRange]) {
        if skips.is_empty() {
            return;
        }
        let Some(b) = &self.barriers else { return };
        let name = self.note_name(key);
        let mut notes: Vec<serde_json::Value> = b.0.note(&name).and_then(|n| serde_json::from_str(&n).ok()).unwrap_or_default();
        notes.retain(|n| n.get("offset").and_then(serde_json::Value::as_i64) != Some(from));
        notes.push(serde_json::json!({ "offset": from, "metadata": super::replay::metadata(skips) }));
        let excess = notes.len().saturating_sub(NOTES_KEPT);
        notes.drain(..excess);
        b.0.put_note(&name, &serde_json::Value::Array(notes).to_string());
    }

    /// The skips noted for `key` committed at `offset`, if a note is of that commit.
    fn hand_over_note(&self, key: &(String, i32), offset: i64) -> Option<String> {
        let notes: Vec<serde_json::Value> = serde_json::from_str(&self.barriers.as_ref()?.0.note(&self.note_name(key))?).ok()?;
        let note = notes.iter().rev().find(|n| n.get("offset").and_then(serde_json::Value::as_i64) == Some(offset))?;
        note.get("metadata")?.as_str().map(str::to_string)
    }

    /// Drains what the job read from `parts` to its sinks (a barrier) and commits it, so that
    /// their next owner starts exactly there.
    fn hand_over(&self, consumer: &Member, parts: &[(String, i32)]) {
        let Some(barriers) = &self.barriers else {
            warn!(source = %self.name, "giving up {} partitions without a barrier: their new owner may read some rows again", parts.len());
            return;
        };
        if self.positions.replaying() {
            self.hand_over_replaying(consumer, parts, barriers);
            return;
        }
        let Some(positions) = barriers.0.request_and_wait(&self.name, REVOKE_DRAIN_WAIT) else {
            warn!(source = %self.name, "the job did not drain within {}s while giving up {} partitions: their new owner may read some rows again", REVOKE_DRAIN_WAIT.as_secs(), parts.len());
            return;
        };
        let mut commit = TopicPartitionList::new();
        for (t, p) in parts {
            if let Some(o) = positions.get(&position_key(t, *p)).and_then(serde_json::Value::as_i64) {
                let _ = commit.add_partition_offset(t, *p, Offset::Offset(o));
            }
        }
        if commit.count() == 0 {
            return;
        }
        match consumer.commit(&commit, CommitMode::Sync) {
            Ok(()) => debug!(source = %self.name, "committed {} partitions given away", commit.count()),
            Err(e) => warn!(source = %self.name, "commit of partitions given away failed (their new owner reads some rows again): {e}"),
        }
    }

    /// Hands `parts` over in a job that rebuilds its windows by reading rows again (see
    /// [`super::replay`]): every reader holds; at the barrier the operators drop their open
    /// windows; `parts` are committed at their replay points, the metadata naming what to skip,
    /// and the partitions this process keeps are sought back to theirs.
    fn hand_over_replaying(&self, consumer: &Member, parts: &[(String, i32)], barriers: &JobBarriers) {
        self.positions.pause();
        let reply = barriers.0.request_replay_and_wait(&self.name, REVOKE_DRAIN_WAIT);
        let Some((positions, t)) = reply else {
            self.positions.resume();
            barriers.0.hand_over_done();
            warn!(source = %self.name, "the job did not drain within {}s while giving up {} partitions: their new owner may read some rows again", REVOKE_DRAIN_WAIT.as_secs(), parts.len());
            return;
        };
        let at = |k: &(String, i32)| positions.get(&position_key(&k.0, k.1)).and_then(serde_json::Value::as_i64);
        let mut commit = TopicPartitionList::new();
        for key in parts {
            let Some(pos) = at(key) else { continue };
            self.add_replay_commit(&mut commit, key, pos, t);
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => debug!(source = %self.name, "committed {} partitions given away at their replay points", commit.count()),
                Err(e) => warn!(source = %self.name, "commit of partitions given away failed (their new owner reads some rows again): {e}"),
            }
        }
        // the partitions kept: their rows in the windows just dropped are read again
        let owned = consumer.assignment().map(|a| partitions(&a)).unwrap_or_default();
        for key in owned.iter().filter(|k| !parts.contains(k)) {
            let Some(pos) = at(key) else { continue };
            let point = self.positions.replays().replay_point(key, pos, t);
            let Some((from, skips)) = point else {
                warn!(source = %self.name, "{}/{}: no replay log (restored from a checkpoint of an older version): the rows of its open windows are lost", key.0, key.1);
                continue;
            };
            if from >= pos {
                continue;
            }
            match consumer.seek(&key.0, key.1, Offset::Offset(from), Duration::from_secs(5)) {
                Ok(()) => {
                    // the position first: a checkpoint in between never holds the old one
                    // without the log
                    self.positions.rewound(key, from);
                    self.positions.replays().rewind(key, pos, skips);
                    debug!(source = %self.name, "{}/{}: reading again from {from} (was at {pos})", key.0, key.1);
                }
                Err(e) => error!(
                    source = %self.name,
                    "{}/{}: cannot seek back to {from} ({e}): the rows of its open windows, from offset {from} to {pos}, are lost",
                    key.0,
                    key.1
                ),
            }
        }
        self.positions.resume();
        barriers.0.hand_over_done();
    }

    fn revoke(&self, consumer: &Member, tpl: &TopicPartitionList, error: bool) {
        let parts = partitions(tpl);
        let all = error || !matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        self.positions.revoke(&parts);
        for s in &self.slots {
            s.notify.notify_one();
        }
        if consumer.assignment_lost() || error {
            info!(source = %self.name, "lost {} partitions (the group session expired): their rows may be read again by their new owner", parts.len());
            let had = self.positions.positions_of(&parts);
            // checkpoints keep where they were: the rows up to there are in the job's state
            self.positions.carry(had.iter().cloned());
            lock(&self.resume_lost).extend(had);
        } else if !self.closing.load(Ordering::Acquire) {
            self.hand_over(consumer, &parts);
        }
        self.positions.forget(&parts, consumer.assignment_lost() || error);
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
        if self.positions.is_revoked(msg.topic(), msg.partition()) {
            // given away meanwhile: its new owner reads it
            debug!(source = %self.name, "message {}/{}@{} of a partition given away: dropped", msg.topic(), msg.partition(), msg.offset());
            return;
        }
        // a partition without a queue of its own: the first reader takes its messages
        lock(&self.slots[0].strays).push_back(msg);
        self.slots[0].notify.notify_one();
    }
}

/// Adds `key` at offset `from` to `commit`, its metadata naming `skips`.
fn add_commit_with_skips(commit: &mut TopicPartitionList, key: &(String, i32), from: i64, skips: &[SkipRange]) {
    if commit.add_partition_offset(&key.0, key.1, Offset::Offset(from)).is_err() {
        return;
    }
    if let Some(mut e) = commit.find_partition(&key.0, key.1) {
        e.set_metadata(super::replay::metadata(skips));
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
                if let Some((topics, hold)) = &shared.hold {
                    // before the first assignment (served by the poll below): every partition
                    // of the topics, whoever holds it now, may come to this member — a killed
                    // process's member keeps its partitions until its session times out, and
                    // rows read meanwhile from the others must not carry the watermark past
                    // theirs
                    let mut all = Vec::new();
                    for t in topics {
                        match consumer.fetch_metadata(Some(t), Duration::from_secs(5)) {
                            Ok(md) => all.extend(md.topics().iter().flat_map(|mt| mt.partitions().iter().map(|p| (mt.name().to_string(), p.id())))),
                            Err(e) => warn!(source = %shared.name, "cannot read the partitions of {t} ({e}): event time does not wait for them"),
                        }
                    }
                    shared.positions.await_partitions(all, *hold);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Frontier;

    fn tp(p: i32) -> (String, i32) {
        ("t".to_string(), p)
    }

    #[test]
    fn a_partition_whose_rows_have_no_event_time_goes_idle() {
        let r = ReadPositions::new(1);
        r.track(0, "t", 0);
        r.track(0, "t", 1);
        let idle = Duration::from_millis(50);
        r.delivered(0, [(tp(0), Some(1000))]);
        assert!(matches!(r.frontier(0, idle), Some(Frontier::Holding)), "partition 1 has given no time yet");
        std::thread::sleep(Duration::from_millis(60));
        // partition 1 keeps delivering rows without a time; partition 0 rows with one
        r.delivered(0, [(tp(1), None), (tp(0), Some(2000))]);
        assert!(matches!(r.frontier(0, idle), Some(Frontier::At(2000))), "{:?}", r.frontier(0, idle));
    }

    #[test]
    fn awaited_partitions_hold_until_assigned_or_the_deadline() {
        let r = ReadPositions::new(1);
        r.track(0, "t", 0);
        r.delivered(0, [(tp(0), Some(5))]);
        let idle = Duration::from_secs(60);
        r.await_partitions([tp(1)], Duration::from_secs(60));
        assert!(matches!(r.frontier(0, idle), Some(Frontier::Holding)));
        r.assigned(&[tp(1)]);
        assert!(matches!(r.frontier(0, idle), Some(Frontier::At(5))));
        r.await_partitions([tp(2)], Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(r.frontier(0, idle), Some(Frontier::At(5))), "the hold ends at its deadline");
    }

    #[test]
    fn a_partition_taken_over_waits_at_its_hold_until_the_windows_before_it_are_emitted() {
        let r = ReadPositions::new(1);
        r.track(0, "t", 0);
        r.track(0, "t", 1);
        r.delivered(0, [(tp(0), Some(9_000))]);
        let idle = Duration::from_secs(60);
        r.take_over(tp(1), 4_000, 6_000);
        assert!(r.is_taken("t", 1) && !r.is_taken("t", 0));
        assert_eq!(r.frontier(0, idle), Some(Frontier::At(6_000)), "held at the other process's event time");
        assert_eq!(r.release_taken(Some(3_000)), 0, "this process has not emitted its windows before 4000 yet");
        assert_eq!(r.release_taken(Some(4_000)), 1);
        assert!(!r.waiting_taken() && !r.is_taken("t", 1));
        assert_eq!(r.frontier(0, idle), Some(Frontier::Holding), "read again: holds until its first row");
        r.take_over(tp(1), 4_000, 6_000);
        r.forget(&[tp(1)], false);
        assert!(!r.waiting_taken(), "given away meanwhile");
        r.take_over(tp(0), 4_000, 6_000);
        assert_eq!(r.release_taken(None), 1, "a job that does not say lets it go");
    }

    #[test]
    fn restored_positions_are_carried_until_read_again() {
        let r = ReadPositions::new(2);
        r.carry([(tp(0), 10), (tp(1), 20)]);
        assert_eq!(r.of_reader(0).get("t/0").and_then(serde_json::Value::as_i64), Some(10));
        assert!(r.of_reader(1).is_empty(), "carried once, by the first reader");
        r.record(1, vec![(tp(1), 25)]);
        let first = r.of_reader(0);
        assert_eq!(first.get("t/1"), None, "read again: no longer carried");
        assert_eq!(r.of_reader(1).get("t/1").and_then(serde_json::Value::as_i64), Some(25));
        assert_eq!(r.positions_of(&[tp(1)]), vec![(tp(1), 25)]);
    }
}
