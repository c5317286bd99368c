//! IKEv2 key derivation (RFC 7296 §2.13, §2.14, §2.17, §2.18): the negotiated PRF, `prf+`,
//! SKEYSEED and the IKE SA's keys, a Child SA's KEYMAT (with or without a new
//! Diffie-Hellman), and the SKEYSEED of a rekeyed IKE SA. HMAC from RustCrypto; every
//! secret output lives in a buffer wiped when dropped.

use hmac::{Hmac, KeyInit, Mac};
use zeroize::Zeroizing;

/// The PRFs of IKEv2's transform type 2 that xsec-ike offers (RFC 8247 §2.2: HMAC-SHA2 MUST,
/// HMAC-SHA1 only when configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha1,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// Why keys cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    /// RFC 7296 §2.13: prf+ is defined for at most 255 blocks.
    #[error("prf+ gives at most {max} bytes with this PRF; {asked} were asked for")]
    TooLong { asked: usize, max: usize },
}

/// Secret bytes, wiped when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

fn hmac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Secret {
    // HMAC accepts keys of any length (hashed when longer than a block)
    let mut m = <M as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().to_vec())
}

fn hmac_check<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]], tag: &[u8], truncated: bool) -> bool {
    let mut m = <M as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    if truncated {
        m.verify_truncated_left(tag).is_ok()
    } else {
        m.verify_slice(tag).is_ok()
    }
}

