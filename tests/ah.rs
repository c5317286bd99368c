//! AH (RFC 4302) against an independent implementation: scapy's `scapy.layers.ipsec` AH,
//! driven by `ah_check.py`, both ways, and tshark's dissector on every packet.
//!
//! * Packets the engine protects (tunnel and transport, IPv4 with options and IPv6 with
//!   extension headers, every HMAC scapy has and AES-CMAC-96, ESN) are verified and stripped by scapy, and
//!   must give back exactly the packet the engine was handed. `ah_check.py` also changes
//!   every mutable header field (must still verify) and an immutable one (must not).
//! * Packets scapy protects are verified and stripped by the engine, also after their
//!   mutable fields are changed; with an immutable field changed they are a counted drop.
//! * tshark dissects every packet of both sets as AH with the right SPI and sequence number.

use std::net::IpAddr;

use xsec_dataplane::Timestamp;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{Mode, Protocol, SaConfig};
use xsec_dataplane::spd::{Direction, Selector};
use xsec_dataplane::wire::checksum;
use xsec_dataplane::{DropReason, Verdict};
use xsec_interop_tests::{
    Harness, Run, TempDir, crate_file, empty_engine, hex, inbound, ip_udp, outbound, packet_lines,
    payload, protect_all_engine, unhex, write_pcap,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

/// The integrity algorithms of scapy's AH that the engine accepts (MD5 is refused), and
/// AES-GMAC (RFC 4543 §4), which `ah_check.py` adds to scapy from the RFC's text with the
/// `cryptography` package's AES-GCM.
const AUTHS: [(AuthAlg, &str); 8] = [
    (AuthAlg::HmacSha1_96, "hmac-sha1-96"),
    (AuthAlg::HmacSha256_128, "hmac-sha256-128"),
    (AuthAlg::HmacSha384_192, "hmac-sha384-192"),
    (AuthAlg::HmacSha512_256, "hmac-sha512-256"),
    (AuthAlg::AesCmac96, "aes-cmac-96"),
    (AuthAlg::AesGmac128, "aes-gmac-128"),
    (AuthAlg::AesGmac192, "aes-gmac-192"),
    (AuthAlg::AesGmac256, "aes-gmac-256"),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    /// Tunnel mode: outer family, inner family.
    Tunnel { outer_v6: bool, inner_v6: bool },
    /// Transport mode, IPv4 with a Record Route (mutable) and a Router Alert option.
    Transport4 { options: bool },
    /// Transport mode, IPv6 with a hop-by-hop header (one mutable, one immutable option).
    Transport6 { hbh: bool },
}

struct Case {
    auth: AuthAlg,
    name: &'static str,
    shape: Shape,
    esn: bool,
    spi: u32,
}

impl Case {
    fn v6(&self) -> bool {
        match self.shape {
            Shape::Tunnel { outer_v6, .. } => outer_v6,
            Shape::Transport4 { .. } => false,
            Shape::Transport6 { .. } => true,
        }
    }

    fn mode(&self) -> Mode {
        match self.shape {
            Shape::Tunnel { .. } => Mode::Tunnel,
            _ => Mode::Transport,
        }
    }

    /// Gateway A and B.
    fn ends(&self) -> (IpAddr, IpAddr) {
        if self.v6() {
            (ip("fd00::1"), ip("fd00::2"))
        } else {
            (ip("10.0.0.1"), ip("10.0.0.2"))
        }
    }

    fn key(&self) -> Vec<u8> {
        (0..self.auth.key_len())
            .map(|i| (i as u8).wrapping_mul(13) ^ (self.spi as u8))
            .collect()
    }

    fn sa(&self, dir: Direction) -> SaConfig {
        let (a, b) = self.ends();
        let (l, r) = if dir == Direction::Outbound {
            (a, b)
        } else {
            (b, a)
        };
        let mut c = SaConfig::tunnel(
            self.spi,
            dir,
            l,
            r,
            EncAlg::Null,
            &[],
            self.auth,
            &self.key(),
        );
        c.protocol = Protocol::Ah;
        c.mode = self.mode();
        c.esn = self.esn;
        c.reqid = 1;
        if c.mode == Mode::Transport {
            c.local = None;
            c.remote = None;
        }
        c.selectors = vec![Selector::ANY];
        c
    }

    /// The `k`-th packet to protect.
    fn packet(&self, k: usize) -> Vec<u8> {
        let body = payload(&format!("{} #{k}", self.name), 40 + k * 300);
        match self.shape {
            Shape::Tunnel { inner_v6, .. } => {
                let (s, d) = if inner_v6 {
                    (ip("fd01::10"), ip("fd02::10"))
                } else {
                    (ip("10.1.0.10"), ip("10.2.0.10"))
                };
                ip_udp(s, d, 1000 + k as u16, 5000, 7 + k as u16, &body)
            }
            Shape::Transport4 { options } => {
                let (a, b) = self.ends();
                let p = ip_udp(a, b, 1000, 5000, 9 + k as u16, &body);
                if options {
                    with_v4_options(&p, &[7, 7, 4, 0, 0, 0, 0, 148, 4, 0, 0, 0])
                } else {
                    p
                }
            }
            Shape::Transport6 { hbh } => {
                let (a, b) = self.ends();
                let p = ip_udp(a, b, 1000, 5000, 3, &body);
                if hbh {
                    with_v6_hbh(&p, &[0x3e, 2, 0xaa, 0xbb, 0x1e, 2, 0xcc, 0xdd, 1, 0])
                } else {
                    p
                }
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let (a, b) = self.ends();
        serde_json::json!({
            "spi": self.spi,
            "auth": AUTHS.iter().find(|x| x.0 == self.auth).map(|x| x.1),
            "key": hex(self.key()),
            "mode": if self.mode() == Mode::Tunnel { "tunnel" } else { "transport" },
            "outer_src": a.to_string(),
            "outer_dst": b.to_string(),
            "esn": self.esn,
        })
    }
}

fn fix_v4_checksum(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum::compute(0, &p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// `p` (IPv4 without options) with `opts` (a multiple of 4 bytes) after its header.
fn with_v4_options(p: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut q = p[..20].to_vec();
    q.extend_from_slice(opts);
    q.extend_from_slice(&p[20..]);
    q[0] = 0x40 | ((20 + opts.len()) / 4) as u8;
    let total = q.len() as u16;
    q[2..4].copy_from_slice(&total.to_be_bytes());
    fix_v4_checksum(&mut q);
    q
}

/// `p` (IPv6 without extension headers) with a hop-by-hop header holding `opts`.
fn with_v6_hbh(p: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut h = vec![p[6], 0];
    h.extend_from_slice(opts);
    while !h.len().is_multiple_of(8) {
        h.push(0);
    }
    h[1] = (h.len() / 8 - 1) as u8;
    let mut q = p[..40].to_vec();
    q[6] = 0;
    let plen = (p.len() - 40 + h.len()) as u16;
    q[4..6].copy_from_slice(&plen.to_be_bytes());
    q.extend_from_slice(&h);
    q.extend_from_slice(&p[40..]);
    q
}

/// The mutable fields a router may change: TOS/TTL (checksum fixed) or traffic class, flow
/// label and hop limit.
fn change_mutable(w: &[u8]) -> Vec<u8> {
    let mut w = w.to_vec();
    if w[0] >> 4 == 6 {
        w[0] = 0x6b;
        w[1] = 0x85;
        w[2] = 0x43;
        w[3] = 0x21;
        w[7] = 1;
    } else {
        w[1] = 0xb8;
        w[8] = 3;
        fix_v4_checksum(&mut w);
    }
    w
}

fn cases() -> Vec<Case> {
    let mut v = vec![];
    let mut spi = 0x5000;
    let mut add = |auth, name, shape, esn| {
        spi += 1;
        v.push(Case {
            auth,
            name,
            shape,
            esn,
            spi,
        });
    };
    for (auth, _) in AUTHS {
        let t = |o, i| Shape::Tunnel {
            outer_v6: o,
            inner_v6: i,
        };
        add(auth, "tunnel-4in4", t(false, false), false);
        add(auth, "tunnel-6in6", t(true, true), false);
        add(
            auth,
            "transport-4",
            Shape::Transport4 { options: false },
            false,
        );
        add(
            auth,
            "transport-4-options",
            Shape::Transport4 { options: true },
            false,
        );
        add(auth, "transport-6", Shape::Transport6 { hbh: false }, false);
        add(
            auth,
            "transport-6-hbh",
            Shape::Transport6 { hbh: true },
            false,
        );
    }
    let t = |o, i| Shape::Tunnel {
        outer_v6: o,
        inner_v6: i,
    };
    add(AuthAlg::HmacSha1_96, "tunnel-6in4", t(false, true), false);
    add(
        AuthAlg::HmacSha256_128,
        "tunnel-4in6",
        t(true, false),
        false,
    );
    add(
        AuthAlg::HmacSha256_128,
        "tunnel-4in4-esn",
        t(false, false),
        true,
    );
    add(
        AuthAlg::HmacSha512_256,
        "transport-6-hbh-esn",
        Shape::Transport6 { hbh: true },
        true,
    );
    // GMAC takes the ESN high bits inside its AAD
    add(
        AuthAlg::AesGmac128,
        "tunnel-4in4-esn",
        t(false, false),
        true,
    );
    add(
        AuthAlg::AesGmac256,
        "transport-6-hbh-esn",
        Shape::Transport6 { hbh: true },
        true,
    );
    v
}

/// Packets per case and direction.
const PER_CASE: usize = 3;
/// ESN cases start here: the packets cross from high half 0 to 1.
const ESN_START: u64 = (1 << 32) - 2;

fn tshark_ah(pcap: &std::path::Path) -> Vec<(u32, u32)> {
    let mut c = std::process::Command::new("tshark");
    c.args(["-n", "-r"]).arg(pcap);
    c.args([
        "-Y",
        "ah",
        "-T",
        "fields",
        "-e",
        "ah.spi",
        "-e",
        "ah.sequence",
    ]);
    let run = Run::exec(c);
    assert!(run.ok(), "tshark failed:\n{run}");
    run.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let n = |s: &str| {
                let s = s.trim();
                match s.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).expect("hex"),
                    None => s.parse().expect("number"),
                }
            };
            (n(f[0]), n(f[1]))
        })
        .collect()
}

#[test]
fn ah_against_scapy_both_ways_and_tshark() {
    let h = Harness::locate();
    let dir = TempDir::new("ah");
    let cases = cases();
    let now = Timestamp::ZERO;

    // Engine → scapy: every case's packets protected by its own engine.
    let mut verify = vec![];
    // (case, packet to protect, wire)
    let mut ours = vec![];
    for (i, c) in cases.iter().enumerate() {
        let mut a = protect_all_engine(1);
        let out = a
            .add_sa(&c.sa(Direction::Outbound), now)
            .expect("outbound AH SA");
        if c.esn {
            a.sa_mut(out).expect("sa").set_seq(ESN_START);
        }
        for k in 0..PER_CASE {
            let p = c.packet(k);
            let wire =
                outbound(&mut a, now, &p).unwrap_or_else(|v| panic!("{} #{k}: {v:?}", c.name));
            let seq = if c.esn {
                ESN_START + 1 + k as u64
            } else {
                1 + k as u64
            };
            verify.push(serde_json::json!({"sa": i, "wire": hex(&wire), "esn_hi": seq >> 32}));
            ours.push((i, p, wire));
        }
    }
    // Scapy → engine: the same packets protected by scapy.
    let mut make = vec![];
    let mut theirs = vec![];
    for (i, c) in cases.iter().enumerate() {
        for k in 0..PER_CASE {
            let seq = if c.esn {
                ESN_START + 1 + k as u64
            } else {
                1 + k as u64
            };
            let p = c.packet(k);
            make.push(serde_json::json!({
                "sa": i, "inner": hex(&p), "seq": seq & 0xffff_ffff, "esn_hi": seq >> 32,
            }));
            theirs.push((i, p));
        }
    }
    let spec = serde_json::json!({
        "sas": cases.iter().map(Case::json).collect::<Vec<_>>(),
        "verify": verify,
        "make": make,
    });
    let spec_path = dir.write("spec.json", spec.to_string());
    let run = h.python_script(&crate_file("ah_check.py"), &[spec_path.as_os_str()]);
    assert!(run.ok(), "ah_check.py failed:\n{run}");
    let lines = packet_lines(&run.stdout);
    assert_eq!(lines.len(), ours.len() + theirs.len(), "{run}");

    for (n, (i, p, _)) in ours.iter().enumerate() {
        let (line, _) = &lines[&(n + 1)];
        let inner = line
            .split("inner=")
            .nth(1)
            .unwrap_or_else(|| panic!("{}: {line}", cases[*i].name));
        assert_eq!(
            unhex(inner.trim()),
            *p,
            "{} packet {n}: scapy's result differs from what the engine was given",
            cases[*i].name
        );
    }

    let mut wires = vec![];
    for (n, (i, p)) in theirs.iter().enumerate() {
        let c = &cases[*i];
        let (line, _) = &lines[&(ours.len() + n + 1)];
        let wire = unhex(line.split("wire=").nth(1).expect("wire=").trim());
        let k = n % PER_CASE;
        // a fresh inbound SA per packet and variant, so each check starts from the same window
        let engine = || {
            let mut b = empty_engine();
            let inb = b
                .add_sa(&c.sa(Direction::Inbound), now)
                .expect("inbound AH SA");
            if c.esn {
                b.sa_mut(inb).expect("sa").set_replay_top(ESN_START);
            }
            b
        };
        let got = inbound(&mut engine(), now, &wire)
            .unwrap_or_else(|v| panic!("{} #{k}: scapy's packet dropped: {v:?}", c.name));
        assert_eq!(&got, p, "{} #{k}", c.name);
        let got = inbound(&mut engine(), now, &change_mutable(&wire))
            .unwrap_or_else(|v| panic!("{} #{k}: mutable fields changed: {v:?}", c.name));
        // the engine passes on the header as received (transport) or the inner packet
        if c.mode() == Mode::Tunnel {
            assert_eq!(&got, p, "{} #{k}", c.name);
        }
        let mut bad = wire.clone();
        let src = if c.v6() { 8 } else { 12 };
        bad[src] ^= 1;
        if !c.v6() {
            fix_v4_checksum(&mut bad);
        }
        let mut b = engine();
        assert_eq!(
            inbound(&mut b, now, &bad),
            Err(Verdict::Drop(DropReason::IcvFailed)),
            "{} #{k}: source address changed",
            c.name
        );
        assert_eq!(b.stats().drops.get(DropReason::IcvFailed), 1);
        wires.push((c.spi, wire));
    }

    // tshark: every packet of both sets is AH with its SPI and sequence number
    let all: Vec<Vec<u8>> = ours
        .iter()
        .map(|(_, _, w)| w.clone())
        .chain(wires.iter().map(|(_, w)| w.clone()))
        .collect();
    let pcap = dir.join("ah.pcap");
    write_pcap(&pcap, &all).expect("pcap");
    let seen = tshark_ah(&pcap);
    assert_eq!(seen.len(), all.len(), "tshark dissected every packet as AH");
    for (n, (spi, seq)) in seen.iter().enumerate() {
        let i = if n < ours.len() {
            ours[n].0
        } else {
            theirs[n - ours.len()].0
        };
        let c = &cases[i];
        let k = n % PER_CASE;
        let want = if c.esn {
            ESN_START + 1 + k as u64
        } else {
            1 + k as u64
        };
        assert_eq!(
            (*spi, u64::from(*seq)),
            (c.spi, want & 0xffff_ffff),
            "{} #{k}",
            c.name
        );
    }
}
