//! Packet builders and gateway pairs shared by the engine tests.
#![allow(dead_code)]
// Test support: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{Encap, Mode, Protocol, Sa, SaConfig, SaHandle};
use xsec_dataplane::spd::{
    Action, AddrRange, Direction, NonPolicy, Policy, SaBundle, Selector, SpdConfig,
};
use xsec_dataplane::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket, checksum};
use xsec_dataplane::{Engine, PacketBuf, Timestamp};

pub const HEADROOM: usize = 128;
pub const FRAME: usize = 2048 + 256;

pub fn frame(data: &[u8]) -> PacketBuf<Vec<u8>> {
    PacketBuf::from_slice(vec![0u8; FRAME], HEADROOM, data).unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Every (encryption, integrity) pair the engine accepts (3DES with legacy enabled).
pub const ALGS: &[(EncAlg, AuthAlg)] = &[
    (EncAlg::AesGcm128, AuthAlg::None),
    (EncAlg::AesGcm192, AuthAlg::None),
    (EncAlg::AesGcm256, AuthAlg::None),
    (EncAlg::ChaCha20Poly1305, AuthAlg::None),
    (EncAlg::AesGmac128, AuthAlg::None),
    (EncAlg::AesGmac256, AuthAlg::None),
    (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
    (EncAlg::AesCbc128, AuthAlg::HmacSha256_128),
    (EncAlg::AesCbc192, AuthAlg::HmacSha384_192),
    (EncAlg::AesCbc256, AuthAlg::HmacSha512_256),
    (EncAlg::AesCbc256, AuthAlg::HmacSha1_96),
    (EncAlg::TripleDesCbc, AuthAlg::HmacSha256_128),
    (EncAlg::Null, AuthAlg::HmacSha1_96),
    (EncAlg::Null, AuthAlg::HmacSha256_128),
    (EncAlg::Null, AuthAlg::HmacSha384_192),
    (EncAlg::Null, AuthAlg::HmacSha512_256),
];

pub fn key(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// IPv4 header + `l4` with correct checksums (UDP/TCP/ICMP checksum filled in).
pub fn ipv4(src: &str, dst: &str, proto: u8, tos: u8, df: bool, l4: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        tos,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        if df { 0x40 } else { 0 },
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    let c = checksum::compute(0, &p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = l4.to_vec();
    match proto {
        17 if l4.len() >= 8 => {
            l4[6] = 0;
            l4[7] = 0;
            let c = checksum::compute(
                checksum::pseudo_v4(s.octets(), d.octets(), 17, l4.len() as u16),
                &l4,
            );
            l4[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
        6 if l4.len() >= 20 => {
            l4[16] = 0;
            l4[17] = 0;
            let c = checksum::compute(
                checksum::pseudo_v4(s.octets(), d.octets(), 6, l4.len() as u16),
                &l4,
            );
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        1 if l4.len() >= 4 => {
            l4[2] = 0;
            l4[3] = 0;
            let c = checksum::compute(0, &l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    p.extend_from_slice(&l4);
    p
}

/// IPv6 header + `l4` (UDP/TCP/ICMPv6 checksums filled in).
pub fn ipv6(src: &str, dst: &str, nh: u8, tc: u8, l4: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let mut p = vec![
        0x60 | (tc >> 4),
        tc << 4,
        0x12,
        0x34,
        (l4.len() >> 8) as u8,
        l4.len() as u8,
        nh,
        64,
    ];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    let mut l4 = l4.to_vec();
    let off = match nh {
        17 if l4.len() >= 8 => Some(6),
        6 if l4.len() >= 20 => Some(16),
        58 if l4.len() >= 4 => Some(2),
        _ => None,
    };
    if let Some(o) = off {
        l4[o] = 0;
        l4[o + 1] = 0;
        let c = checksum::compute(
            checksum::pseudo_v6(s.octets(), d.octets(), nh, l4.len() as u32),
            &l4,
        );
        l4[o..o + 2].copy_from_slice(&(if c == 0 && nh == 17 { 0xffff } else { c }).to_be_bytes());
    }
    p.extend_from_slice(&l4);
    p
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = vec![
        (sport >> 8) as u8,
        sport as u8,
        (dport >> 8) as u8,
        dport as u8,
        (len >> 8) as u8,
        len as u8,
        0,
        0,
    ];
    u.extend_from_slice(payload);
    u
}

pub fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![
        (sport >> 8) as u8,
        sport as u8,
        (dport >> 8) as u8,
        dport as u8,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0x50,
        0x18,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ];
    t.extend_from_slice(payload);
    t
}

pub fn icmp_echo(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(payload);
    m
}

/// Verify an IPv4 or IPv6 packet's header and L4 checksums (a zero UDP checksum over IPv4
/// is "none").
pub fn checksums_ok(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(p) else {
                return false;
            };
            let (proto, l4) = (ip.protocol(), ip.payload());
            let pseudo =
                checksum::pseudo_v4(ip.src_addr(), ip.dst_addr(), proto.0, l4.len() as u16);
            ip.verify_checksum()
                && match proto {
                    IpProtocol::UDP => UdpPacket::new_checked(l4)
                        .is_ok_and(|u| u.checksum() == 0 || u.verify_checksum(pseudo)),
                    IpProtocol::TCP => checksum::verify(pseudo, l4),
                    IpProtocol::ICMP => checksum::verify(0, l4),
                    _ => true,
                }
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(p) else {
                return false;
            };
            let (nh, l4) = (ip.next_header(), ip.payload());
            match nh {
                IpProtocol::UDP | IpProtocol::TCP | IpProtocol::ICMPV6 => checksum::verify(
                    checksum::pseudo_v6(ip.src_addr(), ip.dst_addr(), nh.0, l4.len() as u32),
                    l4,
                ),
                _ => true,
            }
        }
        _ => false,
    }
}

/// Options of a gateway pair.
#[derive(Clone, Debug)]
pub struct PairOpts {
    pub enc: EncAlg,
    pub auth: AuthAlg,
    pub mode: Mode,
    pub outer_v6: bool,
    pub encap: Encap,
    pub esn: bool,
    pub window: u32,
    pub protocol: Protocol,
}

impl PairOpts {
    pub fn new(enc: EncAlg, auth: AuthAlg) -> Self {
        PairOpts {
            enc,
            auth,
            mode: Mode::Tunnel,
            outer_v6: false,
            encap: Encap::None,
            esn: false,
            window: 64,
            protocol: Protocol::Esp,
        }
    }
}

/// Gateway A (10.0.0.1 / fd00::1) protects towards gateway B (10.0.0.2 / fd00::2).
#[derive(Debug)]
pub struct Pair {
    pub a: Engine,
    pub b: Engine,
    pub out: SaHandle,
    pub inb: SaHandle,
    pub out_cfg: SaConfig,
    pub in_cfg: SaConfig,
}

pub fn outer_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (ip("fd00::1"), ip("fd00::2"))
    } else {
        (ip("10.0.0.1"), ip("10.0.0.2"))
    }
}

pub fn sa_pair(o: &PairOpts, spi: u32) -> (SaConfig, SaConfig) {
    let (ga, gb) = outer_addrs(o.outer_v6);
    let ek = key(o.enc.keymat_len(), 1);
    let ak = key(o.auth.key_len(), 2);
    let mut out = SaConfig::tunnel(spi, Direction::Outbound, ga, gb, o.enc, &ek, o.auth, &ak);
    let mut inb = SaConfig::tunnel(spi, Direction::Inbound, gb, ga, o.enc, &ek, o.auth, &ak);
    for c in [&mut out, &mut inb] {
        c.mode = o.mode;
        c.encap = o.encap;
        c.esn = o.esn;
        c.replay_window = o.window;
        c.allow_legacy = true;
        c.reqid = 1;
        c.protocol = o.protocol;
        if o.mode == Mode::Transport {
            c.local = None;
            c.remote = None;
        }
    }
    // An inbound SA without selectors accepts nothing (RFC 4301 §5.2, fail closed).
    inb.selectors = vec![Selector::ANY];
    (out, inb)
}

/// A pair whose outbound SPD protects everything (unicast) with reqid 1.
pub fn pair(o: &PairOpts) -> Pair {
    let (out_cfg, in_cfg) = sa_pair(o, 0x1000);
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }],
        inbound: vec![],
        inbound_default: NonPolicy::Discard,
        outbound_default: NonPolicy::Discard,
    }
    .compile()
    .unwrap();
    let mut a = Engine::new(Arc::new(spd));
    let mut b = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let out = a.add_sa(&out_cfg, Timestamp::ZERO).unwrap();
    let inb = b.add_sa(&in_cfg, Timestamp::ZERO).unwrap();
    Pair {
        a,
        b,
        out,
        inb,
        out_cfg,
        in_cfg,
    }
}

/// An inner packet for a pair: tunnel mode carries host traffic, transport mode the
/// gateways' own.
pub fn inner(o: &PairOpts, inner_v6: bool, kind: u8, payload: &[u8]) -> Vec<u8> {
    let (s4, d4, s6, d6) = if o.mode == Mode::Transport {
        if o.outer_v6 {
            ("", "", "fd00::1", "fd00::2")
        } else {
            ("10.0.0.1", "10.0.0.2", "", "")
        }
    } else {
        ("10.1.0.10", "10.2.0.10", "fd01::10", "fd02::10")
    };
    let v6 = if o.mode == Mode::Transport {
        o.outer_v6
    } else {
        inner_v6
    };
    match (v6, kind % 3) {
        (false, 0) => ipv4(s4, d4, 17, 0, true, &udp(1111, 5000, payload)),
        (false, 1) => ipv4(s4, d4, 6, 0x28, false, &tcp(40000, 22, payload)),
        (false, _) => ipv4(s4, d4, 1, 0, true, &icmp_echo(false, payload)),
        (true, 0) => ipv6(s6, d6, 17, 0, &udp(1111, 5000, payload)),
        (true, 1) => ipv6(s6, d6, 6, 0x28, &tcp(40000, 22, payload)),
        (true, _) => ipv6(s6, d6, 58, 0, &icmp_echo(true, payload)),
    }
}

pub fn addr_range(s: &str) -> AddrRange {
    s.parse().unwrap()
}

/// Three engines: two with the same outbound SAs (same IV seeds) — one for bursts, one for
/// packets one at a time — and the peer with the inbound SAs. SA `i` (reqid `i + 1`)
/// carries UDP to port 5000 + `i`.
pub fn twin_engines(opts: &[PairOpts]) -> (Engine, Engine, Engine) {
    let mut outbound = vec![];
    let mut spd_out = vec![];
    let mut b = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let mut sas_a = vec![];
    let mut sas_c = vec![];
    for (i, o) in opts.iter().enumerate() {
        let reqid = i as u32 + 1;
        let (mut out, mut inb) = sa_pair(o, 0x5000 + reqid);
        out.reqid = reqid;
        inb.reqid = reqid;
        // SA i carries traffic to UDP port 5000 + i
        let mut sel = Selector::ANY;
        sel.proto = Some(xsec_dataplane::wire::IpProtocol::UDP);
        sel.remote_port = xsec_dataplane::spd::PortSel::port(5000 + i as u16);
        spd_out.push(Policy {
            name: format!("p{i}"),
            selector: sel,
            action: Action::Protect(SaBundle::single(reqid)),
        });
        let random: [u8; 16] = core::array::from_fn(|k| (k as u8) ^ (i as u8 * 31));
        sas_a.push(Sa::with_random(&out, Timestamp::ZERO, random).unwrap());
        sas_c.push(Sa::with_random(&out, Timestamp::ZERO, random).unwrap());
        b.add_sa(&inb, Timestamp::ZERO).unwrap();
        outbound.push(out);
    }
    let spd = Arc::new(
        SpdConfig {
            outbound: spd_out,
            ..Default::default()
        }
        .compile()
        .unwrap(),
    );
    let mut a = Engine::new(spd.clone());
    let mut c = Engine::new(spd);
    for (x, y) in sas_a.into_iter().zip(sas_c) {
        a.install_sa(x).unwrap();
        c.install_sa(y).unwrap();
    }
    (a, c, b)
}

/// `0..len` cut into consecutive bursts whose sizes cycle through `cuts` (each ≥ 1).
pub fn burst_ranges(len: usize, cuts: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = vec![];
    let mut at = 0;
    for &c in cuts.iter().cycle() {
        if at >= len {
            break;
        }
        let n = c.max(1).min(len - at);
        out.push(at..at + n);
        at += n;
    }
    out
}
