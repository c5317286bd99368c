//! IKEv2 key exchange (RFC 7296 §1.2, the KE payload): the Diffie-Hellman groups xsec-ike
//! offers (RFC 8247 §2.4): 14 (2048-bit MODP, RFC 3526), 19 and 20 (NIST P-256 and P-384,
//! RFC 5903: public values x ‖ y) and 31 (Curve25519, RFC 8031). The arithmetic comes from
//! well-kept crates: crypto-bigint (constant-time modular exponentiation), p256/p384,
//! x25519-dalek. Peers' public values are checked before use, shared secrets are wiped when
//! dropped.

use super::kdf::Secret;
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U2048};
use zeroize::Zeroizing;

/// A Diffie-Hellman group, by its IKEv2 transform ID (type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Modp2048,
    Ecp256,
    Ecp384,
    Curve25519,
}

/// Why a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeError {
    #[error("the peer's public value has {got} bytes; group {group} takes {want}")]
    Length { group: u16, got: usize, want: usize },
    #[error("the peer's public value is not valid in group {0}")]
    Invalid(u16),
    #[error("the private value does not fit group {0}")]
    Private(u16),
    #[error("the system random generator failed")]
    Random,
}

/// RFC 3526 §3, the 2048-bit MODP group's prime (generator 2), in hex.
pub const MODP2048_PRIME_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);
const MODP2048_P: U2048 = U2048::from_be_hex(MODP2048_PRIME_HEX);
/// Bytes of a 2048-bit MODP group's private exponent (twice the group's ~112-bit strength,
/// rounded up generously: 384 bits, as the published vectors use).
const MODP2048_PRIVATE: usize = 48;

fn modp_params() -> FixedMontyParams<{ U2048::LIMBS }> {
    // the prime is odd: `Odd::new` cannot fail on it
    let odd = Option::<Odd<U2048>>::from(Odd::new(MODP2048_P))
        .unwrap_or_else(|| unreachable!("the RFC 3526 prime is odd"));
    FixedMontyParams::new_vartime(odd)
}

/// `base^exp mod p` in the 2048-bit group, constant-time in `exp`.
/// `base^exp mod p`, in time that depends on the exponent's length in bytes (public: 48 for
/// our private values) and not on its value. Only that many bits are walked: a 384-bit
/// exponent costs a fifth of a 2048-bit one.
fn modp_pow(base: &U2048, exp: &[u8]) -> Secret {
    let params = modp_params();
    let bits = (exp.len() * 8) as u32;
    let r = FixedMontyForm::new(base, &params)
        .pow_bounded_exp(&*u2048(exp), bits)
        .retrieve();
    Zeroizing::new(r.to_be_bytes().as_ref().to_vec())
}

/// `bytes` (at most 256) as a 2048-bit number.
fn u2048(bytes: &[u8]) -> Zeroizing<U2048> {
    let mut padded = Zeroizing::new([0u8; 256]);
    padded[256 - bytes.len()..].copy_from_slice(bytes);
    Zeroizing::new(U2048::from_be_slice(&padded[..]))
}

impl Group {
    /// Its transform ID (IANA "Transform Type 4 - Key Exchange Method Transform IDs").
    pub fn id(self) -> u16 {
        match self {
            Group::Modp2048 => 14,
            Group::Ecp256 => 19,
            Group::Ecp384 => 20,
            Group::Curve25519 => 31,
        }
    }

    pub fn from_id(id: u16) -> Option<Group> {
        [
            Group::Modp2048,
            Group::Ecp256,
            Group::Ecp384,
            Group::Curve25519,
        ]
        .into_iter()
        .find(|g| g.id() == id)
    }

    /// Bytes of a public value in a KE payload (and of the shared secret for MODP).
    pub fn public_len(self) -> usize {
        match self {
            Group::Modp2048 => 256,
            Group::Ecp256 => 64,
            Group::Ecp384 => 96,
            Group::Curve25519 => 32,
        }
    }

    fn private_len(self) -> usize {
        match self {
            Group::Modp2048 => MODP2048_PRIVATE,
            Group::Ecp256 | Group::Curve25519 => 32,
            Group::Ecp384 => 48,
        }
    }
}

