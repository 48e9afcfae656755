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
pub use sink::{FlightSink, SINK_KEYS};

use crate::connector::{ConnectorSpec, RoleSpec, SinkContext};
use crate::connector_type::ConnectorKind;
use crate::error::Result;
use crate::sink::Sink;

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(FlightSink::try_new(c.props, c.job_name)?))
}

/// The Flight connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Flight,
    summary: "Arrow Flight: a live stream for DoGet subscribers and a table for Flight SQL (`serve`).",
    source: None,
    sink: Some(RoleSpec { keys: &[SINK_KEYS], passthrough: None, checkpoints: "at least once by nature: rows are shown as they come", create: create_sink }),
};
