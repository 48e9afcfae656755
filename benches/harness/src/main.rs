//! `ferris-bench`: runs the Nexmark queries (`benches/nexmark/q*.sql`) with `ferris-sql run`
//! on generated files and prints query, events, seconds, events/s, events/s per core and peak
//! RSS; `--out FILE.md` also writes the table as markdown.
//!
//! ```text
//! bash benches/run.sh --events 10000000 --out benches/results/nexmark.md
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

/// Benchmark options.
#[derive(Parser, Debug)]
struct Args {
    /// Nexmark events to generate (when the files are missing or of another size).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Input format: parquet or jsonl.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Comma-separated queries (default: every benches/nexmark/q*.sql).
    #[arg(long)]
    queries: Option<String>,
    /// Runs per query; the fastest is kept.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write the table as markdown here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("target/release"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Row {
    query: String,
    events: u64,
    seconds: f64,
    rss_mb: f64,
}

fn run_query(sql: &Path, dir: &Path, format: &str) -> Result<Row, String> {
    let out = Command::new(bin_dir().join("ferris-sql"))
        .args(["run", "--report-json", "--no-progress"])
        .arg(sql)
        .env("NEXMARK_DIR", dir)
        .env("NEXMARK_FORMAT", format)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run ferris-sql (build it with `cargo build --release -p ferris-server`): {e}"))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", sql.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).ok_or("no report from ferris-sql")?;
    let events = report["sources"].as_array().map(|s| s.iter().filter_map(|x| x["records"].as_u64()).sum()).unwrap_or(0);
    Ok(Row {
        query: report["name"].as_str().unwrap_or("?").to_string(),
        events,
        seconds: report["elapsed_seconds"].as_f64().unwrap_or(f64::NAN),
        rss_mb: report["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
    })
}

fn main() -> std::process::ExitCode {
    match bench(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferris-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Generates the files when missing, runs the queries and prints (and writes) the table.
fn bench(args: Args) -> Result<(), String> {
    let dir = repo().join("target/nexmark").join(args.events.to_string());
    if !dir.join(format!("bid.{}", args.format)).exists() || !dir.join("side_input.csv").exists() {
        eprintln!("generating {} Nexmark events into {}", args.events, dir.display());
        let gen = bin_dir().join("nexmark-gen");
        let status = Command::new(&gen)
            .args(["--events", &args.events.to_string(), "--out"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("cannot run {} (build it with `cargo build --release -p ferris-bench --bins`): {e}", gen.display()))?;
        if !status.success() {
            return Err(format!("{} failed ({status})", gen.display()));
        }
    }
    let queries = repo().join("benches/nexmark");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&queries)
        .map_err(|e| format!("cannot list {}: {e}", queries.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort_by_key(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s[1..].parse::<u32>().ok()).unwrap_or(0));
    if let Some(q) = &args.queries {
        let wanted: Vec<&str> = q.split(',').map(str::trim).collect();
        files.retain(|p| p.file_stem().is_some_and(|s| wanted.contains(&s.to_string_lossy().as_ref())));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let mut table = format!(
        "Nexmark, {} events generated, {} input, {} cores, best of {}\n\n| query | events read | seconds | events/s | events/s per core | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|\n",
        args.events, args.format, cores, args.repeat
    );
    println!("{:<6} {:>12} {:>9} {:>14} {:>18} {:>10}", "query", "events", "seconds", "events/s", "events/s/core", "RSS MiB");
    for f in files {
        let mut best: Option<Row> = None;
        for _ in 0..args.repeat.max(1) {
            match run_query(&f, &dir, &args.format) {
                Ok(r) if best.as_ref().is_none_or(|b| r.seconds < b.seconds) => best = Some(r),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{e}");
                    break;
                }
            }
        }
        let Some(r) = best else { continue };
        let eps = r.events as f64 / r.seconds;
        println!("{:<6} {:>12} {:>9.3} {:>14.0} {:>18.0} {:>10.0}", r.query, r.events, r.seconds, eps, eps / cores, r.rss_mb);
        table.push_str(&format!("| {} | {} | {:.3} | {:.0} | {:.0} | {:.0} |\n", r.query, r.events, r.seconds, eps, eps / cores, r.rss_mb));
    }
    table.push_str("\nHow each query differs from Flink's text: benches/nexmark/README.md.\n");
    if let Some(out) = args.out {
        if let Some(d) = out.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::write(&out, table).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
