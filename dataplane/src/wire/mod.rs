//! Wire formats: zero-copy typed views over packet bytes, in the manner of smoltcp's `wire`.
//!
//! Each header is a `Packet<T: AsRef<[u8]>>` (or `Frame` for Ethernet). Untrusted bytes go
//! through `new_checked`, which validates every length the accessors rely on; after that no
//! accessor can panic. Setters exist where `T: AsMut<[u8]>`. A `Repr` (where one is useful)
//! is the parsed, owned form with `parse`, `emit` and `buffer_len`.
//!
//! Protocol numbers are newtypes with named constants so unknown values round-trip.
//!
//! [`pcap`] is the classic capture file those packets are read from and written to by the
//! tools and tests (not by the engine).

pub mod ah;
pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod icmp;
pub mod ipcomp;
pub mod ipv4;
pub mod ipv6;
pub mod pcap;
pub mod udp;
pub mod udp_encap;

pub use ah::AhHeader;
pub use esp::{EspPacket, EspTrailer};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr};
pub use icmp::IcmpPacket;
pub use ipcomp::IpCompHeader;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6FragHeader, Ipv6Packet, Ipv6Repr, UpperLayer};
pub use udp::{UdpPacket, UdpRepr};
pub use udp_encap::{UdpEncapKind, classify_udp_encap};

use core::fmt;

/// Why bytes could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Fewer bytes than the header (or a length field) needs.
    Truncated,
    /// A field holds a value the format does not allow (bad version, IHL < 5, length < header...).
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated"),
            WireError::Malformed => f.write_str("malformed"),
        }
    }
}

impl std::error::Error for WireError {}

/// Result of parsing wire bytes.
pub type Result<T> = core::result::Result<T, WireError>;

/// An IP protocol number / IPv6 next header value (IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const HOP_BY_HOP: Self = Self(0);
    pub const ICMP: Self = Self(1);
    pub const IPV4: Self = Self(4);
    pub const TCP: Self = Self(6);
    pub const UDP: Self = Self(17);
    pub const IPV6: Self = Self(41);
    pub const IPV6_ROUTING: Self = Self(43);
    pub const IPV6_FRAGMENT: Self = Self(44);
    pub const GRE: Self = Self(47);
    pub const ESP: Self = Self(50);
    pub const AH: Self = Self(51);
    pub const ICMPV6: Self = Self(58);
    /// IP Payload Compression (RFC 3173).
    pub const IPCOMP: Self = Self(108);
    /// "No next header": the ESP dummy packet of RFC 4303 §2.6 uses it for TFC.
    pub const NO_NEXT_HEADER: Self = Self(59);
    pub const IPV6_DEST_OPTS: Self = Self(60);
    pub const SCTP: Self = Self(132);
    pub const MOBILITY: Self = Self(135);
    pub const HIP: Self = Self(139);
    pub const SHIM6: Self = Self(140);

    /// Whether the upper-layer header starts with 16-bit source and destination ports.
    pub const fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 132 | 136 /* UDP-Lite */)
    }

    /// ICMP for IPv4 or ICMPv6: the selectors use message type and code.
    pub const fn is_icmp(self) -> bool {
        matches!(self.0, 1 | 58)
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "icmp",
            4 => "ipv4",
            6 => "tcp",
            17 => "udp",
            41 => "ipv6",
            47 => "gre",
            50 => "esp",
            51 => "ah",
            108 => "ipcomp",
            58 => "ipv6-icmp",
            59 => "ipv6-nonxt",
            132 => "sctp",
            n => return write!(f, "{n}"),
        };
        f.write_str(name)
    }
}

/// Read a big-endian u16 at `at`; callers have checked the length.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
