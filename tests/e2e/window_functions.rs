//! Window functions over streams: LAG, ROW_NUMBER, FIRST_VALUE and a ROWS frame on a tailed
//! (never-ending) file whose rows are out of order within the watermark delay. Every row the
//! job emits must carry exactly the values DataFusion computes in batch over the whole file
//! (each value depends only on earlier rows), and every row the watermark has released must
//! come out (rows of one time leave the watermark sort together: none waits for its peers).

use std::path::Path;

use datafusion::prelude::{JsonReadOptions, SessionContext};

use crate::common::*;
use crate::temporal_joins::run_until_rows;
use crate::windows::Lcg;

fn write_readings(path: &Path, n: u64, devices: u64) -> i64 {
    let mut rng = Lcg::new(99);
    let base = 1_700_000_000_000i64;
    let mut rows: Vec<(i64, String)> = (0..n)
        .map(|i| {
            let ts = base + (i * 300 + rng.below(300)) as i64;
            let device = rng.below(devices);
            let temp = 20.0 + rng.below(1000) as f64 / 100.0;
            (ts - rng.below(1500) as i64, format!("{{\"ts\":{ts},\"device_id\":\"d{device}\",\"temperature\":{temp}}}\n"))
        })
        .collect();
    // written in arrival order: shuffled by up to 1.5 s
    rows.sort_by_key(|(arrival, _)| *arrival);
    std::fs::write(path, rows.iter().map(|(_, l)| l.as_str()).collect::<String>()).unwrap();
    rows.iter().map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"].as_i64().unwrap()).max().unwrap()
}

const QUERY: &str = "SELECT device_id, ts, temperature, \
    LAG(temperature, 1) OVER (PARTITION BY device_id ORDER BY ts) AS prev, \
    ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY ts) AS n, \
    FIRST_VALUE(temperature) OVER (PARTITION BY device_id ORDER BY ts) AS first_t, \
    AVG(temperature) OVER (PARTITION BY device_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS avg10 \
    FROM readings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_functions_on_a_stream_follow_event_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("readings.jsonl");
    let max_ts = write_readings(&data, 3000, 5);
    let watermark = max_ts - 2000;
    let ctx = SessionContext::new();
    ctx.register_json("readings", data.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    let all = batch_rows(&ctx, QUERY).await;
    let released = batch_rows(&ctx, &format!("SELECT * FROM ({QUERY}) WHERE ts < {watermark}")).await;
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM w AS {QUERY} INTO out WITH ('readings.type' = 'file_source', 'readings.path' = '{}', 'readings.format' = 'jsonlines', \
         'readings.watch' = 'true', 'readings.schema' = 'ts BIGINT, device_id VARCHAR, temperature DOUBLE', 'readings.event_time' = 'ts', \
         'readings.watermark.delay' = '2s', 'readings.batch.size' = '100', 'out.type' = 'file_sink', 'out.path' = '{}');",
        data.display(),
        out.display()
    );
    // Every row the watermark has passed is out, in event-time order: rows of one time leave
    // the watermark sort together, so no row waits for later peers of its RANGE frame
    // (DataFusion's own operator held each device's last row back until a later one came).
    let want = released;
    assert!(want.len() > 2900, "the watermark holds only the last 2 s back: {}", want.len());
    let stderr = run_until_rows(tmp.path(), &sql, &out, want.len());
    assert!(!stderr.contains("late rows"), "{stderr}");
    let got = file_rows(&out);
    for row in &got {
        assert!(all.contains(row), "a row the batch answer does not have: {row}");
    }
    assert_same_rows("stream window functions", &got, &want);
}

#[test]
fn a_stream_window_function_needs_an_ascending_time_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("readings.jsonl");
    write_readings(&data, 10, 2);
    let sql = format!(
        "SELECT device_id, LAG(temperature) OVER (PARTITION BY device_id ORDER BY ts DESC) FROM readings WITH ('readings.type' = 'file_source', 'readings.path' = '{}', \
         'readings.format' = 'jsonlines', 'readings.watch' = 'true', 'readings.schema' = 'ts BIGINT, device_id VARCHAR, temperature DOUBLE');",
        data.display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("event time ascending"), "{}", run.stderr);
}

/// The predecessor's `ROWS WINDOW BUFFER n ROWS`: each row sees the last `n` rows of its
/// partition, DataFusion's `ROWS BETWEEN n-1 PRECEDING AND CURRENT ROW` on the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_window_buffer_keeps_the_last_n_rows_of_a_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = "SELECT order_id, AVG(amount) OVER (PARTITION BY customer_id ORDER BY order_ts, order_id ROWS WINDOW BUFFER 3 ROWS) AS moving, \
                COUNT(*) OVER (PARTITION BY customer_id ORDER BY order_ts, order_id ROWS WINDOW BUFFER 3 ROWS) AS seen FROM orders";
    let sql = format!("CREATE STREAM m AS {ours} INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');", sources_for("orders"));
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let ctx = batch_context(tmp.path()).await;
    let want = batch_rows(&ctx, &ours.replace("ROWS WINDOW BUFFER 3 ROWS", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW")).await;
    assert!(want.iter().any(|r| r.contains("\"seen\":3")) && !want.iter().any(|r| r.contains("\"seen\":4")));
    assert_same_rows("moving averages", &file_rows(&tmp.path().join("out.jsonl")), &want);
    let run = run_sql(tmp.path(), &sql.replace("BUFFER 3 ROWS", "BUFFER 0 ROWS"));
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("ROWS WINDOW BUFFER needs a number of rows above 0"), "{}", run.stderr);
}
