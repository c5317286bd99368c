//! Probes through the tunnels: ICMP echo requests the gateway itself originates (`ping` on
//! the control socket, xsec-ike's tunnel watchdog). A worker builds each one and sends it
//! through the outbound SPD like a packet from the protected side (protected, bypassed or
//! discarded as the policy says: nothing leaves in clear that the SPD did not BYPASS); the
//! echo replies that come back *decapsulated* are taken by whichever worker decrypts them,
//! marked on the [`ProbeBoard`] and never forwarded. A reply that arrives in clear proves
//! nothing about a tunnel and is not taken.
//!
//! The board is lock-free: the control thread arms a slot per outstanding probe (sequence
//! number and the address the reply must go to), workers compare and mark, the control
//! thread reads and frees it. Workers pay one relaxed load per decapsulated packet while no
//! probe is out.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Probes out at once (all clients together).
pub const SLOTS: usize = 256;

/// One outstanding probe.
#[derive(Debug, Default)]
struct Slot {
    /// [`key`] of the reply awaited, 0 when free.
    expect: AtomicU64,
    /// When the reply came (clock nanoseconds, at least 1), 0 before.
    got: AtomicU64,
}

/// The probes out, shared by the control threads and every worker.
#[derive(Debug)]
pub struct ProbeBoard {
    ident: u16,
    armed: AtomicU32,
    next: AtomicU32,
    slots: Box<[Slot]>,
}

/// A probe's place on the board: its ICMP identifier and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub ident: u16,
    pub seq: u16,
}

/// What a worker is asked to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ticket: Ticket,
    /// Bytes of echo data.
    pub size: u16,
}

/// The slot key of a reply to `to` with sequence number `seq`: never 0.
fn key(seq: u16, to: IpAddr) -> u64 {
    let a = match to {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            // distinct from every IPv4 key's address half only by chance: the top bit
            // below keeps the families apart
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    };
    let fam = u64::from(to.is_ipv6()) << 62;
    1 << 63 | fam | u64::from(seq) << 32 | u64::from(a)
}

