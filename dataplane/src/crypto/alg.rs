//! Algorithm identifiers, key sizes, and which combinations are refused (RFC 8221).

use core::fmt;
use core::str::FromStr;

/// An ESP encryption (or combined-mode) algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncAlg {
    /// ENCR_NULL (RFC 2410): integrity only.
    Null,
    /// ENCR_AES_CBC (RFC 3602).
    AesCbc128,
    AesCbc192,
    AesCbc256,
    /// ENCR_3DES (RFC 2451): legacy, only when explicitly enabled (RFC 8221 §5: SHOULD NOT).
    TripleDesCbc,
    /// ENCR_DES_CBC: always refused (RFC 8221 §5: MUST NOT).
    DesCbc,
    /// ENCR_AES_GCM_16 (RFC 4106), 16-octet ICV.
    AesGcm128,
    AesGcm192,
    AesGcm256,
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    ChaCha20Poly1305,
    /// ENCR_NULL_AUTH_AES_GMAC (RFC 4543): integrity only, AES-GMAC.
    AesGmac128,
    AesGmac192,
    AesGmac256,
}

/// An ESP integrity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthAlg {
    /// No separate integrity algorithm: only with an AEAD.
    None,
    /// AUTH_HMAC_SHA1_96 (RFC 2404).
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (RFC 4868).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (RFC 4868).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (RFC 4868).
    HmacSha512_256,
    /// AUTH_AES_CMAC_96 (RFC 4494): AES-128-CMAC truncated to 96 bits.
    AesCmac96,
    /// AUTH_AES_128_GMAC, AUTH_AES_192_GMAC, AUTH_AES_256_GMAC (RFC 4543 §4): AH only. The
    /// Authentication Data is an 8-byte IV and the 16-byte GMAC tag; the key is followed by a
    /// 4-byte salt. ESP takes AES-GMAC as its encryption algorithm instead
    /// ([`EncAlg::AesGmac128`], ENCR_NULL_AUTH_AES_GMAC).
    AesGmac128,
    AesGmac192,
    AesGmac256,
    /// AUTH_HMAC_MD5_96: always refused (RFC 8221 §6: MUST NOT).
    HmacMd5_96,
}

