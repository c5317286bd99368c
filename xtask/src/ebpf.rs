//! Building the XDP program (`ebpf/`) and refreshing the object xsecd embeds
//! (`xsecd/bpf/xsec_xdp.o`).
//!
//! The program needs the nightly toolchain with `rust-src` (`-Z build-std=core` for
//! `bpfel-unknown-none`) and `bpf-linker`. Whatever is missing is installed first; if that
//! fails the caller keeps the checked-in object, which is built from the same source, so a
//! machine without the toolchain still builds and runs xsecd.

use crate::proc;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The bpf-linker that links with the LLVM of the installed nightly (newer ones want a newer
/// LLVM; see shared/AFXDP-NOTES.md).
const BPF_LINKER: &str = "bpf-linker@0.10.0";
const TARGET: &str = "bpfel-unknown-none";
/// What `ebpf/Cargo.toml` names its binary.
const BIN: &str = "xsec_xdp";
/// Where xsecd embeds it from, relative to the workspace root.
pub const OBJECT: &str = "xsecd/bpf/xsec_xdp.o";

/// Install what is missing, build `ebpf/` in release mode and copy the object to
/// [`OBJECT`] if it differs. `Ok(true)` if the checked-in object changed.
pub fn build_ebpf(root: &Path) -> Result<bool, String> {
    nightly_with_rust_src()?;
    let linker_dir = bpf_linker()?;
    let built = build(root, &linker_dir)?;
    install_object(&built, &root.join(OBJECT))
}

fn rustup() -> Command {
    let mut c = Command::new("rustup");
    clean_env(&mut c);
    c
}

/// A toolchain chosen or a build configured by the cargo that runs xtask must not leak into
/// the nightly BPF build.
fn clean_env(c: &mut Command) {
    for v in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO",
    ] {
        c.env_remove(v);
    }
}

fn nightly_with_rust_src() -> Result<(), String> {
    let list = proc::capture(rustup().args(["toolchain", "list"]));
    if !list.success() {
        return Err(format!(
            "rustup is needed for the nightly toolchain and `rustup toolchain list` failed: {}",
            list.stderr.trim()
        ));
    }
    if !list.stdout.lines().any(|l| l.starts_with("nightly")) {
        let start = Instant::now();
        println!("ebpf: no nightly toolchain: installing");
        if !proc::inherit(rustup().args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])) {
            return Err("`rustup toolchain install nightly` failed".into());
        }
        println!("ebpf: nightly installed in {:.0?}", start.elapsed());
    }
    if !rust_src_present() {
        println!("ebpf: nightly has no rust-src (build-std needs it): adding it");
        if !proc::inherit(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        {
            return Err("`rustup component add rust-src --toolchain nightly` failed".into());
        }
        if !rust_src_present() {
            return Err(
                "rust-src was added but the nightly sysroot still has no core source".into(),
            );
        }
    }
    Ok(())
}

fn rust_src_present() -> bool {
    let mut c = Command::new("rustc");
    clean_env(&mut c);
    let sysroot = proc::capture(c.args(["+nightly", "--print", "sysroot"]));
    sysroot.success()
        && Path::new(sysroot.stdout.trim())
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
}

/// Cargo's binary directory: `$CARGO_HOME/bin`, or `~/.cargo/bin`.
fn cargo_bin_dir() -> Option<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h).join("bin")),
        _ => env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").join("bin")),
    }
}

/// The directory holding `bpf-linker` (installing it into cargo's bin directory if needed).
fn bpf_linker() -> Result<PathBuf, String> {
    let find = || {
        let path = env::var_os("PATH").unwrap_or_default();
        env::split_paths(&path)
            .chain(cargo_bin_dir())
            .find(|d| d.join("bpf-linker").is_file())
    };
    if let Some(d) = find() {
        return Ok(d);
    }
    let start = Instant::now();
    println!("ebpf: bpf-linker missing: installing {BPF_LINKER} (about two minutes)");
    let mut c = Command::new("cargo");
    clean_env(&mut c);
    if !proc::inherit(c.args(["install", BPF_LINKER, "--locked"])) {
        return Err(format!("`cargo install {BPF_LINKER} --locked` failed"));
    }
    println!("ebpf: bpf-linker installed in {:.0?}", start.elapsed());
    find().ok_or_else(|| {
        "bpf-linker was installed but is neither on PATH nor in cargo's bin directory".into()
    })
}

/// Build `ebpf/` and return the path of the linked object.
fn build(root: &Path, linker_dir: &Path) -> Result<PathBuf, String> {
    let dir = root.join("ebpf");
    let target_dir = dir.join("target");
    // rustc invokes `bpf-linker` by name for the BPF target.
    let path = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(linker_dir.to_path_buf()).chain(env::split_paths(&path)))
            .map_err(|e| format!("cannot put {} on PATH: {e}", linker_dir.display()))?;
    let mut c = Command::new("cargo");
    clean_env(&mut c);
    c.current_dir(&dir)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "+nightly",
            "build",
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            TARGET,
        ]);
    if !proc::inherit(&mut c) {
        return Err(format!("building {} failed (output above)", dir.display()));
    }
    let obj = target_dir.join(TARGET).join("release").join(BIN);
    if obj.is_file() {
        Ok(obj)
    } else {
        Err(format!(
            "the build succeeded but {} is missing",
            obj.display()
        ))
    }
}

/// Copy `built` over `dest` unless they are already identical; `true` if `dest` changed.
fn install_object(built: &Path, dest: &Path) -> Result<bool, String> {
    let new = fs::read(built).map_err(|e| format!("reading {}: {e}", built.display()))?;
    if fs::read(dest).is_ok_and(|old| old == new) {
        return Ok(false);
    }
    // Write beside it and rename, so a concurrent build of xsecd never embeds half a file.
    let tmp = dest.with_extension("o.tmp");
    fs::write(&tmp, &new).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, dest).map_err(|e| format!("replacing {}: {e}", dest.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_when_different() {
        let dir = env::temp_dir().join(format!("xtask-ebpf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b.o"));
        fs::write(&a, b"one").unwrap();
        assert_eq!(install_object(&a, &b), Ok(true));
        assert_eq!(install_object(&a, &b), Ok(false));
        fs::write(&a, b"two").unwrap();
        assert_eq!(install_object(&a, &b), Ok(true));
        assert_eq!(fs::read(&b).unwrap(), b"two");
        fs::remove_dir_all(&dir).unwrap();
    }
}
