//! `xsec-pktgen gen` sends sequence-numbered, timestamped UDP datagrams (fixed rate or as
//! fast as the socket takes them); `xsec-pktgen sink` receives them and reports loss,
//! reordering, duplicates, damage and one-way latency, live every second and as one JSON
//! line (and a table on stderr) at the end. Frames instead of sockets: `--io xdp|packet`
//! (generator: `xdp.rs`, sink: `rx.rs`).

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
use serde_json::json;
use xsec_pktgen::*;

#[derive(Debug, Parser)]
#[command(name = "xsec-pktgen", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send datagrams to DST:PORT; one JSON line at the end (`sent`, `seconds`, `pps`, ...).
    Gen {
        #[arg(long)]
        dst: IpAddr,
        #[arg(long, default_value_t = 5301)]
        port: u16,
        /// IP packet sizes in bytes (IP + UDP headers + payload), comma-separated and cycled,
        /// or `imix` (7:4:1 of 64, 576, 1420).
        #[arg(long, default_value = "64")]
        size: String,
        /// Flows: source ports (one socket each), used in turn batch by batch.
        #[arg(long, default_value_t = 1)]
        flows: u16,
        /// Source port of flow 0; flow `f` sends from `src_port + f` (so a gateway's SPD
        /// can map flows to SAs by port range). 0: ephemeral ports (sockets only).
        #[arg(long, default_value_t = 10_000)]
        src_port: u16,
        /// Datagrams per second; 0 = as fast as the sockets take them.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Stop after this long.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Stop after this many datagrams (0: no limit).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Datagrams per sendmmsg(2).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Stream id (default: from the clock), so a sink can tell runs apart.
        #[arg(long)]
        stream: Option<u32>,
        /// Testing the sink: swap every Nth datagram with the next one (0: never).
        #[arg(long, default_value_t = 0)]
        swap_every: u64,
        /// Testing the sink: damage one payload byte of every Nth datagram (0: never).
        #[arg(long, default_value_t = 0)]
        corrupt_every: u64,
        /// No live lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// `socket` (kernel UDP sockets, sendmmsg), `xdp` (whole frames on a transmit-only
        /// AF_XDP socket: IPv4 only, next hop from the kernel's tables; AF_PACKET if no
        /// AF_XDP socket can be had) or `packet` (the same frames on AF_PACKET).
        #[arg(long, default_value = "socket")]
        io: String,
        /// With `--io xdp` or `packet`: the interface to send on.
        #[arg(long)]
        iface: Option<String>,
        /// With `--io xdp`: the interface's TX queue (one generator per queue to load
        /// several).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// With `--io xdp` or `packet`: the source address (default: the interface's first IPv4 one).
        #[arg(long)]
        src: Option<IpAddr>,
        /// With `--io xdp` or `packet`: protect what is sent as the gateway this xsecd configuration
        /// describes would (its SPD and outbound SAs: ESP or ESP-in-UDP), standing in for
        /// it in front of the gateway under test (decapsulation alone).
        #[arg(long)]
        esp_config: Option<PathBuf>,
        /// With `--esp-config`: the first ESP sequence number of every SA (stay above what
        /// the receiver has seen, or its anti-replay drops the packets).
        #[arg(long, default_value_t = 1)]
        esp_seq_start: u64,
    },
    /// Receive datagrams on PORT and account for them; one JSON line at the end.
    Sink {
        #[arg(long, default_value_t = 5301)]
        port: u16,
        /// Stop after this long.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Stop once this long has passed without a datagram, after the first one.
        #[arg(long, default_value_t = 1.0)]
        idle_exit: f64,
        /// The generator's count, for exact loss (else: from the highest sequence number).
        #[arg(long)]
        expect: Option<u64>,
        /// No live lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// `socket` (the kernel's UDP socket), `xdp` (xsecd's XDP program on `--iface`
        /// steers the datagrams to receive-only AF_XDP sockets, one per RX queue; AF_PACKET
        /// if that cannot be had) or `packet` (an AF_PACKET tap on `--iface`).
        #[arg(long, default_value = "socket")]
        io: String,
        /// With `--io xdp` or `packet`: the interface to receive on.
        #[arg(long)]
        iface: Option<String>,
    },
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    stop
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Gen {
            dst,
            port,
            size,
            flows,
            src_port,
            rate,
            seconds,
            count,
            batch,
            stream,
            swap_every,
            corrupt_every,
            quiet,
            io,
            iface,
            queue,
            src,
            esp_config,
            esp_seq_start,
        } => sizes(&size).and_then(|sizes| {
            let g = Gen {
                dst,
                port,
                sizes,
                flows: flows.max(1),
                src_port,
                rate,
                seconds,
                count,
                batch: batch.clamp(1, 1024),
                stream: stream.unwrap_or_else(|| (now_ns() >> 10) as u32),
                swap_every,
                corrupt_every,
                quiet,
                src,
                queue,
                esp: esp_config,
                esp_seq_start: esp_seq_start.max(1),
            };
            match (io.as_str(), iface) {
                ("socket", _) if g.esp.is_some() || g.src.is_some() => {
                    Err("--esp-config and --src need --io xdp or packet".into())
                }
                ("socket", _) => generate(&g),
                (o @ ("xdp" | "packet"), Some(i)) => xdp::generate(&g, &i, o),
                (o @ ("xdp" | "packet"), None) => Err(format!("--io {o} needs --iface")),
                (o, _) => Err(format!("--io {o}: socket, xdp or packet")),
            }
        }),
        Cmd::Sink {
            port,
            seconds,
            idle_exit,
            expect,
            quiet,
            io,
            iface,
        } => sink(
            port,
            seconds,
            idle_exit,
            expect,
            quiet,
            &io,
            iface.as_deref(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xsec-pktgen: {e}");
            ExitCode::from(2)
        }
    }
}

