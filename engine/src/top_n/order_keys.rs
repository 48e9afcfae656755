//! The `ORDER BY` place of each row [`BoundedTopNExec`](super::BoundedTopNExec) keeps, as a
//! key compared inline: one or two columns of numbers and times as unsigned integers
//! ([`NumberKey`], 16 or 24 bytes a row), any other `ORDER BY` (text, decimals, three columns
//! or more) as Arrow's row format, bytes compared in one `memcmp` after an 8-byte prefix
//! ([`BytesKey`]).
//!
//! ```sql
//! -- Nexmark q19 (a number): NumberKey<1>
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid) WHERE r <= 10
//! -- q18 over JSON Lines, whose date_time is inferred as text: BytesKey
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS r FROM bid) WHERE r = 1
//! ```
//!
//! A key also says where its row is held (batch and row), so that the kept rows can be
//! gathered at the end.

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{internal_err, Result};
use datafusion::physical_expr::PhysicalSortExpr;

use crate::ordered_bits::{order_class, ordered_bits};

/// The most `ORDER BY` columns compared as numbers ([`NumberKey`]); more go as bytes.
pub(super) const MAX_NUMBER_COLUMNS: usize = 2;

/// The bits of a [`NumberKey`]'s `meta` that say where the row is: its batch (bits 32 to
/// 61) and its row there (bits 0 to 31). Bit `63 - c` is column `c`'s null bucket.
const ID_BITS: u64 = (1 << 62) - 1;

/// The most batches held at once (30 bits of a row's place).
pub(super) const MAX_BATCHES: usize = 1 << 30;

/// How the keys of an `ORDER BY` are made and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OrderKind {
    /// One to [`MAX_NUMBER_COLUMNS`] columns of an [`order_class`].
    Numbers(usize),
    /// Anything Arrow's row format takes.
    Bytes,
}

/// How `order_by` over `schema` is compared, or None when it cannot be.
pub(super) fn order_kind(order_by: &[PhysicalSortExpr], schema: &Schema) -> Option<OrderKind> {
    if order_by.is_empty() {
        return None;
    }
    let types: Vec<_> = order_by.iter().map(|o| o.expr.data_type(schema).ok()).collect::<Option<_>>()?;
    if order_by.len() <= MAX_NUMBER_COLUMNS && types.iter().all(|t| order_class(t).is_some()) {
        return Some(OrderKind::Numbers(order_by.len()));
    }
    let fields: Vec<SortField> = types.into_iter().zip(order_by).map(|(t, o)| SortField::new_with_options(t, o.options)).collect();
    RowConverter::supports_fields(&fields).then_some(OrderKind::Bytes)
}

/// A kept row's `ORDER BY` place and where the row is held.
pub(super) trait OrderKey: Copy + Send + 'static {
    /// What the keys are made with and compared against (the bytes of [`BytesKey`]).
    type Order: Send;
    /// A key of no row (room in a group's region).
    const EMPTY: Self;
    /// The order's state for `order_by` over `schema`.
    fn order(order_by: &[PhysicalSortExpr], schema: &Schema) -> Result<Self::Order>;
    /// The keys of `batch`'s rows `rows` (or all) into `keys`, in row order, each at no place.
    fn keys(order: &mut Self::Order, order_by: &[PhysicalSortExpr], batch: &RecordBatch, rows: Option<&UInt32Array>, keys: &mut Vec<Self>) -> Result<()>;
    /// True when `self` comes before `other` in the `ORDER BY`, or ties with it.
    fn not_after(&self, other: &Self, order: &Self::Order) -> bool;
    /// Where the row is: (batch, row).
    fn place(&self) -> (usize, usize);
    /// The same key at another place.
    fn at(self, batch: usize, row: usize) -> Self;
    /// After a batch is pushed: lets go of what only keys no longer kept used. The keys still
    /// kept are `slots[r]` for each range `r` of `kept` (they may be changed to point at what
    /// they use anew).
    fn tidy(_order: &mut Self::Order, _slots: &mut [Self], _kept: impl Iterator<Item = std::ops::Range<usize>>) {}
    /// Whether [`OrderKey::tidy`] has anything to let go of.
    fn untidy(_order: &Self::Order) -> bool {
        false
    }
    /// Bytes the order's state holds.
    fn bytes(_order: &Self::Order) -> usize {
        0
    }
}

