//! Turns an event-time column into epoch milliseconds, vectorised: timestamps of any unit,
//! dates, integers (epoch milliseconds, or seconds with `event_time.format = 'epoch_seconds'`)
//! and ISO-8601 strings.
//!
//! ```sql
//! WITH ('clicks.event_time' = 'ts', 'clicks.event_time.format' = 'epoch_seconds')
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, DataFusionError, Result};

const MAX_ABS_MILLIS: u64 = 1 << 61;

/// Whether `dt` can be read as an event time.
pub fn is_time_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(..)
            | DataType::Date32
            | DataType::Date64
            | DataType::Int64
            | DataType::Int32
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

/// Checks that `dt` can be an event time, naming `what` in the error.
pub fn check_time_type(dt: &DataType, what: &str) -> Result<()> {
    if is_time_type(dt) {
        Ok(())
    } else {
        plan_err!("{what} has type {dt}, which is not a time (a timestamp, a date, epoch milliseconds or an ISO-8601 string)")
    }
}

/// The event times of `array` in milliseconds since the epoch. Integers are multiplied by
/// `int_scale` (1 for epoch milliseconds, 1000 for epoch seconds). Nulls stay null, as do
/// strings that are not timestamps.
pub fn to_epoch_millis(array: &ArrayRef, int_scale: i64) -> Result<Int64Array> {
    let out: ArrayRef = match array.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let ms = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            cast(&ms, &DataType::Int64)?
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
            let v = cast(array, &DataType::Int64)?;
            if int_scale == 1 {
                v
            } else {
                // an overflowing value becomes null (no event time), not a failed job
                let ints = v.as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
                Arc::new(ints.unary_opt::<_, datafusion::arrow::datatypes::Int64Type>(|t| t.checked_mul(int_scale)))
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let opts = datafusion::arrow::compute::CastOptions { safe: true, ..Default::default() };
            let ts = datafusion::arrow::compute::cast_with_options(array, &DataType::Timestamp(TimeUnit::Millisecond, None), &opts)?;
            cast(&ts, &DataType::Int64)?
        }
        other => return plan_err!("event time of type {other} is not a time"),
    };
    let ms = out
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("event time did not convert to Int64".into()))?;
    // times beyond ±2^61 ms (73 million years) are not times: null, so window arithmetic
    // never overflows
    if ms.iter().flatten().all(|t| t.unsigned_abs() <= MAX_ABS_MILLIS) {
        return Ok(ms);
    }
    Ok(ms.unary_opt(|t| (t.unsigned_abs() <= MAX_ABS_MILLIS).then_some(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampSecondArray};

    #[test]
    fn converts_every_time_type() {
        let secs: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(1), None]));
        assert_eq!(to_epoch_millis(&secs, 1).unwrap(), Int64Array::from(vec![Some(1000), None]));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![5, 7]));
        assert_eq!(to_epoch_millis(&ints, 1000).unwrap(), Int64Array::from(vec![5000, 7000]));
        let iso: ArrayRef = Arc::new(StringArray::from(vec![Some("1970-01-01T00:00:02Z"), Some("nonsense")]));
        assert_eq!(to_epoch_millis(&iso, 1).unwrap(), Int64Array::from(vec![Some(2000), None]));
    }
}
