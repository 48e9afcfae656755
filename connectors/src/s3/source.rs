//! `s3_source`: the objects under a prefix (globs allowed) as one table. `name=value` prefixes
//! (Hive partitioning) become columns, and a WHERE clause on them skips objects without
//! reading them. Objects are read in parallel partitions; Parquet with ranged reads of just
//! the columns the query uses. With `watch`, the prefix is listed again every
//! `poll_interval` and new objects are read as they land, each once.
//!
//! ```sql
//! SELECT region, SUM(amount) FROM sales WHERE year = 2024 GROUP BY region
//! WITH ('sales.type' = 's3_source', 'sales.path' = 's3://lake/sales/', 'sales.format' = 'parquet');
//! -- s3://lake/sales/year=2023/... is never read
//! ```

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{new_null_array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_expr::execution_props::ExecutionProps;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
#[allow(deprecated)] // still the way to read Parquet from an object store in parquet 59
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{location, store_error, Location};
use crate::batching::BatchConfig;
use crate::checkpoint::{positioned_stream, PositionCell, PositionedBatch, Positions, SourceCheckpoint, UnitPositions};
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::format::decode::{json_array_to_lines, BadRecordLog, TextDecoder};
use crate::format::schema::{infer_bytes_schema, parse_schema};
use crate::format::{adapt_batch, FileFormat};
use crate::metrics::ConnectorMetrics;
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::source::Source;

/// Objects whose schemas are merged when inferring one.
const INFER_OBJECTS: usize = 3;
/// Globs match within a path segment: `*` does not cross `/` (`orders/*.jsonl` is not
/// `orders/archive/x.jsonl`).
const GLOB: glob::MatchOptions = glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };
/// Hive's name for the partition of null values.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";
/// The position of an object read to its end.
const DONE: i64 = i64::MAX;

/// An S3 source, listed and with its schema known.
#[derive(Debug)]
pub struct S3Source {
    cfg: Arc<ReadConfig>,
    /// Objects listed at start (a watching source lists again as it goes).
    objects: Vec<ObjectMeta>,
    partitions: usize,
    positions: UnitPositions,
}

#[derive(Debug)]
struct ReadConfig {
    name: String,
    loc: Location,
    /// The source's properties, to mask secrets in errors.
    props: Properties,
    /// Keys must match this glob (the prefix as written, when it has glob characters).
    glob: Option<glob::Pattern>,
    format: FileFormat,
    /// The columns the objects hold.
    data: SchemaRef,
    /// The table: data columns, then Hive partition columns.
    schema: SchemaRef,
    /// Hive partition columns (the last of `schema`).
    hive: Vec<Field>,
    /// The listed directory: Hive segments are read from keys after it.
    base: String,
    batch: BatchConfig,
    watch: bool,
    poll: Duration,
    failure: FailureStrategy,
    metrics: Arc<ConnectorMetrics>,
}

/// True for keys that are not data: directory markers, hidden and marker files (`_SUCCESS`).
fn is_data_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    !(name.is_empty() || name.starts_with('.') || name.starts_with('_'))
}

/// The `name=value` segments of `key` after `base`.
fn hive_values(key: &str, base: &str) -> Vec<(String, String)> {
    let rest = key.strip_prefix(base).unwrap_or(key).trim_start_matches('/');
    let mut segments: Vec<&str> = rest.split('/').collect();
    segments.pop(); // the object's own name
    segments.iter().filter_map(|s| s.split_once('=')).filter(|(k, _)| !k.is_empty()).map(|(k, v)| (percent_decode(k), percent_decode(v))).collect()
}

/// `a%2Fb` → `a/b` (Hive escapes `/`, `=`, `%` and others in partition values); object_store
/// may have escaped the `%` itself once more (`%252F`).
fn percent_decode(text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..2 {
        if !s.contains('%') {
            break;
        }
        s = crate::properties::percent_decoded(&s);
    }
    s
}

/// A Hive value as an integer when it is one written canonically (`01234` stays text).
fn hive_int(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().filter(|n| n.to_string() == v)
}

