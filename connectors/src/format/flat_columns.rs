//! The Arrow columns the one-pass text decoders (`flat_json`, `flat_csv`) write values into,
//! and the batches they make of them.
//!
//! ```sql
//! SELECT auction, price FROM bid   -- each wanted field goes straight into its column
//! ```

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, StringViewBuilder, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

/// One output column being built.
pub(crate) enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    /// Text as views (`Utf8View`), for a schema that asks for them: a value of up to 12 bytes
    /// inside its view, a longer one copied once into the builder's blocks (the file source
    /// declares JSON text as `Utf8`: see `crate::text_views`).
    View(StringViewBuilder),
    /// A timestamp without a time zone: its values in its unit, as arrow-json reads them.
    Time(Int64Builder, TimeUnit),
}

impl Column {
    /// A column per field of `schema` (Int64, Float64, Boolean, a timestamp without a time
    /// zone, Utf8View; anything else is built as Utf8: the decoders accept no other type),
    /// sized for a chunk of `text_len` bytes.
    pub(crate) fn for_schema(schema: &SchemaRef, text_len: usize) -> Vec<Column> {
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => Column::Int(Int64Builder::with_capacity(1024)),
                DataType::Float64 => Column::Float(Float64Builder::with_capacity(1024)),
                DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(1024)),
                DataType::Timestamp(unit, None) => Column::Time(Int64Builder::with_capacity(1024), *unit),
                DataType::Utf8View => Column::View(StringViewBuilder::with_capacity(1024)),
                _ => Column::Str(StringBuilder::with_capacity(1024, text_len / 2)),
            })
            .collect()
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Str(b) => b.append_null(),
            Column::View(b) => b.append_null(),
            Column::Time(b, _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Str(b) => Arc::new(b.finish()),
            Column::View(b) => Arc::new(b.finish()),
            Column::Time(b, unit) => {
                let ints = b.finish();
                let (values, nulls) = (ints.values().clone(), ints.nulls().cloned());
                match unit {
                    TimeUnit::Second => Arc::new(TimestampSecondArray::new(values, nulls)),
                    TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::new(values, nulls)),
                    TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::new(values, nulls)),
                    TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::new(values, nulls)),
                }
            }
        }
    }
}

/// The `rows` rows of `columns` as batches of `schema` of at most `batch_size` rows; `None`
/// when they do not make a valid batch (a null in a non-nullable column).
pub(crate) fn into_batches(schema: &SchemaRef, columns: &mut [Column], rows: usize, batch_size: usize) -> Option<Vec<RecordBatch>> {
    let arrays: Vec<ArrayRef> = columns.iter_mut().map(Column::finish).collect();
    let batch = RecordBatch::try_new(Arc::clone(schema), arrays).ok()?;
    let size = batch_size.max(1);
    Some((0..rows).step_by(size).map(|start| batch.slice(start, size.min(rows - start))).collect())
}
