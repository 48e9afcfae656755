//! `iceberg_sink`: rows appended to an Iceberg table as Parquet data files with column
//! statistics, one snapshot per checkpoint.
//!
//! Data files are written with the project's own Parquet writer (the `iceberg` crate's is on
//! another arrow) straight to their final place under `<table>/data/`, where no reader sees
//! them until a snapshot lists them; the `iceberg` crate writes the manifests, the manifest
//! list and the new table metadata, and the catalog moves the table to it.
//!
//! - Without transactions: files are committed at every checkpoint and at the end (at least
//!   once: a crash replays the rows since the last checkpoint).
//! - `use_transactions`: the files of a checkpoint are listed in it when it is taken
//!   ([`Sink::prepare`]) and committed once it is complete ([`Sink::commit`]). The snapshot's
//!   summary carries the run and the checkpoint (`ferris.run`, `ferris.checkpoint`), so that a
//!   restart that commits the restored checkpoint again finds it committed and does not append
//!   the files twice (exactly once).
//!
//! ```sql
//! CREATE STREAM trades_lake AS SELECT * FROM trades INTO lake
//! WITH ('lake.type' = 'iceberg_sink', 'lake.warehouse' = 's3://lake/wh', 'lake.table' = 'markets.trades',
//!       'lake.partition_by' = 'day(ts)', 'use_transactions' = 'true');
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use async_trait::async_trait;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, Literal, PrimitiveType, Schema, Struct, TableMetadata, Type};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use object_store::{MultipartUpload, PutPayload};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::catalog::SinkCatalog;
use super::partition::{self, PartitionBy, Partitioner, Slice};
use super::schema::{self, WritePlan};
use super::storage::Warehouse;
use crate::checkpoint::Prepared;
use crate::error::{ConnectorError, Result};
use crate::format::encode::{BufferEncoder, Compression};
use crate::format::FileFormat;
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::s3::sink::parse_size;
use crate::sink::{Delivery, Sink};

/// The smallest part an object store takes (all but the last).
const MIN_PART: usize = 5 << 20;

/// A data file written and closed, not yet in a snapshot: what the manifest will say of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct StagedFile {
    path: String,
    size: u64,
    rows: u64,
    spec_id: i32,
    /// The partition's values, as Iceberg's JSON single-value form.
    partition: serde_json::Value,
    column_sizes: BTreeMap<i32, u64>,
    value_counts: BTreeMap<i32, u64>,
    null_counts: BTreeMap<i32, u64>,
    /// Bounds in Iceberg's binary single-value form.
    lower: BTreeMap<i32, Vec<u8>>,
    upper: BTreeMap<i32, Vec<u8>>,
}

/// What the sink keeps in a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SinkCheckpoint {
    /// The run that prepared it (snapshots it commits say so).
    run: String,
    /// Files prepared and not committed when the checkpoint was taken, by the checkpoint they
    /// belong to (those of a checkpoint the table already names are not appended again).
    files: BTreeMap<u64, Vec<StagedFile>>,
}

/// The table, opened at the first batch (or at the end, when no row came).
struct Ready {
    table: Table,
    plan: WritePlan,
    partitioner: Partitioner,
    spec_id: i32,
}

/// One data file being written.
struct OpenFile {
    path: String,
    encoder: BufferEncoder,
    upload: Option<Box<dyn MultipartUpload>>,
    sent: usize,
    partition: Struct,
}

/// An Iceberg sink.
pub struct IcebergSink {
    name: String,
    props: Properties,
    job: String,
    ident: TableIdent,
    warehouse: Warehouse,
    catalog: Arc<SinkCatalog>,
    partition_by: Vec<PartitionBy>,
    compression: Compression,
    target_file_size: usize,
    part_size: usize,
    /// The query's schema, from [`Sink::check_schema`], to create the table even when no row comes.
    query_schema: Mutex<Option<SchemaRef>>,
    ready: Option<Ready>,
    /// Open data files by partition directory.
    open: BTreeMap<String, OpenFile>,
    /// Closed files not committed yet, by the checkpoint they belong to.
    staged: BTreeMap<u64, Vec<StagedFile>>,
    epoch: u64,
    delivery: Delivery,
    /// Who commits: snapshots carry it with the checkpoint (a new one at every start).
    run: String,
    /// Makes data file names unique to this process.
    token: String,
    seq: u64,
    snapshots: u64,
    rows_committed: u64,
    /// Broken by lost rows or a call cut off halfway.
    health: crate::sink::SinkHealth,
}

