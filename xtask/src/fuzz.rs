//! cargo-fuzz targets: build them, run them for a fixed time, read libFuzzer's report.

use crate::{proc, setup, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Seconds libFuzzer may spend on one input before it reports a timeout (a hang fails the
/// target instead of eating the whole run).
const UNIT_TIMEOUT: u64 = 10;

/// The cargo-fuzz crate.
pub fn fuzz_dir(root: &Path) -> PathBuf {
    root.join("fuzz")
}

/// Every target in fuzz/fuzz_targets/, sorted.
pub fn targets(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fuzz_dir(root).join("fuzz_targets"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    v.sort();
    v
}

/// What libFuzzer reported about one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Inputs executed.
    pub runs: Option<u64>,
    pub exec_per_sec: Option<u64>,
    /// Inputs in the in-memory corpus at the end (`corp: N/...`).
    pub corpus: Option<u64>,
    /// Paths of the inputs libFuzzer wrote out (crash-, leak-, timeout-, oom-).
    pub artifacts: Vec<String>,
    /// The first panic message (`panicked at ...` and the message line after it).
    pub panic: Option<String>,
    /// libFuzzer's own error line (`==N== ERROR: libFuzzer: deadly signal`, ...).
    pub error: Option<String>,
}

fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    num.parse().ok()
}

/// A libFuzzer status line, `#1234<TAB>NEW ...` at the start of the line (not a stack
/// frame of a crash report, `    #12 0x... in ...`).
fn is_status(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with('\t')
}

/// Read libFuzzer's stderr: the last `#N ... DONE` status line (or the last `#N` line if it
/// never got there) and `Done N runs in S second(s)`, crash artifacts and panic messages.
pub fn parse_libfuzzer(out: &str) -> Stats {
    let mut s = Stats::default();
    let mut last_status: Option<&str> = None;
    let mut done_status: Option<&str> = None;
    let mut done_runs: Option<(u64, u64)> = None;
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if is_status(line) {
            last_status = Some(line);
            if line.contains("DONE") {
                done_status = Some(line);
            }
        } else if let Some(rest) = t.strip_prefix("Done ") {
            // "Done 123 runs in 20 second(s)"
            let mut w = rest.split_whitespace();
            let runs = w.next().and_then(|n| n.parse().ok());
            let secs = w.nth(2).and_then(|n| n.parse().ok());
            if let (Some(r), Some(sec)) = (runs, secs) {
                done_runs = Some((r, sec));
            }
        } else if let Some(i) = t.find("Test unit written to ") {
            s.artifacts
                .push(t[i + "Test unit written to ".len()..].trim().to_owned());
        } else if t.contains("panicked at") && s.panic.is_none() {
            let msg = lines.peek().map(|l| l.trim()).unwrap_or_default();
            s.panic = Some(if msg.is_empty() {
                t.to_owned()
            } else {
                format!("{t} {msg}")
            });
        } else if t.contains("ERROR: libFuzzer:") && s.error.is_none() {
            s.error = Some(t.to_owned());
        }
    }
    if let Some(st) = done_status.or(last_status) {
        s.runs = st[1..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok());
        s.exec_per_sec = field(st, "exec/s:");
        s.corpus = field(st, "corp:");
    }
    if let Some((r, sec)) = done_runs {
        s.runs = Some(r);
        if s.exec_per_sec.is_none() && sec > 0 {
            s.exec_per_sec = Some(r / sec);
        }
    }
    s
}

/// The outcome of fuzzing one target.
#[derive(Debug)]
pub struct Outcome {
    pub target: String,
    pub ok: bool,
    pub stats: Stats,
    /// Files and bytes in fuzz/corpus/TARGET afterwards.
    pub corpus_files: usize,
    pub corpus_bytes: u64,
    pub elapsed: Duration,
    /// Why it failed, when it did.
    pub why: String,
    pub output: String,
}

impl Outcome {
    pub fn crashes(&self) -> usize {
        if self.ok {
            0
        } else {
            self.stats.artifacts.len().max(1)
        }
    }

