//! `xsec-lab ndr`: RFC 2544-style searches for the highest rate hA → hB with no loss (NDR)
//! and with at most 0.5 % loss (PDR), per mode and packet size, with xsec-pktgen as the
//! traffic generator (in hA) and sink (in hB), and the latency at half the NDR.
//!
//! Modes, measured on the same topology in one run so that each IPsec figure has its
//! baselines beside it: `plain` (no daemons: the gateways' kernels forward), `bypass` (xsecd
//! on both gateways, the test traffic matched by a BYPASS policy in front of the PROTECT
//! one, so it goes through the workers in clear) and one `ipsec-ALG` per algorithm (an
//! xsecd tunnel). Test names follow FD.io CSIT's
//! (`64b-1c-ethip4ipsec1tnlsw-ip4base-int-aes128gcm-ndrpdr`) so results can be set beside
//! VPP's.
//!
//! A trial sends `rate × seconds` datagrams paced at `rate`; the sink's count against that
//! is the loss. The search starts from the rate the generator reaches unpaced, halves the
//! interval until it is narrower than `precision` of its top, PDR first, then NDR below it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{Action, Alg, Pair, PairOptions};
use crate::procs::Proc;
use crate::sysstat;
use crate::tools::last_json;
use crate::topo::{Lab, Node, TopoOptions, Xsecd, addr};
use crate::{Result, err};

/// Options of `xsec-lab ndr`.
#[derive(Debug, Clone)]
pub struct NdrOptions {
    pub xsecd: PathBuf,
    pub pktgen: PathBuf,
    /// `plain`, `bypass`, `ipsec`.
    pub modes: Vec<String>,
    pub algs: Vec<Alg>,
    /// IP sizes; 0 = IMIX.
    pub sizes: Vec<usize>,
    pub seconds: f64,
    /// Stop when the interval is narrower than this share of its top.
    pub precision: f64,
    /// Most trials per search.
    pub max_trials: usize,
    pub pdr_loss_pct: f64,
    pub flows: u16,
    /// The generator's I/O: `socket` (kernel UDP) or `xdp` (AF_XDP on hA's eth0).
    pub gen_io: String,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
}

const PORT: u16 = 5301;

