//! The worker's logic on in-memory frames ([`MemIo`]): no sockets, no namespaces, no root.
//! Two gateways' workers (the mirrored `examples/ar410-tunnel-*.toml`, keyed by the same
//! config path as xsecd's) pass packets to each other through the real engine.

use super::io::MemIo;
use super::*;
use crate::control::running::{Running, Source};
use std::path::Path;
use xsec_dataplane::wire::{
    EspPacket, EtherType, EthernetFrame, EthernetRepr, IcmpPacket, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket,
};

const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xbb];
const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xcc];
const HOST_A: [u8; 4] = [192, 168, 10, 5];
const HOST_B: [u8; 4] = [192, 168, 20, 7];
const ELSEWHERE: [u8; 4] = [198, 51, 100, 9];
const FRAMES: usize = 256;

/// One clock for every worker of the tests (a clock counts from its creation).
fn clock() -> MonotonicClock {
    static CLOCK: std::sync::OnceLock<MonotonicClock> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(MonotonicClock::default)
}

/// A gateway's config (an example, plus `extra` policies first) made ready for one worker.
struct Gw {
    setup: WorkerSetup,
    sas: Vec<Sa>,
    heartbeats: Vec<Heartbeat>,
    /// The worker of each SA pair, by name.
    /// SA pair name → worker.
    owner: std::collections::BTreeMap<String, u16>,
    shards: Arc<Shards>,
    _cmds: Sender<Cmd>,
    resolve: Receiver<IpAddr>,
    events: Receiver<(u16, xsec_dataplane::events::Event)>,
}

fn gateway(example: &str, extra: &str) -> Gw {
    gateways(example, extra, 1).pop().expect("one worker")
}

/// `n` workers of one gateway, sharing a handoff mesh.
fn gateways(example: &str, extra: &str, n: usize) -> Vec<Gw> {
    let text = format!("{extra}\n{example}");
    let path = Path::new("test.toml");
    let cfg = crate::config::parse(&text, path).expect("the example parses");
    let running = Running::new(cfg, Source::new(&text, path), n).expect("running config");
    let clock = clock();
    let mut sas = running.initial_sas(clock.now()).expect("SAs");
    let mut heartbeats = running.heartbeats();
    let (mut inboxes, mut pools, mut wakers, mut ends) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let (inbox_tx, inbox) = crossbeam_channel::unbounded();
        let (pool_tx, pool_rx) = crossbeam_channel::unbounded();
        for _ in 0..4 {
            let _ = pool_tx.send(Box::new([0u8; HANDOFF_BUF]));
        }
        inboxes.push(inbox_tx);
        pools.push(pool_tx.clone());
        wakers.push(Waker::new().expect("eventfd"));
        ends.push((inbox, (pool_tx, pool_rx)));
    }
    let probes = Arc::new(crate::probe::ProbeBoard::new(0x7e57));
    let mesh = Mesh {
        inboxes,
        pools,
        wakers,
        big_in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    ends.into_iter()
        .enumerate()
        .map(|(i, (inbox, pool))| {
            let (cmds_tx, cmds) = crossbeam_channel::unbounded();
            let (resolve_tx, resolve) = crossbeam_channel::unbounded();
            let (events, events_rx) = crossbeam_channel::unbounded();
            Gw {
                setup: WorkerSetup {
                    id: i as u16,
                    queue: i as u32,
                    core: None,
                    unprotected: "wan0".into(),
                    protected: "lan0".into(),
                    xsk: XskConfig::default(),
                    busy_poll: false,
                    spd: running.spd.clone(),
                    cmds,
                    resolve: resolve_tx,
                    events,
                    inbox,
                    pool,
                    mesh: mesh.clone(),
                    icmp_src: [Some(IpAddr::from([192, 168, 10, 1])), None],
                    mtu: None,
                    icmp_limit: (100, 20),
                    clock,
                    probes: probes.clone(),
                    replay: None,
                    panic_after: None,
                },
                sas: std::mem::take(&mut sas[i]),
                heartbeats: std::mem::take(&mut heartbeats[i]),
                owner: running
                    .cfg
                    .sas
                    .iter()
                    .map(|p| {
                        let w = running.store.worker_of(p.outbound.reqid).unwrap_or(0);
                        (p.name.clone(), w)
                    })
                    .collect(),
                shards: Arc::new(running.shard_map()),
                _cmds: cmds_tx,
                resolve,
                events: events_rx,
            }
        })
        .collect()
}

/// The control side of a one-worker gateway running `text`.
fn running_one(text: &str) -> Running {
    let path = Path::new("test.toml");
    let cfg = crate::config::parse(text, path).expect("the config parses");
    Running::new(cfg, Source::new(text, path), 1).expect("running")
}

/// Carry `plan` out on the worker of a one-worker daemon (its rounds as one change, as
/// `Control::apply` sends them); the worker's report.
fn carry_out(w: &mut Worker<'_, MemIo>, plan: crate::control::running::Plan) -> ChangeReport {
    let [r0, r1, r2] = plan.rounds;
    let mut one = crate::control::single_round(r0, r1, r2);
    assert_eq!(one.len(), 1);
    let (tx, rx) = crossbeam_channel::unbounded();
    w.apply(Cmd::Apply(Box::new(one.remove(0)), tx), clock().now());
    rx.try_recv().expect("a report")
}

