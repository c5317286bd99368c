//! xsec-ike against xsec-ike, without sockets: two endpoints exchange datagrams through an
//! in-memory network (optionally with a NAT, loss, or a clock that jumps), and every
//! exchange is checked from both sides, down to the Child SA keys.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xsec_ike::ike::config::{ChildConfig, Connection, DpdAction, Mode, Timing, parse_id};
use xsec_ike::ike::endpoint::Endpoint;
use xsec_ike::ike::proposal::{Encr, Suite};
use xsec_ike::ike::sa::{ChildSaUp, Event, RandomSpis, Reason, State, Transmit};
use xsec_ike::ike::ts::prefix;
use xsec_ike::ike::wire::{Message, NotifyType, Payload};
use zeroize::Zeroizing;

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";

struct Side {
    ike: Vec<&'static str>,
    esp: Vec<&'static str>,
    psk: &'static str,
    mode: Mode,
    local_net: &'static str,
    remote_net: &'static str,
    dpd: Option<Duration>,
    dpd_action: DpdAction,
    child_rekey: Option<Duration>,
    reauth: Option<Duration>,
}

impl Default for Side {
    fn default() -> Self {
        Side {
            ike: vec!["aes128gcm16-prfsha256-x25519"],
            esp: vec!["aes128gcm16"],
            psk: "a shared secret of some length",
            mode: Mode::Tunnel,
            local_net: "10.1.0.0/24",
            remote_net: "10.2.0.0/24",
            dpd: None,
            dpd_action: DpdAction::Clear,
            child_rekey: None,
            reauth: None,
        }
    }
}

fn net(s: &str) -> xsec_ike::ike::wire::TrafficSelector {
    let (a, l) = s.split_once('/').expect("prefix");
    prefix(a.parse().expect("ip"), l.parse().expect("len")).expect("prefix")
}

fn conn(me: &str, peer: &str, my_id: &str, peer_id: &str, s: &Side) -> Arc<Connection> {
    Arc::new(Connection {
        name: "gw-gw".into(),
        local_addr: Some(me.parse().expect("ip")),
        remote_addr: Some(peer.parse().expect("ip")),
        local_id: parse_id(my_id).expect("id"),
        remote_id: Some(parse_id(peer_id).expect("id")),
        psk: Zeroizing::new(s.psk.as_bytes().to_vec()),
        ike: s
            .ike
            .iter()
            .map(|p| Suite::parse(p, true).expect("ike"))
            .collect(),
        children: vec![ChildConfig {
            name: "net-net".into(),
            esp: s
                .esp
                .iter()
                .map(|p| Suite::parse(p, false).expect("esp"))
                .collect(),
            local_ts: vec![net(s.local_net)],
            remote_ts: vec![net(s.remote_net)],
            mode: s.mode,
            rekey_time: s.child_rekey,
            life_time: None,
            auto_start: true,
        }],
        dpd_delay: s.dpd,
        dpd_action: s.dpd_action,
        rekey_time: None,
        reauth_time: s.reauth,
    })
}

fn timing() -> Timing {
    Timing {
        retransmit_timeout: Duration::from_millis(500),
        retransmit_base: 2.0,
        retransmit_tries: 3,
        ..Timing::default()
    }
}

/// Two endpoints and the wire between them.
struct Net {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    /// A's packets leave from this address and port (a NAT in front of A).
    nat: Option<SocketAddr>,
    /// Drop the next N datagrams from B to A / A to B.
    drop_b_to_a: usize,
    drop_a_to_b: usize,
    /// Everything that crossed, (from A?, bytes).
    wire: Vec<(bool, Vec<u8>)>,
    /// Deliver nothing (the peer is gone).
    cut: bool,
}

impl Net {
    fn new(a: Side, b: Side) -> Net {
        let now = Instant::now();
        let ca = conn(A, B, "gw-a.example", "gw-b.example", &a);
        let cb = conn(B, A, "gw-b.example", "gw-a.example", &b);
        Net {
            a: Endpoint::new(vec![ca], timing(), now),
            b: Endpoint::new(vec![cb], timing(), now),
            now,
            events_a: vec![],
            events_b: vec![],
            nat: None,
            drop_b_to_a: 0,
            drop_a_to_b: 0,
            wire: vec![],
            cut: false,
        }
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.a.poll_transmit() {
            moved = true;
            self.wire.push((true, t.data.clone()));
            if self.cut {
                continue;
            }
            if self.drop_a_to_b > 0 {
                self.drop_a_to_b -= 1;
                continue;
            }
            let from = match self.nat {
                Some(n) => SocketAddr::new(
                    n.ip(),
                    if t.local.port() == 500 {
                        n.port()
                    } else {
                        n.port() + 1
                    },
                ),
                None => t.local,
            };
            let to = t.remote;
            self.b.handle(self.now, to, from, &t.data, &mut RandomSpis);
        }
        while let Some(t) = self.b.poll_transmit() {
            moved = true;
            self.wire.push((false, t.data.clone()));
            if self.cut {
                continue;
            }
            if self.drop_b_to_a > 0 {
                self.drop_b_to_a -= 1;
                continue;
            }
            let Transmit {
                local,
                remote,
                data,
            } = t;
            // through the NAT back to A's real address
            let to = match self.nat {
                Some(n) if remote.ip() == n.ip() => SocketAddr::new(
                    A.parse().expect("ip"),
                    if remote.port() == n.port() { 500 } else { 4500 },
                ),
                _ => remote,
            };
            self.a.handle(self.now, to, local, &data, &mut RandomSpis);
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
        moved
    }

    fn run(&mut self) {
        for _ in 0..100 {
            if !self.step() {
                return;
            }
        }
        panic!("the exchange does not settle");
    }

    /// Advance the virtual clock to the next timer, `n` times, delivering in between.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next else { return };
            self.now = self.now.max(t);
            self.a.handle_timeout(self.now, &mut RandomSpis);
            self.b.handle_timeout(self.now, &mut RandomSpis);
            self.run();
        }
    }

    fn connect(&mut self) -> u64 {
        let id = self
            .a
            .initiate(self.now, "gw-gw", 500, &mut RandomSpis)
            .expect("initiate");
        self.run();
        id
    }
}

