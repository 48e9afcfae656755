//! A one-pass decoder for the common shape of JSON records: flat objects whose wanted fields are
//! integers, floats, booleans, strings without escapes, or timestamps without a time zone
//! (ISO-8601 text, read as arrow-json reads it, or an integer in the column's unit). It writes each value straight into
//! its Arrow column (arrow-json first builds a tape of every token, then converts it), and
//! skips fields the query does not use without converting them. Anything outside that shape —
//! an escape in a string, a nested value in a wanted field, a number where a string is wanted,
//! a repeated key, malformed text — makes it give up on the whole chunk, and the caller decodes
//! the chunk with arrow-json instead: the rows are always arrow-json's.
//!
//! ```sql
//! SELECT auction, price FROM bid   -- bid.jsonl: {"auction":1000,"bidder":1001,"price":731,…}
//! ```

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::flat_columns::{into_batches, Column};
use super::iso_time::{in_unit, IsoTimes};

/// Decodes flat JSON objects into batches of `schema`, or declines (see the module docs).
#[derive(Debug, Clone)]
pub struct FlatJson {
    /// The batches' schema: the built columns of the schema read.
    output: SchemaRef,
    names: Vec<Vec<u8>>,
    nullable: Vec<bool>,
    /// The columns of `schema` built, in the output's order; the others are read and checked as
    /// their type demands, and dropped ([`FlatJson::checking`]).
    built: Vec<usize>,
    /// Each column's type as read, for the checked ones.
    kinds: Vec<Kind>,
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Float,
    Bool,
    Text,
    Time(arrow::datatypes::TimeUnit),
}

impl Kind {
    /// As [`Column::for_schema`] builds the type.
    fn of(t: &DataType) -> Self {
        match t {
            DataType::Int64 => Kind::Int,
            DataType::Float64 => Kind::Float,
            DataType::Boolean => Kind::Bool,
            DataType::Timestamp(unit, None) => Kind::Time(*unit),
            _ => Kind::Text,
        }
    }
}

impl FlatJson {
    /// A decoder for `schema` (the columns wanted), when every column has a type it reads
    /// (Int64, Float64, Boolean, Utf8, Utf8View, Timestamp without a time zone) and there are at most
    /// 64 of them.
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        let fields = schema.fields();
        if fields.is_empty() || fields.len() > 64 {
            return None;
        }
        let supported = fields.iter().all(|f| {
            matches!(
                f.data_type(),
                DataType::Int64 | DataType::Float64 | DataType::Boolean | DataType::Utf8 | DataType::Utf8View | DataType::Timestamp(_, None)
            )
        });
        let plain_names = fields.iter().all(|f| !f.name().bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
        (supported && plain_names).then(|| Self {
            output: Arc::clone(schema),
            names: fields.iter().map(|f| f.name().as_bytes().to_vec()).collect(),
            nullable: fields.iter().map(|f| f.is_nullable()).collect(),
            built: (0..fields.len()).collect(),
            kinds: fields.iter().map(|f| Kind::of(f.data_type())).collect(),
        })
    }

    /// A decoder that reads and checks every column of `schema` as [`FlatJson::new`]'s does,
    /// declining the same chunks, but builds only the columns `built` (indices into `schema`,
    /// in the batches' order). A record is then good or bad by every column of `schema`, not
    /// only by those built: a top N per key reading the keys of a file first, and its kept rows
    /// again, numbers the same rows in both reads (`TextDecoder::checking`).
    ///
    /// ```sql
    /// SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid) WHERE r <= 10
    /// -- first read: auction, price built; bidder, channel, url, … checked
    /// ```
    pub fn checking(schema: &SchemaRef, built: &[usize]) -> Option<Self> {
        let output = Arc::new(schema.project(built).ok()?);
        let mut d = Self::new(schema)?;
        d.output = output;
        d.built = built.to_vec();
        Some(d)
    }

