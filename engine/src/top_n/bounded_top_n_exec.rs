//! `BoundedTopNExec`: top-N per key over a bounded input (files, a finished query), in one
//! pass and without sorting. DataFusion numbers rows by sorting every row by key and order and
//! then counting; this operator numbers each batch's keys as groups (one integer key by a
//! table indexed by the key, others in DataFusion's hash table, as its aggregates do:
//! [`super::key_numbers`]), turns the `ORDER BY` values into comparable
//! integers a column at a time, and keeps, per group, the order keys and places of its best `N`
//! rows so far (16 bytes a row for one `ORDER BY` column, in a region of an array per group,
//! doubling up to `N` as its rows come). Rows that can no longer make any top N are let go: once
//! the batches held have over twice as many rows as are kept (and half as many again as the last
//! compaction left, or three times as many as are kept), the kept rows of the batches less than
//! half kept are filtered, batch by batch, into one (the others, mostly fresh rows, stay as they
//! are, not copied again). At the end of the input each held batch is filtered to its kept rows,
//! with their rank, in the order the batches came, and let go: the output is in no particular
//! order (the planner uses the operator only where nothing above relies on the order
//! DataFusion's sort would have given).
//!
//! Where DataFusion would hash-repartition the input by key first, the operator routes the
//! rows itself, by the same hash: a task per input partition hashes each batch's keys and
//! hands each partition's state the batch with the numbers of its rows. The batch is held as
//! it came, shared by the states (each counts its share of the bytes) — no column of any row
//! is copied before the rows kept are gathered.
//!
//! ```sql
//! -- Nexmark q19 over Parquet files: the ten highest bids of every auction
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
//! WHERE rank_number <= 10
//! -- BoundedTopNExec: partition_by=[auction], order_by=[price DESC], n=10, routed by hash([auction]) into 2
//! ```
//!
//! Used when `N` is at most [`MAX_LIMIT`] and Arrow's row format takes the `ORDER BY`'s types
//! (otherwise DataFusion's sort runs): one or two columns of integers, floats or times are
//! compared as integers, anything else (text, as JSON's inferred times are, decimals, three
//! columns or more) as row-format bytes ([`super::order_keys`]). Rows that tie on the
//! `ORDER BY` are numbered in the order they arrive, as a stable sort would number them.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array, UInt64Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{concat_batches, BatchCoalescer};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::{FutureExt, StreamExt};

use super::key_numbers::KeyNumbers;
use super::order_keys::{order_kind, picked, BytesKey, NumberKey, OrderKey, OrderKind, MAX_BATCHES};

/// The largest `N` this operator keeps per key (a flat array of `N` slots per key).
pub const MAX_LIMIT: usize = 100;

/// What it computes.
#[derive(Debug, Clone)]
pub struct BoundedTopNConfig {
    /// `PARTITION BY`, over the input's columns.
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// `ORDER BY`, over the input's columns: of types Arrow's row format takes.
    pub order_by: Vec<PhysicalSortExpr>,
    /// Rows kept per key, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// The rank column (`ROW_NUMBER`'s), appended to the input's columns.
    pub rank_field: Arc<Field>,
    /// Which of input + rank columns go out (the filter's projection).
    pub projection: Option<Vec<usize>>,
}

/// The plan node. See the module documentation.
#[derive(Debug)]
pub struct BoundedTopNExec {
    input: Arc<dyn ExecutionPlan>,
    config: BoundedTopNConfig,
    /// Routed: the input's rows go to the partitions by the hash of these expressions, as
    /// DataFusion's `RepartitionExec` would route them, without copying them.
    route: Option<Vec<Arc<dyn PhysicalExpr>>>,
    /// The routing of the run under way: made by the first partition executed, let go when
    /// every partition has taken its part.
    routing: std::sync::Mutex<Routing>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// One run's routing, while its partitions are executed.
#[derive(Debug, Default)]
struct Routing {
    router: Option<Arc<Router>>,
    /// The partitions that have taken their state out of `router`.
    taken: Vec<bool>,
}

/// The states of a routed run, one per output partition, and the tasks that read the input
/// partitions into them.
struct Router {
    states: Arc<Vec<Inbox>>,
    /// Every input partition read into the states (or the first error).
    read: futures::future::Shared<futures::future::BoxFuture<'static, std::result::Result<(), Arc<DataFusionError>>>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("partitions", &self.states.len()).finish_non_exhaustive()
    }
}

/// One output partition's state while the input is read, and its memory.
struct Intake {
    state: Box<dyn TopNState>,
    memory: crate::memory::StateMemory,
}

/// One output partition's state while the input is read, and the rows handed to it not yet
/// pushed into it. Whichever input task finds the state free pushes what is queued; a task
/// that finds it busy queues its rows and goes on reading, so that no task waits for another.
struct Inbox {
    queue: std::sync::Mutex<std::collections::VecDeque<(RecordBatch, Option<UInt32Array>)>>,
    intake: std::sync::Mutex<Option<Intake>>,
}

fn poisoned<T>(_: T) -> DataFusionError {
    DataFusionError::Internal("BoundedTopNExec: an input task panicked while it held a state".into())
}

impl Inbox {
    fn new(intake: Intake) -> Self {
        Self { queue: Default::default(), intake: std::sync::Mutex::new(Some(intake)) }
    }

