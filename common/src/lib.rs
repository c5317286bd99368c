//! Shared between the XDP program (`ebpf/`) and the daemon (`xsecd/`).
//!
//! The XDP steering program decides, per received frame, whether the frame goes to the
//! AF_XDP socket of its RX queue (the dataplane worker) or keeps the kernel's path. This
//! crate holds everything both sides must agree on: map names and sizes, the address key layout,
//! the per-queue counter struct and its indexing, and the port/protocol constants the program
//! classifies by. The program builds it for `bpfel-unknown-none`; the daemon enables the
//! `user` feature to get `aya::Pod` for the map value types.
#![no_std]

/// Map names, as the daemon looks them up in the loaded object. The program declares its
/// statics with exactly these names (the integration test opens every one of them).
pub mod maps {
    /// `XskMap`, index = RX queue of the unprotected (WAN) interface.
    pub const XSKS_UNPROT: &str = "XSKS_UNPROT";
    /// `XskMap`, index = RX queue of the protected (LAN) interface.
    pub const XSKS_PROT: &str = "XSKS_PROT";
    /// `HashMap<u16, u8>`: UDP destination ports (host order) that carry tunnel traffic.
    pub const UDP_PORTS: &str = "UDP_PORTS";
    /// `HashMap<[u8; 4], u8>`: the gateway's own IPv4 addresses (every interface): traffic
    /// to them is the kernel's (IKE, management), everything else the SPD decides.
    pub const LOCAL_V4: &str = "LOCAL_V4";
    /// `HashMap<[u8; 16], u8>`: the gateway's own IPv6 addresses.
    pub const LOCAL_V6: &str = "LOCAL_V6";
    /// `HashMap<[u8; 4], u8>`: peers of UDP-encapsulated SAs: their UDP fragments to the
    /// gateway go to the worker for reassembly (a later fragment has no port to steer by).
    pub const PEERS_V4: &str = "PEERS_V4";
    /// `HashMap<[u8; 16], u8>`: the same for IPv6 peers.
    pub const PEERS_V6: &str = "PEERS_V6";
    /// `PerCpuArray<XdpCounters>`, index = [`counter_index`](super::counter_index).
    pub const COUNTERS: &str = "COUNTERS";

    /// Every map of the object.
    pub const ALL: [&str; 8] = [
        XSKS_UNPROT,
        XSKS_PROT,
        UDP_PORTS,
        LOCAL_V4,
        LOCAL_V6,
        PEERS_V4,
        PEERS_V6,
        COUNTERS,
    ];
}

/// Names of the two XDP entry points in the object.
pub mod programs {
    /// Attached to the unprotected (WAN) interface.
    pub const UNPROTECTED: &str = "xsec_unprotected";
    /// Attached to the protected (LAN) interface.
    pub const PROTECTED: &str = "xsec_protected";
}

/// RX queues per interface the program can steer (size of each `XskMap`). Frames on a higher
/// queue are never redirected and are counted in the row of queue `MAX_QUEUES - 1`.
pub const MAX_QUEUES: u32 = 64;
/// Row group of the unprotected interface in [`maps::COUNTERS`].
pub const SIDE_UNPROTECTED: u32 = 0;
/// Row group of the protected interface in [`maps::COUNTERS`].
pub const SIDE_PROTECTED: u32 = 1;
/// Rows in [`maps::COUNTERS`].
pub const COUNTER_ROWS: u32 = 2 * MAX_QUEUES;

/// Entries in [`maps::UDP_PORTS`].
pub const UDP_PORTS_MAX_ENTRIES: u32 = 64;
/// Entries in each of [`maps::LOCAL_V4`] and [`maps::LOCAL_V6`].
pub const LOCAL_MAX_ENTRIES: u32 = 1024;
/// Entries in each of [`maps::PEERS_V4`] and [`maps::PEERS_V6`].
pub const PEERS_MAX_ENTRIES: u32 = 16384;

/// The row of [`maps::COUNTERS`] for a side and an RX queue (clamped to the last queue).
#[inline(always)]
pub const fn counter_index(side: u32, queue: u32) -> u32 {
    let q = if queue < MAX_QUEUES {
        queue
    } else {
        MAX_QUEUES - 1
    };
    side * MAX_QUEUES + q
}

/// Key of [`maps::LOCAL_V4`] and [`maps::PEERS_V4`]: the address in network byte order.
pub type AddrV4 = [u8; 4];
/// Key of [`maps::LOCAL_V6`] and [`maps::PEERS_V6`]: the address in network byte order.
pub type AddrV6 = [u8; 16];

/// Ethernet type numbers the program looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// IP protocol / IPv6 next-header numbers the program looks at.
pub mod ipproto {
    pub const HOPOPTS: u8 = 0;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const IPCOMP: u8 = 108;

    /// The IPsec protocols the workers process wherever they are addressed: ESP, AH and
    /// IPComp (RFC 3173).
    #[inline(always)]
    pub const fn is_ipsec(p: u8) -> bool {
        p == ESP || p == AH || p == IPCOMP
    }
    pub const ICMPV6: u8 = 58;
    pub const DSTOPTS: u8 = 60;
}

