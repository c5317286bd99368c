//! The stats file: a JSON snapshot of every worker's counters, rewritten atomically.

use crate::worker::{Snapshot, WorkerCounters};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use xsec_dataplane::DropReason;
use xsec_dataplane::stats::WorkerStats;

#[derive(Debug, Serialize)]
pub struct WorkerRow {
    pub id: u16,
    pub queue: u32,
    pub core: Option<usize>,
    #[serde(flatten)]
    pub counters: crate::worker::WorkerCounters,
    /// The kernel's AF_XDP counters: frames lost before the worker saw them.
    pub unprot_socket: crate::xsk::SocketStats,
    pub prot_socket: crate::xsk::SocketStats,
}

#[derive(Debug, Serialize)]
pub struct SaRow {
    pub name: String,
    pub direction: &'static str,
    pub spi: u32,
    pub worker: u16,
    pub mode: &'static str,
    /// `esp` or `ah`.
    pub protocol: &'static str,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub seq: u64,
    pub encryption: String,
    pub integrity: String,
    pub enc_key_bits: usize,
    pub auth_key_bits: usize,
    pub drop_reasons: BTreeMap<&'static str, u64>,
}

/// The engine's counters as the stats file shows them (all workers summed).
#[derive(Debug, Default, Serialize)]
pub struct EngineRow {
    pub encap_packets: u64,
    pub encap_bytes: u64,
    pub decap_packets: u64,
    pub decap_bytes: u64,
    pub bypass_packets: u64,
    pub punt_packets: u64,
    pub keepalives: u64,
    pub events_lost: u64,
    /// IPComp, outbound: sent compressed, and sent as they were (not worth compressing).
    pub ipcomp_compressed: u64,
    pub ipcomp_uncompressed: u64,
}

impl From<&WorkerStats> for EngineRow {
    fn from(e: &WorkerStats) -> Self {
        EngineRow {
            encap_packets: e.encap_packets,
            encap_bytes: e.encap_bytes,
            decap_packets: e.decap_packets,
            decap_bytes: e.decap_bytes,
            bypass_packets: e.bypass_packets,
            punt_packets: e.punt_packets,
            keepalives: e.keepalives,
            events_lost: e.events_lost,
            ipcomp_compressed: e.ipcomp_compressed,
            ipcomp_uncompressed: e.ipcomp_uncompressed,
        }
    }
}

/// The whole file.
#[derive(Debug, Serialize)]
pub struct StatsFile {
    pub uptime_ms: u64,
    pub workers: Vec<WorkerRow>,
    pub sas: Vec<SaRow>,
    pub engine: EngineRow,
    pub drops: BTreeMap<&'static str, u64>,
    /// The workers' own counters, summed (forwarding, handoff, next hops, heartbeats).
    pub forward: WorkerCounters,
    pub heartbeats_sent: u64,
    /// Outer ESP fragments reassembled.
    pub reassembly: crate::reasm::ReasmStats,
    pub policy_hits: BTreeMap<&'static str, Vec<u64>>,
    pub xdp: serde_json::Value,
}

impl StatsFile {
    pub fn build(uptime: Duration, snaps: &[Snapshot], xdp: serde_json::Value) -> StatsFile {
        let mut engine = WorkerStats::default();
        let mut forward = WorkerCounters::default();
        let mut sas = Vec::new();
        let mut reassembly = crate::reasm::ReasmStats::default();
        let mut hits_in: Vec<u64> = Vec::new();
        let mut hits_out: Vec<u64> = Vec::new();
        for s in snaps {
            engine.add(&s.engine);
            forward.add(&s.counters);
            reassembly.add(&s.reasm);
            add_into(&mut hits_in, &s.hits_in);
            add_into(&mut hits_out, &s.hits_out);
            for st in &s.sas {
                sas.push(SaRow {
                    name: st.info.name.clone(),
                    direction: st.direction.name(),
                    spi: st.spi,
                    worker: s.id,
                    mode: st.mode.name(),
                    protocol: st.info.protocol.name(),
                    packets: st.packets,
                    bytes: st.bytes,
                    drops: st.drops.total(),
                    seq: st.seq,
                    encryption: st.info.enc.to_string(),
                    integrity: st.info.auth.to_string(),
                    enc_key_bits: st.info.enc_key_bits,
                    auth_key_bits: st.info.auth_key_bits,
                    drop_reasons: st.drops.nonzero().map(|(r, n)| (r.name(), n)).collect(),
                });
            }
        }
        sas.sort_by(|a, b| (&a.name, a.direction).cmp(&(&b.name, b.direction)));
        StatsFile {
            uptime_ms: uptime.as_millis() as u64,
            workers: snaps
                .iter()
                .map(|s| WorkerRow {
                    id: s.id,
                    queue: s.queue,
                    core: s.core,
                    counters: s.counters.clone(),
                    unprot_socket: s.sockets[0],
                    prot_socket: s.sockets[1],
                })
                .collect(),
            sas,
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.name(), engine.drops.get(r)))
                .collect(),
            engine: EngineRow::from(&engine),
            heartbeats_sent: forward.heartbeats_sent,
            forward,
            reassembly,
            policy_hits: [("in", hits_in), ("out", hits_out)].into_iter().collect(),
            xdp,
        }
    }
}

fn add_into(acc: &mut Vec<u64>, v: &[u64]) {
    if acc.len() < v.len() {
        acc.resize(v.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// Write `file` to `path` through a temporary file and a rename, so readers never see half.
pub fn write_atomic(path: &Path, file: &StatsFile) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}