    /// Hands the state `batch`'s rows `rows` (or all): pushed now with any queued before, or,
    /// if another task is pushing, queued for it.
    fn hand(&self, batch: RecordBatch, rows: Option<UInt32Array>) -> Result<()> {
        self.queue.lock().map_err(poisoned)?.push_back((batch, rows));
        loop {
            let mut guard = match self.intake.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
                Err(std::sync::TryLockError::Poisoned(e)) => return Err(poisoned(e)),
            };
            let Some(intake) = guard.as_mut() else { return internal_err!("BoundedTopNExec: a state was taken before the input was read") };
            Self::push_queued(&self.queue, intake)?;
            drop(guard);
            // rows queued by a task that found the state busy after the last was taken: push
            // them too, unless another task holds the state now
            if self.queue.lock().map_err(poisoned)?.is_empty() {
                return Ok(());
            }
        }
    }

    fn push_queued(queue: &std::sync::Mutex<std::collections::VecDeque<(RecordBatch, Option<UInt32Array>)>>, intake: &mut Intake) -> Result<()> {
        loop {
            let next = queue.lock().map_err(poisoned)?.pop_front();
            let Some((batch, rows)) = next else { return Ok(()) };
            intake.state.push(&batch, rows.as_ref())?;
            intake.memory.account(intake.state.bytes())?;
        }
    }

    /// The state, once every input task is done, with every row queued pushed.
    fn take(&self) -> Result<Option<Intake>> {
        let Some(mut intake) = self.intake.lock().map_err(poisoned)?.take() else { return Ok(None) };
        Self::push_queued(&self.queue, &mut intake)?;
        Ok(Some(intake))
    }
}

impl BoundedTopNExec {
    /// True when the operator can compute a top `limit` ordered by `order_by` over `schema`.
    pub fn supports(order_by: &[PhysicalSortExpr], schema: &Schema, limit: usize) -> bool {
        (1..=MAX_LIMIT).contains(&limit) && order_kind(order_by, schema).is_some()
    }

    /// The top `config.limit` rows of each key of `input`, partition by partition (the input
    /// holds each key in one partition). `output`: the schema and partitioning of what it
    /// replaces (names as the query gave them, partitioning over the output's columns); else
    /// the input's columns and the rank, partitioned as the input.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, config: BoundedTopNConfig, output: Option<(SchemaRef, Partitioning)>) -> Result<Self> {
        Self::build(input, config, None, output)
    }

    /// The same over an input whose partitions hold any keys: each output partition (of
    /// `output`'s partitioning, hashed by `route`) takes the rows DataFusion's hash
    /// repartitioning by `route` would give it, and keeps them in the input's batches, shared
    /// between the partitions rather than copied out for each.
    ///
    /// ```sql
    /// -- RepartitionExec: partitioning=Hash([auction@0], 2) ← DataSourceExec (2 partitions)
    /// -- becomes BoundedTopNExec: …, routed by hash([auction@0]) into 2 ← DataSourceExec
    /// ```
    pub fn routed(
        input: Arc<dyn ExecutionPlan>,
        config: BoundedTopNConfig,
        route: Vec<Arc<dyn PhysicalExpr>>,
        output: (SchemaRef, Partitioning),
    ) -> Result<Self> {
        if route.is_empty() || output.1.partition_count() < 2 {
            return internal_err!("BoundedTopNExec routes rows by some expressions to at least two partitions");
        }
        Self::build(input, config, Some(route), Some(output))
    }

    fn build(
        input: Arc<dyn ExecutionPlan>,
        config: BoundedTopNConfig,
        route: Option<Vec<Arc<dyn PhysicalExpr>>>,
        output: Option<(SchemaRef, Partitioning)>,
    ) -> Result<Self> {
        let in_schema = input.schema();
        if !Self::supports(&config.order_by, &in_schema, config.limit) {
            return internal_err!("BoundedTopNExec cannot order by {:?} keeping {}", config.order_by, config.limit);
        }
        let mut fields: Vec<Arc<Field>> = in_schema.fields().iter().cloned().collect();
        fields.push(Arc::clone(&config.rank_field));
        let fields: Vec<Arc<Field>> = match &config.projection {
            Some(p) => p.iter().filter_map(|&i| fields.get(i).cloned()).collect(),
            None => fields,
        };
        let (schema, partitioning) = match output {
            Some((schema, partitioning)) => {
                let same = schema.fields().len() == fields.len() && schema.fields().iter().zip(&fields).all(|(a, b)| a.data_type() == b.data_type());
                if !same {
                    return internal_err!("BoundedTopNExec: the output {schema:?} is not of the columns it computes");
                }
                (schema, partitioning)
            }
            None => (Arc::new(Schema::new_with_metadata(fields, in_schema.metadata().clone())), input.output_partitioning().clone()),
        };
        let props = PlanProperties::new(EquivalenceProperties::new(Arc::clone(&schema)), partitioning, EmissionType::Final, Boundedness::Bounded);
        Ok(Self { input, config, route, routing: Default::default(), schema, props: Arc::new(props), metrics: ExecutionPlanMetricsSet::new() })
    }

    /// What it computes.
    pub fn config(&self) -> &BoundedTopNConfig {
        &self.config
    }

    /// The expressions it routes its input's rows by, when it routes them itself.
    pub fn route(&self) -> Option<&[Arc<dyn PhysicalExpr>]> {
        self.route.as_deref()
    }

    /// The router of the run `partition` belongs to (a new run when `partition` was taken in
    /// the one under way), and the states it reads the input into.
    fn router(&self, partition: usize, context: &Arc<TaskContext>, route: &[Arc<dyn PhysicalExpr>]) -> Result<Arc<Router>> {
        let partitions = self.props.output_partitioning().partition_count();
        let mut routing = self.routing.lock().map_err(|_| DataFusionError::Internal("BoundedTopNExec: a partition panicked while routing".into()))?;
        if routing.router.is_none() || routing.taken.get(partition).copied().unwrap_or(true) {
            routing.router = Some(Arc::new(self.start_routing(context, route, partitions)?));
            routing.taken = vec![false; partitions];
        }
        let Some(router) = routing.router.clone() else { return internal_err!("BoundedTopNExec: no router") };
        if let Some(t) = routing.taken.get_mut(partition) {
            *t = true;
        }
        if routing.taken.iter().all(|t| *t) {
            *routing = Routing::default();
        }
        Ok(router)
    }

    /// The states and the reading of every input partition into them: each input partition is
    /// read by a task of its own (started when the first output partition waits for them),
    /// which hashes each batch's `route` values and hands each state its rows (see
    /// [`Inbox`]), its own partition's state first.
    fn start_routing(&self, context: &Arc<TaskContext>, route: &[Arc<dyn PhysicalExpr>], partitions: usize) -> Result<Router> {
        let in_schema = self.input.schema();
        let mut states = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            states.push(Inbox::new(Intake { state: new_state(&in_schema, self.config.clone())?, memory: state_memory(context) }));
        }
        let states = Arc::new(states);
        let inputs: Vec<SendableRecordBatchStream> =
            (0..self.input.output_partitioning().partition_count()).map(|i| self.input.execute(i, Arc::clone(context))).collect::<Result<_>>()?;
        let (route, to) = (route.to_vec(), Arc::clone(&states));
        let read = async move {
            let tasks: Vec<_> =
                inputs.into_iter().enumerate().map(|(i, input)| SpawnedTask::spawn(route_input(input, i, route.clone(), Arc::clone(&to)))).collect();
            futures::future::try_join_all(tasks.into_iter().map(|t| async move { t.join().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))? }))
                .await
                .map(|_| ())
                .map_err(Arc::new)
        };
        Ok(Router { states, read: read.boxed().shared() })
    }
}

