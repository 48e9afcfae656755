//! Text and bytes as string views (`Utf8View`, `BinaryView`) inside the engine, plain text
//! (`Utf8`, `Binary`) at its edges.
//!
//! A Parquet file's text columns are decoded as views into its decompressed pages: 16 bytes a
//! value, the bytes themselves left where they are. A source that hands them on as views (the
//! file source, for a Parquet file whose schema it infers) spares a copy of every value, and
//! so does every filter, join and top N above it, which then move views, not text. The
//! rows a sink writes are made plain text once, on their way in ([`PlainText`]): sinks, their
//! files and their readers see `Utf8` and `Binary` as before. A sink that reads no column
//! (the blackhole), or encodes views as it encodes plain text (CSV and JSON Lines files),
//! takes the views as they are ([`Sink::takes_text_views`]).
//!
//! JSON files are read as plain text: their decoders can build views (`Utf8View` in the
//! schema), but a JSON source that declared them was slower on Nexmark q19 and q18 and held
//! more memory on q7 and q19 (benches/README.md), for a gain on q9 only.
//!
//! ```sql
//! -- bid.parquet's url and extra reach the top N as views; out.jsonl gets them as text
//! CREATE STREAM top AS SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid)
//! WHERE r <= 10 INTO out
//! WITH ('bid.type' = 'file_source', 'bid.path' = 'bid.parquet', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');
//! ```

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;

use crate::checkpoint::{Prepared, SourceCheckpoint, SourcePositions};
use crate::error::{ConnectorError, Result};
use crate::sink::{Delivery, Sink};

/// `schema` with its top-level text and byte columns as views (`Utf8` → `Utf8View`, `Binary`
/// → `BinaryView`): the schema a source declares for a Parquet file it reads as views.
pub fn as_views(schema: &Schema) -> Schema {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            DataType::Binary => Arc::new(f.as_ref().clone().with_data_type(DataType::BinaryView)),
            _ => Arc::clone(f),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The fields of a Parquet file's schema as a source reads them: the text and byte columns the
/// source declares as views (`Utf8View`, `BinaryView`, from [`as_views`]) decoded as views,
/// the others as they are in the file; `None` when no column changes (the file's own schema
/// serves). The reader then hands out the batches in the source's types, without a cast.
pub fn declared_views<'a>(file_fields: impl IntoIterator<Item = &'a FieldRef>, source: &Schema) -> Option<Vec<FieldRef>> {
    let mut changed = false;
    let fields: Vec<FieldRef> = file_fields
        .into_iter()
        .map(|f| {
            let declared = source.field_with_name(f.name()).ok().map(|s| s.data_type());
            match (f.data_type(), declared) {
                (DataType::Utf8, Some(v @ DataType::Utf8View)) | (DataType::Binary, Some(v @ DataType::BinaryView)) => {
                    changed = true;
                    Arc::new(f.as_ref().clone().with_data_type(v.clone()))
                }
                _ => Arc::clone(f),
            }
        })
        .collect();
    changed.then_some(fields)
}

/// Views of `array` whose buffers hold over twice the text they point at (and more than
/// 64 KiB to spare) copied into buffers of their own: a batch that keeps few of the rows read
/// (a row filter, the rows a top N keeps) then stops holding the whole decoded pages. `None`
/// when `array` is not a view array or is compact enough.
pub fn compact_sparse(array: &ArrayRef) -> Option<ArrayRef> {
    use arrow::array::{AsArray, GenericByteViewArray};
    use arrow::datatypes::ByteViewType;
    fn compacted<T: ByteViewType + ?Sized>(v: &GenericByteViewArray<T>) -> Option<ArrayRef> {
        const SPARE: usize = 64 << 10;
        let held: usize = v.data_buffers().iter().map(|b| b.len()).sum();
        (held > v.total_buffer_bytes_used().saturating_mul(2).saturating_add(SPARE)).then(|| Arc::new(v.gc()) as ArrayRef)
    }
    match array.data_type() {
        DataType::Utf8View => compacted(array.as_string_view()),
        DataType::BinaryView => compacted(array.as_binary_view()),
        _ => None,
    }
}

/// `batch` with its sparse view columns compacted ([`compact_sparse`]); the batch itself when
/// none is.
pub fn compact_batch(batch: RecordBatch) -> RecordBatch {
    let compacted: Vec<Option<ArrayRef>> = batch.columns().iter().map(compact_sparse).collect();
    if compacted.iter().all(Option::is_none) {
        return batch;
    }
    let columns: Vec<ArrayRef> = batch.columns().iter().zip(compacted).map(|(c, n)| n.unwrap_or_else(|| Arc::clone(c))).collect();
    // same schema, same lengths: cannot fail; the batch as it was if it did
    RecordBatch::try_new_with_options(batch.schema(), columns, &RecordBatchOptions::new().with_row_count(Some(batch.num_rows()))).unwrap_or(batch)
}

