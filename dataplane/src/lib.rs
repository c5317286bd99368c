//! xsec's ESP engine.
//!
//! Layers, bottom up:
//! * [`wire`]: zero-copy views of Ethernet, IPv4, IPv6, UDP, ICMP, ESP and RFC 3948 framing;
//! * [`crypto`]: ESP transforms (AES-GCM, ChaCha20-Poly1305, AES-GMAC, AES-CBC/3DES + HMAC,
//!   NULL + HMAC) with RFC 8221 policy on what is refused;
//! * [`replay`]: the anti-replay window with ESN;
//! * [`spd`]: selectors, the ordered SPD and its compiled classifier, the policy test;
//! * [`sa`]: SA configuration, per-worker SA state, lifetimes, and the SA table;
//! * [`engine`]: per-worker burst processing with typed drop reasons ([`stats`]) and
//!   events ([`events`]) for the control plane.
//!
//! Nothing here does I/O, reads a clock or allocates per packet; time is passed in.

// `unsafe` is denied (workspace lints) everywhere but the SIMD kernels of `crypto::aesni`,
// `crypto::shani`, `crypto::shax16` and `crypto::gcmni` (and their loads and stores in
// `crypto::simd`), where each block names the CPU features it relies on.
#![deny(unsafe_code)]

mod ah;
pub mod crypto;
pub mod engine;
mod esp;
pub mod events;
pub mod ipcomp;
pub mod packet;
pub mod replay;
pub mod sa;
pub mod spd;
pub mod stats;
pub mod time;
pub mod wire;

#[cfg(test)]
mod kat;

pub use engine::{Engine, EngineConfig, Shards, Verdict};
pub use esp::MAX_OVERHEAD as MAX_ESP_OVERHEAD;
pub use packet::PacketBuf;
pub use stats::DropReason;
pub use time::Timestamp;
