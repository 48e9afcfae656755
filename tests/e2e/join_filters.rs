//! Hash joins' filters pushed into Parquet reads: a bounded job's probe side reads its file on
//! its own once the join has read its build side, decoding the join key first and the other
//! columns only for the rows whose key the build side has (Nexmark q7's bids at a maximum). A
//! probe side of numbers alone, read by no other scan, is read ahead of the join instead, while
//! it builds its table (Nexmark q3's auctions). Every query gives DataFusion's batch answer over
//! the same files, selective or not, with an empty build side, a LIMIT and an outer join; the
//! rows read are counted once.

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::common::*;

/// Rows of `t`.
const ROWS: i64 = 120_000;

/// (job, query): each reads `t` (ROWS rows, 12 row groups), `s` (1 000 keys) or `m` (a fifth
/// of ROWS, 100-byte strings, `k4` = 4 `k` + 1).
const CASES: &[(&str, &str)] = &[
    // a shared read: the probe reads `t` again, keeping the rows at their key's maximum
    ("max_per_key", "SELECT a.id, a.k, a.price FROM t a JOIN (SELECT k, MAX(price) AS m FROM t GROUP BY k) m ON a.k = m.k AND a.price = m.m"),
    // the build side keeps ten keys of a thousand
    // (numbers alone from `t`: read ahead of the join, not again with its filter)
    ("ten_keys", "SELECT t.id, t.price, s.name FROM t JOIN s ON t.k = s.k WHERE s.k < 10"),
    // (text from `t`: read again, with the join's filter)
    ("ten_keys_text", "SELECT t.id, t.tag, s.name FROM t JOIN s ON t.k = s.k WHERE s.k < 10"),
    // the join met its LIMIT long before `t` ends: the read ahead stops with it
    ("join_limit", "SELECT COUNT(*) AS n FROM (SELECT t.id FROM t JOIN s ON t.k = s.k WHERE s.k < 10 LIMIT 7) x"),
    // a self-join on a rare tag: the probe keeps the rows next to one
    ("next_to_rare", "SELECT a.id, a.tag, b.id AS rare FROM t a JOIN (SELECT id FROM t WHERE tag = 'rare') b ON a.id = b.id + 1"),
    // no row on the build side: nothing to read, and the job ends
    ("empty_build", "SELECT t.id FROM t JOIN s ON t.k = s.k WHERE s.name = 'nobody'"),
    // every key is on the build side: the filter would drop nothing and is not used
    ("every_key", "SELECT t.id, s.name FROM t JOIN s ON t.k = s.k"),
    // the outer side keeps its rows
    ("outer", "SELECT s.k, s.name, t.id FROM s LEFT JOIN t ON t.k = s.k AND t.price < 300"),
    // `s` is a hundredth of `t`: its table is built whole and `t` probed as it is read, for
    // every kind of join, `s` on either side (each unmatched row of `s` once, though both tasks
    // probe it)
    ("full_outer", "SELECT s.k, s.name, t.id FROM s FULL OUTER JOIN t ON t.k = s.k AND t.price < 300 AND s.k < 500"),
    ("right_outer", "SELECT s.k, t.id FROM s RIGHT JOIN t ON t.k = s.k AND s.k % 3 = 0"),
    ("probe_outer", "SELECT t.id, s.name FROM t LEFT JOIN s ON t.k = s.k AND s.k < 100"),
    ("semi", "SELECT t.id FROM t WHERE t.k IN (SELECT k FROM s WHERE name LIKE 'name-1%')"),
    ("anti", "SELECT t.id FROM t WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.k = t.k AND s.k < 900)"),
    ("unmatched_small", "SELECT s.k FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.k = s.k AND t.price < 50)"),
    // `m`, a fifth of `t` in rows and megabytes wide: built whole, `m` on either side, with `t`
    // probed as it is read (DataFusion alone does so for the inner joins, and hashes both sides
    // into partitions for the outer and anti joins)
    ("wide_small_right", "SELECT t.id, m.pad FROM t JOIN m ON t.id = m.k4"),
    ("wide_small_left", "SELECT m.pad, t.id FROM m JOIN t ON t.id = m.k4 WHERE t.price < 90000"),
    ("wide_full_outer", "SELECT m.k, m.pad, t.id FROM m FULL OUTER JOIN t ON t.id = m.k4 AND t.price < 50000"),
    ("wide_right_outer", "SELECT m.pad, t.id FROM m RIGHT JOIN t ON t.id = m.k4 AND m.k % 2 = 0"),
    ("wide_probe_outer", "SELECT t.id, m.pad FROM t LEFT JOIN m ON t.id = m.k4 AND m.k % 3 = 0"),
    ("wide_anti", "SELECT m.k, m.pad FROM m WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.id = m.k4 AND t.price < 50000)"),
    // operators whose dynamic filters are complete only once they have read their input (a
    // TopK), or never (MIN/MAX): a scan must not wait for them
    ("top_n", "SELECT id, price FROM t ORDER BY price DESC, id LIMIT 10"),
    ("min_max", "SELECT MIN(price) AS lo, MAX(price) AS hi FROM t"),
    ("at_the_maximum", "SELECT id, price FROM t WHERE price = (SELECT MAX(price) FROM t)"),
    ("join_top_n", "SELECT t.id, t.price FROM t JOIN s ON t.k = s.k WHERE s.k < 10 ORDER BY t.price, t.id LIMIT 5"),
];