/// One side's Diffie-Hellman values: the private one (wiped when dropped) and the public
/// one it sends in its KE payload.
pub struct KeyPair {
    group: Group,
    private: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .field("public_len", &self.public.len())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh private value from the system's random generator (ECP: drawn again in the
    /// rare case it is not a valid scalar).
    pub fn generate(group: Group) -> Result<KeyPair, KeError> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        for _ in 0..16 {
            let mut private = Zeroizing::new(vec![0u8; group.private_len()]);
            rng.fill(&mut private).map_err(|_| KeError::Random)?;
            match KeyPair::from_private(group, &private) {
                Err(KeError::Private(_)) => continue,
                r => return r,
            }
        }
        Err(KeError::Random)
    }

    /// The pair of a given private value (the vectors' `seed`).
    pub fn from_private(group: Group, private: &[u8]) -> Result<KeyPair, KeError> {
        let public = match group {
            Group::Modp2048 => {
                if private.is_empty() || private.len() > 256 {
                    return Err(KeError::Private(group.id()));
                }
                modp_pow(&U2048::from_u64(2), private).to_vec()
            }
            Group::Ecp256 => {
                let sk = p256::SecretKey::from_slice(private)
                    .map_err(|_| KeError::Private(group.id()))?;
                sec1_xy(&sk.public_key().to_sec1_bytes(), group)?
            }
            Group::Ecp384 => {
                let sk = p384::SecretKey::from_slice(private)
                    .map_err(|_| KeError::Private(group.id()))?;
                sec1_xy(&sk.public_key().to_sec1_bytes(), group)?
            }
            Group::Curve25519 => {
                let bytes: [u8; 32] = private
                    .try_into()
                    .map_err(|_| KeError::Private(group.id()))?;
                let sk = x25519_dalek::StaticSecret::from(bytes);
                x25519_dalek::PublicKey::from(&sk).as_bytes().to_vec()
            }
        };
        Ok(KeyPair {
            group,
            private: Zeroizing::new(private.to_vec()),
            public,
        })
    }

    pub fn group(&self) -> Group {
        self.group
    }

    /// The public value, as the KE payload carries it.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's public value `peer` (MODP: padded to the
    /// modulus' length, RFC 7296 §2.14; ECP: the x coordinate, RFC 5903 §7), or why the
    /// peer's value is refused: not on the curve, 0, 1 or p-1 in the MODP group, or a
    /// Curve25519 value that gives the all-zero secret (RFC 8031 §2).
    pub fn shared(&self, peer: &[u8]) -> Result<Secret, KeError> {
        let g = self.group;
        if peer.len() != g.public_len() {
            return Err(KeError::Length {
                group: g.id(),
                got: peer.len(),
                want: g.public_len(),
            });
        }
        match g {
            Group::Modp2048 => {
                let y = u2048(peer);
                let one = U2048::ONE;
                let p_minus_1 = MODP2048_P.wrapping_sub(&one);
                if *y <= one || *y >= p_minus_1 {
                    return Err(KeError::Invalid(g.id()));
                }
                Ok(modp_pow(&y, &self.private))
            }
            Group::Ecp256 => {
                let sk = p256::SecretKey::from_slice(&self.private)
                    .map_err(|_| KeError::Private(g.id()))?;
                let pk = p256::PublicKey::from_sec1_bytes(&uncompressed(peer))
                    .map_err(|_| KeError::Invalid(g.id()))?;
                let s = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            Group::Ecp384 => {
                let sk = p384::SecretKey::from_slice(&self.private)
                    .map_err(|_| KeError::Private(g.id()))?;
                let pk = p384::PublicKey::from_sec1_bytes(&uncompressed(peer))
                    .map_err(|_| KeError::Invalid(g.id()))?;
                let s = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            Group::Curve25519 => {
                let bytes: [u8; 32] = self
                    .private
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeError::Private(g.id()))?;
                let theirs: [u8; 32] = peer.try_into().map_err(|_| KeError::Invalid(g.id()))?;
                let s = x25519_dalek::StaticSecret::from(bytes)
                    .diffie_hellman(&x25519_dalek::PublicKey::from(theirs));
                if !s.was_contributory() {
                    return Err(KeError::Invalid(g.id()));
                }
                Ok(Zeroizing::new(s.as_bytes().to_vec()))
            }
        }
    }
}

/// SEC 1 uncompressed encoding of a KE payload's x ‖ y.
fn uncompressed(xy: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + xy.len());
    v.push(0x04);
    v.extend_from_slice(xy);
    v
}

/// x ‖ y of a SEC 1 uncompressed point.
fn sec1_xy(sec1: &[u8], g: Group) -> Result<Vec<u8>, KeError> {
    match sec1.split_first() {
        Some((0x04, xy)) if xy.len() == g.public_len() => Ok(xy.to_vec()),
        _ => Err(KeError::Invalid(g.id())),
    }
}
