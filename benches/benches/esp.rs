//! ESP encapsulation and decapsulation, one core, per packet size, against the raw crypto
//! calls on the same bytes in the same run: `engine − crypto` is the engine's own overhead.
//!
//! Each measured iteration takes one prepared packet (preparation is not timed): for encap a
//! fresh copy of the inner packet, for decap a fresh ESP packet with the next sequence number
//! (so the replay window does its real work). Sizes are those of the inner IP packet.
//! `cargo bench --bench esp`; `cargo run -p xsec-benches --bin report` prints cycles.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use xsec_benches::*;
use xsec_dataplane::{PacketBuf, Timestamp, Verdict};

const T0: Timestamp = Timestamp::ZERO;

/// Packets per measured burst: the worker's burst size.
const BURST: usize = 32;

/// Time `work` over bursts of prepared items: `prep` fills the burst (not timed), `work`
/// processes it (timed). Returns the total for `iters` items, as criterion's `iter_custom`
/// wants. Reused buffers stay in cache, as packets fresh from the NIC do.
fn bursts<T>(
    iters: u64,
    items: &mut [T],
    mut prep: impl FnMut(&mut T),
    mut work: impl FnMut(&mut T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = (left as usize).min(items.len());
        for it in items[..n].iter_mut() {
            prep(it);
        }
        let t = Instant::now();
        for it in items[..n].iter_mut() {
            work(it);
        }
        total += t.elapsed();
        left -= n as u64;
    }
    total
}

fn bench_esp(c: &mut Criterion) {
    eprintln!("cpu: {}", cpu_features());
    for &(name, enc, auth) in BENCH_ALGS {
        let raw = RawCrypto::new(enc, auth);
        let mut g = c.benchmark_group(format!("esp/{name}"));
        for (label, sizes) in size_cases() {
            // one burst slot per packet; IMIX cycles through its sizes
            let (inners, layouts) = burst(enc, auth, &sizes, BURST);
            let bytes: usize = inners.iter().map(Vec::len).sum::<usize>() / BURST;
            g.throughput(Throughput::Bytes(bytes as u64));
            let (mut a, ha, mut b, _) = engines(enc, auth, protect_all());
            let mut slots: Vec<(usize, PacketBuf<Vec<u8>>)> = inners
                .iter()
                .enumerate()
                .map(|(i, p)| (i, frame(p)))
                .collect();
            let mut bufs: Vec<(usize, Vec<u8>)> = layouts
                .iter()
                .enumerate()
                .map(|(i, l)| (i, vec![7u8; l.0]))
                .collect();

            g.bench_function(format!("encap/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| reset(p, &inners[*i]),
                        |(_, p)| assert_eq!(a.encap_with(ha, T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("crypto-seal/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut bufs,
                        |_| {},
                        |(i, buf)| raw.seal(buf, layouts[*i].1, layouts[*i].2),
                    )
                })
            });
            g.bench_function(format!("outbound-spd/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| reset(p, &inners[*i]),
                        |(_, p)| assert_eq!(a.outbound(T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("decap/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| {
                            reset(p, &inners[*i]);
                            a.encap_with(ha, T0, p);
                        },
                        |(_, p)| assert_eq!(b.inbound(T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("crypto-open/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut bufs,
                        |(i, buf)| raw.seal(buf, layouts[*i].1, layouts[*i].2),
                        |(i, buf)| raw.open(buf, layouts[*i].1, layouts[*i].2),
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500)).sample_size(30);
    targets = bench_esp
}
criterion_main!(benches);
