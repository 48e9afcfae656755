//! `redis_source`: the keys matching `key.pattern` read as a table — each key a row, its key in
//! `key.column` (without `key.prefix`) and its value's fields as the other columns (a JSON string,
//! or a hash) — read once, or again every `refresh_interval` as a lookup table joined with a
//! stream. Keys of the other type are not read (`SCAN … TYPE`).
//!
//! ```sql
//! SELECT t.symbol, t.qty * p.price AS notional FROM trades t JOIN prices p ON t.symbol = p.symbol
//! WITH ('prices.type' = 'redis_source', 'prices.key.pattern' = 'price:*', 'prices.key.prefix' = 'price:',
//!       'prices.key.column' = 'symbol', 'prices.schema' = 'price DOUBLE', 'prices.refresh_interval' = '10s', …)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::streaming::PartitionStream;
use tracing::{info, warn};

use super::{Connection, ValueFormat};
use crate::checkpoint::{BatchSender, Positions, ReadFn, ReaderPartition, SourceCheckpoint, UnitPositions};
use crate::error::{ConnectorError, Result};
use crate::format::decode::TextDecoder;
use crate::format::file_format::FileFormat;
use crate::format::schema::parse_schema;
use crate::metrics::{ConnectionStatus, ConnectorMetrics};
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::source::Source;

/// The position key of keys read once: `{"offset": i64::MAX}` when read.
const ONCE_KEY: &str = "keys";
/// Keys per `SCAN` step and per `MGET` / pipeline.
const CHUNK: usize = 1000;
/// Values inferred from when no `schema` is given.
const INFER_RECORDS: usize = 1000;

#[derive(Debug)]
struct Config {
    name: String,
    conn: Connection,
    pattern: String,
    key_column: String,
    prefix: String,
    schema: SchemaRef,
    refresh: Option<Duration>,
    metrics: Arc<ConnectorMetrics>,
}

/// A configured Redis source.
#[derive(Debug)]
pub struct RedisSource {
    cfg: Arc<Config>,
    positions: UnitPositions,
}

impl RedisSource {
    /// Reads the keys of `props`; without a `schema`, reads the keys once to infer it.
    pub fn try_new(props: &Properties) -> Result<Self> {
        let conn = Connection::from_properties(props)?;
        let pattern = props.get("key.pattern").unwrap_or("*").to_string();
        let key_column = props.get("key.column").unwrap_or("_key").trim().to_string();
        let prefix = props.get("key.prefix").unwrap_or("").to_string();
        let mut cfg = Config {
            name: props.owner().to_string(),
            conn,
            pattern,
            key_column: key_column.clone(),
            prefix,
            schema: Arc::new(Schema::empty()),
            refresh: props.get_positive_duration("refresh_interval")?,
            metrics: Arc::new(ConnectorMetrics::default()),
        };
        let values: Schema = match props.get("schema") {
            Some(text) => parse_schema(text, &props.full_key("schema"))?.as_ref().clone(),
            None => {
                let lines = on_own_runtime("redis", async {
                    let mut con = cfg.conn.connect().await?;
                    read_lines(&cfg, &mut con, None).await
                })?;
                if lines.is_empty() {
                    return Err(ConnectorError::invalid(
                        props.full_key("schema"),
                        format!("no key of {} matches '{}' to infer the columns from; set the schema ('price DOUBLE, …')", cfg.conn.display, cfg.pattern),
                    ));
                }
                let (s, _) = arrow_json::reader::infer_json_schema(&lines[..], Some(INFER_RECORDS))
                    .map_err(|e| ConnectorError::arrow(format!("redis source '{}'", cfg.name), e))?;
                s
            }
        };
        let mut fields = vec![Arc::new(Field::new(&key_column, DataType::Utf8, false))];
        fields.extend(values.fields().iter().filter(|f| f.name() != &key_column).cloned());
        cfg.schema = Arc::new(Schema::new(fields));
        Ok(Self { cfg: Arc::new(cfg), positions: UnitPositions::default() })
    }
}

