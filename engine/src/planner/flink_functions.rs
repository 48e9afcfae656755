//! Flink SQL's functions that DataFusion names otherwise or lacks, so that Flink's queries
//! (Nexmark's among them) run as their users wrote them.
//!
//! ```sql
//! SELECT DATE_FORMAT(date_time, 'yyyy-MM-dd') AS day, HOUR(date_time) AS h,
//!        SPLIT_INDEX(url, '/', 3) AS dir1,
//!        REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) AS channel_id
//! FROM bid
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Registers `DATE_FORMAT`, `HOUR`, `SPLIT_INDEX` and `REGEXP_EXTRACT`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(DateFormat::default()));
    ctx.register_udf(ScalarUDF::from(Hour::default()));
    ctx.register_udf(ScalarUDF::from(SplitIndex::default()));
    ctx.register_udf(ScalarUDF::from(RegexpExtract::default()));
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A time argument: strings are read as timestamps (cast: the plan's casts of text read it
/// directly, `text_times`), times kept as they are.
fn time_argument(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        t if is_string(t) => Ok(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Ok(t.clone()),
        DataType::Null => Ok(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        other => plan_err!("{name} takes a timestamp, a date or a timestamp string, not {other}"),
    }
}

/// Translates a Java (`SimpleDateFormat`, Flink's) pattern into a chrono/`to_char` one:
/// `yyyy-MM-dd HH:mm:ss.SSS` → `%Y-%m-%d %H:%M:%S%.3f`-like, text in quotes kept as is.
pub fn java_pattern_to_chrono(pattern: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    for token in pattern_tokens(pattern)? {
        let (c, run) = match token {
            Token::Text(t) => {
                out.push_str(&t.replace('%', "%%"));
                continue;
            }
            Token::Letters(c, run) => (c, run),
        };
        let spec = match (c, run) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1) => "%1f",
            ('S', 2) => "%2f",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('D', _) => "%j",
            ('Z', _) | ('X', _) | ('x', _) => "%z",
            ('z', _) => "%Z",
            _ => return Err(format!("date pattern letter '{}' (in '{pattern}') is not supported", c.to_string().repeat(run))),
        };
        out.push_str(spec);
    }
    Ok(out)
}

/// A part of a Java date pattern: literal text (quotes resolved), or a run of one letter.
enum Token {
    Text(String),
    Letters(char, usize),
}

/// Splits a Java date pattern into literal text and letter runs (`yyyy`, `MM`, …); `'…'` is
/// quoted text and `''` a quote.
fn pattern_tokens(pattern: &str) -> std::result::Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let text = |out: &mut Vec<Token>, c: char| match out.last_mut() {
        Some(Token::Text(t)) => t.push(c),
        _ => out.push(Token::Text(c.to_string())),
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                text(&mut out, '\'');
                i += 2;
                continue;
            }
            let Some(len) = chars[i + 1..].iter().position(|&q| q == '\'') else {
                return Err(format!("unterminated quote in date pattern '{pattern}'"));
            };
            for &q in &chars[i + 1..i + 1 + len] {
                text(&mut out, q);
            }
            i += len + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            text(&mut out, c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        out.push(Token::Letters(c, run));
        i += run;
    }
    Ok(out)
}

/// One piece of a pattern made of numeric fields only (the common case, formatted without
/// chrono: `yyyy-MM-dd`, `HH:mm`, `yyyy-MM-dd HH:mm:ss.SSS`).
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millis,
}

/// The pieces of `pattern` when it has only `yyyy`, `MM`, `dd`, `HH`, `mm`, `ss`, `SSS` and text.
fn numeric_pattern(pattern: &str) -> Option<Vec<Piece>> {
    pattern_tokens(pattern)
        .ok()?
        .into_iter()
        .map(|t| match t {
            Token::Text(t) => Some(Piece::Text(t)),
            Token::Letters('y', 4) => Some(Piece::Year),
            Token::Letters('M', 2) => Some(Piece::Month),
            Token::Letters('d', 2) => Some(Piece::Day),
            Token::Letters('H', 2) => Some(Piece::Hour),
            Token::Letters('m', 2) => Some(Piece::Minute),
            Token::Letters('s', 2) => Some(Piece::Second),
            Token::Letters('S', 3) => Some(Piece::Millis),
            Token::Letters(..) => None,
        })
        .collect()
}

/// (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Appends `v` in decimal, zero-padded to `width` digits (no allocation).
fn push_digits(buf: &mut String, v: i64, width: usize) {
    if v < 0 {
        buf.push('-');
    }
    let mut n = v.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        buf.push('0');
    }
    for &d in digits[..len].iter().rev() {
        buf.push(char::from(d));
    }
}

