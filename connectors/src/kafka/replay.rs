//! Handing windows over between processes by reading their rows again.
//!
//! Two `ferris-sql run` processes of one job share a topic through the consumer group. When
//! partitions change hands, the rows they already gave to open windows are in the old owner's
//! state, which the new owner does not have. For a job whose stateful operators are `TUMBLE`
//! or `HOP` windows emitting final results, the engine does not move that state: the old owner drops
//! its open windows at the hand-over barrier, and every partition's open-window rows are read
//! again — by the new owner for the partitions it takes, by the old owner for those it keeps.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*) FROM orders GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), k INTO out
//! -- two processes of this job: each window of each key is emitted once, by one of them
//! ```
//!
//! What makes it exact:
//! - The operators report `T`, the start of the oldest open window: every row with an event
//!   time before `T` is in a window already emitted (or was late).
//! - Per partition, the source keeps a short log of the batches it handed out (first offset,
//!   latest event time): the *replay point* is the first offset of the first batch holding a
//!   row at or after `T`; nothing before it is in an open window.
//! - The group's offset is committed at the replay point, its metadata naming the *skip*
//!   `(until, T)`: a reader of the partition drops rows below offset `until` whose event time
//!   is before `T` (they are in emitted windows), and keeps the others (their windows are
//!   open, and nobody holds them any more).
//! - A process keeping a partition seeks it back to its replay point with the same skip;
//!   messages fetched before the seek (at or after `until`) are dropped until the replayed
//!   ones come, and the partition holds event time back until its rows come again.
//! - A process taking a partition over does not read it until it has emitted its own windows
//!   before `T` (the skip names `T` and how far the old owner's event time had got, its
//!   *hold*); meanwhile the partition holds this process's event time at the hold. A `HOP` row
//!   is in several windows: read again, it must count in the ones still open and not in one
//!   the old owner emitted — which is then closed here too, so the row is late for it alone.

use std::collections::{HashMap, VecDeque};

use crate::checkpoint::ReplayTime;

/// The commit metadata of a partition with skips: `ferris-replay:v1:` and `until@before`
/// pairs, comma separated, then `h@hold`, the hold of the skip with the latest `before` (a
/// token older versions pass over).
const METADATA_PREFIX: &str = "ferris-replay:v1:";

/// The metadata token naming the hold (see [`metadata`]).
const HOLD_TOKEN: &str = "h@";

/// Log entries kept per partition before neighbours are merged (a merge keeps the earlier
/// offset and the later time, so a replay point never moves past a row it needs).
const MAX_LOG: usize = 512;

/// How long after a seek back messages at or after the old position count as fetched before
/// it: the replayed ones come within it (librdkafka drops most of the old ones itself).
const STALE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Entries a checkpoint keeps of a partition's log.
const CHECKPOINT_LOG: usize = 32;

/// What a reader does with one message of a partition being replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it out.
    Keep,
    /// Drop it: it is in a window already emitted. Its position counts as read.
    Skip,
    /// Drop it: fetched before the partition was sought back; it comes again later. Its
    /// position does not count.
    Stale,
}

/// Rows of a partition a reader drops: below `until`, with an event time before `before`.
/// A process taking the partition over holds it until its own windows before `before` are
/// emitted, its event time held at `hold` meanwhile (see [`crate::checkpoint::ReplayTime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SkipRange {
    pub until: i64,
    pub before: i64,
    pub hold: i64,
}

#[derive(Debug, Default)]
struct PartitionReplay {
    /// Batches handed out: (first offset, latest event time), in offset order.
    log: VecDeque<(i64, i64)>,
    /// The log covers every row of the partition that may be in operator state (false for a
    /// partition restored from a checkpoint without a log: it is committed as read).
    known: bool,
    skips: Vec<SkipRange>,
    /// Sought back from this offset: messages at or after it are stale until an older one
    /// comes (or, should none come — the rows removed meanwhile — until the deadline).
    stale_from: Option<(i64, std::time::Instant)>,
}

/// Every partition's replay log and skips.
#[derive(Debug, Default)]
pub(crate) struct Replays {
    parts: HashMap<(String, i32), PartitionReplay>,
}

impl Replays {
    /// True when some partition has skips or stale messages to drop.
    pub fn screening(&self) -> bool {
        self.parts.values().any(|p| !p.skips.is_empty() || p.stale_from.is_some())
    }

