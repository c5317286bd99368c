//! IPComp (RFC 3173) through the engine, alone and in bundles with ESP and AH: DEFLATE and
//! LZS, tunnel and transport, the "do not expand" rule (small or incompressible payloads
//! leave uncompressed: as they are in transport mode, as IP in IP in tunnel mode), bombs and
//! garbage as counted drops, and the inbound bundle check (RFC 4301 §4.5): the SAs a packet
//! came through must be the bundle of the policy its contents match, IPComp optional.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{CompAlg, Mode, Protocol, SaConfig};
use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, SpdConfig};
use xsec_dataplane::{DropReason, Engine, Timestamp, Verdict};

const T0: Timestamp = Timestamp::ZERO;

/// An IPComp SA pair (A → B is `out`, B's copy is `inb`) with reqid `reqid`.
fn ipcomp_pair(alg: CompAlg, mode: Mode, reqid: u32) -> (SaConfig, SaConfig) {
    let o = PairOpts {
        mode,
        protocol: Protocol::IpComp(alg),
        ..PairOpts::new(EncAlg::Null, AuthAlg::None)
    };
    let (mut out, mut inb) = sa_pair(&o, 0x4000 + reqid);
    for c in [&mut out, &mut inb] {
        c.reqid = reqid;
    }
    (out, inb)
}

fn sa_of(o: &PairOpts, spi: u32, reqid: u32) -> (SaConfig, SaConfig) {
    let (mut out, mut inb) = sa_pair(o, spi);
    out.reqid = reqid;
    inb.reqid = reqid;
    (out, inb)
}

/// Gateways A and B with `sas` (outbound on A, inbound on B) and one policy protecting
/// everything with `bundle` both ways.
fn gateways(sas: &[(SaConfig, SaConfig)], bundle: &[u32]) -> (Engine, Engine) {
    let pol = vec![Policy {
        name: "all".into(),
        selector: Selector::ANY,
        action: Action::Protect(SaBundle::new(bundle).unwrap()),
    }];
    let spd = SpdConfig {
        outbound: pol.clone(),
        inbound: pol,
        ..Default::default()
    };
    let mut a = Engine::new(Arc::new(spd.clone().compile().unwrap()));
    let mut b = Engine::new(Arc::new(spd.compile().unwrap()));
    for (out, inb) in sas {
        a.add_sa(out, T0).unwrap();
        b.add_sa(inb, T0).unwrap();
    }
    (a, b)
}

