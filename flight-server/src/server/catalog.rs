//! The server's Flight SQL catalogue: one DataFusion context holding a table per job (its
//! latest results, read from the job's live stream) and the bounded tables jobs read (files,
//! Parquet on disk), so an analyst can join live results with history in one query. File
//! paths can also be queried directly (`SELECT * FROM 'data/history.parquet'`): any file the
//! server can read, so keep the server on 127.0.0.1 or behind `FERRIS_AUTH_TOKEN`. A job with
//! `EMIT CHANGES` has its changelog as table (rows with `_op`), not a folded result.
//!
//! ```sql
//! -- over Flight SQL, while the job big_orders runs
//! SELECT b.customer_id, c.name, b.amount FROM big_orders b JOIN customers c USING (customer_id)
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;
use ferris_connectors::flight::hub;
use ferris_engine::connect::create_source;
use ferris_engine::job::JobSpec;
use ferris_engine::planner::source_table::SourceTable;
use tracing::{debug, warn};

/// A job's latest results: the rows its live stream retains, read when a query scans it.
#[derive(Debug)]
pub struct LiveTable {
    stream: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = hub().get(&self.stream).map(|s| s.snapshot()).unwrap_or_default();
        Ok(MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.schema), projection.cloned())?)
    }
}

/// The catalogue and which job brought each table.
pub struct Catalog {
    ctx: SessionContext,
    owners: Mutex<BTreeMap<String, String>>,
}

impl Catalog {
    /// An empty catalogue; file paths are readable as tables. With `memory_mb`
    /// (`FERRIS_MAX_MEMORY_MB`) a query that would need more fails with RESOURCE_EXHAUSTED
    /// instead of taking the server's memory.
    pub fn new(memory_mb: Option<usize>) -> Result<Self, String> {
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(mb) = memory_mb {
            runtime = runtime.with_memory_limit(mb.saturating_mul(1 << 20), 1.0);
        }
        let runtime = runtime.build_arc().map_err(|e| format!("the Flight SQL catalogue: {e}"))?;
        let ctx = SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), runtime).enable_url_table();
        Ok(Self { ctx, owners: Mutex::new(BTreeMap::new()) })
    }

    fn owners(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds job `spec`'s table (its live stream `stream`, `schema` its output; named after the
    /// stream) and each bounded table it reads, unless a table of that name is there already.
    pub fn add_job(&self, spec: &JobSpec, stream: &str, schema: SchemaRef) {
        let job = &spec.name;
        // the rows reach the stream through its sink, as plain text
        let schema = ferris_connectors::text_views::plain_schema(&schema).unwrap_or(schema);
        let mut owners = self.owners();
        if let Some(owner) = owners.get(stream).filter(|o| *o != job) {
            warn!(job = %job, "the Flight SQL catalogue already has a table '{stream}' (from job '{owner}'); this job's results are not added");
            return;
        }
        // The job's own table replaces a table of the same name (a redeployed job).
        let _ = self.ctx.deregister_table(stream);
        match self.ctx.register_table(stream, Arc::new(LiveTable { stream: stream.to_string(), schema })) {
            Ok(_) => {
                owners.insert(stream.to_string(), job.clone());
            }
            Err(e) => warn!(job = %job, "cannot add the job's table to the Flight SQL catalogue: {e}"),
        }
        let partitions = std::thread::available_parallelism().map_or(2, |n| n.get());
        for rel in &spec.sources {
            if owners.contains_key(&rel.name) || rel.connector.kind != ferris_connectors::ConnectorKind::File {
                continue;
            }
            // Its own source: queries must not count as the job's input.
            match create_source(rel, &spec.options, partitions, job) {
                Ok(source) if source.is_bounded() => {
                    if let Err(e) = self.ctx.register_table(rel.name.as_str(), Arc::new(SourceTable::new(source))) {
                        warn!(job = %job, table = %rel.name, "cannot add table to the Flight SQL catalogue: {e}");
                    } else {
                        debug!(job = %job, table = %rel.name, "table added to the Flight SQL catalogue");
                        owners.insert(rel.name.clone(), job.clone());
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(job = %job, table = %rel.name, "cannot add table to the Flight SQL catalogue: {e}"),
            }
        }
    }

    /// Removes the tables job `name` brought.
    pub fn remove_job(&self, name: &str) {
        let mut owners = self.owners();
        let tables: Vec<String> = owners.iter().filter(|(_, j)| j.as_str() == name).map(|(t, _)| t.clone()).collect();
        for t in tables {
            let _ = self.ctx.deregister_table(t.as_str());
            owners.remove(&t);
        }
    }

    /// Table names, sorted.
    pub fn tables(&self) -> Vec<String> {
        self.owners().keys().cloned().collect()
    }

    /// The schema of table `name`, if there is one.
    pub async fn table_schema(&self, name: &str) -> Option<SchemaRef> {
        self.ctx.table_provider(name).await.ok().map(|t| t.schema())
    }

    /// Plans a read-only query (no DDL, DML or `SET`).
    pub async fn plan(&self, sql: &str) -> DfResult<DataFrame> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        self.ctx.sql_with_options(sql, options).await
    }
}
