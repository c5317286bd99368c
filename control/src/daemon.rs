//! The xsec-ike process: UDP sockets on 500 and 4500 (non-ESP marker) for each local
//! address, one event loop that feeds the sans-I/O [`Endpoint`] and carries out what it
//! decides (send, install or remove SAs in xsecd), and signals for a clean stop. It needs
//! its UDP ports and xsecd's control socket, nothing else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::config::{ConnEntry, IkeConfig, StartAction};
use crate::ike::endpoint::Endpoint;
use crate::ike::sa::{Event, IKE_PORT, NATT_PORT, Transmit};
use crate::install::Installer;
use crate::watchdog::{Prober, Verdict, Watch, WatchState};

/// The four zero bytes in front of IKE on port 4500 (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// xsecd's control socket; `None` with `no_xsecd`.
    pub control: Option<PathBuf>,
    /// Negotiate only: install nothing (interop checks without a dataplane).
    pub no_xsecd: bool,
    /// xsec-ike's own control socket (default: `[ike] socket`, else
    /// [`crate::socket::DEFAULT_SOCKET`]).
    pub socket: Option<PathBuf>,
    /// Run as this user (a name from /etc/passwd, or `UID:GID`) once the UDP ports are
    /// bound and xsecd is connected; xsecd's control socket must then be open to its group
    /// (`[control] group`) for reconnections and the event stream.
    pub user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] xsecd::config::ConfigError),
    #[error("{0}")]
    Setup(String),
}

struct Socket {
    sock: UdpSocket,
    local: SocketAddr,
}

/// Counters of the loop itself.
#[derive(Debug, Default)]
struct LoopStats {
    keepalives_received: u64,
    non_ike_dropped: u64,
    send_errors: u64,
    install_errors: u64,
}

fn bind(addr: IpAddr, port: u16) -> Result<Socket, DaemonError> {
    let local = SocketAddr::new(addr, port);
    let sock =
        UdpSocket::bind(local).map_err(|e| DaemonError::Setup(format!("bind UDP {local}: {e}")))?;
    sock.set_nonblocking(true)
        .map_err(|e| DaemonError::Setup(format!("UDP {local}: {e}")))?;
    Ok(Socket { sock, local })
}

/// The child settings (reqid, start action) of a connection's child, by names.
fn settings<'a>(
    conns: &'a [ConnEntry],
    conn: &str,
    child: &str,
) -> Option<&'a crate::config::ChildSettings> {
    conns
        .iter()
        .find(|c| c.conn.name == conn)?
        .children
        .iter()
        .find(|c| c.name == child)
}

/// A Child SA installed in xsecd, for removal and for following the peer.
#[derive(Debug, Clone, Copy)]
struct Installed {
    ike: u64,
    reqid: u32,
    spi_in: u32,
    spi_out: u32,
    /// Its outbound SA is in xsecd (not yet for the responder of a rekey, no more once
    /// a rekey moved the traffic on).
    out: bool,
}

struct Daemon {
    server: crate::socket::Server,
    events: Option<crate::events::Events>,
    cfg: IkeConfig,
    endpoint: Endpoint,
    sockets: Vec<Socket>,
    installer: Installer,
    installed: HashMap<u32, Installed>,
    stats: LoopStats,
    /// Connections waiting to be initiated (`pump_starts`).
    starts: std::collections::VecDeque<String>,
    /// Tunnel watchdogs by connection, and the thread that sends their probes (none
    /// without xsecd).
    watches: HashMap<String, Watch>,
    prober: Option<Prober>,
}

impl Daemon {
    fn send(&mut self, t: Transmit) {
        let Some(s) = self.sockets.iter().find(|s| s.local == t.local) else {
            tracing::error!("no socket for {}", t.local);
            self.stats.send_errors += 1;
            return;
        };
        let r = if t.local.port() == IKE_PORT {
            s.sock.send_to(&t.data, t.remote)
        } else {
            let mut d = Vec::with_capacity(t.data.len() + 4);
            d.extend_from_slice(&NON_ESP_MARKER);
            d.extend_from_slice(&t.data);
            s.sock.send_to(&d, t.remote)
        };
        if let Err(e) = r {
            self.stats.send_errors += 1;
            tracing::warn!("send to {}: {e}", t.remote);
        }
    }

