//! `file_source`: reads files matched by a path or glob into Arrow record batches, in parallel
//! partitions (large uncompressed text files are split by byte range, Parquet by row group),
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

use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use tokio::sync::mpsc;
use tracing::warn;

use super::decode::{json_array_to_lines, BadRecord, TextDecoder};
use super::format::FileFormat;
use super::schema::{infer_schema, is_gzip, open_text, parse_schema, starts_with_array};
use crate::batching::BatchConfig;
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::metrics::ConnectorMetrics;
use crate::properties::{KeySpec, Properties};
use crate::source::Source;

/// The keys `file_source` understands.
pub const FILE_SOURCE_KEYS: KeySpec = KeySpec {
    exact: &["path", "format", "has_headers", "header", "delimiter", "quote", "schema", "compression", "watch", "encoding", "poll_interval"],
    prefixes: &[],
};

/// Text files larger than this are split into byte ranges read in parallel.
const SPLIT_THRESHOLD: u64 = 32 << 20;
/// Malformed records logged one by one per partition before only counting them.
const MAX_LOGGED_BAD_RECORDS: usize = 20;

/// A file source, configured and with its schema known.
#[derive(Debug)]
pub struct FileSource {
    cfg: Arc<ReadConfig>,
    pattern: String,
    files: Vec<PathBuf>,
    partitions: usize,
    /// Read each file whole, in order (the source has a watermark delay).
    ordered: bool,
}

#[derive(Debug)]
struct ReadConfig {
    name: String,
    format: FileFormat,
    schema: SchemaRef,
    batch: BatchConfig,
    watch: bool,
    poll: Duration,
    failure: FailureStrategy,
    metrics: Arc<ConnectorMetrics>,
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
}

impl FileSource {
    /// Configures the source `props.owner()` from its properties and the job's, resolving the
    /// glob and inferring (or parsing) the schema. `partitions` caps the parallelism.
    pub fn try_new(props: &Properties, job: &Properties, partitions: usize) -> Result<Self> {
        let pattern = props.require("path")?.to_string();
        let format = FileFormat::from_properties(props, &pattern)?;
        let files = expand_glob(&pattern, &props.full_key("path"))?;
        let schema = match props.get("schema") {
            Some(text) => parse_schema(text, &props.full_key("schema"))?,
            None => infer_schema(&files, format, &pattern)?,
        };
        let watch = props.get_bool("watch")?.unwrap_or(false);
        if watch && format == FileFormat::Parquet {
            return Err(ConnectorError::invalid(props.full_key("watch"), "parquet files cannot be tailed; use csv or jsonlines"));
        }
        let cfg = ReadConfig {
            name: props.owner().to_string(),
            format,
            schema,
            batch: BatchConfig::resolve(props, job)?,
            watch,
            poll: props.get_duration("poll_interval")?.unwrap_or(Duration::from_millis(100)),
            failure: FailureStrategy::from_properties(props, FailureStrategy::from_properties(job, FailureStrategy::default())?)?,
            metrics: Arc::new(ConnectorMetrics::default()),
        };
        // A source with a watermark delay reads each file in order (files still in parallel):
        // splitting a file would have one split run ahead of another and hold every row it
        // read in the operators' state until the slower split caught up.
        let ordered = props.contains("watermark.delay");
        Ok(Self { cfg: Arc::new(cfg), pattern, files, partitions: partitions.max(1), ordered })
    }