/// Reads input partition `i` into the states: each batch's rows to the state their hash of
/// `route` picks (as DataFusion's hash repartitioning picks a partition), the state of
/// partition `i` first, the others in turn.
async fn route_input(mut input: SendableRecordBatchStream, i: usize, route: Vec<Arc<dyn PhysicalExpr>>, states: Arc<Vec<Inbox>>) -> Result<()> {
    let partitions = states.len();
    let mut hashes: Vec<u64> = Vec::new();
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let values: Vec<ArrayRef> = route.iter().map(|e| e.evaluate(&batch)?.into_array(batch.num_rows())).collect::<Result<_>>()?;
        hashes.clear();
        hashes.resize(batch.num_rows(), 0);
        create_hashes(&values, REPARTITION_RANDOM_STATE.random_state(), &mut hashes)?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::with_capacity(batch.num_rows() / partitions + 64); partitions];
        for (row, h) in hashes.iter().enumerate() {
            rows[(h % partitions as u64) as usize].push(row as u32);
        }
        for k in 0..partitions {
            let p = (i + k) % partitions;
            let part = std::mem::take(&mut rows[p]);
            if part.is_empty() {
                continue;
            }
            let part = (part.len() < batch.num_rows()).then(|| UInt32Array::from(part));
            states[p].hand(batch.clone(), part)?;
        }
    }
    Ok(())
}

