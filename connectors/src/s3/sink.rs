//! `s3_sink`: objects under a prefix, in CSV, JSON Lines or Parquet (compressed as the file
//! sink's), Hive prefixes from `partition_columns`, rolled by `max_file_size`, `rotation` and at
//! every checkpoint. Objects are written with multipart uploads, `part_size` at a time (the
//! memory an open object holds), and appear only when complete: at once without transactions
//! (at least once), at the checkpoint's commit under `use_transactions` (exactly once: the
//! uploads pending are kept in the checkpoint and completed again after a crash).
//!
//! ```sql
//! CREATE STREAM daily AS SELECT country, COUNT(*) AS n FROM orders GROUP BY country INTO lake
//! WITH ('lake.type' = 's3_sink', 'lake.bucket' = 'curated', 'lake.prefix' = 'orders/{date}/',
//!       'lake.format' = 'parquet', 'lake.partition_columns' = 'country');
//! -- s3://curated/orders/2024-05-01/country=DE/part-….parquet
//! ```

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use async_trait::async_trait;
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{location, store_error, Location};
use crate::checkpoint::Prepared;
use crate::error::{ConnectorError, Result};
use crate::file::path_template::{PathTemplate, Rotation};
use crate::format::encode::{BufferEncoder, Compression};
use crate::format::FileFormat;
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::sink::{Delivery, Sink};

/// The smallest part S3 accepts (all but the last).
const MIN_PART: usize = 5 << 20;

/// Parses `128MB`, `8 MiB`, `512kb`, or a number of bytes.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("expected a size such as '128MB', got '{text}'"))?;
    let mult = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit '{other}' in '{text}' (use KB, MB or GB)")),
    };
    Ok((n * mult) as usize)
}

/// A multipart upload in progress, or prepared and waiting for its checkpoint to commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Upload {
    key: String,
    id: String,
    parts: Vec<String>,
}

/// What the sink keeps in a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SinkCheckpoint {
    /// Uploads prepared and not yet completed: completed when the checkpoint commits, or again
    /// after a restart from it.
    #[serde(default)]
    uploads: Vec<Upload>,
}

/// Talks to the bucket: uploads, completions. Held apart from the encoders (which are not
/// `Sync`) so that the sink's futures are `Send`.
#[derive(Debug, Clone)]
struct Uploader {
    loc: Location,
    props: Properties,
}

impl Uploader {
    async fn start(&self, key: &str) -> Result<Upload> {
        let path = ObjectPath::from(key);
        let id = self.loc.multipart.create_multipart(&path).await.map_err(|e| store_error("starting an upload of", &self.loc.url(key), e, &self.props))?;
        Ok(Upload { key: key.to_string(), id, parts: Vec::new() })
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let path = ObjectPath::from(key);
        self.loc.store.put(&path, PutPayload::from(data)).await.map(|_| ()).map_err(|e| store_error("writing", &self.loc.url(key), e, &self.props))
    }

    async fn put_part(&self, upload: &mut Upload, data: Vec<u8>) -> Result<()> {
        let path = ObjectPath::from(upload.key.as_str());
        let part = self
            .loc
            .multipart
            .put_part(&path, &upload.id, upload.parts.len(), PutPayload::from(data))
            .await
            .map_err(|e| store_error("uploading a part of", &self.loc.url(&upload.key), e, &self.props))?;
        upload.parts.push(part.content_id);
        Ok(())
    }

    async fn complete(&self, upload: &Upload) -> Result<()> {
        let path = ObjectPath::from(upload.key.as_str());
        let parts = upload.parts.iter().map(|p| PartId { content_id: p.clone() }).collect();
        if let Err(e) = self.loc.multipart.complete_multipart(&path, &upload.id, parts).await {
            // completed before a crash: the object is there
            if self.loc.store.head(&path).await.is_ok() {
                debug!(key = %upload.key, "upload completed before");
                return Ok(());
            }
            return Err(store_error("completing the upload of", &self.loc.url(&upload.key), e, &self.props));
        }
        Ok(())
    }

    async fn abort(&self, upload: &Upload) {
        let _ = self.loc.multipart.abort_multipart(&ObjectPath::from(upload.key.as_str()), &upload.id).await;
    }

