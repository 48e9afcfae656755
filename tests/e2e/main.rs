//! End-to-end tests: run the `ferris-sql` binary as a user would and compare every output row
//! with what DataFusion computes in batch on the same files.

mod checkpoints;
mod cli;
mod common;
mod demos;
mod differential;
mod errors;
mod explain;
mod flight;
mod golden;
mod guide_examples;
mod http;
mod iceberg;
mod iot;
mod join_filters;
mod kafka;
mod kafka_tls;
mod nexmark;
mod postgres;
mod redis;
mod registry;
mod s3;
mod server;
mod shared_expressions;
mod sinks;
mod source_failures;
mod sources;
mod temporal_joins;
mod window_functions;
mod windows;
