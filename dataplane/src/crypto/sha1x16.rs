//! AVX-512 kernel for HMAC-SHA1 (RFC 2104, RFC 2404) of up to 16 packets at once: one
//! 512-bit register holds the same SHA-1 word (FIPS 180-4 §6.1.2) of 16 independent
//! messages, so every instruction advances 16 packets' hashes by one step.
//!
//! Why: on the AVX-512 Intel Xeon of BENCHMARKS section 0, SHA1RNDS4 is throughput-bound at
//! about 84 TSC cycles per 64-byte block whatever the number of interleaved lanes
//! (`HmacSha1Key::mac4` is no faster per packet than `mac` there), while DPDK's
//! intel-ipsec-mb signs a burst with 16-lane AVX-512 SHA-1. This kernel does the same: the
//! rounds are plain 32-bit adds, rotates (VPROLD) and three-input logic (VPTERNLOGD) on 16
//! lanes, about 26 cycles per lane-block when all 16 lanes are busy. Fewer busy lanes cost
//! the same time per step, so [`mac16`]'s callers use it for groups of [`MIN_LANES`] or more
//! and the SHA-NI kernels below that.
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

use super::shani::{BLOCK, HmacSha1Key, Padded};
use super::simd::{load512, store512};
use core::arch::x86_64::{
    __m512i, __mmask16, _mm512_add_epi32, _mm512_mask_add_epi32, _mm512_permutex2var_epi32,
    _mm512_rol_epi32, _mm512_set1_epi32, _mm512_setr_epi32, _mm512_setzero_si512,
    _mm512_shuffle_epi8, _mm512_ternarylogic_epi32, _mm512_xor_si512,
};

/// Packets per call.
pub const LANES: usize = 16;

/// What a call costs, in the time of one SHA-NI block (about 86 TSC cycles): the lanes'
/// set-up and results, about 1,100 cycles.
const CALL_COST: usize = 13;
/// What one block step of all 16 lanes costs, in SHA-NI blocks (about 520 cycles): the same
/// for 1 busy lane as for 16.
const STEP_COST: usize = 6;

/// The smallest group this kernel can be worth: `n` lanes of `b` blocks cost
/// `CALL_COST + STEP_COST * b` here and `n * b` with SHA-NI.
pub const MIN_LANES: usize = STEP_COST + 1;

/// The blocks (the inner pass's after the ipad block, and the outer block) of an HMAC-SHA1
/// of `len` bytes, with the ESN high bits appended or not: the steps a lane takes here, and
/// the SHA-NI blocks it takes there.
pub fn blocks(len: usize, esn: bool) -> usize {
    // the 0x80 byte and the 8-byte length after the data and ESN bits, rounded up; + outer
    (len + 4 * usize::from(esn) + 9).div_ceil(BLOCK) + 1
}

/// How many of the lanes (their [`blocks`] in increasing order) to give this kernel, the
/// rest going to SHA-NI: the shortest `k`, for the `k` with the least estimated time
/// (0: none). A kernel call lasts as long as its longest lane, so with lengths as mixed as
/// IMIX's the long packets are left out. The costs were measured with `cargo bench -p
/// xsec-benches --bench crypto_choice -- hmac-sha1-lanes` on the AVX-512 Intel Xeon of
/// BENCHMARKS section 0: per packet, 16 lanes took 0.35× SHA-NI's time at 1420 bytes and
/// 0.63× at 64; 8 lanes 0.66× and 1.16×; 6 lanes 1.0× and 1.45×.
pub fn plan(sorted_blocks: &[usize]) -> usize {
    let total: usize = sorted_blocks.iter().sum();
    let (mut best, mut best_k, mut prefix) = (total, 0, 0);
    for (i, &b) in sorted_blocks.iter().take(LANES).enumerate() {
        prefix += b;
        let cost = CALL_COST + STEP_COST * b + (total - prefix);
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

/// HMAC-SHA1 of `data[i]` ‖ `esn_hi[i]` (big-endian, when given) with `keys[i]` into
/// `out[i][..20]`, for up to [`LANES`] packets (the keys may differ): the same results as
/// [`HmacSha1Key::mac`] on each. `false`, with nothing written, when the CPU lacks AVX-512F/BW,
/// or the slices' lengths differ or exceed [`LANES`].
pub fn mac16(
    keys: &[&HmacSha1Key],
    data: &[&[u8]],
    esn_hi: &[Option<u32>],
    out: &mut [[u8; 32]],
) -> bool {
    let n = keys.len();
    if n > LANES || data.len() != n || esn_hi.len() != n || out.len() != n || !available() {
        return false;
    }
    let msgs: [Padded<'_>; LANES] = core::array::from_fn(|i| match (data.get(i), esn_hi.get(i)) {
        (Some(d), Some(h)) => Padded::new(d, *h, BLOCK),
        _ => Padded::new(&[], None, BLOCK),
    });
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

/// Twenty rounds with round function `F` (a VPTERNLOGD truth table) and constant `k`.
// SAFETY: AVX-512F; reached only from `compress`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn rounds<const F: i32>(v: &mut [__m512i; 5], w: &[__m512i], k: u32) {
    let k = _mm512_set1_epi32(k as i32);
    let [mut a, mut b, mut c, mut d, mut e] = *v;
    for &w in w {
        // T = ROTL5(a) + f(b, c, d) + e + K + W[t]
        let f = _mm512_ternarylogic_epi32::<F>(b, c, d);
        let t = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_rol_epi32::<5>(a), f),
            _mm512_add_epi32(e, _mm512_add_epi32(w, k)),
        );
        (e, d, c, b, a) = (d, c, _mm512_rol_epi32::<30>(b), a, t);
    }
    *v = [a, b, c, d, e];
}

