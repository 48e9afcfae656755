//! Differential tests: each query runs through `ferris-sql run` (file sources → DataFusion
//! streaming plan → file sink) and, separately, in batch through DataFusion on the same files.
//! Every output row must match.

use crate::common::*;

/// (name, query) pairs covering the guide's stateless SQL and enrichment joins.
const CASES: &[(&str, &str)] = &[
    ("filter_project_case", "SELECT order_id, amount * 2 AS double_amount, CASE WHEN amount > 1000 THEN 'big' WHEN amount > 100 THEN 'medium' ELSE 'small' END AS size FROM orders WHERE status IN ('PENDING', 'SHIPPED') AND quantity > 0"),
    ("coalesce_is_null", "SELECT order_id, COALESCE(coupon, 'none') AS coupon, coupon IS NULL AS no_coupon, coupon IS NOT NULL AS has_coupon FROM orders"),
    ("abs_and_comparisons", "SELECT order_id, ABS(quantity - 3) AS distance, order_date FROM orders WHERE order_date >= '2024-02-01' AND CAST(order_ts AS TIMESTAMP) < TIMESTAMP '2024-03-10 00:00:00' AND status NOT IN ('CANCELLED')"),
    ("byte_length", "SELECT customer_id, BYTE_LENGTH(customer_name) AS name_bytes, UPPER(customer_name) AS shout FROM customers WHERE BYTE_LENGTH(email) > 0"),
    ("three_way_inner", "SELECT o.order_id, c.customer_name, p.product_name, o.quantity * p.unit_price AS total_value FROM orders o INNER JOIN customers c ON o.customer_id = c.customer_id INNER JOIN products p ON o.product_id = p.product_id WHERE o.order_date >= '2024-01-15'"),
    ("left_join_coalesce", "SELECT o.order_id, o.amount, COALESCE(c.customer_name, 'Unknown') AS customer_name, COALESCE(c.customer_tier, 'Standard') AS tier FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id"),
    ("full_outer", "SELECT COALESCE(o.customer_id, c.customer_id) AS customer_id, o.order_id, o.amount, c.customer_name FROM orders o FULL OUTER JOIN customers c ON o.customer_id = c.customer_id"),
    ("four_way_fraud_style", "SELECT o.order_id, o.amount, c.risk_score, p.category, r.region, CASE WHEN o.amount > 1500 AND r.region IS NULL THEN 'REVIEW' WHEN c.risk_score > 0.8 THEN 'CUSTOMER_RISK' ELSE 'APPROVE' END AS recommendation FROM orders o INNER JOIN customers c ON o.customer_id = c.customer_id INNER JOIN products p ON o.product_id = p.product_id LEFT JOIN regions r ON c.country = r.country WHERE o.amount > 0"),
    ("group_by_final", "SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS smallest, AVG(quantity) AS avg_qty FROM orders GROUP BY customer_id HAVING COUNT(*) > 5"),
    ("cte_and_subquery", "WITH big AS (SELECT * FROM orders WHERE amount > 500) SELECT b.order_id, b.amount FROM big b WHERE b.customer_id IN (SELECT customer_id FROM customers WHERE customer_tier = 'GOLD')"),
    ("distinct_union", "SELECT DISTINCT status FROM orders UNION ALL SELECT customer_tier FROM customers WHERE customer_id < 3"),
    ("self_join_aggregate", "SELECT a.order_id, a.customer_id, m.biggest FROM orders a JOIN (SELECT customer_id, MAX(amount) AS biggest FROM orders GROUP BY customer_id) m ON a.customer_id = m.customer_id AND a.amount = m.biggest"),
    ("self_union_all", "SELECT order_id, status AS tag FROM orders UNION ALL SELECT order_id, 'big' AS tag FROM orders WHERE amount > 500 UNION ALL SELECT customer_id, 'all' FROM orders"),
    ("self_join_all_columns", "SELECT a.*, b.order_id AS next_id FROM orders a LEFT JOIN orders b ON b.order_id = a.order_id + 1 AND b.customer_id = a.customer_id"),
    // intervals of a fixed length are added as durations (planner::fixed_intervals); months,
    // and days on a timestamp with a zone, stay intervals
    ("fixed_intervals", "SELECT order_id, CAST(order_ts AS TIMESTAMP) + INTERVAL '90' MINUTE AS later, CAST(order_ts AS TIMESTAMP) - INTERVAL '1' DAY AS day_before, INTERVAL '2' HOUR + CAST(order_ts AS TIMESTAMP) AS two_hours_on, CAST(order_ts AS TIMESTAMP) + INTERVAL '1' MONTH AS next_month, CAST(order_ts AS TIMESTAMP) + INTERVAL '1.5' SECOND AS and_a_half, CAST(CAST(order_ts AS TIMESTAMP) AT TIME ZONE 'Europe/Berlin' + INTERVAL '1' DAY AS VARCHAR) AS berlin_next_day, CAST(CAST(order_ts AS TIMESTAMP) AT TIME ZONE 'Europe/Berlin' - INTERVAL '36' HOUR AS VARCHAR) AS berlin_earlier FROM orders WHERE CAST(order_ts AS TIMESTAMP) - INTERVAL '10' DAY < TIMESTAMP '2024-03-01 00:00:00'"),
    ("current_timestamp_column", "SELECT order_id, CURRENT_TIMESTAMP IS NOT NULL AS stamped FROM orders WHERE order_id <= 10"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_output_equals_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sql = String::new();
    for (name, query) in CASES {
        let sink = format!("{name}_out");
        sql.push_str(&format!(
            "CREATE STREAM {name} AS {query}\nINTO {sink}\nWITH (\n{},\n'{sink}.type' = 'file_sink', '{sink}.path' = '{}/{name}.jsonl', 'batch.size' = '37'\n);\n\n",
            sources_for(query),
            tmp.path().display()
        ));
    }
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let ctx = batch_context(tmp.path()).await;
    for (name, query) in CASES {
        let got = file_rows(&tmp.path().join(format!("{name}.jsonl")));
        let want = batch_rows(&ctx, query).await;
        assert!(!want.is_empty(), "{name}: the batch answer is empty, the case tests nothing");
        assert_same_rows(name, &got, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_interval_bounds_the_join_by_event_time() {
    let tmp = tempfile::tempdir().unwrap();
    let query = "SELECT o.order_id, s.shipment_id, s.carrier FROM orders o INNER JOIN shipments s ON o.order_id = s.order_id WITHIN INTERVAL '30' MINUTES";
    let sql = format!(
        "CREATE STREAM shipped AS {query} INTO out WITH ({}, 'orders.event_time' = 'order_ts', 'shipments.event_time' = 'shipped_ts', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        sources_for(query),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let got = file_rows(&tmp.path().join("out.jsonl"));
    let ctx = batch_context(tmp.path()).await;
    let want = batch_rows(
        &ctx,
        "SELECT o.order_id, s.shipment_id, s.carrier FROM orders o JOIN shipments s ON o.order_id = s.order_id \
         AND CAST(s.shipped_ts AS TIMESTAMP) BETWEEN CAST(o.order_ts AS TIMESTAMP) - INTERVAL '30 minutes' AND CAST(o.order_ts AS TIMESTAMP) + INTERVAL '30 minutes'",
    )
    .await;
    assert_same_rows("within", &got, &want);
    // Shipments 1, 3, 5, 6, 7, 8 and 10 are within 30 minutes of their order; 2, 4 and 9 are not.
    let ids: Vec<i64> = got.iter().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["shipment_id"].as_i64().unwrap()).collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, vec![1, 3, 5, 6, 7, 8, 10]);

    // Files without an event-time column: an error that names the key to set, nothing written.
    let sql = format!(
        "CREATE STREAM shipped AS {query} INTO out WITH ({}, 'orders.event_time' = 'order_ts', 'out.type' = 'file_sink', 'out.path' = '{}/plain.jsonl');",
        sources_for(query),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("set 'shipments.event_time' (one of its columns: ") && run.stderr.contains("shipped_ts"), "{}", run.stderr);
    assert!(!run.stderr.contains("'orders.event_time'"), "orders names its column: {}", run.stderr);
    assert!(!tmp.path().join("plain.jsonl").exists());
}

/// A query that names a source more than once reads it once (a shared scan): each scan gets
/// every row, and the source's count is the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_named_twice_is_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let query = "SELECT a.order_id, m.biggest FROM orders a JOIN (SELECT customer_id, MAX(amount) AS biggest FROM orders GROUP BY customer_id) m \
                 ON a.customer_id = m.customer_id AND a.amount = m.biggest UNION ALL SELECT order_id, amount FROM orders WHERE order_id <= 3";
    let sql = format!(
        "CREATE STREAM once AS {query} INTO out WITH ({}, 'orders.batch.size' = '16', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        sources_for(query),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let lines = std::fs::read_to_string(data("orders.jsonl")).unwrap().lines().count();
    let report = format!("{}{}", run.stdout, run.stderr);
    assert!(report.contains(&format!("read [orders {lines} rows]")), "orders read once: {report}");
    let ctx = batch_context(tmp.path()).await;
    let want = batch_rows(&ctx, query).await;
    assert_eq!(want.len(), 22 + 3);
    assert_same_rows("read once", &file_rows(&tmp.path().join("out.jsonl")), &want);
}

/// Queries over text of every kind, beside the cases above, for the Parquet run below:
/// string functions, aggregates of text, a distinct count and a top N keyed by text.
const TEXT_CASES: &[(&str, &str)] = &[
    ("string_functions", "SELECT order_id, UPPER(status) AS s, CHARACTER_LENGTH(status) AS l, SUBSTR(status, 2, 3) AS sub, status || '-' || CAST(order_id AS VARCHAR) AS tag, REPLACE(status, 'E', 'e') AS r, SPLIT_PART(status, 'P', 1) AS p, status LIKE '%PP%' AS pp FROM orders WHERE status LIKE '%P%' OR status = 'CANCELLED'"),
    ("text_aggregates", "SELECT c.customer_tier, COUNT(*) AS n, MAX(c.email) AS last_email, MIN(o.status) AS first_status, COUNT(DISTINCT o.status) AS statuses FROM orders o JOIN customers c ON o.customer_id = c.customer_id GROUP BY c.customer_tier"),
    ("top_two_per_status", "SELECT * FROM (SELECT order_id, status, amount, ROW_NUMBER() OVER (PARTITION BY status ORDER BY amount DESC, order_id) AS r FROM orders) WHERE r <= 2"),
    // text that the top N neither keys nor orders by: over Parquet, the keys are read first and
    // the kept rows again (top_n::read_twice); the second keyed by an expression that is NULL
    // for a third of the customers
    ("top_three_per_customer_with_text", "SELECT * FROM (SELECT order_id, customer_id, status, order_date, amount, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY amount DESC, order_id) AS r FROM orders) WHERE r <= 3"),
    // the same under a WHERE on text and on numbers, which the first read evaluates
    ("top_two_per_customer_where", "SELECT * FROM (SELECT order_id, customer_id, status, order_date, amount, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY amount DESC, order_id) AS r FROM orders WHERE status <> 'CANCELLED' AND amount > 50) WHERE r <= 2"),
    ("top_one_per_null_key_with_text", "SELECT status, order_ts, k, r FROM (SELECT *, NULLIF(customer_id % 3, 0) AS k, ROW_NUMBER() OVER (PARTITION BY NULLIF(customer_id % 3, 0) ORDER BY order_id DESC) AS r FROM orders) WHERE r = 1"),
    ("text_keyed_join_on_text", "SELECT c.customer_name, r.region FROM customers c JOIN regions r ON c.country = r.country WHERE c.customer_name > 'M'"),
];

/// The cases above over Parquet copies of the sample files. Text read from Parquet is handed
/// on as string views (`connectors/src/text_views.rs`): filters, joins on text keys, aggregates,
/// unions with literals, string functions and a top N work on views, and the sinks get plain
/// text. Every row must equal the batch answer over the original files, and a Parquet sink's
/// text columns must be plain strings, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_text_read_as_views_gives_the_batch_answer() {
    use datafusion::dataframe::DataFrameWriteOptions;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = batch_context(tmp.path()).await;
    let tables = ["orders", "customers", "products", "regions", "shipments"];
    for t in tables {
        let path = tmp.path().join(format!("{t}.parquet"));
        ctx.table(t).await.unwrap().write_parquet(path.to_str().unwrap(), DataFrameWriteOptions::new().with_single_file_output(true), None).await.unwrap();
    }
    let sources = |query: &str| {
        let mut with: Vec<String> = tables
            .iter()
            .filter(|t| mentions(query, t))
            .map(|t| format!("'{t}.type' = 'file_source', '{t}.path' = '{}/{t}.parquet'", tmp.path().display()))
            .collect();
        if mentions(query, "within") {
            with.push("'orders.event_time' = 'order_ts', 'shipments.event_time' = 'shipped_ts'".into());
        }
        with.join(",\n")
    };
    let within =
        ("within", "SELECT o.order_id, s.shipment_id, s.carrier FROM orders o INNER JOIN shipments s ON o.order_id = s.order_id WITHIN INTERVAL '30' MINUTES");
    let cases: Vec<(&str, &str)> = CASES.iter().chain(TEXT_CASES).copied().chain([within]).collect();
    let mut sql = String::new();
    for (name, query) in &cases {
        sql.push_str(&format!(
            "CREATE STREAM {name} AS {query}\nINTO {name}_out\nWITH (\n{},\n'{name}_out.type' = 'file_sink', '{name}_out.path' = '{}/{name}.jsonl', 'batch.size' = '37'\n);\n\n",
            sources(query),
            tmp.path().display()
        ));
    }
    // the same text into a Parquet file and a CSV file
    let query = "SELECT order_id, status, coupon FROM orders";
    sql.push_str(&format!(
        "CREATE STREAM copied AS {query} INTO pq, csv WITH ({}, 'pq.type' = 'file_sink', 'pq.path' = '{d}/copied.parquet', 'csv.type' = 'file_sink', 'csv.path' = '{d}/copied.csv');\n",
        sources(query),
        d = tmp.path().display()
    ));
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    // the three top N cases with text they neither key nor order by read their keys first
    let explain = ferris(tmp.path(), &["explain", tmp.path().join("job.sql").to_str().unwrap()]);
    assert_ok(&explain);
    let read_twice = explain.stdout.lines().filter(|l| l.trim_start().starts_with("ReadKeptRowsExec:")).count();
    assert_eq!(read_twice, 3, "{}", explain.stdout);
    for (name, query) in &cases {
        let got = file_rows(&tmp.path().join(format!("{name}.jsonl")));
        let want = if *name == "within" {
            batch_rows(
                &ctx,
                "SELECT o.order_id, s.shipment_id, s.carrier FROM orders o JOIN shipments s ON o.order_id = s.order_id \
                 AND CAST(s.shipped_ts AS TIMESTAMP) BETWEEN CAST(o.order_ts AS TIMESTAMP) - INTERVAL '30 minutes' AND CAST(o.order_ts AS TIMESTAMP) + INTERVAL '30 minutes'",
            )
            .await
        } else {
            batch_rows(&ctx, query).await
        };
        assert!(!want.is_empty(), "{name}: the batch answer is empty, the case tests nothing");
        assert_same_rows(name, &got, &want);
    }
    // the Parquet sink's file: plain strings, the rows of the source
    let file = std::fs::File::open(tmp.path().join("copied.parquet")).unwrap();
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let types: Vec<String> = reader.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
    assert_eq!(types, vec!["order_id Int64", "status Utf8", "coupon Utf8"]);
    let batches: Vec<datafusion::arrow::record_batch::RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    assert_same_rows("copied.parquet", &rows_of_batches(&batches), &batch_rows(&ctx, query).await);
    let csv = std::fs::read_to_string(tmp.path().join("copied.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + batch_rows(&ctx, query).await.len(), "a header and a line per row");
}

/// A top N over a JSON Lines file with records bad only in a column it neither keys nor orders
/// by, under the default failure strategy (bad records logged and skipped): read twice, the
/// keys first (`top_n::read_twice`), it keeps the rows the batch answer over the file without
/// those records keeps. The first read builds only the keys but checks every column the second
/// reads, so it skips those records too, though each would top its key if it were kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_n_read_twice_skips_records_bad_in_columns_it_does_not_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut all, mut clean) = (String::new(), String::new());
    for i in 0..3000 {
        let good = format!("{{\"id\": {i}, \"k\": {}, \"v\": {}, \"note\": \"n{i}\"}}\n", i % 7, (i * 37) % 101);
        if i > 300 && i % 13 == 0 {
            // a number where the schema inferred from the first lines has text
            all.push_str(&format!("{{\"id\": {i}, \"k\": {}, \"v\": 1000, \"note\": {i}}}\n", i % 7));
        } else {
            all.push_str(&good);
            clean.push_str(&good);
        }
    }
    std::fs::write(tmp.path().join("t.jsonl"), all).unwrap();
    std::fs::write(tmp.path().join("clean.jsonl"), clean).unwrap();
    let query = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, id) AS r FROM t) WHERE r <= 3";
    let sql = format!(
        "CREATE STREAM top AS {query} INTO out WITH ('t.type' = 'file_source', 't.path' = '{d}/t.jsonl', 'batch.size' = '100', \
         'out.type' = 'file_sink', 'out.path' = '{d}/top.jsonl');\n",
        d = tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    // each bad record warned of once, by the read that counts the rows (the first is line 313)
    assert_eq!(run.stderr.matches("t.jsonl:313: malformed record skipped").count(), 1, "{}", run.stderr);
    let explain = ferris(tmp.path(), &["explain", tmp.path().join("job.sql").to_str().unwrap()]);
    assert_ok(&explain);
    assert!(explain.stdout.contains("ReadKeptRowsExec"), "{}", explain.stdout);
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_json("t", tmp.path().join("clean.jsonl").to_str().unwrap(), datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl"))
        .await
        .unwrap();
    let want = batch_rows(&ctx, query).await;
    assert_eq!(want.len(), 21);
    assert_same_rows("top", &file_rows(&tmp.path().join("top.jsonl")), &want);
}
