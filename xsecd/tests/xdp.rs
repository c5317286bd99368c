//! Root tests of the XDP steering program on veth pairs in a throw-away network namespace.
//!
//! Each test creates namespace `xsec-xdpt-<pid>-<test>` with two veth pairs (`xu`/`xu-peer`
//! for the unprotected side, `xp`/`xp-peer` for the protected one), then re-runs itself inside
//! it (`ip netns exec NS /proc/self/exe --exact <test>`, marked by an environment variable):
//! entering a namespace from this process would need unsafe `setns`, and the root namespace's
//! networking is never touched. The child attaches the real program with [`XdpSteering`],
//! sends one frame at a time from the peer end with an AF_PACKET socket (python3), and checks
//! the per-class counters. No AF_XDP socket is registered, so every redirect is dropped and
//! also counts `no_socket` (fail closed): the tests check classification, not delivery.
//!
//! Not root: the tests print why and pass without running.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use std::net::IpAddr;
use xsec_dataplane::wire::Ipv4Packet;
use xsecd::xdp::{Side, XdpCounters, XdpError, XdpMode, XdpSteering};

const CHILD_ENV: &str = "XSEC_XDPT_CHILD";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, deleted (with its veths) on drop.
struct Netns(String);

impl Netns {
    fn new(test: &str) -> Self {
        let name = format!("xsec-xdpt-{}-{test}", std::process::id());
        // A leftover of a killed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        let n = ns.0.as_str();
        // No IPv6 on the links: no router solicitations or MLD reports in the counters.
        for k in ["all", "default"] {
            run(&[
                "ip",
                "netns",
                "exec",
                n,
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ]);
        }
        for (a, b) in [("xu", "xu-peer"), ("xp", "xp-peer")] {
            run(&[
                "ip", "-n", n, "link", "add", a, "type", "veth", "peer", "name", b,
            ]);
            run(&["ip", "-n", n, "link", "set", a, "up"]);
            run(&["ip", "-n", n, "link", "set", b, "up"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Run `body` in a fresh namespace: the parent sets it up and re-executes this test there.
fn in_netns(test: &str, body: fn()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        body();
        return;
    }
    // never a silent pass: without root these tests fail and say why
    assert!(
        is_root(),
        "{test} needs root (network namespaces, XDP); run the tests as root"
    );
    let ns = Netns::new(test);
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test in the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "{test} failed in namespace {}", ns.0);
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in namespace {}",
        ns.0
    );
}

// ---- frames ----

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 address")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 address")
}

/// IPv4 with `options` (a multiple of 4 bytes) and a fragment field.
fn ipv4_full(
    src: &str,
    dst: &str,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = 20 + options.len();
    let total = u16::try_from(hl + payload.len()).expect("length");
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&v4(src).octets());
    h.extend_from_slice(&v4(dst).octets());
    h.extend_from_slice(options);
    Ipv4Packet::new_unchecked(&mut h[..]).fill_checksum();
    h.extend_from_slice(payload);
    eth(0x0800, &h)
}

fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_full(src, dst, proto, &[], 0, payload)
}

/// IPv6 whose payload starts with the given chain of headers (`nh` is the first).
fn ipv6(src: &str, dst: &str, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload.len()).expect("length").to_be_bytes());
    h.extend_from_slice(&[nh, 64]);
    h.extend_from_slice(&v6(src).octets());
    h.extend_from_slice(&v6(dst).octets());
    h.extend_from_slice(payload);
    eth(0x86dd, &h)
}

/// UDP with checksum 0 (the program does not look at it).
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("length")
            .to_be_bytes(),
    );
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ESP header and a little ciphertext-looking payload.
fn esp() -> Vec<u8> {
    let mut e = vec![0x00, 0x00, 0x10, 0x01, 0, 0, 0, 7];
    e.extend_from_slice(&[0xab; 32]);
    e
}

/// A non-ESP marker and the start of an IKE header.
fn ike_after_marker() -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&[0x11; 28]);
    p
}

fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&[10, 0, 0, 2]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[10, 0, 0, 1]);
    eth(0x0806, &a)
}

fn neighbour_solicitation() -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&v6("fe80::1").octets());
    ipv6("fe80::2", "ff02::1:ff00:1", 58, &icmp)
}

