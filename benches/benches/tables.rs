//! Lookup structures: the SAD from 1 to 1,000,000 SAs, the SPD from 1 to 10,000 policies
//! (compiled classifier against the linear first-match scan in the same run — the VPP-style
//! baseline), and the anti-replay window in order and out of order.
//!
//! The SAD benchmark also prints the resident memory per SA it measured.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fastrand::Rng;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;
use xsec_benches::*;
use xsec_dataplane::Timestamp;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::replay::ReplayWindow;
use xsec_dataplane::sa::{Sa, SaConfig, SaTable};
use xsec_dataplane::spd::{
    Action, AddrRange, Direction, Lookup, PacketKey, Policy, PortSel, SaBundle, Selector, SpdConfig,
};
use xsec_dataplane::wire::IpProtocol;

fn bench_sad(c: &mut Criterion) {
    let mut g = c.benchmark_group("sad-lookup");
    let template = {
        let mut c = SaConfig::tunnel(
            0x1000,
            Direction::Inbound,
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 1]),
            EncAlg::AesGcm128,
            &key(20, 3),
            AuthAlg::None,
            &[],
        );
        c.replay_window = 64;
        c
    };
    for &n in &[1usize, 1_000, 100_000, 1_000_000] {
        let before = rss_bytes();
        let mut t = SaTable::with_capacity(n);
        let mut rng = Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut spis = Vec::with_capacity(n);
        while spis.len() < n {
            let spi = rng.u32(..) | 0x100;
            let mut cfg = template.clone();
            cfg.spi = spi;
            // key expansion per SA, as control would do
            if let Ok(sa) = Sa::with_random(&cfg, Timestamp::ZERO, [1; 16])
                && t.insert(sa).is_ok()
            {
                spis.push(spi);
            }
        }
        let grown = rss_bytes().saturating_sub(before);
        eprintln!(
            "sad: {n} SAs, resident memory grew by {} KiB = {} bytes per SA (size_of::<Sa>() = {})",
            grown / 1024,
            grown / n,
            std::mem::size_of::<Sa>()
        );
        // look up in a random order that defeats the cache at large sizes
        let order: Vec<u32> = (0..4096).map(|_| spis[rng.usize(..n)]).collect();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let h = t.lookup_inbound(order[i], false, 0x0a00_0002);
                black_box(h.and_then(|h| t.get(h)).map(|s| s.spi()))
            })
        });
        drop(t);
    }
    g.finish();
}

/// A site-to-site SPD of `n` policies: per remote site a /24 PROTECT, with every tenth
/// policy a port-specific BYPASS or DISCARD in front, as appliance configurations look.
fn spd_config(n: usize) -> SpdConfig {
    let mut out = vec![];
    for i in 0..n {
        let remote = AddrRange::prefix(
            IpAddr::from([10, 100 + (i >> 16) as u8, (i >> 8) as u8, (i & 0xff) as u8]),
            32,
        )
        .expect("prefix");
        let remote24 = AddrRange::prefix(
            IpAddr::from([172, 16 + ((i >> 8) & 0x0f) as u8, (i & 0xff) as u8, 0]),
            24,
        )
        .expect("prefix");
        let _ = remote;
        let mut s = Selector::addresses("10.1.0.0/16".parse().expect("range"), remote24);
        let action = if i % 10 == 5 {
            s.proto = Some(IpProtocol::TCP);
            s.remote_port = PortSel::Range { lo: 8000, hi: 8999 };
            if i % 20 == 5 {
                Action::Bypass
            } else {
                Action::Discard
            }
        } else {
            Action::Protect(SaBundle::single(1 + i as u32))
        };
        out.push(Policy {
            name: format!("p{i}"),
            selector: s,
            action,
        });
    }
    SpdConfig {
        outbound: out,
        ..Default::default()
    }
}

