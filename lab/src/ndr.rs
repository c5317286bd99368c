//! `xsec-lab ndr`: RFC 2544-style searches for the highest rate hA → hB with no loss (NDR)
//! and with at most 0.5 % loss (PDR), per mode and packet size, with xsec-pktgen as the
//! traffic generator (in hA) and sink (in hB), and the latency at 10 %, 50 % and 90 % of the
//! NDR.
//!
//! Modes, measured on the same topology in one run so that each IPsec figure has its
//! baselines beside it: `plain` (no daemons: the gateways' kernels forward), `bypass` (xsecd
//! on both gateways, the test traffic matched by a BYPASS policy in front of the PROTECT
//! one, so it goes through the workers in clear), one `ipsec-ALG` per algorithm and SA count
//! (an xsecd tunnel, flows spread over the SAs by source port) and `decap-ALG` (only gwB
//! runs xsecd; the generator stands in for gwA, encrypting with gwA's configuration and
//! sending ESP out of gwA's WAN port on AF_XDP, so gwB's decapsulation is measured alone). Test names follow FD.io CSIT's
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

use crate::capacity::spread_sas;
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
    /// SA pairs of the ipsec modes (flows spread over them by source port).
    pub sas: Vec<usize>,
    /// Worker counts of the xsecd modes (one veth queue each).
    pub workers: Vec<usize>,
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
    /// The sink's I/O: `socket` (kernel UDP) or `xdp` (AF_XDP on hB's eth0).
    pub sink_io: String,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
    /// `ipsec` with one SA pair on several workers: per-worker SAs (see
    /// [`crate::capacity::per_worker_sas`]).
    pub per_worker: bool,
}

const PORT: u16 = 5301;
/// Flow `f`'s source port is `SRC_PORT + f`, as [`spread_sas`] maps flows to SAs.
const SRC_PORT: u16 = 10_000;

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
    pub workers: usize,
    pub sas: usize,
    pub size: usize,
    pub max_offered: f64,
    pub ndr: f64,
    pub pdr: f64,
    pub latency_half_ndr: Value,
    /// Latency at 10 % and 90 % of the NDR (CSIT also reports these): at 10 % the workers
    /// are mostly asleep, so it shows what waking costs.
    pub latency_10_90: [Value; 2],
    pub trials: Vec<Trial>,
    /// The first gateway's workers after the searches (gwA's; gwB's in `decap`): what each
    /// received and handed off.
    pub worker_counters: Value,
}

fn size_tag(s: usize) -> String {
    if s == 0 {
        "imix".into()
    } else {
        format!("{s}b")
    }
}

/// The CSIT-style test name: size, worker cores, tunnels, algorithm.
pub fn test_name(mode: &str, size: usize, workers: usize, sas: usize) -> String {
    let s = size_tag(size);
    if let Some(alg) = mode.strip_prefix("decap-") {
        return format!("{s}-{workers}c-ethip4ipsec{sas}tnlsw-ip4base-int-{alg}-decap-ndrpdr");
    }
    match mode.strip_prefix("ipsec-") {
        Some(alg) => format!("{s}-{workers}c-ethip4ipsec{sas}tnlsw-ip4base-int-{alg}-ndrpdr"),
        None if mode == "bypass" => format!("{s}-{workers}c-ethip4-ip4base-xsecd-bypass-ndrpdr"),
        None => format!("{s}-ethip4-ip4base-kernel-ndrpdr"),
    }
}

/// One configuration under test: a mode, its workers and SAs, and the flows it sends.
#[derive(Debug, Clone)]
struct Case {
    mode: String,
    alg: Option<Alg>,
    workers: usize,
    sas: usize,
    flows: u16,
    /// `decap-ALG`: the generator, in gwA, protects with gwA's configuration (this file),
    /// each run's sequence numbers starting above the last run's.
    esp: Option<(PathBuf, std::cell::Cell<u64>)>,
}

