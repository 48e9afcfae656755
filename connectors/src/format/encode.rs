//! Encoding record batches into the bytes of a file or object: CSV (with a header), JSON Lines
//! and Parquet, optionally gzip-compressed (text) or with a Parquet codec. Shared by the sinks
//! that write bytes (files, S3).
//!
//! ```sql
//! WITH ('archive.format' = 'parquet', 'archive.compression' = 'zstd')
//! ```

use std::io::Write;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::csv_writer::CsvLayout;
use super::FileFormat;
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// Compression of written files or objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// gzip (text formats: the whole file; Parquet: per page).
    Gzip,
    /// Snappy (Parquet only).
    Snappy,
    /// Zstandard (Parquet only).
    Zstd,
    /// LZ4 (Parquet only).
    Lz4,
}

impl Compression {
    /// Reads `compression` for a sink writing `format`, refusing codecs the format cannot use.
    pub fn from_properties(props: &Properties, format: FileFormat) -> Result<Self> {
        let c = match props.get("compression").map(|c| c.to_ascii_lowercase()) {
            None => Compression::None,
            Some(c) => match c.as_str() {
                "none" | "uncompressed" | "" => Compression::None,
                "gzip" | "gz" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "zstd" => Compression::Zstd,
                "lz4" => Compression::Lz4,
                _ => {
                    return Err(ConnectorError::invalid(
                        props.full_key("compression"),
                        format!("unknown compression '{c}'; use none, gzip, snappy, zstd or lz4"),
                    ))
                }
            },
        };
        if format != FileFormat::Parquet && !matches!(c, Compression::None | Compression::Gzip) {
            return Err(ConnectorError::invalid(props.full_key("compression"), format!("{} files can be compressed with gzip only", format.name())));
        }
        Ok(c)
    }

    /// The Parquet writer properties for this codec.
    pub fn parquet_properties(self) -> WriterProperties {
        let codec = match self {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Gzip => PqCompression::GZIP(GzipLevel::default()),
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
            Compression::Lz4 => PqCompression::LZ4_RAW,
        };
        WriterProperties::builder().set_compression(codec).build()
    }

    /// The extension a text file of this compression usually carries (`.gz`), or none.
    pub fn text_extension(self) -> &'static str {
        if self == Compression::Gzip {
            ".gz"
        } else {
            ""
        }
    }
}

/// Writes one CSV or JSON Lines batch to `out`; `header` writes the CSV header first. CSV is
/// encoded into `scratch` first, a buffer the caller keeps from batch to batch: a fresh one
/// per batch grew by copying itself and was mapped anew each time (Nexmark q10 spent a fifth of
/// its time in those copies and page faults).
pub fn write_text<W: Write>(format: FileFormat, batch: &RecordBatch, out: W, header: bool, context: &str, scratch: &mut Vec<u8>) -> Result<()> {
    match format {
        FileFormat::Csv { has_headers, delimiter, quote } => {
            scratch.clear();
            let bytes = scratch;
            CsvLayout::new(delimiter, quote).encode(batch, has_headers && header, bytes).map_err(|e| ConnectorError::arrow(context, e))?;
            // flushed per batch, as arrow-csv's writer did (a gzip stream: a sync flush, so
            // the rows so far are in the file)
            let mut out = out;
            out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| ConnectorError::arrow(context, e.into()))
        }
        _ => {
            let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(out);
            w.write(batch).and_then(|()| w.finish()).map_err(|e| ConnectorError::arrow(context, e))
        }
    }
}

// One per open object: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Text { gzip: Option<GzEncoder<Vec<u8>>>, plain: Vec<u8>, header_pending: bool },
    Parquet(ArrowWriter<Vec<u8>>),
}

/// Encodes the batches of one object into memory; the bytes produced so far are taken out as
/// they are ready ([`BufferEncoder::take`]), so that an uploader can send them as parts while
/// the object grows, and the memory held stays about one part.
pub struct BufferEncoder {
    format: FileFormat,
    context: String,
    encoder: Encoder,
    rows: usize,
    /// CSV text of a batch before it is appended (see [`write_text`]).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for BufferEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferEncoder").field("format", &self.format).field("context", &self.context).field("rows", &self.rows).finish()
    }
}

impl BufferEncoder {
    /// An encoder of `format` rows of `schema`; `context` (the object's name) goes into errors.
    pub fn try_new(format: FileFormat, compression: Compression, schema: SchemaRef, context: impl Into<String>) -> Result<Self> {
        let context = context.into();
        let encoder = match format {
            FileFormat::Parquet => Encoder::Parquet(
                ArrowWriter::try_new(Vec::new(), schema, Some(compression.parquet_properties()))
                    .map_err(|e| ConnectorError::Parquet { context: context.clone(), source: e })?,
            ),
            _ => Encoder::Text {
                gzip: (compression == Compression::Gzip).then(|| GzEncoder::new(Vec::new(), flate2::Compression::default())),
                plain: Vec::new(),
                header_pending: true,
            },
        };
        Ok(Self { format, context, encoder, rows: 0, scratch: Vec::new() })
    }