    pub fn line(&self) -> String {
        let runs = self
            .stats
            .runs
            .map_or("? runs".to_owned(), |r| format!("{r} runs"));
        let eps = self
            .stats
            .exec_per_sec
            .map_or("? exec/s".to_owned(), |e| format!("{e} exec/s"));
        let status = if self.ok { "ok" } else { "FAILED" };
        format!(
            "fuzz {:<22} {status}: {runs}, {eps}, corpus {} files ({} bytes), {} crash(es) [{}]",
            self.target,
            self.corpus_files,
            self.corpus_bytes,
            self.crashes(),
            proc::secs(self.elapsed)
        )
    }
}

fn corpus_size(dir: &Path) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = e.metadata()
            && m.is_file()
        {
            n += 1;
            bytes += m.len();
        }
    }
    (n, bytes)
}

/// `cargo +nightly fuzz build`: every target at once (the runs then build nothing).
pub fn build(root: &Path) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "build"]).current_dir(root);
    println!("$ {}", proc::show(&cmd));
    proc::flush();
    let o = proc::capture(&mut cmd);
    if o.success() {
        println!("fuzz targets built in {}", proc::secs(o.elapsed));
        Ok(())
    } else {
        eprintln!("{}", proc::tail(&o.stderr, 60));
        Err(format!(
            "cargo +nightly fuzz build failed ({})",
            o.describe()
        ))
    }
}

/// Fuzz one target for `seconds`. Its init writes seed inputs into the corpus directory
/// named by XSEC_FUZZ_SEED_DIR.
pub fn run_target(root: &Path, target: &str, seconds: u64) -> Outcome {
    let corpus = fuzz_dir(root).join("corpus").join(target);
    let _ = std::fs::create_dir_all(&corpus);
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT}"))
        .current_dir(root)
        .env("XSEC_FUZZ_SEED_DIR", &corpus);
    println!("$ {}", proc::show(&cmd));
    proc::flush();
    let start = Instant::now();
    let o = proc::capture(&mut cmd);
    let stats = parse_libfuzzer(&o.stderr);
    let (corpus_files, corpus_bytes) = corpus_size(&corpus);
    let mut why = String::new();
    if !o.success() {
        why = stats
            .panic
            .clone()
            .or_else(|| stats.error.clone())
            .unwrap_or_else(|| format!("cargo fuzz run exited with {}", o.describe()));
    } else if stats.runs.is_none() {
        why = "libFuzzer reported no executions".into();
    }
    Outcome {
        target: target.to_owned(),
        ok: why.is_empty(),
        stats,
        corpus_files,
        corpus_bytes,
        elapsed: start.elapsed(),
        why,
        output: format!("{}{}", o.stdout, o.stderr),
    }
}

