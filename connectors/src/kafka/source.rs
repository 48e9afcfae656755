//! `kafka_source`: reads one topic, a list, or a pattern through a consumer group, in parallel
//! (one consumer per partition of the job; Kafka spreads the topic's partitions over them and
//! over every other process of the same job), decoding each batch of messages into Arrow.
//! Offsets are committed only after every sink has acknowledged the rows read before them
//! (see [`crate::commit`]); a restarted job resumes from its committed offsets.
//!
//! ```sql
//! CREATE STREAM big_orders AS SELECT _key, amount FROM orders WHERE amount > 100 INTO out
//! WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = 'localhost:9092',
//!       'orders.topic' = 'orders', 'orders.value.format' = 'json',
//!       'orders.schema' = 'id BIGINT, amount DOUBLE', 'orders.auto.offset.reset' = 'earliest',
//!       'orders.failure_strategy' = 'SendToDLQ', 'orders.dlq.topic' = 'orders-dlq', …);
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::config::{client_settings, create_client, create_client_with};
use super::decode::{fixed_value_schema, metadata_fields, BadMessage, MessageBatch, ValueDecoder, ValueFormat};
use super::group::{parse_position_key, GroupContext, GroupMember, GroupShared, ReadPositions};
use super::replay::Verdict;
use crate::batching::BatchConfig;
use crate::checkpoint::{JobBarriers, Positions, ReplayTime, SourceCheckpoint};
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::format::schema::parse_schema;
use crate::metrics::ConnectorMetrics;
use crate::properties::Properties;
use crate::source::Source;

/// Malformed messages logged one by one per reader before only counting them.
const MAX_LOGGED_BAD: usize = 20;

/// A configured Kafka source.
#[derive(Debug)]
pub struct KafkaSource {
    shared: Arc<Shared>,
    readers: usize,
}

