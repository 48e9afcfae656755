//! Configuration errors: each names the file, line and key where it can.

use std::path::PathBuf;

/// Why configuration could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `${VAR}` names a variable that is not set.
    #[error("variable '{name}' is not set (used in {used_in}); set it, or give a default with ${{{name}:-value}}")]
    MissingVariable {
        /// The variable.
        name: String,
        /// Where: `configs/db.yaml: connection.username` or `'orders.topic' in the WITH clause`.
        used_in: String,
    },
    /// `${VAR:?message}` with VAR unset.
    #[error("variable '{name}' is required (used in {used_in}): {message}")]
    RequiredVariable {
        /// The variable.
        name: String,
        /// Where it was used.
        used_in: String,
        /// The user's message.
        message: String,
    },
    /// A `${` without its `}`.
    #[error("unterminated '${{' in {used_in}: '{text}'")]
    Unterminated {
        /// Where.
        used_in: String,
        /// The value.
        text: String,
    },
    /// A config or extends file does not exist or cannot be read.
    #[error("cannot read {what} '{}' ({referenced_by}): {message}", path.display())]
    Unreadable {
        /// `config_file`, `extends` target, or `config file`.
        what: &'static str,
        /// The resolved path.
        path: PathBuf,
        /// Who named it (`'orders.config_file'`, `extends in configs/a.yaml`).
        referenced_by: String,
        /// The OS error.
        message: String,
    },
    /// A YAML syntax error.
    #[error("{}:{line}:{column}: YAML syntax error: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A value of the wrong type.
    #[error("{}:{line}: '{key}': {message}", path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key (0 when unknown).
        line: usize,
        /// The key.
        key: String,
        /// What was expected.
        message: String,
    },
    /// `extends` loops.
    #[error("extends cycle: {chain}")]
    Cycle {
        /// `a.yaml → b.yaml → a.yaml`.
        chain: String,
    },
    /// The selected profile does not exist.
    #[error("profile '{name}' is not defined in {}; profiles: {available}", path.display())]
    UnknownProfile {
        /// The profile asked for.
        name: String,
        /// The application config file.
        path: PathBuf,
        /// The profiles it defines.
        available: String,
    },
    /// A limit from the environment is malformed or exceeded.
    #[error("{0}")]
    Limit(String),
}
