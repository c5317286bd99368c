//! An anti-replay window several workers use at once, without a lock: the inbound SA that
//! any worker may receive (RFC 9611's per-resource SAs arrive on whichever queue the NIC
//! picks).
//!
//! The window is a ring of 64-bit slots. A slot holds a *block* of [`BLOCK`] sequence
//! numbers: the block's number (`seq / BLOCK`, its low 48 bits) in the slot's high bits and
//! one bit per sequence number in the low [`BLOCK`] bits. Block `b` lives in slot
//! `b % slots`. Committing `seq` is one compare-and-swap on its slot:
//!
//! * the slot holds `seq`'s block: set the bit, or refuse a duplicate if it is set;
//! * the slot holds an older block: replace it by `seq`'s block with only this bit set
//!   (that is how the window slides: no separate clearing step that could race);
//! * the slot holds a newer block: `seq` is older than the window can remember: refuse.
//!
//! The highest number committed is kept beside, with `fetch_max`, for the window's left
//! edge and ESN inference. **No sequence number is ever accepted twice**: accepting `seq` sets
//! its bit in its block's slot; a slot's block only ever grows, so once set the bit is never
//! clear again while the slot holds that block, and once the slot moves on, `seq` is refused
//! as old. Races only make the window's edge fuzzy (a number just left of the edge may be
//! accepted once, if a newer commit has not reached `top` yet), never let a duplicate
//! through. The tests check this against a model, on threads, and under loom.

#[cfg(feature = "loom")]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(feature = "loom"))]
use std::sync::atomic::{AtomicU64, Ordering};

use super::{MAX_WINDOW, ReplayError, infer, left_of};

/// Sequence numbers per slot.
pub const BLOCK: u64 = 16;
const BLOCK_SHIFT: u32 = 4;
/// Block numbers are kept modulo 2^48: two blocks in one slot are compared by their
/// difference, which is unambiguous while they are fewer than 2^47 blocks (2^51 packets)
/// apart.
const TAG_BITS: u32 = 48;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// The receive side of one SA, shared by the workers that process it. Aligned to two cache
/// lines: windows of different SAs, allocated one after the other, must not share a line
/// that different workers write (false sharing cost 40 % of a worker's decryption rate).
#[derive(Debug)]
#[repr(align(128))]
pub struct SharedReplayWindow {
    /// Window size in packets; 0 disables replay checking.
    size: u32,
    esn: bool,
    /// Highest authenticated sequence number received (0: none yet).
    top: AtomicU64,
    /// The ring, in whole cache lines of [`PER_LINE`] slots (no other allocation's data
    /// shares them).
    lines: Box<[Line]>,
}

const PER_LINE: usize = 8;

#[derive(Debug)]
#[repr(align(64))]
struct Line([AtomicU64; PER_LINE]);

/// How a slot's block compares with a sequence number's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Same,
    Older,
    Newer,
}

fn age(slot: u64, block: u64) -> Age {
    // a slot without bits was never written (a commit always sets one): anything takes it
    if slot & ((1 << BLOCK) - 1) == 0 {
        return Age::Older;
    }
    let have = slot >> BLOCK;
    let d = block.wrapping_sub(have) & TAG_MASK;
    if d == 0 {
        Age::Same
    } else if d < 1 << (TAG_BITS - 1) {
        Age::Older
    } else {
        Age::Newer
    }
}

impl SharedReplayWindow {
    /// A window of `size` packets (0 disables checking; at most [`MAX_WINDOW`]).
    pub fn new(size: u32, esn: bool) -> Self {
        let size = size.min(MAX_WINDOW);
        let n = if size == 0 {
            0
        } else {
            // one block more than the window spans, so that a number inside the window
            // always finds its own block or an older one in its slot
            ((u64::from(size).div_ceil(BLOCK) + 1) as usize)
                .next_power_of_two()
                .max(PER_LINE)
        };
        SharedReplayWindow {
            size,
            esn,
            top: AtomicU64::new(0),
            lines: (0..n / PER_LINE)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
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
        self.top.load(Ordering::Acquire)
    }

    /// Bytes of heap this window uses.
    pub fn heap_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// As [`super::ReplayWindow::infer`], against the top seen now.
    #[inline]
    pub fn infer(&self, seq_lo: u32) -> Option<u64> {
        infer(self.top(), self.size, self.esn, seq_lo)
    }

    fn slot(&self, seq: u64) -> (&AtomicU64, u64, u64) {
        let block = seq >> BLOCK_SHIFT;
        let i = block as usize & (self.lines.len() * PER_LINE - 1);
        (
            &self.lines[i / PER_LINE].0[i % PER_LINE],
            block & TAG_MASK,
            1 << (seq & (BLOCK - 1)),
        )
    }

    /// Whether `seq` may be accepted (before the ICV check): a hint, [`commit`] decides.
    ///
    /// [`commit`]: SharedReplayWindow::commit
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if self.size == 0 {
            return Ok(());
        }
        if left_of(self.top(), self.size, seq) {
            return Err(ReplayError::Old);
        }
        let (slot, block, bit) = self.slot(seq);
        let v = slot.load(Ordering::Acquire);
        match age(v, block) {
            Age::Same if v & bit != 0 => Err(ReplayError::Duplicate),
            Age::Newer => Err(ReplayError::Old),
            _ => Ok(()),
        }
    }

