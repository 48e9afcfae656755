//! Column values as unsigned 64-bit numbers in the same ascending order, for sorts that
//! compare integers inline rather than through Arrow's comparators, one dynamic call per
//! comparison: top N per key (`BoundedTopNExec`) and session windows' (key, time) order.
//!
//! ```sql
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid) WHERE r <= 10;
//! SELECT bidder, COUNT(*) FROM bid GROUP BY SESSION(date_time, INTERVAL '10' SECOND), bidder;
//! ```

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};

/// The type a column of type `t` is ordered as: `Int64` for signed integers, dates, times,
/// timestamps and durations, `UInt64` for unsigned integers, `Float64` for floats; None for
/// other types.
pub(crate) fn order_class(t: &DataType) -> Option<DataType> {
    use DataType::*;
    let class = match t {
        Int8 | Int16 | Int32 | Int64 | Date32 | Date64 | Time32(_) | Time64(_) | Timestamp(_, _) | Duration(_) => Some(Int64),
        UInt8 | UInt16 | UInt32 | UInt64 => Some(UInt64),
        Float16 | Float32 | Float64 => Some(Float64),
        _ => None,
    };
    class.filter(|c| datafusion::arrow::compute::can_cast_types(t, c))
}

/// A signed number as an unsigned one in the same order (the sign bit flipped).
#[inline]
pub(crate) fn signed_bits(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// The values of a column of an order class (see [`order_class`]) as unsigned numbers in the
/// same order: signed ones with the sign bit flipped, floats by their total order; a null's
/// slot gives whatever value it holds. None for a column of another type.
pub(crate) fn ordered_bits(values: &dyn Array) -> Option<Box<dyn Iterator<Item = u64> + '_>> {
    Some(match values.data_type() {
        DataType::Int64 => Box::new(values.as_primitive::<Int64Type>().values().iter().map(|&v| signed_bits(v))),
        DataType::UInt64 => Box::new(values.as_primitive::<UInt64Type>().values().iter().copied()),
        DataType::Float64 => Box::new(values.as_primitive::<Float64Type>().values().iter().map(|v| {
            let b = v.to_bits();
            if b >> 63 == 1 {
                !b
            } else {
                b | (1 << 63)
            }
        })),
        _ => return None,
    })
}
