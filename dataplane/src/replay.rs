//! Anti-replay window (RFC 4303 §3.4.3) with extended sequence numbers (RFC 4303 §2.2.1 and
//! Appendix A).
//!
//! The bitmap is a ring of 64-bit blocks (the layout of RFC 6479): advancing the window clears
//! whole blocks instead of shifting bits, so check and commit cost O(1) however large the
//! window is (up to [`MAX_WINDOW`] packets). The receiver checks *before* verifying the ICV
//! and commits only *after* it verified (RFC 4303 §3.4.3), so forged packets cannot move the
//! window.

pub mod shared;
pub use shared::SharedReplayWindow;

use std::sync::Arc;

/// Largest configurable window, in packets.
pub const MAX_WINDOW: u32 = 65536;
/// Window used when the configuration says nothing (RFC 4303 §3.4.3: 32 minimum, 64 default).
pub const DEFAULT_WINDOW: u32 = 64;

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Left of the window (or, with ESN, in no plausible epoch).
    Old,
    /// Already received.
    Duplicate,
}

/// The full sequence number of `seq_lo` against a window of `size` whose highest number is
/// `top` (RFC 4303 Appendix A2.2 with ESN; the low bits alone without).
#[inline]
fn infer(top: u64, size: u32, esn: bool, seq_lo: u32) -> Option<u64> {
    if !esn {
        return Some(u64::from(seq_lo));
    }
    // ESN needs a window to infer against; a zero window is refused at configuration.
    let w = u64::from(size.max(1));
    let tl = top & 0xffff_ffff;
    let th = top >> 32;
    let s = u64::from(seq_lo);
    let seqh = if tl >= w - 1 {
        // Case A: the window lies within one epoch.
        if s >= tl - (w - 1) { th } else { th + 1 }
    } else {
        // Case B: the window spans the previous epoch's end.
        let left = (tl + (1 << 32) - (w - 1)) & 0xffff_ffff;
        if s >= left { th.checked_sub(1)? } else { th }
    };
    if seqh > 0xffff_ffff {
        return None;
    }
    Some((seqh << 32) | s)
}

/// Whether `seq` is refused as old before its bits are looked at: 0 (never sent, RFC 4303
/// §3.3.3), or at least `size` below `top`.
#[inline]
fn left_of(top: u64, size: u32, seq: u64) -> bool {
    // written as a difference so that it cannot overflow near 2^64
    seq == 0 || (seq <= top && top - seq >= u64::from(size))
}