fn child_ups(ev: &[Event]) -> Vec<&ChildSaUp> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildUp(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

fn ike_up(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::IkeUp { .. }))
        .count()
}

/// Both sides hold the same Child SA: each one's outbound SPI and keys are the other's
/// inbound ones.
fn assert_child_pair(a: &ChildSaUp, b: &ChildSaUp) {
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.alg, b.alg);
    assert_eq!(a.keys_out.encr[..], b.keys_in.encr[..]);
    assert_eq!(a.keys_out.integ[..], b.keys_in.integ[..]);
    assert_eq!(a.keys_in.encr[..], b.keys_out.encr[..]);
    assert_eq!(a.keys_in.integ[..], b.keys_out.integ[..]);
    assert_ne!(a.keys_in.encr[..], a.keys_out.encr[..]);
    assert_eq!(a.keys_in.encr.len(), a.alg.encr.keymat_len());
    assert_eq!(a.local_ts, b.remote_ts);
    assert_eq!(a.remote_ts, b.local_ts);
}

#[test]
fn establishes_with_each_proposal_and_derives_the_same_child_keys() {
    for (ike, esp) in [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("aes256-sha256-modp2048", "aes256-sha256"),
        ("chacha20poly1305-prfsha256-ecp256", "chacha20poly1305"),
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn"),
        ("aes128-sha512-x25519", "aes128-sha1"),
    ] {
        let mut n = Net::new(
            Side {
                ike: vec![ike],
                esp: vec![esp],
                ..Side::default()
            },
            Side {
                ike: vec![ike],
                esp: vec![esp],
                local_net: "10.2.0.0/24",
                remote_net: "10.1.0.0/24",
                ..Side::default()
            },
        );
        n.connect();
        assert_eq!(ike_up(&n.events_a), 1, "{ike}: A up");
        assert_eq!(ike_up(&n.events_b), 1, "{ike}: B up");
        let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
        assert_eq!((ca.len(), cb.len()), (1, 1), "{ike}/{esp}");
        assert_child_pair(ca[0], cb[0]);
        assert_eq!(ca[0].alg.to_string(), esp);
        assert!(!ca[0].encap, "no NAT, no encapsulation");
        // two exchanges, four messages, nothing retransmitted
        assert_eq!(n.wire.len(), 4, "{ike}");
        let sa = n.a.sas().next().expect("sa");
        assert_eq!(sa.state, State::Established);
        let want = Suite::parse(ike, true).expect("ike").to_string();
        assert_eq!(sa.alg.map(|a| a.to_string()), Some(want));
    }
}

#[test]
fn wrong_psk_is_authentication_failed_and_installs_nothing() {
    let mut n = Net::new(
        Side::default(),
        Side {
            psk: "another secret",
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.connect();
    assert!(child_ups(&n.events_a).is_empty());
    assert!(child_ups(&n.events_b).is_empty());
    assert_eq!(ike_up(&n.events_a) + ike_up(&n.events_b), 0);
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::PeerError(NotifyType::AUTHENTICATION_FAILED),
            ..
        }
    )));
    assert!(
        n.events_b
            .iter()
            .any(|e| matches!(e, Event::IkeDown { .. }))
    );
    assert_eq!(
        n.a.sas().count() + n.b.sas().count(),
        0,
        "no SA left behind"
    );
}

