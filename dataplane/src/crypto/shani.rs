//! SHA-NI kernels for HMAC-SHA1 and HMAC-SHA-256, the ESP integrity algorithms of RFC 2404
//! and RFC 4868 (`integ.rs` uses them where the CPU has the extensions, RustCrypto otherwise).
//!
//! [`HmacSha1Key::mac`] / [`HmacSha256Key::mac`] compute the full HMAC (RFC 2104) of
//! `data ‖ ESN high bits` (RFC 4303 §3.3.2.1: the high-order ESN bits are authenticated but not
//! sent); the caller truncates to the ICV length. The key holds the compression-function
//! states after the ipad and opad blocks, so a packet costs the data blocks, one or two
//! padding blocks and one outer block.
//!
//! Inside one message every SHA1RNDS4 / SHA256RNDS2 waits for the previous one, so a single
//! packet leaves the SHA unit idle for most of each instruction's latency. `mac2` runs two
//! independent packets (keys of the same algorithm, any lengths) through the same loop, and
//! `HmacSha1Key::mac4` four: their round chains are independent and fill those gaps. The
//! blocks all lanes still have are done together; as the shorter messages run out, the
//! others go on three, two or one at a time; then the outer blocks of all lanes are done
//! together. (`HmacSha256Key::mac4` is two `mac2` passes; see below.)
//!
//! What four lanes buy was measured on this EPYC (Zen 4, family 19h model 11h), whose SHA
//! unit was shared with a busy host most of the time: TSC cycles per 1420-byte packet,
//! alternating the variants so that they saw the same load. SHA-1: ~2050 alone, ~1300 in
//! `mac2`, ~1000-1100 in `mac4`, about 15-20 % off `mac2` at every size and load, three
//! lanes 5-6 % behind four. SHA-256: ~2200 alone, ~1230 (idle) to ~1500 (median) in `mac2`;
//! the four-lane kernel was 8 % faster than that on an idle core but 7-10 % slower at the
//! median, so `HmacSha256Key::mac4` runs two two-lane passes (`sha256_hmac::<4>` is kept
//! and tested, one line away). Four lanes hold more live values (state, previous state or
//! E, four message registers each) than the 16 XMM registers: the message words spill,
//! which SHA-1 absorbs and SHA-256, already near the SHA256RNDS2 throughput, does not.
//!
//! Constant time: SHA-NI and SSE instructions only, no tables, no branch or memory index that
//! depends on the key or the data; lengths (and so the number of blocks and the position of
//! the padding) are public.
//!
//! `unsafe` here is limited to the `core::arch` loads and stores and to entering the kernels:
//! every function that uses the SHA extensions is a `#[target_feature(enable =
//! "sha,sse2,ssse3,sse4.1")]` function (safe to call from another one with the same
//! features; `unsafe` to enter from anywhere else) and is entered only through a
//! [`HmacSha1Key`] or [`HmacSha256Key`], which exists only after runtime detection said the
//! CPU has all of them.
#![allow(unsafe_code)]

use super::simd::{load, store};
use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_extract_epi32, _mm_loadu_si128,
    _mm_set_epi32, _mm_set_epi64x, _mm_setzero_si128, _mm_sha1msg1_epu32, _mm_sha1msg2_epu32,
    _mm_sha1nexte_epu32, _mm_sha1rnds4_epu32, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32,
    _mm_sha256rnds2_epu32, _mm_shuffle_epi8, _mm_shuffle_epi32, _mm_xor_si128,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// SHA-1 and SHA-256 block size (FIPS 180-4 §1).
pub(super) const BLOCK: usize = 64;
/// The padding's first word, 0x80 then zeros, as a message word (FIPS 180-4 §5.1.1).
const PAD_BIT: i32 = 0x8000_0000_u32 as i32;

/// Whether this CPU can run these kernels (SSE2 is part of x86_64).
pub fn available() -> bool {
    std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse4.1")
        && std::is_x86_feature_detected!("ssse3")
}

/// The message bytes of one HMAC pass after the `absorbed` bytes already hashed, as 64-byte
/// blocks: the whole blocks of `data` in place, then a copied tail of one or two blocks with
/// the rest of `data`, the ESN high bits and the padding (FIPS 180-4 §5.1.1: 0x80, zeros,
/// the message length in bits as a 64-bit big-endian number).
pub(super) struct Padded<'a> {
    full: &'a [[u8; BLOCK]],
    tail: [[u8; BLOCK]; 2],
    tail_blocks: usize,
}

impl<'a> Padded<'a> {
    #[inline(always)]
    pub(super) fn new(data: &'a [u8], esn_hi: Option<u32>, absorbed: usize) -> Self {
        let mut p = Padded::empty();
        p.fill(data, esn_hi, absorbed);
        p
    }

    /// No data (to be [`fill`](Self::fill)ed).
    #[inline(always)]
    pub(super) fn empty() -> Self {
        Padded {
            full: &[],
            tail: [[0u8; BLOCK]; 2],
            tail_blocks: 1,
        }
    }

    /// Make this the message of `data`, in place: an array of them built by moving each new
    /// one in re-reads its freshly written tail with wide loads, which stall on the narrow
    /// stores still in flight (the 16-lane kernel lost a quarter of its time at 64 bytes so).
    #[inline(always)]
    pub(super) fn fill(&mut self, data: &'a [u8], esn_hi: Option<u32>, absorbed: usize) {
        let (full, rest) = data.as_chunks::<BLOCK>();
        self.tail = [[0u8; BLOCK]; 2];
        let t = self.tail.as_flattened_mut();
        t[..rest.len()].copy_from_slice(rest);
        let mut n = rest.len();
        if let Some(hi) = esn_hi {
            t[n..n + 4].copy_from_slice(&hi.to_be_bytes());
            n += 4;
        }
        t[n] = 0x80;
        // the length field takes the last 8 bytes of the last block
        let tail_blocks = if n + 1 + 8 <= BLOCK { 1 } else { 2 };
        let bits = (absorbed + data.len() + (n - rest.len())) as u64 * 8;
        t[tail_blocks * BLOCK - 8..tail_blocks * BLOCK].copy_from_slice(&bits.to_be_bytes());
        self.full = full;
        self.tail_blocks = tail_blocks;
    }

    #[inline(always)]
    pub(super) fn blocks(&self) -> usize {
        self.full.len() + self.tail_blocks
    }

    /// Block `i` (< `blocks()`).
    #[inline(always)]
    pub(super) fn block(&self, i: usize) -> &[u8; BLOCK] {
        match self.full.get(i) {
            Some(b) => b,
            // i - full.len() is 0 or 1 here; the mask only spares a bounds check
            None => &self.tail[(i - self.full.len()) & 1],
        }
    }
}

/// The 16 big-endian message words of `b`, four to a register, arranged by the byte shuffle
/// `order` ([`sha1_order`] or [`sha256_order`]).
// SAFETY: SSSE3 (PSHUFB); reached only from the kernels below, which require the same features.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn words(b: &[u8; BLOCK], order: __m128i) -> [__m128i; 4] {
    let (q, _) = b.as_chunks::<16>();
    [
        _mm_shuffle_epi8(load(&q[0]), order),
        _mm_shuffle_epi8(load(&q[1]), order),
        _mm_shuffle_epi8(load(&q[2]), order),
        _mm_shuffle_epi8(load(&q[3]), order),
    ]
}

