//! IKEv2 (RFC 7296): the message codec ([`wire`]), algorithms and proposals ([`proposal`]),
//! key exchange ([`ke`]) and derivation ([`kdf`]), the encrypted payload ([`sk`]) and
//! authentication ([`auth`]).

pub mod auth;
pub mod kdf;
pub mod ke;
pub mod proposal;
pub mod sk;
pub mod wire;