impl Prf {
    /// Its transform ID (IANA "Transform Type 2 - Pseudorandom Function Transform IDs").
    pub fn transform_id(self) -> u16 {
        match self {
            Prf::HmacSha1 => 2,
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }

    /// Bytes of output (and the preferred key length, RFC 7296 §2.13).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha1 => 20,
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// `prf(key, parts[0] | parts[1] | ...)`.
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Secret {
        match self {
            Prf::HmacSha1 => hmac::<Hmac<sha1::Sha1>>(key, parts),
            Prf::HmacSha256 => hmac::<Hmac<sha2::Sha256>>(key, parts),
            Prf::HmacSha384 => hmac::<Hmac<sha2::Sha384>>(key, parts),
            Prf::HmacSha512 => hmac::<Hmac<sha2::Sha512>>(key, parts),
        }
    }

    /// Whether `tag` is `prf(key, parts...)` (whole, or its left part when `truncated`),
    /// compared in constant time.
    pub fn verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8], truncated: bool) -> bool {
        match self {
            Prf::HmacSha1 => hmac_check::<Hmac<sha1::Sha1>>(key, parts, tag, truncated),
            Prf::HmacSha256 => hmac_check::<Hmac<sha2::Sha256>>(key, parts, tag, truncated),
            Prf::HmacSha384 => hmac_check::<Hmac<sha2::Sha384>>(key, parts, tag, truncated),
            Prf::HmacSha512 => hmac_check::<Hmac<sha2::Sha512>>(key, parts, tag, truncated),
        }
    }

    /// `prf+(key, seed)`, `len` bytes (RFC 7296 §2.13): T1 = prf(K, S | 0x01), Tn =
    /// prf(K, Tn-1 | S | n), at most 255 blocks. `seed` is the concatenation of `seed`'s parts.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Result<Secret, KdfError> {
        let max = 255 * self.output_len();
        if len > max {
            return Err(KdfError::TooLong { asked: len, max });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut t: Secret = Zeroizing::new(vec![]);
        let mut n: u8 = 1;
        while out.len() < len {
            let counter = [n];
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(&t);
            parts.extend_from_slice(seed);
            parts.push(&counter);
            t = self.prf(key, &parts);
            out.extend_from_slice(&t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Ok(out)
    }

    /// SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14; the nonces whole, as for every HMAC
    /// PRF).
    pub fn skeyseed(self, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> Secret {
        let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
        key.extend_from_slice(ni);
        key.extend_from_slice(nr);
        self.prf(&key, &[g_ir])
    }

    /// The IKE SA's keys: prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) cut into SK_d, SK_ai, SK_ar,
    /// SK_ei, SK_er, SK_pi, SK_pr (RFC 7296 §2.14), with the key lengths of the negotiated
    /// integrity and encryption algorithms.
    pub fn ike_keys(
        self,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        [spi_i, spi_r]: [[u8; 8]; 2],
        KeyLengths { integ, encr }: KeyLengths,
    ) -> Result<IkeKeys, KdfError> {
        let p = self.output_len();
        let total = p + 2 * integ + 2 * encr + 2 * p;
        let dkm = self.prf_plus(skeyseed, &[ni, nr, &spi_i, &spi_r], total)?;
        let mut rest: &[u8] = &dkm;
        let mut take = |n: usize| -> Secret {
            let (a, b) = rest.split_at(n);
            rest = b;
            Zeroizing::new(a.to_vec())
        };
        Ok(IkeKeys {
            d: take(p),
            ai: take(integ),
            ar: take(integ),
            ei: take(encr),
            er: take(encr),
            pi: take(p),
            pr: take(p),
        })
    }

    /// A Child SA's KEYMAT, `len` bytes (RFC 7296 §2.17): prf+(SK_d, Ni | Nr), or with a new
    /// Diffie-Hellman exchange in CREATE_CHILD_SA prf+(SK_d, g^ir (new) | Ni | Nr).
    pub fn child_keymat(
        self,
        sk_d: &[u8],
        g_ir_new: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        len: usize,
    ) -> Result<Secret, KdfError> {
        match g_ir_new {
            Some(g) => self.prf_plus(sk_d, &[g, ni, nr], len),
            None => self.prf_plus(sk_d, &[ni, nr], len),
        }
    }

    /// The SKEYSEED of an IKE SA rekeyed by CREATE_CHILD_SA (RFC 7296 §2.18):
    /// prf(SK_d (old), g^ir (new) | Ni | Nr).
    pub fn rekey_skeyseed(self, sk_d_old: &[u8], g_ir_new: &[u8], ni: &[u8], nr: &[u8]) -> Secret {
        self.prf(sk_d_old, &[g_ir_new, ni, nr])
    }
}

/// Key lengths of an IKE SA's algorithms, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLengths {
    /// Integrity (0 with an AEAD).
    pub integ: usize,
    /// Encryption, with the salt of an AEAD (RFC 5282: AES-GCM-16-128 takes 20 bytes).
    pub encr: usize,
}

/// The keys of an IKE SA (RFC 7296 §2.14), wiped when dropped.
#[derive(Debug)]
pub struct IkeKeys {
    /// Derives the Child SAs' keys and a rekeyed IKE SA's SKEYSEED.
    pub d: Secret,
    pub ai: Secret,
    pub ar: Secret,
    pub ei: Secret,
    pub er: Secret,
    /// Used in the AUTH payloads.
    pub pi: Secret,
    pub pr: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// prf+ is the concatenation of its blocks, whatever the length asked, and stops at 255.
    #[test]
    fn prf_plus_blocks_and_limit() {
        let p = Prf::HmacSha256;
        let long = p.prf_plus(b"key", &[b"seed"], 100).expect("100 bytes");
        let t1 = p.prf(b"key", &[b"seed", &[1]]);
        let t2 = p.prf(b"key", &[&t1, b"seed", &[2]]);
        assert_eq!(&long[..32], &t1[..]);
        assert_eq!(&long[32..64], &t2[..]);
        let short = p.prf_plus(b"key", &[b"se", b"ed"], 40).expect("40 bytes");
        assert_eq!(&short[..], &long[..40]);
        assert!(p.prf_plus(b"key", &[b"seed"], 255 * 32).is_ok());
        assert_eq!(
            p.prf_plus(b"key", &[b"seed"], 255 * 32 + 1),
            Err(KdfError::TooLong {
                asked: 255 * 32 + 1,
                max: 255 * 32
            })
        );
    }

    /// The IKE SA's keys are consecutive pieces of one prf+ output, in RFC 7296's order.
    #[test]
    fn ike_keys_cut_the_dkm_in_order() {
        let p = Prf::HmacSha384;
        let (ni, nr) = ([1u8; 32], [2u8; 32]);
        let spis = [[3u8; 8], [4u8; 8]];
        let k = p
            .ike_keys(
                b"seed",
                &ni,
                &nr,
                spis,
                KeyLengths {
                    integ: 24,
                    encr: 36,
                },
            )
            .expect("keys");
        let dkm = p
            .prf_plus(
                b"seed",
                &[&ni, &nr, &spis[0], &spis[1]],
                48 + 2 * 24 + 2 * 36 + 2 * 48,
            )
            .expect("DKM");
        let mut at = 0;
        for (key, n) in [
            (&k.d, 48),
            (&k.ai, 24),
            (&k.ar, 24),
            (&k.ei, 36),
            (&k.er, 36),
            (&k.pi, 48),
            (&k.pr, 48),
        ] {
            assert_eq!(key[..], dkm[at..at + n]);
            at += n;
        }
        assert_eq!(at, dkm.len());
    }

    /// RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe").
    #[test]
    fn hmac_sha256_rfc4231() {
        let out = Prf::HmacSha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            out[..].to_vec(),
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ]
        );
    }
}
