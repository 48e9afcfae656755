//! Checkpoints and crash recovery, with real processes: a job is killed with SIGKILL at random
//! moments and started again, several times, and must end with exactly DataFusion's batch
//! answer over the same input under `use_transactions` (nothing lost, nothing twice), and with
//! every row at least once without it. Also: the transactional selection rule, a query changed
//! between runs, `--no-restore` and `--from-checkpoint`.
//!
//! The kill moments come from `FERRIS_CHAOS_SEED` (printed, so that a failure can be replayed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::windows::{write_clicks, Lcg};

/// The seed of the kill moments: `FERRIS_CHAOS_SEED`, else the clock.
pub(crate) fn chaos_seed() -> u64 {
    std::env::var("FERRIS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7))
}

/// Starts `ferris-sql run FILE` in `dir`, its log appended to `dir/job.log`.
pub(crate) fn start(dir: &Path, file: &str, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("job.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", file, "--no-progress"])
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", std::env::var("JOB_LOG").unwrap_or_else(|_| "warn,ferris_engine=info".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Sinks created so far by the jobs logging to `dir/job.log`.
pub(crate) fn sinks_created(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("job.log")).unwrap_or_default().matches("Successfully created sink").count()
}

/// Waits until the job just started has created its sinks (and its Ctrl-C handler): more than
/// `before` sinks created.
pub(crate) fn settle(dir: &Path, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sinks_created(dir) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// SIGKILL, and reap.
pub(crate) fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGINT, and wait (10 s at most) for a clean stop.
pub(crate) fn interrupt(child: &mut Child, dir: &Path) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "the job failed; its log:\n{}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(child);
    panic!("the job did not stop on SIGINT; its log:\n{}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
}

/// Waits until `done(lines of path)` or `secs` pass; false on timeout.
fn wait_lines(path: &Path, secs: u64, done: impl Fn(usize) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let n = std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0);
        if done(n) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Canonical rows of a JSON Lines file, with how many times each came.
pub(crate) fn counted(path: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in canonical_lines(&std::fs::read_to_string(path).unwrap_or_default()) {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

/// Asserts that the JSON Lines file `path` holds exactly the rows `want`, none of them twice.
pub(crate) fn assert_exactly_once(what: &str, path: &Path, want: &[String]) {
    let lines: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
    assert_exactly_once_rows(what, &lines, want);
}

/// Asserts that the JSON lines `lines` are exactly the rows `want`, none of them twice.
pub(crate) fn assert_exactly_once_rows(what: &str, lines: &[String], want: &[String]) {
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for l in canonical_lines(&lines.join("\n")) {
        *got.entry(l).or_insert(0) += 1;
    }
    let twice: Vec<&String> = got.iter().filter(|(_, n)| **n > 1).map(|(r, _)| r).collect();
    assert!(twice.is_empty(), "{what}: rows written twice: {:?}", &twice[..twice.len().min(3)]);
    assert_same_rows(what, &got.into_keys().collect::<Vec<_>>(), want);
}

const BASE_MS: u64 = 1_700_000_000_000;

/// Clicks in event-time order, then one far-future click that moves the watermark past every
/// real window (a tailed file never ends).
fn clicks_with_sentinel(path: &Path, n: usize) {
    write_clicks(path, 42, n, 25, 0, 7);
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&sentinel());
    std::fs::write(path, text).unwrap();
}

pub(crate) fn sentinel() -> String {
    // BASE_MS + 100_000 s, in both time columns
    format!("{{\"ts\":{},\"ts_iso\":\"2023-11-16T02:00:00.000Z\",\"user_id\":\"sentinel\",\"amount\":0}}\n", BASE_MS + 100_000_000)
}

/// Writes `lines` to `path` a tenth at a time, every 250 ms (a file being tailed), the last
/// tenth followed by the sentinel: returns when all is written.
fn append_slowly(path: PathBuf, lines: Vec<String>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        let step = lines.len().div_ceil(10);
        for chunk in lines.chunks(step) {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
            f.write_all(chunk.concat().as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(sentinel().as_bytes()).unwrap();
    })
}

pub(crate) const WINDOW_SQL: &str =
    "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id";
const WINDOW_BATCH: &str = "SELECT to_timestamp_millis(ts / 10000 * 10000) AS window_start, to_timestamp_millis(ts / 10000 * 10000 + 10000) AS window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks WHERE user_id <> 'sentinel' GROUP BY 1, 2, 3";

fn window_job(input: &Path, extra: &str) -> String {
    tailed_window_job(input, &format!("'out.type' = 'file_sink', 'out.path' = 'out.jsonl'{extra}"))
}

/// The kill tests' windowed job over the tailed file `input` (checkpoints every 200 ms), into
/// the sink `out` that `sink` describes (`'out.type' = …, …`).
pub(crate) fn tailed_window_job(input: &Path, sink: &str) -> String {
    format!(
        "CREATE STREAM w AS {WINDOW_SQL} INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
         'clicks.event_time' = 'ts', 'clicks.watch' = 'true', 'clicks.batch.size' = '100', 'checkpoint.interval' = '200ms', {sink});",
        input.display()
    )
}

async fn batch_answer(input: &Path, sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("clicks", input.to_str().unwrap(), opts).await.unwrap();
    batch_rows(&ctx, sql).await
}

/// Kills the job `kills` times at random moments (each run 0.3–1.2 s) while `input` grows,
/// then runs it until `done(output)` (or 120 s), and stops it cleanly.
pub(crate) fn crash_and_finish(dir: &Path, kills: usize, seed: u64, input: &Path, full: &[String], done: impl Fn(&Path) -> bool) {
    let _ = std::fs::remove_file(input);
    std::fs::write(input, "").unwrap();
    let writer = append_slowly(input.to_path_buf(), full.to_vec());
    let mut rng = Lcg::new(seed);
    for _ in 0..kills {
        let mut child = start(dir, "job.sql", &[]);
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        kill9(&mut child);
    }
    writer.join().unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !done(&dir.join("out.jsonl")) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(700)); // a duplicate would show by now
    interrupt(&mut child, dir);
}

