//! The HTTP connector (`http_sink`, `http_source`), on `reqwest`: the sink posts the job's rows
//! to a webhook or an API as JSON (one array per request, or JSON lines), retrying 5xx answers
//! and lost connections with backoff; the source polls a JSON API (`poll_interval`), or reads it
//! once or every `refresh_interval` as a lookup table joined with a stream.
//!
//! ```sql
//! CREATE STREAM low_latency_alerts AS
//! SELECT alert_id, severity, message FROM critical_alerts WHERE severity IN ('CRITICAL', 'HIGH')
//! INTO immediate_notification_sink
//! WITH ('immediate_notification_sink.type' = 'http_sink',
//!       'immediate_notification_sink.url' = 'https://alerts.company.com/webhook',
//!       'immediate_notification_sink.method' = 'POST',
//!       'immediate_notification_sink.timeout' = '5000ms',
//!       'immediate_notification_sink.auth_header' = 'Bearer ${ALERTS_TOKEN}', …);
//! ```

pub mod sink;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::warn;

pub use sink::HttpSink;
pub use source::HttpSource;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext, SourceContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::properties::{mask_credentials, Properties};
use crate::sink::Sink;
use crate::source::Source;

/// Keys of both roles: where the endpoint is, how to call it, how long to try.
pub const ENDPOINT_KEYS: &[KeyDoc] = &[
    KeyDoc::new("url", "The endpoint, `http://` or `https://` (also `endpoint`, as the guide's IoT example writes it)."),
    KeyDoc::new("endpoint", "Same as `url`."),
    KeyDoc::new("headers.", "A request header: `headers.X-Api-Key` = `…` (values are secret: they often carry tokens).").secret(),
    KeyDoc::new("auth_header", "The `Authorization` header's value (`Bearer …`).").secret(),
    KeyDoc::new("auth_token", "A bearer token: `Authorization: Bearer <token>` (as the guide's financial example writes it).").secret(),
    KeyDoc::new("timeout", "How long one request may take (`5000ms`, `5s`).").default("30s"),
    KeyDoc::new("retries", "Attempts after the first for a 5xx or 429 answer, a timeout or a lost connection (a 4xx is not retried).").default("5"),
    KeyDoc::new(
        "retry.backoff",
        "The first wait before a retry; each retry doubles it, up to 10 s (a 429's or 503's `Retry-After` wins, also capped at 10 s).",
    )
    .default("200ms"),
];

/// Keys `http_sink` reads besides the endpoint keys.
pub const SINK_KEYS: &[KeyDoc] = &[
    KeyDoc::new("method", "`POST`, `PUT` or `PATCH`.").default("POST"),
    KeyDoc::new("format", "`json` (one JSON array of row objects per request) or `jsonlines` (one object per line).").default("json"),
    KeyDoc::new("batch_size", "Rows per request at most (also `batch.size`, `max_batch_size`).").default("500"),
];

/// Keys `http_source` reads besides the endpoint keys.
pub const SOURCE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("method", "`GET`, or `POST` with `body`.").default("GET"),
    KeyDoc::new("body", "The body of a `POST` request (sent as JSON; it may hold credentials).").secret(),
    KeyDoc::new("format", "`json` (an array of objects, or one object) or `jsonlines`.").default("json"),
    KeyDoc::new("json.path", "Where the records are in a JSON answer, dot-separated (`data.items`); the answer itself when unset."),
    KeyDoc::new("schema", "The columns, `name TYPE, …` (else inferred from the first answer)."),
    KeyDoc::new("poll_interval", "Read as a stream: call the endpoint this often, for ever."),
    KeyDoc::new("refresh_interval", "As a lookup table joined with a stream: call it again this often; the join uses the newest answer.").default("never"),
    KeyDoc::new(
        "incremental.column",
        "With `poll_interval`: keep only rows whose value of this column (a rising id or time) is past the last one read; kept in checkpoints.",
    ),
];

fn create_source(c: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(HttpSource::try_new(c.props, c.job)?))
}

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    Ok(Box::new(HttpSink::try_new(c.props, c.job_name)?))
}

/// The HTTP connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Http,
    summary: "HTTP endpoints: rows posted to webhooks and APIs as JSON; JSON APIs polled as streams or read as lookup tables.",
    source: Some(RoleSpec {
        keys: &[ENDPOINT_KEYS, SOURCE_KEYS],
        passthrough: None,
        checkpoints: "positions: the incremental column's last value (an answer cannot be asked for again: without it, nothing is replayed)",
        create: create_source,
    }),
    sink: Some(RoleSpec {
        keys: &[ENDPOINT_KEYS, SINK_KEYS],
        passthrough: None,
        checkpoints: "at least once: every request is answered 2xx before a checkpoint completes; a retry repeats its Idempotency-Key",
        create: create_sink,
    }),
};

