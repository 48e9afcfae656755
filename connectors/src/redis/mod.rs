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
    KeyDoc::new(
        "url",
        "`redis://[:password@]host:6379/db`; `rediss://…` over TLS (the certificate checked against the system's CAs, or `ssl.ca.location`; `rediss://…/#insecure` checks nothing).",
    )
    .default("redis://127.0.0.1:6379/0"),
    KeyDoc::new("password", "The password (else the URL's).").secret(),
    KeyDoc::new("username", "The ACL user (else the URL's)."),
    KeyDoc::new("connection.timeout", "How long connecting, and each command, may take.").default("10s"),
    KeyDoc::new("ssl.ca.location", "A PEM file of the CA(s) that sign the server's certificate, then the only ones trusted (`rediss://` only).").default("the system's CAs"),
    KeyDoc::new("ssl.certificate.location", "A PEM client certificate, for servers that check clients (`tls-auth-clients yes`); with ssl.key.location."),
    KeyDoc::new("ssl.key.location", "The PEM private key of ssl.certificate.location."),
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
        let tls = url.get(..9).is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"));
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
        let bad_url = |e: redis::RedisError| ConnectorError::invalid(props.full_key("url"), mask_credentials(&e.to_string()));
        let client = match tls_certificates(props, tls)? {
            Some(certs) => redis::Client::build_with_tls(info, certs).map_err(bad_url)?,
            None => redis::Client::open(info).map_err(bad_url)?,
        };
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

/// What a PEM file of a TLS key holds.
#[derive(Debug, Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

impl std::fmt::Display for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pem::Certificates => "a certificate",
            Pem::PrivateKey => "a private key",
        })
    }
}

/// The TLS files of a `rediss://` connection (`None` when there are none to give); the keys
/// are refused with a `redis://` URL, where they would do nothing.
fn tls_certificates(props: &Properties, tls: bool) -> Result<Option<redis::TlsCertificates>> {
    const KEYS: [&str; 3] = ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location"];
    if !tls {
        return match KEYS.iter().find(|k| props.get(k).is_some()) {
            Some(k) => Err(ConnectorError::invalid(props.full_key(k), "TLS files need a rediss:// URL (this one is redis://, plain TCP)")),
            None => Ok(None),
        };
    }
    // a PEM file, parsed as what it should hold: the error names the key and the file
    let pem = |key: &str, what: Pem| -> Result<Option<Vec<u8>>> {
        let Some(path) = props.get(key).map(str::trim) else { return Ok(None) };
        let bad = |m: String| ConnectorError::invalid(props.full_key(key), format!("{path}: {m}"));
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let parsed = match what {
            Pem::Certificates => openssl::x509::X509::stack_from_pem(&bytes).map(|c| !c.is_empty()).map_err(|e| e.to_string()),
            Pem::PrivateKey => openssl::pkey::PKey::private_key_from_pem(&bytes).map(|_| true).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(true) => Ok(Some(bytes)),
            Ok(false) => Err(bad(format!("not a PEM file with {what}"))),
            Err(e) => Err(bad(format!("not a PEM file with {what} ({e})"))),
        }
    };
    let root_cert = pem("ssl.ca.location", Pem::Certificates)?;
    let client_tls = match (pem("ssl.certificate.location", Pem::Certificates)?, pem("ssl.key.location", Pem::PrivateKey)?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
        (None, None) => None,
        (Some(_), None) => return Err(ConnectorError::MissingProperty { key: props.full_key("ssl.key.location") }),
        (None, Some(_)) => return Err(ConnectorError::MissingProperty { key: props.full_key("ssl.certificate.location") }),
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
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
        assert_eq!(Connection::from_properties(&p).unwrap().display, "cache:6380/0");
        let p = Properties::from_pairs("cache", [("url", "redis://cache:6380"), ("ssl.ca.location", "/etc/hostname")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("'cache.ssl.ca.location'"));
        let p = Properties::from_pairs("cache", [("url", "rediss://cache:6380"), ("ssl.ca.location", "/etc/hostname")]);
        let e = Connection::from_properties(&p).unwrap_err().to_string();
        assert!(e.contains("'cache.ssl.ca.location'") && e.contains("/etc/hostname: not a PEM file with a certificate"), "{e}");
        // a certificate where the key should be: named as the key's file
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let pkey = openssl::rsa::Rsa::generate(2048).and_then(openssl::pkey::PKey::from_rsa).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_pubkey(&pkey).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&pkey, openssl::hash::MessageDigest::sha256()).unwrap();
        std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
        let c = cert.display().to_string();
        let p = Properties::from_pairs("cache", [("url", "REDISS://cache:6380"), ("ssl.certificate.location", c.as_str()), ("ssl.key.location", c.as_str())]);
        let e = Connection::from_properties(&p).unwrap_err().to_string();
        assert!(e.contains("'cache.ssl.key.location'") && e.contains("not a PEM file with a private key"), "{e}");
        let p = Properties::from_pairs("cache", [("url", "rediss://cache:6380"), ("ssl.ca.location", c.as_str())]);
        assert!(Connection::from_properties(&p).is_ok());
        let p = Properties::from_pairs("cache", [("url", "rediss://cache:6380"), ("ssl.ca.location", "/no/such/ca.pem")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("/no/such/ca.pem: cannot read it"));
        let p = Properties::from_pairs("cache", [("value.format", "xml")]);
        assert!(Connection::from_properties(&p).unwrap_err().to_string().contains("'cache.value.format'"));
        assert_eq!(Connection::from_properties(&Properties::from_pairs("c", [])).unwrap().display, "127.0.0.1:6379/0");
    }
}