impl std::fmt::Debug for IcebergSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergSink").field("name", &self.name).field("table", &self.ident.to_string()).field("warehouse", &self.warehouse).finish()
    }
}

fn table_ident(props: &Properties) -> Result<TableIdent> {
    let text = props.require("table")?.trim();
    let parts: Vec<&str> = text.split('.').map(str::trim).collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ConnectorError::invalid(props.full_key("table"), format!("'{text}': write namespace.table (sales.orders)")));
    }
    TableIdent::from_strs(parts).map_err(|e| ConnectorError::invalid(props.full_key("table"), e.to_string()))
}

fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Zstd => "zstd",
        Compression::Lz4 => "lz4",
    }
}

impl IcebergSink {
    /// Configures the sink `props.owner()` and checks that its catalog answers and the
    /// warehouse can be read (errors name the catalog or the bucket, never a secret).
    pub fn try_new(props: &Properties, job_name: &str) -> Result<Self> {
        let ident = table_ident(props)?;
        let catalog = Arc::new(SinkCatalog::from_properties(props)?);
        let warehouse = catalog.warehouse().clone();
        let partition_by = partition::parse(props)?;
        let compression = match props.get("compression") {
            None => Compression::Zstd,
            Some(_) => Compression::from_properties(props, FileFormat::Parquet)?,
        };
        let size = |key: &str, default: usize| -> Result<usize> {
            props.get(key).map_or(Ok(default), |v| parse_size(v).map_err(|m| ConnectorError::invalid(props.full_key(key), m)))
        };
        let part_size = size("part_size", 8 << 20)?;
        if part_size < MIN_PART {
            return Err(ConnectorError::invalid(props.full_key("part_size"), "parts are at least 5MB (S3's smallest)"));
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let sink = Self {
            name: props.owner().to_string(),
            props: props.clone(),
            job: job_name.to_string(),
            ident,
            warehouse,
            catalog,
            partition_by,
            compression,
            target_file_size: size("target_file_size", 128 << 20)?.max(1),
            part_size,
            query_schema: Mutex::new(None),
            ready: None,
            open: BTreeMap::new(),
            staged: BTreeMap::new(),
            epoch: 1,
            delivery: Delivery::Plain,
            run: token.clone(),
            token: token[..12].to_string(),
            seq: 0,
            snapshots: 0,
            rows_committed: 0,
            health: crate::sink::SinkHealth::default(),
        };
        sink.check_access()?;
        Ok(sink)
    }

    /// Looks the table up once, on a client of its own: an unreachable catalog, wrong
    /// credentials or a missing bucket fail at start.
    fn check_access(&self) -> Result<()> {
        let props = self.props.clone();
        let ident = self.ident.clone();
        let what = format!("iceberg_sink '{}'", self.name);
        on_own_runtime("iceberg", async move {
            let catalog = SinkCatalog::from_properties(&props)?;
            let warehouse = catalog.warehouse().clone();
            let described = catalog.describe();
            catalog.table_exists(&ident).await.map(|_| ()).map_err(|e| warehouse.connector_error(&format!("{what}: table {ident} in the {described}"), e))
        })
    }

    fn table_name(&self) -> String {
        self.ident.to_string()
    }

    fn iceberg_error(&self, what: &str, e: iceberg::Error) -> ConnectorError {
        self.warehouse.connector_error(&format!("iceberg sink '{}': {what} table {}", self.name, self.ident), e)
    }

    /// The table, created from `schema` when missing.
    async fn open_table(&mut self, schema: &ArrowSchema) -> Result<&Ready> {
        if self.ready.is_none() {
            let (table, created) = match self.catalog.load_table(&self.ident).await {
                Ok(t) => (t, false),
                Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => {
                    // a new table: the query's columns, partitioned by partition_by
                    let new_schema = schema::table_schema(schema)?;
                    let spec = partition::spec(&self.partition_by, &new_schema, &self.props)?;
                    self.catalog.create(&self.ident, new_schema, spec, codec_name(self.compression)).await.map_err(|e| self.iceberg_error("creating", e))?
                }
                Err(e) => return Err(self.iceberg_error("opening", e)),
            };
            let metadata = table.metadata();
            let spec = metadata.default_partition_spec().clone();
            if created {
                info!(sink = %self.name, "iceberg table {} created at {} ({})", self.ident, metadata.location(), self.catalog.describe());
            } else if !self.partition_by.is_empty() {
                let wanted: Vec<String> = self.partition_by.iter().map(PartitionBy::field_name).collect();
                let have: Vec<String> = spec.fields().iter().map(|f| f.name.clone()).collect();
                if wanted != have {
                    warn!(
                        sink = %self.name,
                        "key '{}' does nothing: table {} exists and is partitioned by [{}], which the sink follows",
                        self.props.full_key("partition_by"),
                        self.ident,
                        have.join(", ")
                    );
                }
            }
            let table_schema = metadata.current_schema().clone();
            let plan = WritePlan::new(schema, &table_schema, &self.table_name())?;
            let partitioner = Partitioner::new(spec.clone(), table_schema, &self.table_name())?;
            let spec_id = spec.spec_id();
            self.ready = Some(Ready { table, plan, partitioner, spec_id });
        }
        self.ready.as_ref().ok_or_else(|| ConnectorError::Other("iceberg table not open".into()))
    }

    /// Err once the sink is broken (or a call was cut off halfway: it is broken now).
    fn check(&mut self) -> Result<()> {
        let sink = format!("iceberg sink '{}'", self.name);
        self.health.check(&sink, "open data files")
    }

    async fn write_slice(&mut self, slice: Slice, schema: &SchemaRef, location: &str) -> Result<()> {
        if !self.open.contains_key(&slice.path) {
            let dir = if slice.path.is_empty() { String::new() } else { format!("{}/", slice.path) };
            let path = format!("{location}/data/{dir}{:05}-{}-{:06}.parquet", self.seq, self.token, self.epoch);
            self.seq += 1;
            let encoder = BufferEncoder::try_new(FileFormat::Parquet, self.compression, schema.clone(), path.clone())?;
            self.open.insert(slice.path.clone(), OpenFile { path, encoder, upload: None, sent: 0, partition: slice.partition });
        }
        let Some(mut file) = self.open.remove(&slice.path) else { return Ok(()) };
        if let Err(e) = grow(&self.warehouse, self.part_size, &mut file, &slice.rows).await {
            return Err(self.break_on(file, e).await);
        }
        if file.sent + file.encoder.size() >= self.target_file_size {
            return self.finish(file).await;
        }
        self.open.insert(slice.path, file);
        Ok(())
    }

    /// Closes a data file: its last bytes and footer written, its statistics staged for the
    /// next commit.
    async fn finish(&mut self, file: OpenFile) -> Result<()> {
        let OpenFile { path, encoder, upload, sent, partition } = file;
        let rows = encoder.rows() as u64;
        let result = close(&self.warehouse.clone(), &path, encoder, upload, sent).await;
        let (size, metadata) = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("iceberg sink '{}': {path} could not be written ({e}); the sink stops so that no rows are lost silently", self.name);
                return Err(self.health.broken_with(msg));
            }
        };
        let ready = self.ready.as_ref().ok_or_else(|| ConnectorError::Other("iceberg table not open".into()))?;
        let staged = match metadata
            .ok_or_else(|| ConnectorError::Other(format!("{path}: no Parquet metadata")))
            .and_then(|m| stage(path, size, rows, ready, partition, &m))
        {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("iceberg sink '{}': a data file cannot be described ({e}); the sink stops so that no rows are lost silently", self.name);
                return Err(self.health.broken_with(msg));
            }
        };
        debug!(sink = %self.name, file = %staged.path, rows, "data file written");
        self.staged.entry(self.epoch).or_default().push(staged);
        Ok(())
    }

    async fn finish_all(&mut self) -> Result<()> {
        self.check()?;
        // a call cut off while files are being finished loses their rows
        self.health.start("finishing the open data files");
        let r = self.finish_open().await;
        self.health.done();
        r
    }

    async fn finish_open(&mut self) -> Result<()> {
        for (_, file) in std::mem::take(&mut self.open) {
            self.finish(file).await?;
        }
        Ok(())
    }

    /// A data file lost bytes: every open file is dropped and the sink refuses to go on.
    async fn break_on(&mut self, file: OpenFile, e: ConnectorError) -> ConnectorError {
        let msg = format!("iceberg sink '{}': {} lost data ({e}); the sink stops so that no incomplete file is committed", self.name, file.path);
        for f in std::iter::once(file).chain(std::mem::take(&mut self.open).into_values()) {
            if let Some(mut u) = f.upload {
                let _ = u.abort().await;
            }
        }
        self.health.broken_with(msg)
    }

    /// Appends the files of `groups` (by the checkpoint they belong to) to the table in one
    /// snapshot. With `checkpoint`, the snapshot says `ferris.run` = `run` and
    /// `ferris.checkpoint`, and the groups of checkpoints `run` already committed (a commit whose
    /// answer was lost, a restart) are not appended again.
    async fn commit_files(&mut self, mut groups: BTreeMap<u64, Vec<StagedFile>>, run: &str, checkpoint: Option<u64>) -> Result<()> {
        groups.retain(|_, files| !files.is_empty());
        if groups.is_empty() {
            return Ok(());
        }
        let table = self.catalog.load_table(&self.ident).await.map_err(|e| self.iceberg_error("loading", e))?;
        // groups of checkpoints this run already committed (an answer lost, a restart) are in
        // the table: never appended again
        if let Some(done) = committed_checkpoint(table.metadata(), run, &self.name) {
            let before = groups.len();
            groups.retain(|k, _| *k > done);
            if groups.len() < before {
                info!(sink = %self.name, "table {} holds this run's checkpoints up to {done} already: {} of them not appended again", self.ident, before - groups.len());
            }
            if groups.is_empty() {
                return Ok(());
            }
        }
        let files: Vec<StagedFile> = groups.into_values().flatten().collect();
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let data_files = files.iter().map(|f| data_file(f, table.metadata())).collect::<Result<Vec<_>>>()?;
        let mut summary = HashMap::from([
            ("ferris.job".to_string(), self.job.clone()),
            ("ferris.sink".to_string(), self.name.clone()),
            ("ferris.run".to_string(), run.to_string()),
        ]);
        if let Some(n) = checkpoint {
            summary.insert("ferris.checkpoint".to_string(), n.to_string());
        }
        let tx = Transaction::new(&table);
        let append = tx.fast_append().with_check_duplicate(false).add_data_files(data_files).set_snapshot_properties(summary);
        let tx = append.apply(tx).map_err(|e| self.iceberg_error("appending to", e))?;
        let table = tx.commit(self.catalog.as_ref()).await.map_err(|e| self.iceberg_error("committing to", e))?;
        self.snapshots += 1;
        self.rows_committed += rows;
        info!(
            sink = %self.name,
            "iceberg table {}: snapshot {} appends {} file{} ({rows} rows){}",
            self.ident,
            table.metadata().current_snapshot_id().unwrap_or_default(),
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            checkpoint.map(|n| format!(" for checkpoint {n}")).unwrap_or_default()
        );
        if let Some(r) = self.ready.as_mut() {
            r.table = table;
        }
        Ok(())
    }

    /// Commits every file staged up to `checkpoint` (all of them: `None`).
    async fn commit_staged(&mut self, checkpoint: Option<u64>) -> Result<()> {
        let upto = checkpoint.unwrap_or(u64::MAX);
        let groups: BTreeMap<u64, Vec<StagedFile>> = self.staged.range(..=upto).map(|(k, v)| (*k, v.clone())).collect();
        let run = self.run.clone();
        self.commit_files(groups, &run, checkpoint).await?;
        self.staged.retain(|k, _| *k > upto);
        Ok(())
    }
}

