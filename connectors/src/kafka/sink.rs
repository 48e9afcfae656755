//! `kafka_sink`: writes each result row as one message. JSON values are encoded a batch at a
//! time by arrow-json; the key comes from a column (`key.field`). A batch counts as written
//! once the broker has acknowledged every message of it, so offsets upstream are committed
//! only after delivery; delivery errors go through the job's failure strategy.
//!
//! ```sql
//! CREATE STREAM big AS SELECT id, amount FROM orders WHERE amount > 100 INTO alerts
//! WITH ('alerts.type' = 'kafka_sink', 'alerts.bootstrap.servers' = 'localhost:9092',
//!       'alerts.topic' = 'big-orders', 'alerts.value.format' = 'json', 'alerts.key.field' = 'id',
//!       'alerts.acks' = 'all', 'alerts.compression.type' = 'lz4', 'alerts.linger.ms' = '5');
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::config::{create_client, create_client_with, is_own_key, same_cluster_and_user, QuietContext, StatusSlot};
use super::source::KafkaCheckpoint;
use crate::checkpoint::{Positions, Prepared, SourceCheckpoint, SourcePositions};
use crate::error::{ConnectorError, Result};
use crate::format::avro::AvroEncoder;
use crate::properties::Properties;
use crate::sink::{Delivery, Sink};

/// How result rows are encoded as message values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkFormat {
    Json,
    String,
    Avro,
}

/// An open Kafka sink.
pub struct KafkaSink {
    name: String,
    topic: String,
    format: SinkFormat,
    key_field: Option<String>,
    /// `timestamp.field`: the column giving each message's timestamp.
    timestamp_field: Option<String>,
    /// Where the producer reports a lost connection (the job's counters for the sink).
    status: StatusSlot,
    key_json: bool,
    producer: ThreadedProducer<DeliveryContext>,
    avro: Option<AvroEncoder>,
    /// A schema registry to register the Avro schema derived from the rows with, at the first
    /// write (`schema.registry.url` without `avro.schema`).
    pending_registration: Option<Arc<crate::format::registry::SchemaRegistry>>,
    /// Partitions of the topic when the sink creates it (`topic.partitions`, default 1).
    create_partitions: Option<i32>,
    settings: Vec<(String, String)>,
    props: Properties,
    checked_topic: bool,
    closed: bool,
    /// `use_transactions`: the transactional producer's id and whether a transaction is open.
    txn: Option<Txn>,
    /// Under transactions, between a checkpoint's prepare and its commit: the rows written
    /// meanwhile belong to the next checkpoint, so they wait here and go into the next
    /// transaction (in the open one they would commit with a checkpoint whose positions do not
    /// cover them, and a restart would write them again).
    held: Option<Vec<RecordBatch>>,
    /// The checkpoint marker group's metadata, for `send_offsets_to_transaction`.
    marker_metadata: Option<Arc<ConsumerGroupMetadata>>,
    /// Kafka sources of the job on the same cluster whose consumer-group offsets this sink
    /// commits inside its transactions (`use_transactions`), by source name, with each
    /// group's metadata once known.
    source_commits: Vec<SourceCommit>,
}

/// A Kafka source whose group's offsets go into the sink's transactions.
struct SourceCommit {
    source: String,
    checkpoint: Arc<dyn SourceCheckpoint>,
    /// The group's metadata as `send_offsets_to_transaction` wants it: the group's id alone
    /// (generation and member unknown), as producers before KIP-447 sent it. Fencing a
    /// zombie producer is the transactional id's work here, and a commit during a rebalance of
    /// the source's group is not refused for a stale generation; a process that lost its
    /// partitions without noticing yet could commit over their new owner's offsets, which a
    /// restart from the checkpoint does not read.
    metadata: Arc<ConsumerGroupMetadata>,
}