    /// Encodes `rows` into `obj`, sending a part when one is full.
    async fn write(&self, obj: &mut OpenObject, rows: &RecordBatch, part_size: usize) -> Result<()> {
        obj.encoder.write(rows)?;
        if obj.encoder.pending() >= part_size {
            // a Parquet row group that big ends here: an open object holds about one part
            obj.encoder.end_row_group()?;
        }
        if obj.encoder.ready() >= part_size {
            let bytes = obj.encoder.take();
            if obj.upload.is_none() {
                obj.upload = Some(self.start(&obj.key).await?);
            }
            obj.sent += bytes.len();
            if let Some(u) = obj.upload.as_mut() {
                self.put_part(u, bytes).await?;
            }
        }
        Ok(())
    }
}

/// One object being written.
struct OpenObject {
    key: String,
    encoder: BufferEncoder,
    /// Started once the object outgrows one part.
    upload: Option<Upload>,
    /// Bytes uploaded so far.
    sent: usize,
}

/// An S3 sink.
pub struct S3Sink {
    name: String,
    up: Uploader,
    /// The prefix (with `{date}`, … and rotation).
    template: PathTemplate,
    file_name: String,
    format: FileFormat,
    compression: Compression,
    partition_columns: Vec<String>,
    max_file_size: usize,
    part_size: usize,
    /// Open objects by their directory (rendered prefix and Hive segments).
    open: BTreeMap<String, OpenObject>,
    /// Objects started, for `{part}`.
    seq: u64,
    /// Run token of object names outside transactions (a restart never overwrites).
    run: String,
    delivery: Delivery,
    /// The checkpoint the rows being written belong to.
    epoch: u64,
    /// Uploads prepared at a checkpoint, not completed yet, by checkpoint.
    prepared: BTreeMap<u64, Vec<Upload>>,
    /// Objects completed (written), for the log at close.
    completed: u64,
    /// Broken when an object lost bytes (a part that failed to upload) or a call was cut off
    /// with rows in open objects: the sink refuses to go on, so that a checkpoint never
    /// publishes such an object (the job rewinds or stops).
    health: crate::sink::SinkHealth,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink").field("name", &self.name).field("bucket", &self.up.loc.bucket).field("prefix", &self.up.loc.prefix).finish()
    }
}

fn extension(format: FileFormat, compression: Compression) -> String {
    match format {
        FileFormat::Parquet => ".parquet".into(),
        FileFormat::Csv { .. } => format!(".csv{}", compression.text_extension()),
        _ => format!(".jsonl{}", compression.text_extension()),
    }
}

