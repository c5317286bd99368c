//! Network-namespace topologies for xsec: the `xsec-lab` binary (`cargo xtask lab`) and the
//! gateway end-to-end tests (`tests/gateway.rs`) are built from this library.
//!
//! Layers, bottom up:
//!
//! * [`topo`]: the namespaces and veth links of the lab (`<prefix>-hA`, `-gwA`, `-nat`,
//!   `-gwB`, `-hB`), addresses and routes, and the [`topo::Lab`] guard whose `Drop` kills every
//!   process it started and deletes every namespace (also on panic).
//! * [`procs`]: processes started inside the namespaces (`ip netns exec`), with their output
//!   in files of the lab's work folder; xsecd ([`topo::Lab::start_xsecd`]) and tcpdump
//!   ([`topo::Lab::capture`]) on top.
//! * [`config`]: a builder for xsecd's TOML configuration and [`config::Pair`], the two
//!   matching gateway configurations of a scenario (keys, SPIs, policies) with the Wireshark
//!   `esp_sa` table and `esp_tool.py` arguments for the same SAs.
//! * [`stats`]: xsecd's stats file, read tolerantly.
//! * [`tools`]: the traffic programs (`udp-recv`, `udp-send`, `tcp-sink`, `tcp-send`,
//!   `udp-flood`, `udp-count`) that
//!   the `xsec-lab` binary runs as subcommands inside the namespaces.
//! * [`wire`]: reading the capture of the middle link (the dataplane's pcap reader and header
//!   views): every frame sorted into ESP / UDP-encapsulated ESP / keep-alive / IKE / ARP-ND /
//!   clear, and tshark's decryption with an `esp_sa` table written from the generated keys.
//! * [`fuzz`]: random and mutated Ethernet frames for the robustness test.
//! * [`demo`]: `xsec-lab run`, the bounded demo with the live counter table.
//! * [`bench`]: `xsec-lab bench`, packets/s through two xsecd against kernel forwarding, with
//!   [`sysstat`] (CPU use from `/proc`).
//! * [`build`]: locating (building) the `xsecd` and `xsec-lab` executables with cargo.
//!
//! Everything happens inside namespaces the lab creates and deletes: no interface, route or
//! address of the root namespace is touched, and no packet is sent anywhere else.

pub mod bench;
pub mod build;
pub mod capacity;
pub mod config;
pub mod demo;
pub mod fuzz;
pub mod ikebench;
pub mod ndr;
pub mod plot;
pub mod procs;
pub mod scale;
pub mod stats;
pub mod sysstat;
pub mod tools;
pub mod topo;
pub mod versus;
pub mod wire;

use std::fmt;

/// Errors of the lab: a sentence with its context (the command, the file, the stderr tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error(s.to_owned())
    }
}

/// The lab's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Build an [`Error`] from a format string.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::Error(format!($($t)*)) };
}

/// Write `doc` as pretty JSON to `path` and say so on stdout (the measurements' `--json`).
pub fn write_json(path: &std::path::Path, doc: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| err!("cannot write JSON: {e}"))?;
    std::fs::write(path, text).map_err(|e| err!("write {}: {e}", path.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// The last `n` lines of a file (empty if it cannot be read).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