async fn list(loc: &Location, glob: Option<&glob::Pattern>, props: &Properties) -> Result<Vec<ObjectMeta>> {
    let prefix = loc.list_prefix();
    let what = loc.url(prefix.as_ref().map_or("", |p| p.as_ref()));
    let mut objects: Vec<ObjectMeta> = loc
        .store
        .list(prefix.as_ref())
        .try_filter(|m| {
            let key = m.location.as_ref();
            futures::future::ready(is_data_key(key) && glob.is_none_or(|g| g.matches_with(key, GLOB)) && (glob.is_some() || key.starts_with(&loc.prefix)))
        })
        .try_collect()
        .await
        .map_err(|e| store_error("listing", &what, e, props))?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

async fn fetch(loc: &Location, path: &ObjectPath, props: &Properties) -> Result<Bytes> {
    let url = loc.url(path.as_ref());
    let got = loc.store.get(path).await.map_err(|e| store_error("reading", &url, e, props))?;
    got.bytes().await.map_err(|e| store_error("reading", &url, e, props))
}

/// The object's text: gunzipped when it starts with gzip's magic bytes.
fn text_of(bytes: Bytes, url: &str) -> Result<Bytes> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 2);
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| ConnectorError::Malformed { location: url.to_string(), message: format!("gzip: {e}") })?;
        return Ok(Bytes::from(out));
    }
    Ok(bytes)
}

impl S3Source {
    /// Configures the source `props.owner()`: lists the objects (an error names the bucket when
    /// it cannot be listed) and infers the schema from the first ones unless `schema` is given.
    pub fn try_new(props: &Properties, job: &Properties, partitions: usize) -> Result<Self> {
        let loc = super::checked_location(props)?;
        let name = props.owner().to_string();
        let glob = if loc.prefix.contains(['*', '?', '[']) {
            Some(glob::Pattern::new(&loc.prefix).map_err(|e| ConnectorError::invalid(props.full_key("path"), format!("bad glob '{}': {e}", loc.prefix)))?)
        } else {
            None
        };
        let format = FileFormat::from_properties(props, &loc.prefix).or_else(|e| {
            // a prefix has no extension: the format comes from `format`, or the first object
            if props.contains("format") {
                Err(e)
            } else {
                Ok(FileFormat::JsonLines)
            }
        })?;
        let watch = props.get_bool("watch")?.unwrap_or(false);
        let declared = props.get("schema").map(|t| parse_schema(t, &props.full_key("schema"))).transpose()?;
        let hive_on = props.get_bool("hive_partitioning")?.unwrap_or(true);
        let (objects, format, data) = {
            let loc = location(props)?; // a client for this runtime only
            let glob = glob.clone();
            let props = props.clone();
            on_own_runtime("s3", async move {
                let objects = list(&loc, glob.as_ref(), &props).await?;
                let format = match (props.contains("format"), objects.first()) {
                    (false, Some(o)) => FileFormat::from_properties(&props, o.location.as_ref()).unwrap_or(format),
                    _ => format,
                };
                let data = match declared {
                    Some(s) => s,
                    None => {
                        if objects.is_empty() {
                            return Err(ConnectorError::invalid(
                                props.full_key("schema"),
                                format!(
                                    "no objects under {} to infer the schema from; set the schema key{}",
                                    loc.url(&loc.prefix),
                                    if watch { " to watch an empty prefix" } else { "" }
                                ),
                            ));
                        }
                        let mut schemas = Vec::new();
                        for o in objects.iter().take(INFER_OBJECTS) {
                            let url = loc.url(o.location.as_ref());
                            if format == FileFormat::Parquet {
                                // the footer only
                                #[allow(deprecated)]
                                let reader =
                                    ParquetObjectReader::new(Arc::clone(&loc.store) as Arc<dyn ObjectStore>, o.location.clone()).with_file_size(o.size);
                                let b = ParquetRecordBatchStreamBuilder::new(reader)
                                    .await
                                    .map_err(|e| ConnectorError::Parquet { context: url.clone(), source: e })?;
                                // text handed on as the views the reader decodes
                                schemas.push(crate::text_views::as_views(b.schema()));
                                continue;
                            }
                            let bytes = text_of(fetch(&loc, &o.location, &props).await?, &url)?;
                            schemas.push(infer_bytes_schema(bytes, format, &url)?);
                        }
                        let merged =
                            Schema::try_merge(schemas).map_err(|e| ConnectorError::arrow(format!("merging the schemas of {}", loc.url(&loc.prefix)), e))?;
                        let fields: Vec<Field> = merged
                            .fields()
                            .iter()
                            .map(|f| if f.data_type() == &DataType::Null { f.as_ref().clone().with_data_type(DataType::Utf8) } else { f.as_ref().clone() })
                            .collect();
                        Arc::new(Schema::new(fields))
                    }
                };
                Ok((objects, format, data))
            })?
        };
        if !objects.is_empty() || !watch {
            info!(source = %name, "s3 source '{name}': {} object{} under {}", objects.len(), if objects.len() == 1 { "" } else { "s" }, loc.url(&loc.prefix));
        }
        if objects.is_empty() && !watch {
            return Err(ConnectorError::NoFiles { pattern: loc.url(&loc.prefix) });
        }
        let base = loc.list_prefix().map(|p| p.as_ref().to_string()).unwrap_or_default();
        let hive = if hive_on { hive_fields(&objects, &base, &data, props.contains("schema")) } else { Vec::new() };
        // a declared column named like a Hive key comes from the key, not the data
        let data = Arc::new(Schema::new(data.fields().iter().filter(|f| !hive.iter().any(|h| h.name() == f.name())).cloned().collect::<Vec<_>>()));
        let mut fields: Vec<Field> = data.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(hive.iter().cloned());
        let cfg = ReadConfig {
            name,
            loc,
            props: props.clone(),
            glob,
            format,
            schema: Arc::new(Schema::new(fields)),
            data,
            hive,
            base,
            batch: BatchConfig::resolve(props, job)?,
            watch,
            poll: props.get_positive_duration("poll_interval")?.unwrap_or(Duration::from_secs(10)),
            failure: FailureStrategy::from_properties(props, FailureStrategy::from_properties(job, FailureStrategy::default())?)?,
            metrics: Arc::new(ConnectorMetrics::default()),
        };
        let partitions = if watch { partitions.max(1) } else { partitions.min(objects.len()).max(1) };
        Ok(Self { cfg: Arc::new(cfg), objects, partitions, positions: UnitPositions::default() })
    }