impl EncAlg {
    pub const ALL: &'static [EncAlg] = &[
        EncAlg::Null,
        EncAlg::AesCbc128,
        EncAlg::AesCbc192,
        EncAlg::AesCbc256,
        EncAlg::TripleDesCbc,
        EncAlg::DesCbc,
        EncAlg::AesGcm128,
        EncAlg::AesGcm192,
        EncAlg::AesGcm256,
        EncAlg::ChaCha20Poly1305,
        EncAlg::AesGmac128,
        EncAlg::AesGmac192,
        EncAlg::AesGmac256,
    ];

    /// The name used in configuration and `show` output (strongSwan's proposal keywords).
    pub const fn name(self) -> &'static str {
        match self {
            EncAlg::Null => "null",
            EncAlg::AesCbc128 => "aes128",
            EncAlg::AesCbc192 => "aes192",
            EncAlg::AesCbc256 => "aes256",
            EncAlg::TripleDesCbc => "3des",
            EncAlg::DesCbc => "des",
            EncAlg::AesGcm128 => "aes128gcm16",
            EncAlg::AesGcm192 => "aes192gcm16",
            EncAlg::AesGcm256 => "aes256gcm16",
            EncAlg::ChaCha20Poly1305 => "chacha20poly1305",
            EncAlg::AesGmac128 => "aes128gmac",
            EncAlg::AesGmac192 => "aes192gmac",
            EncAlg::AesGmac256 => "aes256gmac",
        }
    }

    /// IKEv2 Transform Type 1 identifier (IANA).
    pub const fn ikev2_id(self) -> u16 {
        match self {
            EncAlg::DesCbc => 2,
            EncAlg::TripleDesCbc => 3,
            EncAlg::Null => 11,
            EncAlg::AesCbc128 | EncAlg::AesCbc192 | EncAlg::AesCbc256 => 12,
            EncAlg::AesGcm128 | EncAlg::AesGcm192 | EncAlg::AesGcm256 => 20,
            EncAlg::AesGmac128 | EncAlg::AesGmac192 | EncAlg::AesGmac256 => 21,
            EncAlg::ChaCha20Poly1305 => 28,
        }
    }

    /// Cipher key length in bytes, without the salt.
    pub const fn key_len(self) -> usize {
        match self {
            EncAlg::Null => 0,
            EncAlg::DesCbc => 8,
            EncAlg::AesCbc128 | EncAlg::AesGcm128 | EncAlg::AesGmac128 => 16,
            EncAlg::AesCbc192 | EncAlg::AesGcm192 | EncAlg::AesGmac192 | EncAlg::TripleDesCbc => 24,
            EncAlg::AesCbc256 | EncAlg::AesGcm256 | EncAlg::AesGmac256 => 32,
            EncAlg::ChaCha20Poly1305 => 32,
        }
    }

    /// Salt length: the 4 bytes of keying material after the key (RFC 4106 §8.1, RFC 4543
    /// §3.2, RFC 7634 §2).
    pub const fn salt_len(self) -> usize {
        if self.is_combined() { 4 } else { 0 }
    }

    /// Keying material: key followed by salt.
    pub const fn keymat_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// A combined-mode algorithm (AEAD or GMAC) that carries its own ICV.
    pub const fn is_combined(self) -> bool {
        matches!(
            self,
            EncAlg::AesGcm128
                | EncAlg::AesGcm192
                | EncAlg::AesGcm256
                | EncAlg::ChaCha20Poly1305
                | EncAlg::AesGmac128
                | EncAlg::AesGmac192
                | EncAlg::AesGmac256
        )
    }

    /// Whether the payload is kept confidential.
    pub const fn encrypts(self) -> bool {
        !matches!(
            self,
            EncAlg::Null | EncAlg::AesGmac128 | EncAlg::AesGmac192 | EncAlg::AesGmac256
        )
    }

    /// Bytes of IV carried in each packet.
    pub const fn iv_len(self) -> usize {
        match self {
            EncAlg::Null => 0,
            EncAlg::AesCbc128 | EncAlg::AesCbc192 | EncAlg::AesCbc256 => 16,
            EncAlg::TripleDesCbc | EncAlg::DesCbc => 8,
            _ => 8,
        }
    }

    /// Cipher block length (1 for stream and null modes).
    pub const fn block_len(self) -> usize {
        match self {
            EncAlg::AesCbc128 | EncAlg::AesCbc192 | EncAlg::AesCbc256 => 16,
            EncAlg::TripleDesCbc | EncAlg::DesCbc => 8,
            _ => 1,
        }
    }

    /// ICV length of a combined-mode algorithm (0 otherwise).
    pub const fn combined_icv_len(self) -> usize {
        if self.is_combined() { 16 } else { 0 }
    }
}

