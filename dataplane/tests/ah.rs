//! AH (RFC 4302) through the engine: round trips in every mode and family with every
//! HMAC, the header's mutable fields (changed en route: accepted) against its immutable
//! ones and the payload (changed: a counted drop), IPv4 options and IPv6 extension
//! headers, anti-replay, ESN and lifetimes. Independent implementations (scapy, tshark)
//! check the same packets in the interop tests.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{Mode, Protocol, SaConfig};
use xsec_dataplane::spd::{Direction, Selector};
use xsec_dataplane::wire::checksum;
use xsec_dataplane::{DropReason, Engine, Timestamp, Verdict};

/// Every integrity algorithm AH takes.
const INTEGS: [AuthAlg; 8] = [
    AuthAlg::HmacSha1_96,
    AuthAlg::HmacSha256_128,
    AuthAlg::HmacSha384_192,
    AuthAlg::HmacSha512_256,
    AuthAlg::AesCmac96,
    AuthAlg::AesGmac128,
    AuthAlg::AesGmac192,
    AuthAlg::AesGmac256,
];

fn ah_opts(auth: AuthAlg, mode: Mode, outer_v6: bool) -> PairOpts {
    PairOpts {
        mode,
        outer_v6,
        protocol: Protocol::Ah,
        ..PairOpts::new(EncAlg::Null, auth)
    }
}

/// Protect `p` at A; the wire packet.
fn seal(pair: &mut Pair, p: &[u8]) -> Vec<u8> {
    let mut f = frame(p);
    let v = pair.a.outbound(Timestamp::ZERO, &mut f);
    assert_eq!(v, Verdict::Forward, "outbound");
    f.data().to_vec()
}

/// B's verdict and the packet it passes on.
fn open(pair: &mut Pair, wire: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = frame(wire);
    let v = pair.b.inbound(Timestamp::ZERO, &mut f);
    (v, f.data().to_vec())
}

