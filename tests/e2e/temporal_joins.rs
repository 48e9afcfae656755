//! Temporal joins of streams: `WITHIN INTERVAL` and explicit time bands, INNER / LEFT / RIGHT /
//! FULL, multi-way, run by the interval join operator (state evicted by watermarks) and
//! compared row by row with DataFusion's batch join on the same files. Then the same operators
//! on unbounded (tailed) files, where nothing ever ends.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{JsonReadOptions, SessionContext};

use crate::common::*;
use crate::windows::write_clicks;

fn stream(name: &str, path: &Path, extra: &str) -> String {
    format!("'{name}.type' = 'file_source', '{name}.path' = '{}', '{name}.format' = 'jsonlines', '{name}.event_time' = 'ts'{extra}", path.display())
}

async fn context(files: &[(&str, &Path)]) -> SessionContext {
    let ctx = SessionContext::new();
    for (name, path) in files {
        ctx.register_json(*name, path.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    }
    ctx
}

const COLS: &str = "c.user_id, c.ts AS cts, p.ts AS pts, c.amount AS ca, p.amount AS pa";

/// (name, streaming query, batch query)
fn cases() -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for kind in ["INNER", "LEFT", "RIGHT", "FULL OUTER"] {
        let name = kind.split(' ').next().unwrap().to_ascii_lowercase();
        v.push((
            format!("within_{name}"),
            format!("SELECT {COLS} FROM clicks c {kind} JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '2' SECONDS"),
            format!("SELECT {COLS} FROM clicks c {kind} JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - 2000 AND c.ts + 2000"),
        ));
    }
    let band = "c.user_id = p.user_id AND p.ts BETWEEN c.ts - 1000 AND c.ts + 3000";
    v.push((
        "explicit_band_left".into(),
        format!("SELECT {COLS} FROM clicks c LEFT JOIN purchases p ON {band}"),
        format!("SELECT {COLS} FROM clicks c LEFT JOIN purchases p ON {band}"),
    ));
    let iso = "c.user_id = p.user_id AND CAST(p.ts_iso AS TIMESTAMP) BETWEEN CAST(c.ts_iso AS TIMESTAMP) - INTERVAL '3' SECOND AND CAST(c.ts_iso AS TIMESTAMP) + INTERVAL '1' SECOND";
    v.push((
        "explicit_interval_full".into(),
        format!("SELECT {COLS} FROM clicks c FULL JOIN purchases p ON {iso}"),
        format!("SELECT {COLS} FROM clicks c FULL JOIN purchases p ON {iso}"),
    ));
    v.push((
        "three_way".into(),
        "SELECT c.user_id, c.ts AS cts, p.ts AS pts, v.ts AS vts FROM clicks c JOIN purchases p ON c.user_id = p.user_id LEFT JOIN views v ON c.user_id = v.user_id WITHIN INTERVAL '1' SECOND".into(),
        "SELECT c.user_id, c.ts AS cts, p.ts AS pts, v.ts AS vts FROM clicks c JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - 1000 AND c.ts + 1000 LEFT JOIN views v ON c.user_id = v.user_id AND v.ts BETWEEN c.ts - 1000 AND c.ts + 1000".into(),
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_equal_the_batch_join() {
    let tmp = tempfile::tempdir().unwrap();
    let (clicks, purchases, views) = (tmp.path().join("clicks.jsonl"), tmp.path().join("purchases.jsonl"), tmp.path().join("views.jsonl"));
    write_clicks(&clicks, 21, 1500, 600, 3000, 6);
    write_clicks(&purchases, 22, 600, 1500, 3000, 6);
    write_clicks(&views, 23, 1000, 900, 3000, 6);
    let delay = ", '{}.watermark.delay' = '4s'";
    let sources = |q: &str| {
        let mut s = vec![stream("clicks", &clicks, &delay.replace("{}", "clicks")), stream("purchases", &purchases, &delay.replace("{}", "purchases"))];
        if q.contains("views") {
            s.push(stream("views", &views, &delay.replace("{}", "views")));
        }
        s.join(", ")
    };
    let mut sql = String::new();
    for (name, query, _) in cases() {
        sql.push_str(&format!(
            "CREATE STREAM {name} AS {query}\nINTO {name}_out\nWITH ({}, 'batch.size' = '64', '{name}_out.type' = 'file_sink', '{name}_out.path' = '{}/{name}.jsonl');\n\n",
            sources(&query),
            tmp.path().display()
        ));
    }
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(!run.stderr.contains("late rows"), "{}", run.stderr);
    let explain = ferris(tmp.path(), &["explain", "job.sql"]);
    let in_plans = explain.stdout.lines().filter(|l| l.trim_start().starts_with("IntervalJoinExec")).count();
    assert_eq!(in_plans, cases().len() + 1, "every join runs as an interval join:\n{}", explain.stdout);
    let ctx = context(&[("clicks", &clicks), ("purchases", &purchases), ("views", &views)]).await;
    for (name, _, batch) in cases() {
        let got = file_rows(&tmp.path().join(format!("{name}.jsonl")));
        let want = batch_rows(&ctx, &batch).await;
        assert!(want.len() > 100, "{name}: {} rows is too few to test", want.len());
        assert_same_rows(&name, &got, &want);
    }
}

/// Starts a job, waits until `out` holds `rows` lines (or a deadline), stops it with SIGINT and
/// returns its stderr.
pub fn run_until_rows(dir: &Path, sql: &str, out: &Path, rows: usize) -> String {
    run_until(dir, sql, out, |text| text.lines().count() >= rows)
}

/// Starts a job, waits until the text of `out` satisfies `done` (or a deadline), stops it
/// with SIGINT and returns its stderr.
pub fn run_until(dir: &Path, sql: &str, out: &Path, done: impl Fn(&str) -> bool) -> String {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done(&std::fs::read_to_string(out).unwrap_or_default()) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "an unbounded job does not end by itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_with_sigint(&mut child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_streams_join_and_window_as_they_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (clicks, purchases) = (tmp.path().join("clicks.jsonl"), tmp.path().join("purchases.jsonl"));
    write_clicks(&clicks, 31, 1200, 500, 1500, 4);
    write_clicks(&purchases, 32, 500, 1200, 1500, 4);
    let schema = "ts BIGINT, ts_iso VARCHAR, user_id VARCHAR, amount BIGINT";
    let tail = |name: &str, path: &Path| {
        stream(name, path, &format!(", '{name}.watch' = 'true', '{name}.schema' = '{schema}', '{name}.watermark.delay' = '2s', '{name}.batch.size' = '50', '{name}.batch.timeout' = '50ms'"))
    };
    let ctx = context(&[("clicks", &clicks), ("purchases", &purchases)]).await;

    // stream-stream inner join: every pair is emitted as soon as both rows are in
    let out = tmp.path().join("join.jsonl");
    let query = format!("SELECT {COLS} FROM clicks c JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '2' SECONDS");
    let want =
        batch_rows(&ctx, &format!("SELECT {COLS} FROM clicks c JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - 2000 AND c.ts + 2000")).await;
    let sql = format!(
        "CREATE STREAM j AS {query} INTO out WITH ({}, {}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        tail("purchases", &purchases),
        out.display()
    );
    let stderr = run_until_rows(tmp.path(), &sql, &out, want.len());
    assert!(stderr.contains("stopped"), "{stderr}");
    assert_same_rows("unbounded join", &file_rows(&out), &want);

    // tumbling windows close as the watermark passes them; the last ones stay open
    let out = tmp.path().join("windows.jsonl");
    let max_ts: i64 =
        std::fs::read_to_string(&clicks).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"].as_i64().unwrap()).max().unwrap();
    let watermark = max_ts - 2000;
    let want = batch_rows(
        &ctx,
        &format!("SELECT to_timestamp_millis(ts / 10000 * 10000) AS window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY 1, 2 HAVING MAX(ts / 10000 * 10000 + 10000) <= {watermark}"),
    )
    .await;
    let sql = format!(
        "CREATE STREAM w AS SELECT window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        out.display()
    );
    let stderr = run_until_rows(tmp.path(), &sql, &out, want.len());
    assert!(stderr.contains("of window and join state when it stopped"), "the open windows' state is reported: {stderr}");
    assert_same_rows("unbounded windows", &file_rows(&out), &want);

    // an unwindowed GROUP BY on a stream updates (EMIT CHANGES by default)
    let out = tmp.path().join("counts.jsonl");
    let want = batch_rows(&ctx, "SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY user_id").await;
    let sql = format!(
        "CREATE STREAM c AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY user_id INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        out.display()
    );
    // the latest row per user, without `_op` (which every change must carry)
    let latest = |text: &str| -> Vec<String> {
        let mut last = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.ends_with('}')) {
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            assert_eq!(v.as_object_mut().unwrap().remove("_op"), Some(serde_json::json!("UPSERT")));
            last.insert(v["user_id"].to_string(), v.to_string());
        }
        canonical_lines(&last.values().cloned().collect::<Vec<_>>().join("\n"))
    };
    run_until(tmp.path(), &sql, &out, |text| latest(text) == want);
    assert_same_rows("streaming GROUP BY", &latest(&std::fs::read_to_string(&out).unwrap()), &want);

    // two windowed aggregates joined on their window (Nexmark q8's shape), both unbounded
    let out = tmp.path().join("window_join.jsonl");
    let max_of = |path: &Path| -> i64 {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"].as_i64().unwrap()).max().unwrap()
    };
    let (wc, wp) = (max_of(&clicks) - 2000, max_of(&purchases) - 2000);
    let want = batch_rows(
        &ctx,
        &format!(
            "SELECT c.user_id, c.window_start, c.n, p.m FROM \
             (SELECT user_id, to_timestamp_millis(ts / 10000 * 10000) AS window_start, COUNT(*) AS n FROM clicks GROUP BY 1, 2 HAVING MAX(ts / 10000 * 10000 + 10000) <= {wc}) c \
             JOIN (SELECT user_id, to_timestamp_millis(ts / 10000 * 10000) AS window_start, COUNT(*) AS m FROM purchases GROUP BY 1, 2 HAVING MAX(ts / 10000 * 10000 + 10000) <= {wp}) p \
             ON c.user_id = p.user_id AND c.window_start = p.window_start"
        ),
    )
    .await;
    let sql = format!(
        "CREATE STREAM wj AS SELECT c.user_id, c.window_start, c.n, p.m FROM \
         (SELECT user_id, window_start, COUNT(*) AS n FROM clicks GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id) c \
         JOIN (SELECT user_id, window_start, COUNT(*) AS m FROM purchases GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id) p \
         ON c.user_id = p.user_id AND c.window_start = p.window_start \
         INTO out WITH ({}, {}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        tail("purchases", &purchases),
        out.display()
    );
    assert!(want.len() > 20, "{} rows", want.len());
    run_until_rows(tmp.path(), &sql, &out, want.len());
    assert_same_rows("unbounded window join", &file_rows(&out), &want);

    // stream-to-table LEFT join: the table is the build side, the stream flows through
    let out = tmp.path().join("enriched.jsonl");
    let users = tmp.path().join("users.csv");
    std::fs::write(&users, "user_id,name\nu0,Ada\nu1,Bob\nu2,Cy\n").unwrap();
    let query = "SELECT c.ts, c.user_id, u.name FROM clicks c LEFT JOIN users u ON c.user_id = u.user_id";
    ctx.register_csv("users", users.to_str().unwrap(), datafusion::prelude::CsvReadOptions::new()).await.unwrap();
    let want = batch_rows(&ctx, query).await;
    let sql = format!(
        "CREATE STREAM e AS {query} INTO out WITH ({}, 'users.type' = 'file_source', 'users.path' = '{}', 'users.format' = 'csv', 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        users.display(),
        out.display()
    );
    run_until_rows(tmp.path(), &sql, &out, want.len());
    assert_same_rows("stream-table", &file_rows(&out), &want);
}

#[test]
fn two_streams_without_a_time_bound_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    write_clicks(&a, 1, 10, 100, 0, 2);
    write_clicks(&b, 2, 10, 100, 0, 2);
    let schema = "ts BIGINT, ts_iso VARCHAR, user_id VARCHAR, amount BIGINT";
    let src = |n: &str, p: &Path| {
        format!("'{n}.type' = 'file_source', '{n}.path' = '{}', '{n}.format' = 'jsonlines', '{n}.watch' = 'true', '{n}.schema' = '{schema}'", p.display())
    };
    let sql = format!("SELECT a.user_id, b.amount FROM a JOIN b ON a.user_id = b.user_id WITH ({}, {});", src("a", &a), src("b", &b));
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0, "an unbounded join without a bound must not start");
    assert!(run.stderr.contains("needs a time bound") && run.stderr.contains("WITHIN INTERVAL"), "{}", run.stderr);
}

