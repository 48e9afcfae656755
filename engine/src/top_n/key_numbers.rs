//! The group number of each row's `PARTITION BY` key for the bounded top N: one integer key is
//! numbered through a table indexed by the key itself while the keys seen lie in a span not
//! much wider than their count (ids, counters, sequence numbers); any other key, or integer
//! keys spread too thin, through DataFusion's hash table of group values.
//!
//! ```sql
//! -- Nexmark q19: 9.2M bids over 600K auctions numbered from 1000 up
//! SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
//! WHERE rank_number <= 10
//! ```
//!
//! A hash table places neighbouring keys far apart, so 600K auctions make each bid's lookup a
//! miss in the cache (13% of q19's top N); bids go to recent auctions, whose places in a
//! table indexed by the key are close together. Groups are numbered in the order of their
//! first rows, as the hash table numbers them; falling back hands the table the keys in that
//! order, so the numbers stay.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::Result;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

/// No group yet.
const NONE: u32 = u32::MAX;
/// Slots the direct table may have beyond twice the groups it could hold after a batch.
const SLACK: i128 = 1 << 16;

/// The group numbers of the keys, by whichever table fits them.
pub(super) enum KeyNumbers {
    Direct(DirectKeys),
    Hashed(Box<dyn GroupValues>),
}

/// One integer key's groups in a table indexed by the key less `base`.
pub(super) struct DirectKeys {
    /// The key of the table's first slot.
    base: i64,
    /// Per key from `base` on, its group, or [`NONE`].
    slots: Vec<u32>,
    /// Each group's key, in group order.
    keys: Vec<i64>,
    /// The key's schema, for the hash table it falls back to.
    schema: SchemaRef,
}

impl KeyNumbers {
    /// Numbers the keys of `schema` (the `PARTITION BY` columns).
    pub(super) fn new(schema: SchemaRef) -> Result<Self> {
        let one_integer = schema.fields().len() == 1 && schema.field(0).data_type() == &DataType::Int64;
        Ok(if one_integer {
            Self::Direct(DirectKeys { base: 0, slots: Vec::new(), keys: Vec::new(), schema })
        } else {
            Self::Hashed(new_group_values(schema, &GroupOrdering::None)?)
        })
    }

    /// Each row's group in `groups` (new keys take the next numbers).
    pub(super) fn intern(&mut self, cols: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        if let Self::Direct(d) = self {
            if d.intern(cols, groups)? {
                return Ok(());
            }
            // keys too spread out (or NULL): the hash table from here on, numbered alike
            let mut hashed = new_group_values(Arc::clone(&d.schema), &GroupOrdering::None)?;
            let known: ArrayRef = Arc::new(Int64Array::from(std::mem::take(&mut d.keys)));
            hashed.intern(&[known], groups)?;
            *self = Self::Hashed(hashed);
        }
        match self {
            Self::Hashed(h) => h.intern(cols, groups),
            Self::Direct(_) => Ok(()),
        }
    }

    /// Groups numbered.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Direct(d) => d.keys.len(),
            Self::Hashed(h) => h.len(),
        }
    }

    /// Bytes held.
    pub(super) fn size(&self) -> usize {
        match self {
            Self::Direct(d) => d.slots.capacity() * std::mem::size_of::<u32>() + d.keys.capacity() * std::mem::size_of::<i64>(),
            Self::Hashed(h) => h.size(),
        }
    }
}

