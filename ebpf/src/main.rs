//! xsec's XDP steering program: which received frames go to the dataplane worker's AF_XDP
//! socket, which keep the kernel's path, and which are dropped.
//!
//! The rule is fail-closed: an IP packet the gateway would *forward* is decided by the SPD in
//! the worker, never by the kernel. Only what is addressed to the gateway itself (its own
//! addresses in `LOCAL_V4`/`LOCAL_V6`, multicast, broadcast, IPv6 link-local: ND included),
//! ARP and frames that are not IP (VLAN-tagged ones: a VLAN sub-interface is not xsecd's)
//! keep the kernel's path; everything else goes to the worker, and when the RX queue has no
//! socket (xsecd starting, stopping, gone, or a queue no worker covers) it is dropped and
//! counted (`no_socket`), never passed. What the kernel does with what it keeps — forward
//! it after a DNAT, say — is bounded by the nftables forward guard xsecd installs beside
//! this program: the two together are the fail-closed design.
//!
//! Two entry points share the maps of this one object:
//! - `xsec_unprotected` (WAN): ESP, AH and IPComp (IP protocols 50, 51 and 108, to any
//!   address: the `esp` counter counts all three); to the gateway: ESP in
//!   UDP/4500 (RFC 3948) and NAT keepalives on it, UDP to the daemon's tunnel ports, UDP
//!   fragments from a UDP-encapsulated SA's peer (for reassembly); IKE and other traffic to
//!   the gateway pass. Everything not addressed to the gateway: to the worker (the inbound
//!   SPD decides).
//! - `xsec_protected` (LAN): everything not addressed to the gateway goes to the worker (the
//!   outbound SPD decides: PROTECT, BYPASS, DISCARD).
//!
//! Every frame bumps `rx` and exactly one class counter of its (side, RX queue) row. Only
//! untagged Ethernet is classified. Every packet access is bounds-checked against `data_end`
//! right before it, in the shape the verifier follows.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{HashMap, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use core::mem::offset_of;
use xsec_common::{
    AddrV4, AddrV6, COUNTER_ROWS, LOCAL_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS, MAX_QUEUES,
    NAT_KEEPALIVE, PEERS_MAX_ENTRIES, PORT_IKE, PORT_NAT_T, SIDE_PROTECTED, SIDE_UNPROTECTED,
    UDP_PORTS_MAX_ENTRIES, XdpCounters, counter_index, ethertype, ipproto,
};

#[map]
static XSKS_UNPROT: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static XSKS_PROT: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static UDP_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(UDP_PORTS_MAX_ENTRIES, 0);
#[map]
static LOCAL_V4: HashMap<AddrV4, u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);
#[map]
static LOCAL_V6: HashMap<AddrV6, u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);
#[map]
static PEERS_V4: HashMap<AddrV4, u8> = HashMap::with_max_entries(PEERS_MAX_ENTRIES, 0);
#[map]
static PEERS_V6: HashMap<AddrV6, u8> = HashMap::with_max_entries(PEERS_MAX_ENTRIES, 0);
#[map]
static COUNTERS: PerCpuArray<XdpCounters> = PerCpuArray::with_max_entries(COUNTER_ROWS, 0);

/// The kernel wants a license string; no GPL-only helper is used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

/// What a frame is. The discriminant is the index of its `u64` in [`XdpCounters`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Class {
    Esp = 1,
    UdpEsp = 2,
    TunnelPort = 3,
    Spd = 4,
    Fragment = 5,
    Ike = 6,
    Keepalive = 7,
    ArpNd = 8,
    Local = 9,
    Other = 10,
    Malformed = 12,
}

const RX_SLOT: usize = 0;
const NO_SOCKET_SLOT: usize = 11;
const COUNTER_SLOTS: usize = core::mem::size_of::<XdpCounters>() / 8;

