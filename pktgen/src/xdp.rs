//! `xsec-pktgen gen --io xdp`: whole Ethernet/IPv4/UDP frames on a transmit-only AF_XDP
//! socket (xsecd's [`XskTx`]), bypassing the sender's UDP/IP stack; where no AF_XDP socket
//! can be had (or with `--io packet`), on an AF_PACKET socket instead. The destination MAC is
//! the next hop's, from the kernel's routing and neighbour tables (xsecd's resolver, which
//! also triggers ARP); the source address is the interface's first IPv4 address. UDP source
//! port of flow `f` is `--src-port` + f (10000 + f if that is 0); no UDP checksum (0,
//! allowed for IPv4).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use xsec_dataplane::wire::{
    EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
    ethernet, ipv4, udp,
};
use xsec_pktgen::*;
use xsecd::neigh::{NextHop, Resolution, Resolver};
use xsecd::xsk::{FRAME_SIZE, TxOutcome, XskConfig, XskTx};

use crate::{Gen, check_sizes, esp, gen_summary, stop_flag};

/// The 42 bytes in front of the payload: Ethernet, IPv4 (DF, TTL 64), UDP.
pub fn headers(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: usize,
) -> [u8; 42] {
    let mut h = [0u8; 42];
    let (eth, rest) = h.split_at_mut(ethernet::HEADER_LEN);
    let (ip, udp) = rest.split_at_mut(ipv4::MIN_HEADER_LEN);
    EthernetRepr {
        src: src_mac,
        dst: dst_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetFrame::new_unchecked(eth));
    Ipv4Repr {
        src,
        dst,
        protocol: IpProtocol::UDP,
        payload_len: udp::HEADER_LEN + payload,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut Ipv4Packet::new_unchecked(ip));
    UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len: payload,
    }
    .emit(&mut UdpPacket::new_unchecked(udp));
    h
}

/// The next hop towards `dst` out of `ifindex` (resolution kicks ARP/ND, so ask again for a
/// while).
fn next_hop(res: &mut Resolver, iface: &str, ifindex: u32, dst: IpAddr) -> Result<NextHop, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match res
            .resolve(dst)
            .map_err(|e| format!("route to {dst}: {e}"))?
        {
            Resolution::Ready(h) if h.ifindex == ifindex => return Ok(h),
            Resolution::Ready(h) => {
                return Err(format!(
                    "{dst} is routed out of ifindex {}, not {iface}",
                    h.ifindex
                ));
            }
            Resolution::Pending { .. } if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return Err(format!("no next hop for {dst}: {r:?}")),
        }
    }
}

/// Where whole frames go: an AF_XDP socket (its UMEM frames are built in place), or an
/// AF_PACKET socket (one `sendto(2)` per frame from a buffer) where AF_XDP is unavailable.
enum Tx {
    Xdp(Box<XskTx>),
    Packet {
        tx: Box<dyn pnet_datalink::DataLinkSender>,
        buf: Vec<u8>,
    },
}

impl Tx {
    fn name(&self) -> &'static str {
        match self {
            Tx::Xdp(_) => "xdp",
            Tx::Packet { .. } => "packet",
        }
    }
}

/// The two ends of an AF_PACKET socket.
pub type PacketChannel = (
    Box<dyn pnet_datalink::DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
);

/// An AF_PACKET socket on `iface` (not promiscuous), as a sender and a receiver.
pub fn packet_channel(iface: &str, cfg: pnet_datalink::Config) -> Result<PacketChannel, String> {
    let dev = pnet_datalink::interfaces()
        .into_iter()
        .find(|d| d.name == iface)
        .ok_or_else(|| format!("{iface}: no such interface"))?;
    let cfg = pnet_datalink::Config {
        promiscuous: false,
        ..cfg
    };
    match pnet_datalink::channel(&dev, cfg) {
        Ok(pnet_datalink::Channel::Ethernet(tx, rx)) => Ok((tx, rx)),
        Ok(_) => Err(format!("{iface}: AF_PACKET gave no Ethernet channel")),
        Err(e) => Err(format!("{iface}: AF_PACKET: {e}")),
    }
}