#[test]
fn invalid_ke_payload_round_then_success() {
    let mut n = Net::new(
        Side {
            ike: vec!["aes128gcm16-prfsha256-x25519-modp2048"],
            ..Side::default()
        },
        Side {
            ike: vec!["aes128gcm16-prfsha256-modp2048"],
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.connect();
    assert_eq!(ike_up(&n.events_a), 1);
    // the first answer is INVALID_KE_PAYLOAD naming group 14
    let first_answer = Message::parse(&n.wire[1].1).expect("parse");
    assert!(matches!(&first_answer.payloads[..],
        [Payload::Notify(x)] if x.ty == NotifyType::INVALID_KE_PAYLOAD && x.data == vec![0, 14]));
    assert_eq!(n.wire.len(), 6);
    assert_child_pair(child_ups(&n.events_a)[0], child_ups(&n.events_b)[0]);
    assert_eq!(n.b.stats.init_refused, 1);
}

#[test]
fn cookie_round_when_half_open_limit_reached() {
    let mut n = Net::new(
        Side::default(),
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.b.cookie_threshold = 0;
    n.connect();
    assert_eq!(n.b.stats.cookies_sent, 1);
    assert_eq!(ike_up(&n.events_a), 1);
    assert_eq!(n.wire.len(), 6);
    let second = Message::parse(&n.wire[2].1).expect("parse");
    assert!(matches!(&second.payloads[0], Payload::Notify(x) if x.ty == NotifyType::COOKIE));
    assert_child_pair(child_ups(&n.events_a)[0], child_ups(&n.events_b)[0]);
}

#[test]
fn forged_cookie_is_refused() {
    let mut n = Net::new(Side::default(), Side::default());
    n.b.cookie_threshold = 0;
    n.a.initiate(n.now, "gw-gw", 500, &mut RandomSpis)
        .expect("initiate");
    let t = n.a.poll_transmit().expect("init");
    // put a made-up COOKIE in front
    let m = Message::parse(&t.data).expect("parse");
    let mut p = vec![Payload::Notify(xsec_ike::ike::wire::Notify::new(
        NotifyType::COOKIE,
        vec![0; 33],
    ))];
    p.extend(m.payloads);
    let forged = Message::encode(&m.header, &p);
    n.b.handle(n.now, t.remote, t.local, &forged, &mut RandomSpis);
    assert_eq!(n.b.stats.dropped_bad_cookie, 1);
    assert_eq!(n.b.sas().count(), 0);
}

#[test]
fn lost_auth_response_is_answered_from_cache_once() {
    let mut n = Net::new(
        Side::default(),
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.a.initiate(n.now, "gw-gw", 500, &mut RandomSpis)
        .expect("initiate");
    n.step(); // IKE_SA_INIT request and response; A queues IKE_AUTH
    n.drop_b_to_a = 1;
    n.run(); // B answers IKE_AUTH, the answer is lost
    assert_eq!(ike_up(&n.events_b), 1);
    assert_eq!(ike_up(&n.events_a), 0);
    n.tick(1); // A retransmits, B answers from its cache
    assert_eq!(ike_up(&n.events_a), 1);
    let b_sa = n.b.sas().next().expect("sa");
    assert_eq!(b_sa.stats.retransmits_answered, 1);
    assert_eq!(n.a.sas().next().expect("sa").stats.retransmits_sent, 1);
    // B installed its Child SA once
    assert_eq!(child_ups(&n.events_b).len(), 1);
    assert_child_pair(child_ups(&n.events_a)[0], child_ups(&n.events_b)[0]);
}

#[test]
fn retransmits_give_up_after_the_limit() {
    let mut n = Net::new(Side::default(), Side::default());
    n.cut = true;
    n.connect();
    n.tick(10);
    // 1 + 3 retransmits of IKE_SA_INIT, then the SA is gone
    assert_eq!(n.wire.len(), 4);
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::Timeout,
            ..
        }
    )));
    assert_eq!(n.a.sas().count(), 0);
}

#[test]
fn dpd_finds_a_dead_peer_and_removes_the_children() {
    let mut n = Net::new(
        Side {
            dpd: Some(Duration::from_secs(10)),
            ..Side::default()
        },
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.connect();
    assert_eq!(child_ups(&n.events_a).len(), 1);
    // a live peer answers the liveness check
    n.tick(1);
    assert_eq!(n.wire.len(), 6);
    assert!(
        !n.events_a
            .iter()
            .any(|e| matches!(e, Event::IkeDown { .. }))
    );
    n.cut = true;
    n.tick(10);
    let spi = child_ups(&n.events_a)[0].spi_in;
    assert!(n.events_a.iter().any(
        |e| matches!(e, Event::ChildDown { spi_in, reason: Reason::DeadPeer, .. } if *spi_in == spi)
    ));
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::DeadPeer,
            ..
        }
    )));
    assert_eq!(n.a.sas().count(), 0);
}

#[test]
fn delete_from_either_side() {
    for from_a in [true, false] {
        let mut n = Net::new(
            Side::default(),
            Side {
                local_net: "10.2.0.0/24",
                remote_net: "10.1.0.0/24",
                ..Side::default()
            },
        );
        n.connect();
        let (ida, idb) = (
            n.a.sas().next().expect("a").id(),
            n.b.sas().next().expect("b").id(),
        );
        if from_a {
            n.a.terminate(n.now, ida, &mut RandomSpis);
        } else {
            n.b.terminate(n.now, idb, &mut RandomSpis);
        }
        n.run();
        for ev in [&n.events_a, &n.events_b] {
            assert!(ev.iter().any(|e| matches!(e, Event::ChildDown { .. })));
            assert!(ev.iter().any(|e| matches!(e, Event::IkeDown { .. })));
        }
        assert_eq!(n.a.sas().count() + n.b.sas().count(), 0);
    }
}