/// `DATE_FORMAT` of a numeric pattern, computed from the epoch values; `None` for inputs it
/// does not cover (a time zone other than UTC), which go to `to_char`.
fn format_numeric(input: &ColumnarValue, pieces: &[Piece], rows: usize) -> Result<Option<ColumnarValue>> {
    use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType};
    let array = input.to_array(rows)?;
    // (epoch value, units per second) per row
    let per_second: i64 = match array.data_type() {
        DataType::Timestamp(_, Some(tz)) if !matches!(tz.as_ref(), "UTC" | "+00:00" | "Z") => return Ok(None),
        DataType::Timestamp(TimeUnit::Second, _) => 1,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000_000,
        DataType::Date32 => 0,
        _ => return Ok(None),
    };
    let values: Box<dyn Iterator<Item = Option<i64>>> = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => Box::new(array.as_primitive::<TimestampSecondType>().iter()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Box::new(array.as_primitive::<TimestampMillisecondType>().iter()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Box::new(array.as_primitive::<TimestampMicrosecondType>().iter()),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Box::new(array.as_primitive::<TimestampNanosecondType>().iter()),
        _ => Box::new(array.as_primitive::<Date32Type>().iter().map(|d| d.map(i64::from))),
    };
    // the finest field of the pattern: rows in the same day (minute, …) as the row before are
    // that row's text again (a batch of events is mostly one day: q15–q17 format `yyyy-MM-dd`)
    let unit_secs: Option<i64> = if pieces.contains(&Piece::Millis) {
        None
    } else if pieces.contains(&Piece::Second) {
        Some(1)
    } else if pieces.contains(&Piece::Minute) {
        Some(60)
    } else if pieces.contains(&Piece::Hour) {
        Some(3_600)
    } else {
        Some(86_400)
    };
    let mut last: Option<i64> = None;
    let mut out = StringBuilder::with_capacity(rows, rows * 16);
    let mut buf = String::with_capacity(32);
    for v in values {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        let (secs, millis) = if per_second == 0 { (v * 86_400, 0) } else { (v.div_euclid(per_second), v.rem_euclid(per_second) * 1000 / per_second) };
        if let Some(unit) = unit_secs {
            let key = secs.div_euclid(unit);
            if last == Some(key) {
                out.append_value(&buf);
                continue;
            }
            last = Some(key);
        }
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        buf.clear();
        for p in pieces {
            match p {
                Piece::Text(t) => buf.push_str(t),
                Piece::Year => push_digits(&mut buf, y, 4),
                Piece::Month => push_digits(&mut buf, i64::from(m), 2),
                Piece::Day => push_digits(&mut buf, i64::from(d), 2),
                Piece::Hour => push_digits(&mut buf, sod / 3600, 2),
                Piece::Minute => push_digits(&mut buf, sod / 60 % 60, 2),
                Piece::Second => push_digits(&mut buf, sod % 60, 2),
                Piece::Millis => push_digits(&mut buf, millis, 3),
            }
        }
        out.append_value(&buf);
    }
    let result: ArrayRef = Arc::new(out.finish());
    Ok(Some(match input {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(result),
    }))
}

/// `DATE_FORMAT(ts, 'yyyy-MM-dd')`: Flink's formatting of a timestamp with a Java pattern,
/// evaluated by DataFusion's `to_char` with the pattern translated once.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    signature: Signature,
}

impl Default for DateFormat {
    fn default() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t, _] => Ok(vec![time_argument("DATE_FORMAT", t)?, DataType::Utf8]),
            _ => plan_err!("DATE_FORMAT takes a timestamp and a pattern: DATE_FORMAT(ts, 'yyyy-MM-dd')"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(pattern) = args.args.get(1).and_then(string_scalar).map(str::to_string) else {
            return exec_err!("DATE_FORMAT needs its pattern as a literal: DATE_FORMAT(ts, 'yyyy-MM-dd')");
        };
        if let Some(fields) = numeric_pattern(&pattern) {
            if let Some(out) = format_numeric(&args.args[0], &fields, args.number_rows)? {
                return Ok(out);
            }
        }
        let chrono = match java_pattern_to_chrono(&pattern) {
            Ok(c) => c,
            Err(e) => return exec_err!("DATE_FORMAT: {e}"),
        };
        let to_char = datafusion::functions::datetime::to_char();
        let mut arg_fields = args.arg_fields.clone();
        if arg_fields.len() == 2 {
            arg_fields[1] = Arc::new(Field::new("format", DataType::Utf8, true));
        }
        to_char.invoke_with_args(ScalarFunctionArgs {
            args: vec![args.args[0].clone(), ColumnarValue::Scalar(ScalarValue::Utf8(Some(chrono)))],
            arg_fields,
            number_rows: args.number_rows,
            return_field: args.return_field,
            config_options: args.config_options,
        })
    }
}

