//! The S3 connector, on `object_store`: `s3_source` reads objects under a prefix (globs, Hive
//! partitions as columns, pruned by the WHERE clause; bounded, or watching for new objects) and
//! `s3_sink` writes objects with multipart uploads, completed at the checkpoint under
//! `use_transactions`. Any S3-compatible service through `endpoint`. The same code reads and
//! writes Azure Blob Storage (`az://container/prefix`) and Google Cloud Storage
//! (`gs://bucket/prefix`), object_store's clients for them.
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

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use tracing::warn;

pub use sink::S3Sink;
pub use source::S3Source;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::format::{READ_KEYS, WRITE_KEYS};
use crate::properties::Properties;
use crate::sink::Sink;
use crate::source::Source;

/// Keys of both roles: where the objects are.
pub const LOCATION_KEYS: &[KeyDoc] = &[
    KeyDoc::new(
        "path",
        "`s3://bucket/prefix/` (a source may use globs: `s3://raw/orders/*/*.jsonl`); or bucket and prefix. Azure Blob Storage: `az://container/prefix/`; Google Cloud Storage: `gs://bucket/prefix/`.",
    ),
    KeyDoc::new("bucket", "The bucket (when path is not given)."),
    KeyDoc::new("prefix", "Key prefix under the bucket; the sink fills in `{date}`, `{hour}`, … as the file sink does.").default("(none)"),
];

/// Keys of both roles, and of every connector keeping files in an object store (the Iceberg
/// sink's warehouse): how to reach the store.
pub const STORE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("region", "The bucket's region.").default("AWS_REGION, else us-east-1"),
    KeyDoc::new(
        "endpoint",
        "An S3-compatible service (`http://127.0.0.1:9000`); for `az://` the account's URL (else `AZURE_STORAGE_ENDPOINT`, else `https://<account>.blob.core.windows.net`); for `gs://` the API's address (fake-gcs-server's `http://127.0.0.1:4443`). Plain http is allowed for it.",
    )
    .default("AWS_ENDPOINT_URL, else AWS"),
    KeyDoc::new("access_key_id", "Access key; the AWS environment's when absent."),
    KeyDoc::new("secret_access_key", "Secret key.").secret(),
    KeyDoc::new("session_token", "Session token of temporary credentials.").secret(),
    KeyDoc::new("virtual_hosted_style", "Address buckets as `bucket.host` instead of `host/bucket`.").default("false"),
    KeyDoc::new("max_retries", "Retries of a failed request (with backoff) before the error is reported.").default("3"),
    KeyDoc::new("account_name", "`az://`: the storage account.").default("AZURE_STORAGE_ACCOUNT_NAME"),
    KeyDoc::new("access_key", "`az://`: the account's access key.").secret(),
    KeyDoc::new("use_emulator", "`az://`: talk to Azurite at `AZURITE_BLOB_STORAGE_URL` (`http://127.0.0.1:10000`), with its well-known account unless account_name and access_key say otherwise; without it, `endpoint` is the account's URL (`https://acct.blob.core.windows.net`, a proxy's).").default("false"),
    KeyDoc::new("service_account_path", "`gs://`: a service account's JSON key file.").default("GOOGLE_SERVICE_ACCOUNT"),
    KeyDoc::new("service_account_key", "`gs://`: a service account's JSON key itself.").secret(),
    KeyDoc::new("access_token", "`gs://`: an OAuth2 access token (`gcloud auth print-access-token`), used as it is until it expires.").secret(),
    KeyDoc::new("skip_signature", "`gs://`: reads unsigned (a public bucket); writes still need credentials.").default("false"),
];

/// The keys of one object store only: set with another's URL they do nothing, and are warned about.
const S3_ONLY: &[&str] = &["region", "access_key_id", "secret_access_key", "session_token", "virtual_hosted_style"];
const AZURE_ONLY: &[&str] = &["account_name", "access_key", "use_emulator"];
const GCS_ONLY: &[&str] = &["service_account_path", "service_account_key", "access_token", "skip_signature"];

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
        keys: &[LOCATION_KEYS, STORE_KEYS, SOURCE_KEYS, READ_KEYS],
        passthrough: None,
        checkpoints: "positions: objects read, and rows read of the object in progress",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[LOCATION_KEYS, STORE_KEYS, SINK_KEYS, WRITE_KEYS],
        passthrough: None,
        checkpoints: "two-phase: multipart uploads completed when the checkpoint commits",
        create: create_sink,
    }),
};

/// Which object store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Amazon S3 or an S3-compatible service (`s3://`, `s3a://`).
    S3,
    /// Azure Blob Storage (`az://`, `azure://`).
    Azure,
    /// Google Cloud Storage (`gs://`).
    Gcs,
}

