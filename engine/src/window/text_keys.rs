//! Numbers the distinct values of one text key column in a hash table of our own, sized ahead,
//! and keeps each value once, in number order: the key numbering of a table of panes keyed by
//! one `VARCHAR` column.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k
//! -- k VARCHAR: each chunk of panes numbers its distinct k here, 'key-7' → 0, 'key-3' → 1, …
//! ```
//!
//! DataFusion's table for one text column starts small and grows by rehashing; a table of
//! panes is made for every chunk of panes, so each one grew again from empty (rehashing was
//! about a tenth of a `TUMBLE` over 1000 keys). Here the table starts with room for
//! [`INITIAL_KEYS`] keys, a value is hashed once and compared by its bytes (a `Utf8View` value
//! of up to 12 bytes by its view), and the values are kept in one buffer, from which the key
//! column of an emission is built. [`KeyNumbering`] picks this table for one text key and
//! DataFusion's for any other keys.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, LargeStringArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::{internal_err, Result};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use hashbrown::hash_table::{Entry, HashTable};
use std::hash::BuildHasher;

/// Keys a new table has room for before it grows.
const INITIAL_KEYS: usize = 1024;

/// In [`TextKeys::views`]: not a value of up to 12 bytes (no view has this length).
const LONG: u128 = u128::MAX;

/// Distinct values of one text column (`Utf8`, `LargeUtf8` or `Utf8View`), numbered from 0 in
/// the order they were first seen; NULL gets a number of its own.
pub(crate) struct TextKeys {
    data_type: DataType,
    /// (hash, number) of every distinct value but NULL.
    table: HashTable<(u64, u32)>,
    /// Value `n` is `bytes[ends[n - 1]..ends[n]]` (from 0 for the first).
    ends: Vec<usize>,
    bytes: Vec<u8>,
    /// The number of NULL, once seen.
    null: Option<u32>,
    hasher: RandomState,
    /// `Utf8View` only: per number, the view of a value of up to 12 bytes, else [`LONG`].
    views: Vec<u128>,
    /// The values as a column, built by [`TextKeys::values`] and kept until a value is added
    /// (a table whose keys are all known emits often without building it again).
    built: Option<ArrayRef>,
}