/// A transactional producer's state (`use_transactions`).
#[derive(Debug, Clone)]
struct Txn {
    /// `transactional.id`: `ferris-<job>-<sink>`, the same across restarts, so that a restart
    /// fences the producer before it and aborts its open transaction.
    id: String,
    /// A consumer group whose offset on the topic's partition 0 is the last checkpoint
    /// committed, written inside each transaction: a restart reads it to learn whether the
    /// latest checkpoint's transaction committed.
    marker_group: String,
    open: bool,
    /// `init_transactions` has run (before the marker is read, or at recovery).
    initialised: bool,
}

/// How long a transaction operation may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a blocking producer call on a thread of its own.
async fn blocking<T: Send + 'static>(what: String, f: impl FnOnce() -> std::result::Result<T, KafkaError> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ConnectorError::Other(format!("{what}: {e}")))?.map_err(|e| ConnectorError::Other(format!("{what}: {e}")))
}

impl KafkaSink {
    /// Configures the sink `props`; the producer connects lazily.
    pub fn try_new(props: &Properties) -> Result<Self> {
        let name = props.owner().to_string();
        let topic = props.require("topic")?.to_string();
        props.require("bootstrap.servers")?;
        let format_key = if props.contains("value.format") { "value.format" } else { "format" };
        let format = match props.get(format_key).unwrap_or("json").to_ascii_lowercase().as_str() {
            "json" | "jsonlines" => SinkFormat::Json,
            "string" | "text" => SinkFormat::String,
            "avro" => SinkFormat::Avro,
            other => return Err(ConnectorError::invalid(props.full_key(format_key), format!("unknown value format '{other}'; use json, avro or string"))),
        };
        let key_json = match props.get("key.format").map(str::to_ascii_lowercase).as_deref() {
            None | Some("string") | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(ConnectorError::invalid(props.full_key("key.format"), format!("unknown key format '{other}'; use string or json"))),
        };
        // `batch.size` here is the producer's (bytes per request), not a source batch.
        let mut settings: Vec<(String, String)> =
            props.iter().filter(|(k, _)| *k == "batch.size" || !is_own_key(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !settings.iter().any(|(k, _)| k == "linger.ms" || k == "queue.buffering.max.ms") {
            settings.push(("linger.ms".into(), "5".into()));
        }
        settings.push(("client.id".into(), format!("ferris-{name}")));
        let what = format!("kafka sink '{name}'");
        super::config::check_secure_connection(props, &settings, &what)?;
        let status = StatusSlot::default();
        let producer = delivery_producer(props, &settings, &what, &status)?;
        let create_partitions = match props.get("topic.create").map(str::to_ascii_lowercase).as_deref() {
            Some("false") | Some("no") => None,
            _ => Some(props.get_usize("topic.partitions")?.unwrap_or(1).max(1) as i32),
        };
        let registry = crate::format::registry::SchemaRegistry::from_properties(props)?;
        if registry.is_some() && format != SinkFormat::Avro {
            tracing::warn!(sink = %name, "key '{}' does nothing: the schema registry is used for Avro values only", props.full_key("schema.registry.url"));
        }
        if registry.is_some() && props.contains("avro.schema.id") {
            return Err(ConnectorError::invalid(
                props.full_key("avro.schema.id"),
                "the schema registry gives the id: set avro.schema.id or schema.registry.url, not both",
            ));
        }
        let mut pending_registration = None;
        let avro = match (format, registry) {
            (SinkFormat::Avro, Some(reg)) => match crate::format::avro::schema_text(props)? {
                // the schema is known: registered now, so that a refusal stops the job at start
                Some(text) => {
                    let subject = crate::format::registry::SchemaRegistry::subject(props, &topic, Some(&text))?;
                    let id = reg.register(&subject, &text)?;
                    tracing::info!(sink = %name, "kafka sink '{name}': Avro schema registered under '{subject}' as id {id}");
                    Some(AvroEncoder::new(Some(id), Some(text)))
                }
                // derived from the rows' columns at the first write
                None => {
                    pending_registration = Some(Arc::new(reg));
                    None
                }
            },
            (SinkFormat::Avro, None) => {
                let id = match props.get("avro.schema.id") {
                    Some(t) => Some(
                        t.trim().parse::<u32>().map_err(|_| ConnectorError::invalid(props.full_key("avro.schema.id"), format!("'{t}' is not a schema id")))?,
                    ),
                    None => None,
                };
                Some(AvroEncoder::new(id, crate::format::avro::schema_text(props)?))
            }
            _ => None,
        };
        Ok(Self {
            name,
            topic,
            format,
            key_field: props.get("key.field").map(str::to_string),
            timestamp_field: props.get("timestamp.field").map(str::to_string),
            status,
            key_json,
            producer,
            avro,
            pending_registration,
            create_partitions,
            settings,
            props: props.clone(),
            checked_topic: false,
            closed: false,
            txn: None,
            held: None,
            marker_metadata: None,
            source_commits: Vec::new(),
        })
    }

    /// Sends the rows of `batches` and waits for every delivery report, once for all.
    async fn produce(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let Some(first) = batches.first() else { return Ok(()) };
        if !self.checked_topic {
            self.ensure_topic().await?;
        }
        if let Some(reg) = &self.pending_registration {
            let derived = arrow_avro::schema::AvroSchema::try_from(first.schema().as_ref())
                .map_err(|e| ConnectorError::Other(format!("kafka sink '{}': no Avro schema for the rows' columns: {e}", self.name)))?;
            let text = derived.json_string.clone();
            let subject = crate::format::registry::SchemaRegistry::subject(&self.props, &self.topic, Some(&text))?;
            let id = reg.register(&subject, &text).map_err(|e| ConnectorError::Other(format!("kafka sink '{}': {e}", self.name)))?;
            tracing::info!(sink = %self.name, "kafka sink '{}': Avro schema registered under '{subject}' as id {id}", self.name);
            self.avro = Some(AvroEncoder::new(Some(id), Some(text)));
            self.pending_registration = None;
        }
        let acks = Arc::new(Acks::default());
        for batch in batches {
            self.send_batch(batch, &acks).await?;
        }
        acks.settled().await;
        let outcome = acks.outcome();
        let Outcome { total, failed, first } = outcome;
        match first {
            None => {
                if let Some(m) = self.status.get() {
                    m.set_status(crate::metrics::ConnectionStatus::Connected);
                }
                Ok(())
            }
            Some(e) => {
                Err(ConnectorError::Other(format!("kafka sink '{}': {failed} of {total} messages not delivered to topic '{}': {e}", self.name, self.topic)))
            }
        }
    }

    /// Hands a batch's rows to the producer; each delivery report settles one of `acks`.
    async fn send_batch(&mut self, batch: &RecordBatch, acks: &Arc<Acks>) -> Result<()> {
        let values = self.values(batch)?;
        let keys = self.keys(batch)?;
        let times = self.timestamps(batch)?;
        for i in 0..values.len() {
            let key = keys.as_ref().and_then(|k| k[i].as_deref());
            let mut record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(acks)).payload(values.get(i));
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(t) = times.as_ref().and_then(|t| t.is_valid(i).then(|| t.value(i))) {
                record = record.timestamp(t);
            }
            acks.sent();
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // the local queue is full: let the producer's thread deliver some
                        record = r;
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    Err((e, _)) => {
                        // (the record's share of `acks` went back with it)
                        acks.unsent();
                        return Err(ConnectorError::Other(format!("kafka sink '{}': cannot send to topic '{}': {e}", self.name, self.topic)));
                    }
                }
            }
        }
        Ok(())
    }

    fn txn_err(&self, what: &str) -> String {
        format!("kafka sink '{}': {what}", self.name)
    }

    /// A client of the marker group `group` (the broker connection's settings only).
    fn marker_client(&self, group: &str) -> Result<BaseConsumer> {
        let mut settings: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|(k, _)| k == "bootstrap.servers" || k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl."))
            .cloned()
            .collect();
        settings.push(("group.id".into(), group.to_string()));
        settings.push(("enable.auto.commit".into(), "false".into()));
        create_client_with(&self.props, settings, &format!("kafka sink '{}'", self.name), || rdkafka::consumer::DefaultConsumerContext)
    }

    /// The metadata of consumer group `group` for `send_offsets_to_transaction`: its id alone,
    /// from a client that never joins it.
    fn group_metadata(&self, group: &str) -> Result<Arc<ConsumerGroupMetadata>> {
        let client = self.marker_client(group)?;
        client.group_metadata().map(Arc::new).ok_or_else(|| ConnectorError::Other(self.txn_err(&format!("no group metadata for group '{group}'"))))
    }

    /// Fences an earlier producer of this job and aborts the transaction it left open; once.
    async fn init_transactions(&mut self, txn: &Txn) -> Result<()> {
        if txn.initialised {
            return Ok(());
        }
        let p = self.producer.clone();
        blocking(self.txn_err(&format!("initialising transactions ('{}')", txn.id)), move || p.init_transactions(TXN_TIMEOUT)).await?;
        if let Some(t) = self.txn.as_mut() {
            t.initialised = true;
        }
        Ok(())
    }

    /// Creates the topic when the broker does not have it (and `topic.create` is not false).
    async fn ensure_topic(&mut self) -> Result<()> {
        self.checked_topic = true;
        let Some(partitions) = self.create_partitions else {
            return Ok(());
        };
        let (p, topic) = (self.producer.clone(), self.topic.clone());
        // (a metadata request waits for the broker: off the runtime's workers)
        let metadata = blocking(String::new(), move || {
            let md = p.client().fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            Ok(md.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
        })
        .await;
        let exists = match metadata {
            Ok(exists) => exists,
            Err(_) => return Ok(()), // the broker is not reachable now: delivery will say more
        };
        if exists {
            return Ok(());
        }
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            create_client(&self.props, self.settings.clone(), &format!("kafka sink '{}'", self.name))?;
        let new = rdkafka::admin::NewTopic::new(&self.topic, partitions, rdkafka::admin::TopicReplication::Fixed(1));
        match admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()).await {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(t) => {
                            tracing::info!(sink = %self.name, "created topic '{t}' with {partitions} partition(s)")
                        }
                        Err((t, code)) => {
                            tracing::debug!(sink = %self.name, "topic '{t}' not created: {code}")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, "could not create topic '{}': {e}", self.topic)
            }
        }
        Ok(())
    }

    /// The batch's rows encoded as message values: JSON into one buffer that the messages are
    /// slices of, text as the column's own bytes.
    fn values(&self, batch: &RecordBatch) -> Result<Values> {
        match self.format {
            SinkFormat::Json => {
                // a null column is written `"x":null`, as every other sink writes it (a reader
                // that keys on the field's presence sees the same rows from Kafka as from files)
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(Vec::with_capacity(batch.num_rows() * 64));
                w.write(batch).map_err(|e| ConnectorError::arrow(format!("kafka sink '{}': encoding JSON", self.name), e))?;
                w.finish().map_err(|e| ConnectorError::arrow(format!("kafka sink '{}': encoding JSON", self.name), e))?;
                let buf = w.into_inner();
                // arrow-json escapes newlines inside strings: one line per row.
                let mut spans = Vec::with_capacity(batch.num_rows());
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &buf) {
                    if end > start {
                        spans.push((start, end));
                    }
                    start = end + 1;
                }
                if start < buf.len() {
                    spans.push((start, buf.len()));
                }
                Ok(Values::Lines(buf, spans))
            }
            SinkFormat::Avro => match &self.avro {
                Some(a) => a.encode(batch).map(Values::Owned).map_err(|e| ConnectorError::Other(format!("kafka sink '{}': {e}", self.name))),
                None => Err(ConnectorError::Other("no Avro encoder".into())),
            },
            SinkFormat::String => {
                let col = batch.column_by_name("value").unwrap_or_else(|| batch.column(0));
                let text = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| ConnectorError::arrow(format!("kafka sink '{}'", self.name), e))?;
                let text = text.as_any().downcast_ref::<StringArray>().ok_or_else(|| ConnectorError::Other("cast to text failed".into()))?;
                Ok(Values::Text(text.clone()))
            }
        }
    }

    /// The message timestamps (epoch milliseconds) from `timestamp.field`: a timestamp column
    /// of any unit, a date, or integers taken as epoch milliseconds.
    fn timestamps(&self, batch: &RecordBatch) -> Result<Option<arrow::array::Int64Array>> {
        let Some(field) = &self.timestamp_field else {
            return Ok(None);
        };
        let what = || format!("kafka sink '{}': timestamp.field '{field}'", self.name);
        let col = batch.column_by_name(field).ok_or_else(|| ConnectorError::Other(format!("{}: no such column", what())))?;
        let millis = match col.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let ms = arrow::compute::cast(col, &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None))
                    .map_err(|e| ConnectorError::arrow(what(), e))?;
                arrow::compute::cast(&ms, &DataType::Int64).map_err(|e| ConnectorError::arrow(what(), e))?
            }
            t if t.is_integer() => arrow::compute::cast(col, &DataType::Int64).map_err(|e| ConnectorError::arrow(what(), e))?,
            other => {
                return Err(ConnectorError::Other(format!("{}: a {other} column cannot be a message timestamp; use a timestamp or epoch milliseconds", what())))
            }
        };
        Ok(millis.as_any().downcast_ref::<arrow::array::Int64Array>().cloned())
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Option<Vec<Option<String>>>> {
        let Some(field) = &self.key_field else {
            return Ok(None);
        };
        let col = batch.column_by_name(field).ok_or_else(|| ConnectorError::Other(format!("kafka sink '{}': no column '{field}' for the key", self.name)))?;
        if self.key_json {
            let one = RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(vec![batch.schema().field_with_name(field).map_err(|e| ConnectorError::arrow("key", e))?.clone()])),
                vec![std::sync::Arc::clone(col)],
            )
            .map_err(|e| ConnectorError::arrow("key", e))?;
            let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
            w.write(&one).map_err(|e| ConnectorError::arrow("encoding the key", e))?;
            w.finish().map_err(|e| ConnectorError::arrow("encoding the key", e))?;
            let text = String::from_utf8_lossy(&w.into_inner()).into_owned();
            return Ok(Some(text.lines().map(|l| Some(l.to_string())).collect()));
        }
        let text = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| ConnectorError::arrow(format!("kafka sink '{}': key", self.name), e))?;
        let text = text.as_any().downcast_ref::<StringArray>().ok_or_else(|| ConnectorError::Other("cast to text failed".into()))?;
        Ok(Some((0..text.len()).map(|i| (!text.is_null(i)).then(|| text.value(i).to_string())).collect()))
    }
}