    /// Events before transmits: a Child SA is in xsecd before the message that lets the
    /// peer use it leaves. A rekey's responder answers CREATE_CHILD_SA, and charon as its
    /// initiator sends on the new SA as soon as that answer arrives; a rekey's initiator
    /// sends the DELETE that moves the responder's traffic. Sent first, either raced the
    /// install, and the peer's first packets on the new SA were `no_sa` drops.
    fn flush(&mut self) {
        loop {
            let mut busy = false;
            while let Some(e) = self.endpoint.poll_event() {
                self.on_event(e);
                busy = true;
            }
            while let Some(t) = self.endpoint.poll_transmit() {
                self.send(t);
                busy = true;
            }
            if !busy {
                break;
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        if let Some(v) = event_json(&e) {
            self.installer.publish(v);
        }
        match e {
            Event::IkeUp {
                ike,
                conn,
                peer_id,
                alg,
                local,
                remote,
            } => {
                tracing::info!(
                    conn,
                    ike,
                    "IKE_SA established between {local}[{}]...{remote}[{peer_id}], {alg}",
                    local.ip()
                );
                println!(
                    "xsec-ike: IKE_SA {conn}[{ike:016x}] established between {local}...{remote} with {alg}"
                );
            }
            Event::IkeDown { ike, conn, reason } => {
                tracing::info!(conn, ike, "IKE_SA down: {reason}");
                println!("xsec-ike: IKE_SA {conn}[{ike:016x}] down: {reason}");
                // dpd_action = trap: the children's policies stay (SA-less), so the next
                // packet raises an ACQUIRE and the tunnel comes back on demand
                let dead = matches!(
                    reason,
                    crate::ike::sa::Reason::DeadPeer | crate::ike::sa::Reason::Timeout
                );
                let trap = self.cfg.conns.iter().find(|c| {
                    c.conn.name == conn && c.conn.dpd_action == crate::ike::config::DpdAction::Trap
                });
                if dead && let Some(c) = trap {
                    let kids: Vec<_> = c
                        .conn
                        .children
                        .iter()
                        .zip(&c.children)
                        .map(|(ch, s)| (s.reqid, ch.local_ts.clone(), ch.remote_ts.clone()))
                        .collect();
                    for (reqid, l, r) in kids {
                        if let Err(e) = self.installer.trap(reqid, &l, &r) {
                            tracing::error!(conn, "trap policies after DPD: {e}");
                        }
                    }
                }
            }
            Event::ChildUp(c) => {
                let Some(s) = settings(&self.cfg.conns, &c.conn, &c.child) else {
                    tracing::error!(
                        conn = c.conn,
                        child = c.child,
                        "a Child SA of no configured child"
                    );
                    return;
                };
                let reqid = s.reqid;
                let life = crate::install::Lifetime {
                    hard_s: self
                        .cfg
                        .conns
                        .iter()
                        .find(|e| e.conn.name == c.conn)
                        .and_then(|e| e.conn.children.iter().find(|x| x.name == c.child))
                        .and_then(|x| x.life_time)
                        .map(|d| d.as_secs().max(1)),
                    soft_bytes: s.rekey_bytes,
                    hard_bytes: s.life_bytes,
                    soft_packets: s.rekey_packets,
                    hard_packets: s.life_packets,
                };
                // a rekey's initiator moves the traffic now: the old outbound SA goes
                let old_out = match (c.replaces, c.outbound_now) {
                    (Some(old), true) => self.installed.get_mut(&old).filter(|o| o.out).map(|o| {
                        o.out = false;
                        o.spi_out
                    }),
                    _ => None,
                };
                match self.installer.install(&c, reqid, &life, old_out) {
                    Ok(()) => {
                        self.installed.insert(
                            c.spi_in,
                            Installed {
                                ike: c.ike,
                                reqid,
                                spi_in: c.spi_in,
                                spi_out: c.spi_out,
                                out: c.outbound_now,
                            },
                        );
                        tracing::info!(
                            conn = c.conn,
                            child = c.child,
                            "CHILD_SA established with SPIs {:08x}_i {:08x}_o, {}",
                            c.spi_in,
                            c.spi_out,
                            c.alg
                        );
                        println!(
                            "xsec-ike: CHILD_SA {}.{}{{{reqid}}} established with SPIs {:08x}_i {:08x}_o, {}, {}{}",
                            c.conn,
                            c.child,
                            c.spi_in,
                            c.spi_out,
                            c.alg,
                            c.mode.name(),
                            if c.encap { ", UDP-encapsulated" } else { "" }
                        );
                    }
                    Err(e) => {
                        self.stats.install_errors += 1;
                        tracing::error!(
                            conn = c.conn,
                            child = c.child,
                            "installing the CHILD_SA in xsecd failed: {e}"
                        );
                    }
                }
            }
            Event::ChildDown {
                conn,
                child,
                spi_in,
                spi_out,
                reason,
                ..
            } => {
                if let Some(i) = self.installed.remove(&spi_in) {
                    let trapped = settings(&self.cfg.conns, &conn, &child)
                        .is_some_and(|s| s.start_action == StartAction::Trap);
                    let others = self.installed.values().any(|o| o.reqid == i.reqid);
                    let out = i.out.then_some(i.spi_out);
                    if let Err(e) = self
                        .installer
                        .remove(i.reqid, spi_in, out, !others && !trapped)
                    {
                        self.stats.install_errors += 1;
                        tracing::error!(
                            conn,
                            child,
                            "removing the CHILD_SA from xsecd failed: {e}"
                        );
                    }
                }
                tracing::info!(
                    conn,
                    child,
                    "CHILD_SA {spi_in:08x}_i {spi_out:08x}_o down: {reason}"
                );
                println!(
                    "xsec-ike: CHILD_SA {conn}.{child} {spi_in:08x}_i {spi_out:08x}_o down: {reason}"
                );
            }
            Event::ChildFailed {
                conn,
                child,
                reason,
                ..
            } => {
                tracing::warn!(conn, child, "CHILD_SA failed: {reason}");
                println!("xsec-ike: CHILD_SA {conn}.{child} failed: {reason}");
            }
            Event::ChildSwitch {
                spi_in,
                old_spi_out,
                ..
            } => {
                let old = old_spi_out.and_then(|o| {
                    let i = self
                        .installed
                        .values_mut()
                        .find(|i| i.spi_out == o && i.out)?;
                    i.out = false;
                    Some(o)
                });
                match self.installer.switch(spi_in, old) {
                    Ok(()) => {
                        if let Some(i) = self.installed.get_mut(&spi_in) {
                            i.out = true;
                        }
                        tracing::info!("outbound traffic moved to CHILD_SA {spi_in:08x}_i");
                    }
                    Err(e) => {
                        self.stats.install_errors += 1;
                        tracing::error!("moving the outbound traffic to {spi_in:08x}_i: {e}");
                    }
                }
            }
            Event::IkeRekeyed { old, new, conn } => {
                for i in self.installed.values_mut().filter(|i| i.ike == old) {
                    i.ike = new;
                }
                tracing::info!(conn, "IKE_SA rekeyed: {old:016x} -> {new:016x}");
                println!("xsec-ike: IKE_SA {conn}[{old:016x}] rekeyed to [{new:016x}]");
            }
            // the endpoint acts on these itself
            Event::Reauth { .. } => {}
            Event::InitialContact { conn, peer_id, .. } => {
                tracing::info!(conn, "INITIAL_CONTACT from {peer_id}");
            }
            Event::PeerMoved { ike, remote } => {
                let mine: Vec<Installed> = self
                    .installed
                    .values()
                    .filter(|i| i.ike == ike)
                    .copied()
                    .collect();
                for i in mine {
                    if let Err(e) = self
                        .installer
                        .move_peer(i.reqid, i.spi_in, i.spi_out, remote)
                    {
                        tracing::error!("following the peer to {remote}: {e}");
                    }
                }
            }
        }
    }

    fn receive(&mut self, i: usize, now: Instant) {
        let mut buf = vec![0u8; crate::ike::wire::MAX_MESSAGE];
        loop {
            let (n, from) = match self.sockets[i].sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("recv: {e}");
                    return;
                }
            };
            let local = self.sockets[i].local;
            let data = &buf[..n];
            let msg = if local.port() == IKE_PORT {
                data
            } else if n == 1 && data[0] == 0xff {
                self.stats.keepalives_received += 1;
                continue;
            } else if n > 4 && data[..4] == NON_ESP_MARKER {
                &data[4..]
            } else {
                // ESP on 4500 belongs to xsecd's dataplane; the XDP program keeps it there
                self.stats.non_ike_dropped += 1;
                continue;
            };
            self.endpoint
                .handle(now, local, from, msg, &mut self.installer);
            self.flush();
        }
    }