    /// The objects listed at start.
    pub fn objects(&self) -> &[ObjectMeta] {
        &self.objects
    }

    /// Which objects `scans` need: each scan's filters must all hold (unknown: kept).
    fn wanted(&self, scans: &[Vec<Expr>]) -> Vec<bool> {
        let all = vec![true; self.objects.len()];
        if self.cfg.hive.is_empty() || scans.is_empty() || scans.iter().any(Vec::is_empty) {
            return all;
        }
        let batch = match hive_batch(&self.cfg.hive, self.objects.iter().map(|o| hive_values(o.location.as_ref(), &self.cfg.base))) {
            Ok(b) => b,
            Err(e) => {
                warn!(source = %self.cfg.name, "cannot prune objects by the WHERE clause: {e}");
                return all;
            }
        };
        let mut keep = vec![false; self.objects.len()];
        for filters in scans {
            match eval_filters(filters, &batch) {
                Ok(mask) => keep.iter_mut().zip(mask.iter()).for_each(|(k, m)| *k |= m.unwrap_or(false)),
                Err(e) => {
                    warn!(source = %self.cfg.name, "cannot prune objects by the WHERE clause: {e}");
                    return all;
                }
            }
        }
        keep
    }
}

/// The Hive columns of `objects`: names in order of appearance, Int64 when every value is an
/// integer, else strings. A column of an inferred schema is the data's own; a column of a
/// `declared` schema named like a Hive key is the key's, with the declared type.
fn hive_fields(objects: &[ObjectMeta], base: &str, data: &SchemaRef, declared: bool) -> Vec<Field> {
    let mut names: Vec<String> = Vec::new();
    let mut integer: BTreeMap<String, bool> = BTreeMap::new();
    let mut typed: BTreeMap<String, DataType> = BTreeMap::new();
    for o in objects {
        for (k, v) in hive_values(o.location.as_ref(), base) {
            if let Ok(f) = data.field_with_name(&k) {
                if !declared {
                    continue;
                }
                typed.insert(k.clone(), f.data_type().clone());
            }
            if !names.contains(&k) {
                names.push(k.clone());
            }
            let int = v == HIVE_NULL || hive_int(&v).is_some();
            integer.entry(k).and_modify(|b| *b &= int).or_insert(int);
        }
    }
    names
        .into_iter()
        .map(|n| {
            let t = typed.get(&n).cloned().unwrap_or(if integer.get(&n).copied().unwrap_or(false) { DataType::Int64 } else { DataType::Utf8 });
            Field::new(&n, t, true)
        })
        .collect()
}

