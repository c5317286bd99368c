//! The in-memory lab: two gateways, each a thread with its own [`Engine`], joined by an
//! in-memory "wire"; host A and host B exchange UDP through them for a bounded time while the
//! lab prints live per-SA counters. It writes what crossed the wire to a pcap (with the
//! Wireshark ESP SA table) and, when `tshark` is installed, has it decrypt the capture.
//!
//! This is the engine's part of `cargo xtask lab`; the network-namespace lab with `xsecd` on
//! AF_XDP replaces it when the daemon lands.
//!
//! `cargo run --release -p xsec-dataplane --example lab -- [--seconds N] [--out DIR]`

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{SaConfig, SaHandle};
use xsec_dataplane::spd::{
    Action, AddrRange, Direction, InboundDefault, Policy, SaBundle, Selector, SpdConfig,
};
use xsec_dataplane::wire::checksum;
use xsec_dataplane::{Engine, PacketBuf, Timestamp, Verdict, time::MonotonicClock};

const BURST: usize = 32;
const HEADROOM: usize = 128;
const FRAME: usize = 2048;

type Frame = PacketBuf<Vec<u8>>;

/// Documentation addresses (RFC 5737); the lab never touches a real network.
struct Site {
    name: &'static str,
    gw: &'static str,
    subnet: &'static str,
    host: [u8; 4],
    out_spi: u32,
    in_spi: u32,
}

const A: Site = Site {
    name: "A",
    gw: "192.0.2.1",
    subnet: "10.1.0.0/24",
    host: [10, 1, 0, 10],
    out_spi: 0x1111,
    in_spi: 0x2222,
};
const B: Site = Site {
    name: "B",
    gw: "192.0.2.2",
    subnet: "10.2.0.0/24",
    host: [10, 2, 0, 10],
    out_spi: 0x2222,
    in_spi: 0x1111,
};

fn key(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(73).wrapping_add(seed))
        .collect()
}

fn gateway(me: &Site, peer: &Site) -> Result<(Engine, SaHandle, SaHandle), String> {
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|e| e.to_string());
    let range = |s: &str| s.parse::<AddrRange>().map_err(|e| e.to_string());
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: format!("{}-{}", me.name, peer.name),
            selector: Selector::addresses(range(me.subnet)?, range(peer.subnet)?),
            action: Action::Protect(SaBundle::single(1)),
        }],
        inbound: vec![],
        inbound_default: InboundDefault::Discard,
    }
    .compile()
    .map_err(|e| e.to_string())?;
    let mut e = Engine::new(Arc::new(spd));
    let enc = EncAlg::AesGcm128;
    // one key per direction, known to both gateways (manual keying)
    let k_ab = key(enc.keymat_len(), 0xa1);
    let k_ba = key(enc.keymat_len(), 0xb2);
    let (k_out, k_in) = if me.name == "A" {
        (&k_ab, &k_ba)
    } else {
        (&k_ba, &k_ab)
    };
    let mut out = SaConfig::tunnel(
        me.out_spi,
        Direction::Outbound,
        ip(me.gw)?,
        ip(peer.gw)?,
        enc,
        k_out,
        AuthAlg::None,
        &[],
    );
    let mut inb = SaConfig::tunnel(
        me.in_spi,
        Direction::Inbound,
        ip(me.gw)?,
        ip(peer.gw)?,
        enc,
        k_in,
        AuthAlg::None,
        &[],
    );
    out.name = format!("{}-to-{}", me.name, peer.name);
    inb.name = format!("{}-from-{}", me.name, peer.name);
    inb.selectors = vec![Selector::addresses(range(me.subnet)?, range(peer.subnet)?)];
    let ho = e.add_sa(&out, Timestamp::ZERO).map_err(|e| e.to_string())?;
    let hi = e.add_sa(&inb, Timestamp::ZERO).map_err(|e| e.to_string())?;
    Ok((e, ho, hi))
}

