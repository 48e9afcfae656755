//! The `flight_sink`: a job's output published as a live stream that Arrow Flight clients
//! subscribe to (`DoGet` with the stream's name as ticket) and that Flight SQL reads as a
//! table holding the latest results. The server side lives in `flight-server`.
//!
//! ```sql
//! CREATE STREAM big_orders AS SELECT * FROM orders WHERE amount > 100 INTO live
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
//!       'live.type' = 'flight_sink', 'live.retain.rows' = '10000');
//! ```

pub mod hub;
pub mod sink;

pub use hub::{hub, LiveStream, StreamHub, Subscription, SubscriptionError};
pub use sink::{FlightSink, FLIGHT_SINK_KEYS};