/// The part of libFuzzer's output that tells what went wrong: from the first panic or
/// sanitizer report on, at most `n` lines (cargo fuzz's own epilogue is not interesting).
fn crash_excerpt(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.contains("panicked at")
                || l.contains("ERROR: libFuzzer")
                || l.contains("ERROR: AddressSanitizer")
        })
        .unwrap_or(lines.len().saturating_sub(n));
    lines[start..]
        .iter()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex_of(path: &str, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let h = hex::encode(&b[..b.len().min(max)]);
            let more = if b.len() > max { "..." } else { "" };
            format!("{} bytes: {h}{more}", b.len())
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Print one outcome, with the evidence when it failed.
pub fn report(o: &Outcome) {
    println!("{}", o.line());
    if !o.ok {
        println!("  why: {}", o.why);
        for a in &o.stats.artifacts {
            println!("  input {a} ({})", hex_of(a, 512));
            println!("  reproduce: cargo +nightly fuzz run {} {a}", o.target);
        }
        // A panic says everything in `why`; a sanitizer report, timeout or OOM needs its text.
        if o.stats.panic.is_none() {
            for l in crash_excerpt(&o.output, 25).lines() {
                println!("  | {l}");
            }
        }
    }
    proc::flush();
}

/// Fuzz `which` (all targets when empty) for `seconds` each; results in target order.
/// Err if the tools or the build failed.
pub fn run_all(root: &Path, which: &[String], seconds: u64) -> Result<Vec<Outcome>, String> {
    build(root)?;
    let mut out = vec![];
    for t in which {
        let o = run_target(root, t, seconds);
        report(&o);
        out.push(o);
    }
    Ok(out)
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`.
pub fn command(seconds: u64, requested: &[String]) -> ExitCode {
    let root = workspace_root();
    let all = targets(&root);
    if all.is_empty() {
        eprintln!(
            "xtask: no fuzz targets in {}",
            fuzz_dir(&root).join("fuzz_targets").display()
        );
        return ExitCode::FAILURE;
    }
    for t in requested {
        if !all.contains(t) {
            eprintln!(
                "xtask: no fuzz target {t:?}; the targets are: {}",
                all.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let which = if requested.is_empty() {
        all
    } else {
        requested.to_vec()
    };
    if let Err(e) = setup::fuzz_tools() {
        eprintln!("xtask: set-up failed: {e}");
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let outcomes = match run_all(&root, &which, seconds) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "== fuzz summary ({seconds} s per target, {} in all)",
        proc::secs(start.elapsed())
    );
    for o in &outcomes {
        println!("{}", o.line());
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    println!(
        "xsec fuzz: {} passed, {failed} failed",
        outcomes.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "\
INFO: Seed: 123
#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 40Mb
#1024\tpulse  cov: 80 ft: 90 corp: 7/120b lim: 4 exec/s: 512 rss: 41Mb
#65536\tNEW    cov: 81 ft: 92 corp: 8/130b lim: 4 exec/s: 3276 rss: 41Mb L: 9/9 MS: 1 ChangeBit-
#412345\tDONE   cov: 99 ft: 120 corp: 31/2Kb lim: 4096 exec/s: 19635 rss: 60Mb
Done 412345 runs in 21 second(s)
";

    #[test]
    fn parses_a_finished_run() {
        let s = parse_libfuzzer(DONE);
        assert_eq!(s.runs, Some(412_345));
        assert_eq!(s.exec_per_sec, Some(19_635));
        assert_eq!(s.corpus, Some(31));
        assert!(s.artifacts.is_empty() && s.panic.is_none() && s.error.is_none());
    }

    #[test]
    fn parses_a_crash() {
        let out = "\
#1024\tpulse  cov: 80 ft: 90 corp: 7/120b lim: 4 exec/s: 512 rss: 41Mb

thread '<unnamed>' panicked at fuzz_targets/inbound.rs:10:5:
forwarded a malformed packet
==77== ERROR: libFuzzer: deadly signal
    #0 0x5581 in __sanitizer_print_stack_trace
    #35 0x5582 in _start
MS: 2 ChangeBit-CopyPart-; base unit: 0000
artifact_prefix='/w/fuzz/artifacts/inbound/'; Test unit written to /w/fuzz/artifacts/inbound/crash-abcd
Base64: AAEC
";
        let s = parse_libfuzzer(out);
        assert_eq!(s.runs, Some(1024));
        assert_eq!(
            s.artifacts,
            vec!["/w/fuzz/artifacts/inbound/crash-abcd".to_owned()]
        );
        assert_eq!(
            s.panic.as_deref(),
            Some(
                "thread '<unnamed>' panicked at fuzz_targets/inbound.rs:10:5: forwarded a malformed packet"
            )
        );
        assert_eq!(
            s.error.as_deref(),
            Some("==77== ERROR: libFuzzer: deadly signal")
        );
    }

    #[test]
    fn excerpt_starts_at_the_panic() {
        let out = "a\nb\nthread '<unnamed>' panicked at x.rs:1:1:\nboom\nc\n";
        assert_eq!(
            crash_excerpt(out, 2),
            "thread '<unnamed>' panicked at x.rs:1:1:\nboom"
        );
        assert_eq!(crash_excerpt("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn done_line_alone_gives_runs_and_rate() {
        let s = parse_libfuzzer("Done 600 runs in 3 second(s)\n");
        assert_eq!((s.runs, s.exec_per_sec), (Some(600), Some(200)));
    }
}
