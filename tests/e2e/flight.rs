//! Arrow Flight and Flight SQL from Python, as an analyst would use them: pyarrow's
//! `FlightClient` subscribes to a running job's live output; the ADBC Flight SQL driver joins a
//! running job's table with a Parquet file the job reads, and queries a file by its path. Every
//! answer is compared with DataFusion's batch answer on the same files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};
use serde_json::Value;

use crate::common::{batch_rows, canonical_lines, data};
use crate::server::{json, start, wait_status, Server};

/// Runs a script of tests/python with a 90-second limit; its standard output.
fn python(dir: &Path, script: &str, args: &[String], env: &[(&str, &str)]) -> String {
    let out_path = dir.join(format!("{script}.out"));
    let err_path = dir.join(format!("{script}.err"));
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script_path: PathBuf = crate::common::repo().join("tests/python").join(script);
    let mut child = Command::new(py)
        .arg(&script_path)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 (bash tests/services/python.sh installs its clients)");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    let server = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert!(status.success(), "{script} failed ({status})\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{server}");
    out
}

/// Waits until job `name` has written `rows` rows.
fn wait_rows_out(srv: &Server, name: &str, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = json(&srv.base, "GET", &format!("/api/jobs/{name}/metrics"), "");
        if m["rows_out"] == rows {
            return;
        }
        assert!(Instant::now() < deadline, "job {name} never wrote {rows} rows: {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn order_lines() -> Vec<String> {
    std::fs::read_to_string(data("orders.jsonl")).unwrap().lines().map(str::to_string).collect()
}

fn amount(line: &str) -> f64 {
    serde_json::from_str::<Value>(line).unwrap()["amount"].as_f64().unwrap()
}

/// `{order_id, customer_id, amount}` of an orders line, canonical.
fn projected(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    serde_json::json!({"amount": v["amount"], "customer_id": v["customer_id"], "order_id": v["order_id"]}).to_string()
}

#[test]
fn pyarrow_subscribes_to_a_live_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = order_lines();
    let (first, rest) = lines.split_at(120);
    let tailed = tmp.path().join("orders.jsonl");
    std::fs::write(&tailed, first.join("\n") + "\n").unwrap();
    let more = tmp.path().join("more.jsonl");
    std::fs::write(&more, rest.join("\n") + "\n").unwrap();
    let srv = start(tmp.path(), &[]);
    let sql = format!(
        "CREATE STREAM big_orders AS SELECT order_id, customer_id, amount FROM orders WHERE amount > 100 INTO live \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.watch' = 'true', \
               'live.type' = 'flight_sink', 'live.retain.rows' = '5');",
        tailed.display()
    );
    let (code, doc) = json(&srv.base, "POST", "/api/jobs", &sql);
    assert_eq!(code, 201, "{doc}");
    let first_big: Vec<&String> = first.iter().filter(|l| amount(l) > 100.0).collect();
    let rest_big: Vec<&String> = rest.iter().filter(|l| amount(l) > 100.0).collect();
    wait_rows_out(&srv, "big_orders", first_big.len() as u64);

    // Subscribe, then the job's file grows: the 5 retained rows, then every new row, once.
    let last: Value = serde_json::from_str(rest_big.last().unwrap()).unwrap();
    let args = [
        srv.flight.to_string(),
        "big_orders".into(),
        "order_id".into(),
        last["order_id"].to_string(),
        more.display().to_string(),
        tailed.display().to_string(),
    ];
    let out = python(tmp.path(), "flight_live.py", &args, &[]);
    let (schema, rows) = out.split_once('\n').unwrap();
    assert_eq!(schema, "schema: order_id,customer_id,amount");
    let want: Vec<String> = first_big[first_big.len() - 5..].iter().chain(&rest_big).map(|l| projected(l)).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(canonical_lines(rows), want_sorted, "retained rows, then the live ones, none twice");
    // Live rows arrive in the order the job wrote them.
    let got_order: Vec<String> = rows.lines().map(|l| canonical_lines(l).remove(0)).collect();
    assert_eq!(got_order, want);

    // An unknown stream is a clear error.
    let (_, status) = json(&srv.base, "GET", "/api/jobs/big_orders/status", "");
    assert_eq!(status["sinks"]["sink_0_live"], "Connected", "{status}");
    let err = python(tmp.path(), "flight_sql_query.py", &[srv.flight.to_string(), "SELECT * FROM no_such_job".into()], &[]);
    assert!(err.contains("-- error:") && err.contains("no_such_job"), "{err}");

    // `stream` renames the stream and its table.
    let sql = format!(
        "CREATE STREAM renaming AS SELECT order_id FROM orders WHERE amount > 100 INTO live \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'live.type' = 'flight_sink', 'live.stream' = 'renamed');",
        data("orders.jsonl")
    );
    assert_eq!(json(&srv.base, "POST", "/api/jobs", &sql).0, 201);
    wait_status(&srv.base, "renaming", "Completed");
    let all_big = lines.iter().filter(|l| amount(l) > 100.0).count();
    let out = python(tmp.path(), "flight_sql_query.py", &[srv.flight.to_string(), "SELECT count(*) AS n FROM renamed".into()], &[]);
    assert_eq!(out.trim(), format!("-- query 1\n{{\"n\": {all_big}}}"));
    let (code, e) = json(&srv.base, "POST", "/api/jobs", &sql.replace("CREATE STREAM renaming", "CREATE STREAM renaming_too"));
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("the Flight stream 'renamed' is published by job 'renaming'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_flight_sql_joins_a_running_job_with_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    // The customers as Parquet, written by DataFusion from the sample CSV.
    let batch = SessionContext::new();
    let customers = tmp.path().join("customers.parquet");
    batch
        .read_csv(data("customers.csv"), CsvReadOptions::new())
        .await
        .unwrap()
        .write_parquet(customers.to_str().unwrap(), Default::default(), None)
        .await
        .unwrap();
    let tailed = tmp.path().join("orders.jsonl");
    std::fs::copy(data("orders.jsonl"), &tailed).unwrap();
    batch.register_json("orders", tailed.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    batch.register_parquet("customers", customers.to_str().unwrap(), Default::default()).await.unwrap();

    let srv = tokio::task::spawn_blocking({
        let dir = tmp.path().to_path_buf();
        move || start(&dir, &[])
    })
    .await
    .unwrap();
    // A running job (its orders file is tailed) enriching orders with the Parquet customers,
    // and a bounded job with only a file sink: both get a table.
    let sql = format!(
        "CREATE STREAM vip_orders AS SELECT o.order_id, o.customer_id, o.amount FROM orders o \
         JOIN customers c ON o.customer_id = c.customer_id WHERE o.amount > 100 AND c.customer_tier <> 'BRONZE' INTO live \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{orders}', 'orders.watch' = 'true', \
               'customers.type' = 'file_source', 'customers.path' = '{customers}', \
               'live.type' = 'flight_sink', 'live.retain.rows' = '100000');
         CREATE STREAM shipped AS SELECT order_id, status FROM orders WHERE status = 'SHIPPED' INTO out \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{orders}', 'out.type' = 'file_sink', 'out.path' = '{out}');",
        orders = tailed.display(),
        customers = customers.display(),
        out = tmp.path().join("shipped.jsonl").display()
    );
    let want_vip = batch_rows(
        &batch,
        "SELECT o.order_id, c.customer_name, o.amount FROM orders o JOIN customers c ON o.customer_id = c.customer_id \
         WHERE o.amount > 100 AND c.customer_tier <> 'BRONZE'",
    )
    .await;
    let want_shipped = batch_rows(&batch, "SELECT count(*) AS n, min(order_id) AS first, max(order_id) AS last FROM orders WHERE status = 'SHIPPED'").await;
    let want_tiers = batch_rows(&batch, "SELECT customer_tier, count(*) AS n FROM customers GROUP BY customer_tier").await;
    let dir = tmp.path().to_path_buf();
    let srv = tokio::task::spawn_blocking(move || {
        let (code, doc) = json(&srv.base, "POST", "/api/jobs", &sql);
        assert_eq!(code, 201, "{doc}");
        wait_rows_out(&srv, "vip_orders", want_vip.len() as u64);
        wait_status(&srv.base, "shipped", "Completed");
        assert_eq!(wait_status(&srv.base, "vip_orders", "Running")["status"], "Running");
        let queries = [
            "SELECT v.order_id, c.customer_name, v.amount FROM vip_orders v JOIN customers c ON v.customer_id = c.customer_id ORDER BY v.order_id".to_string(),
            "SELECT count(*) AS n, min(order_id) AS first, max(order_id) AS last FROM shipped".to_string(),
            format!("SELECT customer_tier, count(*) AS n FROM '{}' GROUP BY customer_tier", customers.display()),
            "DROP TABLE customers".to_string(),
            "@tables".to_string(),
        ];
        let mut args = vec![srv.flight.to_string()];
        args.extend(queries);
        let out = python(&dir, "flight_sql_query.py", &args, &[]);
        let sections: Vec<&str> = out.split("-- query ").skip(1).map(|s| s.split_once('\n').map_or("", |(_, rows)| rows)).collect();
        assert_eq!(sections.len(), 5, "{out}");
        assert_eq!(canonical_lines(sections[0]), want_vip, "the live table joined with the Parquet table");
        let ordered: Vec<i64> = sections[0].lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["order_id"].as_i64().unwrap()).collect();
        assert!(ordered.windows(2).all(|w| w[0] < w[1]), "ORDER BY is kept: {ordered:?}");
        assert_eq!(canonical_lines(sections[1]), want_shipped, "a bounded job's table");
        assert_eq!(canonical_lines(sections[2]), want_tiers, "a Parquet file by its path");
        assert!(sections[3].starts_with("-- error:") && sections[3].contains("DDL not supported"), "read-only: {}", sections[3]);
        assert_eq!(sections[4].trim(), r#"["customers", "orders", "shipped", "vip_orders"]"#, "GetObjects: each job's table and the bounded tables jobs read");

        // A deleted job's table is gone; the others stay.
        assert_eq!(json(&srv.base, "DELETE", "/api/jobs/shipped", "").0, 200);
        let out = python(&dir, "flight_sql_query.py", &[srv.flight.to_string(), "@tables".into(), "SELECT * FROM shipped".into()], &[]);
        assert!(out.contains(r#"["customers", "vip_orders"]"#), "{out}");
        assert!(out.contains("-- error:") && out.contains("table 'datafusion.public.shipped' not found"), "{out}");
        srv
    })
    .await
    .unwrap();
    drop(srv);
}

#[test]
fn flight_sql_queries_keep_to_the_memory_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[("FERRIS_MAX_MEMORY_MB", "2")]);
    let q = [
        srv.flight.to_string(),
        "SELECT count(*) AS n FROM generate_series(1, 10)".into(),
        // an aggregate that cannot spill to disk (a grouped one would, and finish slowly)
        "SELECT array_length(array_agg(value)) AS n FROM generate_series(1, 2000000)".into(),
    ];
    let out = python(tmp.path(), "flight_sql_query.py", &q, &[]);
    let (small, big) = out.split_once("-- query 2").unwrap();
    assert_eq!(small.trim(), "-- query 1\n{\"n\": 10}");
    // gRPC's RESOURCE_EXHAUSTED (ADBC names its own code first)
    assert!(big.contains("-- error:") && big.contains("(ResourceExhausted; DoGet") && big.contains("Resources exhausted"), "{big}");
    // the server goes on
    let again = python(tmp.path(), "flight_sql_query.py", &q[..2], &[]);
    assert_eq!(again.trim(), "-- query 1\n{\"n\": 10}");
}

#[test]
fn flight_demands_the_token_when_one_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[("FERRIS_AUTH_TOKEN", "s3cret")]);
    let q = [srv.flight.to_string(), "SELECT 1 AS one".into()];
    let denied = python(tmp.path(), "flight_sql_query.py", &q, &[("FERRIS_AUTH_TOKEN", "wrong")]);
    assert!(denied.contains("-- error:") && denied.contains("FERRIS_AUTH_TOKEN"), "{denied}");
    assert!(!denied.contains("s3cret"), "the token is never echoed: {denied}");
    let ok = python(tmp.path(), "flight_sql_query.py", &q, &[("FERRIS_AUTH_TOKEN", "s3cret")]);
    assert_eq!(ok.trim(), "-- query 1\n{\"one\": 1}");
}
