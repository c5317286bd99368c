//! LZS (Stac) compression, as IPComp uses it (RFC 2395) with the format of ANSI X3.241-1994
//! that RFC 1974 §2 describes: an LZ77 bit stream over a 2,048-byte history, written most
//! significant bit first.
//!
//! ```text
//! literal        0 bbbbbbbb                        one byte
//! string         1 1 ooooooo  <length>             offset 1-127
//!                1 0 ooooooooooo  <length>         offset 1-2047
//! end marker     1 1 0000000                       (a 7-bit offset of 0)
//! <length>       00 = 2, 01 = 3, 10 = 4, 1100 = 5, 1101 = 6, 1110 = 7,
//!                1111 then nibbles: each 1111 adds 15, the first other nibble n ends it:
//!                length = 8 + 15 * (number of 1111 nibbles) + n
//! ```
//!
//! The end marker follows the last token; the stream is then padded to a whole byte (with
//! zeros here; a decoder ignores the padding bits). Each IPComp packet is compressed on its
//! own, with an empty history (RFC 2395 §2, RFC 3173 §2.2).
//!
//! The decoder writes into a slice the caller sizes: output that would not fit is an
//! error, never an allocation, so a small packet cannot expand into more than the caller
//! allows.

/// The history an offset may reach back into.
pub const WINDOW: usize = 2047;
/// Shortest string the format can express.
const MIN_MATCH: usize = 2;
/// Candidates the encoder looks at per position.
const MAX_CHAIN: usize = 32;
/// Longest string the encoder emits (the format has no limit; this bounds the search).
const MAX_MATCH: usize = 1024;
const HASH_BITS: u32 = 12;
const NO_POS: u32 = u32::MAX;

/// Why a stream does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LzsError {
    /// The output would not fit the space given.
    TooLong,
    /// The bits ran out before the end marker.
    Truncated,
    /// A string reaches back before the start of the output, or has an 11-bit offset of 0.
    BadOffset,
}

/// Writes bits most significant first.
struct BitWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
    acc: u64,
    bits: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        BitWriter {
            out,
            pos: 0,
            acc: 0,
            bits: 0,
        }
    }

    /// Append the low `n` (≤ 32) bits of `v`; false once the output is full.
    #[inline]
    fn put(&mut self, v: u32, n: u32) -> bool {
        self.acc = (self.acc << n) | u64::from(v & ((1u64 << n) - 1) as u32);
        self.bits += n;
        while self.bits >= 8 {
            self.bits -= 8;
            let Some(b) = self.out.get_mut(self.pos) else {
                return false;
            };
            *b = (self.acc >> self.bits) as u8;
            self.pos += 1;
        }
        true
    }

    /// Pad to a byte with zeros; the bytes written.
    fn finish(mut self) -> Option<usize> {
        if self.bits > 0 {
            let pad = 8 - self.bits;
            if !self.put(0, pad) {
                return None;
            }
        }
        Some(self.pos)
    }
}

/// Reads bits most significant first.
struct BitReader<'a> {
    inp: &'a [u8],
    pos: usize,
    acc: u64,
    bits: u32,
}

impl<'a> BitReader<'a> {
    fn new(inp: &'a [u8]) -> Self {
        BitReader {
            inp,
            pos: 0,
            acc: 0,
            bits: 0,
        }
    }

    /// The next `n` (≤ 32) bits.
    #[inline]
    fn get(&mut self, n: u32) -> Result<u32, LzsError> {
        while self.bits < n {
            let b = *self.inp.get(self.pos).ok_or(LzsError::Truncated)?;
            self.pos += 1;
            self.acc = (self.acc << 8) | u64::from(b);
            self.bits += 8;
        }
        self.bits -= n;
        Ok(((self.acc >> self.bits) & ((1u64 << n) - 1)) as u32)
    }
}

fn put_length(w: &mut BitWriter<'_>, len: usize) -> bool {
    match len {
        2..=4 => w.put((len - 2) as u32, 2),
        5..=7 => w.put(0b1100 | (len - 5) as u32, 4),
        _ => {
            let mut n = len - 8;
            if !w.put(0b1111, 4) {
                return false;
            }
            while n >= 15 {
                if !w.put(0b1111, 4) {
                    return false;
                }
                n -= 15;
            }
            w.put(n as u32, 4)
        }
    }
}

