//! The engine's own cost per packet, measured as a *paired* difference: each round times a
//! burst of 32 packets through the engine and, right after, the same crypto calls on buffers of
//! the same layout, on a pinned core; the reported overhead is the median of the per-round
//! differences, which cancels the slow drifts a shared VM adds to both. (criterion's `esp`
//! bench times the two separately; use this one for the overhead.)
//!
//! `cargo bench -p xsec-benches --bench overhead [-- ROUNDS]`

use std::time::Instant;
use xsec_benches::*;
use xsec_dataplane::{PacketBuf, Timestamp, Verdict};
use xsec_lab::bench::median;

const BURST: usize = 32;
const T0: Timestamp = Timestamp::ZERO;

/// The `q` quantile (0..1) of the samples.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q) as usize]
}

fn main() {
    let (rounds, only) = paired_bench_args(400);
    let only: Vec<&str> = only.iter().map(String::as_str).collect();
    let mhz = tsc_mhz().unwrap_or(0.0);
    println!("CPU: {}", cpu_features());
    println!(
        "TSC {mhz:.0} MHz; {rounds} rounds of {BURST}-packet bursts per cell; cycles per packet, medians (10th percentile of the paired overhead in brackets); ratio = engine / crypto, median of the per-round ratios\n"
    );
    println!(
        "| algorithm | size | encap | crypto seal | **overhead out** (p10) | ratio | decap | crypto open | **overhead in** (p10) | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let cyc = |ns: f64| ns * mhz / 1000.0 / BURST as f64;
    for &(name, enc, auth) in BENCH_ALGS {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let raw = RawCrypto::new(enc, auth);
        for (label, sizes) in size_cases() {
            let (inners, layouts) = burst(enc, auth, &sizes, BURST);
            let (mut a, ha, mut b, _) = engines(enc, auth, protect_all());
            let mut frames: Vec<PacketBuf<Vec<u8>>> = inners.iter().map(|p| frame(p)).collect();
            let mut bufs: Vec<Vec<u8>> = layouts.iter().map(|l| vec![7u8; l.0]).collect();
            let (mut r_out, mut r_in) = (vec![], vec![]);
            let (mut enc_t, mut seal_t, mut d_out, mut dec_t, mut open_t, mut d_in) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for round in 0..rounds + 50 {
                // encapsulation vs seal
                for (f, p) in frames.iter_mut().zip(&inners) {
                    reset(f, p);
                }
                let t = Instant::now();
                for f in frames.iter_mut() {
                    let v = a.encap_with(ha, T0, f);
                    debug_assert_eq!(v, Verdict::Forward);
                }
                let e = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                for (buf, l) in bufs.iter_mut().zip(&layouts) {
                    raw.seal(buf, l.1, l.2);
                }
                let s = t.elapsed().as_nanos() as f64;
                // decapsulation vs open (the packets just sealed are opened)
                let t = Instant::now();
                for f in frames.iter_mut() {
                    let v = b.inbound(T0, f);
                    debug_assert_eq!(v, Verdict::Forward);
                }
                let d = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                for (buf, l) in bufs.iter_mut().zip(&layouts) {
                    raw.open(buf, l.1, l.2);
                }
                let o = t.elapsed().as_nanos() as f64;
                if round >= 50 {
                    enc_t.push(e);
                    seal_t.push(s);
                    d_out.push(e - s);
                    r_out.push(e / s);
                    dec_t.push(d);
                    open_t.push(o);
                    d_in.push(d - o);
                    r_in.push(d / o);
                }
            }
            let p10_out = cyc(quantile(&mut d_out.clone(), 0.1));
            let p10_in = cyc(quantile(&mut d_in.clone(), 0.1));
            println!(
                "| {name} | {label} | {:.0} | {:.0} | **{:.0}** ({p10_out:.0}) | {:.2} | {:.0} | {:.0} | **{:.0}** ({p10_in:.0}) | {:.2} |",
                cyc(median(&mut enc_t)),
                cyc(median(&mut seal_t)),
                cyc(median(&mut d_out)),
                median(&mut r_out),
                cyc(median(&mut dec_t)),
                cyc(median(&mut open_t)),
                cyc(median(&mut d_in)),
                median(&mut r_in),
            );
        }
    }
}
