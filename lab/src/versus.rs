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
//!
//! `--what memory` compares the memory per SA instead: N inbound tunnel-mode SAs in xsec's
//! SAD (a child process's resident memory before and after, [`sad_memory`]) against the same
//! N SAs built on librte_ipsec and cryptodev sessions (`lab/dpdk/sa_memory.c`, DPDK's heap
//! statistics before and after). Memory does not drift with the machine's speed; the
//! repetitions show that it does not drift at all.

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
    /// Memory per SA, with this many SAs on each side.
    pub memory: Option<usize>,
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

/// xsec's SAD memory: `n` inbound ESP tunnel-mode SAs of `alg` (IPv4, replay window 64, no
/// ESN, each with its own key, expanded as control expands it) inserted into a [`SaTable`]
/// sized for them; the resident memory this process gained, in bytes per SA. Run it in a
/// process of its own (`xsec-lab sa-memory`), so that nothing else allocates meanwhile.
///
/// [`SaTable`]: xsec_dataplane::sa::SaTable
pub fn sad_memory(alg: Alg, n: usize) -> Result<f64> {
    use std::net::IpAddr;
    use xsec_dataplane::Timestamp;
    use xsec_dataplane::crypto::{AuthAlg, EncAlg};
    use xsec_dataplane::sa::{Sa, SaConfig, SaTable};
    use xsec_dataplane::spd::Direction;

    let (enc, auth) = match alg {
        Alg::AesGcm128 => (EncAlg::AesGcm128, AuthAlg::None),
        Alg::AesGcm256 => (EncAlg::AesGcm256, AuthAlg::None),
        Alg::AesCbc128Sha1 => (EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
        Alg::AesCbc128Sha256 => (EncAlg::AesCbc128, AuthAlg::HmacSha256_128),
        Alg::Chacha20Poly1305 => (EncAlg::ChaCha20Poly1305, AuthAlg::None),
    };
    if n == 0 || n > u32::MAX as usize / 2 {
        return Err(err!("--sas {n}: 1 to {}", u32::MAX / 2));
    }
    let me = std::process::id();
    let before = crate::sysstat::rss_kib(me)?;
    let mut table = SaTable::with_capacity(n);
    let mut rng = fastrand::Rng::with_seed(0x5a_d0);
    for i in 0..n {
        let enc_key: Vec<u8> = (0..alg.enc_key_len()).map(|_| rng.u8(..)).collect();
        let auth_key: Vec<u8> = (0..alg.auth_key_len()).map(|_| rng.u8(..)).collect();
        let mut cfg = SaConfig::tunnel(
            0x1000 + i as u32,
            Direction::Inbound,
            IpAddr::from([192, 0, 2, 2]),
            IpAddr::from([192, 0, 2, 1]),
            enc,
            &enc_key,
            auth,
            &auth_key,
        );
        cfg.replay_window = 64;
        let sa = Sa::new(&cfg, Timestamp::ZERO).map_err(|e| err!("SA {i}: {e}"))?;
        table.insert(sa).map_err(|e| err!("SA {i}: {e}"))?;
    }
    let after = crate::sysstat::rss_kib(me)?;
    if table.len() != n {
        return Err(err!("{} SAs in the table, {n} inserted", table.len()));
    }
    Ok(after.saturating_sub(before) as f64 * 1024.0 / n as f64)
}

/// `xsec-lab sa-memory` in a child process: xsec's bytes per SA.
fn xsec_memory(alg: Alg, n: usize) -> Result<f64> {
    let me = std::env::current_exe().map_err(|e| err!("this executable: {e}"))?;
    let out = Command::new(&me)
        .args(["sa-memory", "--alg", alg.name(), "--sas", &n.to_string()])
        .output()
        .map_err(|e| err!("{}: {e}", me.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("bytes_per_sa=").map(str::parse) {
        Some(Ok(b)) if out.status.success() => Ok(b),
        _ => Err(err!(
            "xsec-lab sa-memory {} {n}: {}{}",
            alg.name(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The memory probe's source, built against Debian's libdpdk into the baseline's work folder.
const SA_MEMORY_C: &str = include_str!("../dpdk/sa_memory.c");

/// The probe's CSV: (algorithm, bytes per SA) of each line with `n` SAs.
pub fn parse_sa_memory(text: &str, n: usize) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            if f.len() < 6 || f[1].parse::<usize>().ok() != Some(n) {
                return None;
            }
            Some((f[0].to_owned(), f[3].parse().ok()?))
        })
        .collect()
}

/// One run of the DPDK probe with `n` SAs of each algorithm: (algorithm, bytes per SA).
fn dpdk_memory(o: &VersusOptions, n: usize) -> Result<Vec<(String, f64)>> {
    let work = std::env::var("WORK").unwrap_or_else(|_| "/tmp/dpdk-base".into());
    let build = Path::new(&work).join("build");
    std::fs::create_dir_all(&build).map_err(|e| err!("{}: {e}", build.display()))?;
    let src = build.join("xsec_sa_memory.c");
    let bin = build.join("xsec_sa_memory");
    if std::fs::read_to_string(&src).ok().as_deref() != Some(SA_MEMORY_C) || !bin.exists() {
        std::fs::write(&src, SA_MEMORY_C).map_err(|e| err!("{}: {e}", src.display()))?;
        let cc = format!(
            "gcc -O2 -Wall -Wno-address-of-packed-member -DALLOW_EXPERIMENTAL_API \
             $(pkg-config --cflags libdpdk) -o '{}' '{}' $(pkg-config --libs libdpdk)",
            bin.display(),
            src.display()
        );
        let st = Command::new("sh")
            .args(["-c", &cc])
            .status()
            .map_err(|e| err!("gcc: {e}"))?;
        if !st.success() {
            let _ = std::fs::remove_file(&bin);
            return Err(err!("building {}: {st}", src.display()));
        }
    }
    // about 2.1 KB per SA on DPDK's side: hugepages for the larger of the two, and room
    let mb = (n * 2_500 / (1 << 20)).max(128) + 128;
    const NR: &str = "/proc/sys/vm/nr_hugepages";
    let reserved = std::fs::read_to_string(NR).ok();
    let out = Command::new("bash")
        .args([
            "-c",
            "source \"$1/env.sh\" && setup_hugepages >/dev/null && exec \"$2\" -l 1 $EAL_COMMON \
             -m \"$3\" --vdev crypto_aesni_gcm0 --vdev crypto_aesni_mb0 \
             --log-level=lib.eal:warning -- \"$4\"",
            "sa_memory",
        ])
        .arg(&o.baseline)
        .arg(&bin)
        .arg(mb.to_string())
        .arg(n.to_string())
        .env("NR_HUGEPAGES", (mb / 2 + 64).max(512).to_string())
        .output()
        .map_err(|e| err!("{}: {e}", bin.display()));
    // give back what a large run reserved beyond the baseline's usual 512 pages
    if let Some(r) = reserved
        && std::fs::read_to_string(NR).ok() != Some(r.clone())
    {
        let _ = std::fs::write(NR, r);
    }
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = parse_sa_memory(&text, n);
    if !out.status.success() || rows.is_empty() {
        return Err(err!(
            "{}: {}: {}{}",
            bin.display(),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(rows)
}

/// Repetition `rep`'s two runs, in [`order`]: xsec's result and DPDK's.
fn both<X, D>(
    o: &VersusOptions,
    rep: usize,
    mut xsec: impl FnMut() -> Result<X>,
    mut dpdk: impl FnMut() -> Result<D>,
) -> Result<(X, D)> {
    let (mut x, mut d) = (None, None);
    for side in order(rep) {
        if o.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(err!("interrupted"));
        }
        match side {
            Side::Xsec => x = Some(xsec()?),
            Side::Dpdk => d = Some(dpdk()?),
        }
    }
    x.zip(d)
        .ok_or_else(|| err!("repetition {rep}: a run is missing"))
}

/// Memory per SA, `reps` times, interleaved (size in the pairs: the number of SAs).
fn run_memory(o: &VersusOptions, n: usize) -> Result<Vec<Pair>> {
    let mut pairs = vec![];
    for rep in 1..=o.reps {
        let (x, d) = both(
            o,
            rep,
            || {
                o.algs
                    .iter()
                    .map(|&a| Ok((a, xsec_memory(a, n)?)))
                    .collect::<Result<Vec<_>>>()
            },
            || dpdk_memory(o, n),
        )?;
        for (alg, xb) in x {
            let Some(db) = d.iter().find(|r| r.0 == alg.name()).map(|r| r.1) else {
                continue;
            };
            let p = Pair::of(alg, n, "inbound", rep, (xb, db), vec![]);
            println!(
                "memory rep {rep} {} {n} SAs: xsec {xb:.0}, DPDK {db:.0} bytes per SA, ratio {:.2}",
                alg.name(),
                p.ratio()
            );
            pairs.push(p);
        }
    }
    Ok(pairs)
}

/// Worker capacity, every cell `reps` times, interleaved.
fn run_capacity(o: &VersusOptions) -> Result<Vec<Pair>> {
    let mut pairs = vec![];
    for rep in 1..=o.reps {
        for &alg in &o.algs {
            for &size in &o.sizes {
                let ((xe, xd, problems), (de, dd)) = both(
                    o,
                    rep,
                    || xsec_cell(o, alg, size),
                    || dpdk_cell(o, dpdk_alg(alg).unwrap_or("gcm"), size, rep),
                )?;
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
        let (x, d) = both(o, rep, || xsec_cycles(o), || dpdk_cycles(o))?;
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
    if o.memory == Some(0) {
        return Err(err!("--memory-sas: at least 1"));
    }
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
    let mem = match o.memory {
        Some(n) => run_memory(o, n)?,
        None => vec![],
    };
    let (cap_text, cap_summary) = summarize(&cap, "Mpps");
    let (cyc_text, cyc_summary) = summarize(&cyc, "cycles");
    let (mem_text, mem_summary) = summarize(&mem, "bytes/SA");
    if o.capacity {
        println!("\nworker capacity (higher is better for xsec):\n{cap_text}");
    }
    if o.cycles {
        println!("\ncycles per packet, bursts of 32 (lower is better for xsec):\n{cyc_text}");
    }
    if let Some(n) = o.memory {
        println!(
            "\nmemory per inbound SA with {n} SAs, size = SAs (lower is better for xsec; DPDK's \
             figure leaves out the application's own SA record):\n{mem_text}"
        );
    }
    if let Some(path) = &o.json {
        let doc = json!({
            "what": "xsec against DPDK 22.11 in the same minutes, each cell A/B then B/A on alternate repetitions, both under the baseline's boost. capacity: xsec-lab capacity (xsecd replay backend, one worker) vs ipsec-secgw (net_pcap infinite_rx -> net_null, librte_ipsec, one lcore), Mpps. cycles: the engine's burst bench at burst 32 vs librte_ipsec cpu-crypto at burst 32 (prepare + crypto + process), TSC cycles per packet. memory: bytes per inbound ESP tunnel SA (AES-128-GCM: aesni_gcm session; AES-128-CBC+HMAC-SHA1-96: aesni_mb), xsec: resident memory of a process building its SAD, DPDK: heap bytes of rte_ipsec_sa + cryptodev sessions (no application SA record); size = number of SAs",
            "commit": commit(),
            "cpu": {
                "model": info.model,
                "cpus": info.cpus,
                "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
            },
            "options": {"reps": o.reps, "seconds": o.seconds, "rounds": o.rounds, "sizes": o.sizes,
                        "algs": o.algs.iter().map(|a| a.name()).collect::<Vec<_>>(),
                        "memory_sas": o.memory},
            "capacity": {"summary": cap_summary, "pairs": pairs_json(&cap)},
            "cycles": {"summary": cyc_summary, "pairs": pairs_json(&cyc)},
            "memory": {"summary": mem_summary, "pairs": pairs_json(&mem)},
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
    fn the_memory_probe_csv_becomes_bytes_per_sa() {
        let out = "TELEMETRY: No legacy callbacks\n\
            alg,sas,heap_bytes,bytes_per_sa,session_private,ipsec_sa_size\n\
            aes128gcm16,100000,167711744,1677,1028,320\n\
            aes128-sha1,100000,206174784,2062,1408,320\n\
            aes128-sha1,1000,2280256,2280,1408,320\n";
        assert_eq!(
            parse_sa_memory(out, 100_000),
            vec![
                ("aes128gcm16".to_owned(), 1677.0),
                ("aes128-sha1".to_owned(), 2062.0)
            ]
        );
        assert_eq!(parse_sa_memory(out, 1000).len(), 1);
        assert!(parse_sa_memory(out, 5).is_empty());
    }

    #[test]
    fn xsec_sad_memory_is_measured() {
        // a real measurement, in this test's process: other tests allocate meanwhile, so
        // only bounds that a broken measurement (0, or the table not built) would miss
        let gcm = sad_memory(Alg::AesGcm128, 20_000).expect("gcm");
        assert!(gcm > 500.0 && gcm < 8_000.0, "{gcm} bytes per GCM SA");
        assert!(sad_memory(Alg::AesGcm128, 0).is_err());
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
