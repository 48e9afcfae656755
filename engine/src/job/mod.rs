//! Jobs: what a statement reads, writes and how (the guide's QueryAnalyzer).
//!
//! ```sql
//! CREATE STREAM enriched AS SELECT * FROM orders o JOIN customers c ON o.cid = c.id
//! INTO archive WITH ('orders.type' = 'file_source', 'customers.type' = 'file_source',
//!                    'archive.type' = 'file_sink', 'failure_strategy' = 'LogAndContinue');
//! -- sources: orders, customers; sink: archive; job option: failure_strategy
//! ```

pub mod analysis;
pub mod spec;

pub use analysis::{analyze, analyze_sql, analyze_sql_with, analyze_with, AnalysisError};
pub use spec::{JobSpec, RelationSpec, JOB_KEYS};
