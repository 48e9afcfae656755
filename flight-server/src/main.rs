//! `ferris-sql`: run or explain a FerrisStreams SQL file, or serve jobs.
//!
//! ```text
//! ferris-sql run configs/ecommerce_pipeline.sql
//! ferris-sql explain configs/ecommerce_pipeline.sql --json
//! ferris-sql --sql "SELECT * FROM orders WITH (…)"                    # the guide's form: run
//! ferris-sql --config configs/app.yaml --profile production           # runs the profile's sql_file
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

mod cpu_features;
mod server;
mod zeroing_allocator;

#[global_allocator]
static ALLOCATOR: zeroing_allocator::ZeroingAllocator = zeroing_allocator::ZeroingAllocator;

/// Blocks up to this size come from glibc's heap; larger ones are mapped on their own
/// (`tune_malloc`; the zeroing allocator leaves those to `calloc`).
const MMAP_THRESHOLD: usize = 4 << 20;

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
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX)),
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

/// FerrisStreams: streaming SQL over files, Kafka, S3 and PostgreSQL.
///
/// Without a command it runs, as the guide writes it: `ferris-sql --sql "…"`, `ferris-sql
/// job.sql`, or `ferris-sql --config app.yaml --profile production` (the profile's `sql_file`).
#[derive(Parser, Debug)]
#[command(
    name = "ferris-sql",
    version,
    about = "FerrisStreams: streaming SQL over files, Kafka, S3 and PostgreSQL.\n\nWithout a command it runs SQL as the user's guide writes it: `ferris-sql --sql \"SELECT …\"`, `ferris-sql job.sql`, or `ferris-sql --config app.yaml --profile production` (the profile's `sql_file`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: the SQL file to run (as `run FILE`).
    file: Option<PathBuf>,
    /// Without a command: SQL text to run (as `run --sql`).
    #[arg(long)]
    sql: Option<String>,
    /// Write the log to this file as well as to stderr (else the profile's `log_file`).
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
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
    /// The active profile's settings (`log_level`, `batch_size`, `sql_file`, …).
    settings: BTreeMap<String, String>,
    /// The config file, when one was found.
    config_file: Option<PathBuf>,
}

/// A profile setting that must be a boolean: `true`/`false` (also yes/no, 1/0).
fn setting_bool(setup_file: &Option<PathBuf>, settings: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, String> {
    match settings.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if ["true", "yes", "1", "on"].contains(&v.as_str()) => Ok(Some(true)),
        Some(v) if ["false", "no", "0", "off", ""].contains(&v.as_str()) => Ok(Some(false)),
        Some(v) => {
            Err(format!("{}: profile setting '{key}' must be true or false, got '{v}'", setup_file.as_ref().map_or(String::new(), |p| p.display().to_string())))
        }
    }
}

fn setup(cli_config: Option<&Path>, cli_profile: Option<&str>, sql_file: Option<&Path>) -> Result<Setup, String> {
    let vars = Variables::from_process(BTreeMap::new());
    let found = discover(cli_config, &vars, &Places::system(&vars)).map_err(|e| e.to_string())?;
    let mut explained = ExplainedConfig::default();
    let mut ctx_vars = vars.clone();
    let mut profile = None;
    let mut settings = BTreeMap::new();
    let mut overrides = Vec::new();
    let mut overrides_origin = String::new();
    match &found {
        Some(path) => {
            let app = AppConfig::load(path, cli_profile, &vars).map_err(|e| e.to_string())?;
            explained.file = Some(path.display().to_string());
            explained.profile = app.profile.clone();
            explained.profile_source = app.profile_source.as_ref().map(|s| s.to_string());
            explained.variables = Properties::from_pairs("", app.settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))).masked();
            profile = app.profile.clone();
            settings = app.settings.clone();
            overrides = app.overrides.into_iter().collect();
            overrides_origin = format!("{}, profile '{}'", path.display(), app.profile.as_deref().unwrap_or("?"));
            ctx_vars = vars.clone().with_named_profile(app.profile.clone(), app.settings);
        }
        None if cli_profile.is_some() => {
            return Err("--profile needs an application config file: give --config FILE, set FERRIS_CONFIG_FILE, or create ./ferris.yaml".into())
        }
        None => {}
    }
    let base_dir = sql_file.and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut limits = Limits::from_env(&vars).map_err(|e| e.to_string())?;
    // the profile's settings that configure the run (the others are `${…}` variables only)
    let file = found.clone();
    let origin = |key: &str| format!("{}: profile setting '{key}'", file.as_ref().map_or(String::new(), |p| p.display().to_string()));
    if let Some(v) = settings.get("batch_size") {
        let n: usize =
            v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{} must be a positive whole number, got '{v}'", origin("batch_size")))?;
        limits.batch_size = Some(n);
    }
    if setting_bool(&found, &settings, "monitoring_enabled")? == Some(true) {
        limits.monitor = Some(std::time::Duration::from_secs(10));
    }
    if setting_bool(&found, &settings, "metrics_enabled")? == Some(false) {
        limits.metrics_enabled = false;
    }
    Ok(Setup { ctx: ConfigContext { base_dir, variables: ctx_vars, profile, overrides, overrides_origin }, explained, limits, settings, config_file: found })
}

