//! Avro message values, decoded and encoded by arrow-avro a batch at a time. The schema comes
//! from `avro.schema` (the schema's JSON) or `avro.schema.file`. Values may be plain Avro
//! binary or in the Confluent wire format (a zero byte and a 4-byte schema id first):
//! `avro.framing` = `auto` (default: both accepted), `confluent` or `raw`. A sink writes the
//! Confluent format when `avro.schema.id` is set, plain Avro otherwise.
//!
//! ```sql
//! WITH ('orders.type' = 'kafka_source', 'orders.value.format' = 'avro',
//!       'orders.avro.schema.file' = 'schemas/order.avsc', …,
//!       'out.type' = 'kafka_sink', 'out.value.format' = 'avro', 'out.avro.schema.id' = '7', …)
//! ```

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SchemaStore};
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use arrow_avro::writer::WriterBuilder;

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::registry::SchemaRegistry;
use super::BadMessage;
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// The id our decoder files the configured schema under.
const LOCAL_ID: u32 = 0;
const CONFLUENT_HEADER: usize = 5;

/// How values are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Confluent when it looks like it (zero byte, id), plain otherwise.
    Auto,
    /// Always the Confluent wire format.
    Confluent,
    /// Always plain Avro binary.
    Raw,
}

/// The Avro schema text of `props` (`avro.schema` or `avro.schema.file`), if any.
pub fn schema_text(props: &Properties) -> Result<Option<String>> {
    if let Some(s) = props.get("avro.schema") {
        return Ok(Some(s.to_string()));
    }
    match props.get("avro.schema.file") {
        Some(path) => std::fs::read_to_string(path).map(Some).map_err(|e| ConnectorError::io(path, e)),
        None => Ok(None),
    }
}

/// Decodes Avro values into Arrow: of one schema, or (with a schema registry) each with the
/// writer schema its Confluent header names, resolved to the reader schema.
#[derive(Debug)]
pub struct AvroDecoder {
    /// The reader schema (the configured one, or the subject's newest in the registry).
    schema_json: String,
    schema: SchemaRef,
    framing: Framing,
    batch_size: usize,
    registry: Option<Registered>,
}

/// The registry a decoder looks writer schemas up in, and what it found per id: the schema, or
/// why a value with that id cannot be read (unknown id, a schema that does not resolve to the
/// reader's).
#[derive(Debug)]
struct Registered {
    registry: Arc<SchemaRegistry>,
    writers: Mutex<BTreeMap<u32, std::result::Result<String, String>>>,
    /// Ids the registry did not know, with when it was asked: asked again after
    /// [`ASK_AGAIN`] (a replica of the registry may lag behind the producer).
    missing: Mutex<BTreeMap<u32, (String, std::time::Instant)>>,
}

