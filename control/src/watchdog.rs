//! Tunnel watchdogs (the branch routers' "ICMP detect"): per connection, an echo request
//! through the tunnel to a host behind the peer every interval, from an address of this
//! gateway; after N unanswered in a row the IKE SA is restarted. xsecd sends the probes
//! (`ping`: built by a worker, through the outbound SPD, only decrypted replies count), so
//! a probe proves the data path, where DPD proves only the peer's IKE daemon.
//!
//! [`Watch`] is the state of one connection's watchdog, without I/O or clock of its own;
//! [`Prober`] is the thread that asks xsecd (one `ping` at a time, each bounded by its
//! timeout) and hands the outcomes to the event loop, waking its `poll` like xsecd's events.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsecd::control::client::{Client, ClientError};

use crate::config::WatchdogConfig;

/// Where a watchdog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    /// The connection has no established IKE SA with a Child SA: nothing to watch.
    Idle,
    /// The last probe was answered (or none has been sent since the tunnel came up).
    Ok,
    /// This many probes in a row went unanswered.
    Failing(u32),
    /// xsecd refused the probe (the reason): not the tunnel's fault, so no restart.
    Error(String),
}

impl WatchState {
    pub fn name(&self) -> &'static str {
        match self {
            WatchState::Idle => "idle",
            WatchState::Ok => "ok",
            WatchState::Failing(_) => "failing",
            WatchState::Error(_) => "error",
        }
    }
}

/// What the event loop does after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing (answered, or lost but below the limit).
    Nothing,
    /// The first loss after answers: worth an event.
    Failing,
    /// Answered again after losses.
    Recovered,
    /// `tries` lost in a row: restart the IKE SA.
    Restart,
}

/// One probe's result, from the [`Prober`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub conn: String,
    /// The round trip, or `None`: no reply within the timeout.
    pub rtt: Option<Duration>,
    /// xsecd refused the probe or could not be asked.
    pub error: Option<String>,
}

/// One connection's watchdog.
#[derive(Debug, Clone)]
pub struct Watch {
    pub cfg: WatchdogConfig,
    pub state: WatchState,
    pub sent: u64,
    pub replies: u64,
    pub lost: u64,
    pub restarts: u64,
    pub last_rtt: Option<Duration>,
    next: Option<Instant>,
    in_flight: bool,
}

impl Watch {
    pub fn new(cfg: WatchdogConfig) -> Watch {
        Watch {
            cfg,
            state: WatchState::Idle,
            sent: 0,
            replies: 0,
            lost: 0,
            restarts: 0,
            last_rtt: None,
            next: None,
            in_flight: false,
        }
    }

    /// Whether a probe is to be sent now, given whether the tunnel is `up`. The first probe
    /// goes one interval after the tunnel came up; then one per interval (a probe out
    /// delays the next).
    pub fn due(&mut self, now: Instant, up: bool) -> bool {
        if !up {
            if !matches!(self.state, WatchState::Error(_)) {
                self.state = WatchState::Idle;
            }
            self.next = None;
            return false;
        }
        let next = *self.next.get_or_insert(now + self.cfg.interval);
        if self.state == WatchState::Idle {
            self.state = WatchState::Ok;
        }
        if self.in_flight || now < next {
            return false;
        }
        self.in_flight = true;
        self.sent += 1;
        self.next = Some(now + self.cfg.interval);
        true
    }

    /// When [`Watch::due`] may next say yes (for the loop's sleep).
    pub fn next_due(&self) -> Option<Instant> {
        self.next.filter(|_| !self.in_flight)
    }

    /// A probe's outcome.
    pub fn outcome(&mut self, o: &Outcome) -> Verdict {
        self.in_flight = false;
        if let Some(e) = &o.error {
            self.state = WatchState::Error(e.clone());
            return Verdict::Nothing;
        }
        match o.rtt {
            Some(rtt) => {
                self.replies += 1;
                self.last_rtt = Some(rtt);
                let was = std::mem::replace(&mut self.state, WatchState::Ok);
                if matches!(was, WatchState::Failing(_)) {
                    Verdict::Recovered
                } else {
                    Verdict::Nothing
                }
            }
            None => {
                self.lost += 1;
                let n = match self.state {
                    WatchState::Failing(n) => n + 1,
                    _ => 1,
                };
                if n >= self.cfg.tries {
                    self.restarts += 1;
                    // watched again once the new IKE SA is up
                    self.state = WatchState::Idle;
                    self.next = None;
                    Verdict::Restart
                } else {
                    self.state = WatchState::Failing(n);
                    if n == 1 {
                        Verdict::Failing
                    } else {
                        Verdict::Nothing
                    }
                }
            }
        }
    }

    /// State and counters, for `xsecctl ike list-conns`.
    pub fn json(&self) -> Value {
        json!({
            "host": self.cfg.host,
            "source": self.cfg.source,
            "interval_s": self.cfg.interval.as_secs(),
            "timeout_s": self.cfg.timeout.as_secs(),
            "tries": self.cfg.tries,
            "state": self.state.name(),
            "failures": match self.state { WatchState::Failing(n) => n, _ => 0 },
            "error": match &self.state { WatchState::Error(e) => Some(e.clone()), _ => None },
            "sent": self.sent,
            "replies": self.replies,
            "lost": self.lost,
            "restarts": self.restarts,
            "last_rtt_ms": self.last_rtt.map(|d| d.as_secs_f64() * 1e3),
        })
    }
}

/// A probe to send.
#[derive(Debug, Clone)]
struct Job {
    conn: String,
    src: Option<IpAddr>,
    dst: IpAddr,
    timeout: Duration,
}

