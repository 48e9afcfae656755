//! Application config files with profiles: the active profile is `--profile`, else
//! `FERRIS_PROFILE`, else the file's `active_profile`; profiles inherit through YAML anchors
//! and merge keys; the active profile's keys become `${…}` variables. A profile's `with:` map
//! overrides the statements' `WITH` keys — how a job written for production hosts runs on
//! stand-ins without editing its SQL.
//!
//! ```yaml
//! active_profile: "${FERRIS_PROFILE:-development}"
//! profiles:
//!   base: &base_profile
//!     batch_size: 1000
//!   development:
//!     <<: *base_profile
//!     kafka_brokers: "localhost:9092"
//!     with:                                  # wins over the SQL's WITH clause
//!       orders.bootstrap.servers: "localhost:9092"
//!       audit.path: "out/audit_{date}.log"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::error::ConfigError;
use super::substitute::Variables;
use super::yaml::{line_of_key, read_yaml};

/// How the active profile was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// `--profile NAME`.
    CommandLine,
    /// The `FERRIS_PROFILE` variable.
    Environment,
    /// The file's `active_profile`.
    File,
}

impl std::fmt::Display for ProfileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProfileSource::CommandLine => "from --profile",
            ProfileSource::Environment => "from FERRIS_PROFILE",
            ProfileSource::File => "from active_profile",
        })
    }
}

/// A loaded application config file.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The file.
    pub path: PathBuf,
    /// The active profile's name.
    pub profile: Option<String>,
    /// How it was chosen.
    pub profile_source: Option<ProfileSource>,
    /// The active profile's settings (flattened, substituted): the profile variables.
    pub settings: BTreeMap<String, String>,
    /// Every profile the file defines.
    pub profiles: Vec<String>,
    /// The active profile's `with:` map: `WITH` keys (`source.key`, or job options) whose
    /// values win over the statements' own (substituted).
    pub overrides: BTreeMap<String, String>,
}

impl AppConfig {
    /// Loads `path`, choosing the profile from `cli_profile`, `FERRIS_PROFILE` (in `vars`) or
    /// the file's `active_profile`.
    pub fn load(path: &Path, cli_profile: Option<&str>, vars: &Variables) -> Result<Self, ConfigError> {
        let (text, value) = read_yaml(path, "config file", "--config or discovery")?;
        let at = |key: &str| format!("{}:{}: {key}", path.display(), line_of_key(&text, key));
        let profiles_map = match value.get("profiles") {
            None => None,
            Some(Value::Mapping(m)) => Some(m.clone()),
            Some(_) => {
                return Err(ConfigError::WrongType {
                    path: path.to_path_buf(),
                    line: line_of_key(&text, "profiles"),
                    key: "profiles".into(),
                    message: "expected a map of profile names to settings".into(),
                })
            }
        };
        let profiles: Vec<String> = profiles_map.iter().flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string))).collect();
        let (profile, profile_source) = if let Some(p) = cli_profile {
            (Some(p.to_string()), Some(ProfileSource::CommandLine))
        } else if let Some(p) = vars.env("FERRIS_PROFILE").filter(|p| !p.is_empty()) {
            (Some(p.to_string()), Some(ProfileSource::Environment))
        } else if let Some(Value::String(p)) = value.get("active_profile") {
            (Some(vars.substitute(p, &at("active_profile"))?.0), Some(ProfileSource::File))
        } else {
            (None, None)
        };
        let mut settings = BTreeMap::new();
        let mut overrides = BTreeMap::new();
        if let Some(name) = &profile {
            let Some(body) = profiles_map.as_ref().and_then(|m| m.get(name.as_str())) else {
                return Err(ConfigError::UnknownProfile { name: name.clone(), path: path.to_path_buf(), available: profiles.join(", ") });
            };
            let Value::Mapping(body) = body else {
                return Err(ConfigError::WrongType {
                    path: path.to_path_buf(),
                    line: line_of_key(&text, name),
                    key: name.clone(),
                    message: "a profile must be a map".into(),
                });
            };
            // Profile values may use the environment (not other profile variables).
            let env_only = vars.clone().with_profile(BTreeMap::new());
            for (k, v) in body {
                let Some(k) = k.as_str() else { continue };
                if k == "with" {
                    let Value::Mapping(with) = v else {
                        return Err(ConfigError::WrongType {
                            path: path.to_path_buf(),
                            line: line_of_key(&text, "with"),
                            key: format!("profiles.{name}.with"),
                            message: "expected a map of WITH keys to values ('orders.bootstrap.servers: localhost:9092')".into(),
                        });
                    };
                    for (wk, wv) in with {
                        let Some(wk) = wk.as_str() else { continue };
                        let where_ = format!("profiles.{name}.with.{wk}");
                        let Some(raw) = plain(wv) else {
                            return Err(ConfigError::WrongType {
                                path: path.to_path_buf(),
                                line: line_of_key(&text, wk),
                                key: where_,
                                message: "expected a plain value".into(),
                            });
                        };
                        let (value, _) = env_only.substitute(&raw, &format!("{}:{}: {where_}", path.display(), line_of_key(&text, wk)))?;
                        overrides.insert(wk.to_string(), value);
                    }
                    continue;
                }
                let Some(raw) = plain(v) else {
                    return Err(ConfigError::WrongType {
                        path: path.to_path_buf(),
                        line: line_of_key(&text, k),
                        key: format!("profiles.{name}.{k}"),
                        message: "expected a plain value".into(),
                    });
                };
                let (value, _) = env_only.substitute(&raw, &at(&format!("profiles.{name}.{k}")))?;
                settings.insert(k.to_string(), value);
            }
        }
        Ok(Self { path: path.to_path_buf(), profile, profile_source, settings, profiles, overrides })
    }
}

