//! `redis_sink`: one key per row, named by `key.field` or `key.template` (with `key.prefix`),
//! holding the row as a JSON string (`SET`) or a hash of its columns (`DEL` + `HSET`, so a NULL
//! column leaves no stale field), expiring after `ttl`. A batch is one pipeline in a
//! `MULTI`/`EXEC` transaction: no other client sees part of it. Rows of an `EMIT CHANGES` changelog with
//! `_op = 'DELETE'` delete their key. Writes are idempotent — a replayed row sets its key to the
//! same value — so at-least-once delivery leaves the same keys as exactly-once.
//!
//! ```sql
//! SELECT user_id, COUNT(*) AS clicks FROM clicks GROUP BY user_id EMIT CHANGES
//! INTO counters WITH ('counters.type' = 'redis_sink', 'counters.key.template' = 'clicks:{user_id}', 'counters.value.format' = 'hash', …)
//! ```

use std::time::Duration;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tracing::warn;

use super::{is_connection_error, Connection, ValueFormat};
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;
use crate::sink::Sink;

/// One piece of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

/// Writes rows to Redis keys.
pub struct RedisSink {
    name: String,
    conn: Connection,
    key: Vec<Part>,
    ttl: Option<Duration>,
    con: Option<redis::aio::MultiplexedConnection>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink").field("name", &self.name).field("conn", &self.conn).finish()
    }
}

/// Parses `user:{user_id}:{window_start}`.
fn parse_template(text: &str) -> std::result::Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("'{{' without '}}' in '{text}'"))? + open;
        let col = rest[open + 1..close].trim();
        if col.is_empty() {
            return Err(format!("an empty '{{}}' in '{text}'"));
        }
        parts.push(Part::Column(col.to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    if !parts.iter().any(|p| matches!(p, Part::Column(_))) {
        return Err(format!("'{text}' names no column: every row would write the same key"));
    }
    Ok(parts)
}

impl RedisSink {
    /// Reads the sink's keys and checks that Redis answers (`PING`).
    pub fn try_new(props: &Properties) -> Result<Self> {
        let conn = Connection::from_properties(props)?;
        let mut key = match (props.get("key.template"), props.get("key.field")) {
            (Some(t), None) => parse_template(t).map_err(|m| ConnectorError::invalid(props.full_key("key.template"), m))?,
            (None, Some(f)) => vec![Part::Column(f.trim().to_string())],
            (Some(_), Some(_)) => return Err(ConnectorError::invalid(props.full_key("key.template"), "set key.template or key.field, not both")),
            (None, None) => return Err(ConnectorError::MissingProperty { key: props.full_key("key.field") }),
        };
        if let Some(prefix) = props.get("key.prefix") {
            key.insert(0, Part::Text(prefix.to_string()));
        }
        let ttl = props.get_positive_duration("ttl")?;
        // a refused connection, a wrong password or a failed TLS handshake is an error at start
        let c = conn.clone();
        crate::runtime::on_own_runtime("redis", async move {
            let mut con = c.connect().await?;
            match redis::cmd("PING").query_async::<()>(&mut con).await {
                // a user allowed to write and not to ping: the server answered
                Err(e) if e.code() == Some("NOPERM") => Ok(()),
                r => r.map_err(|e| c.error("cannot ping", &e)),
            }
        })?;
        Ok(Self { name: props.owner().to_string(), conn, key, ttl, con: None })
    }

    /// Each row's key; `None` where a column of the key is NULL.
    fn keys(&self, batch: &RecordBatch) -> Result<Vec<Option<String>>> {
        let mut columns: Vec<Option<StringArray>> = Vec::with_capacity(self.key.len());
        for p in &self.key {
            columns.push(match p {
                Part::Text(_) => None,
                Part::Column(c) => Some(self.text_column(batch, c)?),
            });
        }
        Ok((0..batch.num_rows())
            .map(|row| {
                let mut k = String::new();
                for (p, col) in self.key.iter().zip(&columns) {
                    match (p, col) {
                        (Part::Text(t), _) => k.push_str(t),
                        (Part::Column(_), Some(c)) if c.is_valid(row) => k.push_str(c.value(row)),
                        _ => return None,
                    }
                }
                Some(k)
            })
            .collect())
    }

    fn text_column(&self, batch: &RecordBatch, name: &str) -> Result<StringArray> {
        let col = batch.column_by_name(name).ok_or_else(|| ConnectorError::Other(format!("redis sink '{}': no column '{name}' for the key", self.name)))?;
        text(col).map_err(|e| ConnectorError::arrow(format!("redis sink '{}': column '{name}'", self.name), e))
    }

    /// The rows' values, without the changelog's `_op` column.
    fn payload(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        match batch.schema().index_of("_op") {
            Ok(i) => {
                let keep: Vec<usize> = (0..batch.num_columns()).filter(|c| *c != i).collect();
                batch.project(&keep).map_err(|e| ConnectorError::arrow(format!("redis sink '{}'", self.name), e))
            }
            Err(_) => Ok(batch.clone()),
        }
    }

    /// The pipeline writing `batch`, and the rows left out (no key).
    fn pipeline(&self, batch: &RecordBatch) -> Result<(redis::Pipeline, usize)> {
        let keys = self.keys(batch)?;
        let deletes: Option<StringArray> = match batch.column_by_name("_op") {
            Some(c) => Some(text(c).map_err(|e| ConnectorError::arrow(format!("redis sink '{}': _op", self.name), e))?),
            None => None,
        };
        let payload = self.payload(batch)?;
        let ctx = || format!("redis sink '{}'", self.name);
        let mut pipe = redis::pipe();
        pipe.atomic();
        // at least 1 ms: `PX 0` is an error
        let ttl_ms = self.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut missing = 0;
        match self.conn.format {
            ValueFormat::Json => {
                let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(Vec::new());
                w.write(&payload).map_err(|e| ConnectorError::arrow(ctx(), e))?;
                w.finish().map_err(|e| ConnectorError::arrow(ctx(), e))?;
                let buf = w.into_inner();
                // arrow-json escapes newlines inside strings: one line per row
                let lines = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
                for (row, line) in lines.enumerate() {
                    let Some(Some(key)) = keys.get(row) else {
                        missing += 1;
                        continue;
                    };
                    if deletes.as_ref().is_some_and(|d| d.is_valid(row) && d.value(row).eq_ignore_ascii_case("DELETE")) {
                        pipe.cmd("DEL").arg(key).ignore();
                        continue;
                    }
                    let set = pipe.cmd("SET").arg(key).arg(line);
                    if let Some(ms) = ttl_ms {
                        set.arg("PX").arg(ms);
                    }
                    set.ignore();
                }
            }
            ValueFormat::Hash => {
                let names: Vec<String> = payload.schema().fields().iter().map(|f| f.name().clone()).collect();
                let values = payload.columns().iter().map(text).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| ConnectorError::arrow(ctx(), e))?;
                for (row, key) in keys.iter().enumerate() {
                    let Some(key) = key else {
                        missing += 1;
                        continue;
                    };
                    pipe.cmd("DEL").arg(key).ignore();
                    if deletes.as_ref().is_some_and(|d| d.is_valid(row) && d.value(row).eq_ignore_ascii_case("DELETE")) {
                        continue;
                    }
                    let fields: Vec<(&str, &str)> =
                        names.iter().zip(&values).filter(|(_, v)| v.is_valid(row)).map(|(n, v)| (n.as_str(), v.value(row))).collect();
                    if fields.is_empty() {
                        continue;
                    }
                    pipe.cmd("HSET").arg(key).arg(fields).ignore();
                    if let Some(ms) = ttl_ms {
                        pipe.cmd("PEXPIRE").arg(key).arg(ms).ignore();
                    }
                }
            }
        }
        Ok((pipe, missing))
    }
}

