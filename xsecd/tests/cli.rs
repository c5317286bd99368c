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

fn xsecctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xsecctl"))
        .args(args)
        .output()
        .expect("run xsecctl")
}

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `xsecctl policy test --config CFG` and `words` (whitespace-separated), no daemon.
fn policy_test(cfg: &str, words: &str) -> Output {
    let mut args = vec!["policy", "test", "--config", cfg];
    args.extend(words.split_whitespace());
    xsecctl(&args)
}

/// `xsecctl policy test --config FILE`: no daemon, no root; `any` for ports, ICMP type and
/// code columns, one record per result with "none" where no policy of a disposition matched.
#[test]
fn policy_test_works_on_a_file_without_a_daemon() {
    let cfg = example("ar410-tunnel-a.toml");
    let nowhere = "/nonexistent/xsecd.sock";
    let o = xsecctl(&[
        "--socket",
        nowhere,
        "policy",
        "test",
        "--config",
        &cfg,
        "--dir",
        "out",
        "--proto",
        "tcp",
        "--local",
        "192.168.10.5:any",
        "--remote",
        "192.168.20.7:80",
        "--name",
        "web",
        "--records",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.starts_with("test web:\nLOCAL PORTS  REMOTE PORTS  FIRST MATCH"),
        "{out}"
    );
    assert!(
        out.contains("0-65535      80            lan-to-lan   protect"),
        "{out}"
    );
    for line in [
        "test:         web",
        "protocol:     tcp",
        "direction:    outbound",
        "local:        192.168.10.5 port 0-65535",
        "remote:       192.168.20.7 port 80",
        "first match:  lan-to-lan (#1)",
        "protect:      lan-to-lan",
        "bypass:       none",
        "discard:      none",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }

    // ICMP: type and code, not ports; nothing matches towards another network
    let o = policy_test(
        &cfg,
        "--dir out --proto icmp --local 192.168.10.5:8 --remote 192.168.99.1:0 --records",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.starts_with("ICMP TYPE  ICMP CODE  FIRST MATCH  DISPOSITION"),
        "{out}"
    );
    assert!(out.contains("local:        192.168.10.5 type 8"), "{out}");
    assert!(out.contains("remote:       192.168.99.1 code 0"), "{out}");
    assert!(out.contains("first match:  none (discard)"), "{out}");
    assert!(out.contains("protect:      none"), "{out}");

    // refusals: exit 2 with the reason, never a hang
    let o = policy_test(
        &cfg,
        "--dir out --proto icmp --local 192.168.10.5:300 --remote 192.168.20.7",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("an ICMP type is 0-255, not 300"));
    let bad = write("bad-policy.toml", BAD);
    let o = policy_test(
        bad.to_str().unwrap_or_default(),
        "--dir out --local 1.1.1.1 --remote 2.2.2.2",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sa[0].encr: unknown key"));
}
