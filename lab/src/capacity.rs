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
use xsec_dataplane::wire::pcap::{self, LinkType};
use xsec_dataplane::wire::{EspPacket, EthernetFrame, Ipv4Packet, UdpPacket};

use crate::bench::{deltas, median, xsecd_counters};
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
    /// SA pairs (flows are spread over them, at least one flow each).
    pub sas: Vec<usize>,
    /// UDP flows in the replayed plaintext.
    pub flows: usize,
    pub repeat: usize,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
    /// One SA pair (`sas` 1) on several workers: per-worker outbound SAs and any-worker
    /// inbound SAs ([`per_worker_sas`]) instead of one SA pair whose worker takes handoffs.
    pub per_worker: bool,
    /// SPD sizes to measure: 1 is the plain one-policy tunnel; more builds [`scale_spd`]'s
    /// mix of that many policies.
    pub policies: Vec<usize>,
    /// With `policies` > 1: each site its own SA pair (else all sites on one SA pair).
    pub site_sas: bool,
}

/// IMIX as 7 : 4 : 1 by count (64, 576, 1420 B), interleaved.
pub const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 64, 576];

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
    Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
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

/// The frames replayed for a size: 1024 of them over `flows` flows, or one per flow when
/// there are more flows (so that every flow is in the trace: `--flows 16384` defeats the flow
/// cache).
pub fn plain_frames(size: usize, flows: usize) -> Vec<Vec<u8>> {
    (0..flows.max(1024) as u64)
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
    pub sas: usize,
    /// Policies in the SPD (1: the plain tunnel).
    pub policies: usize,
    pub size: usize,
    pub mpps: f64,
    pub gbps: f64,
    /// Counters that must stay 0 and did not (drops, no_neighbour, …).
    pub problems: Vec<String>,
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
    inputs: &[PathBuf],
    capture: Option<&Path>,
    setup: Option<&Path>,
) -> Result<(f64, BTreeMap<String, u64>)> {
    let mut args: Vec<&OsStr> = vec![];
    for i in inputs {
        args.push(OsStr::new(replay_flag));
        args.push(i.as_os_str());
    }
    if let Some(c) = capture {
        args.push(OsStr::new("--replay-capture"));
        args.push(c.as_os_str());
    }
    let d = lab.start_xsecd_with(node, xsecd, toml, Duration::from_secs(30), &args)?;
    let run = || -> Result<(f64, BTreeMap<String, u64>)> {
        if let Some(batch) = setup {
            // the SAs and policies through the control socket (the first frames replayed
            // before they are in are dropped: the measurement starts a second later)
            let mut c = std::process::Command::new(xsecd.with_file_name("xsecctl"));
            c.arg("--socket")
                .arg(&d.control)
                .arg("batch")
                .arg(batch)
                .args(["--client", "bench"]);
            let o = crate::procs::run(c)?;
            if !o.ok() {
                return Err(err!("xsecctl batch {}: {o}", batch.display()));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let s0 = fresh_stats(&d.stats_file, 0)?;
        let t0 = s0.uptime_ms();
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        let s1 = fresh_stats(&d.stats_file, t0 + (o.seconds * 1000.0) as u64)?;
        lab.daemons_alive(std::slice::from_ref(&d))?;
        let delta = deltas(&xsecd_counters(&s0), &xsecd_counters(&s1));
        Ok(((s1.uptime_ms() - t0) as f64 / 1000.0, delta))
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

/// Turn a pair's one SA into `n` (names `t0`.., SPIs 0x10000 + i out of gwA and 0x20000 + i
/// back, keys varied per SA), SA `i` protecting the flows [`flow_sa`] gives it (a block of
/// UDP source ports): one policy per SA on each side, with a port range.
pub fn spread_sas(pair: &mut Pair, n: usize, flows: usize) {
    use crate::config::{Action, PolicyConf};
    let n = n.max(1);
    let (Some(base), Some(_)) = (pair.a.sas.first().cloned(), pair.b.sas.first()) else {
        return;
    };
    pair.a.sas.clear();
    pair.b.sas.clear();
    pair.a.policies.clear();
    pair.b.policies.clear();
    let vary = |k: &[u8], i: usize, salt: u8| -> Vec<u8> {
        let mut k = k.to_vec();
        if let Some(b) = k.get_mut(0) {
            *b ^= i as u8;
        }
        if let Some(b) = k.get_mut(1) {
            *b ^= (i >> 8) as u8 ^ salt;
        }
        k
    };
    for i in 0..n {
        let mut a = base.clone();
        a.name = format!("t{i}");
        a.spi_out = 0x10000 + i as u32;
        a.spi_in = 0x20000 + i as u32;
        a.enc_key_out = vary(&base.enc_key_out, i, 0);
        a.enc_key_in = vary(&base.enc_key_in, i, 1);
        a.auth_key_out = vary(&base.auth_key_out, i, 2);
        a.auth_key_in = vary(&base.auth_key_in, i, 3);
        let mut b = a.clone();
        std::mem::swap(&mut b.spi_in, &mut b.spi_out);
        std::mem::swap(&mut b.enc_key_in, &mut b.enc_key_out);
        std::mem::swap(&mut b.auth_key_in, &mut b.auth_key_out);
        std::mem::swap(&mut b.local, &mut b.remote);
        pair.a.sas.push(a);
        pair.b.sas.push(b);
    }
    let flows = flows.max(n);
    for i in 0..n {
        let sa = format!("t{i}");
        // the flows of SA i: f with f * n / flows == i
        let lo = (i * flows).div_ceil(n);
        let hi = ((i + 1) * flows).div_ceil(n) - 1;
        let ports = format!("{}-{}", 10_000 + lo, 10_000 + hi);
        let mut pa = PolicyConf::new(
            &format!("p{i}"),
            addr::NET_A,
            addr::NET_B,
            Action::Protect(sa.clone()),
        )
        .protocol("udp");
        pa.local_port = ports.clone();
        let mut pb = PolicyConf::new(
            &format!("p{i}"),
            addr::NET_B,
            addr::NET_A,
            Action::Protect(sa),
        )
        .protocol("udp");
        pb.remote_port = ports;
        pair.a.policies.push(pa);
        pair.b.policies.push(pb);
    }
}

/// One tunnel on every worker (`--per-worker`): the pair's SAs and policies go, and each
/// gateway gets instead, through the control socket (`xsecctl batch`, client `bench`), one
/// reqid with `workers` SAs: gwA one outbound SA pinned to each worker (SPI 0x10000 + w,
/// keys varied per SA), gwB their inbound SAs on worker "any" (copies on every worker, one
/// shared anti-replay window) — no packet changes worker on either side. The batches'
/// JSON, gwA's then gwB's.
pub fn per_worker_sas(pair: &mut Pair, workers: usize, flows: usize) -> [String; 2] {
    spread_sas(pair, workers, flows);
    let sa = |s: &crate::config::SaConf, dir: &str, w: usize| {
        let (spi, ek, ak) = if dir == "out" {
            (s.spi_out, &s.enc_key_out, &s.auth_key_out)
        } else {
            (s.spi_in, &s.enc_key_in, &s.auth_key_in)
        };
        let mut v = json!({
            "id": format!("{dir}-{w}"), "name": "tunnel", "direction": dir, "spi": spi,
            "reqid": 1, "mode": s.mode.name(), "local": s.local, "remote": s.remote,
            "encryption": s.alg.encryption(), "enc_key": format!("0x{}", hex::encode(ek)),
        });
        if let Some(i) = s.alg.integrity() {
            v["integrity"] = json!(i);
            v["auth_key"] = json!(format!("0x{}", hex::encode(ak)));
        }
        v
    };
    let policy = |local: &str, remote: &str| {
        json!({"command": "add-policy", "args": {"policy": {
            "id": "tunnel", "direction": "both", "local": local, "remote": remote,
            "proto": "udp", "action": "protect", "reqid": 1}}})
    };
    let mut a_ops = vec![];
    let mut b_ops = vec![];
    for w in 0..workers {
        let mut out = sa(&pair.a.sas[w], "out", w);
        out["worker"] = json!(w);
        a_ops.push(json!({"command": "add-sa", "args": {"sa": out}}));
        let mut inb = sa(&pair.b.sas[w], "in", w);
        inb["worker"] = json!("any");
        // the replay backend sends the same sequence numbers lap after lap
        inb["replay_window"] = json!(0);
        inb["selectors"] = json!([{"local": addr::NET_B, "remote": addr::NET_A}]);
        b_ops.push(json!({"command": "add-sa", "args": {"sa": inb}}));
    }
    a_ops.push(policy(addr::NET_A, addr::NET_B));
    b_ops.push(policy(addr::NET_B, addr::NET_A));
    for g in [&mut pair.a, &mut pair.b] {
        g.sas.clear();
        g.policies.clear();
    }
    [a_ops, b_ops].map(|ops| json!(ops).to_string())
}

/// Issue 19's large SPD, `n` policies on each gateway: `n / 10` TCP port-range policies in
/// front (BYPASS and DISCARD in turn, which the UDP traffic never matches but every lookup
/// must get past), then `n - n / 10` PROTECT /24 sites behind gwB — 100.64.0.0/24,
/// 100.64.1.0/24, … — the last of them the traffic's own (NET_A ↔ NET_B). All sites on the
/// pair's one SA pair (gwB's inbound SA then carries every site as a selector), or with
/// `per_site` each site its own SA pair (`t0`, `t1`, …: the traffic's is the last). Returns
/// the SA pairs there are.
pub fn scale_spd(pair: &mut Pair, n: usize, per_site: bool) -> usize {
    use crate::config::{Action, PolicyConf};
    let front = n / 10;
    let sites = n.saturating_sub(front).max(1);
    let sa_pairs = if per_site { sites } else { 1 };
    spread_sas(pair, sa_pairs, sa_pairs);
    pair.a.policies.clear();
    pair.b.policies.clear();
    for i in 0..front {
        let lo = 1024 + 8 * (i % 8000);
        let action = if i % 2 == 0 {
            Action::Bypass
        } else {
            Action::Discard
        };
        let mut p = PolicyConf::new(&format!("f{i}"), "any", "any", action).protocol("tcp");
        p.remote_port = format!("{lo}-{}", lo + 3);
        pair.a.policies.push(p.clone());
        pair.b.policies.push(p);
    }
    for i in 0..sites {
        let site = if i + 1 == sites {
            addr::NET_B.to_owned()
        } else {
            format!("100.{}.{}.0/24", 64 + (i >> 8), i & 0xff)
        };
        let sa = if per_site {
            format!("t{i}")
        } else {
            "t0".to_owned()
        };
        pair.a.policies.push(PolicyConf::new(
            &format!("s{i}"),
            addr::NET_A,
            &site,
            Action::Protect(sa.clone()),
        ));
        pair.b.policies.push(PolicyConf::new(
            &format!("s{i}"),
            &site,
            addr::NET_A,
            Action::Protect(sa),
        ));
    }
    sa_pairs
}

/// The SA (of `n`, over `flows` flows) that protects flow `f`.
pub fn flow_sa(f: usize, n: usize, flows: usize) -> usize {
    f * n / flows.max(n).max(1)
}

/// The SPI of a raw-ESP IPv4 frame.
fn esp_spi(f: &[u8]) -> Option<u32> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    Some(EspPacket::new_checked(ip.payload()).ok()?.spi())
}

/// The UDP source port of an IPv4 frame.
fn udp_src_port(f: &[u8]) -> Option<u16> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    Some(UdpPacket::new_checked(ip.payload()).ok()?.src_port())
}

/// Split `frames` over `workers` files by the worker that owns each frame's SA (SA `i` is
/// worker `i mod workers`'s, as xsecd shards them): what RSS with SA affinity would deliver.
/// With fewer SAs than workers every worker gets everything (the rest is handed off).
fn per_worker(
    frames: &[Vec<u8>],
    workers: usize,
    sas: usize,
    sa_of: impl Fn(&[u8]) -> Option<usize>,
) -> Vec<Vec<Vec<u8>>> {
    if sas < workers {
        return vec![frames.to_vec(); workers];
    }
    let mut out = vec![vec![]; workers];
    for f in frames {
        if let Some(i) = sa_of(f) {
            out[i % workers].push(f.clone());
        }
    }
    out
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
    for &n in &o.sas {
        if n == 0 || n > 4096 {
            return Err(err!("--sas {n}: 1 to 4096"));
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
                    for (&sas, &policies) in o
                        .sas
                        .iter()
                        .flat_map(|s| o.policies.iter().map(move |p| (s, p)))
                    {
                        let flows = o.flows.max(sas);
                        let mut pair = Pair::new(PairOptions {
                            alg,
                            queues: (0..workers as u16).collect(),
                            ..PairOptions::default()
                        });
                        // one tunnel on every worker: per-worker SAs, no handoff
                        let batches = (o.per_worker && sas == 1 && workers > 1 && policies <= 1)
                            .then(|| per_worker_sas(&mut pair, workers, flows));
                        let sas = if policies > 1 {
                            scale_spd(&mut pair, policies, o.site_sas)
                        } else {
                            if batches.is_none() {
                                spread_sas(&mut pair, sas, flows);
                            }
                            sas
                        };
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
                            let c = Cell {
                                alg,
                                workers,
                                sas,
                                policies,
                                size,
                            };
                            trials.extend(cell(
                                o,
                                &lab,
                                &xsecd,
                                &pair,
                                batches.as_ref(),
                                c,
                                flows,
                                rep,
                            )?);
                        }
                    }
                }
            }
        }
        Ok(())
    })();
    drop(lab);
    r?;
    let (text, doc) = summarize(&trials);
    println!("\n{text}");
    if let Some(path) = &o.json {
        let doc = json!({
            "cpu": {
                "model": info.model,
                "cpus": info.cpus,
                "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
            },
            "options": {"seconds": o.seconds, "repeat": o.repeat, "flows": o.flows, "per_worker": o.per_worker,
                        "policies": o.policies, "site_sas": o.site_sas},
            "summary": doc,
            "trials": trials.iter().map(|t| json!({
                "alg": t.alg, "dir": t.dir, "workers": t.workers, "sas": t.sas, "policies": t.policies,
                "size": size_name(t.size), "mpps": t.mpps, "gbps": t.gbps, "problems": t.problems,
            })).collect::<Vec<_>>(),
        });
        crate::write_json(path, &doc)?;
    }
    Ok(trials)
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    alg: Alg,
    workers: usize,
    sas: usize,
    policies: usize,
    size: usize,
}

