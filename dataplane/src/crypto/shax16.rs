//! AVX-512 kernels for HMAC-SHA1 (RFC 2104, RFC 2404) and HMAC-SHA-256 (RFC 4868) of up to
//! 16 packets at once: one 512-bit register holds the same hash word (FIPS 180-4 §6.1.2,
//! §6.2.2) of 16 independent messages, so every instruction advances 16 packets' hashes by
//! one step.
//!
//! Why: on the AVX-512 Intel Xeon of BENCHMARKS section 0, SHA1RNDS4 and SHA256RNDS2 are
//! throughput-bound — about 84 TSC cycles per 64-byte block of either hash, however many
//! lanes are interleaved (`HmacSha1Key::mac4` is no faster per packet
//! than `mac` there) — while DPDK's intel-ipsec-mb signs a burst with 16-lane AVX-512 code.
//! These kernels do the same: the rounds are plain 32-bit adds, rotates (VPROLD/VPRORD) and
//! three-input logic (VPTERNLOGD) on 16 lanes, about 32 cycles per lane-block for SHA-1 and
//! 44 for SHA-256 when all 16 lanes are busy. Fewer busy lanes cost the same time per step,
//! so the callers ask [`plan`] which lanes to give them and use SHA-NI for the rest.
//!
//! Layout: for each block step, the 16 lanes' 64-byte blocks are loaded as 16 rows, each
//! byte-swapped to big-endian words, and transposed (four stages of two-source permutes)
//! into W[0..16], one register per word index. Lanes have their own lengths: a lane with no
//! block left at a step computes on zeros and its state is kept (a masked add). The outer
//! HMAC block of every lane is one step at the end.
//!
//! Constant time: no table, branch or memory index depends on the key or the data; lengths
//! (the number of blocks, which lanes are busy) are public.
//!
//! `unsafe` here is limited to entering the `#[target_feature(enable = "avx512f,avx512bw")]`
//! functions, which happens only in [`mac16`] after [`available`] said the CPU has both
//! (the loads and stores are `simd::load512` / `store512`).
#![allow(unsafe_code)]

use super::shani::{BLOCK, HmacSha1Key, HmacSha256Key, K256, Padded};
use super::simd::{load, load512, quad, store512};
use core::arch::x86_64::{
    __m512i, __mmask16, _mm512_add_epi32, _mm512_mask_add_epi32, _mm512_permutex2var_epi32,
    _mm512_permutexvar_epi32, _mm512_rol_epi32, _mm512_ror_epi32, _mm512_set1_epi32,
    _mm512_setr_epi32, _mm512_setzero_si512, _mm512_shuffle_epi8, _mm512_srli_epi32,
    _mm512_ternarylogic_epi32, _mm512_xor_si512,
};

/// Packets per call.
pub const LANES: usize = 16;

/// A key these kernels take: HMAC-SHA1 or HMAC-SHA-256 with its precomputed states.
pub trait LaneKey: private::Sealed {
    /// SHA-256 (else SHA-1).
    const SHA256: bool;
    /// Hash words: 5 or 8.
    const WORDS: usize;
    /// What a call costs, in the time of one SHA-NI block of this hash: the lanes' set-up
    /// and results.
    const CALL_COST: usize;
    /// What one block step of all 16 lanes costs, in SHA-NI blocks: the same for 1 busy
    /// lane as for 16.
    const STEP_COST: usize;
    /// Where the hash words A, B, … of the inner state, then of the outer state, are among
    /// the dwords of [`regs`](Self::regs) side by side (dword 4r + d is dword d of register
    /// r); SHA-1's three unused words repeat E.
    const WORD_AT: [u32; 16];
    /// The key's four saved SHA-NI registers (inner two, outer two).
    fn regs(&self) -> [&[u8; 16]; 4];
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::HmacSha1Key {}
    impl Sealed for super::HmacSha256Key {}
}

