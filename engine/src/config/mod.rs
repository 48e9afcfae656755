//! Configuration: YAML files of properties with `extends`, `${VAR}` substitution, application
//! config files with profiles, discovery and resource limits — so that one set of SQL deploys
//! unchanged to dev, staging and production.
//!
//! ```sql
//! SELECT * FROM orders INTO processed
//! WITH ('orders.type' = 'kafka_source', 'orders.config_file' = './configs/kafka-orders-source.yaml',
//!       'processed.type' = 'file_sink', 'processed.path' = 'out/orders-${ENVIRONMENT:-dev}.jsonl');
//! ```

pub mod app;
pub mod discovery;
pub mod error;
pub mod limits;
pub mod substitute;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use app::AppConfig;
pub use error::ConfigError;
pub use limits::Limits;
pub use substitute::Variables;

/// Everything job analysis needs to resolve configuration.
#[derive(Debug, Clone)]
pub struct ConfigContext {
    /// Relative `config_file` paths resolve against this directory (the SQL file's).
    pub base_dir: PathBuf,
    /// The variables `${…}` can name.
    pub variables: Variables,
    /// The active profile, if an application config file was found.
    pub profile: Option<String>,
    /// The active profile's `with:` map: `WITH` keys whose values win over every statement's
    /// own, and where they come from (`app.yaml, profile 'local'`).
    pub overrides: Vec<(String, String)>,
    /// Where the overrides come from, for `explain`.
    pub overrides_origin: String,
}

impl ConfigContext {
    /// A context reading the process environment, with no profile, relative to `base_dir`.
    pub fn from_env(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
            variables: Variables::from_process(BTreeMap::new()),
            profile: None,
            overrides: Vec::new(),
            overrides_origin: String::new(),
        }
    }
}

impl Default for ConfigContext {
    fn default() -> Self {
        Self::from_env(".")
    }
}
