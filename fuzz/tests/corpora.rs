//! Replays every file of every fuzz corpus (`fuzz/corpus/<target>/`) and every input a fuzzer
//! once crashed on (`fuzz/regressions/<target>/`) through its target: none may panic. This is
//! how the fuzzers' findings stay fixed without building them in CI.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect()).unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_corpus_file_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in ferris_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        // a corpus that went missing would make this test pass on nothing
        assert!(corpus.len() >= 5, "fuzz/corpus/{name} holds {} files: the seeds are missing", corpus.len());
        for file in corpus.iter().chain(&inputs(&root.join("regressions").join(name))) {
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
