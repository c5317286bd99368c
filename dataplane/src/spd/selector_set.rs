//! An inbound SA's traffic selectors, indexed for RFC 4301 §5.2's check of every
//! decapsulated packet: "does some selector match?".
//!
//! A few selectors are compared one by one. Thousands (a hub's SA carrying every branch's
//! /24) are indexed on one address field, the local or the remote one, whichever splits them
//! best: the field's value space is cut into elementary intervals at every selector
//! boundary, each interval lists the selectors whose range covers it, and a packet compares
//! only the selectors of its interval (a binary search away). Selectors whose indexed field is
//! "any" are compared for every packet. When the intervals would list too many selectors
//! each (heavy overlap), the set falls back to the SPD's bit-vector classifier
//! ([`super::classifier::Table`]), which ANDs bitsets a word at a time. All three answer
//! exactly as the linear scan ([`SelectorSet::matches_linear`]); a proptest checks it.

use super::Direction;
use super::classifier::{Addr, Table};
use super::selector::{AddrRange, Family, PacketKey, Selector};
use super::starts::Starts;

/// Below this many selectors a linear scan is the fastest.
const LINEAR_MAX: usize = 8;
/// Most selectors an interval may list before the bit-vector classifier is used instead.
const LIST_MAX: usize = 32;

/// The selectors of one inbound SA, with an index when there are many.
#[derive(Debug, Clone)]
pub struct SelectorSet {
    sels: Box<[Selector]>,
    /// One of them is [`Selector::ANY`]: every packet matches.
    any: bool,
    /// `None`: few selectors, compared one by one. Boxed, so that the SA of one selector
    /// (the common case, in SADs of a million SAs) keeps 8 bytes for it rather than 40.
    index: Option<Box<Index>>,
}

#[derive(Debug, Clone)]
enum Index {
    Intervals {
        v4: Box<Intervals<u32>>,
        v6: Box<Intervals<u128>>,
        /// Selectors compared for every packet (their indexed field is "any").
        wide: Box<[u32]>,
    },
    Bitset {
        v4: Box<Table<u32>>,
        v6: Box<Table<u128>>,
    },
}

/// The elementary intervals of one address field in one family and the selectors covering
/// each.
#[derive(Debug, Clone)]
struct Intervals<A> {
    /// Index the remote field (else the local one).
    remote: bool,
    /// Interval starts (the first is the family's zero address), with their bucket table:
    /// a hub's 9,000 sites search a few intervals instead of 14 halvings through 18,000
    /// starts.
    starts: Starts<A>,
    /// `ids[offs[i]..offs[i + 1]]`: the selectors covering interval `i`.
    offs: Box<[u32]>,
    ids: Box<[u32]>,
    /// The most selectors one interval lists.
    widest: usize,
}

impl<A: Addr> Intervals<A> {
    /// Cut the field (`remote` or local) of the selectors `ids` (of this family, their field
    /// not "any").
    fn build(sels: &[Selector], ids: &[u32], remote: bool) -> Self {
        let range = |s: &Selector| A::range(if remote { &s.remote } else { &s.local });
        let mut points = vec![A::ZERO];
        for &i in ids {
            if let Some((lo, hi)) = range(&sels[i as usize]) {
                points.push(lo);
                if hi != A::MAX {
                    points.push(hi.succ());
                }
            }
        }
        points.sort_unstable();
        points.dedup();
        // a sweep would be O(n log n); selectors per interval are few by construction here,
        // and each selector's intervals are found by binary search
        let mut lists: Vec<Vec<u32>> = vec![vec![]; points.len()];
        for &i in ids {
            if let Some((lo, hi)) = range(&sels[i as usize]) {
                let first = points.partition_point(|p| *p < lo);
                let end = points.partition_point(|p| *p <= hi);
                for l in &mut lists[first..end] {
                    l.push(i);
                }
            }
        }
        let mut offs = Vec::with_capacity(points.len() + 1);
        let mut flat = vec![];
        let mut widest = 0;
        offs.push(0);
        for l in &lists {
            widest = widest.max(l.len());
            flat.extend_from_slice(l);
            offs.push(flat.len() as u32);
        }
        Intervals {
            remote,
            starts: Starts::new(points),
            offs: offs.into_boxed_slice(),
            ids: flat.into_boxed_slice(),
            widest,
        }
    }

