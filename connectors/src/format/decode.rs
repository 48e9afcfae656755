//! Text decoding into Arrow, vectorised on the fast path: a chunk of up to `batch.size` lines is
//! handed whole to arrow's JSON or CSV decoder. Only when the chunk holds a malformed record is
//! it decoded again line by line, to keep every good row and name each bad line.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use tracing::warn;

use super::file_format::FileFormat;
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::metrics::ConnectorMetrics;

/// Malformed records logged one by one per reader before only counting them.
const MAX_LOGGED_BAD_RECORDS: usize = 20;

/// What a reader of files or objects does with malformed records, by its failure strategy:
/// count them, and log each (the first ones) or fail naming the first.
#[derive(Debug, Default)]
pub struct BadRecordLog {
    logged: usize,
    /// Counts and fails but logs nothing (see [`BadRecordLog::unlogged`]).
    silent: bool,
}

impl BadRecordLog {
    /// A log that counts malformed records and fails on them as its failure strategy says, but
    /// warns of none: for a read whose records another read of the same file warns of (a top
    /// N's first read of its keys, then its kept rows).
    pub fn unlogged() -> Self {
        Self { logged: 0, silent: true }
    }

    /// Applies `failure` to `bad`, records of `location` (a file or object) read by `source`.
    pub fn handle(&mut self, source: &str, failure: FailureStrategy, metrics: &ConnectorMetrics, location: &str, bad: &[BadRecord]) -> Result<()> {
        metrics.add_errors(bad.len() as u64);
        if failure == FailureStrategy::FailBatch {
            if let Some(b) = bad.first() {
                return Err(ConnectorError::Malformed { location: format!("{location}:{}", b.line), message: b.message.clone() });
            }
        }
        if self.silent {
            return Ok(());
        }
        for b in bad {
            if self.logged < MAX_LOGGED_BAD_RECORDS {
                warn!(source = %source, "{location}:{}: malformed record skipped ({failure}): {}", b.line, b.message);
            } else if self.logged == MAX_LOGGED_BAD_RECORDS {
                warn!(source = %source, "more malformed records in {location}: counting them without logging each");
            }
            self.logged += 1;
        }
        Ok(())
    }
}

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// 1-based line in the file where the record starts.
    pub line: u64,
    /// The decoder's explanation.
    pub message: String,
}

/// A text decoder for one schema and format: arrow-json or arrow-csv underneath.
pub struct TextDecoder {
    /// The full schema of the file.
    schema: SchemaRef,
    /// Columns to produce, as indices into `schema`.
    projection: Option<Vec<usize>>,
    /// The schema of the produced batches.
    output: SchemaRef,
    format: FileFormat,
    batch_size: usize,
    inner: Inner,
    /// Records of the common flat shape, read in one pass (arrow-json or arrow-csv for
    /// everything else); dropped after [`FLAT_GIVE_UP`] chunks in a row it declined.
    flat: Option<Flat>,
    declined: usize,
    /// Of the columns read, those handed out (positions in `output`), when a record is checked
    /// by more columns than it gives ([`TextDecoder::checking`]).
    built: Option<Vec<usize>>,
}

/// One-pass decoders for the plain shapes of the text formats.
enum Flat {
    Json(super::flat_json::FlatJson),
    Csv(super::flat_csv::FlatCsv),
}

/// Chunks in a row a one-pass decoder may decline before a file stops trying it (a file of
/// another shape then costs one failed attempt per chunk only this many times).
const FLAT_GIVE_UP: usize = 16;

// One per open file or decoder: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Json(arrow_json::reader::Decoder),
    Csv(arrow_csv::reader::Decoder),
}

