//! The properties of one source, sink or job: the `WITH` keys with their prefix removed.
//!
//! ```sql
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl')
//! -- the source `orders` gets {type: file_source, path: data/orders.jsonl}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{ConnectorError, Result};

/// Words that make a key secret: its value is masked in explain output, logs and errors.
const SECRET_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "access_key",
    "auth_header",
    "api_key",
    "credential",
    "private_key",
    "sasl.jaas",
    "key.pem",
    "keystore",
    "oauthbearer.config",
    "user.info",
];

/// True when the value of `key` must never be shown: declared secret by a connector
/// (`secret_access_key`), or named like one (`sasl.password`, `my_api_key`).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w)) || crate::registry::is_declared_secret(&k)
}

/// The text shown in place of a secret value.
pub const MASK: &str = "****";

/// `value` (a property value, or a client library's error text quoting one) with the
/// credentials it may carry masked: the password of `postgresql://user:password@host/db` and
/// `password=…` / `password: …` parameters, and the values of token-like query parameters of a
/// URL (`?api_key=…`, `&access_token=…`, `&sig=…`).
pub fn mask_credentials(value: &str) -> String {
    static USERINFO: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@").ok());
    static PARAM: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| regex::Regex::new(r"(?i)(\bpassword\s*[=:]\s*)[^&;\s@]+").ok());
    static QUERY: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)([?&][a-z0-9_.-]*(?:token|key|secret|password|passwd|sig|signature|auth|credential)[a-z0-9_.-]*=)[^&#\s]+").ok()
    });
    if !value.contains("://") && !value.to_ascii_lowercase().contains("password") {
        return value.to_string();
    }
    let mut out = value.to_string();
    if let Some(r) = USERINFO.as_ref() {
        out = r.replace_all(&out, format!("${{1}}{MASK}@")).into_owned();
    }
    if let Some(r) = PARAM.as_ref() {
        out = r.replace_all(&out, format!("${{1}}{MASK}")).into_owned();
    }
    if out.contains("://") {
        if let Some(r) = QUERY.as_ref() {
            out = r.replace_all(&out, format!("${{1}}{MASK}")).into_owned();
        }
    }
    out
}

/// An ordered map of property keys (without the `name.` prefix) to values, remembering the
/// owner's name so that errors can quote the full key (`orders.path`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    owner: String,
    values: BTreeMap<String, String>,
    /// Where each value came from when not written inline (`configs/a.yaml`, `${VAR}`).
    origins: BTreeMap<String, String>,
}

/// Secrets masked: a `{:?}` of a source or a plan never shows them.
impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Properties").field("owner", &self.owner).field("values", &self.masked()).finish()
    }
}

impl Properties {
    /// An empty property set for the source, sink or job named `owner` (empty for job keys).
    pub fn new(owner: impl Into<String>) -> Self {
        Self { owner: owner.into(), values: BTreeMap::new(), origins: BTreeMap::new() }
    }

