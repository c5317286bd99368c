//! Next-hop resolution from the kernel's routing and neighbour tables over rtnetlink.
//!
//! xsecd transmits frames itself (AF_XDP), so for a destination it needs what the kernel's IP
//! output path would have used: the egress interface, that interface's MAC and MTU, and the
//! link-layer address of the next hop. Workers cache [`NextHop`]s; on a miss they ask the control
//! thread, which owns a [`Resolver`]. Nothing here is on the packet path: every call is a few
//! blocking netlink round trips, each bounded by [`REPLY_TIMEOUT`].
//!
//! The steps are those of `ip route get` followed by `ip neigh get` (rtnetlink(7)):
//! 1. `RTM_GETROUTE` for the destination gives the route type, output interface and gateway.
//! 2. `RTM_GETLINK` for that interface gives its MAC and MTU (cached per ifindex; see
//!    [`Resolver::refresh_link`]).
//! 3. `RTM_GETNEIGH` for the gateway, or the destination itself when it is on-link. A missing or
//!    unusable entry is kicked with `RTM_NEWNEIGH` + `NTF_USE`, which makes the kernel send the
//!    ARP request / neighbour solicitation, and the caller is told to retry
//!    ([`Resolution::Pending`]).
//!
//! The kernel is trusted but its replies are still parsed defensively: a short or malformed
//! message is an `InvalidData` error, never a panic, and a netlink error carries its errno.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

/// Longest a single netlink request waits for its reply before failing with `TimedOut`.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// Where to send frames for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface.
    pub ifindex: u32,
    /// The egress interface's own MAC (zeroes if it has none, e.g. a tun device).
    pub src_mac: [u8; 6],
    /// The next hop's MAC (zeroes on a link without link-layer addresses).
    pub dst_mac: [u8; 6],
    /// The egress interface's MTU (saturated to `u16::MAX`, e.g. for loopback's 65536).
    pub mtu: u16,
    /// The gateway, or `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
}

/// Outcome of [`Resolver::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Everything needed to build the frame is known.
    Ready(NextHop),
    /// Route found, neighbour not (yet) valid: resolution was triggered (`RTM_NEWNEIGH` with
    /// `NTF_USE`, which makes the kernel send ARP/NS); retry later.
    Pending { ifindex: u32, next_hop: IpAddr },
    /// The destination is one of this host's own addresses (`RTN_LOCAL`, or an IPv6 anycast
    /// address of this host): the daemon cannot deliver it.
    Local,
    /// No route, or an unreachable / blackhole / prohibit route. Broadcast and multicast routes
    /// also land here: the gateway only forwards unicast.
    Unreachable,
}

/// An interface as far as the resolver cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    /// The Ethernet address, or `None` when the link has no 6-byte hardware address of type
    /// `ARPHRD_ETHER` (tun, IP-in-IP tunnels, …): such links need no neighbour resolution.
    pub mac: Option<[u8; 6]>,
    /// MTU saturated to `u16::MAX`.
    pub mtu: u16,
    /// RX queues the device was created with (`IFLA_NUM_RX_QUEUES`), if the kernel says.
    pub rx_queues: Option<u32>,
}

