//! The control socket: `xsecctl` (and the IKE process) inspect and change a running
//! gateway through it. Protocol: [`proto`] and docs/control-protocol.md.
//!
//! Threads: one accepts; each connection has its own (at most [`MAX_CONNS`]), so a slow or
//! hostile client only ever holds its own thread. The metrics listener ([`http`]) has its own
//! limit, so HTTP clients can never take the control socket's connections. Workers are
//! reached only through their command channels, with deadlines: nothing here can stall the
//! packet path. Changes are serialized by the [`Running`] mutex, which only control threads
//! take.

pub mod client;
pub mod http;
pub mod objects;
pub mod policy_test;
pub mod proto;
pub mod request;
pub mod running;
pub mod spi;
pub mod store;
pub mod view;

use crate::config::ControlConfig;
use crate::trace::{self, Filter, Tap};
use crate::worker::{Change, ChangeReport, Cmd, CmdSender, Snapshot};
use crate::xdp::XdpSteering;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use proto::kind;
use request::Request;
use running::{Edit, Refusal, Running};
use serde_json::{Value, json};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};
use store::Op;
use tracing::{info, warn};
use xsec_dataplane::events::{Event, EventKind};
use xsec_dataplane::sa::LimitKind;
use xsec_dataplane::spd::Direction;
use xsec_dataplane::time::MonotonicClock;
use zeroize::Zeroizing;

/// Control-socket connections served at once; more are answered `busy` and closed. HTTP
/// metrics clients are counted apart ([`http::MAX_HTTP_CONNS`]).
pub const MAX_CONNS: usize = 32;
/// A connection with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(600);
/// How long a worker may take to answer.
const WORKER_DEADLINE: Duration = Duration::from_secs(2);

/// Counters of the control plane itself.
#[derive(Debug, Default)]
pub struct CtlCounters {
    /// Control-socket connections accepted (including those then turned away).
    pub connections: AtomicU64,
    /// Control-socket clients refused by their credentials (`SO_PEERCRED`).
    pub refused: AtomicU64,
    /// Control-socket clients turned away `busy` because [`MAX_CONNS`] were open.
    pub busy: AtomicU64,
    /// Metrics listener: connections accepted (including those turned away).
    pub http_connections: AtomicU64,
    /// Metrics listener: clients answered 503 because [`http::MAX_HTTP_CONNS`] were open.
    pub http_busy: AtomicU64,
    /// Metrics listener: requests not complete within [`http::REQUEST_DEADLINE`].
    pub http_timeouts: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub events: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Changes applied by a worker (one per worker per non-empty round).
    pub worker_changes: AtomicU64,
    /// Their time on the worker (between two bursts): sum, largest, and how many took
    /// more than 10 µs.
    pub worker_change_ns: AtomicU64,
    pub worker_change_max_ns: AtomicU64,
    pub worker_changes_over_10us: AtomicU64,
}

/// Everything the control threads share.
pub struct Control {
    pub running: Mutex<Running>,
    /// `None` once the daemon is stopping (taken and dropped: detached).
    pub xdp: Mutex<Option<XdpSteering>>,
    pub workers: Vec<CmdSender>,
    pub resolve: Sender<IpAddr>,
    pub clock: MonotonicClock,
    pub started: Instant,
    pub subscribers: Mutex<Vec<Sender<Value>>>,
    /// (name, ifindex) of the unprotected and protected interfaces.
    pub ifaces: [(String, u32); 2],
    pub xdp_mode: &'static str,
    pub cfg: ControlConfig,
    /// Group allowed besides root and xsecd's own user.
    pub gid: Option<u32>,
    /// Open control-socket connections (the metrics listener counts its own).
    pub conns: AtomicUsize,
    pub tracing: AtomicBool,
    pub counters: CtlCounters,
    pub stop: Arc<AtomicBool>,
    /// Inbound SPIs handed out by `alloc-spi` and not yet installed or expired.
    pub spis: Mutex<spi::Reservations>,
    /// The probes out (`ping`), shared with the workers.
    pub probes: Arc<crate::probe::ProbeBoard>,
    /// The protected interface's addresses (IPv4, IPv6): `ping`'s default source.
    pub own_addrs: [Option<IpAddr>; 2],
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("socket", &self.cfg.socket)
            .field("workers", &self.workers.len())
            .field("ifaces", &self.ifaces)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The gid of a group, from /etc/group.
pub fn group_id(name: &str) -> Result<u32, String> {
    let text = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("control.group: no group named {name:?} in /etc/group"))
}

/// Create the socket: parent directory, stale socket removed (refused if another xsecd
/// answers on it), mode 0600 (0660 and the group with `group`).
pub fn bind(cfg: &ControlConfig, gid: Option<u32>) -> Result<UnixListener, String> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another xsecd is listening on this control socket",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // created with no permission for anyone until the mode is set
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = UnixListener::bind(path);
    rustix::process::umask(old);
    let l = l.map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g))
            .map_err(|e| format!("{}: chown: {e}", path.display()))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(l)
}

