//! The user's guide's complete examples ("Real-World Examples"), their SQL unchanged in
//! `configs/guide/<example>/`, run by the one command a user runs (`bash configs/guide/run.sh
//! <example>`) on this machine's stand-ins (tansu for Kafka, moto for S3, files from `data/`),
//! with every sink's rows checked against DataFusion's batch answer over the same input files.

use std::path::Path;
use std::process::Command;

use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};

use crate::common::{assert_same_rows, batch_rows, canonical_lines, repo};

/// The query of the guide's `CREATE STREAM <stream> AS … INTO`.
fn query_of(sql_file: &str, stream: &str) -> String {
    let text = std::fs::read_to_string(repo().join(sql_file)).unwrap();
    let head = format!("CREATE STREAM {stream} AS\n");
    let start = text.find(&head).map(|i| i + head.len()).expect("CREATE STREAM … AS");
    let end = text[start..].find("\nINTO ").map(|i| start + i).expect("INTO");
    text[start..end].to_string()
}

/// The guide's SQL files are the guide's text: the same statements as the guide's example in
/// the golden set (cut from the guide), and as the guide itself where it is next to the
/// repository (`../shared/spec/`), comment lines aside.
fn assert_as_written(sql_file: &str, golden: Option<&str>, first_stream: &str) {
    let strip = |t: &str| t.lines().filter(|l| !l.trim_start().starts_with("-- ")).map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string();
    let ours = strip(&std::fs::read_to_string(repo().join(sql_file)).unwrap());
    if let Some(golden) = golden {
        let guide = strip(&std::fs::read_to_string(repo().join(golden)).unwrap());
        assert_eq!(ours, guide, "{sql_file} must keep the guide's SQL as written ({golden})");
    }
    if let Ok(guide) = std::fs::read_to_string(repo().join("../shared/spec/ferrisstreams-guide.md")) {
        let head = format!("CREATE STREAM {first_stream} AS");
        let blocks: Vec<String> = guide
            .split("```sql")
            .skip(1)
            .map(|b| b.split_once('\n').map_or("", |(_, rest)| rest))
            .map(|b| strip(&b[..b.find("```").unwrap_or(b.len())]))
            .filter(|b| b.contains(&head))
            .collect();
        assert!(blocks.contains(&ours), "{sql_file} must keep the guide's SQL as written: {} examples of the guide have {head}, none is it", blocks.len());
    }
}

/// Runs `bash configs/guide/run.sh <example>` with this build, its own topics and buckets
/// (suffix `run`) and output directory; returns the script's output.
fn run_example(example: &str, run: &str, out: &Path, env: &[(&str, String)]) -> String {
    let result = crate::common::output_within(
        Command::new("bash")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg(repo().join("configs/guide/run.sh"))
            .arg(example)
            .current_dir(repo())
            .env("FERRIS_SQL", env!("CARGO_BIN_EXE_ferris-sql"))
            .env("GUIDE_RUN", run)
            .env("GUIDE_OUT", out)
            .env("RUST_LOG", "warn,ferris_engine=info,ferris_connectors=info"),
    );
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    let log = std::fs::read_to_string(out.join(example).join("job.log")).unwrap_or_default();
    assert!(result.status.success(), "run.sh {example} failed\n{stdout}\n{}\njob log:\n{log}", String::from_utf8_lossy(&result.stderr));
    stdout + &log
}

/// Every JSON line of the files under `dir`, at any depth.
fn rows_under(dir: &Path) -> Vec<String> {
    fn read(dir: &Path, text: &mut String) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            if path.is_dir() {
                read(&path, text);
            } else {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut text = String::new();
    read(dir, &mut text);
    canonical_lines(&text)
}

/// Rows without the columns `drop` (Hive columns of a prefix, a processing time).
fn without(rows: &[String], drop: &[&str]) -> Vec<String> {
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r).unwrap();
            for d in drop {
                assert!(v.remove(*d).is_some(), "no '{d}' in {r}");
            }
            serde_json::Value::Object(v).to_string()
        })
        .collect();
    canonical_lines(&rows.join("\n"))
}

