//! `xsec-lab bench`: packets/s and Gbps from hA to hB through two xsecd gateways (AES-128-GCM
//! tunnel) and through the same topology with plain kernel IPv4 forwarding, in one run.
//!
//! One lab (direct topology, prefix `xsec-bench`) for the whole run. Each repeat runs every
//! mode in turn (xsecd with each requested `idle` setting, then `plain`: the daemons stopped,
//! so the XDP programs are gone and the gateways' kernels forward), and each mode every size,
//! so that slow drift of a shared machine spreads over all modes instead of biasing one.
//! A mode starts with a one-second warm-up flood that is not counted.
//!
//! A trial: `udp-count` listens on hB, `/proc/stat` and the daemons' `/proc/<pid>/stat` are
//! sampled, `udp-flood` sends from hA for the window, the samples are taken again when it
//! exits; the receiver keeps counting 1.5 s longer for what is still in flight. Rates are
//! over the sender's own window: offered = sent / window, delivered = received / window,
//! Gbps = received × size × 8 / window, with size the L3 size of the inner (plain) datagram.
//! Interface and UDP counters of every node along the path, and the daemons' stats (encap,
//! decap, drops, `forward.*`), are read before and after: their deltas say where packets
//! were lost. Every figure printed is the median over the repeats, each taken on its own.
//!
//! Reading it on a small machine: in `plain` mode the sender is self-clocked (veth delivers
//! into the per-CPU backlog, and the softirq that forwards through both gateways to hB's
//! socket runs on the sender's own CPU before its next `sendmmsg`), so plain forwarding loses
//! nothing and is bounded by one core. With xsecd the path is split across processes that
//! share the cores with the sender and the receiver; what the sender offers beyond what the
//! gateways' workers take is lost in the AF_XDP RX ring, which xsecd does not count (compare
//! `gwA lan rx` with `gwA xsecd` in the last table).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{Pair, PairOptions};
use crate::procs::Proc;
use crate::stats::Stats;
use crate::sysstat::{self, CpuUse};
use crate::tools::last_json;
use crate::topo::{Lab, Node, TopoOptions, Xsecd, addr};
use crate::{Result, err};

/// Options of `xsec-lab bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub xsecd: PathBuf,
    pub seconds: u64,
    /// L3 sizes of the inner datagram.
    pub sizes: Vec<usize>,
    pub repeat: usize,
    /// xsecd's `idle` settings to measure (`busy`, `adaptive`).
    pub idle: Vec<String>,
    /// Datagrams per `sendmmsg` in the sender.
    pub batch: usize,
    pub json: Option<PathBuf>,
    pub prefix: String,
    /// This binary (the traffic tools run as its subcommands).
    pub lab_bin: PathBuf,
    /// Set by SIGINT/SIGTERM: stop early and tear down.
    pub stop: Arc<AtomicBool>,
}

const PORT: &str = "5301";
/// How long the receiver counts after the sender's window.
const DRAIN_S: f64 = 1.5;

/// The path from hA to hB: (label, node, interfaces). Every node's UDP counters are read too.
const PATH: [(&str, Node, &[&str]); 4] = [
    ("hA", Node::HostA, &["eth0"]),
    ("gwA", Node::GwA, &["lan0", "wan0"]),
    ("gwB", Node::GwB, &["wan0", "lan0"]),
    ("hB", Node::HostB, &["eth0"]),
];
const IF_COUNTERS: [&str; 4] = ["rx_packets", "rx_dropped", "tx_packets", "tx_dropped"];