/// Accept connections until `ctl.stop`.
pub fn serve(ctl: Arc<Control>, listener: UnixListener) {
    while !ctl.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                ctl.counters.connections.fetch_add(1, Ordering::Relaxed);
                if ctl.conns.load(Ordering::Relaxed) >= MAX_CONNS {
                    ctl.counters.busy.fetch_add(1, Ordering::Relaxed);
                    let mut s = s;
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = proto::write_frame(
                        &mut s,
                        &proto::error(
                            0,
                            kind::BUSY,
                            format!("{MAX_CONNS} connections are open already"),
                        ),
                    );
                    continue;
                }
                ctl.conns.fetch_add(1, Ordering::Relaxed);
                let c = ctl.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("xsec-ctl".into())
                        .spawn(move || {
                            connection(&c, s);
                            c.conns.fetch_sub(1, Ordering::Relaxed);
                        });
                if spawned.is_err() {
                    ctl.conns.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                warn!("control socket: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = std::fs::remove_file(&ctl.cfg.socket);
}

/// Is the peer allowed? Root, xsecd's own user, or a member of the configured group.
fn peer_allowed(ctl: &Control, s: &UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(s).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let uid = cred.uid.as_raw();
    let gid = cred.gid.as_raw();
    if uid == 0 || uid == rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    if let Some(g) = ctl.gid {
        let supplementary =
            std::fs::read_to_string(format!("/proc/{}/status", cred.pid.as_raw_nonzero()))
                .ok()
                .and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("Groups:").map(str::to_owned))
                })
                .unwrap_or_default();
        if gid == g || supplementary.split_whitespace().any(|x| x.parse() == Ok(g)) {
            return Ok(());
        }
    }
    Err(format!(
        "uid {uid} (pid {}) is not allowed: only root, xsecd's user{}",
        cred.pid.as_raw_nonzero(),
        if ctl.cfg.group.is_some() {
            " and members of control.group"
        } else {
            ""
        }
    ))
}

fn connection(ctl: &Control, mut s: UnixStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if let Err(why) = peer_allowed(ctl, &s) {
        ctl.counters.refused.fetch_add(1, Ordering::Relaxed);
        warn!("control socket: refused a client: {why}");
        let _ = proto::write_frame(&mut s, &proto::error(0, kind::REFUSED, why));
        return;
    }
    // the client tag of this connection's objects (`hello`)
    let mut client = String::from(ANONYMOUS);
    loop {
        if ctl.stop.load(Ordering::Relaxed) {
            return;
        }
        let body = match proto::read_frame(&mut s, IDLE) {
            Ok(b) => b,
            Err(proto::FrameError::Closed | proto::FrameError::Idle) => return,
            Err(proto::FrameError::Io(_)) => return,
            Err(e) => {
                // the stream cannot be resynchronized after a bad frame: answer, then close
                ctl.counters.errors.fetch_add(1, Ordering::Relaxed);
                let _ =
                    proto::write_frame(&mut s, &proto::error(0, kind::BAD_FRAME, e.to_string()));
                return;
            }
        };
        // requests may carry keys (`add-sa` objects, `reload` and `config-add-sa` texts): the frame and every string
        // parsed from it are wiped when this request is done
        let body = Zeroizing::new(body);
        ctl.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (id, req) = request::decode(&body);
        let answer = match req {
            Ok(Request::Subscribe(_)) => {
                subscribe(ctl, &mut s, id);
                return;
            }
            Ok(Request::Trace(t)) => trace(ctl, &mut s, id, &t),
            Ok(r) => dispatch(ctl, r, &mut client),
            Err(e) => Err(e),
        };
        let frame = match answer {
            Ok(result) => proto::ok(id, result),
            Err((k, msg, detail)) => {
                ctl.counters.errors.fetch_add(1, Ordering::Relaxed);
                let mut e = proto::error(id, k, msg);
                if !detail.is_null() {
                    e["error"]["detail"] = detail;
                }
                e
            }
        };
        if let Err(e) = proto::write_frame(&mut s, &frame) {
            // an answer too big for a frame is an error the client must hear about
            let _ = proto::write_frame(&mut s, &proto::error(id, kind::INTERNAL, e.to_string()));
        }
    }
}

/// A JSON value whose strings are zeroized when it is dropped.
pub(crate) struct Wiped(pub(crate) Value);