/// Runs `ferris-sql ARGS` in `dir`, killed after two minutes (a scan waiting for a filter that
/// never comes would hang the job).
fn ferris_bounded(dir: &std::path::Path, args: &[&str]) -> Run {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferris-sql"));
    command.args(args).current_dir(dir).env("RUST_LOG", "warn");
    crate::common::finish(crate::common::output_limited(&mut command, std::time::Duration::from_secs(120)))
}

/// Writes `t` and `s` as Parquet files into `dir` with DataFusion.
async fn write_tables(dir: &std::path::Path) {
    let ctx = SessionContext::new();
    ctx.sql("SET datafusion.execution.parquet.max_row_group_size = 10000").await.unwrap().collect().await.unwrap();
    let t = format!(
        "COPY (SELECT value AS id, value % 1000 AS k, (value * 7919) % 100003 AS price, \
         CASE WHEN value % 997 = 0 THEN 'rare' ELSE 'common' END AS tag FROM range({ROWS})) TO '{}' STORED AS PARQUET",
        dir.join("t.parquet").display()
    );
    let s = format!(
        "COPY (SELECT value AS k, concat('name-', CAST(value AS VARCHAR)) AS name FROM range(1000)) TO '{}' STORED AS PARQUET",
        dir.join("s.parquet").display()
    );
    let m = format!(
        "COPY (SELECT value AS k, value * 4 + 1 AS k4, concat(repeat('x', 100), CAST(value AS VARCHAR)) AS pad FROM range({})) TO '{}' STORED AS PARQUET",
        ROWS / 5,
        dir.join("m.parquet").display()
    );
    for sql in [t, s, m] {
        ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    }
}

