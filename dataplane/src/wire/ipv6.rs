//! IPv6 headers (RFC 8200) and the walk over extension headers to the upper-layer protocol.

use super::{IpProtocol, Result, WireError, be16, put16};

mod field {
    pub const VER_TC_FL: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The extension-header walk stops after this many headers (a bound against crafted chains).
pub const MAX_EXT_HEADERS: usize = 12;

/// A read/write view of an IPv6 packet.
///
/// `new_checked` guarantees: version 6 and 40 + payload length ≤ buffer length.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        // A payload length of 0 with a hop-by-hop jumbo option (RFC 2675) is not supported:
        // it is treated as an empty payload.
        if HEADER_LEN + usize::from(self.payload_len()) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FL] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        (u32::from(b[1] & 0x0f) << 16) | (u32::from(b[2]) << 8) | u32::from(b[3])
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC..field::SRC + 16]);
        a
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST..field::DST + 16]);
        a
    }

    /// Everything after the fixed header, bounded by the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// Walk the extension headers to the upper-layer protocol.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk(&self.buffer.as_ref()[..self.total_len()])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Write version 6, the traffic class and the flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let b = self.buffer.as_mut();
        b[0] = 0x60 | (tc >> 4);
        b[1] = (tc << 4) | ((flow >> 16) as u8 & 0x0f);
        b[2] = (flow >> 8) as u8;
        b[3] = flow as u8;
    }

    pub fn set_traffic_class(&mut self, tc: u8) {
        let flow = self.flow_label();
        self.set_version_tc_flow(tc, flow);
    }

    pub fn set_ecn(&mut self, ecn: u8) {
        let tc = (self.traffic_class() & !0x03) | (ecn & 0x03);
        self.set_traffic_class(tc);
    }

    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.0;
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a);
    }

    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a);
    }
}

/// Length of the Fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;

/// A read/write view of an IPv6 Fragment header (RFC 8200 §4.5): next header, reserved,
/// offset and M flag, identification.
#[derive(Debug, Clone)]
pub struct Ipv6FragHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAG_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// Offset of the fragment's data in the datagram, in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 2) >> 3) * 8
    }

    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), 2) & 1 != 0
    }

    pub fn ident(&self) -> u32 {
        super::be32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragHeader<T> {
    /// Write the whole header: `offset` bytes (a multiple of 8, below 65,536) into the
    /// datagram, more fragments following or not, reserved fields zero.
    pub fn emit(&mut self, next_header: IpProtocol, offset: usize, more: bool, ident: u32) {
        debug_assert!(offset.is_multiple_of(8) && offset / 8 <= 0x1fff);
        let b = self.buffer.as_mut();
        b[0] = next_header.0;
        b[1] = 0;
        put16(b, 2, ((offset / 8) as u16) << 3 | u16::from(more));
        super::put32(b, 4, ident);
    }
}

/// Where the upper layer starts, found by walking the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The first header that is not an IPv6 extension header (ESP counts as upper layer here).
    pub protocol: IpProtocol,
    /// Its offset from the start of the IPv6 header.
    pub offset: usize,
    /// Offset of the Next Header byte that names `protocol`.
    pub nh_field: usize,
    /// A fragment header was seen with a non-zero offset: the upper-layer header is absent
    /// (RFC 4301 §4.4.1.1: port selectors are OPAQUE).
    pub later_fragment: bool,
    /// A fragment header was seen at all.
    pub fragment: bool,
    /// Where transport-mode ESP is inserted (RFC 4303 §3.1.1): after hop-by-hop, routing and
    /// fragment headers and any destination options that precede a routing header.
    pub esp_insert: usize,
    /// Offset of the Next Header byte that must name ESP after insertion.
    pub esp_insert_nh_field: usize,
    /// The first AH header on the way (RFC 4302): its offset and the offset of the Next
    /// Header byte that names it.
    pub ah: Option<(usize, usize)>,
}

