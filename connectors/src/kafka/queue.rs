//! A partition's own queue of fetched messages, read many messages per call.
//!
//! librdkafka hands a consumer's messages out one `poll` at a time, and each poll takes the
//! queue's lock, reads the clock twice and marks the application as polled. Reading a queue
//! with `rd_kafka_consume_batch_queue` does that once for up to hundreds of messages. The
//! `rdkafka` crate only offers the one-message poll on a partition's queue, so this module
//! splits the partition's queue off itself and reads it through librdkafka's C API.
//!
//! What every Kafka source reads through it:
//!
//! ```sql
//! CREATE STREAM big AS SELECT * FROM orders WHERE amount > 100 INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = 'localhost:9092',
//!       'orders.topic' = 'orders', 'orders.group.id' = 'big-orders', ...);
//! ```

use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaErrorCode;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

use super::group::GroupContext;

/// A callback rung when the queue goes from empty to holding messages.
type Bell = Box<dyn Fn() + Send + Sync>;

/// One partition's queue, split off the consumer's queue (its messages come here only).
pub(crate) struct PartitionQueue<C: ConsumerContext + 'static = GroupContext> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The client the queue belongs to: it lives as long as the queue does.
    _consumer: Arc<BaseConsumer<C>>,
    /// The non-empty callback's closure (its address is librdkafka's opaque pointer).
    bell: Option<Box<Bell>>,
    /// Pointers to the messages of one read (kept to spare an allocation per read).
    buffer: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka's queues are thread-safe; the message pointers in `buffer` never outlive
// one `read` call (they are destroyed before it returns).
unsafe impl<C: ConsumerContext> Send for PartitionQueue<C> {}
// SAFETY: as above; `read` takes `&mut self`, so the buffer is never shared.
unsafe impl<C: ConsumerContext> Sync for PartitionQueue<C> {}

/// A message of one read, borrowed from librdkafka until the read ends.
pub(crate) struct Fetched<'a> {
    msg: &'a rd::rd_kafka_message_t,
    ptr: *mut rd::rd_kafka_message_t,
}

impl Fetched<'_> {
    /// The error this entry carries instead of a message (a fetch error on the partition).
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        (self.msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| RDKafkaErrorCode::from(self.msg.err))
    }

    /// The message's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.msg.offset
    }

    /// The key's bytes, if it has a key.
    pub fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka gives `key_len` valid bytes at `key` while the message lives
        unsafe { bytes(self.msg.key, self.msg.key_len) }
    }

    /// The value's bytes (`None`: a null value, a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        // SAFETY: as for the key
        unsafe { bytes(self.msg.payload, self.msg.len) }
    }

    /// The message's timestamp in epoch milliseconds (create or log-append time).
    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is alive
        let t = unsafe { rd::rd_kafka_message_timestamp(self.ptr, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && t >= 0).then_some(t)
    }

    /// The message's headers, values as text (invalid UTF-8 replaced).
    pub fn headers(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: the message is alive; the headers it returns live as long as it does
        if unsafe { rd::rd_kafka_message_headers(self.ptr, &mut headers) } != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return out;
        }
        for i in 0.. {
            let (mut name, mut value, mut size): (*const std::os::raw::c_char, *const c_void, usize) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: `headers` is the message's; index past the end returns an error
            if unsafe { rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size) } != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            if name.is_null() {
                continue;
            }
            // SAFETY: header names are NUL-terminated; the value is `size` bytes or null
            let key = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
            let value = unsafe { bytes(value, size) }.map(|v| String::from_utf8_lossy(v).into_owned());
            out.push((key, value));
        }
        out
    }
}

/// `len` bytes at `ptr`, `None` for a null pointer.
///
/// # Safety
/// `ptr` must be null or point at `len` readable bytes that outlive the returned slice.
unsafe fn bytes<'a>(ptr: *const c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl<C: ConsumerContext> PartitionQueue<C> {
    /// The queue of `topic`/`partition` of `consumer`, no longer forwarded to the consumer's
    /// own queue. `None` when librdkafka has no such partition.
    pub fn split(consumer: &Arc<BaseConsumer<C>>, topic: &str, partition: i32) -> Option<Self> {
        use rdkafka::consumer::Consumer;
        let name = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives; the queue returned is
        // ours to destroy
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), partition) })?;
        // SAFETY: the queue is valid; forwarding to null makes it keep its messages
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(Self { queue, _consumer: Arc::clone(consumer), bell: None, buffer: Vec::new() })
    }

    /// Rings `f` whenever the queue goes from empty to holding messages (from librdkafka's
    /// threads: `f` must be quick).
    pub fn set_nonempty_callback(&mut self, f: impl Fn() + Send + Sync + 'static) {
        unsafe extern "C" fn ring(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
            // SAFETY: `opaque` is the address of the boxed `Bell`, alive until the callback
            // is disabled (in `drop`, or replaced below)
            let bell = unsafe { &*(opaque as *const Bell) };
            bell();
        }
        let bell: Box<Bell> = Box::new(Box::new(f));
        let opaque = &*bell as *const Bell as *mut c_void;
        // SAFETY: the queue is valid; the box lives in `self` until the callback is changed
        unsafe { rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), Some(ring), opaque) };
        self.bell = Some(bell);
    }

    /// Reads up to `max` messages the queue holds now (it does not wait), handing each to
    /// `each` in order; the number read (errors included).
    pub fn read(&mut self, max: usize, mut each: impl FnMut(&Fetched<'_>)) -> usize {
        if max == 0 {
            return 0;
        }
        self.buffer.clear();
        self.buffer.reserve(max);
        // SAFETY: the buffer has room for `max` pointers; a timeout of 0 never waits
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, self.buffer.as_mut_ptr(), max) };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: librdkafka wrote `n` message pointers
        unsafe { self.buffer.set_len(n) };
        for &ptr in &self.buffer {
            // SAFETY: each pointer is a live message until destroyed below
            if let Some(msg) = unsafe { ptr.as_ref() } {
                each(&Fetched { msg, ptr });
            }
        }
        for ptr in self.buffer.drain(..) {
            // SAFETY: every message read is destroyed once, after its last use
            unsafe { rd::rd_kafka_message_destroy(ptr) };
        }
        n
    }
}

