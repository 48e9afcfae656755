//! PostgreSQL types and Arrow types, and the binary `COPY` format between them: the source
//! decodes `COPY (query) TO STDOUT (FORMAT binary)` straight into Arrow builders, column by
//! column, with no text round trip; the sink encodes Arrow arrays into `COPY … FROM STDIN
//! (FORMAT binary)`.
//!
//! ```sql
//! -- numeric(12,2) → Decimal128(12, 2), timestamptz → Timestamp(µs, UTC), jsonb → Utf8, int4[] → List(Int32)
//! SELECT id, balance, updated_at, profile, tags FROM customers
//! ```

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, ListArray, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, FieldRef, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, IntervalMonthDayNano, TimeUnit,
    UInt16Type, UInt32Type, UInt8Type,
};
use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{Kind, Type};

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Precision and scale given to a `numeric` column declared without them.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 10);

/// The Arrow type of a PostgreSQL column of type `ty` with type modifier `typmod` (`-1`: none),
/// or why it has none.
pub fn arrow_type(ty: &Type, typmod: i32) -> Result<DataType, String> {
    if let Kind::Array(elem) = ty.kind() {
        let inner = arrow_type(elem, typmod)?;
        return Ok(DataType::List(Arc::new(Field::new("item", inner, true))));
    }
    if let Kind::Domain(base) = ty.kind() {
        return arrow_type(base, typmod);
    }
    if let Kind::Enum(_) = ty.kind() {
        return Ok(DataType::Utf8);
    }
    Ok(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 | Type::OID => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::JSON | Type::JSONB | Type::UUID | Type::XML => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::INTERVAL => DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
        Type::NUMERIC => {
            let (p, s) = numeric_precision_scale(typmod);
            DataType::Decimal128(p, s)
        }
        _ => return Err(format!("PostgreSQL type '{}' cannot be mapped to Arrow; cast it in the query (`col::text`)", ty.name())),
    })
}

/// Precision and scale of `numeric(p, s)` from its type modifier.
fn numeric_precision_scale(typmod: i32) -> (u8, i8) {
    if typmod < 4 {
        return UNCONSTRAINED_NUMERIC;
    }
    let t = typmod - 4;
    let p = ((t >> 16) & 0xffff) as u8;
    let s = (t & 0xffff) as i8;
    if p == 0 || p > 38 || s < 0 || s as u8 > p {
        UNCONSTRAINED_NUMERIC
    } else {
        (p, s)
    }
}

/// One column's builder, filled from binary `COPY` fields.
#[derive(Debug)]
pub enum ColumnDecoder {
    /// `bool`.
    Bool(BooleanBuilder),
    /// `int2`.
    I16(Int16Builder),
    /// `int4`.
    I32(Int32Builder),
    /// `int8`.
    I64(Int64Builder),
    /// `oid` (unsigned 32 bits, widened).
    Oid(Int64Builder),
    /// `float4`.
    F32(Float32Builder),
    /// `float8`.
    F64(Float64Builder),
    /// Text types and `json`: the bytes are UTF-8.
    Text(StringBuilder),
    /// `jsonb`: a version byte, then the text.
    Jsonb(StringBuilder),
    /// `uuid`: 16 bytes, written in the usual hyphenated form.
    Uuid(StringBuilder),
    /// `bytea`.
    Bytes(BinaryBuilder),
    /// `date`.
    Date(Date32Builder),
    /// `timestamp` / `timestamptz`.
    Timestamp(TimestampMicrosecondBuilder),
    /// `time`.
    Time(Time64MicrosecondBuilder),
    /// `numeric(p, s)`: the builder, the scale and the largest magnitude allowed (10^p).
    Numeric(Decimal128Builder, i8, i128),
    /// `interval`.
    Interval(IntervalMonthDayNanoBuilder),
    /// One-dimensional arrays.
    List {
        /// The element field of the list type.
        field: FieldRef,
        /// End offsets so far, starting with 0.
        offsets: Vec<i32>,
        /// Which lists are null.
        nulls: NullBufferBuilder,
        /// The elements.
        inner: Box<ColumnDecoder>,
    },
}

