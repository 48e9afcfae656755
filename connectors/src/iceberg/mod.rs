//! The Iceberg connector: `iceberg_sink` appends the query's rows to an Apache Iceberg table —
//! Parquet data files with column statistics, one snapshot per checkpoint, exactly once under
//! `use_transactions` — in a warehouse on a local disk or in an object store (`s3://`, `az://`,
//! `gs://`, with the S3 connector's keys), committed through a filesystem (Hadoop-layout), SQL
//! (JDBC-layout, in PostgreSQL) or REST catalog. A missing table is created from the query's
//! columns, partitioned by `partition_by`.
//!
//! ```sql
//! CREATE STREAM trades_lake AS SELECT symbol, price, qty, ts FROM trades INTO lake
//! WITH ('lake.type' = 'iceberg_sink', 'lake.warehouse' = 's3://lake/warehouse',
//!       'lake.table' = 'markets.trades', 'lake.partition_by' = 'day(ts), symbol',
//!       'lake.catalog.type' = 'sql', 'lake.catalog.uri' = 'postgresql://iceberg@127.0.0.1/catalog');
//! ```
//!
//! Why two Parquet writers are not needed: the `iceberg` crate (0.10) is built on arrow 58 and
//! the engine on arrow 59, so the sink writes data files with the engine's own Parquet writer
//! (field ids in the schema, statistics read back from the footer) and hands the crate only
//! what is independent of arrow — the data files' descriptions, for its manifests, snapshot
//! and table metadata. No batch crosses between the two arrows.

pub mod catalog;
pub mod partition;
pub mod schema;
pub mod sink;
pub mod storage;

pub use sink::IcebergSink;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext};
use crate::connector_type::ConnectorKind;
use crate::error::Result;
use crate::sink::Sink;

/// Keys `iceberg_sink` reads besides the object store's.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("table", "The table, `namespace.table` (`sales.orders`); created from the query's columns when missing."),
    KeyDoc::new(
        "warehouse",
        "Where tables live: a local directory, or `s3://bucket/prefix` (`az://`, `gs://`) with the object store keys below. `rest`: optional, the warehouse's name on the server (the server places tables).",
    ),
    KeyDoc::new(
        "catalog.type",
        "`filesystem` (the warehouse is the catalog, in Iceberg's Hadoop layout: `metadata/v<N>.metadata.json` and `version-hint.text`), `sql` (Iceberg's JDBC catalog tables in PostgreSQL, as pyiceberg's SqlCatalog keeps them) or `rest` (an Iceberg REST catalog server).",
    )
    .default("filesystem"),
    KeyDoc::new(
        "catalog.uri",
        "`sql`: the PostgreSQL database holding the catalog (`postgresql://user@host:port/db`; `sslmode` as the database connector reads it). `rest`: the server's address (`http://host:8181`, without `/v1`).",
    ),
    KeyDoc::new("catalog.token", "`rest`: a bearer token sent with every request.").secret(),
    KeyDoc::new("catalog.credential", "`rest`: OAuth2 client credentials, `client_id:client_secret`, exchanged for tokens at the server's `/v1/oauth/tokens`.").secret(),
    KeyDoc::new("catalog.scope", "`rest`: the OAuth2 scope asked for.").default("catalog"),
    KeyDoc::new("catalog.prefix", "`rest`: a path prefix for the catalog's endpoints, when the server's config does not give one."),
    KeyDoc::new("catalog.name", "`sql`: the catalog's name in its tables (pyiceberg's `SqlCatalog(name, …)`).").default("default"),
    KeyDoc::new("catalog.user", "`sql`: the database user, when the URI has none."),
    KeyDoc::new("catalog.password", "`sql`: the database password.").secret(),
    KeyDoc::new("partition_by", "A new table's partitioning: columns and `year(c)`, `month(c)`, `day(c)`, `hour(c)`, comma-separated (`day(ts), country`). An existing table keeps its own."),
    KeyDoc::new("target_file_size", "Close a data file past this size (`128MB`); files also close at each checkpoint.").default("128MB"),
    KeyDoc::new("part_size", "Upload part size (at least 5MB): the memory an open data file holds.").default("8MB"),
    KeyDoc::new("compression", "Parquet codec of the data files: zstd, snappy, gzip, lz4 or none.").default("zstd"),
];

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(IcebergSink::try_new(c.props, c.job_name)?))
}

/// The Iceberg connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Iceberg,
    summary: "Apache Iceberg tables: Parquet data files with statistics, partitioned, one snapshot per checkpoint; filesystem, SQL or REST catalog.",
    source: None,
    sink: Some(RoleSpec {
        keys: &[SINK_KEYS, crate::s3::STORE_KEYS],
        passthrough: None,
        checkpoints: "two-phase: data files written at the barrier, appended in one snapshot when the checkpoint commits (the snapshot names the checkpoint, so a restart never appends twice)",
        create: create_sink,
    }),
};
