//! HTTP on a real server on loopback (axum, in the test): the sink's rows arrive exactly as
//! DataFusion computes them through an outage of the endpoint (5xx answers, retried with the same
//! Idempotency-Key), a 4xx answer fails just its request under LogAndContinue and the job under
//! FailBatch, a RetryWithBackoff retry sends only what was not answered; the source reads a JSON
//! API at a `json.path` as a table joined with a file, and polls one with an incremental column
//! across a restart, each row once.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::checkpoints::{assert_exactly_once, interrupt, settle, sinks_created, start};
use crate::common::{assert_ok, assert_same_rows, batch_context, batch_rows, canonical_lines, data, file_rows, run_sql};

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    auth: String,
    api_key: String,
    content_type: String,
    body: String,
    status: u16,
}

type Answer = Box<dyn Fn(usize, &str) -> (u16, String) + Send + Sync>;

/// A server on 127.0.0.1: every request to `/hook` and `/api` is recorded and answered by
/// `answer(n, body)`, `n` counting requests from 0.
pub(crate) struct Server {
    pub(crate) base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    count: AtomicUsize,
    answer: Answer,
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let n = s.count.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&body).into_owned();
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (status, reply) = (s.answer)(n, &text);
    // a request with an API key must have the right one
    let (status, reply) = if headers.contains_key("x-api-key") && h("x-api-key") != "k-123" { (401, "wrong key".to_string()) } else { (status, reply) };
    s.seen.lock().unwrap().push(Seen {
        key: h("idempotency-key"),
        auth: h("authorization"),
        api_key: h("x-api-key"),
        content_type: h("content-type"),
        body: text,
        status,
    });
    (StatusCode::from_u16(status).unwrap(), reply)
}

impl Server {
    pub(crate) fn start(answer: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared { seen: Arc::clone(&seen), count: AtomicUsize::new(0), answer: Box::new(answer) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route("/hook", post(handle)).route("/api", get(handle).post(handle)).with_state(shared);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The rows of every request answered 2xx, canonical, each as often as it came.
    fn accepted_rows(&self) -> Vec<String> {
        let mut rows = Vec::new();
        for s in self.seen().iter().filter(|s| s.status < 300) {
            let lines = if s.body.trim_start().starts_with('[') {
                let items: Vec<serde_json::Value> = serde_json::from_str(&s.body).unwrap();
                items.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
            } else {
                s.body.clone()
            };
            rows.extend(canonical_lines(&lines));
        }
        rows.sort();
        rows
    }
}

const FILTER: &str = "SELECT order_id, customer_id, amount, status FROM orders WHERE amount > 100";

fn hook_job(base: &str, keys: &str) -> String {
    format!(
        "CREATE STREAM big AS {FILTER} INTO hook WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{}', \
         'hook.type' = 'http_sink', 'hook.url' = '{base}/hook', 'hook.retry.backoff' = '20ms', {keys});",
        data("orders.jsonl")
    )
}

async fn want_filtered(dir: &Path) -> Vec<String> {
    batch_rows(&batch_context(dir).await, FILTER).await
}

/// Three 503s in a row (the endpoint restarting) are retried with the same Idempotency-Key:
/// every row arrives once, at most `batch_size` per request, with the Authorization header,
/// and the token never reaches the job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_endpoint_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(|n, _| if (1..=3).contains(&n) { (503, "restarting".into()) } else { (200, "ok".into()) });
    let run = run_sql(tmp.path(), &hook_job(&server.base, "'hook.auth_header' = 'Bearer t0ken-s3cret', 'hook.batch_size' = '7'"));
    assert_ok(&run);
    assert!(!run.stderr.contains("t0ken-s3cret") && !run.stdout.contains("t0ken-s3cret"), "{}", run.stderr);
    assert!(run.stderr.contains("503 Service Unavailable: restarting; retrying"), "{}", run.stderr);
    let want = want_filtered(tmp.path()).await;
    assert_same_rows("rows posted", &server.accepted_rows(), &want);
    let seen = server.seen();
    let ok: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    assert_eq!(ok.len(), want.len().div_ceil(7), "7 rows per request");
    assert!(ok.iter().all(|s| s.auth == "Bearer t0ken-s3cret" && s.content_type == "application/json"));
    let keys: std::collections::BTreeSet<&str> = ok.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys.len(), ok.len(), "one Idempotency-Key per request");
    let failed: Vec<&Seen> = seen.iter().filter(|s| s.status == 503).collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|f| f.key == failed[0].key && keys.contains(f.key.as_str())), "retries repeat the key of the request that then succeeded");
}