/// The IPv4 header checksum made right again, as a router does after changing a field.
fn fix_v4_checksum(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum::compute(0, &p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn roundtrip_every_integrity_mode_and_family() {
    for auth in INTEGS {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for outer_v6 in [false, true] {
                for inner_v6 in [false, true] {
                    if mode == Mode::Transport && inner_v6 != outer_v6 {
                        continue;
                    }
                    let o = ah_opts(auth, mode, outer_v6);
                    let mut pair = pair(&o);
                    for (k, len) in [0usize, 1, 57, 1000].into_iter().enumerate() {
                        let p = inner(&o, inner_v6, k as u8, &payload_of(len));
                        let wire = seal(&mut pair, &p);
                        let what = format!(
                            "{auth} {mode:?} outer v6 {outer_v6} inner v6 {inner_v6} len {len}"
                        );
                        check_layout(&wire, &p, auth, mode, outer_v6, &what);
                        let (v, out) = open(&mut pair, &wire);
                        assert_eq!(v, Verdict::Forward, "{what}");
                        assert_eq!(out, p, "{what}");
                        assert!(checksums_ok(&out), "{what}");
                    }
                }
            }
        }
    }
}

fn payload_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The AH packet on the wire: protocol 51 where the IP header names its payload, the AH
/// length for the ICV and family, the payload unencrypted behind it.
fn check_layout(wire: &[u8], p: &[u8], auth: AuthAlg, mode: Mode, v6: bool, what: &str) {
    let ah_len = match (auth.icv_len(), v6) {
        (12, _) => 24,
        (16, false) => 28,
        (16, true) => 32,
        (24, false) => 36,
        (24, true) => 40,
        (32, false) => 44,
        _ => 48,
    };
    let hl = if v6 { 40 } else { 20 };
    if v6 {
        assert_eq!(wire[6], 51, "{what}: next header");
        assert_eq!(
            usize::from(u16::from_be_bytes([wire[4], wire[5]])),
            wire.len() - 40
        );
    } else {
        assert_eq!(wire[9], 51, "{what}: protocol");
        assert_eq!(
            usize::from(u16::from_be_bytes([wire[2], wire[3]])),
            wire.len()
        );
        assert!(checksums_ok(&wire[..20]) || checksum::compute(0, &wire[..20]) == 0);
    }
    assert_eq!(
        (usize::from(wire[hl + 1]) + 2) * 4,
        ah_len,
        "{what}: AH length"
    );
    assert_eq!(
        &wire[hl + 4..hl + 8],
        &0x1000u32.to_be_bytes(),
        "{what}: SPI"
    );
    match mode {
        Mode::Tunnel => {
            assert_eq!(wire[hl], if p[0] >> 4 == 6 { 41 } else { 4 }, "{what}");
            assert_eq!(
                &wire[hl + ah_len..],
                p,
                "{what}: the inner packet, in clear"
            );
        }
        Mode::Transport => {
            assert_eq!(wire.len(), p.len() + ah_len, "{what}");
            assert_eq!(
                &wire[hl + ah_len..],
                &p[hl..],
                "{what}: the payload, in clear"
            );
        }
    }
}

#[test]
fn mutable_header_fields_may_change_immutable_ones_may_not() {
    for auth in [
        AuthAlg::HmacSha1_96,
        AuthAlg::HmacSha256_128,
        AuthAlg::AesCmac96,
        AuthAlg::AesGmac128,
    ] {
        // IPv4 tunnel: TOS (DSCP), TTL, DF may change en route
        let o = ah_opts(auth, Mode::Tunnel, false);
        let mut pair = pair(&o);
        let p = inner(&o, false, 0, b"mutable");
        let wire = seal(&mut pair, &p);
        let mut w = wire.clone();
        w[1] = 0xb8; // DSCP EF
        w[8] = 3; // TTL
        w[6] ^= 0x40; // DF
        fix_v4_checksum(&mut w);
        let (v, out) = open(&mut pair, &w);
        assert_eq!(v, Verdict::Forward, "{auth}: mutable fields changed");
        assert_eq!(out, p);
        // immutable: identification, protocol-independent addresses, length-preserving
        for (at, what) in [(4, "identification"), (12, "source"), (19, "destination")] {
            let wire = seal(&mut pair, &p);
            let mut w = wire.clone();
            w[at] ^= 0x01;
            fix_v4_checksum(&mut w);
            let (v, _) = open(&mut pair, &w);
            assert!(v.is_drop(), "{auth}: {what} changed: {v:?}");
        }
        // every byte of AH and of the inner packet
        let wire = seal(&mut pair, &p);
        let before = pair.b.stats().drops.total();
        for i in 20..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x20;
            let (v, _) = open(&mut pair, &w);
            assert!(v.is_drop(), "{auth}: byte {i} flipped: {v:?}");
        }
        assert_eq!(
            pair.b.stats().drops.total() - before,
            (wire.len() - 20) as u64,
            "every tampered packet is a counted drop"
        );
        assert!(pair.b.stats().drops.get(DropReason::IcvFailed) > 0);
        // the untouched packet still passes (nothing above moved the window)
        let (v, _) = open(&mut pair, &wire);
        assert_eq!(v, Verdict::Forward);

        // IPv6 tunnel: traffic class, flow label and hop limit may change
        let o = ah_opts(auth, Mode::Tunnel, true);
        let mut pair = common::pair(&o);
        let p = inner(&o, true, 1, b"six");
        let wire = seal(&mut pair, &p);
        let mut w = wire.clone();
        w[0] = 0x6b;
        w[1] = 0x85;
        w[2] = 0x43;
        w[3] = 0x21;
        w[7] = 1;
        let (v, out) = open(&mut pair, &w);
        assert_eq!(v, Verdict::Forward, "{auth}: v6 mutable fields changed");
        assert_eq!(out, p);
        for (at, what) in [(8, "source"), (39, "destination"), (5, "payload length")] {
            let wire = seal(&mut pair, &p);
            let mut w = wire.clone();
            w[at] ^= 0x01;
            let (v, _) = open(&mut pair, &w);
            assert!(v.is_drop(), "{auth}: v6 {what} changed: {v:?}");
        }
    }
}

/// An IPv4 packet from 10.0.0.1 to 10.0.0.2 with options (padded to 4 bytes by EOL).
fn ipv4_with_options(opts: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    let hl = 20 + o.len();
    let total = hl + l4.len();
    let mut p = vec![
        0x40 | (hl / 4) as u8,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        7,
        0x40,
        0,
        64,
        17,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ];
    p.extend_from_slice(&o);
    p.extend_from_slice(l4);
    fix_v4_checksum(&mut p);
    p
}

