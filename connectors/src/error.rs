//! The connectors' error type.

use std::path::PathBuf;

/// Everything that can go wrong in a source or a sink. Messages name the file, line, key or
/// record so that a user can find the problem without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A property is missing or has a value the connector cannot use.
    #[error("invalid value for '{key}': {message}")]
    InvalidProperty {
        /// The full key as the user wrote it (`orders.format`).
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A required property is absent.
    #[error("missing required property '{key}'")]
    MissingProperty {
        /// The full key the user must set (`orders.path`).
        key: String,
    },
    /// A file or directory could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A glob matched nothing, or the path does not exist.
    #[error("no file matches '{pattern}'")]
    NoFiles {
        /// The path or glob as configured.
        pattern: String,
    },
    /// A record could not be decoded.
    #[error("{location}: malformed record: {message}")]
    Malformed {
        /// `file:line` or `topic/partition@offset`.
        location: String,
        /// The decoder's explanation.
        message: String,
    },
    /// Arrow failed to read, convert or write data.
    #[error("{context}: {source}")]
    Arrow {
        /// Which file or sink was being processed.
        context: String,
        /// The underlying arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Parquet failed to read or write data.
    #[error("{context}: {source}")]
    Parquet {
        /// Which file was being processed.
        context: String,
        /// The underlying parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The connector type is known but cannot run in this build yet.
    #[error("{type_name} '{name}' is not supported yet")]
    NotSupported {
        /// The configured type (`kafka_source`).
        type_name: String,
        /// The source or sink name.
        name: String,
    },
    /// Only part of a batch could be written (requests of an HTTP sink refused one by one): the
    /// rest was, and a retry of the same batch writes only what failed.
    #[error("{message}")]
    PartialWrite {
        /// Rows not written.
        failed_rows: usize,
        /// What failed, naming the sink and the first refusal.
        message: String,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Wraps an arrow error with a context string.
    pub fn arrow(context: impl Into<String>, source: arrow::error::ArrowError) -> Self {
        Self::Arrow { context: context.into(), source }
    }

    /// An invalid-property error.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidProperty { key: key.into(), message: message.into() }
    }
}

/// Result type of the connectors crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