impl std::ops::Deref for Wiped {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroize every string of a JSON value (object keys are short names, not secrets).
fn wipe(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

/// An error answer: kind, message, detail (null when there is none).
pub type Fail = (&'static str, String, Value);

fn bad(msg: impl Into<String>) -> Fail {
    (kind::BAD_ARGS, msg.into(), Value::Null)
}

/// Parse an SPI given as decimal or 0x-hex.
pub fn parse_spi(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Control {
    /// Every worker's snapshot (each answers between two bursts).
    pub fn snapshots(&self) -> Vec<Snapshot> {
        crate::daemon::snapshots(&self.workers)
    }

    /// The XDP program's counters and the forward guard's drops.
    pub fn system(&self) -> view::System {
        let xdp = lock(&self.xdp)
            .as_ref()
            .and_then(|x| x.stats().ok())
            .unwrap_or_default();
        let guard_dropped = match self.xdp_mode {
            // replay runs attach nothing and install no guard
            "none" => None,
            _ => crate::guard::dropped(&self.ifaces[0].0, &self.ifaces[1].0),
        };
        view::System { xdp, guard_dropped }
    }

    fn summary(&self) -> Value {
        let run = lock(&self.running);
        json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": proto::VERSION,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "config": run.cfg.path,
            "generation": run.generation,
            "workers": self.workers.len(),
            "sas": run.store.sa_count(),
            "sa_pairs": run.cfg.sas.len(),
        })
    }

    /// What `edit` would change, without applying it (`--dry-run`): the summary of
    /// [`Control::apply`] with `"applied": false`, or the same refusal.
    pub fn plan(&self, edit: Edit) -> Result<Value, Fail> {
        let mut run = lock(&self.running);
        let plan = run.prepare(edit, self.clock.now()).map_err(refusal)?;
        let mut summary = plan.summary;
        run.revert(plan.undo);
        summary["applied"] = json!(false);
        Ok(summary)
    }

    /// Apply a change: validate, plan, three rounds to the workers, XDP maps, commit.
    pub fn apply(&self, edit: Edit) -> Result<Value, Fail> {
        let mut run = lock(&self.running);
        let now = self.clock.now();
        let plan = run.prepare(edit, now).map_err(refusal)?;
        if self.stop.load(Ordering::Relaxed) {
            run.revert(plan.undo);
            return Err((kind::BUSY, "xsecd is stopping".into(), Value::Null));
        }
        // no XDP program (replay, tests): nothing to steer
        let mut guard = lock(&self.xdp);
        let mut errors: Vec<String> = vec![];
        // steer the union of old and new tunnel ports while SAs move
        if let (Some((old, new)), Some(xdp)) = (&plan.tunnel_ports, guard.as_mut()) {
            let mut ports = old.clone();
            ports.extend(new);
            ports.sort_unstable();
            ports.dedup();
            if let Err(e) = xdp.set_tunnel_ports(&ports) {
                drop(guard);
                run.revert(plan.undo);
                return Err((
                    kind::INTERNAL,
                    format!("XDP tunnel ports: {e}; nothing was applied"),
                    Value::Null,
                ));
            }
        }
        let mut removed = vec![];
        let [r0, r1, r2] = plan.rounds;
        // one worker applies a whole change between two bursts: the three rounds order
        // several workers' steps, one worker needs one (and one wake-up, not three)
        let rounds = if self.workers.len() == 1 {
            vec![single_round(r0, r1, r2)]
        } else {
            vec![r0, r1, r2]
        };
        let shards_round = rounds.len().min(2) - 1;
        for (i, round) in rounds.into_iter().enumerate() {
            let reports = self.round(round);
            for r in reports {
                match r {
                    Ok(rep) => {
                        errors.extend(rep.errors);
                        removed.extend(rep.removed);
                    }
                    Err(e) => errors.push(e),
                }
            }
            if i == shards_round
                && let (Some(peers), Some(xdp)) = (&plan.udp_peers, guard.as_mut())
                && let Err(e) = xdp.set_udp_peers(peers)
            {
                errors.push(format!("XDP UDP peers: {e}"));
            }
        }
        if let (Some((_, new)), Some(xdp)) = (&plan.tunnel_ports, guard.as_mut())
            && let Err(e) = xdp.set_tunnel_ports(new)
        {
            errors.push(format!("XDP tunnel ports: {e}"));
        }
        drop(guard);
        for p in &plan.peers {
            let _ = self.resolve.try_send(*p);
        }
        run.commit(plan.undo, &removed);
        {
            // a reserved SPI now installed is used: its reservation ends
            let mut spis = lock(&self.spis);
            for &spi in &plan.inbound_spis {
                spis.used(spi);
            }
        }
        let mut summary = plan.summary;
        summary["applied"] = json!(true);
        if errors.is_empty() {
            info!("change {} applied: SAs {}", run.generation, summary["sas"]);
            Ok(summary)
        } else {
            warn!("change {} applied with errors: {errors:?}", run.generation);
            summary["errors"] = json!(errors);
            Err((
                kind::INTERNAL,
                format!("applied with errors: {}", errors.join("; ")),
                summary,
            ))
        }
    }

    /// Send each worker its change (empty ones skipped) and collect the reports.
    fn round(&self, changes: Vec<Change>) -> Vec<Result<ChangeReport, String>> {
        let (tx, rx) = unbounded();
        let mut asked = vec![];
        for (i, c) in changes.into_iter().enumerate() {
            if c.is_empty() {
                continue;
            }
            if let Some(w) = self.workers.get(i)
                && w.send(Cmd::Apply(Box::new(c), tx.clone())).is_ok()
            {
                asked.push(i as u16);
            }
        }
        let deadline = Instant::now() + WORKER_DEADLINE;
        let mut out = vec![];
        let mut answered = vec![];
        while answered.len() < asked.len() {
            match rx.recv_deadline(deadline) {
                Ok(r) => {
                    let ns = u64::try_from(r.took.as_nanos()).unwrap_or(u64::MAX);
                    let c = &self.counters;
                    c.worker_changes.fetch_add(1, Ordering::Relaxed);
                    c.worker_change_ns.fetch_add(ns, Ordering::Relaxed);
                    c.worker_change_max_ns.fetch_max(ns, Ordering::Relaxed);
                    if ns > 10_000 {
                        c.worker_changes_over_10us.fetch_add(1, Ordering::Relaxed);
                    }
                    answered.push(r.id);
                    out.push(Ok(r));
                }
                Err(_) => break,
            }
        }
        for w in asked.iter().filter(|w| !answered.contains(w)) {
            out.push(Err(format!(
                "worker {w} did not answer within {WORKER_DEADLINE:?}"
            )));
        }
        out
    }

    /// An engine event as subscribers see it.
    pub fn event_json(&self, worker: u16, ev: &Event) -> Value {
        let run = lock(&self.running);
        let sa = run.store.sa_of_event(ev.direction, ev.spi, ev.reqid);
        let name = sa
            .map(|e| e.cfg.name.clone())
            .or_else(|| run.store.reqid_name(ev.reqid).map(str::to_owned));
        let id = sa.map(|e| e.id.clone());
        let client = sa
            .map(|e| e.client.clone())
            .or_else(|| run.store.reqid_client(ev.reqid).map(str::to_owned));
        let policy = match ev.kind {
            EventKind::Acquire { policy, .. } => run
                .spd
                .policies(Direction::Outbound)
                .get(policy as usize)
                .map(|p| p.name.clone()),
            _ => None,
        };
        drop(run);
        let (kind, limit, rekey) = match ev.kind {
            EventKind::SoftLifetime(LimitKind::Sequence) => ("seq-soft", Some("sequence"), true),
            EventKind::HardLifetime(LimitKind::Sequence) => {
                ("seq-exhausted", Some("sequence"), true)
            }
            EventKind::SoftLifetime(k) => ("soft-expire", Some(limit_name(k)), true),
            EventKind::HardLifetime(k) => ("hard-expire", Some(limit_name(k)), false),
            EventKind::PeerChanged { .. } => ("peer-changed", None, false),
            EventKind::Acquire { .. } => ("acquire", None, false),
        };
        let mut v = json!({
            "type": kind,
            "sa": name,
            "id": id,
            "client": client,
            "spi": ev.spi,
            "spi_hex": format!("{:#010x}", ev.spi),
            "reqid": ev.reqid,
            "direction": ev.direction.name(),
            "worker": worker,
            "rekey_needed": rekey,
            "time": std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        });
        if let Some(l) = limit {
            v["limit"] = json!(l);
        }
        if let EventKind::PeerChanged { addr, port } = ev.kind {
            v["addr"] = json!(addr);
            v["port"] = json!(port);
        }
        if let EventKind::Acquire {
            src,
            dst,
            proto,
            ports,
            ..
        } = ev.kind
        {
            // the SA to negotiate: the policy that wants it and the packet that asked
            v["policy"] = json!(policy);
            v["packet"] = json!({
                "src": src,
                "dst": dst,
                "proto": proto,
                "src_port": ports.map(|p| p.0),
                "dst_port": ports.map(|p| p.1),
            });
            if let Some(o) = v.as_object_mut() {
                o.remove("spi");
                o.remove("spi_hex");
            }
        }
        v
    }

    /// Push an event to every subscriber; a subscriber whose queue is full misses it
    /// (counted), one that left is forgotten.
    /// Send an event to every subscriber, numbered: `seq` counts from 1 with no gaps, so a
    /// subscriber that sees one knows it missed events (its queue was full) and re-reads the
    /// state (`show-sa`).
    pub fn publish(&self, mut ev: Value) {
        let seq = self.counters.events.fetch_add(1, Ordering::Relaxed) + 1;
        ev["seq"] = json!(seq);
        let mut subs = lock(&self.subscribers);
        subs.retain(|s| match s.try_send(ev.clone()) {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        });
    }
}

impl Control {
    /// Whether the SA of this SPI and direction is still configured (not removed, not
    /// replaced by one with another SPI).
    pub fn sa_configured(&self, spi: u32, dir: Direction) -> bool {
        lock(&self.running).store.sa_by_spi(dir, spi).is_some()
    }
}

fn limit_name(k: LimitKind) -> &'static str {
    match k {
        LimitKind::Time => "time",
        LimitKind::Bytes => "bytes",
        LimitKind::Packets => "packets",
        LimitKind::Idle => "idle",
        LimitKind::Sequence => "sequence",
    }
}

/// The client tag of a connection that did not say `hello` with one.
pub const ANONYMOUS: &str = "anonymous";

/// Is `tag` a client tag a connection may take?
fn client_tag(tag: &str) -> Result<(), Fail> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(bad("args.client: 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    if tag == store::CONFIG_CLIENT {
        return Err((
            kind::REFUSED,
            "the client tag \"config\" is the configuration file's: change its objects \
             with reload or the config-* commands"
                .into(),
            Value::Null,
        ));
    }
    Ok(())
}

/// The store operations a request asks for (`add-sa`, ..., `batch`), checked for everything
/// but the store's own state: what the control path applies, and what the fuzz target checks.
pub fn store_ops(req: Request) -> Result<Vec<Op>, Fail> {
    let mut ops = vec![];
    ops_of(req, &mut ops)?;
    Ok(ops)
}

/// The store operations of a request (one, or a batch's).
fn ops_of(req: Request, ops: &mut Vec<Op>) -> Result<(), Fail> {
    let dir = |d: &Option<String>| -> Result<Option<Direction>, Fail> {
        d.as_deref()
            .map(|d| objects::direction("args.direction", d))
            .transpose()
    };
    match req {
        Request::AddSa(a) => ops.push(Op::AddSa(a.sa.entry()?)),
        Request::UpdateSa(a) => ops.push(Op::UpdateSa(a.sa.entry()?)),
        Request::DelSa(a) => ops.push(Op::DelSa(a.id)),
        Request::UpdateSaEndpoints(a) => ops.push(Op::UpdateSaEndpoints {
            endpoints: a.endpoints(),
            id: a.id,
        }),
        Request::AddPolicy(a) => {
            for (dir, entry) in a.policy.entries()? {
                ops.push(Op::AddPolicy {
                    dir,
                    entry,
                    position: a.position,
                });
            }
        }
        Request::UpdatePolicy(a) => {
            for (dir, entry) in a.policy.entries()? {
                ops.push(Op::UpdatePolicy { dir, entry });
            }
        }
        Request::DelPolicy(a) => ops.push(Op::DelPolicy {
            dir: dir(&a.direction)?,
            name: a.id,
        }),
        Request::MovePolicy(a) => ops.push(Op::MovePolicy {
            dir: dir(&a.direction)?,
            name: a.id,
            position: a.position,
        }),
        Request::Batch(b) => {
            for (i, r) in b.ops.into_iter().enumerate() {
                if matches!(r, Request::Batch(_)) {
                    return Err(bad(format!("args.ops[{i}]: a batch cannot hold a batch")));
                }
                ops_of(r, ops).map_err(|(k, m, d)| (k, format!("args.ops[{i}]: {m}"), d))?;
            }
        }
        _ => {
            // (the request is not quoted: it may hold a configuration text with keys)
            return Err(bad(
                "not a store operation (batch takes add-sa, update-sa, del-sa, \
                 update-sa-endpoints, add-policy, update-policy, del-policy, move-policy)",
            ));
        }
    }
    Ok(())
}

/// `dump`: every SA and policy of the store (of one client), with no keys.
/// One page of `dump`: up to `limit` objects after `after` — SAs by id, then policies,
/// outbound then inbound, by position — and the cursor of the next page (`null`: the last).
/// O(SAs) per page: the page's SAs are selected, not the whole store sorted.
fn dump(ctl: &Control, d: &request::Dump) -> Result<Value, Fail> {
    use request::DumpCursor;
    let limit = d.limit.unwrap_or(request::DUMP_DEFAULT);
    if !(1..=request::DUMP_MAX).contains(&limit) {
        return Err(bad(format!("args.limit: 1 to {}", request::DUMP_MAX)));
    }
    let only = d.client.as_deref();
    let run = lock(&ctl.running);
    let mine = |c: &str| only.is_none_or(|o| o == c);
    let (sa_after, pol_after): (Option<&str>, Option<(Direction, usize)>) = match &d.after {
        None => (None, None),
        Some(DumpCursor::Sa(id)) => (Some(id.as_str()), None),
        Some(DumpCursor::Policy(dir, pos)) => {
            let dir = objects::direction("args.after.policy", dir)?;
            (None, Some((dir, *pos)))
        }
    };
    let mut sas: Vec<&store::SaEntry> = if pol_after.is_some() {
        vec![]
    } else {
        run.store
            .sas()
            .filter(|e| mine(&e.client) && sa_after.is_none_or(|a| e.id.as_str() > a))
            .collect()
    };
    let by_id = |a: &&store::SaEntry, b: &&store::SaEntry| a.id.cmp(&b.id);
    if sas.len() > limit {
        sas.select_nth_unstable_by(limit, by_id);
        sas.truncate(limit + 1);
    }
    sas.sort_unstable_by(by_id);
    let mut next = None;
    if sas.len() > limit {
        sas.truncate(limit);
        next = sas.last().map(|e| json!({"sa": e.id}));
    }
    let room = limit - sas.len();
    let mut policies = vec![];
    if next.is_none() {
        let dirs = [Direction::Outbound, Direction::Inbound];
        'dirs: for (k, dir) in dirs.into_iter().enumerate() {
            // a policy cursor: skip the directions before it and the positions up to it
            let from = match pol_after {
                Some((d, p)) if d == dir => p,
                Some((d, _)) if dirs[..k].contains(&d) => 0,
                Some(_) => continue,
                None => 0,
            };
            for (i, e) in run.store.policies(dir).iter().enumerate().skip(from) {
                if !mine(&e.client) {
                    continue;
                }
                if policies.len() == room {
                    next = Some(json!({"policy": [
                        match dir { Direction::Outbound => "out", Direction::Inbound => "in" },
                        i,
                    ]}));
                    break 'dirs;
                }
                policies.push(objects::policy_json(dir, i + 1, e));
            }
        }
    }
    let sas: Vec<Value> = sas
        .into_iter()
        .map(|e| objects::sa_json(e, Some(run.store.worker_of_sa(e))))
        .collect();
    Ok(json!({"generation": run.generation, "sas": sas, "policies": policies, "next": next}))
}

