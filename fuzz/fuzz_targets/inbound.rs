//! Arbitrary bytes as one packet from the unprotected side (`Engine::inbound`) and from the
//! protected side (`Engine::outbound`), against an engine with inbound SAs of several
//! algorithms, modes and encapsulations (raw ESP, UDP 4500, UDP 2746; two AH SAs), outbound SAs behind
//! PROTECT policies (one a two-SA bundle), and BYPASS and DISCARD policies both ways.
//!
//! The corpus is seeded (XSEC_FUZZ_SEED_DIR) with valid ESP packets made by a peer engine
//! with the same keys, so the fuzzer starts past the SPI lookup and the ICV check.
//!
//! Invariants: no panic; Bypass/Punt/Consumed leave the packet as it came (at most trimmed
//! to its IP length); an inbound Forward is plain IP the classifier must pass (valid header,
//! checksum, selector key; not ESP, IKE or UDP-encapsulated); replaying a decapsulated packet
//! to an SA with a replay window is refused; an outbound Forward is well-formed ESP; an
//! outbound drop before any encapsulation leaves the packet untouched.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{EcnMode, Encap, Lifetime, Limits, Mode, Protocol, Sa, SaConfig};
use xsec_dataplane::spd::{
    Action, AddrRange, Direction, NonPolicy, Policy, PortSel, SaBundle, Selector, Spd, SpdConfig,
};
use xsec_dataplane::wire::IpProtocol;
use xsec_dataplane::{DropReason, Engine, EngineConfig, Verdict};
use xsec_fuzz::*;

/// One SA pair: the inbound SA this gateway holds (and the outbound twin its peer uses to
/// make seeds), plus an outbound SA of this gateway with reqid `index + 1`.
struct Spec {
    spi: u32,
    mode: Mode,
    v6: bool,
    /// Transport mode: whether the SA names its addresses.
    addrs: bool,
    encap: Encap,
    enc: EncAlg,
    auth: AuthAlg,
    esn: bool,
    window: u32,
    ecn: EcnMode,
    selectors: Vec<Selector>,
    hard_packets: Option<u64>,
    protocol: Protocol,
}

fn net(s: &str) -> AddrRange {
    s.parse().expect("a valid address range")
}

fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let base = Spec {
            spi: 0,
            mode: Mode::Tunnel,
            v6: false,
            addrs: false,
            encap: Encap::None,
            enc: EncAlg::AesGcm128,
            auth: AuthAlg::None,
            esn: false,
            window: 64,
            ecn: EcnMode::Normal,
            // An inbound SA without selectors accepts nothing; these accept any inner packet.
            selectors: vec![Selector::ANY],
            hard_packets: None,
            protocol: Protocol::Esp,
        };
        vec![
            // 0: AES-GCM-128 tunnel, raw ESP, IPv4, with traffic selectors
            Spec {
                spi: 0x0000_1001,
                selectors: vec![Selector::addresses(net("10.2.0.0/24"), net("10.1.0.0/24"))],
                ..spec_clone(&base)
            },
            // 1: AES-CBC-256 + HMAC-SHA-256 tunnel over UDP 4500, IPv4
            Spec {
                spi: 0x0000_1002,
                encap: Encap::NAT_T,
                enc: EncAlg::AesCbc256,
                auth: AuthAlg::HmacSha256_128,
                window: 32,
                ..spec_clone(&base)
            },
            // 2: ChaCha20-Poly1305 tunnel over UDP 2746, IPv6, ESN
            Spec {
                spi: 0x0000_1003,
                v6: true,
                encap: Encap::UDP_2746,
                enc: EncAlg::ChaCha20Poly1305,
                esn: true,
                window: 128,
                ..spec_clone(&base)
            },
            // 3: NULL + HMAC-SHA1 transport, raw, no addresses, no replay window
            Spec {
                spi: 0x0000_1004,
                mode: Mode::Transport,
                enc: EncAlg::Null,
                auth: AuthAlg::HmacSha1_96,
                window: 0,
                ..spec_clone(&base)
            },
            // 4: AES-GMAC-256 transport over UDP 4500, IPv6 addresses
            Spec {
                spi: 0x0000_1005,
                mode: Mode::Transport,
                v6: true,
                addrs: true,
                encap: Encap::NAT_T,
                enc: EncAlg::AesGmac256,
                ..spec_clone(&base)
            },
            // 5: AES-GCM-256 tunnel, raw, IPv6 outer, ESN, ECN compatibility, IPv6 selectors
            Spec {
                spi: 0x0000_1006,
                v6: true,
                enc: EncAlg::AesGcm256,
                esn: true,
                ecn: EcnMode::Compatibility,
                selectors: vec![
                    Selector::addresses(net("fd02::/64"), net("fd01::/64")),
                    Selector::addresses(net("10.2.0.0/16"), net("10.1.0.0/16")),
                ],
                ..spec_clone(&base)
            },
            // 6: AES-CBC-128 + HMAC-SHA-512 transport over UDP 2746, IPv4 addresses
            Spec {
                spi: 0x0000_1007,
                mode: Mode::Transport,
                addrs: true,
                encap: Encap::UDP_2746,
                enc: EncAlg::AesCbc128,
                auth: AuthAlg::HmacSha512_256,
                ..spec_clone(&base)
            },
            // 7: 3DES + HMAC-SHA-384 tunnel (legacy, allowed), raw, IPv4, 2 packets at most
            Spec {
                spi: 0x0000_1008,
                enc: EncAlg::TripleDesCbc,
                auth: AuthAlg::HmacSha384_192,
                hard_packets: Some(2),
                ..spec_clone(&base)
            },
            // 8: AES-GCM-192 tunnel over UDP 4500, IPv6 outer
            Spec {
                spi: 0xc0ff_ee01,
                v6: true,
                encap: Encap::NAT_T,
                enc: EncAlg::AesGcm192,
                ..spec_clone(&base)
            },
            // 9: AH HMAC-SHA1-96 tunnel, IPv4, ESN
            Spec {
                spi: 0x0000_100a,
                enc: EncAlg::Null,
                auth: AuthAlg::HmacSha1_96,
                esn: true,
                protocol: Protocol::Ah,
                ..spec_clone(&base)
            },
            // 10: AH HMAC-SHA-256-128 transport, IPv6 addresses
            Spec {
                spi: 0x0000_100b,
                mode: Mode::Transport,
                v6: true,
                addrs: true,
                enc: EncAlg::Null,
                auth: AuthAlg::HmacSha256_128,
                protocol: Protocol::Ah,
                ..spec_clone(&base)
            },
            // 11: AH AES-128-GMAC tunnel, IPv4, ESN (the high bits inside the AAD)
            Spec {
                spi: 0x0000_100c,
                enc: EncAlg::Null,
                auth: AuthAlg::AesGmac128,
                esn: true,
                protocol: Protocol::Ah,
                ..spec_clone(&base)
            },
            // 12: ESP AES-CBC with AES-CMAC-96
            Spec {
                spi: 0x0000_100d,
                enc: EncAlg::AesCbc128,
                auth: AuthAlg::AesCmac96,
                ..spec_clone(&base)
            },
        ]
    })
}

fn spec_clone(s: &Spec) -> Spec {
    Spec {
        selectors: s.selectors.clone(),
        ..*s
    }
}

/// `peer`: the configuration the peer uses to send to us (outbound, addresses swapped).
fn config(i: usize, s: &Spec, dir: Direction, peer: bool) -> SaConfig {
    let (gw, pr): (IpAddr, IpAddr) = if s.v6 {
        (GW6.into(), PEER6.into())
    } else {
        (GW4.into(), PEER4.into())
    };
    let (local, remote) = if peer { (pr, gw) } else { (gw, pr) };
    let (ek, ak) = keys(s.enc, s.auth, i as u8);
    let mut c = match s.mode {
        Mode::Tunnel => SaConfig::tunnel(s.spi, dir, local, remote, s.enc, &ek, s.auth, &ak),
        Mode::Transport => {
            let mut c = SaConfig::transport(s.spi, dir, s.enc, &ek, s.auth, &ak);
            if s.addrs {
                c.local = Some(local);
                c.remote = Some(remote);
            }
            c
        }
    };
    c.reqid = i as u32 + 1;
    c.protocol = s.protocol;
    c.encap = s.encap;
    c.esn = s.esn;
    c.replay_window = s.window;
    c.ecn = s.ecn;
    c.allow_legacy = true;
    if dir == Direction::Inbound {
        c.selectors = s.selectors.clone();
    }
    if let Some(n) = s.hard_packets {
        c.lifetime = Lifetime {
            hard: Limits {
                packets: Some(n),
                ..Limits::default()
            },
            ..Lifetime::default()
        };
    }
    c
}

