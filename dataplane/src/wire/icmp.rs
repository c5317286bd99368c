//! ICMP (RFC 792) and ICMPv6 (RFC 4443) message type and code: what the SPD selects on.

use super::{Result, WireError, be16, put16};

/// A view of the first four bytes of an ICMP or ICMPv6 message.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

pub const HEADER_LEN: usize = 4;

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Write an error message's 8-byte header: type, code, a zero checksum and the 32-bit
    /// field after it (the MTU of "fragmentation needed"/"packet too big", else zero).
    /// The buffer must hold 8 bytes.
    pub fn emit_error_header(&mut self, msg_type: u8, code: u8, rest: u32) {
        let b = self.buffer.as_mut();
        b[0] = msg_type;
        b[1] = code;
        put16(b, 2, 0);
        super::put32(b, 4, rest);
    }

    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
}

/// Well-known ICMP types.
pub mod icmpv4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    /// Code of DEST_UNREACHABLE: fragmentation needed and DF set (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
}

/// Well-known ICMPv6 types.
pub mod icmpv6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_code() {
        let p = IcmpPacket::new_checked(&[8u8, 0, 0xf7, 0xff][..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.checksum()),
            (icmpv4::ECHO_REQUEST, 0, 0xf7ff)
        );
        assert!(IcmpPacket::new_checked(&[8u8, 0, 0][..]).is_err());
    }
}
