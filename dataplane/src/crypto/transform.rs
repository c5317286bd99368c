//! The per-SA ESP transform: seal (outbound) and open (inbound) one ESP packet in place.
//!
//! The caller lays the packet out; the transform fills in the IV and the ICV and encrypts or
//! verifies-then-decrypts. Layout of the `len` bytes at `esp` in `buf`:
//!
//! ```text
//! | SPI | Seq | IV (iv_len) | payload ‖ padding ‖ pad len ‖ next hdr | ICV (icv_len) |
//!   ^esp      ^esp+8        ^pt                                       ^icv        ^esp+len
//! ```
//!
//! IVs: AES-GCM/GMAC and ChaCha20-Poly1305 use the 64-bit sequence number XOR a random
//! per-SA mask (unique per key, RFC 4106 §3.1, RFC 7634 §2, as Linux's seqiv does); CBC
//! uses IV = E_K(per-SA random block XOR sequence number) (NIST SP 800-38A Appendix C:
//! unpredictable without an RNG call per packet).

use super::aead::{AeadKey, TAG_LEN};
use super::alg::{self, AuthAlg, CryptoError, EncAlg};
use super::cbc::CbcKey;
use super::integ::{GROUP, Integ};
use crate::stats::DropReason;
use crate::wire::esp::HEADER_LEN;

/// Largest IV any transform carries (AES-CBC).
pub const MAX_IV_LEN: usize = 16;
/// Largest ICV any transform appends (HMAC-SHA-512-256).
pub const MAX_ICV_LEN: usize = 32;
enum Kind {
    /// AES-GCM or ChaCha20-Poly1305: encrypts the payload, authenticates header + payload.
    Aead { key: AeadImpl, salt: [u8; 4] },
    /// AES-GMAC (RFC 4543): payload in clear, everything authenticated.
    Gmac { key: AeadImpl, salt: [u8; 4] },
    /// CBC encryption then HMAC over header, IV and ciphertext.
    Cbc {
        /// RustCrypto's key: for a CBC transform without a kernel key (3DES, or a CPU
        /// without AES-NI; inbound, without VAES): an SA keeps one key schedule.
        key: Option<Box<CbcKey>>,
        integ: Integ,
        iv_seed: [u8; 16],
        /// Outbound AES on a CPU with AES-NI: the multi-buffer kernel's key schedule, for
        /// bursts ([`Transform::defer_seal`]) and single packets ([`Transform::seal`]).
        #[cfg(target_arch = "x86_64")]
        ni: Option<Box<super::aesni::AesNiKey>>,
        /// Inbound AES on a CPU with VAES and AVX-512F/BW: the key schedule of the
        /// decryption kernels, the 512-bit one ([`super::aesni::cbc_decrypt`]) for bodies of
        /// 256 bytes or more (CBC + HMAC-SHA1 decapsulation took 0.84× the cycles at 1420 B
        /// with it than with RustCrypto: `docs/bench/ab/2026-12-06.txt`), the 128-bit one
        /// below (level with RustCrypto at 64 B), so that the SA need not keep RustCrypto's
        /// key as well.
        #[cfg(target_arch = "x86_64")]
        ni_open: Option<Box<super::aesni::AesNiDecKey>>,
    },
    /// NULL encryption with HMAC (RFC 2410).
    Null { integ: Integ },
    /// AH with AES-GMAC (RFC 4543 §4): the whole packet (as AH's ICV sees it) is the AAD of
    /// AES-GCM over an empty plaintext, under the nonce salt ‖ IV. Never an ESP transform.
    AhGmac { key: AeadImpl, salt: [u8; 4] },
}

/// The key of an AES-GCM or ChaCha20-Poly1305 transform: one of the two, never both (ring's
/// expanded key is 544 bytes, and the SAD holds millions of SAs).
enum AeadImpl {
    /// AES-128/256-GCM on a CPU with AES-NI and PCLMULQDQ: the `gcmni` kernels' key, which
    /// seal and open every packet in place of ring (faster at every size, even one packet
    /// per call: `cargo bench -p xsec-benches --bench gcm`).
    #[cfg(target_arch = "x86_64")]
    Ni(Box<super::gcmni::GcmKey>),
    /// ring (AES-128/256-GCM elsewhere, ChaCha20-Poly1305) or RustCrypto (AES-192-GCM).
    Portable(Box<AeadKey>),
}

impl AeadImpl {
    /// The `gcmni` kernel's key for AES-128/256-GCM and -GMAC on a CPU with AES-NI and
    /// PCLMULQDQ; ring's or RustCrypto's otherwise. `key` is the cipher key without salt.
    fn new(alg: EncAlg, key: &[u8]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if matches!(
            alg,
            EncAlg::AesGcm128 | EncAlg::AesGcm256 | EncAlg::AesGmac128 | EncAlg::AesGmac256
        ) && let Some(k) = super::gcmni::GcmKey::new(key)
        {
            return Some(AeadImpl::Ni(Box::new(k)));
        }
        Some(AeadImpl::Portable(Box::new(AeadKey::new(alg, key)?)))
    }

    /// GMAC (RFC 4543): the tag of AES-GCM over `aad` with nothing to encrypt. None if the
    /// key cannot (not reached for an AES key).
    #[inline]
    fn gmac(&self, nonce: [u8; 12], aad: &[u8]) -> Option<[u8; TAG_LEN]> {
        match self {
            #[cfg(target_arch = "x86_64")]
            AeadImpl::Ni(k) => {
                let mut t = [0u8; TAG_LEN];
                super::gcmni::seal_one(k, &nonce, aad, &mut [], &mut t);
                Some(t)
            }
            AeadImpl::Portable(k) => k.seal(nonce, aad, &mut []).ok(),
        }
    }

    /// GMAC: whether `tag` is [`gmac`](Self::gmac)'s tag of `aad` (constant time).
    #[inline]
    fn gmac_ok(&self, nonce: [u8; 12], aad: &[u8], tag: &[u8; TAG_LEN]) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            AeadImpl::Ni(k) => super::gcmni::open_one(k, &nonce, aad, &mut [], tag),
            AeadImpl::Portable(k) => k.open(nonce, aad, &mut tag.clone()).is_ok(),
        }
    }
}

/// An SA's crypto state, for one direction.
pub(crate) struct Transform {
    kind: Kind,
    enc: EncAlg,
    auth: AuthAlg,
    iv_len: u8,
    icv_len: u8,
    /// Payload + trailer is padded to a multiple of this (a power of two ≥ 4).
    align: u8,
    /// Mask XORed into the sequence number to form AEAD IVs (outbound).
    iv_mask: u64,
}

