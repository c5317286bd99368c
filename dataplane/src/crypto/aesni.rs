//! AES-NI and VAES kernels for AES-CBC.
//!
//! CBC encryption is a serial chain inside one packet — each block waits for the previous
//! one's ~4-cycle AESENC latency ten or more times — so one packet cannot fill the AES unit.
//! [`cbc_encrypt_many`] runs up to [`LANES`] independent packets in lockstep (intel-ipsec-mb's
//! "multi-buffer" idea), refilling a lane with the next packet when one finishes; on a CPU
//! with VAES and AVX-512F, groups of [`WIDE_MIN`] to [`WIDE_LANES`] packets of similar
//! lengths go instead to a kernel with four packets per 512-bit register and 16 in lockstep
//! (`wide_pays`). CBC
//! decryption has no such chain: [`cbc_decrypt`] works on 16 blocks of one packet at a time
//! on 512-bit registers (8 on 128-bit ones without VAES).
//!
//! Constant time: AES-NI instructions only (the key expansion too, through AESKEYGENASSIST),
//! no tables, no branches or memory indices that depend on keys or data; lengths and lane
//! bookkeeping are public.
//!
//! `unsafe` here is limited to the `core::arch` intrinsics: every function that uses them is
//! `#[target_feature(enable = "aes,sse2")]` and is reached only through an [`AesNiKey`] or an
//! [`AesNiDecKey`], which exist only after runtime detection said the CPU has both features;
//! the wide kernels (`aes,sse2,avx512f,vaes`) are entered only after [`wide_available`] said
//! so too.
#![allow(unsafe_code)]

use super::simd::{load, load_piece, load512, quad, store, store_piece, store512};
use core::arch::x86_64::{
    __m128i, __m512i, _mm_aesdec_si128, _mm_aesdeclast_si128, _mm_aesenc_si128,
    _mm_aesenclast_si128, _mm_aesimc_si128, _mm_aeskeygenassist_si128, _mm_set_epi32,
    _mm_setzero_si128, _mm_xor_si128, _mm512_aesdec_epi128, _mm512_aesdeclast_epi128,
    _mm512_aesenc_epi128, _mm512_aesenclast_epi128, _mm512_alignr_epi64, _mm512_broadcast_i32x4,
    _mm512_extracti32x4_epi32, _mm512_setzero_si512, _mm512_xor_si512,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Packets encrypted in lockstep by [`cbc_encrypt_many`].
pub const LANES: usize = 8;
const BLOCK: usize = 16;

/// Packets encrypted in lockstep by the VAES kernel: four to a 512-bit register, four
/// registers.
pub const WIDE_LANES: usize = 16;

/// The fewest packets [`cbc_encrypt_many`] gives the VAES kernel. Measured with `cargo bench
/// -p xsec-benches --bench crypto_choice -- cbc-encrypt` on the AVX-512 Intel Xeon of
/// BENCHMARKS section 0, 32 packets per round, against the 128-bit kernel: 16 per call took
/// 0.42× its time at 1408 bytes and 0.59× at 64; 8 per call 0.75× and 1.06×; 4 per call
/// (forced, with this constant lowered) 1.4× and 1.9×.
pub const WIDE_MIN: usize = 8;

/// Whether the VAES kernel pays for packets of these block counts: a step of its 16 lanes
/// costs about as much as 7 blocks of the 128-bit kernel (26.6 against 4.0 ns at 1408
/// bytes, same benchmark), busy or not, and it runs as many steps as the longest packet has
/// blocks, while the 128-bit kernel refills a lane as soon as its packet ends. So a group as
/// mixed as IMIX's stays on the 128-bit kernel. The 8 blocks stand for the set-up, which
/// makes 8 packets of 64 bytes not worth it.
fn wide_pays(jobs: &[CbcJob<'_>]) -> bool {
    let (mut n, mut total, mut longest) = (0, 0, 0);
    for j in jobs {
        let b = j.data.len() / BLOCK;
        n += usize::from(b > 0);
        total += b;
        longest = longest.max(b);
    }
    n >= WIDE_MIN && 7 * longest + 8 <= total
}

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse2")
}

/// Whether this CPU has VAES on 512-bit registers (AVX-512F), for the wide kernel.
pub fn wide_available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("vaes")
}