impl ColumnDecoder {
    /// A decoder for PostgreSQL type `ty` producing `data_type` (from [`arrow_type`]).
    pub fn new(ty: &Type, data_type: &DataType) -> Result<Self, String> {
        if let (Kind::Array(elem), DataType::List(field)) = (ty.kind(), data_type) {
            let inner = ColumnDecoder::new(elem, field.data_type())?;
            return Ok(Self::List { field: Arc::clone(field), offsets: vec![0], nulls: NullBufferBuilder::new(0), inner: Box::new(inner) });
        }
        if let Kind::Domain(base) = ty.kind() {
            return Self::new(base, data_type);
        }
        if let Kind::Enum(_) = ty.kind() {
            return Ok(Self::Text(StringBuilder::new()));
        }
        Ok(match (ty.clone(), data_type) {
            (Type::BOOL, _) => Self::Bool(BooleanBuilder::new()),
            (Type::INT2, _) => Self::I16(Int16Builder::new()),
            (Type::INT4, _) => Self::I32(Int32Builder::new()),
            (Type::INT8, _) => Self::I64(Int64Builder::new()),
            (Type::OID, _) => Self::Oid(Int64Builder::new()),
            (Type::FLOAT4, _) => Self::F32(Float32Builder::new()),
            (Type::FLOAT8, _) => Self::F64(Float64Builder::new()),
            (Type::JSONB, _) => Self::Jsonb(StringBuilder::new()),
            (Type::UUID, _) => Self::Uuid(StringBuilder::new()),
            (Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::JSON | Type::XML, _) => Self::Text(StringBuilder::new()),
            (Type::BYTEA, _) => Self::Bytes(BinaryBuilder::new()),
            (Type::DATE, _) => Self::Date(Date32Builder::new()),
            (Type::TIMESTAMP, _) => Self::Timestamp(TimestampMicrosecondBuilder::new()),
            (Type::TIMESTAMPTZ, _) => Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            (Type::TIME, _) => Self::Time(Time64MicrosecondBuilder::new()),
            (Type::INTERVAL, _) => Self::Interval(IntervalMonthDayNanoBuilder::new()),
            (Type::NUMERIC, DataType::Decimal128(p, s)) => {
                Self::Numeric(Decimal128Builder::new().with_precision_and_scale(*p, *s).map_err(|e| e.to_string())?, *s, 10i128.pow(u32::from(*p)))
            }
            (other, _) => return Err(format!("PostgreSQL type '{}' cannot be mapped to Arrow", other.name())),
        })
    }

