//! The daemon: configuration → SA shards → XDP steering → pinned workers → next-hop
//! resolution → counters, until asked to stop.
//!
//! Sharding rule: SA pair `i` (file order, reqid `i + 1`) belongs to worker `i mod N`, both
//! its inbound and its outbound SA. Every worker's engine knows the owner of every inbound
//! SPI and outbound reqid ([`Shards`]), so a packet the NIC hashed to another queue is handed
//! to the owner over a lock-free queue.

use crate::config::{self, Config};
use crate::control::running::{Running, Source};
use crate::control::{self, Control, CtlCounters};
use crate::neigh::{Resolution, Resolver};
use crate::replay::ReplaySource;
use crate::stats::{self, StatsFile};
use crate::worker::{
    self, Cmd, CmdSender, HANDOFF_BUF, HANDOFF_POOL, Hop, Mesh, Snapshot, WorkerSetup,
};
use crate::xdp::{Side as XdpSide, XdpMode, XdpSteering};
use crate::xsk::{Side, XskConfig};
use crossbeam_channel::{Receiver, bounded, unbounded};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use xsec_dataplane::events::EventKind;
use xsec_dataplane::spd::Direction;
use xsec_dataplane::time::MonotonicClock;
use zeroize::Zeroizing;

/// How often a soft-lifetime event nobody acted on is raised again.
const SOFT_REPEAT: Duration = Duration::from_secs(5);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Setup(String),
    /// The configuration does not fit the system (RX queues left uncovered): exit 2.
    #[error("{0}")]
    Refused(String),
}

/// Command-line options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub stats_file: Option<PathBuf>,
    /// Control socket path, overriding `[control] socket`.
    pub control: Option<PathBuf>,
    /// Replay frames from memory into the workers instead of attaching to the interfaces
    /// (no XDP program, no sockets; next hops still come from the kernel's tables).
    pub replay: Option<Arc<ReplaySource>>,
}

struct WorkerHandle {
    cmds: CmdSender,
    join: Option<JoinHandle<()>>,
}

/// The control socket's file, removed on drop unless taken (`None`).
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Validate a configuration without touching the system.
pub fn check(path: &std::path::Path) -> Result<Config, DaemonError> {
    Ok(config::load(path)?)
}

/// The gateway's own addresses on an interface (first global IPv4 and IPv6), for ICMP errors.
fn interface_addrs(res: &mut Resolver, ifindex: u32) -> [Option<IpAddr>; 2] {
    let mut out = [None, None];
    for ip in res.addresses(ifindex).unwrap_or_default() {
        out[usize::from(ip.is_ipv6())].get_or_insert(ip);
    }
    out
}

/// RX queues of an interface: the `queues/rx-N` entries sysfs shows (the queues the device
/// uses), or else the count the device was created with.
fn rx_queue_count(res: &mut Resolver, name: &str, ifindex: u32) -> Result<u32, String> {
    let dir = format!("/sys/class/net/{name}/queues");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let n = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count();
        if n > 0 {
            return Ok(n as u32);
        }
    }
    match res.link(ifindex) {
        Ok(l) => l
            .rx_queues
            .ok_or_else(|| format!("{name}: the kernel does not say how many RX queues it has")),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// Every RX queue of both interfaces has a worker or is named in `uncovered_queues`
/// (where the XDP program drops what a worker would have decided). Queues named in the
/// configuration that an interface does not have are fine: the other interface may.
pub fn check_coverage(
    queues: &[u32],
    uncovered: &[u32],
    interfaces: &[(&str, u32)],
) -> Result<(), String> {
    let mut problems = vec![];
    for (name, count) in interfaces {
        let missing: Vec<String> = (0..*count)
            .filter(|q| !queues.contains(q) && !uncovered.contains(q))
            .map(|q| q.to_string())
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "RX queue(s) {} of {name} ({count} RX queues)",
                missing.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "gateway.queues {queues:?} leaves {} without a worker; add them to `queues`, or list \
         them in `uncovered_queues` (traffic the SPD must decide is then dropped there)",
        problems.join(" and ")
    ))
}

