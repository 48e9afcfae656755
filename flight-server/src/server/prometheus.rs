//! `/metrics`: Prometheus exposition through the `metrics` facade and its Prometheus
//! exporter, with the guide's names. Counters are set from the jobs' own counters at each
//! scrape; the sink write-latency histogram is recorded as batches are written.
//!
//! ```text
//! ferris_job_sources_total{job="order_processing"} 3
//! ferris_job_source_records_total{job="order_processing",source="orders"} 50000
//! ferris_job_sink_records_total{job="order_processing",sink="kafka"} 45000
//! ```

use ferris_connectors::metrics::ConnectionStatus;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::jobs::{process_rss_mb, JobState, Registry};

/// Installs the process-wide recorder; returns the handle that renders the exposition.
pub fn install() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    Ok(handle)
}

/// A connection's state as a gauge: 0 connected, 1 reconnecting, 2 failed.
fn connection(s: ConnectionStatus) -> f64 {
    match s {
        ConnectionStatus::Connected => 0.0,
        ConnectionStatus::Reconnecting => 1.0,
        ConnectionStatus::Failed => 2.0,
    }
}

/// The exposition text, with every job's counters brought up to date.
pub fn render(handle: &PrometheusHandle, registry: &Registry) -> String {
    let jobs = registry.list();
    gauge!("ferris_jobs_total").set(jobs.len() as f64);
    gauge!("ferris_process_memory_mb").set(process_rss_mb());
    for job in &jobs {
        let j = job.name.clone();
        gauge!("ferris_job_sources_total", "job" => j.clone()).set(job.sources.len() as f64);
        gauge!("ferris_job_sinks_total", "job" => j.clone()).set(job.sink_types.len() as f64);
        gauge!("ferris_job_running", "job" => j.clone()).set(f64::from(u8::from(job.state() == JobState::Running)));
        for (name, _, m) in &job.sources {
            counter!("ferris_job_source_records_total", "job" => j.clone(), "source" => name.clone()).absolute(m.records());
            counter!("ferris_job_source_errors_total", "job" => j.clone(), "source" => name.clone()).absolute(m.errors());
            counter!("ferris_job_source_batches_total", "job" => j.clone(), "source" => name.clone()).absolute(m.batches());
            gauge!("ferris_job_source_connection_status", "job" => j.clone(), "source" => name.clone()).set(connection(m.status()));
        }
        for s in job.live.sinks() {
            counter!("ferris_job_sink_records_total", "job" => j.clone(), "sink" => s.name.clone()).absolute(s.metrics.records());
            counter!("ferris_job_sink_errors_total", "job" => j.clone(), "sink" => s.name.clone()).absolute(s.metrics.errors());
            counter!("ferris_job_sink_dropped_rows_total", "job" => j.clone(), "sink" => s.name.clone()).absolute(s.metrics.dropped());
            let status = if s.failed.load(std::sync::atomic::Ordering::Relaxed) { ConnectionStatus::Failed } else { s.metrics.status() };
            gauge!("ferris_job_sink_connection_status", "job" => j.clone(), "sink" => s.name.clone()).set(connection(status));
        }
        counter!("ferris_job_records_processed_total", "job" => j.clone()).absolute(job.records_processed());
        counter!("ferris_job_late_rows_total", "job" => j.clone()).absolute(job.live.operator_counter("late_rows_dropped"));
        gauge!("ferris_job_state_bytes", "job" => j.clone()).set(job.live.operator_counter("state_bytes") as f64);
    }
    handle.render()
}
