//! The traffic programs of the lab, run as subcommands of the `xsec-lab` binary inside the
//! namespaces (`ip netns exec NS xsec-lab udp-recv ...`). Bounded: each has a timeout or a
//! count, and each prints a one-line summary that [`parse_summary`] reads back.
//!
//! * `udp-recv --port P --count N --timeout S [--min M]`: one line per datagram
//!   (`from ADDR:PORT len N: PAYLOAD`), then `udp-recv: received N datagrams, B bytes`; exit 0
//!   if at least `min` (default `count`) arrived.
//! * `udp-send --dst A --port P [--sport S] [--count N] [--size B] [--interval-ms M]
//!   [--tag T | --payload-hex H]`.
//! * `tcp-sink --port P --timeout S`: accepts one connection, reads to EOF, checks every byte
//!   against [`pattern`], answers `ok N` (or `bad ...`) and exits 0 only if all was right.
//! * `tcp-send --dst A --port P --bytes N --timeout S`: connects (retrying until the sink
//!   listens), sends N pattern bytes, half-closes, and exits 0 only if the sink answers `ok N`.
//! * `udp-flood --dst A --port P --size S --seconds N [--batch B]`: datagrams of S bytes at
//!   L3 (IP + UDP header + payload) as fast as one blocking socket sends them, B per
//!   `sendmmsg(2)` call; prints one JSON line (`sent`, `seconds`, `errors`, `cpu_s`).
//! * `udp-count --port P --seconds N`: counts datagrams for N seconds, then prints one JSON
//!   line (`packets`, `bytes` of UDP payload, first/last arrival, `cpu_s`).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};

use crate::{Result, err};

/// The byte at offset `i` of a TCP transfer (period 251, so a shifted or repeated block
/// does not match).
pub fn pattern(i: u64) -> u8 {
    ((i.wrapping_mul(131).wrapping_add(7)) % 251) as u8
}