// The costs were measured with `cargo bench -p xsec-benches --bench crypto_choice --
// hmac-x16-lanes` on the AVX-512 Intel Xeon of BENCHMARKS section 0.
impl LaneKey for HmacSha1Key {
    const SHA256: bool = false;
    const WORDS: usize = 5;
    // about 1,100 and 520 TSC cycles, a SHA-NI block about 86: per packet, 16 lanes took
    // 0.35× SHA-NI's time at 1420 bytes and 0.63× at 64; 8 lanes 0.66× and 1.16×
    const CALL_COST: usize = 13;
    const STEP_COST: usize = 6;
    // ABCD with A in dword 3, E in dword 3 of the second register
    const WORD_AT: [u32; 16] = [3, 2, 1, 0, 7, 7, 7, 7, 11, 10, 9, 8, 15, 15, 15, 15];
    fn regs(&self) -> [&[u8; 16]; 4] {
        HmacSha1Key::regs(self)
    }
}

impl LaneKey for HmacSha256Key {
    const SHA256: bool = true;
    const WORDS: usize = 8;
    const CALL_COST: usize = SHA256_CALL_COST;
    const STEP_COST: usize = SHA256_STEP_COST;
    // ABEF (A in dword 3) and CDGH (C in dword 3)
    const WORD_AT: [u32; 16] = [3, 2, 7, 6, 1, 0, 5, 4, 11, 10, 15, 14, 9, 8, 13, 12];
    fn regs(&self) -> [&[u8; 16]; 4] {
        HmacSha256Key::regs(self)
    }
}

// About 610 and 335 ns, a SHA-NI SHA-256 block about 39 ns: per packet, 16 lanes took
// 0.59× the SHA-NI time at 1420 bytes and 0.74× at 64; 12 lanes 0.81× and 1.02×; 8 lanes
// 1.14× and 1.35×.
const SHA256_CALL_COST: usize = 16;
const SHA256_STEP_COST: usize = 9;

/// The smallest group these kernels can be worth: `n` lanes of `b` blocks cost
/// `CALL_COST + STEP_COST * b` here and `n * b` with SHA-NI, so `n` must exceed the
/// smaller `STEP_COST`.
pub const MIN_LANES: usize = 7;

/// The blocks (the inner pass's after the ipad block, and the outer block) of an HMAC-SHA1
/// or HMAC-SHA-256 of `len` bytes, with the ESN high bits appended or not: the steps a lane
/// takes here, and the SHA-NI blocks it takes there.
pub fn blocks(len: usize, esn: bool) -> usize {
    // the 0x80 byte and the 8-byte length after the data and ESN bits, rounded up; + outer
    (len + 4 * usize::from(esn) + 9).div_ceil(BLOCK) + 1
}

/// How many of the lanes (their [`blocks`] in increasing order) to give the kernel of `K`,
/// the rest going to SHA-NI: the shortest `k`, for the `k` with the least estimated time
/// (0: none). A kernel call lasts as long as its longest lane, so with lengths as mixed as
/// IMIX's the long packets are left out.
pub fn plan<K: LaneKey>(sorted_blocks: &[usize]) -> usize {
    let total: usize = sorted_blocks.iter().sum();
    let (mut best, mut best_k, mut prefix) = (total, 0, 0);
    for (i, &b) in sorted_blocks.iter().take(LANES).enumerate() {
        prefix += b;
        let cost = K::CALL_COST + K::STEP_COST * b + (total - prefix);
        if cost < best {
            (best, best_k) = (cost, i + 1);
        }
    }
    best_k
}

/// FIPS 180-4 §4.2.1, one constant per 20 rounds.
const K: [u32; 4] = [0x5a82_7999, 0x6ed9_eba1, 0x8f1b_bcdc, 0xca62_c1d6];

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
}

