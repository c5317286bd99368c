//! Locating the executables the lab runs: `xsecd` and `xsec-lab` itself (whose traffic
//! subcommands run inside the namespaces).
//!
//! An integration test of another package cannot name these binaries with
//! `env!("CARGO_BIN_EXE_...")`, and `cargo test -p xsec-interop-tests` does not build them.
//! So [`executables`] runs `cargo build --message-format=json -p xsecd -p xsec-lab --bins`
//! (the cargo that runs the tests, `$CARGO`; it releases the build lock before running test
//! binaries, so this nests) and takes each binary's path from cargo's `compiler-artifact`
//! messages — whatever the target folder or profile. `XSECD` and `XSEC_LAB_BIN` name
//! prebuilt binaries instead and skip the build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::procs;
use crate::{Result, err};

/// The workspace root (the lab crate is one level below it).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// The executables cargo reported in `--message-format=json` output, by target name.
pub fn parse_artifacts(stdout: &str) -> BTreeMap<String, PathBuf> {
    let mut m = BTreeMap::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            m.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    m
}

/// Build the binaries of `packages` (dev profile) and return every executable by name.
pub fn cargo_build(packages: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(workspace_root()).args([
        "build",
        "--message-format=json-render-diagnostics",
        "--bins",
    ]);
    for p in packages {
        c.args(["-p", p]);
    }
    let o = procs::run(c)?;
    if !o.ok() {
        return Err(err!(
            "`{}` failed ({:?}):\n{}",
            o.cmdline,
            o.code,
            o.stderr
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Ok(parse_artifacts(&o.stdout))
}

/// The paths of `xsecd` and `xsec-lab`: from `XSECD` / `XSEC_LAB_BIN` when both are set,
/// else built with [`cargo_build`]. The error says what is missing.
pub fn executables() -> Result<(PathBuf, PathBuf)> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if let (Some(x), Some(l)) = (env("XSECD"), env("XSEC_LAB_BIN")) {
        for p in [&x, &l] {
            if !p.is_file() {
                return Err(err!("{} does not exist", p.display()));
            }
        }
        return Ok((x, l));
    }
    let m = cargo_build(&["xsecd", "xsec-lab"])?;
    let get = |n: &str| {
        m.get(n).cloned().ok_or_else(|| {
            err!(
                "cargo built no `{n}` executable (artifacts: {:?})",
                m.keys().collect::<Vec<_>>()
            )
        })
    };
    let xsecd = env("XSECD").map_or_else(|| get("xsecd"), Ok)?;
    let lab = env("XSEC_LAB_BIN").map_or_else(|| get("xsec-lab"), Ok)?;
    Ok((xsecd, lab))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compiler_artifacts() {
        let out = r#"{"reason":"compiler-artifact","target":{"name":"serde","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"xsecd","kind":["bin"]},"executable":"/w/target/debug/xsecd"}
not json
{"reason":"build-finished","success":true}"#;
        let m = parse_artifacts(out);
        assert_eq!(m.len(), 1);
        assert_eq!(m["xsecd"], PathBuf::from("/w/target/debug/xsecd"));
    }
}