/// IKE (RFC 7296 §2): always left to the kernel (the daemon's IKE socket).
pub const PORT_IKE: u16 = 500;
/// UDP encapsulation of ESP and IKE (RFC 3948 §2): ESP unless the non-ESP marker is present.
pub const PORT_NAT_T: u16 = 4500;
/// NAT-keepalive payload (RFC 3948 §2.3): one byte 0xFF.
pub const NAT_KEEPALIVE: u8 = 0xff;
/// IPv6 extension headers the program walks before giving up (RFC 8200 §4.1 order has at most
/// hop-by-hop, dest-opts, routing, fragment, dest-opts before the upper layer).
pub const MAX_IPV6_EXT_HEADERS: u32 = 6;

/// Per-queue counters of one side, all `u64` (one per CPU in the map; the daemon sums).
///
/// `rx` counts every frame the program saw. Every frame is counted in exactly one class:
/// a redirect class (`esp`, `udp_esp`, `tunnel_port`, `spd`, `fragment`, `keepalive`: counted
/// when the redirect is attempted), a pass class (`ike`, `arp_nd`, `local`, `other`) or
/// `malformed` (dropped). `no_socket` additionally counts redirects that found no socket for
/// the queue: those frames are dropped, never passed (fail closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames seen.
    pub rx: u64,
    /// Redirected: IP protocols 50 (ESP), 51 (AH) and 108 (IPComp).
    pub esp: u64,
    /// Redirected: ESP in UDP/4500 (RFC 3948) to the gateway.
    pub udp_esp: u64,
    /// Redirected: UDP to the gateway on one of the tunnel ports of [`maps::UDP_PORTS`].
    pub tunnel_port: u64,
    /// Redirected: an IP packet not addressed to the gateway, which only the SPD may forward
    /// (PROTECT, BYPASS or DISCARD, implicit DISCARD included).
    pub spd: u64,
    /// Redirected: a UDP fragment from a UDP-encapsulated SA's peer to the gateway, for
    /// reassembly.
    pub fragment: u64,
    /// Passed: IKE (UDP/500, or a non-ESP marker on UDP/4500 or a tunnel port) to the gateway.
    pub ike: u64,
    /// Redirected: NAT keepalive on UDP/4500 (consumed and counted by the worker).
    pub keepalive: u64,
    /// Passed: ARP, IPv6 neighbour discovery (ICMPv6 133–137).
    pub arp_nd: u64,
    /// Passed: addressed to the gateway itself, or multicast, broadcast or IPv6 link-local
    /// (never forwarded by a router).
    pub local: u64,
    /// Passed: not IP (VLAN-tagged and other Ethernet types).
    pub other: u64,
    /// A redirect found no socket for the queue: the frame was dropped.
    pub no_socket: u64,
    /// Dropped: too short or inconsistent headers.
    pub malformed: u64,
}

impl XdpCounters {
    /// The counters as (name, value), in field order.
    pub fn fields(&self) -> [(&'static str, u64); 13] {
        [
            ("rx", self.rx),
            ("esp", self.esp),
            ("udp_esp", self.udp_esp),
            ("tunnel_port", self.tunnel_port),
            ("spd", self.spd),
            ("fragment", self.fragment),
            ("ike", self.ike),
            ("keepalive", self.keepalive),
            ("arp_nd", self.arp_nd),
            ("local", self.local),
            ("other", self.other),
            ("no_socket", self.no_socket),
            ("malformed", self.malformed),
        ]
    }

    /// Field-wise sum (wrapping: counters are monotonic and only ever compared by difference).
    pub fn add(&mut self, o: &XdpCounters) {
        self.rx = self.rx.wrapping_add(o.rx);
        self.esp = self.esp.wrapping_add(o.esp);
        self.udp_esp = self.udp_esp.wrapping_add(o.udp_esp);
        self.tunnel_port = self.tunnel_port.wrapping_add(o.tunnel_port);
        self.spd = self.spd.wrapping_add(o.spd);
        self.fragment = self.fragment.wrapping_add(o.fragment);
        self.ike = self.ike.wrapping_add(o.ike);
        self.keepalive = self.keepalive.wrapping_add(o.keepalive);
        self.arp_nd = self.arp_nd.wrapping_add(o.arp_nd);
        self.local = self.local.wrapping_add(o.local);
        self.other = self.other.wrapping_add(o.other);
        self.no_socket = self.no_socket.wrapping_add(o.no_socket);
        self.malformed = self.malformed.wrapping_add(o.malformed);
    }

    pub fn is_zero(&self) -> bool {
        *self == XdpCounters::default()
    }
}

// SAFETY: `XdpCounters` is `repr(C)`, all fields are `u64` (no padding, every bit pattern is
// valid), and it is `Copy + 'static`: exactly what aya needs to copy it to and from maps.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for XdpCounters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        assert_eq!(counter_index(SIDE_UNPROTECTED, 0), 0);
        assert_eq!(counter_index(SIDE_PROTECTED, 3), MAX_QUEUES + 3);
        assert_eq!(counter_index(SIDE_PROTECTED, 1000), COUNTER_ROWS - 1);
        assert_eq!(core::mem::size_of::<XdpCounters>(), 13 * 8);
    }
}