/// The HMAC of `data[i]` ‖ `esn_hi[i]` (big-endian, when given) with `keys[i]` into
/// `out[i][..20]` (SHA-1) or `out[i]` (SHA-256), for up to [`LANES`] packets (the keys may
/// differ): the same results as [`HmacSha1Key::mac`] / [`HmacSha256Key::mac`] on each.
/// `false`, with nothing written, when the CPU lacks AVX-512F/BW, or the slices' lengths
/// differ or exceed [`LANES`].
pub fn mac16<K: LaneKey>(
    keys: &[&K],
    data: &[&[u8]],
    esn_hi: &[Option<u32>],
    out: &mut [[u8; 32]],
) -> bool {
    let n = keys.len();
    if n > LANES || data.len() != n || esn_hi.len() != n || out.len() != n || !available() {
        return false;
    }
    let mut msgs: [Padded<'_>; LANES] = core::array::from_fn(|_| Padded::empty());
    for ((m, d), h) in msgs.iter_mut().zip(data).zip(esn_hi) {
        m.fill(d, *h, BLOCK);
    }
    // SAFETY: `available()` confirmed AVX-512F and AVX-512BW, the features `hmac` enables.
    unsafe { hmac(keys, &msgs[..n], out) };
    true
}

/// A register of 16 dwords, lane 0 first.
// SAFETY: AVX-512F; reached only from the functions below, which require it.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn dwords(a: [u32; LANES]) -> __m512i {
    let a = a.map(|x| x as i32);
    _mm512_setr_epi32(
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
        a[14], a[15],
    )
}

/// The 16 dwords of a register, lane 0 first.
// SAFETY: AVX-512F, through `store512`; reached only from `hmac`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn lanes(v: __m512i) -> [u32; LANES] {
    let mut b = [0u8; 64];
    store512(&mut b, v);
    let (w, _) = b.as_chunks::<4>();
    core::array::from_fn(|i| u32::from_le_bytes(w[i]))
}

/// One stage of the 16 × 16 dword transpose: in every 2D × 2D block, the two off-diagonal
/// D × D blocks change places (row i, column j with bit D clear in i and set in j, with row
/// i + D, column j - D). The four stages D = 8, 4, 2, 1 make the whole transpose.
// SAFETY: AVX-512F (VPERMT2D); reached only from `step`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn swap_blocks<const D: usize>(r: &mut [__m512i; LANES]) {
    let lo = dwords(core::array::from_fn(|j| {
        (if j & D == 0 { j } else { LANES + j - D }) as u32
    }));
    let hi = dwords(core::array::from_fn(|j| {
        (if j & D == 0 { j + D } else { LANES + j }) as u32
    }));
    for i in 0..LANES {
        if i & D == 0 {
            let (a, b) = (r[i], r[i + D]);
            r[i] = _mm512_permutex2var_epi32(a, lo, b);
            r[i + D] = _mm512_permutex2var_epi32(a, hi, b);
        }
    }
}

/// The 16 × 16 dword transpose: row i's dword j becomes row j's dword i.
// SAFETY: AVX-512F; reached only from `hmac`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn transpose(r: &mut [__m512i; LANES]) {
    swap_blocks::<8>(r);
    swap_blocks::<4>(r);
    swap_blocks::<2>(r);
    swap_blocks::<1>(r);
}

/// SHA-1 round `T` with round function `F` (a VPTERNLOGD truth table) and constant `k`
/// (broadcast). `w` holds the last 16 message words (W[t] at `t % 16`); a word past the
/// block's 16 is scheduled in the round that uses it, so the schedule's operations fill the
/// gaps in the rounds' dependency chain. `T` is a constant and [`rounds1!`] writes the 80
/// calls out, so every index is one and the words stay in registers (computed all ahead
/// into an array on the stack, the schedule was a third of the compression's time, its
/// chain running through store-to-load forwarding; as a loop over `t`, the words were
/// indexed in memory).
// SAFETY: AVX-512F; reached only from `compress1`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn round1<const F: i32, const T: usize>(v: &mut [__m512i; 5], w: &mut [__m512i; 16], k: __m512i) {
    if T >= 16 {
        // W[t] = ROTL1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])
        let x =
            _mm512_ternarylogic_epi32::<0x96>(w[(T + 13) % 16], w[(T + 8) % 16], w[(T + 2) % 16]);
        w[T % 16] = _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w[T % 16]));
    }
    let [a, b, c, d, e] = *v;
    // T = ROTL5(a) + f(b, c, d) + e + K + W[t]
    let f = _mm512_ternarylogic_epi32::<F>(b, c, d);
    let t = _mm512_add_epi32(
        _mm512_add_epi32(_mm512_rol_epi32::<5>(a), f),
        _mm512_add_epi32(e, _mm512_add_epi32(w[T % 16], k)),
    );
    *v = [t, a, _mm512_rol_epi32::<30>(b), c, d];
}