#[derive(Debug)]
struct Shared {
    name: String,
    schema: SchemaRef,
    value_fields: usize,
    format: ValueFormat,
    settings: Vec<(String, String)>,
    props: Properties,
    topics: Vec<String>,
    group: String,
    batch: BatchConfig,
    failure: FailureStrategy,
    dlq_topic: Option<String>,
    /// Where each reader has got, and the partitions being given away.
    positions: Arc<ReadPositions>,
    /// `commit.interval`.
    commit_interval: Duration,
    /// Positions restored from a checkpoint, where partitions start when assigned.
    restored: Mutex<HashMap<(String, i32), i64>>,
    /// The event-time column (`event_time`), to track each partition's event time, and
    /// whether its integers are epoch seconds.
    event_time: Option<(String, bool)>,
    /// `idle_timeout`: a partition silent this long no longer holds event time back.
    idle: Duration,
    avro: Option<Arc<crate::format::avro::AvroDecoder>>,
    metrics: Arc<ConnectorMetrics>,
    /// Readers (DataFusion partitions) of this process.
    readers: usize,
    /// This process's member of the consumer group, joined when the first reader starts.
    member: Mutex<Option<Arc<GroupMember>>>,
    /// A transactional Kafka sink of the job, on the same cluster, commits the group's offsets
    /// inside its transaction (`use_transactions`): the source's own commits are skipped.
    offsets_in_transaction: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// How long partitions that may come to this member hold event time back: a dead member
    /// keeps its partitions for `session.timeout.ms`; they come within twice that (30 s at
    /// least: a rebalance takes its time), or belong to another process by then.
    fn partition_hold(&self) -> Duration {
        let session = self.props.get("session.timeout.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(45_000);
        Duration::from_millis(session.saturating_mul(2)).max(Duration::from_secs(30))
    }

    /// The group member, joining the group on first use; it asks `barriers` for a barrier
    /// before giving partitions away.
    fn member(&self, barriers: Option<JobBarriers>) -> Result<Arc<GroupMember>> {
        let mut member = self.member.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = member.as_ref() {
            return Ok(Arc::clone(m));
        }
        let what = format!("kafka source '{}'", self.name);
        let mut settings = self.settings.clone();
        settings.push(("client.id".into(), format!("ferris-{}", self.name)));
        let start_at = std::mem::take(&mut *self.restored.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut group = GroupShared::new(&self.name, self.readers, Arc::clone(&self.positions), barriers, start_at, Arc::clone(&self.metrics));
        group.group_id = self.group.clone();
        if self.event_time.is_some() {
            group.hold = Some((self.topics.clone(), self.partition_hold()));
        }
        let group = Arc::new(group);
        let consumer: BaseConsumer<GroupContext> = create_client_with(&self.props, settings, &what, || GroupContext { shared: Arc::clone(&group) })?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| ConnectorError::Other(format!("{what}: cannot subscribe to {}: {e}", self.topics.join(","))))?;
        let m = Arc::new(GroupMember::start(consumer, group).map_err(|e| ConnectorError::Other(format!("{what}: cannot start its group thread: {e}")))?);
        *member = Some(Arc::clone(&m));
        Ok(m)
    }
}

impl KafkaSource {
    /// Configures the source `props` of job `job_name` (whose options are `job`), reading with
    /// up to `partitions` consumers. Connects only to infer a JSON schema that is not declared.
    pub fn try_new(props: &Properties, job: &Properties, partitions: usize, job_name: &str) -> Result<Self> {
        let name = props.owner().to_string();
        let topics: Vec<String> = match props.get_list("topics").or_else(|| props.get_list("topic")) {
            Some(list) => list.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            None => Vec::new(),
        };
        if topics.is_empty() {
            return Err(ConnectorError::MissingProperty { key: props.full_key("topic") });
        }
        props.require("bootstrap.servers")?;
        let format_key = if props.contains("value.format") { "value.format" } else { "format" };
        let format = ValueFormat::parse(props.get(format_key).unwrap_or("json"), &props.full_key(format_key))?;
        let group = props.get("group.id").map_or_else(|| format!("ferris-streams-{job_name}"), str::to_string);
        let mut settings = client_settings(props);
        super::config::check_secure_connection(props, &settings, &format!("kafka source '{name}'"))?;
        settings.retain(|(k, _)| k != "group.id" && k != "enable.auto.commit");
        settings.push(("group.id".into(), group.clone()));
        settings.push(("enable.auto.commit".into(), "false".into()));
        if !settings.iter().any(|(k, _)| k == "auto.offset.reset") {
            settings.push(("auto.offset.reset".into(), "earliest".into()));
        }
        // librdkafka prefetches up to 64 MiB per consumer by default; a job that reads only
        // when its sinks keep up (back-pressure) needs far less buffered ahead. With a small
        // queue the fetcher pauses whenever the queue is full, by default for a whole second
        // (`fetch.queue.backoff.ms`), which starves the job: 5 ms keeps it fed. Measured with
        // `kafka-bench` on tansu: 2 MiB + 5 ms gave ~200K records/s at 84-90 MiB peak RSS;
        // 8 MiB + 1 s gave ~120K records/s at 102-115 MiB.
        // One member per process: a rebalance only happens when another process of the job
        // comes or goes, and cooperative assignment moves only the partitions that change hands.
        for (key, value) in [("queued.max.messages.kbytes", "2048"), ("fetch.queue.backoff.ms", "5"), ("partition.assignment.strategy", "cooperative-sticky")] {
            if !settings.iter().any(|(k, _)| k == key) {
                settings.push((key.into(), value.into()));
            }
        }
        let failure = FailureStrategy::from_properties(props, FailureStrategy::from_properties(job, FailureStrategy::default())?)?;
        let dlq_topic = props.get("dlq.topic").or_else(|| job.get("dlq.topic")).map(str::to_string);
        if failure == FailureStrategy::SendToDlq && dlq_topic.is_none() {
            return Err(ConnectorError::invalid(props.full_key("failure_strategy"), "SendToDLQ needs a dead-letter topic: set 'dlq.topic'"));
        }
        let mut batch = BatchConfig::resolve(props, job)?;
        if let (Some(n), None) = (props.get_usize("max.poll.records")?, props.get("batch.size")) {
            batch.size = n.max(1);
        }
        let declared = props.get("schema").or_else(|| props.get("value.schema"));
        let registry = crate::format::registry::SchemaRegistry::from_properties(props)?;
        if registry.is_some() && format != ValueFormat::Avro {
            tracing::warn!(source = %name, "key '{}' does nothing: the schema registry is used for Avro values only", props.full_key("schema.registry.url"));
        }
        let avro = match (format, registry) {
            (ValueFormat::Avro, Some(reg)) => {
                // the reader schema: the configured one, or the subject's newest version
                let local = crate::format::avro::schema_text(props)?;
                let subject = crate::format::registry::SchemaRegistry::subject(props, &topics[0], local.as_deref())?;
                let (reader, id) = match local {
                    Some(text) => (text, None),
                    None => {
                        let latest = reg
                            .latest(&subject)
                            .map_err(|e| ConnectorError::Other(format!("kafka source '{name}': the reader schema of subject '{subject}': {e}")))?;
                        (latest.schema, Some(latest.id))
                    }
                };
                Some(Arc::new(crate::format::avro::AvroDecoder::with_registry(
                    Arc::new(reg),
                    &reader,
                    id,
                    batch.size.min(1 << 16),
                    &props.full_key("schema.registry.url"),
                )?))
            }
            (ValueFormat::Avro, None) => {
                let text = crate::format::avro::schema_text(props)?.ok_or_else(|| ConnectorError::MissingProperty { key: props.full_key("avro.schema") })?;
                let key = props.full_key(if props.contains("avro.schema") { "avro.schema" } else { "avro.schema.file" });
                Some(Arc::new(crate::format::avro::AvroDecoder::try_new(
                    &text,
                    crate::format::avro::AvroDecoder::framing(props)?,
                    batch.size.min(1 << 16),
                    &key,
                )?))
            }
            _ => None,
        };
        // Inferring a schema asks the broker for the topics' partitions too.
        let (value_schema, known_partitions) = match (&avro, declared, fixed_value_schema(format)) {
            (Some(a), _, _) => (a.schema(), None),
            (None, Some(text), _) => (parse_schema(text, &props.full_key(if props.contains("schema") { "schema" } else { "value.schema" }))?, None),
            (None, None, Some(s)) => (s, None),
            (None, None, None) => {
                let (schema, partitions) = infer_json_schema(props, &settings, &topics)?;
                (schema, Some(partitions))
            }
        };
        let mut fields: Vec<Field> = value_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(metadata_fields(&value_schema));
        let interval = props.get_positive_duration("commit.interval")?.unwrap_or(Duration::from_secs(1));
        let readers = match props.get_usize("consumers")? {
            Some(n) => n.max(1),
            // No more consumers than the topics have partitions (an idle one would only hold
            // the watermark back); when the broker cannot be asked now, the job's parallelism.
            None => known_partitions.or_else(|| partition_count(props, &settings, &topics)).map_or(partitions, |n| n.min(partitions)).max(1),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                schema: Arc::new(Schema::new(fields)),
                value_fields: value_schema.fields().len(),
                format,
                settings,
                props: props.clone(),
                topics,
                group,
                batch,
                failure,
                dlq_topic,
                positions: Arc::new(ReadPositions::new(readers)),
                commit_interval: interval,
                restored: Mutex::new(HashMap::new()),
                event_time: props
                    .get("event_time")
                    .map(|c| (c.to_string(), props.get("event_time.format").is_some_and(|f| f.eq_ignore_ascii_case("epoch_seconds")))),
                idle: props.get_duration("idle_timeout")?.unwrap_or(Duration::from_secs(5)),
                avro,
                metrics: Arc::new(ConnectorMetrics::default()),
                readers,
                member: Mutex::new(None),
                offsets_in_transaction: Default::default(),
            }),
            readers,
        })
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let schema = match projection {
            Some(p) => Arc::new(self.shared.schema.project(p).unwrap_or_else(|_| self.shared.schema.as_ref().clone())),
            None => Arc::clone(&self.shared.schema),
        };
        (0..self.readers)
            .map(|index| {
                Arc::new(KafkaPartition { shared: Arc::clone(&self.shared), index, projection: projection.map(<[usize]>::to_vec), schema: Arc::clone(&schema) })
                    as Arc<dyn PartitionStream>
            })
            .collect()
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.shared.metrics)
    }

    fn describe(&self) -> String {
        format!(
            "kafka topic{} {} (group {}, one member, {} reader{}, {:?} values)",
            if self.shared.topics.len() == 1 { "" } else { "s" },
            self.shared.topics.join(","),
            self.shared.group,
            self.readers,
            if self.readers == 1 { "" } else { "s" },
            self.shared.format
        )
    }

    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        Some(Arc::new(KafkaCheckpoint { shared: Arc::clone(&self.shared) }))
    }

    fn frontier(&self, partition: usize) -> Option<crate::source::Frontier> {
        self.shared.event_time.as_ref()?;
        self.shared.positions.frontier(partition, self.shared.idle)
    }
}

