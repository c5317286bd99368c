//! `xsec-lab vs-dpdk`: xsec's worker capacity against DPDK's ipsec-secgw **in the same
//! minutes**. This machine's speed drifts by 15-25 % between minutes, so a ratio against a
//! figure from another run is not a comparison. Each cell (algorithm, size) is measured A/B
//! then B/A on alternate repetitions: `xsec-lab capacity` (xsecd's replay backend: pcap
//! frames in, a null sink out, one worker on the last core) and the baseline's
//! `secgw/run_inproc.sh` (ipsec-secgw: net_pcap infinite_rx in, net_null out, one lcore on
//! core 1), both under the baseline's `boost` (its own autogroup at nice -20, which this
//! command enters once for both). Each repetition gives one paired ratio per direction; the
//! report is their minimum, median and maximum (JSON under `docs/bench/`).
//!
//! The baseline (`../shared/baselines/dpdk`, its README) is installed and built on first use
//! (`01_install.sh`, `secgw/build_secgw.sh`: Debian's DPDK 22.11 and intel-ipsec-mb).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};

use crate::bench::median;
use crate::capacity::{self, CapacityOptions};
use crate::config::Alg;
use crate::sysstat;
use crate::{Result, err};

/// Options of `xsec-lab vs-dpdk`.
#[derive(Debug, Clone)]
pub struct VersusOptions {
    pub xsecd: PathBuf,
    /// The DPDK baseline folder (`secgw/`, `boost`, `01_install.sh`).
    pub baseline: PathBuf,
    pub reps: usize,
    pub sizes: Vec<usize>,
    pub algs: Vec<Alg>,
    /// Measurement window of each run, after its warm-up.
    pub seconds: f64,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
    /// Worker capacity (ipsec-secgw against `capacity`).
    pub capacity: bool,
    /// Cycles per packet without I/O (librte_ipsec cpu-crypto, bursts of 32, against the
    /// engine's burst bench at 32), `rounds` rounds of the burst bench per repetition.
    pub cycles: bool,
    pub rounds: usize,
}

/// Who runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Xsec,
    Dpdk,
}

/// The order of the two runs of a cell in repetition `rep` (from 1): xsec first on odd
/// repetitions, DPDK first on even ones, so that neither always runs in the warmer minute.
pub fn order(rep: usize) -> [Side; 2] {
    if rep % 2 == 1 {
        [Side::Xsec, Side::Dpdk]
    } else {
        [Side::Dpdk, Side::Xsec]
    }
}

/// The baseline's name of an algorithm: `gcm` (AES-128-GCM) or `cbc` (AES-128-CBC +
/// HMAC-SHA1-96); the others have no baseline.
pub fn dpdk_alg(a: Alg) -> Option<&'static str> {
    match a {
        Alg::AesGcm128 => Some("gcm"),
        Alg::AesCbc128Sha1 => Some("cbc"),
        _ => None,
    }
}

/// `run_inproc.sh`'s CSV lines for `size`: (direction as xsec names it, Mpps = the output
/// port's median packets per second). Lines that are not results are skipped.
pub fn parse_secgw(text: &str, size: usize) -> Vec<(&'static str, f64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            if f.len() < 7 || f[2].parse::<usize>().ok() != Some(size) {
                return None;
            }
            let dir = match f[1] {
                "out" => "encrypt",
                "in" => "decrypt",
                _ => return None,
            };
            let pps: f64 = f[6].parse().ok()?;
            Some((dir, pps / 1e6))
        })
        .collect()
}

/// The burst bench's tables: (algorithm, size, "encrypt" | "decrypt", cycles per packet at
/// burst 32) for every row.
pub fn parse_burst(text: &str) -> Vec<(String, usize, &'static str, f64)> {
    let mut dir = None;
    let mut out = vec![];
    for l in text.lines() {
        let cells: Vec<&str> = l
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.first() == Some(&"algorithm") {
            dir = Some(if l.contains("decap") {
                "decrypt"
            } else {
                "encrypt"
            });
            continue;
        }
        let (Some(d), true) = (dir, cells.len() >= 6) else {
            continue;
        };
        let (Ok(size), Ok(c)) = (cells[1].parse::<usize>(), cells[5].parse::<f64>()) else {
            continue;
        };
        out.push((cells[0].to_owned(), size, d, c));
    }
    out
}

