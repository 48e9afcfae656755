//! `file_source`: reads files matched by a path or glob into Arrow record batches, in parallel
//! partitions (large uncompressed text files are split by byte range, Parquet by row group, or
//! by row range within a group when a file has fewer groups than partitions),
//! bounded by default or tailing with `watch`.
//!
//! ```sql
//! SELECT * FROM orders
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl', 'orders.watch' = 'true');
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use tokio::sync::mpsc;

use crate::batching::BatchConfig;
use crate::checkpoint::{positioned_stream, PositionCell, PositionedBatch, SourceCheckpoint, UnitPositions};
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::format::decode::{json_array_to_lines, BadRecord, BadRecordLog, TextDecoder};
use crate::format::schema::{infer_schema, is_gzip, open_text, parse_schema, starts_gzip, starts_with_array};
use crate::format::{adapt_batch, FileFormat};
use crate::metrics::ConnectorMetrics;
use crate::properties::Properties;
use crate::source::{Source, SourceSize};

/// Text files larger than this are split into byte ranges read in parallel.
const SPLIT_THRESHOLD: u64 = 32 << 20;

/// A file source, configured and with its schema known.
#[derive(Debug)]
pub struct FileSource {
    cfg: Arc<ReadConfig>,
    pattern: String,
    files: Vec<PathBuf>,
    partitions: usize,
    /// Read each file whole, in order (the source has a watermark delay).
    ordered: bool,
    /// Checkpoint positions of the partitions last made by [`Source::partitions`].
    positions: UnitPositions,
    /// Its size, worked out on the first scan (Parquet footers read once).
    size: std::sync::OnceLock<SourceSize>,
}

#[derive(Debug, Clone)]
struct ReadConfig {
    name: String,
    format: FileFormat,
    schema: SchemaRef,
    batch: BatchConfig,
    watch: bool,
    /// Bounded uncompressed files and Parquet are read through a memory map (not with
    /// `FERRIS_FILE_MMAP=0`).
    mmap: bool,
    poll: Duration,
    failure: FailureStrategy,
    metrics: Arc<ConnectorMetrics>,
    /// Malformed records are warned of (not by a read another read of the file warns for).
    warns: bool,
    /// Parquet read once: the event-time column (`event_time`) and the factor that makes its
    /// integers milliseconds (`event_time.format`), whose floor the partitions can publish.
    event_time: Option<(String, i64)>,
}

/// A piece of work for one partition.
#[derive(Debug, Clone)]
enum Unit {
    /// A whole file.
    Whole(PathBuf),
    /// Lines starting in `[start, end)` of an uncompressed text file.
    Range { path: PathBuf, start: u64, end: u64 },
    /// Some row groups of a Parquet file.
    RowGroups { path: PathBuf, groups: Vec<usize> },
    /// Rows `[start, end)` of one row group of a Parquet file with fewer row groups than
    /// partitions (a file written with one row group, as pyarrow and parquet-rs write up to a
    /// million rows): the pages before and after are skipped without being decompressed.
    GroupRows { path: PathBuf, group: usize, start: u64, end: u64 },
}

impl Unit {
    /// The unit's name in checkpoint positions.
    fn key(&self) -> String {
        match self {
            Unit::Whole(p) => p.display().to_string(),
            Unit::Range { path, start, .. } => format!("{}#{start}", path.display()),
            Unit::RowGroups { path, groups } => format!("{}#rg{}", path.display(), groups.first().copied().unwrap_or(0)),
            Unit::GroupRows { path, group, start, .. } => format!("{}#rg{group}r{start}", path.display()),
        }
    }
}

/// Where a unit resumes after a restore: the byte offset of a line start (text) or the rows
/// already read (Parquet), the rows of the chunk starting there already handed out, and the
/// line and JSON array element numbers there (for error messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Resume {
    offset: u64,
    rows: usize,
    line: u64,
    element: usize,
    /// Parquet read with a row filter: its fingerprint ([`filter_fingerprint`]); the offset
    /// then counts the rows the filter kept. 0: no filter.
    filter: u64,
}

impl Resume {
    fn to_value(self) -> serde_json::Value {
        let mut v = serde_json::json!({"offset": self.offset, "rows": self.rows, "line": self.line, "element": self.element});
        if self.filter != 0 {
            v["filter"] = serde_json::json!(self.filter);
        }
        v
    }

    fn from_value(v: &serde_json::Value) -> Option<Self> {
        Some(Self {
            offset: v.get("offset")?.as_u64()?,
            rows: v.get("rows").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize,
            line: v.get("line").and_then(serde_json::Value::as_u64).unwrap_or(1),
            element: v.get("element").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize,
            filter: v.get("filter").and_then(serde_json::Value::as_u64).unwrap_or(0),
        })
    }
}

/// A stable fingerprint of a row filter (FNV-1a of its text), never 0. Text literals and casts
/// read the same whether the text is held as views or not (`Utf8View("x")` as `Utf8("x")`): a
/// position taken before a Parquet source handed its text on as views keeps its filter.
fn filter_fingerprint(filter: &datafusion::logical_expr::Expr) -> u64 {
    let text = filter.to_string().replace("Utf8View", "Utf8").replace("BinaryView", "Binary");
    crate::checkpoint::fnv1a(text.bytes()).max(1)
}

/// A tailed file without a `schema`: its columns, inferred from its first lines, waiting up to
/// `schema.inference.timeout` for the file to appear and hold some (as the Kafka source waits
/// for messages).
fn wait_for_columns(props: &Properties, pattern: &str, format: FileFormat) -> Result<(Vec<PathBuf>, SchemaRef)> {
    let wait = props.get_duration("schema.inference.timeout")?.unwrap_or(Duration::from_secs(10));
    let until = std::time::Instant::now() + wait;
    let key = props.full_key("path");
    // Ok(None): nothing yet (no file, an empty one, or a first line still being written);
    // the error kept is the last one seen, reported if the wait ends without columns
    let attempt = |last: &mut Option<ConnectorError>| -> Option<(Vec<PathBuf>, SchemaRef)> {
        let files = match expand_glob(pattern, &key) {
            Ok(f) => f,
            Err(e) => {
                *last = Some(e);
                return None;
            }
        };
        match infer_schema(&files, format, pattern) {
            Ok(schema) if !schema.fields().is_empty() => Some((files, schema)),
            Ok(_) => {
                *last = None;
                None
            }
            Err(e) => {
                *last = Some(e);
                None
            }
        }
    };
    let mut last = None;
    if let Some(found) = attempt(&mut last) {
        return Ok(found);
    }
    tracing::info!(source = %props.owner(), "'{pattern}' is empty or missing: waiting up to {wait:?} for lines to infer its columns from (or set '{}')", props.full_key("schema"));
    crate::runtime::on_own_runtime("file", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(found) = attempt(&mut last) {
                return Ok(found);
            }
            if std::time::Instant::now() >= until {
                return Err(match last.take() {
                    // the path never matched, or the data never parsed: that is the error
                    Some(e) => e,
                    None => ConnectorError::invalid(
                        props.full_key("schema"),
                        format!(
                            "'{pattern}' had no lines to infer the columns from within {wait:?} ('{}'); give them (`id BIGINT, amount DOUBLE`)",
                            props.full_key("schema.inference.timeout")
                        ),
                    ),
                });
            }
        }
    })
}

impl FileSource {
    /// Configures the source `props.owner()` from its properties and the job's, resolving the
    /// glob and inferring (or parsing) the schema. `partitions` caps the parallelism.
    pub fn try_new(props: &Properties, job: &Properties, partitions: usize) -> Result<Self> {
        let pattern = crate::properties::local_path(props.require("path")?).map_err(|m| ConnectorError::invalid(props.full_key("path"), m))?.into_owned();
        let format = FileFormat::from_properties(props, &pattern)?;
        let watch = props.get_bool("watch")?.unwrap_or(false);
        let (files, schema) = match props.get("schema") {
            Some(text) => (expand_glob(&pattern, &props.full_key("path"))?, parse_schema(text, &props.full_key("schema"))?),
            None if watch => wait_for_columns(props, &pattern, format)?,
            None => {
                let files = expand_glob(&pattern, &props.full_key("path"))?;
                let mut schema = infer_schema(&files, format, &pattern)?;
                if format == FileFormat::Parquet {
                    // text handed on as the views the reader decodes (crate::text_views)
                    schema = Arc::new(crate::text_views::as_views(&schema));
                }
                if schema.fields().is_empty() {
                    return Err(ConnectorError::invalid(
                        props.full_key("schema"),
                        format!("'{pattern}' is empty: there are no lines to infer the columns from; give them (`id BIGINT, amount DOUBLE`)"),
                    ));
                }
                (files, schema)
            }
        };
        if watch && format == FileFormat::Parquet {
            return Err(ConnectorError::invalid(props.full_key("watch"), "parquet files cannot be tailed; use csv or jsonlines"));
        }
        let cfg = ReadConfig {
            name: props.owner().to_string(),
            format,
            schema,
            batch: BatchConfig::resolve(props, job)?,
            watch,
            mmap: std::env::var("FERRIS_FILE_MMAP").map_or(true, |v| v != "0"),
            poll: props.get_positive_duration("poll_interval")?.unwrap_or(Duration::from_millis(100)),
            failure: FailureStrategy::from_properties(props, FailureStrategy::from_properties(job, FailureStrategy::default())?)?,
            metrics: Arc::new(ConnectorMetrics::default()),
            warns: true,
            event_time: props.get("event_time").filter(|_| format == FileFormat::Parquet && !watch).map(|c| {
                let seconds = props.get("event_time.format").is_some_and(|f| f.eq_ignore_ascii_case("epoch_seconds"));
                (c.to_string(), if seconds { 1000 } else { 1 })
            }),
        };
        // A source with a watermark delay reads each file in order (files still in parallel):
        // splitting a file would have one split run ahead of another and hold every row it
        // read in the operators' state until the slower split caught up.
        let ordered = props.contains("watermark.delay");
        Ok(Self {
            cfg: Arc::new(cfg),
            pattern,
            files,
            partitions: partitions.max(1),
            ordered,
            positions: UnitPositions::default(),
            size: std::sync::OnceLock::new(),
        })
    }

    /// What [`Source::size`] reports: rows from Parquet footers, bytes of text files.
    fn measure(&self) -> SourceSize {
        let mut size = SourceSize { rows: Some(0), bytes: Some(0) };
        for path in &self.files {
            let (rows, bytes) = match self.cfg.format {
                FileFormat::Parquet => parquet_size(path).map_or((None, None), |(r, b)| (Some(r), Some(b))),
                // gzip: the data is several times the file
                _ => (None, std::fs::metadata(path).ok().map(|m| if is_gzip(path) { m.len() * 4 } else { m.len() })),
            };
            size.rows = size.rows.zip(rows).map(|(a, b)| a + b);
            size.bytes = size.bytes.zip(bytes).map(|(a, b)| a + b);
        }
        size
    }

    /// The files the pattern matched.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The schema of the batches read for `projection`, and the projection when it drops a column.
    fn projected(&self, projection: Option<&[usize]>) -> (SchemaRef, Option<Arc<[usize]>>) {
        let schema = match projection {
            Some(p) => self.cfg.schema.project(p).map(Arc::new).unwrap_or_else(|_| Arc::clone(&self.cfg.schema)),
            None => Arc::clone(&self.cfg.schema),
        };
        let projection = projection.filter(|_| schema.fields().len() < self.cfg.schema.fields().len()).map(Into::into);
        (schema, projection)
    }

    /// The units, dealt out to the partitions in turn.
    fn split_units(&self) -> Vec<Vec<Unit>> {
        let units = self.units();
        let n = self.partitions.min(units.len()).max(1);
        let mut parts: Vec<Vec<Unit>> = vec![Vec::new(); n];
        for (i, u) in units.into_iter().enumerate() {
            parts[i % n].push(u);
        }
        parts
    }