pub(crate) fn dispatch(ctl: &Control, req: Request, client: &mut String) -> Result<Value, Fail> {
    match req {
        Request::Hello(h) => {
            if let Some(c) = h.client {
                client_tag(&c)?;
                *client = c;
            }
            let mut v = ctl.summary();
            v["client"] = json!(client);
            Ok(v)
        }
        Request::Dump(d) => dump(ctl, &d),
        Request::ShowSa(a) => {
            let spi = match &a.spi {
                Some(s) => Some(parse_spi(s).ok_or_else(|| {
                    bad(format!("args.spi: {s:?} is not an SPI (decimal or 0x-hex)"))
                })?),
                None => a.spi_num,
            };
            let snaps = ctl.snapshots();
            let v = view::sas(&snaps, spi, a.counters);
            if spi.is_some() && v.as_array().is_some_and(Vec::is_empty) {
                return Err((
                    kind::NOT_FOUND,
                    format!("no SA has SPI {:#010x}", spi.unwrap_or(0)),
                    Value::Null,
                ));
            }
            Ok(v)
        }
        Request::ShowPolicy(a) => {
            let snaps = ctl.snapshots();
            let run = lock(&ctl.running);
            Ok(view::policies(&run, &snaps, a.counters))
        }
        Request::ShowWorkers(_) => Ok(view::workers(&ctl.snapshots())),
        Request::ShowCounters(_) => {
            let mut v = view::counters(&ctl.snapshots(), &ctl.system());
            let c = &ctl.counters;
            v["control"] = json!({
                "connections": c.connections.load(Ordering::Relaxed),
                "refused": c.refused.load(Ordering::Relaxed),
                "busy": c.busy.load(Ordering::Relaxed),
                "http_connections": c.http_connections.load(Ordering::Relaxed),
                "http_busy": c.http_busy.load(Ordering::Relaxed),
                "http_timeouts": c.http_timeouts.load(Ordering::Relaxed),
                "requests": c.requests.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
                "events": c.events.load(Ordering::Relaxed),
                "events_dropped": c.events_dropped.load(Ordering::Relaxed),
                "worker_changes": c.worker_changes.load(Ordering::Relaxed),
                "worker_change_ns": c.worker_change_ns.load(Ordering::Relaxed),
                "worker_change_max_ns": c.worker_change_max_ns.load(Ordering::Relaxed),
                "worker_changes_over_10us": c.worker_changes_over_10us.load(Ordering::Relaxed),
            });
            Ok(v)
        }
        Request::ShowInterfaces(_) => Ok(interfaces(ctl)),
        Request::Metrics(_) => {
            let snaps = ctl.snapshots();
            let run = lock(&ctl.running);
            Ok(json!({"text": view::metrics(&run, &snaps, &ctl.system(), ctl.started.elapsed())}))
        }
        Request::PolicyTest(a) => policy_test(ctl, &a),
        Request::AllocSpi(a) => alloc_spi(ctl, &a),
        Request::PublishEvent(a) => publish_event(ctl, a.event, client),
        Request::Ping(a) => ping(ctl, &a),
        Request::Reload(a) => {
            let edit = Edit::Reload {
                path: PathBuf::from(a.path),
                text: a.text,
            };
            if a.dry_run {
                ctl.plan(edit)
            } else {
                ctl.apply(edit)
            }
        }
        Request::ConfigAddSa(a) => ctl.apply(Edit::AddSa { text: a.text }),
        Request::ConfigDelSa(a) => ctl.apply(Edit::DelSa { name: a.name }),
        Request::ConfigAddPolicy(a) => ctl.apply(Edit::AddPolicy {
            text: a.text,
            position: a.position,
        }),
        Request::ConfigDelPolicy(a) => ctl.apply(Edit::DelPolicy { name: a.name }),
        Request::ConfigMovePolicy(a) => ctl.apply(Edit::MovePolicy {
            name: a.name,
            position: a.position,
        }),
        // answered by the connection itself (they stream)
        Request::Trace(_) | Request::Subscribe(_) => Err(bad("a streaming request")),
        // the rest: store operations
        r => ctl.apply(Edit::Ops {
            client: client.clone(),
            ops: store_ops(r)?,
        }),
    }
}