/// librte_ipsec's bench CSV (its header names the columns): (algorithm as xsec names it,
/// size, direction, cycles per packet) of the cpu-crypto rows without ESN that passed their
/// round trip, AES-GCM from the aesni_gcm PMD and CBC+HMAC from aesni_mb.
pub fn parse_lib_bench(csv: &str) -> Vec<(&'static str, usize, &'static str, f64)> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(pmd), Some(alg), Some(esn), Some(size), Some(mode), Some(ot), Some(it), Some(ok)) = (
        at("pmd"),
        at("alg"),
        at("esn"),
        at("size"),
        at("mode"),
        at("out_total"),
        at("in_total"),
        at("ok"),
    ) else {
        return vec![];
    };
    let mut out = vec![];
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() < cols.len() || f[mode] != "cpu" || f[esn] != "0" || f[ok] != "1" {
            continue;
        }
        let name = match (f[alg], f[pmd]) {
            ("aes-128-gcm", p) if p.starts_with("crypto_aesni_gcm") => "aes128gcm16",
            ("aes-128-cbc+sha1-hmac-96", p) if p.starts_with("crypto_aesni_mb") => "aes128-sha1",
            _ => continue,
        };
        let Ok(sz) = f[size].parse::<usize>() else {
            continue;
        };
        for (dir, col) in [("encrypt", ot), ("decrypt", it)] {
            if let Ok(c) = f[col].parse::<f64>() {
                out.push((name, sz, dir, c));
            }
        }
    }
    out
}

/// One paired measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub alg: &'static str,
    pub size: usize,
    pub dir: &'static str,
    pub rep: usize,
    pub xsec_first: bool,
    pub xsec: f64,
    pub dpdk: f64,
    /// Counters xsec reported that must stay 0 (drops...).
    pub problems: Vec<String>,
}