    /// A read of the source on its own ([`Source::read_again`], [`Source::read_in_order`]):
    /// the scan's units, positions of its own (never a checkpoint's), its rows counted in the
    /// source's metrics only when `count`; records checked by the columns `checked` when the
    /// read builds only some of them.
    fn own_read(
        &self,
        projection: Option<&[usize]>,
        checked: Option<&[usize]>,
        filter: Option<Arc<datafusion::logical_expr::Expr>>,
        dynamic: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        count: bool,
    ) -> Vec<Arc<dyn PartitionStream>> {
        let (schema, projection) = self.projected(projection);
        // checked by more columns than it builds: only a read of some of the columns
        let checked: Option<Arc<[usize]>> = projection.as_ref().and(checked).map(Into::into);
        // rows read a second time are not counted again, nor their bad records warned of
        let cfg = if count {
            Arc::clone(&self.cfg)
        } else {
            Arc::new(ReadConfig { metrics: Arc::new(ConnectorMetrics::default()), warns: false, ..(*self.cfg).clone() })
        };
        self.split_units()
            .into_iter()
            .map(|units| {
                Arc::new(FilePartition {
                    cfg: Arc::clone(&cfg),
                    schema: Arc::clone(&schema),
                    projection: projection.clone(),
                    units,
                    cell: PositionCell::new(),
                    filter: filter.clone(),
                    dynamic: dynamic.clone(),
                    checked: checked.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect()
    }

    fn units(&self) -> Vec<Unit> {
        let mut units = Vec::new();
        let single = self.files.len() < self.partitions && !self.ordered;
        for path in &self.files {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match self.cfg.format {
                FileFormat::Parquet if single => {
                    let meta = parquet_metadata(path);
                    let groups = meta.as_ref().map_or(1, |m| m.num_row_groups());
                    if let Some(split) = meta.as_ref().and_then(|m| split_groups(m, self.partitions)) {
                        units.extend(split.into_iter().map(|(group, start, end)| Unit::GroupRows { path: path.clone(), group, start, end }));
                        continue;
                    }
                    let n = self.partitions.min(groups).max(1);
                    if n > 1 {
                        for p in 0..n {
                            units.push(Unit::RowGroups { path: path.clone(), groups: (p..groups).step_by(n).collect() });
                        }
                        continue;
                    }
                    units.push(Unit::Whole(path.clone()));
                }
                FileFormat::Csv { .. } | FileFormat::JsonLines if single && !self.cfg.watch && len > SPLIT_THRESHOLD && !is_gzip(path) => {
                    let n = self.partitions as u64;
                    let step = len.div_ceil(n);
                    for p in 0..n {
                        units.push(Unit::Range { path: path.clone(), start: p * step, end: ((p + 1) * step).min(len) });
                    }
                }
                _ => units.push(Unit::Whole(path.clone())),
            }
        }
        units
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.cfg.schema)
    }

    fn is_bounded(&self) -> bool {
        !self.cfg.watch
    }

    fn size(&self) -> Option<SourceSize> {
        if self.cfg.watch {
            return None;
        }
        Some(*self.size.get_or_init(|| self.measure()))
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        self.partitions_pruned(projection, &[])
    }

    /// Parquet read once: a WHERE conjunct on the file's own columns is evaluated while the
    /// row groups are decoded (its columns first, the others only for the rows it keeps).
    fn can_prune(&self, filter: &datafusion::logical_expr::Expr) -> bool {
        let cols = filter.column_refs();
        self.cfg.format == FileFormat::Parquet
            && !self.cfg.watch
            && !filter.is_volatile()
            && !cols.is_empty()
            && cols.iter().all(|c| self.cfg.schema.index_of(&c.name).is_ok())
    }

    fn partitions_pruned(&self, projection: Option<&[usize]>, scans: &[Vec<datafusion::logical_expr::Expr>]) -> Vec<Arc<dyn PartitionStream>> {
        let filter = row_filter(scans).map(Arc::new);
        let (schema, projection) = self.projected(projection);
        let parts = self.split_units();
        let restored = self.positions.restored();
        // a partition starts where the restored checkpoint left its units: a checkpoint taken
        // before it reads anything new holds those positions, not none
        let cells: Vec<PositionCell> = parts
            .iter()
            .map(|units| PositionCell::seeded(units.iter().filter_map(|u| restored.get(&u.key()).map(|v| (u.key(), v.clone()))).collect()))
            .collect();
        self.positions.set_cells(cells.clone());
        parts
            .into_iter()
            .zip(cells)
            .map(|(units, cell)| {
                Arc::new(FilePartition {
                    cfg: Arc::clone(&self.cfg),
                    schema: Arc::clone(&schema),
                    projection: projection.clone(),
                    units,
                    cell,
                    filter: filter.clone(),
                    dynamic: None,
                    checked: None,
                }) as Arc<dyn PartitionStream>
            })
            .collect()
    }

    /// Parquet files read once (not tailed): the partitions [`Source::partitions_pruned`]
    /// makes, with cells of their own (not the checkpoint's) and `dynamic` dropping rows too.
    fn read_again(
        &self,
        projection: Option<&[usize]>,
        scans: &[Vec<datafusion::logical_expr::Expr>],
        dynamic: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        if self.cfg.format != FileFormat::Parquet || self.cfg.watch {
            return None;
        }
        let filter = row_filter(scans).map(Arc::new);
        Some(self.own_read(projection, None, filter, Some(dynamic), count))
    }

    /// Files read once (not tailed). Parquet as [`Source::read_again`] reads it with a filter
    /// keeping every row; text files (JSON Lines, JSON, CSV, gzipped or not) in the same units
    /// as the scan's, each record checked by the columns `checked` while only `projection`'s
    /// are built, so that a read of a few columns skips the same bad records as a read of more.
    fn read_in_order(
        &self,
        projection: Option<&[usize]>,
        checked: Option<&[usize]>,
        scans: &[Vec<datafusion::logical_expr::Expr>],
        count: bool,
    ) -> Option<Vec<Arc<dyn PartitionStream>>> {
        if self.cfg.watch {
            return None;
        }
        if self.cfg.format == FileFormat::Parquet {
            let keep_all = datafusion::physical_expr::expressions::Literal::new(datafusion::common::ScalarValue::Boolean(Some(true)));
            return self.read_again(projection, scans, Arc::new(keep_all), count);
        }
        Some(self.own_read(projection, checked, None, None, count))
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
    }

    /// Executed again after a failure, a file partition starts from its position cell.
    fn resumes_after_failure(&self) -> bool {
        true
    }

    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        Some(Arc::new(self.positions.clone()))
    }

    /// Parquet files read once, with an `event_time`: the least event time of each row group
    /// still to read, from its statistics.
    fn floor_column(&self) -> Option<&str> {
        self.cfg.event_time.as_ref().map(|(c, _)| c.as_str())
    }

    fn describe(&self) -> String {
        format!(
            "file {} '{}' ({} file{}{}, batch.size={})",
            self.cfg.format.name(),
            self.pattern,
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            if self.cfg.watch { ", watching" } else { "" },
            self.cfg.batch.size
        )
    }
}

/// Expands a path or glob into the files it names, sorted.
fn expand_glob(pattern: &str, key: &str) -> Result<Vec<PathBuf>> {
    if !pattern.contains(['*', '?', '[']) {
        let p = PathBuf::from(pattern);
        if p.is_file() {
            return Ok(vec![p]);
        }
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| ConnectorError::io(&p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect();
            files.sort();
            return if files.is_empty() { Err(ConnectorError::NoFiles { pattern: pattern.into() }) } else { Ok(files) };
        }
        return Err(ConnectorError::io(p, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory")));
    }
    let paths = glob::glob(pattern).map_err(|e| ConnectorError::invalid(key, format!("bad glob '{pattern}': {e}")))?;
    let mut files: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
    files.sort();
    if files.is_empty() {
        return Err(ConnectorError::NoFiles { pattern: pattern.into() });
    }
    Ok(files)
}

/// Rows and uncompressed bytes of a Parquet file, from its footer.
/// A Parquet file's footer.
fn parquet_metadata(path: &Path) -> Option<Arc<parquet::file::metadata::ParquetMetaData>> {
    let f = File::open(path).ok()?;
    Some(Arc::clone(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?.metadata()))
}

fn parquet_size(path: &Path) -> Option<(u64, u64)> {
    let meta = parquet_metadata(path)?;
    let groups = meta.row_groups();
    Some((groups.iter().map(|g| g.num_rows().max(0) as u64).sum(), groups.iter().map(|g| g.total_byte_size().max(0) as u64).sum()))
}

/// Rows a part of a row group split among partitions has at least ([`split_groups`]).
const MIN_SPLIT_ROWS: u64 = 65_536;

/// A file of fewer row groups than `partitions`, split into about `partitions` row ranges
/// `(group, start, end)` of at least [`MIN_SPLIT_ROWS`] rows: None when no group is large
/// enough to split.
fn split_groups(meta: &parquet::file::metadata::ParquetMetaData, partitions: usize) -> Option<Vec<(usize, u64, u64)>> {
    let groups = meta.num_row_groups();
    if groups == 0 || groups >= partitions {
        return None;
    }
    let mut ranges = Vec::new();
    for g in 0..groups {
        let rows = meta_rows(meta, g);
        // the partitions shared out among the groups, the first ones taking the remainder
        let share = (partitions / groups + usize::from(g < partitions % groups)) as u64;
        let parts = share.min(rows / MIN_SPLIT_ROWS).max(1);
        let step = rows.div_ceil(parts);
        ranges.extend((0..parts).map(|p| (g, p * step, ((p + 1) * step).min(rows))).filter(|(_, s, e)| s < e));
    }
    (ranges.len() > groups).then_some(ranges)
}

/// One partition of a file source: a list of units read one after another on a blocking thread.
#[derive(Debug)]
struct FilePartition {
    cfg: Arc<ReadConfig>,
    /// The schema of the batches it yields: the source's, projected.
    schema: SchemaRef,
    /// Indices into the source's schema, when projected.
    projection: Option<Arc<[usize]>>,
    /// The units it reads, one after another.
    units: Vec<Unit>,
    /// Where it has got: the restored checkpoint's positions of its units at first, then
    /// updated as each batch is handed out; an execution starts from here.
    cell: PositionCell,
    /// Rows every scan of the source drops (Parquet: evaluated while decoding).
    filter: Option<Arc<datafusion::logical_expr::Expr>>,
    /// A hash join's filter on the one scan this partition is read for ([`Source::read_again`]).
    dynamic: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    /// Text: the columns a record is checked by, when more than it hands out
    /// ([`Source::read_in_order`]).
    checked: Option<Arc<[usize]>>,
}

/// What one read produces: the projected schema and the projection, and the rows it may drop.
struct Output<'a> {
    schema: &'a SchemaRef,
    projection: Option<&'a [usize]>,
    filter: Option<&'a datafusion::logical_expr::Expr>,
    /// A hash join's filter (see [`Source::read_again`]).
    dynamic: Option<&'a Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    /// Text: the columns a record is checked by, when more than `projection`.
    checked: Option<&'a [usize]>,
    /// When the partition publishes its event-time floor: the least event time of each row
    /// group of the unit's file (by the group's index), and of the units it reads after it.
    floors: Option<(&'a [i64], i64)>,
}

/// The rows a source read by `scans` (each with the WHERE conjuncts it pushed down) may drop:
/// those no scan wants — the OR over the scans of each one's conjuncts, on unqualified columns.
/// None when some scan wants every row.
fn row_filter(scans: &[Vec<datafusion::logical_expr::Expr>]) -> Option<datafusion::logical_expr::Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Expr;
    if scans.is_empty() || scans.iter().any(Vec::is_empty) {
        return None;
    }
    let unqualified = |e: &Expr| {
        e.clone()
            .transform(|x| match x {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name)))),
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
            .ok()
    };
    let mut any: Option<Expr> = None;
    for scan in scans {
        let mut all: Option<Expr> = None;
        for f in scan {
            let f = unqualified(f)?;
            all = Some(match all {
                Some(a) => a.and(f),
                None => f,
            });
        }
        let all = all?;
        any = Some(match any {
            Some(a) => a.or(all),
            None => all,
        });
    }
    any
}

/// A Parquet file's row groups as containers of min/max/null-count statistics, for
/// DataFusion's pruning predicate.
struct RowGroupStatistics<'a> {
    metadata: &'a parquet::file::metadata::ParquetMetaData,
    arrow_schema: &'a arrow::datatypes::Schema,
    parquet_schema: &'a parquet::schema::types::SchemaDescriptor,
}

impl RowGroupStatistics<'_> {
    fn converter(&self, column: &datafusion::common::Column) -> Option<parquet::arrow::arrow_reader::statistics::StatisticsConverter<'_>> {
        parquet::arrow::arrow_reader::statistics::StatisticsConverter::try_new(&column.name, self.arrow_schema, self.parquet_schema).ok()
    }
}

impl datafusion::physical_optimizer::pruning::PruningStatistics for RowGroupStatistics<'_> {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        self.converter(column)?.row_group_mins(self.metadata.row_groups().iter()).ok()
    }

    fn max_values(&self, column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        self.converter(column)?.row_group_maxes(self.metadata.row_groups().iter()).ok()
    }

    fn num_containers(&self) -> usize {
        self.metadata.num_row_groups()
    }

    fn null_counts(&self, column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        let counts = self.converter(column)?.row_group_null_counts(self.metadata.row_groups().iter()).ok()?;
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<arrow::array::ArrayRef> {
        let rows = arrow::array::UInt64Array::from_iter_values(self.metadata.row_groups().iter().map(|g| g.num_rows().max(0) as u64));
        Some(Arc::new(rows))
    }

    #[allow(clippy::mutable_key_type)]
    fn contained(
        &self,
        _column: &datafusion::common::Column,
        _values: &std::collections::HashSet<datafusion::common::ScalarValue>,
    ) -> Option<arrow::array::BooleanArray> {
        None
    }
}

/// `filter` (on unqualified column names) as an expression over batches of `schema`, its
/// operands coerced to the file's types (a literal `'x'` compared with text read as views).
fn physical_filter(filter: &datafusion::logical_expr::Expr, schema: arrow::datatypes::Schema) -> Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    let df_schema = datafusion::common::DFSchema::try_from(schema).ok()?;
    let simplifier = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(datafusion::logical_expr::simplify::SimplifyContext::default());
    let filter = simplifier.coerce(filter.clone(), &df_schema).ok()?;
    let expr = datafusion::physical_expr::create_physical_expr(
        &filter,
        &df_schema,
        &datafusion::execution::context::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )
    .ok()?;
    // (`auction % 123`: by multiplication, not a division per row)
    Some(crate::remainder::with_constant_divisors(expr, df_schema.as_arrow()))
}

/// Per row group of the file, whether `filter` may keep a row of it (by the groups' min/max
/// statistics); None when the filter cannot be judged so.
fn row_groups_wanted(
    filter: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    file_schema: &SchemaRef,
    metadata: &parquet::file::metadata::ParquetMetaData,
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
) -> Option<Vec<bool>> {
    let expr = filter?;
    // None: the filter says nothing about min/max (or could not be built)
    let predicate = datafusion::physical_optimizer::pruning::PruningPredicateBuilder::new().with_file_schema(Arc::clone(file_schema)).build(expr)?;
    predicate.prune(&RowGroupStatistics { metadata, arrow_schema: file_schema.as_ref(), parquet_schema }).ok()
}