impl TextDecoder {
    /// A decoder for `format` reading rows of `schema`, producing the `projection` of its
    /// columns (all when `None`), at most `batch_size` rows per batch. Columns left out are
    /// skipped, not converted.
    pub fn try_new(schema: SchemaRef, projection: Option<&[usize]>, format: FileFormat, batch_size: usize) -> Result<Self> {
        let projection = projection.map(<[usize]>::to_vec);
        let output = match &projection {
            Some(p) => Arc::new(schema.project(p).map_err(|e| ConnectorError::arrow("projecting the schema", e))?),
            None => Arc::clone(&schema),
        };
        let inner = Self::build(&schema, projection.as_deref(), &output, format, batch_size)?;
        let flat = match format {
            FileFormat::Json | FileFormat::JsonLines => super::flat_json::FlatJson::new(&output).map(Flat::Json),
            FileFormat::Csv { delimiter, quote, .. } => super::flat_csv::FlatCsv::new(&schema, projection.as_deref(), &output, delimiter, quote).map(Flat::Csv),
            FileFormat::Parquet => None,
        };
        Ok(Self { schema, projection, output, format, batch_size, inner, flat, declined: 0, built: None })
    }

    /// A decoder whose records are good or bad as a decoder of the `checked` columns finds
    /// them (indices into `schema`), that hands out only the `projection` of them. A top N
    /// per key over a file reads the keys first and its kept rows again: both reads check
    /// every column of the second, so that they number the same rows, whatever record is bad.
    ///
    /// ```sql
    /// SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS r FROM bid) WHERE r <= 1
    /// -- first read: bidder, auction, date_time handed out, every column checked
    /// ```
    pub fn checking(schema: SchemaRef, projection: &[usize], checked: &[usize], format: FileFormat, batch_size: usize) -> Result<Self> {
        let built: Vec<usize> = projection
            .iter()
            .map(|p| checked.iter().position(|c| c == p))
            .collect::<Option<_>>()
            .ok_or_else(|| ConnectorError::Other(format!("the columns {projection:?} handed out are not all among those checked, {checked:?}")))?;
        let mut d = Self::try_new(schema, Some(checked), format, batch_size)?;
        if let Some(Flat::Json(_)) = d.flat {
            // the one-pass decoder builds only the columns handed out
            d.flat = super::flat_json::FlatJson::checking(&d.output, &built).map(Flat::Json);
        }
        d.built = Some(built);
        Ok(d)
    }

    /// `batches` of the columns read as the decoder hands them out.
    fn hand_out(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        match &self.built {
            Some(built) => batches.iter().map(|b| b.project(built).map_err(|e| ConnectorError::arrow("projecting decoded rows", e))).collect(),
            None => Ok(batches),
        }
    }

    fn build(schema: &SchemaRef, projection: Option<&[usize]>, output: &SchemaRef, format: FileFormat, batch_size: usize) -> Result<Inner> {
        let err = |e| ConnectorError::arrow("building the decoder", e);
        Ok(match format {
            FileFormat::Csv { delimiter, quote, .. } => {
                let mut b = arrow_csv::ReaderBuilder::new(Arc::clone(schema))
                    .with_header(false)
                    .with_delimiter(delimiter)
                    .with_quote(quote)
                    .with_batch_size(batch_size);
                if let Some(p) = projection {
                    b = b.with_projection(p.to_vec());
                }
                Inner::Csv(b.build_decoder())
            }
            // arrow-json skips fields the schema does not name: decode straight into the output.
            FileFormat::Json | FileFormat::JsonLines => {
                Inner::Json(arrow_json::ReaderBuilder::new(Arc::clone(output)).with_batch_size(batch_size).build_decoder().map_err(err)?)
            }
            FileFormat::Parquet => return Err(ConnectorError::Other("parquet is not a text format".into())),
        })
    }

    fn reset(&mut self) -> Result<()> {
        self.inner = Self::build(&self.schema, self.projection.as_deref(), &self.output, self.format, self.batch_size)?;
        Ok(())
    }

    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, arrow::error::ArrowError> {
        match &mut self.inner {
            Inner::Json(d) => d.decode(buf),
            Inner::Csv(d) => d.decode(buf),
        }
    }

    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, arrow::error::ArrowError> {
        match &mut self.inner {
            Inner::Json(d) => d.flush(),
            Inner::Csv(d) => d.flush(),
        }
    }

