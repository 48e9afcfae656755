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
//! - `rest`: an Iceberg REST catalog (Polaris, Lakekeeper, Nessie, Unity, Glue's REST
//!   endpoint, …) through the `iceberg-catalog-rest` crate: the server places tables and moves
//!   them at commits; the sink writes the data files and manifests where it says, with the
//!   object store keys (`token` / `credential` for OAuth2).
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
enum Kind {
    FileSystem,
    /// The client is kept between calls, with whether `iceberg_tables` has the JDBC catalog's
    /// `iceberg_type` column (pyiceberg 0.12 and Java's V1 schema) or not (older tables).
    Sql {
        conn: Box<crate::postgres::Connection>,
        name: String,
        client: tokio::sync::Mutex<Option<(tokio_postgres::Client, bool)>>,
    },
    /// Made at first use, on the runtime the sink runs on.
    Rest {
        props: HashMap<String, String>,
        uri: String,
        client: Box<tokio::sync::OnceCell<iceberg_catalog_rest::RestCatalog>>,
    },
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::FileSystem => write!(f, "filesystem"),
            Kind::Sql { conn, name, .. } => write!(f, "sql({conn:?}, {name})"),
            Kind::Rest { uri, .. } => write!(f, "rest({})", crate::properties::mask_credentials(uri)),
        }
    }
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
    /// After a commit found the table moved on: done, when the table already holds the
    /// snapshots the commit adds (an earlier attempt of this commit landed, its answer lost: an
    /// object store's retried conditional write, a lost database reply); else a conflict the
    /// transaction retries on the table as it now is.
    async fn conflict_or_done(&self, ident: &TableIdent, added: &[i64]) -> iceberg::Result<Table> {
        let now = self.load_table(ident).await?;
        if !added.is_empty() && added.iter().all(|id| now.metadata().snapshot_by_id(*id).is_some()) {
            debug!(table = %ident, "the commit had landed");
            if let (Kind::FileSystem, Some(v)) = (&self.kind, now.metadata_location().and_then(hadoop_version)) {
                let hint = format!("{}/metadata/version-hint.text", self.table_location(ident, None));
                if let Err(e) = iceberg::io::Storage::write(&self.warehouse, &hint, Bytes::from(v.to_string())).await {
                    warn!(table = %ident, "moving version-hint.text: {e}");
                }
            }
            return Ok(now);
        }
        Err(conflict(ident))
    }

    /// The catalog `props` name in `catalog.type` (default `filesystem`) and `catalog.uri`,
    /// over the warehouse in `warehouse` (for `rest`, an optional name the server knows it by).
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let rest = props.get("catalog.type").is_some_and(|t| t.trim().eq_ignore_ascii_case("rest"));
        let warehouse = if rest { Warehouse::placed_by_catalog(props) } else { Warehouse::from_properties(props)? };
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
                Kind::Sql { conn: Box::new(conn), name: props.get("catalog.name").unwrap_or("default").to_string(), client: tokio::sync::Mutex::new(None) }
            }
            Some("rest") => {
                let uri = props.require("catalog.uri")?.trim().trim_end_matches('/').to_string();
                if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                    return Err(ConnectorError::invalid(props.full_key("catalog.uri"), "a REST catalog's address: http(s)://host:port (without /v1)"));
                }
                let mut rest = HashMap::from([("uri".to_string(), uri.clone())]);
                if let Some(w) = props.get("warehouse") {
                    rest.insert("warehouse".into(), w.to_string());
                }
                for (key, prop) in [("catalog.token", "token"), ("catalog.credential", "credential"), ("catalog.scope", "scope"), ("catalog.prefix", "prefix")]
                {
                    if let Some(v) = props.get(key) {
                        rest.insert(prop.into(), v.to_string());
                    }
                }
                Kind::Rest { props: rest, uri, client: Box::default() }
            }
            Some(other) => return Err(ConnectorError::invalid(props.full_key("catalog.type"), format!("'{other}': expected filesystem, sql or rest"))),
        };
        Ok(Self { kind, warehouse })
    }

    /// Where the tables' files are.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// `filesystem`, or `sql (host:port/db, catalog 'name')`, for `explain` and logs.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::FileSystem => format!("filesystem catalog in {}", self.warehouse.location()),
            Kind::Sql { conn, name, .. } => format!("sql catalog '{name}' in PostgreSQL {conn:?}"),
            Kind::Rest { uri, .. } => format!("REST catalog at {}", crate::properties::mask_credentials(uri)),
        }
    }

    /// Where a new table `ident` lives: `<warehouse>/<namespace levels>/<table>`, as Iceberg's
    /// Hadoop and JDBC catalogs and pyiceberg's SqlCatalog place them (a SQL namespace's
    /// `location` property wins).
    fn table_location(&self, ident: &TableIdent, namespace_location: Option<&str>) -> String {
        match namespace_location {
            Some(l) => format!("{}/{}", l.trim_end_matches('/'), ident.name()),
            None => format!("{}/{}/{}", self.warehouse.location(), ident.namespace().clone().inner().join("/"), ident.name()),
        }
    }

    /// Runs `f` with the SQL catalog's connection (made at first use, the catalog's tables
    /// created then if missing; made again after an error) and the catalog's name.
    async fn with_sql<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c tokio_postgres::Client,
            &'c str,
            bool,
        ) -> futures::future::BoxFuture<'c, std::result::Result<T, (&'static str, tokio_postgres::Error)>>,
    ) -> iceberg::Result<T> {
        let Kind::Sql { conn, name, client } = &self.kind else { return Err(unsupported("keep tables in SQL")) };
        let mut guard = client.lock().await;
        // a connection the server closed while idle is replaced before the call, and a call that
        // fails or is cut off takes its connection with it (the next call makes a new one)
        let (c, typed) = match guard.take().filter(|(c, _)| !c.is_closed()) {
            Some(kept) => kept,
            None => self.sql_connect(conn).await?,
        };
        let result = f(&c, name, typed).await;
        match result {
            Ok(v) => {
                *guard = Some((c, typed));
                Ok(v)
            }
            Err((what, e)) => Err(self.sql_error(what, &e)),
        }
    }

    /// A new connection to the SQL catalog, its tables created when missing; whether they have
    /// the `iceberg_type` column.
    async fn sql_connect(&self, conn: &crate::postgres::Connection) -> iceberg::Result<(tokio_postgres::Client, bool)> {
        let c = conn.connect().await.map_err(|e| IcebergError::new(ErrorKind::Unexpected, e.to_string()))?;
        // pyiceberg's check: create the tables only when missing (creating needs a privilege a
        // catalog's user may lack)
        let have = c
            .query_one("SELECT to_regclass('iceberg_tables') IS NOT NULL AND to_regclass('iceberg_namespace_properties') IS NOT NULL", &[])
            .await
            .map_err(|e| self.sql_error("looking for the catalog tables", &e))?;
        if !have.get::<_, bool>(0) {
            let ddl = "CREATE TABLE IF NOT EXISTS iceberg_tables (catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, \
                       table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5), \
                       PRIMARY KEY (catalog_name, table_namespace, table_name)); \
                       CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL, \
                       property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL, PRIMARY KEY (catalog_name, namespace, property_key));";
            c.batch_execute(ddl).await.map_err(|e| self.sql_error("creating the catalog tables", &e))?;
        }
        let typed = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'iceberg_tables' AND column_name = 'iceberg_type' \
                 AND table_schema = ANY (current_schemas(false)))",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("looking at the catalog tables", &e))?
            .get::<_, bool>(0);
        Ok((c, typed))
    }

    /// The REST catalog's client, made at first use (`GET /v1/config`).
    async fn rest(&self) -> iceberg::Result<Option<&iceberg_catalog_rest::RestCatalog>> {
        use iceberg::CatalogBuilder;
        let Kind::Rest { props, client, .. } = &self.kind else { return Ok(None) };
        let catalog = client
            .get_or_try_init(|| async {
                iceberg_catalog_rest::RestCatalogBuilder::default()
                    .with_storage_factory(self.warehouse.storage_factory())
                    .with_runtime(iceberg::Runtime::try_current()?)
                    .load("ferris", props.clone())
                    .await
            })
            .await?;
        Ok(Some(catalog))
    }

    fn sql_error(&self, what: &str, e: &tokio_postgres::Error) -> IcebergError {
        match &self.kind {
            Kind::Sql { conn, .. } => IcebergError::new(ErrorKind::Unexpected, conn.error(what, e).to_string()),
            _ => IcebergError::new(ErrorKind::Unexpected, format!("{what}: {e}")),
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

    /// Creates table `ident` (and its namespace), which the caller found missing, with
    /// `schema`, partitioned by `spec`, written as Parquet compressed with `codec`; true when this
    /// call created it, false when another writer did meanwhile (its table is returned).
    pub async fn create(&self, ident: &TableIdent, schema: iceberg::spec::Schema, spec: UnboundPartitionSpec, codec: &str) -> iceberg::Result<(Table, bool)> {
        let properties = HashMap::from([
            ("write.format.default".to_string(), "parquet".to_string()),
            ("write.parquet.compression-codec".to_string(), codec.to_string()),
            ("created-by".to_string(), "ferris-sql".to_string()),
        ]);
        if let Some(rest) = self.rest().await? {
            // the server places the table
            let ns = ident.namespace();
            if !rest.namespace_exists(ns).await? {
                match rest.create_namespace(ns, HashMap::new()).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            let creation = TableCreation::builder().name(ident.name().to_string()).schema(schema).partition_spec(spec).properties(properties).build();
            return match rest.create_table(ns, creation).await {
                Ok(t) => Ok((t, true)),
                Err(e) if e.kind() == ErrorKind::TableAlreadyExists => Ok((rest.load_table(ident).await?, false)),
                Err(e) => Err(e),
            };
        }
        let ns = namespace_text(ident.namespace());
        let namespace_location = match &self.kind {
            Kind::Sql { .. } => {
                let ns = ns.clone();
                self.with_sql(move |c, name, _| {
                    Box::pin(async move {
                        let row = c
                            .query_opt(
                                "SELECT property_value FROM iceberg_namespace_properties WHERE catalog_name = $1 AND namespace = $2 AND property_key = 'location'",
                                &[&name, &ns],
                            )
                            .await
                            .map_err(|e| ("reading the namespace", e))?;
                        Ok(row.map(|r| r.get::<_, String>(0)))
                    })
                })
                .await?
            }
            _ => None,
        };
        let location = self.table_location(ident, namespace_location.as_deref());
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
                let (ns, table, f) = (ns.clone(), ident.name().to_string(), file.clone());
                let n = self
                    .with_sql(move |c, name, typed| {
                        Box::pin(async move {
                            c.execute(
                                "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
                                &[&name, &ns],
                            )
                            .await
                            .map_err(|e| ("creating the namespace", e))?;
                            let insert = if typed {
                                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) \
                                 VALUES ($1, $2, $3, $4, NULL, 'TABLE') ON CONFLICT DO NOTHING"
                            } else {
                                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location) \
                                 VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING"
                            };
                            c.execute(insert, &[&name, &ns, &table, &f])
                            .await
                            .map_err(|e| ("creating the table", e))
                        })
                    })
                    .await?;
                if n == 0 {
                    let _ = iceberg::io::Storage::delete(&self.warehouse, &file).await;
                    return Ok((self.load_table(ident).await?, false));
                }
                Ok((self.table(ident, metadata, file)?, true))
            }
            Kind::Rest { .. } => Err(unsupported("create tables here")),
        }
    }
}