impl core::fmt::Debug for Transform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the keys.
        f.debug_struct("Transform")
            .field("enc", &self.enc)
            .field("auth", &self.auth)
            .field("iv_len", &self.iv_len)
            .field("icv_len", &self.icv_len)
            .finish_non_exhaustive()
    }
}

/// Build the AAD of an AEAD: SPI ‖ seq (8 bytes) or SPI ‖ seq_hi ‖ seq_lo with ESN
/// (RFC 4106 §5, RFC 7634 §2.1).
#[inline(always)]
fn aead_aad(spi: [u8; 4], seq: u64, esn: bool) -> ([u8; 12], usize) {
    // written as one 8-byte store and one of 4, the loads `gcmni` reads them back with (a
    // load across two stores waits for them to reach the cache)
    let second = if esn { (seq >> 32) as u32 } else { seq as u32 };
    let first = u64::from(u32::from_be_bytes(spi)) << 32 | u64::from(second);
    let mut a = [0u8; 12];
    a[..8].copy_from_slice(&first.to_be_bytes());
    if esn {
        a[8..].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 12)
    } else {
        (a, 8)
    }
}

#[inline(always)]
fn nonce(salt: [u8; 4], iv: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&salt);
    n[4..].copy_from_slice(&iv[..8]);
    n
}

