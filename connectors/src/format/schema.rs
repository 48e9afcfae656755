//! File schemas: given by the user (`'x.schema' = 'id BIGINT, name VARCHAR'`) or inferred from
//! the files with arrow's own inference, merged across every file a glob matches.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flate2::read::MultiGzDecoder;

use super::file_format::FileFormat;
use crate::error::{ConnectorError, Result};

/// Records read to infer a schema from a text file.
pub const INFER_MAX_RECORDS: usize = 10_000;

/// Opens `path` for reading, transparently decompressing gzip (detected by its magic bytes).
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let mut f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| ConnectorError::io(path, e))?;
    let f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    Ok(if starts_gzip(&magic[..n]) {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// True when the file starts with the gzip magic bytes.
pub fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).map(|_| starts_gzip(&magic)).unwrap_or(false)
}

/// True when `bytes` (a file's first bytes) start with the gzip magic bytes.
pub fn starts_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Infers the schema of one file.
pub fn infer_file_schema(path: &Path, format: FileFormat) -> Result<Schema> {
    let ctx = || path.display().to_string();
    match format {
        FileFormat::Csv { has_headers, delimiter, quote } => {
            let fmt = arrow_csv::reader::Format::default().with_header(has_headers).with_delimiter(delimiter).with_quote(quote);
            let (schema, _) = fmt.infer_schema(open_text(path)?, Some(INFER_MAX_RECORDS)).map_err(|e| ConnectorError::arrow(ctx(), e))?;
            Ok(schema)
        }
        FileFormat::JsonLines | FileFormat::Json => {
            let mut reader = open_text(path)?;
            if format == FileFormat::Json && starts_with_array(&mut reader).map_err(|e| ConnectorError::io(path, e))? {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(|e| ConnectorError::io(path, e))?;
                let (lines, _) = super::decode::json_array_to_lines(&bytes).map_err(|m| ConnectorError::Malformed { location: ctx(), message: m })?;
                let (schema, _) =
                    arrow_json::reader::infer_json_schema(std::io::Cursor::new(lines), Some(INFER_MAX_RECORDS)).map_err(|e| ConnectorError::arrow(ctx(), e))?;
                return Ok(schema);
            }
            let (schema, _) = arrow_json::reader::infer_json_schema(reader, Some(INFER_MAX_RECORDS)).map_err(|e| ConnectorError::arrow(ctx(), e))?;
            Ok(schema)
        }
        FileFormat::Parquet => {
            let f = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
            let b =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
            Ok(b.schema().as_ref().clone())
        }
    }
}

/// Infers the schema of one object's bytes (text already decompressed); `context` names it.
pub fn infer_bytes_schema(bytes: bytes::Bytes, format: FileFormat, context: &str) -> Result<Schema> {
    let ctx = || context.to_string();
    match format {
        FileFormat::Csv { has_headers, delimiter, quote } => {
            let fmt = arrow_csv::reader::Format::default().with_header(has_headers).with_delimiter(delimiter).with_quote(quote);
            let (schema, _) = fmt.infer_schema(&bytes[..], Some(INFER_MAX_RECORDS)).map_err(|e| ConnectorError::arrow(ctx(), e))?;
            Ok(schema)
        }
        FileFormat::JsonLines | FileFormat::Json => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            let lines = if format == FileFormat::Json && first == Some(&b'[') {
                super::decode::json_array_to_lines(&bytes).map_err(|m| ConnectorError::Malformed { location: ctx(), message: m })?.0
            } else {
                bytes.to_vec()
            };
            let (schema, _) = arrow_json::reader::infer_json_schema(&lines[..], Some(INFER_MAX_RECORDS)).map_err(|e| ConnectorError::arrow(ctx(), e))?;
            Ok(schema)
        }
        FileFormat::Parquet => {
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| ConnectorError::Parquet { context: ctx(), source: e })?;
            Ok(b.schema().as_ref().clone())
        }
    }
}