/// One gateway's share of a trial.
#[derive(Debug, Clone)]
pub struct DaemonTrial {
    pub gw: &'static str,
    /// CPU time over the window, percent of one core (all threads).
    pub cpu_pct: f64,
    /// Deltas of the stats file's counters (`engine.*`, `drops.*`, `forward.*`, `workers.*`).
    pub counters: BTreeMap<String, u64>,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Trial {
    pub mode: String,
    pub size: usize,
    pub rep: usize,
    pub sent: u64,
    pub send_errors: u64,
    /// The sender's window, seconds.
    pub window_s: f64,
    pub received: u64,
    pub cpu: Vec<CpuUse>,
    pub sender_cpu_pct: Option<f64>,
    pub receiver_cpu_pct: Option<f64>,
    pub daemons: Vec<DaemonTrial>,
    /// Deltas of interface and UDP counters along the path (`hA.eth0.tx_packets`, ...).
    pub net: BTreeMap<String, u64>,
}

impl Trial {
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.window_s
    }
    pub fn delivered_pps(&self) -> f64 {
        self.received as f64 / self.window_s
    }
    pub fn gbps(&self) -> f64 {
        self.delivered_pps() * self.size as f64 * 8.0 / 1e9
    }
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.received as f64 / self.sent as f64)
        }
    }
}

fn check_stop(o: &BenchOptions) -> Result<()> {
    if o.stop.load(Ordering::Relaxed) {
        Err(err!("interrupted: tearing the lab down"))
    } else {
        Ok(())
    }
}

/// The median of the finite values (the mean of the middle two for an even count); 0 for
/// none. The lab's tables and the cycle-counting benches of `benches/` use this one.
pub fn median<T: Borrow<f64>>(values: impl IntoIterator<Item = T>) -> f64 {
    let mut v: Vec<f64> = values
        .into_iter()
        .map(|x| *x.borrow())
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn mode_label(idle: Option<&str>) -> String {
    match idle {
        Some(i) => format!("xsecd-{i}"),
        None => "plain".to_owned(),
    }
}

/// Every counter of the stats file the bench reports, flattened.
/// The stats file's engine, drop and forwarding counters, and the workers' RX/TX sums, flat.
pub(crate) fn xsecd_counters(st: &Stats) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for sect in ["engine", "drops", "forward"] {
        for (k, v) in st.0[sect].as_object().into_iter().flatten() {
            if let Some(n) = v.as_u64() {
                m.insert(format!("{sect}.{k}"), n);
            }
        }
    }
    for f in ["rx_unprot", "rx_prot", "tx_unprot", "tx_prot"] {
        m.insert(format!("workers.{f}"), st.workers_sum(f));
    }
    m
}

pub(crate) fn deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0);
            (k.clone(), a.saturating_sub(b))
        })
        .collect()
}

