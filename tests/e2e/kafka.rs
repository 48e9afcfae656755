//! Kafka on a real broker (tansu, started by `bash tests/services/kafka.sh start`; address in
//! `KAFKA_BOOTSTRAP`, default 127.0.0.1:9092): kafka → SQL → kafka and file with exact
//! content, commit and restart, two processes sharing a topic, malformed messages and the
//! dead-letter topic, metadata columns and windows on the message timestamp.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::{assert_same_rows, batch_rows, canonical_lines, file_rows, stop_with_sigint};

pub(crate) fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// A topic name no other test (or earlier run on the same broker) uses.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub(crate) fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
        .unwrap_or_else(|e| panic!("cannot reach the Kafka broker at {} ({e}); start it with 'bash tests/services/kafka.sh start'", bootstrap()));
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// One message to produce: key, value, timestamp (ms), headers.
struct Msg {
    key: Option<String>,
    value: String,
    ts: Option<i64>,
    headers: Vec<(&'static str, String)>,
}

fn msg(key: Option<String>, value: String) -> Msg {
    Msg { key, value, ts: None, headers: Vec::new() }
}

fn produce(topic: &str, msgs: &[Msg]) {
    produce_to(&bootstrap(), topic, msgs)
}

fn produce_to(servers: &str, topic: &str, msgs: &[Msg]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", servers).set("linger.ms", "5").create().unwrap();
    for m in msgs {
        let mut r = BaseRecord::to(topic).payload(m.value.as_bytes());
        if let Some(k) = &m.key {
            r = r.key(k.as_bytes());
        }
        if let Some(ts) = m.ts {
            r = r.timestamp(ts);
        }
        if !m.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &m.headers {
                h = h.insert(Header { key: k, value: Some(v.as_str()) });
            }
            r = r.headers(h);
        }
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if let Err((_, back)) = p.send(rec) {
                p.poll(Duration::from_millis(10));
                r = Some(back);
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A message read back: key, value, headers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Read {
    key: Option<String>,
    value: String,
    headers: BTreeMap<String, String>,
}

/// Reads every partition of `topic` from the start until `want` messages arrived (or 20 s).
fn read_topic(topic: &str, want: usize) -> Vec<Read> {
    read_topic_at(&bootstrap(), topic, want)
}

/// [`read_topic`] on the brokers at `servers`.
fn read_topic_at(servers: &str, topic: &str, want: usize) -> Vec<Read> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", servers).set("group.id", unique("reader")).set("enable.auto.commit", "false").create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning).unwrap();
        }
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && (out.len() < want || quiet_since.elapsed() < Duration::from_millis(300)) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            quiet_since = Instant::now();
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            out.push(Read {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
    }
    out
}

fn order(i: usize) -> String {
    let regions = ["north", "south", "east", "west"];
    format!(r#"{{"id": {i}, "customer": "c{}", "amount": {}.{}, "region": "{}"}}"#, i % 17, (i * 37) % 200, i % 10, regions[i % 4])
}

/// A Kafka source `name` on `topic`; a group of its own (groups outlive a run on the broker)
/// unless `extra` names one.
fn kafka_with(name: &str, topic: &str, extra: &str) -> String {
    let group = if extra.contains(".group.id'") { String::new() } else { format!(", '{name}.group.id' = '{}'", unique("group")) };
    format!(
        "'{name}.type' = 'kafka_source', '{name}.bootstrap.servers' = '{}', '{name}.topic' = '{topic}', \
         '{name}.value.format' = 'json', '{name}.session.timeout.ms' = '6000', '{name}.heartbeat.interval.ms' = '1000', \
         '{name}.commit.interval' = '200ms'{group}{extra}",
        bootstrap()
    )
}

/// Tests of several processes in one consumer group run one at a time: each leans on the
/// broker's group coordinator and on timing (session timeouts, hand-over holds), and on a
/// loaded machine two of them side by side starved each other's heartbeats (a session expired,
/// and tansu left the member without partitions for a minute).
fn one_group_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const ORDER_SCHEMA: &str = "id BIGINT, customer VARCHAR, amount DOUBLE, region VARCHAR";

/// Starts `ferris-sql run` on `sql` (its log level from `JOB_LOG` when set, to debug a test).
fn spawn_job(dir: &Path, file: &str, sql: &str) -> Child {
    std::fs::write(dir.join(file), sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", file, "--no-progress"])
        .current_dir(dir)
        .env("RUST_LOG", std::env::var("JOB_LOG").unwrap_or_else(|_| "warn,ferris_engine=info,ferris_connectors=info".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `done` holds for the text of `out` (60 s at most), the job still running.
fn wait_for(child: &mut Child, out: &Path, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if done(&std::fs::read_to_string(out).unwrap_or_default()) {
            return;
        }
        if let Some(s) = child.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut e).unwrap();
            panic!("the job ended by itself ({s}): {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = stop_with_sigint(child);
    panic!("{} never had the expected rows in 60 s; the job said:\n{stderr}", out.display());
}

/// Canonical rows of a JSON Lines output, with `columns` set to null where the writer left a
/// null field out.
fn rows_with_nulls(path: &Path, columns: &[&str]) -> Vec<String> {
    let text: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for c in columns {
                if v.get(*c).is_none() {
                    v[*c] = serde_json::Value::Null;
                }
            }
            v.to_string() + "\n"
        })
        .collect();
    canonical_lines(&text)
}

fn ids_in(text: &str) -> Vec<i64> {
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["id"].as_i64()).collect()
}

/// kafka → filter/project → kafka and a file: exactly DataFusion's batch answer on the same
/// messages, keys from `key.field`, metadata columns as Kafka has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_and_file_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (unique("orders"), unique("big-orders"));
    create_topic(&input, 3);
    create_topic(&output, 2);
    let n = 3000;
    let msgs: Vec<Msg> = (0..n).map(|i| msg(Some(format!("k{}", i % 7)), order(i))).collect();
    produce(&input, &msgs);
    let batch_file = tmp.path().join("orders.jsonl");
    std::fs::write(&batch_file, (0..n).map(|i| order(i) + "\n").collect::<String>()).unwrap();

    let out = tmp.path().join("out.jsonl");
    let query = "SELECT id, customer, amount * 2 AS doubled, UPPER(region) AS region FROM orders WHERE amount > 120 AND region <> 'east'";
    let sql = format!(
        "CREATE STREAM big AS {query} INTO sink_topic, sink_file WITH ({}, \
         'sink_topic.type' = 'kafka_sink', 'sink_topic.bootstrap.servers' = '{}', 'sink_topic.topic' = '{output}', \
         'sink_topic.key.field' = 'customer', 'sink_topic.acks' = 'all', 'sink_topic.compression.type' = 'lz4', \
         'sink_file.type' = 'file_sink', 'sink_file.path' = '{}');",
        kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.batch.size' = '256'")),
        bootstrap(),
        out.display()
    );
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("orders", batch_file.to_str().unwrap(), opts).await.unwrap();
    let want = batch_rows(&ctx, query).await;
    assert!(want.len() > 500, "the filter keeps a good share: {}", want.len());

    let mut child = spawn_job(tmp.path(), "job.sql", &sql);
    wait_for(&mut child, &out, |t| t.lines().count() >= want.len());
    stop_with_sigint(&mut child);
    assert_same_rows("kafka → file", &file_rows(&out), &want);

    let read = read_topic(&output, want.len());
    let values: String = read.iter().map(|r| r.value.clone() + "\n").collect();
    assert_same_rows("kafka → kafka", &canonical_lines(&values), &want);
    for r in &read {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(r.key.as_deref(), v["customer"].as_str(), "the key is the customer column");
    }
}

/// `_key`, `_partition`, `_offset`, `_timestamp`, `_headers` are selectable; a TUMBLE window
/// over the message timestamp gives DataFusion's batch counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_columns_and_windows_on_message_time() {
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("clicks");
    create_topic(&input, 1);
    let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let msgs: Vec<Msg> = (0..200)
        .map(|i| Msg {
            key: Some(format!("u{}", i % 3)),
            value: format!(r#"{{"n": {i}}}"#),
            ts: Some(base + i as i64 * 250),
            headers: vec![("trace", format!("t{i}"))],
        })
        .collect();
    produce(&input, &msgs);

    let meta = tmp.path().join("meta.jsonl");
    let sql = format!(
        "CREATE STREAM m AS SELECT n, _key AS k, _partition AS p, _offset AS o, CAST(_timestamp AS BIGINT) AS ts, _headers['trace'] AS trace \
         FROM clicks INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("clicks", &input, ""),
        meta.display()
    );
    let mut child = spawn_job(tmp.path(), "meta.sql", &sql);
    wait_for(&mut child, &meta, |t| t.lines().count() >= 200);
    stop_with_sigint(&mut child);
    let want: Vec<String> = canonical_lines(
        &(0..200)
            .map(|i| format!(r#"{{"n": {i}, "k": "u{}", "p": 0, "o": {i}, "ts": {}, "trace": "t{i}"}}"#, i % 3, base + i as i64 * 250) + "\n")
            .collect::<String>(),
    );
    assert_same_rows("metadata columns (schema inferred from the topic)", &file_rows(&meta), &want);

    // Windows on the message timestamp: 200 messages 250 ms apart, 10 s windows, per key.
    let win = tmp.path().join("win.jsonl");
    let sql = format!(
        "CREATE STREAM w AS SELECT _key AS k, window_start, COUNT(*) AS c, SUM(n) AS s FROM clicks \
         GROUP BY _key, TUMBLE(_timestamp, INTERVAL '10' SECOND) INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with(
            "clicks",
            &input,
            &format!(", 'clicks.group.id' = '{}', 'clicks.event_time' = '_timestamp', 'clicks.watermark.delay' = '1s'", unique("windows"))
        ),
        win.display()
    );
    // The last window stays open (no later message), so 4 full windows × 3 keys are emitted.
    let mut child = spawn_job(tmp.path(), "win.sql", &sql);
    wait_for(&mut child, &win, |t| t.lines().count() >= 12);
    stop_with_sigint(&mut child);
    let mut want = Vec::new();
    for w in 0..4i64 {
        for k in 0..3 {
            let ns: Vec<i64> = (w * 40..w * 40 + 40).filter(|n| n % 3 == k).collect();
            let start = chrono_iso(base + w * 10_000);
            want.push(format!(r#"{{"k": "u{k}", "window_start": "{start}", "c": {}, "s": {}}}"#, ns.len(), ns.iter().sum::<i64>()));
        }
    }
    let got: Vec<String> = file_rows(&win).into_iter().filter(|r| !r.contains("2026-01-01T00:00:40")).collect();
    assert_same_rows("TUMBLE over _timestamp", &got, &canonical_lines(&(want.join("\n") + "\n")));
}

fn chrono_iso(ms: i64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("2026-01-01T{h:02}:{m:02}:{s:02}")
}

/// Offsets are committed once the sinks have the rows: a stopped job restarted with the same
/// group reads only what came after, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_restart_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("restart");
    create_topic(&input, 2);
    produce(&input, &(0..500).map(|i| msg(None, order(i))).collect::<Vec<_>>());
    let group = unique("restart-group");
    let run = |file: &str, out: &Path, want: usize| {
        let sql = format!(
            "CREATE STREAM r AS SELECT id FROM orders INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
            kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.group.id' = '{group}'")),
            out.display()
        );
        let mut child = spawn_job(tmp.path(), file, &sql);
        wait_for(&mut child, out, |t| t.lines().count() >= want);
        stop_with_sigint(&mut child)
    };
    let first = tmp.path().join("first.jsonl");
    run("first.sql", &first, 500);
    produce(&input, &(500..800).map(|i| msg(None, order(i))).collect::<Vec<_>>());
    let second = tmp.path().join("second.jsonl");
    run("second.sql", &second, 300);
    let a: BTreeSet<i64> = ids_in(&std::fs::read_to_string(&first).unwrap()).into_iter().collect();
    let b = ids_in(&std::fs::read_to_string(&second).unwrap());
    assert_eq!(a, (0..500).collect::<BTreeSet<_>>());
    assert_eq!(b.iter().copied().collect::<BTreeSet<_>>(), (500..800).collect::<BTreeSet<_>>(), "the restart resumes at the committed offsets");
    assert_eq!(b.len(), 300, "a clean stop commits everything delivered: no row read twice");
}

/// Two processes of one job share the topic's partitions; when one stops, the other takes
/// over its partitions and every message is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_and_take_over() {
    let _alone = one_group_test_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("scale");
    create_topic(&input, 4);
    let group = unique("scale-group");
    let job = |out: &Path| {
        format!(
            "CREATE STREAM s AS SELECT id FROM orders INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
            kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.group.id' = '{group}', 'orders.batch.size' = '50'")),
            out.display()
        )
    };
    let (out_a, out_b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    let mut a = spawn_job(tmp.path(), "a.sql", &job(&out_a));
    let mut b = spawn_job(tmp.path(), "b.sql", &job(&out_b));
    std::thread::sleep(Duration::from_secs(8)); // both join the group
                                                // a loaded machine may take longer to settle the group: messages keep coming until both
                                                // processes have rows
    let rows = |p: &Path| ids_in(&std::fs::read_to_string(p).unwrap_or_default()).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while sent < 2000 && (sent < 1000 || (Instant::now() < deadline && (rows(&out_a) == 0 || rows(&out_b) == 0))) {
        produce(&input, &(sent..sent + 100).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
        sent += 100;
        std::thread::sleep(Duration::from_millis(if sent <= 1000 { 0 } else { 500 }));
    }
    produce(&input, &(sent..2000).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
    let (pa, pb) = (out_a.clone(), out_b.clone());
    let both = move |want: usize| {
        let (pa, pb) = (pa.clone(), pb.clone());
        move |_: &str| {
            let all: BTreeSet<i64> = [&pa, &pb].iter().flat_map(|p| ids_in(&std::fs::read_to_string(p).unwrap_or_default())).collect();
            all.len() >= want
        }
    };
    let out_a2 = tmp.path().join("a.jsonl");
    wait_for(&mut a, &out_a2, both(2000));
    let (na, nb) = (ids_in(&std::fs::read_to_string(&out_a).unwrap_or_default()).len(), ids_in(&std::fs::read_to_string(&out_b).unwrap_or_default()).len());
    assert!(na > 0 && nb > 0, "both processes got partitions: {na} and {nb} rows");
    stop_with_sigint(&mut a);
    produce(&input, &(2000..4000).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
    let out_b2 = tmp.path().join("b.jsonl");
    wait_for(&mut b, &out_b2, both(4000));
    stop_with_sigint(&mut b);
    let all: BTreeSet<i64> = [&out_a, &out_b].iter().flat_map(|p| ids_in(&std::fs::read_to_string(p).unwrap_or_default())).collect();
    assert_eq!(all, (0..4000).collect::<BTreeSet<_>>(), "every message processed by one of them");
}

/// Malformed messages are counted, logged with topic/partition/offset, and written with their
/// error to the dead-letter topic; the good ones go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_topic() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, dlq) = (unique("dirty"), unique("dirty-dlq"));
    create_topic(&input, 1);
    create_topic(&dlq, 1);
    let mut msgs = Vec::new();
    let mut bad = Vec::new();
    for i in 0..300 {
        if i % 50 == 7 {
            let v = if i % 100 == 7 { "{not json".to_string() } else { r#"{"id": "seven", "amount": 1.0}"#.to_string() };
            bad.push(v.clone());
            msgs.push(msg(Some(format!("bad{i}")), v));
        } else {
            msgs.push(msg(None, order(i)));
        }
    }
    produce(&input, &msgs);
    let out = tmp.path().join("good.jsonl");
    let sql = format!(
        "CREATE STREAM d AS SELECT id FROM orders INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.failure_strategy' = 'SendToDLQ', 'orders.dlq.topic' = '{dlq}'")),
        out.display()
    );
    let mut child = spawn_job(tmp.path(), "dirty.sql", &sql);
    wait_for(&mut child, &out, |t| t.lines().count() >= 300 - bad.len());
    let stderr = stop_with_sigint(&mut child);
    let mut good = ids_in(&std::fs::read_to_string(&out).unwrap());
    good.sort_unstable();
    assert_eq!(good, (0..300).filter(|i| i % 50 != 7).collect::<Vec<_>>(), "every good message once");
    assert!(stderr.contains(&format!("{input}/0@7: malformed message")), "names topic/partition@offset: {stderr}");
    let dead = read_topic(&dlq, bad.len());
    assert_eq!(dead.iter().map(|r| r.value.clone()).collect::<BTreeSet<_>>(), bad.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(dead.len(), bad.len());
    for d in &dead {
        assert_eq!(d.headers.get("ferris.topic"), Some(&input));
        assert_eq!(d.headers.get("ferris.partition").map(String::as_str), Some("0"));
        // One partition: a message's offset is its index, which its key carries.
        let offset = d.headers.get("ferris.offset").cloned().unwrap_or_default();
        assert_eq!(d.key.as_deref(), Some(format!("bad{offset}").as_str()), "{d:?}");
        assert!(!d.headers["ferris.error"].is_empty(), "{d:?}");
    }
}

/// Avro values both ways: a job writes orders to a topic as Confluent-framed Avro, another
/// reads them back (with a plain-Avro message and a corrupt one mixed in) into a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_values_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("avro-orders");
    create_topic(&topic, 2);
    let schema = r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}, {"name": "customer", "type": ["null", "string"]}, {"name": "amount", "type": "double"}]}"#;
    std::fs::write(tmp.path().join("order.avsc"), schema).unwrap();
    let input = tmp.path().join("orders.jsonl");
    std::fs::write(&input, (0..400).map(|i| format!(r#"{{"id": {i}, "customer": "c{}", "amount": {}.5}}"#, i % 9, i) + "\n").collect::<String>()).unwrap();
    let write = format!(
        "CREATE STREAM w AS SELECT id, customer, amount FROM orders INTO t WITH ('orders.type' = 'file_source', 'orders.path' = '{}', \
         'orders.schema' = 'id BIGINT, customer VARCHAR, amount DOUBLE', \
         't.type' = 'kafka_sink', 't.bootstrap.servers' = '{}', 't.topic' = '{topic}', 't.value.format' = 'avro', \
         't.avro.schema.file' = 'order.avsc', 't.avro.schema.id' = '7', 't.key.field' = 'id');",
        input.display(),
        bootstrap()
    );
    std::fs::write(tmp.path().join("write.sql"), write).unwrap();
    let run = crate::common::ferris(tmp.path(), &["run", "write.sql"]);
    crate::common::assert_ok(&run);
    let raw = ferris_connectors::format::avro::AvroEncoder::new(None, Some(schema.to_string()));
    let extra = datafusion::arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("id", datafusion::arrow::datatypes::DataType::Int64, false),
            datafusion::arrow::datatypes::Field::new("customer", datafusion::arrow::datatypes::DataType::Utf8, true),
            datafusion::arrow::datatypes::Field::new("amount", datafusion::arrow::datatypes::DataType::Float64, false),
        ])),
        vec![
            std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![400])),
            std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec![None::<&str>])),
            std::sync::Arc::new(datafusion::arrow::array::Float64Array::from(vec![0.25])),
        ],
    )
    .unwrap();
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    for v in raw.encode(&extra).unwrap().into_iter().chain([b"\x00\x00\x00\x00\x07\xff\xff\xff".to_vec()]) {
        p.send(BaseRecord::<(), [u8]>::to(&topic).payload(v.as_slice())).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();

    let out = tmp.path().join("back.jsonl");
    let read = format!(
        "CREATE STREAM r AS SELECT id, customer, amount, _key AS k FROM orders INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("orders", &topic, ", 'orders.value.format' = 'avro', 'orders.avro.schema.file' = 'order.avsc'")
            .replace("'orders.value.format' = 'json', ", ""),
        out.display()
    );
    let mut child = spawn_job(tmp.path(), "read.sql", &read);
    wait_for(&mut child, &out, |t| t.lines().count() >= 401);
    let stderr = stop_with_sigint(&mut child);
    let mut want: Vec<String> = (0..400).map(|i| format!(r#"{{"id": {i}, "customer": "c{}", "amount": {}.5, "k": "{i}"}}"#, i % 9, i)).collect();
    want.push(r#"{"id": 400, "customer": null, "amount": 0.25, "k": null}"#.to_string());
    assert_same_rows("avro round trip", &rows_with_nulls(&out, &["customer", "k"]), &canonical_lines(&(want.join("\n") + "\n")));
    assert!(stderr.contains("malformed message"), "the corrupt value is reported: {stderr}");
}

/// Two Kafka sources in one job are both read (in parallel, each at its own pace), and a
/// Kafka stream joins a file table (LEFT: unknown customers kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_kafka_sources_and_a_table_in_one_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (unique("union-a"), unique("union-b"));
    create_topic(&a, 2);
    create_topic(&b, 3);
    produce(&a, &(0..700).map(|i| msg(None, order(i))).collect::<Vec<_>>());
    produce(&b, &(700..1000).map(|i| msg(None, order(i))).collect::<Vec<_>>());
    let customers = tmp.path().join("customers.csv");
    std::fs::write(&customers, "customer,name\n".to_string() + &(0..10).map(|c| format!("c{c},Customer {c}\n")).collect::<String>()).unwrap();
    let out = tmp.path().join("both.jsonl");
    let sql = format!(
        "CREATE STREAM u AS SELECT s.id, s.src, c.name FROM (SELECT id, customer, 'a' AS src FROM a UNION ALL SELECT id, customer, 'b' AS src FROM b) s \
         LEFT JOIN customers c ON s.customer = c.customer INTO out WITH ({}, {}, \
         'customers.type' = 'file_source', 'customers.path' = '{}', 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("a", &a, &format!(", 'a.schema' = '{ORDER_SCHEMA}'")),
        kafka_with("b", &b, &format!(", 'b.schema' = '{ORDER_SCHEMA}'")),
        customers.display(),
        out.display()
    );
    let mut child = spawn_job(tmp.path(), "union.sql", &sql);
    wait_for(&mut child, &out, |t| t.lines().count() >= 1000);
    stop_with_sigint(&mut child);
    let want: Vec<String> = (0..1000usize)
        .map(|i| {
            let src = if i < 700 { "a" } else { "b" };
            let name = if i % 17 < 10 { format!("\"Customer {}\"", i % 17) } else { "null".to_string() };
            format!(r#"{{"id": {i}, "src": "{src}", "name": {name}}}"#)
        })
        .collect();
    assert_same_rows("two Kafka sources ⨝ table", &rows_with_nulls(&out, &["name"]), &canonical_lines(&(want.join("\n") + "\n")));
}

/// A topic named twice in one query is read once, by one set of consumers: two scans in one
/// consumer group would split the partitions between them and each would see part of the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_named_twice_is_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("self-union");
    create_topic(&input, 4);
    let n = 1200usize;
    produce(&input, &(0..n).map(|i| msg(None, order(i))).collect::<Vec<_>>());
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM twice AS SELECT id, 'all' AS tag FROM orders UNION ALL SELECT id, region AS tag FROM orders WHERE amount > 100 \
         INTO out WITH ({}, 'orders.consumers' = '2', 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}'")),
        out.display()
    );
    let big: Vec<usize> = (0..n).filter(|i| (i * 37) % 200 > 100 || ((i * 37) % 200 == 100 && i % 10 > 0)).collect();
    let want: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"id": {i}, "tag": "all"}}"#))
        .chain(big.iter().map(|&i| format!(r#"{{"id": {i}, "tag": "{}"}}"#, ["north", "south", "east", "west"][i % 4])))
        .collect();
    let mut child = spawn_job(tmp.path(), "twice.sql", &sql);
    wait_for(&mut child, &out, |t| t.lines().count() >= want.len());
    // no more than that either
    std::thread::sleep(Duration::from_millis(500));
    stop_with_sigint(&mut child);
    assert_same_rows("topic read once for both scans", &file_rows(&out), &canonical_lines(&(want.join("\n") + "\n")));
}

/// Fault injection on librdkafka's mock cluster (in this process; the job connects over TCP):
/// the broker goes away for longer than the group session while messages keep coming, then
/// comes back. The job reconnects and rejoins by itself and every message reaches the sink.
#[test]
fn a_broker_outage_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let servers = mock.bootstrap_servers();
    mock.create_topic("events", 2, 1).unwrap();
    produce_to(&servers, "events", &(0..1000).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM copy AS SELECT id FROM events INTO out WITH ('events.type' = 'kafka_source', 'events.bootstrap.servers' = '{servers}', \
         'events.topic' = 'events', 'events.group.id' = 'outage', 'events.value.format' = 'json', 'events.schema' = '{ORDER_SCHEMA}', \
         'events.session.timeout.ms' = '6000', 'events.commit.interval' = '200ms', 'events.reconnect.backoff.max.ms' = '500', \
         'out.type' = 'file_sink', 'out.path' = '{}');",
        out.display()
    );
    let mut child = spawn_job(tmp.path(), "job.sql", &sql);
    wait_for(&mut child, &out, |t| ids_in(t).len() >= 1000);

    mock.broker_down(1).unwrap();
    // Messages produced meanwhile wait in the producer until the broker is back.
    let servers2 = servers.clone();
    let producer = std::thread::spawn(move || produce_to(&servers2, "events", &(1000..2000).map(|i| msg(None, order(i))).collect::<Vec<_>>()));
    // Longer than the session timeout: the group session is lost and the consumer must rejoin
    // (commits for partitions it no longer owned used to keep it from ever rejoining).
    std::thread::sleep(Duration::from_secs(8));
    assert!(child.try_wait().unwrap().is_none(), "the job survives the outage");
    mock.broker_up(1).unwrap();
    producer.join().unwrap();
    wait_for(&mut child, &out, |t| ids_in(t).into_iter().collect::<BTreeSet<_>>().len() >= 2000);
    let stderr = stop_with_sigint(&mut child);
    assert!(stderr.contains("the client retries by itself"), "the outage is reported: {stderr}");
    let reports = stderr.lines().filter(|l| l.contains("Connect to") || l.contains("brokers are down")).count();
    assert!(reports <= 12, "an 8-second outage is reported a few times, not once per retry ({reports} lines):\n{stderr}");
    let ids = ids_in(&std::fs::read_to_string(&out).unwrap());
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct, (0..2000).collect::<BTreeSet<i64>>(), "every message, none lost; the job said:\n{stderr}");
    // at-least-once: a redelivery after the outage may repeat rows not yet committed, never more
    assert!(ids.len() - distinct.len() <= 1000, "{} repeated rows", ids.len() - distinct.len());
}