/// One consumer of the group, as a DataFusion partition.
#[derive(Debug)]
struct KafkaPartition {
    shared: Arc<Shared>,
    /// Which reader of the process it is.
    index: usize,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl PartitionStream for KafkaPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let barriers = ctx.session_config().get_extension::<JobBarriers>().map(|b| b.as_ref().clone());
        let reader = Reader::try_new(Arc::clone(&self.shared), self.index, barriers, self.projection.as_deref());
        let stream = futures::stream::unfold(Some(reader), |state| async move {
            let mut reader = match state? {
                Ok(r) => r,
                Err(e) => return Some((Err(DataFusionError::External(Box::new(e))), None)),
            };
            match reader.next_batch().await {
                Ok(batch) => Some((Ok(batch), Some(Ok(reader)))),
                // Dropping the reader takes it out of the commit barriers.
                Err(e) => Some((Err(DataFusionError::External(Box::new(e))), None)),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

/// The source's positions for checkpoints: per reader, `topic/partition` → next offset.
#[derive(Debug)]
pub(super) struct KafkaCheckpoint {
    shared: Arc<Shared>,
}

/// How long a stopping job waits for its last offset commit.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(10);

impl SourceCheckpoint for KafkaCheckpoint {
    fn positions(&self, partition: usize) -> Positions {
        self.shared.positions.of_reader(partition)
    }

    fn restore(&self, positions: &Positions) -> Result<()> {
        let positions = &self.shared.positions.restore_logs(positions);
        let mut restored = self.shared.restored.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, v) in positions {
            match (parse_position_key(k), v.as_i64()) {
                (Some(tp), Some(o)) => {
                    restored.insert(tp, o);
                }
                _ => {
                    return Err(ConnectorError::Other(format!(
                        "kafka source '{}': the checkpoint holds a position '{k}' = {v} that is not a topic/partition offset",
                        self.shared.name
                    )))
                }
            }
        }
        self.shared.positions.await_partitions(restored.keys().cloned(), self.shared.partition_hold());
        self.shared.positions.carry(restored.iter().map(|(k, o)| (k.clone(), *o)));
        Ok(())
    }

    fn commit_interval(&self) -> Option<Duration> {
        Some(self.shared.commit_interval)
    }

    fn commit(&self, positions: &Positions, last: bool) {
        self.commit_at(positions, last, None);
    }

    fn commit_replayable(&self, positions: &Positions, last: bool, replay: ReplayTime) {
        let replay = self.shared.positions.replaying().then_some(replay);
        self.commit_at(positions, last, replay);
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl KafkaCheckpoint {
    /// The consumer group's id (`group.id`).
    pub(super) fn group(&self) -> &str {
        &self.shared.group
    }

    /// The source's settings (`bootstrap.servers`, `security.protocol`, …).
    pub(super) fn props(&self) -> &Properties {
        &self.shared.props
    }

    /// From now on a transactional sink commits this source's offsets inside its transaction
    /// (see [`KafkaCheckpoint::owned_offsets`]); the source commits none itself.
    pub(super) fn leave_commits_to_transaction(&self) {
        self.shared.offsets_in_transaction.store(true, std::sync::atomic::Ordering::Release);
    }

    /// `positions` (a checkpoint's) as a commit of the group's offsets, of the partitions
    /// this member owns now: after a lost session (a broker outage longer than
    /// `session.timeout.ms`) the assignment is revoked, and committing for a partition it no
    /// longer has fails with "unknown member" and sets the group rejoin back, again at every
    /// checkpoint, so the member never got its partitions back; a partition handed to another
    /// process is that process's to commit. With `replay` (a job that rebuilds its windows by
    /// reading rows again), each at its replay point, the metadata naming the rows to skip
    /// (see [`super::replay`]). `None` before the member has joined.
    pub(super) fn owned_offsets(&self, positions: &Positions, replay: Option<ReplayTime>) -> Option<(Arc<BaseConsumer<GroupContext>>, TopicPartitionList)> {
        let name = &self.shared.name;
        // (a job that replays its windows is at least once: its offsets never go into a
        // transaction, where they would be committed without the replay points)
        debug_assert!(replay.is_some() || !self.shared.positions.replaying() || !self.shared.offsets_in_transaction.load(std::sync::atomic::Ordering::Acquire));
        let member = self.shared.member.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|m| (m.consumer(), Arc::clone(&m.shared)));
        let (consumer, group) = member.and_then(|(c, g)| Some((c.upgrade()?, g)))?;
        let owned = match consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                warn!(source = %name, "offset commit skipped: cannot read the assignment: {e}");
                return None;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for (k, v) in positions {
            let (Some((t, p)), Some(o)) = (parse_position_key(k), v.as_i64()) else { continue };
            if owned.find_partition(&t, p).is_none() {
                debug!(source = %name, "not committing {t}/{p}@{o}: the partition is no longer assigned to this process");
                continue;
            }
            if let Some(r) = replay {
                group.add_replay_commit(&mut tpl, &(t, p), o, r);
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(&t, p, Offset::Offset(o)) {
                warn!(source = %name, "cannot commit {t}/{p}@{o}: {e}");
            }
        }
        Some((consumer, tpl))
    }

    /// Commits `positions` of the partitions this member owns (see
    /// [`KafkaCheckpoint::owned_offsets`]), unless a transactional sink commits them.
    fn commit_at(&self, positions: &Positions, last: bool, replay: Option<ReplayTime>) {
        if self.shared.offsets_in_transaction.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let name = self.shared.name.clone();
        let Some((consumer, tpl)) = self.owned_offsets(positions, replay) else { return };
        if tpl.count() == 0 {
            return;
        }
        if !last {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(source = %name, "offset commit failed (rows will be read again after a restart): {e}");
            }
            return;
        }
        // A synchronous commit has no timeout in librdkafka: wait for it on a thread of its
        // own, a bounded time, so that a broker that is away cannot keep a job from stopping.
        let count = tpl.count();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("ferris-commit".into()).spawn(move || {
            let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
        });
        let outcome = match spawned {
            Ok(_) => rx.recv_timeout(FINAL_COMMIT_WAIT).map_err(|_| format!("no answer within {}s", FINAL_COMMIT_WAIT.as_secs())),
            Err(e) => Err(format!("cannot start the commit thread: {e}")),
        };
        match outcome {
            Ok(Ok(())) => debug!(source = %name, "committed {count} offsets"),
            Ok(Err(e)) => warn!(source = %name, "offset commit failed (rows will be read again after a restart): {e}"),
            Err(e) => warn!(source = %name, "last offset commit not confirmed ({e}): rows may be read again after a restart"),
        }
    }
}

/// A partition of a batch: the first offset and the latest event time of its rows that go on.
type PartitionLatest = ((String, i32), i64, i64);

/// How often a reader looks whether a partition taken over from another process may be read.
const TAKEN_CHECK: Duration = Duration::from_millis(50);

/// Messages taken from one partition queue before the next queue's turn.
const PER_QUEUE_TURN: usize = 256;

struct Reader {
    shared: Arc<Shared>,
    member: Arc<GroupMember>,
    /// Which reader of the process it is: the member's slot (partition queues) it reads, and
    /// its position cell.
    slot: usize,
    decoder: ValueDecoder,
    sizer: crate::batching::BatchSizer,
    headers: bool,
    dlq: Option<FutureProducer>,
    /// When the last batch was handed out, and its rows.
    last_emit: Option<(Instant, usize)>,
    logged: usize,
    /// The revocation count this reader has applied.
    seen_revocations: u64,
    /// The job's barriers: how far its windows are emitted, for partitions taken over.
    barriers: Option<JobBarriers>,
}

impl Reader {
    fn try_new(shared: Arc<Shared>, index: usize, barriers: Option<JobBarriers>, projection: Option<&[usize]>) -> Result<Self> {
        let mut decoder = ValueDecoder::try_new(shared.format, &shared.schema, shared.value_fields, projection, shared.batch.size.min(1 << 16))?;
        if let Some(a) = &shared.avro {
            decoder = decoder.with_avro(Arc::clone(a))?;
        }
        // a job whose windows are rebuilt by reading rows again keeps each partition's log
        // (which needs the partitions' event time)
        if shared.event_time.is_some() && barriers.as_ref().is_some_and(|b| b.0.replays(&shared.name)) {
            shared.positions.set_replaying();
        }
        let member = shared.member(barriers.clone())?;
        let slot = index % member.shared.slots.len();
        let dlq = match &shared.dlq_topic {
            Some(_) if shared.failure == FailureStrategy::SendToDlq => {
                let producer_settings: Vec<(String, String)> = shared
                    .settings
                    .iter()
                    .filter(|(k, _)| k == "bootstrap.servers" || k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl."))
                    .cloned()
                    .collect();
                Some(create_client::<FutureProducer>(&shared.props, producer_settings, &format!("dead-letter producer of '{}'", shared.name))?)
            }
            _ => None,
        };
        Ok(Self {
            headers: decoder.wants_headers(),
            sizer: shared.batch.sizer(),
            seen_revocations: shared.positions.revocations(),
            shared,
            member,
            slot,
            decoder,
            dlq,
            last_emit: None,
            logged: 0,
            barriers,
        })
    }

    /// The next non-empty batch. Waits (forever, on a quiet topic) for messages.
    async fn next_batch(&mut self) -> Result<RecordBatch> {
        loop {
            if let Some((at, rows)) = self.last_emit.take() {
                self.sizer.observe(rows, at.elapsed());
            }
            let msgs = self.collect().await;
            let (batch, bad) = self.decoder.decode(&msgs)?;
            if !bad.is_empty() {
                self.handle_bad(&msgs, &bad).await?;
            }
            // a hand-over rebuilding the job's windows holds every reader until the partitions
            // it keeps are sought back (see `super::replay`)
            self.shared.positions.wait_unpaused().await;
            let times = self.shared.event_time.as_ref().and_then(|(c, seconds)| batch.column_by_name(c).and_then(|c| event_millis(c, *seconds)));
            let verdicts = self.screen(&msgs, &bad, times.as_ref());
            let positions = next_offsets(&msgs, verdicts.as_deref());
            // logged before its position is recorded: a checkpoint never holds a position whose
            // rows its replay log misses
            self.log_replay(&msgs, &bad, verdicts.as_deref(), times.as_ref());
            // recorded before the batch is handed out: a barrier taken after it sees it
            let dropped = self.shared.positions.record(self.slot, positions);
            // A rebalance while this batch waited: rows of partitions given away are their new
            // owner's to read (their positions were not recorded).
            let batch = self.admit(batch, &msgs, &bad, &dropped, verdicts.as_deref(), times.as_ref())?;
            if batch.num_rows() == 0 {
                // every message was bad, revoked or skipped: nothing in flight; let a barrier by
                tokio::task::yield_now().await;
                continue;
            }
            self.shared.metrics.add_batch(batch.num_rows());
            self.shared.metrics.bytes.fetch_add(msgs.bytes() as u64, std::sync::atomic::Ordering::Relaxed);
            self.last_emit = Some((Instant::now(), batch.num_rows()));
            return Ok(batch);
        }
    }

    /// What to do with each message of `msgs` when partitions are being replayed (see
    /// [`super::replay`]); `None` when none is.
    fn screen(&self, msgs: &MessageBatch, bad: &[BadMessage], times: Option<&arrow::array::Int64Array>) -> Option<Vec<Verdict>> {
        use arrow::array::Array;
        let mut replays = self.shared.positions.replays();
        if !replays.screening() {
            return None;
        }
        let mut row = 0usize;
        let mut out = Vec::with_capacity(msgs.len());
        for i in 0..msgs.len() {
            let t = if bad.iter().any(|b| b.index == i) {
                None
            } else {
                let t = times.and_then(|a| (!a.is_null(row)).then(|| a.value(row)));
                row += 1;
                t
            };
            out.push(replays.screen(&(msgs.topic(i).to_string(), msgs.partitions[i]), msgs.offsets[i], t));
        }
        Some(out)
    }

    /// In a job that replays: logs, per partition, the first offset and the latest event time of
    /// the rows of `msgs` that go on (see [`super::replay`]).
    fn log_replay(&self, msgs: &MessageBatch, bad: &[BadMessage], verdicts: Option<&[Verdict]>, times: Option<&arrow::array::Int64Array>) {
        use arrow::array::Array;
        if !self.shared.positions.replaying() {
            return;
        }
        let Some(times) = times else { return };
        let mut entries: Vec<PartitionLatest> = Vec::new();
        let mut row = 0usize;
        for i in 0..msgs.len() {
            if bad.iter().any(|b| b.index == i) {
                continue;
            }
            let r = row;
            row += 1;
            if verdicts.is_some_and(|v| v[i] != Verdict::Keep) || times.is_null(r) {
                continue;
            }
            let (t, p, o, time) = (msgs.topic(i), msgs.partitions[i], msgs.offsets[i], times.value(r));
            match entries.iter_mut().find(|(k, _, _)| k.1 == p && k.0 == t) {
                Some((_, first, latest)) => {
                    *first = (*first).min(o);
                    *latest = (*latest).max(time);
                }
                None => entries.push(((t.to_string(), p), o, time)),
            }
        }
        // (not the partitions just given away: their log is forgotten)
        entries.retain(|(k, _, _)| !self.shared.positions.is_revoked(&k.0, k.1));
        let mut replays = self.shared.positions.replays();
        for (k, first, latest) in entries {
            replays.log(k, first, latest);
        }
    }

    /// `batch` (the good messages of `msgs`) less the rows of the partitions `dropped` and the
    /// messages `verdicts` drops; notes how far each partition's event time got (the source's
    /// frontier).
    fn admit(
        &self,
        batch: RecordBatch,
        msgs: &MessageBatch,
        bad: &[BadMessage],
        dropped: &[(String, i32)],
        verdicts: Option<&[Verdict]>,
        times: Option<&arrow::array::Int64Array>,
    ) -> Result<RecordBatch> {
        use arrow::array::Array;
        let filtering = !dropped.is_empty() || verdicts.is_some_and(|v| v.iter().any(|x| *x != Verdict::Keep));
        let tracking = self.shared.event_time.is_some();
        if !filtering && !tracking {
            return Ok(batch);
        }
        let mut keep: Vec<bool> = Vec::with_capacity(if filtering { batch.num_rows() } else { 0 });
        // per partition: the latest event time handed out
        let mut latest: Vec<((String, i32), Option<i64>)> = Vec::new();
        let mut row = 0usize;
        for i in 0..msgs.len() {
            let good = !bad.iter().any(|b| b.index == i);
            let (t, p) = (msgs.topic(i), msgs.partitions[i]);
            if dropped.iter().any(|(dt, dp)| *dp == p && dt == t) {
                if good {
                    keep.push(false);
                    row += 1;
                }
                continue;
            }
            let kept = good && verdicts.is_none_or(|v| v[i] == Verdict::Keep);
            let time = if kept { times.and_then(|a| (!a.is_null(row)).then(|| a.value(row))) } else { None };
            if good {
                if filtering {
                    keep.push(kept);
                }
                row += 1;
            }
            match latest.iter_mut().find(|(k, _)| k.1 == p && k.0 == t) {
                Some((_, m)) => {
                    *m = match (*m, time) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    }
                }
                None => latest.push(((t.to_string(), p), time)),
            }
        }
        if tracking {
            self.shared.positions.delivered(self.slot, latest);
        }
        if !filtering {
            return Ok(batch);
        }
        if keep.len() != batch.num_rows() {
            return Err(ConnectorError::Other(format!(
                "kafka source '{}': {} rows decoded from {} good messages",
                self.shared.name,
                batch.num_rows(),
                keep.len()
            )));
        }
        let keep = arrow::array::BooleanArray::from(keep);
        arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| ConnectorError::arrow(format!("kafka source '{}'", self.shared.name), e))
    }

    /// Takes what the reader's partition queues hold, a turn each, until `m` is full.
    fn drain(&self, m: &mut MessageBatch) -> usize {
        let slot = &self.member.shared.slots[self.slot];
        let mut got = 0;
        let positions = &self.shared.positions;
        // partitions taken over from another process wait (see `super::replay`)
        let waiting = positions.waiting_taken();
        {
            let mut strays = slot.strays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut kept = VecDeque::new();
            while let Some(msg) = strays.pop_front() {
                if waiting && positions.is_taken(msg.topic(), msg.partition()) {
                    kept.push_back(msg);
                    continue;
                }
                push(m, &msg, self.headers);
                got += 1;
            }
            *strays = kept;
        }
        let mut queues = slot.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // (no allocation unless a partition waits: this runs for every batch)
        let skip: Vec<bool> = if waiting { queues.iter().map(|q| positions.is_taken(&q.topic, q.partition)).collect() } else { Vec::new() };
        loop {
            let mut round = 0;
            for (_, q) in queues.iter_mut().enumerate().filter(|(i, _)| !skip.get(*i).copied().unwrap_or(false)) {
                let room = self.sizer.room(m.len()).min(PER_QUEUE_TURN);
                let mut failed = None;
                let (topic, partition) = (q.topic.as_str(), q.partition);
                q.queue.read(room, |msg| match msg.error() {
                    None => {
                        let headers = self.headers.then(|| msg.headers());
                        m.push(topic, partition, msg.offset(), msg.timestamp(), msg.key(), msg.payload(), headers);
                        round += 1;
                    }
                    Some(e) => {
                        failed.get_or_insert(e);
                    }
                });
                if let Some(e) = failed {
                    self.member.shared.quiet.failure(&format!("Kafka error on {topic}/{partition}: {e}"));
                }
                if self.sizer.is_full(m.len(), m.bytes()) {
                    return got + round;
                }
            }
            got += round;
            if round == 0 || self.sizer.is_full(m.len(), m.bytes()) {
                return got;
            }
        }
    }

    /// Waits for at least one message, then fills the batch until the strategy closes it.
    async fn collect(&mut self) -> MessageBatch {
        let mut m = MessageBatch::default();
        let mut deadline: Option<Instant> = None;
        let bell = Arc::clone(&self.member.shared.slots[self.slot].notify);
        loop {
            let revocations = self.shared.positions.revocations();
            if revocations != self.seen_revocations {
                let positions = Arc::clone(&self.shared.positions);
                m.retain_partitions(|t, p| !positions.is_revoked(t, p));
                self.seen_revocations = revocations;
            }
            if self.shared.positions.waiting_taken() {
                let emitted = self.barriers.as_ref().and_then(|b| b.0.emitted_before());
                if self.shared.positions.release_taken(emitted) > 0 {
                    for slot in &self.member.shared.slots {
                        slot.notify.notify_one();
                    }
                }
            }
            if self.drain(&mut m) > 0 {
                self.shared.metrics.set_status(crate::metrics::ConnectionStatus::Connected);
                if deadline.is_none() {
                    deadline = Some(Instant::now() + self.sizer.max_wait());
                }
            }
            if !m.is_empty() && (self.sizer.eager() || self.sizer.is_full(m.len(), m.bytes()) || deadline.is_some_and(|d| Instant::now() >= d)) {
                return m;
            }
            // while a partition taken over waits, look at the job's event time now and then
            let deadline = match (deadline, self.shared.positions.waiting_taken()) {
                (None, true) => Some(Instant::now() + TAKEN_CHECK),
                (d, _) => d,
            };
            match deadline {
                None => bell.notified().await,
                Some(d) => {
                    let _ = tokio::time::timeout(d.saturating_duration_since(Instant::now()), bell.notified()).await;
                }
            }
        }
    }

    /// Applies the failure strategy to malformed messages: count and log them, send them to
    /// the dead-letter topic, or fail.
    async fn handle_bad(&mut self, msgs: &MessageBatch, bad: &[BadMessage]) -> Result<()> {
        let name = &self.shared.name;
        self.shared.metrics.add_errors(bad.len() as u64);
        if self.shared.failure == FailureStrategy::FailBatch {
            let b = &bad[0];
            return Err(ConnectorError::Malformed { location: msgs.location(b.index), message: b.message.clone() });
        }
        for b in bad {
            if self.logged < MAX_LOGGED_BAD {
                warn!(source = %name, "{}: malformed message ({}): {}", msgs.location(b.index), self.shared.failure, b.message);
                self.logged += 1;
                if self.logged == MAX_LOGGED_BAD {
                    warn!(source = %name, "more malformed messages: counting them without logging each");
                }
            }
        }
        if let (Some(producer), Some(topic)) = (&self.dlq, &self.shared.dlq_topic) {
            let mut pending = Vec::with_capacity(bad.len());
            for b in bad {
                let i = b.index;
                let partition = msgs.partitions[i].to_string();
                let offset = msgs.offsets[i].to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "ferris.error", value: Some(b.message.as_str()) })
                    .insert(Header { key: "ferris.source", value: Some(name.as_str()) })
                    .insert(Header { key: "ferris.topic", value: Some(msgs.topic(i)) })
                    .insert(Header { key: "ferris.partition", value: Some(partition.as_str()) })
                    .insert(Header { key: "ferris.offset", value: Some(offset.as_str()) });
                let mut record = FutureRecord::to(topic).payload(msgs.value(i)).headers(headers);
                // (the key as it came, bytes and all)
                if let Some(k) = msgs.key(i) {
                    record = record.key(k);
                }
                pending.push((msgs.location(i), producer.send(record, Duration::from_secs(30))));
            }
            // Waited for before the batch goes on, so a commit never passes an undelivered one.
            for (loc, fut) in pending {
                if let Err((e, _)) = fut.await {
                    warn!(source = %name, "{loc}: could not write the malformed message to dead-letter topic '{topic}': {e}");
                }
            }
        }
        Ok(())
    }
}

/// An event-time column as epoch milliseconds, for the column types a Kafka source carries:
/// integers (milliseconds, or seconds), timestamps, dates, ISO-8601 text. `None` otherwise.
fn event_millis(column: &arrow::array::ArrayRef, seconds: bool) -> Option<arrow::array::Int64Array> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Int64Type, TimeUnit};
    let as_ms = |a: &arrow::array::ArrayRef| arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok();
    let ms: arrow::array::ArrayRef = match column.data_type() {
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
            let v = arrow::compute::cast(column, &DataType::Int64).ok()?;
            if seconds {
                let v = v.as_primitive::<Int64Type>().unary::<_, Int64Type>(|s| s.saturating_mul(1000));
                return Some(v);
            }
            return Some(v.as_primitive::<Int64Type>().clone());
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::LargeUtf8 => as_ms(column)?,
        _ => return None,
    };
    let v = arrow::compute::cast(&ms, &DataType::Int64).ok()?;
    (v.len() == column.len()).then(|| v.as_primitive::<Int64Type>().clone())
}

