//! An expression that a filter computes for every row and the projection above it computes
//! again is computed once, below the filter (Nexmark q21's `REGEXP_EXTRACT` in its WHERE and
//! its SELECT). Every query gives DataFusion's batch answer over the same file; `explain`
//! shows the shared column where the rule applies, and none where the expression is evaluated
//! for some rows only (moving it would evaluate it where the query does not) or is volatile.

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::common::*;

/// Rows of `b`.
const ROWS: i64 = 50_000;

/// The pattern of Nexmark q21.
const PATTERN: &str = "'(&|^)channel_id=([^&]*)'";

/// (job, our query, DataFusion's batch query where it differs: `REGEXP_EXTRACT(x, p, 2)` is
/// DataFusion's `regexp_match(x, p)[2]`).
fn cases() -> Vec<(&'static str, String, Option<String>)> {
    let extract = format!("REGEXP_EXTRACT(url, {PATTERN}, 2)");
    let matched = format!("regexp_match(url, {PATTERN})[2]");
    let q21 = |e: &str| {
        format!(
            "SELECT id, channel, CASE WHEN LOWER(channel) = 'apple' THEN '0' WHEN LOWER(channel) = 'google' THEN '1' ELSE {e} END AS channel_id \
             FROM b WHERE {e} IS NOT NULL OR LOWER(channel) IN ('apple', 'google')"
        )
    };
    let grouped = |e: &str| format!("SELECT {e} AS channel_id, COUNT(*) AS n FROM b WHERE {e} <> '' GROUP BY {e}");
    let selected = |e: &str| format!("SELECT id, {e} AS channel_id, length({e}) AS len FROM b WHERE {e} < '3'");
    vec![
        // q21: the match in the WHERE's left side, again in the CASE's last branch
        ("q21_like", q21(&extract), Some(q21(&matched))),
        // the whole predicate, selected as it is and inside another function
        ("selected", selected(&extract), Some(selected(&matched))),
        ("like", "SELECT id, upper(channel) AS u, length(upper(channel)) AS n FROM b WHERE upper(channel) LIKE 'CHAN%'".into(), None),
        // the right side of AND (DataFusion puts the cheaper condition first): evaluated only
        // where the left one leaves the row undecided, and not moved
        ("and_right", "SELECT id, upper(channel) AS u FROM b WHERE upper(channel) LIKE 'CHAN%' AND id % 2 = 0".into(), None),
        // a function of a function: both computed once
        ("nested", "SELECT id, concat(channel, '!') AS c, length(concat(channel, '!')) AS n FROM b WHERE length(concat(channel, '!')) > 5".into(), None),
        // the cast fails on the letters: it is evaluated only for the rows CASE lets through,
        // and must not be moved below the filter
        (
            "guarded",
            "SELECT id, CAST(substr(s, 1, 3) AS BIGINT) + 1 AS n FROM b WHERE CASE WHEN s < 'a' THEN CAST(substr(s, 1, 3) AS BIGINT) ELSE 0 END > 100".into(),
            None,
        ),
        // the CASE's operand is NULL for the letters: its first condition, the cast, is not
        // evaluated for them, and must not be moved below the filter
        (
            "operand_guard",
            "SELECT id, CAST(substr(s, 1, 3) AS BIGINT) AS n FROM b WHERE CASE (CASE WHEN s < 'a' THEN id END) WHEN CAST(substr(s, 1, 3) AS BIGINT) THEN 'same' ELSE 'other' END = 'same'".into(),
            None,
        ),
        // the filter reads a column the projection does not (`s`): DataFusion gives it a
        // projection of its own, which the shared column joins
        ("filter_projection", "SELECT id, upper(channel) AS u FROM b WHERE concat(upper(channel), s) LIKE 'CHAN%'".into(), None),
        // computed in the WHERE only: nothing to share
        ("where_only", "SELECT id, channel FROM b WHERE lower(channel) = 'baidu'".into(), None),
        // an aggregate above the filter
        ("grouped", grouped(&extract), Some(grouped(&matched))),
    ]
}

