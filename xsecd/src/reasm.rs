//! Reassembly of outer ESP fragments (RFC 4303 §3.4.1: ESP is processed after reassembly),
//! raw or UDP-encapsulated.
//!
//! A peer (xsecd itself, or a kernel) fragments an ESP packet that outgrew its link when the
//! inner packet allowed it. The XDP program steers the fragments to the worker: every
//! fragment of IP protocol 50 (each carries the protocol), and the UDP fragments an
//! UDP-encapsulated SA's peer sends the gateway (a later fragment has no port to steer by).
//! This module puts them back together in buffers the worker owns: [`SLOTS`] slots that each
//! hold a whole IP datagram (65,535 bytes of IPv4, or an IPv6 header and 65,535 bytes of
//! payload), allocated at start, never after; the oldest slot evicted when all are busy; a
//! partial datagram dropped after [`TIMEOUT`]. Overlapping fragments drop the whole datagram
//! (RFC 5722 for IPv6; the same caution for IPv4); an exact duplicate of a fragment already
//! held is ignored (RFC 8200 §4.5).
//!
//! Scope: IPv4, and IPv6 whose Fragment header directly follows the base header.

use std::time::Duration;
use xsec_dataplane::Timestamp;
use xsec_dataplane::wire::ipv6::FRAG_HEADER_LEN;
use xsec_dataplane::wire::{IpProtocol, Ipv4Packet, Ipv6FragHeader, Ipv6Packet, checksum};

/// The fragmentable part of a datagram: 65,535 bytes (IPv4 total length, IPv6 payload
/// length).
const MAX_PAYLOAD: usize = 65535;
/// Largest reassembled IP packet: an IPv6 base header and 65,535 bytes of payload.
pub const MAX_DATAGRAM: usize = 40 + MAX_PAYLOAD;
/// Datagrams reassembled at once per worker (about 1 MiB of slots).
pub const SLOTS: usize = 16;
/// How long a partial datagram is kept.
pub const TIMEOUT: Duration = Duration::from_secs(1);

const UNITS: usize = MAX_PAYLOAD.div_ceil(8);
const WORDS: usize = UNITS.div_ceil(64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
}

struct Slot {
    key: Option<Key>,
    started: Timestamp,
    /// The unfragmentable header of the first fragment (IPv4 header / IPv6 base header).
    hdr: [u8; 60],
    hdr_len: usize,
    /// Next header of the fragmentable part (IPv6).
    nh: u8,
    /// Payload length once the last fragment arrived.
    total: Option<usize>,
    have: [u64; WORDS],
    data: Box<[u8]>,
}

impl Slot {
    fn reset(&mut self) {
        self.key = None;
        self.hdr_len = 0;
        self.total = None;
        self.have = [0; WORDS];
    }

    fn complete(&self) -> bool {
        let (Some(total), true) = (self.total, self.hdr_len > 0) else {
            return false;
        };
        let units = total.div_ceil(8);
        (0..units).all(|u| self.have[u / 64] & (1 << (u % 64)) != 0)
    }
}

/// What happened to a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Kept; the datagram is not complete yet.
    Held,
    /// The datagram is complete: the whole IP packet was written to the caller's buffer,
    /// this many bytes.
    Done(usize),
    /// Not reassembled: malformed, overlapping, too big, or evicted (counted by the caller).
    Dropped,
}

crate::worker::counters! {
/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReasmStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Partial datagrams dropped after [`TIMEOUT`].
    pub timeouts: u64,
    /// Datagrams dropped: malformed, overlapping or too big fragments, or evicted.
    pub dropped: u64,
    /// Partial datagrams evicted to make room (counted in `dropped` too).
    pub evicted: u64,
    /// Exact duplicates of fragments already held, ignored.
    pub duplicates: u64,
}
}

/// One worker's reassembly slots.
pub struct Reassembler {
    slots: Vec<Slot>,
    pub stats: ReasmStats,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field(
                "busy",
                &self.slots.iter().filter(|s| s.key.is_some()).count(),
            )
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

/// If `ip` is a fragment this module handles: its upper-layer protocol (IPv4 protocol, or the
/// next header after an IPv6 Fragment header that directly follows the base header).
pub fn fragment_protocol(ip: &[u8]) -> Option<u8> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            p.is_fragment().then_some(p.protocol().0)
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            let frag = Ipv6FragHeader::new_checked(p.payload()).ok()?;
            (p.next_header() == IpProtocol::IPV6_FRAGMENT).then_some(frag.next_header().0)
        }
        _ => None,
    }
}

