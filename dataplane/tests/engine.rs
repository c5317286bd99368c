//! The engine end to end in one process: gateway A encapsulates, gateway B decapsulates.
//! Covers every accepted algorithm, both modes, IPv4/IPv6 inside and outside, raw ESP and
//! UDP encapsulation, and the drop reasons of RFC 4303 §3.4 and RFC 4301 §5.2.

mod common;

use common::*;
use proptest::prelude::*;
use std::sync::Arc;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::events::EventKind;
use xsec_dataplane::sa::{DfMode, DscpMode, Encap, LimitKind, Limits, Mode};
use xsec_dataplane::spd::{
    Action, Direction, NonPolicy, Policy, PortSel, SaBundle, Selector, SpdConfig,
};
use xsec_dataplane::wire::IpProtocol;
use xsec_dataplane::{DropReason, Engine, Timestamp, Verdict};

const T0: Timestamp = Timestamp::ZERO;

fn encaps() -> [Encap; 3] {
    [Encap::None, Encap::NAT_T, Encap::UDP_2746]
}

/// Confidentiality-only ESP (no integrity, RFC 4303 §3.2), accepted with `allow_legacy`
/// (which the pairs set): it round-trips, though it cannot notice tampering.
const CONFIDENTIALITY_ONLY: &[(EncAlg, AuthAlg)] = &[
    (EncAlg::AesCbc128, AuthAlg::None),
    (EncAlg::AesCbc256, AuthAlg::None),
    (EncAlg::TripleDesCbc, AuthAlg::None),
];

#[test]
fn roundtrip_every_algorithm_mode_family_and_encapsulation() {
    let mut cases = 0;
    for &(enc, auth) in ALGS.iter().chain(CONFIDENTIALITY_ONLY) {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for outer_v6 in [false, true] {
                for encap in encaps() {
                    let o = PairOpts {
                        mode,
                        outer_v6,
                        encap,
                        ..PairOpts::new(enc, auth)
                    };
                    let mut p = pair(&o);
                    for inner_v6 in [false, true] {
                        if mode == Mode::Transport && inner_v6 != outer_v6 {
                            continue;
                        }
                        for (i, len) in [0usize, 1, 13, 100, 1400].into_iter().enumerate() {
                            let payload: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
                            let orig = inner(&o, inner_v6, i as u8, &payload);
                            let mut pkt = frame(&orig);
                            let what = format!(
                                "{enc}/{auth} {} outer_v6={outer_v6} {encap:?} inner_v6={inner_v6} len={len}",
                                mode.name()
                            );
                            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward, "{what}");
                            let wire = pkt.data().to_vec();
                            assert_eq!(wire[0] >> 4, if outer_v6 { 6 } else { 4 }, "{what}");
                            assert!(checksums_ok(&wire), "{what}: outer checksums");
                            if enc.encrypts() && len >= 13 {
                                assert!(
                                    !wire.windows(13).any(|w| w == &payload[..13]),
                                    "{what}: plaintext visible"
                                );
                            }
                            assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward, "{what}");
                            assert_eq!(pkt.data(), &orig[..], "{what}");
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "{cases}");
}

#[test]
fn mixed_inner_and_outer_families() {
    for outer_v6 in [false, true] {
        let o = PairOpts {
            outer_v6,
            ..PairOpts::new(EncAlg::AesGcm256, AuthAlg::None)
        };
        let mut p = pair(&o);
        for inner_v6 in [false, true] {
            let orig = inner(&o, inner_v6, 0, b"mixed families");
            let mut pkt = frame(&orig);
            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
            // next header in the trailer names the inner family; the outer is the SA's
            assert_eq!(pkt.data()[0] >> 4, if outer_v6 { 6 } else { 4 });
            assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
            assert_eq!(pkt.data(), &orig[..]);
        }
    }
}

#[test]
fn padding_is_minimal_and_aligned() {
    for &(enc, auth) in ALGS {
        let o = PairOpts::new(enc, auth);
        let mut p = pair(&o);
        for len in 0..40 {
            let orig = inner(&o, false, 0, &vec![0xab; len]);
            let mut pkt = frame(&orig);
            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
            let esp_len = pkt.len() - 20;
            let iv = enc.iv_len();
            let icv = if enc.is_combined() {
                16
            } else {
                auth.icv_len()
            };
            let body = esp_len - 8 - iv - icv;
            let align = enc.block_len().max(4);
            assert_eq!(body % align, 0, "{enc} len {len}");
            assert!(
                body - orig.len() - 2 < align,
                "{enc} len {len}: padding not minimal"
            );
        }
    }
}

fn flip_expect(pos: usize, esp_off: usize) -> &'static [DropReason] {
    if pos < esp_off {
        &[DropReason::Malformed]
    } else if pos < esp_off + 4 {
        &[DropReason::NoSa]
    } else if pos < esp_off + 8 {
        &[
            DropReason::IcvFailed,
            DropReason::ReplayOld,
            DropReason::ReplayDuplicate,
        ]
    } else {
        &[DropReason::IcvFailed]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Random algorithm, mode, families, encapsulation, ESN and sizes: what A sends, B
    /// restores exactly.
    #[test]
    fn roundtrip_property(
        alg in 0..ALGS.len(), transport in any::<bool>(), outer_v6 in any::<bool>(), inner_v6 in any::<bool>(),
        encap in 0usize..3, esn in any::<bool>(), kind in 0u8..3,
        payload in proptest::collection::vec(any::<u8>(), 0..1500), start in prop_oneof![Just(0u64), (u32::MAX as u64 - 3)..(u32::MAX as u64)],
    ) {
        let (enc, auth) = ALGS[alg];
        let mode = if transport { Mode::Transport } else { Mode::Tunnel };
        let o = PairOpts { mode, outer_v6, encap: encaps()[encap], esn, ..PairOpts::new(enc, auth) };
        let mut p = pair(&o);
        if start > 0 {
            // continue a long-running SA: both ends just below 2^32
            p.a.sa_mut(p.out).unwrap().set_seq(start);
            p.b.sa_mut(p.inb).unwrap().set_replay_top(start);
        }
        for n in 0..3 {
            let orig = inner(&o, inner_v6, kind, &payload[..payload.len().saturating_sub(n * 100)]);
            let mut pkt = frame(&orig);
            let v = p.a.outbound(T0, &mut pkt);
            if !esn && start + n as u64 >= u64::from(u32::MAX) {
                // without ESN the counter stops at 2^32 - 1 (RFC 4303 §3.3.3)
                prop_assert_eq!(v, Verdict::Drop(DropReason::SeqExhausted));
                continue;
            }
            prop_assert_eq!(v, Verdict::Forward);
            prop_assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
            prop_assert_eq!(pkt.data(), &orig[..]);
        }
    }

    /// Any single bit flipped anywhere in an IPv4 ESP packet is dropped, with the reason
    /// the field implies.
    #[test]
    fn single_bit_flips_are_dropped(alg in 0..ALGS.len(), transport in any::<bool>(), encap in 0usize..3, len in 0usize..300, bit in any::<prop::sample::Index>()) {
        let (enc, auth) = ALGS[alg];
        let mode = if transport { Mode::Transport } else { Mode::Tunnel };
        let o = PairOpts { mode, encap: encaps()[encap], ..PairOpts::new(enc, auth) };
        let mut p = pair(&o);
        let orig = inner(&o, false, 0, &vec![0x42; len]);
        let mut pkt = frame(&orig);
        prop_assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
        let wire = pkt.data().to_vec();
        let esp_off = 20 + if encap > 0 { 8 } else { 0 };
        // flip in the IPv4 header or the ESP packet (UDP header flips may turn the packet
        // into plaintext on another port: covered by the classifier tests)
        let span: Vec<usize> = (0..20).chain(esp_off..wire.len()).collect();
        let b = span[bit.index(span.len() * 8) / 8];
        let mut bad = wire.clone();
        bad[b] ^= 1 << (bit.index(8));
        let mut pkt = frame(&bad);
        let v = p.b.inbound(T0, &mut pkt);
        let want = flip_expect(b, esp_off);
        prop_assert!(matches!(v, Verdict::Drop(r) if want.contains(&r)), "byte {} of {}: {:?}, want one of {:?}", b, wire.len(), v, want);
        // the original still passes: a forged packet did not move the window
        let mut pkt = frame(&wire);
        prop_assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
    }

    /// Cutting bytes off the end: with the IP length left alone the packet is malformed; with
    /// the length fixed up the ESP lengths or the ICV fail.
    #[test]
    fn truncation_is_dropped(alg in 0..ALGS.len(), cut in 1usize..80, fix_len in any::<bool>(), encap in 0usize..3) {
        let (enc, auth) = ALGS[alg];
        let o = PairOpts { encap: encaps()[encap], ..PairOpts::new(enc, auth) };
        let mut p = pair(&o);
        let orig = inner(&o, false, 0, &[7u8; 60]);
        let mut pkt = frame(&orig);
        prop_assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
        let mut bad = pkt.data().to_vec();
        let cut = cut.min(bad.len() - 21);
        bad.truncate(bad.len() - cut);
        if fix_len {
            let n = bad.len() as u16;
            bad[2..4].copy_from_slice(&n.to_be_bytes());
            bad[10] = 0;
            bad[11] = 0;
            let c = xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::sum(&bad[..20]));
            bad[10..12].copy_from_slice(&c.to_be_bytes());
            if encap > 0 {
                let u = (n - 20).to_be_bytes();
                bad[24..26].copy_from_slice(&u);
            }
        }
        let mut pkt = frame(&bad);
        let v = p.b.inbound(T0, &mut pkt);
        let ok: &[DropReason] = if fix_len {
            &[DropReason::BadLength, DropReason::IcvFailed, DropReason::Malformed, DropReason::BadUdpEncap]
        } else {
            &[DropReason::Malformed]
        };
        prop_assert!(matches!(v, Verdict::Drop(r) if ok.contains(&r)), "{:?}", v);
    }

    /// Arbitrary bytes in either direction: a verdict, never a panic.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v6 in any::<bool>(), udp in any::<bool>()) {
        let o = PairOpts { encap: if udp { Encap::NAT_T } else { Encap::None }, ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None) };
        let mut p = pair(&o);
        let mut data = bytes.clone();
        if let Some(b) = data.first_mut() {
            *b = (*b & 0x0f) | if v6 { 0x60 } else { 0x45 };
        }
        let mut pkt = frame(&data);
        let _ = p.b.inbound(T0, &mut pkt);
        let mut pkt = frame(&data);
        let _ = p.a.outbound(T0, &mut pkt);
        // an ESP header for the installed SPI followed by garbage
        let mut esp = ipv4("10.0.0.1", "10.0.0.2", 50, 0, false, &[&[0, 0, 0x10, 0][..], &bytes].concat());
        let mut pkt = frame(&esp);
        prop_assert!(p.b.inbound(T0, &mut pkt).is_drop());
        esp.truncate(24);
        let mut pkt = frame(&esp);
        prop_assert!(p.b.inbound(T0, &mut pkt).is_drop());
    }
}