const A: &str = include_str!("../../../examples/ar410-tunnel-a.toml");
const A_UDP: &str = include_str!("../../../examples/ar410-udp2746-a.toml");
const B: &str = include_str!("../../../examples/ar410-tunnel-b.toml");
/// Gateway A also lets host A reach 198.51.100.0/24 in clear (BYPASS).
const A_BYPASS: &str = r#"[[policy]]
name = "web"
direction = "both"
local = "192.168.10.0/24"
remote = "198.51.100.0/24"
action = "bypass"
"#;

fn hop(side: Side, mtu: u16) -> Option<Hop> {
    Some(Hop {
        side,
        src_mac: GW_MAC,
        dst_mac: if side == Side::Unprotected {
            PEER_MAC
        } else {
            HOST_MAC
        },
        mtu,
    })
}

impl<'x> Worker<'x, MemIo> {
    fn start(io: &'x mut MemIo, gw: &mut Gw) -> Self {
        let mut w = Worker::new(io, &gw.setup);
        let now = gw.setup.clock.now();
        for sa in gw.sas.drain(..) {
            w.apply(Cmd::InstallSa(Box::new(sa)), now);
        }
        w.apply(Cmd::SetShards(gw.shards.clone()), now);
        w.apply(Cmd::SetHeartbeats(std::mem::take(&mut gw.heartbeats)), now);
        w
    }

    fn hop_to(&mut self, dst: [u8; 4], h: Option<Hop>) {
        let now = self.engine_now();
        self.apply(
            Cmd::Hop {
                dst: IpAddr::from(dst),
                hop: h,
            },
            now,
        );
    }

    fn engine_now(&self) -> Timestamp {
        clock().now()
    }

    /// One turn of the loop, now.
    fn turn(&mut self) -> usize {
        let mut rx = Vec::with_capacity(BURST);
        let now = self.engine_now();
        let mut next = now;
        self.poll(&mut rx, now, &mut next)
    }
}

/// An Ethernet frame carrying IPv4/UDP from `src` to `dst` with `payload` bytes.
fn udp_frame(src: [u8; 4], dst: [u8; 4], ttl: u8, payload: usize, df: bool) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    EthernetRepr {
        dst: GW_MAC,
        src: HOST_MAC,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    Ipv4Repr {
        src,
        dst,
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload,
        ttl,
        tos: 0,
        ident: 0x1234,
        dont_frag: df,
    }
    .emit(&mut ip);
    let mut udp = UdpPacket::new_unchecked(&mut f[34..]);
    udp.set_src_port(40000);
    udp.set_dst_port(9);
    udp.set_len((8 + payload) as u16);
    for (i, b) in udp.payload_mut().iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn ipv4(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&frame[14..]).expect("an IPv4 packet")
}

#[test]
fn a_protected_packet_crosses_two_workers_encrypted_and_comes_out_whole() {
    let (mut ga, mut gb) = (gateway(A, ""), gateway(B, ""));
    let (mut ia, mut ib) = (MemIo::new(FRAMES), MemIo::new(FRAMES));
    let sent = {
        let mut a = Worker::start(&mut ia, &mut ga);
        a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        a.xsk
            .inject(Side::Protected, &udp_frame(HOST_A, HOST_B, 64, 100, false));
        assert_eq!(a.turn(), 1);
        a.xsk.take_sent(Side::Unprotected)
    };
    assert_eq!(sent.len(), 1, "one ESP packet to the peer");
    let esp = &sent[0];
    let eth = EthernetFrame::new_checked(&esp[..]).expect("Ethernet");
    assert_eq!((eth.dst_addr(), eth.src_addr()), (PEER_MAC, GW_MAC));
    let outer = ipv4(esp);
    assert_eq!(outer.protocol(), IpProtocol::ESP);
    assert_eq!(
        (outer.src_addr(), outer.dst_addr()),
        ([10, 0, 0, 1], [10, 0, 0, 2])
    );
    assert!(outer.verify_checksum());
    let spi = EspPacket::new_checked(outer.payload()).expect("ESP").spi();
    assert_eq!(spi, 0x1111, "A's spi_out");
    assert!(
        !esp.windows(16)
            .any(|w| w == &udp_frame(HOST_A, HOST_B, 64, 100, false)[50..66]),
        "the payload is not in clear"
    );

    let delivered = {
        let mut b = Worker::start(&mut ib, &mut gb);
        b.hop_to(HOST_B, hop(Side::Protected, 1500));
        b.xsk.inject(Side::Unprotected, esp);
        assert_eq!(b.turn(), 1);
        assert_eq!(b.xsk.take_sent(Side::Unprotected), Vec::<Vec<u8>>::new());
        b.xsk.take_sent(Side::Protected)
    };
    assert_eq!(delivered.len(), 1);
    let inner = ipv4(&delivered[0]);
    assert_eq!((inner.src_addr(), inner.dst_addr()), (HOST_A, HOST_B));
    assert!(inner.verify_checksum());
    // each gateway decrements the TTL once
    assert_eq!(inner.ttl(), 62);
    let sent_inner = udp_frame(HOST_A, HOST_B, 64, 100, false);
    assert_eq!(inner.payload(), ipv4(&sent_inner).payload());
    assert_eq!((ia.free, ib.free), (FRAMES, FRAMES), "no frame lost");
}