/// A Parquet predicate evaluating `expr` (a physical expression whose columns are found by
/// name) over the columns it reads, decoded before the others, and those columns (in the
/// file); None when one of them is missing from the file or of another type than the source's
/// (the rows are then filtered above, as always). Rows it drops still count as read.
fn parquet_predicate(
    expr: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    file_schema: &SchemaRef,
    source_schema: &SchemaRef,
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
    metrics: Arc<ConnectorMetrics>,
) -> Option<(Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>, Vec<usize>)> {
    use parquet::arrow::arrow_reader::ArrowPredicateFn;
    let (cols, expr) = on_own_columns(expr, file_schema, source_schema)?;
    let mask = parquet::arrow::ProjectionMask::roots(parquet_schema, cols.iter().copied());
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let keep = keeps(&expr, &batch)?;
        // the rows dropped here were read all the same
        let dropped = batch.num_rows() - keep.true_count();
        if dropped > 0 {
            metrics.records.fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(keep)
    });
    Some((Box::new(predicate), cols))
}

/// The file columns `expr` reads (ascending) and `expr` over a batch of just those; None when
/// one is missing from the file or of another type than the source's.
fn on_own_columns(
    expr: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    file_schema: &SchemaRef,
    source_schema: &SchemaRef,
) -> Option<(Vec<usize>, Arc<dyn datafusion::physical_expr::PhysicalExpr>)> {
    let mut cols: Vec<usize> = Vec::new();
    for c in datafusion::physical_expr::utils::collect_columns(&expr) {
        let i = file_schema.index_of(c.name()).ok()?;
        let source_type = source_schema.field_with_name(c.name()).ok()?.data_type();
        if file_schema.field(i).data_type() != source_type {
            return None;
        }
        cols.push(i);
    }
    if cols.is_empty() {
        return None;
    }
    cols.sort_unstable();
    cols.dedup();
    let expr = datafusion::physical_expr::utils::reassign_expr_columns(expr, &file_schema.project(&cols).ok()?).ok()?;
    Some((cols, expr))
}

/// The file's schema (`file_schema`, virtual columns left out) with the text and byte columns
/// the source declares as views read as views ([`crate::text_views::declared_views`]): its row
/// filters are then evaluated on the types the query planned them for. None when no column
/// changes.
fn declared_views(file_schema: &SchemaRef, source: &SchemaRef) -> Option<SchemaRef> {
    let fields = crate::text_views::declared_views(file_schema.fields().iter().filter(|f| f.name() != GROUP_INDEX), source)?;
    Some(Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, file_schema.metadata().clone())))
}

/// The file's schema with its text and byte columns read as views (`Utf8View`,
/// `BinaryView`): the decoder then points into the file's decompressed pages instead of
/// copying every value, the row filter drops views, and only the rows kept are copied (by
/// [`adapt_batch`], into the source's `Utf8` or `Binary`). Nexmark q20, which keeps one bid in
/// five after its join's filter, copied every bid's `extra` before. Only columns the source
/// declares with the file's own type, and none a row filter reads (its predicates are
/// evaluated on the file's types). None when no column changes. Virtual columns (last in
/// `file_schema`) are left out, as the reader wants.
fn as_views(file_schema: &SchemaRef, source: &SchemaRef, predicate_columns: &[usize]) -> Option<SchemaRef> {
    use arrow::datatypes::DataType;
    let mut changed = false;
    let fields: Vec<arrow::datatypes::FieldRef> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != GROUP_INDEX)
        .map(|(i, f)| {
            let declared = source.field_with_name(f.name()).ok().map(|s| s.data_type());
            let view = match f.data_type() {
                DataType::Utf8 => Some(DataType::Utf8View),
                DataType::Binary => Some(DataType::BinaryView),
                _ => None,
            };
            match view {
                Some(v) if declared == Some(f.data_type()) && !predicate_columns.contains(&i) => {
                    changed = true;
                    Arc::new(f.as_ref().clone().with_data_type(v))
                }
                _ => Arc::clone(f),
            }
        })
        .collect();
    changed.then(|| Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, file_schema.metadata().clone())))
}

/// The rows of `batch` that `filter` keeps.
fn keeps(
    filter: &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    batch: &RecordBatch,
) -> std::result::Result<arrow::array::BooleanArray, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    let keep = filter.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
    keep.as_boolean_opt().cloned().ok_or_else(|| arrow::error::ArrowError::ComputeError("a WHERE clause that is not a boolean".into()))
}

/// Rows of a hash join's filter tried on the start of a file before reading with it.
const SAMPLE_ROWS: usize = 16 * 1024;

/// True when `filter` drops at least half of the first [`SAMPLE_ROWS`] rows of row group
/// `group` of `path` (decoding only the columns it reads): worth decoding those columns
/// twice, once to filter and once for the rows kept. A filter that keeps most rows (Nexmark
/// q4's bids, nearly all of a known auction) would only cost. A failed read is an error, not a
/// "no": the answer must be the same each time the unit is read, since the positions handed
/// out count the rows kept.
#[allow(clippy::too_many_arguments)]
fn drops_enough(
    path: &Path,
    metadata: &Arc<parquet::file::metadata::ParquetMetaData>,
    options: &parquet::arrow::arrow_reader::ArrowReaderOptions,
    group: usize,
    filter: &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    file_schema: &SchemaRef,
    source_schema: &SchemaRef,
) -> Result<bool> {
    let Some((cols, expr)) = on_own_columns(Arc::clone(filter), file_schema, source_schema) else { return Ok(false) };
    let ctx = || path.display().to_string();
    let f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    // the footer the unit's reader has already parsed
    let known = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(metadata), options.clone())
        .map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(f, known);
    let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), cols);
    let mut reader = b
        .with_row_groups(vec![group])
        .with_projection(mask)
        .with_limit(SAMPLE_ROWS)
        .with_batch_size(SAMPLE_ROWS)
        .build()
        .map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
    let Some(batch) = reader.next() else { return Ok(false) };
    let batch = batch.map_err(|e| ConnectorError::arrow(ctx(), e))?;
    let kept = keeps(&expr, &batch).map_err(|e| ConnectorError::arrow(ctx(), e))?.true_count();
    Ok(batch.num_rows() > 0 && kept * 2 <= batch.num_rows())
}

/// Waits, on this blocking thread, until every hash join filter in `expr` is complete (the
/// joins have read their build sides); false when the reader went away first.
fn wait_until_complete(expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>, tx: &BatchSender) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
    let mut filters: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>> = Vec::new();
    let _ = expr.apply(|e| {
        if e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() {
            filters.push(Arc::clone(e));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let complete = futures::future::join_all(filters.iter().filter_map(|e| e.downcast_ref::<DynamicFilterPhysicalExpr>()).map(|d| d.wait_complete()));
    futures::executor::block_on(async {
        match futures::future::select(Box::pin(complete), Box::pin(tx.closed())).await {
            futures::future::Either::Left(_) => true,
            futures::future::Either::Right(_) => false,
        }
    })
}

/// What a hash join's filter keeps once complete, on unqualified columns; None when it keeps
/// every row.
fn settled_filter(expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    use datafusion::physical_expr::expressions::Literal;
    let now = datafusion::physical_expr_common::physical_expr::snapshot_physical_expr(Arc::clone(expr)).ok()?;
    let keeps_all = now.downcast_ref::<Literal>().is_some_and(|l| l.value() == &datafusion::common::ScalarValue::Boolean(Some(true)));
    (!keeps_all).then_some(now)
}

type BatchSender = mpsc::Sender<datafusion::error::Result<PositionedBatch>>;

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // the reader runs up to 64Ki rows ahead (2 to 8 batches): an operator that reads
        // whichever input lags (an interval join) leaves one alone for a while, and the reader
        // goes on meanwhile
        let ahead = (65_536 / decode_rows(&self.cfg.batch).max(1)).clamp(2, 8);
        let (tx, rx) = mpsc::channel(ahead);
        let cfg = Arc::clone(&self.cfg);
        // the cell starts at the restored positions; executed again after a failure, each unit
        // goes on from the last batch handed out
        let at = self.cell.start();
        let units: Vec<(Unit, Option<Resume>)> = self.units.iter().map(|u| (u.clone(), at.get(&u.key()).and_then(Resume::from_value))).collect();
        let schema = Arc::clone(&self.schema);
        let projection = self.projection.clone();
        let filter = self.filter.clone();
        let dynamic = self.dynamic.clone();
        let checked = self.checked.clone();
        let floor = crate::source::floor_to_publish().filter(|_| cfg.event_time.is_some());
        let floors = floor.is_some();
        tokio::task::spawn_blocking(move || {
            // each unit's row groups' least event times, and the least over the unit
            let unit_floors: Vec<Option<(Vec<i64>, i64)>> = if floors { units.iter().map(|(u, _)| unit_floors(&cfg, u)).collect() } else { Vec::new() };
            for (i, (unit, resume)) in units.into_iter().enumerate() {
                // (published only when this unit's and every later unit's are known)
                let after = unit_floors.get(i + 1..).and_then(|later| later.iter().try_fold(i64::MAX, |m, f| f.as_ref().map(|f| m.min(f.1))));
                let floors = unit_floors.get(i).and_then(Option::as_ref).map(|f| f.0.as_slice()).zip(after);
                let out = Output {
                    schema: &schema,
                    projection: projection.as_deref(),
                    filter: filter.as_deref(),
                    dynamic: dynamic.as_ref(),
                    checked: checked.as_deref(),
                    floors,
                };
                match read_unit(&cfg, &out, &unit, resume, &tx) {
                    Ok(true) => {}
                    Ok(false) => return, // the reader went away: the job is stopping
                    Err(e) => {
                        let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
                        return;
                    }
                }
            }
        });
        positioned_stream(Arc::clone(&self.schema), rx, self.cell.clone(), floor)
    }
}

/// Sends a batch with the position of `key` after it; false when nobody listens any more.
fn send(cfg: &ReadConfig, tx: &BatchSender, batch: RecordBatch, key: &str, position: serde_json::Value) -> bool {
    if batch.num_rows() == 0 {
        return true;
    }
    cfg.metrics.add_batch(batch.num_rows());
    tx.blocking_send(Ok((batch, Some((key.to_string(), position))))).is_ok()
}

/// Rows per decoded batch: the configured size, bounded for strategies that count bytes.
fn decode_rows(batch: &BatchConfig) -> usize {
    batch.size.min(1 << 20)
}

/// Reads one unit; Ok(false) when the receiver has gone.
fn read_unit(cfg: &ReadConfig, out: &Output, unit: &Unit, resume: Option<Resume>, tx: &BatchSender) -> Result<bool> {
    let key = unit.key();
    match (cfg.format, unit) {
        (FileFormat::Parquet, Unit::Whole(path)) => read_parquet(cfg, out, path, None, None, &key, resume, tx),
        (FileFormat::Parquet, Unit::RowGroups { path, groups }) => read_parquet(cfg, out, path, Some(groups.clone()), None, &key, resume, tx),
        (FileFormat::Parquet, Unit::GroupRows { path, group, start, end }) => {
            read_parquet(cfg, out, path, Some(vec![*group]), Some(*start..*end), &key, resume, tx)
        }
        (_, Unit::Whole(path)) => read_text(cfg, out, path, 0, u64::MAX, &key, resume, tx),
        (_, Unit::Range { path, start, end }) => read_text(cfg, out, path, *start, *end, &key, resume, tx),
        (_, Unit::RowGroups { path, .. } | Unit::GroupRows { path, .. }) => read_text(cfg, out, path, 0, u64::MAX, &key, resume, tx),
    }
}

