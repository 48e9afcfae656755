//! How source rows are grouped into record batches: the guide's batch strategies.
//!
//! - `fixed_size` (the default): `batch.size` rows at most; a tailing or subscribed source
//!   releases a partial batch after `batch.timeout`.
//! - `time_window`: whatever arrived within `batch.timeout`, up to `batch.size` rows.
//! - `adaptive_size`: starts at `batch.min_size` rows and doubles up to `batch.adaptive_max_size`
//!   while the job keeps up with `batch.target_latency`; halves when it does not.
//! - `memory_based`: a batch closes at `batch.memory_size` bytes (or `batch.memory_limit_mb`).
//! - `low_latency`: at most `batch.low_latency_max_size` rows, waiting no longer than
//!   `batch.low_latency_wait`; with `batch.eager_processing` (default true) whatever has
//!   arrived is released at once.
//!
//! Every key may be set for the job or per source (`orders.batch.size`, which wins), and
//! strategies are accepted in both spellings (`adaptive_size`, `AdaptiveSize`).
//!
//! ```sql
//! WITH ('batch.strategy' = 'adaptive_size', 'batch.min_size' = '100',
//!       'batch.adaptive_max_size' = '5000', 'batch.target_latency' = '200ms',
//!       'orders.batch.strategy' = 'low_latency', 'orders.batch.low_latency_max_size' = '10')
//! ```

use std::time::Duration;

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// Rows per batch when nothing is configured: large enough for vectorised kernels to shine.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// How long a tailing source holds a partial batch when nothing is configured: 100 ms, as
/// Flink's network buffer timeout and Arroyo's source batch linger. Longer only delays the
/// last rows of a burst (a backlog's final partial batch waited a whole second at 1 s).
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(100);

/// The guide's batch strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStrategy {
    /// `batch.size` rows, a partial batch after `batch.timeout`.
    FixedSize,
    /// Whatever arrives within `batch.timeout` (up to `batch.size` rows).
    TimeWindow,
    /// Grows and shrinks between `min` and `max` rows to meet `target_latency`.
    AdaptiveSize {
        /// Smallest batch.
        min: usize,
        /// Largest batch.
        max: usize,
        /// The processing time per batch the size is tuned to.
        target_latency: Duration,
    },
    /// Closes a batch at `bytes` bytes of input.
    MemoryBased {
        /// Input bytes per batch.
        bytes: usize,
    },
    /// Small batches released quickly.
    LowLatency {
        /// Most rows per batch.
        max: usize,
        /// Longest wait for more rows.
        wait: Duration,
        /// Release whatever has arrived at once rather than waiting `wait` for more.
        eager: bool,
    },
}

/// The batching a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in one batch (for `adaptive_size`, the starting size).
    pub size: usize,
    /// Longest wait before a partial batch is released.
    pub timeout: Duration,
    /// The strategy.
    pub strategy: BatchStrategy,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { size: DEFAULT_BATCH_SIZE, timeout: DEFAULT_BATCH_TIMEOUT, strategy: BatchStrategy::FixedSize }
    }
}

/// The last value of `keys` set in `layers` (later layers win), read by `get`.
fn last_of<T>(layers: &[&Properties], keys: &[&str], get: impl Fn(&Properties, &str) -> Result<Option<T>>) -> Result<Option<T>> {
    let mut out = None;
    for props in layers {
        for key in keys {
            if let Some(v) = get(props, key)? {
                out = Some(v);
            }
        }
    }
    Ok(out)
}

fn usize_of(layers: &[&Properties], keys: &[&str]) -> Result<Option<usize>> {
    last_of(layers, keys, |p, k| p.get_usize(k))
}

fn duration_of(layers: &[&Properties], keys: &[&str]) -> Result<Option<Duration>> {
    last_of(layers, keys, |p, k| p.get_duration(k))
}

