//! ESP cryptographic transforms.
//!
//! `alg` names the algorithms and holds the RFC 8221 policy (what is refused and why);
//! the other modules wrap the primitives from well-kept crates, chosen by measurement
//! (see `benches/benches/crypto_choice.rs` and README.md):
//!
//! | algorithm | crate | why |
//! |---|---|---|
//! | AES-128/256-GCM, AES-GMAC 128/256, ChaCha20-Poly1305 | ring | fastest here (AES-NI/VAES/AVX2 assembly) |
//! | AES-192-GCM, AES-GMAC-192 | RustCrypto `aes-gcm` | ring has no 192-bit AES-GCM |
//! | AES-CBC, 3DES-CBC | RustCrypto `aes`/`des` + `cbc` | ring has no CBC; AES-NI via runtime detection |
//! | HMAC-SHA1/SHA-2 | RustCrypto `hmac` + `sha1`/`sha2` | SHA-NI; 3-4x faster than ring for SHA-1 |
//!
//! Where the CPU has them, the own SIMD kernels replace those on the hot path, each
//! differential-tested against ring or RustCrypto: `aesni` (multi-buffer AES-CBC
//! encryption; AES-CBC decryption of bodies from 256 bytes on a CPU with VAES and
//! AVX-512), `gcmni` (AES-GCM, and AES-GMAC for ESP and AH), `shani` (HMAC-SHA1/SHA-256
//! with SHA-NI) and `shax16` (HMAC-SHA1/SHA-256 of up to 16 packets with AVX-512).
//!
//! Transform state is built once per SA (key schedules, HMAC inner/outer states precomputed)
//! and used per packet without allocation.

mod aead;
#[cfg(target_arch = "x86_64")]
pub mod aesni;
pub mod alg;
mod cbc;
#[cfg(target_arch = "x86_64")]
pub mod gcmni;
mod integ;
#[cfg(target_arch = "x86_64")]
pub mod shani;
#[cfg(target_arch = "x86_64")]
pub mod shax16;
#[cfg(target_arch = "x86_64")]
mod simd;
pub(crate) mod transform;

pub use alg::{AuthAlg, CryptoError, EncAlg};
pub(crate) use integ::GROUP as ICV_GROUP;
#[cfg(test)]
pub(crate) use integ::Integ;
pub(crate) use transform::Transform;
pub use transform::{MAX_ICV_LEN, MAX_IV_LEN};

/// Test access to the HMAC and CBC layers (known-answer tests): every implementation of
/// `alg` this machine runs — the one the engine picks (SHA-NI where present) and RustCrypto.
#[cfg(test)]
pub(crate) fn integs_for_test(alg: AuthAlg, key: &[u8]) -> Vec<integ::Integ> {
    vec![
        integ::Integ::new(alg, key).expect("HMAC key"),
        integ::Integ::portable(alg, key).expect("HMAC key"),
    ]
}

#[cfg(test)]
pub(crate) fn cbc_for_test(alg: EncAlg, key: &[u8], outbound: bool) -> cbc::CbcKey {
    cbc::CbcKey::new(alg, key, outbound).expect("CBC key")
}