/// Values from the kernel's uapi headers (`linux/netlink.h`, `linux/rtnetlink.h`,
/// `linux/neighbour.h`, `linux/if_link.h`, `linux/if_arp.h`), typed as they are on the wire.
mod uapi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;

    pub const NLM_F_REQUEST: u16 = 0x01;
    pub const NLM_F_MULTI: u16 = 0x02;
    pub const NLM_F_ACK: u16 = 0x04;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_GETADDR: u16 = 22;
    pub const IFADDRMSG_LEN: usize = 8;
    pub const IFA_ADDRESS: u16 = 1;
    pub const IFA_LOCAL: u16 = 2;
    pub const RT_SCOPE_UNIVERSE: u8 = 0;

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;
    pub const RTM_NEWNEIGH: u16 = 28;
    pub const RTM_GETNEIGH: u16 = 30;

    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;

    /// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    pub const RTMSG_LEN: usize = 12;
    pub const RTMSG_TYPE: usize = 7;
    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_VIA: u16 = 18;

    pub const RTN_UNICAST: u8 = 1;
    pub const RTN_LOCAL: u8 = 2;
    pub const RTN_ANYCAST: u8 = 4;

    /// `struct ndmsg`: family, pad1, pad2(u16), ifindex(i32), state(u16), flags, type.
    pub const NDMSG_LEN: usize = 12;
    pub const NDA_DST: u16 = 1;
    pub const NDA_LLADDR: u16 = 2;
    pub const NTF_USE: u8 = 0x01;

    pub const NUD_REACHABLE: u16 = 0x02;
    pub const NUD_STALE: u16 = 0x04;
    pub const NUD_DELAY: u16 = 0x08;
    pub const NUD_PROBE: u16 = 0x10;
    pub const NUD_NOARP: u16 = 0x40;
    pub const NUD_PERMANENT: u16 = 0x80;
    /// States in which the kernel itself would transmit to the cached lladdr (`NUD_VALID`
    /// minus nothing: INCOMPLETE, FAILED and NONE are the ones without a usable address).
    pub const NUD_USABLE: u16 =
        NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT;

    /// `struct ifinfomsg`: family, pad, type(u16), index(i32), flags(u32), change(u32).
    pub const IFINFOMSG_LEN: usize = 16;
    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MTU: u16 = 4;
    pub const IFLA_NUM_RX_QUEUES: u16 = 32;
    pub const ARPHRD_ETHER: u16 = 1;

    /// `struct nlattr` type bits that are flags, not part of the type.
    pub const NLA_TYPE_MASK: u16 = 0x3fff;
}
use uapi::*;

/// One rtnetlink socket plus the per-interface cache. Owned by the control thread.
pub struct Resolver {
    sock: OwnedFd,
    seq: u32,
    links: HashMap<u32, LinkInfo>,
    buf: Vec<u8>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("seq", &self.seq)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

/// Big enough for any single (non-dump) rtnetlink reply; dumps come in datagrams of at most
/// 32 KiB. A datagram that fills it is treated as truncated.
const RECV_BUF: usize = 64 * 1024;

impl Resolver {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Self> {
        // NETLINK_ROUTE is protocol 0: `None`
        let sock = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        for t in [
            rustix::net::sockopt::Timeout::Recv,
            rustix::net::sockopt::Timeout::Send,
        ] {
            rustix::net::sockopt::set_socket_timeout(&sock, t, Some(REPLY_TIMEOUT))?;
        }
        // No bind: the first send auto-binds a port id, and an unconnected netlink socket
        // sends to the kernel (port 0).
        Ok(Resolver {
            sock,
            seq: 0,
            links: HashMap::new(),
            buf: vec![0; RECV_BUF],
        })
    }

    /// Resolves `dst` the way the kernel's output path would, without sending to it.
    pub fn resolve(&mut self, dst: IpAddr) -> io::Result<Resolution> {
        let route = match self.route(dst) {
            Ok(route) => route,
            Err(e) if is_no_route(&e) => return Ok(Resolution::Unreachable),
            Err(e) => return Err(e),
        };
        match route.kind {
            RTN_UNICAST => {}
            RTN_LOCAL | RTN_ANYCAST => return Ok(Resolution::Local),
            _ => return Ok(Resolution::Unreachable),
        }
        let ifindex = route
            .oif
            .ok_or_else(|| invalid("RTM_NEWROUTE reply without RTA_OIF"))?;
        let link = self.link(ifindex)?;
        let (src_mac, mtu) = (link.mac, link.mtu);
        let next_hop = route.gateway.unwrap_or(dst);
        let ready = |dst_mac| {
            Resolution::Ready(NextHop {
                ifindex,
                src_mac: src_mac.unwrap_or_default(),
                dst_mac,
                mtu,
                gateway: route.gateway,
            })
        };
        if src_mac.is_none() {
            // Point-to-point or otherwise address-less link: nothing to resolve.
            return Ok(ready([0; 6]));
        }
        if let Some(mac) = self.usable_neighbour(ifindex, next_hop)? {
            return Ok(ready(mac));
        }
        self.trigger_neighbour(ifindex, next_hop)?;
        // Entries the kernel creates already valid (NOARP links, a racing reply on a fast
        // link) need no second round through the caller.
        if let Some(mac) = self.usable_neighbour(ifindex, next_hop)? {
            return Ok(ready(mac));
        }
        Ok(Resolution::Pending { ifindex, next_hop })
    }

