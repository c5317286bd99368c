//! The IPComp header (RFC 3173 §2.2).
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------+---------------+-------------------------------+
//! |  Next Header  |     Flags     |  Compression Parameter Index  |
//! +---------------+---------------+-------------------------------+
//! ```

use super::{IpProtocol, Result, WireError, be16, put16};

pub const HEADER_LEN: usize = 4;

/// A view of an IPComp header and the compressed payload after it.
#[derive(Debug, Clone)]
pub struct IpCompHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IpCompHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// Reserved: sent as zero, ignored on receipt (RFC 3173 §2.2).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn cpi(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpCompHeader<T> {
    pub fn emit(&mut self, next_header: IpProtocol, cpi: u16) {
        let b = self.buffer.as_mut();
        b[0] = next_header.0;
        b[1] = 0;
        put16(b, 2, cpi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_and_read_back() {
        let mut b = [0xffu8; 6];
        IpCompHeader::new_unchecked(&mut b[..]).emit(IpProtocol::IPV4, 2);
        assert_eq!(b[..4], [4, 0, 0, 2]);
        let h = IpCompHeader::new_checked(&b[..]).unwrap();
        assert_eq!(
            (h.next_header(), h.flags(), h.cpi()),
            (IpProtocol::IPV4, 0, 2)
        );
        assert_eq!(h.payload(), &[0xff, 0xff]);
        assert!(IpCompHeader::new_checked(&b[..3]).is_err());
    }
}
