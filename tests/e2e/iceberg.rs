//! Iceberg tables written by `iceberg_sink` and read back with pyiceberg
//! (tests/python/iceberg_tables.py): a filesystem catalog in a local warehouse, a SQL catalog
//! in PostgreSQL (`tests/services/postgres.sh`) over a warehouse on the S3 server
//! (`tests/services/s3.sh`). Rows are compared with DataFusion's batch answer on the same
//! input; partitions, statistics and snapshots with what pyiceberg plans and reports; exactly
//! once through SIGKILLs. DuckDB's `iceberg` extension (tests/python/duckdb_iceberg.py, on the
//! DuckDB whose extension wheels are on PyPI) reads the filesystem catalog's table as well.

use std::path::Path;

use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionContext};
use serde_json::Value;

use crate::checkpoints::{assert_exactly_once_rows, chaos_seed, crash_and_finish, kill_test_input, tailed_window_job};
use crate::common::{assert_ok, assert_same_rows, batch_rows, python_client, rows_of_batches, run_sql};

const HINT: &str = "pip install 'pyiceberg[sql-postgres]' pyarrow; S3 and PostgreSQL from tests/services";

/// pyiceberg on `table` (a table directory, or `namespace.table` with `--sql`).
fn pyiceberg(opts: &[&str], table: &str, cmd: &[&str]) -> String {
    let mut args: Vec<&str> = opts.to_vec();
    args.push(table);
    args.extend_from_slice(cmd);
    python_client("iceberg_tables.py", &args, HINT)
}