    /// The index of the interface called `name` (`ENODEV` if there is none).
    pub fn ifindex(&mut self, name: &str) -> io::Result<u32> {
        if name.is_empty() || name.len() >= 16 || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an interface name: {name:?}"),
            ));
        }
        let mut req = ifinfomsg(0);
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        push_attr(&mut req, IFLA_IFNAME, &cname);
        let (ifindex, link) = self.get_link(&req)?;
        self.links.insert(ifindex, link);
        Ok(ifindex)
    }

    /// The interface's name, MAC and MTU, from the cache or, on a miss, from the kernel.
    pub fn link(&mut self, ifindex: u32) -> io::Result<&LinkInfo> {
        if !self.links.contains_key(&ifindex) {
            return self.refresh_link(ifindex);
        }
        self.links
            .get(&ifindex)
            .ok_or_else(|| io::Error::other("link cache entry vanished"))
    }

    /// Re-reads the interface from the kernel (after an MTU or MAC change) and caches it.
    pub fn refresh_link(&mut self, ifindex: u32) -> io::Result<&LinkInfo> {
        let index = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        let (got, link) = match self.get_link(&ifinfomsg(index)) {
            Ok(found) => found,
            Err(e) => {
                self.links.remove(&ifindex);
                return Err(e);
            }
        };
        if got != ifindex {
            return Err(invalid("RTM_NEWLINK reply for another interface"));
        }
        Ok(self.links.entry(ifindex).insert_entry(link).into_mut())
    }

    /// Drops every cached interface, so the next lookups read fresh MACs and MTUs.
    pub fn forget_links(&mut self) {
        self.links.clear();
    }

    /// The global (scope universe) addresses of an interface, in the kernel's order: the
    /// gateway's own addresses, e.g. the source of the ICMP errors it sends.
    pub fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<IpAddr>> {
        self.dump_addresses(|index, scope| index == ifindex && scope == RT_SCOPE_UNIVERSE)
    }

    /// Every address of every interface, whatever its scope: the addresses the kernel
    /// delivers to itself.
    pub fn local_addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        self.dump_addresses(|_, _| true)
    }

    /// The addresses whose (interface index, scope) `want` accepts.
    fn dump_addresses(&mut self, want: impl Fn(u32, u8) -> bool) -> io::Result<Vec<IpAddr>> {
        let req = vec![0u8; IFADDRMSG_LEN]; // family 0: both
        let mut out = Vec::new();
        self.transact(RTM_GETADDR, NLM_F_DUMP, &req, |ty, msg| {
            if ty != RTM_NEWADDR {
                return Ok(());
            }
            let (Some(&scope), Some(index)) = (msg.get(3), read_u32(msg, 4)) else {
                return Err(invalid("truncated ifaddrmsg"));
            };
            if !want(index, scope) {
                return Ok(());
            }
            // IPv4: IFA_LOCAL is the address (IFA_ADDRESS the peer's on point-to-point links);
            // IPv6 has only IFA_ADDRESS.
            let (mut local, mut address) = (None, None);
            for a in attrs(msg.get(IFADDRMSG_LEN..).unwrap_or_default()) {
                let (t, data) = a?;
                match t {
                    IFA_LOCAL => local = Some(ip_from(data)?),
                    IFA_ADDRESS => address = Some(ip_from(data)?),
                    _ => {}
                }
            }
            if let Some(a) = local.or(address) {
                out.push(a);
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn get_link(&mut self, req: &[u8]) -> io::Result<(u32, LinkInfo)> {
        let mut found = None;
        self.transact(RTM_GETLINK, 0, req, |ty, msg| {
            if ty == RTM_NEWLINK {
                found = Some(parse_link(msg)?);
            }
            Ok(())
        })?;
        found.ok_or_else(|| invalid("RTM_GETLINK answered without RTM_NEWLINK"))
    }

    /// `RTM_GETROUTE` for a single address, like `ip route get`.
    fn route(&mut self, dst: IpAddr) -> io::Result<Route> {
        let (family, addr) = family_and_bytes(&dst);
        let mut req = vec![0; RTMSG_LEN];
        req[0] = family;
        req[1] = u8::try_from(addr.len() * 8).unwrap_or(u8::MAX); // dst_len: a host route
        push_attr(&mut req, RTA_DST, &addr);
        let mut found = None;
        self.transact(RTM_GETROUTE, 0, &req, |ty, msg| {
            if ty == RTM_NEWROUTE {
                found = Some(parse_route(msg)?);
            }
            Ok(())
        })?;
        found.ok_or_else(|| invalid("RTM_GETROUTE answered without RTM_NEWROUTE"))
    }

    /// The neighbour's lladdr if its entry is in a usable state; `None` if there is no entry or
    /// it is INCOMPLETE / FAILED / NONE.
    fn usable_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<Option<[u8; 6]>> {
        let req = ndmsg(ifindex, &addr, 0)?;
        let mut found = None;
        let res = self.transact(RTM_GETNEIGH, 0, &req, |ty, msg| {
            if ty == RTM_NEWNEIGH {
                found = Some(parse_neigh(msg)?);
            }
            Ok(())
        });
        match res {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(None),
            Err(e) => return Err(e),
        }
        let (state, lladdr) = found.ok_or_else(|| invalid("RTM_GETNEIGH without RTM_NEWNEIGH"))?;
        if state & NUD_USABLE == 0 {
            return Ok(None);
        }
        // A usable entry without a 6-byte lladdr belongs to a link without one.
        Ok(Some(lladdr.unwrap_or_default()))
    }

    /// Asks the kernel to resolve the neighbour (creating the entry if needed), as the first
    /// packet to it would: `NTF_USE` runs `neigh_event_send`, which sends ARP/NS.
    fn trigger_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        let req = ndmsg(ifindex, &addr, NTF_USE)?;
        self.transact(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_ACK, &req, |_, _| Ok(()))
    }

    /// Sends one request and feeds each reply message of the same sequence number to `each`,
    /// until the reply is complete: a single message, `NLMSG_DONE` after a multipart reply, or
    /// the `NLMSG_ERROR` that is an ACK (error 0) or a failure (negative errno).
    fn transact(
        &mut self,
        ty: u16,
        flags: u16,
        body: &[u8],
        mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = u32::try_from(NLMSG_HDRLEN + body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too long"))?;
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: filled in by the kernel
        msg.extend_from_slice(body);
        if rustix::net::send(&self.sock, &msg, SendFlags::empty())? != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ));
        }
        let wants_ack = flags & NLM_F_ACK != 0;
        loop {
            let n = match rustix::io::read(&self.sock, &mut self.buf[..]).map_err(io::Error::from) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no rtnetlink reply within {REPLY_TIMEOUT:?}"),
                    ));
                }
                Err(e) => return Err(e),
            };
            if n >= self.buf.len() {
                return Err(invalid("rtnetlink reply may be truncated"));
            }
            let mut rest = self.buf.get(..n).unwrap_or_default();
            while !rest.is_empty() {
                let (hdr, payload, next) = split_message(rest)?;
                rest = next;
                if hdr.seq != seq {
                    // A late reply to an earlier request that timed out.
                    continue;
                }
                match hdr.ty {
                    NLMSG_NOOP => {}
                    NLMSG_DONE => return Ok(()),
                    NLMSG_OVERRUN => return Err(invalid("netlink overrun")),
                    NLMSG_ERROR => {
                        let errno =
                            read_i32(payload, 0).ok_or_else(|| invalid("truncated NLMSG_ERROR"))?;
                        return match errno {
                            0 => Ok(()),
                            e => Err(io::Error::from_raw_os_error(e.wrapping_neg())),
                        };
                    }
                    ty => {
                        each(ty, payload)?;
                        if hdr.flags & NLM_F_MULTI == 0 && !wants_ack {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// How the kernel's `RTM_GETROUTE` reports a destination it will not route: no route at all
/// (`ENETUNREACH`), an unreachable (`EHOSTUNREACH`), prohibit (`EACCES`/`EPERM`) or blackhole
/// (`EINVAL`) route: `fib_props[].error` for IPv4, `ip6_rt_type_to_error` for IPv6.
fn is_no_route(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::NETUNREACH | Errno::HOSTUNREACH | Errno::ACCESS | Errno::PERM | Errno::INVAL)
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn family_and_bytes(addr: &IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    }
}

fn ifinfomsg(index: i32) -> Vec<u8> {
    let mut msg = vec![0; IFINFOMSG_LEN];
    msg[4..8].copy_from_slice(&index.to_ne_bytes());
    msg
}

fn ndmsg(ifindex: u32, addr: &IpAddr, flags: u8) -> io::Result<Vec<u8>> {
    let index = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    let (family, bytes) = family_and_bytes(addr);
    let mut msg = vec![0; NDMSG_LEN];
    msg[0] = family;
    msg[4..8].copy_from_slice(&index.to_ne_bytes());
    msg[10] = flags;
    push_attr(&mut msg, NDA_DST, &bytes);
    Ok(msg)
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(msg: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(align4(msg.len()), 0);
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy)]
struct Header {
    ty: u16,
    flags: u16,
    seq: u32,
}

/// Splits the first netlink message off a datagram: (header, payload, rest).
fn split_message(buf: &[u8]) -> io::Result<(Header, &[u8], &[u8])> {
    let truncated = || invalid("truncated netlink message");
    let len = read_u32(buf, 0).ok_or_else(truncated)? as usize;
    if len < NLMSG_HDRLEN || len > buf.len() {
        return Err(truncated());
    }
    let hdr = Header {
        ty: read_u16(buf, 4).ok_or_else(truncated)?,
        flags: read_u16(buf, 6).ok_or_else(truncated)?,
        seq: read_u32(buf, 8).ok_or_else(truncated)?,
    };
    let payload = buf.get(NLMSG_HDRLEN..len).ok_or_else(truncated)?;
    let rest = buf.get(align4(len).min(buf.len())..).unwrap_or_default();
    Ok((hdr, payload, rest))
}

/// The attributes (`struct nlattr`) of a message, each as (type, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = usize::from(read_u16(buf, 0)?);
            let ty = read_u16(buf, 2)? & NLA_TYPE_MASK;
            let data = buf.get(4..len)?;
            Some((ty, data, buf.get(align4(len).min(buf.len())..)?))
        })();
        match parsed {
            Some((ty, data, rest)) => {
                buf = rest;
                Some(Ok((ty, data)))
            }
            None => {
                buf = &[];
                Some(Err(invalid("truncated netlink attribute")))
            }
        }
    })
}