    /// The objects of `chunk` (whitespace between them) as batches of at most `batch_size`
    /// rows; `None` when the chunk is not all of the shape this decoder reads.
    pub fn decode(&self, chunk: &[u8], batch_size: usize) -> Option<Vec<RecordBatch>> {
        let text = simdutf8::basic::from_utf8(chunk).ok()?;
        // a column per field of the schema, None for those only checked
        let mut columns: Vec<Option<Column>> = (0..self.names.len()).map(|_| None).collect();
        for (&f, c) in self.built.iter().zip(Column::for_schema(&self.output, chunk.len())) {
            *columns.get_mut(f)? = Some(c);
        }
        let mut p = Parser { b: chunk, text, i: 0, times: IsoTimes::default() };
        let mut rows = 0usize;
        let all: u64 = if self.names.len() == 64 { u64::MAX } else { (1u64 << self.names.len()) - 1 };
        // The keys of the records so far, by position: records of one stream mostly repeat one
        // key order, so a key is recognised by comparing the text at hand, from its opening
        // quote through its colon, with the key seen at that position before, a machine word at
        // a time, without searching for its closing quote or among the schema's names.
        let mut shape: Vec<Key<'_>> = Vec::new();
        loop {
            p.ws();
            if p.i >= p.b.len() {
                break;
            }
            p.expect(b'{')?;
            let mut seen = 0u64;
            p.ws();
            if p.peek()? == b'}' {
                p.i += 1;
            } else {
                let mut k = 0usize;
                loop {
                    p.ws();
                    let field = match shape.get(k).filter(|key| key.is_at(chunk, p.i)) {
                        Some(key) => {
                            p.i += key.text.len();
                            key.field
                        }
                        None => {
                            let at = p.i;
                            let (s, e) = p.string_range()?;
                            p.ws();
                            p.expect(b':')?;
                            let f = self.names.iter().position(|n| same(n, &chunk[s..e]));
                            let key = Key::new(&chunk[at..p.i], f);
                            if k < shape.len() {
                                shape[k] = key;
                            } else {
                                shape.push(key);
                            }
                            f
                        }
                    };
                    k += 1;
                    p.ws();
                    match field {
                        Some(f) => {
                            if seen & (1 << f) != 0 {
                                return None; // a repeated key: leave it to arrow-json
                            }
                            seen |= 1 << f;
                            match &mut columns[f] {
                                Some(c) => p.value(c, self.nullable[f])?,
                                None => p.check(self.kinds[f], self.nullable[f])?,
                            }
                        }
                        None => p.skip_value(0)?,
                    }
                    p.ws();
                    match p.next()? {
                        b',' => continue,
                        b'}' => break,
                        _ => return None,
                    }
                }
            }
            if seen != all {
                for (f, c) in columns.iter_mut().enumerate() {
                    if seen & (1 << f) == 0 {
                        if !self.nullable[f] {
                            return None;
                        }
                        if let Some(c) = c {
                            c.append_null();
                        }
                    }
                }
            }
            rows += 1;
        }
        let mut built: Vec<Column> = self.built.iter().map(|&f| columns.get_mut(f).and_then(Option::take)).collect::<Option<_>>()?;
        into_batches(&self.output, &mut built, rows, batch_size)
    }
}

/// Byte-wise equality; keys are short, and a call to memcmp costs more than the loop.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A key as it appeared in a record, from its opening quote through its colon (`"price":`),
/// and the column it names (`None` when the query does not use it).
struct Key<'a> {
    text: &'a [u8],
    /// the text's first 8 bytes as a word (zero past its end), and the mask of those it has
    head: u64,
    mask: u64,
    field: Option<usize>,
}

impl<'a> Key<'a> {
    fn new(text: &'a [u8], field: Option<usize>) -> Self {
        let mut head = [0u8; 8];
        let n = text.len().min(8);
        head[..n].copy_from_slice(&text[..n]);
        let mask = if n == 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 };
        Self { text, head: u64::from_le_bytes(head), mask, field }
    }

    /// `b` has this key's text at `at`: compared a word at a time (the last one overlapping
    /// the one before), or byte by byte within 8 bytes of the chunk's end.
    #[inline]
    fn is_at(&self, b: &[u8], at: usize) -> bool {
        let n = self.text.len();
        let Some(head) = word(b, at) else {
            return b.get(at..at + n).is_some_and(|t| same(t, self.text));
        };
        if (head ^ self.head) & self.mask != 0 {
            return false;
        }
        if n <= 8 {
            return true;
        }
        let Some(t) = b.get(at..at + n) else {
            return false;
        };
        let mut i = 8;
        loop {
            let j = i.min(n - 8);
            if word(t, j) != word(self.text, j) {
                return false;
            }
            if j == n - 8 {
                return true;
            }
            i += 8;
        }
    }
}

