//! `xsec-lab capacity`: a worker's own packet rate, without the kernel's packet path.
//!
//! xsecd runs with its replay backend (`--replay-protected` / `--replay-unprotected`): each
//! worker receives copies of a pcap's frames as fast as it takes them and its transmissions
//! are counted and dropped, like DPDK's `net_pcap` (`infinite_rx`) → `net_null` set-up for
//! ipsec-secgw. Everything else is the real daemon in a lab namespace: configuration, SPD,
//! SAs, the worker loop, forwarding with next hops from the kernel's tables.
//!
//! Per algorithm, worker count and size: *encrypt* replays plaintext (hA → hB, a number of
//! UDP flows) into gwA's protected side and captures the first ESP frames it sends; *decrypt*
//! replays that ESP into gwB's unprotected side (its inbound SA with `replay_window = 0`, as
//! ipsec-secgw runs by default, since the same sequence numbers come round every lap). A
//! trial warms up for a second, then the rate is the growth of the transmitted-frame
//! counters in the stats file over the window, divided by the daemon's own uptime between
//! the two snapshots. Every packet must come out: a trial with drops is reported as such.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::median;
use crate::config::{Alg, Pair, PairOptions};
use crate::stats::Stats;
use crate::sysstat;
use crate::topo::{Lab, Node, TopoOptions, addr};
use crate::{Result, err};

/// Options of `xsec-lab capacity`.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    pub xsecd: PathBuf,
    pub seconds: f64,
    /// Inner IP packet sizes; 0 stands for IMIX.
    pub sizes: Vec<usize>,
    pub algs: Vec<Alg>,
    pub workers: Vec<usize>,
    /// UDP flows in the replayed plaintext.
    pub flows: usize,
    pub repeat: usize,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
}

/// IMIX as 7 : 4 : 1 by count (64, 576, 1420 B), interleaved.
pub const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 64, 576];

/// DPDK ipsec-secgw, one core, AES-128-GCM, net_pcap infinite_rx → net_null, on a machine of
/// this kind (issue 6): Mpps at 64 / 512 / 1420 B, encrypt and decrypt.
pub const DPDK_GCM128: [(usize, f64, f64); 3] =
    [(64, 5.49, 5.22), (512, 3.21, 2.90), (1420, 1.59, 1.68)];

fn size_name(s: usize) -> String {
    if s == 0 { "imix".into() } else { s.to_string() }
}

/// One IPv4/UDP packet of `size` bytes from hA to hB in an Ethernet frame; `flow` picks the
/// source port, `seq` goes in the payload.
pub fn plain_frame(size: usize, flow: usize, seq: u64) -> Vec<u8> {
    let size = size.max(28);
    let mut f = vec![0u8; 14 + size];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0xa1, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x0a, 0x10]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    let src: std::net::Ipv4Addr = addr::HOST_A.parse().unwrap_or([10, 1, 0, 10].into());
    let dst: std::net::Ipv4Addr = addr::HOST_B.parse().unwrap_or([10, 2, 0, 10].into());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for w in ip[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut ip[20..];
    udp[0..2].copy_from_slice(&(10_000 + flow as u16).to_be_bytes());
    udp[2..4].copy_from_slice(&5301u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    // checksum 0: none (IPv4); payload: the sequence number, then a pattern
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ (seq as u8);
    }
    if let Some(p) = udp.get_mut(8..16) {
        p.copy_from_slice(&seq.to_be_bytes());
    }
    f
}

/// The frames replayed for a size: 1024 of them over `flows` flows.
pub fn plain_frames(size: usize, flows: usize) -> Vec<Vec<u8>> {
    (0..1024u64)
        .map(|i| {
            let s = if size == 0 {
                IMIX[i as usize % IMIX.len()]
            } else {
                size
            };
            plain_frame(s, i as usize % flows.max(1), i)
        })
        .collect()
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Trial {
    pub alg: &'static str,
    pub dir: &'static str,
    pub workers: usize,
    pub size: usize,
    pub mpps: f64,
    pub gbps: f64,
    /// Counters that must stay 0 and did not (drops, no_neighbour, …).
    pub problems: Vec<String>,
}

fn counters(st: &Stats) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for sect in ["engine", "drops", "forward"] {
        for (k, v) in st.0[sect].as_object().into_iter().flatten() {
            if let Some(n) = v.as_u64() {
                m.insert(format!("{sect}.{k}"), n);
            }
        }
    }
    for f in [
        "rx_unprot",
        "rx_prot",
        "tx_unprot",
        "tx_prot",
        "handoff_tx",
        "handoff_drop",
    ] {
        m.insert(format!("workers.{f}"), st.workers_sum(f));
    }
    m
}