fn bench_spd(c: &mut Criterion) {
    let mut g = c.benchmark_group("spd-lookup");
    for &n in &[1usize, 100, 1_000, 10_000] {
        let cfg = spd_config(n);
        let t = std::time::Instant::now();
        let spd = cfg.compile().expect("spd");
        eprintln!(
            "spd: {n} policies compiled in {:?}, {} KiB of tables",
            t.elapsed(),
            spd.memory_bytes() / 1024
        );
        let mut rng = Rng::with_seed(12345);
        // packets towards random sites (hits spread over the whole list) plus 1 in 8 misses
        let keys: Vec<PacketKey> = (0..1024)
            .map(|_| {
                let i = rng.usize(..n);
                let miss = rng.usize(..8) == 0;
                let dst = if miss {
                    IpAddr::from([192, 0, 2, 1])
                } else {
                    IpAddr::from([172, 16 + ((i >> 8) & 0x0f) as u8, (i & 0xff) as u8, 9])
                };
                PacketKey::describe(
                    Some(IpProtocol::TCP),
                    IpAddr::from([10, 1, 2, 3]),
                    Some(40000),
                    dst,
                    Some(8080),
                )
            })
            .collect();
        for k in &keys {
            let a = match spd.lookup(Direction::Outbound, k) {
                Lookup::Policy { index, .. } => Some(index as usize),
                Lookup::Default { .. } => None,
            };
            assert_eq!(a, spd.lookup_linear(Direction::Outbound, k));
        }
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("compiled", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(matches!(
                    spd.lookup(Direction::Outbound, &keys[i]),
                    Lookup::Policy { .. }
                ))
            })
        });
        g.bench_with_input(BenchmarkId::new("linear", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(spd.lookup_linear(Direction::Outbound, &keys[i]))
            })
        });
    }
    g.finish();
}

fn bench_replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    for &w in &[64u32, 1024, 4096] {
        let mut win = ReplayWindow::new(w, true);
        let mut seq = 0u64;
        g.bench_with_input(BenchmarkId::new("in-order", w), &w, |b, _| {
            b.iter(|| {
                seq += 1;
                let s = win.infer(seq as u32).expect("infer");
                if win.check(s).is_ok() {
                    win.commit(s);
                }
            })
        });
        let mut win = ReplayWindow::new(w, true);
        let mut rng = Rng::with_seed(777);
        let mut top = u64::from(w);
        g.bench_with_input(BenchmarkId::new("out-of-order", w), &w, |b, _| {
            b.iter(|| {
                top += 1;
                // a packet from anywhere in the window (mostly new, some duplicates)
                let s = top - rng.u64(..u64::from(w));
                let s = win.infer(s as u32).expect("infer");
                if win.check(s).is_ok() {
                    win.commit(s);
                }
            })
        });
    }
    g.finish();
}

/// A policy change as a worker sees it: the new SPD (one policy added in front of `n`) and
/// its counters carried over. Baseline in the same run: the by-name search every worker did
/// before (O(P²) string compares on the worker thread); now: the mapping computed once on the
/// control thread (`carry_from`, O(P)) and the worker's swap (`set_spd_carrying`, O(P) by
/// index).
fn bench_spd_swap(c: &mut Criterion) {
    use std::sync::Arc;
    use xsec_dataplane::Engine;
    let mut g = c.benchmark_group("spd-swap");
    for &n in &[1_000usize, 10_000] {
        let old = Arc::new(spd_config(n).compile().expect("spd"));
        let mut cfg = spd_config(n);
        let mut first = cfg.outbound[0].clone();
        first.name = "added".into();
        cfg.outbound.insert(0, first);
        let new = Arc::new(cfg.compile().expect("spd"));
        let hits = vec![7u64; n];
        g.bench_with_input(BenchmarkId::new("by-name-on-worker", n), &n, |b, _| {
            b.iter(|| {
                let old_p = old.policies(Direction::Outbound);
                let carried: Vec<u64> = new
                    .policies(Direction::Outbound)
                    .iter()
                    .map(|p| {
                        old_p
                            .iter()
                            .position(|o| o.name == p.name)
                            .and_then(|i| hits.get(i).copied())
                            .unwrap_or(0)
                    })
                    .collect();
                black_box(carried)
            })
        });
        g.bench_with_input(BenchmarkId::new("carry-from-on-control", n), &n, |b, _| {
            b.iter(|| black_box(new.carry_from(&old)))
        });
        let (there, back) = (new.carry_from(&old), old.carry_from(&new));
        let mut e = Engine::new(old.clone());
        let mut flip = false;
        g.bench_with_input(BenchmarkId::new("swap-on-worker", n), &n, |b, _| {
            b.iter(|| {
                // alternate, so every swap changes the SPD
                if flip {
                    e.set_spd_carrying(old.clone(), &back);
                } else {
                    e.set_spd_carrying(new.clone(), &there);
                }
                flip = !flip;
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500)).sample_size(30);
    targets = bench_sad, bench_spd, bench_replay, bench_spd_swap
}
criterion_main!(benches);
