//! A source that fails while the job runs (the guide's "Partial Source Failure"): a tailed file
//! and a polled API (a real HTTP server on loopback, in the test) merged into one file sink,
//! the API starting to refuse its calls. Simple mode goes on with the file and ends naming the
//! API; a transactional job stops; `RetryWithBackoff` reads the API on from its last row, each
//! row once.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::checkpoints::{assert_exactly_once, interrupt, kill9, settle, sinks_created, start};
use crate::common::canonical_lines;
use crate::http::Server;

/// `n` events of the API or the file, as JSON lines: ids `from..from+n`.
fn events(from: u64, n: u64) -> Vec<String> {
    (from..from + n).map(|i| format!("{{\"id\":{i},\"kind\":\"k{}\"}}", i % 3)).collect()
}

/// The API's answer: its latest events up to `top` (ten at most), at `events`.
fn answer(top: u64) -> (u16, String) {
    let from = top.saturating_sub(9).max(1);
    (200, format!("{{\"events\":[{}]}}", events(from, top + 1 - from).join(",")))
}

/// The job: clicks tailed from `clicks.jsonl` and the API's events polled, merged into `out.jsonl`.
fn job(dir: &Path, base: &str, keys: &str) {
    std::fs::write(dir.join("clicks.jsonl"), events(1001, 10).join("\n") + "\n").unwrap();
    let sql = format!(
        "CREATE STREAM merged AS SELECT id, kind FROM clicks UNION ALL SELECT id, kind FROM feed INTO out WITH (\
         'clicks.type' = 'file_source', 'clicks.path' = 'clicks.jsonl', 'clicks.watch' = 'true', 'clicks.schema' = 'id BIGINT, kind VARCHAR', \
         'feed.type' = 'http_source', 'feed.url' = '{base}/api', 'feed.json.path' = 'events', 'feed.schema' = 'id BIGINT, kind VARCHAR', \
         'feed.poll_interval' = '50ms', 'feed.incremental.column' = 'id', 'feed.retries' = '0', \
         'checkpoint.interval' = '200ms', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl'{keys});"
    );
    std::fs::write(dir.join("job.sql"), sql).unwrap();
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("job.log")).unwrap_or_default()
}

