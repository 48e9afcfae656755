//! `x % c` for an integer column and a constant divisor, by multiplication.
//!
//! ```sql
//! -- Nexmark q2: every bid's auction divided by 123
//! SELECT auction, price FROM bid WHERE auction % 123 = 0
//! ```
//!
//! Arrow's remainder kernel divides every value by a divisor it only knows at run time: one
//! hardware division per row (tens of cycles), a quarter of Nexmark q2's time. With the divisor
//! known once per expression, the remainder is two 128-bit multiplications (Lemire, Kaser and
//! Kurz, "Faster remainder by direct computation", 2019; exact for every 64-bit dividend and
//! divisor), as compilers do for a divisor written in the code. The file source's row filters
//! and the engine's filters and projections ([`by_constants`]) use it; the results are the
//! kernel's, sign included (`-7 % 3 = -1`, `i64::MIN % -1 = 0`), and nulls stay null.
//!
//! A remainder compared with zero (`x % c = 0`, `x % c <> 0`: q2's condition) needs no
//! remainder at all: [`DivisibleByConstant`] tests divisibility with one 64-bit multiplication,
//! a rotation and a comparison (Granlund and Montgomery, 1994), and writes the booleans
//! directly, without the remainders' array or the comparison's pass over it.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, PrimitiveArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, FieldRef, Int16Type, Int32Type, Int64Type, Int8Type, Schema, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// A divisor as multiplications: `x % d` for any `u64` x is `mul_hi(M·x mod 2^128, d)`, with
/// `M = ⌈2^128 / d⌉`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Divisor {
    d: u64,
    m: u128,
}

impl Divisor {
    /// The divisor `d`; None for 0 (the kernel's error is left to the kernel).
    pub fn new(d: u64) -> Option<Self> {
        (d != 0).then(|| Self { d, m: (u128::MAX / u128::from(d)).wrapping_add(1) })
    }

    /// `x % d`.
    #[inline]
    pub fn rem(&self, x: u64) -> u64 {
        if self.d == 1 {
            // (M wraps to 0: every remainder is 0, which the product gives too, but say so)
            return 0;
        }
        let low = self.m.wrapping_mul(u128::from(x));
        // the high 128 bits of the 192-bit `low · d`, which are below d
        let d = u128::from(self.d);
        let hi = (low >> 64) * d + (((low & u128::from(u64::MAX)) * d) >> 64);
        (hi >> 64) as u64
    }

    /// `x % d` with the sign of `x`, as Rust's and Arrow's `%` give it.
    #[inline]
    pub fn rem_signed(&self, x: i64) -> i64 {
        let r = self.rem(x.unsigned_abs()) as i64;
        if x < 0 {
            -r
        } else {
            r
        }
    }
}

/// `$this.signed::<T>(a)` or `$this.unsigned::<T>(a)` by the integer type of `a`; an internal
/// error for another type.
macro_rules! by_integer_type {
    ($this:expr, $a:expr, $what:literal) => {
        Ok(match $a.data_type() {
            DataType::Int8 => $this.signed::<Int8Type>($a),
            DataType::Int16 => $this.signed::<Int16Type>($a),
            DataType::Int32 => $this.signed::<Int32Type>($a),
            DataType::Int64 => $this.signed::<Int64Type>($a),
            DataType::UInt8 => $this.unsigned::<UInt8Type>($a),
            DataType::UInt16 => $this.unsigned::<UInt16Type>($a),
            DataType::UInt32 => $this.unsigned::<UInt32Type>($a),
            DataType::UInt64 => $this.unsigned::<UInt64Type>($a),
            other => return datafusion::common::internal_err!("{} of a {other} value", $what),
        })
    };
}

