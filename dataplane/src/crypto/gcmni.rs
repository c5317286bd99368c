//! AES-GCM (128- and 256-bit keys) on AES-NI and PCLMULQDQ, in place of ring for every
//! AES-128/256-GCM SA where the CPU has them.
//!
//! ring's AES-GCM costs ~200 TSC cycles for a 64-byte packet, most of it fixed per-call work
//! (key and table set-up, argument checks, the tail of the GHASH pipeline). Here the round
//! keys and powers of H are in the [`GcmKey`] (built once per SA), and every packet goes
//! through one straight-line kernel (ESP's 12-byte nonce only, RFC 4106 §4). [`seal_many`] /
//! [`open_many`] take several packets under one key per call; the engine calls them with one
//! packet at a time, which measured faster than laying a burst out first and sealing it
//! together (the second pass over the packets cost more than the per-call set-up it saves).
//!
//! * CTR: the data counter blocks (inc32 of J0 = nonce ‖ 1, NIST SP 800-38D §7.1) are
//!   encrypted [`STEP`] (8) at a time, E(J0) for the tag riding along with the first step, so
//!   the AES unit has 8-9 independent blocks in flight instead of one chain.
//! * GHASH: aggregated reduction (Intel's "Carry-Less Multiplication and Its Usage for
//!   Computing the GCM Mode", §"aggregated reduction"): a step's blocks are multiplied by
//!   H^n … H^1, the products summed unreduced and reduced once. Products are schoolbook
//!   (four PCLMULQDQ each): Karatsuba's three need a per-power operand in the key and a
//!   shuffle per block, and shuffles share the one port with the multiplies. The AAD
//!   block(s) ride in the first step and the length block in the last, so a packet of up to
//!   128 bytes with ESP's 8- or 12-byte AAD costs one reduction in all.
//! * The arithmetic is done in the POLYVAL domain of RFC 8452 Appendix A: byte-reversed
//!   blocks, key mulX_POLYVAL(ByteReverse(H)), where a product is reduced with two
//!   PCLMULQDQ by 0xc2000000_00000000 (a Montgomery reduction; no bit shifts).
//! * Three compilations ([`Width`]; [`GcmKey::new`] picks the widest the CPU has):
//!   `narrow` (AES-NI, PCLMULQDQ, 128-bit registers); `wide`, where a whole step's 8
//!   blocks go through VAES and VPCLMULQDQ on 256-bit registers; and `zmm`
//!   (`crypt_zmm`), 512-bit registers with AVX-512F/BW.
//! * `wide` runs the whole 256-byte stretches of a packet through `big_steps_wide`: 16
//!   counter blocks per step in 8 independent 256-bit AES chains, with the GHASH products of
//!   the previous step's ciphertext issued between the AES rounds (software pipelining).
//!   Written as plain step-after-step code, the out-of-order core did not overlap one step's
//!   GHASH with the next step's AES (the waiting AES chains fill the vector scheduler), and
//!   each 8-block step cost AES latency plus GHASH latency (on an EPYC, 1420 B took 826
//!   cycles before the pipelined step and 570 after).
//! * `zmm` does the same in 4 chains of four blocks, and the rest of the packet (< 256
//!   bytes) in one more pass with byte-masked loads and stores, its AES overlapping the
//!   last step's GHASH. `cargo bench -p xsec-benches --bench gcm`, Intel Xeon (Sapphire
//!   Rapids family), AES-128 seal at bursts of 32, against the 256-bit kernel in the same
//!   run: 64 B 0.67×, 512 B 0.69×, 1420 B 0.69× its cycles.
//! * Opening hashes the ciphertext while it decrypts it, in the same pass; a packet whose
//!   tag does not verify is re-encrypted with the same key stream before returning, so a
//!   rejected packet's bytes are left exactly as received and no plaintext is released.
//!
//! Constant time: AES-NI, PCLMULQDQ and SSE/AVX logic only — no tables, no branches or
//! memory indices that depend on the key, the data or the tags; the tag comparison ORs the
//! differences together. Lengths and the accept/reject outcome are public.
//!
//! `unsafe` here is limited to the `core::arch` loads and stores and to entering the
//! kernels: every function using the intrinsics is `#[target_feature(enable =
//! "aes,pclmulqdq,avx")]` and is reached only through a [`GcmKey`], which exists only after
//! runtime detection said the CPU has all three features.
#![allow(unsafe_code)]

use super::simd::{load, load_piece, load256, load512, piece_mask, store, store256, store512};
use core::arch::x86_64::{
    __m128i, __m256i, __m512i, _mm_add_epi32, _mm_aesenc_si128, _mm_aesenclast_si128,
    _mm_and_si128, _mm_clmulepi64_si128, _mm_cmpgt_epi8, _mm_set_epi8, _mm_set_epi32,
    _mm_set_epi64x, _mm_set1_epi8, _mm_setzero_si128, _mm_shuffle_epi8, _mm_shuffle_epi32,
    _mm_slli_si128, _mm_srli_si128, _mm_testz_si128, _mm_xor_si128, _mm256_add_epi32,
    _mm256_aesenc_epi128, _mm256_aesenclast_epi128, _mm256_broadcastsi128_si256,
    _mm256_castsi256_si128, _mm256_clmulepi64_epi128, _mm256_extracti128_si256, _mm256_set_epi32,
    _mm256_set_m128i, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_xor_si256,
    _mm512_add_epi32, _mm512_aesenc_epi128, _mm512_aesenclast_epi128, _mm512_broadcast_i32x4,
    _mm512_castsi512_si256, _mm512_clmulepi64_epi128, _mm512_extracti64x4_epi64,
    _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8, _mm512_maskz_loadu_epi64,
    _mm512_maskz_mov_epi8, _mm512_set_epi32, _mm512_setzero_si512, _mm512_shuffle_epi8,
    _mm512_ternarylogic_epi32, _mm512_xor_si512, _mm512_zextsi128_si512,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

const BLOCK: usize = 16;
/// Data blocks per CTR/GHASH step.
pub const STEP: usize = 8;
/// AAD blocks that ride in the first step; a longer AAD is hashed on its own first.
const MAX_PREFIX: usize = 2;
/// Data blocks per step of the wide kernel's pipelined loop ([`big_steps_wide`]).
const BIG_STEP: usize = 16;
/// Powers of H kept: the largest GHASH group is the AAD prefix, a step and the length block
/// (11), or a big step (16).
const POWERS: usize = BIG_STEP;
const _: () = assert!(MAX_PREFIX + STEP < POWERS);

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("avx")
}

/// Whether this CPU can also run the 256-bit VAES/VPCLMULQDQ variant (chosen by
/// [`GcmKey::new`] when it can).
pub fn available_wide() -> bool {
    available()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
}

/// Which compilation of the kernels a [`GcmKey`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Width {
    /// AES-NI and PCLMULQDQ on 128-bit registers.
    Narrow,
    /// Whole steps on VAES and VPCLMULQDQ, 256-bit registers.
    Ymm,
    /// Big steps on VAES and VPCLMULQDQ, 512-bit registers (AVX-512F/BW).
    Zmm,
}

/// Whether this CPU can also run the 512-bit variant (AVX-512F/BW on top of
/// [`available_wide`]).
pub fn available_zmm() -> bool {
    available_wide()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
}

/// An AES-128 or AES-256 key expanded for GCM: the encryption round keys and H^1 … H^16 in
/// the POLYVAL domain, at most 512 bytes (768 with Karatsuba operands). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GcmKey {
    rk: [[u8; 16]; 15],
    /// H^16 … H^1, highest first (as the multipliers of POLYVAL `dot`s, see `init_powers`):
    /// a step's block `i` of 16 takes the power at `i`, so whole registers of powers load
    /// in one piece. Products are schoolbook (four carry-less multiplies, no Karatsuba
    /// operand to keep per power).
    h: [u8; BLOCK * POWERS],
    rounds: u8,
    #[zeroize(skip)]
    width: Width,
}

const _: () = assert!(core::mem::size_of::<GcmKey>() <= 512);

impl core::fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "GcmKey(AES-{}-GCM, <secret>)",
            (usize::from(self.rounds) - 6) * 32
        )
    }
}

impl GcmKey {
    /// The same key on the 128-bit AES-NI/PCLMULQDQ kernels even where VAES is present
    /// (for benchmarks and tests that compare the variants).
    pub fn narrow(self) -> GcmKey {
        self.at_most(Width::Narrow)
    }

    /// The same key on at most the kernels of `w` (a CPU's own limit still holds).
    pub fn at_most(mut self, w: Width) -> GcmKey {
        self.width = self.width.min(w);
        self
    }

    /// The kernels this key runs.
    pub fn width(&self) -> Width {
        self.width
    }

    /// Expand `key` (16 or 32 bytes, without the ESP salt). `None` for another length or a
    /// CPU without AES-NI, PCLMULQDQ and AVX.
    pub fn new(key: &[u8]) -> Option<GcmKey> {
        if !matches!(key.len(), 16 | 32) || !available() {
            return None;
        }
        let width = if available_zmm() {
            Width::Zmm
        } else if available_wide() {
            Width::Ymm
        } else {
            Width::Narrow
        };
        let mut k = GcmKey {
            rk: [[0; 16]; 15],
            h: [0; BLOCK * POWERS],
            rounds: (key.len() / 4 + 6) as u8,
            width,
        };
        // the AES-NI key schedule of `aesni` (no S-box table); only its encryption keys
        let sched = super::aesni::AesNiKey::new(key)?;
        for (dst, src) in k.rk.iter_mut().zip(sched.enc_round_keys()) {
            *dst = *src;
        }
        // SAFETY: `available()` confirmed AES-NI, PCLMULQDQ and AVX, the features
        // `init_powers` enables.
        unsafe { init_powers(&mut k) };
        Some(k)
    }

    /// H^n (1 ≤ n ≤ [`POWERS`]).
    #[inline(always)]
    fn pow(&self, n: usize) -> &[u8; 16] {
        &self.h.as_chunks::<BLOCK>().0[POWERS - n]
    }

    /// (H^(16-2j), H^(15-2j)): the powers of a 16-block step's blocks 2j and 2j+1.
    #[inline(always)]
    fn pow_pair(&self, j: usize) -> &[u8; 32] {
        &self.h.as_chunks::<32>().0[j]
    }

    /// (H^(16-4j) … H^(13-4j)): the powers of a 16-block step's blocks 4j … 4j+3.
    #[inline(always)]
    fn pow_quad(&self, j: usize) -> &[u8; 64] {
        &self.h.as_chunks::<64>().0[j]
    }
}