#[derive(Subcommand, Debug, Clone)]
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

/// Logging: `RUST_LOG` wins; else the profile's `log_level` (ERROR, WARN, INFO, DEBUG, TRACE)
/// for FerrisStreams' own messages; to stderr, and to `log_file` as well when given.
fn init_logging(level: Option<&str>, log_file: Option<&Path>) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let ours = match level.map(|l| l.trim().to_ascii_lowercase()) {
        None => "info".to_string(),
        Some(l) if l == "warning" => "warn".to_string(),
        Some(l) if ["error", "warn", "info", "debug", "trace", "off"].contains(&l.as_str()) => l,
        Some(_) => return Err(format!("profile setting 'log_level' must be one of ERROR, WARN, INFO, DEBUG, TRACE, got '{}'", level.unwrap_or_default())),
    };
    // the monitoring lines (`monitoring_enabled`) whatever the level
    let default = format!("warn,ferris_engine={ours},ferris_connectors={ours},ferris_sql={ours},ferris_monitor=info");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::io::stderr.and(std::sync::Mutex::new(file))).init();
        }
        None => builder.with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    cpu_features::check();
    tune_malloc();
    let cli = Cli::parse();
    // no command: the guide's `ferris-sql --sql "…"` / `ferris-sql --config app.yaml` run
    let command = cli.command.clone().unwrap_or(Command::Run {
        file: cli.file.clone(),
        sql: cli.sql.clone(),
        no_progress: false,
        report_json: false,
        from_checkpoint: None,
        no_restore: false,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut file, sql) = match &command {
        Command::Explain { file, sql, .. } | Command::Run { file, sql, .. } | Command::Deploy { file, sql, .. } => (file.clone(), sql.clone()),
        Command::Serve { .. } | Command::Jobs { .. } => (None, None),
    };
    match &command {
        Command::Deploy { server: url, .. } => {
            let _ = init_logging(None, cli.log_file.as_deref());
            return cmd_deploy(read_sql(&file, &sql), url);
        }
        Command::Jobs { server: url } => {
            let _ = init_logging(None, cli.log_file.as_deref());
            return cmd_jobs(url);
        }
        _ => {}
    }
    let mut setup = match setup(cli.config.as_deref(), cli.profile.as_deref(), file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `ferris-sql serv`: a mistyped command, not a SQL file
    if let (None, Some(f)) = (&cli.command, &file) {
        if !f.exists() {
            eprintln!("error: '{}' is neither a SQL file nor a command (commands: run, explain, serve, deploy, jobs; see --help)", f.display());
            return ExitCode::from(2);
        }
    }
    // nothing named to run or explain: the profile's sql_file (relative to the config file)
    let takes_sql = matches!(command, Command::Run { .. } | Command::Explain { .. });
    if takes_sql && file.is_none() && sql.is_none() {
        match (setup.settings.get("sql_file"), &setup.config_file) {
            (Some(f), Some(cfg)) => {
                let path = cfg.parent().unwrap_or(Path::new(".")).join(f);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    setup.ctx.base_dir = dir.to_path_buf();
                }
                file = Some(path);
            }
            _ => {
                eprintln!(
                    "error: nothing to run: give SQL (`ferris-sql --sql \"SELECT …\"`, `ferris-sql job.sql`), a command (`ferris-sql --help`), or a `sql_file:` in the config's profile"
                );
                return ExitCode::from(2);
            }
        }
    }
    let log_file = cli.log_file.clone().or_else(|| setup.settings.get("log_file").filter(|f| !f.trim().is_empty()).map(PathBuf::from));
    if let Err(e) = init_logging(setup.settings.get("log_level").map(String::as_str), log_file.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    runtime.block_on(async move {
        match command {
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
                setup.limits.apply_job_defaults(&mut spec.options);
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
            let opts = RunOptions { progress: show_progress, stop: stop_rx.clone(), live: None, restore: restore.clone(), monitor: setup.limits.monitor };
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
        .map(|s| {
            let mut t = format!("{} {} rows", s.name, s.records);
            if s.errors > 0 {
                t.push_str(&format!(" ({} malformed)", s.errors));
            }
            if s.failed {
                t.push_str(", failed");
            }
            t
        })
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
    if let Some((sink, written)) = &r.late_sink {
        eprintln!("job '{}': {} late rows (their window had closed), {written} of them written to late sink '{sink}'", r.name, r.late_rows);
    } else if r.late_rows > 0 {
        eprintln!(
            "job '{}': {} late rows dropped (their window had closed; raise 'watermark.delay' to keep them, or send them to a sink with 'late.sink')",
            r.name, r.late_rows
        );
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
