//! Windowed aggregates: generated click streams with several keys and rows out of order (within
//! the watermark delay), read from files by `ferris-sql run`, must give exactly the rows
//! DataFusion computes in batch with the equivalent batch SQL (date_bin / window arithmetic for
//! TUMBLE and HOP, LAG + running SUM for SESSION).

use std::path::Path;
use std::process::{Command, Stdio};

use datafusion::prelude::{JsonReadOptions, SessionContext};

use crate::common::*;

/// A small deterministic generator (no dependency, same stream on every machine).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `n` clicks: `ts` (epoch ms) roughly increasing by `step` ms, each shifted back by up
/// to `disorder` ms; `user_id` among `keys` users; `amount`; `ts_iso` the same time as text.
pub fn write_clicks(path: &Path, seed: u64, n: usize, step: u64, disorder: u64, keys: u64) {
    let mut rng = Lcg::new(seed);
    let base: u64 = 1_700_000_000_000;
    let mut out = String::new();
    for i in 0..n as u64 {
        let ts = base + i * step + rng.below(step.max(1)) - if disorder > 0 { rng.below(disorder + 1) } else { 0 };
        let user = rng.below(keys);
        let amount = rng.below(100) + 1;
        let secs = (ts / 1000) as i64;
        let iso = chrono_like_iso(secs, ts % 1000);
        out.push_str(&format!("{{\"ts\":{ts},\"ts_iso\":\"{iso}\",\"user_id\":\"u{user}\",\"amount\":{amount}}}\n"));
    }
    std::fs::write(path, out).unwrap();
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` without a date library (civil-from-days, Howard Hinnant).
fn chrono_like_iso(secs: i64, ms: u64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(crate) async fn clicks_context(path: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    let opts = JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("clicks", path.to_str().unwrap(), opts).await.unwrap();
    ctx
}

pub(crate) fn source(path: &Path, extra: &str) -> String {
    format!("'clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', 'clicks.event_time' = 'ts'{extra}", path.display())
}

/// (name, streaming query, equivalent batch query)
pub(crate) const CASES: &[(&str, &str, &str)] = &[
    (
        "tumble",
        "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo, MAX(amount) AS hi, AVG(amount) AS mean FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id",
        "SELECT to_timestamp_millis(ts / 10000 * 10000) AS window_start, to_timestamp_millis(ts / 10000 * 10000 + 10000) AS window_end, user_id, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo, MAX(amount) AS hi, AVG(amount) AS mean FROM clicks GROUP BY 1, 2, 3",
    ),
    (
        "tumble_no_keys_having",
        "SELECT window_start, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '7' SECOND) HAVING COUNT(*) > 3",
        "SELECT to_timestamp_millis(ts / 7000 * 7000) AS window_start, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY 1 HAVING COUNT(*) > 3",
    ),
    (
        "tumble_distinct_filter_iso",
        "SELECT window_end, user_id, COUNT(DISTINCT amount % 10) AS digits, SUM(amount) FILTER (WHERE amount > 50) AS big FROM clicks GROUP BY TUMBLE(ts_iso, INTERVAL '1' MINUTE), user_id",
        "SELECT to_timestamp_millis(ts / 60000 * 60000 + 60000) AS window_end, user_id, COUNT(DISTINCT amount % 10) AS digits, SUM(amount) FILTER (WHERE amount > 50) AS big FROM clicks GROUP BY 1, 2",
    ),
    (
        "hop_aligned",
        "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND), user_id",
        "SELECT to_timestamp_millis(ts / 5000 * 5000 - k.i * 5000) AS window_start, to_timestamp_millis(ts / 5000 * 5000 - k.i * 5000 + 15000) AS window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks CROSS JOIN (VALUES (0), (1), (2)) AS k(i) GROUP BY 1, 2, 3",
    ),
    (
        "hop_uneven_panes",
        "SELECT window_start, user_id, COUNT(*) AS n, MAX(amount) AS hi FROM clicks GROUP BY HOP(ts, INTERVAL '4' SECOND, INTERVAL '10' SECOND), user_id",
        "SELECT to_timestamp_millis(ts / 4000 * 4000 - k.i * 4000) AS window_start, user_id, COUNT(*) AS n, MAX(amount) AS hi FROM clicks CROSS JOIN (VALUES (0), (1), (2)) AS k(i) WHERE ts < ts / 4000 * 4000 - k.i * 4000 + 10000 GROUP BY 1, 2",
    ),
    (
        "session",
        "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY SESSION(ts, INTERVAL '3' SECOND), user_id",
        "WITH o AS (SELECT user_id, ts, amount, CASE WHEN ts - LAG(ts) OVER (PARTITION BY user_id ORDER BY ts) < 3000 THEN 0 ELSE 1 END AS brk FROM clicks), \
         s AS (SELECT *, SUM(brk) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM o) \
         SELECT to_timestamp_millis(MIN(ts)) AS window_start, to_timestamp_millis(MAX(ts) + 3000) AS window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM s GROUP BY user_id, sid",
    ),
    (
        "window_clause_tumbling",
        "SELECT window_start, user_id, COUNT(*) AS n FROM clicks GROUP BY user_id WINDOW TUMBLING(INTERVAL '10' SECOND)",
        "SELECT to_timestamp_millis(ts / 10000 * 10000) AS window_start, user_id, COUNT(*) AS n FROM clicks GROUP BY 1, 2",
    ),
    (
        "window_clause_sliding",
        "SELECT window_start, window_end, COUNT(*) AS n FROM clicks GROUP BY user_id WINDOW SLIDING(INTERVAL '15' SECOND, INTERVAL '5' SECOND)",
        "SELECT to_timestamp_millis(ts / 5000 * 5000 - k.i * 5000) AS window_start, to_timestamp_millis(ts / 5000 * 5000 - k.i * 5000 + 15000) AS window_end, COUNT(*) AS n FROM clicks CROSS JOIN (VALUES (0), (1), (2)) AS k(i) GROUP BY 1, 2, user_id",
    ),
];

async fn run_cases(tmp: &Path, data: &Path, extra: &str) {
    run_cases_from(tmp, data, &source(data, extra)).await
}

/// [`CASES`] reading the clicks as `sources` declares them, against the batch answer over
/// `data` (the clicks as JSON lines).
async fn run_cases_from(tmp: &Path, data: &Path, sources: &str) {
    let mut sql = String::new();
    for (name, query, _) in CASES {
        sql.push_str(&format!(
            "CREATE STREAM {name} AS {query}\nINTO {name}_out\nWITH ({sources}, '{name}_out.type' = 'file_sink', '{name}_out.path' = '{}/{name}.jsonl', 'batch.size' = '53');\n\n",
            tmp.display()
        ));
    }
    let run = run_sql(tmp, &sql);
    assert_ok(&run);
    assert!(!run.stderr.contains("late rows dropped"), "no row is later than the delay: {}", run.stderr);
    let ctx = clicks_context(data).await;
    for (name, _, batch) in CASES {
        let got = file_rows(&tmp.join(format!("{name}.jsonl")));
        let want = batch_rows(&ctx, batch).await;
        assert!(want.len() > 10, "{name}: the batch answer has {} rows, too few to test", want.len());
        assert_same_rows(name, &got, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_with_a_watermark_delay_equal_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    // 3000 rows, ~700 ms apart, up to 4 s out of order; the delay covers it
    write_clicks(&data, 7, 3000, 700, 4000, 6);
    run_cases(tmp.path(), &data, ", 'clicks.watermark.delay' = '5s'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_without_a_watermark_wait_for_the_end_of_a_bounded_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    // far out of order (up to a minute) and no delay given: exact at the end
    write_clicks(&data, 11, 2000, 400, 60_000, 4);
    run_cases(tmp.path(), &data, "").await;
}

/// The windows over a Parquet copy of the clicks: its text (`user_id`, the windows' key, and
/// `ts_iso`, an event time parsed from text) is read as string views
/// (`connectors/src/text_views.rs`) and each window's rows still equal the batch answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_parquet_text_read_as_views_equal_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    write_clicks(&data, 7, 3000, 700, 4000, 6);
    let parquet = tmp.path().join("clicks.parquet");
    let options = datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true);
    clicks_context(&data).await.table("clicks").await.unwrap().write_parquet(parquet.to_str().unwrap(), options, None).await.unwrap();
    let sources =
        format!("'clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.event_time' = 'ts', 'clicks.watermark.delay' = '5s'", parquet.display());
    run_cases_from(tmp.path(), &data, &sources).await;
    // the key as the window's state keeps it: one row per (window, user), users as text
    let got = file_rows(&tmp.path().join("tumble.jsonl"));
    assert!(got.iter().all(|r| r.contains("\"user_id\":\"u")), "{:?}", got.first());
}

/// Joins with a side of one row per window — Nexmark q7's maximum per window, q5's largest count
/// per window — build their hash table from that side, whole, and probe the other side as read
/// (no repartition); a join whose partitioning something above relies on (an aggregate by the
/// join key, a top N per key, a union interleaving partitions) stays partitioned. Every one
/// gives the batch answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_with_one_row_per_window_build_on_that_side_and_equal_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    // (more than 1 MB of amounts: DataFusion would build a table of the whole file otherwise)
    write_clicks(&data, 23, 60_000, 700, 0, 6);
    // (name, streaming query, batch query, how the join runs)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "max_per_window",
            "SELECT c.ts, c.user_id, c.amount FROM clicks c JOIN (SELECT MAX(amount) AS top, window_end AS wend FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)) m \
             ON c.amount = m.top WHERE to_timestamp_millis(c.ts) >= m.wend - INTERVAL '10' SECOND AND to_timestamp_millis(c.ts) < m.wend",
            "SELECT c.ts, c.user_id, c.amount FROM clicks c JOIN (SELECT MAX(amount) AS top, ts / 10000 AS w FROM clicks GROUP BY 2) m ON c.amount = m.top AND c.ts / 10000 = m.w",
            "mode=CollectLeft",
        ),
        (
            "largest_count_per_window",
            "SELECT a.window_start, a.user_id, a.n FROM (SELECT window_start, window_end, user_id, COUNT(*) AS n FROM clicks GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND), user_id) a \
             JOIN (SELECT window_start, window_end, MAX(n) AS top FROM (SELECT window_start, window_end, user_id, COUNT(*) AS n FROM clicks GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND), user_id) x GROUP BY window_start, window_end) m \
             ON a.window_start = m.window_start AND a.window_end = m.window_end WHERE a.n >= m.top",
            "WITH x AS (SELECT ts / 5000 * 5000 - k.i * 5000 AS ws, user_id, COUNT(*) AS n FROM clicks CROSS JOIN (VALUES (0), (1), (2)) AS k(i) GROUP BY 1, 2), \
             m AS (SELECT ws, MAX(n) AS top FROM x GROUP BY ws) \
             SELECT to_timestamp_millis(x.ws) AS window_start, x.user_id, x.n FROM x JOIN m ON x.ws = m.ws WHERE x.n >= m.top",
            "mode=CollectLeft",
        ),
        (
            "counted_by_the_join_key",
            "SELECT c.amount, COUNT(*) AS n FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)) m ON c.amount = m.top GROUP BY c.amount",
            "SELECT c.amount, COUNT(*) AS n FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY ts / 10000) m ON c.amount = m.top GROUP BY c.amount",
            "mode=Partitioned",
        ),
        (
            "first_three_per_join_key",
            "SELECT ts, amount, rn FROM (SELECT c.ts, c.amount, ROW_NUMBER() OVER (PARTITION BY c.amount ORDER BY c.ts) AS rn \
             FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)) m ON c.amount = m.top) WHERE rn <= 3",
            "SELECT ts, amount, rn FROM (SELECT c.ts, c.amount, ROW_NUMBER() OVER (PARTITION BY c.amount ORDER BY c.ts) AS rn \
             FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY ts / 10000) m ON c.amount = m.top) WHERE rn <= 3",
            "mode=Partitioned",
        ),
        (
            "two_joins_by_one_key_in_a_union",
            "SELECT c.ts, c.amount FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)) m ON c.amount = m.top \
             UNION ALL SELECT c.ts, c.amount FROM clicks c JOIN (SELECT MIN(amount) AS low FROM clicks GROUP BY TUMBLE(ts, INTERVAL '20' SECOND)) m ON c.amount = m.low",
            "SELECT c.ts, c.amount FROM clicks c JOIN (SELECT MAX(amount) AS top FROM clicks GROUP BY ts / 10000) m ON c.amount = m.top \
             UNION ALL SELECT c.ts, c.amount FROM clicks c JOIN (SELECT MIN(amount) AS low FROM clicks GROUP BY ts / 20000) m ON c.amount = m.low",
            // (DataFusion interleaves the two joins' partitions, key by key)
            "mode=Partitioned",
        ),
    ];
    let ctx = clicks_context(&data).await;
    for (name, query, batch, mode) in cases {
        let sql = format!(
            "CREATE STREAM {name} AS {query}\nINTO out\nWITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}/{name}.jsonl', 'parallelism' = '2');\n",
            source(&data, ""),
            tmp.path().display()
        );
        std::fs::write(tmp.path().join(format!("{name}.sql")), &sql).unwrap();
        let plan = ferris(tmp.path(), &["explain", &format!("{name}.sql")]);
        assert_eq!(plan.status, 0, "{}", plan.stderr);
        assert!(plan.stdout.contains(&format!("HashJoinExec: {mode}")), "{name}: {}", plan.stdout);
        let run = run_sql(tmp.path(), &sql);
        assert_ok(&run);
        let got = file_rows(&tmp.path().join(format!("{name}.jsonl")));
        let want = batch_rows(&ctx, batch).await;
        assert!(want.len() > 10, "{name}: the batch answer has {} rows, too few to test", want.len());
        assert_same_rows(name, &got, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_file_keeps_its_own_watermark() {
    // Two files covering the same hour are read in parallel; with one watermark for both, the
    // file that runs ahead would make the other's rows late.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    write_clicks(&dir.join("a.jsonl"), 1, 4000, 900, 2000, 5);
    write_clicks(&dir.join("b.jsonl"), 2, 4000, 900, 2000, 5);
    let query = CASES[0].1;
    let sql = format!(
        "CREATE STREAM t AS {query} INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}/*.jsonl', 'clicks.format' = 'jsonlines', \
         'clicks.event_time' = 'ts', 'clicks.watermark.delay' = '3s', 'batch.size' = '100', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        dir.display(),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(!run.stderr.contains("late rows dropped"), "{}", run.stderr);
    let ctx = SessionContext::new();
    ctx.register_json("clicks", dir.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    assert_same_rows("two files", &file_rows(&tmp.path().join("out.jsonl")), &batch_rows(&ctx, CASES[0].2).await);
}

/// Runs `SELECT window_start, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY
/// {window}` over `rows` (event time, amount), read one at a time with no watermark delay, into
/// `out.jsonl` under `dir` (`extra`: more `WITH` keys); returns the run, checked to succeed.
fn run_late_rows(dir: &Path, rows: &[(i64, i64)], window: &str, extra: &str) -> Run {
    let data = dir.join("late.jsonl");
    std::fs::write(&data, rows.iter().map(|(t, a)| format!("{{\"ts\":{t},\"amount\":{a}}}\n")).collect::<String>()).unwrap();
    let sql = format!(
        "SELECT window_start, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY {window} \
         INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', 'clicks.event_time' = 'ts', \
         'clicks.watermark.delay' = '0s', 'batch.size' = '1', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl'{extra});",
        data.display(),
        dir.display()
    );
    let run = run_sql(dir, &sql);
    assert_ok(&run);
    run
}

#[test]
fn late_rows_are_counted_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    // 10 s windows, no delay: the row at 3 s comes after the watermark reached 25 s
    let rows = [(1_000, 1), (12_000, 2), (25_000, 3), (3_000, 100), (26_000, 4), (41_000, 5)];
    let run = run_late_rows(tmp.path(), &rows, "TUMBLE(ts, INTERVAL '10' SECOND)", "");
    assert!(run.stderr.contains("1 late rows dropped"), "{}", run.stderr);
    let got = file_rows(&tmp.path().join("out.jsonl"));
    let want = canonical_lines(
        "{\"window_start\":\"1970-01-01T00:00:00\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:10\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:40\",\"n\":1,\"total\":5}\n",
    );
    assert_same_rows("late", &got, &want);
}

