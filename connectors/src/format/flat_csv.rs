//! A one-pass decoder for the plainest CSV: no quotes, `\n` line ends, every line with the
//! schema's number of fields, and wanted columns of text (Utf8, Utf8View), Int64 or Float64 whose numbers are
//! written plainly (`-12`, `3.25`). It finds the delimiters with SIMD and parses each value
//! straight into its Arrow column; columns the query does not use are skipped. Anything else in
//! a chunk — a quote, a `\r`, an empty line, a field count off, an exponent, a long mantissa —
//! makes it decline the chunk, which arrow-csv then decodes: the rows are always arrow-csv's
//! (an empty field is null, as there).
//!
//! ```sql
//! SELECT station, MIN(t), AVG(t), MAX(t) FROM m GROUP BY station  -- m: `Hamburg;12.0` lines
//! ```

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::flat_columns::{into_batches, Column};

/// Decodes plain CSV into batches of the output schema, or declines (see the module docs).
#[derive(Debug, Clone)]
pub struct FlatCsv {
    output: SchemaRef,
    /// For each field of a line, the output column it goes into (`None`: skipped).
    slots: Vec<Option<usize>>,
    nullable: Vec<bool>,
    delimiter: u8,
    quote: u8,
}

/// Exact powers of ten: a mantissa below 2^53 divided by one of them is rounded once, so the
/// result is the correctly rounded value of the decimal (what arrow-csv's parser gives).
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

impl FlatCsv {
    /// A decoder for files of `schema` producing the `projection` of its columns (`output`),
    /// when the file has columns, every produced column is Utf8, Utf8View, Int64 or Float64 and
    /// delimiter and quote are not `\n` or `\r`.
    pub fn new(schema: &SchemaRef, projection: Option<&[usize]>, output: &SchemaRef, delimiter: u8, quote: u8) -> Option<Self> {
        if [delimiter, quote].iter().any(|c| matches!(c, b'\n' | b'\r')) || delimiter == quote || schema.fields().is_empty() {
            return None;
        }
        let wanted: Vec<usize> = projection.map_or_else(|| (0..schema.fields().len()).collect(), <[usize]>::to_vec);
        let mut slots = vec![None; schema.fields().len()];
        for (out, &field) in wanted.iter().enumerate() {
            if !matches!(schema.fields().get(field)?.data_type(), DataType::Int64 | DataType::Float64 | DataType::Utf8 | DataType::Utf8View) {
                return None;
            }
            if slots[field].replace(out).is_some() {
                return None; // a column produced twice: left to arrow-csv
            }
        }
        Some(Self { output: Arc::clone(output), slots, nullable: output.fields().iter().map(|f| f.is_nullable()).collect(), delimiter, quote })
    }

    /// The lines of `chunk` (each ending in `\n`) as batches of at most `batch_size` rows;
    /// `None` when the chunk is not all plain.
    pub fn decode(&self, chunk: &[u8], batch_size: usize) -> Option<Vec<RecordBatch>> {
        if memchr::memchr2(self.quote, b'\r', chunk).is_some() || chunk.last().is_some_and(|b| *b != b'\n') {
            return None;
        }
        let text = simdutf8::basic::from_utf8(chunk).ok()?;
        let mut columns = Column::for_schema(&self.output, chunk.len());
        let last = self.slots.len() - 1;
        let mut rows = 0usize;
        let mut start = 0usize;
        for end in memchr::memchr_iter(b'\n', chunk) {
            if end == start {
                return None; // an empty line: arrow-csv decides
            }
            let mut at = start;
            for (f, slot) in self.slots.iter().enumerate() {
                let stop = if f == last {
                    if memchr::memchr(self.delimiter, &chunk[at..end]).is_some() {
                        return None; // more fields than the schema
                    }
                    end
                } else {
                    at + memchr::memchr(self.delimiter, &chunk[at..end])? // fewer: declined by `?`
                };
                let value = &chunk[at..stop];
                if let Some(c) = *slot {
                    match &mut columns[c] {
                        _ if value.is_empty() => {
                            if !self.nullable[c] {
                                return None;
                            }
                            columns[c].append_null();
                        }
                        Column::Int(b) => b.append_value(plain_i64(value)?),
                        Column::Float(b) => b.append_value(plain_f64(value)?),
                        Column::Str(b) => b.append_value(text.get(at..stop)?),
                        Column::View(b) => b.append_value(text.get(at..stop)?),
                        Column::Bool(_) | Column::Time(..) => return None, // not built for CSV (see `new`)
                    }
                }
                at = stop + 1;
            }
            rows += 1;
            start = end + 1;
        }
        into_batches(&self.output, &mut columns, rows, batch_size)
    }
}

