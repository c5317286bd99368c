//! The capture of the middle link: what went over it, and whether tshark decrypts it.
//!
//! [`read_pcap`] reads the classic pcap files tcpdump writes (Ethernet or raw-IP link type,
//! micro- or nanosecond magic, either byte order) with the dataplane's `wire::pcap`;
//! [`classify`] sorts each frame, through the dataplane's header views, into ESP (IP protocol
//! 50), UDP-encapsulated ESP on the given ports (RFC 3948), NAT keep-alives / heartbeats (one
//! 0xFF byte), IKE (UDP 500, or the 4-byte non-ESP marker on an encapsulation port), ARP and
//! IPv6 neighbour discovery / MLD, or clear traffic. [`analyze`] sums that up
//! and lists clear packets that carry an inner-subnet address: the leaks a gateway must not
//! have. [`tshark_decrypt`] asks tshark to decrypt every ESP packet with an `esp_sa` table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use xsec_dataplane::wire::ethernet::HEADER_LEN as ETHERNET_HEADER_LEN;
use xsec_dataplane::wire::ipv4::MIN_HEADER_LEN as IPV4_HEADER_LEN;
use xsec_dataplane::wire::ipv6::HEADER_LEN as IPV6_HEADER_LEN;
use xsec_dataplane::wire::pcap::{LinkType, PcapError, PcapReader};
use xsec_dataplane::wire::udp::HEADER_LEN as UDP_HEADER_LEN;
use xsec_dataplane::wire::{
    EspPacket, EtherType, EthernetFrame, IcmpPacket, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket,
};

use crate::procs;
use crate::{Result, err};

/// One frame of a capture (the bytes from the link-layer header on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub data: Vec<u8>,
    /// Whether `data` starts with an Ethernet header (else with the IP header).
    pub ethernet: bool,
}

/// Read a classic pcap file.
pub fn read_pcap(path: &Path) -> Result<Vec<RawFrame>> {
    let b = std::fs::read(path).map_err(|e| err!("read {}: {e}", path.display()))?;
    parse_pcap(&b).map_err(|e| err!("{}: {e}", path.display()))
}

/// Parse the bytes of a classic pcap file. A record header cut off at the very end (tcpdump
/// stopped in the middle of writing it) ends the capture; any other damage is an error.
pub fn parse_pcap(b: &[u8]) -> Result<Vec<RawFrame>> {
    let records = PcapReader::new(b).map_err(|e| err!("{e}"))?;
    let ethernet = match records.link_type() {
        LinkType::ETHERNET => true,
        LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 => false,
        LinkType(l) => return Err(err!("unsupported link type {l}")),
    };
    let mut frames = vec![];
    for r in records {
        match r {
            Ok(r) => frames.push(RawFrame {
                data: r.data.to_vec(),
                ethernet,
            }),
            Err(PcapError::RecordHeader { .. }) => break,
            Err(e) => return Err(err!("{e}")),
        }
    }
    Ok(frames)
}

/// What a frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Arp,
    /// Link control without payload addresses: ICMPv6 neighbour discovery, router
    /// solicitation/advertisement, MLD, and IGMP.
    NeighbourDiscovery,
    /// IP protocol 50.
    Esp {
        spi: u32,
        seq: u32,
    },
    /// ESP in UDP on an encapsulation port.
    UdpEsp {
        spi: u32,
        seq: u32,
    },
    /// One 0xFF byte on an encapsulation port (RFC 3948 §2.3 keep-alive, xsec heartbeat).
    Keepalive,
    /// UDP 500, or the non-ESP marker on an encapsulation port.
    Ike,
    /// Any other IP packet: clear text.
    Clear {
        proto: u8,
    },
    /// A frame that is neither ARP nor IP (ethertype), or too short to read.
    Other(u16),
}

/// A classified frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1-based, as tshark and tcpdump number them.
    pub number: usize,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub kind: Kind,
    /// The UDP payload, if any.
    pub udp_payload: Vec<u8>,
    /// What an ICMP error quotes (the packet that caused it), for reports.
    pub note: Option<String>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ", self.number)?;
        match (self.src, self.dst) {
            (Some(s), Some(d)) => write!(f, "{s}")
                .and_then(|()| self.sport.map_or(Ok(()), |p| write!(f, ":{p}")))
                .and_then(|()| write!(f, " -> {d}"))
                .and_then(|()| self.dport.map_or(Ok(()), |p| write!(f, ":{p}")))?,
            _ => f.write_str("-")?,
        }
        write!(f, " {:?}", self.kind)?;
        match &self.note {
            Some(n) => write!(f, " ({n})"),
            None => Ok(()),
        }
    }
}

