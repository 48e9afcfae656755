//! The engine's error type.

use ferris_connectors::ConnectorError;

use crate::job::AnalysisError;

/// Everything the engine reports to a user, saying what, where and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL does not parse, or a statement cannot become a job.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// A source could not be created (the guide's wording).
    #[error("Job '{job}' failed to create data sources: Failed to create source '{source_name}': {error}")]
    Source {
        /// The job.
        job: String,
        /// The source.
        source_name: String,
        /// Why.
        error: ConnectorError,
    },
    /// A sink could not be created.
    #[error("Job '{job}' failed to create sinks: Failed to create sink '{sink}': {error}")]
    Sink {
        /// The job.
        job: String,
        /// The sink.
        sink: String,
        /// Why.
        error: ConnectorError,
    },
    /// DataFusion could not plan or run the query.
    #[error("job '{job}': {error}")]
    Plan {
        /// The job.
        job: String,
        /// DataFusion's explanation.
        error: datafusion::error::DataFusionError,
    },
    /// The job failed while running.
    #[error("Job '{job}' failed: {message}")]
    Failed {
        /// The job.
        job: String,
        /// Why.
        message: String,
    },
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Unwraps DataFusion's wrapping of our connector errors, so a user sees the file and line.
pub fn describe_datafusion_error(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError as D;
    match e {
        D::External(inner) => inner.to_string(),
        D::Context(ctx, inner) => format!("{ctx}: {}", describe_datafusion_error(inner)),
        D::Shared(inner) => describe_datafusion_error(inner),
        D::ArrowError(inner, _) => inner.to_string(),
        other => other.to_string(),
    }
}
