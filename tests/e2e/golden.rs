//! Golden tests: every `.sql` file under `tests/golden/` (the guide's own examples among them)
//! is explained without planning — or run, when it says `-- golden-mode: run` — and the output
//! must equal the `.expected` file beside it.
//! `UPDATE_GOLDEN=1 cargo test --test e2e golden` rewrites the expected files (review the diff).
//! The files that are run are also checked against DataFusion's batch answer over the same files.

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

/// The golden files that are run (`-- golden-mode: run`) are checked against DataFusion too:
/// the same query over the same files, computed in batch by the test, must give the rows of
/// the `.expected` file — so an expected file is never only the engine's own earlier output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_results_equal_datafusions_answer() {
    use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};
    let mut files = Vec::new();
    sql_files(&repo().join("tests/golden"), &mut files);
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if !text.lines().any(|l| l.trim() == "-- golden-mode: run") {
            continue;
        }
        let body: String = text.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
        let (query, with) = body.split_once("\nWITH (").unwrap_or_else(|| panic!("{}: no WITH clause", f.display()));
        let ctx = SessionContext::new();
        for part in with.split(',') {
            let Some((key, value)) = part.split_once('=') else { continue };
            let key = key.trim().trim_matches('\'');
            let Some(name) = key.strip_suffix(".path") else { continue };
            let path = repo().join(value.trim().trim_end_matches(");").trim().trim_matches('\''));
            let p = path.to_str().unwrap();
            if p.ends_with(".csv") {
                ctx.register_csv(name, p, CsvReadOptions::new()).await.unwrap();
            } else {
                // a JSON array (the products file) becomes JSON lines for DataFusion's reader
                let text = std::fs::read_to_string(&path).unwrap();
                let lines = match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                    Ok(rows) => rows.iter().map(|r| r.to_string() + "\n").collect(),
                    Err(_) => text,
                };
                let copy = tmp.path().join(format!("{name}.jsonl"));
                std::fs::write(&copy, lines).unwrap();
                ctx.register_json(name, copy.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
            }
        }
        let want = batch_rows(&ctx, query).await;
        let expected = std::fs::read_to_string(f.with_extension("expected")).unwrap();
        let got: Vec<&str> = expected.lines().take_while(|l| !l.starts_with("--- exit")).collect();
        assert!(!want.is_empty(), "{}: the batch answer is empty", f.display());
        assert_same_rows(&f.display().to_string(), &canonical_lines(&got.join("\n")), &want);
        checked += 1;
    }
    assert!(checked >= 3, "{checked} golden result files");
}