/// `n` packets (payload byte `i`) encapsulated by the pair's gateway A, as sent.
fn sealed(p: &mut Pair, o: &PairOpts, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut pkt = frame(&inner(o, false, 0, &[i as u8; 20]));
            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
            pkt.data().to_vec()
        })
        .collect()
}

#[test]
fn replay_duplicates_old_and_reordering() {
    let o = PairOpts {
        window: 64,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    let wires = sealed(&mut p, &o, 200);
    let rx = |p: &mut Pair, i: usize| {
        let mut pkt = frame(&wires[i]);
        p.b.inbound(T0, &mut pkt)
    };
    assert_eq!(rx(&mut p, 100), Verdict::Forward);
    assert_eq!(rx(&mut p, 100), Verdict::Drop(DropReason::ReplayDuplicate));
    // reordered within the window: accepted once
    assert_eq!(rx(&mut p, 50), Verdict::Forward);
    assert_eq!(rx(&mut p, 50), Verdict::Drop(DropReason::ReplayDuplicate));
    // seq 101 is packet 100, window 64: seq 37 (packet 36) is the oldest still inside
    assert_eq!(rx(&mut p, 36), Verdict::Drop(DropReason::ReplayOld));
    assert_eq!(rx(&mut p, 37), Verdict::Forward);
    assert_eq!(rx(&mut p, 199), Verdict::Forward);
    let st = p.b.sad().get(p.inb).unwrap().status(T0);
    assert_eq!(st.seq, 200);
    assert_eq!(st.drops.get(DropReason::ReplayDuplicate), 2);
    assert_eq!(st.drops.get(DropReason::ReplayOld), 1);
    assert_eq!(p.b.stats().drops.get(DropReason::ReplayOld), 1);
}

/// An inbound SA that any worker may receive: two engines (two workers) hold copies that
/// share one anti-replay window. A stream split between them is delivered whole; a packet
/// one worker took is a duplicate at the other; the window's edge is the stream's, not each
/// copy's. Each copy counts its own packets.
#[test]
fn copies_on_two_workers_share_one_replay_window() {
    let o = PairOpts {
        window: 64,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    let mut b2 = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let shared = p.b.sad().get(p.inb).unwrap().shared_replay_window();
    let mut copy = xsec_dataplane::sa::Sa::new(&p.in_cfg, T0).unwrap();
    copy.share_replay(shared.clone());
    let inb2 = b2.install_sa(copy).unwrap();
    p.b.sa_mut(p.inb).unwrap().share_replay(shared);
    let wires = sealed(&mut p, &o, 200);
    let rx = |e: &mut Engine, i: usize| {
        let mut pkt = frame(&wires[i]);
        e.inbound(T0, &mut pkt)
    };
    // odd packets to one worker, even to the other, reordered in pairs
    for i in (0..100).step_by(2) {
        assert_eq!(rx(&mut b2, i + 1), Verdict::Forward);
        assert_eq!(rx(&mut p.b, i), Verdict::Forward);
    }
    // every one of them is a duplicate at either worker
    for i in [50, 51, 98, 99] {
        assert_eq!(rx(&mut p.b, i), Verdict::Drop(DropReason::ReplayDuplicate));
        assert_eq!(rx(&mut b2, i), Verdict::Drop(DropReason::ReplayDuplicate));
    }
    // the window moved with the stream: worker 1 took 199, so 100 is old at worker 2
    assert_eq!(rx(&mut p.b, 199), Verdict::Forward);
    assert_eq!(rx(&mut b2, 100), Verdict::Drop(DropReason::ReplayOld));
    assert_eq!(rx(&mut b2, 150), Verdict::Forward);
    let (s1, s2) = (
        p.b.sad().get(p.inb).unwrap().status(T0),
        b2.sad().get(inb2).unwrap().status(T0),
    );
    assert_eq!((s1.packets, s2.packets), (51, 51));
    assert_eq!((s1.seq, s2.seq), (200, 200));
}

#[test]
fn large_window_and_disabled_window() {
    let o = PairOpts {
        window: 4096,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    let wires: Vec<Vec<u8>> = (0..5000)
        .map(|_| {
            let mut pkt = frame(&inner(&o, false, 0, b"w"));
            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
            pkt.data().to_vec()
        })
        .collect();
    let mut rx = |i: usize| {
        let mut pkt = frame(&wires[i]);
        p.b.inbound(T0, &mut pkt)
    };
    assert_eq!(rx(4999), Verdict::Forward);
    assert_eq!(rx(4999 - 4095), Verdict::Forward);
    assert_eq!(rx(4999 - 4096), Verdict::Drop(DropReason::ReplayOld));

    let o = PairOpts {
        window: 0,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    let mut pkt = frame(&inner(&o, false, 0, b"x"));
    p.a.outbound(T0, &mut pkt);
    let w = pkt.data().to_vec();
    for _ in 0..3 {
        let mut pkt = frame(&w);
        assert_eq!(
            p.b.inbound(T0, &mut pkt),
            Verdict::Forward,
            "replay checking disabled"
        );
    }
}

#[test]
fn esn_crosses_the_32_bit_boundary_with_reordering() {
    let o = PairOpts {
        esn: true,
        ..PairOpts::new(EncAlg::AesCbc128, AuthAlg::HmacSha256_128)
    };
    let mut p = pair(&o);
    let start = u64::from(u32::MAX) - 10;
    p.a.sa_mut(p.out).unwrap().set_seq(start);
    p.b.sa_mut(p.inb).unwrap().set_replay_top(start);
    let mut wires = vec![];
    for i in 0..30u8 {
        let orig = inner(&o, false, 0, &[i; 30]);
        let mut pkt = frame(&orig);
        assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
        // only the low 32 bits are on the wire
        let seq_lo = u32::from_be_bytes(pkt.data()[24..28].try_into().unwrap());
        assert_eq!(u64::from(seq_lo), (start + 1 + u64::from(i)) & 0xffff_ffff);
        wires.push((orig, pkt.data().to_vec()));
    }
    // deliver after the wrap first, then the late ones from before it
    for i in (15..30).chain(0..15) {
        let mut pkt = frame(&wires[i].1);
        assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward, "packet {i}");
        assert_eq!(pkt.data(), &wires[i].0[..]);
    }
    assert_eq!(p.b.sad().get(p.inb).unwrap().status(T0).seq, start + 30);
    // and a duplicate from either epoch is refused
    for i in [3, 20] {
        let mut pkt = frame(&wires[i].1);
        assert_eq!(
            p.b.inbound(T0, &mut pkt),
            Verdict::Drop(DropReason::ReplayDuplicate)
        );
    }
}

#[test]
fn sequence_number_never_wraps() {
    for esn in [false, true] {
        let o = PairOpts {
            esn,
            ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
        };
        let mut p = pair(&o);
        let max = if esn { u64::MAX } else { u64::from(u32::MAX) };
        p.a.sa_mut(p.out).unwrap().set_seq(max - 1);
        let mut pkt = frame(&inner(&o, false, 0, b"last"));
        assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward, "esn={esn}");
        assert_eq!(
            u32::from_be_bytes(pkt.data()[24..28].try_into().unwrap()),
            max as u32
        );
        for _ in 0..3 {
            let orig = inner(&o, false, 0, b"one too many");
            let mut pkt = frame(&orig);
            assert_eq!(
                p.a.outbound(T0, &mut pkt),
                Verdict::Drop(DropReason::SeqExhausted),
                "esn={esn}"
            );
            assert_eq!(pkt.data(), &orig[..], "a refused packet is left as it was");
        }
        let evs: Vec<_> = p.a.drain_events().collect();
        assert_eq!(
            evs.iter()
                .filter(|e| e.kind == EventKind::HardLifetime(LimitKind::Sequence))
                .count(),
            1,
            "{evs:?}"
        );
        assert_eq!(
            p.a.sad()
                .get(p.out)
                .unwrap()
                .status(T0)
                .drops
                .get(DropReason::SeqExhausted),
            3
        );
    }
}

#[test]
fn soft_event_before_sequence_exhaustion() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    p.a.sa_mut(p.out)
        .unwrap()
        .set_seq(u64::from(u32::MAX) - (1 << 24) - 1);
    for _ in 0..3 {
        let mut pkt = frame(&inner(&o, false, 0, b"x"));
        assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
    }
    let evs: Vec<_> = p.a.drain_events().map(|e| e.kind).collect();
    assert_eq!(evs, vec![EventKind::SoftLifetime(LimitKind::Sequence)]);
}

#[test]
fn lifetimes_soft_then_hard_by_packets_and_bytes() {
    let o = PairOpts::new(EncAlg::ChaCha20Poly1305, AuthAlg::None);
    let (mut out, mut inb) = sa_pair(&o, 0x2000);
    out.lifetime.soft = Limits {
        packets: Some(5),
        ..Default::default()
    };
    out.lifetime.hard = Limits {
        packets: Some(8),
        ..Default::default()
    };
    inb.lifetime.soft = Limits {
        bytes: Some(300),
        ..Default::default()
    };
    inb.lifetime.hard = Limits {
        bytes: Some(500),
        ..Default::default()
    };
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: "p".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }],
        ..Default::default()
    }
    .compile()
    .unwrap();
    let mut a = Engine::new(Arc::new(spd));
    let mut b = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let ha = a.add_sa(&out, T0).unwrap();
    let hb = b.add_sa(&inb, T0).unwrap();
    let mut sent = 0;
    let mut received = 0;
    for _ in 0..10 {
        let orig = inner(&o, false, 0, &[0u8; 72]); // 100-byte inner packets
        let mut pkt = frame(&orig);
        match a.outbound(T0, &mut pkt) {
            Verdict::Forward => sent += 1,
            Verdict::Drop(DropReason::LifetimeExpired) => continue,
            v => panic!("{v:?}"),
        }
        match b.inbound(T0, &mut pkt) {
            Verdict::Forward => received += 1,
            Verdict::Drop(DropReason::LifetimeExpired) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(sent, 8, "hard packet limit");
    assert_eq!(received, 5, "hard byte limit: 5 x 100 bytes");
    let ea: Vec<_> = a.drain_events().map(|e| e.kind).collect();
    assert_eq!(
        ea,
        vec![
            EventKind::SoftLifetime(LimitKind::Packets),
            EventKind::HardLifetime(LimitKind::Packets)
        ]
    );
    let eb: Vec<_> = b.drain_events().map(|e| e.kind).collect();
    assert_eq!(
        eb,
        vec![
            EventKind::SoftLifetime(LimitKind::Bytes),
            EventKind::HardLifetime(LimitKind::Bytes)
        ]
    );
    // expired SAs stay installed (control removes them) and count what they refuse
    assert_eq!(
        a.sad()
            .get(ha)
            .unwrap()
            .status(T0)
            .drops
            .get(DropReason::LifetimeExpired),
        2
    );
    assert_eq!(
        b.sad().get(hb).unwrap().status(T0).expired,
        Some(LimitKind::Bytes)
    );
}

#[test]
fn time_lifetimes_and_idle_via_timer_sweep() {
    use std::time::Duration;
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let (mut out, mut inb) = sa_pair(&o, 0x3000);
    out.lifetime.soft.time = Some(Duration::from_secs(60));
    out.lifetime.hard.time = Some(Duration::from_secs(90));
    inb.lifetime.idle = Some(Duration::from_secs(30));
    let mut a = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let ha = a.add_sa(&out, T0).unwrap();
    let hb = a.add_sa(&inb, T0).unwrap();
    let at = Timestamp::from_secs;
    a.poll_timers(at(29), 16);
    assert_eq!(a.drain_events().count(), 0);
    a.poll_timers(at(31), 16);
    let ev: Vec<_> = a.drain_events().map(|e| (e.handle, e.kind)).collect();
    assert_eq!(ev, vec![(hb, EventKind::HardLifetime(LimitKind::Idle))]);
    a.poll_timers(at(61), 16);
    let ev: Vec<_> = a.drain_events().map(|e| (e.handle, e.kind)).collect();
    assert_eq!(ev, vec![(ha, EventKind::SoftLifetime(LimitKind::Time))]);
    let mut pkt = frame(&inner(&o, false, 0, b"still fine"));
    assert_eq!(a.encap_with(ha, at(80), &mut pkt), Verdict::Forward);
    let mut pkt = frame(&inner(&o, false, 0, b"too late"));
    assert_eq!(
        a.encap_with(ha, at(91), &mut pkt),
        Verdict::Drop(DropReason::LifetimeExpired)
    );
    let ev: Vec<_> = a.drain_events().map(|e| e.kind).collect();
    assert_eq!(ev, vec![EventKind::HardLifetime(LimitKind::Time)]);
}

#[test]
fn inbound_traffic_selectors_are_enforced() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    let (_, mut inb) = sa_pair(&o, 0x1000);
    // B accepts only 10.1.0.0/24 -> 10.2.0.0/24 UDP to port 5000 through this SA
    let mut sel = Selector::addresses(addr_range("10.2.0.0/24"), addr_range("10.1.0.0/24"));
    sel.proto = Some(IpProtocol::UDP);
    sel.local_port = PortSel::port(5000);
    inb.selectors = vec![sel];
    let h = p.b.sad().find(Direction::Inbound, 0x1000, None).unwrap();
    p.b.remove_sa(h);
    p.b.add_sa(&inb, T0).unwrap();
    let ok = ipv4("10.1.0.10", "10.2.0.10", 17, 0, false, &udp(1, 5000, b"ok"));
    let bad_src = ipv4(
        "10.9.0.10",
        "10.2.0.10",
        17,
        0,
        false,
        &udp(1, 5000, b"spoofed"),
    );
    let bad_port = ipv4(
        "10.1.0.10",
        "10.2.0.10",
        17,
        0,
        false,
        &udp(1, 5001, b"other port"),
    );
    for (pktb, want) in [
        (ok, Verdict::Forward),
        (bad_src, Verdict::Drop(DropReason::SelectorMismatch)),
        (bad_port, Verdict::Drop(DropReason::SelectorMismatch)),
    ] {
        let mut pkt = frame(&pktb);
        assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
        assert_eq!(p.b.inbound(T0, &mut pkt), want);
    }
}

