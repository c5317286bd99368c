//! Random and mutated Ethernet frames for the robustness test: well-formed ESP, UDP-4500 and
//! UDP-2746 headers with garbage behind them (known and unknown SPIs), the non-ESP marker and
//! keep-alives, IPv6, ARP, then mutated (bytes flipped, truncated, extended, header lengths
//! and fragment fields broken) and plain random frames.
//!
//! The frames are written to a file ([`write_frames`]: a 2-byte big-endian length before each)
//! and sent for a bounded time from a namespace by [`INJECTOR`], a Python stdlib AF_PACKET
//! sender: a raw packet socket needs a `sockaddr_ll`, which safe Rust (the workspace denies
//! `unsafe`) has no wrapper for.

use std::net::{Ipv4Addr, Ipv6Addr};

use xsec_dataplane::wire::Ipv4Packet;

use crate::config::Rng;

/// Where the frames go.
#[derive(Debug, Clone)]
pub struct Target {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src6: Ipv6Addr,
    pub dst6: Ipv6Addr,
    /// SPIs the receiver knows (half the ESP frames use one of them).
    pub spis: Vec<u32>,
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

fn eth(t: &Target, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = t.dst_mac.to_vec();
    f.extend_from_slice(&t.src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(t: &Target, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()).min(65535) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&t.src.octets());
    p.extend_from_slice(&t.dst.octets());
    Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
    p.extend_from_slice(l4);
    p
}

fn ipv6(t: &Target, nh: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len().min(65535) as u16).to_be_bytes());
    p.extend_from_slice(&[nh, 64]);
    p.extend_from_slice(&t.src6.octets());
    p.extend_from_slice(&t.dst6.octets());
    p.extend_from_slice(l4);
    p
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()).min(65535) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]); // no checksum (IPv4)
    u.extend_from_slice(payload);
    u
}

fn esp_body(rng: &mut Rng, t: &Target) -> Vec<u8> {
    let spi = if rng.below(2) == 0 && !t.spis.is_empty() {
        t.spis[rng.below(t.spis.len() as u64) as usize]
    } else {
        rng.next_u64() as u32
    };
    let mut b = spi.to_be_bytes().to_vec();
    b.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    let n = rng.below(160) as usize;
    b.extend(rng.bytes(n));
    b
}

/// One well-formed-looking frame of a random kind.
fn template(rng: &mut Rng, t: &Target) -> Vec<u8> {
    match rng.below(10) {
        0 | 1 => eth(t, 0x0800, &ipv4(t, 50, &esp_body(rng, t))),
        2 | 3 => eth(t, 0x0800, &ipv4(t, 17, &udp(4500, 4500, &esp_body(rng, t)))),
        4 => eth(t, 0x0800, &ipv4(t, 17, &udp(2746, 2746, &esp_body(rng, t)))),
        5 => {
            // the non-ESP marker, a keep-alive, or a short datagram on an encapsulation port
            let port = if rng.below(2) == 0 { 4500 } else { 2746 };
            let payload = match rng.below(3) {
                0 => {
                    let mut p = vec![0, 0, 0, 0];
                    let n = rng.below(64) as usize;
                    p.extend(rng.bytes(n));
                    p
                }
                1 => vec![0xff],
                _ => {
                    let n = rng.below(8) as usize;
                    rng.bytes(n)
                }
            };
            eth(t, 0x0800, &ipv4(t, 17, &udp(port, port, &payload)))
        }
        6 => eth(t, 0x86dd, &ipv6(t, 50, &esp_body(rng, t))),
        7 => {
            let mut u = udp(4500, 4500, &esp_body(rng, t));
            u[6..8].copy_from_slice(&[0x12, 0x34]);
            eth(t, 0x86dd, &ipv6(t, 17, &u))
        }
        8 => {
            let n = 28 + rng.below(20) as usize;
            eth(t, 0x0806, &rng.bytes(n))
        }
        _ => {
            let n = rng.below(120) as usize;
            eth(t, 0x0800, &ipv4(t, rng.below(256) as u8, &rng.bytes(n)))
        }
    }
}

