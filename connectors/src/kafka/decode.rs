//! Kafka message values into Arrow columns, a batch of messages at a time, plus the metadata
//! columns (`_key`, `_partition`, `_offset`, `_timestamp`, `_headers`).
//!
//! JSON values are handed to arrow-json's decoder all at once (no per-row `serde_json::Value`);
//! only a batch holding a malformed message is decoded again message by message, to keep every
//! good row and name each bad one by topic, partition and offset.
//!
//! ```sql
//! SELECT _key, _partition, _offset, _timestamp, _headers['trace'], amount FROM orders
//! WITH ('orders.type' = 'kafka_source', 'orders.value.format' = 'json', …)
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, StringBuilder, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};

/// How message values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// One JSON object per message.
    Json,
    /// The value as text, in a column `value`.
    String,
    /// The raw bytes, in a column `value`.
    Bytes,
    /// Avro records of the configured schema (plain or Confluent-framed).
    Avro,
}

impl ValueFormat {
    /// Parses `value.format`.
    pub fn parse(text: &str, key: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "json" | "jsonlines" | "json_lines" => Ok(Self::Json),
            "string" | "text" | "raw" => Ok(Self::String),
            "bytes" | "binary" => Ok(Self::Bytes),
            "avro" => Ok(Self::Avro),
            other => Err(ConnectorError::invalid(key, format!("unknown value format '{other}'; use json, avro, string or bytes"))),
        }
    }
}

/// The metadata columns a Kafka source adds after the value's columns.
pub const METADATA_COLUMNS: [&str; 5] = ["_key", "_partition", "_offset", "_timestamp", "_headers"];

fn headers_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()).finish().data_type().clone()
}

/// The metadata fields, leaving out any name the value already has.
pub fn metadata_fields(value: &Schema) -> Vec<Field> {
    [
        Field::new("_key", DataType::Utf8, true),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_timestamp", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("_headers", headers_type(), true),
    ]
    .into_iter()
    .filter(|f| value.field_with_name(f.name()).is_err())
    .collect()
}

/// The schema of a value format without a declared schema (`string`, `bytes`).
pub fn fixed_value_schema(format: ValueFormat) -> Option<SchemaRef> {
    match format {
        ValueFormat::Json | ValueFormat::Avro => None,
        ValueFormat::String => Some(Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)]))),
        ValueFormat::Bytes => Some(Arc::new(Schema::new(vec![Field::new("value", DataType::Binary, true)]))),
    }
}

/// The messages of one batch, copied out of librdkafka's buffers.
#[derive(Debug, Default)]
pub struct MessageBatch {
    /// Every value, back to back, each followed by `\n`.
    pub values: Vec<u8>,
    /// Where each value starts in `values` (one more entry: the end).
    pub starts: Vec<usize>,
    /// Every key's bytes, back to back (no allocation per message: most queries read no key).
    key_bytes: Vec<u8>,
    /// Where each key is in `key_bytes` (start, end), None for a message without a key.
    key_spans: Vec<Option<(usize, usize)>>,
    /// Topic of each message (index into `topics`).
    pub topic_ids: Vec<u16>,
    /// Topic names seen in this batch.
    pub topics: Vec<String>,
    /// Partitions.
    pub partitions: Vec<i32>,
    /// Offsets.
    pub offsets: Vec<i64>,
    /// Message timestamps in epoch milliseconds.
    pub timestamps: Vec<Option<i64>>,
    /// Headers, only collected when selected.
    pub headers: Vec<Vec<(String, Option<String>)>>,
}

impl MessageBatch {
    /// Messages held.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The value of message `i` (without its trailing newline; None for a null value).
    pub fn value(&self, i: usize) -> &[u8] {
        let (s, e) = (self.starts[i], self.starts[i + 1]);
        &self.values[s..e.saturating_sub(1).max(s)]
    }