fn sources(dir: &std::path::Path) -> String {
    format!(
        "'t.type' = 'file_source', 't.path' = '{0}/t.parquet', 's.type' = 'file_source', 's.path' = '{0}/s.parquet', 'm.type' = 'file_source', 'm.path' = '{0}/m.parquet'",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_read_with_the_joins_filter_gives_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path()).await;
    let job = file_sink_jobs(tmp.path(), &sources(tmp.path()), CASES.iter().copied());
    let run = ferris_bounded(tmp.path(), &["run", job.to_str().unwrap(), "--no-progress", "--report-json"]);
    assert_ok(&run);

    let ctx = SessionContext::new();
    for table in ["t", "s", "m"] {
        ctx.register_parquet(table, tmp.path().join(format!("{table}.parquet")).to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    }
    for (name, query) in CASES {
        // a sink given no row writes no file
        let out = tmp.path().join(format!("{name}.jsonl"));
        let got = if out.exists() { file_rows(&out) } else { Vec::new() };
        let want = batch_rows(&ctx, query).await;
        assert!(!want.is_empty() || *name == "empty_build", "{name}: the batch answer is empty, the case tests nothing");
        assert_same_rows(name, &got, &want);
    }
    assert_eq!(file_rows(&tmp.path().join("max_per_key.jsonl")).len(), 1000, "one row per key (no price repeats within a key)");

    // every job counts each file's rows once, whether its probe read the file again or not
    // (but for an empty build side: `s`'s only row group is skipped by its statistics, and the
    // join then reads no further than the first batches of `t`; and for a LIMIT)
    let reports: Vec<serde_json::Value> = run.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for (name, _) in CASES.iter().filter(|(name, _)| !["empty_build", "join_limit"].contains(name)) {
        let report = reports.iter().find(|r| r["name"] == *name).unwrap_or_else(|| panic!("no report for {name}: {}", run.stdout));
        for source in report["sources"].as_array().unwrap() {
            let want = match source["name"].as_str() {
                Some("t") => ROWS,
                Some("m") => ROWS / 5,
                _ => 1000,
            };
            assert_eq!(source["records"].as_i64(), Some(want), "{name}: rows read of {}", source["name"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_probe_reading_with_the_joins_filter() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path()).await;
    let explain = |query: &str, with: &str| {
        let job = tmp.path().join("job.sql");
        std::fs::write(&job, format!("CREATE STREAM j AS {query} INTO out WITH ({}, 'out.type' = 'blackhole'{with});", sources(tmp.path()))).unwrap();
        let run = ferris_bounded(tmp.path(), &["explain", job.to_str().unwrap()]);
        assert_ok(&run);
        run.stdout
    };
    let query = CASES[0].1;
    let plan = explain(query, "");
    assert!(plan.contains("read again with the join's filter: DynamicFilter"), "{plan}");
    // a probe side of numbers alone is read ahead of the join; one with text, again
    let case = |name: &str| CASES.iter().find(|(n, _)| *n == name).map(|(_, q)| *q).unwrap_or_default();
    let plan = explain(case("ten_keys"), "");
    assert!(plan.contains("read ahead of the join: up to") && !plan.contains("read again"), "{plan}");
    let plan = explain(case("ten_keys_text"), "");
    assert!(plan.contains("read again with the join's filter") && !plan.contains("read ahead"), "{plan}");
    // a job taking checkpoints records every read's positions: its scans share one read
    let plan = explain(query, ", 'checkpoint.interval' = '1s'");
    assert!(!plan.contains("read again"), "{plan}");
    // `s`'s 1 000 rows against `t`'s 120 000 (the files' footers): `s` is collected whole and
    // `t` is probed where it is read, not hashed into partitions
    // `m`'s 24 000 rows of 100-byte strings against `t`'s 120 000 (the files' footers): `m` is
    // collected whole and `t` is probed where it is read, not hashed into partitions
    for (name, query) in CASES.iter().filter(|(name, _)| name.starts_with("wide_")) {
        let plan = explain(query, "");
        assert!(plan.contains("HashJoinExec: mode=CollectLeft") && !plan.contains("RepartitionExec: partitioning=Hash"), "{name}: {plan}");
    }
    // with a side not that much smaller, both are partitioned
    let plan = explain("SELECT a.id, b.price FROM t a JOIN t b ON a.k = b.id", "");
    assert!(plan.contains("HashJoinExec: mode=Partitioned"), "{plan}");
}

/// `WITH RECURSIVE` reads its sources again at each step, which a job does not do: refused with
/// a message that says so, not answered with the first steps only.
#[test]
fn with_recursive_over_a_source_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let job = tmp.path().join("job.sql");
    let query = "WITH RECURSIVE r(id, depth) AS (SELECT id, 0 FROM t WHERE id = 7 UNION ALL SELECT t.id, r.depth + 1 FROM r JOIN t ON t.id = r.id * 3 WHERE r.depth < 6) SELECT id, depth FROM r";
    std::fs::write(
        &job,
        format!(
            "CREATE STREAM j AS {query} INTO out WITH ('t.type' = 'file_source', 't.path' = '{}', 't.schema' = 'id BIGINT', 'out.type' = 'stdout');",
            data("orders.jsonl")
        ),
    )
    .unwrap();
    let run = ferris_bounded(tmp.path(), &["run", job.to_str().unwrap(), "--no-progress"]);
    assert_ne!(run.status, 0, "{}", run.stdout);
    assert!(run.stderr.contains("WITH RECURSIVE cannot run over sources"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "rows written: {}", run.stdout);
}
