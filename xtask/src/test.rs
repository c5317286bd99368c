//! `cargo xtask test`: set-up, lint, tests, fuzz smoke run, and the `xsec: N passed, M failed`
//! line CI reads.

use crate::{fuzz, proc, setup, workspace_root};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Options {
    pub lint: bool,
    pub fuzz: bool,
    pub fuzz_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lint: true,
            fuzz: true,
            fuzz_seconds: 10,
        }
    }
}

/// What `cargo test` printed, summed over every test binary and doc-test run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// `test result:` lines seen (one per test binary that finished).
    pub results: u64,
    /// Binaries cargo reports as failed that printed no `test result: FAILED` line (a crash,
    /// an abort, a custom harness that exited non-zero).
    pub crashed: u64,
}

fn count_before(part: &str, word: &str) -> Option<u64> {
    let p = part.trim();
    let n = p.strip_suffix(word)?.trim();
    n.parse().ok()
}

/// Sum every `test result: ... N passed; M failed; K ignored; ...` line.
pub fn parse_test_output(stdout: &str, stderr: &str) -> TestCounts {
    let mut c = TestCounts::default();
    let mut failed_results = 0;
    for line in stdout.lines().chain(stderr.lines()) {
        let Some(i) = line.find("test result: ") else {
            continue;
        };
        let rest = &line[i + "test result: ".len()..];
        // "ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        let Some((status, counts)) = rest.split_once(". ") else {
            continue;
        };
        c.results += 1;
        if status.trim() == "FAILED" {
            failed_results += 1;
        }
        for part in counts.split(';') {
            if let Some(n) = count_before(part, "passed") {
                c.passed += n;
            } else if let Some(n) = count_before(part, "failed") {
                c.failed += n;
            } else if let Some(n) = count_before(part, "ignored") {
                c.ignored += n;
            }
        }
    }
    // With --no-fail-fast cargo prints one "error: test failed, to rerun pass ..." per
    // failed binary.
    let failed_binaries = stderr
        .lines()
        .filter(|l| l.starts_with("error: test failed"))
        .count() as u64;
    c.crashed = failed_binaries.saturating_sub(failed_results);
    c
}

/// One part of the run, for the summary.
#[derive(Debug)]
struct Part {
    name: &'static str,
    passed: u64,
    failed: u64,
    skipped: u64,
    note: String,
    secs: String,
}

fn header(name: &str) -> Instant {
    println!("\n== {name}");
    proc::flush();
    Instant::now()
}

fn footer(name: &str, start: Instant) -> String {
    let s = proc::secs(start.elapsed());
    println!("== {name}: {s}");
    proc::flush();
    s
}