impl TextKeys {
    /// An empty numbering for a column of `data_type`, or `None` for a type that is not text.
    pub(crate) fn new(data_type: &DataType) -> Option<Self> {
        matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View).then(|| Self {
            data_type: data_type.clone(),
            table: HashTable::with_capacity(INITIAL_KEYS),
            ends: Vec::with_capacity(INITIAL_KEYS),
            bytes: Vec::new(),
            null: None,
            hasher: RandomState::default(),
            views: Vec::new(),
            built: None,
        })
    }

    /// Number of distinct values (NULL included).
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Memory held, in bytes.
    pub(crate) fn size(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.bytes.capacity()
            + self.views.capacity() * std::mem::size_of::<u128>()
            + self.built.as_ref().map_or(0, |b| b.get_array_memory_size())
    }

    /// Forgets every value.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.ends.clear();
        self.bytes.clear();
        self.null = None;
        self.views.clear();
        self.built = None;
    }

    /// The number of each value of `column` (of this numbering's type), into `numbers`.
    pub(crate) fn intern(&mut self, column: &ArrayRef, numbers: &mut Vec<usize>) -> Result<()> {
        if column.data_type() != &self.data_type {
            return internal_err!("a text key numbering of {} given a column of {}", self.data_type, column.data_type());
        }
        numbers.clear();
        numbers.reserve(column.len());
        let before = self.ends.len();
        match &self.data_type {
            DataType::Utf8 => {
                let a = column.as_string::<i32>();
                self.intern_values(numbers, a.len(), |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
            }
            DataType::LargeUtf8 => {
                let a = column.as_string::<i64>();
                self.intern_values(numbers, a.len(), |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
            }
            _ => self.intern_views(column, numbers),
        }?;
        if self.ends.len() != before {
            self.built = None;
        }
        Ok(())
    }

    /// [`TextKeys::intern`] for `Utf8View`: a value of up to 12 bytes lies whole in its view,
    /// and equal short values have equal views, so such a value is hashed and compared as its
    /// 16-byte view, without reading its bytes.
    fn intern_views(&mut self, column: &ArrayRef, numbers: &mut Vec<usize>) -> Result<()> {
        let a = column.as_string_view();
        let Self { table, ends, bytes, null, hasher, views, .. } = self;
        for (i, &view) in a.views().iter().enumerate() {
            let n = if a.is_null(i) {
                let (n, new) = number_null(null, ends, bytes)?;
                if new {
                    views.push(LONG);
                }
                n
            } else if (view as u32) <= 12 {
                let h = hasher.hash_one(view);
                let same = |&(eh, n): &(u64, u32)| eh == h && views.get(n as usize) == Some(&view);
                match table.entry(h, same, |&(eh, _)| eh) {
                    Entry::Occupied(e) => e.get().1,
                    Entry::Vacant(e) => {
                        let n = next_number(ends.len())?;
                        e.insert((h, n));
                        bytes.extend_from_slice(a.value(i).as_bytes());
                        ends.push(bytes.len());
                        views.push(view);
                        n
                    }
                }
            } else {
                let (n, new) = number_bytes(table, ends, bytes, hasher, a.value(i).as_bytes())?;
                if new {
                    views.push(LONG);
                }
                n
            };
            numbers.push(n as usize);
        }
        Ok(())
    }

    fn intern_values<'a>(&mut self, numbers: &mut Vec<usize>, rows: usize, value: impl Fn(usize) -> Option<&'a [u8]>) -> Result<()> {
        let Self { table, ends, bytes, null, hasher, .. } = self;
        for i in 0..rows {
            let n = match value(i) {
                None => number_null(null, ends, bytes)?.0,
                Some(v) => number_bytes(table, ends, bytes, hasher, v)?.0,
            };
            numbers.push(n as usize);
        }
        Ok(())
    }

    /// Every value, in number order, as a column of this numbering's type.
    pub(crate) fn values(&mut self) -> Result<ArrayRef> {
        if let Some(built) = &self.built {
            return Ok(Arc::clone(built));
        }
        let values = self.build()?;
        self.built = Some(Arc::clone(&values));
        Ok(values)
    }

    fn build(&self) -> Result<ArrayRef> {
        let text = |n: usize| -> Result<Option<&str>> {
            if self.null == Some(n as u32) {
                return Ok(None);
            }
            let v = stored(&self.ends, &self.bytes, n as u32);
            // (each value was a whole string of a text column)
            match std::str::from_utf8(v) {
                Ok(s) => Ok(Some(s)),
                Err(_) => internal_err!("a text key that is not UTF-8"),
            }
        };
        let texts = (0..self.len()).map(text).collect::<Result<Vec<_>>>()?;
        Ok(match &self.data_type {
            DataType::Utf8 => Arc::new(StringArray::from(texts)),
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from(texts)),
            _ => Arc::new(StringViewArray::from(texts)),
        })
    }
}

/// The number of NULL (an empty value of its own, not in the table), and whether it is new.
fn number_null(null: &mut Option<u32>, ends: &mut Vec<usize>, bytes: &[u8]) -> Result<(u32, bool)> {
    if let Some(n) = *null {
        return Ok((n, false));
    }
    let n = next_number(ends.len())?;
    ends.push(bytes.len());
    *null = Some(n);
    Ok((n, true))
}

/// The number of value `v` (hashed and compared by its bytes), and whether it is new.
fn number_bytes(table: &mut HashTable<(u64, u32)>, ends: &mut Vec<usize>, bytes: &mut Vec<u8>, hasher: &RandomState, v: &[u8]) -> Result<(u32, bool)> {
    let h = hasher.hash_one(v);
    let same = |&(eh, n): &(u64, u32)| eh == h && stored(ends, bytes, n) == v;
    Ok(match table.entry(h, same, |&(eh, _)| eh) {
        Entry::Occupied(e) => (e.get().1, false),
        Entry::Vacant(e) => {
            let n = next_number(ends.len())?;
            e.insert((h, n));
            bytes.extend_from_slice(v);
            ends.push(bytes.len());
            (n, true)
        }
    })
}

/// Value `n`'s bytes.
#[inline]
fn stored<'b>(ends: &[usize], bytes: &'b [u8], n: u32) -> &'b [u8] {
    let n = n as usize;
    let start = if n == 0 { 0 } else { ends[n - 1] };
    &bytes[start..ends[n]]
}

/// The numbering of a table's keys: ours for one text column, else DataFusion's table for the
/// key columns' types.
pub(crate) enum KeyNumbering {
    /// One text column.
    Text(TextKeys),
    /// Anything else.
    Other(Box<dyn GroupValues>),
}