    /// A partition assigned to this process, starting at the group's offset: its log starts
    /// empty (nothing of it is in state) and it drops what `metadata` says is emitted.
    /// Returns the `(before, hold)` of the skip with the latest `before`, if it names a hold:
    /// the partition waits until this process has emitted its windows before `before` (a `HOP`
    /// window emitted by the other process must not be emitted here with a share of its rows).
    pub fn assigned(&mut self, key: (String, i32), metadata: Option<&str>) -> Option<(i64, i64)> {
        let skips = metadata.map(parse_metadata).unwrap_or_default();
        // (no hold: `TUMBLE` windows, whose rows read again are in open windows only, or a
        // note of an older version — nothing to wait for)
        let gate = skips.iter().max_by_key(|s| s.before).map(|s| (s.before, s.hold)).filter(|&(before, hold)| before > i64::MIN && hold > i64::MIN);
        self.parts.insert(key, PartitionReplay { known: true, skips, ..PartitionReplay::default() });
        gate
    }

    /// A partition restored from a checkpoint with `log` (none: an older checkpoint).
    pub fn restored(&mut self, key: (String, i32), log: Option<Vec<(i64, i64)>>) {
        let known = log.is_some();
        self.parts.insert(key, PartitionReplay { log: log.unwrap_or_default().into(), known, ..PartitionReplay::default() });
    }

    /// Whether `key` has a replay state.
    pub fn has(&self, key: &(String, i32)) -> bool {
        self.parts.contains_key(key)
    }

    /// Forgets partitions given away.
    pub fn forget(&mut self, parts: &[(String, i32)]) {
        for p in parts {
            self.parts.remove(p);
        }
    }

    /// What to do with the message at `offset` of `key`, whose event time is `time`.
    pub fn screen(&mut self, key: &(String, i32), offset: i64, time: Option<i64>) -> Verdict {
        let Some(p) = self.parts.get_mut(key) else { return Verdict::Keep };
        if let Some((from, until)) = p.stale_from {
            if offset >= from && std::time::Instant::now() < until {
                return Verdict::Stale;
            }
            p.stale_from = None;
        }
        if p.skips.is_empty() {
            return Verdict::Keep;
        }
        p.skips.retain(|s| offset < s.until);
        match time {
            Some(t) if p.skips.iter().any(|s| offset < s.until && t < s.before) => Verdict::Skip,
            _ => Verdict::Keep,
        }
    }

    /// A batch handed out rows of `key` from `first` on, the latest at event time `latest`.
    pub fn log(&mut self, key: (String, i32), first: i64, latest: i64) {
        let p = self.parts.entry(key).or_insert_with(|| PartitionReplay { known: true, ..PartitionReplay::default() });
        p.log.push_back((first, latest));
        if p.log.len() > MAX_LOG {
            merge_neighbours(&mut p.log);
        }
    }

    /// Where a process without this one's state starts reading `key` (read up to `position`)
    /// when every row before event time `t` is in emitted windows, and the skips it applies:
    /// `None` when the partition's log does not cover its state (commit `position` as read).
    pub fn replay_point(&mut self, key: &(String, i32), position: i64, replay: ReplayTime) -> Option<(i64, Vec<SkipRange>)> {
        let t = replay.from;
        let p = self.parts.get_mut(key)?;
        if !p.known {
            return None;
        }
        // entries whose rows are all before `t` can never be needed again (`t` only grows)
        p.log.retain(|&(_, latest)| latest >= t);
        let from = p.log.front().map_or(position, |&(first, _)| first.min(position));
        if from >= position {
            // nothing to read again; skips this process is still inside go on to the next owner
            return Some((position, p.skips.iter().copied().filter(|s| s.until > position).collect()));
        }
        let mut skips: Vec<SkipRange> = p.skips.iter().copied().filter(|s| s.until > from).collect();
        skips.push(SkipRange { until: position, before: t, hold: replay.hold });
        Some((from, skips))
    }

    /// `key`, read up to `position`, is sought back to `from` with `skips`: until the replayed
    /// messages come, the ones fetched before are stale.
    pub fn rewind(&mut self, key: &(String, i32), position: i64, skips: Vec<SkipRange>) {
        if let Some(p) = self.parts.get_mut(key) {
            p.log.clear();
            p.skips = skips;
            p.stale_from = Some((position, std::time::Instant::now() + STALE_LIMIT));
        }
    }

    /// The log of `key` for a checkpoint, at most a few entries (neighbours merged).
    pub fn checkpoint_log(&self, key: &(String, i32)) -> Option<Vec<(i64, i64)>> {
        let p = self.parts.get(key).filter(|p| p.known)?;
        let mut log = p.log.clone();
        while log.len() > CHECKPOINT_LOG {
            merge_neighbours(&mut log);
        }
        Some(log.into_iter().collect())
    }

