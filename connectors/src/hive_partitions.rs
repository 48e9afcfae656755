//! Hive-style partition directories from row values (`dt=2024-01-05/hm=10:30/`), shared by
//! the sinks that lay files out by them (`file_sink`, `s3_sink`: `partition_columns`).
//!
//! ```sql
//! SELECT auction, price, DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt FROM bid
//! INTO out WITH ('out.type' = 'file_sink', 'out.path' = 'bids/part.jsonl', 'out.partition_columns' = 'dt')
//! -- bids/dt=2024-01-05/part.jsonl, without the dt column
//! ```

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::compute::SortColumn;
use arrow::datatypes::Schema;

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// The column names of a schema, for errors.
pub fn field_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

/// Checks that every partition column is in `schema`; the error names `props`' key.
pub fn check_columns(columns: &[String], schema: &Schema, props: &Properties) -> Result<()> {
    for c in columns {
        if schema.index_of(c).is_err() {
            return Err(ConnectorError::invalid(props.full_key("partition_columns"), format!("no column '{c}' in the output ({})", field_names(schema))));
        }
    }
    Ok(())
}

/// Splits `batch` by the values of `columns`: (Hive directory ending in `/`, the rows without
/// those columns), one entry per distinct combination. No columns: the batch whole, under `""`.
/// A NULL value is `__HIVE_DEFAULT_PARTITION__`, a `/` in a value `%2F`.
pub fn split(batch: &RecordBatch, columns: &[String], props: &Properties, sink: &str) -> Result<Vec<(String, RecordBatch)>> {
    if columns.is_empty() {
        return Ok(vec![(String::new(), batch.clone())]);
    }
    let schema = batch.schema();
    check_columns(columns, &schema, props)?;
    let idx: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let arrow_err = |e| ConnectorError::arrow(sink, e);
    let keep: Vec<usize> = (0..schema.fields().len()).filter(|i| !idx.contains(i)).collect();
    // the directory of row `row` of the partition columns `keys`
    let dir_of = |keys: &[&arrow::array::ArrayRef], row: usize| -> Result<String> {
        let mut dir = String::new();
        for (c, k) in columns.iter().zip(keys) {
            dir.push_str(&format!("{c}={}/", hive_value(k, row, sink)?));
        }
        Ok(dir)
    };
    // rows in time order mostly share their directory: no sort then (a type the equality kernel
    // does not compare goes to the sort)
    let uniform = batch.num_rows() > 0
        && idx.iter().all(|&i| {
            let col = batch.column(i);
            match col.null_count() {
                0 => arrow::compute::kernels::cmp::not_distinct(col, &arrow::array::Scalar::new(col.slice(0, 1)))
                    .is_ok_and(|same| same.true_count() == col.len()),
                n => n == col.len(),
            }
        });
    if uniform {
        let keys: Vec<&arrow::array::ArrayRef> = idx.iter().map(|&i| batch.column(i)).collect();
        return Ok(vec![(dir_of(&keys, 0)?, batch.project(&keep).map_err(arrow_err)?)]);
    }
    let sort: Vec<SortColumn> = idx.iter().map(|i| SortColumn { values: Arc::clone(batch.column(*i)), options: None }).collect();
    let order = arrow::compute::lexsort_to_indices(&sort, None).map_err(arrow_err)?;
    let sorted = arrow::compute::take_record_batch(batch, &order).map_err(arrow_err)?;
    let keys: Vec<&arrow::array::ArrayRef> = idx.iter().map(|&i| sorted.column(i)).collect();
    let ranges = arrow::compute::partition(&keys.iter().map(|k| Arc::clone(k)).collect::<Vec<_>>()).map_err(arrow_err)?;
    let data = sorted.project(&keep).map_err(arrow_err)?;
    let mut out = Vec::new();
    for r in ranges.ranges() {
        out.push((dir_of(&keys, r.start)?, data.slice(r.start, r.end - r.start)));
    }
    Ok(out)
}

/// The directory name of row `row`'s value in `column`.
fn hive_value(column: &arrow::array::ArrayRef, row: usize, sink: &str) -> Result<String> {
    if column.is_null(row) {
        return Ok("__HIVE_DEFAULT_PARTITION__".to_string());
    }
    Ok(arrow::util::display::array_value_to_string(column, row).map_err(|e| ConnectorError::arrow(sink, e))?.replace('/', "%2F"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn rows_split_by_their_values() {
        let schema = Arc::new(Schema::new(vec![Field::new("dt", DataType::Utf8, true), Field::new("v", DataType::Int64, false)]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("b"), Some("a"), None, Some("a/x"), Some("b")])), Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]))],
        )
        .unwrap();
        let props = Properties::new("out");
        let parts = split(&b, &["dt".to_string()], &props, "out").unwrap();
        let got: Vec<(String, usize, usize)> = parts.iter().map(|(d, r)| (d.clone(), r.num_rows(), r.num_columns())).collect();
        assert_eq!(
            got,
            vec![
                ("dt=__HIVE_DEFAULT_PARTITION__/".to_string(), 1, 1),
                ("dt=a/".to_string(), 1, 1),
                ("dt=a%2Fx/".to_string(), 1, 1),
                ("dt=b/".to_string(), 2, 1)
            ]
        );
        // one directory: the batch whole, without the column
        let one = b.slice(0, 1);
        let parts = split(&one, &["dt".to_string()], &props, "out").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].0.as_str(), parts[0].1.num_rows(), parts[0].1.num_columns()), ("dt=b/", 1, 1));
        let nulls = b.slice(2, 1);
        assert_eq!(split(&nulls, &["dt".to_string()], &props, "out").unwrap()[0].0, "dt=__HIVE_DEFAULT_PARTITION__/");
        let err = split(&b, &["day".to_string()], &props, "out").unwrap_err().to_string();
        assert!(err.contains("out.partition_columns") && err.contains("no column 'day'"), "{err}");
    }
}