/// Windows by key spread over several tasks (`window::spread`, bounded input without
/// checkpoints) keep the input's event time: a row is late by the watermark of all the rows
/// before it, not only those of its task's keys. The row of key `a` at 3 s comes when the
/// watermark is at 25 s (from key `c`): late, though `a`'s own rows reached only 1 s. The same
/// rows with one task (`'parallelism' = '1'`) give the same answer, and so do `HOP` (a row
/// late for some of its windows counts in the others) and `SESSION`, with a row without a time
/// and the late rows in a late sink: each the answer worked out by hand.
#[test]
fn windows_spread_by_key_keep_the_inputs_watermark() {
    let rows = [
        ("a", Some(1_000), 1),
        ("b", Some(12_000), 2),
        ("c", Some(25_000), 3),
        ("a", Some(3_000), 100),
        ("b", Some(21_000), 7),
        ("c", None, 9),
        ("a", Some(17_000), 50),
        ("c", Some(26_000), 4),
        ("b", Some(13_000), 60),
        ("a", Some(41_000), 5),
    ];
    let tumble = canonical_lines(
        "{\"window_start\":\"1970-01-01T00:00:00\",\"k\":\"a\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:10\",\"k\":\"b\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"k\":\"b\",\"n\":1,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"k\":\"c\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:40\",\"k\":\"a\",\"n\":1,\"total\":5}\n",
    );
    // HOP: b's row at 21 s comes with the watermark at 25 s, [15 s, 25 s) closed: it counts
    // in [20 s, 30 s) only; late: a at 3 s and 17 s, b at 13 s
    let hop = canonical_lines(
        "{\"window_start\":\"1969-12-31T23:59:55\",\"k\":\"a\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:00\",\"k\":\"a\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:05\",\"k\":\"b\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:10\",\"k\":\"b\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"k\":\"b\",\"n\":1,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"k\":\"c\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:25\",\"k\":\"c\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:35\",\"k\":\"a\",\"n\":1,\"total\":5}\n\
         {\"window_start\":\"1970-01-01T00:00:40\",\"k\":\"a\",\"n\":1,\"total\":5}\n",
    );
    // SESSION: a row before the watermark is late (b's at 21 s too: the watermark is at 25 s)
    let session = canonical_lines(
        "{\"window_start\":\"1970-01-01T00:00:01\",\"k\":\"a\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:12\",\"k\":\"b\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:25\",\"k\":\"c\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:41\",\"k\":\"a\",\"n\":1,\"total\":5}\n",
    );
    let windows = [
        ("TUMBLE(ts, INTERVAL '10' SECOND)", tumble, 3),
        ("HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)", hop, 3),
        ("SESSION(ts, INTERVAL '3' SECOND)", session, 4),
    ];
    for (window, want, late) in windows {
        let mut answers = Vec::new();
        for (parallelism, spread) in [("3", true), ("1", false)] {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("late.jsonl");
            let lines: String = rows
                .iter()
                .map(|(k, t, a)| match t {
                    Some(t) => format!("{{\"k\":\"{k}\",\"ts\":{t},\"amount\":{a}}}\n"),
                    None => format!("{{\"k\":\"{k}\",\"ts\":null,\"amount\":{a}}}\n"),
                })
                .collect();
            std::fs::write(&data, lines).unwrap();
            let sql = format!(
                "SELECT window_start, k, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY {window}, k \
                 INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', 'clicks.event_time' = 'ts', \
                 'clicks.schema' = 'k VARCHAR, ts BIGINT, amount BIGINT', 'clicks.event_time.format' = 'epoch_millis', \
                 'clicks.watermark.delay' = '0s', 'batch.size' = '1', 'parallelism' = '{parallelism}', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl', \
                 'late.sink' = 'too_late', 'too_late.type' = 'file_sink', 'too_late.path' = '{}/late.out.jsonl');",
                data.display(),
                tmp.path().display(),
                tmp.path().display()
            );
            std::fs::write(tmp.path().join("job.sql"), &sql).unwrap();
            let explain = ferris(tmp.path(), &["explain", "job.sql"]);
            assert_ok(&explain);
            assert_eq!(explain.stdout.contains("spread over 3 tasks by key"), spread, "{window}: {}", explain.stdout);
            let run = run_sql(tmp.path(), &sql);
            assert_ok(&run);
            let got = file_rows(&tmp.path().join("out.jsonl"));
            let late_rows = file_rows(&tmp.path().join("late.out.jsonl"));
            assert_same_rows(&format!("{window}, parallelism {parallelism}"), &got, &want);
            assert_eq!(late_rows.len(), late, "{window}: {late_rows:?}");
            answers.push((got, late_rows));
        }
        assert_eq!(answers[0], answers[1], "{window}: spread over 3 tasks, then one task");
    }
}