/// A column as text, vectorised (arrow's cast: numbers, dates and times as they display).
fn text(col: &ArrayRef) -> std::result::Result<StringArray, arrow::error::ArrowError> {
    let cast = arrow::compute::cast(col, &DataType::Utf8)?;
    cast.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| arrow::error::ArrowError::CastError("not text".into()))
}

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &Schema) -> Result<()> {
        for p in &self.key {
            if let Part::Column(c) = p {
                if schema.field_with_name(c).is_err() {
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(ConnectorError::Other(format!(
                        "redis sink '{}': the key names column '{c}', but the rows have {}",
                        self.name,
                        names.join(", ")
                    )));
                }
            }
        }
        if self.conn.format == ValueFormat::Hash {
            if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(ConnectorError::Other(format!(
                    "redis sink '{}': a hash cannot hold column '{}' of type {}; use value.format = 'json'",
                    self.name,
                    f.name(),
                    f.data_type()
                )));
            }
        }
        Ok(())
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (pipe, missing) = self.pipeline(batch)?;
        // a lost connection is retried once on a new one: the writes are idempotent
        for attempt in 0..2 {
            let con = match &mut self.con {
                Some(c) => c,
                None => self.con.insert(self.conn.connect().await?),
            };
            match pipe.query_async::<()>(con).await {
                Ok(()) => break,
                Err(e) if attempt == 0 && is_connection_error(&e) => {
                    warn!(sink = %self.name, "redis {}: {e}; reconnecting", self.conn.display);
                    self.con = None;
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        self.con = None;
                    }
                    return Err(self.conn.error(&format!("writing a batch of {} rows", batch.num_rows()), &e));
                }
            }
        }
        if missing > 0 {
            return Err(ConnectorError::PartialWrite {
                failed_rows: missing,
                message: format!(
                    "redis sink '{}': {missing} of {} rows have no key (a NULL in a key column) and were not written",
                    self.name,
                    batch.num_rows()
                ),
            });
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.con = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("user:{id}:{ws}").unwrap(),
            vec![Part::Text("user:".into()), Part::Column("id".into()), Part::Text(":".into()), Part::Column("ws".into())]
        );
        assert!(parse_template("user:{id").is_err());
        assert!(parse_template("static").unwrap_err().contains("names no column"));
        assert!(parse_template("a{}b").is_err());
        let p = Properties::from_pairs("c", [("key.field", "id"), ("key.template", "x:{id}")]);
        assert!(RedisSink::try_new(&p).unwrap_err().to_string().contains("not both"));
        let p = Properties::from_pairs("c", []);
        assert!(RedisSink::try_new(&p).unwrap_err().to_string().contains("'c.key.field'"));
    }
}