impl DisplayAs for BoundedTopNExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.config.partition_by.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.config.order_by.iter().map(|e| e.to_string()).collect();
        write!(f, "BoundedTopNExec: partition_by=[{}], order_by=[{}], n={}", keys.join(", "), order.join(", "), self.config.limit)?;
        if let Some(route) = &self.route {
            let by: Vec<String> = route.iter().map(|e| e.to_string()).collect();
            write!(f, ", routed by hash([{}]) into {}", by.join(", "), self.props.output_partitioning().partition_count())?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BoundedTopNExec {
    fn name(&self) -> &str {
        "BoundedTopNExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        super::visit_keys_and_order(&self.config.partition_by, &self.config.order_by, f)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("BoundedTopNExec takes one input");
        }
        let output = (Arc::clone(&self.schema), self.props.output_partitioning().clone());
        Ok(Arc::new(Self::build(children.swap_remove(0), self.config.clone(), self.route.clone(), Some(output))?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let batch_size = context.session_config().batch_size().max(1);
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&self.schema);
        // the input first, then the kept rows, batch held by batch held: each is let go once
        // its kept rows are copied out
        let read: futures::future::BoxFuture<'static, Result<(Emit, BaselineMetrics, crate::memory::StateMemory)>> = match &self.route {
            None => {
                let mut input = self.input.execute(partition, Arc::clone(&context))?;
                let mut state = new_state(&self.input.schema(), self.config.clone())?;
                let mut memory = state_memory(&context);
                async move {
                    while let Some(batch) = input.next().await {
                        let batch = batch?;
                        let timer = baseline.elapsed_compute().timer();
                        state.push(&batch, None)?;
                        timer.done();
                        memory.account(state.bytes())?;
                    }
                    state.log_read(partition);
                    Ok((state.finish(out_schema, batch_size), baseline, memory))
                }
                .boxed()
            }
            Some(route) => {
                let router = self.router(partition, &context, route)?;
                async move {
                    router.read.clone().await.map_err(DataFusionError::Shared)?;
                    let Some(intake) = router.states.get(partition) else { return internal_err!("BoundedTopNExec has no partition {partition}") };
                    let Some(Intake { state, memory }) = intake.take()? else {
                        return internal_err!("BoundedTopNExec: partition {partition} was executed twice in one run");
                    };
                    state.log_read(partition);
                    Ok((state.finish(out_schema, batch_size), baseline, memory))
                }
                .boxed()
            }
        };
        let stream = futures::stream::once(read)
            .map(move |read| match read {
                Ok((emit, baseline, memory)) => futures::stream::unfold(Some((emit, baseline, memory)), move |now| async move {
                    let (mut emit, baseline, mut memory) = now?;
                    let timer = baseline.elapsed_compute().timer();
                    let next = emit.next_batch();
                    timer.done();
                    match next {
                        Ok(Some(b)) => {
                            baseline.record_output(b.num_rows());
                            if let Err(e) = memory.account(emit.bytes()) {
                                return Some((Err(e), None));
                            }
                            Some((Ok(b), Some((emit, baseline, memory))))
                        }
                        Ok(None) => {
                            // the rows held go before the stream ends
                            drop((emit, memory));
                            baseline.done();
                            None
                        }
                        Err(e) => Some((Err(e), None)),
                    }
                })
                .boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's state in the job's memory pool.
fn state_memory(context: &Arc<TaskContext>) -> crate::memory::StateMemory {
    crate::memory::StateMemory::new(context, "BoundedTopNExec (the top rows of each key)", "a smaller N, or fewer PARTITION BY keys")
}

/// The state of one partition while the input is read, whatever the number of `ORDER BY`
/// columns.
trait TopNState: Send {
    /// Takes a batch of the input: its rows `rows` (the rows routed to this state), or all.
    fn push(&mut self, batch: &RecordBatch, rows: Option<&UInt32Array>) -> Result<()>;
    /// Bytes held.
    fn bytes(&self) -> usize;
    /// Logs (at debug) what is held once the input is read.
    fn log_read(&self, partition: usize);
    /// The kept rows, ready to go out in batches of `batch_size` rows of `schema`.
    fn finish(self: Box<Self>, schema: SchemaRef, batch_size: usize) -> Emit;
}

/// The state for the `ORDER BY`'s kind of keys.
fn new_state(input: &SchemaRef, config: BoundedTopNConfig) -> Result<Box<dyn TopNState>> {
    Ok(match order_kind(&config.order_by, input) {
        Some(OrderKind::Numbers(1)) => Box::new(Kept::<NumberKey<1>>::try_new(input, config)?),
        Some(OrderKind::Numbers(2)) => Box::new(Kept::<NumberKey<2>>::try_new(input, config)?),
        Some(OrderKind::Bytes) => Box::new(Kept::<BytesKey>::try_new(input, config)?),
        _ => return internal_err!("BoundedTopNExec cannot order by {:?}", config.order_by),
    })
}

/// A group's slots in [`Kept::slots`].
#[derive(Debug, Clone, Copy)]
struct Region {
    start: usize,
    cap: u32,
    count: u32,
}

/// A batch of the input held for its kept rows. Routed from an input partition, it is shared
/// with the other partitions' states, and holds rows of theirs too.
struct Held {
    batch: RecordBatch,
    /// Its rows of this state.
    rows: usize,
    /// Of those, how many are kept.
    live: usize,
    /// Its bytes, as this state's share (`rows` of its rows).
    bytes: usize,
}

impl Held {
    fn new(batch: RecordBatch, rows: usize) -> Self {
        let bytes = batch.get_array_memory_size() * rows / batch.num_rows().max(1);
        Self { batch, rows, live: rows, bytes }
    }
}

/// The state: every key's best rows so far, and the batches they are in.
struct Kept<K: OrderKey> {
    config: BoundedTopNConfig,
    groups: KeyNumbers,
    /// Group ids of the batch being pushed (reused).
    group_ids: Vec<usize>,
    /// What the order keys are made with and compared against.
    order: K::Order,
    /// The order keys of the batch being pushed (reused).
    incoming: Vec<K>,
    /// Every group's region of `slots`: its kept rows in order, then room to grow.
    slots: Vec<K>,
    /// Per group: where its region starts, how many slots it has (doubling up to `limit` as
    /// rows come: a key with one row takes one slot), how many rows it keeps.
    regions: Vec<Region>,
    /// Slots of regions left behind when a group grew.
    dead: usize,
    /// Rows kept over all groups.
    live: usize,
    /// The input's columns that go out, as held in `batches`.
    held: Vec<usize>,
    batches: Vec<Held>,
    /// Rows of this state held (of the batches held, the rows routed to it).
    held_rows: usize,
    held_bytes: usize,
    /// Rows held after the last compaction.
    compacted_rows: usize,
}

impl<K: OrderKey> Kept<K> {
    fn try_new(input: &SchemaRef, config: BoundedTopNConfig) -> Result<Self> {
        let key_fields: Vec<Field> =
            config.partition_by.iter().enumerate().map(|(i, e)| Ok(Field::new(format!("k{i}"), e.data_type(input)?, true))).collect::<Result<_>>()?;
        let groups = KeyNumbers::new(Arc::new(Schema::new(key_fields)))?;
        let rank = input.fields().len();
        let held = match &config.projection {
            Some(p) => p.iter().copied().filter(|&i| i != rank).collect(),
            None => (0..rank).collect(),
        };
        let order = K::order(&config.order_by, input)?;
        Ok(Self {
            config,
            order,
            groups,
            group_ids: Vec::new(),
            incoming: Vec::new(),
            slots: Vec::new(),
            regions: Vec::new(),
            dead: 0,
            live: 0,
            held,
            batches: Vec::new(),
            held_rows: 0,
            compacted_rows: 0,
            held_bytes: 0,
        })
    }

    /// The kept rows' ranks, per held batch a rank (1 to `limit`) per row, 0 where not kept.
    fn ranks(&self) -> Vec<Vec<u8>> {
        let mut ranks: Vec<Vec<u8>> = self.batches.iter().map(|h| vec![0; h.batch.num_rows()]).collect();
        for r in &self.regions {
            for (i, slot) in self.slots[r.start..r.start + r.count as usize].iter().enumerate() {
                let (batch, row) = slot.place();
                if let Some(at) = ranks.get_mut(batch).and_then(|b| b.get_mut(row)) {
                    // at most MAX_LIMIT (100)
                    *at = (i + 1) as u8;
                }
            }
        }
        ranks
    }

    /// Moves every group's region together, leaving out the regions groups grew out of.
    fn pack_slots(&mut self) {
        let mut slots = Vec::with_capacity(self.slots.len() - self.dead);
        for r in &mut self.regions {
            let start = slots.len();
            slots.extend_from_slice(&self.slots[r.start..r.start + r.cap as usize]);
            r.start = start;
        }
        self.slots = slots;
        self.dead = 0;
    }

    /// Copies the kept rows of the batches less than half kept into one batch, batch by batch
    /// in row order, and lets those batches go; batches at least half kept stay as they are.
    /// Rows are copied only out of batches mostly pushed out, not again with every compaction
    /// (fresh batches are mostly kept: a key's latest rows); what stays held is at most twice
    /// what is kept, as what is left is at least half kept.
    fn compact(&mut self) -> Result<()> {
        let Some(held_schema) = self.batches.first().map(|h| h.batch.schema()) else { return Ok(()) };
        let sparse: Vec<bool> = self.batches.iter().map(|h| h.live * 2 < h.rows).collect();
        // where each batch that stays goes; the new batch goes after them
        let mut moved_to = vec![0usize; self.batches.len()];
        let mut stay = 0usize;
        for (to, _) in moved_to.iter_mut().zip(&sparse).filter(|(_, &s)| !s) {
            *to = stay;
            stay += 1;
        }
        // per sparse batch, each kept row's row in the new batch (u32::MAX: not kept)
        let mut new_row: Vec<Vec<u32>> =
            self.batches.iter().zip(&sparse).map(|(h, &s)| if s { vec![u32::MAX; h.batch.num_rows()] } else { Vec::new() }).collect();
        for slot in self.regions.iter().flat_map(|r| &self.slots[r.start..r.start + r.count as usize]) {
            let (batch, row) = slot.place();
            if let Some(at) = new_row.get_mut(batch).and_then(|b| b.get_mut(row)) {
                *at = 0;
            }
        }
        let copied: usize = self.batches.iter().zip(&sparse).filter(|(_, &s)| s).map(|(h, _)| h.live).sum();
        let mut coalescer = BatchCoalescer::new(Arc::clone(&held_schema), copied.max(1));
        let mut next = 0u32;
        for ((held, rows), _) in self.batches.iter().zip(&mut new_row).zip(&sparse).filter(|(_, &s)| s) {
            let before = next;
            let mut keep = Vec::with_capacity(rows.len());
            for at in rows.iter_mut() {
                let kept = *at != u32::MAX;
                if kept {
                    *at = next;
                    next += 1;
                }
                keep.push(kept);
            }
            if next > before {
                coalescer.push_batch_with_filter(held.batch.clone(), &BooleanArray::from(keep))?;
            }
        }
        coalescer.finish_buffered_batch()?;
        let mut pieces = Vec::new();
        while let Some(b) = coalescer.next_completed_batch() {
            pieces.push(b);
        }
        let batch = match pieces.len() {
            0 => RecordBatch::new_empty(Arc::clone(&held_schema)),
            1 => pieces.swap_remove(0),
            _ => concat_batches(&held_schema, &pieces)?,
        };
        // string views keep the buffers they point into: copy the kept strings out of them
        let batch = crate::memory::own_batch(batch)?;
        for r in &self.regions {
            for slot in &mut self.slots[r.start..r.start + r.count as usize] {
                let (b, row) = slot.place();
                *slot = if sparse[b] { slot.at(stay, new_row[b][row] as usize) } else { slot.at(moved_to[b], row) };
            }
        }
        let mut batches: Vec<Held> = Vec::with_capacity(stay + 1);
        batches.extend(self.batches.drain(..).zip(&sparse).filter(|(_, &s)| !s).map(|(h, _)| h));
        if batch.num_rows() > 0 {
            let rows = batch.num_rows();
            batches.push(Held::new(batch, rows));
        }
        self.held_rows = batches.iter().map(|h| h.rows).sum();
        self.compacted_rows = self.held_rows;
        self.held_bytes = batches.iter().map(|h| h.bytes).sum();
        self.batches = batches;
        Ok(())
    }
}

impl<K: OrderKey> TopNState for Kept<K> {
    fn bytes(&self) -> usize {
        self.groups.size()
            + (self.slots.capacity() + self.incoming.capacity()) * std::mem::size_of::<K>()
            + K::bytes(&self.order)
            + self.regions.capacity() * std::mem::size_of::<Region>()
            + self.held_bytes
    }

    fn push(&mut self, batch: &RecordBatch, rows: Option<&UInt32Array>) -> Result<()> {
        let routed = rows.map_or(batch.num_rows(), UInt32Array::len);
        if routed == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> =
            self.config.partition_by.iter().map(|e| picked(e.evaluate(batch)?.into_array(batch.num_rows())?, rows)).collect::<Result<_>>()?;
        let mut ids = std::mem::take(&mut self.group_ids);
        self.groups.intern(&keys, &mut ids)?;
        let mut incoming = std::mem::take(&mut self.incoming);
        K::keys(&mut self.order, &self.config.order_by, batch, rows, &mut incoming)?;
        let limit = self.config.limit;
        while self.regions.len() < self.groups.len() {
            self.regions.push(Region { start: self.slots.len(), cap: 1, count: 0 });
            self.slots.push(K::EMPTY);
        }
        let at = self.batches.len();
        if at >= MAX_BATCHES {
            return internal_err!("BoundedTopNExec: too many batches");
        }
        let mut kept = 0usize;
        let row_of = |i: usize| rows.map_or(i, |r| r.values()[i] as usize);
        for (i, (&g, key)) in ids.iter().zip(&incoming).enumerate() {
            let mut r = self.regions[g];
            let count = r.count as usize;
            // after every row it ties with: they came first
            if count == limit && self.slots[r.start + limit - 1].not_after(key, &self.order) {
                continue;
            }
            let pos = self.slots[r.start..r.start + count].partition_point(|k| k.not_after(key, &self.order));
            if count < limit {
                if count == r.cap as usize {
                    // the region is full: a twice larger one at the end
                    let cap = (count * 2).min(limit);
                    let start = self.slots.len();
                    self.slots.extend_from_within(r.start..r.start + count);
                    self.slots.resize(start + cap, K::EMPTY);
                    self.dead += r.cap as usize;
                    r = Region { start, cap: cap as u32, count: r.count };
                }
                self.slots.copy_within(r.start + pos..r.start + count, r.start + pos + 1);
                r.count += 1;
                self.live += 1;
            } else {
                let (pushed_out, _) = self.slots[r.start + limit - 1].place();
                // (a row of this batch pushed out by a later row of it: counted below)
                match self.batches.get_mut(pushed_out) {
                    Some(h) => h.live -= 1,
                    None => kept -= 1,
                }
                self.slots.copy_within(r.start + pos..r.start + limit - 1, r.start + pos + 1);
            }
            kept += 1;
            self.slots[r.start + pos] = key.at(at, row_of(i));
            self.regions[g] = r;
        }
        self.incoming = incoming;
        if self.dead > self.slots.len() / 2 {
            self.pack_slots();
        }
        if K::untidy(&self.order) {
            // only the kept keys' bytes stay
            K::tidy(&mut self.order, &mut self.slots, self.regions.iter().map(|r| r.start..r.start + r.count as usize));
        }
        self.group_ids = ids;
        if kept > 0 {
            let mut held = Held::new(batch.project(&self.held)?, routed);
            held.live = kept;
            self.held_rows += held.rows;
            self.held_bytes += held.bytes;
            self.batches.push(held);
        }
        // batches held mostly for rows pushed out since (over twice the rows kept, and 65536
        // more): keep only the rows still kept; and not before half as many rows again as the
        // last compaction left have come, or three times the rows kept (it walks every kept
        // row: a compaction every 65536 rows would cost more than it frees, where what stays
        // is nearly twice what is kept)
        if self.held_rows > 2 * self.live + (1 << 16) && (self.held_rows > self.compacted_rows + self.compacted_rows / 2 || self.held_rows > 3 * self.live) {
            self.compact()?;
        }
        Ok(())
    }

    fn log_read(&self, partition: usize) {
        tracing::debug!(
            partition,
            kept = self.live,
            held_rows = self.held_rows,
            held_bytes = self.held_bytes,
            held_batches = self.batches.len(),
            slots = self.slots.len(),
            dead_slots = self.dead,
            groups = self.regions.len(),
            state_bytes = self.bytes(),
            "BoundedTopNExec: input read"
        );
    }

    fn finish(self: Box<Self>, schema: SchemaRef, batch_size: usize) -> Emit {
        let ranks = self.ranks();
        let rank = self.held.len();
        // the output's columns: held columns in projection order, the rank where it goes
        let columns: Vec<usize> = match &self.config.projection {
            Some(p) => p.iter().map(|&i| self.held.iter().position(|&h| h == i).unwrap_or(rank)).collect(),
            None => (0..=rank).collect(),
        };
        let bytes = self.held_bytes;
        Emit {
            out: KeptOut::new(Arc::clone(&schema), batch_size),
            schema,
            columns,
            held: self.batches.into_iter().zip(ranks).map(|(h, ranks)| (h.batch, ranks, h.bytes)).collect(),
            bytes,
            finished: false,
        }
    }
}

/// The kept rows going out: the held batches in the order they came, each filtered to its
/// kept rows with their rank ([`KeptOut`]). A held batch is let go once its rows are out.
struct Emit {
    out: KeptOut,
    schema: SchemaRef,
    /// Per output column: the held column it is, or (the held columns' count) the rank.
    columns: Vec<usize>,
    /// The held batches not yet out, each with its rows' ranks (0: not kept) and its bytes
    /// (this state's share).
    held: std::collections::VecDeque<(RecordBatch, Vec<u8>, usize)>,
    bytes: usize,
    finished: bool,
}

impl Emit {
    /// Bytes still held.
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next output batch, or None when every kept row is out.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(b) = self.out.next() {
                return Ok(Some(b));
            }
            let Some((batch, ranks, bytes)) = self.held.pop_front() else {
                if self.finished {
                    return Ok(None);
                }
                self.out.finish()?;
                self.finished = true;
                continue;
            };
            self.bytes = self.bytes.saturating_sub(bytes);
            let keep = BooleanArray::from(BooleanBuffer::collect_bool(ranks.len(), |i| ranks[i] != 0));
            let kept = keep.true_count();
            if kept == 0 {
                continue;
            }
            let rank: ArrayRef = Arc::new(UInt64Array::from_iter_values(ranks.iter().map(|&r| u64::from(r))));
            let columns: Vec<ArrayRef> = self.columns.iter().map(|&c| batch.columns().get(c).map_or_else(|| Arc::clone(&rank), Arc::clone)).collect();
            let full = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))?;
            self.out.push(full, &keep, kept)?;
        }
    }
}

