//! S3 on a real S3 API server (moto's, started by `bash tests/services/s3.sh start`; address in
//! `S3_ENDPOINT`, default http://127.0.0.1:9190): objects put and read back with boto3 and
//! pyarrow (tests/python/s3_objects.py). Hive partitions as columns and pruned by WHERE,
//! partitioned Parquet and gzip CSV written, a watched prefix, exactly once through SIGKILLs,
//! and the errors a wrong endpoint or key gives.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::checkpoints::{assert_exactly_once_rows, chaos_seed, crash_and_finish, interrupt, kill_test_input, settle, sinks_created, start, tailed_window_job};
use crate::common::{assert_ok, assert_same_rows, canonical_lines, file_rows, run_sql};

pub(crate) fn endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9190".to_string())
}

/// A bucket name no other test (or earlier run on the same server) uses.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Runs the boto3/pyarrow helper; a failed call is tried again twice (moto's one-process
/// server answers slowly, at times with an error, while every test of the suite uses it).
fn s3py(args: &[&str]) -> String {
    let script = crate::common::repo().join("tests/python/s3_objects.py");
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let out =
            crate::common::output_within(Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())).arg(&script).arg(endpoint()).args(args));
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    panic!("s3_objects.py {args:?} failed 3 times (is the S3 server up? 'bash tests/services/s3.sh start'): {last}");
}

pub(crate) fn mkbucket(bucket: &str) {
    s3py(&["mkbucket", bucket]);
}

fn put(dir: &Path, bucket: &str, key: &str, body: &str) {
    let f = dir.join("upload.tmp");
    std::fs::write(&f, body).unwrap();
    s3py(&["put", bucket, key, f.to_str().unwrap()]);
}

/// Every row of the objects under `prefix`, with their Hive columns, canonical and sorted.
pub(crate) fn s3_rows(bucket: &str, prefix: &str) -> Vec<String> {
    canonical_lines(&s3py(&["rows", bucket, prefix]))
}

fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    s3py(&["keys", bucket, prefix]).lines().map(str::to_string).collect()
}

/// The WITH entries that reach the test server.
fn conn(name: &str) -> String {
    format!("'{name}.endpoint' = '{}', '{name}.access_key_id' = 'testing', '{name}.secret_access_key' = 'testing'", endpoint())
}

/// Sales in four Hive partitions (year × region), 250 rows each: the objects' text, and the
/// rows as JSON values with their partition values.
fn sales() -> Vec<(String, String, Vec<serde_json::Value>)> {
    let mut out = Vec::new();
    let mut id = 0;
    for year in [2023, 2024] {
        for region in ["eu", "us"] {
            let mut text = String::new();
            let mut rows = Vec::new();
            for i in 0..250 {
                let amount = (id * 37 + i) % 1000;
                text.push_str(&format!("{{\"id\":{id},\"amount\":{amount},\"item\":\"i{}\"}}\n", id % 7));
                rows.push(serde_json::json!({"id": id, "amount": amount, "item": format!("i{}", id % 7), "year": year, "region": region}));
                id += 1;
            }
            out.push((format!("sales/year={year}/region={region}/part-0.jsonl"), text, rows));
        }
    }
    out
}

/// Hive prefixes become columns and a WHERE on them skips objects; the output lands as
/// Parquet under Hive prefixes of its own (`region=eu/`), read back by pyarrow exactly.
#[test]
fn hive_partitions_are_columns_pruned_by_where_and_written_as_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (unique("raw"), unique("lake"));
    mkbucket(&input);
    mkbucket(&output);
    let data = sales();
    for (key, text, _) in &data {
        put(tmp.path(), &input, key, text);
    }
    put(tmp.path(), &input, "sales/_SUCCESS", "");
    let sql = format!(
        "CREATE STREAM s AS SELECT id, amount, item, region FROM sales WHERE year = 2024 AND amount >= 100 INTO lake WITH (
         'sales.type' = 's3_source', 'sales.path' = 's3://{input}/sales/', {},
         'lake.type' = 's3_sink', 'lake.bucket' = '{output}', 'lake.prefix' = 'daily', 'lake.format' = 'parquet',
         'lake.compression' = 'zstd', 'lake.partition_columns' = 'region', {});",
        conn("sales"),
        conn("lake")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(run.stderr.contains("2 of 4 objects skipped by the WHERE clause"), "{}", run.stderr);
    let want: Vec<String> = sales_2024_from_100(&data);
    assert_same_rows("parquet under region=…/", &s3_rows(&output, "daily/"), &want);
    let written = keys(&output, "daily/");
    assert!(written.iter().all(|k| (k.starts_with("daily/region=eu/") || k.starts_with("daily/region=us/")) && k.ends_with(".parquet")), "{written:?}");
}

