//! Talking to a service before the job's runtime reads anything (an S3 listing, a database's
//! schema, a sink's access check), from a constructor that may be called from async code or
//! not.
//!
//! ```sql
//! WITH ('customers.type' = 'database_source', 'customers.table' = 'customers')  -- schema read here, at planning
//! ```

use crate::error::{ConnectorError, Result};

/// Runs `f` on a runtime of its own, in a thread of its own, so that it works from any caller,
/// async or not; `what` names the service in errors (`s3`, `postgres`).
pub(crate) fn on_own_runtime<T: Send>(what: &str, f: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    let blocking = || {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ConnectorError::Other(format!("{what}: cannot start a runtime: {e}")))?;
                rt.block_on(f)
            })
            .join()
            .unwrap_or_else(|_| Err(ConnectorError::Other(format!("{what}: the thread talking to the service at start panicked"))))
        })
    };
    // called from the planner's async code: tell the runtime this worker blocks meanwhile
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(blocking),
        _ => blocking(),
    }
}

/// Runs a source partition's reader `fut` on a task of its own; if it panics (a bug, or a
/// library failing on odd input), the partition's stream gets an error naming `what` instead of
/// ending quietly as if the source had no more rows.
pub(crate) fn spawn_reader<T: Send + 'static>(
    what: String,
    tx: tokio::sync::mpsc::Sender<datafusion::error::Result<T>>,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use futures::FutureExt;
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            let _ = tx.send(Err(datafusion::error::DataFusionError::Execution(format!("{what}: the reader failed unexpectedly: {why}")))).await;
        }
    });
}