impl KeyNumbering {
    /// An empty numbering of keys of `schema`.
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        let text = match schema.fields().as_ref() {
            [only] => TextKeys::new(only.data_type()),
            _ => None,
        };
        Ok(match text {
            Some(t) => KeyNumbering::Text(t),
            None => KeyNumbering::Other(new_group_values(Arc::clone(schema), &GroupOrdering::None)?),
        })
    }

    /// The number of each row of `keys`, into `numbers`.
    pub(crate) fn intern(&mut self, keys: &[ArrayRef], numbers: &mut Vec<usize>) -> Result<()> {
        match self {
            KeyNumbering::Text(t) => {
                let [key] = keys else { return internal_err!("a numbering of one text key given {} columns", keys.len()) };
                t.intern(key, numbers)
            }
            KeyNumbering::Other(g) => g.intern(keys, numbers),
        }
    }

    /// Number of distinct keys.
    pub(crate) fn len(&self) -> usize {
        match self {
            KeyNumbering::Text(t) => t.len(),
            KeyNumbering::Other(g) => g.len(),
        }
    }

    /// Forgets every key, keeping the room it had where it can.
    pub(crate) fn clear(&mut self) {
        match self {
            KeyNumbering::Text(t) => t.clear(),
            KeyNumbering::Other(g) => {
                let keys = g.len();
                // (DataFusion's tables keep their hash maps after emitting everything)
                if g.emit(datafusion::logical_expr::EmitTo::All).is_ok() {
                    g.clear_shrink(keys);
                }
            }
        }
    }

    /// Memory held, in bytes.
    pub(crate) fn size(&self) -> usize {
        match self {
            KeyNumbering::Text(t) => t.size(),
            KeyNumbering::Other(g) => g.size(),
        }
    }
}

/// The number after `len` numbers, while it fits below `u32::MAX`.
fn next_number(len: usize) -> Result<u32> {
    match u32::try_from(len) {
        Ok(n) if n < u32::MAX - 1 => Ok(n),
        _ => internal_err!("more than 2^32 - 2 distinct text keys in a table of panes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    /// Random batches of keys with NULL and empty strings, in each text layout: every row's
    /// number equals DataFusion's group number for it, and the values come out in that order
    /// (also when they were built before the last values came).
    #[test]
    fn numbers_and_values_equal_datafusions_table() {
        let mut next = crate::window::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let names: Vec<String> = (0..3000).map(|i| if i == 0 { String::new() } else { format!("key-{i}-{}", "x".repeat(i % 40)) }).collect();
        for round in 0..30 {
            let layout = round % 3;
            let data_type = [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View][layout].clone();
            let mut ours = TextKeys::new(&data_type).unwrap();
            let schema = Arc::new(Schema::new(vec![Field::new("k", data_type.clone(), true)]));
            let mut theirs = new_group_values(schema, &GroupOrdering::None).unwrap();
            let distinct = 1 + next(if round % 2 == 0 { 50 } else { 3000 }) as usize;
            for _ in 0..8 {
                let rows = next(4000) as usize;
                let keys: Vec<Option<&str>> =
                    (0..rows).map(|_| if next(13) == 0 { None } else { Some(names[next(distinct as u64) as usize].as_str()) }).collect();
                let column: ArrayRef = match layout {
                    0 => Arc::new(StringArray::from(keys)),
                    1 => Arc::new(LargeStringArray::from(keys)),
                    _ => Arc::new(StringViewArray::from(keys)),
                };
                let (mut a, mut b) = (Vec::new(), Vec::new());
                ours.intern(&column, &mut a).unwrap();
                theirs.intern(std::slice::from_ref(&column), &mut b).unwrap();
                assert_eq!(a, b, "round {round}");
                assert_eq!(ours.len(), theirs.len());
                if next(3) == 0 {
                    // (built now, and built again once more values come)
                    assert_eq!(ours.values().unwrap().len(), ours.len());
                }
            }
            let values = ours.values().unwrap();
            assert_eq!(values.data_type(), &data_type);
            assert_eq!(&values, &theirs.emit(datafusion::logical_expr::EmitTo::All).unwrap()[0], "round {round}");
            ours.clear();
            assert_eq!((ours.len(), ours.values().unwrap().len()), (0, 0));
        }
    }

    #[test]
    fn a_column_of_another_type_is_refused() {
        assert!(TextKeys::new(&DataType::Int64).is_none());
        let mut keys = TextKeys::new(&DataType::Utf8).unwrap();
        let column: ArrayRef = Arc::new(LargeStringArray::from(vec!["a"]));
        assert!(keys.intern(&column, &mut Vec::new()).is_err());
    }
}