fn pol(name: &str, selector: Selector, action: Action) -> Policy {
    Policy {
        name: name.into(),
        selector,
        action,
    }
}

fn spd() -> Arc<Spd> {
    static SPD: OnceLock<Arc<Spd>> = OnceLock::new();
    SPD.get_or_init(|| {
        let mut dns = Selector::ANY;
        dns.proto = Some(IpProtocol::UDP);
        dns.remote_port = PortSel::port(53);
        let mut dns_in = Selector::ANY;
        dns_in.proto = Some(IpProtocol::UDP);
        dns_in.local_port = PortSel::port(53);
        let mut telnet = Selector::ANY;
        telnet.proto = Some(IpProtocol::TCP);
        telnet.remote_port = PortSel::port(23);
        let mut telnet_in = Selector::ANY;
        telnet_in.proto = Some(IpProtocol::TCP);
        telnet_in.local_port = PortSel::port(23);
        let mut host_tcp = Selector::addresses(net("10.0.0.2"), net("10.0.0.1"));
        host_tcp.proto = Some(IpProtocol::TCP);
        let protect = |reqids: &[u32]| Action::Protect(SaBundle::new(reqids).expect("1-4 SAs"));
        let cfg = SpdConfig {
            outbound: vec![
                pol("dns", dns, Action::Bypass),
                pol("telnet", telnet, Action::Discard),
                pol(
                    "net4",
                    Selector::addresses(net("10.2.0.0/24"), net("10.1.0.0/24")),
                    protect(&[1]),
                ),
                pol(
                    "net6",
                    Selector::addresses(net("fd02::/64"), net("fd01::/64")),
                    protect(&[3]),
                ),
                pol("host-tcp", host_tcp, protect(&[7])),
                pol(
                    "bundle",
                    Selector::addresses(net("10.2.1.0/24"), net("10.1.1.0/24")),
                    protect(&[4, 2]),
                ),
                pol(
                    "no-sa",
                    Selector::addresses(net("10.2.9.0/24"), AddrRange::Any),
                    protect(&[99]),
                ),
            ],
            inbound: vec![
                pol("dns", dns_in, Action::Bypass),
                pol("telnet", telnet_in, Action::Discard),
                pol(
                    "net4",
                    Selector::addresses(net("10.2.0.0/24"), net("10.1.0.0/24")),
                    protect(&[1]),
                ),
            ],
            inbound_default: NonPolicy::Discard,
            outbound_default: NonPolicy::Discard,
        };
        Arc::new(cfg.compile().expect("the fuzz SPD compiles"))
    })
    .clone()
}

fn configs() -> &'static [(SaConfig, SaConfig)] {
    static C: OnceLock<Vec<(SaConfig, SaConfig)>> = OnceLock::new();
    C.get_or_init(|| {
        specs()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut out = config(i, s, Direction::Outbound, false);
                out.spi = s.spi ^ 0x00ff_0000;
                (config(i, s, Direction::Inbound, false), out)
            })
            .collect()
    })
}