/// `f` over the values of `dividend` in `batch`; a scalar stays a scalar.
fn on_dividend(dividend: &Arc<dyn PhysicalExpr>, batch: &RecordBatch, f: impl Fn(&dyn Array) -> Result<ArrayRef>) -> Result<ColumnarValue> {
    Ok(match dividend.evaluate(batch)? {
        ColumnarValue::Array(a) => ColumnarValue::Array(f(&a)?),
        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(ScalarValue::try_from_array(&f(&s.to_array()?)?, 0)?),
    })
}

/// `dividend % constant` as SQL.
fn remainder_sql(dividend: &Arc<dyn PhysicalExpr>, constant: &ScalarValue, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    dividend.fmt_sql(f)?;
    write!(f, " % ")?;
    Literal::new(constant.clone()).fmt_sql(f)
}

/// The one child of a remainder or a divisibility test (its dividend).
fn one_child(mut children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
    match children.pop() {
        Some(dividend) if children.is_empty() => Ok(dividend),
        _ => datafusion::common::internal_err!("a remainder or divisibility by a constant has one child"),
    }
}

/// A divisor as a divisibility test: `x % d == 0` for any `u64` x is
/// `rotate_right(x · d₀⁻¹ mod 2^64, k) <= ⌊(2^64 − 1) / d⌋`, with `d = d₀ · 2^k`, `d₀` odd and
/// `d₀⁻¹` its inverse modulo 2^64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Divisibility {
    inverse: u64,
    shift: u32,
    limit: u64,
}

impl Divisibility {
    /// The test for `d`; None for 0.
    pub fn new(d: u64) -> Option<Self> {
        if d == 0 {
            return None;
        }
        let shift = d.trailing_zeros();
        let odd = d >> shift;
        // Newton's iteration doubles the correct low bits: 3 (odd·odd ≡ 1 mod 8) → 6 → … → 96
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Some(Self { inverse, shift, limit: u64::MAX / d })
    }

    /// `x % d == 0`.
    #[inline]
    pub fn divides(&self, x: u64) -> bool {
        x.wrapping_mul(self.inverse).rotate_right(self.shift) <= self.limit
    }
}

/// `dividend % constant = 0` (or `<> 0` when `negated`) for an integer `dividend` and a non-zero
/// constant of its type: what [`BinaryExpr`]s of [`Operator::Modulo`] and [`Operator::Eq`] (or
/// [`Operator::NotEq`]) compute, as one test a row. Nulls stay null.
///
/// ```sql
/// SELECT auction, price FROM bid WHERE auction % 123 = 0
/// ```
#[derive(Debug, Clone)]
pub struct DivisibleByConstant {
    dividend: Arc<dyn PhysicalExpr>,
    /// The divisor as written (its type is the dividend's).
    constant: ScalarValue,
    /// The zero it is compared with, as written.
    zero: ScalarValue,
    negated: bool,
    test: Divisibility,
}

impl DivisibleByConstant {
    /// `remainder = zero` (or `<>` when `negated`), when `zero` is 0 of the remainder's type.
    pub fn try_new(remainder: &RemainderByConstant, zero: &ScalarValue, negated: bool) -> Option<Self> {
        // (0 of the remainder's type, as type coercion leaves it)
        if ScalarValue::new_zero(&remainder.constant.data_type()).ok().as_ref() != Some(zero) {
            return None;
        }
        let test = Divisibility::new(remainder.divisor.d)?;
        Some(Self { dividend: Arc::clone(&remainder.dividend), constant: remainder.constant.clone(), zero: zero.clone(), negated, test })
    }

    /// The test on each value of `a` by its `magnitude` (a signed value divides as its
    /// magnitude does); nulls stay null.
    fn tested<T: ArrowPrimitiveType>(&self, a: &dyn Array, magnitude: impl Fn(T::Native) -> u64) -> BooleanArray {
        let a = a.as_primitive::<T>();
        let (test, negated) = (self.test, self.negated);
        let bits = BooleanBuffer::collect_bool(a.len(), |i| test.divides(magnitude(a.value(i))) != negated);
        BooleanArray::new(bits, a.nulls().cloned())
    }