/// Reads a Parquet unit: row groups `groups` of `path` (all when None), and of those only
/// rows `rows` of the one group when Some, from `resume` on.
#[allow(clippy::too_many_arguments)]
fn read_parquet(
    cfg: &ReadConfig,
    out: &Output,
    path: &Path,
    mut groups: Option<Vec<usize>>,
    rows: Option<std::ops::Range<u64>>,
    key: &str,
    resume: Option<Resume>,
    tx: &BatchSender,
) -> Result<bool> {
    let ctx = || path.display().to_string();
    let f = super::mapped::ParquetData::open(File::open(path).map_err(|e| ConnectorError::io(path, e))?, cfg.mmap);
    let parquet_err = |e| ConnectorError::Parquet { context: ctx(), source: e };
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
    // the footer, parsed once: the filters are decided on it before the reader is built
    let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&f, options.clone()).map_err(parquet_err)?;
    // text the source declares as views is decoded as views from here on, filters included
    let (meta, sample) = match declared_views(meta.schema(), &cfg.schema) {
        Some(views) => (
            parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options.clone().with_schema(Arc::clone(&views)))
                .map_err(parquet_err)?,
            parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(views),
        ),
        None => (meta, parquet::arrow::arrow_reader::ArrowReaderOptions::new()),
    };
    let file_schema = Arc::clone(meta.schema());
    let parquet_schema = meta.parquet_schema();
    // the rows of the unit already handed out before a restore (counted after the row filter
    // the reading then had, if any: the same filter is applied again before the offset)
    let mut read = resume.map_or(0, |r| r.offset);
    let mut filter = out.filter;
    // the WHERE clause was in the read that handed out those rows: it must be again
    let mut filter_was_read = false;
    if let Some(r) = resume.filter(|r| r.offset > 0) {
        let current = filter.map_or(0, filter_fingerprint);
        if r.filter != current {
            if r.filter == 0 {
                filter = None;
            } else {
                tracing::warn!(source = %cfg.name, path = %path.display(), "the query's WHERE clause changed since the checkpoint: the file is read again from its start");
                read = 0;
            }
        } else {
            filter_was_read = current != 0;
        }
    }
    // the row groups of the unit, and the first of them
    let unit_groups: Vec<usize> = groups.clone().unwrap_or_else(|| (0..meta.metadata().num_row_groups()).collect());
    let first = unit_groups.first().copied();
    let mut fingerprint = 0;
    let mut predicates = Vec::new();
    // the file columns the predicates read, decoded as they are in the file
    let mut predicate_columns: Vec<usize> = Vec::new();
    // (filter, row groups it may keep a row of)
    let mut pruning = Vec::new();
    if let Some(f) = filter {
        if let Some(expr) = physical_filter(f, file_schema.as_ref().clone()) {
            let wanted = row_groups_wanted(Some(Arc::clone(&expr)), &file_schema, meta.metadata(), parquet_schema);
            let prunes = wanted.as_ref().is_some_and(|w| unit_groups.iter().any(|g| !w.get(*g).copied().unwrap_or(true)));
            // in the read when it skips row groups or drops at least half of the rows: the
            // WHERE clause is evaluated again above the scan, and a filter keeping most rows
            // (Nexmark q21's regular expression, 95% kept) would be paid twice for nothing
            let worth = filter_was_read
                || prunes
                || match first {
                    Some(g) => drops_enough(path, meta.metadata(), &sample, g, &expr, &file_schema, &cfg.schema)?,
                    None => false,
                };
            if let Some((p, columns)) = worth.then(|| parquet_predicate(expr, &file_schema, &cfg.schema, parquet_schema, Arc::clone(&cfg.metrics))).flatten() {
                predicates.push(p);
                predicate_columns.extend(columns);
                fingerprint = filter_fingerprint(f);
                pruning.push(wanted);
            }
        }
    }
    if let Some(d) = out.dynamic {
        // read once the hash join knows its build side: the rows are then the same however
        // often the read is executed
        if !wait_until_complete(d, tx) {
            return Ok(false);
        }
        let settled = settled_filter(d);
        let keeps_none = |now: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| {
            now.downcast_ref::<datafusion::physical_expr::expressions::Literal>()
                .is_some_and(|l| l.value() == &datafusion::common::ScalarValue::Boolean(Some(false)))
        };
        if settled.as_ref().is_some_and(keeps_none) {
            // the join's build side is empty: no row of the file can meet it
            return Ok(true);
        }
        let settled = match (settled, first) {
            (Some(now), Some(g)) if drops_enough(path, meta.metadata(), &sample, g, &now, &file_schema, &cfg.schema)? => Some(now),
            _ => None,
        };
        if let Some(now) = settled {
            let for_file = datafusion::physical_expr::utils::reassign_expr_columns(Arc::clone(&now), &file_schema).ok();
            if let Some((p, columns)) = parquet_predicate(now, &file_schema, &cfg.schema, parquet_schema, Arc::clone(&cfg.metrics)) {
                predicates.push(p);
                predicate_columns.extend(columns);
                pruning.push(row_groups_wanted(for_file, &file_schema, meta.metadata(), parquet_schema));
            }
        }
    }
    // publishing the floor: a row filter drops rows, so each batch then says which row group
    // it is of (a virtual column); else the rows handed out tell, counted through the groups
    let tagged = out.floors.is_some() && !predicates.is_empty();
    let options = if tagged { options.with_virtual_columns(vec![group_index_field()]).map_err(parquet_err)? } else { options };
    // text and bytes decoded as views into the file's pages, copied only for the rows kept
    let meta = match as_views(&file_schema, &cfg.schema, &predicate_columns) {
        Some(views) => {
            let with_views = options.with_schema(views);
            parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), with_views).map_err(parquet_err)?
        }
        None if tagged => {
            let same = options.with_schema(Arc::clone(&file_schema));
            parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), same).map_err(parquet_err)?
        }
        None => meta,
    };
    f.reading_forward();
    let mut b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta).with_batch_size(decode_rows(&cfg.batch));
    // rows dropped in the read leave views pointing into a few of the pages' bytes
    let sparse = !predicates.is_empty();
    if !predicates.is_empty() {
        b = b.with_row_filter(parquet::arrow::arrow_reader::RowFilter::new(predicates));
        // row groups whose min/max show no row can pass are not read at all
        let all = &unit_groups;
        let kept: Vec<usize> = all.iter().copied().filter(|g| pruning.iter().flatten().all(|keep| keep.get(*g).copied().unwrap_or(true))).collect();
        if kept.len() < all.len() {
            tracing::debug!(source = %cfg.name, path = %path.display(), "{} of {} row groups skipped by their statistics", all.len() - kept.len(), all.len());
            cfg.metrics.skipped.fetch_add((all.len() - kept.len()) as u64, std::sync::atomic::Ordering::Relaxed);
        }
        groups = Some(kept);
    }
    if let Some(g) = &groups {
        b = b.with_row_groups(g.clone());
    }
    // a range of the unit's one row group (unless skipped by its statistics)
    let range = rows.filter(|_| groups.as_ref().is_some_and(|g| g.len() == 1));
    if let Some(r) = &range {
        let to = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let group_rows = groups.as_ref().and_then(|g| g.first()).map_or(0, |g| meta_rows(b.metadata(), *g));
        let (start, end) = (r.start.min(group_rows), r.end.min(group_rows));
        let selection = vec![
            parquet::arrow::arrow_reader::RowSelector::skip(to(start)),
            parquet::arrow::arrow_reader::RowSelector::select(to(end.saturating_sub(start))),
            parquet::arrow::arrow_reader::RowSelector::skip(to(group_rows.saturating_sub(end))),
        ];
        b = b.with_row_selection(selection.into());
    }
    if read > 0 {
        b = b.with_offset(usize::try_from(read).unwrap_or(usize::MAX));
    }
    if out.projection.is_some() {
        // Read only the wanted columns, found by name in this file's schema.
        let file_schema = Arc::clone(b.schema());
        let roots: Vec<usize> = out.schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
        let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
        b = b.with_projection(mask);
    }
    // the groups in the order read, from each on the least event time still to come, and
    // where each group's rows end (counted from the first group's first row)
    let floors = out.floors.map(|(by_group, after)| {
        let order: Vec<usize> = groups.clone().unwrap_or_else(|| (0..by_group.len()).collect());
        let mut from = vec![after; order.len() + 1];
        for (i, g) in order.iter().enumerate().rev() {
            from[i] = from[i + 1].min(by_group.get(*g).copied().unwrap_or(i64::MIN));
        }
        let ends: Vec<u64> = order
            .iter()
            .scan(0u64, |end, g| {
                *end += meta_rows(b.metadata(), *g);
                Some(*end)
            })
            .collect();
        (order, from, ends)
    });
    let mut floor_sent = None;
    let reader = b.build().map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
    for batch in reader {
        let batch = batch.map_err(|e| ConnectorError::arrow(ctx(), e))?;
        // the floor once this batch is handed out: the least event time from its last row's
        // row group on
        let floor = floors.as_ref().and_then(|(order, from, ends)| {
            let at = if tagged {
                let g = arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::Int64Type>(batch.column_by_name(GROUP_INDEX)?.as_ref())?
                    .values()
                    .last()
                    .copied()?;
                order.iter().position(|&o| o as i64 == g)?
            } else {
                // every row is handed out: the last one's place among the groups' rows
                let last = (range.as_ref().map_or(0, |r| r.start) + read + batch.num_rows() as u64).checked_sub(1)?;
                ends.partition_point(|end| *end <= last)
            };
            // (times beyond ±2^61 ms are no times to the operators: the floor stays within)
            Some((*from.get(at)?).min(1 << 61))
        });
        let mut batch = adapt_batch(batch, out.schema).map_err(|e| ConnectorError::arrow(ctx(), e))?;
        if sparse {
            batch = crate::text_views::compact_batch(batch);
        }
        if let Some(t) = floor.filter(|t| floor_sent.is_none_or(|s| *t > s)) {
            floor_sent = Some(t);
            // (the schema's own metadata kept: a file's, pandas' or Spark's, must stay a subset)
            let mut meta = out.schema.metadata().clone();
            meta.insert(crate::source::FLOOR_KEY.to_string(), t.to_string());
            let marked = Arc::new(arrow::datatypes::Schema::new_with_metadata(out.schema.fields().clone(), meta));
            batch = batch.with_schema(marked).map_err(|e| ConnectorError::arrow(ctx(), e))?;
        }
        read += batch.num_rows() as u64;
        let position = Resume { offset: read, filter: fingerprint, ..Resume::default() }.to_value();
        if !send(cfg, tx, batch, key, position) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Rows of row group `g` of a file.
fn meta_rows(meta: &parquet::file::metadata::ParquetMetaData, g: usize) -> u64 {
    meta.row_groups().get(g).map_or(0, |rg| u64::try_from(rg.num_rows()).unwrap_or(0))
}

/// The name of the virtual column a floor-publishing read adds (and drops): each row's group.
const GROUP_INDEX: &str = "__ferris_row_group";

fn group_index_field() -> arrow::datatypes::FieldRef {
    Arc::new(arrow::datatypes::Field::new(GROUP_INDEX, arrow::datatypes::DataType::Int64, false).with_extension_type(parquet::arrow::RowGroupIndex))
}

/// The least event time of each row group of a Parquet file, in milliseconds as the operators
/// compute it (timestamps and dates cast to milliseconds, integers times `scale`), from the
/// groups' statistics: `i64::MAX` for a group without a time in any row; None when a group's
/// least time is not known (no statistics, strings, an overflow), or when the file's column is
/// of another type than the source's (`source`: its rows are cast, and their times with them).
fn group_floors(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
    source: &SchemaRef,
    column: &str,
    scale: i64,
) -> Option<Vec<i64>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Int64Type, TimeUnit};
    if schema.field_with_name(column).ok()?.data_type() != source.field_with_name(column).ok()?.data_type() {
        return None;
    }
    let converter = parquet::arrow::arrow_reader::statistics::StatisticsConverter::try_new(column, schema, parquet_schema).ok()?;
    let groups = metadata.row_groups();
    let mins = converter.row_group_mins(groups.iter()).ok()?;
    let nulls = converter.row_group_null_counts(groups.iter()).ok()?;
    let ms = match mins.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            arrow::compute::cast(&arrow::compute::cast(&mins, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok()?, &DataType::Int64).ok()?
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => arrow::compute::cast(&mins, &DataType::Int64).ok()?,
        _ => return None,
    };
    let ms = ms.as_primitive::<Int64Type>();
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if ms.is_valid(i) {
                ms.value(i).checked_mul(scale)
            } else if nulls.is_valid(i) && nulls.value(i) as i64 == g.num_rows() {
                // every row without a time: none is held to the floor
                Some(i64::MAX)
            } else {
                None
            }
        })
        .collect()
}

/// The least event time of every row group of the file a unit reads (see [`group_floors`]),
/// and the least over the groups the unit reads; None for text files (`event_time` is kept for
/// Parquet only), or when one is not known.
fn unit_floors(cfg: &ReadConfig, unit: &Unit) -> Option<(Vec<i64>, i64)> {
    let (column, scale) = cfg.event_time.as_ref()?;
    let (path, groups) = match unit {
        Unit::Whole(path) => (path, None),
        Unit::RowGroups { path, groups } => (path, Some(groups.clone())),
        Unit::GroupRows { path, group, .. } => (path, Some(vec![*group])),
        Unit::Range { .. } => return None,
    };
    let f = File::open(path).ok()?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?;
    let all = group_floors(b.metadata(), b.schema(), b.parquet_schema(), &cfg.schema, column, *scale)?;
    let least = match groups {
        Some(g) => g.iter().try_fold(i64::MAX, |m, &i| all.get(i).map(|&f| m.min(f)))?,
        None => all.iter().copied().min().unwrap_or(i64::MAX),
    };
    Some((all, least))
}

/// Where a chunk's lines sit in the file, to name bad records.
enum LineMap {
    /// Line numbers run on from `first` (whole files).
    Sequential,
    /// JSON array elements: element i starts on line `lines[i]`.
    Elements(Vec<u64>),
    /// A byte range: the line number is computed (slowly) only when needed.
    Offset,
}

