//! Operator state as Arrow data: each operator hands over a few record batches (open windows'
//! accumulator states, a join's buffered rows) and a little JSON (watermarks). A table is
//! written as one Arrow IPC file whose rows are grouped by *key group* — a fixed number of
//! hash ranges of the table's key columns, as Flink's maximum parallelism — one record batch
//! per key group, so that a later scale-out can hand each process its key groups without
//! rewriting the files.
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! -- table "panes": pane_start, user_id, count state — keyed by user_id, 128 key groups
//! ```

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::common::hash_utils::{create_hashes, RandomState};

use super::CheckpointError;

/// Key groups a keyed table is split into.
pub const KEY_GROUPS: u32 = 128;

/// An operator's state at a barrier.
#[derive(Debug, Clone, Default)]
pub struct OperatorState {
    /// Small values: watermarks, counters, positions in time.
    pub meta: serde_json::Value,
    /// Tables of rows.
    pub tables: Vec<StateTable>,
}

/// One table of an operator's state.
#[derive(Debug, Clone)]
pub struct StateTable {
    /// Its name within the operator (`panes`, `left`, …).
    pub name: String,
    /// The rows.
    pub batch: RecordBatch,
    /// Columns whose hash gives a row's key group (none: one group, 0).
    pub key_columns: Vec<usize>,
}

impl OperatorState {
    /// The table named `name`, if present.
    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|t| t.name == name).map(|t| &t.batch)
    }
}

/// `columns` restored from a checkpoint, as a batch of `schema` (an operator's rows); each
/// column as [`restored_column`] makes it.
pub fn restored_batch(schema: &SchemaRef, columns: &[ArrayRef]) -> datafusion::common::Result<RecordBatch> {
    let columns = &columns[..columns.len().min(schema.fields().len())];
    Ok(RecordBatch::try_new(Arc::clone(schema), restored_columns(columns, schema.fields().iter().map(|f| f.data_type()))?)?)
}

/// `columns` restored from a checkpoint, each as [`restored_column`] makes it for the type
/// `types` gives in its place; a column past the last type is returned as it is.
pub fn restored_columns<'a>(columns: &[ArrayRef], types: impl IntoIterator<Item = &'a DataType>) -> datafusion::common::Result<Vec<ArrayRef>> {
    let mut types = types.into_iter();
    columns.iter().map(|c| types.next().map_or_else(|| Ok(Arc::clone(c)), |t| restored_column(c, t))).collect()
}

/// A column restored from a checkpoint, as the operator holds it now (`to`): text or bytes
/// held otherwise then than now (`Utf8` then, `Utf8View` now: a Parquet source has handed its
/// text on as views since 2026-12-04) is cast; any other
/// column is returned as it is (the operator's own checks refuse what does not fit).
pub fn restored_column(column: &ArrayRef, to: &DataType) -> datafusion::common::Result<ArrayRef> {
    use datafusion::arrow::datatypes::DataType::{Binary, BinaryView, LargeBinary, LargeUtf8, Utf8, Utf8View};
    match (column.data_type(), to) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) | (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView)
            if column.data_type() != to =>
        {
            Ok(datafusion::arrow::compute::cast(column, to)?)
        }
        _ => Ok(Arc::clone(column)),
    }
}

fn state_err(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::State(e.to_string())
}

/// A record batch of `columns`, named `c0`, `c1`, … (state tables need no other names).
pub fn batch_of(columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch, CheckpointError> {
    let fields: Vec<Field> = columns.iter().enumerate().map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true)).collect();
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options).map_err(state_err)
}

/// The key group of each row of `batch`, by the hash of `key_columns`.
pub fn key_groups(batch: &RecordBatch, key_columns: &[usize]) -> Result<Vec<u32>, CheckpointError> {
    if key_columns.is_empty() {
        return Ok(vec![0; batch.num_rows()]);
    }
    let keys: Vec<ArrayRef> = key_columns.iter().map(|&i| Arc::clone(batch.column(i))).collect();
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes(&keys, &RandomState::with_seed(0x6b65_795f_6772_6f75), &mut hashes).map_err(state_err)?;
    Ok(hashes.into_iter().map(|h| (h % u64::from(KEY_GROUPS)) as u32).collect())
}