/// Runs `dir/job.sql` (transactional, into `out.jsonl`) killed five times at random moments
/// while `input` grows to `lines`: the output must be `want`, every row once, and some run
/// must have restored a checkpoint.
fn killed_five_times_exactly_once(dir: &Path, input: &Path, lines: &[String], want: &[String]) {
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let n = want.len();
    crash_and_finish(dir, 5, seed, input, lines, |out| std::fs::read_to_string(out).map(|t| t.lines().count() >= n).unwrap_or(false));
    assert_exactly_once(&format!("exactly once after 5 kills (seed {seed})"), &dir.join("out.jsonl"), want);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint:\n{log}");
}

/// The input of the kill tests: `n` clicks as lines, and the batch answer over them.
pub(crate) async fn kill_test_input(dir: &Path, n: usize) -> (PathBuf, Vec<String>, Vec<String>) {
    let input = dir.join("clicks.jsonl");
    clicks_with_sentinel(&input, n);
    let want = batch_answer(&input, WINDOW_BATCH).await;
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<String> = text.lines().filter(|l| !l.contains("sentinel")).map(|l| format!("{l}\n")).collect();
    (input, lines, want)
}

/// A windowed aggregate over a file being tailed, under `use_transactions`, killed five times
/// at random moments while the file grows: the output holds every window exactly once, as
/// DataFusion computes them over the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_window_job_gives_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, want) = kill_test_input(dir, 40_000).await;
    std::fs::write(dir.join("job.sql"), window_job(&input, ", 'use_transactions' = 'true'")).unwrap();
    killed_five_times_exactly_once(dir, &input, &lines, &want);
    assert!(!dir.join(".ferris-staging/w-out").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false), "nothing left staged after a clean stop");
}

/// The same job without transactions: killed five times while the file grows, it loses
/// nothing (a window may be written again after a restart: at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_simple_window_job_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, want) = kill_test_input(dir, 40_000).await;
    std::fs::write(dir.join("job.sql"), window_job(&input, "")).unwrap();
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let n = want.len();
    crash_and_finish(dir, 5, seed, &input, &lines, |out| counted(out).len() >= n);
    let got = counted(&dir.join("out.jsonl"));
    let missing: Vec<&String> = want.iter().filter(|r| !got.contains_key(*r)).collect();
    assert!(missing.is_empty(), "rows lost (seed {seed}): {} of {}, e.g. {:?}", missing.len(), want.len(), &missing[..missing.len().min(3)]);
    let extra: Vec<&String> = got.keys().filter(|r| !want.contains(r)).collect();
    assert!(extra.is_empty(), "rows that are no window of the input (partial windows?): {:?}", &extra[..extra.len().min(3)]);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!("at least once: {} rows, {duplicates} written again after a restart", want.len());
}

/// `use_transactions` with a sink that cannot take part refuses to start, naming it.
#[test]
fn transactions_refuse_a_sink_that_cannot_take_part() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clicks.jsonl");
    write_clicks(&input, 1, 10, 25, 0, 2);
    let sql = format!(
        "CREATE STREAM w AS SELECT user_id FROM clicks INTO shown WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', \
         'use_transactions' = 'true', 'shown.type' = 'stdout');",
        input.display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("use_transactions: sink 'shown': it cannot take part in transactions"), "the refusal names the sink: {}", run.stderr);
}

/// A bounded transactional job publishes its output once, at the end; run again, it has
/// nothing more to do (its inputs were read), unless asked to start afresh.
#[test]
fn a_bounded_transactional_job_commits_once_and_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clicks.jsonl");
    write_clicks(&input, 3, 500, 25, 0, 3);
    let sql = format!(
        "CREATE STREAM c AS SELECT user_id, amount FROM clicks WHERE amount > 50 INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', \
         'use_transactions' = 'true', 'out.type' = 'file_sink', 'out.path' = 'out/c.csv');",
        input.display()
    );
    let first = run_sql(tmp.path(), &sql);
    assert_eq!(first.status, 0, "{}", first.stderr);
    let out = tmp.path().join("out/c.csv");
    let text = std::fs::read_to_string(&out).unwrap();
    let rows = text.lines().count();
    assert!(rows > 100 && text.starts_with("user_id,amount\n"), "{rows} lines, one header");
    let again = run_sql(tmp.path(), &sql);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(again.stderr.contains("already completed"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text, "nothing written twice");
    let fresh = ferris(tmp.path(), &["run", "job.sql", "--no-restore"]);
    assert_eq!(fresh.status, 0, "{}", fresh.stderr);
    let both = std::fs::read_to_string(&out).unwrap();
    assert_eq!(both.lines().count(), 2 * rows - 1, "a fresh run appends its rows once more, without a second header");
}

