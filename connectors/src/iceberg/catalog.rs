//! Where an Iceberg table's current metadata is recorded, and how a commit moves it: the
//! catalogs the sink commits through (`catalog.type`).
//!
//! - `filesystem` (also `hadoop`): the warehouse itself, in the layout of Iceberg's Hadoop
//!   catalog — `<warehouse>/<namespace>/<table>/metadata/v<N>.metadata.json` and
//!   `version-hint.text`. A commit creates `v<N+1>` only if nobody else has (atomic on a local
//!   file system and on S3's conditional writes). pyiceberg's `StaticTable`, DuckDB's
//!   `iceberg_scan` and Spark's `HadoopCatalog` read it.
//! - `sql`: the tables of Iceberg's JDBC catalog (`iceberg_tables`,
//!   `iceberg_namespace_properties`) in PostgreSQL, as pyiceberg's `SqlCatalog` and Java's
//!   `JdbcCatalog` keep them; a commit is a compare-and-swap of `metadata_location`.
//!
//! ```sql
//! WITH ('lake.type' = 'iceberg_sink', 'lake.catalog.type' = 'sql',
//!       'lake.catalog.uri' = 'postgresql://iceberg@127.0.0.1/catalog', 'lake.warehouse' = 's3://lake/wh', …)
//! ```

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use iceberg::spec::{FormatVersion, SortOrder, TableMetadata, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog, Error as IcebergError, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};
use tracing::{debug, warn};

use super::storage::Warehouse;
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// Which catalog, and how to reach it.
#[derive(Debug)]
enum Kind {
    FileSystem,
    Sql { conn: Box<crate::postgres::Connection>, name: String },
}

/// The catalog an `iceberg_sink` commits through.
#[derive(Debug)]
pub struct SinkCatalog {
    kind: Kind,
    warehouse: Warehouse,
}

fn unsupported(what: &str) -> IcebergError {
    IcebergError::new(ErrorKind::FeatureUnsupported, format!("the sink's catalog does not {what}"))
}

fn conflict(table: &TableIdent) -> IcebergError {
    IcebergError::new(ErrorKind::CatalogCommitConflicts, format!("another writer committed to {table} first")).with_retryable(true)
}

fn namespace_text(ns: &NamespaceIdent) -> String {
    ns.clone().inner().join(".")
}