/// Peeks whether the text begins (after whitespace) with `[`, leaving the reader unchanged
/// except for the skipped whitespace.
pub fn starts_with_array(reader: &mut dyn BufRead) -> std::io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if ws < buf.len() {
            let first = buf[ws];
            reader.consume(ws);
            return Ok(first == b'[');
        }
        let n = buf.len();
        reader.consume(n);
    }
}

/// Infers and merges the schemas of all `paths`; with no files an error names the pattern.
pub fn infer_schema(paths: &[std::path::PathBuf], format: FileFormat, pattern: &str) -> Result<SchemaRef> {
    if paths.is_empty() {
        return Err(ConnectorError::NoFiles { pattern: pattern.to_string() });
    }
    let mut schemas = Vec::with_capacity(paths.len());
    for p in paths {
        schemas.push(infer_file_schema(p, format)?);
    }
    let merged = Schema::try_merge(schemas).map_err(|e| ConnectorError::arrow(format!("merging the schemas of '{pattern}'"), e))?;
    // Inference may see only nulls for a column; read such columns as strings.
    let fields: Vec<Field> = merged
        .fields()
        .iter()
        .map(|f| if f.data_type() == &DataType::Null { f.as_ref().clone().with_data_type(DataType::Utf8) } else { f.as_ref().clone() })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Parses a schema given as SQL column definitions: `id BIGINT, name VARCHAR NOT NULL, price DECIMAL(10,2)`.
pub fn parse_schema(text: &str, key: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for col in split_top_level(text) {
        let col = col.trim();
        if col.is_empty() {
            continue;
        }
        let (name, rest) =
            col.split_once(char::is_whitespace).ok_or_else(|| ConnectorError::invalid(key, format!("column '{col}' has no type; write 'name TYPE'")))?;
        let rest = rest.trim();
        let upper = rest.to_ascii_uppercase();
        let (ty_text, nullable) = match upper.strip_suffix("NOT NULL") {
            Some(t) => (&rest[..t.len()], false),
            None => (rest, true),
        };
        let dt = sql_type(ty_text.trim()).ok_or_else(|| ConnectorError::invalid(key, format!("unknown type '{}' for column '{name}'", ty_text.trim())))?;
        fields.push(Field::new(name.trim_matches('"').trim_matches('`'), dt, nullable));
    }
    if fields.is_empty() {
        return Err(ConnectorError::invalid(key, "the schema lists no columns"));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Maps a SQL type name to an Arrow type; arrow's own names (`Int64`, `Utf8`) work too.
fn sql_type(t: &str) -> Option<DataType> {
    let u = t.to_ascii_uppercase();
    let base = u.split('(').next().unwrap_or("").trim();
    Some(match base {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" | "LONG" => DataType::Int64,
        "REAL" | "FLOAT" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" => DataType::Float64,
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" => DataType::Utf8,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "TIMESTAMPTZ" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        "DECIMAL" | "NUMERIC" => {
            let args = u.split_once('(').map(|(_, a)| a.trim_end_matches(')').to_string()).unwrap_or_default();
            let mut it = args.split(',').map(|s| s.trim().parse::<i64>().ok());
            let p = it.next().flatten().unwrap_or(38) as u8;
            let s = it.next().flatten().unwrap_or(0) as i8;
            DataType::Decimal128(p, s)
        }
        _ => return t.parse::<DataType>().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_given_schema() {
        let s = parse_schema("id BIGINT NOT NULL, name VARCHAR, price DECIMAL(10,2), ts TIMESTAMP, ok Boolean", "x.schema").unwrap();
        assert_eq!(s.fields().len(), 5);
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(!s.field(0).is_nullable());
        assert_eq!(s.field(2).data_type(), &DataType::Decimal128(10, 2));
        assert!(parse_schema("id WIBBLE", "x.schema").unwrap_err().to_string().contains("unknown type 'WIBBLE' for column 'id'"));
    }
}
