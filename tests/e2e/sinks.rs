//! Sink behaviour end to end: every format holds the same rows, templates split files,
//! append keeps what was there, and a failed sink does not stop the others.

use std::path::Path;

use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};

use crate::common::*;

const QUERY: &str =
    "SELECT o.order_id, o.amount, c.customer_name, c.email FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id WHERE o.quantity > 0";

async fn rows_via(ctx: &SessionContext, table: &str) -> Vec<String> {
    batch_rows(ctx, &format!("SELECT order_id, amount, customer_name, email FROM {table}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sinks_in_four_formats_hold_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let sql = format!(
        "CREATE STREAM fan AS {QUERY} INTO as_jsonl, as_csv, as_parquet, as_gzip WITH ({},
         'as_jsonl.type' = 'file_sink', 'as_jsonl.path' = '{d}/out/rows.jsonl',
         'as_csv.type' = 'file', 'as_csv.path' = '{d}/out/rows.csv', 'as_csv.format' = 'csv',
         'as_parquet.type' = 'file_sink', 'as_parquet.path' = '{d}/out/rows.parquet', 'as_parquet.compression' = 'zstd',
         'as_gzip.type' = 'file_sink', 'as_gzip.path' = '{d}/out/rows.json.gz', 'as_gzip.format' = 'json', 'as_gzip.compression' = 'gzip');",
        sources_for(QUERY)
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    let want = batch_rows(&batch_context(tmp.path()).await, QUERY).await;
    assert!(want.len() > 100);

    let ctx = SessionContext::new();
    ctx.register_json("j", &format!("{d}/out/rows.jsonl"), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    ctx.register_csv("c", &format!("{d}/out/rows.csv"), CsvReadOptions::new()).await.unwrap();
    ctx.register_parquet("p", &format!("{d}/out/rows.parquet"), ParquetReadOptions::default()).await.unwrap();
    ctx.register_json(
        "g",
        &format!("{d}/out/rows.json.gz"),
        JsonReadOptions::default()
            .file_extension(".json.gz")
            .file_compression_type(datafusion::datasource::file_format::file_compression_type::FileCompressionType::GZIP),
    )
    .await
    .unwrap();
    for t in ["j", "c", "p", "g"] {
        assert_same_rows(t, &rows_via(&ctx, t).await, &want);
    }
    // The CSV file has exactly one header line.
    let csv = std::fs::read_to_string(tmp.path().join("out/rows.csv")).unwrap();
    assert_eq!(csv.lines().filter(|l| l.starts_with("order_id,")).count(), 1);
    assert_eq!(csv.lines().count(), want.len() + 1);
}

fn jsonl_rows_in(dir: &Path) -> (usize, Vec<String>) {
    let mut files = 0;
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        files += 1;
        rows.extend(file_rows(&p));
    }
    rows.sort();
    (files, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_id_template_writes_a_file_per_batch_and_append_keeps_old_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let q = "SELECT order_id, status FROM orders";
    let sql = format!(
        "CREATE STREAM parts AS {q} INTO parts_out, log WITH ({}, 'orders.batch.size' = '50',
         'parts_out.type' = 'file_sink', 'parts_out.path' = '{d}/parts/batch_{{batch_id}}.jsonl',
         'log.type' = 'file_sink', 'log.path' = '{d}/log.jsonl', 'log.append' = 'true');",
        sources_for(q)
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    let want = batch_rows(&batch_context(tmp.path()).await, q).await;
    let (files, rows) = jsonl_rows_in(&tmp.path().join("parts"));
    assert!(files >= 2, "expected several batch files, got {files}");
    assert_same_rows("parts", &rows, &want);
    // A second run appends to the log: every row twice.
    assert_ok(&run_sql(tmp.path(), &sql));
    let log = file_rows(&tmp.path().join("log.jsonl"));
    let mut twice: Vec<String> = want.iter().chain(want.iter()).cloned().collect();
    twice.sort();
    assert_same_rows("append", &log, &twice);
}

/// A sink that cannot be created (its directory is a file) stops the job at start, naming the
/// sink, its type and the path: nothing is read, nothing written to the other sinks or stdout.
#[test]
fn a_sink_that_cannot_be_created_stops_the_job_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    std::fs::write(tmp.path().join("blocker"), "a file where a directory should be").unwrap();
    let q = "SELECT order_id FROM orders WHERE order_id <= 20";
    let sql = format!(
        "CREATE STREAM s AS {q} INTO broken, good WITH ({},
         'broken.type' = 'file_sink', 'broken.path' = '{d}/blocker/out.jsonl',
         'good.type' = 'file_sink', 'good.path' = '{d}/good.jsonl');",
        sources_for(q)
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("Job 's' failed to create sinks: Failed to create sink 'broken' (file_sink)"), "{}", run.stderr);
    assert!(run.stderr.contains("blocker"), "the error names the path: {}", run.stderr);
    assert!(file_rows_or_none(&tmp.path().join("good.jsonl")).is_empty(), "nothing written to the other sink");
    assert!(run.stdout.trim().is_empty(), "no fallback rows on stdout: {}", run.stdout);
}

fn file_rows_or_none(path: &std::path::Path) -> Vec<String> {
    if path.exists() {
        file_rows(path)
    } else {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_select_writes_json_lines_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT customer_id, customer_tier FROM customers WHERE customer_tier = 'GOLD'";
    let run = run_sql(tmp.path(), &format!("{q} WITH ({});", sources_for(q)));
    assert_ok(&run);
    let want = batch_rows(&batch_context(tmp.path()).await, q).await;
    assert_same_rows("stdout", &canonical_lines(&run.stdout), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_discards_and_reports_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT * FROM orders";
    let run = run_sql(tmp.path(), &format!("CREATE STREAM dry AS {q} INTO nowhere WITH ({}, 'nowhere.type' = 'blackhole');", sources_for(q)));
    assert_ok(&run);
    assert!(run.stderr.contains("produced 240 rows, wrote [nowhere 240 rows]"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}