/// A checkpoint taken with one query is not restored into another: the job says so and how
/// to go on; `--no-restore` starts afresh, `--from-checkpoint` picks a checkpoint.
#[test]
fn a_changed_query_is_refused_its_old_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("clicks.jsonl");
    clicks_with_sentinel(&input, 2_000);
    std::fs::write(dir.join("job.sql"), window_job(&input, "")).unwrap();
    let mut child = start(dir, "job.sql", &[]);
    assert!(wait_lines(&dir.join("out.jsonl"), 60, |n| n > 0), "{}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&mut child, dir);
    let changed = window_job(&input, "").replace("INTERVAL '10' SECOND", "INTERVAL '20' SECOND");
    std::fs::write(dir.join("job.sql"), changed).unwrap();
    let refused = ferris(dir, &["run", "job.sql", "--no-progress"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("was taken with another query") && refused.stderr.contains("--no-restore"), "{}", refused.stderr);
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints/w")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!checkpoints.is_empty());
    let mut fresh = start(dir, "job.sql", &["--no-restore"]);
    std::thread::sleep(Duration::from_millis(1500));
    interrupt(&mut fresh, dir);
    assert!(std::fs::read_to_string(dir.join("job.log")).unwrap().contains("stop requested"));
}

/// `dir/big.parquet`, written by our own file sink from the JSON lines `lines` read with the
/// declared `columns` (`id BIGINT, station VARCHAR`); returns its path.
fn parquet_of_lines(dir: &Path, columns: &str, lines: impl Iterator<Item = String>) -> PathBuf {
    use std::io::Write;
    let json = dir.join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&json).unwrap());
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let parquet = dir.join("big.parquet");
    let names: Vec<&str> = columns.split(',').filter_map(|c| c.split_whitespace().next()).collect();
    let convert = format!(
        "CREATE STREAM c AS SELECT {} FROM big INTO pq WITH ('big.type' = 'file_source', 'big.path' = '{}', \
         'big.schema' = '{columns}', 'pq.type' = 'file_sink', 'pq.path' = '{}');",
        names.join(", "),
        json.display(),
        parquet.display()
    );
    std::fs::write(dir.join("convert.sql"), &convert).unwrap();
    let run = crate::common::ferris(dir, &["run", "convert.sql", "--no-progress"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    parquet
}

/// Text that a checkpoint's state holds as `Utf8` restores into a job that holds it as views
/// (`Utf8View`). A Parquet source with a declared schema copies its text out as `Utf8`, as
/// every Parquet source did before its inferred text became views (2026-12-04): the group keys
/// and the `MAX` of text of a `GROUP BY` are kept so, and the text arguments of session
/// windows, kept row by row. Killed after a checkpoint, the same query restarted with the
/// schema inferred restores them and writes the exact answer once.
#[test]
fn text_state_kept_as_utf8_restores_into_views() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let station = |i: u64| format!("station-with-a-long-name-{:03}", i % 300);
    let note = |i: u64| format!("note {:07} of a station, past twelve bytes", (i * 7_919) % 1_000_003);
    // a row every millisecond: each station's rows 300 ms apart, one session of 1 s gaps
    let columns = "id BIGINT, ts BIGINT, station VARCHAR, note VARCHAR";
    // (sessions over fewer rows: each flush sorts every row still held; a row per batch, so
    // that each run lasts about 2 s in a debug build, long enough to be killed after its
    // second checkpoint. Each case has a file of its own rows: a WHERE clause would be
    // evaluated in the scan again from the file's start after a restore, and read it whole.)
    for (case, rows, batch, group_by) in [("groups", 600_000u64, 10, "station"), ("sessions", 20_000, 1, "SESSION(ts, INTERVAL '1' SECOND), station")] {
        let job = dir.join(case);
        std::fs::create_dir_all(&job).unwrap();
        let parquet = parquet_of_lines(
            &job,
            columns,
            (0..rows).map(|i| format!("{{\"id\": {i}, \"ts\": {}, \"station\": \"{}\", \"note\": \"{}\"}}", BASE_MS + i, station(i), note(i))),
        );
        let mut groups: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for i in 0..rows {
            let g = groups.entry(station(i)).or_default();
            g.0 += 1;
            g.1 = g.1.clone().max(note(i));
        }
        let want: Vec<String> = groups.iter().map(|(s, (c, m))| format!("{{\"station\":\"{s}\",\"n\":{c},\"last_note\":\"{m}\"}}")).collect();
        assert_eq!(want.len(), 300);
        let select = "SELECT station, COUNT(*) AS n, MAX(note) AS last_note FROM big GROUP BY";
        let sql = |schema: &str| {
            format!(
                "CREATE STREAM s AS {select} {group_by} INTO out WITH ('big.type' = 'file_source', 'big.path' = '{}', 'big.event_time' = 'ts', \
                 {schema}'big.batch.size' = '{batch}', 'use_transactions' = 'true', 'checkpoint.interval' = '100ms', \
                 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
                parquet.display()
            )
        };
        let checkpoints =
            || std::fs::read_dir(job.join("checkpoints/s")).map(|d| d.flatten().filter(|e| e.path().join("_manifest.json").exists()).count()).unwrap_or(0);
        std::fs::write(job.join("job.sql"), sql(&format!("'big.schema' = '{columns}', "))).unwrap();
        let mut first = start(&job, "job.sql", &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while checkpoints() < 2 && Instant::now() < deadline && first.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let ended = first.try_wait().ok().flatten();
        kill9(&mut first);
        assert!(ended.is_none(), "{case}: the first run ended before it could be killed: {ended:?}");
        assert!(checkpoints() >= 2, "{case}: checkpoints taken before the kill:\n{}", std::fs::read_to_string(job.join("job.log")).unwrap_or_default());
        std::fs::write(job.join("job.sql"), sql("")).unwrap();
        let last = crate::common::ferris(&job, &["run", "job.sql", "--no-progress"]);
        assert_eq!(last.status, 0, "{case}: {}", last.stderr);
        assert_went_on(&job, &last.stderr, rows);
        assert_exactly_once(&format!("{case}: text state restored as views"), &job.join("out.jsonl"), &canonical_lines(&want.join("\n")));
    }
}

/// `explain` shows the processing mode, the checkpoint settings, the state checkpointed, and
/// how every source and sink takes part.
#[test]
fn explain_shows_the_processing_mode_and_who_takes_part() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clicks.jsonl");
    clicks_with_sentinel(&input, 100);
    let sql = window_job(&input, ", 'use_transactions' = 'true', 'checkpoint.retain' = '4'")
        .replace("INTO out", "INTO out, shown")
        .replace("'out.type' = 'file_sink'", "'shown.type' = 'stdout', 'out.type' = 'file_sink'");
    std::fs::write(tmp.path().join("job.sql"), sql).unwrap();
    let run = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    for want in [
        "Processing: exactly-once (use_transactions)",
        "checkpoints: every 200ms in checkpoints/w (keeping 4)",
        "state of #0 WindowAggregateExec: window=TUMBLE(10000ms)",
        "source clicks: positions: byte offset (or Parquet rows) per file and split",
        "sink out: two-phase: staged files published when the checkpoint commits",
        "sink shown: at least once by nature",
    ] {
        assert!(run.stdout.contains(want), "'{want}' in:\n{}", run.stdout);
    }
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`32k`) at `path`; `None` where mounting is not allowed.
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status().is_ok_and(|s| s.success());
        ok.then(|| Self(path.to_path_buf()))
    }

    /// Grows it to `size`, keeping what it holds.
    fn grow(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The disk fills while a transactional job writes (a 32 KiB tmpfs): under `FailBatch` the job
/// fails, naming the file and the cause; once there is room again, the restarted job goes on
/// from its last checkpoint — what the failed checkpoint staged is discarded — and the output
/// is exactly the batch answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_job_and_a_restart_gives_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(disk) = Tmpfs::mount(&dir.join("full"), "32k") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
        return;
    };
    let (input, lines, want) = kill_test_input(dir, 40_000).await;
    let sql = window_job(&input, ", 'use_transactions' = 'true', 'failure_strategy' = 'FailBatch'")
        .replace("'out.path' = 'out.jsonl'", "'out.path' = 'full/out.jsonl'");
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    // the input grows while the job runs: checkpoints commit before the disk is full
    let first = lines.len() / 20;
    std::fs::write(&input, lines[..first].concat()).unwrap();
    let writer = append_slowly(input.clone(), lines[first..].to_vec());
    let mut child = start(dir, "job.sql", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the job went on with a full disk: {}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(!status.success(), "a full disk under FailBatch fails the job:\n{log}");
    assert!(log.contains("No space left on device") && log.contains("full/"), "the error names the file and the cause:\n{log}");
    let published = counted(&dir.join("full/out.jsonl"));
    assert!(published.len() < want.len(), "the disk filled before the end: {} of {} rows", published.len(), want.len());
    writer.join().unwrap();
    disk.grow("16m");
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let n = want.len();
    wait_lines(&dir.join("full/out.jsonl"), 60, |l| l >= n);
    std::thread::sleep(Duration::from_millis(700)); // a duplicate would show by now
    interrupt(&mut child, dir);
    assert_exactly_once("after a full disk and a restart", &dir.join("full/out.jsonl"), &want);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "the restart restored a checkpoint:\n{log}");
}