/// RFC 4301 §5.2 fails closed: an inbound SA with no selectors (no policy names it) drops
/// even a correctly authenticated packet; "any" has to be said with `Selector::ANY`.
#[test]
fn inbound_sa_without_selectors_accepts_nothing() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    let plain = ipv4(
        "10.1.0.10",
        "10.2.0.10",
        17,
        0,
        false,
        &udp(1, 5000, b"hello"),
    );
    let mut pkt = frame(&plain);
    assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
    let wire = pkt.data().to_vec();

    let reinstall = |p: &mut Pair, selectors: Vec<Selector>| {
        let h = p.b.sad().find(Direction::Inbound, 0x1000, None).unwrap();
        p.b.remove_sa(h);
        let mut inb = p.in_cfg.clone();
        inb.selectors = selectors;
        p.b.add_sa(&inb, T0).unwrap()
    };

    let h = reinstall(&mut p, vec![]);
    let mut pkt = frame(&wire);
    assert_eq!(
        p.b.inbound(T0, &mut pkt),
        Verdict::Drop(DropReason::SelectorMismatch)
    );
    let st = p.b.sad().get(h).unwrap().status(T0);
    assert_eq!(st.drops.get(DropReason::SelectorMismatch), 1);
    assert_eq!(st.drops.total(), 1);
    assert_eq!(p.b.stats().drops.get(DropReason::SelectorMismatch), 1);

    // The same packet through the same SA with the any-selector is delivered.
    let h = reinstall(&mut p, vec![Selector::ANY]);
    let mut pkt = frame(&wire);
    assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(pkt.data(), &plain[..]);
    assert_eq!(p.b.sad().get(h).unwrap().status(T0).drops.total(), 0);
    assert_eq!(p.b.stats().drops.get(DropReason::SelectorMismatch), 1);
}

