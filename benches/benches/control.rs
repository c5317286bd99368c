//! The control side of one change, as a key manager makes them: one `add-sa` (and its
//! `del-sa`) with 100,000 SAs installed, and one `add-policy` (and its `del-policy`) with
//! 10,000 policies installed — validation, the store, building the SA (key expansion) or
//! compiling the SPD, and the workers' rounds computed; the workers' part (a pointer swap,
//! measured by `tables -- spd-swap`) is not included.
//!
//! The baseline in the same run is the same operation on an empty store: the difference is
//! what the installed SAs or policies cost.
//!
//! `cargo bench -p xsec-benches --bench control`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use xsec_dataplane::Timestamp;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::SaConfig;
use xsec_dataplane::spd::{Action, AddrRange, Direction, Policy, SaBundle, Selector};
use xsecd::control::running::{Edit, Running, Source};
use xsecd::control::store::{Op, Placement, PolicyEntry, SaEntry};

const CONFIG: &str = "[gateway]\nunprotected = \"wan0\"\nprotected = \"lan0\"\nqueues = [0, 1]\n";

fn running() -> Running {
    let path = Path::new("bench.toml");
    let cfg = xsecd::config::parse(CONFIG, path).expect("the bench config parses");
    Running::new(cfg, Source::new(CONFIG, path), 2).expect("an empty gateway starts")
}

fn sa(i: u32) -> SaEntry {
    let mut cfg = SaConfig::tunnel(
        0x1000 + i,
        Direction::Inbound,
        IpAddr::from([10, 0, 0, 1]),
        IpAddr::from((0x0a80_0000u32 + i).to_be_bytes()),
        EncAlg::AesGcm128,
        &[(i % 251) as u8; 20],
        AuthAlg::None,
        &[],
    );
    cfg.reqid = 1 + i / 2;
    cfg.name = format!("t{}", i / 2);
    cfg.selectors = vec![Selector::ANY];
    SaEntry {
        placement: Placement::Reqid,
        id: format!("sa-{i}"),
        client: String::new(),
        cfg,
        keepalive: None,
    }
}

fn policy(i: u32) -> PolicyEntry {
    let net = 0x0b00_0000u32 + (i << 8);
    PolicyEntry {
        client: String::new(),
        policy: Policy {
            name: format!("p{i}"),
            selector: Selector {
                remote: AddrRange::prefix(IpAddr::from(net.to_be_bytes()), 24)
                    .expect("a /24 prefix"),
                ..Selector::ANY
            },
            action: Action::Protect(SaBundle::single(1 + i)),
        },
    }
}

fn apply(r: &mut Running, ops: Vec<Op>) {
    let e = Edit::Ops {
        client: "bench".into(),
        ops,
    };
    let p = r
        .prepare(e, Timestamp::ZERO)
        .expect("the bench's change is valid");
    r.commit(p.undo, &[]);
}

fn bench_sa_op(c: &mut Criterion) {
    let mut g = c.benchmark_group("control-sa-op");
    g.measurement_time(Duration::from_secs(5));
    for &n in &[0u32, 100_000] {
        let mut r = running();
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            apply(&mut r, chunk.iter().map(|&i| Op::AddSa(sa(i))).collect());
        }
        let extra = sa(n + 1);
        g.bench_function(BenchmarkId::new("add+del-sa", n), |b| {
            b.iter(|| {
                apply(&mut r, vec![Op::AddSa(extra.clone())]);
                apply(&mut r, vec![Op::DelSa(extra.id.clone())]);
            })
        });
    }
    g.finish();
}

fn bench_policy_op(c: &mut Criterion) {
    let mut g = c.benchmark_group("control-policy-op");
    g.measurement_time(Duration::from_secs(10));
    g.sample_size(20);
    for &n in &[0u32, 10_000] {
        let mut r = running();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            let ops = chunk
                .iter()
                .map(|&i| Op::AddPolicy {
                    dir: Direction::Outbound,
                    entry: policy(i),
                    position: None,
                })
                .collect();
            apply(&mut r, ops);
        }
        let extra = policy(n + 1);
        g.bench_function(BenchmarkId::new("add+del-policy", n), |b| {
            b.iter(|| {
                apply(
                    &mut r,
                    vec![Op::AddPolicy {
                        dir: Direction::Outbound,
                        entry: extra.clone(),
                        position: None,
                    }],
                );
                apply(
                    &mut r,
                    vec![Op::DelPolicy {
                        dir: Some(Direction::Outbound),
                        name: extra.policy.name.clone(),
                    }],
                );
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_sa_op, bench_policy_op);
criterion_main!(benches);
