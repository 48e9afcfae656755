//! `partition_by`: the table's partition spec (identity, year, month, day, hour), and each
//! batch cut into one slice per partition, with the partition's values computed a column at a
//! time (no per-row work but one value per partition).
//!
//! ```sql
//! WITH ('lake.type' = 'iceberg_sink', 'lake.partition_by' = 'day(ts), country', …)
//! -- data/ts_day=2024-05-01/country=DE/….parquet
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int32Array, RecordBatch};
use arrow::compute::kernels::partition::partition;
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Date32Type, Int32Type, TimeUnit, TimestampMicrosecondType};
use iceberg::spec::{Literal, PartitionSpec, PrimitiveType, Schema, Struct, Transform, Type, UnboundPartitionSpec};

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// One entry of `partition_by`: `day(ts)`, `country`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBy {
    /// The column it is computed from.
    pub column: String,
    /// How.
    pub transform: Transform,
}

impl PartitionBy {
    /// Its partition field's name, as Spark and pyiceberg name it (`ts_day`, `country`).
    pub fn field_name(&self) -> String {
        match self.transform {
            Transform::Identity => self.column.clone(),
            t => format!("{}_{t}", self.column),
        }
    }
}

/// Parses `day(ts), country, hour(event_time)`.
pub fn parse(props: &Properties) -> Result<Vec<PartitionBy>> {
    let Some(list) = props.get_list("partition_by") else { return Ok(Vec::new()) };
    let key = props.full_key("partition_by");
    list.iter()
        .map(|item| {
            let item = item.trim();
            let Some(open) = item.find('(') else {
                return Ok(PartitionBy { column: item.to_string(), transform: Transform::Identity });
            };
            let name = item[..open].trim().to_ascii_lowercase();
            let column = item[open + 1..].trim_end().strip_suffix(')').map(str::trim).filter(|c| !c.is_empty() && !c.contains(['(', ')', ',']));
            let Some(column) = column else {
                return Err(ConnectorError::invalid(&key, format!("'{item}': write transform(column), such as day(ts)")));
            };
            let transform = match name.as_str() {
                "identity" => Transform::Identity,
                "year" | "years" => Transform::Year,
                "month" | "months" => Transform::Month,
                "day" | "days" => Transform::Day,
                "hour" | "hours" => Transform::Hour,
                other => {
                    return Err(ConnectorError::invalid(
                        &key,
                        format!("'{other}' is not a partition transform the sink has: identity, year, month, day or hour"),
                    ));
                }
            };
            Ok(PartitionBy { column: column.to_string(), transform })
        })
        .collect()
}

/// The partition spec `by` makes over `schema` (a new table's), each column checked.
pub fn spec(by: &[PartitionBy], schema: &Schema, props: &Properties) -> Result<UnboundPartitionSpec> {
    let key = props.full_key("partition_by");
    let mut b = UnboundPartitionSpec::builder();
    for p in by {
        let field = schema
            .field_by_name(&p.column)
            .or_else(|| schema.field_by_name_case_insensitive(&p.column))
            .filter(|f| schema.as_struct().field_by_id(f.id).is_some())
            .ok_or_else(|| ConnectorError::invalid(&key, format!("'{}' is not a top-level column of the query", p.column)))?;
        if let Err(e) = p.transform.result_type(&field.field_type) {
            return Err(ConnectorError::invalid(&key, format!("{}({}): {e}", p.transform, p.column)));
        }
        b = b.add_partition_field(field.id, p.field_name(), p.transform).map_err(|e| ConnectorError::invalid(&key, e.to_string()))?;
    }
    Ok(b.build())
}

/// One slice of a batch: its rows all in one partition.
pub struct Slice {
    /// The partition's values.
    pub partition: Struct,
    /// Its directory under `data/` (`ts_day=2024-05-01/country=DE`; empty when unpartitioned).
    pub path: String,
    /// The rows.
    pub rows: RecordBatch,
}

/// Cuts batches (already in the table's columns) by a table's partition spec.
#[derive(Debug, Clone)]
pub struct Partitioner {
    /// For each partition field: the batch column it is computed from and the transform.
    fields: Vec<(usize, Transform, Type)>,
    /// For each partition field: its name and the type of its values.
    names: Vec<(String, Type)>,
}