/// Sets or clears the immutable attribute of `path` (nothing can be created in it, not even by
/// root); false where the file system has no such attribute.
fn immutable(path: &Path, on: bool) -> bool {
    Command::new("chattr").arg(if on { "+i" } else { "-i" }).arg(path).status().is_ok_and(|s| s.success())
}

/// The checkpoint store becomes unwritable mid-run (its directory made immutable): the job
/// keeps processing, reports the failing checkpoints, and publishes nothing past the last good
/// one; once the store is back, checkpoints complete again and the output is exactly the batch
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_checkpoint_store_holds_commits_back_and_the_job_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, want) = kill_test_input(dir, 40_000).await;
    std::fs::write(dir.join("job.sql"), window_job(&input, ", 'use_transactions' = 'true'")).unwrap();
    let first = lines.len() / 20;
    std::fs::write(&input, lines[..first].concat()).unwrap();
    let out = dir.join("out.jsonl");
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    assert!(wait_lines(&out, 30, |n| n > 0), "windows published before the store goes away");
    let store = dir.join("checkpoints/w");
    if !immutable(&store, true) {
        crate::checkpoints::kill9(&mut child);
        eprintln!("SKIPPED: chattr +i does not work here");
        return;
    }
    // the rest of the input arrives while no checkpoint can be written
    let mut rest = lines[first..].concat();
    rest.push_str(&sentinel());
    std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(rest.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let held = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    std::thread::sleep(Duration::from_millis(1500));
    let still = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    let running = child.try_wait().unwrap().is_none();
    immutable(&store, false);
    assert!(running, "the job goes on without its store: {}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
    assert_eq!(held, still, "nothing is published while no checkpoint completes");
    assert!(still < want.len(), "the windows of the rest wait for a checkpoint: {still} of {}", want.len());
    let n = want.len();
    assert!(wait_lines(&out, 60, |l| l >= n), "the rest is published once the store is back");
    std::thread::sleep(Duration::from_millis(700)); // a duplicate would show by now
    interrupt(&mut child, dir);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("failed") && log.contains("nothing after checkpoint"), "the failing checkpoints are reported:\n{log}");
    assert_exactly_once("after the store came back", &out, &want);
}

/// A file sink on a disk that fills up (a 64 KiB tmpfs), under each failure strategy: a failed
/// batch never leaves part of its rows in the file, and the rows are exactly what the strategy
/// promises — `LogAndContinue`: the job goes on, every row either written once or counted as
/// dropped; `FailBatch`: the job fails naming the file and the cause; `RetryWithBackoff`: once
/// there is room again (the disk grows while it retries) every row, once.
#[test]
fn a_full_disk_under_each_failure_strategy() {
    let total = 3000usize;
    let rows: String = (0..total).map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40))).collect();
    for strategy in ["LogAndContinue", "FailBatch", "RetryWithBackoff"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let Some(disk) = Tmpfs::mount(&dir.join("full"), "64k") else {
            eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
            return;
        };
        std::fs::write(dir.join("rows.jsonl"), &rows).unwrap();
        let sql = format!(
            "CREATE STREAM copy AS SELECT id, pad FROM rows INTO out WITH ('rows.type' = 'file_source', 'rows.path' = 'rows.jsonl', 'rows.batch.size' = '100', \
             'out.type' = 'file_sink', 'out.path' = 'full/out.jsonl', 'failure_strategy' = '{strategy}', 'max_retries' = '30', 'retry_backoff' = '100ms');"
        );
        std::fs::write(dir.join("job.sql"), sql).unwrap();
        let grow = (strategy == "RetryWithBackoff").then(|| {
            let full = dir.join("full");
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                let status = Command::new("mount").args(["-o", "remount,size=16m"]).arg(&full).status().unwrap();
                assert!(status.success());
            })
        });
        let run = ferris(dir, &["run", "job.sql", "--report-json", "--no-progress"]);
        if let Some(g) = grow {
            g.join().unwrap();
        }
        // every line whole: canonical_lines panics on a torn one
        let text = std::fs::read_to_string(dir.join("full/out.jsonl")).unwrap_or_default();
        let lines = canonical_lines(&text);
        let ids: Vec<i64> = lines.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap()).collect();
        let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "{strategy}: a row written twice");
        match strategy {
            "LogAndContinue" => {
                assert_eq!(run.status, 0, "{strategy}: the job goes on: {}", run.stderr);
                let report: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap_or("{}")).unwrap();
                let dropped = report["sinks"][0]["dropped"].as_u64().unwrap();
                assert!(dropped > 0 && ids.len() < total, "{strategy}: the disk filled: {} written, {dropped} dropped", ids.len());
                assert_eq!(ids.len() as u64 + dropped, total as u64, "{strategy}: every row written or counted as dropped");
            }
            "FailBatch" => {
                assert_eq!(run.status, 1, "{strategy}: the job fails: {}", run.stderr);
                assert!(
                    run.stderr.contains("No space left on device") && run.stderr.contains("full/out.jsonl"),
                    "{strategy}: names the file and the cause: {}",
                    run.stderr
                );
                assert!(ids.len() < total);
            }
            _ => {
                assert_eq!(run.status, 0, "{strategy}: the retries succeed once there is room: {}", run.stderr);
                assert_eq!(distinct, (0..total as i64).collect(), "{strategy}: every row, once");
            }
        }
        drop(disk);
    }
}

