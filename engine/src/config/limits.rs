//! Resource limits from the environment, enforced before a job starts:
//! `FERRIS_MAX_JOBS` (default 50), `FERRIS_MAX_SOURCES_PER_JOB` (10), `FERRIS_MAX_SINKS_PER_JOB`
//! (5), `FERRIS_MAX_MEMORY_MB` (DataFusion's memory pool; unlimited when unset) and
//! `FERRIS_BATCH_TIMEOUT_MS` (the default `batch.timeout`).

use std::time::Duration;

use super::error::ConfigError;
use super::substitute::Variables;

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most jobs at once.
    pub max_jobs: usize,
    /// Most sources in one job.
    pub max_sources_per_job: usize,
    /// Most sinks in one job.
    pub max_sinks_per_job: usize,
    /// Memory for a job's query execution, in MiB.
    pub max_memory_mb: Option<usize>,
    /// The default batch timeout.
    pub batch_timeout: Option<Duration>,
    /// The default `batch.size` of every job (the profile's `batch_size`).
    pub batch_size: Option<usize>,
    /// Log each job's counters this often (the profile's `monitoring_enabled`: every 10 s).
    pub monitor: Option<Duration>,
    /// Serve `/metrics` (the profile's `metrics_enabled`; on unless it says false).
    pub metrics_enabled: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_jobs: 50,
            max_sources_per_job: 10,
            max_sinks_per_job: 5,
            max_memory_mb: None,
            batch_timeout: None,
            batch_size: None,
            monitor: None,
            metrics_enabled: true,
        }
    }
}

impl Limits {
    /// Reads the `FERRIS_*` limits from `vars`' environment.
    pub fn from_env(vars: &Variables) -> Result<Self, ConfigError> {
        let num = |name: &str| -> Result<Option<usize>, ConfigError> {
            vars.env(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().parse::<usize>().map_err(|_| ConfigError::Limit(format!("{name} must be a whole number, got '{v}'"))))
                .transpose()
        };
        let d = Self::default();
        Ok(Self {
            max_jobs: num("FERRIS_MAX_JOBS")?.unwrap_or(d.max_jobs),
            max_sources_per_job: num("FERRIS_MAX_SOURCES_PER_JOB")?.unwrap_or(d.max_sources_per_job),
            max_sinks_per_job: num("FERRIS_MAX_SINKS_PER_JOB")?.unwrap_or(d.max_sinks_per_job),
            max_memory_mb: num("FERRIS_MAX_MEMORY_MB")?,
            batch_timeout: num("FERRIS_BATCH_TIMEOUT_MS")?.map(|ms| Duration::from_millis(ms as u64)),
            batch_size: None,
            monitor: None,
            metrics_enabled: true,
        })
    }

    /// Gives a job the defaults of the environment and the profile where its own keys say
    /// nothing: `batch.timeout` from `FERRIS_BATCH_TIMEOUT_MS`, `batch.size` from the profile's
    /// `batch_size`. Used by `run` and by `serve` alike.
    ///
    /// ```sql
    /// -- FERRIS_BATCH_TIMEOUT_MS=250, profile batch_size: 1000:
    /// CREATE STREAM s AS SELECT * FROM orders INTO out WITH (…)   -- batch.timeout = 250ms, batch.size = 1000
    /// ```
    pub fn apply_job_defaults(&self, options: &mut ferris_connectors::Properties) {
        if let Some(t) = self.batch_timeout {
            if !options.contains("batch.timeout") && !options.contains("batch_timeout") {
                options.insert_with_origin("batch.timeout", format!("{}ms", t.as_millis()), "FERRIS_BATCH_TIMEOUT_MS");
            }
        }
        if let Some(n) = self.batch_size {
            let sized = ["batch.size", "batch_size", "max_batch_size", "batch.max_size"].iter().any(|k| options.contains(k));
            if !sized {
                options.insert_with_origin("batch.size", n.to_string(), "the profile's batch_size");
            }
        }
    }

    /// Checks a set of jobs: `(name, sources, sinks)` for each.
    pub fn check<'a>(&self, jobs: impl IntoIterator<Item = (&'a str, usize, usize)>) -> Result<(), ConfigError> {
        let jobs: Vec<_> = jobs.into_iter().collect();
        if jobs.len() > self.max_jobs {
            return Err(ConfigError::Limit(format!("{} jobs exceed FERRIS_MAX_JOBS={}", jobs.len(), self.max_jobs)));
        }
        for (name, sources, sinks) in jobs {
            if sources > self.max_sources_per_job {
                return Err(ConfigError::Limit(format!(
                    "job '{name}' reads {sources} sources, more than FERRIS_MAX_SOURCES_PER_JOB={}",
                    self.max_sources_per_job
                )));
            }
            if sinks > self.max_sinks_per_job {
                return Err(ConfigError::Limit(format!("job '{name}' writes {sinks} sinks, more than FERRIS_MAX_SINKS_PER_JOB={}", self.max_sinks_per_job)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn reads_and_enforces() {
        let env = |pairs: &[(&str, &str)]| Variables::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), BTreeMap::new());
        assert_eq!(Limits::from_env(&env(&[])).unwrap(), Limits::default());
        let l = Limits::from_env(&env(&[
            ("FERRIS_MAX_JOBS", "2"),
            ("FERRIS_MAX_SINKS_PER_JOB", "1"),
            ("FERRIS_BATCH_TIMEOUT_MS", "250"),
            ("FERRIS_MAX_MEMORY_MB", "512"),
        ]))
        .unwrap();
        assert_eq!(l.batch_timeout, Some(Duration::from_millis(250)));
        assert_eq!(l.max_memory_mb, Some(512));
        assert!(l.check([("a", 1, 1), ("b", 3, 1)]).is_ok());
        assert_eq!(l.check([("a", 1, 1), ("b", 1, 1), ("c", 1, 1)]).unwrap_err().to_string(), "3 jobs exceed FERRIS_MAX_JOBS=2");
        assert_eq!(l.check([("a", 1, 2)]).unwrap_err().to_string(), "job 'a' writes 2 sinks, more than FERRIS_MAX_SINKS_PER_JOB=1");
        assert!(Limits::from_env(&env(&[("FERRIS_MAX_JOBS", "many")])).unwrap_err().to_string().contains("FERRIS_MAX_JOBS must be a whole number, got 'many'"));
    }
}
