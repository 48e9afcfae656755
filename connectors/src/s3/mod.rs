//! The S3 connector, on `object_store`: `s3_source` reads objects under a prefix (globs, Hive
//! partitions as columns, pruned by the WHERE clause; bounded, or watching for new objects) and
//! `s3_sink` writes objects with multipart uploads, completed at the checkpoint under
//! `use_transactions`. Any S3-compatible service through `endpoint`.
//!
//! ```sql
//! CREATE STREAM archived AS SELECT * FROM orders INTO lake
//! WITH ('orders.type' = 's3_source', 'orders.path' = 's3://raw/orders/year=2024/*.jsonl', 'orders.region' = 'eu-west-1',
//!       'lake.type' = 's3_sink', 'lake.bucket' = 'curated', 'lake.prefix' = 'orders/{date}/', 'lake.format' = 'parquet');
//! ```
//!
//! Credentials: `access_key_id` / `secret_access_key` / `session_token`, else the AWS
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity, container and instance credentials). Profile
//! files (`~/.aws/config`) are not read.

pub mod sink;
pub mod source;

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, RetryConfig};

pub use sink::S3Sink;
pub use source::S3Source;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::format::{READ_KEYS, WRITE_KEYS};
use crate::properties::Properties;
use crate::sink::Sink;
use crate::source::Source;

/// Keys of both roles: where the objects are and how to reach them.
pub const CONNECTION_KEYS: &[KeyDoc] = &[
    KeyDoc::new("path", "`s3://bucket/prefix/` (a source may use globs: `s3://raw/orders/*/*.jsonl`); or bucket and prefix."),
    KeyDoc::new("bucket", "The bucket (when path is not given)."),
    KeyDoc::new("prefix", "Key prefix under the bucket; the sink fills in `{date}`, `{hour}`, … as the file sink does.").default("(none)"),
    KeyDoc::new("region", "The bucket's region.").default("AWS_REGION, else us-east-1"),
    KeyDoc::new("endpoint", "An S3-compatible service (`http://127.0.0.1:9000`); plain http is allowed for it.").default("AWS_ENDPOINT_URL, else AWS"),
    KeyDoc::new("access_key_id", "Access key; the AWS environment's when absent."),
    KeyDoc::new("secret_access_key", "Secret key.").secret(),
    KeyDoc::new("session_token", "Session token of temporary credentials.").secret(),
    KeyDoc::new("virtual_hosted_style", "Address buckets as `bucket.host` instead of `host/bucket`.").default("false"),
    KeyDoc::new("max_retries", "Retries of a failed request (with backoff) before the error is reported.").default("3"),
];

/// Keys `s3_source` reads besides the connection and format keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("watch", "Keep listing the prefix and read new objects as they land, each once.").default("false"),
    KeyDoc::new("poll_interval", "How often a watched prefix is listed.").default("10s"),
    KeyDoc::new("hive_partitioning", "Read `name=value` prefixes as columns (pruned by WHERE).").default("true"),
];

/// Keys `s3_sink` reads besides the connection and format keys.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("file_name", "Object name under the prefix: `{part}` (the object's sequence number), `{date}`, … filled in.")
        .default("part-{part}.<format extension>"),
    KeyDoc::new("partition_columns", "Columns whose values make Hive prefixes (`country=DE/`); comma-separated."),
    KeyDoc::new("max_file_size", "Roll to a new object past this size (`128MB`).").default("128MB"),
    KeyDoc::new("rotation", "hourly or daily: a new object per period as well.").default("never"),
    KeyDoc::new("part_size", "Multipart upload part size (at least 5MB): the memory an open object holds.").default("8MB"),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(S3Source::try_new(c.props, c.job, c.partitions)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(S3Sink::try_new(c.props, c.job_name)?))
}

/// The S3 connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::S3,
    summary: "Amazon S3 and S3-compatible object stores: every file format, Hive partitions, watching a prefix, multipart uploads.",
    source: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SOURCE_KEYS, READ_KEYS],
        passthrough: None,
        checkpoints: "positions: objects read, and rows read of the object in progress",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[CONNECTION_KEYS, SINK_KEYS, WRITE_KEYS],
        passthrough: None,
        checkpoints: "two-phase: multipart uploads completed when the checkpoint commits",
        create: create_sink,
    }),
};

/// A bucket and a key prefix, with a client for it.
#[derive(Debug, Clone)]
pub struct Location {
    /// The client.
    pub store: Arc<AmazonS3>,
    /// The bucket.
    pub bucket: String,
    /// The key prefix as written (may hold globs or templates), without a leading `/`.
    pub prefix: String,
}