    /// Appends a SQL NULL.
    pub fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::I16(b) => b.append_null(),
            Self::I32(b) => b.append_null(),
            Self::I64(b) | Self::Oid(b) => b.append_null(),
            Self::F32(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::Text(b) | Self::Jsonb(b) | Self::Uuid(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Numeric(b, _, _) => b.append_null(),
            Self::Interval(b) => b.append_null(),
            Self::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends one value in PostgreSQL's binary representation.
    pub fn append(&mut self, v: &[u8]) -> Result<(), String> {
        match self {
            Self::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Self::I16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Self::I32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Self::I64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Self::Oid(b) => b.append_value(i64::from(u32::from_be_bytes(fixed(v)?))),
            Self::F32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Self::F64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Self::Text(b) => b.append_value(utf8(v)?),
            Self::Jsonb(b) => match v.split_first() {
                Some((1, rest)) => b.append_value(utf8(rest)?),
                _ => return Err("unknown jsonb version".into()),
            },
            Self::Uuid(b) => {
                let u: [u8; 16] = fixed(v)?;
                let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
                b.append_value(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]));
            }
            Self::Bytes(b) => b.append_value(v),
            Self::Date(b) => {
                let d = i32::from_be_bytes(fixed(v)?);
                // ±infinity dates have no Arrow value
                if d == i32::MAX || d == i32::MIN {
                    b.append_null()
                } else {
                    b.append_value(d.checked_add(PG_EPOCH_DAYS).ok_or("date out of range")?)
                }
            }
            Self::Timestamp(b) => {
                let t = i64::from_be_bytes(fixed(v)?);
                if t == i64::MAX || t == i64::MIN {
                    b.append_null()
                } else {
                    b.append_value(t.checked_add(PG_EPOCH_MICROS).ok_or("timestamp out of range")?)
                }
            }
            Self::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Self::Interval(b) => {
                let raw: [u8; 16] = fixed(v)?;
                let micros = i64::from_be_bytes(raw[0..8].try_into().map_err(|_| "interval")?);
                let days = i32::from_be_bytes(raw[8..12].try_into().map_err(|_| "interval")?);
                let months = i32::from_be_bytes(raw[12..16].try_into().map_err(|_| "interval")?);
                b.append_value(IntervalMonthDayNano::new(months, days, micros.saturating_mul(1000)));
            }
            Self::Numeric(b, scale, limit) => match decode_numeric(v, *scale)? {
                Some(x) if x.unsigned_abs() < limit.unsigned_abs() => b.append_value(x),
                Some(_) => {
                    return Err(format!("numeric value does not fit its decimal type (scale {scale}); cast it in the query (`col::float8` or `col::text`)"))
                }
                None => b.append_null(),
            },
            Self::List { offsets, nulls, inner, .. } => {
                let n = decode_array(v, inner)?;
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + i32::try_from(n).map_err(|_| "array too long")?);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    /// The values so far, as an array; the builder starts over.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::I16(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) | Self::Oid(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Text(b) | Self::Jsonb(b) | Self::Uuid(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Numeric(b, _, _) => Arc::new(b.finish()),
            Self::Interval(b) => Arc::new(b.finish()),
            Self::List { field, offsets, nulls, inner } => {
                let values = inner.finish();
                let offs = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let n = nulls.finish();
                Arc::new(ListArray::new(Arc::clone(field), offs, values, n))
            }
        }
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into().map_err(|_| format!("expected {N} bytes, got {}", v.len()))
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn be_i32(v: &[u8], at: usize) -> Result<i32, String> {
    v.get(at..at + 4).and_then(|s| s.try_into().ok()).map(i32::from_be_bytes).ok_or_else(|| "truncated value".to_string())
}

fn be_i16(v: &[u8], at: usize) -> Result<i16, String> {
    v.get(at..at + 2).and_then(|s| s.try_into().ok()).map(i16::from_be_bytes).ok_or_else(|| "truncated value".to_string())
}

/// Decodes a binary one-dimensional array's elements into `inner`; returns how many.
fn decode_array(v: &[u8], inner: &mut ColumnDecoder) -> Result<usize, String> {
    let ndim = be_i32(v, 0)?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(format!("{ndim}-dimensional arrays are not supported (one dimension only)"));
    }
    let len = usize::try_from(be_i32(v, 12)?).map_err(|_| "negative array length")?;
    let mut at = 20;
    for _ in 0..len {
        let n = be_i32(v, at)?;
        at += 4;
        if n < 0 {
            inner.append_null();
        } else {
            let end = at + n as usize;
            inner.append(v.get(at..end).ok_or("truncated array element")?)?;
            at = end;
        }
    }
    Ok(len)
}

/// Decodes a binary `numeric` as an unscaled integer at `scale` (rounded half away from zero);
/// `None` for NaN and infinities, which decimals cannot hold.
fn decode_numeric(v: &[u8], scale: i8) -> Result<Option<i128>, String> {
    let ndigits = be_i16(v, 0)?;
    let weight = i32::from(be_i16(v, 2)?);
    let sign = be_i16(v, 4)? as u16;
    if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
        return Ok(None);
    }
    let overflow = || "numeric value too large for its decimal type".to_string();
    let mut acc: i128 = 0;
    let mut round_up = false;
    for i in 0..i32::from(ndigits.max(0)) {
        let d = i128::from(be_i16(v, 8 + 2 * i as usize)?);
        // this digit is worth d × 10000^(weight - i); at `scale`, × 10^(4 (weight - i) + scale)
        let exp = 4 * (weight - i) + i32::from(scale);
        if exp >= 0 {
            let f = 10i128.checked_pow(exp as u32).ok_or_else(overflow)?;
            acc = acc.checked_add(d.checked_mul(f).ok_or_else(overflow)?).ok_or_else(overflow)?;
        } else if exp > -4 {
            let f = 10i128.pow((-exp) as u32);
            acc = acc.checked_add(d / f).ok_or_else(overflow)?;
            // the first digit dropped decides the rounding
            round_up = (d % f) * 2 >= f;
            break;
        } else {
            round_up = exp == -4 && d >= 5000;
            break;
        }
    }
    if round_up {
        acc = acc.checked_add(1).ok_or_else(overflow)?;
    }
    Ok(Some(if sign == 0x4000 { -acc } else { acc }))
}