/// A `HOP` row that comes after the watermark passed some of its windows counts in those still
/// open (as in Flink); only a row all of whose windows have closed is late. A window that
/// closed empty is not written when such a row comes for it.
#[test]
fn hop_rows_late_for_some_windows_count_in_the_open_ones() {
    let tmp = tempfile::tempdir().unwrap();
    // 10 s windows every 5 s, no delay; the row at 108 s comes when the watermark is at 125 s
    // (its windows [100, 110) and [105, 115) closed: late); the one at 121 s when it is at
    // 126 s ([115, 125) closed, empty; [120, 130) open: counted there)
    let rows = [(101_000, 1), (112_000, 2), (125_000, 3), (108_000, 100), (126_000, 4), (121_000, 50), (141_000, 5)];
    let run = run_late_rows(tmp.path(), &rows, "HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)", "");
    assert!(run.stderr.contains("1 late rows dropped"), "{}", run.stderr);
    let want = canonical_lines(
        "{\"window_start\":\"1970-01-01T00:01:35\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:01:40\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:01:45\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:01:50\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:02:00\",\"n\":3,\"total\":57}\n\
         {\"window_start\":\"1970-01-01T00:02:05\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:02:15\",\"n\":1,\"total\":5}\n\
         {\"window_start\":\"1970-01-01T00:02:20\",\"n\":1,\"total\":5}\n",
    );
    assert_same_rows("hop late", &file_rows(&tmp.path().join("out.jsonl")), &want);
}

