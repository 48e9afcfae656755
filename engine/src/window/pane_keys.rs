//! The group values of a table keyed by (pane start, keys): the keys are numbered first, and a
//! group is found by its key's number, without hashing the pair, while rows come in time order.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k
//! -- a chunk of 64 one-second panes of ~100 rows each: each row's k is numbered (one small
//! -- table of the chunk's distinct keys), and (pane, number) is the number's latest group, or a
//! -- new one
//! ```
//!
//! A table of small panes holds nearly as many groups as rows (1 s panes over rows 10 ms apart
//! and 1000 keys: one or two rows a group). Interning (pane, k) in DataFusion's multi-column
//! table inserted every row into a hash table that grew as the chunk filled (its rehashes were
//! 14% of the operator), and copied every row's key into the table's own column. Here:
//!
//! - the keys are interned alone (a chunk's distinct keys: few beside its groups, so the table
//!   is small and warm): one text key in ours ([`super::text_keys`]), other keys in
//!   DataFusion's table for their types; each new key's values are kept once;
//! - while every new group's pane is at or after the pane of the group before it (rows in time
//!   order), each key number remembers its latest group and that group's pane: a row of that
//!   pane takes the group, a row of a later pane starts a new one, and nothing is hashed;
//! - the first row to come back to an earlier pane builds a hash table of (pane, number) →
//!   group from every group, and the table is used from then on, until every group is emitted.
//!
//! Groups are numbered in the order of their first rows, as DataFusion's table for ordered
//! input numbers them, so the first n can be emitted ([`EmitTo::First`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::{internal_err, HashMap, Result};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_plan::aggregates::group_values::GroupValues;

use super::text_keys::KeyNumbering;

/// No group.
const NONE: u32 = u32::MAX;

/// Parts of key values kept apart at most; more are joined into one.
const MAX_KEY_PARTS: usize = 32;

/// Group values for the key schema (`__ferris_pane BIGINT NOT NULL`, keys…). See the module
/// documentation.
pub(crate) struct PaneKeys {
    /// The schema of the keys (the pane column excluded).
    keys: SchemaRef,
    /// Numbers the distinct keys.
    numbering: KeyNumbering,
    /// The values of the numbered keys, in number order: parts as they were added, joined
    /// into one (the first) when groups are emitted (DataFusion's numbering only: ours keeps
    /// the values itself).
    key_parts: Vec<Vec<ArrayRef>>,
    /// Per group: its pane's start and its key's number.
    starts: Vec<i64>,
    numbers: Vec<u32>,
    /// By key number: its group of the latest pane and that pane's start, or [`NONE`] when the
    /// key has no group; kept while groups are in pane order (`index` is `None`).
    latest: Vec<(i64, u32)>,
    /// (pane start, key number) → group, once a group's pane came before the pane of the group
    /// before it.
    index: Option<HashMap<(i64, u32), u32>>,
    /// Scratch: each row's key number.
    numbered: Vec<usize>,
}

impl PaneKeys {
    /// An empty table for keys of schema `keys` (the pane column excluded; at least one).
    pub(crate) fn new(keys: SchemaRef) -> Result<Self> {
        let numbering = KeyNumbering::new(&keys)?;
        Ok(Self { numbering, keys, key_parts: Vec::new(), starts: Vec::new(), numbers: Vec::new(), latest: Vec::new(), index: None, numbered: Vec::new() })
    }

    /// Numbers the rows' keys (into `numbered`), keeping the values of keys new to the table.
    fn number_keys(&mut self, keys: &[ArrayRef]) -> Result<()> {
        let before = self.numbering.len();
        self.numbering.intern(keys, &mut self.numbered)?;
        let after = self.numbering.len();
        if after >= NONE as usize {
            return internal_err!("more than 2^32 - 2 distinct keys in a table of panes");
        }
        if after == before {
            return Ok(());
        }
        // (our numbering of one text key keeps the values itself)
        if let KeyNumbering::Other(_) = self.numbering {
            let rows = UInt32Array::from(self.first_rows(before, after)?);
            self.key_parts.push(keys.iter().map(|k| take(k.as_ref(), &rows, None)).collect::<std::result::Result<Vec<_>, _>>()?);
            if self.key_parts.len() > MAX_KEY_PARTS {
                // (long panes: many batches, each with a few new keys, before an emission joins them)
                self.key_values()?;
            }
        }
        self.latest.resize(after, (0, NONE));
        Ok(())
    }