/// One packet for [`seal_many`] / [`open_many`]: ESP's nonce (salt ‖ IV, RFC 4106 §4), the
/// AAD (SPI ‖ seq or SPI ‖ seq_hi ‖ seq_lo, RFC 4106 §5), the payload, encrypted or
/// decrypted in place, and the 16-byte ICV (written by seal, checked by open).
pub struct GcmJob<'a> {
    pub nonce: [u8; 12],
    pub aad: &'a [u8],
    pub data: &'a mut [u8],
    pub tag: [u8; 16],
}

impl core::fmt::Debug for GcmJob<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GcmJob")
            .field("aad_len", &self.aad.len())
            .field("data_len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Encrypt every job's data in place and write its tag. Any lengths (GCM's limit of 2^32
/// blocks per nonce is far above an ESP packet); jobs are independent.
pub fn seal_many(key: &GcmKey, jobs: &mut [GcmJob<'_>]) {
    // SAFETY: a `GcmKey` exists only if AES-NI, PCLMULQDQ and AVX were detected; its width
    // is `Ymm` only if AVX2, VAES and VPCLMULQDQ were too, `Zmm` only if also AVX-512F/BW.
    unsafe {
        match (key.width, key.rounds) {
            (Width::Zmm, 10) => zmm::seal_jobs::<10>(key, jobs),
            (Width::Zmm, _) => zmm::seal_jobs::<14>(key, jobs),
            (Width::Ymm, 10) => wide::seal_jobs::<10>(key, jobs),
            (Width::Ymm, _) => wide::seal_jobs::<14>(key, jobs),
            (Width::Narrow, 10) => narrow::seal_jobs::<10>(key, jobs),
            (Width::Narrow, _) => narrow::seal_jobs::<14>(key, jobs),
        }
    }
}

/// One packet: encrypt `data` in place and write its tag to `tag` (straight from the
/// register: no job record to copy the tag out of).
pub fn seal_one(key: &GcmKey, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &mut [u8; 16]) {
    // SAFETY: as in `seal_many`.
    unsafe {
        match (key.width, key.rounds) {
            (Width::Zmm, 10) => zmm::seal_one::<10>(key, nonce, aad, data, tag),
            (Width::Zmm, _) => zmm::seal_one::<14>(key, nonce, aad, data, tag),
            (Width::Ymm, 10) => wide::seal_one::<10>(key, nonce, aad, data, tag),
            (Width::Ymm, _) => wide::seal_one::<14>(key, nonce, aad, data, tag),
            (Width::Narrow, 10) => narrow::seal_one::<10>(key, nonce, aad, data, tag),
            (Width::Narrow, _) => narrow::seal_one::<14>(key, nonce, aad, data, tag),
        }
    }
}

/// One packet: verify `tag` (constant time) and decrypt `data` in place if it is good;
/// if not, `data` stays as received and the result is false.
pub fn open_one(
    key: &GcmKey,
    nonce: &[u8; 12],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8; 16],
) -> bool {
    // SAFETY: as in `seal_many`.
    unsafe {
        match (key.width, key.rounds) {
            (Width::Zmm, 10) => zmm::open_one::<10>(key, nonce, aad, data, tag),
            (Width::Zmm, _) => zmm::open_one::<14>(key, nonce, aad, data, tag),
            (Width::Ymm, 10) => wide::open_one::<10>(key, nonce, aad, data, tag),
            (Width::Ymm, _) => wide::open_one::<14>(key, nonce, aad, data, tag),
            (Width::Narrow, 10) => narrow::open_one::<10>(key, nonce, aad, data, tag),
            (Width::Narrow, _) => narrow::open_one::<14>(key, nonce, aad, data, tag),
        }
    }
}

/// Verify every job's `tag` (constant time) and decrypt, in place, the jobs whose tag is
/// good: `ok[i]` says whether job `i` verified and was decrypted. A job that fails keeps
/// its data exactly as received. Jobs beyond `ok.len()` are left untouched (and count as
/// failed). Returns the number of good jobs.
pub fn open_many(key: &GcmKey, jobs: &mut [GcmJob<'_>], ok: &mut [bool]) -> usize {
    // SAFETY: a `GcmKey` exists only if AES-NI, PCLMULQDQ and AVX were detected; its width
    // is `Ymm` only if AVX2, VAES and VPCLMULQDQ were too, `Zmm` only if also AVX-512F/BW.
    unsafe {
        match (key.width, key.rounds) {
            (Width::Zmm, 10) => zmm::open_jobs::<10>(key, jobs, ok),
            (Width::Zmm, _) => zmm::open_jobs::<14>(key, jobs, ok),
            (Width::Ymm, 10) => wide::open_jobs::<10>(key, jobs, ok),
            (Width::Ymm, _) => wide::open_jobs::<14>(key, jobs, ok),
            (Width::Narrow, 10) => narrow::open_jobs::<10>(key, jobs, ok),
            (Width::Narrow, _) => narrow::open_jobs::<14>(key, jobs, ok),
        }
    }
}

/// Load up to 16 bytes, zero-padded (GCM pads the last partial block with zeros).
///
/// Built from (overlapping) scalar loads, not by copying into a zeroed stack block and
/// loading that: the copy's narrow stores followed by a 16-byte load of the same bytes
/// cannot be store-forwarded and stall for the whole store-buffer drain (measured: a third
/// of a 64-byte packet's seal). The length is public (it is the packet's).
#[inline(always)]
fn load_partial(b: &[u8]) -> __m128i {
    let n = b.len().min(BLOCK);
    let b = &b[..n];
    let le64 = |s: &[u8]| s.first_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c));
    let le32 = |s: &[u8]| s.first_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
    let (lo, hi) = if n >= 8 {
        // bytes 8..n: the last four or eight bytes, shifted down past the ones that overlap
        // 0..8 (for 12 bytes, ESP's AAD with ESN, the two loads are the two stores that
        // built it: 8 and 4 bytes)
        let hi = if n > 12 {
            le64(&b[n - 8..]) >> ((16 - n) * 8)
        } else if n > 8 {
            u64::from(le32(&b[n - 4..]) >> ((12 - n) * 8))
        } else {
            0
        };
        (le64(b), hi)
    } else if n >= 4 {
        let top = u64::from(le32(&b[n - 4..])) >> ((8 - n) * 8);
        (u64::from(le32(b)) | top << 32, 0)
    } else {
        let lo = b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
        (lo, 0)
    };
    // SAFETY: SSE2 is part of x86_64.
    unsafe { _mm_set_epi64x(hi as i64, lo as i64) }
}

/// Store the first `out.len()` (≤ 16) bytes of `v`: one 16-byte store to a local block,
/// read back by narrower loads (which store-forwarding serves), then copied out.
#[inline(always)]
fn store_partial(out: &mut [u8], v: __m128i) {
    let mut t = [0u8; 16];
    store(&mut t, v);
    let n = out.len().min(BLOCK);
    out[..n].copy_from_slice(&t[..n]);
    t.zeroize();
}

/// A mask keeping the first `n` (≤ 16) bytes of a block, computed in registers.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn keep_first(n: usize) -> __m128i {
    let idx = _mm_set_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    _mm_cmpgt_epi8(_mm_set1_epi8(n as i8), idx)
}

#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn xor(a: __m128i, b: __m128i) -> __m128i {
    _mm_xor_si128(a, b)
}

/// PSHUFB mask reversing the 16 bytes: GCM's big-endian blocks to POLYVAL's little-endian
/// field elements (RFC 8452 Appendix A) and back.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn bswap_mask() -> __m128i {
    _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

// ---------------------------------------------------------------- key set-up

/// Overwrite an array of vector registers' stack copies (they held round keys).
trait ZeroizeSimd {
    fn zeroize_simd(&mut self);
}

impl<const N: usize> ZeroizeSimd for [__m256i; N] {
    #[inline(always)]
    fn zeroize_simd(&mut self) {
        for v in self.iter_mut() {
            // SAFETY: an all-zero bit pattern is a valid __m256i; no instruction is needed.
            *v = unsafe { core::mem::zeroed() };
        }
        core::hint::black_box(&*self);
    }
}

impl<const N: usize> ZeroizeSimd for [__m512i; N] {
    #[inline(always)]
    fn zeroize_simd(&mut self) {
        for v in self.iter_mut() {
            // SAFETY: an all-zero bit pattern is a valid __m512i; no instruction is needed.
            *v = unsafe { core::mem::zeroed() };
        }
        core::hint::black_box(&*self);
    }
}

impl<const N: usize> ZeroizeSimd for [__m128i; N] {
    #[inline(always)]
    fn zeroize_simd(&mut self) {
        for v in self.iter_mut() {
            // SAFETY: SSE2 is part of x86_64.
            *v = unsafe { _mm_setzero_si128() };
        }
        core::hint::black_box(&*self);
    }
}

/// H = E_K(0¹²⁸) and its powers. RFC 8452 Appendix A: GHASH(H, X…) =
/// ByteReverse(POLYVAL(mulX_POLYVAL(ByteReverse(H)), ByteReverse(X)…)), and POLYVAL's
/// `dot(a, b)` = a·b·x⁻¹²⁸. With h₁ = mulX_POLYVAL(ByteReverse(H)) and hₙ = dot(hₙ₋₁, h₁),
/// `dot(a, hₙ)` is `a` times the n-th power of POLYVAL's effective multiplier.
#[target_feature(enable = "aes,pclmulqdq,avx")]
fn init_powers(k: &mut GcmKey) {
    let mut hb = [0u8; 16];
    store(&mut hb, aes_block(k, _mm_setzero_si128()));
    // ByteReverse then little-endian = big-endian read; mulX_POLYVAL without a branch
    let v = u128::from_be_bytes(hb);
    let carry = 0u128.wrapping_sub(v >> 127);
    let h1 = (v << 1) ^ (carry & 0xc200_0000_0000_0000_0000_0000_0000_0001);
    let h1v = load(&h1.to_le_bytes());
    let mut p = h1v;
    for n in 1..=POWERS {
        if n > 1 {
            let mut acc = Acc::first(p, h1v);
            p = acc.reduce();
            acc.zeroize_simd();
        }
        let (powers, _) = k.h.as_chunks_mut::<BLOCK>();
        store(&mut powers[POWERS - n], p);
    }
    hb.zeroize();
}

/// One block through AES with the key's own round count (set-up only).
#[target_feature(enable = "aes,pclmulqdq,avx")]
fn aes_block(k: &GcmKey, x: __m128i) -> __m128i {
    let mut b = [x];
    if k.rounds == 10 {
        aes::<10, 1>(k, &mut b);
    } else {
        aes::<14, 1>(k, &mut b);
    }
    b[0]
}

// ---------------------------------------------------------------- AES and GHASH