/// A batch's message values.
enum Values {
    /// One buffer, each message a (start, end) slice of it.
    Lines(Vec<u8>, Vec<(usize, usize)>),
    /// A buffer per message (Avro).
    Owned(Vec<Vec<u8>>),
    /// A text column's values (a null value: an empty message).
    Text(StringArray),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Self::Lines(_, spans) => spans.len(),
            Self::Owned(v) => v.len(),
            Self::Text(t) => t.len(),
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        match self {
            Self::Lines(buf, spans) => &buf[spans[i].0..spans[i].1],
            Self::Owned(v) => &v[i],
            Self::Text(t) => {
                if t.is_null(i) {
                    &[]
                } else {
                    t.value(i).as_bytes()
                }
            }
        }
    }
}

/// How long a send waits when the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// Delivery results of one write.
#[derive(Default)]
struct Outcome {
    total: usize,
    failed: usize,
    first: Option<String>,
}

/// The delivery reports of one write, counted as the producer's thread receives them: one
/// shared counter per write rather than a channel per message.
#[derive(Default)]
struct Acks {
    /// Messages handed to the producer whose report has not come.
    pending: std::sync::atomic::AtomicUsize,
    total: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    first: std::sync::Mutex<Option<String>>,
    /// Rung when `pending` reaches zero.
    done: tokio::sync::Notify,
}

