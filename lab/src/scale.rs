//! The scale of the tables from the operator's side: how long xsecd takes to start with N SA
//! pairs, how long a reload of the same file takes (nothing changed), of every SA pair
//! changed in place (each inbound SA's replay window) and of every SA pair replaced (new
//! SPIs, as after a manual rekey of all of them), and the resident memory it holds per SA
//! pair.
//!
//! The configuration is [`capacity::scale_spd`]'s hub with one SA pair per site: N PROTECT
//! /24 sites, each on its own pair, behind N/9 TCP port-range BYPASS/DISCARD policies. xsecd
//! runs in gwB's namespace on its real interfaces (AF_XDP, the forward guard), as in service.

use crate::bench::median;
use crate::capacity;
use crate::config::{Pair, PairOptions};
use crate::topo::{Lab, Node, TopoOptions};
use crate::{Result, err, sysstat};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `xsec-lab scale` measures.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub xsecd: PathBuf,
    /// SA pair counts to measure (1 is the baseline of the memory per pair).
    pub sas: Vec<usize>,
    pub repeat: usize,
    pub json: Option<PathBuf>,
    pub prefix: String,
    pub stop: Arc<AtomicBool>,
}

/// One start and its three reloads.
#[derive(Debug, Clone)]
pub struct Sample {
    pub sas: usize,
    pub policies: usize,
    pub config_bytes: usize,
    pub start_ms: f64,
    pub reload_same_ms: f64,
    pub reload_changed_ms: f64,
    pub reload_replaced_ms: f64,
    pub rss_kib: u64,
}

/// The policy count [`capacity::scale_spd`] needs for `sites` sites (its front is a tenth of
/// the whole).
pub fn policies_for_sites(sites: usize) -> usize {
    let mut n = sites + sites / 9;
    while n - n / 10 < sites {
        n += 1;
    }
    n
}

/// The hub of `sites` SA pairs (1: the plain one-policy tunnel).
fn hub(sites: usize) -> (Pair, usize) {
    let mut pair = Pair::new(PairOptions::default());
    if sites <= 1 {
        return (pair, 1);
    }
    let n = policies_for_sites(sites);
    capacity::scale_spd(&mut pair, n, true);
    (pair, n)
}

