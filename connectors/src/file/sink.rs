//! `file_sink`: writes batches as CSV (with a header), JSON Lines or Parquet, with arrow's
//! writers; optional gzip, append, path templates and rotation with `max_files`, and Hive
//! directories from row values (`partition_columns`).
//!
//! ```sql
//! CREATE STREAM audit AS SELECT * FROM orders INTO audit_file
//! WITH ('audit_file.type' = 'file_sink', 'audit_file.path' = 'out/audit_{date}.jsonl',
//!       'audit_file.format' = 'jsonlines', 'audit_file.append' = 'true', 'audit_file.compression' = 'gzip');
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::path_template::{PathTemplate, Rotation};
use crate::checkpoint::Prepared;
use crate::error::{ConnectorError, Result};
use crate::format::encode::{write_text, Compression};
use crate::format::FileFormat;
use crate::properties::Properties;
use crate::sink::{Delivery, Sink};

/// A file sink.
pub struct FileSink {
    name: String,
    template: PathTemplate,
    format: FileFormat,
    append: bool,
    compression: Compression,
    max_files: Option<usize>,
    buffer: usize,
    current: Option<OpenFile>,
    /// CSV text of a batch before it is written, kept from batch to batch (see
    /// [`crate::format::encode::write_text`]).
    scratch: Vec<u8>,
    /// Paths opened during this run: opening one again appends instead of truncating.
    opened: HashSet<PathBuf>,
    batch_id: u64,
    /// How the job delivers: plain, checkpointed, or transactional.
    delivery: Delivery,
    /// The checkpoint the rows being written belong to (the last prepared + 1).
    epoch: u64,
    /// Transactional: where rows are staged until their checkpoint commits.
    staging: Option<Staging>,
    /// Restarted from a checkpoint: files already there are appended to, not truncated.
    append_existing: bool,
    /// Hive directories from these columns' values (`dt=…/`).
    partition_columns: Vec<String>,
    /// The sink's keys, for errors.
    props: Properties,
    /// Parquet files of this run by target: a target written again gets a part of its own
    /// (`x.parquet`, `x-1.parquet`, …) since a Parquet file cannot be appended to.
    parquet_parts: std::collections::HashMap<PathBuf, u32>,
}

/// Staged writing (`use_transactions`): a checkpoint's rows go to files in a staging
/// directory, published at commit — text appended to its file, Parquet renamed into place.
#[derive(Debug)]
struct Staging {
    /// `<fixed dir of the path>/.ferris-staging/<job>-<sink>`.
    dir: PathBuf,
    /// The staged file of each target of the current checkpoint.
    open: BTreeMap<PathBuf, PathBuf>,
    /// Prepared at a barrier, not committed yet, by checkpoint.
    prepared: BTreeMap<u64, Vec<StagedFile>>,
    /// Targets whose CSV header is written (published or staged).
    headers: HashSet<PathBuf>,
}

/// A staged file and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct StagedFile {
    staged: PathBuf,
    target: PathBuf,
    /// Text: the target's length before this file is appended (so that publishing twice, after
    /// a crash, appends once). Parquet: the file is renamed into place.
    base_len: u64,
    append: bool,
}

/// What the sink keeps in a checkpoint's manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SinkCheckpoint {
    /// Files staged at the checkpoint, published when it commits.
    #[serde(default)]
    files: Vec<StagedFile>,
    /// The next `{batch_id}`, so that a restart never writes over earlier files.
    batch_id: u64,
}

/// Drops what a failed batch left in `w` and its file: the file goes back to `start` bytes.
fn undo_append(w: &mut BufWriter<File>, start: u64, path: &Path) {
    let undone = w.get_ref().try_clone().and_then(|f| {
        // a fresh buffer over the same file: the failed batch's buffered bytes are dropped
        let old = std::mem::replace(w, BufWriter::new(f));
        let (file, _) = old.into_parts();
        drop(file);
        w.get_mut().set_len(start)?;
        w.get_mut().seek(std::io::SeekFrom::Start(start)).map(|_| ())
    });
    if let Err(e) = undone {
        warn!(path = %path.display(), "cannot undo a failed write ({e}): the file may end in a partial row");
    }
}

