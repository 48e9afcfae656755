//! The job server over HTTP: deploy, list, status, metrics, stop, delete; errors as 4xx with
//! the message; Prometheus counters equal to the rows actually processed; a failing job does
//! not take the server down; the bearer token; `ferris-sql deploy` and `ferris-sql jobs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{data, free_port};

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    /// The Arrow Flight port.
    pub(crate) flight: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let flight = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["serve", "--http-port", &port.to_string(), "--flight-port", &flight.to_string()])
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&base).is_err() || TcpStream::connect(("127.0.0.1", flight)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, base, flight }
}

/// One HTTP/1.1 request; (status, body).
pub(crate) fn http(base: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(base).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, rest.to_string())
}

pub(crate) fn json(base: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(base, method, path, body, None);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
}

pub(crate) fn wait_status(base: &str, job: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, doc) = json(base, "GET", &format!("/api/jobs/{job}/status"), "");
        assert_eq!(code, 200, "{doc}");
        if doc["status"] == want {
            return doc;
        }
        assert!(Instant::now() < deadline, "job '{job}' never became {want}: {doc}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn orders_job(name: &str, out: &Path, extra: &str) -> String {
    format!(
        "CREATE STREAM {name} AS SELECT order_id, amount FROM orders WHERE amount > 100 INTO out \
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}'{extra}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        data("orders.jsonl"),
        out.display()
    )
}

#[test]
fn rest_api_deploys_watches_and_stops_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[("FERRIS_MAX_JOBS", "3")]);
    let b = srv.base.as_str();
    assert_eq!(json(b, "GET", "/health", "").1["status"], "ok");
    let (code, api) = json(b, "GET", "/api/openapi.json", "");
    assert_eq!(code, 200);
    assert!(api["paths"]["/api/jobs/{name}/status"].is_object());

    // A bounded job runs to completion; its metrics are the rows it processed.
    let out = tmp.path().join("big.jsonl");
    let (code, doc) = json(b, "POST", "/api/jobs", &orders_job("big_orders", &out, ""));
    assert_eq!(code, 201, "{doc}");
    assert_eq!(doc["deployed"][0], "big_orders");
    let status = wait_status(b, "big_orders", "Completed");
    assert_eq!(status["metrics"]["records_processed"], 240);
    let written = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    let want = std::fs::read_to_string(data("orders.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["amount"].as_f64().unwrap() > 100.0)
        .count() as u64;
    assert_eq!(written, want, "the job wrote exactly the orders over 100");
    let (_, m) = json(b, "GET", "/api/jobs/big_orders/metrics", "");
    assert_eq!(m["sinks"]["out"]["records"], written, "{m}");
    assert_eq!(m["rows_out"], written);
    let (_, list) = json(b, "GET", "/api/jobs", "");
    assert_eq!(list[0]["name"], "big_orders");
    assert_eq!(list[0]["sources"][0]["type"], "file_source");
    let (_, prom) = http(b, "GET", "/metrics", "", None);
    assert!(prom.contains("ferris_job_source_records_total{job=\"big_orders\",source=\"orders\"} 240"), "{prom}");
    assert!(prom.contains(&format!("ferris_job_sink_records_total{{job=\"big_orders\",sink=\"out\"}} {written}")), "{prom}");
    assert!(prom.contains("ferris_job_sources_total{job=\"big_orders\"} 1"), "{prom}");
    assert!(prom.contains("ferris_job_sink_write_seconds_bucket{job=\"big_orders\",sink=\"out\""), "a latency histogram: {prom}");

    // A streaming job runs until stopped; the status names its connectors.
    let tailed = tmp.path().join("tailed.jsonl");
    std::fs::copy(data("orders.jsonl"), &tailed).unwrap();
    let sql = orders_job("tail_orders", &tmp.path().join("tail.jsonl"), "").replace(&data("orders.jsonl"), tailed.to_str().unwrap());
    let sql = sql.replace("'orders.type' = 'file_source'", "'orders.type' = 'file_source', 'orders.watch' = 'true'");
    assert_eq!(json(b, "POST", "/api/jobs", &sql).0, 201);
    let running = wait_status(b, "tail_orders", "Running");
    assert_eq!(running["sources"]["source_0_orders"], "Connected", "{running}");
    assert_eq!(running["sinks"]["sink_0_out"], "Connected", "{running}");

    // Errors are 4xx with the message.
    let (code, e) = json(b, "POST", "/api/jobs", "CREATE STREAM x AS SELEC nothing");
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("syntax error at line 1, column 20 near 'SELEC'"), "{e}");
    let (code, e) = json(b, "POST", "/api/jobs", &orders_job("big_orders", &out, ""));
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("already exists"));
    let (code, e) = json(b, "POST", "/api/jobs", &orders_job("missing", &out, "").replace(&data("orders.jsonl"), "/nowhere/orders.jsonl"));
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("/nowhere/orders.jsonl"), "{e}");
    assert_eq!(json(b, "GET", "/api/jobs/nope/status", "").0, 404);
    assert_eq!(json(b, "POST", "/api/jobs", &orders_job("third", &tmp.path().join("3.jsonl"), "")).0, 201);
    let (code, e) = json(b, "POST", "/api/jobs", &orders_job("fourth", &tmp.path().join("4.jsonl"), ""));
    assert_eq!(code, 429, "{e}");
    assert!(e["error"].as_str().unwrap().contains("FERRIS_MAX_JOBS"));

    // Stop and delete.
    assert_eq!(json(b, "POST", "/api/jobs/tail_orders/stop", "").0, 200);
    wait_status(b, "tail_orders", "Stopped");
    assert_eq!(json(b, "DELETE", "/api/jobs/tail_orders", "").0, 200);
    assert_eq!(json(b, "GET", "/api/jobs/tail_orders/status", "").0, 404);
}

