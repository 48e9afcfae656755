//! The command line as the guide writes it: `ferris-sql --sql "…"` and `ferris-sql --config
//! app.yaml --profile production` without a command, and the profile settings that configure a
//! run (`log_level`, `log_file`, `batch_size`, `monitoring_enabled`, `sql_file`).

use std::process::Command;

use crate::common::{assert_ok, canonical_lines, data, file_rows, Run};

fn ferris(dir: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FERRIS_PROFILE")
        .env_remove("FERRIS_CONFIG_FILE")
        .output()
        .expect("run ferris-sql");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What `job` writes: the orders over 1000, read from the sample file itself.
fn big_orders() -> Vec<String> {
    let text = std::fs::read_to_string(data("orders.jsonl")).unwrap();
    let rows: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["amount"].as_f64().unwrap() > 1000.0)
        .map(|v| serde_json::json!({ "order_id": v["order_id"], "amount": v["amount"] }).to_string())
        .collect();
    canonical_lines(&rows.join("\n"))
}

fn job(out: &str) -> String {
    format!(
        "CREATE STREAM big AS SELECT order_id, amount FROM orders WHERE amount > 1000 INTO out \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'out.type' = 'file_sink', 'out.path' = '{out}');",
        data("orders.jsonl")
    )
}

#[test]
fn the_guides_forms_run_without_a_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // --sql, no command
    let run = ferris(dir, &["--sql", &job("a.jsonl")]);
    assert_ok(&run);
    let a = file_rows(&dir.join("a.jsonl"));
    assert_eq!(a, big_orders());
    // a file, no command
    std::fs::write(dir.join("job.sql"), job("b.jsonl")).unwrap();
    assert_ok(&ferris(dir, &["job.sql"]));
    assert_eq!(file_rows(&dir.join("b.jsonl")), a);
    // the commands are still there, and --help shows both
    let help = ferris(dir, &["--help"]);
    assert!(
        help.stdout.contains("--sql") && help.stdout.contains("run") && help.stdout.contains("explain") && help.stdout.contains("serve"),
        "{}",
        help.stdout
    );
    // nothing to run says what to give
    let run = ferris(dir, &[]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("nothing to run") && run.stderr.contains("sql_file"), "{}", run.stderr);
}

#[test]
fn profile_settings_configure_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("configs/jobs")).unwrap();
    std::fs::write(dir.join("configs/jobs/big.sql"), job("out.jsonl")).unwrap();
    std::fs::write(
        dir.join("configs/app.yaml"),
        "active_profile: \"${FERRIS_PROFILE:-development}\"\n\
         profiles:\n  base: &base\n    log_level: \"INFO\"\n    batch_size: 7\n    sql_file: \"jobs/big.sql\"\n\
         \x20 development:\n    <<: *base\n    log_level: \"DEBUG\"\n\
         \x20 production:\n    <<: *base\n    log_level: \"WARN\"\n    log_file: \"ferris.log\"\n    monitoring_enabled: true\n",
    )
    .unwrap();
    // production: WARN keeps the info lines out of stderr; batch_size 7 cuts the source's batches
    let run = ferris(dir, &["--config", "configs/app.yaml", "--profile", "production", "--report-json"]);
    assert_eq!(run.status, 2, "--report-json belongs to `run`: {}", run.stderr);
    let run = ferris(dir, &["run", "configs/jobs/big.sql", "--config", "configs/app.yaml", "--profile", "production", "--report-json"]);
    assert_ok(&run);
    assert!(!run.stderr.contains("Successfully created"), "log_level WARN: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let (rows, batches) = (report["sources"][0]["records"].as_u64().unwrap(), report["sources"][0]["batches"].as_u64().unwrap());
    assert_eq!(rows, 240);
    assert!(batches >= 240 / 7, "batch_size 7: {batches} batches of {rows} rows");
    // the guide's form: the profile's sql_file, relative to the config file
    std::fs::remove_file(dir.join("out.jsonl")).unwrap();
    let run = ferris(dir, &["--config", "configs/app.yaml", "--profile", "production"]);
    assert_ok(&run);
    assert_eq!(file_rows(&dir.join("out.jsonl")), big_orders());
    // log_file gets what the level lets through; DEBUG (development) lets the guide's lines through
    std::fs::remove_file(dir.join("out.jsonl")).unwrap();
    let run = ferris(dir, &["--config", "configs/app.yaml", "--log-file", "dev.log"]);
    assert_ok(&run);
    let log = std::fs::read_to_string(dir.join("dev.log")).unwrap();
    for line in [
        "Creating source 'orders' (file_source)",
        "Successfully created source 'orders' (file_source)",
        "Creating sink 'out' (file_sink)",
        "Successfully created sink 'out' (file_sink)",
    ] {
        assert!(log.contains(line) && run.stderr.contains(line), "'{line}' in the log file and on stderr:\n{log}");
    }
    // a wrong level is named
    std::fs::write(dir.join("configs/bad.yaml"), "profiles:\n  p:\n    log_level: LOUD\n    sql_file: jobs/big.sql\n").unwrap();
    let run = ferris(dir, &["--config", "configs/bad.yaml", "--profile", "p"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("log_level") && run.stderr.contains("LOUD"), "{}", run.stderr);
}

/// On a CPU older than the build's target (`.cargo/config.toml`: x86-64-v3 with AES-NI and
/// CLMUL), emulated by qemu's user mode, `ferris-sql` stops at start with exit code 2 and an
/// error that says so and names the flags that build for that CPU, not an illegal instruction.
/// A Sandy Bridge has AVX but neither AVX2 nor FMA; a Nehalem none of them, nor AES-NI; a
/// Haswell has everything. A build without those features (`RUSTFLAGS` replacing the
/// config's) runs on all three.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_cpu_without_the_builds_features_is_refused() {
    let built_for_v3 = cfg!(all(target_feature = "avx2", target_feature = "aes", target_feature = "pclmulqdq"));
    for (cpu, refused) in [("Nehalem", built_for_v3), ("SandyBridge", built_for_v3), ("Haswell", false)] {
        let out = Command::new("qemu-x86_64")
            .args(["-cpu", cpu, env!("CARGO_BIN_EXE_ferris-sql"), "--help"])
            .output()
            .expect("qemu-x86_64 (bash tests/services/qemu.sh install)");
        let (code, stdout, stderr) = (out.status.code(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if refused {
            assert_eq!(code, Some(2), "{cpu}: {stderr}");
            assert!(stderr.contains("error: this build of ferris-sql uses CPU features this machine lacks: it was built for x86-64-v3"), "{cpu}: {stderr}");
            assert!(stderr.contains("RUSTFLAGS=\"-C target-cpu=native\" cargo build --release"), "{cpu}: {stderr}");
            assert!(stdout.is_empty(), "{cpu}: nothing else runs: {stdout}");
        } else {
            assert_eq!(code, Some(0), "{cpu}: {stderr}");
            assert!(stdout.contains("FerrisStreams"), "{cpu}: the help: {stdout}");
        }
    }
}
