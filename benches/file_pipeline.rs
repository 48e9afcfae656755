//! Criterion benchmarks of whole pipelines through the engine (SQL → plan → sources → sinks):
//!
//! - `file_filter_project`: 1M orders from JSON Lines and from Parquet → filter + project →
//!   JSON Lines file (rows/s of input).
//! - `onebrc`: the One Billion Row Challenge aggregate
//!   `SELECT station, MIN(t), AVG(t), MAX(t) FROM m GROUP BY station` over a generated
//!   `station;temperature` file (rows/s). `ONEBRC_ROWS` sets the size (default 10M).
//!
//! Run: `cargo bench -p ferris-engine --bench file_pipeline`. Inputs are generated once into
//! `target/bench-data/` with a fixed seed; `benches/compare/` runs the same files on DuckDB
//! and Polars for the ratios in the README.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use ferris_engine::job::analyze_sql;
use ferris_engine::planner::plan_job;
use ferris_engine::runner::{run_job, RunOptions};

use ferris_bench::Rng;

fn bench_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&d).unwrap();
    d
}

const ORDERS: usize = 1_000_000;
const STATUSES: [&str; 4] = ["PENDING", "SHIPPED", "CANCELLED", "PENDING"];

/// 1M orders as JSON Lines and Parquet.
fn orders_files() -> (PathBuf, PathBuf) {
    let dir = bench_dir();
    let jsonl = dir.join("orders_1m.jsonl");
    let parquet = dir.join("orders_1m.parquet");
    if jsonl.exists() && parquet.exists() {
        return (jsonl, parquet);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ids, mut customers, mut amounts, mut statuses) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut w = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
    for i in 0..ORDERS {
        let c = (rng.next_u64() % 10_000) as i64;
        let a = (rng.next_u64() % 200_000) as f64 / 100.0;
        let s = STATUSES[(rng.next_u64() % 4) as usize];
        writeln!(w, "{{\"order_id\":{i},\"customer_id\":{c},\"amount\":{a},\"status\":\"{s}\"}}").unwrap();
        ids.push(i as i64);
        customers.push(c);
        amounts.push(a);
        statuses.push(s);
    }
    w.flush().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, true),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("status", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(customers)),
            Arc::new(Float64Array::from(amounts)),
            Arc::new(StringArray::from(statuses)),
        ],
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(128 * 1024)).build();
    let mut pw = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&parquet).unwrap(), schema, Some(props)).unwrap();
    pw.write(&batch).unwrap();
    pw.close().unwrap();
    (jsonl, parquet)
}

/// The 1BRC input: `station;temperature`, about 400 stations, one decimal.
pub fn onebrc_file(rows: usize) -> PathBuf {
    let path = bench_dir().join(format!("measurements_{rows}.txt"));
    if path.exists() {
        return path;
    }
    ferris_bench::write_onebrc(&path, rows).unwrap();
    path
}

fn run(sql: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let spec = analyze_sql(sql).unwrap().remove(0).unwrap();
        let job = plan_job(spec).await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let report = run_job(job, RunOptions { progress: false, stop: rx, live: None, restore: ferris_engine::runner::Restore::Fresh, monitor: None }).await;
        assert!(report.error.is_none(), "{:?}", report.error);
        report.rows_out
    })
}

fn filter_project_sql(input: &Path, out: &Path) -> String {
    format!(
        "CREATE STREAM f AS SELECT order_id, customer_id, amount * 1.2 AS gross FROM orders
         WHERE status = 'PENDING' AND amount > 100 INTO out
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'out.type' = 'file_sink', 'out.path' = '{}');",
        input.display(),
        out.display()
    )
}

fn file_filter_project(c: &mut Criterion) {
    let (jsonl, parquet) = orders_files();
    let out = bench_dir().join("out.jsonl");
    let mut g = c.benchmark_group("file_filter_project");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("jsonl_to_jsonl", |b| b.iter(|| run(&filter_project_sql(&jsonl, &out))));
    g.bench_function("parquet_to_jsonl", |b| b.iter(|| run(&filter_project_sql(&parquet, &out))));
    g.finish();
}

fn onebrc(c: &mut Criterion) {
    let rows: usize = std::env::var("ONEBRC_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let input = onebrc_file(rows);
    let sql = format!(
        "CREATE TABLE r AS SELECT station, MIN(t) AS min_t, AVG(t) AS mean_t, MAX(t) AS max_t FROM m GROUP BY station EMIT FINAL
         INTO out WITH ('m.type' = 'file_source', 'm.path' = '{}', 'm.format' = 'csv', 'm.has_headers' = 'false',
                        'm.delimiter' = ';', 'm.schema' = 'station VARCHAR, t DOUBLE', 'out.type' = 'blackhole');",
        input.display()
    );
    let mut g = c.benchmark_group("onebrc");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function(format!("{rows}_rows"), |b| b.iter(|| assert_eq!(run(&sql), 413)));
    g.finish();
}

criterion_group!(benches, file_filter_project, onebrc);
criterion_main!(benches);
