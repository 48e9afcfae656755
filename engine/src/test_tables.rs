//! Test helpers shared by the operators' differential tests: in-memory tables in two
//! partitions, and a query's rows (sorted, header first) with its physical plan, to compare an
//! operator of ours with DataFusion's own plan for the same SQL.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;

/// `rows` rows of `schema` made by `column(field, rows)`, in two partitions of batches of 300.
pub(crate) fn table(schema: Schema, rows: usize, column: impl Fn(&Field, std::ops::Range<usize>) -> ArrayRef) -> Arc<MemTable> {
    let schema = Arc::new(schema);
    let batch = |r: std::ops::Range<usize>| RecordBatch::try_new(Arc::clone(&schema), schema.fields().iter().map(|f| column(f, r.clone())).collect()).unwrap();
    let half = rows / 2;
    let parts: Vec<Vec<RecordBatch>> =
        [0..half, half..rows].into_iter().map(|p| p.clone().step_by(300).map(|b| batch(b..(b + 300).min(p.end))).collect()).collect();
    Arc::new(MemTable::try_new(schema, parts).unwrap())
}

/// The rows of `sql` in `ctx`, as pretty-printed lines (the header first, the rows sorted),
/// and its physical plan, indented.
pub(crate) async fn rows_and_plan(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string();
    let mut rows: Vec<String> = text.lines().filter(|l| l.starts_with("| ")).map(str::to_string).collect();
    if !rows.is_empty() {
        rows[1..].sort();
    }
    (rows, shown)
}
