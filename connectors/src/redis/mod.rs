//! The Redis connector (`redis_sink`, `redis_source`), on the `redis` crate: the sink writes one
//! key per row — the row as a JSON string (`SET`) or as a hash of its columns (`HSET`), with a
//! `ttl` — one atomic pipeline (`MULTI`/`EXEC`) per batch; the source reads the keys matching a
//! pattern as a lookup table joined with a stream, once or every `refresh_interval`.
//!
//! ```sql
//! CREATE STREAM latest_prices AS SELECT symbol, price, ts FROM trades
//! INTO cache
//! WITH ('cache.type' = 'redis_sink', 'cache.url' = 'redis://cache:6379/0', 'cache.password' = '${REDIS_PASSWORD}',
//!       'cache.key.template' = 'price:{symbol}', 'cache.ttl' = '1h', …)
//! ```

pub mod sink;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

pub use sink::RedisSink;
pub use source::RedisSource;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::properties::{mask_credentials, Properties};
use crate::sink::Sink;
use crate::source::Source;

/// Keys of both roles: where Redis is.
pub const CONNECTION_KEYS: &[KeyDoc] = &[
    KeyDoc::new("url", "`redis://[:password@]host:6379/db`.").default("redis://127.0.0.1:6379/0"),
    KeyDoc::new("password", "The password (else the URL's).").secret(),
    KeyDoc::new("username", "The ACL user (else the URL's)."),
    KeyDoc::new("connection.timeout", "How long connecting, and each command, may take.").default("10s"),
    KeyDoc::new("value.format", "`json` (the row as a JSON string) or `hash` (a hash of its columns, values as text).").default("json"),
];

/// Keys `redis_sink` reads besides the connection keys.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("key.field", "The column whose value is the key."),
    KeyDoc::new("key.template", "The key built from columns: `user:{user_id}:{window_start}` (instead of key.field)."),
    KeyDoc::new("key.prefix", "Put before every key (`prices:`)."),
    KeyDoc::new("ttl", "Keys expire this long after they are written (`1h`, `30s`).").default("never"),
];

/// Keys `redis_source` reads besides the connection keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("key.pattern", "Which keys to read (`SCAN MATCH`, `price:*`).").default("*"),
    KeyDoc::new("key.column", "The column holding each row's key.").default("_key"),
    KeyDoc::new("key.prefix", "Removed from the keys in key.column (`price:` gives `AAPL` for `price:AAPL`)."),
    KeyDoc::new("schema", "The columns besides the key (`price DOUBLE, ts TIMESTAMP`); else inferred from the values (hash fields: text)."),
    KeyDoc::new("refresh_interval", "Read the keys again this often; a join with a stream uses the newest read from then on.").default("never"),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(RedisSource::try_new(c.props)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(RedisSink::try_new(c.props)?))
}

/// The Redis connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Redis,
    summary: "Redis keys: rows written as JSON strings or hashes (one atomic pipeline per batch); keys read as a lookup table.",
    source: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SOURCE_KEYS],
        passthrough: None,
        checkpoints: "read once (recorded as read) or re-read every refresh_interval",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SINK_KEYS],
        passthrough: None,
        checkpoints: "at least once, idempotent: a replayed row sets its key to the same value",
        create: create_sink,
    }),
};

/// How rows are stored under their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// The row as one JSON object string (`SET`/`GET`).
    Json,
    /// A hash of the row's columns (`HSET`/`HGETALL`), values as text.
    Hash,
}

/// Where Redis is and how its values are stored.
#[derive(Clone)]
pub struct Connection {
    client: redis::Client,
    /// `host:port/db`, for messages (never the password).
    pub display: String,
    timeout: Duration,
    /// The value format.
    pub format: ValueFormat,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.display)
    }
}

impl Connection {
    /// Reads the connection keys of `props`.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let url = props.get("url").unwrap_or("redis://127.0.0.1:6379/0").trim();
        if url.starts_with("rediss://") {
            return Err(ConnectorError::invalid(props.full_key("url"), "TLS to Redis (rediss://) is not built in this version; use redis://"));
        }
        let mut info: redis::ConnectionInfo = url.parse().map_err(|e: redis::RedisError| {
            ConnectorError::invalid(props.full_key("url"), format!("not a Redis URL ({}): expected redis://host:6379/0", mask_credentials(&e.to_string())))
        })?;
        if let Some(p) = props.get("password") {
            info.redis.password = Some(p.to_string());
        }
        if let Some(u) = props.get("username") {
            info.redis.username = Some(u.to_string());
        }
        let display = format!("{}/{}", info.addr, info.redis.db);
        let client = redis::Client::open(info).map_err(|e| ConnectorError::invalid(props.full_key("url"), mask_credentials(&e.to_string())))?;
        let format = match props.get("value.format").or_else(|| props.get("format")).map(|f| f.trim().to_ascii_lowercase()) {
            None => ValueFormat::Json,
            Some(f) if f == "json" => ValueFormat::Json,
            Some(f) if f == "hash" => ValueFormat::Hash,
            Some(f) => return Err(ConnectorError::invalid(props.full_key("value.format"), format!("unknown value format '{f}'; use json or hash"))),
        };
        Ok(Self { client, display, timeout: props.get_positive_duration("connection.timeout")?.unwrap_or(Duration::from_secs(10)), format })
    }

    /// A connection on the current runtime.
    pub async fn connect(&self) -> Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(self.timeout).set_response_timeout(self.timeout);
        self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| self.error("cannot connect", &e))
    }

    /// A connector error for `e` while doing `what`, naming the server, never a password.
    pub fn error(&self, what: &str, e: &redis::RedisError) -> ConnectorError {
        ConnectorError::Other(format!("redis {}: {what}: {}", self.display, mask_credentials(&e.to_string())))
    }
}

/// True when `e` means the connection is gone and the work may be retried on a new one.
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_formats() {
        let p = Properties::from_pairs("cache", [("url", "redis://:s3cret@cache:6380/2"), ("value.format", "hash")]);
        let c = Connection::from_properties(&p).unwrap();
        assert_eq!((c.display.as_str(), c.format), ("cache:6380/2", ValueFormat::Hash));
        assert!(!format!("{c:?}").contains("s3cret"));
        let p = Properties::from_pairs("cache", [("url", "rediss://cache:6380")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("'cache.url'"));
        let p = Properties::from_pairs("cache", [("value.format", "xml")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("'cache.value.format'"));
        assert_eq!(Connection::from_properties(&Properties::from_pairs("c", [])).unwrap().display, "127.0.0.1:6379/0");
    }
}
