//! The ESP header and trailer (RFC 4303 §2).
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------+---------------+---------------+---------------+
//! |               Security Parameters Index (SPI)                 |
//! +---------------+---------------+---------------+---------------+
//! |                      Sequence Number                          |
//! +---------------+---------------+---------------+---------------+
//! |       IV (transform-specific) | Payload Data* (variable)      |
//! ~               TFC padding, Padding (0-255 bytes)              ~
//! |                               |  Pad Length   | Next Header   |
//! +---------------+---------------+---------------+---------------+
//! |         Integrity Check Value-ICV   (variable)                |
//! ```

use super::{IpProtocol, Result, WireError, be32, put32};

pub const HEADER_LEN: usize = 8;
/// Pad Length and Next Header.
pub const TRAILER_LEN: usize = 2;

/// A view of an ESP packet: the header and the opaque bytes after it.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 0)
    }

    /// The low 32 bits of the sequence number (all of it without ESN).
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// IV, encrypted payload, trailer and ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    pub fn set_spi(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 0, v);
    }

    pub fn set_seq(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
}

/// The decrypted ESP trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspTrailer {
    pub pad_len: u8,
    pub next_header: IpProtocol,
}

impl EspTrailer {
    /// Parse the trailer at the end of a decrypted ESP payload and check the padding bytes
    /// are 1, 2, 3, … (RFC 4303 §2.4). Returns the trailer and the length of the data before
    /// the padding.
    pub fn parse(plaintext: &[u8]) -> Result<(Self, usize)> {
        let n = plaintext.len();
        if n < TRAILER_LEN {
            return Err(WireError::Truncated);
        }
        let pad_len = plaintext[n - 2];
        let next_header = IpProtocol(plaintext[n - 1]);
        let data_len = n
            .checked_sub(TRAILER_LEN + usize::from(pad_len))
            .ok_or(WireError::Malformed)?;
        let pad = &plaintext[data_len..n - 2];
        // Compare without an early exit; the padding is not secret but this keeps it uniform.
        let mut bad = 0u8;
        for (i, &b) in pad.iter().enumerate() {
            bad |= b ^ (i as u8).wrapping_add(1);
        }
        if bad != 0 {
            return Err(WireError::Malformed);
        }
        Ok((
            Self {
                pad_len,
                next_header,
            },
            data_len,
        ))
    }

    /// Padding length for `data_len` bytes of payload so that payload + trailer is a multiple
    /// of `align` (a power of two ≥ 4: the cipher block size or 4, RFC 4303 §2.4).
    #[inline]
    pub const fn pad_len_for(data_len: usize, align: usize) -> usize {
        (align - ((data_len + TRAILER_LEN) & (align - 1))) & (align - 1)
    }

    /// Write padding 1, 2, 3, …, the pad length and the next header into `out`, which must be
    /// exactly `pad_len + 2` bytes.
    #[inline]
    pub fn emit(out: &mut [u8], next_header: IpProtocol) {
        let n = out.len();
        let pad = n - TRAILER_LEN;
        for (i, b) in out[..pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        out[pad] = pad as u8;
        out[pad + 1] = next_header.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let b = [0, 0, 0x43, 0x21, 0, 0, 0, 1, 0xaa];
        let p = EspPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.spi(), p.seq(), p.payload()), (0x4321, 1, &[0xaa][..]));
        assert!(EspPacket::new_checked(&b[..7]).is_err());
    }

    #[test]
    fn padding_lengths() {
        // payload + pad + 2 is a multiple of the alignment, and padding is minimal
        for align in [4usize, 8, 16] {
            for len in 0..100 {
                let p = EspTrailer::pad_len_for(len, align);
                assert_eq!((len + p + 2) % align, 0);
                assert!(p < align);
            }
        }
    }

    #[test]
    fn trailer_roundtrip_and_bad_padding() {
        let mut b = vec![0xeeu8; 5 + 7 + 2];
        EspTrailer::emit(&mut b[5..], IpProtocol::IPV4);
        assert_eq!(&b[5..], &[1, 2, 3, 4, 5, 6, 7, 7, 4]);
        let (t, data) = EspTrailer::parse(&b).unwrap();
        assert_eq!((t.pad_len, t.next_header, data), (7, IpProtocol::IPV4, 5));
        b[7] = 9;
        assert_eq!(EspTrailer::parse(&b).unwrap_err(), WireError::Malformed);
        // pad length longer than the payload
        assert_eq!(
            EspTrailer::parse(&[1, 2, 200, 4]).unwrap_err(),
            WireError::Malformed
        );
        assert_eq!(EspTrailer::parse(&[4]).unwrap_err(), WireError::Truncated);
        assert!(EspTrailer::parse(&[0, 59]).is_ok());
    }
}