/// An HTTP endpoint and how to call it, from the endpoint keys.
#[derive(Clone)]
pub struct Endpoint {
    /// `http_sink 'alerts'`, for messages.
    pub what: String,
    /// The URL called.
    pub url: reqwest::Url,
    /// The URL as it may be shown (credentials and token parameters masked).
    pub display: String,
    /// The method.
    pub method: reqwest::Method,
    headers: HeaderMap,
    /// One request's time limit.
    pub timeout: Duration,
    /// Attempts after the first for transient failures.
    pub retries: u32,
    /// The first wait before a retry.
    pub backoff: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({} {})", self.method, self.display)
    }
}

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why a call failed: transient failures were retried first.
#[derive(Debug)]
pub struct CallError {
    /// The message, naming the endpoint (never a secret).
    pub message: String,
    /// A 4xx answer (the request itself is wrong): retrying it would fail again.
    pub rejected: bool,
}

impl From<CallError> for ConnectorError {
    fn from(e: CallError) -> Self {
        ConnectorError::Other(e.message)
    }
}

impl Endpoint {
    /// Reads the endpoint keys of `props` for a `role` (`http_sink`), whose methods are
    /// `methods` (the first is the default).
    pub fn from_properties(props: &Properties, role: &str, methods: &[&str]) -> Result<Self> {
        let what = format!("{role} '{}'", props.owner());
        let (key, raw) = match (props.get("url"), props.get("endpoint")) {
            (Some(u), _) => ("url", u),
            (None, Some(u)) => ("endpoint", u),
            (None, None) => return Err(ConnectorError::MissingProperty { key: props.full_key("url") }),
        };
        let display = display_url(raw.trim());
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| ConnectorError::invalid(props.full_key(key), format!("not a URL ({e}): '{display}'")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::invalid(props.full_key(key), format!("expected an http:// or https:// URL, got '{display}'")));
        }
        let method_text = props.get("method").map_or(methods[0].to_string(), |m| m.trim().to_ascii_uppercase());
        if !methods.contains(&method_text.as_str()) {
            return Err(ConnectorError::invalid(props.full_key("method"), format!("'{method_text}' is not one of {}", methods.join(", "))));
        }
        let method = reqwest::Method::from_bytes(method_text.as_bytes()).map_err(|e| ConnectorError::invalid(props.full_key("method"), e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (k, v) in props.iter() {
            let Some(name) = k.strip_prefix("headers.") else { continue };
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConnectorError::invalid(props.full_key(k), format!("'{name}' is not a header name")))?;
            // the value is secret: never quoted back
            let mut value =
                HeaderValue::from_str(v.trim()).map_err(|_| ConnectorError::invalid(props.full_key(k), "not a valid header value (control characters?)"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = match (props.get("auth_header"), props.get("auth_token")) {
            (Some(_), Some(_)) => {
                return Err(ConnectorError::invalid(
                    props.full_key("auth_token"),
                    "set auth_header or auth_token, not both (both are the Authorization header)",
                ))
            }
            (Some(header), None) => Some(("auth_header", header.trim().to_string())),
            (None, Some(token)) => Some(("auth_token", format!("Bearer {}", token.trim()))),
            (None, None) => None,
        };
        if let Some((key, auth)) = auth {
            let mut value =
                HeaderValue::from_str(&auth).map_err(|_| ConnectorError::invalid(props.full_key(key), "not a valid header value (control characters?)"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let retries = props.get_usize("retries")?.unwrap_or(5);
        Ok(Self {
            what,
            url,
            display,
            method,
            headers,
            timeout: props.get_positive_duration("timeout")?.unwrap_or(Duration::from_secs(30)),
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
            backoff: props.get_positive_duration("retry.backoff")?.unwrap_or(Duration::from_millis(200)),
        })
    }

    /// A client for the runtime it is first used on (connections belong to a runtime).
    pub fn client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("ferris-sql/", env!("CARGO_PKG_VERSION")))
            // a redirect would turn a POST into a bodiless GET (rows reported sent, never
            // delivered) or carry the headers to another host: a 3xx is an answer to act on
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConnectorError::Other(format!("{}: cannot build an HTTP client: {e}", self.what)))
    }

    /// Calls the endpoint with `body` (and its content type), retrying 5xx and 429 answers,
    /// timeouts and lost connections up to `retries` times with doubling waits. Returns the
    /// answer's body. `idempotency` is sent as `Idempotency-Key`, the same on every attempt.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        body: Option<(Bytes, &'static str)>,
        idempotency: Option<&str>,
    ) -> std::result::Result<Bytes, CallError> {
        let mut wait = self.backoff;
        let mut attempt = 0u32;
        loop {
            let mut req = client.request(self.method.clone(), self.url.clone()).headers(self.headers.clone());
            if let Some((b, content_type)) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, *content_type).body(b.clone());
            }
            if let Some(k) = idempotency {
                req = req.header("Idempotency-Key", k);
            }
            let (message, retry_after) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        match resp.bytes().await {
                            Ok(b) => return Ok(b),
                            Err(e) => (format!("reading the answer: {}", describe(&e)), None),
                        }
                    } else {
                        let retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
                        let text = resp.text().await.unwrap_or_default();
                        let mut message = format!("answered {status}{}", excerpt(&text));
                        if status.is_redirection() {
                            message.push_str(" (redirects are not followed: set the url to where it points)");
                        }
                        if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                            return Err(CallError { message: format!("{}: {} {} {message}", self.what, self.method, self.display), rejected: true });
                        }
                        (message, retry_after)
                    }
                }
                Err(e) => (describe(&e), None),
            };
            if attempt >= self.retries {
                let tries = if attempt == 0 { String::new() } else { format!(" (after {} attempts)", attempt + 1) };
                return Err(CallError { message: format!("{}: {} {} {message}{tries}", self.what, self.method, self.display), rejected: false });
            }
            attempt += 1;
            let pause = retry_after.unwrap_or(wait);
            warn!(endpoint = %self.display, attempt, "{}: {message}; retrying in {}ms", self.what, pause.as_millis());
            tokio::time::sleep(pause).await;
            wait = wait.saturating_mul(2).min(MAX_BACKOFF);
        }
    }
}

