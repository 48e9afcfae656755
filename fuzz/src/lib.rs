//! The bodies of the fuzz targets: the parts of FerrisStreams that read what a user or a stream
//! hands them. Each takes arbitrary bytes and must return — an error is a fine answer, a panic
//! is a bug. The coverage-guided fuzzers in `fuzz/cargo-fuzz/` call these (`bash fuzz/run.sh`);
//! `tests/corpora.rs` replays every file of `fuzz/corpus/<target>/` through them in the
//! ordinary test run.
//!
//! | target | what it feeds |
//! |---|---|
//! | `sql` | `CREATE STREAM … AS SELECT … WITH (…)` text: our dialect's rewrites, sqlparser, job analysis |
//! | `config` | a YAML application file (profiles, `with:`) and a YAML property file (`extends`) |
//! | `substitution` | `${VAR}`, `${VAR:-default}`, `${VAR:?message}` in any text |
//! | `json` | a schema (first line) and JSON Lines / JSON records, through the one-pass and arrow-json decoders |
//! | `csv` | a schema (first line) and CSV records |
//! | `avro` | an Avro schema (first line) and binary values (raw or Confluent-framed) |

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ferris_connectors::format::avro::{AvroDecoder, Framing};
use ferris_connectors::format::decode::{json_array_to_lines, TextDecoder};
use ferris_connectors::format::schema::parse_schema;
use ferris_connectors::format::FileFormat;
use ferris_engine::config::{yaml::load_properties, AppConfig, Variables};

/// A target's body: it reads any bytes, and must not panic.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory of its corpus) and its body.
pub const TARGETS: &[(&str, Target)] = &[("sql", sql), ("config", config), ("substitution", substitution), ("json", json), ("csv", csv), ("avro", avro)];

/// Text that names a device or a process file: reading `/dev/zero` or `/dev/stdin` (a
/// `config_file` or `extends` target) would never end, which says nothing about the parser.
fn names_a_device(text: &str) -> bool {
    text.contains("/dev") || text.contains("/proc") || text.contains("/sys")
}

/// An error must say something.
fn said<E: std::fmt::Display>(e: E) {
    assert!(!e.to_string().trim().is_empty(), "an error without a message");
}

/// `sql`: statements in our dialect, parsed and analysed into jobs.
///
/// ```sql
/// CREATE STREAM s AS SELECT * FROM t INTO out WITH ('t.type' = 'file_source', …);
/// ```
pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if names_a_device(&text) {
        return;
    }
    match ferris_engine::job::analysis::analyze_sql(&text) {
        Ok(jobs) => jobs.into_iter().filter_map(Result::err).for_each(said),
        Err(e) => said(e),
    }
}

/// A directory of this process for the files the `config` target writes (made again for each
/// input; removed after it when empty).
fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferris-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn variables() -> Variables {
    let env: BTreeMap<String, String> = [("HOME", "/home/ferris"), ("KAFKA_BROKERS", "localhost:9092"), ("FERRIS_PROFILE", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Variables::new(env, BTreeMap::new())
}

/// `config`: the bytes as an application file (`--config app.yaml`) under each of its
/// profiles, and as a property file (`'x.config_file' = 'kafka.yaml'`).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if names_a_device(&text) {
        return;
    }
    let path = scratch().join(format!("app-{:?}.yaml", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_"));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let vars = variables();
    match AppConfig::load(&path, None, &vars) {
        Ok(app) => {
            for profile in app.profiles.iter().take(4) {
                if let Err(e) = AppConfig::load(&path, Some(profile), &vars) {
                    said(e);
                }
            }
        }
        Err(e) => said(e),
    }
    if let Err(e) = load_properties(&path, &vars, "fuzz") {
        said(e);
    }
    let _ = std::fs::remove_file(&path);
    // the directory goes with its last file (another thread's file still in it keeps it: that
    // thread removes it after its own)
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// `substitution`: the first line sets variables (`NAME=value;OTHER=value`), the rest is
/// substituted.
pub fn substitution(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (defs, body) = text.split_once('\n').unwrap_or(("", &text));
    let env: BTreeMap<String, String> = defs.split(';').filter_map(|d| d.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let profile: BTreeMap<String, String> = env.iter().take(1).map(|(k, v)| (format!("{k}_P"), v.clone())).collect();
    let vars = Variables::new(env, profile);
    if let Err(e) = vars.substitute(body, "fuzz") {
        said(e);
    }
}

/// The schema used when the first line is not one: every type the text decoders read.
fn default_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("day", DataType::Date32, true),
        Field::new("small", DataType::Int32, true),
        Field::new("price", DataType::Decimal128(10, 2), true),
    ]))
}

