//! Root test of `xsecd::neigh` against the kernel's real tables, in network namespaces.
//!
//! Each test builds its own pair of namespaces `xsec-nt-<pid>-<n>{a,b}` joined by a veth pair
//! (`va` in A, `vb` in B, MTU 1400), then re-runs this same test binary inside A with
//! `ip netns exec` (switching namespaces in-process would need `unsafe`), filtered to the one
//! test and with [`CHILD`] set so that the body runs instead of the set-up. A Drop guard deletes
//! the namespaces. Addresses are from the documentation ranges and never leave the namespaces.
//!
//! Lab layout, in A:
//! - `va` 192.0.2.1/24, 2001:db8:1::1/64; peer `vb` in B 192.0.2.2, 2001:db8:1::2
//! - 198.51.100.0/24 and 2001:db8:2::/64 via the peer
//! - blackhole 203.0.113.0/24 and 2001:db8:3::/64; unreachable 198.18.1.0/24; prohibit
//!   198.18.2.0/24 and 2001:db8:4::/64
//! - `tn0`, a tun device (point-to-point, no MAC), with 100.64.0.0/24 and 2001:db8:5::/64
//! - no default route

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xsecd::neigh::{NextHop, Resolution, Resolver};

/// Set in the child; its value is the peer MAC, as `ip` prints it.
const CHILD: &str = "XSEC_NEIGH_TEST_PEER_MAC";
const MTU: u16 = 1400;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip(8): the test needs iproute2 and root");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace pair; deleting it also deletes the veth pair and the tun device.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new() -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = format!(
            "xsec-nt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Guard first, so a failing step still cleans up.
        let lab = Lab {
            a: format!("{base}a"),
            b: format!("{base}b"),
        };
        for ns in [&lab.a, &lab.b] {
            ip(&["netns", "add", ns]);
            // A neighbour solicitation triggered without a packet (NTF_USE) takes its source
            // from a non-tentative link-local address (ndisc_send_ns), so DAD on the fresh
            // link-locals would hold IPv6 resolution back by a second or two.
            let dad_off = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg("net.ipv6.conf.default.accept_dad=0")
                .status()
                .expect("run sysctl(8)");
            assert!(dad_off.success(), "sysctl in {ns}");
        }
        let (a, b) = (lab.a.as_str(), lab.b.as_str());
        let batch_a = [
            "link set lo up",
            &format!("link add va mtu {MTU} type veth peer name vb netns {b}"),
            "link set va up",
            "addr add 192.0.2.1/24 dev va",
            "addr add 2001:db8:1::1/64 dev va nodad",
            "route add 198.51.100.0/24 via 192.0.2.2",
            "route add 2001:db8:2::/64 via 2001:db8:1::2",
            "route add blackhole 203.0.113.0/24",
            "route add blackhole 2001:db8:3::/64",
            "route add unreachable 198.18.1.0/24",
            "route add prohibit 198.18.2.0/24",
            "route add prohibit 2001:db8:4::/64",
            "tuntap add dev tn0 mode tun",
            "link set tn0 up",
            "route add 100.64.0.0/24 dev tn0",
            "route add 2001:db8:5::/64 dev tn0",
        ];
        for cmd in batch_a {
            let mut args = vec!["-n", a];
            args.extend(cmd.split_whitespace());
            ip(&args);
        }
        for cmd in [
            "link set lo up",
            &format!("link set vb mtu {MTU}"),
            "link set vb up",
            "addr add 192.0.2.2/24 dev vb",
            "addr add 2001:db8:1::2/64 dev vb nodad",
        ] {
            let mut args = vec!["-n", b];
            args.extend(cmd.split_whitespace());
            ip(&args);
        }
        lab
    }

    fn peer_mac(&self) -> String {
        let json = ip(&["-n", &self.b, "-j", "link", "show", "dev", "vb"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output is JSON");
        v[0]["address"]
            .as_str()
            .expect("vb has an address")
            .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `body` inside namespace A: in the child, directly; in the parent, by building the lab
/// and re-executing this test there.
fn in_lab(test: &str, body: impl FnOnce(&Ctx)) {
    if let Ok(peer) = std::env::var(CHILD) {
        body(&Ctx {
            peer_mac: parse_mac(&peer),
        });
        return;
    }
    let lab = Lab::new();
    let exe = std::env::current_exe().expect("test binary path");
    let exe = exe.to_str().expect("utf-8 path");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.a, exe, "--exact", test, "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD, lab.peer_mac())
        .output()
        .expect("re-run the test inside the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture, kept by the harness otherwise.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} inside {}:\n{stdout}\n{stderr}",
        lab.a
    );
}

struct Ctx {
    peer_mac: [u8; 6],
}

fn parse_mac(s: &str) -> [u8; 6] {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex MAC"))
        .collect();
    bytes.try_into().expect("6-byte MAC")
}

/// Reads a file of namespace A's sysfs (`ip netns exec` mounts one for the namespace).
fn sysfs(ifname: &str, attr: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{attr}"))
        .expect("sysfs")
        .trim()
        .to_owned()
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// Resolves until Ready (at most 3 s), checking that the first answer is Pending or Ready.
fn resolve_ready(r: &mut Resolver, dst: IpAddr) -> NextHop {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut first = true;
    loop {
        match r.resolve(dst).expect("resolve") {
            Resolution::Ready(hop) => return hop,
            Resolution::Pending { .. } if Instant::now() < deadline => {}
            other if first => panic!("{dst}: first answer {other:?}, want Pending or Ready"),
            other => panic!("{dst}: still {other:?} after 3 s"),
        }
        first = false;
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_via_veth(r: &mut Resolver, ctx: &Ctx, dst: &str, gateway: Option<&str>) {
    let va: u32 = sysfs("va", "ifindex").parse().expect("ifindex");
    let hop = resolve_ready(r, addr(dst));
    assert_eq!(
        hop,
        NextHop {
            ifindex: va,
            src_mac: parse_mac(&sysfs("va", "address")),
            dst_mac: ctx.peer_mac,
            mtu: MTU,
            gateway: gateway.map(addr),
        },
        "{dst}"
    );
}

fn check_not_deliverable(r: &mut Resolver) {
    for (dst, want) in [
        ("192.0.2.1", Resolution::Local),
        ("127.0.0.1", Resolution::Local),
        ("2001:db8:1::1", Resolution::Local),
        ("::1", Resolution::Local),
        ("203.0.113.5", Resolution::Unreachable),
        ("2001:db8:3::5", Resolution::Unreachable),
        ("198.18.1.1", Resolution::Unreachable),
        ("198.18.2.1", Resolution::Unreachable),
        ("2001:db8:4::1", Resolution::Unreachable),
        ("198.18.3.1", Resolution::Unreachable),
        ("2001:db8:ff::1", Resolution::Unreachable),
    ] {
        assert_eq!(r.resolve(addr(dst)).expect(dst), want, "{dst}");
    }
}

#[test]
fn ipv4_on_link_and_via_gateway() {
    in_lab("ipv4_on_link_and_via_gateway", |ctx| {
        let mut r = Resolver::new().expect("netlink socket");
        check_via_veth(&mut r, ctx, "192.0.2.2", None);
        check_via_veth(&mut r, ctx, "198.51.100.7", Some("192.0.2.2"));
    });
}

#[test]
fn ipv6_on_link_and_via_gateway() {
    in_lab("ipv6_on_link_and_via_gateway", |ctx| {
        let mut r = Resolver::new().expect("netlink socket");
        check_via_veth(&mut r, ctx, "2001:db8:1::2", None);
        check_via_veth(&mut r, ctx, "2001:db8:2::7", Some("2001:db8:1::2"));
    });
}

#[test]
fn gateway_is_resolved_first_then_on_link_neighbour_is_cached() {
    in_lab(
        "gateway_is_resolved_first_then_on_link_neighbour_is_cached",
        |ctx| {
            let mut r = Resolver::new().expect("netlink socket");
            // Resolving behind the gateway leaves the gateway's entry valid, so the on-link
            // lookup of the same address is Ready at once.
            check_via_veth(&mut r, ctx, "198.51.100.9", Some("192.0.2.2"));
            match r.resolve(addr("192.0.2.2")).expect("resolve") {
                Resolution::Ready(hop) => assert_eq!(hop.dst_mac, ctx.peer_mac),
                other => panic!("want Ready, got {other:?}"),
            }
        },
    );
}

#[test]
fn local_and_unreachable() {
    in_lab("local_and_unreachable", |_| {
        let mut r = Resolver::new().expect("netlink socket");
        check_not_deliverable(&mut r);
        // the interface's own global addresses (link-local fe80:: is not global)
        let va = r.ifindex("va").expect("va");
        let own = r.addresses(va).expect("RTM_GETADDR");
        assert_eq!(
            own,
            vec![addr("192.0.2.1"), addr("2001:db8:1::1")],
            "{own:?}"
        );
        let lo = r.ifindex("lo").expect("lo");
        assert!(r.addresses(lo).expect("lo addresses").is_empty());
    });
}

#[test]
fn silent_neighbour_stays_pending_and_permanent_one_is_ready() {
    in_lab(
        "silent_neighbour_stays_pending_and_permanent_one_is_ready",
        |_| {
            let mut r = Resolver::new().expect("netlink socket");
            let va = r.ifindex("va").expect("va");
            for dst in ["192.0.2.50", "2001:db8:1::50"] {
                for _ in 0..3 {
                    let got = r.resolve(addr(dst)).expect("resolve");
                    assert_eq!(
                        got,
                        Resolution::Pending {
                            ifindex: va,
                            next_hop: addr(dst)
                        }
                    );
                }
            }
            // The trigger really made the kernel create the entry and start probing.
            let neigh = ip(&["neigh", "show", "192.0.2.50", "dev", "va"]);
            assert!(
                neigh.contains("INCOMPLETE") || neigh.contains("FAILED"),
                "{neigh}"
            );

            ip(&[
                "neigh",
                "add",
                "192.0.2.99",
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "va",
                "nud",
                "permanent",
            ]);
            match r.resolve(addr("192.0.2.99")).expect("resolve") {
                Resolution::Ready(hop) => assert_eq!(hop.dst_mac, [2, 0, 0, 0, 0, 0x99]),
                other => panic!("want Ready, got {other:?}"),
            }
        },
    );
}

#[test]
fn point_to_point_link_needs_no_neighbour() {
    in_lab("point_to_point_link_needs_no_neighbour", |_| {
        let mut r = Resolver::new().expect("netlink socket");
        let tn0 = r.ifindex("tn0").expect("tn0");
        for dst in ["100.64.0.9", "2001:db8:5::9"] {
            assert_eq!(
                r.resolve(addr(dst)).expect("resolve"),
                Resolution::Ready(NextHop {
                    ifindex: tn0,
                    src_mac: [0; 6],
                    dst_mac: [0; 6],
                    mtu: 1500,
                    gateway: None,
                }),
                "{dst}"
            );
        }
    });
}

#[test]
fn link_lookup_and_refresh() {
    in_lab("link_lookup_and_refresh", |_| {
        let mut r = Resolver::new().expect("netlink socket");
        let va = r.ifindex("va").expect("va");
        assert_eq!(va.to_string(), sysfs("va", "ifindex"));
        let link = r.link(va).expect("link").clone();
        assert_eq!(link.name, "va");
        assert_eq!(link.mtu, MTU);
        assert_eq!(link.mac, Some(parse_mac(&sysfs("va", "address"))));

        let lo = r.ifindex("lo").expect("lo");
        assert_eq!(
            r.link(lo).expect("lo").mac,
            None,
            "loopback is not Ethernet"
        );

        let missing = r.ifindex("nosuchdev0").expect_err("no such device");
        assert_eq!(
            missing.raw_os_error(),
            Some(rustix::io::Errno::NODEV.raw_os_error())
        );
        assert!(r.link(999_999).is_err());

        // The cache keeps the old MTU until asked to refresh.
        ip(&["link", "set", "va", "mtu", "1280"]);
        assert_eq!(r.link(va).expect("cached").mtu, MTU);
        assert_eq!(r.refresh_link(va).expect("refreshed").mtu, 1280);
        assert_eq!(r.link(va).expect("cached").mtu, 1280);
    });
}
