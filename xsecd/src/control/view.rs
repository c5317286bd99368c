//! What the `show` commands and the metrics report, built from the workers' snapshots and
//! the running configuration. Keys never appear: only their lengths.

use super::running::Running;
use crate::worker::{Snapshot, WorkerCounters};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use xsec_dataplane::DropReason;
use xsec_dataplane::sa::{Encap, Protocol, SaStatus};
use xsec_dataplane::spd::{Action, Direction, Policy};
use xsec_dataplane::stats::WorkerStats;

fn secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn drops(d: &xsec_dataplane::stats::DropCounters, all: bool) -> Value {
    let m: BTreeMap<&str, u64> = DropReason::ALL
        .iter()
        .map(|&r| (r.name(), d.get(r)))
        .filter(|(_, n)| all || *n > 0)
        .collect();
    json!(m)
}

fn encap(e: Encap, protocol: Protocol) -> Value {
    match e {
        Encap::None => json!({"type": protocol.name()}),
        Encap::Udp {
            local_port,
            remote_port,
        } => json!({"type": "udp", "local_port": local_port, "remote_port": remote_port}),
    }
}

/// One SA of `show sa`.
pub fn sa(st: &SaStatus, worker: u16, counters: bool) -> Value {
    let i = &st.info;
    let mut v = json!({
        "name": i.name,
        "spi": st.spi,
        "spi_hex": format!("{:#010x}", st.spi),
        "reqid": st.reqid,
        "direction": st.direction.name(),
        "mode": st.mode.name(),
        "protocol": i.protocol.name(),
        "compression": match i.protocol {
            Protocol::IpComp(a) => Some(a.name()),
            _ => None,
        },
        "local": i.local,
        "peer": i.remote,
        "encap": encap(i.encap, i.protocol),
        "encryption": i.enc.to_string(),
        "integrity": i.auth.to_string(),
        "enc_key_bits": i.enc_key_bits,
        "auth_key_bits": i.auth_key_bits,
        "esn": st.esn,
        "seq": st.seq,
        "replay": {"window": st.replay_window, "received_in_window": st.replay_received,
                   "top": if st.direction == Direction::Inbound { json!(st.seq) } else { Value::Null }},
        "lifetime": {
            "age_s": st.age.as_secs_f64(),
            "idle_s": st.idle.as_secs_f64(),
            "bytes": st.bytes,
            "packets": st.packets,
            "soft": {"time_s": secs(st.soft_time), "bytes": st.soft_bytes, "packets": st.soft_packets},
            "hard": {"time_s": secs(st.hard_time), "bytes": st.hard_bytes, "packets": st.hard_packets},
            "soft_reached": st.soft_reached.map(|k| k.to_string()),
            "expired": st.expired.map(|k| k.to_string()),
        },
        "packets": st.packets,
        "bytes": st.bytes,
        "drops": st.drops.total(),
        "worker": worker,
    });
    if counters {
        v["drop_reasons"] = drops(&st.drops, true);
    }
    v
}

