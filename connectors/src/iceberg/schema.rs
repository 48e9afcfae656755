//! Columns between the query and the table: the Iceberg schema a new table gets from the
//! query's Arrow schema, and the Arrow form each batch is written in (the table's types, field
//! ids on every field so that readers match columns by id).
//!
//! ```sql
//! CREATE STREAM t AS SELECT id, CAST(amount AS DOUBLE) AS amount, ts FROM orders INTO lake
//! WITH ('lake.type' = 'iceberg_sink', 'lake.table' = 'sales.orders', …);
//! -- a new table sales.orders(id long, amount double, ts timestamp)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{make_array, new_null_array, Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use crate::error::{ConnectorError, Result};

/// The Iceberg type of a column of `dt`; `id` hands out placeholder field ids (a new table's
/// builder assigns its own).
fn iceberg_type(column: &str, dt: &DataType, id: &mut i32) -> Result<Type> {
    fn next(id: &mut i32) -> i32 {
        *id += 1;
        *id
    }
    let p = |t| Ok(Type::Primitive(t));
    match dt {
        DataType::Boolean => p(PrimitiveType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => p(PrimitiveType::Int),
        DataType::Int64 | DataType::UInt32 => p(PrimitiveType::Long),
        DataType::Float16 | DataType::Float32 => p(PrimitiveType::Float),
        DataType::Float64 => p(PrimitiveType::Double),
        DataType::Decimal32(pr, s) | DataType::Decimal64(pr, s) | DataType::Decimal128(pr, s) if *pr <= 38 && *s >= 0 => {
            p(PrimitiveType::Decimal { precision: u32::from(*pr), scale: *s as u32 })
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => p(PrimitiveType::String),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => p(PrimitiveType::Binary),
        DataType::FixedSizeBinary(n) if *n >= 0 => p(PrimitiveType::Fixed(*n as u64)),
        DataType::Date32 | DataType::Date64 => p(PrimitiveType::Date),
        DataType::Time32(_) | DataType::Time64(_) => p(PrimitiveType::Time),
        DataType::Timestamp(_, None) => p(PrimitiveType::Timestamp),
        DataType::Timestamp(_, Some(_)) => p(PrimitiveType::Timestamptz),
        DataType::Dictionary(_, v) => iceberg_type(column, v, id),
        DataType::Struct(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                let fid = next(id);
                out.push(Arc::new(NestedField::optional(fid, f.name(), iceberg_type(&format!("{column}.{}", f.name()), f.data_type(), id)?)));
            }
            Ok(Type::Struct(StructType::new(out)))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) | DataType::FixedSizeList(f, _) => {
            let fid = next(id);
            let element = iceberg_type(&format!("{column}[]"), f.data_type(), id)?;
            Ok(Type::List(ListType::new(Arc::new(NestedField::list_element(fid, element, false)))))
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(column, dt));
            };
            let [k, v] = kv.iter().collect::<Vec<_>>()[..] else { return Err(unsupported(column, dt)) };
            let (kid, vid) = (next(id), next(id));
            let key = iceberg_type(&format!("{column}.key"), k.data_type(), id)?;
            let value = iceberg_type(&format!("{column}.value"), v.data_type(), id)?;
            Ok(Type::Map(MapType::new(Arc::new(NestedField::map_key_element(kid, key)), Arc::new(NestedField::map_value_element(vid, value, false)))))
        }
        _ => Err(unsupported(column, dt)),
    }
}

fn unsupported(column: &str, dt: &DataType) -> ConnectorError {
    let hint = match dt {
        DataType::UInt64 => " (CAST it to BIGINT, or to DECIMAL(20, 0) when values pass 2^63)",
        DataType::Interval(_) | DataType::Duration(_) => " (CAST it to BIGINT, a count of its unit)",
        _ => "",
    };
    ConnectorError::Other(format!("column '{column}' of type {dt}: Iceberg has no such type{hint}"))
}

/// The Iceberg schema of a new table holding the query's columns (all optional: a query's
/// columns may be null). Field ids are placeholders until the table is created.
pub fn table_schema(arrow: &ArrowSchema) -> Result<Schema> {
    let mut id = 0;
    let mut fields = Vec::with_capacity(arrow.fields().len());
    for f in arrow.fields() {
        id += 1;
        let fid = id;
        let ty = iceberg_type(f.name(), f.data_type(), &mut id)?;
        fields.push(Arc::new(NestedField::optional(fid, f.name(), ty)));
    }
    Schema::builder().with_fields(fields).build().map_err(|e| ConnectorError::Other(format!("iceberg schema: {e}")))
}

