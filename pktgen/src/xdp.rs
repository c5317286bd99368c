//! `xsec-pktgen gen --io xdp`: whole Ethernet/IPv4/UDP frames on a transmit-only AF_XDP
//! socket (xsecd's [`XskTx`]), bypassing the sender's UDP/IP stack. The destination MAC is
//! the next hop's, from the kernel's routing and neighbour tables (xsecd's resolver, which
//! also triggers ARP); the source address is the interface's first IPv4 address. UDP source
//! port of flow `f` is `--src-port` + f (10000 + f if that is 0); no UDP checksum (0,
//! allowed for IPv4).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use xsec_pktgen::*;
use xsecd::neigh::{Resolution, Resolver};
use xsecd::xsk::{XskConfig, XskTx};

use crate::{Gen, check_sizes, gen_summary, stop_flag};

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

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
    h[0..6].copy_from_slice(&dst_mac);
    h[6..12].copy_from_slice(&src_mac);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut h[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut h[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    h
}

pub fn generate(g: &Gen, iface: &str) -> Result<(), String> {
    let IpAddr::V4(dst) = g.dst else {
        return Err("--io xdp sends IPv4 only".into());
    };
    // one UMEM frame per packet, Ethernet header included
    check_sizes(g, xsecd::xsk::FRAME_SIZE as usize - 14)?;
    let base = if g.src_port == 0 { 10_000 } else { g.src_port };
    if base.checked_add(g.flows - 1).is_none() {
        return Err(format!(
            "--src-port {base} + {} flows passes 65535",
            g.flows
        ));
    }
    let mut res = Resolver::new().map_err(|e| format!("netlink: {e}"))?;
    let ifindex = res.ifindex(iface).map_err(|e| format!("{iface}: {e}"))?;
    let src = res
        .addresses(ifindex)
        .map_err(|e| format!("{iface}: {e}"))?
        .into_iter()
        .find_map(|a| match a {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("{iface} has no IPv4 address"))?;
    // the next hop's MAC: resolution kicks ARP, so ask again for a while
    let deadline = Instant::now() + Duration::from_secs(3);
    let hop = loop {
        match res
            .resolve(g.dst)
            .map_err(|e| format!("route to {dst}: {e}"))?
        {
            Resolution::Ready(h) if h.ifindex == ifindex => break h,
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
    };
    let mut xsk = XskTx::open(
        iface,
        0,
        &XskConfig {
            frames: 4096,
            ring: 2048,
            force_copy: false,
        },
    )
    .map_err(|e| e.to_string())?;
    // per (size, flow): headers; the payload template per size
    let mut templates: Vec<(usize, Vec<u8>)> = vec![];
    for &s in &g.sizes {
        if !templates.iter().any(|t| t.0 == s) {
            templates.push((s, template(s - 28)));
        }
    }
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
            let s = seq;
            let size = g.sizes[(s % g.sizes.len() as u64) as usize];
            let Some(mut f) = xsk.alloc() else {
                if xsk.kick_and_reap() == 0 {
                    std::thread::yield_now();
                }
                continue;
            };
            let flow = (s % u64::from(g.flows)) as u16;
            let h = headers(
                hop.dst_mac,
                hop.src_mac,
                src.octets(),
                dst.octets(),
                base.wrapping_add(flow),
                g.port,
                size - 28,
            );
            let len = 14 + size;
            let Some(buf) = f.as_mut().get_mut(..len) else {
                xsk.release(f);
                errors += 1;
                break;
            };
            buf[..42].copy_from_slice(&h);
            if let Some(t) = templates.iter().find(|t| t.0 == size) {
                buf[42..].copy_from_slice(&t.1);
            }
            stamp(&mut buf[42..], g.stream, s, ts);
            match xsk.send(f, len) {
                Ok(()) => {
                    seq += 1;
                    k += 1;
                }
                Err(f) => {
                    xsk.release(f);
                    xsk.kick_and_reap();
                }
            }
        }
        xsk.kick_and_reap();
        if !g.quiet && live.due() {
            let (t, pps) = live.tick(seq);
            eprintln!(
                "gen: {t:>5.1} s  sent {seq:>10}  {:>8.1} kpps (AF_XDP {iface})",
                pps / 1e3
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // let the kernel finish what is queued before the UMEM goes
    let drain = Instant::now() + Duration::from_secs(2);
    while xsk.free_frames() < 4096 && Instant::now() < drain {
        xsk.kick_and_reap();
        std::thread::sleep(Duration::from_millis(1));
    }
    gen_summary(g, seq, secs, errors, "xdp");
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
        assert_eq!(
            ipv4_checksum(&h[14..34]),
            0,
            "a header with its checksum sums to 0"
        );
        assert_eq!(u16::from_be_bytes([h[16], h[17]]), 128);
        assert_eq!(u16::from_be_bytes([h[38], h[39]]), 108);
        assert_eq!(&h[12..14], &[0x08, 0x00]);
    }
}