/// Every row of the table's current snapshot as pyiceberg reads it, canonical and sorted
/// (`select` over table `t` picks and casts the columns).
async fn table_rows(dir: &Path, opts: &[&str], table: &str, select: &str) -> Vec<String> {
    let out = dir.join(format!("readback-{}.parquet", std::process::id()));
    pyiceberg(opts, table, &["rows", out.to_str().unwrap()]);
    let ctx = SessionContext::new();
    ctx.register_parquet("t", out.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let rows = batch_rows(&ctx, select).await;
    let _ = std::fs::remove_file(out);
    rows
}

/// Every row of a filesystem-catalog table as DuckDB's `iceberg` extension reads it
/// (`iceberg_scan` of the table's directory), canonical and sorted.
async fn duckdb_rows(dir: &Path, table: &str, select: &str) -> Vec<String> {
    let python = std::process::Command::new("bash").arg(crate::common::repo().join("tests/services/python.sh")).arg("duckdb-iceberg-python").output().unwrap();
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let out = dir.join("duckdb-readback.parquet");
    let run = crate::common::output_within(
        std::process::Command::new(&python).arg(crate::common::repo().join("tests/python/duckdb_iceberg.py")).args([table, out.to_str().unwrap()]),
    );
    assert!(run.status.success(), "duckdb_iceberg.py: {}", String::from_utf8_lossy(&run.stderr));
    let ctx = SessionContext::new();
    ctx.register_parquet("t", out.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    batch_rows(&ctx, select).await
}

fn describe(opts: &[&str], table: &str) -> Value {
    serde_json::from_str(&pyiceberg(opts, table, &["describe"])).unwrap()
}

fn plan(opts: &[&str], table: &str, filter: &[&str]) -> usize {
    let mut cmd = vec!["plan"];
    cmd.extend_from_slice(filter);
    pyiceberg(opts, table, &cmd).trim().parse().unwrap()
}

/// Orders over three days in three countries (and some without one), as JSON lines.
fn orders(path: &Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        let country = match i % 7 {
            0 => "null".to_string(),
            k => format!("\"{}\"", ["DE", "FR", "US"][k % 3]),
        };
        let day = 1 + (i * 3 / n);
        let (h, m, s) = ((i / 60) % 24, i % 60, (i * 7) % 60);
        text.push_str(&format!(
            "{{\"id\":{i},\"country\":{country},\"amount\":{}.{:02},\"qty\":{},\"ts\":\"2024-05-0{day}T{h:02}:{m:02}:{s:02}\"}}\n",
            (i * 37) % 500,
            i % 100,
            i % 9
        ));
    }
    std::fs::write(path, text).unwrap();
}

const ORDERS_SQL: &str = "SELECT id, country, amount, CAST(qty AS INT) AS qty, CAST(ts AS TIMESTAMP) AS ts, \
     arrow_cast(CAST(ts AS TIMESTAMP), 'Timestamp(Millisecond, Some(\"UTC\"))') AS ts_utc FROM orders WHERE amount > 10";

async fn orders_answer(input: &Path) -> Vec<String> {
    orders_answer_where(input, "true").await
}

/// The batch answer of the orders query, with `filter` on its output.
async fn orders_answer_where(input: &Path, filter: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    ctx.register_json("orders", input.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    let batches = ctx.sql(&format!("SELECT * FROM ({ORDERS_SQL}) WHERE {filter}")).await.unwrap().collect().await.unwrap();
    if batches.is_empty() {
        return Vec::new();
    }
    // as the table holds it: timestamps in microseconds
    let ctx2 = SessionContext::new();
    ctx2.register_batch("a", datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()).unwrap();
    batch_rows(&ctx2, READBACK).await
}

/// The columns read back, in one form on both sides (`a`: the query's answer, `t`: the table).
const READBACK: &str = "SELECT id, country, amount, qty, arrow_cast(ts, 'Timestamp(Microsecond, None)') AS ts, \
     arrow_cast(ts_utc, 'Timestamp(Microsecond, Some(\"UTC\"))') AS ts_utc FROM a";

fn readback(table: &str) -> String {
    READBACK.replace(" FROM a", &format!(" FROM {table}"))
}

/// A bounded job creates a table partitioned by day and country in a local warehouse: pyiceberg
/// reads exactly the batch answer; every data file holds one partition, with row counts and
/// bounds that let pyiceberg skip files; a second run appends a second snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_creates_a_partitioned_table_that_pyiceberg_reads_and_prunes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("orders.jsonl");
    orders(&input, 3_000);
    let sql = format!(
        "CREATE STREAM lake_orders AS {ORDERS_SQL} INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
         'lake.type' = 'iceberg_sink', 'lake.warehouse' = 'warehouse', 'lake.table' = 'sales.orders', 'lake.partition_by' = 'day(ts), country');",
        input.display()
    );
    let run = run_sql(dir, &sql);
    assert_ok(&run);
    let table = dir.join("warehouse/sales/orders");
    let table = table.to_str().unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("warehouse/sales/orders/metadata/version-hint.text")).unwrap(), "2", "created (v1), then one commit (v2)");
    let want = orders_answer(&input).await;
    let got = table_rows(dir, &[], table, &readback("t")).await;
    assert_same_rows("iceberg table read by pyiceberg", &got, &want);
    let got = duckdb_rows(dir, table, &readback("t")).await;
    assert_same_rows("iceberg table read by DuckDB's iceberg extension", &got, &want);

    let d = describe(&[], table);
    assert_eq!(d["format_version"], 2);
    let spec: Vec<String> =
        d["spec"].as_array().unwrap().iter().map(|f| format!("{}:{}", f["name"].as_str().unwrap(), f["transform"].as_str().unwrap())).collect();
    assert_eq!(spec, ["ts_day:day", "country:identity"]);
    let files = d["files"].as_array().unwrap();
    // three days × (three countries + no country)
    assert_eq!(files.len(), 12, "one file per partition: {files:#?}");
    let rows: u64 = files.iter().map(|f| f["record_count"].as_u64().unwrap()).sum();
    assert_eq!(rows as usize, want.len());
    let id_field = d["schema"].as_array().unwrap().iter().find(|f| f["name"] == "id").unwrap()["id"].to_string();
    for f in files {
        assert!(f["path"].as_str().unwrap().contains("/data/ts_day=2024-05-0"), "{f}");
        assert_eq!(f["value_counts"][&id_field], f["record_count"], "{f}");
        assert!(f["lower"].get(&id_field).is_some() && f["upper"].get(&id_field).is_some(), "bounds of id: {f}");
    }
    let snaps = d["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["summary"]["ferris.sink"], "lake");
    // pruning by partition and by statistics
    assert_eq!(plan(&[], table, &["country", "=", "DE"]), 3, "one file per day for DE");
    assert_eq!(plan(&[], table, &["id", ">", "100000"]), 0, "no file holds such ids");
    let wanted_files = |keep: &dyn Fn(&Value) -> bool| files.iter().filter(|f| keep(f)).count();
    assert_eq!(plan(&[], table, &["id", "<", "10"]), wanted_files(&|f| f["lower"][&id_field].as_i64().unwrap() < 10));
    assert!(plan(&[], table, &["id", "<", "10"]) < files.len(), "statistics prune files");
    // the bounds are the files' real extremes: what a filtered scan returns is exactly right
    for (filter, sql) in [(["id", "<", "10"], "id < 10"), (["id", ">", "2900"], "id > 2900"), (["country", "=", "FR"], "country = 'FR'")] {
        let out = dir.join("filtered.parquet");
        let mut cmd = vec!["rows", out.to_str().unwrap()];
        cmd.extend_from_slice(&filter);
        pyiceberg(&[], table, &cmd);
        let ctx = SessionContext::new();
        ctx.register_parquet("t", out.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        let got = batch_rows(&ctx, &readback("t")).await;
        let wanted: Vec<String> = orders_answer_where(&input, sql).await;
        assert_same_rows(&format!("pyiceberg scan WHERE {sql}"), &got, &wanted);
    }
    // upper bounds and null counts: ids are 0..3000, countries null in every 7th row
    let country_field = d["schema"].as_array().unwrap().iter().find(|f| f["name"] == "country").unwrap()["id"].to_string();
    for f in files {
        let (lo, hi) = (f["lower"][&id_field].as_i64().unwrap(), f["upper"][&id_field].as_i64().unwrap());
        assert!(lo <= hi && hi < 3000, "{f}");
        let null_country = f["path"].as_str().unwrap().contains("country=null");
        assert_eq!(f["null_counts"][&country_field].as_u64().unwrap() == f["record_count"].as_u64().unwrap(), null_country, "{f}");
    }

    // a second run appends
    let run = run_sql(dir, &sql);
    assert_ok(&run);
    let d = describe(&[], table);
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 2);
    let got = table_rows(dir, &[], table, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM t").await;
    assert_eq!(got, [format!("{{\"ids\":{},\"n\":{}}}", want.len(), 2 * want.len())]);
}

/// A SQL catalog in PostgreSQL over a warehouse on the S3 server: pyiceberg's SqlCatalog finds
/// the table and reads exactly the batch answer; a query whose columns do not fit the table is
/// refused naming the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_catalog_in_postgres_over_an_s3_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bucket = crate::s3::unique("wh");
    crate::s3::mkbucket(&bucket);
    let input = dir.join("orders.jsonl");
    orders(&input, 2_000);
    let pg = crate::postgres::url();
    let catalog = format!("c{}", std::process::id());
    let namespace = format!("ns{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000);
    let with = |query: &str| {
        format!(
            "CREATE STREAM lake_orders AS {query} INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
             'lake.type' = 'iceberg_sink', 'lake.catalog.type' = 'sql', 'lake.catalog.uri' = '{pg}', 'lake.catalog.name' = '{catalog}',
             'lake.warehouse' = 's3://{bucket}/warehouse', 'lake.table' = '{namespace}.orders', 'lake.partition_by' = 'month(ts)',
             'lake.endpoint' = '{}', 'lake.access_key_id' = 'testing', 'lake.secret_access_key' = 'testing');",
            input.display(),
            crate::s3::endpoint()
        )
    };
    let run = run_sql(dir, &with(ORDERS_SQL));
    assert_ok(&run);
    assert!(!run.stderr.contains("ferris-test-pw"), "no password in the log: {}", run.stderr);
    let opts = ["--s3", &crate::s3::endpoint(), "--sql", &pg, &catalog];
    let opts: Vec<&str> = opts.iter().map(|s| s.as_ref()).collect();
    let ident = format!("{namespace}.orders");
    let want = orders_answer(&input).await;
    let got = table_rows(dir, &opts, &ident, &readback("t")).await;
    assert_same_rows("iceberg table in a sql catalog on S3", &got, &want);
    let d = describe(&opts, &ident);
    assert!(
        d["location"].as_str().unwrap().starts_with(&format!("s3://{bucket}/warehouse/{namespace}/orders")),
        "as pyiceberg places tables: {}",
        d["location"]
    );
    assert_eq!(d["files"].as_array().unwrap().len(), 1, "May 2024 only");

    let bad = run_sql(dir, &with("SELECT id, CAST(amount AS VARCHAR) AS amount FROM orders"));
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("'amount'") && bad.stderr.contains(&ident), "{}", bad.stderr);
}

