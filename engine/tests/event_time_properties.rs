//! Property tests: for random streams (keys, spacing, disorder within the watermark delay,
//! batch sizes) and random window and band sizes, the streaming operators planned by the
//! engine give exactly the rows DataFusion computes in batch with the equivalent SQL.
//!
//! `PROPTEST_CASES=256 cargo test -p ferris-engine --test event_time_properties` for a longer run.

use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{JsonReadOptions, SessionContext};
use ferris_engine::job::analysis::analyze_sql;
use ferris_engine::planner::plan_job;
use proptest::prelude::*;

const BASE: i64 = 1_700_000_000_000;

/// One generated row: arrival order is the vector's order.
#[derive(Debug, Clone)]
struct Row {
    ts: i64,
    key: u8,
    amount: i64,
}

/// Rows roughly `step` ms apart, each moved back by up to `disorder` ms.
fn rows(max_rows: usize, keys: u8) -> impl Strategy<Value = (Vec<Row>, i64)> {
    (1i64..3000, 0i64..5000)
        .prop_flat_map(move |(step, disorder)| {
            let row = (0i64..step, 0i64..=disorder, 0u8..keys, 1i64..100);
            (prop::collection::vec(row, 1..max_rows), Just(step), Just(disorder))
        })
        .prop_map(|(raw, step, disorder)| {
            let rows =
                raw.into_iter().enumerate().map(|(i, (jitter, back, key, amount))| Row { ts: BASE + i as i64 * step + jitter - back, key, amount }).collect();
            (rows, disorder)
        })
}

fn write(path: &Path, rows: &[Row]) {
    let text: String = rows.iter().map(|r| format!("{{\"ts\":{},\"k\":\"k{}\",\"amount\":{}}}\n", r.ts, r.key, r.amount)).collect();
    std::fs::write(path, text).unwrap();
}

fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w =
            datafusion::arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    let mut v: Vec<String> = String::from_utf8(buf).unwrap().lines().map(str::to_string).collect();
    v.sort();
    v
}

fn source(name: &str, path: &Path, delay: i64, batch: usize) -> String {
    format!(
        "'{name}.type' = 'file_source', '{name}.path' = '{}', '{name}.format' = 'jsonlines', '{name}.event_time' = 'ts', \
         '{name}.watermark.delay' = '{delay}ms', '{name}.batch.size' = '{batch}'",
        path.display()
    )
}

/// The engine's plan of `sql`, one operator a line.
fn explained(sql: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let spec = analyze_sql(sql).unwrap().remove(0).unwrap();
        let job = plan_job(spec).await.unwrap();
        let text = datafusion::physical_plan::displayable(job.plan.as_ref()).indent(true).to_string();
        text
    })
}

/// Runs `sql` through the engine (planned as a stream) and `batch_sql` through DataFusion.
fn compare(sql: &str, batch_sql: &str, tables: &[(&str, &Path)]) -> Result<(), TestCaseError> {
    compare_with(sql, batch_sql, tables, None)
}

/// [`compare`], DataFusion reading the files with `schema` (else inferring it).
fn compare_with(sql: &str, batch_sql: &str, tables: &[(&str, &Path)], schema: Option<&datafusion::arrow::datatypes::Schema>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let spec = analyze_sql(sql).unwrap().remove(0).unwrap();
        let job = plan_job(spec).await.map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
        let explained = datafusion::physical_plan::displayable(job.plan.as_ref()).indent(true).to_string();
        prop_assert!(explained.contains("WindowAggregateExec") || explained.contains("IntervalJoinExec"), "not planned as a stream:\n{explained}");
        let got = lines(&datafusion::physical_plan::collect(job.plan, job.ctx.task_ctx()).await.unwrap());
        let ctx = SessionContext::new();
        for (name, path) in tables {
            let mut options = JsonReadOptions::default().file_extension(".jsonl");
            if let Some(schema) = schema {
                options = options.schema(schema);
            }
            ctx.register_json(*name, path.to_str().unwrap(), options).await.unwrap();
        }
        let want = lines(&ctx.sql(batch_sql).await.unwrap().collect().await.unwrap());
        prop_assert_eq!(got, want, "{}", sql);
        Ok(())
    })
}

