//! `TUMBLE`, `HOP` and `SESSION`: the window functions of `GROUP BY`. Each names a window of a
//! row's event time; its value is a struct of `window_start` and `window_end` (timestamps in
//! milliseconds), which the query selects as `window_start` and `window_end`.
//!
//! ```sql
//! SELECT window_start, window_end, user_id, COUNT(*) AS clicks
//! FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! -- HOP(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE): slide, then size
//! -- SESSION(ts, INTERVAL '30' SECOND): a new window after 30 s without a row of the group
//! ```
//!
//! The windowed aggregate operator ([`super::aggregate_exec::WindowAggregateExec`]) assigns rows
//! to windows itself; evaluated as a plain function `TUMBLE` gives the row's window, while `HOP`
//! and `SESSION` (a row may fall in several windows, or a window depends on other rows) are only
//! meaningful in `GROUP BY`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StructArray, TimestampMillisecondArray};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::event_time::time_column::{check_time_type, to_epoch_millis};

/// Which window function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFunction {
    /// `TUMBLE(time, size)`
    Tumble,
    /// `HOP(time, slide, size)`
    Hop,
    /// `SESSION(time, gap)`
    Session,
}

impl WindowFunction {
    /// The SQL name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tumble => "tumble",
            Self::Hop => "hop",
            Self::Session => "session",
        }
    }

    /// The function for a name, any case.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tumble" => Some(Self::Tumble),
            "hop" => Some(Self::Hop),
            "session" => Some(Self::Session),
            _ => None,
        }
    }

    fn arity(self) -> usize {
        match self {
            Self::Hop => 3,
            _ => 2,
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Self::Tumble => "TUMBLE(time_column, INTERVAL '1' MINUTE)",
            Self::Hop => "HOP(time_column, INTERVAL '10' SECOND, INTERVAL '1' MINUTE) (slide, then size)",
            Self::Session => "SESSION(time_column, INTERVAL '30' SECOND)",
        }
    }
}

/// The type of a window value: `STRUCT<window_start TIMESTAMP(ms), window_end TIMESTAMP(ms)>`.
pub fn window_type() -> DataType {
    DataType::Struct(window_fields())
}

fn window_fields() -> Fields {
    Fields::from(vec![
        Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("window_end", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ])
}

/// A column of windows from their bounds in epoch milliseconds.
pub fn window_array(starts: impl Into<ScalarBuffer<i64>>, ends: impl Into<ScalarBuffer<i64>>) -> ArrayRef {
    let start: ArrayRef = Arc::new(TimestampMillisecondArray::new(starts.into(), None));
    let end: ArrayRef = Arc::new(TimestampMillisecondArray::new(ends.into(), None));
    Arc::new(StructArray::new(window_fields(), vec![start, end], None))
}

/// The length of an interval literal in milliseconds; months and years are refused (their
/// length varies), as are lengths of zero or less.
pub fn interval_millis(value: &ScalarValue, what: &str) -> Result<i64> {
    let ms = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return plan_err!("{what} must be a fixed length: months and years vary, use days");
            }
            i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds),
        ScalarValue::IntervalYearMonth(Some(_)) => return plan_err!("{what} must be a fixed length: months and years vary, use days"),
        other => return plan_err!("{what} must be an interval such as INTERVAL '1' MINUTE, found {other}"),
    };
    if ms <= 0 {
        return plan_err!("{what} must be longer than zero");
    }
    Ok(ms)
}

/// The scalar UDF behind `TUMBLE`, `HOP` and `SESSION`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowUdf {
    kind: WindowFunction,
    signature: Signature,
}

impl WindowUdf {
    /// The UDF for `kind`.
    pub fn new(kind: WindowFunction) -> Self {
        Self { kind, signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() != self.kind.arity() {
            return plan_err!("{} takes {} arguments: {}", self.kind.name().to_uppercase(), self.kind.arity(), self.kind.usage());
        }
        check_time_type(&arg_types[0], &format!("the time argument of {}", self.kind.name().to_uppercase()))?;
        for t in &arg_types[1..] {
            if !matches!(t, DataType::Interval(_)) {
                return plan_err!("{} needs intervals after the time column: {}", self.kind.name().to_uppercase(), self.kind.usage());
            }
        }
        Ok(window_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.kind != WindowFunction::Tumble {
            return exec_err!("{} can only be used in GROUP BY", self.kind.name().to_uppercase());
        }
        let ColumnarValue::Scalar(size) = &args.args[1] else {
            return exec_err!("TUMBLE's size must be a constant interval");
        };
        let size = interval_millis(size, "the TUMBLE size")?;
        let times = args.args[0].to_array(args.number_rows)?;
        let ms = to_epoch_millis(&times, 1)?;
        let starts = super::aggregate_exec::window_starts(ms.values(), size);
        let ends: Vec<i64> = starts.iter().map(|s| s + size).collect();
        Ok(ColumnarValue::Array(window_array(starts, ends)))
    }
}

/// Registers `TUMBLE`, `HOP` and `SESSION`.
pub fn register(ctx: &SessionContext) {
    for kind in [WindowFunction::Tumble, WindowFunction::Hop, WindowFunction::Session] {
        ctx.register_udf(ScalarUDF::from(WindowUdf::new(kind)));
    }
}