impl IcebergSink {
    /// [`Sink::write`] once the sink is known to be whole.
    async fn write_rows(&mut self, batch: &RecordBatch) -> Result<()> {
        let ready = self.open_table(&batch.schema()).await?;
        let (plan, partitioner, location) = (ready.plan.clone(), ready.partitioner.clone(), ready.table.metadata().location().to_string());
        let rows = plan.conform(batch, &self.table_name())?;
        // from here a call cut off loses rows of open files
        self.health.start("a write");
        for slice in partitioner.split(rows)? {
            if let Err(e) = self.write_slice(slice, &plan.schema, &location).await {
                self.health.done();
                return Err(e);
            }
        }
        self.health.done();
        Ok(())
    }

    /// [`Sink::close`]: files finished and committed (without transactions), or dropped.
    async fn close_files(&mut self) -> Result<()> {
        if self.ready.is_none() {
            // no row came: the table is still created, empty
            let schema = self.query_schema.lock().ok().and_then(|s| s.clone());
            if let Some(schema) = schema {
                self.open_table(&schema).await?;
            }
        }
        if self.delivery == Delivery::ExactlyOnce {
            // rows after the last checkpoint are not committed: a restart replays them
            for (_, f) in std::mem::take(&mut self.open) {
                if let Some(mut u) = f.upload {
                    let _ = u.abort().await;
                }
            }
        } else {
            self.finish_all().await?;
            self.commit_staged(None).await?;
        }
        info!(sink = %self.name, "iceberg sink '{}': {} snapshot{} ({} rows) committed to {}", self.name, self.snapshots, if self.snapshots == 1 { "" } else { "s" }, self.rows_committed, self.ident);
        Ok(())
    }

