//! The FerrisStreams engine: SQL front end, job analysis, planning on DataFusion, streaming
//! operators and the job runner that fans results out to every sink.
//!
//! ```sql
//! CREATE STREAM enriched_orders AS
//! SELECT o.order_id, c.customer_name, o.quantity * p.unit_price AS line_total
//! FROM orders o JOIN customers c ON o.customer_id = c.customer_id
//!               JOIN products p ON o.product_id = p.product_id
//! INTO archive, audit
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl', …);
//! ```

pub mod checkpoint;
pub mod config;
pub mod connect;
pub mod error;
pub mod event_time;
pub mod explain;
pub mod job;
pub mod join;
pub mod memory;
mod ordered_bits;
pub mod planner;
mod radix_sort;
pub mod runner;
pub mod sql;
#[cfg(test)]
mod test_tables;
pub mod top_n;
pub mod window;
pub mod window_function;

pub use error::{EngineError, Result};
