//! xsec-pktgen: a traffic generator and sink for measuring a gateway (or anything that
//! forwards IP) from the hosts on either side.
//!
//! Every datagram carries a 32-byte header at the start of its UDP payload — a magic, the
//! generator's stream id, a sequence number, the send time, the payload length and a check
//! word over those — followed by a fixed fill pattern. The sink checks each datagram
//! (magic, check word, length, fill: anything else is *corrupt*), tracks sequence numbers
//! per stream in a 64 Ki-packet window (*lost*, *reordered*, *duplicate*) and records the
//! one-way latency (receive time − send time; both ends read the same clock when they run
//! on one machine, e.g. in two network namespaces) in an HDR histogram.
//!
//! The binary (`xsec-pktgen gen|sink`) sends through the kernel's UDP sockets
//! (`sendmmsg(2)` batches), a transmit-only AF_XDP socket or AF_PACKET, and receives
//! through a UDP socket, receive-only AF_XDP sockets (behind xsecd's XDP program) or an
//! AF_PACKET tap; BENCHMARKS.md says what each means for the figures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Bytes of the per-datagram header.
pub const HEADER: usize = 32;
/// "XSPG".
pub const MAGIC: [u8; 4] = *b"XSPG";
/// Sequence numbers tracked behind the highest one seen.
pub const WINDOW: u64 = 1 << 16;
/// IMIX as 7 : 4 : 1 by count of 64, 576 and 1420-byte IP packets, interleaved.
pub const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 64, 576];

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME: the same clock in every namespace).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn mix(stream: u32, seq: u64, ts: u64, len: u32) -> u32 {
    let mut h = u64::from(stream) ^ seq.rotate_left(17) ^ ts.rotate_left(41) ^ u64::from(len);
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) as u32
}

/// The fill byte at payload offset `i`.
#[inline]
pub fn fill_byte(i: usize) -> u8 {
    ((i.wrapping_mul(131) >> 3) as u8) ^ 0x5a
}

/// A payload of `len` bytes (at least [`HEADER`]) with the fill pattern and a zero header.
pub fn template(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len.max(HEADER)).map(fill_byte).collect();
    p[..HEADER].fill(0);
    p
}

/// Write the header of datagram `seq` into a [`template`] payload.
pub fn stamp(p: &mut [u8], stream: u32, seq: u64, ts: u64) {
    let len = p.len() as u32;
    if let Some(h) = p.first_chunk_mut::<HEADER>() {
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&stream.to_be_bytes());
        h[8..16].copy_from_slice(&seq.to_be_bytes());
        h[16..24].copy_from_slice(&ts.to_be_bytes());
        h[24..28].copy_from_slice(&len.to_be_bytes());
        h[28..32].copy_from_slice(&mix(stream, seq, ts, len).to_be_bytes());
    }
}

/// A datagram that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stream: u32,
    pub seq: u64,
    pub ts: u64,
}

/// Why a datagram is not one of ours, or was damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// No magic: someone else's datagram.
    Foreign,
    /// Ours, but the header's check, the length or the fill is wrong.
    Corrupt,
}

/// Check a received payload.
pub fn check(p: &[u8]) -> Result<Stamp, Bad> {
    let h = p.first_chunk::<HEADER>().ok_or(Bad::Foreign)?;
    if h[0..4] != MAGIC {
        return Err(Bad::Foreign);
    }
    let word =
        |r: core::ops::Range<usize>| h[r].iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let (stream, seq, ts, len, chk) = (
        word(4..8) as u32,
        word(8..16),
        word(16..24),
        word(24..28) as u32,
        word(28..32) as u32,
    );
    if chk != mix(stream, seq, ts, len) || len as usize != p.len() {
        return Err(Bad::Corrupt);
    }
    if p[HEADER..]
        .iter()
        .enumerate()
        .any(|(i, &b)| b != fill_byte(i + HEADER))
    {
        return Err(Bad::Corrupt);
    }
    Ok(Stamp { stream, seq, ts })
}

/// What one arrival was, relative to the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than every sequence number seen so far (gaps are possible losses).
    Next,
    /// Lower than one seen already and not seen before: late, filling a gap.
    Reordered,
    /// Seen before.
    Duplicate,
    /// So far behind the highest that it left the window: late, duplicate or not.
    TooOld,
}

/// One stream's sequence accounting.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    highest: Option<u64>,
    bits: Vec<u64>,
    /// Distinct datagrams (duplicates not counted).
    pub received: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub too_old: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            highest: None,
            bits: vec![0; (WINDOW / 64) as usize],
            received: 0,
            reordered: 0,
            duplicates: 0,
            too_old: 0,
        }
    }
}