impl S3Sink {
    /// Configures the sink `props.owner()` and checks the bucket can be listed with the
    /// credentials given (an error names the bucket, never a secret).
    pub fn try_new(props: &Properties, job_name: &str) -> Result<Self> {
        let loc = super::checked_location(props)?;
        let format = match props.get("format") {
            Some(_) => FileFormat::from_properties(props, "")?,
            None => FileFormat::from_properties(props, props.get("file_name").unwrap_or("x.jsonl")).unwrap_or(FileFormat::JsonLines),
        };
        let format = if format == FileFormat::Json { FileFormat::JsonLines } else { format };
        let compression = Compression::from_properties(props, format)?;
        let rotation = Rotation::from_properties(props)?;
        let mut prefix = loc.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        // rotation adds the period to the prefix's last directory (file sink: to the file name)
        let template = match rotation {
            Rotation::Never => PathTemplate::new(&prefix, Rotation::Never),
            Rotation::Daily => PathTemplate::new(&format!("{prefix}{{date}}/"), Rotation::Never),
            Rotation::Hourly => PathTemplate::new(&format!("{prefix}{{date}}/{{hour}}/"), Rotation::Never),
        };
        let size = |key: &str, default: usize| -> Result<usize> {
            props.get(key).map_or(Ok(default), |v| parse_size(v).map_err(|m| ConnectorError::invalid(props.full_key(key), m)))
        };
        let part_size = size("part_size", 8 << 20)?;
        if part_size < MIN_PART {
            return Err(ConnectorError::invalid(props.full_key("part_size"), "parts are at least 5MB (S3's smallest)"));
        }
        let partition_columns = props.get_list("partition_columns").unwrap_or_default();
        let sink = Self {
            name: props.owner().to_string(),
            template,
            file_name: match props.get("file_name") {
                None => format!("part-{{part}}{}", extension(format, compression)),
                // every object needs a name of its own
                Some(n) if !n.contains("{part}") => match n.find('.') {
                    Some(dot) => format!("{}-{{part}}{}", &n[..dot], &n[dot..]),
                    None => format!("{n}-{{part}}"),
                },
                Some(n) => n.to_string(),
            },
            format,
            compression,
            partition_columns,
            max_file_size: size("max_file_size", 128 << 20)?.max(1),
            part_size,
            open: BTreeMap::new(),
            seq: 0,
            run: format!("{}-{}", job_name.replace(['/', ' '], "_"), chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")),
            delivery: Delivery::Plain,
            epoch: 1,
            prepared: BTreeMap::new(),
            completed: 0,
            health: crate::sink::SinkHealth::default(),
            up: Uploader { loc, props: props.clone() },
        };
        sink.check_access()?;
        Ok(sink)
    }

    /// Lists one key under the prefix: wrong credentials, a missing bucket or an unreachable
    /// endpoint fail here, at start, naming the bucket.
    fn check_access(&self) -> Result<()> {
        let loc = location(&self.up.props)?; // a client for this check's runtime only
        let props = self.up.props.clone();
        let name = self.name.clone();
        on_own_runtime("s3", async move {
            use futures::StreamExt;
            let prefix = loc.list_prefix();
            let mut l = loc.store.list(prefix.as_ref());
            match l.next().await {
                Some(Err(e)) => {
                    Err(store_error(&format!("s3_sink '{name}': cannot write to bucket '{}': listing", loc.bucket), &loc.url(&loc.prefix), e, &props))
                }
                _ => Ok(()),
            }
        })
    }

    /// The object key for a new object in `dir`.
    fn new_key(&mut self, dir: &str) -> String {
        let part = match self.delivery {
            // the run token too: a fresh start (--no-restore, a second process) never writes over
            // objects an earlier run committed
            Delivery::ExactlyOnce => format!("{}-c{:06}-{:04}", self.run, self.epoch, self.seq),
            _ => format!("{}-{:05}", self.run, self.seq),
        };
        self.seq += 1;
        let name = self.template_name(&part);
        format!("{dir}{name}")
    }

    fn template_name(&self, part: &str) -> String {
        PathTemplate::new(&self.file_name.replace("{part}", part), Rotation::Never).render(chrono::Utc::now(), self.seq)
    }

    /// Encodes `rows` into the object of `dir`, sending a part when one is full.
    async fn write_to(&mut self, dir: String, rows: RecordBatch) -> Result<()> {
        if !self.open.contains_key(&dir) {
            let key = self.new_key(&dir);
            let encoder = BufferEncoder::try_new(self.format, self.compression, rows.schema(), self.up.loc.url(&key))?;
            self.open.insert(dir.clone(), OpenObject { key, encoder, upload: None, sent: 0 });
        }
        let Some(mut obj) = self.open.remove(&dir) else { return Ok(()) };
        if let Err(e) = self.up.write(&mut obj, &rows, self.part_size).await {
            return Err(self.break_on(obj, e).await);
        }
        if obj.sent + obj.encoder.size() >= self.max_file_size {
            return self.finish(obj).await;
        }
        self.open.insert(dir, obj);
        Ok(())
    }

    /// Ends an object: its last part sent, and completed now (no transactions) or at the
    /// checkpoint's commit (the upload is kept for [`Sink::prepare`]).
    async fn finish(&mut self, obj: OpenObject) -> Result<()> {
        let key = obj.key.clone();
        let upload = obj.upload.clone();
        match self.finish_object(obj).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!("s3 sink '{}': {} could not be finished ({e}); the sink stops", self.name, self.up.loc.url(&key));
                if let Some(u) = &upload {
                    self.up.abort(u).await;
                }
                for o in std::mem::take(&mut self.open).into_values() {
                    if let Some(u) = &o.upload {
                        self.up.abort(u).await;
                    }
                }
                Err(self.health.broken_with(msg))
            }
        }
    }

    async fn finish_object(&mut self, obj: OpenObject) -> Result<()> {
        let OpenObject { key, encoder, upload, .. } = obj;
        let rows = encoder.rows();
        let last = encoder.finish()?;
        let transactional = self.delivery == Delivery::ExactlyOnce;
        match upload {
            None if !transactional => {
                self.up.put(&key, last).await?;
                self.completed += 1;
            }
            upload => {
                let mut u = match upload {
                    Some(u) => u,
                    None => self.up.start(&key).await?,
                };
                if !last.is_empty() || u.parts.is_empty() {
                    self.up.put_part(&mut u, last).await?;
                }
                if transactional {
                    self.prepared.entry(self.epoch).or_default().push(u);
                } else {
                    self.up.complete(&u).await?;
                    self.completed += 1;
                }
            }
        }
        debug!(sink = %self.name, key = %key, rows, "object finished");
        Ok(())
    }

    async fn finish_all(&mut self) -> Result<()> {
        self.check()?;
        self.health.start("finishing the open objects");
        for (_, obj) in std::mem::take(&mut self.open) {
            if let Err(e) = self.finish(obj).await {
                self.health.done();
                return Err(e);
            }
        }
        self.health.done();
        Ok(())
    }

    /// Err once the sink is broken.
    fn check(&mut self) -> Result<()> {
        let sink = format!("s3 sink '{}'", self.name);
        self.health.check(&sink, "open objects")
    }

    /// An object lost bytes: its upload is aborted, every open object dropped, and the sink
    /// refuses to go on (nothing partial is ever completed).
    async fn break_on(&mut self, obj: OpenObject, e: ConnectorError) -> ConnectorError {
        let msg = format!("s3 sink '{}': {} lost data ({e}); the sink stops so that no incomplete object is published", self.name, self.up.loc.url(&obj.key));
        for o in std::iter::once(obj).chain(std::mem::take(&mut self.open).into_values()) {
            if let Some(u) = &o.upload {
                self.up.abort(u).await;
            }
        }
        self.health.broken_with(msg)
    }
}