/// ` — <first 200 characters of the answer>` when there is one.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return String::new();
    }
    let cut: String = t.chars().take(200).collect();
    let more = if cut.len() < t.len() { "…" } else { "" };
    format!(": {}{more}", mask_credentials(&cut).replace('\n', " "))
}

/// A client error with its causes (`error sending request: … connection refused`), URLs masked.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() { "timed out".to_string() } else { mask_credentials(&e.without_url_ref().to_string()) };
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

/// `url` as it may be shown in messages: scheme, host, port and the first path segment
/// (`https://hooks.example.com/services/…`). Webhook URLs often carry their secret in the path or
/// the query (a chat service's hook), and any user info may be a token: none of that is shown.
pub fn display_url(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url) else { return mask_credentials(url) };
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    let mut segments = u.path_segments().into_iter().flatten().filter(|s| !s.is_empty());
    if let Some(first) = segments.next() {
        out.push('/');
        out.push_str(first);
        if segments.next().is_some() {
            out.push_str("/…");
        }
    }
    if u.query().is_some() {
        out.push_str("?…");
    }
    out
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The error's text without the URL it quotes (the URL may carry a token): the endpoint is
    /// named by the caller, masked.
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(u) => text.replace(&format!(" ({u})"), "").replace(u.as_str(), "<url>"),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_as_the_guide_writes_them() {
        let p = Properties::from_pairs(
            "device_dashboard",
            [("endpoint", "https://dashboard-api/sensors"), ("auth_header", "Bearer s3cret"), ("headers.X-Api-Key", "k1"), ("timeout", "5000ms")],
        );
        let e = Endpoint::from_properties(&p, "http_sink", &["POST", "PUT", "PATCH"]).unwrap();
        assert_eq!((e.method.as_str(), e.url.as_str(), e.timeout), ("POST", "https://dashboard-api/sensors", Duration::from_secs(5)));
        assert_eq!(e.headers.get("x-api-key").unwrap(), "k1");
        assert!(e.headers.get("authorization").unwrap().is_sensitive());
        assert!(!format!("{e:?}").contains("s3cret"));
        let p = Properties::from_pairs("w", [("url", "ftp://x/y")]);
        assert!(Endpoint::from_properties(&p, "http_sink", &["POST"]).unwrap_err().to_string().contains("'w.url'"));
        let p = Properties::from_pairs("w", [("url", "http://x/y"), ("method", "delete")]);
        assert!(Endpoint::from_properties(&p, "http_sink", &["POST", "PUT"]).unwrap_err().to_string().contains("'DELETE' is not one of POST, PUT"));
        let p = Properties::from_pairs("w", []);
        assert!(Endpoint::from_properties(&p, "http_sink", &["POST"]).unwrap_err().to_string().contains("'w.url'"));
        assert_eq!(display_url("https://u:pw@h/x?api_key=abc&city=Oslo&token=t"), "https://h/x?…");
        assert_eq!(display_url("https://TOKEN@hooks.example.com:8443/services/T0/B0/XyZ"), "https://hooks.example.com:8443/services/…");
        assert_eq!(display_url("http://127.0.0.1:9/"), "http://127.0.0.1:9");
        assert_eq!(mask_credentials("https://u:pw@h/x?api_key=abc&city=Oslo&token=t"), "https://u:****@h/x?api_key=****&city=Oslo&token=****");
        assert_eq!(excerpt(" bad\nrequest "), ": bad request");
        // the financial example's lookup API: a bearer token
        let p = Properties::from_pairs("location_service", [("endpoint", "https://location-api/lookup"), ("auth_token", "t0k3n")]);
        let e = Endpoint::from_properties(&p, "http_source", &["GET"]).unwrap();
        assert_eq!(e.headers.get("authorization").unwrap(), "Bearer t0k3n");
        assert!(!format!("{e:?}").contains("t0k3n"));
        let p = Properties::from_pairs("l", [("url", "http://x/y"), ("auth_token", "a"), ("auth_header", "Bearer b")]);
        assert!(Endpoint::from_properties(&p, "http_source", &["GET"]).unwrap_err().to_string().contains("not both"));
    }
}