#[test]
fn nat_is_detected_and_ike_moves_to_4500() {
    let mut n = Net::new(
        Side::default(),
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.nat = Some("10.0.0.1:31000".parse().expect("addr"));
    // A's own address is private behind the NAT
    n.a = Endpoint::new(
        vec![conn(
            "172.16.0.2",
            B,
            "gw-a.example",
            "gw-b.example",
            &Side::default(),
        )],
        timing(),
        n.now,
    );
    n.connect();
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert!(ca[0].encap && cb[0].encap);
    let a = n.a.sas().next().expect("a");
    let b = n.b.sas().next().expect("b");
    assert!(a.nat_local && !a.nat_remote);
    assert!(b.nat_remote && !b.nat_local);
    assert_eq!(a.remote.port(), 4500);
    assert_eq!(
        b.remote,
        "10.0.0.1:31001".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(cb[0].remote, b.remote);
}

#[test]
fn transport_mode_and_narrowing() {
    // A asks for 10.0.0.0/8 <-> 10.2.0.0/16; B allows only 10.1.0.0/24 <-> 10.2.0.0/24
    let mut n = Net::new(
        Side {
            local_net: "10.0.0.0/8",
            remote_net: "10.2.0.0/16",
            mode: Mode::Transport,
            ..Side::default()
        },
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            mode: Mode::Transport,
            ..Side::default()
        },
    );
    n.connect();
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!(ca[0].mode, Mode::Transport);
    assert_eq!(cb[0].mode, Mode::Transport);
    assert_eq!(ca[0].local_ts, vec![net("10.1.0.0/24")]);
    assert_eq!(ca[0].remote_ts, vec![net("10.2.0.0/24")]);
    assert_child_pair(ca[0], cb[0]);
}

#[test]
fn unacceptable_selectors_fail_the_child_not_the_ike_sa() {
    let mut n = Net::new(
        Side::default(),
        Side {
            local_net: "192.168.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.connect();
    assert_eq!(ike_up(&n.events_a), 1);
    assert!(child_ups(&n.events_a).is_empty() && child_ups(&n.events_b).is_empty());
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::ChildFailed {
            reason: Reason::PeerError(NotifyType::TS_UNACCEPTABLE),
            ..
        }
    )));
}

#[test]
fn no_common_proposal() {
    let mut n = Net::new(
        Side::default(),
        Side {
            ike: vec!["aes256-sha256-modp2048"],
            ..Side::default()
        },
    );
    n.connect();
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::PeerError(NotifyType::NO_PROPOSAL_CHOSEN),
            ..
        }
    )));
    assert_eq!(n.b.sas().count(), 0);
}

#[test]
fn tampered_replayed_and_out_of_window_messages_are_counted_drops() {
    let mut n = Net::new(
        Side {
            dpd: Some(Duration::from_secs(5)),
            ..Side::default()
        },
        Side {
            local_net: "10.2.0.0/24",
            remote_net: "10.1.0.0/24",
            ..Side::default()
        },
    );
    n.connect();
    n.tick(1); // a DPD exchange: wire[4] is A's request (message ID 2)
    let req = n.wire[4].1.clone();
    let from: SocketAddr = SocketAddr::new(IpAddr::from([10, 0, 0, 1]), 500);
    let to: SocketAddr = SocketAddr::new(IpAddr::from([10, 0, 0, 2]), 500);
    // replayed: answered from the cache, not processed again
    n.b.handle(n.now, to, from, &req, &mut RandomSpis);
    // tampered: a flipped bit in the encrypted part, with a fresh message ID
    let mut bad = req.clone();
    bad[20..24].copy_from_slice(&3u32.to_be_bytes());
    let last = bad.len() - 1;
    bad[last] ^= 1;
    n.b.handle(n.now, to, from, &bad, &mut RandomSpis);
    // too far ahead
    let mut ahead = req.clone();
    ahead[20..24].copy_from_slice(&9u32.to_be_bytes());
    n.b.handle(n.now, to, from, &ahead, &mut RandomSpis);
    // unknown SPI, and garbage
    let mut unknown = req.clone();
    unknown[8] ^= 0xff;
    n.b.handle(n.now, to, from, &unknown, &mut RandomSpis);
    n.b.handle(n.now, to, from, &req[..40], &mut RandomSpis);
    let s = n.b.sas().next().expect("b").stats;
    assert_eq!(s.retransmits_answered, 1);
    assert_eq!(s.dropped_integrity, 1);
    assert_eq!(s.dropped_message_id, 1);
    assert_eq!(n.b.stats.dropped_unknown_spi, 1);
    assert_eq!(n.b.stats.dropped_malformed, 1);
    // and the SA still works: the next DPD round trips
    while n.b.poll_transmit().is_some() {}
    n.tick(1);
    assert_eq!(n.a.sas().next().expect("a").state, State::Established);
    assert!(
        !n.events_a
            .iter()
            .any(|e| matches!(e, Event::IkeDown { .. }))
    );
}