/// Waits (30 s at most) until `done(log)` and `rows` lines are in the output.
fn wait_for(dir: &Path, child: &mut Child, rows: usize, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = std::fs::read_to_string(dir.join("out.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
        if lines >= rows && done(&log(dir)) {
            return;
        }
        if Instant::now() > deadline {
            kill9(child);
            panic!("waited for {rows} rows ({lines} so far); log:\n{}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn launch(dir: &Path) -> Child {
    let before = sinks_created(dir);
    let child = start(dir, "job.sql", &[]);
    settle(dir, before);
    child
}

/// An API that answers once (five events), then refuses every call (404).
fn feed_gone_after_one_answer() -> Server {
    Server::start(|n, _| if n == 0 { answer(5) } else { (404, "no such feed".into()) })
}

fn want(parts: &[Vec<String>]) -> Vec<String> {
    canonical_lines(&parts.concat().join("\n"))
}

/// Simple mode: the API answers once, then refuses (404). The job goes on with the tailed file
/// — rows appended after the API failed arrive — and, stopped, exits non-zero naming the API.
#[test]
fn simple_mode_goes_on_with_the_other_sources_and_names_the_failed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = feed_gone_after_one_answer();
    job(dir, &server.base, "");
    let mut child = launch(dir);
    wait_for(dir, &mut child, 15, |log| log.contains("source 'feed' failed"));
    // the job still reads the file
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("clicks.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, (events(1011, 10).join("\n") + "\n").as_bytes()).unwrap();
    wait_for(dir, &mut child, 25, |_| true);
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let log = log(dir);
    assert!(!status.success(), "a run that lost a source exits non-zero; log:\n{log}");
    assert!(log.contains("the job goes on with its other sources"), "{log}");
    assert!(log.contains("source 'feed' failed: ") && log.contains("404") && log.contains("the job went on with its other sources"), "{log}");
    assert_exactly_once("the file's rows and the API's first answer", &dir.join("out.jsonl"), &want(&[events(1, 5), events(1001, 20)]));
}

/// Under `use_transactions` the same failure stops the job: it never goes on without a source.
#[test]
fn a_transactional_job_stops_when_a_source_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = feed_gone_after_one_answer();
    job(dir, &server.base, ", 'use_transactions' = 'true'");
    let mut child = launch(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill9(&mut child);
            panic!("the job did not stop; log:\n{}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log(dir);
    assert!(!status.success(), "{log}");
    assert!(log.contains("source 'feed' failed: ") && log.contains("under use_transactions the job stops"), "{log}");
    // what was committed before is whole: no row twice, none that was not read
    let got = canonical_lines(&std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default());
    let all = want(&[events(1, 5), events(1001, 10)]);
    assert!(got.iter().all(|r| all.contains(r)), "{got:?}");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "rows twice: {got:?}");
}

/// `RetryWithBackoff`: the API refuses two calls (403, a token being rotated) after its first
/// answer; the source is read again from its last row (id 5) and every row arrives once —
/// read from its start instead, ids 3..5 would arrive twice.
#[test]
fn a_source_retried_with_backoff_goes_on_from_its_last_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(|n, _| match n {
        0 => answer(5),
        1 | 2 => (403, "token expired".into()),
        _ => answer(12),
    });
    job(dir, &server.base, ", 'feed.failure_strategy' = 'RetryWithBackoff', 'feed.max_retries' = '3', 'feed.retry_backoff' = '100ms'");
    let mut child = launch(dir);
    wait_for(dir, &mut child, 22, |_| true);
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&mut child, dir);
    let log = log(dir);
    assert!(log.contains("403") && log.contains("reading on from where it stopped"), "{log}");
    assert!(!log.contains("goes on with its other sources"), "{log}");
    assert_exactly_once("every row once through two refused calls", &dir.join("out.jsonl"), &want(&[events(1, 12), events(1001, 10)]));
}

/// The guide's "Source 2 (File): File not found": a job merging two files, one of them missing
/// at start (its columns declared). Simple mode writes every row of the other file and exits
/// non-zero naming the missing one; under `use_transactions`, or without declared columns to
/// plan with, the job stops at start naming it.
#[test]
fn a_file_not_found_at_start_leaves_simple_mode_running_on_the_other_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("a.jsonl"), events(1, 30).join("\n") + "\n").unwrap();
    let sql = |keys: &str| {
        format!(
            "CREATE STREAM merged AS SELECT id, kind FROM a UNION ALL SELECT id, kind FROM b INTO out WITH (\
             'a.type' = 'file_source', 'a.path' = 'a.jsonl', \
             'b.type' = 'file_source', 'b.path' = 'missing/b_*.jsonl'{keys}, \
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');"
        )
    };
    let run = crate::common::run_sql(dir, &sql(", 'b.schema' = 'id BIGINT, kind VARCHAR'"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("source 'b' (file_source) could not be opened: no file matches 'missing/b_*.jsonl'"), "{}", run.stderr);
    assert!(run.stderr.contains("source 'b' failed: no file matches 'missing/b_*.jsonl'"), "{}", run.stderr);
    assert_exactly_once("the file that is there", &dir.join("out.jsonl"), &want(&[events(1, 30)]));
    std::fs::remove_file(dir.join("out.jsonl")).unwrap();
    // with checkpoints: the run ends (its last checkpoint is not marked finished), and a run
    // once the file is there reads it instead of saying the job already completed
    let run = crate::common::run_sql(dir, &sql(", 'b.schema' = 'id BIGINT, kind VARCHAR', 'checkpoint.dir' = 'chk'"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("source 'b' failed: no file matches"), "{}", run.stderr);
    std::fs::create_dir_all(dir.join("missing")).unwrap();
    std::fs::write(dir.join("missing/b_1.jsonl"), events(2001, 5).join("\n") + "\n").unwrap();
    let run = crate::common::run_sql(dir, &sql(", 'b.schema' = 'id BIGINT, kind VARCHAR', 'checkpoint.dir' = 'chk'"));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("already completed") && run.stderr.contains("restoring checkpoint"), "{}", run.stderr);
    let got = canonical_lines(&std::fs::read_to_string(dir.join("out.jsonl")).unwrap());
    assert!(want(&[events(2001, 5)]).iter().all(|r| got.contains(r)), "b's rows once it is there: {got:?}");
    std::fs::remove_dir_all(dir.join("missing")).unwrap();
    std::fs::remove_file(dir.join("out.jsonl")).unwrap();
    for keys in [", 'b.schema' = 'id BIGINT, kind VARCHAR', 'use_transactions' = 'true'", ""] {
        let run = crate::common::run_sql(dir, &sql(keys));
        assert_ne!(run.status, 0, "{}", run.stderr);
        assert!(run.stderr.contains("no file matches 'missing/b_*.jsonl'") && !run.stderr.contains("goes on"), "{keys}: {}", run.stderr);
        assert!(!dir.join("out.jsonl").exists() || std::fs::read_to_string(dir.join("out.jsonl")).unwrap().is_empty(), "{keys}: nothing written");
    }
}