/// `HOUR(ts)`: the hour of the day (0–23), as Flink's `HOUR`; DataFusion's
/// `date_part('hour', ts)` under another name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hour {
    signature: Signature,
}

impl Default for Hour {
    fn default() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Hour {
    fn name(&self) -> &str {
        "hour"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] => Ok(vec![time_argument("HOUR", t)?]),
            _ => plan_err!("HOUR takes one timestamp: HOUR(ts)"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(hours) = utc_hours(&args.args[0]) {
            return Ok(hours);
        }
        let date_part = datafusion::functions::datetime::date_part();
        let field = Arc::new(Field::new("part", DataType::Utf8, false));
        let arg_fields = std::iter::once(field).chain(args.arg_fields.iter().cloned()).collect();
        let hours = date_part.invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Scalar(ScalarValue::Utf8(Some("hour".into()))), args.args[0].clone()],
            arg_fields,
            number_rows: args.number_rows,
            return_field: Arc::new(Field::new("hour", DataType::Int32, true)),
            config_options: args.config_options,
        })?;
        hours.cast_to(&DataType::Int64, None)
    }
}

/// The hours of a column of timestamps without a zone (or in UTC), by integer arithmetic: a
/// day is 24 hours there, so the hour is the whole hours since the epoch modulo 24 (chrono's
/// calendar, which `date_part` goes through, gives the same for every instant).
fn utc_hours(times: &ColumnarValue) -> Option<ColumnarValue> {
    let ColumnarValue::Array(array) = times else { return None };
    let DataType::Timestamp(unit, zone) = array.data_type() else { return None };
    if zone.as_deref().is_some_and(|z| !matches!(z, "UTC" | "+00:00" | "Z")) {
        return None;
    }
    let per_hour: i64 = match unit {
        TimeUnit::Second => 3_600,
        TimeUnit::Millisecond => 3_600_000,
        TimeUnit::Microsecond => 3_600_000_000,
        TimeUnit::Nanosecond => 3_600_000_000_000,
    };
    // chrono's calendar ends in the years ±262 143, where `date_part` gives NULL: a column
    // reaching past ±250 000 years is left to it
    let limit = 8_000_000_000_000i64.saturating_mul(per_hour / 3_600);
    let hour = |v: i64| v.div_euclid(per_hour).rem_euclid(24);
    fn within<T: datafusion::arrow::datatypes::ArrowPrimitiveType<Native = i64>>(a: &datafusion::arrow::array::PrimitiveArray<T>, limit: i64) -> bool {
        let inside = |v: Option<i64>| v.is_none_or(|v| (-limit..=limit).contains(&v));
        inside(datafusion::arrow::compute::min(a)) && inside(datafusion::arrow::compute::max(a))
    }
    let values: Int64Array = match unit {
        TimeUnit::Second => Some(array.as_primitive::<TimestampSecondType>()).filter(|a| within(a, limit))?.unary(hour),
        TimeUnit::Millisecond => Some(array.as_primitive::<TimestampMillisecondType>()).filter(|a| within(a, limit))?.unary(hour),
        TimeUnit::Microsecond => Some(array.as_primitive::<TimestampMicrosecondType>()).filter(|a| within(a, limit))?.unary(hour),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().unary(hour),
    };
    Some(ColumnarValue::Array(Arc::new(values)))
}

/// Iterates a string column of any of Arrow's three string types.
fn string_values(array: &ArrayRef) -> Result<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        DataType::Null => Box::new((0..array.len()).map(|_| None)),
        other => return exec_err!("expected a string, got {other}"),
    })
}

/// The arguments as arrays of `rows` rows (scalars repeated).
fn arrays(args: &[ColumnarValue], rows: usize) -> Result<Vec<ArrayRef>> {
    args.iter().map(|a| a.to_array(rows)).collect()
}

fn string_coercion(name: &str, arg_types: &[DataType], ints: &[usize], usage: &str, arity: std::ops::RangeInclusive<usize>) -> Result<Vec<DataType>> {
    if !arity.contains(&arg_types.len()) {
        return plan_err!("{name} takes {usage}");
    }
    arg_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if ints.contains(&i) {
                if t.is_integer() || t.is_null() {
                    Ok(DataType::Int64)
                } else {
                    plan_err!("{name}: argument {} must be an integer ({usage})", i + 1)
                }
            } else if is_string(t) || t.is_null() {
                Ok(t.clone())
            } else {
                plan_err!("{name}: argument {} must be a string ({usage})", i + 1)
            }
        })
        .collect()
}

/// `SPLIT_INDEX(s, delimiter, n)`: the `n`-th (from 0) piece of `s` split at `delimiter`, NULL
/// when there is no such piece (Flink's function; DataFusion's `SPLIT_PART` counts from 1 and
/// gives an empty string instead).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SplitIndex {
    signature: Signature,
}