/// Walk the extension-header chain of a whole IPv6 packet (`packet` starts at the fixed header
/// and ends at the payload length).
pub fn walk(packet: &[u8]) -> Result<UpperLayer> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut nh = packet[field::NXT_HDR];
    let mut nh_field = field::NXT_HDR;
    let mut off = HEADER_LEN;
    let mut later_fragment = false;
    let mut fragment = false;
    let mut esp_insert = HEADER_LEN;
    let mut esp_insert_nh_field = field::NXT_HDR;
    let mut ah = None;
    let mut headers = 0;
    loop {
        let len = match nh {
            // hop-by-hop, routing, destination options, HIP, Shim6: (len + 1) * 8
            0 | 43 | 60 | 139 | 140 => {
                let l = packet.get(off + 1).ok_or(WireError::Truncated)?;
                (usize::from(*l) + 1) * 8
            }
            44 => {
                let fo = packet.get(off + 2..off + 4).ok_or(WireError::Truncated)?;
                fragment = true;
                if u16::from_be_bytes([fo[0], fo[1]]) & 0xfff8 != 0 {
                    later_fragment = true;
                }
                8
            }
            // AH: (len + 2) * 4 (RFC 4302 §2.2)
            51 => {
                let l = packet.get(off + 1).ok_or(WireError::Truncated)?;
                ah = ah.or(Some((off, nh_field)));
                (usize::from(*l) + 2) * 4
            }
            _ => {
                return Ok(UpperLayer {
                    protocol: IpProtocol(nh),
                    offset: off,
                    nh_field,
                    later_fragment,
                    fragment,
                    esp_insert,
                    esp_insert_nh_field,
                    ah,
                });
            }
        };
        headers += 1;
        if headers > MAX_EXT_HEADERS {
            return Err(WireError::Malformed);
        }
        if off + len > packet.len() {
            return Err(WireError::Truncated);
        }
        let next = packet[off];
        // Headers that must stay in front of ESP; destination options only when a routing
        // header follows them.
        let in_front = match nh {
            0 | 43 | 44 => true,
            60 => next == 43,
            _ => false,
        };
        if in_front && esp_insert == off {
            esp_insert = off + len;
            esp_insert_nh_field = off;
        }
        nh_field = off;
        nh = next;
        off += len;
        if later_fragment {
            // Nothing after a non-first fragment's header can be parsed.
            return Ok(UpperLayer {
                protocol: IpProtocol(nh),
                offset: off,
                nh_field,
                later_fragment,
                fragment,
                esp_insert,
                esp_insert_nh_field,
                ah,
            });
        }
    }
}

/// The parsed form of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_header_roundtrip() {
        let mut b = [0xffu8; 8];
        Ipv6FragHeader::new_unchecked(&mut b[..]).emit(IpProtocol::ESP, 1232, true, 0xabcd_ef01);
        assert_eq!(b, [50, 0, 0x04, 0xd1, 0xab, 0xcd, 0xef, 0x01]);
        let h = Ipv6FragHeader::new_checked(&b[..]).unwrap();
        assert_eq!(
            (h.next_header(), h.frag_offset(), h.more_frags(), h.ident()),
            (IpProtocol::ESP, 1232, true, 0xabcd_ef01)
        );
        assert!(Ipv6FragHeader::new_checked(&b[..7]).is_err());
    }

    fn packet(nh: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let r = Ipv6Repr {
            src: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            next_header: IpProtocol(nh),
            payload_len: ext.len() + upper.len(),
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        };
        r.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        b.extend_from_slice(ext);
        b.extend_from_slice(upper);
        b
    }

    #[test]
    fn repr_roundtrip() {
        let b = packet(17, &[], &[0; 8]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload().len(), 8);
        let u = p.upper_layer().unwrap();
        assert_eq!(
            (u.protocol, u.offset, u.nh_field, u.esp_insert),
            (IpProtocol::UDP, 40, 6, 40)
        );
    }

    #[test]
    fn walks_chain_and_places_esp() {
        // HBH (8) -> DestOpts before routing (8) -> Routing (8) -> Fragment (8, offset 0)
        // -> DestOpts (8) -> TCP
        let mut ext = vec![];
        ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[43, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 1]);
        ext.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        let b = packet(0, &ext, &[0; 20]);
        let u = walk(&b).unwrap();
        assert_eq!(u.protocol, IpProtocol::TCP);
        assert_eq!(u.offset, 80);
        assert_eq!(u.nh_field, 72);
        assert!(u.fragment && !u.later_fragment);
        // ESP goes after the fragment header (offset 72), before the trailing destination options
        assert_eq!(u.esp_insert, 72);
        assert_eq!(u.esp_insert_nh_field, 64);
    }

    #[test]
    fn later_fragment_is_opaque() {
        let ext = [17u8, 0, 0x00, 0x08, 0, 0, 0, 1];
        let b = packet(44, &ext, &[0; 8]);
        let u = walk(&b).unwrap();
        assert!(u.later_fragment);
        assert_eq!(u.protocol, IpProtocol::UDP);
    }

    #[test]
    fn truncated_and_endless_chains() {
        let b = packet(0, &[60, 4], &[]);
        assert_eq!(walk(&b).unwrap_err(), WireError::Truncated);
        // exactly MAX_EXT_HEADERS headers are walked; one more is refused
        let mut ext = vec![];
        for _ in 0..MAX_EXT_HEADERS - 1 {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        let b = packet(60, &ext, &[0; 8]);
        assert_eq!(walk(&b).unwrap().protocol, IpProtocol::UDP);
        let mut ext = vec![];
        for _ in 0..MAX_EXT_HEADERS {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        let b = packet(60, &ext, &[0; 8]);
        assert_eq!(walk(&b).unwrap_err(), WireError::Malformed);
        // the bound holds when the last header is a non-first fragment too (found by fuzzing)
        let mut ext = vec![];
        for _ in 0..MAX_EXT_HEADERS {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        ext.truncate(ext.len() - 8);
        ext.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[17, 0, 0, 8, 0, 0, 0, 0]);
        let b = packet(60, &ext, &[0; 8]);
        assert_eq!(walk(&b).unwrap_err(), WireError::Malformed);
        let mut b = packet(17, &[], &[0; 8]);
        b.truncate(45);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }
}