/// Break a frame a little: flip bytes, truncate, extend, or corrupt IP header fields.
fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            0 | 1 if !f.is_empty() => {
                let i = rng.below(f.len() as u64) as usize;
                f[i] ^= 1 << rng.below(8);
            }
            2 if f.len() > 14 => {
                let n = 14 + rng.below((f.len() - 14) as u64) as usize;
                f.truncate(n);
            }
            3 => {
                let n = rng.below(64) as usize;
                f.extend(rng.bytes(n));
            }
            4 if f.len() >= 18 => {
                // IPv4 total length / IPv6 payload length
                let v = rng.next_u64() as u16;
                f[16..18].copy_from_slice(&v.to_be_bytes());
            }
            5 if f.len() >= 22 => {
                // version/IHL, or fragment offset + flags
                if rng.below(2) == 0 {
                    f[14] = rng.next_u64() as u8;
                } else {
                    f[20] = rng.next_u64() as u8;
                    f[21] = rng.next_u64() as u8;
                }
            }
            _ if f.len() >= 40 => {
                // UDP length
                let v = rng.next_u64() as u16;
                f[38..40].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    f
}

/// `count` frames: a quarter as built, half mutated, a quarter random bytes.
pub fn frames(seed: u64, count: usize, t: &Target) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let f = match rng.below(4) {
                0 => template(&mut rng, t),
                1 | 2 => {
                    let f = template(&mut rng, t);
                    mutate(&mut rng, f)
                }
                _ => {
                    let n = 1 + rng.below(200) as usize;
                    let mut f = if rng.below(2) == 0 {
                        t.dst_mac.to_vec()
                    } else {
                        vec![]
                    };
                    f.extend(rng.bytes(n));
                    f
                }
            };
            // AF_PACKET wants at least an Ethernet header and at most the MTU plus one
            let mut f = f;
            if f.len() < 14 {
                f.resize(14, 0);
            }
            f.truncate(1514);
            f
        })
        .collect()
}

/// The file [`INJECTOR`] reads: `len:u16be frame` records.
pub fn write_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![];
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// `python3 -c INJECTOR IFNAME FILE SECONDS`: send the frames in a loop over an AF_PACKET
/// socket bound to IFNAME for SECONDS; prints `inject: sent N frames (E errors)`.
pub const INJECTOR: &str = r#"
import socket, struct, sys, time
ifname, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(path, 'rb').read()
frames, at = [], 0
while at + 2 <= len(data):
    n = struct.unpack('!H', data[at:at + 2])[0]
    frames.append(data[at + 2:at + 2 + n]); at += 2 + n
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
end = time.monotonic() + seconds
sent = errors = i = 0
while time.monotonic() < end and frames:
    try:
        s.send(frames[i % len(frames)]); sent += 1
    except OSError:
        errors += 1
        time.sleep(0.001)
    i += 1
    if i % 64 == 0:
        time.sleep(0.001)   # two shared cores: leave room for the daemons
print('inject: sent %d frames (%d errors)' % (sent, errors))
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_bounded_and_reproducible() {
        let t = Target {
            src_mac: parse_mac("02:00:00:00:00:01").expect("mac"),
            dst_mac: parse_mac("02:00:00:00:00:02").expect("mac"),
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            src6: "fd00::1".parse().expect("ip"),
            dst6: "fd00::2".parse().expect("ip"),
            spis: vec![0x1001],
        };
        let a = frames(7, 500, &t);
        assert_eq!(a, frames(7, 500, &t));
        assert!(a.iter().all(|f| (14..=1514).contains(&f.len())));
        let esp = a.iter().filter(|f| f.get(23) == Some(&50)).count();
        assert!(esp > 20, "{esp} ESP frames");
        let file = write_frames(&a);
        assert_eq!(file.len(), a.iter().map(|f| f.len() + 2).sum::<usize>());
        assert!(parse_mac("zz").is_none());
    }
}
