//! The checkpoint store, on `object_store`: a local directory by default (`checkpoint.dir`,
//! else `checkpoints/<job>` under the working directory), any `object_store` URL later.
//!
//! ```text
//! checkpoints/<job>/chk-00000012/op-3-panes.arrow     an operator's state table (Arrow IPC),
//!                                                     one record batch per key group
//! checkpoints/<job>/chk-00000012/_manifest.json       written last: the checkpoint is complete
//! ```
//!
//! A checkpoint counts only once its manifest exists; the manifest is written in one put (a
//! local file is written aside and renamed), so a crash leaves either no manifest or a whole
//! one. Older checkpoints are pruned, keeping `checkpoint.retain` (default 3) complete ones.
//!
//! ```sql
//! WITH ('checkpoint.dir' = '/var/lib/ferris/checkpoints', 'checkpoint.retain' = '3', …)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferris_connectors::checkpoint::{Positions, Prepared};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::CheckpointError;

/// The name of a checkpoint's manifest within its directory.
pub const MANIFEST: &str = "_manifest.json";
/// The manifest format written by this version.
pub const MANIFEST_VERSION: u32 = 1;

/// What a complete checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The job.
    pub job: String,
    /// The checkpoint's number.
    pub checkpoint: u64,
    /// When it completed, epoch milliseconds.
    pub created_ms: i64,
    /// `exactly-once` (use_transactions) or `at-least-once`.
    pub mode: String,
    /// The job's inputs had all ended: a restart has nothing more to read.
    pub finished: bool,
    /// The stateful operators, in plan order, with their state.
    pub operators: Vec<OperatorEntry>,
    /// Each source's read positions.
    pub sources: BTreeMap<String, Positions>,
    /// What each sink prepared at this checkpoint (staged files, a transaction), to finish
    /// after a crash.
    pub sinks: BTreeMap<String, Option<Prepared>>,
}

/// One stateful operator in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorEntry {
    /// Its position among the plan's stateful operators.
    pub id: usize,
    /// Its shape (`WindowAggregateExec: window=TUMBLE(60000ms), …`): a restore into a plan with
    /// another shape is refused.
    pub shape: String,
    /// Small state (watermarks, counters).
    pub meta: serde_json::Value,
    /// Its state tables: name → file (relative to the checkpoint directory) and the key groups
    /// of its record batches.
    pub tables: BTreeMap<String, TableEntry>,
}

/// One state table's file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    /// File name within the checkpoint directory.
    pub file: String,
    /// Rows.
    pub rows: usize,
    /// For keyed tables: the key group of each record batch in the file, in order.
    pub key_groups: Vec<u16>,
}

/// Where a job's checkpoints live.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    /// Held while this process writes the store (`.lock`, an exclusive file lock).
    _lock: Option<Arc<std::fs::File>>,
    /// How users name it (the directory, or the URL).
    display: String,
}

fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id:08}")
}

fn io(what: String, e: object_store::Error) -> CheckpointError {
    CheckpointError::Store { what, message: e.to_string() }
}

impl CheckpointStore {
    /// Opens (creating) the store at `dir`: a local path or a `file://` URL.
    pub fn open(dir: &str) -> Result<Self, CheckpointError> {
        let local = dir.strip_prefix("file://").unwrap_or(dir);
        if local.contains("://") {
            return Err(CheckpointError::Config {
                key: "checkpoint.dir".into(),
                message: format!("'{dir}': only local directories (or file:// URLs) hold checkpoints in this version"),
            });
        }
        std::fs::create_dir_all(local).map_err(|e| CheckpointError::Store { what: format!("creating {local}"), message: e.to_string() })?;
        let absolute = std::fs::canonicalize(local).map_err(|e| CheckpointError::Store { what: format!("opening {local}"), message: e.to_string() })?;
        let fs = LocalFileSystem::new_with_prefix(&absolute).map_err(|e| io(format!("opening {local}"), e))?;
        Ok(Self { store: Arc::new(fs), _lock: None, display: local.to_string() })
    }

