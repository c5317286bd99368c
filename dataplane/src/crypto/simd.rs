//! Unaligned loads and stores between byte blocks and SIMD registers, shared by the AES-NI,
//! SHA-NI and GCM kernels (part of the SIMD crypto kernels, where `unsafe` is allowed).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m256i, __m512i, _mm_loadu_si128, _mm_storeu_si128, _mm256_loadu_si256,
    _mm256_storeu_si256, _mm512_castsi128_si512, _mm512_inserti32x4, _mm512_loadu_si512,
    _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8, _mm512_setzero_si512, _mm512_storeu_si512,
};

#[inline(always)]
pub(crate) fn load(b: &[u8; 16]) -> __m128i {
    // SAFETY: an unaligned 16-byte load from a 16-byte array; SSE2 is part of x86_64.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline(always)]
pub(crate) fn store(b: &mut [u8; 16], v: __m128i) {
    // SAFETY: an unaligned 16-byte store to a 16-byte array; SSE2 is part of x86_64.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

#[inline(always)]
pub(crate) fn load256(b: &[u8; 32]) -> __m256i {
    // SAFETY: an unaligned 32-byte load from a 32-byte array; reached only from functions
    // compiled with AVX (the wide GCM kernels).
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline(always)]
pub(crate) fn store256(b: &mut [u8; 32], v: __m256i) {
    // SAFETY: an unaligned 32-byte store to a 32-byte array; AVX as for `load256`.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

#[inline(always)]
pub(crate) fn load512(b: &[u8; 64]) -> __m512i {
    // SAFETY: an unaligned 64-byte load from a 64-byte array; reached only from functions
    // compiled with AVX-512F (the 16-lane SHA-1 kernel).
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[inline(always)]
pub(crate) fn store512(b: &mut [u8; 64], v: __m512i) {
    // SAFETY: an unaligned 64-byte store to a 64-byte array; AVX-512F as for `load512`.
    unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
}

/// Four 128-bit registers side by side in one 512-bit register, the first in the low bits.
#[inline(always)]
pub(crate) fn quad(q: [__m128i; 4]) -> __m512i {
    // SAFETY: register operations only; reached only from functions compiled with
    // AVX-512F (the VAES CBC and 16-lane HMAC kernels).
    unsafe {
        let v = _mm512_castsi128_si512(q[0]);
        let v = _mm512_inserti32x4::<1>(v, q[1]);
        let v = _mm512_inserti32x4::<2>(v, q[2]);
        _mm512_inserti32x4::<3>(v, q[3])
    }
}

/// The byte mask of the `i`-th 64-byte piece of `len` bytes (bit b: byte 64i + b exists).
#[inline(always)]
pub(crate) fn piece_mask(len: usize, i: usize) -> u64 {
    let n = len.saturating_sub(64 * i).min(64);
    if n == 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Bytes `64i ..` of `bytes` (at most 64 of them), zero past its end.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) fn load_piece(bytes: &[u8], i: usize) -> __m512i {
    let m = piece_mask(bytes.len(), i);
    if m == 0 {
        return _mm512_setzero_si512();
    }
    // SAFETY: a set mask bit means byte 64i + b < bytes.len(), so the piece starts inside
    // `bytes` and the masked load touches only bytes inside it.
    unsafe { _mm512_maskz_loadu_epi8(m, bytes.as_ptr().add(64 * i).cast()) }
}

/// Store `v` over bytes `64i ..` of `bytes`, none past its end.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) fn store_piece(bytes: &mut [u8], i: usize, v: __m512i) {
    let m = piece_mask(bytes.len(), i);
    if m == 0 {
        return;
    }
    // SAFETY: as `load_piece`: the masked store writes only bytes inside `bytes`.
    unsafe { _mm512_mask_storeu_epi8(bytes.as_mut_ptr().add(64 * i).cast(), m, v) }
}