/// `late.sink`: the late rows of a window and of an interval join go to a sink of their own,
/// with the columns the operator received, and are still counted; the results are those of
/// the run without it.
#[test]
fn late_rows_go_to_the_late_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("late.jsonl");
    let rows = [(1_000, 1), (12_000, 2), (25_000, 3), (3_000, 100), (26_000, 4), (4_000, 200), (41_000, 5)];
    std::fs::write(&data, rows.iter().map(|(t, a)| format!("{{\"ts\":{t},\"amount\":{a}}}\n")).collect::<String>()).unwrap();
    let sql = format!(
        "SELECT window_start, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND) \
         INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', 'clicks.event_time' = 'ts', \
         'clicks.watermark.delay' = '0s', 'batch.size' = '1', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl', \
         'late.sink' = 'too_late', 'too_late.type' = 'file_sink', 'too_late.path' = '{}/late_rows.jsonl');",
        data.display(),
        tmp.path().display(),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(run.stderr.contains("2 late rows (their window had closed), 2 of them written to late sink 'too_late'"), "{}", run.stderr);
    assert_same_rows(
        "late rows",
        &file_rows(&tmp.path().join("late_rows.jsonl")),
        &canonical_lines("{\"ts\":3000,\"amount\":100}\n{\"ts\":4000,\"amount\":200}\n"),
    );
    let want = canonical_lines(
        "{\"window_start\":\"1970-01-01T00:00:00\",\"n\":1,\"total\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:10\",\"n\":1,\"total\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:20\",\"n\":2,\"total\":7}\n\
         {\"window_start\":\"1970-01-01T00:00:40\",\"n\":1,\"total\":5}\n",
    );
    assert_same_rows("results beside the late sink", &file_rows(&tmp.path().join("out.jsonl")), &want);

    // an interval join: the purchase at 5 s comes after its side's watermark reached 20 s
    let purchases = tmp.path().join("purchases.jsonl");
    std::fs::write(&purchases, "{\"ts\":10000,\"amount\":2}\n{\"ts\":20000,\"amount\":3}\n{\"ts\":5000,\"amount\":1}\n").unwrap();
    let join = format!(
        "SELECT c.ts AS cts, p.ts AS pts FROM clicks c JOIN purchases p ON c.amount = p.amount WITHIN INTERVAL '20' SECONDS \
         INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.event_time' = 'ts', 'clicks.watermark.delay' = '0s', \
         'purchases.type' = 'file_source', 'purchases.path' = '{}', 'purchases.event_time' = 'ts', 'purchases.watermark.delay' = '0s', \
         'batch.size' = '1', 'out.type' = 'file_sink', 'out.path' = '{}/joined.jsonl', \
         'late.sink' = 'too_late', 'too_late.type' = 'file_sink', 'too_late.path' = '{}/late_purchases.jsonl');",
        data.display(),
        purchases.display(),
        tmp.path().display(),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &join);
    assert_ok(&run);
    let late = std::fs::read_to_string(tmp.path().join("late_purchases.jsonl")).unwrap_or_default();
    assert!(late.contains("5000") && !late.contains("20000"), "the late purchase, and only it: {late}\n{}", run.stderr);
    let joined = file_rows(&tmp.path().join("joined.jsonl"));
    assert!(!joined.iter().any(|r| r.contains("\"pts\":5000")), "a late row is not joined: {joined:?}");

    // under use_transactions the late sink (written outside checkpoints) is refused by name
    let run = run_sql(tmp.path(), &sql.replace("'batch.size' = '1'", "'batch.size' = '1', 'use_transactions' = 'true'"));
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("use_transactions: late sink 'too_late' cannot take part in transactions"), "{}", run.stderr);

    // a late sink that is also a result sink is refused
    let bad = sql.replace("'late.sink' = 'too_late'", "'late.sink' = 'out'");
    let run = run_sql(tmp.path(), &bad);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("'late.sink' = 'out' names a relation job"), "{}", run.stderr);
}