/// Publishes a staged file; doing it again (after a crash) changes nothing.
fn publish(f: &StagedFile) -> Result<()> {
    let io_t = |e| ConnectorError::io(&f.target, e);
    if !f.staged.exists() {
        return Ok(()); // published (and removed) before
    }
    if let Some(dir) = f.target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io(dir, e))?;
    }
    if !f.append {
        std::fs::rename(&f.staged, &f.target).map_err(io_t)?;
        return Ok(());
    }
    let staged_len = std::fs::metadata(&f.staged).map_err(|e| ConnectorError::io(&f.staged, e))?.len();
    let len = std::fs::metadata(&f.target).map(|m| m.len()).unwrap_or(0);
    if len != f.base_len + staged_len {
        let mut out = OpenOptions::new().create(true).write(true).truncate(false).open(&f.target).map_err(io_t)?;
        if len > f.base_len && len < f.base_len + staged_len {
            // an append cut short by a crash: start it again
            out.set_len(f.base_len).map_err(io_t)?;
        } else if len != f.base_len {
            warn!(path = %f.target.display(), "the file is {len} bytes where {} were expected: something else wrote to it; appending anyway", f.base_len);
        }
        let start = out.seek(std::io::SeekFrom::End(0)).map_err(io_t)?;
        let mut staged = File::open(&f.staged).map_err(|e| ConnectorError::io(&f.staged, e))?;
        if let Err(e) = std::io::copy(&mut staged, &mut out).and_then(|_| out.sync_data()) {
            // no torn rows for readers of the file meanwhile (a disk filling up): the append
            // is undone, and done again when the commit is retried or the job restarts
            if let Err(undo) = out.set_len(start) {
                warn!(path = %f.target.display(), "cannot undo a failed append ({undo}): a restart does");
            }
            return Err(io_t(e));
        }
    }
    std::fs::remove_file(&f.staged).map_err(|e| ConnectorError::io(&f.staged, e))?;
    Ok(())
}

struct OpenFile {
    /// The file written (a staged file under transactions).
    path: PathBuf,
    /// Where its rows end up.
    target: PathBuf,
    writer: Encoder,
}

// One per open file or decoder: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Text { out: TextOut, header_pending: bool },
    Parquet(Box<ArrowWriter<File>>),
}

// One per open file or decoder: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum TextOut {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Write for TextOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TextOut::Plain(w) => w.write(buf),
            TextOut::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TextOut::Plain(w) => w.flush(),
            TextOut::Gzip(w) => w.flush(),
        }
    }
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").field("name", &self.name).field("template", &self.template).finish()
    }
}

impl FileSink {
    /// Configures the sink `props.owner()`; nothing is opened until the first batch.
    pub fn try_new(props: &Properties) -> Result<Self> {
        let path = crate::properties::local_path(props.require("path")?).map_err(|m| ConnectorError::invalid(props.full_key("path"), m))?;
        let path = path.as_ref();
        let format = FileFormat::from_properties(props, path)?;
        let format = if format == FileFormat::Json { FileFormat::JsonLines } else { format };
        let append = props.get_bool("append")?.unwrap_or(false);
        let compression = Compression::from_properties(props, format)?;
        if format == FileFormat::Parquet && append {
            return Err(ConnectorError::invalid(
                props.full_key("append"),
                "a parquet file cannot be appended to; use a path template such as 'out/part_{batch_id}.parquet'",
            ));
        }
        let rotation = Rotation::from_properties(props)?;
        Ok(Self {
            scratch: Vec::new(),
            name: props.owner().to_string(),
            template: PathTemplate::new(path, rotation),
            format,
            append,
            compression,
            max_files: props.get_usize("max_files")?,
            buffer: props.get_usize("buffer_size_bytes")?.unwrap_or(1 << 20),
            current: None,
            opened: HashSet::new(),
            batch_id: 0,
            delivery: Delivery::Plain,
            epoch: 1,
            staging: None,
            append_existing: false,
            partition_columns: props.get_list("partition_columns").unwrap_or_default(),
            props: props.clone(),
            parquet_parts: std::collections::HashMap::new(),
        })
    }

