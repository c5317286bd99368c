//! Root tests of the XDP steering program on veth pairs in a throw-away network namespace.
//!
//! Each test creates namespace `xsec-xdpt-<pid>-<test>` with two veth pairs (`xu`/`xu-peer`
//! for the unprotected side, `xp`/`xp-peer` for the protected one), then re-runs itself inside
//! it (`ip netns exec NS /proc/self/exe --exact <test>`, marked by an environment variable):
//! entering a namespace from this process would need unsafe `setns`, and the root namespace's
//! networking is never touched. The child attaches the real program with [`XdpSteering`],
//! sends one frame at a time from the peer end with an AF_PACKET socket (python3), and checks
//! the per-class counters. No AF_XDP socket is registered, so every redirect falls back to
//! XDP_PASS and also counts `redirect_failed`: the tests check classification, not delivery.
//!
//! Not root: the tests print why and pass without running.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use xsec_dataplane::spd::AddrRange;
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
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    eth(0x0800, &h)
}

fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_full(src, dst, proto, &[], 0, payload)
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
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
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
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
        protected: a.protected - b.protected,
        unprot_plain: a.unprot_plain - b.unprot_plain,
        ike: a.ike - b.ike,
        keepalive: a.keepalive - b.keepalive,
        arp_nd: a.arp_nd - b.arp_nd,
        other: a.other - b.other,
        redirect_failed: a.redirect_failed - b.redirect_failed,
        malformed: a.malformed - b.malformed,
    }
}

/// The expected counter change for one frame of a class.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Esp,
    UdpEsp,
    TunnelPort,
    Protected,
    UnprotPlain,
    Ike,
    Keepalive,
    ArpNd,
    Other,
    Malformed,
}