    /// An event of xsecd about one of our SAs or policies.
    fn on_xsecd_event(&mut self, ev: &serde_json::Value, now: Instant) {
        if ev["client"] != crate::install::CLIENT_TAG {
            return;
        }
        let reqid = ev["reqid"].as_u64().and_then(|r| u32::try_from(r).ok());
        let spi = ev["spi"].as_u64().and_then(|r| u32::try_from(r).ok());
        let inbound = ev["direction"] == "in";
        let child = spi.and_then(|spi| {
            self.installed
                .values()
                .find(|i| {
                    if inbound {
                        i.spi_in == spi
                    } else {
                        i.spi_out == spi
                    }
                })
                .copied()
        });
        match ev["type"].as_str() {
            Some("acquire") => {
                let Some(r) = reqid else { return };
                let Some((conn, child)) = self.cfg.conns.iter().find_map(|c| {
                    c.children
                        .iter()
                        .find(|s| {
                            s.reqid == r
                                && (s.start_action == StartAction::Trap
                                    || c.conn.dpd_action == crate::ike::config::DpdAction::Trap)
                        })
                        .map(|s| (c.conn.name.clone(), s.name.clone()))
                }) else {
                    return;
                };
                // already up, or a negotiation under way: nothing to start
                let busy = self.endpoint.sas().any(|s| {
                    s.conn.name == conn
                        && (s.state != crate::ike::sa::State::Established
                            || s.children.iter().any(|c| c.cfg == child))
                });
                if busy {
                    return;
                }
                tracing::info!(conn, child, "ACQUIRE for reqid {r}: initiating");
                println!("xsec-ike: ACQUIRE for {conn} (reqid {r}): initiating");
                if let Err(e) = self.endpoint.initiate_child(
                    now,
                    &conn,
                    Some(&child),
                    IKE_PORT,
                    &mut self.installer,
                ) {
                    tracing::error!(conn, "cannot initiate: {e}");
                }
            }
            Some("soft-expire" | "seq-soft") if ev["rekey_needed"] != false => {
                if let Some(i) = child {
                    tracing::info!(
                        "xsecd: soft limit ({}) of {:08x}_i reached: rekeying",
                        ev["limit"],
                        i.spi_in
                    );
                    self.endpoint
                        .rekey(now, i.ike, Some(i.spi_in), &mut self.installer);
                }
            }
            Some("hard-expire" | "seq-exhausted") => {
                if let Some(i) = child {
                    tracing::info!(
                        "xsecd: hard limit ({}) of {:08x}_i reached: deleting",
                        ev["limit"],
                        i.spi_in
                    );
                    self.endpoint
                        .delete_child(now, i.ike, i.spi_in, &mut self.installer);
                }
            }
            _ => {}
        }
    }