    /// The files the pattern matched.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn units(&self) -> Vec<Unit> {
        let mut units = Vec::new();
        let single = self.files.len() < self.partitions && !self.ordered;
        for path in &self.files {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match self.cfg.format {
                FileFormat::Parquet if single => {
                    let groups = parquet_row_groups(path).unwrap_or(1);
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

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let schema = match projection {
            Some(p) => self.cfg.schema.project(p).map(Arc::new).unwrap_or_else(|_| Arc::clone(&self.cfg.schema)),
            None => Arc::clone(&self.cfg.schema),
        };
        let projection: Option<Arc<[usize]>> = projection.filter(|_| schema.fields().len() < self.cfg.schema.fields().len()).map(Into::into);
        let units = self.units();
        let n = self.partitions.min(units.len()).max(1);
        let mut parts: Vec<Vec<Unit>> = vec![Vec::new(); n];
        for (i, u) in units.into_iter().enumerate() {
            parts[i % n].push(u);
        }
        parts
            .into_iter()
            .map(|units| {
                Arc::new(FilePartition { cfg: Arc::clone(&self.cfg), schema: Arc::clone(&schema), projection: projection.clone(), units })
                    as Arc<dyn PartitionStream>
            })
            .collect()
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
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

fn parquet_row_groups(path: &Path) -> Option<usize> {
    let f = File::open(path).ok()?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?;
    Some(b.metadata().num_row_groups())
}

/// One partition of a file source: a list of units read one after another on a blocking thread.
#[derive(Debug)]
struct FilePartition {
    cfg: Arc<ReadConfig>,
    /// The schema of the batches it yields: the source's, projected.
    schema: SchemaRef,
    /// Indices into the source's schema, when projected.
    projection: Option<Arc<[usize]>>,
    units: Vec<Unit>,
}

/// What one read produces: the projected schema and the projection.
struct Output<'a> {
    schema: &'a SchemaRef,
    projection: Option<&'a [usize]>,
}

type BatchSender = mpsc::Sender<datafusion::error::Result<RecordBatch>>;

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel(2);
        let cfg = Arc::clone(&self.cfg);
        let units = self.units.clone();
        let schema = Arc::clone(&self.schema);
        let projection = self.projection.clone();
        tokio::task::spawn_blocking(move || {
            let out = Output { schema: &schema, projection: projection.as_deref() };
            for unit in units {
                match read_unit(&cfg, &out, &unit, &tx) {
                    Ok(true) => {}
                    Ok(false) => return, // the reader went away: the job is stopping
                    Err(e) => {
                        let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

/// Sends a batch; false when nobody listens any more.
fn send(cfg: &ReadConfig, tx: &BatchSender, batch: RecordBatch) -> bool {
    if batch.num_rows() == 0 {
        return true;
    }
    cfg.metrics.add_batch(batch.num_rows());
    tx.blocking_send(Ok(batch)).is_ok()
}

/// Rows per decoded batch: the configured size, bounded for strategies that count bytes.
fn decode_rows(batch: &BatchConfig) -> usize {
    batch.size.min(1 << 20)
}

/// Reads one unit; Ok(false) when the receiver has gone.
fn read_unit(cfg: &ReadConfig, out: &Output, unit: &Unit, tx: &BatchSender) -> Result<bool> {
    match (cfg.format, unit) {
        (FileFormat::Parquet, Unit::Whole(path)) => read_parquet(cfg, out, path, None, tx),
        (FileFormat::Parquet, Unit::RowGroups { path, groups }) => read_parquet(cfg, out, path, Some(groups.clone()), tx),
        (_, Unit::Whole(path)) => read_text(cfg, out, path, 0, u64::MAX, tx),
        (_, Unit::Range { path, start, end }) => read_text(cfg, out, path, *start, *end, tx),
        (_, Unit::RowGroups { path, .. }) => read_text(cfg, out, path, 0, u64::MAX, tx),
    }
}

fn read_parquet(cfg: &ReadConfig, out: &Output, path: &Path, groups: Option<Vec<usize>>, tx: &BatchSender) -> Result<bool> {
    let ctx = || path.display().to_string();
    let f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let mut b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?
        .with_batch_size(decode_rows(&cfg.batch));
    if let Some(g) = groups {
        b = b.with_row_groups(g);
    }
    if out.projection.is_some() {
        // Read only the wanted columns, found by name in this file's schema.
        let file_schema = Arc::clone(b.schema());
        let roots: Vec<usize> = out.schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
        let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
        b = b.with_projection(mask);
    }
    let reader = b.build().map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
    for batch in reader {
        let batch = batch.map_err(|e| ConnectorError::arrow(ctx(), e))?;
        let batch = adapt_batch(batch, out.schema).map_err(|e| ConnectorError::arrow(ctx(), e))?;
        if !send(cfg, tx, batch) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives `batch` exactly `schema`'s columns: found by name, cast where types differ, nulls
/// where a file lacks a column (files of one glob may differ).
fn adapt_batch(batch: RecordBatch, schema: &SchemaRef) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec());
    }
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), cols)
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

fn read_text(cfg: &ReadConfig, out: &Output, path: &Path, start: u64, end: u64, tx: &BatchSender) -> Result<bool> {
    let io = |e| ConnectorError::io(path, e);
    let mut map = LineMap::Sequential;
    let mut reader: Box<dyn BufRead + Send> = if start > 0 || end != u64::MAX {
        let mut f = File::open(path).map_err(io)?;
        let mut pos = 0;
        if start > 0 {
            f.seek(SeekFrom::Start(start - 1)).map_err(io)?;
            pos = start - 1;
            map = LineMap::Offset;
        }
        let mut r = RangeReader { inner: BufReader::with_capacity(1 << 20, f), pos, end, at_line_start: true };
        if start > 0 {
            // The line holding byte start-1 belongs to the previous range.
            let mut skipped = Vec::new();
            r.read_until(b'\n', &mut skipped).map_err(io)?;
        }
        Box::new(r)
    } else {
        let mut r = open_text(path)?;
        if cfg.format == FileFormat::Json && starts_with_array(&mut r).map_err(io)? {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).map_err(io)?;
            let (lines, starts) = json_array_to_lines(&bytes).map_err(|m| ConnectorError::Malformed { location: path.display().to_string(), message: m })?;
            map = LineMap::Elements(starts);
            Box::new(std::io::Cursor::new(lines))
        } else {
            r
        }
    };
    let mut chunk_offset: u64 = start; // byte offset of the chunk (byte ranges only)
    let mut line_no: u64 = 1;
    let mut element: usize = 0;
    if let FileFormat::Csv { has_headers: true, .. } = cfg.format {
        if start == 0 {
            let mut header = Vec::new();
            reader.read_until(b'\n', &mut header).map_err(io)?;
            line_no += 1;
        }
    }
    let mut decoder = TextDecoder::try_new(Arc::clone(&cfg.schema), out.projection, cfg.format, decode_rows(&cfg.batch))?;
    let mut sizer = cfg.batch.sizer();
    let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut logged = 0usize;
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
                if sizer.is_full(lines, base + i + 1) {
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
        if lines > 0 {
            let first = line_no;
            let first_element = element;
            let line_of = |i: usize| -> u64 {
                match &map {
                    LineMap::Sequential => first + i as u64,
                    LineMap::Elements(starts) => starts.get(first_element + i).copied().unwrap_or(0),
                    LineMap::Offset => i as u64,
                }
            };
            let (batches, bad) = decoder.decode_chunk(&chunk, &line_of)?;
            if !bad.is_empty() {
                let bad = match map {
                    LineMap::Offset => renumber(path, chunk_offset, &bad)?,
                    _ => bad,
                };
                handle_bad_records(cfg, path, &bad, &mut logged)?;
            }
            let sent_at = Instant::now();
            for b in batches {
                if !send(cfg, tx, b) {
                    return Ok(false);
                }
            }
            // Time blocked on a full channel is time the job took downstream.
            sizer.observe(lines, sent_at.elapsed());
            line_no += lines as u64;
            element += lines;
            chunk_offset += chunk.len() as u64;
        }
        chunk.clear();
        chunk.extend_from_slice(&tail);
        if eof {
            return Ok(true);
        }
    }
}

/// Lines of a byte-range partition are numbered only when one is bad: count the newlines
/// before the chunk (the slow path, taken only on error).
fn renumber(path: &Path, chunk_offset: u64, bad: &[BadRecord]) -> Result<Vec<BadRecord>> {
    let f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let mut before = 0u64;
    let mut r = BufReader::new(f.take(chunk_offset));
    loop {
        let buf = r.fill_buf().map_err(|e| ConnectorError::io(path, e))?;
        if buf.is_empty() {
            break;
        }
        before += buf.iter().filter(|b| **b == b'\n').count() as u64;
        let n = buf.len();
        r.consume(n);
    }
    Ok(bad.iter().map(|b| BadRecord { line: before + 1 + b.line, message: b.message.clone() }).collect())
}

/// Applies the failure strategy to malformed records: count and log them, or fail.
fn handle_bad_records(cfg: &ReadConfig, path: &Path, bad: &[BadRecord], logged: &mut usize) -> Result<()> {
    cfg.metrics.add_errors(bad.len() as u64);
    if cfg.failure == FailureStrategy::FailBatch {
        let b = &bad[0];
        return Err(ConnectorError::Malformed { location: format!("{}:{}", path.display(), b.line), message: b.message.clone() });
    }
    for b in bad {
        if *logged < MAX_LOGGED_BAD_RECORDS {
            warn!(source = %cfg.name, "{}:{}: malformed record skipped ({}): {}", path.display(), b.line, cfg.failure, b.message);
        } else if *logged == MAX_LOGGED_BAD_RECORDS {
            warn!(source = %cfg.name, "more malformed records in {}: counting them without logging each", path.display());
        }
        *logged += 1;
    }
    Ok(())
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