// The class discriminants index the counter struct: keep them in step with xsec-common.
const _: () = {
    assert!(offset_of!(XdpCounters, rx) == 8 * RX_SLOT);
    assert!(offset_of!(XdpCounters, esp) == 8 * Class::Esp as usize);
    assert!(offset_of!(XdpCounters, udp_esp) == 8 * Class::UdpEsp as usize);
    assert!(offset_of!(XdpCounters, tunnel_port) == 8 * Class::TunnelPort as usize);
    assert!(offset_of!(XdpCounters, spd) == 8 * Class::Spd as usize);
    assert!(offset_of!(XdpCounters, fragment) == 8 * Class::Fragment as usize);
    assert!(offset_of!(XdpCounters, ike) == 8 * Class::Ike as usize);
    assert!(offset_of!(XdpCounters, keepalive) == 8 * Class::Keepalive as usize);
    assert!(offset_of!(XdpCounters, arp_nd) == 8 * Class::ArpNd as usize);
    assert!(offset_of!(XdpCounters, local) == 8 * Class::Local as usize);
    assert!(offset_of!(XdpCounters, other) == 8 * Class::Other as usize);
    assert!(offset_of!(XdpCounters, no_socket) == 8 * NO_SOCKET_SLOT);
    assert!(offset_of!(XdpCounters, malformed) == 8 * Class::Malformed as usize);
    assert!(COUNTER_SLOTS == 13);
};

/// What the program does with a class.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Redirect,
    Pass,
    Drop,
}

impl Class {
    #[inline(always)]
    fn action(self) -> Action {
        match self {
            Class::Esp
            | Class::UdpEsp
            | Class::TunnelPort
            | Class::Spd
            | Class::Fragment
            | Class::Keepalive => Action::Redirect,
            Class::Ike | Class::ArpNd | Class::Local | Class::Other => Action::Pass,
            Class::Malformed => Action::Drop,
        }
    }
}

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;

/// The frame between `data` and `data_end`.
struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    fn new(ctx: &XdpContext) -> Self {
        Frame {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// `N` bytes at `off`, if the frame has them.
    ///
    /// `N` is at least 2: LLVM rewrites a one-byte check `p + 1 > end` as `p >= end`, which
    /// the verifier does not accept as proof that `*p` is inside the packet.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        const { assert!(N >= 2) };
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) lies inside the frame (checked just above against data_end, which
        // the verifier also sees), the frame outlives this program run, and `[u8; N]` has
        // alignment 1 and no invalid bit patterns.
        Some(unsafe { &*(p as *const [u8; N]) })
    }
}

/// The IP header facts both sides classify by.
struct Ip<A> {
    src: A,
    dst: A,
    /// Upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// Offset of the upper-layer header in the frame.
    l4: usize,
    /// A fragment other than the first: the upper-layer header is not here.
    later_fragment: bool,
}

enum Parsed {
    V4(Ip<AddrV4>),
    V6(Ip<AddrV6>),
    Done(Class),
}

/// Ethernet, then IPv4 or IPv6 down to the upper layer. ARP, ND, non-IP and tagged frames
/// are classified here already.
#[inline(always)]
fn parse(f: &Frame) -> Parsed {
    let Some(eth) = f.bytes::<ETH_HLEN>(0) else {
        return Parsed::Done(Class::Malformed);
    };
    match u16::from_be_bytes([eth[12], eth[13]]) {
        ethertype::IPV4 => parse_v4(f),
        ethertype::IPV6 => parse_v6(f),
        ethertype::ARP => Parsed::Done(Class::ArpNd),
        // VLAN/QinQ and anything else: not ours to classify.
        _ => Parsed::Done(Class::Other),
    }
}