fn interfaces(ctl: &Control) -> Value {
    let snaps = ctl.snapshots();
    let xdp = lock(&ctl.xdp)
        .as_ref()
        .and_then(|x| x.stats().ok())
        .unwrap_or_default();
    let roles = ["unprotected", "protected"];
    Value::Array(
        ctl.ifaces
            .iter()
            .zip(roles)
            .enumerate()
            .map(|(side, ((name, ifindex), role))| {
                let queues: Vec<Value> = snaps
                    .iter()
                    .map(|s| {
                        let x = xdp
                            .iter()
                            .find(|r| r.queue == s.queue && r.side.to_string() == role);
                        json!({
                            "queue": s.queue,
                            "worker": s.id,
                            "socket": s.sockets[side],
                            "xdp": x.map(|r| r.json()),
                        })
                    })
                    .collect();
                json!({"name": name, "ifindex": ifindex, "role": role,
                       "xdp_mode": ctl.xdp_mode, "queues": queues})
            })
            .collect(),
    )
}

/// The three rounds of a change for a daemon of one worker, as one [`Change`] the worker
/// applies between two bursts in the rounds' order: replacements and installations, then
/// shard edits, SPD and heartbeats, then the removals of the third round (`remove_last`).
pub(crate) fn single_round(r0: Vec<Change>, r1: Vec<Change>, r2: Vec<Change>) -> Vec<Change> {
    r0.into_iter()
        .zip(r1)
        .zip(r2)
        .map(|((mut c, c1), c2)| {
            debug_assert!(c1.remove.is_empty() && c1.install.is_empty() && c2.install.is_empty());
            c.shards = c1.shards;
            c.spd = c1.spd;
            c.heartbeats = c1.heartbeats;
            c.remove_last = c2.remove;
            c
        })
        .collect()
}

