//! The compiled SPD lookup: a bit-vector packet classifier (Lakshman & Stiliadis, SIGCOMM '98).
//!
//! For each field (local address, remote address, protocol, local and remote "port") the
//! field's value space is cut into elementary intervals at every selector boundary, and each
//! interval gets the bitset of policies whose selector covers it. A lookup finds the interval
//! of each field (binary search; a table for the protocol), ANDs the five bitsets a word at a
//! time and stops at the first non-zero word: its lowest bit is the first matching policy in
//! SPD order. Identical bitsets are stored once.
//!
//! Each bitset also has a summary: one bit per word, set where the word is not zero. A lookup
//! ANDs the five summaries first and visits only the words whose bit survives, so a packet
//! that matches the 10,000th policy reads a handful of words, not 157: the cost follows the
//! words where every field has a candidate, not the size of the SPD. Rows keep only their
//! non-zero words (the summary says which), so the memory follows them too.
//!
//! Built off the packet path, never mutated: a new SPD is compiled whole and swapped in.

use super::selector::{AddrRange, Family, Selector};
use super::starts::Starts;
use std::collections::HashMap;

/// An address type of one family.
pub(crate) trait Addr: Copy + Ord + std::hash::Hash + core::fmt::Debug {
    const MAX: Self;
    const ZERO: Self;
    fn succ(self) -> Self;
    /// `self - base`, if `self` is not below `base`.
    fn diff(self, base: Self) -> Option<u128>;
    /// The selector's range in this family, or `None` if the selector is for the other one.
    fn range(r: &AddrRange) -> Option<(Self, Self)>;
}

impl Addr for u32 {
    const MAX: Self = u32::MAX;
    const ZERO: Self = 0;
    fn succ(self) -> Self {
        self + 1
    }
    fn diff(self, base: Self) -> Option<u128> {
        self.checked_sub(base).map(u128::from)
    }
    fn range(r: &AddrRange) -> Option<(Self, Self)> {
        match *r {
            AddrRange::Any => Some((0, u32::MAX)),
            AddrRange::V4 { lo, hi } => Some((lo, hi)),
            AddrRange::V6 { .. } => None,
        }
    }
}

impl Addr for u128 {
    const MAX: Self = u128::MAX;
    const ZERO: Self = 0;
    fn succ(self) -> Self {
        self + 1
    }
    fn diff(self, base: Self) -> Option<u128> {
        self.checked_sub(base)
    }
    fn range(r: &AddrRange) -> Option<(Self, Self)> {
        match *r {
            AddrRange::Any => Some((0, u128::MAX)),
            AddrRange::V6 { lo, hi } => Some((lo, hi)),
            AddrRange::V4 { .. } => None,
        }
    }
}

/// One field: its elementary intervals and each interval's row.
#[derive(Debug, Clone)]
struct Dim<K> {
    starts: Starts<K>,
    rows: Box<[u32]>,
}

impl<K: Addr> Dim<K> {
    #[inline(always)]
    fn row(&self, k: K) -> usize {
        self.rows
            .get(self.starts.interval(k))
            .map_or(0, |&r| r as usize)
    }
}

/// Deduplicating store of bitset rows, packed: each row keeps its summary (one bit per
/// word, set where the word is not zero) and only its non-zero words. A hub's remote-address
/// rows have a bit or two beyond the policies every row shares, so most of their 174 words
/// are zero: packed, 10,000 policies take a few MB instead of 30 per direction.
struct RowStore {
    words: usize,
    /// Summary words per row.
    swords: usize,
    /// The non-zero words of every row, row after row.
    data: Vec<u64>,
    /// `swords` summary words per row.
    sums: Vec<u64>,
    /// Where each row's words start in `data`.
    base: Vec<u32>,
    /// Packed form (summary, then the non-zero words) → row number.
    index: HashMap<Vec<u64>, u32>,
}

impl RowStore {
    fn new(words: usize) -> Self {
        RowStore {
            words,
            swords: words.div_ceil(64),
            data: vec![],
            sums: vec![],
            base: vec![],
            index: HashMap::new(),
        }
    }

    /// The number of the row `row` (`words` words), stored once.
    fn intern(&mut self, row: &[u64]) -> u32 {
        debug_assert_eq!(row.len(), self.words);
        let mut packed = vec![0u64; self.swords];
        for (w, x) in row.iter().enumerate() {
            if *x != 0 {
                packed[w / 64] |= 1 << (w % 64);
                packed.push(*x);
            }
        }
        if let Some(&n) = self.index.get(&packed) {
            return n;
        }
        let n = self.base.len() as u32;
        self.base.push(self.data.len() as u32);
        self.sums.extend_from_slice(&packed[..self.swords]);
        self.data.extend_from_slice(&packed[self.swords..]);
        self.index.insert(packed, n);
        n
    }
}

