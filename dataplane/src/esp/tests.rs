//! Decapsulation of hand-built ESP plaintexts: dummy packets, TFC padding, bad padding and
//! next headers. The packets are sealed with a real transform, so they pass the ICV and
//! exercise what comes after it.

use crate::crypto::{AuthAlg, EncAlg, Transform};
use crate::engine::{Engine, Verdict};
use crate::packet::PacketBuf;
use crate::sa::SaConfig;
use crate::spd::{Direction, Selector, Spd};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::checksum;

const KEY: [u8; 20] = [0x11; 20];
const SPI: u32 = 0x7000;

fn engine() -> Engine {
    engine_with_selectors(vec![Selector::ANY])
}

fn engine_with_selectors(selectors: Vec<Selector>) -> Engine {
    let mut e = Engine::new(std::sync::Arc::new(Spd::empty(Default::default())));
    let mut c = SaConfig::tunnel(
        SPI,
        Direction::Inbound,
        "10.0.0.2".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        EncAlg::AesGcm128,
        &KEY,
        AuthAlg::None,
        &[],
    );
    c.selectors = selectors;
    e.add_sa(&c, Timestamp::ZERO).unwrap();
    e
}

/// An outer IPv4/ESP packet around `plaintext` (payload ‖ padding ‖ pad length ‖ next header).
fn esp_packet(seq: u32, plaintext: &[u8]) -> Vec<u8> {
    let t = Transform::new(
        EncAlg::AesGcm128,
        &KEY,
        AuthAlg::None,
        &[],
        true,
        false,
        [3; 16],
    )
    .unwrap();
    let len = 8 + 8 + plaintext.len() + 16;
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 50, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.resize(20 + len, 0);
    p[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..24].copy_from_slice(&SPI.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[36..36 + plaintext.len()].copy_from_slice(plaintext);
    t.seal(&mut p, 20, len, u64::from(seq), false).unwrap();
    p
}

fn inner_v4() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 30, 0, 1, 0, 0, 64, 17, 0, 0, 10, 1, 0, 10, 10, 2, 0, 10, 0, 1, 0, 2, 0, 10, 0,
        0, b'h', b'i',
    ];
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn trailer(data: &[u8], pad: u8, nh: u8) -> Vec<u8> {
    let mut v = data.to_vec();
    v.extend((1..=pad).collect::<Vec<u8>>());
    v.push(pad);
    v.push(nh);
    v
}

fn run(e: &mut Engine, bytes: &[u8]) -> (Verdict, Vec<u8>) {
    let mut p = PacketBuf::from_slice(vec![0u8; 2048], 128, bytes).unwrap();
    let v = e.inbound(Timestamp::ZERO, &mut p);
    (v, p.data().to_vec())
}

#[test]
fn dummy_packets_are_dropped_silently_after_authentication() {
    let mut e = engine();
    let (v, _) = run(&mut e, &esp_packet(1, &trailer(&[0xde; 21], 1, 59)));
    assert_eq!(v, Verdict::Drop(DropReason::Dummy));
    // authenticated: the window moved, a replay of it is a duplicate
    let (v, _) = run(&mut e, &esp_packet(1, &trailer(&[0xde; 21], 1, 59)));
    assert_eq!(v, Verdict::Drop(DropReason::ReplayDuplicate));
    assert_eq!(e.stats().drops.get(DropReason::Dummy), 1);
}

#[test]
fn tfc_padding_after_the_inner_packet_is_tolerated() {
    let mut e = engine();
    let inner = inner_v4();
    let mut data = inner.clone();
    data.extend_from_slice(&[0u8; 33]); // RFC 4303 §2.7 TFC padding
    let (v, out) = run(&mut e, &esp_packet(1, &trailer(&data, 1, 4)));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, inner);
}

#[test]
fn post_icv_errors_have_their_reasons() {
    let mut e = engine();
    let inner = inner_v4();
    let mut bad_pad = trailer(&inner, 4, 4);
    bad_pad[inner.len() + 2] = 9; // padding 1,2,9,4
    let mut short = inner.clone();
    short[3] = 200; // inner total length beyond the payload
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (bad_pad, DropReason::BadPadding),
        (
            trailer(&inner[..2], 0, 4)[..3]
                .to_vec()
                .into_iter()
                .chain([250u8, 4])
                .collect(),
            DropReason::BadPadding,
        ),
        (trailer(&inner, 1, 17), DropReason::BadNextHeader),
        (trailer(&inner, 1, 41), DropReason::Malformed),
        (trailer(&short, 1, 4), DropReason::Malformed),
        (trailer(&[], 2, 4), DropReason::Malformed),
    ];
    for (i, (pt, want)) in cases.into_iter().enumerate() {
        let (v, _) = run(&mut e, &esp_packet(10 + i as u32, &pt));
        assert_eq!(v, Verdict::Drop(want), "case {i}");
    }
}

/// RFC 4301 §5.2: `Selector::ANY` anywhere in the list accepts every packet (and lets
/// decapsulation skip the selector parse); an empty list accepts nothing.
#[test]
fn any_selector_accepts_everything_and_no_selector_nothing() {
    let inner = inner_v4(); // 10.1.0.10 -> 10.2.0.10
    let other = Selector::addresses(
        "10.9.0.0/24".parse().unwrap(),
        "10.8.0.0/24".parse().unwrap(),
    );
    let cases = [
        (vec![Selector::ANY], Verdict::Forward),
        (vec![other, Selector::ANY], Verdict::Forward),
        (vec![other], Verdict::Drop(DropReason::SelectorMismatch)),
        (vec![], Verdict::Drop(DropReason::SelectorMismatch)),
    ];
    for (selectors, want) in cases {
        let what = format!("{selectors:?}");
        let mut e = engine_with_selectors(selectors);
        let (v, out) = run(&mut e, &esp_packet(1, &trailer(&inner, 0, 4)));
        assert_eq!(v, want, "{what}");
        if want == Verdict::Forward {
            assert_eq!(out, inner, "{what}");
        }
    }
}