/// A 4xx answer is the request's fault: not retried. LogAndContinue loses that request's rows
/// (one here) and nothing else; FailBatch stops the job with the status in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_fails_by_the_failure_strategy() {
    let tmp = tempfile::tempdir().unwrap();
    let reject = |_: usize, body: &str| if body.contains("\"order_id\":7,") { (422, "amount out of range".to_string()) } else { (200, String::new()) };
    let server = Server::start(reject);
    let run = run_sql(tmp.path(), &hook_job(&server.base, "'hook.batch_size' = '1', 'hook.format' = 'jsonlines'"));
    assert_ok(&run);
    let all = want_filtered(tmp.path()).await;
    assert!(run.stderr.contains("422 Unprocessable Entity: amount out of range"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("1 of a batch of {} rows lost (LogAndContinue)", all.len())), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("wrote [hook {} rows (1 failed batches, 1 rows dropped)]", all.len() - 1)), "{}", run.stderr);
    let seen = server.seen();
    assert_eq!(seen.iter().filter(|s| s.status == 422).count(), 1, "a 4xx is not retried");
    assert!(seen.iter().all(|s| s.content_type == "application/x-ndjson"));
    let want: Vec<String> = all.into_iter().filter(|r| !r.contains("\"order_id\":7,")).collect();
    assert_same_rows("rows posted", &server.accepted_rows(), &want);

    let server = Server::start(reject);
    let run = run_sql(tmp.path(), &hook_job(&server.base, "'hook.batch_size' = '1', 'hook.failure_strategy' = 'FailBatch'"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("http_sink 'hook': POST ") && run.stderr.contains("/hook answered 422 Unprocessable Entity"), "{}", run.stderr);
}

/// With no retries of its own, the sink fails the batch on the second request; the job's
/// RetryWithBackoff writes the batch again, and only the requests not yet answered go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_retry_sends_only_what_was_not_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(|n, _| if n == 1 || n == 2 { (500, "boom".into()) } else { (200, String::new()) });
    let keys = "'hook.batch_size' = '5', 'hook.retries' = '0', 'hook.failure_strategy' = 'RetryWithBackoff', 'hook.retry_backoff' = '50'";
    let run = run_sql(tmp.path(), &hook_job(&server.base, keys));
    assert_ok(&run);
    assert!(run.stderr.contains("write failed, retrying"), "{}", run.stderr);
    let want = want_filtered(tmp.path()).await;
    assert_same_rows("rows posted once each", &server.accepted_rows(), &want);
    let seen = server.seen();
    assert_eq!(seen.len(), want.len().div_ceil(5) + 2);
    // the failed request went out three times (two 500s, then 200), always with its first key
    assert_eq!(seen[1].key, seen[2].key);
    assert_eq!(seen[2].key, seen[3].key);
    assert_ne!(seen[0].key, seen[1].key);
}

/// The customers of an API (behind an API key, at `data.items`) joined with the orders file:
/// DataFusion's answer with the CSV file of the same customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_read_at_a_json_path_joins_like_the_file_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = batch_context(tmp.path()).await;
    let customers = ctx.sql("SELECT * FROM customers").await.unwrap().collect().await.unwrap();
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::WriterBuilder::new().build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
        for b in &customers {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    let body = format!("{{\"data\":{{\"items\":{}}},\"next\":null}}", String::from_utf8(buf).unwrap());
    let server = Server::start(move |_, _| (200, body.clone()));
    let sql = "SELECT o.order_id, o.amount, c.customer_name, c.customer_tier FROM orders o JOIN customers c ON o.customer_id = c.customer_id";
    let job = format!(
        "CREATE STREAM enriched AS {sql} INTO out WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{}', \
         'customers.type' = 'http_source', 'customers.url' = '{}/api', 'customers.json.path' = 'data.items', \
         'customers.headers.X-Api-Key' = 'k-123', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        data("orders.jsonl"),
        server.base
    );
    let run = run_sql(tmp.path(), &job);
    assert_ok(&run);
    assert!(!run.stderr.contains("k-123"), "{}", run.stderr);
    assert_same_rows("enriched orders", &file_rows(&tmp.path().join("out.jsonl")), &batch_rows(&ctx, sql).await);
    let seen = server.seen();
    assert!(!seen.is_empty() && seen.iter().all(|s| s.status == 200 && s.api_key == "k-123"), "{seen:?}");
}