/// `show sa`: every SA, sorted by name then direction; `spi` keeps only that SPI.
pub fn sas(snaps: &[Snapshot], spi: Option<u32>, counters: bool) -> Value {
    let mut rows: Vec<(String, &'static str, Value)> = vec![];
    for s in snaps {
        for st in &s.sas {
            if spi.is_some_and(|x| x != st.spi) {
                continue;
            }
            rows.push((
                st.info.name.clone(),
                st.direction.name(),
                sa(st, s.id, counters),
            ));
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Value::Array(rows.into_iter().map(|r| r.2).collect())
}

fn sum_hits(snaps: &[Snapshot], dir: Direction, n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    for s in snaps {
        let h = match dir {
            Direction::Inbound => &s.hits_in,
            Direction::Outbound => &s.hits_out,
        };
        // a snapshot taken under an older SPD has another length: skip it rather than
        // attribute its counts to the wrong policies
        if h.len() == n {
            for (a, b) in v.iter_mut().zip(h) {
                *a += b;
            }
        }
    }
    v
}

fn policy(p: &Policy, index: usize, hits: Option<u64>, run: &Running) -> Value {
    let s = &p.selector;
    let (action, sa) = match &p.action {
        Action::Bypass => ("bypass", Value::Null),
        Action::Discard => ("discard", Value::Null),
        Action::Protect(b) => (
            "protect",
            json!(
                b.reqids()
                    .iter()
                    .map(|r| run
                        .store
                        .reqid_name(*r)
                        .map_or(format!("reqid {r}"), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("+")
            ),
        ),
    };
    let mut v = json!({
        "position": index + 1,
        "name": p.name,
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "proto": s.proto.map_or("any".to_owned(), |p| p.to_string()),
        "local_port": s.local_port.to_string(),
        "remote_port": s.remote_port.to_string(),
        "action": action,
        "sa": sa,
    });
    if let Some(h) = hits {
        v["hits"] = json!(h);
    }
    v
}

/// `show policy`: the ordered SPD of each direction.
pub fn policies(run: &Running, snaps: &[Snapshot], counters: bool) -> Value {
    let mut out = serde_json::Map::new();
    for dir in [Direction::Outbound, Direction::Inbound] {
        let pols = run.spd.policies(dir);
        let hits = sum_hits(snaps, dir, pols.len());
        out.insert(
            dir.name().to_owned(),
            Value::Array(
                pols.iter()
                    .enumerate()
                    .map(|(i, p)| policy(p, i, counters.then(|| hits[i]), run))
                    .collect(),
            ),
        );
    }
    out.insert(
        "inbound_default".into(),
        json!(format!("{:?}", run.spd.inbound_default()).to_lowercase()),
    );
    out.insert(
        "outbound_default".into(),
        json!(format!("{:?}", run.spd.outbound_default()).to_lowercase()),
    );
    Value::Object(out)
}

/// `show workers`.
pub fn workers(snaps: &[Snapshot]) -> Value {
    Value::Array(
        snaps
            .iter()
            .map(|s| {
                let c = &s.counters;
                json!({
                    "id": s.id, "queue": s.queue, "core": s.core,
                    "sas": s.sas.len(),
                    "rx": c.rx_unprot + c.rx_prot, "tx": c.tx_unprot + c.tx_prot,
                    "loops": c.loops, "busy_loops": c.busy_loops,
                    "busy_pct": if c.loops == 0 { 0.0 } else { 100.0 * c.busy_loops as f64 / c.loops as f64 },
                    "encap_packets": s.engine.encap_packets, "decap_packets": s.engine.decap_packets,
                    "drops": s.engine.drops.total(),
                    "handoff_tx": c.handoff_tx, "handoff_rx": c.handoff_rx,
                    "snapshot_us": s.took.as_secs_f64() * 1e6,
                })
            })
            .collect(),
    )
}

/// What the daemon knows beside its workers: the XDP program's per-queue classes and the
/// forward guard's drops.
#[derive(Debug, Default)]
pub struct System {
    pub xdp: Vec<crate::xdp::QueueCounters>,
    /// Packets the nftables forward guard dropped (`None`: no guard).
    pub guard_dropped: Option<u64>,
}

/// `show counters`: totals and per worker, every drop reason, reassembly, the XDP program's
/// classes per queue and the forward guard.
pub fn counters(snaps: &[Snapshot], sys: &System) -> Value {
    let mut engine = WorkerStats::default();
    let mut fwd = WorkerCounters::default();
    let mut reasm = crate::reasm::ReasmStats::default();
    for s in snaps {
        engine.add(&s.engine);
        fwd.add(&s.counters);
        reasm.add(&s.reasm);
    }
    let one = |e: &WorkerStats, c: &WorkerCounters, r: &crate::reasm::ReasmStats| {
        json!({
            "engine": crate::stats::EngineRow::from(e),
            "drops": drops(&e.drops, true),
            "forward": c,
            "reassembly": r,
        })
    };
    json!({
        "total": one(&engine, &fwd, &reasm),
        "workers": snaps.iter().map(|s| {
            let mut v = one(&s.engine, &s.counters, &s.reasm);
            v["id"] = json!(s.id);
            v["trace_lost"] = json!(s.trace_lost);
            v
        }).collect::<Vec<_>>(),
        "xdp": sys.xdp.iter().map(|r| r.json()).collect::<Vec<_>>(),
        "guard_dropped": sys.guard_dropped,
    })
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// OpenMetrics text. Per-SA counters are keyed by the SA pair's name and direction and
/// include the SAs that name had before (rekeyed, reloaded): they never go backwards.
pub fn metrics(run: &Running, snaps: &[Snapshot], sys: &System, uptime: Duration) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# TYPE {name} {kind}\n# HELP {name} {help}");
    };
    family(
        &mut o,
        "xsec_uptime_seconds",
        "gauge",
        "Seconds since xsecd started.",
    );
    let _ = writeln!(o, "xsec_uptime_seconds {:.3}", uptime.as_secs_f64());

    // per SA name and direction, and per reqid and direction: live + retired
    #[derive(Default)]
    struct Acc {
        packets: u64,
        bytes: u64,
        drops: xsec_dataplane::stats::DropCounters,
        spi: Option<u32>,
        protocol: &'static str,
        generations: u64,
        live: u64,
    }
    impl Acc {
        fn retired(&mut self, r: &super::running::Retired) {
            self.packets += r.packets;
            self.bytes += r.bytes;
            self.drops.add(&r.drops);
            self.generations += r.generations;
        }
        fn live(&mut self, st: &xsec_dataplane::sa::SaStatus) {
            self.packets += st.packets;
            self.bytes += st.bytes;
            self.drops.add(&st.drops);
            self.spi = Some(st.spi);
            self.protocol = st.info.protocol.name();
            self.live += 1;
        }
    }
    let mut acc: BTreeMap<(String, &'static str), Acc> = BTreeMap::new();
    let mut by_reqid: BTreeMap<(u32, &'static str), Acc> = BTreeMap::new();
    for ((name, dir), r) in &run.retired {
        acc.entry((name.clone(), dir.name()))
            .or_default()
            .retired(r);
    }
    for ((reqid, dir), r) in &run.retired_reqid {
        by_reqid.entry((*reqid, dir.name())).or_default().retired(r);
    }
    for s in snaps {
        for st in &s.sas {
            acc.entry((st.info.name.clone(), st.direction.name()))
                .or_default()
                .live(st);
            by_reqid
                .entry((st.reqid, st.direction.name()))
                .or_default()
                .live(st);
        }
    }
    type SaCounter = (&'static str, &'static str, fn(&Acc) -> u64);
    let per_sa: [SaCounter; 3] = [
        (
            "xsec_sa_packets",
            "Packets through the SAs of this name and direction, across rekeys and reloads.",
            |a| a.packets,
        ),
        (
            "xsec_sa_bytes",
            "Bytes (inner packets) through the SAs of this name and direction.",
            |a| a.bytes,
        ),
        (
            "xsec_sa_replaced",
            "SAs of this name and direction replaced or removed so far.",
            |a| a.generations,
        ),
    ];
    for (name, help, f) in per_sa {
        family(&mut o, name, "counter", help);
        for ((n, d), a) in &acc {
            let _ = writeln!(
                o,
                "{name}_total{{sa=\"{}\",direction=\"{d}\"}} {}",
                esc(n),
                f(a)
            );
        }
    }
    family(
        &mut o,
        "xsec_sa_drops",
        "counter",
        "Packets dropped by the SAs of this name and direction, by reason.",
    );
    for ((n, d), a) in &acc {
        for (r, c) in a.drops.nonzero() {
            let _ = writeln!(
                o,
                "xsec_sa_drops_total{{sa=\"{}\",direction=\"{d}\",reason=\"{}\"}} {c}",
                esc(n),
                r.name()
            );
        }
    }
    family(
        &mut o,
        "xsec_sa",
        "info",
        "Every installed SA, with its current SPI.",
    );
    for ((n, d), a) in &acc {
        if let Some(spi) = a.spi {
            let _ = writeln!(
                o,
                "xsec_sa_info{{sa=\"{}\",direction=\"{d}\",spi=\"{spi:#010x}\",protocol=\"{}\"}} 1",
                esc(n),
                a.protocol
            );
        }
    }
    let per_reqid: [SaCounter; 3] = [
        (
            "xsec_reqid_packets",
            "Packets through the SAs of this reqid and direction, across rekeys.",
            |a| a.packets,
        ),
        (
            "xsec_reqid_bytes",
            "Bytes (inner packets) through the SAs of this reqid and direction.",
            |a| a.bytes,
        ),
        (
            "xsec_reqid_replaced",
            "SAs of this reqid and direction replaced or removed so far.",
            |a| a.generations,
        ),
    ];
    for (name, help, f) in per_reqid {
        family(&mut o, name, "counter", help);
        for ((r, d), a) in &by_reqid {
            let _ = writeln!(
                o,
                "{name}_total{{reqid=\"{r}\",direction=\"{d}\"}} {}",
                f(a)
            );
        }
    }
    family(
        &mut o,
        "xsec_reqid_drops",
        "counter",
        "Packets dropped by the SAs of this reqid and direction (all reasons).",
    );
    for ((r, d), a) in &by_reqid {
        let _ = writeln!(
            o,
            "xsec_reqid_drops_total{{reqid=\"{r}\",direction=\"{d}\"}} {}",
            a.drops.total()
        );
    }
    family(
        &mut o,
        "xsec_reqid_sas",
        "gauge",
        "SAs of this reqid and direction installed now (two while a rekey overlaps).",
    );
    for ((r, d), a) in &by_reqid {
        let _ = writeln!(
            o,
            "xsec_reqid_sas{{reqid=\"{r}\",direction=\"{d}\"}} {}",
            a.live
        );
    }

    family(
        &mut o,
        "xsec_policy_hits",
        "counter",
        "Packets whose first matching policy this is.",
    );
    for dir in [Direction::Outbound, Direction::Inbound] {
        let pols = run.spd.policies(dir);
        let hits = sum_hits(snaps, dir, pols.len());
        for (p, h) in pols.iter().zip(hits) {
            let _ = writeln!(
                o,
                "xsec_policy_hits_total{{policy=\"{}\",direction=\"{}\"}} {h}",
                esc(&p.name),
                dir.name()
            );
        }
    }

    let mut engine = WorkerStats::default();
    for s in snaps {
        engine.add(&s.engine);
    }
    family(
        &mut o,
        "xsec_drops",
        "counter",
        "Packets dropped by the engine, by reason (all workers).",
    );
    for &r in DropReason::ALL {
        let _ = writeln!(
            o,
            "xsec_drops_total{{reason=\"{}\"}} {}",
            r.name(),
            engine.drops.get(r)
        );
    }
    type Metric = (&'static str, &'static str, fn(&Snapshot) -> u64);
    let per_worker: [Metric; 10] = [
        (
            "xsec_worker_rx_packets",
            "Frames received by the worker (both sides).",
            |s| s.counters.rx_unprot + s.counters.rx_prot,
        ),
        (
            "xsec_worker_tx_packets",
            "Frames sent by the worker (both sides).",
            |s| s.counters.tx_unprot + s.counters.tx_prot,
        ),
        ("xsec_worker_encap_packets", "Packets encapsulated.", |s| {
            s.engine.encap_packets
        }),
        ("xsec_worker_decap_packets", "Packets decapsulated.", |s| {
            s.engine.decap_packets
        }),
        (
            "xsec_worker_bypass_packets",
            "Packets passed by BYPASS.",
            |s| s.engine.bypass_packets,
        ),
        ("xsec_worker_drops", "Packets dropped by the engine.", |s| {
            s.engine.drops.total()
        }),
        (
            "xsec_worker_ipcomp_compressed_packets",
            "IPComp: packets sent compressed.",
            |s| s.engine.ipcomp_compressed,
        ),
        (
            "xsec_worker_ipcomp_uncompressed_packets",
            "IPComp: packets sent as they were, compression would not have made them smaller.",
            |s| s.engine.ipcomp_uncompressed,
        ),
        ("xsec_worker_loops", "Poll loops.", |s| s.counters.loops),
        (
            "xsec_worker_busy_loops",
            "Poll loops that found work.",
            |s| s.counters.busy_loops,
        ),
    ];
    for (name, help, f) in per_worker {
        family(&mut o, name, "counter", help);
        for s in snaps {
            let _ = writeln!(
                o,
                "{name}_total{{worker=\"{}\",queue=\"{}\"}} {}",
                s.id,
                s.queue,
                f(s)
            );
        }
    }
    // the worker's own counters (forwarding, ICMP, handoff) and reassembly, by name
    type Named = (&'static str, &'static str, fn(&Snapshot) -> Value);
    let named: [Named; 2] = [
        (
            "xsec_worker_forward",
            "The worker's forwarding counters (ICMP sent and suppressed, TTL expiries, ...), by name.",
            |s| json!(s.counters),
        ),
        (
            "xsec_reassembly",
            "Outer fragments and reassembly outcomes per worker.",
            |s| json!(s.reasm),
        ),
    ];
    for (name, help, f) in named {
        family(&mut o, name, "counter", help);
        for s in snaps {
            if let Value::Object(m) = f(s) {
                for (k, v) in m {
                    let _ = writeln!(
                        o,
                        "{name}_total{{worker=\"{}\",counter=\"{k}\"}} {}",
                        s.id,
                        v.as_u64().unwrap_or(0)
                    );
                }
            }
        }
    }
    family(
        &mut o,
        "xsec_xdp_frames",
        "counter",
        "Frames the XDP program classified, per interface side, RX queue and class (no_socket: dropped for want of a worker's socket).",
    );
    for r in &sys.xdp {
        for (class, v) in r.counters.fields() {
            let _ = writeln!(
                o,
                "xsec_xdp_frames_total{{side=\"{}\",queue=\"{}\",class=\"{class}\"}} {v}",
                r.side, r.queue
            );
        }
    }
    if let Some(n) = sys.guard_dropped {
        family(
            &mut o,
            "xsec_guard_dropped",
            "counter",
            "Packets the nftables forward guard kept the kernel from forwarding.",
        );
        let _ = writeln!(o, "xsec_guard_dropped_total {n}");
    }
    o.push_str("# EOF\n");
    o
}
