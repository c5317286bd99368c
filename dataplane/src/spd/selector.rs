//! Selectors (RFC 4301 §4.4.1.1): local and remote address ranges, next-layer protocol, and
//! the two "port" fields — TCP/UDP/SCTP ports, or ICMP/ICMPv6 message type and code.
//!
//! Addresses are kept as integers (IPv4 in a `u32`, IPv6 in a `u128`) so ranges compare
//! directly. Ports live in one numeric domain shared with the two non-port cases:
//!
//! | value | meaning |
//! |---|---|
//! | 0 ..= 65535 | a TCP/UDP/SCTP port |
//! | 65536 | OPAQUE: the field is absent (non-initial fragment, a protocol without ports) |
//! | 65537 + t | ICMP type `t` (local field) or code `t` (remote field) |
//!
//! so `ANY` is the whole domain, a port range never matches an ICMP packet, and OPAQUE
//! matches only packets whose ports are unavailable.

use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, WireError};
use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Value of the port fields when they are absent.
pub const OPAQUE: u32 = 65536;
/// Base of the ICMP type/code values in the port domain.
pub const ICMP_BASE: u32 = 65537;
/// Largest value of the port domain.
pub const PORT_DOMAIN_MAX: u32 = ICMP_BASE + 255;

/// Traffic direction, as seen by this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        }
    }

    pub const fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// An address selector: ANY, or an inclusive range within one family (a single address and a
/// prefix are ranges too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrRange {
    Any,
    V4 { lo: u32, hi: u32 },
    V6 { lo: u128, hi: u128 },
}

/// Why a selector is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("prefix length {len} is longer than {max} bits")]
    PrefixLength { len: u8, max: u8 },
    #[error("range {0}: the first address is after the last")]
    EmptyRange(String),
    #[error("range mixes IPv4 and IPv6")]
    MixedFamily,
    #[error("local and remote addresses are of different IP versions")]
    LocalRemoteFamily,
    #[error("invalid port or range {0:?} (expected any, opaque, N or N-M with N <= M <= 65535)")]
    Port(String),
    #[error("port selectors need protocol tcp, udp or sctp")]
    PortsWithoutProtocol,
    #[error("ICMP type/code selectors need protocol icmp or ipv6-icmp")]
    IcmpWithoutIcmp,
    #[error("protocol {proto} does not belong to IPv{version} addresses")]
    IcmpFamily { proto: &'static str, version: u8 },
    #[error(
        "invalid protocol {0:?} (expected any, a name like tcp, udp, icmp, ipv6-icmp, esp, gre, or 0-255)"
    )]
    Protocol(String),
}

fn v6_prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl AddrRange {
    pub fn host(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => {
                let v = u32::from(a);
                AddrRange::V4 { lo: v, hi: v }
            }
            IpAddr::V6(a) => {
                let v = u128::from(a);
                AddrRange::V6 { lo: v, hi: v }
            }
        }
    }

    /// A prefix; host bits of `a` are ignored.
    pub fn prefix(a: IpAddr, len: u8) -> Result<Self, SelectorError> {
        match a {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(SelectorError::PrefixLength { len, max: 32 });
                }
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                let lo = u32::from(a) & mask;
                Ok(AddrRange::V4 { lo, hi: lo | !mask })
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(SelectorError::PrefixLength { len, max: 128 });
                }
                let mask = v6_prefix_mask(len);
                let lo = u128::from(a) & mask;
                Ok(AddrRange::V6 { lo, hi: lo | !mask })
            }
        }
    }

    pub fn range(first: IpAddr, last: IpAddr) -> Result<Self, SelectorError> {
        match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => Ok(AddrRange::V4 {
                lo: a.into(),
                hi: b.into(),
            }),
            (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(a) <= u128::from(b) => Ok(AddrRange::V6 {
                lo: a.into(),
                hi: b.into(),
            }),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err(SelectorError::EmptyRange(format!("{first}-{last}")))
            }
            _ => Err(SelectorError::MixedFamily),
        }
    }

    pub fn family(&self) -> Option<Family> {
        match self {
            AddrRange::Any => None,
            AddrRange::V4 { .. } => Some(Family::V4),
            AddrRange::V6 { .. } => Some(Family::V6),
        }
    }

    /// Whether the address `a` (IPv4 in the low 32 bits when `v6` is false) is in range.
    #[inline]
    pub fn contains(&self, v6: bool, a: u128) -> bool {
        match *self {
            AddrRange::Any => true,
            AddrRange::V4 { lo, hi } => !v6 && (u128::from(lo)..=u128::from(hi)).contains(&a),
            AddrRange::V6 { lo, hi } => v6 && (lo..=hi).contains(&a),
        }
    }

    pub fn contains_ip(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.contains(false, u128::from(u32::from(a))),
            IpAddr::V6(a) => self.contains(true, u128::from(a)),
        }
    }
}