fn outer_tos_and_df(wire: &[u8]) -> (u8, bool) {
    if wire[0] >> 4 == 4 {
        (wire[1], wire[6] & 0x40 != 0)
    } else {
        ((wire[0] << 4) | (wire[1] >> 4), true)
    }
}

#[test]
fn dscp_ecn_and_df_on_encapsulation() {
    let base = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    // inner DSCP 46 (EF), ECN ECT(0), DF set
    let inner_pkt = ipv4(
        "10.1.0.10",
        "10.2.0.10",
        17,
        46 << 2 | 2,
        true,
        &udp(1, 2, b"qos"),
    );
    let cases = [
        (DscpMode::Copy, DfMode::Copy, 46u8, true),
        (DscpMode::Set(10), DfMode::Clear, 10, false),
        (DscpMode::Set(0), DfMode::Set, 0, true),
    ];
    for (dscp, df, want_dscp, want_df) in cases {
        let (mut out, _) = sa_pair(&base, 0x4000);
        out.dscp = dscp;
        out.df = df;
        let mut e = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
        let h = e.add_sa(&out, T0).unwrap();
        let mut pkt = frame(&inner_pkt);
        assert_eq!(e.encap_with(h, T0, &mut pkt), Verdict::Forward);
        let (tos, dfb) = outer_tos_and_df(pkt.data());
        assert_eq!(tos >> 2, want_dscp, "{dscp:?}");
        assert_eq!(tos & 3, 2, "RFC 6040 normal mode copies ECN");
        assert_eq!(dfb, want_df, "{df:?}");
    }
    // compatibility mode: outer Not-ECT
    let (mut out, _) = sa_pair(&base, 0x4001);
    out.ecn = xsec_dataplane::sa::EcnMode::Compatibility;
    let mut e = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let h = e.add_sa(&out, T0).unwrap();
    let mut pkt = frame(&inner_pkt);
    e.encap_with(h, T0, &mut pkt);
    assert_eq!(pkt.data()[1] & 3, 0);
}

/// RFC 6040 §4.2 on decapsulation: a congestion mark set on the outer header reaches the
/// inner packet; a Not-ECT inner packet with an outer CE is dropped.
#[test]
fn ecn_congestion_marks_survive_decapsulation() {
    for outer_v6 in [false, true] {
        let o = PairOpts {
            outer_v6,
            ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
        };
        for (inner_ecn, want) in [(2u8, Some(3u8)), (1, Some(3)), (3, Some(3)), (0, None)] {
            let mut p = pair(&o);
            let orig = ipv4(
                "10.1.0.10",
                "10.2.0.10",
                17,
                8 << 2 | inner_ecn,
                false,
                &udp(1, 2, b"ecn"),
            );
            let mut pkt = frame(&orig);
            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
            // a router on the path marks congestion (CE) on the outer header
            let mut w = pkt.data().to_vec();
            if outer_v6 {
                w[1] |= 0x30;
            } else {
                w[1] |= 3;
                w[10] = 0;
                w[11] = 0;
                let c = xsec_dataplane::wire::checksum::finish(
                    xsec_dataplane::wire::checksum::sum(&w[..20]),
                );
                w[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let mut pkt = frame(&w);
            let v = p.b.inbound(T0, &mut pkt);
            match want {
                Some(e) => {
                    assert_eq!(v, Verdict::Forward);
                    assert_eq!(pkt.data()[1] & 3, e);
                    assert_eq!(pkt.data()[1] >> 2, 8, "DSCP untouched");
                    assert!(checksums_ok(pkt.data()), "inner header checksum updated");
                }
                None => assert_eq!(v, Verdict::Drop(DropReason::EcnDrop)),
            }
        }
    }
}

#[test]
fn multicast_and_broadcast_are_never_protected() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    // A's SPD: PROTECT everything — multicast falls through to the implicit DISCARD
    for dst in ["224.0.0.5", "239.1.2.3", "255.255.255.255"] {
        let mut pkt = frame(&ipv4("10.1.0.10", dst, 17, 0, false, &udp(1, 2, b"m")));
        assert_eq!(
            p.a.outbound(T0, &mut pkt),
            Verdict::Drop(DropReason::NoPolicy),
            "{dst}"
        );
    }
    let mut pkt = frame(&ipv6("fd01::10", "ff02::1", 17, 0, &udp(1, 2, b"m")));
    assert_eq!(
        p.a.outbound(T0, &mut pkt),
        Verdict::Drop(DropReason::NoPolicy)
    );
    // with a BYPASS after the PROTECT, they pass in the clear
    let spd = SpdConfig {
        outbound: vec![
            Policy {
                name: "all".into(),
                selector: Selector::ANY,
                action: Action::Protect(SaBundle::single(1)),
            },
            Policy {
                name: "rest".into(),
                selector: Selector::ANY,
                action: Action::Bypass,
            },
        ],
        ..Default::default()
    };
    p.a.set_spd(Arc::new(spd.compile().unwrap()));
    let mut pkt = frame(&ipv4(
        "10.1.0.10",
        "224.0.0.5",
        17,
        0,
        false,
        &udp(1, 2, b"m"),
    ));
    assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Bypass);
    assert_eq!(p.a.policy_hits(Direction::Outbound), &[0, 1]);

    // a new SPD keeps each policy's counter by name, wherever it moved; new ones start at 0
    let mut moved = spd.clone();
    moved.outbound.swap(0, 1);
    moved.outbound.insert(
        1,
        Policy {
            name: "new".into(),
            selector: Selector::ANY,
            action: Action::Discard,
        },
    );
    p.a.set_spd(Arc::new(moved.compile().unwrap()));
    assert_eq!(p.a.policy_hits(Direction::Outbound), &[1, 0, 0]);
    assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Bypass);
    assert_eq!(p.a.policy_hits(Direction::Outbound), &[2, 0, 0]);
}

#[test]
fn inbound_classifier_ike_keepalive_and_plaintext_policy() {
    let o = PairOpts {
        encap: Encap::NAT_T,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    let mut spd_in = vec![];
    let mut ssh = Selector::ANY;
    ssh.proto = Some(IpProtocol::TCP);
    ssh.local_port = PortSel::port(22);
    spd_in.push(Policy {
        name: "ssh".into(),
        selector: ssh,
        action: Action::Bypass,
    });
    let mut telnet = ssh;
    telnet.local_port = PortSel::port(23);
    spd_in.push(Policy {
        name: "telnet".into(),
        selector: telnet,
        action: Action::Discard,
    });
    spd_in.push(Policy {
        name: "tunnel".into(),
        selector: Selector::addresses(addr_range("10.2.0.0/24"), addr_range("10.1.0.0/24")),
        action: Action::Protect(SaBundle::single(1)),
    });
    p.b.set_spd(Arc::new(
        SpdConfig {
            inbound: spd_in,
            inbound_default: NonPolicy::Discard,
            outbound_default: NonPolicy::Discard,
            ..Default::default()
        }
        .compile()
        .unwrap(),
    ));
    let cases: Vec<(Vec<u8>, Verdict)> = vec![
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                17,
                0,
                false,
                &udp(500, 500, &[0u8; 28]),
            ),
            Verdict::Punt,
        ),
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                17,
                0,
                false,
                &udp(4500, 4500, &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            ),
            Verdict::Punt,
        ),
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                17,
                0,
                false,
                &udp(4500, 4500, &[0xff]),
            ),
            Verdict::Consumed,
        ),
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                17,
                0,
                false,
                &udp(4500, 4500, &[1, 2, 3]),
            ),
            Verdict::Drop(DropReason::BadUdpEncap),
        ),
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                17,
                0,
                false,
                &udp(4500, 4500, &[0, 0, 0x99, 0x99, 0, 0, 0, 1, 9, 9, 9, 9]),
            ),
            Verdict::Drop(DropReason::NoSa),
        ),
        (
            ipv4("10.0.0.1", "10.0.0.2", 6, 0, false, &tcp(4000, 22, b"ssh")),
            Verdict::Bypass,
        ),
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                6,
                0,
                false,
                &tcp(4000, 23, b"telnet"),
            ),
            Verdict::Drop(DropReason::PolicyDiscard),
        ),
        (
            ipv4(
                "10.1.0.10",
                "10.2.0.10",
                17,
                0,
                false,
                &udp(1, 2, b"should be ESP"),
            ),
            Verdict::Drop(DropReason::UnprotectedForProtect),
        ),
        (
            ipv4(
                "10.7.0.10",
                "10.2.0.10",
                17,
                0,
                false,
                &udp(1, 2, b"nobody"),
            ),
            Verdict::Drop(DropReason::NoPolicy),
        ),
        // raw ESP for an SA that uses UDP encapsulation
        (
            ipv4(
                "10.0.0.1",
                "10.0.0.2",
                50,
                0,
                false,
                &[
                    0, 0, 0x10, 0, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
                    9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
                ],
            ),
            Verdict::Drop(DropReason::EncapMismatch),
        ),
    ];
    for (i, (bytes, want)) in cases.into_iter().enumerate() {
        let mut pkt = frame(&bytes);
        assert_eq!(p.b.inbound(T0, &mut pkt), want, "case {i}");
    }
    let s = p.b.stats();
    assert_eq!((s.punt_packets, s.keepalives, s.bypass_packets), (2, 1, 1));
    assert_eq!(p.b.policy_hits(Direction::Inbound), &[1, 1, 1]);
}