    /// The first row of each number from `before` to `after`, in number order, whatever order
    /// the numbers were given in.
    fn first_rows(&self, before: usize, after: usize) -> Result<Vec<u32>> {
        let mut first = vec![NONE; after - before];
        let mut missing = first.len();
        for (row, &n) in self.numbered.iter().enumerate() {
            if let Some(f) = n.checked_sub(before).and_then(|i| first.get_mut(i)) {
                if *f == NONE {
                    // (rows of a batch fit in u32: checked by the caller)
                    *f = row as u32;
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
        }
        if missing > 0 {
            return internal_err!("a key numbered without a row");
        }
        Ok(first)
    }

    /// The values of every numbered key, one array per key column.
    fn key_values(&mut self) -> Result<Vec<ArrayRef>> {
        if let KeyNumbering::Text(t) = &mut self.numbering {
            return Ok(vec![t.values()?]);
        }
        if self.key_parts.len() > 1 {
            let joined = (0..self.keys.fields().len())
                .map(|c| {
                    let parts: Vec<&dyn Array> = self.key_parts.iter().map(|p| p[c].as_ref()).collect();
                    concat(&parts)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.key_parts = vec![joined];
        }
        match self.key_parts.first() {
            Some(p) => Ok(p.clone()),
            None => Ok(self.keys.fields().iter().map(|f| datafusion::arrow::array::new_empty_array(f.data_type())).collect()),
        }
    }

    fn reset(&mut self) {
        self.numbering.clear();
        self.key_parts.clear();
        self.starts.clear();
        self.numbers.clear();
        self.latest.clear();
        self.index = None;
    }
}

impl GroupValues for PaneKeys {
    fn intern(&mut self, cols: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        let Some(starts) = cols.first().and_then(|c| c.as_primitive_opt::<Int64Type>()) else {
            return internal_err!("a table of panes interns a BIGINT pane column first");
        };
        if starts.null_count() > 0 {
            return internal_err!("a table of panes interns no NULL pane");
        }
        if cols.len() != self.keys.fields().len() + 1 {
            return internal_err!("a table of panes interns {} key columns, not {}", self.keys.fields().len(), cols.len().saturating_sub(1));
        }
        if cols.iter().any(|c| c.len() != starts.len()) {
            return internal_err!("a table of panes interns columns of one length");
        }
        if starts.len() >= NONE as usize || self.starts.len().saturating_add(starts.len()) >= NONE as usize {
            return internal_err!("more than 2^32 - 2 groups in a table of panes");
        }
        self.number_keys(&cols[1..])?;
        groups.clear();
        groups.reserve(starts.len());
        self.starts.reserve(starts.len());
        self.numbers.reserve(starts.len());
        let mut row = 0;
        if self.index.is_none() {
            let (latest, all_starts, numbers) = (&mut self.latest, &mut self.starts, &mut self.numbers);
            let mut last = all_starts.last().copied().unwrap_or(i64::MIN);
            for (&s, &n) in starts.values().iter().zip(&self.numbered) {
                let Some(l) = latest.get_mut(n) else { return internal_err!("a key number beyond the numbering") };
                let g = if l.1 != NONE && l.0 == s {
                    l.1
                } else if (l.1 == NONE || l.0 < s) && last <= s {
                    // the key's groups are all of earlier panes: a new one
                    let g = all_starts.len() as u32;
                    all_starts.push(s);
                    numbers.push(n as u32);
                    *l = (s, g);
                    last = s;
                    g
                } else {
                    // back to an earlier pane: by the hash table from here on
                    break;
                };
                groups.push(g as usize);
                row += 1;
            }
        }
        if row < starts.len() {
            // (built from every group the first time)
            let (all_starts, numbers) = (&mut self.starts, &mut self.numbers);
            let index = self.index.get_or_insert_with(|| all_starts.iter().zip(numbers.iter()).enumerate().map(|(g, (&s, &n))| ((s, n), g as u32)).collect());
            for (&s, &n) in starts.values()[row..].iter().zip(&self.numbered[row..]) {
                let next = all_starts.len() as u32;
                let g = *index.entry((s, n as u32)).or_insert(next);
                if g == next {
                    all_starts.push(s);
                    numbers.push(n as u32);
                }
                groups.push(g as usize);
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        let parts = self.key_parts.iter().flatten().map(|a| a.get_array_memory_size()).sum::<usize>();
        let index = self.index.as_ref().map_or(0, |i| i.capacity() * (std::mem::size_of::<((i64, u32), u32)>() + 1));
        self.numbering.size()
            + parts
            + index
            + self.starts.capacity() * std::mem::size_of::<i64>()
            + self.numbers.capacity() * std::mem::size_of::<u32>()
            + self.latest.capacity() * std::mem::size_of::<(i64, u32)>()
            + self.numbered.capacity() * std::mem::size_of::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn emit(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let n = match emit_to {
            EmitTo::All => self.starts.len(),
            EmitTo::First(n) => n.min(self.starts.len()),
        };
        let values = self.key_values()?;
        let all = n == self.starts.len();
        let (starts, numbers) = if all {
            (std::mem::take(&mut self.starts), std::mem::take(&mut self.numbers))
        } else {
            (self.starts.drain(..n).collect(), self.numbers.drain(..n).collect())
        };
        let numbers = UInt32Array::from(numbers);
        let mut out = vec![Arc::new(Int64Array::from(starts)) as ArrayRef];
        for v in &values {
            out.push(take(v.as_ref(), &numbers, None)?);
        }
        if all {
            self.reset();
            return Ok(out);
        }
        // the groups left are numbered from 0 again
        let n = n as u32;
        match &mut self.index {
            Some(index) => {
                index.retain(|_, g| *g >= n);
                index.values_mut().for_each(|g| *g -= n);
            }
            None => {
                for l in &mut self.latest {
                    l.1 = if l.1 == NONE || l.1 < n { NONE } else { l.1 - n };
                }
            }
        }
        Ok(out)
    }

    fn clear_shrink(&mut self, _num_rows: usize) {
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::aggregates::group_values::new_group_values;
    use datafusion::physical_plan::aggregates::order::{GroupOrdering, GroupOrderingFull};

    /// Rows in pane order with now and then a row back to an earlier pane, two key columns (text
    /// and number, both with NULL) or the text column alone (numbered by [`TextKeys`]), the
    /// first groups or all emitted at random: the same group of every row and the same emitted
    /// columns as DataFusion's table for ordered input.
    #[test]
    fn groups_are_numbered_and_emitted_as_datafusions_ordered_table() {
        let both = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("j", DataType::Int64, true)]));
        let text = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let with_pane = |keys: &SchemaRef| {
            let mut all = vec![Arc::new(Field::new(super::super::groups::START_COLUMN, DataType::Int64, false))];
            all.extend(keys.fields().iter().cloned());
            Arc::new(Schema::new(all))
        };
        let mut next = crate::window::xorshift(0x2545_f491_4f6c_dd1du64);
        let names: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
        for round in 0..120 {
            let one = round % 2 == 1;
            let keys = if one { &text } else { &both };
            let all = with_pane(keys);
            let mut ours = PaneKeys::new(Arc::clone(keys)).unwrap();
            assert_eq!(matches!(ours.numbering, KeyNumbering::Text(_)), one);
            let mut theirs = new_group_values(Arc::clone(&all), &GroupOrdering::Full(GroupOrderingFull::new())).unwrap();
            let back = [0u64, 50, 5][round % 3];
            let mut pane = 0i64;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..25 {
                let rows = next(200) as usize;
                let mut starts = Vec::with_capacity(rows);
                let (mut ks, mut js) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
                for _ in 0..rows {
                    if next(20) == 0 {
                        pane += 1000;
                    }
                    let back_by = if back > 0 && next(back) == 0 { 1000 * next(4) as i64 } else { 0 };
                    starts.push(pane - back_by);
                    ks.push((next(10) != 0).then(|| names[next(names.len() as u64) as usize].as_str()));
                    js.push((next(8) != 0).then(|| next(3) as i64));
                }
                let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(starts)), Arc::new(StringArray::from(ks)), Arc::new(Int64Array::from(js))];
                if one {
                    cols.pop();
                }
                ours.intern(&cols, &mut a).unwrap();
                theirs.intern(&cols, &mut b).unwrap();
                assert_eq!(a, b, "round {round}");
                assert_eq!(ours.len(), theirs.len(), "round {round}");
                let to = crate::window::random_emission(&mut next, ours.len(), 5);
                if let Some(to) = to {
                    let (x, y) = (ours.emit(to).unwrap(), theirs.emit(to).unwrap());
                    if let EmitTo::All = to {
                        // (DataFusion's table keeps its hash map for its caller to clear)
                        theirs.clear_shrink(0);
                    }
                    assert_eq!(x, y, "round {round}");
                    assert_eq!(ours.len(), theirs.len(), "round {round}");
                }
            }
            let (x, y) = (ours.emit(EmitTo::All).unwrap(), theirs.emit(EmitTo::All).unwrap());
            assert_eq!(x, y, "round {round}");
            assert!(ours.is_empty());
        }
    }

    /// Many batches with a few new keys each (more than [`MAX_KEY_PARTS`]): the keys' values
    /// joined along the way come out with their groups.
    #[test]
    fn keys_from_many_batches_come_out_with_their_groups() {
        // (two key columns: DataFusion's numbering, whose new keys' values are kept in parts)
        let keys = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false), Field::new("j", DataType::Int64, false)]));
        let mut t = PaneKeys::new(keys).unwrap();
        let mut groups = Vec::new();
        for b in 0..100i64 {
            let names = [format!("k{b}"), format!("k{}", b / 2)];
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(vec![b / 10, b / 10])),
                Arc::new(StringArray::from(vec![names[0].as_str(), names[1].as_str()])),
                Arc::new(Int64Array::from(vec![0, 0])),
            ];
            t.intern(&cols, &mut groups).unwrap();
        }
        assert!(!t.key_parts.is_empty() && t.key_parts.len() <= MAX_KEY_PARTS);
        let out = t.emit(EmitTo::All).unwrap();
        let (starts, ks) = (out[0].as_primitive::<Int64Type>(), out[1].as_string::<i32>());
        let got: Vec<(i64, &str)> = (0..out[0].len()).map(|i| (starts.value(i), ks.value(i))).collect();
        let mut expected: Vec<(i64, String)> = Vec::new();
        for b in 0..100i64 {
            for k in [format!("k{b}"), format!("k{}", b / 2)] {
                if !expected.contains(&(b / 10, k.clone())) {
                    expected.push((b / 10, k));
                }
            }
        }
        assert_eq!(got, expected.iter().map(|(s, k)| (*s, k.as_str())).collect::<Vec<_>>());
    }

    /// A pane column with NULL or of another type, a missing key column and columns of
    /// different lengths are refused.
    #[test]
    fn a_pane_column_with_null_or_not_bigint_is_refused() {
        let keys = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let mut t = PaneKeys::new(keys).unwrap();
        let k: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(t.intern(&[Arc::new(Int64Array::from(vec![Some(1), None])), Arc::clone(&k)], &mut Vec::new()).is_err());
        assert!(t.intern(&[Arc::new(StringArray::from(vec!["a", "b"])), Arc::clone(&k)], &mut Vec::new()).is_err());
        assert!(t.intern(&[Arc::new(Int64Array::from(vec![1, 2]))], &mut Vec::new()).is_err());
        assert!(t.intern(&[Arc::new(Int64Array::from(vec![1])), Arc::clone(&k)], &mut Vec::new()).is_err());
        assert!(t.is_empty());
    }
}
