//! The PostgreSQL connector (`database_source` / `database_sink`, also `postgres`,
//! `postgresql`), on `tokio-postgres`: the source reads a table or a query with binary `COPY`
//! straight into Arrow batches — once, re-read every `refresh_interval` as a lookup table joined
//! with a stream, or polled for new rows by an `incremental.column`; the sink inserts or upserts
//! through a staging table with binary `COPY`, one database transaction per checkpoint under
//! `use_transactions`.
//!
//! ```sql
//! CREATE STREAM enriched AS
//! SELECT o.order_id, o.amount, c.tier FROM orders o JOIN customers c ON o.customer_id = c.id
//! INTO totals
//! WITH ('customers.type' = 'database_source', 'customers.connection.url' = 'jdbc:postgresql://db:5432/shop',
//!       'customers.connection.username' = 'app', 'customers.connection.password' = '${DB_PASSWORD}',
//!       'customers.query' = 'SELECT id, tier FROM customers WHERE active', 'customers.refresh_interval' = '300000',
//!       'totals.type' = 'database_sink', 'totals.connection.url' = 'postgresql://db:5432/shop',
//!       'totals.table' = 'order_totals', 'totals.mode' = 'upsert', 'totals.primary_key' = 'order_id');
//! ```

pub mod sink;
pub mod source;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

pub use sink::PostgresSink;
pub use source::PostgresSource;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::properties::{mask_credentials, Properties};
use crate::sink::Sink;
use crate::source::Source;

/// Keys of both roles: where the database is and who connects.
pub const CONNECTION_KEYS: &[KeyDoc] = &[
    KeyDoc::new("connection.url", "`jdbc:postgresql://host:5432/db` or `postgresql://host:5432/db` (also `connection`)."),
    KeyDoc::new("connection", "Same as `connection.url`, as the guide's financial example writes it."),
    KeyDoc::new("connection.username", "The role to connect as (else the URL's user).").default("the URL's"),
    KeyDoc::new("connection.password", "Its password (else the URL's).").secret(),
    KeyDoc::new("connection.timeout", "How long connecting may take before it is an error.").default("10s"),
    KeyDoc::new("connection.pool.max_size", "").unused("each source and sink works on one connection (a table is read by one query)", &["1"]),
    KeyDoc::new("table", "The table (`schema.table` allowed): read whole by the source unless `query` is set; written by the sink."),
];

/// Keys `database_source` reads besides the connection keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("query", "The query to read (wins over `table`)."),
    KeyDoc::new("refresh_interval", "Re-read the table this often (`300000` ms, `5m`); a join with a stream sees the new rows from then on.").default("never"),
    KeyDoc::new("incremental.column", "Read as a stream: poll for rows whose value of this column (a rising id or timestamp) is past the last one read."),
    KeyDoc::new("poll_interval", "How often an incremental source polls.").default("1s"),
    KeyDoc::new("batch.rows", "Rows per Arrow batch of an incremental source (a table is handed over whole, as one batch).").default("8192"),
];

/// Keys `database_sink` reads besides the connection keys.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("mode", "`insert`, or `upsert` (`INSERT … ON CONFLICT (primary_key) DO UPDATE`; `_op = 'DELETE'` rows delete).").default("insert"),
    KeyDoc::new("primary_key", "The key columns of `upsert`, comma-separated (created as the table's primary key)."),
    KeyDoc::new("create_table", "Create the table from the query's columns when it does not exist.").default("true"),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(PostgresSource::try_new(c.props, c.job)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(PostgresSink::try_new(c.props, c.job_name)?))
}

/// The PostgreSQL connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Database,
    summary: "PostgreSQL tables and queries (binary COPY into Arrow): lookup tables refreshed while a job runs, incremental polling, insert and upsert sinks.",
    source: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SOURCE_KEYS],
        passthrough: None,
        checkpoints: "positions: the incremental column's last value (a table is re-read on restart)",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SINK_KEYS],
        passthrough: None,
        checkpoints: "two-phase: rows staged in a table at the barrier, applied with the checkpoint's id in one transaction",
        create: create_sink,
    }),
};

/// Where and how to connect, from the connection keys.
#[derive(Clone)]
pub struct Connection {
    config: Config,
    /// `host:port/db`, for messages (never the password).
    pub display: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.display)
    }
}