/// `xsecctl reload FILE` against `control`, timed; an error if xsecd refused it.
fn reload(xsecctl: &Path, control: &Path, file: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = std::process::Command::new(xsecctl)
        .arg("--socket")
        .arg(control)
        .arg("reload")
        .arg(file)
        .output()
        .map_err(|e| err!("{}: {e}", xsecctl.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(err!(
            "xsecctl reload {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(ms)
}

fn sample(lab: &Lab, xsecd: &Path, sites: usize) -> Result<Sample> {
    let (mut pair, policies) = hub(sites);
    let sas = pair.b.sas.len();
    let text = pair.b.to_toml();
    let t = Instant::now();
    let x = lab.start_xsecd(Node::GwB, xsecd, &text, Duration::from_secs(120))?;
    let start_ms = t.elapsed().as_secs_f64() * 1e3;
    let r = (|| -> Result<Sample> {
        let rss = crate::sysstat::rss_kib(x.proc.pid)?;
        let ctl = xsecd.with_file_name("xsecctl");
        let reload_same_ms = reload(&ctl, &x.control, &x.config)?;
        for sa in &mut pair.b.sas {
            sa.replay_window = Some(sa.replay_window.unwrap_or(64) + 64);
        }
        let changed = lab.write_file("scale-changed.toml", pair.b.to_toml())?;
        let reload_changed_ms = reload(&ctl, &x.control, &changed)?;
        for sa in &mut pair.b.sas {
            sa.spi_in = sa.spi_in.wrapping_add(0x0100_0000);
            sa.spi_out = sa.spi_out.wrapping_add(0x0100_0000);
        }
        let replaced = lab.write_file("scale-replaced.toml", pair.b.to_toml())?;
        let reload_replaced_ms = reload(&ctl, &x.control, &replaced)?;
        Ok(Sample {
            sas,
            policies,
            config_bytes: text.len(),
            start_ms,
            reload_same_ms,
            reload_changed_ms,
            reload_replaced_ms,
            rss_kib: rss,
        })
    })();
    lab.stop_xsecd(&x)?;
    r
}

/// Run the measurements; print a table; write JSON if asked.
pub fn run(o: &ScaleOptions) -> Result<Vec<Sample>> {
    let xsecd =
        std::fs::canonicalize(&o.xsecd).map_err(|e| err!("--xsecd {}: {e}", o.xsecd.display()))?;
    if o.sas.iter().any(|&n| n == 0 || n > 100_000) {
        return Err(err!("--sas: 1 to 100000"));
    }
    let info = sysstat::cpuinfo();
    println!("cpu: {} ({} CPUs)", info.model, info.cpus);
    let lab = Lab::up(TopoOptions::new(&o.prefix))?;
    let mut samples = vec![];
    let r = (|| -> Result<()> {
        for rep in 0..o.repeat {
            for &n in &o.sas {
                if o.stop.load(Ordering::Relaxed) {
                    return Err(err!("interrupted"));
                }
                let s = sample(&lab, &xsecd, n)?;
                println!(
                    "[{}/{}] {:>6} SA pairs, {:>6} policies ({:.1} MB): start {:.0} ms, reload: same {:.0} ms, changed {:.0} ms, replaced {:.0} ms; RSS {} KiB",
                    rep + 1,
                    o.repeat,
                    s.sas,
                    s.policies,
                    s.config_bytes as f64 / 1e6,
                    s.start_ms,
                    s.reload_same_ms,
                    s.reload_changed_ms,
                    s.reload_replaced_ms,
                    s.rss_kib
                );
                samples.push(s);
            }
        }
        Ok(())
    })();
    drop(lab);
    r?;
    let base_rss = samples
        .iter()
        .filter(|s| s.sas == 1)
        .map(|s| s.rss_kib as f64)
        .fold(f64::NAN, f64::min);
    let mut rows = vec![];
    println!(
        "\n| SA pairs | policies | start ms | reload, same ms | reload, all changed ms | reload, all replaced ms | RSS MiB | RSS per extra SA pair (B) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &o.sas {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.sas == n).collect();
        let Some(first) = of.first() else { continue };
        let m = |f: fn(&Sample) -> f64| median(of.iter().map(|s| f(s)));
        let rss = m(|s| s.rss_kib as f64);
        let per_pair = if n > 1 && base_rss.is_finite() {
            (rss - base_rss) * 1024.0 / (n - 1) as f64
        } else {
            f64::NAN
        };
        let row = json!({
            "sas": n, "policies": first.policies, "config_bytes": first.config_bytes,
            "start_ms": m(|s| s.start_ms), "reload_same_ms": m(|s| s.reload_same_ms),
            "reload_changed_ms": m(|s| s.reload_changed_ms),
            "reload_replaced_ms": m(|s| s.reload_replaced_ms),
            "rss_kib": rss, "rss_per_extra_pair_bytes": if per_pair.is_finite() { json!(per_pair) } else { Value::Null },
        });
        println!(
            "| {n} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            first.policies,
            m(|s| s.start_ms),
            m(|s| s.reload_same_ms),
            m(|s| s.reload_changed_ms),
            m(|s| s.reload_replaced_ms),
            rss / 1024.0,
            if per_pair.is_finite() {
                format!("{per_pair:.0}")
            } else {
                "-".into()
            }
        );
        rows.push(row);
    }
    if let Some(path) = &o.json {
        let doc = json!({
            "cpu": {"model": info.model, "cpus": info.cpus},
            "options": {"sas": o.sas, "repeat": o.repeat},
            "summary": rows,
            "samples": samples.iter().map(|s| json!({
                "sas": s.sas, "policies": s.policies, "config_bytes": s.config_bytes,
                "start_ms": s.start_ms, "reload_same_ms": s.reload_same_ms,
                "reload_changed_ms": s.reload_changed_ms, "reload_replaced_ms": s.reload_replaced_ms,
                "rss_kib": s.rss_kib,
            })).collect::<Vec<_>>(),
        });
        crate::write_json(path, &doc)?;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_has_one_sa_pair_per_site_and_the_policies_it_says() {
        for sites in [2, 9, 10, 100, 1000, 10_000] {
            let n = policies_for_sites(sites);
            assert_eq!(n - n / 10, sites, "{sites}");
            let (pair, policies) = hub(sites);
            assert_eq!(policies, n);
            assert_eq!(pair.b.sas.len(), sites);
            assert_eq!(pair.b.policies.len(), n);
            let protect = pair
                .b
                .policies
                .iter()
                .filter(|p| matches!(p.action, crate::config::Action::Protect(_)))
                .count();
            assert_eq!(protect, sites);
        }
        let (one, p) = hub(1);
        assert_eq!((one.b.sas.len(), p), (1, 1));
    }
}