fn unspecified_for(dst: IpAddr) -> IpAddr {
    match dst {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A v4-mapped IPv6 address shown as IPv4.
fn plain(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

fn preview(b: &[u8]) -> String {
    let text = b
        .iter()
        .take(48)
        .all(|c| c.is_ascii_graphic() || *c == b' ');
    if text {
        String::from_utf8_lossy(&b[..b.len().min(48)]).into_owned()
    } else {
        format!("0x{}", hex::encode(&b[..b.len().min(24)]))
    }
}

/// `udp-recv`.
#[derive(Debug, Clone)]
pub struct UdpRecv {
    pub port: u16,
    /// Default `::` (dual stack: IPv4 arrives v4-mapped).
    pub bind: Option<IpAddr>,
    pub count: u64,
    /// Success threshold (default: `count`).
    pub min: Option<u64>,
    pub timeout: Duration,
}

/// Receive datagrams; `Ok(received)` if at least `min` arrived.
pub fn udp_recv(o: &UdpRecv) -> Result<u64> {
    let bind = SocketAddr::new(o.bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), o.port);
    let sock = UdpSocket::bind(bind).map_err(|e| err!("udp-recv: bind {bind}: {e}"))?;
    println!("udp-recv: listening on {bind}");
    let _ = std::io::stdout().flush();
    let end = Instant::now() + o.timeout;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    while n < o.count {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .map_err(|e| err!("udp-recv: {e}"))?;
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => {
                n += 1;
                bytes += len as u64;
                println!("from {} len {len}: {}", plain(from), preview(&buf[..len]));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(err!("udp-recv: {e}")),
        }
    }
    println!("udp-recv: received {n} datagrams, {bytes} bytes");
    let min = o.min.unwrap_or(o.count);
    if n >= min {
        Ok(n)
    } else {
        Err(err!(
            "udp-recv: only {n} of {min} datagrams within {:?}",
            o.timeout
        ))
    }
}

/// `udp-send`.
#[derive(Debug, Clone)]
pub struct UdpSend {
    pub dst: IpAddr,
    pub port: u16,
    pub sport: u16,
    pub count: u64,
    pub size: usize,
    pub interval: Duration,
    /// The payload starts with `TAG SEQ `; the rest is filler up to `size`.
    pub tag: String,
    /// Send exactly these bytes instead (e.g. an IKE header after a non-ESP marker).
    pub payload: Option<Vec<u8>>,
}

/// Send datagrams; `Ok(sent)`.
pub fn udp_send(o: &UdpSend) -> Result<u64> {
    let bind = SocketAddr::new(unspecified_for(o.dst), o.sport);
    let sock = UdpSocket::bind(bind).map_err(|e| err!("udp-send: bind {bind}: {e}"))?;
    let to = SocketAddr::new(o.dst, o.port);
    let mut sent = 0;
    for i in 0..o.count {
        let data = match &o.payload {
            Some(p) => p.clone(),
            None => {
                let mut d = format!("{} {i} ", o.tag).into_bytes();
                while d.len() < o.size {
                    d.push(b'a' + (d.len() % 26) as u8);
                }
                d
            }
        };
        match sock.send_to(&data, to) {
            Ok(_) => sent += 1,
            // ICMP errors of earlier datagrams surface here (e.g. while a route is missing)
            Err(e) => eprintln!("udp-send: {to}: {e}"),
        }
        if !o.interval.is_zero() && i + 1 < o.count {
            std::thread::sleep(o.interval);
        }
    }
    println!("udp-send: sent {sent} datagrams to {to}");
    Ok(sent)
}

/// `tcp-sink`: `Ok(bytes)` if the whole stream matched the pattern.
pub fn tcp_sink(port: u16, bind: Option<IpAddr>, timeout: Duration) -> Result<u64> {
    let addr = SocketAddr::new(bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), port);
    let l = TcpListener::bind(addr).map_err(|e| err!("tcp-sink: bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| err!("tcp-sink: {e}"))?;
    println!("tcp-sink: listening on {addr}");
    let _ = std::io::stdout().flush();
    let end = Instant::now() + timeout;
    let (mut s, from) = loop {
        match l.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= end {
                    return Err(err!("tcp-sink: no connection within {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err!("tcp-sink: accept: {e}")),
        }
    };
    s.set_nonblocking(false)
        .map_err(|e| err!("tcp-sink: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let mut off = 0u64;
    let mut bad: Option<u64> = None;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err!(
                "tcp-sink: {off} bytes from {} and no EOF within {timeout:?}",
                plain(from)
            ));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| err!("tcp-sink: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                for (i, b) in buf[..n].iter().enumerate() {
                    if bad.is_none() && *b != pattern(off + i as u64) {
                        bad = Some(off + i as u64);
                    }
                }
                off += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(err!("tcp-sink: read after {off} bytes: {e}")),
        }
    }
    let verdict = match bad {
        None => format!("ok {off}"),
        Some(at) => format!("bad at offset {at} of {off}"),
    };
    let _ = s.write_all(format!("{verdict}\n").as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    println!("tcp-sink: {} from {}", verdict, plain(from));
    match bad {
        None if off > 0 => Ok(off),
        None => Err(err!("tcp-sink: empty stream")),
        Some(at) => Err(err!("tcp-sink: content differs at offset {at}")),
    }
}

/// `tcp-send`: `Ok(bytes)` if the sink confirmed every byte.
pub fn tcp_send(dst: IpAddr, port: u16, bytes: u64, timeout: Duration) -> Result<u64> {
    let to = SocketAddr::new(dst, port);
    let end = Instant::now() + timeout;
    let mut s = loop {
        let left = end.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &to,
            left.clamp(Duration::from_millis(10), Duration::from_secs(2)),
        ) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= end => {
                return Err(err!("tcp-send: connect {to}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    s.set_write_timeout(Some(timeout))
        .and_then(|()| s.set_read_timeout(Some(timeout)))
        .map_err(|e| err!("tcp-send: {e}"))?;
    let mut chunk = vec![0u8; 16384];
    let mut off = 0u64;
    while off < bytes {
        let n = (bytes - off).min(chunk.len() as u64) as usize;
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(off + i as u64);
        }
        s.write_all(&chunk[..n])
            .map_err(|e| err!("tcp-send: write after {off} bytes: {e}"))?;
        off += n as u64;
        if Instant::now() >= end {
            return Err(err!(
                "tcp-send: only {off} of {bytes} bytes within {timeout:?}"
            ));
        }
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| err!("tcp-send: shutdown: {e}"))?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let reply = reply.trim();
    println!("tcp-send: sent {off} bytes to {to}, sink says: {reply}");
    if reply == format!("ok {bytes}") {
        Ok(off)
    } else {
        Err(err!(
            "tcp-send: the sink answered {reply:?}, not \"ok {bytes}\""
        ))
    }
}

/// IPv4 or IPv6 header plus the UDP header: what `udp-flood` adds to its payload at L3.
pub fn l3_overhead(dst: IpAddr) -> usize {
    match dst {
        IpAddr::V4(_) => 20 + 8,
        IpAddr::V6(_) => 40 + 8,
    }
}

/// `udp-flood`.
#[derive(Debug, Clone)]
pub struct UdpFlood {
    pub dst: IpAddr,
    pub port: u16,
    /// Datagram size at L3: IP header + UDP header + payload.
    pub size: usize,
    pub duration: Duration,
    /// Datagrams per `sendmmsg` call (1: one `send` per datagram).
    pub batch: usize,
}

/// Send as fast as the socket takes datagrams for `duration`; `Ok(sent)`. Prints
/// `{"sent":N,"seconds":S,"errors":E,"batch":B,"size":L3,"cpu_s":C}`.
pub fn udp_flood(o: &UdpFlood) -> Result<u64> {
    let hdr = l3_overhead(o.dst);
    if o.size < hdr || o.size > 65535 {
        return Err(err!(
            "udp-flood: --size {} is not between {hdr} and 65535 (L3 bytes)",
            o.size
        ));
    }
    let bind = SocketAddr::new(unspecified_for(o.dst), 0);
    let sock = UdpSocket::bind(bind).map_err(|e| err!("udp-flood: bind {bind}: {e}"))?;
    let to = SocketAddr::new(o.dst, o.port);
    sock.connect(to)
        .map_err(|e| err!("udp-flood: connect {to}: {e}"))?;
    let payload: Vec<u8> = (0..o.size - hdr).map(|i| (i % 251) as u8).collect();
    let batch = o.batch.clamp(1, 1024);
    // the same payload in every message of the batch; on a connected socket no address
    let iov = [std::io::IoSlice::new(&payload)];
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        (0..batch).map(|_| SendAncillaryBuffer::default()).collect();
    let mut msgs: Vec<MMsgHdr<'_>> = controls.iter_mut().map(|c| MMsgHdr::new(&iov, c)).collect();
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + o.duration;
    let mut now = start;
    while now < end {
        let r = if batch == 1 {
            sock.send(&payload).map(|_| 1)
        } else {
            rustix::net::sendmmsg(&sock, &mut msgs, SendFlags::empty()).map_err(Into::into)
        };
        match r {
            Ok(n) => sent += n as u64,
            // ECONNREFUSED (an ICMP error of an earlier datagram), ENOBUFS: count, go on
            Err(_) => errors += 1,
        }
        now = Instant::now();
    }
    let secs = now.duration_since(start).as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "sent": sent,
            "seconds": secs,
            "errors": errors,
            "batch": batch,
            "size": o.size,
            "cpu_s": crate::sysstat::proc_cpu_seconds("self"),
        })
    );
    Ok(sent)
}

/// Count datagrams to `port` for `duration`; `Ok(packets)`. Prints `udp-count: listening on
/// ADDR`, then `{"packets":N,"bytes":B,"first_s":F,"last_s":L,"window_s":W,"cpu_s":C}` (UDP
/// payload bytes; arrival times in seconds since it started listening).
pub fn udp_count(port: u16, duration: Duration) -> Result<u64> {
    let bind = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let sock = UdpSocket::bind(bind).map_err(|e| err!("udp-count: bind {bind}: {e}"))?;
    // a deep socket buffer: the receiver shares two cores with everything else, and what it
    // loses while descheduled is not the gateways' loss (RcvbufErrors counts the rest)
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 32 << 20)
        .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 32 << 20));
    // one timeout for the whole run: no syscall per datagram besides recv
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| err!("udp-count: {e}"))?;
    println!("udp-count: listening on {bind}");
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let end = start + duration;
    let (mut n, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let now = Instant::now();
                n += 1;
                bytes += len as u64;
                first.get_or_insert(now);
                last = Some(now);
                if now >= end {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= end {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(err!("udp-count: {e}")),
        }
    }
    let since = |t: Option<Instant>| t.map(|t| t.duration_since(start).as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "packets": n,
            "bytes": bytes,
            "first_s": since(first),
            "last_s": since(last),
            "window_s": start.elapsed().as_secs_f64(),
            "cpu_s": crate::sysstat::proc_cpu_seconds("self"),
        })
    );
    Ok(n)
}

