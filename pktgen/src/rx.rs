//! What the sink receives through: the kernel's UDP socket (`--io socket`), AF_XDP
//! (`--io xdp`: xsecd's XDP program on the interface, its UDP port set to the sink's, one
//! receive-only socket per RX queue, so the datagrams never reach the kernel's UDP/IP
//! stack), or AF_PACKET (`--io packet`, and `--io xdp` where no XDP program or AF_XDP
//! socket can be had: a tap beside the kernel's own delivery).
//!
//! With AF_XDP the sink also reads a UDP socket on its port: a datagram the XDP program
//! passes (a queue without a socket, a redirect that failed) is still counted, and the
//! summary says how many came each way.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use serde_json::{Value, json};
use xsec_dataplane::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket, ethernet, ipv6, udp,
};
use xsecd::xdp::{XdpMode, XdpSteering};
use xsecd::xsk::{XskConfig, XskRx};

/// Frames taken from one ring per round.
const BURST: usize = 64;
/// How long one round waits when nothing has arrived.
const WAIT: Duration = Duration::from_millis(50);
/// The largest UDP payload, for the buffers the kernel's sockets are read into.
const MAX_DATAGRAM: usize = 65536;
/// RX queues tried (queue `n` is opened only if `n - 1` was).
const MAX_QUEUES: u32 = 64;

/// The UDP payload of an Ethernet frame that carries IPv4 or IPv6 (no extension headers),
/// UDP, to `port`, trimmed to the UDP length (short frames carry Ethernet padding). `None`
/// for anything else: other protocols and ports, fragments, truncated or inconsistent
/// headers.
pub fn udp_payload(frame: &[u8], port: u16) -> Option<&[u8]> {
    let ethertype = EthernetFrame::new_checked(frame).ok()?.ethertype();
    let ip = &frame[ethernet::HEADER_LEN..];
    // (offset of the UDP header, end of the IP payload)
    let (l4, end) = match ethertype {
        EtherType::IPV4 => {
            let v4 = Ipv4Packet::new_checked(ip).ok()?;
            // a fragment (MF set or an offset) has no whole datagram
            if v4.protocol() != IpProtocol::UDP || v4.is_fragment() {
                return None;
            }
            (v4.header_len(), usize::from(v4.total_len()))
        }
        EtherType::IPV6 => {
            let v6 = Ipv6Packet::new_checked(ip).ok()?;
            if v6.next_header() != IpProtocol::UDP {
                return None;
            }
            (ipv6::HEADER_LEN, v6.total_len())
        }
        _ => return None,
    };
    let datagram = &ip[l4..end];
    let udp = UdpPacket::new_checked(datagram).ok()?;
    if udp.dst_port() != port {
        return None;
    }
    Some(&datagram[udp::HEADER_LEN..usize::from(udp.len())])
}

/// The sink's input.
pub enum Rx {
    /// The socket and the buffer it is read into (kept: one allocation per run).
    Socket(UdpSocket, Vec<u8>),
    Xdp(Box<XdpRx>),
    Packet(PacketRx),
}

pub struct XdpRx {
    port: u16,
    socks: Vec<XskRx>,
    /// Dropping it detaches the program; kept for the map and counters.
    steering: XdpSteering,
    /// The same port on the kernel's path, read without blocking.
    udp: UdpSocket,
    /// Datagrams taken per queue, and from the kernel's socket.
    per_queue: Vec<u64>,
    from_kernel: u64,
    /// Frames the program redirected that were not a datagram to the port.
    not_ours: u64,
    buf: Vec<u8>,
}

pub struct PacketRx {
    port: u16,
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
    /// Bound (never read) so the kernel does not answer with port unreachables.
    _udp: UdpSocket,
}

fn bind_udp(port: u16) -> Result<UdpSocket, String> {
    let bind = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))
}