fn get_length(r: &mut BitReader<'_>) -> Result<usize, LzsError> {
    Ok(match r.get(2)? {
        0 => 2,
        1 => 3,
        2 => 4,
        _ => match r.get(2)? {
            0 => 5,
            1 => 6,
            2 => 7,
            _ => {
                let mut len = 8;
                loop {
                    let n = r.get(4)? as usize;
                    len += n;
                    if n != 15 {
                        break len;
                    }
                }
            }
        },
    })
}

/// The encoder's match finder: hash chains over 2-byte prefixes, allocated once and reused
/// for every packet.
#[derive(Debug)]
pub struct Encoder {
    head: Vec<u32>,
    prev: Vec<u32>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            head: vec![NO_POS; 1 << HASH_BITS],
            prev: vec![NO_POS; 1 << 16],
        }
    }

    #[inline]
    fn hash(a: u8, b: u8) -> usize {
        ((u32::from(a) << 8 | u32::from(b)).wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    /// Compress `input` (at most 65,536 bytes: one packet) into `out`; `None` if the stream
    /// would not fit there (the packet does not compress to that size).
    pub fn compress(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        if input.len() > self.prev.len() {
            return None;
        }
        self.head.fill(NO_POS);
        let mut w = BitWriter::new(out);
        let n = input.len();
        let mut i = 0;
        while i < n {
            let (mut best_len, mut best_off) = (0, 0);
            if i + MIN_MATCH <= n {
                let h = Self::hash(input[i], input[i + 1]);
                let mut cand = self.head[h];
                let max = (n - i).min(MAX_MATCH);
                let mut chain = 0;
                while cand != NO_POS && chain < MAX_CHAIN {
                    let c = cand as usize;
                    if i - c > WINDOW {
                        break;
                    }
                    let l = input[c..]
                        .iter()
                        .zip(&input[i..i + max])
                        .take_while(|(a, b)| a == b)
                        .count();
                    if l > best_len {
                        (best_len, best_off) = (l, i - c);
                        if l == max {
                            break;
                        }
                    }
                    cand = self.prev[c];
                    chain += 1;
                }
            }
            let step = if best_len >= MIN_MATCH {
                let ok = if best_off < 128 {
                    w.put(0b11 << 7 | best_off as u32, 9)
                } else {
                    w.put(0b10 << 11 | best_off as u32, 13)
                };
                if !ok || !put_length(&mut w, best_len) {
                    return None;
                }
                best_len
            } else {
                if !w.put(u32::from(input[i]), 9) {
                    return None;
                }
                1
            };
            // index every position the token covers
            for p in i..(i + step).min(n.saturating_sub(1)) {
                let h = Self::hash(input[p], input[p + 1]);
                self.prev[p] = self.head[h];
                self.head[h] = p as u32;
            }
            i += step;
        }
        if !w.put(0b1_1000_0000, 9) {
            return None;
        }
        w.finish()
    }
}

/// Decompress one stream into `out`; the bytes written. Bits after the end marker (the
/// padding, at most 7 of them) are ignored; bytes after it are an error.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<usize, LzsError> {
    let mut r = BitReader::new(input);
    let mut n = 0;
    loop {
        if r.get(1)? == 0 {
            let b = r.get(8)? as u8;
            *out.get_mut(n).ok_or(LzsError::TooLong)? = b;
            n += 1;
            continue;
        }
        let off = if r.get(1)? == 1 {
            let o = r.get(7)? as usize;
            if o == 0 {
                // end marker: only padding may follow, within the current byte
                return if r.pos == input.len() {
                    Ok(n)
                } else {
                    Err(LzsError::Truncated)
                };
            }
            o
        } else {
            r.get(11)? as usize
        };
        let len = get_length(&mut r)?;
        if off == 0 || off > n {
            return Err(LzsError::BadOffset);
        }
        if n + len > out.len() {
            return Err(LzsError::TooLong);
        }
        // may overlap itself (a run): byte by byte
        for k in 0..len {
            out[n + k] = out[n + k - off];
        }
        n += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) -> usize {
        let mut enc = Encoder::new();
        let mut c = vec![0u8; data.len() * 9 / 8 + 16];
        let m = enc.compress(data, &mut c).expect("fits");
        let mut d = vec![0u8; data.len()];
        assert_eq!(decompress(&c[..m], &mut d), Ok(data.len()));
        assert_eq!(d, data);
        m
    }

    /// Streams written by hand from the format: each token's bits spelled out.
    #[test]
    fn hand_made_streams() {
        // "A": literal 0 01000001, end marker 1 1 0000000, 6 zero bits of padding
        // 0010 0000 | 1110 0000 | 00.. ....
        assert_eq!(dec(&[0x20, 0xe0, 0x00]), b"A");
        // "ABAB": A, B, string offset 2 (1 1 0000010) length 2 (00), end marker
        // 0 01000001 0 01000010 1 1 0000010 00 1 1 0000000 pad
        let bits = "0010000010010000101100000100011000000000";
        assert_eq!(dec(&bits_to_bytes(bits)), b"ABAB");
        // "aaaaaaaaaa" (10): literal a, string offset 1 length 9 (1111 0001), end marker
        let bits = "001100001 1 1 0000001 1111 0001 1 1 0000000";
        assert_eq!(dec(&bits_to_bytes(bits)), b"aaaaaaaaaa");
        // a length of 8 + 15 + 2 = 25 (1111 1111 0010) with an 11-bit offset
        let bits = "001100010 1 0 00000000001 1111 1111 0010 1 1 0000000";
        assert_eq!(dec(&bits_to_bytes(bits)), [b'b'; 26]);
        // the empty stream: the end marker alone
        assert_eq!(dec(&[0xc0, 0x00]), b"");
    }

    fn dec(s: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 64];
        let n = decompress(s, &mut out).expect("decodes");
        out[..n].to_vec()
    }

    fn bits_to_bytes(s: &str) -> Vec<u8> {
        let bits: Vec<u8> = s.bytes().filter(|b| *b == b'0' || *b == b'1').collect();
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |a, (i, b)| a | ((b - b'0') << (7 - i)))
            })
            .collect()
    }

    #[test]
    fn encoder_output_decodes_and_compresses() {
        let text = b"IPComp with LZS: the quick brown fox jumps over the lazy dog. \
                     the quick brown fox jumps over the lazy dog again and again.";
        let m = roundtrip(text);
        assert!(m < text.len() * 3 / 4, "{m} of {}", text.len());
        // a run costs a nibble per 15 bytes
        assert!(roundtrip(&[0u8; 1500]) < 60);
        roundtrip(b"");
        roundtrip(b"x");
        roundtrip(b"xy");
        // every offset and length form: 7- and 11-bit offsets, long lengths
        let mut v: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        v.extend_from_within(100..1900);
        roundtrip(&v);
    }

    #[test]
    fn incompressible_data_does_not_fit() {
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..1400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut out = vec![0u8; data.len()];
        assert_eq!(Encoder::new().compress(&data, &mut out), None);
    }

    #[test]
    fn bad_streams_are_errors() {
        let mut small = [0u8; 4];
        // "aaaaaaaaaa" into 4 bytes: too long, not a panic
        let bits = bits_to_bytes("001100001 1 1 0000001 1111 0001 1 1 0000000");
        assert_eq!(decompress(&bits, &mut small), Err(LzsError::TooLong));
        // a string before any output
        let bits = bits_to_bytes("1 1 0000001 00 1 1 0000000");
        assert_eq!(decompress(&bits, &mut [0u8; 8]), Err(LzsError::BadOffset));
        // an 11-bit offset of 0
        let bits = bits_to_bytes("001100001 1 0 00000000000 00 1 1 0000000");
        assert_eq!(decompress(&bits, &mut [0u8; 8]), Err(LzsError::BadOffset));
        // no end marker
        assert_eq!(
            decompress(&[0x20, 0x80], &mut [0u8; 8]),
            Err(LzsError::Truncated)
        );
        // a byte after the end marker
        assert_eq!(
            decompress(&[0x20, 0xe0, 0x00, 0x00], &mut [0u8; 8]),
            Err(LzsError::Truncated)
        );
        // a run of 1111 nibbles that never ends
        let mut v = bits_to_bytes("001100001 1 1 0000001 1111");
        v.extend([0xff; 64]);
        assert!(decompress(&v, &mut [0u8; 256]).is_err());
    }

    #[test]
    fn roundtrip_property() {
        // a deterministic sweep of shapes: random bytes from small alphabets, runs, copies
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..300 {
            let len = (next() % 3000) as usize;
            let alphabet = 1 + (next() % 256) as u8;
            let mut v: Vec<u8> = (0..len)
                .map(|_| (next() % u64::from(alphabet)) as u8)
                .collect();
            if case % 3 == 0 && len > 10 {
                let (a, b) = ((next() as usize) % len, (next() as usize) % len);
                let (a, b) = (a.min(b), a.max(b));
                let copy = v[a..b].to_vec();
                v.extend(copy);
            }
            roundtrip(&v);
        }
    }
}