/// An API answering with its latest ten events, polled every 50 ms with `incremental.column`:
/// each event once, across a restart that resumes after the last id read.
#[test]
fn a_polled_api_yields_each_event_once_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limit = Arc::new(AtomicUsize::new(60));
    let lim = Arc::clone(&limit);
    // the newest event so far: five more per answered call, up to the limit
    let newest = AtomicUsize::new(0);
    let server = Server::start(move |n, _| {
        if n == 4 {
            return (503, "busy".into());
        }
        let top = (newest.load(Ordering::SeqCst) + 5).min(lim.load(Ordering::SeqCst));
        newest.store(top, Ordering::SeqCst);
        let events: Vec<String> = (top.saturating_sub(9).max(1)..=top).map(|i| format!("{{\"id\":{i},\"kind\":\"e{}\"}}", i % 3)).collect();
        (200, format!("{{\"events\":[{}]}}", events.join(",")))
    });
    let sql = format!(
        "CREATE STREAM events AS SELECT id, kind FROM feed INTO out WITH (\
         'feed.type' = 'http_source', 'feed.url' = '{}/api', 'feed.json.path' = 'events', 'feed.schema' = 'id BIGINT, kind VARCHAR', \
         'feed.poll_interval' = '50ms', 'feed.incremental.column' = 'id', 'feed.retries' = '0', \
         'checkpoint.interval' = '200ms', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        server.base
    );
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let out = dir.join("out.jsonl");
    let lines = |p: &Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    let wait = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines(&out) < n {
            assert!(Instant::now() < deadline, "waiting for {n} rows; log:\n{}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    wait(60);
    interrupt(&mut child, dir);
    limit.store(90, Ordering::SeqCst);
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    wait(90);
    interrupt(&mut child, dir);
    let want: Vec<String> = (1..=90).map(|i| format!("{{\"id\":{i},\"kind\":\"e{}\"}}", i % 3)).collect();
    assert_exactly_once("polled events over two runs", &out, &canonical_lines(&want.join("\n")));
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "{log}");
    assert!(log.contains("503 Service Unavailable: busy; polling again"), "{log}");
}

/// A server on loopback that accepts connections and never answers (nor closes them): a hung
/// webhook. Its address.
fn silent_endpoint() -> std::net::SocketAddr {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in silent.incoming().take(256) {
            open.push(c);
        }
    });
    addr
}

/// A webhook that accepts connections and never answers, and a job stopped with Ctrl-C: the
/// stop waits `stop.timeout` for the last checkpoint and the sink, then gives up, says which
/// sink held it and exits non-zero (nothing acknowledged for the rows it held) — instead of
/// waiting out every retry of every request.
#[test]
fn a_stop_waits_for_a_hung_sink_no_longer_than_stop_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = silent_endpoint();
    std::fs::write(dir.join("in.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM s AS SELECT id FROM src INTO hook WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'src.watch' = 'true', \
             'src.schema' = 'id BIGINT', 'hook.type' = 'http_sink', 'hook.url' = 'http://{addr}/hook', 'hook.timeout' = '30s', 'hook.retries' = '5', \
             'stop.timeout' = '2s', 'checkpoint.interval' = '1s');"
        ),
    )
    .unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "the stop waited for the hung sink");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
    assert!(t.elapsed() < Duration::from_secs(8), "stopped after {:?}: two waits of 2 s, not 30 s timeouts\n{log}", t.elapsed());
    assert!(!status.success(), "rows were not delivered: the run says so\n{log}");
    assert!(log.contains("sink 'hook' did not finish writing within 2s after the job stopped ('stop.timeout')"), "{log}");
}

/// A webhook that accepts connections and never answers, beside a file sink, with the webhook's
/// own timeout at an hour: `sink.write.timeout` cuts each write to it off, `LogAndContinue`
/// counts its rows lost, and the file sink gets every row while the webhook hangs — the hung
/// service neither holds the job nor the other sink behind it. Without the bound the queue to
/// the webhook fills after five batches and the file never gets more than those.
#[test]
fn a_hung_sink_write_is_cut_off_by_sink_write_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = silent_endpoint();
    let rows = 120;
    let text: String = (0..rows).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    std::fs::write(dir.join("in.jsonl"), text).unwrap();
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE STREAM s AS SELECT id FROM src INTO hook, out WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'src.watch' = 'true', \
             'src.schema' = 'id BIGINT', 'src.batch.size' = '10', 'hook.type' = 'http_sink', 'hook.url' = 'http://{addr}/hook', 'hook.timeout' = '1h', \
             'hook.retries' = '0', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl', 'sink.write.timeout' = '300ms', 'sink.queue_size' = '1', \
             'failure_strategy' = 'LogAndContinue', 'stop.timeout' = '2s');"
        ),
    )
    .unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let t = Instant::now();
    let written = || std::fs::read_to_string(dir.join("out.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    while written() < rows && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
    let ids: std::collections::BTreeSet<i64> = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..rows as i64).collect(), "every row reaches the file sink while the webhook hangs\n{log}");
    assert!(log.contains("the write did not finish within 300ms ('sink.write.timeout')"), "{log}");
    assert!(log.contains("rows lost (LogAndContinue)"), "{log}");
}