    fn signed<T>(&self, a: &dyn Array) -> BooleanArray
    where
        T: ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        self.tested::<T>(a, |v| v.into().unsigned_abs())
    }

    fn unsigned<T>(&self, a: &dyn Array) -> BooleanArray
    where
        T: ArrowPrimitiveType,
        T::Native: Into<u64>,
    {
        self.tested::<T>(a, Into::into)
    }

    fn test_array(&self, a: &dyn Array) -> Result<BooleanArray> {
        by_integer_type!(self, a, "divisibility by a constant")
    }

    fn operator(&self) -> &'static str {
        if self.negated {
            "!="
        } else {
            "="
        }
    }
}

impl PartialEq for DivisibleByConstant {
    fn eq(&self, other: &Self) -> bool {
        self.dividend.as_ref() == other.dividend.as_ref() && self.constant == other.constant && self.negated == other.negated
    }
}

impl Eq for DivisibleByConstant {}

impl Hash for DivisibleByConstant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.dividend.as_ref().hash(state);
        self.constant.hash(state);
        self.negated.hash(state);
    }
}

impl fmt::Display for DivisibleByConstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // as the BinaryExprs it stands for print
        write!(f, "{} % {} {} {}", self.dividend, Literal::new(self.constant.clone()), self.operator(), Literal::new(self.zero.clone()))
    }
}

impl PhysicalExpr for DivisibleByConstant {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        let nullable = self.dividend.nullable(input_schema)?;
        Ok(Arc::new(arrow::datatypes::Field::new(format!("{self}"), DataType::Boolean, nullable)))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        on_dividend(&self.dividend, batch, |a| Ok(Arc::new(self.test_array(a)?)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.dividend]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Self { dividend: one_child(children)?, ..(*self).clone() }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        remainder_sql(&self.dividend, &self.constant, f)?;
        write!(f, " {} ", self.operator())?;
        Literal::new(self.zero.clone()).fmt_sql(f)
    }
}

/// `dividend % divisor` for an integer `dividend` and a constant of its type other than 0:
/// what [`BinaryExpr`] with [`Operator::Modulo`] computes, by multiplication.
#[derive(Debug, Clone)]
pub struct RemainderByConstant {
    dividend: Arc<dyn PhysicalExpr>,
    /// The constant as written (its type is the dividend's).
    constant: ScalarValue,
    divisor: Divisor,
}

impl RemainderByConstant {
    /// `dividend % constant`, when `constant` is a non-zero integer of the dividend's type
    /// (as DataFusion's type coercion leaves it) and that type is an integer.
    pub fn try_new(dividend: Arc<dyn PhysicalExpr>, constant: &ScalarValue, schema: &Schema) -> Option<Self> {
        let t = dividend.data_type(schema).ok()?;
        if constant.data_type() != t {
            return None;
        }
        let magnitude = match constant {
            ScalarValue::Int8(Some(v)) => i64::from(*v).unsigned_abs(),
            ScalarValue::Int16(Some(v)) => i64::from(*v).unsigned_abs(),
            ScalarValue::Int32(Some(v)) => i64::from(*v).unsigned_abs(),
            ScalarValue::Int64(Some(v)) => v.unsigned_abs(),
            ScalarValue::UInt8(Some(v)) => u64::from(*v),
            ScalarValue::UInt16(Some(v)) => u64::from(*v),
            ScalarValue::UInt32(Some(v)) => u64::from(*v),
            ScalarValue::UInt64(Some(v)) => *v,
            _ => return None,
        };
        Some(Self { dividend, constant: constant.clone(), divisor: Divisor::new(magnitude)? })
    }

    fn signed<T>(&self, a: &dyn Array) -> ArrayRef
    where
        T: ArrowPrimitiveType,
        T::Native: Into<i64> + TryFrom<i64>,
    {
        let d = self.divisor;
        // (|r| < |d| and has x's sign: it is of x's type)
        let out: PrimitiveArray<T> = a.as_primitive::<T>().unary(|x| T::Native::try_from(d.rem_signed(x.into())).unwrap_or(x));
        Arc::new(out)
    }

