//! Watermarks with bounded out-of-orderness, tracked per input partition.
//!
//! A partition's watermark is the largest event time it has delivered minus the allowed delay;
//! an operator's watermark is the smallest over its input partitions, skipping partitions that
//! have finished or have been idle longer than `idle_timeout`. It never goes back. When every
//! input has finished the watermark jumps to the end of time, so every open window closes.
//! Without a delay (a bounded job that sets no `watermark.delay`) the watermark stays at the
//! start until the input ends: results are exact whatever the order of the rows. Where the
//! sources know the least event time still to come of each partition (Parquet files, from
//! their row groups' statistics: see `crate::event_time::floor`), the watermark goes up to it,
//! delay or not: windows close as the files are read and no row becomes late.
//!
//! ```sql
//! WITH ('clicks.event_time' = 'ts', 'clicks.watermark.delay' = '5s', 'clicks.idle_timeout' = '30s')
//! ```

use std::time::{Duration, Instant};

/// How an operator derives its watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatermarkConfig {
    /// The out-of-orderness allowed, in milliseconds; `None`: the watermark moves only when the
    /// input ends.
    pub delay_ms: Option<i64>,
    /// A partition silent for this long no longer holds the watermark back.
    pub idle_timeout: Option<Duration>,
    /// When every live partition has been idle for `idle_timeout`, event time goes on with
    /// processing time from the latest row seen (set when the user names `idle_timeout`): the
    /// last windows of a stream that went quiet close instead of waiting for a row.
    pub advance_when_idle: bool,
}

impl WatermarkConfig {
    /// Short description for plans: `delay=5000ms`, `end of input`.
    pub fn describe(&self) -> String {
        let mut s = match self.delay_ms {
            Some(d) => format!("delay={d}ms"),
            None => "at end of input".to_string(),
        };
        if let Some(t) = self.idle_timeout {
            s.push_str(&format!(", idle_timeout={}ms", t.as_millis()));
            if self.advance_when_idle {
                s.push_str(" (then advancing with processing time)");
            }
        }
        s
    }
}

#[derive(Debug, Clone)]
struct PartitionState {
    max_time: Option<i64>,
    last_seen: Instant,
    /// It has delivered rows since the operator started (a restored `max_time` alone does not
    /// count: the backlog after a restart may still be on its way).
    spoke: bool,
    finished: bool,
    /// How far the partition's own sources have got (each Kafka partition of a reader), when
    /// they track it: its watermark never passes that.
    cap: Option<ferris_connectors::Frontier>,
    /// The least event time of the rows still to come, when its sources know it exactly
    /// (Parquet statistics): the watermark may reach it whatever the delay.
    floor: Option<i64>,
}

impl PartitionState {
    /// The latest event time the partition has delivered, held to its slowest source unit.
    fn effective_max(&self) -> Option<i64> {
        match self.cap {
            None => self.max_time,
            Some(ferris_connectors::Frontier::Holding) => None,
            Some(ferris_connectors::Frontier::At(c)) => self.max_time.map(|m| m.min(c)),
            // held on purpose at `c` (a partition taken over): event time may reach it
            Some(ferris_connectors::Frontier::Floor(c)) => Some(c),
        }
    }
}

/// The watermark over several input partitions.
#[derive(Debug, Clone)]
pub struct PartitionWatermarks {
    config: WatermarkConfig,
    partitions: Vec<PartitionState>,
    current: i64,
    /// The operator was last busy (handing rows on) until then: time it spent blocked is not
    /// quiet time of its inputs.
    busy_until: Instant,
}

impl PartitionWatermarks {
    /// A tracker for `n` input partitions, starting at the beginning of time.
    pub fn new(config: WatermarkConfig, n: usize) -> Self {
        let now = Instant::now();
        Self {
            config,
            partitions: vec![PartitionState { max_time: None, last_seen: now, spoke: false, finished: false, cap: None, floor: None }; n.max(1)],
            current: i64::MIN,
            busy_until: now,
        }
    }

    /// The current watermark, in epoch milliseconds: no row older than this is expected.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// The smallest over unfinished partitions of the latest event time each has delivered:
    /// how far this input has got (`None` before every partition has spoken).
    pub fn latest_time(&self) -> Option<i64> {
        let live: Vec<Option<i64>> = self.partitions.iter().filter(|p| !p.finished).map(|p| p.max_time).collect();
        if live.is_empty() {
            return Some(i64::MAX);
        }
        live.into_iter().try_fold(i64::MAX, |acc, t| t.map(|t| acc.min(t)))
    }