#[test]
fn a_packet_waits_for_its_next_hop_and_goes_when_it_is_resolved() {
    let mut ga = gateway(A, A_BYPASS);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, ELSEWHERE, 64, 40, false),
        );
        a.turn();
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        assert_eq!(a.c.parked, 1);
        assert_eq!(ga.resolve.try_recv().ok(), Some(IpAddr::from(ELSEWHERE)));
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 1500));
        a.turn();
        let out = a.xsk.take_sent(Side::Unprotected);
        assert_eq!(out.len(), 1, "sent once the hop is known");
        let ip = ipv4(&out[0]);
        assert_eq!(ip.protocol(), IpProtocol::UDP, "BYPASS: in clear");
        assert_eq!((ip.dst_addr(), ip.ttl()), (ELSEWHERE, 63));
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn unresolvable_and_unlisted_traffic_is_dropped_and_counted() {
    let mut ga = gateway(A, A_BYPASS);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        // no policy for 203.0.113.0/24: implicit DISCARD
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, [203, 0, 113, 1], 64, 40, false),
        );
        // not IP at all
        let mut arp = udp_frame(HOST_A, ELSEWHERE, 64, 40, false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        a.xsk.inject(Side::Protected, &arp);
        // a destination known to be unreachable
        a.hop_to(ELSEWHERE, None);
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, ELSEWHERE, 64, 40, false),
        );
        a.turn();
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        assert!(a.xsk.take_sent(Side::Protected).is_empty());
        assert_eq!(a.c.non_ip, 1);
        let dropped = a.engine.stats().drops.total();
        assert!(dropped >= 1, "the SPD's discard is counted");
        assert_eq!(a.c.not_forwarded, 1);
    }
    assert_eq!(io.free, FRAMES, "every dropped frame went back");
}

#[test]
fn ttl_one_draws_a_rate_limited_time_exceeded() {
    let mut ga = gateway(A, A_BYPASS);
    ga.setup.icmp_limit = (1, 2);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 1500));
        a.hop_to(HOST_A, hop(Side::Protected, 1500));
        for _ in 0..5 {
            a.xsk
                .inject(Side::Protected, &udp_frame(HOST_A, ELSEWHERE, 1, 40, false));
        }
        a.turn();
        assert!(
            a.xsk.take_sent(Side::Unprotected).is_empty(),
            "TTL 1 is not forwarded"
        );
        let back = a.xsk.take_sent(Side::Protected);
        assert_eq!(back.len(), 2, "the burst of the token bucket, no more");
        assert_eq!(
            (a.c.ttl_exceeded, a.c.icmp_sent, a.c.icmp_suppressed),
            (5, 2, 3)
        );
        let ip = ipv4(&back[0]);
        assert_eq!(ip.protocol(), IpProtocol::ICMP);
        assert_eq!((ip.src_addr(), ip.dst_addr()), ([192, 168, 10, 1], HOST_A));
        let icmp = IcmpPacket::new_checked(ip.payload()).expect("ICMP");
        assert_eq!((icmp.msg_type(), icmp.code()), (11, 0));
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn a_packet_larger_than_the_link_is_fragmented_unless_df_is_set() {
    let mut ga = gateway(A, A_BYPASS);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 576));
        a.hop_to(HOST_A, hop(Side::Protected, 1500));
        let big = udp_frame(HOST_A, ELSEWHERE, 64, 1372, false);
        a.xsk.inject(Side::Protected, &big);
        a.turn();
        let mut frags = a.xsk.take_sent(Side::Unprotected);
        assert!(frags.len() >= 3, "{} fragments", frags.len());
        // in whatever order they were sent
        frags.sort_by_key(|f| ipv4(f).frag_offset());
        let mut data = vec![];
        for (i, f) in frags.iter().enumerate() {
            let ip = ipv4(f);
            assert!(usize::from(ip.total_len()) <= 576 && ip.verify_checksum());
            assert_eq!(usize::from(ip.frag_offset()), data.len());
            assert_eq!(ip.more_frags(), i + 1 < frags.len());
            data.extend_from_slice(ip.payload());
        }
        assert_eq!(
            data,
            ipv4(&big).payload(),
            "the fragments carry the datagram"
        );
        // with DF: dropped, and the sender is told the MTU
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, ELSEWHERE, 64, 1372, true),
        );
        a.turn();
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        let back = a.xsk.take_sent(Side::Protected);
        assert_eq!(back.len(), 1);
        let ip = ipv4(&back[0]);
        let icmp = IcmpPacket::new_checked(ip.payload()).expect("ICMP");
        assert_eq!(
            (icmp.msg_type(), icmp.code()),
            (3, 4),
            "fragmentation needed"
        );
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn a_worker_out_of_frames_drops_and_counts_instead_of_blocking() {
    let mut ga = gateway(A, A_BYPASS);
    let mut io = MemIo::new(1);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 576));
        // one frame: the packet itself; its fragments need frames there are none of
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, ELSEWHERE, 64, 1372, false),
        );
        a.turn();
        assert!(a.c.no_frame >= 1);
    }
    assert_eq!(io.free, 1);
}

