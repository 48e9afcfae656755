//! The progress line shown on a terminal: rows in, rows out, rows per second.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferris_connectors::metrics::ConnectorMetrics;

/// Prints `[job] in: N rows  out: M rows  R rows/s` to stderr every half second until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    /// Draws a line on the terminal (cleared when dropped).
    line: bool,
}

impl Progress {
    /// Starts the line for `job`, reading `sources` and `rows_out`.
    pub fn start(job: String, sources: Vec<Arc<ConnectorMetrics>>, rows_out: Arc<AtomicU64>) -> Self {
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let rows_in: u64 = sources.iter().map(|m| m.records()).sum();
                let bad: u64 = sources.iter().map(|m| m.errors()).sum();
                let out = rows_out.load(Ordering::Relaxed);
                let rate = rows_in as f64 / start.elapsed().as_secs_f64().max(1e-3);
                let bad = if bad > 0 { format!("  malformed: {bad}") } else { String::new() };
                eprint!("\r[{job}] in: {rows_in} rows  out: {out} rows  {rate:.0} rows/s{bad}   ");
                let _ = std::io::stderr().flush();
            }
        });
        Self { task, line: true }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.line {
            eprint!("\r\x1b[2K");
        }
    }
}

impl Progress {
    /// Logs `job 'x': N rows in, M rows out, R rows/s (last interval)` every `every` until
    /// dropped: the profile's `monitoring_enabled` on a job whose stderr goes to a log.
    pub fn log_every(job: String, sources: Vec<Arc<ConnectorMetrics>>, rows_out: Arc<AtomicU64>, every: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let (mut last_in, mut last_at) = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let rows_in: u64 = sources.iter().map(|m| m.records()).sum();
                let bad: u64 = sources.iter().map(|m| m.errors()).sum();
                let out = rows_out.load(Ordering::Relaxed);
                let rate = rows_in.saturating_sub(last_in) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
                // its own target: shown whatever the profile's log_level (monitoring asked for it)
                tracing::info!(target: "ferris_monitor", job = %job, rows_in, rows_out = out, malformed = bad, "job '{job}': {rows_in} rows in, {out} rows out, {rate:.0} rows/s");
                (last_in, last_at) = (rows_in, Instant::now());
            }
        });
        Self { task, line: false }
    }
}