/// `-?(0|[1-9][0-9]*)` within i64, else `None`.
fn plain_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0'); // 18 digits cannot overflow
    }
    Some(if negative { -v } else { v })
}

/// `-?[0-9]+(\.[0-9]+)?` with at most 15 digits in all, else `None`.
fn plain_f64(s: &[u8]) -> Option<f64> {
    let (negative, body) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    let (int, frac) = match memchr::memchr(b'.', body) {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    let dotted = int.len() < body.len();
    if int.is_empty() || (dotted && frac.is_empty()) || int.len() + frac.len() > 15 {
        return None;
    }
    let mut m: u64 = 0;
    for &c in int.iter().chain(frac) {
        if !c.is_ascii_digit() {
            return None;
        }
        m = m * 10 + u64::from(c - b'0');
    }
    let v = m as f64 / POW10[frac.len()];
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        schema_of(DataType::Utf8)
    }

    fn schema_of(text: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("station", text, true), Field::new("t", DataType::Float64, true), Field::new("n", DataType::Int64, true)]))
    }

    fn arrow_csv(schema: &SchemaRef, projection: Option<&[usize]>, text: &str) -> Option<RecordBatch> {
        let mut b = arrow_csv::ReaderBuilder::new(Arc::clone(schema)).with_header(false).with_delimiter(b';').with_batch_size(1 << 20);
        if let Some(p) = projection {
            b = b.with_projection(p.to_vec());
        }
        let mut d = b.build_decoder();
        let n = d.decode(text.as_bytes()).ok()?;
        if n != text.len() {
            return None;
        }
        d.flush().ok()?
    }

    fn check(projection: Option<&[usize]>, text: &str) -> bool {
        let plain = check_as(&schema(), projection, text);
        assert_eq!(plain, check_as(&schema_of(DataType::Utf8View), projection, text), "views read as text is: {text:?}");
        plain
    }

    /// Whether the fast path reads `text` in `s`'s types; where it does, its rows are arrow-csv's.
    fn check_as(s: &SchemaRef, projection: Option<&[usize]>, text: &str) -> bool {
        let s = Arc::clone(s);
        let out = Arc::new(match projection {
            Some(p) => s.project(p).unwrap(),
            None => (*s).clone(),
        });
        let fast = FlatCsv::new(&s, projection, &out, b';', b'"').unwrap();
        match fast.decode(text.as_bytes(), 2) {
            Some(batches) => {
                assert!(batches.iter().all(|b| b.num_rows() <= 2));
                let got = arrow::compute::concat_batches(&out, &batches).unwrap();
                assert_eq!(Some(got), arrow_csv(&s, projection, text), "{text:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn plain_lines_match_arrow_csv() {
        let text = "Hamburg;12.0;1\nBulawayo;8.9;-2\nSão Paulo;-0.0;0\nx;-99.9;9\n;;\nA b;0.1;123456789012345678\nq;123456789012345;7\n";
        assert!(check(None, text));
        assert!(check(Some(&[1]), text));
        assert!(check(Some(&[2, 0]), text));
    }

    #[test]
    fn random_decimals_parse_exactly_as_arrow_does() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut text = String::new();
        for i in 0..20_000 {
            let int = rnd() % 100_000;
            let frac_digits = (rnd() % 8) as usize;
            let frac: String = (0..frac_digits).map(|_| char::from(b'0' + (rnd() % 10) as u8)).collect();
            let sign = if rnd() % 3 == 0 { "-" } else { "" };
            let t = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
            text.push_str(&format!("s{};{t};{}\n", i % 413, rnd() as i64 - (1 << 30)));
        }
        assert!(check(None, &text), "all plain");
    }

    #[test]
    fn anything_else_is_declined() {
        for text in [
            "\"quoted\";1.0;1\n",
            "a;1.0;1\r\n",
            "a;1.0\n",
            "a;1.0;1;extra\n",
            "a;1e3;1\n",
            "a;.5;1\n",
            "a;5.;1\n",
            "a;+1.5;1\n",
            "a;1.5;007\n",
            "a;1.5;99999999999999999999\n",
            "a;1234567890.1234567;1\n",
            "a;nan;1\n",
            "a;1.0;1\n\nb;2.0;2\n",
            "a;1.0;1",
        ] {
            assert!(!check(None, text), "{text:?}");
        }
        // a column type it does not read
        let s = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        assert!(FlatCsv::new(&s, None, &s, b';', b'"').is_none());
    }
}