/// Encrypt then decrypt for one cell.
#[allow(clippy::too_many_arguments)]
fn cell(
    o: &CapacityOptions,
    lab: &Lab,
    xsecd: &Path,
    pair: &Pair,
    batches: Option<&[String; 2]>,
    c: Cell,
    flows: usize,
    rep: usize,
) -> Result<Vec<Trial>> {
    let plain = plain_frames(c.size, flows);
    let tag = format!(
        "{}-{}w-{}sa-{}p-{}",
        c.alg.name(),
        c.workers,
        c.sas,
        c.policies,
        size_name(c.size)
    );
    // flow f is UDP source port 10000 + f
    let sa_of_flow = |f: &[u8]| {
        udp_src_port(f).map(|p| flow_sa(usize::from(p.wrapping_sub(10_000)), c.sas, flows))
    };
    let mut plain_files = vec![];
    for (w, frames) in per_worker(&plain, c.workers, c.sas, sa_of_flow)
        .iter()
        .enumerate()
    {
        plain_files.push(lab.write_file(&format!("plain-{tag}-w{w}.pcap"), pcap(frames))?);
    }
    let esp = lab.workdir().join(format!("esp-{tag}.pcap"));
    let inner = mean_inner(&plain);
    let mut out = vec![];
    for dir in ["encrypt", "decrypt"] {
        let (node, toml, flag, files, cap, tx) = if dir == "encrypt" {
            (
                Node::GwA,
                pair.a.to_toml(),
                "--replay-protected",
                plain_files.clone(),
                Some(esp.clone()),
                "workers.tx_unprot",
            )
        } else {
            let captured = crate::wire::read_pcap(&esp)?;
            let frames: Vec<Vec<u8>> = captured.into_iter().map(|f| f.data).collect();
            let sa_of = |f: &[u8]| {
                esp_spi(f)
                    .and_then(|s| s.checked_sub(0x10000))
                    .map(|i| i as usize)
            };
            let mut files = vec![];
            for (w, fr) in per_worker(&frames, c.workers, c.sas, sa_of)
                .iter()
                .enumerate()
            {
                if fr.is_empty() {
                    return Err(err!("{tag}: no captured ESP for worker {w}"));
                }
                files.push(lab.write_file(&format!("esp-{tag}-w{w}.pcap"), pcap(fr))?);
            }
            (
                Node::GwB,
                pair.b.to_toml(),
                "--replay-unprotected",
                files,
                None,
                "workers.tx_prot",
            )
        };
        let setup = match (&batches, dir) {
            (Some([a, _]), "encrypt") => Some(lab.write_file(&format!("batch-a-{tag}.json"), a)?),
            (Some([_, b]), _) => Some(lab.write_file(&format!("batch-b-{tag}.json"), b)?),
            (None, _) => None,
        };
        let (secs, delta) = trial(
            o,
            lab,
            xsecd,
            node,
            &toml,
            flag,
            &files,
            cap.as_deref(),
            setup.as_deref(),
        )?;
        let sent = delta.get(tx).copied().unwrap_or(0);
        let mpps = sent as f64 / secs / 1e6;
        let t = Trial {
            alg: c.alg.name(),
            dir,
            workers: c.workers,
            sas: c.sas,
            policies: c.policies,
            size: c.size,
            mpps,
            gbps: mpps * 1e6 * inner * 8.0 / 1e9,
            problems: problems(&delta),
        };
        println!(
            "[{}/{}] {:<17} {}w {:>4} SA(s) {:>5} {:<7}: {:>6.3} Mpps {:>6.2} Gbps ({:.0} ns/packet/worker){}",
            rep + 1,
            o.repeat,
            t.alg,
            c.workers,
            c.sas,
            size_name(c.size),
            dir,
            t.mpps,
            t.gbps,
            1e3 * c.workers as f64 / t.mpps.max(1e-9),
            if t.problems.is_empty() {
                String::new()
            } else {
                format!("  PROBLEMS: {}", t.problems.join(" "))
            }
        );
        out.push(t);
    }
    Ok(out)
}