/// A Kafka sink whose broker goes away mid-run (librdkafka's mock cluster: the broker down for
/// 4 s while rows keep coming; the sink's `message.timeout.ms` is 1.5 s), beside a file sink,
/// under each failure strategy: `LogAndContinue` counts the rows of the batches it could not
/// deliver as dropped and goes on — the file gets every row, and every row is either in the
/// topic or counted dropped; `FailBatch` stops the job naming the sink; `RetryWithBackoff`
/// delivers every row once the broker is back, none dropped.
#[test]
fn a_kafka_sink_whose_broker_goes_away_follows_its_failure_strategy() {
    let rows = |from: i64, to: i64| (from..to).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>();
    for strategy in ["LogAndContinue", "FailBatch", "RetryWithBackoff"] {
        let tmp = tempfile::tempdir().unwrap();
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        let servers = mock.bootstrap_servers();
        mock.create_topic("out", 1, 1).unwrap();
        let input = tmp.path().join("in.jsonl");
        std::fs::write(&input, rows(0, 200)).unwrap();
        let archive = tmp.path().join("archive.jsonl");
        let sql = format!(
            "CREATE STREAM copy AS SELECT id FROM src INTO to_kafka, archive WITH (\
             'src.type' = 'file_source', 'src.path' = '{}', 'src.watch' = 'true', 'src.schema' = 'id BIGINT', \
             'to_kafka.type' = 'kafka_sink', 'to_kafka.bootstrap.servers' = '{servers}', 'to_kafka.topic' = 'out', \
             'to_kafka.value.format' = 'json', 'to_kafka.message.timeout.ms' = '1500', \
             'archive.type' = 'file_sink', 'archive.path' = '{}', \
             'failure_strategy' = '{strategy}', 'max_retries' = '6', 'retry_backoff' = '500ms');",
            input.display(),
            archive.display()
        );
        let mut child = spawn_job(tmp.path(), "job.sql", &sql);
        wait_for(&mut child, &archive, |t| ids_in(t).len() >= 200);
        // every message of the topic (one partition) up to its end offset
        let delivered = || {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", unique("reader")).create().unwrap();
            let (_, end) = c.fetch_watermarks("out", 0, Duration::from_secs(10)).unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("out", 0, Offset::Beginning).unwrap();
            c.assign(&tpl).unwrap();
            let (mut ids, mut read) = (BTreeSet::new(), 0);
            let deadline = Instant::now() + Duration::from_secs(20);
            while read < end && Instant::now() < deadline {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    read += 1;
                    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                    ids.insert(v["id"].as_i64().unwrap());
                }
            }
            assert_eq!(read, end, "the topic read to its end");
            ids
        };
        // waits (40 s at most) until `done(ids in the topic)`
        let wait_topic = |done: &dyn Fn(&BTreeSet<i64>) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut ids = delivered();
            while !done(&ids) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(300));
                ids = delivered();
            }
            ids
        };
        let first: BTreeSet<i64> = (0..200).collect();
        assert_eq!(wait_topic(&|ids| *ids == first), first, "{strategy}: before the outage");
        mock.broker_down(1).unwrap();
        std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(rows(200, 400).as_bytes()).unwrap();
        if strategy == "FailBatch" {
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "FailBatch: the job did not stop");
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            assert!(!child.wait().unwrap().success(), "{stderr}");
            assert!(stderr.contains("sink 'to_kafka' failed a batch"), "{stderr}");
            mock.broker_up(1).unwrap();
            continue;
        }
        // the file sink is not held up by the one whose broker is gone
        wait_for(&mut child, &archive, |t| ids_in(t).len() >= 400);
        std::thread::sleep(Duration::from_secs(4));
        mock.broker_up(1).unwrap();
        std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(rows(400, 600).as_bytes()).unwrap();
        wait_for(&mut child, &archive, |t| ids_in(t).len() >= 600);
        let all: BTreeSet<i64> = (0..600).collect();
        // the sink has caught up: every row once it is retried (LogAndContinue: whatever it
        // delivers or drops, counted below once the job has stopped)
        if strategy == "RetryWithBackoff" {
            wait_topic(&|ids| *ids == all);
        }
        std::thread::sleep(Duration::from_millis(500));
        let stderr = stop_with_sigint(&mut child);
        let got = delivered();
        assert_eq!(ids_in(&std::fs::read_to_string(&archive).unwrap()).into_iter().collect::<BTreeSet<_>>(), all, "{strategy}: the file has every row");
        // "to_kafka N rows (k failed batches, D rows dropped)" in the run's summary
        let dropped: usize = stderr.split("to_kafka ").filter_map(|t| t.split(" rows dropped").next()?.rsplit(", ").next()?.parse().ok()).last().unwrap_or(0);
        if strategy == "RetryWithBackoff" {
            assert_eq!(got, all, "{strategy}: every row once the broker is back; the job said:\n{stderr}");
            assert_eq!(dropped, 0, "{stderr}");
        } else {
            assert!(dropped > 0, "{strategy}: rows of the outage counted dropped; the job said:\n{stderr}");
            assert!((0..200).all(|i| got.contains(&i)), "{strategy}: the rows before the outage");
            assert_eq!(got.len() + dropped, 600, "{strategy}: each row delivered or counted dropped; the job said:\n{stderr}");
        }
    }
}