impl SinkCatalog {
    /// The catalog `props` name in `catalog.type` (default `filesystem`) and `catalog.uri`.
    pub fn from_properties(props: &Properties, warehouse: Warehouse) -> Result<Self> {
        let kind = match props.get("catalog.type").map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None | Some("filesystem" | "hadoop" | "file") => {
                if let Some(uri) = props.get("catalog.uri") {
                    warn!(
                        "key '{}' does nothing for a filesystem catalog (the warehouse is the catalog); ignoring '{}'",
                        props.full_key("catalog.uri"),
                        crate::properties::mask_credentials(uri)
                    );
                }
                Kind::FileSystem
            }
            Some("sql" | "jdbc") => {
                let uri = props.require("catalog.uri")?;
                let mut p = Properties::new(props.owner());
                p.insert("connection.url", uri);
                for (from, to) in [("catalog.user", "connection.username"), ("catalog.password", "connection.password")] {
                    if let Some(v) = props.get(from) {
                        p.insert(to, v);
                    }
                }
                if !uri.contains("postgres") {
                    return Err(ConnectorError::invalid(
                        props.full_key("catalog.uri"),
                        "the sql catalog is kept in PostgreSQL: write postgresql://user@host:port/database (SQLite is not supported yet)",
                    ));
                }
                let conn = crate::postgres::Connection::from_properties(&p)
                    .map_err(|e| ConnectorError::invalid(props.full_key("catalog.uri"), e.to_string().replace("connection.url", "catalog.uri")))?;
                Kind::Sql { conn: Box::new(conn), name: props.get("catalog.name").unwrap_or("default").to_string() }
            }
            Some("rest") => {
                return Err(ConnectorError::Other(format!(
                    "'{}' = 'rest': the REST catalog client is not built yet; use 'filesystem' or 'sql'",
                    props.full_key("catalog.type")
                )))
            }
            Some(other) => return Err(ConnectorError::invalid(props.full_key("catalog.type"), format!("'{other}': expected filesystem, sql or rest"))),
        };
        Ok(Self { kind, warehouse })
    }

    /// `filesystem`, or `sql (host:port/db, catalog 'name')`, for `explain` and logs.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::FileSystem => format!("filesystem catalog in {}", self.warehouse.location()),
            Kind::Sql { conn, name } => format!("sql catalog '{name}' in PostgreSQL {conn:?}"),
        }
    }

    /// Where a new table `ident` lives: `<warehouse>/<ns>/<table>` (filesystem) or
    /// `<warehouse>/<ns>.db/<table>` (sql, as pyiceberg places them).
    fn table_location(&self, ident: &TableIdent) -> String {
        let ns = ident.namespace().clone().inner();
        match self.kind {
            Kind::FileSystem => format!("{}/{}/{}", self.warehouse.location(), ns.join("/"), ident.name()),
            Kind::Sql { .. } => format!("{}/{}.db/{}", self.warehouse.location(), ns.join("."), ident.name()),
        }
    }

    async fn sql(&self) -> iceberg::Result<(tokio_postgres::Client, &str)> {
        let Kind::Sql { conn, name } = &self.kind else { return Err(unsupported("keep tables in SQL")) };
        let client = conn.connect().await.map_err(|e| IcebergError::new(ErrorKind::Unexpected, e.to_string()))?;
        let ddl = "CREATE TABLE IF NOT EXISTS iceberg_tables (catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, \
                   table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5), \
                   PRIMARY KEY (catalog_name, table_namespace, table_name)); \
                   CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL, \
                   property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL, PRIMARY KEY (catalog_name, namespace, property_key));";
        client.batch_execute(ddl).await.map_err(|e| self.sql_error("creating the catalog tables", &e))?;
        Ok((client, name.as_str()))
    }

    fn sql_error(&self, what: &str, e: &tokio_postgres::Error) -> IcebergError {
        match &self.kind {
            Kind::Sql { conn, .. } => IcebergError::new(ErrorKind::Unexpected, conn.error(what, e).to_string()),
            Kind::FileSystem => IcebergError::new(ErrorKind::Unexpected, format!("{what}: {e}")),
        }
    }

    fn table(&self, ident: &TableIdent, metadata: TableMetadata, location: String) -> iceberg::Result<Table> {
        // the iceberg crate spawns its manifest work on the runtime the sink runs on
        Table::builder()
            .identifier(ident.clone())
            .metadata(metadata)
            .metadata_location(location)
            .file_io(self.warehouse.file_io())
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    async fn read_metadata(&self, location: &str) -> iceberg::Result<TableMetadata> {
        let bytes = iceberg::io::Storage::read(&self.warehouse, location).await?;
        serde_json::from_slice(&bytes).map_err(|e| IcebergError::new(ErrorKind::DataInvalid, format!("{location}: not Iceberg table metadata: {e}")))
    }

    fn to_json(metadata: &TableMetadata) -> iceberg::Result<Bytes> {
        serde_json::to_vec(metadata).map(Bytes::from).map_err(|e| IcebergError::new(ErrorKind::Unexpected, format!("table metadata: {e}")))
    }

    /// The filesystem catalog's current version of the table at `dir`: the hint, then any
    /// later version a writer made before it could move the hint.
    async fn current_version(&self, dir: &str) -> iceberg::Result<Option<u64>> {
        use iceberg::io::Storage;
        let hint = format!("{dir}/metadata/version-hint.text");
        let mut version = match self.warehouse.exists(&hint).await? {
            true => {
                let text = self.warehouse.read(&hint).await?;
                std::str::from_utf8(&text).ok().and_then(|t| t.trim().parse::<u64>().ok())
            }
            false => None,
        };
        if version.is_none() && self.warehouse.exists(&format!("{dir}/metadata/v1.metadata.json")).await? {
            version = Some(1);
        }
        let Some(mut v) = version else { return Ok(None) };
        while self.warehouse.exists(&format!("{dir}/metadata/v{}.metadata.json", v + 1)).await? {
            v += 1;
        }
        Ok(Some(v))
    }

    /// Opens table `ident`, creating it (and its namespace) when missing, with `schema`,
    /// partitioned by `spec`, written as Parquet compressed with `codec`.
    pub async fn load_or_create(
        &self,
        ident: &TableIdent,
        schema: iceberg::spec::Schema,
        spec: UnboundPartitionSpec,
        codec: &str,
    ) -> iceberg::Result<(Table, bool)> {
        match self.load_table(ident).await {
            Ok(t) => return Ok((t, false)),
            Err(e) if e.kind() == ErrorKind::TableNotFound => {}
            Err(e) => return Err(e),
        }
        let location = self.table_location(ident);
        let properties = HashMap::from([
            ("write.format.default".to_string(), "parquet".to_string()),
            ("write.parquet.compression-codec".to_string(), codec.to_string()),
            ("created-by".to_string(), "ferris-sql".to_string()),
        ]);
        let metadata = iceberg::spec::TableMetadataBuilder::new(schema, spec, SortOrder::unsorted_order(), location.clone(), FormatVersion::V2, properties)?
            .build()?
            .metadata;
        let bytes = Self::to_json(&metadata)?;
        match &self.kind {
            Kind::FileSystem => {
                let first = format!("{location}/metadata/v1.metadata.json");
                if !self.warehouse.create(&first, bytes).await? {
                    debug!(table = %ident, "created by another writer meanwhile");
                    return Ok((self.load_table(ident).await?, false));
                }
                iceberg::io::Storage::write(&self.warehouse, &format!("{location}/metadata/version-hint.text"), Bytes::from_static(b"1")).await?;
                Ok((self.table(ident, metadata, first)?, true))
            }
            Kind::Sql { .. } => {
                let file = MetadataLocation::new_with_metadata(&location, &metadata).to_string();
                iceberg::io::Storage::write(&self.warehouse, &file, bytes).await?;
                let (client, name) = self.sql().await?;
                let ns = namespace_text(ident.namespace());
                client
                    .execute(
                        "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
                        &[&name, &ns],
                    )
                    .await
                    .map_err(|e| self.sql_error("creating the namespace", &e))?;
                let n = client
                    .execute(
                        "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location) VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING",
                        &[&name, &ns, &ident.name(), &file],
                    )
                    .await
                    .map_err(|e| self.sql_error("creating the table", &e))?;
                if n == 0 {
                    let _ = iceberg::io::Storage::delete(&self.warehouse, &file).await;
                    return Ok((self.load_table(ident).await?, false));
                }
                Ok((self.table(ident, metadata, file)?, true))
            }
        }
    }
}

