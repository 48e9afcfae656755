//! The README's demo pipelines run as written (from a fresh directory holding `data/`): the
//! outputs of both equal what DataFusion computes in batch for the same queries.

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
async fn the_enrichment_demo_matches_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_demo(tmp.path(), "ecommerce_pipeline.sql");
    assert_ok(&run);
    // each statement's own query (as the engine parsed it), run in batch by DataFusion
    let sql = std::fs::read_to_string(repo().join("configs/ecommerce_pipeline.sql")).unwrap();
    let statements = ferris_engine::sql::parse_sql(&sql).unwrap();
    let query = |name: &str| statements.iter().find(|s| s.name() == Some(name)).unwrap().query.to_string();
    let ctx = batch_context(tmp.path()).await;
    let enriched = batch_rows(&ctx, &query("enriched_orders")).await;
    assert!(enriched.len() > 100, "{} rows", enriched.len());
    assert_same_rows("enriched_orders (JSON Lines sink)", &file_rows(&tmp.path().join("out/enriched_orders.jsonl")), &enriched);
    // the CSV sink got the same rows, read back by DataFusion's CSV reader
    let read_back = |file: &str, table: &str| {
        let ctx = ctx.clone();
        let path = tmp.path().join("out").join(file);
        let table = table.to_string();
        async move {
            ctx.register_csv(table.as_str(), path.to_str().unwrap(), datafusion::prelude::CsvReadOptions::new()).await.unwrap();
            batch_rows(&ctx, &format!("SELECT * FROM {table}")).await
        }
    };
    assert_same_rows("enriched_orders (CSV sink)", &read_back("enriched_orders.csv", "enriched_csv").await, &enriched);
    let totals = batch_rows(&ctx, &query("customer_totals")).await;
    assert_same_rows("customer_totals (CSV sink)", &read_back("customer_totals.csv", "totals_csv").await, &totals);
}