/// RFC 3948 §3.1.2: in transport mode behind a NAT, the upper-layer checksum was computed
/// with the sender's private address; after decapsulation it must be valid for the
/// addresses the packet now carries. The engine also reports where the peer now is.
#[test]
fn nat_t_transport_checksum_fixup_and_peer_change_event() {
    for proto in [17u8, 6] {
        let o = PairOpts {
            mode: Mode::Transport,
            encap: Encap::NAT_T,
            ..PairOpts::new(EncAlg::AesCbc256, AuthAlg::HmacSha256_128)
        };
        let (out, mut inb) = sa_pair(&o, 0x5000);
        inb.remote = Some(ip("10.0.0.1"));
        let mut a = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
        let mut b = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
        let ha = a.add_sa(&out, T0).unwrap();
        b.add_sa(&inb, T0).unwrap();
        let l4 = if proto == 17 {
            udp(1111, 5000, b"behind a NAT")
        } else {
            tcp(40000, 22, b"behind a NAT")
        };
        let orig = ipv4("172.16.0.2", "10.0.0.2", proto, 0, false, &l4);
        let mut pkt = frame(&orig);
        assert_eq!(a.encap_with(ha, T0, &mut pkt), Verdict::Forward);
        // the NAT rewrites the source address and port
        let mut w = pkt.data().to_vec();
        w[12..16].copy_from_slice(&[10, 0, 0, 1]);
        w[20..22].copy_from_slice(&31337u16.to_be_bytes());
        w[10] = 0;
        w[11] = 0;
        let c =
            xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::sum(&w[..20]));
        w[10..12].copy_from_slice(&c.to_be_bytes());
        let mut pkt = frame(&w);
        assert_eq!(b.inbound(T0, &mut pkt), Verdict::Forward);
        let got = pkt.data();
        assert_eq!(&got[12..16], &[10, 0, 0, 1]);
        assert_eq!(&got[20..24], &orig[20..24], "ports unchanged");
        assert!(
            checksums_ok(got),
            "L4 checksum valid for the translated addresses"
        );
        assert!(
            !checksums_ok(&[&got[..12], &orig[12..16], &got[16..]].concat()[..])
                || proto == 17 && orig[26] == 0
        );
        let ev: Vec<_> = b.drain_events().map(|e| e.kind).collect();
        assert_eq!(
            ev,
            vec![EventKind::PeerChanged {
                addr: ip("10.0.0.1"),
                port: 31337
            }]
        );
    }
}

#[test]
fn sa_bundle_transport_inside_tunnel() {
    let t = PairOpts {
        mode: Mode::Transport,
        ..PairOpts::new(EncAlg::AesGcm256, AuthAlg::None)
    };
    let u = PairOpts::new(EncAlg::AesCbc128, AuthAlg::HmacSha256_128);
    let (mut t_out, mut t_in) = sa_pair(&t, 0x6001);
    let (mut u_out, mut u_in) = sa_pair(&u, 0x6002);
    t_out.reqid = 1;
    t_in.reqid = 1;
    u_out.reqid = 2;
    u_in.reqid = 2;
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: "nested".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::new(&[1, 2]).unwrap()),
        }],
        ..Default::default()
    };
    let mut a = Engine::new(Arc::new(spd.clone().compile().unwrap()));
    // B accepts what came through exactly this bundle (RFC 4301 §4.5)
    let b_spd = SpdConfig {
        inbound: spd.outbound.clone(),
        ..Default::default()
    };
    let mut b = Engine::new(Arc::new(b_spd.compile().unwrap()));
    for c in [&t_out, &u_out] {
        a.add_sa(c, T0).unwrap();
    }
    for c in [&t_in, &u_in] {
        b.add_sa(c, T0).unwrap();
    }
    let orig = ipv4(
        "10.1.0.10",
        "10.2.0.10",
        17,
        0,
        false,
        &udp(1, 2, b"two layers"),
    );
    let mut pkt = frame(&orig);
    assert_eq!(a.outbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(
        u32::from_be_bytes(pkt.data()[20..24].try_into().unwrap()),
        0x6002,
        "outer SA on the wire"
    );
    let wire = pkt.data().to_vec();
    assert_eq!(b.inbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(pkt.data(), &orig[..]);
    assert_eq!(b.stats().decap_packets, 2);

    // without the policy that bundles them, the outer SA's inner packet is just what it
    // carries (its selectors allow anything): forwarded as it is, ESP and all, not peeled
    let mut c = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    for cfg in [&t_in, &u_in] {
        c.add_sa(cfg, T0).unwrap();
    }
    let mut pkt = frame(&wire);
    assert_eq!(c.inbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(pkt.data()[9], 50, "still ESP");
    assert_eq!(c.stats().decap_packets, 1);
    // nor the inner SA alone where the policy wants both
    let mut lone = frame(&orig);
    let mut a2 = Engine::new(Arc::new(SpdConfig::default().compile().unwrap()));
    let h = a2.add_sa(&t_out, T0).unwrap();
    a2.sa_mut(h).unwrap().set_seq(5);
    assert_eq!(a2.encap_with(h, T0, &mut lone), Verdict::Forward);
    assert_eq!(
        b.inbound(T0, &mut lone),
        Verdict::Drop(DropReason::BundleMismatch),
        "an SA of a bundle alone"
    );
}

#[test]
fn burst_api_counts_and_verdicts() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    let mut pkts: Vec<_> = (0..32)
        .map(|i| frame(&inner(&o, i % 2 == 0, i as u8, &[i as u8; 64])))
        .collect();
    // two bad ones
    pkts[5] = frame(&[0x45, 0, 0]);
    pkts[9] = frame(&ipv4(
        "10.1.0.10",
        "224.0.0.1",
        17,
        0,
        false,
        &udp(1, 2, b"mc"),
    ));
    let mut verdicts = vec![Verdict::Unset; 32];
    assert_eq!(p.a.outbound_burst(T0, &mut pkts, &mut verdicts), 30);
    assert_eq!(verdicts[5], Verdict::Drop(DropReason::Malformed));
    assert_eq!(verdicts[9], Verdict::Drop(DropReason::NoPolicy));
    let mut v2 = vec![Verdict::Unset; 32];
    assert_eq!(p.b.inbound_burst(T0, &mut pkts, &mut v2), 30);
    let s = p.a.stats();
    assert_eq!(s.encap_packets, 30);
    assert_eq!(s.drops.total(), 2);
    assert_eq!(p.b.stats().decap_packets, 30);
    let st = p.b.sad().get(p.inb).unwrap().status(T0);
    assert_eq!(st.packets, 30);
    assert_eq!(st.info.enc_key_bits, 128);
    let shown = format!("{st:?}");
    assert!(!shown.contains("[1, 32"), "no key bytes in status");
}

#[test]
fn not_enough_headroom_or_tailroom() {
    let o = PairOpts::new(EncAlg::AesCbc256, AuthAlg::HmacSha512_256);
    let mut p = pair(&o);
    let orig = inner(&o, false, 0, b"tight");
    let mut pkt =
        xsec_dataplane::PacketBuf::from_slice(vec![0u8; 8 + orig.len() + 200], 8, &orig).unwrap();
    assert_eq!(
        p.a.outbound(T0, &mut pkt),
        Verdict::Drop(DropReason::NoBufferSpace)
    );
    assert_eq!(pkt.data(), &orig[..]);
    let mut pkt =
        xsec_dataplane::PacketBuf::from_slice(vec![0u8; 128 + orig.len() + 4], 128, &orig).unwrap();
    assert_eq!(
        p.a.outbound(T0, &mut pkt),
        Verdict::Drop(DropReason::NoBufferSpace)
    );
    // a 65535-byte inner packet cannot grow
    let big = ipv4(
        "10.1.0.10",
        "10.2.0.10",
        17,
        0,
        false,
        &udp(1, 2, &vec![0u8; 65535 - 28]),
    );
    let mut pkt = xsec_dataplane::PacketBuf::from_slice(vec![0u8; 70000], 128, &big).unwrap();
    assert_eq!(
        p.a.outbound(T0, &mut pkt),
        Verdict::Drop(DropReason::TooBig)
    );
}

#[test]
fn transport_mode_refuses_fragments_and_keeps_ipv6_routing_header_in_front() {
    let o = PairOpts {
        mode: Mode::Transport,
        outer_v6: true,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p = pair(&o);
    // hop-by-hop + routing header, then UDP: ESP goes after the routing header
    let mut l = vec![43u8, 0, 0, 0, 0, 0, 0, 0]; // HBH, next: routing
    l.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // routing (type 0, segleft 0), next: UDP
    let u = udp(1111, 5000, b"ext headers");
    let mut pkt6 = ipv6("fd00::1", "fd00::2", 0, 0, &[&l[..], &u[..]].concat());
    // fix UDP checksum with the real layout: ipv6() computed it over the whole payload
    let ucs = {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&pkt6[8..24]);
        d.copy_from_slice(&pkt6[24..40]);
        let mut uu = u.clone();
        let c = xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::add(
            xsec_dataplane::wire::checksum::pseudo_v6(s, d, 17, uu.len() as u32),
            xsec_dataplane::wire::checksum::sum(&uu),
        ));
        uu[6..8].copy_from_slice(&c.to_be_bytes());
        uu
    };
    pkt6.truncate(40 + 16);
    pkt6.extend_from_slice(&ucs);
    let mut pkt = frame(&pkt6);
    assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
    let w = pkt.data();
    assert_eq!(w[6], 0, "still hop-by-hop first");
    assert_eq!(w[40], 43);
    assert_eq!(w[48], 50, "routing header now names ESP");
    assert_eq!(u32::from_be_bytes(w[56..60].try_into().unwrap()), 0x1000);
    assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(pkt.data(), &pkt6[..]);

    let o4 = PairOpts {
        mode: Mode::Transport,
        ..PairOpts::new(EncAlg::AesGcm128, AuthAlg::None)
    };
    let mut p4 = pair(&o4);
    let mut frag = ipv4("10.0.0.1", "10.0.0.2", 17, 0, false, &udp(1, 2, b"frag"));
    frag[6] = 0x20; // MF
    frag[10] = 0;
    frag[11] = 0;
    let c =
        xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::sum(&frag[..20]));
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    let mut pkt = frame(&frag);
    assert_eq!(
        p4.a.outbound(T0, &mut pkt),
        Verdict::Drop(DropReason::Fragment)
    );
}

