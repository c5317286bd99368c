//! xsec's set-up and task runner (std only, so that it builds in seconds on a fresh machine).
//!
//! * `cargo xtask test`: install what the tests need, lint, run every test, smoke-fuzz every
//!   target, and end with `xsec: N passed, M failed` (the line CI reads).
//! * `cargo xtask fuzz`: longer fuzz runs with a per-target report.
//! * `cargo xtask lab`: the lab (in-memory gateways until xsecd and its namespace lab land).
//!
//! Cargo commands spawned here never take the shared build lock: whoever runs xtask holds it.

mod fuzz;
mod proc;
mod setup;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--no-lint] [--no-fuzz] [--fuzz-seconds N]
        install what the tests need (Debian packages through the harness's install-deps.sh,
        the nightly toolchain, cargo-fuzz), then cargo fmt --check and cargo clippy
        (skipped by --no-lint), cargo test --workspace, and a fuzz smoke run of every
        target in fuzz/ (N seconds each, default 20; skipped by --no-fuzz). The last line
        is `xsec: N passed, M failed`; the exit status is non-zero if anything failed.
  fuzz [--seconds N] [TARGET...]
        fuzz each target (default: all of fuzz/fuzz_targets/) for N seconds (default 60)
        and report executions, exec/s, corpus size and crashes. Corpora: fuzz/corpus/.
  lab [--seconds N]
        run the lab for N seconds (default 10): two gateways and two hosts exchanging
        traffic through ESP (aes128gcm16 tunnel), live per-SA counters, the wire captured
        to target/lab/wire.pcap and decrypted by tshark; exit 0 only if encrypted traffic
        flowed both ways. Until xsecd lands the gateways are in-memory engines, not
        AF_XDP daemons in network namespaces.
  help  this text

environment:
  XSEC_HARNESS  the IPsec peer harness (default: <workspace>/../shared/harness)
";

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("xtask: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Parse a positive number of seconds.
fn parse_seconds(flag: &str, v: Option<String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a number of seconds"))?;
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: {v:?} is not a positive number of seconds")),
    }
}

/// Split `--flag=value` into (`--flag`, Some(value)).
fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
        _ => (arg, None),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        return usage_error("no command given");
    };
    match cmd.as_str() {
        "test" => {
            let mut opts = test::Options::default();
            while let Some(a) = args.next() {
                let (flag, inline) = split_flag(&a);
                match flag {
                    "--no-lint" if inline.is_none() => opts.lint = false,
                    "--no-fuzz" if inline.is_none() => opts.fuzz = false,
                    "--fuzz-seconds" => match parse_seconds(flag, inline.or_else(|| args.next())) {
                        Ok(n) => opts.fuzz_seconds = n,
                        Err(e) => return usage_error(&e),
                    },
                    _ => return usage_error(&format!("test: unknown argument {a:?}")),
                }
            }
            test::run(&opts)
        }
        "fuzz" => {
            let mut seconds = 60;
            let mut targets = vec![];
            while let Some(a) = args.next() {
                let (flag, inline) = split_flag(&a);
                match flag {
                    "--seconds" => match parse_seconds(flag, inline.or_else(|| args.next())) {
                        Ok(n) => seconds = n,
                        Err(e) => return usage_error(&e),
                    },
                    f if f.starts_with('-') => {
                        return usage_error(&format!("fuzz: unknown argument {a:?}"));
                    }
                    _ => targets.push(a),
                }
            }
            fuzz::command(seconds, &targets)
        }
        "lab" => {
            let mut seconds = 10;
            while let Some(a) = args.next() {
                let (flag, inline) = split_flag(&a);
                match flag {
                    "--seconds" => match parse_seconds(flag, inline.or_else(|| args.next())) {
                        Ok(n) => seconds = n,
                        Err(e) => return usage_error(&e),
                    },
                    _ => return usage_error(&format!("lab: unknown argument {a:?}")),
                }
            }
            lab(seconds)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage_error(&format!("unknown command {cmd:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The lab. Until xsecd (the AF_XDP daemon) lands, it runs the engine itself: two gateways as
// threads joined by an in-memory wire, host traffic both ways, live per-SA counters, and an
// independent decryption of the wire capture by tshark.

fn lab(seconds: u64) -> ExitCode {
    let root = workspace_root();
    // tshark and the harness check the capture; install them like the tests do
    if let Err(e) = setup::debian_packages(&root) {
        eprintln!("xtask lab: {e}");
        return ExitCode::FAILURE;
    }
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "xsec-dataplane",
            "--example",
            "lab",
            "--",
        ])
        .args(["--seconds", &seconds.to_string(), "--out"])
        .arg(root.join("target/lab"))
        .env("XSEC_HARNESS", setup::harness_dir(&root));
    if proc::inherit(&mut cmd) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_inline_flags() {
        assert_eq!(parse_seconds("--seconds", Some("20".into())), Ok(20));
        assert!(parse_seconds("--seconds", Some("0".into())).is_err());
        assert!(parse_seconds("--seconds", Some("x".into())).is_err());
        assert!(parse_seconds("--seconds", None).is_err());
        assert_eq!(
            split_flag("--fuzz-seconds=5"),
            ("--fuzz-seconds", Some("5".into()))
        );
        assert_eq!(split_flag("--no-lint"), ("--no-lint", None));
        assert_eq!(split_flag("inbound"), ("inbound", None));
    }

    #[test]
    fn root_has_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