/// How long an id the registry did not know is taken as unknown before it is asked again.
const ASK_AGAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The schema id of a value in the Confluent wire format.
fn confluent_id(value: &[u8]) -> Option<u32> {
    match value {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

impl AvroDecoder {
    /// A decoder for values written with the schema `schema_json`; `key` names the property
    /// in errors.
    pub fn try_new(schema_json: &str, framing: Framing, batch_size: usize, key: &str) -> Result<Self> {
        let mut me = Self { schema_json: schema_json.to_string(), schema: Arc::new(Schema::empty()), framing, batch_size: batch_size.max(1), registry: None };
        let d = me.decoder().map_err(|e| ConnectorError::invalid(key, format!("not a usable Avro schema: {e}")))?;
        me.schema = d.schema();
        Ok(me)
    }

    /// A decoder for values in the Confluent wire format whose writer schemas are in
    /// `registry`, read as `reader` (the configured schema, or the subject's newest in the
    /// registry, whose id is `reader_id`).
    pub fn with_registry(registry: Arc<SchemaRegistry>, reader: &str, reader_id: Option<u32>, batch_size: usize, key: &str) -> Result<Self> {
        let writers = Mutex::new(reader_id.map(|id| (id, Ok(reader.to_string()))).into_iter().collect::<BTreeMap<_, _>>());
        let mut me = Self {
            schema_json: reader.to_string(),
            schema: Arc::new(Schema::empty()),
            framing: Framing::Confluent,
            batch_size: batch_size.max(1),
            registry: Some(Registered { registry, writers, missing: Mutex::new(BTreeMap::new()) }),
        };
        let d = me
            .decoder_for(std::iter::once((0, reader)))
            .map_err(|e| ConnectorError::invalid(key, format!("the reader schema is not a usable Avro schema: {e}")))?;
        me.schema = d.schema();
        Ok(me)
    }

    /// Parses `avro.framing`.
    pub fn framing(props: &Properties) -> Result<Framing> {
        match props.get("avro.framing").map(str::to_ascii_lowercase).as_deref() {
            None | Some("auto") => Ok(Framing::Auto),
            Some("confluent") => Ok(Framing::Confluent),
            Some("raw") | Some("binary") => Ok(Framing::Raw),
            Some(other) => Err(ConnectorError::invalid(props.full_key("avro.framing"), format!("'{other}': use auto, confluent or raw"))),
        }
    }

    /// The Arrow schema of the decoded values.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn decoder(&self) -> std::result::Result<Decoder, String> {
        let Some(reg) = &self.registry else {
            let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
            store.set(Fingerprint::Id(LOCAL_ID), AvroSchema::new(self.schema_json.clone())).map_err(|e| e.to_string())?;
            return ReaderBuilder::new()
                .with_batch_size(self.batch_size)
                .with_writer_schema_store(store)
                .with_active_fingerprint(Fingerprint::Id(LOCAL_ID))
                .build_decoder()
                .map_err(|e| e.to_string());
        };
        let writers = reg.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.decoder_for(writers.iter().filter_map(|(id, s)| s.as_ref().ok().map(|s| (*id, s.as_str()))))
    }

    /// A decoder reading values written with any of `writers` (id, schema) as the reader schema.
    fn decoder_for<'a>(&self, writers: impl Iterator<Item = (u32, &'a str)>) -> std::result::Result<Decoder, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, schema) in writers {
            store.set(Fingerprint::Id(id), AvroSchema::new(schema.to_string())).map_err(|e| format!("schema id {id}: {e}"))?;
        }
        ReaderBuilder::new()
            .with_batch_size(self.batch_size)
            .with_reader_schema(AvroSchema::new(self.schema_json.clone()))
            .with_writer_schema_store(store)
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    /// Makes sure the writer schema `id` is known: looked up in the registry once, and checked
    /// to resolve to the reader schema. `Ok(Err(why))`: values with that id cannot be read.
    fn writer(&self, reg: &Registered, id: u32) -> Result<std::result::Result<(), String>> {
        if let Some(known) = reg.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            return Ok(known.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        if let Some((why, when)) = reg.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            if when.elapsed() < ASK_AGAIN {
                return Ok(Err(why.clone()));
            }
        }
        let found = match reg.registry.by_id(id)? {
            Ok(schema) => match self.decoder_for(std::iter::once((id, schema.as_str()))) {
                Ok(_) => Ok(schema),
                Err(e) => Err(format!("writer schema {id} does not resolve to the reader schema: {e}")),
            },
            Err(m) => {
                reg.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (m.clone(), std::time::Instant::now()));
                return Ok(Err(m));
            }
        };
        let verdict = found.as_ref().map(|_| ()).map_err(Clone::clone);
        reg.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, found);
        Ok(verdict)
    }

    /// [`AvroDecoder::decode`] with a registry: every value names its writer schema.
    fn decode_registered<'a>(&self, reg: &Registered, n: usize, value: impl Fn(usize) -> &'a [u8]) -> Result<(Vec<ArrayRef>, Vec<BadMessage>)> {
        let mut bad = Vec::new();
        let mut readable = Vec::with_capacity(n);
        for i in 0..n {
            match confluent_id(value(i)) {
                None => bad.push(BadMessage {
                    index: i,
                    message: "not in the Confluent wire format (a zero byte and a 4-byte schema id first), which schema.registry.url needs".into(),
                }),
                Some(id) => match self.writer(reg, id)? {
                    Ok(()) => readable.push(i),
                    Err(why) => bad.push(BadMessage { index: i, message: why }),
                },
            }
        }
        let mut buf = Vec::new();
        for &i in &readable {
            buf.extend_from_slice(value(i));
        }
        if let Ok(batches) = self.run(&buf) {
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() == readable.len() {
                return Ok((self.concat(&batches)?, bad));
            }
        }
        let mut good = Vec::new();
        for &i in &readable {
            match self.run(value(i)) {
                Ok(b) if b.iter().map(RecordBatch::num_rows).sum::<usize>() == 1 => good.extend(b),
                Ok(_) => bad.push(BadMessage { index: i, message: "not one Avro record".into() }),
                Err(e) => bad.push(BadMessage { index: i, message: format!("not an Avro record of schema id {}: {e}", confluent_id(value(i)).unwrap_or(0)) }),
            }
        }
        bad.sort_by_key(|b| b.index);
        Ok((self.concat(&good)?, bad))
    }

    /// The body of a value under `framing`.
    fn body(value: &[u8], framing: Framing) -> &[u8] {
        let confluent = value.len() >= CONFLUENT_HEADER && value[0] == 0;
        match framing {
            Framing::Confluent | Framing::Auto if confluent => &value[CONFLUENT_HEADER..],
            _ => value,
        }
    }

    fn run(&self, buf: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
        let mut d = self.decoder()?;
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let used = d.decode(&buf[pos..]).map_err(|e| e.to_string())?;
            pos += used;
            if let Some(b) = d.flush().map_err(|e| e.to_string())? {
                out.push(b);
            } else if used == 0 {
                return Err(format!("{} bytes left undecoded", buf.len() - pos));
            }
        }
        if let Some(b) = d.flush().map_err(|e| e.to_string())? {
            out.push(b);
        }
        Ok(out)
    }

    fn frame(out: &mut Vec<u8>, body: &[u8]) {
        out.push(0);
        out.extend_from_slice(&LOCAL_ID.to_be_bytes());
        out.extend_from_slice(body);
    }

    /// Decodes `n` values (`value(i)`): every column of the schema for the good ones, and the
    /// bad ones.
    pub fn decode<'a>(&self, n: usize, value: impl Fn(usize) -> &'a [u8]) -> Result<(Vec<ArrayRef>, Vec<BadMessage>)> {
        if let Some(reg) = &self.registry {
            return self.decode_registered(reg, n, value);
        }
        let mut buf = Vec::new();
        for i in 0..n {
            Self::frame(&mut buf, Self::body(value(i), self.framing));
        }
        if let Ok(batches) = self.run(&buf) {
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() == n {
                return Ok((self.concat(&batches)?, Vec::new()));
            }
        }
        // One at a time; under `auto`, a value that fails as Confluent is tried as plain Avro.
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for i in 0..n {
            let v = value(i);
            let tries: &[Framing] = match self.framing {
                Framing::Auto => &[Framing::Confluent, Framing::Raw],
                Framing::Confluent => &[Framing::Confluent],
                Framing::Raw => &[Framing::Raw],
            };
            let mut last = String::new();
            let mut ok = false;
            for f in tries {
                let mut one = Vec::with_capacity(v.len() + CONFLUENT_HEADER);
                Self::frame(&mut one, Self::body(v, *f));
                match self.run(&one) {
                    Ok(b) if b.iter().map(RecordBatch::num_rows).sum::<usize>() == 1 => {
                        good.extend(b);
                        ok = true;
                        break;
                    }
                    Ok(_) => last = "not one Avro record".to_string(),
                    Err(e) => last = e,
                }
            }
            if !ok {
                bad.push(BadMessage { index: i, message: format!("not an Avro record of the configured schema: {last}") });
            }
        }
        Ok((self.concat(&good)?, bad))
    }

    fn concat(&self, batches: &[RecordBatch]) -> Result<Vec<ArrayRef>> {
        let b = arrow::compute::concat_batches(&self.schema, batches).map_err(|e| ConnectorError::arrow("joining decoded Avro rows", e))?;
        Ok(b.columns().to_vec())
    }
}