/// A protected packet from host A to host B as gateway A's worker sends it (ESP).
fn esp_from_a() -> Vec<u8> {
    let mut ga = gateway(A, "");
    let mut io = MemIo::new(FRAMES);
    let mut a = Worker::start(&mut io, &mut ga);
    a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
    a.xsk
        .inject(Side::Protected, &udp_frame(HOST_A, HOST_B, 64, 100, false));
    a.turn();
    a.xsk
        .take_sent(Side::Unprotected)
        .pop()
        .expect("an ESP packet")
}

#[test]
fn a_packet_for_another_workers_sa_is_handed_to_it_and_processed_there() {
    let esp = esp_from_a();
    let mut gbs = gateways(B, "", 2);
    let owner = usize::from(gbs[0].owner["to-a"]);
    let other = 1 - owner;
    let (mut io0, mut io1) = (MemIo::new(FRAMES), MemIo::new(FRAMES));
    let (first, second) = gbs.split_at_mut(1);
    let mut ws = [
        Worker::start(&mut io0, &mut first[0]),
        Worker::start(&mut io1, &mut second[0]),
    ];
    for w in &mut ws {
        w.hop_to(HOST_B, hop(Side::Protected, 1500));
    }
    // the packet reaches the worker that does not own the SA
    ws[other].xsk.inject(Side::Unprotected, &esp);
    ws[other].turn();
    assert!(ws[other].xsk.take_sent(Side::Protected).is_empty());
    assert_eq!(ws[other].c.handoff_tx, 1);
    assert_eq!(ws[other].to_wake, 0, "the owner was told (woken if asleep)");
    // the owner takes it from its inbox and decrypts it
    ws[owner].turn();
    assert_eq!(ws[owner].c.handoff_rx, 1);
    let out = ws[owner].xsk.take_sent(Side::Protected);
    assert_eq!(out.len(), 1);
    assert_eq!(ipv4(&out[0]).src_addr(), HOST_A);
    drop(ws);
    assert_eq!((io0.free, io1.free), (FRAMES, FRAMES));
    let pool_back = first[0].setup.pool.1.len() + second[0].setup.pool.1.len();
    assert_eq!(pool_back, 8, "the handoff buffer went back to its pool");
}

#[test]
fn heartbeats_go_to_the_peer_once_per_interval() {
    let mut ga = gateway(A_UDP, "");
    assert_eq!(ga.heartbeats.len(), 1, "keepalive = 30");
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        a.turn();
        let out = a.xsk.take_sent(Side::Unprotected);
        assert_eq!(out.len(), 1, "{:?}", a.c);
        let ip = ipv4(&out[0]);
        assert_eq!(
            (ip.protocol(), ip.dst_addr()),
            (IpProtocol::UDP, [10, 0, 0, 2])
        );
        let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
        assert_eq!((udp.src_port(), udp.dst_port()), (2746, 2746));
        assert_eq!(udp.payload(), [0xff], "a one-byte keepalive");
        // not again within the interval
        std::thread::sleep(Duration::from_millis(2));
        a.turn();
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        assert_eq!(a.c.heartbeats_sent, 1);
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn a_trace_copies_the_plaintext_of_the_traced_policy_only() {
    let mut ga = gateway(A, A_BYPASS);
    let (tx, rx) = crossbeam_channel::bounded(16);
    let filter = crate::trace::Filter {
        policy: Some("lan-to-lan".into()),
        in_spi: None,
        out_reqid: None,
        udp_ports: vec![],
    };
    let tap = crate::trace::Tap::new(filter, 10, tx, &ga.setup.spd);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        let now = a.engine_now();
        a.apply(Cmd::Trace(Some(Box::new(tap))), now);
        a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 1500));
        let traced = udp_frame(HOST_A, HOST_B, 64, 100, false);
        a.xsk.inject(Side::Protected, &traced);
        a.xsk.inject(
            Side::Protected,
            &udp_frame(HOST_A, ELSEWHERE, 64, 100, false),
        );
        a.turn();
        assert_eq!(a.xsk.take_sent(Side::Unprotected).len(), 2);
        let copies: Vec<_> = rx.try_iter().collect();
        assert_eq!(copies.len(), 1, "the BYPASS packet is not traced");
        assert_eq!(copies[0].direction, Direction::Outbound);
        assert_eq!(
            ipv4(&traced).payload(),
            Ipv4Packet::new_checked(&copies[0].data[..])
                .expect("IPv4")
                .payload()
        );
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn a_protect_policy_without_its_sa_raises_acquire_and_sends_nothing() {
    let mut ga = gateway(A, "");
    ga.sas.clear(); // the policy is there, its SAs are not
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        let now = a.engine_now();
        // and no worker holds them
        a.apply(Cmd::SetShards(Arc::new(Shards::default())), now);
        a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        for _ in 0..3 {
            a.xsk
                .inject(Side::Protected, &udp_frame(HOST_A, HOST_B, 64, 10, false));
        }
        a.turn();
        assert!(
            a.xsk.take_sent(Side::Unprotected).is_empty(),
            "nothing leaves"
        );
        assert!(a.xsk.take_sent(Side::Protected).is_empty());
    }
    let evs: Vec<_> = ga.events.try_iter().collect();
    assert_eq!(evs.len(), 1, "one ACQUIRE for three packets: {evs:?}");
    let (_, ev) = evs[0];
    assert_eq!(ev.reqid, 1);
    assert!(
        matches!(
            ev.kind,
            xsec_dataplane::events::EventKind::Acquire { src, dst, proto: 17, ports: Some((40000, 9)), .. }
                if src == IpAddr::from(HOST_A) && dst == IpAddr::from(HOST_B)
        ),
        "{ev:?}"
    );
    assert_eq!(io.free, FRAMES);
}