/// N blocks through AES-128 (NR = 10) or AES-256 (NR = 14), round by round so that the N
/// AESENC of a round are independent.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn aes<const NR: usize, const N: usize>(k: &GcmKey, b: &mut [__m128i; N]) {
    let k0 = load(&k.rk[0]);
    for x in b.iter_mut() {
        *x = xor(*x, k0);
    }
    for r in &k.rk[1..NR] {
        let kr = load(r);
        for x in b.iter_mut() {
            *x = _mm_aesenc_si128(*x, kr);
        }
    }
    let kl = load(&k.rk[NR]);
    for x in b.iter_mut() {
        *x = _mm_aesenclast_si128(*x, kl);
    }
}

/// The first `n` (1..=STEP+1) blocks of `b` through AES, unrolled for each count.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn aes_first<const NR: usize>(k: &GcmKey, b: &mut [__m128i; STEP + 1], n: usize) {
    macro_rules! arms {
        ($($n:literal)*) => {
            match n {
                $($n => {
                    if let Some(a) = b.first_chunk_mut::<$n>() {
                        aes::<NR, $n>(k, a);
                    }
                })*
                _ => {}
            }
        };
    }
    arms!(1 2 3 4 5 6 7 8 9);
}

/// Unreduced sums of a GHASH group's products: the low, middle and high 128-bit parts
/// (schoolbook: the middle is the sum of both cross products).
#[derive(Clone, Copy)]
struct Acc {
    lo: __m128i,
    mid: __m128i,
    hi: __m128i,
}

impl ZeroizeSimd for Acc {
    #[inline(always)]
    fn zeroize_simd(&mut self) {
        let mut a = [self.lo, self.mid, self.hi];
        a.zeroize_simd();
        [self.lo, self.mid, self.hi] = a;
    }
}

impl Acc {
    /// x·h (unreduced).
    #[target_feature(enable = "aes,pclmulqdq,avx")]
    #[inline]
    fn first(x: __m128i, h: __m128i) -> Acc {
        Acc {
            lo: _mm_clmulepi64_si128::<0x00>(x, h),
            hi: _mm_clmulepi64_si128::<0x11>(x, h),
            mid: xor(
                _mm_clmulepi64_si128::<0x01>(x, h),
                _mm_clmulepi64_si128::<0x10>(x, h),
            ),
        }
    }

    /// += x·h (unreduced).
    #[target_feature(enable = "aes,pclmulqdq,avx")]
    #[inline]
    fn add(&mut self, x: __m128i, h: __m128i) {
        let p = Acc::first(x, h);
        self.lo = xor(self.lo, p.lo);
        self.hi = xor(self.hi, p.hi);
        self.mid = xor(self.mid, p.mid);
    }

    /// The 256-bit sum times x⁻¹²⁸ modulo POLYVAL's x¹²⁸ + x¹²⁷ + x¹²⁶ + x¹²¹ + 1: two
    /// Montgomery folds of 64 bits, each adding (low word)·(x¹²⁷ + x¹²⁶ + x¹²¹ + 1 + x¹²⁸)
    /// — the PCLMULQDQ by 0xc2000000_00000000 gives the x¹²⁷ + x¹²⁶ + x¹²¹ terms, the word
    /// swap the rest.
    #[target_feature(enable = "aes,pclmulqdq,avx")]
    #[inline]
    fn reduce(&self) -> __m128i {
        let lo = xor(self.lo, _mm_slli_si128::<8>(self.mid));
        let hi = xor(self.hi, _mm_srli_si128::<8>(self.mid));
        let poly = _mm_set_epi64x(0, 0xc200_0000_0000_0000_u64 as i64);
        let t = _mm_clmulepi64_si128::<0x00>(lo, poly);
        let v = xor(_mm_shuffle_epi32::<0x4e>(lo), t);
        let t2 = _mm_clmulepi64_si128::<0x00>(v, poly);
        xor(xor(hi, _mm_shuffle_epi32::<0x4e>(v)), t2)
    }
}

/// GHASH state after absorbing `blocks` (byte-reversed, 1..=POWERS of them) from state `s`:
/// (s ⊕ X₁)·Hⁿ ⊕ X₂·Hⁿ⁻¹ ⊕ … ⊕ Xₙ·H, one reduction.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn ghash_group(k: &GcmKey, s: __m128i, blocks: &[__m128i]) -> __m128i {
    let n = blocks.len().min(POWERS);
    let Some(&x0) = blocks.first() else {
        return s;
    };
    let mut acc = Acc::first(xor(x0, s), load(k.pow(n)));
    for (x, p) in blocks[1..n].iter().zip((1..n).rev()) {
        acc.add(*x, load(k.pow(p)));
    }
    acc.reduce()
}

// ---------------------------------------------------------------- packets

/// What a packet's pass starts from, as `(s, pre, n, lengths)`: the GHASH state, the AAD
/// blocks that ride in the first group (`pre[..n]`, byte-reversed; ESP's 8 or 12 bytes are
/// one block) or none if the AAD was too long and is in `s` already, and the length block
/// (len(A) ‖ len(C) in bits, byte-reversed: len(A) in the high half). A macro rather than a
/// function: returned as a struct from a function, they measured 5-25 % slower for a 64-byte
/// packet in noisy runs of the kernel bench (`--bench gcm`); the macro measured level with
/// the code it replaced.
macro_rules! start {
    ($k:expr, $aad:expr, $data_len:expr) => {
        start!($k, $aad, $data_len, ghash_bytes)
    };
    ($k:expr, $aad:expr, $data_len:expr, $ghash_bytes:ident) => {{
        let aad: &[u8] = $aad;
        let mut s = _mm_setzero_si128();
        let mut pre = [_mm_setzero_si128(); MAX_PREFIX];
        let mut n = 0;
        if aad.len() > MAX_PREFIX * BLOCK {
            s = $ghash_bytes($k, s, aad);
        } else {
            for b in aad.chunks(BLOCK) {
                pre[n] = _mm_shuffle_epi8(load_partial(b), bswap_mask());
                n += 1;
            }
        }
        let lengths = _mm_set_epi64x((aad.len() as u64 * 8) as i64, ($data_len as u64 * 8) as i64);
        (s, pre, n, lengths)
    }};
}

/// GHASH state after absorbing `bytes` (zero-padded to whole blocks) from state `s`: an AAD
/// too long to ride in the first step.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn ghash_bytes(k: &GcmKey, mut s: __m128i, bytes: &[u8]) -> __m128i {
    let mut group = [_mm_setzero_si128(); STEP];
    for chunk in bytes.chunks(STEP * BLOCK) {
        for (g, b) in group.iter_mut().zip(chunk.chunks(BLOCK)) {
            *g = _mm_shuffle_epi8(load_partial(b), bswap_mask());
        }
        s = ghash_group(k, s, &group[..chunk.len().div_ceil(BLOCK)]);
    }
    s
}

/// Constant-time equality of two tags: one XOR of the whole blocks, one test of the result.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn ct_eq(a: __m128i, b: __m128i) -> bool {
    let d = xor(a, b);
    _mm_testz_si128(d, d) == 1
}

/// J0 = nonce ‖ 0x00000001 (NIST SP 800-38D §7.1, 96-bit IV), and the same block
/// byte-reversed, whose low 32-bit lane is the counter as a native integer.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn j0(nonce: &[u8; 12]) -> (__m128i, __m128i) {
    // Read as the salt's 4 bytes and the IV's 8, the two stores a caller builds a nonce
    // with: a vector load across both cannot take its bytes from the store buffer and
    // waits for them to reach the cache (the store-forwarding stall was a tenth of a
    // 64-byte packet's seal).
    let (salt, iv) = nonce.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
    let salt = u64::from(u32::from_le_bytes(*salt));
    let iv = iv.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
    // J0's bytes as two little-endian words: salt ‖ IV[0..4], then IV[4..8] ‖ 00 00 00 01
    let lo = salt | (iv << 32);
    let hi = (iv >> 32) | (0x0100_0000u64 << 32);
    let j = _mm_set_epi64x(hi as i64, lo as i64);
    (j, _mm_shuffle_epi8(j, bswap_mask()))
}

/// Counter block `i` after J0 (inc32 applied `i` times), from the byte-reversed J0.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn counter(ctr_rev: __m128i, i: u32) -> __m128i {
    _mm_shuffle_epi8(
        _mm_add_epi32(ctr_rev, _mm_set_epi32(0, 0, 0, i as i32)),
        bswap_mask(),
    )
}

