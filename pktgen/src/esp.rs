//! `xsec-pktgen gen --esp-config FILE`: the generator protects what it sends as the gateway
//! that FILE configures would (its SPD picks the SA, its outbound SAs encapsulate: ESP or
//! ESP-in-UDP, tunnel or transport), so that a gateway's decapsulation can be measured
//! alone: the generator stands in for the peer gateway. It runs xsec's own engine; that the
//! bytes are right is what the receiving gateway checks (and, in the tests, what scapy
//! checks of the engine elsewhere).
//!
//! Each run starts the SAs' sequence numbers at `--esp-seq-start`, so that successive runs
//! against a gateway with anti-replay stay ahead of its window.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use xsec_dataplane::time::MonotonicClock;
use xsec_dataplane::wire::{Ipv4Packet, Ipv6Packet};
use xsec_dataplane::{Engine, PacketBuf, Verdict};

/// Offset of the inner IP header in a UMEM frame: room in front for Ethernet and the
/// outer headers (IPv6 40 + UDP 8 + ESP 8 + IV 16 = 72, and 14).
pub const INNER_OFF: usize = 256;
/// Room behind the inner packet: padding, trailer and ICV.
pub const TAIL_ROOM: usize = 128;

/// The engine and SAs of one gateway configuration, outbound only.
pub struct Protector {
    engine: Engine,
    clock: MonotonicClock,
    /// Packets the SPD passed in clear (BYPASS): sent as they are.
    pub bypassed: u64,
}

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protector")
            .field("bypassed", &self.bypassed)
            .finish_non_exhaustive()
    }
}

impl Protector {
    /// Load `path` (an xsecd configuration: its errors name the file, line and field) and
    /// install its outbound SAs, the next sequence number of each being `seq_start`.
    pub fn load(path: &Path, seq_start: u64) -> Result<Protector, String> {
        let cfg = xsecd::config::load(path).map_err(|e| e.to_string())?;
        if cfg.sas.is_empty() {
            return Err(format!("{}: no [[sa]] to protect with", path.display()));
        }
        let spd = cfg
            .spd
            .compile()
            .map_err(|e| format!("{}: SPD: {e}", path.display()))?;
        let mut engine = Engine::new(Arc::new(spd));
        let clock = MonotonicClock::default();
        for p in &cfg.sas {
            let h = engine
                .add_sa(&p.outbound, clock.now())
                .map_err(|e| format!("{}: SA {}: {e}", path.display(), p.name))?;
            if let Some(sa) = engine.sa_mut(h) {
                sa.set_seq(seq_start.saturating_sub(1));
            }
        }
        Ok(Protector {
            engine,
            clock,
            bypassed: 0,
        })
    }

    /// Protect the IP packet at `frame[INNER_OFF..INNER_OFF + len]`; the result's
    /// `(offset, length)` in the frame, with room for an Ethernet header in front.
    pub fn protect(&mut self, frame: &mut [u8], len: usize) -> Result<(usize, usize), String> {
        let mut p = PacketBuf::new(frame, INNER_OFF, len).ok_or("frame too small")?;
        match self.engine.outbound(self.clock.now(), &mut p) {
            Verdict::Forward => Ok((p.head(), p.len())),
            Verdict::Bypass => {
                self.bypassed += 1;
                Ok((p.head(), p.len()))
            }
            v => Err(format!("the configuration's SPD gives {v:?}")),
        }
    }
}

/// The destination of the IP packet in `p` (v4 or v6).
pub fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(Ipv4Packet::new_checked(p).ok()?.dst_addr().into()),
        6 => Some(Ipv6Packet::new_checked(p).ok()?.dst_addr().into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsec_dataplane::wire::{EspPacket, IpProtocol};

    const CONF: &str = r#"
[gateway]
protected = "lan0"
unprotected = "wan0"

[[sa]]
name = "t"
mode = "tunnel"
local = "192.0.2.1"
remote = "192.0.2.2"
spi_in = 0x2001
spi_out = 0x1001
encryption = "aes-gcm-128"
enc_key_in = "0x000102030405060708090a0b0c0d0e0f10111213"
enc_key_out = "0x101112131415161718191a1b1c1d1e1f20212223"

[[policy]]
name = "p"
local = "10.0.1.0/24"
remote = "10.0.2.0/24"
action = "protect"
sa = "t"
"#;

    fn conf() -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("pktgen-esp-{}.toml", std::process::id()));
        std::fs::write(&p, CONF).unwrap();
        p
    }

    /// An inner UDP packet 10.0.1.2 -> 10.0.2.2 at INNER_OFF.
    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 4096];
        let h = crate::xdp::headers(
            [0; 6],
            [0; 6],
            [10, 0, 1, 2],
            [10, 0, 2, 2],
            10_000,
            5301,
            len - 28,
        );
        f[INNER_OFF..INNER_OFF + 28].copy_from_slice(&h[14..]);
        f
    }

    #[test]
    fn protects_with_the_configured_sa_from_the_given_sequence_number() {
        let path = conf();
        let mut p = Protector::load(&path, 1000).unwrap();
        for k in 0..3u32 {
            let mut f = frame(100);
            let (off, len) = p.protect(&mut f, 100).unwrap();
            let esp = &f[off..off + len];
            let outer = Ipv4Packet::new_checked(esp).unwrap();
            assert_eq!(outer.header_len(), 20);
            assert_eq!(outer.protocol(), IpProtocol::ESP, "outer protocol ESP");
            assert_eq!(ip_dst(esp), Some("192.0.2.2".parse().unwrap()));
            let hdr = EspPacket::new_checked(outer.payload()).unwrap();
            assert_eq!(hdr.spi(), 0x1001, "SPI");
            assert_eq!(hdr.seq(), 1000 + k, "sequence number");
            // 20 outer + 8 ESP + 8 IV + 100 inner + 2 pad + 2 trailer + 16 ICV
            assert_eq!(len, 20 + 8 + 8 + 100 + 2 + 2 + 16);
            assert!(
                !esp.windows(4).any(|w| w == [10, 0, 2, 2]),
                "inner in clear"
            );
        }
        // no policy for this destination: an error, not a packet
        let mut f = frame(100);
        f[INNER_OFF + 16..INNER_OFF + 20].copy_from_slice(&[10, 9, 9, 9]);
        assert!(p.protect(&mut f, 100).is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_bad_configuration_names_the_file() {
        let path = std::env::temp_dir().join(format!("pktgen-esp-bad-{}.toml", std::process::id()));
        std::fs::write(&path, CONF.replace("aes-gcm-128", "rot13")).unwrap();
        let e = Protector::load(&path, 1).unwrap_err();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("encryption"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }
}