/// `commit` applied to `table`'s metadata: its requirements checked, its updates applied.
fn apply(table: &Table, mut commit: TableCommit) -> iceberg::Result<TableMetadata> {
    for r in commit.take_requirements() {
        r.check(Some(table.metadata())).map_err(|e| IcebergError::new(ErrorKind::CatalogCommitConflicts, e.to_string()).with_retryable(true))?;
    }
    let mut builder = table.metadata().clone().into_builder(table.metadata_location().map(str::to_string));
    for u in commit.take_updates() {
        builder = u.apply(builder)?;
    }
    Ok(builder.build()?.metadata)
}

#[async_trait]
impl Catalog for SinkCatalog {
    async fn list_namespaces(&self, _parent: Option<&NamespaceIdent>) -> iceberg::Result<Vec<NamespaceIdent>> {
        Err(unsupported("list namespaces"))
    }

    async fn create_namespace(&self, _namespace: &NamespaceIdent, _properties: HashMap<String, String>) -> iceberg::Result<Namespace> {
        Err(unsupported("create namespaces on their own"))
    }

    async fn get_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        Err(unsupported("read namespaces"))
    }

    async fn namespace_exists(&self, _namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        Err(unsupported("read namespaces"))
    }

    async fn update_namespace(&self, _namespace: &NamespaceIdent, _properties: HashMap<String, String>) -> iceberg::Result<()> {
        Err(unsupported("change namespaces"))
    }

    async fn drop_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<()> {
        Err(unsupported("drop namespaces"))
    }

    async fn list_tables(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        Err(unsupported("list tables"))
    }

    async fn create_table(&self, _namespace: &NamespaceIdent, _creation: TableCreation) -> iceberg::Result<Table> {
        Err(unsupported("create tables but its own"))
    }

    async fn load_table(&self, ident: &TableIdent) -> iceberg::Result<Table> {
        let not_found = || IcebergError::new(ErrorKind::TableNotFound, format!("no table {ident}"));
        match &self.kind {
            Kind::FileSystem => {
                let dir = self.table_location(ident);
                let v = self.current_version(&dir).await?.ok_or_else(not_found)?;
                let file = format!("{dir}/metadata/v{v}.metadata.json");
                let metadata = self.read_metadata(&file).await?;
                self.table(ident, metadata, file)
            }
            Kind::Sql { .. } => {
                let (client, name) = self.sql().await?;
                let row = client
                    .query_opt(
                        "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
                        &[&name, &namespace_text(ident.namespace()), &ident.name()],
                    )
                    .await
                    .map_err(|e| self.sql_error("looking up the table", &e))?
                    .ok_or_else(not_found)?;
                let file: Option<String> = row.get(0);
                let file = file.ok_or_else(not_found)?;
                let metadata = self.read_metadata(&file).await?;
                self.table(ident, metadata, file)
            }
        }
    }

    async fn drop_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported("drop tables"))
    }

    async fn purge_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported("purge tables"))
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        match self.load_table(table).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported("rename tables"))
    }

    async fn register_table(&self, _table: &TableIdent, _metadata_location: String) -> iceberg::Result<Table> {
        Err(unsupported("register tables"))
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let ident = commit.identifier().clone();
        let current = self.load_table(&ident).await?;
        let old = current.metadata_location_result()?.to_string();
        let metadata = apply(&current, commit)?;
        let bytes = Self::to_json(&metadata)?;
        match &self.kind {
            Kind::FileSystem => {
                let dir = self.table_location(&ident);
                let v = old
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.strip_prefix('v'))
                    .and_then(|f| f.strip_suffix(".metadata.json"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| {
                        IcebergError::new(ErrorKind::DataInvalid, format!("{old} is not a filesystem catalog's metadata file (v<N>.metadata.json)"))
                    })?;
                let file = format!("{dir}/metadata/v{}.metadata.json", v + 1);
                if !self.warehouse.create(&file, bytes).await? {
                    return Err(conflict(&ident));
                }
                // a hint only: readers look past it for later versions
                if let Err(e) =
                    iceberg::io::Storage::write(&self.warehouse, &format!("{dir}/metadata/version-hint.text"), Bytes::from((v + 1).to_string())).await
                {
                    warn!(table = %ident, "moving version-hint.text: {e}");
                }
                self.table(&ident, metadata, file)
            }
            Kind::Sql { .. } => {
                let file = MetadataLocation::from_str(&old)
                    .map(|m| m.with_next_version().with_new_metadata(&metadata).to_string())
                    .unwrap_or_else(|_| MetadataLocation::new_with_metadata(metadata.location(), &metadata).to_string());
                iceberg::io::Storage::write(&self.warehouse, &file, bytes).await?;
                let (client, name) = self.sql().await?;
                let n = client
                    .execute(
                        "UPDATE iceberg_tables SET metadata_location = $4, previous_metadata_location = $5 \
                         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 AND metadata_location = $5",
                        &[&name, &namespace_text(ident.namespace()), &ident.name(), &file, &old],
                    )
                    .await
                    .map_err(|e| self.sql_error("committing", &e))?;
                if n == 0 {
                    let _ = iceberg::io::Storage::delete(&self.warehouse, &file).await;
                    return Err(conflict(&ident));
                }
                self.table(&ident, metadata, file)
            }
        }
    }
}