/// The entry points of a compilation of the kernels, around its `crypt`.
macro_rules! entry_points {
    ($features:literal) => {
        #[target_feature(enable = $features)]
        pub(super) fn seal_jobs<const NR: usize>(k: &GcmKey, jobs: &mut [GcmJob<'_>]) {
            for j in jobs {
                store(&mut j.tag, crypt::<NR, false>(k, &j.nonce, j.aad, j.data));
            }
        }

        #[target_feature(enable = $features)]
        pub(super) fn seal_one<const NR: usize>(
            k: &GcmKey,
            nonce: &[u8; 12],
            aad: &[u8],
            data: &mut [u8],
            tag: &mut [u8; 16],
        ) {
            store(tag, crypt::<NR, false>(k, nonce, aad, data));
        }

        #[target_feature(enable = $features)]
        pub(super) fn open_one<const NR: usize>(
            k: &GcmKey,
            nonce: &[u8; 12],
            aad: &[u8],
            data: &mut [u8],
            tag: &[u8; 16],
        ) -> bool {
            let ok = ct_eq(crypt::<NR, true>(k, nonce, aad, data), load(tag));
            if !ok {
                ctr_xor::<NR>(k, nonce, data);
            }
            ok
        }

        #[target_feature(enable = $features)]
        pub(super) fn open_jobs<const NR: usize>(
            k: &GcmKey,
            jobs: &mut [GcmJob<'_>],
            ok: &mut [bool],
        ) -> usize {
            let mut good = 0;
            for (j, ok) in jobs.iter_mut().zip(ok.iter_mut()) {
                let tag = crypt::<NR, true>(k, &j.nonce, j.aad, j.data);
                *ok = ct_eq(tag, load(&j.tag));
                if !*ok {
                    // give the ciphertext back: CTR with the same key stream is its own inverse
                    ctr_xor::<NR>(k, &j.nonce, j.data);
                }
                good += usize::from(*ok);
            }
            good
        }
    };
}

/// The per-packet kernels, compiled twice from one `crypt`: `narrow` with AES-NI and
/// PCLMULQDQ on 128-bit registers only, `wide` with the whole steps on 256-bit VAES and
/// VPCLMULQDQ (two blocks per instruction). `$aes8` and `$ghash8` are the whole-step
/// functions of the variant. The 512-bit kernels (`zmm`) have a `crypt` of their own
/// ([`crypt_zmm`]).
macro_rules! kernels {
    ($name:ident, $features:literal, $aes8:ident, $ghash8:ident, $big:ident) => {
        mod $name {
            use super::*;

            entry_points!($features);

            /// GCM-AE (`DECRYPT = false`) or the GCM-AD pass (`true`) over one packet: en/decrypt `data`
            /// in place and return the tag of the ciphertext (the output when sealing, the input when
            /// opening).
            #[target_feature(enable = $features)]
            #[inline]
            fn crypt<const NR: usize, const DECRYPT: bool>(
                k: &GcmKey,
                nonce: &[u8; 12],
                aad: &[u8],
                data: &mut [u8],
            ) -> __m128i {
                let bswap = bswap_mask();
                let (j0, ctr) = j0(nonce);
                let (s, pre, mut n, lengths) = start!(k, aad, data.len());
                let mut group = [_mm_setzero_si128(); MAX_PREFIX + STEP + 1];
                group[..MAX_PREFIX].copy_from_slice(&pre);
                // whole big steps first where the variant has them (the AAD hashed ahead)
                let (mut s, done) = $big::<NR, DECRYPT>(k, ctr, s, &group[..n], data);
                let data = &mut data[done..];
                let mut next = 1u32.wrapping_add((done / BLOCK) as u32);
                if done > 0 {
                    n = 0;
                }
                let (steps, rest) = data.as_chunks_mut::<{ STEP * BLOCK }>();
                let mut ej0 = None;
                for st in steps.iter_mut() {
                    // whole steps: 8 counter blocks (9 with J0 in the first), straight-line
                    let mut ks: [__m128i; STEP] =
                        core::array::from_fn(|i| counter(ctr, next.wrapping_add(i as u32)));
                    next = next.wrapping_add(STEP as u32);
                    if ej0.is_none() {
                        let mut b = [ks[0], ks[1], ks[2], ks[3], ks[4], ks[5], ks[6], ks[7], j0];
                        aes::<NR, { STEP + 1 }>(k, &mut b);
                        if let Some((first, [e])) = b.split_first_chunk::<STEP>() {
                            ks = *first;
                            ej0 = Some(*e);
                        }
                    } else {
                        $aes8::<NR>(k, &mut ks);
                    }
                    let (blocks, _) = st.as_chunks_mut::<BLOCK>();
                    let mut c = [_mm_setzero_si128(); STEP];
                    for ((b, x), c) in blocks.iter_mut().zip(&ks).zip(c.iter_mut()) {
                        let input = load(b);
                        let output = xor(input, *x);
                        store(b, output);
                        *c = _mm_shuffle_epi8(if DECRYPT { input } else { output }, bswap);
                    }
                    // GHASH of the step, behind the AAD prefix in the first one: Hⁿ … H¹, one reduction
                    let prefix = (n > 0).then(|| {
                        let p = STEP + n;
                        let mut acc = Acc::first(xor(group[0], s), load(k.pow(p)));
                        for (i, x) in group[1..n].iter().enumerate() {
                            acc.add(*x, load(k.pow(p - 1 - i)));
                        }
                        acc
                    });
                    n = 0;
                    s = $ghash8(k, prefix, s, &c);
                }
                // the tail (< 8 blocks, maybe none) with the length block, the AAD prefix and E(J0) if
                // no whole step took them
                let nb = rest.len().div_ceil(BLOCK);
                let mut ks = [_mm_setzero_si128(); STEP + 1];
                for (i, x) in ks.iter_mut().take(nb).enumerate() {
                    *x = counter(ctr, next.wrapping_add(i as u32));
                }
                let lanes = if ej0.is_none() {
                    ks[nb] = j0;
                    nb + 1
                } else {
                    nb
                };
                aes_first::<NR>(k, &mut ks, lanes);
                let ej0 = ej0.unwrap_or(ks[nb]);
                let (full, tail) = rest.as_chunks_mut::<BLOCK>();
                for (b, x) in full.iter_mut().zip(&ks) {
                    let input = load(b);
                    let output = xor(input, *x);
                    store(b, output);
                    group[n] = _mm_shuffle_epi8(if DECRYPT { input } else { output }, bswap);
                    n += 1;
                }
                if !tail.is_empty() {
                    let input = load_partial(tail);
                    // the ciphertext is hashed zero-padded, not with the key stream's tail
                    let output = _mm_and_si128(xor(input, ks[full.len()]), keep_first(tail.len()));
                    store_partial(tail, output);
                    group[n] = _mm_shuffle_epi8(if DECRYPT { input } else { output }, bswap);
                    n += 1;
                }
                group[n] = lengths;
                s = ghash_group(k, s, &group[..n + 1]);
                ks.zeroize_simd();
                xor(_mm_shuffle_epi8(s, bswap), ej0)
            }
        }
    };
}

kernels!(
    narrow,
    "aes,pclmulqdq,avx",
    aes8_narrow,
    ghash8_narrow,
    no_big_steps
);
mod zmm {
    use super::crypt_zmm as crypt;
    use super::*;

    entry_points!("aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw");
}
kernels!(
    wide,
    "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq",
    aes8_wide,
    ghash8_wide,
    big_steps_wide
);

/// The narrow kernels have no big steps: nothing done.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn no_big_steps<const NR: usize, const DECRYPT: bool>(
    _k: &GcmKey,
    _ctr: __m128i,
    s: __m128i,
    _aad: &[__m128i],
    _data: &mut [u8],
) -> (__m128i, usize) {
    (s, 0)
}

/// The whole [`BIG_STEP`]-block (256-byte) steps at the start of `data`, software-pipelined
/// on VAES and VPCLMULQDQ: while the AES rounds of a step's 16 counter blocks run (8
/// independent 256-bit chains, enough to keep both AES units busy through their latency),
/// the 8 GHASH products of the previous step's ciphertext are issued between the rounds, one
/// per round. Left alone, the out-of-order core cannot find that overlap: the waiting AES
/// chains of one step fill the vector scheduler before the next step's work is in view.
/// `aad`: byte-reversed AAD blocks not yet hashed (hashed first, when there is a big step).
/// Returns the GHASH state and the bytes done (a multiple of 256; 0 if `data` is shorter).
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq")]
#[inline]
fn big_steps_wide<const NR: usize, const DECRYPT: bool>(
    k: &GcmKey,
    ctr: __m128i,
    mut s: __m128i,
    aad: &[__m128i],
    data: &mut [u8],
) -> (__m128i, usize) {
    let (steps, _) = data.as_chunks_mut::<{ BIG_STEP * BLOCK }>();
    if steps.is_empty() {
        return (s, 0);
    }
    if !aad.is_empty() {
        s = ghash_group(k, s, aad);
    }
    let bswap = _mm256_broadcastsi128_si256(bswap_mask());
    let ctr = _mm256_broadcastsi128_si256(ctr);
    // pair j of a step (blocks 2j, 2j+1) takes (H^(16-2j), H^(15-2j))
    let hp = |j: usize| load256(k.pow_pair(j));
    // the previous step's ciphertext, byte-reversed, by pairs
    let mut pend = [_mm256_setzero_si256(); BIG_STEP / 2];
    let mut pending = false;
    let mut next = 1i32;
    let mut x = [_mm256_setzero_si256(); BIG_STEP / 2];
    let (mut lo, mut mid, mut hi) = (
        _mm256_setzero_si256(),
        _mm256_setzero_si256(),
        _mm256_setzero_si256(),
    );
    // one GHASH product: pair j of `pend` into the sums
    let product = |j: usize, p: __m256i, lo: &mut __m256i, mid: &mut __m256i, hi: &mut __m256i| {
        let h = hp(j);
        *lo = _mm256_xor_si256(*lo, _mm256_clmulepi64_epi128::<0x00>(p, h));
        *hi = _mm256_xor_si256(*hi, _mm256_clmulepi64_epi128::<0x11>(p, h));
        let m = _mm256_xor_si256(
            _mm256_clmulepi64_epi128::<0x01>(p, h),
            _mm256_clmulepi64_epi128::<0x10>(p, h),
        );
        *mid = _mm256_xor_si256(*mid, m);
    };
    let fold = |v: __m256i| xor(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    for st in steps.iter_mut() {
        // counter blocks next … next+15 (inc32 of J0), two per register
        for (i, v) in x.iter_mut().enumerate() {
            let c = next.wrapping_add(2 * i as i32);
            let add = _mm256_set_epi32(0, 0, 0, c.wrapping_add(1), 0, 0, 0, c);
            *v = _mm256_shuffle_epi8(_mm256_add_epi32(ctr, add), bswap);
        }
        next = next.wrapping_add(BIG_STEP as i32);
        let k0 = _mm256_broadcastsi128_si256(load(&k.rk[0]));
        for v in x.iter_mut() {
            *v = _mm256_xor_si256(*v, k0);
        }
        if pending {
            // the state enters with the step's first block
            pend[0] = _mm256_xor_si256(pend[0], _mm256_set_m128i(_mm_setzero_si128(), s));
        }
        for (r, rk) in k.rk[1..NR].iter().enumerate() {
            let kr = _mm256_broadcastsi128_si256(load(rk));
            for v in x.iter_mut() {
                *v = _mm256_aesenc_epi128(*v, kr);
            }
            if pending && r < BIG_STEP / 2 {
                product(r, pend[r], &mut lo, &mut mid, &mut hi);
            }
        }
        let kl = _mm256_broadcastsi128_si256(load(&k.rk[NR]));
        for v in x.iter_mut() {
            *v = _mm256_aesenclast_epi128(*v, kl);
        }
        if pending {
            let acc = Acc {
                lo: fold(lo),
                mid: fold(mid),
                hi: fold(hi),
            };
            s = acc.reduce();
            (lo, mid, hi) = (
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
            );
        }
        let (pairs, _) = st.as_chunks_mut::<32>();
        for ((b, ks), p) in pairs.iter_mut().zip(&x).zip(pend.iter_mut()) {
            let input = load256(b);
            let output = _mm256_xor_si256(input, *ks);
            store256(b, output);
            *p = _mm256_shuffle_epi8(if DECRYPT { input } else { output }, bswap);
        }
        pending = true;
    }
    // the last step's GHASH
    pend[0] = _mm256_xor_si256(pend[0], _mm256_set_m128i(_mm_setzero_si128(), s));
    for (j, p) in pend.iter().enumerate() {
        product(j, *p, &mut lo, &mut mid, &mut hi);
    }
    let acc = Acc {
        lo: fold(lo),
        mid: fold(mid),
        hi: fold(hi),
    };
    s = acc.reduce();
    x.zeroize_simd();
    (s, steps.len() * BIG_STEP * BLOCK)
}

/// GCM-AE / the GCM-AD pass over one packet on 512-bit registers (`crypt` of the `zmm`
/// kernels; the other variants' `crypt` in [`kernels!`] says what it returns).
///
/// * Whole 256-byte steps: 16 counter blocks in 4 VAES chains of four, the previous step's
///   GHASH issued between the rounds as 4 VPCLMULQDQ products of four blocks each
///   (schoolbook: 16 multiplies a step, where the 256-bit kernel's Karatsuba needed 24
///   and shuffles that competed with them for the one shuffle port). On CPUs where 512-bit
///   VAES issues on one port and 256-bit on two, the rounds cost the same in either width;
///   the wider registers save every other instruction around them.
/// * The rest (< 256 bytes, up to 16 blocks) in one more pass ([`tail_zmm`]): its counter
///   blocks and J0 go through AES while the last whole step is hashed, and the rest is
///   loaded and stored with byte masks, so a 64-byte packet is one pass as well.
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw")]
#[inline]
fn crypt_zmm<const NR: usize, const DECRYPT: bool>(
    k: &GcmKey,
    nonce: &[u8; 12],
    aad: &[u8],
    data: &mut [u8],
) -> __m128i {
    let (j0, ctr) = j0(nonce);
    let (mut s, pre, mut n, lengths) = start!(k, aad, data.len(), ghash_bytes_zmm);
    let (steps, rest) = data.as_chunks_mut::<{ BIG_STEP * BLOCK }>();
    if !steps.is_empty() && n > 0 {
        s = ghash_group(k, s, &pre[..n]);
        n = 0;
    }
    // counters of the next four blocks in the four lanes (byte-reversed J0's low word)
    let mut ctr4 = _mm512_add_epi32(
        _mm512_broadcast_i32x4(ctr),
        _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1),
    );
    // the last whole step's ciphertext, byte-reversed, not hashed yet (the state is in
    // its first block)
    let mut pend = [_mm512_setzero_si512(); BIG_STEP / 4];
    if !steps.is_empty() {
        (ctr4, s) = steps_zmm::<NR, DECRYPT>(k, ctr4, s, steps, &mut pend);
    }
    let last = (!steps.is_empty()).then_some(&pend);
    let nb = rest.len().div_ceil(BLOCK);
    // AAD blocks, the rest and the length block in one group of at most 16 powers
    if n > 0 && n + nb + 1 > POWERS {
        s = ghash_group(k, s, &pre[..n]);
        n = 0;
    }
    let t = Tail {
        j0,
        ctr: ctr4,
        pre: &pre[..n],
        s,
        lengths,
    };
    match nb.div_ceil(4) {
        0 => tail_zmm::<NR, DECRYPT, 0>(k, t, last, rest),
        1 => tail_zmm::<NR, DECRYPT, 1>(k, t, last, rest),
        2 => tail_zmm::<NR, DECRYPT, 2>(k, t, last, rest),
        3 => tail_zmm::<NR, DECRYPT, 3>(k, t, last, rest),
        _ => tail_zmm::<NR, DECRYPT, 4>(k, t, last, rest),
    }
}

/// The AES rounds of `x`'s blocks (counter blocks in, keystream out) and of `j0`'s, and,
/// when `hash` is given, the GHASH products of a whole step's blocks (`hash[j]`: blocks
/// 4j … 4j+3, byte-reversed) into `sums`, one product between every other round. Written
/// so that every loop has a constant count and no branch inside: the compiler unrolls it
/// all, and the rounds are not interleaved with loop control (which took the ports VAES
/// needs).
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw")]
#[inline]
fn rounds_zmm<const NR: usize, const N: usize>(
    k: &GcmKey,
    x: &mut [__m512i; N],
    mut j0: Option<&mut __m128i>,
    hash: Option<&[__m512i; BIG_STEP / 4]>,
    sums: &mut Sums4,
) {
    let rk = |r: usize| _mm512_broadcast_i32x4(load(&k.rk[r]));
    let k0 = rk(0);
    for v in x.iter_mut() {
        *v = _mm512_xor_si512(*v, k0);
    }
    if let Some(e) = j0.as_deref_mut() {
        *e = xor(*e, load(&k.rk[0]));
    }
    let mut round = |x: &mut [__m512i; N], r: usize| {
        let kx = load(&k.rk[r]);
        let kr = _mm512_broadcast_i32x4(kx);
        for v in x.iter_mut() {
            *v = _mm512_aesenc_epi128(*v, kr);
        }
        if let Some(e) = j0.as_deref_mut() {
            *e = _mm_aesenc_si128(*e, kx);
        }
    };
    // rounds 1 … 8 (NR ≥ 10): with the four products between them, or alone
    match hash {
        Some(p) => {
            for (j, q) in p.iter().enumerate() {
                round(x, 2 * j + 1);
                sums.add(*q, load512(k.pow_quad(j)));
                round(x, 2 * j + 2);
            }
        }
        None => {
            for r in 1..=8 {
                round(x, r);
            }
        }
    }
    for r in 9..NR {
        round(x, r);
    }
    let kx = load(&k.rk[NR]);
    let kl = _mm512_broadcast_i32x4(kx);
    for v in x.iter_mut() {
        *v = _mm512_aesenclast_epi128(*v, kl);
    }
    if let Some(e) = j0 {
        *e = _mm_aesenclast_si128(*e, kx);
    }
}

/// The whole 256-byte steps of [`crypt_zmm`]: each step's blocks encrypted or decrypted,
/// the step before hashed between its rounds. Returns the next counters and the GHASH
/// state; the last step's blocks are left in `pend`, not hashed. Not inlined: kept out of
/// the packets that have no whole step (a 64-byte packet's seal measured 3 cycles slower
/// with it inlined).
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw")]
#[inline(never)]
fn steps_zmm<const NR: usize, const DECRYPT: bool>(
    k: &GcmKey,
    mut ctr4: __m512i,
    mut s: __m128i,
    steps: &mut [[u8; BIG_STEP * BLOCK]],
    pend: &mut [__m512i; BIG_STEP / 4],
) -> (__m512i, __m128i) {
    let bswap4 = _mm512_broadcast_i32x4(bswap_mask());
    let four = four_lanes();
    let mut pending = false;
    let mut x = [_mm512_setzero_si512(); BIG_STEP / 4];
    let mut sums = Sums4::default();
    for st in steps.iter_mut() {
        for v in x.iter_mut() {
            *v = _mm512_shuffle_epi8(ctr4, bswap4);
            ctr4 = _mm512_add_epi32(ctr4, four);
        }
        let hash = pending.then_some(&*pend);
        rounds_zmm::<NR, { BIG_STEP / 4 }>(k, &mut x, None, hash, &mut sums);
        if pending {
            s = sums.take().reduce();
        }
        let (quads, _) = st.as_chunks_mut::<64>();
        for ((b, ks), p) in quads.iter_mut().zip(&x).zip(pend.iter_mut()) {
            let input = load512(b);
            let output = _mm512_xor_si512(input, *ks);
            store512(b, output);
            *p = _mm512_shuffle_epi8(if DECRYPT { input } else { output }, bswap4);
        }
        // the state enters with the step's first block (as a product of its own, the
        // state's multiply and add cost more at 1420 bytes than the shorter chain saved)
        pend[0] = _mm512_xor_si512(pend[0], _mm512_zextsi128_si512(s));
        pending = true;
    }
    x.zeroize_simd();
    (ctr4, s)
}

/// (4, 4, 4, 4) in the counter word of each lane.
#[target_feature(enable = "avx512f")]
#[inline]
fn four_lanes() -> __m512i {
    _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4)
}

