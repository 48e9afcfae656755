//! The process's live streams, by name: each keeps its most recent batches (within a row
//! bound) for late subscribers and for Flight SQL, and broadcasts new batches to every
//! subscriber. Publishing never waits for a subscriber: a subscriber that falls too far
//! behind is told so and dropped, the job goes on.
//!
//! ```sql
//! -- job big_orders publishes to the stream 'big_orders'; `DoGet(Ticket("big_orders"))` reads it
//! CREATE STREAM big_orders AS SELECT * FROM orders INTO live WITH ('live.type' = 'flight_sink');
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::error::{ConnectorError, Result};

/// Batches a subscriber may lag behind before it is dropped.
pub const SUBSCRIBER_QUEUE_BATCHES: usize = 1024;

/// Why a subscription ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber read more slowly than the job wrote.
    #[error("the subscriber to stream '{stream}' fell {missed} batches behind and was dropped; read faster, or query the retained rows with Flight SQL")]
    Lagged {
        /// The stream.
        stream: String,
        /// Batches it missed.
        missed: u64,
    },
}

/// A subscription: the retained batches, then every new one until the stream closes.
pub type Subscription = BoxStream<'static, std::result::Result<RecordBatch, SubscriptionError>>;

#[derive(Debug, Default)]
struct Retained {
    schema: Option<SchemaRef>,
    batches: VecDeque<RecordBatch>,
    rows: usize,
    /// None once the stream is closed: no more batches will come.
    sender: Option<broadcast::Sender<RecordBatch>>,
}

/// One named live stream.
#[derive(Debug)]
pub struct LiveStream {
    name: String,
    retain_rows: usize,
    state: Mutex<Retained>,
    rows_published: AtomicU64,
    subscriptions: AtomicU64,
}

impl LiveStream {
    fn new(name: &str, retain_rows: usize) -> Self {
        let (sender, _) = broadcast::channel(SUBSCRIBER_QUEUE_BATCHES);
        Self {
            name: name.to_string(),
            retain_rows,
            state: Mutex::new(Retained { sender: Some(sender), ..Retained::default() }),
            rows_published: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Retained> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream's name (its job's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rows kept for late subscribers and Flight SQL, at most.
    pub fn retain_rows(&self) -> usize {
        self.retain_rows
    }

    /// The schema of its batches, once the job has declared it.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.lock().schema.clone()
    }

    /// Sets the schema before any batch flows (the sink's schema check).
    pub fn set_schema(&self, schema: SchemaRef) {
        self.lock().schema = Some(schema);
    }

    /// True while the job can still publish.
    pub fn is_open(&self) -> bool {
        self.lock().sender.is_some()
    }

    /// Rows published since the stream opened.
    pub fn rows_published(&self) -> u64 {
        self.rows_published.load(Ordering::Relaxed)
    }

    /// Subscriptions opened since the stream opened.
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Publishes `batch`: retained (oldest rows give way beyond the bound) and sent to every
    /// subscriber. Never waits.
    pub fn publish(&self, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let mut st = self.lock();
        if st.schema.is_none() {
            st.schema = Some(batch.schema());
        }
        if self.retain_rows > 0 {
            st.batches.push_back(batch.clone());
            st.rows += batch.num_rows();
            while st.rows > self.retain_rows {
                let excess = st.rows - self.retain_rows;
                let Some(front) = st.batches.pop_front() else { break };
                if front.num_rows() > excess {
                    st.batches.push_front(front.slice(excess, front.num_rows() - excess));
                    st.rows -= excess;
                } else {
                    st.rows -= front.num_rows();
                }
            }
        }
        if let Some(s) = &st.sender {
            // An error only means nobody is subscribed.
            let _ = s.send(batch.clone());
        }
        self.rows_published.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    }

    /// The retained batches, oldest first.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.lock().batches.iter().cloned().collect()
    }

    /// Rows retained now.
    pub fn retained_rows(&self) -> usize {
        self.lock().rows
    }

    /// Ends the stream: subscribers get what was sent, then the end. The retained rows stay
    /// readable until the stream is removed.
    pub fn close(&self) {
        self.lock().sender = None;
    }