impl Expect {
    fn delta(self) -> XdpCounters {
        let mut c = XdpCounters {
            rx: 1,
            ..XdpCounters::default()
        };
        let redirect = match self {
            Expect::Esp => &mut c.esp,
            Expect::UdpEsp => &mut c.udp_esp,
            Expect::TunnelPort => &mut c.tunnel_port,
            Expect::Protected => &mut c.protected,
            Expect::UnprotPlain => &mut c.unprot_plain,
            Expect::Ike => &mut c.ike,
            Expect::Keepalive => &mut c.keepalive,
            Expect::ArpNd => &mut c.arp_nd,
            Expect::Other => &mut c.other,
            Expect::Malformed => &mut c.malformed,
        };
        *redirect = 1;
        if matches!(
            self,
            Expect::Esp
                | Expect::UdpEsp
                | Expect::TunnelPort
                | Expect::Protected
                | Expect::UnprotPlain
                | Expect::Keepalive
        ) {
            // No socket registered: the redirect falls back to the kernel.
            c.redirect_failed = 1;
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

fn range(s: &str) -> AddrRange {
    s.parse().expect("address range")
}

fn classes_body(mode: XdpMode) {
    let mut x = XdpSteering::load("xu", "xp", mode).expect("load and attach");
    x.set_tunnel_ports(&[2746]).expect("tunnel ports");
    x.set_protected_selectors(&[
        (range("10.1.0.0/24"), range("10.2.0.0/24")),
        // Not a prefix: .5/32 .6/31 .8/31.
        (range("10.1.1.5-10.1.1.9"), range("10.3.0.0/16")),
        (range("fd01::/64"), range("fd02::/64")),
    ])
    .expect("selectors");
    let u = Side::Unprotected;
    let p = Side::Protected;
    use Expect::*;

    // Unprotected side.
    check(
        &x,
        u,
        "ESP",
        &ipv4("192.0.2.1", "198.51.100.1", 50, &esp()),
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
        "other UDP",
        &ipv4("192.0.2.1", "198.51.100.1", 17, &udp(53, 53, &[1; 20])),
        Other,
    );
    check(&x, u, "ARP", &arp(), ArpNd);
    check(
        &x,
        u,
        "neighbour solicitation",
        &neighbour_solicitation(),
        ArpNd,
    );
    let plain = ipv4("10.2.0.7", "10.1.0.9", 17, &udp(1234, 80, &[1; 20]));
    check(
        &x,
        u,
        "plaintext that should be protected",
        &plain,
        UnprotPlain,
    );
    check(
        &x,
        u,
        "plaintext to a non-prefix range",
        &ipv4("10.3.9.9", "10.1.1.6", 6, &[0; 20]),
        UnprotPlain,
    );
    check(
        &x,
        u,
        "plaintext across two policies",
        &ipv4("10.3.9.9", "10.1.0.9", 6, &[0; 20]),
        Other,
    );
    check(
        &x,
        u,
        "plaintext outside the ranges",
        &ipv4("10.2.0.7", "10.9.0.1", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    check(
        &x,
        u,
        "plaintext to multicast",
        &ipv4("10.2.0.7", "224.0.0.5", 89, &[0; 20]),
        Other,
    );
    check(
        &x,
        u,
        "IPv6 plaintext",
        &ipv6("fd02::7", "fd01::9", 17, &udp(1, 2, &[1; 20])),
        UnprotPlain,
    );
    check(
        &x,
        u,
        "IPv6 plaintext outside",
        &ipv6("fd03::7", "fd01::9", 17, &udp(1, 2, &[1; 20])),
        Other,
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
    let later = |nh: u8| {
        let mut f = vec![nh, 0, 0, 8 << 3, 0, 0, 0, 1];
        f.extend_from_slice(&[0x5a; 24]);
        ipv6("fd02::7", "fd01::9", 44, &f)
    };
    check(&x, u, "IPv6 later fragment of UDP", &later(17), Other);
    check(&x, u, "IPv6 later fragment of ESP", &later(50), Esp);
    let first = {
        let mut f = vec![17, 0, 0, 1, 0, 0, 0, 1]; // offset 0, more fragments
        f.extend_from_slice(&udp(4500, 4500, &esp()));
        ipv6("2001:db8::1", "2001:db8::2", 44, &f)
    };
    check(&x, u, "IPv6 first fragment of ESP in UDP", &first, UdpEsp);
    check(
        &x,
        u,
        "IPv4 later fragment",
        &ipv4_full("10.2.0.7", "10.1.0.9", 17, &[], 100, &[0; 16]),
        Other,
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

    // Protected side.
    check(
        &x,
        p,
        "local to remote",
        &ipv4("10.1.0.9", "10.2.0.7", 17, &udp(1, 2, &[1; 20])),
        Protected,
    );
    check(
        &x,
        p,
        "remote to local",
        &ipv4("10.2.0.7", "10.1.0.9", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    for (src, expect) in [
        ("10.1.1.4", Other),
        ("10.1.1.5", Protected),
        ("10.1.1.7", Protected),
        ("10.1.1.9", Protected),
        ("10.1.1.10", Other),
    ] {
        check(
            &x,
            p,
            &format!("non-prefix range, from {src}"),
            &ipv4(src, "10.3.4.4", 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
            expect,
        );
    }
    check(
        &x,
        p,
        "local of one policy to remote of another",
        &ipv4("10.1.0.9", "10.3.4.4", 1, &[8; 8]),
        Other,
    );
    check(
        &x,
        p,
        "IPv6 local to remote",
        &ipv6("fd01::1", "fd02::1", 17, &udp(1, 2, &[1; 20])),
        Protected,
    );
    check(
        &x,
        p,
        "IPv6 to multicast",
        &ipv6("fd01::1", "ff02::1", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    check(&x, p, "ARP", &arp(), ArpNd);
    check(
        &x,
        p,
        "neighbour solicitation",
        &neighbour_solicitation(),
        ArpNd,
    );
    check(
        &x,
        p,
        "ESP is not special here",
        &ipv4("192.0.2.1", "198.51.100.1", 50, &esp()),
        Other,
    );

    // Replacing the sets drops what is no longer there.
    x.set_tunnel_ports(&[]).expect("no tunnel ports");
    check(&x, u, "former tunnel port", &tunnel(&esp()), Other);
    x.set_protected_selectors(&[(range("10.1.1.5-10.1.1.9"), AddrRange::Any)])
        .expect("selectors");
    check(
        &x,
        p,
        "former policy",
        &ipv4("10.1.0.9", "10.2.0.7", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    check(
        &x,
        p,
        "remote any",
        &ipv4("10.1.1.8", "203.0.113.9", 17, &udp(1, 2, &[1; 20])),
        Protected,
    );
    check(
        &x,
        p,
        "remote any, broadcast",
        &ipv4("10.1.1.8", "255.255.255.255", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    check(
        &x,
        p,
        "remote any, other family",
        &ipv6("fd01::1", "fd02::1", 17, &udp(1, 2, &[1; 20])),
        Other,
    );
    x.set_protected_selectors(&[(AddrRange::Any, AddrRange::Any)])
        .expect("any");
    check(
        &x,
        p,
        "any to any, IPv6",
        &ipv6("fd05::1", "fd06::1", 17, &udp(1, 2, &[1; 20])),
        Protected,
    );
    x.set_protected_selectors(&[]).expect("none");
    check(
        &x,
        p,
        "no policies",
        &ipv6("fd05::1", "fd06::1", 17, &udp(1, 2, &[1; 20])),
        Other,
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
        drop(x);
        // Detached on drop: attaching again in driver mode succeeds.
        XdpSteering::load("xu", "xp", XdpMode::Driver).expect("load after drop");
    });
}