impl Rx {
    /// Open the sink's input. `iface` is needed for `xdp` and `packet`.
    pub fn open(io: &str, iface: Option<&str>, port: u16) -> Result<Rx, String> {
        let need_iface = || iface.ok_or_else(|| format!("--io {io} needs --iface"));
        match io {
            "socket" => {
                let sock = bind_udp(port)?;
                let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 32 << 20)
                    .or_else(|_| {
                        rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 32 << 20)
                    });
                sock.set_read_timeout(Some(WAIT))
                    .map_err(|e| e.to_string())?;
                Ok(Rx::Socket(sock, vec![0; MAX_DATAGRAM]))
            }
            "xdp" => {
                let iface = need_iface()?;
                match open_xdp(iface, port) {
                    Ok(x) => Ok(Rx::Xdp(Box::new(x))),
                    Err(e) => {
                        eprintln!("sink: {e}; falling back to AF_PACKET");
                        open_packet(iface, port).map(Rx::Packet)
                    }
                }
            }
            "packet" => open_packet(need_iface()?, port).map(Rx::Packet),
            other => Err(format!("--io {other}: expected socket, xdp or packet")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Rx::Socket(..) => "socket",
            Rx::Xdp(_) => "xdp",
            Rx::Packet(_) => "packet",
        }
    }

    /// Hand what has arrived (UDP payloads to the port) to `each`, waiting up to ~50 ms if
    /// nothing has. Returns how many payloads there were.
    pub fn poll(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        match self {
            Rx::Socket(sock, buf) => match sock.recv(buf) {
                Ok(n) => {
                    each(&buf[..n]);
                    1
                }
                Err(_) => 0,
            },
            Rx::Xdp(x) => x.poll(each),
            Rx::Packet(p) => {
                let mut n = 0;
                // The first `next` may wait out the read timeout; later ones return at once
                // while frames are queued.
                while n < BURST {
                    match p.rx.next() {
                        Ok(frame) => {
                            if let Some(payload) = udp_payload(frame, p.port) {
                                each(payload);
                                n += 1;
                            }
                        }
                        Err(_) => break,
                    }
                }
                n
            }
        }
    }

    /// What the summary says about the input.
    pub fn report(&self) -> Value {
        match self {
            Rx::Socket(..) | Rx::Packet(_) => json!({ "io": self.name() }),
            Rx::Xdp(x) => {
                let drops: u64 = x
                    .socks
                    .iter()
                    .map(|s| {
                        let st = s.socket_stats();
                        st.rx_dropped + st.rx_ring_full + st.rx_fill_ring_empty
                    })
                    .sum();
                json!({
                    "io": "xdp",
                    "xdp_mode": x.steering.mode().to_string(),
                    "per_queue": x.per_queue,
                    "from_kernel": x.from_kernel,
                    "not_ours": x.not_ours,
                    "socket_drops": drops,
                })
            }
        }
    }
}