fn text(len: usize) -> Vec<u8> {
    b"GET /index.html HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n"
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

fn random(len: usize, mut x: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn send(a: &mut Engine, b: &mut Engine, p: &[u8]) -> (Vec<u8>, Verdict, Vec<u8>) {
    let mut f = frame(p);
    assert_eq!(a.outbound(T0, &mut f), Verdict::Forward);
    let wire = f.data().to_vec();
    let v = b.inbound(T0, &mut f);
    (wire, v, f.data().to_vec())
}

#[test]
fn ipcomp_alone_both_algorithms_both_modes() {
    for alg in [CompAlg::Deflate, CompAlg::Lzs] {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for v6 in [false, true] {
                let what = format!("{alg:?} {mode:?} v6 {v6}");
                let (mut out, mut inb) = ipcomp_pair(alg, mode, 1);
                if v6 && mode == Mode::Tunnel {
                    out.local = Some(ip("fd00::1"));
                    out.remote = Some(ip("fd00::2"));
                    inb.local = Some(ip("fd00::2"));
                    inb.remote = Some(ip("fd00::1"));
                }
                let (mut a, mut b) = gateways(&[(out, inb)], &[1]);
                let o = PairOpts {
                    mode,
                    outer_v6: v6,
                    ..PairOpts::new(EncAlg::Null, AuthAlg::None)
                };
                // compressible: IPComp on the wire, smaller
                let p = inner(&o, v6, 0, &text(1200));
                let (wire, v, out) = send(&mut a, &mut b, &p);
                let hl = if v6 { 40 } else { 20 };
                let proto = if v6 { wire[6] } else { wire[9] };
                assert_eq!(proto, 108, "{what}: protocol");
                assert!(
                    wire.len() < p.len() / 2,
                    "{what}: {} of {}",
                    wire.len(),
                    p.len()
                );
                assert_eq!(
                    u16::from_be_bytes([wire[hl + 2], wire[hl + 3]]),
                    0x4001,
                    "{what}: CPI"
                );
                assert_eq!(v, Verdict::Forward, "{what}");
                assert_eq!(out, p, "{what}");
                assert!(checksums_ok(&out), "{what}");
                // small or incompressible: not expanded
                for (k, payload) in [text(20), random(1000, 9)].into_iter().enumerate() {
                    let p = inner(&o, v6, 0, &payload);
                    let (wire, v, out) = send(&mut a, &mut b, &p);
                    match mode {
                        Mode::Transport => {
                            assert_eq!(wire, p, "{what} #{k}: sent as it was");
                            assert_eq!(v, Verdict::Bypass, "{what} #{k}");
                        }
                        Mode::Tunnel => {
                            let proto = if v6 { wire[6] } else { wire[9] };
                            assert_eq!(proto, if v6 { 41 } else { 4 }, "{what} #{k}: IP in IP");
                            assert_eq!(&wire[hl..], &p[..], "{what} #{k}");
                            assert_eq!(v, Verdict::Forward, "{what} #{k}");
                        }
                    }
                    assert_eq!(out, p, "{what} #{k}");
                }
                assert_eq!(a.stats().ipcomp_compressed, 1, "{what}");
                assert_eq!(a.stats().ipcomp_uncompressed, 2, "{what}");
            }
        }
    }
}

/// The AR410-style bundle: IPComp (tunnel) → ESP (transport) → AH (transport), outbound in
/// that order: on the wire IP | AH | ESP | [IPComp | compressed inner packet].
#[test]
fn ipcomp_esp_ah_bundle() {
    for alg in [CompAlg::Lzs, CompAlg::Deflate] {
        let comp = ipcomp_pair(alg, Mode::Tunnel, 1);
        let esp = sa_of(
            &PairOpts {
                mode: Mode::Transport,
                ..PairOpts::new(EncAlg::AesCbc128, AuthAlg::HmacSha1_96)
            },
            0x5001,
            2,
        );
        let ah = sa_of(
            &PairOpts {
                mode: Mode::Transport,
                protocol: Protocol::Ah,
                ..PairOpts::new(EncAlg::Null, AuthAlg::HmacSha1_96)
            },
            0x6001,
            3,
        );
        let (mut a, mut b) = gateways(&[comp.clone(), esp.clone(), ah.clone()], &[1, 2, 3]);
        let o = PairOpts::new(EncAlg::Null, AuthAlg::None);
        for (k, payload) in [text(1300), random(900, 3), text(30)]
            .into_iter()
            .enumerate()
        {
            let p = inner(&o, false, k as u8, &payload);
            let (wire, v, out) = send(&mut a, &mut b, &p);
            assert_eq!(
                &wire[12..20],
                &[10, 0, 0, 1, 10, 0, 0, 2],
                "#{k}: gateway to gateway"
            );
            assert_eq!(wire[9], 51, "#{k}: AH outermost");
            assert_eq!(wire[20], 50, "#{k}: then ESP");
            assert_eq!(&wire[24..28], &0x6001u32.to_be_bytes(), "#{k}: AH SPI");
            assert_eq!(&wire[44..48], &0x5001u32.to_be_bytes(), "#{k}: ESP SPI");
            assert_eq!(v, Verdict::Forward, "#{k}");
            assert_eq!(out, p, "#{k}");
        }
        assert_eq!(a.stats().ipcomp_compressed, 1);
        assert_eq!(a.stats().ipcomp_uncompressed, 2);
        assert_eq!(b.stats().drops.total(), 0);

        // what came through fewer layers than the policy says is dropped
        let p = inner(&o, false, 0, &text(1300));
        for (name, sas) in [
            ("IPComp alone", vec![comp.clone()]),
            ("ESP alone", vec![esp.clone()]),
            ("IPComp and ESP without AH", vec![comp.clone(), esp.clone()]),
        ] {
            let reqids: Vec<u32> = sas.iter().map(|s| s.0.reqid).collect();
            let (mut a2, _) = gateways(&sas, &reqids);
            let mut f = frame(&p);
            if sas.len() == 1 && sas[0].0.protocol == Protocol::Esp {
                // an ESP transport SA needs the outer header IPComp would have written
                let mut q = p.clone();
                q[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
                let c = xsec_dataplane::wire::checksum::compute(0, &{
                    let mut h = q[..20].to_vec();
                    h[10] = 0;
                    h[11] = 0;
                    h
                });
                q[10..12].copy_from_slice(&c.to_be_bytes());
                f = frame(&q);
            }
            assert_eq!(a2.outbound(T0, &mut f), Verdict::Forward, "{name}");
            let before = b.stats().drops.get(DropReason::BundleMismatch);
            let v = b.inbound(T0, &mut f);
            assert!(v.is_drop(), "{name}: {v:?}");
            assert!(
                b.stats().drops.get(DropReason::BundleMismatch) > before
                    || matches!(v, Verdict::Drop(DropReason::ReplayDuplicate)),
                "{name}: {v:?}"
            );
        }
    }
}

#[test]
fn bombs_and_garbage_are_counted_drops() {
    for alg in [CompAlg::Deflate, CompAlg::Lzs] {
        let (out, inb) = ipcomp_pair(alg, Mode::Transport, 1);
        let (mut a, mut b) = gateways(&[(out, inb)], &[1]);
        let o = PairOpts::new(EncAlg::Null, AuthAlg::None);
        // 60,000 zero bytes compress to a few hundred bytes: more than a frame holds
        let p = ipv4(
            "10.0.0.1",
            "10.0.0.2",
            17,
            0,
            false,
            &udp(1, 2, &vec![0u8; 60_000]),
        );
        let mut f = xsec_dataplane::PacketBuf::from_slice(vec![0u8; 70_000], 128, &p).unwrap();
        assert_eq!(a.outbound(T0, &mut f), Verdict::Forward);
        let wire = f.data().to_vec();
        // LZS spends a nibble per 15 bytes of a run: 30:1 at best
        assert!(wire.len() < 2176, "{alg:?}: {}", wire.len());
        let mut g = frame(&wire);
        assert_eq!(
            b.inbound(T0, &mut g),
            Verdict::Drop(DropReason::DecompressTooBig),
            "{alg:?}"
        );
        // a good packet still passes, then garbage after the header
        let p = inner(&o, false, 0, &text(600));
        let (wire, v, _) = send(&mut a, &mut b, &p);
        assert_eq!(v, Verdict::Forward);
        for cut in [wire.len() - 1, 30, 25] {
            let mut w = wire[..cut].to_vec();
            w[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            fix_checksum(&mut w);
            let mut g = frame(&w);
            assert!(b.inbound(T0, &mut g).is_drop(), "{alg:?} cut {cut}");
        }
        let mut w = wire.clone();
        for x in &mut w[24..] {
            *x = 0xff;
        }
        let mut g = frame(&w);
        assert_eq!(
            b.inbound(T0, &mut g),
            Verdict::Drop(DropReason::DecompressFailed),
            "{alg:?}"
        );
        assert!(b.stats().drops.get(DropReason::DecompressFailed) >= 1);
    }
}

fn fix_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let c = xsec_dataplane::wire::checksum::compute(0, &p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn ipcomp_configuration_is_checked() {
    let (c, _) = ipcomp_pair(CompAlg::Lzs, Mode::Transport, 1);
    c.validate().unwrap();
    for (cpi, ok) in [
        (3, true),
        (2, false),
        (0, false),
        (100, false),
        (256, true),
        (70_000, false),
    ] {
        let mut x = c.clone();
        x.spi = cpi;
        assert_eq!(x.validate().is_ok(), ok, "CPI {cpi}");
    }
    let mut x = c.clone();
    x.auth = AuthAlg::HmacSha1_96;
    x.auth_key = xsec_dataplane::sa::SecretKey::from_slice(&[1; 20]);
    assert_eq!(x.validate().unwrap_err().field(), "auth");
    let mut x = c.clone();
    x.encap = xsec_dataplane::sa::Encap::NAT_T;
    assert_eq!(x.validate().unwrap_err().field(), "encap");
}

mod lzs_roundtrip {
    use proptest::prelude::*;
    use xsec_dataplane::ipcomp::lzs;

    proptest! {
        /// Whatever the encoder writes decodes to its input, from small alphabets (many
        /// matches, long runs) to random bytes (mostly literals), up to a jumbo packet.
        #[test]
        fn lzs_roundtrip(
            alphabet in 1u8..=255,
            seed in any::<u64>(),
            len in 0usize..9000,
            repeat in any::<Option<(prop::sample::Index, prop::sample::Index)>>(),
        ) {
            let mut x = seed | 1;
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % u64::from(alphabet)) as u8
                })
                .collect();
            if let (Some((a, b)), true) = (repeat, len > 0) {
                let (a, b) = (a.index(len), b.index(len));
                v.extend_from_within(a.min(b)..a.max(b));
            }
            let mut z = vec![0u8; v.len() * 9 / 8 + 16];
            let m = lzs::Encoder::new().compress(&v, &mut z).expect("9/8 always fits");
            let mut back = vec![0u8; v.len()];
            prop_assert_eq!(lzs::decompress(&z[..m], &mut back), Ok(v.len()));
            prop_assert_eq!(back, v);
        }
    }
}

/// A host's own IP-in-IP (or anything that looks like another IPsec layer) through an SA
/// that no bundle names is plain traffic for that SA: its selectors decide, no bundle check
/// (found by the `inbound_authenticated` and `roundtrip` fuzz targets).
#[test]
fn ip_in_ip_through_a_lone_sa_is_the_hosts_own_traffic() {
    let o = PairOpts::new(EncAlg::AesCbc128, AuthAlg::HmacSha256_128);
    let esp = sa_of(&o, 0x7001, 1);
    let (mut a, mut b) = gateways(&[esp], &[1]);
    let carried = ipv4("10.9.0.1", "10.9.0.2", 17, 0, false, &udp(1, 2, b"inner"));
    for proto in [4u8, 41, 50, 51, 108] {
        let body = if proto == 4 {
            carried.clone()
        } else {
            vec![0x55; 64]
        };
        let p = ipv4("10.1.0.10", "10.2.0.10", proto, 0, false, &body);
        let (_, v, out) = send(&mut a, &mut b, &p);
        assert_eq!(v, Verdict::Forward, "protocol {proto}");
        assert_eq!(out, p, "protocol {proto}");
    }
}