/// The parts of an `RTM_NEWROUTE` reply the resolver uses.
#[derive(Debug, Clone, Copy)]
struct Route {
    kind: u8,
    oif: Option<u32>,
    gateway: Option<IpAddr>,
}

fn parse_route(msg: &[u8]) -> io::Result<Route> {
    let kind = *msg
        .get(RTMSG_TYPE)
        .ok_or_else(|| invalid("truncated rtmsg"))?;
    let body = msg
        .get(RTMSG_LEN..)
        .ok_or_else(|| invalid("truncated rtmsg"))?;
    let mut route = Route {
        kind,
        oif: None,
        gateway: None,
    };
    for attr in attrs(body) {
        let (ty, data) = attr?;
        match ty {
            RTA_OIF => {
                route.oif = Some(read_u32(data, 0).ok_or_else(|| invalid("short RTA_OIF"))?);
            }
            RTA_GATEWAY => route.gateway = Some(ip_from(data)?),
            // An IPv4 route with an IPv6 next hop (RFC 5549): `struct rtvia` = family + address.
            RTA_VIA => route.gateway = Some(ip_from(data.get(2..).unwrap_or_default())?),
            _ => {}
        }
    }
    Ok(route)
}

fn ip_from(data: &[u8]) -> io::Result<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(data) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(data) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(invalid("gateway address of odd length"))
    }
}