impl Acks {
    /// A message is about to be handed to the producer.
    fn sent(&self) {
        self.pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The producer refused the message announced by [`Acks::sent`]: no report will come.
    fn unsent(&self) {
        self.done_one();
    }

    /// A message's report: `error` when it was not delivered.
    fn settle(&self, error: Option<String>) {
        use std::sync::atomic::Ordering;
        if let Some(e) = error {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.done_one();
    }

    /// One message less to wait for.
    fn done_one(&self) {
        if self.pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            // (a permit is stored when nobody waits yet: the waiter checks again)
            self.done.notify_one();
        }
    }

    /// Waits until every message sent has its report.
    async fn settled(&self) {
        while self.pending.load(std::sync::atomic::Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }

    fn outcome(&self) -> Outcome {
        use std::sync::atomic::Ordering;
        let first = self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Outcome { total: self.total.load(Ordering::Relaxed), failed: self.failed.load(Ordering::Relaxed), first }
    }
}

/// The sink's producer with `settings`, reporting its connection's state to `status`.
fn delivery_producer(props: &Properties, settings: &[(String, String)], what: &str, status: &StatusSlot) -> Result<ThreadedProducer<DeliveryContext>> {
    create_client_with(props, settings.to_vec(), what, || DeliveryContext(QuietContext::with_status(what, Arc::clone(status))))
}

/// The sink producer's context: logs as [`QuietContext`] does, and settles each message's
/// share of its write's [`Acks`] when its delivery report comes.
struct DeliveryContext(QuietContext);

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log_line(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.client_error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        acks.settle(result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &Schema) -> Result<()> {
        if let Some(k) = &self.key_field {
            if schema.field_with_name(k).is_err() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(ConnectorError::invalid(
                    format!("{}.key.field", self.name),
                    format!("the result has no column '{k}' (it has {})", names.join(", ")),
                ));
            }
        }
        if self.format == SinkFormat::String && schema.fields().len() != 1 && schema.field_with_name("value").is_err() {
            return Err(ConnectorError::invalid(
                format!("{}.value.format", self.name),
                "'string' values need a result with one column, or a column named 'value'",
            ));
        }
        Ok(())
    }

    fn attach_metrics(&mut self, metrics: std::sync::Arc<crate::metrics::ConnectorMetrics>) {
        let _ = self.status.set(metrics);
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.write_all(std::slice::from_ref(batch)).await
    }

    fn groups_writes(&self) -> bool {
        true
    }

    async fn write_all(&mut self, batches: &[RecordBatch]) -> Result<()> {
        if self.closed {
            return Err(ConnectorError::Other(format!("kafka sink '{}' is closed", self.name)));
        }
        if let Some(held) = self.held.as_mut() {
            held.extend(batches.iter().cloned());
            return Ok(());
        }
        self.produce(batches).await
    }

    async fn flush(&mut self) -> Result<()> {
        // Every write already waited for its deliveries.
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            if let Some(txn) = self.txn.as_mut().filter(|t| t.open) {
                // what was written after the last checkpoint is not published
                txn.open = false;
                let p = self.producer.clone();
                blocking(self.txn_err("aborting its transaction"), move || p.abort_transaction(TXN_TIMEOUT)).await?;
                return Ok(());
            }
            let p = self.producer.clone();
            blocking(format!("kafka sink '{}': flush", self.name), move || p.flush(Duration::from_secs(30))).await?;
        }
        Ok(())
    }

