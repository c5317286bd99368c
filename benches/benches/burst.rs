//! Whole ESP encapsulation (SPD lookup, SA, layout, crypto) through `Engine::outbound_burst`
//! against the same packets through `Engine::outbound` one at a time (and decapsulation through
//! `Engine::inbound_burst` against `Engine::inbound`), in the same process on
//! a pinned core, at burst sizes 1, 8, 32 and 64: what batching across a burst buys. Cycles per
//! packet, medians of paired rounds. DPDK's librte_ipsec is measured beside it, in the same
//! minutes, by `xsec-lab vs-dpdk --cycles` (no DPDK figure is kept here).
//!
//! `cargo bench -p xsec-benches --bench burst [-- ROUNDS] [ALGORITHM…]`

use std::time::Instant;
use xsec_benches::*;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::{PacketBuf, Timestamp, Verdict};
use xsec_lab::bench::median;

const T0: Timestamp = Timestamp::ZERO;
/// Packets per round (a multiple of every burst size).
const ROUND: usize = 64;
const BURSTS: &[usize] = &[1, 8, 32, 64];
/// Algorithms this bench times besides [`BENCH_ALGS`]: ESP's AES-GMAC (RFC 4543: the payload
/// in clear, all of it authenticated).
const MORE_ALGS: &[(&str, EncAlg, AuthAlg)] = &[("aes128gmac", EncAlg::AesGmac128, AuthAlg::None)];

/// Every algorithm this bench times.
fn algs() -> impl Iterator<Item = &'static (&'static str, EncAlg, AuthAlg)> {
    BENCH_ALGS.iter().chain(MORE_ALGS)
}

/// Decapsulation: fresh ESP packets every round (the replay window sees each once), through
/// `Engine::inbound` one at a time and `Engine::inbound_burst` at each burst size, each on its
/// own engine with the same SA.
fn decap_table(rounds: usize, only: &[&str], mhz: f64) {
    println!(
        "\n| algorithm | size | decap one at a time | burst 1 | burst 8 | burst 32 | burst 64 | ratio at 32 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cyc = |ns: f64| ns * mhz / 1000.0 / ROUND as f64;
    for &(name, enc, auth) in algs() {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        for (label, sizes) in size_cases() {
            let (inners, _) = burst(enc, auth, &sizes, ROUND);
            let (mut seal, _, _, _) = engines(enc, auth, protect_all());
            // one inbound engine per variant: one at a time, then each burst size
            let mut opens: Vec<_> = (0..=BURSTS.len())
                .map(|_| engines(enc, auth, protect_all()).2)
                .collect();
            let mut sealed: Vec<PacketBuf<Vec<u8>>> = inners.iter().map(|p| frame(p)).collect();
            let mut work: Vec<PacketBuf<Vec<u8>>> = inners.iter().map(|p| frame(p)).collect();
            let mut verdicts = vec![Verdict::Unset; ROUND];
            let mut t: Vec<Vec<f64>> = vec![vec![]; BURSTS.len() + 1];
            let mut ratio32 = vec![];
            for round in 0..rounds + 30 {
                for (f, p) in sealed.iter_mut().zip(&inners) {
                    reset(f, p);
                    let v = seal.outbound(T0, f);
                    debug_assert_eq!(v, Verdict::Forward);
                }
                let mut times = [0f64; 5];
                for (k, e) in opens.iter_mut().enumerate() {
                    for (w, s) in work.iter_mut().zip(&sealed) {
                        reset(w, s.data());
                    }
                    let t0 = Instant::now();
                    if k == 0 {
                        for w in work.iter_mut() {
                            let v = e.inbound(T0, w);
                            debug_assert_eq!(v, Verdict::Forward);
                        }
                    } else {
                        let b = BURSTS[k - 1];
                        for (ws, vs) in work.chunks_mut(b).zip(verdicts.chunks_mut(b)) {
                            e.inbound_burst(T0, ws, vs);
                        }
                        debug_assert!(verdicts.iter().all(|v| *v == Verdict::Forward));
                    }
                    times[k] = t0.elapsed().as_nanos() as f64;
                }
                if round >= 30 {
                    for (k, x) in times.iter().enumerate() {
                        t[k].push(*x);
                    }
                    ratio32.push(times[3] / times[0]);
                }
            }
            let cells: Vec<String> = t
                .iter_mut()
                .map(|v| format!("{:.0}", cyc(median(v))))
                .collect();
            println!(
                "| {name} | {label} | {} | {:.2} |",
                cells.join(" | "),
                median(&mut ratio32),
            );
        }
    }
}

fn main() {
    let (rounds, only) = paired_bench_args(300);
    let only: Vec<&str> = only.iter().map(String::as_str).collect();
    let mhz = tsc_mhz().unwrap_or(0.0);
    println!("CPU: {}", cpu_features());
    println!(
        "TSC {mhz:.0} MHz; {rounds} rounds of {ROUND} packets per cell; TSC cycles per packet, \
         medians; ratio = burst / one at a time (median of per-round ratios)\n"
    );
    println!(
        "| algorithm | size | one at a time | burst 1 | burst 8 | burst 32 | burst 64 | ratio at 32 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cyc = |ns: f64| ns * mhz / 1000.0 / ROUND as f64;
    for &(name, enc, auth) in algs() {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        for (label, sizes) in size_cases() {
            let (inners, _) = burst(enc, auth, &sizes, ROUND);
            let (mut one, _, _, _) = engines(enc, auth, protect_all());
            let (mut many, _, _, _) = engines(enc, auth, protect_all());
            let mut f1: Vec<PacketBuf<Vec<u8>>> = inners.iter().map(|p| frame(p)).collect();
            let mut f2: Vec<PacketBuf<Vec<u8>>> = inners.iter().map(|p| frame(p)).collect();
            let mut verdicts = vec![Verdict::Unset; ROUND];
            let mut t_one = vec![];
            let mut t_burst: Vec<Vec<f64>> = vec![vec![]; BURSTS.len()];
            let mut ratio32 = vec![];
            for round in 0..rounds + 30 {
                for (f, p) in f1.iter_mut().zip(&inners) {
                    reset(f, p);
                }
                let t = Instant::now();
                for f in f1.iter_mut() {
                    let v = one.outbound(T0, f);
                    debug_assert_eq!(v, Verdict::Forward);
                }
                let a = t.elapsed().as_nanos() as f64;
                let mut bs = [0f64; 4];
                for (k, &b) in BURSTS.iter().enumerate() {
                    for (f, p) in f2.iter_mut().zip(&inners) {
                        reset(f, p);
                    }
                    let t = Instant::now();
                    for (fs, vs) in f2.chunks_mut(b).zip(verdicts.chunks_mut(b)) {
                        many.outbound_burst(T0, fs, vs);
                    }
                    bs[k] = t.elapsed().as_nanos() as f64;
                    debug_assert!(verdicts.iter().all(|v| *v == Verdict::Forward));
                }
                if round >= 30 {
                    t_one.push(a);
                    for (k, x) in bs.iter().enumerate() {
                        t_burst[k].push(*x);
                    }
                    ratio32.push(bs[2] / a);
                }
            }
            let b: Vec<String> = t_burst
                .iter_mut()
                .map(|v| format!("{:.0}", cyc(median(v))))
                .collect();
            println!(
                "| {name} | {label} | {:.0} | {} | {:.2} |",
                cyc(median(&mut t_one)),
                b.join(" | "),
                median(&mut ratio32),
            );
        }
    }
    decap_table(rounds, &only, mhz);
}