    /// Where rows written now go: the rendered template; a Parquet file under checkpoints is a
    /// part of its own per checkpoint (`out/x.parquet` → `out/x-000007.parquet`), complete when
    /// the checkpoint is taken.
    fn target(&self, path: PathBuf) -> PathBuf {
        if self.format != FileFormat::Parquet || self.delivery == Delivery::Plain {
            return path;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (stem, ext) = match name.find('.').filter(|i| *i > 0) {
            Some(dot) => (&name[..dot], &name[dot..]),
            None => (name.as_str(), ""),
        };
        path.with_file_name(format!("{stem}-{:06}{ext}", self.epoch))
    }

    /// Deletes every staged file but those of `keep`.
    fn clear_staging(&self, keep: &[StagedFile]) -> Result<()> {
        let Some(st) = &self.staging else { return Ok(()) };
        let Ok(entries) = std::fs::read_dir(&st.dir) else { return Ok(()) };
        for e in entries.flatten() {
            let p = e.path();
            if !keep.iter().any(|f| f.staged == p) {
                debug!(sink = %self.name, path = %p.display(), "dropping a staged file no checkpoint committed");
                std::fs::remove_file(&p).map_err(|e| ConnectorError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Checks that the sink's directory can be created, so that a bad path fails at start-up.
    pub fn check_writable(&self) -> Result<()> {
        let path = PathBuf::from(self.template.render(chrono::Utc::now(), 0));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io(dir, e))?;
        }
        Ok(())
    }

    fn open(&mut self, target: &Path, schema: arrow::datatypes::SchemaRef) -> Result<()> {
        // transactional: the rows go to a staged file of this checkpoint, published at commit
        let (actual, header_done) = match self.staging.as_mut() {
            Some(st) => {
                let staged = match st.open.get(target) {
                    Some(s) => s.clone(),
                    None => {
                        let s = st.dir.join(format!("{:08}-{}", self.epoch, st.open.len()));
                        st.open.insert(target.to_path_buf(), s.clone());
                        s
                    }
                };
                let published = std::fs::metadata(target).map(|m| m.len() > 0).unwrap_or(false);
                let done = st.headers.contains(target) || published;
                st.headers.insert(target.to_path_buf());
                (staged, done)
            }
            None => (target.to_path_buf(), false),
        };
        let path = actual.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io(dir, e))?;
        }
        let append = self.append || self.opened.contains(path) || (self.append_existing && self.format != FileFormat::Parquet);
        let file = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path).map_err(|e| ConnectorError::io(path, e))?;
        let existing = header_done || (append && file.metadata().map(|m| m.len() > 0).unwrap_or(false));
        let writer = match self.format {
            FileFormat::Parquet => {
                let props = self.compression.parquet_properties();
                let w =
                    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| ConnectorError::Parquet { context: path.display().to_string(), source: e })?;
                Encoder::Parquet(Box::new(w))
            }
            _ => {
                let buf = BufWriter::with_capacity(self.buffer, file);
                let out = match self.compression {
                    Compression::Gzip => TextOut::Gzip(GzEncoder::new(buf, flate2::Compression::default())),
                    _ => TextOut::Plain(buf),
                };
                Encoder::Text { out, header_pending: !existing }
            }
        };
        self.opened.insert(path.to_path_buf());
        debug!(sink = %self.name, path = %path.display(), "opened output file");
        self.current = Some(OpenFile { path: path.to_path_buf(), target: target.to_path_buf(), writer });
        self.prune()?;
        Ok(())
    }

    /// Deletes the oldest files beyond `max_files`.
    fn prune(&self) -> Result<()> {
        let Some(max) = self.max_files else { return Ok(()) };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = glob::glob(&self.template.glob())
            .map(|paths| paths.filter_map(|p| p.ok()).filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p))).collect())
            .unwrap_or_default();
        if files.len() <= max {
            return Ok(());
        }
        files.sort();
        let current = self.current.as_ref().map(|c| c.path.clone());
        let excess = files.len() - max;
        for (_, p) in files.into_iter().filter(|(_, p)| Some(p) != current.as_ref()).take(excess) {
            info!(sink = %self.name, path = %p.display(), "removing old output file (max_files)");
            std::fs::remove_file(&p).map_err(|e| ConnectorError::io(&p, e))?;
        }
        Ok(())
    }

    fn finish_current(&mut self) -> Result<()> {
        let Some(f) = self.current.take() else { return Ok(()) };
        let io = |e| ConnectorError::io(&f.path, e);
        match f.writer {
            Encoder::Text { out, .. } => match out {
                TextOut::Plain(mut w) => w.flush().map_err(io)?,
                TextOut::Gzip(w) => {
                    let mut inner = w.finish().map_err(io)?;
                    inner.flush().map_err(io)?;
                }
            },
            Encoder::Parquet(w) => {
                w.close().map_err(|e| ConnectorError::Parquet { context: f.path.display().to_string(), source: e })?;
            }
        }
        Ok(())
    }

    fn write_sync(&mut self, batch: &RecordBatch) -> Result<()> {
        let rendered = PathBuf::from(self.template.render(chrono::Utc::now(), self.batch_id));
        self.batch_id += 1;
        if self.partition_columns.is_empty() {
            self.write_to(self.target(rendered), batch)?;
        } else {
            let parent = rendered.parent().map(Path::to_path_buf).unwrap_or_default();
            let file = rendered.file_name().map(|f| f.to_os_string()).unwrap_or_default();
            for (dir, rows) in crate::hive_partitions::split(batch, &self.partition_columns, &self.props, &self.name)? {
                let path = self.target(parent.join(dir).join(&file));
                self.write_to(path, &rows)?;
            }
        }
        if self.template.per_batch() {
            self.finish_current()?;
        }
        Ok(())
    }

    /// A Parquet target opened before in this run: its next part (`x-1.parquet`, …).
    fn parquet_part(&mut self, path: PathBuf) -> PathBuf {
        if self.format != FileFormat::Parquet || !self.opened.contains(&path) {
            return path;
        }
        let n = self.parquet_parts.entry(path.clone()).or_insert(0);
        *n += 1;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (stem, ext) = match name.find('.').filter(|i| *i > 0) {
            Some(dot) => (&name[..dot], &name[dot..]),
            None => (name.as_str(), ""),
        };
        path.with_file_name(format!("{stem}-{n}{ext}"))
    }

    /// Writes `batch` to the file of `path`, opening it (and closing the one open) if needed.
    fn write_to(&mut self, path: PathBuf, batch: &RecordBatch) -> Result<()> {
        if self.current.as_ref().map(|c| &c.target) != Some(&path) {
            self.finish_current()?;
            let actual = self.parquet_part(path.clone());
            self.open(&actual, batch.schema())?;
            if let Some(cur) = self.current.as_mut() {
                cur.target = path;
            }
        }
        let format = self.format;
        let scratch = &mut self.scratch;
        let cur = self.current.as_mut().ok_or_else(|| ConnectorError::Other("file sink has no open file".into()))?;
        let path = cur.path.clone();
        let ctx = || path.display().to_string();
        match &mut cur.writer {
            Encoder::Parquet(w) => w.write(batch).map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?,
            Encoder::Text { out, header_pending } => {
                // plain text: a batch reaches the file whole or not at all (a full disk leaves
                // no torn rows, and a retried batch is not written twice)
                let start = match out {
                    TextOut::Plain(w) => Some(w.stream_position().map_err(|e| ConnectorError::io(&path, e))?),
                    TextOut::Gzip(_) => None,
                };
                let written = write_text(format, batch, &mut *out, *header_pending, &ctx(), scratch);
                let written = written.and_then(|()| match &mut *out {
                    TextOut::Plain(w) => w.flush().map_err(|e| ConnectorError::io(&path, e)),
                    TextOut::Gzip(_) => Ok(()),
                });
                if written.is_err() {
                    if let (Some(start), TextOut::Plain(w)) = (start, &mut *out) {
                        undo_append(w, start, &path);
                    }
                }
                written?;
                *header_pending = false;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// CSV and JSON Lines are encoded from views as from plain text (the CSV encoder and
    /// arrow-json's writer read both), without a copy of the rows into plain text first; a
    /// Parquet file gets plain text, so that its readers see `Utf8` as before.
    fn takes_text_views(&self) -> bool {
        self.format != FileFormat::Parquet
    }

    fn check_schema(&self, schema: &arrow::datatypes::Schema) -> Result<()> {
        crate::hive_partitions::check_columns(&self.partition_columns, schema, &self.props)?;
        self.format.check_writable(schema, "file")
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.write_sync(batch)
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(f) = self.current.as_mut() {
            let path = f.path.clone();
            match &mut f.writer {
                Encoder::Text { out, .. } => out.flush().map_err(|e| ConnectorError::io(&path, e))?,
                Encoder::Parquet(w) => w.flush().map_err(|e| ConnectorError::Parquet { context: path.display().to_string(), source: e })?,
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.finish_current()?;
        if let Some(st) = &self.staging {
            // rows staged after the last checkpoint are not published
            for staged in st.open.values() {
                let _ = std::fs::remove_file(staged);
            }
        }
        Ok(())
    }

    fn transactional(&self) -> bool {
        true
    }

    fn set_delivery(&mut self, job: &str, delivery: Delivery) -> Result<()> {
        self.delivery = delivery;
        if delivery == Delivery::ExactlyOnce {
            if self.append {
                return Err(ConnectorError::Other(format!(
                    "file sink '{}': 'append' and use_transactions together would publish a checkpoint's rows into a file other writers change; drop 'append'",
                    self.name
                )));
            }
            let dir = self.template.fixed_dir().join(".ferris-staging").join(format!("{job}-{}", self.name));
            std::fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(&dir, e))?;
            self.staging = Some(Staging { dir, open: BTreeMap::new(), prepared: BTreeMap::new(), headers: HashSet::new() });
        }
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        let mut state = SinkCheckpoint { files: Vec::new(), batch_id: self.batch_id };
        match self.delivery {
            Delivery::Plain => {
                self.flush().await?;
                return Ok(None);
            }
            Delivery::AtLeastOnce => {
                if self.format == FileFormat::Parquet {
                    // a complete file per checkpoint: a crash never leaves one without its footer
                    self.finish_current()?;
                } else {
                    self.flush().await?;
                    if let Some(f) = &self.current {
                        if let Encoder::Text { out: TextOut::Plain(w), .. } = &f.writer {
                            w.get_ref().sync_data().map_err(|e| ConnectorError::io(&f.path, e))?;
                        }
                    }
                }
            }
            Delivery::ExactlyOnce => {
                self.finish_current()?;
                let text = self.format != FileFormat::Parquet;
                if let Some(st) = self.staging.as_mut() {
                    for (target, staged) in std::mem::take(&mut st.open) {
                        File::open(&staged).and_then(|f| f.sync_all()).map_err(|e| ConnectorError::io(&staged, e))?;
                        // checkpoints prepared before and not yet published append first
                        let pending: u64 = st
                            .prepared
                            .values()
                            .flatten()
                            .filter(|f| f.target == target && f.append)
                            .map(|f| std::fs::metadata(&f.staged).map(|m| m.len()).unwrap_or(0))
                            .sum();
                        let base_len = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0) + pending;
                        state.files.push(StagedFile { staged, target, base_len, append: text });
                    }
                    st.prepared.insert(checkpoint, std::mem::take(&mut state.files));
                    // every file prepared and not yet published: a checkpoint that failed to
                    // complete is published with the next one
                    state.files = st.prepared.values().flatten().cloned().collect();
                }
            }
        }
        self.epoch = checkpoint + 1;
        serde_json::to_value(&state).map(Some).map_err(|e| ConnectorError::Other(format!("file sink '{}': {e}", self.name)))
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let Some(st) = self.staging.as_mut() else { return Ok(()) };
        let done: Vec<u64> = st.prepared.range(..=checkpoint).map(|(k, _)| *k).collect();
        for k in done {
            if let Some(files) = st.prepared.remove(&k) {
                for f in &files {
                    publish(f)?;
                }
            }
        }
        self.prune()
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        let state: Option<(u64, SinkCheckpoint)> = match restored {
            Some((n, Some(v))) => Some((
                n,
                serde_json::from_value(v).map_err(|e| ConnectorError::Other(format!("file sink '{}': its checkpoint state cannot be read: {e}", self.name)))?,
            )),
            Some((n, None)) => Some((n, SinkCheckpoint::default())),
            None => None,
        };
        match state {
            Some((n, state)) => {
                self.epoch = n + 1;
                self.batch_id = self.batch_id.max(state.batch_id);
                if self.delivery == Delivery::ExactlyOnce {
                    // the restored checkpoint is complete: publish what it staged (again)
                    for f in &state.files {
                        publish(f)?;
                        if let Some(st) = self.staging.as_mut() {
                            st.headers.insert(f.target.clone());
                        }
                    }
                    self.clear_staging(&[])?;
                } else {
                    self.append_existing = true;
                }
            }
            None => self.clear_staging(&[])?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(v: i64) -> RecordBatch {
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![std::sync::Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    #[tokio::test]
    async fn max_files_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let path = format!("{}/part_{{batch_id}}.jsonl", d.path().display());
        let props = Properties::from_pairs("s", [("path", path.as_str()), ("max_files", "2")]);
        let mut sink = FileSink::try_new(&props).unwrap();
        for v in 0..5 {
            sink.write(&batch(v)).await.unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15)); // distinct modification times
        }
        sink.close().await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["part_3.jsonl", "part_4.jsonl"]);
        assert_eq!(std::fs::read_to_string(d.path().join("part_4.jsonl")).unwrap(), "{\"v\":4}\n");
    }

    /// Text as views (top level, and inside a list for JSON Lines) is written as the same text
    /// in plain columns is, byte for byte, and partitions by a view column name the same
    /// directories; a Parquet sink asks for plain text.
    #[tokio::test]
    async fn views_are_written_as_plain_text_is() {
        use arrow::array::{ArrayRef, ListArray, StringArray, StringViewArray};
        let text = vec![Some("plain"), None, Some("a \"quoted\", longer text, with commas\nand a line"), Some(""), Some("ünïcødé past twelve bytes")];
        let ids: ArrayRef = std::sync::Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]));
        let days: Vec<Option<&str>> = vec![Some("d1"), Some("d2"), Some("d1"), Some("d2"), Some("d1")];
        let batch_of = |s: ArrayRef, day: ArrayRef| {
            let schema = Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("s", s.data_type().clone(), true),
                Field::new("day", day.data_type().clone(), true),
            ]);
            RecordBatch::try_new(std::sync::Arc::new(schema), vec![ids.clone(), s, day]).unwrap()
        };
        let plain = batch_of(std::sync::Arc::new(StringArray::from(text.clone())), std::sync::Arc::new(StringArray::from(days.clone())));
        let views = batch_of(std::sync::Arc::new(StringViewArray::from(text.clone())), std::sync::Arc::new(StringViewArray::from(days.clone())));
        for (name, extra) in [("out.csv", vec![]), ("out.jsonl", vec![]), ("out.csv", vec![("partition_columns", "day")])] {
            let want = written(&plain, name, &extra).await;
            assert!(!want.is_empty() && want.iter().all(|(_, t)| !t.is_empty()));
            assert_eq!(written(&views, name, &extra).await, want, "{name} {extra:?}");
        }
        // a list of views in JSON Lines
        let list = |values: ArrayRef| -> ArrayRef {
            let offsets = arrow::buffer::OffsetBuffer::from_lengths([2, 0, 1, 1, 1]);
            std::sync::Arc::new(ListArray::new(std::sync::Arc::new(Field::new("item", values.data_type().clone(), true)), offsets, values, None))
        };
        let day: ArrayRef = std::sync::Arc::new(StringArray::from(days));
        let plain_list = batch_of(list(std::sync::Arc::new(StringArray::from(text.clone()))), day.clone());
        let view_list = batch_of(list(std::sync::Arc::new(StringViewArray::from(text))), day);
        assert_eq!(written(&view_list, "out.jsonl", &[]).await, written(&plain_list, "out.jsonl", &[]).await);
        let parquet = FileSink::try_new(&Properties::from_pairs("s", [("path", "/tmp/never-written.parquet")])).unwrap();
        assert!(!parquet.takes_text_views(), "a Parquet file keeps plain text for its readers");
    }

    /// The files (path under the directory, text) a file sink writes `batch` to, at `name` in
    /// a new directory, with the properties `extra`.
    async fn written(batch: &RecordBatch, name: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir)
                .unwrap()
                .flat_map(|e| {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        vec![p]
                    }
                })
                .collect()
        }
        let d = tempfile::tempdir().unwrap();
        let path = format!("{}/{name}", d.path().display());
        let mut pairs = vec![("path", path.as_str())];
        pairs.extend_from_slice(extra);
        let mut sink = FileSink::try_new(&Properties::from_pairs("s", pairs)).unwrap();
        assert!(sink.takes_text_views());
        sink.check_schema(&batch.schema()).unwrap();
        sink.write(batch).await.unwrap();
        sink.close().await.unwrap();
        let mut files: Vec<(String, String)> =
            walk(d.path()).into_iter().map(|p| (p.strip_prefix(d.path()).unwrap().display().to_string(), std::fs::read_to_string(&p).unwrap())).collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn csv_append_writes_one_header() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.csv");
        let props = Properties::from_pairs("s", [("path", path.to_str().unwrap()), ("append", "true")]);
        for v in [1, 2] {
            let mut sink = FileSink::try_new(&props).unwrap();
            sink.write(&batch(v)).await.unwrap();
            sink.close().await.unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "v\n1\n2\n");
    }
}
