//! A worker's cache of SPD answers by packet key, so that the packets of a flow after the
//! first skip the classifier (VPP's SPD flow cache does the same for its IPsec output path).
//!
//! Direct-mapped: a key hashes to one slot, which holds the last key seen there and its
//! first-match answer. The answer for a key depends on the compiled SPD only, so a hit is
//! exact; the owner empties the cache whenever it installs another SPD. A collision costs a
//! classifier lookup and replaces the slot, nothing else, so traffic chosen to collide makes
//! lookups no slower than without the cache. One cache per worker: no sharing, no locks.

use super::{Direction, Lookup, PacketKey, Spd};

/// Slots in a worker's cache (a power of two).
pub const SLOTS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: PacketKey,
    /// `None`: the slot is empty.
    dir: Option<Direction>,
    first: Option<u32>,
}

const EMPTY: Slot = Slot {
    key: PacketKey {
        v6: false,
        src: 0,
        dst: 0,
        proto: 0,
        src_port: 0,
        dst_port: 0,
        dst_multicast: false,
    },
    dir: None,
    first: None,
};

/// The cache; see the module documentation.
#[derive(Debug, Clone)]
pub struct FlowCache {
    slots: Box<[Slot]>,
    hits: u64,
    misses: u64,
}

impl Default for FlowCache {
    fn default() -> Self {
        Self {
            slots: vec![EMPTY; SLOTS].into_boxed_slice(),
            hits: 0,
            misses: 0,
        }
    }
}

#[inline(always)]
fn slot_of(dir: Direction, k: &PacketKey) -> usize {
    let x = (k.src as u64)
        ^ ((k.src >> 64) as u64).rotate_left(17)
        ^ (k.dst as u64).rotate_left(29)
        ^ ((k.dst >> 64) as u64).rotate_left(47)
        ^ (u64::from(k.src_port) << 32 | u64::from(k.dst_port)).rotate_left(7)
        ^ u64::from(k.proto) << 56
        ^ dir.index() as u64;
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl FlowCache {
    /// [`Spd::lookup`], from the cache when this key was looked up last in its slot.
    #[inline]
    pub fn lookup<'a>(&mut self, spd: &'a Spd, dir: Direction, k: &PacketKey) -> Lookup<'a> {
        let i = slot_of(dir, k) & (SLOTS - 1);
        let Some(s) = self.slots.get_mut(i) else {
            return spd.lookup(dir, k);
        };
        if s.dir == Some(dir) && s.key == *k {
            self.hits += 1;
            return spd.resolve(dir, s.first);
        }
        self.misses += 1;
        let first = spd.first_match(dir, k);
        *s = Slot {
            key: *k,
            dir: Some(dir),
            first,
        };
        spd.resolve(dir, first)
    }

    /// Forget every answer (a new SPD is in force).
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
    }

    /// Lookups answered from the cache and lookups that went to the classifier.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}