    /// [`Sink::prepare`]: files finished and staged for the checkpoint (committed at once
    /// without transactions).
    async fn prepare_files(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        self.finish_all().await?;
        if let Some(files) = self.staged.remove(&self.epoch) {
            self.staged.entry(checkpoint).or_default().extend(files);
        }
        self.epoch = checkpoint + 1;
        if self.delivery != Delivery::ExactlyOnce {
            self.commit_staged(Some(checkpoint)).await?;
            return Ok(None);
        }
        // every file staged and not committed: a checkpoint whose commit failed is committed
        // with the next one
        let state = SinkCheckpoint { run: self.run.clone(), files: self.staged.clone() };
        serde_json::to_value(&state).map(Some).map_err(|e| ConnectorError::Other(format!("iceberg sink '{}': {e}", self.name)))
    }
}

/// Encodes `rows` into `file`, sending a part once one is full.
async fn grow(warehouse: &Warehouse, part_size: usize, file: &mut OpenFile, rows: &RecordBatch) -> Result<()> {
    file.encoder.write(rows)?;
    if file.encoder.pending() >= part_size {
        file.encoder.end_row_group()?;
    }
    if file.encoder.ready() >= part_size {
        let bytes = file.encoder.take();
        file.sent += bytes.len();
        if file.upload.is_none() {
            file.upload = Some(warehouse.upload(&file.path).await.map_err(|e| warehouse.connector_error("starting an upload", e))?);
        }
        if let Some(u) = file.upload.as_mut() {
            u.put_part(PutPayload::from(bytes)).await.map_err(|e| ConnectorError::Other(format!("uploading a part of {}: {e}", file.path)))?;
        }
    }
    Ok(())
}