/// `n` rows of the Hive value `v` as a column of type `t` (null when absent or not of the type).
fn hive_column(t: &DataType, v: Option<&str>, n: usize) -> ArrayRef {
    match (t, v) {
        (DataType::Int64, Some(v)) => match hive_int(v) {
            Some(i) => Arc::new(Int64Array::from_value(i, n)) as ArrayRef,
            None => new_null_array(t, n),
        },
        (DataType::Utf8, Some(v)) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n))) as ArrayRef,
        (t, Some(v)) => {
            let text: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)));
            arrow::compute::cast_with_options(&text, t, &arrow::compute::CastOptions { safe: true, ..Default::default() })
                .unwrap_or_else(|_| new_null_array(t, n))
        }
        (t, None) => new_null_array(t, n),
    }
}

/// One row per object: its Hive values as columns `hive`.
fn hive_batch(hive: &[Field], rows: impl Iterator<Item = Vec<(String, String)>>) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let rows: Vec<Vec<(String, String)>> = rows.collect();
    let n = rows.len();
    let cols: Vec<ArrayRef> = hive
        .iter()
        .map(|f| {
            let values = rows.iter().map(|r| r.iter().find(|(k, _)| k == f.name()).map(|(_, v)| v.as_str()).filter(|v| *v != HIVE_NULL));
            match f.data_type() {
                DataType::Int64 => Arc::new(values.map(|v| v.and_then(hive_int)).collect::<Int64Array>()) as ArrayRef,
                DataType::Utf8 => Arc::new(values.collect::<StringArray>()) as ArrayRef,
                t => {
                    let text: ArrayRef = Arc::new(values.collect::<StringArray>());
                    arrow::compute::cast_with_options(&text, t, &arrow::compute::CastOptions { safe: true, ..Default::default() })
                        .unwrap_or_else(|_| new_null_array(t, n))
                }
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(hive.to_vec()));
    if hive.is_empty() {
        return RecordBatch::try_new_with_options(schema, cols, &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)));
    }
    RecordBatch::try_new(schema, cols)
}

/// The rows of `batch` (one per object) for which every filter holds; null where unknown.
fn eval_filters(filters: &[Expr], batch: &RecordBatch) -> datafusion::error::Result<BooleanArray> {
    let df = DFSchema::try_from(batch.schema().as_ref().clone())?;
    let mut mask = BooleanArray::from(vec![true; batch.num_rows()]);
    for f in filters {
        let plain = f
            .clone()
            .transform(|e| Ok(if let Expr::Column(c) = e { Transformed::yes(Expr::Column(Column::new_unqualified(c.name))) } else { Transformed::no(e) }))?
            .data;
        let phys = create_physical_expr(&plain, &df, &ExecutionProps::new(), &PhysicalPlanningContext::default())?;
        let v = phys.evaluate(batch)?.into_array(batch.num_rows())?;
        let b = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| DataFusionError::Internal("filter is not boolean".into()))?;
        mask = arrow::compute::and_kleene(&mask, b)?;
    }
    Ok(mask)
}