impl Scheme {
    /// The URL scheme objects are named with in messages.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::S3 => "s3://",
            Scheme::Azure => "az://",
            Scheme::Gcs => "gs://",
        }
    }

    /// The keys that belong to the other stores.
    fn foreign_keys(self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self != Scheme::S3 {
            keys.extend(S3_ONLY);
        }
        if self != Scheme::Azure {
            keys.extend(AZURE_ONLY);
        }
        if self != Scheme::Gcs {
            keys.extend(GCS_ONLY);
        }
        keys
    }
}

/// A bucket (or container) and a key prefix, with a client for it.
#[derive(Clone)]
pub struct Location {
    /// The client.
    pub store: Arc<dyn ObjectStore>,
    /// The same client's multipart uploads (parts sent now, the object published at completion).
    pub multipart: Arc<dyn MultipartStore>,
    /// Which store it is.
    pub scheme: Scheme,
    /// The bucket.
    pub bucket: String,
    /// The key prefix as written (may hold globs or templates), without a leading `/`.
    pub prefix: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({})", self.url(&self.prefix))
    }
}

impl Location {
    /// `s3://bucket/key` (`az://container/key`, `gs://bucket/key`), for messages.
    pub fn url(&self, key: &str) -> String {
        format!("{}{}/{}", self.scheme.prefix(), self.bucket, key)
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

/// Splits `s3://bucket/prefix` (also `s3a://`), `az://container/prefix` (also `azure://`) and
/// `gs://bucket/prefix`.
fn split_url(url: &str) -> Option<(Scheme, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "s3" | "s3a" => Scheme::S3,
        "az" | "azure" => Scheme::Azure,
        "gs" => Scheme::Gcs,
        _ => return None,
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (scheme, bucket.to_string(), prefix.to_string()))
}

/// [`location`], and a warning for each key set that does nothing there: a key of another
/// object store (`region` with `az://`), `bucket`/`prefix` beside a `path`. Called once, when
/// the source or sink is made.
pub fn checked_location(props: &Properties) -> Result<Location> {
    let loc = location(props)?;
    for key in loc.scheme.foreign_keys() {
        if props.get(key).is_some() {
            warn!("key '{}' does nothing for {}: it belongs to another object store", props.full_key(key), loc.url(""));
        }
    }
    if props.get("path").is_some() {
        for key in ["bucket", "prefix"] {
            if props.get(key).is_some() {
                warn!("key '{}' does nothing: '{}' gives the {key}", props.full_key(key), props.full_key("path"));
            }
        }
    }
    Ok(loc)
}

/// The bucket, prefix and client `props` name.
pub fn location(props: &Properties) -> Result<Location> {
    let (scheme, bucket, prefix) = match (props.get("path"), props.get("bucket")) {
        (Some(path), _) => split_url(path.trim()).ok_or_else(|| {
            ConnectorError::invalid(
                props.full_key("path"),
                format!("'{path}' is not an object store URL; write s3://bucket/prefix/ (or az://container/…, gs://bucket/…)"),
            )
        })?,
        (None, Some(bucket)) => (Scheme::S3, bucket.trim().to_string(), props.get("prefix").unwrap_or("").trim().to_string()),
        (None, None) => return Err(ConnectorError::MissingProperty { key: format!("{} (or {})", props.full_key("path"), props.full_key("bucket")) }),
    };
    let prefix = prefix.trim_start_matches('/').to_string();
    let endpoint = props.get("endpoint").map(|e| e.trim().to_string());
    if let Some(e) = endpoint.as_deref().filter(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(ConnectorError::invalid(props.full_key("endpoint"), format!("'{e}' is not an http:// or https:// URL")));
    }
    let mut client = ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(5));
    if let Some(e) = &endpoint {
        client = client.with_allow_http(e.starts_with("http://"));
    }
    let retries = props.get_usize("max_retries")?.unwrap_or(3);
    let retry = RetryConfig { max_retries: retries, retry_timeout: std::time::Duration::from_secs(60), ..RetryConfig::default() };
    let built = |e: object_store::Error| {
        let text = masked(&e.to_string(), props);
        let hint = if scheme == Scheme::Azure && text.contains("Account must be specified") {
            format!(" (set '{}', or AZURE_STORAGE_ACCOUNT_NAME; or 'use_emulator' for Azurite)", props.full_key("account_name"))
        } else {
            String::new()
        };
        ConnectorError::Other(format!("{}{bucket}: {text}{hint}", scheme.prefix()))
    };
    let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) =
        match scheme {
            Scheme::S3 => {
                let s = Arc::new(s3_builder(props, &bucket, client)?.with_retry(retry).build().map_err(built)?);
                (s.clone(), s)
            }
            Scheme::Azure => {
                // an http endpoint from the environment needs plain http allowed too
                let env_http = std::env::var("AZURE_STORAGE_ENDPOINT").is_ok_and(|e| e.starts_with("http://"))
                    || std::env::var("AZURE_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
                let client = if env_http { client.with_allow_http(true) } else { client };
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&bucket).with_client_options(client).with_retry(retry);
                if let Some(a) = props.get("account_name") {
                    b = b.with_account(a.trim());
                }
                if let Some(k) = props.get("access_key") {
                    b = b.with_access_key(k.trim());
                }
                // the keys win over the environment (AZURE_STORAGE_USE_EMULATOR): an endpoint
                // given is used, which emulator mode would ignore
                match (props.get_bool("use_emulator")?, &endpoint) {
                    (Some(true), Some(_)) => return Err(ConnectorError::invalid(
                        props.full_key("endpoint"),
                        "use_emulator finds Azurite at AZURITE_BLOB_STORAGE_URL; to name the address, set endpoint (the account's URL) without use_emulator",
                    )),
                    (Some(true), None) => b = b.with_use_emulator(true),
                    (_, Some(e)) => b = b.with_use_emulator(false).with_endpoint(e.clone()),
                    (Some(false), None) => b = b.with_use_emulator(false),
                    (None, None) => {}
                }
                let s = Arc::new(b.build().map_err(built)?);
                (s.clone(), s)
            }
            Scheme::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket).with_client_options(client).with_retry(retry);
                if let Some(e) = &endpoint {
                    // another address for the JSON and XML APIs (an emulator, a proxy)
                    b = b.with_base_url(e.trim_end_matches('/'));
                }
                if props.get_bool("skip_signature")?.unwrap_or(false) {
                    b = b.with_skip_signature(true);
                }
                if let Some(t) = props.get("access_token") {
                    let token = object_store::gcp::GcpCredential { bearer: t.trim().to_string() };
                    b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(token)));
                }
                if let Some(p) = props.get("service_account_path") {
                    b = b.with_service_account_path(p.trim());
                }
                if let Some(k) = props.get("service_account_key") {
                    b = b.with_service_account_key(k.trim());
                }
                let s = Arc::new(b.build().map_err(built)?);
                (s.clone(), s)
            }
        };
    Ok(Location { store, multipart, scheme, bucket, prefix })
}

