//! The SA database of one worker.
//!
//! SAs live in a slab (`Vec<Option<Sa>>`) addressed by [`SaHandle`]. Two open-addressing hash
//! indexes (linear probing, Fibonacci hashing, backward-shift deletion, load ≤ 1/2) give O(1)
//! lookup that stays flat from one SA to millions:
//!
//! * inbound: SPI → handles (a multimap; the destination address, when the SA names one,
//!   disambiguates equal SPIs — RFC 4301 §4.1 lookup by SPI and destination);
//! * outbound: reqid → the current outbound SA of that reqid (the newest installed), which is
//!   what PROTECT policies name.
//!
//! Management (install, remove, list) may allocate; lookups never do.

use super::config::{SaConfig, SaError};
use super::state::{Sa, ip_u128};
use crate::spd::Direction;
use crate::time::Timestamp;
use std::net::IpAddr;

/// Index of an SA in its worker's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaHandle(pub u32);

impl SaHandle {
    /// No SA (the handle of an event about an SA that is missing).
    pub const NONE: SaHandle = SaHandle(u32::MAX);
}

const EMPTY: u32 = u32::MAX;

/// One slot of an [`Index`]: key and value side by side, so that a probe reads one cache
/// line (with separate key and value arrays, a lookup at 1,000,000 SAs paid two misses before
/// it reached the SA).
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u32,
    val: u32,
}

const VACANT: Entry = Entry { key: 0, val: EMPTY };

/// Bytes of one slot in [`Slots`]: the key, then the value complemented, so that zeroed
/// memory (fresh anonymous pages) is all [`VACANT`] without being written.
const SLOT: usize = 8;

/// Indexes at least this large (2 MiB, one huge page; 131,072 SAs) live in a mapping of
/// their own advised to huge pages: at a million SAs a lookup's probe otherwise missed the
/// TLB as often as the caches (the index is 16 MiB, 4,096 pages of 4 KiB; 8 huge pages).
const HUGE: usize = 2 << 20;

/// The memory of an index's slots.
enum Slots {
    Heap(Box<[u8]>),
    /// Anonymous memory with `madvise(MADV_HUGEPAGE)`; the kernel backs it with 2 MiB pages
    /// where it can (transparent huge pages in `madvise` or `always` mode), with 4 KiB ones
    /// otherwise.
    Mapped(memmap2::MmapMut),
}

impl core::fmt::Debug for Slots {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self {
            Slots::Heap(_) => "heap",
            Slots::Mapped(_) => "mapped",
        };
        write!(f, "Slots({} slots, {kind})", self.len())
    }
}

impl Slots {
    fn new(n: usize) -> Slots {
        let len = n * SLOT;
        if len >= HUGE
            && let Ok(m) = memmap2::MmapMut::map_anon(len)
        {
            // a hint: refused (THP off), the mapping works on small pages
            let _ = m.advise(memmap2::Advice::HugePage);
            return Slots::Mapped(m);
        }
        Slots::Heap(vec![0; len].into_boxed_slice())
    }

    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        match self {
            Slots::Heap(b) => b,
            Slots::Mapped(m) => m,
        }
    }

    #[inline(always)]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Slots::Heap(b) => b,
            Slots::Mapped(m) => m,
        }
    }

    /// Slot count (a power of two).
    #[inline(always)]
    fn len(&self) -> usize {
        self.bytes().len() / SLOT
    }

    /// Slot `i`; [`VACANT`] past the end (never reached: callers mask `i`).
    #[inline(always)]
    fn get(&self, i: usize) -> Entry {
        match self.bytes().as_chunks::<SLOT>().0.get(i) {
            Some(&[a, b, c, d, e, f, g, h]) => Entry {
                key: u32::from_ne_bytes([a, b, c, d]),
                val: !u32::from_ne_bytes([e, f, g, h]),
            },
            None => VACANT,
        }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, e: Entry) {
        if let Some(s) = self.bytes_mut().as_chunks_mut::<SLOT>().0.get_mut(i) {
            s[..4].copy_from_slice(&e.key.to_ne_bytes());
            s[4..].copy_from_slice(&(!e.val).to_ne_bytes());
        }
    }
}

/// Open-addressing multimap u32 → handle.
#[derive(Debug)]
struct Index {
    slots: Slots,
    len: usize,
    shift: u32,
}

