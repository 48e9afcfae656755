//! Criterion micro-benchmarks of the engine's hot paths, each on in-memory data (no files),
//! rows per second:
//!
//! - `json_decode`: JSON Lines text → Arrow with arrow-json's decoder and with our one-pass
//!   decoder for flat records (what `file_source` and the Kafka source try first);
//! - `filter_project`: `SELECT id, amount * 2 … WHERE amount > …` through DataFusion;
//! - `window_update`: `GROUP BY TUMBLE(ts, …), k` through our `WindowAggregateExec`
//!   (pane tables updated with DataFusion's vectorised accumulators);
//! - `interval_join_probe`: `JOIN … ON a.k = b.k AND b.ts BETWEEN a.ts - … AND a.ts + …`
//!   through our `IntervalJoinExec` (hash, probe, verify, evict);
//! - `sink_encode`: record batches → JSON Lines and → Parquet bytes (the file sink's encoders).
//!
//! Run: `cargo bench -p ferris-engine --bench hot_paths`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ferris_engine::event_time::WatermarkConfig;
use ferris_engine::planner::new_context;
use ferris_engine::window::StreamingAggregateRule;

const ROWS: usize = 1_000_000;
const BATCH: usize = 8192;

use ferris_bench::Rng;

fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

/// `rows` events, `step` ms apart, over `keys` keys, in batches of 8192.
fn events(rows: usize, step: i64, keys: u64, seed: u64) -> Vec<RecordBatch> {
    let mut rng = Rng(seed);
    let keys: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    (0..rows)
        .step_by(BATCH)
        .map(|start| {
            let n = BATCH.min(rows - start);
            let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
            let ks: Vec<&str> = (0..n).map(|_| keys[(rng.next_u64() % keys.len() as u64) as usize].as_str()).collect();
            let ts: Vec<i64> = (start..start + n).map(|i| 1_700_000_000_000 + i as i64 * step).collect();
            let amounts: Vec<f64> = (0..n).map(|_| (rng.next_u64() % 100_000) as f64 / 100.0).collect();
            let cols: Vec<ArrayRef> =
                vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(ks)), Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(amounts))];
            RecordBatch::try_new(events_schema(), cols).unwrap()
        })
        .collect()
}

fn context(delay_ms: Option<i64>) -> SessionContext {
    let rule = StreamingAggregateRule {
        watermark: WatermarkConfig { delay_ms, idle_timeout: None, advance_when_idle: false },
        emit: None,
        changes_every: std::time::Duration::from_millis(100),
        int_scales: Default::default(),
        checkpoints: false,
        state_ttl: None,
        event_time_columns: Vec::new(),
    };
    new_context(1, BATCH, false, None, rule).unwrap()
}

fn register(ctx: &SessionContext, name: &str, batches: Vec<RecordBatch>) {
    let table = MemTable::try_new(events_schema(), vec![batches]).unwrap();
    ctx.register_table(name, Arc::new(table)).unwrap();
}

/// Runs `sql` to the end, its rows counted and dropped as they come (as a job's sink lets go of
/// what it wrote), not all held until the end.
fn run(rt: &tokio::runtime::Runtime, ctx: &SessionContext, sql: &str) -> usize {
    use futures::StreamExt;
    rt.block_on(async {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let mut stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx()).unwrap();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows();
        }
        rows
    })
}

fn json_decode(c: &mut Criterion) {
    let mut text = String::new();
    for b in events(ROWS, 10, 100, 1) {
        let mut buf = Vec::new();
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&b).unwrap();
        w.finish().unwrap();
        text.push_str(std::str::from_utf8(&buf).unwrap());
    }
    let mut g = c.benchmark_group("json_decode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("1M rows", |b| {
        b.iter(|| {
            let mut decoder = datafusion::arrow::json::ReaderBuilder::new(events_schema()).with_batch_size(BATCH).build_decoder().unwrap();
            let mut bytes = text.as_bytes();
            let mut rows = 0;
            while !bytes.is_empty() {
                let used = decoder.decode(bytes).unwrap();
                bytes = &bytes[used..];
                if let Some(batch) = decoder.flush().unwrap() {
                    rows += batch.num_rows();
                }
            }
            if let Some(batch) = decoder.flush().unwrap() {
                rows += batch.num_rows();
            }
            assert_eq!(rows, ROWS);
        })
    });
    // the one-pass decoder the sources try first, on the same text, a batch-sized chunk at a time
    let flat = ferris_connectors::format::flat_json::FlatJson::new(&events_schema()).expect("a flat schema");
    let chunks: Vec<&[u8]> = {
        let mut out = Vec::new();
        let (mut start, mut lines) = (0, 0);
        for (i, c) in text.bytes().enumerate() {
            if c == b'\n' {
                lines += 1;
                if lines == BATCH {
                    out.push(&text.as_bytes()[start..=i]);
                    (start, lines) = (i + 1, 0);
                }
            }
        }
        out.push(&text.as_bytes()[start..]);
        out
    };
    g.bench_function("1M rows, one-pass flat decoder", |b| {
        b.iter(|| {
            let rows: usize = chunks.iter().map(|c| flat.decode(c, BATCH).expect("flat records").iter().map(|b| b.num_rows()).sum::<usize>()).sum();
            assert_eq!(rows, ROWS);
        })
    });
    g.finish();
}

fn operators(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("operators");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);

    let ctx = context(None);
    register(&ctx, "t", events(ROWS, 10, 1000, 2));
    g.bench_function("filter_project", |b| b.iter(|| run(&rt, &ctx, "SELECT id, k, amount * 2 AS double FROM t WHERE amount > 500")));
    g.bench_function("window_update tumble", |b| {
        b.iter(|| run(&rt, &ctx, "SELECT k, COUNT(*) AS n, SUM(amount) AS total FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k"))
    });
    g.bench_function("window_update hop", |b| {
        b.iter(|| run(&rt, &ctx, "SELECT k, COUNT(*) AS n FROM t GROUP BY HOP(ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND), k"))
    });

    // interval join: both sides 1M rows; a delay makes the rule plan our operator (state evicted)
    let ctx = context(Some(1000));
    register(&ctx, "a", events(ROWS / 2, 10, 1000, 3));
    register(&ctx, "b", events(ROWS / 2, 10, 1000, 4));
    g.bench_function("interval_join_probe", |b| {
        b.iter(|| run(&rt, &ctx, "SELECT a.id, b.id FROM a JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts - 1000 AND a.ts + 1000"))
    });
    g.finish();
}

fn sink_encode(c: &mut Criterion) {
    let batches = events(ROWS, 10, 100, 5);
    let mut g = c.benchmark_group("sink_encode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("jsonlines", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(64 << 20);
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.finish().unwrap();
            buf.len()
        })
    });
    g.bench_function("parquet", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(32 << 20);
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, events_schema(), None).unwrap();
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.close().unwrap();
            buf.len()
        })
    });
    g.finish();
}

criterion_group!(benches, json_decode, operators, sink_encode);
criterion_main!(benches);