impl AuthAlg {
    pub const ALL: &'static [AuthAlg] = &[
        AuthAlg::None,
        AuthAlg::HmacSha1_96,
        AuthAlg::HmacSha256_128,
        AuthAlg::HmacSha384_192,
        AuthAlg::HmacSha512_256,
        AuthAlg::AesCmac96,
        AuthAlg::AesGmac128,
        AuthAlg::AesGmac192,
        AuthAlg::AesGmac256,
        AuthAlg::HmacMd5_96,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            AuthAlg::None => "none",
            AuthAlg::HmacSha1_96 => "sha1",
            AuthAlg::HmacSha256_128 => "sha256",
            AuthAlg::HmacSha384_192 => "sha384",
            AuthAlg::HmacSha512_256 => "sha512",
            AuthAlg::AesCmac96 => "aescmac",
            AuthAlg::AesGmac128 => "aes128gmac",
            AuthAlg::AesGmac192 => "aes192gmac",
            AuthAlg::AesGmac256 => "aes256gmac",
            AuthAlg::HmacMd5_96 => "md5",
        }
    }

    /// IKEv2 Transform Type 3 identifier (IANA); 0 for none.
    pub const fn ikev2_id(self) -> u16 {
        match self {
            AuthAlg::None => 0,
            AuthAlg::HmacMd5_96 => 1,
            AuthAlg::HmacSha1_96 => 2,
            AuthAlg::HmacSha256_128 => 12,
            AuthAlg::HmacSha384_192 => 13,
            AuthAlg::HmacSha512_256 => 14,
            AuthAlg::AesCmac96 => 8,
            AuthAlg::AesGmac128 => 9,
            AuthAlg::AesGmac192 => 10,
            AuthAlg::AesGmac256 => 11,
        }
    }

    /// Key length in bytes: the hash output length for HMAC (RFC 2404 / RFC 4868 §2.1.1),
    /// the AES-128 key for AES-CMAC-96 (RFC 4494 §2), the AES key and 4-byte salt for AES-GMAC
    /// (RFC 4543 §5.4).
    pub const fn key_len(self) -> usize {
        match self {
            AuthAlg::None => 0,
            AuthAlg::HmacMd5_96 | AuthAlg::AesCmac96 => 16,
            AuthAlg::AesGmac128 => 20,
            AuthAlg::AesGmac192 => 28,
            AuthAlg::AesGmac256 => 36,
            AuthAlg::HmacSha1_96 => 20,
            AuthAlg::HmacSha256_128 => 32,
            AuthAlg::HmacSha384_192 => 48,
            AuthAlg::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes; for AES-GMAC the whole Authentication Data, IV
    /// ([`iv_len`](Self::iv_len)) and tag.
    pub const fn icv_len(self) -> usize {
        match self {
            AuthAlg::None => 0,
            AuthAlg::AesGmac128 | AuthAlg::AesGmac192 | AuthAlg::AesGmac256 => 8 + 16,
            AuthAlg::HmacMd5_96 | AuthAlg::HmacSha1_96 | AuthAlg::AesCmac96 => 12,
            AuthAlg::HmacSha256_128 => 16,
            AuthAlg::HmacSha384_192 => 24,
            AuthAlg::HmacSha512_256 => 32,
        }
    }
}

impl AuthAlg {
    /// Bytes of IV at the start of the Authentication Data (AES-GMAC in AH, RFC 4543 §4).
    pub const fn iv_len(self) -> usize {
        if self.is_gmac() { 8 } else { 0 }
    }

    /// AES-GMAC (RFC 4543 §4), which only AH takes as its integrity algorithm.
    pub const fn is_gmac(self) -> bool {
        matches!(
            self,
            AuthAlg::AesGmac128 | AuthAlg::AesGmac192 | AuthAlg::AesGmac256
        )
    }

    /// The AES-GCM key of an AES-GMAC integrity algorithm (the same block cipher and tag).
    pub(crate) const fn gmac_cipher(self) -> Option<EncAlg> {
        match self {
            AuthAlg::AesGmac128 => Some(EncAlg::AesGmac128),
            AuthAlg::AesGmac192 => Some(EncAlg::AesGmac192),
            AuthAlg::AesGmac256 => Some(EncAlg::AesGmac256),
            _ => None,
        }
    }
}

impl fmt::Display for EncAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for AuthAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncAlg {
    type Err = CryptoError;

    /// Accepts strongSwan keywords (`aes128gcm16`, `aes256`, `chacha20poly1305`, `3des`) and
    /// the hyphenated names of the harness (`aes-gcm-128`, `aes-cbc-256`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let a = match s.to_ascii_lowercase().as_str() {
            "null" | "enc-null" => EncAlg::Null,
            "aes128" | "aes-cbc-128" | "aes128-cbc" | "aes" => EncAlg::AesCbc128,
            "aes192" | "aes-cbc-192" | "aes192-cbc" => EncAlg::AesCbc192,
            "aes256" | "aes-cbc-256" | "aes256-cbc" => EncAlg::AesCbc256,
            "3des" | "3des-cbc" | "des3" | "tripledes" => EncAlg::TripleDesCbc,
            "des" | "des-cbc" => EncAlg::DesCbc,
            "aes128gcm16" | "aes128gcm128" | "aes-gcm-128" | "aes128-gcm" => EncAlg::AesGcm128,
            "aes192gcm16" | "aes192gcm128" | "aes-gcm-192" | "aes192-gcm" => EncAlg::AesGcm192,
            "aes256gcm16" | "aes256gcm128" | "aes-gcm-256" | "aes256-gcm" => EncAlg::AesGcm256,
            "chacha20poly1305" | "chacha20-poly1305" => EncAlg::ChaCha20Poly1305,
            "aes128gmac" | "aes-gmac-128" | "null-aes128gmac" => EncAlg::AesGmac128,
            "aes192gmac" | "aes-gmac-192" | "null-aes192gmac" => EncAlg::AesGmac192,
            "aes256gmac" | "aes-gmac-256" | "null-aes256gmac" => EncAlg::AesGmac256,
            _ => {
                return Err(CryptoError::UnknownAlgorithm {
                    kind: "encryption",
                    name: s.to_owned(),
                });
            }
        };
        Ok(a)
    }
}