/// One paced run.
#[derive(Debug, Clone)]
pub struct Trial {
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub reordered: u64,
    pub corrupt: u64,
    /// Offered rate the generator achieved.
    pub offered_pps: f64,
    pub latency: Value,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct Result1 {
    pub name: String,
    pub mode: String,
    pub size: usize,
    pub max_offered: f64,
    pub ndr: f64,
    pub pdr: f64,
    pub latency_half_ndr: Value,
    pub trials: Vec<Trial>,
}

fn size_tag(s: usize) -> String {
    if s == 0 {
        "imix".into()
    } else {
        format!("{s}b")
    }
}

/// The CSIT-style test name.
pub fn test_name(mode: &str, size: usize) -> String {
    let s = size_tag(size);
    match mode.strip_prefix("ipsec-") {
        Some(alg) => format!("{s}-1c-ethip4ipsec1tnlsw-ip4base-int-{alg}-ndrpdr"),
        None if mode == "bypass" => format!("{s}-1c-ethip4-ip4base-xsecd-bypass-ndrpdr"),
        None => format!("{s}-ethip4-ip4base-kernel-ndrpdr"),
    }
}

fn wait(o: &NdrOptions, lab: &Lab, p: &Proc, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    while lab.procs().is_running(p) {
        if o.stop.load(Ordering::Relaxed) {
            return Err(err!("interrupted"));
        }
        if Instant::now() >= end {
            lab.procs().stop(p, Duration::from_secs(2));
            return Err(err!("{} did not end in time", p.name));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Send at `rate` (0: unpaced) for `o.seconds`; the sink's view of it.
fn trial(o: &NdrOptions, lab: &Lab, size: usize, rate: f64, tag: &str) -> Result<Trial> {
    let bin = o.pktgen.to_string_lossy().into_owned();
    let count = if rate > 0.0 {
        (rate * o.seconds).round().max(1.0) as u64
    } else {
        0
    };
    let mut sink_args = vec![
        bin.clone(),
        "sink".into(),
        "--port".into(),
        PORT.to_string(),
        "--seconds".into(),
        format!("{}", o.seconds + 10.0),
        "--idle-exit".into(),
        "1".into(),
        "--quiet".into(),
    ];
    if count > 0 {
        sink_args.extend(["--expect".into(), count.to_string()]);
    }
    let sink = lab.spawn(Node::HostB, &format!("sink-{tag}"), &sink_args)?;
    let end = Instant::now() + Duration::from_secs(10);
    while !sink.stderr_text().contains("listening on") {
        if Instant::now() > end || !lab.procs().is_running(&sink) {
            return Err(err!(
                "xsec-pktgen sink did not start: {}",
                sink.stderr_tail(5)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let size_arg = if size == 0 {
        "imix".to_owned()
    } else {
        size.to_string()
    };
    let mut gen_args = vec![
        bin,
        "gen".into(),
        "--dst".into(),
        addr::HOST_B.into(),
        "--port".into(),
        PORT.to_string(),
        "--size".into(),
        size_arg,
        "--flows".into(),
        o.flows.to_string(),
        "--rate".into(),
        format!("{rate}"),
        "--seconds".into(),
        format!(
            "{}",
            if count > 0 {
                o.seconds * 3.0
            } else {
                o.seconds
            }
        ),
        "--count".into(),
        count.to_string(),
        "--quiet".into(),
        "--io".into(),
        o.gen_io.clone(),
    ];
    if o.gen_io == "xdp" {
        gen_args.extend(["--iface".into(), "eth0".into()]);
    }
    let g = lab.spawn(Node::HostA, &format!("gen-{tag}"), &gen_args)?;
    wait(o, lab, &g, Duration::from_secs_f64(o.seconds * 3.0 + 10.0))?;
    wait(o, lab, &sink, Duration::from_secs_f64(o.seconds + 15.0))?;
    let gj = last_json(&g.stdout_text())
        .ok_or_else(|| err!("generator printed no result: {}", g.stderr_tail(5)))?;
    let sj = last_json(&sink.stdout_text())
        .ok_or_else(|| err!("sink printed no result: {}", sink.stderr_tail(5)))?;
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let sent = n(&gj, "sent");
    let received = n(&sj, "received");
    Ok(Trial {
        rate,
        sent,
        received,
        loss_pct: 100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64,
        reordered: n(&sj, "reordered"),
        corrupt: n(&sj, "corrupt"),
        offered_pps: gj["pps"].as_f64().unwrap_or(0.0),
        latency: sj["latency_ns"].clone(),
    })
}

/// Binary search in `[lo, hi]` for the highest rate whose loss is at most `max_loss` %.
#[allow(clippy::too_many_arguments)]
fn search(
    o: &NdrOptions,
    lab: &Lab,
    size: usize,
    mut lo: f64,
    mut hi: f64,
    max_loss: f64,
    label: &str,
    trials: &mut Vec<Trial>,
) -> Result<f64> {
    for i in 0..o.max_trials {
        if hi - lo <= o.precision * hi {
            break;
        }
        let r = (lo + hi) / 2.0;
        let t = trial(o, lab, size, r, &format!("{label}-{i}"))?;
        let pass = t.loss_pct <= max_loss && t.corrupt == 0;
        println!(
            "    {label} trial {}: {:>9.1} kpps offered {:>9.1}: loss {:.3} % -> {}",
            i + 1,
            r / 1e3,
            t.offered_pps / 1e3,
            t.loss_pct,
            if pass { "pass" } else { "fail" }
        );
        if pass {
            lo = r;
        } else {
            hi = r;
        }
        trials.push(t);
    }
    Ok(lo)
}

fn start_daemons(lab: &Lab, xsecd: &std::path::Path, pair: &Pair) -> Result<Vec<Xsecd>> {
    let mut ds = vec![];
    for (node, conf) in [(Node::GwA, &pair.a), (Node::GwB, &pair.b)] {
        match lab.start_xsecd(node, xsecd, &conf.to_toml(), Duration::from_secs(30)) {
            Ok(d) => ds.push(d),
            Err(e) => {
                for d in &ds {
                    let _ = lab.stop_xsecd(d);
                }
                return Err(e);
            }
        }
    }
    Ok(ds)
}

/// Run every search; print a table, write JSON.
pub fn run(o: &NdrOptions) -> Result<Vec<Result1>> {
    let xsecd =
        std::fs::canonicalize(&o.xsecd).map_err(|e| err!("--xsecd {}: {e}", o.xsecd.display()))?;
    if !o.pktgen.is_file() {
        return Err(err!("--pktgen {}: not found", o.pktgen.display()));
    }
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    let lab = Lab::up(TopoOptions::new(&o.prefix))?;
    lab.warm_neighbours()?;
    let mut modes: Vec<String> = vec![];
    for m in &o.modes {
        match m.as_str() {
            "plain" | "bypass" => modes.push(m.clone()),
            "ipsec" => modes.extend(o.algs.iter().map(|a| format!("ipsec-{}", a.name()))),
            _ => return Err(err!("mode {m}: plain, bypass or ipsec")),
        }
    }
    let mut results = vec![];
    for mode in &modes {
        let daemons = match mode.as_str() {
            "plain" => vec![],
            "bypass" => {
                let mut p = Pair::new(PairOptions::default());
                p.port_policy("pktgen", "udp", PORT, Action::Bypass);
                start_daemons(&lab, &xsecd, &p)?
            }
            m => {
                let alg = m
                    .strip_prefix("ipsec-")
                    .and_then(Alg::from_name)
                    .ok_or_else(|| err!("mode {m}"))?;
                start_daemons(
                    &lab,
                    &xsecd,
                    &Pair::new(PairOptions {
                        alg,
                        ..PairOptions::default()
                    }),
                )?
            }
        };
        let r = (|| -> Result<()> {
            for &size in &o.sizes {
                let name = test_name(mode, size);
                println!("{name}:");
                let mut trials = vec![];
                let max = trial(o, &lab, size, 0.0, &format!("{mode}-{size}-max"))?;
                let top = max.offered_pps;
                println!(
                    "    unpaced: offered {:.1} kpps, received {:.1} kpps",
                    top / 1e3,
                    max.received as f64 / o.seconds / 1e3
                );
                trials.push(max);
                let pdr = search(
                    o,
                    &lab,
                    size,
                    0.0,
                    top,
                    o.pdr_loss_pct,
                    &format!("{mode}-{size}-pdr"),
                    &mut trials,
                )?;
                let ndr = search(
                    o,
                    &lab,
                    size,
                    0.0,
                    pdr.max(top * o.precision),
                    0.0,
                    &format!("{mode}-{size}-ndr"),
                    &mut trials,
                )?;
                let half = trial(o, &lab, size, ndr / 2.0, &format!("{mode}-{size}-lat"))?;
                println!(
                    "    NDR {:.1} kpps, PDR {:.1} kpps; at NDR/2: latency {}",
                    ndr / 1e3,
                    pdr / 1e3,
                    half.latency
                );
                results.push(Result1 {
                    name,
                    mode: mode.clone(),
                    size,
                    max_offered: top,
                    ndr,
                    pdr,
                    latency_half_ndr: half.latency.clone(),
                    trials,
                });
            }
            Ok(())
        })();
        for d in &daemons {
            let _ = lab.stop_xsecd(d);
        }
        r?;
    }
    drop(lab);
    println!("\n{}", table(&results));
    if let Some(path) = &o.json {
        let doc = json!({
            "cpu": {"model": info.model, "cpus": info.cpus,
                    "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>()},
            "options": {"seconds": o.seconds, "precision": o.precision, "pdr_loss_pct": o.pdr_loss_pct, "flows": o.flows, "generator_io": o.gen_io},
            "results": results.iter().map(|r| json!({
                "name": r.name, "mode": r.mode, "size": size_tag(r.size),
                "max_offered_pps": r.max_offered, "ndr_pps": r.ndr, "pdr_pps": r.pdr,
                "latency_half_ndr_ns": r.latency_half_ndr,
                "trials": r.trials.iter().map(|t| json!({
                    "rate": t.rate, "sent": t.sent, "received": t.received, "loss_pct": t.loss_pct,
                    "offered_pps": t.offered_pps, "reordered": t.reordered, "corrupt": t.corrupt,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| err!("JSON: {e}"))?;
        std::fs::write(path, text).map_err(|e| err!("write {}: {e}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    Ok(results)
}

/// The results with each mode's NDR as a ratio to `plain`'s at the same size.
pub fn table(results: &[Result1]) -> String {
    let mut s = String::from(
        "| test | NDR kpps | PDR kpps | NDR / plain | p50 / p99 / p99.9 at NDR/2 (µs) |\n|---|---|---|---|---|\n",
    );
    for r in results {
        let plain = results
            .iter()
            .find(|p| p.mode == "plain" && p.size == r.size)
            .map(|p| p.ndr);
        let ratio = match plain {
            Some(p) if p > 0.0 && r.mode != "plain" => format!("{:.2}", r.ndr / p),
            _ => String::new(),
        };
        let l = &r.latency_half_ndr;
        let us = |k: &str| {
            l[k].as_f64()
                .map_or("-".into(), |v| format!("{:.0}", v / 1e3))
        };
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {ratio} | {} / {} / {} |\n",
            r.name,
            r.ndr / 1e3,
            r.pdr / 1e3,
            us("p50"),
            us("p99"),
            us("p999")
        ));
    }
    s
}