/// The thread that sends the probes through xsecd.
#[derive(Debug)]
pub struct Prober {
    jobs: mpsc::Sender<Job>,
    rx: mpsc::Receiver<Outcome>,
    /// Readable when outcomes wait.
    pub wake: UnixStream,
}

impl Prober {
    /// Start the thread; it connects to xsecd at `path` (again after a failure).
    pub fn spawn(path: PathBuf, stop: Arc<AtomicBool>) -> std::io::Result<Prober> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (tx, rx) = mpsc::channel();
        let (wake, mut poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        poke.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    let job = match job_rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(j) => j,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    let out = probe(&mut client, &path, &job);
                    if tx.send(out).is_err() {
                        return;
                    }
                    let _ = poke.write(&[1]);
                }
            })?;
        Ok(Prober { jobs, rx, wake })
    }

    /// Send a probe for `conn`.
    pub fn send(&self, conn: &str, cfg: &WatchdogConfig) {
        let _ = self.jobs.send(Job {
            conn: conn.to_owned(),
            src: cfg.source,
            dst: cfg.host,
            timeout: cfg.timeout,
        });
    }

    /// The outcomes that arrived.
    pub fn drain(&mut self) -> Vec<Outcome> {
        let mut b = [0u8; 256];
        while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}

/// One `ping` through xsecd: a reply, none, or why it could not be sent.
fn probe(client: &mut Option<Client>, path: &std::path::Path, job: &Job) -> Outcome {
    let fail = |e: String| Outcome {
        conn: job.conn.clone(),
        rtt: None,
        error: Some(e),
    };
    if client.is_none() {
        match Client::connect(path) {
            Ok(c) => *client = Some(c),
            Err(e) => return fail(format!("xsecd: {e}")),
        }
    }
    let Some(c) = client.as_mut() else {
        return fail("xsecd: not connected".into());
    };
    let mut args = json!({"dst": job.dst, "count": 1,
                          "timeout_ms": job.timeout.as_millis() as u64});
    if let Some(s) = job.src {
        args["src"] = json!(s);
    }
    match c.call("ping", args) {
        Ok(v) => Outcome {
            conn: job.conn.clone(),
            rtt: v["rtt_ms"][0]
                .as_f64()
                .map(|ms| Duration::from_secs_f64(ms / 1e3)),
            error: None,
        },
        Err(ClientError::Refused { message, .. }) => fail(message),
        Err(e) => {
            *client = None;
            fail(format!("xsecd: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tries: u32) -> WatchdogConfig {
        WatchdogConfig {
            host: "10.2.0.10".parse().unwrap(),
            source: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            tries,
        }
    }

    fn out(rtt: Option<u64>) -> Outcome {
        Outcome {
            conn: "c".into(),
            rtt: rtt.map(Duration::from_millis),
            error: None,
        }
    }

    #[test]
    fn probes_go_once_per_interval_only_while_the_tunnel_is_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(cfg(3));
        assert!(!w.due(t0, false));
        assert_eq!(w.state, WatchState::Idle);
        // up: the first probe one interval later
        assert!(!w.due(t0, true));
        assert_eq!(w.state, WatchState::Ok);
        assert!(!w.due(t0 + s(9), true));
        assert!(w.due(t0 + s(10), true));
        // one out at a time, however late it is
        assert!(!w.due(t0 + s(25), true));
        assert_eq!(w.outcome(&out(Some(3))), Verdict::Nothing);
        assert!(w.due(t0 + s(25), true));
        assert_eq!(w.sent, 2);
        // down: idle, and the schedule starts again when it is up
        w.outcome(&out(Some(3)));
        assert!(!w.due(t0 + s(40), false));
        assert_eq!(w.state, WatchState::Idle);
        assert!(!w.due(t0 + s(41), true));
        assert!(w.due(t0 + s(51), true));
    }

    #[test]
    fn tries_lost_in_a_row_restart_and_an_answer_resets_the_count() {
        let t0 = Instant::now();
        let mut w = Watch::new(cfg(3));
        assert!(!w.due(t0, true));
        let mut t = t0;
        let mut step = |w: &mut Watch, rtt: Option<u64>| {
            t += Duration::from_secs(10);
            assert!(w.due(t, true));
            w.outcome(&out(rtt))
        };
        assert_eq!(step(&mut w, Some(1)), Verdict::Nothing);
        assert_eq!(step(&mut w, None), Verdict::Failing);
        assert_eq!(step(&mut w, None), Verdict::Nothing);
        assert_eq!(w.state, WatchState::Failing(2));
        assert_eq!(step(&mut w, Some(2)), Verdict::Recovered);
        assert_eq!(w.state, WatchState::Ok);
        assert_eq!(step(&mut w, None), Verdict::Failing);
        assert_eq!(step(&mut w, None), Verdict::Nothing);
        assert_eq!(step(&mut w, None), Verdict::Restart);
        assert_eq!((w.restarts, w.lost, w.replies), (1, 5, 2));
        assert_eq!(w.state, WatchState::Idle);
        let j = w.json();
        assert_eq!(j["restarts"], 1);
        assert_eq!(j["last_rtt_ms"], 2.0);
    }

    #[test]
    fn a_refused_probe_is_an_error_not_a_loss() {
        let t0 = Instant::now();
        let mut w = Watch::new(cfg(1));
        w.due(t0, true);
        assert!(w.due(t0 + Duration::from_secs(10), true));
        let v = w.outcome(&Outcome {
            conn: "c".into(),
            rtt: None,
            error: Some("args.src: 10.9.9.9 is not an address of this gateway".into()),
        });
        assert_eq!(v, Verdict::Nothing);
        assert_eq!((w.lost, w.restarts), (0, 0));
        assert_eq!(w.json()["state"], "error");
        assert!(
            w.json()["error"]
                .as_str()
                .unwrap()
                .contains("not an address")
        );
    }
}
