//! Summarise criterion's results (target/criterion) as the tables of the README: ESP cycles
//! per packet with the engine's own overhead (engine − raw crypto on the same bytes), lookups,
//! and the crypto crate comparison. Cycles are TSC cycles: nanoseconds × the TSC frequency.
//!
//! `cargo bench -p xsec-benches && cargo run -p xsec-benches --bin report [-- DIR]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use xsec_benches::{BENCH_ALGS, cpu_features, tsc_mhz};

fn collect(dir: &Path, out: &mut BTreeMap<String, f64>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                let (Ok(b), Ok(est)) = (
                    std::fs::read_to_string(p.join("benchmark.json")),
                    std::fs::read_to_string(p.join("estimates.json")),
                ) else {
                    continue;
                };
                let (Ok(b), Ok(est)) = (
                    serde_json::from_str::<serde_json::Value>(&b),
                    serde_json::from_str::<serde_json::Value>(&est),
                ) else {
                    continue;
                };
                if let (Some(id), Some(ns)) = (
                    b["full_id"].as_str(),
                    est["median"]["point_estimate"].as_f64(),
                ) {
                    out.insert(id.to_owned(), ns);
                }
            } else {
                collect(&p, out);
            }
        }
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            root.join("target/criterion")
        });
    let mut r = BTreeMap::new();
    collect(&dir, &mut r);
    if r.is_empty() {
        eprintln!(
            "no criterion results under {}; run `cargo bench -p xsec-benches` first",
            dir.display()
        );
        std::process::exit(1);
    }
    let mhz = tsc_mhz().unwrap_or(0.0);
    let cyc = |ns: f64| ns * mhz / 1000.0;
    println!("CPU: {}", cpu_features());
    println!("TSC: {mhz:.0} MHz (cycles = ns x TSC MHz / 1000)\n");

    println!(
        "## ESP, one core, TSC cycles per packet (median); size = inner IP packet; imix = 7x64, 4x576, 1x1420\n"
    );
    println!(
        "| algorithm | size | encap | crypto seal | overhead out | outbound (SPD+encap) | decap | crypto open | overhead in |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, _, _) in BENCH_ALGS {
        for size in ["64", "512", "1420", "imix"] {
            let g = |f: &str| r.get(&format!("esp/{name}/{f}/{size}")).copied();
            let (Some(e), Some(s), Some(d), Some(o)) =
                (g("encap"), g("crypto-seal"), g("decap"), g("crypto-open"))
            else {
                continue;
            };
            let spd = g("outbound-spd").map_or("-".into(), |v| format!("{:.0}", cyc(v)));
            println!(
                "| {name} | {size} | {:.0} | {:.0} | **{:.0}** | {spd} | {:.0} | {:.0} | **{:.0}** |",
                cyc(e),
                cyc(s),
                cyc(e - s),
                cyc(d),
                cyc(o),
                cyc(d - o)
            );
        }
    }

    let table = |title: &str, prefix: &str| {
        let rows: Vec<_> = r.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
        if rows.is_empty() {
            return;
        }
        println!("\n## {title}\n\n| benchmark | ns | cycles |\n|---|---|---|");
        for (k, v) in rows {
            println!("| {} | {:.1} | {:.0} |", &k[prefix.len()..], v, cyc(*v));
        }
    };
    table(
        "SAD lookup (inbound, by SPI and destination), by number of SAs",
        "sad-lookup/",
    );
    table(
        "SPD lookup, compiled classifier vs linear first match, by number of policies",
        "spd-lookup/",
    );
    table(
        "Anti-replay check + commit (ESN), by window size",
        "replay/",
    );
    table("HMAC, one packet, key state precomputed", "hmac/");
    table("AEAD seal, one packet", "aead-seal/");
}