/// `alloc-spi`: an inbound SPI no installed SA uses and no other client holds, reserved for
/// `lifetime_s` (default 60, at most 3600) seconds or until an SA with it is installed. The
/// range defaults to strongSwan's (`0xc0000000`-`0xcfffffff`); `min`/`max` choose another.
/// The engine's event types: a client may not publish these.
const ENGINE_EVENTS: [&str; 6] = [
    "soft-expire",
    "hard-expire",
    "seq-soft",
    "seq-exhausted",
    "peer-changed",
    "acquire",
];

/// `publish-event`: a client's event (`type` of its own: lower-case letters, digits and
/// `-`, at most 32; at most 4 KiB in all) goes to every subscriber with the client's tag in
/// `client` and the time, numbered like the engine's.
fn publish_event(ctl: &Control, ev: Value, client: &str) -> Result<Value, Fail> {
    let Value::Object(mut o) = ev else {
        return Err(bad("publish-event: event must be a JSON object"));
    };
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let ok_name = !ty.is_empty()
        && ty.len() <= 32
        && ty
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_name {
        return Err(bad(
            "publish-event: event.type must be 1-32 of a-z, 0-9 and -",
        ));
    }
    if ENGINE_EVENTS.contains(&ty.as_str()) {
        return Err(bad(format!(
            "publish-event: {ty:?} is one of the engine's event types"
        )));
    }
    if serde_json::to_vec(&o).map_or(usize::MAX, |v| v.len()) > 4096 {
        return Err(bad("publish-event: an event is at most 4096 bytes"));
    }
    o.insert("client".into(), json!(client));
    o.insert(
        "time".into(),
        json!(
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        ),
    );
    ctl.publish(Value::Object(o));
    Ok(json!({"published": true}))
}

