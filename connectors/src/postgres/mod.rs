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

pub mod parallel;
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
    KeyDoc::new(
        "connection.url",
        "`jdbc:postgresql://host:5432/db` or `postgresql://host:5432/db` (also `connection`). TLS as libpq does it: `?sslmode=` `disable`, `prefer` (the default: TLS when the server offers it), `require`, `verify-ca`, `verify-full`, with `sslrootcert=ca.pem` (the only CA then trusted; without it, the system's); JDBC's `ssl=true` alone is `verify-full`, as in pgjdbc.",
    ),
    KeyDoc::new("connection", "Same as `connection.url`, as the guide's financial example writes it."),
    KeyDoc::new("connection.username", "The role to connect as (else the URL's user).").default("the URL's"),
    KeyDoc::new("connection.password", "Its password (else the URL's).").secret(),
    KeyDoc::new("connection.timeout", "How long connecting may take before it is an error.").default("10s"),
    KeyDoc::new("table", "The table (`schema.table` allowed): read whole by the source unless `query` is set; written by the sink."),
];

/// Keys `database_source` reads besides the connection keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("query", "The query to read (wins over `table`)."),
    KeyDoc::new(
        "connection.pool.max_size",
        "At most this many connections read the table at once: a table, or a query that only filters and projects one table, is cut by its pages into parts (1 MiB at least) read in parallel in one snapshot; other queries and incremental reads use one.",
    )
    .default("1"),
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
    KeyDoc::new(
        "connection.pool.max_size",
        "At most this many connections write a batch at once: a batch of many rows (4096 a part at least) is cut in parts written in parallel, `upsert` by a hash of the key (each key's rows in order over one connection); not under `use_transactions`, where a checkpoint is one transaction.",
    )
    .default("1"),
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

/// `connection.pool.max_size`: how many connections a source or sink may use at once (1
/// unless set; 0 is refused).
fn pool_size(props: &Properties) -> Result<usize> {
    match props.get_usize("connection.pool.max_size")? {
        Some(0) => Err(ConnectorError::invalid(props.full_key("connection.pool.max_size"), "at least 1 connection")),
        Some(n) => Ok(n),
        None => Ok(1),
    }
}

/// Where and how to connect, from the connection keys.
#[derive(Clone)]
pub struct Connection {
    config: Config,
    /// `host:port/db`, for messages (never the password).
    pub display: String,
    /// How the connection is encrypted (the URL's `sslmode`).
    tls: Tls,
}

/// libpq's `sslmode` (JDBC's `ssl=true` is `require`): how a connection is encrypted and how
/// the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked (libpq's
    /// default).
    Prefer,
    /// TLS or nothing; the certificate is not checked unless `sslrootcert` is given (then as
    /// `VerifyCa`, as libpq does).
    Require,
    /// TLS, the certificate signed by the `sslrootcert` CA (or the system's).
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

/// The TLS settings of a connection: the mode and, unless plain, the connector built from them.
#[derive(Clone)]
struct Tls {
    mode: TlsMode,
    connector: Option<postgres_openssl::MakeTlsConnector>,
}