/// What [`tail_zmm`] starts from.
struct Tail<'a> {
    j0: __m128i,
    /// The counters of the rest's first four blocks, byte-reversed (the counter in the
    /// low word of each lane).
    ctr: __m512i,
    /// AAD blocks not hashed yet (byte-reversed), before the rest's.
    pre: &'a [__m128i],
    /// GHASH state before the rest if there is no whole step (`last` carries it in its
    /// first block otherwise).
    s: __m128i,
    lengths: __m128i,
}

/// Unreduced sums of four lanes of products each (lane sums are added at `take`).
#[derive(Clone, Copy)]
struct Sums4 {
    lo: __m512i,
    mid: __m512i,
    hi: __m512i,
}

impl Default for Sums4 {
    fn default() -> Self {
        // SAFETY: an all-zero bit pattern is a valid __m512i; no instruction is needed.
        let z: __m512i = unsafe { core::mem::zeroed() };
        Sums4 {
            lo: z,
            mid: z,
            hi: z,
        }
    }
}

impl Sums4 {
    /// += the four products of `x`'s blocks with `h`'s powers, lane by lane.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn add(&mut self, x: __m512i, h: __m512i) {
        self.lo = _mm512_xor_si512(self.lo, _mm512_clmulepi64_epi128::<0x00>(x, h));
        self.hi = _mm512_xor_si512(self.hi, _mm512_clmulepi64_epi128::<0x11>(x, h));
        self.mid = _mm512_ternarylogic_epi32::<0x96>(
            self.mid,
            _mm512_clmulepi64_epi128::<0x01>(x, h),
            _mm512_clmulepi64_epi128::<0x10>(x, h),
        );
    }

    /// The lanes' sums added into one [`Acc`]; `self` starts again from zero.
    #[target_feature(enable = "aes,pclmulqdq,avx,avx2,avx512f")]
    #[inline]
    fn take(&mut self) -> Acc {
        let fold = |v: __m512i| {
            let y = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
            xor(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y))
        };
        let a = Acc {
            lo: fold(self.lo),
            mid: fold(self.mid),
            hi: fold(self.hi),
        };
        *self = Sums4::default();
        a
    }
}

/// The powers of blocks 4j … 4j+3 of a group of `nb` ≤ `e` ≤ [`POWERS`] blocks whose first
/// block takes H^e: H^(e-4j) … in the lanes of the blocks that exist, zero in the others.
#[target_feature(enable = "avx512f")]
#[inline]
fn quad_powers(k: &GcmKey, e: usize, nb: usize, j: usize) -> __m512i {
    let lanes = nb.saturating_sub(4 * j).min(4);
    let m = (1u16 << (2 * lanes)).wrapping_sub(1) as u8;
    if m == 0 {
        return _mm512_setzero_si512();
    }
    // powers at index POWERS - e + 4j onwards (`k.h` runs from H^POWERS down to H^1)
    let at = (POWERS - e.min(POWERS) + 4 * j) * BLOCK;
    // SAFETY: a lane is loaded only for a block 4j + l < nb ≤ e, whose power H^(e-4j-l) ≥ H^1
    // is at index POWERS - e + 4j + l < POWERS, inside `k.h`; the other lanes read nothing.
    unsafe { _mm512_maskz_loadu_epi64(m, k.h.as_ptr().add(at).cast()) }
}

