//! Turns a Kafka source's or sink's properties into a librdkafka client configuration: our own
//! keys are kept back, the Java client's common names are translated, and every other key is
//! passed through (`security.protocol`, `sasl.*`, `session.timeout.ms`, …).
//!
//! ```sql
//! WITH ('orders.bootstrap.servers' = 'localhost:9092', 'orders.session.timeout.ms' = '6000',
//!       'orders.fetch.max.wait.ms' = '100')   -- the Java name of fetch.wait.max.ms
//! ```

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;
use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::properties::{is_secret_key, Properties, BATCH_KEYS, COMMON_KEYS};

/// Java client names and their librdkafka spelling.
const ALIASES: &[(&str, &str)] = &[("fetch.max.wait.ms", "fetch.wait.max.ms")];

/// True when `key` is read by FerrisStreams rather than librdkafka.
pub fn is_own_key(key: &str) -> bool {
    super::SOURCE_KEYS.iter().chain(super::SINK_KEYS).any(|d| !d.client && d.covers(key))
        || ["source.format", "event_time.format"].contains(&key)
        || BATCH_KEYS.contains(&key)
        || COMMON_KEYS.accepts(key)
}

/// The librdkafka settings in `props`: everything that is not ours.
pub fn client_settings(props: &Properties) -> Vec<(String, String)> {
    props
        .iter()
        .filter(|(k, _)| !is_own_key(k))
        .map(|(k, v)| {
            let k = ALIASES.iter().find(|(java, _)| *java == k).map_or(k, |(_, ours)| *ours);
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Creates a librdkafka client from `settings`. A key librdkafka does not know is reported and
/// left out (the guide's examples carry some Java-client keys); a bad value is an error naming
/// the key, never showing a secret's value.
pub fn create_client<C: FromClientConfigAndContext<DefaultClientContext>>(props: &Properties, settings: Vec<(String, String)>, what: &str) -> Result<C> {
    create_client_with(props, settings, what, || DefaultClientContext)
}

/// [`create_client`] with a client context made by `context`.
pub fn create_client_with<C, X>(props: &Properties, mut settings: Vec<(String, String)>, what: &str, context: impl Fn() -> X) -> Result<C>
where
    C: FromClientConfigAndContext<X>,
    X: ClientContext,
{
    // our own pseudo-setting: let librdkafka's warnings through to the context (the probe's)
    let warnings = settings.iter().any(|(k, _)| k == PROBE_LOG);
    settings.retain(|(k, _)| k != PROBE_LOG);
    loop {
        let mut cfg = ClientConfig::new();
        for (k, v) in &settings {
            cfg.set(k, v);
        }
        if warnings {
            cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        }
        if settings.iter().any(|(k, _)| k == "debug") {
            // librdkafka's `debug` contexts log at debug level: let them through (to tracing)
            cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        match cfg.create_with_context::<X, C>(context()) {
            Ok(c) => return Ok(c),
            Err(KafkaError::ClientConfig(_, desc, key, value)) => {
                if desc.contains("No such configuration property") && settings.iter().any(|(k, _)| k == &key) {
                    warn!("{what}: '{}' is not a Kafka client property; ignored", props.full_key(&key));
                    settings.retain(|(k, _)| k != &key);
                    continue;
                }
                let shown = if is_secret_key(&key) { "****".to_string() } else { value };
                return Err(ConnectorError::invalid(props.full_key(&key), format!("Kafka refused '{shown}': {}", mask(&desc, &settings))));
            }
            Err(e) => return Err(ConnectorError::Other(format!("{what}: cannot create the Kafka client: {}", mask(&e.to_string(), &settings)))),
        }
    }
}

/// Replaces any secret value appearing in `text` with `****`.
pub fn mask(text: &str, settings: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in settings {
        if is_secret_key(k) && !v.is_empty() {
            out = out.replace(v.as_str(), "****");
        }
    }
    out
}

/// A client context that logs librdkafka through `tracing`, naming the connector, with
/// connection failures (a broker away: one per retry, every 100 ms) logged once every 10 s
/// with a count of those held back, not once per retry.
#[derive(Debug, Default)]
pub struct QuietContext {
    name: String,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    held_back: std::sync::atomic::AtomicU64,
    /// Where the connection's state is reported, once the job has given a place.
    status: StatusSlot,
}

/// Where a client reports its connection's state: the connector's metrics, set when the job
/// hands them over (after the client was made).
pub type StatusSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::metrics::ConnectorMetrics>>>;

/// How often a repeated connection failure is logged.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl QuietContext {
    /// A context for the connector `name` (`kafka sink 'out'`).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// A context that also reports a lost connection as `Reconnecting` in `status`.
    pub fn with_status(name: impl Into<String>, status: StatusSlot) -> Self {
        Self { name: name.into(), status, ..Self::default() }
    }

    /// Logs a connection failure, unless one was logged less than 10 s ago.
    pub fn failure(&self, message: &str) {
        use std::sync::atomic::Ordering;
        if let Some(m) = self.status.get() {
            m.set_status(crate::metrics::ConnectionStatus::Reconnecting);
        }
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < FAILURE_LOG_EVERY) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(std::time::Instant::now());
        let held = self.held_back.swap(0, Ordering::Relaxed);
        let note = if held > 0 { format!(" ({held} more connection errors in the last 10 s)") } else { String::new() };
        warn!("{}: {message}; the client retries by itself{note}", self.name);
    }

    /// librdkafka's log line `fac: message` at `level`.
    pub fn log_line(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning if fac == "FAIL" => self.failure(message),
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!("{}: librdkafka {fac}: {message}", self.name)
            }
            L::Warning => warn!("{}: librdkafka {fac}: {message}", self.name),
            L::Notice | L::Info => tracing::info!("{}: librdkafka {fac}: {message}", self.name),
            L::Debug => tracing::debug!("{}: librdkafka {fac}: {message}", self.name),
        }
    }

    /// A client-wide error from librdkafka.
    pub fn client_error(&self, error: &KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        let transport = matches!(error.rdkafka_error_code(), Some(C::AllBrokersDown | C::BrokerTransportFailure));
        if transport {
            self.failure(&format!("{error}: {reason}"));
        } else {
            tracing::error!("{}: {error}: {reason}", self.name);
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log_line(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_error(&error, reason);
    }
}

/// Remembers librdkafka's complaints: why a TLS handshake or a login failed.
#[derive(Debug, Default)]
pub struct ProbeContext {
    said: std::sync::Mutex<Vec<String>>,
}

impl ProbeContext {
    fn keep(&self, message: String) {
        self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(message);
    }

    /// The most telling complaint: one about the handshake, a certificate or the login, else the
    /// last.
    fn reason(&self) -> Option<String> {
        let said = self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        said.iter().find(|m| Self::is_telling(m)).or(said.last()).cloned()
    }

    /// True for a failure retrying will not cure: the TLS handshake, a certificate, the login.
    fn is_telling(message: &str) -> bool {
        ["SSL handshake", "certificate", "SASL authentication", "Authentication failed", "authentication failed", "SSL_"].iter().any(|w| message.contains(w))
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, _fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(level, L::Emerg | L::Alert | L::Critical | L::Error | L::Warning) {
            self.keep(message.to_string());
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.keep(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// For a client configured for TLS or SASL (`security.protocol` = `SSL`, `SASL_SSL`,
/// `SASL_PLAINTEXT`): connects once at start and asks for the cluster's metadata, so that a
/// certificate that cannot be verified or a login that is refused stops the job at start with
/// librdkafka's reason — instead of a client retrying for ever. Plain connections are not
/// checked (a broker that is down may come back).
pub fn check_secure_connection(props: &Properties, settings: &[(String, String)], what: &str) -> Result<()> {
    let Some(protocol) = settings.iter().find(|(k, _)| k == "security.protocol").map(|(_, v)| v.to_ascii_lowercase()) else { return Ok(()) };
    if protocol == "plaintext" {
        return Ok(());
    }
    // every client setting (certificate verification switches, address family, …), as a
    // consumer of a group of its own that only asks for the metadata
    let mut probe: Vec<(String, String)> = settings.iter().filter(|(k, _)| k != "group.id").cloned().collect();
    probe.push(("group.id".into(), format!("ferris-probe-{}", std::process::id())));
    probe.push((PROBE_LOG.into(), "true".into()));
    let run = || -> Result<Option<String>> {
        let consumer: rdkafka::consumer::BaseConsumer<ProbeContext> = create_client_with(props, probe, what, ProbeContext::default)?;
        if rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, std::time::Duration::from_secs(10)).is_ok() {
            return Ok(None);
        }
        // librdkafka's log lines and errors reach the context when the client is polled
        for _ in 0..5 {
            let _ = consumer.poll(std::time::Duration::from_millis(50));
        }
        Ok(Some(rdkafka::consumer::Consumer::context(&consumer).reason().unwrap_or_default()))
    };
    // connecting, waiting and closing the client block: not on a runtime worker
    let failed = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run)?,
        _ => run()?,
    };
    let Some(why) = failed else { return Ok(()) };
    let why = mask(&why, settings);
    if ProbeContext::is_telling(&why) {
        // a certificate that cannot be verified, a refused login: retrying will not help
        return Err(ConnectorError::Other(format!("{what}: cannot reach the brokers over {}: {why}", protocol.to_ascii_uppercase())));
    }
    // the brokers are away for now (a restart): the client keeps trying, as over plaintext
    warn!("{what}: the brokers did not answer over {} yet ({why}); the client keeps trying", protocol.to_ascii_uppercase());
    Ok(())
}

/// A setting of ours, never given to librdkafka: the client's warnings reach its context.
const PROBE_LOG: &str = "ferris.probe.log";

/// True when two `bootstrap.servers` lists name the same brokers (order, case and spaces
/// aside): a Kafka source and sink there can share a transaction (the source's group offsets
/// committed inside the sink's).
///
/// ```sql
/// WITH ('use_transactions' = 'true', 'orders.bootstrap.servers' = 'b1:9092,b2:9092',
///       'out.bootstrap.servers' = 'B2:9092, b1:9092', …)
/// ```
pub fn same_cluster(a: &str, b: &str) -> bool {
    let set = |s: &str| {
        let mut v: Vec<String> = s.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        v.sort();
        v.dedup();
        v
    };
    !set(a).is_empty() && set(a) == set(b)
}

/// True when a Kafka source and a Kafka sink configured by `a` and `b` reach the same brokers
/// ([`same_cluster`]) as the same user (the same `security.protocol` and `sasl.username`), so
/// the sink's transactions may carry the source group's offsets: another user may have no right
/// to the group.
pub fn same_cluster_and_user(a: &Properties, b: &Properties) -> bool {
    let protocol = |p: &Properties| p.get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
    same_cluster(a.get("bootstrap.servers").unwrap_or_default(), b.get("bootstrap.servers").unwrap_or_default())
        && protocol(a) == protocol(b)
        && a.get("sasl.username") == b.get("sasl.username")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_stay_and_java_names_translate() {
        let p = Properties::from_pairs(
            "o",
            [
                ("type", "kafka_source"),
                ("topic", "t"),
                ("value.format", "json"),
                ("bootstrap.servers", "b:9092"),
                ("fetch.max.wait.ms", "100"),
                ("batch.size", "10"),
                ("sasl.password", "hunter2"),
                ("event_time", "ts"),
            ],
        );
        let mut s = client_settings(&p);
        s.sort();
        let keys: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bootstrap.servers", "fetch.wait.max.ms", "sasl.password"]);
        assert_eq!(mask("bad password hunter2", &s), "bad password ****");
    }

    #[test]
    fn unknown_client_keys_are_dropped_and_bad_values_named() {
        let p = Properties::from_pairs("o", [("bootstrap.servers", "127.0.0.1:1"), ("no.such.thing", "1"), ("sasl.password", "s3cret")]);
        let c: Result<rdkafka::producer::FutureProducer> = create_client(&p, client_settings(&p), "kafka sink 'o'");
        assert!(c.is_ok());
        let p = Properties::from_pairs("o", [("bootstrap.servers", "127.0.0.1:1"), ("acks", "lots")]);
        let Err(e) = create_client::<rdkafka::producer::FutureProducer>(&p, client_settings(&p), "kafka sink 'o'") else { panic!("accepted acks=lots") };
        let e = e.to_string();
        assert!(e.contains("'o.acks'") && e.contains("lots"), "{e}");
    }

    #[test]
    fn the_same_brokers_in_any_order_are_one_cluster() {
        assert!(same_cluster("a:9092,b:9092", " B:9092 , a:9092,"));
        assert!(same_cluster("a:9092", "a:9092,a:9092"));
        assert!(!same_cluster("a:9092", "a:9093"));
        assert!(!same_cluster("a:9092,b:9092", "a:9092"));
        assert!(!same_cluster("", ""), "no brokers named is no cluster");
        let props = |pairs: &[(&str, &str)]| Properties::from_pairs("x", pairs.iter().copied());
        let plain = props(&[("bootstrap.servers", "a:9092")]);
        assert!(same_cluster_and_user(&plain, &props(&[("bootstrap.servers", "a:9092"), ("security.protocol", "PLAINTEXT")])));
        let alice = props(&[("bootstrap.servers", "a:9092"), ("security.protocol", "SASL_SSL"), ("sasl.username", "alice")]);
        let bob = props(&[("bootstrap.servers", "a:9092"), ("security.protocol", "SASL_SSL"), ("sasl.username", "bob")]);
        assert!(!same_cluster_and_user(&plain, &alice) && !same_cluster_and_user(&alice, &bob));
        assert!(same_cluster_and_user(&alice, &alice.clone()));
    }
}