impl ProbeBoard {
    /// A board whose probes carry the ICMP identifier `ident` (random per daemon, so that a
    /// host's own pings from the same address are not taken).
    pub fn new(ident: u16) -> ProbeBoard {
        ProbeBoard {
            ident,
            armed: AtomicU32::new(0),
            next: AtomicU32::new(0),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// Probes out now.
    pub fn armed(&self) -> u32 {
        self.armed.load(Ordering::Relaxed)
    }

    /// Take a free slot for a probe whose reply goes to `to`; `None` when all are taken.
    pub fn arm(&self, to: IpAddr) -> Option<Ticket> {
        for _ in 0..SLOTS {
            let seq = self.next.fetch_add(1, Ordering::Relaxed) as u16;
            let slot = &self.slots[usize::from(seq) % SLOTS];
            if slot.expect.load(Ordering::Relaxed) != 0 {
                continue;
            }
            slot.got.store(0, Ordering::Relaxed);
            if slot
                .expect
                .compare_exchange(0, key(seq, to), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.armed.fetch_add(1, Ordering::Relaxed);
                return Some(Ticket {
                    ident: self.ident,
                    seq,
                });
            }
        }
        None
    }

    /// When the reply to `t` came (clock nanoseconds), if it did.
    pub fn reply(&self, t: Ticket) -> Option<u64> {
        let slot = &self.slots[usize::from(t.seq) % SLOTS];
        match slot.got.load(Ordering::Acquire) {
            0 => None,
            ns => Some(ns),
        }
    }

    /// Free `t`'s slot (answered or given up).
    pub fn disarm(&self, t: Ticket) {
        let slot = &self.slots[usize::from(t.seq) % SLOTS];
        if slot.expect.swap(0, Ordering::AcqRel) != 0 {
            self.armed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A worker's check of a decapsulated packet: is it the echo reply to a probe out? If so
    /// its arrival (`now_ns`) is marked and the worker drops it (`true`).
    #[inline]
    pub fn take_reply(&self, ip: &[u8], now_ns: u64) -> bool {
        if self.armed.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let Some((to, ident, seq)) = crate::fwd::echo_reply(ip) else {
            return false;
        };
        if ident != self.ident {
            return false;
        }
        let slot = &self.slots[usize::from(seq) % SLOTS];
        if slot.expect.load(Ordering::Acquire) != key(seq, to) {
            return false;
        }
        // the first reply counts; a duplicate is taken too (it is ours)
        let _ = slot
            .got
            .compare_exchange(0, now_ns.max(1), Ordering::AcqRel, Ordering::Relaxed);
        true
    }
}

/// Turn an echo request into the reply its destination would send (addresses swapped,
/// type changed, checksum recomputed): for tests.
#[cfg(test)]
pub(crate) fn reply_of(req: &[u8]) -> Vec<u8> {
    let mut r = req.to_vec();
    if r[0] >> 4 == 4 {
        let (s, d) = (r[12..16].to_vec(), r[16..20].to_vec());
        r[12..16].copy_from_slice(&d);
        r[16..20].copy_from_slice(&s);
        r[20] = 0;
        r[22..24].fill(0);
        let c =
            xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::sum(&r[20..]));
        r[22..24].copy_from_slice(&c.to_be_bytes());
    } else {
        let (s, d) = (r[8..24].to_vec(), r[24..40].to_vec());
        r[8..24].copy_from_slice(&d);
        r[24..40].copy_from_slice(&s);
        r[40] = 129;
        r[42..44].fill(0);
        let mut src = [0u8; 16];
        src.copy_from_slice(&r[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&r[24..40]);
        let ps = xsec_dataplane::wire::checksum::pseudo_v6(src, dst, 58, (r.len() - 40) as u32);
        let c = xsec_dataplane::wire::checksum::compute(ps, &r[40..]);
        r[42..44].copy_from_slice(&c.to_be_bytes());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd;

    fn request(src: &str, dst: &str, t: Ticket, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; 1600];
        let n = fwd::echo_request(
            &mut out,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            t.ident,
            t.seq,
            size,
        )
        .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_reply_to_an_armed_probe_is_taken_once_and_marked() {
        for (src, dst) in [("10.1.0.1", "10.2.0.10"), ("fd00:1::1", "fd00:2::10")] {
            let b = ProbeBoard::new(0x5a5a);
            let t = b.arm(src.parse().unwrap()).unwrap();
            assert_eq!(b.armed(), 1);
            let req = request(src, dst, t, 56);
            // a request is not a reply
            assert!(!b.take_reply(&req, 5));
            let rep = reply_of(&req);
            assert_eq!(
                fwd::echo_reply(&rep),
                Some((src.parse().unwrap(), t.ident, t.seq))
            );
            assert_eq!(b.reply(t), None);
            assert!(b.take_reply(&rep, 1234));
            assert_eq!(b.reply(t), Some(1234));
            // a duplicate is ours too, and keeps the first time
            assert!(b.take_reply(&rep, 9999));
            assert_eq!(b.reply(t), Some(1234));
            b.disarm(t);
            assert_eq!(b.armed(), 0);
            // once disarmed, the same reply goes on its way (forwarded as any packet)
            assert!(!b.take_reply(&rep, 10_000));
        }
    }

    #[test]
    fn replies_that_are_not_ours_are_left_alone() {
        let b = ProbeBoard::new(0x1111);
        let t = b.arm("10.1.0.1".parse().unwrap()).unwrap();
        let req = request("10.1.0.1", "10.2.0.10", t, 8);
        let good = reply_of(&req);
        // another host's identifier
        let other = request(
            "10.1.0.1",
            "10.2.0.10",
            Ticket {
                ident: 0x2222,
                seq: t.seq,
            },
            8,
        );
        assert!(!b.take_reply(&reply_of(&other), 1));
        // to another address
        let elsewhere = request("10.1.0.7", "10.2.0.10", t, 8);
        assert!(!b.take_reply(&reply_of(&elsewhere), 1));
        // another sequence number
        let later = request(
            "10.1.0.1",
            "10.2.0.10",
            Ticket {
                ident: t.ident,
                seq: t.seq.wrapping_add(1),
            },
            8,
        );
        assert!(!b.take_reply(&reply_of(&later), 1));
        // a bad checksum
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!b.take_reply(&bad, 1));
        // cut short
        assert!(!b.take_reply(&good[..24], 1));
        assert_eq!(b.reply(t), None);
        assert!(b.take_reply(&good, 7));
    }

    #[test]
    fn the_board_fills_up_and_frees() {
        let b = ProbeBoard::new(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let ts: Vec<Ticket> = (0..SLOTS).map(|_| b.arm(a).unwrap()).collect();
        assert_eq!(b.armed() as usize, SLOTS);
        assert_eq!(b.arm(a), None);
        b.disarm(ts[17]);
        let again = b.arm(a).unwrap();
        assert_eq!(
            usize::from(again.seq) % SLOTS,
            usize::from(ts[17].seq) % SLOTS
        );
        for t in ts {
            b.disarm(t);
        }
        b.disarm(again);
        assert_eq!(b.armed(), 0);
    }

    #[test]
    fn a_built_request_is_what_an_independent_decoder_reads() {
        // IPv4: header checksum and ICMP checksum both verify; DF set; data is the pattern
        let req = request("10.1.0.1", "10.2.0.10", Ticket { ident: 7, seq: 9 }, 56);
        assert_eq!(req.len(), 84);
        let p = xsec_dataplane::wire::Ipv4Packet::new_checked(&req[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.dont_frag());
        assert!(xsec_dataplane::wire::checksum::verify(0, &req[20..]));
        assert_eq!(&req[20..28], &[8, 0, req[22], req[23], 0, 7, 0, 9]);
        assert_eq!(req[28 + 55], 55);
        // mixed families are refused; a buffer too small too
        assert_eq!(
            fwd::echo_request(
                &mut [0u8; 200],
                "10.1.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap(),
                1,
                1,
                8
            ),
            None
        );
        assert_eq!(
            fwd::echo_request(
                &mut [0u8; 40],
                "10.1.0.1".parse().unwrap(),
                "10.1.0.2".parse().unwrap(),
                1,
                1,
                56
            ),
            None
        );
    }
}