/// A scalar YAML value as text (`None` for maps and lists).
fn plain(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
active_profile: "${FERRIS_PROFILE:-development}"
profiles:
  base: &base_profile
    log_level: "INFO"
    metrics_enabled: true
    batch_size: 1000
  development:
    <<: *base_profile
    kafka_brokers: "localhost:9092"
    log_level: "DEBUG"
  production:
    <<: *base_profile
    kafka_brokers: "${KAFKA_BROKERS}"
    log_level: "WARN"
"#;

    fn vars(env: &[(&str, &str)]) -> Variables {
        Variables::new(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), BTreeMap::new())
    }

    #[test]
    fn profile_precedence_and_merge_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.yaml");
        std::fs::write(&p, APP).unwrap();
        let c = AppConfig::load(&p, None, &vars(&[])).unwrap();
        assert_eq!(c.profile.as_deref(), Some("development"));
        assert_eq!(c.profile_source, Some(ProfileSource::File));
        assert_eq!(c.settings["log_level"], "DEBUG");
        assert_eq!(c.settings["batch_size"], "1000");
        assert_eq!(c.settings["metrics_enabled"], "true");

        let c = AppConfig::load(&p, None, &vars(&[("FERRIS_PROFILE", "production"), ("KAFKA_BROKERS", "k:9092")])).unwrap();
        assert_eq!((c.profile.as_deref(), c.profile_source.clone()), (Some("production"), Some(ProfileSource::Environment)));
        assert_eq!(c.settings["kafka_brokers"], "k:9092");
        assert_eq!(c.settings["log_level"], "WARN");

        let c = AppConfig::load(&p, Some("base"), &vars(&[("FERRIS_PROFILE", "production")])).unwrap();
        assert_eq!(c.profile_source, Some(ProfileSource::CommandLine));
        assert_eq!(c.settings["log_level"], "INFO");

        let e = AppConfig::load(&p, None, &vars(&[("FERRIS_PROFILE", "production")])).unwrap_err().to_string();
        assert!(e.contains("variable 'KAFKA_BROKERS' is not set") && e.contains("profiles.production.kafka_brokers"), "{e}");
        let e = AppConfig::load(&p, Some("staging"), &vars(&[])).unwrap_err().to_string();
        assert!(e.contains("profile 'staging' is not defined") && e.contains("base, development, production"), "{e}");
    }

    #[test]
    fn a_profiles_with_map_becomes_overrides_not_variables() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.yaml");
        std::fs::write(
            &p,
            "profiles:\n  local:\n    sql_file: job.sql\n    with:\n      orders.bootstrap.servers: \"${BROKER:-127.0.0.1:9092}\"\n      batch.size: 10\n      audit.append: true\n",
        )
        .unwrap();
        let c = AppConfig::load(&p, Some("local"), &vars(&[])).unwrap();
        assert_eq!(c.settings.keys().collect::<Vec<_>>(), ["sql_file"]);
        let o: Vec<(&str, &str)> = c.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(o, [("audit.append", "true"), ("batch.size", "10"), ("orders.bootstrap.servers", "127.0.0.1:9092")]);
        let c = AppConfig::load(&p, Some("local"), &vars(&[("BROKER", "b:1")])).unwrap();
        assert_eq!(c.overrides["orders.bootstrap.servers"], "b:1");

        std::fs::write(&p, "profiles:\n  local:\n    with: localhost\n").unwrap();
        let e = AppConfig::load(&p, Some("local"), &vars(&[])).unwrap_err().to_string();
        assert!(e.contains(":3") && e.contains("profiles.local.with") && e.contains("expected a map"), "{e}");
        std::fs::write(&p, "profiles:\n  local:\n    with:\n      orders.topic: [a, b]\n").unwrap();
        let e = AppConfig::load(&p, Some("local"), &vars(&[])).unwrap_err().to_string();
        assert!(e.contains(":4") && e.contains("profiles.local.with.orders.topic"), "{e}");
    }
}