impl FromStr for AddrRange {
    type Err = SelectorError;

    /// `any`, `10.1.0.5`, `10.1.0.0/24`, `10.1.0.5-10.1.0.9`, `fd00::/64`, `::/0`, …
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") {
            return Ok(AddrRange::Any);
        }
        let ip = |t: &str| {
            t.trim()
                .parse::<IpAddr>()
                .map_err(|_| SelectorError::Address(t.trim().to_owned()))
        };
        if let Some((a, len)) = s.split_once('/') {
            let len: u8 = len
                .trim()
                .parse()
                .map_err(|_| SelectorError::Address(s.to_owned()))?;
            return AddrRange::prefix(ip(a)?, len);
        }
        if let Some((a, b)) = s.split_once('-') {
            return AddrRange::range(ip(a)?, ip(b)?);
        }
        Ok(AddrRange::host(ip(s)?))
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrRange::Any => f.write_str("any"),
            AddrRange::V4 { lo, hi } => {
                let size = hi - lo;
                if lo == hi {
                    write!(f, "{}", Ipv4Addr::from(lo))
                } else if (size.wrapping_add(1)).is_power_of_two() && lo & size == 0
                    || (lo == 0 && hi == u32::MAX)
                {
                    let len = if lo == 0 && hi == u32::MAX {
                        0
                    } else {
                        32 - (size + 1).trailing_zeros()
                    };
                    write!(f, "{}/{}", Ipv4Addr::from(lo), len)
                } else {
                    write!(f, "{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))
                }
            }
            AddrRange::V6 { lo, hi } => {
                let size = hi - lo;
                if lo == hi {
                    write!(f, "{}", Ipv6Addr::from(lo))
                } else if lo == 0 && hi == u128::MAX {
                    write!(f, "{}/0", Ipv6Addr::from(lo))
                } else if (size + 1).is_power_of_two() && lo & size == 0 {
                    write!(
                        f,
                        "{}/{}",
                        Ipv6Addr::from(lo),
                        128 - (size + 1).trailing_zeros()
                    )
                } else {
                    write!(f, "{}-{}", Ipv6Addr::from(lo), Ipv6Addr::from(hi))
                }
            }
        }
    }
}

/// A "port" selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSel {
    /// Any value, OPAQUE included.
    Any,
    /// An inclusive range of TCP/UDP/SCTP ports.
    Range { lo: u16, hi: u16 },
    /// Only packets whose port fields are absent.
    Opaque,
    /// An inclusive range of ICMP types (in the local field) or codes (in the remote field).
    Icmp { lo: u8, hi: u8 },
}

impl PortSel {
    pub const fn port(p: u16) -> Self {
        PortSel::Range { lo: p, hi: p }
    }

    /// The inclusive interval this selector covers in the port domain.
    pub const fn domain(&self) -> (u32, u32) {
        match *self {
            PortSel::Any => (0, PORT_DOMAIN_MAX),
            PortSel::Range { lo, hi } => (lo as u32, hi as u32),
            PortSel::Opaque => (OPAQUE, OPAQUE),
            PortSel::Icmp { lo, hi } => (ICMP_BASE + lo as u32, ICMP_BASE + hi as u32),
        }
    }

    #[inline]
    pub fn contains(&self, v: u32) -> bool {
        let (lo, hi) = self.domain();
        (lo..=hi).contains(&v)
    }
}

impl FromStr for PortSel {
    type Err = SelectorError;

    /// `any`, `opaque`, `500`, `1024-65535`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("any") {
            return Ok(PortSel::Any);
        }
        if t.eq_ignore_ascii_case("opaque") {
            return Ok(PortSel::Opaque);
        }
        let bad = || SelectorError::Port(t.to_owned());
        let (lo, hi) = match t.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<u16>().map_err(|_| bad())?,
                b.trim().parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = t.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        Ok(PortSel::Range { lo, hi })
    }
}

