//! `xsec-ike`: the IKEv2 control process (RFC 7296) that negotiates SAs and installs them in
//! xsecd through control protocol v2. Its protocol core is sans-I/O: state machines that take
//! bytes and time and return bytes and actions, testable without sockets.

pub mod ike;

pub mod config;
pub mod daemon;
pub mod events;
pub mod install;
pub mod socket;
pub mod watchdog;