#[inline(always)]
fn parse_v4(f: &Frame) -> Parsed {
    let Some(h) = f.bytes::<IPV4_HLEN>(ETH_HLEN) else {
        return Parsed::Done(Class::Malformed);
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < IPV4_HLEN {
        return Parsed::Done(Class::Malformed);
    }
    let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    Parsed::V4(Ip {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        proto: h[9],
        l4: ETH_HLEN + ihl,
        later_fragment: frag_off != 0,
    })
}

#[inline(always)]
fn parse_v6(f: &Frame) -> Parsed {
    let Some(h) = f.bytes::<IPV6_HLEN>(ETH_HLEN) else {
        return Parsed::Done(Class::Malformed);
    };
    if h[0] >> 4 != 6 {
        return Parsed::Done(Class::Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let mut nh = h[6];
    let mut off = ETH_HLEN + IPV6_HLEN;
    let mut later_fragment = false;
    // RFC 8200 §4: a bounded walk; what is still an extension header after it is not
    // classified.
    let mut i = 0;
    while i < MAX_IPV6_EXT_HEADERS {
        i += 1;
        match nh {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS => {
                let Some(e) = f.bytes::<2>(off) else {
                    return Parsed::Done(Class::Malformed);
                };
                nh = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            ipproto::FRAGMENT => {
                let Some(e) = f.bytes::<8>(off) else {
                    return Parsed::Done(Class::Malformed);
                };
                nh = e[0];
                off += 8;
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    // What follows is the middle of the fragmentable part, not a header.
                    later_fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    // An extension header still unwalked here leaves `nh` naming it: no upper-layer rule
    // applies, and the address decides (the worker's parser has the last word).
    // ND (RFC 4861 §4): router/neighbour solicitation and advertisement, redirect. Only to
    // an address the kernel keeps (multicast, link-local, the gateway's own): ND to any other
    // address would be forwarded, so the address decides it like everything else.
    if nh == ipproto::ICMPV6 && !later_fragment && v6_local(&dst) {
        // Type and code: every ICMPv6 message has both.
        match f.bytes::<2>(off) {
            Some(t) if (133..=137).contains(&t[0]) => return Parsed::Done(Class::ArpNd),
            Some(_) => {}
            None => return Parsed::Done(Class::Malformed),
        }
    }
    Parsed::V6(Ip {
        src,
        dst,
        proto: nh,
        l4: off,
        later_fragment,
    })
}

/// Never forwarded by a router, so the kernel's: multicast and limited broadcast.
#[inline(always)]
fn v4_not_forwarded(a: &AddrV4) -> bool {
    a[0] >> 4 == 0xe || *a == [0xff; 4]
}

/// Never forwarded by a router: multicast (ff00::/8) and link-local unicast (fe80::/10).
#[inline(always)]
fn v6_not_forwarded(a: &AddrV6) -> bool {
    a[0] == 0xff || (a[0] == 0xfe && a[1] & 0xc0 == 0x80)
}

/// Addressed to the gateway itself, or never forwarded: the kernel's.
#[inline(always)]
fn v4_local(a: &AddrV4) -> bool {
    v4_not_forwarded(a) || LOCAL_V4.get_ptr(a).is_some()
}

#[inline(always)]
fn v6_local(a: &AddrV6) -> bool {
    v6_not_forwarded(a) || LOCAL_V6.get_ptr(a).is_some()
}

/// The UDP payload at `l4 + 8` of a datagram of UDP length `ulen`: the non-ESP marker
/// (RFC 3948 §2.2, four zero bytes) means IKE; on UDP/4500 a one-byte 0xFF payload is a NAT
/// keepalive (§2.3) and a payload too short for an SPI is malformed. Everything else is `esp`.
#[inline(always)]
fn udp_payload(f: &Frame, l4: usize, ulen: u16, esp: Class, nat_t: bool) -> Class {
    let payload = l4 + UDP_HLEN;
    if usize::from(ulen) < UDP_HLEN + 4 {
        // The length field, not the frame, says how long the payload is: short frames carry
        // Ethernet padding.
        if !nat_t {
            return esp;
        }
        if usize::from(ulen) == UDP_HLEN + 1 {
            // The byte before it (the end of the UDP checksum) is read along: see `bytes`.
            if let Some(b) = f.bytes::<2>(payload - 1)
                && b[1] == NAT_KEEPALIVE
            {
                return Class::Keepalive;
            }
        }
        return Class::Malformed;
    }
    match f.bytes::<4>(payload) {
        Some(m) if *m == [0; 4] => Class::Ike,
        Some(_) => esp,
        // The length field promises more than the frame holds (or a first fragment this
        // short): no SPI to look at.
        None if nat_t => Class::Malformed,
        None => esp,
    }
}

/// A packet addressed to the gateway on the unprotected side: tunnel traffic for the worker,
/// the rest (IKE, management) for the kernel. `peer`: the source is a UDP-encapsulated SA's
/// peer.
#[inline(always)]
fn unprotected_local(f: &Frame, proto: u8, l4: usize, later_fragment: bool, peer: bool) -> Class {
    if proto != ipproto::UDP {
        return Class::Local;
    }
    if later_fragment {
        // No port to steer by. A peer's UDP fragments are the worker's to reassemble (a
        // fragmented ESP-in-UDP packet must not lose its tail to the kernel); IP-fragmented
        // IKE from such a peer is then lost (IKE has its own fragmentation, RFC 7383).
        return if peer { Class::Fragment } else { Class::Local };
    }
    let Some(udp) = f.bytes::<UDP_HLEN>(l4) else {
        return Class::Malformed;
    };
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = u16::from_be_bytes([udp[4], udp[5]]);
    if dport == PORT_IKE {
        return Class::Ike;
    }
    if dport == PORT_NAT_T {
        return udp_payload(f, l4, ulen, Class::UdpEsp, true);
    }
    if UDP_PORTS.get_ptr(&dport).is_some() {
        return udp_payload(f, l4, ulen, Class::TunnelPort, false);
    }
    Class::Local
}

#[inline(always)]
fn classify_unprotected(f: &Frame) -> Class {
    match parse(f) {
        Parsed::Done(c) => c,
        Parsed::V4(ip) => {
            if ipproto::is_ipsec(ip.proto) {
                return Class::Esp;
            }
            if v4_local(&ip.dst) {
                let peer = PEERS_V4.get_ptr(&ip.src).is_some();
                return unprotected_local(f, ip.proto, ip.l4, ip.later_fragment, peer);
            }
            Class::Spd
        }
        Parsed::V6(ip) => {
            if ipproto::is_ipsec(ip.proto) {
                return Class::Esp;
            }
            if v6_local(&ip.dst) {
                let peer = PEERS_V6.get_ptr(&ip.src).is_some();
                return unprotected_local(f, ip.proto, ip.l4, ip.later_fragment, peer);
            }
            Class::Spd
        }
    }
}

#[inline(always)]
fn classify_protected(f: &Frame) -> Class {
    match parse(f) {
        Parsed::Done(c) => c,
        Parsed::V4(ip) if v4_local(&ip.dst) => Class::Local,
        Parsed::V6(ip) if v6_local(&ip.dst) => Class::Local,
        Parsed::V4(_) | Parsed::V6(_) => Class::Spd,
    }
}

/// Redirect, pass or drop, and count.
#[inline(always)]
fn finish(side: u32, queue: u32, class: Class, xsks: &XskMap) -> u32 {
    let (action, no_socket) = match class.action() {
        // Fail closed: the fallback is XDP_DROP. A queue without a socket (xsecd starting,
        // stopping or gone; a queue no worker covers) never hands the kernel a packet only
        // the SPD may forward.
        Action::Redirect => match xsks.redirect(queue, u64::from(XDP_DROP)) {
            Ok(a) if a == XDP_REDIRECT => (XDP_REDIRECT, false),
            _ => (XDP_DROP, true),
        },
        Action::Pass => (XDP_PASS, false),
        Action::Drop => (XDP_DROP, false),
    };
    if let Some(row) = COUNTERS.get_ptr_mut(counter_index(side, queue)) {
        let row = row.cast::<u64>();
        // SAFETY: `row` points to this CPU's `XdpCounters` in the map (non-null from a
        // successful lookup, valid for the program run); the struct is `repr(C)` with
        // `COUNTER_SLOTS` `u64`s and every slot index used is below that (const-asserted
        // above). The value is per-CPU and XDP runs without preemption, so nothing races.
        unsafe {
            *row.add(RX_SLOT) += 1;
            *row.add(class as usize) += 1;
            if no_socket {
                *row.add(NO_SOCKET_SLOT) += 1;
            }
        }
    }
    action
}

#[xdp]
pub fn xsec_unprotected(ctx: XdpContext) -> u32 {
    let f = Frame::new(&ctx);
    let class = classify_unprotected(&f);
    finish(SIDE_UNPROTECTED, ctx.rx_queue_index(), class, &XSKS_UNPROT)
}

#[xdp]
pub fn xsec_protected(ctx: XdpContext) -> u32 {
    let f = Frame::new(&ctx);
    let class = classify_protected(&f);
    finish(SIDE_PROTECTED, ctx.rx_queue_index(), class, &XSKS_PROT)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Nothing above can panic (no indexing outside fixed arrays, no arithmetic that traps
    // with overflow checks off); the verifier would reject a program that reached here.
    loop {}
}