/// (state, lladdr) of an `RTM_NEWNEIGH`; an lladdr that is not 6 bytes long reads as none.
fn parse_neigh(msg: &[u8]) -> io::Result<(u16, Option<[u8; 6]>)> {
    if msg.len() < NDMSG_LEN {
        return Err(invalid("truncated ndmsg"));
    }
    let state = read_u16(msg, 8).ok_or_else(|| invalid("truncated ndmsg"))?;
    let mut lladdr = None;
    for attr in attrs(msg.get(NDMSG_LEN..).unwrap_or_default()) {
        let (ty, data) = attr?;
        if ty == NDA_LLADDR {
            lladdr = <[u8; 6]>::try_from(data).ok();
        }
    }
    Ok((state, lladdr))
}

fn parse_link(msg: &[u8]) -> io::Result<(u32, LinkInfo)> {
    let short = || invalid("truncated ifinfomsg");
    if msg.len() < IFINFOMSG_LEN {
        return Err(short());
    }
    let hw_type = read_u16(msg, 2).ok_or_else(short)?;
    let index = read_u32(msg, 4).ok_or_else(short)?;
    let (mut name, mut mac, mut mtu, mut rx_queues) = (None, None, None, None);
    for attr in attrs(msg.get(IFINFOMSG_LEN..).unwrap_or_default()) {
        let (ty, data) = attr?;
        match ty {
            IFLA_IFNAME => {
                let raw = data.split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(raw).into_owned());
            }
            IFLA_ADDRESS if hw_type == ARPHRD_ETHER => mac = <[u8; 6]>::try_from(data).ok(),
            IFLA_MTU => {
                let v = read_u32(data, 0).ok_or_else(|| invalid("short IFLA_MTU"))?;
                mtu = Some(u16::try_from(v).unwrap_or(u16::MAX));
            }
            IFLA_NUM_RX_QUEUES => rx_queues = read_u32(data, 0),
            _ => {}
        }
    }
    let link = LinkInfo {
        name: name.ok_or_else(|| invalid("RTM_NEWLINK without IFLA_IFNAME"))?,
        mac,
        mtu: mtu.ok_or_else(|| invalid("RTM_NEWLINK without IFLA_MTU"))?,
        rx_queues,
    };
    Ok((index, link))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn route_reply_parses_gateway_and_oif() {
        let mut msg = vec![0; RTMSG_LEN];
        msg[RTMSG_TYPE] = RTN_UNICAST;
        push_attr(&mut msg, RTA_DST, &[198, 51, 100, 7]);
        push_attr(&mut msg, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut msg, RTA_GATEWAY, &[192, 0, 2, 2]);
        let route = parse_route(&msg).expect("well-formed");
        assert_eq!(route.kind, RTN_UNICAST);
        assert_eq!(route.oif, Some(7));
        assert_eq!(route.gateway, Some(IpAddr::from([192, 0, 2, 2])));
    }

    #[test]
    fn truncated_input_is_an_error_at_every_length() {
        let mut route = vec![0; RTMSG_LEN];
        push_attr(&mut route, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut route, RTA_GATEWAY, &[0xfe; 16]);
        let mut link = vec![0; IFINFOMSG_LEN];
        push_attr(&mut link, IFLA_IFNAME, b"veth0\0");
        push_attr(&mut link, IFLA_MTU, &1500u32.to_ne_bytes());
        let mut neigh = vec![0; NDMSG_LEN];
        push_attr(&mut neigh, NDA_LLADDR, &[2, 0, 0, 0, 0, 1]);
        // Every cut either parses (it ended on an attribute boundary) or errors; none panics,
        // and a cut inside an attribute is always an error.
        for cut in 0..route.len() {
            let r = parse_route(&route[..cut]);
            assert_eq!(
                r.is_ok(),
                cut == RTMSG_LEN || cut == RTMSG_LEN + 8,
                "cut {cut}"
            );
        }
        for cut in 0..link.len() {
            let _ = parse_link(&link[..cut]);
        }
        for cut in 0..neigh.len() {
            // The last attribute may lack (some of) its padding: 10 bytes, padded to 12.
            let whole_attrs = cut == NDMSG_LEN || cut >= NDMSG_LEN + 10;
            assert_eq!(parse_neigh(&neigh[..cut]).is_ok(), whole_attrs, "cut {cut}");
        }
        let whole = message(RTM_NEWROUTE, 0, 1, &route);
        for cut in 0..whole.len() {
            assert!(split_message(&whole[..cut]).is_err(), "cut {cut}");
        }
        assert!(split_message(&whole).is_ok());
    }

    #[test]
    fn attribute_with_length_below_header_is_rejected() {
        let mut bad = vec![0; RTMSG_LEN];
        bad.extend_from_slice(&2u16.to_ne_bytes());
        bad.extend_from_slice(&RTA_OIF.to_ne_bytes());
        assert!(parse_route(&bad).is_err());
    }

    #[test]
    fn link_without_ethernet_type_has_no_mac() {
        let mut link = vec![0; IFINFOMSG_LEN];
        link[2..4].copy_from_slice(&65534u16.to_ne_bytes()); // ARPHRD_NONE (tun)
        link[4..8].copy_from_slice(&3i32.to_ne_bytes());
        push_attr(&mut link, IFLA_IFNAME, b"tun0\0");
        push_attr(&mut link, IFLA_ADDRESS, &[1, 2, 3, 4, 5, 6]);
        push_attr(&mut link, IFLA_MTU, &70000u32.to_ne_bytes());
        let (index, info) = parse_link(&link).expect("well-formed");
        assert_eq!(index, 3);
        assert_eq!(info.name, "tun0");
        assert_eq!(info.mac, None);
        assert_eq!(info.mtu, u16::MAX);
    }
}