/// The next offset to read of each (topic, partition) of `msgs`, leaving out the messages
/// fetched before a seek back (`Stale`: read again later). A name is allocated per partition,
/// not per message, and consecutive messages of one partition (librdkafka hands them out so)
/// are one comparison each.
fn next_offsets(msgs: &MessageBatch, verdicts: Option<&[Verdict]>) -> Vec<((String, i32), i64)> {
    let mut by_id: Vec<((u16, i32), i64)> = Vec::new();
    let mut last: Option<usize> = None;
    for i in 0..msgs.len() {
        if verdicts.is_some_and(|v| v[i] == Verdict::Stale) {
            continue;
        }
        let key = (msgs.topic_ids[i], msgs.partitions[i]);
        let next = msgs.offsets[i] + 1;
        let at = match last.filter(|&l| by_id[l].0 == key) {
            Some(l) => l,
            None => match by_id.iter().position(|(k, _)| *k == key) {
                Some(l) => l,
                None => {
                    by_id.push((key, next));
                    by_id.len() - 1
                }
            },
        };
        by_id[at].1 = by_id[at].1.max(next);
        last = Some(at);
    }
    by_id.into_iter().map(|((t, p), o)| ((msgs.topics[t as usize].clone(), p), o)).collect()
}

fn push<M: Message>(m: &mut MessageBatch, msg: &M, headers: bool) {
    let hs = headers.then(|| {
        msg.headers().map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(|v| String::from_utf8_lossy(v).into_owned()))).collect()).unwrap_or_default()
    });
    m.push(msg.topic(), msg.partition(), msg.offset(), msg.timestamp().to_millis(), msg.key(), msg.payload(), hs);
}

