//! The memory of our stateful operators' state (open windows, join buffers, unwindowed
//! `GROUP BY` tables, rows waiting for the watermark), accounted in DataFusion's memory pool, so
//! that `FERRIS_MAX_MEMORY_MB` and the job's `memory.limit_mb` bound it: over the limit the job
//! fails with a message naming the operator and the size of its state, never takes the machine
//! down.
//!
//! ```sql
//! SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id      -- a table that grows with the keys
//! WITH ('memory.limit_mb' = '512', …)
//! -- error: WindowAggregateExec (unwindowed GROUP BY): its state of 530.2 MiB does not fit the
//! --        job's memory limit (memory.limit_mb / FERRIS_MAX_MEMORY_MB) …
//! ```

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::TaskContext;

/// One operator's state in the job's memory pool.
#[derive(Debug)]
pub struct StateMemory {
    reservation: MemoryReservation,
    /// The operator, as the error names it.
    what: String,
    /// What makes its state smaller, said in the error.
    hint: &'static str,
}

impl StateMemory {
    /// Registers operator `what` (`WindowAggregateExec (TUMBLE)`) with the pool of `context`;
    /// `hint` says what would make its state smaller.
    pub fn new(context: &Arc<TaskContext>, what: impl Into<String>, hint: &'static str) -> Self {
        let what = what.into();
        let reservation = MemoryConsumer::new(what.clone()).register(context.memory_pool());
        Self { reservation, what, hint }
    }

    /// The state now holds `bytes`: grows or shrinks the reservation, or fails the job when the
    /// pool cannot give that much.
    pub fn account(&mut self, bytes: usize) -> Result<()> {
        // (DataFusion's own message lists the pool's consumers: too long for a job's error)
        self.reservation.try_resize(bytes).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "{}: its state of {:.1} MiB does not fit the job's memory limit (memory.limit_mb, or FERRIS_MAX_MEMORY_MB): {}; or raise the limit",
                self.what,
                bytes as f64 / (1u64 << 20) as f64,
                self.hint
            ))
        })
    }
}

/// `array` holding only its own bytes: a string or binary view taken out of a batch (`take`,
/// `slice`) still points into that batch's data buffers and keeps them alive; `gc` copies the
/// strings it shows out of them. A dictionary taken out of a batch keeps the batch's whole
/// dictionary: only the values its keys use are kept. Other arrays are returned as they are.
pub(crate) fn own_bytes(array: datafusion::arrow::array::ArrayRef) -> datafusion::arrow::array::ArrayRef {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    match array.data_type() {
        DataType::Utf8View => Arc::new(array.as_string_view().gc()),
        DataType::BinaryView => Arc::new(array.as_binary_view().gc()),
        DataType::Dictionary(..) => match array.as_any_dictionary_opt().map(arrow_select::dictionary::garbage_collect_any_dictionary) {
            Some(Ok(owned)) => match owned.as_any_dictionary_opt() {
                // (views among the values kept still point into the batch's buffers)
                Some(d) if matches!(d.values().data_type(), DataType::Utf8View | DataType::BinaryView) => d.with_values(own_bytes(Arc::clone(d.values()))),
                _ => owned,
            },
            _ => array,
        },
        _ => array,
    }
}

/// `batch` with its string and binary views and dictionaries holding only their own bytes
/// ([`own_bytes`]): rows an operator keeps then hold their own text, not the decoded pages or
/// the whole dictionary of the batch they came in. The batch as it is when it has none.
pub(crate) fn own_batch(batch: datafusion::arrow::array::RecordBatch) -> Result<datafusion::arrow::array::RecordBatch> {
    if !batch.columns().iter().any(|c| may_share_bytes(c.data_type())) {
        return Ok(batch);
    }
    let columns = batch.columns().iter().cloned().map(own_bytes).collect();
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(datafusion::arrow::array::RecordBatch::try_new_with_options(batch.schema(), columns, &options)?)
}

/// Whether [`own_bytes`] may give `array` a smaller copy (views and dictionaries).
pub(crate) fn may_share_bytes(data_type: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    matches!(data_type, DataType::Utf8View | DataType::BinaryView | DataType::Dictionary(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Rows kept out of a batch of views hold only their own text; a batch without views is
    /// handed back as it is.
    #[test]
    fn kept_rows_of_views_hold_their_own_text() {
        use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringViewArray};
        let text = StringViewArray::from_iter_values((0..10_000).map(|i| format!("{i:>40}")));
        let batch =
            RecordBatch::try_from_iter(vec![("s", Arc::new(text) as ArrayRef), ("n", Arc::new(Int64Array::from_iter_values(0..10_000)) as ArrayRef)]).unwrap();
        let keep = BooleanArray::from_iter((0..10_000).map(|i| Some(i % 100 == 0)));
        let few = datafusion::arrow::compute::filter_record_batch(&batch, &keep).unwrap();
        let held = |b: &RecordBatch| b.column(0).as_string_view().data_buffers().iter().map(|d| d.len()).sum::<usize>();
        let owned = own_batch(few.clone()).unwrap();
        assert!(held(&owned) * 50 < held(&few), "{} of {}", held(&owned), held(&few));
        assert_eq!(owned.column(0).as_string_view().iter().collect::<Vec<_>>(), few.column(0).as_string_view().iter().collect::<Vec<_>>());
        assert!(Arc::ptr_eq(owned.column(1), few.column(1)));
        let plain = RecordBatch::try_from_iter(vec![("n", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
        assert!(Arc::ptr_eq(own_batch(plain.clone()).unwrap().column(0), plain.column(0)));
        assert_eq!(owned.column(0).len(), 100);
    }

    #[test]
    fn state_over_the_limit_is_an_error_naming_the_operator_and_its_size() {
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(4 << 20, 1.0).build_arc().unwrap();
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime).task_ctx();
        let mut m = StateMemory::new(&ctx, "WindowAggregateExec (unwindowed GROUP BY)", "expire idle keys with state.ttl");
        m.account(3 << 20).unwrap();
        m.account(1 << 20).unwrap();
        let e = m.account(6 << 20).unwrap_err().to_string();
        assert!(e.contains("WindowAggregateExec (unwindowed GROUP BY): its state of 6.0 MiB does not fit"), "{e}");
        assert!(e.contains("state.ttl"), "{e}");
        // a second operator shares the pool
        let mut other = StateMemory::new(&ctx, "IntervalJoinExec", "a shorter WITHIN interval");
        other.account(2 << 20).unwrap();
        assert!(m.account(3 << 20).is_err(), "1 + 2 + 3 > 4 MiB");
    }
}