// ---------------------------------------------------------------------------------------
// SHA-1 (FIPS 180-4 §6.1.2), the SHA1RNDS4/SHA1NEXTE/SHA1MSG1/SHA1MSG2 formulation of
// Intel's "SHA Extensions" paper: ABCD in one register (A in the top dword), E in the top
// dword of another; message words in reversed order (W[t] in the top dword).
// ---------------------------------------------------------------------------------------

/// HMAC-SHA1 key for the SHA-NI kernels: the SHA-1 states after the ipad and the opad blocks
/// (RFC 2104 §2). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacSha1Key {
    /// ABCD, then E in the top dword (the registers' layout)
    inner: [[u8; 16]; 2],
    outer: [[u8; 16]; 2],
}

impl core::fmt::Debug for HmacSha1Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha1Key(<secret>)")
    }
}

#[derive(Clone, Copy)]
struct S1 {
    abcd: __m128i,
    e: __m128i,
}

impl S1 {
    #[inline(always)]
    fn load(s: &[[u8; 16]; 2]) -> S1 {
        S1 {
            abcd: load(&s[0]),
            e: load(&s[1]),
        }
    }

    #[inline(always)]
    fn store(self, s: &mut [[u8; 16]; 2]) {
        store(&mut s[0], self.abcd);
        store(&mut s[1], self.e);
    }

    /// FIPS 180-4 §5.3.1.
    // SAFETY: SSE2 only; called from the kernels, which have all the features.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn iv() -> S1 {
        const H: [u32; 5] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
        S1 {
            abcd: _mm_set_epi32(H[0] as i32, H[1] as i32, H[2] as i32, H[3] as i32),
            e: _mm_set_epi32(H[4] as i32, 0, 0, 0),
        }
    }
}

/// Reverse all 16 bytes: four big-endian words, the first in the top dword.
// SAFETY: SSE2 only; called from the kernels, which have all the features.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_order() -> __m128i {
    _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f)
}

/// Rounds 4I..4I+3 of each lane (round function `F` = I / 5), computing W[4I..4I+3] first
/// for I ≥ 4: W[t] = ROTL1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16]) (MSG1 does W[t-16] ^ W[t-14],
/// the XOR adds W[t-8], MSG2 adds W[t-3] and rotates). `e[l]` is the ABCD of four rounds
/// earlier, from which SHA1NEXTE derives this group's E (group 0: the state's E).
// SAFETY: SHA (SHA1RNDS4/NEXTE/MSG1/MSG2) and SSE2; called only from `sha1_compress`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_group<const I: usize, const F: i32, const N: usize>(
    st: &mut [S1; N],
    w: &mut [[__m128i; 4]; N],
    e: &mut [__m128i; N],
) {
    for ((s, m), e) in st.iter_mut().zip(w.iter_mut()).zip(e.iter_mut()) {
        if I >= 4 {
            let x = _mm_xor_si128(_mm_sha1msg1_epu32(m[I % 4], m[(I + 1) % 4]), m[(I + 2) % 4]);
            m[I % 4] = _mm_sha1msg2_epu32(x, m[(I + 3) % 4]);
        }
        let ew = if I == 0 {
            _mm_add_epi32(*e, m[0])
        } else {
            _mm_sha1nexte_epu32(*e, m[I % 4])
        };
        *e = s.abcd;
        s.abcd = _mm_sha1rnds4_epu32::<F>(s.abcd, ew);
    }
}

/// One SHA-1 compression of one block per lane; `w` is the block's words (clobbered).
// SAFETY: SHA and SSE2, through `sha1_group`; reached only from the kernels behind a key.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_compress<const N: usize>(st: &mut [S1; N], w: &mut [[__m128i; 4]; N]) {
    let save = *st;
    let mut e = [_mm_setzero_si128(); N];
    for (e, s) in e.iter_mut().zip(st.iter()) {
        *e = s.e;
    }
    sha1_group::<0, 0, N>(st, w, &mut e);
    sha1_group::<1, 0, N>(st, w, &mut e);
    sha1_group::<2, 0, N>(st, w, &mut e);
    sha1_group::<3, 0, N>(st, w, &mut e);
    sha1_group::<4, 0, N>(st, w, &mut e);
    sha1_group::<5, 1, N>(st, w, &mut e);
    sha1_group::<6, 1, N>(st, w, &mut e);
    sha1_group::<7, 1, N>(st, w, &mut e);
    sha1_group::<8, 1, N>(st, w, &mut e);
    sha1_group::<9, 1, N>(st, w, &mut e);
    sha1_group::<10, 2, N>(st, w, &mut e);
    sha1_group::<11, 2, N>(st, w, &mut e);
    sha1_group::<12, 2, N>(st, w, &mut e);
    sha1_group::<13, 2, N>(st, w, &mut e);
    sha1_group::<14, 2, N>(st, w, &mut e);
    sha1_group::<15, 3, N>(st, w, &mut e);
    sha1_group::<16, 3, N>(st, w, &mut e);
    sha1_group::<17, 3, N>(st, w, &mut e);
    sha1_group::<18, 3, N>(st, w, &mut e);
    sha1_group::<19, 3, N>(st, w, &mut e);
    // H += working variables; E comes from the ABCD of four rounds ago, as in the groups
    for ((s, v), e) in st.iter_mut().zip(save).zip(e) {
        s.e = _mm_sha1nexte_epu32(e, v.e);
        s.abcd = _mm_add_epi32(s.abcd, v.abcd);
    }
}

/// The 20-byte digest of a final state.
// SAFETY: SSE2 and SSE4.1 (PEXTRD), SSSE3 (PSHUFB); reached only from the kernels.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_digest(s: S1, out: &mut [u8; 32]) {
    let mut abcd = [0u8; 16];
    store(&mut abcd, _mm_shuffle_epi8(s.abcd, sha1_order()));
    out[..16].copy_from_slice(&abcd);
    out[16..20].copy_from_slice(&(_mm_extract_epi32::<3>(s.e) as u32).to_be_bytes());
}

/// RFC 2104 §2 key preparation: hash a key longer than a block, zero-pad, and absorb
/// K0 ^ ipad and K0 ^ opad.
// SAFETY: SHA, SSE2, SSSE3 and SSE4.1, through `sha1_compress`, `words` and `sha1_digest`;
// entered only from `HmacSha1Key::new` after `available()`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn sha1_key(key: &[u8]) -> HmacSha1Key {
    let order = sha1_order();
    let mut k0 = [0u8; BLOCK];
    if key.len() > BLOCK {
        let mut p = Padded::new(key, None, 0);
        let mut st = [S1::iv()];
        for i in 0..p.blocks() {
            sha1_compress(&mut st, &mut [words(p.block(i), order)]);
        }
        p.tail.zeroize();
        let mut d = [0u8; 32];
        sha1_digest(st[0], &mut d);
        k0[..20].copy_from_slice(&d[..20]);
        d.zeroize();
    } else {
        k0[..key.len()].copy_from_slice(key);
    }
    let mut k = HmacSha1Key {
        inner: [[0; 16]; 2],
        outer: [[0; 16]; 2],
    };
    for (pad, state) in [(0x36u8, &mut k.inner), (0x5c, &mut k.outer)] {
        let mut b = k0.map(|x| x ^ pad);
        let mut st = [S1::iv()];
        sha1_compress(&mut st, &mut [words(&b, order)]);
        st[0].store(state);
        b.zeroize();
    }
    k0.zeroize();
    k
}