/// The Arrow type a column of Iceberg type `ty` is written as.
pub fn arrow_type(ty: &Type) -> DataType {
    match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => DataType::Boolean,
            PrimitiveType::Int => DataType::Int32,
            PrimitiveType::Long => DataType::Int64,
            PrimitiveType::Float => DataType::Float32,
            PrimitiveType::Double => DataType::Float64,
            PrimitiveType::Decimal { precision, scale } => DataType::Decimal128(*precision as u8, *scale as i8),
            PrimitiveType::Date => DataType::Date32,
            PrimitiveType::Time => DataType::Time64(TimeUnit::Microsecond),
            PrimitiveType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PrimitiveType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            PrimitiveType::TimestampNs => DataType::Timestamp(TimeUnit::Nanosecond, None),
            PrimitiveType::TimestamptzNs => DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
            PrimitiveType::String => DataType::Utf8,
            PrimitiveType::Uuid => DataType::FixedSizeBinary(16),
            PrimitiveType::Fixed(n) => DataType::FixedSizeBinary(*n as i32),
            PrimitiveType::Binary => DataType::Binary,
        },
        Type::Struct(s) => DataType::Struct(s.fields().iter().map(arrow_field).collect::<Fields>()),
        Type::List(l) => DataType::List(Arc::new(arrow_field(&l.element_field))),
        Type::Map(m) => {
            let entries = Field::new("key_value", DataType::Struct(Fields::from(vec![arrow_field(&m.key_field), arrow_field(&m.value_field)])), false);
            DataType::Map(Arc::new(entries), false)
        }
    }
}

/// `f` as an Arrow field carrying its Iceberg field id (Parquet writes it as the column's id).
pub fn arrow_field(f: &NestedFieldRef) -> Field {
    Field::new(f.name.as_str(), arrow_type(&f.field_type), !f.required)
        .with_metadata(HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), f.id.to_string())]))
}

/// True when a column of `from` may be written to a column of `to`: the same type (ids
/// aside), or one Iceberg promotes (int → long, float → double, a wider decimal).
fn fits(from: &Type, to: &Type) -> bool {
    match (from, to) {
        (Type::Primitive(a), Type::Primitive(b)) => {
            a == b
                || matches!(
                    (a, b),
                    (PrimitiveType::Int, PrimitiveType::Long)
                        | (PrimitiveType::Float, PrimitiveType::Double)
                        | (PrimitiveType::Timestamp, PrimitiveType::Timestamptz)
                        | (PrimitiveType::Timestamptz, PrimitiveType::Timestamp)
                )
                || matches!((a, b), (PrimitiveType::Decimal { precision: p1, scale: s1 }, PrimitiveType::Decimal { precision: p2, scale: s2 }) if s1 == s2 && p1 <= p2)
        }
        (Type::Struct(a), Type::Struct(b)) => {
            a.fields().len() == b.fields().len() && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name == y.name && fits(&x.field_type, &y.field_type))
        }
        (Type::List(a), Type::List(b)) => fits(&a.element_field.field_type, &b.element_field.field_type),
        (Type::Map(a), Type::Map(b)) => fits(&a.key_field.field_type, &b.key_field.field_type) && fits(&a.value_field.field_type, &b.value_field.field_type),
        _ => false,
    }
}

/// How the query's batches become rows of the table: for each table column, the query column
/// that fills it (none: nulls), and the Arrow schema written.
#[derive(Debug, Clone)]
pub struct WritePlan {
    /// The schema of the batches written (table order, table types, field ids).
    pub schema: SchemaRef,
    sources: Vec<Option<usize>>,
    /// Table columns that are required (no nulls allowed), by position.
    required: Vec<bool>,
}

impl WritePlan {
    /// Matches the query's columns to `table`'s by name. A query column the table lacks, a
    /// type the table's column cannot hold, or a required table column the query does not fill
    /// is an error naming the column and `table_name`.
    pub fn new(query: &ArrowSchema, table: &Schema, table_name: &str) -> Result<Self> {
        let fields = table.as_struct().fields();
        let mut sources = vec![None; fields.len()];
        for (i, qf) in query.fields().iter().enumerate() {
            let pos = fields.iter().position(|f| f.name == *qf.name()).or_else(|| fields.iter().position(|f| f.name.eq_ignore_ascii_case(qf.name())));
            let Some(pos) = pos else {
                let have: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                return Err(ConnectorError::Other(format!(
                    "column '{}' is not in Iceberg table {table_name} (its columns: {}); drop it from the query or add it to the table",
                    qf.name(),
                    have.join(", ")
                )));
            };
            let mut id = 0;
            let ty = iceberg_type(qf.name(), qf.data_type(), &mut id)?;
            if !fits(&ty, &fields[pos].field_type) {
                return Err(ConnectorError::Other(format!(
                    "column '{}' is {ty} in the query and {} in Iceberg table {table_name}; CAST it",
                    qf.name(),
                    fields[pos].field_type
                )));
            }
            sources[pos] = Some(i);
        }
        for (f, s) in fields.iter().zip(&sources) {
            if s.is_none() && f.required {
                return Err(ConnectorError::Other(format!("Iceberg table {table_name} requires column '{}', which the query does not have", f.name)));
            }
        }
        let schema = Arc::new(ArrowSchema::new(fields.iter().map(arrow_field).collect::<Vec<_>>()));
        Ok(Self { schema, sources, required: fields.iter().map(|f| f.required).collect() })
    }