impl FromStr for AuthAlg {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let a = match s.to_ascii_lowercase().as_str() {
            "none" | "" => AuthAlg::None,
            "sha1" | "sha" | "hmac-sha1-96" | "sha1-96" | "hmac-sha1" => AuthAlg::HmacSha1_96,
            "sha256" | "sha2_256" | "hmac-sha256-128" | "sha256-128" | "hmac-sha256" => {
                AuthAlg::HmacSha256_128
            }
            "sha384" | "sha2_384" | "hmac-sha384-192" | "sha384-192" | "hmac-sha384" => {
                AuthAlg::HmacSha384_192
            }
            "sha512" | "sha2_512" | "hmac-sha512-256" | "sha512-256" | "hmac-sha512" => {
                AuthAlg::HmacSha512_256
            }
            "aescmac" | "aes-cmac-96" | "aes-cmac" | "aescmac96" | "cmac" => AuthAlg::AesCmac96,
            "aes128gmac" | "aes-gmac-128" => AuthAlg::AesGmac128,
            "aes192gmac" | "aes-gmac-192" => AuthAlg::AesGmac192,
            "aes256gmac" | "aes-gmac-256" => AuthAlg::AesGmac256,
            "md5" | "hmac-md5-96" | "hmac-md5" => AuthAlg::HmacMd5_96,
            _ => {
                return Err(CryptoError::UnknownAlgorithm {
                    kind: "integrity",
                    name: s.to_owned(),
                });
            }
        };
        Ok(a)
    }
}

/// Why a transform cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("unknown {kind} algorithm {name:?}")]
    UnknownAlgorithm { kind: &'static str, name: String },
    #[error("{alg} is refused: {reason}")]
    Refused {
        alg: &'static str,
        reason: &'static str,
    },
    #[error(
        "{alg} is a legacy algorithm (RFC 8221 §5: SHOULD NOT be used); \
         set allow_legacy = true to accept it"
    )]
    LegacyNotEnabled { alg: &'static str },
    #[error(
        "{alg} without integrity is open to active attacks: an attacker can flip bits of the \
         decrypted packet, splice and replay packets undetected (RFC 4303 §3.2, RFC 8221 §5); \
         add an integrity algorithm or use an AEAD such as aes128gcm16, or set \
         allow_legacy = true to accept confidentiality-only ESP"
    )]
    NoIntegrity { alg: &'static str },
    #[error("{what} for {alg} must be {expected} bytes{detail}, got {got}")]
    KeyLength {
        what: &'static str,
        alg: &'static str,
        expected: usize,
        got: usize,
        detail: &'static str,
    },
    #[error("{alg} key is weak: {reason}")]
    WeakKey {
        alg: &'static str,
        reason: &'static str,
    },
}

/// Check an (encryption, integrity) pair against RFC 8221 and this engine's support.
pub fn check_algorithms(enc: EncAlg, auth: AuthAlg, allow_legacy: bool) -> Result<(), CryptoError> {
    match enc {
        EncAlg::DesCbc => {
            return Err(CryptoError::Refused {
                alg: "des",
                reason: "single DES has a 56-bit key and is broken (RFC 8221 §5: MUST NOT)",
            });
        }
        EncAlg::TripleDesCbc if !allow_legacy => {
            return Err(CryptoError::LegacyNotEnabled { alg: "3des" });
        }
        _ => {}
    }
    if auth == AuthAlg::HmacMd5_96 {
        return Err(CryptoError::Refused {
            alg: "md5",
            reason: "HMAC-MD5-96 is deprecated (RFC 8221 §6: MUST NOT); use sha256 or better",
        });
    }
    if auth.is_gmac() {
        return Err(CryptoError::Refused {
            alg: auth.name(),
            reason: "AES-GMAC as an integrity algorithm is AH's (RFC 4543 §4); ESP takes it as \
                     its encryption algorithm (e.g. aes128gmac, ENCR_NULL_AUTH_AES_GMAC) with \
                     integrity none",
        });
    }
    if enc.is_combined() && auth != AuthAlg::None {
        return Err(CryptoError::Refused {
            alg: auth.name(),
            reason: "a combined-mode algorithm carries its own ICV; the integrity algorithm \
                     must be none (RFC 8221 §5, RFC 7296 §3.3)",
        });
    }
    if !enc.is_combined() && auth == AuthAlg::None {
        return Err(if enc == EncAlg::Null {
            CryptoError::Refused {
                alg: "null",
                reason: "NULL encryption without integrity protects nothing (RFC 4303 §3.2, \
                         RFC 8221 §5: MUST NOT)",
            }
        } else if allow_legacy && enc.block_len() > 1 {
            // the appliances' "ESP confidentiality": accepted on request, with a warning
            // from whoever configures it (see `confidentiality_only`)
            return Ok(());
        } else {
            CryptoError::NoIntegrity { alg: enc.name() }
        });
    }
    Ok(())
}