fn finish(parts: &[Part], total: Instant) -> ExitCode {
    println!("\n== summary ({})", proc::secs(total.elapsed()));
    for p in parts {
        println!(
            "{:<6} {:>5} passed {:>3} failed {:>3} skipped  {:<10} {}",
            p.name, p.passed, p.failed, p.skipped, p.secs, p.note
        );
    }
    let passed: u64 = parts.iter().map(|p| p.passed).sum();
    let failed: u64 = parts.iter().map(|p| p.failed).sum();
    let skipped: u64 = parts.iter().map(|p| p.skipped).sum();
    if skipped > 0 {
        println!("xsec: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("xsec: {passed} passed, {failed} failed");
    }
    proc::flush();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Set-up; what the eBPF build said (see [`ebpf_part`]).
fn setup_all(root: &Path, opts: &Options) -> Result<Result<bool, String>, String> {
    setup::debian_packages(root)?;
    setup::lab_packages()?;
    // The XDP program is rebuilt from source whenever the toolchain can be had, so the tests
    // run what ebpf/ says; without it, xsecd embeds the checked-in object.
    let ebpf = crate::ebpf_object(root);
    if opts.lint {
        setup::lint_tools()?;
    }
    if opts.fuzz {
        setup::fuzz_tools()?;
    }
    Ok(ebpf)
}

/// The checked-in XDP object against what `ebpf/` builds to: passed when identical, failed
/// when it was stale (the build replaced it: commit the new one), skipped (and counted so)
/// when the toolchain cannot be had here.
fn ebpf_part(built: Result<bool, String>) -> Part {
    let (passed, failed, skipped, note) = match built {
        Ok(false) => (
            1,
            0,
            0,
            "xsecd/bpf/xsec_xdp.o is what ebpf/ builds".to_owned(),
        ),
        Ok(true) => (
            0,
            1,
            0,
            "FAILED: xsecd/bpf/xsec_xdp.o was stale; the rebuilt object is in the work tree: \
             commit it"
                .to_owned(),
        ),
        Err(e) => (
            0,
            0,
            1,
            format!("skipped: the eBPF toolchain is not here ({e})"),
        ),
    };
    Part {
        name: "ebpf",
        passed,
        failed,
        skipped,
        note,
        secs: String::new(),
    }
}

fn lint(root: &Path) -> Part {
    let start = header("lint");
    let mut failures = vec![];
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args).current_dir(root);
        c
    };
    if !proc::inherit(&mut cargo(&["fmt", "--all", "--", "--check"])) {
        failures.push("cargo fmt --check");
    }
    // The fuzz crate has its own workspace: check its formatting too.
    let fuzz_manifest = fuzz::fuzz_dir(root).join("Cargo.toml");
    if fuzz_manifest.is_file() {
        let m = fuzz_manifest.to_string_lossy().into_owned();
        if !proc::inherit(&mut cargo(&["fmt", "--manifest-path", &m, "--", "--check"])) {
            failures.push("cargo fmt --check (fuzz)");
        }
    }
    if !proc::inherit(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])) {
        failures.push("cargo clippy");
    }
    // The dataplane's `test-hooks` (chosen IV seeds, moving sequence numbers) may serve tests,
    // benches, fuzzing and pktgen, never the daemon: xsecd built alone must not enable them.
    let tree = Command::new("cargo")
        .args(["tree", "-p", "xsecd", "-e", "normal", "--prefix", "none"])
        .args(["-f", "{p} [{f}]"])
        .current_dir(root)
        .output();
    match tree {
        Ok(o) if o.status.success() => {
            let out = String::from_utf8_lossy(&o.stdout);
            if out.lines().any(|l| l.contains("test-hooks")) {
                println!("lint: xsecd's dependency graph enables xsec-dataplane/test-hooks");
                failures.push("xsecd enables test-hooks");
            }
        }
        _ => failures.push("cargo tree -p xsecd"),
    }
    let secs = footer("lint", start);
    if failures.is_empty() {
        Part {
            name: "lint",
            passed: 1,
            failed: 0,
            skipped: 0,
            note: "fmt, clippy clean; xsecd without test-hooks".into(),
            secs,
        }
    } else {
        let note = format!("FAILED: {}", failures.join(", "));
        println!("lint {note}");
        Part {
            name: "lint",
            passed: 0,
            failed: 1,
            skipped: 0,
            note,
            secs,
        }
    }
}

fn tests(root: &Path) -> Part {
    let start = header("test");
    let o = proc::tee(
        Command::new("cargo")
            .args(["test", "--workspace", "--no-fail-fast"])
            .current_dir(root),
    );
    let c = parse_test_output(&o.stdout, &o.stderr);
    let mut failed = c.failed + c.crashed;
    let mut note = format!("{} ignored, {} test binaries", c.ignored, c.results);
    if c.crashed > 0 {
        note.push_str(&format!(
            ", {} binaries failed without a result line",
            c.crashed
        ));
    }
    if !o.success() && failed == 0 {
        // A build error, or cargo itself failed: no test result says so.
        failed = 1;
        note.push_str(&format!(
            ", cargo test failed ({}) without a failed test: see above",
            o.describe()
        ));
    }
    let secs = footer("test", start);
    println!(
        "tests: {} passed, {} failed, {} ignored",
        c.passed,
        c.failed + c.crashed,
        c.ignored
    );
    Part {
        name: "test",
        passed: c.passed,
        failed,
        // #[ignore]d tests did not run: counted, never hidden
        skipped: c.ignored,
        note,
        secs,
    }
}

/// The shared anti-replay window under loom (every interleaving of two workers): the
/// dataplane with its `loom` feature, which only swaps that module's atomics.
fn loom(root: &Path) -> Part {
    let start = header("loom");
    let o = proc::tee(
        Command::new("cargo")
            .args([
                "test",
                "-p",
                "xsec-dataplane",
                "--features",
                "loom",
                "--lib",
                "replay::shared::loom_tests",
            ])
            .current_dir(root),
    );
    let c = parse_test_output(&o.stdout, &o.stderr);
    let mut failed = c.failed + c.crashed;
    let mut note = String::from("replay::shared under loom");
    if (!o.success() || c.passed == 0) && failed == 0 {
        failed = 1;
        note.push_str(&format!(
            ", cargo test failed ({}) or ran nothing",
            o.describe()
        ));
    }
    let secs = footer("loom", start);
    println!("loom: {} passed, {failed} failed", c.passed);
    Part {
        name: "loom",
        passed: c.passed,
        failed,
        skipped: c.ignored,
        note,
        secs,
    }
}