/// A pcap file (Ethernet link type, zero timestamps) of `frames`.
pub fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    pcap::file(LinkType::ETHERNET, frames.iter().map(Vec::as_slice))
}

/// The medians per (alg, workers, SAs, policies, size, dir), in the order the cells ran. DPDK is measured beside it, in the same
/// minutes, by `xsec-lab vs-dpdk` (no DPDK figure is kept here).
fn summarize(trials: &[Trial]) -> (String, Value) {
    let mut text = String::from(
        "| algorithm | workers | SAs | policies | size | encrypt Mpps | decrypt Mpps | spread (min–max Mpps) | notes |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = vec![];
    // the cells in the order they ran
    let mut cells: Vec<(&str, usize, usize, usize, usize)> = vec![];
    for t in trials {
        let k = (t.alg, t.workers, t.sas, t.policies, t.size);
        if !cells.contains(&k) {
            cells.push(k);
        }
    }
    for (alg, w, n, pol, size) in cells {
        let same = |t: &&Trial| {
            t.alg == alg && t.workers == w && t.sas == n && t.policies == pol && t.size == size
        };
        let of = |dir: &str| -> Vec<f64> {
            trials
                .iter()
                .filter(same)
                .filter(|t| t.dir == dir)
                .map(|t| t.mpps)
                .collect()
        };
        let (ev, dv) = (of("encrypt"), of("decrypt"));
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            if v.len() > 1 {
                format!("{lo:.2}–{hi:.2}")
            } else {
                String::new()
            }
        };
        let (enc, dec) = (median(&ev), median(&dv));
        let bad: Vec<String> = trials
            .iter()
            .filter(same)
            .flat_map(|t| t.problems.iter().map(move |p| format!("{} {p}", t.dir)))
            .collect();
        let sp = format!("{} / {}", spread(&ev), spread(&dv));
        text.push_str(&format!(
            "| {alg} | {w} | {n} | {pol} | {} | {enc:.2} | {dec:.2} | {} | {} |\n",
            size_name(size),
            if sp == " / " { String::new() } else { sp },
            bad.join(", ")
        ));
        rows.push(json!({
            "alg": alg, "workers": w, "sas": n, "policies": pol, "size": size_name(size),
            "encrypt_mpps": enc, "decrypt_mpps": dec,
            "encrypt_runs": ev, "decrypt_runs": dv,
            "problems": bad,
        }));
    }
    (text, Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frames_and_their_pcap() {
        let frames = plain_frames(64, 4);
        assert_eq!(frames.len(), 1024);
        assert_eq!(plain_frames(64, 16_384).len(), 16_384);
        let f = &frames[5];
        assert_eq!(f.len(), 14 + 64);
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("IPv4");
        assert!(ip.verify_checksum());
        assert_eq!(udp_src_port(f), Some(10_000 + 5 % 4));
        let mut esp = f.clone();
        esp[14 + 9] = 50;
        Ipv4Packet::new_unchecked(&mut esp[14..]).fill_checksum();
        assert_eq!(
            esp_spi(&esp),
            Some(0x2711_14b5),
            "the first word behind the IP header"
        );
        assert_eq!(esp_spi(&esp[..30]), None);
        let back = crate::wire::parse_pcap(&pcap(&frames)).expect("parses");
        assert_eq!(back.len(), frames.len());
        assert!(back[7].ethernet);
        assert_eq!(back[7].data, frames[7]);
    }
}