impl fmt::Display for PortSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PortSel::Any => f.write_str("any"),
            PortSel::Opaque => f.write_str("opaque"),
            PortSel::Range { lo, hi } if lo == hi => write!(f, "{lo}"),
            PortSel::Range { lo, hi } => write!(f, "{lo}-{hi}"),
            PortSel::Icmp { lo, hi } if lo == hi => write!(f, "{lo}"),
            PortSel::Icmp { lo, hi } => write!(f, "{lo}-{hi}"),
        }
    }
}

/// Parse a protocol name or number; `any` is `None`.
pub fn parse_protocol(s: &str) -> Result<Option<IpProtocol>, SelectorError> {
    let t = s.trim().to_ascii_lowercase();
    let p = match t.as_str() {
        "any" | "*" => return Ok(None),
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" | "icmp6" => 58,
        "sctp" => 132,
        "ipip" | "ipv4" => 4,
        "ipv6" => 41,
        "ospf" => 89,
        n => n
            .parse::<u8>()
            .map_err(|_| SelectorError::Protocol(s.to_owned()))?,
    };
    Ok(Some(IpProtocol(p)))
}

/// An SPD or SA selector set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    pub local: AddrRange,
    pub remote: AddrRange,
    /// Next-layer protocol; `None` is ANY.
    pub proto: Option<IpProtocol>,
    /// Local port, or ICMP type.
    pub local_port: PortSel,
    /// Remote port, or ICMP code.
    pub remote_port: PortSel,
}

impl Default for Selector {
    fn default() -> Self {
        Self::ANY
    }
}

impl Selector {
    /// Matches every packet.
    pub const ANY: Selector = Selector {
        local: AddrRange::Any,
        remote: AddrRange::Any,
        proto: None,
        local_port: PortSel::Any,
        remote_port: PortSel::Any,
    };

    /// Local and remote addresses, anything else.
    pub fn addresses(local: AddrRange, remote: AddrRange) -> Self {
        Selector {
            local,
            remote,
            ..Self::ANY
        }
    }

    /// Which address family the selector's addresses limit it to, if any.
    pub fn family(&self) -> Option<Family> {
        self.local.family().or(self.remote.family())
    }

    /// Check internal consistency.
    pub fn validate(&self) -> Result<(), SelectorError> {
        if let (Some(a), Some(b)) = (self.local.family(), self.remote.family())
            && a != b
        {
            return Err(SelectorError::LocalRemoteFamily);
        }
        let addr_family = self.local.family().or(self.remote.family());
        match self.proto {
            Some(IpProtocol::ICMP) if addr_family == Some(Family::V6) => {
                return Err(SelectorError::IcmpFamily {
                    proto: "icmp",
                    version: 6,
                });
            }
            Some(IpProtocol::ICMPV6) if addr_family == Some(Family::V4) => {
                return Err(SelectorError::IcmpFamily {
                    proto: "ipv6-icmp",
                    version: 4,
                });
            }
            _ => {}
        }
        let icmp = self.proto.is_some_and(|p| p.is_icmp());
        for p in [self.local_port, self.remote_port] {
            match p {
                PortSel::Range { .. } if !self.proto.is_some_and(|p| p.has_ports()) => {
                    return Err(SelectorError::PortsWithoutProtocol);
                }
                PortSel::Icmp { .. } if !icmp => return Err(SelectorError::IcmpWithoutIcmp),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a packet matches, in direction `dir` (outbound: local = source).
    #[inline]
    pub fn matches(&self, dir: Direction, k: &PacketKey) -> bool {
        let (local, remote) = k.local_remote(dir);
        let (lp, rp) = k.ports(dir);
        self.local.contains(k.v6, local)
            && self.remote.contains(k.v6, remote)
            && self.proto.is_none_or(|p| p.0 == k.proto)
            && self.local_port.contains(lp)
            && self.remote_port.contains(rp)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local {} remote {}", self.local, self.remote)?;
        if let Some(p) = self.proto {
            write!(f, " proto {p}")?;
        }
        let icmp = self.proto.is_some_and(|p| p.is_icmp());
        let (ln, rn) = if icmp {
            ("type", "code")
        } else {
            ("local-port", "remote-port")
        };
        if self.local_port != PortSel::Any {
            write!(f, " {ln} {}", self.local_port)?;
        }
        if self.remote_port != PortSel::Any {
            write!(f, " {rn} {}", self.remote_port)?;
        }
        Ok(())
    }
}

/// What the SPD and the SA selector check look at in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    pub v6: bool,
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    pub dst: u128,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Source port, ICMP type + [`ICMP_BASE`], or [`OPAQUE`].
    pub src_port: u32,
    /// Destination port, ICMP code + [`ICMP_BASE`], or [`OPAQUE`].
    pub dst_port: u32,
    /// Destination is multicast or the limited broadcast address: never protected.
    pub dst_multicast: bool,
}

impl PacketKey {
    /// (local, remote) addresses for a direction.
    #[inline(always)]
    pub fn local_remote(&self, dir: Direction) -> (u128, u128) {
        match dir {
            Direction::Outbound => (self.src, self.dst),
            Direction::Inbound => (self.dst, self.src),
        }
    }

    /// (local, remote) port-domain values for a direction. ICMP type and code are not
    /// directional: type is always the "local" field, code the "remote" one.
    #[inline(always)]
    pub fn ports(&self, dir: Direction) -> (u32, u32) {
        if self.src_port >= ICMP_BASE || dir == Direction::Outbound {
            (self.src_port, self.dst_port)
        } else {
            (self.dst_port, self.src_port)
        }
    }

    /// Describe a packet for the policy test (no bytes needed).
    pub fn describe(
        proto: Option<IpProtocol>,
        src: IpAddr,
        src_port: Option<u16>,
        dst: IpAddr,
        dst_port: Option<u16>,
    ) -> Self {
        let (v6, s, d) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (false, u128::from(u32::from(s)), u128::from(u32::from(d)))
            }
            (s, d) => (true, to_u128(s), to_u128(d)),
        };
        let proto = proto.map_or(0, |p| p.0);
        let (sp, dp) = if IpProtocol(proto).is_icmp() {
            (
                src_port.map_or(OPAQUE, |t| ICMP_BASE + u32::from(t & 0xff)),
                dst_port.map_or(OPAQUE, |c| ICMP_BASE + u32::from(c & 0xff)),
            )
        } else {
            (
                src_port.map_or(OPAQUE, u32::from),
                dst_port.map_or(OPAQUE, u32::from),
            )
        };
        PacketKey {
            v6,
            src: s,
            dst: d,
            proto,
            src_port: sp,
            dst_port: dp,
            dst_multicast: is_multicast(v6, d),
        }
    }