#[allow(clippy::too_many_arguments)]
fn read_text(cfg: &ReadConfig, out: &Output, path: &Path, start: u64, end: u64, key: &str, resume: Option<Resume>, tx: &BatchSender) -> Result<bool> {
    let io = |e| ConnectorError::io(path, e);
    let ranged = start > 0 || end != u64::MAX;
    // A bounded, uncompressed file (not a JSON array) is decoded where the kernel caches it.
    if cfg.mmap && !cfg.watch {
        if let Some(mapped) = super::mapped::MappedFile::open(&File::open(path).map_err(io)?) {
            let data = mapped.bytes();
            let array = !ranged && cfg.format == FileFormat::Json && starts_with_array(&mut &data[..]).map_err(io)?;
            if !array && !starts_gzip(data) {
                return read_mapped_text(cfg, out, path, &mapped, start, end, key, resume, tx);
            }
        }
    }
    let mut map = LineMap::Sequential;
    // where this range's first line starts: `start`, or past the line crossing it (which the
    // previous range reads)
    let mut first_line = start;
    let mut reader: Box<dyn BufRead + Send> = if ranged {
        let mut f = File::open(path).map_err(io)?;
        map = LineMap::Offset;
        match resume {
            // a restored position is a line start of this range
            Some(r) => {
                f.seek(SeekFrom::Start(r.offset)).map_err(io)?;
                Box::new(RangeReader { inner: BufReader::with_capacity(1 << 20, f), pos: r.offset, end, at_line_start: true })
            }
            None => {
                let mut pos = 0;
                if start > 0 {
                    f.seek(SeekFrom::Start(start - 1)).map_err(io)?;
                    pos = start - 1;
                } else {
                    map = LineMap::Sequential;
                }
                let mut r = RangeReader { inner: BufReader::with_capacity(1 << 20, f), pos, end, at_line_start: true };
                if start > 0 {
                    // The line holding byte start-1 belongs to the previous range.
                    let mut skipped = Vec::new();
                    r.read_until(b'\n', &mut skipped).map_err(io)?;
                    first_line = start - 1 + skipped.len() as u64;
                }
                Box::new(r)
            }
        }
    } else {
        let mut r = open_text(path)?;
        if cfg.format == FileFormat::Json && starts_with_array(&mut r).map_err(io)? {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).map_err(io)?;
            let (lines, starts) = json_array_to_lines(&bytes).map_err(|m| ConnectorError::Malformed { location: path.display().to_string(), message: m })?;
            map = LineMap::Elements(starts);
            let mut cursor = std::io::Cursor::new(lines);
            if let Some(r) = resume {
                cursor.set_position(r.offset);
            }
            Box::new(cursor)
        } else if let Some(resume) = resume.filter(|r| r.offset > 0) {
            if is_gzip(path) {
                // decompressed offsets: read up to the position again
                std::io::copy(&mut (&mut r).take(resume.offset), &mut std::io::sink()).map_err(io)?;
                r
            } else {
                let mut f = File::open(path).map_err(io)?;
                f.seek(SeekFrom::Start(resume.offset)).map_err(io)?;
                Box::new(BufReader::with_capacity(1 << 20, f))
            }
        } else {
            r
        }
    };
    let mut text = TextRead::try_new(cfg, out, path, key, tx, map, first_line, resume)?;
    if text.at_header(start, resume) {
        let mut header = Vec::new();
        let n = reader.read_until(b'\n', &mut header).map_err(io)?;
        text.skip_header(n);
    }
    let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        let mut lines = 0usize;
        let mut eof = false;
        let mut first_row_at: Option<Instant> = None;
        // Whole buffers at a time (one copy, newlines found with SIMD), cut after the line that
        // fills the batch; a partial last line waits for its end while watching.
        loop {
            let buf = reader.fill_buf().map_err(io)?;
            if buf.is_empty() {
                if !cfg.watch {
                    if chunk.last().is_some_and(|b| *b != b'\n') {
                        chunk.push(b'\n');
                        lines += 1;
                    }
                    eof = true;
                    break;
                }
                // Tailing: release a partial batch after the timeout, else wait for more lines.
                let waited = first_row_at.map(|t| t.elapsed());
                if lines > 0 && waited.is_some_and(|w| w >= cfg.batch.timeout) {
                    break;
                }
                if tx.is_closed() {
                    return Ok(false);
                }
                std::thread::sleep(cfg.poll);
                continue;
            }
            let base = chunk.len();
            let mut take = buf.len();
            let mut full = false;
            for i in memchr::memchr_iter(b'\n', buf) {
                lines += 1;
                first_row_at.get_or_insert_with(Instant::now);
                if text.sizer.is_full(lines, base + i + 1) {
                    take = i + 1;
                    full = true;
                    break;
                }
            }
            chunk.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if full {
                break;
            }
        }
        // bytes of a partial last line, kept back while watching
        let carry = match chunk.last() {
            None | Some(b'\n') => 0,
            Some(_) => chunk.len() - memchr::memrchr(b'\n', &chunk).map_or(0, |i| i + 1),
        };
        let tail = chunk.split_off(chunk.len() - carry);
        if lines > 0 && !text.deliver(&chunk, lines)? {
            return Ok(false);
        }
        chunk.clear();
        chunk.extend_from_slice(&tail);
        if eof {
            return Ok(true);
        }
    }
}

/// Reads the lines of a mapped text file that start in `[start, end)` (all of it when `end` is
/// `u64::MAX`): each chunk is a slice of the map, decoded where the kernel caches the file,
/// without `read`'s copy into a buffer and the buffer's copy into a chunk. The pages behind the
/// reading are let go as it moves on, so that the process does not count the file as its
/// memory.
#[allow(clippy::too_many_arguments)]
fn read_mapped_text(
    cfg: &ReadConfig,
    out: &Output,
    path: &Path,
    mapped: &super::mapped::MappedFile,
    start: u64,
    end: u64,
    key: &str,
    resume: Option<Resume>,
    tx: &BatchSender,
) -> Result<bool> {
    let data = mapped.bytes();
    // a range after the first numbers its bad lines by counting the lines before them
    let map = if start > 0 { LineMap::Offset } else { LineMap::Sequential };
    // the lines that start before `end`: the one crossing it is read whole, and the next range,
    // starting there, skips it
    let limit = next_line_start(data, end);
    let first_line = next_line_start(data, start);
    let mut text = TextRead::try_new(cfg, out, path, key, tx, map, first_line as u64, resume)?;
    let mut pos = usize::try_from(text.chunk_offset).unwrap_or(usize::MAX).min(data.len());
    if text.at_header(start, resume) {
        let n = next_line_start(data, pos as u64 + 1) - pos;
        text.skip_header(n);
        pos += n;
    }
    mapped.read_sequentially();
    // bytes per line so far, to guess where the next chunk ends
    let mut line_len = 0usize;
    while pos < limit {
        let rest = &data[pos..limit];
        let rows = text.sizer.max_rows().max(1);
        let (take, lines) = chunk_end(rest, rows, text.sizer.max_bytes(), line_len.saturating_mul(rows));
        line_len = take.checked_div(lines).unwrap_or(line_len);
        let chunk = &rest[..take];
        let delivered = if chunk.last() == Some(&b'\n') {
            text.deliver(chunk, lines)?
        } else {
            // the file's last line, without its newline
            let mut last = Vec::with_capacity(chunk.len() + 1);
            last.extend_from_slice(chunk);
            last.push(b'\n');
            text.deliver(&last, lines + 1)?
        };
        if !delivered {
            return Ok(false);
        }
        pos += take;
        mapped.let_go_before(pos as u64);
    }
    Ok(true)
}

/// Where the next chunk of `rest` ends, and how many newlines it holds: after its `rows`-th
/// newline, or after the first newline that brings it to `max_bytes`, whichever comes first
/// (`BatchSizer::is_full`); all of `rest` when neither does. The newlines are counted in bulk
/// up to `guess` bytes, then one at a time back or forward to the end: with a good guess (the
/// bytes of `rows` lines so far) only a few lines are looked at one by one.
fn chunk_end(rest: &[u8], rows: usize, max_bytes: Option<usize>, guess: usize) -> (usize, usize) {
    let count = |b: &[u8]| memchr::memchr_iter(b'\n', b).count();
    let by_bytes = max_bytes.and_then(|m| {
        let from = m.saturating_sub(1);
        memchr::memchr(b'\n', rest.get(from..)?).map(|i| from + i + 1)
    });
    let g = guess.min(rest.len()).min(by_bytes.unwrap_or(usize::MAX));
    let before = count(&rest[..g]);
    // after the `rows`-th newline, if there is one
    let by_rows = if before >= rows {
        memchr::memrchr_iter(b'\n', &rest[..g]).nth(before - rows).map(|i| i + 1)
    } else {
        memchr::memchr_iter(b'\n', &rest[g..]).nth(rows - before - 1).map(|i| g + i + 1)
    };
    match (by_rows, by_bytes) {
        (Some(r), None) => (r, rows),
        (Some(r), Some(b)) if r <= b => (r, rows),
        // `g` is never past `b`: the lines up to `g` are counted already
        (_, Some(b)) => (b, before + count(&rest[g..b])),
        (None, None) => (rest.len(), before + count(&rest[g..])),
    }
}

/// The offset of the first line that starts at or after `at` in `data` (its length when none
/// does): `at` itself when it follows a newline.
fn next_line_start(data: &[u8], at: u64) -> usize {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    if at == 0 {
        return 0;
    }
    if at > data.len() {
        return data.len();
    }
    memchr::memchr(b'\n', &data[at - 1..]).map_or(data.len(), |i| at + i)
}

/// One text unit being read: where it is (offset, line, JSON array element), and how each
/// chunk of whole lines is decoded, its bad records handled and its batches handed out with
/// their positions.
struct TextRead<'a> {
    cfg: &'a ReadConfig,
    path: &'a Path,
    key: &'a str,
    tx: &'a BatchSender,
    map: LineMap,
    decoder: TextDecoder,
    sizer: crate::batching::BatchSizer,
    bad_log: BadRecordLog,
    /// a split's bad records are numbered by the lines before them, counted once as chunks pass
    counted: LinesBefore,
    /// where the next chunk starts
    chunk_offset: u64,
    line_no: u64,
    element: usize,
    /// rows at the resumed position already handed out before the restore
    skip_rows: usize,
}

impl<'a> TextRead<'a> {
    #[allow(clippy::too_many_arguments)]
    fn try_new(
        cfg: &'a ReadConfig,
        out: &Output,
        path: &'a Path,
        key: &'a str,
        tx: &'a BatchSender,
        map: LineMap,
        first_line: u64,
        resume: Option<Resume>,
    ) -> Result<Self> {
        Ok(Self {
            cfg,
            path,
            key,
            tx,
            map,
            decoder: match (out.projection, out.checked) {
                (Some(projection), Some(checked)) => TextDecoder::checking(Arc::clone(&cfg.schema), projection, checked, cfg.format, decode_rows(&cfg.batch))?,
                _ => TextDecoder::try_new(Arc::clone(&cfg.schema), out.projection, cfg.format, decode_rows(&cfg.batch))?,
            },
            sizer: cfg.batch.sizer(),
            bad_log: if cfg.warns { BadRecordLog::default() } else { BadRecordLog::unlogged() },
            counted: LinesBefore::default(),
            chunk_offset: resume.map_or(first_line, |r| r.offset),
            line_no: resume.map_or(1, |r| r.line),
            element: resume.map_or(0, |r| r.element),
            skip_rows: resume.map_or(0, |r| r.rows),
        })
    }

    /// True when the reading starts on a CSV header line, to be skipped.
    fn at_header(&self, start: u64, resume: Option<Resume>) -> bool {
        matches!(self.cfg.format, FileFormat::Csv { has_headers: true, .. }) && start == 0 && resume.is_none()
    }

    /// The header line, `n` bytes, is skipped.
    fn skip_header(&mut self, n: usize) {
        self.line_no += 1;
        self.chunk_offset += n as u64;
    }

    /// Decodes `chunk` (`lines` whole lines, each ending in a newline) and hands out its
    /// batches; false when nobody listens any more.
    fn deliver(&mut self, chunk: &[u8], lines: usize) -> Result<bool> {
        let first = self.line_no;
        let first_element = self.element;
        let map = &self.map;
        let line_of = |i: usize| -> u64 {
            match map {
                LineMap::Sequential => first + i as u64,
                LineMap::Elements(starts) => starts.get(first_element + i).copied().unwrap_or(0),
                LineMap::Offset => i as u64,
            }
        };
        let (batches, bad) = self.decoder.decode_chunk(chunk, &line_of)?;
        if !bad.is_empty() {
            let bad = match self.map {
                LineMap::Offset => self.counted.renumber(self.path, self.chunk_offset, &bad)?,
                _ => bad,
            };
            self.bad_log.handle(&self.cfg.name, self.cfg.failure, &self.cfg.metrics, &self.path.display().to_string(), &bad)?;
        }
        let sent_at = Instant::now();
        let at_chunk = Resume { offset: self.chunk_offset, rows: 0, line: self.line_no, element: self.element, filter: 0 };
        let after_chunk =
            Resume { offset: self.chunk_offset + chunk.len() as u64, rows: 0, line: self.line_no + lines as u64, element: self.element + lines, filter: 0 };
        let last = batches.len().saturating_sub(1);
        // rows of this chunk handed out, counting those a restore skips
        let mut handed = 0usize;
        for (i, b) in batches.into_iter().enumerate() {
            let rows = b.num_rows();
            let b = if self.skip_rows >= rows {
                self.skip_rows -= rows;
                b.slice(rows, 0)
            } else {
                let s = b.slice(self.skip_rows, rows - self.skip_rows);
                self.skip_rows = 0;
                s
            };
            handed += rows;
            let position = if i == last { after_chunk } else { Resume { rows: at_chunk.rows + handed, ..at_chunk } };
            if !send(self.cfg, self.tx, b, self.key, position.to_value()) {
                return Ok(false);
            }
        }
        // Time blocked on a full channel is time the job took downstream.
        self.sizer.observe(lines, sent_at.elapsed());
        self.line_no += lines as u64;
        self.element += lines;
        self.chunk_offset += chunk.len() as u64;
        Ok(true)
    }
}

/// Lines of a byte-range partition are numbered only when one is bad: count the newlines
/// before the chunk (the slow path, taken only on error).
/// Lines counted in a file from its start up to an offset, moved forward as a split's chunks with
/// bad records come (in offset order), so that numbering them reads each byte once, not the
/// whole prefix per chunk.
#[derive(Debug, Default)]
struct LinesBefore {
    offset: u64,
    lines: u64,
}