/// Found by the fuzzers: raw ESP shorter than its 8-byte header used to be indexed before
/// being checked; an IPv6 chain of exactly MAX_EXT_HEADERS headers used to be refused.
#[test]
fn fuzz_regressions() {
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    for text in [
        "4500001400000000403266b60a0000010a000002",
        "6000000000003240fd000000000000000000000000000001fd000000000000000000000000000002",
        "4500001700000000403266b30a0000010a000002000010",
    ] {
        let mut bytes = hex::decode(text).unwrap();
        if bytes[0] == 0x45 {
            xsec_dataplane::wire::Ipv4Packet::new_unchecked(&mut bytes[..20]).fill_checksum();
        }
        let mut pkt = frame(&bytes);
        assert_eq!(
            p.b.inbound(T0, &mut pkt),
            Verdict::Drop(DropReason::Malformed),
            "{text}"
        );
    }
    // 12 extension headers then UDP: walked, and the inbound default applies
    let mut ext = vec![];
    for _ in 0..11 {
        ext.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    }
    ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
    let mut body = ext.clone();
    body.extend_from_slice(&udp(1234, 5000, b""));
    let pkt6 = ipv6("fd00::1", "fd00::2", 0, 0, &body);
    p.b.set_spd(Arc::new(
        SpdConfig {
            inbound_default: NonPolicy::Bypass,
            outbound_default: NonPolicy::Discard,
            ..Default::default()
        }
        .compile()
        .unwrap(),
    ));
    let mut pkt = frame(&pkt6);
    assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Bypass);
}