/// A global aggregate (no GROUP BY) over a stream that never ends (a tailed file): one group,
/// its row upserted as rows come, the latest equal to the batch answer over the whole file.
/// (Before, DataFusion's aggregate refused the plan with a raw "pipeline breaking" dump.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_aggregate_over_a_stream_updates_its_one_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    write_clicks(&data, 5, 2000, 100, 0, 3);
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM overall AS SELECT COUNT(*) AS n, SUM(amount) AS total, MAX(user_id) AS top FROM clicks INTO out \
         WITH ({}, 'batch.size' = '300', 'out.type' = 'file_sink', 'out.path' = '{}');",
        source(&data, ", 'clicks.watch' = 'true'"),
        out.display()
    );
    let ctx = clicks_context(&data).await;
    let want = batch_rows(&ctx, "SELECT COUNT(*) AS n, SUM(amount) AS total, MAX(user_id) AS top FROM clicks").await;
    let latest = |text: &str| -> Option<String> {
        let mut v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
        assert_eq!(v.as_object_mut()?.remove("_op"), Some(serde_json::json!("UPSERT")), "{text}");
        canonical_lines(&v.to_string()).pop()
    };
    crate::temporal_joins::run_until(tmp.path(), &sql, &out, |text| latest(text).as_ref() == want.first());
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(latest(&text).as_ref(), want.first(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_changes_ends_with_the_final_value_of_every_group() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    // 60 users: a batch of 100 rows leaves some groups of a window unchanged
    write_clicks(&data, 3, 1500, 100, 0, 60);
    let sql = format!(
        "CREATE STREAM totals AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY user_id EMIT CHANGES \
         INTO out WITH ({}, 'batch.size' = '100', 'emit.interval' = '0ms', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');\n\
         CREATE STREAM per_window AS SELECT window_start, user_id, COUNT(*) AS n FROM clicks GROUP BY TUMBLE(ts, INTERVAL '30' SECOND), user_id EMIT CHANGES \
         INTO out2 WITH ({}, 'batch.size' = '100', 'emit.interval' = '0ms', 'out2.type' = 'file_sink', 'out2.path' = '{}/out2.jsonl');\n\
         CREATE STREAM per_hop AS SELECT window_start, user_id, COUNT(*) AS n FROM clicks GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), user_id EMIT CHANGES \
         INTO out3 WITH ({}, 'batch.size' = '100', 'emit.interval' = '0ms', 'out3.type' = 'file_sink', 'out3.path' = '{}/out3.jsonl');\n\
         CREATE STREAM overall AS SELECT COUNT(*) AS n, SUM(amount) AS total FROM clicks EMIT CHANGES \
         INTO out4 WITH ({}, 'batch.size' = '100', 'emit.interval' = '0ms', 'out4.type' = 'file_sink', 'out4.path' = '{}/out4.jsonl');",
        source(&data, ""),
        tmp.path().display(),
        source(&data, ""),
        tmp.path().display(),
        source(&data, ""),
        tmp.path().display(),
        source(&data, ""),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let ctx = clicks_context(&data).await;
    for (file, key, batch) in [
        ("out.jsonl", vec!["user_id"], "SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY user_id"),
        ("out2.jsonl", vec!["window_start", "user_id"], "SELECT to_timestamp_millis(ts / 30000 * 30000) AS window_start, user_id, COUNT(*) AS n FROM clicks GROUP BY 1, 2"),
        (
            "out3.jsonl",
            vec!["window_start", "user_id"],
            "SELECT to_timestamp_millis(ts / 10000 * 10000 - k.i * 10000) AS window_start, user_id, COUNT(*) AS n FROM clicks CROSS JOIN (VALUES (0), (1), (2)) AS k(i) GROUP BY 1, 2",
        ),
        // no GROUP BY: one group, updated as rows come
        ("out4.jsonl", vec![], "SELECT COUNT(*) AS n, SUM(amount) AS total FROM clicks"),
    ] {
        let text = std::fs::read_to_string(tmp.path().join(file)).unwrap();
        let mut lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for v in lines.iter_mut() {
            let op = v.as_object_mut().unwrap().remove("_op");
            assert_eq!(op, Some(serde_json::json!("UPSERT")), "every change says what it is");
        }
        let mut last = std::collections::BTreeMap::new();
        for v in &lines {
            let k: Vec<String> = key.iter().map(|c| v[*c].to_string()).collect();
            // only groups that changed are written again (COUNT(*) grows with each change)
            let before = last.insert(k, v.to_string());
            assert_ne!(before.as_ref(), Some(&v.to_string()), "{file}: a group written again unchanged");
        }
        let latest = canonical_lines(&last.values().cloned().collect::<Vec<_>>().join("\n"));
        let want = batch_rows(&ctx, batch).await;
        assert!(lines.len() > want.len(), "{file}: changes are emitted as rows arrive ({} rows for {} groups)", lines.len(), want.len());
        assert_same_rows(file, &latest, &want);
    }
}

/// Replays a changelog (`_op` UPSERT / DELETE) keyed by `key` into the rows a keyed sink ends
/// with. A DELETE must withdraw exactly the row that was last written for its key.
fn replay_changelog(text: &str, key: &[&str]) -> (Vec<String>, usize) {
    let mut state = std::collections::BTreeMap::new();
    let mut deletes = 0;
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let op = v.as_object_mut().unwrap().remove("_op").unwrap();
        let k: Vec<String> = key.iter().map(|c| v[*c].to_string()).collect();
        match op.as_str().unwrap() {
            "UPSERT" => {
                state.insert(k, v);
            }
            "DELETE" => {
                deletes += 1;
                let had = state.remove(&k);
                assert_eq!(had.as_ref(), Some(&v), "a DELETE withdraws the row last written for its key: {line}");
            }
            other => panic!("unknown operation {other}"),
        }
    }
    let rows = canonical_lines(&state.values().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"));
    (rows, deletes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_emit_changes_retracts_merged_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    // rows out of order by up to 4 s, sessions of 3 s: late rows bridge sessions already emitted
    write_clicks(&data, 11, 3000, 700, 4000, 6);
    let session_batch = CASES.iter().find(|c| c.0 == "session").unwrap().2;
    let cases = [
        ("plain", "", "'clicks.watermark.delay' = '5s'", session_batch.to_string()),
        ("having", " HAVING COUNT(*) > 2", "'clicks.watermark.delay' = '5s'", format!("SELECT * FROM ({session_batch}) WHERE n > 2")),
        ("no_delay", "", "'clicks.x' = '1'", session_batch.to_string()),
    ];
    let mut sql = String::new();
    for (name, having, delay, _) in &cases {
        sql.push_str(&format!(
            "CREATE STREAM s_{name} AS SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks \
             GROUP BY SESSION(ts, INTERVAL '3' SECOND), user_id{having} EMIT CHANGES INTO out_{name} \
             WITH ({}, {delay}, 'batch.size' = '40', 'emit.interval' = '0ms', 'out_{name}.type' = 'file_sink', 'out_{name}.path' = '{}/{name}.jsonl');\n",
            source(&data, ""),
            tmp.path().display()
        ));
    }
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(!run.stderr.contains("late rows dropped"), "{}", run.stderr);
    let ctx = clicks_context(&data).await;
    for (name, _, _, batch) in &cases {
        let text = std::fs::read_to_string(tmp.path().join(format!("{name}.jsonl"))).unwrap();
        let (rows, deletes) = replay_changelog(&text, &["user_id", "window_start", "window_end"]);
        let want = batch_rows(&ctx, batch).await;
        assert!(want.len() > 50, "{name}: {} sessions, too few to test", want.len());
        assert!(deletes > 0, "{name}: merged sessions are retracted");
        assert!(text.lines().count() > want.len() + deletes, "{name}: changes come as rows arrive");
        assert_same_rows(name, &rows, &want);
    }
    // an aggregate over the changelog would count retractions as rows: refused
    let nested = format!(
        "SELECT user_id, COUNT(*) AS sessions FROM (SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY SESSION(ts, INTERVAL '3' SECOND), user_id) s \
         GROUP BY user_id EMIT CHANGES WITH ({});",
        source(&data, "")
    );
    let run = run_sql(tmp.path(), &nested);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("cannot carry"), "{}", run.stderr);
}

#[test]
fn window_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("c.jsonl");
    write_clicks(&data, 1, 10, 100, 0, 2);
    let cases = [
        ("GROUP BY HOP(ts, INTERVAL '1' MINUTE, INTERVAL '10' SECOND)", "longer than its size"),
        ("GROUP BY TUMBLE(ts, INTERVAL '1' MONTH)", "fixed length"),
        ("GROUP BY TUMBLE(amount * 1.5, INTERVAL '1' MINUTE)", "is not a time"),
    ];
    for (group, message) in cases {
        let sql = format!("SELECT COUNT(*) FROM clicks {group} WITH ({});", source(&data, "").replace("'clicks.event_time' = 'ts'", "'clicks.x' = '1'"));
        let run = run_sql(tmp.path(), &sql);
        assert_ne!(run.status, 0, "{group} should fail");
        assert!(run.stderr.contains(message), "{group}: {}", run.stderr);
    }
    // the clause form needs an event time
    let sql = format!("SELECT COUNT(*) FROM clicks GROUP BY user_id WINDOW TUMBLING(INTERVAL '1' MINUTE) WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines');", data.display());
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("needs an event-time column"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_clause_and_processing_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    write_clicks(&data, 5, 2000, 700, 4000, 5);
    let base = format!("'clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines'", data.display());
    // WATERMARK FOR names the event time and the delay in SQL
    let sql = format!(
        "CREATE STREAM t AS {} WATERMARK FOR clicks.ts AS clicks.ts - INTERVAL '5' SECOND INTO out \
         WITH ({base}, 'batch.size' = '50', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        CASES[0].1,
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let explain = ferris(tmp.path(), &["explain", "job.sql"]);
    assert!(explain.stdout.contains("watermark=delay=5000ms"), "{}", explain.stdout);
    assert!(explain.stdout.contains("event_time = ts"), "{}", explain.stdout);
    let ctx = clicks_context(&data).await;
    assert_same_rows("watermark clause", &file_rows(&tmp.path().join("out.jsonl")), &batch_rows(&ctx, CASES[0].2).await);

    // processing time: every row lands in the window of the moment it is read
    let sql = format!(
        "SELECT COUNT(*) AS n FROM clicks GROUP BY TUMBLE(PROCTIME(), INTERVAL '1' HOUR) INTO out \
         WITH ({base}, 'out.type' = 'file_sink', 'out.path' = '{}/proc.jsonl');",
        tmp.path().display()
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    let total: i64 =
        file_rows(&tmp.path().join("proc.jsonl")).iter().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 2000);
}

/// A tailed file that stops growing: with `idle_timeout` named, event time goes on with the
/// clock once the source is quiet, and every window comes out — exactly the batch answer,
/// the last ones included, with no row after them to push the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_when_a_tailed_file_goes_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("clicks.jsonl");
    write_clicks(&data, 5, 2000, 7, 0, 4);
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM w AS SELECT window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks \
         GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), user_id INTO out \
         WITH ({}, 'clicks.watch' = 'true', 'clicks.watermark.delay' = '500ms', 'clicks.idle_timeout' = '300ms', \
         'out.type' = 'file_sink', 'out.path' = '{}');",
        source(&data, ""),
        out.display()
    );
    std::fs::write(tmp.path().join("job.sql"), sql).unwrap();
    let ctx = clicks_context(&data).await;
    let want = batch_rows(
        &ctx,
        "SELECT to_timestamp_millis(ts / 2000 * 2000) AS window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY 1, 2",
    )
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(tmp.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < want.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    crate::common::stop_with_sigint(&mut child);
    assert_same_rows("every window of a quiet tailed file", &file_rows(&out), &want);
}

/// State is accounted in the job's memory pool: an unwindowed GROUP BY over a stream of ever
/// new keys, under `memory.limit_mb` = 4, stops with an error naming the operator, the size of
/// its state and what would make it smaller — instead of growing until the machine runs out.
/// The same rows in one-second windows (closed as the stream moves on) fit.
#[test]
fn state_over_the_jobs_memory_limit_stops_the_job_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("events.jsonl");
    let text: String =
        (0..120_000i64).map(|i| format!("{{\"ts\": {}, \"user_id\": \"user-{i}-{}\", \"amount\": {}}}\n", 1_000 * i, i * 7919 % 1000, i % 97)).collect();
    std::fs::write(&data, text).unwrap();
    let job = |query: &str, out: &str| {
        format!(
            "CREATE STREAM s AS {query} INTO out WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', \
             'events.schema' = 'ts BIGINT, user_id VARCHAR, amount BIGINT', 'events.event_time' = 'ts', 'memory.limit_mb' = '4', \
             'out.type' = 'file_sink', 'out.path' = '{}/{out}');",
            data.display(),
            tmp.path().display()
        )
    };
    std::fs::write(tmp.path().join("job.sql"), job("SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id", "keys.jsonl")).unwrap();
    let run = crate::common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_ferris-sql")).args(["run", "job.sql", "--no-progress"]).current_dir(tmp.path()),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("WindowAggregateExec (unwindowed GROUP BY): its state of"), "{stderr}");
    assert!(stderr.contains("does not fit the job's memory limit (memory.limit_mb"), "{stderr}");
    assert!(stderr.contains("group by a window"), "{stderr}");

    // windows close as the stream moves on: their state stays small
    let out = tmp.path().join("windows.jsonl");
    let sql = job("SELECT window_start, COUNT(*) AS n FROM events GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)", "windows.jsonl");
    let stderr = crate::temporal_joins::run_until(tmp.path(), &sql, &out, |text| text.lines().count() >= 119_000);
    assert!(!stderr.contains("does not fit"), "{stderr}");
}