    /// Subscribes: the retained batches, then each new batch, ending when the stream closes.
    /// Nothing is missed or repeated between the two (both are taken under one lock).
    pub fn subscribe(&self) -> Subscription {
        let (retained, receiver) = {
            let st = self.lock();
            (st.batches.iter().cloned().collect::<Vec<_>>(), st.sender.as_ref().map(broadcast::Sender::subscribe))
        };
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        let name = self.name.clone();
        let live = futures::stream::unfold(receiver, move |receiver| {
            let name = name.clone();
            async move {
                let mut rx = receiver?;
                match rx.recv().await {
                    Ok(b) => Some((Ok(b), Some(rx))),
                    Err(broadcast::error::RecvError::Closed) => None,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Some((Err(SubscriptionError::Lagged { stream: name, missed }), None)),
                }
            }
        });
        futures::stream::iter(retained.into_iter().map(Ok)).chain(live).boxed()
    }
}

/// Every live stream of the process.
#[derive(Debug, Default)]
pub struct StreamHub {
    streams: Mutex<BTreeMap<String, Arc<LiveStream>>>,
}

/// The process's hub, shared by the flight sinks and the Flight server.
pub fn hub() -> &'static StreamHub {
    static HUB: OnceLock<StreamHub> = OnceLock::new();
    HUB.get_or_init(StreamHub::default)
}

impl StreamHub {
    fn streams(&self) -> MutexGuard<'_, BTreeMap<String, Arc<LiveStream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the stream `name`. A closed stream of that name (a finished job's) is replaced; an
    /// open one is an error: two running jobs cannot publish under one name.
    pub fn open(&self, name: &str, retain_rows: usize) -> Result<Arc<LiveStream>> {
        let mut streams = self.streams();
        if streams.get(name).is_some_and(|s| s.is_open()) {
            return Err(ConnectorError::Other(format!("a running job already publishes the Flight stream '{name}'")));
        }
        let s = Arc::new(LiveStream::new(name, retain_rows));
        streams.insert(name.to_string(), Arc::clone(&s));
        Ok(s)
    }

    /// The stream `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<LiveStream>> {
        self.streams().get(name).cloned()
    }

    /// Every stream, by name.
    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        self.streams().values().cloned().collect()
    }

    /// Forgets the stream `name` (its job was deleted); subscribers see its end.
    pub fn remove(&self, name: &str) {
        if let Some(s) = self.streams().remove(name) {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()).collect()
    }

    #[tokio::test]
    async fn retains_the_latest_rows_and_streams_the_rest() {
        let h = StreamHub::default();
        let s = h.open("t", 5).unwrap();
        s.publish(&batch(&[1, 2, 3]));
        s.publish(&batch(&[4, 5, 6, 7]));
        assert_eq!(values(&s.snapshot()), vec![3, 4, 5, 6, 7]);
        let sub = s.subscribe();
        s.publish(&batch(&[8]));
        s.close();
        let got: Vec<RecordBatch> = sub.map(|b| b.unwrap()).collect().await;
        assert_eq!(values(&got), vec![3, 4, 5, 6, 7, 8]);
        // Closed: a new subscriber gets the retained rows and the end.
        let got: Vec<RecordBatch> = s.subscribe().map(|b| b.unwrap()).collect().await;
        assert_eq!(values(&got), vec![4, 5, 6, 7, 8]);
        assert_eq!(s.rows_published(), 8);
    }

    #[tokio::test]
    async fn one_open_stream_per_name_and_a_slow_subscriber_is_told() {
        let h = StreamHub::default();
        let s = h.open("t", 0).unwrap();
        assert!(h.open("t", 0).is_err());
        let mut sub = s.subscribe();
        for i in 0..(SUBSCRIBER_QUEUE_BATCHES as i64 + 3) {
            s.publish(&batch(&[i]));
        }
        assert_eq!(sub.next().await, Some(Err(SubscriptionError::Lagged { stream: "t".into(), missed: 3 })));
        assert_eq!(sub.next().await, None);
        s.close();
        assert!(h.open("t", 0).is_ok(), "a closed stream gives way to a redeployed job");
        assert!(values(&h.get("t").unwrap().snapshot()).is_empty());
    }
}