impl Default for SplitIndex {
    fn default() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        string_coercion("SPLIT_INDEX", arg_types, &[2], "a string, a delimiter and a 0-based index: SPLIT_INDEX(url, '/', 3)", 3..=3)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        // pieces of string views are views into the same buffers
        Ok(if arg_types.first() == Some(&DataType::Utf8View) { DataType::Utf8View } else { DataType::Utf8 })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if let (ColumnarValue::Array(s), Some(d), Some(n)) = (&args.args[0], one_byte_scalar(&args.args[1]), index_scalar(&args.args[2])) {
            // the common case, a column split at a constant ASCII delimiter: no per-row
            // arguments, and (string views) no copy of the pieces
            if let Some(pieces) = s.as_string_view_opt().and_then(|views| view_pieces(views, d, n)) {
                return as_planned(Arc::new(pieces), &args);
            }
            if let Some(strings) = s.as_string_opt::<i32>() {
                let mut out = StringBuilder::with_capacity(rows, rows * 8);
                for v in strings.iter() {
                    out.append_option(v.and_then(|v| nth_piece(v, d, n)));
                }
                return as_planned(Arc::new(out.finish()), &args);
            }
        }
        let a = arrays(&args.args, rows)?;
        let index = a[2].as_primitive::<Int64Type>();
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for (i, (s, d)) in string_values(&a[0])?.zip(string_values(&a[1])?).enumerate() {
            let n = if index.is_null(i) { -1 } else { index.value(i) };
            match (s, d) {
                (Some(s), Some(d)) if n >= 0 && d.len() == 1 => out.append_option(nth_piece(s, d.as_bytes()[0], n as usize)),
                (Some(s), Some(d)) if n >= 0 && !d.is_empty() => out.append_option(s.split(d).nth(n as usize)),
                (Some(s), Some(_)) if n == 0 => out.append_value(s),
                _ => out.append_null(),
            }
        }
        as_planned(Arc::new(out.finish()), &args)
    }
}

/// `array` as the type the plan gave the function's result (its input's string type may differ
/// from the planned one at run time).
fn as_planned(array: ArrayRef, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let planned = args.return_field.data_type();
    if array.data_type() == planned {
        return Ok(ColumnarValue::Array(array));
    }
    Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(&array, planned)?))
}

/// A constant string (not NULL).
fn string_scalar(v: &ColumnarValue) -> Option<&str> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => Some(s),
        _ => None,
    }
}

/// A constant capture group: 0 when none is given; `Some(None)` for a NULL or negative one
/// (every row NULL); `None` when it is not a constant.
fn group_scalar(v: Option<&ColumnarValue>) -> Option<Option<usize>> {
    match v {
        None => Some(Some(0)),
        Some(ColumnarValue::Scalar(ScalarValue::Int64(g))) => Some(g.and_then(|g| usize::try_from(g).ok())),
        _ => None,
    }
}

/// A constant one-byte ASCII delimiter.
fn one_byte_scalar(v: &ColumnarValue) -> Option<u8> {
    match *string_scalar(v)?.as_bytes() {
        [d] if d.is_ascii() => Some(d),
        _ => None,
    }
}

/// A constant piece index, 0 or more.
fn index_scalar(v: &ColumnarValue) -> Option<usize> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(n))) => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// The `n`-th piece of every string of `strings` split at the ASCII byte `d`, as views into
/// the same buffers (a piece of 12 bytes or less is inlined in its view, as Arrow wants).
/// `None` should a piece lie beyond what a view can address (the caller copies instead).
fn view_pieces(strings: &datafusion::arrow::array::StringViewArray, d: u8, n: usize) -> Option<datafusion::arrow::array::StringViewArray> {
    use datafusion::arrow::array::builder::NullBufferBuilder;
    use datafusion::arrow::array::{ByteView, StringViewArray};
    use datafusion::arrow::buffer::ScalarBuffer;
    let rows = strings.len();
    let mut views: Vec<u128> = Vec::with_capacity(rows);
    let mut nulls = NullBufferBuilder::new(rows);
    let mut in_buffers = false;
    for (i, &view) in strings.views().iter().enumerate() {
        let piece = if strings.is_null(i) { None } else { piece_range(strings.value(i).as_bytes(), d, n) };
        let Some((start, end)) = piece else {
            views.push(0);
            nulls.append_null();
            continue;
        };
        let bytes = &strings.value(i).as_bytes()[start..end];
        let len = view as u32;
        let v = if bytes.len() <= 12 || len <= 12 {
            // inlined (a string of 12 bytes or less has its bytes in the view, not a buffer)
            datafusion::arrow::array::make_view(bytes, 0, 0)
        } else {
            let at = ByteView::from(view);
            in_buffers = true;
            // the piece starts inside the string's bytes, inside its buffer
            let offset = u32::try_from(start).ok().and_then(|start| at.offset.checked_add(start))?;
            datafusion::arrow::array::make_view(bytes, at.buffer_index, offset)
        };
        views.push(v);
        nulls.append_non_null();
    }
    // SAFETY: every view is either inlined from valid UTF-8 cut at an ASCII delimiter, or points
    // at such a piece inside a buffer of `strings` (same buffers, same indices, in bounds)
    // (every piece inlined: the input's buffers are not kept alive for nothing)
    let buffers = if in_buffers { strings.data_buffers().to_vec() } else { Vec::new() };
    Some(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, nulls.finish()) })
}

