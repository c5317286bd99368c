//! IPComp DEFLATE (RFC 2394) against an independent implementation, Python's zlib, both
//! ways (`ipcomp_check.py`): what the engine compresses inflates with zlib to the bytes it
//! was given; what zlib deflates (levels 1, 6 and 9), in an IPComp packet built here, the
//! engine decompresses to the original packet. Transport and tunnel mode, IPv4 and IPv6.

use std::net::IpAddr;
use std::sync::Arc;

use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{CompAlg, Mode, Protocol, SaConfig};
use xsec_dataplane::spd::{Action, Direction, Policy, SaBundle, Selector, SpdConfig};
use xsec_dataplane::wire::{Ipv4Packet, checksum};
use xsec_dataplane::{Engine, Timestamp};
use xsec_interop_tests::{
    Harness, TempDir, crate_file, hex, inbound, ip_udp, outbound, packet_lines, unhex,
};

const CPI: u32 = 0x1234;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

struct Case {
    mode: Mode,
    v6: bool,
    inner_v6: bool,
}

impl Case {
    fn ends(&self) -> (IpAddr, IpAddr) {
        if self.v6 {
            (ip("fd00::1"), ip("fd00::2"))
        } else {
            (ip("10.0.0.1"), ip("10.0.0.2"))
        }
    }

    fn sa(&self, dir: Direction) -> SaConfig {
        let (a, b) = self.ends();
        let (l, r) = if dir == Direction::Outbound {
            (a, b)
        } else {
            (b, a)
        };
        let mut c = SaConfig::tunnel(CPI, dir, l, r, EncAlg::Null, &[], AuthAlg::None, &[]);
        c.protocol = Protocol::IpComp(CompAlg::Deflate);
        c.mode = self.mode;
        c.selectors = vec![Selector::ANY];
        c
    }

    fn engine(&self, dir: Direction) -> Engine {
        let pol = vec![Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }];
        let spd = SpdConfig {
            outbound: pol.clone(),
            inbound: pol,
            ..Default::default()
        };
        let mut e = Engine::new(Arc::new(spd.compile().expect("SPD")));
        e.add_sa(&self.sa(dir), Timestamp::ZERO).expect("IPComp SA");
        e
    }

    /// The packet to compress, with `body` as its UDP payload.
    fn packet(&self, body: &[u8]) -> Vec<u8> {
        let (s, d) = match (self.mode, self.inner_v6) {
            (Mode::Transport, _) => self.ends(),
            (Mode::Tunnel, false) => (ip("10.1.0.10"), ip("10.2.0.10")),
            (Mode::Tunnel, true) => (ip("fd01::10"), ip("fd02::10")),
        };
        ip_udp(s, d, 1000, 5000, 7, body)
    }

    /// What IPComp compresses of `p`: the payload after the IP header, or all of it.
    fn compressed_part<'a>(&self, p: &'a [u8]) -> &'a [u8] {
        match self.mode {
            Mode::Tunnel => p,
            Mode::Transport => &p[if self.v6 { 40 } else { 20 }..],
        }
    }

    /// An IPComp packet carrying `deflated` (of `p`), built by hand.
    fn ipcomp_packet(&self, p: &[u8], deflated: &[u8]) -> Vec<u8> {
        let (nh, mut head) = match self.mode {
            Mode::Transport => {
                let hl = if self.v6 { 40 } else { 20 };
                let nh = if self.v6 { p[6] } else { p[9] };
                (nh, p[..hl].to_vec())
            }
            Mode::Tunnel => {
                let nh = if self.inner_v6 { 41 } else { 4 };
                let (a, b) = self.ends();
                let h = ip_udp(a, b, 1, 1, 0, &[]);
                (nh, h[..if self.v6 { 40 } else { 20 }].to_vec())
            }
        };
        let mut body = vec![nh, 0];
        body.extend_from_slice(&(CPI as u16).to_be_bytes());
        body.extend_from_slice(deflated);
        if self.v6 {
            head[6] = 108;
            head[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        } else {
            head[9] = 108;
            let total = (head.len() + body.len()) as u16;
            let mut h = Ipv4Packet::new_unchecked(&mut head[..]);
            h.set_total_len(total);
            h.fill_checksum();
        }
        head.extend_from_slice(&body);
        head
    }
}

fn bodies() -> Vec<Vec<u8>> {
    let text = b"IPComp DEFLATE interop: the same words, again and again. ";
    [120usize, 600, 1400]
        .iter()
        .map(|&n| text.iter().cycle().take(n).copied().collect())
        .chain(std::iter::once(
            (0..1200u32).map(|i| (i % 7 * 31 + i / 100) as u8).collect(),
        ))
        .collect()
}

#[test]
fn deflate_against_python_zlib_both_ways() {
    let h = Harness::locate();
    let dir = TempDir::new("ipcomp");
    let cases = [
        Case {
            mode: Mode::Transport,
            v6: false,
            inner_v6: false,
        },
        Case {
            mode: Mode::Transport,
            v6: true,
            inner_v6: true,
        },
        Case {
            mode: Mode::Tunnel,
            v6: false,
            inner_v6: false,
        },
        Case {
            mode: Mode::Tunnel,
            v6: true,
            inner_v6: false,
        },
        Case {
            mode: Mode::Tunnel,
            v6: false,
            inner_v6: true,
        },
    ];
    let mut verify = vec![];
    let mut make = vec![];
    // (case, packet) for each "make" item
    let mut made = vec![];
    for (ci, c) in cases.iter().enumerate() {
        let mut a = c.engine(Direction::Outbound);
        for b in bodies() {
            let p = c.packet(&b);
            let wire = outbound(&mut a, Timestamp::ZERO, &p).expect("compressed");
            assert!(wire.len() < p.len(), "{} < {}", wire.len(), p.len());
            verify.push(serde_json::json!({
                "wire": hex(&wire), "payload": hex(c.compressed_part(&p)),
            }));
            for level in [1, 6, 9] {
                make.push(serde_json::json!({
                    "payload": hex(c.compressed_part(&p)), "level": level,
                }));
                made.push((ci, p.clone()));
            }
        }
    }
    let spec = dir.write(
        "spec.json",
        serde_json::json!({"verify": verify, "make": make}).to_string(),
    );
    let run = h.python_script(&crate_file("ipcomp_check.py"), &[spec.as_os_str()]);
    assert!(run.ok(), "ipcomp_check.py failed:\n{run}");
    let lines = packet_lines(&run.stdout);
    assert_eq!(lines.len(), verify.len() + make.len(), "{run}");
    for n in 1..=verify.len() {
        assert!(lines[&n].0.contains(" ok cpi=4660"), "{}", lines[&n].0);
    }
    for (k, (ci, p)) in made.iter().enumerate() {
        let c = &cases[*ci];
        let (line, _) = &lines[&(verify.len() + k + 1)];
        let z = unhex(line.split("deflate=").nth(1).expect("deflate=").trim());
        let pkt = c.ipcomp_packet(p, &z);
        let mut b = c.engine(Direction::Inbound);
        let got = inbound(&mut b, Timestamp::ZERO, &pkt)
            .unwrap_or_else(|v| panic!("zlib's stream #{k}: {v:?}"));
        assert_eq!(&got, p, "zlib's stream #{k}");
        if !c.v6 && c.mode == Mode::Transport {
            assert_eq!(checksum::compute(0, &got[..20]), 0, "header checksum");
        }
    }
}
