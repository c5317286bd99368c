//! Packet tracing (`xsecctl trace`): a worker copies the packets of one policy or one SA —
//! plaintext, before encryption and after decryption — to the control thread, which streams
//! them to the client; the client writes a pcap file (LINKTYPE_RAW: the IP packet itself).
//!
//! Untraced traffic pays one `Option` test per packet. A traced packet costs an SPD lookup
//! and a copy; at most `max` packets are copied per worker and the channel is bounded, so a
//! slow client loses trace packets (counted), never dataplane packets.

use crossbeam_channel::Sender;
use std::time::SystemTime;
use xsec_dataplane::spd::{Action, Direction, Lookup, PacketKey, Spd};
use xsec_dataplane::wire::{
    AhHeader, EspPacket, IpCompHeader, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket,
};

/// What to trace, resolved by the daemon from a policy name or an SPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Packets whose first matching policy has this name (either direction).
    pub policy: Option<String>,
    /// Inbound packets decrypted by the SA with this SPI.
    pub in_spi: Option<u32>,
    /// Outbound packets sent through the SA pair with this reqid.
    pub out_reqid: Option<u32>,
    /// UDP ports carrying ESP (4500 and the tunnel ports), to find an inbound packet's SPI.
    pub udp_ports: Vec<u16>,
}

/// One traced packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub worker: u16,
    pub direction: Direction,
    pub time: SystemTime,
    /// The IP packet (no link header).
    pub data: Vec<u8>,
}

/// A worker's active trace.
#[derive(Debug)]
pub struct Tap {
    pub filter: Filter,
    /// Packets this worker may still copy.
    pub left: u64,
    pub out: Sender<Packet>,
    /// Policy indexes of `filter.policy` in the worker's current SPD (per direction).
    idx: [Option<u32>; 2],
    /// Copies the channel had no room for.
    pub lost: u64,
}

impl Tap {
    pub fn new(filter: Filter, max: u64, out: Sender<Packet>, spd: &Spd) -> Tap {
        let mut t = Tap {
            filter,
            left: max,
            out,
            idx: [None, None],
            lost: 0,
        };
        t.set_spd(spd);
        t
    }

    /// Re-resolve the policy name after an SPD change.
    pub fn set_spd(&mut self, spd: &Spd) {
        for dir in [Direction::Inbound, Direction::Outbound] {
            self.idx[dir.index()] = self.filter.policy.as_ref().and_then(|name| {
                spd.policies(dir)
                    .iter()
                    .position(|p| &p.name == name)
                    .map(|i| i as u32)
            });
        }
    }

    /// Does this plaintext packet, about to be protected (outbound) or just decapsulated
    /// (inbound, `spi` = the SA that decrypted it), belong to the trace?
    pub fn wants(&self, spd: &Spd, dir: Direction, ip: &[u8], spi: Option<u32>) -> bool {
        if self.left == 0 {
            return false;
        }
        if dir == Direction::Inbound
            && let (Some(want), Some(got)) = (self.filter.in_spi, spi)
            && want == got
        {
            return true;
        }
        let want_policy = self.idx[dir.index()];
        let want_reqid = match dir {
            Direction::Outbound => self.filter.out_reqid,
            Direction::Inbound => None,
        };
        if want_policy.is_none() && want_reqid.is_none() {
            return false;
        }
        let Ok(key) = PacketKey::parse(ip) else {
            return false;
        };
        match spd.lookup(dir, &key) {
            Lookup::Policy { index, action } => {
                Some(index) == want_policy
                    || matches!((action, want_reqid), (Action::Protect(b), Some(r)) if b.reqids().contains(&r))
            }
            Lookup::Default { .. } => false,
        }
    }

    /// Send a copy of `ip`.
    pub fn copy(&mut self, worker: u16, direction: Direction, ip: &[u8]) {
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        let p = Packet {
            worker,
            direction,
            time: SystemTime::now(),
            data: ip.to_vec(),
        };
        if self.out.try_send(p).is_err() {
            self.lost += 1;
        }
    }
}

/// The SPI of an ESP packet (raw, or UDP-encapsulated on `udp_ports`) or of an AH packet,
/// or the CPI of an IPComp packet, from its outer IP header; `None` for anything else. IPv6 extension headers are not walked (the engine
/// would not decapsulate such a packet either before reassembly).
pub fn esp_spi(ip: &[u8], udp_ports: &[u16]) -> Option<u32> {
    let (proto, payload) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            (
                p.protocol(),
                ip.get(p.header_len()..usize::from(p.total_len()))?,
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            (p.next_header(), ip.get(40..p.total_len())?)
        }
        _ => return None,
    };
    let esp = match proto {
        IpProtocol::ESP => payload,
        IpProtocol::AH => return AhHeader::new_checked(payload).ok().map(|h| h.spi()),
        IpProtocol::IPCOMP => {
            return IpCompHeader::new_checked(payload)
                .ok()
                .map(|h| u32::from(h.cpi()));
        }
        IpProtocol::UDP => {
            let u = UdpPacket::new_checked(payload).ok()?;
            if !udp_ports.contains(&u.dst_port()) {
                return None;
            }
            payload.get(8..)?
        }
        _ => return None,
    };
    let spi = EspPacket::new_checked(esp).ok()?.spi();
    // a zero "SPI" is the non-ESP marker (IKE)
    (spi != 0).then_some(spi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_of_raw_and_udp_encapsulated_esp() {
        // lengths in the headers as on the wire: a packet shorter than its header says is
        // not looked into
        let mut v4 = vec![0u8; 20 + 8];
        v4[0] = 0x45;
        v4[9] = 50;
        v4[3] = 28;
        v4[20..24].copy_from_slice(&0x1234u32.to_be_bytes());
        assert_eq!(esp_spi(&v4, &[4500]), Some(0x1234));
        let mut udp = vec![0u8; 20 + 8 + 8];
        udp[0] = 0x45;
        udp[9] = 17;
        udp[3] = 36;
        udp[25] = 16;
        udp[22..24].copy_from_slice(&4500u16.to_be_bytes());
        udp[28..32].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(esp_spi(&udp, &[4500]), Some(7));
        assert_eq!(esp_spi(&udp, &[2746]), None, "not an encapsulation port");
        udp[28..32].fill(0);
        assert_eq!(esp_spi(&udp, &[4500]), None, "non-ESP marker");
        let mut v6 = vec![0u8; 40 + 8];
        v6[0] = 0x60;
        v6[6] = 50;
        v6[5] = 8;
        v6[40..44].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(esp_spi(&v6, &[]), Some(9));
        assert_eq!(esp_spi(&v6[..42], &[]), None, "truncated");
        assert_eq!(esp_spi(&[], &[]), None);
        v4[3] = 40;
        assert_eq!(
            esp_spi(&v4, &[]),
            None,
            "shorter than its IPv4 total length"
        );
        // AH: the SPI after next header, length and reserved; IPComp: the CPI
        let mut ah = vec![0u8; 20 + 24];
        ah[0] = 0x45;
        ah[9] = 51;
        ah[3] = 44;
        ah[21] = 4;
        ah[24..28].copy_from_slice(&0x5101u32.to_be_bytes());
        assert_eq!(esp_spi(&ah, &[]), Some(0x5101));
        ah[21] = 9;
        assert_eq!(esp_spi(&ah, &[]), None, "AH longer than the packet");
        let mut comp = vec![0u8; 20 + 8];
        comp[0] = 0x45;
        comp[9] = 108;
        comp[3] = 28;
        comp[22..24].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(esp_spi(&comp, &[]), Some(3));
    }
}
