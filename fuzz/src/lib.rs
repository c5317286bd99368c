//! Shared pieces of xsec's fuzz targets: frames, packet builders, seed output, and a small
//! reference model of IP parsing written from the RFCs (RFC 791, RFC 8200, RFC 4301
//! §4.4.1.1) rather than from the engine's code, so that the targets can say what the engine
//! must do with a packet, not only that it must not panic. Checksums (RFC 768/793/1071) are
//! summed with the dataplane's [`checksum`] module.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::spd::{NonPolicy, Spd};
use xsec_dataplane::{PacketBuf, Timestamp};

/// Headroom and tailroom of every frame the targets build.
pub const HEADROOM: usize = 128;
pub const TAILROOM: usize = 128;

/// The time the targets run at (lifetimes are not what they test).
pub const NOW: Timestamp = Timestamp::from_secs(1_000);

/// This gateway and its peer, outer addresses.
pub const GW4: [u8; 4] = [10, 0, 0, 2];
pub const PEER4: [u8; 4] = [10, 0, 0, 1];
pub const GW6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const PEER6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ESP: u8 = 50;
pub const PROTO_AH: u8 = 51;
pub const PROTO_ICMPV6: u8 = 58;

/// `data` in a frame with [`HEADROOM`] bytes before it and [`TAILROOM`] after.
pub fn frame(data: &[u8]) -> PacketBuf<Vec<u8>> {
    let buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
    PacketBuf::from_slice(buf, HEADROOM, data).expect("the frame is sized for the data")
}

/// An SPD without policies (compiled once: building one per input would cost more than
/// the packet).
pub fn empty_spd(inbound_default: NonPolicy) -> Arc<Spd> {
    static DISCARD: OnceLock<Arc<Spd>> = OnceLock::new();
    static BYPASS: OnceLock<Arc<Spd>> = OnceLock::new();
    let cell = match inbound_default {
        NonPolicy::Discard => &DISCARD,
        NonPolicy::Bypass => &BYPASS,
    };
    cell.get_or_init(|| Arc::new(Spd::empty(inbound_default)))
        .clone()
}

/// Deterministic keying material for an algorithm pair, varied by `salt`.
pub fn keys(enc: EncAlg, auth: AuthAlg, salt: u8) -> (Vec<u8>, Vec<u8>) {
    let ek = (0..enc.keymat_len())
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect();
    let ak = (0..auth.key_len())
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(salt ^ 0x5a))
        .collect();
    (ek, ak)
}

/// Write seed inputs into the corpus directory named by `XSEC_FUZZ_SEED_DIR` (set by
/// `cargo xtask fuzz` / `cargo xtask test`); nothing when it is unset.
pub fn write_seeds(seeds: &[(String, Vec<u8>)]) {
    let Some(dir) = std::env::var_os("XSEC_FUZZ_SEED_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let _ = std::fs::create_dir_all(dir);
    for (name, bytes) in seeds {
        let _ = std::fs::write(dir.join(format!("seed-{name}")), bytes);
    }
}

/// Hex of a byte string (for assertion messages).
pub use hex::encode as hex;

/// The checksums are the dataplane's own (RFC 1071; its unit tests hold it against a naive
/// sum), so a target's expectations and the engine's output are summed alike.
pub use xsec_dataplane::wire::checksum;

/// Pseudo-header sum (RFC 768, RFC 8200 §8.1) for 4- or 16-byte addresses.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    if src.len() == 16 {
        checksum::pseudo_v6(to16(src), to16(dst), proto, len as u32)
    } else {
        checksum::pseudo_v4(to4(src), to4(dst), proto, len as u16)
    }
}