/// Appends `(user_id, amount)` rows to a JSON-lines file.
fn append_amounts(path: &Path, lines: &[(&str, i64)]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for (user, amount) in lines {
        writeln!(f, "{{\"user_id\": \"{user}\", \"amount\": {amount}}}").unwrap();
    }
}

/// Waits (20 s at most) until the JSON-lines file `out` holds every row of `want`.
fn wait_for_rows(out: &Path, want: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = std::fs::read_to_string(out).map(|t| canonical_lines(&t)).unwrap_or_default();
        if want.iter().all(|r| got.contains(r)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "waited for {want:?}, have {got:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Writes `sql` to `dir/job.sql` and starts it (stderr piped, for [`stop_with_sigint`]).
fn spawn_job(dir: &Path, sql: &str) -> std::process::Child {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `'state.ttl'` forgets the keys of an unwindowed `GROUP BY` on a stream that were not updated
/// for that long. Under `EMIT FINAL` each key's row is written when it expires (a key updated
/// again before then is one row, not two); under `EMIT CHANGES` a key seen again after its
/// expiry starts a new count. A job without such a `GROUP BY` is told the key does nothing.
#[test]
fn state_ttl_forgets_idle_keys_of_an_unwindowed_group_by() {
    use std::time::Duration;
    let row = |user: &str, n: i64, total: i64, op: Option<&str>| {
        let mut v = serde_json::json!({"user_id": user, "n": n, "total": total});
        if let Some(op) = op {
            v["_op"] = op.into();
        }
        canonical_lines(&v.to_string()).remove(0)
    };
    for emit in ["FINAL", "CHANGES"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("events.jsonl");
        let out = tmp.path().join("out.jsonl");
        let append = |lines: &[(&str, i64)]| append_amounts(&data, lines);
        let wait_for = |rows: &[String]| wait_for_rows(&out, rows);
        append(&[("a", 1), ("b", 5)]);
        let sql = format!(
            "CREATE STREAM s AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id EMIT {emit} INTO out \
             WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', 'events.poll_interval' = '50ms', \
             'events.schema' = 'user_id VARCHAR, amount BIGINT', 'state.ttl' = '2s', 'emit.interval' = '0ms', \
             'out.type' = 'file_sink', 'out.path' = '{}');",
            data.display(),
            out.display()
        );
        let mut child = spawn_job(tmp.path(), &sql);
        let want = if emit == "FINAL" {
            // 'a' again well within its two seconds: still one key, written once when it expires
            std::thread::sleep(Duration::from_millis(600));
            append(&[("a", 2)]);
            let first = vec![row("a", 2, 3, None), row("b", 1, 5, None)];
            wait_for(&first);
            // expired and written: 'a' now starts again, and is written when it expires again
            append(&[("a", 10)]);
            let again = row("a", 1, 10, None);
            wait_for(std::slice::from_ref(&again));
            [first, vec![again]].concat()
        } else {
            let up = |u, n, t| row(u, n, t, Some("UPSERT"));
            wait_for(&[up("a", 1, 1), up("b", 1, 5)]);
            append(&[("a", 2)]);
            wait_for(&[up("a", 2, 3)]);
            // three seconds without 'a': forgotten, so its next row starts a new count
            std::thread::sleep(Duration::from_secs(3));
            append(&[("a", 10)]);
            wait_for(&[up("a", 1, 10)]);
            vec![up("a", 1, 1), up("a", 1, 10), up("a", 2, 3), up("b", 1, 5)]
        };
        let stderr = crate::common::stop_with_sigint(&mut child);
        let mut want = want;
        want.sort();
        assert_same_rows(&format!("EMIT {emit} with state.ttl: {stderr}"), &file_rows(&out), &want);
    }

    // a job whose state frees itself is told the key does nothing
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("events.jsonl");
    std::fs::write(&data, "{\"ts\": 1, \"user_id\": \"a\"}\n").unwrap();
    std::fs::write(
        tmp.path().join("job.sql"),
        format!(
            "SELECT window_start, COUNT(*) AS n FROM events GROUP BY TUMBLE(ts, INTERVAL '1' SECOND) \
             WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.event_time' = 'ts', 'state.ttl' = '1h');",
            data.display()
        ),
    )
    .unwrap();
    let run = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("'state.ttl' = '1h' is not applied"), "{}", run.stdout);
    // and a job whose state it bounds shows it in its plan
    std::fs::write(
        tmp.path().join("job.sql"),
        format!(
            "SELECT user_id, COUNT(*) AS n FROM events GROUP BY user_id \
             WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', 'events.schema' = 'ts BIGINT, user_id VARCHAR', 'state.ttl' = '1h');",
            data.display()
        ),
    )
    .unwrap();
    let run = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("state=keys idle for 3600s expire (state.ttl)"), "{}", run.stdout);
    assert!(!run.stdout.contains("is not applied"), "{}", run.stdout);
    // window functions on a stream: their operator keeps state per key, which the key bounds
    std::fs::write(
        tmp.path().join("job.sql"),
        format!(
            "SELECT user_id, ts, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS n FROM events \
             WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', 'events.event_time' = 'ts', \
             'events.schema' = 'ts BIGINT, user_id VARCHAR', 'state.ttl' = '1h');",
            data.display()
        ),
    )
    .unwrap();
    let run = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("StreamWindowFunctionExec") && run.stdout.contains("state=keys idle for 3600s expire (state.ttl)"), "{}", run.stdout);
    assert!(!run.stdout.contains("is not applied"), "{}", run.stdout);
}