/// Put the lanes (their keys, messages and outputs together) in order of increasing block
/// count and return the counts in that order. Lengths are public, so ordering by them leaks
/// nothing; with the shortest lane first, the lanes that still have blocks after it are
/// always a suffix, and every lane index in the kernels stays a constant. (An insertion
/// sort of swaps: four lanes at most, nothing copied but references.)
#[inline(always)]
fn sort_lanes<K, const N: usize>(
    keys: &mut [&K; N],
    msgs: &mut [&Padded<'_>; N],
    out: &mut [&mut [u8; 32]; N],
) -> [usize; N] {
    let mut blocks = msgs.map(Padded::blocks);
    for i in 1..N {
        let mut j = i;
        while j > 0 && blocks[j - 1] > blocks[j] {
            blocks.swap(j - 1, j);
            keys.swap(j - 1, j);
            msgs.swap(j - 1, j);
            out.swap(j - 1, j);
            j -= 1;
        }
    }
    blocks
}

/// Inner blocks `from..to` of every lane (each has at least `to`), the lanes interleaved.
// SAFETY: SHA, SSE2 and SSSE3, through `words` and `sha1_compress`; reached only from the
// kernels behind a key.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_span<const M: usize>(st: &mut [S1; M], msgs: [&Padded<'_>; M], from: usize, to: usize) {
    let order = sha1_order();
    let mut w = [[_mm_setzero_si128(); 4]; M];
    for i in from..to {
        for (w, m) in w.iter_mut().zip(msgs) {
            *w = words(m.block(i), order);
        }
        sha1_compress(st, &mut w);
    }
}

/// The inner blocks after the shortest lane's last one (`msgs` by increasing `blocks`): as
/// lanes run out, the others go on in narrower groups (3, 2, then 1 lane).
// SAFETY: SHA, SSE2 and SSSE3, through `sha1_span`; reached only from `sha1_hmac`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha1_tails<const N: usize>(st: &mut [S1; N], msgs: [&Padded<'_>; N], blocks: [usize; N]) {
    for k in 1..N {
        let (from, to) = (blocks[k - 1], blocks[k]);
        if from == to {
            continue;
        }
        match (&mut st[k..], &msgs[k..]) {
            ([a, b, c], &[ma, mb, mc]) => {
                let mut s = [*a, *b, *c];
                sha1_span(&mut s, [ma, mb, mc], from, to);
                [*a, *b, *c] = s;
            }
            ([a, b], &[ma, mb]) => {
                let mut s = [*a, *b];
                sha1_span(&mut s, [ma, mb], from, to);
                [*a, *b] = s;
            }
            ([a], &[ma]) => {
                let mut s = [*a];
                sha1_span(&mut s, [ma], from, to);
                [*a] = s;
            }
            // N ≤ 4: at most three lanes outlive the shortest one
            _ => {}
        }
    }
}

/// HMAC-SHA1 of N messages: the inner blocks all lanes have are done N at a time, the rest
/// in narrower groups as lanes run out (`sha1_tails`), then the N outer blocks together.
// SAFETY: SHA, SSE2, SSSE3 and SSE4.1, through the functions above; entered only from
// `HmacSha1Key::mac`/`mac2`/`mac4`, and a key exists only after `available()`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn sha1_hmac<const N: usize>(
    mut keys: [&HmacSha1Key; N],
    mut msgs: [&Padded<'_>; N],
    mut out: [&mut [u8; 32]; N],
) {
    let order = sha1_order();
    let zero = _mm_setzero_si128();
    let blocks = sort_lanes(&mut keys, &mut msgs, &mut out);
    let mut st = [S1 {
        abcd: zero,
        e: zero,
    }; N];
    for (s, k) in st.iter_mut().zip(keys) {
        *s = S1::load(&k.inner);
    }
    let common = blocks[0];
    let mut w = [[zero; 4]; N];
    // Steps 0..common: inner blocks of every lane. Step `common`: the outer block. One call
    // site for the N-lane compression, so that it is inlined. (At four lanes the message
    // words spill either way; inlined and out of line measured the same, Zen 4.)
    for i in 0..=common {
        if i < common {
            for (w, m) in w.iter_mut().zip(msgs) {
                *w = words(m.block(i), order);
            }
        } else {
            sha1_tails(&mut st, msgs, blocks);
            for ((s, w), k) in st.iter_mut().zip(w.iter_mut()).zip(keys) {
                // Outer hash: one block, the 20-byte inner digest (already the message
                // words ABCD, E) then 0x80 and the length, (64 + 20) * 8 bits.
                let w4_w7 = _mm_blend_epi16::<0xc0>(_mm_set_epi32(0, PAD_BIT, 0, 0), s.e);
                *w = [
                    s.abcd,
                    w4_w7,
                    zero,
                    _mm_set_epi32(0, 0, 0, (BLOCK as i32 + 20) * 8),
                ];
                *s = S1::load(&k.outer);
            }
        }
        sha1_compress(&mut st, &mut w);
    }
    for (s, o) in st.into_iter().zip(out) {
        sha1_digest(s, o);
    }
}

/// A key's saved registers, inner then outer (the layout of both HMAC keys).
#[inline(always)]
fn saved_regs<'a>(inner: &'a [[u8; 16]; 2], outer: &'a [[u8; 16]; 2]) -> [&'a [u8; 16]; 4] {
    let ([a, b], [c, d]) = (inner, outer);
    [a, b, c, d]
}

impl HmacSha1Key {
    /// The saved registers: inner ABCD and E, outer ABCD and E (A and E in the top dwords),
    /// for the kernels that keep one word of many lanes per register (`shax16`).
    #[inline(always)]
    pub(super) fn regs(&self) -> [&[u8; 16]; 4] {
        saved_regs(&self.inner, &self.outer)
    }

    /// Prepare `key` (any length; RFC 2404 uses 20 bytes). `None` on a CPU without SHA-NI.
    pub fn new(key: &[u8]) -> Option<HmacSha1Key> {
        if !available() {
            return None;
        }
        // SAFETY: `available()` confirmed SHA, SSSE3 and SSE4.1 (SSE2 is baseline), the
        // features `sha1_key` enables.
        Some(unsafe { sha1_key(key) })
    }

    /// HMAC-SHA1 of `data` ‖ `esn_hi` (big-endian, when given) into `out[..20]` (the rest of
    /// `out` is left as it is); the caller truncates (12 bytes for ESP, RFC 2404).
    pub fn mac(&self, data: &[u8], esn_hi: Option<u32>, out: &mut [u8; 32]) {
        let msg = Padded::new(data, esn_hi, BLOCK);
        // SAFETY: a key exists only if `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha1_hmac([self], [&msg], [out]) }
    }