/// The PostgreSQL type a column of Arrow type `dt` is created with, or why there is none.
pub fn ddl_type(dt: &DataType) -> Result<String, String> {
    Ok(match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Time64(_) | DataType::Time32(_) => "time".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        other => return Err(format!("Arrow type {other} has no PostgreSQL column type here; cast it in the query (to a string, say)")),
    })
}

/// Writes binary `COPY` data from Arrow columns.
pub struct CopyEncoder;

impl CopyEncoder {
    /// The binary `COPY` header.
    pub fn header(out: &mut BytesMut) {
        out.put_slice(b"PGCOPY\n\xff\r\n\0");
        out.put_i32(0);
        out.put_i32(0);
    }

    /// The binary `COPY` trailer.
    pub fn trailer(out: &mut BytesMut) {
        out.put_i16(-1);
    }

    /// Appends the rows of `columns` (each of a type [`ddl_type`] accepts), then `extra`
    /// bigint columns with the same value on every row (the staging epoch).
    pub fn rows(out: &mut BytesMut, columns: &[ArrayRef], extra: &[i64]) -> Result<(), String> {
        let rows = columns.first().map_or(0, |c| c.len());
        let width = i16::try_from(columns.len() + extra.len()).map_err(|_| "too many columns")?;
        for row in 0..rows {
            out.put_i16(width);
            for col in columns {
                encode_value(out, col.as_ref(), row)?;
            }
            for x in extra {
                out.put_i32(8);
                out.put_i64(*x);
            }
        }
        Ok(())
    }
}

fn put_field(out: &mut BytesMut, bytes: &[u8]) -> Result<(), String> {
    out.put_i32(i32::try_from(bytes.len()).map_err(|_| "value larger than 2 GiB")?);
    out.put_slice(bytes);
    Ok(())
}

fn encode_value(out: &mut BytesMut, col: &dyn Array, row: usize) -> Result<(), String> {
    if col.is_null(row) {
        out.put_i32(-1);
        return Ok(());
    }
    match col.data_type() {
        DataType::Boolean => {
            out.put_i32(1);
            out.put_u8(u8::from(col.as_boolean().value(row)));
        }
        DataType::Int8 => {
            out.put_i32(2);
            out.put_i16(i16::from(col.as_primitive::<Int8Type>().value(row)));
        }
        DataType::UInt8 => {
            out.put_i32(2);
            out.put_i16(i16::from(col.as_primitive::<UInt8Type>().value(row)));
        }
        DataType::Int16 => {
            out.put_i32(2);
            out.put_i16(col.as_primitive::<Int16Type>().value(row));
        }
        DataType::UInt16 => {
            out.put_i32(4);
            out.put_i32(i32::from(col.as_primitive::<UInt16Type>().value(row)));
        }
        DataType::Int32 => {
            out.put_i32(4);
            out.put_i32(col.as_primitive::<Int32Type>().value(row));
        }
        DataType::UInt32 => {
            out.put_i32(8);
            out.put_i64(i64::from(col.as_primitive::<UInt32Type>().value(row)));
        }
        DataType::Int64 => {
            out.put_i32(8);
            out.put_i64(col.as_primitive::<Int64Type>().value(row));
        }
        DataType::UInt64 => {
            let v = col.as_primitive::<arrow::datatypes::UInt64Type>().value(row);
            encode_numeric(out, i128::from(v), 0)?;
        }
        DataType::Float16 => {
            out.put_i32(4);
            out.put_f32(col.as_primitive::<arrow::datatypes::Float16Type>().value(row).to_f32());
        }
        DataType::Float32 => {
            out.put_i32(4);
            out.put_f32(col.as_primitive::<Float32Type>().value(row));
        }
        DataType::Float64 => {
            out.put_i32(8);
            out.put_f64(col.as_primitive::<Float64Type>().value(row));
        }
        DataType::Utf8 => put_field(out, col.as_string::<i32>().value(row).as_bytes())?,
        DataType::LargeUtf8 => put_field(out, col.as_string::<i64>().value(row).as_bytes())?,
        DataType::Utf8View => put_field(out, col.as_string_view().value(row).as_bytes())?,
        DataType::Binary => put_field(out, col.as_binary::<i32>().value(row))?,
        DataType::LargeBinary => put_field(out, col.as_binary::<i64>().value(row))?,
        DataType::BinaryView => put_field(out, col.as_binary_view().value(row))?,
        DataType::Date32 => {
            let d = col.as_primitive::<Date32Type>().value(row).checked_sub(PG_EPOCH_DAYS).ok_or("date out of PostgreSQL's range")?;
            out.put_i32(4);
            out.put_i32(d);
        }
        DataType::Timestamp(unit, _) => {
            let micros = timestamp_micros(col, *unit, row).checked_sub(PG_EPOCH_MICROS).ok_or("timestamp out of PostgreSQL's range")?;
            out.put_i32(8);
            out.put_i64(micros);
        }
        DataType::Time64(unit) => {
            let v = match unit {
                TimeUnit::Nanosecond => col.as_primitive::<arrow::datatypes::Time64NanosecondType>().value(row) / 1000,
                _ => col.as_primitive::<arrow::datatypes::Time64MicrosecondType>().value(row),
            };
            out.put_i32(8);
            out.put_i64(v);
        }
        DataType::Time32(unit) => {
            let v = match unit {
                TimeUnit::Second => i64::from(col.as_primitive::<arrow::datatypes::Time32SecondType>().value(row)) * 1_000_000,
                _ => i64::from(col.as_primitive::<arrow::datatypes::Time32MillisecondType>().value(row)) * 1000,
            };
            out.put_i32(8);
            out.put_i64(v);
        }
        DataType::Decimal128(_, s) => encode_numeric(out, col.as_primitive::<Decimal128Type>().value(row), *s)?,
        other => return Err(format!("cannot write Arrow type {other} to PostgreSQL")),
    }
    Ok(())
}