/// Writes the end of a data file (its last part, or all of it) and its footer: its size and
/// Parquet metadata.
async fn close(
    warehouse: &Warehouse,
    path: &str,
    encoder: BufferEncoder,
    upload: Option<Box<dyn MultipartUpload>>,
    sent: usize,
) -> Result<(u64, Option<ParquetMetaData>)> {
    let (last, metadata) = encoder.finish_parquet()?;
    let size = (sent + last.len()) as u64;
    match upload {
        Some(mut u) => {
            if !last.is_empty() {
                u.put_part(PutPayload::from(last)).await.map_err(|e| ConnectorError::Other(format!("uploading the end of {path}: {e}")))?;
            }
            u.complete().await.map_err(|e| ConnectorError::Other(format!("completing {path}: {e}")))?;
        }
        None => {
            iceberg::io::Storage::write(warehouse, path, bytes::Bytes::from(last)).await.map_err(|e| warehouse.connector_error("writing a data file", e))?
        }
    }
    Ok((size, metadata))
}

/// The highest checkpoint `run` of sink `sink` committed to the table.
fn committed_checkpoint(metadata: &TableMetadata, run: &str, sink: &str) -> Option<u64> {
    metadata
        .snapshots()
        .filter_map(|s| {
            let p = &s.summary().additional_properties;
            (p.get("ferris.run").map(String::as_str) == Some(run) && p.get("ferris.sink").map(String::as_str) == Some(sink))
                .then(|| p.get("ferris.checkpoint").and_then(|c| c.parse::<u64>().ok()))
                .flatten()
        })
        .max()
}