impl Index {
    fn new(cap: usize) -> Self {
        let n = (cap.max(8) * 2).next_power_of_two();
        Index {
            slots: Slots::new(n),
            len: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    #[inline(always)]
    fn slot(&self, key: u32) -> usize {
        // Fibonacci hashing: SPIs may be random (IKE) or sequential (manual keys).
        ((u64::from(key) ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    fn insert(&mut self, key: u32, val: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        while self.slots.get(i).val != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots.set(i, Entry { key, val });
        self.len += 1;
    }

    fn grow(&mut self) {
        let mut bigger = Index::new(self.slots.len());
        for i in 0..self.slots.len() {
            let e = self.slots.get(i);
            if e.val != EMPTY {
                bigger.insert(e.key, e.val);
            }
        }
        *self = bigger;
    }

    /// First value stored under `key` for which `pred` holds.
    #[inline(always)]
    fn find(&self, key: u32, mut pred: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let e = self.slots.get(i);
            if e.val == EMPTY {
                return None;
            }
            if e.key == key && pred(e.val) {
                return Some(e.val);
            }
            i = (i + 1) & mask;
        }
    }

    fn remove(&mut self, key: u32, val: u32) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let e = self.slots.get(i);
            if e.val == EMPTY {
                return false;
            }
            if e.key == key && e.val == val {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift deletion keeps probe sequences intact without tombstones.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let e = self.slots.get(j);
            if e.val == EMPTY {
                break;
            }
            let home = self.slot(e.key);
            // move j into the hole if its home is not within (hole, j]
            let dist_home = j.wrapping_sub(home) & mask;
            let dist_hole = j.wrapping_sub(hole) & mask;
            if dist_home >= dist_hole {
                self.slots.set(hole, e);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots.set(hole, VACANT);
        self.len -= 1;
        true
    }

    fn set_unique(&mut self, key: u32, val: u32) {
        if let Some(old) = self.find(key, |_| true) {
            self.remove(key, old);
        }
        self.insert(key, val);
    }

    fn bytes(&self) -> usize {
        self.slots.len() * SLOT
    }
}

/// The SAD of one worker.
#[derive(Debug)]
pub struct SaTable {
    slots: Vec<Option<Sa>>,
    free: Vec<u32>,
    by_spi: [Index; 2],
    out_by_reqid: Index,
    /// reqid → every outbound SA of it: the successor when the current one goes, without a
    /// walk over the slots (a reload replacing 10,000 SA pairs made that walk quadratic).
    out_all: Index,
    count: usize,
    /// Outbound SAs counted by [`Sa::max_overhead`] (the index), for
    /// [`max_overhead`](SaTable::max_overhead) without a walk over the SAs.
    overheads: Box<[u32; OVERHEAD_SLOTS]>,
    /// The highest index of `overheads` with a count.
    max_overhead: usize,
}

/// One more than the most any SA adds (an ESP layer: [`crate::esp::MAX_OVERHEAD`]).
const OVERHEAD_SLOTS: usize = 128;

impl Default for SaTable {
    fn default() -> Self {
        Self::with_capacity(16)
    }
}

/// What tells SAs of one direction and SPI apart: the gateway's own address for an inbound
/// SA (RFC 4301 §4.1: lookup by SPI and destination), the peer's for an outbound one (the
/// peer chose the SPI, and two peers may choose the same one). `None`: any.
pub fn sa_address(dir: Direction, local: Option<IpAddr>, remote: Option<IpAddr>) -> Option<IpAddr> {
    match dir {
        Direction::Inbound => local,
        Direction::Outbound => remote,
    }
}

/// Which SA a management operation means: direction, SPI and [`sa_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaKey {
    pub dir: Direction,
    pub spi: u32,
    pub addr: Option<IpAddr>,
}

impl SaKey {
    pub fn of_config(c: &SaConfig) -> SaKey {
        SaKey {
            dir: c.direction,
            spi: c.spi,
            addr: sa_address(c.direction, c.local, c.remote),
        }
    }

    pub fn of(sa: &Sa) -> SaKey {
        SaKey {
            dir: sa.dir,
            spi: sa.spi,
            addr: sa_address(sa.dir, sa.info.local, sa.info.remote),
        }
    }
}

/// [`sa_address`] of an installed SA, as an index key.
fn address_key(s: &Sa) -> Option<(bool, u128)> {
    match s.dir {
        Direction::Inbound => s.local_key(),
        Direction::Outbound => ip_key(s.info.remote),
    }
}

fn ip_key(a: Option<IpAddr>) -> Option<(bool, u128)> {
    a.map(ip_u128)
}

impl SaTable {
    /// A table that holds `n` SAs before its indexes grow.
    pub fn with_capacity(n: usize) -> Self {
        SaTable {
            slots: Vec::with_capacity(n),
            free: vec![],
            by_spi: [Index::new(n), Index::new(n)],
            out_by_reqid: Index::new(n),
            out_all: Index::new(n),
            count: 0,
            overheads: Box::new([0; OVERHEAD_SLOTS]),
            max_overhead: 0,
        }
    }

    /// The most bytes one outbound SA of this table adds to a packet (0 with none).
    #[inline]
    pub fn max_overhead(&self) -> usize {
        self.max_overhead
    }

    fn count_overhead(&mut self, sa: &Sa, add: bool) {
        if sa.dir != Direction::Outbound {
            return;
        }
        let o = sa.max_overhead().min(OVERHEAD_SLOTS - 1);
        if add {
            self.overheads[o] += 1;
            self.max_overhead = self.max_overhead.max(o);
        } else {
            self.overheads[o] = self.overheads[o].saturating_sub(1);
            while self.max_overhead > 0 && self.overheads[self.max_overhead] == 0 {
                self.max_overhead -= 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Build and install an SA.
    pub fn install(&mut self, cfg: &SaConfig, now: Timestamp) -> Result<SaHandle, SaError> {
        self.check_duplicate(
            cfg.direction,
            cfg.spi,
            ip_key(sa_address(cfg.direction, cfg.local, cfg.remote)),
        )?;
        self.insert(Sa::new(cfg, now)?)
    }

    /// An SA of this direction and SPI whose [`sa_address`] is the same, or either is any,
    /// is installed already.
    fn check_duplicate(
        &self,
        dir: Direction,
        spi: u32,
        addr: Option<(bool, u128)>,
    ) -> Result<(), SaError> {
        let dup = self.by_spi[dir.index()]
            .find(spi, |h| {
                self.slots
                    .get(h as usize)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| {
                        let k = address_key(s);
                        k == addr || k.is_none() || addr.is_none()
                    })
            })
            .is_some();
        if dup {
            Err(SaError::Duplicate { spi, dir })
        } else {
            Ok(())
        }
    }

    /// Install an SA built elsewhere (the control thread builds SAs so that key expansion
    /// never runs on a worker).
    pub fn insert(&mut self, sa: Sa) -> Result<SaHandle, SaError> {
        self.insert_as(sa, true)
    }

    /// [`insert`](SaTable::insert); an outbound SA becomes its reqid's current one only if
    /// `current`, or if the reqid has none (a replacement of an SA that was not current
    /// must not take the traffic over).
    pub fn insert_as(&mut self, sa: Sa, current: bool) -> Result<SaHandle, SaError> {
        self.check_duplicate(sa.dir, sa.spi, address_key(&sa))?;
        if self.count >= EMPTY as usize - 1 {
            return Err(SaError::Full(self.count));
        }
        let (dir, spi, reqid) = (sa.dir, sa.spi, sa.reqid);
        self.count_overhead(&sa, true);
        let h = match self.free.pop() {
            Some(h) => {
                self.slots[h as usize] = Some(sa);
                h
            }
            None => {
                self.slots.push(Some(sa));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_spi[dir.index()].insert(spi, h);
        if dir == Direction::Outbound {
            self.out_all.insert(reqid, h);
            if current || self.lookup_outbound(reqid).is_none() {
                self.out_by_reqid.set_unique(reqid, h);
            }
        }
        self.count += 1;
        Ok(SaHandle(h))
    }

    /// Find an SA by direction, SPI and (optionally) [`sa_address`]: the local address of an
    /// inbound SA, the peer's of an outbound one.
    pub fn find(&self, dir: Direction, spi: u32, addr: Option<IpAddr>) -> Option<SaHandle> {
        let want = ip_key(addr);
        self.by_spi[dir.index()]
            .find(spi, |h| {
                self.slots[h as usize].as_ref().is_some_and(|s| {
                    let k = address_key(s);
                    want.is_none() || k.is_none() || k == want
                })
            })
            .map(SaHandle)
    }

    /// Remove an SA, returning it (with its final counters).
    pub fn remove(&mut self, h: SaHandle) -> Option<Sa> {
        let sa = self.slots.get_mut(h.0 as usize)?.take()?;
        self.count_overhead(&sa, false);
        self.by_spi[sa.dir.index()].remove(sa.spi, h.0);
        if sa.dir == Direction::Outbound {
            self.out_all.remove(sa.reqid, h.0);
        }
        if sa.dir == Direction::Outbound && self.out_by_reqid.find(sa.reqid, |v| v == h.0).is_some()
        {
            self.out_by_reqid.remove(sa.reqid, h.0);
            // Fall back to another outbound SA of the same reqid: the one in the highest slot.
            let mut next = None;
            self.out_all.find(sa.reqid, |v| {
                next = next.max(Some(v));
                false
            });
            if let Some(i) = next {
                self.out_by_reqid.insert(sa.reqid, i);
            }
        }
        self.free.push(h.0);
        self.count -= 1;
        Some(sa)
    }

    /// Inbound SAD lookup by SPI and destination.
    #[inline(always)]
    pub fn lookup_inbound(&self, spi: u32, v6: bool, dst: u128) -> Option<SaHandle> {
        let slots = &self.slots;
        self.by_spi[0]
            .find(spi, |h| {
                slots
                    .get(h as usize)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| s.accepts_dst(v6, dst))
            })
            .map(SaHandle)
    }

    /// Inbound SAD lookup returning the SA itself.
    #[inline(always)]
    pub fn lookup_inbound_mut(
        &mut self,
        spi: u32,
        v6: bool,
        dst: u128,
    ) -> Option<(SaHandle, &mut Sa)> {
        let h = self.lookup_inbound(spi, v6, dst)?;
        Some((h, self.slots.get_mut(h.0 as usize)?.as_mut()?))
    }

    /// The current outbound SA of a reqid.
    #[inline(always)]
    pub fn lookup_outbound(&self, reqid: u32) -> Option<SaHandle> {
        self.out_by_reqid.find(reqid, |_| true).map(SaHandle)
    }

    #[inline(always)]
    pub fn get(&self, h: SaHandle) -> Option<&Sa> {
        self.slots.get(h.0 as usize)?.as_ref()
    }

    #[inline(always)]
    pub fn get_mut(&mut self, h: SaHandle) -> Option<&mut Sa> {
        self.slots.get_mut(h.0 as usize)?.as_mut()
    }

    /// Handles run from 0 to this (exclusive); some may be free.
    pub fn slots(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn iter(&self) -> impl Iterator<Item = (SaHandle, &Sa)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (SaHandle(i as u32), s)))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Sa> {
        self.slots.iter_mut().filter_map(Option::as_mut)
    }

    /// Slot count (occupied or free), for the engine's timer sweep.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes used by the slab and indexes (not counting what each SA owns on the heap).
    pub fn index_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<Option<Sa>>()
            + self.by_spi[0].bytes()
            + self.by_spi[1].bytes()
            + self.out_by_reqid.bytes()
            + self.out_all.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AuthAlg, EncAlg};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn cfg(spi: u32, dir: Direction, local: &str) -> SaConfig {
        let mut c = SaConfig::tunnel(
            spi,
            dir,
            local.parse().unwrap(),
            "10.9.9.9".parse().unwrap(),
            EncAlg::AesGcm128,
            &[7; 20],
            AuthAlg::None,
            &[],
        );
        c.reqid = spi % 7;
        c
    }

    #[test]
    fn spi_and_destination() {
        let mut t = SaTable::default();
        let a = t
            .install(
                &cfg(0x1000, Direction::Inbound, "10.0.0.1"),
                Timestamp::ZERO,
            )
            .unwrap();
        let b = t
            .install(
                &cfg(0x1000, Direction::Inbound, "10.0.0.2"),
                Timestamp::ZERO,
            )
            .unwrap();
        assert!(matches!(
            t.install(
                &cfg(0x1000, Direction::Inbound, "10.0.0.2"),
                Timestamp::ZERO
            ),
            Err(SaError::Duplicate { .. })
        ));
        assert_eq!(t.lookup_inbound(0x1000, false, 0x0a00_0001), Some(a));
        assert_eq!(t.lookup_inbound(0x1000, false, 0x0a00_0002), Some(b));
        assert_eq!(t.lookup_inbound(0x1000, false, 0x0a00_0003), None);
        assert_eq!(t.lookup_inbound(0x1001, false, 0x0a00_0001), None);
        // the same SPI outbound is a different SA
        t.install(
            &cfg(0x1000, Direction::Outbound, "10.0.0.1"),
            Timestamp::ZERO,
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        t.remove(a).unwrap();
        assert_eq!(t.lookup_inbound(0x1000, false, 0x0a00_0001), None);
        assert_eq!(t.lookup_inbound(0x1000, false, 0x0a00_0002), Some(b));
    }

    #[test]
    fn outbound_reqid_follows_rekey() {
        let mut t = SaTable::default();
        let mut c = cfg(0x2000, Direction::Outbound, "10.0.0.1");
        c.reqid = 9;
        let old = t.install(&c, Timestamp::ZERO).unwrap();
        c.spi = 0x2001;
        let mid = t.install(&c, Timestamp::ZERO).unwrap();
        // another reqid's SA, in a higher slot: never a successor for reqid 9
        let mut o = cfg(0x3000, Direction::Outbound, "10.0.0.1");
        o.reqid = 10;
        let other = t.install(&o, Timestamp::ZERO).unwrap();
        c.spi = 0x2002;
        let new = t.install(&c, Timestamp::ZERO).unwrap();
        assert_eq!(t.lookup_outbound(9), Some(new));
        t.remove(new);
        // the successor: the remaining SA of the reqid in the highest slot
        assert_eq!(t.lookup_outbound(9), Some(mid));
        t.remove(mid);
        assert_eq!(t.lookup_outbound(9), Some(old));
        t.remove(old);
        assert_eq!(t.lookup_outbound(9), None);
        assert_eq!(t.lookup_outbound(10), Some(other));
        // removing an SA that is not current leaves the current one
        c.spi = 0x2003;
        let a = t.install(&c, Timestamp::ZERO).unwrap();
        c.spi = 0x2004;
        let b = t.install(&c, Timestamp::ZERO).unwrap();
        t.remove(a);
        assert_eq!(t.lookup_outbound(9), Some(b));
    }

    /// An index that grows past [`HUGE`] moves into a mapping of its own (zeroed pages read as
    /// vacant slots) and keeps every entry through growth and deletion.
    #[test]
    fn large_indexes_are_mapped_and_keep_their_entries() {
        let mut idx = Index::new(4);
        let n = 140_000u32;
        let key = |i: u32| i.wrapping_mul(2_654_435_761) | 256;
        for i in 0..n {
            idx.insert(key(i), i);
        }
        assert!(
            matches!(idx.slots, Slots::Mapped(_)),
            "{} bytes",
            idx.bytes()
        );
        assert!(idx.bytes() >= HUGE);
        for i in (0..n).step_by(3) {
            assert!(idx.remove(key(i), i));
        }
        for i in 0..n {
            let want = (i % 3 != 0).then_some(i);
            assert_eq!(idx.find(key(i), |v| v == i), want, "entry {i}");
        }
        assert_eq!(idx.len, (n - n.div_ceil(3)) as usize);
        // a fresh large index is all vacant without having been written
        let fresh = Index::new(HUGE / SLOT);
        assert!(matches!(fresh.slots, Slots::Mapped(_)));
        assert_eq!(fresh.find(key(1), |_| true), None);
        assert_eq!(Index::new(16).find(key(1), |_| true), None);
    }

    proptest! {
        /// Random installs and removals against a HashMap model: the index never loses or
        /// invents an SA, including across growth and backward-shift deletion.
        #[test]
        fn index_matches_model(ops in proptest::collection::vec((0u32..300, any::<bool>()), 1..600)) {
            let mut idx = Index::new(4);
            let mut model: HashMap<u32, Vec<u32>> = HashMap::new();
            for (n, (k, add)) in ops.into_iter().enumerate() {
                let key = k.wrapping_mul(2654435761) | 256;
                if add {
                    idx.insert(key, n as u32);
                    model.entry(key).or_default().push(n as u32);
                } else if let Some(v) = model.get_mut(&key).and_then(|v| v.pop()) {
                    prop_assert!(idx.remove(key, v));
                }
                for (k, vs) in &model {
                    for v in vs {
                        prop_assert_eq!(idx.find(*k, |x| x == *v), Some(*v));
                    }
                }
                prop_assert_eq!(idx.len, model.values().map(|v| v.len()).sum::<usize>());
            }
        }
    }
}