impl Case {
    fn tag(&self, size: usize) -> String {
        format!("{}-{}w-{}t-{size}", self.mode, self.workers, self.sas)
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
fn trial(o: &NdrOptions, lab: &Lab, c: &Case, size: usize, rate: f64, tag: &str) -> Result<Trial> {
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
    if o.sink_io != "socket" {
        sink_args.extend([
            "--io".into(),
            o.sink_io.clone(),
            "--iface".into(),
            "eth0".into(),
        ]);
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
    // With the AF_XDP generator and several queues, one generator per TX queue of hA's
    // veth (each queue is the same-numbered RX queue of gwA's, so each worker receives its
    // share, as RSS would give it), each with its slice of the flows, the rate and the
    // count. The ESP stand-in stays one process: its SAs' sequence numbers must not repeat.
    let flows = usize::from(c.flows.max(1));
    let gens = if c.esp.is_none() && o.gen_io == "xdp" {
        c.workers.clamp(1, flows)
    } else {
        1
    };
    let stream_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut procs = Vec::with_capacity(gens);
    for q in 0..gens {
        let (f0, f1) = (flows * q / gens, flows * (q + 1) / gens);
        let share = |x: u64| x * f1 as u64 / flows as u64 - x * f0 as u64 / flows as u64;
        let rate_q = rate * (f1 - f0) as f64 / flows as f64;
        let count_q = share(count);
        let mut gen_args = vec![
            bin.clone(),
            "gen".into(),
            "--dst".into(),
            addr::HOST_B.into(),
            "--port".into(),
            PORT.to_string(),
            "--size".into(),
            size_arg.clone(),
            "--flows".into(),
            (f1 - f0).to_string(),
            "--src-port".into(),
            (usize::from(SRC_PORT) + f0).to_string(),
            "--rate".into(),
            format!("{rate_q}"),
            // the datagrams of a batch share their time stamp and leave one after the
            // other: paced, a batch spans at most ~50 µs of the rate, so that a low rate
            // measures the path's latency and not the batch's length
            "--batch".into(),
            if rate_q > 0.0 {
                ((rate_q * 50e-6).ceil() as usize).clamp(1, 32).to_string()
            } else {
                "32".into()
            },
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
            count_q.to_string(),
            "--stream".into(),
            stream_base.wrapping_add(q as u32).to_string(),
            "--quiet".into(),
        ];
        let node = match &c.esp {
            Some((conf, seq)) => {
                // gwA's stand-in: ESP out of gwA's WAN port, AF_XDP
                gen_args.extend(
                    [
                        "--io",
                        "xdp",
                        "--iface",
                        "wan0",
                        "--src",
                        addr::HOST_A,
                        "--esp-seq-start",
                        &seq.get().to_string(),
                        "--esp-config",
                    ]
                    .map(String::from),
                );
                gen_args.push(conf.to_string_lossy().into_owned());
                Node::GwA
            }
            None => {
                gen_args.extend(["--io".into(), o.gen_io.clone()]);
                if o.gen_io == "xdp" {
                    gen_args.extend([
                        "--iface".into(),
                        "eth0".into(),
                        "--queue".into(),
                        q.to_string(),
                    ]);
                }
                Node::HostA
            }
        };
        procs.push(lab.spawn(node, &format!("gen{q}-{tag}"), &gen_args)?);
    }
    for g in &procs {
        wait(o, lab, g, Duration::from_secs_f64(o.seconds * 3.0 + 10.0))?;
    }
    wait(o, lab, &sink, Duration::from_secs_f64(o.seconds + 15.0))?;
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let (mut sent, mut offered_pps) = (0, 0.0);
    for g in &procs {
        let gj = last_json(&g.stdout_text())
            .ok_or_else(|| err!("generator printed no result: {}", g.stderr_tail(5)))?;
        sent += n(&gj, "sent");
        offered_pps += gj["pps"].as_f64().unwrap_or(0.0);
    }
    let sj = last_json(&sink.stdout_text())
        .ok_or_else(|| err!("sink printed no result: {}", sink.stderr_tail(5)))?;
    if let Some((_, seq)) = &c.esp {
        // sends that failed also took a number: leave room
        seq.set(seq.get() + sent + 65_536);
    }
    let received = n(&sj, "received");
    Ok(Trial {
        rate,
        sent,
        received,
        loss_pct: 100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64,
        reordered: n(&sj, "reordered"),
        corrupt: n(&sj, "corrupt"),
        offered_pps,
        latency: sj["latency_ns"].clone(),
    })
}

/// Binary search in `[lo, hi]` for the highest rate whose loss is at most `max_loss` %.
#[allow(clippy::too_many_arguments)]
fn search(
    o: &NdrOptions,
    lab: &Lab,
    c: &Case,
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
        let t = trial(o, lab, c, size, r, &format!("{label}-{i}"))?;
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

/// The cases of one run: `plain` once, then per worker count `bypass` and every algorithm ×
/// SA count of `ipsec` and `decap`.
fn cases(o: &NdrOptions) -> Result<Vec<Case>> {
    let mut out = vec![];
    for m in &o.modes {
        if !matches!(m.as_str(), "plain" | "bypass" | "ipsec" | "decap") {
            return Err(err!("mode {m}: plain, bypass, ipsec or decap"));
        }
    }
    let has = |m: &str| o.modes.iter().any(|x| x == m);
    if has("plain") {
        out.push(Case {
            mode: "plain".into(),
            alg: None,
            workers: 0,
            sas: 0,
            flows: o.flows,
            esp: None,
        });
    }
    for &workers in &o.workers {
        if has("bypass") {
            out.push(Case {
                mode: "bypass".into(),
                alg: None,
                workers,
                sas: 0,
                flows: o.flows,
                esp: None,
            });
        }
        for mode in ["ipsec", "decap"] {
            if !has(mode) {
                continue;
            }
            for &alg in &o.algs {
                for &sas in &o.sas {
                    out.push(Case {
                        mode: format!("{mode}-{}", alg.name()),
                        alg: Some(alg),
                        workers,
                        sas,
                        // every SA gets at least one flow
                        flows: o.flows.max(sas as u16),
                        esp: None,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The two gateways' configurations for a case (`None` for plain forwarding).
fn pair_for(c: &Case, cpus: usize) -> Option<Pair> {
    let w = c.workers.max(1);
    let mut p = Pair::new(PairOptions {
        alg: c.alg.unwrap_or(Alg::AesGcm128),
        queues: (0..w as u16).collect(),
        ..PairOptions::default()
    });
    match (c.mode.as_str(), c.alg) {
        ("plain", _) => return None,
        ("bypass", _) => p.port_policy("pktgen", "udp", PORT, Action::Bypass),
        _ => spread_sas(&mut p, c.sas, usize::from(c.flows)),
    }
    if w > 1 {
        // veth spreads flows over its RX queues only with native XDP (NAPI per queue)
        for g in [&mut p.a, &mut p.b] {
            g.xdp_mode = "driver".into();
            g.cores = (cpus.saturating_sub(w)..cpus).collect();
        }
    }
    Some(p)
}

/// Run every search; print a table, write JSON.
pub fn run(o: &NdrOptions) -> Result<Vec<Result1>> {
    let xsecd =
        std::fs::canonicalize(&o.xsecd).map_err(|e| err!("--xsecd {}: {e}", o.xsecd.display()))?;
    if !o.pktgen.is_file() {
        return Err(err!("--pktgen {}: not found", o.pktgen.display()));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &w in &o.workers {
        if w == 0 || w > cpus {
            return Err(err!("--workers {w}: 1 to {cpus} (one core each)"));
        }
    }
    for &n in &o.sas {
        if n == 0 || n > 4096 || usize::from(SRC_PORT) + n > 65_535 {
            return Err(err!("--sas {n}: 1 to 4096"));
        }
    }
    let cases = cases(o)?;
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    let mut results = vec![];
    // one topology per veth queue count (= workers): a worker per RX queue
    let mut lab: Option<(usize, Lab)> = None;
    for c in &cases {
        let q = c.workers.max(1);
        if lab.as_ref().is_none_or(|(n, _)| *n != q) {
            drop(lab.take());
            let l = Lab::up(TopoOptions::new(&o.prefix).queues(q as u16))?;
            l.warm_neighbours()?;
            lab = Some((q, l));
        }
        let Some((_, lab)) = lab.as_ref() else {
            continue;
        };
        let mut c = c.clone();
        let daemons = match pair_for(&c, cpus) {
            Some(p) if c.mode.starts_with("decap-") => {
                let conf = lab.write_file("ndr-gwA-standin.toml", p.a.to_toml())?;
                c.esp = Some((conf, std::cell::Cell::new(1)));
                vec![lab.start_xsecd(Node::GwB, &xsecd, &p.b.to_toml(), Duration::from_secs(30))?]
            }
            Some(mut p)
                if o.per_worker && c.mode.starts_with("ipsec-") && c.sas == 1 && c.workers > 1 =>
            {
                let batches =
                    crate::capacity::per_worker_sas(&mut p, c.workers, usize::from(c.flows));
                let ds = start_daemons(lab, &xsecd, &p)?;
                for (d, batch) in ds.iter().zip(batches) {
                    let file = lab.write_file(&format!("batch-{}.json", d.node.suffix()), batch)?;
                    let mut cmd = std::process::Command::new(xsecd.with_file_name("xsecctl"));
                    cmd.arg("--socket")
                        .arg(&d.control)
                        .arg("batch")
                        .arg(&file)
                        .args(["--client", "bench"]);
                    let out = crate::procs::run(cmd)?;
                    if !out.ok() {
                        for d in &ds {
                            let _ = lab.stop_xsecd(d);
                        }
                        return Err(err!("xsecctl batch {}: {out}", file.display()));
                    }
                }
                // per-worker SAs: `…-int-<alg>-perworker-ndrpdr`
                c.mode = format!("{}-perworker", c.mode);
                ds
            }
            Some(p) => start_daemons(lab, &xsecd, &p)?,
            None => vec![],
        };
        let c = &c;
        let worker_counters = || -> Value {
            let Some(st) = daemons.first().and_then(|d| lab.stats(d).ok()) else {
                return Value::Null;
            };
            let ws = st.0["workers"].as_array().cloned().unwrap_or_default();
            Value::Array(
                ws.iter()
                    .map(|w| {
                        json!({"rx_prot": w["rx_prot"], "rx_unprot": w["rx_unprot"],
                               "handoff_tx": w["handoff_tx"], "handoff_drop": w["handoff_drop"]})
                    })
                    .collect(),
            )
        };
        let r = (|| -> Result<()> {
            for &size in &o.sizes {
                let name = test_name(&c.mode, size, c.workers, c.sas);
                println!("{name}:");
                let tag = c.tag(size);
                let mut trials = vec![];
                let max = trial(o, lab, c, size, 0.0, &format!("{tag}-max"))?;
                let top = max.offered_pps;
                println!(
                    "    unpaced: offered {:.1} kpps, received {:.1} kpps",
                    top / 1e3,
                    max.received as f64 / o.seconds / 1e3
                );
                trials.push(max);
                let pdr = search(
                    o,
                    lab,
                    c,
                    size,
                    0.0,
                    top,
                    o.pdr_loss_pct,
                    &format!("{tag}-pdr"),
                    &mut trials,
                )?;
                let ndr = search(
                    o,
                    lab,
                    c,
                    size,
                    0.0,
                    pdr.max(top * o.precision),
                    0.0,
                    &format!("{tag}-ndr"),
                    &mut trials,
                )?;
                let half = trial(o, lab, c, size, ndr / 2.0, &format!("{tag}-lat"))?;
                let low = trial(o, lab, c, size, ndr * 0.1, &format!("{tag}-lat10"))?;
                let high = trial(o, lab, c, size, ndr * 0.9, &format!("{tag}-lat90"))?;
                println!(
                    "    NDR {:.1} kpps, PDR {:.1} kpps; at NDR/2: latency {}",
                    ndr / 1e3,
                    pdr / 1e3,
                    half.latency
                );
                let ws = worker_counters();
                if !ws.is_null() {
                    println!(
                        "    {} workers (cumulative): {ws}",
                        daemons[0].node.suffix()
                    );
                }
                results.push(Result1 {
                    name,
                    mode: c.mode.clone(),
                    workers: c.workers,
                    sas: c.sas,
                    size,
                    max_offered: top,
                    ndr,
                    pdr,
                    latency_half_ndr: half.latency.clone(),
                    latency_10_90: [low.latency.clone(), high.latency.clone()],
                    trials,
                    worker_counters: ws,
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
            "options": {"seconds": o.seconds, "precision": o.precision, "pdr_loss_pct": o.pdr_loss_pct, "flows": o.flows, "generator_io": o.gen_io, "sink_io": o.sink_io},
            "results": results.iter().map(|r| json!({
                "name": r.name, "mode": r.mode, "workers": r.workers, "sas": r.sas, "size": size_tag(r.size),
                "max_offered_pps": r.max_offered, "ndr_pps": r.ndr, "pdr_pps": r.pdr,
                "latency_half_ndr_ns": r.latency_half_ndr,
                "latency_10pct_ndr_ns": r.latency_10_90[0],
                "latency_90pct_ndr_ns": r.latency_10_90[1],
                "worker_counters": r.worker_counters,
                "trials": r.trials.iter().map(|t| json!({
                    "rate": t.rate, "sent": t.sent, "received": t.received, "loss_pct": t.loss_pct,
                    "offered_pps": t.offered_pps, "reordered": t.reordered, "corrupt": t.corrupt,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        crate::write_json(path, &doc)?;
    }
    Ok(results)
}

/// The results with each mode's NDR as a ratio to `plain`'s at the same size.
pub fn table(results: &[Result1]) -> String {
    let mut s = String::from(
        "| test | NDR kpps | PDR kpps | NDR / plain | p50 / p99 / p99.9 at NDR/2 (µs) | p50 / p99 at 10 % / 90 % of NDR (µs) |\n|---|---|---|---|---|---|\n",
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
        let us = |l: &Value, k: &str| {
            l[k].as_f64()
                .map_or("-".into(), |v| format!("{:.0}", v / 1e3))
        };
        let (l, lo, hi) = (
            &r.latency_half_ndr,
            &r.latency_10_90[0],
            &r.latency_10_90[1],
        );
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {ratio} | {} / {} / {} | {} / {} , {} / {} |\n",
            r.name,
            r.ndr / 1e3,
            r.pdr / 1e3,
            us(l, "p50"),
            us(l, "p99"),
            us(l, "p999"),
            us(lo, "p50"),
            us(lo, "p99"),
            us(hi, "p50"),
            us(hi, "p99"),
        ));
    }
    s
}