#[test]
fn ipv4_options_mutable_zeroed_immutable_covered() {
    let o = ah_opts(AuthAlg::HmacSha256_128, Mode::Transport, false);
    let mut pair = pair(&o);
    // Record Route (7, mutable: zeroed for the ICV), Router Alert (148, immutable)
    let opts = [7, 7, 4, 0, 0, 0, 0, 148, 4, 0, 0];
    let l4 = udp(1, 2, b"opts");
    let p = ipv4_with_options(&opts, &l4);
    let wire = seal(&mut pair, &p);
    assert_eq!(wire[0] & 0x0f, 8, "the options stay in front of AH");
    assert_eq!(wire[32], 17, "AH behind them names UDP");
    assert_eq!(wire[9], 51);
    // a router records its address and moves the pointer
    let mut w = wire.clone();
    w[22] = 8;
    w[23..27].copy_from_slice(&[192, 0, 2, 1]);
    fix_v4_checksum(&mut w);
    let (v, out) = open(&mut pair, &w);
    assert_eq!(v, Verdict::Forward, "record route filled in");
    assert_eq!(&out[28..], &p[28..]);
    // the router alert value is covered
    let wire = seal(&mut pair, &p);
    let mut w = wire.clone();
    w[27 + 2] = 1;
    fix_v4_checksum(&mut w);
    let (v, _) = open(&mut pair, &w);
    assert_eq!(v, Verdict::Drop(DropReason::IcvFailed));
    // an option running past the header: dropped, counted, no panic
    let wire = seal(&mut pair, &p);
    let mut w = wire.clone();
    w[21] = 40;
    fix_v4_checksum(&mut w);
    let (v, _) = open(&mut pair, &w);
    assert!(v.is_drop(), "{v:?}");
}

/// IPv6 from fd00::1 to fd00::2 with a hop-by-hop header (`hbh` options) and UDP.
fn ipv6_with_hbh(hbh_opts: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut h = vec![17, 0];
    h.extend_from_slice(hbh_opts);
    while !h.len().is_multiple_of(8) {
        h.push(0); // Pad1
    }
    h[1] = (h.len() / 8 - 1) as u8;
    let mut p = ipv6("fd00::1", "fd00::2", 17, 0, l4);
    p[6] = 0;
    let plen = h.len() + l4.len();
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    let tail = p.split_off(40);
    p.extend_from_slice(&h);
    p.extend_from_slice(&tail);
    p
}

#[test]
fn ipv6_extension_headers_before_ah() {
    let o = ah_opts(AuthAlg::HmacSha1_96, Mode::Transport, true);
    let mut pair = pair(&o);
    // option 0x3e (bit 0x20 set: may change en route), option 0x1e (may not)
    let opts = [0x3e, 2, 0xaa, 0xbb, 0x1e, 2, 0xcc, 0xdd];
    let l4 = udp(1, 2, b"hbh");
    // the UDP checksum needs the final addresses: ipv6() computed it already
    let p = ipv6_with_hbh(&opts, &l4);
    let wire = seal(&mut pair, &p);
    assert_eq!(wire[6], 0, "hop-by-hop stays first");
    assert_eq!(wire[40], 51, "AH follows hop-by-hop");
    let mut w = wire.clone();
    w[44] ^= 0xff; // data of the mutable option
    let (v, out) = open(&mut pair, &w);
    assert_eq!(v, Verdict::Forward, "the mutable option's data changed");
    assert_eq!(&out[56..], &p[56..]);
    let wire = seal(&mut pair, &p);
    let mut w = wire.clone();
    w[48] ^= 0xff; // data of the immutable option
    let (v, _) = open(&mut pair, &w);
    assert_eq!(v, Verdict::Drop(DropReason::IcvFailed));
}