/// A one-worker daemon gets a change's three rounds as one `Change`
/// (`control::single_round`): a rekey of both SAs (new SPIs, the old SAs removed) leaves
/// exactly the new SAs, reports the old ones removed, and the next packet leaves under the
/// new outbound SPI.
#[test]
fn one_worker_takes_a_rekey_as_one_change() {
    let mut ga = gateway(A, "");
    let mut io = MemIo::new(FRAMES);
    let mut w = Worker::start(&mut io, &mut ga);
    w.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
    let mut run = running_one(A);
    let text = A
        .replace("spi_out = 0x1111", "spi_out = 0x1112")
        .replace("spi_in = 0x2222", "spi_in = 0x2223");
    let plan = run
        .prepare(
            crate::control::running::Edit::Reload {
                path: Path::new("test.toml").to_owned(),
                text: zeroize::Zeroizing::new(text),
            },
            clock().now(),
        )
        .expect("the rekey is valid");
    // new SPIs: installed first, the old SAs removed last (the third round)
    assert_eq!(plan.rounds[0][0].install.len(), 2);
    assert_eq!(plan.rounds[2][0].remove.len(), 2);
    let report = carry_out(&mut w, plan);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut removed: Vec<u32> = report.removed.iter().map(|s| s.spi).collect();
    removed.sort_unstable();
    assert_eq!(removed, [0x1111, 0x2222]);
    let mut spis: Vec<(Direction, u32)> = w
        .engine
        .sad()
        .iter()
        .map(|(_, sa)| (sa.direction(), sa.spi()))
        .collect();
    spis.sort_unstable_by_key(|&(d, s)| (d.index(), s));
    assert_eq!(
        spis,
        [(Direction::Inbound, 0x2223), (Direction::Outbound, 0x1112)]
    );
    w.xsk
        .inject(Side::Protected, &udp_frame(HOST_A, HOST_B, 64, 100, false));
    assert_eq!(w.turn(), 1);
    let sent = w.xsk.take_sent(Side::Unprotected);
    assert_eq!(sent.len(), 1);
    let outer = ipv4(&sent[0]);
    assert_eq!(
        EspPacket::new_checked(outer.payload()).expect("ESP").spi(),
        0x1112
    );
}

/// A counters snapshot of many SAs is built a chunk per loop turn (the worker never stops
/// long between bursts) and sent once complete, to every asker; an SA removed meanwhile is
/// in it only if it was not taken back (its counters go with the removed SAs instead).
#[test]
fn a_snapshot_of_many_sas_is_spread_over_turns() {
    let mut ga = gateway(A, "");
    let mut io = MemIo::new(FRAMES);
    let mut w = Worker::start(&mut io, &mut ga);
    let path = Path::new("test.toml");
    let cfg = crate::config::parse(A, path).expect("the example parses");
    let n = 200u32;
    let now = clock().now();
    for i in 0..n {
        let mut c = cfg.sas[0].inbound.clone();
        c.spi = 0x10_0000 + i;
        w.apply(
            Cmd::InstallSa(Box::new(Sa::new(&c, now).expect("an SA"))),
            now,
        );
    }
    let total = w.engine.sad().len();
    let (tx, rx) = crossbeam_channel::unbounded();
    w.apply(Cmd::Snapshot(tx.clone()), now);
    w.apply(Cmd::Snapshot(tx), now);
    assert!(rx.try_recv().is_err(), "not all at once");
    // take one of the SAs already copied back out
    let (tx_r, rx_r) = crossbeam_channel::unbounded();
    let gone = Change {
        remove: vec![xsec_dataplane::sa::SaKey {
            dir: Direction::Inbound,
            spi: 0x10_0000,
            addr: None,
        }],
        ..Change::default()
    };
    w.apply(Cmd::Apply(Box::new(gone), tx_r), now);
    assert_eq!(rx_r.try_recv().expect("a report").removed.len(), 1);
    let mut turns = 0;
    while rx.is_empty() {
        w.turn();
        turns += 1;
        assert!(turns < 100, "the snapshot never came");
    }
    assert!(
        turns >= (total as u32 / SNAPSHOT_CHUNK) as usize - 1,
        "{turns} turns"
    );
    for _ in 0..2 {
        let s = rx.try_recv().expect("both askers answered");
        assert_eq!(s.sas.len(), total - 1);
        assert!(!s.sas.iter().any(|x| x.spi == 0x10_0000));
    }
}