/// Every matching key, once (`SCAN` may return a key twice), of the value format's type
/// (`SCAN … TYPE`: Redis 6 or later). Keys are bytes: one that is not UTF-8 is skipped later.
async fn scan(cfg: &Config, con: &mut redis::aio::MultiplexedConnection) -> Result<Vec<Vec<u8>>> {
    let kind = match cfg.conn.format {
        ValueFormat::Json => "string",
        ValueFormat::Hash => "hash",
    };
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&cfg.pattern)
            .arg("COUNT")
            .arg(CHUNK)
            .arg("TYPE")
            .arg(kind)
            .query_async(con)
            .await
            .map_err(|e| cfg.conn.error(&format!("scanning '{}' (SCAN … TYPE needs Redis 6 or later)", cfg.pattern), &e))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys.into_iter().collect());
        }
        cursor = next;
    }
}

/// A hash field's text as the JSON value of its column's type (`true` for a BOOLEAN column;
/// numbers stay text, which the JSON decoder parses), so that the decoder takes it.
fn typed(schema: Option<&Schema>, field: &str, text: String) -> serde_json::Value {
    let boolean = schema.and_then(|s| s.field_with_name(field).ok()).is_some_and(|f| f.data_type() == &DataType::Boolean);
    if boolean {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => return serde_json::Value::Bool(true),
            "false" | "0" | "f" | "no" => return serde_json::Value::Bool(false),
            _ => {}
        }
    }
    serde_json::Value::String(text)
}

