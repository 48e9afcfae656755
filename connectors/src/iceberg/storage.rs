//! The warehouse's files through `object_store`: the one client the S3 connector uses for
//! `s3://` (`az://`, `gs://`) warehouses, and the local file system for a path. The `iceberg`
//! crate writes manifests and metadata through it ([`iceberg::io::FileIO`]); the sink writes
//! its data files with the same client.
//!
//! ```sql
//! WITH ('lake.type' = 'iceberg_sink', 'lake.warehouse' = 's3://lake/warehouse', 'lake.endpoint' = 'http://127.0.0.1:9000', …)
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use iceberg::io::{FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use iceberg::{Error as IcebergError, ErrorKind};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// Where a warehouse is, and the clients of the stores its tables' files are in: one per
/// bucket (`s3://bucket/`), made when a location there is first used, with the sink's object
/// store keys; the local file system for paths.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Warehouse {
    /// The warehouse location itself (`s3://lake/warehouse`, `/data/warehouse`), no trailing
    /// `/`; empty when a REST catalog places the tables.
    location: String,
    /// The keys the clients are made with (endpoint, credentials); not serialised, so a
    /// deserialised copy has no clients and fails every call.
    #[serde(skip)]
    props: Option<Properties>,
    /// Clients by root (`s3://bucket/`, `/`).
    #[serde(skip)]
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Warehouse({})", self.location)
    }
}

/// The root of `location` (`s3://bucket/`, or `/` for a local path or `file:` URL) and the
/// key under it.
fn split_location(location: &str) -> (String, &str) {
    let local = location.strip_prefix("file://").or_else(|| location.strip_prefix("file:")).unwrap_or(location);
    if !location.contains("://") || location.starts_with("file:") {
        return ("/".into(), local.trim_start_matches('/'));
    }
    let (scheme, rest) = location.split_once("://").unwrap_or(("", location));
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (format!("{scheme}://{bucket}/"), key)
}

impl Warehouse {
    /// The warehouse `props` name in `warehouse`: an object store URL (with the S3 connector's
    /// connection keys) or a local directory (a path or a `file:` URL). Its client is made now,
    /// so that a wrong URL or key fails at start.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let key = "warehouse";
        let url = props.require(key)?.trim().trim_end_matches('/').to_string();
        let location = if url.contains("://") && !url.starts_with("file:") {
            url
        } else {
            let path = crate::properties::local_path(&url).map_err(|m| ConnectorError::invalid(props.full_key(key), m))?.into_owned();
            let path = std::path::absolute(&path).map_err(|e| ConnectorError::invalid(props.full_key(key), format!("'{path}': {e}")))?;
            path.to_string_lossy().trim_end_matches('/').to_string()
        };
        let w = Self { location, props: Some(props.clone()), stores: Arc::default() };
        w.client(&w.location)?;
        Ok(w)
    }

    /// A warehouse whose tables a REST catalog places: clients are made for the locations it
    /// gives, with `props`' object store keys.
    pub fn placed_by_catalog(props: &Properties) -> Self {
        Self { location: String::new(), props: Some(props.clone()), stores: Arc::default() }
    }

    /// The client of the store `location` is in, made on first use.
    fn client(&self, location: &str) -> Result<Arc<dyn ObjectStore>> {
        let (root, _) = split_location(location);
        let mut stores = self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = stores.get(&root) {
            return Ok(s.clone());
        }
        let props = self.props.as_ref().ok_or_else(|| ConnectorError::Other("the warehouse's keys were not carried over".into()))?;
        let store: Arc<dyn ObjectStore> = if root == "/" {
            Arc::new(LocalFileSystem::new())
        } else {
            let mut p = props.clone();
            p.insert("path", root.clone());
            let first = stores.is_empty();
            let loc = if first { crate::s3::checked_location(&p)? } else { crate::s3::location(&p)? };
            loc.store
        };
        stores.insert(root, store.clone());
        Ok(store)
    }

    /// The warehouse location (`s3://lake/warehouse`, `/data/warehouse`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A [`FileIO`] for the `iceberg` crate over this warehouse's client.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(self.storage_factory()).build()
    }

    /// What makes a [`FileIO`] over this warehouse's clients (a REST catalog makes its own).
    pub fn storage_factory(&self) -> Arc<dyn StorageFactory> {
        Arc::new(WarehouseFactory(self.clone()))
    }

    /// The client and key of `location`.
    pub fn resolve(&self, location: &str) -> iceberg::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let store = self.client(location).map_err(|e| IcebergError::new(ErrorKind::DataInvalid, e.to_string()))?;
        let (_, key) = split_location(location);
        let key = ObjectPath::parse(key.trim_end_matches('/')).map_err(|e| IcebergError::new(ErrorKind::DataInvalid, format!("'{location}': {e}")))?;
        Ok((store, key))
    }

    fn error(&self, what: &str, location: &str, e: object_store::Error) -> IcebergError {
        let kind = if matches!(e, object_store::Error::NotFound { .. }) { ErrorKind::DataInvalid } else { ErrorKind::Unexpected };
        IcebergError::new(kind, format!("{what} {location}: {}", self.masked(&e.to_string())))
    }

    /// `text` with every secret of the sink's keys masked: the object store's and the
    /// catalog's (`catalog.token`, both halves of `catalog.credential`, `catalog.password`).
    fn masked(&self, text: &str) -> String {
        let Some(p) = &self.props else { return crate::properties::mask_credentials(text) };
        let mut out = crate::s3::masked(text, p);
        for key in ["catalog.token", "catalog.credential", "catalog.password"] {
            if let Some(v) = p.get(key) {
                for secret in std::iter::once(v).chain(v.split_once(':').map(|(_, s)| s)) {
                    if secret.len() >= 4 {
                        out = out.replace(secret, crate::properties::MASK);
                    }
                }
            }
        }
        crate::properties::mask_credentials(&out)
    }

    /// Writes `bytes` to `location` only when nothing is there yet: false when something was
    /// (another writer's commit). The local file system and S3 (`If-None-Match`) do this atomically.
    pub async fn create(&self, location: &str, bytes: Bytes) -> iceberg::Result<bool> {
        let (store, key) = self.resolve(location)?;
        let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match store.put_opts(&key, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error("writing", location, e)),
        }
    }

    /// Starts an upload of `location`, published whole by [`MultipartUpload::complete`].
    pub async fn upload(&self, location: &str) -> iceberg::Result<Box<dyn MultipartUpload>> {
        let (store, key) = self.resolve(location)?;
        store.put_multipart(&key).await.map_err(|e| self.error("starting an upload of", location, e))
    }

    /// A connector error for an iceberg error, secrets masked.
    pub fn connector_error(&self, context: &str, e: IcebergError) -> ConnectorError {
        ConnectorError::Other(format!("{context}: {}", self.masked(&e.to_string())))
    }
}