/// Which partition of `n` reads `key`.
fn partition_of(key: &str, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

impl Source for S3Source {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.cfg.schema)
    }

    fn is_bounded(&self) -> bool {
        !self.cfg.watch
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        self.partitions_pruned(projection, &[])
    }

    fn can_prune(&self, filter: &Expr) -> bool {
        let cols = filter.column_refs();
        !self.cfg.watch && !filter.is_volatile() && !cols.is_empty() && cols.iter().all(|c| self.cfg.hive.iter().any(|f| f.name() == &c.name))
    }

    fn partitions_pruned(&self, projection: Option<&[usize]>, scans: &[Vec<Expr>]) -> Vec<Arc<dyn PartitionStream>> {
        let (columns, schema) = crate::source::projected_columns(&self.cfg.schema, projection);
        let wanted = self.wanted(scans);
        let skipped = wanted.iter().filter(|w| !**w).count();
        if skipped > 0 {
            info!(source = %self.cfg.name, "s3 source '{}': {skipped} of {} objects skipped by the WHERE clause", self.cfg.name, self.objects.len());
            self.cfg.metrics.skipped.fetch_add(skipped as u64, Ordering::Relaxed);
        }
        let n = self.partitions;
        let mut parts: Vec<Vec<ObjectMeta>> = vec![Vec::new(); n];
        for (i, o) in self.objects.iter().zip(&wanted).filter(|(_, w)| **w).map(|(o, _)| o).enumerate() {
            parts[if self.cfg.watch { partition_of(o.location.as_ref(), n) } else { i % n }].push(o.clone());
        }
        let restored = self.positions.restored();
        let cells: Vec<PositionCell> = (0..n)
            .map(|p| {
                // restored positions of this partition's objects stay in its checkpoints until
                // read again (a watching source: every object it has read)
                PositionCell::seeded(
                    restored
                        .iter()
                        .filter(|(k, _)| parts[p].iter().any(|o| o.location.as_ref() == k.as_str()) || (self.cfg.watch && partition_of(k, n) == p))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect();
        self.positions.set_cells(cells.clone());
        parts
            .into_iter()
            .zip(cells)
            .enumerate()
            .map(|(index, (objects, cell))| {
                Arc::new(S3Partition {
                    cfg: Arc::clone(&self.cfg),
                    schema: Arc::clone(&schema),
                    columns: columns.clone(),
                    objects,
                    restored: restored.clone(),
                    cell,
                    index,
                    of: n,
                }) as Arc<dyn PartitionStream>
            })
            .collect()
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
    }

    /// Executed again after a failure, an object reader starts from its position cell.
    fn resumes_after_failure(&self) -> bool {
        true
    }

    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        Some(Arc::new(self.positions.clone()))
    }

    fn describe(&self) -> String {
        let hive = if self.cfg.hive.is_empty() {
            String::new()
        } else {
            format!(", partitioned by {}", self.cfg.hive.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "))
        };
        format!(
            "s3 {} '{}' ({} object{}{hive}{}, batch.size={})",
            self.cfg.format.name(),
            self.cfg.loc.url(&self.cfg.loc.prefix),
            self.objects.len(),
            if self.objects.len() == 1 { "" } else { "s" },
            if self.cfg.watch { ", watching" } else { "" },
            self.cfg.batch.size
        )
    }
}

/// One partition: its objects read one after another (watching: listed again and again).
#[derive(Debug)]
struct S3Partition {
    cfg: Arc<ReadConfig>,
    schema: SchemaRef,
    /// Indices into the table's schema.
    columns: Vec<usize>,
    objects: Vec<ObjectMeta>,
    restored: Positions,
    cell: PositionCell,
    index: usize,
    of: usize,
}

type BatchSender = mpsc::Sender<datafusion::error::Result<PositionedBatch>>;

impl PartitionStream for S3Partition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel(2);
        let reader = Reader {
            cfg: Arc::clone(&self.cfg),
            schema: Arc::clone(&self.schema),
            columns: self.columns.clone(),
            // executed again after a failure: on from the last batch handed out
            restored: self.cell.resume_from(&self.restored),
            bad: BadRecordLog::default(),
            handle: tokio::runtime::Handle::current(),
        };
        let (objects, index, of) = (self.objects.clone(), self.index, self.of);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            if let Err(e) = reader.run(objects, index, of, &tx) {
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            }
        });
        positioned_stream(Arc::clone(&self.schema), rx, self.cell.clone(), None)
    }
}

