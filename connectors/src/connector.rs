//! What a connector declares about itself, in its own directory: its type names and roles,
//! the keys it reads (meaning, default, secret or not), how it is built, and how it takes part
//! in checkpoints. The engine's factory, `explain`, unknown-key warnings, secret masking and the
//! README's connector tables all read these declarations; [`crate::registry`] lists them.
//!
//! ```sql
//! WITH ('orders.type' = 's3_source', 'orders.path' = 's3://lake/orders/', 'orders.region' = 'eu-west-1')
//! ```

use std::sync::Arc;

use crate::connector_type::{ConnectorKind, Role};
use crate::error::Result;
use crate::properties::{Properties, COMMON_KEYS};
use crate::sink::Sink;
use crate::source::Source;

/// A key a connector reads: `name` exactly, or a whole family when it ends with `.`.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key without the relation's prefix (`path`, `bootstrap.servers`, `sasl.`).
    pub name: &'static str,
    /// What it does, one sentence.
    pub meaning: &'static str,
    /// Its default, as a user would write it.
    pub default: Option<&'static str>,
    /// Its value is never shown (explain, logs, errors, REST).
    pub secret: bool,
    /// Accepted for compatibility but not used: the warning given when it is set (unless its
    /// value is one of `used_values`).
    pub unused: Option<&'static str>,
    /// Values of an otherwise unused key that are what the connector does anyway (`utf-8`).
    pub used_values: &'static [&'static str],
    /// Also handed to the client library (`bootstrap.servers` to librdkafka).
    pub client: bool,
}

impl KeyDoc {
    /// A key and its meaning.
    pub const fn new(name: &'static str, meaning: &'static str) -> Self {
        Self { name, meaning, default: None, secret: false, unused: None, used_values: &[], client: false }
    }

    /// With its default.
    pub const fn default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }

    /// Read by us and handed to the client library as well.
    pub const fn client(mut self) -> Self {
        self.client = true;
        self
    }

    /// A secret.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Accepted and not used: setting it warns with `why` unless the value is one of `fine`.
    pub const fn unused(mut self, why: &'static str, fine: &'static [&'static str]) -> Self {
        self.unused = Some(why);
        self.used_values = fine;
        self
    }

    /// True when this declaration covers `key`.
    pub fn covers(&self, key: &str) -> bool {
        if self.name.ends_with('.') {
            key.starts_with(self.name)
        } else {
            self.name == key
        }
    }
}

/// What a source constructor gets.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext<'a> {
    /// The source's own properties (`orders.*` without the prefix).
    pub props: &'a Properties,
    /// The job's properties (batch and failure defaults, `checkpoint.*`).
    pub job: &'a Properties,
    /// The parallelism cap.
    pub partitions: usize,
    /// The job's name.
    pub job_name: &'a str,
}

/// What a sink constructor gets.
#[derive(Debug, Clone, Copy)]
pub struct SinkContext<'a> {
    /// The sink's own properties.
    pub props: &'a Properties,
    /// The job's name.
    pub job_name: &'a str,
}

/// Builds a source from its properties.
pub type SourceFactory = fn(&SourceContext<'_>) -> Result<Arc<dyn Source>>;
/// Builds a sink from its properties; what can be checked before data flows is checked here.
pub type SinkFactory = fn(&SinkContext<'_>) -> Result<Box<dyn Sink>>;

/// One role of a connector.
#[derive(Debug, Clone, Copy)]
pub struct RoleSpec<F> {
    /// The keys it reads, besides [`COMMON_KEYS`] and the batch keys, in groups (its own, then
    /// shared ones such as the format keys).
    pub keys: &'static [&'static [KeyDoc]],
    /// Keys not declared are handed to a client library, which checks them (librdkafka's): what
    /// it is, for the README.
    pub passthrough: Option<&'static str>,
    /// How it takes part in checkpoints and transactions, for `explain`.
    pub checkpoints: &'static str,
    /// Its constructor.
    pub create: F,
}

/// Everything a connector declares.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorSpec {
    /// The system it talks to.
    pub kind: ConnectorKind,
    /// One line for the README and `--help`.
    pub summary: &'static str,
    /// As a source (FROM / JOIN), when it can be read.
    pub source: Option<RoleSpec<SourceFactory>>,
    /// As a sink (INTO), when it can be written.
    pub sink: Option<RoleSpec<SinkFactory>>,
}

/// The verdict on one key set on a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Read by the connector (or every connector).
    Used,
    /// Not a key of this connector.
    Unknown,
    /// Accepted for compatibility, not used: why.
    Unused(&'static str),
}

impl ConnectorSpec {
    /// The keys of `role` (empty when the connector has no such role).
    pub fn keys(&self, role: Role) -> impl Iterator<Item = &'static KeyDoc> {
        let groups: &'static [&'static [KeyDoc]] = match role {
            Role::Source => self.source.map_or(&[], |s| s.keys),
            Role::Sink => self.sink.map_or(&[], |s| s.keys),
        };
        groups.iter().flat_map(|g| g.iter())
    }

    /// Whether undeclared keys of `role` go to a client library.
    pub fn passthrough(&self, role: Role) -> Option<&'static str> {
        match role {
            Role::Source => self.source.and_then(|s| s.passthrough),
            Role::Sink => self.sink.and_then(|s| s.passthrough),
        }
    }

    /// How `role` takes part in checkpoints.
    pub fn checkpoints(&self, role: Role) -> &'static str {
        match role {
            Role::Source => self.source.map_or("cannot be read", |s| s.checkpoints),
            Role::Sink => self.sink.map_or("cannot be written", |s| s.checkpoints),
        }
    }

    /// What the connector makes of `key` = `value` (`key` without the relation's prefix; a
    /// `source.`/`sink.` prefix is an alias of the plain key).
    pub fn check_key(&self, role: Role, key: &str, value: &str) -> KeyCheck {
        let plain = key.strip_prefix("source.").or_else(|| key.strip_prefix("sink.")).unwrap_or(key);
        if let Some(doc) = self.keys(role).find(|d| d.covers(plain)) {
            return match doc.unused {
                Some(why) if !doc.used_values.iter().any(|v| v.eq_ignore_ascii_case(value.trim())) => KeyCheck::Unused(why),
                _ => KeyCheck::Used,
            };
        }
        if COMMON_KEYS.accepts(plain) || self.passthrough(role).is_some() {
            KeyCheck::Used
        } else {
            KeyCheck::Unknown
        }
    }

    /// True when `key` is declared secret by this connector (any role).
    pub fn is_secret(&self, key: &str) -> bool {
        [Role::Source, Role::Sink].iter().any(|r| self.keys(*r).any(|d| d.secret && d.covers(key)))
    }

    /// The README table of `role`'s keys: `| key | default | meaning |`, secrets marked.
    pub fn key_table(&self, role: Role) -> String {
        let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
        for d in self.keys(role) {
            let name = if d.name.ends_with('.') { format!("`{}*`", d.name) } else { format!("`{}`", d.name) };
            let mut meaning = d.meaning.to_string();
            if d.secret {
                meaning.push_str(" Secret: never shown.");
            }
            if let Some(why) = d.unused {
                meaning = format!("Not used: {why}.");
            }
            out.push_str(&format!("| {name} | {} | {meaning} |\n", d.default.unwrap_or("")));
        }
        if let Some(p) = self.passthrough(role) {
            out.push_str(&format!("| any other key | | {p} |\n"));
        }
        out
    }
}