    /// Record `seq` as received (after the ICV verified), unless another worker recorded it
    /// first or the window has passed it: then the packet must be dropped.
    #[inline]
    pub fn commit(&self, seq: u64) -> Result<(), ReplayError> {
        if self.size == 0 {
            self.raise_top(seq);
            return Ok(());
        }
        if left_of(self.top(), self.size, seq) {
            return Err(ReplayError::Old);
        }
        let (slot, block, bit) = self.slot(seq);
        let mut v = slot.load(Ordering::Acquire);
        loop {
            let new = match age(v, block) {
                Age::Same if v & bit != 0 => return Err(ReplayError::Duplicate),
                Age::Same => v | bit,
                Age::Older => (block << BLOCK) | bit,
                Age::Newer => return Err(ReplayError::Old),
            };
            match slot.compare_exchange_weak(v, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        self.raise_top(seq);
        Ok(())
    }

    /// `top = max(top, seq)`; a read first, so that a number below the top (reordered, or
    /// the window's other workers ahead) writes nothing to the shared line.
    #[inline]
    fn raise_top(&self, seq: u64) {
        if seq > self.top.load(Ordering::Relaxed) {
            self.top.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// How many of the `size` sequence numbers at and below `top` were received.
    pub fn received_in_window(&self) -> u32 {
        let top = self.top();
        if self.size == 0 || top == 0 {
            return 0;
        }
        let lo = top.saturating_sub(u64::from(self.size) - 1).max(1);
        (lo..=top)
            .filter(|&s| {
                let (slot, block, bit) = self.slot(s);
                let v = slot.load(Ordering::Acquire);
                age(v, block) == Age::Same && v & bit != 0
            })
            .count() as u32
    }

    /// A window that continues `top` (an SA replacing one that had another window size).
    pub fn starting_at(size: u32, esn: bool, top: u64) -> Self {
        let w = SharedReplayWindow::new(size, esn);
        if top > 0 {
            let _ = w.commit(top);
        }
        w
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::super::ReplayWindow;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn in_order_out_of_order_duplicates_and_the_edge() {
        let w = SharedReplayWindow::new(64, false);
        assert_eq!(w.check(0), Err(ReplayError::Old));
        for s in 1..=100 {
            assert_eq!(w.check(s), Ok(()));
            assert_eq!(w.commit(s), Ok(()));
        }
        assert_eq!(w.commit(100), Err(ReplayError::Duplicate));
        assert_eq!(w.check(37), Err(ReplayError::Duplicate));
        assert_eq!(w.check(36), Err(ReplayError::Old));
        assert_eq!(w.commit(36), Err(ReplayError::Old));
        assert_eq!(w.commit(200), Ok(()));
        assert_eq!(w.check(150), Ok(()));
        assert_eq!(w.commit(136), Err(ReplayError::Old));
        assert_eq!(w.commit(137), Ok(()));
        assert_eq!(w.received_in_window(), 2);
        assert_eq!(w.top(), 200);
    }

    #[test]
    fn a_far_jump_forgets_the_old_blocks() {
        let w = SharedReplayWindow::new(64, true);
        assert_eq!(w.commit(5), Ok(()));
        // a whole ring later, the same slot: the old block is replaced, not merged
        let far = 5 + 64 * 1024;
        assert_eq!(w.commit(far), Ok(()));
        assert_eq!(w.commit(5), Err(ReplayError::Old));
        assert_eq!(w.check(far - 3), Ok(()));
        assert_eq!(w.commit(far), Err(ReplayError::Duplicate));
        // ESN numbers near the top of the space
        let w = SharedReplayWindow::new(64, true);
        assert_eq!(w.commit(u64::MAX - 1), Ok(()));
        assert_eq!(w.commit(u64::MAX), Ok(()));
        assert_eq!(w.commit(u64::MAX), Err(ReplayError::Duplicate));
        assert_eq!(w.infer(5), None);
    }

    proptest! {
        /// One worker at a time, it decides like the worker-owned window (which the
        /// replay module's own model test checks): check, then commit what passed and
        /// whose ICV verified.
        #[test]
        fn alone_it_decides_like_the_owned_window(
            size in prop_oneof![Just(32u32), Just(64), Just(100), Just(1024), Just(4096)],
            esn in any::<bool>(),
            ops in proptest::collection::vec((0u64..9000, any::<bool>()), 1..500),
        ) {
            let shared = SharedReplayWindow::new(size, esn);
            let mut own = ReplayWindow::new(size, esn);
            for (s, icv_ok) in ops {
                prop_assert_eq!(shared.infer(s as u32), own.infer(s as u32));
                let got = shared.check(s);
                prop_assert_eq!(got, own.check(s), "seq {} top {}", s, own.top());
                if got.is_ok() && icv_ok {
                    prop_assert_eq!(shared.commit(s), Ok(()));
                    own.commit(s);
                }
                prop_assert_eq!(shared.top(), own.top());
                prop_assert_eq!(shared.received_in_window(), own.received_in_window());
            }
        }

        /// Several workers at once receive a stream with reordering and replays (each
        /// number arrives at up to three workers): every number is accepted at most once,
        /// and every number that arrives within the window of the stream's progress is
        /// accepted by someone.
        #[test]
        fn on_threads_no_number_is_accepted_twice(
            threads in 2usize..5,
            seqs in proptest::collection::vec((1u64..3000, 0usize..3), 50..600),
        ) {
            let w = Arc::new(SharedReplayWindow::new(256, false));
            let accepted: Vec<Vec<u64>> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let w = w.clone();
                        let seqs = &seqs;
                        sc.spawn(move || {
                            let mut mine = vec![];
                            for (i, &(s, copies)) in seqs.iter().enumerate() {
                                // copy k of packet i goes to worker (i + k) % threads
                                if (0..=copies).any(|k| (i + k) % threads == t)
                                    && w.check(s).is_ok()
                                    && w.commit(s).is_ok()
                                {
                                    mine.push(s);
                                }
                            }
                            mine
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("a worker")).collect()
            });
            let mut seen = HashSet::new();
            for s in accepted.iter().flatten() {
                prop_assert!(seen.insert(*s), "{} accepted twice", s);
            }
            let max = seqs.iter().map(|p| p.0).max().unwrap_or(0);
            prop_assert_eq!(w.top(), max);
            prop_assert!(seen.contains(&max));
        }
    }
}

/// Every interleaving of two workers (loom): `cargo test -p xsec-dataplane --features loom
/// --lib replay::shared`.
#[cfg(all(test, feature = "loom"))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two workers commit the same number: exactly one is accepted.
    #[test]
    fn one_number_twice_is_accepted_once() {
        loom::model(|| {
            let w = Arc::new(SharedReplayWindow::new(32, false));
            let w2 = w.clone();
            let t = loom::thread::spawn(move || w2.commit(7).is_ok());
            let a = w.commit(7).is_ok();
            let b = t.join().expect("thread");
            assert!(a ^ b, "accepted by both or neither: {a} {b}");
            assert_eq!(w.top(), 7);
        });
    }

    /// One worker slides the window over a slot while another records an old number in it
    /// and then replays it: the replay is never accepted.
    #[test]
    fn a_slide_and_an_old_number_race_without_a_duplicate() {
        loom::model(|| {
            // 32 packets: 8 slots (one cache line) of 16; 3 and 3 + 128 share a slot
            let w = Arc::new(SharedReplayWindow::new(32, false));
            let w2 = w.clone();
            let t = loom::thread::spawn(move || {
                let first = w2.commit(3).is_ok();
                let again = w2.commit(3).is_ok();
                (first, again)
            });
            let slid = w.commit(3 + 128).is_ok();
            let (first, again) = t.join().expect("thread");
            assert!(slid);
            assert!(!again, "3 accepted twice (first: {first})");
            assert_eq!(w.top(), 3 + 128);
        });
    }

    /// Two workers commit neighbours in one block: both are kept.
    #[test]
    fn neighbours_in_one_block_are_both_kept() {
        loom::model(|| {
            let w = Arc::new(SharedReplayWindow::new(32, false));
            let w2 = w.clone();
            let t = loom::thread::spawn(move || w2.commit(17).is_ok());
            assert!(w.commit(18).is_ok());
            assert!(t.join().expect("thread"));
            assert_eq!(w.commit(17), Err(ReplayError::Duplicate));
            assert_eq!(w.commit(18), Err(ReplayError::Duplicate));
            assert_eq!(w.top(), 18);
        });
    }
}