    /// Two independent packets at once (their keys may differ), interleaved: the same
    /// results as two [`mac`](Self::mac) calls.
    pub fn mac2(
        keys: [&HmacSha1Key; 2],
        data: [&[u8]; 2],
        esn_hi: [Option<u32>; 2],
        out: [&mut [u8; 32]; 2],
    ) {
        let msgs = [
            Padded::new(data[0], esn_hi[0], BLOCK),
            Padded::new(data[1], esn_hi[1], BLOCK),
        ];
        // SAFETY: a key exists only if `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha1_hmac(keys, msgs.each_ref(), out) }
    }

    /// Four independent packets at once (their keys may differ), interleaved: the same
    /// results as four [`mac`](Self::mac) calls. Lanes of different lengths are fine; the
    /// blocks past the shortest packet's run three, two or one at a time, so a burst
    /// signs fastest in groups of similar lengths.
    pub fn mac4(
        keys: [&HmacSha1Key; 4],
        data: [&[u8]; 4],
        esn_hi: [Option<u32>; 4],
        out: [&mut [u8; 32]; 4],
    ) {
        // Written out: built with `array::from_fn` instead, the same call measured ~40 TSC
        // cycles slower per packet (a quarter of a 64-byte packet's time).
        let ([d0, d1, d2, d3], [e0, e1, e2, e3]) = (data, esn_hi);
        let msgs = [
            Padded::new(d0, e0, BLOCK),
            Padded::new(d1, e1, BLOCK),
            Padded::new(d2, e2, BLOCK),
            Padded::new(d3, e3, BLOCK),
        ];
        // SAFETY: a key exists only if `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha1_hmac(keys, msgs.each_ref(), out) }
    }
}

// ---------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4 §6.2.2) with SHA256RNDS2/MSG1/MSG2: the state as ABEF and CDGH
// (A and C in the top dwords), message words in order (W[t] in the bottom dword).
// ---------------------------------------------------------------------------------------

/// HMAC-SHA-256 key for the SHA-NI kernels: the SHA-256 states after the ipad and the opad
/// blocks (RFC 2104 §2). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacSha256Key {
    /// ABEF, CDGH (the registers' layout)
    inner: [[u8; 16]; 2],
    outer: [[u8; 16]; 2],
}

impl core::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha256Key(<secret>)")
    }
}

/// FIPS 180-4 §4.2.2, four to a register (the first in the bottom dword).
pub(super) static K256: [[u32; 4]; 16] = [
    [0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5],
    [0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5],
    [0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3],
    [0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174],
    [0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc],
    [0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da],
    [0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7],
    [0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967],
    [0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13],
    [0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85],
    [0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3],
    [0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070],
    [0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5],
    [0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3],
    [0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208],
    [0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2],
];

#[derive(Clone, Copy)]
struct S256 {
    abef: __m128i,
    cdgh: __m128i,
}

impl S256 {
    #[inline(always)]
    fn load(s: &[[u8; 16]; 2]) -> S256 {
        S256 {
            abef: load(&s[0]),
            cdgh: load(&s[1]),
        }
    }

    #[inline(always)]
    fn store(self, s: &mut [[u8; 16]; 2]) {
        store(&mut s[0], self.abef);
        store(&mut s[1], self.cdgh);
    }

    /// FIPS 180-4 §5.3.3.
    // SAFETY: SSE2 only; called from the kernels, which have all the features.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn iv() -> S256 {
        const H: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        S256 {
            abef: _mm_set_epi32(H[0] as i32, H[1] as i32, H[4] as i32, H[5] as i32),
            cdgh: _mm_set_epi32(H[2] as i32, H[3] as i32, H[6] as i32, H[7] as i32),
        }
    }
}

/// Byte-swap each dword: four big-endian words, the first in the bottom dword.
// SAFETY: SSE2 only; called from the kernels, which have all the features.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_order() -> __m128i {
    _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203)
}

/// Rounds 4I..4I+3 of each lane, computing W[4I..4I+3] first for I ≥ 4:
/// W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16] (MSG1 does W[t-16] + σ0(W[t-15]),
/// PALIGNR picks W[t-7..t-4], MSG2 adds σ1 of W[t-2], including the words it computes).
// SAFETY: SHA (SHA256RNDS2/MSG1/MSG2), SSSE3 (PALIGNR) and SSE2; called only from
// `sha256_compress`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_group<const I: usize, const N: usize>(st: &mut [S256; N], w: &mut [[__m128i; 4]; N]) {
    for (s, m) in st.iter_mut().zip(w.iter_mut()) {
        if I >= 4 {
            let x = _mm_add_epi32(
                _mm_sha256msg1_epu32(m[I % 4], m[(I + 1) % 4]),
                _mm_alignr_epi8::<4>(m[(I + 3) % 4], m[(I + 2) % 4]),
            );
            m[I % 4] = _mm_sha256msg2_epu32(x, m[(I + 3) % 4]);
        }
        // SAFETY: an unaligned 16-byte load from a 16-byte array; SSE2 is part of x86_64.
        let k = unsafe { _mm_loadu_si128(K256[I].as_ptr().cast()) };
        let wk = _mm_add_epi32(m[I % 4], k);
        // two rounds each; the registers swap roles (the old ABEF is the new CDGH)
        s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, wk);
        s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32::<0x0e>(wk));
    }
}

/// One SHA-256 compression of one block per lane; `w` is the block's words (clobbered).
// SAFETY: SHA, SSSE3 and SSE2, through `sha256_group`; reached only from the kernels behind
// a key.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_compress<const N: usize>(st: &mut [S256; N], w: &mut [[__m128i; 4]; N]) {
    let save = *st;
    sha256_group::<0, N>(st, w);
    sha256_group::<1, N>(st, w);
    sha256_group::<2, N>(st, w);
    sha256_group::<3, N>(st, w);
    sha256_group::<4, N>(st, w);
    sha256_group::<5, N>(st, w);
    sha256_group::<6, N>(st, w);
    sha256_group::<7, N>(st, w);
    sha256_group::<8, N>(st, w);
    sha256_group::<9, N>(st, w);
    sha256_group::<10, N>(st, w);
    sha256_group::<11, N>(st, w);
    sha256_group::<12, N>(st, w);
    sha256_group::<13, N>(st, w);
    sha256_group::<14, N>(st, w);
    sha256_group::<15, N>(st, w);
    for (s, v) in st.iter_mut().zip(save) {
        s.abef = _mm_add_epi32(s.abef, v.abef);
        s.cdgh = _mm_add_epi32(s.cdgh, v.cdgh);
    }
}

/// [`sha256_compress`], not inlined (see `sha256_hmac`).
// SAFETY: as `sha256_compress`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline(never)]
fn sha256_compress_outlined<const N: usize>(st: &mut [S256; N], w: &mut [[__m128i; 4]; N]) {
    sha256_compress(st, w)
}

/// The state as plain words: (A, B, C, D) and (E, F, G, H), A and E in the bottom dwords.
// SAFETY: SSE2 and SSE4.1 (PBLENDW), SSSE3 (PALIGNR); reached only from the kernels.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_words(s: S256) -> [__m128i; 2] {
    let feba = _mm_shuffle_epi32::<0x1b>(s.abef);
    let dchg = _mm_shuffle_epi32::<0xb1>(s.cdgh);
    [
        _mm_blend_epi16::<0xf0>(feba, dchg),
        _mm_alignr_epi8::<8>(dchg, feba),
    ]
}

