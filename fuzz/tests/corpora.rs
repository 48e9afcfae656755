//! Replays every file of every fuzz corpus (`fuzz/corpus/<target>/`), the project's own
//! statements and YAML files the fuzzers start from, and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`) through its target: none may panic. This is
//! how the fuzzers' findings stay fixed without building them in CI.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect()).unwrap_or_default();
    files.sort();
    files
}

/// The project's own files a target starts from (`fuzz/run.sh` hands libFuzzer the same
/// directories): every statement of the examples, the guide's and Nexmark's, and every YAML file
/// of the guide's examples.
fn seeds(root: &Path, target: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, ext: &[&str], out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| ext.contains(&e)) {
                out.push(path);
            }
        }
    }
    let repo = root.parent().unwrap_or(root);
    let mut out = Vec::new();
    match target {
        "sql" => {
            walk(&repo.join("configs"), &["sql"], &mut out);
            walk(&repo.join("benches/nexmark"), &["sql"], &mut out);
        }
        "config" => walk(&repo.join("configs"), &["yaml", "yml"], &mut out),
        _ => {}
    }
    out.sort();
    out
}

#[test]
fn every_corpus_file_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in ferris_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        let seeds = seeds(root, name);
        // a corpus that went missing would make this test pass on nothing
        assert!(
            corpus.len() + seeds.len() >= 5,
            "fuzz/corpus/{name} holds {} files and the project {} seeds: the seeds are missing",
            corpus.len(),
            seeds.len()
        );
        assert!(matches!(*name, "sql" | "config") == (seeds.len() >= 10), "{name}: {} seed files of the project", seeds.len());
        for file in corpus.iter().chain(&seeds).chain(&inputs(&root.join("regressions").join(name))) {
            let data = std::fs::read(file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                panic!("target '{name}' panicked on {}: {why}", file.display());
            }
        }
    }
}

/// The targets do reach the code they are named for: a good input of each gives no error, so
/// a target that returned early on everything would be noticed.
#[test]
fn good_inputs_pass_through_every_target() {
    let sql = b"CREATE STREAM s AS SELECT id FROM t INTO out WITH ('t.type' = 'file_source', 't.path' = 'a.jsonl', 'out.type' = 'file_sink', 'out.path' = 'o.jsonl');";
    let jobs = ferris_engine::job::analysis::analyze_sql(std::str::from_utf8(sql).unwrap()).unwrap();
    assert!(jobs.iter().all(Result::is_ok));
    ferris_fuzz::sql(sql);
    ferris_fuzz::json(b"id BIGINT, name VARCHAR\n{\"id\": 1, \"name\": \"a\"}\n");
    ferris_fuzz::csv(b"id BIGINT, name VARCHAR\n1,a\n");
    ferris_fuzz::avro(b"{\"type\": \"record\", \"name\": \"r\", \"fields\": [{\"name\": \"id\", \"type\": \"long\"}]}\n\x02");
    ferris_fuzz::substitution(b"A=1\n${A} ${B:-2}");
    ferris_fuzz::config(b"profiles:\n  dev:\n    log_level: INFO\n");
}
