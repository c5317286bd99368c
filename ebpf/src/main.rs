//! xsec's XDP steering program: which received frames go to the dataplane worker's AF_XDP
//! socket and which keep the kernel's path.
//!
//! Two entry points share the maps of this one object:
//! - `xsec_unprotected` (WAN): ESP (IP protocol 50), ESP in UDP/4500 (RFC 3948), UDP to the
//!   daemon's tunnel ports, and plaintext that a protected policy says should have arrived
//!   protected (source in its remote ranges, destination in its local ranges; the worker counts
//!   and drops it), and NAT keepalives on UDP/4500 (the worker consumes and counts them: with
//!   manual keys no IKE daemon listens on 4500, and the kernel would answer each keepalive with
//!   a port-unreachable in clear). IKE, ARP/ND and everything else pass.
//! - `xsec_protected` (LAN): source in the local ranges and destination in the remote ranges of
//!   the outbound PROTECT/DISCARD policies. Addresses only: the SPD in userspace decides by
//!   protocol and ports. ARP/ND and everything else (BYPASS traffic) pass.
//!
//! Every frame bumps `rx` and exactly one class counter of its (side, RX queue) row. Only
//! untagged Ethernet is classified. Every packet access is bounds-checked against `data_end`
//! right before it, in the shape the verifier follows.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_PASS, XDP_REDIRECT};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{HashMap, LpmTrie, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use core::mem::offset_of;
use xsec_common::{
    COUNTER_ROWS, ClassMask, LPM_MAX_ENTRIES, LpmV4, LpmV6, MAX_IPV6_EXT_HEADERS, MAX_QUEUES,
    NAT_KEEPALIVE, PORT_IKE, PORT_NAT_T, SIDE_PROTECTED, SIDE_UNPROTECTED, UDP_PORTS_MAX_ENTRIES,
    XdpCounters, counter_index, ethertype, ipproto,
};

#[map]
static XSKS_UNPROT: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static XSKS_PROT: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static UDP_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(UDP_PORTS_MAX_ENTRIES, 0);
#[map]
static INB_SRC_V4: LpmTrie<LpmV4, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static INB_DST_V4: LpmTrie<LpmV4, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static INB_SRC_V6: LpmTrie<LpmV6, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static INB_DST_V6: LpmTrie<LpmV6, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static OUT_SRC_V4: LpmTrie<LpmV4, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static OUT_DST_V4: LpmTrie<LpmV4, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static OUT_SRC_V6: LpmTrie<LpmV6, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map]
static OUT_DST_V6: LpmTrie<LpmV6, ClassMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
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
    Protected = 4,
    UnprotPlain = 5,
    Ike = 6,
    Keepalive = 7,
    ArpNd = 8,
    Other = 9,
    Malformed = 11,
}

const RX_SLOT: usize = 0;
const REDIRECT_FAILED_SLOT: usize = 10;
const COUNTER_SLOTS: usize = core::mem::size_of::<XdpCounters>() / 8;

// The class discriminants index the counter struct: keep them in step with xsec-common.
const _: () = {
    assert!(offset_of!(XdpCounters, rx) == 8 * RX_SLOT);
    assert!(offset_of!(XdpCounters, esp) == 8 * Class::Esp as usize);
    assert!(offset_of!(XdpCounters, udp_esp) == 8 * Class::UdpEsp as usize);
    assert!(offset_of!(XdpCounters, tunnel_port) == 8 * Class::TunnelPort as usize);
    assert!(offset_of!(XdpCounters, protected) == 8 * Class::Protected as usize);
    assert!(offset_of!(XdpCounters, unprot_plain) == 8 * Class::UnprotPlain as usize);
    assert!(offset_of!(XdpCounters, ike) == 8 * Class::Ike as usize);
    assert!(offset_of!(XdpCounters, keepalive) == 8 * Class::Keepalive as usize);
    assert!(offset_of!(XdpCounters, arp_nd) == 8 * Class::ArpNd as usize);
    assert!(offset_of!(XdpCounters, other) == 8 * Class::Other as usize);
    assert!(offset_of!(XdpCounters, redirect_failed) == 8 * REDIRECT_FAILED_SLOT);
    assert!(offset_of!(XdpCounters, malformed) == 8 * Class::Malformed as usize);
    assert!(COUNTER_SLOTS == 12);
};