/// The rows of [`sales`] that `WHERE year = 2024 AND amount >= 100` keeps, as `SELECT id,
/// amount, item, region` gives them.
fn sales_2024_from_100(data: &[(String, String, Vec<serde_json::Value>)]) -> Vec<String> {
    canonical_rows(
        data.iter()
            .flat_map(|(_, _, rows)| rows)
            .filter(|r| r["year"] == 2024 && r["amount"].as_i64().unwrap() >= 100)
            .map(|r| serde_json::json!({"id": r["id"], "amount": r["amount"], "item": r["item"], "region": r["region"]})),
    )
}

fn canonical_rows(rows: impl Iterator<Item = serde_json::Value>) -> Vec<String> {
    canonical_lines(&rows.map(|r| r.to_string()).collect::<Vec<_>>().join("\n"))
}

/// A glob picks objects; an aggregate over them lands as one gzip CSV object, exact.
#[test]
fn a_glob_and_an_aggregate_to_gzip_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (unique("raw"), unique("out"));
    mkbucket(&input);
    mkbucket(&output);
    let data = sales();
    for (key, text, _) in &data {
        put(tmp.path(), &input, key, text);
    }
    let sql = format!(
        "CREATE STREAM t AS SELECT item, COUNT(*) AS n, SUM(amount) AS total FROM sales GROUP BY item INTO out WITH (
         'sales.type' = 's3_source', 'sales.path' = 's3://{input}/sales/year=2023/*/*.jsonl', {},
         'out.type' = 's3_sink', 'out.path' = 's3://{output}/totals/', 'out.format' = 'csv', 'out.compression' = 'gzip', {});",
        conn("sales"),
        conn("out")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in data.iter().flat_map(|(_, _, rows)| rows).filter(|r| r["year"] == 2023) {
        let e = totals.entry(r["item"].as_str().unwrap().to_string()).or_default();
        e.0 += 1;
        e.1 += r["amount"].as_i64().unwrap();
    }
    let want = canonical_rows(totals.iter().map(|(item, (n, total))| serde_json::json!({"item": item, "n": n, "total": total})));
    assert_same_rows("csv.gz totals", &s3_rows(&output, "totals/"), &want);
    let written = keys(&output, "totals/");
    assert!(written.len() == 1 && written[0].ends_with(".csv.gz"), "{written:?}");

    // a path naming one object reads that object
    let sql =
        format!("SELECT COUNT(*) AS n, MIN(id) AS first FROM one WITH ('one.type' = 's3_source', 'one.path' = 's3://{input}/{}', {});", data[1].0, conn("one"));
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert_eq!(canonical_lines(&run.stdout), vec![r#"{"first":250,"n":250}"#.to_string()], "{}", run.stderr);

    // a declared schema naming a Hive key: the column comes from the key, with the declared type
    let sql = format!(
        "SELECT year, COUNT(*) AS n FROM sales WHERE year > 2023 GROUP BY year WITH ('sales.type' = 's3_source', 'sales.path' = 's3://{input}/sales/',
         'sales.schema' = 'id BIGINT, amount BIGINT, item VARCHAR, year INT', {});",
        conn("sales")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert_eq!(canonical_lines(&run.stdout), vec![r#"{"n":500,"year":2024}"#.to_string()], "{}", run.stderr);
    assert!(run.stderr.contains("2 of 4 objects skipped by the WHERE clause"), "{}", run.stderr);
}

/// A watched prefix: objects put while the job runs are read, each once.
#[test]
fn a_watched_prefix_reads_new_objects_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = unique("landing");
    mkbucket(&input);
    let data = sales();
    put(dir, &input, &data[0].0, &data[0].1);
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM w AS SELECT id, amount, year, region FROM sales INTO out WITH (
             'sales.type' = 's3_source', 'sales.path' = 's3://{input}/sales/', 'sales.watch' = 'true', 'sales.poll_interval' = '200ms',
             'sales.schema' = 'id BIGINT, amount BIGINT, item VARCHAR', {},
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
            conn("sales")
        ),
    )
    .unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    for (key, text, _) in &data[1..] {
        std::thread::sleep(Duration::from_millis(300));
        put(dir, &input, key, text);
    }
    let total = data.iter().map(|d| d.2.len()).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && std::fs::read_to_string(dir.join("out.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < total {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800)); // an object read twice would show by now
    interrupt(&mut child, dir);
    let want = canonical_rows(
        data.iter().flat_map(|d| &d.2).map(|r| serde_json::json!({"id": r["id"], "amount": r["amount"], "year": r["year"], "region": r["region"]})),
    );
    assert_same_rows("watched prefix", &file_rows(&dir.join("out.jsonl")), &want);
}

/// A windowed aggregate over a tailed file into S3 under `use_transactions`, killed five times
/// at random moments: the objects hold every window exactly once (DataFusion's batch answer),
/// and nothing is visible from an upload no checkpoint committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_job_writes_each_window_to_s3_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let output = unique("eo");
    mkbucket(&output);
    let (input, lines, want) = kill_test_input(dir, 20_000).await;
    let sink = format!("'use_transactions' = 'true', 'out.type' = 's3_sink', 'out.path' = 's3://{output}/windows/', {}", conn("out"));
    std::fs::write(dir.join("job.sql"), tailed_window_job(&input, &sink)).unwrap();
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let n = want.len();
    let out_bucket = output.clone();
    crash_and_finish(dir, 5, seed, &input, &lines, move |_| s3py(&["rows", &out_bucket, "windows/"]).lines().count() >= n);
    let got: Vec<String> = s3py(&["rows", &output, "windows/"]).lines().map(str::to_string).collect();
    assert_exactly_once_rows(&format!("S3 exactly once after 5 kills (seed {seed})"), &got, &want);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint:\n{log}");
}

/// An output larger than a part goes up in parts and rolls into new objects at
/// `max_file_size`, under transactions as without: every row once, read back by boto3.
#[test]
fn large_outputs_go_up_in_parts_and_roll_at_max_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 250_000;
    let mut text = String::with_capacity(n * 80);
    for i in 0..n {
        text.push_str(&format!("{{\"id\":{i},\"pad\":\"{:0>60}\"}}\n", i * 7919 % 1_000_003));
    }
    std::fs::write(dir.join("big.jsonl"), &text).unwrap();
    let want = canonical_lines(&text);
    for (mode, extra) in [("plain", ""), ("transactional", ", 'use_transactions' = 'true'")] {
        let bucket = unique("big");
        mkbucket(&bucket);
        let sql = format!(
            "CREATE STREAM b AS SELECT id, pad FROM big INTO out WITH ('big.type' = 'file_source', 'big.path' = '{}',
             'out.type' = 's3_sink', 'out.bucket' = '{bucket}', 'out.prefix' = 'big/', 'out.part_size' = '5MB', 'out.max_file_size' = '8MB', {}{extra});",
            dir.join("big.jsonl").display(),
            conn("out")
        );
        let run = run_sql(dir, &sql);
        assert_ok(&run);
        let objects = keys(&bucket, "big/");
        assert!(objects.len() >= 2, "{mode}: {text_len} bytes in 8MB objects: {objects:?}", text_len = text.len());
        let got: Vec<String> = s3py(&["rows", &bucket, "big/"]).lines().map(str::to_string).collect();
        assert_exactly_once_rows(mode, &got, &want);
    }
}

