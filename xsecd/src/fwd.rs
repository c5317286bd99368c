//! Forwarding helpers on raw bytes: TTL/hop limit, Ethernet headers, ICMP errors, outer
//! fragmentation and UDP heartbeats. No allocation; every function checks lengths and reports
//! failure instead of panicking.

use std::net::IpAddr;
use xsec_dataplane::wire::{
    IcmpPacket, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6FragHeader, Ipv6Packet, UdpPacket, checksum,
};

pub const ETH_HDR: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The TTL / hop limit ran out (or there was no IP header to decrement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlExceeded;

/// Decrement the TTL (IPv4, with an incremental checksum update, RFC 1624) or hop limit
/// (IPv6) of the packet at the start of `ip`. Fails if it would reach zero (the caller
/// sends ICMP time exceeded) or the header is cut.
pub fn dec_ttl(ip: &mut [u8]) -> Result<(), TtlExceeded> {
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            let mut p = Ipv4Packet::new_unchecked(ip);
            let ttl = p.ttl();
            if ttl <= 1 {
                return Err(TtlExceeded);
            }
            // RFC 1624: the 16-bit word of TTL and protocol changes by one
            let word = |ttl: u8, proto: IpProtocol| u16::from(ttl) << 8 | u16::from(proto.0);
            let old = word(ttl, p.protocol());
            p.set_ttl(ttl - 1);
            let c = checksum::update16(p.checksum(), old, word(ttl - 1, p.protocol()));
            p.set_checksum(c);
            Ok(())
        }
        Some(6) if ip.len() >= 40 => {
            let mut p = Ipv6Packet::new_unchecked(ip);
            let hops = p.hop_limit();
            if hops <= 1 {
                return Err(TtlExceeded);
            }
            p.set_hop_limit(hops - 1);
            Ok(())
        }
        _ => Err(TtlExceeded),
    }
}

