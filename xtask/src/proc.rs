//! Running commands: inherited output, captured output, or both at once (streamed to the
//! terminal while it is kept for parsing).

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a command left behind.
#[derive(Debug)]
pub struct Output {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A short description of how the command ended.
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => "could not be started".to_owned(),
        }
    }
}

/// The command line as a user would type it.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run with the terminal as stdout and stderr. `false` if it could not start or failed.
pub fn inherit(cmd: &mut Command) -> bool {
    println!("$ {}", show(cmd));
    flush();
    match cmd.stdin(Stdio::null()).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run {}: {e}", show(cmd));
            false
        }
    }
}

/// Run silently, keeping stdout and stderr.
pub fn capture(cmd: &mut Command) -> Output {
    let start = Instant::now();
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => Output {
            status: Some(o.status),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            elapsed: start.elapsed(),
        },
        Err(e) => Output {
            status: None,
            stdout: String::new(),
            stderr: format!("cannot run {}: {e}", show(cmd)),
            elapsed: start.elapsed(),
        },
    }
}

/// Whether the command starts and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run with stdout and stderr copied to the terminal as they arrive and also kept.
pub fn tee(cmd: &mut Command) -> Output {
    println!("$ {}", show(cmd));
    flush();
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Output {
                status: None,
                stdout: String::new(),
                stderr: format!("cannot run {}: {e}", show(cmd)),
                elapsed: start.elapsed(),
            };
        }
    };
    let out = child
        .stdout
        .take()
        .map(|r| thread::spawn(move || pump(r, false)));
    let err = child
        .stderr
        .take()
        .map(|r| thread::spawn(move || pump(r, true)));
    let join = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let stdout = join(out);
    let stderr = join(err);
    let status = child.wait().ok();
    Output {
        status,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// Copy a pipe to our stdout or stderr chunk by chunk (partial lines such as
/// `test x ... ` appear at once) and return everything read.
fn pump<R: Read>(mut r: R, to_stderr: bool) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                // The terminal may go away (a closed pipe); keep collecting regardless.
                let _ = if to_stderr {
                    let mut e = std::io::stderr().lock();
                    e.write_all(chunk).and_then(|()| e.flush())
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(chunk).and_then(|()| o.flush())
                };
                all.extend_from_slice(chunk);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    all
}

pub fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// `12.3 s`, or `4 min 05 s` past two minutes.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tails() {
        assert_eq!(secs(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(secs(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn tee_keeps_both_streams() {
        let o = tee(Command::new("sh").args([
            "-c",
            "echo xtask-tee-selftest; echo xtask-tee-selftest >&2; exit 3",
        ]));
        assert_eq!(o.stdout, "xtask-tee-selftest\n");
        assert_eq!(o.stderr, "xtask-tee-selftest\n");
        assert_eq!(o.status.and_then(|s| s.code()), Some(3));
        assert!(!o.success());
    }
}
