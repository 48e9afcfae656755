//! Avro through a schema registry on the project's Kafka broker (tansu). No registry server is
//! packaged for this machine: the test starts a small one speaking the Confluent REST API (the
//! documented endpoints, content type and error bodies: `POST /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/latest`, `GET /schemas/ids/{id}`, 404 with `error_code` 40401 /
//! 40403). Messages are encoded by hand here (not by arrow-avro) in the Confluent wire format,
//! with two versions of a schema; the engine reads each with its writer schema resolved to the
//! newest, reports an unknown id and a message without the header as malformed, and writes a
//! topic whose schema it registers, decoded back by hand.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::common::{assert_same_rows, canonical_lines, stop_with_sigint};
use crate::kafka::{bootstrap, create_topic, unique};

#[derive(Default)]
struct Store {
    /// id → schema text
    schemas: BTreeMap<u32, String>,
    /// subject → ids of its versions, oldest first
    subjects: BTreeMap<String, Vec<u32>>,
    lookups_by_id: AtomicUsize,
}

/// The basic auth every call must carry: `ferris:reg-s3cret`.
const AUTH: &str = "Basic ZmVycmlzOnJlZy1zM2NyZXQ=";

fn authorised(headers: &HeaderMap) -> Result<(), Reply> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(AUTH) => Ok(()),
        _ => Err((StatusCode::UNAUTHORIZED, Json(json!({ "error_code": 40101, "message": "Unauthorized" })))),
    }
}

type Shared = Arc<Mutex<Store>>;
type Reply = (StatusCode, Json<Value>);

fn not_found(code: u32, message: String) -> Reply {
    (StatusCode::NOT_FOUND, Json(json!({ "error_code": code, "message": message })))
}

impl Store {
    fn register(&mut self, subject: &str, schema: &str) -> u32 {
        let canonical = |s: &str| serde_json::from_str::<Value>(s).map(|v| v.to_string()).unwrap_or_else(|_| s.to_string());
        let id = match self.schemas.iter().find(|(_, s)| canonical(s) == canonical(schema)) {
            Some((id, _)) => *id,
            None => {
                let id = self.schemas.keys().last().copied().unwrap_or(0) + 1;
                self.schemas.insert(id, schema.to_string());
                id
            }
        };
        let versions = self.subjects.entry(subject.to_string()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }
}

async fn register(State(s): State<Shared>, UrlPath(subject): UrlPath<String>, headers: HeaderMap, Json(body): Json<Value>) -> Reply {
    if let Err(r) = authorised(&headers) {
        return r;
    }
    let Some(schema) = body.get("schema").and_then(Value::as_str) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error_code": 42201, "message": "Invalid schema" })));
    };
    if serde_json::from_str::<Value>(schema).is_err() {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error_code": 42201, "message": "Invalid schema" })));
    }
    let id = s.lock().unwrap().register(&subject, schema);
    (StatusCode::OK, Json(json!({ "id": id })))
}

async fn latest(State(s): State<Shared>, UrlPath(subject): UrlPath<String>, headers: HeaderMap) -> Reply {
    if let Err(r) = authorised(&headers) {
        return r;
    }
    let s = s.lock().unwrap();
    match s.subjects.get(&subject) {
        Some(v) if !v.is_empty() => {
            let id = *v.last().unwrap();
            (StatusCode::OK, Json(json!({ "subject": subject, "version": v.len(), "id": id, "schema": s.schemas[&id] })))
        }
        _ => not_found(40401, format!("Subject '{subject}' not found.")),
    }
}

async fn by_id(State(s): State<Shared>, UrlPath(id): UrlPath<u32>, headers: HeaderMap) -> Reply {
    if let Err(r) = authorised(&headers) {
        return r;
    }
    let s = s.lock().unwrap();
    s.lookups_by_id.fetch_add(1, Ordering::SeqCst);
    match s.schemas.get(&id) {
        Some(schema) => (StatusCode::OK, Json(json!({ "schema": schema }))),
        None => not_found(40403, format!("Schema {id} not found")),
    }
}

/// Starts the registry on 127.0.0.1; its URL and its store.
fn start_registry() -> (String, Shared) {
    let store: Shared = Arc::default();
    let shared = Arc::clone(&store);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/subjects/{subject}/versions", post(register))
                .route("/subjects/{subject}/versions/latest", get(latest))
                .route("/schemas/ids/{id}", get(by_id))
                .with_state(shared);
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
        });
    });
    (url, store)
}

// Avro binary, by hand: zigzag varints, length-prefixed strings, little-endian doubles.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn get_long(buf: &[u8], at: &mut usize) -> i64 {
    let (mut z, mut shift) = (0u64, 0);
    loop {
        let b = buf[*at];
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn get_str(buf: &[u8], at: &mut usize) -> String {
    let n = get_long(buf, at) as usize;
    let s = String::from_utf8(buf[*at..*at + n].to_vec()).unwrap();
    *at += n;
    s
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(body);
    v
}

const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"},{"name":"amount","type":"double"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"},{"name":"amount","type":"double"},{"name":"channel","type":"string","default":"web"}]}"#;

/// Every message of `topic` (one partition), raw.
fn raw_values(topic: &str, want: usize) -> Vec<Vec<u8>> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).set("group.id", unique("raw")).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

