//! Golden tests: every `.sql` file under `tests/golden/` (the guide's own examples among them)
//! is explained without planning — or run, when it says `-- golden-mode: run` — and the output
//! must equal the `.expected` file beside it.
//! `UPDATE_GOLDEN=1 cargo test --test e2e golden` rewrites the expected files (review the diff).

use std::path::{Path, PathBuf};

use crate::common::*;

/// The fixed environment golden files are explained in, so that outputs do not depend on the
/// machine (secrets among them, to show they are masked).
const GOLDEN_ENV: &[(&str, &str)] = &[
    ("HOME", "/home/ferris"),
    ("USER", "ferris"),
    ("ENVIRONMENT", "staging"),
    ("VERSION", "v2"),
    ("KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092"),
    ("KAFKA_USERNAME", "ferris"),
    ("KAFKA_PASSWORD", "kafka-secret-value"),
    ("SCHEMA_REGISTRY_URL", "http://registry:8081"),
    ("DB_USER", "app"),
    ("DB_PASSWORD", "db-secret-value"),
    ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-value"),
    ("FERRIS_FIXED_TIME", "2024-01-31T13:05:09Z"),
];

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sql_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "sql") {
            out.push(p);
        }
    }
}

#[test]
fn golden_explain_outputs() {
    let root = repo().join("tests/golden");
    let mut files = Vec::new();
    sql_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 30, "golden files missing");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut args: Vec<String> =
            text.lines().filter_map(|l| l.strip_prefix("-- golden-args:")).flat_map(|a| a.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
        let file = f.strip_prefix(repo()).unwrap().display().to_string();
        // `-- golden-mode: run` files are run (rows sorted: partitions interleave); others explained.
        let run_mode = text.lines().any(|l| l.trim() == "-- golden-mode: run");
        if run_mode {
            args.extend(["run".to_string(), file]);
        } else {
            args.extend(["explain".to_string(), "--no-plan".to_string(), file]);
        }
        let run = ferris_in_env(&repo(), &args, GOLDEN_ENV);
        let errors: String = run.stderr.lines().filter(|l| l.starts_with("error:")).map(|l| format!("{l}\n")).collect();
        let stdout = if run_mode {
            let mut rows: Vec<&str> = run.stdout.lines().collect();
            rows.sort();
            rows.iter().map(|r| format!("{r}\n")).collect()
        } else {
            run.stdout.clone()
        };
        let got = format!("{stdout}--- exit: {}\n{errors}", run.status);
        let expected_path = f.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- expected\n{want}\n--- got\n{got}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{} golden files differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn golden_outputs_never_show_secrets() {
    let mut files = Vec::new();
    sql_files(&repo().join("tests/golden"), &mut files);
    for f in files {
        let expected = std::fs::read_to_string(f.with_extension("expected")).unwrap_or_default();
        for secret in ["kafka-secret-value", "db-secret-value", "aws-secret-value"] {
            assert!(!expected.contains(secret), "{} shows a secret", f.display());
        }
    }
}
