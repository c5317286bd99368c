//! A worker's cache of SPD answers by packet key, so that the packets of a flow after the
//! first skip the classifier (VPP's SPD flow cache does the same for its IPsec output path).
//!
//! Direct-mapped: a key hashes to one slot, which holds the last key seen there and its
//! first-match answer. The answer for a key depends on the compiled SPD only, so a hit is
//! exact; the owner empties the cache whenever it installs another SPD (in O(1): a slot
//! answers only for the cache's current epoch). A collision costs a
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
    /// The cache's epoch when the slot was filled: valid only in that epoch.
    epoch: u32,
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
    epoch: 0,
};

/// The cache; see the module documentation.
#[derive(Debug, Clone)]
pub struct FlowCache {
    slots: Box<[Slot]>,
    epoch: u32,
    hits: u64,
    misses: u64,
}

impl Default for FlowCache {
    fn default() -> Self {
        Self {
            slots: vec![EMPTY; SLOTS].into_boxed_slice(),
            epoch: 0,
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
        if s.epoch == self.epoch && s.dir == Some(dir) && s.key == *k {
            self.hits += 1;
            return spd.resolve(dir, s.first);
        }
        self.misses += 1;
        let first = spd.first_match(dir, k);
        *s = Slot {
            key: *k,
            dir: Some(dir),
            first,
            epoch: self.epoch,
        };
        spd.resolve(dir, first)
    }

    /// Forget every answer (a new SPD is in force).
    pub fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // after 2^32 clears an old slot's epoch could come round again
            self.slots.fill(EMPTY);
        }
    }

    /// Lookups answered from the cache and lookups that went to the classifier.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spd::{Action, Policy, SaBundle, Selector, SpdConfig};
    use crate::wire::IpProtocol;
    use std::net::IpAddr;

    fn spd(action: Action) -> Spd {
        SpdConfig {
            outbound: vec![Policy {
                name: "p".into(),
                selector: Selector::ANY,
                action,
            }],
            ..SpdConfig::default()
        }
        .compile()
        .unwrap()
    }

    /// After `clear` (a new SPD), no slot answers from before, however many clears there
    /// were — the epoch's wrap included.
    #[test]
    fn a_cleared_cache_answers_from_the_new_spd() {
        let (bypass, protect) = (
            spd(Action::Bypass),
            spd(Action::Protect(SaBundle::single(3))),
        );
        let k = PacketKey::describe(
            Some(IpProtocol::UDP),
            IpAddr::from([10, 0, 0, 1]),
            Some(1),
            IpAddr::from([10, 0, 0, 2]),
            Some(2),
        );
        let mut c = FlowCache::default();
        let action = |c: &mut FlowCache, s: &Spd| match c.lookup(s, Direction::Outbound, &k) {
            Lookup::Policy { action, .. } => *action,
            Lookup::Default { .. } => panic!("the policy matches"),
        };
        assert_eq!(action(&mut c, &bypass), Action::Bypass);
        assert_eq!(action(&mut c, &bypass), Action::Bypass);
        assert_eq!(c.counts(), (1, 1), "the second lookup was a hit");
        // the same slot, another SPD: without a clear it would answer from the old one...
        c.clear();
        assert_eq!(
            action(&mut c, &protect),
            Action::Protect(SaBundle::single(3))
        );
        assert_eq!(c.counts(), (1, 2), "a miss after the clear");
        // ...and at the epoch's wrap the slots are emptied for real: a slot filled in epoch
        // 0, untouched through 2^32 - 1 clears, must not answer in the next epoch 0
        let mut c = FlowCache::default();
        assert_eq!(action(&mut c, &bypass), Action::Bypass);
        c.epoch = u32::MAX;
        c.clear();
        assert_eq!(c.epoch, 0);
        let (h, m) = c.counts();
        assert_eq!(
            action(&mut c, &protect),
            Action::Protect(SaBundle::single(3))
        );
        assert_eq!(c.counts(), (h, m + 1), "no stale hit after the wrap");
    }
}