#[test]
fn a_failing_job_is_marked_and_the_server_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[]);
    let b = srv.base.as_str();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"order_id\": 1, \"amount\": 5.0}\nnot json\n").unwrap();
    let sql =
        orders_job("fragile", &tmp.path().join("f.jsonl"), ", 'orders.failure_strategy' = 'FailBatch', 'orders.schema' = 'order_id BIGINT, amount DOUBLE'")
            .replace(&data("orders.jsonl"), bad.to_str().unwrap());
    assert_eq!(json(b, "POST", "/api/jobs", &sql).0, 201);
    let doc = wait_status(b, "fragile", "Failed");
    assert!(doc["error"].as_str().unwrap().contains("bad.jsonl:2"), "the error names file and line: {doc}");
    assert_eq!(json(b, "GET", "/health", "").1["status"], "ok");
    // The CLI talks to the same server.
    let job = tmp.path().join("ok.sql");
    std::fs::write(&job, orders_job("after", &tmp.path().join("after.jsonl"), "")).unwrap();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_ferris-sql")).args(args).output().unwrap();
    let url = format!("http://{b}");
    let d = run(&["deploy", job.to_str().unwrap(), "--server", &url]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    wait_status(b, "after", "Completed");
    let l = run(&["jobs", "--server", &url]);
    let text = String::from_utf8_lossy(&l.stdout);
    assert!(text.contains("after") && text.contains("Completed") && text.contains("fragile") && text.contains("Failed"), "{text}");
}

#[test]
fn a_token_guards_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[("FERRIS_AUTH_TOKEN", "s3cret")]);
    let b = srv.base.as_str();
    assert_eq!(http(b, "GET", "/health", "", None).0, 200);
    let (code, body) = http(b, "GET", "/api/jobs", "", None);
    assert_eq!(code, 401);
    assert!(!body.contains("s3cret"));
    assert_eq!(http(b, "GET", "/api/jobs", "", Some("wrong")).0, 401);
    assert_eq!(http(b, "GET", "/api/jobs", "", Some("s3cret")).0, 200);
    assert_eq!(http(b, "GET", "/metrics", "", None).0, 401);
}