/// The unsafe frame code of `xsecd/src/xsk.rs` (the UMEM mapping, frames cut from it, the
/// replay backend's receive and send) under Miri, which checks every access for undefined
/// behaviour. The AF_XDP rings themselves need a kernel socket Miri cannot open. Skipped, and
/// counted so, when nightly's miri component cannot be had.
fn miri(root: &Path) -> Part {
    let start = header("miri");
    let (passed, failed, skipped, note) = match setup::miri() {
        Err(e) => (0, 0, 1, format!("skipped: {e}")),
        Ok(()) => {
            let o = proc::tee(
                Command::new("cargo")
                    .args(["+nightly", "miri", "test", "-p", "xsecd", "--lib", "xsk::"])
                    .current_dir(root),
            );
            let c = parse_test_output(&o.stdout, &o.stderr);
            let failed = c.failed + c.crashed + u64::from(!o.success() && c.failed == 0);
            (
                c.passed,
                failed,
                0,
                format!(
                    "xsk.rs frame code: {} tests under Miri",
                    c.passed + c.failed
                ),
            )
        }
    };
    let secs = footer("miri", start);
    Part {
        name: "miri",
        passed,
        failed,
        skipped,
        note,
        secs,
    }
}

fn fuzz_smoke(root: &Path, seconds: u64) -> Part {
    let start = header(&format!("fuzz ({seconds} s per target)"));
    let targets = fuzz::targets(root);
    let (passed, failed, note) = if targets.is_empty() {
        (
            0,
            1,
            format!(
                "no fuzz targets in {}",
                fuzz::fuzz_dir(root).join("fuzz_targets").display()
            ),
        )
    } else {
        match fuzz::run_all(root, &targets, seconds) {
            Ok(outcomes) => {
                let failed: Vec<&str> = outcomes
                    .iter()
                    .filter(|o| !o.ok)
                    .map(|o| o.target.as_str())
                    .collect();
                let runs: u64 = outcomes.iter().filter_map(|o| o.stats.runs).sum();
                let mut note = format!("{} targets, {runs} executions", outcomes.len());
                if !failed.is_empty() {
                    note.push_str(&format!("; FAILED: {}", failed.join(", ")));
                }
                (
                    (outcomes.len() - failed.len()) as u64,
                    failed.len() as u64,
                    note,
                )
            }
            // Nothing could run: every target fails.
            Err(e) => (0, targets.len() as u64, e),
        }
    };
    let secs = footer("fuzz", start);
    Part {
        name: "fuzz",
        passed,
        failed,
        skipped: 0,
        note,
        secs,
    }
}

pub fn run(opts: &Options) -> ExitCode {
    let total = Instant::now();
    let root = workspace_root();
    let mut parts = vec![];

    let start = header("setup");
    let r = setup_all(&root, opts);
    let secs = footer("setup", start);
    match r {
        Err(e) => {
            eprintln!("xtask: set-up failed: {e}");
            parts.push(Part {
                name: "setup",
                passed: 0,
                failed: 1,
                skipped: 0,
                note: e,
                secs,
            });
            return finish(&parts, total);
        }
        Ok(ebpf) => parts.push(ebpf_part(ebpf)),
    }

    if opts.lint {
        parts.push(lint(&root));
    }
    parts.push(tests(&root));
    parts.push(loom(&root));
    parts.push(miri(&root));
    if opts.fuzz {
        parts.push(fuzz_smoke(&root, opts.fuzz_seconds));
    }
    finish(&parts, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines() {
        let out = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s
   Doc-tests xsec_dataplane
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let err = "error: test failed, to rerun pass `--test interop`\n";
        let c = parse_test_output(out, err);
        assert_eq!(
            c,
            TestCounts {
                passed: 13,
                failed: 2,
                ignored: 1,
                results: 3,
                crashed: 0
            }
        );
    }

    #[test]
    fn a_binary_that_died_counts() {
        let out = "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n";
        let err = "error: test failed, to rerun pass `--lib`\n\nCaused by:\n  process didn't exit successfully (signal: 11, SIGSEGV)\n";
        let c = parse_test_output(out, err);
        assert_eq!((c.passed, c.failed, c.crashed), (4, 0, 1));
    }
}