/// Sends frames on an interface of the current namespace.
fn send(ifname: &str, frame: &[u8]) {
    let hex = hex::encode(frame);
    run(&[
        "python3",
        "-c",
        "import socket, sys\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind((sys.argv[1], 0))\n\
         s.send(bytes.fromhex(sys.argv[2]))\n",
        ifname,
        &hex,
    ]);
}

fn row(x: &XdpSteering, side: Side) -> XdpCounters {
    x.stats()
        .expect("read counters")
        .into_iter()
        .filter(|r| r.side == side)
        .fold(XdpCounters::default(), |mut acc, r| {
            acc.add(&r.counters);
            acc
        })
}

fn diff(a: &XdpCounters, b: &XdpCounters) -> XdpCounters {
    XdpCounters {
        rx: a.rx - b.rx,
        esp: a.esp - b.esp,
        udp_esp: a.udp_esp - b.udp_esp,
        tunnel_port: a.tunnel_port - b.tunnel_port,
        spd: a.spd - b.spd,
        fragment: a.fragment - b.fragment,
        ike: a.ike - b.ike,
        keepalive: a.keepalive - b.keepalive,
        arp_nd: a.arp_nd - b.arp_nd,
        local: a.local - b.local,
        other: a.other - b.other,
        no_socket: a.no_socket - b.no_socket,
        malformed: a.malformed - b.malformed,
    }
}

/// The expected counter change for one frame of a class.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Esp,
    UdpEsp,
    TunnelPort,
    Spd,
    Fragment,
    Ike,
    Keepalive,
    ArpNd,
    Local,
    Other,
    Malformed,
}

impl Expect {
    fn delta(self) -> XdpCounters {
        let mut c = XdpCounters {
            rx: 1,
            ..XdpCounters::default()
        };
        let class = match self {
            Expect::Esp => &mut c.esp,
            Expect::UdpEsp => &mut c.udp_esp,
            Expect::TunnelPort => &mut c.tunnel_port,
            Expect::Spd => &mut c.spd,
            Expect::Fragment => &mut c.fragment,
            Expect::Ike => &mut c.ike,
            Expect::Keepalive => &mut c.keepalive,
            Expect::ArpNd => &mut c.arp_nd,
            Expect::Local => &mut c.local,
            Expect::Other => &mut c.other,
            Expect::Malformed => &mut c.malformed,
        };
        *class = 1;
        if matches!(
            self,
            Expect::Esp
                | Expect::UdpEsp
                | Expect::TunnelPort
                | Expect::Spd
                | Expect::Fragment
                | Expect::Keepalive
        ) {
            // No socket registered: the redirect is dropped, never passed.
            c.no_socket = 1;
        }
        c
    }
}