/// A broker that accepts connections and never answers (a hung server, a firewall that
/// swallows packets): a job deployed against it waits at planning for its schema, and neither
/// that wait nor two of them at once (the machine's two runtime workers) may freeze the REST
/// API or a job already running.
#[test]
fn deploying_against_a_silent_broker_leaves_the_api_and_other_jobs_running() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[]);
    let b = srv.base.clone();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        // accept, keep every connection open, answer nothing
        let mut open = Vec::new();
        for c in silent.incoming().take(64) {
            open.push(c);
        }
    });
    // a running job that tails a file: its rows must keep flowing
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"order_id\": 1, \"amount\": 500.0}\n").unwrap();
    let out = tmp.path().join("running.jsonl");
    let running = orders_job("running", &out, ", 'orders.watch' = 'true', 'orders.schema' = 'order_id BIGINT, amount DOUBLE', 'orders.batch.timeout' = '20ms'")
        .replace(&data("orders.jsonl"), input.to_str().unwrap());
    assert_eq!(json(&b, "POST", "/api/jobs", &running).0, 201);
    wait_status(&b, "running", "Running");
    let deploys: Vec<_> = (0..2)
        .map(|i| {
            let (b, sql) = (
                b.clone(),
                format!(
                    "CREATE STREAM stuck{i} AS SELECT * FROM t INTO o WITH ('t.type' = 'kafka_source', 't.bootstrap.servers' = '{addr}', 't.topic' = 'x', \
                     't.schema.inference.timeout' = '8s', 'o.type' = 'file_sink', 'o.path' = '{}/o{i}.jsonl');",
                    tmp.path().display()
                ),
            );
            std::thread::spawn(move || http(&b, "POST", "/api/jobs", &sql, None))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for n in 2..6 {
        let t = Instant::now();
        let (code, list) = json(&b, "GET", "/api/jobs", "");
        assert_eq!(code, 200, "{list}");
        assert!(t.elapsed() < Duration::from_secs(2), "GET /api/jobs took {:?} while jobs were being planned", t.elapsed());
        // the running job goes on: a line appended now comes out now
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
        writeln!(f, "{{\"order_id\": {n}, \"amount\": 500.0}}").unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::fs::read_to_string(&out).unwrap_or_default().lines().count() < n {
            assert!(Instant::now() < deadline, "the running job stalled while others were being planned");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for d in deploys {
        let (code, body) = d.join().unwrap();
        assert!(code >= 400 && body.contains("t") && !body.is_empty(), "a silent broker is an error at deploy: {code} {body}");
    }
    drop(srv);
    let _ = std::net::TcpStream::connect(addr);
    drop(held);
}

/// A Kafka sink whose broker cannot be reached says so: `Reconnecting` in the status document
/// and `ferris_job_sink_connection_status` 1 in the metrics, while the file sink beside it
/// stays `Connected` and writes (before, an unreachable broker showed `Connected`).
#[test]
fn an_unreachable_sink_shows_reconnecting() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(tmp.path(), &[]);
    let b = srv.base.as_str();
    let closed = free_port();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"order_id\": 1, \"amount\": 500.0}\n").unwrap();
    let sql = format!(
        "CREATE STREAM away AS SELECT order_id, amount FROM orders INTO ok, gone WITH ('orders.type' = 'file_source', 'orders.path' = '{}', \
         'orders.watch' = 'true', 'orders.schema' = 'order_id BIGINT, amount DOUBLE', 'ok.type' = 'file_sink', 'ok.path' = '{}/ok.jsonl', \
         'gone.type' = 'kafka_sink', 'gone.bootstrap.servers' = '127.0.0.1:{closed}', 'gone.topic' = 't', 'gone.message.timeout.ms' = '60000');",
        input.display(),
        tmp.path().display()
    );
    assert_eq!(json(b, "POST", "/api/jobs", &sql).0, 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let (code, doc) = json(b, "GET", "/api/jobs/away/status", "");
        assert_eq!(code, 200, "{doc}");
        if doc["sinks"]["sink_1_gone"] == "Reconnecting" {
            break doc;
        }
        assert!(Instant::now() < deadline, "the unreachable Kafka sink never showed Reconnecting: {doc}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(doc["sinks"]["sink_0_ok"], "Connected", "{doc}");
    assert_eq!(doc["status"], "Running", "{doc}");
    let (_, metrics) = http(b, "GET", "/metrics", "", None);
    let line = metrics.lines().find(|l| l.starts_with("ferris_job_sink_connection_status") && l.contains("sink=\"gone\"")).unwrap_or_default();
    assert!(line.ends_with(" 1"), "reconnecting is 1: {line}\n{metrics}");
    let line = metrics.lines().find(|l| l.starts_with("ferris_job_sink_connection_status") && l.contains("sink=\"ok\"")).unwrap_or_default();
    assert!(line.ends_with(" 0"), "connected is 0: {line}");
}