/// A second process of a transactional job, while the first runs, is refused: it would share
/// the first one's sink transactions and staged files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_of_a_transactional_job_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, _, _) = kill_test_input(dir, 1000).await;
    std::fs::write(dir.join("job.sql"), window_job(&input, ", 'use_transactions' = 'true'")).unwrap();
    let before = sinks_created(dir);
    let mut first = start(dir, "job.sql", &[]);
    settle(dir, before);
    let second = ferris(dir, &["run", "job.sql", "--no-progress"]);
    let alive = first.try_wait().unwrap().is_none();
    interrupt(&mut first, dir);
    assert!(alive, "the first process goes on");
    assert_eq!(second.status, 1, "the second process is refused: {}", second.stderr);
    assert!(second.stderr.contains("use_transactions: another process of this job holds checkpoints/w"), "the refusal says why: {}", second.stderr);
}

/// A file large enough to be read in four parallel splits (split points fall inside lines),
/// under `use_transactions`, killed three times at random moments, then run to the end: every
/// selected row exactly once, and no restore reads a line from its middle. (A bounded file job
/// checkpoints little while it reads: most kills here land before a checkpoint or after the
/// last, so this guards the end-to-end path more than mid-split positions, which
/// `sources::malformed_lines_in_parallel_splits_are_named_by_their_file_line` pins down.)
#[test]
fn killed_while_reading_a_split_file_a_transactional_job_writes_each_row_once() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let n = 1_200_000u64;
    for i in 0..n {
        writeln!(f, "{{\"id\": {i}, \"station\": \"station-with-a-long-name-{:03}\"}}", i % 400).unwrap();
    }
    drop(f);
    assert!(std::fs::metadata(&path).unwrap().len() > 32 << 20);
    let sql = format!(
        "CREATE STREAM s AS SELECT id FROM big WHERE id % 1000 = 7 INTO out WITH ('big.type' = 'file_source', 'big.path' = '{}', \
         'big.schema' = 'id BIGINT, station VARCHAR', 'big.batch.size' = '100', 'parallelism' = '4', \
         'use_transactions' = 'true', 'checkpoint.interval' = '100ms', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        path.display()
    );
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let mut rng = Lcg::new(chaos_seed());
    for _ in 0..3 {
        let mut child = start(dir, "job.sql", &[]);
        std::thread::sleep(Duration::from_millis(400 + rng.below(1000)));
        kill9(&mut child);
    }
    let run = crate::common::ferris(dir, &["run", "job.sql", "--no-progress"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default() + &run.stderr;
    assert!(!log.contains("malformed"), "a restore read a line from its middle: {log}");
    let want: Vec<String> = (0..n).filter(|i| i % 1000 == 7).map(|i| format!("{{\"id\":{i}}}")).collect();
    assert_exactly_once("rows of a split file over three kills", &dir.join("out.jsonl"), &canonical_lines(&want.join("\n")));
}

/// A Parquet file read under `use_transactions` with a `WHERE` clause, killed three times at
/// random moments once a checkpoint is complete: every row it keeps is written once, its text
/// copied out of the views the file is read as, and the runs after a kill go on from a
/// checkpoint taken while the file was read (the last run reads fewer rows than the file
/// has, where the job lasts long enough to be killed before its end). Once with a clause that drops most rows (evaluated in the read: positions count the
/// rows kept) and once with one that keeps most (left to the filter above the read:
/// positions count every row), and that one again read by four partitions: the file's two row
/// groups are read in four row ranges, whose positions are checkpointed per range. Then a
/// `GROUP BY` over the same file, killed as well: its groups' state is restored, and it writes
/// DataFusion's answer once.
#[test]
fn killed_while_reading_parquet_with_a_where_clause_a_transactional_job_writes_each_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 1_200_000u64;
    let station = |i: u64| format!("station-with-a-long-name-{:03}", i % 400);
    parquet_of_lines(dir, "id BIGINT, station VARCHAR", (0..n).map(|i| format!("{{\"id\": {i}, \"station\": \"{}\"}}", station(i))));
    // (the clause, the rows it keeps, the job's parallelism when not the machine's)
    type Keeps = dyn Fn(u64) -> bool;
    let cases: [(&str, &Keeps, &str); 3] =
        [("id % 1000 = 7", &|i| i % 1000 == 7, ""), ("id % 10 <> 3", &|i| i % 10 != 3, ""), ("id % 10 <> 3", &|i| i % 10 != 3, "'parallelism' = '4', ")];
    let mut rng = Lcg::new(chaos_seed());
    for (k, (clause, keep, parallelism)) in cases.into_iter().enumerate() {
        let job = dir.join(format!("job{k}"));
        std::fs::create_dir_all(&job).unwrap();
        let sql = format!(
            "CREATE STREAM s AS SELECT id, station FROM big WHERE {clause} INTO out WITH ('big.type' = 'file_source', 'big.path' = '{}', \
             'big.batch.size' = '10', {parallelism}'use_transactions' = 'true', 'checkpoint.interval' = '100ms', \
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
            dir.join("big.parquet").display()
        );
        std::fs::write(job.join("job.sql"), &sql).unwrap();
        if !parallelism.is_empty() {
            // (the file's row groups, fewer than the partitions, read in a row range each)
            let explain = crate::common::ferris(&job, &["explain", "job.sql"]);
            assert_eq!(explain.status, 0, "{}", explain.stderr);
            assert!(explain.stdout.contains("partition_sizes=4"), "{}", explain.stdout);
        }
        let last = kill_after_checkpoints(&job, "s", 3, &mut rng);
        let want: Vec<String> = (0..n).filter(|&i| keep(i)).map(|i| format!("{{\"id\":{i},\"station\":\"{}\"}}", station(i))).collect();
        assert_exactly_once(&format!("Parquet rows WHERE {clause} over three kills"), &job.join("out.jsonl"), &canonical_lines(&want.join("\n")));
        // (the clause in the read leaves 1 200 rows: that job is over in a fraction of a second)
        if k >= 1 {
            assert_went_on(&job, &last, n);
        }
    }
    // a GROUP BY over the bounded file: our aggregate, its groups checkpointed as it reads
    let job = dir.join("grouped");
    std::fs::create_dir_all(&job).unwrap();
    let sql = format!(
        "CREATE STREAM s AS SELECT station, COUNT(*) AS n, SUM(id) AS total, MAX(id) AS top FROM big WHERE id % 7 <> 0 GROUP BY station INTO out \
         WITH ('big.type' = 'file_source', 'big.path' = '{}', 'big.batch.size' = '10', 'use_transactions' = 'true', \
         'checkpoint.interval' = '100ms', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        dir.join("big.parquet").display()
    );
    std::fs::write(job.join("job.sql"), &sql).unwrap();
    let last = kill_after_checkpoints(&job, "s", 3, &mut rng);
    let mut groups: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for i in (0..n).filter(|i| i % 7 != 0) {
        let g = groups.entry(station(i)).or_default();
        *g = (g.0 + 1, g.1 + i, g.2.max(i));
    }
    let want: Vec<String> = groups.iter().map(|(s, (c, t, m))| format!("{{\"station\":\"{s}\",\"n\":{c},\"total\":{t},\"top\":{m}}}")).collect();
    assert_eq!(want.len(), 400);
    assert_exactly_once("groups of the Parquet file over three kills", &job.join("out.jsonl"), &canonical_lines(&want.join("\n")));
    assert_went_on(&job, &last, n);
}

