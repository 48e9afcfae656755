//! At-least-once delivery: a source's read positions (Kafka offsets) are committed only once
//! every sink has acknowledged the rows read before them.
//!
//! The job runner drives *commit barriers*. Each reader of a source (one Kafka consumer)
//! registers with the source's [`CommitGate`]. A reader is *quiet* once the job has asked it
//! for its next batch (so the batch it handed out last has left the reader's pipeline) and it
//! holds back any new batch while a barrier is open. When every reader is quiet, the runner
//! drains what is still in flight, has every sink flush (a Kafka sink waits for its delivery
//! reports), and releases the barrier with `commit = true`: each reader's positions as of the
//! barrier are committed. A barrier that cannot complete (an operator stopped reading one input)
//! is released without committing and tried again later, so it never stalls the job.
//!
//! ```sql
//! SELECT * FROM orders INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.commit.interval' = '1s', …)
//! ```
//!
//! Operators that keep state (windows, joins) hold rows the sinks have not seen yet: their
//! input is committed once consumed, so a restart re-reads from the last commit and state
//! still open at a crash is rebuilt only from what was not yet committed.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Commits positions for one reader (a Kafka consumer commits offsets).
pub trait PositionCommitter: Send + Sync + Debug {
    /// Commits `positions`: (topic, partition, next offset to read). With `wait`, returns
    /// once the commit is durable (the last commit before a job stops); otherwise it may
    /// complete in the background, off the job's path.
    fn commit(&self, positions: &[(String, i32, i64)], wait: bool);
}

#[derive(Debug, Default)]
struct ReaderState {
    /// Positions after the last batch handed out.
    emitted: HashMap<(String, i32), i64>,
    /// True between handing a batch out and being asked for the next one.
    in_flight: bool,
    /// The reader has ended.
    finished: bool,
}

#[derive(Debug, Default)]
struct GateState {
    readers: HashMap<usize, ReaderState>,
    committers: HashMap<usize, std::sync::Arc<dyn PositionCommitter>>,
    next_reader: usize,
    /// A barrier is open.
    open: bool,
    /// Partitions taken away by a rebalance: positions read from them are no longer recorded.
    revoked: HashSet<(String, i32)>,
    /// Barriers released so far, and whether the last one committed.
    released: u64,
    last_committed: bool,
}

/// The barrier shared by a source's readers and the job runner.
#[derive(Debug)]
pub struct CommitGate {
    state: Mutex<GateState>,
    /// True while a barrier is open: readers hold new batches back.
    open: watch::Sender<bool>,
    /// How often the runner opens a barrier.
    interval: Duration,
    /// Asks the runner for a barrier now (a rebalance is about to give partitions away).
    request: tokio::sync::Notify,
    /// Signalled when a barrier is released.
    released: Condvar,
    /// Bumped whenever partitions are revoked, so readers notice cheaply.
    revocations: AtomicU64,
    /// The runner has stopped: nobody will open a barrier any more.
    closed: AtomicBool,
}

impl CommitGate {
    /// A gate whose barriers are opened every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            state: Mutex::new(GateState::default()),
            open: watch::channel(false).0,
            interval,
            request: tokio::sync::Notify::new(),
            released: Condvar::new(),
            revocations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// How often barriers should be opened.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a reader; returns its id.
    pub fn register(&self, committer: std::sync::Arc<dyn PositionCommitter>) -> usize {
        let mut s = self.lock();
        let id = s.next_reader;
        s.next_reader += 1;
        s.readers.insert(id, ReaderState::default());
        s.committers.insert(id, committer);
        id
    }

    /// The reader `id` has been asked for its next batch: what it handed out before is past it.
    pub fn polled(&self, id: usize) {
        if let Some(r) = self.lock().readers.get_mut(&id) {
            r.in_flight = false;
        }
    }

