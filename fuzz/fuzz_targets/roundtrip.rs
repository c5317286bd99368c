//! Encapsulate, then decapsulate: the fuzzer supplies an inner packet and the choices
//! (algorithm, tunnel or transport, outer family, raw or UDP on 4500 / 2746 / another port,
//! ESN, ECN and DSCP/DF modes, starting sequence number); an outbound engine protects the
//! packet with `encap_with`, an inbound engine with the matching SA takes it back.
//!
//! Invariants: encapsulation either fails leaving the packet untouched, or produces
//! well-formed ESP that the peer authenticates and decapsulates (never an ICV, padding or
//! length failure); and when the inner packet is plain traffic with canonical checksums, the
//! peer forwards exactly the original bytes.
//!
//! Input: [algorithm, flags, dscp, seq_hi, seq_lo, inner packet...]
//!   flags: bit0 transport, bit1 IPv6 outer, bits2-3 encap (raw, 4500, 2746, 10000), bit4 ESN,
//!   bit5 ECN compatibility, bits6-7 DF mode (copy, set, clear)
//!   dscp < 64: set that DSCP on the outer header; otherwise copy the inner one

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{DfMode, DscpMode, EcnMode, Encap, Sa, SaConfig};
use xsec_dataplane::spd::{Direction, NonPolicy, Selector};
use xsec_dataplane::{DropReason, Engine, EngineConfig, Verdict};
use xsec_fuzz::*;