/// Samples the topics from the beginning to infer the JSON schema of their values; also gives
/// how many partitions the topics have.
fn infer_json_schema(props: &Properties, settings: &[(String, String)], topics: &[String]) -> Result<(SchemaRef, usize)> {
    let name = props.owner();
    let sample = props.get_usize("schema.sample_size")?.unwrap_or(1000).max(1);
    let wait = props.get_duration("schema.inference.timeout")?.unwrap_or(Duration::from_secs(10));
    let consumer: BaseConsumer =
        create_client_with(props, probe_settings(settings), &format!("kafka source '{name}'"), || rdkafka::consumer::DefaultConsumerContext)?;
    let unreachable = |e: String| {
        ConnectorError::Other(format!(
            "kafka source '{name}': cannot infer the schema of {}: {e}; declare it with '{}' = 'id BIGINT, name VARCHAR, …'",
            topics.join(","),
            props.full_key("schema")
        ))
    };
    let metadata = consumer.fetch_metadata(None, wait).map_err(|e| unreachable(format!("the broker did not answer ({e})")))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if topics.iter().any(|want| topic_matches(want, t.name())) {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning).map_err(|e| unreachable(e.to_string()))?;
            }
        }
    }
    if tpl.count() == 0 {
        return Err(unreachable("no such topic".to_string()));
    }
    let partitions = tpl.count();
    consumer.assign(&tpl).map_err(|e| unreachable(e.to_string()))?;
    let start = Instant::now();
    let mut values: Vec<serde_json::Value> = Vec::new();
    let mut last_message = None::<Instant>;
    while values.len() < sample && start.elapsed() < wait && last_message.is_none_or(|t| t.elapsed() < Duration::from_millis(500)) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                last_message = Some(Instant::now());
                if let Some(v) = msg.payload().and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok()) {
                    if v.is_object() {
                        values.push(v);
                    }
                }
            }
            Some(Err(e)) => debug!(source = %name, "while sampling: {e}"),
            None => {}
        }
    }
    if values.is_empty() {
        return Err(unreachable(format!("no JSON object arrived within {}s", wait.as_secs())));
    }
    let inferred = arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(|e| ConnectorError::arrow(format!("kafka source '{name}': inferring the schema"), e))?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            if f.data_type() == &arrow::datatypes::DataType::Null {
                f.as_ref().clone().with_data_type(arrow::datatypes::DataType::Utf8)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    info!(source = %name, "inferred the schema of {} from {} messages", topics.join(","), values.len());
    Ok((Arc::new(Schema::new(fields)), partitions))
}

