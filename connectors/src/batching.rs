//! How source rows are grouped into record batches: `batch.size` rows at most, and in a
//! tailing source a partial batch is released after `batch.timeout`.
//!
//! ```sql
//! WITH ('batch.size' = '500', 'batch.timeout' = '2000ms', 'orders.batch.size' = '100')
//! ```

use std::time::Duration;

use crate::error::Result;
use crate::properties::Properties;

/// Rows per batch when nothing is configured: large enough for vectorised kernels to shine.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// How long a tailing source holds a partial batch when nothing is configured.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(1000);

/// The batching a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in one batch.
    pub size: usize,
    /// Longest wait before a partial batch is released.
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { size: DEFAULT_BATCH_SIZE, timeout: DEFAULT_BATCH_TIMEOUT }
    }
}

impl BatchConfig {
    /// Reads `batch.size` / `max_batch_size` and `batch.timeout` / `batch_timeout` from the
    /// source's own properties first, then the job's.
    pub fn resolve(source: &Properties, job: &Properties) -> Result<Self> {
        let mut cfg = Self::default();
        for props in [job, source] {
            for key in ["max_batch_size", "batch.max_size", "batch.size"] {
                if let Some(n) = props.get_usize(key)? {
                    cfg.size = n.max(1);
                }
            }
            for key in ["batch_timeout", "batch.timeout"] {
                if let Some(d) = props.get_duration(key)? {
                    cfg.timeout = d;
                }
            }
        }
        Ok(cfg)
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
        assert_eq!(c, BatchConfig { size: 100, timeout: Duration::from_secs(2) });
        let c = BatchConfig::resolve(&Properties::new("x"), &Properties::new("")).unwrap();
        assert_eq!(c, BatchConfig::default());
    }
}