/// The matching keys' values as JSON lines, each with its key in `key.column`; `schema` (when
/// known) types a hash's text. A key or value that is not UTF-8 (or not a JSON object) is
/// skipped and counted.
async fn read_lines(cfg: &Config, con: &mut redis::aio::MultiplexedConnection, schema: Option<&Schema>) -> Result<Vec<u8>> {
    let keys = scan(cfg, con).await?;
    let mut out = Vec::new();
    let skip = |key: &[u8], why: &str| {
        cfg.metrics.add_errors(1);
        warn!(source = %cfg.name, "redis {}: key '{}' {why}; skipped", cfg.conn.display, String::from_utf8_lossy(key));
    };
    let put = |key: &str, mut obj: serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>| -> Result<()> {
        let shown = key.strip_prefix(cfg.prefix.as_str()).unwrap_or(key);
        obj.insert(cfg.key_column.clone(), serde_json::Value::String(shown.to_string()));
        serde_json::to_writer(&mut *out, &obj).map_err(|e| ConnectorError::Other(format!("redis source '{}': {e}", cfg.name)))?;
        out.push(b'\n');
        Ok(())
    };
    for chunk in keys.chunks(CHUNK) {
        match cfg.conn.format {
            ValueFormat::Json => {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(chunk).query_async(con).await.map_err(|e| cfg.conn.error("reading values (MGET)", &e))?;
                for (key, value) in chunk.iter().zip(values) {
                    let Some(value) = value else { continue }; // deleted since the scan
                    let Ok(text_key) = std::str::from_utf8(key) else {
                        skip(key, "is not UTF-8");
                        continue;
                    };
                    match serde_json::from_slice::<serde_json::Value>(&value) {
                        Ok(serde_json::Value::Object(obj)) => put(text_key, obj, &mut out)?,
                        _ => skip(key, "does not hold a JSON object"),
                    }
                }
            }
            ValueFormat::Hash => {
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.cmd("HGETALL").arg(key);
                }
                let values: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pipe.query_async(con).await.map_err(|e| cfg.conn.error("reading hashes (HGETALL)", &e))?;
                for (key, fields) in chunk.iter().zip(values) {
                    if fields.is_empty() {
                        continue; // deleted since the scan
                    }
                    let Ok(text_key) = std::str::from_utf8(key) else {
                        skip(key, "is not UTF-8");
                        continue;
                    };
                    let mut obj = serde_json::Map::new();
                    let mut binary = false;
                    for (f, v) in fields {
                        match (String::from_utf8(f), String::from_utf8(v)) {
                            (Ok(f), Ok(v)) => {
                                let value = typed(schema, &f, v);
                                obj.insert(f, value);
                            }
                            _ => binary = true,
                        }
                    }
                    if binary {
                        skip(key, "has a field or value that is not UTF-8");
                        continue;
                    }
                    put(text_key, obj, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

impl Source for RedisSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.cfg.schema)
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let (columns, schema) = crate::source::projected_columns(&self.cfg.schema, projection);
        let cfg = Arc::clone(&self.cfg);
        let columns = Arc::new(columns);
        let read: ReadFn = Arc::new(move |restored, tx| Box::pin(read_table(Arc::clone(&cfg), Arc::clone(&columns), restored, tx)));
        vec![ReaderPartition::partition(format!("redis source '{}'", self.cfg.name), schema, &self.positions, Arc::clone(&self.cfg.metrics), read)]
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
    }

    /// Executed again after a failure, a reader starts from its position cell.
    fn resumes_after_failure(&self) -> bool {
        true
    }

    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        Some(Arc::new(self.positions.clone()))
    }

    fn refresh_interval(&self) -> Option<Duration> {
        self.cfg.refresh
    }

    fn describe(&self) -> String {
        let mode = self.cfg.refresh.map_or("read once".to_string(), |r| format!("re-read every {r:?}"));
        let format = match self.cfg.conn.format {
            ValueFormat::Json => "json",
            ValueFormat::Hash => "hash",
        };
        format!("redis {} keys '{}' as {format} ({mode})", self.cfg.conn.display, self.cfg.pattern)
    }
}

/// Reads the keys once (unless a restored checkpoint says they were read) and sends them as one
/// batch of `columns`.
async fn read_table(cfg: Arc<Config>, columns: Arc<Vec<usize>>, restored: Positions, tx: BatchSender) -> Result<()> {
    let once = cfg.refresh.is_none();
    if once && restored.get(ONCE_KEY).and_then(|v| v.get("offset")).and_then(serde_json::Value::as_i64) == Some(i64::MAX) {
        info!(source = %cfg.name, "redis source '{}': read before the checkpoint restored; not read again", cfg.name);
        return Ok(());
    }
    let mut con = cfg.conn.connect().await?;
    cfg.metrics.set_status(ConnectionStatus::Connected);
    let lines = read_lines(&cfg, &mut con, Some(&cfg.schema)).await?;
    cfg.metrics.bytes.fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let out = Arc::new(cfg.schema.project(&columns).map_err(|e| ConnectorError::arrow(cfg.name.clone(), e))?);
    let batch = if lines.is_empty() {
        RecordBatch::new_empty(out)
    } else {
        let mut decoder = TextDecoder::try_new(Arc::clone(&cfg.schema), Some(&columns), FileFormat::JsonLines, 8192)?;
        let (batches, bad) = decoder.decode_chunk(&lines, &|i| i as u64 + 1)?;
        if !bad.is_empty() {
            cfg.metrics.add_errors(bad.len() as u64);
            warn!(source = %cfg.name, "redis source '{}': {} values do not fit the schema and were skipped (first: {})", cfg.name, bad.len(), bad[0].message);
        }
        arrow::compute::concat_batches(&out, &batches).map_err(|e| ConnectorError::arrow(cfg.name.clone(), e))?
    };
    cfg.metrics.add_batch(batch.num_rows());
    let done = once.then(|| (ONCE_KEY.to_string(), serde_json::json!({ "offset": i64::MAX })));
    let _ = tx.send(Ok((batch, done))).await;
    Ok(())
}