/// The 32-byte digest of a final state.
// SAFETY: SSE2, SSE4.1 and SSSE3, through `sha256_words` and PSHUFB; reached only from the
// kernels.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_digest(s: S256, out: &mut [u8; 32]) {
    let [dcba, hgfe] = sha256_words(s);
    let (o, _) = out.as_chunks_mut::<16>();
    store(&mut o[0], _mm_shuffle_epi8(dcba, sha256_order()));
    store(&mut o[1], _mm_shuffle_epi8(hgfe, sha256_order()));
}

/// RFC 2104 §2 key preparation: hash a key longer than a block, zero-pad, and absorb
/// K0 ^ ipad and K0 ^ opad.
// SAFETY: SHA, SSE2, SSSE3 and SSE4.1, through `sha256_compress`, `words` and
// `sha256_digest`; entered only from `HmacSha256Key::new` after `available()`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn sha256_key(key: &[u8]) -> HmacSha256Key {
    let order = sha256_order();
    let mut k0 = [0u8; BLOCK];
    if key.len() > BLOCK {
        let mut p = Padded::new(key, None, 0);
        let mut st = [S256::iv()];
        for i in 0..p.blocks() {
            sha256_compress(&mut st, &mut [words(p.block(i), order)]);
        }
        p.tail.zeroize();
        let mut d = [0u8; 32];
        sha256_digest(st[0], &mut d);
        k0[..32].copy_from_slice(&d);
        d.zeroize();
    } else {
        k0[..key.len()].copy_from_slice(key);
    }
    let mut k = HmacSha256Key {
        inner: [[0; 16]; 2],
        outer: [[0; 16]; 2],
    };
    for (pad, state) in [(0x36u8, &mut k.inner), (0x5c, &mut k.outer)] {
        let mut b = k0.map(|x| x ^ pad);
        let mut st = [S256::iv()];
        sha256_compress(&mut st, &mut [words(&b, order)]);
        st[0].store(state);
        b.zeroize();
    }
    k0.zeroize();
    k
}

/// Inner blocks `from..to` of every lane (each has at least `to`), the lanes interleaved.
// SAFETY: SHA, SSE2 and SSSE3, through `words` and `sha256_compress`; reached only from the
// kernels behind a key.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_span<const M: usize>(st: &mut [S256; M], msgs: [&Padded<'_>; M], from: usize, to: usize) {
    let order = sha256_order();
    let mut w = [[_mm_setzero_si128(); 4]; M];
    for i in from..to {
        for (w, m) in w.iter_mut().zip(msgs) {
            *w = words(m.block(i), order);
        }
        sha256_compress_lanes(st, &mut w);
    }
}

/// The inner blocks after the shortest lane's last one (`msgs` by increasing `blocks`): as
/// lanes run out, the others go on in narrower groups (3, 2, then 1 lane; the public entry
/// points use two lanes at most, the tests four).
// SAFETY: SHA, SSE2 and SSSE3, through `sha256_span`; reached only from `sha256_hmac`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_tails<const N: usize>(st: &mut [S256; N], msgs: [&Padded<'_>; N], blocks: [usize; N]) {
    for k in 1..N {
        let (from, to) = (blocks[k - 1], blocks[k]);
        if from == to {
            continue;
        }
        match (&mut st[k..], &msgs[k..]) {
            ([a, b, c], &[ma, mb, mc]) => {
                let mut s = [*a, *b, *c];
                sha256_span(&mut s, [ma, mb, mc], from, to);
                [*a, *b, *c] = s;
            }
            ([a, b], &[ma, mb]) => {
                let mut s = [*a, *b];
                sha256_span(&mut s, [ma, mb], from, to);
                [*a, *b] = s;
            }
            ([a], &[ma]) => {
                let mut s = [*a];
                sha256_span(&mut s, [ma], from, to);
                [*a] = s;
            }
            // N ≤ 4: at most three lanes outlive the shortest one
            _ => {}
        }
    }
}

/// [`sha256_compress`] of one block per lane, out of line for two lanes or more.
// SAFETY: as `sha256_compress`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn sha256_compress_lanes<const N: usize>(st: &mut [S256; N], w: &mut [[__m128i; 4]; N]) {
    if N > 1 {
        // Measured on Zen 3: inlined here, the two-lane compression runs short of
        // registers (SHA256RNDS2 also ties up XMM0) and the message words get spilled
        // inside the round chains, 10-15 % slower than the call, where only the
        // feed-forward copy of the state goes to the stack. (SHA-1 does better inlined.)
        // Four lanes spill either way: inlined and out of line measured the same (within
        // 0.5 %, Zen 4).
        sha256_compress_outlined(st, w);
    } else {
        sha256_compress(st, w);
    }
}

/// HMAC-SHA-256 of N messages: the inner blocks all lanes have are done N at a time, the
/// rest in narrower groups as lanes run out (`sha256_tails`), then the N outer blocks
/// together.
// SAFETY: SHA, SSE2, SSSE3 and SSE4.1, through the functions above; entered only from
// `HmacSha256Key::mac`/`mac2` (and the tests), and a key exists only after `available()`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn sha256_hmac<const N: usize>(
    mut keys: [&HmacSha256Key; N],
    mut msgs: [&Padded<'_>; N],
    mut out: [&mut [u8; 32]; N],
) {
    let order = sha256_order();
    let zero = _mm_setzero_si128();
    let blocks = sort_lanes(&mut keys, &mut msgs, &mut out);
    let mut st = [S256 {
        abef: zero,
        cdgh: zero,
    }; N];
    for (s, k) in st.iter_mut().zip(keys) {
        *s = S256::load(&k.inner);
    }
    let common = blocks[0];
    let mut w = [[zero; 4]; N];
    // Steps 0..common: inner blocks of every lane. Step `common`: the outer block. One call
    // site for the N-lane compression.
    for i in 0..=common {
        if i < common {
            for (w, m) in w.iter_mut().zip(msgs) {
                *w = words(m.block(i), order);
            }
        } else {
            sha256_tails(&mut st, msgs, blocks);
            for ((s, w), k) in st.iter_mut().zip(w.iter_mut()).zip(keys) {
                // Outer hash: one block, the 32-byte inner digest (already the message
                // words A..H) then 0x80 and the length, (64 + 32) * 8 bits.
                let [abcd, efgh] = sha256_words(*s);
                *w = [
                    abcd,
                    efgh,
                    _mm_set_epi32(0, 0, 0, PAD_BIT),
                    _mm_set_epi32((BLOCK as i32 + 32) * 8, 0, 0, 0),
                ];
                *s = S256::load(&k.outer);
            }
        }
        sha256_compress_lanes(&mut st, &mut w);
    }
    for (s, o) in st.into_iter().zip(out) {
        sha256_digest(s, o);
    }
}