    /// Extract the key from an IP packet (IPv4 or IPv6, by the version nibble).
    ///
    /// Non-initial fragments get OPAQUE ports (RFC 4301 §4.4.1.1); a whole packet whose
    /// upper-layer header is cut short is malformed.
    #[inline(always)]
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet)?;
                let src = u128::from(u32::from_be_bytes(ip.src_addr()));
                let dst = u128::from(u32::from_be_bytes(ip.dst_addr()));
                let proto = ip.protocol();
                let (sp, dp) = if ip.frag_offset() != 0 {
                    (OPAQUE, OPAQUE)
                } else {
                    ports_of(proto, ip.payload(), ip.is_fragment())?
                };
                Ok(PacketKey {
                    v6: false,
                    src,
                    dst,
                    proto: proto.0,
                    src_port: sp,
                    dst_port: dp,
                    dst_multicast: is_multicast(false, dst),
                })
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                let src = u128::from_be_bytes(ip.src_addr());
                let dst = u128::from_be_bytes(ip.dst_addr());
                let ul = ip.upper_layer()?;
                let (sp, dp) = if ul.later_fragment {
                    (OPAQUE, OPAQUE)
                } else {
                    let end = ip.total_len();
                    ports_of(ul.protocol, &packet[ul.offset..end], ul.fragment)?
                };
                Ok(PacketKey {
                    v6: true,
                    src,
                    dst,
                    proto: ul.protocol.0,
                    src_port: sp,
                    dst_port: dp,
                    dst_multicast: is_multicast(true, dst),
                })
            }
            Some(_) => Err(WireError::Malformed),
            None => Err(WireError::Truncated),
        }
    }
}