impl Partitioner {
    /// The partitioner of a table's `spec`; batches have `schema`'s top-level columns in order.
    pub fn new(spec: Arc<PartitionSpec>, schema: Arc<Schema>, table_name: &str) -> Result<Self> {
        let top = schema.as_struct().fields();
        let mut fields = Vec::new();
        for f in spec.fields() {
            let Some(pos) = top.iter().position(|c| c.id == f.source_id) else {
                return Err(ConnectorError::Other(format!("Iceberg table {table_name} is partitioned by a nested column ('{}')", f.name)));
            };
            if !matches!(f.transform, Transform::Identity | Transform::Year | Transform::Month | Transform::Day | Transform::Hour | Transform::Void) {
                return Err(ConnectorError::Other(format!(
                    "Iceberg table {table_name} is partitioned by {}({}), a transform the sink cannot compute yet",
                    f.transform, top[pos].name
                )));
            }
            fields.push((pos, f.transform, (*top[pos].field_type).clone()));
        }
        let partition_type = spec.partition_type(&schema).map_err(|e| ConnectorError::Other(format!("Iceberg table {table_name}: {e}")))?;
        let names = partition_type.fields().iter().map(|f| (f.name.clone(), (*f.field_type).clone())).collect();
        Ok(Self { fields, names })
    }

    /// True when the table is not partitioned.
    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// `batch` cut into one slice per partition.
    pub fn split(&self, batch: RecordBatch) -> Result<Vec<Slice>> {
        if self.fields.is_empty() {
            return Ok(vec![Slice { partition: Struct::empty(), path: String::new(), rows: batch }]);
        }
        let keys = self.fields.iter().map(|(pos, t, _)| transformed(batch.column(*pos), *t)).collect::<Result<Vec<_>>>()?;
        let arrow_err = |e| ConnectorError::Arrow { context: "partitioning a batch for iceberg".into(), source: e };
        let sort: Vec<SortColumn> = keys.iter().map(|k| SortColumn { values: k.clone(), options: None }).collect();
        let order = lexsort_to_indices(&sort, None).map_err(arrow_err)?;
        let sorted = order.values().iter().enumerate().all(|(i, v)| *v as usize == i);
        let (batch, keys) = if sorted {
            (batch, keys)
        } else {
            let keys = keys.iter().map(|k| arrow::compute::take(k, &order, None)).collect::<std::result::Result<Vec<_>, _>>().map_err(arrow_err)?;
            (take_record_batch(&batch, &order).map_err(arrow_err)?, keys)
        };
        let ranges = partition(&keys).map_err(arrow_err)?.ranges();
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let values = keys.iter().zip(&self.fields).map(|(k, (_, t, ty))| literal(k, r.start, *t, ty)).collect::<Result<Vec<_>>>()?;
            let path = self.path(&values);
            let partition = Struct::from_iter(values);
            out.push(Slice { partition, path, rows: batch.slice(r.start, r.end - r.start) });
        }
        Ok(out)
    }
}

impl Partitioner {
    /// The directory of a partition: `name=value` per field, values as Iceberg writes them for
    /// people (`2024-05-01`, `2024-05-01-13`) and URL-encoded as Java's writers do, so that a
    /// value holding `/` or `..` stays one path segment.
    fn path(&self, values: &[Option<Literal>]) -> String {
        let segments: Vec<String> = self
            .names
            .iter()
            .zip(&self.fields)
            .zip(values)
            .map(|(((name, ty), (_, t, _)), v)| {
                let human = t.to_human_string(ty, v.as_ref());
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                format!("{}={}", enc(name), enc(&human))
            })
            .collect();
        segments.join("/")
    }
}