/// Streams `a` and `b` (rows, disorder) joined `ON on` as the engine runs it and as DataFusion
/// computes it in batch; `timestamps`: both declare `ts` a `TIMESTAMP` (else epoch ms as
/// integers), and the join must be an interval join.
fn interval_join_case(a: (&[Row], i64), b: (&[Row], i64), on: &str, kind: &str, batch: usize, timestamps: bool) -> Result<(), TestCaseError> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let (lp, rp) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    write(&lp, a.0);
    write(&rp, b.0);
    let cols = "a.k AS ak, a.ts AS ats, b.ts AS bts, a.amount AS aa, b.amount AS ba";
    let declared = "ts TIMESTAMP, k VARCHAR, amount BIGINT";
    let schema_key = |name: &str| if timestamps { format!(", '{name}.schema' = '{declared}'") } else { String::new() };
    let sql = format!(
        "SELECT {cols} FROM a {kind} b ON {on} WITH ({}{}, {}{})",
        source("a", &lp, a.1, batch),
        schema_key("a"),
        source("b", &rp, b.1, batch),
        schema_key("b")
    );
    let batch_sql = format!("SELECT {cols} FROM a {kind} b ON {on}");
    if !timestamps {
        return compare(&sql, &batch_sql, &[("a", &lp), ("b", &rp)]);
    }
    prop_assert!(explained(&sql).contains("IntervalJoinExec"), "not an interval join");
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("k", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]);
    compare_with(&sql, &batch_sql, &[("a", &lp), ("b", &rp)], Some(&schema))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32), ..ProptestConfig::default() })]

    #[test]
    fn tumbling_windows((data, disorder) in rows(300, 4), size in 1i64..20_000, batch in 1usize..64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        write(&path, &data);
        let sql = format!(
            "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS hi FROM s \
             GROUP BY TUMBLE(ts, INTERVAL '{size} milliseconds'), k WITH ({})",
            source("s", &path, disorder, batch)
        );
        let batch_sql = format!(
            "SELECT to_timestamp_millis(ts / {size} * {size}) AS window_start, to_timestamp_millis(ts / {size} * {size} + {size}) AS window_end, \
             k, COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS hi FROM s GROUP BY 1, 2, 3"
        );
        compare(&sql, &batch_sql, &[("s", &path)])?;
    }

    #[test]
    fn sliding_windows((data, disorder) in rows(200, 3), slide in 1i64..8_000, factor in 1i64..5, extra in 0i64..3_000, batch in 1usize..64) {
        let size = slide * factor + extra.min(slide - 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        write(&path, &data);
        let sql = format!(
            "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(amount) AS total FROM s \
             GROUP BY HOP(ts, INTERVAL '{slide} milliseconds', INTERVAL '{size} milliseconds'), k WITH ({})",
            source("s", &path, disorder, batch)
        );
        let back: Vec<String> = (0..=size / slide + 1).map(|i| format!("({i})")).collect();
        let start = format!("(ts / {slide} * {slide} - w.i * {slide})");
        let batch_sql = format!(
            "SELECT to_timestamp_millis({start}) AS window_start, to_timestamp_millis({start} + {size}) AS window_end, k, COUNT(*) AS n, SUM(amount) AS total \
             FROM s CROSS JOIN (VALUES {}) AS w(i) WHERE ts < {start} + {size} GROUP BY 1, 2, 3",
            back.join(", ")
        );
        compare(&sql, &batch_sql, &[("s", &path)])?;
    }

    #[test]
    fn session_windows((data, disorder) in rows(200, 3), gap in 1i64..10_000, batch in 1usize..64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        write(&path, &data);
        let sql = format!(
            "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(amount) AS total FROM s \
             GROUP BY SESSION(ts, INTERVAL '{gap} milliseconds'), k WITH ({})",
            source("s", &path, disorder, batch)
        );
        let batch_sql = format!(
            "WITH o AS (SELECT k, ts, amount, CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) < {gap} THEN 0 ELSE 1 END AS brk FROM s), \
             g AS (SELECT *, SUM(brk) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM o) \
             SELECT to_timestamp_millis(MIN(ts)) AS window_start, to_timestamp_millis(MAX(ts) + {gap}) AS window_end, k, COUNT(*) AS n, SUM(amount) AS total \
             FROM g GROUP BY k, sid"
        );
        compare(&sql, &batch_sql, &[("s", &path)])?;
    }

    #[test]
    fn interval_joins(
        (left, ld) in rows(150, 4),
        (right, rd) in rows(150, 4),
        lower in 0i64..5_000,
        upper in 0i64..5_000,
        kind in prop::sample::select(vec!["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]),
        batch in 1usize..64,
    ) {
        let on = format!("a.k = b.k AND b.ts BETWEEN a.ts - {lower} AND a.ts + {upper}");
        interval_join_case((&left, ld), (&right, rd), &on, kind, batch, false)?;
    }

    /// The same over `TIMESTAMP` columns, the band written with intervals, inclusive or
    /// strict: the band then decides the whole condition, checked on the times in
    /// milliseconds the join already has (no filter evaluated; `TimeBand::exact`).
    #[test]
    fn interval_joins_on_timestamps(
        (left, ld) in rows(150, 4),
        (right, rd) in rows(150, 4),
        lower in 0i64..5_000,
        upper in 0i64..5_000,
        strict in any::<bool>(),
        kind in prop::sample::select(vec!["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]),
        batch in 1usize..64,
    ) {
        let (ge, le) = if strict { (">", "<") } else { (">=", "<=") };
        let on = format!("a.k = b.k AND b.ts {ge} a.ts - INTERVAL '{lower}' MILLISECOND AND b.ts {le} a.ts + INTERVAL '{upper}' MILLISECOND");
        interval_join_case((&left, ld), (&right, rd), &on, kind, batch, true)?;
    }

    /// `EXISTS` / `NOT EXISTS` with a time band: DataFusion plans semi and anti joins, each
    /// row of `a` out once (at its first partner, or once its band has passed without one).
    #[test]
    fn semi_and_anti_interval_joins(
        (left, ld) in rows(150, 4),
        (right, rd) in rows(150, 4),
        lower in 0i64..5_000,
        upper in 0i64..5_000,
        exists in prop::sample::select(vec!["EXISTS", "NOT EXISTS"]),
        batch in 1usize..64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (lp, rp) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        write(&lp, &left);
        write(&rp, &right);
        let cond = format!("{exists} (SELECT 1 FROM b WHERE b.k = a.k AND b.ts BETWEEN a.ts - {lower} AND a.ts + {upper})");
        let sql = format!("SELECT a.k, a.ts, a.amount FROM a WHERE {cond} WITH ({}, {})", source("a", &lp, ld, batch), source("b", &rp, rd, batch));
        let batch_sql = format!("SELECT a.k, a.ts, a.amount FROM a WHERE {cond}");
        compare(&sql, &batch_sql, &[("a", &lp), ("b", &rp)])?;
    }

    /// Windows of windows (Nexmark q5's shape): a `HOP` count per key, the largest count of
    /// each window (a `GROUP BY window_start, window_end` over the first), and the counts that
    /// reach it (a semi join on the window); or the sum of each `TUMBLE` window's counts keyed
    /// on `window_end` alone.
    #[test]
    fn windows_of_windows(
        (data, disorder) in rows(200, 4),
        slide in 1i64..5_000,
        factor in 1i64..4,
        hop in any::<bool>(),
        batch in 1usize..64,
    ) {
        let size = if hop { slide * factor } else { slide };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        write(&path, &data);
        let window = if hop { format!("HOP(ts, INTERVAL '{slide} milliseconds', INTERVAL '{size} milliseconds')") } else { format!("TUMBLE(ts, INTERVAL '{size} milliseconds')") };
        let per_key = format!("per_key AS (SELECT k, COUNT(*) AS n, window_start, window_end FROM s GROUP BY {window}, k)");
        let back: Vec<String> = (0..size / slide).map(|i| format!("({i})")).collect();
        let start = format!("(ts / {slide} * {slide} - w.i * {slide})");
        let per_key_batch = format!("per_key AS (SELECT k, COUNT(*) AS n, {start} AS ws FROM s CROSS JOIN (VALUES {}) AS w(i) GROUP BY k, 3)", back.join(", "));
        let (sql, batch_sql) = if hop {
            (
                format!(
                    "WITH {per_key} SELECT a.k, a.n, a.window_start FROM per_key a \
                     JOIN (SELECT MAX(n) AS maxn, window_start, window_end FROM per_key GROUP BY window_start, window_end) m \
                     ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.n >= m.maxn WITH ({})",
                    source("s", &path, disorder, batch)
                ),
                format!(
                    "WITH {per_key_batch}, m AS (SELECT ws, MAX(n) AS maxn FROM per_key GROUP BY ws) \
                     SELECT a.k, a.n, to_timestamp_millis(a.ws) AS window_start FROM per_key a JOIN m ON a.ws = m.ws AND a.n >= m.maxn"
                ),
            )
        } else {
            (
                format!("WITH {per_key} SELECT window_end, SUM(n) AS total, COUNT(*) AS keys FROM per_key GROUP BY window_end WITH ({})", source("s", &path, disorder, batch)),
                format!("WITH {per_key_batch} SELECT to_timestamp_millis(ws + {size}) AS window_end, SUM(n) AS total, COUNT(*) AS keys FROM per_key GROUP BY ws"),
            )
        };
        let plan = explained(&sql);
        prop_assert!(plan.contains("WindowAggregateExec: window=the input's windows"), "not a window of windows:\n{}", plan);
        prop_assert!(!hop || plan.contains("IntervalJoinExec: join_type=LeftSemi"), "not a semi join on the window:\n{}", plan);
        compare(&sql, &batch_sql, &[("s", &path)])?;
    }
}
