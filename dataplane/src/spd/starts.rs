//! Sorted interval starts with a bucket table in front of the binary search: the "which
//! elementary interval holds this value" step of the SPD classifier's fields and of the
//! inbound selector index.
//!
//! A hub's 9,000 /24 sites cut the remote address into 18,000 intervals; a plain binary
//! search takes 14 dependent halvings through them, each a likely cache miss. The bucket
//! table cuts the value space from the first start after zero into equal buckets (about two
//! per interval) and records, per bucket edge, the interval holding it, so a value searches
//! only the few starts inside its bucket.

use super::classifier::Addr;

/// Interval starts (sorted, the first is the domain's zero) and their bucket table.
#[derive(Debug, Clone)]
pub(crate) struct Starts<A> {
    starts: Box<[A]>,
    /// The table covers values from `base` on, in buckets of `1 << shift`; `lo[b]` is the
    /// interval holding bucket `b`'s first value, so a value in bucket `b` searches only
    /// `starts[lo[b]..=lo[b + 1]]`.
    base: A,
    shift: u32,
    lo: Box<[u32]>,
    /// The index of `base` in `starts`: a value below it searches `starts[..=below]` only.
    below: u32,
}

impl<A: Addr> Starts<A> {
    /// `points` sorted, without duplicates, the first being `A::ZERO`.
    pub(crate) fn new(points: Vec<A>) -> Self {
        debug_assert!(points.first() == Some(&A::ZERO));
        debug_assert!(points.windows(2).all(|w| w[0] < w[1]));
        let (base, shift, lo, below) = buckets(&points);
        Starts {
            starts: points.into_boxed_slice(),
            base,
            shift,
            lo,
            below,
        }
    }

    /// The starts, in order.
    pub(crate) fn as_slice(&self) -> &[A] {
        &self.starts
    }

    /// The index of the interval holding `k`.
    #[inline]
    pub(crate) fn interval(&self, k: A) -> usize {
        let (a, z) = match k.diff(self.base) {
            // no table: the search over everything
            _ if self.lo.len() < 2 => (0, self.starts.len().saturating_sub(1)),
            // below the table: the few far-away starts below it
            None => (0, self.below as usize),
            Some(d) => {
                let b = usize::try_from(d >> self.shift).unwrap_or(usize::MAX);
                match (self.lo.get(b), self.lo.get(b.saturating_add(1))) {
                    (Some(&a), Some(&z)) => (a as usize, z as usize),
                    // past the last bucket: from its last edge on
                    _ => (
                        self.lo.last().map_or(0, |&l| l as usize),
                        self.starts.len().saturating_sub(1),
                    ),
                }
            }
        };
        let within = self.starts.get(a..=z).unwrap_or(&[]);
        a + within.partition_point(|s| *s <= k).saturating_sub(1)
    }

    /// Bytes of the starts and the table.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.starts.len() * core::mem::size_of::<A>() + self.lo.len() * 4
    }
}

/// The bucket table of sorted interval starts (`starts[0]` is zero), over the starts after
/// zero, or over their dense middle when a few far-away ones would stretch the buckets (the
/// first and last 1 % are then left to the plain search): the base, the shift (bucket width
/// `1 << shift`, about two buckets per interval, at most 65,536 of them) and, per bucket
/// edge, the interval holding it.
fn buckets<A: Addr>(starts: &[A]) -> (A, u32, Box<[u32]>, u32) {
    if starts.len() < 4 {
        return (A::ZERO, 0, Box::new([]), 0);
    }
    let target = (starts.len() as u128 * 2).clamp(64, 1 << 16);
    let fit = |first: usize, last: usize| {
        let span = starts[last].diff(starts[first]).unwrap_or(0);
        let mut shift = 0u32;
        while (span >> shift) >= target {
            shift += 1;
        }
        (starts[first], span, shift, first)
    };
    // all the starts after zero, or without the first and last 1 % when those stretch the
    // range so much that the buckets would be 16 times wider (a far-away site)
    let out = (starts.len() / 100).max(1);
    let whole = fit(1, starts.len() - 1);
    let trimmed = fit(out, starts.len() - 1 - out);
    let (base, span, shift, first) = if trimmed.2 + 4 <= whole.2 {
        trimmed
    } else {
        whole
    };
    let nb = usize::try_from(span >> shift).unwrap_or(0) + 1;
    // lo[b]: the last interval whose start is at most base + (b << shift)
    let mut lo = Vec::with_capacity(nb + 1);
    let mut i = 0usize; // starts[..i] are at most the edge
    for b in 0..=nb {
        let edge = (b as u128) << shift;
        while i < starts.len() && starts[i].diff(base).is_none_or(|d| d <= edge) {
            i += 1;
        }
        lo.push(i.saturating_sub(1) as u32);
    }
    (base, shift, lo.into_boxed_slice(), first as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The bucket table finds the interval the binary search over all starts finds, for
        /// values below, inside, between and beyond dense runs of starts, with far outliers,
        /// in both widths.
        #[test]
        fn the_bucket_table_finds_the_interval_of_the_plain_search(
            dense in proptest::collection::vec(0u32..400_000, 0..1200),
            far in proptest::collection::vec(any::<u32>(), 0..4),
            keys in proptest::collection::vec(any::<u32>(), 1..100),
            near in proptest::collection::vec(0u32..400_100, 1..100),
            shift6 in 0u32..96,
        ) {
            let mut points: Vec<u32> = dense.into_iter().chain(far).chain([0]).collect();
            points.sort_unstable();
            points.dedup();
            let s = Starts::new(points.clone());
            let s6 = Starts::new(points.iter().map(|&p| u128::from(p) << shift6).collect());
            for k in keys.into_iter().chain(near).chain([0, u32::MAX]) {
                let want = points.partition_point(|p| *p <= k) - 1;
                prop_assert_eq!(s.interval(k), want, "key {:#x}", k);
                prop_assert_eq!(s6.interval(u128::from(k) << shift6), want, "key {:#x}", k);
            }
        }
    }
}