/// The destination address of an IP packet.
pub fn ip_dst(ip: &[u8]) -> Option<IpAddr> {
    match ip.first()? >> 4 {
        4 => {
            let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The source address of an IP packet.
pub fn ip_src(ip: &[u8]) -> Option<IpAddr> {
    match ip.first()? >> 4 {
        4 => {
            let b: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// Write an Ethernet header into `h` (14 bytes).
pub fn write_eth(h: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Option<()> {
    let h = h.get_mut(..ETH_HDR)?;
    h[0..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Some(())
}

/// The ICMP errors the gateway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// IPv4 "fragmentation needed and DF set" / ICMPv6 "packet too big", with the MTU the
    /// sender should use.
    TooBig { mtu: u16 },
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
}

/// Build an ICMP (IPv4 `orig`) or ICMPv6 (IPv6 `orig`) error about `orig` from `src` to
/// `orig`'s source into `out`; returns the IP packet length. The quote is as much of `orig` as
/// fits in 576 bytes (IPv4, RFC 1812 §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4).
/// `None` for a source of the wrong family, a cut header, or an `orig` that must not draw an
/// error (an ICMP error itself, a non-first fragment, a multicast/broadcast destination is the
/// caller's concern).
/// Whether `orig` may draw an ICMP error at all (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)): a
/// whole header, not an ICMP error itself, not a non-first IPv4 fragment. Checked before the
/// rate limit, so packets that never draw an error do not use it up.
pub fn may_draw_icmp_error(orig: &[u8]) -> bool {
    match orig.first().map(|b| b >> 4) {
        Some(4) => {
            // the header must be whole; the quoted packet may be cut
            let ihl = usize::from(orig[0] & 0x0f) * 4;
            if orig.len() < 20 || ihl < 20 || orig.len() < ihl {
                return false;
            }
            let p = Ipv4Packet::new_unchecked(orig);
            let icmp_error = p.protocol() == IpProtocol::ICMP
                && orig
                    .get(ihl)
                    .is_some_and(|&t| !matches!(t, 0 | 8 | 13 | 15 | 17));
            p.frag_offset() == 0 && !icmp_error
        }
        // never about an ICMPv6 error (types < 128)
        Some(6) if orig.len() >= 40 => {
            let p = Ipv6Packet::new_unchecked(orig);
            !(p.next_header() == IpProtocol::ICMPV6 && orig.get(40).is_some_and(|&t| t < 128))
        }
        _ => false,
    }
}

pub fn icmp_error(out: &mut [u8], src: IpAddr, orig: &[u8], e: IcmpError) -> Option<usize> {
    if !may_draw_icmp_error(orig) {
        return None;
    }
    match (orig.first()? >> 4, src) {
        (4, IpAddr::V4(s)) => {
            let quote = orig.len().min(576 - 28);
            let total = 28 + quote;
            let out = out.get_mut(..total)?;
            let (hdr, msg) = out.split_at_mut(20);
            Ipv4Repr {
                src: s.octets(),
                dst: Ipv4Packet::new_unchecked(orig).src_addr(),
                protocol: IpProtocol::ICMP,
                payload_len: 8 + quote,
                ttl: 64,
                tos: 0xc0, // internetwork control
                ident: 0,
                dont_frag: false,
            }
            .emit(&mut Ipv4Packet::new_unchecked(hdr));
            let (ty, code, rest) = match e {
                IcmpError::TooBig { mtu } => (3u8, 4u8, u32::from(mtu)),
                IcmpError::TimeExceeded => (11, 0, 0),
            };
            let mut icmp = IcmpPacket::new_unchecked(&mut msg[..]);
            icmp.emit_error_header(ty, code, rest);
            msg[8..].copy_from_slice(&orig[..quote]);
            let c = checksum::finish(checksum::sum(msg));
            IcmpPacket::new_unchecked(msg).set_checksum(c);
            Some(total)
        }
        (6, IpAddr::V6(s)) => {
            let quote = orig.len().min(1280 - 48);
            let plen = 8 + quote;
            let total = 40 + plen;
            let out = out.get_mut(..total)?;
            let dst = Ipv6Packet::new_unchecked(orig).src_addr();
            let (hdr, msg) = out.split_at_mut(40);
            let mut ip = Ipv6Packet::new_unchecked(hdr);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(plen as u16);
            ip.set_next_header(IpProtocol::ICMPV6);
            ip.set_hop_limit(64);
            ip.set_src_addr(s.octets());
            ip.set_dst_addr(dst);
            let (ty, code, rest) = match e {
                IcmpError::TooBig { mtu } => (2u8, 0u8, u32::from(mtu.max(1280))),
                IcmpError::TimeExceeded => (3, 0, 0),
            };
            IcmpPacket::new_unchecked(&mut msg[..]).emit_error_header(ty, code, rest);
            msg[8..].copy_from_slice(&orig[..quote]);
            let ps = checksum::pseudo_v6(s.octets(), dst, IpProtocol::ICMPV6.0, plen as u32);
            let c = checksum::finish(checksum::add(ps, checksum::sum(msg)));
            IcmpPacket::new_unchecked(msg).set_checksum(c);
            Some(total)
        }
        _ => None,
    }
}

/// Whether an IPv4 packet has DF set; IPv6 packets are never fragmented by routers.
pub fn dont_fragment(ip: &[u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => Ipv4Packet::new_unchecked(ip).dont_frag(),
        _ => true,
    }
}

/// Payload bytes per fragment of an IPv4 packet with a `hdr`-byte header for `mtu`.
pub fn v4_fragment_size(hdr: usize, mtu: usize) -> Option<usize> {
    let n = (mtu.checked_sub(hdr)?) & !7;
    (n > 0).then_some(n)
}

/// Turn the IPv4 header `hdr` (its whole length) into a fragment header for `payload_len`
/// bytes at `offset`; returns the fragment's total length.
pub fn v4_fragment_header(
    hdr: &mut [u8],
    payload_len: usize,
    offset: usize,
    more: bool,
) -> Option<usize> {
    let total = hdr.len() + payload_len;
    if hdr.len() < 20 || !offset.is_multiple_of(8) || offset / 8 > 0x1fff || total > 0xffff {
        return None;
    }
    let mut p = Ipv4Packet::new_unchecked(hdr);
    p.set_total_len(total as u16);
    p.set_fragment(offset, more);
    p.fill_checksum();
    Some(total)
}

/// Write IPv4 fragment `out` = header of `orig` (its first `hdr` bytes) with the given
/// offset/MF and `payload`; returns the fragment length.
pub fn v4_fragment(
    out: &mut [u8],
    hdr: &[u8],
    payload: &[u8],
    offset: usize,
    more: bool,
) -> Option<usize> {
    let hl = hdr.len();
    let out = out.get_mut(..hl + payload.len())?;
    out[hl..].copy_from_slice(payload);
    out[..hl].copy_from_slice(hdr);
    v4_fragment_header(&mut out[..hl], payload.len(), offset, more)
}

/// Write the 40-byte base header `base` and a Fragment header (RFC 8200 §4.5) into `out`
/// (48 bytes) for `payload_len` bytes at `offset`; returns the fragment's total length.
pub fn v6_fragment_header(
    out: &mut [u8],
    base: &[u8; 40],
    payload_len: usize,
    offset: usize,
    more: bool,
    ident: u32,
) -> Option<usize> {
    if !offset.is_multiple_of(8) || offset / 8 > 0x1fff || 8 + payload_len > 0xffff {
        return None;
    }
    let out = out.get_mut(..48)?;
    out[..40].copy_from_slice(base);
    let (hdr, frag) = out.split_at_mut(40);
    let mut ip = Ipv6Packet::new_unchecked(hdr);
    let next = ip.next_header();
    ip.set_payload_len((8 + payload_len) as u16);
    ip.set_next_header(IpProtocol::IPV6_FRAGMENT);
    Ipv6FragHeader::new_unchecked(frag).emit(next, offset, more, ident);
    Some(48 + payload_len)
}

/// Write IPv6 fragment `out` = the 40-byte base header of `orig` (`base`), a Fragment header
/// and `payload`; returns the fragment length.
pub fn v6_fragment(
    out: &mut [u8],
    base: &[u8; 40],
    payload: &[u8],
    offset: usize,
    more: bool,
    ident: u32,
) -> Option<usize> {
    let out = out.get_mut(..48 + payload.len())?;
    out[48..].copy_from_slice(payload);
    v6_fragment_header(out, base, payload.len(), offset, more, ident)
}

/// An ICMP echo request (IPv4 type 8, ICMPv6 type 128) from `src` to `dst` with
/// `ident`, `seq` and `size` bytes of data (a pattern, as ping's), into `out`; returns the IP
/// packet length. `None` for addresses of two families or an `out` too small.
pub fn echo_request(
    out: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq: u16,
    size: usize,
) -> Option<usize> {
    let fill = |msg: &mut [u8], ty: u8| {
        msg[0] = ty;
        msg[1] = 0;
        msg[2..4].fill(0);
        msg[4..6].copy_from_slice(&ident.to_be_bytes());
        msg[6..8].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in msg[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
    };
    let plen = 8 + size;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let out = out.get_mut(..20 + plen)?;
            let (hdr, msg) = out.split_at_mut(20);
            Ipv4Repr {
                src: s.octets(),
                dst: d.octets(),
                protocol: IpProtocol::ICMP,
                payload_len: plen,
                ttl: 64,
                tos: 0,
                ident: seq,
                dont_frag: true,
            }
            .emit(&mut Ipv4Packet::new_unchecked(hdr));
            fill(msg, 8);
            let c = checksum::finish(checksum::sum(msg));
            IcmpPacket::new_unchecked(msg).set_checksum(c);
            Some(20 + plen)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let out = out.get_mut(..40 + plen)?;
            let (hdr, msg) = out.split_at_mut(40);
            let mut ip = Ipv6Packet::new_unchecked(hdr);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(u16::try_from(plen).ok()?);
            ip.set_next_header(IpProtocol::ICMPV6);
            ip.set_hop_limit(64);
            ip.set_src_addr(s.octets());
            ip.set_dst_addr(d.octets());
            fill(msg, 128);
            let ps = checksum::pseudo_v6(s.octets(), d.octets(), IpProtocol::ICMPV6.0, plen as u32);
            let c = checksum::finish(checksum::add(ps, checksum::sum(msg)));
            IcmpPacket::new_unchecked(msg).set_checksum(c);
            Some(40 + plen)
        }
        _ => None,
    }
}

/// An ICMP echo reply (IPv4 type 0 without options or fragmentation, ICMPv6 type 129 right
/// after the base header) with a correct checksum: its destination, identifier and sequence
/// number. `None` for anything else.
pub fn echo_reply(ip: &[u8]) -> Option<(IpAddr, u16, u16)> {
    let (dst, msg) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            let hl = usize::from(ip[0] & 0x0f) * 4;
            if hl != 20 || p.protocol() != IpProtocol::ICMP || p.is_fragment() {
                return None;
            }
            let msg = ip.get(20..usize::from(p.total_len()))?;
            if msg.len() < 8 || msg[0] != 0 || !checksum::verify(0, msg) {
                return None;
            }
            (IpAddr::from(p.dst_addr()), msg)
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::ICMPV6 {
                return None;
            }
            let msg = ip.get(40..40 + usize::from(p.payload_len()))?;
            let ps = checksum::pseudo_v6(
                p.src_addr(),
                p.dst_addr(),
                IpProtocol::ICMPV6.0,
                msg.len() as u32,
            );
            if msg.len() < 8 || msg[0] != 129 || !checksum::verify(ps, msg) {
                return None;
            }
            (IpAddr::from(p.dst_addr()), msg)
        }
        _ => return None,
    };
    let ident = u16::from_be_bytes([msg[4], msg[5]]);
    let seq = u16::from_be_bytes([msg[6], msg[7]]);
    Some((dst, ident, seq))
}

/// A UDP datagram with a one-byte 0xFF payload: the NAT-keepalive format of RFC 3948 §2.3,
/// also the heartbeat of the ESP-in-UDP tunnel port. Returns the IP packet length.
pub fn keepalive(
    out: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
) -> Option<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let out = out.get_mut(..29)?;
            let (hdr, u) = out.split_at_mut(20);
            Ipv4Repr {
                src: s.octets(),
                dst: d.octets(),
                protocol: IpProtocol::UDP,
                payload_len: 9,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(&mut Ipv4Packet::new_unchecked(hdr));
            udp(
                u,
                sport,
                dport,
                checksum::pseudo_v4(s.octets(), d.octets(), 17, 9),
            );
            Some(29)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let out = out.get_mut(..49)?;
            let (hdr, u) = out.split_at_mut(40);
            let mut ip = Ipv6Packet::new_unchecked(hdr);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(9);
            ip.set_next_header(IpProtocol::UDP);
            ip.set_hop_limit(64);
            ip.set_src_addr(s.octets());
            ip.set_dst_addr(d.octets());
            udp(
                u,
                sport,
                dport,
                checksum::pseudo_v6(s.octets(), d.octets(), 17, 9),
            );
            Some(49)
        }
        _ => None,
    }
}

fn udp(u: &mut [u8], sport: u16, dport: u16, pseudo: u32) {
    u[8] = 0xff;
    let mut p = UdpPacket::new_unchecked(u);
    p.set_src_port(sport);
    p.set_dst_port(dport);
    p.set_len(9);
    p.fill_checksum(pseudo);
}

/// The ICMP error rate limit of one worker (RFC 4443 §2.4(f), RFC 1812 §4.3.2.8): a token
/// bucket of `burst` tokens refilled at `rate` per second. A suppressed error costs no frame,
/// so a flood of expiring or oversized packets cannot drain the frame pool through it.
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    rate: u32,
    burst: u32,
    /// Tokens, in billionths (one token = 1e9), so that refills need no division.
    nano_tokens: u64,
    last: Option<xsec_dataplane::Timestamp>,
}

impl IcmpLimiter {
    pub fn new(rate: u32, burst: u32) -> Self {
        IcmpLimiter {
            rate,
            burst,
            nano_tokens: u64::from(burst) * 1_000_000_000,
            last: None,
        }
    }

    /// Whether an error may be sent at `now` (taking a token if so).
    pub fn allow(&mut self, now: xsec_dataplane::Timestamp) -> bool {
        if self.rate == 0 {
            return false;
        }
        let cap = u64::from(self.burst) * 1_000_000_000;
        if let Some(last) = self.last {
            let ns = u64::try_from(now.since(last).as_nanos()).unwrap_or(u64::MAX);
            self.nano_tokens = self
                .nano_tokens
                .saturating_add(ns.saturating_mul(u64::from(self.rate)))
                .min(cap);
        }
        self.last = Some(now);
        if self.nano_tokens >= 1_000_000_000 {
            self.nano_tokens -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use xsec_dataplane::wire::{Ipv4Packet, Ipv6Packet};

    fn v4(len: usize, df: bool, ttl: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        if df {
            p[6] = 0x40;
        }
        p[8] = ttl;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 1, 0, 10]);
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = checksum::finish(checksum::sum(&p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut p = v4(60, true, ttl);
            dec_ttl(&mut p).expect("decrement");
            assert_eq!(p[8], ttl - 1);
            assert!(
                Ipv4Packet::new_checked(&p[..])
                    .expect("v4")
                    .verify_checksum()
            );
        }
        let mut p = v4(60, true, 1);
        assert!(dec_ttl(&mut p).is_err());
        assert_eq!(p[8], 1, "an expired packet is left as it was");
        let mut p6 = [0u8; 40];
        p6[0] = 0x60;
        p6[7] = 1;
        assert!(dec_ttl(&mut p6).is_err());
        p6[7] = 9;
        dec_ttl(&mut p6).expect("v6");
        assert_eq!(p6[7], 8);
        assert!(dec_ttl(&mut [0x45u8; 10]).is_err());
        assert!(dec_ttl(&mut []).is_err());
    }

    #[test]
    fn icmp_frag_needed_quotes_the_packet_and_checksums() {
        let orig = v4(1500, true, 64);
        let mut out = [0u8; 2048];
        let n = icmp_error(
            &mut out,
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            &orig,
            IcmpError::TooBig { mtu: 1438 },
        )
        .expect("icmp");
        assert_eq!(n, 576);
        let ip = Ipv4Packet::new_checked(&out[..n]).expect("v4");
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), [10, 1, 0, 10]);
        assert_eq!((out[20], out[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1438);
        assert_eq!(checksum::fold(checksum::sum(&out[20..n])), 0xffff);
        assert_eq!(&out[28..48], &orig[..20]);
        // no error about an ICMP error, nor about a non-first fragment
        let mut icmp_err = v4(60, false, 64);
        icmp_err[9] = 1;
        icmp_err[20] = 3;
        assert!(
            icmp_error(
                &mut out,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &icmp_err,
                IcmpError::TimeExceeded
            )
            .is_none()
        );
        let mut frag = v4(60, false, 64);
        frag[7] = 1;
        assert!(
            icmp_error(
                &mut out,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &frag,
                IcmpError::TimeExceeded
            )
            .is_none()
        );
        // family mismatch
        assert!(
            icmp_error(
                &mut out,
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                &orig,
                IcmpError::TimeExceeded
            )
            .is_none()
        );
    }

    #[test]
    fn icmpv6_packet_too_big() {
        let mut orig = vec![0u8; 1400];
        orig[0] = 0x60;
        orig[4..6].copy_from_slice(&1360u16.to_be_bytes());
        orig[6] = 17;
        orig[7] = 64;
        orig[8] = 0xfd;
        orig[23] = 0x10;
        let mut out = [0u8; 2048];
        let src = IpAddr::V6("fd01::1".parse::<Ipv6Addr>().expect("addr"));
        let n = icmp_error(&mut out, src, &orig, IcmpError::TooBig { mtu: 1300 }).expect("icmpv6");
        assert_eq!(n, 1280);
        let ip = Ipv6Packet::new_checked(&out[..n]).expect("v6");
        assert_eq!(ip.dst_addr()[0], 0xfd);
        let icmp = IcmpPacket::new_checked(ip.payload()).expect("icmpv6");
        assert_eq!((icmp.msg_type(), icmp.code()), (2, 0));
        assert_eq!(&ip.payload()[4..8], &1300u32.to_be_bytes(), "the MTU");
        let mut s = [0u8; 16];
        s.copy_from_slice(&out[8..24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&out[24..40]);
        let ps = checksum::pseudo_v6(s, d, 58, (n - 40) as u32);
        assert_eq!(
            checksum::fold(checksum::add(ps, checksum::sum(&out[40..n]))),
            0xffff
        );
    }

    #[test]
    fn v4_fragments_reassemble_to_the_original() {
        let orig = v4(1473, false, 64);
        let fs = v4_fragment_size(20, 1000).expect("size");
        assert_eq!(fs, 976);
        let mut got = vec![0u8; 1453];
        let mut off = 0;
        let mut frags = 0;
        while off < 1453 {
            let end = (off + fs).min(1453);
            let mut out = [0u8; 1500];
            let n = v4_fragment(
                &mut out,
                &orig[..20],
                &orig[20 + off..20 + end],
                off,
                end < 1453,
            )
            .expect("frag");
            assert!(n <= 1000);
            let ip = Ipv4Packet::new_checked(&out[..n]).expect("v4");
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.frag_offset()), off);
            assert_eq!(ip.more_frags(), end < 1453);
            got[off..end].copy_from_slice(&out[20..n]);
            off = end;
            frags += 1;
        }
        assert_eq!(frags, 2);
        assert_eq!(&got[..], &orig[20..]);
        assert!(v4_fragment(&mut [0u8; 100], &orig[..20], &[0; 8], 3, true).is_none());
    }

    #[test]
    fn v6_fragment_header() {
        let mut base = [0u8; 40];
        base[0] = 0x60;
        base[6] = 50;
        let mut out = [0u8; 200];
        let n = v6_fragment(&mut out, &base, &[7u8; 64], 1232, true, 0xabcdef01).expect("frag");
        assert_eq!(n, 112);
        assert_eq!(out[6], 44);
        assert_eq!(out[40], 50);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 72);
        assert_eq!(u16::from_be_bytes([out[42], out[43]]), (1232 / 8) << 3 | 1);
        assert_eq!(&out[44..48], &0xabcdef01u32.to_be_bytes());
    }

    #[test]
    fn keepalives_are_valid_udp() {
        let mut out = [0u8; 64];
        let n = keepalive(
            &mut out,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            2746,
            2746,
        )
        .expect("v4");
        assert_eq!(n, 29);
        let ip = Ipv4Packet::new_checked(&out[..n]).expect("v4");
        assert!(ip.verify_checksum());
        let ps = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 9);
        assert_eq!(
            checksum::fold(checksum::add(ps, checksum::sum(&out[20..29]))),
            0xffff
        );
        assert_eq!(out[28], 0xff);
        let n6 = keepalive(
            &mut out,
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            4500,
            4500,
        )
        .expect("v6");
        assert_eq!(n6, 49);
        assert!(
            keepalive(
                &mut out,
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                1,
                1
            )
            .is_none()
        );
    }

    #[test]
    fn icmp_limiter_is_a_token_bucket() {
        use std::time::Duration;
        use xsec_dataplane::Timestamp;
        let t0 = Timestamp::from_secs(100);
        let mut l = IcmpLimiter::new(10, 5);
        // the burst, then nothing
        assert_eq!((0..20).filter(|_| l.allow(t0)).count(), 5);
        // 10 per second: 100 ms gives one
        let t1 = t0.plus(Duration::from_millis(100));
        assert!(l.allow(t1));
        assert!(!l.allow(t1));
        // a long pause refills only up to the burst
        let t2 = t1.plus(Duration::from_secs(60));
        assert_eq!((0..20).filter(|_| l.allow(t2)).count(), 5);
        // over 10 s of a flood at 1 per ms: about rate x 10 s + burst
        let mut sent = 0;
        for ms in 0..10_000u64 {
            if l.allow(t2.plus(Duration::from_millis(ms + 1))) {
                sent += 1;
            }
        }
        assert!((99..=101).contains(&sent), "{sent}");
        let mut off = IcmpLimiter::new(0, 5);
        assert!(!off.allow(t0));
    }
}