/// What a data file's manifest entry says of it, from its Parquet footer: sizes, counts and
/// bounds of its top-level columns by field id.
fn stage(path: String, size: u64, rows: u64, ready: &Ready, partition: Struct, metadata: &ParquetMetaData) -> Result<StagedFile> {
    let schema = ready.table.metadata().current_schema();
    let partition_type = ready.table.metadata().default_partition_spec().partition_type(schema).map_err(|e| ConnectorError::Other(format!("{path}: {e}")))?;
    let partition =
        Literal::Struct(partition).try_into_json(&Type::Struct(partition_type)).map_err(|e| ConnectorError::Other(format!("{path}: partition: {e}")))?;
    let mut staged = StagedFile {
        path,
        size,
        rows,
        spec_id: ready.spec_id,
        partition,
        column_sizes: BTreeMap::new(),
        value_counts: BTreeMap::new(),
        null_counts: BTreeMap::new(),
        lower: BTreeMap::new(),
        upper: BTreeMap::new(),
    };
    // bounds of a column count only when every row group has them
    let mut lower: BTreeMap<i32, Option<Datum>> = BTreeMap::new();
    let mut upper: BTreeMap<i32, Option<Datum>> = BTreeMap::new();
    let mut nulls: BTreeMap<i32, Option<u64>> = BTreeMap::new();
    for rg in metadata.row_groups() {
        for cc in rg.columns() {
            let info = cc.column_descr().self_type().get_basic_info();
            if !info.has_id() {
                continue;
            }
            let id = info.id();
            *staged.column_sizes.entry(id).or_default() += cc.compressed_size().max(0) as u64;
            if cc.column_path().parts().len() != 1 {
                continue; // nested: sizes only
            }
            *staged.value_counts.entry(id).or_default() += cc.num_values().max(0) as u64;
            let Some(Type::Primitive(ty)) = schema.field_by_id(id).map(|f| (*f.field_type).clone()) else { continue };
            let stats = cc.statistics();
            let n = nulls.entry(id).or_insert(Some(0));
            *n = match (*n, stats.and_then(Statistics::null_count_opt)) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            let (lo, hi) = stats.map(|s| bounds(s, &ty)).unwrap_or((None, None));
            let all_null = stats.is_some_and(|s| s.null_count_opt() == Some(rg.num_rows().max(0) as u64));
            if all_null {
                continue; // no values: says nothing about the bounds
            }
            merge(&mut lower, id, lo, |a, b| b < a);
            merge(&mut upper, id, hi, |a, b| b > a);
        }
    }
    for (id, n) in nulls {
        if let Some(n) = n {
            staged.null_counts.insert(id, n);
        }
    }
    let bytes = |d: &Datum| d.to_bytes().ok().map(|b| b.to_vec());
    staged.lower = lower.into_iter().filter_map(|(id, d)| Some((id, bytes(d.as_ref()?)?))).collect();
    staged.upper = upper.into_iter().filter_map(|(id, d)| Some((id, bytes(d.as_ref()?)?))).collect();
    Ok(staged)
}

/// Keeps in `acc[id]` the bound that `better` prefers; a row group without one spoils it.
fn merge(acc: &mut BTreeMap<i32, Option<Datum>>, id: i32, next: Option<Datum>, better: impl Fn(&Datum, &Datum) -> bool) {
    match acc.get_mut(&id) {
        None => {
            acc.insert(id, next);
        }
        Some(cur) => {
            *cur = match (cur.take(), next) {
                (Some(a), Some(b)) => Some(if better(&a, &b) { b } else { a }),
                _ => None,
            }
        }
    }
}