    /// Is `conn`'s tunnel up (an established IKE SA with a Child SA)?
    fn tunnel_up(&self, conn: &str) -> bool {
        self.endpoint.sas().any(|s| {
            s.conn.name == conn
                && s.state == crate::ike::sa::State::Established
                && !s.children.is_empty()
        })
    }

    /// The watchdogs: send the probes due, act on the outcomes that came.
    fn watchdogs(&mut self, now: Instant) {
        let Some(prober) = &mut self.prober else {
            return;
        };
        let outcomes = prober.drain();
        let names: Vec<String> = self.watches.keys().cloned().collect();
        for name in names {
            let up = self.tunnel_up(&name);
            if let (Some(w), Some(p)) = (self.watches.get_mut(&name), &self.prober)
                && w.due(now, up)
            {
                p.send(&name, &w.cfg);
            }
        }
        for o in outcomes {
            let Some(w) = self.watches.get_mut(&o.conn) else {
                continue;
            };
            let was_error = matches!(w.state, WatchState::Error(_));
            let verdict = w.outcome(&o);
            let (host, tries, lost) = (w.cfg.host, w.cfg.tries, w.lost);
            let conn = o.conn.clone();
            if let Some(e) = &o.error
                && !was_error
            {
                tracing::error!(conn, "watchdog: cannot probe {host}: {e}");
            }
            let event = |state: &str| {
                serde_json::json!({"type": "ike-watchdog", "conn": conn, "host": host,
                                   "state": state, "lost": lost})
            };
            match verdict {
                Verdict::Nothing => {}
                Verdict::Failing => {
                    tracing::warn!(conn, "watchdog: no reply from {host}");
                    self.installer.publish(event("failing"));
                }
                Verdict::Recovered => {
                    tracing::info!(conn, "watchdog: {host} answers again");
                    self.installer.publish(event("recovered"));
                }
                Verdict::Restart => {
                    tracing::warn!(
                        conn,
                        "watchdog: {tries} probes to {host} unanswered: restarting the IKE SA"
                    );
                    println!(
                        "xsec-ike: watchdog of {conn}: {host} unreachable through the tunnel, restarting"
                    );
                    self.installer.publish(event("restart"));
                    let ids: Vec<u64> = self
                        .endpoint
                        .sas()
                        .filter(|s| s.conn.name == conn)
                        .map(|s| s.id())
                        .collect();
                    for id in ids {
                        self.endpoint.terminate(now, id, &mut self.installer);
                    }
                    if let Err(e) =
                        self.endpoint
                            .initiate(now, &conn, IKE_PORT, &mut self.installer)
                    {
                        tracing::error!(conn, "watchdog: cannot initiate: {e}");
                    }
                    self.flush();
                }
            }
        }
    }

    /// The watchdogs of the configuration; those that did not change keep their state.
    fn set_watches(&mut self) {
        let mut old = std::mem::take(&mut self.watches);
        for c in &self.cfg.conns {
            if let Some(cfg) = &c.watchdog {
                let w = match old.remove(&c.conn.name) {
                    Some(w) if &w.cfg == cfg => w,
                    _ => Watch::new(cfg.clone()),
                };
                self.watches.insert(c.conn.name.clone(), w);
            }
        }
    }

    fn start(&mut self, now: Instant) {
        let traps: Vec<(
            u32,
            Vec<crate::ike::wire::TrafficSelector>,
            Vec<crate::ike::wire::TrafficSelector>,
        )> = self
            .cfg
            .conns
            .iter()
            .flat_map(|c| {
                c.conn
                    .children
                    .iter()
                    .zip(&c.children)
                    .filter(|(_, s)| s.start_action == StartAction::Trap)
                    .map(|(ch, s)| (s.reqid, ch.local_ts.clone(), ch.remote_ts.clone()))
            })
            .collect();
        for (reqid, l, r) in traps {
            match self.installer.trap(reqid, &l, &r) {
                Ok(()) => tracing::info!("trap policies of reqid {reqid} installed"),
                Err(e) => tracing::error!("trap policies of reqid {reqid}: {e}"),
            }
        }
        let starts: Vec<String> = self
            .cfg
            .conns
            .iter()
            .filter(|c| {
                c.children
                    .iter()
                    .any(|s| s.start_action == StartAction::Start)
            })
            .map(|c| c.conn.name.clone())
            .collect();
        self.starts.extend(starts);
        self.pump_starts(now);
    }

