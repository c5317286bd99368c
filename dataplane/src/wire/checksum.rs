//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` folded into 32 bits (not yet complemented).
///
/// Sums big-endian 64-bit words into a 128-bit accumulator (2^16 ≡ 1 mod 0xffff, so wide
/// words fold to the same 16-bit sum); the tail is summed in 32- and 16-bit steps.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u128 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        acc += u128::from(u64::from_be_bytes(w));
    }
    let rest = chunks.remainder();
    let mut tail: u64 = 0;
    let mut i = 0;
    if rest.len() >= 4 {
        tail += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        i = 4;
    }
    if i + 1 < rest.len() {
        tail += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        tail += u64::from(rest[i]) << 8;
    }
    acc += u128::from(tail);
    fold128(acc)
}

/// The sum of a 20-byte IPv4 header without options: five 32-bit words, no loop.
#[inline(always)]
pub fn sum20(h: &[u8; 20]) -> u32 {
    let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold64(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// Fold a 128-bit sum to 32 bits with end-around carries (2^64 ≡ 1 mod 0xffff).
#[inline(always)]
fn fold128(acc: u128) -> u32 {
    let x = (acc as u64 as u128) + (acc >> 64);
    let x = (x as u64 as u128) + (x >> 64);
    // here either the high part is 0, or it is 1 and the low part is 0
    fold64((x as u64).wrapping_add((x >> 64) as u64))
}

#[inline(always)]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

/// Fold a 32-bit partial sum to 16 bits.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for data whose partial sum is `s`.
#[inline(always)]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// The checksum field value for `data` (whose own checksum field is zero) behind a
/// pseudo-header with partial sum `pseudo` (0 where there is none: IPv4 header, ICMP).
#[inline]
pub fn compute(pseudo: u32, data: &[u8]) -> u16 {
    finish(add(pseudo, sum(data)))
}

/// Whether `data`, its checksum field included, verifies behind a pseudo-header with
/// partial sum `pseudo`: the whole sums to all ones (RFC 1071 §1).
#[inline]
pub fn verify(pseudo: u32, data: &[u8]) -> bool {
    fold(add(pseudo, sum(data))) == 0xffff
}

/// Combine partial sums.
#[inline(always)]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s + u32::from(c)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
#[inline(always)]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Pseudo-header partial sum for IPv4 (RFC 768 / RFC 793).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let mut s = sum(&src);
    s = add(s, sum(&dst));
    add(s, u32::from(proto) + u32::from(len))
}

/// Pseudo-header partial sum for IPv6 (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u32 {
    let mut s = sum(&src);
    s = add(s, sum(&dst));
    s = add(s, (len >> 16) + (len & 0xffff));
    add(s, u32::from(proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
    }

    #[test]
    fn matches_naive_for_all_lengths() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(97) ^ 0x5a) as u8)
            .collect();
        for n in 0..data.len() {
            assert_eq!(finish(sum(&data[..n])), naive(&data[..n]), "len {n}");
        }
    }

    #[test]
    fn sum20_matches_sum() {
        let mut h = [0u8; 20];
        for seed in 0..2000u32 {
            for (i, b) in h.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 3) >> 7) as u8
                    ^ (i as u8).wrapping_mul(37);
            }
            if seed % 3 == 0 {
                h = [0xff; 20];
            }
            assert_eq!(fold(sum20(&h)), fold(sum(&h)), "{h:?}");
            assert_eq!(finish(sum20(&h)), naive(&h));
        }
    }

    #[test]
    fn compute_then_verify() {
        // a UDP datagram over IPv4 with its checksum filled in verifies; one bit off does not
        let mut d = [
            0x11u8, 0x94, 0x11, 0x94, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o',
        ];
        let pseudo = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 13);
        let c = compute(pseudo, &d);
        assert_eq!(
            c,
            naive(&[&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 13][..], &d].concat())
        );
        d[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(verify(pseudo, &d));
        d[9] ^= 1;
        assert!(!verify(pseudo, &d));
        assert_eq!(compute(0, &[]), 0xffff);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut d = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = finish(sum(&d));
        let old = u16::from_be_bytes([d[8], d[9]]);
        d[8] = 0x3f;
        let new = u16::from_be_bytes([d[8], d[9]]);
        assert_eq!(update16(c, old, new), finish(sum(&d)));
    }
}