/// A bucket that cannot be reached, or a partition column the query lacks, stops the job at
/// start with an error naming the sink and the bucket or key, never the secret.
#[test]
fn unreachable_bucket_and_bad_keys_are_clear_errors_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT order_id FROM orders";
    let sql = format!(
        "CREATE STREAM s AS {q} INTO archive WITH ({},
         'archive.type' = 's3_sink', 'archive.bucket' = 'nowhere-bucket', 'archive.endpoint' = 'http://127.0.0.1:9',
         'archive.access_key_id' = 'AKIAEXAMPLE', 'archive.secret_access_key' = 'Sup3rS3cretValue', 'archive.max_retries' = '0');",
        crate::common::sources_for(q)
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("s3_sink 'archive'") && run.stderr.contains("nowhere-bucket"), "{}", run.stderr);
    assert!(!run.stderr.contains("Sup3rS3cretValue") && !run.stdout.contains("Sup3rS3cretValue"), "the secret leaked: {}", run.stderr);
    assert!(run.stdout.trim().is_empty(), "no fallback rows on stdout: {}", run.stdout);

    let bucket = unique("keys");
    mkbucket(&bucket);
    let sql = format!(
        "CREATE STREAM s AS {q} INTO archive WITH ({}, 'archive.type' = 's3_sink', 'archive.bucket' = '{bucket}', 'archive.partition_columns' = 'country',
         'archive.encodign' = 'utf-8', {});",
        crate::common::sources_for(q),
        conn("archive")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("archive.partition_columns") && run.stderr.contains("no column 'country'"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown key 'archive.encodign'"), "{}", run.stderr);
}