    /// Builds a property set from pairs; handy in tests.
    pub fn from_pairs<'a>(owner: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut p = Self::new(owner);
        for (k, v) in pairs {
            p.insert(k, v);
        }
        p
    }

    /// The source, sink or job these properties belong to.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Sets `key` (without prefix). A `source.`/`sink.` prefix (`source.format`, as some of the
    /// guide's examples write) is accepted as an alias of the plain key.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// Sets `key` and records where its value came from (shown by `explain`).
    pub fn insert_with_origin(&mut self, key: impl Into<String>, value: impl Into<String>, origin: impl Into<String>) {
        let key = key.into();
        self.origins.insert(key.clone(), origin.into());
        self.values.insert(key, value.into());
    }

    /// Sets `key` only if it has no value yet (YAML values sit under inline ones).
    pub fn insert_default(&mut self, key: &str, value: impl Into<String>, origin: impl Into<String>) {
        if !self.values.contains_key(key) {
            self.insert_with_origin(key.to_string(), value, origin);
        }
    }

    /// Where `key`'s value came from, when it was not written inline.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }

    /// True when `key` is set (exactly, without aliases).
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A list value: a JSON array (`["a","b"]`, as YAML lists are kept) or comma-separated text.
    pub fn get_list(&self, key: &str) -> Option<Vec<String>> {
        let v = self.get(key)?;
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(v) {
            return Some(items.into_iter().map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string())).collect());
        }
        Some(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    }

    /// The value as it may be shown in an error: masked when the key is secret.
    fn shown<'a>(&self, key: &str, value: &'a str) -> &'a str {
        if is_secret_key(key) {
            MASK
        } else {
            value
        }
    }

    /// The full key as the user wrote it: `owner.key`, or `key` for job-level properties.
    pub fn full_key(&self, key: &str) -> String {
        if self.owner.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.owner, key)
        }
    }

    /// The raw value of `key`, also found under `source.key` or `sink.key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).or_else(|| self.values.get(&format!("source.{key}"))).or_else(|| self.values.get(&format!("sink.{key}"))).map(String::as_str)
    }

    /// The value of `key`, or an error naming the full key.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| ConnectorError::MissingProperty { key: self.full_key(key) })
    }

    /// A boolean (`true`/`false`, `yes`/`no`, `1`/`0`, `on`/`off`).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(ConnectorError::invalid(self.full_key(key), format!("expected true or false, got '{}'", self.shown(key, v)))),
            })
            .transpose()
    }

    /// A non-negative integer.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| ConnectorError::invalid(self.full_key(key), format!("expected a non-negative integer, got '{}'", self.shown(key, v))))
            })
            .transpose()
    }

    /// A duration: `500ms`, `2s`, `5m`, `1h`, or a bare number of milliseconds (`2000`).
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>> {
        self.get(key)
            .map(|v| {
                parse_duration(v).map_err(|m| {
                    let m = if is_secret_key(key) { "expected a duration such as '500ms' or '2s'".to_string() } else { m };
                    ConnectorError::invalid(self.full_key(key), m)
                })
            })
            .transpose()
    }

    /// A duration that must be longer than zero (a poll or commit interval): `0` is refused
    /// with a message naming the key, never turned into a busy loop or a panic.
    pub fn get_positive_duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get_duration(key)? {
            Some(d) if d.is_zero() => Err(ConnectorError::invalid(self.full_key(key), "must be longer than 0 (`100ms`, `1s`)")),
            other => Ok(other),
        }
    }

    /// A single character (CSV delimiter or quote); `\t` and `tab` mean a tab.
    pub fn get_char(&self, key: &str) -> Result<Option<u8>> {
        self.get(key)
            .map(|v| match v {
                "\\t" | "tab" | "\t" => Ok(b'\t'),
                s if s.len() == 1 => Ok(s.as_bytes()[0]),
                _ => Err(ConnectorError::invalid(self.full_key(key), format!("expected one character, got '{}'", self.shown(key, v)))),
            })
            .transpose()
    }

    /// All keys with their values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// All keys with values safe to show: secrets replaced by [`MASK`].
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.values.iter().map(|(k, v)| (k.clone(), if is_secret_key(k) { MASK.to_string() } else { mask_credentials(v) })).collect()
    }

    /// Where each non-inline value came from.
    pub fn origins(&self) -> &BTreeMap<String, String> {
        &self.origins
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Keys not accepted by `spec`, as full keys, for the "unknown key" warning.
    pub fn unknown_keys(&self, spec: &KeySpec) -> Vec<String> {
        self.values.keys().filter(|k| !spec.accepts(k)).map(|k| self.full_key(k)).collect()
    }
}

/// Which keys a connector understands: exact names and whole families (`batch.`).
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Keys accepted exactly.
    pub exact: &'static [&'static str],
    /// Key prefixes accepted with anything after them (each ends with `.`).
    pub prefixes: &'static [&'static str],
}

/// Keys every source and sink accepts, whatever its type.
pub const COMMON_KEYS: KeySpec = KeySpec {
    exact: &[
        "type",
        "config_file",
        "failure_strategy",
        "max_retries",
        "retry_backoff",
        "event_time",
        "watermark.delay",
        "idle_timeout",
        "max_batch_size",
        "batch_timeout",
    ],
    prefixes: &["event_time.", "watermark.", "dlq."],
};

/// The guide's batch keys, accepted per source (`orders.batch.size`) and per job.
pub const BATCH_KEYS: &[&str] = &[
    "batch.size",
    "batch.timeout",
    "batch.strategy",
    "batch.enable",
    "batch.max_size",
    "batch.min_size",
    "batch.adaptive_max_size",
    "batch.target_latency",
    "batch.memory_size",
    "batch.memory_limit_mb",
    "batch.low_latency_max_size",
    "batch.low_latency_wait",
    "batch.eager_processing",
];

impl KeySpec {
    /// True when `key` (or its `source.`/`sink.` alias) is understood by this spec or by
    /// [`COMMON_KEYS`].
    pub fn accepts(&self, key: &str) -> bool {
        let key = key.strip_prefix("source.").or_else(|| key.strip_prefix("sink.")).unwrap_or(key);
        BATCH_KEYS.contains(&key) || [self, &COMMON_KEYS].iter().any(|s| s.exact.contains(&key) || s.prefixes.iter().any(|p| key.starts_with(p)))
    }
}