/// A fresh engine per input, so that every input is judged alone (replay windows, lifetimes).
fn engine() -> Engine {
    let cfg = EngineConfig {
        udp_encap_ports: vec![4500],
        sa_capacity: 32,
        event_capacity: 64,
    };
    let mut e = Engine::with_config(spd(), cfg);
    for (inb, out) in configs() {
        for c in [inb, out] {
            let sa = Sa::with_random(c, NOW, [0x42; 16]).expect("the fuzz SAs are valid");
            e.install_sa(sa).expect("the fuzz SAs install");
        }
    }
    e
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut peer = Engine::new(Arc::new(Spd::empty(NonPolicy::Discard)));
    let mut handles = vec![];
    for (i, s) in specs().iter().enumerate() {
        let c = config(i, s, Direction::Outbound, true);
        handles.push(peer.add_sa(&c, NOW).expect("peer SA"));
    }
    let udp4 =
        |src: [u8; 4], dst: [u8; 4]| udp_packet(false, &src, &dst, 1234, 5000, b"xsec fuzz seed");
    let udp6 =
        |src: [u8; 16], dst: [u8; 16]| udp_packet(true, &src, &dst, 1234, 5000, b"xsec fuzz seed");
    let h4 = |a: u8, b: u8| [10, a, 0, b];
    let h6 = |a: u8, b: u8| {
        let mut x = [0u8; 16];
        x[0] = 0xfd;
        x[1] = a;
        x[15] = b;
        x
    };
    // (SA index, inner packets) the peer protects
    let plan: Vec<(usize, Vec<Vec<u8>>)> = vec![
        (
            0,
            vec![
                udp4(h4(1, 10), h4(2, 10)),
                tcp_packet(false, &h4(1, 10), &h4(2, 10), 40000, 80, b"GET"),
                ping_packet(false, &h4(1, 10), &h4(2, 10)),
            ],
        ),
        (
            1,
            vec![udp4(h4(1, 10), h4(2, 10)), udp6(h6(1, 16), h6(2, 16))],
        ),
        (
            2,
            vec![
                udp6(h6(1, 16), h6(2, 16)),
                ping_packet(true, &h6(1, 16), &h6(2, 16)),
            ],
        ),
        (
            3,
            vec![
                udp4(PEER4, GW4),
                tcp_packet(true, &PEER6, &GW6, 40000, 22, b"ssh"),
            ],
        ),
        (4, vec![udp6(PEER6, GW6)]),
        (
            5,
            vec![udp6(h6(1, 16), h6(2, 16)), udp4(h4(1, 10), h4(2, 10))],
        ),
        (
            6,
            vec![
                tcp_packet(false, &PEER4, &GW4, 40000, 22, b"ssh"),
                udp4(PEER4, GW4),
            ],
        ),
        (7, vec![udp4(h4(1, 10), h4(2, 10))]),
        (8, vec![ping_packet(false, &h4(1, 10), &h4(2, 10))]),
        (9, vec![udp4(h4(1, 10), h4(2, 10))]),
        (
            10,
            vec![
                udp6(PEER6, GW6),
                tcp_packet(true, &PEER6, &GW6, 40000, 22, b"ssh"),
            ],
        ),
    ];
    for (i, inners) in plan {
        for (j, inner) in inners.into_iter().enumerate() {
            for seq in [1u64, 1000] {
                if let Some(sa) = peer.sa_mut(handles[i]) {
                    sa.set_seq(seq - 1);
                }
                let mut p = frame(&inner);
                if peer.encap_with(handles[i], NOW, &mut p) == Verdict::Forward {
                    out.push((format!("esp-{i}-{j}-{seq}"), p.data().to_vec()));
                }
            }
        }
    }
    // A bundle: transport (SA 3) inside tunnel (SA 1).
    let mut p = frame(&udp4([10, 1, 1, 5], [10, 2, 1, 5]));
    if peer.encap_with(handles[3], NOW, &mut p) == Verdict::Forward
        && peer.encap_with(handles[1], NOW, &mut p) == Verdict::Forward
    {
        out.push(("esp-bundle".into(), p.data().to_vec()));
    }
    // Plain traffic both ways, IKE and NAT-keepalives.
    let ike = [vec![0u8; 4], vec![0x11; 28]].concat();
    let plain: Vec<(&str, Vec<u8>)> = vec![
        ("plain-protect", udp4(h4(1, 10), h4(2, 10))),
        ("plain-dns", udp_packet(false, &PEER4, &GW4, 3333, 53, b"q")),
        (
            "plain-telnet",
            tcp_packet(false, &PEER4, &GW4, 3333, 23, b""),
        ),
        ("plain-v6", udp6(PEER6, GW6)),
        (
            "ike-500",
            udp_packet(false, &PEER4, &GW4, 500, 500, &ike[4..]),
        ),
        (
            "ike-4500",
            udp_packet(false, &PEER4, &GW4, 4500, 4500, &ike),
        ),
        (
            "keepalive",
            udp_packet(false, &PEER4, &GW4, 4500, 4500, &[0xff]),
        ),
        (
            "keepalive-2746",
            udp_packet(true, &PEER6, &GW6, 2746, 2746, &[0xff]),
        ),
        ("out-net4", udp4(h4(2, 10), h4(1, 10))),
        ("out-net6", udp6(h6(2, 16), h6(1, 16))),
        (
            "out-host-tcp",
            tcp_packet(false, &GW4, &PEER4, 22, 40000, b"x"),
        ),
        ("out-bundle", udp4([10, 2, 1, 5], [10, 1, 1, 5])),
        ("out-no-sa", udp4([10, 2, 9, 1], [10, 1, 0, 1])),
    ];
    out.extend(plain.into_iter().map(|(n, p)| (n.to_owned(), p)));
    out
}