/// The rows of a Kafka topic of this run.
fn topic_rows(topic: &str) -> Vec<String> {
    canonical_lines(&crate::kafka::read_values(&crate::kafka::bootstrap(), topic).join("\n"))
}

/// Registers JSON-lines files (any extension) as tables.
async fn register_json(ctx: &SessionContext, tables: &[(&str, &str)]) {
    for (name, file) in tables {
        let ext = Path::new(file).extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        ctx.register_json(*name, repo().join(file).to_str().unwrap(), JsonReadOptions::default().file_extension(&ext)).await.unwrap();
    }
}

/// E-commerce: orders from Kafka (Avro) joined with customers in S3 (Parquet) and the product
/// catalog (a JSON file), to a Kafka topic, a dated audit file and S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_ecommerce_example_runs_as_written() {
    let sql = "configs/guide/ecommerce/enriched_orders.sql";
    assert_as_written(sql, Some("tests/golden/guide/28.sql"), "enriched_orders");
    let tmp = tempfile::tempdir().unwrap();
    let run = format!("-{}", crate::kafka::unique("ec"));
    let log = run_example("ecommerce", &run, tmp.path(), &[]);

    let ctx = SessionContext::new();
    register_json(&ctx, &[("kafka_orders", "data/orders.jsonl")]).await;
    ctx.register_csv("customer_files", repo().join("data/customers.csv").to_str().unwrap(), CsvReadOptions::new()).await.unwrap();
    let products = crate::common::json_array_as_lines(&repo().join("data/products.json"), &tmp.path().join("products.jsonl"));
    ctx.register_json("product_catalog", products.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    let want = batch_rows(&ctx, &query_of(sql, "enriched_orders")).await;
    assert!(want.len() > 100 && want.iter().any(|r| r.contains("\"discount_rate\":0.1")), "{} rows", want.len());

    assert!(log.contains(&format!("wrote [kafka_fulfillment {n} rows, file_audit {n} rows, s3_analytics {n} rows]", n = want.len())), "{log}");
    assert_same_rows("file_audit", &rows_under(&tmp.path().join("ecommerce/audit")), &want);
    assert_same_rows("kafka_fulfillment", &topic_rows(&format!("order-fulfillment{run}")), &want);
    // the prefix's year and month are the time of writing: read back as Hive columns, dropped
    let s3 = crate::s3::s3_rows(&format!("analytics-lake{run}"), "orders/");
    assert_same_rows("s3_analytics", &without(&s3, &["year", "month"]), &want);
}