    /// Encodes `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let ctx = self.context.as_str();
        match &mut self.encoder {
            Encoder::Parquet(w) => w.write(batch).map_err(|e| ConnectorError::Parquet { context: ctx.to_string(), source: e })?,
            Encoder::Text { gzip, plain, header_pending } => {
                match gzip {
                    Some(g) => write_text(self.format, batch, g, *header_pending, ctx, &mut self.scratch)?,
                    None => write_text(self.format, batch, &mut *plain, *header_pending, ctx, &mut self.scratch)?,
                }
                *header_pending = false;
            }
        }
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bytes the object has so far, taken out, and the ones held back still to come.
    pub fn take(&mut self) -> Vec<u8> {
        match &mut self.encoder {
            Encoder::Parquet(w) => std::mem::take(w.inner_mut()),
            Encoder::Text { gzip: Some(g), .. } => std::mem::take(g.get_mut()),
            Encoder::Text { plain, .. } => std::mem::take(plain),
        }
    }

    /// Bytes ready to be taken.
    pub fn ready(&self) -> usize {
        match &self.encoder {
            Encoder::Parquet(w) => w.inner().len(),
            Encoder::Text { gzip: Some(g), .. } => g.get_ref().len(),
            Encoder::Text { plain, .. } => plain.len(),
        }
    }

    /// Bytes held back (Parquet: the row group in progress, as encoded so far).
    pub fn pending(&self) -> usize {
        match &self.encoder {
            Encoder::Parquet(w) => w.in_progress_size(),
            Encoder::Text { .. } => 0,
        }
    }

    /// Parquet: ends the row group in progress, so that its bytes can be taken.
    pub fn end_row_group(&mut self) -> Result<()> {
        if let Encoder::Parquet(w) = &mut self.encoder {
            w.flush().map_err(|e| ConnectorError::Parquet { context: self.context.clone(), source: e })?;
        }
        Ok(())
    }

    /// Bytes ready to be taken, plus (Parquet) the encoded size of the row group in progress.
    pub fn size(&self) -> usize {
        match &self.encoder {
            Encoder::Parquet(w) => w.inner().len() + w.in_progress_size(),
            Encoder::Text { gzip: Some(g), .. } => g.get_ref().len(),
            Encoder::Text { plain, .. } => plain.len(),
        }
    }

    /// Parquet: ends the file, returning the rest of its bytes and its metadata (row groups,
    /// column statistics); `None` for a text format.
    pub fn finish_parquet(self) -> Result<(Vec<u8>, Option<parquet::file::metadata::ParquetMetaData>)> {
        match self.encoder {
            Encoder::Parquet(mut w) => {
                let ctx = self.context;
                let metadata = w.finish().map_err(|e| ConnectorError::Parquet { context: ctx, source: e })?;
                Ok((std::mem::take(w.inner_mut()), Some(metadata)))
            }
            _ => self.finish().map(|b| (b, None)),
        }
    }

    /// Ends the object: the rest of its bytes (gzip trailer, Parquet footer).
    pub fn finish(self) -> Result<Vec<u8>> {
        let ctx = self.context;
        match self.encoder {
            Encoder::Parquet(w) => w.into_inner().map_err(|e| ConnectorError::Parquet { context: ctx, source: e }),
            Encoder::Text { gzip: Some(g), .. } => g.finish().map_err(|e| ConnectorError::Other(format!("{ctx}: {e}"))),
            Encoder::Text { plain, .. } => Ok(plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("s", DataType::Utf8, true)]));
        let ids: Vec<i64> = (from..from + n).collect();
        let s: Vec<String> = ids.iter().map(|i| format!("r{i}")).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(s))]).unwrap()
    }

    /// Bytes taken while writing plus the finish make the whole object, readable back exactly.
    #[test]
    fn taken_parts_make_the_whole_object() {
        for (format, compression) in [
            (FileFormat::Parquet, Compression::Zstd),
            (FileFormat::JsonLines, Compression::Gzip),
            (FileFormat::Csv { has_headers: true, delimiter: b',', quote: b'"' }, Compression::None),
        ] {
            let mut e = BufferEncoder::try_new(format, compression, batch(0, 1).schema(), "t").unwrap();
            let mut all = Vec::new();
            for i in 0..20 {
                e.write(&batch(i * 1000, 1000)).unwrap();
                all.extend(e.take());
            }
            assert_eq!(e.rows(), 20_000);
            all.extend(e.finish().unwrap());
            let rows = match format {
                FileFormat::Parquet => {
                    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes::Bytes::from(all), 4096).unwrap();
                    r.map(|b| b.unwrap().num_rows()).sum::<usize>()
                }
                FileFormat::JsonLines => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&all[..]), &mut text).unwrap();
                    assert!(text.starts_with("{\"id\":0,\"s\":\"r0\"}\n"), "{}", &text[..40]);
                    text.lines().count()
                }
                _ => {
                    let text = String::from_utf8(all).unwrap();
                    assert!(text.starts_with("id,s\n0,r0\n"));
                    text.lines().count() - 1
                }
            };
            assert_eq!(rows, 20_000, "{format:?}");
        }
    }
}
