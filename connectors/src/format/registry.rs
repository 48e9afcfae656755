//! A Confluent-compatible schema registry client (`schema.registry.url`): the Avro schema of a
//! message looked up by the id in its Confluent header (and cached), the newest schema of a
//! subject as the schema a source reads with, and a sink's schema registered under its subject
//! (`<topic>-value` by default).
//!
//! ```sql
//! WITH ('orders.type' = 'kafka_source', 'orders.topic' = 'orders', 'orders.value.format' = 'avro',
//!       'orders.schema.registry.url' = 'http://localhost:8081',
//!       'out.type' = 'kafka_sink', 'out.value.format' = 'avro', 'out.schema.registry.url' = 'http://localhost:8081', …)
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::connector::KeyDoc;
use crate::error::{ConnectorError, Result};
use crate::properties::{mask_credentials, Properties};
use crate::runtime::on_own_runtime;

/// The registry keys every Avro-carrying connector reads.
pub const REGISTRY_KEYS: &[KeyDoc] = &[
    KeyDoc::new("schema.registry.url", "A Confluent-compatible schema registry: Avro values carry its schema ids (Confluent wire format)."),
    KeyDoc::new("schema.registry.subject", "The subject (else by `schema.registry.subject.name.strategy`)."),
    KeyDoc::new("schema.registry.subject.name.strategy", "`topic` (`<topic>-value`), `record` (the record's full name) or `topic_record`.").default("topic"),
    KeyDoc::new("schema.registry.basic.auth.user.info", "`user:password` for the registry.").secret(),
];

/// A schema registry at one URL, with the schemas it answered cached by id.
pub struct SchemaRegistry {
    url: String,
    /// The URL as it may be shown.
    pub display: String,
    auth: Option<(String, String)>,
    by_id: Mutex<HashMap<u32, String>>,
}

/// The URL masked; never the credentials.
impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchemaRegistry({})", self.display)
    }
}

/// What the registry said about a subject's newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The schema's id.
    pub id: u32,
    /// Its JSON text.
    pub schema: String,
}

