//! The inbound selector check of one SA carrying many sites (RFC 4301 §5.2, every
//! decapsulated packet): `SelectorSet::matches` (indexed) against `matches_linear` (the scan
//! it replaced), paired in the same rounds on a pinned core. The SA's selectors are a hub's:
//! local 10.1.0.0/16, remote one /24 per site (100.64.0.0/24, 100.64.1.0/24, ...) and last
//! a far-away one (10.2.0.0/24, as `xsec-lab capacity --policies` builds), in configuration
//! order; the packets come from the first site, the middle one, the one before the last, the
//! far last one, and from an address no site covers (a drop). Nanoseconds per check, medians of the rounds;
//! `--json` prints the figures as one JSON object too.
//!
//! `cargo bench -p xsec-benches --bench selectors [-- ROUNDS] [--json]`

use std::time::Instant;
use xsec_benches::{cpu_features, paired_bench_args};
use xsec_dataplane::spd::selector::{AddrRange, PacketKey, Selector};
use xsec_dataplane::spd::selector_set::SelectorSet;
use xsec_lab::bench::median;

const CHECKS: usize = 4096;

/// `n` sites: `n - 1` adjacent /24s from 100.64.0.0, and the last one far away
/// (10.2.0.0/24), as in `xsec-lab capacity --policies`.
fn sites(n: u32) -> Vec<Selector> {
    let far = Selector {
        local: AddrRange::V4 {
            lo: 0x0a01_0000,
            hi: 0x0a01_ffff,
        },
        remote: AddrRange::V4 {
            lo: 0x0a02_0000,
            hi: 0x0a02_00ff,
        },
        ..Selector::ANY
    };
    (0..n - 1)
        .map(|i| Selector {
            local: AddrRange::V4 {
                lo: 0x0a01_0000,
                hi: 0x0a01_ffff,
            },
            remote: AddrRange::V4 {
                lo: 0x6440_0000 + (i << 8),
                hi: 0x6440_0000 + (i << 8) + 255,
            },
            ..Selector::ANY
        })
        .chain(std::iter::once(far))
        .collect()
}

fn key(src: u32) -> PacketKey {
    PacketKey {
        v6: false,
        src: u128::from(src),
        dst: 0x0a01_0203,
        proto: 17,
        src_port: 10_000,
        dst_port: 5301,
        dst_multicast: false,
    }
}

fn main() {
    let (rounds, _) = paired_bench_args(200);
    let json = std::env::args().any(|a| a == "--json");
    println!("CPU: {}", cpu_features());
    println!("{rounds} rounds of {CHECKS} checks per cell; ns per check, medians\n");
    println!("| sites | index | packet from | indexed ns | linear ns | linear ÷ indexed |");
    println!("|---|---|---|---|---|---|");
    let mut rows = vec![];
    for n in [1u32, 10, 100, 1_000, 9_000] {
        let set = SelectorSet::new(&sites(n));
        for (label, src, want) in [
            ("first", 0x6440_0005, n > 1),
            ("middle", 0x6440_0000 + ((n / 2) << 8) + 5, n / 2 < n - 1),
            ("near last", 0x6440_0000 + ((n - 2) << 8) + 5, n > 1),
            ("far, last", 0x0a02_0005, true),
            ("none", 0x6440_0000 + (n << 8) + 5, false),
        ] {
            let k = key(src);
            assert_eq!(set.matches(&k), want);
            assert_eq!(set.matches_linear(&k), want);
            let (mut a, mut b) = (vec![], vec![]);
            for _ in 0..rounds {
                let t = Instant::now();
                let mut hits = 0;
                for _ in 0..CHECKS {
                    hits += usize::from(set.matches(std::hint::black_box(&k)));
                }
                a.push(t.elapsed().as_nanos() as f64 / CHECKS as f64);
                std::hint::black_box(hits);
                let t = Instant::now();
                let mut hits = 0;
                for _ in 0..CHECKS {
                    hits += usize::from(set.matches_linear(std::hint::black_box(&k)));
                }
                b.push(t.elapsed().as_nanos() as f64 / CHECKS as f64);
                std::hint::black_box(hits);
            }
            let (ia, lb) = (median(&a), median(&b));
            println!(
                "| {n} | {} | {label} | {ia:.1} | {lb:.1} | {:.1} |",
                set.kind(),
                lb / ia
            );
            rows.push(format!(
                "{{\"sites\": {n}, \"index\": \"{}\", \"packet\": \"{label}\", \"indexed_ns\": {ia:.2}, \"linear_ns\": {lb:.2}}}",
                set.kind()
            ));
        }
    }
    if json {
        println!(
            "\n{{\"bench\": \"selectors\", \"rounds\": {rounds}, \"checks\": {CHECKS}, \"cpu\": \"{}\", \"rows\": [{}]}}",
            cpu_features(),
            rows.join(", ")
        );
    }
}