/// Builds the warehouse's [`Storage`] for a [`FileIO`].
#[derive(Debug, Serialize, Deserialize)]
struct WarehouseFactory(Warehouse);

#[typetag::serde]
impl StorageFactory for WarehouseFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.0.clone()))
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for Warehouse {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (store, key) = self.resolve(path)?;
        match store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("looking up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (store, key) = self.resolve(path)?;
        let meta = store.head(&key).await.map_err(|e| self.error("looking up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (store, key) = self.resolve(path)?;
        let got = store.get(&key).await.map_err(|e| self.error("reading", path, e))?;
        got.bytes().await.map_err(|e| self.error("reading", path, e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (store, key) = self.resolve(path)?;
        Ok(Box::new(Reader { warehouse: self.clone(), store, path: path.to_string(), key }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let (store, key) = self.resolve(path)?;
        store.put(&key, PutPayload::from(bs)).await.map(|_| ()).map_err(|e| self.error("writing", path, e))
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(Writer { warehouse: self.clone(), path: path.to_string(), buf: Vec::new(), closed: false }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        let (store, key) = self.resolve(path)?;
        match store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let (store, prefix) = self.resolve(path)?;
        let mut listed = store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| self.error("listing", path, e))?;
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("deleting", meta.location.as_ref(), e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(p) = paths.next().await {
            self.delete(&p).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Ranged reads of one file.
struct Reader {
    warehouse: Warehouse,
    store: Arc<dyn ObjectStore>,
    path: String,
    key: ObjectPath,
}

#[async_trait]
impl FileRead for Reader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store.get_range(&self.key, range).await.map_err(|e| self.warehouse.error("reading", &self.path, e))
    }
}

/// A manifest or metadata file: small, written whole at close.
struct Writer {
    warehouse: Warehouse,
    path: String,
    buf: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for Writer {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.buf.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Err(IcebergError::new(ErrorKind::Unexpected, format!("{} closed twice", self.path)));
        }
        Storage::write(&self.warehouse, &self.path, Bytes::from(std::mem::take(&mut self.buf))).await
    }
}
