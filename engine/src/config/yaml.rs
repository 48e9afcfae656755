//! YAML property files for one source or sink (`'orders.config_file' = 'kafka-orders.yaml'`):
//! flat dotted keys or nested maps (flattened to dotted keys), lists kept as lists (JSON array
//! text), `extends` chains resolved relative to the extending file, `${…}` substituted.
//!
//! ```yaml
//! # configs/kafka-orders-source.yaml
//! extends: "base_kafka_config.yml"
//! topic: "orders"
//! group.id: "order-processor-${ENVIRONMENT:-dev}"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::error::ConfigError;
use super::substitute::Variables;

/// A property read from YAML: its value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlProperty {
    /// The value, substituted.
    pub value: String,
    /// `configs/a.yaml`, or `configs/base.yaml (extended by configs/a.yaml)`.
    pub origin: String,
    /// Variables its value used.
    pub variables: Vec<String>,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `a/./b/../c` → `a/c`, without touching the file system (for paths users read).
pub fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The largest YAML file read (a configuration, not data).
const MAX_YAML_BYTES: u64 = 16 << 20;

/// Reads and parses a YAML file, with merge keys (`<<: *base`) applied. Only a plain file of
/// at most 16 MiB is read (`extends: /dev/stdin` is an error, not a job that waits for ever).
pub fn read_yaml(path: &Path, what: &'static str, referenced_by: &str) -> Result<(String, Value), ConfigError> {
    let unreadable = |message: String| ConfigError::Unreadable { what, path: path.to_path_buf(), referenced_by: referenced_by.to_string(), message };
    // a device, a pipe or a huge file would never end or fill the memory: a configuration is a
    // plain file of modest size
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a plain file".into()));
    }
    if meta.len() > MAX_YAML_BYTES {
        return Err(unreadable(format!("{} bytes: more than a configuration file holds ({} MiB at most)", meta.len(), MAX_YAML_BYTES >> 20)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let mut value: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ConfigError::Syntax { path: path.to_path_buf(), line, column, message: e.to_string() }
        })?
    };
    value.apply_merge().map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), line: 0, column: 0, message: e.to_string() })?;
    Ok((text, value))
}

/// The 1-based line where `key` (its last dotted part) is written, or 0.
pub fn line_of_key(text: &str, key: &str) -> usize {
    let last = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:")) || t.starts_with(&format!("{last}:")) || t.starts_with(&format!("\"{key}\":"))
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// Flattens a mapping to dotted keys; scalars as text, sequences as JSON arrays.
fn flatten(prefix: &str, value: &Value, path: &Path, text: &str, out: &mut Vec<(String, String)>) -> Result<(), ConfigError> {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(ConfigError::WrongType {
                            path: path.to_path_buf(),
                            line: 0,
                            key: format!("{other:?}"),
                            message: "keys must be text".into(),
                        })
                    }
                };
                let full = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                flatten(&full, v, path, text, out)?;
            }
        }
        Value::Tagged(t) => flatten(prefix, &t.value, path, text, out)?,
        other => out.push((prefix.to_string(), scalar_text(other, path, text, prefix)?)),
    }
    Ok(())
}

fn scalar_text(v: &Value, path: &Path, text: &str, key: &str) -> Result<String, ConfigError> {
    Ok(match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let parts: Vec<serde_json::Value> = items
                .iter()
                .map(|i| match i {
                    Value::Sequence(_) | Value::Mapping(_) => Err(ConfigError::WrongType {
                        path: path.to_path_buf(),
                        line: line_of_key(text, key),
                        key: key.to_string(),
                        message: "a list may hold only plain values".into(),
                    }),
                    other => scalar_text(other, path, text, key).map(serde_json::Value::String),
                })
                .collect::<Result<_, _>>()?;
            serde_json::Value::Array(parts).to_string()
        }
        Value::Mapping(_) | Value::Tagged(_) => unreachable_mapping(path, text, key)?,
    })
}

fn unreachable_mapping(path: &Path, text: &str, key: &str) -> Result<String, ConfigError> {
    Err(ConfigError::WrongType { path: path.to_path_buf(), line: line_of_key(text, key), key: key.into(), message: "unexpected nested value".into() })
}

/// Loads the property file `path` (already resolved), following `extends`.
/// `referenced_by` names who asked for it, for errors.
pub fn load_properties(path: &Path, vars: &Variables, referenced_by: &str) -> Result<BTreeMap<String, YamlProperty>, ConfigError> {
    let mut chain = Vec::new();
    load_chain(path, vars, referenced_by, &mut chain)
}