    /// The key of message `i` as it came; None when it has none.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.key_spans[i].map(|(start, end)| &self.key_bytes[start..end])
    }

    /// The keys of messages `keep` as text (invalid UTF-8 replaced).
    pub fn keys_of(&self, keep: &[usize]) -> arrow::array::StringArray {
        let mut b = arrow::array::StringBuilder::with_capacity(keep.len(), self.key_bytes.len());
        for &i in keep {
            b.append_option(self.key(i).map(String::from_utf8_lossy));
        }
        b.finish()
    }

    /// `topic/partition@offset` of message `i`, to name it in errors.
    pub fn location(&self, i: usize) -> String {
        format!("{}/{}@{}", self.topics[self.topic_ids[i] as usize], self.partitions[i], self.offsets[i])
    }

    /// The topic of message `i`.
    pub fn topic(&self, i: usize) -> &str {
        &self.topics[self.topic_ids[i] as usize]
    }

    /// Adds a message.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        ts: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<Vec<(String, Option<String>)>>,
    ) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        let tid = match self.topics.iter().position(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_string());
                self.topics.len() - 1
            }
        };
        self.topic_ids.push(tid as u16);
        self.values.extend_from_slice(value.unwrap_or_default());
        self.values.push(b'\n');
        self.starts.push(self.values.len());
        self.key_spans.push(key.map(|k| {
            let start = self.key_bytes.len();
            self.key_bytes.extend_from_slice(k);
            (start, self.key_bytes.len())
        }));
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.timestamps.push(ts);
        if let Some(h) = headers {
            self.headers.push(h);
        }
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        self.values.len()
    }

    /// Keeps only the messages for which `keep(topic, partition)` holds (a partition taken
    /// away by a rebalance is dropped from a batch not yet handed out).
    pub fn retain_partitions(&mut self, keep: impl Fn(&str, i32) -> bool) {
        let kept: Vec<usize> = (0..self.len()).filter(|&i| keep(self.topic(i), self.partitions[i])).collect();
        if kept.len() == self.len() {
            return;
        }
        let mut out = MessageBatch::default();
        let with_headers = self.headers.len() == self.len();
        for i in kept {
            let headers = with_headers.then(|| self.headers[i].clone());
            out.push(self.topic(i), self.partitions[i], self.offsets[i], self.timestamps[i], self.key(i), Some(self.value(i)), headers);
        }
        *self = out;
    }
}

pub use crate::format::BadMessage;

/// Decodes batches of message values of one format into the projected columns of the source.
pub struct ValueDecoder {
    format: ValueFormat,
    /// The value's columns to produce.
    value_out: SchemaRef,
    /// The columns JSON values are decoded into: `value_out`, or the whole value when only
    /// metadata is selected (so that malformed values are still found).
    json_schema: SchemaRef,
    /// The output: the source's schema, projected.
    output: SchemaRef,
    /// For each output column: Ok(i) = value column i of `value_out`, Err(name) = metadata.
    columns: Vec<std::result::Result<usize, String>>,
    batch_size: usize,
    /// For Avro: the decoder, and where each column of `value_out` is in its schema.
    avro: Option<(std::sync::Arc<crate::format::avro::AvroDecoder>, Vec<usize>)>,
    /// JSON values of the common flat shape, read in one pass (arrow-json for the rest).
    flat: Option<crate::format::flat_json::FlatJson>,
}

impl std::fmt::Debug for ValueDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueDecoder").field("format", &self.format).field("output", &self.output).finish()
    }
}