impl SeqTracker {
    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = (seq % WINDOW) as usize;
        let word = &mut self.bits[i / 64];
        (word, 1u64 << (i % 64))
    }

    pub fn record(&mut self, seq: u64) -> Arrival {
        match self.highest {
            Some(h) if seq <= h => {
                if h - seq >= WINDOW {
                    self.too_old += 1;
                    return Arrival::TooOld;
                }
                let (w, m) = self.bit(seq);
                if *w & m != 0 {
                    self.duplicates += 1;
                    return Arrival::Duplicate;
                }
                *w |= m;
                self.received += 1;
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                // clear the slots of the numbers skipped over, then take this one
                let from = self.highest.map_or(0, |h| h + 1);
                if seq - from >= WINDOW {
                    self.bits.fill(0);
                } else {
                    for s in from..seq {
                        let (w, m) = self.bit(s);
                        *w &= !m;
                    }
                }
                let (w, m) = self.bit(seq);
                *w |= m;
                self.highest = Some(seq);
                self.received += 1;
                Arrival::Next
            }
        }
    }

    /// Highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Datagrams missing so far, assuming the stream starts at 0 and the highest number
    /// seen was the last one sent (`sent`, when known, replaces that guess).
    pub fn lost(&self, sent: Option<u64>) -> u64 {
        let expected = sent.unwrap_or_else(|| self.highest.map_or(0, |h| h + 1));
        expected.saturating_sub(self.received)
    }
}

/// A latency histogram in nanoseconds (1 ns .. 100 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| {
        // the bounds are constants that hdrhistogram accepts; an auto-resizing one otherwise
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid"));
        h.auto(true);
        h
    })
}

/// Percentiles of a histogram as JSON (nanoseconds).
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "min": h.min(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
        "samples": h.len(),
    })
}

/// The sink's summary as a table for people (stderr); the JSON line is for programs.
pub fn human_table(s: &Value) -> String {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let mut t = String::from("sink summary\n");
    t.push_str(&format!(
        "  {:<12} {:>12}\n  {:<12} {:>12}  ({:.3} %)\n",
        "received",
        n("received"),
        "lost",
        n("lost"),
        s["loss_pct"].as_f64().unwrap_or(0.0)
    ));
    for k in ["reordered", "duplicates", "too_old", "corrupt", "foreign"] {
        t.push_str(&format!("  {k:<12} {:>12}\n", n(k)));
    }
    t.push_str(&format!(
        "  {:<12} {:>12.1} kpps over {:.2} s\n",
        "rate",
        s["pps"].as_f64().unwrap_or(0.0) / 1e3,
        s["window_s"].as_f64().unwrap_or(0.0)
    ));
    let l = &s["latency_ns"];
    if l["samples"].as_u64().unwrap_or(0) > 0 {
        let cols = ["min", "p50", "p90", "p99", "p999", "max"];
        t.push_str("  latency     ");
        for c in cols {
            t.push_str(&format!("{:>9}", if c == "p999" { "p99.9" } else { c }));
        }
        t.push_str("\n              ");
        for c in cols {
            t.push_str(&format!("{:>9}", fmt_ns(l[c].as_u64().unwrap_or(0))));
        }
        t.push('\n');
    }
    t
}

/// A duration in ns as text with a unit (µs below 10 ms).
pub fn fmt_ns(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// Paces batches to a rate: `wait(n)` returns when `n` more datagrams may go.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// `rate` datagrams per second; 0 = as fast as possible.
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    pub fn wait(&mut self, n: u64) {
        if self.rate <= 0.0 {
            return;
        }
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / self.rate);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let left = due - now;
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                // Too close to sleep, but let anything runnable on this CPU (a gateway, the
                // sink) go first rather than spin it out of its time slice.
                std::thread::yield_now();
            }
        }
        self.sent += n;
    }
}

/// The once-a-second live lines: when one is [`due`](Ticker::due), [`tick`](Ticker::tick)
/// gives the seconds since the start and a counter's rate since the last line.
#[derive(Debug)]
pub struct Ticker {
    start: Instant,
    next: Instant,
    last: (Instant, u64),
}

impl Default for Ticker {
    fn default() -> Self {
        let now = Instant::now();
        Ticker {
            start: now,
            next: now + Duration::from_secs(1),
            last: (now, 0),
        }
    }
}

impl Ticker {
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    pub fn tick(&mut self, count: u64) -> (f64, f64) {
        let now = Instant::now();
        let rate = count.saturating_sub(self.last.1) as f64
            / now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        self.last = (now, count);
        self.next += Duration::from_secs(1);
        (now.duration_since(self.start).as_secs_f64(), rate)
    }
}

