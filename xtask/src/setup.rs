//! Install what the tests need, idempotently: each step first checks, and does nothing (in
//! milliseconds) when the tool is already there.

use crate::proc;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Whether `name` is an executable file on PATH (or in the sbin directories, which a
/// non-login root shell may lack on PATH).
pub fn on_path(name: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .any(|d| is_executable(&d.join(name)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The IPsec peer harness directory.
pub fn harness_dir(root: &Path) -> PathBuf {
    match env::var_os("XSEC_HARNESS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root.join("..").join("shared").join("harness"),
    }
}

/// The Debian-side tools the interop tests use; the names of those missing.
fn missing_debian_tools() -> Vec<&'static str> {
    let mut missing = vec![];
    for tool in ["tshark", "tcpdump"] {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    if !is_executable(Path::new("/usr/lib/ipsec/charon")) {
        missing.push("/usr/lib/ipsec/charon");
    }
    let py = "/usr/bin/python3";
    if !proc::succeeds(Command::new(py).args(["-c", "import scapy, cryptography"])) {
        missing.push("python3 scapy + cryptography");
    }
    missing
}

/// Debian packages through the harness's `install-deps.sh` (which runs apt-get update).
pub fn debian_packages(root: &Path) -> Result<(), String> {
    let missing = missing_debian_tools();
    if missing.is_empty() {
        println!("setup: tshark, tcpdump, charon, scapy + cryptography present");
        return Ok(());
    }
    let harness = harness_dir(root);
    let script = harness.join("install-deps.sh");
    if !script.is_file() {
        return Err(format!(
            "missing {} and the IPsec peer harness is not at {} (no install-deps.sh there): \
             put the harness at <workspace>/../shared/harness or set XSEC_HARNESS to its directory",
            missing.join(", "),
            harness.display()
        ));
    }
    println!(
        "setup: missing {}: running {}",
        missing.join(", "),
        script.display()
    );
    let start = Instant::now();
    let ok = proc::inherit(
        Command::new("bash")
            .arg(&script)
            .current_dir(&harness)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if !ok {
        return Err(format!(
            "{} failed (it needs root and apt sources)",
            script.display()
        ));
    }
    let still = missing_debian_tools();
    if !still.is_empty() {
        return Err(format!(
            "{} ran but {} still missing",
            script.display(),
            still.join(", ")
        ));
    }
    println!(
        "setup: Debian packages installed in {}",
        proc::secs(start.elapsed())
    );
    Ok(())
}

/// What the namespace lab and the gateway tests run: iproute2 (`ip`), nftables (the NAT
/// router), ethtool (checksum offload off on the hosts' veths), ping, tcpdump and tshark.
pub fn lab_packages() -> Result<(), String> {
    let tools = [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("ethtool", "ethtool"),
        ("ping", "iputils-ping"),
        ("tcpdump", "tcpdump"),
        ("tshark", "tshark"),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| !on_path(t) && !is_executable(&Path::new("/usr/sbin").join(t)))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    let start = Instant::now();
    let apt = |args: &[&str]| {
        proc::inherit(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if !apt(&["update", "-q"]) {
        return Err("apt-get update failed (the lab needs root and apt sources)".into());
    }
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter());
    if !apt(&args) {
        return Err(format!("apt-get install {} failed", missing.join(" ")));
    }
    println!(
        "setup: lab packages installed in {}",
        proc::secs(start.elapsed())
    );
    Ok(())
}

/// Nightly's miri component (for the frame code's Miri run).
pub fn miri() -> Result<(), String> {
    let have = || {
        Command::new("cargo")
            .args(["+nightly", "miri", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have() {
        println!("setup: cargo miri missing: adding nightly's miri component");
        let add = Command::new("rustup")
            .args(["+nightly", "component", "add", "miri"])
            .status();
        if !add.is_ok_and(|s| s.success()) || !have() {
            return Err("rustup +nightly component add miri failed".into());
        }
    }
    // Miri's standard library is built from nightly's rust-src
    if !proc::inherit(Command::new("cargo").args(["+nightly", "miri", "setup"])) {
        return Err("cargo +nightly miri setup failed (it needs nightly's rust-src)".into());
    }
    Ok(())
}

/// rustfmt and clippy for the lint step (components of the default toolchain).
pub fn lint_tools() -> Result<(), String> {
    for (sub, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if proc::succeeds(Command::new("cargo").args([sub, "--version"])) {
            continue;
        }
        println!("setup: cargo {sub} missing: adding the {component} component");
        if !proc::inherit(Command::new("rustup").args(["component", "add", component])) {
            return Err(format!("rustup component add {component} failed"));
        }
    }
    Ok(())
}

/// The nightly toolchain, cargo-fuzz and a C++ compiler (libfuzzer-sys builds libFuzzer).
pub fn fuzz_tools() -> Result<(), String> {
    let nightly = proc::capture(Command::new("rustup").args(["toolchain", "list"]));
    if !nightly.success() {
        return Err(format!(
            "rustup toolchain list failed: {}",
            nightly.stderr.trim()
        ));
    }
    if !nightly.stdout.lines().any(|l| l.starts_with("nightly")) {
        let start = Instant::now();
        println!("setup: no nightly toolchain (cargo fuzz needs it): installing");
        if !proc::inherit(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ])) {
            return Err("rustup toolchain install nightly failed".into());
        }
        println!(
            "setup: nightly installed in {}",
            proc::secs(start.elapsed())
        );
    }
    if !proc::succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        let start = Instant::now();
        println!("setup: cargo-fuzz missing: installing (about a minute)");
        if !proc::inherit(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"])) {
            return Err("cargo install cargo-fuzz --locked failed".into());
        }
        println!(
            "setup: cargo-fuzz installed in {}",
            proc::secs(start.elapsed())
        );
    }
    if !on_path("c++") && !on_path("g++") {
        println!("setup: no C++ compiler (libfuzzer-sys builds libFuzzer): installing g++");
        if !proc::inherit(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "g++"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        ) {
            return Err("apt-get install g++ failed".into());
        }
    }
    let v = proc::capture(Command::new("cargo").args(["fuzz", "--version"]));
    println!("setup: {} with {}", v.stdout.trim(), nightly_version());
    Ok(())
}

fn nightly_version() -> String {
    let o = proc::capture(Command::new("rustc").arg("+nightly").arg("--version"));
    if o.success() {
        o.stdout.trim().to_owned()
    } else {
        "nightly (version unknown)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs() {
        assert!(on_path("sh"));
        assert!(!on_path("xsec-no-such-program"));
    }

    #[test]
    fn harness_default_is_beside_the_workspace() {
        if env::var_os("XSEC_HARNESS").is_none() {
            let h = harness_dir(Path::new("/w/main"));
            assert_eq!(h, Path::new("/w/main/../shared/harness"));
        }
    }
}