/// N of a filesystem catalog's `.../v<N>.metadata.json`.
fn hadoop_version(location: &str) -> Option<u64> {
    location.rsplit('/').next()?.strip_prefix('v')?.strip_suffix(".metadata.json")?.parse().ok()
}

/// A commit's `updates` applied to `table`'s metadata, its `requirements` checked first.
fn apply(table: &Table, requirements: Vec<iceberg::TableRequirement>, updates: Vec<iceberg::TableUpdate>) -> iceberg::Result<TableMetadata> {
    for r in requirements {
        r.check(Some(table.metadata())).map_err(|e| IcebergError::new(ErrorKind::CatalogCommitConflicts, e.to_string()).with_retryable(true))?;
    }
    let mut builder = table.metadata().clone().into_builder(table.metadata_location().map(str::to_string));
    for u in updates {
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
        if let Some(rest) = self.rest().await? {
            return rest.load_table(ident).await;
        }
        match &self.kind {
            Kind::FileSystem => {
                let dir = self.table_location(ident, None);
                let v = self.current_version(&dir).await?.ok_or_else(not_found)?;
                let file = format!("{dir}/metadata/v{v}.metadata.json");
                let metadata = self.read_metadata(&file).await?;
                self.table(ident, metadata, file)
            }
            Kind::Sql { .. } => {
                let (ns, table) = (namespace_text(ident.namespace()), ident.name().to_string());
                let row = self
                    .with_sql(move |c, name, typed| {
                        Box::pin(async move {
                            let select = if typed {
                                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 \
                                 AND (iceberg_type IS NULL OR iceberg_type = 'TABLE')"
                            } else {
                                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"
                            };
                            c.query_opt(select, &[&name, &ns, &table]).await.map_err(|e| ("looking up the table", e))
                        })
                    })
                    .await?
                    .ok_or_else(not_found)?;
                let file: Option<String> = row.get(0);
                let file = file.ok_or_else(not_found)?;
                let metadata = self.read_metadata(&file).await?;
                self.table(ident, metadata, file)
            }
            Kind::Rest { .. } => Err(unsupported("load tables here")),
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

    async fn update_table(&self, mut commit: TableCommit) -> iceberg::Result<Table> {
        if let Some(rest) = self.rest().await? {
            return rest.update_table(commit).await;
        }
        let ident = commit.identifier().clone();
        let current = self.load_table(&ident).await?;
        let old = current.metadata_location_result()?.to_string();
        let (requirements, updates) = (commit.take_requirements(), commit.take_updates());
        // the snapshots it adds, to recognise it when an earlier attempt landed
        let added: Vec<i64> = updates
            .iter()
            .filter_map(|u| match u {
                iceberg::TableUpdate::AddSnapshot { snapshot } => Some(snapshot.snapshot_id()),
                _ => None,
            })
            .collect();
        let metadata = apply(&current, requirements, updates)?;
        let bytes = Self::to_json(&metadata)?;
        match &self.kind {
            Kind::FileSystem => {
                let dir = self.table_location(&ident, None);
                let v = hadoop_version(&old).ok_or_else(|| {
                    IcebergError::new(ErrorKind::DataInvalid, format!("{old} is not a filesystem catalog's metadata file (v<N>.metadata.json)"))
                })?;
                let file = format!("{dir}/metadata/v{}.metadata.json", v + 1);
                if !self.warehouse.create(&file, bytes).await? {
                    return self.conflict_or_done(&ident, &added).await;
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
                let (ns, table, f, o) = (namespace_text(ident.namespace()), ident.name().to_string(), file.clone(), old.clone());
                let n = self
                    .with_sql(move |c, name, _| {
                        Box::pin(async move {
                            c.execute(
                                "UPDATE iceberg_tables SET metadata_location = $4, previous_metadata_location = $5 \
                                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 AND metadata_location = $5",
                                &[&name, &ns, &table, &f, &o],
                            )
                            .await
                            .map_err(|e| ("committing", e))
                        })
                    })
                    .await?;
                if n == 0 {
                    let _ = iceberg::io::Storage::delete(&self.warehouse, &file).await;
                    return self.conflict_or_done(&ident, &added).await;
                }
                self.table(&ident, metadata, file)
            }
            Kind::Rest { .. } => Err(unsupported("commit here")),
        }
    }
}