    /// The partitions with a log, for checkpoints.
    pub fn keys(&self) -> Vec<(String, i32)> {
        self.parts.iter().filter(|(_, p)| p.known).map(|(k, _)| k.clone()).collect()
    }
}

/// Halves `log`, each pair of neighbours becoming one entry that covers both.
fn merge_neighbours(log: &mut VecDeque<(i64, i64)>) {
    let merged: VecDeque<(i64, i64)> =
        log.iter().collect::<Vec<_>>().chunks(2).map(|c| (c.iter().map(|e| e.0).min().unwrap_or(0), c.iter().map(|e| e.1).max().unwrap_or(i64::MIN))).collect();
    *log = merged;
}

/// The commit metadata naming `skips`.
pub(crate) fn metadata(skips: &[SkipRange]) -> String {
    if skips.is_empty() {
        return String::new();
    }
    let mut tokens: Vec<String> = skips.iter().map(|s| format!("{}@{}", s.until, s.before)).collect();
    if let Some(latest) = skips.iter().max_by_key(|s| s.before).filter(|s| s.hold > i64::MIN) {
        tokens.push(format!("{HOLD_TOKEN}{}", latest.hold));
    }
    format!("{METADATA_PREFIX}{}", tokens.join(","))
}

/// The skips of commit metadata written by [`metadata`]; anything else (another tool's
/// metadata) names none.
pub(crate) fn parse_metadata(m: &str) -> Vec<SkipRange> {
    let Some(rest) = m.strip_prefix(METADATA_PREFIX) else { return Vec::new() };
    let mut hold = i64::MIN;
    let mut skips: Vec<SkipRange> = rest
        .split(',')
        .filter_map(|token| {
            if let Some(h) = token.trim().strip_prefix(HOLD_TOKEN) {
                hold = h.parse().unwrap_or(i64::MIN);
                return None;
            }
            let (u, b) = token.split_once('@')?;
            Some(SkipRange { until: u.trim().parse().ok()?, before: b.trim().parse().ok()?, hold: i64::MIN })
        })
        .collect();
    // (metadata of an older version names no hold: nothing to wait for)
    if let Some(latest) = skips.iter_mut().max_by_key(|s| s.before) {
        latest.hold = hold;
    }
    skips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> (String, i32) {
        ("t".to_string(), 0)
    }

    /// Windows before `t` emitted, event time 500 ms past it.
    fn rt(t: i64) -> ReplayTime {
        ReplayTime { from: t, hold: t + 500 }
    }

    #[test]
    fn a_taken_partition_waits_for_the_newest_skip_and_older_notes_name_no_hold() {
        let mut r = Replays::default();
        let meta = metadata(&[SkipRange { until: 50, before: 1000, hold: 1500 }, SkipRange { until: 70, before: 1200, hold: 1700 }]);
        assert_eq!(meta, "ferris-replay:v1:50@1000,70@1200,h@1700");
        assert_eq!(r.assigned(k(), Some(&meta)), Some((1200, 1700)));
        // an older version's metadata, or a `TUMBLE` job's (no hold): nothing to wait for
        assert_eq!(r.assigned(k(), Some("ferris-replay:v1:50@1000")), None);
        assert_eq!(r.assigned(k(), Some(&metadata(&[SkipRange { until: 50, before: 1000, hold: i64::MIN }]))), None);
        assert_eq!(r.assigned(k(), None), None);
        // an older version reading this metadata: `h@…` is no pair of numbers, passed over
        let old_parse = |m: &str| -> Vec<(i64, i64)> {
            m.strip_prefix(METADATA_PREFIX)
                .unwrap()
                .split(',')
                .filter_map(|p| p.split_once('@'))
                .filter_map(|(u, b)| Some((u.parse().ok()?, b.parse().ok()?)))
                .collect()
        };
        assert_eq!(old_parse(&meta), vec![(50, 1000), (70, 1200)]);
    }

    #[test]
    fn the_replay_point_is_the_first_batch_with_a_row_in_an_open_window() {
        let mut r = Replays::default();
        r.assigned(k(), None);
        r.log(k(), 0, 900);
        r.log(k(), 10, 1500);
        r.log(k(), 20, 1200); // out of order: an older row after a newer one
        r.log(k(), 30, 2100);
        // rows before 1000 are emitted: the batch at 10 holds a later one
        assert_eq!(r.replay_point(&k(), 40, rt(1000)), Some((10, vec![SkipRange { until: 40, before: 1000, hold: 1000 + 500 }])));
        // before 2000: only the batch at 30 (the one at 20 ends at 1200, pruned)
        assert_eq!(r.replay_point(&k(), 40, rt(2000)), Some((30, vec![SkipRange { until: 40, before: 2000, hold: 2000 + 500 }])));
        // everything emitted: start where reading got, nothing to skip
        assert_eq!(r.replay_point(&k(), 40, rt(5000)), Some((40, vec![])));
    }

    #[test]
    fn a_restored_partition_without_a_log_is_committed_as_read() {
        let mut r = Replays::default();
        r.restored(k(), None);
        assert_eq!(r.replay_point(&k(), 40, rt(1000)), None);
        r.restored(k(), Some(vec![(5, 1200)]));
        assert_eq!(r.replay_point(&k(), 40, rt(1000)).map(|p| p.0), Some(5));
    }

    #[test]
    fn skips_drop_emitted_rows_and_stale_messages_until_the_replay_comes() {
        let mut r = Replays::default();
        r.assigned(k(), Some(&metadata(&[SkipRange { until: 50, before: 1000, hold: 1000 + 500 }])));
        assert_eq!(r.screen(&k(), 10, Some(999)), Verdict::Skip);
        assert_eq!(r.screen(&k(), 11, Some(1000)), Verdict::Keep);
        assert_eq!(r.screen(&k(), 12, None), Verdict::Keep);
        assert_eq!(r.screen(&k(), 50, Some(10)), Verdict::Keep, "past `until`: a late row, the window operator's to judge");
        assert!(!r.screening());
        // sought back: what was fetched before (at or after 60) is stale until 20 comes
        r.log(k(), 51, 1500);
        let (from, skips) = r.replay_point(&k(), 60, rt(1400)).unwrap();
        assert_eq!(from, 51);
        r.rewind(&k(), 60, skips);
        assert!(r.screening());
        assert_eq!(r.screen(&k(), 60, Some(2000)), Verdict::Stale);
        assert_eq!(r.screen(&k(), 61, Some(2000)), Verdict::Stale);
        assert_eq!(r.screen(&k(), 51, Some(1300)), Verdict::Skip);
        assert_eq!(r.screen(&k(), 52, Some(1450)), Verdict::Keep);
        assert_eq!(r.screen(&k(), 60, Some(2000)), Verdict::Keep, "read again now");
    }

    #[test]
    fn a_new_owner_still_skipping_hands_its_skips_on() {
        let mut r = Replays::default();
        r.assigned(k(), Some(&metadata(&[SkipRange { until: 90, before: 1000, hold: 1000 + 500 }])));
        // every row so far skipped: nothing logged, nothing to read again, the skip still ahead
        assert_eq!(r.screen(&k(), 40, Some(500)), Verdict::Skip);
        assert_eq!(r.replay_point(&k(), 41, rt(800)), Some((41, vec![SkipRange { until: 90, before: 1000, hold: 1000 + 500 }])));
        assert_eq!(r.replay_point(&k(), 95, rt(800)), Some((95, vec![])));
    }

    #[test]
    fn skips_still_ahead_are_handed_on() {
        let mut r = Replays::default();
        r.assigned(k(), Some(&metadata(&[SkipRange { until: 50, before: 1000, hold: 1000 + 500 }])));
        r.log(k(), 20, 1100);
        // the new owner's own windows open from 1050: the old skip still covers 20..50
        let (from, skips) = r.replay_point(&k(), 70, rt(1050)).unwrap();
        assert_eq!(from, 20);
        assert_eq!(skips, vec![SkipRange { until: 50, before: 1000, hold: 1000 + 500 }, SkipRange { until: 70, before: 1050, hold: 1050 + 500 }]);
        // the metadata keeps the latest skip's hold (the one a new owner waits for)
        assert_eq!(
            parse_metadata(&metadata(&skips)),
            vec![SkipRange { until: 50, before: 1000, hold: i64::MIN }, SkipRange { until: 70, before: 1050, hold: 1550 }]
        );
        assert!(parse_metadata("someone else's").is_empty());
    }

    #[test]
    fn a_long_log_is_merged_without_moving_a_replay_point_past_a_needed_row() {
        let mut r = Replays::default();
        r.assigned(k(), None);
        for i in 0..2000 {
            r.log(k(), i * 10, i * 100);
        }
        assert!(r.parts[&k()].log.len() <= MAX_LOG);
        // the first row at or after 150_000 is at offset 15_000; a merged entry may start earlier
        let (from, _) = r.replay_point(&k(), 20_000, rt(150_000)).unwrap();
        assert!(from <= 15_000 && from > 14_000, "{from}");
        let log = r.checkpoint_log(&k()).unwrap();
        assert!(log.len() <= CHECKPOINT_LOG);
        assert!(log[0].0 <= from);
    }
}