impl LinesBefore {
    /// `bad`, numbered within the chunk at `chunk_offset`, numbered within the file.
    fn renumber(&mut self, path: &Path, chunk_offset: u64, bad: &[BadRecord]) -> Result<Vec<BadRecord>> {
        if chunk_offset < self.offset {
            *self = Self::default();
        }
        let mut f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        f.seek(SeekFrom::Start(self.offset)).map_err(|e| ConnectorError::io(path, e))?;
        let mut r = BufReader::new(f.take(chunk_offset - self.offset));
        loop {
            let buf = r.fill_buf().map_err(|e| ConnectorError::io(path, e))?;
            if buf.is_empty() {
                break;
            }
            self.lines += memchr::memchr_iter(b'\n', buf).count() as u64;
            let n = buf.len();
            r.consume(n);
        }
        self.offset = chunk_offset;
        Ok(bad.iter().map(|b| BadRecord { line: self.lines + 1 + b.line, message: b.message.clone() }).collect())
    }
}

/// A reader over the lines that *start* before `end`: the line crossing `end` is read whole,
/// and the next range skips it.
struct RangeReader {
    inner: BufReader<File>,
    pos: u64,
    end: u64,
    at_line_start: bool,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for RangeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.end && self.at_line_start {
            return Ok(&[]);
        }
        let (pos, end) = (self.pos, self.end);
        let buf = self.inner.fill_buf()?;
        Ok(if pos < end {
            // up to the range's end; the line crossing it is finished by the next call
            &buf[..buf.len().min(usize::try_from(end - pos).unwrap_or(usize::MAX))]
        } else {
            // the rest of the line that crossed the end, and nothing after it
            &buf[..memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1)]
        })
    }

    fn consume(&mut self, amt: usize) {
        if amt > 0 {
            self.at_line_start = self.inner.buffer().get(amt - 1) == Some(&b'\n');
        }
        self.pos += amt as u64;
        self.inner.consume(amt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::logical_expr::{col, lit};

    /// Rows of text unit `[start, end)` of `path`, each with the position handed out after its
    /// batch: read through a memory map when `mmap`, else with `read`.
    fn text_rows(source: &FileSource, mmap: bool, path: &Path, start: u64, end: u64, resume: Option<Resume>) -> Result<Vec<(i64, Resume)>> {
        let cfg = ReadConfig { mmap, ..(*source.cfg).clone() };
        let (tx, mut rx) = mpsc::channel(100_000);
        let schema = source.schema();
        let out = Output { schema: &schema, projection: None, filter: None, dynamic: None, checked: None, floors: None };
        assert!(read_text(&cfg, &out, path, start, end, "k", resume, &tx)?);
        drop(tx);
        let mut rows = Vec::new();
        while let Ok(item) = rx.try_recv() {
            let (batch, position) = item.unwrap();
            let position = position.and_then(|(_, v)| Resume::from_value(&v)).unwrap();
            rows.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().map(|n| (*n, position)));
        }
        Ok(rows)
    }

    /// `chunk_end` ends a chunk where a line-by-line walk asking `BatchSizer::is_full` does,
    /// whatever the guess (none, short, long, past the end), by rows or by bytes, with lines
    /// of every width, no newline at the end, and fewer lines than a chunk.
    #[test]
    fn chunk_end_is_where_the_line_by_line_walk_ends() {
        fn walk(rest: &[u8], rows: usize, max_bytes: Option<usize>) -> (usize, usize) {
            let mut lines = 0;
            for i in memchr::memchr_iter(b'\n', rest) {
                lines += 1;
                if lines >= rows || max_bytes.is_some_and(|b| i + 1 >= b) {
                    return (i + 1, lines);
                }
            }
            (rest.len(), lines)
        }
        let mut seed = 7u64;
        let mut rnd = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for round in 0..300 {
            let mut text = Vec::new();
            for _ in 0..rnd(60) {
                text.extend(std::iter::repeat_n(b'x', rnd(if round % 3 == 0 { 3 } else { 40 }) as usize));
                text.push(b'\n');
            }
            if rnd(2) == 0 {
                text.extend_from_slice(b"tail");
            }
            let rows = 1 + rnd(20) as usize;
            let max_bytes = (rnd(3) == 0).then(|| rnd(text.len() as u64 + 5) as usize);
            for guess in [0, 1, rnd(text.len() as u64 + 1) as usize, text.len(), text.len() * 2, usize::MAX] {
                assert_eq!(
                    chunk_end(&text, rows, max_bytes, guess),
                    walk(&text, rows, max_bytes),
                    "round {round}, rows {rows}, bytes {max_bytes:?}, guess {guess}"
                );
            }
        }
    }

    /// A text file read through a memory map gives what `read` gives: the same rows, split
    /// into byte ranges anywhere (mid-line, on a newline, on a line start), the same positions
    /// after each batch, and from each of those the same rest; a last line without its
    /// newline, blank lines and a CSV header are read alike; a bad line is named by the same
    /// line of the file.
    #[test]
    fn a_mapped_text_file_is_read_as_with_read() {
        let dir = tempfile::tempdir().unwrap();
        // JSON Lines, lines of different widths, a blank line, no newline after the last
        let path = dir.path().join("n.jsonl");
        let mut text = String::new();
        for n in 0..300i64 {
            text.push_str(&format!("{{\"n\": {n}, \"pad\": \"{}\"}}\n", "x".repeat((n % 13) as usize)));
            if n == 150 {
                text.push('\n');
            }
        }
        text.pop();
        std::fs::write(&path, &text).unwrap();
        let mut p = Properties::new("src");
        p.insert("path", path.display().to_string());
        p.insert("batch.size", "7");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        let len = text.len() as u64;
        let all: Vec<i64> = (0..300).collect();
        // a line start, its newline, mid-line, the blank line, the last line, byte 1
        let line_start = text.find("{\"n\": 77,").unwrap() as u64;
        let blank = text.find("\n\n").unwrap() as u64 + 1;
        let last_line = text.rfind('\n').unwrap() as u64 + 1;
        for cuts in [
            vec![],
            vec![line_start],
            vec![line_start - 1],
            vec![line_start + 5],
            vec![blank, blank + 1],
            vec![1, len - 1],
            vec![last_line, len],
            vec![100, 2000, 2001, 5000],
        ] {
            let mut bounds = vec![0];
            bounds.extend(&cuts);
            bounds.push(u64::MAX);
            let mut both = Vec::new();
            for mmap in [true, false] {
                let mut rows = Vec::new();
                for w in bounds.windows(2) {
                    let unit = text_rows(&source, mmap, &path, w[0], w[1], None).unwrap();
                    // from each position handed out, the rest of the unit
                    let mut positions: Vec<Resume> = unit.iter().map(|r| r.1).collect();
                    positions.dedup();
                    for at in positions {
                        let rest: Vec<i64> = text_rows(&source, mmap, &path, w[0], w[1], Some(at)).unwrap().iter().map(|r| r.0).collect();
                        let after: Vec<i64> = unit.iter().skip_while(|r| r.1 != at).skip_while(|r| r.1 == at).map(|r| r.0).collect();
                        assert_eq!(rest, after, "resumed at {at:?} in {w:?}, mmap {mmap}");
                    }
                    rows.extend(unit);
                }
                assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), all, "cut at {cuts:?}, mmap {mmap}");
                both.push(rows);
            }
            assert_eq!(both[0], both[1], "the same positions mapped or read, cut at {cuts:?}");
        }

        // CSV with a header, read whole and in two ranges
        let csv = dir.path().join("n.csv");
        let body: String = (0..50).map(|n| format!("{n},{}\n", "y".repeat(n % 5))).collect();
        std::fs::write(&csv, format!("n,pad\n{body}")).unwrap();
        let mut p = Properties::new("src");
        p.insert("path", csv.display().to_string());
        p.insert("batch.size", "4");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        for mmap in [true, false] {
            let whole: Vec<i64> = text_rows(&source, mmap, &csv, 0, u64::MAX, None).unwrap().iter().map(|r| r.0).collect();
            assert_eq!(whole, (0..50).collect::<Vec<_>>(), "mmap {mmap}");
            let mut split: Vec<i64> = text_rows(&source, mmap, &csv, 0, 100, None).unwrap().iter().map(|r| r.0).collect();
            split.extend(text_rows(&source, mmap, &csv, 100, u64::MAX, None).unwrap().iter().map(|r| r.0));
            assert_eq!(split, whole, "mmap {mmap}");
        }

        // a bad line, named by its line in the file, whole or in a later range
        let bad = dir.path().join("bad.jsonl");
        let lines: String = (0..40).map(|n| if n == 33 { "{\"n\": oops}\n".to_string() } else { format!("{{\"n\": {n}}}\n") }).collect();
        std::fs::write(&bad, &lines).unwrap();
        let mut p = Properties::new("src");
        p.insert("path", bad.display().to_string());
        p.insert("batch.size", "5");
        p.insert("failure_strategy", "FailBatch");
        p.insert("schema", "n BIGINT");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        for mmap in [true, false] {
            for start in [0, 100] {
                let err = text_rows(&source, mmap, &bad, start, u64::MAX, None).unwrap_err().to_string();
                assert!(err.contains(&format!("{}:34", bad.display())), "mmap {mmap}, from {start}: {err}");
            }
        }
    }

    #[test]
    fn the_row_filter_is_what_no_scan_wants() {
        let a = datafusion::common::Column::new(Some("bid"), "a");
        let scan1 = vec![datafusion::logical_expr::Expr::Column(a).gt(lit(1)), col("b").lt(lit(2))];
        let scan2 = vec![col("a").eq(lit(5))];
        let f = row_filter(&[scan1.clone(), scan2]).unwrap();
        assert_eq!(f.to_string(), "a > Int32(1) AND b < Int32(2) OR a = Int32(5)");
        assert!(row_filter(&[scan1, Vec::new()]).is_none(), "a scan that wants every row");
        assert!(row_filter(&[]).is_none());
    }

    /// Reads `path` with `filter` from `resume`: the values of `n` and the last position.
    fn read(source: &FileSource, path: &Path, filter: Option<&datafusion::logical_expr::Expr>, resume: Option<Resume>) -> (Vec<i64>, Option<Resume>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let schema = source.schema();
        let out = Output { schema: &schema, projection: None, filter, dynamic: None, checked: None, floors: None };
        assert!(read_parquet(&source.cfg, &out, path, None, None, "k", resume, &tx).unwrap());
        drop(tx);
        let (mut values, mut last) = (Vec::new(), None);
        while let Ok(item) = rx.try_recv() {
            let (batch, position) = item.unwrap();
            values.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
            last = position.and_then(|(_, v)| Resume::from_value(&v));
        }
        (values, last)
    }

    /// `dir/n.parquet`: column `n` = 0..1000 in row groups of 100, and a source reading it in
    /// batches of 64 rows.
    fn numbers_file(dir: &Path) -> (PathBuf, FileSource) {
        let path = dir.join("n.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), Arc::clone(&schema), Some(props)).unwrap();
        w.write(&RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..1000))]).unwrap()).unwrap();
        w.close().unwrap();
        let mut p = Properties::new("src");
        p.insert("path", path.display().to_string());
        p.insert("batch.size", "64");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        (path, source)
    }

    /// A read that publishes event-time floors marks each batch with the least time from its
    /// last row's row group on: found by counting rows through the groups when every row is
    /// handed out (from a resumed offset, over a unit's own groups), by each row's group when
    /// a row filter drops some.
    #[test]
    fn each_batch_carries_the_floor_of_its_last_rows_group() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source) = numbers_file(dir.path());
        // group g holds n = 100g..100g+99; its least "time" here: 100g
        let by_group: Vec<i64> = (0..10).map(|g| g * 100).collect();
        let marks = |groups: Option<Vec<usize>>, filter: Option<&datafusion::logical_expr::Expr>, resume: Option<Resume>| {
            let (tx, mut rx) = mpsc::channel(1024);
            let schema = source.schema();
            let out = Output { schema: &schema, projection: None, filter, dynamic: None, checked: None, floors: Some((&by_group[..], i64::MAX)) };
            assert!(read_parquet(&source.cfg, &out, &path, groups, None, "k", resume, &tx).unwrap());
            drop(tx);
            // (the floor in force after each batch, the batch's last n)
            let (mut seen, mut floor) = (Vec::new(), None::<i64>);
            while let Ok(item) = rx.try_recv() {
                let (batch, _) = item.unwrap();
                if let Some(t) = batch.schema().metadata().get(crate::source::FLOOR_KEY) {
                    let t: i64 = t.parse().unwrap();
                    assert!(floor.is_none_or(|f| t > f), "marked only when it rises");
                    floor = Some(t);
                }
                let n = batch.column(0).as_primitive::<Int64Type>();
                seen.push((floor, n.value(n.len() - 1)));
            }
            seen
        };
        let expect = |seen: &[(Option<i64>, i64)]| {
            assert!(!seen.is_empty());
            for (floor, last) in seen {
                assert_eq!(*floor, Some(last / 100 * 100), "after the batch ending at {last}");
            }
        };
        expect(&marks(None, None, None));
        expect(&marks(None, None, Some(Resume { offset: 250, ..Resume::default() })));
        let unit = marks(Some(vec![3, 5, 7]), None, Some(Resume { offset: 130, ..Resume::default() }));
        assert_eq!(unit.first().map(|s| s.1), Some(593), "130 rows into groups 3, 5 and 7 (530), then 64");
        expect(&unit);
        let third = row_filter(&[vec![(col("n") % lit(3i64)).eq(lit(0i64))]]).unwrap();
        expect(&marks(None, Some(&third), None));
    }

    #[test]
    fn a_filtered_parquet_read_counts_every_row_and_resumes_after_the_rows_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source) = numbers_file(dir.path());
        assert!(source.can_prune(&col("n").gt(lit(3))));
        assert!(!source.can_prune(&col("missing").gt(lit(3))));
        let filter = row_filter(&[vec![(col("n") % lit(3i64)).eq(lit(0i64))]]).unwrap();
        let (all, last) = read(&source, &path, Some(&filter), None);
        assert_eq!(all, (0..1000).filter(|n| n % 3 == 0).collect::<Vec<_>>());
        assert_eq!(source.cfg.metrics.records.load(std::sync::atomic::Ordering::Relaxed), 1000, "dropped rows were read all the same");
        let last = last.unwrap();
        assert_eq!((last.offset, last.filter), (334, filter_fingerprint(&filter)));
        // a restore after 100 kept rows goes on with the 101st kept row
        let at = Resume { offset: 100, filter: filter_fingerprint(&filter), ..Resume::default() };
        let (rest, _) = read(&source, &path, Some(&filter), Some(at));
        assert_eq!(rest, (0..1000).filter(|n| n % 3 == 0).skip(100).collect::<Vec<_>>());
        // a position taken without a filter counts every row: read on without one
        let at = Resume { offset: 990, ..Resume::default() };
        assert_eq!(read(&source, &path, Some(&filter), Some(at)).0, (990..1000).collect::<Vec<_>>());
        // the file is sorted by n: a range reads only the row groups that can hold it
        let before = source.cfg.metrics.records.load(std::sync::atomic::Ordering::Relaxed);
        let range = row_filter(&[vec![col("n").gt_eq(lit(905i64))]]).unwrap();
        assert_eq!(read(&source, &path, Some(&range), None).0, (905..1000).collect::<Vec<_>>());
        assert_eq!(source.cfg.metrics.skipped.load(std::sync::atomic::Ordering::Relaxed), 9, "9 of 10 row groups skipped");
        assert_eq!(source.cfg.metrics.records.load(std::sync::atomic::Ordering::Relaxed) - before, 100, "only the last row group was read");
        // another filter than the checkpoint's: the file again from its start
        let other = row_filter(&[vec![col("n").lt(lit(5i64))]]).unwrap();
        let at = Resume { offset: 100, filter: filter_fingerprint(&filter), ..Resume::default() };
        assert_eq!(read(&source, &path, Some(&other), Some(at)).0, vec![0, 1, 2, 3, 4]);
    }

    /// Text and bytes are decoded as views and handed out as the source declares them, exact
    /// with nulls, whole or behind a row filter; a WHERE clause that keeps most rows is left to
    /// the filter above the scan (not evaluated twice), unless the position it resumes from was
    /// taken with it in the read.
    #[test]
    fn text_read_as_views_comes_out_as_declared_and_a_filter_keeping_most_rows_is_left_above() {
        use arrow::array::{Array, BinaryArray, StringArray};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let text = |n: i64| (n % 7 != 0).then(|| format!("text {n} {}", "x".repeat((n % 40) as usize)));
        let bytes = |n: i64| (n % 5 != 0).then(|| vec![n as u8; (n % 20) as usize]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Binary, true),
        ]));
        let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), Arc::clone(&schema), Some(props)).unwrap();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter((0..1000).map(text))),
                Arc::new(BinaryArray::from_iter((0..1000).map(bytes))),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let mut p = Properties::new("src");
        p.insert("path", path.display().to_string());
        p.insert("batch.size", "64");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        // the inferred schema declares the text as views (crate::text_views), read as such
        assert_eq!(source.schema().field(1).data_type(), &DataType::Utf8View);
        assert_eq!(source.schema().field(2).data_type(), &DataType::BinaryView);
        let declared = declared_views(&schema, &source.schema()).unwrap();
        assert_eq!((declared.field(1).data_type(), declared.field(2).data_type()), (&DataType::Utf8View, &DataType::BinaryView));
        // a declared schema (plain text): read as views, copied out for the rows kept
        let views = as_views(&schema, &schema, &[]).unwrap();
        assert_eq!(views.field(1).data_type(), &DataType::Utf8View);
        assert_eq!(views.field(2).data_type(), &DataType::BinaryView);
        assert!(as_views(&schema, &schema, &[1, 2]).is_none(), "columns a row filter reads stay as they are");
        // (rows as (n, s, b), the last position)
        // (each of the 10 row groups' least event time, for a read that publishes floors)
        let group_floors = [0i64; 10];
        let rows_with = |filter: Option<&datafusion::logical_expr::Expr>, resume: Option<Resume>, floors: bool| {
            let (tx, mut rx) = mpsc::channel(1024);
            let schema = source.schema();
            let floors = floors.then_some((&group_floors[..], i64::MAX));
            let out = Output { schema: &schema, projection: None, filter, dynamic: None, checked: None, floors };
            assert!(read_parquet(&source.cfg, &out, &path, None, None, "k", resume, &tx).unwrap());
            drop(tx);
            let (mut got, mut last) = (Vec::new(), None);
            while let Ok(item) = rx.try_recv() {
                let (batch, position) = item.unwrap();
                assert_eq!(batch.schema().fields(), schema.fields(), "handed out as the source declares them");
                let (s, b) =
                    (arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap(), arrow::compute::cast(batch.column(2), &DataType::Binary).unwrap());
                let (n, s, b) = (batch.column(0).as_primitive::<Int64Type>(), s.as_string::<i32>(), b.as_binary::<i32>());
                for i in 0..batch.num_rows() {
                    let s = (!s.is_null(i)).then(|| s.value(i).to_string());
                    let b = (!b.is_null(i)).then(|| b.value(i).to_vec());
                    got.push((n.value(i), s, b));
                }
                last = position.and_then(|(_, v)| Resume::from_value(&v));
            }
            (got, last.unwrap())
        };
        let rows = |filter: Option<&datafusion::logical_expr::Expr>, resume: Option<Resume>| rows_with(filter, resume, false);
        let want = |keep: &dyn Fn(i64) -> bool| (0..1000).filter(|n| keep(*n)).map(|n| (n, text(n), bytes(n))).collect::<Vec<_>>();
        let (all, last) = rows(None, None);
        assert_eq!(all, want(&|_| true));
        assert_eq!((last.offset, last.filter), (1000, 0));
        // a third kept: in the read, the text of the rows kept copied out of their views
        let third = row_filter(&[vec![(col("n") % lit(3i64)).eq(lit(0i64))]]).unwrap();
        let (kept, last) = rows(Some(&third), None);
        assert_eq!(kept, want(&|n| n % 3 == 0));
        assert_eq!((last.offset, last.filter), (334, filter_fingerprint(&third)));
        // on the text itself, keeping six rows in seven: left to the filter above
        let most = row_filter(&[vec![col("s").is_not_null()]]).unwrap();
        let (kept, last) = rows(Some(&most), None);
        assert_eq!(kept, want(&|_| true));
        assert_eq!((last.offset, last.filter), (1000, 0), "positions count every row");
        // ... but a position taken with it in the read goes on with it
        let at = Resume { offset: 800, filter: filter_fingerprint(&most), ..Resume::default() };
        let (rest, _) = rows(Some(&most), Some(at));
        assert_eq!(rest, want(&|n| n % 7 != 0).split_off(800));
        // on the text, keeping one row in seven (and its text): in the read
        let few = row_filter(&[vec![col("s").is_null().or(col("s").eq(lit("text 1 x")))]]).unwrap();
        let (kept, last) = rows(Some(&few), None);
        assert_eq!(kept, want(&|n| n % 7 == 0 || n == 1));
        assert_eq!(last.filter, filter_fingerprint(&few));
        // a read that publishes event-time floors: its row-group column beside the views
        assert_eq!(rows_with(None, None, true).0, want(&|_| true));
        assert_eq!(rows_with(Some(&third), None, true).0, want(&|n| n % 3 == 0));
        // a declared schema keeps its plain text: read as views, copied out for the rows kept
        p.insert("schema", "n BIGINT, s VARCHAR");
        let declared = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        assert_eq!(declared.schema().field(1).data_type(), &DataType::Utf8);
        for filter in [None, Some(&third), Some(&few)] {
            let (tx, mut rx) = mpsc::channel(1024);
            let schema = declared.schema();
            let out = Output { schema: &schema, projection: None, filter, dynamic: None, checked: None, floors: None };
            assert!(read_parquet(&declared.cfg, &out, &path, None, None, "k", None, &tx).unwrap());
            drop(tx);
            let mut got = Vec::new();
            while let Ok(item) = rx.try_recv() {
                let (batch, _) = item.unwrap();
                assert_eq!(batch.schema().fields(), schema.fields(), "plain text, as declared");
                let (n, s) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_string::<i32>());
                got.extend((0..batch.num_rows()).map(|i| (n.value(i), (!s.is_null(i)).then(|| s.value(i).to_string()))));
            }
            let keep: &dyn Fn(i64) -> bool = match filter {
                None => &|_| true,
                Some(f) if std::ptr::eq(f, &third) => &|n| n % 3 == 0,
                Some(_) => &|n| n % 7 == 0 || n == 1,
            };
            assert_eq!(got, (0..1000).filter(|n| keep(*n)).map(|n| (n, text(n))).collect::<Vec<_>>());
        }
    }

    /// A second read for a hash join's probe side waits for the join's filter to be complete,
    /// then keeps only the rows it passes (or every row, when it would drop too few to pay),
    /// without counting them again in the source's metrics.
    #[test]
    fn a_read_again_waits_for_the_joins_filter_and_keeps_what_it_passes() {
        use datafusion::physical_expr::expressions::{in_list, lit as plit, BinaryExpr, Column, DynamicFilterPhysicalExpr};
        use datafusion::physical_expr::PhysicalExpr;
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, source) = numbers_file(dir.path());
        let schema = source.schema();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let guard = rt.enter();
        let n: Arc<dyn PhysicalExpr> = Arc::new(Column::new("n", 0));
        let values = |batches: Vec<RecordBatch>| batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect::<Vec<i64>>();
        // (the filter once the build side is read, the rows read with it)
        let in_set = in_list(Arc::clone(&n), vec![plit(3i64), plit(500i64), plit(999i64)], &false, &schema).unwrap();
        let most: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(Arc::clone(&n), datafusion::logical_expr::Operator::GtEq, plit(1i64)));
        let cases: Vec<(Arc<dyn PhysicalExpr>, Vec<i64>)> = vec![(in_set, vec![3, 500, 999]), (most, (0..1000).collect()), (plit(false), vec![])];
        for (settled, want) in cases {
            let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![Arc::clone(&n)], plit(true)));
            let parts = source.read_again(None, &[], Arc::clone(&dynamic) as Arc<dyn PhysicalExpr>, false).unwrap();
            assert_eq!(parts.len(), 1);
            let mut stream = parts[0].execute(Arc::new(TaskContext::default()));
            // nothing is read while the join has not read its build side
            let early = rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), stream.next()).await });
            assert!(early.is_err(), "a batch read before the filter was complete");
            dynamic.update(settled).unwrap();
            dynamic.mark_complete();
            let got = rt.block_on(async { stream.map(Result::unwrap).collect::<Vec<_>>().await });
            assert_eq!(values(got), want);
        }
        assert_eq!(source.cfg.metrics.records.load(std::sync::atomic::Ordering::Relaxed), 0, "rows read again are not counted again");
        // a read whose join goes away before its filter is complete ends
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![Arc::clone(&n)], plit(true)));
        let parts = source.read_again(None, &[], dynamic as Arc<dyn PhysicalExpr>, true).unwrap();
        let stream = parts[0].execute(Arc::new(TaskContext::default()));
        std::thread::sleep(Duration::from_millis(100));
        drop(stream);
        drop(guard);
        let t = Instant::now();
        rt.shutdown_timeout(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(2), "the reading thread still waited for the filter");
    }

    /// Two reads in order of a text file, one of a column checked by all three and one of all
    /// three, hand out the same rows partition by partition, records bad in any column (a
    /// type in a column the first does not build, a line cut short) skipped by both; a read
    /// of the one column alone keeps the records bad elsewhere, which is why the first checks.
    #[test]
    fn text_read_in_order_twice_numbers_the_same_rows() {
        use futures::StreamExt;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _guard = rt.enter();
        // (format, files: one partition each)
        for (ext, files) in [("jsonl", 1), ("jsonl", 3), ("csv", 2)] {
            let dir = tempfile::tempdir().unwrap();
            let json = ext == "jsonl";
            let mut good = 0usize;
            for f in 0..files {
                let mut text = if json { String::new() } else { "k,v,t\n".to_string() };
                for i in 0..14_000 {
                    // (the first lines, from which the schema is inferred, are all good)
                    let bad = if i > crate::format::schema::INFER_MAX_RECORDS { i % 37 } else { 1 };
                    text.push_str(&match (json, bad) {
                        (true, 0) => format!("{{\"k\": {}, \"v\": {i}, \"t\": {i}}}\n", i % 50),
                        (true, 5) => format!("{{\"k\": \"x\", \"v\": {i}, \"t\": \"t{i}\"}}\n"),
                        (true, 9) => format!("{{\"k\": {}, \"v\": {i}\n", i % 50),
                        (true, _) => format!("{{\"k\": {}, \"v\": {i}, \"t\": \"t{i}\"}}\n", i % 50),
                        (false, 0) => format!("{},{i},t{i},more\n", i % 50),
                        (false, 5) => format!("x,{i},t{i}\n"),
                        (false, 9) => format!("{},{i}.5,t{i}\n", i % 50),
                        (false, _) => format!("{},{i},t{i}\n", i % 50),
                    });
                    good += usize::from(!matches!(bad, 0 | 5 | 9));
                }
                std::fs::write(dir.path().join(format!("r{f}.{ext}")), text).unwrap();
            }
            let name = format!("{files} {ext}");
            let path = dir.path().join(format!("r*.{ext}"));
            let mut p = Properties::new("src");
            p.insert("path", path.display().to_string());
            p.insert("batch.size", "100");
            let source = FileSource::try_new(&p, &Properties::new(""), files).unwrap();
            let read = |parts: Vec<Arc<dyn PartitionStream>>| -> Vec<Vec<RecordBatch>> {
                parts.iter().map(|part| rt.block_on(part.execute(Arc::new(TaskContext::default())).map(Result::unwrap).collect::<Vec<_>>())).collect()
            };
            let column = |batches: &[RecordBatch], c: usize| -> Vec<i64> {
                batches.iter().flat_map(|b| b.column(c).as_primitive::<Int64Type>().values().to_vec()).collect()
            };
            let v = source.schema().index_of("v").unwrap();
            let narrow = read(source.read_in_order(Some(&[v]), Some(&[0, 1, 2]), &[], false).unwrap());
            let wide = read(source.read_in_order(Some(&[0, 1, 2]), None, &[], true).unwrap());
            let alone = read(source.read_in_order(Some(&[v]), None, &[], false).unwrap());
            assert_eq!(narrow.len(), wide.len(), "{name}");
            assert_eq!(narrow.len(), files, "{name}: a partition a file");
            for (n, w) in narrow.iter().zip(&wide) {
                assert_eq!(n.iter().map(|b| b.num_columns()).max(), Some(1));
                let (n, w) = (column(n, 0), column(w, v));
                assert!(n == w, "{name}: {} rows and {} differ from row {:?} on", n.len(), w.len(), n.iter().zip(&w).position(|(a, b)| a != b));
            }
            let rows = |r: &[Vec<RecordBatch>]| r.iter().flatten().map(|b| b.num_rows()).sum::<usize>();
            assert_eq!(rows(&wide), good, "{name}");
            assert!(rows(&alone) > good, "{name}: a read of one column keeps records bad in others");
            assert_eq!(source.cfg.metrics.records.load(std::sync::atomic::Ordering::Relaxed), good as u64, "{name}: only the counted read counts");
        }
    }

    /// A file of one row group is read by as many partitions as asked, each a range of its
    /// rows (no row twice, none lost), with a pushed filter too, and a partition executed again
    /// after some batches goes on from there; ranges are shared out among a few groups.
    #[test]
    fn a_single_row_group_is_read_in_row_ranges_by_the_partitions() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), Arc::clone(&schema), None).unwrap();
        w.write(&RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from_iter_values(0..200_000))]).unwrap()).unwrap();
        w.close().unwrap();
        let mut p = Properties::new("src");
        p.insert("path", path.display().to_string());
        let source = FileSource::try_new(&p, &Properties::new(""), 3).unwrap();
        let units = source.split_units();
        let ranges: Vec<(usize, u64, u64)> = units
            .iter()
            .flatten()
            .map(|u| match u {
                Unit::GroupRows { group, start, end, .. } => (*group, *start, *end),
                other => panic!("not a row range: {other:?}"),
            })
            .collect();
        assert_eq!(ranges, vec![(0, 0, 66_667), (0, 66_667, 133_334), (0, 133_334, 200_000)]);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let ctx = Arc::new(TaskContext::default());
        let values = |batches: Vec<RecordBatch>| batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect::<Vec<i64>>();
        let read_all = |parts: &[Arc<dyn PartitionStream>]| {
            parts
                .iter()
                .flat_map(|part| values(rt.block_on(async { part.execute(Arc::clone(&ctx)).map(Result::unwrap).collect::<Vec<_>>().await })))
                .collect::<Vec<_>>()
        };
        assert_eq!(read_all(&source.partitions(None)), (0..200_000).collect::<Vec<_>>());
        // a WHERE clause read with (it drops nearly every row)
        let every_1000 = datafusion::logical_expr::binary_expr(
            datafusion::logical_expr::col("n") % datafusion::logical_expr::lit(1000i64),
            datafusion::logical_expr::Operator::Eq,
            datafusion::logical_expr::lit(0i64),
        );
        let parts = source.partitions_pruned(None, &[vec![every_1000]]);
        assert_eq!(read_all(&parts), (0..200).map(|k| k * 1000).collect::<Vec<_>>());
        // the middle range, executed again after 3 batches of 8192 rows
        let parts = source.partitions(None);
        let first = rt.block_on(async { parts[1].execute(Arc::clone(&ctx)).take(3).map(Result::unwrap).collect::<Vec<_>>().await });
        let again = rt.block_on(async { parts[1].execute(Arc::clone(&ctx)).map(Result::unwrap).collect::<Vec<_>>().await });
        let mut got = values(first);
        assert_eq!(got, (66_667..66_667 + 3 * 8192).collect::<Vec<_>>());
        got.extend(values(again));
        assert_eq!(got, (66_667..133_334).collect::<Vec<_>>());
        // shared out: 3 groups among 4 partitions (the first split in two), small groups whole
        let meta = |groups: &[i64]| {
            let path = dir.path().join("groups.parquet");
            let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(150_000)).build();
            let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), Arc::clone(&schema), Some(props)).unwrap();
            for rows in groups {
                w.write(&RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from_iter_values(0..*rows))]).unwrap()).unwrap();
                w.flush().unwrap();
            }
            w.close().unwrap();
            parquet_metadata(&path).unwrap()
        };
        assert_eq!(split_groups(&meta(&[150_000, 150_000, 150_000]), 4), Some(vec![(0, 0, 75_000), (0, 75_000, 150_000), (1, 0, 150_000), (2, 0, 150_000)]));
        assert_eq!(split_groups(&meta(&[150_000, 150_000]), 2), None, "as many groups as partitions");
        assert_eq!(split_groups(&meta(&[100_000]), 8), None, "too few rows to split in parts of 65 536");
        assert_eq!(split_groups(&meta(&[150_000, 10]), 8), Some(vec![(0, 0, 75_000), (0, 75_000, 150_000), (1, 0, 10)]));
    }

    /// A Parquet partition executed to publish its event-time floor says, as each batch is
    /// handed out, the least time of the rows still to come (row groups read in turn by two
    /// partitions, a file after another, times out of order within a group), and never more.
    #[test]
    fn a_parquet_partition_publishes_the_least_time_still_to_come() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true), Field::new("v", DataType::Int64, false)]));
        // a.parquet: ts 0..1000 in groups of 100, each group reversed; b.parquet: 1000..1500,
        // with a group holding a null time
        for (name, times) in [
            ("a.parquet", (0..10).flat_map(|g| (g * 100..g * 100 + 100).rev()).map(Some).collect::<Vec<_>>()),
            ("b.parquet", (1000..1500).map(|t| (t != 1234).then_some(t)).collect()),
        ] {
            let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
            let mut w = parquet::arrow::ArrowWriter::try_new(File::create(dir.path().join(name)).unwrap(), Arc::clone(&schema), Some(props)).unwrap();
            let n = times.len() as i64;
            w.write(&RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(times)), Arc::new(Int64Array::from_iter_values(0..n))]).unwrap())
                .unwrap();
            w.close().unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _guard = rt.enter();
        for partitions in [1, 2] {
            let mut p = Properties::new("src");
            p.insert("path", format!("{}/*.parquet", dir.path().display()));
            p.insert("batch.size", "30");
            p.insert("event_time", "ts");
            let source = FileSource::try_new(&p, &Properties::new(""), partitions).unwrap();
            assert_eq!(source.floor_column(), Some("ts"));
            let mut all = Vec::new();
            for part in source.partitions(Some(&[0])) {
                let floor = Arc::new(crate::source::EventTimeFloor::default());
                let stream = crate::source::publishing_floor(&floor, || part.execute(Arc::new(TaskContext::default())));
                let batches: Vec<RecordBatch> = rt.block_on(async { stream.map(Result::unwrap).collect::<Vec<_>>().await });
                assert!(floor.get().is_some());
                let times: Vec<Option<i64>> = batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().iter().collect::<Vec<_>>()).collect();
                assert!(batches.iter().all(|b| b.schema().metadata().is_empty() && b.num_columns() == 1), "the mark and the group column stay inside");
                all.extend(times.iter().flatten().copied());
            }
            all.sort_unstable();
            assert_eq!(all, (0..1500).filter(|&t| t != 1234).collect::<Vec<_>>(), "{partitions} partitions");
        }
        // batch by batch: the floor published once a batch is out is at most every later time
        let mut p = Properties::new("src");
        p.insert("path", format!("{}/*.parquet", dir.path().display()));
        p.insert("batch.size", "30");
        p.insert("event_time", "ts");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        let part = &source.partitions(None)[0];
        let floor = Arc::new(crate::source::EventTimeFloor::default());
        let mut stream = crate::source::publishing_floor(&floor, || part.execute(Arc::new(TaskContext::default())));
        let mut seen: Vec<(Option<i64>, Vec<i64>)> = Vec::new();
        rt.block_on(async {
            while let Some(b) = stream.next().await {
                let b = b.unwrap();
                seen.push((floor.get(), b.column(0).as_primitive::<Int64Type>().iter().flatten().collect()));
            }
        });
        let mut published = Vec::new();
        for (i, (f, _)) in seen.iter().enumerate() {
            let f = f.expect("a floor from the first batch on");
            let later = seen[i + 1..].iter().flat_map(|(_, t)| t.iter().copied()).min().unwrap_or(i64::MAX);
            assert!(f <= later, "batch {i}: floor {f} above a later time {later}");
            published.push(f);
        }
        assert!(published.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(published.first(), Some(&0));
        assert_eq!(published.last(), Some(&1400), "the last group of b.parquet starts at 1400");
        // a file whose schema carries metadata of its own (pandas, Spark) keeps it, marked or not
        let meta = std::collections::HashMap::from([("pandas".to_string(), "{}".to_string())]);
        let tagged = Arc::new(Schema::new_with_metadata(vec![Field::new("ts", DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None), false)], meta));
        let secs = dir.path().join("seconds.parquet");
        let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(10)).build();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&secs).unwrap(), Arc::clone(&tagged), Some(props)).unwrap();
        w.write(&RecordBatch::try_new(tagged, vec![Arc::new(arrow::array::TimestampSecondArray::from_iter_values(100..150))]).unwrap()).unwrap();
        w.close().unwrap();
        for (declared, floors) in [(None, Some(140_000)), (Some("ts BIGINT"), None)] {
            let mut p = Properties::new("src");
            p.insert("path", secs.display().to_string());
            p.insert("event_time", "ts");
            if let Some(d) = declared {
                // the rows become seconds as integers: the statistics' milliseconds would be
                // far above them, so none is published
                p.insert("schema", d);
            }
            let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
            let floor = Arc::new(crate::source::EventTimeFloor::default());
            let part = &source.partitions(None)[0];
            let stream = crate::source::publishing_floor(&floor, || part.execute(Arc::new(TaskContext::default())));
            let got = rt.block_on(async { stream.map(Result::unwrap).collect::<Vec<_>>().await });
            assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 50, "{declared:?}");
            assert_eq!(floor.get(), floors, "{declared:?}");
        }
        // without being asked to, a partition publishes nothing
        let untouched = Arc::new(crate::source::EventTimeFloor::default());
        let got = rt.block_on(async { part.execute(Arc::new(TaskContext::default())).map(Result::unwrap).collect::<Vec<_>>().await });
        assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 1500);
        assert_eq!(untouched.get(), None);
    }

    /// A partition executed again (after its stream failed) goes on after the last batch it
    /// handed out, across the files it reads: each row once.
    #[test]
    fn a_partition_executed_again_goes_on_after_the_last_batch_handed_out() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, rows) in [("a.jsonl", 0..50), ("b.jsonl", 50..80)] {
            let text: String = rows.map(|n| format!("{{\"n\":{n}}}\n")).collect();
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut p = Properties::new("src");
        p.insert("path", format!("{}/*.jsonl", dir.path().display()));
        p.insert("schema", "n BIGINT");
        p.insert("batch.size", "7");
        let source = FileSource::try_new(&p, &Properties::new(""), 1).unwrap();
        assert!(source.resumes_after_failure());
        let parts = source.partitions(None);
        assert_eq!(parts.len(), 1);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let values = |batches: Vec<RecordBatch>| batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect::<Vec<i64>>();
        let ctx = Arc::new(TaskContext::default());
        // 9 batches handed out (one into b.jsonl), then the stream is dropped as a failed one is
        let first = rt.block_on(async { parts[0].execute(Arc::clone(&ctx)).take(9).map(Result::unwrap).collect::<Vec<_>>().await });
        let again = rt.block_on(async { parts[0].execute(Arc::clone(&ctx)).map(Result::unwrap).collect::<Vec<_>>().await });
        let mut all = values(first);
        assert_eq!(all.len(), 7 * 7 + 1 + 7, "a.jsonl's 50 rows in 8 batches, then one of b.jsonl");
        all.extend(values(again));
        assert_eq!(all, (0..80).collect::<Vec<_>>());
        // read to its end, it is read whole by the next execution (a table scanned twice)
        let third = rt.block_on(async { parts[0].execute(ctx).map(Result::unwrap).collect::<Vec<_>>().await });
        assert_eq!(values(third), (0..80).collect::<Vec<_>>());
    }
}