fn timestamp_micros(col: &dyn Array, unit: TimeUnit, row: usize) -> i64 {
    use arrow::datatypes::{TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType};
    match unit {
        TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1_000_000),
        TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(row).saturating_mul(1000),
        TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1000),
    }
}

/// Encodes the decimal `unscaled × 10^-scale` as a binary `numeric`.
fn encode_numeric(out: &mut BytesMut, unscaled: i128, scale: i8) -> Result<(), String> {
    let negative = unscaled < 0;
    let mut mag = unscaled.unsigned_abs();
    // a negative scale (Decimal128(5, -2) holding 5 means 500): an integer
    if scale < 0 {
        mag = mag.checked_mul(10u128.pow(u32::from(scale.unsigned_abs()))).ok_or("decimal too large for numeric")?;
    }
    let scale = u32::from(scale.max(0) as u8);
    let p10 = 10u128.pow(scale);
    let (mut int, mut frac) = (mag / p10, mag % p10);
    // base-10000 groups, least significant first: the fraction padded on the right to whole groups
    let frac_groups = scale.div_ceil(4);
    let mut groups: Vec<i16> = Vec::with_capacity(12);
    if frac_groups > 0 {
        let pad = frac_groups * 4 - scale;
        let first = 4 - pad;
        groups.push(((frac % 10u128.pow(first)) * 10u128.pow(pad)) as i16);
        frac /= 10u128.pow(first);
        for _ in 1..frac_groups {
            groups.push((frac % 10_000) as i16);
            frac /= 10_000;
        }
    }
    while int > 0 {
        groups.push((int % 10_000) as i16);
        int /= 10_000;
    }
    // the group at index k is worth 10000^(k - frac_groups); no zeros at either end
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let weight = groups.len() as i32 - 1 - frac_groups as i32;
    let low = groups.iter().position(|g| *g != 0).unwrap_or(groups.len());
    let significant: Vec<i16> = groups[low..].iter().rev().copied().collect();
    out.put_i32(8 + 2 * significant.len() as i32);
    out.put_i16(significant.len() as i16);
    out.put_i16(if significant.is_empty() { 0 } else { weight as i16 });
    out.put_u16(if negative && !significant.is_empty() { 0x4000 } else { 0 });
    out.put_u16(scale as u16);
    for d in significant {
        out.put_i16(d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(unscaled: i128, scale: i8) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_numeric(&mut b, unscaled, scale).unwrap();
        b[4..].to_vec()
    }

    #[test]
    fn numeric_round_trips() {
        for (v, s) in [(12345i128, 2i8), (-5, 2), (0, 3), (1, 0), (10_000, 0), (123_456_789_012, 4), (7, 5), (-100_000_000, 1), (5, 9), (10_000_001, 3)] {
            assert_eq!(decode_numeric(&numeric_bytes(v, s), s).unwrap(), Some(v), "{v} at scale {s}");
        }
        // the largest Decimal128(38, 1) and (38, 37) values do not overflow on the way
        let big = 10i128.pow(38) - 1;
        assert_eq!(decode_numeric(&numeric_bytes(big, 1), 1).unwrap(), Some(big));
        assert_eq!(decode_numeric(&numeric_bytes(-big, 37), 37).unwrap(), Some(-big));
        // a negative scale is an integer: 5 × 10^2
        assert_eq!(decode_numeric(&numeric_bytes(5, -2), 0).unwrap(), Some(500));
        // 1.2345 read at scale 2 rounds half away from zero
        assert_eq!(decode_numeric(&numeric_bytes(12345, 4), 2).unwrap(), Some(123));
        assert_eq!(decode_numeric(&numeric_bytes(12355, 4), 2).unwrap(), Some(124));
        assert_eq!(decode_numeric(&numeric_bytes(-12355, 4), 2).unwrap(), Some(-124));
    }

    /// Arrow columns encoded as binary COPY fields and decoded back give the same values.
    #[test]
    fn encoded_columns_decode_to_themselves() {
        use arrow::array::{BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int16Array, Int32Array, Int64Array, StringArray};
        let ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut ts = ts;
        ts.append_value(1_700_000_000_123_456);
        ts.append_null();
        ts.append_value(-1_000_000);
        let columns: Vec<(ArrayRef, Type)> = vec![
            (Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])), Type::BOOL),
            (Arc::new(Int16Array::from(vec![Some(-3), Some(i16::MAX), None])), Type::INT2),
            (Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(7)])), Type::INT4),
            (Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(0), None])), Type::INT8),
            (Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-0.0)])), Type::FLOAT8),
            (Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None])), Type::TEXT),
            (Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), None, Some(&b""[..])])), Type::BYTEA),
            (Arc::new(Date32Array::from(vec![Some(0), Some(19_000), None])), Type::DATE),
            (Arc::new(ts.finish()), Type::TIMESTAMPTZ),
            (Arc::new(Decimal128Array::from(vec![Some(123_456), None, Some(-1)]).with_precision_and_scale(10, 3).unwrap()), Type::NUMERIC),
        ];
        let arrays: Vec<ArrayRef> = columns.iter().map(|(a, _)| Arc::clone(a)).collect();
        let mut out = BytesMut::new();
        CopyEncoder::rows(&mut out, &arrays, &[]).unwrap();
        let mut decoders: Vec<ColumnDecoder> = columns.iter().map(|(a, t)| ColumnDecoder::new(t, a.data_type()).unwrap()).collect();
        let mut at = 0usize;
        let read_i32 = |b: &[u8], at: usize| i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        for _ in 0..3 {
            let fields = i16::from_be_bytes([out[at], out[at + 1]]) as usize;
            assert_eq!(fields, columns.len());
            at += 2;
            for d in decoders.iter_mut() {
                let n = read_i32(&out, at);
                at += 4;
                if n < 0 {
                    d.append_null();
                } else {
                    d.append(&out[at..at + n as usize]).unwrap();
                    at += n as usize;
                }
            }
        }
        assert_eq!(at, out.len());
        for ((a, t), d) in columns.iter().zip(decoders.iter_mut()) {
            assert_eq!(d.finish().as_ref(), a.as_ref(), "{t}");
        }
    }

    #[test]
    fn types_map_or_say_why_not() {
        assert_eq!(arrow_type(&Type::NUMERIC, ((12 << 16) | 2) + 4).unwrap(), DataType::Decimal128(12, 2));
        assert_eq!(arrow_type(&Type::NUMERIC, -1).unwrap(), DataType::Decimal128(38, 10));
        // numeric(3, 5) (scale above precision, PostgreSQL 15): Arrow has no such decimal
        assert_eq!(arrow_type(&Type::NUMERIC, ((3 << 16) | 5) + 4).unwrap(), DataType::Decimal128(38, 10));
        assert!(matches!(arrow_type(&Type::INT4_ARRAY, -1).unwrap(), DataType::List(_)));
        assert!(arrow_type(&Type::POINT, -1).unwrap_err().contains("'point'"));
    }
}