/// Wait until the stats file has a snapshot newer than `after_ms` of uptime.
fn fresh_stats(path: &Path, after_ms: u64) -> Result<Stats> {
    for _ in 0..100 {
        if let Ok(s) = Stats::read(path)
            && s.uptime_ms() > after_ms
        {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(err!("{}: no fresh snapshot", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn trial(
    o: &CapacityOptions,
    lab: &Lab,
    xsecd: &Path,
    node: Node,
    toml: &str,
    replay_flag: &str,
    input: &Path,
    capture: Option<&Path>,
) -> Result<(f64, u64, BTreeMap<String, u64>)> {
    let mut args: Vec<&OsStr> = vec![OsStr::new(replay_flag), input.as_os_str()];
    if let Some(c) = capture {
        args.push(OsStr::new("--replay-capture"));
        args.push(c.as_os_str());
    }
    let d = lab.start_xsecd_with(node, xsecd, toml, Duration::from_secs(30), &args)?;
    let run = || -> Result<(f64, u64, BTreeMap<String, u64>)> {
        std::thread::sleep(Duration::from_secs(1));
        let s0 = fresh_stats(&d.stats_file, 0)?;
        let t0 = s0.uptime_ms();
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        let s1 = fresh_stats(&d.stats_file, t0 + (o.seconds * 1000.0) as u64)?;
        lab.daemons_alive(std::slice::from_ref(&d))?;
        let (c0, c1) = (counters(&s0), counters(&s1));
        let delta: BTreeMap<String, u64> = c1
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(c0.get(k).copied().unwrap_or(0))))
            .collect();
        Ok(((s1.uptime_ms() - t0) as f64 / 1000.0, 0, delta))
    };
    let r = run();
    let stopped = lab.stop_xsecd(&d);
    let r = r?;
    stopped?;
    Ok(r)
}

fn problems(delta: &BTreeMap<String, u64>) -> Vec<String> {
    delta
        .iter()
        .filter(|(k, v)| {
            **v > 0
                && (k.starts_with("drops.")
                    || matches!(
                        k.as_str(),
                        "forward.no_neighbour"
                            | "forward.tx_full"
                            | "forward.no_frame"
                            | "forward.handoff_drop"
                    ))
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Mean inner size of the frames (for Gbps).
fn mean_inner(frames: &[Vec<u8>]) -> f64 {
    frames.iter().map(|f| (f.len() - 14) as f64).sum::<f64>() / frames.len().max(1) as f64
}

/// Run every trial; print each as it ends, then the table.
pub fn run(o: &CapacityOptions) -> Result<Vec<Trial>> {
    let xsecd =
        std::fs::canonicalize(&o.xsecd).map_err(|e| err!("--xsecd {}: {e}", o.xsecd.display()))?;
    for &s in &o.sizes {
        if s != 0 && !(28..=1500).contains(&s) {
            return Err(err!("size {s}: inner sizes run from 28 to 1500 (or imix)"));
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &w in &o.workers {
        if w == 0 || w > cpus {
            return Err(err!("--workers {w}: 1 to {cpus} (one core each)"));
        }
    }
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    let lab = Lab::up(TopoOptions::new(&o.prefix))?;
    lab.warm_neighbours()?;
    let mut trials: Vec<Trial> = vec![];
    let r = (|| -> Result<()> {
        for rep in 0..o.repeat {
            for &alg in &o.algs {
                for &workers in &o.workers {
                    let mut pair = Pair::new(PairOptions {
                        alg,
                        queues: (0..workers as u16).collect(),
                        ..PairOptions::default()
                    });
                    // the workers on the last cores, the control thread and the lab on core 0
                    let cores: Vec<usize> = (cpus - workers..cpus).collect();
                    for g in [&mut pair.a, &mut pair.b] {
                        g.idle = "busy".into();
                        g.cores = cores.clone();
                        g.stats_interval_ms = 100;
                    }
                    for sa in &mut pair.b.sas {
                        sa.replay_window = Some(0);
                    }
                    for &size in &o.sizes {
                        if o.stop.load(Ordering::Relaxed) {
                            return Err(err!("interrupted"));
                        }
                        let plain = plain_frames(size, o.flows);
                        let tag = format!("{}-{}w-{}", alg.name(), workers, size_name(size));
                        let pin = lab.write_file(&format!("plain-{tag}.pcap"), pcap(&plain))?;
                        let esp = lab.workdir().join(format!("esp-{tag}.pcap"));
                        let inner = mean_inner(&plain);
                        for (dir, node, toml, flag, input, cap, tx) in [
                            (
                                "encrypt",
                                Node::GwA,
                                pair.a.to_toml(),
                                "--replay-protected",
                                pin.clone(),
                                Some(esp.clone()),
                                "workers.tx_unprot",
                            ),
                            (
                                "decrypt",
                                Node::GwB,
                                pair.b.to_toml(),
                                "--replay-unprotected",
                                esp.clone(),
                                None,
                                "workers.tx_prot",
                            ),
                        ] {
                            let (secs, _, delta) =
                                trial(o, &lab, &xsecd, node, &toml, flag, &input, cap.as_deref())?;
                            let sent = delta.get(tx).copied().unwrap_or(0);
                            let mpps = sent as f64 / secs / 1e6;
                            let t = Trial {
                                alg: alg.name(),
                                dir,
                                workers,
                                size,
                                mpps,
                                gbps: mpps * 1e6 * inner * 8.0 / 1e9,
                                problems: problems(&delta),
                            };
                            println!(
                                "[{}/{}] {:<18} {} worker(s) {:>5} {:<7}: {:>6.3} Mpps {:>6.2} Gbps ({:.0} ns/packet/worker){}",
                                rep + 1,
                                o.repeat,
                                t.alg,
                                workers,
                                size_name(size),
                                dir,
                                t.mpps,
                                t.gbps,
                                1e3 * workers as f64 / t.mpps.max(1e-9),
                                if t.problems.is_empty() {
                                    String::new()
                                } else {
                                    format!("  PROBLEMS: {}", t.problems.join(" "))
                                }
                            );
                            trials.push(t);
                        }
                    }
                }
            }
        }
        Ok(())
    })();
    drop(lab);
    r?;
    let (text, doc) = summarize(&trials, o);
    println!("\n{text}");
    if let Some(path) = &o.json {
        let doc = json!({
            "cpu": {
                "model": info.model,
                "cpus": info.cpus,
                "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
            },
            "options": {"seconds": o.seconds, "repeat": o.repeat, "flows": o.flows},
            "summary": doc,
            "trials": trials.iter().map(|t| json!({
                "alg": t.alg, "dir": t.dir, "workers": t.workers, "size": size_name(t.size),
                "mpps": t.mpps, "gbps": t.gbps, "problems": t.problems,
            })).collect::<Vec<_>>(),
        });
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| err!("cannot write JSON: {e}"))?;
        std::fs::write(path, text).map_err(|e| err!("write {}: {e}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    Ok(trials)
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![];
    v.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// The medians per (alg, workers, size, dir), with DPDK's AES-128-GCM figures beside.
fn summarize(trials: &[Trial], o: &CapacityOptions) -> (String, Value) {
    let mut text = String::from(
        "| algorithm | workers | size | encrypt Mpps | decrypt Mpps | encrypt / DPDK | decrypt / DPDK | notes |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = vec![];
    for &alg in &o.algs {
        for &w in &o.workers {
            for &size in &o.sizes {
                let pick = |dir: &str| {
                    median(
                        trials
                            .iter()
                            .filter(|t| {
                                t.alg == alg.name()
                                    && t.workers == w
                                    && t.size == size
                                    && t.dir == dir
                            })
                            .map(|t| t.mpps)
                            .collect(),
                    )
                };
                let (enc, dec) = (pick("encrypt"), pick("decrypt"));
                let bad: Vec<String> = trials
                    .iter()
                    .filter(|t| t.alg == alg.name() && t.workers == w && t.size == size)
                    .flat_map(|t| t.problems.iter().map(move |p| format!("{} {p}", t.dir)))
                    .collect();
                let dpdk = DPDK_GCM128.iter().find(|d| d.0 == size);
                let ratio = |x: f64, d: Option<f64>| match d {
                    Some(d) if alg == Alg::AesGcm128 && w == 1 => format!("{:.2}", x / d),
                    _ => String::new(),
                };
                let (re, rd) = (ratio(enc, dpdk.map(|d| d.1)), ratio(dec, dpdk.map(|d| d.2)));
                text.push_str(&format!(
                    "| {} | {w} | {} | {enc:.2} | {dec:.2} | {re} | {rd} | {} |\n",
                    alg.name(),
                    size_name(size),
                    if bad.is_empty() {
                        String::new()
                    } else {
                        bad.join(", ")
                    }
                ));
                rows.push(json!({
                    "alg": alg.name(), "workers": w, "size": size_name(size),
                    "encrypt_mpps": enc, "decrypt_mpps": dec,
                    "encrypt_vs_dpdk": re, "decrypt_vs_dpdk": rd, "problems": bad,
                }));
            }
        }
    }
    (text, Value::Array(rows))
}