impl<C: ConsumerContext> Drop for PartitionQueue<C> {
    fn drop(&mut self) {
        // SAFETY: the callback goes before its closure and the queue; the queue is ours
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::Consumer;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    /// What a test read of one message holds.
    type Read = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>, Vec<(String, Option<String>)>);

    #[test]
    fn a_partition_queue_is_read_in_batches_with_every_field_of_every_message() {
        let mock = MockCluster::new(1).expect("mock cluster");
        let servers = mock.bootstrap_servers();
        mock.create_topic("t", 2, 1).expect("topic");
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", &servers).create().expect("producer");
        for i in 0..1000i64 {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let mut r = BaseRecord::<str, str>::to("t").partition(1).timestamp(1_700_000_000_000 + i);
            // every 10th message without a key, every 7th a tombstone, every 5th with headers
            if i % 10 != 0 {
                r = r.key(&key);
            }
            if i % 7 != 0 {
                r = r.payload(&value);
            }
            if i % 5 == 0 {
                r = r.headers(OwnedHeaders::new().insert(Header { key: "h", value: Some(value.as_str()) }).insert(Header::<&str> { key: "none", value: None }));
            }
            producer.send(r).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let consumer: Arc<BaseConsumer> = Arc::new(
            ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", "queue-test").set("enable.auto.commit", "false").create().expect("consumer"),
        );
        let mut queue = PartitionQueue::split(&consumer, "t", 1).expect("a queue of its own");
        let rung = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = Arc::clone(&rung);
        queue.set_nonempty_callback(move || {
            r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 1, Offset::Beginning).expect("partition");
        consumer.assign(&tpl).expect("assign");

        let mut read: Vec<Read> = Vec::new();
        let mut biggest = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while read.len() < 1000 && Instant::now() < deadline {
            // (the consumer's own queue serves the fetcher's events)
            let _ = consumer.poll(Duration::from_millis(10));
            let n = queue.read(64, |m| {
                assert!(m.error().is_none(), "{:?}", m.error());
                read.push((m.offset(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), m.timestamp(), m.headers()));
            });
            assert!(n <= 64, "a read takes at most what it is asked for: {n}");
            biggest = biggest.max(n);
        }
        assert_eq!(read.len(), 1000, "every message is read");
        assert!(biggest > 1, "messages come many per read");
        assert!(rung.load(std::sync::atomic::Ordering::Relaxed) > 0, "the bell rang");
        for (i, (offset, key, value, ts, headers)) in read.into_iter().enumerate() {
            let i = i as i64;
            assert_eq!(offset, i);
            assert_eq!(key, (i % 10 != 0).then(|| format!("k{i}").into_bytes()));
            assert_eq!(value, (i % 7 != 0).then(|| format!("v{i}").into_bytes()));
            assert_eq!(ts, Some(1_700_000_000_000 + i));
            let want = if i % 5 == 0 { vec![("h".to_string(), Some(format!("v{i}"))), ("none".to_string(), None)] } else { Vec::new() };
            assert_eq!(headers, want);
        }
        // a read of an empty queue returns at once with nothing
        let t = Instant::now();
        assert_eq!(queue.read(64, |_| panic!("no message left")), 0);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(queue.read(0, |_| panic!("nothing asked")), 0);
        // the queue goes before the consumer it holds
        drop(queue);
        drop(consumer);
    }

    #[test]
    fn the_consumer_queue_no_longer_gets_the_messages_of_a_split_partition() {
        let mock = MockCluster::new(1).expect("mock cluster");
        let servers = mock.bootstrap_servers();
        mock.create_topic("u", 2, 1).expect("topic");
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", &servers).create().expect("producer");
        for p in 0..2 {
            for i in 0..50 {
                producer.send(BaseRecord::<str, str>::to("u").partition(p).payload(&format!("{p}-{i}"))).map_err(|(e, _)| e).expect("send");
            }
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
        let consumer: Arc<BaseConsumer> =
            Arc::new(ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", "queue-test-2").create().expect("consumer"));
        let mut queue = PartitionQueue::split(&consumer, "u", 0).expect("a queue of its own");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("u", 0, Offset::Beginning).expect("partition");
        tpl.add_partition_offset("u", 1, Offset::Beginning).expect("partition");
        consumer.assign(&tpl).expect("assign");
        let (mut own, mut other) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while (own.len() < 50 || other.len() < 50) && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
                use rdkafka::Message;
                other.push((m.partition(), String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
            }
            queue.read(1000, |m| own.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
        }
        assert_eq!(own, (0..50).map(|i| format!("0-{i}")).collect::<Vec<_>>());
        assert_eq!(other, (0..50).map(|i| (1, format!("1-{i}"))).collect::<Vec<_>>());
    }
}