/// The receive side of one SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Window size in packets; 0 disables replay checking.
    size: u32,
    esn: bool,
    /// Highest authenticated sequence number received (0: none yet).
    top: u64,
    /// Ring of blocks; bit `s % 64` of block `(s / 64) % len` stands for sequence number `s`.
    blocks: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (0 disables checking; `size` must be ≤ [`MAX_WINDOW`]).
    pub fn new(size: u32, esn: bool) -> Self {
        let size = size.min(MAX_WINDOW);
        let n = if size == 0 {
            0
        } else {
            ((size as usize).div_ceil(64) + 1).next_power_of_two()
        };
        Self {
            size,
            esn,
            top: 0,
            blocks: vec![0; n].into_boxed_slice(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Highest authenticated sequence number received so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Bytes of heap this window uses.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.len() * 8
    }

    /// The full sequence number of a received packet: the low 32 bits as sent, plus, with ESN,
    /// the high 32 bits inferred as in RFC 4303 Appendix A2.2. `None` if the number can only
    /// be older than the window.
    #[inline]
    pub fn infer(&self, seq_lo: u32) -> Option<u64> {
        infer(self.top, self.size, self.esn, seq_lo)
    }

    /// Whether `seq` may be accepted (before the ICV check).
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if self.size == 0 {
            return Ok(());
        }
        if left_of(self.top, self.size, seq) {
            return Err(ReplayError::Old);
        }
        if seq > self.top {
            return Ok(());
        }
        let mask = self.blocks.len() - 1;
        let block = self.blocks[(seq >> 6) as usize & mask];
        if block & (1 << (seq & 63)) != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Record `seq` as received (after the ICV verified). Must follow a successful `check`.
    #[inline]
    pub fn commit(&mut self, seq: u64) {
        if self.size == 0 {
            self.top = self.top.max(seq);
            return;
        }
        let mask = self.blocks.len() - 1;
        if seq > self.top {
            let old_block = self.top >> 6;
            let new_block = seq >> 6;
            // Clear the blocks the window slides over (at most the whole ring).
            let steps = (new_block - old_block).min(self.blocks.len() as u64);
            for i in 1..=steps {
                self.blocks[((old_block + i) as usize) & mask] = 0;
            }
            self.top = seq;
        }
        self.blocks[(seq >> 6) as usize & mask] |= 1 << (seq & 63);
    }

    /// How many of the `size` sequence numbers at and below `top` were received.
    pub fn received_in_window(&self) -> u32 {
        if self.size == 0 || self.top == 0 {
            return 0;
        }
        let lo = self.top.saturating_sub(u64::from(self.size) - 1).max(1);
        (lo..=self.top)
            .filter(|&s| self.check(s) == Err(ReplayError::Duplicate))
            .count() as u32
    }
}

/// An SA's receive window: its own, or one shared by the copies of the SA that several
/// workers hold (an inbound SA any worker may receive).
#[derive(Debug, Clone)]
pub enum Replay {
    Own(ReplayWindow),
    Shared(Arc<SharedReplayWindow>),
}

impl Replay {
    pub fn size(&self) -> u32 {
        match self {
            Replay::Own(w) => w.size(),
            Replay::Shared(w) => w.size(),
        }
    }

    pub fn esn(&self) -> bool {
        match self {
            Replay::Own(w) => w.esn(),
            Replay::Shared(w) => w.esn(),
        }
    }

    pub fn top(&self) -> u64 {
        match self {
            Replay::Own(w) => w.top(),
            Replay::Shared(w) => w.top(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Replay::Own(w) => w.heap_bytes(),
            Replay::Shared(w) => w.heap_bytes(),
        }
    }

    #[inline]
    pub fn infer(&self, seq_lo: u32) -> Option<u64> {
        match self {
            Replay::Own(w) => w.infer(seq_lo),
            Replay::Shared(w) => w.infer(seq_lo),
        }
    }

    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        match self {
            Replay::Own(w) => w.check(seq),
            Replay::Shared(w) => w.check(seq),
        }
    }

    /// Record `seq` (after the ICV verified and [`check`](Replay::check) passed). A shared
    /// window may still refuse it: another worker took the same number meanwhile.
    #[inline]
    pub fn commit(&mut self, seq: u64) -> Result<(), ReplayError> {
        match self {
            Replay::Own(w) => {
                w.commit(seq);
                Ok(())
            }
            Replay::Shared(w) => w.commit(seq),
        }
    }

    pub fn received_in_window(&self) -> u32 {
        match self {
            Replay::Own(w) => w.received_in_window(),
            Replay::Shared(w) => w.received_in_window(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The obvious model: everything seen, and the highest.
    struct Naive {
        w: u64,
        seen: HashSet<u64>,
        top: u64,
    }

    impl Naive {
        fn check(&self, s: u64) -> Result<(), ReplayError> {
            if s == 0 || (s <= self.top && s + self.w <= self.top) {
                Err(ReplayError::Old)
            } else if self.seen.contains(&s) {
                Err(ReplayError::Duplicate)
            } else {
                Ok(())
            }
        }
        fn commit(&mut self, s: u64) {
            self.seen.insert(s);
            self.top = self.top.max(s);
        }
    }

    #[test]
    fn in_order_out_of_order_duplicates() {
        let mut w = ReplayWindow::new(64, false);
        assert_eq!(w.check(0), Err(ReplayError::Old));
        for s in 1..=100 {
            assert_eq!(w.check(s), Ok(()));
            w.commit(s);
        }
        assert_eq!(w.check(100), Err(ReplayError::Duplicate));
        assert_eq!(w.check(37), Err(ReplayError::Duplicate));
        assert_eq!(w.check(36), Err(ReplayError::Old));
        w.commit(200);
        assert_eq!(w.check(150), Ok(()));
        assert_eq!(w.check(136), Err(ReplayError::Old));
        assert_eq!(w.check(137), Ok(()));
        assert_eq!(w.received_in_window(), 1);
    }

    #[test]
    fn zero_window_accepts_everything() {
        let mut w = ReplayWindow::new(0, false);
        w.commit(5);
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(0), Ok(()));
        assert_eq!(w.heap_bytes(), 0);
    }

    #[test]
    fn large_window_memory() {
        let w = ReplayWindow::new(4096, false);
        // 4096 / 64 + 1 = 65 blocks, rounded up to 128
        assert_eq!(w.heap_bytes(), 128 * 8);
    }

    #[test]
    fn esn_inference_appendix_a() {
        let mut w = ReplayWindow::new(64, true);
        // Before anything: low numbers are epoch 0; numbers just below 2^32 would be epoch -1.
        assert_eq!(w.infer(1), Some(1));
        assert_eq!(w.infer(u32::MAX), None);
        // Move the window to the end of epoch 0.
        w.commit(0xffff_fff0);
        assert_eq!(w.infer(0xffff_fff5), Some(0xffff_fff5));
        assert_eq!(w.infer(3), Some((1 << 32) | 3)); // wrapped: next epoch
        w.commit((1 << 32) | 3);
        // Case B: Tl = 3 < W - 1: numbers near 2^32 belong to epoch 0
        assert_eq!(w.infer(0xffff_fff8), Some(0xffff_fff8));
        assert_eq!(w.check(0xffff_fff8), Ok(()));
        assert_eq!(w.check(0xffff_fff0), Err(ReplayError::Duplicate));
        assert_eq!(w.infer(10), Some((1 << 32) | 10));
        // Case A far into epoch 1: a small number is in epoch 2
        w.commit((1 << 32) | 1000);
        assert_eq!(w.infer(5), Some((2 << 32) | 5));
        assert_eq!(w.infer(990), Some((1 << 32) | 990));
    }

    #[test]
    fn no_overflow_at_the_end_of_the_esn_space() {
        let mut w = ReplayWindow::new(64, true);
        w.commit(u64::MAX - 1);
        assert_eq!(w.infer(u32::MAX), Some(u64::MAX));
        assert_eq!(w.check(u64::MAX), Ok(()));
        w.commit(u64::MAX);
        assert_eq!(w.check(u64::MAX), Err(ReplayError::Duplicate));
        assert_eq!(w.check(u64::MAX - 64), Err(ReplayError::Old));
        // nothing exists after 2^64 - 1: a small low half cannot be a next epoch
        assert_eq!(w.infer(5), None);
    }

    proptest! {
        #[test]
        fn matches_naive_model(
            size in prop_oneof![Just(32u32), Just(64), Just(100), Just(1024), Just(4096)],
            ops in proptest::collection::vec((0u64..6000, any::<bool>()), 1..400),
        ) {
            let mut w = ReplayWindow::new(size, false);
            let mut m = Naive { w: u64::from(size), seen: HashSet::new(), top: 0 };
            for (s, icv_ok) in ops {
                let got = w.check(s);
                prop_assert_eq!(got, m.check(s), "seq {} top {}", s, m.top);
                // commit only what would have passed the ICV too
                if got.is_ok() && icv_ok {
                    w.commit(s);
                    m.commit(s);
                }
            }
        }

        /// ESN: the sender's 64-bit counter crosses 2^32; the receiver sees only the low bits
        /// of a reordered, duplicated stream and must infer the same full numbers the model
        /// knows, and make the same decisions.
        #[test]
        fn esn_wrap_matches_model(
            start in (1u64 << 32) - 3000..(1u64 << 32) - 10,
            size in prop_oneof![Just(64u32), Just(128), Just(1024)],
            jitter in proptest::collection::vec(0u64..200, 200..600),
        ) {
            let mut w = ReplayWindow::new(size, true);
            let mut m = Naive { w: u64::from(size), seen: HashSet::new(), top: 0 };
            // Prime the window as if the stream had been flowing.
            w.commit(start);
            m.commit(start);
            for (i, j) in jitter.iter().enumerate() {
                // sent numbers move forward; arrivals are delayed by up to `j` packets
                let sent = start + i as u64 * 7;
                let s = sent.saturating_sub(*j).max(1);
                let inferred = w.infer(s as u32);
                let expect = m.check(s);
                match inferred {
                    Some(full) if full == s => {
                        prop_assert_eq!(w.check(full), expect);
                        if expect.is_ok() { w.commit(full); m.commit(full); }
                    }
                    // A wrong inference may only happen for numbers the model rejects as old.
                    _ => prop_assert_eq!(expect, Err(ReplayError::Old), "seq {:#x} inferred {:?}", s, inferred),
                }
            }
        }
    }
}