    /// `batch` as the table's columns: reordered, cast to the table's types, ids attached,
    /// missing optional columns null.
    pub fn conform(&self, batch: &RecordBatch, table_name: &str) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.sources.len());
        for ((target, source), required) in self.schema.fields().iter().zip(&self.sources).zip(&self.required) {
            let column = match source {
                None => new_null_array(target.data_type(), batch.num_rows()),
                Some(i) => conform_column(batch.column(*i), target.data_type(), target.name(), table_name)?,
            };
            if *required && column.null_count() > 0 {
                return Err(ConnectorError::Other(format!(
                    "column '{}' of Iceberg table {table_name} is required, and {} rows of the batch have it null",
                    target.name(),
                    column.null_count()
                )));
            }
            columns.push(column);
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| ConnectorError::Arrow { context: format!("iceberg table {table_name}"), source: e })
    }
}

/// `column` as `target`: relabelled when only nested field names, ids or nullability differ
/// (no copy), cast when the types do.
fn conform_column(column: &ArrayRef, target: &DataType, name: &str, table_name: &str) -> Result<ArrayRef> {
    if column.data_type() == target {
        return Ok(column.clone());
    }
    let arrow_err = |e| ConnectorError::Arrow { context: format!("column '{name}' of iceberg table {table_name}"), source: e };
    let column = if same_layout(column.data_type(), target) { column.clone() } else { arrow::compute::cast(column, target).map_err(arrow_err)? };
    if column.data_type() == target {
        return Ok(column);
    }
    relabel(column.to_data(), target).map(make_array).map_err(arrow_err)
}

/// True when `a` and `b` differ at most in nested field names, metadata and nullability.
fn same_layout(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Struct(x), DataType::Struct(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(f, g)| same_layout(f.data_type(), g.data_type())),
        (DataType::List(x), DataType::List(y)) | (DataType::LargeList(x), DataType::LargeList(y)) | (DataType::Map(x, _), DataType::Map(y, _)) => {
            same_layout(x.data_type(), y.data_type())
        }
        _ => a == b,
    }
}