/// Outbound SAs are told apart by SPI *and peer* (the peer chose the SPI; two peers may
/// choose the same): two with one SPI install side by side and a deletion takes the right
/// one. New endpoints (NAT rebinding, MOBIKE) keep the outbound SA's sequence numbers.
#[test]
fn outbound_sas_are_keyed_by_spi_and_peer_and_new_endpoints_keep_the_sequence() {
    use crate::control::store::{Endpoints, Op, test_sa};
    let mut ga = gateway(A, "");
    let mut io = MemIo::new(FRAMES);
    let mut w = Worker::start(&mut io, &mut ga);
    w.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
    w.hop_to([10, 0, 0, 9], hop(Side::Unprotected, 1500));
    let mut run = running_one(A);
    let mut apply = |w: &mut Worker<'_, MemIo>, client: &str, ops: Vec<Op>| {
        let plan = run
            .prepare(
                crate::control::running::Edit::Ops {
                    client: client.into(),
                    ops,
                },
                clock().now(),
            )
            .expect("a valid change");
        let report = carry_out(w, plan);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    };
    let to = |peer: [u8; 4], id: &str, reqid: u32| {
        let mut e = test_sa(id, Direction::Outbound, 0x7777, reqid);
        e.cfg.remote = Some(IpAddr::from(peer));
        e
    };
    let (a, b) = (to([10, 0, 0, 2], "p2", 70), to([10, 0, 0, 3], "p3", 71));
    apply(&mut w, "ike", vec![Op::AddSa(a), Op::AddSa(b)]);
    let peers = |w: &Worker<'_, MemIo>| {
        let mut v: Vec<_> = w
            .engine
            .sad()
            .iter()
            .filter(|(_, sa)| sa.spi() == 0x7777)
            .map(|(_, sa)| sa.info().remote)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        peers(&w),
        [
            Some(IpAddr::from([10, 0, 0, 2])),
            Some(IpAddr::from([10, 0, 0, 3]))
        ]
    );
    apply(&mut w, "ike", vec![Op::DelSa("p3".into())]);
    assert_eq!(peers(&w), [Some(IpAddr::from([10, 0, 0, 2]))]);

    // during a rekey the newest outbound SA of a reqid sends; an update of the old one
    // (its lifetime, say) leaves it behind the new one
    let current = |w: &Worker<'_, MemIo>| {
        let h = w.engine.sad().lookup_outbound(70).expect("an outbound SA");
        w.engine.sad().get(h).map(Sa::spi)
    };
    let mut new = to([10, 0, 0, 2], "p2-new", 70);
    new.cfg.spi = 0x7778;
    apply(&mut w, "ike", vec![Op::AddSa(new)]);
    assert_eq!(current(&w), Some(0x7778));
    let mut old = to([10, 0, 0, 2], "p2", 70);
    old.cfg.lifetime.hard.time = Some(std::time::Duration::from_secs(30));
    apply(&mut w, "ike", vec![Op::UpdateSa(old)]);
    assert_eq!(
        current(&w),
        Some(0x7778),
        "the updated old SA took the traffic back"
    );
    apply(&mut w, "ike", vec![Op::DelSa("p2-new".into())]);
    assert_eq!(current(&w), Some(0x7777));

    // the configuration's SA to B sends one packet, moves to 10.0.0.9, sends the next
    let send = |w: &mut Worker<'_, MemIo>| {
        w.xsk
            .inject(Side::Protected, &udp_frame(HOST_A, HOST_B, 64, 100, false));
        assert_eq!(w.turn(), 1);
        let sent = w.xsk.take_sent(Side::Unprotected);
        assert_eq!(sent.len(), 1);
        let outer = ipv4(&sent[0]);
        let esp = EspPacket::new_checked(outer.payload()).expect("ESP");
        (outer.dst_addr(), esp.spi(), esp.seq())
    };
    assert_eq!(send(&mut w), ([10, 0, 0, 2], 0x1111, 1));
    apply(
        &mut w,
        crate::control::store::CONFIG_CLIENT,
        vec![Op::UpdateSaEndpoints {
            id: "to-b/out".into(),
            endpoints: Endpoints {
                remote: Some(IpAddr::from([10, 0, 0, 9])),
                ..Endpoints::default()
            },
        }],
    );
    assert_eq!(send(&mut w), ([10, 0, 0, 9], 0x1111, 2));
}

/// Gateway A's own address on its protected side (the probes' source).
const GW_A_LAN: [u8; 4] = [192, 168, 10, 1];

/// The Ethernet frame of the reply HOST_B sends to an echo request delivered to it.
fn echo_reply_frame(req: &[u8]) -> Vec<u8> {
    let ip = crate::probe::reply_of(&req[14..]);
    let mut f = req[..14].to_vec();
    f.extend_from_slice(&ip);
    f
}

