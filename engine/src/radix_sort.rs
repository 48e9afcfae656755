//! A stable radix sort of unsigned 64-bit keys, giving the rows' order: for sorts whose keys
//! pack into one number (an integer key and an event time), which a comparison sort of
//! millions of rows spends most of a flush on.
//!
//! ```sql
//! -- every held row sorted by (bidder, date_time) when sessions close: 9.2M rows at the end of
//! -- a bounded JSON Lines input
//! SELECT bidder, COUNT(*) FROM bid GROUP BY SESSION(date_time, INTERVAL '10' SECOND), bidder;
//! ```
//!
//! Least significant digit first, 8 bits a pass, over the bits the keys' span needs (the
//! smallest key subtracted first), each pass a counting scatter of the keys and the row
//! numbers; a pass whose digit is the same for every row is skipped. Equal keys keep their
//! rows' order.

/// Bits of the key one pass sorts by.
const DIGIT_BITS: u32 = 8;
/// Buckets of one pass.
const BUCKETS: usize = 1 << DIGIT_BITS;
/// Fewer rows than this are sorted by comparison (a radix pass costs its buckets).
const SMALL: usize = 1024;

/// The order of the rows by `keys` ascending, rows of equal key in their order; None for more
/// rows than a `u32` numbers. The keys' vector is sorted in place (and its memory reused).
pub(crate) fn radix_order(keys: Vec<u64>) -> Option<Vec<u32>> {
    let rows = u32::try_from(keys.len()).ok()?;
    let mut idx: Vec<u32> = (0..rows).collect();
    if keys.len() < SMALL {
        idx.sort_by_key(|&i| keys[i as usize]);
        return Some(idx);
    }
    Some(by_digits::<true>(keys, idx).2)
}

/// `keys` sorted ascending (by comparison for fewer than 1024).
pub(crate) fn radix_sorted(mut keys: Vec<u64>) -> Vec<u64> {
    if keys.len() < SMALL {
        keys.sort_unstable();
        return keys;
    }
    let (mut keys, lo, _) = by_digits::<false>(keys, Vec::new());
    keys.iter_mut().for_each(|x| *x += lo);
    keys
}

/// The radix passes: `keys` less their smallest, sorted, that smallest, and (with `ROWS`)
/// `idx` moved with the keys; without, `idx` is not read or moved.
fn by_digits<const ROWS: bool>(mut keys: Vec<u64>, mut idx: Vec<u32>) -> (Vec<u64>, u64, Vec<u32>) {
    let n = keys.len();
    let (lo, hi) = keys.iter().fold((u64::MAX, 0), |(lo, hi), &k| (lo.min(k), hi.max(k)));
    if n == 0 {
        return (keys, 0, idx);
    }
    let bits = u64::BITS - (hi - lo).leading_zeros();
    let passes = bits.div_ceil(DIGIT_BITS) as usize;
    keys.iter_mut().for_each(|x| *x -= lo);
    if passes == 0 {
        return (keys, lo, idx);
    }
    // every pass's histogram in one read of the keys
    let mut counts = vec![[0usize; BUCKETS]; passes];
    for &x in &keys {
        for (p, c) in counts.iter_mut().enumerate() {
            c[digit(x, p)] += 1;
        }
    }
    let mut k2 = vec![0u64; n];
    let mut idx2 = if ROWS { vec![0u32; n] } else { Vec::new() };
    for (p, c) in counts.iter().enumerate() {
        if c.contains(&n) {
            continue;
        }
        let mut next = [0usize; BUCKETS];
        let mut sum = 0;
        for (o, &c) in next.iter_mut().zip(c) {
            *o = sum;
            sum += c;
        }
        if ROWS {
            for (&x, &i) in keys.iter().zip(&idx) {
                let d = digit(x, p);
                let o = next[d];
                k2[o] = x;
                idx2[o] = i;
                next[d] = o + 1;
            }
        } else {
            for &x in &keys {
                let d = digit(x, p);
                k2[next[d]] = x;
                next[d] += 1;
            }
        }
        std::mem::swap(&mut keys, &mut k2);
        std::mem::swap(&mut idx, &mut idx2);
    }
    (keys, lo, idx)
}

/// Digit `pass` of `x`.
#[inline]
fn digit(x: u64, pass: usize) -> usize {
    ((x >> (pass as u32 * DIGIT_BITS)) & (BUCKETS as u64 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order a stable comparison sort gives.
    fn stable(keys: &[u64]) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..keys.len() as u32).collect();
        idx.sort_by_key(|&i| keys[i as usize]);
        idx
    }

    /// Same order as a stable comparison sort, row for row: small and large inputs, narrow and
    /// full 64-bit spans, many equal keys, keys all equal, already sorted and reversed; and the
    /// keys alone sorted as the standard library sorts them.
    #[test]
    fn orders_rows_as_a_stable_sort_does() {
        let mut next = crate::window::xorshift(0x2545_F491_4F6C_DD1Du64);
        for n in [0usize, 1, 2, 1023, 1024, 1025, 5000, 100_000] {
            let cases: Vec<Vec<u64>> = vec![
                (0..n).map(|_| next(u64::MAX)).collect(),
                (0..n).map(|_| next(7)).collect(),
                (0..n).map(|_| 1_000_000 + next(3000)).collect(),
                (0..n).map(|_| (next(5) << 40) | next(100)).collect(),
                (0..n).map(|i| if i % 3 == 0 { u64::MAX } else { next(10) }).collect(),
                vec![42; n],
                (0..n as u64).collect(),
                (0..n as u64).rev().collect(),
            ];
            for keys in cases {
                assert_eq!(radix_order(keys.clone()), Some(stable(&keys)), "{n} rows, first {:?}", keys.first());
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                assert_eq!(radix_sorted(keys.clone()), sorted, "{n} rows sorted, first {:?}", keys.first());
            }
        }
    }
}
