//! CSV encoding of record batches: the bytes arrow-csv's writer produces (same number, string,
//! timestamp and date texts, same quoting: a field is quoted when it holds the delimiter, the
//! quote, `\r` or `\n`, and an empty field alone on its line is written `""`), written straight
//! into one buffer. Integers, floats, strings, booleans, dates and timestamps without a time
//! zone are formatted by type, once per column kind rather than through a formatter object per
//! value, and a timestamp's date text is made once per day it falls on; every other type goes
//! through arrow's own formatter. (arrow-csv formatted every value into a `String`, copied it
//! into a record, and the `csv` crate copied it again: Nexmark q10 spent most of its time there.)
//!
//! ```sql
//! CREATE STREAM q10 AS SELECT auction, price, date_time FROM bid INTO out
//! WITH ('out.type' = 'file_sink', 'out.path' = 'bids.csv')
//! ```

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, StringArray, StringViewArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::Datelike;

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAY_FROM_CE: i64 = 719_163;
const SECONDS_PER_DAY: i64 = 86_400;

/// A CSV layout: delimiter and quote; quotes inside a field are doubled.
#[derive(Debug, Clone, Copy)]
pub struct CsvLayout {
    delimiter: u8,
    quote: u8,
    /// The bytes that make a field quoted.
    special: [bool; 256],
    /// Whether a number, boolean, date or timestamp can hold a byte that makes a field
    /// quoted (a delimiter or quote such as `:`, `-`, `.` or a digit): their text is then
    /// checked as a string's is.
    typed_quoted: bool,
}

/// Every byte the texts of numbers, booleans, dates and timestamps are made of (`-1.5e-7`,
/// `NaN`, `inf`, `true`, `false`, `2026-12-01T18:34:05.123`).
const TYPED_BYTES: &[u8] = b"0123456789+-.:TeENaninftruefals";

impl CsvLayout {
    /// A layout with `delimiter` and `quote`.
    pub fn new(delimiter: u8, quote: u8) -> Self {
        let mut special = [false; 256];
        for b in [delimiter, quote, b'\r', b'\n'] {
            special[b as usize] = true;
        }
        let typed_quoted = TYPED_BYTES.iter().any(|b| special[*b as usize]);
        Self { delimiter, quote, special, typed_quoted }
    }

    /// Appends `batch` to `out` as CSV lines, after a header line of its column names when
    /// `header` is set.
    pub fn encode(&self, batch: &RecordBatch, header: bool, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        let options = FormatOptions::default().with_null("");
        let columns = batch
            .columns()
            .iter()
            .map(|a| {
                if a.data_type().is_nested() {
                    return Err(ArrowError::CsvError(format!("Nested type {} is not supported in CSV", a.data_type())));
                }
                Column::new(a, &options)
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        if columns.is_empty() {
            // a line of no field is an empty field alone: `""`, as the csv crate writes it
            let lines = batch.num_rows() + usize::from(header);
            for _ in 0..lines {
                out.extend_from_slice(&[self.quote, self.quote, b'\n']);
            }
            return Ok(());
        }
        let alone = columns.len() == 1;
        if header {
            let schema = batch.schema();
            for (i, f) in schema.fields().iter().enumerate() {
                if i > 0 {
                    out.push(self.delimiter);
                }
                self.field(f.name().as_bytes(), alone, out);
            }
            out.push(b'\n');
        }
        out.reserve(batch.num_rows() * (8 * columns.len() + 1));
        let mut scratch = String::new();
        let mut days = DayMemo::default();
        for row in 0..batch.num_rows() {
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(self.delimiter);
                }
                c.write(self, row, alone, out, &mut scratch, &mut days)
                    .map_err(|e| ArrowError::CsvError(format!("Error processing row {}, col {}: {e}", row + 1, i + 1)))?;
            }
            out.push(b'\n');
        }
        Ok(())
    }

