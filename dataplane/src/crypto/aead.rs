//! Combined-mode keys: AES-GCM, AES-GMAC and ChaCha20-Poly1305, all with a 16-byte tag.

use super::EncAlg;
use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::array::Array;
use ring::aead as ra;

pub(crate) const TAG_LEN: usize = 16;

/// An AEAD key. ring does AES-128/256-GCM and ChaCha20-Poly1305; RustCrypto covers AES-192.
// The ring key stays inline: it is the one used per packet; the rare AES-192 key is boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AeadKey {
    Ring(ra::LessSafeKey),
    Aes192(Box<aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>>),
}

impl core::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AeadKey::Ring(_) => "AeadKey::Ring(..)",
            AeadKey::Aes192(_) => "AeadKey::Aes192(..)",
        })
    }
}

/// The AEAD operation failed: bad tag on open, or input too long on seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadFailed;

impl AeadKey {
    /// `key` is the cipher key without salt; its length was checked by `alg::check_keys`.
    pub(crate) fn new(alg: EncAlg, key: &[u8]) -> Option<Self> {
        use aes_gcm::aead::KeyInit;
        let ring_alg = match alg {
            EncAlg::AesGcm128 | EncAlg::AesGmac128 => &ra::AES_128_GCM,
            EncAlg::AesGcm256 | EncAlg::AesGmac256 => &ra::AES_256_GCM,
            EncAlg::ChaCha20Poly1305 => &ra::CHACHA20_POLY1305,
            EncAlg::AesGcm192 | EncAlg::AesGmac192 => {
                let k = aes_gcm::AesGcm::<aes::Aes192, _>::new_from_slice(key).ok()?;
                return Some(AeadKey::Aes192(Box::new(k)));
            }
            _ => return None,
        };
        let k = ra::UnboundKey::new(ring_alg, key).ok()?;
        Some(AeadKey::Ring(ra::LessSafeKey::new(k)))
    }

    /// Encrypt `in_out` in place and return the tag.
    #[inline(always)]
    pub(crate) fn seal(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadFailed> {
        let mut out = [0u8; TAG_LEN];
        match self {
            AeadKey::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ra::Nonce::assume_unique_for_key(nonce),
                        ra::Aad::from(aad),
                        in_out,
                    )
                    .map_err(|_| AeadFailed)?;
                out.copy_from_slice(tag.as_ref());
            }
            AeadKey::Aes192(k) => {
                let tag = k
                    .encrypt_inout_detached(&Array::from(nonce), aad, in_out.into())
                    .map_err(|_| AeadFailed)?;
                out.copy_from_slice(&tag);
            }
        }
        Ok(out)
    }

    /// Verify the tag at the end of `ct_tag` and decrypt the bytes before it in place.
    /// The tag comparison is constant time in both libraries.
    #[inline(always)]
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ct_tag: &mut [u8],
    ) -> Result<(), AeadFailed> {
        match self {
            AeadKey::Ring(k) => k
                .open_in_place(
                    ra::Nonce::assume_unique_for_key(nonce),
                    ra::Aad::from(aad),
                    ct_tag,
                )
                .map(|_| ())
                .map_err(|_| AeadFailed),
            AeadKey::Aes192(k) => {
                let split = ct_tag.len().checked_sub(TAG_LEN).ok_or(AeadFailed)?;
                let (ct, tag) = ct_tag.split_at_mut(split);
                let tag = Array::try_from(&*tag).map_err(|_| AeadFailed)?;
                k.decrypt_inout_detached(&Array::from(nonce), aad, ct.into(), &tag)
                    .map_err(|_| AeadFailed)
            }
        }
    }
}