impl S3Sink {
    /// [`Sink::write`] once the sink is known to be whole.
    async fn write_rows(&mut self, batch: &RecordBatch) -> Result<()> {
        let prefix = self.template.render(chrono::Utc::now(), self.seq);
        for (dir, rows) in crate::hive_partitions::split(batch, &self.partition_columns, &self.up.props, &self.name)? {
            self.write_to(format!("{prefix}{dir}"), rows).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &Schema) -> Result<()> {
        crate::hive_partitions::check_columns(&self.partition_columns, schema, &self.up.props)?;
        self.format.check_writable(schema, "object")
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.health.start("a write");
        let r = self.write_rows(batch).await;
        self.health.done();
        r
    }

    /// Nothing: objects are finished at `max_file_size`, at each checkpoint (`prepare`) and at
    /// the end — not at every idle moment, which would make an object per batch.
    async fn flush(&mut self) -> Result<()> {
        self.check()
    }

    async fn close(&mut self) -> Result<()> {
        if self.delivery == Delivery::ExactlyOnce {
            // rows after the last checkpoint are not published
            for (_, obj) in std::mem::take(&mut self.open) {
                if let Some(u) = obj.upload {
                    self.up.abort(&u).await;
                }
            }
        } else {
            self.finish_all().await?;
        }
        info!(sink = %self.name, "s3 sink '{}': {} object{} written to {}", self.name, self.completed, if self.completed == 1 { "" } else { "s" }, self.up.loc.url(&self.up.loc.prefix));
        Ok(())
    }

    fn transactional(&self) -> bool {
        true
    }

    fn set_delivery(&mut self, _job: &str, delivery: Delivery) -> Result<()> {
        self.delivery = delivery;
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        if self.delivery != Delivery::ExactlyOnce {
            self.finish_all().await?;
            return Ok(None);
        }
        self.finish_all().await?;
        if let Some(u) = self.prepared.remove(&self.epoch) {
            self.prepared.entry(checkpoint).or_default().extend(u);
        }
        self.epoch = checkpoint + 1;
        self.seq = 0;
        // every upload prepared and not completed: a checkpoint that failed to complete is
        // completed with the next one
        let state = SinkCheckpoint { uploads: self.prepared.values().flatten().cloned().collect() };
        serde_json::to_value(&state).map(Some).map_err(|e| ConnectorError::Other(format!("s3 sink '{}': {e}", self.name)))
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let done: Vec<u64> = self.prepared.range(..=checkpoint).map(|(k, _)| *k).collect();
        for k in done {
            let uploads = self.prepared.get(&k).cloned().unwrap_or_default();
            for u in &uploads {
                self.up.complete(u).await?;
                self.completed += 1;
            }
            self.prepared.remove(&k);
        }
        Ok(())
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        let Some((n, state)) = restored else { return Ok(()) };
        self.epoch = n + 1;
        let state: SinkCheckpoint = match state {
            Some(v) => {
                serde_json::from_value(v).map_err(|e| ConnectorError::Other(format!("s3 sink '{}': its checkpoint state cannot be read: {e}", self.name)))?
            }
            None => SinkCheckpoint::default(),
        };
        if self.delivery == Delivery::ExactlyOnce {
            // the restored checkpoint is complete: its uploads are completed (again)
            for u in &state.uploads {
                if let Err(e) = self.up.complete(u).await {
                    warn!(sink = %self.name, "{e}");
                    return Err(e);
                }
                self.completed += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MB"), Ok(128 << 20));
        assert_eq!(parse_size("8 MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
    }
}