impl Class {
    #[inline(always)]
    fn redirects(self) -> bool {
        matches!(
            self,
            Class::Esp
                | Class::UdpEsp
                | Class::TunnelPort
                | Class::Protected
                | Class::UnprotPlain
                | Class::Keepalive
        )
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
    V4(Ip<LpmV4>),
    V6(Ip<LpmV6>),
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
    if !later_fragment
        && matches!(
            nh,
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::FRAGMENT
        )
    {
        return Parsed::Done(Class::Other);
    }
    // ND (RFC 4861 §4): router/neighbour solicitation and advertisement, redirect.
    if nh == ipproto::ICMPV6 && !later_fragment {
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

/// Multicast or limited broadcast: never protected (the SPD bypasses it too).
#[inline(always)]
fn v4_multicast(a: &LpmV4) -> bool {
    a[0] >> 4 == 0xe || *a == [0xff; 4]
}

#[inline(always)]
fn v6_multicast(a: &LpmV6) -> bool {
    a[0] == 0xff
}

/// Whether one selector class covers both addresses (see [`ClassMask`]).
#[inline(always)]
fn pair_v4(
    src_map: &LpmTrie<LpmV4, ClassMask>,
    dst_map: &LpmTrie<LpmV4, ClassMask>,
    src: LpmV4,
    dst: LpmV4,
) -> bool {
    let Some(s) = src_map.get(Key::new(32, src)) else {
        return false;
    };
    let s = *s;
    match dst_map.get(Key::new(32, dst)) {
        Some(d) => s & *d != 0,
        None => false,
    }
}

#[inline(always)]
fn pair_v6(
    src_map: &LpmTrie<LpmV6, ClassMask>,
    dst_map: &LpmTrie<LpmV6, ClassMask>,
    src: LpmV6,
    dst: LpmV6,
) -> bool {
    let Some(s) = src_map.get(Key::new(128, src)) else {
        return false;
    };
    let s = *s;
    match dst_map.get(Key::new(128, dst)) {
        Some(d) => s & *d != 0,
        None => false,
    }
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

#[inline(always)]
fn classify_unprotected(f: &Frame) -> Class {
    match parse(f) {
        Parsed::Done(c) => c,
        Parsed::V4(ip) => {
            if let Some(c) = unprotected_l4(f, ip.proto, ip.l4, ip.later_fragment) {
                return c;
            }
            if v4_multicast(&ip.dst) {
                return Class::Other;
            }
            if pair_v4(&INB_SRC_V4, &INB_DST_V4, ip.src, ip.dst) {
                return Class::UnprotPlain;
            }
            Class::Other
        }
        Parsed::V6(ip) => {
            if let Some(c) = unprotected_l4(f, ip.proto, ip.l4, ip.later_fragment) {
                return c;
            }
            if v6_multicast(&ip.dst) {
                return Class::Other;
            }
            if pair_v6(&INB_SRC_V6, &INB_DST_V6, ip.src, ip.dst) {
                return Class::UnprotPlain;
            }
            Class::Other
        }
    }
}

/// The protocol/port part of the unprotected side's decision; `None` leaves it to the
/// address check.
#[inline(always)]
fn unprotected_l4(f: &Frame, proto: u8, l4: usize, later_fragment: bool) -> Option<Class> {
    if proto == ipproto::ESP {
        return Some(Class::Esp);
    }
    if later_fragment {
        // No upper-layer header to classify. Passing is harmless: a datagram whose first
        // fragment the worker took is never reassembled by the kernel.
        return Some(Class::Other);
    }
    if proto != ipproto::UDP {
        return None;
    }
    let Some(udp) = f.bytes::<UDP_HLEN>(l4) else {
        return Some(Class::Malformed);
    };
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = u16::from_be_bytes([udp[4], udp[5]]);
    if dport == PORT_IKE {
        return Some(Class::Ike);
    }
    if dport == PORT_NAT_T {
        return Some(udp_payload(f, l4, ulen, Class::UdpEsp, true));
    }
    if UDP_PORTS.get_ptr(dport).is_some() {
        return Some(udp_payload(f, l4, ulen, Class::TunnelPort, false));
    }
    None
}

#[inline(always)]
fn classify_protected(f: &Frame) -> Class {
    match parse(f) {
        Parsed::Done(c) => c,
        Parsed::V4(ip) => {
            if !v4_multicast(&ip.dst) && pair_v4(&OUT_SRC_V4, &OUT_DST_V4, ip.src, ip.dst) {
                Class::Protected
            } else {
                Class::Other
            }
        }
        Parsed::V6(ip) => {
            if !v6_multicast(&ip.dst) && pair_v6(&OUT_SRC_V6, &OUT_DST_V6, ip.src, ip.dst) {
                Class::Protected
            } else {
                Class::Other
            }
        }
    }
}

/// Redirect or pass, and count.
#[inline(always)]
fn finish(side: u32, queue: u32, class: Class, xsks: &XskMap) -> u32 {
    let (action, failed) = if class.redirects() {
        // Fallback XDP_PASS: a queue without a socket keeps the kernel's path.
        match xsks.redirect(queue, u64::from(XDP_PASS)) {
            Ok(_) => (XDP_REDIRECT, false),
            Err(_) => (XDP_PASS, true),
        }
    } else {
        (XDP_PASS, false)
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
            if failed {
                *row.add(REDIRECT_FAILED_SLOT) += 1;
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