/// Batches of kept rows going out, in batches of the session's batch size: a batch with half
/// that many kept rows or more, and at least half its rows kept, goes out in slices of its own
/// (its text left in the pages it mostly uses: the coalescer would copy out the strings of
/// views into pages it uses a part of); fewer rows are coalesced with the next.
pub(super) struct KeptOut {
    coalescer: BatchCoalescer,
    /// The session's batch size: the slices a batch going out on its own is cut in.
    size: usize,
    /// Kept rows of a batch that go out on their own, not coalesced (half the batch size).
    whole: usize,
    /// Whether a batch less than half kept goes out on its own too (with `whole` rows or more).
    sparse: bool,
    /// Slices of a batch going out on their own.
    pending: std::collections::VecDeque<RecordBatch>,
}

impl KeptOut {
    /// Output batches of `schema`, of about `batch_size` rows.
    pub(super) fn new(schema: SchemaRef, batch_size: usize) -> Self {
        Self {
            coalescer: BatchCoalescer::new(schema, batch_size),
            size: batch_size.max(1),
            whole: (batch_size / 2).max(1),
            sparse: false,
            pending: Default::default(),
        }
    }

    /// The same, a batch with a quarter of the batch size kept or more going out on its own
    /// however much of it is not: for batches read just to go out, whose pages nothing holds
    /// once the sinks have written them (copying the strings out would only cost).
    pub(super) fn passing_sparse(schema: SchemaRef, batch_size: usize) -> Self {
        Self { whole: (batch_size / 4).max(1), sparse: true, ..Self::new(schema, batch_size) }
    }