/// An AF_PACKET sender on `iface` (what it receives is never read).
fn packet_tx(iface: &str) -> Result<Tx, String> {
    let cfg = pnet_datalink::Config {
        write_buffer_size: FRAME_SIZE as usize,
        read_buffer_size: 2048,
        ..pnet_datalink::Config::default()
    };
    let (tx, _rx) = packet_channel(iface, cfg)?;
    Ok(Tx::Packet {
        tx,
        buf: vec![0; FRAME_SIZE as usize],
    })
}

/// `--io xdp` (falling back to AF_PACKET if the AF_XDP socket cannot be had) or
/// `--io packet`.
pub fn generate(g: &Gen, iface: &str, io: &str) -> Result<(), String> {
    let IpAddr::V4(dst) = g.dst else {
        return Err(format!("--io {io} sends IPv4 only"));
    };
    // one UMEM frame per packet, Ethernet header included (with --esp-config, the outer
    // headers in front of the inner packet and the trailer behind it)
    let max = match g.esp {
        Some(_) => FRAME_SIZE as usize - esp::INNER_OFF - esp::TAIL_ROOM,
        None => FRAME_SIZE as usize - 14,
    };
    check_sizes(g, max)?;
    let base = if g.src_port == 0 { 10_000 } else { g.src_port };
    if base.checked_add(g.flows - 1).is_none() {
        return Err(format!(
            "--src-port {base} + {} flows passes 65535",
            g.flows
        ));
    }
    let mut prot = match &g.esp {
        Some(path) => Some(esp::Protector::load(path, g.esp_seq_start)?),
        None => None,
    };
    let mut res = Resolver::new().map_err(|e| format!("netlink: {e}"))?;
    let ifindex = res.ifindex(iface).map_err(|e| format!("{iface}: {e}"))?;
    let src = match g.src {
        Some(IpAddr::V4(a)) => a,
        Some(IpAddr::V6(_)) => return Err("--src: IPv4, as --dst".into()),
        None => res
            .addresses(ifindex)
            .map_err(|e| format!("{iface}: {e}"))?
            .into_iter()
            .find_map(|a| match a {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| format!("{iface} has no IPv4 address"))?,
    };
    // next hops by (outer) destination; in clear there is only --dst
    let mut hops: Vec<(IpAddr, NextHop)> = vec![];
    if prot.is_none() {
        hops.push((g.dst, next_hop(&mut res, iface, ifindex, g.dst)?));
    }
    const FRAMES: u32 = 4096;
    let mut tx = match io {
        "packet" => packet_tx(iface)?,
        _ => match XskTx::open(
            iface,
            g.queue,
            &XskConfig {
                frames: FRAMES,
                ring: 2048,
                force_copy: false,
            },
        ) {
            Ok(x) => Tx::Xdp(Box::new(x)),
            Err(e) => {
                eprintln!("gen: no AF_XDP socket ({e}); sending on AF_PACKET");
                packet_tx(iface)?
            }
        },
    };
    // the payload template per size
    let mut templates: Vec<(usize, Vec<u8>)> = vec![];
    for &s in &g.sizes {
        if !templates.iter().any(|t| t.0 == s) {
            templates.push((s, template(s - 28)));
        }
    }
    // where the IP packet is built: after the Ethernet header, or where the engine wants it
    let ip_off = if prot.is_some() { esp::INNER_OFF } else { 14 };
    // Build datagram `s` (stamped `ts`) in `buf`: the frame's (offset, length).
    let mut build = |buf: &mut [u8], s: u64, ts: u64| -> Result<(usize, usize), String> {
        let size = g.sizes[(s % g.sizes.len() as u64) as usize];
        let flow = (s % u64::from(g.flows)) as u16;
        let h = headers(
            [0; 6],
            [0; 6],
            src.octets(),
            dst.octets(),
            base.wrapping_add(flow),
            g.port,
            size - 28,
        );
        buf[ip_off..ip_off + 28].copy_from_slice(&h[14..]);
        if let Some(t) = templates.iter().find(|t| t.0 == size) {
            buf[ip_off + 28..ip_off + size].copy_from_slice(&t.1);
        }
        stamp(&mut buf[ip_off + 28..ip_off + size], g.stream, s, ts);
        let (ip, len) = match prot.as_mut() {
            None => (ip_off, size),
            Some(p) => p
                .protect(buf, size)
                .map_err(|e| format!("--esp-config: datagram {s}: {e}"))?,
        };
        let to = esp::ip_dst(&buf[ip..ip + len]).unwrap_or(g.dst);
        let hop = match hops.iter().find(|h| h.0 == to) {
            Some(h) => h.1,
            None => {
                let h = next_hop(&mut res, iface, ifindex, to)?;
                hops.push((to, h));
                h
            }
        };
        let eth = &mut buf[ip - 14..ip];
        eth[0..6].copy_from_slice(&hop.dst_mac);
        eth[6..12].copy_from_slice(&hop.src_mac);
        let ethertype: u16 = if to.is_ipv4() { 0x0800 } else { 0x86dd };
        eth[12..14].copy_from_slice(&ethertype.to_be_bytes());
        Ok((ip - 14, len + 14))
    };
    let stop = stop_flag();
    let mut pacer = Pacer::new(g.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(g.seconds);
    let (mut seq, mut errors) = (0u64, 0u64);
    let mut live = Ticker::default();
    loop {
        let now = Instant::now();
        if now >= end
            || stop.load(std::sync::atomic::Ordering::Relaxed)
            || (g.count > 0 && seq >= g.count)
        {
            break;
        }
        let n = if g.count > 0 {
            (g.count - seq).min(g.batch as u64)
        } else {
            g.batch as u64
        };
        pacer.wait(n);
        let ts = now_ns();
        let mut k = 0;
        while k < n {
            match &mut tx {
                Tx::Xdp(x) => match x.send_with(|f| build(f, seq, ts))? {
                    TxOutcome::Queued => {}
                    TxOutcome::NoFrame => {
                        if x.kick_and_reap() == 0 {
                            std::thread::yield_now();
                        }
                        continue;
                    }
                    // on a full ring the datagram is built again (an ESP sequence number
                    // is skipped: a gap the receiver tolerates)
                    TxOutcome::RingFull => {
                        x.kick_and_reap();
                        continue;
                    }
                    TxOutcome::BadWindow => {
                        return Err("a built packet does not fit an AF_XDP frame".into());
                    }
                },
                Tx::Packet { tx, buf } => {
                    let (off, len) = build(buf, seq, ts)?;
                    match tx.send_to(&buf[off..off + len], None) {
                        Some(Ok(())) => {}
                        // ENOBUFS and the like: counted, the sequence number reused
                        _ => {
                            errors += 1;
                            continue;
                        }
                    }
                }
            }
            seq += 1;
            k += 1;
        }
        if let Tx::Xdp(x) = &mut tx {
            x.kick_and_reap();
        }
        if !g.quiet && live.due() {
            let (t, pps) = live.tick(seq);
            eprintln!(
                "gen: {t:>5.1} s  sent {seq:>10}  {:>8.1} kpps ({} {iface})",
                pps / 1e3,
                tx.name()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Tx::Xdp(x) = &mut tx {
        // let the kernel finish what is queued before the UMEM goes
        let drain = Instant::now() + Duration::from_secs(2);
        while x.free_frames() < FRAMES as usize && Instant::now() < drain {
            x.kick_and_reap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Some(p) = &prot
        && p.bypassed > 0
        && !g.quiet
    {
        eprintln!(
            "gen: {} datagrams BYPASSed (sent in clear) by the configuration's SPD",
            p.bypassed
        );
    }
    gen_summary(g, seq, secs, errors, tx.name());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_have_a_valid_ip_checksum_and_lengths() {
        let h = headers(
            [1; 6],
            [2; 6],
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            10_000,
            5301,
            100,
        );
        let ip = Ipv4Packet::new_unchecked(&h[14..34]);
        assert!(ip.verify_checksum());
        assert!(ip.dont_frag());
        assert_eq!(
            (ip.total_len(), ip.ttl(), ip.protocol()),
            (128, 64, IpProtocol::UDP)
        );
        let udp = UdpPacket::new_unchecked(&h[34..]);
        assert_eq!(
            (udp.src_port(), udp.dst_port(), udp.len()),
            (10_000, 5301, 108)
        );
        let eth = EthernetFrame::new_unchecked(&h[..]);
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        assert_eq!((eth.dst_addr(), eth.src_addr()), ([1; 6], [2; 6]));
    }
}