/// One SHA-1 compression of every lane, `w[..16]` holding the block's words; the lanes in
/// `busy` take the result, the others keep their state.
// SAFETY: AVX-512F; reached only from `hmac`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn compress(st: &mut [__m512i; 5], w: &mut [__m512i; 80], busy: __mmask16) {
    // W[t] = ROTL1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])
    for t in 16..80 {
        let x = _mm512_ternarylogic_epi32::<0x96>(w[t - 3], w[t - 8], w[t - 14]);
        w[t] = _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w[t - 16]));
    }
    let mut v = *st;
    rounds::<0xca>(&mut v, &w[0..20], K[0]); // Ch: b ? c : d
    rounds::<0x96>(&mut v, &w[20..40], K[1]); // Parity
    rounds::<0xe8>(&mut v, &w[40..60], K[2]); // Maj
    rounds::<0x96>(&mut v, &w[60..80], K[3]); // Parity
    for (s, v) in st.iter_mut().zip(v) {
        *s = _mm512_mask_add_epi32(*s, busy, *s, v);
    }
}

/// HMAC-SHA1 of `msgs.len()` (≤ 16) lanes, their inner passes' blocks after the ipad block.
// SAFETY: AVX-512F and AVX-512BW throughout; entered only from `mac16` after `available()`.
#[target_feature(enable = "avx512f,avx512bw")]
fn hmac(keys: &[&HmacSha1Key], msgs: &[Padded<'_>], out: &mut [[u8; 32]]) {
    let n = keys.len().min(msgs.len()).min(out.len()).min(LANES);
    let mut inner = [[0u32; LANES]; 5];
    let mut outer = [[0u32; LANES]; 5];
    for (i, k) in keys[..n].iter().enumerate() {
        let [ki, ko] = k.state_words();
        for w in 0..5 {
            (inner[w][i], outer[w][i]) = (ki[w], ko[w]);
        }
    }
    let zero = _mm512_setzero_si512();
    let mut st = [zero; 5];
    for (s, w) in st.iter_mut().zip(inner) {
        *s = dwords(w);
    }
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
    for j in 0..steps {
        let mut r = [zero; LANES];
        let mut busy: __mmask16 = 0;
        for (i, m) in msgs[..n].iter().enumerate() {
            if j < blocks[i] {
                r[i] = _mm512_shuffle_epi8(load512(m.block(j)), bswap);
                busy |= 1 << i;
            }
        }
        swap_blocks::<8>(&mut r);
        swap_blocks::<4>(&mut r);
        swap_blocks::<2>(&mut r);
        swap_blocks::<1>(&mut r);
        w[..LANES].copy_from_slice(&r);
        compress(&mut st, &mut w, busy);
    }
    // Outer hash: one block, the 20-byte inner digest (the words A..E) then 0x80 and the
    // length, (64 + 20) * 8 bits.
    w[..5].copy_from_slice(&st);
    w[5] = _mm512_set1_epi32(0x8000_0000_u32 as i32);
    w[6..15].fill(zero);
    w[15] = _mm512_set1_epi32((BLOCK as i32 + 20) * 8);
    for (s, w) in st.iter_mut().zip(outer) {
        *s = dwords(w);
    }
    compress(&mut st, &mut w, 0xffff);
    let mut words = [[0u32; LANES]; 5];
    for (w, s) in words.iter_mut().zip(st) {
        *w = lanes(s);
    }
    for (i, o) in out[..n].iter_mut().enumerate() {
        for (k, word) in words.iter().enumerate() {
            o[4 * k..4 * k + 4].copy_from_slice(&word[i].to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::prelude::*;

    fn reference(key: &[u8], data: &[u8], esn_hi: Option<u32>) -> [u8; 20] {
        let mut m = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data);
        if let Some(hi) = esn_hi {
            m.update(&hi.to_be_bytes());
        }
        m.finalize().into_bytes().into()
    }

    /// The cases of RFC 2202 §3 (keys up to 80 bytes, data up to 73), all in one call.
    #[test]
    fn rfc2202_all_lanes_at_once() {
        if !available() || !super::super::shani::available() {
            eprintln!("no AVX-512F/BW or SHA-NI: the 16-lane kernel is not used here");
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
        assert_eq!(mac16(&[], &[], &[], &mut []), available());
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
        assert_eq!(plan(&[25; 6]), 0);
        assert_eq!(plan(&[25; 7]), 7);
        assert_eq!(plan(&[3; 10]), 0);
        assert_eq!(plan(&[3; 16]), 16);
        // IMIX-like: nine short, five middle, two long; the long ones go to SHA-NI
        let mut imix = [3; 16];
        imix[9..14].fill(11);
        imix[14..].fill(25);
        assert_eq!(plan(&imix), 14);
        assert_eq!(plan(&[]), 0);
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
                // rfc2202_all_lanes_at_once says so once
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
                prop_assert_eq!(&o[..20], &reference(&l.0, &l.1, l.2)[..], "lane {}", i);
                prop_assert_eq!(&o[20..], &[0u8; 12][..], "lane {} past the digest", i);
            }
        }
    }
}
