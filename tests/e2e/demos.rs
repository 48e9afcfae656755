//! The README's demo pipelines run as written (from a fresh directory holding `data/`): the
//! event-time demo's outputs equal DataFusion's batch windows and join; the enrichment demo
//! writes its three outputs (its queries are compared with batch in `differential.rs`).

use std::path::Path;

use crate::common::*;

fn run_demo(dir: &Path, file: &str) -> Run {
    std::os::unix::fs::symlink(repo().join("data"), dir.join("data")).ok();
    let sql = std::fs::read_to_string(repo().join("configs").join(file)).unwrap();
    run_sql(dir, &sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_time_demo_matches_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_demo(tmp.path(), "event_time_pipeline.sql");
    assert_ok(&run);
    let ctx = batch_context(tmp.path()).await;
    let weekly = batch_rows(
        &ctx,
        "SELECT to_timestamp_millis(CAST(to_unixtime(CAST(order_ts AS TIMESTAMP)) AS BIGINT) / 604800 * 604800000) AS window_start, \
         to_timestamp_millis(CAST(to_unixtime(CAST(order_ts AS TIMESTAMP)) AS BIGINT) / 604800 * 604800000 + 604800000) AS window_end, \
         status, COUNT(*) AS orders, SUM(amount) AS revenue FROM orders GROUP BY 1, 2, 3",
    )
    .await;
    assert_same_rows("weekly totals", &file_rows(&tmp.path().join("out/weekly_totals.jsonl")), &weekly);
    let shipped = batch_rows(
        &ctx,
        "SELECT o.order_id, o.order_ts, s.shipped_ts, s.carrier FROM orders o LEFT JOIN shipments s ON o.order_id = s.order_id \
         AND CAST(s.shipped_ts AS TIMESTAMP) BETWEEN CAST(o.order_ts AS TIMESTAMP) - INTERVAL '1 hour' AND CAST(o.order_ts AS TIMESTAMP) + INTERVAL '1 hour'",
    )
    .await;
    assert_same_rows("shipped within an hour", &file_rows(&tmp.path().join("out/shipped_within_an_hour.jsonl")), &shipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrichment_demo_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_demo(tmp.path(), "ecommerce_pipeline.sql");
    assert_ok(&run);
    assert!(run.stderr.contains("job 'enriched_orders' done"), "{}", run.stderr);
    let jsonl = file_rows(&tmp.path().join("out/enriched_orders.jsonl"));
    let csv_lines = std::fs::read_to_string(tmp.path().join("out/enriched_orders.csv")).unwrap().lines().count();
    assert!(jsonl.len() > 100, "{} rows", jsonl.len());
    assert_eq!(csv_lines, jsonl.len() + 1, "the CSV sink got the same rows, under one header");
    assert!(tmp.path().join("out/customer_totals.csv").exists());
}
