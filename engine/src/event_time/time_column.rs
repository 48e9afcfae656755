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
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::{plan_err, DataFusionError, Result};
use ferris_connectors::format::iso_time::read_text_column;
#[cfg(test)]
use ferris_connectors::format::iso_time::{in_unit, IsoTimes};

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
        // the common ISO-8601 shape read directly (a fifth of a JSON-fed windowed query's time
        // went to arrow's general parser), any other column by arrow's cast
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => match read_text_column::<Int64Type>(array, TimeUnit::Millisecond) {
            Some(ms) => Arc::new(ms),
            None => cast_strings(array)?,
        },
        other => return plan_err!("event time of type {other} is not a time"),
    };
    let ms = out.as_any().downcast_ref::<Int64Array>().cloned().ok_or_else(|| DataFusionError::Internal("event time did not convert to Int64".into()))?;
    // times beyond ±2^61 ms (73 million years) are not times: null, so window arithmetic
    // never overflows
    if all_within_bits(ms.values()) {
        return Ok(ms);
    }
    let within = |t: Option<i64>| t.is_none_or(|t| t.unsigned_abs() <= MAX_ABS_MILLIS);
    if within(datafusion::arrow::compute::min(&ms)) && within(datafusion::arrow::compute::max(&ms)) {
        return Ok(ms);
    }
    Ok(ms.unary_opt(|t| (t.unsigned_abs() <= MAX_ABS_MILLIS).then_some(t)))
}

/// True when every value is in `[-2^61, 2^61)` (bits 63, 62 and 61 of each alike), found in one
/// pass of shifts and ORs that vectorises on any x86-64 — arrow's `min` and `max` of 64-bit
/// integers are two passes of emulated compares there (6% of a windowed query's samples). Slots
/// under nulls count too, so `false` only means "look closer".
fn all_within_bits(values: &[i64]) -> bool {
    let mixed = values.iter().fold(0u64, |acc, &v| {
        let v = v as u64;
        acc | (v ^ (v << 1))
    });
    mixed >> 62 == 0
}

/// Arrow's string → timestamp cast (every form it reads; unreadable strings become null).
fn cast_strings(array: &ArrayRef) -> Result<ArrayRef> {
    let opts = datafusion::arrow::compute::CastOptions { safe: true, ..Default::default() };
    let ts = datafusion::arrow::compute::cast_with_options(array, &DataType::Timestamp(TimeUnit::Millisecond, None), &opts)?;
    Ok(cast(&ts, &DataType::Int64)?)
}

