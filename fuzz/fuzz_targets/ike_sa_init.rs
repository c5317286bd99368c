//! The responder's handling of IKE_SA_INIT (`xsec_ike::ike::endpoint::Endpoint::handle`):
//! any datagram is answered, refused or dropped — never a panic, never more than one
//! half-open SA per datagram; whatever it sends decodes as an IKE message. The first byte
//! picks the COOKIE threshold (always, or never).

#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use xsec_ike::ike::config::{ChildConfig, Connection, DpdAction, Mode, Timing, parse_id};
use xsec_ike::ike::endpoint::Endpoint;
use xsec_ike::ike::proposal::Suite;
use xsec_ike::ike::sa::RandomSpis;
use xsec_ike::ike::ts::prefix;
use xsec_ike::ike::wire::Message;

fn conn(local: &str, remote: Option<&str>, id: &str, proposals: &[&str]) -> Arc<Connection> {
    Arc::new(Connection {
        name: "fuzz".into(),
        local_addr: Some(local.parse().expect("ip")),
        remote_addr: remote.map(|r| r.parse().expect("ip")),
        local_id: parse_id(id).expect("id"),
        remote_id: None,
        psk: zeroize::Zeroizing::new(b"fuzzing secret".to_vec()),
        ike: proposals
            .iter()
            .map(|p| Suite::parse(p, true).expect("proposal"))
            .collect(),
        children: vec![ChildConfig {
            name: "net".into(),
            esp: vec![Suite::parse("aes128gcm16", false).expect("esp")],
            local_ts: vec![prefix("10.2.0.0".parse().expect("ip"), 24).expect("ts")],
            remote_ts: vec![prefix("10.1.0.0".parse().expect("ip"), 24).expect("ts")],
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
}

const PROPOSALS: [&str; 3] = [
    "aes128gcm16-prfsha256-x25519",
    "aes256-sha256-modp2048",
    "chacha20poly1305-prfsha256-ecp256",
];

/// Seeds: real IKE_SA_INIT requests (each proposal, and one offering all of them), with
/// and without the COOKIE threshold.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let now = Instant::now();
    for (i, p) in PROPOSALS.iter().enumerate() {
        let c = conn("10.0.0.1", Some("10.0.0.2"), "gw-a.example", &[p]);
        let mut e = Endpoint::new(vec![c], Timing::default(), now);
        e.initiate(now, "fuzz", 500, &mut RandomSpis)
            .expect("initiate");
        let t = e.poll_transmit().expect("IKE_SA_INIT");
        for mode in [0u8, 1] {
            let mut d = vec![mode];
            d.extend_from_slice(&t.data);
            out.push((format!("init-{i}-{mode}"), d));
        }
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
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    let conn = conn("10.0.0.2", None, "gw-b.example", &PROPOSALS);
    let now = Instant::now();
    let mut e = Endpoint::new(vec![conn], Timing::default(), now);
    e.cookie_threshold = if mode & 1 == 0 { 0 } else { usize::MAX };
    let local = "10.0.0.2:500".parse().expect("addr");
    let remote = "10.0.0.1:500".parse().expect("addr");
    e.handle(now, local, remote, msg, &mut RandomSpis);
    // a retransmission of the same datagram makes no second SA
    e.handle(now, local, remote, msg, &mut RandomSpis);
    assert!(e.sas().count() <= 1);
    while let Some(t) = e.poll_transmit() {
        Message::parse(&t.data).expect("what the responder sends decodes");
    }
    e.handle_timeout(
        now + Timing::default().half_open_timeout * 2,
        &mut RandomSpis,
    );
    assert_eq!(e.sas().count(), 0, "half-open SAs expire");
}