/// Whether (enc, auth) is confidentiality-only ESP (CBC without integrity), which
/// [`check_algorithms`] accepts only with `allow_legacy`: callers warn when they install one.
pub const fn confidentiality_only(enc: EncAlg, auth: AuthAlg) -> bool {
    matches!(auth, AuthAlg::None) && !enc.is_combined() && enc.block_len() > 1
}

/// The warning for a confidentiality-only SA: the active attacks it lets through.
pub const CONFIDENTIALITY_ONLY_WARNING: &str = "confidentiality-only ESP (no integrity) is \
    accepted because allow_legacy = true: an active attacker can flip bits of the decrypted \
    packets, cut and splice ciphertext blocks, and replay packets without detection (the \
    anti-replay window needs integrity); RFC 4303 §3.2 and RFC 8221 §5 advise against it";

/// Check AH's integrity algorithm (RFC 4302, RFC 8221 §6 for the HMACs).
pub fn check_ah_algorithm(auth: AuthAlg) -> Result<(), CryptoError> {
    match auth {
        AuthAlg::HmacMd5_96 => Err(CryptoError::Refused {
            alg: "md5",
            reason: "HMAC-MD5-96 is deprecated (RFC 8221 §6: MUST NOT); use sha256 or better",
        }),
        AuthAlg::None => Err(CryptoError::Refused {
            alg: "none",
            reason: "AH without an integrity algorithm protects nothing (RFC 4302 §3.2)",
        }),
        _ => Ok(()),
    }
}

/// Check key lengths (and 3DES key distinctness) for an algorithm pair.
pub fn check_keys(
    enc: EncAlg,
    enc_key: &[u8],
    auth: AuthAlg,
    auth_key: &[u8],
) -> Result<(), CryptoError> {
    check_enc_key(enc, enc_key)?;
    check_auth_key(auth, auth_key)
}

/// Check the encryption keying material: length (key + salt) and, for 3DES, that the three
/// keys differ.
pub fn check_enc_key(enc: EncAlg, enc_key: &[u8]) -> Result<(), CryptoError> {
    if enc_key.len() != enc.keymat_len() {
        return Err(CryptoError::KeyLength {
            what: "encryption key",
            alg: enc.name(),
            expected: enc.keymat_len(),
            got: enc_key.len(),
            detail: if enc.salt_len() > 0 {
                " (key followed by a 4-byte salt)"
            } else {
                ""
            },
        });
    }
    if enc == EncAlg::TripleDesCbc {
        // Ignore the DES parity bits when comparing the three keys (RFC 2451 §2.3 lets K1,
        // K2, K3 be independent; equal neighbours collapse 3DES to single DES).
        let k = |i: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            for (d, s) in a.iter_mut().zip(&enc_key[i * 8..i * 8 + 8]) {
                *d = s & 0xfe;
            }
            a
        };
        if k(0) == k(1) || k(1) == k(2) {
            return Err(CryptoError::WeakKey {
                alg: "3des",
                reason: "K1 = K2 or K2 = K3 reduces 3DES to single DES",
            });
        }
    }
    Ok(())
}