/// Build one dimension by a sweep over the sorted boundaries: O(intervals × words).
fn build_dim<K: Addr>(
    ranges: &[(K, K)],
    min: K,
    succ: impl Fn(K) -> Option<K>,
    store: &mut RowStore,
) -> Dim<K> {
    let words = store.words;
    // events: at `lo` a policy starts, at `hi + 1` it ends
    let mut starts_at: HashMap<K, Vec<usize>> = HashMap::new();
    let mut ends_at: HashMap<K, Vec<usize>> = HashMap::new();
    let mut points = vec![min];
    for (bit, &(lo, hi)) in ranges.iter().enumerate() {
        starts_at.entry(lo).or_default().push(bit);
        points.push(lo);
        if let Some(after) = succ(hi) {
            ends_at.entry(after).or_default().push(bit);
            points.push(after);
        }
    }
    points.sort_unstable();
    points.dedup();
    let mut cur = vec![0u64; words];
    let mut starts = Vec::with_capacity(points.len());
    let mut rows = Vec::with_capacity(points.len());
    for p in points {
        if let Some(bits) = ends_at.get(&p) {
            for &b in bits {
                cur[b / 64] &= !(1 << (b % 64));
            }
        }
        if let Some(bits) = starts_at.get(&p) {
            for &b in bits {
                cur[b / 64] |= 1 << (b % 64);
            }
        }
        let row = store.intern(&cur);
        // merge neighbours with the same row
        if rows.last() == Some(&row) {
            continue;
        }
        starts.push(p);
        rows.push(row);
    }
    Dim {
        starts: Starts::new(starts),
        rows: rows.into_boxed_slice(),
    }
}

/// The classifier for one direction and one address family.
#[derive(Debug, Clone)]
pub(crate) struct Table<A> {
    local: Dim<A>,
    remote: Dim<A>,
    proto: Box<[u32; 256]>,
    local_port: Dim<u32>,
    remote_port: Dim<u32>,
    /// The rows' non-zero words (see [`RowStore`]).
    rows: Box<[u64]>,
    /// Where each row's words start in `rows`.
    base: Box<[u32]>,
    /// Summary words per row.
    swords: usize,
    /// Each row's summary: bit `w` set where word `w` of the row is not zero.
    sums: Box<[u64]>,
    /// Row with the bits of non-PROTECT policies: multicast and broadcast are never protected.
    unprotected: u32,
    /// Bit position → index in the direction's policy list.
    bit_policy: Box<[u32]>,
}

impl<A: Addr> Table<A> {
    /// Compile the policies of one direction (all of them, in order) for family `fam`;
    /// `protect[i]` says whether policy `i` is PROTECT.
    pub(crate) fn build(selectors: &[Selector], protect: &[bool], fam: Family) -> Self {
        let mut idx = vec![];
        let mut addr_l = vec![];
        let mut addr_r = vec![];
        for (i, s) in selectors.iter().enumerate() {
            if s.family().is_some_and(|f| f != fam) {
                continue;
            }
            let (Some(l), Some(r)) = (A::range(&s.local), A::range(&s.remote)) else {
                continue;
            };
            idx.push(i as u32);
            addr_l.push(l);
            addr_r.push(r);
        }
        let n = idx.len();
        let words = n.div_ceil(64).max(1);
        let mut store = RowStore::new(words);
        let succ_a = |a: A| if a == A::MAX { None } else { Some(a.succ()) };
        let local = build_dim(&addr_l, A::ZERO, succ_a, &mut store);
        let remote = build_dim(&addr_r, A::ZERO, succ_a, &mut store);
        let sels: Vec<&Selector> = idx.iter().map(|&i| &selectors[i as usize]).collect();
        let pr: Vec<(u32, u32)> = sels
            .iter()
            .map(|s| {
                s.proto
                    .map_or((0, 255), |p| (u32::from(p.0), u32::from(p.0)))
            })
            .collect();
        let succ_p = |p: u32| {
            if p >= super::selector::PORT_DOMAIN_MAX {
                None
            } else {
                Some(p + 1)
            }
        };
        let proto_dim = build_dim(&pr, 0u32, succ_p, &mut store);
        let mut proto = Box::new([0u32; 256]);
        for (v, slot) in proto.iter_mut().enumerate() {
            *slot = proto_dim.row(v as u32) as u32;
        }
        let lp: Vec<(u32, u32)> = sels.iter().map(|s| s.local_port.domain()).collect();
        let rp: Vec<(u32, u32)> = sels.iter().map(|s| s.remote_port.domain()).collect();
        let local_port = build_dim(&lp, 0u32, succ_p, &mut store);
        let remote_port = build_dim(&rp, 0u32, succ_p, &mut store);
        let mut unp = vec![0u64; words];
        for (bit, &i) in idx.iter().enumerate() {
            if !protect[i as usize] {
                unp[bit / 64] |= 1 << (bit % 64);
            }
        }
        let unprotected = store.intern(&unp);
        Table {
            local,
            remote,
            proto,
            local_port,
            remote_port,
            rows: store.data.into_boxed_slice(),
            base: store.base.into_boxed_slice(),
            swords: store.swords,
            sums: store.sums.into_boxed_slice(),
            unprotected,
            bit_policy: idx.into_boxed_slice(),
        }
    }