/// Where the `n`-th piece of `s` split at the byte `d` lies.
fn piece_range(s: &[u8], d: u8, n: usize) -> Option<(usize, usize)> {
    let start = match n {
        0 => 0,
        n => nth_byte(s, d, n - 1)? + 1,
    };
    let rest = s.get(start..)?;
    Some((start, nth_byte(rest, d, 0).map_or(s.len(), |i| start + i)))
}

/// The index of the `k`-th (from 0) byte `d` of `s`: eight bytes at a time (the delimiters of a
/// word found at once, whole words of fewer than needed skipped), the tail one by one. Short
/// strings such as URLs are where a call to `memchr` costs more than it saves.
fn nth_byte(s: &[u8], d: u8, mut k: usize) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let splat = u64::from_ne_bytes([d; 8]);
    let mut words = s.chunks_exact(8);
    for (w, word) in words.by_ref().enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        // a zero byte of `x` is a delimiter: its high bit set in `found`, exactly
        let x = u64::from_le_bytes(bytes) ^ splat;
        let mut found = !(((x & LOW7) + LOW7) | x | LOW7);
        let here = found.count_ones() as usize;
        if here <= k {
            k -= here;
            continue;
        }
        for _ in 0..k {
            found &= found - 1;
        }
        return Some(w * 8 + (found.trailing_zeros() / 8) as usize);
    }
    let tail = words.remainder();
    let base = s.len() - tail.len();
    tail.iter().enumerate().filter(|(_, &c)| c == d).nth(k).map(|(i, _)| base + i)
}

/// The `n`-th piece of `s` split at the one-byte (ASCII) delimiter `d`.
fn nth_piece(s: &str, d: u8, n: usize) -> Option<&str> {
    let (start, end) = piece_range(s.as_bytes(), d, n)?;
    s.get(start..end)
}

/// `REGEXP_EXTRACT(s, pattern [, group])`: the text of capture group `group` (0, the default:
/// the whole match) of the first match of `pattern` in `s`; NULL when nothing matches or the
/// group took no part (Flink's function).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RegexpExtract {
    signature: Signature,
}

impl Default for RegexpExtract {
    fn default() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        string_coercion("REGEXP_EXTRACT", arg_types, &[2], "a string, a pattern and a group: REGEXP_EXTRACT(url, 'id=([0-9]+)', 1)", 2..=3)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if let (ColumnarValue::Array(strings), Some(pattern), Some(group)) = (&args.args[0], string_scalar(&args.args[1]), group_scalar(args.args.get(2))) {
            // the common case, a column and a constant pattern and group: compiled once, the
            // capture positions found without a new allocation per row
            // (compiled at the first row that needs it, as row by row: a bad pattern over NULLs
            // only is no error)
            let mut compiled: Option<(regex::Regex, regex::CaptureLocations)> = None;
            let mut out = StringBuilder::with_capacity(rows, rows * 8);
            for s in string_values(strings)? {
                let value = match (s, group) {
                    (Some(s), Some(g)) => {
                        if compiled.is_none() {
                            let re = regex::Regex::new(pattern).or_else(|e| exec_err!("REGEXP_EXTRACT: invalid pattern '{pattern}': {e}"))?;
                            let locations = re.capture_locations();
                            compiled = Some((re, locations));
                        }
                        compiled
                            .as_mut()
                            .and_then(|(re, locations)| re.captures_read(locations, s).and_then(|_| locations.get(g)).and_then(|(from, to)| s.get(from..to)))
                    }
                    _ => None,
                };
                out.append_option(value);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let a = arrays(&args.args, rows)?;
        let groups = a.get(2).map(|g| g.as_primitive::<Int64Type>().clone());
        let mut compiled: HashMap<String, regex::Regex> = HashMap::new();
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for (i, (s, p)) in string_values(&a[0])?.zip(string_values(&a[1])?).enumerate() {
            let group = match &groups {
                Some(g) if g.is_null(i) => {
                    out.append_null();
                    continue;
                }
                Some(g) => g.value(i),
                None => 0,
            };
            let (Some(s), Some(p)) = (s, p) else {
                out.append_null();
                continue;
            };
            if !compiled.contains_key(p) {
                match regex::Regex::new(p) {
                    Ok(re) => compiled.insert(p.to_string(), re),
                    Err(e) => return exec_err!("REGEXP_EXTRACT: invalid pattern '{p}': {e}"),
                };
            }
            let value = compiled.get(p).and_then(|re| re.captures(s)).and_then(|c| usize::try_from(group).ok().and_then(|g| c.get(g))).map(|m| m.as_str());
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn delimiters_found_a_word_at_a_time_are_those_found_one_by_one() {
        let naive = |s: &[u8], d: u8, n: usize| -> Option<(usize, usize)> {
            let text = std::str::from_utf8(s).unwrap();
            let piece = text.split(d as char).nth(n)?;
            let start = text.split(d as char).take(n).map(|p| p.len() + 1).sum::<usize>();
            Some((start, start + piece.len()))
        };
        let mut seed = 7u64;
        for len in 0..70 {
            for _ in 0..40 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        // delimiters, bytes one away from them, and others
                        [b'/', b'.', b'0', b'a', 0x0f, b'/'][(seed >> 33) as usize % 6]
                    })
                    .collect();
                for n in 0..12 {
                    assert_eq!(piece_range(&s, b'/', n), naive(&s, b'/', n), "{:?} piece {n}", String::from_utf8_lossy(&s));
                }
            }
        }
    }