#[test]
fn encr_names_round_trip() {
    assert_eq!(Encr::AesGcm16(256).name(), "aes256gcm16");
}

fn b_side() -> Side {
    Side {
        local_net: "10.2.0.0/24",
        remote_net: "10.1.0.0/24",
        ..Side::default()
    }
}

fn children_of(e: &Endpoint) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = e
        .sas()
        .flat_map(|s| s.children.iter().map(|c| (c.spi_in, c.spi_out)))
        .collect();
    v.sort();
    v
}

fn switches(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::ChildSwitch { .. }))
        .count()
}

fn downs(ev: &[Event]) -> Vec<u32> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildDown { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

/// A rekey of a Child SA, from either side, with and without PFS: the new pair's keys
/// agree, the initiator moves its traffic at once, the responder when the old SA is
/// deleted, and the old inbound SAs go after the grace period.
#[test]
fn child_rekey_make_before_break_both_ways() {
    for (from_a, esp) in [
        (true, "aes128gcm16"),
        (false, "aes256-sha256-x25519"),
        (true, "chacha20poly1305-ecp256"),
    ] {
        let mut n = Net::new(
            Side {
                esp: vec![esp],
                ..Side::default()
            },
            Side {
                esp: vec![esp],
                ..b_side()
            },
        );
        n.connect();
        let old_a = child_ups(&n.events_a)[0].spi_in;
        let old_b = child_ups(&n.events_b)[0].spi_in;
        let (ida, idb) = (
            n.a.sas().next().expect("a").id(),
            n.b.sas().next().expect("b").id(),
        );
        if from_a {
            assert!(n.a.rekey(n.now, ida, Some(old_a), &mut RandomSpis));
        } else {
            assert!(n.b.rekey(n.now, idb, Some(old_b), &mut RandomSpis));
        }
        n.run();
        let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
        assert_eq!((ca.len(), cb.len()), (2, 2), "{esp}");
        assert_child_pair(ca[1], cb[1]);
        assert_eq!(ca[1].replaces, Some(old_a));
        assert_eq!(cb[1].replaces, Some(old_b));
        let (init, resp) = if from_a {
            (ca[1], cb[1])
        } else {
            (cb[1], ca[1])
        };
        assert!(init.outbound_now && !resp.outbound_now, "{esp}");
        // the responder moved its traffic when the old SA was deleted
        let resp_events = if from_a { &n.events_b } else { &n.events_a };
        assert_eq!(switches(resp_events), 1);
        // new keys, not the old ones
        assert_ne!(ca[1].keys_in.encr[..], ca[0].keys_in.encr[..]);
        if esp.contains("x25519") || esp.contains("ecp") {
            assert!(ca[1].alg.group.is_some(), "PFS used");
        }
        let new_a = (ca[1].spi_in, ca[1].spi_out);
        let new_b = (cb[1].spi_in, cb[1].spi_out);
        // the old inbound SAs stay until the grace period is over
        assert!(downs(&n.events_a).is_empty() && downs(&n.events_b).is_empty());
        n.tick(3);
        assert_eq!(downs(&n.events_a), vec![old_a], "{esp}");
        assert_eq!(downs(&n.events_b), vec![old_b], "{esp}");
        assert_eq!(children_of(&n.a), vec![new_a]);
        assert_eq!(children_of(&n.b), vec![new_b]);
    }
}

/// A PFS group the responder does not take: INVALID_KE_PAYLOAD in CREATE_CHILD_SA, and
/// the initiator retries with the group asked for.
#[test]
fn child_rekey_invalid_ke_payload_retry() {
    let mut n = Net::new(
        Side {
            esp: vec!["aes128gcm16-x25519-modp2048"],
            ..Side::default()
        },
        Side {
            esp: vec!["aes128gcm16-modp2048"],
            ..b_side()
        },
    );
    n.connect();
    let old = child_ups(&n.events_a)[0].spi_in;
    let id = n.a.sas().next().expect("a").id();
    n.a.rekey(n.now, id, Some(old), &mut RandomSpis);
    n.run();
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!(ca.len(), 2);
    assert_child_pair(ca[1], cb[1]);
    assert_eq!(ca[1].alg.group.map(|g| g.id()), Some(14));
    assert!(
        !n.events_a
            .iter()
            .any(|e| matches!(e, Event::ChildFailed { .. }))
    );
}

/// The Child SAs' `rekey_time` rekeys them without anyone asking.
#[test]
fn child_rekey_on_lifetime() {
    let mut n = Net::new(
        Side {
            child_rekey: Some(Duration::from_secs(60)),
            ..Side::default()
        },
        b_side(),
    );
    n.connect();
    for _ in 0..3 {
        n.tick(1);
    }
    assert!(
        child_ups(&n.events_a).len() >= 2,
        "rekeyed within its lifetime"
    );
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_child_pair(ca[1], cb[1]);
}

/// Both sides rekey the same Child SA at once (RFC 7296 §2.8.1): one new Child SA
/// survives, the same on both sides, and the old one is gone.
#[test]
fn simultaneous_child_rekey_leaves_one_pair() {
    for _ in 0..8 {
        let mut n = Net::new(Side::default(), b_side());
        n.connect();
        let old_a = child_ups(&n.events_a)[0].spi_in;
        let old_b = child_ups(&n.events_b)[0].spi_in;
        let (ida, idb) = (
            n.a.sas().next().expect("a").id(),
            n.b.sas().next().expect("b").id(),
        );
        n.a.rekey(n.now, ida, Some(old_a), &mut RandomSpis);
        n.b.rekey(n.now, idb, Some(old_b), &mut RandomSpis);
        n.run();
        n.tick(4);
        let (a, b) = (children_of(&n.a), children_of(&n.b));
        assert_eq!(a.len(), 1, "A keeps one Child SA: {a:?}");
        assert_eq!(b.len(), 1, "B keeps one Child SA: {b:?}");
        assert_eq!(a[0], (b[0].1, b[0].0), "the same pair on both sides");
        assert!(a[0].0 != old_a && b[0].0 != old_b, "the old pair is gone");
        // what A sends to is what B receives on, and its keys agree
        let ua = child_ups(&n.events_a)
            .into_iter()
            .find(|c| c.spi_in == a[0].0)
            .expect("A's up");
        let ub = child_ups(&n.events_b)
            .into_iter()
            .find(|c| c.spi_in == b[0].0)
            .expect("B's up");
        assert_child_pair(ua, ub);
        // everything not kept was reported down on each side
        let kept_a = a[0].0;
        let ups_a: Vec<u32> = child_ups(&n.events_a)
            .iter()
            .map(|c| c.spi_in)
            .filter(|s| *s != kept_a)
            .collect();
        let mut d = downs(&n.events_a);
        d.sort();
        let mut u = ups_a;
        u.sort();
        assert_eq!(d, u, "A: every other Child SA went down");
    }
}

/// Both ends connected: the net, A's and B's IKE SA, and their Child SAs.
type Kids = (Vec<(u32, u32)>, Vec<(u32, u32)>);
fn connected() -> (Net, u64, u64, Kids) {
    let mut n = Net::new(Side::default(), b_side());
    n.connect();
    let (ida, idb) = (
        n.a.sas().next().expect("a").id(),
        n.b.sas().next().expect("b").id(),
    );
    let kids = (children_of(&n.a), children_of(&n.b));
    (n, ida, idb, kids)
}

/// A Child SA rekey from A over IKE SA `ike`, the connection's second Child SA up: the
/// same pair on both sides.
fn child_rekey_over(n: &mut Net, ike: u64) {
    let spi = children_of(&n.a)[0].0;
    assert!(n.a.rekey(n.now, ike, Some(spi), &mut RandomSpis));
    n.run();
    assert_eq!(child_ups(&n.events_a).len(), 2);
    assert_child_pair(child_ups(&n.events_a)[1], child_ups(&n.events_b)[1]);
}

/// An IKE SA rekey from either side: a new IKE SA with the Child SAs, the old one
/// deleted as "rekeyed", and the new one works (a Child SA rekey over it).
#[test]
fn ike_rekey_both_ways_keeps_the_children() {
    for from_a in [true, false] {
        let (mut n, ida, idb, kids) = connected();
        if from_a {
            assert!(n.a.rekey(n.now, ida, None, &mut RandomSpis));
        } else {
            assert!(n.b.rekey(n.now, idb, None, &mut RandomSpis));
        }
        n.run();
        assert_eq!(n.a.sas().count(), 1, "A: one IKE SA after the rekey");
        assert_eq!(n.b.sas().count(), 1);
        let (na, nb) = (n.a.sas().next().expect("a"), n.b.sas().next().expect("b"));
        assert_ne!(na.id(), ida);
        assert_ne!(nb.id(), idb);
        assert_eq!(na.state, State::Established);
        assert_eq!(
            (children_of(&n.a), children_of(&n.b)),
            kids,
            "the Child SAs moved over"
        );
        for ev in [&n.events_a, &n.events_b] {
            assert!(ev.iter().any(|e| matches!(e, Event::IkeRekeyed { .. })));
            assert!(ev.iter().any(|e| matches!(
                e,
                Event::IkeDown {
                    reason: Reason::Local("rekeyed"),
                    ..
                }
            )));
            assert!(downs(ev).is_empty(), "no Child SA went down");
        }
        // the new IKE SA carries a Child SA rekey
        let nid = na.id();
        child_rekey_over(&mut n, nid);
    }
}

/// Both ends rekey the IKE SA at once (§2.8.2): each refuses the other's with
/// TEMPORARY_FAILURE (its own is under way), both try again at random moments, and the first
/// wins: one new IKE SA on each side, the same one, with the Child SAs, none of them down.
#[test]
fn simultaneous_ike_rekeys_leave_one_ike_sa_with_the_children() {
    for _ in 0..8 {
        let (mut n, ida, idb, kids) = connected();
        assert!(n.a.rekey(n.now, ida, None, &mut RandomSpis));
        assert!(n.b.rekey(n.now, idb, None, &mut RandomSpis));
        n.run();
        // both were refused: nothing changed yet
        assert_eq!((n.a.sas().count(), n.b.sas().count()), (1, 1));
        assert_eq!(n.a.sas().next().expect("a").id(), ida);
        let refused = n
            .wire
            .iter()
            .filter(|(_, d)| d.len() > 28 && d[18] == 36 && d[19] & 0x20 != 0)
            .count();
        assert_eq!(refused, 2, "two CREATE_CHILD_SA answers (the refusals)");
        n.tick(6);
        assert_eq!(n.a.sas().count(), 1, "A: one IKE SA");
        assert_eq!(n.b.sas().count(), 1, "B: one IKE SA");
        let (na, nb) = (n.a.sas().next().expect("a"), n.b.sas().next().expect("b"));
        assert!(na.id() != ida && nb.id() != idb, "rekeyed");
        assert_eq!(
            (na.spi_i, na.spi_r),
            (nb.spi_i, nb.spi_r),
            "the same IKE SA on both sides"
        );
        assert_eq!(
            (children_of(&n.a), children_of(&n.b)),
            kids,
            "the Child SAs moved over"
        );
        assert!(downs(&n.events_a).is_empty() && downs(&n.events_b).is_empty());
        // and it works: a Child SA rekey over it
        let nid = na.id();
        child_rekey_over(&mut n, nid);
    }
}

/// Deleting the IKE SA while an old Child SA waits out its grace period reports that one
/// down too: nothing stays installed.
#[test]
fn terminate_during_the_grace_period_reports_every_child_down() {
    let mut n = Net::new(Side::default(), b_side());
    n.connect();
    let old = child_ups(&n.events_a)[0].spi_in;
    let id = n.a.sas().next().expect("a").id();
    n.a.rekey(n.now, id, Some(old), &mut RandomSpis);
    n.run();
    let new = child_ups(&n.events_a)[1].spi_in;
    assert!(
        downs(&n.events_a).is_empty(),
        "the old one is still in its grace period"
    );
    n.a.terminate(n.now, id, &mut RandomSpis);
    n.run();
    let mut d = downs(&n.events_a);
    d.sort();
    let mut want = vec![old, new];
    want.sort();
    assert_eq!(d, want);
    assert_eq!(downs(&n.events_b).len(), 2);
}

/// A connection with two children that both start: the first rides in IKE_AUTH, the second
/// follows in a CREATE_CHILD_SA; a third, not started, comes up when asked
/// (`initiate_child`, as an ACQUIRE does), over the same IKE SA.
#[test]
fn further_children_in_create_child_sa() {
    let two = |me: &str, peer: &str, my: &str, their: &str, nets: [(&str, &str); 3]| {
        let base = conn(me, peer, my, their, &Side::default());
        let mut children = vec![];
        for (i, (l, r)) in nets.iter().enumerate() {
            let mut c = base.children[0].clone();
            c.name = ["net-net", "mgmt", "backup"][i].into();
            c.local_ts = vec![net(l)];
            c.remote_ts = vec![net(r)];
            c.auto_start = i < 2;
            children.push(c);
        }
        Arc::new(Connection {
            name: base.name.clone(),
            local_addr: base.local_addr,
            remote_addr: base.remote_addr,
            local_id: base.local_id.clone(),
            remote_id: base.remote_id.clone(),
            psk: base.psk.clone(),
            ike: base.ike.clone(),
            children,
            dpd_delay: None,
            dpd_action: DpdAction::Clear,
            rekey_time: None,
            reauth_time: None,
        })
    };
    let nets_a = [
        ("10.1.0.0/24", "10.2.0.0/24"),
        ("10.1.99.0/24", "10.2.99.0/24"),
        ("10.1.7.0/24", "10.2.7.0/24"),
    ];
    let nets_b = nets_a.map(|(l, r)| (r, l));
    let mut n = Net::new(Side::default(), b_side());
    n.a = Endpoint::new(
        vec![two(A, B, "gw-a.example", "gw-b.example", nets_a)],
        timing(),
        n.now,
    );
    n.b = Endpoint::new(
        vec![two(B, A, "gw-b.example", "gw-a.example", nets_b)],
        timing(),
        n.now,
    );
    n.connect();
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!(
        ca.iter().map(|c| c.child.as_str()).collect::<Vec<_>>(),
        ["net-net", "mgmt"]
    );
    assert_eq!(ca.len(), cb.len());
    for (x, y) in ca.iter().zip(&cb) {
        assert_child_pair(x, y);
    }
    assert_eq!(ca[1].local_ts, vec![net("10.1.99.0/24")]);
    let id =
        n.a.initiate_child(n.now, "gw-gw", Some("backup"), 500, &mut RandomSpis)
            .expect("backup");
    n.run();
    assert_eq!(n.a.sas().count(), 1, "the same IKE SA carries it");
    assert_eq!(n.a.sas().next().expect("sa").id(), id);
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!(ca.len(), 3);
    assert_eq!(ca[2].child, "backup");
    assert_child_pair(ca[2], cb[2]);
    assert!(
        n.a.initiate_child(n.now, "gw-gw", Some("nope"), 500, &mut RandomSpis)
            .is_err()
    );
}

/// INITIAL_CONTACT: a restarted peer's first IKE SA makes the responder drop the IKE SAs it
/// still had with that identity (and their Child SAs), without a DELETE; a second IKE SA
/// from a peer that has one already carries no INITIAL_CONTACT and replaces nothing.
#[test]
fn initial_contact_replaces_the_stale_sas_of_a_restarted_peer() {
    let mut n = Net::new(Side::default(), b_side());
    n.connect();
    let old_b = child_ups(&n.events_b)[0].spi_in;
    // a second IKE SA from the same, running, peer
    n.a.initiate(n.now, "gw-gw", 500, &mut RandomSpis)
        .expect("second");
    n.run();
    assert_eq!(n.b.sas().count(), 2, "no INITIAL_CONTACT the second time");
    assert!(downs(&n.events_b).is_empty());
    // the peer restarts: a fresh endpoint, the first IKE SA again
    n.a = Endpoint::new(
        vec![conn(A, B, "gw-a.example", "gw-b.example", &Side::default())],
        timing(),
        n.now,
    );
    n.a.initiate(n.now, "gw-gw", 500, &mut RandomSpis)
        .expect("after restart");
    n.run();
    assert_eq!(n.b.sas().count(), 1, "the stale IKE SAs are gone");
    assert!(downs(&n.events_b).contains(&old_b));
    assert!(n.events_b.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::Local("replaced (INITIAL_CONTACT)"),
            ..
        }
    )));
    // nothing was sent to the peer about them
    assert!(
        !n.events_a
            .iter()
            .any(|e| matches!(e, Event::IkeDown { .. }))
    );
}

