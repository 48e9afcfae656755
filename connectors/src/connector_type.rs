//! Connector types as users name them: compound (`kafka_source`, `file_sink`) or plain
//! (`kafka`, `file`) with the role taken from where the name appears in the query.
//!
//! ```sql
//! WITH ('orders.type' = 'kafka_source', 'archive.type' = 'file')  -- archive is in INTO: a file sink
//! ```

use std::fmt;

/// Whether a named relation is read from (FROM/JOIN) or written to (INTO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Named in FROM or JOIN.
    Source,
    /// Named in INTO, or the stream's own name.
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Sink => "sink",
        })
    }
}

/// The systems a connector can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    /// Apache Kafka topics.
    Kafka,
    /// Local or network files.
    File,
    /// S3-compatible object storage.
    S3,
    /// A SQL database (PostgreSQL).
    Database,
    /// Apache Iceberg tables (sink only).
    Iceberg,
    /// Elasticsearch.
    Elasticsearch,
    /// Redis.
    Redis,
    /// MongoDB.
    MongoDb,
    /// An HTTP endpoint: webhooks and APIs written to, JSON APIs polled.
    Http,
    /// Standard output (sink only).
    Stdout,
    /// Discards everything (sink only; Flink's `blackhole`), for dry runs and benchmarks.
    Blackhole,
    /// Arrow Flight subscribers (sink only).
    Flight,
}

impl ConnectorKind {
    /// All kinds, for error messages and lookup.
    pub const ALL: [ConnectorKind; 12] = [
        Self::Kafka,
        Self::File,
        Self::S3,
        Self::Database,
        Self::Iceberg,
        Self::Elasticsearch,
        Self::Redis,
        Self::MongoDb,
        Self::Http,
        Self::Stdout,
        Self::Blackhole,
        Self::Flight,
    ];

    /// The plain name users write (`kafka`, `file`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::File => "file",
            Self::S3 => "s3",
            Self::Database => "database",
            Self::Iceberg => "iceberg",
            Self::Elasticsearch => "elasticsearch",
            Self::Redis => "redis",
            Self::MongoDb => "mongodb",
            Self::Http => "http",
            Self::Stdout => "stdout",
            Self::Blackhole => "blackhole",
            Self::Flight => "flight",
        }
    }

    /// Whether this kind can be read from.
    pub fn can_source(self) -> bool {
        !matches!(self, Self::Iceberg | Self::Stdout | Self::Blackhole | Self::Flight)
    }

    fn from_plain(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        let s = match s.as_str() {
            "postgres" | "postgresql" | "db" | "jdbc" => "database",
            "console" => "stdout",
            "mongo" => "mongodb",
            "filesystem" => "file",
            other => other,
        };
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A connector type with its role: `kafka_source`, `file_sink`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectorType {
    /// The system.
    pub kind: ConnectorKind,
    /// Source or sink.
    pub role: Role,
}

/// Why a `type` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// Not a type anybody knows.
    #[error("unknown {role} type '{value}' for '{name}'. Use one of: {expected}")]
    Unknown {
        /// The relation's name.
        name: String,
        /// Its role.
        role: Role,
        /// The value as written.
        value: String,
        /// The accepted values.
        expected: String,
    },
    /// A compound type whose role contradicts where the name appears.
    #[error("'{name}' appears as a {role} but its type '{value}' is a {declared} type")]
    WrongRole {
        /// The relation's name.
        name: String,
        /// Where it appears.
        role: Role,
        /// The value as written.
        value: String,
        /// The role the value declares.
        declared: Role,
    },
}

impl ConnectorType {
    /// Parses `value` for the relation `name` appearing as `role`.
    pub fn parse(name: &str, role: Role, value: &str) -> Result<Self, TypeError> {
        let mut v = value.trim().to_ascii_lowercase();
        // the predecessor's memory-mapped file source: the file source reads as fast
        if v == "file_source_mmap" {
            v = "file_source".into();
        }
        let (base, declared) = if let Some(b) = v.strip_suffix("_source") {
            (b, Some(Role::Source))
        } else if let Some(b) = v.strip_suffix("_sink") {
            (b, Some(Role::Sink))
        } else {
            (v.as_str(), None)
        };
        let unknown = || TypeError::Unknown { name: name.to_string(), role, value: value.to_string(), expected: Self::examples(role).join(", ") };
        let kind = ConnectorKind::from_plain(base).ok_or_else(unknown)?;
        if let Some(declared) = declared {
            if declared != role {
                return Err(TypeError::WrongRole { name: name.into(), role, value: value.into(), declared });
            }
        }
        if role == Role::Source && !kind.can_source() {
            return Err(unknown());
        }
        Ok(Self { kind, role })
    }

    /// The compound names shown in "type must be specified" messages.
    pub fn examples(role: Role) -> Vec<&'static str> {
        match role {
            Role::Source => vec!["kafka_source", "file_source", "s3_source", "database_source", "http_source", "redis_source"],
            Role::Sink => {
                vec!["kafka_sink", "file_sink", "s3_sink", "database_sink", "http_sink", "redis_sink", "iceberg_sink", "stdout_sink", "blackhole_sink"]
            }
        }
    }
}

impl fmt::Display for ConnectorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.kind.name(), self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_and_plain() {
        let t = ConnectorType::parse("o", Role::Source, "kafka_source").unwrap();
        assert_eq!((t.kind, t.role), (ConnectorKind::Kafka, Role::Source));
        assert_eq!(ConnectorType::parse("o", Role::Sink, "FILE").unwrap().to_string(), "file_sink");
        assert_eq!(ConnectorType::parse("o", Role::Sink, "blackhole").unwrap().kind, ConnectorKind::Blackhole);
        assert_eq!(ConnectorType::parse("o", Role::Source, "file_source_mmap").unwrap().to_string(), "file_source");
        assert!(matches!(ConnectorType::parse("o", Role::Sink, "file_source_mmap"), Err(TypeError::WrongRole { .. })));
        assert!(matches!(ConnectorType::parse("o", Role::Source, "kafka_sink"), Err(TypeError::WrongRole { .. })));
        assert!(matches!(ConnectorType::parse("o", Role::Source, "stdout"), Err(TypeError::Unknown { .. })));
        let e = ConnectorType::parse("o", Role::Source, "kafak").unwrap_err().to_string();
        assert!(e.contains("unknown source type 'kafak' for 'o'"), "{e}");
    }
}