#[test]
fn a_probe_crosses_the_tunnel_and_only_its_decrypted_reply_is_taken() {
    let (mut ga, mut gb) = (gateway(A, A_BYPASS), gateway(B, ""));
    let (mut ia, mut ib) = (MemIo::new(FRAMES), MemIo::new(FRAMES));
    {
        let mut a = Worker::start(&mut ia, &mut ga);
        let mut b = Worker::start(&mut ib, &mut gb);
        a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        a.hop_to(HOST_B, hop(Side::Unprotected, 1500));
        a.hop_to(GW_A_LAN, None);
        b.hop_to(HOST_B, hop(Side::Protected, 1500));
        b.hop_to([10, 0, 0, 1], hop(Side::Unprotected, 1500));
        b.hop_to(GW_A_LAN, hop(Side::Unprotected, 1500));
        let board = a.probes.clone();
        let t = board.arm(IpAddr::from(GW_A_LAN)).expect("a slot");
        let probe = Probe {
            src: IpAddr::from(GW_A_LAN),
            dst: IpAddr::from(HOST_B),
            ticket: t,
            size: 56,
        };
        let now = a.engine_now();
        a.apply(Cmd::Probe(probe), now);
        assert!(a.xsk.take_sent(Side::Protected).is_empty());
        let esp = a.xsk.take_sent(Side::Unprotected);
        assert_eq!(esp.len(), 1, "{:?}", a.c);
        let outer = ipv4(&esp[0]);
        assert_eq!(outer.protocol(), IpProtocol::ESP, "never in clear");
        let spi = EspPacket::new_checked(outer.payload()).expect("ESP").spi();
        assert_eq!(spi, 0x1111, "the policy's SA");
        assert_eq!(a.c.probes_sent, 1);

        // B decrypts it and delivers an echo request from A's LAN address to host B
        b.xsk.inject(Side::Unprotected, &esp[0]);
        b.turn();
        let delivered = b.xsk.take_sent(Side::Protected);
        assert_eq!(delivered.len(), 1);
        let req = ipv4(&delivered[0]);
        assert_eq!(
            (req.src_addr(), req.dst_addr(), req.protocol()),
            (GW_A_LAN, HOST_B, IpProtocol::ICMP)
        );
        assert!(req.verify_checksum());
        let icmp = req.payload();
        assert_eq!(icmp[0], 8, "an echo request");
        assert!(xsec_dataplane::wire::checksum::verify(0, icmp));
        assert_eq!(
            &icmp[4..8],
            &[t.ident.to_be_bytes(), t.seq.to_be_bytes()].concat()[..]
        );

        // host B answers; B protects the reply back to A
        b.xsk
            .inject(Side::Protected, &echo_reply_frame(&delivered[0]));
        b.turn();
        let back = b.xsk.take_sent(Side::Unprotected);
        assert_eq!(back.len(), 1);

        // the same reply in clear (a BYPASS policy lets 198.51.100.0/24 in) is not taken: a
        // reply that did not come through a tunnel proves nothing about it
        let mut clear = echo_reply_frame(&delivered[0]);
        clear[14 + 12..14 + 16].copy_from_slice(&ELSEWHERE);
        let fix = xsec_dataplane::wire::checksum::finish(xsec_dataplane::wire::checksum::sum(&{
            let mut h = clear[14..34].to_vec();
            h[10..12].fill(0);
            h
        }));
        clear[14 + 10..14 + 12].copy_from_slice(&fix.to_be_bytes());
        a.xsk.inject(Side::Unprotected, &clear);
        a.turn();
        assert_eq!(a.c.probe_replies, 0);
        assert_eq!(board.reply(t), None);

        // the decrypted reply is taken, marked, and goes nowhere
        a.xsk.inject(Side::Unprotected, &back[0]);
        a.turn();
        assert_eq!(a.c.probe_replies, 1);
        assert!(board.reply(t).is_some());
        assert!(a.xsk.take_sent(Side::Protected).is_empty());
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        board.disarm(t);
    }
    assert_eq!((ia.free, ib.free), (FRAMES, FRAMES), "no frame lost");
}

#[test]
fn a_probe_the_spd_does_not_protect_is_dropped_or_sent_as_it_says() {
    let mut ga = gateway(A, A_BYPASS);
    let mut io = MemIo::new(FRAMES);
    {
        let mut a = Worker::start(&mut io, &mut ga);
        let nowhere: [u8; 4] = [203, 0, 113, 1];
        a.hop_to(nowhere, hop(Side::Unprotected, 1500));
        a.hop_to(ELSEWHERE, hop(Side::Unprotected, 1500));
        let board = a.probes.clone();
        let send = |a: &mut Worker<'_, MemIo>, dst: [u8; 4]| {
            let t = board.arm(IpAddr::from(GW_A_LAN)).expect("a slot");
            let p = Probe {
                src: IpAddr::from(GW_A_LAN),
                dst: IpAddr::from(dst),
                ticket: t,
                size: 8,
            };
            let now = a.engine_now();
            a.apply(Cmd::Probe(p), now);
            board.disarm(t);
        };
        // no policy: the implicit DISCARD drops it, counted
        let before = a.engine.stats().drops.total();
        send(&mut a, nowhere);
        assert!(a.xsk.take_sent(Side::Unprotected).is_empty());
        assert_eq!(a.engine.stats().drops.total(), before + 1);
        // BYPASS: in clear, because the SPD says so
        send(&mut a, ELSEWHERE);
        let out = a.xsk.take_sent(Side::Unprotected);
        assert_eq!(out.len(), 1);
        assert_eq!(ipv4(&out[0]).protocol(), IpProtocol::ICMP);
        assert_eq!(a.c.probes_sent, 2);
    }
    assert_eq!(io.free, FRAMES);
}

