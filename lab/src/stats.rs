//! xsecd's stats file (JSON, rewritten atomically every `stats_interval_ms`):
//!
//! ```json
//! {"uptime_ms": 1234,
//!  "workers": [{"id":0,"queue":0,"core":1,"rx_unprot":0,"rx_prot":0,"tx_unprot":0,"tx_prot":0, ...}],
//!  "sas": [{"name":"ab","direction":"in","spi":8193,"worker":0,"packets":0,"bytes":0,"drops":0}],
//!  "engine": {"encap_packets":0,"decap_packets":0,"bypass_packets":0,"punt_packets":0,"keepalives":0},
//!  "drops": {"no_sa":0,"replay_duplicate":0,"icv_failed":0, ...},
//!  "forward": {"no_neighbour":0,"ttl_exceeded":0, ...},
//!  "heartbeats_sent": 0}
//! ```
//!
//! Read as a [`serde_json::Value`]: extra fields are ignored and a missing counter reads 0.

use std::path::Path;

use serde_json::Value;

use crate::{Result, err};

/// One snapshot of the stats file.
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

/// One SA's counters, summed over the workers that report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaCounters {
    pub name: String,
    pub direction: String,
    pub spi: u64,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl Stats {
    pub fn read(path: &Path) -> Result<Stats> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err!("read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| err!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Stats> {
        let v: Value = serde_json::from_str(text).map_err(|e| err!("not JSON: {e}"))?;
        if !v.is_object() {
            return Err(err!("not a JSON object"));
        }
        Ok(Stats(v))
    }

    pub fn uptime_ms(&self) -> u64 {
        num(&self.0["uptime_ms"])
    }

    /// Every SA entry, one per (name, direction, spi), packets summed over workers.
    pub fn sas(&self) -> Vec<SaCounters> {
        let mut out: Vec<SaCounters> = vec![];
        for s in self.0["sas"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or("?").to_owned();
            let direction = s["direction"].as_str().unwrap_or("?").to_owned();
            let spi = num(&s["spi"]);
            let i = match out
                .iter()
                .position(|c| c.name == name && c.direction == direction && c.spi == spi)
            {
                Some(i) => i,
                None => {
                    out.push(SaCounters {
                        name,
                        direction,
                        spi,
                        ..SaCounters::default()
                    });
                    out.len() - 1
                }
            };
            out[i].packets += num(&s["packets"]);
            out[i].bytes += num(&s["bytes"]);
            out[i].drops += num(&s["drops"]);
        }
        out
    }

    /// Packets of SA `name` in `direction` (`in`/`out`), all SPIs and workers.
    pub fn sa_packets(&self, name: &str, direction: &str) -> u64 {
        self.sas()
            .iter()
            .filter(|c| c.name == name && c.direction == direction)
            .map(|c| c.packets)
            .sum()
    }

    /// A drop counter by the engine's name (`icv_failed`, `no_sa`, ...).
    pub fn drop_count(&self, name: &str) -> u64 {
        num(&self.0["drops"][name])
    }

    /// Every non-zero drop counter.
    pub fn nonzero_drops(&self) -> Vec<(String, u64)> {
        self.0["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| num(v) > 0)
            .map(|(k, v)| (k.clone(), num(v)))
            .collect()
    }

    /// `engine.FIELD` (`encap_packets`, `decap_packets`, ...).
    pub fn engine(&self, field: &str) -> u64 {
        num(&self.0["engine"][field])
    }

    /// `forward.FIELD`.
    pub fn forward(&self, field: &str) -> u64 {
        num(&self.0["forward"][field])
    }

    pub fn heartbeats_sent(&self) -> u64 {
        num(&self.0["heartbeats_sent"])
    }

    /// A worker counter summed over every worker (`rx_unprot`, `tx_prot`, ...).
    pub fn workers_sum(&self, field: &str) -> u64 {
        self.0["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| num(&w[field]))
            .sum()
    }

    /// The number of workers reported.
    pub fn worker_count(&self) -> usize {
        self.0["workers"].as_array().map_or(0, Vec::len)
    }
}

/// The table the lab prints every second: one line per SA of each gateway, then the workers.
pub fn table(rows: &[(&str, Option<&Stats>)]) -> String {
    let mut s = format!(
        "{:<5} {:<14} {:<4} {:>10} {:>10} {:>12} {:>7}\n",
        "gw", "sa", "dir", "spi", "packets", "bytes", "drops"
    );
    for (gw, st) in rows {
        let Some(st) = st else {
            s.push_str(&format!("{gw:<5} (no stats yet)\n"));
            continue;
        };
        for c in st.sas() {
            s.push_str(&format!(
                "{gw:<5} {:<14} {:<4} {:>#10x} {:>10} {:>12} {:>7}\n",
                c.name, c.direction, c.spi, c.packets, c.bytes, c.drops
            ));
        }
        s.push_str(&format!(
            "{gw:<5} workers {}: rx unprot {} prot {}, tx unprot {} prot {}; drops {:?}\n",
            st.worker_count(),
            st.workers_sum("rx_unprot"),
            st.workers_sum("rx_prot"),
            st.workers_sum("tx_unprot"),
            st.workers_sum("tx_prot"),
            st.nonzero_drops()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_example() {
        let st = Stats::parse(
            r#"{"uptime_ms": 1234, "extra": [1,2],
             "workers": [{"id":0,"rx_unprot":3,"tx_prot":2},{"id":1,"rx_unprot":4}],
             "sas": [{"name":"ab","direction":"in","spi":8193,"worker":0,"packets":5,"bytes":500,"drops":1},
                     {"name":"ab","direction":"in","spi":8193,"worker":1,"packets":2,"bytes":200,"drops":0},
                     {"name":"ab","direction":"out","spi":4097,"worker":0,"packets":7,"bytes":700,"drops":0}],
             "engine": {"decap_packets": 7},
             "drops": {"no_sa": 0, "icv_failed": 2},
             "heartbeats_sent": 4}"#,
        )
        .expect("parses");
        assert_eq!(st.uptime_ms(), 1234);
        assert_eq!(st.sa_packets("ab", "in"), 7);
        assert_eq!(st.sa_packets("ab", "out"), 7);
        assert_eq!(st.sas().len(), 2);
        assert_eq!(st.drop_count("icv_failed"), 2);
        assert_eq!(st.drop_count("replay_duplicate"), 0);
        assert_eq!(st.nonzero_drops(), vec![("icv_failed".to_owned(), 2)]);
        assert_eq!(st.engine("decap_packets"), 7);
        assert_eq!(st.engine("encap_packets"), 0);
        assert_eq!(st.workers_sum("rx_unprot"), 7);
        assert_eq!(st.heartbeats_sent(), 4);
        assert!(table(&[("gwA", Some(&st)), ("gwB", None)]).contains("0x2001"));
        assert!(Stats::parse("[1]").is_err());
    }
}