/// `data` typed as `target`, its children relabelled the same way (the buffers are shared).
fn relabel(data: arrow::array::ArrayData, target: &DataType) -> std::result::Result<arrow::array::ArrayData, arrow::error::ArrowError> {
    let child_types: Vec<DataType> = match target {
        DataType::Struct(fields) => fields.iter().map(|f| f.data_type().clone()).collect(),
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => vec![f.data_type().clone()],
        _ => Vec::new(),
    };
    if child_types.len() != data.child_data().len() {
        return data.into_builder().data_type(target.clone()).build();
    }
    let children = data.child_data().iter().zip(&child_types).map(|(c, t)| relabel(c.clone(), t)).collect::<std::result::Result<Vec<_>, _>>()?;
    data.into_builder().data_type(target.clone()).child_data(children).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_columns_become_table_columns_and_back() {
        let query = ArrowSchema::new(vec![
            Field::new("id", DataType::Int16, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]);
        let schema = table_schema(&query).unwrap();
        let f = schema.as_struct().fields();
        assert_eq!(f.len(), 4);
        assert_eq!(*f[0].field_type, Type::Primitive(PrimitiveType::Int));
        assert_eq!(*f[2].field_type, Type::Primitive(PrimitiveType::Timestamptz));
        let plan = WritePlan::new(&query, &schema, "db.t").unwrap();
        assert_eq!(plan.schema.field(2).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())));
        assert_eq!(plan.schema.field(0).metadata().get(PARQUET_FIELD_ID_META_KEY).map(String::as_str), Some("1"));
        let uint = ArrowSchema::new(vec![Field::new("n", DataType::UInt64, true)]);
        let e = table_schema(&uint).unwrap_err().to_string();
        assert!(e.contains("'n'") && e.contains("DECIMAL(20, 0)"), "{e}");
        let other = ArrowSchema::new(vec![Field::new("nope", DataType::Int32, true)]);
        let e = WritePlan::new(&other, &schema, "db.t").unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("db.t"), "{e}");
        let narrower = ArrowSchema::new(vec![Field::new("id", DataType::Int64, true)]);
        let e = WritePlan::new(&narrower, &schema, "db.t").unwrap_err().to_string();
        assert!(e.contains("CAST"), "{e}");
    }

    #[test]
    fn maps_and_lists_of_structs_take_the_tables_field_ids() {
        use arrow::array::{Int64Builder, MapBuilder, StringBuilder, StructArray};
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        map.keys().append_value("a");
        map.values().append_value(1);
        map.append(true).unwrap();
        map.append(false).unwrap();
        let map = Arc::new(map.finish()) as ArrayRef;
        let point = StructArray::from(vec![
            (Arc::new(Field::new("x", DataType::Int64, false)), Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (Arc::new(Field::new("tag", DataType::Utf8, true)), Arc::new(arrow::array::StringArray::from(vec![Some("p"), None, Some("q")])) as ArrayRef),
        ]);
        let points = arrow::array::ListArray::new(
            Arc::new(Field::new("item", point.data_type().clone(), true)),
            arrow::buffer::OffsetBuffer::new(vec![0, 2, 3].into()),
            Arc::new(point),
            None,
        );
        let query = Arc::new(ArrowSchema::new(vec![Field::new("m", map.data_type().clone(), true), Field::new("points", points.data_type().clone(), true)]));
        let batch = RecordBatch::try_new(query.clone(), vec![map, Arc::new(points)]).unwrap();
        let schema = table_schema(&query).unwrap();
        let plan = WritePlan::new(&query, &schema, "db.t").unwrap();
        let out = plan.conform(&batch, "db.t").unwrap();
        assert_eq!(out.schema(), plan.schema);
        assert_eq!(out.num_rows(), 2);
        // every nested field carries an id
        fn ids(dt: &DataType, out: &mut Vec<String>) {
            let fields: Vec<&Arc<Field>> = match dt {
                DataType::Struct(f) => f.iter().collect(),
                DataType::List(f) | DataType::Map(f, _) => vec![f],
                _ => vec![],
            };
            for f in fields {
                if !matches!(f.name().as_str(), "key_value") {
                    out.push(f.metadata().get(PARQUET_FIELD_ID_META_KEY).cloned().unwrap_or_else(|| format!("none: {}", f.name())));
                }
                ids(f.data_type(), out);
            }
        }
        let mut all = Vec::new();
        for f in out.schema().fields() {
            ids(f.data_type(), &mut all);
        }
        assert!(all.iter().all(|i| i.parse::<i32>().is_ok()), "{all:?}");
        // written and read back by Parquet
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, out.schema(), None).unwrap();
        w.write(&out).unwrap();
        w.close().unwrap();
        let back: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(buf))
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(back[0].column(0).to_data().child_data()[0].len(), 1, "the map's one entry");
        assert_eq!(back[0].column(1).len(), 2);
    }

    #[test]
    fn batches_are_cast_to_the_table_types() {
        let query = ArrowSchema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("id", DataType::Int8, true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]);
        let schema = table_schema(&query).unwrap();
        // the table has the query's columns in another order
        let plan = WritePlan::new(&ArrowSchema::new(vec![query.field(1).clone(), query.field(0).clone(), query.field(2).clone()]), &schema, "db.t").unwrap();
        let mut tags = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
        tags.values().append_value("x");
        tags.append(true);
        tags.append(false);
        let batch = RecordBatch::try_new(
            Arc::new(ArrowSchema::new(vec![query.field(1).clone(), query.field(0).clone(), query.field(2).clone()])),
            vec![
                Arc::new(arrow::array::Int8Array::from(vec![Some(7), None])),
                Arc::new(arrow::array::TimestampMillisecondArray::from(vec![1_500, 2_000])),
                Arc::new(tags.finish()),
            ],
        )
        .unwrap();
        let out = plan.conform(&batch, "db.t").unwrap();
        assert_eq!(out.schema(), plan.schema);
        let ts = out.column(0).as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.values(), &[1_500_000, 2_000_000]);
        let id = out.column(1).as_any().downcast_ref::<arrow::array::Int32Array>().unwrap();
        assert_eq!((id.value(0), id.is_null(1)), (7, true));
    }
}
