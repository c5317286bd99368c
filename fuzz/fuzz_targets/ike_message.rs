//! The IKEv2 message codec (`xsec_ike::ike::wire`): any bytes decode to a message or to an
//! error with an offset inside the datagram — never a panic. A decoded message encodes
//! again to bytes that decode to the same payloads (unknown non-critical payloads, which
//! are skipped, are the only thing lost); an encrypted payload is opened with fixed keys
//! (AES-GCM and AES-CBC) without panicking, whatever its length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xsec_ike::ike::kdf::{KeyLengths, Prf};
use xsec_ike::ike::proposal::{Encr, Integ};
use xsec_ike::ike::sk::Protection;
use xsec_ike::ike::wire::Message;

/// Seeds: every message of a real exchange between two xsec-ike endpoints in memory
/// (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA rekeys of the Child SA and the IKE SA,
/// INFORMATIONAL deletes), for AES-GCM and AES-CBC.
fn seeds() -> Vec<(String, Vec<u8>)> {
    use std::sync::Arc;
    use std::time::Instant;
    use xsec_ike::ike::config::{ChildConfig, Connection, DpdAction, Mode, Timing, parse_id};
    use xsec_ike::ike::endpoint::Endpoint;
    use xsec_ike::ike::proposal::Suite;
    use xsec_ike::ike::sa::RandomSpis;
    use xsec_ike::ike::ts::prefix;
    let conn = |me: &str, peer: &str, id: &str, ike: &str, esp: &str, l: &str, r: &str| {
        Arc::new(Connection {
            name: "c".into(),
            local_addr: Some(me.parse().expect("ip")),
            remote_addr: Some(peer.parse().expect("ip")),
            local_id: parse_id(id).expect("id"),
            remote_id: None,
            psk: zeroize::Zeroizing::new(b"fuzzing secret".to_vec()),
            ike: vec![Suite::parse(ike, true).expect("ike")],
            children: vec![ChildConfig {
                name: "n".into(),
                esp: vec![Suite::parse(esp, false).expect("esp")],
                local_ts: vec![prefix(l.parse().expect("ip"), 24).expect("ts")],
                remote_ts: vec![prefix(r.parse().expect("ip"), 24).expect("ts")],
                mode: Mode::Tunnel,
                rekey_time: None,
                life_time: None,
                auto_start: true,
            }],
            dpd_delay: None,
            dpd_action: DpdAction::Clear,
            rekey_time: None,
            reauth_time: None,
        })
    };
    let mut out = vec![];
    for (k, (ike, esp)) in [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"),
        ("aes256-sha256-ecp256", "aes256-sha256"),
    ]
    .iter()
    .enumerate()
    {
        let now = Instant::now();
        let mut a = Endpoint::new(
            vec![conn(
                "10.0.0.1",
                "10.0.0.2",
                "a.example",
                ike,
                esp,
                "10.1.0.0",
                "10.2.0.0",
            )],
            Timing::default(),
            now,
        );
        let mut b = Endpoint::new(
            vec![conn(
                "10.0.0.2",
                "10.0.0.1",
                "b.example",
                ike,
                esp,
                "10.2.0.0",
                "10.1.0.0",
            )],
            Timing::default(),
            now,
        );
        let pump = |a: &mut Endpoint, b: &mut Endpoint, out: &mut Vec<(String, Vec<u8>)>| {
            for _ in 0..20 {
                let mut moved = false;
                while let Some(t) = a.poll_transmit() {
                    moved = true;
                    out.push((format!("x{k}-{}", out.len()), t.data.clone()));
                    b.handle(now, t.remote, t.local, &t.data, &mut RandomSpis);
                }
                while let Some(t) = b.poll_transmit() {
                    moved = true;
                    out.push((format!("x{k}-{}", out.len()), t.data.clone()));
                    a.handle(now, t.remote, t.local, &t.data, &mut RandomSpis);
                }
                if !moved {
                    break;
                }
            }
        };
        a.initiate(now, "c", 500, &mut RandomSpis)
            .expect("initiate");
        pump(&mut a, &mut b, &mut out);
        let id = a.sas().next().map(|s| s.id()).expect("sa");
        let spi = a
            .sas()
            .next()
            .and_then(|s| s.children.first())
            .map(|c| c.spi_in)
            .expect("child");
        a.rekey(now, id, Some(spi), &mut RandomSpis);
        pump(&mut a, &mut b, &mut out);
        a.rekey(now, id, None, &mut RandomSpis);
        pump(&mut a, &mut b, &mut out);
    }
    out
}

fuzz_target!(
    init: {
        xsec_fuzz::write_seeds(&seeds());
    },
    |data: &[u8]| run(data)
);

fn run(data: &[u8]) {
    let m = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} beyond {}",
                e.offset,
                data.len()
            );
            return;
        }
    };
    if m.sk.is_none() {
        let again = Message::encode(&m.header, &m.payloads);
        let back = Message::parse(&again).expect("a re-encoded message decodes");
        assert_eq!(back.payloads, m.payloads);
    }
    if let Some(sk) = m.sk {
        for (e, i) in [
            (Encr::AesGcm16(128), None),
            (Encr::AesCbc(256), Some(Integ::HmacSha256_128)),
        ] {
            let keys = Prf::HmacSha256
                .ike_keys(
                    b"fuzz",
                    &[1; 16],
                    &[2; 16],
                    [[3; 8], [4; 8]],
                    KeyLengths {
                        integ: i.map(|x| x.key_len()).unwrap_or(0),
                        encr: e.keymat_len(),
                    },
                )
                .expect("keys");
            let p = Protection::new(e, i, &keys, false);
            let _ = p.open(data, sk);
        }
    }
}
