//! `classify_udp_encap` against RFC 3948 written out here, and the same bytes as the payload
//! of a UDP datagram on an encapsulation port through `Engine::inbound` (4500 over IPv4 and
//! IPv6, and 2746, the port an installed SA adds).
//!
//! RFC 3948: a single 0xFF byte is a NAT-keepalive (§2.3, consumed); a payload starting with
//! four zero bytes (the non-ESP marker) is IKE (§2.2, punted to the control plane); otherwise a
//! payload of at least 8 bytes (SPI + sequence number) is ESP (§2.1); anything else is invalid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{Encap, Sa, SaConfig};
use xsec_dataplane::spd::{Direction, NonPolicy, Selector};
use xsec_dataplane::wire::{UdpEncapKind, classify_udp_encap};
use xsec_dataplane::{DropReason, Engine, EngineConfig, Verdict};
use xsec_fuzz::*;

fn rfc3948(p: &[u8]) -> UdpEncapKind {
    if p.len() == 1 && p[0] == 0xff {
        UdpEncapKind::Keepalive
    } else if p.len() >= 4 && p[..4] == [0, 0, 0, 0] {
        UdpEncapKind::Ike
    } else if p.len() >= 8 {
        UdpEncapKind::Esp
    } else {
        UdpEncapKind::Invalid
    }
}

fn engine() -> Engine {
    let cfg = EngineConfig {
        udp_encap_ports: vec![4500],
        sa_capacity: 4,
        event_capacity: 16,
    };
    let mut e = Engine::with_config(empty_spd(NonPolicy::Bypass), cfg);
    let (ek, ak) = keys(EncAlg::AesGcm128, AuthAlg::None, 1);
    let mut c = SaConfig::tunnel(
        0x0000_2746,
        Direction::Inbound,
        IpAddr::from(GW4),
        IpAddr::from(PEER4),
        EncAlg::AesGcm128,
        &ek,
        AuthAlg::None,
        &ak,
    );
    c.encap = Encap::UDP_2746;
    // Accept any inner packet (without selectors the SA would accept nothing).
    c.selectors = vec![Selector::ANY];
    let sa = Sa::with_random(&c, NOW, [1; 16]).expect("valid SA");
    e.install_sa(sa).expect("installs");
    e
}

fn run(data: &[u8]) {
    let kind = classify_udp_encap(data);
    assert_eq!(
        kind,
        rfc3948(data),
        "classify_udp_encap({}) disagrees with RFC 3948",
        hex(data)
    );
    if data.len() > 65535 - 48 {
        return;
    }
    let mut e = engine();
    for (v6, port) in [(false, 4500), (true, 4500), (false, 2746)] {
        let pkt = if v6 {
            udp_packet(true, &PEER6, &GW6, 4500, port, data)
        } else {
            udp_packet(false, &PEER4, &GW4, 4500, port, data)
        };
        let mut p = frame(&pkt);
        let v = e.inbound(NOW, &mut p);
        let ok = match kind {
            UdpEncapKind::Keepalive => v == Verdict::Consumed,
            UdpEncapKind::Ike => v == Verdict::Punt,
            UdpEncapKind::Invalid => v == Verdict::Drop(DropReason::BadUdpEncap),
            // ESP: no SA has the SPI, or the one SA (2746) refuses it: never passed on.
            UdpEncapKind::Esp => matches!(
                v,
                Verdict::Drop(
                    DropReason::NoSa
                        | DropReason::EncapMismatch
                        | DropReason::BadLength
                        | DropReason::ReplayOld
                        | DropReason::IcvFailed
                )
            ),
        };
        assert!(
            ok,
            "{kind:?} payload {} on UDP {port} (IPv6: {v6}) got {v:?}",
            hex(data)
        );
        if matches!(v, Verdict::Consumed | Verdict::Punt) {
            assert_eq!(p.data(), &pkt[..], "{v:?} changed the packet");
        }
    }
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        ("keepalive".into(), vec![0xff]),
        ("ike".into(), [vec![0; 4], vec![0x22; 28]].concat()),
        (
            "esp".into(),
            [
                0x0000_2746u32.to_be_bytes().to_vec(),
                vec![0, 0, 0, 1],
                vec![0xab; 40],
            ]
            .concat(),
        ),
        ("short".into(), vec![1, 2, 3]),
    ]
}

fuzz_target!(
    init: {
        write_seeds(&seeds());
    },
    |data: &[u8]| run(data)
);
