//! Golden tests: every `.sql` file under `tests/golden/` (the guide's own examples among them)
//! is explained without planning, and the output must equal the `.expected` file beside it.
//! `UPDATE_GOLDEN=1 cargo test --test e2e golden` rewrites the expected files (review the diff).

use std::path::{Path, PathBuf};

use crate::common::*;

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
        let run = ferris(&repo(), &["explain", "--no-plan", f.to_str().unwrap()]);
        let errors: String = run.stderr.lines().filter(|l| l.starts_with("error:")).map(|l| format!("{l}\n")).collect();
        let got = format!("{}--- exit: {}\n{}", run.stdout, run.status, errors);
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