impl SchemaRegistry {
    /// The registry of `props` (`schema.registry.url`), if one is set.
    pub fn from_properties(props: &Properties) -> Result<Option<Self>> {
        let Some(url) = props.get("schema.registry.url") else { return Ok(None) };
        // a list of URLs (as Confluent's clients take): the first
        let url = url.split(',').next().unwrap_or("").trim().trim_end_matches('/').to_string();
        let display = mask_credentials(&url);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConnectorError::invalid(props.full_key("schema.registry.url"), format!("expected http(s)://host:port, got '{display}'")));
        }
        let auth = match props.get("schema.registry.basic.auth.user.info") {
            Some(info) => {
                let (u, p) = info
                    .split_once(':')
                    .ok_or_else(|| ConnectorError::invalid(props.full_key("schema.registry.basic.auth.user.info"), "expected user:password"))?;
                Some((u.to_string(), p.to_string()))
            }
            None => None,
        };
        Ok(Some(Self { url, display, auth, by_id: Mutex::new(HashMap::new()) }))
    }

    /// The subject of `topic` under the keys of `props`: `schema.registry.subject`, or the
    /// naming strategy applied to the topic and the record's full name (from `schema`, when
    /// known).
    pub fn subject(props: &Properties, topic: &str, schema: Option<&str>) -> Result<String> {
        if let Some(s) = props.get("schema.registry.subject") {
            return Ok(s.trim().to_string());
        }
        let record = || -> Result<String> {
            let v: serde_json::Value = schema.and_then(|s| serde_json::from_str(s).ok()).ok_or_else(|| {
                ConnectorError::invalid(props.full_key("schema.registry.subject.name.strategy"), "needs the record's schema (avro.schema) to name the subject")
            })?;
            let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("");
            Ok(match v.get("namespace").and_then(|n| n.as_str()) {
                Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
                _ => name.to_string(),
            })
        };
        let strategy = props.get("schema.registry.subject.name.strategy").unwrap_or("topic").trim().to_ascii_lowercase();
        let strategy: String = strategy.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        Ok(match strategy.as_str() {
            "topic" | "topicnamestrategy" => format!("{topic}-value"),
            "record" | "recordnamestrategy" => record()?,
            "topicrecord" | "topicrecordnamestrategy" => format!("{topic}-{}", record()?),
            _ => {
                return Err(ConnectorError::invalid(
                    props.full_key("schema.registry.subject.name.strategy"),
                    format!("'{strategy}': use topic, record or topic_record"),
                ))
            }
        })
    }

    /// One call, tried up to three times when the registry cannot be reached or answers 5xx;
    /// `Ok(Err((status, message)))` when it answered with an error.
    async fn request(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Result<std::result::Result<serde_json::Value, (u16, String)>> {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let outcome = self.request_once(method.clone(), path, body.clone()).await;
            let transient = match &outcome {
                Err(_) => true,
                Ok(Err((status, _))) => *status >= 500,
                Ok(Ok(_)) => false,
            };
            if !transient || attempt == 3 {
                return outcome;
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    async fn request_once(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Result<std::result::Result<serde_json::Value, (u16, String)>> {
        let what = format!("schema registry {}{path}", self.display);
        let client = Self::client()?;
        let mut req =
            client.request(method, format!("{}{path}", self.url)).header(reqwest::header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json");
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json").body(b);
        }
        let resp = req.send().await.map_err(|e| ConnectorError::Other(format!("{what}: {}", mask_credentials(&e.without_url().to_string()))))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ConnectorError::Other(format!("{what}: {}", e.without_url())))?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            // the registry's own error: {"error_code": 40401, "message": "Subject not found."}
            let msg = match (json.get("error_code"), json.get("message").and_then(|m| m.as_str())) {
                (Some(code), Some(m)) => format!("{what}: {status}: {m} (error {code})"),
                _ => format!("{what}: {status}: {}", text.chars().take(200).collect::<String>()),
            };
            return Ok(Err((status.as_u16(), msg)));
        }
        Ok(Ok(json))
    }

    /// One call whose error answer is an error.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Result<serde_json::Value> {
        on_own_runtime("schema registry", self.request(method, path, body))?.map_err(|(_, m)| ConnectorError::Other(m))
    }

    fn client() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectorError::Other(format!("schema registry: cannot build an HTTP client: {e}")))
    }

    /// The newest version of `subject`.
    pub fn latest(&self, subject: &str) -> Result<Registered> {
        let path = format!("/subjects/{}/versions/latest", encode(subject));
        let json = self.call(reqwest::Method::GET, &path, None)?;
        let id = json.get("id").and_then(serde_json::Value::as_u64).and_then(|i| u32::try_from(i).ok());
        let schema = json.get("schema").and_then(|s| s.as_str());
        match (id, schema) {
            (Some(id), Some(schema)) => {
                self.cache(id, schema);
                Ok(Registered { id, schema: schema.to_string() })
            }
            _ => Err(ConnectorError::Other(format!("schema registry {}{path}: the answer has no id and schema", self.display))),
        }
    }

    /// The schema with id `id`, from the cache or the registry; `Ok(Err(message))` when the
    /// registry has no such id (404).
    pub fn by_id(&self, id: u32) -> Result<std::result::Result<String, String>> {
        if let Some(s) = self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            return Ok(Ok(s.clone()));
        }
        let path = format!("/schemas/ids/{id}");
        let json = match on_own_runtime("schema registry", self.request(reqwest::Method::GET, &path, None))? {
            Ok(j) => j,
            Err((404, m)) => return Ok(Err(m)),
            Err((_, m)) => return Err(ConnectorError::Other(m)),
        };
        let schema = json
            .get("schema")
            .and_then(|s| s.as_str())
            .ok_or_else(|| ConnectorError::Other(format!("schema registry {}{path}: the answer has no schema", self.display)))?;
        self.cache(id, schema);
        Ok(Ok(schema.to_string()))
    }

    /// Registers `schema` under `subject` (the registry answers with the existing id when it
    /// has it already).
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = serde_json::json!({ "schema": schema }).to_string();
        let json = self.call(reqwest::Method::POST, &path, Some(body))?;
        let id = json
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| ConnectorError::Other(format!("schema registry {}{path}: the answer has no id", self.display)))?;
        self.cache(id, schema);
        Ok(id)
    }

    fn cache(&self, id: u32, schema: &str) {
        self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, schema.to_string());
    }
}

/// `s` as one path segment.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_by_strategy() {
        let schema = r#"{"type":"record","name":"Order","namespace":"shop","fields":[]}"#;
        let p = |pairs: &[(&str, &str)]| Properties::from_pairs("o", pairs.iter().copied());
        assert_eq!(SchemaRegistry::subject(&p(&[]), "orders", None).unwrap(), "orders-value");
        assert_eq!(
            SchemaRegistry::subject(&p(&[("schema.registry.subject.name.strategy", "RecordNameStrategy")]), "orders", Some(schema)).unwrap(),
            "shop.Order"
        );
        assert_eq!(
            SchemaRegistry::subject(&p(&[("schema.registry.subject.name.strategy", "topic_record")]), "orders", Some(schema)).unwrap(),
            "orders-shop.Order"
        );
        assert_eq!(SchemaRegistry::subject(&p(&[("schema.registry.subject", "x")]), "orders", None).unwrap(), "x");
        assert!(SchemaRegistry::subject(&p(&[("schema.registry.subject.name.strategy", "record")]), "orders", None).is_err());
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        let r = SchemaRegistry::from_properties(&p(&[("schema.registry.url", "http://u:pw@reg:8081/"), ("schema.registry.basic.auth.user.info", "a:b")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.display, "http://u:****@reg:8081");
        assert_eq!(format!("{r:?}"), "SchemaRegistry(http://u:****@reg:8081)");
        assert!(SchemaRegistry::from_properties(&p(&[("schema.registry.url", "reg:8081")])).is_err());
    }
}
