//! `xsec-ike`: the IKEv2 control process (RFC 7296) that negotiates SAs and installs them in
//! xsecd through control protocol v2. Its protocol core is sans-I/O: state machines that take
//! bytes and time and return bytes and actions, testable without sockets.
//!
//! Built so far: the key derivation ([`kdf`]), checked against NIST's CAVS IKEv2 vectors,
//! and the key exchange ([`ke`]: groups 14, 19, 20, 31), checked against the published
//! RFC vectors.
//! The exchanges, the process and its I/O are issue 18's next steps.

pub mod kdf;
pub mod ke;
