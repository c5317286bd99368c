//! The encrypted payload SK (RFC 7296 §3.14): protecting a message's payloads with the IKE
//! SA's keys and opening the peer's. AES-GCM (RFC 5282) and ChaCha20-Poly1305 (RFC 7634)
//! through ring, AES-CBC with HMAC-SHA2/SHA1 (RFC 7296, RFC 4868) through RustCrypto. The
//! integrity check comes before any decryption, and its failure says nothing more than
//! "failed".

use aes::cipher::KeyInit;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::kdf::{IkeKeys, Secret};
use super::proposal::{Encr, Integ};
use super::wire::{
    HEADER_LEN, Header, PAYLOAD_HEADER_LEN, Payload, PayloadType, SkAt, WireError, emit_chain,
    parse_chain,
};

/// Why a protected message could not be built or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    #[error("the encrypted payload is too short ({0} bytes)")]
    Short(usize),
    #[error("integrity check failed")]
    Integrity,
    #[error("bad padding")]
    Padding,
    #[error("the encrypted payload's contents: {0}")]
    Inner(#[from] WireError),
    #[error("no random bytes")]
    Random,
    #[error("the message would be {0} bytes")]
    TooLong(usize),
}

/// One direction's keys.
struct Keys {
    encr: Secret,
    integ: Secret,
}

/// The IKE SA's message protection, from our side: what we send is protected with the
/// keys of our role (SK_ei/SK_ai for the original initiator), what we receive with the
/// other's.
pub struct Protection {
    encr: Encr,
    integ: Option<Integ>,
    out: Keys,
    inb: Keys,
    /// AEAD IVs are a counter: unique per key, never repeated (RFC 5282 §3.1).
    iv_counter: u64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("encr", &self.encr)
            .field("integ", &self.integ)
            .finish_non_exhaustive()
    }
}

fn aead_alg(e: Encr) -> Option<&'static aead::Algorithm> {
    match e {
        Encr::AesGcm16(128) => Some(&aead::AES_128_GCM),
        Encr::AesGcm16(256) => Some(&aead::AES_256_GCM),
        Encr::ChaCha20Poly1305 => Some(&aead::CHACHA20_POLY1305),
        _ => None,
    }
}

fn hmac_tag(integ: Integ, key: &[u8], parts: &[&[u8]]) -> Secret {
    let mut full = integ.hmac().prf(key, parts);
    full.truncate(integ.icv_len());
    full
}

fn integ_verify(integ: Integ, key: &[u8], data: &[u8], icv: &[u8]) -> bool {
    icv.len() == integ.icv_len() && integ.hmac().verify(key, &[data], icv, true)
}

fn cbc_blocks<C>(key: &[u8], iv: &[u8], data: &mut [u8], encrypt: bool) -> bool
where
    C: aes::cipher::BlockCipherEncrypt + aes::cipher::BlockCipherDecrypt + KeyInit,
{
    let (blocks, rest) = aes::cipher::Block::<C>::slice_as_chunks_mut(data);
    if !rest.is_empty() {
        return false;
    }
    if encrypt {
        match cbc::Encryptor::<C>::new_from_slices(key, iv) {
            Ok(mut c) => c.encrypt_blocks(blocks),
            Err(_) => return false,
        }
    } else {
        match cbc::Decryptor::<C>::new_from_slices(key, iv) {
            Ok(mut c) => c.decrypt_blocks(blocks),
            Err(_) => return false,
        }
    }
    true
}

fn cbc(bits: u16, key: &[u8], iv: &[u8], data: &mut [u8], encrypt: bool) -> bool {
    match bits {
        128 => cbc_blocks::<aes::Aes128>(key, iv, data, encrypt),
        192 => cbc_blocks::<aes::Aes192>(key, iv, data, encrypt),
        256 => cbc_blocks::<aes::Aes256>(key, iv, data, encrypt),
        _ => false,
    }
}

impl Protection {
    /// Keys from the IKE SA's key material; `initiator` is our role in the IKE SA (the
    /// original initiator, or the initiator of the rekey that created it).
    pub fn new(encr: Encr, integ: Option<Integ>, keys: &IkeKeys, initiator: bool) -> Protection {
        let (ei, er, ai, ar) = (&keys.ei, &keys.er, &keys.ai, &keys.ar);
        let k = |e: &Secret, a: &Secret| Keys {
            encr: Zeroizing::new(e.to_vec()),
            integ: Zeroizing::new(a.to_vec()),
        };
        let (out, inb) = if initiator {
            (k(ei, ai), k(er, ar))
        } else {
            (k(er, ar), k(ei, ai))
        };
        Protection {
            encr,
            integ,
            out,
            inb,
            iv_counter: 0,
            rng: SystemRandom::new(),
        }
    }

    fn iv_len(&self) -> usize {
        if self.encr.is_aead() { 8 } else { 16 }
    }

