//! The Kafka connector, on rdkafka (librdkafka built in): `kafka_source` and `kafka_sink`.
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT o._key, o.amount FROM orders o INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = 'localhost:9092',
//!       'orders.topic' = 'orders', 'orders.value.format' = 'json',
//!       'out.type' = 'kafka_sink', 'out.bootstrap.servers' = 'localhost:9092', 'out.topic' = 'enriched');
//! ```

pub mod avro;
pub mod config;
pub mod decode;
mod group;
pub mod sink;
pub mod source;

pub use sink::KafkaSink;
pub use source::KafkaSource;
