//! `ferris-sql`: run or explain a FerrisStreams SQL file.
//!
//! ```text
//! ferris-sql run configs/ecommerce_pipeline.sql
//! ferris-sql explain configs/ecommerce_pipeline.sql --json
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::Path;

use ferris_connectors::Properties;
use ferris_engine::config::discovery::{discover, Places};
use ferris_engine::config::{AppConfig, ConfigContext, Limits, Variables};
use ferris_engine::explain::{explain, render_text, ExplainedConfig};
use ferris_engine::job::analyze_sql_with;
use ferris_engine::planner::plan_job_with;
use ferris_engine::runner::{run_job, JobReport, Restore, RunOptions};
use tokio::sync::watch;
use tracing::{error, info, warn};

mod server;

/// Tunes glibc's malloc for Arrow's pattern: many buffers of a few hundred KiB to a few MiB,
/// allocated and freed once per batch.
///
/// - At most two arenas (glibc's default is eight per core): buffers freed on other threads
///   than the ones that made them otherwise spread over idle arenas and raise peak memory (a
///   Kafka job at full load: 136 → 114 MiB, throughput unchanged).
/// - Buffers up to 4 MiB come from the heap, and up to 8 MiB of free heap is kept rather than
///   given back at once. glibc's defaults (a threshold that starts at 128 KiB) map and unmap
///   such buffers, or shrink and regrow the heap, for every batch, and each new page faults:
///   Nexmark q0 from JSON Lines took 202 K page faults and 1.07 s; with these, 6 K and 0.85 s,
///   peak RSS 65 → 70 MiB, a Kafka job's unchanged (measured 2026-11-27).
///
/// `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` in the
/// environment still win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 4 << 20),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 8 << 20),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// FerrisStreams: streaming SQL over files (and, soon, Kafka, S3 and PostgreSQL).
#[derive(Parser, Debug)]
#[command(name = "ferris-sql", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Application config file with profiles (else FERRIS_CONFIG_FILE, ./ferris.yaml,
    /// ./configs/ferris.yaml, ~/.ferris/config.yaml, /etc/ferris/config.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The profile to use (else FERRIS_PROFILE, else the file's active_profile).
    #[arg(long, global = true)]
    profile: Option<String>,
}

/// The resolved configuration for a command.
struct Setup {
    ctx: ConfigContext,
    explained: ExplainedConfig,
    limits: Limits,
}

fn setup(cli_config: Option<&Path>, cli_profile: Option<&str>, sql_file: Option<&Path>) -> Result<Setup, String> {
    let vars = Variables::from_process(BTreeMap::new());
    let found = discover(cli_config, &vars, &Places::system(&vars)).map_err(|e| e.to_string())?;
    let mut explained = ExplainedConfig::default();
    let mut ctx_vars = vars.clone();
    let mut profile = None;
    match &found {
        Some(path) => {
            let app = AppConfig::load(path, cli_profile, &vars).map_err(|e| e.to_string())?;
            explained.file = Some(path.display().to_string());
            explained.profile = app.profile.clone();
            explained.profile_source = app.profile_source.as_ref().map(|s| s.to_string());
            explained.variables = Properties::from_pairs("", app.settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))).masked();
            profile = app.profile.clone();
            ctx_vars = vars.clone().with_named_profile(app.profile.clone(), app.settings);
        }
        None if cli_profile.is_some() => {
            return Err("--profile needs an application config file: give --config FILE, set FERRIS_CONFIG_FILE, or create ./ferris.yaml".into())
        }
        None => {}
    }
    let base_dir = sql_file.and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let limits = Limits::from_env(&vars).map_err(|e| e.to_string())?;
    Ok(Setup { ctx: ConfigContext { base_dir, variables: ctx_vars, profile }, explained, limits })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every statement of a SQL file as a job, until bounded input is drained or Ctrl-C.
    Run {
        /// The SQL file.
        file: Option<PathBuf>,
        /// SQL text instead of a file.
        #[arg(long)]
        sql: Option<String>,
        /// Never show the progress line.
        #[arg(long)]
        no_progress: bool,
        /// Print each job's report as JSON on stdout at the end.
        #[arg(long)]
        report_json: bool,
        /// Start from this checkpoint (its `chk-NNNNNNNN` directory, or its manifest) instead of
        /// the job's latest.
        #[arg(long, value_name = "PATH", conflicts_with = "no_restore")]
        from_checkpoint: Option<PathBuf>,
        /// Start afresh: do not restore the job's latest checkpoint.
        #[arg(long)]
        no_restore: bool,
    },
    /// Show what each statement becomes: sources, sinks, options and the physical plan.
    Explain {
        /// The SQL file.
        file: Option<PathBuf>,
        /// SQL text instead of a file.
        #[arg(long)]
        sql: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Skip planning (no file is opened).
        #[arg(long)]
        no_plan: bool,
    },
    /// Start the job server: many jobs behind a REST API with Prometheus metrics.
    Serve {
        /// Port of the REST API.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Port of Arrow Flight and Flight SQL (live streams, queries over the catalogue).
        #[arg(long, default_value_t = 50051)]
        flight_port: u16,
        /// Address to bind (default 127.0.0.1 without FERRIS_AUTH_TOKEN, 0.0.0.0 with one).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Deploy a SQL file's jobs to a running server.
    Deploy {
        /// The SQL file.
        file: Option<PathBuf>,
        /// SQL text instead of a file.
        #[arg(long)]
        sql: Option<String>,
        /// The server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// List the jobs of a running server.
    Jobs {
        /// The server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
    },
}

fn read_sql(file: &Option<PathBuf>, sql: &Option<String>) -> Result<String, String> {
    match (file, sql) {
        (_, Some(s)) => Ok(s.clone()),
        (Some(f), None) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display())),
        (None, None) => Err("give a SQL file, or --sql 'SELECT …'".into()),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ferris_engine=info,ferris_connectors=info,ferris_sql=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false).init();
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (file, sql) = match &cli.command {
        Command::Explain { file, sql, .. } | Command::Run { file, sql, .. } | Command::Deploy { file, sql, .. } => (file.clone(), sql.clone()),
        Command::Serve { .. } | Command::Jobs { .. } => (None, None),
    };
    match &cli.command {
        Command::Deploy { server: url, .. } => return cmd_deploy(read_sql(&file, &sql), url),
        Command::Jobs { server: url } => return cmd_jobs(url),
        _ => {}
    }
    let setup = match setup(cli.config.as_deref(), cli.profile.as_deref(), file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Explain { json, no_plan, .. } => cmd_explain(read_sql(&file, &sql), json, !no_plan, setup).await,
            Command::Run { no_progress, report_json, from_checkpoint, no_restore, .. } => {
                let restore = match (from_checkpoint, no_restore) {
                    (Some(p), _) => Restore::From(p),
                    (None, true) => Restore::Fresh,
                    (None, false) => Restore::Latest,
                };
                cmd_run(read_sql(&file, &sql), !no_progress && std::io::stderr().is_terminal(), report_json, restore, setup).await
            }
            Command::Serve { http_port, flight_port, bind } => match server::serve(setup.ctx, setup.limits, http_port, flight_port, bind).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
            Command::Deploy { .. } | Command::Jobs { .. } => ExitCode::SUCCESS,
        }
    })
}