    /// Waits while a barrier is open, then records that the reader `id` hands out a batch
    /// ending at `positions`. Positions of partitions revoked meanwhile are not recorded: the
    /// partitions returned are those, whose rows the reader must drop (their new owner reads
    /// them).
    pub async fn before_emit(&self, id: usize, positions: impl IntoIterator<Item = ((String, i32), i64)>) -> Vec<(String, i32)> {
        let positions = positions.into_iter();
        let mut rx = self.open.subscribe();
        loop {
            {
                // Checked and recorded under one lock, so that a barrier opened meanwhile
                // never commits a batch that is only now leaving.
                let mut s = self.lock();
                if !s.open {
                    let s = &mut *s;
                    let mut dropped = Vec::new();
                    if let Some(r) = s.readers.get_mut(&id) {
                        r.in_flight = true;
                        for (k, o) in positions {
                            if s.revoked.contains(&k) {
                                dropped.push(k);
                            } else {
                                r.emitted.insert(k, o);
                            }
                        }
                    }
                    return dropped;
                }
            }
            // An error means the gate is gone: nothing to wait for.
            if rx.wait_for(|open| !*open).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Partitions a rebalance is taking away: from now on no position of theirs is recorded,
    /// and readers drop their rows not yet handed out ([`CommitGate::is_revoked`]).
    pub fn revoke(&self, partitions: &[(String, i32)]) {
        self.lock().revoked.extend(partitions.iter().cloned());
        self.revocations.fetch_add(1, Ordering::AcqRel);
    }

    /// Partitions assigned (again): their positions are recorded.
    pub fn assigned(&self, partitions: &[(String, i32)]) {
        let mut s = self.lock();
        for p in partitions {
            s.revoked.remove(p);
        }
    }

    /// True when `partition` of `topic` has been revoked.
    pub fn is_revoked(&self, topic: &str, partition: i32) -> bool {
        self.lock().revoked.iter().any(|(t, p)| *p == partition && t == topic)
    }

    /// A counter bumped by every revocation: unchanged means nothing was revoked meanwhile.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// The positions recorded for `partitions`, over every reader: (topic, partition, next offset).
    pub fn positions_of(&self, partitions: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        let s = self.lock();
        let mut out: HashMap<(String, i32), i64> = HashMap::new();
        for r in s.readers.values() {
            for (k, o) in &r.emitted {
                if partitions.contains(k) {
                    let e = out.entry(k.clone()).or_insert(*o);
                    *e = (*e).max(*o);
                }
            }
        }
        out.into_iter().map(|((t, p), o)| (t, p, o)).collect()
    }

    /// Forgets the positions of `partitions` (given away by a rebalance) in every reader.
    pub fn forget(&self, partitions: &[(String, i32)]) {
        for r in self.lock().readers.values_mut() {
            r.emitted.retain(|k, _| !partitions.contains(k));
        }
    }

    /// Asks the runner for a barrier and waits (blocking the calling thread, at most `wait`)
    /// until one has been released; true when it committed. False at once when the runner has
    /// stopped. Called from a consumer's rebalance callback, on its own thread.
    pub fn request_barrier(&self, wait: Duration) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let deadline = Instant::now() + wait;
        let mut s = self.lock();
        let target = s.released + 1;
        self.request.notify_one();
        while s.released < target && !self.closed.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.released.wait_timeout(s, left.min(Duration::from_millis(100))).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        s.released >= target && s.last_committed
    }

    /// Resolves when a barrier has been asked for ([`CommitGate::request_barrier`]).
    pub async fn requested(&self) {
        self.request.notified().await;
    }

    /// The runner has stopped: requests are answered at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _s = self.lock();
        self.released.notify_all();
    }

    /// True once [`CommitGate::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The reader `id` has ended; it no longer holds a barrier up.
    pub fn finish(&self, id: usize) {
        if let Some(r) = self.lock().readers.get_mut(&id) {
            r.finished = true;
            r.in_flight = false;
        }
    }

    /// Opens a barrier: readers hold new batches back.
    pub fn open(&self) {
        self.lock().open = true;
        self.open.send_replace(true);
    }

    /// True when no reader has a batch in the pipeline.
    pub fn quiet(&self) -> bool {
        self.lock().readers.values().all(|r| r.finished || !r.in_flight)
    }

    /// Closes the barrier. With `commit`, every reader's positions are committed (call only
    /// when [`CommitGate::quiet`] held and the sinks have acknowledged everything).
    pub fn release(&self, commit: bool) {
        self.release_with(commit, false);
    }

    /// [`CommitGate::release`] for the last barrier of a stopping job: the commit is waited for.
    pub fn release_final(&self, commit: bool) {
        self.release_with(commit, true);
    }

    fn release_with(&self, commit: bool, wait: bool) {
        let mut s = self.lock();
        if commit {
            for (id, r) in &s.readers {
                if r.emitted.is_empty() {
                    continue;
                }
                if let Some(c) = s.committers.get(id) {
                    let positions: Vec<(String, i32, i64)> = r.emitted.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
                    c.commit(&positions, wait);
                }
            }
        }
        s.open = false;
        s.released += 1;
        s.last_committed = commit;
        drop(s);
        self.released.notify_all();
        self.open.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<(String, i32, i64)>>);
    impl PositionCommitter for Log {
        fn commit(&self, positions: &[(String, i32, i64)], _wait: bool) {
            self.0.lock().unwrap().extend_from_slice(positions);
        }
    }

    #[tokio::test]
    async fn commits_only_what_left_the_reader() {
        let gate = Arc::new(CommitGate::new(Duration::from_secs(1)));
        let log = Arc::new(Log::default());
        let id = gate.register(log.clone());
        gate.before_emit(id, [(("t".to_string(), 0), 10)]).await;
        assert!(!gate.quiet(), "a batch is in the pipeline");
        gate.open();
        // While open, the reader cannot hand out another batch.
        let g2 = Arc::clone(&gate);
        let held = tokio::spawn(async move { g2.before_emit(id, [(("t".to_string(), 0), 20)]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished());
        gate.polled(id);
        assert!(gate.quiet());
        gate.release(true);
        held.await.unwrap();
        assert_eq!(log.0.lock().unwrap().as_slice(), &[("t".to_string(), 0, 10)]);
    }
}