/// `ping`: echo requests from an address of the gateway through the outbound SPD
/// ([`crate::probe`]), `count` of them `interval_ms` apart, each awaited `timeout_ms`; the
/// answer has each one's round trip (or `null`) and the outbound policy the SPD chose for
/// them. Only a reply that came decapsulated counts.
fn ping(ctl: &Control, a: &request::Ping) -> Result<Value, Fail> {
    let dst: IpAddr = a
        .dst
        .trim()
        .parse()
        .map_err(|_| bad(format!("args.dst: {:?} is not an IP address", a.dst)))?;
    let src: IpAddr = match &a.src {
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| bad(format!("args.src: {s:?} is not an IP address")))?,
        None => ctl.own_addrs[usize::from(dst.is_ipv6())].ok_or_else(|| {
            bad(format!(
                "args.src: {} has no {} address; name one",
                ctl.ifaces[1].0,
                if dst.is_ipv6() { "IPv6" } else { "IPv4" }
            ))
        })?,
    };
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(bad("args: src and dst are of two address families"));
    }
    if dst.is_unspecified() || dst.is_multicast() || src.is_unspecified() || src.is_multicast() {
        return Err(bad("args: src and dst must be unicast addresses"));
    }
    // the replies come back to the source: it must be the gateway's own
    if std::net::UdpSocket::bind(std::net::SocketAddr::new(src, 0)).is_err() {
        return Err(bad(format!(
            "args.src: {src} is not an address of this gateway"
        )));
    }
    let count = a.count.unwrap_or(1);
    if !(1..=100).contains(&count) {
        return Err(bad("args.count: 1 to 100"));
    }
    let ms = |v: Option<u64>, what: &str| match v.unwrap_or(1000) {
        m @ 10..=10_000 => Ok(Duration::from_millis(m)),
        _ => Err(bad(format!("args.{what}: 10 to 10000"))),
    };
    let (interval, timeout) = (
        ms(a.interval_ms, "interval_ms")?,
        ms(a.timeout_ms, "timeout_ms")?,
    );
    if interval * (count - 1) + timeout > Duration::from_secs(25) {
        return Err(bad(
            "args: (count - 1) × interval_ms + timeout_ms is at most 25 s",
        ));
    }
    let size = a.size.unwrap_or(56);
    if size > 1400 {
        return Err(bad("args.size: 0 to 1400"));
    }
    let policy = {
        let spd = lock(&ctl.running).spd.clone();
        // an echo request: ICMP type 8 / ICMPv6 128 (the local "port"), code 0
        let ep = |a: IpAddr, port: u8| match a {
            IpAddr::V4(_) => format!("{a}:{port}"),
            IpAddr::V6(_) => format!("[{a}]:{port}"),
        };
        let ty = if dst.is_ipv6() { 128 } else { 8 };
        let test = policy_test::Probe::parse("out", "icmp", &ep(src, ty), &ep(dst, 0), None)
            .map_err(|m| bad(format!("args.{m}")))?;
        policy_test::run(&spd, &test)
    };
    let worker = ctl
        .workers
        .first()
        .ok_or_else(|| (kind::INTERNAL, "no worker".to_owned(), Value::Null))?;
    let board = &ctl.probes;
    // (ticket, sent at, reply time)
    let mut out: Vec<(crate::probe::Ticket, u64, Option<u64>)> = vec![];
    let start = Instant::now();
    let mut sent = 0;
    let result = loop {
        let now = Instant::now();
        if sent < count && now >= start + interval * sent {
            let Some(t) = board.arm(src) else {
                break Err((
                    kind::BUSY,
                    format!("{} probes are out already", crate::probe::SLOTS),
                    Value::Null,
                ));
            };
            let at = ctl.clock.now().as_nanos();
            let p = crate::probe::Probe {
                src,
                dst,
                ticket: t,
                size,
            };
            if worker.send(Cmd::Probe(p)).is_err() {
                board.disarm(t);
                break Err((kind::INTERNAL, "worker 0 is gone".to_owned(), Value::Null));
            }
            out.push((t, at, None));
            sent += 1;
        }
        let mut waiting = false;
        for (t, at, got) in out.iter_mut() {
            if got.is_some() {
                continue;
            }
            if let Some(ns) = board.reply(*t) {
                *got = Some(ns.saturating_sub(*at));
                board.disarm(*t);
            } else if ctl.clock.now().as_nanos().saturating_sub(*at) > timeout.as_nanos() as u64 {
                board.disarm(*t);
                *got = Some(u64::MAX);
            } else {
                waiting = true;
            }
        }
        if sent == count && !waiting || ctl.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    for (t, _, got) in &out {
        if got.is_none() {
            board.disarm(*t);
        }
    }
    result?;
    let rtts: Vec<Option<f64>> = out
        .iter()
        .map(|(_, _, g)| match g {
            Some(ns) if *ns != u64::MAX => Some(*ns as f64 / 1e6),
            _ => None,
        })
        .collect();
    let ok: Vec<f64> = rtts.iter().flatten().copied().collect();
    let avg = (!ok.is_empty()).then(|| ok.iter().sum::<f64>() / ok.len() as f64);
    Ok(json!({
        "src": src, "dst": dst, "size": size,
        "sent": out.len(), "received": ok.len(), "lost": out.len() - ok.len(),
        "rtt_ms": rtts,
        "min_ms": ok.iter().copied().reduce(f64::min),
        "avg_ms": avg,
        "max_ms": ok.iter().copied().reduce(f64::max),
        "policy": policy.get("results").and_then(|r| r.get(0)).map_or(Value::Null, |r| json!({
            "name": r.get("first"), "disposition": r.get("disposition"),
        })),
    }))
}

fn alloc_spi(ctl: &Control, a: &request::AllocSpi) -> Result<Value, Fail> {
    let (lo, hi) = (a.min.unwrap_or(0xc000_0000), a.max.unwrap_or(0xcfff_ffff));
    let hold = std::time::Duration::from_secs(a.lifetime_s.unwrap_or(60).clamp(1, 3600));
    let mut random = [0u8; 4];
    rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
        (
            kind::INTERNAL,
            format!("the system random generator failed: {e}"),
            Value::Null,
        )
    })?;
    let run = lock(&ctl.running);
    let installed = |spi: u32| run.store.sa_by_spi(Direction::Inbound, spi).is_some();
    let spi = lock(&ctl.spis)
        .alloc(
            lo,
            hi,
            hold,
            Instant::now(),
            &installed,
            u32::from_ne_bytes(random),
        )
        .map_err(|e| match e {
            spi::AllocError::BadRange { .. } => bad(format!("args: {e}")),
            _ => (kind::BUSY, e.to_string(), Value::Null),
        })?;
    Ok(json!({"spi": spi, "spi_hex": format!("{spi:#010x}"), "expires_in_s": hold.as_secs()}))
}

/// A refused change as an error answer: its diagnostics (file, line, field) in `detail`.
fn refusal(r: Refusal) -> Fail {
    let detail = if r.diagnostics.is_empty() {
        Value::Null
    } else {
        json!(
            r.diagnostics
                .iter()
                .map(|d| json!({
                    "path": d.path, "line": d.line, "field": d.field, "message": d.message,
                }))
                .collect::<Vec<_>>()
        )
    };
    (r.kind, r.message, detail)
}

