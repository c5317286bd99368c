//! CBC-mode ciphers (AES-CBC, RFC 3602; 3DES-CBC, RFC 2451) over RustCrypto block ciphers.
//!
//! The `cbc` crate is used with a *reference* to a per-SA key schedule, so nothing is
//! expanded or copied per packet; decryption runs the AES-NI backend's parallel blocks.

use super::EncAlg;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    KeyInit,
};
use aes::{Aes128Dec, Aes128Enc, Aes192Dec, Aes192Enc, Aes256Dec, Aes256Enc};
use des::TdesEde3;

/// A CBC key schedule for one direction.
pub(crate) enum CbcKey {
    Aes128Enc(Aes128Enc),
    Aes192Enc(Aes192Enc),
    Aes256Enc(Aes256Enc),
    Aes128Dec(Aes128Dec),
    Aes192Dec(Aes192Dec),
    Aes256Dec(Aes256Dec),
    Tdes(Box<TdesEde3>),
}

impl core::fmt::Debug for CbcKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CbcKey(..)")
    }
}

fn enc_blocks<C: BlockCipherEncrypt>(c: &C, iv: &[u8], data: &mut [u8]) -> bool {
    let Ok(iv) = <&aes::cipher::Block<C>>::try_from(iv) else {
        return false;
    };
    let (blocks, rest) = aes::cipher::Block::<C>::slice_as_chunks_mut(data);
    if !rest.is_empty() {
        return false;
    }
    cbc::Encryptor::<&C>::inner_iv_init(c, iv).encrypt_blocks(blocks);
    true
}

fn dec_blocks<C: BlockCipherDecrypt>(c: &C, iv: &[u8], data: &mut [u8]) -> bool {
    let Ok(iv) = <&aes::cipher::Block<C>>::try_from(iv) else {
        return false;
    };
    let (blocks, rest) = aes::cipher::Block::<C>::slice_as_chunks_mut(data);
    if !rest.is_empty() {
        return false;
    }
    cbc::Decryptor::<&C>::inner_iv_init(c, iv).decrypt_blocks(blocks);
    true
}

fn enc_one<C: BlockCipherEncrypt>(c: &C, block: &mut [u8]) -> bool {
    match <&mut aes::cipher::Block<C>>::try_from(block) {
        Ok(b) => {
            c.encrypt_block(b);
            true
        }
        Err(_) => false,
    }
}

impl CbcKey {
    /// Build the schedule for encryption (`outbound`) or decryption; lengths were checked.
    pub(crate) fn new(alg: EncAlg, key: &[u8], outbound: bool) -> Option<Self> {
        Some(match (alg, outbound) {
            (EncAlg::AesCbc128, true) => CbcKey::Aes128Enc(Aes128Enc::new_from_slice(key).ok()?),
            (EncAlg::AesCbc192, true) => CbcKey::Aes192Enc(Aes192Enc::new_from_slice(key).ok()?),
            (EncAlg::AesCbc256, true) => CbcKey::Aes256Enc(Aes256Enc::new_from_slice(key).ok()?),
            (EncAlg::AesCbc128, false) => CbcKey::Aes128Dec(Aes128Dec::new_from_slice(key).ok()?),
            (EncAlg::AesCbc192, false) => CbcKey::Aes192Dec(Aes192Dec::new_from_slice(key).ok()?),
            (EncAlg::AesCbc256, false) => CbcKey::Aes256Dec(Aes256Dec::new_from_slice(key).ok()?),
            (EncAlg::TripleDesCbc, _) => {
                CbcKey::Tdes(Box::new(TdesEde3::new_from_slice(key).ok()?))
            }
            _ => return None,
        })
    }

    /// CBC-encrypt `data` (a whole number of blocks) in place. False if this is a decryption
    /// schedule or the lengths are wrong.
    #[inline]
    pub(crate) fn encrypt(&self, iv: &[u8], data: &mut [u8]) -> bool {
        match self {
            CbcKey::Aes128Enc(k) => enc_blocks(k, iv, data),
            CbcKey::Aes192Enc(k) => enc_blocks(k, iv, data),
            CbcKey::Aes256Enc(k) => enc_blocks(k, iv, data),
            CbcKey::Tdes(k) => enc_blocks(k.as_ref(), iv, data),
            _ => false,
        }
    }

    /// CBC-decrypt `data` (a whole number of blocks) in place.
    #[inline]
    pub(crate) fn decrypt(&self, iv: &[u8], data: &mut [u8]) -> bool {
        match self {
            CbcKey::Aes128Dec(k) => dec_blocks(k, iv, data),
            CbcKey::Aes192Dec(k) => dec_blocks(k, iv, data),
            CbcKey::Aes256Dec(k) => dec_blocks(k, iv, data),
            CbcKey::Tdes(k) => dec_blocks(k.as_ref(), iv, data),
            _ => false,
        }
    }

    /// Encrypt one block in place with the forward cipher: the IV generator of
    /// NIST SP 800-38A Appendix C (IV = E_K(nonce), nonce unique per packet).
    #[inline]
    pub(crate) fn encrypt_block(&self, block: &mut [u8]) -> bool {
        match self {
            CbcKey::Aes128Enc(k) => enc_one(k, block),
            CbcKey::Aes192Enc(k) => enc_one(k, block),
            CbcKey::Aes256Enc(k) => enc_one(k, block),
            CbcKey::Tdes(k) => enc_one(k.as_ref(), block),
            _ => false,
        }
    }

    /// Decrypt one block (tests use it to steer the IV generator to a published IV).
    #[cfg(test)]
    pub(crate) fn decrypt_block_with(alg: EncAlg, key: &[u8], block: &mut [u8]) {
        match alg {
            EncAlg::AesCbc128 => {
                let k = Aes128Dec::new_from_slice(key).unwrap();
                k.decrypt_block(block.try_into().unwrap());
            }
            EncAlg::AesCbc192 => {
                let k = Aes192Dec::new_from_slice(key).unwrap();
                k.decrypt_block(block.try_into().unwrap());
            }
            EncAlg::AesCbc256 => {
                let k = Aes256Dec::new_from_slice(key).unwrap();
                k.decrypt_block(block.try_into().unwrap());
            }
            EncAlg::TripleDesCbc => {
                let k = TdesEde3::new_from_slice(key).unwrap();
                k.decrypt_block(block.try_into().unwrap());
            }
            _ => unreachable!(),
        }
    }
}
