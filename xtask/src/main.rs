//! xsec's set-up and task runner (std only, so that it builds in seconds on a fresh machine).
//!
//! * `cargo xtask test`: install what the tests need, lint, run every test, smoke-fuzz every
//!   target, and end with `xsec: N passed, M failed` (the line CI reads).
//! * `cargo xtask fuzz`: longer fuzz runs with a per-target report.
//! * `cargo xtask lab`: the namespace lab, two xsecd gateways on AF_XDP (see `xsec-lab`).
//!
//! Cargo commands spawned here never take the shared build lock: whoever runs xtask holds it.

mod ebpf;
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
        is `xsec: N passed, M failed` (`, K skipped` if anything could not run); the exit status is non-zero if anything failed.
  fuzz [--seconds N] [TARGET...]
        fuzz each target (default: all of fuzz/fuzz_targets/) for N seconds (default 60)
        and report executions, exec/s, corpus size and crashes. Corpora: fuzz/corpus/.
  lab [--seconds N] [--nat] [--udp-tunnel] [--plain] [--ike] [--keep]
        install what the lab needs (iproute2, nftables, ethtool, ping, tcpdump, tshark;
        the eBPF toolchain if it can), build xsecd and xsec-lab, then run the lab:
        network namespaces host A - gateway A - [NAT router] - gateway B - host B, two
        xsecd on AF_XDP, ping/UDP/TCP both ways for N seconds (default 20), live per-SA
        counters, a capture of the middle link checked to carry only ESP and decrypted by
        tshark. --nat puts a masquerading router between the gateways (NAT-T, UDP 4500),
        --udp-tunnel uses ESP-in-UDP on port 2746 with heartbeats, --plain runs the same
        topology with kernel forwarding and no IPsec (the baseline), --ike negotiates the
        SAs with xsec-ike on both gateways (IKEv2, PSK; rekeys shown live) instead of
        manual keys, --keep leaves it up. Exits 0 only if encrypted traffic flowed both ways.
  ebpf  build the XDP program (ebpf/) and refresh the checked-in xsecd/bpf/xsec_xdp.o that
        xsecd embeds (installs nightly rust-src and bpf-linker 0.10 if missing)
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
            let rest: Vec<String> = args.collect();
            for (i, a) in rest.iter().enumerate() {
                let (flag, inline) = split_flag(a);
                match flag {
                    "--seconds" => {
                        let v = inline.or_else(|| rest.get(i + 1).cloned());
                        if let Err(e) = parse_seconds(flag, v) {
                            return usage_error(&e);
                        }
                    }
                    "--nat" | "--udp-tunnel" | "--plain" | "--keep" | "--ike" => {}
                    f if f.starts_with('-') => {
                        return usage_error(&format!("lab: unknown argument {a:?}"));
                    }
                    _ => {}
                }
            }
            lab(&rest)
        }
        "ebpf" => {
            let root = workspace_root();
            match ebpf::build_ebpf(&root) {
                Ok(changed) => {
                    println!(
                        "xtask ebpf: xsecd/bpf/xsec_xdp.o {}",
                        if changed { "updated" } else { "unchanged" }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask ebpf: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage_error(&format!("unknown command {cmd:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The lab: two xsecd on AF_XDP in network namespaces (the xsec-lab binary does the work).

/// Build the XDP program if the toolchain is there (installing it if need be); otherwise keep
/// the checked-in object that xsecd embeds. `Ok(true)`: the checked-in object was stale (and
/// is now replaced by the build).
pub fn ebpf_object(root: &Path) -> Result<bool, String> {
    let r = ebpf::build_ebpf(root);
    match &r {
        Ok(true) => println!("setup: eBPF object rebuilt: xsecd/bpf/xsec_xdp.o updated"),
        Ok(false) => println!("setup: eBPF object rebuilt: identical to the checked-in one"),
        Err(e) => println!(
            "setup: cannot build the eBPF program here ({e}); xsecd embeds the checked-in \
             xsecd/bpf/xsec_xdp.o"
        ),
    }
    r
}

fn lab(args: &[String]) -> ExitCode {
    let root = workspace_root();
    if let Err(e) = setup::lab_packages() {
        eprintln!("xtask lab: {e}");
        return ExitCode::FAILURE;
    }
    // stale or not buildable here: the lab runs what the build left (said above)
    let _ = ebpf_object(&root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(&cargo);
    build.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "xsecd",
        "-p",
        "xsec-lab",
        "-p",
        "xsec-ike",
    ]);
    if !proc::inherit(&mut build) {
        eprintln!("xtask lab: build failed");
        return ExitCode::FAILURE;
    }
    let bin = root.join("target/release");
    let mut cmd = std::process::Command::new(bin.join("xsec-lab"));
    cmd.arg("run").arg("--xsecd").arg(bin.join("xsecd"));
    for a in args {
        // `--ike`: the IKE daemon built above negotiates the SAs
        if a == "--ike" {
            cmd.arg("--ike").arg(bin.join("xsec-ike"));
        } else {
            cmd.arg(a);
        }
    }
    cmd.current_dir(&root);
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