/// The S3 client's settings from `props` and the AWS environment.
fn s3_builder(props: &Properties, bucket: &str, client: ClientOptions) -> Result<AmazonS3Builder> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(region) = props.get("region") {
        b = b.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        b = b.with_region("us-east-1");
    }
    let endpoint = props.get("endpoint").map(str::to_string).or_else(|| std::env::var("AWS_ENDPOINT_URL").ok().or_else(|| std::env::var("AWS_ENDPOINT").ok()));
    let mut client = client;
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
    Ok(b.with_client_options(client))
}

/// `text` with the secret values of `props` replaced by `****`.
pub fn masked(text: &str, props: &Properties) -> String {
    let mut out = text.to_string();
    for key in ["secret_access_key", "session_token", "access_key", "service_account_key", "access_token"] {
        if let Some(v) = props.get(key).filter(|v| v.len() >= 4) {
            out = out.replace(v, crate::properties::MASK);
        }
    }
    out
}

/// An object_store error as a connector error naming what was being done to which object.
pub fn store_error(what: &str, url: &str, e: object_store::Error, props: &Properties) -> ConnectorError {
    let text = masked(&e.to_string(), props);
    // no keys anywhere: object_store fell back to the instance metadata service (Azure and
    // Google clients use the same address for their managed identities)
    let hint = if text.contains("169.254.169.254") && url.starts_with("az://") {
        format!(
            " (no credentials found: set '{}' and '{}', or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY)",
            props.full_key("account_name"),
            props.full_key("access_key")
        )
    } else if text.contains("169.254.169.254") && url.starts_with("gs://") {
        format!(" (no credentials found: set '{}', or GOOGLE_SERVICE_ACCOUNT)", props.full_key("service_account_path"))
    } else if text.contains("169.254.169.254") {
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
        assert_eq!(split_url("s3://b/x/y/"), Some((Scheme::S3, "b".into(), "x/y/".into())));
        assert_eq!(split_url("s3://b"), Some((Scheme::S3, "b".into(), "".into())));
        assert_eq!(split_url("az://c/x/"), Some((Scheme::Azure, "c".into(), "x/".into())));
        assert_eq!(split_url("gs://b/x"), Some((Scheme::Gcs, "b".into(), "x".into())));
        assert_eq!(split_url("/tmp/x"), None);
        assert_eq!(split_url("ftp://h/x"), None);
        let az = Properties::from_pairs("o", [("path", "az://c/logs/"), ("account_name", "acct"), ("access_key", "a2V5a2V5a2V5")]);
        let l = location(&az).unwrap();
        assert_eq!(l.url("logs/x.parquet"), "az://c/logs/x.parquet");
        assert!(!format!("{l:?}").contains("a2V5"));
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