/// An expanded AES key (128, 192 or 256 bits) for encryption: the round keys of FIPS-197
/// §5.2. Zeroized on drop. Decryption has its own type, [`AesNiDecKey`]: an SA encrypts or
/// decrypts, never both, and keeping one schedule halves the memory of its key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesNiKey {
    enc: [[u8; 16]; 15],
    rounds: usize,
}

/// An expanded AES key for decryption: the round keys of the equivalent inverse cipher
/// (FIPS-197 §5.3.5), for [`cbc_decrypt`]. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesNiDecKey {
    dec: [[u8; 16]; 15],
    rounds: usize,
}

impl core::fmt::Debug for AesNiKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AesNiKey(AES-{}, <secret>)", (self.rounds - 6) * 32)
    }
}

impl core::fmt::Debug for AesNiDecKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AesNiDecKey(AES-{}, <secret>)", (self.rounds - 6) * 32)
    }
}

impl AesNiKey {
    /// The encryption round keys (FIPS-197 §5.2), `rounds + 1` of them: for other AES-NI
    /// kernels of this crate (AES-GCM) that need no schedule of their own.
    pub(crate) fn enc_round_keys(&self) -> &[[u8; 16]] {
        &self.enc[..=self.rounds]
    }

    /// Expand `key` (16, 24 or 32 bytes). `None` for another length or a CPU without AES-NI.
    pub fn new(key: &[u8]) -> Option<AesNiKey> {
        if !matches!(key.len(), 16 | 24 | 32) || !available() {
            return None;
        }
        let mut k = AesNiKey {
            enc: [[0; 16]; 15],
            rounds: key.len() / 4 + 6,
        };
        // SAFETY: `available()` confirmed AES-NI and SSE2, the features `expand` enables.
        unsafe { expand(key, &mut k) };
        Some(k)
    }
}

impl AesNiDecKey {
    /// Expand `key` (16, 24 or 32 bytes) for decryption. `None` for another length or a CPU
    /// without AES-NI.
    pub fn new(key: &[u8]) -> Option<AesNiDecKey> {
        let enc = AesNiKey::new(key)?;
        let mut k = AesNiDecKey {
            dec: [[0; 16]; 15],
            rounds: enc.rounds,
        };
        // SAFETY: `enc` exists, so AES-NI and SSE2 were detected: the features `invert`
        // enables.
        unsafe { invert(&enc, &mut k) };
        Some(k)
    }
}