    /// Partition `p` delivered rows whose largest event time is `max_time`.
    pub fn observe(&mut self, p: usize, max_time: Option<i64>) {
        if let Some(state) = self.partitions.get_mut(p) {
            state.last_seen = Instant::now();
            state.spoke = true;
            if let Some(t) = max_time {
                state.max_time = Some(state.max_time.map_or(t, |m| m.max(t)));
            }
        }
    }

    /// Partition `p`'s sources say how far their event time has got (`None`: they do not
    /// track it): the partition's watermark stays behind its slowest source unit.
    pub fn cap(&mut self, p: usize, frontier: Option<ferris_connectors::Frontier>) {
        if let Some(state) = self.partitions.get_mut(p) {
            state.cap = frontier;
        }
    }

    /// Partition `p`'s sources say no row still to come is older than `floor` (None: they
    /// do not know). Returns whether the partition's floor rose.
    pub fn floor(&mut self, p: usize, floor: Option<i64>) -> bool {
        let Some(state) = self.partitions.get_mut(p) else { return false };
        let rose = floor > state.floor;
        state.floor = floor.max(state.floor);
        rose
    }

    /// The least event time still to come over the live partitions, when every one of them
    /// knows its floor.
    fn floors(&self) -> Option<i64> {
        self.partitions.iter().filter(|p| !p.finished).try_fold(i64::MAX, |m, p| p.floor.map(|f| m.min(f)))
    }

    /// The operator has just finished handing rows on (it may have waited for the operator or
    /// sink after it): its inputs' quiet time counts from now, not from their last row.
    pub fn note_busy(&mut self) {
        self.busy_until = Instant::now();
    }

    /// Partition `p` has no more rows.
    pub fn finish(&mut self, p: usize) {
        if let Some(state) = self.partitions.get_mut(p) {
            state.finished = true;
        }
    }

    /// Whether every partition has finished.
    pub fn all_finished(&self) -> bool {
        self.partitions.iter().all(|p| p.finished)
    }