impl Pair {
    /// The pair of repetition `rep` (its order from [`order`]).
    pub fn of(
        alg: Alg,
        size: usize,
        dir: &'static str,
        rep: usize,
        (xsec, dpdk): (f64, f64),
        problems: Vec<String>,
    ) -> Pair {
        Pair {
            alg: alg.name(),
            size,
            dir,
            rep,
            xsec_first: order(rep)[0] == Side::Xsec,
            xsec,
            dpdk,
            problems,
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.dpdk > 0.0 {
            self.xsec / self.dpdk
        } else {
            f64::NAN
        }
    }
}

/// Per (algorithm, size, direction): the paired ratios' minimum, median and maximum and each
/// side's median (in `unit`), as a Markdown table and JSON.
pub fn summarize(pairs: &[Pair], unit: &str) -> (String, Value) {
    let mut keys: Vec<(&str, usize, &str)> = vec![];
    for p in pairs {
        if !keys.contains(&(p.alg, p.size, p.dir)) {
            keys.push((p.alg, p.size, p.dir));
        }
    }
    let mut text = format!(
        "| algorithm | size | direction | xsec ÷ DPDK median | min | max | xsec {unit} (median) | DPDK {unit} (median) | pairs |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = vec![];
    for (alg, size, dir) in keys {
        let of: Vec<&Pair> = pairs
            .iter()
            .filter(|p| p.alg == alg && p.size == size && p.dir == dir)
            .collect();
        let ratios: Vec<f64> = of
            .iter()
            .map(|p| p.ratio())
            .filter(|r| r.is_finite())
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let med = median(&ratios);
        let xm = median(of.iter().map(|p| p.xsec));
        let dm = median(of.iter().map(|p| p.dpdk));
        text.push_str(&format!(
            "| {alg} | {size} | {dir} | {med:.2} | {lo:.2} | {hi:.2} | {xm:.2} | {dm:.2} | {} |\n",
            ratios.len()
        ));
        rows.push(json!({
            "alg": alg, "size": size, "dir": dir, "pairs": ratios.len(),
            "ratio_median": med, "ratio_min": lo, "ratio_max": hi,
            "xsec_median": xm, "dpdk_median": dm, "unit": unit,
        }));
    }
    (text, Value::Array(rows))
}

/// The baseline's secgw binary, installed and built if missing.
fn ensure_baseline(o: &VersusOptions) -> Result<()> {
    let work = std::env::var("WORK").unwrap_or_else(|_| "/tmp/dpdk-base".into());
    let secgw = Path::new(&work).join("secgw-patched/build/ipsec-secgw");
    if secgw.exists() {
        return Ok(());
    }
    println!("vs-dpdk: installing and building the DPDK baseline (once)");
    for script in ["01_install.sh", "secgw/build_secgw.sh"] {
        let st = Command::new("bash")
            .arg(o.baseline.join(script))
            .status()
            .map_err(|e| err!("{script}: {e}"))?;
        if !st.success() {
            return Err(err!("{}: {st}", o.baseline.join(script).display()));
        }
    }
    Ok(())
}

/// One DPDK run of a cell: (encrypt, decrypt) Mpps.
fn dpdk_cell(o: &VersusOptions, alg: &str, size: usize, rep: usize) -> Result<(f64, f64)> {
    let script = o.baseline.join("secgw/run_inproc.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("ALG", alg)
        .env("DIRS", "out in")
        .env("SIZES", size.to_string())
        .env("REP", rep.to_string())
        .env("WINDOW", format!("{}", o.seconds.round().max(1.0)))
        .output()
        .map_err(|e| err!("{}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let got = parse_secgw(&text, size);
    let find = |d: &str| got.iter().find(|(x, _)| *x == d).map(|(_, m)| *m);
    match (find("encrypt"), find("decrypt")) {
        (Some(e), Some(d)) if e > 0.0 && d > 0.0 => Ok((e, d)),
        _ => Err(err!(
            "ipsec-secgw {alg} {size} B gave no rates: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One xsec run of a cell: (encrypt, decrypt) Mpps and problems.
fn xsec_cell(o: &VersusOptions, alg: Alg, size: usize) -> Result<(f64, f64, Vec<String>)> {
    let trials = capacity::run(&CapacityOptions {
        xsecd: o.xsecd.clone(),
        seconds: o.seconds,
        sizes: vec![size],
        algs: vec![alg],
        workers: vec![1],
        sas: vec![1],
        flows: 64,
        repeat: 1,
        json: None,
        prefix: o.prefix.clone(),
        stop: o.stop.clone(),
        per_worker: false,
        policies: vec![1],
        site_sas: false,
    })?;
    let find = |d: &str| trials.iter().find(|t| t.dir == d).map(|t| t.mpps);
    let problems = trials
        .iter()
        .flat_map(|t| t.problems.iter().map(move |p| format!("{} {p}", t.dir)))
        .collect();
    match (find("encrypt"), find("decrypt")) {
        (Some(e), Some(d)) => Ok((e, d, problems)),
        _ => Err(err!(
            "xsec-lab capacity {} {size} B gave no rates",
            alg.name()
        )),
    }
}

/// The commit measured (`git rev-parse HEAD` here), if known.
fn commit() -> Option<String> {
    let o = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// One run of the engine's burst bench (built by cargo if needed) for `algs`.
fn xsec_cycles(o: &VersusOptions) -> Result<Vec<(String, usize, &'static str, f64)>> {
    let mut c = Command::new("cargo");
    c.args([
        "bench",
        "-q",
        "-p",
        "xsec-benches",
        "--bench",
        "burst",
        "--",
    ])
    .arg(o.rounds.to_string());
    for a in &o.algs {
        c.arg(a.name());
    }
    let out = c.output().map_err(|e| err!("cargo bench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = parse_burst(&text);
    if !out.status.success() || rows.is_empty() {
        return Err(err!(
            "the burst bench gave no rows ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(rows)
}

/// One run of librte_ipsec's bench (every algorithm, mode and size, one repetition).
fn dpdk_cycles(o: &VersusOptions) -> Result<Vec<(&'static str, usize, &'static str, f64)>> {
    let script = o.baseline.join("04_ipsec_lib_bench.sh");
    let st = Command::new("bash")
        .arg(&script)
        .args(["1", "300000"])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| err!("{}: {e}", script.display()))?;
    let work = std::env::var("WORK").unwrap_or_else(|_| "/tmp/dpdk-base".into());
    let results = std::env::var("RESULTS").unwrap_or_else(|_| format!("{work}/results"));
    let raw = Path::new(&results).join("ipsec_lib_bench_raw.csv");
    let csv = std::fs::read_to_string(&raw).map_err(|e| err!("{}: {e}", raw.display()))?;
    let rows = parse_lib_bench(&csv);
    if !st.success() || rows.is_empty() {
        return Err(err!(
            "{}: {st}, no rows in {}",
            script.display(),
            raw.display()
        ));
    }
    Ok(rows)
}

/// Worker capacity, every cell `reps` times, interleaved.
fn run_capacity(o: &VersusOptions) -> Result<Vec<Pair>> {
    let mut pairs = vec![];
    for rep in 1..=o.reps {
        for &alg in &o.algs {
            for &size in &o.sizes {
                let mut x = None;
                let mut d = None;
                for side in order(rep) {
                    if o.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(err!("interrupted"));
                    }
                    match side {
                        Side::Xsec => x = Some(xsec_cell(o, alg, size)?),
                        Side::Dpdk => {
                            d = Some(dpdk_cell(o, dpdk_alg(alg).unwrap_or("gcm"), size, rep)?)
                        }
                    }
                }
                let (Some((xe, xd, problems)), Some((de, dd))) = (x, d) else {
                    continue;
                };
                for (dir, xm, dm) in [("encrypt", xe, de), ("decrypt", xd, dd)] {
                    let mine = problems
                        .iter()
                        .filter(|s| s.starts_with(dir))
                        .cloned()
                        .collect();
                    let p = Pair::of(alg, size, dir, rep, (xm, dm), mine);
                    println!(
                        "capacity rep {rep} {} {size} B {dir}: xsec {xm:.3} Mpps, DPDK {dm:.3} Mpps, ratio {:.2}",
                        alg.name(),
                        p.ratio(),
                    );
                    pairs.push(p);
                }
            }
        }
    }
    Ok(pairs)
}

/// Cycles per packet at bursts of 32, `reps` times, interleaved.
fn run_cycles(o: &VersusOptions) -> Result<Vec<Pair>> {
    let mut pairs = vec![];
    for rep in 1..=o.reps {
        let mut x = vec![];
        let mut d = vec![];
        for side in order(rep) {
            if o.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(err!("interrupted"));
            }
            match side {
                Side::Xsec => x = xsec_cycles(o)?,
                Side::Dpdk => d = dpdk_cycles(o)?,
            }
        }
        for &alg in &o.algs {
            for &size in &o.sizes {
                for dir in ["encrypt", "decrypt"] {
                    let xc = x
                        .iter()
                        .find(|r| r.0 == alg.name() && r.1 == size && r.2 == dir)
                        .map(|r| r.3);
                    let dc = d
                        .iter()
                        .find(|r| r.0 == alg.name() && r.1 == size && r.2 == dir)
                        .map(|r| r.3);
                    let (Some(xc), Some(dc)) = (xc, dc) else {
                        continue;
                    };
                    let p = Pair::of(alg, size, dir, rep, (xc, dc), vec![]);
                    println!(
                        "cycles rep {rep} {} {size} B {dir}: xsec {xc:.0}, DPDK {dc:.0} cycles/packet, ratio {:.2}",
                        alg.name(),
                        p.ratio()
                    );
                    pairs.push(p);
                }
            }
        }
    }
    Ok(pairs)
}

fn pairs_json(pairs: &[Pair]) -> Vec<Value> {
    pairs
        .iter()
        .map(|p| {
            json!({
                "alg": p.alg, "size": p.size, "dir": p.dir, "rep": p.rep,
                "xsec_first": p.xsec_first, "xsec": p.xsec, "dpdk": p.dpdk,
                "ratio": p.ratio(), "problems": p.problems,
            })
        })
        .collect()
}

/// Run the comparison: every cell `reps` times, interleaved; the capacity and cycle pairs.
pub fn run(o: &VersusOptions) -> Result<(Vec<Pair>, Vec<Pair>)> {
    if o.reps < 1 {
        return Err(err!("--reps: at least 1 (5 for a figure worth quoting)"));
    }
    for &a in &o.algs {
        if dpdk_alg(a).is_none() {
            return Err(err!(
                "--algs {}: the baseline has aes128gcm16 and aes128-sha1 only",
                a.name()
            ));
        }
    }
    ensure_baseline(o)?;
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    let cap = if o.capacity { run_capacity(o)? } else { vec![] };
    let cyc = if o.cycles { run_cycles(o)? } else { vec![] };
    let (cap_text, cap_summary) = summarize(&cap, "Mpps");
    let (cyc_text, cyc_summary) = summarize(&cyc, "cycles");
    if o.capacity {
        println!("\nworker capacity (higher is better for xsec):\n{cap_text}");
    }
    if o.cycles {
        println!("\ncycles per packet, bursts of 32 (lower is better for xsec):\n{cyc_text}");
    }
    if let Some(path) = &o.json {
        let doc = json!({
            "what": "xsec against DPDK 22.11 in the same minutes, each cell A/B then B/A on alternate repetitions, both under the baseline's boost. capacity: xsec-lab capacity (xsecd replay backend, one worker) vs ipsec-secgw (net_pcap infinite_rx -> net_null, librte_ipsec, one lcore), Mpps. cycles: the engine's burst bench at burst 32 vs librte_ipsec cpu-crypto at burst 32 (prepare + crypto + process), TSC cycles per packet",
            "commit": commit(),
            "cpu": {
                "model": info.model,
                "cpus": info.cpus,
                "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
            },
            "options": {"reps": o.reps, "seconds": o.seconds, "rounds": o.rounds, "sizes": o.sizes,
                        "algs": o.algs.iter().map(|a| a.name()).collect::<Vec<_>>()},
            "capacity": {"summary": cap_summary, "pairs": pairs_json(&cap)},
            "cycles": {"summary": cyc_summary, "pairs": pairs_json(&cyc)},
        });
        crate::write_json(path, &doc)?;
    }
    Ok((cap, cyc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_alternate_who_goes_first() {
        assert_eq!(order(1), [Side::Xsec, Side::Dpdk]);
        assert_eq!(order(2), [Side::Dpdk, Side::Xsec]);
        let firsts: Vec<Side> = (1..=5).map(|r| order(r)[0]).collect();
        assert_eq!(firsts.iter().filter(|s| **s == Side::Xsec).count(), 3);
    }

    #[test]
    fn secgw_csv_lines_become_rates() {
        let out = "## not a result\n\
            tag,dir,size,rep,window_s,rx_pps_med,tx_pps_med,tx_pps_min_1s\n\
            gcm_crypto_aesni_gcm,out,64,1,5.0,5500000,5490000,5400000,5600000,5480000,0,0,0,12,1.0\n\
            gcm_crypto_aesni_gcm,in,64,1,5.0,5300000,5220000,5100000,5300000,5200000,0,0,0,9,1.0\n\
            gcm_crypto_aesni_gcm,out,512,1,5.0,1,3210000,1,1,1,0,0,0,0,1.0\n";
        assert_eq!(
            parse_secgw(out, 64),
            vec![("encrypt", 5.49), ("decrypt", 5.22)]
        );
        assert_eq!(parse_secgw(out, 512), vec![("encrypt", 3.21)]);
        assert!(parse_secgw(out, 1420).is_empty());
        assert_eq!(dpdk_alg(Alg::AesGcm128), Some("gcm"));
        assert_eq!(dpdk_alg(Alg::AesCbc128Sha1), Some("cbc"));
        assert_eq!(dpdk_alg(Alg::Chacha20Poly1305), None);
    }

    #[test]
    fn burst_bench_and_lib_bench_rows_become_cycles() {
        let burst = "CPU: x\n\
            | algorithm | size | one at a time | burst 1 | burst 8 | burst 32 | burst 64 | ratio at 32 |\n\
            |---|---|---|---|---|---|---|---|\n\
            | aes128gcm16 | 64 | 300 | 290 | 250 | 241 | 240 | 0.80 |\n\
            | aes128gcm16 | imix | 400 | 390 | 350 | 341 | 340 | 0.85 |\n\
            \n| algorithm | size | decap one at a time | burst 1 | burst 8 | burst 32 | burst 64 | ratio at 32 |\n\
            | aes128gcm16 | 64 | 280 | 270 | 230 | 200 | 199 | 0.71 |\n";
        assert_eq!(
            parse_burst(burst),
            vec![
                ("aes128gcm16".to_owned(), 64, "encrypt", 241.0),
                ("aes128gcm16".to_owned(), 64, "decrypt", 200.0)
            ]
        );
        let csv = "rep,pmd,alg,esn,size,mode,burst,pkts,out_ops,out_prepare,out_crypto,out_process,out_total,in_ops,in_prepare,in_crypto,in_process,in_total,out_mpps,in_mpps,roundtrip_cyc,ok\n\
            1,crypto_aesni_gcm0,aes-128-gcm,0,64,cpu,32,300000,1,2,3,4,221.0,1,2,3,4,230.5,9,9,9,1\n\
            1,crypto_aesni_gcm0,aes-128-gcm,1,64,cpu,32,300000,1,2,3,4,999.0,1,2,3,4,999.0,9,9,9,1\n\
            1,crypto_aesni_gcm0,aes-128-gcm,0,64,lookaside,32,300000,1,2,3,4,888.0,1,2,3,4,888.0,9,9,9,1\n\
            1,crypto_aesni_mb0,aes-128-gcm,0,64,cpu,32,300000,1,2,3,4,777.0,1,2,3,4,777.0,9,9,9,1\n\
            1,crypto_aesni_mb0,aes-128-cbc+sha1-hmac-96,0,1420,cpu,32,300000,1,2,3,4,2012.0,1,2,3,4,1900.0,9,9,9,1\n\
            1,crypto_aesni_mb0,aes-128-cbc+sha1-hmac-96,0,512,cpu,32,300000,1,2,3,4,1.0,1,2,3,4,1.0,9,9,9,0\n";
        assert_eq!(
            parse_lib_bench(csv),
            vec![
                ("aes128gcm16", 64, "encrypt", 221.0),
                ("aes128gcm16", 64, "decrypt", 230.5),
                ("aes128-sha1", 1420, "encrypt", 2012.0),
                ("aes128-sha1", 1420, "decrypt", 1900.0),
            ]
        );
    }

    #[test]
    fn the_summary_is_of_paired_ratios_not_of_medians() {
        let p = |rep, x: f64, d: f64| Pair {
            alg: "aes128gcm16",
            size: 64,
            dir: "encrypt",
            rep,
            xsec_first: rep % 2 == 1,
            xsec: x,
            dpdk: d,
            problems: vec![],
        };
        // the machine slows down between repetitions: the ratios stay 1.2
        let pairs = vec![p(1, 6.0, 5.0), p(2, 4.8, 4.0), p(3, 3.6, 3.0)];
        let (text, v) = summarize(&pairs, "Mpps");
        let row = &v[0];
        assert!((row["ratio_median"].as_f64().unwrap() - 1.2).abs() < 1e-9);
        assert!((row["ratio_min"].as_f64().unwrap() - 1.2).abs() < 1e-9);
        assert!((row["ratio_max"].as_f64().unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(row["pairs"], 3);
        assert!(
            text.contains("| aes128gcm16 | 64 | encrypt | 1.20 | 1.20 | 1.20 | 4.80 | 4.00 | 3 |"),
            "{text}"
        );
        // a DPDK run that gave nothing is not a ratio
        let (_, v) = summarize(&[p(1, 6.0, 0.0), p(2, 5.0, 4.0)], "Mpps");
        assert_eq!(v[0]["pairs"], 1);
    }
}