/// Encodes `table` as an Arrow IPC file, one record batch per key group present; returns the
/// file and the key group of each batch.
pub fn encode(table: &StateTable) -> Result<(Bytes, Vec<u16>), CheckpointError> {
    let batch = &table.batch;
    let groups = key_groups(batch, &table.key_columns)?;
    let mut buf = Vec::new();
    let mut order_of_groups = Vec::new();
    {
        let mut w = FileWriter::try_new(&mut buf, batch.schema_ref()).map_err(state_err)?;
        if !table.key_columns.is_empty() && batch.num_rows() > 0 {
            let g = UInt32Array::from(groups);
            let order = sort_to_indices(&g, None, None).map_err(state_err)?;
            let sorted = take_record_batch(batch, &order).map_err(state_err)?;
            let sorted_groups: Vec<u32> = order.values().iter().map(|&i| g.value(i as usize)).collect();
            let mut start = 0;
            while start < sorted_groups.len() {
                let group = sorted_groups[start];
                let end = sorted_groups[start..].iter().position(|&x| x != group).map_or(sorted_groups.len(), |n| start + n);
                w.write(&sorted.slice(start, end - start)).map_err(state_err)?;
                order_of_groups.push(group as u16);
                start = end;
            }
        } else if batch.num_rows() > 0 {
            w.write(batch).map_err(state_err)?;
            order_of_groups.push(0);
        }
        w.finish().map_err(state_err)?;
    }
    Ok((Bytes::from(buf), order_of_groups))
}

/// Decodes a table written by [`encode`]: every key group's rows, as one batch.
pub fn decode(bytes: Bytes) -> Result<RecordBatch, CheckpointError> {
    let reader = FileReader::try_new(Cursor::new(bytes), None).map_err(state_err)?;
    let schema: SchemaRef = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(state_err)?;
    concat_batches(&schema, &batches).map_err(state_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    /// Rows whose text a checkpoint holds as `Utf8` restore into an operator whose rows hold it
    /// as views (and back); a column of another type is still an error.
    #[test]
    fn text_held_otherwise_then_is_cast_on_restore() {
        use datafusion::arrow::array::{Array, AsArray};
        let then: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(vec![Some("a"), None, Some("a longer text than twelve bytes")])), Arc::new(Int64Array::from(vec![1, 2, 3]))];
        let now = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true), Field::new("n", DataType::Int64, false)]));
        let b = restored_batch(&now, &then).unwrap();
        let s = b.column(0).as_string_view();
        assert_eq!((s.value(0), s.is_null(1), s.value(2)), ("a", true, "a longer text than twelve bytes"));
        let back =
            restored_batch(&Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true), Field::new("n", DataType::Int64, false)])), b.columns()).unwrap();
        assert_eq!(back.column(0).as_string::<i32>().value(2), "a longer text than twelve bytes");
        let wrong = Arc::new(Schema::new(vec![Field::new("s", DataType::Int64, true), Field::new("n", DataType::Int64, false)]));
        assert!(restored_batch(&wrong, &then).is_err());
    }

    #[test]
    fn a_keyed_table_round_trips_grouped_by_key_group() {
        let keys = StringArray::from((0..1000).map(|i| format!("k{}", i % 37)).collect::<Vec<_>>());
        let vals = Int64Array::from((0..1000).collect::<Vec<i64>>());
        let batch = batch_of(vec![Arc::new(keys), Arc::new(vals)], 1000).unwrap();
        let table = StateTable { name: "t".into(), batch: batch.clone(), key_columns: vec![0] };
        let (bytes, groups) = encode(&table).unwrap();
        assert!(groups.windows(2).all(|w| w[0] < w[1]), "one batch per key group, in order: {groups:?}");
        assert!(groups.len() > 1 && groups.len() <= 37);
        let back = decode(bytes).unwrap();
        assert_eq!(back.num_rows(), 1000);
        // the same rows, whatever their order
        let mut want: Vec<i64> = (0..1000).collect();
        let mut got: Vec<i64> = back.column(1).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        // every row of a key group has the same key group
        let g = key_groups(&back, &[0]).unwrap();
        assert!(g.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn an_empty_table_round_trips() {
        let batch = batch_of(vec![Arc::new(Int64Array::from(Vec::<i64>::new()))], 0).unwrap();
        let (bytes, groups) = encode(&StateTable { name: "e".into(), batch, key_columns: vec![0] }).unwrap();
        assert!(groups.is_empty());
        assert_eq!(decode(bytes).unwrap().num_rows(), 0);
    }
}