mod esp;
mod rx;
mod xdp;

struct Gen {
    dst: IpAddr,
    port: u16,
    sizes: Vec<usize>,
    flows: u16,
    src_port: u16,
    rate: f64,
    seconds: f64,
    count: u64,
    batch: usize,
    stream: u32,
    swap_every: u64,
    corrupt_every: u64,
    quiet: bool,
    /// The IP source (AF_XDP only).
    src: Option<IpAddr>,
    /// The AF_XDP TX queue.
    queue: u32,
    /// A gateway configuration whose SPD and SAs protect what is sent (AF_XDP only).
    esp: Option<PathBuf>,
    esp_seq_start: u64,
}

/// What the generator prints at the end.
fn gen_summary(g: &Gen, sent: u64, secs: f64, errors: u64, io: &str) {
    println!(
        "{}",
        json!({
            "role": "gen",
            "io": io,
            "stream": g.stream,
            "sent": sent,
            "seconds": secs,
            "pps": sent as f64 / secs.max(1e-9),
            "errors": errors,
            "sizes": g.sizes,
            "flows": g.flows,
            "rate": g.rate,
        })
    );
}

/// Every size must hold the IP and UDP headers and the stamp, and at most `max` bytes.
fn check_sizes(g: &Gen, max: usize) -> Result<usize, String> {
    let hdr = if g.dst.is_ipv4() { 28 } else { 48 };
    for &s in &g.sizes {
        if s < hdr + HEADER || s > max {
            return Err(format!(
                "size {s}: from {} (IP + UDP headers + the {HEADER}-byte stamp) to {max}",
                hdr + HEADER
            ));
        }
    }
    Ok(hdr)
}

