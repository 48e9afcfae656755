//! The warehouse's files through `object_store`: the one client the S3 connector uses for
//! `s3://` (`az://`, `gs://`) warehouses, and the local file system for a path. The `iceberg`
//! crate writes manifests and metadata through it ([`iceberg::io::FileIO`]); the sink writes
//! its data files with the same client.
//!
//! ```sql
//! WITH ('lake.type' = 'iceberg_sink', 'lake.warehouse' = 's3://lake/warehouse', 'lake.endpoint' = 'http://127.0.0.1:9000', …)
//! ```

use std::ops::Range;
use std::sync::Arc;

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

/// Where a warehouse is: its client and how its locations map to keys.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Warehouse {
    /// The client; not serialisable, so a deserialised copy has none and fails every call.
    #[serde(skip)]
    store: Option<Arc<dyn ObjectStore>>,
    /// What locations start with: `s3://bucket/`, or `/` for the local file system.
    root: String,
    /// The warehouse location itself (`s3://lake/warehouse`, `/data/warehouse`), no trailing `/`.
    location: String,
    /// Masks secrets in error texts.
    #[serde(skip)]
    props: Option<Properties>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Warehouse({})", self.location)
    }
}

impl Warehouse {
    /// The warehouse `props` name in `warehouse`: an object store URL (with the S3 connector's
    /// connection keys) or a local directory (a path or a `file:` URL).
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let key = "warehouse";
        let url = props.require(key)?.trim().trim_end_matches('/').to_string();
        if url.contains("://") && !url.starts_with("file:") {
            let mut p = props.clone();
            p.insert("path", format!("{url}/"));
            let loc = crate::s3::checked_location(&p)?;
            let root = loc.url("");
            return Ok(Self { store: Some(loc.store), location: url, root, props: Some(props.clone()) });
        }
        let path = crate::properties::local_path(&url).map_err(|m| ConnectorError::invalid(props.full_key(key), m))?.into_owned();
        let path = std::path::absolute(&path).map_err(|e| ConnectorError::invalid(props.full_key(key), format!("'{path}': {e}")))?;
        let location = path.to_string_lossy().trim_end_matches('/').to_string();
        Ok(Self { store: Some(Arc::new(LocalFileSystem::new())), root: "/".into(), location, props: Some(props.clone()) })
    }

    /// The warehouse location (`s3://lake/warehouse`, `/data/warehouse`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A [`FileIO`] for the `iceberg` crate over this warehouse's client.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(Arc::new(WarehouseFactory(self.clone()))).build()
    }

    fn store(&self) -> iceberg::Result<&Arc<dyn ObjectStore>> {
        self.store.as_ref().ok_or_else(|| IcebergError::new(ErrorKind::Unexpected, "the warehouse's client was not carried over"))
    }

    /// The object key of `location` (`s3://lake/warehouse/db/t/data/x.parquet` → `warehouse/db/t/data/x.parquet`).
    pub fn key(&self, location: &str) -> iceberg::Result<ObjectPath> {
        let rest = location.strip_prefix("file://").unwrap_or(location);
        let rest = rest.strip_prefix(self.root.as_str()).ok_or_else(|| {
            IcebergError::new(ErrorKind::DataInvalid, format!("'{location}' is not in the warehouse {} (the table lives elsewhere)", self.location))
        })?;
        ObjectPath::parse(rest).map_err(|e| IcebergError::new(ErrorKind::DataInvalid, format!("'{location}': {e}")))
    }

    fn error(&self, what: &str, location: &str, e: object_store::Error) -> IcebergError {
        let kind = if matches!(e, object_store::Error::NotFound { .. }) { ErrorKind::DataInvalid } else { ErrorKind::Unexpected };
        let text = match &self.props {
            Some(p) => crate::s3::masked(&e.to_string(), p),
            None => e.to_string(),
        };
        IcebergError::new(kind, format!("{what} {location}: {text}"))
    }

    /// Writes `bytes` to `location` only when nothing is there yet: false when something was
    /// (another writer's commit). The local file system and S3 (`If-None-Match`) do this atomically.
    pub async fn create(&self, location: &str, bytes: Bytes) -> iceberg::Result<bool> {
        let key = self.key(location)?;
        let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match self.store()?.put_opts(&key, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error("writing", location, e)),
        }
    }

    /// Starts an upload of `location`, published whole by [`MultipartUpload::complete`].
    pub async fn upload(&self, location: &str) -> iceberg::Result<Box<dyn MultipartUpload>> {
        let key = self.key(location)?;
        self.store()?.put_multipart(&key).await.map_err(|e| self.error("starting an upload of", location, e))
    }

    /// A connector error for an iceberg error, secrets masked.
    pub fn connector_error(&self, context: &str, e: IcebergError) -> ConnectorError {
        let text = match &self.props {
            Some(p) => crate::s3::masked(&e.to_string(), p),
            None => e.to_string(),
        };
        ConnectorError::Other(format!("{context}: {}", crate::properties::mask_credentials(&text)))
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
        match self.store()?.head(&self.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("looking up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let meta = self.store()?.head(&self.key(path)?).await.map_err(|e| self.error("looking up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let got = self.store()?.get(&self.key(path)?).await.map_err(|e| self.error("reading", path, e))?;
        got.bytes().await.map_err(|e| self.error("reading", path, e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(Reader { warehouse: self.clone(), path: path.to_string(), key: self.key(path)? }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.store()?.put(&self.key(path)?, PutPayload::from(bs)).await.map(|_| ()).map_err(|e| self.error("writing", path, e))
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(Writer { warehouse: self.clone(), path: path.to_string(), buf: Vec::new(), closed: false }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.store()?.delete(&self.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let store = self.store()?;
        let prefix = self.key(path)?;
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
    path: String,
    key: ObjectPath,
}

#[async_trait]
impl FileRead for Reader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.warehouse.store()?.get_range(&self.key, range).await.map_err(|e| self.warehouse.error("reading", &self.path, e))
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