    fn unsigned<T>(&self, a: &dyn Array) -> ArrayRef
    where
        T: ArrowPrimitiveType,
        T::Native: Into<u64> + TryFrom<u64>,
    {
        let d = self.divisor;
        let out: PrimitiveArray<T> = a.as_primitive::<T>().unary(|x| T::Native::try_from(d.rem(x.into())).unwrap_or(x));
        Arc::new(out)
    }

    fn rem_array(&self, a: &dyn Array) -> Result<ArrayRef> {
        by_integer_type!(self, a, "remainder by a constant")
    }
}

impl PartialEq for RemainderByConstant {
    fn eq(&self, other: &Self) -> bool {
        self.dividend.as_ref() == other.dividend.as_ref() && self.constant == other.constant
    }
}

impl Eq for RemainderByConstant {}

impl Hash for RemainderByConstant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.dividend.as_ref().hash(state);
        self.constant.hash(state);
    }
}

impl fmt::Display for RemainderByConstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // as the BinaryExpr it stands for prints
        write!(f, "{} % {}", self.dividend, Literal::new(self.constant.clone()))
    }
}

impl PhysicalExpr for RemainderByConstant {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.dividend.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        on_dividend(&self.dividend, batch, |a| self.rem_array(a))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.dividend]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Self { dividend: one_child(children)?, ..(*self).clone() }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        remainder_sql(&self.dividend, &self.constant, f)
    }
}