    /// Writes one field's bytes, quoted when they need it (an empty field alone on its line
    /// too, or the line would read as empty).
    #[inline]
    fn field(&self, bytes: &[u8], alone: bool, out: &mut Vec<u8>) {
        if bytes.is_empty() {
            if alone {
                out.extend_from_slice(&[self.quote, self.quote]);
            }
            return;
        }
        if !bytes.iter().any(|b| self.special[*b as usize]) {
            out.extend_from_slice(bytes);
            return;
        }
        out.push(self.quote);
        let mut from = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == self.quote {
                out.extend_from_slice(&bytes[from..=i]);
                out.push(self.quote);
                from = i + 1;
            }
        }
        out.extend_from_slice(&bytes[from..]);
        out.push(self.quote);
    }
}

/// The date text of the day a timestamp falls on, kept while rows stay on that day.
#[derive(Default)]
struct DayMemo {
    day: Option<i64>,
    text: [u8; 10],
}

impl DayMemo {
    /// `YYYY-MM-DD` of `day` (days since 1970-01-01), or `None` outside years 0–9999 (written
    /// otherwise by chrono).
    #[inline]
    fn text(&mut self, day: i64) -> Option<&[u8; 10]> {
        if self.day != Some(day) {
            let ce = i32::try_from(day + UNIX_EPOCH_DAY_FROM_CE).ok()?;
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(ce)?;
            let year = date.year();
            if !(0..=9999).contains(&year) {
                return None;
            }
            let mut t = [0u8; 10];
            put_digits(&mut t[0..4], year as u32);
            t[4] = b'-';
            put_digits(&mut t[5..7], date.month());
            t[7] = b'-';
            put_digits(&mut t[8..10], date.day());
            self.text = t;
            self.day = Some(day);
        }
        Some(&self.text)
    }
}

/// Writes `v` in decimal into all of `to`, zero-padded (the high digits dropped when it has
/// more).
#[inline]
fn put_digits(to: &mut [u8], mut v: u32) {
    for b in to.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// One column, by how its values are written.
struct Column<'a> {
    nulls: Option<&'a NullBuffer>,
    kind: Kind<'a>,
    /// Arrow's formatter: the types without a path of their own, and timestamps out of range.
    general: ArrayFormatter<'a>,
}

enum Kind<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Bool(&'a BooleanArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Date32(&'a [i32]),
    /// A timestamp without a time zone: values and units per second.
    Timestamp(&'a [i64], i64),
    General,
}

impl<'a> Column<'a> {
    fn new(a: &'a ArrayRef, options: &FormatOptions<'a>) -> Result<Self, ArrowError> {
        let general = ArrayFormatter::try_new(a.as_ref(), options)?;
        let kind = match a.data_type() {
            DataType::Int8 => Kind::I8(a.as_primitive::<Int8Type>().values()),
            DataType::Int16 => Kind::I16(a.as_primitive::<Int16Type>().values()),
            DataType::Int32 => Kind::I32(a.as_primitive::<Int32Type>().values()),
            DataType::Int64 => Kind::I64(a.as_primitive::<Int64Type>().values()),
            DataType::UInt8 => Kind::U8(a.as_primitive::<UInt8Type>().values()),
            DataType::UInt16 => Kind::U16(a.as_primitive::<UInt16Type>().values()),
            DataType::UInt32 => Kind::U32(a.as_primitive::<UInt32Type>().values()),
            DataType::UInt64 => Kind::U64(a.as_primitive::<UInt64Type>().values()),
            DataType::Float32 => Kind::F32(a.as_primitive::<Float32Type>().values()),
            DataType::Float64 => Kind::F64(a.as_primitive::<Float64Type>().values()),
            DataType::Boolean => Kind::Bool(a.as_boolean()),
            DataType::Utf8 => Kind::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Kind::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => Kind::Utf8View(a.as_string_view()),
            DataType::Date32 => Kind::Date32(a.as_primitive::<Date32Type>().values()),
            DataType::Timestamp(unit, None) => {
                let (values, per_second) = match unit {
                    TimeUnit::Second => (a.as_primitive::<TimestampSecondType>().values(), 1),
                    TimeUnit::Millisecond => (a.as_primitive::<TimestampMillisecondType>().values(), 1_000),
                    TimeUnit::Microsecond => (a.as_primitive::<TimestampMicrosecondType>().values(), 1_000_000),
                    TimeUnit::Nanosecond => (a.as_primitive::<TimestampNanosecondType>().values(), 1_000_000_000),
                };
                Kind::Timestamp(values, per_second)
            }
            _ => Kind::General,
        };
        Ok(Self { nulls: a.nulls(), kind, general })
    }