#[test]
fn a_probe_for_another_workers_sa_is_handed_to_it_and_protected_there() {
    let mut gas = gateways(A, "", 2);
    let owner = usize::from(gas[0].owner["to-b"]);
    let other = 1 - owner;
    let (mut io0, mut io1) = (MemIo::new(FRAMES), MemIo::new(FRAMES));
    let (first, second) = gas.split_at_mut(1);
    let mut ws = [
        Worker::start(&mut io0, &mut first[0]),
        Worker::start(&mut io1, &mut second[0]),
    ];
    for w in &mut ws {
        w.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
        w.hop_to(HOST_B, hop(Side::Unprotected, 1500));
    }
    let board = ws[other].probes.clone();
    let t = board.arm(IpAddr::from(GW_A_LAN)).expect("a slot");
    let p = Probe {
        src: IpAddr::from(GW_A_LAN),
        dst: IpAddr::from(HOST_B),
        ticket: t,
        size: 56,
    };
    let now = ws[other].engine_now();
    ws[other].apply(Cmd::Probe(p), now);
    assert!(ws[other].xsk.take_sent(Side::Unprotected).is_empty());
    assert_eq!(ws[other].c.handoff_tx, 1);
    ws[owner].turn();
    let out = ws[owner].xsk.take_sent(Side::Unprotected);
    assert_eq!(out.len(), 1);
    assert_eq!(ipv4(&out[0]).protocol(), IpProtocol::ESP);
    board.disarm(t);
    drop(ws);
    assert_eq!((io0.free, io1.free), (FRAMES, FRAMES));
}

const BUNDLE_A: &str = include_str!("../../../examples/ar410-bundle-a.toml");
const BUNDLE_B: &str = include_str!("../../../examples/ar410-bundle-b.toml");

/// The AR410-style bundle examples end to end through two gateways' workers: IPComp (LZS)
/// inside ESP inside AH on the wire, the inner packet whole at the far side, compressed or
/// (too small to compress) as IP in IP inside the ESP.
#[test]
fn the_ipcomp_esp_ah_bundle_example_crosses_two_workers() {
    let (mut ga, mut gb) = (gateway(BUNDLE_A, ""), gateway(BUNDLE_B, ""));
    let (mut ia, mut ib) = (MemIo::new(FRAMES), MemIo::new(FRAMES));
    let mut a = Worker::start(&mut ia, &mut ga);
    a.hop_to([10, 0, 0, 2], hop(Side::Unprotected, 1500));
    let mut b = Worker::start(&mut ib, &mut gb);
    b.hop_to(HOST_B, hop(Side::Protected, 1500));
    for payload in [1200, 40] {
        let frame = udp_frame(HOST_A, HOST_B, 64, payload, false);
        a.xsk.inject(Side::Protected, &frame);
        a.turn();
        let sent = a.xsk.take_sent(Side::Unprotected);
        assert_eq!(sent.len(), 1, "{payload}: one packet to the peer");
        let outer = ipv4(&sent[0]);
        assert_eq!(outer.protocol(), IpProtocol::AH, "{payload}: AH outermost");
        assert_eq!(
            (outer.src_addr(), outer.dst_addr()),
            ([10, 0, 0, 1], [10, 0, 0, 2])
        );
        let ah = outer.payload();
        assert_eq!(ah[0], 50, "{payload}: ESP inside AH");
        assert_eq!(&ah[4..8], &0x4111u32.to_be_bytes(), "{payload}: AH SPI");
        let esp = EspPacket::new_checked(&ah[24..]).expect("ESP");
        assert_eq!(esp.spi(), 0x3111, "{payload}: ESP SPI");
        if payload > 1000 {
            assert!(
                sent[0].len() < frame.len() - 300,
                "compressed: {} of {}",
                sent[0].len(),
                frame.len()
            );
        }
        b.xsk.inject(Side::Unprotected, &sent[0]);
        b.turn();
        assert_eq!(b.xsk.take_sent(Side::Unprotected), Vec::<Vec<u8>>::new());
        let delivered = b.xsk.take_sent(Side::Protected);
        assert_eq!(delivered.len(), 1, "{payload}: delivered");
        let inner = ipv4(&delivered[0]);
        assert_eq!((inner.src_addr(), inner.dst_addr()), (HOST_A, HOST_B));
        assert_eq!(inner.payload(), ipv4(&frame).payload(), "{payload}");
    }
}