impl DirectKeys {
    /// Numbers `cols`' one integer column into `groups`; false (nothing numbered) when a key is
    /// NULL or the keys with this batch's would spread over more than twice as many slots as
    /// groups (and 65536).
    fn intern(&mut self, cols: &[ArrayRef], groups: &mut Vec<usize>) -> Result<bool> {
        let Some(keys) = cols.first().and_then(|c| c.as_primitive_opt::<Int64Type>()) else { return Ok(false) };
        groups.clear();
        if keys.is_empty() {
            return Ok(true);
        }
        if keys.null_count() > 0 {
            return Ok(false);
        }
        let values = keys.values();
        let (lo, hi) = values.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &k| (lo.min(k), hi.max(k)));
        let (lo, hi) = if self.slots.is_empty() {
            (i128::from(lo), i128::from(hi))
        } else {
            (i128::from(lo).min(i128::from(self.base)), i128::from(hi).max(i128::from(self.base) + self.slots.len() as i128 - 1))
        };
        let span = hi - lo + 1;
        if span > 2 * (self.keys.len() + values.len()) as i128 + SLACK || span > i128::from(u32::MAX) {
            return Ok(false);
        }
        // (fits an i64: lo is one of the keys or the base; fits a usize: at most u32::MAX)
        let (lo, span) = (lo as i64, span as usize);
        if self.slots.is_empty() {
            self.base = lo;
        }
        if lo < self.base {
            let shift = (self.base - lo) as usize;
            let mut slots = vec![NONE; span];
            slots[shift..shift + self.slots.len()].copy_from_slice(&self.slots);
            self.slots = slots;
            self.base = lo;
        } else if span > self.slots.len() {
            self.slots.resize(span, NONE);
        }
        groups.reserve(values.len());
        for &k in values {
            let slot = &mut self.slots[(k - self.base) as usize];
            if *slot == NONE {
                *slot = self.keys.len() as u32;
                self.keys.push(k);
            }
            groups.push(*slot as usize);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]))
    }

    /// The numbers DataFusion's hash table gives the same keys, batch by batch.
    fn hashed(batches: &[Vec<Option<i64>>]) -> Vec<Vec<usize>> {
        let mut h = new_group_values(schema(), &GroupOrdering::None).unwrap();
        batches
            .iter()
            .map(|b| {
                let mut g = Vec::new();
                h.intern(&[Arc::new(Int64Array::from(b.clone())) as ArrayRef], &mut g).unwrap();
                g
            })
            .collect()
    }

    /// Dense keys, keys below the first ones (the table shifted), keys growing past the end,
    /// extremes that force the hash table midway, NULLs: the same numbers as the hash table's.
    #[test]
    fn numbers_keys_as_the_hash_table_does() {
        let mut next = crate::window::xorshift(0x9E37_79B9_7F4A_7C15u64);
        let dense: Vec<Vec<Option<i64>>> = (0..20).map(|b| (0..500).map(|_| Some(1000 + b * 300 + next(900) as i64)).collect()).collect();
        let below: Vec<Vec<Option<i64>>> = vec![vec![Some(50), Some(60)], vec![Some(10), Some(50), Some(-5)], vec![Some(70), Some(-5), Some(1000)]];
        let spread: Vec<Vec<Option<i64>>> =
            vec![vec![Some(1), Some(2), Some(1)], vec![Some(3), Some(i64::MAX), Some(2)], vec![Some(i64::MIN), Some(3), Some(4)], vec![Some(4), Some(5)]];
        let nulls: Vec<Vec<Option<i64>>> = vec![vec![Some(7), Some(8)], vec![None, Some(7), None], vec![Some(9), None]];
        for (name, batches, direct_at_end) in [("dense", dense, true), ("below", below, true), ("spread", spread, false), ("nulls", nulls, false)] {
            let mut n = KeyNumbers::new(schema()).unwrap();
            let mut got = Vec::new();
            for b in &batches {
                let mut g = Vec::new();
                n.intern(&[Arc::new(Int64Array::from(b.clone())) as ArrayRef], &mut g).unwrap();
                got.push(g);
            }
            let want = hashed(&batches);
            assert_eq!(got, want, "{name}");
            assert_eq!(n.len(), want.iter().flatten().max().map_or(0, |m| m + 1), "{name}");
            assert_eq!(matches!(n, KeyNumbers::Direct(_)), direct_at_end, "{name}");
        }
    }

    /// Keys of another type than Int64, or several keys, go to the hash table from the start.
    #[test]
    fn other_keys_are_hashed() {
        let two = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new("b", DataType::Int64, false)]));
        assert!(matches!(KeyNumbers::new(two).unwrap(), KeyNumbers::Hashed(_)));
        let text = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        assert!(matches!(KeyNumbers::new(text).unwrap(), KeyNumbers::Hashed(_)));
    }
}