/// `'state.ttl'` on a top N per key over a stream (deduplication keeping each user's largest
/// amount): a row that does not beat the kept one changes nothing while the key lives; once the
/// key has been idle longer than the TTL it is forgotten without output, and its next row is a
/// first row again.
#[test]
fn state_ttl_forgets_idle_keys_of_a_top_n() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("events.jsonl");
    let out = tmp.path().join("out.jsonl");
    let append = |lines: &[(&str, i64)]| append_amounts(&data, lines);
    let row = |user: &str, amount: i64| canonical_lines(&serde_json::json!({"user_id": user, "amount": amount, "_op": "UPSERT"}).to_string()).remove(0);
    let wait_for = |want: &[String]| wait_for_rows(&out, want);
    append(&[("a", 5), ("b", 7)]);
    let sql = format!(
        "CREATE STREAM s AS SELECT user_id, amount FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC) AS rn FROM events) \
         WHERE rn = 1 INTO out WITH ('events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', 'events.poll_interval' = '50ms', \
         'events.schema' = 'user_id VARCHAR, amount BIGINT', 'state.ttl' = '2s', 'out.type' = 'file_sink', 'out.path' = '{}');",
        data.display(),
        out.display()
    );
    let mut child = spawn_job(tmp.path(), &sql);
    wait_for(&[row("a", 5), row("b", 7)]);
    // smaller than the kept one, within the TTL: no change
    append(&[("a", 3)]);
    std::thread::sleep(Duration::from_secs(3));
    // three seconds without 'a': forgotten, so 1 is its first row again
    append(&[("a", 1)]);
    wait_for(&[row("a", 1)]);
    let stderr = crate::common::stop_with_sigint(&mut child);
    let mut want = vec![row("a", 5), row("a", 1), row("b", 7)];
    want.sort();
    assert_same_rows(&format!("top N with state.ttl: {stderr}"), &file_rows(&out), &want);
}

