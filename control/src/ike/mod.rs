//! IKEv2 (RFC 7296): the message codec ([`wire`]), algorithms and proposals ([`proposal`]),
//! key exchange ([`ke`]) and derivation ([`kdf`]), the encrypted payload ([`sk`]),
//! authentication ([`auth`]), traffic selectors ([`ts`]), one IKE SA's exchanges ([`sa`])
//! and the endpoint that routes messages to them ([`endpoint`]).

pub mod auth;
pub mod config;
pub mod endpoint;
pub mod kdf;
pub mod ke;
pub mod proposal;
pub mod sa;
pub mod sk;
pub mod ts;
pub mod wire;