#[inline]
fn ports_of(proto: IpProtocol, l4: &[u8], fragment: bool) -> Result<(u32, u32), WireError> {
    if proto.has_ports() {
        match l4 {
            [a, b, c, d, ..] => Ok((
                u32::from(u16::from_be_bytes([*a, *b])),
                u32::from(u16::from_be_bytes([*c, *d])),
            )),
            _ if fragment => Ok((OPAQUE, OPAQUE)),
            _ => Err(WireError::Truncated),
        }
    } else if proto.is_icmp() {
        match l4 {
            [t, c, ..] => Ok((ICMP_BASE + u32::from(*t), ICMP_BASE + u32::from(*c))),
            _ if fragment => Ok((OPAQUE, OPAQUE)),
            _ => Err(WireError::Truncated),
        }
    } else {
        Ok((OPAQUE, OPAQUE))
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Multicast (224.0.0.0/4, ff00::/8) or the IPv4 limited broadcast address.
#[inline]
pub fn is_multicast(v6: bool, dst: u128) -> bool {
    if v6 {
        dst >> 120 == 0xff
    } else {
        (dst as u32) >> 28 == 0xe || dst as u32 == u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_show_addresses() {
        for s in [
            "any",
            "10.1.0.0/24",
            "10.1.0.5",
            "10.1.0.5-10.1.0.9",
            "fd00::/64",
            "::/0",
            "0.0.0.0/0",
            "fd00::1-fd00::9",
        ] {
            assert_eq!(s.parse::<AddrRange>().unwrap().to_string(), s);
        }
        assert_eq!(
            "10.1.0.77/24".parse::<AddrRange>().unwrap().to_string(),
            "10.1.0.0/24"
        );
        assert!("10.1.0.9-10.1.0.5".parse::<AddrRange>().is_err());
        assert!("10.1.0.0/33".parse::<AddrRange>().is_err());
        assert!("10.1.0.1-fd00::1".parse::<AddrRange>().is_err());
        assert!("10.1.0".parse::<AddrRange>().is_err());
    }

    #[test]
    fn ports() {
        assert_eq!("80".parse::<PortSel>().unwrap(), PortSel::port(80));
        assert_eq!(
            "1024-65535".parse::<PortSel>().unwrap(),
            PortSel::Range {
                lo: 1024,
                hi: 65535
            }
        );
        assert!("9-3".parse::<PortSel>().is_err());
        assert!("70000".parse::<PortSel>().is_err());
        assert!(PortSel::Any.contains(OPAQUE));
        assert!(!PortSel::Range { lo: 0, hi: 65535 }.contains(OPAQUE));
        assert!(!PortSel::Range { lo: 0, hi: 65535 }.contains(ICMP_BASE + 8));
        assert!(PortSel::Opaque.contains(OPAQUE));
    }

    #[test]
    fn validation() {
        let mut s = Selector::addresses("10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap());
        assert_eq!(s.validate(), Err(SelectorError::LocalRemoteFamily));
        s.remote = AddrRange::Any;
        s.local_port = PortSel::port(80);
        assert_eq!(s.validate(), Err(SelectorError::PortsWithoutProtocol));
        s.proto = Some(IpProtocol::TCP);
        assert!(s.validate().is_ok());
        s.local_port = PortSel::Icmp { lo: 8, hi: 8 };
        assert_eq!(s.validate(), Err(SelectorError::IcmpWithoutIcmp));
        s.proto = Some(IpProtocol::ICMPV6);
        assert!(matches!(
            s.validate(),
            Err(SelectorError::IcmpFamily { .. })
        ));
    }

    #[test]
    fn keys_from_packets() {
        // IPv4 UDP 10.1.0.10:1234 -> 10.2.0.10:5000
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 10, 10, 2, 0, 10,
        ];
        p.extend_from_slice(&[0x04, 0xd2, 0x13, 0x88, 0, 8, 0, 0]);
        let k = PacketKey::parse(&p).unwrap();
        assert_eq!((k.src_port, k.dst_port, k.proto), (1234, 5000, 17));
        assert_eq!(k.ports(Direction::Inbound), (5000, 1234));
        // later fragment: opaque
        p[6] = 0x00;
        p[7] = 0x10;
        let k = PacketKey::parse(&p).unwrap();
        assert_eq!((k.src_port, k.dst_port), (OPAQUE, OPAQUE));
        // cut upper layer on a whole packet: malformed
        let mut q = p[..22].to_vec();
        q[3] = 22;
        q[7] = 0;
        assert!(PacketKey::parse(&q).is_err());
        // ICMP echo: type in the local field both ways
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 10, 224, 0, 0, 5,
        ];
        p.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        let k = PacketKey::parse(&p).unwrap();
        assert_eq!(k.ports(Direction::Inbound), (ICMP_BASE + 8, ICMP_BASE));
        assert!(k.dst_multicast);
        let icmp_echo = Selector {
            proto: Some(IpProtocol::ICMP),
            local_port: PortSel::Icmp { lo: 8, hi: 8 },
            ..Selector::ANY
        };
        assert!(icmp_echo.matches(Direction::Inbound, &k));
        assert!(icmp_echo.matches(Direction::Outbound, &k));
    }
}