/// Reads objects on a blocking thread, fetching through the job's runtime.
struct Reader {
    cfg: Arc<ReadConfig>,
    schema: SchemaRef,
    columns: Vec<usize>,
    restored: Positions,
    bad: BadRecordLog,
    handle: tokio::runtime::Handle,
}

fn position(rows: i64) -> serde_json::Value {
    serde_json::json!({ "offset": rows })
}

impl Reader {
    /// Reads `objects`, then (watching) whatever lands later; Err on a failure the strategy
    /// does not let pass, Ok when done or nobody listens any more.
    fn run(&mut self, objects: Vec<ObjectMeta>, index: usize, of: usize, tx: &BatchSender) -> Result<()> {
        let mut seen: HashSet<String> = HashSet::new();
        for o in &objects {
            seen.insert(o.location.as_ref().to_string());
            if !self.read_object(o, tx)? {
                return Ok(());
            }
        }
        if !self.cfg.watch {
            return Ok(());
        }
        let cfg = Arc::clone(&self.cfg);
        // objects a restored checkpoint says were read
        seen.extend(self.restored.iter().filter(|(_, v)| v.get("offset").and_then(serde_json::Value::as_i64) == Some(DONE)).map(|(k, _)| k.clone()));
        loop {
            // waits in short steps: a stopping job does not wait a whole poll interval
            let until = std::time::Instant::now() + cfg.poll;
            while std::time::Instant::now() < until {
                if tx.is_closed() {
                    return Ok(());
                }
                std::thread::sleep(cfg.poll.min(Duration::from_millis(100)));
            }
            let listed = match self.handle.block_on(list(&cfg.loc, cfg.glob.as_ref(), &cfg.props)) {
                Ok(l) => l,
                Err(e) => {
                    warn!(source = %cfg.name, "{e}; listing again in {:?}", cfg.poll);
                    continue;
                }
            };
            for o in listed {
                let key = o.location.as_ref().to_string();
                if partition_of(&key, of) != index || seen.contains(&key) {
                    continue;
                }
                seen.insert(key);
                if !self.read_object(&o, tx)? {
                    return Ok(());
                }
            }
        }
    }

    /// Hands out `batch`, the object's rows up to `upto` (`DONE`: the object is finished, and
    /// an empty batch carries that); false when nobody listens.
    fn send(&self, tx: &BatchSender, batch: RecordBatch, key: &str, upto: i64) -> bool {
        if batch.num_rows() == 0 && upto != DONE {
            return true;
        }
        if batch.num_rows() > 0 {
            self.cfg.metrics.add_batch(batch.num_rows());
        }
        tx.blocking_send(Ok((batch, Some((key.to_string(), position(upto)))))).is_ok()
    }