/// The IP-packet sizes a generator cycles through: one size, or IMIX.
pub fn sizes(spec: &str) -> Result<Vec<usize>, String> {
    if spec == "imix" {
        return Ok(IMIX.to_vec());
    }
    spec.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("size {s:?}: a number of bytes or imix"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stamp_and_check() {
        let mut p = template(100);
        stamp(&mut p, 7, 42, 1234);
        assert_eq!(
            check(&p),
            Ok(Stamp {
                stream: 7,
                seq: 42,
                ts: 1234
            })
        );
        for i in [0, 5, 9, 17, 27, 31, 32, 99] {
            let mut q = p.clone();
            q[i] ^= 1;
            let want = if i < 4 { Bad::Foreign } else { Bad::Corrupt };
            assert_eq!(check(&q), Err(want), "byte {i}");
        }
        assert_eq!(check(&p[..99]), Err(Bad::Corrupt), "truncated");
        assert_eq!(check(&[0u8; 10]), Err(Bad::Foreign));
    }

    #[test]
    fn tracker_counts_gaps_reorders_and_duplicates() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 5, 3, 3, 6, 4] {
            t.record(s);
        }
        assert_eq!(t.received, 7);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 2); // 3 and 4 came after 5
        assert_eq!(t.lost(None), 0);
        t.record(10);
        assert_eq!(t.lost(None), 3); // 7, 8, 9
        assert_eq!(t.lost(Some(20)), 12);
        // far behind: out of the window
        t.record(10 + WINDOW + 5);
        assert_eq!(t.record(8), Arrival::TooOld);
        // the slots skipped over were cleared: an old number's bit is not mistaken
        assert_eq!(t.record(10 + WINDOW + 4), Arrival::Reordered);
    }

    proptest! {
        /// Against a set: a permutation of 0..n with some numbers dropped and some repeated.
        #[test]
        fn tracker_matches_a_set(
            n in 1u64..3000,
            drop_mask in proptest::collection::vec(any::<bool>(), 3000),
            swaps in proptest::collection::vec((0usize..3000, 0usize..3000), 0..200),
            dups in proptest::collection::vec(0usize..3000, 0..50),
        ) {
            let mut seqs: Vec<u64> = (0..n).filter(|&s| !drop_mask[s as usize]).collect();
            let len = seqs.len();
            if len > 0 {
                for (a, b) in swaps {
                    seqs.swap(a % len, b % len);
                }
                for d in dups {
                    let v = seqs[d % len];
                    seqs.insert((d * 7) % (seqs.len() + 1), v);
                }
            }
            let mut t = SeqTracker::default();
            let mut seen = std::collections::HashSet::new();
            let mut max: Option<u64> = None;
            let (mut reord, mut dup) = (0, 0);
            for &s in &seqs {
                t.record(s);
                if !seen.insert(s) {
                    dup += 1;
                } else if max.is_some_and(|m| s < m) {
                    reord += 1;
                }
                max = max.max(Some(s));
            }
            prop_assert_eq!(t.received, seen.len() as u64);
            prop_assert_eq!(t.duplicates, dup);
            prop_assert_eq!(t.reordered, reord);
            prop_assert_eq!(t.lost(Some(n)), n - seen.len() as u64);
        }
    }

    #[test]
    fn human_table_has_every_count_and_the_percentiles() {
        let mut h = histogram();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let s = json!({"received": 4, "lost": 1, "loss_pct": 20.0, "reordered": 2,
                       "duplicates": 3, "too_old": 0, "corrupt": 5, "foreign": 6,
                       "pps": 4000.0, "window_s": 0.001, "latency_ns": latency_json(&h)});
        let t = human_table(&s);
        for want in [
            "received",
            "lost",
            "(20.000 %)",
            "reordered",
            "corrupt",
            "p99.9",
            "4.0 kpps",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        let line = |k: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(k))
                .unwrap()
                .to_owned()
        };
        assert!(line("corrupt").ends_with(" 5"), "{t}");
        assert!(t.contains(&fmt_ns(h.max())), "{t}");
        // no samples: no latency lines
        let t = human_table(&json!({"received": 0, "latency_ns": null}));
        assert!(!t.contains("latency"), "{t}");
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap_or_default();
        }
        let j = latency_json(&h);
        let p50 = j["p50"].as_u64().unwrap_or(0);
        assert!((499_000..=501_000).contains(&p50), "{p50}");
        assert!(j["p999"].as_u64().unwrap_or(0) >= 999_000);
        assert!(latency_json(&histogram()).is_null());
    }

    #[test]
    fn pacer_holds_a_rate() {
        let mut p = Pacer::new(20_000.0);
        let t = Instant::now();
        for _ in 0..100 {
            p.wait(20);
        }
        // 2000 datagrams at 20 kpps: the last batch may leave at 99 ms
        assert!(
            t.elapsed() >= Duration::from_millis(95),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn size_specs() {
        assert_eq!(sizes("imix").unwrap().len(), 12);
        assert_eq!(sizes("64,512").unwrap(), vec![64, 512]);
        assert!(sizes("big").is_err());
    }
}