/// An IPv4 header (20 bytes + `options`, a multiple of 4) with a valid checksum, followed
/// by `payload`.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    tos: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hl = 20 + options.len();
    let total = hl + payload.len();
    let mut p = Vec::with_capacity(total);
    p.push(0x40 | (hl / 4) as u8);
    p.push(tos);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(options);
    let c = checksum::compute(0, &p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet; `payload` starts with the header named by `nh` (extension headers
/// included).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], tc: u8, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    p.push(0x60 | tc >> 4);
    p.push(tc << 4);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(nh);
    p.push(64);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram; the checksum is computed when addresses are given (IPv6 needs it),
/// zero otherwise (allowed over IPv4).
pub fn udp(sport: u16, dport: u16, payload: &[u8], addrs: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    if let Some((s, d)) = addrs {
        let mut c = checksum::compute(pseudo(s, d, PROTO_UDP, len), &u);
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

/// A plain UDP packet between two addresses of one family.
pub fn udp_packet(
    v6: bool,
    src: &[u8],
    dst: &[u8],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let u = udp(sport, dport, payload, Some((src, dst)));
    if v6 {
        ipv6(to16(src), to16(dst), 0, PROTO_UDP, &u)
    } else {
        ipv4(to4(src), to4(dst), PROTO_UDP, 0, &[], &u)
    }
}

/// A plain TCP segment (SYN) with a valid checksum.
pub fn tcp_packet(
    v6: bool,
    src: &[u8],
    dst: &[u8],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = checksum::compute(pseudo(src, dst, PROTO_TCP, t.len()), &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    if v6 {
        ipv6(to16(src), to16(dst), 0, PROTO_TCP, &t)
    } else {
        ipv4(to4(src), to4(dst), PROTO_TCP, 0, &[], &t)
    }
}

/// An ICMP echo request (ICMPv6 over IPv6).
pub fn ping_packet(v6: bool, src: &[u8], dst: &[u8]) -> Vec<u8> {
    let mut m = vec![
        if v6 { 128 } else { 8 },
        0,
        0,
        0,
        0x12,
        0x34,
        0,
        1,
        b'x',
        b's',
        b'e',
        b'c',
    ];
    let ps = if v6 {
        pseudo(src, dst, PROTO_ICMPV6, m.len())
    } else {
        0
    };
    let c = checksum::compute(ps, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    if v6 {
        ipv6(to16(src), to16(dst), 0, PROTO_ICMPV6, &m)
    } else {
        ipv4(to4(src), to4(dst), PROTO_ICMP, 0, &[], &m)
    }
}

pub fn to4(a: &[u8]) -> [u8; 4] {
    let mut o = [0; 4];
    o.copy_from_slice(&a[..4]);
    o
}

pub fn to16(a: &[u8]) -> [u8; 16] {
    let mut o = [0; 16];
    o.copy_from_slice(&a[..16]);
    o
}

// ---- the reference model -----------------------------------------------------------------

/// An IP packet as RFC 791 / RFC 8200 describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    pub v6: bool,
    /// Bytes the header claims (IPv4 total length; IPv6 40 + payload length).
    pub total: usize,
    /// IPv4 header length; 40 for IPv6.
    pub hl: usize,
    /// Upper-layer protocol and its offset (after IPv6 extension headers).
    pub proto: u8,
    pub ul_off: usize,
    /// Offset of the byte naming `proto`.
    pub nh_field: usize,
    /// Some fragment: IPv4 MF or offset, or an IPv6 fragment header.
    pub fragment: bool,
    /// A fragment with a non-zero offset (no upper-layer header).
    pub later_fragment: bool,
    /// IPv4 header checksum verifies (always true for IPv6).
    pub checksum_ok: bool,
}

/// The length an IP header claims, if its version and length fields are consistent with the
/// bytes (the checks of a header view, without walking IPv6 extension headers).
pub fn ip_len(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let hl = usize::from(p[0] & 15) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            (hl >= 20 && total >= hl && total <= p.len()).then_some(total)
        }
        6 if p.len() >= 40 => {
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            (total <= p.len()).then_some(total)
        }
        _ => None,
    }
}

/// The extension-header walk stops after this many headers (the engine's bound).
pub const MAX_EXT_HEADERS: usize = 12;

/// Parse the IP header of `p`: `None` if the version, a length or an extension header is
/// inconsistent with the bytes.
pub fn parse_ip(p: &[u8]) -> Option<Ip> {
    match p.first()? >> 4 {
        4 => {
            if p.len() < 20 {
                return None;
            }
            let hl = usize::from(p[0] & 15) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if hl < 20 || total < hl || total > p.len() {
                return None;
            }
            let ff = u16::from_be_bytes([p[6], p[7]]);
            let offset = ff & 0x1fff;
            let mf = ff & 0x2000 != 0;
            Some(Ip {
                v6: false,
                total,
                hl,
                proto: p[9],
                ul_off: hl,
                nh_field: 9,
                fragment: mf || offset != 0,
                later_fragment: offset != 0,
                checksum_ok: checksum::verify(0, &p[..hl]),
            })
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() {
                return None;
            }
            let p = &p[..total];
            let (mut nh, mut nh_field, mut off) = (p[6], 6, 40);
            let (mut fragment, mut later) = (false, false);
            let mut n = 0;
            loop {
                let len = match nh {
                    0 | 43 | 60 | 139 | 140 => (usize::from(*p.get(off + 1)?) + 1) * 8,
                    44 => {
                        let fo = u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]);
                        fragment = true;
                        later |= fo & 0xfff8 != 0;
                        8
                    }
                    51 => (usize::from(*p.get(off + 1)?) + 2) * 4,
                    _ => break,
                };
                n += 1;
                if n > MAX_EXT_HEADERS || off + len > total {
                    return None;
                }
                nh_field = off;
                nh = p[off];
                off += len;
                if later {
                    break;
                }
            }
            Some(Ip {
                v6: true,
                total,
                hl: 40,
                proto: nh,
                ul_off: off,
                nh_field,
                fragment,
                later_fragment: later,
                checksum_ok: true,
            })
        }
        _ => None,
    }
}

/// A selector "port" field (RFC 4301 §4.4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Num(u16),
    /// ICMP type (source field) or code (destination field).
    Icmp(u8),
    Opaque,
}