    /// Takes the rows of `full` that `keep` keeps (`kept` of them).
    pub(super) fn push(&mut self, full: RecordBatch, keep: &BooleanArray, kept: usize) -> Result<()> {
        if kept == 0 {
            return Ok(());
        }
        if kept >= self.whole && (self.sparse || 2 * kept >= full.num_rows()) {
            let out = datafusion::arrow::compute::filter_record_batch(&full, keep)?;
            let size = self.size;
            self.pending.extend((0..out.num_rows()).step_by(size).map(|at| out.slice(at, size.min(out.num_rows() - at))));
            return Ok(());
        }
        self.coalescer.push_batch_with_filter(full, keep)?;
        Ok(())
    }

    /// The next batch ready to go out.
    pub(super) fn next(&mut self) -> Option<RecordBatch> {
        self.pending.pop_front().or_else(|| self.coalescer.next_completed_batch())
    }

    /// No more rows come: the rows coalescing are ready to go out.
    pub(super) fn finish(&mut self) -> Result<()> {
        Ok(self.coalescer.finish_buffered_batch()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// `rows` rows in 4 partitions: keys `k` (97 values) and `s` (3), a float `v` with every
    /// 20th null and otherwise unique, a unique time `t` and a unique int `i`.
    fn table(rows: usize) -> Arc<MemTable> {
        table_in(rows, 4)
    }

    /// `rows` rows in `parts` partitions, the rows of each in the order of `n`.
    fn table_in(rows: usize, parts: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("i", DataType::Int32, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |from: usize, to: usize| {
            let r = from..to;
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(r.clone().map(|n| (n * 31 % 97) as i64))),
                    Arc::new(StringArray::from_iter_values(r.clone().map(|n| ["a", "b", "c"][n * 7 % 3]))),
                    Arc::new(Float64Array::from_iter(r.clone().map(|n| (n % 20 != 0).then(|| (n * 7919 % 1_000_003) as f64 - 500_000.5)))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(r.clone().map(|n| 1_700_000_000_000 + (n * 104_729 % 1_000_033) as i64))),
                    Arc::new(Int32Array::from_iter_values(r.clone().map(|n| (n * 15_485_863 % 2_000_003) as i32 - 1_000_000))),
                    Arc::new(Int64Array::from_iter_values(r.map(|n| n as i64))),
                ],
            )
            .unwrap()
        };
        let per = rows / parts;
        let parts: Vec<Vec<RecordBatch>> =
            (0..parts).map(|p| (0..per).step_by(1000).map(|b| batch(p * per + b, p * per + (b + 1000).min(per))).collect()).collect();
        Arc::new(MemTable::try_new(schema, parts).unwrap())
    }

