//! CPU accounting from `/proc` for `xsec-lab bench`: per-CPU busy time (`/proc/stat`), a
//! process's own CPU time (`/proc/<pid>/stat`, all threads), the CPU model and the flags that
//! matter for the crypto kernels (`/proc/cpuinfo`). `/proc/stat` and `/proc/cpuinfo` are the
//! machine's, whatever namespace the reader is in.

use std::time::Instant;

use crate::{Result, err};

/// A process's resident memory (`VmRSS` of `/proc/<pid>/status`), KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| err!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| err!("/proc/{pid}/status: no VmRSS"))
}

/// The cpuinfo flags that tell which AES-GCM kernels can run.
pub const CRYPTO_FLAGS: [&str; 7] = [
    "aes",
    "pclmulqdq",
    "vaes",
    "vpclmulqdq",
    "avx2",
    "avx512f",
    "sha_ni",
];

/// One CPU's counters from a `cpuN` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
    /// The softirq part of `busy` (where kernel forwarding and veth delivery run).
    pub softirq: u64,
    /// Time the hypervisor gave to someone else.
    pub steal: u64,
}

/// Per-CPU busy and steal share between two samples, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub busy_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
}

/// A `/proc/stat` sample: one entry per CPU (`cpu0`, `cpu1`, ...; the total line is skipped).
#[derive(Debug, Clone)]
pub struct StatSample {
    pub at: Instant,
    pub cpus: Vec<CpuTimes>,
}

/// Parse the `cpuN` lines of `/proc/stat`.
pub fn parse_stat(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            let f = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest is inside user)
            CpuTimes {
                busy: f(0) + f(1) + f(2) + f(5) + f(6),
                idle: f(3) + f(4),
                softirq: f(6),
                steal: f(7),
            }
        })
        .collect()
}

/// Sample `/proc/stat` now.
pub fn sample() -> StatSample {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    StatSample {
        at: Instant::now(),
        cpus: parse_stat(&text),
    }
}

/// Per-CPU use between two samples.
pub fn cpu_use(before: &StatSample, after: &StatSample) -> Vec<CpuUse> {
    before
        .cpus
        .iter()
        .zip(&after.cpus)
        .map(|(b, a)| {
            let busy = a.busy.saturating_sub(b.busy) as f64;
            let idle = a.idle.saturating_sub(b.idle) as f64;
            let steal = a.steal.saturating_sub(b.steal) as f64;
            let softirq = a.softirq.saturating_sub(b.softirq) as f64;
            let total = busy + idle + steal;
            if total <= 0.0 {
                CpuUse::default()
            } else {
                CpuUse {
                    busy_pct: 100.0 * busy / total,
                    softirq_pct: 100.0 * softirq / total,
                    steal_pct: 100.0 * steal / total,
                }
            }
        })
        .collect()
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in parentheses may contain spaces, so counting starts after the last `)`).
pub fn parse_proc_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by process `pid` (`"self"` for this one), all threads.
pub fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_proc_ticks(&text)?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The CPU model and which of [`CRYPTO_FLAGS`] it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: String,
    pub cpus: usize,
    pub flags: Vec<(&'static str, bool)>,
}

pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    CpuInfo {
        model: field("model name").unwrap_or_else(|| "unknown".into()),
        cpus: text.lines().filter(|l| l.starts_with("processor")).count(),
        flags: CRYPTO_FLAGS
            .iter()
            .map(|f| (*f, have.contains(f)))
            .collect(),
    }
}

pub fn cpuinfo() -> CpuInfo {
    parse_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let before = StatSample {
            at: Instant::now(),
            cpus: parse_stat(
                "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\n\
                 cpu1 0 0 0 1000 0 0 0 0 0 0\nintr 5\n",
            ),
        };
        assert_eq!(before.cpus.len(), 2);
        let after = StatSample {
            at: Instant::now(),
            cpus: parse_stat("cpu0 200 0 90 850 50 0 10 0 0 0\ncpu1 10 0 0 1080 0 0 0 10 0 0\n"),
        };
        let u = cpu_use(&before, &after);
        assert!((u[0].busy_pct - 75.0).abs() < 1e-9, "{u:?}");
        assert!((u[0].softirq_pct - 5.0).abs() < 1e-9, "{u:?}");
        assert!((u[1].busy_pct - 10.0).abs() < 1e-9, "{u:?}");
        assert!((u[1].steal_pct - 10.0).abs() < 1e-9, "{u:?}");
    }

    #[test]
    fn proc_stat_and_cpuinfo() {
        let t = "42 (x sec) d) S 1 42 42 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 3 0";
        assert_eq!(parse_proc_ticks(t), Some(320));
        assert!(proc_cpu_seconds("self").is_some());
        let c = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu aes avx2 sha_ni\n\
             processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu aes avx2 sha_ni\n",
        );
        assert_eq!(c.model, "AMD EPYC 7B13");
        assert_eq!(c.cpus, 2);
        assert!(c.flags.contains(&("aes", true)));
        assert!(c.flags.contains(&("vaes", false)));
    }
}