/// `policy test`: the first matching policy and every matching one, split by port ranges
/// ([`policy_test`]); the SPD is the running one, the lock held only to take it.
fn policy_test(ctl: &Control, a: &request::PolicyTest) -> Result<Value, Fail> {
    let probe = policy_test::Probe::parse(
        &a.direction,
        a.proto.as_deref().unwrap_or("any"),
        &a.local,
        &a.remote,
        a.name.as_deref(),
    )
    .map_err(|m| bad(format!("args.{m}")))?;
    let spd = lock(&ctl.running).spd.clone();
    Ok(policy_test::run(&spd, &probe))
}

/// Stream events until the client leaves.
fn subscribe(ctl: &Control, s: &mut UnixStream, id: u64) {
    let (tx, rx): (Sender<Value>, Receiver<Value>) = bounded(1024);
    lock(&ctl.subscribers).push(tx);
    if proto::write_frame(s, &proto::stream(id, json!({"subscribed": true}))).is_err() {
        return;
    }
    let mut probe = [0u8; 1];
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        if ctl.stop.load(Ordering::Relaxed) {
            return;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => {
                if proto::write_frame(s, &proto::stream(id, json!({"event": ev}))).is_err() {
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(_) => {
                // has the client left?
                use std::io::Read;
                match s.read(&mut probe) {
                    Ok(0) => return,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                    Ok(_) => {} // a subscriber has nothing to say; ignore
                }
            }
        }
    }
}

/// `trace`: stream the packets of one policy or SA, then answer with the count.
fn trace(ctl: &Control, s: &mut UnixStream, id: u64, a: &request::Trace) -> Result<Value, Fail> {
    let count = a.count.unwrap_or(100).clamp(1, 1_000_000);
    let seconds = a.seconds.unwrap_or(0);
    let mut filter = Filter {
        policy: None,
        in_spi: None,
        out_reqid: None,
        udp_ports: vec![],
    };
    {
        let run = lock(&ctl.running);
        filter.udp_ports = run.tunnel_ports();
        filter.udp_ports.push(4500);
        match (a.policy.as_deref(), a.sa.as_deref()) {
            (Some(p), None) => {
                let known = [Direction::Outbound, Direction::Inbound]
                    .iter()
                    .any(|&d| run.spd.policies(d).iter().any(|x| x.name == p));
                if !known {
                    return Err((
                        kind::NOT_FOUND,
                        format!("no policy is named {p:?}"),
                        Value::Null,
                    ));
                }
                filter.policy = Some(p.to_owned());
            }
            (None, Some(spi_s)) => {
                let spi = parse_spi(spi_s)
                    .ok_or_else(|| bad(format!("args.sa: {spi_s:?} is not an SPI")))?;
                if run.store.sa_by_spi(Direction::Inbound, spi).is_some() {
                    filter.in_spi = Some(spi);
                }
                if let Some(e) = run.store.sa_by_spi(Direction::Outbound, spi) {
                    filter.out_reqid = Some(e.cfg.reqid);
                }
                if filter.in_spi.is_none() && filter.out_reqid.is_none() {
                    return Err((
                        kind::NOT_FOUND,
                        format!("no SA has SPI {spi:#010x}"),
                        Value::Null,
                    ));
                }
            }
            _ => return Err(bad("give exactly one of args.policy and args.sa")),
        }
    }
    if ctl.tracing.swap(true, Ordering::AcqRel) {
        return Err((kind::BUSY, "another trace is running".into(), Value::Null));
    }
    let (tx, rx) = bounded::<trace::Packet>(4096);
    {
        let run = lock(&ctl.running);
        for w in &ctl.workers {
            let tap = Tap::new(filter.clone(), count, tx.clone(), &run.spd);
            let _ = w.send(Cmd::Trace(Some(Box::new(tap))));
        }
    }
    drop(tx);
    let end = (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds));
    let mut got = 0u64;
    let mut client_gone = false;
    let mut probe = [0u8; 1];
    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
    while got < count && end.is_none_or(|e| Instant::now() < e) && !ctl.stop.load(Ordering::Relaxed)
    {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => {
                got += 1;
                let t = p.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                let item = json!({"packet": {
                    "time_us": t.as_micros() as u64,
                    "worker": p.worker,
                    "direction": p.direction.name(),
                    "len": p.data.len(),
                    "hex": hex::encode(&p.data),
                }});
                if proto::write_frame(s, &proto::stream(id, item)).is_err() {
                    client_gone = true;
                    break;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                use std::io::Read;
                match s.read(&mut probe) {
                    Ok(0) => {
                        client_gone = true;
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        client_gone = true;
                        break;
                    }
                    Ok(_) => {}
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    for w in &ctl.workers {
        let _ = w.send(Cmd::Trace(None));
    }
    ctl.tracing.store(false, Ordering::Release);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if client_gone {
        return Err((kind::INTERNAL, "client left".into(), Value::Null));
    }
    Ok(json!({"captured": got}))
}

/// The socket path a client uses: `--socket`, else `$XSEC_SOCKET`, else the default.
pub fn default_socket() -> PathBuf {
    std::env::var_os("XSEC_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCKET))
}

/// Whether `p` names a socket file (for error messages).
pub fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroizes_every_string_however_deep() {
        let mut v = json!({
            "command": "add-sa",
            "args": {"text": "[[sa]]\nenc_key_in = \"0x0102\"", "list": ["k1", {"k": "k2"}], "n": 3}
        });
        wipe(&mut v);
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                Value::Object(m) => m.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let mut left = vec![];
        strings(&v, &mut left);
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(String::is_empty), "{left:?}");
        assert_eq!(v["args"]["n"], 3);
    }
}