    /// Writes the value of `row`: texts through [`CsvLayout::field`]; numbers, booleans,
    /// dates and timestamps as they are, then quoted only where the layout makes one of their
    /// bytes special.
    #[inline]
    fn write(&self, layout: &CsvLayout, row: usize, alone: bool, out: &mut Vec<u8>, scratch: &mut String, days: &mut DayMemo) -> Result<(), ArrowError> {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            layout.field(b"", alone, out);
            return Ok(());
        }
        let text = match &self.kind {
            Kind::Utf8(a) => Some(a.value(row)),
            Kind::LargeUtf8(a) => Some(a.value(row)),
            Kind::Utf8View(a) => Some(a.value(row)),
            Kind::General => Some(self.general_text(row, scratch)?),
            _ => None,
        };
        if let Some(text) = text {
            layout.field(text.as_bytes(), alone, out);
            return Ok(());
        }
        let start = out.len();
        match &self.kind {
            Kind::I8(v) => put_int(out, v[row]),
            Kind::I16(v) => put_int(out, v[row]),
            Kind::I32(v) => put_int(out, v[row]),
            Kind::I64(v) => put_int(out, v[row]),
            Kind::U8(v) => put_int(out, v[row]),
            Kind::U16(v) => put_int(out, v[row]),
            Kind::U32(v) => put_int(out, v[row]),
            Kind::U64(v) => put_int(out, v[row]),
            Kind::F32(v) => out.extend_from_slice(ryu::Buffer::new().format(v[row]).as_bytes()),
            Kind::F64(v) => out.extend_from_slice(ryu::Buffer::new().format(v[row]).as_bytes()),
            Kind::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Kind::Utf8(_) | Kind::LargeUtf8(_) | Kind::Utf8View(_) | Kind::General => {} // written above
            // (chrono's text of other years is of the same bytes as ours)
            Kind::Date32(v) => match days.text(i64::from(v[row])) {
                Some(t) => out.extend_from_slice(t),
                None => out.extend_from_slice(self.general_text(row, scratch)?.as_bytes()),
            },
            Kind::Timestamp(v, per_second) => {
                if !write_timestamp(v[row], *per_second, days, out) {
                    out.extend_from_slice(self.general_text(row, scratch)?.as_bytes());
                }
            }
        }
        if layout.typed_quoted && out[start..].iter().any(|b| layout.special[*b as usize]) {
            let text = out.split_off(start);
            layout.field(&text, alone, out);
        }
        Ok(())
    }

    /// Arrow's text of the value of `row`, in `scratch`.
    fn general_text<'s>(&self, row: usize, scratch: &'s mut String) -> Result<&'s str, ArrowError> {
        scratch.clear();
        self.general.value(row).write(scratch)?;
        Ok(scratch)
    }
}