/// Streams that go quiet: with `idle_timeout` and `watermark.delay` named, event time goes on
/// with the clock once both tailed files stop growing, so a LEFT join emits its last matches
/// and its unmatched rows (null-padded), and a window over a join closes its last windows —
/// exactly the batch answer, with nothing ever ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_close_their_last_join_bands_and_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let (clicks, purchases) = (tmp.path().join("clicks.jsonl"), tmp.path().join("purchases.jsonl"));
    write_clicks(&clicks, 41, 400, 500, 1000, 4);
    write_clicks(&purchases, 42, 200, 1000, 1000, 4);
    let schema = "ts BIGINT, ts_iso VARCHAR, user_id VARCHAR, amount BIGINT";
    let tail = |name: &str, path: &Path| {
        stream(
            name,
            path,
            &format!(
                ", '{name}.watch' = 'true', '{name}.schema' = '{schema}', '{name}.watermark.delay' = '1s', '{name}.idle_timeout' = '300ms', '{name}.batch.timeout' = '50ms'"
            ),
        )
    };
    let ctx = context(&[("clicks", &clicks), ("purchases", &purchases)]).await;

    let out = tmp.path().join("left.jsonl");
    let want =
        batch_rows(&ctx, &format!("SELECT {COLS} FROM clicks c LEFT JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - 2000 AND c.ts + 2000"))
            .await;
    assert!(want.iter().any(|r| r.contains("\"pts\":null")), "some clicks have no purchase");
    let sql = format!(
        "CREATE STREAM j AS SELECT {COLS} FROM clicks c LEFT JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '2' SECONDS \
         INTO out WITH ({}, {}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        tail("purchases", &purchases),
        out.display()
    );
    run_until_rows(tmp.path(), &sql, &out, want.len());
    assert_same_rows("quiet LEFT join", &file_rows(&out), &want);

    let out = tmp.path().join("windows.jsonl");
    let want = batch_rows(
        &ctx,
        "SELECT to_timestamp_millis(c.ts / 5000 * 5000) AS window_start, c.user_id, COUNT(*) AS n FROM clicks c JOIN purchases p \
         ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - 2000 AND c.ts + 2000 GROUP BY 1, 2",
    )
    .await;
    let sql = format!(
        "CREATE STREAM w AS SELECT window_start, c.user_id, COUNT(*) AS n FROM clicks c JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '2' SECONDS \
         GROUP BY TUMBLE(c.ts, INTERVAL '5' SECOND), c.user_id INTO out WITH ({}, {}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        tail("clicks", &clicks),
        tail("purchases", &purchases),
        out.display()
    );
    run_until_rows(tmp.path(), &sql, &out, want.len());
    assert_same_rows("windows over a quiet join", &file_rows(&out), &want);
}