    fn transactional(&self) -> bool {
        true
    }

    fn commit_is_final(&self) -> bool {
        self.txn.is_some()
    }

    fn set_delivery(&mut self, job: &str, delivery: Delivery) -> Result<()> {
        if delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        let id = format!("ferris-{job}-{}", self.name);
        let mut settings = self.settings.clone();
        settings.retain(|(k, _)| k != "transactional.id" && k != "enable.idempotence");
        settings.push(("transactional.id".into(), id.clone()));
        settings.push(("enable.idempotence".into(), "true".into()));
        // a transaction stays open from one checkpoint's commit to the next: librdkafka's
        // default (60 s) would abort it under a long `checkpoint.interval` or a slow checkpoint
        if !settings.iter().any(|(k, _)| k == "transaction.timeout.ms") {
            settings.push(("transaction.timeout.ms".into(), "900000".into()));
        }
        let what = format!("kafka sink '{}'", self.name);
        self.producer = delivery_producer(&self.props, &settings, &what, &self.status)?;
        self.settings = settings;
        let marker_group = format!("{id}-checkpoints");
        // the marker group's metadata, once (a client of its own; the job may block here)
        self.marker_metadata = Some(self.group_metadata(&marker_group)?);
        self.txn = Some(Txn { marker_group, id, open: false, initialised: false });
        Ok(())
    }