impl Tls {
    /// Reads `sslmode`, `ssl` (JDBC) and `sslrootcert` from the URL's query, removing them (and
    /// JDBC's `sslfactory`) so that the rest parses as a libpq URL. `key` names the URL key.
    fn from_url(url: &str, props: &Properties, key: &str) -> Result<(String, Self)> {
        // the query starts after the user info (a password may hold a '?')
        let after_at = url.rfind('@').map_or(0, |i| i + 1);
        let Some(q) = url[after_at..].find('?').map(|i| after_at + i) else {
            return Ok((url.to_string(), Self::build(TlsMode::Prefer, None, props, key)?));
        };
        let (base, query) = (&url[..q], &url[q + 1..]);
        let (mut mode, mut root, mut rest, mut jdbc_ssl) = (None, None, Vec::new(), false);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => {
                    mode = Some(match v {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(ConnectorError::invalid(
                                props.full_key(key),
                                format!("sslmode={other}: use disable, prefer, require, verify-ca or verify-full"),
                            ))
                        }
                    })
                }
                // JDBC: `ssl=true` (or a bare `ssl`) without an sslmode is verify-full, as in pgjdbc
                "ssl" if v.is_empty() || v.eq_ignore_ascii_case("true") => jdbc_ssl = true,
                "ssl" => {}
                "sslrootcert" => root = Some(std::path::PathBuf::from(crate::properties::percent_decoded(v))),
                "sslfactory" => {}
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(ConnectorError::invalid(
                        props.full_key(key),
                        format!("{k}: client certificates are not supported yet (password login over TLS is)"),
                    ))
                }
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let default = if jdbc_ssl { TlsMode::VerifyFull } else { TlsMode::Prefer };
        let mode = match (mode.unwrap_or(default), &root) {
            // libpq: with a root certificate, require checks the CA
            (TlsMode::Require, Some(_)) => TlsMode::VerifyCa,
            (m, _) => m,
        };
        Ok((url, Self::build(mode, root, props, key)?))
    }

    fn build(mode: TlsMode, root: Option<std::path::PathBuf>, props: &Properties, key: &str) -> Result<Self> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        if mode == TlsMode::Disable {
            return Ok(Self { mode, connector: None });
        }
        let bad = |what: String| ConnectorError::invalid(props.full_key(key), what);
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| bad(format!("TLS: {e}")))?;
        if let Some(root) = &root {
            // only that CA is trusted, as libpq does (not the system's as well)
            let unreadable = |e: String| bad(format!("sslrootcert={}: not a readable PEM certificate ({e})", root.display()));
            let pem = std::fs::read(root).map_err(|e| unreadable(e.to_string()))?;
            let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| unreadable(e.to_string()))?;
            if certs.is_empty() {
                return Err(unreadable("no certificate in it".into()));
            }
            let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(|e| bad(format!("TLS: {e}")))?;
            for cert in certs {
                store.add_cert(cert).map_err(|e| unreadable(e.to_string()))?;
            }
            builder.set_cert_store(store.build());
        }
        let verify = matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull);
        builder.set_verify(if verify { SslVerifyMode::PEER } else { SslVerifyMode::NONE });
        let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        if mode != TlsMode::VerifyFull {
            // only verify-full checks that the certificate names the host
            connector.set_callback(|config, _host| {
                config.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(Self { mode, connector: Some(connector) })
    }
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
        let (url, tls) = Tls::from_url(url, props, key)?;
        let url = url.as_str();
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
        config.ssl_mode(match tls.mode {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(Self { config, display, tls })
    }

    /// How the connection is encrypted.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.mode
    }

    /// Opens a connection (over TLS as `sslmode` says); its I/O runs on a task of the current
    /// runtime.
    pub async fn connect(&self) -> Result<Client> {
        let db = self.display.clone();
        let closed = move |e: tokio_postgres::Error| tracing::warn!(database = %db, "postgres connection closed: {}", mask_credentials(&e.to_string()));
        match &self.tls.connector {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.error("cannot connect", &e))?;
                tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(|e| self.error("cannot connect", &e))?;
                tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
                Ok(client)
            }
        }
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

    #[test]
    fn tls_as_libpq_and_jdbc_urls_ask_for_it() {
        let mode = |url: &str| {
            let p = Properties::from_pairs("db", [("connection.url", url), ("connection.username", "u")]);
            Connection::from_properties(&p).map(|c| c.tls_mode()).map_err(|e| e.to_string())
        };
        assert_eq!(mode("postgresql://h/db"), Ok(TlsMode::Prefer));
        assert_eq!(mode("postgresql://h/db?sslmode=disable"), Ok(TlsMode::Disable));
        assert_eq!(mode("postgresql://h/db?application_name=x&sslmode=require"), Ok(TlsMode::Require));
        // pgjdbc: ssl=true alone is verify-full
        assert_eq!(mode("jdbc:postgresql://h:5432/db?ssl=true"), Ok(TlsMode::VerifyFull));
        assert_eq!(mode("jdbc:postgresql://h:5432/db?ssl=true&sslmode=require"), Ok(TlsMode::Require));
        // a '?' in the password is the password's
        assert_eq!(mode("postgresql://u:p?w@h/db?sslmode=require"), Ok(TlsMode::Require));
        assert_eq!(mode("postgresql://u:p?w@h/db"), Ok(TlsMode::Prefer));
        assert_eq!(mode("jdbc:postgresql://h/db?ssl=true&sslmode=verify-full&sslfactory=org.postgresql.ssl.DefaultJavaSSLFactory"), Ok(TlsMode::VerifyFull));
        assert_eq!(mode("postgresql://h/db?sslmode=verify-ca"), Ok(TlsMode::VerifyCa));
        assert!(mode("postgresql://h/db?sslmode=sometimes").unwrap_err().contains("sslmode=sometimes: use disable"));
        assert!(mode("postgresql://h/db?sslmode=require&sslcert=c.pem").unwrap_err().contains("client certificates are not supported"));
        assert!(mode("postgresql://h/db?sslmode=verify-full&sslrootcert=%2Fno%2Fsuch.pem").unwrap_err().contains("sslrootcert=/no/such.pem"));
        // libpq: require with a root certificate checks the CA
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(mode(&format!("postgresql://h/db?sslmode=require&sslrootcert={}", ca.display())).unwrap_err().contains("not a readable PEM certificate"));
    }
}