/// [`ghash_bytes`] on 512-bit registers: 16 blocks per reduction, four per product, the
/// state entering with each group's first block; the last group's blocks are loaded through
/// byte masks. For the AADs of AES-GMAC (ESP's whole packet, AH's), where the 128-bit
/// version's 8-block groups and block-at-a-time loads took most of the time.
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw")]
#[inline]
fn ghash_bytes_zmm(k: &GcmKey, mut s: __m128i, bytes: &[u8]) -> __m128i {
    let bswap4 = _mm512_broadcast_i32x4(bswap_mask());
    for group in bytes.chunks(BIG_STEP * BLOCK) {
        let nb = group.len().div_ceil(BLOCK);
        let mut sums = Sums4::default();
        for j in 0..nb.div_ceil(4) {
            let mut x = _mm512_shuffle_epi8(load_piece(group, j), bswap4);
            if j == 0 {
                x = _mm512_xor_si512(x, _mm512_zextsi128_si512(s));
            }
            sums.add(x, quad_powers(k, nb, nb, j));
        }
        s = sums.take().reduce();
    }
    s
}

/// The last `Q` pieces (up to 64 bytes each, `rest` < 256 bytes) of a packet: their
/// counter blocks and J0 through AES while `last` (the last whole step, if any) is hashed;
/// then the masked XOR, and one GHASH group of the AAD prefix, the rest and the length
/// block. Returns the tag.
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq,avx512f,avx512bw")]
#[inline]
fn tail_zmm<const NR: usize, const DECRYPT: bool, const Q: usize>(
    k: &GcmKey,
    t: Tail<'_>,
    last: Option<&[__m512i; BIG_STEP / 4]>,
    rest: &mut [u8],
) -> __m128i {
    let bswap4 = _mm512_broadcast_i32x4(bswap_mask());
    let len = rest.len();
    let nb = len.div_ceil(BLOCK);
    // one group: pre (n blocks), the rest's nb blocks, the length block when it fits; the
    // state enters as one more product (its power is the group's first block's), so no
    // block's product waits for it
    let inline_len = nb < POWERS;
    let e_pow = nb + usize::from(inline_len);
    // the rest's GHASH products (its blocks zero-padded and byte-reversed)
    let hash_rest = |cb: &[__m512i; Q]| {
        let mut sums = Sums4::default();
        for (j, c) in cb.iter().enumerate() {
            sums.add(*c, quad_powers(k, e_pow, nb, j));
        }
        sums.take()
    };
    // opening: the ciphertext is at hand, so its products go in before the AES rounds
    let mut input = [_mm512_setzero_si512(); Q];
    let mut rest_acc = None;
    if DECRYPT {
        let mut cb = [_mm512_setzero_si512(); Q];
        for (i, (v, c)) in input.iter_mut().zip(cb.iter_mut()).enumerate() {
            *v = load_piece(rest, i);
            *c = _mm512_shuffle_epi8(*v, bswap4);
        }
        rest_acc = Some(hash_rest(&cb));
    }
    let four = four_lanes();
    let mut x = [_mm512_setzero_si512(); Q];
    let mut ctr = t.ctr;
    for v in x.iter_mut() {
        *v = _mm512_shuffle_epi8(ctr, bswap4);
        ctr = _mm512_add_epi32(ctr, four);
    }
    // J0 through AES as one more chain
    let mut ej0 = t.j0;
    let mut sums = Sums4::default();
    rounds_zmm::<NR, Q>(k, &mut x, Some(&mut ej0), last, &mut sums);
    let mut s = t.s;
    if last.is_some() {
        s = sums.take().reduce();
    }
    // the rest, XORed through byte masks
    let mut cb = [_mm512_setzero_si512(); Q];
    for (i, ((v, c), inp)) in x.iter().zip(cb.iter_mut()).zip(&input).enumerate() {
        let m = piece_mask(len, i);
        // SAFETY: i < Q = ⌈nb / 4⌉, so piece i starts inside `rest`; the masked load and
        // store touch only the bytes whose mask bit is set, all of them inside `rest`.
        unsafe {
            let p = rest.as_mut_ptr().add(64 * i);
            let inp = if DECRYPT {
                *inp
            } else {
                _mm512_maskz_loadu_epi8(m, p.cast())
            };
            let output = _mm512_xor_si512(inp, *v);
            _mm512_mask_storeu_epi8(p.cast(), m, output);
            if !DECRYPT {
                *c = _mm512_shuffle_epi8(_mm512_maskz_mov_epi8(m, output), bswap4);
            }
        }
    }
    x.zeroize_simd();
    input.zeroize_simd();
    let mut acc = rest_acc.unwrap_or_else(|| hash_rest(&cb));
    cb.zeroize_simd();
    let n = t.pre.len();
    for (i, x) in t.pre.iter().enumerate() {
        acc.add(*x, load(k.pow(e_pow + n - i)));
    }
    acc.add(s, load(k.pow(e_pow + n)));
    if inline_len {
        acc.add(t.lengths, load(k.pow(1)));
        s = acc.reduce();
    } else {
        s = acc.reduce();
        s = Acc::first(xor(s, t.lengths), load(k.pow(1))).reduce();
    }
    xor(_mm_shuffle_epi8(s, bswap_mask()), ej0)
}

/// A whole step's 8 blocks through AES, 128-bit registers.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn aes8_narrow<const NR: usize>(k: &GcmKey, b: &mut [__m128i; STEP]) {
    aes::<NR, STEP>(k, b);
}

/// GHASH of a whole step's 8 (byte-reversed) blocks c, after the AAD `prefix` products if
/// this is the first step (then `s` is already in them), else from state `s`.
#[target_feature(enable = "aes,pclmulqdq,avx")]
#[inline]
fn ghash8_narrow(k: &GcmKey, prefix: Option<Acc>, s: __m128i, c: &[__m128i; STEP]) -> __m128i {
    let mut acc = match prefix {
        Some(mut a) => {
            a.add(c[0], load(k.pow(STEP)));
            a
        }
        None => Acc::first(xor(c[0], s), load(k.pow(STEP))),
    };
    for (i, x) in c.iter().enumerate().skip(1) {
        acc.add(*x, load(k.pow(STEP - i)));
    }
    acc.reduce()
}

/// A whole step's 8 blocks through AES, two per VAES instruction.
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq")]
#[inline]
fn aes8_wide<const NR: usize>(k: &GcmKey, b: &mut [__m128i; STEP]) {
    let mut y: [__m256i; STEP / 2] =
        core::array::from_fn(|i| _mm256_set_m128i(b[2 * i + 1], b[2 * i]));
    let k0 = _mm256_broadcastsi128_si256(load(&k.rk[0]));
    for x in y.iter_mut() {
        *x = _mm256_xor_si256(*x, k0);
    }
    for r in &k.rk[1..NR] {
        let kr = _mm256_broadcastsi128_si256(load(r));
        for x in y.iter_mut() {
            *x = _mm256_aesenc_epi128(*x, kr);
        }
    }
    let kl = _mm256_broadcastsi128_si256(load(&k.rk[NR]));
    for (i, x) in y.iter().enumerate() {
        let v = _mm256_aesenclast_epi128(*x, kl);
        b[2 * i] = _mm256_castsi256_si128(v);
        b[2 * i + 1] = _mm256_extracti128_si256::<1>(v);
    }
}

/// [`ghash8_narrow`] with two blocks per VPCLMULQDQ: block pairs times (H^(2j), H^(2j-1))
/// pairs, Karatsuba in each 128-bit lane, the two lanes' sums added before the reduction.
#[target_feature(enable = "aes,pclmulqdq,avx,avx2,vaes,vpclmulqdq")]
#[inline]
fn ghash8_wide(k: &GcmKey, prefix: Option<Acc>, s: __m128i, c: &[__m128i; STEP]) -> __m128i {
    let c0 = if prefix.is_some() { c[0] } else { xor(c[0], s) };
    let pair = |i: usize| {
        let lo = if i == 0 { c0 } else { c[2 * i] };
        _mm256_set_m128i(c[2 * i + 1], lo)
    };
    // block 2i takes H^(8-2i) (low lane), block 2i+1 takes H^(7-2i): the pairs after
    // the first four of a 16-block step
    let hp = |i: usize| load256(k.pow_pair(4 + i));
    let mut lo = _mm256_setzero_si256();
    let mut mid = _mm256_setzero_si256();
    let mut hi = _mm256_setzero_si256();
    for i in 0..STEP / 2 {
        let x = pair(i);
        let h = hp(i);
        lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128::<0x00>(x, h));
        hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128::<0x11>(x, h));
        let m = _mm256_xor_si256(
            _mm256_clmulepi64_epi128::<0x01>(x, h),
            _mm256_clmulepi64_epi128::<0x10>(x, h),
        );
        mid = _mm256_xor_si256(mid, m);
    }
    let fold = |v: __m256i| xor(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let mut acc = Acc {
        lo: fold(lo),
        mid: fold(mid),
        hi: fold(hi),
    };
    if let Some(p) = prefix {
        acc.lo = xor(acc.lo, p.lo);
        acc.mid = xor(acc.mid, p.mid);
        acc.hi = xor(acc.hi, p.hi);
    }
    acc.reduce()
}