/// The last line of a tool's output that is a JSON object.
pub fn last_json(out: &str) -> Option<serde_json::Value> {
    out.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
}

/// Read a tool's summary: the number after `received` / `sent` / `ok` on its last line
/// starting with `prefix` (e.g. `udp-recv:`).
pub fn parse_summary(out: &str, prefix: &str) -> Option<u64> {
    let line = out.lines().rev().find(|l| l.starts_with(prefix))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if matches!(w, "received" | "sent" | "ok") {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// How many datagrams `udp-recv` reported: its summary, or (if it was stopped before it
/// printed one) the datagram lines.
pub fn received_count(out: &str) -> u64 {
    parse_summary(out, "udp-recv:")
        .unwrap_or_else(|| out.lines().filter(|l| l.starts_with("from ")).count() as u64)
}

/// The payloads `udp-recv` printed, in order.
pub fn received_payloads(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("from "))
        .filter_map(|l| l.split_once(": ").map(|(_, p)| p.to_owned()))
        .collect()
}

/// The senders (`ADDR:PORT`) `udp-recv` printed, in order.
pub fn received_from(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("from "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let out = "udp-recv: listening on [::]:5000\nfrom 10.1.0.10:4500 len 3: abc\n\
                   udp-recv: received 1 datagrams, 3 bytes\n";
        assert_eq!(parse_summary(out, "udp-recv:"), Some(1));
        assert_eq!(received_payloads(out), vec!["abc".to_owned()]);
        assert_eq!(received_count(out), 1);
        assert_eq!(received_count("from a len 1: x\nfrom a len 1: y\n"), 2);
        assert_eq!(received_from(out), vec!["10.1.0.10:4500".to_owned()]);
        assert_eq!(
            parse_summary("tcp-sink: ok 100 from x", "tcp-sink:"),
            Some(100)
        );
        assert_eq!(
            parse_summary("udp-send: sent 5 datagrams to x", "udp-send:"),
            Some(5)
        );
        assert_ne!(pattern(0), pattern(251 * 2 + 1));
        assert_eq!(pattern(3), pattern(254));
    }

    #[test]
    fn loopback_round_trips() {
        // UDP and TCP over the loopback of whatever namespace the unit test runs in
        let port = 40000 + (std::process::id() % 20000) as u16;
        let r = std::thread::spawn(move || {
            udp_recv(&UdpRecv {
                port,
                bind: Some("127.0.0.1".parse().expect("addr")),
                count: 3,
                min: None,
                timeout: Duration::from_secs(5),
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        let sent = udp_send(&UdpSend {
            dst: "127.0.0.1".parse().expect("addr"),
            port,
            sport: 0,
            count: 3,
            size: 100,
            interval: Duration::ZERO,
            tag: "t".into(),
            payload: None,
        });
        assert_eq!(sent, Ok(3));
        assert_eq!(r.join().expect("thread"), Ok(3));

        let sink = std::thread::spawn(move || {
            tcp_sink(
                port,
                Some("127.0.0.1".parse().expect("addr")),
                Duration::from_secs(10),
            )
        });
        let sent = tcp_send(
            "127.0.0.1".parse().expect("addr"),
            port,
            100_000,
            Duration::from_secs(10),
        );
        assert_eq!(sent, Ok(100_000));
        assert_eq!(sink.join().expect("thread"), Ok(100_000));
    }
}