/// The multiset of ids in `paths` (a JSON Lines output each): id → how many times it came.
fn id_counts(paths: &[&Path]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for p in paths {
        for id in ids_in(&std::fs::read_to_string(p).unwrap_or_default()) {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// Ids read twice, and ids expected but missing.
fn duplicates_and_missing(counts: &BTreeMap<i64, usize>, want: &BTreeSet<i64>) -> (Vec<i64>, Vec<i64>) {
    let dup = counts.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect();
    let missing = want.iter().filter(|id| !counts.contains_key(id)).copied().collect();
    (dup, missing)
}

/// One process is one member of the consumer group: a healthy job never rebalances against
/// itself, so a run stopped once every row arrived holds each row exactly once — every time
/// (the job is run again and again from a fresh group; `FERRIS_KAFKA_RUNS`, default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicates_from_a_healthy_job() {
    let _alone = one_group_test_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("nodup");
    create_topic(&input, 3);
    let n: usize = std::env::var("FERRIS_KAFKA_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let runs: usize = std::env::var("FERRIS_KAFKA_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    produce(&input, &(0..n).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
    // the filter of the issue's job: a third of the rows or so
    let want: BTreeSet<i64> = (0..n).filter(|i| (i * 37) % 200 > 130).map(|i| i as i64).collect();
    for run in 0..runs {
        // each run a fresh job: its own directory, so no checkpoint of the run before
        let dir = tmp.path().join(format!("run{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.jsonl");
        let sql = format!(
            "CREATE STREAM f AS SELECT id, customer, amount FROM orders WHERE amount > 131 INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
            kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.batch.size' = '500', 'orders.consumers' = '3'")),
            out.display()
        );
        let mut child = spawn_job(&dir, "job.sql", &sql);
        wait_for(&mut child, &out, |t| t.lines().count() >= want.len());
        stop_with_sigint(&mut child);
        let counts = id_counts(&[&out]);
        let (dup, missing) = duplicates_and_missing(&counts, &want);
        assert!(
            dup.is_empty() && missing.is_empty(),
            "run {run}: {} ids twice (first {:?}), {} missing (first {:?})",
            dup.len(),
            &dup[..dup.len().min(5)],
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert_eq!(counts.len(), want.len(), "run {run}: only the filtered rows");
    }
}

/// Two processes of one job, the second started a second after the first while messages keep
/// coming, the first stopped mid-run: the partitions they hand over are drained and committed
/// first, so their outputs together hold every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hand_partitions_over_exactly() {
    let _alone = one_group_test_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let input = unique("handover");
    create_topic(&input, 4);
    let group = unique("handover-group");
    let job = |out: &Path| {
        format!(
            "CREATE STREAM h AS SELECT id, _partition AS p, _offset AS o FROM orders INTO out WITH ({}, 'out.type' = 'file_sink', 'out.path' = '{}');",
            kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.group.id' = '{group}', 'orders.batch.size' = '100'")),
            out.display()
        )
    };
    let total = 20_000usize;
    produce(&input, &(0..2000).map(|i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
    let producer = {
        let input = input.clone();
        std::thread::spawn(move || {
            // the rest over about 8 s, while the processes come and go
            for chunk in (2000..total).collect::<Vec<_>>().chunks(450) {
                produce(&input, &chunk.iter().map(|&i| msg(Some(format!("k{i}")), order(i))).collect::<Vec<_>>());
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let (out_a, out_b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    let mut a = spawn_job(tmp.path(), "a.sql", &job(&out_a));
    std::thread::sleep(Duration::from_secs(1));
    let mut b = spawn_job(tmp.path(), "b.sql", &job(&out_b));
    // mid-run: both have written, the producer is still going
    let (pa, pb) = (out_a.clone(), out_b.clone());
    wait_for(&mut a, &out_a, move |_| {
        let c = id_counts(&[&pa, &pb]);
        c.len() >= 6000 && !ids_in(&std::fs::read_to_string(&pb).unwrap_or_default()).is_empty()
    });
    let a_said = stop_with_sigint(&mut a);
    producer.join().unwrap();
    let want: BTreeSet<i64> = (0..total as i64).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && id_counts(&[&out_a, &out_b]).len() < want.len() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // anything more (a duplicate) would show now
    let said = stop_with_sigint(&mut b);
    if let Ok(keep) = std::env::var("FERRIS_KEEP") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&out_a, Path::new(&keep).join("a.jsonl"));
        let _ = std::fs::copy(&out_b, Path::new(&keep).join("b.jsonl"));
    }
    let counts = id_counts(&[&out_a, &out_b]);
    let (dup, missing) = duplicates_and_missing(&counts, &want);
    assert!(
        dup.is_empty() && missing.is_empty(),
        "{} ids twice (first {:?}), {} missing (first {:?}); a wrote {}, b wrote {}; a said:\n{a_said}\nb said:\n{said}",
        dup.len(),
        &dup[..dup.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(20)],
        ids_in(&std::fs::read_to_string(&out_a).unwrap_or_default()).len(),
        ids_in(&std::fs::read_to_string(&out_b).unwrap_or_default()).len()
    );
}

/// Kills the processes left when dropped (a test that fails part-way).
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// What `child` writes to stderr, collected by a thread as it comes.
fn watch_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let into = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

/// SIGINT to a child whose stderr [`watch_stderr`] collects; waits (10 s at most) for a clean
/// stop and returns what it said.
fn stop_watched(child: &mut Child, log: &std::sync::Mutex<String>) -> String {
    let code = crate::common::interrupt_and_wait(child);
    std::thread::sleep(Duration::from_millis(200)); // the reader thread takes the rest
    let said = log.lock().unwrap().clone();
    match code {
        Some(code) => assert_eq!(code, Some(0), "{said}"),
        None => panic!("the job did not stop on SIGINT within 10 s; it said:\n{said}"),
    }
    said
}

/// The rows of a windowed job's JSON Lines outputs as (key, count, sum, first id, last id),
/// each with how often it was written (the far-future `end` rows left out).
fn window_rows(paths: &[&Path]) -> BTreeMap<(String, i64, i64, i64, i64), usize> {
    let mut out = BTreeMap::new();
    for p in paths {
        for line in std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {line}: {e}", p.display()));
            let k = v["k"].as_str().unwrap_or_default().to_string();
            if k == "end" {
                continue;
            }
            let n = |c: &str| v[c].as_i64().unwrap_or_else(|| panic!("{c} in {line}"));
            *out.entry((k, n("n"), n("total"), n("lo"), n("hi"))).or_insert(0) += 1;
        }
    }
    out
}

/// Two processes of a job with a `TUMBLE` aggregate over a keyed topic, the second started a
/// second after the first while messages keep coming, the first stopped mid-run: the windows
/// open when partitions change hands are read again by their new owner (the old one drops
/// them, and reads again those of the partitions it keeps), so the windows the two write
/// together are exactly the batch answer — every window of every key once, complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hand_windows_over_exactly() {
    let input = unique("win-handover");
    create_topic(&input, 4);
    two_processes_hand_windows_over(&bootstrap(), &input, false, false);
}

/// The same with sliding windows (`HOP`, 2 s every second: each row in two windows): the new
/// owner of a partition reads it only once its own event time has reached the old owner's,
/// so a window the old owner wrote is closed here too, and the rows read again count only in
/// the windows still open — every window of every key once, complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hand_hop_windows_over_exactly() {
    let input = unique("hop-handover");
    create_topic(&input, 4);
    two_processes_hand_windows_over(&bootstrap(), &input, false, true);
}

/// The same, the first process killed (SIGKILL) mid-run: the second takes its partitions over
/// from its last commit, so windows written since may be written again — each complete, none
/// partial, none missing. On librdkafka's mock cluster (in this process; the jobs connect over
/// TCP): tansu 0.6 does not always hand a killed member's partitions to the group's other
/// member (empty assignments for minutes), and it does not keep a commit's metadata, which
/// the mock cluster does — so here the skips travel in the commits themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hand_windows_over_after_a_kill() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("win-kill", 4, 1).unwrap();
    two_processes_hand_windows_over(&mock.bootstrap_servers(), "win-kill", true, false);
}

/// The same with `HOP` windows: after the kill, every window complete, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hand_hop_windows_over_after_a_kill() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("hop-kill", 4, 1).unwrap();
    two_processes_hand_windows_over(&mock.bootstrap_servers(), "hop-kill", true, true);
}

fn two_processes_hand_windows_over(servers: &str, input: &str, kill: bool, hop: bool) {
    let _alone = one_group_test_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // the mock cluster takes its time to hand a killed member's partitions over; the survivor
    // holds event time back for twice the session timeout, so their rows are not late then
    let session = if kill { 3000 } else { 6000 };
    let group = unique("win-handover-group");
    let base: i64 = 1_700_000_000_000;
    let total = 16_000usize;
    // keyed by `k`: every key in one partition, so each window of a key is one process's
    let row = move |i: usize| msg(Some(format!("k{}", i % 7)), format!(r#"{{"id":{i},"k":"k{}","ts":{}}}"#, i % 7, base + i as i64 * 5));
    let mut want: BTreeMap<(String, i64, i64, i64, i64), usize> = BTreeMap::new();
    {
        let mut windows: BTreeMap<(i64, String), (i64, i64, i64, i64)> = BTreeMap::new();
        for i in 0..total as i64 {
            // TUMBLE(1 s): one window per row; HOP(1 s, 2 s): the one it starts in and the one before
            let second = (base + i * 5) / 1000;
            for start in if hop { vec![second - 1, second] } else { vec![second] } {
                let w = windows.entry((start, format!("k{}", i % 7))).or_insert((0, 0, i64::MAX, i64::MIN));
                *w = (w.0 + 1, w.1 + i, w.2.min(i), w.3.max(i));
            }
        }
        for ((_, k), (n, sum, lo, hi)) in windows {
            want.insert((k, n, sum, lo, hi), 1);
        }
    }
    let window = if hop { "HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)" } else { "TUMBLE(ts, INTERVAL '1' SECOND)" };
    let job = |out: &Path| {
        format!(
            "CREATE STREAM w AS SELECT k, COUNT(*) AS n, SUM(id) AS total, MIN(id) AS lo, MAX(id) AS hi FROM orders \
             GROUP BY {window}, k INTO out WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{servers}', \
             'orders.topic' = '{input}', 'orders.value.format' = 'json', 'orders.session.timeout.ms' = '{session}', \
             'orders.schema' = 'id BIGINT, k VARCHAR, ts BIGINT', 'orders.group.id' = '{group}', 'orders.batch.size' = '100', \
             'orders.event_time' = 'ts', 'orders.watermark.delay' = '300ms', 'orders.reconnect.backoff.max.ms' = '500', \
             'orders.heartbeat.interval.ms' = '300', \
             'checkpoint.interval' = '500ms', 'out.type' = 'file_sink', 'out.path' = '{}');",
            out.display()
        )
    };
    produce_to(servers, input, &(0..2000).map(row).collect::<Vec<_>>());
    let producer = {
        let (input, servers) = (input.to_string(), servers.to_string());
        std::thread::spawn(move || {
            // the rest over about 9 s, while the processes come and go
            for chunk in (2000..total).collect::<Vec<_>>().chunks(300) {
                produce_to(&servers, &input, &chunk.iter().map(|&i| row(i)).collect::<Vec<_>>());
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let (out_a, out_b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    let mut a = spawn_job(tmp.path(), "a.sql", &job(&out_a));
    std::thread::sleep(Duration::from_secs(1));
    let mut b = spawn_job(tmp.path(), "b.sql", &job(&out_b));
    // a failed assertion must not leave them running (on the mock cluster, gone with the test)
    let _reap = Reap(vec![a.id(), b.id()]);
    let b_log = watch_stderr(&mut b);
    // mid-run: the partitions have been shared for a while, the producer is still going
    // (the second process closes no window before it holds every partition, or 30 s)
    // (after a kill, the mock cluster hands the partitions over within about 20 s: the
    // second process's hold — 30 s from its start — must still be on then)
    std::thread::sleep(Duration::from_secs(if kill { 4 } else { 6 }));
    let pa = out_a.clone();
    wait_for(&mut a, &out_a, move |_| window_rows(&[&pa]).len() >= 100);
    let a_said = if kill {
        crate::checkpoints::kill9(&mut a);
        "(killed)".to_string()
    } else {
        stop_with_sigint(&mut a)
    };
    producer.join().unwrap();
    if kill {
        // the survivor's hold on the killed process's partitions may have run out (the mock
        // cluster takes about 30 s to hand them over): until they come, a far-future row on
        // its own partitions would close the windows they still have rows for
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && b_log.lock().unwrap().lines().filter(|l| l.contains("assigned partitions: ")).count() < 2 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // a far-future row on every partition closes every window
    let far = base + 100_000_000;
    produce_rows_to(servers, input, &(0..4).map(|p| (p, format!(r#"{{"id":-1,"k":"end","ts":{far}}}"#))).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && window_rows(&[&out_a, &out_b]).keys().filter(|r| want.contains_key(*r)).count() < want.len() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800)); // anything more (a window twice) would show now
    let said = stop_watched(&mut b, &b_log);
    eprintln!("a said:\n{a_said}\nb said:\n{said}");
    if let Ok(keep) = std::env::var("FERRIS_KEEP") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&out_a, Path::new(&keep).join("wa.jsonl"));
        let _ = std::fs::copy(&out_b, Path::new(&keep).join("wb.jsonl"));
    }
    let got = window_rows(&[&out_a, &out_b]);
    // after a kill, a window written since the last commit may be written again, complete
    let wrong: Vec<_> = got.iter().filter(|(r, n)| !(want.contains_key(*r) && (**n == 1 || kill))).collect();
    eprintln!("{} windows written twice", got.values().filter(|n| **n > 1).count());
    let missing: Vec<_> = want.keys().filter(|r| !got.contains_key(*r)).collect();
    let (na, nb) = (window_rows(&[&out_a]).len(), window_rows(&[&out_b]).len());
    assert!(
        wrong.is_empty() && missing.is_empty(),
        "{} windows wrong or twice (first {:?}), {} missing (first {:?}) of {}; a wrote {na}, b wrote {nb}; a said:\n{a_said}\nb said:\n{said}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)],
        want.len()
    );
    assert!(na > 0 && nb > 0, "both processes wrote windows: a {na}, b {nb}");
}

/// Produces JSON `rows` to `topic`, each to the partition its `partition` field names.
fn produce_rows(topic: &str, rows: &[(i32, String)]) {
    produce_rows_to(&bootstrap(), topic, rows)
}

/// [`produce_rows`] to the broker at `servers`.
fn produce_rows_to(servers: &str, topic: &str, rows: &[(i32, String)]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", servers).set("linger.ms", "5").create().unwrap();
    for (part, value) in rows {
        let mut r = Some(BaseRecord::<(), str>::to(topic).payload(value.as_str()).partition(*part));
        while let Some(rec) = r.take() {
            if let Err((_, back)) = p.send(rec) {
                p.poll(Duration::from_millis(10));
                r = Some(back);
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Kafka in, a windowed aggregate and an interval join, file sinks out, under
/// `use_transactions`, the process killed five times at random moments while messages keep
/// coming: both outputs end with exactly DataFusion's batch answers over the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_kafka_windows_and_joins_are_exact() {
    use crate::checkpoints::{counted, interrupt, settle, sinks_created, start};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let dir = if std::env::var_os("FERRIS_KEEP").is_some() { tmp.keep().join("") } else { dir };
    eprintln!("in {}", dir.display());
    let dir = dir.as_path();
    let (clicks, purchases) = (unique("ck-clicks"), unique("ck-purchases"));
    create_topic(&clicks, 3);
    create_topic(&purchases, 2);
    let base: i64 = 1_700_000_000_000;
    let n = 6000usize;
    // event time moves 10 ms a message, the watermark delay (120 s) is longer than all of it:
    // partitions that a killed process's group member still holds come back late to the
    // restarted process, and their rows must not be late then
    let click = |i: usize| (i as i32 % 3, format!(r#"{{"id":{i},"ts":{},"user_id":"u{}","amount":{}}}"#, base + i as i64 * 10, i % 5, i % 13 + 1));
    let purchase = |i: usize| (i as i32 % 2, format!(r#"{{"pid":{i},"ts":{},"user_id":"u{}","price":{}}}"#, base + i as i64 * 30 + 5, i % 5, i % 7 + 1));
    let click_rows: Vec<(i32, String)> = (0..n).map(click).collect();
    let purchase_rows: Vec<(i32, String)> = (0..n / 3).map(purchase).collect();
    // the batch answers over the same rows
    let files = dir.join("batch");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("clicks.jsonl"), click_rows.iter().map(|(_, v)| v.clone() + "\n").collect::<String>()).unwrap();
    std::fs::write(files.join("purchases.jsonl"), purchase_rows.iter().map(|(_, v)| v.clone() + "\n").collect::<String>()).unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("clicks", files.join("clicks.jsonl").to_str().unwrap(), opts.clone()).await.unwrap();
    ctx.register_json("purchases", files.join("purchases.jsonl").to_str().unwrap(), opts).await.unwrap();
    let want_windows = batch_rows(
        &ctx,
        "SELECT to_timestamp_millis(ts / 5000 * 5000) AS window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY 1, 2",
    )
    .await;
    let want_joins =
        batch_rows(&ctx, "SELECT c.id, p.pid, c.user_id FROM clicks c JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts AND c.ts + 500").await;
    assert!(want_joins.len() > 500, "{}", want_joins.len());
    // a consumer group of each job's own per test run: on tansu, a group whose earlier members
    // read other topics keeps rebalancing (empty assignments every few seconds)
    let source = |name: &str, topic: &str, schema: &str, group: &str| {
        format!(
            "'{name}.type' = 'kafka_source', '{name}.bootstrap.servers' = '{}', '{name}.topic' = '{topic}', '{name}.schema' = '{schema}', \
             '{name}.group.id' = '{group}', '{name}.event_time' = 'ts', '{name}.watermark.delay' = '120s', '{name}.batch.size' = '100', '{name}.session.timeout.ms' = '6000'{}",
            bootstrap(),
            // FERRIS_KAFKA_DEBUG=cgrp (with JOB_LOG=debug): librdkafka's group protocol in job.log
            std::env::var("FERRIS_KAFKA_DEBUG").map(|d| format!(", '{name}.debug' = '{d}'")).unwrap_or_default()
        )
    };
    let (gw, gj) = (unique("ck-kw"), unique("ck-kj"));
    let clicks_w = source("clicks", &clicks, "id BIGINT, ts BIGINT, user_id VARCHAR, amount BIGINT", &gw);
    let clicks_src = source("clicks", &clicks, "id BIGINT, ts BIGINT, user_id VARCHAR, amount BIGINT", &gj);
    let purchases_src = source("purchases", &purchases, "pid BIGINT, ts BIGINT, user_id VARCHAR, price BIGINT", &gj);
    let sql = format!(
        "CREATE STREAM kw AS SELECT window_start, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), user_id \
         INTO wout WITH ({clicks_w}, 'use_transactions' = 'true', 'checkpoint.interval' = '300ms', 'wout.type' = 'file_sink', 'wout.path' = 'windows.jsonl');\n\
         CREATE STREAM kj AS SELECT c.id, p.pid, c.user_id FROM clicks c JOIN purchases p ON c.user_id = p.user_id AND p.ts BETWEEN c.ts AND c.ts + 500 \
         INTO jout WITH ({clicks_src}, {purchases_src}, 'use_transactions' = 'true', 'checkpoint.interval' = '300ms', 'jout.type' = 'file_sink', 'jout.path' = 'joins.jsonl');"
    );
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    // messages keep coming while the job is killed again and again
    let producer = {
        let (clicks, purchases, cr, pr) = (clicks.clone(), purchases.clone(), click_rows.clone(), purchase_rows.clone());
        std::thread::spawn(move || {
            for k in 0..10 {
                produce_rows(&clicks, &cr[k * cr.len() / 10..(k + 1) * cr.len() / 10]);
                produce_rows(&purchases, &pr[k * pr.len() / 10..(k + 1) * pr.len() / 10]);
                std::thread::sleep(Duration::from_millis(350));
            }
        })
    };
    let seed = kill_five_times(dir);
    producer.join().unwrap();
    // far-future rows on every partition close every window and join band
    let far = base + 100_000_000;
    produce_rows(&clicks, &(0..3).map(|p| (p, format!(r#"{{"id":-1,"ts":{far},"user_id":"end","amount":0}}"#))).collect::<Vec<_>>());
    produce_rows(&purchases, &(0..2).map(|p| (p, format!(r#"{{"pid":-1,"ts":{far},"user_id":"end","price":0}}"#))).collect::<Vec<_>>());
    // The last run joins new consumer groups: tansu sometimes never hands a group's partitions
    // over from members of killed processes (empty assignments until the test gives up). The
    // positions come from the checkpoint either way; the runs before had to cope with members
    // of killed processes holding partitions for a while.
    let sql = std::fs::read_to_string(dir.join("job.sql")).unwrap().replace(&gw, &format!("{gw}-last")).replace(&gj, &format!("{gj}-last"));
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let (w, j) = (dir.join("windows.jsonl"), dir.join("joins.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = || counted(&w).len() >= want_windows.len() && counted(&j).len() >= want_joins.len();
    while Instant::now() < deadline && !done() {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(800));
    interrupt(&mut child, dir);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    for (name, path, want) in [("windows", &w, &want_windows), ("joins", &j, &want_joins)] {
        let got = counted(path);
        // the far-future rows join among themselves (3 × 2 of them): the only repeats allowed
        let twice: Vec<&String> = got.iter().filter(|(r, n)| **n > 1 && !r.contains("\"end\"")).map(|(r, _)| r).collect();
        assert!(twice.is_empty(), "{name}: rows written twice (seed {seed}): {:?}", &twice[..twice.len().min(3)]);
        let rows: Vec<String> = got.into_keys().filter(|r| !r.contains("\"end\"")).collect();
        if rows != *want {
            eprintln!("{name}: the jobs said:\n{}", log.lines().filter(|l| !l.contains("librdkafka")).collect::<Vec<_>>().join("\n"));
        }
        assert_same_rows(&format!("{name}: exactly once after 5 kills (seed {seed})"), &rows, want);
    }
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint");
}

/// Runs `dir/job.sql` five times, each killed (SIGKILL) after a random 0.7–2 s; the seed of
/// the moments (`FERRIS_CHAOS_SEED` repeats a run).
fn kill_five_times(dir: &Path) -> u64 {
    use crate::checkpoints::{chaos_seed, kill9, start};
    let seed = chaos_seed();
    eprintln!("FERRIS_CHAOS_SEED={seed}");
    let mut rng = crate::windows::Lcg::new(seed);
    for _ in 0..5 {
        let mut child = start(dir, "job.sql", &[]);
        std::thread::sleep(Duration::from_millis(700 + rng.below(1300)));
        kill9(&mut child);
    }
    seed
}

/// Kafka in, a filter, Kafka out (the sink's grouped writes, the source's committed offsets),
/// at least once: the process killed (SIGKILL) five times at random moments while messages keep
/// coming, then run to the end. Every id the filter keeps is in the output topic, none that it
/// drops; repeats are allowed (at least once), missing rows are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_kafka_to_kafka_job_loses_nothing() {
    use crate::checkpoints::{interrupt, settle, sinks_created, start};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, output) = (unique("kk-in"), unique("kk-out"));
    create_topic(&input, 3);
    create_topic(&output, 1);
    let n = 6000usize;
    let rows: Vec<(i32, String)> = (0..n).map(|i| (i as i32 % 3, order(i))).collect();
    let want: BTreeSet<i64> = (0..n as i64).filter(|i| i % 7 != 3).collect();
    let group = unique("kk-group");
    let sql = format!(
        "CREATE STREAM kk AS SELECT id, region FROM orders WHERE id % 7 <> 3 INTO out WITH ({}, 'checkpoint.interval' = '300ms', \
         'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{}', 'out.topic' = '{output}');",
        kafka_with("orders", &input, &format!(", 'orders.schema' = '{ORDER_SCHEMA}', 'orders.group.id' = '{group}', 'orders.batch.size' = '100'")),
        bootstrap()
    );
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let producer = {
        let (input, rows) = (input.clone(), rows.clone());
        std::thread::spawn(move || {
            for k in 0..10 {
                produce_rows(&input, &rows[k * rows.len() / 10..(k + 1) * rows.len() / 10]);
                std::thread::sleep(Duration::from_millis(350));
            }
        })
    };
    let seed = kill_five_times(dir);
    producer.join().unwrap();
    // the last run joins a new group (tansu may never hand over the partitions of killed
    // members); its positions come from the checkpoint
    std::fs::write(dir.join("job.sql"), sql.replace(&group, &format!("{group}-last"))).unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got: Vec<i64> = Vec::new();
    while Instant::now() < deadline {
        got = ids_in(&read_values(&bootstrap(), &output).join("\n"));
        if want.is_subset(&got.iter().copied().collect()) {
            break;
        }
    }
    interrupt(&mut child, dir);
    let seen: BTreeSet<i64> = got.iter().copied().collect();
    let missing: Vec<&i64> = want.difference(&seen).take(5).collect();
    let extra: Vec<&i64> = seen.difference(&want).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "seed {seed}: missing {missing:?}, not wanted {extra:?} ({} messages read)", got.len());
    assert!(got.len() >= want.len());
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(log.contains("restoring checkpoint"), "some run restored a checkpoint");
}

/// Reads every message of `topic` on `servers` (one partition) until 2 s pass without one.
pub(crate) fn read_values(servers: &str, topic: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            quiet = Instant::now();
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

/// The transactional Kafka sink on librdkafka's mock cluster (tansu 0.6 has no EndTxn, so no
/// transactions at all). The mock checks producer ids, epochs and fencing; it shows aborted
/// rows to every consumer (a transaction aborted with rows in it shows as duplicates here) and
/// keeps no offsets committed in a transaction (the sink's checkpoint marker) and gives a new
/// producer of a transactional id a new producer id instead of fencing the old one, so
/// restarts cannot be tested on it. A windowed job over a file being tailed writes to Kafka
/// under `use_transactions`, a transaction per checkpoint, and gives exactly the batch answer
/// with no row twice (rows of an aborted transaction would show twice here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_kafka_sink_commits_with_checkpoints_on_the_mock_cluster() {
    use crate::checkpoints::{kill_test_input, settle, sinks_created, start, WINDOW_SQL};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let servers = mock.bootstrap_servers();
    mock.create_topic("windows", 1, 1).unwrap();
    let (input, lines, want) = kill_test_input(dir, 4_000).await;
    let sql = format!(
        "CREATE STREAM w AS {WINDOW_SQL} INTO out WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
         'clicks.event_time' = 'ts', 'clicks.watch' = 'true', 'clicks.batch.size' = '100', 'checkpoint.interval' = '200ms', \
         'clicks.schema' = 'ts BIGINT, ts_iso VARCHAR, user_id VARCHAR, amount BIGINT', \
         'use_transactions' = 'true', 'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{servers}', 'out.topic' = 'windows');",
        input.display()
    );
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    std::fs::write(&input, "").unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let mut all = lines.concat();
    all.push_str(&crate::checkpoints::sentinel());
    std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(all.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && read_values(&servers, "windows").len() < want.len() {}
    std::thread::sleep(Duration::from_millis(600)); // a duplicate would show by now
    crate::checkpoints::interrupt(&mut child, dir);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
    assert!(log.contains("checkpoints"), "the job took checkpoints:\n{log}");
    let got = read_values(&servers, "windows");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in canonical_lines(&got.join("\n")) {
        *counts.entry(l).or_insert(0) += 1;
    }
    let twice: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(r, _)| r).collect();
    assert!(twice.is_empty(), "windows written twice: {twice:?}");
    assert_same_rows("windows through a transactional Kafka sink", &counts.into_keys().collect::<Vec<_>>(), &want);
}

/// librdkafka's mock cluster made by a client of the test (`test.mock.num.brokers`), recording
/// the API key of every request its broker receives, in order of arrival.
struct TrackedMock {
    client: BaseProducer,
}

/// Kafka API keys the transaction tests count.
const OFFSET_COMMIT: i16 = 8;
const ADD_OFFSETS_TO_TXN: i16 = 25;
const END_TXN: i16 = 26;
const TXN_OFFSET_COMMIT: i16 = 28;

impl TrackedMock {
    fn new() -> Self {
        let client: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", "1").create().unwrap();
        // SAFETY: the handle is the live client's own; the cluster lives as long as the client.
        let cluster = unsafe { rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr()) };
        assert!(!cluster.is_null(), "the client made a mock cluster");
        // SAFETY: as above, and checked not null.
        unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(cluster) };
        Self { client }
    }

    fn servers(&self) -> String {
        self.client.client().mock_cluster().unwrap().bootstrap_servers()
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        self.client.client().mock_cluster().unwrap().create_topic(topic, partitions, 1).unwrap();
    }

    /// The API keys of the requests received so far.
    fn api_keys(&self) -> Vec<i16> {
        use rdkafka::bindings as rd;
        // SAFETY: the array and its requests are the mock's copies, read and then freed here.
        unsafe {
            let cluster = rd::rd_kafka_handle_mock_cluster(self.client.client().native_ptr());
            let mut count = 0usize;
            let requests = rd::rd_kafka_mock_get_requests(cluster, &mut count);
            if requests.is_null() {
                return Vec::new();
            }
            let keys = (0..count).map(|i| rd::rd_kafka_mock_request_api_key(*requests.add(i))).collect();
            rd::rd_kafka_mock_request_destroy_array(requests, count);
            keys
        }
    }
}

/// For each transaction ended (EndTxn, commit or abort) among `keys`: how many consumer groups'
/// offsets were added to it (AddOffsetsToTxn, one per group).
fn groups_per_transaction(keys: &[i16]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut groups = 0;
    for k in keys {
        match *k {
            ADD_OFFSETS_TO_TXN => groups += 1,
            END_TXN => out.push(std::mem::replace(&mut groups, 0)),
            _ => {}
        }
    }
    out
}

/// Kafka → Kafka under `use_transactions`: the source's consumer-group offsets at each
/// checkpoint go inside the sink's transaction (with the sink's checkpoint marker), so the
/// group's offsets and the rows written become visible together; the source commits none
/// itself. A source on another cluster cannot take part in the sink's transactions, nor can it
/// when the job has another sink beside (a file): it commits its own offsets once every sink
/// has committed each checkpoint, and the sink's transactions carry the marker alone.
/// On librdkafka's mock cluster, which checks the transactional protocol (producer id, epoch,
/// the group coordinator) and records the requests it receives, but keeps no offsets committed
/// in a transaction (tansu 0.6 has no EndTxn at all). Both runs write exactly DataFusion's
/// batch answer, no row twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_commits_the_source_offsets_inside_the_sink_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 3000;
    let batch_file = dir.join("orders.jsonl");
    std::fs::write(&batch_file, (0..n).map(|i| order(i) + "\n").collect::<String>()).unwrap();
    let query = "SELECT id, customer, amount FROM orders WHERE amount > 120";
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("orders", batch_file.to_str().unwrap(), opts).await.unwrap();
    let want = batch_rows(&ctx, query).await;
    assert!(want.len() > 500, "{}", want.len());

    // (the source's cluster is the sink's, whether the Kafka sink is the job's only sink)
    for (same_cluster, only_sink) in [(true, true), (false, true), (true, false)] {
        let in_txn = same_cluster && only_sink;
        let sink_side = TrackedMock::new();
        let source_side = if same_cluster { None } else { Some(TrackedMock::new()) };
        let source_cluster = source_side.as_ref().unwrap_or(&sink_side);
        source_cluster.create_topic("orders", 2);
        sink_side.create_topic("big", 1);
        produce_to(&source_cluster.servers(), "orders", &(0..n).map(|i| msg(Some(format!("k{}", i % 7)), order(i))).collect::<Vec<_>>());
        let sql = format!(
            "CREATE STREAM big AS {query} INTO out WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{}', 'orders.topic' = 'orders', \
             'orders.group.id' = 'copier', 'orders.value.format' = 'json', 'orders.schema' = '{ORDER_SCHEMA}', 'orders.batch.size' = '200', \
             'orders.auto.offset.reset' = 'earliest', 'use_transactions' = 'true', 'checkpoint.interval' = '200ms', \
             'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{}', 'out.topic' = 'big'{});",
            source_cluster.servers(),
            sink_side.servers(),
            if only_sink { "" } else { ", 'copy.type' = 'file_sink', 'copy.path' = 'copy.jsonl'" }
        )
        .replace("INTO out", if only_sink { "INTO out" } else { "INTO out, copy" });
        let _ = std::fs::remove_file(dir.join("job.log"));
        let _ = std::fs::remove_file(dir.join("copy.jsonl"));
        let _ = std::fs::remove_dir_all(dir.join("checkpoints"));
        std::fs::write(dir.join("job.sql"), sql).unwrap();
        let mut child = crate::checkpoints::start(dir, "job.sql", &[]);
        crate::checkpoints::settle(dir, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && read_values(&sink_side.servers(), "big").len() < want.len() {}
        // a few more checkpoints commit the offsets of the last rows; a duplicate would show
        std::thread::sleep(Duration::from_millis(1000));
        crate::checkpoints::interrupt(&mut child, dir);
        let log = std::fs::read_to_string(dir.join("job.log")).unwrap();
        let got = read_values(&sink_side.servers(), "big");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for l in canonical_lines(&got.join("\n")) {
            *counts.entry(l).or_insert(0) += 1;
        }
        let twice: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(r, _)| r).collect();
        assert!(twice.is_empty(), "rows written twice: {twice:?}");
        assert_same_rows(&format!("kafka → kafka (same cluster: {same_cluster}, only sink: {only_sink})"), &counts.into_keys().collect::<Vec<_>>(), &want);
        if !only_sink {
            assert_same_rows("kafka → file beside it", &file_rows(&dir.join("copy.jsonl")), &want);
        }

        let keys = sink_side.api_keys();
        let per_txn = groups_per_transaction(&keys);
        let with = |groups: usize| per_txn.iter().filter(|&&g| g == groups).count();
        let txn_commits = keys.iter().filter(|&&k| k == TXN_OFFSET_COMMIT).count();
        assert_eq!(txn_commits, keys.iter().filter(|&&k| k == ADD_OFFSETS_TO_TXN).count(), "each group added is committed in its transaction");
        if in_txn {
            assert!(log.contains("source 'orders': its positions are committed inside the transactions of sink 'out'"), "{log}");
            // marker + the source's group, from the first checkpoint that had read anything
            assert!(with(2) >= 3, "transactions carrying the source's offsets: {per_txn:?}");
            assert!(per_txn.iter().all(|&g| g <= 2), "{per_txn:?}");
            assert_eq!(keys.iter().filter(|&&k| k == OFFSET_COMMIT).count(), 0, "the source commits nothing outside the transactions: {keys:?}");
        } else {
            assert!(!log.contains("its positions are committed inside"), "{log}");
            assert!(with(1) >= 3 && per_txn.iter().all(|&g| g <= 1), "the marker alone: {per_txn:?}");
            // once every sink has committed the checkpoint
            let source_keys = source_cluster.api_keys();
            assert!(source_keys.iter().filter(|&&k| k == OFFSET_COMMIT).count() >= 2, "the source commits its own offsets: {source_keys:?}");
            if !same_cluster {
                assert!(!source_keys.contains(&ADD_OFFSETS_TO_TXN));
            }
        }
    }
}

/// `WITHIN INTERVAL` as the guide writes it, with no event-time keys: Kafka sources use the
/// message timestamp. Purchases 5 s after their click join; those 60 s after do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_on_kafka_uses_the_message_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let (clicks, purchases) = (unique("w_clicks"), unique("w_purchases"));
    create_topic(&clicks, 1);
    create_topic(&purchases, 1);
    let base = 1_767_225_600_000i64;
    let c: Vec<Msg> = (0..30).map(|i| Msg { key: None, value: format!(r#"{{"id": {i}}}"#), ts: Some(base + i * 10_000), headers: Vec::new() }).collect();
    let p: Vec<Msg> = (0..30)
        .map(|i| Msg {
            key: None,
            value: format!(r#"{{"id": {i}, "amount": {}}}"#, i * 2),
            ts: Some(base + i * 10_000 + if i % 3 == 0 { 5_000 } else { 60_000 }),
            headers: Vec::new(),
        })
        .collect();
    produce(&clicks, &c);
    produce(&purchases, &p);
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM j AS SELECT c.id, p.amount FROM clicks c JOIN purchases p ON c.id = p.id WITHIN INTERVAL '30' SECONDS \
         INTO out WITH ({}, {}, 'out.type' = 'file_sink', 'out.path' = '{}');",
        kafka_with("clicks", &clicks, ""),
        kafka_with("purchases", &purchases, ""),
        out.display()
    );
    let mut child = spawn_job(tmp.path(), "within.sql", &sql);
    wait_for(&mut child, &out, |t| t.lines().count() >= 10);
    std::thread::sleep(Duration::from_millis(1000));
    stop_with_sigint(&mut child);
    let want: Vec<String> = (0..30).filter(|i| i % 3 == 0).map(|i| format!(r#"{{"id": {i}, "amount": {}}}"#, i * 2)).collect();
    assert_same_rows("WITHIN on _timestamp", &file_rows(&out), &canonical_lines(&(want.join("\n") + "\n")));
}