    fn decode_all(&mut self, buf: &[u8], out: &mut Vec<RecordBatch>) -> std::result::Result<(), arrow::error::ArrowError> {
        let mut pos = 0;
        while pos < buf.len() {
            let n = self.decode(&buf[pos..])?;
            pos += n;
            if n == 0 || pos < buf.len() {
                match self.flush()? {
                    Some(b) => out.push(b),
                    // Nothing consumed and nothing buffered: the decoder cannot progress.
                    None if n == 0 => return Err(arrow::error::ArrowError::ParseError(format!("cannot decode {} bytes", buf.len() - pos))),
                    None => {}
                }
            }
        }
        if let Some(b) = self.flush()? {
            out.push(b);
        }
        Ok(())
    }

    /// Decodes `chunk`, whole lines each ending in `\n`. `line_of(i)` gives the file line of the
    /// chunk's i-th line. Returns the good rows and the bad records.
    pub fn decode_chunk(&mut self, chunk: &[u8], line_of: &dyn Fn(usize) -> u64) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let fast = match &self.flat {
            // (built as handed out)
            Some(Flat::Json(f)) => f.decode(chunk, self.batch_size),
            Some(Flat::Csv(f)) => f.decode(chunk, self.batch_size).map(|b| self.hand_out(b)).transpose()?,
            None => None,
        };
        if let Some(batches) = fast {
            self.declined = 0;
            return Ok((batches, Vec::new()));
        }
        // Malformed JSON Lines records must not send the whole chunk down the slow path (one
        // decoder per line): take them out cheaply — first by shape alone (a line cut short does
        // not end in `}`), then by a syntax check — and decode the rest as usual. Only for JSON
        // Lines, where a record is a line: a `.json` file may hold objects over several lines,
        // which the decoder below reads whole (its bad lines are split off after it fails).
        if self.format == FileFormat::JsonLines {
            if let Some(found) = self.split_off_malformed(chunk, line_of)? {
                return Ok(found);
            }
        }
        if self.flat.is_some() {
            self.declined += 1;
            if self.declined >= FLAT_GIVE_UP {
                self.flat = None;
            }
        }
        let mut out = Vec::new();
        match self.decode_all(chunk, &mut out) {
            Ok(()) => Ok((self.hand_out(out)?, Vec::new())),
            Err(_) => {
                self.reset()?;
                if self.format == FileFormat::Json {
                    if let Some(found) = self.split_off_malformed(chunk, line_of)? {
                        return Ok(found);
                    }
                }
                self.decode_lines(chunk, line_of)
            }
        }
    }

    /// The chunk decoded without its malformed lines, found by shape and then by parsing, when
    /// there are any; `None` when every line passes both checks.
    fn split_off_malformed(&mut self, chunk: &[u8], line_of: &dyn Fn(usize) -> u64) -> Result<Option<(Vec<RecordBatch>, Vec<BadRecord>)>> {
        for check in [JsonCheck::Shape, JsonCheck::Parse] {
            let (clean, kept, mut bad) = split_malformed_json(chunk, line_of, check);
            if !bad.is_empty() {
                let line_of_kept = |i: usize| kept.get(i).map_or_else(|| line_of(i), |k| line_of(*k));
                let (batches, more) = self.decode_chunk(&clean, &line_of_kept)?;
                bad.extend(more);
                bad.sort_by_key(|b| b.line);
                return Ok(Some((batches, bad)));
            }
        }
        Ok(None)
    }

    /// The slow path: one line at a time, so that each bad line is found and every good line kept.
    fn decode_lines(&mut self, chunk: &[u8], line_of: &dyn Fn(usize) -> u64) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, line) in chunk.split_inclusive(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let mut one = Vec::new();
            match self.decode_all(line, &mut one) {
                Ok(()) => good.extend(one),
                Err(e) => {
                    bad.push(BadRecord { line: line_of(i), message: e.to_string() });
                    self.reset()?;
                }
            }
        }
        let batch = if good.is_empty() {
            Vec::new()
        } else {
            vec![arrow::compute::concat_batches(&self.output, &good).map_err(|e| ConnectorError::arrow("joining decoded rows", e))?]
        };
        Ok((self.hand_out(batch)?, bad))
    }
}

/// How [`split_malformed_json`] tells a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonCheck {
    /// Only lines that are not `{…}` (a record cut short, a stray line): one look at each end.
    Shape,
    /// Lines that do not parse as JSON: a syntax check that builds nothing.
    Parse,
}