/// What selectors look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub sport: Port,
    pub dport: Port,
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// The selector key of a whole packet: `None` if the IP header is inconsistent or the
/// upper-layer header of an unfragmented packet is cut short.
pub fn key_of(p: &[u8]) -> Option<Key> {
    let ip = parse_ip(p)?;
    let (src, dst) = if ip.v6 {
        (
            u128::from_be_bytes(to16(&p[8..24])),
            u128::from_be_bytes(to16(&p[24..40])),
        )
    } else {
        (
            u128::from(u32::from_be_bytes(to4(&p[12..16]))),
            u128::from(u32::from_be_bytes(to4(&p[16..20]))),
        )
    };
    let l4 = &p[ip.ul_off..ip.total];
    let (sport, dport) = if ip.later_fragment {
        (Port::Opaque, Port::Opaque)
    } else if has_ports(ip.proto) {
        match l4 {
            [a, b, c, d, ..] => (
                Port::Num(u16::from_be_bytes([*a, *b])),
                Port::Num(u16::from_be_bytes([*c, *d])),
            ),
            _ if ip.fragment => (Port::Opaque, Port::Opaque),
            _ => return None,
        }
    } else if matches!(ip.proto, PROTO_ICMP | PROTO_ICMPV6) {
        match l4 {
            [t, c, ..] => (Port::Icmp(*t), Port::Icmp(*c)),
            _ if ip.fragment => (Port::Opaque, Port::Opaque),
            _ => return None,
        }
    } else {
        (Port::Opaque, Port::Opaque)
    };
    Some(Key {
        v6: ip.v6,
        src,
        dst,
        proto: ip.proto,
        sport,
        dport,
    })
}