/// `expr` with every `integer % non-zero constant of its type` computed by
/// [`RemainderByConstant`], and every such remainder compared with 0 by
/// [`DivisibleByConstant`]; the rest as it was. `schema` is the input `expr` reads.
pub fn by_constants(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        if matches!(b.op(), Operator::Eq | Operator::NotEq) {
            // (the remainder below has been replaced already: the tree is rewritten bottom up)
            let negated = *b.op() == Operator::NotEq;
            let sides = [(b.left(), b.right()), (b.right(), b.left())];
            let test = sides.iter().find_map(|(r, z)| {
                let r = r.downcast_ref::<RemainderByConstant>()?;
                let z = z.downcast_ref::<Literal>()?;
                DivisibleByConstant::try_new(r, z.value(), negated)
            });
            return Ok(match test {
                Some(t) => Transformed::yes(Arc::new(t) as Arc<dyn PhysicalExpr>),
                None => Transformed::no(e),
            });
        }
        if *b.op() != Operator::Modulo {
            return Ok(Transformed::no(e));
        }
        let Some(lit) = b.right().downcast_ref::<Literal>() else {
            return Ok(Transformed::no(e));
        };
        Ok(match RemainderByConstant::try_new(Arc::clone(b.left()), lit.value(), schema) {
            Some(r) => Transformed::yes(Arc::new(r) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
}

/// [`by_constants`], the expression alone.
pub fn with_constant_divisors(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Arc<dyn PhysicalExpr> {
    let kept = Arc::clone(&expr);
    by_constants(expr, schema).data().unwrap_or(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, UInt64Array, UInt8Array};
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn remainders_are_the_hardware_s_for_every_kind_of_value() {
        let dividends: Vec<u64> = [0, 1, 2, 3, 5, 7, 122, 123, 124, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 63, u64::MAX - 1, u64::MAX]
            .into_iter()
            .chain((0..2000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)))
            .collect();
        let divisors: Vec<u64> = [1, 2, 3, 7, 10, 123, 1000, 1 << 20, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 63, u64::MAX - 1, u64::MAX]
            .into_iter()
            .chain((1..200u64).map(|i| i.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1))
            .collect();
        for &d in &divisors {
            let by = Divisor::new(d).unwrap();
            for &x in &dividends {
                assert_eq!(by.rem(x), x % d, "{x} % {d}");
                let s = x as i64;
                if let Ok(ds) = i64::try_from(d) {
                    assert_eq!(by.rem_signed(s), s.wrapping_rem(ds), "{s} % {ds}");
                    assert_eq!(by.rem_signed(s), s.wrapping_rem(-ds), "{s} % -{ds}");
                }
            }
        }
        assert!(Divisor::new(0).is_none());
    }

    /// The expression's answer and Arrow's kernel's, for a column and a constant.
    fn both(a: ArrayRef, constant: ScalarValue) -> (ArrayRef, ArrayRef) {
        let schema = Schema::new(vec![Field::new("x", a.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![a]).unwrap();
        let plain = binary(col("x", &schema).unwrap(), Operator::Modulo, lit(constant), &schema).unwrap();
        let fast = with_constant_divisors(Arc::clone(&plain), &schema);
        assert!(fast.downcast_ref::<RemainderByConstant>().is_some(), "{fast}");
        assert_eq!(fast.to_string(), plain.to_string());
        let get = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
        (get(&fast), get(&plain))
    }

    #[test]
    fn the_expression_gives_the_kernel_s_answer_nulls_and_signs_included() {
        let signed = Int64Array::from(vec![Some(-7), Some(7), None, Some(i64::MIN), Some(i64::MAX), Some(0), Some(-123), Some(246)]);
        for c in [3i64, -3, 123, -1, 1, i64::MIN, i64::MAX] {
            let (fast, plain) = both(Arc::new(signed.clone()), ScalarValue::Int64(Some(c)));
            assert_eq!(fast.as_ref(), plain.as_ref(), "% {c}");
        }
        let (fast, plain) = both(Arc::new(Int32Array::from(vec![Some(-5), None, Some(i32::MIN), Some(99)])), ScalarValue::Int32(Some(-7)));
        assert_eq!(fast.as_ref(), plain.as_ref());
        let (fast, plain) = both(Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(5)])), ScalarValue::UInt64(Some(u64::MAX - 2)));
        assert_eq!(fast.as_ref(), plain.as_ref());
        let (fast, plain) = both(Arc::new(UInt8Array::from(vec![Some(255), Some(3)])), ScalarValue::UInt8(Some(4)));
        assert_eq!(fast.as_ref(), plain.as_ref());
    }

    #[test]
    fn zero_null_and_other_types_are_left_to_the_kernel() {
        let schema = Schema::new(vec![Field::new("x", DataType::Int64, true), Field::new("f", DataType::Float64, true)]);
        for (column, constant) in [("x", ScalarValue::Int64(Some(0))), ("x", ScalarValue::Int64(None)), ("f", ScalarValue::Float64(Some(3.0)))] {
            let plain = binary(col(column, &schema).unwrap(), Operator::Modulo, lit(constant), &schema).unwrap();
            let kept = with_constant_divisors(Arc::clone(&plain), &schema);
            assert!(kept.downcast_ref::<BinaryExpr>().is_some(), "{kept}");
        }
        // a remainder inside a comparison with another number is found
        let rem = binary(col("x", &schema).unwrap(), Operator::Modulo, lit(ScalarValue::Int64(Some(123))), &schema).unwrap();
        let eq = binary(rem, Operator::Eq, lit(ScalarValue::Int64(Some(1))), &schema).unwrap();
        let fast = with_constant_divisors(eq, &schema);
        let b = fast.downcast_ref::<BinaryExpr>().unwrap();
        assert!(b.left().downcast_ref::<RemainderByConstant>().is_some());
    }

    #[test]
    fn divisibility_is_the_remainder_s_for_every_kind_of_value() {
        let dividends: Vec<u64> = [0, 1, 2, 3, 5, 7, 122, 123, 124, 246, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 63, u64::MAX - 1, u64::MAX]
            .into_iter()
            .chain((0..2000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)))
            .collect();
        let divisors: Vec<u64> =
            [1, 2, 3, 4, 6, 7, 10, 12, 123, 1000, 1 << 20, 3 << 20, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 63, 3 << 62, u64::MAX - 1, u64::MAX]
                .into_iter()
                .chain((1..200u64).map(|i| i.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (i % 60)))
                .filter(|d| *d != 0)
                .collect();
        for &d in &divisors {
            let test = Divisibility::new(d).unwrap();
            // multiples of d, and their neighbours, beside the scattered values
            let near = (1..50u64).filter_map(|m| m.checked_mul(d)).flat_map(|x| [x - 1, x, x.saturating_add(1)]);
            for x in dividends.iter().copied().chain(near) {
                assert_eq!(test.divides(x), x % d == 0, "{x} % {d}");
            }
        }
        assert!(Divisibility::new(0).is_none());
    }

    /// `x % constant OP zero` as rewritten and as DataFusion's kernels compute it.
    fn both_tests(a: ArrayRef, constant: ScalarValue, op: Operator, zero: ScalarValue, zero_left: bool) -> (ArrayRef, ArrayRef) {
        let schema = Schema::new(vec![Field::new("x", a.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![a]).unwrap();
        let rem = binary(col("x", &schema).unwrap(), Operator::Modulo, lit(constant), &schema).unwrap();
        let plain = if zero_left { binary(lit(zero), op, rem, &schema) } else { binary(rem, op, lit(zero), &schema) }.unwrap();
        let fast = with_constant_divisors(Arc::clone(&plain), &schema);
        assert!(fast.downcast_ref::<DivisibleByConstant>().is_some(), "{fast}");
        if !zero_left {
            assert_eq!(fast.to_string(), plain.to_string());
        }
        assert_eq!(fast.data_type(&schema).unwrap(), DataType::Boolean);
        let get = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
        (get(&fast), get(&plain))
    }

    #[test]
    fn a_remainder_compared_with_zero_gives_the_kernels_answer() {
        let values: Vec<Option<i64>> = [Some(-7), Some(7), None, Some(i64::MIN), Some(i64::MAX), Some(0), Some(-123), Some(246), Some(-246), Some(1 << 62)]
            .into_iter()
            .chain((0..300i64).map(|i| Some(i.wrapping_mul(-0x61C8_8646_80B5_83EB) >> (i % 50))))
            .collect();
        let signed = Int64Array::from(values);
        for c in [3i64, -3, 123, -1, 1, 2, 64, -96, i64::MIN, i64::MAX] {
            for op in [Operator::Eq, Operator::NotEq] {
                for zero_left in [false, true] {
                    let (fast, plain) = both_tests(Arc::new(signed.clone()), ScalarValue::Int64(Some(c)), op, ScalarValue::Int64(Some(0)), zero_left);
                    assert_eq!(fast.as_ref(), plain.as_ref(), "% {c} {op}");
                }
            }
        }
        let narrow = Int32Array::from(vec![Some(-14), None, Some(i32::MIN), Some(99), Some(7)]);
        let (fast, plain) = both_tests(Arc::new(narrow), ScalarValue::Int32(Some(-7)), Operator::Eq, ScalarValue::Int32(Some(0)), false);
        assert_eq!(fast.as_ref(), plain.as_ref());
        let (fast, plain) = both_tests(
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(5), Some(0)])),
            ScalarValue::UInt64(Some(u64::MAX)),
            Operator::NotEq,
            ScalarValue::UInt64(Some(0)),
            false,
        );
        assert_eq!(fast.as_ref(), plain.as_ref());
        let (fast, plain) = both_tests(
            Arc::new(UInt8Array::from(vec![Some(255), Some(4), Some(8)])),
            ScalarValue::UInt8(Some(4)),
            Operator::Eq,
            ScalarValue::UInt8(Some(0)),
            false,
        );
        assert_eq!(fast.as_ref(), plain.as_ref());
    }
}