#[inline]
fn put_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a timestamp of `per_second` units as chrono's `NaiveDateTime` debug text
/// (`2026-12-01T18:34:05`, then `.123`, `.123456` or `.123456789` as the fraction needs);
/// `false` (nothing written) outside years 0–9999.
#[inline]
fn write_timestamp(v: i64, per_second: i64, days: &mut DayMemo, out: &mut Vec<u8>) -> bool {
    let (secs, sub) = (v.div_euclid(per_second), v.rem_euclid(per_second));
    let (day, sod) = (secs.div_euclid(SECONDS_PER_DAY), secs.rem_euclid(SECONDS_PER_DAY));
    let Some(date) = days.text(day) else { return false };
    let mut t = [0u8; 30];
    t[..10].copy_from_slice(date);
    t[10] = b'T';
    put_digits(&mut t[11..13], (sod / 3600) as u32);
    t[13] = b':';
    put_digits(&mut t[14..16], (sod / 60 % 60) as u32);
    t[16] = b':';
    put_digits(&mut t[17..19], (sod % 60) as u32);
    let nanos = (sub * (1_000_000_000 / per_second)) as u32;
    let len = if nanos == 0 {
        19
    } else {
        t[19] = b'.';
        if nanos.is_multiple_of(1_000_000) {
            put_digits(&mut t[20..23], nanos / 1_000_000);
            23
        } else if nanos.is_multiple_of(1_000) {
            put_digits(&mut t[20..26], nanos / 1_000);
            26
        } else {
            put_digits(&mut t[20..29], nanos);
            29
        }
    };
    out.extend_from_slice(&t[..len]);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, TimestampMicrosecondArray,
        TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt64Array, UInt8Array,
    };
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use super::*;

    fn arrow_csv_bytes(batch: &RecordBatch, header: bool, delimiter: u8, quote: u8) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::new();
        {
            let mut w = arrow_csv::WriterBuilder::new().with_header(header).with_delimiter(delimiter).with_quote(quote).build(&mut out);
            w.write(batch)?;
        }
        Ok(out)
    }

    fn ours(batch: &RecordBatch, header: bool, delimiter: u8, quote: u8) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::new();
        CsvLayout::new(delimiter, quote).encode(batch, header, &mut out)?;
        Ok(out)
    }

    fn text_strategy() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(0.85, prop::collection::vec(prop::sample::select(vec!["a", "b", ",", ";", "\"", "'", "\n", "\r", " ", "é", "x"]), 0..6))
            .prop_map(|o| o.map(|v| v.concat()))
    }

    fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Arc::new(Schema::new(columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>()));
        RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Every kind of column, nulls, texts that need quotes, timestamps of every unit
        /// (before 1970 and past year 9999 too): arrow-csv's bytes exactly.
        #[test]
        fn every_type_is_written_as_arrow_csv_writes_it(
            rows in prop::collection::vec((
                any::<Option<i64>>(), any::<Option<i8>>(), any::<Option<u64>>(), any::<Option<f64>>(), any::<Option<f32>>(),
                text_strategy(), any::<Option<bool>>(),
                prop_oneof![Just(None), (-100_000_000_000_000i64..300_000_000_000_000i64).prop_map(Some), any::<i64>().prop_map(Some)],
                0..3usize, prop::option::of(-800_000i32..3_000_000),
            ), 0..40),
            header in any::<bool>(),
            layout in prop::sample::select(vec![(b',', b'"'), (b';', b'\''), (b'\t', b'"'), (b'|', b'"'), (b':', b'"'), (b'-', b'\''), (b',', b'.'), (b'1', b'"'), (b'e', b't'), (b'T', b'N')]),
        ) {
            let ts: Vec<Option<i64>> = rows.iter().map(|r| r.7.map(|v| if r.8 == 0 { v } else { v / 1000 * 1000 })).collect();
            let batch = batch_of(vec![
                ("i64", Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef),
                ("i,8", Arc::new(Int8Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()))),
                ("u64", Arc::new(UInt64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()))),
                ("f64", Arc::new(Float64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>()))),
                ("f32", Arc::new(Float32Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>()))),
                ("s", Arc::new(StringArray::from(rows.iter().map(|r| r.5.clone()).collect::<Vec<_>>()))),
                ("ls", Arc::new(LargeStringArray::from(rows.iter().map(|r| r.5.clone()).collect::<Vec<_>>()))),
                ("vs", Arc::new(StringViewArray::from(rows.iter().map(|r| r.5.clone()).collect::<Vec<_>>()))),
                ("b", Arc::new(BooleanArray::from(rows.iter().map(|r| r.6).collect::<Vec<_>>()))),
                ("ns", Arc::new(TimestampNanosecondArray::from(ts.clone()))),
                ("us", Arc::new(TimestampMicrosecondArray::from(ts.iter().map(|v| v.map(|v| v / 1000)).collect::<Vec<_>>()))),
                ("ms", Arc::new(TimestampMillisecondArray::from(ts.iter().map(|v| v.map(|v| v / 1_000_000)).collect::<Vec<_>>()))),
                ("s\"ec", Arc::new(TimestampSecondArray::from(ts.iter().map(|v| v.map(|v| v / 1_000_000_000)).collect::<Vec<_>>()))),
                // seconds far from 1970: years past 9999 and before 0 (chrono's text)
                ("far", Arc::new(TimestampSecondArray::from(rows.iter().map(|r| r.7.map(|v| v % 8_000_000_000_000)).collect::<Vec<_>>()))),
                ("d", Arc::new(Date32Array::from(rows.iter().map(|r| r.9).collect::<Vec<_>>()))),
                ("dec", Arc::new(Decimal128Array::from(rows.iter().map(|r| r.0.map(i128::from)).collect::<Vec<_>>()).with_precision_and_scale(20, 3).unwrap())),
                ("bin", Arc::new(BinaryArray::from(rows.iter().map(|r| r.5.as_deref().map(str::as_bytes)).collect::<Vec<_>>()))),
                ("i16", Arc::new(Int16Array::from(rows.iter().map(|r| r.1.map(i16::from)).collect::<Vec<_>>()))),
                ("i32", Arc::new(Int32Array::from(rows.iter().map(|r| r.9).collect::<Vec<_>>()))),
                ("u8", Arc::new(UInt8Array::from(rows.iter().map(|r| r.1.map(|v| v as u8)).collect::<Vec<_>>()))),
            ]);
            let (d, q) = layout;
            let want = arrow_csv_bytes(&batch, header, d, q);
            let got = ours(&batch, header, d, q);
            match (want, got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(String::from_utf8_lossy(&g), String::from_utf8_lossy(&w)),
                (Err(_), Err(_)) => {}
                (w, g) => prop_assert!(false, "arrow-csv: {:?}, ours: {:?}", w.map(|b| String::from_utf8_lossy(&b).into_owned()), g.map(|b| String::from_utf8_lossy(&b).into_owned())),
            }
            // one column: an empty field alone on its line is quoted
            for i in [5, 9, 0] {
                let one = batch.project(&[i]).unwrap();
                let want = arrow_csv_bytes(&one, header, d, q).map_err(|e| e.to_string());
                let got = ours(&one, header, d, q).map_err(|e| e.to_string());
                prop_assert_eq!(got.is_ok(), want.is_ok());
                if let (Ok(w), Ok(g)) = (want, got) {
                    prop_assert_eq!(String::from_utf8_lossy(&g), String::from_utf8_lossy(&w));
                }
            }
        }
    }

    /// A sliced batch (an offset into every buffer) is written as its own rows.
    #[test]
    fn a_sliced_batch_writes_its_own_rows() {
        let batch = batch_of(vec![
            ("id", Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec![Some("a"), Some("b,c"), None, Some("d\"e")]))),
            ("t", Arc::new(TimestampMillisecondArray::from(vec![Some(0), Some(1_767_225_600_123), None, Some(-1)]))),
        ]);
        let sliced = batch.slice(1, 3);
        assert_eq!(ours(&sliced, true, b',', b'"').unwrap(), arrow_csv_bytes(&sliced, true, b',', b'"').unwrap());
        assert_eq!(
            String::from_utf8(ours(&sliced, false, b',', b'"').unwrap()).unwrap(),
            ",\"b,c\",2026-01-01T00:00:00.123\n3,,\n4,\"d\"\"e\",1969-12-31T23:59:59.999\n"
        );
    }

    /// A batch of no column: a line of `""` per row, as arrow-csv writes it.
    #[test]
    fn a_batch_of_no_columns_writes_empty_fields() {
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(2));
        let batch = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options).unwrap();
        for header in [true, false] {
            assert_eq!(ours(&batch, header, b',', b'"').unwrap(), arrow_csv_bytes(&batch, header, b',', b'"').unwrap());
        }
    }

    /// A nested column is refused, as arrow-csv refuses it.
    #[test]
    fn nested_columns_are_refused() {
        let list = arrow::array::ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        let batch = batch_of(vec![("l", Arc::new(list) as ArrayRef)]);
        let e = ours(&batch, true, b',', b'"').unwrap_err();
        assert!(e.to_string().contains("Nested type"), "{e}");
    }
}