#[test]
fn routing_header_is_hashed_as_the_destination_sees_it() {
    // a type 0 routing header with one address left, sent by A
    let o = ah_opts(AuthAlg::HmacSha256_128, Mode::Transport, true);
    let mut pair = pair(&o);
    let l4 = udp(1, 2, b"rh");
    let mut p = ipv6("fd00::1", "fd00::9", 17, 0, &l4);
    let mut rh = vec![17, 2, 0, 1, 0, 0, 0, 0];
    rh.extend_from_slice(&ip6("fd00::2"));
    let tail = p.split_off(40);
    p[6] = 43;
    p[4..6].copy_from_slice(&((rh.len() + tail.len()) as u16).to_be_bytes());
    p.extend_from_slice(&rh);
    p.extend_from_slice(&tail);
    let wire = seal(&mut pair, &p);
    assert_eq!(wire[40], 51, "AH after the routing header");
    // the router at fd00::9 swaps in the final destination and counts the segment
    let mut w = wire.clone();
    w[24..40].copy_from_slice(&ip6("fd00::2"));
    w[48..64].copy_from_slice(&ip6("fd00::9"));
    w[43] = 0;
    let (v, _) = open(&mut pair, &w);
    assert_eq!(v, Verdict::Forward, "arrived as predicted");
    // arriving with segments left: B is not the destination yet
    let wire = seal(&mut pair, &p);
    let (v, _) = open(&mut pair, &wire);
    assert!(v.is_drop(), "{v:?}");
}

/// AES-GMAC (RFC 4543 §4): the Authentication Data is IV ‖ tag, each packet's IV differs,
/// the IV is covered by the tag (changed: a drop), and with ESN the high bits enter the AAD
/// (borrowing the 4 bytes after the packet, which a frame without them cannot lend: a
/// counted drop, the SA unharmed).
#[test]
fn gmac_iv_is_fresh_covered_and_esn_is_in_the_aad() {
    for v6 in [false, true] {
        let mut o = ah_opts(AuthAlg::AesGmac128, Mode::Tunnel, v6);
        o.esn = true;
        let mut pair = pair(&o);
        let start = (1u64 << 32) - 2;
        pair.a.sa_mut(pair.out).unwrap().set_seq(start);
        pair.b.sa_mut(pair.inb).unwrap().set_replay_top(start);
        let p = inner(&o, false, 0, b"gmac");
        let hl = if v6 { 40 } else { 20 };
        let mut ivs = std::collections::HashSet::new();
        for n in 0..4 {
            let w = seal(&mut pair, &p);
            assert_eq!(usize::from(w[hl + 1]), if v6 { 8 } else { 7 }, "AH length");
            assert!(ivs.insert(w[hl + 12..hl + 20].to_vec()), "IV repeated");
            if v6 {
                assert_eq!(&w[hl + 36..hl + 40], &[0; 4], "IPv6 padding after the tag");
            }
            let mut bad = w.clone();
            bad[hl + 12] ^= 1; // the IV
            assert_eq!(
                open(&mut pair, &bad).0,
                Verdict::Drop(DropReason::IcvFailed)
            );
            // no room after the packet for the ESN high bits: dropped, the SA unharmed
            let mut tight = tight_frame(&w);
            let v = pair.b.inbound(Timestamp::ZERO, &mut tight);
            assert_eq!(v, Verdict::Drop(DropReason::NoBufferSpace), "#{n}");
            assert_eq!(open(&mut pair, &w).0, Verdict::Forward, "ESN packet {n}");
        }
        // the same packet under another high half does not verify
        let mut other = common::pair(&o);
        let w = seal(&mut other, &p);
        other.b.sa_mut(other.inb).unwrap().set_replay_top(3 << 32);
        assert!(open(&mut other, &w).0.is_drop());
    }
}