    /// Initiate queued connections, keeping at most `initiate_window` of our IKE SAs in
    /// negotiation at once (a thousand tunnels starting together would otherwise overrun
    /// the peer's socket buffers and retransmit).
    fn pump_starts(&mut self, now: Instant) {
        use crate::ike::sa::State;
        let mut busy = self
            .endpoint
            .sas()
            .filter(|s| s.initiator && matches!(s.state, State::InitSent | State::AuthSent))
            .count();
        while busy < self.cfg.initiate_window.max(1) {
            let Some(name) = self.starts.pop_front() else {
                return;
            };
            if let Err(e) = self
                .endpoint
                .initiate(now, &name, IKE_PORT, &mut self.installer)
            {
                tracing::error!(conn = name, "cannot initiate: {e}");
            }
            busy += 1;
            self.flush();
        }
    }

    /// Delete every IKE SA (their children leave xsecd at once), and give the peers a
    /// moment to hear it.
    fn shutdown(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self.endpoint.sas().map(|s| s.id()).collect();
        for id in ids {
            self.endpoint.terminate(now, id, &mut self.installer);
        }
        self.flush();
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end && self.endpoint.sas().next().is_some() {
            self.wait(Duration::from_millis(50));
            let now = Instant::now();
            for i in 0..self.sockets.len() {
                self.receive(i, now);
            }
        }
        match self.installer.remove_leftovers() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} SAs/policies from xsecd"),
            Err(e) => tracing::warn!("cleaning up xsecd: {e}"),
        }
    }

    /// One request of `xsecctl ike ...`.
    fn command(&mut self, r: &crate::socket::Request, config: &Path) -> serde_json::Value {
        use crate::socket::{error, kind, ok};
        use serde_json::json;
        let now = Instant::now();
        let conn_arg = r.args["conn"].as_str().map(str::to_owned);
        match r.command.as_str() {
            "list-sas" => ok(
                r.id,
                json!({"sas": self.endpoint.sas().map(|sa| sa_json(sa, now, &self.cfg)).collect::<Vec<_>>()}),
            ),
            "list-conns" => ok(
                r.id,
                json!({"conns": self.cfg.conns.iter().map(|c| {
                    let mut v = conn_json(c);
                    v["watchdog"] = self.watches.get(&c.conn.name).map_or(serde_json::Value::Null, Watch::json);
                    v
                }).collect::<Vec<_>>()}),
            ),
            "stats" => {
                let e = &self.endpoint.stats;
                ok(
                    r.id,
                    json!({
                        "received": e.received,
                        "sent": e.sent,
                        "dropped_malformed": e.dropped_malformed,
                        "dropped_unknown_spi": e.dropped_unknown_spi,
                        "dropped_no_connection": e.dropped_no_connection,
                        "dropped_bad_cookie": e.dropped_bad_cookie,
                        "cookies_sent": e.cookies_sent,
                        "init_refused": e.init_refused,
                        "keepalives_received": self.stats.keepalives_received,
                        "non_ike_dropped": self.stats.non_ike_dropped,
                        "send_errors": self.stats.send_errors,
                        "install_errors": self.stats.install_errors,
                        "ike_sas": self.endpoint.sas().count(),
                    }),
                )
            }
            "initiate" => {
                let Some(c) = conn_arg else {
                    return error(r.id, kind::BAD_ARGS, "initiate needs conn");
                };
                let r2 = self
                    .endpoint
                    .initiate(now, &c, IKE_PORT, &mut self.installer);
                self.flush();
                match r2 {
                    Ok(id) => ok(r.id, json!({"ike": format!("{id:016x}")})),
                    Err(e) => error(r.id, kind::NOT_FOUND, e),
                }
            }
            "terminate" | "rekey" => {
                let Some(c) = conn_arg else {
                    return error(r.id, kind::BAD_ARGS, format!("{} needs conn", r.command));
                };
                let ids: Vec<(u64, Vec<(String, u32)>)> = self
                    .endpoint
                    .sas()
                    .filter(|s| s.conn.name == c && s.state == crate::ike::sa::State::Established)
                    .map(|s| {
                        (
                            s.id(),
                            s.children
                                .iter()
                                .map(|ch| (ch.cfg.clone(), ch.spi_in))
                                .collect(),
                        )
                    })
                    .collect();
                if ids.is_empty() {
                    return error(
                        r.id,
                        kind::NOT_FOUND,
                        format!("no established IKE SA of {c:?}"),
                    );
                }
                let child = r.args["child"].as_str();
                let mut n = 0;
                for (id, children) in ids {
                    if r.command == "terminate" {
                        n += usize::from(self.endpoint.terminate(now, id, &mut self.installer));
                    } else if r.args["ike"] == json!(true) || child.is_none() && children.is_empty()
                    {
                        n += usize::from(self.endpoint.rekey(now, id, None, &mut self.installer));
                    } else {
                        for (_, spi) in children
                            .iter()
                            .filter(|(name, _)| child.is_none_or(|c| c == name))
                        {
                            n += usize::from(self.endpoint.rekey(
                                now,
                                id,
                                Some(*spi),
                                &mut self.installer,
                            ));
                        }
                    }
                }
                self.flush();
                ok(r.id, json!({"started": n}))
            }
            "reload" => match crate::config::load(config) {
                Ok(new) => {
                    let names: Vec<String> =
                        new.conns.iter().map(|c| c.conn.name.clone()).collect();
                    let gone: Vec<u64> = self
                        .endpoint
                        .sas()
                        .filter(|s| !names.contains(&s.conn.name))
                        .map(|s| s.id())
                        .collect();
                    for id in &gone {
                        self.endpoint.terminate(now, *id, &mut self.installer);
                    }
                    let old: Vec<String> =
                        self.cfg.conns.iter().map(|c| c.conn.name.clone()).collect();
                    self.endpoint
                        .set_connections(new.conns.iter().map(|c| c.conn.clone()).collect());
                    let added: Vec<String> =
                        names.iter().filter(|n| !old.contains(n)).cloned().collect();
                    self.cfg = new;
                    self.set_watches();
                    for name in &added {
                        let start = self.cfg.conns.iter().any(|c| {
                            &c.conn.name == name
                                && c.children
                                    .iter()
                                    .any(|s| s.start_action == StartAction::Start)
                        });
                        if start
                            && let Err(e) =
                                self.endpoint
                                    .initiate(now, name, IKE_PORT, &mut self.installer)
                        {
                            tracing::error!(conn = name, "cannot initiate: {e}");
                        }
                    }
                    self.flush();
                    tracing::info!(
                        "configuration reloaded: {} connections, {} added, {} IKE SAs of removed ones deleted",
                        names.len(),
                        added.len(),
                        gone.len()
                    );
                    ok(
                        r.id,
                        json!({"conns": names.len(), "added": added, "terminated": gone.len()}),
                    )
                }
                Err(e) => {
                    let d: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
                    let mut v = error(r.id, kind::CONFIG, e.to_string());
                    v["error"]["detail"] = json!(d);
                    v
                }
            },
            other => error(
                r.id,
                kind::UNKNOWN_COMMAND,
                format!(
                    "unknown command {other:?} (list-sas, list-conns, initiate, terminate, rekey, reload, stats)"
                ),
            ),
        }
    }

    fn wait(&self, d: Duration) {
        let mut fds: Vec<PollFd<'_>> = self
            .sockets
            .iter()
            .map(|s| PollFd::new(&s.sock, PollFlags::IN))
            .collect();
        fds.push(PollFd::new(&self.server.listener, PollFlags::IN));
        if let Some(e) = &self.events {
            fds.push(PollFd::new(&e.wake, PollFlags::IN));
        }
        if let Some(p) = &self.prober {
            fds.push(PollFd::new(&p.wake, PollFlags::IN));
        }
        let t = Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        };
        let _ = rustix::event::poll(&mut fds, Some(&t));
    }
}