    /// How many selector entries the lists hold in all.
    fn size(&self) -> usize {
        self.ids.len()
    }

    #[inline]
    fn candidates(&self, local: A, remote: A) -> &[u32] {
        let k = if self.remote { remote } else { local };
        let i = self.starts.interval(k);
        match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => self.ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

impl SelectorSet {
    pub fn new(sels: &[Selector]) -> SelectorSet {
        let any = sels.contains(&Selector::ANY);
        let index = if any || sels.len() <= LINEAR_MAX {
            None
        } else {
            Some(Box::new(Self::index(sels)))
        };
        SelectorSet {
            sels: sels.into(),
            any,
            index,
        }
    }

    fn index(sels: &[Selector]) -> Index {
        // per field: the selectors it can index (per family) and those it cannot ("any")
        let split = |remote: bool| {
            let (mut v4, mut v6, mut wide) = (vec![], vec![], vec![]);
            for (i, s) in sels.iter().enumerate() {
                let field = if remote { &s.remote } else { &s.local };
                match (field, s.family()) {
                    (AddrRange::V4 { .. }, _) => v4.push(i as u32),
                    (AddrRange::V6 { .. }, _) => v6.push(i as u32),
                    // the field is "any": compared for every packet
                    (AddrRange::Any, _) => wide.push(i as u32),
                }
            }
            let a = Intervals::<u32>::build(sels, &v4, remote);
            let b = Intervals::<u128>::build(sels, &v6, remote);
            (a, b, wide)
        };
        let (r4, r6, rw) = split(true);
        let (l4, l6, lw) = split(false);
        let cost = |a: &Intervals<u32>, b: &Intervals<u128>, w: &[u32]| {
            (a.widest.max(b.widest) + w.len(), a.size() + b.size())
        };
        let (v4, v6, wide) = if cost(&r4, &r6, &rw) <= cost(&l4, &l6, &lw) {
            (r4, r6, rw)
        } else {
            (l4, l6, lw)
        };
        if v4.widest.max(v6.widest) + wide.len() <= LIST_MAX {
            return Index::Intervals {
                v4: Box::new(v4),
                v6: Box::new(v6),
                wide: wide.into_boxed_slice(),
            };
        }
        let all = vec![true; sels.len()];
        Index::Bitset {
            v4: Box::new(Table::build(sels, &all, Family::V4)),
            v6: Box::new(Table::build(sels, &all, Family::V6)),
        }
    }

    /// No selector: nothing matches (fail closed).
    pub fn is_empty(&self) -> bool {
        self.sels.is_empty()
    }

    /// One of them is "any": every packet matches without looking at it.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Does some selector match the decapsulated packet `k` (RFC 4301 §5.2)?
    #[inline(always)]
    pub fn matches(&self, k: &PacketKey) -> bool {
        if self.any {
            return true;
        }
        // a few selectors (the common case: one policy per SA) are scanned right here
        if self.index.is_none() {
            return self.matches_linear(k);
        }
        self.matches_indexed(k)
    }

    /// [`SelectorSet::matches`] through the index (out of line: the common case above stays
    /// small).
    #[inline(never)]
    fn matches_indexed(&self, k: &PacketKey) -> bool {
        let one = |i: &u32| {
            self.sels
                .get(*i as usize)
                .is_some_and(|s| s.matches(Direction::Inbound, k))
        };
        match self.index.as_deref() {
            None => self.matches_linear(k),
            Some(Index::Intervals { v4, v6, wide }) => {
                let (local, remote) = k.local_remote(Direction::Inbound);
                let c = if k.v6 {
                    v6.candidates(local, remote)
                } else {
                    v4.candidates(local as u32, remote as u32)
                };
                c.iter().any(one) || wide.iter().any(one)
            }
            Some(Index::Bitset { v4, v6 }) => {
                let (local, remote) = k.local_remote(Direction::Inbound);
                let (lp, rp) = k.ports(Direction::Inbound);
                if k.v6 {
                    v6.lookup(local, remote, k.proto, lp, rp, false).is_some()
                } else {
                    v4.lookup(local as u32, remote as u32, k.proto, lp, rp, false)
                        .is_some()
                }
            }
        }
    }

    /// The same answer by comparing every selector (the reference; used below
    /// [`LINEAR_MAX`]).
    #[inline]
    pub fn matches_linear(&self, k: &PacketKey) -> bool {
        self.sels.iter().any(|s| s.matches(Direction::Inbound, k))
    }

    /// Which index was built: "linear", "intervals" or "bitset" (tests, benches).
    pub fn kind(&self) -> &'static str {
        match self.index.as_deref() {
            None => "linear",
            Some(Index::Intervals { .. }) => "intervals",
            Some(Index::Bitset { .. }) => "bitset",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spd::selector::PortSel;
    use crate::wire::IpProtocol;
    use proptest::prelude::*;

    fn v4(lo: u32, hi: u32) -> AddrRange {
        AddrRange::V4 { lo, hi }
    }

    fn key(src: u32, dst: u32, proto: u8, sp: u32, dp: u32) -> PacketKey {
        PacketKey {
            v6: false,
            src: u128::from(src),
            dst: u128::from(dst),
            proto,
            src_port: sp,
            dst_port: dp,
            dst_multicast: false,
        }
    }

    /// 9,000 /24 sites behind one peer, one SA: the hub's case.
    #[test]
    fn thousands_of_sites_are_indexed_and_answer_as_the_scan() {
        let local = v4(0x0a01_0000, 0x0a01_ffff);
        let sels: Vec<Selector> = (0..9000u32)
            .map(|i| Selector {
                local,
                remote: v4(0x6400_0000 + (i << 8), 0x6400_0000 + (i << 8) + 255),
                ..Selector::ANY
            })
            .collect();
        let set = SelectorSet::new(&sels);
        assert_eq!(set.kind(), "intervals");
        for (src, dst, want) in [
            (0x6400_0000 + (42 << 8) + 7, 0x0a01_0203, true),
            (0x6400_0000 + (8999 << 8) + 255, 0x0a01_ffff, true),
            (0x6400_0000 + (9000 << 8), 0x0a01_0203, false),
            (0x6400_0000 + 5, 0x0a02_0000, false),
            (0x0a01_0000, 0x6400_0000, false),
        ] {
            let k = key(src, dst, 17, 1000, 2000);
            assert_eq!(set.matches(&k), want, "{src:#x} -> {dst:#x}");
            assert_eq!(set.matches_linear(&k), want);
        }
    }

    #[test]
    fn heavy_overlap_falls_back_to_the_bitset() {
        // 100 selectors, every one over the whole space, differing only by port
        let sels: Vec<Selector> = (0..100u16)
            .map(|p| Selector {
                local: v4(0, u32::MAX),
                remote: v4(0, u32::MAX),
                proto: Some(IpProtocol::TCP),
                local_port: PortSel::Range {
                    lo: p * 10,
                    hi: p * 10,
                },
                ..Selector::ANY
            })
            .collect();
        let set = SelectorSet::new(&sels);
        assert_eq!(set.kind(), "bitset");
        assert!(set.matches(&key(1, 2, 6, 9, 500)));
        assert!(!set.matches(&key(1, 2, 6, 9, 501)));
        assert!(!set.matches(&key(1, 2, 17, 9, 500)));
        // few selectors: the scan
        assert_eq!(SelectorSet::new(&sels[..3]).kind(), "linear");
        assert!(SelectorSet::new(&[]).is_empty());
        assert!(!SelectorSet::new(&[]).matches(&key(1, 2, 6, 9, 0)));
        let mut with_any = sels.clone();
        with_any.push(Selector::ANY);
        assert!(SelectorSet::new(&with_any).matches(&key(1, 2, 17, 1, 1)));
    }

    fn arb_range6() -> impl Strategy<Value = AddrRange> {
        (0u128..64, 0u128..64).prop_map(|(a, b)| AddrRange::V6 {
            lo: a.min(b),
            hi: a.max(b),
        })
    }

    fn arb_range4() -> impl Strategy<Value = AddrRange> {
        prop_oneof![
            3 => (0u32..64, 0u32..64).prop_map(|(a, b)| v4(a.min(b), a.max(b))),
            1 => (0u32..64).prop_map(|a| v4(a, a)),
        ]
    }

    fn arb_port() -> impl Strategy<Value = PortSel> {
        prop_oneof![
            3 => Just(PortSel::Any),
            1 => (0u16..8, 0u16..8).prop_map(|(a, b)| PortSel::Range { lo: a.min(b), hi: a.max(b) }),
        ]
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        let fam4 = (
            prop_oneof![4 => arb_range4(), 1 => Just(AddrRange::Any)],
            prop_oneof![4 => arb_range4(), 1 => Just(AddrRange::Any)],
        );
        let fam6 = (
            prop_oneof![4 => arb_range6(), 1 => Just(AddrRange::Any)],
            prop_oneof![4 => arb_range6(), 1 => Just(AddrRange::Any)],
        );
        (
            prop_oneof![3 => fam4, 1 => fam6],
            prop_oneof![2 => Just(None), 1 => Just(Some(IpProtocol::TCP)), 1 => Just(Some(IpProtocol::UDP))],
            arb_port(),
            arb_port(),
        )
            .prop_map(|((local, remote), proto, lp, rp)| {
                let ports = proto.is_some();
                Selector {
                    local,
                    remote,
                    proto,
                    local_port: if ports { lp } else { PortSel::Any },
                    remote_port: if ports { rp } else { PortSel::Any },
                }
            })
    }

    fn arb_key() -> impl Strategy<Value = PacketKey> {
        (
            any::<bool>(),
            0u128..70,
            0u128..70,
            prop_oneof![Just(6u8), Just(17u8), Just(1u8)],
            0u32..10,
            0u32..10,
        )
            .prop_map(|(v6, src, dst, proto, sp, dp)| PacketKey {
                v6,
                src,
                dst,
                proto,
                src_port: sp,
                dst_port: dp,
                dst_multicast: false,
            })
    }

    /// Sites: narrow ranges over a wide space, a few "any" fields and protocols: what the
    /// interval index is for.
    fn arb_site() -> impl Strategy<Value = Selector> {
        (
            0u32..4000,
            0u32..300,
            prop_oneof![8 => Just(false), 1 => Just(true)],
            prop_oneof![4 => Just(None), 1 => Just(Some(IpProtocol::UDP))],
            0u32..4,
        )
            .prop_map(|(base, width, any_local, proto, local)| Selector {
                local: if any_local {
                    AddrRange::Any
                } else {
                    v4(local * 1000, local * 1000 + 999)
                },
                remote: v4(base * 100, base * 100 + width),
                proto,
                ..Selector::ANY
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The interval index (and, where sites overlap much, the bitset) against the scan.
        #[test]
        fn the_site_index_answers_as_the_linear_scan(
            sels in proptest::collection::vec(arb_site(), 9..400),
            keys in proptest::collection::vec(
                (0u32..400_100, 0u32..4100, prop_oneof![Just(6u8), Just(17u8)]), 1..200),
        ) {
            let set = SelectorSet::new(&sels);
            for (src, dst, proto) in keys {
                let k = key(src, dst, proto, 5, 5);
                prop_assert_eq!(set.matches(&k), set.matches_linear(&k), "{}", set.kind());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Whatever the selectors (overlapping, either family, "any" fields, protocols,
        /// ports) and whichever index they get, the answer is the linear scan's.
        #[test]
        fn the_index_answers_as_the_linear_scan(
            sels in proptest::collection::vec(arb_selector(), 0..120),
            keys in proptest::collection::vec(arb_key(), 1..64),
        ) {
            let set = SelectorSet::new(&sels);
            for k in &keys {
                prop_assert_eq!(set.matches(k), set.matches_linear(k), "{} {:?}", set.kind(), k);
            }
        }
    }
}