/// A worker whose shard lacks the SA hands the packet, unchanged, to the owner named in
/// `Shards`; the owner then processes it normally. Unknown SPIs/reqids still drop.
#[test]
fn sharded_engines_hand_off_to_the_owner() {
    use xsec_dataplane::Shards;
    let o = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let mut p = pair(&o);
    // a second worker of gateway A with the same SPD but no SAs
    let mut a2 = Engine::new(p.a.spd().clone());
    let mut b2 = Engine::new(p.b.spd().clone());
    let inner_pkt = inner(&o, false, 0, b"sharded");
    let mut pkt = frame(&inner_pkt);
    assert_eq!(a2.outbound(T0, &mut pkt), Verdict::Drop(DropReason::NoSa));
    let mut shards = Shards::default();
    shards.outbound.insert(1, 0);
    shards.inbound.insert(p.in_cfg.spi, 0);
    a2.set_shards(Some(Arc::new(shards.clone())));
    b2.set_shards(Some(Arc::new(shards)));
    let mut pkt = frame(&inner_pkt);
    let hits_before = a2.policy_hits(Direction::Outbound).to_vec();
    assert_eq!(a2.outbound(T0, &mut pkt), Verdict::Handoff(0));
    assert_eq!(
        a2.policy_hits(Direction::Outbound),
        &hits_before[..],
        "the owner, not the handing worker, counts the policy hit"
    );
    assert_eq!(
        pkt.data(),
        &inner_pkt[..],
        "a handed-off packet is unchanged"
    );
    assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
    let wire = pkt.data().to_vec();
    let mut pkt = frame(&wire);
    assert_eq!(b2.inbound(T0, &mut pkt), Verdict::Handoff(0));
    assert_eq!(pkt.data(), &wire[..]);
    assert_eq!(p.b.inbound(T0, &mut pkt), Verdict::Forward);
    assert_eq!(pkt.data(), &inner_pkt[..]);
    // an SPI nobody owns is still no_sa
    let mut bad = wire.clone();
    bad[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    let mut pkt = frame(&bad);
    assert_eq!(b2.inbound(T0, &mut pkt), Verdict::Drop(DropReason::NoSa));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Bursts give the bytes one-at-a-time processing gives — with the multi-buffer AES-CBC
    /// path for CBC SAs and the ordinary one for the rest, SAs and sizes mixed, bursts
    /// shorter and longer than the engine's internal chunk — and the peer opens every packet.
    #[test]
    fn burst_output_equals_one_at_a_time(
        mode_t in any::<bool>(),
        outer_v6 in any::<bool>(),
        natt in any::<bool>(),
        esn in any::<bool>(),
        sizes in proptest::collection::vec((0usize..1400, 0usize..4, any::<bool>()), 1..160),
        cuts in proptest::collection::vec(1usize..100, 1..6),
        // every packet on the AES-CBC + HMAC-SHA1 (0) or HMAC-SHA-256 (1) SA: groups of 8-16
        // for the 16-lane kernels
        one_sa in proptest::option::of(0usize..2),
        // and all of the first one's size (the VAES CBC kernel takes similar lengths only)
        one_size in any::<bool>(),
    ) {
        let first = sizes[0].0;
        let sizes: Vec<_> = sizes
            .iter()
            .map(|&(n, sa, v6)| (if one_size { first } else { n }, one_sa.unwrap_or(sa), v6))
            .collect();
        let base = |enc, auth| PairOpts {
            mode: if mode_t { Mode::Tunnel } else { Mode::Transport },
            outer_v6,
            encap: if natt { Encap::NAT_T } else { Encap::None },
            esn,
            ..PairOpts::new(enc, auth)
        };
        let opts = [
            base(EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
            base(EncAlg::AesCbc256, AuthAlg::HmacSha256_128),
            base(EncAlg::AesGcm128, AuthAlg::None),
            base(EncAlg::AesCbc192, AuthAlg::HmacSha512_256),
        ];
        let (mut a, mut c, mut b) = twin_engines(&opts);
        let pkts: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&(n, sa, v6)| {
                let payload: Vec<u8> = (0..n).map(|k| (k * 7 + sa) as u8).collect();
                let o = &opts[sa];
                let l4 = udp(1111, 5000 + sa as u16, &payload);
                let m = inner(o, v6, 0, &[]);
                // inner() picks the addresses for the mode; rebuild with our UDP port
                if m[0] >> 4 == 6 {
                    let (s, d) = if o.mode == Mode::Transport { ("fd00::1", "fd00::2") } else { ("fd01::10", "fd02::10") };
                    ipv6(s, d, 17, 0, &l4)
                } else {
                    let (s, d) = if o.mode == Mode::Transport { ("10.0.0.1", "10.0.0.2") } else { ("10.1.0.10", "10.2.0.10") };
                    ipv4(s, d, 17, 0, false, &l4)
                }
            })
            .collect();
        let mut burst: Vec<_> = pkts.iter().map(|p| frame(p)).collect();
        let mut single: Vec<_> = pkts.iter().map(|p| frame(p)).collect();
        let mut vb = vec![Verdict::Unset; burst.len()];
        for r in burst_ranges(burst.len(), &cuts) {
            a.outbound_burst(T0, &mut burst[r.clone()], &mut vb[r]);
        }
        for (i, (x, y)) in burst.iter_mut().zip(single.iter_mut()).enumerate() {
            let vs = c.outbound(T0, y);
            prop_assert_eq!(vb[i], vs, "packet {}", i);
            prop_assert_eq!(x.data(), y.data(), "packet {} ({} bytes, SA {})", i, pkts[i].len(), sizes[i].1);
            if vs == Verdict::Forward {
                prop_assert_eq!(b.inbound(T0, x), Verdict::Forward, "packet {} does not open", i);
                prop_assert_eq!(x.data(), &pkts[i][..]);
            }
        }
        prop_assert_eq!(a.stats().encap_packets, c.stats().encap_packets);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Inbound bursts (ICVs checked together up front, up to 16 at a time) decide every packet as one at a
    /// time does — good packets, replays inside the same burst, corrupted and cut packets,
    /// SAs and sizes mixed — and leave the same bytes and counters.
    #[test]
    fn inbound_burst_equals_one_at_a_time(
        mode_t in any::<bool>(),
        natt in any::<bool>(),
        esn in any::<bool>(),
        sizes in proptest::collection::vec((0usize..1400, 0usize..4), 1..120),
        damage in proptest::collection::vec((0usize..200, 0u8..4, 0usize..2000, any::<u8>()), 0..30),
        cuts in proptest::collection::vec(1usize..100, 1..6),
        // every packet on the AES-CBC + HMAC-SHA1 (0) or HMAC-SHA-256 (1) SA: groups of 8-16
        // for the 16-lane kernels
        one_sa in proptest::option::of(0usize..2),
    ) {
        let sizes: Vec<_> = sizes.iter().map(|&(n, sa)| (n, one_sa.unwrap_or(sa))).collect();
        let base = |enc, auth| PairOpts {
            mode: if mode_t { Mode::Tunnel } else { Mode::Transport },
            encap: if natt { Encap::NAT_T } else { Encap::None },
            esn,
            ..PairOpts::new(enc, auth)
        };
        let opts = [
            base(EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
            base(EncAlg::AesCbc256, AuthAlg::HmacSha256_128),
            base(EncAlg::AesGcm128, AuthAlg::None),
            base(EncAlg::Null, AuthAlg::HmacSha256_128),
        ];
        let (mut a, _, mut b1) = twin_engines(&opts);
        let (_, _, mut b2) = twin_engines(&opts);
        let (s4, d4) = if mode_t { ("10.1.0.10", "10.2.0.10") } else { ("10.0.0.1", "10.0.0.2") };
        let mut wire: Vec<Vec<u8>> = vec![];
        for &(n, sa) in &sizes {
            let payload: Vec<u8> = (0..n).map(|k| (k * 5 + sa) as u8).collect();
            let mut f = frame(&ipv4(s4, d4, 17, 0, false, &udp(1111, 5000 + sa as u16, &payload)));
            prop_assert_eq!(a.outbound(T0, &mut f), Verdict::Forward);
            wire.push(f.data().to_vec());
        }
        // replays (a copy later in the stream), flipped bytes, cut packets
        for &(at, kind, pos, b) in &damage {
            let at = at % wire.len();
            match kind {
                0 => { let c = wire[at].clone(); let to = (at + pos % 5).min(wire.len()); wire.insert(to, c); }
                1 => { let p = &mut wire[at]; let i = pos % p.len(); p[i] ^= b | 1; }
                2 => { let p = &mut wire[at]; let keep = p.len().saturating_sub(1 + pos % 40).max(20); p.truncate(keep); }
                _ => { let p = &mut wire[at]; let i = p.len() - 1 - pos % 12.min(p.len() - 1); p[i] ^= 0x80; }
            }
        }
        let mut burst: Vec<_> = wire.iter().map(|p| frame(p)).collect();
        let mut single: Vec<_> = wire.iter().map(|p| frame(p)).collect();
        let mut vb = vec![Verdict::Unset; burst.len()];
        for r in burst_ranges(burst.len(), &cuts) {
            b1.inbound_burst(T0, &mut burst[r.clone()], &mut vb[r]);
        }
        for (i, (x, y)) in burst.iter().zip(single.iter_mut()).enumerate() {
            let vs = b2.inbound(T0, y);
            prop_assert_eq!(vb[i], vs, "packet {}", i);
            if vs == Verdict::Forward {
                prop_assert_eq!(x.data(), y.data(), "packet {}", i);
            }
        }
        prop_assert_eq!(b1.stats(), b2.stats());
    }
}

/// The path MTU is checked before encryption (RFC 4301 §8.2.1): a DF (or IPv6) packet whose
/// ESP packet would not fit gets `TooBig` with the largest size that fits, spends no sequence
/// number and is not counted as protected; every size up to that is encrypted and fits;
/// packets that may be fragmented are encrypted whatever their size (the outer packet is
/// fragmented later).
#[test]
fn path_mtu_is_checked_before_encryption() {
    const MTU: u16 = 1400;
    let algs = [
        (EncAlg::AesGcm128, AuthAlg::None),
        (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
        (EncAlg::ChaCha20Poly1305, AuthAlg::None),
    ];
    for (enc, auth) in algs {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for outer_v6 in [false, true] {
                for encap in [
                    Encap::None,
                    Encap::Udp {
                        local_port: 4500,
                        remote_port: 4500,
                    },
                ] {
                    for inner_v6 in [false, true] {
                        let mut o = PairOpts::new(enc, auth);
                        o.mode = mode;
                        o.outer_v6 = outer_v6;
                        o.encap = encap;
                        let what = format!(
                            "{enc:?} {mode:?} outer_v6 {outer_v6} {encap:?} inner_v6 {inner_v6}"
                        );
                        let mut p = pair(&o);
                        let (ga, gb) = outer_addrs(outer_v6);
                        if mode == Mode::Transport {
                            // the peer is what the path MTU is known by
                            p.a.remove_sa(p.out);
                            let mut c = p.out_cfg.clone();
                            (c.local, c.remote) = (Some(ga), Some(gb));
                            p.out = p.a.add_sa(&c, T0).unwrap();
                        }
                        p.a.set_path_mtu(gb, MTU);
                        let mut room = None;
                        let mut sent = 0u64;
                        for len in 1100..1450usize {
                            let plain = inner(&o, inner_v6, 0, &vec![0x5a; len]);
                            let seq = p.a.sad().get(p.out).unwrap().status(T0).seq;
                            let mut pkt = frame(&plain);
                            match p.a.outbound(T0, &mut pkt) {
                                Verdict::Forward => {
                                    assert!(
                                        pkt.len() <= usize::from(MTU),
                                        "{what}: {} B left",
                                        pkt.len()
                                    );
                                    assert!(
                                        room.is_none(),
                                        "{what}: {} B fit after a refusal",
                                        plain.len()
                                    );
                                    sent += 1;
                                }
                                Verdict::TooBig { mtu } => {
                                    let r = usize::from(mtu);
                                    assert!(
                                        plain.len() > r,
                                        "{what}: {} B refused, room {r}",
                                        plain.len()
                                    );
                                    assert_eq!(*room.get_or_insert(r), r, "{what}: room changed");
                                    assert_eq!(
                                        pkt.data(),
                                        &plain[..],
                                        "{what}: refused packet changed"
                                    );
                                    let st = p.a.sad().get(p.out).unwrap().status(T0);
                                    assert_eq!(
                                        st.seq, seq,
                                        "{what}: a refused packet spent a sequence number"
                                    );
                                }
                                v => panic!("{what}: {v:?}"),
                            }
                        }
                        let room = room.unwrap_or_else(|| panic!("{what}: nothing refused"));
                        // the largest packet sent is the room announced (sizes step by one)
                        let largest = inner(&o, inner_v6, 0, &[]).len() + 1100 + sent as usize - 1;
                        assert_eq!(largest, room, "{what}");
                        let st = p.a.sad().get(p.out).unwrap().status(T0);
                        assert_eq!(st.packets, sent, "{what}: SA packets");
                        assert_eq!(st.drops.get(DropReason::PathMtu), 350 - sent, "{what}");
                        assert_eq!(
                            p.a.stats().drops.get(DropReason::PathMtu),
                            350 - sent,
                            "{what}"
                        );
                        // an IPv4 packet without DF is protected whatever its size
                        if !(inner_v6 || (mode == Mode::Transport && outer_v6)) {
                            let big = inner(&o, false, 1, &vec![7; 1400]);
                            assert!(big.len() > room);
                            let mut pkt = frame(&big);
                            assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward, "{what}");
                        }
                    }
                }
            }
        }
    }
}

/// An SA that takes over its predecessor (same SPI and keys, a settings-only reload) keeps
/// its IV generator: across takeovers no IV repeats under the one key, and every AEAD IV is
/// the sequence number under one mask (RFC 4106 §3.1, RFC 7634 §2).
#[test]
fn nonces_never_repeat_across_takeovers() {
    use std::collections::HashSet;
    use xsec_dataplane::sa::Sa;
    for (enc, auth) in [
        (EncAlg::AesGcm128, AuthAlg::None),
        (EncAlg::ChaCha20Poly1305, AuthAlg::None),
        (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
    ] {
        let o = PairOpts::new(enc, auth);
        let mut p = pair(&o);
        let aead = enc != EncAlg::AesCbc128;
        let iv_len = if aead { 8 } else { 16 };
        let mut ivs = HashSet::new();
        let mut masks = HashSet::new();
        let mut sent = 0;
        for round in 0..6 {
            for i in 0..40u8 {
                let plain = inner(&o, false, 0, &[i, round]);
                let mut pkt = frame(&plain);
                assert_eq!(p.a.outbound(T0, &mut pkt), Verdict::Forward);
                let esp = &pkt.data()[20..];
                let seq = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
                let iv = esp[8..8 + iv_len].to_vec();
                if aead {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&iv);
                    masks.insert(u64::from_be_bytes(b) ^ u64::from(seq));
                }
                assert!(ivs.insert(iv), "{enc:?}: an IV repeated (round {round})");
                sent += 1;
            }
            // a settings-only reload: a new SA (fresh random IV seed) takes over the old one
            let old = p.a.remove_sa(p.out).expect("installed");
            let mut cfg = p.out_cfg.clone();
            cfg.dscp = xsec_dataplane::sa::DscpMode::Set(round * 8 % 64);
            let mut new = Sa::new(&cfg, T0).expect("valid");
            new.take_over(&old);
            p.out = p.a.install_sa(new).expect("install");
        }
        assert_eq!(ivs.len(), sent, "{enc:?}");
        if aead {
            assert_eq!(
                masks.len(),
                1,
                "{enc:?}: the IV mask changed across takeovers"
            );
        }
    }
}

/// ACQUIRE: a packet that matches a PROTECT policy whose SA is not installed is dropped
/// (`no_sa`) and raises one event naming the policy, the reqid and the packet — at most one
/// per policy per second.
#[test]
fn a_protect_policy_without_its_sa_raises_acquire_once_a_second() {
    use xsec_dataplane::sa::SaHandle;
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: "web".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(7)),
        }],
        inbound: vec![],
        inbound_default: NonPolicy::Discard,
        outbound_default: NonPolicy::Discard,
    }
    .compile()
    .unwrap();
    let mut e = Engine::new(Arc::new(spd));
    let pkt = || {
        ipv4(
            "10.1.0.5",
            "10.2.0.9",
            17,
            0,
            false,
            &udp(40000, 53, b"query"),
        )
    };
    let t0 = Timestamp::ZERO.plus(std::time::Duration::from_secs(5));
    let v = e.outbound(t0, &mut frame(&pkt()));
    assert_eq!(v, Verdict::Drop(DropReason::NoSa));
    let evs: Vec<_> = e.drain_events().collect();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(
        (evs[0].reqid, evs[0].spi, evs[0].handle, evs[0].direction),
        (7, 0, SaHandle::NONE, Direction::Outbound)
    );
    assert_eq!(
        evs[0].kind,
        EventKind::Acquire {
            policy: 0,
            src: ip("10.1.0.5"),
            dst: ip("10.2.0.9"),
            proto: 17,
            ports: Some((40000, 53)),
        }
    );
    // within the second: dropped and counted, no new event
    for ms in [1, 500, 999] {
        let t = t0.plus(std::time::Duration::from_millis(ms));
        assert_eq!(
            e.outbound(t, &mut frame(&pkt())),
            Verdict::Drop(DropReason::NoSa)
        );
    }
    assert_eq!(e.drain_events().count(), 0);
    assert_eq!(e.stats().drops.get(DropReason::NoSa), 4);
    // a second later: again
    let t = t0.plus(std::time::Duration::from_millis(1000));
    e.outbound(t, &mut frame(&pkt()));
    assert_eq!(e.drain_events().count(), 1);
    // ICMP has no ports to report
    let echo = ipv4("10.1.0.5", "10.2.0.9", 1, 0, false, &icmp_echo(false, b"x"));
    e.outbound(t.plus(std::time::Duration::from_secs(2)), &mut frame(&echo));
    let evs: Vec<_> = e.drain_events().collect();
    assert!(
        matches!(
            evs[0].kind,
            EventKind::Acquire {
                proto: 1,
                ports: None,
                ..
            }
        ),
        "{evs:?}"
    );
}