impl ValueDecoder {
    /// A decoder producing `projection` (indices into `full`, all when None) of a source whose
    /// first `value_fields` columns come from the value.
    pub fn try_new(format: ValueFormat, full: &SchemaRef, value_fields: usize, projection: Option<&[usize]>, batch_size: usize) -> Result<Self> {
        let indices: Vec<usize> = projection.map_or_else(|| (0..full.fields().len()).collect(), <[usize]>::to_vec);
        let output = Arc::new(full.project(&indices).map_err(|e| ConnectorError::arrow("projecting the schema", e))?);
        let mut value_cols = Vec::new();
        let mut columns = Vec::new();
        for &i in &indices {
            if i < value_fields {
                columns.push(Ok(value_cols.len()));
                value_cols.push(i);
            } else {
                columns.push(Err(full.field(i).name().clone()));
            }
        }
        let value_out = Arc::new(full.project(&value_cols).map_err(|e| ConnectorError::arrow("projecting the schema", e))?);
        let json_schema = if value_cols.is_empty() {
            Arc::new(full.project(&(0..value_fields).collect::<Vec<_>>()).map_err(|e| ConnectorError::arrow("projecting the schema", e))?)
        } else {
            Arc::clone(&value_out)
        };
        let flat = (format == ValueFormat::Json).then(|| crate::format::flat_json::FlatJson::new(&json_schema)).flatten();
        Ok(Self { format, value_out, json_schema, output, columns, batch_size: batch_size.max(1), avro: None, flat })
    }

    /// Decodes Avro values with `decoder` (whose schema is the source's value schema).
    pub fn with_avro(mut self, decoder: std::sync::Arc<crate::format::avro::AvroDecoder>) -> Result<Self> {
        let schema = decoder.schema();
        let mut positions = Vec::new();
        for f in self.value_out.fields() {
            positions.push(schema.index_of(f.name()).map_err(|e| ConnectorError::arrow("matching Avro columns", e))?);
        }
        self.avro = Some((decoder, positions));
        Ok(self)
    }

    /// The schema of the batches produced.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    /// True when the `_headers` column is produced (headers must be collected).
    pub fn wants_headers(&self) -> bool {
        self.columns.iter().any(|c| matches!(c, Err(n) if n == "_headers"))
    }

    /// Decodes `msgs`: the good rows as one batch, and the bad messages.
    pub fn decode(&self, msgs: &MessageBatch) -> Result<(RecordBatch, Vec<BadMessage>)> {
        let n = msgs.len();
        let (values, bad) = match self.format {
            ValueFormat::Json => self.decode_json(msgs)?,
            ValueFormat::String => {
                let mut b = StringBuilder::with_capacity(n, msgs.bytes());
                let mut bad = Vec::new();
                for i in 0..n {
                    match std::str::from_utf8(msgs.value(i)) {
                        Ok(s) => b.append_value(s),
                        Err(e) => bad.push(BadMessage { index: i, message: format!("value is not UTF-8: {e}") }),
                    }
                }
                (self.value_columns(vec![Arc::new(b.finish()) as ArrayRef])?, bad)
            }
            ValueFormat::Avro => {
                let (decoder, positions) = self.avro.as_ref().ok_or_else(|| ConnectorError::Other("no Avro schema configured".into()))?;
                let (all, bad) = decoder.decode(n, |i| msgs.value(i))?;
                (positions.iter().map(|&p| Arc::clone(&all[p])).collect(), bad)
            }
            ValueFormat::Bytes => {
                let mut b = BinaryBuilder::with_capacity(n, msgs.bytes());
                for i in 0..n {
                    b.append_value(msgs.value(i));
                }
                (self.value_columns(vec![Arc::new(b.finish()) as ArrayRef])?, Vec::new())
            }
        };
        let keep: Vec<usize> = if bad.is_empty() {
            (0..n).collect()
        } else {
            let mut is_bad = vec![false; n];
            for b in &bad {
                is_bad[b.index] = true;
            }
            (0..n).filter(|i| !is_bad[*i]).collect()
        };
        let rows = keep.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            cols.push(match c {
                Ok(i) => Arc::clone(&values[*i]),
                Err(name) => metadata_column(name, msgs, &keep)?,
            });
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.output), cols, &options)
            .map_err(|e| ConnectorError::arrow("assembling a batch of Kafka messages", e))?;
        Ok((batch, bad))
    }

    /// Keeps the projected value columns of a one-column value (`string`, `bytes`).
    fn value_columns(&self, all: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
        Ok(if self.value_out.fields().is_empty() { Vec::new() } else { all })
    }

    fn json_decoder(&self) -> Result<arrow_json::reader::Decoder> {
        arrow_json::ReaderBuilder::new(Arc::clone(&self.json_schema))
            .with_batch_size(self.batch_size)
            .build_decoder()
            .map_err(|e| ConnectorError::arrow("building the JSON decoder", e))
    }

    /// All values at once; on any error, one at a time.
    fn decode_json(&self, msgs: &MessageBatch) -> Result<(Vec<ArrayRef>, Vec<BadMessage>)> {
        let n = msgs.len();
        // All values at once: the one-pass decoder when they are flat, else arrow-json.
        let whole = match self.flat.as_ref().and_then(|f| f.decode(&msgs.values, usize::MAX)) {
            Some(batches) => Some(batches),
            None => decode_all(&mut self.json_decoder()?, &msgs.values).ok(),
        };
        if let Some(batches) = whole {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows == n && (0..n).all(|i| !msgs.value(i).iter().all(u8::is_ascii_whitespace)) {
                return Ok((self.concat(&batches)?, Vec::new()));
            }
        }
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for i in 0..n {
            let v = msgs.value(i);
            if v.iter().all(u8::is_ascii_whitespace) {
                bad.push(BadMessage { index: i, message: "empty value".to_string() });
                continue;
            }
            let mut d = self.json_decoder()?;
            match decode_all(&mut d, v) {
                Ok(b) if b.iter().map(RecordBatch::num_rows).sum::<usize>() == 1 => good.extend(b),
                Ok(b) => bad
                    .push(BadMessage { index: i, message: format!("expected one JSON object, found {}", b.iter().map(RecordBatch::num_rows).sum::<usize>()) }),
                Err(e) => bad.push(BadMessage { index: i, message: e.to_string() }),
            }
        }
        Ok((self.concat(&good)?, bad))
    }

    fn concat(&self, batches: &[RecordBatch]) -> Result<Vec<ArrayRef>> {
        if let [one] = batches {
            return Ok(one.columns().to_vec());
        }
        let b = arrow::compute::concat_batches(&self.json_schema, batches).map_err(|e| ConnectorError::arrow("joining decoded rows", e))?;
        Ok(b.columns().to_vec())
    }
}

