//! xsecd: the AF_XDP gateway around the ESP engine.

pub mod config;
pub mod control;
pub mod daemon;
pub mod fwd;
pub mod guard;
pub mod logging;
pub mod neigh;
pub mod probe;
pub mod reasm;
pub mod replay;
pub mod stats;
pub mod trace;
pub mod worker;
pub mod xdp;
pub mod xsk;