impl Transform {
    /// Build the transform for one direction. `random` seeds the IV generator (16 bytes from
    /// a CSPRNG, fresh per SA).
    pub(crate) fn new(
        enc: EncAlg,
        enc_key: &[u8],
        auth: AuthAlg,
        auth_key: &[u8],
        outbound: bool,
        allow_legacy: bool,
        random: [u8; 16],
    ) -> Result<Self, CryptoError> {
        alg::check_algorithms(enc, auth, allow_legacy)?;
        alg::check_keys(enc, enc_key, auth, auth_key)?;
        let broken = || CryptoError::Refused {
            alg: enc.name(),
            reason: "key schedule failed",
        };
        let (key, salt) = enc_key.split_at(enc.key_len());
        let mut salt4 = [0u8; 4];
        if salt.len() == 4 {
            salt4.copy_from_slice(salt);
        }
        let kind = match enc {
            EncAlg::AesGcm128
            | EncAlg::AesGcm192
            | EncAlg::AesGcm256
            | EncAlg::ChaCha20Poly1305 => Kind::Aead {
                key: AeadImpl::new(enc, key).ok_or_else(broken)?,
                salt: salt4,
            },
            EncAlg::AesGmac128 | EncAlg::AesGmac192 | EncAlg::AesGmac256 => Kind::Gmac {
                key: AeadImpl::new(enc, key).ok_or_else(broken)?,
                salt: salt4,
            },
            EncAlg::AesCbc128 | EncAlg::AesCbc192 | EncAlg::AesCbc256 | EncAlg::TripleDesCbc => {
                #[cfg(target_arch = "x86_64")]
                let ni_open = (!outbound
                    && enc != EncAlg::TripleDesCbc
                    && super::aesni::wide_available()
                    && std::is_x86_feature_detected!("avx512bw"))
                .then(|| super::aesni::AesNiDecKey::new(key).map(Box::new))
                .flatten();
                #[cfg(target_arch = "x86_64")]
                let ni = (outbound && enc != EncAlg::TripleDesCbc)
                    .then(|| super::aesni::AesNiKey::new(key).map(Box::new))
                    .flatten();
                // RustCrypto's key only where no kernel key does its work
                #[cfg(target_arch = "x86_64")]
                let portable = ni_open.is_none() && ni.is_none();
                #[cfg(not(target_arch = "x86_64"))]
                let portable = true;
                Kind::Cbc {
                    key: if portable {
                        Some(Box::new(
                            CbcKey::new(enc, key, outbound).ok_or_else(broken)?,
                        ))
                    } else {
                        None
                    },
                    integ: Integ::new(auth, auth_key).ok_or_else(broken)?,
                    iv_seed: random,
                    #[cfg(target_arch = "x86_64")]
                    ni,
                    #[cfg(target_arch = "x86_64")]
                    ni_open,
                }
            }
            EncAlg::Null => Kind::Null {
                integ: Integ::new(auth, auth_key).ok_or_else(broken)?,
            },
            EncAlg::DesCbc => return Err(broken()),
        };
        let icv = if enc.is_combined() {
            TAG_LEN
        } else {
            auth.icv_len()
        };
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&random[8..]);
        Ok(Self {
            kind,
            enc,
            auth,
            iv_len: enc.iv_len() as u8,
            icv_len: icv as u8,
            align: enc.block_len().max(4) as u8,
            iv_mask: u64::from_be_bytes(mask),
        })
    }

    /// The transform of an AH SA (RFC 4302): integrity `auth` only, checked by
    /// [`alg::check_ah_algorithm`]. AES-GMAC (RFC 4543 §4) is AH's alone.
    pub(crate) fn new_ah(
        auth: AuthAlg,
        auth_key: &[u8],
        random: [u8; 16],
    ) -> Result<Self, CryptoError> {
        alg::check_ah_algorithm(auth)?;
        let Some(cipher) = auth.gmac_cipher() else {
            return Self::new(EncAlg::Null, &[], auth, auth_key, false, false, random);
        };
        alg::check_auth_key(auth, auth_key)?;
        let (key, salt) = auth_key.split_at(cipher.key_len());
        let mut salt4 = [0u8; 4];
        salt4.copy_from_slice(salt);
        // the `gcmni` kernel where the CPU has it (its GHASH of a long AAD is the faster)
        let key = AeadImpl::new(cipher, key).ok_or(CryptoError::Refused {
            alg: auth.name(),
            reason: "key schedule failed",
        })?;
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&random[8..]);
        Ok(Self {
            kind: Kind::AhGmac { key, salt: salt4 },
            enc: EncAlg::Null,
            auth,
            iv_len: 0,
            icv_len: auth.icv_len() as u8,
            align: 4,
            iv_mask: u64::from_be_bytes(mask),
        })
    }

    /// No cryptography: the transform of an IPComp SA, which compresses and nothing else.
    pub(crate) fn none() -> Self {
        Self {
            kind: Kind::Null { integ: Integ::None },
            enc: EncAlg::Null,
            auth: AuthAlg::None,
            iv_len: 0,
            icv_len: 0,
            align: 4,
            iv_mask: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn iv_len(&self) -> usize {
        usize::from(self.iv_len)
    }

    #[inline(always)]
    pub(crate) fn icv_len(&self) -> usize {
        usize::from(self.icv_len)
    }

    #[inline(always)]
    pub(crate) fn align(&self) -> usize {
        usize::from(self.align)
    }

    /// Continue `old`'s IV generator: the same key with the sequence numbers carried on must
    /// keep the same mask (AEAD) or seed (CBC), or a (key, nonce) pair could repeat
    /// (RFC 4106 §3.1: a nonce is never used twice with one key).
    pub(crate) fn continue_ivs(&mut self, old: &Transform) {
        self.iv_mask = old.iv_mask;
        if let (
            Kind::Cbc { iv_seed, .. },
            Kind::Cbc {
                iv_seed: old_seed, ..
            },
        ) = (&mut self.kind, &old.kind)
        {
            *iv_seed = *old_seed;
        }
    }

    /// Test hook: make the IV generator produce `iv` for sequence number `seq`, so that
    /// published vectors (which fix the IV) can be reproduced byte for byte.
    #[cfg(test)]
    pub(crate) fn steer_iv(&mut self, seq: u64, iv: &[u8], enc_key: &[u8]) {
        match &mut self.kind {
            Kind::Aead { .. } | Kind::Gmac { .. } | Kind::AhGmac { .. } => {
                let mut b = [0u8; 8];
                b.copy_from_slice(iv);
                self.iv_mask = u64::from_be_bytes(b) ^ seq;
            }
            Kind::Cbc { iv_seed, .. } => {
                let bl = iv.len();
                let mut block = iv.to_vec();
                CbcKey::decrypt_block_with(self.enc, &enc_key[..self.enc.key_len()], &mut block);
                let s = seq.to_be_bytes();
                for i in 0..8 {
                    block[bl - 8 + i] ^= s[i];
                }
                iv_seed[..bl].copy_from_slice(&block);
            }
            Kind::Null { .. } => {}
        }
    }

    /// Fill in the IV and ICV and encrypt. The ESP header (SPI, low sequence bits) and the
    /// plaintext trailer are already in place. `seq` is the full 64-bit sequence number.
    #[inline]
    pub(crate) fn seal(
        &self,
        buf: &mut [u8],
        esp: usize,
        len: usize,
        seq: u64,
        esn: bool,
    ) -> Result<(), DropReason> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let pkt = buf
            .get_mut(esp..esp + len)
            .ok_or(DropReason::NoBufferSpace)?;
        if len < HEADER_LEN + iv_len + icv_len {
            return Err(DropReason::BadLength);
        }
        let pt = HEADER_LEN + iv_len;
        let icv = len - icv_len;
        let spi = [pkt[0], pkt[1], pkt[2], pkt[3]];
        match &self.kind {
            Kind::Aead { key, salt } => {
                // fixed layout: 8-byte header, 8-byte IV, 16-byte tag; no length-dependent copies
                let (hdr, rest) = pkt
                    .split_first_chunk_mut::<16>()
                    .ok_or(DropReason::BadLength)?;
                let iv = (seq ^ self.iv_mask).to_be_bytes();
                hdr[8..].copy_from_slice(&iv);
                let (aad, n) = aead_aad(spi, seq, esn);
                let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
                let tag = tag
                    .first_chunk_mut::<TAG_LEN>()
                    .ok_or(DropReason::BadLength)?;
                match key {
                    // faster than ring at every size, even for one packet (`--bench gcm`); the
                    // tag goes from the register straight into the packet
                    #[cfg(target_arch = "x86_64")]
                    AeadImpl::Ni(k) => {
                        super::gcmni::seal_one(k, &nonce(*salt, &iv), &aad[..n], body, tag);
                    }
                    AeadImpl::Portable(key) => {
                        *tag = key
                            .seal(nonce(*salt, &iv), &aad[..n], body)
                            .map_err(|_| DropReason::TooBig)?;
                    }
                }
            }
            Kind::Gmac { key, salt } => {
                let iv = (seq ^ self.iv_mask).to_be_bytes();
                pkt[HEADER_LEN..pt].copy_from_slice(&iv);
                let t = if esn {
                    // AAD = SPI ‖ seq_hi ‖ seq_lo ‖ IV ‖ payload (RFC 4543 §3.3): lay SPI and
                    // seq_hi over the 4 bytes before the ESP header and the SPI, then restore.
                    let start = esp.checked_sub(4).ok_or(DropReason::NoBufferSpace)?;
                    let mut saved = [0u8; 8];
                    saved.copy_from_slice(&buf[start..esp + 4]);
                    buf[start..esp].copy_from_slice(&spi);
                    buf[esp..esp + 4].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
                    let r = key.gmac(nonce(*salt, &iv), &buf[start..esp + icv]);
                    buf[start..esp + 4].copy_from_slice(&saved);
                    r
                } else {
                    key.gmac(nonce(*salt, &iv), &pkt[..icv])
                }
                .ok_or(DropReason::TooBig)?;
                buf[esp + icv..esp + len].copy_from_slice(&t);
            }
            Kind::Cbc {
                key,
                integ,
                iv_seed,
                #[cfg(target_arch = "x86_64")]
                ni,
                ..
            } => {
                let mut ivb = *iv_seed;
                let s = seq.to_be_bytes();
                for i in 0..8 {
                    ivb[iv_len - 8 + i] ^= s[i];
                }
                pkt[HEADER_LEN..pt].copy_from_slice(&ivb[..iv_len]);
                #[cfg(target_arch = "x86_64")]
                let done = match ni {
                    // the nonce in the IV field, then IV field and payload CBC-encrypted
                    // together from a zero IV: the IV field becomes E_K(nonce) and the payload
                    // is chained from it, as a burst does it ([`Transform::defer_seal`])
                    Some(k) if iv_len == 16 => {
                        let mut job = [super::aesni::CbcJob {
                            iv: [0; 16],
                            data: &mut pkt[HEADER_LEN..icv],
                        }];
                        if !super::aesni::cbc_encrypt_many(k, &mut job) {
                            return Err(DropReason::BadLength);
                        }
                        true
                    }
                    _ => false,
                };
                #[cfg(not(target_arch = "x86_64"))]
                let done = false;
                if !done {
                    // an inbound transform never seals
                    let Some(key) = key else {
                        return Err(DropReason::NoSa);
                    };
                    if !key.encrypt_block(&mut pkt[HEADER_LEN..pt]) {
                        return Err(DropReason::BadLength);
                    }
                    ivb[..iv_len].copy_from_slice(&pkt[HEADER_LEN..pt]);
                    if !key.encrypt(&ivb[..iv_len], &mut pkt[pt..icv]) {
                        return Err(DropReason::BadLength);
                    }
                }
                let (signed, tag) = pkt.split_at_mut(icv);
                integ.sign(signed, esn.then_some((seq >> 32) as u32), tag);
            }
            Kind::Null { integ } => {
                let (signed, tag) = pkt.split_at_mut(icv);
                integ.sign(signed, esn.then_some((seq >> 32) as u32), tag);
            }
            // an AH transform never seals ESP
            Kind::AhGmac { .. } => return Err(DropReason::NoSa),
        }
        Ok(())
    }

    /// Start sealing for a burst: with the multi-buffer AES-CBC kernel available, write the
    /// IV generator's nonce (per-SA seed XOR `seq`) into the IV field and answer `true`; the
    /// caller then CBC-encrypts the IV field and payload together from a zero IV with
    /// [`Transform::cbc_ni_key`] — which turns the nonce into the IV, E_K(nonce), exactly as
    /// [`Transform::seal`] computes it, and encrypts the payload chained from it — and
    /// finishes with [`Transform::sign_group`]. `false`: this transform seals only with `seal`.
    #[inline]
    pub(crate) fn defer_seal(&self, buf: &mut [u8], esp: usize, len: usize, seq: u64) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Kind::Cbc {
            iv_seed,
            ni: Some(_),
            ..
        } = &self.kind
        {
            let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
            let Some(pkt) = buf.get_mut(esp..esp + len) else {
                return false;
            };
            if iv_len != 16 || len < HEADER_LEN + iv_len + icv_len {
                return false;
            }
            let body = len - icv_len - HEADER_LEN;
            if !body.is_multiple_of(16) {
                return false;
            }
            let mut ivb = *iv_seed;
            let s = seq.to_be_bytes();
            for i in 0..8 {
                ivb[8 + i] ^= s[i];
            }
            pkt[HEADER_LEN..HEADER_LEN + 16].copy_from_slice(&ivb);
            return true;
        }
        let _ = (buf, esp, len, seq);
        false
    }

    /// [`Transform::new`] without the CPU-specific kernels (ring and RustCrypto only): the
    /// fallback, for tests on a CPU that has the kernels.
    #[cfg(test)]
    pub(crate) fn new_portable(
        enc: EncAlg,
        enc_key: &[u8],
        auth: AuthAlg,
        auth_key: &[u8],
        outbound: bool,
        random: [u8; 16],
    ) -> Result<Self, CryptoError> {
        let mut t = Self::new(enc, enc_key, auth, auth_key, outbound, false, random)?;
        match &mut t.kind {
            Kind::Aead { key, .. } => {
                let k =
                    AeadKey::new(enc, &enc_key[..enc.key_len()]).ok_or(CryptoError::Refused {
                        alg: enc.name(),
                        reason: "key schedule failed",
                    })?;
                *key = AeadImpl::Portable(Box::new(k));
            }
            #[cfg(target_arch = "x86_64")]
            Kind::Cbc {
                key, ni, ni_open, ..
            } => {
                *ni = None;
                *ni_open = None;
                if key.is_none() {
                    let k = CbcKey::new(enc, &enc_key[..enc.key_len()], outbound).ok_or(
                        CryptoError::Refused {
                            alg: enc.name(),
                            reason: "key schedule failed",
                        },
                    )?;
                    *key = Some(Box::new(k));
                }
            }
            _ => {}
        }
        Ok(t)
    }

    /// CBC-decrypt `body` in place from `iv`: the 512-bit kernel where this transform has
    /// its key, RustCrypto otherwise (3DES, or a CPU without VAES). False for a length that
    /// is not a multiple of the block, or a transform that is not CBC.
    #[inline]
    fn cbc_decrypt(&self, iv: &[u8], body: &mut [u8]) -> bool {
        let Kind::Cbc { key, .. } = &self.kind else {
            return false;
        };
        // the 512-bit kernel from one whole step (16 blocks) on, the 128-bit one below
        #[cfg(target_arch = "x86_64")]
        if let Kind::Cbc {
            ni_open: Some(k), ..
        } = &self.kind
            && let Ok(iv) = <&[u8; 16]>::try_from(iv)
        {
            return if body.len() >= 256 {
                super::aesni::cbc_decrypt(k, iv, body)
            } else {
                super::aesni::cbc_decrypt_narrow(k, iv, body)
            };
        }
        key.as_ref().is_some_and(|k| k.decrypt(iv, body))
    }

    /// The multi-buffer kernel's key of a CBC transform that defers sealing.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(crate) fn cbc_ni_key(&self) -> Option<&super::aesni::AesNiKey> {
        match &self.kind {
            Kind::Cbc { ni, .. } => ni.as_deref(),
            _ => None,
        }
    }

    /// The HMAC state of a CBC or NULL transform.
    fn integ(&self) -> Option<&Integ> {
        match &self.kind {
            Kind::Cbc { integ, .. } | Kind::Null { integ } => Some(integ),
            _ => None,
        }
    }

    /// AH: bytes of IV at the start of the Authentication Data (AES-GMAC: 8), which the ICV
    /// covers as sent (RFC 4543 §4, §7); only the bytes after it are zeroed for the ICV.
    #[inline(always)]
    pub(crate) fn ah_iv_len(&self) -> usize {
        if matches!(self.kind, Kind::AhGmac { .. }) {
            8
        } else {
            0
        }
    }

    /// AH with AES-GMAC: the IV of the packet with sequence number `seq`, the number XORed
    /// with the SA's random mask — never repeated under one key (RFC 4543 §3.1), as for
    /// ESP's AES-GCM.
    #[inline(always)]
    pub(crate) fn ah_iv(&self, seq: u64) -> [u8; 8] {
        (seq ^ self.iv_mask).to_be_bytes()
    }

    /// AH: whether the ESN high bits must follow the packet in the same slice (`data` ‖
    /// `esn_hi`, passed with `esn_hi` None): AES-GMAC takes its AAD in one piece; an HMAC
    /// appends them itself.
    #[inline(always)]
    pub(crate) fn ah_esn_in_data(&self) -> bool {
        matches!(self.kind, Kind::AhGmac { .. })
    }

    /// AH (RFC 4302 §3.3.3): the ICV of `data` (the packet as the ICV sees it: mutable fields
    /// zeroed, the Authentication Data zeroed after its `iv`) followed by the ESN high bits,
    /// into `icv` (truncated HMAC, or the 16-byte GMAC tag under the nonce salt ‖ `iv`).
    /// False if this transform cannot (not an AH transform, or a GMAC call with the ESN
    /// apart: see [`ah_esn_in_data`](Self::ah_esn_in_data)).
    #[inline]
    pub(crate) fn ah_sign(
        &self,
        data: &[u8],
        esn_hi: Option<u32>,
        iv: &[u8],
        icv: &mut [u8],
    ) -> bool {
        if let Kind::AhGmac { key, salt } = &self.kind {
            if esn_hi.is_some() || iv.len() != 8 || icv.len() != TAG_LEN {
                return false;
            }
            let Some(t) = key.gmac(nonce(*salt, iv), data) else {
                return false;
            };
            icv.copy_from_slice(&t);
            return true;
        }
        match self.integ() {
            Some(i) if !matches!(i, Integ::None) && iv.is_empty() => {
                i.sign(data, esn_hi, icv);
                true
            }
            _ => false,
        }
    }

    /// AH: check a received ICV (constant time) against [`ah_sign`](Self::ah_sign)'s.
    #[inline]
    pub(crate) fn ah_verify(
        &self,
        data: &[u8],
        esn_hi: Option<u32>,
        iv: &[u8],
        icv: &[u8],
    ) -> bool {
        if let Kind::AhGmac { key, salt } = &self.kind {
            let Ok(tag) = <&[u8; TAG_LEN]>::try_from(icv) else {
                return false;
            };
            if esn_hi.is_some() || iv.len() != 8 {
                return false;
            }
            return key.gmac_ok(nonce(*salt, iv), data, tag);
        }
        iv.is_empty()
            && self
                .integ()
                .is_some_and(|i| !matches!(i, Integ::None) && i.verify(data, esn_hi, icv))
    }

    /// AH: the ICVs of up to [`GROUP`] packets of this SA (`data[k]`, each as the ICV sees
    /// it, ‖ `esn_hi[k]`) into `icv[k]`, hashed together where a kernel allows.
    #[inline]
    pub(crate) fn ah_sign_group(
        &self,
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        icv: &mut [&mut [u8]],
    ) -> bool {
        match self.integ() {
            Some(i) if !matches!(i, Integ::None) => {
                let n = data.len().min(esn_hi.len()).min(icv.len()).min(GROUP);
                Integ::sign_group(&[i; GROUP][..n], &data[..n], &esn_hi[..n], &mut icv[..n]);
                true
            }
            _ => false,
        }
    }

    /// AH: check the received ICVs `icv[k]` of up to [`GROUP`] packets (`data[k]` as the ICV
    /// sees them, of transform `xf[k]`) into `ok`; `false`: not checked here.
    #[inline]
    pub(crate) fn ah_verify_group(
        xf: &[&Transform],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        icv: &[&[u8]],
        ok: &mut [bool],
    ) -> bool {
        static NO_INTEG: Integ = Integ::None;
        let n = xf
            .len()
            .min(data.len())
            .min(esn_hi.len())
            .min(icv.len())
            .min(GROUP);
        let mut integ: [&Integ; GROUP] = [&NO_INTEG; GROUP];
        for k in 0..n {
            match xf[k].integ() {
                Some(i) if !matches!(i, Integ::None) => integ[k] = i,
                _ => return false,
            }
        }
        Integ::verify_group(&integ[..n], &data[..n], &esn_hi[..n], &icv[..n], ok);
        true
    }

    /// Write the ICVs of up to [`GROUP`] ESP packets of this SA whose bytes before the ICV
    /// are final (hashed together where a kernel allows): the last step of a deferred
    /// seal. Packet `k` is `bufs[k][at[k].0..][..at[k].1]`, with ESN high bits `at[k].2`.
    #[inline]
    pub(crate) fn sign_group(&self, bufs: &mut [&mut [u8]], at: &[(usize, usize, Option<u32>)]) {
        let Some(integ) = self.integ() else { return };
        let icv_len = self.icv_len();
        let n = bufs.len().min(at.len()).min(GROUP);
        let mut data: [&[u8]; GROUP] = [&[]; GROUP];
        let mut tags: [&mut [u8]; GROUP] = Default::default();
        let mut esn = [None; GROUP];
        for (k, (b, &(esp, len, hi))) in bufs.iter_mut().zip(at).take(n).enumerate() {
            let Some(pkt) = b.get_mut(esp..esp + len) else {
                return;
            };
            let (d, t) = pkt.split_at_mut(len - icv_len);
            (data[k], tags[k], esn[k]) = (d, t, hi);
        }
        Integ::sign_group(&[integ; GROUP][..n], &data[..n], &esn[..n], &mut tags[..n]);
    }

    /// Whether this transform's ICVs can be checked in groups
    /// ([`verify_group`](Self::verify_group)) before [`open_checked`](Self::open_checked).
    #[inline]
    pub(crate) fn pairs(&self) -> bool {
        self.integ().is_some_and(Integ::pairs)
    }

    /// Check the ICVs of up to [`GROUP`] received ESP packets together (packet `k` is
    /// `bufs[k][at[k].0..][..at[k].1]`, ESN high bits `at[k].2`, of transforms that
    /// [`pairs`](Self::pairs)) into `ok`. `false`: not checked here (then `open` checks them).
    #[inline]
    pub(crate) fn verify_group(
        xf: &[&Transform],
        bufs: &[&[u8]],
        at: &[(usize, usize, Option<u32>)],
        ok: &mut [bool],
    ) -> bool {
        static NO_INTEG: Integ = Integ::None;
        let n = xf.len().min(bufs.len()).min(at.len()).min(GROUP);
        let mut integ: [&Integ; GROUP] = [&NO_INTEG; GROUP];
        let mut data: [&[u8]; GROUP] = [&[]; GROUP];
        let mut icv: [&[u8]; GROUP] = [&[]; GROUP];
        let mut esn = [None; GROUP];
        for k in 0..n {
            let (esp, len, hi) = at[k];
            let Some(pkt) = bufs[k].get(esp..esp + len) else {
                return false;
            };
            let Some(split) = len.checked_sub(xf[k].icv_len()) else {
                return false;
            };
            let Some(i) = xf[k].integ() else {
                return false;
            };
            let (d, t) = pkt.split_at(split);
            (data[k], icv[k], integ[k], esn[k]) = (d, t, i, hi);
        }
        Integ::verify_group(&integ[..n], &data[..n], &esn[..n], &icv[..n], ok);
        true
    }

    /// [`open`](Self::open), with the ICV already checked by
    /// [`verify_group`](Self::verify_group) for `checked.0` (the ESN high bits it used) when
    /// `checked` is given and those bits are still the ones inferred.
    #[inline]
    pub(crate) fn open_checked(
        &self,
        buf: &mut [u8],
        esp: usize,
        len: usize,
        seq_hi: Option<u32>,
        checked: Option<(Option<u32>, bool)>,
    ) -> Result<(), DropReason> {
        let Some((_, ok)) = checked.filter(|(hi, _)| *hi == seq_hi) else {
            return self.open(buf, esp, len, seq_hi);
        };
        // the checks and their order are those of `open`: lengths, then the ICV
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        let pt = HEADER_LEN + iv_len;
        let pkt = buf.get_mut(esp..esp + len).ok_or(DropReason::BadLength)?;
        if len < pt + icv_len + 2 {
            return Err(DropReason::BadLength);
        }
        match &self.kind {
            Kind::Cbc { .. } | Kind::Null { .. }
                if !(len - icv_len - pt).is_multiple_of(self.enc.block_len()) =>
            {
                Err(DropReason::BadLength)
            }
            Kind::Cbc { .. } | Kind::Null { .. } if !ok => Err(DropReason::IcvFailed),
            Kind::Cbc { .. } => {
                let (head, body) = pkt[..len - icv_len].split_at_mut(pt);
                if self.cbc_decrypt(&head[HEADER_LEN..], body) {
                    Ok(())
                } else {
                    Err(DropReason::BadLength)
                }
            }
            Kind::Null { .. } => Ok(()),
            _ => self.open(buf, esp, len, seq_hi),
        }
    }

    /// Verify the ICV and decrypt in place. `seq_hi` is the inferred high half of the ESN.
    /// On success the plaintext (payload ‖ padding ‖ trailer) is at
    /// `esp + 8 + iv_len .. esp + len - icv_len`.
    #[inline]
    pub(crate) fn open(
        &self,
        buf: &mut [u8],
        esp: usize,
        len: usize,
        seq_hi: Option<u32>,
    ) -> Result<(), DropReason> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let pkt = buf.get_mut(esp..esp + len).ok_or(DropReason::BadLength)?;
        let pt = HEADER_LEN + iv_len;
        // At least the two trailer bytes, and whole cipher blocks.
        if len < pt + icv_len + 2 {
            return Err(DropReason::BadLength);
        }
        let icv = len - icv_len;
        let Some((hdr, rest)) = pkt.split_first_chunk_mut::<8>() else {
            return Err(DropReason::BadLength);
        };
        let spi = [hdr[0], hdr[1], hdr[2], hdr[3]];
        let seq = (u64::from(seq_hi.unwrap_or(0)) << 32)
            | u64::from(u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]));
        match &self.kind {
            Kind::Aead { key, salt } => {
                let Some((iv, ct_tag)) = rest.split_first_chunk_mut::<8>() else {
                    return Err(DropReason::BadLength);
                };
                let (aad, an) = aead_aad(spi, seq, seq_hi.is_some());
                return match key {
                    #[cfg(target_arch = "x86_64")]
                    AeadImpl::Ni(k) => {
                        let (body, tag) = ct_tag.split_at_mut(ct_tag.len() - TAG_LEN);
                        let tag: &[u8; TAG_LEN] =
                            (&*tag).try_into().map_err(|_| DropReason::BadLength)?;
                        if super::gcmni::open_one(k, &nonce(*salt, iv), &aad[..an], body, tag) {
                            Ok(())
                        } else {
                            Err(DropReason::IcvFailed)
                        }
                    }
                    AeadImpl::Portable(key) => key
                        .open(nonce(*salt, iv), &aad[..an], ct_tag)
                        .map_err(|_| DropReason::IcvFailed),
                };
            }
            _ if !(icv - pt).is_multiple_of(self.enc.block_len()) => {
                return Err(DropReason::BadLength);
            }
            Kind::Gmac { key, salt } => {
                let n = nonce(*salt, &pkt[HEADER_LEN..pt]);
                let mut tag = [0u8; TAG_LEN];
                tag.copy_from_slice(&pkt[icv..]);
                let r = if let Some(hi) = seq_hi {
                    let start = esp.checked_sub(4).ok_or(DropReason::BadLength)?;
                    let mut saved = [0u8; 8];
                    saved.copy_from_slice(&buf[start..esp + 4]);
                    buf[start..esp].copy_from_slice(&spi);
                    buf[esp..esp + 4].copy_from_slice(&hi.to_be_bytes());
                    let r = key.gmac_ok(n, &buf[start..esp + icv], &tag);
                    buf[start..esp + 4].copy_from_slice(&saved);
                    r
                } else {
                    key.gmac_ok(n, &pkt[..icv], &tag)
                };
                if !r {
                    return Err(DropReason::IcvFailed);
                }
            }
            Kind::Cbc { integ, .. } => {
                let (signed, tag) = pkt.split_at_mut(icv);
                if !integ.verify(signed, seq_hi, tag) {
                    return Err(DropReason::IcvFailed);
                }
                let (head, body) = signed.split_at_mut(pt);
                if !self.cbc_decrypt(&head[HEADER_LEN..], body) {
                    return Err(DropReason::BadLength);
                }
            }
            Kind::Null { integ } => {
                let (signed, tag) = pkt.split_at_mut(icv);
                if !integ.verify(signed, seq_hi, tag) {
                    return Err(DropReason::IcvFailed);
                }
            }
            // an AH transform never opens ESP
            Kind::AhGmac { .. } => return Err(DropReason::NoSa),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn transform(enc: EncAlg, auth: AuthAlg, outbound: bool) -> (Transform, Vec<u8>) {
        let ek: Vec<u8> = (0..enc.keymat_len()).map(|i| (i * 7 + 1) as u8).collect();
        let ak: Vec<u8> = (0..auth.key_len()).map(|i| (i * 3 + 5) as u8).collect();
        (
            Transform::new(enc, &ek, auth, &ak, outbound, true, [9; 16]).unwrap(),
            ek,
        )
    }

    /// AH's AES-GMAC: the `gcmni` kernel (where the CPU has it) and ring/RustCrypto give the
    /// same tags, over AADs of a few bytes to a jumbo frame; each verifies the other's, and
    /// a changed IV, AAD or tag fails.
    #[test]
    fn ah_gmac_kernel_equals_portable() {
        for auth in [
            AuthAlg::AesGmac128,
            AuthAlg::AesGmac192,
            AuthAlg::AesGmac256,
        ] {
            let key: Vec<u8> = (0..auth.key_len()).map(|i| (i * 11 + 3) as u8).collect();
            let fast = Transform::new_ah(auth, &key, [5; 16]).unwrap();
            let mut portable = Transform::new_ah(auth, &key, [5; 16]).unwrap();
            let cipher = auth.gmac_cipher().unwrap();
            portable.kind = Kind::AhGmac {
                key: AeadImpl::Portable(Box::new(
                    AeadKey::new(cipher, &key[..cipher.key_len()]).unwrap(),
                )),
                salt: key[cipher.key_len()..].try_into().unwrap(),
            };
            assert_eq!(fast.icv_len(), 24);
            assert_eq!(fast.ah_iv_len(), 8);
            for len in [0usize, 1, 15, 16, 17, 64, 255, 256, 1476, 9000] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let iv = fast.ah_iv(len as u64 + 1);
                let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
                assert!(fast.ah_sign(&data, None, &iv, &mut a));
                assert!(portable.ah_sign(&data, None, &iv, &mut b));
                assert_eq!(a, b, "{auth} {len}");
                assert!(fast.ah_verify(&data, None, &iv, &b));
                assert!(portable.ah_verify(&data, None, &iv, &a));
                let mut iv2 = iv;
                iv2[7] ^= 1;
                assert!(!fast.ah_verify(&data, None, &iv2, &a));
                assert!(!portable.ah_verify(&data, None, &iv2, &a));
                let mut t = a;
                t[15] ^= 0x80;
                assert!(!fast.ah_verify(&data, None, &iv, &t));
                if len > 0 {
                    let mut d = data.clone();
                    d[len / 2] ^= 4;
                    assert!(!fast.ah_verify(&d, None, &iv, &a));
                    assert!(!portable.ah_verify(&d, None, &iv, &a));
                }
                // the ESN high bits go inside the AAD, never apart; an HMAC-shaped call fails
                assert!(!fast.ah_sign(&data, Some(1), &iv, &mut a));
                assert!(!fast.ah_verify(&data, Some(1), &iv, &b));
                assert!(!fast.ah_sign(&data, None, &[], &mut a));
            }
        }
        // an ESP transform is no AH GMAC transform, and the other way round
        let esp = transform(EncAlg::Null, AuthAlg::HmacSha1_96, true).0;
        assert_eq!(esp.ah_iv_len(), 0);
        assert!(!esp.ah_sign(b"x", None, &[0; 8], &mut [0; 12]));
        let ah = Transform::new_ah(AuthAlg::AesGmac128, &[1; 20], [0; 16]).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(ah.seal(&mut buf, 0, 40, 1, false), Err(DropReason::NoSa));
        assert_eq!(ah.open(&mut buf, 0, 40, None), Err(DropReason::NoSa));
        assert!(Transform::new_ah(AuthAlg::AesGmac128, &[1; 16], [0; 16]).is_err());
        assert!(Transform::new_ah(AuthAlg::None, &[], [0; 16]).is_err());
    }

    /// ESP's AES-GMAC (ENCR_NULL_AUTH_AES_GMAC): the `gcmni` kernel (where the CPU has it)
    /// and ring/RustCrypto seal the same bytes, with and without ESN, from an empty payload to
    /// a jumbo frame; each opens the other's, and a changed byte fails.
    #[test]
    fn esp_gmac_kernel_equals_portable() {
        for enc in [EncAlg::AesGmac128, EncAlg::AesGmac192, EncAlg::AesGmac256] {
            let (fast, ek) = transform(enc, AuthAlg::None, true);
            let (mut portable, _) = transform(enc, AuthAlg::None, true);
            portable.kind = Kind::Gmac {
                key: AeadImpl::Portable(Box::new(AeadKey::new(enc, &ek[..enc.key_len()]).unwrap())),
                salt: ek[enc.key_len()..].try_into().unwrap(),
            };
            for body in [4usize, 16, 60, 252, 1424, 9004] {
                for esn in [false, true] {
                    let esp = 20;
                    let len = 8 + fast.iv_len() + body + fast.icv_len();
                    let mut a = vec![0x5au8; esp + len + 8];
                    a[esp..esp + 8].copy_from_slice(&[1, 2, 3, 4, 0, 0, 0, 9]);
                    for (i, b) in a[esp + 16..esp + 16 + body].iter_mut().enumerate() {
                        *b = (i * 13) as u8;
                    }
                    let mut b = a.clone();
                    let seq = (3u64 << 32) | 9;
                    fast.seal(&mut a, esp, len, seq, esn).unwrap();
                    portable.seal(&mut b, esp, len, seq, esn).unwrap();
                    assert_eq!(a, b, "{enc} {body} esn={esn}");
                    let hi = esn.then_some(3);
                    let sealed = a.clone();
                    fast.open(&mut a, esp, len, hi).unwrap();
                    portable.open(&mut b, esp, len, hi).unwrap();
                    assert_eq!(a, sealed, "{enc}: GMAC opens in place, nothing decrypted");
                    let mut c = sealed.clone();
                    c[esp + 16 + body / 2] ^= 2;
                    assert_eq!(fast.open(&mut c, esp, len, hi), Err(DropReason::IcvFailed));
                    assert_eq!(
                        portable.open(&mut c, esp, len, hi),
                        Err(DropReason::IcvFailed)
                    );
                }
            }
        }
    }

    #[test]
    fn cbc_keeps_one_key_and_seals_and_opens_every_length() {
        let (out, ek) = transform(EncAlg::AesCbc128, AuthAlg::HmacSha1_96, true);
        let (inb, _) = transform(EncAlg::AesCbc128, AuthAlg::HmacSha1_96, false);
        let ak: Vec<u8> = (0..AuthAlg::HmacSha1_96.key_len())
            .map(|i| (i * 3 + 5) as u8)
            .collect();
        let portable_out = Transform::new_portable(
            EncAlg::AesCbc128,
            &ek,
            AuthAlg::HmacSha1_96,
            &ak,
            true,
            [9; 16],
        )
        .unwrap();
        #[cfg(target_arch = "x86_64")]
        {
            let wide =
                super::super::aesni::wide_available() && std::is_x86_feature_detected!("avx512bw");
            match &inb.kind {
                // with the kernels' key, RustCrypto's is not kept as well
                Kind::Cbc {
                    key, ni_open, ni, ..
                } => {
                    assert_eq!(ni_open.is_some(), wide);
                    assert_eq!(key.is_none(), wide);
                    assert!(ni.is_none(), "an inbound SA has no encryption kernel key");
                }
                _ => panic!("not CBC"),
            }
            // an outbound SA keeps the multi-buffer kernel's key alone where AES-NI is
            let ni = super::super::aesni::available();
            match &out.kind {
                Kind::Cbc {
                    key,
                    ni_open,
                    ni: n,
                    ..
                } => {
                    assert_eq!(n.is_some(), ni);
                    assert_eq!(key.is_none(), ni);
                    assert!(ni_open.is_none());
                }
                _ => panic!("not CBC"),
            }
        }
        // every body length from one block to past the 512-bit kernel's first step: the
        // 128-bit kernel below 256 bytes, the 512-bit one from there (or RustCrypto)
        let esp = 20;
        for body in (16..=400).step_by(16) {
            let len = 8 + out.iv_len() + body + out.icv_len();
            let mut buf = vec![0x5au8; esp + len];
            buf[esp..esp + 8].copy_from_slice(&[0, 0, 0x12, 0x34, 0, 0, 0, 9]);
            let pt = esp + 8 + out.iv_len();
            for (i, b) in buf[pt..pt + body].iter_mut().enumerate() {
                *b = (i * 7 + body) as u8;
            }
            let before = buf.clone();
            out.seal(&mut buf, esp, len, 9, false).unwrap();
            assert_ne!(&buf[pt..pt + body], &before[pt..pt + body]);
            // the kernel's single-packet seal gives RustCrypto's bytes, IV included
            let mut theirs = before.clone();
            portable_out.seal(&mut theirs, esp, len, 9, false).unwrap();
            assert_eq!(buf, theirs, "{body} bytes");
            inb.open(&mut buf, esp, len, None).unwrap();
            assert_eq!(&buf[pt..pt + body], &before[pt..pt + body], "{body} bytes");
        }
        // an inbound transform never seals
        let mut buf = vec![0u8; 200];
        assert!(inb.seal(&mut buf, 20, 8 + 16 + 32 + 12, 1, false).is_err());
    }

    #[test]
    fn seal_open_every_algorithm_with_and_without_esn() {
        let pairs = [
            (EncAlg::AesGcm128, AuthAlg::None),
            (EncAlg::AesGcm192, AuthAlg::None),
            (EncAlg::AesGcm256, AuthAlg::None),
            (EncAlg::ChaCha20Poly1305, AuthAlg::None),
            (EncAlg::AesGmac128, AuthAlg::None),
            (EncAlg::AesGmac192, AuthAlg::None),
            (EncAlg::AesGmac256, AuthAlg::None),
            (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
            (EncAlg::AesCbc192, AuthAlg::HmacSha256_128),
            (EncAlg::AesCbc256, AuthAlg::HmacSha384_192),
            (EncAlg::AesCbc128, AuthAlg::HmacSha512_256),
            (EncAlg::AesCbc256, AuthAlg::AesCmac96),
            (EncAlg::TripleDesCbc, AuthAlg::HmacSha1_96),
            (EncAlg::Null, AuthAlg::HmacSha256_128),
        ];
        for (enc, auth) in pairs {
            for esn in [false, true] {
                let (out, _) = transform(enc, auth, true);
                let (inb, _) = transform(enc, auth, false);
                let esp = 20;
                let body = 32; // a multiple of every block size, trailer included
                let len = 8 + out.iv_len() + body + out.icv_len();
                let mut buf = vec![0xabu8; esp + len + 8];
                buf[esp..esp + 8].copy_from_slice(&[0, 0, 0x12, 0x34, 0, 0, 0, 7]);
                let pt = esp + 8 + out.iv_len();
                for (i, b) in buf[pt..pt + body].iter_mut().enumerate() {
                    *b = i as u8;
                }
                let seq = (5u64 << 32) | 7;
                let before = buf.clone();
                out.seal(&mut buf, esp, len, seq, esn).unwrap();
                assert_eq!(
                    &buf[..esp],
                    &before[..esp],
                    "{enc} bytes before ESP untouched"
                );
                if enc.encrypts() {
                    assert_ne!(
                        &buf[pt..pt + body],
                        &before[pt..pt + body],
                        "{enc} encrypted"
                    );
                }
                let sealed = buf.clone();
                inb.open(&mut buf, esp, len, esn.then_some(5)).unwrap();
                assert_eq!(
                    &buf[pt..pt + body],
                    &before[pt..pt + body],
                    "{enc}/{auth} esn={esn}"
                );
                assert_eq!(
                    &buf[..esp],
                    &before[..esp],
                    "{enc} bytes before ESP restored"
                );
                if esn {
                    // the wrong high bits fail the ICV
                    let mut b = sealed.clone();
                    assert_eq!(
                        inb.open(&mut b, esp, len, Some(4)),
                        Err(DropReason::IcvFailed),
                        "{enc}"
                    );
                }
                for bit in [0usize, 8 * 8, 8 * (len - 1)] {
                    let mut b = sealed.clone();
                    b[esp + bit / 8] ^= 1 << (bit % 8);
                    assert_eq!(
                        inb.open(&mut b, esp, len, esn.then_some(5)),
                        Err(DropReason::IcvFailed),
                        "{enc} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn ivs_are_unique_per_packet() {
        for enc in [
            EncAlg::AesGcm128,
            EncAlg::AesCbc128,
            EncAlg::ChaCha20Poly1305,
        ] {
            let auth = if enc.is_combined() {
                AuthAlg::None
            } else {
                AuthAlg::HmacSha1_96
            };
            let (t, _) = transform(enc, auth, true);
            let mut seen = std::collections::HashSet::new();
            for seq in 1..2000u64 {
                let len = 8 + t.iv_len() + 16 + t.icv_len();
                let mut buf = vec![0u8; len];
                t.seal(&mut buf, 0, len, seq, false).unwrap();
                assert!(
                    seen.insert(buf[8..8 + t.iv_len()].to_vec()),
                    "{enc} IV repeated at {seq}"
                );
            }
        }
    }
}
