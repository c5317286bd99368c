//! Security associations (RFC 4301 §4.4.2): what control configures ([`SaConfig`]), what a
//! worker keeps per SA ([`Sa`]: keys expanded, sequence number, replay window, lifetime
//! counters, a precomputed outer header), and the per-worker SA database ([`SaTable`]).

mod config;
mod lifetime;
mod state;
mod table;

pub use config::{
    CompAlg, DfMode, DscpMode, EcnMode, Encap, Lifetime, Limits, Mode, Protocol, SaConfig, SaError,
    SecretKey,
};
pub(crate) use lifetime::LifeEvent;
pub use lifetime::LimitKind;
pub(crate) use state::ip_u128;
pub use state::{Sa, SaStatus};
pub use table::{SaHandle, SaKey, SaTable, sa_address};