/// Send one frame to `side` and check it was counted as `expect`.
fn check(x: &XdpSteering, side: Side, what: &str, frame: &[u8], expect: Expect) {
    let peer = match side {
        Side::Unprotected => "xu-peer",
        Side::Protected => "xp-peer",
    };
    let before = row(x, side);
    send(peer, frame);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after = row(x, side);
    while after.rx == before.rx && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        after = row(x, side);
    }
    assert_eq!(
        diff(&after, &before),
        expect.delta(),
        "{side} side, {what}: expected {expect:?}"
    );
    println!("ok: {side} {what} -> {expect:?}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn classes_body(mode: XdpMode) {
    let mut x = XdpSteering::load("xu", "xp", mode).expect("load and attach");
    x.set_tunnel_ports(&[2746]).expect("tunnel ports");
    // The gateway: 198.51.100.1 and 2001:db8::2 on the WAN, 10.1.0.1 and fd01::1 on the LAN.
    x.set_local_addrs(&[
        ip("198.51.100.1"),
        ip("2001:db8::2"),
        ip("10.1.0.1"),
        ip("fd01::1"),
    ])
    .expect("local addresses");
    x.set_udp_peers(&[ip("192.0.2.1"), ip("2001:db8::1")])
        .expect("peers");
    let u = Side::Unprotected;
    let p = Side::Protected;
    use Expect::*;

    // Unprotected side: to the gateway.
    check(
        &x,
        u,
        "ESP",
        &ipv4("192.0.2.1", "198.51.100.1", 50, &esp()),
        Esp,
    );
    check(
        &x,
        u,
        "ESP to another address",
        &ipv4("192.0.2.1", "198.51.100.77", 50, &esp()),
        Esp,
    );
    let opts = [1, 1, 1, 0, 0x94, 4, 0, 0]; // NOPs, EOL, router alert
    check(
        &x,
        u,
        "ESP behind IPv4 options",
        &ipv4_full("192.0.2.1", "198.51.100.1", 50, &opts, 0, &esp()),
        Esp,
    );
    let nat_t = |p: &[u8]| ipv4("192.0.2.1", "198.51.100.1", 17, &udp(4500, 4500, p));
    check(&x, u, "ESP in UDP/4500", &nat_t(&esp()), UdpEsp);
    check(
        &x,
        u,
        "ESP in UDP/4500 behind IPv4 options",
        &ipv4_full(
            "192.0.2.1",
            "198.51.100.1",
            17,
            &opts,
            0,
            &udp(4500, 4500, &esp()),
        ),
        UdpEsp,
    );
    check(&x, u, "NAT keepalive", &nat_t(&[0xff]), Keepalive);
    check(
        &x,
        u,
        "one byte that is not a keepalive",
        &nat_t(&[0x00]),
        Malformed,
    );
    check(
        &x,
        u,
        "IKE behind the non-ESP marker",
        &nat_t(&ike_after_marker()),
        Ike,
    );
    check(
        &x,
        u,
        "IKE on UDP/500",
        &ipv4("192.0.2.1", "198.51.100.1", 17, &udp(500, 500, &[0x22; 28])),
        Ike,
    );
    let tunnel = |p: &[u8]| ipv4("192.0.2.1", "198.51.100.1", 17, &udp(2746, 2746, p));
    check(&x, u, "tunnel port", &tunnel(&esp()), TunnelPort);
    check(
        &x,
        u,
        "keepalive on a tunnel port",
        &tunnel(&[0xff]),
        TunnelPort,
    );
    check(
        &x,
        u,
        "IKE on a tunnel port",
        &tunnel(&ike_after_marker()),
        Ike,
    );
    check(
        &x,
        u,
        "other UDP to the gateway",
        &ipv4("192.0.2.1", "198.51.100.1", 17, &udp(53, 53, &[1; 20])),
        Local,
    );
    check(
        &x,
        u,
        "ping to the gateway's LAN address",
        &ipv4("192.0.2.1", "10.1.0.1", 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
        Local,
    );
    check(&x, u, "ARP", &arp(), ArpNd);
    check(
        &x,
        u,
        "neighbour solicitation",
        &neighbour_solicitation(),
        ArpNd,
    );
    // Unprotected side: not to the gateway. The SPD decides, whatever it is.
    check(
        &x,
        u,
        "plaintext to a protected host",
        &ipv4("10.2.0.7", "10.1.0.9", 17, &udp(1234, 80, &[1; 20])),
        Spd,
    );
    check(
        &x,
        u,
        "plaintext no policy names",
        &ipv4("203.0.113.7", "192.168.10.10", 1, &[0; 8]),
        Spd,
    );
    check(
        &x,
        u,
        "UDP/500 not to the gateway",
        &ipv4("192.0.2.1", "10.1.0.9", 17, &udp(500, 500, &[0x22; 28])),
        Spd,
    );
    check(
        &x,
        u,
        "plaintext to multicast",
        &ipv4("10.2.0.7", "224.0.0.5", 89, &[0; 20]),
        Local,
    );
    check(
        &x,
        u,
        "limited broadcast",
        &ipv4("10.2.0.7", "255.255.255.255", 17, &udp(68, 67, &[0; 20])),
        Local,
    );
    check(
        &x,
        u,
        "IPv6 plaintext",
        &ipv6("fd02::7", "fd01::9", 17, &udp(1, 2, &[1; 20])),
        Spd,
    );
    check(
        &x,
        u,
        "IPv6 to the gateway",
        &ipv6("fd02::7", "2001:db8::2", 6, &[0; 20]),
        Local,
    );
    check(
        &x,
        u,
        "IPv6 to a link-local address",
        &ipv6("fe80::7", "fe80::1", 17, &udp(1, 2, &[1; 20])),
        Local,
    );
    // Hop-by-hop (8 bytes) → destination options (16 bytes) → ESP.
    let mut chain = vec![60, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[50, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&esp());
    check(
        &x,
        u,
        "IPv6 ESP behind extension headers",
        &ipv6("2001:db8::1", "2001:db8::2", 0, &chain),
        Esp,
    );
    let mut chain = vec![17, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&udp(4500, 4500, &esp()));
    check(
        &x,
        u,
        "IPv6 ESP in UDP behind hop-by-hop",
        &ipv6("2001:db8::1", "2001:db8::2", 0, &chain),
        UdpEsp,
    );
    // Fragment header, offset 8 (a later fragment).
    let later = |src: &str, dst: &str, nh: u8| {
        let mut f = vec![nh, 0, 0, 8 << 3, 0, 0, 0, 1];
        f.extend_from_slice(&[0x5a; 24]);
        ipv6(src, dst, 44, &f)
    };
    check(
        &x,
        u,
        "IPv6 later fragment, forwarded",
        &later("fd02::7", "fd01::9", 17),
        Spd,
    );
    check(
        &x,
        u,
        "IPv6 later fragment of ESP",
        &later("fd02::7", "fd01::9", 50),
        Esp,
    );
    check(
        &x,
        u,
        "IPv6 later UDP fragment from a peer",
        &later("2001:db8::1", "2001:db8::2", 17),
        Fragment,
    );
    check(
        &x,
        u,
        "IPv6 later UDP fragment from another host",
        &later("2001:db8::9", "2001:db8::2", 17),
        Local,
    );
    let first = {
        let mut f = vec![17, 0, 0, 1, 0, 0, 0, 1]; // offset 0, more fragments
        f.extend_from_slice(&udp(4500, 4500, &esp()));
        ipv6("2001:db8::1", "2001:db8::2", 44, &f)
    };
    check(&x, u, "IPv6 first fragment of ESP in UDP", &first, UdpEsp);
    check(
        &x,
        u,
        "IPv4 later fragment, forwarded",
        &ipv4_full("10.2.0.7", "10.1.0.9", 17, &[], 100, &[0; 16]),
        Spd,
    );
    check(
        &x,
        u,
        "IPv4 later UDP fragment from a peer",
        &ipv4_full("192.0.2.1", "198.51.100.1", 17, &[], 100, &[0; 16]),
        Fragment,
    );
    check(
        &x,
        u,
        "IPv4 later UDP fragment from another host",
        &ipv4_full("192.0.2.9", "198.51.100.1", 17, &[], 100, &[0; 16]),
        Local,
    );
    let mut vlan = vec![0, 5, 0x08, 0x00];
    vlan.extend_from_slice(&ipv4("192.0.2.1", "198.51.100.1", 50, &esp())[14..]);
    check(&x, u, "VLAN-tagged ESP", &eth(0x8100, &vlan), Other);
    check(
        &x,
        u,
        "truncated IPv4",
        &eth(0x0800, &[0x45, 0, 0, 20]),
        Malformed,
    );
    check(
        &x,
        u,
        "IPv4 with IHL < 5",
        &eth(0x0800, &{
            let mut h = ipv4("192.0.2.1", "198.51.100.1", 50, &esp())[14..].to_vec();
            h[0] = 0x44;
            h
        }),
        Malformed,
    );

    // Protected side: everything not for the gateway is the SPD's.
    check(
        &x,
        p,
        "local to remote",
        &ipv4("10.1.0.9", "10.2.0.7", 17, &udp(1, 2, &[1; 20])),
        Spd,
    );
    check(
        &x,
        p,
        "to a network no policy names",
        &ipv4("192.168.10.10", "10.0.0.2", 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
        Spd,
    );
    check(
        &x,
        p,
        "to the gateway",
        &ipv4("10.1.0.9", "10.1.0.1", 6, &[0; 20]),
        Local,
    );
    check(
        &x,
        p,
        "to the gateway's WAN address",
        &ipv4("10.1.0.9", "198.51.100.1", 6, &[0; 20]),
        Local,
    );
    check(
        &x,
        p,
        "IPv6 local to remote",
        &ipv6("fd01::9", "fd02::1", 17, &udp(1, 2, &[1; 20])),
        Spd,
    );
    check(
        &x,
        p,
        "IPv6 to multicast",
        &ipv6("fd01::9", "ff02::1", 17, &udp(1, 2, &[1; 20])),
        Local,
    );
    check(&x, p, "ARP", &arp(), ArpNd);
    check(
        &x,
        p,
        "neighbour solicitation",
        &neighbour_solicitation(),
        ArpNd,
    );
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&v6("fd02::1").octets());
    check(
        &x,
        p,
        "a neighbour solicitation to a remote unicast address",
        &ipv6("fd01::9", "fd02::1", 58, &ns),
        Spd,
    );
    check(
        &x,
        p,
        "a neighbour solicitation to the gateway",
        &ipv6("fd01::9", "fd01::1", 58, &ns),
        ArpNd,
    );
    check(
        &x,
        p,
        "ESP passing through",
        &ipv4("192.0.2.1", "203.0.113.1", 50, &esp()),
        Spd,
    );
    check(
        &x,
        p,
        "truncated IPv4",
        &eth(0x0800, &[0x45, 0, 0, 20]),
        Malformed,
    );

    // Replacing the sets drops what is no longer there.
    x.set_tunnel_ports(&[]).expect("no tunnel ports");
    check(&x, u, "former tunnel port", &tunnel(&esp()), Local);
    x.set_local_addrs(&[ip("198.51.100.1")])
        .expect("local addresses");
    check(
        &x,
        p,
        "a former gateway address",
        &ipv4("10.1.0.9", "10.1.0.1", 6, &[0; 20]),
        Spd,
    );
    x.set_udp_peers(&[]).expect("no peers");
    check(
        &x,
        u,
        "UDP fragment from a former peer",
        &ipv4_full("192.0.2.1", "198.51.100.1", 17, &[], 100, &[0; 16]),
        Local,
    );

    // Only this side and queue 0 moved; the rows are per side.
    let stats = x.stats().expect("stats");
    assert!(stats.iter().all(|r| r.queue == 0), "{stats:?}");
    assert_eq!(stats.len(), 2, "{stats:?}");
}

#[test]
fn classes_driver_mode() {
    in_netns("classes_driver_mode", || classes_body(XdpMode::Driver));
}

#[test]
fn classes_generic_mode() {
    in_netns("classes_generic_mode", || classes_body(XdpMode::Skb));
}

#[test]
fn load_errors() {
    in_netns("load_errors", || {
        match XdpSteering::load("xu", "xu", XdpMode::Driver) {
            Err(XdpError::SameInterface(i)) => assert_eq!(i, "xu"),
            r => panic!("same interface twice: {r:?}"),
        }
        let e =
            XdpSteering::load("xu", "no-such-if", XdpMode::Driver).expect_err("missing interface");
        assert!(e.to_string().contains("\"no-such-if\""), "{e}");
        // The first attachment went away with the failed load: loading again works.
        let mut x =
            XdpSteering::load("xu", "xp", XdpMode::Driver).expect("load after a failed load");
        let file = std::fs::File::open("/proc/self/status").expect("a file");
        match x.register_xsk(Side::Unprotected, 64, file.as_raw_fd()) {
            Err(XdpError::QueueOutOfRange { queue: 64, .. }) => {}
            r => panic!("queue 64: {r:?}"),
        }
        let e = x
            .register_xsk(Side::Protected, 0, file.as_raw_fd())
            .expect_err("not an AF_XDP socket");
        assert!(e.to_string().contains("XSKS_PROT"), "{e}");
        x.unregister_xsk(Side::Protected, 0)
            .expect("unset an empty slot");
        let many: Vec<u16> = (1000..1100).collect();
        assert!(matches!(
            x.set_tunnel_ports(&many),
            Err(XdpError::TooManyEntries { .. })
        ));
        let many: Vec<IpAddr> = (0..2000u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        assert!(matches!(
            x.set_local_addrs(&many),
            Err(XdpError::TooManyEntries { .. })
        ));
        drop(x);
        // Detached on drop: attaching again in driver mode succeeds.
        XdpSteering::load("xu", "xp", XdpMode::Driver).expect("load after drop");
    });
}