fn generate(g: &Gen) -> Result<(), String> {
    let hdr = check_sizes(g, 9000)?;
    let unspec = match g.dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let to = SocketAddr::new(g.dst, g.port);
    let mut socks = vec![];
    for f in 0..g.flows {
        let port = match g.src_port {
            0 => 0,
            p => p
                .checked_add(f)
                .ok_or_else(|| format!("--src-port {p} + {} flows passes 65535", g.flows))?,
        };
        let s = UdpSocket::bind(SocketAddr::new(unspec, port))
            .map_err(|e| format!("bind source port {port}: {e}"))?;
        s.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, 4 << 20);
        socks.push(s);
    }
    // one payload buffer per slot of a batch, re-stamped for each datagram
    let mut bufs: Vec<Vec<u8>> = (0..g.batch).map(|_| Vec::new()).collect();
    // slots whose fill was damaged on purpose: rebuilt before their next use
    let mut damaged = vec![false; g.batch];
    let stop = stop_flag();
    let mut pacer = Pacer::new(g.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(g.seconds);
    let (mut seq, mut sent, mut errors, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let mut live = Ticker::default();
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) || (g.count > 0 && seq >= g.count) {
            break;
        }
        let n = if g.count > 0 {
            (g.count - seq).min(g.batch as u64) as usize
        } else {
            g.batch
        };
        pacer.wait(n as u64);
        let ts = now_ns();
        for (k, b) in bufs.iter_mut().take(n).enumerate() {
            let s = seq + k as u64;
            let len = g.sizes[(s % g.sizes.len() as u64) as usize] - hdr;
            if b.len() != len || damaged[k] {
                *b = template(len);
                damaged[k] = false;
            }
            stamp(b, g.stream, s, ts);
            if g.corrupt_every > 0 && s % g.corrupt_every == g.corrupt_every - 1 {
                let i = HEADER + (s as usize % (len - HEADER).max(1));
                if let Some(x) = b.get_mut(i) {
                    *x ^= 0x40;
                    damaged[k] = true;
                }
            }
        }
        if g.swap_every > 0 {
            for k in 0..n.saturating_sub(1) {
                let s = seq + k as u64;
                if s % g.swap_every == g.swap_every - 1 {
                    bufs.swap(k, k + 1);
                    damaged.swap(k, k + 1);
                }
            }
        }
        let sock = &socks[(batches % socks.len() as u64) as usize];
        let iovs: Vec<[IoSlice<'_>; 1]> = bufs[..n].iter().map(|b| [IoSlice::new(b)]).collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
            (0..n).map(|_| SendAncillaryBuffer::default()).collect();
        let mut msgs: Vec<MMsgHdr<'_>> = iovs
            .iter()
            .zip(controls.iter_mut())
            .map(|(iov, c)| MMsgHdr::new(iov, c))
            .collect();
        let mut done = 0;
        // a short count means the socket buffer is full: send the rest (they keep their
        // sequence numbers; a datagram the kernel refuses is an error, not a loss)
        while done < n {
            match rustix::net::sendmmsg(sock, &mut msgs[done..], SendFlags::empty()) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        drop(msgs);
        // what was not sent is not counted: sequence numbers of unsent datagrams are
        // reused, so the sink sees no gap for them
        seq += done as u64;
        sent += done as u64;
        batches += 1;
        if !g.quiet && live.due() {
            let (t, pps) = live.tick(sent);
            eprintln!(
                "gen: {t:>5.1} s  sent {sent:>10}  {:>8.1} kpps  errors {errors}",
                pps / 1e3
            );
        }
    }
    gen_summary(g, sent, start.elapsed().as_secs_f64(), errors, "socket");
    Ok(())
}

#[derive(Default)]
struct Totals {
    corrupt: u64,
    foreign: u64,
    bytes: u64,
    clock_behind: u64,
}

/// Everything the sink learns from the datagrams.
struct Acc {
    streams: BTreeMap<u32, SeqTracker>,
    all: Histogram<u64>,
    interval: Histogram<u64>,
    t: Totals,
}

impl Acc {
    fn take(&mut self, p: &[u8], at: u64) {
        match check(p) {
            Ok(s) => {
                self.streams.entry(s.stream).or_default().record(s.seq);
                self.t.bytes += p.len() as u64;
                let lat = at.checked_sub(s.ts).unwrap_or_else(|| {
                    self.t.clock_behind += 1;
                    0
                });
                let _ = self.all.record(lat.max(1));
                let _ = self.interval.record(lat.max(1));
            }
            Err(Bad::Corrupt) => self.t.corrupt += 1,
            Err(Bad::Foreign) => self.t.foreign += 1,
        }
    }
}

fn sink(
    port: u16,
    seconds: f64,
    idle_exit: f64,
    expect: Option<u64>,
    quiet: bool,
    io: &str,
    iface: Option<&str>,
) -> Result<(), String> {
    let mut rx = rx::Rx::open(io, iface, port)?;
    match iface {
        Some(i) if rx.name() != "socket" => {
            eprintln!("sink: listening on UDP port {port} ({} on {i})", rx.name())
        }
        _ => eprintln!("sink: listening on [::]:{port}"),
    }
    let stop = stop_flag();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let idle = Duration::from_secs_f64(idle_exit);
    let mut acc = Acc {
        streams: BTreeMap::new(),
        all: histogram(),
        interval: histogram(),
        t: Totals::default(),
    };
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut live = Ticker::default();
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) || last.is_some_and(|l| now - l >= idle) {
            break;
        }
        let n = rx.poll(&mut |p| acc.take(p, now_ns()));
        if n > 0 {
            let at = Instant::now();
            first.get_or_insert(at);
            last = Some(at);
        }
        if !quiet && live.due() {
            let streams = &acc.streams;
            let received: u64 = streams.values().map(|s| s.received).sum();
            let lost: u64 = streams.values().map(|s| s.lost(None)).sum();
            let reordered: u64 = streams.values().map(|s| s.reordered).sum();
            let (t_s, pps) = live.tick(received);
            let interval = &mut acc.interval;
            let lat = if interval.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "p50 {} p99 {} p99.9 {}",
                    fmt_ns(interval.value_at_quantile(0.5)),
                    fmt_ns(interval.value_at_quantile(0.99)),
                    fmt_ns(interval.value_at_quantile(0.999))
                )
            };
            eprintln!(
                "sink: {t_s:>5.1} s  rx {:>8.1} kpps  lost {lost} ({:.3} %)  reordered {reordered}  corrupt {}  {lat}",
                pps / 1e3,
                100.0 * lost as f64 / (received + lost).max(1) as f64,
                acc.t.corrupt
            );
            interval.reset();
        }
    }
    let Acc {
        streams, all, t, ..
    } = acc;
    let received: u64 = streams.values().map(|s| s.received).sum();
    // with --expect (one stream), loss against what was sent; else from the numbers seen
    let lost: u64 = match (expect, streams.len()) {
        (Some(e), 0 | 1) => e.saturating_sub(received),
        _ => streams.values().map(|s| s.lost(None)).sum(),
    };
    let window = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let summary = json!({
        "role": "sink",
        "received": received,
        "lost": lost,
        "loss_pct": 100.0 * lost as f64 / (received + lost).max(1) as f64,
        "reordered": streams.values().map(|s| s.reordered).sum::<u64>(),
        "duplicates": streams.values().map(|s| s.duplicates).sum::<u64>(),
        "too_old": streams.values().map(|s| s.too_old).sum::<u64>(),
        "corrupt": t.corrupt,
        "foreign": t.foreign,
        "streams": streams.len(),
        "bytes": t.bytes,
        "window_s": window,
        "pps": if window > 0.0 { received as f64 / window } else { 0.0 },
        "clock_behind": t.clock_behind,
        "latency_ns": latency_json(&all),
        "input": rx.report(),
    });
    if !quiet {
        eprint!("{}", human_table(&summary));
    }
    println!("{summary}");
    Ok(())
}