    fn icv_len(&self) -> usize {
        match self.integ {
            Some(i) if !self.encr.is_aead() => i.icv_len(),
            _ => 16,
        }
    }

    /// How many bytes SK adds around `inner` bytes of payloads (to decide on fragmenting
    /// or to size buffers).
    pub fn overhead(&self, inner: usize) -> usize {
        let padded = if self.encr.is_aead() {
            inner + 1
        } else {
            (inner + 1).div_ceil(16) * 16
        };
        PAYLOAD_HEADER_LEN + self.iv_len() + padded - inner + self.icv_len()
    }

    /// A whole message: `header` (its next-payload and length are set here) and `inner`
    /// in an SK payload.
    pub fn seal(&mut self, header: &Header, inner: &[Payload]) -> Result<Vec<u8>, SkError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(256));
        emit_chain(inner, PayloadType::NONE, &mut plain);
        let first = inner.first().map(|p| p.ty()).unwrap_or(PayloadType::NONE);
        let pad = if self.encr.is_aead() {
            0
        } else {
            (16 - (plain.len() + 1) % 16) % 16
        };
        plain.extend(std::iter::repeat_n(0u8, pad));
        plain.push(pad as u8);
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let sk_len = PAYLOAD_HEADER_LEN + iv_len + plain.len() + icv_len;
        let total = HEADER_LEN + sk_len;
        if total > super::wire::MAX_MESSAGE {
            return Err(SkError::TooLong(total));
        }
        let mut h = *header;
        h.next_payload = PayloadType::SK;
        h.length = total as u32;
        let mut out = Vec::with_capacity(total);
        h.emit(&mut out);
        out.extend_from_slice(&[first.0, 0]);
        out.extend_from_slice(&(sk_len as u16).to_be_bytes());
        let aad_end = out.len();
        let mut iv = [0u8; 16];
        if self.encr.is_aead() {
            self.iv_counter += 1;
            iv[..8].copy_from_slice(&self.iv_counter.to_be_bytes());
        } else {
            self.rng.fill(&mut iv).map_err(|_| SkError::Random)?;
        }
        out.extend_from_slice(&iv[..iv_len]);
        match aead_alg(self.encr) {
            Some(alg) => {
                let (key, salt) = self.out.encr.split_at(self.out.encr.len() - 4);
                let key = aead::LessSafeKey::new(
                    aead::UnboundKey::new(alg, key).map_err(|_| SkError::Integrity)?,
                );
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&iv[..8]);
                let mut body = plain.to_vec();
                key.seal_in_place_append_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(&out[..aad_end]),
                    &mut body,
                )
                .map_err(|_| SkError::Integrity)?;
                out.extend_from_slice(&body);
            }
            None => {
                let Encr::AesCbc(bits) = self.encr else {
                    return Err(SkError::Integrity);
                };
                let integ = self.integ.ok_or(SkError::Integrity)?;
                let mut body = plain.to_vec();
                if !cbc(bits, &self.out.encr, &iv, &mut body, true) {
                    return Err(SkError::Padding);
                }
                out.extend_from_slice(&body);
                let tag = hmac_tag(integ, &self.out.integ, &[&out]);
                out.extend_from_slice(&tag);
            }
        }
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Check and decrypt the SK payload of `bytes` (a whole message, SK at `sk`), and
    /// decode its payloads.
    pub fn open(&self, bytes: &[u8], sk: SkAt) -> Result<Vec<Payload>, SkError> {
        let body_at = sk.offset + PAYLOAD_HEADER_LEN;
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        let body = bytes.get(body_at..).ok_or(SkError::Short(0))?;
        if body.len() < iv_len + icv_len + 1 {
            return Err(SkError::Short(body.len()));
        }
        let iv = &body[..iv_len];
        let mut plain: Zeroizing<Vec<u8>> = Zeroizing::new(vec![]);
        match aead_alg(self.encr) {
            Some(alg) => {
                let (key, salt) = self.inb.encr.split_at(self.inb.encr.len() - 4);
                let key = aead::LessSafeKey::new(
                    aead::UnboundKey::new(alg, key).map_err(|_| SkError::Integrity)?,
                );
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(iv);
                let mut ct = body[iv_len..].to_vec();
                let n = key
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(&bytes[..body_at]),
                        &mut ct,
                    )
                    .map_err(|_| SkError::Integrity)?
                    .len();
                ct.truncate(n);
                *plain = ct;
            }
            None => {
                let (Encr::AesCbc(bits), Some(integ)) = (self.encr, self.integ) else {
                    return Err(SkError::Integrity);
                };
                let (signed, icv) = bytes.split_at(bytes.len() - icv_len);
                if !integ_verify(integ, &self.inb.integ, signed, icv) {
                    return Err(SkError::Integrity);
                }
                let mut ct = body[iv_len..body.len() - icv_len].to_vec();
                if ct.len() % 16 != 0 || !cbc(bits, &self.inb.encr, iv, &mut ct, false) {
                    return Err(SkError::Padding);
                }
                *plain = ct;
            }
        }
        let pad = *plain.last().ok_or(SkError::Padding)? as usize;
        if pad + 1 > plain.len() {
            return Err(SkError::Padding);
        }
        let content = &plain[..plain.len() - 1 - pad];
        let (payloads, nested) = parse_chain(sk.inner_first, content, body_at + iv_len)?;
        if nested.is_some() {
            return Err(SkError::Padding);
        }
        Ok(payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::kdf::{KeyLengths, Prf};
    use crate::ike::wire::{ExchangeType, Message, Notify, NotifyType, VERSION, flags};

    fn keys(encr: Encr, integ: Option<Integ>) -> IkeKeys {
        Prf::HmacSha256
            .ike_keys(
                b"skeyseed",
                &[1; 32],
                &[2; 32],
                [[3; 8], [4; 8]],
                KeyLengths {
                    integ: integ.map(|i| i.key_len()).unwrap_or(0),
                    encr: encr.keymat_len(),
                },
            )
            .expect("keys")
    }

    fn header() -> Header {
        Header {
            spi_i: [3; 8],
            spi_r: [4; 8],
            next_payload: PayloadType::NONE,
            version: VERSION,
            exchange: ExchangeType::INFORMATIONAL,
            flags: flags::INITIATOR,
            message_id: 7,
            length: 0,
        }
    }

    const SUITES: [(Encr, Option<Integ>); 6] = [
        (Encr::AesGcm16(128), None),
        (Encr::AesGcm16(256), None),
        (Encr::ChaCha20Poly1305, None),
        (Encr::AesCbc(128), Some(Integ::HmacSha256_128)),
        (Encr::AesCbc(256), Some(Integ::HmacSha512_256)),
        (Encr::AesCbc(192), Some(Integ::HmacSha1_96)),
    ];

    #[test]
    fn seal_open_both_ways_and_every_bit_flip_fails() {
        for (e, i) in SUITES {
            let k = keys(e, i);
            let mut a = Protection::new(e, i, &k, true);
            let mut b = Protection::new(e, i, &k, false);
            for n in [0usize, 1, 15, 16, 100] {
                let inner = vec![Payload::Notify(Notify::new(NotifyType(40000), vec![9; n]))];
                let msg = a.seal(&header(), &inner).expect("seal");
                let m = Message::parse(&msg).expect("parse");
                let sk = m.sk.expect("sk");
                assert_eq!(b.open(&msg, sk).expect("open"), inner, "{e:?} {n}");
                // our own message is not accepted as the peer's (different keys)
                assert_eq!(a.open(&msg, sk), Err(SkError::Integrity));
                for bit in (0..msg.len() * 8).step_by(7) {
                    let mut bad = msg.clone();
                    bad[bit / 8] ^= 1 << (bit % 8);
                    let r = Message::parse(&bad)
                        .ok()
                        .and_then(|m| m.sk)
                        .map(|s| b.open(&bad, s));
                    assert!(
                        !matches!(r, Some(Ok(_))),
                        "{e:?}: flip of bit {bit} accepted"
                    );
                }
                let back = b.seal(&header(), &inner).expect("seal back");
                let m = Message::parse(&back).expect("parse");
                assert_eq!(a.open(&back, m.sk.expect("sk")).expect("open"), inner);
            }
        }
    }

    /// AES-GCM with ring against RustCrypto's aes-gcm on the same key, salt and IV: an
    /// independent implementation decrypts what we sealed.
    #[test]
    fn gcm_matches_rustcrypto() {
        use aes_gcm::aead::{AeadInOut, KeyInit as _};
        let e = Encr::AesGcm16(128);
        let k = keys(e, None);
        let mut a = Protection::new(e, None, &k, true);
        let inner = vec![Payload::Nonce(vec![5; 32])];
        let msg = a.seal(&header(), &inner).expect("seal");
        let sk_at = HEADER_LEN;
        let body = &msg[sk_at + 4..];
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&k.ei[..16]).expect("key");
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&k.ei[16..20]);
        nonce[4..].copy_from_slice(&body[..8]);
        let (ct, tag) = body[8..].split_at(body.len() - 8 - 16);
        let mut plain = ct.to_vec();
        let tag: [u8; 16] = tag.try_into().expect("tag");
        cipher
            .decrypt_inout_detached(
                &nonce.into(),
                &msg[..sk_at + 4],
                plain.as_mut_slice().into(),
                &tag.into(),
            )
            .expect("RustCrypto opens it");
        let mut want = vec![];
        emit_chain(&inner, PayloadType::NONE, &mut want);
        want.push(0);
        assert_eq!(plain, want);
    }
}