/// A frame that ends where the packet does (no tailroom).
fn tight_frame(data: &[u8]) -> xsec_dataplane::PacketBuf<Vec<u8>> {
    xsec_dataplane::PacketBuf::from_slice(vec![0u8; 256 + data.len()], 256, data).unwrap()
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn replay_esn_and_lifetimes() {
    let mut o = ah_opts(AuthAlg::HmacSha1_96, Mode::Tunnel, false);
    let mut pair = pair(&o);
    let p = inner(&o, false, 0, b"replay");
    let w1 = seal(&mut pair, &p);
    let w2 = seal(&mut pair, &p);
    assert_eq!(open(&mut pair, &w2).0, Verdict::Forward);
    assert_eq!(
        open(&mut pair, &w1).0,
        Verdict::Forward,
        "reordered within the window"
    );
    assert_eq!(
        open(&mut pair, &w1).0,
        Verdict::Drop(DropReason::ReplayDuplicate)
    );

    // ESN: the high half is covered by the ICV though never sent
    o.esn = true;
    let mut pair = common::pair(&o);
    let start = (1u64 << 32) - 2;
    pair.a.sa_mut(pair.out).unwrap().set_seq(start);
    pair.b.sa_mut(pair.inb).unwrap().set_replay_top(start);
    for n in 0..4u64 {
        let w = seal(&mut pair, &p);
        let lo = u32::from_be_bytes([w[28], w[29], w[30], w[31]]);
        assert_eq!(u64::from(lo), (start + 1 + n) & 0xffff_ffff);
        assert_eq!(open(&mut pair, &w).0, Verdict::Forward, "ESN packet {n}");
    }
    // the same low bits under another high half do not verify
    let mut other = common::pair(&o);
    let w = seal(&mut other, &p);
    other.b.sa_mut(other.inb).unwrap().set_replay_top(3 << 32);
    assert!(open(&mut other, &w).0.is_drop());

    // a hard packet limit stops the SA
    let (mut out_cfg, in_cfg) =
        sa_pair(&ah_opts(AuthAlg::HmacSha1_96, Mode::Tunnel, false), 0x3000);
    out_cfg.lifetime.hard.packets = Some(2);
    let mut a = pair_engine_with(&out_cfg);
    let mut b = Engine::new(std::sync::Arc::new(
        xsec_dataplane::spd::SpdConfig::default().compile().unwrap(),
    ));
    b.add_sa(&in_cfg, Timestamp::ZERO).unwrap();
    for n in 0..3 {
        let mut f = frame(&p);
        let v = a.outbound(Timestamp::ZERO, &mut f);
        if n < 2 {
            assert_eq!(v, Verdict::Forward);
            let mut g = frame(f.data());
            assert_eq!(b.inbound(Timestamp::ZERO, &mut g), Verdict::Forward);
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::LifetimeExpired));
        }
    }
}

/// An engine protecting everything with `out` (reqid 1).
fn pair_engine_with(out: &SaConfig) -> Engine {
    let spd = xsec_dataplane::spd::SpdConfig {
        outbound: vec![xsec_dataplane::spd::Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: xsec_dataplane::spd::Action::Protect(xsec_dataplane::spd::SaBundle::single(1)),
        }],
        ..Default::default()
    }
    .compile()
    .unwrap();
    let mut e = Engine::new(std::sync::Arc::new(spd));
    e.add_sa(out, Timestamp::ZERO).unwrap();
    e
}

#[test]
fn esp_and_ah_are_not_interchangeable() {
    // an AH SA and an ESP SA, same SPI on the two gateways: each packet needs its own kind
    let ah = ah_opts(AuthAlg::HmacSha1_96, Mode::Tunnel, false);
    let esp = PairOpts::new(EncAlg::AesCbc128, AuthAlg::HmacSha1_96);
    let mut ah_pair = pair(&ah);
    let mut esp_pair = pair(&esp);
    let p = inner(&ah, false, 0, b"kinds");
    let ah_wire = seal(&mut ah_pair, &p);
    let esp_wire = seal(&mut esp_pair, &p);
    assert_eq!(
        open(&mut esp_pair, &ah_wire).0,
        Verdict::Drop(DropReason::ProtocolMismatch)
    );
    assert_eq!(
        open(&mut ah_pair, &esp_wire).0,
        Verdict::Drop(DropReason::ProtocolMismatch)
    );
}

#[test]
fn ah_configuration_is_checked() {
    let (mut c, _) = sa_pair(&ah_opts(AuthAlg::HmacSha1_96, Mode::Tunnel, false), 0x4000);
    c.validate().unwrap();
    let mut bad = c.clone();
    bad.auth = AuthAlg::None;
    bad.auth_key = Default::default();
    assert_eq!(bad.validate().unwrap_err().field(), "auth");
    let mut bad = c.clone();
    bad.enc = EncAlg::AesCbc128;
    bad.enc_key = xsec_dataplane::sa::SecretKey::from_slice(&[1; 16]);
    let e = bad.validate().unwrap_err();
    assert_eq!(e.field(), "enc");
    assert!(e.to_string().contains("AH does not encrypt"), "{e}");
    let mut bad = c.clone();
    bad.encap = xsec_dataplane::sa::Encap::NAT_T;
    assert_eq!(bad.validate().unwrap_err().field(), "encap");
    c.auth = AuthAlg::HmacMd5_96;
    c.auth_key = xsec_dataplane::sa::SecretKey::from_slice(&[1; 16]);
    assert!(c.validate().unwrap_err().to_string().contains("MUST NOT"));
}