impl Connection {
    /// Reads the connection keys of `props`.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let (key, url) = match (props.get("connection.url"), props.get("connection")) {
            (Some(u), _) => ("connection.url", u),
            (None, Some(u)) => ("connection", u),
            (None, None) => return Err(ConnectorError::MissingProperty { key: props.full_key("connection.url") }),
        };
        let url = url.trim();
        let url = url.strip_prefix("jdbc:").unwrap_or(url);
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(ConnectorError::invalid(props.full_key(key), "expected postgresql://host:port/database (or jdbc:postgresql://…)"));
        }
        // a JDBC URL's user/password parameters are libpq's too; tokio-postgres reads both
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            ConnectorError::invalid(props.full_key(key), format!("not a PostgreSQL URL: {}", mask_credentials(&e.to_string())))
        })?;
        if let Some(user) = props.get("connection.username").or_else(|| props.get("username")) {
            config.user(user);
        }
        if let Some(pw) = props.get("connection.password").or_else(|| props.get("password")) {
            config.password(pw);
        }
        if config.get_user().is_none() {
            return Err(ConnectorError::MissingProperty { key: props.full_key("connection.username") });
        }
        config.connect_timeout(props.get_positive_duration("connection.timeout")?.unwrap_or(Duration::from_secs(10)));
        config.application_name("ferris-sql");
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let display = format!("{host}:{port}/{}", config.get_dbname().unwrap_or(config.get_user().unwrap_or("")));
        Ok(Self { config, display })
    }

    /// Opens a connection; its I/O runs on a task of the current runtime.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.error("cannot connect", &e))?;
        let db = self.display.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %db, "postgres connection closed: {}", mask_credentials(&e.to_string()));
            }
        });
        Ok(client)
    }

    /// A connector error for `e` while doing `what`, naming the database, never a password.
    pub fn error(&self, what: &str, e: &tokio_postgres::Error) -> ConnectorError {
        ConnectorError::Other(format!("postgres {}: {what}: {}", self.display, describe(e)))
    }
}

/// The server's message of `e` when it has one (`password authentication failed for user
/// "app"`), else the client's.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        None => {
            let mut s = mask_credentials(&e.to_string());
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                let t = mask_credentials(&inner.to_string());
                if !s.contains(&t) {
                    s.push_str(&format!(": {t}"));
                }
                src = inner.source();
            }
            s
        }
    }
}

/// True when `e` means the connection is gone (the server restarted, the network failed): the
/// work can be retried on a new connection.
pub fn is_connection_error(e: &tokio_postgres::Error, client: &Client) -> bool {
    if client.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        None => e.as_db_error().is_none(),
    }
}

/// A table name as a PostgreSQL identifier: `schema.table` quotes each part (a part already
/// quoted, `"My Table"`, is kept as written).
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| {
            let p = p.trim();
            if p.len() >= 2 && p.starts_with('"') && p.ends_with('"') {
                p.to_string()
            } else {
                quote_column(p)
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A column name as a PostgreSQL identifier, whatever it holds (`sum(o.qty)`, `a.b`, `"x"`).
pub fn quote_column(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as a PostgreSQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_the_guide_writes_them() {
        let p = Properties::from_pairs(
            "customers",
            [("connection.url", "jdbc:postgresql://db:5433/customers"), ("connection.username", "app"), ("connection.password", "hunter2")],
        );
        let c = Connection::from_properties(&p).unwrap();
        assert_eq!(c.display, "db:5433/customers");
        assert!(!format!("{c:?}").contains("hunter2"));
        let p = Properties::from_pairs("w", [("connection", "postgresql://u:pw@warehouse:5432/risk")]);
        assert_eq!(Connection::from_properties(&p).unwrap().display, "warehouse:5432/risk");
        let p = Properties::from_pairs("w", [("connection.url", "mysql://x/y"), ("connection.username", "u")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("'w.connection.url'"));
        let p = Properties::from_pairs("w", [("connection.url", "postgresql://h/db")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("w.connection.username"));
        assert_eq!(mask_credentials("bad url postgresql://u:s3cret@h/db password=abc"), "bad url postgresql://u:****@h/db password=****");
        assert_eq!(quote_ident("reference_data.instruments"), "\"reference_data\".\"instruments\"");
        assert_eq!(quote_column("sum(o.qty)"), "\"sum(o.qty)\"");
        assert_eq!(quote_column("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