/// Runs `dir/job.sql` (job `name`) `kills` times, each killed with SIGKILL at a random moment
/// (0–300 ms) after a checkpoint newer than the run's start is complete, then once to its end;
/// returns that last run's log.
fn kill_after_checkpoints(dir: &Path, name: &str, kills: usize, rng: &mut Lcg) -> String {
    let complete = |dir: &Path| -> usize {
        std::fs::read_dir(dir.join("checkpoints").join(name))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("_manifest.json").exists())
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    for _ in 0..kills {
        let before = complete(dir);
        let mut child = start(dir, "job.sql", &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while complete(dir) == before && Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        kill9(&mut child);
    }
    let run = crate::common::ferris(dir, &["run", "job.sql", "--no-progress"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    run.stderr
}

/// Some run after a kill restored a checkpoint taken while the file was read, and the last
/// run read fewer rows than the file's `n` (it went on from where a checkpoint had got to).
fn assert_went_on(dir: &Path, last: &str, n: u64) {
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default() + last;
    assert!(log.contains("restoring checkpoint"), "no run restored a checkpoint:\n{log}");
    let read = last.split("read [big ").nth(1).and_then(|r| r.split(' ').next()).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    assert!(read < n, "the last run read the whole file again ({read} rows):\n{log}");
}

/// A top N per key on a stream (its changelog of UPSERTs and DELETEs) under
/// `use_transactions`, killed five times while the input grows: the changelog, applied as a
/// sink keyed by user and rank applies it, is consistent (no DELETE of a row not written, no
/// UPSERT over a row not deleted: nothing twice, nothing lost) and ends at DataFusion's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_top_n_job_gives_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let top =
        "SELECT user_id, amount, ts, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC, ts) AS rn FROM clicks) WHERE rn <= 3";
    let (input, lines, _) = kill_test_input(dir, 20_000).await;
    let want = crate::nexmark::comparable(
        &batch_answer(&input, &format!("SELECT * FROM ({top}) WHERE user_id <> 'sentinel'")).await,
        Some(&["user_id", "rn", "amount"]),
    );
    assert!(want.len() > 10, "{want:?}");
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM t AS {top} INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
             'clicks.watch' = 'true', 'clicks.batch.size' = '100', 'checkpoint.interval' = '200ms', 'use_transactions' = 'true', \
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
            input.display()
        ),
    )
    .unwrap();
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let state = |out: &Path| {
        crate::nexmark::apply_changelog(&std::fs::read_to_string(out).unwrap_or_default(), &["user_id", "rn"])
            .map(|rows| crate::nexmark::comparable(&rows, Some(&["user_id", "rn", "amount"])))
            .map(|rows| rows.into_iter().filter(|r| !r.contains("sentinel")).collect::<Vec<_>>())
    };
    crash_and_finish(dir, 5, seed, &input, &lines, |out| state(out).is_ok_and(|rows| rows == want));
    let got = state(&dir.join("out.jsonl")).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_same_rows(&format!("top 3 per user after 5 kills (seed {seed})"), &got, &want);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint:\n{log}");
}

/// Nexmark q7's shape over the clicks: each 10-second window's highest amount, joined back to
/// the clicks that carried it. The query reads `clicks` twice (one read, two consumers).
const SELF_JOIN_SQL: &str = "SELECT c.user_id, c.amount, c.ts, m.wend FROM clicks c \
     JOIN (SELECT MAX(amount) AS maxamount, window_end AS wend FROM clicks GROUP BY TUMBLE(ts_iso, INTERVAL '10' SECOND)) m \
     ON c.amount = m.maxamount AND c.ts_iso >= m.wend - INTERVAL '10' SECOND AND c.ts_iso < m.wend";
const SELF_JOIN_BATCH: &str = "SELECT c.user_id, c.amount, c.ts, m.wend FROM clicks c \
     JOIN (SELECT MAX(amount) AS maxamount, to_timestamp_millis(ts / 10000 * 10000 + 10000) AS wend FROM clicks WHERE user_id <> 'sentinel' GROUP BY 2) m \
     ON c.amount = m.maxamount AND to_timestamp_millis(c.ts / 10000 * 10000 + 10000) = m.wend WHERE c.user_id <> 'sentinel'";

/// Two aggregates of one stream, one per user and one over all users, in one output.
const TWO_AGGREGATES_SQL: &str =
    "SELECT window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id \
     UNION ALL SELECT window_start, 'all' AS user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)";
const TWO_AGGREGATES_BATCH: &str = "SELECT to_timestamp_millis(ts / 10000 * 10000) AS window_start, user_id, COUNT(*) AS n, SUM(amount) AS total \
     FROM clicks WHERE user_id <> 'sentinel' GROUP BY 1, 2 \
     UNION ALL SELECT to_timestamp_millis(ts / 10000 * 10000), 'all', COUNT(*), SUM(amount) FROM clicks WHERE user_id <> 'sentinel' GROUP BY 1";