/// Whether a decapsulated packet is traffic the engine must forward: a consistent IP header
/// (IPv4 checksum included; the IPv6 extension-header chain walks). What it carries is the
/// host's own, ESP, AH, IKE or ESP in UDP included: the engine peels another layer only for
/// an SA that an inbound bundle policy names, and the fuzz targets' inbound SPDs have none.
/// (Whether the upper-layer header must be readable depends on the SA's selectors, RFC 4301
/// §5.2: the callers check that with [`key_of`] where selectors apply.)
pub fn plain_after_decap(p: &[u8]) -> bool {
    parse_ip(p).is_some_and(|ip| ip.checksum_ok)
}

/// RFC 3948 §3.1.2 (transport mode after NAT): the TCP or UDP checksum recomputed over the
/// addresses `p` carries; a zero UDP checksum over IPv4 ("none") stays zero, a computed UDP
/// checksum of zero is sent as 0xffff. `hl` is where the TCP/UDP header starts.
pub fn fix_l4_checksum(p: &mut [u8], hl: usize, proto: u8, v6: bool) {
    let l4_len = p.len() - hl;
    let off = if proto == PROTO_TCP { 16 } else { 6 };
    if l4_len < off + 2 {
        return;
    }
    if proto == PROTO_UDP && !v6 && p[hl + 6] == 0 && p[hl + 7] == 0 {
        return;
    }
    p[hl + off] = 0;
    p[hl + off + 1] = 0;
    let ps = if v6 {
        pseudo(&p[8..24], &p[24..40], proto, l4_len)
    } else {
        pseudo(&p[12..16], &p[16..20], proto, l4_len)
    };
    let mut c = checksum::compute(ps, &p[hl..]);
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    p[hl + off..hl + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Check what outbound processing produced: an IP packet whose lengths agree with the
/// window, a valid IPv4 header checksum, ESP or UDP-encapsulated ESP with consistent UDP
/// length (and a valid UDP checksum over IPv6, zero over IPv4 per RFC 3948 §2.1).
pub fn check_esp_packet(p: &[u8]) -> Result<(), String> {
    let ip = parse_ip(p).ok_or("not a well-formed IP packet")?;
    if ip.total != p.len() {
        return Err(format!(
            "IP length {} but the window holds {}",
            ip.total,
            p.len()
        ));
    }
    if !ip.checksum_ok {
        return Err("bad IPv4 header checksum".into());
    }
    if ip.fragment {
        return Err("ESP output is a fragment".into());
    }
    let l4 = &p[ip.ul_off..];
    let esp = match ip.proto {
        PROTO_ESP => l4,
        PROTO_UDP => {
            if l4.len() < 8 || usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4.len() {
                return Err("UDP length does not match".into());
            }
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            if ip.v6 {
                if c == 0
                    || !checksum::verify(pseudo(&p[8..24], &p[24..40], PROTO_UDP, l4.len()), l4)
                {
                    return Err("bad UDP checksum over IPv6".into());
                }
            } else if c != 0 {
                return Err("UDP checksum over IPv4 is not zero (RFC 3948 §2.1)".into());
            }
            &l4[8..]
        }
        n => return Err(format!("outer protocol {n} is neither ESP nor UDP")),
    };
    if esp.len() < 8 || esp[..4] == [0, 0, 0, 0] {
        return Err("no ESP header".into());
    }
    Ok(())
}

/// Whether a verdict leaves the packet as it came (possibly trimmed to its IP length).
pub fn unchanged_prefix(before: &[u8], after: &[u8]) -> bool {
    after.len() <= before.len() && before.starts_with(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_agree_with_the_model() {
        let p = udp_packet(false, &PEER4, &GW4, 1, 2, b"hello");
        let ip = parse_ip(&p).unwrap();
        assert!(ip.checksum_ok && ip.total == p.len() && ip.proto == PROTO_UDP);
        let p = tcp_packet(true, &PEER6, &GW6, 1, 2, b"x");
        let k = key_of(&p).unwrap();
        assert_eq!(
            (k.proto, k.sport, k.dport),
            (PROTO_TCP, Port::Num(1), Port::Num(2))
        );
        let mut q = p.clone();
        fix_l4_checksum(&mut q, 40, PROTO_TCP, true);
        assert_eq!(p, q);
    }
}
