//! The xsecd binary's messages: `--check` puts `xsecd: FILE:LINE: FIELD:` on every line of a
//! configuration error; the daemon logs through tracing (timestamp, level, one event per
//! line), at `--log-level` or as `RUST_LOG` says.

use std::path::PathBuf;
use std::process::{Command, Output};

const BAD: &str = r#"[gateway]
unprotected = "xsecnoif0"
protected = "xsecnoif1"

[[sa]]
name = "a"
mode = "tunnel"
local = "10.0.0.1"
remote = "10.0.0.2"
spi_in = 0x200
spi_out = 0x100
encr = "aes-gcm-128"
enc_key_in = "0x00112233445566778899aabbccddeeff00112233"
enc_key_out = "0x00112233445566778899aabbccddeeff00112233"
replay_window = "big"
"#;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xsecd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test folder");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write the config");
    p
}

fn xsecd(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xsecd"));
    c.args(args).env_remove("RUST_LOG");
    if let Some(v) = rust_log {
        c.env("RUST_LOG", v);
    }
    c.output().expect("run xsecd")
}

#[test]
fn check_prefixes_every_line_of_a_config_error() {
    let p = write("bad.toml", BAD);
    let path = p.to_str().unwrap();
    let o = xsecd(&["--check", "--config", path], None);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    for l in &lines {
        assert!(l.starts_with(&format!("xsecd: {path}:")), "{l}");
    }
    assert!(
        err.contains("sa[0].encr: unknown key; did you mean \"encryption\"?"),
        "{err}"
    );
    assert!(err.contains("sa[0].replay_window:"), "{err}");
    assert!(!err.contains("sa[0].encryption: missing"), "{err}");
    assert!(!err.contains("00112233"), "a key in the message: {err}");
}

/// A valid configuration naming interfaces that do not exist: the start fails after the
/// configuration was read, with a logged error.
fn good() -> String {
    BAD.replace("encr = ", "encryption = ")
        .replace("replay_window = \"big\"\n", "")
        + "\n[[policy]]\nname = \"p\"\ndirection = \"both\"\nlocal = \"192.168.1.0/24\"\n\
           remote = \"192.168.2.0/24\"\naction = \"protect\"\nsa = \"a\"\n"
}

#[test]
fn the_daemon_logs_with_timestamp_and_level() {
    let p = write("missing-if.toml", &good());
    let path = p.to_str().unwrap();
    let o = xsecd(&["--check", "--config", path], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = xsecd(
        &["--config", path, "--control", "/nonexistent/xsecd.sock"],
        None,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or_default();
    // 2026-12-05T03:00:20.885945Z ERROR xsecd: ...
    let mut words = last.split_whitespace();
    let ts = words.next().unwrap_or_default();
    assert!(
        ts.len() > 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{err}"
    );
    assert_eq!(words.next(), Some("ERROR"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a non-terminal log: {err}"
    );

    // an error names its level only; RUST_LOG=off silences the log, and the exit code stays
    let o = xsecd(
        &["--config", path, "--control", "/nonexistent/x.sock"],
        Some("off"),
    );
    assert!(!o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // debug shows more than info
    let sock = "/nonexistent/xsecd.sock";
    let info = xsecd(
        &["--config", path, "--control", sock, "--log-level", "info"],
        None,
    );
    let debug = xsecd(
        &["--config", path, "--control", sock, "--log-level", "debug"],
        None,
    );
    let count = |o: &Output, level: &str| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(level))
            .count()
    };
    assert_eq!(count(&info, "DEBUG"), 0);
    assert!(count(&info, "ERROR") >= 1);
    assert_eq!(count(&info, "ERROR"), count(&debug, "ERROR"));

    let o = xsecd(
        &["--config", path, "--control", sock, "--log-level", "loud"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown level");
}