/// Splits JSON lines into the good ones by `check` (copied into one buffer, with their indices
/// among `chunk`'s lines) and the malformed ones, each with the JSON parser's message; far
/// cheaper than decoding line by line.
fn split_malformed_json(chunk: &[u8], line_of: &dyn Fn(usize) -> u64, check: JsonCheck) -> (Vec<u8>, Vec<usize>, Vec<BadRecord>) {
    let mut clean = Vec::with_capacity(chunk.len());
    let mut kept = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in chunk.split_inclusive(|b| *b == b'\n').enumerate() {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let fine = match check {
            JsonCheck::Shape => trimmed.first() == Some(&b'{') && trimmed.last() == Some(&b'}'),
            JsonCheck::Parse => serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok(),
        };
        if fine {
            clean.extend_from_slice(line);
            if line.last() != Some(&b'\n') {
                clean.push(b'\n');
            }
            kept.push(i);
        } else {
            let message = match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Err(e) => e.to_string(),
                Ok(_) => "not a JSON object".to_string(),
            };
            bad.push(BadRecord { line: line_of(i), message });
        }
    }
    (clean, kept, bad)
}

/// Rewrites a JSON array of objects as one object per line, so that it decodes like JSON Lines.
/// Returns the text and, for each element, the file line it starts on.
pub fn json_array_to_lines(bytes: &[u8]) -> std::result::Result<(Vec<u8>, Vec<u64>), String> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    let mut starts = Vec::new();
    let (mut depth, mut in_str, mut escaped, mut line) = (0usize, false, false, 1u64);
    let (mut closed, mut at_element_start) = (false, false);
    for &b in bytes {
        if b == b'\n' {
            line += 1;
        }
        if in_str {
            out.push(if b == b'\n' { b' ' } else { b });
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match (depth, b) {
            (_, b' ' | b'\t' | b'\r' | b'\n') => out.push(b' '),
            (0, b'[') if !closed => {
                depth = 1;
                at_element_start = true;
                out.push(b' ');
            }
            (0, _) => return Err(format!("line {line}: expected a JSON array, found '{}'", b as char)),
            (1, b',') => {
                out.push(b'\n');
                at_element_start = true;
            }
            (1, b']') => {
                depth = 0;
                closed = true;
                out.push(b'\n');
            }
            (d, _) => {
                if d == 1 && at_element_start {
                    starts.push(line);
                    at_element_start = false;
                }
                match b {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => depth -= 1,
                    b'"' => in_str = true,
                    _ => {}
                }
                out.push(b);
            }
        }
    }
    if depth != 0 || !closed {
        return Err(format!("line {line}: the JSON array is not closed"));
    }
    Ok((out, starts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]))
    }

    #[test]
    fn bad_lines_are_named_and_good_rows_kept() {
        let mut d = TextDecoder::try_new(schema(), None, FileFormat::JsonLines, 100).unwrap();
        let text = b"{\"id\":1,\"name\":\"a\"}\n{\"id\":\"x\"}\n{oops\n{\"id\":4,\"name\":\"d\"}\n";
        let (batches, bad) = d.decode_chunk(text, &|i| 10 + i as u64).unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![11, 12]);
    }

    #[test]
    fn csv_fast_path() {
        let fmt = FileFormat::Csv { has_headers: false, delimiter: b';', quote: b'"' };
        let mut d = TextDecoder::try_new(schema(), None, fmt, 2).unwrap();
        let (batches, bad) = d.decode_chunk(b"1;a\n2;b\n3;c\n", &|i| i as u64 + 1).unwrap();
        assert!(bad.is_empty());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let (_, bad) = d.decode_chunk(b"1;a\nx;b\n", &|i| i as u64 + 1).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        // Projected: only the second column is produced.
        let mut d = TextDecoder::try_new(schema(), Some(&[1]), fmt, 10).unwrap();
        let (batches, _) = d.decode_chunk(b"1;a\n2;b\n", &|i| i as u64 + 1).unwrap();
        assert_eq!(batches[0].num_columns(), 1);
        assert_eq!(batches[0].schema().field(0).name(), "name");
    }

    /// Handing out some columns while checking more: the rows and the bad records (their
    /// lines) of a decoder of every checked column, projected, for JSON Lines and CSV, with bad
    /// values in the columns not handed out; and the rows of the columns' own decoder where
    /// nothing is bad.
    #[test]
    fn checking_more_columns_skips_what_their_decoder_skips() {
        let s: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]));
        let mut seed = 3u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let csv = FileFormat::Csv { has_headers: false, delimiter: b',', quote: b'"' };
        let concat = |schema: &SchemaRef, b: &[RecordBatch]| arrow::compute::concat_batches(schema, b).unwrap();
        let mut bad_seen = 0;
        for round in 0..400 {
            let (mut json, mut text) = (String::new(), String::new());
            for _ in 0..1 + rnd() % 12 {
                let bad = rnd() % 5 == 0;
                let (id, name, price) = (rnd() % 100, rnd() % 7, rnd() % 1000);
                match (bad, rnd() % 4) {
                    (true, 0) => {
                        json.push_str(&format!("{{\"id\": {id}, \"name\": {name}, \"price\": {price}.5}}\n"));
                        text.push_str(&format!("{id},n{name},x{price}\n"));
                    }
                    (true, 1) => {
                        json.push_str(&format!("{{\"id\": \"{id}\", \"name\": \"n{name}\", \"price\": {price}}}\n"));
                        text.push_str(&format!("{id}.5,n{name},{price}\n"));
                    }
                    (true, _) => {
                        json.push_str(&format!("{{\"id\": {id}, \"name\": \"n{name}\", \"price\": true}}\n"));
                        text.push_str(&format!("{id},n{name},{price},extra\n"));
                    }
                    _ => {
                        json.push_str(&format!("{{\"id\": {id}, \"name\": \"n{name}\", \"price\": {price}.25}}\n"));
                        text.push_str(&format!("{id},n{name},{price}.25\n"));
                    }
                }
            }
            for (format, chunk) in [(FileFormat::JsonLines, json.as_bytes()), (csv, text.as_bytes())] {
                for (projection, checked) in [(&[0][..], &[0, 1, 2][..]), (&[2, 0][..], &[0, 1, 2][..]), (&[1][..], &[1, 2][..]), (&[0][..], &[0][..])] {
                    let line_of = |i: usize| 100 + i as u64;
                    let (want, want_bad) = TextDecoder::try_new(Arc::clone(&s), Some(checked), format, 4).unwrap().decode_chunk(chunk, &line_of).unwrap();
                    let mut d = TextDecoder::checking(Arc::clone(&s), projection, checked, format, 4).unwrap();
                    let (got, got_bad) = d.decode_chunk(chunk, &line_of).unwrap();
                    let out = Arc::new(s.project(projection).unwrap());
                    let positions: Vec<usize> = projection.iter().map(|p| checked.iter().position(|c| c == p).unwrap()).collect();
                    let want: Vec<RecordBatch> = want.iter().map(|b| b.project(&positions).unwrap()).collect();
                    assert_eq!(concat(&out, &got), concat(&out, &want), "round {round} {format:?} {projection:?} of {checked:?}");
                    let lines = |b: &[BadRecord]| b.iter().map(|b| b.line).collect::<Vec<_>>();
                    assert_eq!(lines(&got_bad), lines(&want_bad), "round {round} {format:?}");
                    bad_seen += got_bad.len();
                }
            }
        }
        assert!(bad_seen > 200, "{bad_seen}");
    }

    #[test]
    fn json_array() {
        let text = b"[\n  {\"id\": 1,\n   \"name\": \"a, b\"},\n  {\"id\": 2, \"name\": \"[x]\"}\n]\n";
        let (lines, starts) = json_array_to_lines(text).unwrap();
        let s = String::from_utf8(lines).unwrap();
        assert_eq!(s.lines().filter(|l| !l.trim().is_empty()).count(), 2);
        assert_eq!(starts, vec![2, 4]);
        assert!(json_array_to_lines(b"[{\"id\":1}").is_err());
    }
}