/// The body of a server's answer when its status is `ok`; else prints why and gives None.
fn answered(r: Result<server::client::Response, String>, ok: u16) -> Option<String> {
    match r {
        Ok(r) if r.status == ok => Some(r.body),
        Ok(r) => {
            eprintln!("error: the server answered {}: {}", r.status, r.body);
            None
        }
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

fn cmd_deploy(sql: Result<String, String>, url: &str) -> ExitCode {
    let Some(sql) = sql_or_report(sql) else { return ExitCode::from(2) };
    let Some(body) = answered(server::client::request(url, "POST", "/api/jobs", Some(("text/plain", &sql))), 201) else {
        return ExitCode::from(1);
    };
    println!("{body}");
    ExitCode::SUCCESS
}

fn cmd_jobs(url: &str) -> ExitCode {
    let Some(body) = answered(server::client::request(url, "GET", "/api/jobs", None), 200) else { return ExitCode::from(1) };
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    println!("{:<30} {:<10} {:>14}  sources -> sinks", "job", "status", "records");
    for j in jobs {
        let names = |k: &str| j[k].as_array().map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default();
        println!(
            "{:<30} {:<10} {:>14}  {} -> {}",
            j["name"].as_str().unwrap_or(""),
            j["status"].as_str().unwrap_or(""),
            j["records_processed"].as_u64().unwrap_or(0),
            names("sources"),
            names("sinks")
        );
    }
    ExitCode::SUCCESS
}

/// The SQL text, or None after printing why it could not be read.
fn sql_or_report(sql: Result<String, String>) -> Option<String> {
    sql.map_err(|e| eprintln!("error: {e}")).ok()
}

async fn cmd_explain(sql: Result<String, String>, json: bool, with_plan: bool, setup: Setup) -> ExitCode {
    let Some(sql) = sql_or_report(sql) else { return ExitCode::from(2) };
    match explain(&sql, with_plan, &setup.ctx, setup.explained).await {
        Ok(e) => {
            if json {
                match serde_json::to_string_pretty(&e) {
                    Ok(s) => println!("{s}"),
                    Err(err) => {
                        eprintln!("error: {err}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", render_text(&e));
            }
            if e.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn cmd_run(sql: Result<String, String>, progress: bool, report_json: bool, restore: Restore, setup: Setup) -> ExitCode {
    let Some(sql) = sql_or_report(sql) else { return ExitCode::from(2) };
    let analysed = match analyze_sql_with(&sql, &setup.ctx) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut specs = Vec::new();
    let mut failed = false;
    for (i, r) in analysed.into_iter().enumerate() {
        match r {
            Ok(mut spec) => {
                for w in &spec.warnings {
                    warn!(job = %spec.name, "{w}");
                }
                for r in spec.sinks.iter().filter(|r| r.connector.kind == ferris_connectors::ConnectorKind::Flight) {
                    warn!(job = %spec.name, "sink '{}' is a flight_sink: `ferris-sql run` serves no Flight clients; deploy the job to `ferris-sql serve` to subscribe to it", r.name);
                }
                if let Some(t) = setup.limits.batch_timeout {
                    if !spec.options.contains("batch.timeout") && !spec.options.contains("batch_timeout") {
                        spec.options.insert_with_origin("batch.timeout", format!("{}ms", t.as_millis()), "FERRIS_BATCH_TIMEOUT_MS");
                    }
                }
                specs.push(spec);
            }
            Err(e) => {
                eprintln!("error: statement {}: {e}", i + 1);
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::from(2);
    }
    if let Err(e) = setup.limits.check(specs.iter().map(|s| (s.name.as_str(), s.sources.len(), s.sinks.len()))) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut planned = Vec::new();
    for spec in specs {
        match plan_job_with(spec, setup.limits.max_memory_mb).await {
            Ok(p) => {
                for n in &p.notes {
                    if n.contains("not applied") {
                        warn!(job = %p.spec.name, "{n}");
                    } else {
                        info!(job = %p.spec.name, "{n}");
                    }
                }
                planned.push(p);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: flushing sinks (Ctrl-C again to quit at once)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let show_progress = progress && planned.len() == 1;
    let tasks: Vec<_> = planned
        .into_iter()
        .map(|p| {
            let opts = RunOptions { progress: show_progress, stop: stop_rx.clone(), live: None, restore: restore.clone() };
            tokio::spawn(run_job(p, opts))
        })
        .collect();
    let mut ok = true;
    for t in tasks {
        match t.await {
            Ok(report) => {
                summarize(&report);
                if report_json {
                    if let Ok(mut v) = serde_json::to_value(&report) {
                        v["elapsed_seconds"] = serde_json::json!(report.elapsed.as_secs_f64());
                        v["peak_rss_mb"] = serde_json::json!(peak_rss_mb());
                        println!("{v}");
                    }
                }
                ok &= report.error.is_none();
            }
            Err(e) => {
                error!("a job panicked: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The process's peak resident memory (VmHWM), in MiB, where the OS tells it.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn summarize(r: &JobReport) {
    let sources: Vec<String> = r
        .sources
        .iter()
        .map(|s| if s.errors > 0 { format!("{} {} rows ({} malformed)", s.name, s.records, s.errors) } else { format!("{} {} rows", s.name, s.records) })
        .collect();
    let sinks: Vec<String> = r
        .sinks
        .iter()
        .map(|s| {
            let mut t = format!("{} {} rows", s.name, s.records);
            if s.errors > 0 {
                t.push_str(&format!(" ({} failed batches, {} rows dropped)", s.errors, s.dropped));
            }
            t
        })
        .collect();
    let state = match (&r.error, r.stopped) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, true) => "stopped".into(),
        (None, false) => "done".into(),
    };
    eprintln!(
        "job '{}' {state} in {:.2}s: read [{}], produced {} rows, wrote [{}]{}",
        r.name,
        r.elapsed.as_secs_f64(),
        sources.join(", "),
        r.rows_out,
        sinks.join(", "),
        if r.fallback_rows > 0 { format!(", {} rows to stdout (every sink failed)", r.fallback_rows) } else { String::new() }
    );
    if r.late_rows > 0 {
        eprintln!("job '{}': {} late rows dropped (their window had closed; raise 'watermark.delay' to keep them)", r.name, r.late_rows);
    }
    if r.stopped && r.state_bytes > 0 {
        eprintln!("job '{}': {:.1} MiB of window and join state when it stopped", r.name, r.state_bytes as f64 / (1 << 20) as f64);
    }
    if r.checkpoints > 0 || r.failed_checkpoints > 0 || r.restored_from.is_some() {
        let restored = r.restored_from.map_or(String::new(), |n| format!(", restored from checkpoint {n}"));
        let failed = if r.failed_checkpoints > 0 { format!(", {} failed", r.failed_checkpoints) } else { String::new() };
        let timing = match r.checkpoint_total_ms.checked_div(r.checkpoints) {
            Some(mean) => format!(" (mean {mean} ms, longest {} ms, last {:.1} KiB of state)", r.checkpoint_max_ms, r.checkpoint_bytes as f64 / 1024.0),
            None => String::new(),
        };
        eprintln!("job '{}': {} checkpoints{timing}{failed}{restored}", r.name, r.checkpoints);
    }
    if r.untimed_rows > 0 {
        eprintln!("job '{}': {} rows dropped without an event time (null, or not a readable time)", r.name, r.untimed_rows);
    }
}