    /// The numbers of the rows to AND: the five fields', then the multicast mask if any.
    #[inline(always)]
    fn rows_for(&self, local: A, remote: A, proto: u8, lport: u32, rport: u32) -> [usize; 5] {
        [
            self.local.row(local),
            self.remote.row(remote),
            self.proto[usize::from(proto)] as usize,
            self.local_port.row(lport),
            self.remote_port.row(rport),
        ]
    }

    /// Calls `f` with each non-zero word of the AND of the rows, in order, with its word
    /// index, until `f` says stop. Only the words every row's summary marks are read; a
    /// row's word is found by counting the summary bits before it.
    #[inline(always)]
    fn scan_rows<const N: usize>(
        &self,
        rows: [usize; N],
        mut f: impl FnMut(usize, u64) -> core::ops::ControlFlow<()>,
    ) {
        let sw = self.swords;
        let (data, sm) = (&self.rows, &self.sums);
        let sums = rows.map(|r| r * sw);
        // per row: where its words for the current summary word start
        let mut at = rows.map(|r| self.base.get(r).map_or(0, |&b| b as usize));
        for s in 0..sw {
            let ss: [u64; N] = core::array::from_fn(|k| sm.get(sums[k] + s).copied().unwrap_or(0));
            let mut cand = ss.iter().fold(!0u64, |c, x| c & x);
            while cand != 0 {
                let bit = cand.trailing_zeros();
                cand &= cand - 1;
                let below = (1u64 << bit) - 1;
                let mut x = !0u64;
                for k in 0..N {
                    let i = at[k] + (ss[k] & below).count_ones() as usize;
                    x &= data.get(i).copied().unwrap_or(0);
                }
                if x != 0 && f(s * 64 + bit as usize, x).is_break() {
                    return;
                }
            }
            for k in 0..N {
                at[k] += ss[k].count_ones() as usize;
            }
        }
    }

    /// [`Table::scan_rows`] of the five fields' rows, and of the mask of non-PROTECT
    /// policies if `multicast`.
    #[inline(always)]
    fn scan(
        &self,
        rows: [usize; 5],
        multicast: bool,
        f: impl FnMut(usize, u64) -> core::ops::ControlFlow<()>,
    ) {
        if multicast {
            let [a, b, c, d, e] = rows;
            self.scan_rows([a, b, c, d, e, self.unprotected as usize], f);
        } else {
            self.scan_rows(rows, f);
        }
    }

    /// Index (in the direction's policy list) of the first matching policy.
    #[inline]
    pub(crate) fn lookup(
        &self,
        local: A,
        remote: A,
        proto: u8,
        lport: u32,
        rport: u32,
        multicast: bool,
    ) -> Option<u32> {
        let rows = self.rows_for(local, remote, proto, lport, rport);
        let mut found = None;
        self.scan(rows, multicast, |w, x| {
            let bit = w * 64 + x.trailing_zeros() as usize;
            found = self.bit_policy.get(bit).copied();
            core::ops::ControlFlow::Break(())
        });
        found
    }

    /// Every matching policy, in order.
    pub(crate) fn all(
        &self,
        local: A,
        remote: A,
        proto: u8,
        lport: u32,
        rport: u32,
        multicast: bool,
    ) -> Vec<u32> {
        let rows = self.rows_for(local, remote, proto, lport, rport);
        let mut out = vec![];
        self.scan(rows, multicast, |w, mut x| {
            while x != 0 {
                let bit = w * 64 + x.trailing_zeros() as usize;
                if let Some(&p) = self.bit_policy.get(bit) {
                    out.push(p);
                }
                x &= x - 1;
            }
            core::ops::ControlFlow::Continue(())
        });
        out
    }

    /// Elementary port intervals (inclusive) of the local or remote port field that intersect
    /// `[lo, hi]`: the places where the answer of the policy test can change.
    pub(crate) fn port_cuts(&self, remote: bool, lo: u32, hi: u32) -> Vec<(u32, u32)> {
        let d = if remote {
            &self.remote_port
        } else {
            &self.local_port
        };
        let mut out = vec![];
        // outside the port domain there is nothing to cut (and a loop to the end of it
        // would never reach `hi`)
        let hi = hi.min(super::selector::PORT_DOMAIN_MAX);
        if lo > hi {
            return out;
        }
        let mut i = d.starts.interval(lo);
        let starts = d.starts.as_slice();
        let mut start = lo;
        loop {
            let end = starts
                .get(i + 1)
                .map_or(super::selector::PORT_DOMAIN_MAX, |n| n - 1)
                .min(hi);
            out.push((start, end));
            if end >= hi {
                break;
            }
            start = end + 1;
            i += 1;
        }
        out
    }

    /// Bytes of memory used by the tables.
    pub(crate) fn memory_bytes(&self) -> usize {
        let dim = |d: &Dim<A>| d.starts.memory_bytes() + d.rows.len() * 4;
        let port = |d: &Dim<u32>| d.starts.memory_bytes() + d.rows.len() * 4;
        self.rows.len() * 8
            + self.base.len() * 4
            + self.sums.len() * 8
            + dim(&self.local)
            + dim(&self.remote)
            + port(&self.local_port)
            + port(&self.remote_port)
            + 256 * 4
            + self.bit_policy.len() * 4
    }
}