/// `values`' rows `rows`, or all of them.
pub(super) fn picked(values: ArrayRef, rows: Option<&UInt32Array>) -> Result<ArrayRef> {
    Ok(match rows {
        Some(r) => datafusion::arrow::compute::take(values.as_ref(), r, None)?,
        None => values,
    })
}

/// A row ordered by `N` columns of numbers or times: per column `c`, the value made
/// comparable as an unsigned integer (descending: inverted) in `values[c]`, under its null
/// bucket, bit `63 - c` of `meta`. Smaller comes first. 16 bytes for one column.
#[derive(Debug, Clone, Copy)]
pub(super) struct NumberKey<const N: usize> {
    values: [u64; N],
    meta: u64,
}

impl<const N: usize> OrderKey for NumberKey<N> {
    type Order = ();
    const EMPTY: Self = Self { values: [0; N], meta: 0 };

    fn order(_order_by: &[PhysicalSortExpr], _schema: &Schema) -> Result<()> {
        Ok(())
    }

    fn keys(_order: &mut (), order_by: &[PhysicalSortExpr], batch: &RecordBatch, rows: Option<&UInt32Array>, keys: &mut Vec<Self>) -> Result<()> {
        keys.clear();
        keys.resize(rows.map_or(batch.num_rows(), UInt32Array::len), Self::EMPTY);
        for (c, o) in order_by.iter().enumerate().take(N) {
            let values = picked(o.expr.evaluate(batch)?.into_array(batch.num_rows())?, rows)?;
            let Some(class) = order_class(values.data_type()) else {
                return internal_err!("BoundedTopNExec cannot order by {} as a number", values.data_type());
            };
            let values = datafusion::arrow::compute::cast(&values, &class)?;
            let desc = o.options.descending;
            // the null bucket: nulls first sort before every value, nulls last after
            let bit = 1u64 << (63 - c);
            let (null_bucket, value_bucket) = if o.options.nulls_first { (0, bit) } else { (bit, 0) };
            let Some(bits) = ordered_bits(values.as_ref()) else {
                return internal_err!("BoundedTopNExec cannot order by {} as a number", values.data_type());
            };
            for (k, b) in keys.iter_mut().zip(bits) {
                k.values[c] = if desc { !b } else { b };
                k.meta |= value_bucket;
            }
            if let Some(nulls) = values.logical_nulls() {
                for i in nulls.iter().enumerate().filter(|(_, valid)| !valid).map(|(i, _)| i) {
                    keys[i].values[c] = 0;
                    keys[i].meta = (keys[i].meta & !bit) | null_bucket;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn not_after(&self, other: &Self, _order: &()) -> bool {
        for c in 0..N {
            let bit = 63 - c;
            let a = ((self.meta >> bit) & 1, self.values[c]);
            let b = ((other.meta >> bit) & 1, other.values[c]);
            if a != b {
                return a < b;
            }
        }
        true
    }

    #[inline]
    fn place(&self) -> (usize, usize) {
        (((self.meta & ID_BITS) >> 32) as usize, (self.meta & 0xffff_ffff) as usize)
    }

    #[inline]
    fn at(self, batch: usize, row: usize) -> Self {
        Self { values: self.values, meta: (self.meta & !ID_BITS) | ((batch as u64) << 32) | row as u64 }
    }
}

/// A row ordered by its `ORDER BY` values in Arrow's row format (which sorts as the
/// `ORDER BY` does, `DESC` and `NULLS FIRST` included, by comparing bytes): the first 8 bytes
/// as a big-endian number, compared first, then all of them, held in [`RowBytes`]. 32 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct BytesKey {
    prefix: u64,
    start: u64,
    len: u32,
    /// (batch << 32) | row
    place: u64,
}

/// The row-format bytes of the [`BytesKey`]s: every pushed row's, until the bytes of rows
/// no longer kept outgrow the kept ones' and [`OrderKey::tidy`] copies the kept ones out.
pub(super) struct RowBytes {
    converter: RowConverter,
    bytes: Vec<u8>,
    /// `bytes`' length after the last tidy.
    tidied: usize,
}

/// Bytes of rows no longer kept let go of before a tidy: at least this, or as much as the
/// last tidy left (in tests 1 KiB, so that the operator's tests tidy again and again).
#[cfg(not(test))]
const UNTIDY_BYTES: usize = 4 << 20;
#[cfg(test)]
const UNTIDY_BYTES: usize = 1 << 10;

impl RowBytes {
    fn of(&self, k: &BytesKey) -> &[u8] {
        let start = k.start as usize;
        self.bytes.get(start..start + k.len as usize).unwrap_or(&[])
    }
}

/// The first 8 bytes of `b` as a big-endian number, zeros after its end: a bytes' order
/// where it differs (a shorter row whose bytes are a prefix of another's pads with zeros and
/// ties, and the whole bytes decide).
#[inline]
fn prefix(b: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = b.len().min(8);
    p[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(p)
}

impl OrderKey for BytesKey {
    type Order = RowBytes;
    const EMPTY: Self = Self { prefix: 0, start: 0, len: 0, place: 0 };

    fn order(order_by: &[PhysicalSortExpr], schema: &Schema) -> Result<RowBytes> {
        let fields: Vec<SortField> = order_by.iter().map(|o| Ok(SortField::new_with_options(o.expr.data_type(schema)?, o.options))).collect::<Result<_>>()?;
        Ok(RowBytes { converter: RowConverter::new(fields)?, bytes: Vec::new(), tidied: 0 })
    }

    fn keys(order: &mut RowBytes, order_by: &[PhysicalSortExpr], batch: &RecordBatch, rows: Option<&UInt32Array>, keys: &mut Vec<Self>) -> Result<()> {
        let columns: Vec<ArrayRef> = order_by.iter().map(|o| picked(o.expr.evaluate(batch)?.into_array(batch.num_rows())?, rows)).collect::<Result<_>>()?;
        let converted = order.converter.convert_columns(&columns)?;
        keys.clear();
        keys.reserve(converted.num_rows());
        for row in converted.iter() {
            let b = row.as_ref();
            let Ok(len) = u32::try_from(b.len()) else { return internal_err!("BoundedTopNExec: an ORDER BY value of over 4 GiB") };
            keys.push(Self { prefix: prefix(b), start: order.bytes.len() as u64, len, place: 0 });
            order.bytes.extend_from_slice(b);
        }
        Ok(())
    }

    #[inline]
    fn not_after(&self, other: &Self, order: &RowBytes) -> bool {
        if self.prefix != other.prefix {
            return self.prefix < other.prefix;
        }
        order.of(self) <= order.of(other)
    }

    #[inline]
    fn place(&self) -> (usize, usize) {
        ((self.place >> 32) as usize, (self.place & 0xffff_ffff) as usize)
    }

    #[inline]
    fn at(self, batch: usize, row: usize) -> Self {
        Self { place: ((batch as u64) << 32) | row as u64, ..self }
    }

    fn untidy(order: &RowBytes) -> bool {
        order.bytes.len() > 2 * order.tidied.max(UNTIDY_BYTES)
    }

    fn tidy(order: &mut RowBytes, slots: &mut [Self], kept: impl Iterator<Item = std::ops::Range<usize>>) {
        let mut bytes = Vec::with_capacity(order.tidied.max(UNTIDY_BYTES));
        for r in kept {
            for k in slots.get_mut(r).into_iter().flatten() {
                let start = bytes.len() as u64;
                bytes.extend_from_slice(order.of(k));
                k.start = start;
            }
        }
        order.tidied = bytes.len();
        order.bytes = bytes;
    }

    fn bytes(order: &RowBytes) -> usize {
        order.bytes.capacity() + order.converter.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray, StringViewArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::col;

    /// Every pair of rows compares as Arrow's sort orders them, over text with NULLs, empty
    /// strings, a shared 8-byte prefix and a trailing NUL, in every direction.
    #[test]
    fn bytes_keys_compare_as_the_sort_orders() {
        let text = vec![
            Some("2015-07-15T00:00:01.000Z"),
            Some("2015-07-15T00:00:00.999Z"),
            None,
            Some(""),
            Some("2015-07-1"),
            Some("2015-07-15T00:00:01.000Z\0"),
            Some("a"),
            Some("2015-07-15T00:00:01.000Z"),
            None,
            Some("Z"),
        ];
        let num: Vec<Option<i64>> = vec![Some(3), Some(-1), Some(3), None, Some(0), Some(3), Some(7), Some(2), Some(1), Some(3)];
        for view in [false, true] {
            let s: ArrayRef = if view { Arc::new(StringViewArray::from(text.clone())) } else { Arc::new(StringArray::from(text.clone())) };
            let schema = Arc::new(Schema::new(vec![Field::new("s", s.data_type().clone(), true), Field::new("n", DataType::Int64, true)]));
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![s, Arc::new(Int64Array::from(num.clone()))]).unwrap();
            for (descending, nulls_first) in [(false, false), (false, true), (true, false), (true, true)] {
                let options = SortOptions { descending, nulls_first };
                let order_by = vec![
                    PhysicalSortExpr { expr: col("s", &schema).unwrap(), options },
                    PhysicalSortExpr { expr: col("n", &schema).unwrap(), options: SortOptions { descending: !descending, nulls_first } },
                ];
                assert_eq!(order_kind(&order_by, &schema), Some(OrderKind::Bytes));
                let mut order = BytesKey::order(&order_by, &schema).unwrap();
                let mut keys = Vec::new();
                BytesKey::keys(&mut order, &order_by, &batch, None, &mut keys).unwrap();
                // Arrow's own sort of the same columns: the rank of each row
                let columns: Vec<_> = order_by
                    .iter()
                    .map(|o| datafusion::arrow::compute::SortColumn {
                        values: o.expr.evaluate(&batch).unwrap().into_array(10).unwrap(),
                        options: Some(o.options),
                    })
                    .collect();
                let sorted = datafusion::arrow::compute::lexsort_to_indices(&columns, None).unwrap();
                let mut rank = [0; 10];
                for (r, &i) in sorted.values().iter().enumerate() {
                    rank[i as usize] = r;
                }
                // rows 0 and 7 tie on the text; they differ on n
                for a in 0..10 {
                    for b in 0..10 {
                        let tie = (0..2).all(|c| {
                            let v = &columns[c].values;
                            datafusion::arrow::array::make_comparator(v.as_ref(), v.as_ref(), SortOptions::default()).unwrap()(a, b).is_eq()
                        });
                        let want = tie || rank[a] < rank[b];
                        assert_eq!(keys[a].not_after(&keys[b], &order), want, "rows {a} and {b}, {options:?}, view {view}");
                    }
                }
                // a tidy keeps what each kept key compares by
                let before: Vec<Vec<u8>> = keys.iter().map(|k| order.of(k).to_vec()).collect();
                let mut kept = keys.clone();
                BytesKey::tidy(&mut order, &mut kept, (0..10).step_by(2).map(|i| i..i + 1));
                for (i, k) in kept.iter().enumerate().step_by(2) {
                    assert_eq!(order.of(k), before[i].as_slice());
                }
            }
        }
    }

    /// Text, decimals and three number columns go as bytes; one or two number columns as
    /// numbers.
    #[test]
    fn the_kind_of_each_order() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
        ]);
        let by = |names: &[&str]| -> Vec<PhysicalSortExpr> {
            names.iter().map(|n| PhysicalSortExpr { expr: col(n, &schema).unwrap(), options: SortOptions::default() }).collect()
        };
        assert_eq!(order_kind(&by(&["a"]), &schema), Some(OrderKind::Numbers(1)));
        assert_eq!(order_kind(&by(&["a", "b"]), &schema), Some(OrderKind::Numbers(2)));
        assert_eq!(order_kind(&by(&["a", "b", "c"]), &schema), Some(OrderKind::Bytes));
        assert_eq!(order_kind(&by(&["s"]), &schema), Some(OrderKind::Bytes));
        assert_eq!(order_kind(&by(&["d", "a"]), &schema), Some(OrderKind::Bytes));
        assert_eq!(order_kind(&by(&[]), &schema), None);
    }
}