/// Runs `select` (reading the tailed clicks twice, event time `time`) under `use_transactions`,
/// killed five times at random moments while the file grows: the output must be `batch`'s
/// answer, every row once.
async fn kill_a_transactional_job(select: &str, time: &str, batch: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, _) = kill_test_input(dir, 20_000).await;
    let want = batch_answer(&input, batch).await;
    assert!(want.len() > 50, "{want:?}");
    let distinct: std::collections::BTreeSet<&String> = want.iter().collect();
    assert_eq!(distinct.len(), want.len(), "the answer's rows are distinct, so a row written twice shows");
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM twice AS {select} INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
             'clicks.event_time' = '{time}', 'clicks.watch' = 'true', 'clicks.batch.size' = '10', 'checkpoint.interval' = '200ms', \
             'use_transactions' = 'true', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
            input.display()
        ),
    )
    .unwrap();
    killed_five_times_exactly_once(dir, &input, &lines, &want);
}

/// A stream joined with an aggregate of itself (Nexmark q7's shape: one read of the source,
/// a barrier put into it reaches both scans after the same rows), killed five times under
/// `use_transactions`: DataFusion's batch answer, every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_self_join_gives_the_batch_answer() {
    kill_a_transactional_job(SELF_JOIN_SQL, "ts_iso", SELF_JOIN_BATCH).await;
}

/// Nexmark q5's shape over the clicks: the users with the most clicks in each sliding window
/// (a `HOP`, the maximum per window over its windows, and a semi join on the window).
const WINDOWS_OF_WINDOWS_SQL: &str = "WITH per_user AS (SELECT user_id, COUNT(*) AS num, window_start, window_end FROM clicks \
     GROUP BY HOP(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND), user_id) \
     SELECT a.user_id, a.num, a.window_start FROM per_user a \
     JOIN (SELECT MAX(num) AS maxn, window_start, window_end FROM per_user GROUP BY window_start, window_end) m \
     ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn";
/// The same in batch: each click counted in the five windows of 10 s, every 2 s, that hold it.
const WINDOWS_OF_WINDOWS_BATCH: &str = "WITH per_user AS (SELECT user_id, COUNT(*) AS num, ts / 2000 * 2000 - h.k * 2000 AS ws \
     FROM clicks CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS h(k) WHERE user_id <> 'sentinel' GROUP BY user_id, 3), \
     m AS (SELECT ws, MAX(num) AS maxn FROM per_user GROUP BY ws) \
     SELECT a.user_id, a.num, to_timestamp_millis(a.ws) AS window_start FROM per_user a JOIN m ON a.ws = m.ws AND a.num >= m.maxn";

/// Windows of windows (Nexmark q5's shape), both aggregates' state and the semi join's in
/// checkpoints, killed five times under `use_transactions`: DataFusion's batch answer, every
/// row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_windows_of_windows_give_the_batch_answer() {
    kill_a_transactional_job(WINDOWS_OF_WINDOWS_SQL, "ts", WINDOWS_OF_WINDOWS_BATCH).await;
}

/// A window over a time column of a window aggregate that is no window bound (each user's
/// first click of the window, an hour earlier): the aggregate below hands it no watermark
/// (its own would be an hour ahead of that column, and every row late), so its windows close
/// as its own rows move on — every one but the last, which no later row closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_over_another_time_column_of_a_window_aggregate_closes_by_its_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, _) = kill_test_input(dir, 20_000).await;
    let early = "SELECT user_id, MIN(ts) - 3600000 AS early FROM clicks";
    let want = batch_answer(
        &input,
        &format!(
            "WITH e AS ({early} WHERE user_id <> 'sentinel' GROUP BY ts / 10000, user_id) \
             SELECT to_timestamp_millis(early / 10000 * 10000) AS window_start, COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM e \
             WHERE early / 10000 * 10000 + 10000 <= (SELECT MAX(early) FROM e) GROUP BY 1"
        ),
    )
    .await;
    assert!(want.len() > 40, "{want:?}");
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM e AS SELECT window_start, COUNT(*) AS n, COUNT(DISTINCT user_id) AS users \
             FROM ({early} GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id) GROUP BY TUMBLE(early, INTERVAL '10' SECOND) \
             INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
             'clicks.event_time' = 'ts', 'clicks.watch' = 'true', 'clicks.batch.size' = '100', 'checkpoint.interval' = '200ms', \
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
            input.display()
        ),
    )
    .unwrap();
    let n = want.len();
    crash_and_finish(dir, 0, 0, &input, &lines, |out| std::fs::read_to_string(out).map(|t| t.lines().count() >= n).unwrap_or(false));
    assert_exactly_once("windows over the first click of each user's window", &dir.join("out.jsonl"), &want);
}

/// Window functions over a stream (`LAG`, `ROW_NUMBER`, a running `SUM`, a moving `AVG`, a
/// running `AVG` and `COUNT(DISTINCT)`, which carry the aggregate's state), their per-key state
/// in checkpoints, killed five times under `use_transactions`: DataFusion's batch answer,
/// every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_window_functions_give_the_batch_answer() {
    const W: &str = "PARTITION BY user_id ORDER BY ts";
    let select = format!(
        "SELECT user_id, ts, amount, LAG(amount) OVER ({W}) AS prev, ROW_NUMBER() OVER ({W}) AS n, SUM(amount) OVER ({W}) AS running, \
         AVG(amount) OVER ({W} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5, AVG(amount) OVER ({W}) AS running_avg, \
         COUNT(DISTINCT amount) OVER ({W}) AS amounts FROM clicks"
    );
    let batch = format!("{select} WHERE user_id <> 'sentinel'");
    kill_a_transactional_job(&select, "ts", &batch).await;
}

/// Window functions that read later rows (`LEAD`, a frame ending two rows ahead), killed five
/// times under `use_transactions`: each row is written once two later rows of its user have
/// come, its values final, each once, in event-time order — DataFusion's batch answer up to the
/// first row held back (every user's last two rows wait for rows that never come, and the rows
/// after the first of them wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_window_functions_reading_later_rows_give_the_batch_answer() {
    const W: &str = "PARTITION BY user_id ORDER BY ts";
    let columns = format!(
        "user_id, ts, amount, LEAD(amount) OVER ({W}) AS next, LEAD(ts, 2) OVER ({W}) AS after_next, \
         SUM(amount) OVER ({W} ROWS BETWEEN 1 PRECEDING AND 2 FOLLOWING) AS around, ROW_NUMBER() OVER ({W}) AS n"
    );
    let select = format!("SELECT {columns} FROM clicks");
    // (the clicks' times are distinct: no peers to cut between)
    let batch = format!(
        "WITH w AS (SELECT {columns}, COUNT(*) OVER (PARTITION BY user_id) AS cnt FROM clicks WHERE user_id <> 'sentinel'), \
         held AS (SELECT MIN(ts) AS first FROM w WHERE n >= cnt - 1) \
         SELECT user_id, ts, amount, next, after_next, around, n FROM w, held WHERE n <= cnt - 2 AND ts < held.first"
    );
    kill_a_transactional_job(&select, "ts", &batch).await;
}