/// `Engine::max_overhead` bounds what protection adds to every packet, for every algorithm,
/// protocol, mode, family and encapsulation, and is reached by ESP (the longest padding
/// comes round within 16 lengths); it follows the SAs installed and removed, and a bundle's
/// depth multiplies it.
#[test]
fn max_overhead_bounds_every_protected_packet() {
    use xsec_dataplane::sa::{CompAlg, Protocol};
    let mut shapes: Vec<PairOpts> = vec![];
    for &(enc, auth) in ALGS {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for outer_v6 in [false, true] {
                for encap in [Encap::None, Encap::NAT_T] {
                    shapes.push(PairOpts {
                        mode,
                        outer_v6,
                        encap,
                        ..PairOpts::new(enc, auth)
                    });
                }
            }
        }
    }
    for auth in [
        AuthAlg::HmacSha1_96,
        AuthAlg::HmacSha384_192,
        AuthAlg::AesGmac128,
    ] {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for outer_v6 in [false, true] {
                shapes.push(PairOpts {
                    mode,
                    outer_v6,
                    protocol: Protocol::Ah,
                    ..PairOpts::new(EncAlg::Null, auth)
                });
            }
        }
    }
    for mode in [Mode::Tunnel, Mode::Transport] {
        shapes.push(PairOpts {
            mode,
            protocol: Protocol::IpComp(CompAlg::Deflate),
            ..PairOpts::new(EncAlg::Null, AuthAlg::None)
        });
    }
    for o in shapes {
        let mut pair = pair(&o);
        let bound = pair.a.max_overhead();
        assert!(
            bound > 0 && bound <= xsec_dataplane::MAX_ESP_OVERHEAD,
            "{o:?}"
        );
        assert_eq!(pair.b.max_overhead(), 0, "inbound SAs add nothing");
        let mut most = 0;
        for len in (0..48).chain([200, 1000, 1400]) {
            // text-like payloads: IPComp compresses some of them
            let body: Vec<u8> = (0..len).map(|i| b"abcab"[i % 5]).collect();
            let p = inner(&o, o.outer_v6, 0, &body);
            let mut f = frame(&p);
            assert_eq!(pair.a.outbound(T0, &mut f), Verdict::Forward, "{o:?} {len}");
            let added = f.data().len().saturating_sub(p.len());
            assert!(added <= bound, "{o:?} len {len}: {added} > {bound}");
            most = most.max(added);
        }
        if o.protocol == Protocol::Esp {
            assert_eq!(most, bound, "{o:?}: the bound is reached");
        }
        // removed: nothing left to add
        pair.a.remove_sa(pair.out).unwrap();
        assert_eq!(pair.a.max_overhead(), 0, "{o:?}");
    }

    // two outbound SAs: the larger counts until it goes; a bundle of two doubles it
    let small = PairOpts::new(EncAlg::AesGcm128, AuthAlg::None);
    let big = PairOpts {
        outer_v6: true,
        encap: Encap::NAT_T,
        ..PairOpts::new(EncAlg::AesCbc256, AuthAlg::HmacSha512_256)
    };
    let (s_out, _) = sa_pair(&small, 0x2000);
    let (mut b_out, _) = sa_pair(&big, 0x3000);
    b_out.reqid = 2;
    let spd = |bundle: &[u32]| {
        Arc::new(
            SpdConfig {
                outbound: vec![Policy {
                    name: "all".into(),
                    selector: Selector::ANY,
                    action: Action::Protect(SaBundle::new(bundle).unwrap()),
                }],
                ..Default::default()
            }
            .compile()
            .unwrap(),
        )
    };
    let mut e = Engine::new(spd(&[1]));
    assert_eq!(e.max_overhead(), 0);
    e.add_sa(&s_out, T0).unwrap();
    assert_eq!(e.max_overhead(), 20 + 8 + 8 + 3 + 2 + 16);
    let hb = e.add_sa(&b_out, T0).unwrap();
    assert_eq!(e.max_overhead(), 48 + 8 + 16 + 15 + 2 + 32);
    e.set_spd(spd(&[1, 2]));
    assert_eq!(e.max_overhead(), 2 * (48 + 8 + 16 + 15 + 2 + 32));
    e.remove_sa(hb).unwrap();
    assert_eq!(e.max_overhead(), 2 * (20 + 8 + 8 + 3 + 2 + 16));
}
