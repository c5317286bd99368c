//! A fixed workload for instruction-level profiling (`valgrind --tool=callgrind`), which is
//! repeatable on a noisy machine where cycle timings are not:
//! `profile ALG SIZE N encap|decap|outbound|outbound-burst|inbound-burst`, ALG as in the ESP
//! benchmarks; the burst modes go through the burst API 32 packets at a time.
//! Preparation (packet copies, and for decap the encapsulation) is done for every packet too;
//! run it twice with different N under callgrind and compare per-function counts.

use std::sync::Arc;
use xsec_benches::*;
use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, SpdConfig};
use xsec_dataplane::{Timestamp, Verdict};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: profile ALG SIZE N encap|decap|outbound|outbound-burst|inbound-burst");
        std::process::exit(2);
    }
    let Some(&(_, enc, auth)) = BENCH_ALGS.iter().find(|a| a.0 == args[1]) else {
        eprintln!("unknown algorithm {}", args[1]);
        std::process::exit(2);
    };
    let size: usize = args[2].parse().unwrap_or(64);
    let n: usize = args[3].parse().unwrap_or(1000);
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }],
        ..Default::default()
    };
    let (mut a, ha, mut b, _) = engines(
        enc,
        auth,
        Arc::new(spd.compile().unwrap_or_else(|e| panic!("{e}"))),
    );
    let inner = ipv4_udp(size, [10, 1, 0, 10], [10, 2, 0, 10]);
    let mut p = frame(&inner);
    let mut ok = 0usize;
    if let Some(mode) = args[4].strip_suffix("-burst") {
        const B: usize = 32;
        let mut ps: Vec<_> = (0..B).map(|_| frame(&inner)).collect();
        let mut vs = vec![Verdict::Unset; B];
        for _ in 0..n.div_ceil(B) {
            for q in ps.iter_mut() {
                reset(q, &inner);
            }
            if mode == "outbound" {
                ok += a.outbound_burst(Timestamp::ZERO, &mut ps, &mut vs);
            } else {
                a.outbound_burst(Timestamp::ZERO, &mut ps, &mut vs);
                ok += b.inbound_burst(Timestamp::ZERO, &mut ps, &mut vs);
            }
        }
        println!("{ok}/{} forwarded", n.div_ceil(B) * B);
        return;
    }
    for _ in 0..n {
        p.frame_mut()[HEADROOM..HEADROOM + inner.len()].copy_from_slice(&inner);
        p.set_window(HEADROOM, inner.len());
        let v = match args[4].as_str() {
            "encap" => a.encap_with(ha, Timestamp::ZERO, &mut p),
            "outbound" => a.outbound(Timestamp::ZERO, &mut p),
            _ => {
                a.encap_with(ha, Timestamp::ZERO, &mut p);
                b.inbound(Timestamp::ZERO, &mut p)
            }
        };
        ok += usize::from(v == Verdict::Forward);
    }
    println!("{ok}/{n} forwarded");
}