/// A UDP datagram from host `src` to host `dst` carrying a sequence number.
fn datagram(src: [u8; 4], dst: [u8; 4], seq: u64, size: usize) -> Vec<u8> {
    let size = size.max(36);
    let mut p = vec![0u8; size];
    p[..12].copy_from_slice(&[
        0x45,
        0,
        (size >> 8) as u8,
        size as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let ulen = size - 20;
    p[20..28].copy_from_slice(&[0x13, 0x88, 0x13, 0x88, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    p[28..36].copy_from_slice(&seq.to_be_bytes());
    p
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sent: [AtomicU64; 2],
    delivered: [AtomicU64; 2],
    corrupt: AtomicU64,
    wire_packets: AtomicU64,
    wire_bytes: AtomicU64,
    plaintext_on_wire: AtomicU64,
    capture: Mutex<Vec<Vec<u8>>>,
    status: Mutex<Vec<String>>,
}

/// One gateway: take plaintext from its host, protect it onto the wire; take ESP from the
/// wire, deliver plaintext to its host.
fn run_gateway(
    side: usize,
    me: &'static Site,
    peer: &'static Site,
    host_rx: Receiver<Vec<u8>>,
    wire_tx: SyncSender<Vec<u8>>,
    wire_rx: Receiver<Vec<u8>>,
    sh: Arc<Shared>,
) -> Result<(), String> {
    let (mut engine, ho, hi) = gateway(me, peer)?;
    let clock = MonotonicClock::default();
    let mut frames: Vec<Frame> = Vec::with_capacity(BURST);
    let mut verdicts = [Verdict::Unset; BURST];
    let mut last_report = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        let now = clock.now();
        // protected side -> unprotected side
        frames.clear();
        while frames.len() < BURST {
            let Ok(p) = host_rx.try_recv() else { break };
            if let Some(f) = PacketBuf::from_slice(vec![0u8; FRAME], HEADROOM, &p) {
                frames.push(f);
            }
        }
        let n = frames.len();
        engine.outbound_burst(now, &mut frames, &mut verdicts[..n]);
        for (f, v) in frames.iter().zip(&verdicts[..n]) {
            if *v == Verdict::Forward {
                let bytes = f.data().to_vec();
                sh.wire_packets.fetch_add(1, Ordering::Relaxed);
                sh.wire_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if bytes[9] != 50 {
                    sh.plaintext_on_wire.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut c) = sh.capture.lock()
                    && c.len() < 2000
                {
                    c.push(bytes.clone());
                }
                match wire_tx.try_send(bytes) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
        }
        // unprotected side -> protected side
        frames.clear();
        while frames.len() < BURST {
            let Ok(p) = wire_rx.try_recv() else { break };
            if let Some(f) = PacketBuf::from_slice(vec![0u8; FRAME], HEADROOM, &p) {
                frames.push(f);
            }
        }
        let n = frames.len();
        engine.inbound_burst(now, &mut frames, &mut verdicts[..n]);
        for (f, v) in frames.iter().zip(&verdicts[..n]) {
            if *v == Verdict::Forward {
                let d = f.data();
                // the host checks what it got: right source, a valid header, in sequence range
                let ok = d.len() >= 36
                    && d[12..16] == peer.host
                    && d[16..20] == me.host
                    && checksum::fold(checksum::sum(&d[..20])) == 0xffff;
                if ok {
                    sh.delivered[side].fetch_add(1, Ordering::Relaxed);
                } else {
                    sh.corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        engine.poll_timers(now, 8);
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            let mut lines = vec![];
            for h in [ho, hi] {
                if let Some(sa) = engine.sad().get(h) {
                    let s = sa.status(now);
                    lines.push(format!(
                        "  gw {}  {:<10} spi 0x{:08x} {:<3} {}/{}-bit  seq {:>8}  packets {:>8}  bytes {:>10}  drops {}",
                        me.name,
                        s.info.name,
                        s.spi,
                        s.direction.name(),
                        s.info.enc,
                        s.info.enc_key_bits,
                        s.seq,
                        s.packets,
                        s.bytes,
                        s.drops.total()
                    ));
                }
            }
            let w = engine.stats();
            lines.push(format!(
                "  gw {}  worker: encap {} decap {} drops {:?}",
                me.name,
                w.encap_packets,
                w.decap_packets,
                w.drops.nonzero().collect::<Vec<_>>()
            ));
            if let Ok(mut st) = sh.status.lock() {
                st.retain(|l| !l.starts_with(&format!("  gw {}", me.name)));
                st.extend(lines);
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

fn write_pcap(path: &std::path::Path, packets: &[Vec<u8>]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    // pcap header, LINKTYPE_RAW (101)
    f.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
    ])?;
    for (i, p) in packets.iter().enumerate() {
        let len = (p.len() as u32).to_le_bytes();
        f.write_all(&(i as u32).to_le_bytes())?;
        f.write_all(&0u32.to_le_bytes())?;
        f.write_all(&len)?;
        f.write_all(&len)?;
        f.write_all(p)?;
    }
    f.flush()
}

fn main() {
    let mut seconds = 10u64;
    let mut out = std::path::PathBuf::from("target/lab");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--out" => out = args.next().map(Into::into).unwrap_or(out),
            _ => {
                eprintln!("usage: lab [--seconds N] [--out DIR]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "xsec in-memory lab: host A 10.1.0.10 -- gw A 192.0.2.1 ==ESP aes128gcm16== gw B 192.0.2.2 -- host B 10.2.0.10"
    );
    println!(
        "(the namespace/AF_XDP lab arrives with xsecd; this one runs the engine itself, {seconds} s)\n"
    );
    let sh = Arc::new(Shared::default());
    let (a_host_tx, a_host_rx) = sync_channel::<Vec<u8>>(4096);
    let (b_host_tx, b_host_rx) = sync_channel::<Vec<u8>>(4096);
    let (ab_tx, ab_rx) = sync_channel::<Vec<u8>>(4096);
    let (ba_tx, ba_rx) = sync_channel::<Vec<u8>>(4096);
    let sa = Arc::clone(&sh);
    let ga = std::thread::spawn(move || run_gateway(0, &A, &B, a_host_rx, ab_tx, ba_rx, sa));
    let sb = Arc::clone(&sh);
    let gb = std::thread::spawn(move || run_gateway(1, &B, &A, b_host_rx, ba_tx, ab_rx, sb));
    let start = Instant::now();
    let mut seq = 0u64;
    let mut next_print = Duration::from_secs(1);
    while start.elapsed() < Duration::from_secs(seconds) {
        // both hosts send a paced mix of sizes
        for _ in 0..64 {
            seq += 1;
            let size = [64, 512, 1400][(seq % 3) as usize];
            if a_host_tx
                .try_send(datagram(A.host, B.host, seq, size))
                .is_ok()
            {
                sh.sent[1].fetch_add(1, Ordering::Relaxed);
            }
            if b_host_tx
                .try_send(datagram(B.host, A.host, seq, size))
                .is_ok()
            {
                sh.sent[0].fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        if start.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            println!(
                "t={:>2}s  A->B delivered {:>8}  B->A delivered {:>8}  wire {:>8} packets",
                start.elapsed().as_secs(),
                sh.delivered[1].load(Ordering::Relaxed),
                sh.delivered[0].load(Ordering::Relaxed),
                sh.wire_packets.load(Ordering::Relaxed)
            );
            if let Ok(st) = sh.status.lock() {
                for l in st.iter() {
                    println!("{l}");
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    sh.stop.store(true, Ordering::Relaxed);
    for (n, g) in [("A", ga), ("B", gb)] {
        match g.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("gateway {n}: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("gateway {n} panicked");
                std::process::exit(1);
            }
        }
    }
    let (ab, ba) = (
        sh.delivered[1].load(Ordering::Relaxed),
        sh.delivered[0].load(Ordering::Relaxed),
    );
    let plain = sh.plaintext_on_wire.load(Ordering::Relaxed);
    let corrupt = sh.corrupt.load(Ordering::Relaxed);
    println!(
        "\nsent A->B {} delivered {ab}; sent B->A {} delivered {ba}; wire {} ESP packets, {} bytes; plaintext on the wire: {plain}; corrupt deliveries: {corrupt}",
        sh.sent[1].load(Ordering::Relaxed),
        sh.sent[0].load(Ordering::Relaxed),
        sh.wire_packets.load(Ordering::Relaxed),
        sh.wire_bytes.load(Ordering::Relaxed)
    );

    // the capture and the keys, so that an independent dissector can decrypt it
    let _ = std::fs::create_dir_all(&out);
    let pcap = out.join("wire.pcap");
    let cap = sh.capture.lock().map(|c| c.clone()).unwrap_or_default();
    let wrote = write_pcap(&pcap, &cap).is_ok();
    let esp_sa = out.join("esp_sa");
    let kab = key(20, 0xa1);
    let kba = key(20, 0xb2);
    let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let uat = format!(
        "\"IPv4\",\"192.0.2.1\",\"192.0.2.2\",\"0x00001111\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n\"IPv4\",\"192.0.2.2\",\"192.0.2.1\",\"0x00002222\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
        hex(&kab),
        hex(&kba)
    );
    let _ = std::fs::write(&esp_sa, uat);
    if wrote {
        println!(
            "wire capture: {} ({} packets), keys: {}",
            pcap.display(),
            cap.len(),
            esp_sa.display()
        );
    }
    let mut ok = ab > 0 && ba > 0 && plain == 0 && corrupt == 0;
    let harness = std::env::var("XSEC_HARNESS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/harness"))
        });
    let script = harness.join("tshark_decrypt.sh");
    if wrote
        && script.exists()
        && std::process::Command::new("tshark")
            .arg("--version")
            .output()
            .is_ok()
    {
        let r = std::process::Command::new("bash")
            .arg(&script)
            .arg(&pcap)
            .arg("--keys")
            .arg(&esp_sa)
            .arg("--check")
            .output();
        match r {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                let last = text.lines().last().unwrap_or("").to_owned();
                println!("independent check: {last}");
                ok &= o.status.success();
            }
            Err(e) => println!("tshark check not run: {e}"),
        }
    } else {
        println!(
            "(tshark or the harness is not installed: `cargo xtask test` installs them; skipped the independent decryption)"
        );
    }
    println!(
        "{}",
        if ok {
            "lab: PASS, encrypted traffic flowed both ways"
        } else {
            "lab: FAIL"
        }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