/// Parses `500ms`, `2s`, `2 seconds`, `5m`, `1h`, `1d`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("expected a duration such as '500ms' or '2s', got '{text}'"))?;
    let ms = match unit.trim() {
        "" | "ms" | "millis" | "milliseconds" | "millisecond" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60e3,
        "h" | "hour" | "hours" => n * 3600e3,
        "d" | "day" | "days" => n * 86_400e3,
        other => return Err(format!("unknown duration unit '{other}' in '{text}' (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_micros((ms * 1e3).round() as u64))
}

/// A local path written as a `file:` URL (`file:///data/x.csv`, `file://localhost/data/x.csv`,
/// `file:/data/x.csv`, percent-encoded), or as a plain path, as a plain path. A URL naming
/// another host is an error: the file is not on this machine.
pub fn local_path(v: &str) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    let Some(rest) = v.get(..5).filter(|s| s.eq_ignore_ascii_case("file:")).map(|_| &v[5..]) else { return Ok(std::borrow::Cow::Borrowed(v)) };
    let path = match rest.strip_prefix("//") {
        // file://host/path: only this machine
        Some(after) => match after.find('/') {
            Some(0) => after,
            Some(i) if after[..i].eq_ignore_ascii_case("localhost") => &after[i..],
            _ => return Err(format!("'{v}' names another host; a file URL is file:///absolute/path")),
        },
        None if rest.starts_with('/') => rest,
        None => return Err(format!("'{v}' is not a file URL; write file:///absolute/path (or a plain path)")),
    };
    Ok(std::borrow::Cow::Owned(percent_decoded(path)))
}

/// `%XX` escapes of a URL's part decoded, once (a path written `%2Fetc%2Fca.pem`, a Hive
/// partition value `a%2Fb`); anything else is kept as written.
pub fn percent_decoded(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_local_paths() {
        assert_eq!(local_path("file:///data/a%20b.csv").unwrap(), "/data/a b.csv");
        assert_eq!(local_path("FILE://localhost/data/x.csv").unwrap(), "/data/x.csv");
        assert_eq!(local_path("file:/data/x.csv").unwrap(), "/data/x.csv");
        assert_eq!(local_path("data/x.csv").unwrap(), "data/x.csv");
        assert_eq!(local_path("/data/100%.csv").unwrap(), "/data/100%.csv");
        assert!(local_path("file://localhostx/a").unwrap_err().contains("another host"));
        assert!(local_path("file://server/share/x").unwrap_err().contains("another host"));
        assert!(local_path("file:x.csv").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2000").unwrap(), Duration::from_millis(2000));
        assert_eq!(parse_duration("2000ms").unwrap(), Duration::from_millis(2000));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5 seconds").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
        let p = Properties::from_pairs("k", [("commit.interval", "0"), ("poll_interval", "0ms"), ("ok", "5ms")]);
        assert_eq!(
            p.get_positive_duration("commit.interval").unwrap_err().to_string(),
            "invalid value for 'k.commit.interval': must be longer than 0 (`100ms`, `1s`)"
        );
        assert!(p.get_positive_duration("poll_interval").is_err());
        assert_eq!(p.get_positive_duration("ok").unwrap(), Some(Duration::from_millis(5)));
        assert!(parse_duration("5 fortnights").unwrap_err().contains("fortnights"));
    }

    #[test]
    fn secrets_are_masked() {
        let p = Properties::from_pairs("db", [("password", "hunter2"), ("sasl.password", "x"), ("secret_access_key", "k"), ("auth_token", "t"), ("path", "a")]);
        let m = p.masked();
        assert_eq!(m["password"], MASK);
        assert_eq!(mask_credentials("postgresql://app:s3cr3t@db:5432/x"), "postgresql://app:****@db:5432/x");
        assert_eq!(mask_credentials("jdbc:postgresql://db/x?user=a&password=pw&ssl=1"), "jdbc:postgresql://db/x?user=a&password=****&ssl=1");
        assert_eq!(mask_credentials("s3://bucket/a:b@c"), "s3://bucket/a:b@c");
        assert_eq!(m["sasl.password"], MASK);
        assert_eq!(m["secret_access_key"], MASK);
        assert_eq!(m["auth_token"], MASK);
        assert_eq!(m["path"], "a");
    }

    #[test]
    fn typed_getters_name_the_full_key() {
        let p = Properties::from_pairs("orders", [("has_headers", "maybe"), ("batch.size", "x")]);
        assert_eq!(p.get_bool("has_headers").unwrap_err().to_string(), "invalid value for 'orders.has_headers': expected true or false, got 'maybe'");
        assert!(p.get_usize("batch.size").unwrap_err().to_string().contains("'orders.batch.size'"));
        assert_eq!(p.require("path").unwrap_err().to_string(), "missing required property 'orders.path'");
    }

    #[test]
    fn secret_values_never_reach_errors() {
        let p = Properties::from_pairs("db", [("password_retries", "hunter2")]);
        let e = p.get_usize("password_retries").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn lists_and_origins() {
        let mut p = Properties::new("s3");
        p.insert_with_origin("partition_columns", r#"["order_date","region"]"#, "configs/s3.yaml");
        p.insert("tags", "a, b");
        p.insert_default("partition_columns", "x", "elsewhere");
        assert_eq!(p.get_list("partition_columns").unwrap(), vec!["order_date", "region"]);
        assert_eq!(p.get_list("tags").unwrap(), vec!["a", "b"]);
        assert_eq!(p.origin("partition_columns"), Some("configs/s3.yaml"));
        assert_eq!(p.origin("tags"), None);
    }

    #[test]
    fn source_prefix_alias() {
        let p = Properties::from_pairs("x", [("source.format", "json")]);
        assert_eq!(p.get("format"), Some("json"));
        let spec = KeySpec { exact: &["format", "path"], prefixes: &[] };
        assert!(p.unknown_keys(&spec).is_empty());
        let q = Properties::from_pairs("orders", [("pth", "a")]);
        assert_eq!(q.unknown_keys(&spec), vec!["orders.pth".to_string()]);
    }
}