    async fn last_committed(&mut self) -> Result<Option<u64>> {
        let Some(txn) = self.txn.clone() else { return Ok(None) };
        // the transaction a killed process left open is aborted first: until then the broker
        // answers the marker's offset with "unstable" and the read would wait for it
        self.init_transactions(&txn).await?;
        let consumer = self.marker_client(&txn.marker_group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let what = self.txn_err("reading its last committed checkpoint");
        let committed = blocking(what, move || consumer.committed_offsets(tpl, TXN_TIMEOUT)).await?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }))
    }

    async fn recover(&mut self, _restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        let Some(txn) = self.txn.clone() else { return Ok(()) };
        if !self.checked_topic {
            self.ensure_topic().await?;
        }
        self.init_transactions(&txn).await?;
        self.producer.begin_transaction().map_err(|e| ConnectorError::Other(self.txn_err(&format!("begin transaction: {e}"))))?;
        if let Some(t) = self.txn.as_mut() {
            t.open = true;
        }
        Ok(())
    }

    async fn prepare(&mut self, _checkpoint: u64) -> Result<Option<Prepared>> {
        // every write waited for its deliveries: the transaction holds all rows so far, and
        // what comes before the commit waits for the next one
        let Some(t) = self.txn.as_ref() else { return Ok(None) };
        let prepared = serde_json::json!({ "transactional.id": t.id });
        self.held.get_or_insert_with(Vec::new);
        Ok(Some(prepared))
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.commit_with_sources(checkpoint, &SourcePositions::new()).await
    }

    fn take_source_commits(&mut self, sources: &[(String, Arc<dyn SourceCheckpoint>)]) -> Vec<String> {
        if self.txn.is_none() {
            return Vec::new();
        }
        let mut taken = Vec::new();
        for (source, checkpoint) in sources {
            let Some(kafka) = checkpoint.as_any().and_then(|a| a.downcast_ref::<KafkaCheckpoint>()) else { continue };
            if !same_cluster_and_user(kafka.props(), &self.props) {
                tracing::info!(sink = %self.name, "kafka source '{source}' reads another cluster, or as another user: its offsets are committed outside the sink's transactions");
                continue;
            }
            // (called where the job may block: making the group's metadata creates a client)
            let metadata = match self.group_metadata(kafka.group()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(sink = %self.name, "kafka source '{source}': its offsets are committed outside the sink's transactions: {e}");
                    continue;
                }
            };
            kafka.leave_commits_to_transaction();
            self.source_commits.push(SourceCommit { source: source.clone(), checkpoint: Arc::clone(checkpoint), metadata });
            taken.push(source.clone());
        }
        taken
    }

    async fn commit_with_sources(&mut self, checkpoint: u64, sources: &SourcePositions) -> Result<()> {
        if self.txn.as_ref().is_none_or(|t| !t.open) {
            return Ok(());
        }
        // the checkpoint's number, committed with the rows: a restart learns where it stands
        let mut marker = TopicPartitionList::new();
        marker
            .add_partition_offset(&self.topic, 0, Offset::Offset(checkpoint as i64))
            .map_err(|e| ConnectorError::Other(self.txn_err(&format!("marker offset: {e}"))))?;
        let metadata = self.marker_metadata.clone().ok_or_else(|| ConnectorError::Other(self.txn_err("no group metadata for its checkpoint marker")))?;
        // the sources' consumer-group offsets at this checkpoint, in the same transaction
        let taken: Vec<(String, Arc<dyn SourceCheckpoint>, Arc<ConsumerGroupMetadata>, Positions)> = self
            .source_commits
            .iter()
            .filter_map(|c| Some((c.source.clone(), Arc::clone(&c.checkpoint), Arc::clone(&c.metadata), sources.get(&c.source)?.clone())))
            .collect();
        let (p, what) = (self.producer.clone(), self.txn_err(&format!("committing checkpoint {checkpoint}")));
        // (the assignment is asked of the consumer's thread, and the calls wait for the broker)
        let committed = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
            p.send_offsets_to_transaction(&marker, &metadata, TXN_TIMEOUT).map_err(|e| format!("its checkpoint marker: {e}"))?;
            for (source, checkpoint, metadata, positions) in &taken {
                let Some(kafka) = checkpoint.as_any().and_then(|a| a.downcast_ref::<KafkaCheckpoint>()) else { continue };
                let Some((_, offsets)) = kafka.owned_offsets(positions, None) else { continue };
                if offsets.count() > 0 {
                    p.send_offsets_to_transaction(&offsets, metadata, TXN_TIMEOUT)
                        .map_err(|e| format!("the offsets of kafka source '{source}' (group '{}'): {e}", kafka.group()))?;
                }
            }
            p.commit_transaction(TXN_TIMEOUT).map_err(|e| e.to_string())?;
            p.begin_transaction().map_err(|e| format!("begin transaction: {e}"))
        })
        .await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ConnectorError::Other(format!("{what}: {e}"))),
            Err(e) => return Err(ConnectorError::Other(format!("{what}: {e}"))),
        }
        // the rows written since the prepare open the next transaction
        let held = self.held.take().unwrap_or_default();
        self.produce(&held).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_every_report_and_counts_the_failures() {
        let acks = Arc::new(Acks::default());
        for _ in 0..10_000 {
            acks.sent();
        }
        // reports come from other threads, some before the writer waits
        let reporters: Vec<_> = (0..4)
            .map(|t| {
                let acks = Arc::clone(&acks);
                std::thread::spawn(move || {
                    for i in 0..2500 {
                        acks.settle((t == 3 && i % 500 == 0).then(|| format!("lost {t}/{i}")));
                        if i % 1000 == 0 {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), acks.settled()).await.expect("every report came");
        for r in reporters {
            r.join().expect("reporter");
        }
        let Outcome { total, failed, first } = acks.outcome();
        assert_eq!((total, failed), (10_000, 5));
        assert!(first.is_some_and(|e| e.starts_with("lost 3/")));
    }

    #[tokio::test]
    async fn a_write_does_not_return_before_its_last_report() {
        let acks = Arc::new(Acks::default());
        acks.sent();
        acks.sent();
        acks.settle(None);
        // one report is missing: still waiting
        assert!(tokio::time::timeout(Duration::from_millis(50), acks.settled()).await.is_err());
        acks.unsent();
        tokio::time::timeout(Duration::from_secs(1), acks.settled()).await.expect("settled");
        // nothing sent: nothing to wait for
        tokio::time::timeout(Duration::from_millis(10), Arc::new(Acks::default()).settled()).await.expect("settled at once");
    }
}