/// Data files larger than an upload part go up in parts and roll at `target_file_size`, in a
/// filesystem-catalog warehouse on the S3 server: every row once, the files' sizes as the
/// store has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_up_in_parts_and_roll_at_target_file_size_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bucket = crate::s3::unique("whbig");
    crate::s3::mkbucket(&bucket);
    let input = dir.join("big.jsonl");
    // random-looking text that compresses little: about 12 MB of Parquet
    let mut text = String::with_capacity(64 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..400_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{{\"id\":{i},\"blob\":\"{x:016x}{:016x}\"}}\n", x.rotate_left(29)));
    }
    std::fs::write(&input, text).unwrap();
    let run = run_sql(
        dir,
        &format!(
            "CREATE STREAM big AS SELECT id, blob FROM b INTO lake WITH ('b.type' = 'file_source', 'b.path' = '{}', 'b.format' = 'jsonlines',
             'lake.type' = 'iceberg_sink', 'lake.warehouse' = 's3://{bucket}/wh', 'lake.table' = 'raw.big', 'lake.part_size' = '5MB',
             'lake.target_file_size' = '7MB', 'lake.compression' = 'snappy',
             'lake.endpoint' = '{}', 'lake.access_key_id' = 'testing', 'lake.secret_access_key' = 'testing');",
            input.display(),
            crate::s3::endpoint()
        ),
    );
    assert_ok(&run);
    let table = format!("s3://{bucket}/wh/raw/big");
    let opts = ["--s3", &crate::s3::endpoint()];
    let d = describe(&opts, &table);
    let files = d["files"].as_array().unwrap();
    assert!(files.len() >= 2, "rolled at target_file_size: {files:#?}");
    assert!(files.iter().any(|f| f["file_size"].as_u64().unwrap() > 5 << 20), "some file went up in parts: {files:#?}");
    let got =
        table_rows(dir, &opts, &table, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, MIN(id) AS lo, MAX(id) AS hi, COUNT(DISTINCT blob) AS blobs FROM t")
            .await;
    assert_eq!(got, [r#"{"blobs":400000,"hi":399999,"ids":400000,"lo":0,"n":400000}"#]);
}

/// A REST catalog: the sink creates the namespace and table through the protocol and commits
/// snapshots by it; pyiceberg's REST client reads exactly the batch answer. The server is a
/// stand-in (tests/python/iceberg_rest.py: pyiceberg's catalog behind the REST endpoints),
/// as no REST catalog server can be installed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_catalog_places_and_commits_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = crate::common::free_port();
    let server = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(crate::common::repo().join("tests/python/iceberg_rest.py"))
        .arg(dir.join("catalog"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the REST catalog stand-in");
    let _server = crate::common::Guard(server);
    crate::common::wait_port(port);
    let input = dir.join("orders.jsonl");
    orders(&input, 1_500);
    let uri = format!("http://127.0.0.1:{port}");
    let job = format!(
        "CREATE STREAM lake_orders AS {ORDERS_SQL} INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
         'lake.type' = 'iceberg_sink', 'lake.catalog.type' = 'rest', 'lake.catalog.uri' = '{uri}', 'lake.table' = 'shop.orders',
         'lake.partition_by' = 'country');",
        input.display()
    );
    assert_ok(&run_sql(dir, &job));
    assert_ok(&run_sql(dir, &job));
    let opts = ["--rest", uri.as_str()];
    let want = orders_answer(&input).await;
    let got = table_rows(dir, &opts, "shop.orders", &format!("SELECT DISTINCT * FROM ({})", readback("t"))).await;
    assert_same_rows("iceberg table in a REST catalog", &got, &want);
    let d = describe(&opts, "shop.orders");
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 2, "two runs, two snapshots");
    let n: u64 = d["files"].as_array().unwrap().iter().map(|f| f["record_count"].as_u64().unwrap()).sum();
    assert_eq!(n as usize, 2 * want.len());
    assert!(d["location"].as_str().unwrap().contains("/catalog/wh/"), "placed by the server: {}", d["location"]);
}

/// A SQL catalog whose tables were made without the `iceberg_type` column (older pyiceberg,
/// Java's default schema), in a PostgreSQL schema of its own: the sink creates and appends to
/// its table there, and pyiceberg reads it from the metadata the catalog points at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_catalog_without_iceberg_type_is_used_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let schema =
        format!("icev0_{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000);
    crate::postgres::exec(&format!(
        "CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.iceberg_tables (catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, \
           metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000), PRIMARY KEY (catalog_name, table_namespace, table_name)); \
         CREATE TABLE {schema}.iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL, \
           property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL, PRIMARY KEY (catalog_name, namespace, property_key));"
    ));
    let input = dir.join("orders.jsonl");
    orders(&input, 500);
    let uri = format!("{}?options=-csearch_path%3D{schema}", crate::postgres::url());
    let job = format!(
        "CREATE STREAM o AS {ORDERS_SQL} INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
         'lake.type' = 'iceberg_sink', 'lake.catalog.type' = 'sql', 'lake.catalog.uri' = '{uri}', 'lake.warehouse' = 'wh', 'lake.table' = 'v0.orders');",
        input.display()
    );
    assert_ok(&run_sql(dir, &job));
    assert_ok(&run_sql(dir, &job));
    let rows = crate::postgres::rows(&format!("SELECT table_namespace, table_name, metadata_location FROM {schema}.iceberg_tables"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row: Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!((row["table_namespace"].as_str(), row["table_name"].as_str()), (Some("v0"), Some("orders")));
    let metadata = row["metadata_location"].as_str().unwrap().to_string();
    let want = orders_answer(&input).await;
    let got = table_rows(dir, &[], &metadata, &format!("SELECT DISTINCT * FROM ({})", readback("t"))).await;
    assert_same_rows("table of a catalog without iceberg_type", &got, &want);
    assert_eq!(describe(&[], &metadata)["snapshots"].as_array().unwrap().len(), 2);
    crate::postgres::exec(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A windowed aggregate over a tailed file into an Iceberg table under `use_transactions`,
/// killed five times at random moments: the table holds every window exactly once (the batch
/// answer), and no checkpoint was appended twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_job_appends_each_window_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, want) = kill_test_input(dir, 20_000).await;
    let sink = "'use_transactions' = 'true', 'out.type' = 'iceberg_sink', 'out.warehouse' = 'wh', 'out.table' = 'web.windows'";
    std::fs::write(dir.join("job.sql"), tailed_window_job(&input, sink)).unwrap();
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let n = want.len() as u64;
    let table = dir.join("wh/web/windows");
    let table_s = table.to_str().unwrap().to_string();
    let held = |t: &str| -> u64 {
        if !Path::new(t).join("metadata").exists() {
            return 0;
        }
        describe(&[], t)["files"].as_array().unwrap().iter().map(|f| f["record_count"].as_u64().unwrap()).sum()
    };
    crash_and_finish(dir, 5, seed, &input, &lines, |_| held(&table_s) >= n);
    let select = format!("SELECT {WINDOW_COLUMNS} FROM t");
    let out = dir.join("all.parquet");
    pyiceberg(&[], &table_s, &["rows", out.to_str().unwrap()]);
    let ctx = SessionContext::new();
    ctx.register_parquet("t", out.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let batches = ctx.sql(&select).await.unwrap().collect().await.unwrap();
    // every row as read, duplicates kept
    let lines = rows_of_batches(&batches);
    assert_exactly_once_rows(&format!("Iceberg exactly once after 5 kills (seed {seed})"), &lines, &want);
    let d = describe(&[], &table_s);
    let mut seen = std::collections::BTreeSet::new();
    for s in d["snapshots"].as_array().unwrap() {
        let key = (s["summary"]["ferris.run"].clone().to_string(), s["summary"]["ferris.checkpoint"].clone().to_string());
        assert!(seen.insert(key.clone()), "checkpoint appended twice: {key:?}");
    }
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint:\n{log}");
}

/// The same windowed job without transactions (checkpoints, commits at each one), killed three
/// times: the table loses no window (a window may be appended again after a restart: at least
/// once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_a_simple_job_loses_no_window() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, lines, want) = kill_test_input(dir, 20_000).await;
    let sink = "'out.type' = 'iceberg_sink', 'out.warehouse' = 'wh', 'out.table' = 'web.windows'";
    std::fs::write(dir.join("job.sql"), tailed_window_job(&input, sink)).unwrap();
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let table = dir.join("wh/web/windows");
    let table_s = table.to_str().unwrap().to_string();
    let distinct = |t: &str| -> usize {
        if !Path::new(t).join("metadata").exists() {
            return 0;
        }
        let out = Path::new(t).join("../../poll.parquet");
        pyiceberg(&[], t, &["rows", out.to_str().unwrap()]);
        let rows = pq_rows(&out);
        rows.into_iter().collect::<std::collections::BTreeSet<_>>().len()
    };
    crash_and_finish(dir, 3, seed, &input, &lines, |_| distinct(&table_s) >= want.len());
    let out = dir.join("all.parquet");
    pyiceberg(&[], &table_s, &["rows", out.to_str().unwrap()]);
    let ctx = SessionContext::new();
    ctx.register_parquet("t", out.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let got = batch_rows(&ctx, &format!("SELECT DISTINCT {WINDOW_COLUMNS} FROM t")).await;
    assert_same_rows(&format!("Iceberg at least once after 3 kills (seed {seed})"), &got, &want);
}

/// The rows of a Parquet file, canonical (duplicates kept), for polling.
fn pq_rows(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    rows_of_batches(&batches)
}

/// The window job's columns as the batch answer has them (milliseconds).
const WINDOW_COLUMNS: &str = "arrow_cast(window_start, 'Timestamp(Millisecond, None)') AS window_start, arrow_cast(window_end, 'Timestamp(Millisecond, None)') AS window_end, user_id, n, total";

/// A bounded job whose query selects nothing still creates the table, empty, with the query's
/// columns.
#[test]
fn an_empty_result_creates_an_empty_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("orders.jsonl");
    orders(&input, 50);
    let run = run_sql(
        dir,
        &format!(
            "CREATE STREAM none AS {ORDERS_SQL} AND id < 0 INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
             'lake.type' = 'iceberg_sink', 'lake.warehouse' = 'wh', 'lake.table' = 'sales.none');",
            input.display()
        ),
    );
    assert_ok(&run);
    let d = describe(&[], dir.join("wh/sales/none").to_str().unwrap());
    let columns: Vec<String> =
        d["schema"].as_array().unwrap().iter().map(|f| format!("{} {}", f["name"].as_str().unwrap(), f["type"].as_str().unwrap())).collect();
    assert_eq!(columns, ["id long", "country string", "amount double", "qty int", "ts timestamp", "ts_utc timestamptz"]);
    assert!(d["snapshots"].as_array().unwrap().is_empty() && d["files"].as_array().unwrap().is_empty(), "{d}");
}

/// Keys that cannot work are refused at start, naming the key; a catalog that cannot be
/// reached names the database and not the password.
#[test]
fn bad_iceberg_settings_are_clear_errors_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("orders.jsonl");
    orders(&input, 10);
    let job = |keys: &str, query: &str| {
        format!(
            "CREATE STREAM s AS {query} INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.format' = 'jsonlines',
             'lake.type' = 'iceberg_sink', 'lake.warehouse' = 'wh', {keys});",
            input.display()
        )
    };
    let cases = [
        ("'lake.table' = 'orders'", ORDERS_SQL, "lake.table"),
        ("'lake.table' = 'a.b', 'lake.partition_by' = 'week(ts)'", ORDERS_SQL, "lake.partition_by"),
        ("'lake.table' = 'a.b', 'lake.partition_by' = 'hour(country)'", ORDERS_SQL, "hour(country)"),
        ("'lake.table' = 'a.b', 'lake.catalog.type' = 'rest', 'lake.catalog.uri' = 'thrift://h:9083'", ORDERS_SQL, "lake.catalog.uri"),
        (
            "'lake.table' = 'a.b', 'lake.catalog.type' = 'rest', 'lake.catalog.uri' = 'http://127.0.0.1:1', 'lake.catalog.token' = 'tok-s3cr3t-pw'",
            ORDERS_SQL,
            "127.0.0.1:1",
        ),
        ("'lake.table' = 'a.b', 'lake.catalog.type' = 'hive'", ORDERS_SQL, "lake.catalog.type"),
        ("'lake.table' = 'a.b'", "SELECT CAST(id AS BIGINT UNSIGNED) AS big FROM orders", "'big'"),
        ("'lake.table' = 'a.b', 'lake.catalog.type' = 'sql', 'lake.catalog.uri' = 'postgresql://who:s3cr3t-pw@127.0.0.1:1/x'", ORDERS_SQL, "127.0.0.1:1/x"),
    ];
    // secrets of the catalog never reach explain
    std::fs::write(
        dir.join("explain.sql"),
        job("'lake.table' = 'a.b', 'lake.catalog.type' = 'rest', 'lake.catalog.uri' = 'http://127.0.0.1:1', 'lake.catalog.token' = 'tok-s3cr3t-pw', 'lake.catalog.credential' = 'id:cred-s3cr3t-pw'", ORDERS_SQL),
    )
    .unwrap();
    let explained = crate::common::ferris(dir, &["explain", "explain.sql"]);
    assert!(explained.stdout.contains("catalog.token = ****") && explained.stdout.contains("catalog.credential = ****"), "{}", explained.stdout);
    assert!(!format!("{}{}", explained.stdout, explained.stderr).contains("s3cr3t-pw"), "{}", explained.stdout);
    for (keys, query, needle) in cases {
        let run = run_sql(dir, &job(keys, query));
        assert_ne!(run.status, 0, "{keys}: should fail");
        assert!(run.stderr.contains(needle), "{keys}: the error should name {needle}:\n{}", run.stderr);
        assert!(!run.stderr.contains("s3cr3t-pw"), "{keys}: a password in the error:\n{}", run.stderr);
    }
}