    /// Opens the store at `dir` for this process alone (an exclusive lock on `dir/.lock`,
    /// released when the process ends, however it ends). `Ok(None)` when another running
    /// process of the job holds it.
    pub fn open_exclusive(dir: &str) -> Result<Option<Self>, CheckpointError> {
        let mut store = Self::open(dir)?;
        let local = dir.strip_prefix("file://").unwrap_or(dir);
        let path = std::path::Path::new(local).join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CheckpointError::Store { what: format!("opening {}", path.display()), message: e.to_string() })?;
        match file.try_lock() {
            Ok(()) => {
                store._lock = Some(Arc::new(file));
                Ok(Some(store))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CheckpointError::Store { what: format!("locking {}", path.display()), message: e.to_string() }),
        }
    }

    /// How users name the store.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn path(&self, id: u64, name: &str) -> Path {
        Path::from(format!("{}/{name}", checkpoint_dir(id)))
    }

    /// Writes a file of checkpoint `id`.
    pub async fn put(&self, id: u64, name: &str, bytes: Bytes) -> Result<(), CheckpointError> {
        let path = self.path(id, name);
        self.store.put(&path, PutPayload::from_bytes(bytes)).await.map_err(|e| io(format!("writing {}/{path}", self.display), e))?;
        Ok(())
    }

    /// Reads a file of checkpoint `id`.
    pub async fn get(&self, id: u64, name: &str) -> Result<Bytes, CheckpointError> {
        let path = self.path(id, name);
        let r = self.store.get(&path).await.map_err(|e| io(format!("reading {}/{path}", self.display), e))?;
        r.bytes().await.map_err(|e| io(format!("reading {}/{path}", self.display), e))
    }

    /// Writes `manifest` last: the checkpoint is complete once this returns.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let text = serde_json::to_vec_pretty(manifest).map_err(|e| CheckpointError::Store { what: "encoding the manifest".into(), message: e.to_string() })?;
        self.put(manifest.checkpoint, MANIFEST, Bytes::from(text)).await
    }

    /// The numbers of the checkpoints with a manifest, ascending.
    pub async fn complete(&self) -> Result<Vec<u64>, CheckpointError> {
        let listed = self.store.list_with_delimiter(None).await.map_err(|e| io(format!("listing {}", self.display), e))?;
        let mut ids = Vec::new();
        for dir in listed.common_prefixes {
            let Some(id) = dir.filename().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse::<u64>().ok()) else { continue };
            if self.store.head(&self.path(id, MANIFEST)).await.is_ok() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every checkpoint directory, complete or not.
    async fn all(&self) -> Result<Vec<u64>, CheckpointError> {
        let listed = self.store.list_with_delimiter(None).await.map_err(|e| io(format!("listing {}", self.display), e))?;
        let mut ids: Vec<u64> =
            listed.common_prefixes.iter().filter_map(|d| d.filename().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok())).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The manifest of checkpoint `id`.
    pub async fn manifest(&self, id: u64) -> Result<Manifest, CheckpointError> {
        let bytes = self.get(id, MANIFEST).await?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt { what: format!("{}/{}/{MANIFEST}", self.display, checkpoint_dir(id)), message: e.to_string() })?;
        if m.version != MANIFEST_VERSION {
            return Err(CheckpointError::Corrupt {
                what: format!("{}/{}/{MANIFEST}", self.display, checkpoint_dir(id)),
                message: format!("format version {} (this build reads {MANIFEST_VERSION})", m.version),
            });
        }
        Ok(m)
    }

    /// The latest complete checkpoint's manifest.
    pub async fn latest(&self) -> Result<Option<Manifest>, CheckpointError> {
        match self.complete().await?.last() {
            Some(&id) => Ok(Some(self.manifest(id).await?)),
            None => Ok(None),
        }
    }

    /// Deletes checkpoints older than the `retain` newest complete ones, and incomplete ones
    /// older than the newest complete (left by a crash).
    pub async fn prune(&self, retain: usize) -> Result<usize, CheckpointError> {
        let complete = self.complete().await?;
        let Some(&newest) = complete.last() else { return Ok(0) };
        let keep_from = complete.iter().rev().take(retain.max(1)).next_back().copied().unwrap_or(newest);
        let mut removed = 0;
        for id in self.all().await? {
            let stale = id < keep_from || (id < newest && !complete.contains(&id));
            if !stale {
                continue;
            }
            let prefix = Path::from(checkpoint_dir(id));
            let files: Vec<_> = self.store.list(Some(&prefix)).try_collect().await.map_err(|e| io(format!("listing {}/{prefix}", self.display), e))?;
            // the manifest first: a half-deleted checkpoint is never taken for a complete one
            let (manifest, rest): (Vec<_>, Vec<_>) = files.into_iter().partition(|m| m.location.filename() == Some(MANIFEST));
            for m in manifest.into_iter().chain(rest) {
                self.store.delete(&m.location).await.map_err(|e| io(format!("deleting {}/{}", self.display, m.location), e))?;
            }
            if let Ok(p) = std::path::Path::new(&self.display).join(checkpoint_dir(id)).canonicalize() {
                let _ = std::fs::remove_dir(p);
            }
            removed += 1;
        }
        Ok(removed)
    }
}