/// Encodes result rows as Avro values, one per row.
pub struct AvroEncoder {
    schema_id: Option<u32>,
    schema_json: Option<String>,
}

impl AvroEncoder {
    /// An encoder writing the Confluent format with `schema_id` when given, plain Avro otherwise;
    /// the Avro schema is `schema_json` when given, else derived from each batch's columns.
    pub fn new(schema_id: Option<u32>, schema_json: Option<String>) -> Self {
        Self { schema_id, schema_json }
    }

    /// One value per row of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let err = |e: arrow_avro::errors::AvroError| ConnectorError::Other(format!("encoding Avro: {e}"));
        let mut schema = batch.schema().as_ref().clone();
        if let Some(json) = &self.schema_json {
            let mut md = schema.metadata().clone();
            md.insert(arrow_avro::schema::SCHEMA_METADATA_KEY.to_string(), json.clone());
            schema = schema.with_metadata(md);
        }
        let batch = batch.clone().with_schema(Arc::new(schema.clone())).map_err(|e| ConnectorError::arrow("encoding Avro", e))?;
        let mut enc = match self.schema_id {
            Some(id) => WriterBuilder::new(schema).with_fingerprint_strategy(FingerprintStrategy::Id(id)).build_encoder::<AvroSoeFormat>().map_err(err)?,
            None => WriterBuilder::new(schema).build_encoder::<AvroBinaryFormat>().map_err(err)?,
        };
        enc.encode(&batch).map_err(err)?;
        let rows = enc.flush();
        Ok(rows.iter().map(|b| b.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "customer", "type": ["null", "string"]}]}"#;

    #[test]
    fn round_trip_plain_and_confluent_and_bad_values() {
        let d = AvroDecoder::try_new(SCHEMA, Framing::Auto, 1024, "o.avro.schema").unwrap();
        let schema = d.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "customer"]);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("customer", DataType::Utf8, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(vec![Some("a"), None, Some("c")]))])
                .unwrap();
        let plain = AvroEncoder::new(None, Some(SCHEMA.to_string())).encode(&batch).unwrap();
        let confluent = AvroEncoder::new(Some(42), Some(SCHEMA.to_string())).encode(&batch).unwrap();
        assert_eq!(&confluent[0][..5], &[0, 0, 0, 0, 42]);
        let mut values: Vec<Vec<u8>> = vec![plain[0].clone(), confluent[1].clone(), b"\xff\xff garbage".to_vec(), plain[2].clone()];
        let (cols, bad) = d.decode(values.len(), |i| values[i].as_slice()).unwrap();
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [2]);
        let ids = cols[0].as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), [1, 2, 3]);
        values.remove(2);
        let (cols, bad) = d.decode(values.len(), |i| values[i].as_slice()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(cols[1].as_any().downcast_ref::<StringArray>().unwrap().iter().collect::<Vec<_>>(), [Some("a"), None, Some("c")]);
        assert!(AvroDecoder::try_new("{\"type\": \"nope\"}", Framing::Auto, 8, "o.avro.schema").unwrap_err().to_string().contains("'o.avro.schema'"));
    }
}