const ALGS: &[(EncAlg, AuthAlg)] = &[
    (EncAlg::AesGcm128, AuthAlg::None),
    (EncAlg::AesGcm192, AuthAlg::None),
    (EncAlg::AesGcm256, AuthAlg::None),
    (EncAlg::ChaCha20Poly1305, AuthAlg::None),
    (EncAlg::AesGmac128, AuthAlg::None),
    (EncAlg::AesGmac192, AuthAlg::None),
    (EncAlg::AesGmac256, AuthAlg::None),
    (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
    (EncAlg::AesCbc128, AuthAlg::HmacSha256_128),
    (EncAlg::AesCbc192, AuthAlg::HmacSha384_192),
    (EncAlg::AesCbc256, AuthAlg::HmacSha512_256),
    (EncAlg::AesCbc256, AuthAlg::HmacSha256_128),
    (EncAlg::AesCbc128, AuthAlg::AesCmac96),
    (EncAlg::TripleDesCbc, AuthAlg::HmacSha1_96),
    (EncAlg::Null, AuthAlg::HmacSha1_96),
    (EncAlg::Null, AuthAlg::HmacSha256_128),
    (EncAlg::Null, AuthAlg::HmacSha512_256),
];

const SPI: u32 = 0x7000_0001;

#[derive(Debug, Clone, Copy)]
struct Choice {
    enc: EncAlg,
    auth: AuthAlg,
    transport: bool,
    v6: bool,
    port: Option<u16>,
    esn: bool,
    compat: bool,
    df: DfMode,
    dscp: DscpMode,
    seq: u64,
}

fn parse(data: &[u8]) -> Option<(Choice, &[u8])> {
    let [a, f, d, s1, s2, inner @ ..] = data else {
        return None;
    };
    let (enc, auth) = ALGS[usize::from(*a) % ALGS.len()];
    Some((
        Choice {
            enc,
            auth,
            transport: f & 1 != 0,
            v6: f & 2 != 0,
            port: [None, Some(4500), Some(2746), Some(10000)][usize::from((f >> 2) & 3)],
            esn: f & 16 != 0,
            compat: f & 32 != 0,
            df: [DfMode::Copy, DfMode::Set, DfMode::Clear, DfMode::Copy][usize::from(f >> 6)],
            dscp: if *d < 64 {
                DscpMode::Set(*d)
            } else {
                DscpMode::Copy
            },
            seq: u64::from(u16::from_be_bytes([*s1, *s2])),
        },
        inner,
    ))
}

fn config(c: &Choice, dir: Direction) -> SaConfig {
    let (a, b): (IpAddr, IpAddr) = if c.v6 {
        (PEER6.into(), GW6.into())
    } else {
        (PEER4.into(), GW4.into())
    };
    // The sender (outbound) is the peer, the receiver this gateway.
    let (local, remote) = if dir == Direction::Outbound {
        (a, b)
    } else {
        (b, a)
    };
    let (ek, ak) = keys(c.enc, c.auth, 0x33);
    let mut s = if c.transport {
        SaConfig::transport(SPI, dir, c.enc, &ek, c.auth, &ak)
    } else {
        SaConfig::tunnel(SPI, dir, local, remote, c.enc, &ek, c.auth, &ak)
    };
    s.encap = c.port.map_or(Encap::None, |p| Encap::Udp {
        local_port: p,
        remote_port: p,
    });
    s.esn = c.esn;
    s.ecn = if c.compat {
        EcnMode::Compatibility
    } else {
        EcnMode::Normal
    };
    s.df = c.df;
    s.dscp = c.dscp;
    s.allow_legacy = true;
    // The receiver accepts any inner packet (without selectors it would accept nothing).
    s.selectors = vec![Selector::ANY];
    s
}

fn engine(c: &Choice, dir: Direction) -> Engine {
    let cfg = EngineConfig {
        udp_encap_ports: vec![4500],
        sa_capacity: 4,
        event_capacity: 16,
    };
    let mut e = Engine::with_config(empty_spd(NonPolicy::Discard), cfg);
    let sa = Sa::with_random(&config(c, dir), NOW, [9; 16]).expect("valid SA");
    e.install_sa(sa).expect("installs");
    e
}

/// Whether decapsulation can give back the inner bytes exactly: header and (for transport
/// mode over UDP, where RFC 3948 makes the receiver recompute them) TCP/UDP checksums in
/// their canonical form.
fn canonical(c: &Choice, inner: &[u8]) -> bool {
    let Some(ip) = parse_ip(inner) else {
        return false;
    };
    let p = &inner[..ip.total];
    if !ip.v6 && c.transport {
        let mut h = p[..ip.hl].to_vec();
        h[10] = 0;
        h[11] = 0;
        if checksum::compute(0, &h) != u16::from_be_bytes([p[10], p[11]]) {
            return false;
        }
    }
    if c.transport && c.port.is_some() {
        // The receiver fixes the TCP/UDP checksum when that header directly follows ESP.
        let Some((off, proto)) = (if ip.v6 {
            esp_insert(p)
        } else {
            Some((ip.hl, ip.proto))
        }) else {
            return false;
        };
        if matches!(proto, PROTO_TCP | PROTO_UDP) {
            let mut q = p.to_vec();
            fix_l4_checksum(&mut q, off, proto, ip.v6);
            return q == p;
        }
    }
    true
}

/// For IPv6: where transport-mode ESP goes (RFC 4303 §3.1.1: after hop-by-hop, routing and
/// fragment headers, and destination options followed by a routing header), and the
/// protocol of the header found there.
fn esp_insert(p: &[u8]) -> Option<(usize, u8)> {
    let (mut nh, mut off) = (p[6], 40);
    loop {
        let len = match nh {
            0 | 43 => (usize::from(*p.get(off + 1)?) + 1) * 8,
            44 => 8,
            60 if p.get(off) == Some(&43) => (usize::from(*p.get(off + 1)?) + 1) * 8,
            _ => return Some((off, nh)),
        };
        nh = *p.get(off)?;
        off += len;
    }
}

fn run(data: &[u8]) {
    let Some((c, inner)) = parse(data) else {
        return;
    };
    let mut tx = engine(&c, Direction::Outbound);
    let mut rx = engine(&c, Direction::Inbound);
    let h = tx.sad().iter().next().map(|(h, _)| h).expect("the SA");
    if let Some(sa) = tx.sa_mut(h) {
        sa.set_seq(c.seq);
    }
    let mut p = frame(inner);
    let v = tx.encap_with(h, NOW, &mut p);
    let ctx = || format!("{c:?} inner {}", hex(inner));
    match v {
        Verdict::Forward => {}
        Verdict::Drop(r) => {
            assert_eq!(
                (p.head(), p.data()),
                (HEADROOM, inner),
                "encap Drop({r:?}) changed the packet: {}",
                ctx()
            );
            return;
        }
        other => panic!("encap_with returned {other:?}: {}", ctx()),
    }
    let esp = p.data().to_vec();
    if let Err(m) = check_esp_packet(&esp) {
        panic!("encap produced bad ESP ({m}): {} from {}", hex(&esp), ctx());
    }

    let v = rx.inbound(NOW, &mut p);
    let st = rx.stats();
    let sa_drops = rx
        .sad()
        .iter()
        .next()
        .map(|(_, sa)| sa.status(NOW).drops)
        .expect("the SA");
    // Encapsulation read the inner length from its header (and walked no IPv6 extension
    // headers in tunnel mode).
    let len = if inner[0] >> 4 == 4 {
        usize::from(u16::from_be_bytes([inner[2], inner[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([inner[4], inner[5]]))
    };
    let original = &inner[..len];
    // The one refusal allowed: an inner packet whose selectors cannot be read (RFC 4301
    // §5.2 checks them); encap_with skips the SPD, so the sender does not look.
    let unreadable = v == Verdict::Drop(DropReason::Malformed) && key_of(original).is_none();
    // Transport mode carries the packet's own next header in the ESP trailer: 59 ("no next
    // header") is then indistinguishable from a dummy packet, which RFC 4303 §2.6 has the
    // receiver discard.
    let nh59 = c.transport
        && (if original[0] >> 4 == 4 {
            Some(original[9])
        } else {
            esp_insert(original).map(|(_, p)| p)
        }) == Some(59);
    let dummy = nh59 && v == Verdict::Drop(DropReason::Dummy);
    assert!(
        st.decap_packets >= 1 || unreadable || dummy,
        "the receiver refused what the sender made: {v:?}, SA drops {:?}; ESP {} from {}",
        sa_drops.nonzero().collect::<Vec<_>>(),
        hex(&esp),
        ctx()
    );
    if !nh59 && canonical(&c, inner) && plain_after_decap(original) {
        assert_eq!(
            v,
            Verdict::Forward,
            "plain inner packet not forwarded: {}",
            ctx()
        );
        assert_eq!(
            hex(p.data()),
            hex(original),
            "decapsulated bytes differ: ESP {}, {}",
            hex(&esp),
            ctx()
        );
    }
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let u4 = udp_packet(
        false,
        &[10, 1, 0, 10],
        &[10, 2, 0, 10],
        1234,
        5000,
        b"roundtrip",
    );
    let u6 = udp_packet(true, &PEER6, &GW6, 1234, 5000, b"roundtrip");
    let t4 = tcp_packet(false, &PEER4, &GW4, 40000, 22, b"ssh");
    let mut out = vec![];
    for (i, (name, pkt)) in [("udp4", &u4), ("udp6", &u6), ("tcp4", &t4)]
        .into_iter()
        .enumerate()
    {
        for (j, flags) in [0u8, 1, 2 | 4, 1 | 8, 3 | 12 | 16, 32 | 64]
            .into_iter()
            .enumerate()
        {
            let alg = (i * 5 + j * 3) as u8;
            let mut v = vec![alg, flags, 0xff, 0, 0];
            v.extend_from_slice(pkt);
            out.push((format!("{name}-{j}"), v));
        }
    }
    out
}

fuzz_target!(
    init: {
        write_seeds(&seeds());
    },
    |data: &[u8]| run(data)
);