/// The 8 bytes of `b` at `at` as a little-endian word, if there are 8.
#[inline]
fn word(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..).and_then(|r| r.first_chunk::<8>()).map(|w| u64::from_le_bytes(*w))
}

/// Where the first `"` or `\\` is: within the first 16 bytes (most keys and many values)
/// found a word at a time, past them by `memchr2`.
#[inline]
fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < 16 {
        let Some(w) = word(b, at) else {
            break;
        };
        let hits = zero_bytes(w ^ QUOTES) | zero_bytes(w ^ BACKSLASHES);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', b.get(at..)?).map(|i| at + i)
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const QUOTES: u64 = ONES * b'"' as u64;
const BACKSLASHES: u64 = ONES * b'\\' as u64;

/// The high bit of each byte of `w` that is zero, and perhaps of bytes after the first such
/// (a borrow): the lowest bit set is always the first zero byte's.
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & (ONES << 7)
}

struct Parser<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    /// reads the common shape of ISO-8601 times, remembering the last one's minute
    times: IsoTimes,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// A string without escapes (raw control characters pass, as with arrow-json); its bytes
    /// between the quotes.
    #[inline(always)]
    fn string_range(&mut self) -> Option<(usize, usize)> {
        self.expect(b'"')?;
        let start = self.i;
        let end = start + find_quote_or_backslash(&self.b[start..])?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        Some((start, end))
    }

    /// An integer (JSON's grammar, no fraction or exponent), computed as it is read; `None`
    /// for anything else or one outside i64.
    #[inline(always)]
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let magnitude: u64 = match self.next()? {
            b'0' => 0,
            c @ b'1'..=b'9' => {
                let mut v = u64::from(c - b'0');
                let mut digits = 1;
                while let Some(&c) = self.b.get(self.i) {
                    let d = c.wrapping_sub(b'0');
                    if d > 9 {
                        break;
                    }
                    // 18 digits cannot overflow; past them every step is checked
                    v = if digits < 18 { v * 10 + u64::from(d) } else { v.checked_mul(10)?.checked_add(u64::from(d))? };
                    digits += 1;
                    self.i += 1;
                }
                v
            }
            _ => return None,
        };
        let v = if negative { 0i64.checked_sub_unsigned(magnitude)? } else { i64::try_from(magnitude).ok()? };
        self.delimited()?;
        Some(v)
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            self.delimited()
        } else {
            None
        }
    }

    /// The next byte ends a value.
    #[inline]
    fn delimited(&self) -> Option<()> {
        matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')).then_some(())
    }

    /// A JSON number's text, checked against JSON's grammar.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        self.delimited()?;
        self.text.get(start..self.i)
    }

    #[inline]
    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    /// A `null`, read, when one is next: `Some(true)` (`None` where the column takes none).
    #[inline(always)]
    fn null(&mut self, nullable: bool) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null")?;
        nullable.then_some(true)
    }

    /// A wanted field's value into its column.
    fn value(&mut self, column: &mut Column, nullable: bool) -> Option<()> {
        if self.null(nullable)? {
            column.append_null();
            return Some(());
        }
        match column {
            Column::Int(b) => b.append_value(self.integer()?),
            Column::Float(b) => b.append_value(self.float()?),
            Column::Bool(b) => b.append_value(self.boolean()?),
            Column::Str(b) => b.append_value(self.text_value()?),
            Column::View(b) => b.append_value(self.text_value()?),
            Column::Time(b, unit) => b.append_value(self.time(*unit)?),
        }
        Some(())
    }

    /// A field's value read and checked as [`Parser::value`] reads it into a column of its
    /// kind, and dropped. Kept out of line: only a read of some columns checks the others,
    /// and the building path stays as tight as it was.
    #[inline(never)]
    fn check(&mut self, kind: Kind, nullable: bool) -> Option<()> {
        if self.null(nullable)? {
            return Some(());
        }
        match kind {
            Kind::Int => self.integer().map(drop),
            Kind::Float => self.float().map(drop),
            Kind::Bool => self.boolean().map(drop),
            Kind::Text => self.text_value().map(drop),
            Kind::Time(unit) => self.time(unit).map(drop),
        }
    }

    /// A finite float.
    #[inline(always)]
    fn float(&mut self) -> Option<f64> {
        let v = self.number()?.parse::<f64>().ok()?;
        v.is_finite().then_some(v)
    }

    #[inline(always)]
    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A string without escapes, ended by a delimiter.
    #[inline(always)]
    fn text_value(&mut self) -> Option<&'a str> {
        let (s, e) = self.string_range()?;
        self.delimited()?;
        self.text.get(s..e)
    }

    /// As arrow-json: text as arrow's own parser reads it (in UTC; the common shape read
    /// directly, as arrow reads it), an integer as it is.
    fn time(&mut self, unit: arrow::datatypes::TimeUnit) -> Option<i64> {
        if self.peek()? != b'"' {
            return self.integer();
        }
        let text = self.text_value()?;
        if let Some((secs, nanos)) = self.times.read(text.as_bytes()) {
            return in_unit(secs, nanos, unit);
        }
        let t = arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, text).ok()?;
        Some(match unit {
            arrow::datatypes::TimeUnit::Second => t.timestamp(),
            arrow::datatypes::TimeUnit::Millisecond => t.timestamp_millis(),
            arrow::datatypes::TimeUnit::Microsecond => t.timestamp_micros(),
            arrow::datatypes::TimeUnit::Nanosecond => t.timestamp_nanos_opt()?,
        })
    }

    /// Skips a value the query does not use (any JSON value, nested up to 64 levels).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match self.peek()? {
            b'"' => {
                // escapes allowed here: find the closing quote (by `memchr2` from the start:
                // the fields a query skips are often its long ones)
                self.i += 1;
                loop {
                    let at = self.i + memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
                    if self.b[at] == b'\\' {
                        // a valid escape, as arrow-json demands even of fields it skips
                        let n = match self.b.get(at + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                            b'u' if self.b.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                            _ => return None,
                        };
                        self.i = at + n;
                    } else {
                        self.i = at + 1;
                        return self.delimited();
                    }
                }
            }
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.ws();
                if self.peek()? == close {
                    self.i += 1;
                    return self.delimited();
                }
                loop {
                    self.ws();
                    if object {
                        self.string_range()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        c if c == close => return self.delimited(),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        schema_of(DataType::Utf8)
    }

    /// The test schema with its text column as text or as views.
    fn schema_of(text: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", text, true),
            Field::new("price", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]))
    }

    fn arrow_json(schema: &SchemaRef, text: &str) -> Option<RecordBatch> {
        let mut d = arrow_json::ReaderBuilder::new(Arc::clone(schema)).with_batch_size(1 << 20).build_decoder().ok()?;
        let n = d.decode(text.as_bytes()).ok()?;
        if n != text.len() {
            return None;
        }
        d.flush().ok().flatten()
    }

    /// Where the fast path reads a chunk its rows are arrow-json's; on anything else it declines.
    #[test]
    fn agrees_with_arrow_json_or_declines() {
        for text in [DataType::Utf8, DataType::Utf8View] {
            agrees_with_arrow_json_or_declines_as(schema_of(text));
        }
    }

    fn agrees_with_arrow_json_or_declines_as(s: SchemaRef) {
        let fast = FlatJson::new(&s).unwrap();
        let cases = [
            r#"{"id": 1, "name": "a", "price": 1.5, "ok": true}"#,
            r#"{"ok":false,"price":-2e3,"name":"b c","id":-7}"#,
            r#"{"id": null, "name": null}"#,
            r#"{}"#,
            r#"{"id": 3, "extra": {"x": [1, 2, {"y": "z\"q"}]}, "name": "x"}"#,
            r#"{"id": 3, "skipped": "with \"escapes\" and \\ ", "price": 0}"#,
            r#"{"id": 4, "skipped": "\u00e9\/\b\f\n\r\t", "price": 1}"#,
            r#"{"id": 1.5}"#,
            r#"{"id": "7"}"#,
            r#"{"name": 5}"#,
            r#"{"name": "esc\"aped"}"#,
            r#"{"id": 1, "id": 2}"#,
            r#"{"id": 01}"#,
            r#"{"id": 1,}"#,
            r#"{"id": 99999999999999999999}"#,
            r#"{"price": 1e400}"#,
            r#"{"name": "ünïcødé ✓"}"#,
            r#"{"id": 1} {"id": 2}"#,
            r#"[1, 2]"#,
            r#"{"ok": tru}"#,
            r#"{"id": -0, "price": -0.0}"#,
            "{\"name\": \"tab\there\", \"x\": \"ctl\u{1}\"}",
        ];
        let mut fast_count = 0;
        for case in cases {
            let text = format!("{case}\n{case}\n");
            if let Some(batches) = fast.decode(text.as_bytes(), 1024) {
                fast_count += 1;
                let got = arrow::compute::concat_batches(&s, &batches).unwrap();
                assert_eq!(Some(got), arrow_json(&s, &text), "{case}");
            }
        }
        assert!(fast_count >= 8, "the common shapes take the fast path ({fast_count})");
        // declined: escapes in a wanted string, wrong types, repeats, bad numbers and text, a
        // bad escape even in a field not wanted
        for case in [
            r#"{"x": "bad \q escape"}"#,
            r#"{"x": "short \u12"}"#,
            r#"{"name": "esc\"aped"}"#,
            r#"{"id": 1.5}"#,
            r#"{"id": "7"}"#,
            r#"{"id": 1, "id": 2}"#,
            r#"{"id": 01}"#,
            r#"{"ok": tru}"#,
        ] {
            assert!(fast.decode(case.as_bytes(), 10).is_none(), "{case}");
        }
    }

    /// Random flat records, with fields missing, reordered and unknown, in batches.
    #[test]
    fn keys_in_changing_orders_and_integer_bounds_match_arrow_json() {
        // Keys recognised by the key expected at their position: a key that is a prefix of
        // another, or the expected one followed by more text, must not match it.
        let s = schema();
        let fast = FlatJson::new(&s).unwrap();
        let text = [
            r#"{"id": 1, "name": "a"}"#,
            r#"{"name": "b", "id": 2}"#,
            r#"{"idx": 5, "id": 3, "i": "q"}"#,
            r#"{"i": 6, "idx": "7", "id": 4}"#,
            r#"{"id": 9223372036854775807, "ok": true}"#,
            r#"{"id": -9223372036854775808, "price": 2}"#,
            r#"{"id": -0, "name": "" }"#,
            r#"{"price": 1.25, "name": "n", "id": 4, "ok": false}"#,
            r#"{ "id" : 5 , "nam": "x", "name" : "y" }"#,
            r#"{"id": 5}"#,
        ]
        .join("\n");
        let got = fast.decode(text.as_bytes(), 3).expect("all flat");
        assert_eq!(Some(arrow::compute::concat_batches(&s, &got).unwrap()), arrow_json(&s, &text));
        // out of i64's range: declined (arrow-json decides)
        for case in [r#"{"id": 9223372036854775808}"#, r#"{"id": -9223372036854775809}"#, r#"{"id": -}"#, r#"{"id": 1e3}"#] {
            assert!(fast.decode(case.as_bytes(), 10).is_none(), "{case}");
        }
    }

    /// A decoder checking every column and building some declines the same chunks as the one
    /// building all (wrong types and bad values in the columns it does not build included), and
    /// builds those columns' values exactly.
    #[test]
    fn checking_declines_as_building_every_column_does() {
        let s = schema_of(DataType::Utf8View);
        let all = FlatJson::new(&s).unwrap();
        let mut seed = 5u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        // values of every kind for every column: right, wrong type, out of range, null
        let values: [&[&str]; 4] = [
            &["1", "-7", "null", "1.5", "\"7\"", "99999999999999999999", "true", "[1]"],
            &["\"a\"", "\"\"", "null", "5", "\"esc\\\"aped\"", "false", "{\"x\": 1}"],
            &["1.5", "-2e3", "0", "null", "\"x\"", "1e400", "true"],
            &["true", "false", "null", "tru", "1", "\"true\""],
        ];
        let names = ["id", "name", "price", "ok"];
        let builds: [&[usize]; 7] = [&[0], &[1], &[3, 2], &[2, 0], &[0, 1, 2, 3], &[1, 3], &[3, 2, 1]];
        let (mut same_some, mut same_none) = (0, 0);
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..1 + rnd() % 4 {
                let mut parts = Vec::new();
                for (c, name) in names.iter().enumerate() {
                    if rnd() % 6 == 0 {
                        continue; // missing: null
                    }
                    // mostly right values, sometimes anything
                    let v = if rnd() % 8 == 0 { values[c][rnd() as usize % values[c].len()] } else { values[c][rnd() as usize % 2] };
                    parts.push(format!(r#""{name}": {v}"#));
                }
                if rnd() % 5 == 0 {
                    parts.push(r#""other": [1, "x \"q\"", {"k": null}]"#.to_string());
                }
                let len = parts.len().max(1);
                parts.rotate_left(rnd() as usize % len);
                text.push_str(&format!("{{{}}}\n", parts.join(", ")));
            }
            let every = all.decode(text.as_bytes(), 3);
            for built in builds {
                let some = FlatJson::checking(&s, built).unwrap().decode(text.as_bytes(), 3);
                match (&every, &some) {
                    (None, None) => same_none += 1,
                    (Some(every), Some(some)) => {
                        let projected: Vec<RecordBatch> = every.iter().map(|b| b.project(built).unwrap()).collect();
                        assert_eq!(&projected, some, "{text} built {built:?}");
                        same_some += 1;
                    }
                    _ => panic!("{text}: building {built:?} {} where building every column {}", some.is_some(), every.is_some()),
                }
            }
        }
        assert!(same_some > 1000 && same_none > 1000, "{same_some} read, {same_none} declined");
    }

    #[test]
    fn random_records_match_arrow_json() {
        for text in [DataType::Utf8, DataType::Utf8View] {
            random_records_match_arrow_json_as(schema_of(text));
        }
    }

    fn random_records_match_arrow_json_as(s: SchemaRef) {
        let fast = FlatJson::new(&s).unwrap();
        let mut seed = 11u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut text = String::new();
        for _ in 0..5000 {
            let mut parts = Vec::new();
            if rnd() % 5 > 0 {
                parts.push(format!(r#""id": {}"#, rnd() as i64 - (1 << 30)));
            }
            if rnd() % 5 > 0 {
                let pad = if rnd() % 2 == 0 { "-a-longer-name-past-the-first-24-bytes" } else { "" };
                parts.push(format!(r#""name": "n{}{pad}""#, rnd() % 1000));
            }
            if rnd() % 5 > 0 {
                parts.push(format!(r#""price": {}.{}"#, rnd() % 100_000, rnd() % 1000));
            }
            if rnd() % 3 == 0 {
                parts.push(r#""ok": true"#.to_string());
            }
            if rnd() % 4 == 0 {
                parts.push(format!(r#""other": [{}, "x \"quoted\" and a long tail of text", {{"k": null}}]"#, rnd()));
            }
            let len = parts.len();
            parts.rotate_left(rnd() as usize % (len + 1) % len.max(1));
            text.push_str(&format!("{{{}}}\n", parts.join(", ")));
        }
        let batches = fast.decode(text.as_bytes(), 777).expect("all flat");
        assert!(batches.iter().all(|b| b.num_rows() <= 777));
        assert_eq!(Some(arrow::compute::concat_batches(&s, &batches).unwrap()), arrow_json(&s, &text));
    }

    /// The word-at-a-time search finds the first quote or backslash where `memchr2` does, at
    /// every position, among bytes of every value (those next to `"` and `\\`, high bytes).
    #[test]
    fn the_first_quote_or_backslash_is_found_at_every_position() {
        let fill = [b'a', b'!', b'#', b'[', b']', 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xa2, 0xdc, 0xff, 0x00, 0x01];
        for len in 0..40 {
            for f in fill {
                let mut b = vec![f; len];
                assert_eq!(find_quote_or_backslash(&b), None, "{len} of {f:#x}");
                for at in 0..len {
                    for c in [b'"', b'\\'] {
                        b[at] = c;
                        assert_eq!(find_quote_or_backslash(&b), Some(at), "{len} of {f:#x}, {c} at {at}");
                        // a second one after it does not hide the first
                        if at + 1 < len {
                            b[at + 1] = b'"';
                            assert_eq!(find_quote_or_backslash(&b), Some(at));
                            b[at + 1] = f;
                        }
                        b[at] = f;
                    }
                }
            }
        }
    }

    /// A key is recognised at a position only when the text there is the whole key, quotes
    /// and colon: not a longer or shorter key, nor one that differs in any byte, nor one cut
    /// off by the end of the chunk.
    #[test]
    fn a_key_matches_only_its_own_text() {
        for key in [&b"\"a\":"[..], b"\"id\":", b"\"price\":", b"\"date_time\":", b"\"a_rather_long_key_name\" :"] {
            let k = Key::new(key, Some(0));
            let mut text = key.to_vec();
            text.extend_from_slice(b"1, \"x\": 2}");
            assert!(k.is_at(&text, 0));
            assert!(k.is_at(key, 0), "at the very end of the chunk");
            assert!(!k.is_at(&key[..key.len() - 1], 0), "cut off");
            for i in 0..key.len() {
                let mut other = text.clone();
                other[i] ^= 0x20;
                assert!(!k.is_at(&other, 0), "byte {i} differs");
            }
            let mut longer = key[..key.len() - 2].to_vec();
            longer.extend_from_slice(b"x\":1}");
            assert!(!k.is_at(&longer, 0));
            let mut shifted = b"  ".to_vec();
            shifted.extend_from_slice(&text);
            assert!(k.is_at(&shifted, 2) && !k.is_at(&shifted, 1));
        }
    }

    #[test]
    fn other_types_are_left_to_arrow_json() {
        use arrow::datatypes::TimeUnit;
        for dt in [DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())), DataType::Date32, DataType::Int32, DataType::LargeUtf8] {
            let s = Arc::new(Schema::new(vec![Field::new("t", dt.clone(), true)]));
            assert!(FlatJson::new(&s).is_none(), "{dt}");
        }
    }

    /// Timestamps without a time zone, in every unit: ISO-8601 text (fractions, `Z`, offsets,
    /// a space, a date alone) and integers give arrow-json's values; text arrow cannot parse,
    /// a fraction where an integer is read, or an instant beyond nanoseconds is declined.
    #[test]
    fn timestamps_match_arrow_json_or_decline() {
        use arrow::datatypes::TimeUnit;
        let good = [
            r#"{"t": "2026-12-02T15:24:26.414", "k": 1}"#,
            r#"{"t": "2026-12-02T15:24:26Z", "k": 2}"#,
            r#"{"t": "2026-12-02T15:24:26.123456789+02:00", "k": 3}"#,
            r#"{"t": "2026-12-02 15:24:26.5", "k": 4}"#,
            r#"{"t": "2026-12-02", "k": 5}"#,
            r#"{"t": null, "k": 6}"#,
            r#"{"k": 7}"#,
            r#"{"t": 1700000000123, "k": 8}"#,
            r#"{"t": -5, "k": 9}"#,
            r#"{"t": "1969-12-31T23:59:59.999", "k": 10}"#,
        ]
        .join("\n");
        for unit in [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond] {
            let s = Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp(unit, None), true), Field::new("k", DataType::Int64, true)]));
            let fast = FlatJson::new(&s).expect("a timestamp without a time zone is read");
            let got = fast.decode(good.as_bytes(), 4).expect("all flat");
            assert_eq!(Some(arrow::compute::concat_batches(&s, &got).unwrap()), arrow_json(&s, &good), "{unit:?}");
            for bad in [r#"{"t": "yesterday"}"#, r#"{"t": "2026-13-02T00:00:00"}"#, r#"{"t": 1.5}"#, r#"{"t": true}"#, r#"{"t": "esc\u0041ped"}"#] {
                assert!(fast.decode(bad.as_bytes(), 4).is_none(), "{unit:?} {bad}");
            }
        }
        let ns = Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true)]));
        assert!(FlatJson::new(&ns).unwrap().decode(br#"{"t": "2500-01-01T00:00:00"}"#, 4).is_none(), "beyond i64 nanoseconds");
    }
}