const ND_TYPES: [u8; 9] = [130, 131, 132, 133, 134, 135, 136, 137, 143];

/// Classify one frame; `encap_ports` are the UDP ports that carry ESP.
pub fn classify(number: usize, raw: &RawFrame, encap_ports: &[u16]) -> Frame {
    let mut fr = Frame {
        number,
        src: None,
        dst: None,
        sport: None,
        dport: None,
        kind: Kind::Other(0),
        udp_payload: vec![],
        note: None,
    };
    let (ethertype, ip) = if raw.ethernet {
        let Ok(eth) = EthernetFrame::new_checked(&raw.data[..]) else {
            return fr;
        };
        (eth.ethertype(), &raw.data[ETHERNET_HEADER_LEN..])
    } else {
        let v = raw.data.first().map_or(0, |b| b >> 4);
        let t = if v == 6 {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        (t, &raw.data[..])
    };
    // The IP headers are read through the views, but a packet shorter than its length
    // fields is still classified (from what it holds): a truncated clear packet is a leak too.
    let (proto, l4): (u8, &[u8]) = match ethertype {
        EtherType::ARP => {
            fr.kind = Kind::Arp;
            return fr;
        }
        EtherType::IPV4 => {
            if ip.len() < IPV4_HEADER_LEN {
                fr.kind = Kind::Other(ethertype.0);
                return fr;
            }
            let v4 = Ipv4Packet::new_unchecked(ip);
            let ihl = v4.header_len();
            let total = usize::from(v4.total_len()).min(ip.len());
            if ihl < IPV4_HEADER_LEN || total < ihl {
                fr.kind = Kind::Other(ethertype.0);
                return fr;
            }
            fr.src = Some(Ipv4Addr::from(v4.src_addr()).into());
            fr.dst = Some(Ipv4Addr::from(v4.dst_addr()).into());
            let proto = v4.protocol().0;
            if v4.frag_offset() != 0 {
                fr.kind = Kind::Clear { proto };
                return fr;
            }
            (proto, &ip[ihl..total])
        }
        EtherType::IPV6 => {
            if ip.len() < IPV6_HEADER_LEN {
                fr.kind = Kind::Other(ethertype.0);
                return fr;
            }
            let v6 = Ipv6Packet::new_unchecked(ip);
            fr.src = Some(Ipv6Addr::from(v6.src_addr()).into());
            fr.dst = Some(Ipv6Addr::from(v6.dst_addr()).into());
            let end = v6.total_len().min(ip.len());
            let mut nh = v6.next_header().0;
            let mut off = IPV6_HEADER_LEN;
            // hop-by-hop options precede MLD reports
            if nh == 0 && off + 8 <= end {
                nh = ip[off];
                off += (usize::from(ip[off + 1]) + 1) * 8;
            }
            (nh, ip.get(off..end).unwrap_or(&[]))
        }
        t => {
            fr.kind = Kind::Other(t.0);
            return fr;
        }
    };
    let esp = |b: &[u8]| EspPacket::new_checked(b).map_or((0, 0), |e| (e.spi(), e.seq()));
    fr.kind = match proto {
        50 => {
            let (spi, seq) = esp(l4);
            Kind::Esp { spi, seq }
        }
        58 if l4.first().is_some_and(|t| ND_TYPES.contains(t)) => Kind::NeighbourDiscovery,
        2 => Kind::NeighbourDiscovery,
        17 if l4.len() >= UDP_HEADER_LEN => {
            // the ports only: the length field may disagree with a damaged packet
            let udp = UdpPacket::new_unchecked(l4);
            let (sp, dp) = (udp.src_port(), udp.dst_port());
            fr.sport = Some(sp);
            fr.dport = Some(dp);
            let payload = &l4[UDP_HEADER_LEN..];
            fr.udp_payload = payload.to_vec();
            let encap = encap_ports.contains(&sp) || encap_ports.contains(&dp);
            if sp == 500 || dp == 500 {
                Kind::Ike
            } else if encap && payload == [0xff] {
                Kind::Keepalive
            } else if encap && payload.len() >= 4 && payload[..4] == [0, 0, 0, 0] {
                Kind::Ike
            } else if encap && payload.len() >= 8 {
                let (spi, seq) = esp(payload);
                Kind::UdpEsp { spi, seq }
            } else {
                Kind::Clear { proto }
            }
        }
        6 if l4.len() >= 4 => {
            // TCP's ports are where UDP's are (there is no TCP view)
            let ports = UdpPacket::new_unchecked(l4);
            fr.sport = Some(ports.src_port());
            fr.dport = Some(ports.dst_port());
            Kind::Clear { proto }
        }
        p => {
            if p == 1 {
                fr.note = icmp_note(l4);
            }
            Kind::Clear { proto: p }
        }
    };
    fr
}

/// An ICMPv4 error's type, code and the UDP datagram it quotes, if any.
fn icmp_note(l4: &[u8]) -> Option<String> {
    let icmp = IcmpPacket::new_checked(l4).ok()?;
    let mut note = format!("ICMP type {} code {}", icmp.msg_type(), icmp.code());
    // the quoted IP header, then at least the first 8 bytes of its payload (RFC 792)
    let q = l4.get(8..)?;
    if q.len() >= IPV4_HEADER_LEN {
        let ip = Ipv4Packet::new_unchecked(q);
        if ip.protocol() == IpProtocol::UDP {
            let ub = q
                .get(ip.header_len()..)
                .filter(|u| u.len() >= UDP_HEADER_LEN)?;
            let u = UdpPacket::new_unchecked(ub);
            let first = ub
                .get(UDP_HEADER_LEN)
                .map_or(String::new(), |b| format!(", first byte {b:#04x}"));
            note.push_str(&format!(
                " quoting UDP {} -> {} with {} payload bytes{first}",
                u.src_port(),
                u.dst_port(),
                u.len().saturating_sub(8)
            ));
        }
    }
    Some(note)
}

/// Whether `ip` is inside `net` (`a.b.c.d/len` or `x::/len`).
pub fn in_net(ip: IpAddr, net: &str) -> bool {
    let Some((base, len)) = net.split_once('/') else {
        return net.parse::<IpAddr>().ok() == Some(ip);
    };
    let (Ok(base), Ok(len)) = (base.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The sum of a capture.
#[derive(Debug, Clone, Default)]
pub struct WireReport {
    pub frames: usize,
    pub arp_nd: usize,
    /// ESP packets (raw and UDP-encapsulated) per (outer source, outer destination).
    pub esp: BTreeMap<(IpAddr, IpAddr), usize>,
    /// ESP packets per SPI.
    pub esp_by_spi: BTreeMap<u32, usize>,
    pub keepalives: Vec<Frame>,
    pub ike: Vec<Frame>,
    /// Every clear (non-ESP, non-control) IP packet.
    pub clear: Vec<Frame>,
    /// Clear packets with an inner-subnet source or destination.
    pub leaks: Vec<Frame>,
    pub other: usize,
}

impl WireReport {
    /// All ESP packets.
    pub fn esp_total(&self) -> usize {
        self.esp.values().sum()
    }

    /// ESP packets sent by `src`.
    pub fn esp_from(&self, src: IpAddr) -> usize {
        self.esp
            .iter()
            .filter(|((s, _), _)| *s == src)
            .map(|(_, n)| n)
            .sum()
    }

    /// A short description of the clear packets (the first `n`).
    pub fn describe_clear(&self, n: usize) -> String {
        self.clear
            .iter()
            .take(n)
            .map(|f| format!("  {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn summary(&self) -> String {
        let esp: Vec<String> = self
            .esp
            .iter()
            .map(|((s, d), n)| format!("{s} -> {d}: {n}"))
            .collect();
        format!(
            "{} frames: ESP {} ({}), keep-alives {}, IKE {}, ARP/ND {}, clear {} (inner-subnet leaks {}), other {}",
            self.frames,
            self.esp_total(),
            esp.join(", "),
            self.keepalives.len(),
            self.ike.len(),
            self.arp_nd,
            self.clear.len(),
            self.leaks.len(),
            self.other
        )
    }
}

/// Classify every frame of a capture; `inner_nets` are the protected subnets.
pub fn analyze(frames: &[RawFrame], encap_ports: &[u16], inner_nets: &[&str]) -> WireReport {
    let mut r = WireReport {
        frames: frames.len(),
        ..WireReport::default()
    };
    for (i, raw) in frames.iter().enumerate() {
        let f = classify(i + 1, raw, encap_ports);
        match f.kind {
            Kind::Arp | Kind::NeighbourDiscovery => r.arp_nd += 1,
            Kind::Esp { spi, .. } | Kind::UdpEsp { spi, .. } => {
                if let (Some(s), Some(d)) = (f.src, f.dst) {
                    *r.esp.entry((s, d)).or_default() += 1;
                }
                *r.esp_by_spi.entry(spi).or_default() += 1;
            }
            Kind::Keepalive => r.keepalives.push(f),
            Kind::Ike => r.ike.push(f),
            Kind::Clear { .. } => {
                let inner = [f.src, f.dst]
                    .into_iter()
                    .flatten()
                    .any(|a| inner_nets.iter().any(|n| in_net(a, n)));
                if inner {
                    r.leaks.push(f.clone());
                }
                r.clear.push(f);
            }
            Kind::Other(_) => r.other += 1,
        }
    }
    r
}

/// What tshark made of the ESP packets of a capture.
#[derive(Debug, Clone, Default)]
pub struct TsharkReport {
    pub total: usize,
    /// Decrypted with a good ICV.
    pub good: usize,
    /// One line per ESP packet: `frame spi seq icv next-header`.
    pub lines: Vec<String>,
}

/// Decrypt a capture with tshark and an `esp_sa` table (Wireshark UAT text). UDP 4500 is
/// decoded as RFC 3948 encapsulation by tshark itself; other `udp_ports` are added with
/// `-d udp.port==N,udpencap`. A private `WIRESHARK_CONFIG_DIR` under `workdir` holds the table.
pub fn tshark_decrypt(
    pcap: &Path,
    esp_sa: &str,
    udp_ports: &[u16],
    workdir: &Path,
) -> Result<TsharkReport> {
    if !procs::on_path("tshark") {
        return Err(err!("`tshark` is not installed (apt-get install tshark)"));
    }
    let conf = workdir.join("wireshark-config");
    std::fs::create_dir_all(&conf).map_err(|e| err!("create {}: {e}", conf.display()))?;
    std::fs::write(conf.join("esp_sa"), esp_sa).map_err(|e| err!("write esp_sa: {e}"))?;
    let mut c = Command::new("tshark");
    c.env("WIRESHARK_CONFIG_DIR", &conf)
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
        ]);
    for p in udp_ports.iter().filter(|p| **p != 4500) {
        c.args(["-d", &format!("udp.port=={p},udpencap")]);
    }
    c.args([
        "-Y",
        "esp",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=f",
        "-e",
        "frame.number",
        "-e",
        "esp.spi",
        "-e",
        "esp.sequence",
        "-e",
        "esp.icv_good",
        "-e",
        "esp.protocol",
    ]);
    let o = procs::run(c)?.check()?;
    let mut r = TsharkReport::default();
    for line in o.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        r.total += 1;
        let icv = f.get(3).copied().unwrap_or("");
        let nh = f.get(4).copied().unwrap_or("");
        if matches!(icv, "1" | "True" | "true") && !nh.is_empty() {
            r.good += 1;
        }
        r.lines.push(f.join(" "));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, ip: &[u8]) -> RawFrame {
        let mut d = vec![0u8; 12];
        d.extend_from_slice(&ethertype.to_be_bytes());
        d.extend_from_slice(ip);
        RawFrame {
            data: d,
            ethernet: true,
        }
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = sp.to_be_bytes().to_vec();
        u.extend_from_slice(&dp.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn classifies_and_finds_leaks() {
        let gw_a = [10, 0, 0, 1];
        let gw_b = [10, 0, 0, 2];
        let frames = vec![
            eth(0x0806, &[0; 28]),
            eth(
                0x0800,
                &ipv4(50, gw_a, gw_b, &[0, 0, 0x10, 0x01, 0, 0, 0, 7, 1, 2]),
            ),
            eth(0x0800, &ipv4(17, gw_a, gw_b, &udp(4500, 4500, &[0xff]))),
            eth(
                0x0800,
                &ipv4(17, gw_a, gw_b, &udp(4500, 4500, &[0, 0, 0, 0, 1, 2])),
            ),
            eth(
                0x0800,
                &ipv4(
                    17,
                    gw_b,
                    gw_a,
                    &udp(4500, 4500, &[0, 0, 0x20, 1, 0, 0, 0, 1, 9]),
                ),
            ),
            eth(
                0x0800,
                &ipv4(1, [10, 1, 0, 10], [10, 2, 0, 10], &[8, 0, 0, 0]),
            ),
            eth(0x0800, &ipv4(17, gw_a, gw_b, &udp(500, 500, &[1; 28]))),
        ];
        let r = analyze(&frames, &[4500], &["10.1.0.0/24", "10.2.0.0/24"]);
        assert_eq!(r.frames, 7);
        assert_eq!(r.arp_nd, 1);
        assert_eq!(r.esp_total(), 2);
        assert_eq!(r.esp_by_spi.get(&0x1001), Some(&1));
        assert_eq!(r.esp_by_spi.get(&0x2001), Some(&1));
        assert_eq!(r.esp_from("10.0.0.2".parse().expect("ip")), 1);
        assert_eq!(r.keepalives.len(), 1);
        assert_eq!(r.ike.len(), 2);
        assert_eq!(r.clear.len(), 1);
        assert_eq!(r.leaks.len(), 1);
        assert!(r.summary().contains("leaks 1"), "{}", r.summary());
        assert!(format!("{}", r.leaks[0]).contains("10.1.0.10 -> 10.2.0.10"));
    }

    #[test]
    fn nets_and_pcap() {
        assert!(in_net("10.1.0.77".parse().expect("ip"), "10.1.0.0/24"));
        assert!(!in_net("10.1.1.77".parse().expect("ip"), "10.1.0.0/24"));
        assert!(in_net("fd01::10".parse().expect("ip"), "fd01::/64"));
        assert!(!in_net("fd02::10".parse().expect("ip"), "fd01::/64"));
        assert!(!in_net("10.1.0.1".parse().expect("ip"), "fd01::/64"));
        // a little-endian microsecond pcap with one 3-byte Ethernet-linktype record
        let mut b = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[1, 2, 3]);
        let f = parse_pcap(&b).expect("parses");
        assert_eq!(
            f,
            vec![RawFrame {
                data: vec![1, 2, 3],
                ethernet: true
            }]
        );
        assert!(parse_pcap(&[0x0a, 0x0d, 0x0d, 0x0a]).is_err());
        // a record header cut off at the end ends the capture; cut-off data is an error
        b.extend_from_slice(&[0; 5]);
        assert_eq!(parse_pcap(&b).expect("parses").len(), 1);
        assert!(parse_pcap(&b[..b.len() - 6]).is_err());
        // raw IP (229: IPv6) and an unsupported link type
        b[20] = 229;
        assert!(!parse_pcap(&b).expect("parses")[0].ethernet);
        b[20] = 113;
        assert!(
            parse_pcap(&b)
                .unwrap_err()
                .to_string()
                .contains("link type 113")
        );
    }

    #[test]
    fn truncated_clear_packets_are_still_clear() {
        // an IPv4/UDP packet whose length fields promise more than the frame holds
        let mut ip = ipv4(17, [10, 1, 0, 10], [10, 2, 0, 10], &udp(7, 7, &[1; 40]));
        ip.truncate(30);
        let f = classify(1, &eth(0x0800, &ip), &[4500]);
        assert_eq!(f.kind, Kind::Clear { proto: 17 });
        assert_eq!(f.dport, Some(7));
        // an ICMP error quoting a UDP datagram
        let quoted = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &udp(4500, 4500, &[0xff]));
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let f = classify(
            2,
            &eth(0x0800, &ipv4(1, [10, 0, 0, 2], [10, 0, 0, 1], &icmp)),
            &[],
        );
        assert_eq!(
            f.note.as_deref(),
            Some(
                "ICMP type 3 code 3 quoting UDP 4500 -> 4500 with 1 payload bytes, first byte 0xff"
            )
        );
    }
}