fn spawn(dir: &Path, sql: &str) -> Child {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .env("RUST_LOG", "warn,ferris_engine=info,ferris_connectors=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two schema versions in one topic, read as the newest (v1 rows get the default), an unknown
/// id and a headerless value reported, and a sink topic whose derived schema is registered
/// under `<topic>-value` and whose values decode by hand to the rows written.
#[test]
fn avro_through_a_schema_registry_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, store) = start_registry();
    let topic = unique("reg-orders");
    let out_topic = unique("reg-out");
    let (id1, id2) = {
        let mut s = store.lock().unwrap();
        (s.register(&format!("{topic}-value"), V1), s.register(&format!("{topic}-value"), V2))
    };
    create_topic(&topic, 1);
    create_topic(&out_topic, 1);
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let mut want = Vec::new();
    let mut values = Vec::new();
    for i in 0..100i64 {
        let mut body = Vec::new();
        put_long(&mut body, i);
        put_str(&mut body, &format!("c{}", i % 7));
        body.extend_from_slice(&(i as f64 * 1.5).to_le_bytes());
        let channel = if i % 2 == 1 {
            put_str(&mut body, "app");
            "app"
        } else {
            "web"
        };
        values.push(framed(if i % 2 == 1 { id2 } else { id1 }, &body));
        want.push(json!({ "id": i, "customer": format!("c{}", i % 7), "amount": i as f64 * 1.5, "channel": channel }).to_string());
        if i == 50 {
            values.push(framed(999, &body));
            values.push(b"{\"id\": 1}".to_vec());
        }
    }
    for v in &values {
        p.send(BaseRecord::<(), [u8]>::to(&topic).payload(v.as_slice())).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();

    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM r AS SELECT id, customer, amount, channel FROM orders INTO out, t WITH (\
         'orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '{b}', 'orders.topic' = '{topic}', 'orders.group.id' = '{g}', \
         'orders.value.format' = 'avro', 'orders.schema.registry.url' = '{url}', 'orders.schema.registry.basic.auth.user.info' = 'ferris:reg-s3cret', \
         'out.type' = 'file_sink', 'out.path' = '{o}', \
         't.type' = 'kafka_sink', 't.bootstrap.servers' = '{b}', 't.topic' = '{out_topic}', 't.value.format' = 'avro', 't.schema.registry.url' = '{url}', \
         't.schema.registry.basic.auth.user.info' = 'ferris:reg-s3cret');",
        b = bootstrap(),
        g = unique("group"),
        o = out.display()
    );
    let mut child = spawn(tmp.path(), &sql);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop_with_sigint(&mut child);
    let want = canonical_lines(&want.join("\n"));
    assert_same_rows("rows of both schema versions, read as the newest", &canonical_lines(&std::fs::read_to_string(&out).unwrap()), &want);
    assert!(stderr.contains("Schema 999 not found (error 40403)"), "{stderr}");
    assert!(stderr.contains("not in the Confluent wire format"), "{stderr}");
    let s = store.lock().unwrap();
    assert!(!stderr.contains("reg-s3cret"), "{stderr}");
    // v1 and the unknown 999 looked up once each (v2, the newest, came with the subject)
    assert_eq!(s.lookups_by_id.load(Ordering::SeqCst), 2, "writer schemas are cached");
    // the sink's schema, derived from the columns, registered under <topic>-value
    let ids = s.subjects.get(&format!("{out_topic}-value")).unwrap_or_else(|| panic!("no subject registered: {:?}", s.subjects.keys()));
    let registered: Value = serde_json::from_str(&s.schemas[&ids[0]]).unwrap();
    let out_id = ids[0];
    drop(s);
    let fields: Vec<(String, Value)> =
        registered["fields"].as_array().unwrap().iter().map(|f| (f["name"].as_str().unwrap().to_string(), f["type"].clone())).collect();
    assert_eq!(fields.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["id", "customer", "amount", "channel"]);
    let raw = raw_values(&out_topic, 100);
    let mut back = Vec::new();
    for v in &raw {
        assert_eq!(&v[..5], &framed(out_id, &[])[..], "Confluent header with the registered id");
        let mut at = 5;
        let mut row = serde_json::Map::new();
        for (name, ty) in &fields {
            // a nullable column is a union with null: its branch first
            let ty = match ty {
                Value::Array(branches) => {
                    let b = get_long(v, &mut at) as usize;
                    branches[b].clone()
                }
                t => t.clone(),
            };
            let value = match ty.as_str() {
                Some("null") => Value::Null,
                Some("long") => json!(get_long(v, &mut at)),
                Some("string") => json!(get_str(v, &mut at)),
                Some("double") => {
                    let d = f64::from_le_bytes(v[at..at + 8].try_into().unwrap());
                    at += 8;
                    json!(d)
                }
                other => panic!("unexpected Avro type {other:?} for {name}"),
            };
            row.insert(name.clone(), value);
        }
        assert_eq!(at, v.len(), "the whole value is the record");
        back.push(Value::Object(row).to_string());
    }
    assert_same_rows("the sink topic decoded by hand", &canonical_lines(&back.join("\n")), &want);
}