impl HmacSha256Key {
    /// The saved registers: inner ABEF and CDGH, outer ABEF and CDGH (A and C in the top
    /// dwords), for the kernels that keep one word of many lanes per register (`shax16`).
    #[inline(always)]
    pub(super) fn regs(&self) -> [&[u8; 16]; 4] {
        saved_regs(&self.inner, &self.outer)
    }

    /// Prepare `key` (any length; RFC 4868 uses 32 bytes). `None` on a CPU without SHA-NI.
    pub fn new(key: &[u8]) -> Option<HmacSha256Key> {
        if !available() {
            return None;
        }
        // SAFETY: `available()` confirmed SHA, SSSE3 and SSE4.1 (SSE2 is baseline), the
        // features `sha256_key` enables.
        Some(unsafe { sha256_key(key) })
    }

    /// HMAC-SHA-256 of `data` ‖ `esn_hi` (big-endian, when given) into `out`; the caller
    /// truncates (16 bytes for ESP, RFC 4868).
    pub fn mac(&self, data: &[u8], esn_hi: Option<u32>, out: &mut [u8; 32]) {
        let msg = Padded::new(data, esn_hi, BLOCK);
        // SAFETY: a key exists only if `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha256_hmac([self], [&msg], [out]) }
    }

    /// Two independent packets at once (their keys may differ), interleaved: the same
    /// results as two [`mac`](Self::mac) calls.
    pub fn mac2(
        keys: [&HmacSha256Key; 2],
        data: [&[u8]; 2],
        esn_hi: [Option<u32>; 2],
        out: [&mut [u8; 32]; 2],
    ) {
        let msgs = [
            Padded::new(data[0], esn_hi[0], BLOCK),
            Padded::new(data[1], esn_hi[1], BLOCK),
        ];
        // SAFETY: a key exists only if `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha256_hmac(keys, msgs.each_ref(), out) }
    }