/// The partition values of `column` under `t`, a column at a time: identity the column
/// itself, day a date, hour/month/year an int (hours, months, years since 1970).
fn transformed(column: &ArrayRef, t: Transform) -> Result<ArrayRef> {
    let arrow_err = |e| ConnectorError::Arrow { context: format!("computing {t} partitions"), source: e };
    let days = |c: &ArrayRef| -> Result<Date32Array> {
        match c.data_type() {
            DataType::Date32 => Ok(c.as_primitive::<Date32Type>().clone()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Ok(c.as_primitive::<TimestampMicrosecondType>().unary::<_, Date32Type>(|v| v.div_euclid(MICROS_PER_DAY) as i32))
            }
            other => Err(ConnectorError::Other(format!("{t} partitions of a {other} column"))),
        }
    };
    Ok(match t {
        Transform::Identity | Transform::Void => column.clone(),
        Transform::Day => Arc::new(days(column)?),
        Transform::Hour => match column.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Arc::new(column.as_primitive::<TimestampMicrosecondType>().unary::<_, Int32Type>(|v| v.div_euclid(MICROS_PER_HOUR) as i32))
            }
            other => return Err(ConnectorError::Other(format!("hour partitions of a {other} column"))),
        },
        Transform::Year | Transform::Month => {
            let d: ArrayRef = Arc::new(days(column)?);
            let year = arrow::compute::kernels::temporal::date_part(&d, arrow::compute::DatePart::Year).map_err(arrow_err)?;
            let year = year.as_primitive::<Int32Type>();
            if t == Transform::Year {
                Arc::new(year.unary::<_, Int32Type>(|y| y - 1970))
            } else {
                let month = arrow::compute::kernels::temporal::date_part(&d, arrow::compute::DatePart::Month).map_err(arrow_err)?;
                let month = month.as_primitive::<Int32Type>();
                let m: Int32Array = arrow::compute::binary(year, month, |y, m| (y - 1970) * 12 + m - 1).map_err(arrow_err)?;
                Arc::new(m)
            }
        }
        other => return Err(ConnectorError::Other(format!("{other} partitions"))),
    })
}