/// High throughput: three jobs in one file. Transactions from Kafka (Avro) joined with
/// customer profiles (Parquet) and merchants (JSON) to Kafka (snappy), a dated audit file and
/// S3 (gzip Parquet); large payloads (Avro) filtered by BYTE_LENGTH to hourly files; alerts
/// (JSON) to a webhook and Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_high_throughput_examples_run_as_written() {
    let sql = "configs/guide/high_throughput/batch_processing.sql";
    assert_as_written(sql, Some("tests/golden/guide/30.sql"), "batch_optimized_transactions");
    let tmp = tempfile::tempdir().unwrap();
    let run = format!("-{}", crate::kafka::unique("ht"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = run_example("high_throughput", &run, tmp.path(), &[("GUIDE_HTTP_PORT", port.to_string())]);
    let out = tmp.path().join("high_throughput");

    let ctx = SessionContext::new();
    register_json(&ctx, &[("transaction_stream", "data/guide/transactions.jsonl"), ("merchant_data", "data/guide/merchants.json")]).await;
    ctx.register_csv("customer_profiles", repo().join("data/customers.csv").to_str().unwrap(), CsvReadOptions::new()).await.unwrap();
    // CURRENT_TIMESTAMP is the time of processing: present in every row, then left out
    let want = without(&batch_rows(&ctx, &query_of(sql, "batch_optimized_transactions")).await, &["processed_at"]);
    assert!(want.len() > 200 && want.iter().any(|r| r.contains("\"fraud_indicators\":null")), "{} rows", want.len());
    assert!(log.contains(&format!("wrote [high_throughput_sink {n} rows, audit_log_sink {n} rows, analytics_sink {n} rows]", n = want.len())), "{log}");
    assert_same_rows("audit_log_sink", &without(&rows_under(&out.join("audit")), &["processed_at"]), &want);
    assert_same_rows("high_throughput_sink", &without(&topic_rows(&format!("processed-transactions{run}")), &["processed_at"]), &want);
    let s3 = crate::s3::s3_rows(&format!("financial-analytics{run}"), "transactions/");
    assert_same_rows("analytics_sink", &without(&s3, &["processed_at", "year", "month", "day"]), &want);

    register_json(&ctx, &[("large_data_stream", "data/guide/large_payloads.jsonl"), ("critical_alerts", "data/guide/alerts.jsonl")]).await;
    // BYTE_LENGTH is the predecessor's name (ours) for DataFusion's octet_length
    let want = batch_rows(&ctx, &query_of(sql, "memory_optimized_large_records").replace("BYTE_LENGTH(", "octet_length(")).await;
    assert_eq!(want.len(), 200);
    assert_same_rows("memory_aware_sink", &rows_under(&out.join("large_records")), &want);

    let want = batch_rows(&ctx, &query_of(sql, "low_latency_alerts")).await;
    assert!(want.len() > 50 && want.len() < 300, "{} rows", want.len());
    assert_same_rows("immediate_notification_sink", &rows_under(&out.join("http")), &want);
    assert_same_rows("alert_dashboard_sink", &topic_rows(&format!("dashboard-alerts{run}")), &want);
}

/// IoT: four Kafka topics of sensor readings joined per device `WITHIN INTERVAL '2' MINUTES`
/// (event time: the messages' timestamps, the default), LAG over the joined stream, to Kafka,
/// S3 (snappy Parquet) and a dashboard API with a bearer token. A reading an hour after the
/// rest (device `dev-close`) closes the band of every reading before it; its own rows are left
/// out of the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_iot_example_runs_as_written() {
    let sql = "configs/guide/iot/sensor_analysis.sql";
    assert_as_written(sql, None, "sensor_analysis");
    let tmp = tempfile::tempdir().unwrap();
    let run = format!("-{}", crate::kafka::unique("iot"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = run_example("iot", &run, tmp.path(), &[("GUIDE_HTTP_PORT", port.to_string())]);
    let out = tmp.path().join("iot");

    let ctx = SessionContext::new();
    register_json(
        &ctx,
        &[
            ("temperature_sensors", "data/guide/temperature.jsonl"),
            ("humidity_sensors", "data/guide/humidity.jsonl"),
            ("pressure_sensors", "data/guide/pressure.jsonl"),
            ("vibration_sensors", "data/guide/vibration.jsonl"),
        ],
    )
    .await;
    let query = query_of(sql, "sensor_analysis");
    let select = &query[..query.find("\nFROM ").unwrap()];
    let band = |x: &str| format!("{x}.device_id = t.device_id AND {x}.timestamp BETWEEN t.timestamp - 120000 AND t.timestamp + 120000");
    let batch = format!(
        "{select} FROM temperature_sensors t JOIN humidity_sensors h ON {} JOIN pressure_sensors p ON {} LEFT JOIN vibration_sensors v ON {} \
         WHERE t.temperature IS NOT NULL AND h.humidity IS NOT NULL AND p.pressure IS NOT NULL AND t.device_id <> 'dev-close'",
        band("h"),
        band("p"),
        band("v")
    );
    let want = batch_rows(&ctx, &batch).await;
    assert!(want.len() > 300 && want.iter().any(|r| r.contains("\"vibration_level\":null")), "{} rows", want.len());
    assert!(want.iter().any(|r| r.contains("TEMP_SPIKE")) && want.iter().any(|r| r.contains("NORMAL")), "{want:?}");
    let open = |rows: Vec<String>| -> Vec<String> { rows.into_iter().filter(|r| !r.contains("dev-close")).collect() };
    assert!(log.contains("wrote [monitoring_alerts "), "{log}");
    assert_same_rows("device_dashboard", &open(rows_under(&out.join("http"))), &want);
    assert_same_rows("monitoring_alerts", &open(topic_rows(&format!("sensor-alerts{run}"))), &want);
    let s3 = crate::s3::s3_rows(&format!("sensor-data-lake{run}"), "sensors/");
    assert_same_rows("data_lake", &open(without(&s3, &["year", "month", "day"])), &want);
}

/// Financial, transactional (`use_transactions`): transactions from Kafka over TLS (Avro)
/// joined with customer profiles in PostgreSQL, merchants in S3 (Parquet) and a location API
/// (a bearer token), `WITHIN INTERVAL '5' MINUTES` (a lookup join: every joined relation is a
/// table), to a file standing in for the Kafka topic (tansu has no transactions), an audit file
/// per batch and a PostgreSQL table, each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_financial_example_runs_as_written() {
    let sql = "configs/guide/financial/fraud_analysis.sql";
    assert_as_written(sql, Some("tests/golden/guide/29.sql"), "fraud_analysis");
    let tmp = tempfile::tempdir().unwrap();
    let run = format!("-{}", crate::kafka::unique("fin"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = run_example("financial", &run, tmp.path(), &[("GUIDE_HTTP_PORT", port.to_string()), ("PG_URL", crate::postgres::url())]);
    let out = tmp.path().join("financial");

    let ctx = SessionContext::new();
    register_json(&ctx, &[("transaction_stream", "data/guide/transactions.jsonl"), ("merchant_data", "data/guide/merchants.json")]).await;
    ctx.register_csv("customer_profiles", repo().join("data/customers.csv").to_str().unwrap(), CsvReadOptions::new()).await.unwrap();
    let path = crate::common::json_array_as_lines(&repo().join("data/guide/locations.json"), &tmp.path().join("locations.jsonl"));
    ctx.register_json("location_service", path.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    // every joined relation is a table: the band bounds nothing, the batch join is the answer
    let query = query_of(sql, "fraud_analysis").replace("WITHIN INTERVAL '5' MINUTES\n", "");
    let want = batch_rows(&ctx, &query).await;
    assert!(want.len() > 300, "{} rows", want.len());
    for kind in ["BLOCK_TRANSACTION", "MANUAL_REVIEW", "APPROVE", "HIGH_VALUE", "LOCATION_RISK", "\"current_location\":null"] {
        assert!(want.iter().any(|r| r.contains(kind)), "no {kind} in the data");
    }
    assert!(log.contains(&format!("wrote [fraud_alerts {n} rows, audit_compliance {n} rows, risk_warehouse {n} rows]", n = want.len())), "{log}");
    assert!(log.contains("WITHIN INTERVAL '5' MINUTES does not bound the join") || !log.contains("bounds their event times"), "{log}");
    assert_same_rows("fraud_alerts", &rows_under(&out.join("fraud_alerts")), &want);
    assert_same_rows("audit_compliance", &rows_under(&out.join("audit")), &want);
    let suffix = run.replace('-', "_");
    let table = crate::postgres::rows(&format!("SELECT * FROM fraud_analysis_results{suffix}"));
    assert_same_rows("risk_warehouse", &table, &want);
    // the AES256 the guide asks of the audit file is not done, and said so
    assert!(log.contains("key 'audit_compliance.encryption' does nothing: files are written unencrypted"), "{log}");
}