/// Load the configuration, bind, connect to xsecd, and run until `stop`.
pub fn run(opts: &Options, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let cfg = crate::config::load(&opts.config)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let control = if opts.no_xsecd {
        None
    } else {
        Some(
            opts.control
                .clone()
                .or_else(|| cfg.control.clone())
                .unwrap_or_else(|| PathBuf::from(xsecd::config::DEFAULT_SOCKET)),
        )
    };
    let mut installer = connect_xsecd(control.as_deref(), &stop)?;
    match installer.remove_leftovers() {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(
                "removed {n} SAs/policies a previous xsec-ike left in xsecd; renegotiating"
            );
            println!("xsec-ike: removed {n} SAs/policies left by a previous xsec-ike");
        }
        Err(e) => return Err(DaemonError::Setup(format!("reading xsecd's store: {e}"))),
    }
    let mut addrs: Vec<IpAddr> = cfg.conns.iter().filter_map(|c| c.conn.local_addr).collect();
    addrs.sort();
    addrs.dedup();
    let mut sockets = vec![];
    for a in addrs {
        sockets.push(bind(a, IKE_PORT)?);
        sockets.push(bind(a, NATT_PORT)?);
    }
    let now = Instant::now();
    let mut endpoint = Endpoint::new(
        cfg.conns.iter().map(|c| c.conn.clone()).collect(),
        cfg.timing,
        now,
    );
    endpoint.cookie_threshold = cfg.cookie_threshold;
    let socket = opts
        .socket
        .clone()
        .or_else(|| cfg.socket.clone())
        .unwrap_or_else(|| PathBuf::from(crate::socket::DEFAULT_SOCKET));
    let server = crate::socket::Server::bind(&socket).map_err(DaemonError::Setup)?;
    // everything that needs root is done: sockets bound, xsecd connected, leftovers gone
    if let Some(user) = &opts.user {
        drop_privileges(user).map_err(DaemonError::Setup)?;
        tracing::info!("running as {user}");
    }
    let events = match &control {
        Some(p) if installer.is_connected() => Some(
            crate::events::Events::spawn(p.clone(), stop.clone())
                .map_err(|e| DaemonError::Setup(format!("xsecd's events: {e}")))?,
        ),
        _ => None,
    };
    let prober = match &control {
        // always: a reload may add a watchdog
        Some(p) if installer.is_connected() => Some(
            Prober::spawn(p.clone(), stop.clone())
                .map_err(|e| DaemonError::Setup(format!("the watchdog thread: {e}")))?,
        ),
        _ => None,
    };
    let mut d = Daemon {
        server,
        events,
        cfg,
        endpoint,
        sockets,
        installer,
        installed: HashMap::new(),
        stats: LoopStats::default(),
        starts: Default::default(),
        watches: HashMap::new(),
        prober,
    };
    d.set_watches();
    println!(
        "xsec-ike: ready ({} connections{})",
        d.cfg.conns.len(),
        if d.installer.is_connected() {
            ""
        } else {
            ", not installing: --no-xsecd"
        }
    );
    d.start(now);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = d
            .endpoint
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500))
            .min(
                d.watches
                    .values()
                    .filter_map(Watch::next_due)
                    .min()
                    .map_or(Duration::MAX, |t| t.saturating_duration_since(now)),
            );
        d.wait(wait);
        let now = Instant::now();
        for i in 0..d.sockets.len() {
            d.receive(i, now);
        }
        d.endpoint.handle_timeout(now, &mut d.installer);
        d.flush();
        if !d.starts.is_empty() {
            d.pump_starts(now);
        }
        d.watchdogs(now);
        let evs = d.events.as_mut().map(|e| e.drain()).unwrap_or_default();
        for ev in evs {
            d.on_xsecd_event(&ev, now);
            d.flush();
        }
        while let Some((s, req)) = d.server.accept() {
            let v = match req {
                Some(r) => d.command(&r, &opts.config),
                None => crate::socket::error(
                    0,
                    crate::socket::kind::BAD_JSON,
                    "not a version 2 request",
                ),
            };
            crate::socket::answer(s, &v);
            d.flush();
        }
    }
    d.shutdown();
    tracing::info!("stopped; {:?} {:?}", d.endpoint.stats, d.stats);
    Ok(())
}