/// A hash of a fragment's datagram (addresses, identification, and for IPv4 the protocol):
/// every fragment of one datagram has the same, so each datagram can be reassembled by one
/// worker whatever queues the NIC spread its fragments over.
pub fn datagram_hash(ip: &[u8]) -> Option<u64> {
    let key: &[&[u8]] = match ip.first().map(|b| b >> 4) {
        Some(4) => &[ip.get(12..20)?, ip.get(4..6)?, ip.get(9..10)?],
        Some(6) => &[ip.get(8..40)?, ip.get(44..48)?],
        _ => return None,
    };
    // FNV-1a: spread, not secrecy (an attacker picks its own worker at worst)
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().flat_map(|k| k.iter()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Some(h)
}

impl Reassembler {
    pub fn new() -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                key: None,
                started: Timestamp::ZERO,
                hdr: [0; 60],
                hdr_len: 0,
                nh: 0,
                total: None,
                have: [0; WORDS],
                data: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            })
            .collect();
        Reassembler {
            slots,
            stats: ReasmStats::default(),
        }
    }

    /// Drop partial datagrams older than [`TIMEOUT`].
    pub fn expire(&mut self, now: Timestamp) {
        for s in &mut self.slots {
            if s.key.is_some() && now.since(s.started) > TIMEOUT {
                s.reset();
                self.stats.timeouts += 1;
            }
        }
    }

    /// Add one fragment (`ip`: the whole IP packet). On completion the reassembled packet is
    /// written to `out`.
    pub fn add(&mut self, ip: &[u8], now: Timestamp, out: &mut [u8]) -> Outcome {
        self.stats.fragments += 1;
        let r = self.add_inner(ip, now, out);
        match r {
            Outcome::Done(_) => self.stats.reassembled += 1,
            Outcome::Dropped => self.stats.dropped += 1,
            Outcome::Held => {}
        }
        r
    }

    fn add_inner(&mut self, ip: &[u8], now: Timestamp, out: &mut [u8]) -> Outcome {
        // Parse: key, header, offset, more, payload.
        let (key, hdr_len, nh, offset, more, payload) = match ip.first().map(|b| b >> 4) {
            Some(4) => {
                let Ok(p) = Ipv4Packet::new_checked(ip) else {
                    return Outcome::Dropped;
                };
                let (hl, total) = (p.header_len(), usize::from(p.total_len()));
                let mut src = [0u8; 16];
                src[..4].copy_from_slice(&p.src_addr());
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&p.dst_addr());
                let proto = p.protocol().0;
                let key = Key {
                    v6: false,
                    src,
                    dst,
                    id: u32::from(p.ident()) | u32::from(proto) << 16,
                };
                (
                    key,
                    hl,
                    proto,
                    usize::from(p.frag_offset()),
                    p.more_frags(),
                    &ip[hl..total],
                )
            }
            Some(6) => {
                let Ok(p) = Ipv6Packet::new_checked(ip) else {
                    return Outcome::Dropped;
                };
                let plen = usize::from(p.payload_len());
                if p.next_header() != IpProtocol::IPV6_FRAGMENT || plen < FRAG_HEADER_LEN {
                    return Outcome::Dropped;
                }
                let frag = Ipv6FragHeader::new_unchecked(&ip[40..48]);
                let key = Key {
                    v6: true,
                    src: p.src_addr(),
                    dst: p.dst_addr(),
                    id: frag.ident(),
                };
                (
                    key,
                    40,
                    frag.next_header().0,
                    frag.frag_offset(),
                    frag.more_frags(),
                    &ip[48..40 + plen],
                )
            }
            _ => return Outcome::Dropped,
        };
        let end = offset + payload.len();
        // Every fragment but the last carries a multiple of 8 bytes; the datagram's length
        // must fit its length field (IPv4: with the header).
        let limit = if key.v6 {
            MAX_PAYLOAD
        } else {
            MAX_PAYLOAD - hdr_len
        };
        if end > limit || (more && payload.len() % 8 != 0) || payload.is_empty() {
            return Outcome::Dropped;
        }
        // Find the slot, or take a free / the oldest one.
        let idx = match self.slots.iter().position(|s| s.key == Some(key)) {
            Some(i) => i,
            None => {
                let free = self.slots.iter().position(|s| s.key.is_none());
                let i = match free {
                    Some(i) => i,
                    None => {
                        // the evicted datagram
                        self.stats.dropped += 1;
                        self.stats.evicted += 1;
                        (0..self.slots.len())
                            .min_by_key(|&i| self.slots[i].started.0)
                            .unwrap_or(0)
                    }
                };
                let s = &mut self.slots[i];
                s.reset();
                s.key = Some(key);
                s.started = now;
                i
            }
        };
        let s = &mut self.slots[idx];
        let (u0, u1) = (offset / 8, end.div_ceil(8));
        // An exact duplicate (a retransmitted or doubled fragment: same place, same bytes, the
        // same "last" flag) changes nothing.
        let held = |u: usize| s.have[u / 64] & (1 << (u % 64)) != 0;
        if (u0..u1).all(held)
            && s.data[offset..end] == *payload
            && (more || s.total == Some(end))
            && (offset != 0 || s.hdr_len == hdr_len)
        {
            self.stats.duplicates += 1;
            return Outcome::Held;
        }
        // Overlap with what is there, or a second "last" fragment: drop the datagram.
        let overlap = (u0..u1).any(held);
        let bad_end = match (s.total, more) {
            (Some(t), _) if end > t => true,
            (Some(_), false) => true,
            _ => false,
        };
        if overlap || bad_end {
            s.reset();
            return Outcome::Dropped;
        }
        s.data[offset..end].copy_from_slice(payload);
        for u in u0..u1 {
            s.have[u / 64] |= 1 << (u % 64);
        }
        if !more {
            // anything already received beyond the end contradicts it
            let units = end.div_ceil(8);
            if (units..UNITS).any(|u| s.have[u / 64] & (1 << (u % 64)) != 0) {
                s.reset();
                return Outcome::Dropped;
            }
            s.total = Some(end);
        }
        if offset == 0 {
            s.hdr[..hdr_len].copy_from_slice(&ip[..hdr_len]);
            s.hdr_len = hdr_len;
            s.nh = nh;
        }
        if !s.complete() {
            return Outcome::Held;
        }
        let total = s.total.unwrap_or(0);
        let n = s.hdr_len + total;
        // the first fragment's header may be longer than the others': the whole must still
        // fit the length field
        if !key.v6 && n > MAX_PAYLOAD {
            s.reset();
            return Outcome::Dropped;
        }
        let Some(o) = out.get_mut(..n) else {
            s.reset();
            return Outcome::Dropped;
        };
        let hl = s.hdr_len;
        o[..hl].copy_from_slice(&s.hdr[..hl]);
        o[hl..].copy_from_slice(&s.data[..total]);
        if key.v6 {
            o[4..6].copy_from_slice(&(total as u16).to_be_bytes());
            o[6] = s.nh;
        } else {
            o[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            o[6] &= 0x40; // keep DF, clear MF and the offset
            o[7] = 0;
            o[10..12].fill(0);
            let c = checksum::finish(checksum::sum(&o[..hl]));
            o[10..12].copy_from_slice(&c.to_be_bytes());
        }
        s.reset();
        Outcome::Done(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd;

    fn esp_v4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        p[8] = 64;
        p[9] = 50;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let c = checksum::finish(checksum::sum(&p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn frags_v4(p: &[u8], per: usize) -> Vec<Vec<u8>> {
        let mut v = vec![];
        let pl = p.len() - 20;
        let mut off = 0;
        while off < pl {
            let end = (off + per).min(pl);
            let mut out = vec![0u8; 2000];
            let n = fwd::v4_fragment(&mut out, &p[..20], &p[20 + off..20 + end], off, end < pl)
                .expect("fragment");
            out.truncate(n);
            v.push(out);
            off = end;
        }
        v
    }

    #[test]
    fn v4_in_any_order() {
        let p = esp_v4(3000);
        const { assert!(3000 <= MAX_DATAGRAM) };
        let mut frags = frags_v4(&p, 1000);
        assert_eq!(frags.len(), 3);
        assert!(frags.iter().all(|f| fragment_protocol(f) == Some(50)));
        assert_eq!(fragment_protocol(&p), None);
        frags.swap(0, 2);
        let mut r = Reassembler::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        assert_eq!(r.add(&frags[0], Timestamp::ZERO, &mut out), Outcome::Held);
        assert_eq!(r.add(&frags[1], Timestamp::ZERO, &mut out), Outcome::Held);
        assert_eq!(
            r.add(&frags[2], Timestamp::ZERO, &mut out),
            Outcome::Done(3000)
        );
        assert_eq!(&out[..3000], &p[..]);
        assert_eq!(r.stats.reassembled, 1);
    }

    #[test]
    fn v6_fragments() {
        let mut p = vec![0u8; 40 + 2000];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&2000u16.to_be_bytes());
        p[6] = 50;
        p[7] = 64;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut base = [0u8; 40];
        base.copy_from_slice(&p[..40]);
        let mut r = Reassembler::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        let mut got = Outcome::Held;
        for (off, end) in [(1232usize, 2000usize), (0, 1232)] {
            let mut f = [0u8; 1500];
            let n = fwd::v6_fragment(&mut f, &base, &p[40 + off..40 + end], off, end < 2000, 7)
                .expect("fragment");
            assert_eq!(fragment_protocol(&f[..n]), Some(50));
            got = r.add(&f[..n], Timestamp::ZERO, &mut out);
        }
        assert_eq!(got, Outcome::Done(2040));
        assert_eq!(&out[..2040], &p[..]);
    }

    #[test]
    fn overlap_timeout_and_garbage_drop() {
        let p = esp_v4(2500);
        let frags = frags_v4(&p, 1000);
        let mut r = Reassembler::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        assert_eq!(r.add(&frags[0], Timestamp::ZERO, &mut out), Outcome::Held);
        // an exact duplicate is ignored
        assert_eq!(r.add(&frags[0], Timestamp::ZERO, &mut out), Outcome::Held);
        assert_eq!(r.stats.duplicates, 1);
        // the same place with other bytes is an overlap: the datagram goes
        let mut changed = frags[0].clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(r.add(&changed, Timestamp::ZERO, &mut out), Outcome::Dropped);
        // the datagram is gone: the rest cannot complete it
        assert_eq!(r.add(&frags[1], Timestamp::ZERO, &mut out), Outcome::Held);
        assert_eq!(r.add(&frags[2], Timestamp::ZERO, &mut out), Outcome::Held);
        r.expire(Timestamp::ZERO.plus(Duration::from_secs(2)));
        assert_eq!(r.stats.timeouts, 1);
        for junk in [&[][..], &[0x45; 10][..], &[0x60; 47][..], &[0x99; 100][..]] {
            assert_eq!(r.add(junk, Timestamp::ZERO, &mut out), Outcome::Dropped);
        }
        // more slots than SLOTS: the oldest is evicted, nothing panics
        for id in 0..(SLOTS as u16 + 5) {
            let mut f = frags[0].clone();
            f[4..6].copy_from_slice(&id.to_be_bytes());
            r.add(&f, Timestamp(u64::from(id)), &mut out);
        }
    }

    #[test]
    fn the_largest_datagrams_in_any_order() {
        // IPv4: 65,535 bytes in 1,480-byte fragments, last first
        let p = esp_v4(65535);
        let mut frags = frags_v4(&p, 1480);
        frags.reverse();
        let mut r = Reassembler::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        let n = frags.len();
        for (i, f) in frags.iter().enumerate() {
            let want = if i + 1 == n {
                Outcome::Done(65535)
            } else {
                Outcome::Held
            };
            assert_eq!(r.add(f, Timestamp::ZERO, &mut out), want, "fragment {i}");
        }
        assert_eq!(&out[..65535], &p[..]);
        // one byte more cannot be expressed: the fragment that would end past it is dropped
        let mut too_far = frags_v4(&esp_v4(4000), 1480).pop().expect("last");
        too_far[6..8].copy_from_slice(&(((65535 - 20) / 8) as u16).to_be_bytes());
        assert_eq!(r.add(&too_far, Timestamp::ZERO, &mut out), Outcome::Dropped);

        // IPv6: a 40-byte header and 65,535 bytes of payload
        let mut p = vec![0u8; 40 + 65535];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&65535u16.to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i * 3) as u8;
        }
        let mut base = [0u8; 40];
        base.copy_from_slice(&p[..40]);
        let mut offs: Vec<(usize, usize)> = (0..65535)
            .step_by(1232)
            .map(|o| (o, (o + 1232).min(65535)))
            .collect();
        offs.swap(0, 7);
        let mut got = Outcome::Held;
        for (off, end) in offs {
            let mut f = vec![0u8; 1500];
            let k = fwd::v6_fragment(&mut f, &base, &p[40 + off..40 + end], off, end < 65535, 9)
                .expect("fragment");
            assert_eq!(fragment_protocol(&f[..k]), Some(17));
            got = r.add(&f[..k], Timestamp::ZERO, &mut out);
        }
        assert_eq!(got, Outcome::Done(40 + 65535));
        assert_eq!(&out[..40 + 65535], &p[..]);
    }
}
