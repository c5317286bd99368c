//! The IKE examples under `examples/`: both ends load (with the secrets file beside them),
//! are mirror images of each other, and negotiate with each other in memory to the same
//! Child SA keys, with the algorithms the comments promise.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xsec_ike::config::{StartAction, load};
use xsec_ike::ike::endpoint::Endpoint;
use xsec_ike::ike::sa::{Event, RandomSpis};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn tk800_pair_loads_mirrors_and_negotiates() {
    let a = load(&example("tk800-ike-a.toml")).unwrap_or_else(|e| panic!("{e}"));
    let b = load(&example("tk800-ike-b.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(a.warnings.is_empty() && b.warnings.is_empty());
    let (ca, cb) = (&a.conns[0].conn, &b.conns[0].conn);
    assert_eq!(ca.local_addr, cb.remote_addr);
    assert_eq!(ca.remote_addr, cb.local_addr);
    assert_eq!(Some(&ca.local_id), cb.remote_id.as_ref());
    assert_eq!(ca.ike, cb.ike);
    assert_eq!(ca.children[0].local_ts, cb.children[0].remote_ts);
    assert_eq!(ca.children[0].remote_ts, cb.children[0].local_ts);
    assert_eq!(ca.children[0].esp, cb.children[0].esp);
    assert_eq!(ca.dpd_delay.map(|d| d.as_secs()), Some(30));
    let w = a.conns[0].watchdog.as_ref().expect("A's ICMP detect");
    assert_eq!(
        (w.host.to_string(), w.source.map(|s| s.to_string())),
        ("192.168.20.1".into(), Some("192.168.10.1".into()))
    );
    let within = |ts: &xsec_ike::ike::wire::TrafficSelector, a: std::net::IpAddr| {
        ts.start <= a && a <= ts.end
    };
    assert!(
        within(&ca.children[0].remote_ts[0], w.host)
            && within(&ca.children[0].local_ts[0], w.source.expect("a source")),
        "the probe goes through the child's selectors"
    );
    assert_eq!(
        (w.interval.as_secs(), w.timeout.as_secs(), w.tries),
        (10, 2, 3)
    );
    assert_eq!(a.conns[0].children[0].start_action, StartAction::Start);
    assert_eq!(b.conns[0].children[0].start_action, StartAction::Trap);
    assert_eq!(
        &ca.psk[..],
        &cb.psk[..],
        "the secrets file gives both the same key"
    );

    let now = Instant::now();
    let mut ea = Endpoint::new(vec![ca.clone()], a.timing, now);
    let mut eb = Endpoint::new(vec![cb.clone()], b.timing, now);
    ea.initiate(now, "branch", 500, &mut RandomSpis)
        .expect("initiate");
    let mut ups = (vec![], vec![]);
    for _ in 0..10 {
        while let Some(t) = ea.poll_transmit() {
            eb.handle(now, t.remote, t.local, &t.data, &mut RandomSpis);
        }
        while let Some(t) = eb.poll_transmit() {
            ea.handle(now, t.remote, t.local, &t.data, &mut RandomSpis);
        }
        while let Some(e) = ea.poll_event() {
            if let Event::ChildUp(c) = e {
                ups.0.push(c);
            }
        }
        while let Some(e) = eb.poll_event() {
            if let Event::ChildUp(c) = e {
                ups.1.push(c);
            }
        }
    }
    let (x, y) = (&ups.0[0], &ups.1[0]);
    assert_eq!(x.alg.to_string(), "aes256-sha256");
    assert_eq!(x.spi_out, y.spi_in);
    assert_eq!(x.keys_out.encr[..], y.keys_in.encr[..]);
    assert_eq!(x.keys_out.integ[..], y.keys_in.integ[..]);
    let sa = ea.sas().next().expect("IKE SA");
    assert_eq!(
        sa.alg.map(|a| a.to_string()).as_deref(),
        Some("aes256-sha256-prfsha256-modp2048")
    );
}