    #[tokio::test]
    async fn regexp_extract_of_a_column_with_a_constant_pattern_answers_as_row_by_row() {
        let ctx = SessionContext::new();
        register(&ctx);
        let rows = "('q=1&channel_id=42&x', '(&|^)channel_id=([^&]*)'), ('channel_id=7', '(&|^)channel_id=([^&]*)'), ('q=1', '(&|^)channel_id=([^&]*)'), \
                    (NULL, '(&|^)channel_id=([^&]*)'), ('a&channel_id=&b', '(&|^)channel_id=([^&]*)')";
        let all = |sql: String| {
            let ctx = &ctx;
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
            }
        };
        for group in ["0", "1", "2", "3", "-1", "NULL"] {
            // a constant pattern (compiled once) and the same pattern as a column (row by row)
            let constant = all(format!("SELECT REGEXP_EXTRACT(column1, '(&|^)channel_id=([^&]*)', {group}) AS v FROM (VALUES {rows})")).await;
            let per_row = all(format!("SELECT REGEXP_EXTRACT(column1, column2, {group}) AS v FROM (VALUES {rows})")).await;
            assert_eq!(constant, per_row, "group {group}");
        }
        // a bad pattern is an error only where a row needs it
        let nulls = all("SELECT REGEXP_EXTRACT(CAST(column1 AS VARCHAR), '(', 1) IS NULL AS v FROM (VALUES (NULL), (NULL))".to_string()).await;
        assert!(nulls.contains("| true"), "{nulls}");
        let two = all(format!("SELECT REGEXP_EXTRACT(column1, '(&|^)channel_id=([^&]*)', 2) AS v FROM (VALUES {rows})")).await;
        assert!(two.contains("| 42 ") && two.contains("| 7 "), "{two}");
    }

    #[test]
    fn pieces_of_string_views_are_views_into_the_same_buffers() {
        use datafusion::arrow::array::StringViewArray;
        let long = "https://www.nexmark.com/abcdefghijklmnopqrstuv/wxyz0123456789abcdef/item.htm";
        let values = vec![Some(long), Some("a/b"), None, Some("no-delimiter-at-all-here"), Some("a//b/"), Some("é/ü/ß"), Some(""), Some(long)];
        let strings = StringViewArray::from(values.clone());
        for n in 0..8 {
            let got = view_pieces(&strings, b'/', n).unwrap();
            let want: Vec<Option<&str>> = values.iter().map(|v| v.and_then(|v| nth_piece(v, b'/', n))).collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "piece {n}");
            // long pieces point into the input's buffers: nothing copied
            let long_pieces = got.iter().flatten().any(|p| p.len() > 12);
            assert_eq!(got.data_buffers().len(), if long_pieces { strings.data_buffers().len() } else { 0 }, "piece {n}");
        }
        assert_eq!(nth_piece(long, b'/', 3), Some("abcdefghijklmnopqrstuv"));
        assert_eq!(view_pieces(&strings, b'/', 3).unwrap().value(0), "abcdefghijklmnopqrstuv");
        // a slice, and strings over several small buffers: valid arrays, the same pieces
        let mut builder = datafusion::arrow::array::StringViewBuilder::new().with_fixed_block_size(64);
        for v in &values {
            builder.append_option(*v);
        }
        let blocks = builder.finish();
        assert!(blocks.data_buffers().len() > 1);
        for input in [blocks.slice(1, 6), strings.slice(3, 5), blocks] {
            for n in 0..6 {
                let got = view_pieces(&input, b'/', n).unwrap();
                got.to_data().validate_full().unwrap();
                let want: Vec<Option<&str>> = input.iter().map(|v| v.and_then(|v| nth_piece(v, b'/', n))).collect();
                assert_eq!(got.iter().collect::<Vec<_>>(), want, "piece {n}");
                if got.iter().flatten().all(|p| p.len() <= 12) {
                    assert!(got.data_buffers().is_empty(), "inlined pieces keep no buffer alive");
                }
            }
        }
    }

    use super::*;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .nth(3)
            .unwrap_or_default()
            .trim_matches(|c| c == '|' || c == ' ')
            .to_string()
    }

    #[test]
    fn java_patterns_translate() {
        assert_eq!(java_pattern_to_chrono("yyyy-MM-dd").unwrap(), "%Y-%m-%d");
        assert_eq!(java_pattern_to_chrono("HH:mm").unwrap(), "%H:%M");
        assert_eq!(java_pattern_to_chrono("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap(), "%Y-%m-%dT%H:%M:%S.%3f");
        assert_eq!(java_pattern_to_chrono("d MMM yy, 100%").unwrap(), "%-d %b %y, 100%%");
        assert!(java_pattern_to_chrono("yyyy-QQ").unwrap_err().contains("'QQ'"));
        assert!(java_pattern_to_chrono("yyyy 'open").is_err());
    }

    #[tokio::test]
    async fn flink_functions_answer_as_flink_does() {
        assert_eq!(one("SELECT DATE_FORMAT(TIMESTAMP '2024-03-05 07:08:09', 'yyyy-MM-dd') AS v").await, "2024-03-05");
        assert_eq!(one("SELECT DATE_FORMAT('2024-03-05T17:08:09', 'HH:mm') AS v").await, "17:08");
        assert_eq!(one("SELECT HOUR(TIMESTAMP '2024-03-05 17:08:09') AS v").await, "17");
        // the numeric patterns' own formatter agrees with to_char's, before 1970 and after
        for ts in ["1969-12-31 23:59:59.999", "1900-02-28 01:02:03.004", "2024-02-29 12:00:00", "2100-03-01 00:00:00.5", "1700-01-01 00:00:00"] {
            for pattern in ["yyyy-MM-dd HH:mm:ss.SSS", "HH:mm", "dd/MM/yyyy"] {
                let ours = one(&format!("SELECT DATE_FORMAT(TIMESTAMP '{ts}', '{pattern}') AS v")).await;
                let chrono = java_pattern_to_chrono(pattern).unwrap();
                let theirs = one(&format!("SELECT to_char(TIMESTAMP '{ts}', '{chrono}') AS v")).await;
                assert_eq!(ours, theirs, "{ts} {pattern}");
            }
            let ours = one(&format!("SELECT DATE_FORMAT(CAST(TIMESTAMP '{ts}' AS DATE), 'yyyy-MM-dd') AS v")).await;
            assert_eq!(ours, ts[..10], "{ts}");
        }
        assert_eq!(one("SELECT SPLIT_INDEX('https://www.nexmark.com/a/b/item.htm', '/', 3) AS v").await, "a");
        assert_eq!(one("SELECT SPLIT_INDEX('a/b', '/', 5) IS NULL AS v").await, "true");
        assert_eq!(one("SELECT SPLIT_INDEX('a/b/', '/', 2) AS v").await, "");
        assert_eq!(one("SELECT SPLIT_INDEX('a::b::c', '::', 2) AS v").await, "c");
        assert_eq!(one("SELECT SPLIT_INDEX('é/ü', '/', 1) AS v").await, "ü");
        assert_eq!(one("SELECT SPLIT_INDEX('a/b', '/', -1) IS NULL AS v").await, "true");
        assert_eq!(one("SELECT REGEXP_EXTRACT('q=1&channel_id=42&x', '(&|^)channel_id=([^&]*)', 2) AS v").await, "42");
        assert_eq!(one("SELECT REGEXP_EXTRACT('q=1', '(&|^)channel_id=([^&]*)', 2) IS NULL AS v").await, "true");
        assert_eq!(one("SELECT REGEXP_EXTRACT('abc123', '[0-9]+') AS v").await, "123");
        assert_eq!(one("SELECT REGEXP_EXTRACT('abc', '(x)?abc', 1) IS NULL AS v").await, "true");
    }

    proptest::proptest! {
        /// Any pattern translates or is refused by name, without a panic; a numeric pattern's
        /// own formatter writes what chrono writes for the translated pattern, for any instant.
        #[test]
        fn numeric_patterns_format_as_chrono_does(
            ms in -5_000_000_000_000i64..7_000_000_000_000i64,
            tokens in proptest::collection::vec(0usize..12, 1..8),
            junk in ".{0,12}",
        ) {
            let _ = java_pattern_to_chrono(&junk);
            let _ = numeric_pattern(&junk);
            let parts = ["yyyy", "MM", "dd", "HH", "mm", "ss", "SSS", "-", ":", " ", "/", "'at'"];
            let pattern: String = tokens.iter().map(|&t| parts[t]).collect();
            let Some(pieces) = numeric_pattern(&pattern) else { return Ok(()) };
            // neighbours in the same millisecond, second, minute, hour and day, and across them
            // (a row formats as the one before only when they share the pattern's finest field)
            let times: Vec<Option<i64>> = [0, 0, 1, 999, 1_000, 59_999, 60_000, 3_599_999, 3_600_000, 86_399_999, 86_400_000, -1]
                .iter()
                .map(|d| Some(ms + d))
                .chain([None, Some(ms)])
                .collect();
            let array: ArrayRef = Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(times.clone()));
            let Ok(Some(ColumnarValue::Array(out))) = format_numeric(&ColumnarValue::Array(array), &pieces, times.len()) else {
                return Err(proptest::test_runner::TestCaseError::fail("no result"));
            };
            let chrono_pattern = java_pattern_to_chrono(&pattern).unwrap_or_default();
            for (i, t) in times.iter().enumerate() {
                let Some(t) = t else {
                    proptest::prop_assert!(out.is_null(i));
                    continue;
                };
                let Some(at) = chrono::DateTime::from_timestamp_millis(*t) else { return Ok(()) };
                let want = at.format(&chrono_pattern).to_string();
                proptest::prop_assert_eq!(out.as_string::<i32>().value(i), want.as_str(), "{} at {}", pattern, t);
            }
        }
    }

    proptest::proptest! {
        /// `HOUR` by arithmetic on UTC timestamps is `date_part('hour', …)`, before and after
        /// the epoch, in every unit, with nulls.
        #[test]
        fn hours_by_arithmetic_are_date_part_s(values in proptest::collection::vec(proptest::option::of(-9_000_000_000_000i64..9_000_000_000_000i64), 1..40), unit in 0usize..4, utc in proptest::bool::ANY) {
            use datafusion::arrow::array::{TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray};
            let zone = utc.then_some("UTC");
            let array: ArrayRef = match unit {
                0 => Arc::new(TimestampSecondArray::from(values.clone()).with_timezone_opt(zone)),
                1 => Arc::new(TimestampMillisecondArray::from(values.clone()).with_timezone_opt(zone)),
                2 => Arc::new(TimestampMicrosecondArray::from(values.clone()).with_timezone_opt(zone)),
                _ => Arc::new(TimestampNanosecondArray::from(values.iter().map(|v| v.map(|v| v.saturating_mul(1000))).collect::<Vec<_>>()).with_timezone_opt(zone)),
            };
            // only seconds reach past the limit in this range of values
            let in_range = unit != 0 || values.iter().flatten().all(|v| v.abs() <= 8_000_000_000_000);
            let ours = utc_hours(&ColumnarValue::Array(Arc::clone(&array)));
            proptest::prop_assert_eq!(ours.is_some(), in_range);
            let Some(ColumnarValue::Array(ours)) = ours else { return Ok(()) };
            let theirs = datafusion::arrow::compute::kernels::temporal::date_part(&array, datafusion::arrow::compute::kernels::temporal::DatePart::Hour)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let theirs = datafusion::arrow::compute::cast(&theirs, &DataType::Int64).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(ours.as_ref(), theirs.as_ref());
        }
    }

    #[test]
    fn hours_in_a_zone_go_through_the_calendar() {
        let array: ArrayRef = Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(vec![0]).with_timezone("Europe/Paris"));
        assert!(utc_hours(&ColumnarValue::Array(array)).is_none());
    }

    #[tokio::test]
    async fn bad_arguments_are_named() {
        let ctx = SessionContext::new();
        register(&ctx);
        let err = ctx.sql("SELECT REGEXP_EXTRACT('a', '(', 1)").await.unwrap().collect().await.unwrap_err().to_string();
        assert!(err.contains("invalid pattern '('"), "{err}");
        let err = ctx.sql("SELECT SPLIT_INDEX('a', '/', 'x')").await.map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("SPLIT_INDEX: argument 3 must be an integer"), "{err}");
        let err = ctx.sql("SELECT DATE_FORMAT(TIMESTAMP '2024-01-01 00:00:00', 'yyyy QQ')").await.unwrap().collect().await.unwrap_err().to_string();
        assert!(err.contains("'QQ'"), "{err}");
    }
}