/// Plain CTR over `data` with the packet's key stream (restoring a rejected packet).
#[target_feature(enable = "aes,pclmulqdq,avx")]
fn ctr_xor<const NR: usize>(k: &GcmKey, nonce: &[u8; 12], data: &mut [u8]) {
    let (_, ctr) = j0(nonce);
    let mut ks = [_mm_setzero_si128(); STEP + 1];
    let mut next = 1u32;
    for chunk in data.chunks_mut(STEP * BLOCK) {
        let nb = chunk.len().div_ceil(BLOCK);
        for (i, x) in ks.iter_mut().take(nb).enumerate() {
            *x = counter(ctr, next.wrapping_add(i as u32));
        }
        next = next.wrapping_add(nb as u32);
        aes_first::<NR>(k, &mut ks, nb);
        let mut t = [0u8; STEP * BLOCK];
        for (i, x) in ks.iter().take(nb).enumerate() {
            if let Some(b) = t.get_mut(i * BLOCK..(i + 1) * BLOCK)
                && let Ok(b) = <&mut [u8; 16]>::try_from(b)
            {
                store(b, *x);
            }
        }
        for (d, t) in chunk.iter_mut().zip(&t) {
            *d ^= t;
        }
        t.zeroize();
    }
    ks.zeroize_simd();
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use proptest::prelude::*;
    use ring::aead as ra;

    use crate::kat::unhex;

    /// This machine has the features: a missing one is a failure, not a skip.
    fn key(k: &[u8]) -> GcmKey {
        assert!(
            available(),
            "AES-NI, PCLMULQDQ or AVX missing: the kernel is untested"
        );
        GcmKey::new(k).expect("key")
    }

    /// Both variants: the one `new` picks (VAES here: its absence fails the test) and the
    /// 128-bit one.
    /// The key on each kernel: 512-bit, 256-bit, 128-bit.
    fn variants(k: &[u8]) -> [GcmKey; 3] {
        assert!(
            available_zmm(),
            "VAES/VPCLMULQDQ or AVX-512 missing: the wide kernels are untested"
        );
        let zmm = key(k);
        assert_eq!(zmm.width(), Width::Zmm);
        let ymm = key(k).at_most(Width::Ymm);
        assert_eq!(ymm.width(), Width::Ymm);
        let narrow = key(k).narrow();
        assert_eq!(narrow.width(), Width::Narrow);
        [zmm, ymm, narrow]
    }

    fn seal1(k: &GcmKey, nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let mut jobs = [GcmJob {
            nonce,
            aad,
            data,
            tag: [0; 16],
        }];
        seal_many(k, &mut jobs);
        jobs[0].tag
    }

    fn open1(k: &GcmKey, nonce: [u8; 12], aad: &[u8], data: &mut [u8], tag: [u8; 16]) -> bool {
        let mut jobs = [GcmJob {
            nonce,
            aad,
            data,
            tag,
        }];
        let mut ok = [false];
        let n = open_many(k, &mut jobs, &mut ok);
        assert_eq!(n, usize::from(ok[0]));
        ok[0]
    }

    fn ring_seal(key: &[u8], nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let alg = if key.len() == 16 {
            &ra::AES_128_GCM
        } else {
            &ra::AES_256_GCM
        };
        let k = ra::LessSafeKey::new(ra::UnboundKey::new(alg, key).expect("ring key"));
        let t = k
            .seal_in_place_separate_tag(
                ra::Nonce::assume_unique_for_key(nonce),
                ra::Aad::from(aad),
                data,
            )
            .expect("ring seal");
        t.as_ref().try_into().expect("tag")
    }

    fn rustcrypto_seal(key: &[u8], nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let t = if key.len() == 16 {
            aes_gcm::Aes128Gcm::new_from_slice(key)
                .expect("key")
                .encrypt_inout_detached(&nonce.into(), aad, data.into())
        } else {
            aes_gcm::Aes256Gcm::new_from_slice(key)
                .expect("key")
                .encrypt_inout_detached(&nonce.into(), aad, data.into())
        }
        .expect("seal");
        t.into()
    }

    /// The test cases of McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)"
    /// (the NIST submission, 2005), Appendix B, that use a 96-bit IV: cases 1-4 (AES-128)
    /// and 13-16 (AES-256): empty plaintext, one block, four blocks, and 60 bytes with 20
    /// bytes of AAD. (Cases 5-6 and 17-18 use 64- and 480-bit IVs, which ESP never does.)
    #[test]
    fn gcm_spec_appendix_b_vectors() {
        const P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
        const K: &str = "feffe9928665731c6d6a8f9467308308";
        const K256: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
        const IV: &str = "cafebabefacedbaddecaf888";
        const A: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
        let z16 = "00".repeat(16);
        let z32 = "00".repeat(32);
        let z12 = "00".repeat(12);
        // (case, key, plaintext, iv, aad, ciphertext, tag)
        let cases: [(u32, &str, &str, &str, &str, &str, &str); 8] = [
            (
                1,
                &z16,
                "",
                &z12,
                "",
                "",
                "58e2fccefa7e3061367f1d57a4e7455a",
            ),
            (
                2,
                &z16,
                &z16,
                &z12,
                "",
                "0388dace60b6a392f328c2b971b2fe78",
                "ab6e47d42cec13bdf53a67b21257bddf",
            ),
            (
                3,
                K,
                P,
                IV,
                "",
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
                "4d5c2af327cd64a62cf35abd2ba6fab4",
            ),
            (
                4,
                K,
                &P[..120],
                IV,
                A,
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (
                13,
                &z32,
                "",
                &z12,
                "",
                "",
                "530f8afbc74536b9a963b4f1c4cb738b",
            ),
            (
                14,
                &z32,
                &z16,
                &z12,
                "",
                "cea7403d4d606b6e074ec5d3baf39d18",
                "d0d1c8a799996bf0265b98b5d48ab919",
            ),
            (
                15,
                K256,
                P,
                IV,
                "",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
                "b094dac5d93471bdec1a502270e3cc6c",
            ),
            (
                16,
                K256,
                &P[..120],
                IV,
                A,
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for ((case, k, p, iv, a, c, t), v) in cases.iter().flat_map(|c| [(*c, 0), (*c, 1), (*c, 2)])
        {
            let Some(k) = variants(&unhex(k)).into_iter().nth(v) else {
                unreachable!("three variants")
            };
            let nonce: [u8; 12] = unhex(iv).try_into().expect("iv");
            let aad = unhex(a);
            let mut buf = unhex(p);
            let tag = seal1(&k, nonce, &aad, &mut buf);
            assert_eq!(buf, unhex(c), "case {case} ciphertext");
            assert_eq!(tag.to_vec(), unhex(t), "case {case} tag");
            assert!(open1(&k, nonce, &aad, &mut buf, tag), "case {case} open");
            assert_eq!(buf, unhex(p), "case {case} plaintext");
        }
    }

    /// draft-mcgrew-gcm-test-01 §4, the ESP packets of tests/vectors/gcm_esp.txt (the file
    /// `kat.rs` reads) with 128- and 256-bit keys: the GCM cases (8-byte and 12-byte ESN
    /// AAD) and the GMAC case (everything in the AAD, nothing encrypted). All of them in
    /// one `seal_many` / `open_many` burst per key size after each one alone.
    #[test]
    fn draft_mcgrew_gcm_esp_vectors() {
        let cases = crate::kat::records(include_str!("../../tests/vectors/gcm_esp.txt"));
        assert_eq!(cases.len(), 17, "all of the draft's cases");
        let mut tested = 0;
        for klen in [16, 32] {
            let mine: Vec<_> = cases
                .iter()
                .filter(|c| unhex(&c["key"]).len() == klen)
                .collect();
            for (v, k) in variants(&unhex(&mine[0]["key"])).into_iter().enumerate() {
                let mut keys = vec![];
                let mut bufs = vec![];
                let mut want = vec![];
                for c in &mine {
                    let kk = variants(&unhex(&c["key"]))
                        .into_iter()
                        .nth(v)
                        .expect("variant");
                    let nonce: [u8; 12] = [unhex(&c["salt"]), unhex(&c["iv"])]
                        .concat()
                        .try_into()
                        .expect("nonce");
                    let (aad, pt, ct) = if c["aead"] == "gmac" {
                        // the file's GMAC aad is already SPI ‖ seq ‖ IV ‖ payload (RFC 4543 §3.3)
                        (unhex(&c["aad"]), vec![], vec![])
                    } else {
                        (
                            unhex(&c["aad"]),
                            unhex(&c["plaintext"]),
                            unhex(&c["ciphertext"]),
                        )
                    };
                    let tag: [u8; 16] = unhex(&c["tag"]).try_into().expect("tag");
                    let mut buf = pt.clone();
                    assert_eq!(seal1(&kk, nonce, &aad, &mut buf), tag, "{}", c["name"]);
                    assert_eq!(buf, ct, "{}", c["name"]);
                    assert!(open1(&kk, nonce, &aad, &mut buf, tag), "{}", c["name"]);
                    assert_eq!(buf, pt, "{}", c["name"]);
                    if c["key"] == mine[0]["key"] {
                        keys.push((nonce, aad, tag, ct));
                        bufs.push(pt);
                    }
                    tested += 1;
                }
                // the cases sharing the first key, as one burst
                let mut jobs: Vec<GcmJob<'_>> = keys
                    .iter()
                    .zip(bufs.iter_mut())
                    .map(|((nonce, aad, _, _), b)| GcmJob {
                        nonce: *nonce,
                        aad,
                        data: b,
                        tag: [0; 16],
                    })
                    .collect();
                seal_many(&k, &mut jobs);
                for (j, (_, _, tag, ct)) in jobs.iter().zip(&keys) {
                    assert_eq!(&j.tag, tag);
                    assert_eq!(&*j.data, &ct[..]);
                }
                let mut ok = vec![false; jobs.len()];
                assert_eq!(open_many(&k, &mut jobs, &mut ok), ok.len());
                want.extend(ok);
                assert!(want.iter().all(|&b| b));
            }
        }
        assert_eq!(
            tested,
            3 * (17 - 1),
            "every 128/256-bit case on each kernel (one is AES-192)"
        );
    }

    /// Every length 0..600 against ring, both key sizes, 8- and 12-byte AAD: one job per
    /// call, then all 600 in one burst, then opened in one burst.
    #[test]
    fn every_length_to_600_matches_ring() {
        for klen in [16, 32] {
            let kb: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(29) ^ 0x5c).collect();
            for k in variants(&kb) {
                let mut bufs = vec![];
                let mut wants = vec![];
                let mut aads = vec![];
                let mut nonces = vec![];
                for len in 0..600usize {
                    let nonce: [u8; 12] = core::array::from_fn(|i| (i + len) as u8);
                    let aad: Vec<u8> = (0..if len % 2 == 0 { 8 } else { 12 })
                        .map(|i| (i * 7 + len) as u8)
                        .collect();
                    let pt: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                    let mut want = pt.clone();
                    let want_tag = ring_seal(&kb, nonce, &aad, &mut want);
                    let mut buf = pt.clone();
                    let tag = seal1(&k, nonce, &aad, &mut buf);
                    assert_eq!(buf, want, "length {len}");
                    assert_eq!(tag, want_tag, "length {len}");
                    assert!(open1(&k, nonce, &aad, &mut buf, tag), "length {len}");
                    assert_eq!(buf, pt, "length {len}");
                    bufs.push(pt);
                    wants.push((want, want_tag));
                    aads.push(aad);
                    nonces.push(nonce);
                }
                let plain = bufs.clone();
                let mut jobs: Vec<GcmJob<'_>> = bufs
                    .iter_mut()
                    .zip(&aads)
                    .zip(&nonces)
                    .map(|((b, a), n)| GcmJob {
                        nonce: *n,
                        aad: a,
                        data: b,
                        tag: [0; 16],
                    })
                    .collect();
                seal_many(&k, &mut jobs);
                for (j, (c, t)) in jobs.iter().zip(&wants) {
                    assert_eq!(&*j.data, &c[..]);
                    assert_eq!(&j.tag, t);
                }
                let mut ok = vec![false; jobs.len()];
                assert_eq!(open_many(&k, &mut jobs, &mut ok), 600);
                drop(jobs);
                assert_eq!(bufs, plain);
            }
        }
    }

    #[test]
    fn partial_blocks_load_mask_and_store_every_length() {
        assert!(
            available(),
            "this CPU lacks AES-NI/PCLMULQDQ/AVX: the kernel cannot be tested here"
        );
        let src: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        for off in 0..8 {
            for n in 0..=16 {
                let b = &src[off..off + n];
                let mut want = [0u8; 16];
                want[..n].copy_from_slice(b);
                let mut got = [0u8; 16];
                store(&mut got, load_partial(b));
                assert_eq!(got, want, "load_partial, {n} bytes at {off}");
                // SAFETY: `available()` checked AES-NI, PCLMULQDQ and AVX.
                let masked = unsafe { _mm_and_si128(load(&[0xff; 16]), keep_first(n)) };
                store(&mut got, masked);
                let mask: Vec<u8> = (0..16).map(|i| if i < n { 0xff } else { 0 }).collect();
                assert_eq!(got.to_vec(), mask, "keep_first({n})");
                let mut out = [0x11u8; 17];
                store_partial(&mut out[..n], load(&[0xee; 16]));
                assert!(out[..n].iter().all(|&x| x == 0xee), "store_partial({n})");
                assert!(
                    out[n..].iter().all(|&x| x == 0x11),
                    "store_partial({n}) wrote past"
                );
            }
        }
    }

    #[test]
    fn keys_refused_and_debug_hides_secrets() {
        assert!(
            GcmKey::new(&[0u8; 24]).is_none(),
            "AES-192 is not offered here"
        );
        assert!(GcmKey::new(&[0u8; 15]).is_none());
        let k = key(&[0xabu8; 32]);
        let d = format!("{k:?}");
        assert!(
            d.contains("AES-256") && !d.contains("ab") && !d.contains("171"),
            "{d}"
        );
        assert!(format!("{:?}", key(&[1; 16])).contains("AES-128"));
    }

    /// Extra jobs without an `ok` slot are left alone.
    #[test]
    fn open_many_with_short_ok_touches_only_its_jobs() {
        let k = key(&[9; 16]);
        let mut a = [1u8; 40];
        let mut b = [2u8; 40];
        let ta = seal1(&k, [0; 12], &[0; 8], &mut a);
        let tb = seal1(&k, [1; 12], &[0; 8], &mut b);
        let sealed_b = b;
        let mut jobs = [
            GcmJob {
                nonce: [0; 12],
                aad: &[0; 8],
                data: &mut a,
                tag: ta,
            },
            GcmJob {
                nonce: [1; 12],
                aad: &[0; 8],
                data: &mut b,
                tag: tb,
            },
        ];
        let mut ok = [false];
        assert_eq!(open_many(&k, &mut jobs, &mut ok), 1);
        assert_eq!(a, [1u8; 40]);
        assert_eq!(b, sealed_b);
    }

    /// Bytes from a 64-bit xorshift seeded with `seed`: cheap test data a proptest shrinks by
    /// its seed.
    fn xorshift(seed: u64) -> impl FnMut() -> u8 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }
    }

    #[derive(Debug, Clone)]
    struct Case {
        key: Vec<u8>,
        jobs: Vec<(Vec<u8>, [u8; 12], Vec<u8>)>,
    }

    fn case() -> impl Strategy<Value = Case> {
        let job = (
            prop_oneof![
                4 => 0usize..200,
                2 => 200usize..1600,
                1 => 0usize..9000,
            ],
            any::<[u8; 12]>(),
            prop::sample::select(vec![8usize, 12]),
            any::<u64>(),
        )
            .prop_map(|(len, nonce, alen, seed)| {
                let mut rnd = xorshift(seed);
                let aad: Vec<u8> = (0..alen).map(|_| rnd()).collect();
                let data: Vec<u8> = (0..len).map(|_| rnd()).collect();
                (aad, nonce, data)
            });
        (
            prop::sample::select(vec![16usize, 32]),
            any::<[u8; 32]>(),
            prop::collection::vec(job, 1..40),
        )
            .prop_map(|(klen, k, jobs)| Case {
                key: k[..klen].to_vec(),
                jobs,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A burst of mixed lengths: ciphertext and tags bit-identical to ring and to
        /// RustCrypto `aes-gcm`, and `open_many` gives the plaintext back.
        #[test]
        fn burst_matches_ring_and_rustcrypto(c in case()) {
            // every variant, chosen by the key's first byte
            let Some(k) = variants(&c.key).into_iter().nth(usize::from(c.key[0] % 3)) else {
                unreachable!("three variants")
            };
            let mut bufs: Vec<Vec<u8>> = c.jobs.iter().map(|j| j.2.clone()).collect();
            let mut jobs: Vec<GcmJob<'_>> = c
                .jobs
                .iter()
                .zip(bufs.iter_mut())
                .map(|((aad, nonce, _), b)| GcmJob { nonce: *nonce, aad, data: b, tag: [0; 16] })
                .collect();
            seal_many(&k, &mut jobs);
            for (j, (aad, nonce, pt)) in jobs.iter().zip(&c.jobs) {
                let mut r = pt.clone();
                let rt = ring_seal(&c.key, *nonce, aad, &mut r);
                let mut rc = pt.clone();
                let rct = rustcrypto_seal(&c.key, *nonce, aad, &mut rc);
                prop_assert_eq!(&*j.data, &r[..]);
                prop_assert_eq!(j.tag, rt);
                prop_assert_eq!(&rc, &r);
                prop_assert_eq!(rct, rt);
            }
            let mut ok = vec![false; jobs.len()];
            prop_assert_eq!(open_many(&k, &mut jobs, &mut ok), c.jobs.len());
            drop(jobs);
            for (b, j) in bufs.iter().zip(&c.jobs) {
                prop_assert_eq!(b, &j.2);
            }
        }

        /// GMAC's shape (AH, RFC 4543 §4): a whole packet of AAD, up to a jumbo frame, and
        /// no plaintext (or a few bytes): `seal_one`/`open_one` of every variant give ring's
        /// and RustCrypto's tags, and a flipped AAD bit fails.
        #[test]
        fn long_aad_matches_ring_and_rustcrypto(
            key in prop::sample::select(vec![16usize, 32]),
            alen in prop_oneof![0usize..300, 300usize..9100],
            dlen in prop_oneof![Just(0usize), 1usize..40, 256usize..700],
            nonce in any::<[u8; 12]>(),
            seed in any::<u64>(),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut rnd = xorshift(seed);
            let kb: Vec<u8> = (0..key).map(|_| rnd()).collect();
            let aad: Vec<u8> = (0..alen).map(|_| rnd()).collect();
            let pt: Vec<u8> = (0..dlen).map(|_| rnd()).collect();
            let mut r = pt.clone();
            let want = ring_seal(&kb, nonce, &aad, &mut r);
            let mut rc = pt.clone();
            prop_assert_eq!(rustcrypto_seal(&kb, nonce, &aad, &mut rc), want);
            for k in variants(&kb) {
                let mut d = pt.clone();
                let mut tag = [0u8; 16];
                seal_one(&k, &nonce, &aad, &mut d, &mut tag);
                prop_assert_eq!(tag, want);
                prop_assert_eq!(&d, &r);
                prop_assert!(open_one(&k, &nonce, &aad, &mut d, &tag));
                prop_assert_eq!(&d, &pt);
                if alen > 0 {
                    let mut bad = aad.clone();
                    let b = bit.index(alen * 8);
                    bad[b / 8] ^= 1 << (b % 8);
                    let mut d2 = r.clone();
                    prop_assert!(!open_one(&k, &nonce, &bad, &mut d2, &tag));
                    prop_assert_eq!(&d2, &r);
                }
            }
        }

        /// One flipped bit in one job's ciphertext, tag or AAD: that job alone fails and
        /// keeps its bytes as received; every other job of the burst opens.
        #[test]
        fn a_flipped_bit_fails_only_its_job(
            c in case(),
            victim in any::<prop::sample::Index>(),
            place in 0usize..3,
            bit in any::<prop::sample::Index>(),
        ) {
            // every variant, chosen by the key's first byte
            let Some(k) = variants(&c.key).into_iter().nth(usize::from(c.key[0] % 3)) else {
                unreachable!("three variants")
            };
            let v = victim.index(c.jobs.len());
            let mut aads: Vec<Vec<u8>> = c.jobs.iter().map(|j| j.0.clone()).collect();
            let mut bufs: Vec<Vec<u8>> = c.jobs.iter().map(|j| j.2.clone()).collect();
            let mut tags = vec![[0u8; 16]; c.jobs.len()];
            for (i, (aad, nonce, _)) in c.jobs.iter().enumerate() {
                tags[i] = seal1(&k, *nonce, aad, &mut bufs[i]);
            }
            // an empty payload has no ciphertext bit to flip: flip the tag instead
            let place = if place == 0 && bufs[v].is_empty() { 1 } else { place };
            match place {
                0 => { let n = bufs[v].len() * 8; let b = bit.index(n); bufs[v][b / 8] ^= 1 << (b % 8); }
                1 => { let b = bit.index(128); tags[v][b / 8] ^= 1 << (b % 8); }
                _ => { let n = aads[v].len() * 8; let b = bit.index(n); aads[v][b / 8] ^= 1 << (b % 8); }
            }
            let received = bufs.clone();
            let mut jobs: Vec<GcmJob<'_>> = c
                .jobs
                .iter()
                .zip(bufs.iter_mut())
                .zip(&aads)
                .zip(&tags)
                .map(|(((j, b), aad), tag)| GcmJob { nonce: j.1, aad, data: b, tag: *tag })
                .collect();
            let mut ok = vec![false; jobs.len()];
            prop_assert_eq!(open_many(&k, &mut jobs, &mut ok), c.jobs.len() - 1);
            drop(jobs);
            for (i, j) in c.jobs.iter().enumerate() {
                if i == v {
                    prop_assert!(!ok[i]);
                    prop_assert_eq!(&bufs[i], &received[i], "rejected job must stay as received");
                } else {
                    prop_assert!(ok[i]);
                    prop_assert_eq!(&bufs[i], &j.2);
                }
            }
        }
    }
}