impl Location {
    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    /// What to list: the directory of the prefix — the part before any glob character, or the
    /// whole prefix when it ends with `/`, up to its last `/` (a prefix naming one object, or a
    /// key prefix such as `logs/2024-`, lists its directory and keeps the keys it starts).
    pub fn list_prefix(&self) -> Option<ObjectPath> {
        let upto = match self.prefix.find(['*', '?', '[', '{']) {
            Some(i) => &self.prefix[..i],
            None => self.prefix.as_str(),
        };
        let dir = &upto[..upto.rfind('/').map_or(0, |j| j + 1)];
        let dir = dir.trim_end_matches('/');
        (!dir.is_empty()).then(|| ObjectPath::from(dir))
    }
}

/// Splits `s3://bucket/prefix` (also `s3a://`).
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.to_string()))
}

/// The bucket, prefix and client `props` name.
pub fn location(props: &Properties) -> Result<Location> {
    let (bucket, prefix) = match (props.get("path"), props.get("bucket")) {
        (Some(path), _) => split_url(path.trim())
            .ok_or_else(|| ConnectorError::invalid(props.full_key("path"), format!("'{path}' is not an S3 URL; write s3://bucket/prefix/")))?,
        (None, Some(bucket)) => (bucket.trim().to_string(), props.get("prefix").unwrap_or("").trim().to_string()),
        (None, None) => return Err(ConnectorError::MissingProperty { key: format!("{} (or {})", props.full_key("path"), props.full_key("bucket")) }),
    };
    let prefix = prefix.trim_start_matches('/').to_string();
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
    if let Some(region) = props.get("region") {
        b = b.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        b = b.with_region("us-east-1");
    }
    let endpoint = props.get("endpoint").map(str::to_string).or_else(|| std::env::var("AWS_ENDPOINT_URL").ok().or_else(|| std::env::var("AWS_ENDPOINT").ok()));
    let mut client = ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(5));
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e);
        client = client.with_allow_http(e.starts_with("http://"));
    }
    if let Some(k) = props.get("access_key_id") {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = props.get("secret_access_key") {
        b = b.with_secret_access_key(k);
    }
    if let Some(k) = props.get("session_token") {
        b = b.with_token(k);
    }
    b = b.with_virtual_hosted_style_request(props.get_bool("virtual_hosted_style")?.unwrap_or(false));
    let retries = props.get_usize("max_retries")?.unwrap_or(3);
    b = b.with_retry(RetryConfig { max_retries: retries, retry_timeout: std::time::Duration::from_secs(60), ..RetryConfig::default() });
    b = b.with_client_options(client);
    let store = b.build().map_err(|e| ConnectorError::Other(format!("s3 bucket '{bucket}': {}", masked(&e.to_string(), props))))?;
    Ok(Location { store: Arc::new(store), bucket, prefix })
}

/// `text` with the secret values of `props` replaced by `****`.
pub fn masked(text: &str, props: &Properties) -> String {
    let mut out = text.to_string();
    for key in ["secret_access_key", "session_token"] {
        if let Some(v) = props.get(key).filter(|v| v.len() >= 4) {
            out = out.replace(v, crate::properties::MASK);
        }
    }
    out
}

/// An object_store error as a connector error naming what was being done to which object.
pub fn store_error(what: &str, url: &str, e: object_store::Error, props: &Properties) -> ConnectorError {
    let text = masked(&e.to_string(), props);
    // no keys anywhere: object_store fell back to the instance metadata service
    let hint = if text.contains("169.254.169.254") {
        format!(
            " (no credentials found: set '{}' and '{}', or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            props.full_key("access_key_id"),
            props.full_key("secret_access_key")
        )
    } else {
        String::new()
    };
    ConnectorError::Other(format!("{what} {url}: {text}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_list_prefixes() {
        assert_eq!(split_url("s3://b/x/y/"), Some(("b".into(), "x/y/".into())));
        assert_eq!(split_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(split_url("/tmp/x"), None);
        let p = Properties::from_pairs("o", [("path", "s3://raw/orders/year=2024/*/*.jsonl"), ("region", "eu-west-1")]);
        let l = location(&p).unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("raw", "orders/year=2024/*/*.jsonl"));
        assert_eq!(l.list_prefix().unwrap().as_ref(), "orders/year=2024");
        let p = Properties::from_pairs("o", [("bucket", "raw"), ("prefix", "/orders/")]);
        assert_eq!(location(&p).unwrap().list_prefix().unwrap().as_ref(), "orders");
        let one = Properties::from_pairs("o", [("path", "s3://raw/orders/part-0.jsonl")]);
        assert_eq!(location(&one).unwrap().list_prefix().unwrap().as_ref(), "orders", "one object: its directory is listed");
        let top = Properties::from_pairs("o", [("path", "s3://raw/part-0.jsonl")]);
        assert!(location(&top).unwrap().list_prefix().is_none());
        let e = location(&Properties::from_pairs("o", [("region", "x")])).unwrap_err().to_string();
        assert!(e.contains("o.path") && e.contains("o.bucket"), "{e}");
    }
}
