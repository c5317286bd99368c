//! The Authentication Header (RFC 4302 §2).
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------+---------------+---------------+---------------+
//! | Next Header   |  Payload Len  |          RESERVED             |
//! +---------------+---------------+---------------+---------------+
//! |                 Security Parameters Index (SPI)               |
//! +---------------+---------------+---------------+---------------+
//! |                    Sequence Number Field                      |
//! +---------------+---------------+---------------+---------------+
//! |                Integrity Check Value-ICV (variable)           |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! Payload Len is the header's length in 32-bit words minus 2; the ICV field is padded to
//! a multiple of 32 bits over IPv4 and 64 bits over IPv6 (§2.6).

use super::{IpProtocol, Result, WireError, be32, put32};

/// Next header, payload length, reserved, SPI and sequence number.
pub const FIXED_LEN: usize = 12;

/// The length of an AH header whose ICV is `icv_len` bytes: the ICV padded so that the
/// header is a multiple of 8 bytes over IPv6, of 4 over IPv4 (RFC 4302 §2.6).
pub const fn header_len_for(icv_len: usize, v6: bool) -> usize {
    let align = if v6 { 8 } else { 4 };
    (FIXED_LEN + icv_len).div_ceil(align) * align
}

/// A view of an AH header (the ICV field included).
#[derive(Debug, Clone)]
pub struct AhHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AhHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Checks that the fixed part and the whole header its length field claims are there.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < FIXED_LEN {
            return Err(WireError::Truncated);
        }
        let h = Self { buffer };
        if h.header_len() > h.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(h)
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// The header's length in bytes, from the Payload Len field.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 2) * 4
    }

    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// The low 32 bits of the sequence number (all of it without ESN).
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AhHeader<T> {
    /// Write a header of `len` bytes (a multiple of 4, at least [`FIXED_LEN`]) with the ICV
    /// field and its padding zeroed, as the ICV computation sees it.
    pub fn emit(&mut self, next_header: IpProtocol, len: usize, spi: u32, seq: u32) {
        let b = self.buffer.as_mut();
        b[0] = next_header.0;
        b[1] = (len / 4 - 2) as u8;
        b[2] = 0;
        b[3] = 0;
        put32(b, 4, spi);
        put32(b, 8, seq);
        b[FIXED_LEN..len].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_rfc4302_alignment() {
        // HMAC-SHA1-96: 24 bytes both ways; SHA-256-128: 28 / 32; SHA-384-192: 36 / 40;
        // SHA-512-256: 44 / 48 (the ICV padded to 64 bits over IPv6)
        for (icv, v4, v6) in [(12, 24, 24), (16, 28, 32), (24, 36, 40), (32, 44, 48)] {
            assert_eq!(header_len_for(icv, false), v4, "icv {icv}");
            assert_eq!(header_len_for(icv, true), v6, "icv {icv}");
        }
    }

    #[test]
    fn emit_and_read_back() {
        let mut b = [0xaau8; 32];
        AhHeader::new_unchecked(&mut b[..]).emit(IpProtocol::TCP, 32, 0x1234_5678, 9);
        let h = AhHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.next_header(), IpProtocol::TCP);
        assert_eq!(h.header_len(), 32);
        assert_eq!(b[1], 6);
        assert_eq!(h.spi(), 0x1234_5678);
        assert_eq!(h.seq(), 9);
        assert!(b[12..].iter().all(|&x| x == 0));
        // a length field beyond the bytes there
        assert_eq!(
            AhHeader::new_checked(&b[..28]).unwrap_err(),
            WireError::Truncated
        );
        assert!(AhHeader::new_checked(&b[..11]).is_err());
    }
}