/// Run the gateway until `stop` is set. Prints `xsecd: ready` on stdout once traffic flows.
pub fn run(opts: &Options, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    // The file holds keys: its text lives in buffers wiped when dropped.
    let text = Zeroizing::new(std::fs::read_to_string(&opts.config).map_err(|source| {
        config::ConfigError::Read {
            path: opts.config.clone(),
            source,
        }
    })?);
    let mut cfg = config::parse(&text, &opts.config)?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if let Some(p) = &opts.control {
        cfg.control.socket = p.clone();
    }
    let source = Source::new(&text, &opts.config);
    drop(text);
    let gw = cfg.gateway.clone();
    let control_cfg = cfg.control.clone();
    let n = gw.queues.len().max(1);
    let mut running = Running::new(cfg, source, n).map_err(DaemonError::Setup)?;
    running.socket_override = opts.control.clone();
    let clock = MonotonicClock::default();
    let now = clock.now();
    let spd = running.spd.clone();
    let shards = running.shard_map();
    let mut per_worker = running.initial_sas(now).map_err(DaemonError::Setup)?;
    let mut heartbeats = running.heartbeats();
    let tunnel_ports = running.tunnel_ports();

    // The control socket (and metrics listener) before anything is attached: another xsecd
    // on the same socket, or a taken port, fails the start cleanly.
    let gid = match &control_cfg.group {
        Some(g) => Some(control::group_id(g).map_err(DaemonError::Setup)?),
        None => None,
    };
    let listener = control::bind(&control_cfg, gid).map_err(DaemonError::Setup)?;
    // a start that fails from here on removes the socket it created (the control thread
    // removes it once it serves)
    let mut socket_file = SocketFile(Some(control_cfg.socket.clone()));
    let metrics_listener = match control_cfg.metrics {
        Some(a) => Some(
            std::net::TcpListener::bind(a)
                .map_err(|e| DaemonError::Setup(format!("control.metrics {a}: {e}")))?,
        ),
        None => None,
    };

    // The kernel's tables: interfaces now (a typo in the config fails before anything is
    // attached), next hops later.
    let mut res = Resolver::new().map_err(|e| DaemonError::Setup(format!("netlink: {e}")))?;
    let sides = [
        (
            res.ifindex(&gw.unprotected)
                .map_err(|e| DaemonError::Setup(format!("{}: {e}", gw.unprotected)))?,
            Side::Unprotected,
        ),
        (
            res.ifindex(&gw.protected)
                .map_err(|e| DaemonError::Setup(format!("{}: {e}", gw.protected)))?,
            Side::Protected,
        ),
    ];

    if opts.replay.is_none() {
        // The forward guard before anything is attached: from here on the kernel forwards
        // nothing between the two interfaces, whatever happens to this process.
        if gw.forward_guard {
            crate::guard::install(&gw.unprotected, &gw.protected)
                .map_err(|e| DaemonError::Setup(format!("forward guard: {e}")))?;
            info!(
                "forward guard: nftables table inet {} drops what the kernel would forward \
                 via {} or {}",
                crate::guard::table_name(&gw.unprotected, &gw.protected),
                gw.unprotected,
                gw.protected
            );
        }
        let mut counts = vec![];
        for (name, (ifindex, _)) in [&gw.unprotected, &gw.protected].into_iter().zip(sides) {
            counts.push((
                name.as_str(),
                rx_queue_count(&mut res, name, ifindex).map_err(DaemonError::Setup)?,
            ));
        }
        check_coverage(&gw.queues, &gw.uncovered_queues, &counts).map_err(DaemonError::Refused)?;
        if !gw.uncovered_queues.is_empty() {
            info!(
                "RX queue(s) {:?} left uncovered: the XDP program drops what the SPD would decide there",
                gw.uncovered_queues
            );
        }
    }

    // XDP steering first: nothing reaches the sockets until they are in the XSKMAP, and
    // until then what a worker would decide is dropped.
    let mode = match gw.xdp_mode {
        config::XdpModeCfg::Driver => XdpMode::Driver,
        config::XdpModeCfg::Skb => XdpMode::Skb,
    };
    let mut xdp = match &opts.replay {
        Some(_) => None,
        None => {
            let local = res
                .local_addresses()
                .map_err(|e| DaemonError::Setup(format!("netlink addresses: {e}")))?;
            let x = XdpSteering::load_with(&gw.unprotected, &gw.protected, mode, |x| {
                x.set_tunnel_ports(&tunnel_ports)?;
                x.set_udp_peers(&running.udp_peers())?;
                x.set_local_addrs(&local)
            })
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
            Some(x)
        }
    };

    // Workers.
    let (resolve_tx, resolve_rx) = bounded::<IpAddr>(4096);
    let (events_tx, events_rx) = bounded(4096);
    let mut inboxes = Vec::new();
    let mut inbox_rx = Vec::new();
    let mut pools = Vec::new();
    let mut pool_rx = Vec::new();
    for _ in 0..n {
        // room for every buffer the other workers own: a handoff is lost only when the
        // sender's pool is empty
        let (t, r) = bounded(HANDOFF_POOL * n.saturating_sub(1).max(1));
        inboxes.push(t);
        inbox_rx.push(r);
        let (t, r) = bounded::<Box<[u8; HANDOFF_BUF]>>(HANDOFF_POOL);
        pools.push(t);
        pool_rx.push(r);
    }
    let mut wakers = Vec::new();
    for i in 0..n {
        wakers.push(
            worker::Waker::new()
                .map_err(|e| DaemonError::Setup(format!("worker {i}: eventfd: {e}")))?,
        );
    }
    let mesh = Mesh {
        inboxes,
        pools: pools.clone(),
        wakers,
        big_in_flight: Arc::new(AtomicUsize::new(0)),
    };
    let icmp_src = interface_addrs(&mut res, sides[1].0);
    let probes = {
        // a random identifier: a LAN host's own pings from a probe's address keep theirs
        let mut r = [0u8; 2];
        let _ = rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty());
        Arc::new(crate::probe::ProbeBoard::new(u16::from_ne_bytes(r)))
    };
    let (ready_tx, ready_rx) = unbounded();
    let mut workers = Vec::new();
    for (i, (inbox, pool_r)) in inbox_rx.into_iter().zip(pool_rx).enumerate() {
        let (cmd_tx, cmd_rx) = unbounded();
        let setup = WorkerSetup {
            id: i as u16,
            queue: gw.queues[i],
            core: gw.cores.as_ref().and_then(|c| c.get(i).copied()),
            unprotected: gw.unprotected.clone(),
            protected: gw.protected.clone(),
            xsk: XskConfig::default(),
            busy_poll: matches!(gw.idle, config::IdleMode::Busy),
            spd: spd.clone(),
            cmds: cmd_rx,
            resolve: resolve_tx.clone(),
            events: events_tx.clone(),
            inbox,
            pool: (pools[i].clone(), pool_r),
            mesh: mesh.clone(),
            icmp_src,
            mtu: gw.mtu,
            icmp_limit: (gw.icmp_rate, gw.icmp_burst),
            panic_after: if cfg!(debug_assertions) && i == 0 {
                std::env::var("XSECD_TEST_WORKER_PANIC")
                    .ok()
                    .and_then(|v| v.parse().ok())
            } else {
                None
            },
            clock,
            probes: probes.clone(),
            replay: opts.replay.clone(),
        };
        let per_worker_len: Vec<usize> = per_worker.iter().map(Vec::len).collect();
        for sa in per_worker[i].drain(..) {
            let _ = cmd_tx.send(Cmd::InstallSa(Box::new(sa)));
        }
        // each worker its own copy: it edits it in place on changes
        let _ = cmd_tx.send(Cmd::SetShards(Arc::new(shards.clone())));
        let _ = cmd_tx.send(Cmd::SetHeartbeats(std::mem::take(&mut heartbeats[i])));
        tracing::debug!(
            "worker {i}: queue {} of {} and {}, core {:?}, {} SA(s)",
            gw.queues[i],
            gw.unprotected,
            gw.protected,
            gw.cores.as_ref().and_then(|c| c.get(i)),
            per_worker_len[i]
        );
        let rt = ready_tx.clone();
        let join = std::thread::Builder::new()
            .name(format!("xsec-w{i}"))
            .spawn(move || worker::run(setup, rt))
            .map_err(|e| DaemonError::Setup(format!("spawn worker {i}: {e}")))?;
        workers.push(WorkerHandle {
            cmds: CmdSender::new(cmd_tx, mesh.wakers.get(i).cloned()),
            join: Some(join),
        });
    }
    let stop_workers = |workers: &mut Vec<WorkerHandle>| {
        for w in workers.iter() {
            let _ = w.cmds.send(Cmd::Stop);
        }
        for w in workers.iter_mut() {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
    };
    for _ in 0..n {
        let r = ready_rx.recv_timeout(Duration::from_secs(10));
        let r = match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                stop_workers(&mut workers);
                return Err(DaemonError::Setup(e));
            }
            Err(_) => {
                stop_workers(&mut workers);
                return Err(DaemonError::Setup("a worker did not start in 10 s".into()));
            }
        };
        let (id, queue, fds) = r;
        let Some(xdp) = xdp.as_mut() else { continue };
        for (side, fd) in [(XdpSide::Unprotected, fds[0]), (XdpSide::Protected, fds[1])] {
            if let Err(e) = xdp.register_xsk(side, queue, fd) {
                stop_workers(&mut workers);
                return Err(DaemonError::Setup(format!("worker {id}: {e}")));
            }
        }
    }

    // Next-hop resolution for every worker.
    let cmd_senders: Vec<CmdSender> = workers.iter().map(|w| w.cmds.clone()).collect();
    let resolver_stop = Arc::new(AtomicBool::new(false));
    let resolver = {
        let senders = cmd_senders.clone();
        let stop = resolver_stop.clone();
        std::thread::Builder::new()
            .name("xsec-neigh".into())
            .spawn(move || resolve_loop(res, sides, resolve_rx, senders, stop))
            .map_err(|e| DaemonError::Setup(format!("spawn resolver: {e}")))?
    };

    // Resolve the tunnel peers now rather than on the first packet.
    for e in running.store.sas() {
        if let (Direction::Outbound, Some(remote)) = (e.cfg.direction, e.cfg.remote) {
            let _ = resolve_tx.try_send(remote);
        }
    }
    let pairs = running.cfg.sas.len();
    let ctl = Arc::new(Control {
        spis: Mutex::new(Default::default()),
        running: Mutex::new(running),
        xdp: Mutex::new(xdp),
        workers: cmd_senders.clone(),
        resolve: resolve_tx.clone(),
        clock,
        started: Instant::now(),
        subscribers: Mutex::new(vec![]),
        ifaces: [
            (gw.unprotected.clone(), sides[0].0),
            (gw.protected.clone(), sides[1].0),
        ],
        xdp_mode: match (&opts.replay, mode) {
            (Some(_), _) => "none",
            (None, XdpMode::Driver) => "driver",
            (None, XdpMode::Skb) => "skb",
        },
        cfg: control_cfg.clone(),
        gid,
        conns: AtomicUsize::new(0),
        tracing: AtomicBool::new(false),
        counters: CtlCounters::default(),
        stop: stop.clone(),
        probes,
        own_addrs: icmp_src,
    });
    let mut servers = vec![];
    {
        let c = ctl.clone();
        servers.push(
            std::thread::Builder::new()
                .name("xsec-control".into())
                .spawn(move || control::serve(c, listener))
                .map_err(|e| DaemonError::Setup(format!("spawn control: {e}")))?,
        );
        socket_file.0 = None;
    }
    if let Some(l) = metrics_listener {
        let c = ctl.clone();
        servers.push(
            std::thread::Builder::new()
                .name("xsec-metrics".into())
                .spawn(move || control::http::serve(c, l))
                .map_err(|e| DaemonError::Setup(format!("spawn metrics: {e}")))?,
        );
    }
    println!("xsecd: ready");
    info!("ready");
    if let Some(r) = &opts.replay {
        info!(
            "replaying {} unprotected and {} protected file(s) into the workers; sending to a null sink",
            r.files[0].len(),
            r.files[1].len()
        );
    }
    info!(
        "{} worker(s) on {} / {}, {} SA pair(s), {} outbound and {} inbound policies; control socket {}",
        n,
        gw.unprotected,
        gw.protected,
        pairs,
        spd.policies(Direction::Outbound).len(),
        spd.policies(Direction::Inbound).len(),
        control_cfg.socket.display()
    );
    let started = Instant::now();
    let interval = Duration::from_millis(gw.stats_interval_ms.max(50));
    let mut next_stats = Instant::now();
    // The gateway's own addresses change (DHCP, an operator): the XDP program's copy follows
    // within a second. Until it does, traffic to a new address goes to the worker (dropped:
    // fail closed), and a removed address's traffic is the SPD's again.
    let mut addr_res = match opts.replay {
        Some(_) => None,
        None => Some(Resolver::new().map_err(|e| DaemonError::Setup(format!("netlink: {e}")))?),
    };
    let mut local_addrs: Vec<IpAddr> = vec![];
    let mut next_addrs = Instant::now();
    let mut died = None;
    let mut soft_pending: HashMap<(u32, Direction), (serde_json::Value, Instant, u32)> =
        HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        // A worker that is gone (a panic) left its queue without a socket: the XDP program
        // drops that queue's traffic and the guard keeps the kernel from forwarding it. Stop
        // the whole daemon so that a supervisor restarts it whole, rather than limp on.
        if let Some(i) = workers
            .iter()
            .position(|w| w.join.as_ref().is_some_and(|j| j.is_finished()))
        {
            died = Some(i);
            stop.store(true, Ordering::Relaxed);
            break;
        }
        if let Some(r) = addr_res.as_mut()
            && Instant::now() >= next_addrs
        {
            next_addrs = Instant::now() + Duration::from_secs(1);
            // somebody flushed the ruleset (an nftables service reload): put the guard back
            if gw.forward_guard && !crate::guard::present(&gw.unprotected, &gw.protected) {
                match crate::guard::install(&gw.unprotected, &gw.protected) {
                    Ok(()) => {
                        warn!("forward guard was gone (nftables ruleset flushed?): reinstalled")
                    }
                    Err(e) => error!("forward guard was gone and could not be reinstalled: {e}"),
                }
            }
            match r.local_addresses() {
                Ok(mut now_addrs) => {
                    now_addrs.sort_unstable();
                    now_addrs.dedup();
                    if now_addrs != local_addrs
                        && let Ok(mut x) = ctl.xdp.try_lock()
                        && let Some(x) = x.as_mut()
                    {
                        // on failure the map keeps the old set; tried again next second
                        match x.set_local_addrs(&now_addrs) {
                            Ok(()) => local_addrs = now_addrs,
                            Err(e) => warn!("XDP local addresses: {e}"),
                        }
                    }
                }
                Err(e) => warn!("netlink: listing the gateway's addresses: {e}"),
            }
        }
        while let Ok((w, ev)) = events_rx.try_recv() {
            match ev.kind {
                EventKind::Acquire { src, dst, .. } => info!(
                    "worker {w}: ACQUIRE: no SA for reqid {} ({src} -> {dst} matched a protect \
                     policy); packet dropped",
                    ev.reqid
                ),
                k => info!(
                    "worker {w}: SA spi 0x{:08x} ({}): {k:?}",
                    ev.spi,
                    ev.direction.name(),
                ),
            }
            let json = ctl.event_json(w, &ev);
            let key = (ev.spi, ev.direction);
            match ev.kind {
                EventKind::SoftLifetime(_) => {
                    soft_pending.insert(key, (json.clone(), Instant::now() + SOFT_REPEAT, 0));
                }
                EventKind::HardLifetime(_) => {
                    soft_pending.remove(&key);
                }
                EventKind::PeerChanged { .. } | EventKind::Acquire { .. } => {}
            }
            ctl.publish(json);
        }
        // A soft expiry nobody acted on is raised again until the SA is replaced, removed or
        // hard-expires: one lost event must not become an outage.
        let now_i = Instant::now();
        soft_pending.retain(|&(spi, dir), (json, due, repeat)| {
            if now_i < *due {
                return true;
            }
            if !ctl.sa_configured(spi, dir) {
                return false;
            }
            *repeat += 1;
            *due = now_i + SOFT_REPEAT;
            let mut again = json.clone();
            again["repeat"] = serde_json::json!(*repeat);
            ctl.publish(again);
            true
        });
        if Instant::now() >= next_stats {
            next_stats += interval;
            if let Some(path) = &opts.stats_file {
                let snaps = snapshots(&cmd_senders);
                // a change being applied holds the maps for a moment: skip them this time
                let xj = match ctl.xdp.try_lock() {
                    Ok(x) => x.as_ref().map_or(serde_json::Value::Null, xdp_json),
                    Err(_) => serde_json::Value::String("busy: a change is being applied".into()),
                };
                let file = StatsFile::build(started.elapsed(), &snaps, xj);
                if let Err(e) = stats::write_atomic(path, &file) {
                    warn!("stats file {}: {e}", path.display());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    info!("stopping");
    for t in servers {
        let _ = t.join();
    }
    // detach now, whatever control client may still hold a reference
    drop(ctl.xdp.lock().unwrap_or_else(|e| e.into_inner()).take());
    resolver_stop.store(true, Ordering::Relaxed);
    stop_workers(&mut workers);
    let _ = resolver.join();
    drop(ctl);
    if opts.replay.is_none() && gw.forward_guard {
        info!(
            "stopped; the forward guard (nftables table inet {}) stays: nothing is forwarded \
             between {} and {} until xsecd runs again or `xsecd --detach --config {}`",
            crate::guard::table_name(&gw.unprotected, &gw.protected),
            gw.unprotected,
            gw.protected,
            opts.config.display()
        );
    }
    if let Some(i) = died {
        return Err(DaemonError::Setup(format!(
            "worker {i} stopped unexpectedly (see its panic message above); xsecd stopped with it, \
             and until it runs again nothing is forwarded in clear (XDP drops, forward guard)"
        )));
    }
    if let Some(r) = &opts.replay {
        match r.write_capture() {
            Ok(0) => {}
            Ok(n) => info!("replay: {n} sent frame(s) captured"),
            Err(e) => warn!("replay capture: {e}"),
        }
    }
    Ok(())
}

/// Ask every worker for its counters (each answers between two bursts).
pub fn snapshots(workers: &[CmdSender]) -> Vec<Snapshot> {
    let (tx, rx) = unbounded();
    let mut asked = 0;
    for w in workers {
        if w.send(Cmd::Snapshot(tx.clone())).is_ok() {
            asked += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut out = Vec::with_capacity(asked);
    while out.len() < asked {
        match rx.recv_deadline(deadline) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    out.sort_by_key(|s| s.id);
    out
}

/// The resolver thread: answers worker misses and refreshes known next hops every second.
fn resolve_loop(
    mut res: Resolver,
    sides: [(u32, Side); 2],
    requests: Receiver<IpAddr>,
    workers: Vec<CmdSender>,
    stop: Arc<AtomicBool>,
) {
    let mut known: HashMap<IpAddr, Option<Hop>> = HashMap::new();
    let mut retry: Vec<(IpAddr, Instant)> = Vec::new();
    let mut next_refresh = Instant::now() + Duration::from_secs(1);
    let lookup = |res: &mut Resolver, dst: IpAddr| -> Result<Option<Hop>, bool> {
        // Ok(hop) = settled answer; Err(true) = pending, retry soon
        match res.resolve(dst) {
            Ok(Resolution::Ready(nh)) => {
                let side = sides.iter().find(|(i, _)| *i == nh.ifindex).map(|s| s.1);
                Ok(side.map(|side| Hop {
                    side,
                    src_mac: nh.src_mac,
                    dst_mac: nh.dst_mac,
                    mtu: nh.mtu,
                }))
            }
            Ok(Resolution::Pending { .. }) => Err(true),
            Ok(_) => Ok(None),
            Err(_) => Err(true),
        }
    };
    let publish = |dst: IpAddr, hop: Option<Hop>| {
        for w in &workers {
            let _ = w.send(Cmd::Hop { dst, hop });
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match requests.recv_timeout(Duration::from_millis(10)) {
            Ok(dst) => match lookup(&mut res, dst) {
                Ok(hop) => {
                    if known.get(&dst) != Some(&hop) || hop.is_none() {
                        publish(dst, hop);
                    }
                    known.insert(dst, hop);
                }
                Err(_) => {
                    if !retry.iter().any(|(d, _)| *d == dst) {
                        retry.push((dst, Instant::now() + Duration::from_millis(20)));
                    }
                }
            },
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(_) => {}
        }
        let now = Instant::now();
        let mut i = 0;
        while i < retry.len() {
            if retry[i].1 <= now {
                let dst = retry[i].0;
                match lookup(&mut res, dst) {
                    Ok(hop) => {
                        publish(dst, hop);
                        known.insert(dst, hop);
                        retry.swap_remove(i);
                        continue;
                    }
                    Err(_) => retry[i].1 = now + Duration::from_millis(50),
                }
            }
            i += 1;
        }
        if now >= next_refresh {
            next_refresh = now + Duration::from_secs(1);
            let dsts: Vec<IpAddr> = known.keys().copied().collect();
            for dst in dsts {
                if let Ok(hop) = lookup(&mut res, dst)
                    && known.get(&dst) != Some(&hop)
                {
                    publish(dst, hop);
                    known.insert(dst, hop);
                }
            }
        }
    }
}

fn xdp_json(xdp: &XdpSteering) -> serde_json::Value {
    match xdp.stats() {
        Ok(rows) => rows.iter().map(|r| r.json()).collect(),
        Err(e) => serde_json::Value::String(format!("error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_coverage;

    #[test]
    fn every_rx_queue_needs_a_worker_or_a_name() {
        assert_eq!(
            check_coverage(&[0, 1], &[], &[("wan0", 2), ("lan0", 1)]),
            Ok(())
        );
        let e = check_coverage(&[0], &[], &[("wan0", 2), ("lan0", 4)]).unwrap_err();
        assert!(
            e.contains("RX queue(s) 1 of wan0 (2 RX queues)")
                && e.contains("RX queue(s) 1, 2, 3 of lan0 (4 RX queues)"),
            "{e}"
        );
        assert_eq!(
            check_coverage(&[0], &[1, 2, 3], &[("wan0", 2), ("lan0", 4)]),
            Ok(())
        );
        let e = check_coverage(&[0], &[2, 3], &[("lan0", 4)]).unwrap_err();
        assert!(e.contains("RX queue(s) 1 of lan0"), "{e}");
    }
}