    /// The rows of `sql` (sorted, unless `ordered`) with their header, and the plan.
    async fn answer_of(ctx: &SessionContext, sql: &str, ordered: bool) -> (Vec<String>, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        let mut rows: Vec<String> = text.lines().filter(|l| l.starts_with("| ")).map(str::to_string).collect();
        if !ordered && !rows.is_empty() {
            rows[1..].sort();
        }
        (rows, shown)
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        answer_of(ctx, sql, false).await
    }

    /// Each query over the same rows: DataFusion's sort-based answer, and ours with
    /// `BoundedTopNExec` in the plan — the same rows (no ties in what is compared).
    #[test]
    fn the_top_rows_of_each_key_are_the_sorted_answer() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            // (joins of two partitioned sides: see the last query)
            let config = || {
                SessionConfig::new()
                    .with_target_partitions(2)
                    .with_batch_size(777)
                    .set_usize("datafusion.optimizer.hash_join_single_partition_threshold", 0)
                    .set_usize("datafusion.optimizer.hash_join_single_partition_threshold_rows", 0)
            };
            let plain = SessionContext::new_with_config(config());
            let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
            let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
            rules.insert(at, Arc::new(crate::top_n::StreamTopNRule::default()));
            let state = SessionStateBuilder::new().with_config(config()).with_default_features().with_physical_optimizer_rules(rules).build();
            let ours = SessionContext::new_with_state(state);
            // 200 000 rows for 97 keys: the batches held are compacted again and again
            let t = table(200_000);
            plain.register_table("t", Arc::clone(&t) as _).unwrap();
            ours.register_table("t", t as _).unwrap();
            let over = |window: &str, keep: &str, cols: &str| format!("SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER ({window}) AS rn FROM t) WHERE {keep}");
            for sql in [
                // nulls tie (DESC puts them first): compare the key, rank and value
                over("PARTITION BY k ORDER BY v DESC", "rn <= 3", "k, rn, v"),
                over("PARTITION BY k, s ORDER BY t", "rn = 1", "*"),
                over("PARTITION BY s ORDER BY i DESC NULLS LAST", "rn < 6", "*"),
                over("PARTITION BY k ORDER BY v ASC NULLS LAST, t DESC", "rn <= 2", "*"),
                over("PARTITION BY k ORDER BY v NULLS FIRST, i", "rn <= 4", "k, v, i"),
                over("PARTITION BY s, k ORDER BY i", "rn <= 100", "rn, i, s"),
                // ordered by row-format bytes: text first (three values, ties broken by i),
                // text alone (floats and times as text, NULLs last), three number columns
                over("PARTITION BY k ORDER BY s DESC, i", "rn <= 3", "*"),
                over("PARTITION BY s ORDER BY CAST(v AS VARCHAR) DESC NULLS LAST", "rn <= 5", "s, rn, v"),
                over("PARTITION BY k ORDER BY CAST(t AS VARCHAR)", "rn <= 2", "*"),
                over("PARTITION BY k ORDER BY i, v, t", "rn <= 3", "*"),
            ] {
                let (want, plan) = answer(&plain, &sql).await;
                assert!(!plan.contains("BoundedTopNExec"), "{plan}");
                let (got, plan) = answer(&ours, &sql).await;
                // four input partitions into two: routed by the operator, not repartitioned
                assert!(plan.contains("BoundedTopNExec") && !plan.contains("SortExec"), "{sql}:\n{plan}");
                assert!(plan.contains("routed by hash") && !plan.contains("RepartitionExec"), "{sql}:\n{plan}");
                assert!(!want.is_empty());
                assert_eq!(got, want, "{sql}");
            }
            // routed as DataFusion's repartitioning routes: a join of the top rows with an
            // aggregate partitioned by the same key takes both sides as they are, partition by
            // partition
            let sql = "SELECT a.k, a.rn, a.i, b.c FROM (SELECT * FROM (SELECT k, i, ROW_NUMBER() OVER (PARTITION BY k ORDER BY i DESC) AS rn FROM t) WHERE rn <= 2) a \
                       JOIN (SELECT k, COUNT(*) AS c FROM t GROUP BY k) b ON a.k = b.k";
            let (want, _) = answer(&plain, sql).await;
            let (got, plan) = answer(&ours, sql).await;
            assert!(plan.contains("routed by hash") && plan.contains("mode=Partitioned"), "{plan}");
            assert_eq!((got.len(), &got), (97 * 2 + 1, &want));
            // each key's latest row, read in order: the latest batches stay whole, the older
            // ones are pushed out and compacted from before them
            let in_order = table_in(200_000, 1);
            plain.register_table("t1", Arc::clone(&in_order) as _).unwrap();
            ours.register_table("t1", in_order as _).unwrap();
            let sql = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY n % 3001 ORDER BY n DESC) AS rn FROM t1) WHERE rn = 1";
            let (want, _) = answer(&plain, sql).await;
            let (got, plan) = answer(&ours, sql).await;
            assert!(plan.contains("BoundedTopNExec"), "{plan}");
            assert_eq!((got.len(), &got), (3002, &want));
            // what it does not take: more than MAX_LIMIT rows per key, a LIMIT pushed into the
            // filter, a plan above that relies on the sorted order (the query's ORDER BY), a
            // bound that is not a whole number
            for (sql, ordered) in [
                (over("PARTITION BY k ORDER BY i", "rn <= 101", "*"), false),
                (over("PARTITION BY k ORDER BY i", "rn <= 3", "*") + " LIMIT 5", false),
                (over("PARTITION BY k ORDER BY i", "rn <= 3", "k, rn, i") + " ORDER BY k, rn", true),
                (over("PARTITION BY k ORDER BY i", "rn < 3.5", "k, rn, i"), false),
            ] {
                let (got, plan) = answer_of(&ours, &sql, ordered).await;
                assert!(!plan.contains("BoundedTopNExec"), "{sql}:\n{plan}");
                if !sql.contains("LIMIT") {
                    assert_eq!(got, answer_of(&plain, &sql, ordered).await.0, "{sql}");
                } else {
                    assert_eq!(got.len(), 6, "a header and 5 rows: {got:?}");
                }
            }
            // columns renamed and reordered under the filter: the names (the header) are the
            // query's; an aggregate above (which DataFusion plans on the sorted order: left be)
            for sql in [
                "SELECT x, val, rn FROM (SELECT v AS val, k AS x, ROW_NUMBER() OVER (PARTITION BY k ORDER BY i DESC) AS rn FROM t) WHERE rn <= 3",
                "SELECT x, COUNT(*) AS n, MAX(val) AS top FROM (SELECT v AS val, k AS x, ROW_NUMBER() OVER (PARTITION BY k ORDER BY i DESC) AS rn FROM t) WHERE rn <= 3 GROUP BY x",
            ] {
                let (want, _) = answer(&plain, sql).await;
                let (got, plan) = answer(&ours, sql).await;
                assert_eq!(plan.contains("BoundedTopNExec"), !sql.contains("GROUP BY"), "{plan}");
                assert_eq!(got, want, "{sql}");
            }
        });
    }

    /// Rows that tie on the ORDER BY are numbered in the order they arrive.
    #[test]
    fn ties_are_numbered_in_arrival_order() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
            let at = rules.iter().position(|r| r.name() == "SanityCheckPlan").unwrap_or(rules.len());
            rules.insert(at, Arc::new(crate::top_n::StreamTopNRule::default()));
            let config = SessionConfig::new().with_target_partitions(2).with_batch_size(2);
            let ctx = SessionContext::new_with_state(
                SessionStateBuilder::new().with_config(config).with_default_features().with_physical_optimizer_rules(rules).build(),
            );
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("p", DataType::Int64, false),
                Field::new("n", DataType::Int64, false),
            ]));
            let b = |k: Vec<i64>, p: Vec<i64>, n: Vec<i64>| {
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(p)), Arc::new(Int64Array::from(n))])
                    .unwrap()
            };
            let parts = vec![vec![b(vec![1, 1, 1], vec![5, 7, 5], vec![1, 2, 3]), b(vec![1, 1, 2], vec![7, 5, 1], vec![4, 5, 6])]];
            ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()) as _).unwrap();
            let (rows, plan) =
                answer(&ctx, "SELECT k, rn, n FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY p DESC) AS rn FROM t) WHERE rn <= 3").await;
            assert!(plan.contains("BoundedTopNExec"), "{plan}");
            let rows: Vec<String> = rows.iter().skip(1).map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
            assert_eq!(rows, vec!["| 1 | 1 | 2 |", "| 1 | 2 | 4 |", "| 1 | 3 | 1 |", "| 2 | 1 | 6 |"]);
        });
    }
}
