//! Processes the lab starts: each is tracked by pid in a [`Procs`] registry that kills what is
//! still running when it is dropped. Output goes to files (`<name>.out`, `<name>.err`) so that
//! a failure can show the tail of a daemon's log, and so that nothing blocks on a full pipe.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::{Result, err};

/// A process started by the lab. Cheap to clone: the [`Child`] stays in the registry.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    /// The name its output files are called after.
    pub name: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Everything it printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything it printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// The last `n` lines of its stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        crate::tail(&self.stderr, n)
    }
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[derive(Debug)]
struct Tracked {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

/// The processes of one lab.
#[derive(Debug, Default)]
pub struct Procs {
    list: Mutex<Vec<Tracked>>,
}

/// Send `sig` to `pid` (errors, e.g. an already reaped pid, are ignored).
fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

impl Procs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tracked>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start `cmd` with stdin closed and stdout/stderr in `dir/<name>.out|.err`.
    pub fn spawn(&self, dir: &Path, name: &str, mut cmd: Command) -> Result<Proc> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let out = File::create(&stdout).map_err(|e| err!("create {}: {e}", stdout.display()))?;
        let errf = File::create(&stderr).map_err(|e| err!("create {}: {e}", stderr.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(errf);
        let child = cmd.spawn().map_err(|e| err!("cannot start {cmd:?}: {e}"))?;
        let pid = child.id();
        self.lock().push(Tracked {
            name: name.to_owned(),
            child,
            status: None,
        });
        Ok(Proc {
            pid,
            name: name.to_owned(),
            stdout,
            stderr,
        })
    }

    /// The exit status if the process has ended (it is reaped then), `None` while it runs.
    pub fn try_status(&self, p: &Proc) -> Option<ExitStatus> {
        let mut list = self.lock();
        let t = list.iter_mut().find(|t| t.child.id() == p.pid)?;
        if t.status.is_none() {
            t.status = t.child.try_wait().ok().flatten();
        }
        t.status
    }

    pub fn is_running(&self, p: &Proc) -> bool {
        self.try_status(p).is_none()
    }

    /// Wait up to `timeout` for the process to end.
    pub fn wait(&self, p: &Proc, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status(p) {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGINT (xsecd, tcpdump and the traffic tools all end on it), wait up to `grace`,
    /// then SIGKILL. Returns the exit status the process chose, `None` if it had to be killed.
    pub fn stop(&self, p: &Proc, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_status(p) {
            return Some(s);
        }
        signal(p.pid, Signal::INT);
        if let Some(s) = self.wait(p, grace) {
            return Some(s);
        }
        signal(p.pid, Signal::KILL);
        self.wait(p, Duration::from_secs(5));
        None
    }

    /// Send a signal to a process that is still running.
    pub fn signal(&self, p: &Proc, sig: Signal) {
        if self.is_running(p) {
            signal(p.pid, sig);
        }
    }

    /// SIGTERM everything still running, then SIGKILL what has not ended after `grace`.
    pub fn kill_all(&self, grace: Duration) {
        let mut list = self.lock();
        for t in list.iter_mut() {
            if t.status.is_none() && t.child.try_wait().ok().flatten().is_none() {
                signal(t.child.id(), Signal::TERM);
            }
        }
        let end = Instant::now() + grace;
        for t in list.iter_mut() {
            while t.status.is_none() {
                t.status = t.child.try_wait().ok().flatten();
                if t.status.is_some() {
                    break;
                }
                if Instant::now() >= end {
                    eprintln!(
                        "xsec-lab: {} (pid {}) ignored SIGTERM: killing it",
                        t.name,
                        t.child.id()
                    );
                    let _ = t.child.kill();
                    t.status = t.child.wait().ok();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `ip netns exec NS ARGS...` (`ip` execs the program, so the pid is the program's own).
pub fn netns_command<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// A finished command: exit code and output.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// `Err` with the command line and its output unless it exited 0.
    pub fn check(self) -> Result<Output> {
        if self.ok() {
            Ok(self)
        } else {
            Err(err!("{self}"))
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` exited {:?}", self.cmdline, self.code)?;
        if !self.stdout.trim().is_empty() {
            write!(f, "\n--- stdout ---\n{}", self.stdout.trim_end())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "\n--- stderr ---\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

/// Run a command to completion, capturing its output.
pub fn run(mut cmd: Command) -> Result<Output> {
    let cmdline = show(&cmd);
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err!("cannot run `{cmdline}`: {e}"))?;
    Ok(Output {
        cmdline,
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// A command line as one would type it.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `prog` is an executable on PATH (or under /usr/sbin, /sbin where root's tools
/// live even when PATH lacks them).
pub fn on_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(prog).is_file())
}