fn decode_all(d: &mut arrow_json::reader::Decoder, buf: &[u8]) -> std::result::Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let used = d.decode(&buf[pos..])?;
        pos += used;
        if pos < buf.len() || used == 0 {
            match d.flush()? {
                Some(b) => out.push(b),
                None if used == 0 => return Err(arrow::error::ArrowError::ParseError(format!("cannot decode {} bytes", buf.len() - pos))),
                None => {}
            }
        }
    }
    if let Some(b) = d.flush()? {
        out.push(b);
    }
    Ok(out)
}

fn metadata_column(name: &str, msgs: &MessageBatch, keep: &[usize]) -> Result<ArrayRef> {
    Ok(match name {
        "_key" => Arc::new(msgs.keys_of(keep)),
        "_partition" => Arc::new(Int32Array::from_iter_values(keep.iter().map(|&i| msgs.partitions[i]))),
        "_offset" => Arc::new(Int64Array::from_iter_values(keep.iter().map(|&i| msgs.offsets[i]))),
        "_timestamp" => Arc::new(TimestampMillisecondArray::from_iter(keep.iter().map(|&i| msgs.timestamps[i]))),
        "_headers" => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for &i in keep {
                for (k, v) in msgs.headers.get(i).map(Vec::as_slice).unwrap_or_default() {
                    b.keys().append_value(k);
                    b.values().append_option(v.as_deref());
                }
                b.append(true).map_err(|e| ConnectorError::arrow("building _headers", e))?;
            }
            Arc::new(b.finish())
        }
        other => return Err(ConnectorError::Other(format!("unknown metadata column '{other}'"))),
    })
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;

    use super::*;

    fn source_schema() -> (SchemaRef, usize) {
        let value = Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]);
        let mut fields: Vec<Field> = value.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(metadata_fields(&value));
        (Arc::new(Schema::new(fields)), 2)
    }

    fn msgs(values: &[&str]) -> MessageBatch {
        let mut m = MessageBatch::default();
        for (i, v) in values.iter().enumerate() {
            m.push("orders", 1, 100 + i as i64, Some(1_700_000_000_000 + i as i64), Some(b"k"), Some(v.as_bytes()), Some(vec![("h".into(), Some("v".into()))]));
        }
        m
    }

    #[test]
    fn json_with_metadata_and_bad_messages() {
        let (full, nv) = source_schema();
        // name, _offset, id, _headers
        let d = ValueDecoder::try_new(ValueFormat::Json, &full, nv, Some(&[1, 4, 0, 6]), 1024).unwrap();
        assert!(d.wants_headers());
        let (b, bad) = d.decode(&msgs(&[r#"{"id": 1, "name": "a"}"#, r#"{"id": "x"}"#, "not json", "", r#"{"id": 3, "extra": [1]}"#])).unwrap();
        let text = pretty_format_batches(&[b]).unwrap().to_string();
        assert_eq!(
            text,
            "+------+---------+----+----------+\n| name | _offset | id | _headers |\n+------+---------+----+----------+\n| a    | 100     | 1  | {h: v}   |\n|      | 104     | 3  | {h: v}   |\n+------+---------+----+----------+"
        );
        let idx: Vec<usize> = bad.iter().map(|b| b.index).collect();
        assert_eq!(idx, [1, 2, 3]);
        assert_eq!(msgs(&["x"]).location(0), "orders/1@100");
    }

    #[test]
    fn string_and_bytes_values() {
        let value = fixed_value_schema(ValueFormat::String).unwrap();
        let mut fields: Vec<Field> = value.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(metadata_fields(&value));
        let full = Arc::new(Schema::new(fields));
        let d = ValueDecoder::try_new(ValueFormat::String, &full, 1, Some(&[0, 1]), 8).unwrap();
        let (b, bad) = d.decode(&msgs(&["hello", "world"])).unwrap();
        assert!(bad.is_empty());
        assert_eq!(b.num_rows(), 2);
        // Only metadata selected: rows still counted.
        let d = ValueDecoder::try_new(ValueFormat::Bytes, &full, 1, Some(&[3]), 8).unwrap();
        assert_eq!(d.decode(&msgs(&["a", "b", "c"])).unwrap().0.num_rows(), 3);
        assert!(ValueFormat::parse("xml", "o.value.format").unwrap_err().to_string().contains("'o.value.format'"));
    }

    #[test]
    fn keys_are_kept_in_one_buffer_and_follow_their_messages() {
        let mut m = MessageBatch::default();
        m.push("a", 0, 1, None, Some(b"k1"), Some(b"v1"), None);
        m.push("b", 0, 2, None, None, Some(b"v2"), None);
        m.push("a", 1, 3, None, Some(b"\xffk3"), Some(b"v3"), None);
        m.push("a", 0, 4, None, Some(b""), None, None);
        assert_eq!(m.key(0), Some(&b"k1"[..]));
        assert_eq!(m.key(1), None);
        assert_eq!(m.key(2), Some(&b"\xffk3"[..]));
        assert_eq!(m.key(3), Some(&b""[..]));
        let keys = m.keys_of(&[3, 2, 1, 0]);
        let text: Vec<Option<&str>> = keys.iter().collect();
        assert_eq!(text, [Some(""), Some("\u{fffd}k3"), None, Some("k1")]);
        // a rebalance drops partition a/0: the others keep their keys and values
        m.retain_partitions(|t, p| !(t == "a" && p == 0));
        assert_eq!(m.len(), 2);
        assert_eq!((m.key(0), m.value(0), m.topic(0)), (None, &b"v2"[..], "b"));
        assert_eq!((m.key(1), m.value(1), m.topic(1)), (Some(&b"\xffk3"[..]), &b"v3"[..], "a"));
    }
}