/// `dpd_action = restart`: when DPD finds the peer dead, the connection is initiated again
/// (and comes up once the peer answers).
#[test]
fn dpd_restart_initiates_again() {
    let mut n = Net::new(
        Side {
            dpd: Some(Duration::from_secs(10)),
            dpd_action: DpdAction::Restart,
            ..Side::default()
        },
        b_side(),
    );
    n.connect();
    n.cut = true;
    n.tick(8);
    assert!(n.events_a.iter().any(|e| matches!(
        e,
        Event::IkeDown {
            reason: Reason::DeadPeer,
            ..
        }
    )));
    assert_eq!(n.a.sas().count(), 1, "a new IKE SA is under way");
    assert_ne!(n.a.sas().next().expect("sa").state, State::Established);
    // the peer is back (it lost its state too)
    n.cut = false;
    n.b = Endpoint::new(
        vec![conn(B, A, "gw-b.example", "gw-a.example", &b_side())],
        timing(),
        n.now,
    );
    n.tick(4);
    assert_eq!(ike_up(&n.events_a), 2, "restarted and established");
    assert_eq!(child_ups(&n.events_a).len(), 2);
}

/// `reauth_time`: a new IKE SA with the same Child SAs comes up before the old IKE SA is
/// deleted (make-before-break), on both sides; the new Child SAs' keys agree.
#[test]
fn reauthentication_makes_before_it_breaks() {
    let mut n = Net::new(
        Side {
            reauth: Some(Duration::from_secs(60)),
            ..Side::default()
        },
        b_side(),
    );
    n.connect();
    let old = n.a.sas().next().expect("a").id();
    let old_child = child_ups(&n.events_a)[0].spi_in;
    n.tick(1);
    assert_eq!(n.a.sas().count(), 1, "A: only the new IKE SA is left");
    assert_eq!(n.b.sas().count(), 1, "B: only the new IKE SA is left");
    assert_ne!(n.a.sas().next().expect("a").id(), old);
    let (ca, cb) = (child_ups(&n.events_a), child_ups(&n.events_b));
    assert_eq!(ca.len(), 2);
    assert_child_pair(ca[1], cb[1]);
    // the new Child SA came up before the old one went down, on both sides
    let pos = |ev: &[Event], f: &dyn Fn(&Event) -> bool| ev.iter().position(f).expect("event");
    let up_new = pos(
        &n.events_a,
        &|e| matches!(e, Event::ChildUp(c) if c.spi_in == ca[1].spi_in),
    );
    let down_old = pos(
        &n.events_a,
        &|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == old_child),
    );
    assert!(up_new < down_old);
    assert!(n.events_a.iter().any(|e| matches!(e,
        Event::IkeDown { ike, reason: Reason::Local("reauthenticated"), .. } if *ike == old)));
    // INITIAL_CONTACT came with the first IKE SA only, not with the reauthentication
    assert_eq!(
        n.events_b
            .iter()
            .filter(|e| matches!(e, Event::InitialContact { .. }))
            .count(),
        1
    );
    assert_eq!(children_of(&n.a).len(), 1);
    assert_eq!(children_of(&n.b).len(), 1);
}