/// `t` with every view inside it (nested in lists, maps and structs too) as plain text or bytes;
/// `None` when it holds none.
fn plain_type(t: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| plain_type(f.data_type()).map(|d| Arc::new(Field::clone(f).with_data_type(d)));
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Map(f, sorted) => field(f).map(|f| DataType::Map(f, *sorted)),
        DataType::Dictionary(k, v) => plain_type(v).map(|v| DataType::Dictionary(k.clone(), Box::new(v))),
        DataType::Struct(fields) => {
            let changed: Vec<Option<FieldRef>> = fields.iter().map(field).collect();
            changed.iter().any(Option::is_some).then(|| DataType::Struct(fields.iter().zip(changed).map(|(f, c)| c.unwrap_or_else(|| Arc::clone(f))).collect()))
        }
        _ => None,
    }
}

/// `schema` with its views as plain text and bytes (see [`plain_batch`]); `None` when it has
/// none.
pub fn plain_schema(schema: &Schema) -> Option<SchemaRef> {
    let changed: Vec<Option<DataType>> = schema.fields().iter().map(|f| plain_type(f.data_type())).collect();
    if changed.iter().all(Option::is_none) {
        return None;
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .zip(changed)
        .map(|(f, c)| match c {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => Arc::clone(f),
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// `batch` with its views copied out into plain text and bytes (`Utf8View` → `Utf8`, nested
/// ones too); the batch itself (a cheap clone) when it has none. Fails only where one column's
/// text would pass 2 GiB in one batch.
pub fn plain_batch(batch: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let Some(schema) = plain_schema(batch.schema_ref()) else { return Ok(batch.clone()) };
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { arrow::compute::cast(c, f.data_type()) })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new_with_options(schema, columns, &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))
}

/// A sink that gets plain text: the views of each batch are copied out before the sink sees it
/// (and its schema check sees the plain types). What [`wrap`] puts around a sink that does not
/// take views.
pub struct PlainText {
    inner: Box<dyn Sink>,
}

/// `sink` as the engine drives it: as it is when it takes views, else behind [`PlainText`].
pub fn wrap(sink: Box<dyn Sink>) -> Box<dyn Sink> {
    if sink.takes_text_views() {
        sink
    } else {
        Box::new(PlainText { inner: sink })
    }
}

impl PlainText {
    /// `batch` with its text as plain `Utf8`/`Binary`, for the wrapped sink.
    fn plain(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        plain_batch(batch).map_err(|e| ConnectorError::arrow(format!("sink '{}': text of the rows to write", self.inner.name()), e))
    }
}

#[async_trait]
impl Sink for PlainText {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn check_schema(&self, schema: &Schema) -> Result<()> {
        match plain_schema(schema) {
            Some(plain) => self.inner.check_schema(&plain),
            None => self.inner.check_schema(schema),
        }
    }

    fn attach_metrics(&mut self, metrics: Arc<crate::metrics::ConnectorMetrics>) {
        self.inner.attach_metrics(metrics)
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let plain = self.plain(batch)?;
        self.inner.write(&plain).await
    }

    fn groups_writes(&self) -> bool {
        self.inner.groups_writes()
    }

    async fn write_all(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let plain = batches.iter().map(|b| self.plain(b)).collect::<Result<Vec<_>>>()?;
        self.inner.write_all(&plain).await
    }

    async fn flush(&mut self) -> Result<()> {
        self.inner.flush().await
    }

    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }

    fn transactional(&self) -> bool {
        self.inner.transactional()
    }

    fn set_delivery(&mut self, job: &str, delivery: Delivery) -> Result<()> {
        self.inner.set_delivery(job, delivery)
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        self.inner.prepare(checkpoint).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.inner.commit(checkpoint).await
    }

    fn take_source_commits(&mut self, sources: &[(String, Arc<dyn SourceCheckpoint>)]) -> Vec<String> {
        self.inner.take_source_commits(sources)
    }

    async fn commit_with_sources(&mut self, checkpoint: u64, sources: &SourcePositions) -> Result<()> {
        self.inner.commit_with_sources(checkpoint, sources).await
    }

    async fn last_committed(&mut self) -> Result<Option<u64>> {
        self.inner.last_committed().await
    }

    fn commit_is_final(&self) -> bool {
        self.inner.commit_is_final()
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        self.inner.recover(restored).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, BinaryViewArray, Int64Array, ListArray, StringViewArray, StructArray};
    use arrow::datatypes::Int32Type;

    /// Views at the top and nested in a list and a struct come out as plain text with the same
    /// values and nulls; a batch without views is handed back as it is.
    #[test]
    fn views_come_out_as_plain_text_with_the_same_values() {
        let text = StringViewArray::from(vec![Some("a fairly long text, past the inline twelve bytes"), None, Some("short")]);
        let bytes = BinaryViewArray::from(vec![Some(b"\x00\x01".as_ref()), Some(b"".as_ref()), None]);
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Utf8View, true)),
            arrow::buffer::OffsetBuffer::from_lengths([2, 0, 1]),
            Arc::new(StringViewArray::from(vec!["x", "yy", "zzz"])),
            None,
        );
        let inner =
            StructArray::from(vec![(Arc::new(Field::new("s", DataType::Utf8View, true)), Arc::new(StringViewArray::from(vec!["p", "q", "r"])) as ArrayRef)]);
        let ids = Int64Array::from(vec![1, 2, 3]);
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(ids) as ArrayRef),
            ("text", Arc::new(text) as ArrayRef),
            ("bytes", Arc::new(bytes) as ArrayRef),
            ("list", Arc::new(list) as ArrayRef),
            ("inner", Arc::new(inner) as ArrayRef),
        ])
        .unwrap();
        let plain = plain_batch(&batch).unwrap();
        let types: Vec<String> = plain.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(types, vec!["Int64", "Utf8", "Binary", "List(Utf8)", "Struct(\"s\": Utf8)"]);
        let text = plain.column(1).as_string::<i32>();
        assert_eq!((text.value(0), text.is_null(1), text.value(2)), ("a fairly long text, past the inline twelve bytes", true, "short"));
        let bytes = plain.column(2).as_binary::<i32>();
        assert_eq!((bytes.value(0), bytes.value(1), bytes.is_null(2)), (b"\x00\x01".as_ref(), b"".as_ref(), true));
        let items = plain.column(3).as_list::<i32>().values().as_string::<i32>().iter().flatten().collect::<Vec<_>>().join(",");
        assert_eq!(items, "x,yy,zzz");
        assert_eq!(plain_schema(plain.schema_ref()), None, "nothing left to make plain");
        // no views: the same columns, not copies
        let again = plain_batch(&plain).unwrap();
        assert!(Arc::ptr_eq(again.column(1), plain.column(1)));
        // a dictionary of views keeps its keys
        let dict: arrow::array::DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let dict = arrow::compute::cast(&dict, &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8View))).unwrap();
        let b = RecordBatch::try_from_iter(vec![("d", dict)]).unwrap();
        assert_eq!(plain_batch(&b).unwrap().column(0).data_type(), &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)));
    }

    /// A view array that points at a small part of its buffers is copied into its own; one
    /// that points at most of them is left as it is.
    #[test]
    fn sparse_views_are_compacted_and_dense_ones_left() {
        let long = |i: usize| format!("{i:>40}");
        let all = StringViewArray::from_iter_values((0..10_000).map(long));
        let array: ArrayRef = Arc::new(all.clone());
        assert!(compact_sparse(&array).is_none(), "every byte pointed at");
        // every 100th row kept: 1% of the text, the buffers still whole
        let keep = arrow::array::BooleanArray::from_iter((0..10_000).map(|i| Some(i % 100 == 0)));
        let few = arrow::compute::filter(&array, &keep).unwrap();
        let compacted = compact_sparse(&few).expect("sparse");
        let held = |a: &ArrayRef| a.as_string_view().data_buffers().iter().map(|b| b.len()).sum::<usize>();
        assert!(held(&compacted) < held(&few) / 50, "{} of {}", held(&compacted), held(&few));
        assert_eq!(compacted.as_string_view().iter().collect::<Vec<_>>(), few.as_string_view().iter().collect::<Vec<_>>());
        let batch = RecordBatch::try_from_iter(vec![("s", few), ("n", Arc::new(Int64Array::from(vec![1; 100])) as ArrayRef)]).unwrap();
        let out = compact_batch(batch.clone());
        assert_eq!(out.num_rows(), 100);
        assert_eq!(out.column(0).as_string_view().iter().collect::<Vec<_>>(), batch.column(0).as_string_view().iter().collect::<Vec<_>>());
        assert!(Arc::ptr_eq(out.column(1), batch.column(1)));
    }

    /// Only top-level text and bytes become views in a source's schema.
    #[test]
    fn a_source_declares_its_top_level_text_as_views() {
        let schema = Schema::new(vec![
            Field::new("t", DataType::Utf8, true),
            Field::new("b", DataType::Binary, false),
            Field::new("n", DataType::Int64, true),
            Field::new("l", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]);
        let viewed = as_views(&schema);
        let types: Vec<&DataType> = viewed.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(types[..3], [&DataType::Utf8View, &DataType::BinaryView, &DataType::Int64]);
        assert_eq!(types[3], schema.field(3).data_type());
        assert!(!viewed.field(1).is_nullable());
    }
}