fn connect_xsecd(path: Option<&Path>, stop: &AtomicBool) -> Result<Installer, DaemonError> {
    let Some(p) = path else {
        return Installer::connect(None).map_err(|e| DaemonError::Setup(e.to_string()));
    };
    // xsecd may still be starting: wait up to 10 s for its socket
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match Installer::connect(Some(p)) {
            Ok(i) => return Ok(i),
            Err(e) if Instant::now() >= end || stop.load(Ordering::Relaxed) => {
                return Err(DaemonError::Setup(format!("xsecd's control socket: {e}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn secs_until(t: Option<Instant>, now: Instant) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        t.saturating_duration_since(now).as_secs().into()
    })
}

fn ts_text(ts: &[crate::ike::wire::TrafficSelector]) -> Vec<String> {
    ts.iter()
        .map(|t| {
            let mut s = crate::install::range_text(t.start, t.end);
            if t.ip_proto != 0 {
                s.push_str(&format!("[{}", t.ip_proto));
                if (t.start_port, t.end_port) != (0, 65535) {
                    s.push_str(&format!("/{}-{}", t.start_port, t.end_port));
                }
                s.push(']');
            }
            s
        })
        .collect()
}

fn key_bits(a: &crate::ike::proposal::Chosen) -> serde_json::Value {
    serde_json::json!({
        "encr": a.encr.keymat_len() * 8,
        "integ": a.integ.map_or(0, |i| i.key_len() * 8),
    })
}

/// An IKE SA for `list-sas`: identities, addresses, algorithms (with key lengths), timers,
/// counters and its Child SAs. No key.
fn sa_json(sa: &crate::ike::sa::IkeSa, now: Instant, cfg: &IkeConfig) -> serde_json::Value {
    use serde_json::json;
    let reqid = |child: &str| {
        cfg.conns
            .iter()
            .find(|c| c.conn.name == sa.conn.name)
            .and_then(|c| c.children.iter().find(|s| s.name == child))
            .map(|s| s.reqid)
    };
    let children: Vec<serde_json::Value> = sa
        .children
        .iter()
        .map(|c| {
            json!({
                "name": c.cfg,
                "reqid": reqid(&c.cfg),
                "spi_in": format!("{:08x}", c.spi_in),
                "spi_out": format!("{:08x}", c.spi_out),
                "mode": c.mode.name(),
                "encap": sa.encap(),
                "algorithms": c.alg.to_string(),
                "key_bits": key_bits(&c.alg),
                "local_ts": ts_text(&c.local_ts),
                "remote_ts": ts_text(&c.remote_ts),
                "established_s": now.saturating_duration_since(c.created).as_secs(),
                "rekey_in_s": secs_until(if c.rekeying { None } else { c.rekey_at }, now),
                "expire_in_s": secs_until(c.expire_at, now),
                "rekeying": c.rekeying,
            })
        })
        .collect();
    json!({
        "conn": sa.conn.name,
        "ike": format!("{:016x}", sa.id()),
        "spi_i": hex::encode(sa.spi_i),
        "spi_r": hex::encode(sa.spi_r),
        "state": format!("{:?}", sa.state),
        "initiator": sa.initiator,
        "local": sa.local.to_string(),
        "remote": sa.remote.to_string(),
        "local_id": sa.conn.local_id.to_string(),
        "remote_id": sa.peer_id.as_ref().map(|i| i.to_string()),
        "nat_local": sa.nat_local,
        "nat_remote": sa.nat_remote,
        "algorithms": sa.alg.map(|a| a.to_string()),
        "key_bits": sa.alg.as_ref().map(key_bits),
        "established_s": sa.age(now).as_secs(),
        "rekey_in_s": secs_until(sa.rekey_at, now),
        "retransmits_sent": sa.stats.retransmits_sent,
        "retransmits_answered": sa.stats.retransmits_answered,
        "dropped_integrity": sa.stats.dropped_integrity,
        "dropped_message_id": sa.stats.dropped_message_id,
        "dropped_malformed": sa.stats.dropped_malformed,
        "children": children,
    })
}

fn conn_json(c: &ConnEntry) -> serde_json::Value {
    use serde_json::json;
    let k = &c.conn;
    let children: Vec<serde_json::Value> = k
        .children
        .iter()
        .zip(&c.children)
        .map(|(ch, s)| {
            json!({
                "name": ch.name,
                "reqid": s.reqid,
                "start_action": format!("{:?}", s.start_action).to_lowercase(),
                "mode": ch.mode.name(),
                "esp_proposals": ch.esp.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "local_ts": ts_text(&ch.local_ts),
                "remote_ts": ts_text(&ch.remote_ts),
                "rekey_time_s": ch.rekey_time.map(|d| d.as_secs()),
                "life_time_s": ch.life_time.map(|d| d.as_secs()),
            })
        })
        .collect();
    json!({
        "name": k.name,
        "local_addr": k.local_addr.map(|a| a.to_string()),
        "remote_addr": k.remote_addr.map(|a| a.to_string()),
        "local_id": k.local_id.to_string(),
        "remote_id": k.remote_id.as_ref().map(|i| i.to_string()),
        "psk_bytes": k.psk.len(),
        "proposals": k.ike.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "dpd_delay_s": k.dpd_delay.map(|d| d.as_secs()),
        "dpd_action": format!("{:?}", k.dpd_action).to_lowercase(),
        "rekey_time_s": k.rekey_time.map(|d| d.as_secs()),
        "children": children,
    })
}

/// A user's uid and primary gid: `NAME` looked up in /etc/passwd, or `UID:GID`.
pub fn lookup_user(user: &str) -> Result<(u32, u32), String> {
    if let Some((u, g)) = user.split_once(':')
        && let (Ok(u), Ok(g)) = (u.parse(), g.parse())
    {
        return Ok((u, g));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == user)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .ok_or_else(|| format!("no user {user:?} in /etc/passwd"))
}

/// Become `user` (groups, gid, then uid; no way back). Linux keeps credentials per thread:
/// this runs before xsec-ike starts any thread, so it holds for the whole process.
fn drop_privileges(user: &str) -> Result<(), String> {
    use rustix::process::{Gid, Uid};
    let (uid, gid) = lookup_user(user)?;
    let g = Gid::from_raw(gid);
    let u = Uid::from_raw(uid);
    rustix::thread::set_thread_groups(&[g]).map_err(|e| format!("setgroups: {e}"))?;
    rustix::thread::set_thread_res_gid(g, g, g).map_err(|e| format!("setresgid {gid}: {e}"))?;
    rustix::thread::set_thread_res_uid(u, u, u).map_err(|e| format!("setresuid {uid}: {e}"))?;
    if rustix::process::getuid() != u || rustix::process::geteuid() != u {
        return Err(format!("still not uid {uid} after setresuid"));
    }
    Ok(())
}

/// An event as xsecd's subscribers see it (`xsecctl events`): names, SPIs, algorithms,
/// never a key.
fn event_json(e: &Event) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match e {
        Event::IkeUp {
            ike,
            conn,
            peer_id,
            alg,
            local,
            remote,
        } => json!({
            "type": "ike-up", "conn": conn, "ike": format!("{ike:016x}"), "peer_id": peer_id,
            "algorithms": alg.to_string(), "local": local.to_string(), "remote": remote.to_string(),
        }),
        Event::IkeDown { ike, conn, reason } => json!({
            "type": "ike-down", "conn": conn, "ike": format!("{ike:016x}"), "reason": reason.to_string(),
        }),
        Event::IkeRekeyed { old, new, conn } => json!({
            "type": "ike-rekeyed", "conn": conn, "ike": format!("{new:016x}"), "old": format!("{old:016x}"),
        }),
        Event::ChildUp(c) => json!({
            "type": "ike-child-up", "conn": c.conn, "child": c.child, "ike": format!("{:016x}", c.ike),
            "spi_in": format!("{:08x}", c.spi_in), "spi_out": format!("{:08x}", c.spi_out),
            "algorithms": c.alg.to_string(), "mode": c.mode.name(), "encap": c.encap,
            "rekey_of": c.replaces.map(|s| format!("{s:08x}")),
        }),
        Event::ChildDown {
            ike,
            conn,
            child,
            spi_in,
            spi_out,
            reason,
        } => json!({
            "type": "ike-child-down", "conn": conn, "child": child, "ike": format!("{ike:016x}"),
            "spi_in": format!("{spi_in:08x}"), "spi_out": format!("{spi_out:08x}"), "reason": reason.to_string(),
        }),
        Event::ChildFailed {
            ike,
            conn,
            child,
            reason,
        } => json!({
            "type": "ike-child-failed", "conn": conn, "child": child, "ike": format!("{ike:016x}"),
            "reason": reason.to_string(),
        }),
        _ => return None,
    })
}