/// A row group's exact minimum and maximum of a column of Iceberg type `ty`, when Parquet
/// kept them and Iceberg can say them (not for decimals, fixed, NaN).
fn bounds(s: &Statistics, ty: &PrimitiveType) -> (Option<Datum>, Option<Datum>) {
    fn pick<T: Clone>(min: Option<&T>, max: Option<&T>, min_exact: bool, max_exact: bool, f: impl Fn(T) -> Option<Datum>) -> (Option<Datum>, Option<Datum>) {
        (min.filter(|_| min_exact).cloned().and_then(&f), max.filter(|_| max_exact).cloned().and_then(&f))
    }
    match (s, ty) {
        (Statistics::Boolean(v), PrimitiveType::Boolean) => pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::bool(x))),
        (Statistics::Int32(v), PrimitiveType::Int) => pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::int(x))),
        (Statistics::Int32(v), PrimitiveType::Date) => pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::date(x))),
        (Statistics::Int64(v), PrimitiveType::Long) => pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::long(x))),
        (Statistics::Int64(v), PrimitiveType::Timestamp) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::timestamp_micros(x)))
        }
        (Statistics::Int64(v), PrimitiveType::Timestamptz) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::timestamptz_micros(x)))
        }
        (Statistics::Int64(v), PrimitiveType::Time) => pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Datum::time_micros(x).ok()),
        (Statistics::Float(v), PrimitiveType::Float) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| (!x.is_nan()).then(|| Datum::float(x)))
        }
        (Statistics::Double(v), PrimitiveType::Double) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| (!x.is_nan()).then(|| Datum::double(x)))
        }
        (Statistics::ByteArray(v), PrimitiveType::String) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| std::str::from_utf8(x.data()).ok().map(Datum::string))
        }
        (Statistics::ByteArray(v), PrimitiveType::Binary) => {
            pick(v.min_opt(), v.max_opt(), v.min_is_exact(), v.max_is_exact(), |x| Some(Datum::binary(x.data().to_vec())))
        }
        _ => (None, None),
    }
}

/// The manifest entry of a staged file.
fn data_file(f: &StagedFile, metadata: &TableMetadata) -> Result<DataFile> {
    let err = |m: String| ConnectorError::Other(format!("{}: {m}", f.path));
    let spec = metadata.partition_spec_by_id(f.spec_id).ok_or_else(|| err(format!("the table has no partition spec {}", f.spec_id)))?;
    let schema: &Schema = metadata.current_schema();
    let partition_type = spec.partition_type(schema).map_err(|e| err(e.to_string()))?;
    let partition = match Literal::try_from_json(f.partition.clone(), &Type::Struct(partition_type)).map_err(|e| err(e.to_string()))? {
        Some(Literal::Struct(s)) => s,
        _ => Struct::empty(),
    };
    let datum = |id: &i32, b: &Vec<u8>| -> Option<(i32, Datum)> {
        let Type::Primitive(p) = &*schema.field_by_id(*id)?.field_type else { return None };
        Datum::try_from_bytes(b, p.clone()).ok().map(|d| (*id, d))
    };
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(f.path.clone())
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(f.spec_id)
        .record_count(f.rows)
        .file_size_in_bytes(f.size)
        .column_sizes(f.column_sizes.iter().map(|(k, v)| (*k, *v)).collect())
        .value_counts(f.value_counts.iter().map(|(k, v)| (*k, *v)).collect())
        .null_value_counts(f.null_counts.iter().map(|(k, v)| (*k, *v)).collect())
        .lower_bounds(f.lower.iter().filter_map(|(k, v)| datum(k, v)).collect())
        .upper_bounds(f.upper.iter().filter_map(|(k, v)| datum(k, v)).collect())
        .build()
        .map_err(|e| err(e.to_string()))
}