/// Twenty SHA-1 rounds, written out: `rounds1!(v, w, F, k, T0 … T0 + 19)`.
macro_rules! rounds1 {
    ($v:expr, $w:expr, $f:literal, $k:expr, $($t:literal)*) => {{
        let k = _mm512_set1_epi32($k as i32);
        $( round1::<$f, $t>($v, $w, k); )*
    }};
}

/// One SHA-1 compression (FIPS 180-4 §6.1.2) of every lane, `w[..16]` holding the block's
/// words; the lanes in `busy` take the result, the others keep their state.
// SAFETY: AVX-512F; reached only from `hmac`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn compress1(st: &mut [__m512i; 8], w: &mut [__m512i; 80], busy: __mmask16) {
    let mut w16 = [_mm512_setzero_si512(); 16];
    w16.copy_from_slice(&w[..16]);
    let (v, w) = (&mut [st[0], st[1], st[2], st[3], st[4]], &mut w16);
    // Ch: b ? c : d
    rounds1!(v, w, 0xca, K[0], 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
    // Parity
    rounds1!(v, w, 0x96, K[1], 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
    // Maj
    rounds1!(v, w, 0xe8, K[2], 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
    // Parity
    rounds1!(v, w, 0x96, K[3], 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79);
    for (s, v) in st.iter_mut().zip(*v) {
        *s = _mm512_mask_add_epi32(*s, busy, *s, v);
    }
}

/// One SHA-256 compression (FIPS 180-4 §6.2.2) of every lane, as [`compress1`]: the 64
/// rounds written out, each scheduling its message word.
// SAFETY: AVX-512F; reached only from `hmac`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn compress256(st: &mut [__m512i; 8], w: &mut [__m512i; 80], busy: __mmask16) {
    let mut w16 = [_mm512_setzero_si512(); 16];
    w16.copy_from_slice(&w[..16]);
    let mut v8 = *st;
    let (v, w) = (&mut v8, &mut w16);
    macro_rules! rounds {
        ($($t:literal)*) => { $( round256::<$t>(v, w); )* };
    }
    rounds!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    rounds!(32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
    for (s, v) in st.iter_mut().zip(*v) {
        *s = _mm512_mask_add_epi32(*s, busy, *s, v);
    }
}

/// SHA-256 round `T`, scheduling W[T] first when `T` ≥ 16 (`w` as in [`round1`]).
// SAFETY: AVX-512F; reached only from `compress256`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn round256<const T: usize>(v: &mut [__m512i; 8], w: &mut [__m512i; 16]) {
    if T >= 16 {
        // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16]
        let (x, y) = (w[(T + 1) % 16], w[(T + 14) % 16]);
        let s0 = _mm512_ternarylogic_epi32::<0x96>(
            _mm512_ror_epi32::<7>(x),
            _mm512_ror_epi32::<18>(x),
            _mm512_srli_epi32::<3>(x),
        );
        let s1 = _mm512_ternarylogic_epi32::<0x96>(
            _mm512_ror_epi32::<17>(y),
            _mm512_ror_epi32::<19>(y),
            _mm512_srli_epi32::<10>(y),
        );
        w[T % 16] = _mm512_add_epi32(
            _mm512_add_epi32(s1, w[(T + 9) % 16]),
            _mm512_add_epi32(s0, w[T % 16]),
        );
    }
    let [a, b, c, d, e, f, g, h] = *v;
    // T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t]; T2 = Σ0(a) + Maj(a, b, c)
    let s1 = _mm512_ternarylogic_epi32::<0x96>(
        _mm512_ror_epi32::<6>(e),
        _mm512_ror_epi32::<11>(e),
        _mm512_ror_epi32::<25>(e),
    );
    let ch = _mm512_ternarylogic_epi32::<0xca>(e, f, g);
    let k = _mm512_set1_epi32(K256.as_flattened()[T] as i32);
    let t1 = _mm512_add_epi32(
        _mm512_add_epi32(h, s1),
        _mm512_add_epi32(ch, _mm512_add_epi32(w[T % 16], k)),
    );
    let s0 = _mm512_ternarylogic_epi32::<0x96>(
        _mm512_ror_epi32::<2>(a),
        _mm512_ror_epi32::<13>(a),
        _mm512_ror_epi32::<22>(a),
    );
    let maj = _mm512_ternarylogic_epi32::<0xe8>(a, b, c);
    let t2 = _mm512_add_epi32(s0, maj);
    *v = [
        _mm512_add_epi32(t1, t2),
        a,
        b,
        c,
        _mm512_add_epi32(d, t1),
        e,
        f,
        g,
    ];
}

/// The HMAC of `msgs.len()` (≤ 16) lanes, their inner passes' blocks after the ipad block.
// SAFETY: AVX-512F and AVX-512BW throughout; entered only from `mac16` after `available()`.
#[target_feature(enable = "avx512f,avx512bw")]
fn hmac<K: LaneKey>(keys: &[&K], msgs: &[Padded<'_>], out: &mut [[u8; 32]]) {
    let n = keys.len().min(msgs.len()).min(out.len()).min(LANES);
    let zero = _mm512_setzero_si512();
    // Each key's words as a row (inner A.., outer A..), the rows transposed: register w < 8
    // is inner word w of every lane, 8 + w outer word w. (Built lane by lane into arrays, the
    // compiler made gathers of it.)
    let word_at = dwords(K::WORD_AT);
    let mut rows = [zero; LANES];
    for (r, k) in rows.iter_mut().zip(&keys[..n]) {
        let [a, b, c, d] = k.regs();
        *r = _mm512_permutexvar_epi32(word_at, quad([load(a), load(b), load(c), load(d)]));
    }
    transpose(&mut rows);
    let mut st = [zero; 8];
    st.copy_from_slice(&rows[..8]);
    let mut blocks = [0usize; LANES];
    for (b, m) in blocks.iter_mut().zip(&msgs[..n]) {
        *b = m.blocks();
    }
    let steps = blocks.iter().copied().max().unwrap_or(0);
    // each dword's bytes reversed: the message words are big-endian
    let bswap = dwords(core::array::from_fn(|j| {
        let b = (j % 4 * 4) as u8;
        u32::from_le_bytes([b + 3, b + 2, b + 1, b])
    }));
    let mut w = [zero; 80];
    let compress = |st: &mut [__m512i; 8], w: &mut [__m512i; 80], busy| {
        if K::SHA256 {
            compress256(st, w, busy);
        } else {
            compress1(st, w, busy);
        }
    };
    for j in 0..steps {
        let mut r = [zero; LANES];
        let mut busy: __mmask16 = 0;
        for (i, m) in msgs[..n].iter().enumerate() {
            if j < blocks[i] {
                r[i] = _mm512_shuffle_epi8(load512(m.block(j)), bswap);
                busy |= 1 << i;
            }
        }
        transpose(&mut r);
        w[..LANES].copy_from_slice(&r);
        compress(&mut st, &mut w, busy);
    }
    // Outer hash: one block, the inner digest (the words A...) then 0x80 and the length,
    // (64 + digest) * 8 bits.
    let words = K::WORDS;
    w[..words].copy_from_slice(&st[..words]);
    w[words] = _mm512_set1_epi32(0x8000_0000_u32 as i32);
    w[words + 1..15].fill(zero);
    w[15] = _mm512_set1_epi32(((BLOCK + 4 * words) * 8) as i32);
    st.copy_from_slice(&rows[8..]);
    compress(&mut st, &mut w, 0xffff);
    let mut digest = [[0u32; LANES]; 8];
    for (d, s) in digest.iter_mut().zip(st).take(words) {
        *d = lanes(s);
    }
    for (i, o) in out[..n].iter_mut().enumerate() {
        for (k, word) in digest.iter().enumerate().take(words) {
            o[4 * k..4 * k + 4].copy_from_slice(&word[i].to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::prelude::*;

    /// RustCrypto's HMAC (`M`: `Hmac<sha1::Sha1>` or `Hmac<sha2::Sha256>`) of `data` ‖ `esn_hi`.
    fn reference<M: Mac + KeyInit>(key: &[u8], data: &[u8], esn_hi: Option<u32>) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data);
        if let Some(hi) = esn_hi {
            m.update(&hi.to_be_bytes());
        }
        m.finalize().into_bytes().to_vec()
    }

    /// On a CPU without AVX-512F/BW, `mac16` refuses and writes nothing (the callers then use
    /// SHA-NI or RustCrypto); without SHA-NI no key exists to call it with.
    fn refuses_without_avx512() {
        if let Some(k) = HmacSha1Key::new(&[7; 20]) {
            let mut out = [[0u8; 32]; 2];
            assert!(!mac16(
                &[&k, &k],
                &[b"a".as_slice(), b"b"],
                &[None, None],
                &mut out
            ));
            assert_eq!(out, [[0u8; 32]; 2]);
        }
    }

    /// The cases of RFC 4231 §4 (keys up to 131 bytes, data up to 152), all in one call,
    /// twice over (14 lanes).
    #[test]
    fn rfc4231_sha256_all_lanes_at_once() {
        if !available() || !super::super::shani::available() {
            // the kernel is unusable here, and must refuse rather than misbehave
            refuses_without_avx512();
            return;
        }
        let v = super::super::shani::tests::vectors(
            include_str!("../../tests/vectors/rfc4231_hmac.txt"),
            "sha256",
        );
        assert_eq!(v.len(), 7);
        let cases: Vec<_> = v.iter().chain(v.iter().rev()).collect();
        let keys: Vec<HmacSha256Key> = cases
            .iter()
            .map(|c| HmacSha256Key::new(&c.0).expect("SHA-NI"))
            .collect();
        let refs: Vec<&HmacSha256Key> = keys.iter().collect();
        let data: Vec<&[u8]> = cases.iter().map(|c| &c.1[..]).collect();
        let mut out = vec![[0u8; 32]; cases.len()];
        assert!(mac16(&refs, &data, &vec![None; cases.len()], &mut out));
        for (i, (c, o)) in cases.iter().zip(&out).enumerate() {
            assert_eq!(&o[..c.2.len()], &c.2[..], "lane {i}");
        }
    }

    /// The cases of RFC 2202 §3 (keys up to 80 bytes, data up to 73), all in one call.
    #[test]
    fn rfc2202_all_lanes_at_once() {
        if !available() || !super::super::shani::available() {
            // the kernel is unusable here, and must refuse rather than misbehave
            refuses_without_avx512();
            return;
        }
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
                    .to_vec(),
                "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
            ),
        ];
        let keys: Vec<HmacSha1Key> = cases
            .iter()
            .map(|c| HmacSha1Key::new(&c.0).expect("SHA-NI"))
            .collect();
        let refs: Vec<&HmacSha1Key> = keys.iter().collect();
        let data: Vec<&[u8]> = cases.iter().map(|c| &c.1[..]).collect();
        let mut out = vec![[0u8; 32]; cases.len()];
        assert!(mac16(&refs, &data, &[None; 7], &mut out));
        for (c, o) in cases.iter().zip(&out) {
            let hex: String = o[..20].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, c.2);
        }
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let Some(k) = HmacSha1Key::new(&[7; 20]) else {
            return;
        };
        let mut out = vec![[0u8; 32]; 17];
        // more than 16 lanes, or slices that disagree: nothing done
        assert!(!mac16(&[&k; 17], &[&[][..]; 17], &[None; 17], &mut out));
        assert!(!mac16(&[&k; 2], &[&[][..]; 3], &[None; 2], &mut out[..2]));
        assert_eq!(out, vec![[0u8; 32]; 17]);
        // none is fine
        assert_eq!(mac16::<HmacSha1Key>(&[], &[], &[], &mut []), available());
    }

    #[test]
    fn blocks_counts_what_the_padding_makes() {
        for len in 0..300 {
            for esn in [false, true] {
                let data = vec![0; len];
                let p = Padded::new(&data, esn.then_some(1), BLOCK);
                assert_eq!(blocks(len, esn), p.blocks() + 1, "{len} esn {esn}");
            }
        }
    }

    #[test]
    fn plan_leaves_out_what_does_not_pay() {
        // uniform groups: from 7 lanes of large packets, from 11 of 64-byte ones
        assert_eq!(plan::<HmacSha1Key>(&[25; 6]), 0);
        assert_eq!(plan::<HmacSha1Key>(&[25; 7]), 7);
        assert_eq!(plan::<HmacSha1Key>(&[3; 10]), 0);
        assert_eq!(plan::<HmacSha1Key>(&[3; 16]), 16);
        // IMIX-like: nine short, five middle, two long; the long ones go to SHA-NI
        let mut imix = [3; 16];
        imix[9..14].fill(11);
        imix[14..].fill(25);
        assert_eq!(plan::<HmacSha1Key>(&imix), 14);
        assert_eq!(plan::<HmacSha1Key>(&[]), 0);
        // SHA-256's steps cost more: 12 lanes of large packets, not 8
        assert_eq!(plan::<HmacSha256Key>(&[25; 8]), 0);
        assert_eq!(plan::<HmacSha256Key>(&[25; 12]), 12);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any number of lanes (1-16), each with its own key (any length, longer than a block
        /// too), length (0-1,600 bytes: lanes run out at different steps and the padding
        /// takes one block or two) and ESN: every lane equals RustCrypto's HMAC-SHA1.
        #[test]
        fn matches_rustcrypto_in_every_lane(
            lanes in proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..100),
                    proptest::collection::vec(any::<u8>(), 0..1600),
                    proptest::option::of(any::<u32>()),
                ),
                1..=16,
            ),
        ) {
            if !available() || !super::super::shani::available() {
                refuses_without_avx512();
                return Ok(());
            }
            let keys: Vec<HmacSha1Key> =
                lanes.iter().map(|l| HmacSha1Key::new(&l.0).expect("SHA-NI")).collect();
            let refs: Vec<&HmacSha1Key> = keys.iter().collect();
            let data: Vec<&[u8]> = lanes.iter().map(|l| &l.1[..]).collect();
            let esn: Vec<Option<u32>> = lanes.iter().map(|l| l.2).collect();
            let mut out = vec![[0u8; 32]; lanes.len()];
            prop_assert!(mac16(&refs, &data, &esn, &mut out));
            for (i, (l, o)) in lanes.iter().zip(&out).enumerate() {
                prop_assert_eq!(&o[..20], &reference::<Hmac<sha1::Sha1>>(&l.0, &l.1, l.2)[..], "lane {}", i);
                prop_assert_eq!(&o[20..], &[0u8; 12][..], "lane {} past the digest", i);
            }
            // and HMAC-SHA-256 with the same lanes
            let keys: Vec<HmacSha256Key> =
                lanes.iter().map(|l| HmacSha256Key::new(&l.0).expect("SHA-NI")).collect();
            let refs: Vec<&HmacSha256Key> = keys.iter().collect();
            prop_assert!(mac16(&refs, &data, &esn, &mut out));
            for (i, (l, o)) in lanes.iter().zip(&out).enumerate() {
                prop_assert_eq!(&o[..], &reference::<Hmac<sha2::Sha256>>(&l.0, &l.1, l.2)[..], "lane {}", i);
            }
        }
    }
}
