//! Every connector FerrisStreams has, by the declarations in their directories. The engine
//! builds sources and sinks, checks keys and writes `explain` from here; the README's connector
//! tables are checked against it.
//!
//! ```sql
//! WITH ('orders.type' = 'kafka_source', 'archive.type' = 's3_sink', 'nowhere.type' = 'blackhole')
//! ```

use crate::connector::ConnectorSpec;
use crate::connector_type::ConnectorKind;

/// The connectors built so far, in the README's order.
pub const CONNECTORS: &[&ConnectorSpec] = &[
    &crate::kafka::CONNECTOR,
    &crate::file::CONNECTOR,
    &crate::s3::CONNECTOR,
    &crate::iceberg::CONNECTOR,
    &crate::postgres::CONNECTOR,
    &crate::http::CONNECTOR,
    &crate::redis::CONNECTOR,
    &crate::stdout::CONNECTOR,
    &crate::blackhole::CONNECTOR,
    &crate::flight::CONNECTOR,
];

/// The declaration of `kind`, or `None` when that connector does not exist in this build.
pub fn find(kind: ConnectorKind) -> Option<&'static ConnectorSpec> {
    CONNECTORS.iter().copied().find(|c| c.kind == kind)
}

/// True when some connector declares `key` secret (`secret_access_key`, `sasl.password`).
pub fn is_declared_secret(key: &str) -> bool {
    CONNECTORS.iter().any(|c| c.is_secret(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::KeyCheck;
    use crate::Role;

    #[test]
    fn keys_are_checked_from_the_declarations() {
        let file = find(ConnectorKind::File).unwrap();
        assert_eq!(file.check_key(Role::Source, "path", "x"), KeyCheck::Used);
        assert_eq!(file.check_key(Role::Source, "source.format", "csv"), KeyCheck::Used);
        assert_eq!(file.check_key(Role::Source, "pth", "x"), KeyCheck::Unknown);
        assert_eq!(file.check_key(Role::Source, "encoding", "UTF-8"), KeyCheck::Used);
        assert!(matches!(file.check_key(Role::Source, "encoding", "latin1"), KeyCheck::Unused(_)));
        assert_eq!(file.check_key(Role::Sink, "batch.size", "10"), KeyCheck::Used, "batch keys are common");
        let kafka = find(ConnectorKind::Kafka).unwrap();
        assert_eq!(kafka.check_key(Role::Source, "session.timeout.ms", "6000"), KeyCheck::Used, "passed to librdkafka");
        assert_eq!(kafka.check_key(Role::Source, "schema.registry.url", "http://r"), KeyCheck::Used);
        assert!(kafka.is_secret("schema.registry.basic.auth.user.info"));
        let iceberg = find(ConnectorKind::Iceberg).unwrap();
        assert_eq!(iceberg.check_key(Role::Sink, "endpoint", "http://127.0.0.1:9000"), KeyCheck::Used, "the warehouse's store keys");
        assert!(iceberg.is_secret("catalog.password"));
    }

    #[test]
    fn every_connector_declares_each_key_once_with_a_meaning() {
        for c in CONNECTORS {
            for role in [Role::Source, Role::Sink] {
                let keys: Vec<_> = c.keys(role).collect();
                for (i, k) in keys.iter().enumerate() {
                    assert!(!keys[..i].iter().any(|o| o.name == k.name), "{} {role}: '{}' declared twice", c.kind.name(), k.name);
                    assert!(!k.meaning.is_empty() || k.unused.is_some(), "{} {role}: '{}' has no meaning", c.kind.name(), k.name);
                }
            }
        }
        assert!(is_declared_secret("secret_access_key"));
    }

    /// The README's key tables are the declarations' (`UPDATE_README=1` rewrites them).
    #[test]
    fn readme_key_tables_match_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let mut updated = readme.clone();
        for c in CONNECTORS {
            for role in [Role::Source, Role::Sink] {
                let declared = match role {
                    Role::Source => c.source.is_some(),
                    Role::Sink => c.sink.is_some(),
                };
                if !declared || matches!(c.kind, ConnectorKind::Stdout | ConnectorKind::Blackhole) {
                    continue;
                }
                let open = format!("<!-- keys: {}_{role} -->\n", c.kind.name());
                let start = updated.find(&open).unwrap_or_else(|| panic!("README.md has no '{}' marker", open.trim())) + open.len();
                let end = start + updated[start..].find("<!-- /keys -->").expect("a closing <!-- /keys --> marker");
                updated.replace_range(start..end, &c.key_table(role));
            }
        }
        if updated != readme {
            if std::env::var_os("UPDATE_README").is_some() {
                std::fs::write(&path, &updated).unwrap();
            } else {
                panic!("README.md's key tables differ from the connectors' declarations; run UPDATE_README=1 cargo test --workspace --lib readme_key_tables");
            }
        }
    }
}