fn inbound_reason_ok(r: DropReason) -> bool {
    !matches!(
        r,
        DropReason::SeqExhausted | DropReason::NoBufferSpace | DropReason::TooBig
    )
}

fn outbound_reason_ok(r: DropReason) -> bool {
    matches!(
        r,
        DropReason::Malformed
            | DropReason::Fragment
            | DropReason::NoSa
            | DropReason::LifetimeExpired
            | DropReason::SeqExhausted
            | DropReason::PolicyDiscard
            | DropReason::NoPolicy
            | DropReason::NoBufferSpace
            | DropReason::TooBig
    )
}

fn run(data: &[u8]) {
    let mut e = engine();

    // ---- inbound
    let mut p = frame(data);
    let v = e.inbound(NOW, &mut p);
    let out = p.data();
    match v {
        Verdict::Bypass | Verdict::Punt | Verdict::Consumed => {
            assert_eq!(p.head(), HEADROOM, "{v:?} moved the packet");
            assert!(unchanged_prefix(data, out), "{v:?} changed the packet");
        }
        Verdict::Forward => {
            assert!(
                e.stats().decap_packets >= 1,
                "Forward without a decapsulation"
            );
            let ip = parse_ip(out)
                .unwrap_or_else(|| panic!("inbound Forward of a malformed packet {}", hex(out)));
            assert_eq!(
                ip.total,
                out.len(),
                "inbound Forward: IP length and window disagree"
            );
            assert!(
                plain_after_decap(out),
                "inbound Forward of a packet that is not plain traffic: {}",
                hex(out)
            );
        }
        Verdict::Drop(r) => assert!(
            inbound_reason_ok(r),
            "inbound dropped with an outbound reason {r:?}"
        ),
        Verdict::Unset | Verdict::Handoff(_) | Verdict::TooBig { .. } => {
            panic!("inbound returned {v:?}")
        }
    }

    // ---- the same bytes again: a decapsulated packet must not be accepted twice by an SA
    // that has a replay window.
    if v == Verdict::Forward {
        let used: Vec<_> = e
            .sad()
            .iter()
            .filter(|(_, sa)| sa.direction() == Direction::Inbound)
            .map(|(_, sa)| sa.status(NOW))
            .filter(|st| st.packets > 0)
            .collect();
        if let [st] = used.as_slice()
            && st.packets == 1
            && st.replay_window > 0
        {
            let mut p2 = frame(data);
            let v2 = e.inbound(NOW, &mut p2);
            assert!(
                matches!(
                    v2,
                    Verdict::Drop(DropReason::ReplayDuplicate | DropReason::LifetimeExpired)
                ),
                "a replayed packet to SPI {:#x} got {v2:?}",
                st.spi
            );
        }
    }

    // ---- outbound
    let before = e.stats().encap_packets;
    let mut p = frame(data);
    let v = e.outbound(NOW, &mut p);
    let out = p.data();
    match v {
        Verdict::Bypass => {
            assert_eq!(
                (p.head(), out),
                (HEADROOM, data),
                "outbound Bypass changed the packet"
            );
        }
        Verdict::Forward => {
            assert!(
                e.stats().encap_packets > before,
                "outbound Forward without an encapsulation"
            );
            if let Err(m) = check_esp_packet(out) {
                panic!("outbound Forward of a bad ESP packet ({m}): {}", hex(out));
            }
        }
        Verdict::Drop(r) => {
            assert!(
                outbound_reason_ok(r),
                "outbound dropped with an inbound reason {r:?}"
            );
            if e.stats().encap_packets == before {
                assert_eq!(
                    (p.head(), out),
                    (HEADROOM, data),
                    "outbound Drop({r:?}) changed the packet"
                );
            }
        }
        // no path MTU is set here
        Verdict::Punt
        | Verdict::Consumed
        | Verdict::Unset
        | Verdict::Handoff(_)
        | Verdict::TooBig { .. } => {
            panic!("outbound returned {v:?}")
        }
    }
}

fuzz_target!(
    init: {
        write_seeds(&seeds());
    },
    |data: &[u8]| run(data)
);