/// Windows over Parquet files with an `event_time` and no watermark delay close as the files
/// are read (each row group's least time, from its statistics, is how far event time has got)
/// instead of waiting for the end: the same rows as DataFusion's batch answer, none late, in
/// a memory limit that holding every window to the end does not fit (the same rows as JSON
/// lines, which have no statistics, fail it). Row groups overlap in time and are out of order
/// within (a floor taken from a group's largest time, or from the next group, would make rows
/// late); a `WHERE` sits between the file and the window; one task and two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_parquet_close_by_the_files_statistics() {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let (groups, per_group) = (24i64, 20_000i64);
    let mut rng = Lcg::new(7);
    let (mut ts, mut k, mut amount) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..groups {
        // reversed within the group; every 97th row from the group before's last second
        for i in (g * per_group..(g + 1) * per_group).rev() {
            let t = if i % 97 == 0 && g > 0 { (g * per_group - 50) * 10 - rng.below(900) as i64 } else { i * 10 };
            ts.push(if i % 1013 == 0 { None } else { Some(t) });
            k.push(format!("key-{}", rng.below(1000)));
            amount.push(rng.below(1000) as i64);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("k", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(ts.clone())), Arc::new(StringArray::from(k.clone())), Arc::new(Int64Array::from(amount.clone()))],
    )
    .unwrap();
    let parquet = tmp.path().join("clicks.parquet");
    let props = datafusion::parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(per_group as usize)).build();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&parquet).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let jsonl = tmp.path().join("clicks.jsonl");
    let lines: String = (0..ts.len())
        .map(|i| match ts[i] {
            Some(t) => format!("{{\"ts\":{t},\"k\":\"{}\",\"amount\":{}}}\n", k[i], amount[i]),
            None => format!("{{\"ts\":null,\"k\":\"{}\",\"amount\":{}}}\n", k[i], amount[i]),
        })
        .collect();
    std::fs::write(&jsonl, lines).unwrap();
    let ctx = SessionContext::new();
    ctx.register_parquet("t", parquet.to_str().unwrap(), Default::default()).await.unwrap();
    let cases = [
        (
            "TUMBLE(ts, INTERVAL '1' SECOND)",
            "SELECT arrow_cast(ts - ts % 1000, 'Timestamp(Millisecond, None)') AS window_start, k, COUNT(*) AS n, SUM(amount) AS total \
             FROM t WHERE ts IS NOT NULL AND amount % 7 <> 0 GROUP BY 1, 2",
        ),
        (
            "HOP(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)",
            "SELECT arrow_cast(w, 'Timestamp(Millisecond, None)') AS window_start, k, COUNT(*) AS n, SUM(amount) AS total FROM \
             (SELECT k, amount, unnest(make_array(ts - ts % 1000, ts - ts % 1000 - 1000, ts - ts % 1000 - 2000)) AS w FROM t WHERE ts IS NOT NULL AND amount % 7 <> 0) \
             GROUP BY 1, 2",
        ),
    ];
    for (window, batch_sql) in cases {
        let want = batch_rows(&ctx, batch_sql).await;
        for (file, parallelism) in [(&parquet, "1"), (&parquet, "2"), (&jsonl, "2")] {
            let out = tmp.path().join("out.jsonl");
            let late = tmp.path().join("late.jsonl");
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&late);
            let format = if file == &jsonl { ", 'clicks.format' = 'jsonlines', 'clicks.schema' = 'ts BIGINT, k VARCHAR, amount BIGINT'" } else { "" };
            let sql = format!(
                "SELECT window_start, k, COUNT(*) AS n, SUM(amount) AS total FROM clicks WHERE amount % 7 <> 0 GROUP BY {window}, k \
                 INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.event_time' = 'ts'{format}, \
                 'parallelism' = '{parallelism}', 'memory.limit_mb' = '24', 'out.type' = 'file_sink', 'out.path' = '{}', \
                 'late.sink' = 'too_late', 'too_late.type' = 'file_sink', 'too_late.path' = '{}');",
                file.display(),
                out.display(),
                late.display()
            );
            let run = run_sql(tmp.path(), &sql);
            let name = format!("{window} over {} with parallelism {parallelism}", file.display());
            if file == &jsonl {
                // every window held to the end: over the limit, and the error says so
                assert_ne!(run.status, 0, "{name}: {}", run.stdout);
                assert!(run.stderr.contains("memory limit"), "{name}: {}", run.stderr);
                continue;
            }
            assert_ok(&run);
            assert_same_rows(&name, &file_rows(&out), &want);
            assert!(!late.exists() || file_rows(&late).is_empty(), "{name}: rows made late");
        }
    }
}