/// Check the integrity key length.
pub fn check_auth_key(auth: AuthAlg, auth_key: &[u8]) -> Result<(), CryptoError> {
    if auth_key.len() != auth.key_len() {
        return Err(CryptoError::KeyLength {
            what: "integrity key",
            alg: auth.name(),
            expected: auth.key_len(),
            got: auth_key.len(),
            detail: if auth.is_gmac() {
                " (key followed by a 4-byte salt)"
            } else {
                ""
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for &a in EncAlg::ALL {
            assert_eq!(a.name().parse::<EncAlg>().unwrap(), a);
        }
        for &a in AuthAlg::ALL {
            assert_eq!(a.name().parse::<AuthAlg>().unwrap(), a);
        }
        assert_eq!("aes-gcm-128".parse::<EncAlg>().unwrap(), EncAlg::AesGcm128);
        assert_eq!(
            "hmac-sha256-128".parse::<AuthAlg>().unwrap(),
            AuthAlg::HmacSha256_128
        );
        assert!("rot13".parse::<EncAlg>().is_err());
    }

    #[test]
    fn rfc8221_refusals_say_why() {
        let e = check_algorithms(EncAlg::DesCbc, AuthAlg::HmacSha1_96, true).unwrap_err();
        assert!(e.to_string().contains("MUST NOT"), "{e}");
        let e = check_algorithms(EncAlg::AesCbc128, AuthAlg::HmacMd5_96, false).unwrap_err();
        assert!(e.to_string().contains("MD5"), "{e}");
        let e = check_algorithms(EncAlg::Null, AuthAlg::None, false).unwrap_err();
        assert!(e.to_string().contains("without integrity"), "{e}");
        let e = check_algorithms(EncAlg::TripleDesCbc, AuthAlg::HmacSha1_96, false).unwrap_err();
        assert!(matches!(e, CryptoError::LegacyNotEnabled { .. }));
        assert!(check_algorithms(EncAlg::TripleDesCbc, AuthAlg::HmacSha1_96, true).is_ok());
        assert!(check_algorithms(EncAlg::AesGcm128, AuthAlg::HmacSha1_96, false).is_err());
        // AES-GMAC integrity is AH's; ESP names ENCR_NULL_AUTH_AES_GMAC instead
        let e = check_algorithms(EncAlg::Null, AuthAlg::AesGmac128, false).unwrap_err();
        assert!(e.to_string().contains("AH's (RFC 4543"), "{e}");
        assert!(check_ah_algorithm(AuthAlg::AesGmac256).is_ok());
        let e = check_auth_key(AuthAlg::AesGmac128, &[0; 16]).unwrap_err();
        assert!(e.to_string().contains("4-byte salt"), "{e}");
        let e = check_algorithms(EncAlg::AesCbc256, AuthAlg::None, false).unwrap_err();
        assert!(e.to_string().contains("allow_legacy = true"), "{e}");
        assert!(e.to_string().contains("active attacks"), "{e}");
        // confidentiality-only ESP: CBC ciphers only, and only on request
        assert!(check_algorithms(EncAlg::AesCbc256, AuthAlg::None, true).is_ok());
        assert!(check_algorithms(EncAlg::TripleDesCbc, AuthAlg::None, true).is_ok());
        assert!(check_algorithms(EncAlg::Null, AuthAlg::None, true).is_err());
        assert!(check_algorithms(EncAlg::DesCbc, AuthAlg::None, true).is_err());
        assert!(confidentiality_only(EncAlg::AesCbc128, AuthAlg::None));
        assert!(!confidentiality_only(EncAlg::AesGcm128, AuthAlg::None));
        assert!(!confidentiality_only(
            EncAlg::AesCbc128,
            AuthAlg::HmacSha1_96
        ));
        let e = check_algorithms(EncAlg::TripleDesCbc, AuthAlg::HmacSha1_96, false).unwrap_err();
        assert!(e.to_string().contains("allow_legacy"), "{e}");
        assert!(check_ah_algorithm(AuthAlg::HmacSha1_96).is_ok());
        assert!(check_ah_algorithm(AuthAlg::HmacMd5_96).is_err());
        assert!(check_ah_algorithm(AuthAlg::None).is_err());
        assert!(check_algorithms(EncAlg::Null, AuthAlg::HmacSha512_256, false).is_ok());
        assert!(check_algorithms(EncAlg::ChaCha20Poly1305, AuthAlg::None, false).is_ok());
    }

    #[test]
    fn key_lengths() {
        assert!(check_keys(EncAlg::AesGcm128, &[0; 20], AuthAlg::None, &[]).is_ok());
        let e = check_keys(EncAlg::AesGcm128, &[0; 16], AuthAlg::None, &[]).unwrap_err();
        assert!(e.to_string().contains("salt"), "{e}");
        assert!(check_keys(EncAlg::AesCbc128, &[0; 16], AuthAlg::HmacSha1_96, &[0; 16]).is_err());
        let mut k = [1u8; 24];
        k[8..].fill(2);
        assert!(check_keys(EncAlg::TripleDesCbc, &k, AuthAlg::HmacSha1_96, &[0; 20]).is_err());
        // parity bits do not make keys different
        k[8..16].fill(3);
        assert!(check_keys(EncAlg::TripleDesCbc, &k, AuthAlg::HmacSha1_96, &[0; 20]).is_err());
        k[16..].fill(5);
        assert!(check_keys(EncAlg::TripleDesCbc, &k, AuthAlg::HmacSha1_96, &[0; 20]).is_ok());
    }
}