impl BatchConfig {
    /// Reads the batch keys from the source's own properties first, then the job's.
    pub fn resolve(source: &Properties, job: &Properties) -> Result<Self> {
        let layers = [job, source];
        let size = usize_of(&layers, &["max_batch_size", "batch.max_size", "batch.size"])?.map(|n| n.max(1));
        let timeout = duration_of(&layers, &["batch_timeout", "batch.timeout"])?;
        let (strategy_key, strategy_text) = match (source.get("batch.strategy"), job.get("batch.strategy")) {
            (Some(s), _) => (source.full_key("batch.strategy"), Some(s)),
            (None, Some(s)) => (job.full_key("batch.strategy"), Some(s)),
            (None, None) => (String::new(), None),
        };
        let norm: String = strategy_text.unwrap_or("fixed_size").chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
        let mut cfg = Self { size: size.unwrap_or(DEFAULT_BATCH_SIZE), timeout: timeout.unwrap_or(DEFAULT_BATCH_TIMEOUT), strategy: BatchStrategy::FixedSize };
        cfg.strategy = match norm.as_str() {
            "fixedsize" | "fixed" => BatchStrategy::FixedSize,
            "timewindow" | "time" | "timebased" => BatchStrategy::TimeWindow,
            "adaptivesize" | "adaptive" => {
                let min = usize_of(&layers, &["batch.min_size"])?.unwrap_or(100).max(1);
                let max = usize_of(&layers, &["batch.adaptive_max_size"])?.or(size).unwrap_or(DEFAULT_BATCH_SIZE).max(min);
                let target_latency = duration_of(&layers, &["batch.target_latency"])?.unwrap_or(Duration::from_millis(100));
                cfg.size = min;
                BatchStrategy::AdaptiveSize { min, max, target_latency }
            }
            "memorybased" | "memory" => {
                let bytes = match usize_of(&layers, &["batch.memory_size"])? {
                    Some(b) => b,
                    None => usize_of(&layers, &["batch.memory_limit_mb"])?.map_or(16 << 20, |mb| mb << 20),
                };
                if size.is_none() {
                    cfg.size = usize::MAX;
                }
                BatchStrategy::MemoryBased { bytes: bytes.max(1) }
            }
            "lowlatency" | "latency" => {
                let max = usize_of(&layers, &["batch.low_latency_max_size"])?.or(size).unwrap_or(10).max(1);
                let wait = duration_of(&layers, &["batch.low_latency_wait"])?.or(timeout).unwrap_or(Duration::from_millis(5));
                let eager = last_of(&layers, &["batch.eager_processing"], |p, k| p.get_bool(k))?.unwrap_or(true);
                cfg.size = max;
                cfg.timeout = wait;
                BatchStrategy::LowLatency { max, wait, eager }
            }
            _ => {
                return Err(ConnectorError::invalid(
                    strategy_key,
                    format!(
                        "unknown batch strategy '{}'; use fixed_size, time_window, adaptive_size, memory_based or low_latency",
                        strategy_text.unwrap_or_default()
                    ),
                ))
            }
        };
        Ok(cfg)
    }

    /// A batch-size controller for one reader.
    pub fn sizer(&self) -> BatchSizer {
        BatchSizer { cfg: *self, current: self.size }
    }
}

/// Decides, for one reader, when the batch being filled is complete. For `adaptive_size` it
/// tunes the row count from how long each batch took to process.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    cfg: BatchConfig,
    current: usize,
}

impl BatchSizer {
    /// Rows that complete a batch now.
    pub fn max_rows(&self) -> usize {
        self.current
    }

    /// Input bytes that complete a batch, if the strategy counts bytes.
    pub fn max_bytes(&self) -> Option<usize> {
        match self.cfg.strategy {
            BatchStrategy::MemoryBased { bytes } => Some(bytes),
            _ => None,
        }
    }

    /// The longest a partial batch waits for more rows.
    pub fn max_wait(&self) -> Duration {
        self.cfg.timeout
    }

    /// True when a partial batch should be released as soon as no more rows are ready,
    /// without waiting (`low_latency` with eager processing).
    pub fn eager(&self) -> bool {
        matches!(self.cfg.strategy, BatchStrategy::LowLatency { eager: true, .. })
    }