/// `YYYY-MM-DD[T| ]HH:MM:SS[.f…][Z]` as milliseconds since the epoch; `None` for anything
/// else. (One string as `read_text_column` reads each, for the tests.)
#[cfg(test)]
fn iso_millis(b: &[u8]) -> Option<i64> {
    let (secs, nanos) = IsoTimes::default().read(b)?;
    in_unit(secs, nanos, TimeUnit::Millisecond)
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
        // beyond ±2^61 ms: no time (null), the times within kept, whichever end is beyond
        let limit = 1i64 << 61;
        for (ints, want) in [
            (vec![Some(limit), Some(-limit), None], vec![Some(limit), Some(-limit), None]),
            (vec![Some(limit + 1), Some(3)], vec![None, Some(3)]),
            (vec![Some(3), Some(-limit - 1)], vec![Some(3), None]),
            (vec![Some(limit + 1), Some(-limit - 1)], vec![None, None]),
        ] {
            let ints: ArrayRef = Arc::new(Int64Array::from(ints));
            assert_eq!(to_epoch_millis(&ints, 1).unwrap(), Int64Array::from(want));
        }
    }

    /// The one-pass bit check never calls a value within that is not, and passes every value
    /// of `[-2^61, 2^61)`: values at and around the limits, alone and among others.
    #[test]
    fn the_bit_check_is_never_wrong_and_passes_the_usual_range() {
        let limit = 1i64 << 61;
        let edges = [0, 1, -1, limit - 1, limit, limit + 1, -limit, -limit + 1, -limit - 1, i64::MAX, i64::MIN, 1 << 62, -(1 << 62), 1_764_979_200_000];
        for &a in &edges {
            for &b in &edges {
                let values = [5, a, -7, b];
                let exact = values.iter().all(|v| v.unsigned_abs() <= MAX_ABS_MILLIS);
                let usual = values.iter().all(|v| (-limit..limit).contains(v));
                assert_eq!(all_within_bits(&values), usual, "{a} {b}");
                assert!(!usual || exact, "{a} {b}");
            }
        }
        assert!(all_within_bits(&[]));
    }

    /// The direct reading of `YYYY-MM-DD HH:MM:SS.fff` gives arrow's answer for every string,
    /// across leap years, centuries, dates before 1970 and invalid dates.
    #[test]
    fn the_fast_iso_path_agrees_with_arrow() {
        let mut strings = vec![
            "2026-11-27T03:37:57.114".to_string(),
            "2026-11-27 03:37:57".into(),
            "1969-12-31T23:59:59.999Z".into(),
            "1900-02-28T12:00:00.5".into(),
            "2000-02-29T00:00:00.123456789".into(),
            "0001-01-01T00:00:00".into(),
            "9999-12-31T23:59:59.999".into(),
        ];
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = seed >> 16;
            let sep = if r.is_multiple_of(2) { 'T' } else { ' ' };
            let frac = ["", ".1", ".12", ".123", ".1234", ".000001"][(r % 6) as usize];
            let zone = if r.is_multiple_of(5) { "Z" } else { "" };
            strings.push(format!(
                "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{frac}{zone}",
                1 + r % 3000,
                1 + (r >> 12) % 12,
                1 + (r >> 16) % 31,
                (r >> 21) % 24,
                (r >> 26) % 60,
                (r >> 32) % 60
            ));
        }
        for s in &strings {
            let fast = iso_millis(s.as_bytes());
            let arrow = cast_strings(&(Arc::new(StringArray::from(vec![s.as_str()])) as ArrayRef)).unwrap();
            let arrow = arrow.as_any().downcast_ref::<Int64Array>().unwrap();
            match fast {
                Some(ms) => assert_eq!(Some(ms), arrow.iter().next().flatten(), "{s}"),
                None => assert!(arrow.is_null(0), "{s}: arrow reads it, the fast path must too"),
            }
        }
        // valid times as one array, most sharing their minute with the one before (the
        // minute read once): each as arrow reads it
        let mut runs: Vec<String> = Vec::new();
        for s in strings.iter().filter(|s| iso_millis(s.as_bytes()).is_some()).take(2000) {
            runs.push(s.clone());
            for tail in ["00", "59.999", "07.5Z", "07.123456789", "01"] {
                runs.push(format!("{}{tail}", &s[..17]));
            }
        }
        let all: ArrayRef = Arc::new(StringArray::from_iter_values(runs.iter()));
        let arrow = cast_strings(&all).unwrap();
        let fast = read_text_column::<Int64Type>(all.as_ref(), TimeUnit::Millisecond).expect("every one read");
        assert_eq!(Some(&fast), arrow.as_any().downcast_ref::<Int64Array>());
        // a string after the same minute but not read: the fast path declines the array
        for tail in ["60", "5", "07.", "07+01:00", "07.1234567890", "", "07Z "] {
            let pair: ArrayRef = Arc::new(StringArray::from_iter_values(["2026-11-27T03:37:57.114".to_string(), format!("2026-11-27T03:37:{tail}")]));
            assert_eq!(read_text_column::<Int64Type>(pair.as_ref(), TimeUnit::Millisecond), None, "{tail}");
        }
        let shared = ["2026-11-27T03:37:57.114", "2026-11-27T03:37:58", "2026-11-27T03:38:00.5Z", "2026-11-27T03:37:59.999"];
        let shared: ArrayRef = Arc::new(StringArray::from_iter_values(shared));
        assert_eq!(to_epoch_millis(&shared, 1).unwrap(), Int64Array::from(vec![1_795_750_677_114, 1_795_750_678_000, 1_795_750_680_500, 1_795_750_679_999]));
        // another shape anywhere in the batch: arrow's parser for all of it
        let mixed: ArrayRef = Arc::new(StringArray::from(vec![Some("2026-01-01T00:00:00"), Some("2026-01-01T01:00:00+01:00"), None]));
        assert_eq!(to_epoch_millis(&mixed, 1).unwrap(), Int64Array::from(vec![Some(1_767_225_600_000), Some(1_767_225_600_000), None]));
    }
}