#[async_trait]
impl Sink for IcebergSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &arrow::datatypes::Schema) -> Result<()> {
        // the query's types are checked here; partition_by and the table's own types when the
        // table is opened (an existing table keeps its partitioning)
        schema::table_schema(schema)?;
        if schema.field_with_name("_op").is_ok() {
            warn!(
                sink = %self.name,
                "iceberg sink '{}' appends: an EMIT CHANGES changelog is stored as rows with their _op column (upserts and deletes are not applied to earlier rows)",
                self.name
            );
        }
        if let Ok(mut s) = self.query_schema.lock() {
            *s = Some(Arc::new(schema.clone()));
        }
        Ok(())
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.write_rows(batch).await
    }

    /// Nothing: files are closed at `target_file_size`, at checkpoints and at the end.
    async fn flush(&mut self) -> Result<()> {
        self.check()
    }

    async fn close(&mut self) -> Result<()> {
        self.close_files().await
    }

    fn transactional(&self) -> bool {
        true
    }

    fn set_delivery(&mut self, _job: &str, delivery: Delivery) -> Result<()> {
        self.delivery = delivery;
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        self.check()?;
        self.prepare_files(checkpoint).await
    }
    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        if self.delivery == Delivery::ExactlyOnce {
            self.commit_staged(Some(checkpoint)).await?;
        }
        Ok(())
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        let Some((n, state)) = restored else { return Ok(()) };
        self.epoch = n + 1;
        if self.delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        let state: SinkCheckpoint = match state {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| ConnectorError::Other(format!("iceberg sink '{}': its checkpoint state cannot be read: {e}", self.name)))?,
            None => return Ok(()),
        };
        // the restored checkpoint is complete: its files are committed, unless they were
        self.commit_files(state.files, &state.run, Some(n)).await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(ArrowSchema::new(vec![Field::new("id", DataType::Int64, false), Field::new("blob", DataType::Utf8, false)]));
        // text that compresses little, so that one batch fills an upload part
        let blob: Vec<String> =
            (from..from + n).map(|i| format!("{:016x}{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), (i as u64) ^ 0xDEAD_BEEF_1234)).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(from..from + n)), Arc::new(StringArray::from(blob))]).unwrap()
    }

    /// A sink of table `table` in a warehouse in `dir` (5 MB parts, uncompressed), told the
    /// batches' schema.
    fn sink_in(dir: &std::path::Path, table: &str) -> IcebergSink {
        let props = Properties::from_pairs("lake", [("warehouse", dir.to_str().unwrap()), ("table", table), ("part_size", "5MB"), ("compression", "none")]);
        let sink = IcebergSink::try_new(&props, "job").unwrap();
        sink.check_schema(&batch(0, 1).schema()).unwrap();
        sink
    }

    /// A write the engine cuts off (`sink.write.timeout` drops the call) while a part of an open
    /// data file is on its way: the next call fails, so no checkpoint commits without its rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_cut_off_halfway_stops_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        // one poll: the table is open, the rows are encoded, the first part is being written.
        // On a loaded machine the file system's blocking writes can all finish before that poll
        // looks (nothing left to cut off): such a try is made again on a table of its own
        let mut cut = None;
        for attempt in 0..20 {
            let mut sink = sink_in(dir.path(), &format!("t.cut{attempt}"));
            sink.write(&batch(0, 1_000)).await.unwrap();
            let big = batch(1_000, 200_000);
            let pending = {
                let mut call = Box::pin(sink.write(&big));
                let waker = futures::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                call.as_mut().poll(&mut cx).is_pending()
            }; // dropped, as the engine's timeout drops it
            if pending {
                cut = Some(sink);
                break;
            }
        }
        let mut sink = cut.expect("in 20 tries every write finished in one poll: nothing to cut off");
        let e = sink.write(&batch(300_000, 10)).await.unwrap_err().to_string();
        assert!(e.contains("cut off halfway") && e.contains("open data files"), "{e}");
        assert!(sink.prepare(1).await.is_err(), "no checkpoint completes without the lost rows");
    }

    /// A sink that goes through its calls whole stays healthy, and the rows are committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_calls_leave_the_sink_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink_in(dir.path(), "t.ok");
        sink.write(&batch(0, 200_000)).await.unwrap();
        sink.write(&batch(200_000, 10)).await.unwrap();
        sink.close().await.unwrap();
        assert_eq!(sink.rows_committed, 200_010);
    }
}