/// A `TUMBLE` aggregate over `LEAD`'s output, killed five times under `use_transactions`: the
/// rows `LEAD` held back come out in event-time order, so the window above counts none of them
/// late; it closes each window the watermark handed on (the first row held back) has passed,
/// with DataFusion's batch answer, each window once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_window_over_lead_gives_the_batch_answer() {
    let select = "SELECT window_start, COUNT(*) AS n, SUM(next) AS s \
                  FROM (SELECT user_id, ts, LEAD(amount) OVER (PARTITION BY user_id ORDER BY ts) AS next FROM clicks) \
                  GROUP BY TUMBLE(ts, INTERVAL '5' SECOND)";
    // every user's last row waits for a next one: the windows ending by the first of them
    let batch = "WITH w AS (SELECT user_id, ts, LEAD(amount) OVER (PARTITION BY user_id ORDER BY ts) AS next, \
                 ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS n, COUNT(*) OVER (PARTITION BY user_id) AS cnt \
                 FROM clicks WHERE user_id <> 'sentinel'), held AS (SELECT MIN(ts) AS first FROM w WHERE n = cnt) \
                 SELECT to_timestamp_millis(ts / 5000 * 5000) AS window_start, COUNT(*) AS n, SUM(next) AS s \
                 FROM w, held WHERE ts / 5000 * 5000 + 5000 <= held.first GROUP BY 1";
    kill_a_transactional_job(select, "ts", batch).await;
}

/// Two window aggregates of one stream in one output (`UNION ALL`), killed five times under
/// `use_transactions`: DataFusion's batch answer, every window once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_two_aggregates_of_one_stream_give_the_batch_answer() {
    kill_a_transactional_job(TWO_AGGREGATES_SQL, "ts", TWO_AGGREGATES_BATCH).await;
}

/// `ferris-sql run file` in `dir`, which must end within a minute: a job still running then is
/// killed, and the test fails with where its threads were.
fn run_within_a_minute(dir: &Path, file: &str) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferris-sql"));
    command.args(["run", file, "--no-progress"]).current_dir(dir).env("RUST_LOG", "warn,ferris_engine=info");
    output_limited(&mut command, Duration::from_secs(60))
}

/// A barrier whose timer fires while the runner waits for room in a slow sink, after every
/// source partition has sent its last rows and ended, is delivered by no partition. It was
/// never aligned, so neither it nor the job's last checkpoint completed, and the bounded
/// transactional job never exited (seen once in CI in
/// `killed_while_reading_parquet_with_a_where_clause_…`'s last run). Six batches into a sink
/// that takes 120 ms each, checkpoints every 100 ms: the build before the fix hung on every
/// run; the job must end, every row written, with its last checkpoint complete.
#[test]
fn a_barrier_started_after_the_input_ended_does_not_hold_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM s AS SELECT order_id, status FROM orders INTO out WITH ('orders.type' = 'file_source', 'orders.path' = '{}', \
             'orders.batch.size' = '40', 'use_transactions' = 'true', 'checkpoint.interval' = '100ms', 'out.type' = 'blackhole', 'out.delay' = '120ms');",
            data("orders.jsonl")
        ),
    )
    .unwrap();
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(dir.join("checkpoints"));
        let out = run_within_a_minute(dir, "job.sql");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}:\n{stderr}");
        assert!(stderr.contains("wrote [out 240 rows]"), "round {round}:\n{stderr}");
        assert!(stderr.contains("checkpoints (mean"), "round {round}: no checkpoint completed:\n{stderr}");
    }
}

/// A `LIMIT` over a tailed file: once the limit is met the plan reads no more of the file and
/// drops it, and that partition counts as finished where it stopped. Before, the checkpoints
/// waited for it to pass their barriers: the job never ended, and under `use_transactions`
/// never published its rows. Now both jobs write the file's first rows and end. Run again, a
/// tailed file goes on from where the first run stopped: the job ends again, five more rows
/// written and none of the first run's twice.
#[test]
fn a_limit_over_a_tailed_file_ends_the_job_with_its_rows_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("ids.jsonl");
    std::fs::write(&input, (0..40).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>()).unwrap();
    let first: Vec<String> = (0..5).map(|i| format!("{{\"id\":{i}}}")).collect();
    for (job, extra) in [("plain", ""), ("exactly", "'use_transactions' = 'true', ")] {
        let sql = format!(
            "CREATE STREAM {job} AS SELECT id FROM src LIMIT 5 INTO out WITH ('src.type' = 'file_source', 'src.path' = '{}', 'src.watch' = 'true', \
             'src.batch.size' = '2', {extra}'checkpoint.interval' = '50ms', 'out.type' = 'file_sink', 'out.path' = '{job}.jsonl');",
            input.display()
        );
        std::fs::write(dir.join(format!("{job}.sql")), sql).unwrap();
        for run in 0..2 {
            let out = run_within_a_minute(dir, &format!("{job}.sql"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{job}, run {run}:\n{stderr}");
            assert!(stderr.contains("produced 5 rows") && stderr.contains("checkpoints (mean"), "{job}, run {run}:\n{stderr}");
            let lines: Vec<String> = std::fs::read_to_string(dir.join(format!("{job}.jsonl"))).unwrap_or_default().lines().map(str::to_string).collect();
            if run == 0 {
                assert_eq!(lines, first, "{job}, run {run}:\n{stderr}");
            } else {
                assert!(stderr.contains("restoring checkpoint"), "{job}, run {run}:\n{stderr}");
                assert_eq!(lines.len(), 10, "{job}, run {run}: {lines:?}");
                assert_eq!(lines[..5], first[..], "{job}, run {run}");
                assert_eq!(lines.iter().collect::<std::collections::BTreeSet<_>>().len(), 10, "no row twice: {lines:?}");
            }
        }
    }
}