/// The guide's "mixed inline + YAML" example as written: a Kafka topic into the S3 warehouse
/// sink of `configs/s3-warehouse-sink.yaml` (bucket `analytics-warehouse-${ENVIRONMENT}`, a
/// `{year}/{month}/{day}` prefix, snappy Parquet, Hive partitions by `order_date` and
/// `region`), with the loopback server given by `AWS_ENDPOINT_URL`. Every message of this run
/// lands once, under its partitions.
#[test]
fn the_guides_kafka_to_s3_warehouse_example_runs_as_written() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::copy(crate::common::repo().join("configs/guide/configs/s3-warehouse-sink.yaml"), dir.join("configs/s3-warehouse-sink.yaml")).unwrap();
    let env_name = unique("t");
    let bucket = format!("analytics-warehouse-{env_name}");
    mkbucket(&bucket);
    // the guide's SQL, unchanged
    std::fs::write(
        dir.join("job.sql"),
        "SELECT * FROM events_stream
INTO analytics_warehouse
WITH (
    -- Inline source configuration
    'events_stream.type' = 'kafka_source',
    'events_stream.bootstrap.servers' = 'localhost:9092',
    'events_stream.topic' = 'raw-events',

    -- YAML config file for complex sink
    'analytics_warehouse.type' = 's3_sink',
    'analytics_warehouse.config_file' = './configs/s3-warehouse-sink.yaml'
);
",
    )
    .unwrap();
    // earlier runs on the same broker left messages in raw-events: this run's carry its tag
    let tag = unique("run");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create().unwrap();
    let topic = rdkafka::admin::NewTopic::new("raw-events", 1, rdkafka::admin::TopicReplication::Fixed(1));
    // made by an earlier run on the same broker, or now
    let _ = futures::executor::block_on(admin.create_topics([&topic], &rdkafka::admin::AdminOptions::new()));
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", "127.0.0.1:9092").create().unwrap();
    let mut want = Vec::new();
    for i in 0..300 {
        let region = ["eu", "us", "apac"][i % 3];
        let date = format!("2024-05-0{}", 1 + i % 2);
        let v = serde_json::json!({"event_id": i, "tag": tag, "amount": i * 3, "order_date": date, "region": region});
        producer.send(BaseRecord::<(), str>::to("raw-events").payload(&v.to_string())).unwrap();
        want.push(v.to_string());
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let log = std::fs::File::create(dir.join("job.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .env("ENVIRONMENT", &env_name)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn,ferris_engine=info,ferris_connectors=info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    // the message's fields (SELECT * also gives the metadata columns `_key`, `_offset`, …)
    let mine = || -> Vec<String> {
        let rows: Vec<String> = s3_rows(&bucket, "orders/")
            .into_iter()
            .filter(|r| r.contains(&tag))
            .map(|r| {
                let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&r).unwrap();
                // year/month/day: the prefix's date, read back as Hive columns
                v.retain(|k, _| !k.starts_with('_') && !["year", "month", "day"].contains(&k.as_str()));
                serde_json::Value::Object(v).to_string()
            })
            .collect();
        canonical_lines(&rows.join("\n"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && mine().len() < want.len() {
        std::thread::sleep(Duration::from_millis(500));
    }
    interrupt(&mut child, dir);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
    assert!(!log.contains("WARN") || !log.contains("does nothing"), "every key of the guide's file is used:\n{log}");
    // Hive columns come back as text from the keys
    let want = canonical_lines(&want.join("\n"));
    assert_same_rows("the guide's warehouse sink", &mine(), &want);
    let now = chrono::Utc::now();
    let prefix = format!("orders/year={}/month={}/day={}/order_date=2024-05-01/region=eu/", now.format("%Y"), now.format("%m"), now.format("%d"));
    assert!(!keys(&bucket, &prefix).is_empty(), "objects under {prefix}: {:?}", keys(&bucket, "orders/"));
}

/// Azurite (Microsoft's emulator, `bash tests/services/azure.sh start`) through azure-storage-blob.
fn azure(args: &[&str]) -> String {
    crate::common::python_client("azure_blob.py", args, "is Azurite up? 'bash tests/services/azure.sh start'")
}

/// The emulator's well-known account key (public: Azurite's documented default).
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azure Blob Storage through the same connector (`az://container/prefix`), on Azurite: Hive
/// partitions read as columns and pruned by WHERE, with the account and its key given; the
/// output written as partitioned Parquet with `use_emulator` alone, once plainly and once under
/// `use_transactions` (block lists committed at the checkpoint), read back by Microsoft's
/// Python client exactly; a wrong key is an error at start naming the container, the key
/// nowhere.
#[test]
fn azure_blob_storage_through_the_same_connector() {
    let tmp = tempfile::tempdir().unwrap();
    let container = unique("az");
    azure(&["create", &container]);
    let data = sales();
    for (key, text, _) in &data {
        let f = tmp.path().join("upload.tmp");
        std::fs::write(&f, text).unwrap();
        azure(&["put", &container, key, f.to_str().unwrap()]);
    }
    let account = |name: &str, key: &str| format!("'{name}.use_emulator' = 'true', '{name}.account_name' = 'devstoreaccount1', '{name}.access_key' = '{key}'");
    let job = |out: &str, extra: &str| {
        format!(
            "CREATE STREAM s AS SELECT id, amount, item, region FROM sales WHERE year = 2024 AND amount >= 100 INTO lake WITH (
             'sales.type' = 's3_source', 'sales.path' = 'az://{container}/sales/', {},
             'lake.type' = 's3_sink', 'lake.path' = 'az://{container}/{out}/', 'lake.use_emulator' = 'true', 'lake.format' = 'parquet',
             'lake.partition_columns' = 'region'{extra});",
            account("sales", AZURITE_KEY)
        )
    };
    let want: Vec<String> = sales_2024_from_100(&data);
    for (out, extra) in [("plain", ""), ("txn", ", 'use_transactions' = 'true'")] {
        let run = run_sql(tmp.path(), &job(out, extra));
        assert_ok(&run);
        assert!(run.stderr.contains("2 of 4 objects skipped by the WHERE clause"), "{}", run.stderr);
        assert!(!format!("{}{}", run.stdout, run.stderr).contains(&AZURITE_KEY[..20]), "the key on no output");
        assert_same_rows(&format!("az:// Parquet ({out})"), &canonical_lines(&azure(&["rows", &container, &format!("{out}/")])), &want);
        let names = azure(&["list", &container, &format!("{out}/")]);
        assert!(names.lines().all(|n| n.starts_with(&format!("{out}/region=")) && n.ends_with(".parquet")), "{names}");
    }
    // a key the account does not have: refused at start, naming the container
    let bad = job("bad", "")
        .replace(AZURITE_KEY, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=")
        .replace("'sales.use_emulator'", "'sales.region' = 'eu-west-1', 'sales.use_emulator'");
    let run = run_sql(tmp.path(), &bad);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("key 'sales.region' does nothing for az://"), "a key of another store is warned about: {}", run.stderr);
    assert!(run.stderr.contains(&format!("listing az://{container}/sales")) && run.stderr.contains("403 Forbidden"), "{}", run.stderr);
    assert!(!run.stderr.contains("d3Jvbmcta2V5"), "{}", run.stderr);
}

/// Google Cloud Storage through the same connector (`gs://bucket/prefix`), read from
/// fake-gcs-server (`bash tests/services/gcs.sh start`) with `endpoint` and `skip_signature`:
/// Hive partitions as columns, pruned by WHERE, the rows exact. (The emulator does not take
/// object_store's XML-API uploads, so writing to `gs://` is not tested here.)
#[test]
fn google_cloud_storage_is_read_through_the_same_connector() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = unique("gs");
    let hint = "is fake-gcs-server up? 'bash tests/services/gcs.sh start'";
    crate::common::python_client("gcs_objects.py", &["mkbucket", &bucket], hint);
    let data = sales();
    for (key, text, _) in &data {
        let f = tmp.path().join("upload.tmp");
        std::fs::write(&f, text).unwrap();
        crate::common::python_client("gcs_objects.py", &["put", &bucket, key, f.to_str().unwrap()], hint);
    }
    let endpoint = std::env::var("GCS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4443".to_string());
    let sql = format!(
        "CREATE STREAM s AS SELECT id, amount, item, region FROM sales WHERE year = 2024 AND amount >= 100 INTO out WITH (
         'sales.type' = 's3_source', 'sales.path' = 'gs://{bucket}/sales/', 'sales.endpoint' = '{endpoint}', 'sales.skip_signature' = 'true',
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');"
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert!(run.stderr.contains("2 of 4 objects skipped by the WHERE clause"), "{}", run.stderr);
    let want: Vec<String> = sales_2024_from_100(&data);
    assert_same_rows("gs:// objects read", &file_rows(&tmp.path().join("out.jsonl")), &want);
}