/// Writes `b` as Parquet into `dir` with DataFusion: URLs with the parameter after `&`, at the
/// start, after another letter (no match) or empty; channels of mixed case, and NULL; `s` a
/// number or letters.
async fn write_table(dir: &std::path::Path) {
    let ctx = SessionContext::new();
    ctx.sql("SET datafusion.execution.parquet.max_row_group_size = 5000").await.unwrap().collect().await.unwrap();
    let b = format!(
        "COPY (SELECT value AS id, \
           CASE value % 5 WHEN 0 THEN 'Apple' WHEN 1 THEN 'google' WHEN 2 THEN 'Baidu' WHEN 3 THEN concat('chan-', CAST(value % 11 AS VARCHAR)) ELSE NULL END AS channel, \
           CASE value % 4 WHEN 0 THEN concat('https://n.com/?a=1&channel_id=', CAST(value % 50 AS VARCHAR), '&b=2') \
                          WHEN 1 THEN concat('channel_id=', CAST(value % 7 AS VARCHAR)) \
                          WHEN 2 THEN 'https://n.com/?xchannel_id=9' \
                          ELSE 'https://n.com/?a=1&channel_id=' END AS url, \
           CASE WHEN value % 3 = 0 THEN CAST(value % 1000 AS VARCHAR) ELSE concat('x', CAST(value AS VARCHAR)) END AS s \
         FROM range({ROWS})) TO '{}' STORED AS PARQUET",
        dir.join("b.parquet").display()
    );
    ctx.sql(&b).await.unwrap().collect().await.unwrap();
}

fn source(dir: &std::path::Path) -> String {
    format!("'b.type' = 'file_source', 'b.path' = '{}/b.parquet'", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_shared_by_a_filter_and_its_projection_gives_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    write_table(tmp.path()).await;
    let cases = cases();
    let job = file_sink_jobs(tmp.path(), &source(tmp.path()), cases.iter().map(|(name, query, _)| (*name, query.as_str())));
    let run = ferris(tmp.path(), &["run", job.to_str().unwrap(), "--no-progress"]);
    assert_ok(&run);

    let ctx = SessionContext::new();
    ctx.register_parquet("b", tmp.path().join("b.parquet").to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    for (name, query, batch) in &cases {
        let got = file_rows(&tmp.path().join(format!("{name}.jsonl")));
        let want = batch_rows(&ctx, batch.as_deref().unwrap_or(query)).await;
        assert!(want.len() > 10, "{name}: the batch answer has {} rows, the case tests little", want.len());
        assert_same_rows(name, &got, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_shared_column_only_where_the_filter_computes_it_for_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    write_table(tmp.path()).await;
    let explain = |query: &str| {
        let job = tmp.path().join("job.sql");
        std::fs::write(&job, format!("CREATE STREAM j AS {query} INTO out WITH ({}, 'out.type' = 'blackhole');", source(tmp.path()))).unwrap();
        let run = ferris(tmp.path(), &["explain", job.to_str().unwrap()]);
        assert_ok(&run);
        run.stdout
    };
    let cases = cases();
    let query = |name: &str| cases.iter().find(|(n, _, _)| *n == name).map(|(_, q, _)| q.clone()).unwrap();
    // the match is computed once, below the filter
    let plan = explain(&query("q21_like"));
    assert!(
        plan.contains("FilterExec: __shared_0@") && plan.contains(&format!("regexp_extract(url@2, {}, 2) as __shared_0", PATTERN.trim_matches('\''))),
        "{plan}"
    );
    assert!(plan.contains("ELSE __shared_0@"), "{plan}");
    for name in ["selected", "like", "nested", "filter_projection"] {
        let plan = explain(&query(name));
        let filter = plan.lines().find(|l| l.trim_start().starts_with("FilterExec:")).unwrap();
        assert!(filter.contains("__shared_0@") && plan.contains(" as __shared_0]"), "{name}: {plan}");
    }
    // evaluated for some rows only, computed in the WHERE alone, or volatile: left where it is
    // the filter's own projection keeps the shared column and leaves out `s`
    let plan = explain(&query("filter_projection"));
    let filter = plan.lines().find(|l| l.trim_start().starts_with("FilterExec:")).unwrap();
    assert!(filter.contains("projection=[id@0, __shared_0@"), "{plan}");
    for name in ["guarded", "operand_guard", "where_only", "and_right"] {
        let plan = explain(&query(name));
        assert!(!plan.contains("__shared"), "{name}: {plan}");
    }
    let plan = explain("SELECT id, random() AS r FROM b WHERE random() < 2");
    assert!(!plan.contains("__shared"), "{plan}");
    // the right side of OR is evaluated for the rows the left leaves undecided
    let plan = explain("SELECT id, upper(channel) AS u FROM b WHERE id < 10 OR upper(channel) = 'APPLE'");
    assert!(!plan.contains("__shared"), "{plan}");
}