    /// Four independent packets at once (their keys may differ): the same results as four
    /// [`mac`](Self::mac) calls. For SHA-256 this is two [`mac2`](Self::mac2) passes, the
    /// two shortest packets together and the two longest together (the pairing that leaves
    /// the fewest blocks to run alone). A four-lane interleave measured no faster than two
    /// two-lane passes on this CPU most of the time, and slower under load (module docs).
    pub fn mac4(
        mut keys: [&HmacSha256Key; 4],
        mut data: [&[u8]; 4],
        mut esn_hi: [Option<u32>; 4],
        mut out: [&mut [u8; 32]; 4],
    ) {
        // Insertion sort by message length (public; the block count grows with it), the
        // four arrays moved together: no copies, and `out` stays the caller's references.
        let len = |d: &[u8], e: Option<u32>| d.len() + if e.is_some() { 4 } else { 0 };
        for i in 1..4 {
            let mut j = i;
            while j > 0 && len(data[j - 1], esn_hi[j - 1]) > len(data[j], esn_hi[j]) {
                keys.swap(j - 1, j);
                data.swap(j - 1, j);
                esn_hi.swap(j - 1, j);
                out.swap(j - 1, j);
                j -= 1;
            }
        }
        let [o0, o1, o2, o3] = out;
        Self::mac2(
            [keys[0], keys[1]],
            [data[0], data[1]],
            [esn_hi[0], esn_hi[1]],
            [o0, o1],
        );
        Self::mac2(
            [keys[2], keys[3]],
            [data[2], data[3]],
            [esn_hi[2], esn_hi[3]],
            [o2, o3],
        );
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::prelude::*;

    // Unlike `aesni`'s tests these do not pass quietly on a CPU without the features: the
    // development and CI machines have SHA-NI, and a kernel nobody ran is no kernel.
    const NEED: &str = "this CPU lacks SHA-NI (sha + ssse3 + sse4.1): the shani kernels \
                        cannot be tested here";

    fn k1(key: &[u8]) -> HmacSha1Key {
        HmacSha1Key::new(key).expect(NEED)
    }

    fn k256(key: &[u8]) -> HmacSha256Key {
        HmacSha256Key::new(key).expect(NEED)
    }

    use crate::kat::unhex;

    /// (hash, key, data, expected prefix of the MAC) from the vector files the other HMAC
    /// KATs read.
    pub(in crate::crypto) fn vectors(text: &str, hash: &str) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut out = vec![];
        let mut cur: std::collections::HashMap<&str, &str> = Default::default();
        for line in text.lines().chain(std::iter::once("")) {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if cur.get("hash") == Some(&hash) {
                    let mut mac = unhex(cur["mac"]);
                    if let Some(t) = cur.get("truncate") {
                        let t = usize::from_str_radix(t.trim_start_matches("0x"), 16).expect("n");
                        mac.truncate(t);
                    }
                    out.push((unhex(cur["key"]), unhex(cur["data"]), mac));
                }
                cur.clear();
                continue;
            }
            if let Some((k, v)) = line.split_once(" = ") {
                cur.insert(k.trim(), v.trim());
            }
        }
        out
    }

    fn reference<M: Mac + KeyInit>(key: &[u8], data: &[u8], esn_hi: Option<u32>) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        if let Some(hi) = esn_hi {
            m.update(&hi.to_be_bytes());
        }
        m.finalize().into_bytes().to_vec()
    }

    fn sha1_ref(key: &[u8], data: &[u8], esn_hi: Option<u32>) -> Vec<u8> {
        reference::<Hmac<sha1::Sha1>>(key, data, esn_hi)
    }

    fn sha256_ref(key: &[u8], data: &[u8], esn_hi: Option<u32>) -> Vec<u8> {
        reference::<Hmac<sha2::Sha256>>(key, data, esn_hi)
    }

    /// `mac` of one packet and `mac2` of two, as (lane 0, lane 1) full outputs; for SHA-1 the
    /// bytes after the 20th must be left alone.
    fn sha1_both(k: [&[u8]; 2], d: [&[u8]; 2], e: [Option<u32>; 2]) -> [Vec<u8>; 2] {
        let keys = [k1(k[0]), k1(k[1])];
        let mut one = [[0xeeu8; 32]; 2];
        for l in 0..2 {
            keys[l].mac(d[l], e[l], &mut one[l]);
        }
        let (mut a, mut b) = ([0xeeu8; 32], [0xeeu8; 32]);
        HmacSha1Key::mac2([&keys[0], &keys[1]], d, e, [&mut a, &mut b]);
        assert_eq!([a, b], one, "mac2 differs from mac");
        assert_eq!(a[20..], [0xee; 12], "mac wrote past the SHA-1 output");
        [a[..20].to_vec(), b[..20].to_vec()]
    }

    fn sha256_both(k: [&[u8]; 2], d: [&[u8]; 2], e: [Option<u32>; 2]) -> [Vec<u8>; 2] {
        let keys = [k256(k[0]), k256(k[1])];
        let mut one = [[0u8; 32]; 2];
        for l in 0..2 {
            keys[l].mac(d[l], e[l], &mut one[l]);
        }
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        HmacSha256Key::mac2([&keys[0], &keys[1]], d, e, [&mut a, &mut b]);
        assert_eq!([a, b], one, "mac2 differs from mac");
        [a.to_vec(), b.to_vec()]
    }

    /// `mac` of each of four packets and `mac4` of all four, as the four outputs (20 bytes
    /// each for SHA-1, whose `mac4` must leave the other 12 alone).
    fn sha1_four(k: [&[u8]; 4], d: [&[u8]; 4], e: [Option<u32>; 4]) -> [Vec<u8>; 4] {
        let keys = k.map(k1);
        let mut one = [[0xeeu8; 32]; 4];
        for l in 0..4 {
            keys[l].mac(d[l], e[l], &mut one[l]);
        }
        let mut four = [[0xeeu8; 32]; 4];
        let [a, b, c, x] = &mut four;
        HmacSha1Key::mac4(keys.each_ref(), d, e, [a, b, c, x]);
        assert_eq!(four, one, "mac4 differs from mac");
        four.map(|o| {
            assert_eq!(o[20..], [0xee; 12], "mac4 wrote past the SHA-1 output");
            o[..20].to_vec()
        })
    }

    fn sha256_four(k: [&[u8]; 4], d: [&[u8]; 4], e: [Option<u32>; 4]) -> [Vec<u8>; 4] {
        let keys = k.map(k256);
        let mut one = [[0u8; 32]; 4];
        for l in 0..4 {
            keys[l].mac(d[l], e[l], &mut one[l]);
        }
        let mut four = [[0u8; 32]; 4];
        let [a, b, c, x] = &mut four;
        HmacSha256Key::mac4(keys.each_ref(), d, e, [a, b, c, x]);
        assert_eq!(four, one, "mac4 differs from mac");
        // the four-lane kernel, which `mac4` does not use on this CPU (module docs)
        let msgs: [Padded<'_>; 4] = core::array::from_fn(|l| Padded::new(d[l], e[l], BLOCK));
        let mut lanes = [[0u8; 32]; 4];
        let [a, b, c, x] = &mut lanes;
        // SAFETY: the keys exist, so `available()` confirmed SHA, SSSE3 and SSE4.1.
        unsafe { sha256_hmac(keys.each_ref(), msgs.each_ref(), [a, b, c, x]) };
        assert_eq!(lanes, one, "the four-lane SHA-256 kernel differs from mac");
        four.map(|o| o.to_vec())
    }

    /// Both algorithms' `mac4` against RustCrypto, lane by lane.
    fn four_match_rustcrypto(k: [&[u8]; 4], d: [&[u8]; 4], e: [Option<u32>; 4], what: &str) {
        let want1: [Vec<u8>; 4] = core::array::from_fn(|l| sha1_ref(k[l], d[l], e[l]));
        assert_eq!(sha1_four(k, d, e), want1, "sha1 {what}");
        let want256: [Vec<u8>; 4] = core::array::from_fn(|l| sha256_ref(k[l], d[l], e[l]));
        assert_eq!(sha256_four(k, d, e), want256, "sha256 {what}");
    }

    #[test]
    fn the_features_are_here_and_detected() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let cpu = has("sha_ni") && has("ssse3") && has("sse4_1");
        assert_eq!(
            available(),
            cpu,
            "runtime detection disagrees with /proc/cpuinfo"
        );
        assert!(available(), "{NEED}");
        assert_eq!(HmacSha1Key::new(b"k").is_some(), available());
        assert_eq!(HmacSha256Key::new(b"k").is_some(), available());
    }

    /// RFC 2202 §3 cases 1–7, through `mac`, `mac2` (each case paired with the next one, so
    /// the lanes have different keys and lengths) and `mac4` (rotating through the lanes).
    #[test]
    fn rfc2202_hmac_sha1() {
        let v = vectors(
            include_str!("../../tests/vectors/rfc2202_hmac_sha1.txt"),
            "sha1",
        );
        assert_eq!(v.len(), 7);
        for (i, (key, data, mac)) in v.iter().enumerate() {
            let (k2, d2, m2) = &v[(i + 1) % v.len()];
            let [a, b] = sha1_both([key, k2], [data, d2], [None, None]);
            assert_eq!(a[..mac.len()], mac[..], "case {}", i + 1);
            assert_eq!(
                b[..m2.len()],
                m2[..],
                "case {} in lane 1",
                (i + 1) % v.len() + 1
            );
        }
        // mac4: case i in lane 0, the next three in lanes 1..3, so every case runs in
        // every lane next to others of different lengths and keys
        for i in 0..v.len() {
            let case: [usize; 4] = core::array::from_fn(|l| (i + l) % v.len());
            let got = sha1_four(
                case.map(|c| &v[c].0[..]),
                case.map(|c| &v[c].1[..]),
                [None; 4],
            );
            for (l, (&c, got)) in case.iter().zip(&got).enumerate() {
                let mac = &v[c].2;
                assert_eq!(
                    got[..mac.len()],
                    mac[..],
                    "case {} in lane {l} of mac4",
                    c + 1
                );
            }
        }
    }

    /// RFC 4231 §4.2–4.8 cases 1–7 for SHA-256 (case 5 is printed truncated to 128 bits),
    /// through `mac`, `mac2` and `mac4` as for RFC 2202.
    #[test]
    fn rfc4231_hmac_sha256() {
        let v = vectors(
            include_str!("../../tests/vectors/rfc4231_hmac.txt"),
            "sha256",
        );
        assert_eq!(v.len(), 7);
        assert_eq!(v[4].2.len(), 16, "case 5 is the truncated one");
        for (i, (key, data, mac)) in v.iter().enumerate() {
            let (k2, d2, m2) = &v[(i + 1) % v.len()];
            let [a, b] = sha256_both([key, k2], [data, d2], [None, None]);
            assert_eq!(a[..mac.len()], mac[..], "case {}", i + 1);
            assert_eq!(
                b[..m2.len()],
                m2[..],
                "case {} in lane 1",
                (i + 1) % v.len() + 1
            );
        }
        // mac4: case i in lane 0, the next three in lanes 1..3, so every case runs in
        // every lane next to others of different lengths and keys
        for i in 0..v.len() {
            let case: [usize; 4] = core::array::from_fn(|l| (i + l) % v.len());
            let got = sha256_four(
                case.map(|c| &v[c].0[..]),
                case.map(|c| &v[c].1[..]),
                [None; 4],
            );
            for (l, (&c, got)) in case.iter().zip(&got).enumerate() {
                let mac = &v[c].2;
                assert_eq!(
                    got[..mac.len()],
                    mac[..],
                    "case {} in lane {l} of mac4",
                    c + 1
                );
            }
        }
    }

    /// Every data length 0..300 (every padding boundary: 55/56, 63/64, 119/120, … with and
    /// without the 4 ESN bytes), keys of every kind (empty, short, one block, hashed), lane 1
    /// shorter, longer or equal.
    #[test]
    fn every_length_up_to_300_matches_rustcrypto() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let keys: Vec<Vec<u8>> = [0usize, 1, 20, 32, 55, 63, 64, 65, 100, 119, 120, 200]
            .iter()
            .map(|&n| (0..n).map(|i| (i as u8).wrapping_mul(13) ^ 0x5a).collect())
            .collect();
        for n in 0..300 {
            let m = (n * 37 + 11) % 300;
            let (ka, kb) = (&keys[n % keys.len()], &keys[(n + 5) % keys.len()]);
            let (da, db) = (&data[..n], &data[n..n + m]);
            for (ea, eb) in [
                (None, None),
                (Some(0xa1b2_c3d4), Some(0)),
                (None, Some(u32::MAX)),
            ] {
                let want1 = [sha1_ref(ka, da, ea), sha1_ref(kb, db, eb)];
                assert_eq!(
                    sha1_both([ka, kb], [da, db], [ea, eb]),
                    want1,
                    "sha1 {n} {m}"
                );
                let want256 = [sha256_ref(ka, da, ea), sha256_ref(kb, db, eb)];
                assert_eq!(
                    sha256_both([ka, kb], [da, db], [ea, eb]),
                    want256,
                    "sha256 {n} {m}"
                );
                // both lanes the same length and key
                let [a, b] = sha256_both([ka, ka], [da, da], [ea, ea]);
                assert_eq!(a, b);
            }
        }
    }

    /// `mac4` at every data length 0..300 in lane 0, the other lanes at three other lengths
    /// (shorter, longer, sometimes equal: the order in which lanes run out varies) with
    /// four different keys and mixed ESN bits.
    #[test]
    fn mac4_every_length_up_to_300_matches_rustcrypto() {
        let data: Vec<u8> = (0..1200u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let keys: Vec<Vec<u8>> = [0usize, 1, 20, 32, 55, 63, 64, 65, 100, 119, 120, 200]
            .iter()
            .map(|&n| (0..n).map(|i| (i as u8).wrapping_mul(13) ^ 0x5a).collect())
            .collect();
        for n in 0..300 {
            let len = [
                n,
                (n * 37 + 11) % 300,
                (n * 101 + 7) % 300,
                (n * 13 + 150) % 300,
            ];
            let k: [&[u8]; 4] = core::array::from_fn(|l| &keys[(n + 5 * l) % keys.len()][..]);
            let d: [&[u8]; 4] = core::array::from_fn(|l| &data[300 * l..300 * l + len[l]]);
            for e in [
                [None; 4],
                [Some(0xa1b2_c3d4), None, Some(0), Some(u32::MAX)],
                [None, Some(7), None, Some(n as u32)],
            ] {
                four_match_rustcrypto(k, d, e, &format!("{len:?} {e:?}"));
            }
        }
    }

    /// Lanes of very different lengths, in every order: the shortest lane's end leaves three,
    /// two or one lane to finish (every tail width, every lane position), and equal lengths
    /// skip a width.
    #[test]
    fn mac4_lanes_of_very_different_lengths() {
        let data: Vec<u8> = (0..4 * 3000u32).map(|i| (i * 29 + i / 97) as u8).collect();
        let keys: [Vec<u8>; 4] = core::array::from_fn(|l| vec![l as u8 + 1; 16 + 40 * l]);
        let perms: Vec<[usize; 4]> = (0..256usize)
            .map(|x| core::array::from_fn(|l| (x >> (2 * l)) & 3))
            .filter(|p: &[usize; 4]| (0..4).all(|l| p.contains(&l)))
            .collect();
        assert_eq!(perms.len(), 24);
        for lens in [
            [0, 64, 1000, 3000],
            [55, 56, 119, 2999],
            [3000, 0, 0, 0],
            [0, 0, 0, 3000],
            [5, 5, 2000, 2000],
            [1420, 1420, 64, 64],
            [200, 1400, 1400, 1400],
        ] {
            for p in &perms {
                let len = p.map(|i| lens[i]);
                let k: [&[u8]; 4] = core::array::from_fn(|l| &keys[p[l]][..]);
                let d: [&[u8]; 4] = core::array::from_fn(|l| &data[3000 * l..3000 * l + len[l]]);
                let e = [Some(1), None, Some(u32::MAX), Some(0x8000_0000)];
                four_match_rustcrypto(k, d, e, &format!("{len:?}"));
            }
        }
    }

    /// Every key length 0..=200 (the key-hashing padding boundaries at 119/120 included).
    #[test]
    fn every_key_length_up_to_200_matches_rustcrypto() {
        let data = b"what do ya want for nothing?";
        for n in 0..=200usize {
            let key: Vec<u8> = (0..n).map(|i| (i as u8) ^ 0xa5).collect();
            let mut out = [0u8; 32];
            k1(&key).mac(data, Some(n as u32), &mut out);
            assert_eq!(
                out[..20],
                sha1_ref(&key, data, Some(n as u32))[..],
                "sha1 key {n}"
            );
            k256(&key).mac(data, None, &mut out);
            assert_eq!(out[..], sha256_ref(&key, data, None)[..], "sha256 key {n}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random keys, data and ESN bits in two lanes: `mac` and `mac2` are bit-identical to
        /// RustCrypto `hmac` over `data ‖ esn_hi`.
        #[test]
        fn matches_rustcrypto_hmac(
            ka in prop::collection::vec(any::<u8>(), 0..200),
            kb in prop::collection::vec(any::<u8>(), 0..200),
            da in prop::collection::vec(any::<u8>(), 0..3000),
            db in prop::collection::vec(any::<u8>(), 0..3000),
            ea in any::<Option<u32>>(),
            eb in any::<Option<u32>>(),
        ) {
            let want1 = [sha1_ref(&ka, &da, ea), sha1_ref(&kb, &db, eb)];
            prop_assert_eq!(sha1_both([&ka, &kb], [&da, &db], [ea, eb]), want1);
            let want256 = [sha256_ref(&ka, &da, ea), sha256_ref(&kb, &db, eb)];
            prop_assert_eq!(sha256_both([&ka, &kb], [&da, &db], [ea, eb]), want256);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Random keys, data (lengths independent, so lanes run out in any order) and ESN
        /// bits in four lanes: `mac4` is bit-identical to RustCrypto `hmac`.
        #[test]
        fn mac4_matches_rustcrypto_hmac(
            k in prop::array::uniform4(prop::collection::vec(any::<u8>(), 0..200)),
            d in prop::array::uniform4(prop::collection::vec(any::<u8>(), 0..3000)),
            e in any::<[Option<u32>; 4]>(),
        ) {
            let (k, d) = (k.each_ref().map(|k| &k[..]), d.each_ref().map(|d| &d[..]));
            let want1: [Vec<u8>; 4] = core::array::from_fn(|l| sha1_ref(k[l], d[l], e[l]));
            prop_assert_eq!(sha1_four(k, d, e), want1);
            let want256: [Vec<u8>; 4] = core::array::from_fn(|l| sha256_ref(k[l], d[l], e[l]));
            prop_assert_eq!(sha256_four(k, d, e), want256);
        }
    }

    #[test]
    fn secrets_stay_secret() {
        let mut a = k1(&[7u8; 20]);
        let mut b = k256(&[7u8; 32]);
        assert_eq!(format!("{a:?}"), "HmacSha1Key(<secret>)");
        assert_eq!(format!("{b:?}"), "HmacSha256Key(<secret>)");
        assert_ne!(a.inner, [[0; 16]; 2]);
        a.zeroize();
        b.zeroize();
        assert_eq!((a.inner, a.outer), ([[0; 16]; 2], [[0; 16]; 2]));
        assert_eq!((b.inner, b.outer), ([[0; 16]; 2], [[0; 16]; 2]));
    }
}