    /// How many more rows fit in a batch of `rows` rows.
    pub fn room(&self, rows: usize) -> usize {
        self.current.saturating_sub(rows)
    }

    /// True when the batch of `rows` rows and `bytes` bytes is complete.
    pub fn is_full(&self, rows: usize, bytes: usize) -> bool {
        rows >= self.current || self.max_bytes().is_some_and(|b| bytes >= b)
    }

    /// Reports how long the last batch took downstream (from its release to the next request),
    /// so `adaptive_size` can grow or shrink.
    pub fn observe(&mut self, rows: usize, took: Duration) {
        if let BatchStrategy::AdaptiveSize { min, max, target_latency } = self.cfg.strategy {
            if took > target_latency {
                self.current = (self.current / 2).max(min);
            } else if took * 2 < target_latency && rows >= self.current {
                self.current = (self.current.saturating_mul(2)).min(max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_overrides_job() {
        let job = Properties::from_pairs("", [("batch.size", "500"), ("batch.timeout", "2000ms")]);
        let src = Properties::from_pairs("orders", [("batch.size", "100")]);
        let c = BatchConfig::resolve(&src, &job).unwrap();
        assert_eq!(c, BatchConfig { size: 100, timeout: Duration::from_secs(2), strategy: BatchStrategy::FixedSize });
        let c = BatchConfig::resolve(&Properties::new("x"), &Properties::new("")).unwrap();
        assert_eq!(c, BatchConfig::default());
    }

    #[test]
    fn strategies_in_both_spellings() {
        let job = Properties::from_pairs(
            "",
            [("batch.strategy", "AdaptiveSize"), ("batch.min_size", "100"), ("batch.adaptive_max_size", "5000"), ("batch.target_latency", "200ms")],
        );
        let c = BatchConfig::resolve(&Properties::new("t"), &job).unwrap();
        assert_eq!(c.strategy, BatchStrategy::AdaptiveSize { min: 100, max: 5000, target_latency: Duration::from_millis(200) });
        let mut s = c.sizer();
        assert_eq!(s.max_rows(), 100);
        s.observe(100, Duration::from_millis(10));
        s.observe(200, Duration::from_millis(10));
        assert_eq!(s.max_rows(), 400);
        s.observe(400, Duration::from_millis(500));
        assert_eq!(s.max_rows(), 200);
        for _ in 0..20 {
            let rows = s.max_rows();
            s.observe(rows, Duration::from_millis(1));
        }
        assert_eq!(s.max_rows(), 5000);

        let src = Properties::from_pairs("a", [("batch.strategy", "low_latency"), ("batch.low_latency_max_size", "5"), ("batch.low_latency_wait", "10ms")]);
        let c = BatchConfig::resolve(&src, &job).unwrap();
        assert_eq!(c.strategy, BatchStrategy::LowLatency { max: 5, wait: Duration::from_millis(10), eager: true });
        assert_eq!((c.size, c.timeout), (5, Duration::from_millis(10)));
        assert!(c.sizer().eager());

        let job = Properties::from_pairs("", [("batch.strategy", "MemoryBased"), ("batch.memory_limit_mb", "2")]);
        let s = BatchConfig::resolve(&Properties::new("t"), &job).unwrap().sizer();
        assert!(!s.is_full(1_000_000, 1 << 20));
        assert!(s.is_full(10, 2 << 20));
        let job = Properties::from_pairs("", [("batch.strategy", "memory_based"), ("batch.memory_size", "16777216")]);
        assert_eq!(BatchConfig::resolve(&Properties::new("t"), &job).unwrap().sizer().max_bytes(), Some(16 << 20));

        let bad = Properties::from_pairs("o", [("batch.strategy", "Huge")]);
        let e = BatchConfig::resolve(&bad, &Properties::new("")).unwrap_err().to_string();
        assert!(e.contains("'o.batch.strategy'") && e.contains("unknown batch strategy 'Huge'"), "{e}");
    }
}