/// Client settings for a short-lived look at the topics, outside the job's consumer group.
fn probe_settings(settings: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = settings.iter().filter(|(k, _)| k != "group.id" && k != "auto.offset.reset").cloned().collect();
    out.push(("group.id".into(), format!("ferris-probe-{}", std::process::id())));
    out.push(("auto.offset.reset".into(), "earliest".into()));
    out
}

/// How many partitions the topics have, if the broker answers within a second.
fn partition_count(props: &Properties, settings: &[(String, String)], topics: &[String]) -> Option<usize> {
    // Not the job's group: a client of that group that never joins would stall its rebalance.
    let settings: Vec<(String, String)> = probe_settings(settings);
    let consumer: BaseConsumer =
        create_client_with(props, settings, &format!("kafka source '{}'", props.owner()), || rdkafka::consumer::DefaultConsumerContext).ok()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(1)).ok()?;
    let n: usize = metadata.topics().iter().filter(|t| topics.iter().any(|w| topic_matches(w, t.name()))).map(|t| t.partitions().len()).sum();
    (n > 0).then_some(n)
}

/// A topic name or, starting with `^`, a regular expression (librdkafka's convention).
fn topic_matches(want: &str, topic: &str) -> bool {
    if want.starts_with('^') {
        regex::Regex::new(want).is_ok_and(|r| r.is_match(topic))
    } else {
        want == topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offsets_are_per_partition_and_leave_out_stale_messages() {
        let mut m = MessageBatch::default();
        for (t, p, o) in [("a", 0, 10), ("a", 0, 11), ("b", 0, 5), ("a", 1, 7), ("a", 0, 12), ("b", 0, 6), ("a", 1, 8)] {
            m.push(t, p, o, None, None, Some(b"{}"), None);
        }
        let mut got = next_offsets(&m, None);
        got.sort();
        assert_eq!(got, [(("a".to_string(), 0), 13), (("a".to_string(), 1), 9), (("b".to_string(), 0), 7)]);
        // the last message of b/0 and a/1 were fetched before a seek back
        let v = [Verdict::Keep, Verdict::Keep, Verdict::Skip, Verdict::Keep, Verdict::Keep, Verdict::Stale, Verdict::Stale];
        let mut got = next_offsets(&m, Some(&v));
        got.sort();
        assert_eq!(got, [(("a".to_string(), 0), 13), (("a".to_string(), 1), 8), (("b".to_string(), 0), 6)]);
    }
}