/// The schema of the first line (`id BIGINT, name VARCHAR`) and the records after it, ending
/// in a newline as the file and Kafka sources hand them over; one more byte picks the batch
/// size and whether only some columns are read.
fn schema_and_records(data: &[u8]) -> (SchemaRef, Vec<u8>, usize, bool) {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let knob = first.first().copied().unwrap_or(0);
    let schema = parse_schema(&String::from_utf8_lossy(first), "fuzz.schema").unwrap_or_else(|_| default_schema());
    let mut records = rest.to_vec();
    if records.last().is_some_and(|&b| b != b'\n') {
        records.push(b'\n');
    }
    (schema, records, usize::from(knob % 7) + 1, knob % 2 == 1)
}

fn decode_text(schema: SchemaRef, format: FileFormat, records: &[u8], batch_size: usize, project: bool) {
    let projection: Option<Vec<usize>> = project.then(|| (0..schema.fields().len()).step_by(2).collect());
    match TextDecoder::try_new(schema, projection.as_deref(), format, batch_size) {
        Ok(mut d) => match d.decode_chunk(records, &|i| i as u64 + 2) {
            Ok((_, bad)) => bad.iter().for_each(|b| said(&b.message)),
            Err(e) => said(e),
        },
        Err(e) => said(e),
    }
}

/// `json`: JSON Lines and JSON records, and a JSON array split into lines (the HTTP source).
pub fn json(data: &[u8]) {
    let (schema, records, batch_size, project) = schema_and_records(data);
    decode_text(Arc::clone(&schema), FileFormat::JsonLines, &records, batch_size, project);
    decode_text(schema, FileFormat::Json, &records, batch_size, project);
    if let Err(e) = json_array_to_lines(&records) {
        said(e);
    }
}

/// `csv`: CSV records with `,`, `;` or tab between fields.
pub fn csv(data: &[u8]) {
    let (schema, records, batch_size, project) = schema_and_records(data);
    let delimiter = [b',', b';', b'\t'][batch_size % 3];
    decode_text(schema, FileFormat::Csv { has_headers: false, delimiter, quote: b'"' }, &records, batch_size, project);
}

/// `avro`: the first line is the writer's schema (JSON); the values after it are separated by
/// `\n--\n`; the schema's first byte picks the framing.
pub fn avro(data: &[u8]) {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let schema = String::from_utf8_lossy(first);
    if names_a_device(&schema) {
        return;
    }
    let framing = [Framing::Raw, Framing::Auto, Framing::Confluent][usize::from(first.first().copied().unwrap_or(0)) % 3];
    let mut values: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while let Some(i) = rest[at..].windows(4).position(|w| w == b"\n--\n") {
        values.push(&rest[at..at + i]);
        at += i + 4;
    }
    values.push(&rest[at..]);
    match AvroDecoder::try_new(&schema, framing, 3, "fuzz.avro.schema") {
        Ok(d) => match d.decode(values.len(), |i| values[i]) {
            Ok((_, bad)) => bad.iter().for_each(|b| said(&b.message)),
            Err(e) => said(e),
        },
        Err(e) => said(e),
    }
}