/// FIPS-197 §5.2 key expansion, word by word; SubWord/RotWord come from AESKEYGENASSIST
/// (with round constant 0; the real one is xored in here) so no S-box table is touched.
#[target_feature(enable = "aes,sse2")]
unsafe fn expand(key: &[u8], k: &mut AesNiKey) {
    const RCON: [u32; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
    let nk = key.len() / 4;
    let total = 4 * (k.rounds + 1);
    let mut w = [0u32; 60];
    for (i, c) in key.chunks_exact(4).enumerate() {
        w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in nk..total {
        let mut t = w[i - 1];
        if i % nk == 0 || (nk > 6 && i % nk == 4) {
            // dword 0 of the result is SubWord(X1), dword 1 is RotWord(SubWord(X1))
            let r = _mm_aeskeygenassist_si128::<0>(_mm_set_epi32(0, 0, t as i32, 0));
            let mut out = [0u8; 16];
            store(&mut out, r);
            t = if i % nk == 0 {
                u32::from_le_bytes([out[4], out[5], out[6], out[7]]) ^ RCON[i / nk - 1]
            } else {
                u32::from_le_bytes([out[0], out[1], out[2], out[3]])
            };
            out.zeroize();
        }
        w[i] = w[i - nk] ^ t;
    }
    for r in 0..=k.rounds {
        for j in 0..4 {
            k.enc[r][4 * j..4 * j + 4].copy_from_slice(&w[4 * r + j].to_le_bytes());
        }
    }
    w.zeroize();
}

/// The equivalent inverse cipher's round keys (FIPS-197 §5.3.5): reversed order,
/// InvMixColumns applied to all but the first and the last.
#[target_feature(enable = "aes,sse2")]
unsafe fn invert(e: &AesNiKey, k: &mut AesNiDecKey) {
    k.dec[0] = e.enc[e.rounds];
    k.dec[e.rounds] = e.enc[0];
    for r in 1..e.rounds {
        let v = _mm_aesimc_si128(load(&e.enc[e.rounds - r]));
        store(&mut k.dec[r], v);
    }
}

/// One packet for [`cbc_encrypt_many`]: encrypted in place, chained from `iv`.
#[derive(Debug)]
pub struct CbcJob<'a> {
    pub iv: [u8; 16],
    pub data: &'a mut [u8],
}

/// Encrypt every job's data in place with AES-CBC, up to [`LANES`] jobs at once. Returns
/// `false` (and encrypts nothing) if a job's length is not a multiple of 16.
pub fn cbc_encrypt_many(key: &AesNiKey, jobs: &mut [CbcJob<'_>]) -> bool {
    if jobs.iter().any(|j| !j.data.len().is_multiple_of(BLOCK)) {
        return false;
    }
    // as many lanes as there are packets, up to LANES: an idle lane costs as much as a busy one
    let n = jobs.iter().filter(|j| !j.data.is_empty()).count();
    if jobs.len() <= WIDE_LANES && wide_pays(jobs) && wide_available() {
        // SAFETY: an `AesNiKey` exists only if AES-NI and SSE2 were detected;
        // `wide_available()` confirmed AVX-512F and VAES.
        unsafe { encrypt_wide(key, jobs) };
        return true;
    }
    encrypt_narrow(key, jobs, n);
    true
}

/// [`cbc_encrypt_many`] with the 128-bit kernel whatever the CPU has (for the benchmark
/// that sets [`WIDE_MIN`]).
pub fn cbc_encrypt_narrow(key: &AesNiKey, jobs: &mut [CbcJob<'_>]) -> bool {
    if jobs.iter().any(|j| !j.data.len().is_multiple_of(BLOCK)) {
        return false;
    }
    let n = jobs.iter().filter(|j| !j.data.is_empty()).count();
    encrypt_narrow(key, jobs, n);
    true
}

/// The 128-bit kernel for `jobs`, `n` of them not empty, with as many lanes as needed up to
/// [`LANES`] (lanes are refilled as packets end).
fn encrypt_narrow(key: &AesNiKey, jobs: &mut [CbcJob<'_>], n: usize) {
    // SAFETY: an `AesNiKey` exists only if AES-NI and SSE2 were detected.
    unsafe {
        match n {
            0 => {}
            1 => encrypt_lanes::<1>(key, jobs),
            2 => encrypt_lanes::<2>(key, jobs),
            3 | 4 => encrypt_lanes::<4>(key, jobs),
            _ => encrypt_lanes::<LANES>(key, jobs),
        }
    }
}

#[target_feature(enable = "aes,sse2")]
unsafe fn encrypt_lanes<const W: usize>(key: &AesNiKey, jobs: &mut [CbcJob<'_>]) {
    let n = key.rounds;
    let mut rk = [_mm_setzero_si128(); 15];
    for (r, k) in rk.iter_mut().zip(&key.enc).take(n + 1) {
        *r = load(k);
    }
    // lane l works on job `job[l]` at byte `pos[l]`; `state[l]` is its chaining value
    let mut job = [usize::MAX; W];
    let mut pos = [0usize; W];
    let mut state = [_mm_setzero_si128(); W];
    let mut next = 0;
    let mut active = 0;
    for l in 0..W {
        active += usize::from(refill(jobs, &mut next, l, &mut job, &mut state));
    }
    while active > 0 {
        let mut s = [_mm_setzero_si128(); W];
        for l in 0..W {
            if let Some(j) = jobs.get(job[l])
                && let Some(b) = j.data.get(pos[l]..pos[l] + BLOCK)
                && let Ok(b) = <&[u8; 16]>::try_from(b)
            {
                s[l] = _mm_xor_si128(_mm_xor_si128(load(b), state[l]), rk[0]);
            }
        }
        for k in &rk[1..n] {
            for x in &mut s {
                *x = _mm_aesenc_si128(*x, *k);
            }
        }
        for l in 0..W {
            let c = _mm_aesenclast_si128(s[l], rk[n]);
            let Some(j) = jobs.get_mut(job[l]) else {
                continue;
            };
            if let Some(b) = j.data.get_mut(pos[l]..pos[l] + BLOCK)
                && let Ok(b) = <&mut [u8; 16]>::try_from(b)
            {
                store(b, c);
            }
            state[l] = c;
            pos[l] += BLOCK;
            if pos[l] >= j.data.len() {
                pos[l] = 0;
                if !refill(jobs, &mut next, l, &mut job, &mut state) {
                    active -= 1;
                }
            }
        }
    }
}

/// Up to [`WIDE_LANES`] packets, one per lane (four lanes to a register), each from its
/// own IV: a step encrypts the next block of every packet that has one; a packet that has
/// run out leaves its lane idle.
///
/// The packets' bytes go through a staging area, one 64-byte line per lane, four blocks at a
/// time. Frames from AF_XDP (and the replay backend) are 4 KiB apart with the packet at the
/// same offset in each, so the 16 lanes' current lines all fall in one L1 set, more of them
/// than it has ways: working on the frames directly, every block's load and store missed L1
/// (the kernel took 44 % of a worker's time at 1420-byte packets, more than the HMAC). The
/// stage's lines are distinct sets; each frame line is now read once and written once.
// SAFETY: AES-NI, SSE2, AVX-512F and VAES; entered only from `cbc_encrypt_many` after
// `wide_available()`, with a key that exists only after `available()`.
#[target_feature(enable = "aes,sse2,avx512f,vaes")]
unsafe fn encrypt_wide(key: &AesNiKey, jobs: &mut [CbcJob<'_>]) {
    const LINE: usize = 4 * BLOCK;
    let n = key.rounds;
    let mut rk = [_mm512_setzero_si512(); 15];
    for (r, k) in rk.iter_mut().zip(&key.enc).take(n + 1) {
        *r = _mm512_broadcast_i32x4(load(k));
    }
    let longest = jobs.iter().map(|j| j.data.len()).max().unwrap_or(0);
    let mut iv = [_mm_setzero_si128(); WIDE_LANES];
    for (v, j) in iv.iter_mut().zip(jobs.iter()) {
        *v = load(&j.iv);
    }
    let mut state = [_mm512_setzero_si512(); 4];
    for (s, q) in state.iter_mut().zip(iv.chunks_exact(4)) {
        *s = quad([q[0], q[1], q[2], q[3]]);
    }
    let mut stage = [[0u8; LINE]; WIDE_LANES];
    let mut pos = 0;
    while pos < longest {
        // this line of every lane into the stage (a lane past its end keeps stale bytes,
        // which are encrypted into its idle lane and never copied back)
        let mut have = [0usize; WIDE_LANES];
        for ((st, h), j) in stage.iter_mut().zip(have.iter_mut()).zip(jobs.iter()) {
            let src = j.data.get(pos..).unwrap_or_default();
            if let Some(line) = src.first_chunk::<LINE>() {
                // one 512-bit move (a plain copy became a memcpy call per lane)
                store512(st, load512(line));
                *h = LINE;
            } else {
                st[..src.len()].copy_from_slice(src);
                *h = src.len();
            }
        }
        for q in 0..(longest - pos).min(LINE) / BLOCK {
            let mut x = [_mm512_setzero_si512(); 4];
            for ((x, s), lanes) in x.iter_mut().zip(&state).zip(stage.chunks_exact(4)) {
                let p = [0, 1, 2, 3].map(|i| load(&lanes[i].as_chunks::<BLOCK>().0[q]));
                *x = _mm512_xor_si512(_mm512_xor_si512(quad(p), *s), rk[0]);
            }
            for k in &rk[1..n] {
                for v in &mut x {
                    *v = _mm512_aesenc_epi128(*v, *k);
                }
            }
            for ((x, s), lanes) in x
                .iter()
                .zip(state.iter_mut())
                .zip(stage.chunks_exact_mut(4))
            {
                // an idle lane's state is never used again
                let c = _mm512_aesenclast_epi128(*x, rk[n]);
                *s = c;
                let [l0, l1, l2, l3] = lanes else {
                    continue;
                };
                store(
                    &mut l0.as_chunks_mut::<BLOCK>().0[q],
                    _mm512_extracti32x4_epi32::<0>(c),
                );
                store(
                    &mut l1.as_chunks_mut::<BLOCK>().0[q],
                    _mm512_extracti32x4_epi32::<1>(c),
                );
                store(
                    &mut l2.as_chunks_mut::<BLOCK>().0[q],
                    _mm512_extracti32x4_epi32::<2>(c),
                );
                store(
                    &mut l3.as_chunks_mut::<BLOCK>().0[q],
                    _mm512_extracti32x4_epi32::<3>(c),
                );
            }
        }
        for ((st, h), j) in stage.iter().zip(have).zip(jobs.iter_mut()) {
            if let Some(dst) = j.data.get_mut(pos..pos + h) {
                if let Some(line) = dst.first_chunk_mut::<LINE>() {
                    store512(line, load512(st));
                } else {
                    dst.copy_from_slice(&st[..h]);
                }
            }
        }
        pos += LINE;
    }
}

/// Put the next non-empty job (from `*next`) in lane `l`; `false` when none is left.
#[inline(always)]
fn refill<const W: usize>(
    jobs: &[CbcJob<'_>],
    next: &mut usize,
    l: usize,
    job: &mut [usize; W],
    state: &mut [__m128i; W],
) -> bool {
    while *next < jobs.len() && jobs[*next].data.is_empty() {
        *next += 1;
    }
    if let Some(j) = jobs.get(*next) {
        job[l] = *next;
        state[l] = load(&j.iv);
        *next += 1;
        true
    } else {
        job[l] = usize::MAX;
        false
    }
}

/// Decrypt `data` (a multiple of 16 bytes) in place with AES-CBC from `iv`: 16 blocks at a
/// time on a CPU with VAES and AVX-512F/BW, 8 otherwise. Returns `false` (and decrypts
/// nothing) for a length that is not a multiple of 16.
pub fn cbc_decrypt(key: &AesNiDecKey, iv: &[u8; 16], data: &mut [u8]) -> bool {
    if !data.len().is_multiple_of(BLOCK) {
        return false;
    }
    if wide_available() && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: an `AesNiDecKey` exists only if AES-NI and SSE2 were detected; AVX-512F/BW
        // and VAES were just confirmed.
        unsafe { decrypt_wide(key, iv, data) };
    } else {
        // SAFETY: an `AesNiDecKey` exists only if AES-NI and SSE2 were detected.
        unsafe { decrypt_blocks(key, iv, data) };
    }
    true
}

/// [`cbc_decrypt`] with the 128-bit kernel whatever the CPU has: ESP's bodies under 256 bytes
/// (under one step of the 512-bit kernel), and the tests that check one kernel against the
/// other.
pub fn cbc_decrypt_narrow(key: &AesNiDecKey, iv: &[u8; 16], data: &mut [u8]) -> bool {
    if !data.len().is_multiple_of(BLOCK) {
        return false;
    }
    // SAFETY: an `AesNiDecKey` exists only if AES-NI and SSE2 were detected.
    unsafe { decrypt_blocks(key, iv, data) };
    true
}

/// CBC decryption of one packet on 512-bit registers, 16 blocks a step in four VAES chains
/// of four blocks. A block's chaining value (the ciphertext block before it) is put in its
/// lane by one VALIGNQ of the step's registers, and goes into the last round key, so
/// AESDECLAST gives the plaintext. The last step (under 16 blocks) is loaded and stored
/// through byte masks. (RustCrypto's VAES backend, which this replaces for ESP, copied each
/// batch of ciphertext blocks aside to chain them: a fifth of its time at 1420 bytes.)
// SAFETY: AES-NI, VAES, AVX-512F/BW; entered only from `cbc_decrypt` after it checked them.
#[target_feature(enable = "aes,sse2,avx512f,avx512bw,vaes")]
unsafe fn decrypt_wide(key: &AesNiDecKey, iv: &[u8; 16], data: &mut [u8]) {
    const STEP: usize = 16 * BLOCK;
    let n = key.rounds;
    let mut rk = [_mm512_setzero_si512(); 15];
    for (r, k) in rk.iter_mut().zip(&key.dec).take(n + 1) {
        *r = _mm512_broadcast_i32x4(load(k));
    }
    let mut prev = _mm512_broadcast_i32x4(load(iv));
    let (steps, rest) = data.as_chunks_mut::<STEP>();
    for st in steps {
        let (q, _) = st.as_chunks_mut::<64>();
        let c = [
            load512(&q[0]),
            load512(&q[1]),
            load512(&q[2]),
            load512(&q[3]),
        ];
        let p = dec_chains(&rk, n, &c, prev);
        for (b, v) in q.iter_mut().zip(p) {
            store512(b, v);
        }
        prev = c[3];
    }
    match rest.len().div_ceil(64) {
        0 => {}
        1 => dec_rest::<1>(&rk, n, rest, prev),
        2 => dec_rest::<2>(&rk, n, rest, prev),
        3 => dec_rest::<3>(&rk, n, rest, prev),
        _ => dec_rest::<4>(&rk, n, rest, prev),
    }
}

/// `N` registers of four ciphertext blocks through the inverse cipher (round keys `rk`,
/// `n` rounds), each block XORed with the one before it (`prev`'s last lane before the
/// first): the plaintext.
#[target_feature(enable = "aes,sse2,avx512f,avx512bw,vaes")]
#[inline]
fn dec_chains<const N: usize>(
    rk: &[__m512i; 15],
    n: usize,
    c: &[__m512i; N],
    prev: __m512i,
) -> [__m512i; N] {
    let chain: [__m512i; N] = core::array::from_fn(|i| {
        _mm512_alignr_epi64::<6>(c[i], if i == 0 { prev } else { c[i - 1] })
    });
    let mut x = c.map(|v| _mm512_xor_si512(v, rk[0]));
    for k in &rk[1..n] {
        for v in &mut x {
            *v = _mm512_aesdec_epi128(*v, *k);
        }
    }
    for (v, ch) in x.iter_mut().zip(chain) {
        *v = _mm512_aesdeclast_epi128(*v, _mm512_xor_si512(rk[n], ch));
    }
    x
}

/// The last blocks of a packet (fewer than 16, in `N` = ⌈len / 64⌉ registers), loaded and
/// stored through byte masks.
#[target_feature(enable = "aes,sse2,avx512f,avx512bw,vaes")]
#[inline]
fn dec_rest<const N: usize>(rk: &[__m512i; 15], n: usize, rest: &mut [u8], prev: __m512i) {
    let c: [__m512i; N] = core::array::from_fn(|i| load_piece(rest, i));
    let p = dec_chains(rk, n, &c, prev);
    for (i, v) in p.into_iter().enumerate() {
        store_piece(rest, i, v);
    }
}

/// CBC decryption on 128-bit registers, 8 blocks at a time (CBC decryption has no chain
/// between blocks): the rounds written out for the key's length.
#[target_feature(enable = "aes,sse2")]
unsafe fn decrypt_blocks(key: &AesNiDecKey, iv: &[u8; 16], data: &mut [u8]) {
    match key.rounds {
        10 => decrypt_blocks_nr::<10>(key, iv, data),
        12 => decrypt_blocks_nr::<12>(key, iv, data),
        _ => decrypt_blocks_nr::<14>(key, iv, data),
    }
}

/// [`decrypt_blocks`] for `NR` rounds. Every step runs all 8 lanes, the ones past a short
/// packet's last block on zeros: the rounds' latency, not their count, bounds a step, and a
/// fixed width keeps the lanes in registers.
#[target_feature(enable = "aes,sse2")]
fn decrypt_blocks_nr<const NR: usize>(key: &AesNiDecKey, iv: &[u8; 16], data: &mut [u8]) {
    let mut rk = [_mm_setzero_si128(); 15];
    for (r, k) in rk.iter_mut().zip(&key.dec).take(NR + 1) {
        *r = load(k);
    }
    let mut prev = load(iv);
    for chunk in data.chunks_mut(8 * BLOCK) {
        let mut c = [_mm_setzero_si128(); 8];
        let (blocks, _) = chunk.as_chunks::<BLOCK>();
        let n = blocks.len();
        for (v, b) in c.iter_mut().zip(blocks) {
            *v = load(b);
        }
        let mut x = c;
        for v in &mut x {
            *v = _mm_xor_si128(*v, rk[0]);
        }
        for k in &rk[1..NR] {
            for v in &mut x {
                *v = _mm_aesdec_si128(*v, *k);
            }
        }
        let (out, _) = chunk.as_chunks_mut::<BLOCK>();
        for (i, b) in out.iter_mut().enumerate() {
            let chain = if i == 0 { prev } else { c[i - 1] };
            store(b, _mm_xor_si128(_mm_aesdeclast_si128(x[i], rk[NR]), chain));
        }
        if let Some(&last) = c.get(n.wrapping_sub(1)) {
            prev = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::EncAlg;
    use proptest::prelude::*;

    use crate::kat::unhex;

    /// RFC 3602 §4 cases 1–4 (the same file the other KATs read).
    #[test]
    fn rfc3602_vectors_single_and_multi_lane() {
        if !available() {
            // the kernels are unusable here, and must say so rather than misbehave
            assert!(AesNiKey::new(&[0u8; 16]).is_none());
            return;
        }
        let text = include_str!("../../tests/vectors/rfc3602_cbc.txt");
        let mut cases = vec![];
        let mut cur: std::collections::HashMap<&str, Vec<u8>> = Default::default();
        for line in text.lines().chain(std::iter::once("")) {
            if line.trim().is_empty() {
                if cur.len() >= 4 {
                    cases.push(std::mem::take(&mut cur));
                }
                cur.clear();
                continue;
            }
            if let Some((k, v)) = line.split_once(" = ")
                && matches!(k, "key" | "iv" | "plaintext" | "ciphertext")
            {
                cur.insert(k, unhex(v.trim()));
            }
        }
        assert_eq!(cases.len(), 4);
        let mut bufs: Vec<Vec<u8>> = cases.iter().map(|c| c["plaintext"].clone()).collect();
        // each on its own, then all four in one multi-lane call (different keys: one per call)
        for (c, buf) in cases.iter().zip(bufs.iter_mut()) {
            let key = AesNiKey::new(&c["key"]).expect("key");
            let dec = AesNiDecKey::new(&c["key"]).expect("key");
            let iv: [u8; 16] = c["iv"].as_slice().try_into().expect("iv");
            let mut jobs = [CbcJob {
                iv,
                data: &mut buf[..],
            }];
            assert!(cbc_encrypt_many(&key, &mut jobs));
            assert_eq!(buf, &c["ciphertext"]);
            assert!(cbc_decrypt(&dec, &iv, buf));
            assert_eq!(buf, &c["plaintext"]);
        }
    }

    fn alg(n: usize) -> EncAlg {
        match n {
            16 => EncAlg::AesCbc128,
            24 => EncAlg::AesCbc192,
            _ => EncAlg::AesCbc256,
        }
    }

    #[test]
    fn the_wide_kernel_gets_similar_lengths_only() {
        let mut bufs: Vec<Vec<u8>> = vec![];
        let mut pays = |blocks: &[usize]| {
            bufs = blocks.iter().map(|&b| vec![0u8; b * 16]).collect();
            let jobs: Vec<CbcJob<'_>> = bufs
                .iter_mut()
                .map(|d| CbcJob {
                    iv: [0; 16],
                    data: &mut d[..],
                })
                .collect();
            wide_pays(&jobs)
        };
        assert!(pays(&[88; 16]));
        assert!(pays(&[88; 8]));
        assert!(pays(&[5; 16]));
        // too few, too small, or too mixed (IMIX: 64, 576 and 1420 bytes)
        assert!(!pays(&[88; 7]));
        assert!(!pays(&[5; 8]));
        assert!(!pays(&[
            5, 37, 5, 5, 37, 5, 89, 5, 5, 37, 5, 5, 37, 5, 89, 5
        ]));
        // empty jobs do not count as lanes
        assert!(!pays(&[88, 88, 88, 88, 88, 88, 88, 0, 0, 0]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any number of jobs of any block lengths (including empty ones), every key size:
        /// identical to the RustCrypto `cbc` path, and decryption inverts it.
        #[test]
        fn matches_the_portable_cbc(
            key_len in prop::sample::select(vec![16usize, 24, 32]),
            key_seed in any::<u8>(),
            lens in prop::collection::vec(0usize..40, 0..20),
            seed in any::<u8>(),
        ) {
            prop_assume!(available());
            let key: Vec<u8> = (0..key_len).map(|i| (i as u8).wrapping_mul(31) ^ key_seed).collect();
            let k = AesNiKey::new(&key).expect("key");
            let d = AesNiDecKey::new(&key).expect("key");
            let portable_enc = crate::crypto::cbc_for_test(alg(key_len), &key, true);
            let portable_dec = crate::crypto::cbc_for_test(alg(key_len), &key, false);
            let mut bufs: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(j, &n)| (0..n * 16).map(|i| (i as u8) ^ seed ^ (j as u8).wrapping_mul(7)).collect())
                .collect();
            let ivs: Vec<[u8; 16]> = (0..lens.len()).map(|j| [j as u8 ^ seed; 16]).collect();
            let mut want = bufs.clone();
            for (w, iv) in want.iter_mut().zip(&ivs) {
                prop_assert!(portable_enc.encrypt(iv, w));
            }
            let plain = bufs.clone();
            let mut jobs: Vec<CbcJob<'_>> = bufs
                .iter_mut()
                .zip(&ivs)
                .map(|(b, iv)| CbcJob { iv: *iv, data: &mut b[..] })
                .collect();
            prop_assert!(cbc_encrypt_many(&k, &mut jobs));
            prop_assert_eq!(&bufs, &want);
            // the 128-bit kernel too, which the call above skips for 9 or more packets where
            // the CPU has VAES
            let mut narrow = plain.clone();
            let mut jobs: Vec<CbcJob<'_>> = narrow
                .iter_mut()
                .zip(&ivs)
                .map(|(b, iv)| CbcJob { iv: *iv, data: &mut b[..] })
                .collect();
            let busy = jobs.iter().filter(|j| !j.data.is_empty()).count();
            encrypt_narrow(&k, &mut jobs, busy);
            prop_assert_eq!(&narrow, &want);
            for ((b, iv), p) in bufs.iter_mut().zip(&ivs).zip(&plain) {
                let mut q = b.clone();
                prop_assert!(portable_dec.decrypt(iv, &mut q));
                prop_assert_eq!(&q, p);
                // the 128-bit kernel, and `cbc_decrypt` (the 512-bit one where the CPU has it)
                let mut r = b.clone();
                prop_assert!(cbc_decrypt_narrow(&d, iv, &mut r));
                prop_assert_eq!(&r, p);
                prop_assert!(cbc_decrypt(&d, iv, b));
                prop_assert_eq!(b, p);
            }
        }
    }

    /// Every block count to 100 (whole 16-block steps and every tail) and each key size: the
    /// decryption kernels give RustCrypto's plaintext, and touch no byte outside the data.
    #[test]
    fn decrypt_every_length_matches_the_portable_cbc() {
        // no silent pass: without AES-NI the kernels cannot be compared here
        assert!(
            available(),
            "this CPU lacks AES-NI: run the tests on one that has it"
        );
        for key_len in [16usize, 24, 32] {
            let key: Vec<u8> = (0..key_len)
                .map(|i| (i as u8).wrapping_mul(13) ^ 0x5c)
                .collect();
            let d = AesNiDecKey::new(&key).expect("key");
            let portable_enc = crate::crypto::cbc_for_test(alg(key_len), &key, true);
            let iv = [0xa5u8; 16];
            for blocks in 0..=100usize {
                let plain: Vec<u8> = (0..blocks * 16).map(|i| (i * 7 + blocks) as u8).collect();
                let mut ct = plain.clone();
                assert!(portable_enc.encrypt(&iv, &mut ct));
                // guard bytes on both sides of the data
                let mut framed = vec![0xeeu8; blocks * 16 + 128];
                framed[64..64 + blocks * 16].copy_from_slice(&ct);
                let mut narrow = framed.clone();
                assert!(cbc_decrypt(&d, &iv, &mut framed[64..64 + blocks * 16]));
                assert!(cbc_decrypt_narrow(
                    &d,
                    &iv,
                    &mut narrow[64..64 + blocks * 16]
                ));
                assert_eq!(
                    &framed[64..64 + blocks * 16],
                    &plain[..],
                    "AES-{} {blocks}",
                    key_len * 8
                );
                assert_eq!(framed, narrow);
                assert!(
                    framed[..64]
                        .iter()
                        .chain(&framed[64 + blocks * 16..])
                        .all(|&b| b == 0xee)
                );
            }
        }
    }

    #[test]
    fn bad_lengths_are_refused_untouched() {
        let Some(k) = AesNiKey::new(&[7u8; 16]) else {
            assert!(!available(), "AES-NI present but no key");
            return;
        };
        let mut a = [1u8; 32];
        let mut b = [2u8; 17];
        let mut jobs = [
            CbcJob {
                iv: [0; 16],
                data: &mut a[..],
            },
            CbcJob {
                iv: [0; 16],
                data: &mut b[..],
            },
        ];
        assert!(!cbc_encrypt_many(&k, &mut jobs));
        assert_eq!(a, [1u8; 32], "nothing encrypted when one job is bad");
        let d = AesNiDecKey::new(&[7u8; 16]).expect("key");
        assert!(!cbc_decrypt(&d, &[0; 16], &mut b));
        assert_eq!(b, [2u8; 17], "nothing decrypted");
        assert!(AesNiKey::new(&[0u8; 20]).is_none());
        assert!(AesNiDecKey::new(&[0u8; 20]).is_none());
        assert!(!format!("{k:?}").contains("07"));
        assert!(!format!("{d:?}").contains("07"));
    }
}