    /// The table's columns `self.columns` for `rows` rows: data columns from `data` (the
    /// decoded data columns `data_idx`), Hive columns from the object's key.
    fn assemble(&self, data: &RecordBatch, data_idx: &[usize], hive: &[(String, String)]) -> Result<RecordBatch> {
        let n = data.num_rows();
        let ndata = self.cfg.data.fields().len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for &c in &self.columns {
            if c < ndata {
                let at = data_idx.iter().position(|d| *d == c).ok_or_else(|| ConnectorError::Other("s3: a projected column was not decoded".into()))?;
                cols.push(Arc::clone(data.column(at)));
            } else {
                let f = &self.cfg.hive[c - ndata];
                let v = hive.iter().find(|(k, _)| k == f.name()).map(|(_, v)| v.as_str()).filter(|v| *v != HIVE_NULL);
                cols.push(hive_column(f.data_type(), v, n));
            }
        }
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), cols, &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)))
            .map_err(|e| ConnectorError::arrow(self.cfg.name.clone(), e))
    }

    /// Reads one object (from where a restored checkpoint left it); false when nobody listens.
    fn read_object(&mut self, o: &ObjectMeta, tx: &BatchSender) -> Result<bool> {
        let key = o.location.as_ref().to_string();
        let skip = self.restored.get(&key).and_then(|v| v.get("offset")).and_then(serde_json::Value::as_i64).unwrap_or(0);
        if skip == DONE {
            return Ok(true);
        }
        let hive = hive_values(&key, &self.cfg.base);
        let ndata = self.cfg.data.fields().len();
        // the data columns to decode, in the order asked; none asked (COUNT(*), Hive columns
        // only): the first, for the row count
        let mut data_idx: Vec<usize> = self.columns.iter().copied().filter(|c| *c < ndata).collect();
        if data_idx.is_empty() && ndata > 0 {
            data_idx.push(0);
        }
        let mut pending: Option<RecordBatch> = None;
        let mut upto: i64 = 0;
        let emit = |this: &Self, batch: RecordBatch, pending: &mut Option<RecordBatch>, upto: &mut i64| -> Result<bool> {
            // rows already handed out before the restore are skipped
            let batch = if *upto + (batch.num_rows() as i64) <= skip {
                *upto += batch.num_rows() as i64;
                return Ok(true);
            } else if *upto < skip {
                let cut = (skip - *upto) as usize;
                *upto += cut as i64;
                batch.slice(cut, batch.num_rows() - cut)
            } else {
                batch
            };
            let out = this.assemble(&batch, &data_idx, &hive)?;
            let prev = pending.replace(out);
            let at = *upto;
            *upto += batch.num_rows() as i64;
            Ok(prev.is_none_or(|p| this.send(tx, p, &key, at)))
        };
        let url = self.cfg.loc.url(&key);
        let projected = Arc::new(self.cfg.data.project(&data_idx).map_err(|e| ConnectorError::arrow(url.clone(), e))?);
        if self.cfg.format == FileFormat::Parquet {
            #[allow(deprecated)]
            let reader = ParquetObjectReader::new(Arc::clone(&self.cfg.loc.store) as Arc<dyn ObjectStore>, o.location.clone()).with_file_size(o.size);
            let builder =
                self.handle.block_on(ParquetRecordBatchStreamBuilder::new(reader)).map_err(|e| ConnectorError::Parquet { context: url.clone(), source: e })?;
            // text the source declares as views (crate::text_views) is decoded as views
            let builder = match crate::text_views::declared_views(builder.schema().fields(), &self.cfg.data) {
                Some(fields) => {
                    let schema = Arc::new(Schema::new_with_metadata(fields, builder.schema().metadata().clone()));
                    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(schema);
                    let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(builder.metadata()), options)
                        .map_err(|e| ConnectorError::Parquet { context: url.clone(), source: e })?;
                    #[allow(deprecated)]
                    let reader = ParquetObjectReader::new(Arc::clone(&self.cfg.loc.store) as Arc<dyn ObjectStore>, o.location.clone()).with_file_size(o.size);
                    ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
                }
                None => builder,
            };
            let file_schema = Arc::clone(builder.schema());
            let roots: Vec<usize> =
                file_schema.fields().iter().enumerate().filter(|(_, f)| projected.field_with_name(f.name()).is_ok()).map(|(i, _)| i).collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            let mut stream = builder
                .with_projection(mask)
                .with_batch_size(self.cfg.batch.size.clamp(1, 1 << 20))
                .build()
                .map_err(|e| ConnectorError::Parquet { context: url.clone(), source: e })?;
            while let Some(b) = self.handle.block_on(stream.next()) {
                let b = b.map_err(|e| ConnectorError::Parquet { context: url.clone(), source: e })?;
                let b = adapt_batch(b, &projected).map_err(|e| ConnectorError::arrow(url.clone(), e))?;
                if !emit(self, b, &mut pending, &mut upto)? {
                    return Ok(false);
                }
            }
        } else {
            let bytes = self.handle.block_on(fetch(&self.cfg.loc, &o.location, &self.cfg.props))?;
            self.cfg.metrics.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let mut text = text_of(bytes, &url)?;
            let mut element_lines: Option<Vec<u64>> = None;
            if self.cfg.format == FileFormat::Json && text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                let (lines, starts) = json_array_to_lines(&text).map_err(|m| ConnectorError::Malformed { location: url.clone(), message: m })?;
                text = Bytes::from(lines);
                element_lines = Some(starts);
            }
            let mut at = 0usize;
            let mut line: u64 = 1;
            if let FileFormat::Csv { has_headers: true, .. } = self.cfg.format {
                at = memchr::memchr(b'\n', &text).map_or(text.len(), |i| i + 1);
                line = 2;
            }
            let rows = self.cfg.batch.size.clamp(1, 1 << 20);
            let mut decoder = TextDecoder::try_new(Arc::clone(&self.cfg.data), Some(&data_idx), self.cfg.format, rows)?;
            let mut element = 0usize;
            while at < text.len() {
                // whole lines, `rows` of them at most
                let mut end = at;
                let mut lines = 0usize;
                for i in memchr::memchr_iter(b'\n', &text[at..]) {
                    lines += 1;
                    end = at + i + 1;
                    if lines == rows {
                        break;
                    }
                }
                if lines < rows && end < text.len() {
                    end = text.len(); // the last line has no newline
                    lines += 1;
                }
                let mut chunk = text.slice(at..end);
                if chunk.last() != Some(&b'\n') {
                    let mut owned = chunk.to_vec();
                    owned.push(b'\n');
                    chunk = Bytes::from(owned);
                }
                let first = line;
                let first_element = element;
                let line_of = |i: usize| match &element_lines {
                    Some(starts) => starts.get(first_element + i).copied().unwrap_or(first + i as u64),
                    None => first + i as u64,
                };
                let (batches, bad) = decoder.decode_chunk(&chunk, &line_of)?;
                if !bad.is_empty() {
                    self.bad.handle(&self.cfg.name, self.cfg.failure, &self.cfg.metrics, &url, &bad)?;
                }
                for b in batches {
                    if !emit(self, b, &mut pending, &mut upto)? {
                        return Ok(false);
                    }
                }
                line += lines as u64;
                element += lines;
                at = end;
            }
        }
        let last = pending.take().unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema)));
        Ok(self.send(tx, last, &key, DONE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_values_and_types() {
        assert_eq!(hive_values("sales/year=2024/month=01/part-0.parquet", "sales"), vec![("year".into(), "2024".into()), ("month".into(), "01".into())]);
        assert!(hive_values("sales/2024/part-0.parquet", "sales").is_empty());
        assert_eq!(hive_values("s/city=a%2Fb/x", "s"), vec![("city".into(), "a/b".into())]);
        assert_eq!(hive_values("s/city=a%252Fb/x", "s"), vec![("city".into(), "a/b".into())], "escaped twice");
        assert_eq!((hive_int("2024"), hive_int("01234"), hive_int("x")), (Some(2024), None, None));
        assert!(glob::Pattern::new("o/*.jsonl").unwrap().matches_with("o/a.jsonl", GLOB));
        assert!(!glob::Pattern::new("o/*.jsonl").unwrap().matches_with("o/archive/a.jsonl", GLOB), "* stays in its segment");
        assert!(is_data_key("a/b.jsonl") && !is_data_key("a/_SUCCESS") && !is_data_key("a/") && !is_data_key("a/.tmp"));
        let meta = |k: &str| ObjectMeta { location: ObjectPath::from(k), last_modified: chrono::Utc::now(), size: 1, e_tag: None, version: None };
        let objects = vec![meta("s/year=2024/region=eu/a.json"), meta("s/year=2023/region=us/b.json")];
        let data = Arc::new(Schema::new(vec![Field::new("region", DataType::Utf8, true)]));
        let hive = hive_fields(&objects, "s", &data, false);
        assert_eq!(hive, vec![Field::new("year", DataType::Int64, true)], "region is a data column");
        let declared = hive_fields(&objects, "s", &data, true);
        assert_eq!(declared, vec![Field::new("year", DataType::Int64, true), Field::new("region", DataType::Utf8, true)], "a declared column is the key's");
        let date = hive_column(&DataType::Date32, Some("2024-05-01"), 2);
        assert_eq!(date.data_type(), &DataType::Date32);
        assert_eq!(date.null_count(), 0);
        let batch = hive_batch(&hive, objects.iter().map(|o| hive_values(o.location.as_ref(), "s"))).unwrap();
        let filter = datafusion::prelude::col("year").eq(datafusion::prelude::lit(2024i64));
        let mask = eval_filters(&[filter], &batch).unwrap();
        assert_eq!(mask, BooleanArray::from(vec![true, false]));
    }
}