    /// What a checkpoint keeps: the watermark and each partition's latest event time.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "current": self.current,
            "max_times": self.partitions.iter().map(|p| p.max_time).collect::<Vec<_>>(),
        })
    }

    /// Restores [`PartitionWatermarks::snapshot`]. With another number of partitions than the
    /// checkpoint's (the job's parallelism changed), every partition starts from the smallest
    /// latest time: the watermark never goes back, and no partition runs ahead.
    pub fn restore(&mut self, v: &serde_json::Value) {
        if let Some(c) = v.get("current").and_then(serde_json::Value::as_i64) {
            self.current = self.current.max(c);
        }
        let times: Vec<Option<i64>> = v.get("max_times").and_then(|t| serde_json::from_value(t.clone()).ok()).unwrap_or_default();
        if times.len() == self.partitions.len() {
            for (p, t) in self.partitions.iter_mut().zip(times) {
                p.max_time = t;
            }
        } else if let Some(min) = times.iter().flatten().min().copied() {
            for p in &mut self.partitions {
                p.max_time = Some(min);
            }
        }
    }

    /// Recomputes the watermark; returns it if it moved forward.
    pub fn advance(&mut self) -> Option<i64> {
        let next = if self.all_finished() {
            i64::MAX
        } else if let Some(delay) = self.config.delay_ms {
            let now = Instant::now();
            let mut min: Option<i64> = None;
            let mut active = 0;
            for p in &self.partitions {
                if p.finished {
                    continue;
                }
                if let Some(idle) = self.config.idle_timeout {
                    // a quiet input is skipped, unless its source says a unit of it holds event
                    // time back (a Kafka partition not assigned yet, or being read again after a
                    // hand-over): its rows are still to come, for a bounded time
                    let holding = matches!(p.cap, Some(ferris_connectors::Frontier::Holding | ferris_connectors::Frontier::Floor(_)));
                    if now.duration_since(p.last_seen) >= idle && !holding {
                        continue;
                    }
                }
                active += 1;
                let w = p.effective_max().map_or(i64::MIN, |m| m.saturating_sub(delay));
                min = Some(min.map_or(w, |x: i64| x.min(w)));
            }
            if active == 0 {
                // every live partition is idle: the one that saw the latest data leads, and
                // (advance_when_idle) event time goes on with the wall clock since the last row
                let live = || self.partitions.iter().filter(|p| !p.finished);
                let latest = live().filter_map(PartitionState::effective_max).max().map_or(i64::MIN, |m| m.saturating_sub(delay));
                let since = |p: &PartitionState| now.duration_since(p.last_seen.max(self.busy_until));
                let quiet_ms = live().map(since).min().map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
                // only once every partition has spoken since the start (after a restore the
                // backlog may still be coming) and none of them holds its sources back
                let may_run_on =
                    live().all(|p| p.spoke && !matches!(p.cap, Some(ferris_connectors::Frontier::Holding | ferris_connectors::Frontier::Floor(_))));
                if self.config.advance_when_idle && may_run_on && latest > i64::MIN {
                    latest.saturating_add(quiet_ms)
                } else {
                    latest
                }
            } else {
                min.unwrap_or(i64::MIN)
            }
        } else {
            i64::MIN
        };
        // no row older than the sources' floors is still to come: windows before it may close,
        // with or without a delay, and no row is late that would not have been
        let next = match self.floors() {
            Some(f) if !self.all_finished() => next.max(f),
            _ => next,
        };
        if next > self.current {
            self.current = next;
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_partition_holds_the_watermark() {
        let mut w = PartitionWatermarks::new(WatermarkConfig { delay_ms: Some(10), idle_timeout: None, advance_when_idle: false }, 2);
        w.observe(0, Some(100));
        assert_eq!(w.advance(), None, "partition 1 has not spoken");
        w.observe(1, Some(50));
        assert_eq!(w.advance(), Some(40));
        w.observe(1, Some(30));
        assert_eq!(w.advance(), None, "never goes back");
        w.finish(1);
        assert_eq!(w.advance(), Some(90));
        w.finish(0);
        assert_eq!(w.advance(), Some(i64::MAX));
    }

    #[test]
    fn the_sources_floors_move_the_watermark_without_a_delay() {
        let mut w = PartitionWatermarks::new(WatermarkConfig::default(), 2);
        w.observe(0, Some(1_000));
        assert!(w.floor(0, Some(500)));
        assert_eq!(w.advance(), None, "partition 1 does not know its floor");
        assert!(w.floor(1, Some(700)));
        assert_eq!(w.advance(), Some(500), "the least of the floors");
        assert!(!w.floor(0, Some(400)), "a floor never goes back");
        assert!(!w.floor(0, None));
        assert_eq!(w.advance(), None);
        w.finish(0);
        assert_eq!(w.advance(), Some(700), "a finished partition holds nothing back");
        // with a delay: the larger of the two
        let mut w = PartitionWatermarks::new(WatermarkConfig { delay_ms: Some(100), ..WatermarkConfig::default() }, 1);
        w.observe(0, Some(1_000));
        w.floor(0, Some(950));
        assert_eq!(w.advance(), Some(950));
        w.observe(0, Some(2_000));
        assert_eq!(w.advance(), Some(1_900));
    }

    #[test]
    fn without_delay_moves_only_at_the_end() {
        let mut w = PartitionWatermarks::new(WatermarkConfig::default(), 1);
        w.observe(0, Some(1_000));
        assert_eq!(w.advance(), None);
        w.finish(0);
        assert_eq!(w.advance(), Some(i64::MAX));
    }

    #[test]
    fn a_snapshot_restores_the_watermark_and_the_partitions() {
        let cfg = WatermarkConfig { delay_ms: Some(10), idle_timeout: None, advance_when_idle: false };
        let mut w = PartitionWatermarks::new(cfg, 2);
        w.observe(0, Some(100));
        w.observe(1, Some(60));
        assert_eq!(w.advance(), Some(50));
        let mut r = PartitionWatermarks::new(cfg, 2);
        r.restore(&w.snapshot());
        assert_eq!(r.current(), 50);
        r.observe(1, Some(200));
        assert_eq!(r.advance(), Some(90), "partition 0 is still at 100");
        let mut three = PartitionWatermarks::new(cfg, 3);
        three.restore(&w.snapshot());
        assert_eq!(three.current(), 50);
        assert_eq!(three.latest_time(), Some(60));
    }

    #[test]
    fn a_slow_source_unit_holds_its_partition_back() {
        use ferris_connectors::Frontier;
        let mut w = PartitionWatermarks::new(WatermarkConfig { delay_ms: Some(0), idle_timeout: None, advance_when_idle: false }, 1);
        w.cap(0, Some(Frontier::Holding));
        w.observe(0, Some(1_000));
        assert_eq!(w.advance(), None, "a unit of the partition has not delivered yet");
        w.cap(0, Some(Frontier::At(400)));
        assert_eq!(w.advance(), Some(400), "the slowest unit is at 400");
        w.cap(0, None);
        assert_eq!(w.advance(), Some(1_000));
    }

    #[test]
    fn a_partition_held_on_purpose_lets_event_time_reach_its_floor_and_no_further() {
        use ferris_connectors::Frontier;
        let cfg = WatermarkConfig { delay_ms: Some(100), idle_timeout: Some(Duration::from_millis(0)), advance_when_idle: true };
        let mut w = PartitionWatermarks::new(cfg, 2);
        // input 1 has delivered nothing: held at 5_000, it counts as there (and is never idle)
        w.cap(1, Some(Frontier::Floor(5_000)));
        w.observe(0, Some(9_000));
        assert_eq!(w.advance(), Some(4_900));
        w.observe(0, Some(20_000));
        assert_eq!(w.advance(), None, "not past the floor");
        // only held inputs: the floor, not the processing clock
        let mut w = PartitionWatermarks::new(cfg, 1);
        w.cap(0, Some(Frontier::Floor(5_000)));
        assert_eq!(w.advance(), Some(4_900));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(w.advance(), None);
        assert_eq!(Frontier::Floor(3).min(Frontier::At(5)), Frontier::At(3));
        assert_eq!(Frontier::Floor(3).min(Frontier::Floor(5)), Frontier::Floor(3));
        assert_eq!(Frontier::Floor(3).min(Frontier::Holding), Frontier::Holding);
    }

    #[test]
    fn every_partition_idle_advances_with_processing_time() {
        let cfg = WatermarkConfig { delay_ms: Some(100), idle_timeout: Some(Duration::from_millis(0)), advance_when_idle: true };
        let mut w = PartitionWatermarks::new(cfg, 2);
        w.observe(0, Some(10_000));
        w.observe(1, Some(9_000));
        w.advance();
        let first = w.current();
        assert!(first >= 9_900, "the latest partition leads once both are idle: {first}");
        std::thread::sleep(Duration::from_millis(30));
        w.advance();
        assert!(w.current() >= first + 30, "then event time goes on with the clock: {} after {first}", w.current());
        // without the flag it stays at the latest row
        let mut w = PartitionWatermarks::new(WatermarkConfig { advance_when_idle: false, ..cfg }, 1);
        w.observe(0, Some(10_000));
        w.advance();
        std::thread::sleep(Duration::from_millis(30));
        assert!(w.advance().is_none());
        assert_eq!(w.current(), 9_900);
    }

    #[test]
    fn a_quiet_input_whose_source_holds_is_not_skipped() {
        let cfg = WatermarkConfig { delay_ms: Some(0), idle_timeout: Some(Duration::from_millis(0)), advance_when_idle: false };
        let mut w = PartitionWatermarks::new(cfg, 2);
        w.observe(0, Some(100));
        w.observe(1, Some(50));
        // input 1 is quiet, but its source holds (a partition being read again): no advance
        w.cap(1, Some(ferris_connectors::Frontier::Holding));
        w.observe(0, Some(200));
        assert_eq!(w.advance(), None);
        // the hold ends: input 1 is quiet, skipped
        w.cap(1, None);
        assert_eq!(w.advance(), Some(200));
    }

    #[test]
    fn idle_partition_is_skipped() {
        let mut w = PartitionWatermarks::new(WatermarkConfig { delay_ms: Some(0), idle_timeout: Some(Duration::from_millis(0)), advance_when_idle: false }, 2);
        w.observe(0, Some(100));
        assert_eq!(w.advance(), Some(100));
    }
}