fn load_chain(path: &Path, vars: &Variables, referenced_by: &str, chain: &mut Vec<PathBuf>) -> Result<BTreeMap<String, YamlProperty>, ConfigError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        let mut names: Vec<String> = chain.iter().map(|p| file_name(p)).collect();
        names.push(file_name(&canonical));
        return Err(ConfigError::Cycle { chain: names.join(" → ") });
    }
    chain.push(canonical);
    let what = if chain.len() == 1 { "config_file" } else { "extends target" };
    let (text, value) = read_yaml(path, what, referenced_by)?;
    if !matches!(value, Value::Mapping(_)) {
        return Err(ConfigError::WrongType {
            path: path.to_path_buf(),
            line: 1,
            key: "(top level)".into(),
            message: "a property file must be a mapping of keys to values".into(),
        });
    }
    let mut flat = Vec::new();
    flatten("", &value, path, &text, &mut flat)?;
    let mut out = BTreeMap::new();
    if let Some((_, parent)) = flat.iter().find(|(k, _)| k == "extends") {
        let used_in = format!("{}:{}: extends", display(path), line_of_key(&text, "extends"));
        let (parent, _) = vars.substitute(parent, &used_in)?;
        let parent_path = tidy(&path.parent().unwrap_or(Path::new(".")).join(parent));
        let inherited = load_chain(&parent_path, vars, &format!("extends in {}", display(path)), chain)?;
        for (k, mut p) in inherited {
            p.origin = format!("{} (extended by {})", p.origin, display(path));
            out.insert(k, p);
        }
    }
    for (k, v) in flat {
        if k == "extends" {
            continue;
        }
        let at = match line_of_key(&text, &k) {
            0 => display(path),
            line => format!("{}:{line}", display(path)),
        };
        let (value, variables) = vars.substitute(&v, &format!("{at}: {k}"))?;
        out.insert(k, YamlProperty { value, origin: at, variables });
    }
    chain.pop();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| display(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(env: &[(&str, &str)]) -> Variables {
        Variables::new(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), BTreeMap::new())
    }

    /// A device or a directory is not a configuration file: an error naming it, never a read
    /// that waits for ever (`/dev/stdin`) or fills the memory (`/dev/zero`).
    #[test]
    fn only_plain_files_are_read() {
        for path in ["/dev/zero", "/dev/null", "/tmp"] {
            let e = read_yaml(Path::new(path), "extends target", "app.yaml").unwrap_err().to_string();
            assert!(e.contains(path) && e.contains("not a plain file"), "{e}");
        }
    }

    #[test]
    fn extends_nesting_lists_and_substitution() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("base.yml"), "bootstrap.servers: \"${KAFKA_BROKERS:-localhost:9092}\"\ncompression.type: snappy\nmax_retries: 3\n")
            .unwrap();
        std::fs::write(d.path().join("sub/mid.yaml"), "extends: ../base.yml\ncompression.type: lz4\nsecurity:\n  protocol: SSL\n").unwrap();
        std::fs::write(
            d.path().join("sub/leaf.yaml"),
            "extends: \"mid.yaml\"\ntopic: orders-${ENVIRONMENT:-dev}\npartition_columns: [order_date, region]\nenable.idempotence: true\n",
        )
        .unwrap();
        let p = load_properties(&d.path().join("sub/leaf.yaml"), &vars(&[("ENVIRONMENT", "prod")]), "'o.config_file'").unwrap();
        let get = |k: &str| p[k].value.clone();
        assert_eq!(get("bootstrap.servers"), "localhost:9092");
        assert_eq!(get("compression.type"), "lz4");
        assert_eq!(get("security.protocol"), "SSL");
        assert_eq!(get("max_retries"), "3");
        assert_eq!(get("topic"), "orders-prod");
        assert_eq!(get("partition_columns"), r#"["order_date","region"]"#);
        assert_eq!(get("enable.idempotence"), "true");
        assert!(!p.contains_key("extends"));
        assert!(p["max_retries"].origin.contains("base.yml:3 (extended by"), "{}", p["max_retries"].origin);
        assert_eq!(p["topic"].variables, vec!["ENVIRONMENT"]);
    }

    #[test]
    fn cycles_missing_files_and_syntax_errors_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), "extends: b.yaml\nx: 1\n").unwrap();
        std::fs::write(d.path().join("b.yaml"), "extends: a.yaml\ny: 2\n").unwrap();
        let e = load_properties(&d.path().join("a.yaml"), &vars(&[]), "t").unwrap_err();
        assert_eq!(e.to_string(), "extends cycle: a.yaml → b.yaml → a.yaml");
        std::fs::write(d.path().join("c.yaml"), "extends: gone.yaml\n").unwrap();
        let e = load_properties(&d.path().join("c.yaml"), &vars(&[]), "t").unwrap_err().to_string();
        assert!(e.contains("cannot read extends target") && e.contains("gone.yaml") && e.contains("extends in"), "{e}");
        std::fs::write(d.path().join("bad.yaml"), "a: 1\nb: [unclosed\n").unwrap();
        let e = load_properties(&d.path().join("bad.yaml"), &vars(&[]), "t").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line, .. } if line >= 2), "{e}");
        std::fs::write(d.path().join("var.yaml"), "a: 1\nuser: ${DB_USER}\n").unwrap();
        let e = load_properties(&d.path().join("var.yaml"), &vars(&[]), "t").unwrap_err().to_string();
        assert!(e.contains("variable 'DB_USER' is not set") && e.contains("var.yaml:2: user"), "{e}");
    }
}