/// `Udp:` (and `UdpLite:`-free) counters from `/proc/net/snmp`: header line, value line.
fn parse_snmp_udp(text: &str) -> Vec<(String, u64)> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values, ..] = lines.as_slice() else {
        return vec![];
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Interface and UDP counters of every node on the path, one `cat` per namespace.
fn net_sample(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for (label, node, ifs) in PATH {
        let mut args = vec!["cat".to_owned()];
        for i in ifs {
            for c in IF_COUNTERS {
                args.push(format!("/sys/class/net/{i}/statistics/{c}"));
            }
        }
        args.push("/proc/net/snmp".to_owned());
        let out = lab.exec(node, &args)?.check()?.stdout;
        let mut lines = out.lines();
        for i in ifs {
            for c in IF_COUNTERS {
                let v = lines
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                m.insert(format!("{label}.{i}.{c}"), v);
            }
        }
        let rest: Vec<&str> = lines.collect();
        for (k, v) in parse_snmp_udp(&rest.join("\n")) {
            if matches!(
                k.as_str(),
                "InDatagrams" | "NoPorts" | "InErrors" | "RcvbufErrors" | "SndbufErrors"
            ) {
                m.insert(format!("{label}.udp.{k}"), v);
            }
        }
    }
    Ok(m)
}

/// Wait for `p` to end, up to `limit`; `false` if it is still running then.
fn wait_for(o: &BenchOptions, lab: &Lab, p: &Proc, limit: Duration) -> Result<bool> {
    let end = Instant::now() + limit;
    while lab.procs().is_running(p) {
        check_stop(o)?;
        if Instant::now() >= end {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// One trial: receiver up, samples, flood, samples, receiver done, deltas.
fn trial(
    o: &BenchOptions,
    lab: &Lab,
    daemons: &[Xsecd],
    mode: &str,
    size: usize,
    rep: usize,
    seconds: f64,
) -> Result<Trial> {
    let bin = o.lab_bin.to_string_lossy().into_owned();
    let tag = format!("{mode}-{size}-{rep}");
    let net0 = net_sample(lab)?;
    let st0: Vec<BTreeMap<String, u64>> = daemons
        .iter()
        .map(|d| lab.stats(d).map(|s| xsecd_counters(&s)))
        .collect::<Result<_>>()?;
    let recv = lab.spawn(
        Node::HostB,
        &format!("udp-count-{tag}"),
        &[
            &bin,
            "udp-count",
            "--port",
            PORT,
            "--seconds",
            &format!("{}", seconds + DRAIN_S),
        ],
    )?;
    let end = Instant::now() + Duration::from_secs(10);
    while !recv.stdout_text().contains("listening on") {
        check_stop(o)?;
        if Instant::now() > end || !lab.procs().is_running(&recv) {
            return Err(err!("udp-count did not start: {}", recv.stderr_tail(5)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids: Vec<String> = daemons.iter().map(|d| d.proc.pid.to_string()).collect();
    let cpu0 = sysstat::sample();
    let d0: Vec<Option<f64>> = pids.iter().map(|p| sysstat::proc_cpu_seconds(p)).collect();
    let flood = lab.spawn(
        Node::HostA,
        &format!("udp-flood-{tag}"),
        &[
            &bin,
            "udp-flood",
            "--dst",
            addr::HOST_B,
            "--port",
            PORT,
            "--size",
            &size.to_string(),
            "--seconds",
            &format!("{seconds}"),
            "--batch",
            &o.batch.to_string(),
        ],
    )?;
    if !wait_for(o, lab, &flood, Duration::from_secs_f64(seconds + 15.0))? {
        lab.procs().stop(&flood, Duration::from_secs(2));
        return Err(err!("udp-flood did not end in time"));
    }
    let cpu1 = sysstat::sample();
    let d1: Vec<Option<f64>> = pids.iter().map(|p| sysstat::proc_cpu_seconds(p)).collect();
    let span = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-3);
    if !wait_for(o, lab, &recv, Duration::from_secs_f64(DRAIN_S + 10.0))? {
        lab.procs().stop(&recv, Duration::from_secs(2));
        return Err(err!("udp-count did not end in time"));
    }
    // the receiver's drain time covers several stats intervals: the files are current
    let net1 = net_sample(lab)?;
    let mut daemon_rows = vec![];
    for (i, d) in daemons.iter().enumerate() {
        let after = xsecd_counters(&lab.stats(d)?);
        let cpu_pct = match (d0[i], d1[i]) {
            (Some(a), Some(b)) => 100.0 * (b - a) / span,
            _ => f64::NAN,
        };
        daemon_rows.push(DaemonTrial {
            gw: d.node.suffix(),
            cpu_pct,
            counters: deltas(&st0[i], &after),
        });
    }
    let fj = last_json(&flood.stdout_text())
        .ok_or_else(|| err!("udp-flood printed no result: {}", flood.stderr_tail(5)))?;
    let rj = last_json(&recv.stdout_text())
        .ok_or_else(|| err!("udp-count printed no result: {}", recv.stderr_tail(5)))?;
    let window_s = fj["seconds"].as_f64().unwrap_or(seconds).max(1e-3);
    let pct = |v: &Value, w: f64| v["cpu_s"].as_f64().map(|c| 100.0 * c / w);
    Ok(Trial {
        mode: mode.to_owned(),
        size,
        rep,
        sent: num(&fj, "sent"),
        send_errors: num(&fj, "errors"),
        window_s,
        received: num(&rj, "packets"),
        cpu: sysstat::cpu_use(&cpu0, &cpu1),
        sender_cpu_pct: pct(&fj, window_s),
        // the receiver's CPU time includes its drain; what it spent outside the window is
        // small (it sleeps in recv) but makes this an upper bound
        receiver_cpu_pct: pct(&rj, window_s),
        daemons: daemon_rows,
        net: deltas(&net0, &net1),
    })
}

/// Run the bench; `Ok(trials)`.
pub fn run(o: &BenchOptions) -> Result<Vec<Trial>> {
    let xsecd =
        std::fs::canonicalize(&o.xsecd).map_err(|e| err!("--xsecd {}: {e}", o.xsecd.display()))?;
    for &s in &o.sizes {
        if !(28..=1500).contains(&s) {
            return Err(err!(
                "size {s}: L3 sizes run from 28 (IPv4 + UDP headers) to 1500 (the MTU)"
            ));
        }
    }
    for i in &o.idle {
        if !matches!(i.as_str(), "busy" | "adaptive") {
            return Err(err!("--idle {i}: busy or adaptive"));
        }
    }
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    println!("crypto flags: {}", flags_line(&info));
    let s0 = sysstat::sample();
    std::thread::sleep(Duration::from_secs(1));
    let idle_use = sysstat::cpu_use(&s0, &sysstat::sample());
    println!("before the run: {}", cpu_line(&idle_use));
    if idle_use.iter().any(|u| u.busy_pct > 15.0) {
        println!("warning: the machine is not idle; the figures will be noisy");
    }

    let mut pair = Pair::new(PairOptions::default());
    // counters current to within 200 ms of the end of the receiver's drain
    pair.a.stats_interval_ms = 200;
    pair.b.stats_interval_ms = 200;
    let lab = Lab::up(TopoOptions::new(&o.prefix))?;
    println!(
        "xsec-lab bench: topology up (namespaces {}-*), work folder {}; {} s per trial, sizes {:?}, {} repeats, sender batch {}",
        o.prefix,
        lab.workdir().display(),
        o.seconds,
        o.sizes,
        o.repeat,
        o.batch
    );
    let result = run_in(o, &lab, &xsecd, &mut pair);
    match result {
        Ok(trials) => {
            let s = summarize(&trials, o);
            println!("\n{}", s.0);
            if let Some(path) = &o.json {
                let doc = json!({
                    "cpu": {
                        "model": info.model,
                        "cpus": info.cpus,
                        "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
                    },
                    "options": {
                        "seconds": o.seconds,
                        "sizes": o.sizes,
                        "repeat": o.repeat,
                        "idle": o.idle,
                        "batch": o.batch,
                        "encryption": "aes-gcm-128",
                        "mode": "tunnel",
                    },
                    "summary": s.1,
                    "trials": trials.iter().map(trial_json).collect::<Vec<_>>(),
                });
                let text = serde_json::to_string_pretty(&doc)
                    .map_err(|e| err!("cannot write JSON: {e}"))?;
                std::fs::write(path, text).map_err(|e| err!("write {}: {e}", path.display()))?;
                println!("JSON: {}", path.display());
            }
            Ok(trials)
        }
        Err(e) => {
            println!("xsec-lab bench: {e}");
            Err(e)
        }
    }
}

fn run_in(
    o: &BenchOptions,
    lab: &Lab,
    xsecd: &std::path::Path,
    pair: &mut Pair,
) -> Result<Vec<Trial>> {
    lab.warm_neighbours()?;
    let mut modes: Vec<Option<&str>> = o.idle.iter().map(|s| Some(s.as_str())).collect();
    modes.push(None);
    let mut trials = vec![];
    for rep in 0..o.repeat {
        for idle in &modes {
            check_stop(o)?;
            let mode = mode_label(*idle);
            let mut daemons = vec![];
            if let Some(idle) = idle {
                pair.a.idle = (*idle).to_owned();
                pair.b.idle = (*idle).to_owned();
                for (node, conf) in [(Node::GwA, &pair.a), (Node::GwB, &pair.b)] {
                    daemons.push(lab.start_xsecd(
                        node,
                        xsecd,
                        &conf.to_toml(),
                        Duration::from_secs(30),
                    )?);
                }
            }
            let mut run_mode = || -> Result<()> {
                // warm-up, not counted: first packets, caches, the daemons' first polls
                let w = trial(o, lab, &daemons, &mode, o.sizes[0], rep, 1.0)?;
                for d in &w.daemons {
                    let odd: Vec<String> = d
                        .counters
                        .iter()
                        .filter(|(k, v)| {
                            **v > 0 && (k.starts_with("drops.") || k.starts_with("forward."))
                        })
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    if !odd.is_empty() {
                        println!(
                            "[{}/{}] {mode} warm-up, {}: {}",
                            rep + 1,
                            o.repeat,
                            d.gw,
                            odd.join(" ")
                        );
                    }
                }
                for &size in &o.sizes {
                    check_stop(o)?;
                    let t = trial(o, lab, &daemons, &mode, size, rep, o.seconds as f64)?;
                    println!(
                        "[{}/{}] {:<14} {:>5} B: offered {:>8.1} kpps, delivered {:>8.1} kpps ({:.3} Gbps, loss {:.1} %); {}",
                        rep + 1,
                        o.repeat,
                        mode,
                        size,
                        t.offered_pps() / 1e3,
                        t.delivered_pps() / 1e3,
                        t.gbps(),
                        t.loss_pct(),
                        cpu_line(&t.cpu)
                    );
                    lab.daemons_alive(&daemons)?;
                    trials.push(t);
                }
                Ok(())
            };
            let r = run_mode();
            for d in &daemons {
                if let Err(e) = lab.stop_xsecd(d) {
                    println!("warning: {e}");
                }
            }
            r?;
        }
    }
    Ok(trials)
}

fn flags_line(info: &sysstat::CpuInfo) -> String {
    info.flags
        .iter()
        .map(|(f, h)| format!("{f} {}", if *h { "yes" } else { "no" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_line(u: &[CpuUse]) -> String {
    u.iter()
        .enumerate()
        .map(|(i, c)| {
            if c.steal_pct >= 1.0 {
                format!("cpu{i} {:.0} % (steal {:.0} %)", c.busy_pct, c.steal_pct)
            } else {
                format!("cpu{i} {:.0} %", c.busy_pct)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn trial_json(t: &Trial) -> Value {
    json!({
        "mode": t.mode,
        "size": t.size,
        "rep": t.rep,
        "sent": t.sent,
        "send_errors": t.send_errors,
        "window_s": t.window_s,
        "received": t.received,
        "offered_pps": t.offered_pps(),
        "delivered_pps": t.delivered_pps(),
        "delivered_gbps": t.gbps(),
        "loss_pct": t.loss_pct(),
        "cpu_busy_pct": t.cpu.iter().map(|c| c.busy_pct).collect::<Vec<_>>(),
        "cpu_softirq_pct": t.cpu.iter().map(|c| c.softirq_pct).collect::<Vec<_>>(),
        "cpu_steal_pct": t.cpu.iter().map(|c| c.steal_pct).collect::<Vec<_>>(),
        "sender_cpu_pct": t.sender_cpu_pct,
        "receiver_cpu_pct": t.receiver_cpu_pct,
        "daemons": t.daemons.iter().map(|d| json!({
            "gw": d.gw, "cpu_pct": d.cpu_pct, "counters": d.counters,
        })).collect::<Vec<_>>(),
        "net": t.net,
    })
}

/// The medians of one (mode, size).
struct Row<'a> {
    mode: &'a str,
    size: usize,
    n: usize,
    offered: f64,
    delivered: f64,
    gbps: f64,
    loss: f64,
    cpu: Vec<f64>,
    softirq: Vec<f64>,
    sender: f64,
    receiver: f64,
    /// gw -> (cpu %, counter medians)
    daemons: Vec<(&'static str, f64, BTreeMap<String, f64>)>,
    net: BTreeMap<String, f64>,
}

fn row<'a>(mode: &'a str, size: usize, ts: &[&Trial]) -> Row<'a> {
    let m = |f: &dyn Fn(&Trial) -> f64| median(ts.iter().map(|t| f(t)));
    let cores = ts.iter().map(|t| t.cpu.len()).max().unwrap_or(0);
    let cpu = (0..cores)
        .map(|i| m(&|t| t.cpu.get(i).map_or(f64::NAN, |c| c.busy_pct)))
        .collect();
    let softirq = (0..cores)
        .map(|i| m(&|t| t.cpu.get(i).map_or(f64::NAN, |c| c.softirq_pct)))
        .collect();
    let counter_medians = |maps: Vec<&BTreeMap<String, u64>>| -> BTreeMap<String, f64> {
        let keys: std::collections::BTreeSet<&String> =
            maps.iter().flat_map(|m| m.keys()).collect();
        keys.into_iter()
            .map(|k| {
                let v = maps.iter().map(|m| m.get(k).copied().unwrap_or(0) as f64);
                (k.clone(), median(v))
            })
            .collect()
    };
    let gws: Vec<&'static str> = ts
        .first()
        .map(|t| t.daemons.iter().map(|d| d.gw).collect())
        .unwrap_or_default();
    let daemons = gws
        .into_iter()
        .map(|gw| {
            let ds: Vec<&DaemonTrial> = ts
                .iter()
                .filter_map(|t| t.daemons.iter().find(|d| d.gw == gw))
                .collect();
            let cpu = median(ds.iter().map(|d| d.cpu_pct));
            (
                gw,
                cpu,
                counter_medians(ds.iter().map(|d| &d.counters).collect()),
            )
        })
        .collect();
    Row {
        mode,
        size,
        n: ts.len(),
        offered: m(&Trial::offered_pps),
        delivered: m(&Trial::delivered_pps),
        gbps: m(&Trial::gbps),
        loss: m(&Trial::loss_pct),
        cpu,
        softirq,
        sender: m(&|t| t.sender_cpu_pct.unwrap_or(f64::NAN)),
        receiver: m(&|t| t.receiver_cpu_pct.unwrap_or(f64::NAN)),
        daemons,
        net: counter_medians(ts.iter().map(|t| &t.net).collect()),
    }
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// The report (text) and its JSON summary.
fn summarize(trials: &[Trial], o: &BenchOptions) -> (String, Value) {
    use std::fmt::Write as _;
    let mut modes: Vec<String> = vec!["plain".to_owned()];
    modes.extend(o.idle.iter().map(|i| mode_label(Some(i))));
    let mut rows = vec![];
    for &size in &o.sizes {
        for mode in &modes {
            let ts: Vec<&Trial> = trials
                .iter()
                .filter(|t| &t.mode == mode && t.size == size)
                .collect();
            if !ts.is_empty() {
                rows.push(row(mode, size, &ts));
            }
        }
    }
    let plain = |size: usize| {
        rows.iter()
            .find(|r| r.mode == "plain" && r.size == size)
            .map(|r| r.delivered)
    };
    let ratio = |r: &Row<'_>| match plain(r.size) {
        Some(p) if p > 0.0 && r.mode != "plain" => Some(r.delivered / p),
        _ => None,
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "==== medians over {} repeats of {} s; size = L3 bytes of the inner datagram; AES-128-GCM tunnel ====",
        o.repeat, o.seconds
    );
    let _ = writeln!(
        s,
        "{:>5} {:<15} {:>9} {:>9} {:>7} {:>6} {:>7} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5}",
        "size",
        "mode",
        "offer",
        "deliver",
        "Gbps",
        "loss",
        "x/plain",
        "cpu0",
        "cpu1",
        "send",
        "recv",
        "gwA",
        "gwB"
    );
    let _ = writeln!(
        s,
        "{:>5} {:<15} {:>9} {:>9} {:>7} {:>6} {:>7} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5}",
        "B", "", "kpps", "kpps", "", "%", "", "%", "%", "%", "%", "%", "%"
    );
    let pct = |x: f64| {
        if x.is_finite() {
            format!("{x:.0}")
        } else {
            "-".to_owned()
        }
    };
    for r in &rows {
        let cpu = |i: usize| match (r.cpu.get(i), r.softirq.get(i)) {
            (Some(b), Some(si)) => format!("{}({})", pct(*b), pct(*si)),
            _ => "-".to_owned(),
        };
        let d = |gw: &str| {
            r.daemons
                .iter()
                .find(|d| d.0 == gw)
                .map_or("-".to_owned(), |d| pct(d.1))
        };
        let _ = writeln!(
            s,
            "{:>5} {:<15} {:>9.1} {:>9.1} {:>7.3} {:>6.1} {:>7} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5}",
            r.size,
            r.mode,
            r.offered / 1e3,
            r.delivered / 1e3,
            r.gbps,
            r.loss,
            ratio(r).map_or("-".to_owned(), |x| format!("{x:.2}")),
            cpu(0),
            cpu(1),
            pct(r.sender),
            pct(r.receiver),
            d("gwA"),
            d("gwB"),
        );
    }
    let _ = writeln!(
        s,
        "(cpuN: machine busy % per core over the window (softirq part); send/recv/gwA/gwB: that process's CPU, % of one core)"
    );

    let _ = writeln!(
        s,
        "\n==== xsecd counters per trial (medians of deltas) ===="
    );
    let _ = writeln!(
        s,
        "{:>5} {:<15} {:<4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  other non-zero",
        "size", "mode", "gw", "rx", "encap", "decap", "drops", "no_neigh", "tx_full"
    );
    for r in rows.iter().filter(|r| !r.daemons.is_empty()) {
        for (gw, _, c) in &r.daemons {
            let drops: f64 = c
                .iter()
                .filter(|(k, _)| k.starts_with("drops."))
                .map(|(_, v)| v)
                .sum();
            let shown = [
                "engine.encap_packets",
                "engine.decap_packets",
                "forward.no_neighbour",
                "forward.tx_full",
            ];
            let other: Vec<String> = c
                .iter()
                .filter(|(k, v)| {
                    **v > 0.0
                        && !shown.contains(&k.as_str())
                        && (k.starts_with("drops.")
                            || (k.starts_with("forward.") && k.as_str() != "forward.parked"))
                })
                .map(|(k, v)| format!("{k}={v:.0}"))
                .collect();
            let _ = writeln!(
                s,
                "{:>5} {:<15} {:<4} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {}",
                r.size,
                r.mode,
                gw,
                get(c, "workers.rx_unprot") + get(c, "workers.rx_prot"),
                get(c, "engine.encap_packets"),
                get(c, "engine.decap_packets"),
                drops,
                get(c, "forward.no_neighbour"),
                get(c, "forward.tx_full"),
                other.join(" ")
            );
        }
    }

    let _ = writeln!(
        s,
        "\n==== where the packets went, hA -> hB (medians of per-trial deltas, thousands) ===="
    );
    // (heading, counter); `xsecd:` counters come from the daemon's stats, the rest from
    // interface and UDP counters of the namespaces
    let cols: [(&str, &str); 10] = [
        ("hA tx", "hA.eth0.tx_packets"),
        ("gwA lan rx", "gwA.lan0.rx_packets"),
        ("gwA xsecd", "xsecd:gwA:workers.rx_prot"),
        ("gwA wan tx", "gwA.wan0.tx_packets"),
        ("gwB wan rx", "gwB.wan0.rx_packets"),
        ("gwB xsecd", "xsecd:gwB:workers.rx_unprot"),
        ("gwB lan tx", "gwB.lan0.tx_packets"),
        ("hB rx", "hB.eth0.rx_packets"),
        ("hB rcvbuf", "hB.udp.RcvbufErrors"),
        ("hA sndbuf", "hA.udp.SndbufErrors"),
    ];
    let _ = write!(s, "{:>5} {:<15} {:>9} ", "size", "mode", "sent");
    for (h, _) in cols {
        let _ = write!(s, "{h:>10} ");
    }
    let _ = writeln!(s, "{:>9}  other non-zero", "received");
    for r in &rows {
        let ts: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.mode == r.mode && t.size == r.size)
            .collect();
        let sent = median(ts.iter().map(|t| t.sent as f64));
        let recv = median(ts.iter().map(|t| t.received as f64));
        let _ = write!(s, "{:>5} {:<15} {:>9.1} ", r.size, r.mode, sent / 1e3);
        for (_, k) in cols {
            let v = match k.strip_prefix("xsecd:").and_then(|k| k.split_once(':')) {
                Some((gw, k)) => r.daemons.iter().find(|d| d.0 == gw).map(|d| get(&d.2, k)),
                None => Some(get(&r.net, k)),
            };
            let _ = match v {
                Some(v) => write!(s, "{:>10.1} ", v / 1e3),
                None => write!(s, "{:>10} ", "-"),
            };
        }
        let other: Vec<String> = r
            .net
            .iter()
            .filter(|(k, v)| {
                **v > 0.0
                    && (k.ends_with("_dropped") || k.ends_with("Errors") || k.ends_with("NoPorts"))
                    && !cols.iter().any(|(_, c)| c == k)
            })
            .map(|(k, v)| format!("{k}={v:.0}"))
            .collect();
        let _ = writeln!(s, "{:>9.1}  {}", recv / 1e3, other.join(" "));
    }
    let _ = writeln!(
        s,
        "(packets in thousands; gwX xsecd: what xsecd's worker took from its AF_XDP socket)"
    );

    let summary: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "mode": r.mode,
                "size": r.size,
                "trials": r.n,
                "offered_pps": r.offered,
                "delivered_pps": r.delivered,
                "delivered_gbps": r.gbps,
                "loss_pct": r.loss,
                "ratio_to_plain": ratio(r),
                "cpu_busy_pct": r.cpu,
                "cpu_softirq_pct": r.softirq,
                "sender_cpu_pct": r.sender,
                "receiver_cpu_pct": r.receiver,
                "daemons": r.daemons.iter().map(|(gw, cpu, c)| json!({
                    "gw": gw, "cpu_pct": cpu, "counters": c,
                })).collect::<Vec<_>>(),
                "net": r.net,
            })
        })
        .collect();
    (s, Value::Array(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median([0.0f64; 0]), 0.0);
        assert_eq!(median([f64::NAN, 5.0, f64::INFINITY]), 5.0);
    }

    #[test]
    fn snmp_and_deltas() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                 Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                 Udp: 10 1 2 30 2\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let u = parse_snmp_udp(t);
        assert_eq!(u[0], ("InDatagrams".to_owned(), 10));
        assert_eq!(u[4], ("RcvbufErrors".to_owned(), 2));
        let a: BTreeMap<String, u64> = [("x".to_owned(), 5)].into();
        let b: BTreeMap<String, u64> = [("x".to_owned(), 8), ("y".to_owned(), 1)].into();
        let d = deltas(&a, &b);
        assert_eq!((d["x"], d["y"]), (3, 1));
    }

    #[test]
    fn trial_rates() {
        let t = Trial {
            mode: "plain".into(),
            size: 1000,
            rep: 0,
            sent: 2000,
            send_errors: 0,
            window_s: 2.0,
            received: 1500,
            cpu: vec![],
            sender_cpu_pct: None,
            receiver_cpu_pct: None,
            daemons: vec![],
            net: BTreeMap::new(),
        };
        assert_eq!(t.offered_pps(), 1000.0);
        assert_eq!(t.delivered_pps(), 750.0);
        assert!((t.gbps() - 0.006).abs() < 1e-12);
        assert!((t.loss_pct() - 25.0).abs() < 1e-9);
    }
}