#[test]
fn garbage_after_an_ah_protocol_field_is_a_counted_drop() {
    let o = ah_opts(AuthAlg::HmacSha512_256, Mode::Tunnel, false);
    let mut pair = pair(&o);
    let p = inner(&o, false, 0, b"garbage");
    let wire = seal(&mut pair, &p);
    // every truncation, and every AH length field value
    for n in 20..wire.len() {
        let mut w = wire[..n].to_vec();
        w[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        fix_v4_checksum(&mut w);
        assert!(open(&mut pair, &w).0.is_drop(), "cut at {n}");
    }
    for l in 0..=255u8 {
        if usize::from(l) == (44 / 4) - 2 {
            continue;
        }
        let mut w = wire.clone();
        w[21] = l;
        assert!(open(&mut pair, &w).0.is_drop(), "length field {l}");
    }
}

/// Bursts hash their AH packets together (the multi-buffer HMAC kernels): the bytes and
/// verdicts are those of the same packets one at a time, tampered and replayed ones included.
#[test]
fn bursts_equal_one_at_a_time() {
    use std::sync::Arc;
    use xsec_dataplane::sa::Sa;
    use xsec_dataplane::spd::SpdConfig;
    for auth in INTEGS {
        for (mode, v6) in [
            (Mode::Tunnel, false),
            (Mode::Tunnel, true),
            (Mode::Transport, false),
            (Mode::Transport, true),
        ] {
            let mut o = ah_opts(auth, mode, v6);
            o.esn = v6;
            let (out_cfg, in_cfg) = sa_pair(&o, 0x7100);
            let engine = |cfg: &SaConfig, protect: bool| {
                let mut e = if protect {
                    pair_engine_with(&SaConfig {
                        spi: 0x9999,
                        direction: Direction::Inbound,
                        ..cfg.clone()
                    })
                } else {
                    Engine::new(Arc::new(SpdConfig::default().compile().unwrap()))
                };
                e.install_sa(Sa::with_random(cfg, Timestamp::ZERO, [7; 16]).unwrap())
                    .unwrap();
                e
            };
            let what = format!("{auth} {mode:?} v6 {v6}");
            let (mut a1, mut a2) = (engine(&out_cfg, true), engine(&out_cfg, true));
            let (mut b1, mut b2) = (engine(&in_cfg, false), engine(&in_cfg, false));
            let inners: Vec<Vec<u8>> = (0..40)
                .map(|i| inner(&o, v6, i as u8, &payload_of(i * 37 % 1400)))
                .collect();
            let mut burst: Vec<_> = inners.iter().map(|p| frame(p)).collect();
            let mut verdicts = vec![Verdict::Unset; burst.len()];
            assert_eq!(
                a1.outbound_burst(Timestamp::ZERO, &mut burst, &mut verdicts),
                40,
                "{what}"
            );
            let mut wires = vec![];
            for (k, p) in inners.iter().enumerate() {
                let mut f = frame(p);
                assert_eq!(
                    a2.outbound(Timestamp::ZERO, &mut f),
                    verdicts[k],
                    "{what} #{k}"
                );
                assert_eq!(
                    burst[k].data(),
                    f.data(),
                    "{what} #{k}: burst and single differ"
                );
                wires.push(f.data().to_vec());
            }
            // inbound: some tampered, one replayed
            for k in [3usize, 17, 30] {
                let n = wires[k].len();
                wires[k][n - 5] ^= 0x40;
            }
            wires.push(wires[8].clone());
            let mut burst: Vec<_> = wires.iter().map(|w| frame(w)).collect();
            let mut verdicts = vec![Verdict::Unset; burst.len()];
            b1.inbound_burst(Timestamp::ZERO, &mut burst, &mut verdicts);
            for (k, w) in wires.iter().enumerate() {
                let mut f = frame(w);
                let v = b2.inbound(Timestamp::ZERO, &mut f);
                assert_eq!(verdicts[k], v, "{what} #{k}");
                if v == Verdict::Forward {
                    assert_eq!(burst[k].data(), f.data(), "{what} #{k}");
                    assert_eq!(f.data(), &inners[k][..], "{what} #{k}");
                }
            }
            assert_eq!(b1.stats().drops, b2.stats().drops, "{what}");
            assert_eq!(b1.stats().drops.get(DropReason::IcvFailed), 3, "{what}");
            assert_eq!(
                b1.stats().drops.get(DropReason::ReplayDuplicate),
                1,
                "{what}"
            );
        }
    }
}
