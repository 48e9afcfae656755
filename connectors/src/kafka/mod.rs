//! The Kafka connector, on rdkafka (librdkafka built in): `kafka_source` and `kafka_sink`.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT o._key, o.amount FROM orders o INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = 'localhost:9092',
//!       'orders.topic' = 'orders', 'orders.value.format' = 'json',
//!       'out.type' = 'kafka_sink', 'out.bootstrap.servers' = 'localhost:9092', 'out.topic' = 'enriched');
//! ```

pub mod config;
pub mod decode;
mod group;
mod queue;
mod replay;
pub mod sink;
pub mod source;

use std::sync::Arc;

pub use sink::KafkaSink;
pub use source::KafkaSource;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::Result;
use crate::sink::Sink;
use crate::source::Source;

const PASSTHROUGH: &str =
    "Handed to librdkafka (`security.protocol`, `sasl.*`, `ssl.*`, `session.timeout.ms`, …); a key it does not know is warned about and left out.";

/// The keys `kafka_source` reads itself.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("bootstrap.servers", "Brokers to connect to (host:port, comma-separated). Required.").client(),
    KeyDoc::new("topic", "The topic to read: one, a list (`a,b`), or a pattern starting with `^`. Required."),
    KeyDoc::new("topics", "Topics to read, comma-separated."),
    KeyDoc::new("group.id", "The consumer group.").default("ferris-streams-{job}").client(),
    KeyDoc::new("value.format", "json, avro, string or bytes.").default("json"),
    KeyDoc::new("format", "Alias of value.format."),
    KeyDoc::new("schema", "The value's columns (`id BIGINT, amount DOUBLE`); inferred from the first messages when absent."),
    KeyDoc::new("value.schema", "Alias of schema."),
    KeyDoc::new("avro.schema", "The Avro schema (JSON) of the values."),
    KeyDoc::new("avro.schema.file", "A file holding the Avro schema."),
    KeyDoc::new("avro.framing", "auto, confluent (5-byte header) or raw.").default("auto"),
    KeyDoc::new("schema.sample_size", "Messages read to infer the schema.").default("1000"),
    KeyDoc::new("schema.inference.timeout", "How long to wait for messages to infer the schema from.").default("10s"),
    KeyDoc::new("commit.interval", "How often offsets are committed (simple mode, no checkpoints).").default("1s"),
    KeyDoc::new("consumers", "Readers sharing the process's one group member.").default("the job's parallelism, at most the partition count"),
    KeyDoc::new("max.poll.records", "Messages per batch when batch.size is not set."),
    KeyDoc::new("dlq.topic", "Where malformed messages go under the SendToDLQ strategy."),
    KeyDoc::new("source.buffer_size", "").unused("librdkafka sizes its own buffers; use queued.max.messages.kbytes", &[]),
    KeyDoc::new("buffer_size", "").unused("librdkafka sizes its own buffers; use queued.max.messages.kbytes", &[]),
];

/// The keys `kafka_sink` reads itself.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("bootstrap.servers", "Brokers to connect to. Required.").client(),
    KeyDoc::new("topic", "The topic written. Required."),
    KeyDoc::new("value.format", "json, avro or string.").default("json"),
    KeyDoc::new("format", "Alias of value.format."),
    KeyDoc::new("key.field", "The column whose value is the message key."),
    KeyDoc::new("key.format", "string or json.").default("string"),
    KeyDoc::new("timestamp.field", "The column (a timestamp, or epoch milliseconds) whose value is the message's timestamp; the time of sending when unset."),
    KeyDoc::new("avro.schema", "The Avro schema (JSON) to write with."),
    KeyDoc::new("avro.schema.file", "A file holding the Avro schema."),
    KeyDoc::new("avro.schema.id", "Registry id written in the Confluent header; raw Avro when absent."),
    KeyDoc::new("topic.create", "Create the topic when missing (false to refuse).").default("true"),
    KeyDoc::new("topic.partitions", "Partitions of a topic the sink creates.").default("1"),
    KeyDoc::new("delivery.timeout", "").unused("use librdkafka's delivery.timeout.ms", &[]),
    KeyDoc::new("buffer_size", "").unused("librdkafka sizes its own buffers; use queue.buffering.max.kbytes", &[]),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(KafkaSource::try_new(c.props, c.job, c.partitions, c.job_name)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(KafkaSink::try_new(c.props)?))
}

/// The Kafka connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Kafka,
    summary: "Apache Kafka topics (JSON, Avro, string or bytes values), on librdkafka.",
    source: Some(RoleSpec {
        keys: &[SOURCE_KEYS, crate::format::registry::REGISTRY_KEYS],
        passthrough: Some(PASSTHROUGH),
        checkpoints: "positions: offset per topic partition",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[SINK_KEYS, crate::format::registry::REGISTRY_KEYS],
        passthrough: Some(PASSTHROUGH),
        checkpoints: "two-phase: a Kafka transaction committed with the checkpoint",
        create: create_sink,
    }),
};