fn open_xdp(iface: &str, port: u16) -> Result<XdpRx, String> {
    let udp = bind_udp(port)?;
    udp.set_nonblocking(true).map_err(|e| e.to_string())?;
    // native where the driver has it (veth does), generic otherwise
    let mut steering = match XdpSteering::load_receiver(iface, XdpMode::Driver) {
        Ok(s) => s,
        Err(_) => XdpSteering::load_receiver(iface, XdpMode::Skb)
            .map_err(|e| format!("XDP program on {iface}: {e}"))?,
    };
    steering
        .set_tunnel_ports(&[port])
        .map_err(|e| format!("XDP port map: {e}"))?;
    // the host's own traffic (pings, TCP, anything but the sink's port) stays the kernel's
    let local = xsecd::neigh::Resolver::new()
        .and_then(|mut r| r.local_addresses())
        .map_err(|e| format!("netlink addresses: {e}"))?;
    steering
        .set_local_addrs(&local)
        .map_err(|e| format!("XDP local addresses: {e}"))?;
    let cfg = XskConfig {
        frames: 4096,
        ring: 2048,
        force_copy: false,
    };
    let mut socks = Vec::new();
    for q in 0..MAX_QUEUES {
        match XskRx::open(iface, q, &cfg) {
            Ok(s) => socks.push(s),
            // past the last queue (or a queue the device will not give): stop there
            Err(e) if q == 0 => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    for s in &socks {
        steering
            .register_xsk(xsecd::xdp::Side::Unprotected, s.queue(), s.as_fd())
            .map_err(|e| format!("XSKMAP queue {}: {e}", s.queue()))?;
    }
    Ok(XdpRx {
        port,
        per_queue: vec![0; socks.len()],
        socks,
        steering,
        udp,
        from_kernel: 0,
        not_ours: 0,
        buf: vec![0; MAX_DATAGRAM],
    })
}

fn open_packet(iface: &str, port: u16) -> Result<PacketRx, String> {
    let cfg = pnet_datalink::Config {
        read_timeout: Some(WAIT),
        read_buffer_size: 65536,
        ..pnet_datalink::Config::default()
    };
    let udp = bind_udp(port)?;
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&udp, 4096);
    let (_tx, rx) = crate::xdp::packet_channel(iface, cfg)?;
    Ok(PacketRx {
        port,
        rx,
        _udp: udp,
    })
}

impl XdpRx {
    fn poll(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        for (i, s) in self.socks.iter_mut().enumerate() {
            let (port, per_queue, not_ours) =
                (self.port, &mut self.per_queue[i], &mut self.not_ours);
            s.recv(BURST, |frame| match udp_payload(frame, port) {
                Some(p) => {
                    each(p);
                    *per_queue += 1;
                    n += 1;
                }
                None => *not_ours += 1,
            });
        }
        for _ in 0..BURST {
            match self.udp.recv(&mut self.buf) {
                Ok(len) => {
                    each(&self.buf[..len]);
                    self.from_kernel += 1;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        if n == 0 {
            let mut fds: Vec<PollFd<'_>> = self
                .socks
                .iter()
                .map(|s| PollFd::new(s, PollFlags::IN))
                .collect();
            fds.push(PollFd::new(&self.udp, PollFlags::IN));
            let t = Timespec {
                tv_sec: 0,
                tv_nsec: WAIT.as_nanos() as _,
            };
            let _ = rustix::event::poll(&mut fds, Some(&t));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::headers;

    fn frame(dport: u16, payload: &[u8], pad: usize) -> Vec<u8> {
        let mut f = headers(
            [1; 6],
            [2; 6],
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            10_000,
            dport,
            payload.len(),
        )
        .to_vec();
        f.extend_from_slice(payload);
        f.resize(f.len() + pad, 0);
        f
    }

    #[test]
    fn ipv4_payload_trimmed_to_the_udp_length() {
        let f = frame(5301, b"hello", 13);
        assert_eq!(udp_payload(&f, 5301), Some(&b"hello"[..]));
        assert_eq!(udp_payload(&f, 5302), None, "another port");
    }

    #[test]
    fn fragments_truncation_and_lies_are_refused() {
        let good = frame(5301, &[7; 40], 0);
        let mut mf = good.clone();
        mf[20] |= 0x20; // more fragments
        assert_eq!(udp_payload(&mf, 5301), None);
        let mut off = good.clone();
        off[21] = 1; // a fragment offset
        assert_eq!(udp_payload(&off, 5301), None);
        for cut in 0..good.len() {
            assert_eq!(udp_payload(&good[..cut], 5301), None, "cut at {cut}");
        }
        let mut long = good.clone();
        long[38..40].copy_from_slice(&200u16.to_be_bytes()); // UDP length past the IP's
        assert_eq!(udp_payload(&long, 5301), None);
        let mut tcp = good.clone();
        tcp[23] = 6;
        assert_eq!(udp_payload(&tcp, 5301), None);
        let mut arp = good;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(udp_payload(&arp, 5301), None);
    }

    #[test]
    fn ipv6_payload() {
        let payload = b"over six";
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f[20] = 17;
        f[21] = 64;
        f[56..58].copy_from_slice(&5301u16.to_be_bytes());
        f[58..60].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        assert_eq!(udp_payload(&f, 5301), Some(&payload[..]));
        f[20] = 44; // a fragment header: not looked through
        assert_eq!(udp_payload(&f, 5301), None);
    }
}