/// The partition value at `row` of a transformed column, as Iceberg's literal.
fn literal(column: &ArrayRef, row: usize, t: Transform, source: &Type) -> Result<Option<Literal>> {
    if column.is_null(row) || t == Transform::Void {
        return Ok(None);
    }
    let Type::Primitive(p) = source else {
        return Err(ConnectorError::Other("partitions by a nested column".into()));
    };
    if t != Transform::Identity {
        return Ok(Some(match column.data_type() {
            DataType::Date32 => Literal::date(column.as_primitive::<Date32Type>().value(row)),
            _ => Literal::int(column.as_primitive::<Int32Type>().value(row)),
        }));
    }
    use arrow::datatypes as t;
    Ok(Some(match p {
        PrimitiveType::Boolean => Literal::bool(column.as_boolean().value(row)),
        PrimitiveType::Int => Literal::int(column.as_primitive::<t::Int32Type>().value(row)),
        PrimitiveType::Long => Literal::long(column.as_primitive::<t::Int64Type>().value(row)),
        PrimitiveType::Float => Literal::float(column.as_primitive::<t::Float32Type>().value(row)),
        PrimitiveType::Double => Literal::double(column.as_primitive::<t::Float64Type>().value(row)),
        PrimitiveType::Decimal { .. } => Literal::decimal(column.as_primitive::<t::Decimal128Type>().value(row)),
        PrimitiveType::Date => Literal::date(column.as_primitive::<t::Date32Type>().value(row)),
        PrimitiveType::Time => Literal::time(column.as_primitive::<t::Time64MicrosecondType>().value(row)),
        PrimitiveType::Timestamp => Literal::timestamp(column.as_primitive::<t::TimestampMicrosecondType>().value(row)),
        PrimitiveType::Timestamptz => Literal::timestamptz(column.as_primitive::<t::TimestampMicrosecondType>().value(row)),
        PrimitiveType::String => Literal::string(column.as_string::<i32>().value(row)),
        PrimitiveType::Binary => Literal::binary(column.as_binary::<i32>().value(row).to_vec()),
        PrimitiveType::Fixed(_) | PrimitiveType::Uuid => Literal::fixed(column.as_fixed_size_binary().value(row).to_vec()),
        other => return Err(ConnectorError::Other(format!("identity partitions of a {other} column"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema as ArrowSchema};

    #[test]
    fn partition_by_is_parsed_and_checked() {
        let p = Properties::from_pairs("lake", [("partition_by", "day(ts), country ,HOUR( ts )")]);
        let by = parse(&p).unwrap();
        assert_eq!(by.iter().map(PartitionBy::field_name).collect::<Vec<_>>(), ["ts_day", "country", "ts_hour"]);
        for bad in ["bucket(4, id)", "day(", "day()", "week(ts)"] {
            let p = Properties::from_pairs("lake", [("partition_by", bad)]);
            let e = parse(&p).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains("lake.partition_by"), "{bad}: {e}");
        }
        let query =
            ArrowSchema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true), Field::new("country", DataType::Utf8, true)]);
        let schema = crate::iceberg::schema::table_schema(&query).unwrap();
        spec(&by[..2], &schema, &p).unwrap();
        let e = spec(&by, &schema, &p).unwrap_err().to_string();
        assert!(e.contains("lake.partition_by"), "day and hour of one column are redundant: {e}");
        let e = spec(&[PartitionBy { column: "country".into(), transform: Transform::Day }], &schema, &p).unwrap_err().to_string();
        assert!(e.contains("day(country)"), "{e}");
        let e = spec(&[PartitionBy { column: "nope".into(), transform: Transform::Identity }], &schema, &p).unwrap_err().to_string();
        assert!(e.contains("'nope'"), "{e}");
    }

    #[test]
    fn batches_are_cut_by_partition_values() {
        let query =
            ArrowSchema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true), Field::new("country", DataType::Utf8, true)]);
        let schema = Arc::new(crate::iceberg::schema::table_schema(&query).unwrap());
        let by = [PartitionBy { column: "ts".into(), transform: Transform::Day }, PartitionBy { column: "country".into(), transform: Transform::Identity }];
        let props = Properties::new("lake");
        let spec = Arc::new(spec(&by, &schema, &props).unwrap().bind(schema.clone()).unwrap());
        let part = Partitioner::new(spec, schema, "db.t").unwrap();
        let day = 86_400_000_000i64;
        let ts = TimestampMicrosecondArray::from(vec![day * 19844 + 5, -1, day * 19844, day * 19844 + 7]);
        let country = StringArray::from(vec![Some("DE"), Some("DE"), None, Some("DE")]);
        // (a value with a slash is checked below)
        let batch = RecordBatch::try_new(Arc::new(query), vec![Arc::new(ts), Arc::new(country)]).unwrap();
        let slices = part.split(batch).unwrap();
        let got: Vec<(String, usize)> = slices.iter().map(|s| (s.path.clone(), s.rows.num_rows())).collect();
        assert_eq!(
            got,
            [("ts_day=1969-12-31/country=DE".to_string(), 1), ("ts_day=2024-05-01/country=null".into(), 1), ("ts_day=2024-05-01/country=DE".into(), 2)]
        );
        assert_eq!(slices[0].partition, Struct::from_iter([Some(Literal::date(-1)), Some(Literal::string("DE"))]));
        let odd = RecordBatch::try_new(
            slices[0].rows.schema(),
            vec![Arc::new(TimestampMicrosecondArray::from(vec![0])), Arc::new(StringArray::from(vec!["../a/b c"]))],
        )
        .unwrap();
        let s = part.split(odd).unwrap();
        assert_eq!(s[0].path, "ts_day=1970-01-01/country=..%2Fa%2Fb+c", "one segment per field");
    }

    #[test]
    fn month_year_and_hour_values() {
        let day = 86_400_000_000i64;
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![day * 19844 + MICROS_PER_HOUR * 13, -1]));
        let h = transformed(&ts, Transform::Hour).unwrap();
        assert_eq!(h.as_primitive::<Int32Type>().values(), &[19844 * 24 + 13, -1]);
        let m = transformed(&ts, Transform::Month).unwrap();
        assert_eq!(m.as_primitive::<Int32Type>().values(), &[(2024 - 1970) * 12 + 4, -1]);
        let y = transformed(&ts, Transform::Year).unwrap();
        assert_eq!(y.as_primitive::<Int32Type>().values(), &[54, -1]);
    }
}
