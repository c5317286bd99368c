//! The poll-mode worker: one per NIC queue, pinned, owning one shard of the SAD.
//!
//! Loop: commands (between bursts) → completions → fill → RX burst per side → engine →
//! next hop → TX → handed-off packets → kick TX → timers and heartbeats → idle policy.
//! Nothing on the packet path locks, allocates or makes a syscall per packet; the TX kick
//! (`sendto`, needed by copy mode) is per burst.

use crate::fwd::{self, ETH_HDR, IcmpError};
use crate::reasm::{self, Reassembler};
use crate::replay::ReplaySource;
use crate::trace::Tap;
use crate::xsk::{BURST, FRAME_SIZE, Frame, RxFrame, Side, SocketStats, Xsk, XskConfig};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xsec_dataplane::sa::{Sa, SaStatus};
use xsec_dataplane::spd::{Direction, Spd};
use xsec_dataplane::stats::WorkerStats;
use xsec_dataplane::time::MonotonicClock;
use xsec_dataplane::{Engine, MAX_ESP_OVERHEAD, PacketBuf, Shards, Timestamp, Verdict};

/// Largest packet handed between workers.
pub const HANDOFF_BUF: usize = 2048;
/// A handoff buffer.
pub type HandoffBuf = Box<[u8; HANDOFF_BUF]>;
/// A worker's pool of handoff buffers: where they are returned, where they are taken.
pub type HandoffPool = (Sender<HandoffBuf>, Receiver<HandoffBuf>);
/// The MTU of a next hop's link, or the configured one if smaller.
fn link_mtu(configured: Option<u16>, h: Hop) -> u16 {
    configured.map_or(h.mtu, |m| m.min(h.mtu))
}

/// Room in front of a reassembled packet in [`Worker::big`].
const BIG_HEAD: usize = 64;
/// Where built or copied packets start in a UMEM frame (room for the Ethernet header and
/// more in front).
const FRAME_START: usize = 128;
/// Packets a worker keeps while their next hop is resolved.
const PARK_MAX: usize = 256;
/// Handoff buffers each worker owns (4 MiB): enough to ride out the owner being off its
/// core for ~20 ms at 100 kpps, which 512 were not on 2 shared vCPUs (`handoff_drop` at
/// 0.1 Mpps in `xsec-lab ndr --workers 2 --sas 1000`).
pub const HANDOFF_POOL: usize = 2048;
/// The most of an inner packet an ICMP error quotes (IPv6: 1280 - 40 - 8).
const QUOTE_MAX: usize = 1232;

/// What the worker keeps of a protected-side packet while the engine protects its burst.
#[derive(Debug)]
struct Staged {
    /// (quote slot, quoted bytes, inner length) when the result could outgrow its link.
    quote: Option<(usize, usize, usize)>,
    /// The plaintext, when it is traced.
    traced: Option<Vec<u8>>,
}

/// A resolved next hop, as the worker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub side: Side,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub mtu: u16,
}

/// A heartbeat / NAT keepalive this worker sends for one of its outbound SAs.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub reqid: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub interval: Duration,
}

/// Changes for a worker, applied between bursts.
#[derive(Debug)]
pub enum Cmd {
    InstallSa(Box<Sa>),
    SetShards(Arc<Shards>),
    SetHeartbeats(Vec<Heartbeat>),
    /// A next hop resolved (or gone, `None`).
    Hop {
        dst: IpAddr,
        hop: Option<Hop>,
    },
    /// A configuration change, applied in one step; the report is sent back.
    Apply(Box<Change>, Sender<ChangeReport>),
    /// Start (`Some`) or stop tracing packets.
    Trace(Option<Box<Tap>>),
    /// Reply with a snapshot of the counters.
    Snapshot(Sender<Snapshot>),
    Stop,
}

/// One worker's part of a configuration change (`xsecctl reload`, `add sa`, ...), applied
/// between two bursts in this order: removals, installations, shards, SPD, heartbeats.
#[derive(Debug, Default)]
pub struct Change {
    /// SAs to remove, by direction and SPI.
    pub remove: Vec<(Direction, u32)>,
    /// SAs to install. With `true`, the SA continues the one of the same direction and SPI
    /// removed by this change ([`Sa::take_over`]): same keys, other settings changed.
    pub install: Vec<(Box<Sa>, bool)>,
    pub shards: Option<Arc<Shards>>,
    pub spd: Option<Arc<Spd>>,
    pub heartbeats: Option<Vec<Heartbeat>>,
}

/// What a worker did with a [`Change`].
#[derive(Debug, Default)]
pub struct ChangeReport {
    pub id: u16,
    /// Final state of every SA removed (for counters that outlive the SA).
    pub removed: Vec<SaStatus>,
    /// SAs that could not be installed or removed.
    pub errors: Vec<String>,
}

/// A packet handed to the worker that owns its SA.
#[derive(Debug)]
pub struct Handoff {
    buf: HandoffData,
    len: u16,
    side: Side,
    from: u16,
}

/// Where a handed-off packet is.
#[derive(Debug)]
enum HandoffData {
    /// An Ethernet frame in a pooled buffer of the sender's.
    Frame(HandoffBuf),
    /// A reassembled outer IP packet (up to 65,575 bytes), counted in
    /// [`Mesh::big_in_flight`] until the owner is done with it.
    Reassembled(Vec<u8>),
}

/// Reassembled packets on their way between workers at once, all workers together: each
/// holds up to 64 KiB of heap.
const BIG_IN_FLIGHT_MAX: usize = 16;

/// The channels between workers: every worker's inbox, buffer-return queue and waker.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub inboxes: Vec<Sender<Handoff>>,
    pub pools: Vec<Sender<HandoffBuf>>,
    pub wakers: Vec<Arc<Waker>>,
    /// Reassembled packets handed over and not yet processed (at most [`BIG_IN_FLIGHT_MAX`]).
    pub big_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Wakes a worker that sleeps in adaptive idle mode when another worker hands it packets:
/// its inbox is not a descriptor it polls, so without this a handed-off packet waits for the
/// sleep to time out (up to a millisecond: the p50 latency through two workers was ~1 ms).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub fn new() -> std::io::Result<Arc<Waker>> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        Ok(Arc::new(Waker {
            fd,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// After packets were queued to this worker (and a `SeqCst` fence): wake it if it sleeps
    /// (once: the first sender to see it asleep takes the flag).
    fn wake(&self) {
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Sleep in `xsk` until packets come on a socket, a waker's write, or `timeout_ms`,
    /// unless `inbox` already holds handed-off packets.
    fn sleep(&self, xsk: &Xsk<'_>, inbox: &Receiver<Handoff>, timeout_ms: i32) {
        self.sleeping.store(true, Ordering::Relaxed);
        // a sender queues, fences (SeqCst), then reads `sleeping`; this worker sets
        // `sleeping`, fences (SeqCst), then reads the queue: with a fence on each side, one
        // of the two sees the other's write (a SeqCst store alone would not order the load
        // after it)
        std::sync::atomic::fence(Ordering::SeqCst);
        if inbox.is_empty() && xsk.wait(timeout_ms, Some(self.fd.as_fd())) {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.fd, &mut b);
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// A struct of `u64` counters with `add`, for summing workers.
macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident: u64, )* }) => {
        $(#[$m])*
        pub struct $name { $( $(#[$fm])* pub $f: u64, )* }

        impl $name {
            /// Add `o`'s counters to these.
            pub fn add(&mut self, o: &Self) {
                $( self.$f += o.$f; )*
            }
        }
    };
}
pub(crate) use counters;

counters! {
/// Counters of the worker's own (non-engine) work.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerCounters {
    pub rx_unprot: u64,
    pub rx_prot: u64,
    pub tx_unprot: u64,
    pub tx_prot: u64,
    pub handoff_tx: u64,
    pub handoff_rx: u64,
    /// Packets that could not be handed off (queue full, too big, loop).
    pub handoff_drop: u64,
    pub loops: u64,
    pub busy_loops: u64,
    /// Not IPv4/IPv6 (steered by mistake): dropped.
    pub non_ip: u64,
    /// Packets dropped for want of a next-hop MAC (parking full or resolution timed out).
    pub no_neighbour: u64,
    /// Packets held while their next hop was resolved (most are sent a moment later).
    pub parked: u64,
    pub ttl_exceeded: u64,
    pub fragmented: u64,
    pub icmp_sent: u64,
    /// ICMP errors not sent: over the rate limit (`icmp_rate`, `icmp_burst`).
    pub icmp_suppressed: u64,
    pub tx_full: u64,
    /// No free frame for a packet the worker builds.
    pub no_frame: u64,
    /// The route points to another interface, or the destination is local.
    pub not_forwarded: u64,
    /// IKE that reached the dataplane (the XDP program should pass it to the kernel).
    pub punt_dropped: u64,
    pub heartbeats_sent: u64,
}
}

/// What a worker reports.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: u16,
    pub queue: u32,
    pub core: Option<usize>,
    pub counters: WorkerCounters,
    pub engine: WorkerStats,
    pub reasm: reasm::ReasmStats,
    /// The kernel's counters of the unprotected and protected sockets.
    pub sockets: [SocketStats; 2],
    pub sas: Vec<SaStatus>,
    pub hits_in: Vec<u64>,
    pub hits_out: Vec<u64>,
    /// Trace copies that found the trace channel full.
    pub trace_lost: u64,
}

/// Everything a worker thread needs.
#[derive(Debug)]
pub struct WorkerSetup {
    pub id: u16,
    pub queue: u32,
    pub core: Option<usize>,
    pub unprotected: String,
    pub protected: String,
    pub xsk: XskConfig,
    pub busy_poll: bool,
    pub spd: Arc<Spd>,
    pub cmds: Receiver<Cmd>,
    /// Destinations to resolve.
    pub resolve: Sender<IpAddr>,
    /// Engine events (lifetimes) for the control thread.
    pub events: Sender<(u16, xsec_dataplane::events::Event)>,
    pub inbox: Receiver<Handoff>,
    pub pool: HandoffPool,
    pub mesh: Mesh,
    /// ICMP errors are sent from these addresses (the gateway's own, per family).
    pub icmp_src: [Option<IpAddr>; 2],
    /// MTU override (else the next hop's).
    pub mtu: Option<u16>,
    /// ICMP errors per second and bucket size.
    pub icmp_limit: (u32, u32),
    pub clock: MonotonicClock,
    /// Replay frames from memory instead of opening sockets (`crate::replay`).
    pub replay: Option<Arc<ReplaySource>>,
    /// Test hook (debug builds only, `XSECD_TEST_WORKER_PANIC`): panic once this many
    /// packets were received, to test what a dying worker leaves behind.
    pub panic_after: Option<u64>,
}

/// Reported back once the sockets are open: their descriptors for the XSKMAP.
pub type Ready = Result<(u16, u32, [i32; 2]), String>;

/// The next-hop tables' hasher: foldhash's fast hasher with a per-process random seed.
/// SipHash cost ~9 % of a worker's time at 64 B (profiled with `xsec-lab capacity`); a
/// lookup of an IPv4/IPv6 mix in a 256-entry table took 0.60-0.67x the time of the
/// multiply-rotate hasher this replaced and ~0.2x SipHash's. The random seed keeps a sender
/// from choosing destinations that collide (the keys are unauthenticated protected-side
/// addresses).
type HopHash = foldhash::fast::RandomState;

struct PendingHop {
    asked: Timestamp,
}

struct HeartbeatState {
    hb: Heartbeat,
    next: Timestamp,
}

struct Worker<'x, 'id> {
    id: u16,
    queue: u32,
    core: Option<usize>,
    /// The sockets and UMEM, owned by [`Xsk::open`] for as long as the worker runs: no
    /// `Frame<'id>` the worker holds outlives them.
    xsk: &'x mut Xsk<'id>,
    engine: Engine,
    c: WorkerCounters,
    /// Next hops: `None` = known unreachable / local (refreshed by the resolver).
    hops: HashMap<IpAddr, Option<Hop>, HopHash>,
    /// The last destination found in `hops` and its hop (emptied whenever `hops` changes).
    last_hop: Option<(IpAddr, Hop)>,
    pending: HashMap<IpAddr, PendingHop, HopHash>,
    resolve: Sender<IpAddr>,
    events: Sender<(u16, xsec_dataplane::events::Event)>,
    inbox: Receiver<Handoff>,
    pool: HandoffPool,
    mesh: Mesh,
    /// Workers handed packets in this loop (bit `id % 64`): woken if they sleep.
    to_wake: u64,
    icmp_src: [Option<IpAddr>; 2],
    icmp_limit: fwd::IcmpLimiter,
    mtu: Option<u16>,
    heartbeats: Vec<HeartbeatState>,
    /// The smallest MTU of any next hop seen (or the configured one): packets that cannot
    /// outgrow it need no copy kept for an ICMP error.
    min_mtu: usize,
    reasm: Reassembler,
    /// Where a reassembled outer packet is put together and processed ([`BIG_HEAD`] bytes of
    /// room in front for a handed-off packet's outer headers).
    big: Vec<u8>,
    /// Packets waiting for a next hop: (destination, packet, since, not seen by the
    /// outbound SPD).
    parked: Vec<(IpAddr, PacketBuf<Frame<'id>>, Timestamp, bool)>,
    frag_id: u32,
    /// The start of each protected-side packet of a burst that could outgrow its link, for
    /// the ICMP error that would quote it (one slot per packet of the burst).
    quotes: Box<[[u8; QUOTE_MAX]; BURST]>,
    /// A protected-side burst between its stages (allocated once).
    batch: Vec<PacketBuf<Frame<'id>>>,
    staged: Vec<Staged>,
    spis: Vec<Option<u32>>,
    verdicts: Vec<Verdict>,
    trace: Option<Box<Tap>>,
    trace_lost: u64,
}

/// Run a worker until `Cmd::Stop`. Sends `Ready` once its sockets are open (or failed).
pub fn run(setup: WorkerSetup, ready: Sender<Ready>) {
    if let Some(core) = setup.core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        let _ = ready.send(Err(format!(
            "worker {}: cannot pin to core {core}",
            setup.id
        )));
        return;
    }
    let id = setup.id;
    let failed = ready.clone();
    let opened = match setup.replay.clone() {
        Some(src) => Xsk::replay(src, usize::from(id), &setup.xsk.clone(), |xsk| {
            serve(xsk, setup, ready)
        }),
        None => {
            let (u, p, q, cfg) = (
                setup.unprotected.clone(),
                setup.protected.clone(),
                setup.queue,
                setup.xsk.clone(),
            );
            Xsk::open(&u, &p, q, &cfg, |xsk| serve(xsk, setup, ready))
        }
    };
    if let Err(e) = opened {
        let _ = failed.send(Err(format!("worker {id}: {e}")));
    }
}

/// The worker's life once its sockets are open: announce them, then poll until `Cmd::Stop`.
fn serve(xsk: &mut Xsk<'_>, setup: WorkerSetup, ready: Sender<Ready>) {
    let fds = [xsk.fd(Side::Unprotected), xsk.fd(Side::Protected)];
    for _ in 0..HANDOFF_POOL {
        let _ = setup.pool.0.send(Box::new([0u8; HANDOFF_BUF]));
    }
    let mut w = Worker {
        id: setup.id,
        queue: setup.queue,
        core: setup.core,
        xsk,
        engine: Engine::new(setup.spd),
        c: WorkerCounters::default(),
        hops: HashMap::with_capacity_and_hasher(256, HopHash::default()),
        last_hop: None,
        pending: HashMap::with_capacity_and_hasher(64, HopHash::default()),
        resolve: setup.resolve,
        events: setup.events,
        inbox: setup.inbox,
        pool: setup.pool,
        to_wake: 0,
        mesh: setup.mesh,
        icmp_src: setup.icmp_src,
        icmp_limit: fwd::IcmpLimiter::new(setup.icmp_limit.0, setup.icmp_limit.1),
        mtu: setup.mtu,
        heartbeats: Vec::new(),
        min_mtu: usize::from(setup.mtu.unwrap_or(u16::MAX)),
        parked: Vec::with_capacity(PARK_MAX),
        reasm: Reassembler::new(),
        big: vec![0; BIG_HEAD + reasm::MAX_DATAGRAM],
        frag_id: u32::from(setup.id) << 24,
        quotes: Box::new([[0u8; QUOTE_MAX]; BURST]),
        batch: Vec::with_capacity(BURST),
        staged: Vec::with_capacity(BURST),
        spis: Vec::with_capacity(BURST),
        verdicts: vec![Verdict::Unset; BURST],
        trace: None,
        trace_lost: 0,
    };
    if ready.send(Ok((w.id, w.queue, fds))).is_err() {
        return;
    }
    let clock = setup.clock;
    let mut rx = Vec::with_capacity(BURST);
    let mut idle_loops = 0u32;
    let mut next_timer = clock.now();
    loop {
        // Control between bursts: never blocks.
        loop {
            match setup.cmds.try_recv() {
                Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => return,
                Ok(cmd) => w.apply(cmd, clock.now()),
                Err(TryRecvError::Empty) => break,
            }
        }
        let now = clock.now();
        w.c.loops += 1;
        w.xsk.reap();
        let mut work = 0;
        for side in Side::BOTH {
            w.xsk.refill(side);
            rx.clear();
            let n = w.xsk.recv(side, &mut rx, BURST);
            work += n;
            match side {
                Side::Unprotected => w.c.rx_unprot += n as u64,
                Side::Protected => w.c.rx_prot += n as u64,
            }
            match side {
                Side::Protected => w.protected_burst(&mut rx, now),
                Side::Unprotected => w.unprotected_burst(&mut rx, now),
            }
        }
        if let Some(n) = setup.panic_after
            && w.c.rx_unprot + w.c.rx_prot >= n
        {
            panic!("worker {}: test hook: panicking after {n} packets", w.id);
        }
        for _ in 0..BURST {
            let Ok(h) = w.inbox.try_recv() else { break };
            work += 1;
            w.handed(h, now);
        }
        if w.to_wake != 0 {
            std::sync::atomic::fence(Ordering::SeqCst);
            for (i, waker) in w.mesh.wakers.iter().enumerate() {
                if w.to_wake & (1 << (i % 64)) != 0 {
                    waker.wake();
                }
            }
            w.to_wake = 0;
        }
        w.xsk.kick();
        if now >= next_timer {
            next_timer = now.plus(Duration::from_millis(1));
            w.engine.poll_timers(now, 64);
            w.heartbeats(now);
            w.expire_parked(now);
            w.reasm.expire(now);
            for ev in w.engine.drain_events() {
                let _ = w.events.try_send((w.id, ev));
            }
        }
        if work > 0 {
            w.c.busy_loops += 1;
            idle_loops = 0;
        } else if !setup.busy_poll {
            idle_loops += 1;
            // Spinning with nothing to do: let whatever else is runnable on this CPU
            // (generators, other gateways, the kernel's own threads) go first.
            std::thread::yield_now();
            if idle_loops > 256 {
                match w.mesh.wakers.get(usize::from(w.id)) {
                    Some(me) => me.sleep(w.xsk, &w.inbox, 1),
                    None => {
                        w.xsk.wait(1, None);
                    }
                }
            }
        }
    }
}

impl<'id> Worker<'_, 'id> {
    fn apply(&mut self, cmd: Cmd, now: Timestamp) {
        match cmd {
            Cmd::InstallSa(sa) => {
                let remote = sa.info().remote;
                if let Ok(h) = self.engine.install_sa(*sa)
                    && let Some(Some(hop)) = remote.and_then(|r| self.hops.get(&r))
                    && hop.side == Side::Unprotected
                {
                    let mtu = self.link_mtu(*hop);
                    self.engine.set_sa_path_mtu(h, mtu);
                }
            }
            Cmd::Apply(change, reply) => {
                let report = self.change(*change, now);
                self.path_mtus();
                let _ = reply.send(report);
            }
            Cmd::Trace(tap) => {
                if let Some(old) = self.trace.take() {
                    self.trace_lost += old.lost;
                }
                self.trace = tap;
            }
            Cmd::SetShards(s) => self.engine.set_shards(Some(s)),
            Cmd::SetHeartbeats(hbs) => {
                self.heartbeats = hbs
                    .into_iter()
                    .map(|hb| HeartbeatState { next: now, hb })
                    .collect();
            }
            Cmd::Hop { dst, hop } => {
                self.last_hop = None;
                self.pending.remove(&dst);
                if let Some(h) = hop {
                    self.min_mtu = self.min_mtu.min(usize::from(h.mtu));
                }
                if self.hops.len() < 65536 || self.hops.contains_key(&dst) {
                    self.hops.insert(dst, hop);
                }
                if let Some(h) = hop
                    && h.side == Side::Unprotected
                {
                    self.engine.set_path_mtu(dst, self.link_mtu(h));
                }
                self.unpark(dst, now);
            }
            Cmd::Snapshot(reply) => {
                let sas = self
                    .engine
                    .sad()
                    .iter()
                    .map(|(_, sa)| sa.status(now))
                    .collect();
                let _ = reply.send(Snapshot {
                    id: self.id,
                    queue: self.queue,
                    core: self.core,
                    counters: self.c.clone(),
                    engine: self.engine.stats().clone(),
                    reasm: self.reasm.stats,
                    sockets: [
                        self.xsk.socket_stats(Side::Unprotected),
                        self.xsk.socket_stats(Side::Protected),
                    ],
                    sas,
                    hits_in: self.engine.policy_hits(Direction::Inbound).to_vec(),
                    hits_out: self.engine.policy_hits(Direction::Outbound).to_vec(),
                    trace_lost: self.trace_lost + self.trace.as_ref().map_or(0, |t| t.lost),
                });
            }
            Cmd::Stop => {}
        }
    }

    fn set_spd(&mut self, spd: Arc<Spd>) {
        if let Some(t) = &mut self.trace {
            t.set_spd(&spd);
        }
        self.engine.set_spd(spd);
    }

    /// Apply one configuration change; see [`Change`].
    fn change(&mut self, c: Change, now: Timestamp) -> ChangeReport {
        let mut report = ChangeReport {
            id: self.id,
            ..ChangeReport::default()
        };
        let mut gone: Vec<Sa> = Vec::with_capacity(c.remove.len());
        for (dir, spi) in c.remove {
            match self.engine.sad().find(dir, spi, None) {
                Some(h) => {
                    if let Some(sa) = self.engine.remove_sa(h) {
                        report.removed.push(sa.status(now));
                        gone.push(sa);
                    }
                }
                None => report.errors.push(format!(
                    "worker {}: no {} SA with SPI {spi:#010x} to remove",
                    self.id,
                    dir.name()
                )),
            }
        }
        for (mut sa, carry) in c.install {
            if carry
                && let Some(old) = gone
                    .iter()
                    .find(|o| o.spi() == sa.spi() && o.direction() == sa.direction())
            {
                sa.take_over(old);
            }
            let (dir, spi) = (sa.direction(), sa.spi());
            if let Err(e) = self.engine.install_sa(*sa) {
                report.errors.push(format!(
                    "worker {}: {} SA {spi:#010x}: {e}",
                    self.id,
                    dir.name()
                ));
            }
        }
        if let Some(s) = c.shards {
            self.engine.set_shards(Some(s));
        }
        if let Some(spd) = c.spd {
            self.set_spd(spd);
        }
        if let Some(hbs) = c.heartbeats {
            // a heartbeat that continues keeps its schedule
            let old = std::mem::take(&mut self.heartbeats);
            self.heartbeats = hbs
                .into_iter()
                .map(|hb| {
                    let next = old
                        .iter()
                        .find(|o| o.hb.reqid == hb.reqid && o.hb.interval == hb.interval)
                        .map_or(now, |o| o.next);
                    HeartbeatState { next, hb }
                })
                .collect();
        }
        report
    }

    /// The MTU of a next hop's link (or the configured one, if smaller).
    fn link_mtu(&self, h: Hop) -> u16 {
        link_mtu(self.mtu, h)
    }

    /// After SAs came or changed: the outbound SAs get the MTU of the link towards their
    /// peers, where the next hop is known.
    fn path_mtus(&mut self) {
        let hops = &self.hops;
        let cfg = self.mtu;
        self.engine.update_path_mtus(|peer| match hops.get(&peer) {
            Some(Some(h)) if h.side == Side::Unprotected => Some(link_mtu(cfg, *h)),
            _ => None,
        });
    }

    /// The IP packet of a received Ethernet frame; `None` (counted, released) for anything
    /// but IPv4 and IPv6.
    fn ip_packet(&mut self, f: RxFrame<'id>) -> Option<PacketBuf<Frame<'id>>> {
        let RxFrame { frame, off, len } = f;
        let et = frame
            .as_ref()
            .get(off + 12..off + 14)
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        if len < ETH_HDR || !matches!(et, Some(fwd::ETHERTYPE_IPV4 | fwd::ETHERTYPE_IPV6)) {
            self.c.non_ip += 1;
            self.xsk.release(frame);
            return None;
        }
        // `None` only if the kernel's descriptor lay outside the frame: not reached
        self.window(frame, off + ETH_HDR, Some(len - ETH_HDR))
    }

    /// A burst from the protected side: each packet is staged (TTL, what an ICMP error
    /// would quote, trace copy), the engine protects the whole burst at once
    /// ([`Engine::outbound_burst`]: multi-buffer crypto), then each packet goes on, in
    /// arrival order.
    fn protected_burst(&mut self, rx: &mut Vec<RxFrame<'id>>, now: Timestamp) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut staged = std::mem::take(&mut self.staged);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        for f in rx.drain(..) {
            let Some(pkt) = self.ip_packet(f) else {
                continue;
            };
            if let Some((pkt, st)) = self.stage_protected(pkt, batch.len(), now, false) {
                batch.push(pkt);
                staged.push(st);
            }
        }
        let n = batch.len();
        if verdicts.len() < n {
            verdicts.resize(n, Verdict::Unset);
        }
        self.engine
            .outbound_burst(now, &mut batch, &mut verdicts[..n]);
        for ((pkt, st), v) in batch.drain(..).zip(staged.drain(..)).zip(verdicts.iter()) {
            self.finish_protected(pkt, st, *v, now, false);
        }
        self.batch = batch;
        self.staged = staged;
        self.verdicts = verdicts;
    }

    /// A burst from the unprotected side: each packet staged (outer fragments reassembled,
    /// the SPI noted for a trace), the engine decapsulates the whole burst at once
    /// ([`Engine::inbound_burst`]: ICVs checked two at a time), then each goes on in order.
    fn unprotected_burst(&mut self, rx: &mut Vec<RxFrame<'id>>, now: Timestamp) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut spis = std::mem::take(&mut self.spis);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        for f in rx.drain(..) {
            let Some(pkt) = self.ip_packet(f) else {
                continue;
            };
            if let Some((pkt, spi)) = self.stage_unprotected(pkt, now, false) {
                batch.push(pkt);
                spis.push(spi);
            }
        }
        let n = batch.len();
        if verdicts.len() < n {
            verdicts.resize(n, Verdict::Unset);
        }
        self.engine
            .inbound_burst(now, &mut batch, &mut verdicts[..n]);
        for ((pkt, spi), v) in batch.drain(..).zip(spis.drain(..)).zip(verdicts.iter()) {
            self.finish_unprotected(pkt, spi, *v, now, false);
        }
        self.batch = batch;
        self.spis = spis;
        self.verdicts = verdicts;
    }

    /// Before decapsulation: outer ESP fragments go to reassembly (processed there once
    /// complete: `None`); while tracing, note the SPI.
    fn stage_unprotected(
        &mut self,
        pkt: PacketBuf<Frame<'id>>,
        now: Timestamp,
        handed: bool,
    ) -> Option<(PacketBuf<Frame<'id>>, Option<u32>)> {
        if let Some(proto) = reasm::fragment_protocol(pkt.data()) {
            let data = pkt.data();
            let shards = self.engine.shards();
            let ours = match proto {
                50 => true,
                // UDP fragments to the gateway's end of a UDP-encapsulated SA (any worker's);
                // other UDP fragments are forwarded traffic, decided as they are
                17 => fwd::ip_dst(data)
                    .is_some_and(|d| shards.is_some_and(|s| s.udp_locals.contains(&d))),
                _ => false,
            };
            // only the SAs' peers get reassembly slots (and can evict each other's)
            let from_peer =
                fwd::ip_src(data).is_some_and(|s| shards.is_none_or(|sh| sh.fragments_from(s)));
            if ours && from_peer {
                // one worker per datagram: the NIC may spread its fragments over queues
                // (with ports in the hash, the first of a UDP datagram goes elsewhere)
                let n = self.mesh.inboxes.len();
                if n > 1 && !handed {
                    let owner =
                        reasm::datagram_hash(data).map_or(self.id, |h| (h % n as u64) as u16);
                    if owner != self.id {
                        self.handoff(pkt, Side::Unprotected, owner, false);
                        return None;
                    }
                }
                self.reassemble(pkt, now);
                return None;
            }
        }
        let spi = match &self.trace {
            Some(t) => crate::trace::esp_spi(pkt.data(), &t.filter.udp_ports),
            None => None,
        };
        Some((pkt, spi))
    }

    /// After decapsulation: the trace copy and the packet's way out.
    fn finish_unprotected(
        &mut self,
        pkt: PacketBuf<Frame<'id>>,
        spi: Option<u32>,
        v: Verdict,
        now: Timestamp,
        handed: bool,
    ) {
        if let Some(t) = &mut self.trace
            && matches!(v, Verdict::Forward | Verdict::Bypass)
        {
            let spi = spi.filter(|_| v == Verdict::Forward);
            if t.wants(self.engine.spd(), Direction::Inbound, pkt.data(), spi) {
                t.copy(self.id, Direction::Inbound, pkt.data());
            }
        }
        match v {
            // decapsulated (or bypassed plaintext): forwarded by this router
            Verdict::Forward | Verdict::Bypass => self.forward(pkt, now, true, false),
            Verdict::Handoff(w) => self.handoff(pkt, Side::Unprotected, w, handed),
            Verdict::Punt => {
                self.c.punt_dropped += 1;
                self.xsk.release(pkt.into_inner());
            }
            _ => self.xsk.release(pkt.into_inner()),
        }
    }

    /// Before protection: decrement the TTL (RFC 4301 §5.1.2.1; a handed-off packet was
    /// decremented already), keep what an ICMP error would quote in quote slot `slot` if
    /// the result could outgrow its link, copy a traced packet. `None`: dropped (released).
    fn stage_protected(
        &mut self,
        mut pkt: PacketBuf<Frame<'id>>,
        slot: usize,
        now: Timestamp,
        handed: bool,
    ) -> Option<(PacketBuf<Frame<'id>>, Staged)> {
        if !handed && fwd::dec_ttl(pkt.data_mut()).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(pkt.data(), IcmpError::TimeExceeded, now);
            self.xsk.release(pkt.into_inner());
            return None;
        }
        let v6 = pkt.data().first().is_some_and(|b| b >> 4 == 6);
        let quote = pkt.len().min(if v6 { 1280 - 48 } else { 576 - 28 });
        let keep = pkt.len() + MAX_ESP_OVERHEAD > self.min_mtu && slot < BURST;
        if keep {
            self.quotes[slot][..quote].copy_from_slice(&pkt.data()[..quote]);
        }
        let traced = match &self.trace {
            Some(t) if t.wants(self.engine.spd(), Direction::Outbound, pkt.data(), None) => {
                Some(pkt.data().to_vec())
            }
            _ => None,
        };
        let st = Staged {
            quote: keep.then_some((slot, quote, pkt.len())),
            traced,
        };
        Some((pkt, st))
    }

    /// After protection: the trace copy (unless handed off: the owner copies it) and the
    /// packet's way out.
    fn finish_protected(
        &mut self,
        pkt: PacketBuf<Frame<'id>>,
        st: Staged,
        v: Verdict,
        now: Timestamp,
        handed: bool,
    ) {
        if let (Some(ip), Some(t)) = (st.traced, &mut self.trace)
            && !matches!(v, Verdict::Handoff(_))
        {
            t.copy(self.id, Direction::Outbound, &ip);
        }
        match v {
            Verdict::Forward => self.forward_esp(pkt, now, st.quote),
            Verdict::Bypass => self.forward(pkt, now, false, true),
            // too big for the path once protected: nothing was encrypted; the sender is told
            Verdict::TooBig { mtu } => {
                self.icmp(pkt.data(), IcmpError::TooBig { mtu }, now);
                self.xsk.release(pkt.into_inner());
            }
            // the packet is unchanged except the TTL, which the owner must not decrement
            // again (`handed`)
            Verdict::Handoff(w) => self.handoff(pkt, Side::Protected, w, handed),
            _ => self.xsk.release(pkt.into_inner()),
        }
    }

    /// One received Ethernet frame.
    fn packet(&mut self, side: Side, f: RxFrame<'id>, now: Timestamp, handed: bool) {
        let Some(pkt) = self.ip_packet(f) else {
            return;
        };
        match side {
            Side::Unprotected => {
                if let Some((mut pkt, spi)) = self.stage_unprotected(pkt, now, handed) {
                    let v = self.engine.inbound(now, &mut pkt);
                    self.finish_unprotected(pkt, spi, v, now, handed);
                }
            }
            Side::Protected => {
                if let Some((mut pkt, st)) = self.stage_protected(pkt, 0, now, handed) {
                    let v = self.engine.outbound(now, &mut pkt);
                    self.finish_protected(pkt, st, v, now, handed);
                }
            }
        }
    }

    /// Add an outer fragment; once the datagram is complete, process it.
    fn reassemble(&mut self, pkt: PacketBuf<Frame<'id>>, now: Timestamp) {
        let mut big = std::mem::take(&mut self.big);
        let out = self.reasm.add(pkt.data(), now, &mut big[BIG_HEAD..]);
        self.xsk.release(pkt.into_inner());
        if let reasm::Outcome::Done(n) = out {
            self.reassembled(&mut big, n, now, false);
        }
        self.big = big;
    }

    /// A reassembled outer packet, `big[BIG_HEAD..BIG_HEAD + n]` (up to 65,575 bytes; UMEM
    /// frames hold 4 KiB): decapsulated where it lies, then the inner packet is forwarded from
    /// there ([`Worker::forward_big`]); for an SA another worker owns, handed over whole. What
    /// is not ESP takes the inbound SPD like any plaintext; IKE (UDP/500, the non-ESP marker)
    /// is counted `punt_dropped`: IP-fragmented IKE from an SA's peer never reaches the
    /// kernel (IKE fragments itself, RFC 7383). Not traced.
    fn reassembled(&mut self, big: &mut [u8], n: usize, now: Timestamp, handed: bool) {
        let Some(mut pkt) = PacketBuf::new(&mut *big, BIG_HEAD, n) else {
            return;
        };
        match self.engine.inbound(now, &mut pkt) {
            Verdict::Forward | Verdict::Bypass => {
                let (head, len) = (pkt.head(), pkt.len());
                self.forward_big(&mut big[head..head + len], now);
            }
            Verdict::Handoff(to) => {
                let (head, len) = (pkt.head(), pkt.len());
                self.handoff_big(&big[head..head + len], to, handed);
            }
            Verdict::Punt => self.c.punt_dropped += 1,
            _ => {}
        }
    }

    /// Hand a reassembled outer packet to the worker that owns its SA.
    fn handoff_big(&mut self, ip: &[u8], to: u16, handed: bool) {
        if handed || usize::from(to) >= self.mesh.inboxes.len() {
            self.c.handoff_drop += 1;
            return;
        }
        let inflight = &self.mesh.big_in_flight;
        if inflight.fetch_add(1, Ordering::AcqRel) >= BIG_IN_FLIGHT_MAX {
            inflight.fetch_sub(1, Ordering::AcqRel);
            self.c.handoff_drop += 1;
            return;
        }
        if self
            .send_handoff(
                to,
                HandoffData::Reassembled(ip.to_vec()),
                0,
                Side::Unprotected,
            )
            .is_some()
        {
            self.mesh.big_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Put a handoff on worker `to`'s inbox (counted, its waker noted); the data comes back
    /// when the inbox is full, for the caller to return to where it came from.
    fn send_handoff(
        &mut self,
        to: u16,
        buf: HandoffData,
        len: u16,
        side: Side,
    ) -> Option<HandoffData> {
        let h = Handoff {
            buf,
            len,
            side,
            from: self.id,
        };
        match self.mesh.inboxes[usize::from(to)].try_send(h) {
            Ok(()) => {
                self.c.handoff_tx += 1;
                // wakers of workers 64 apart share a bit: one more check, no lost wake
                self.to_wake |= 1 << (to % 64);
                None
            }
            Err(e) => {
                self.c.handoff_drop += 1;
                Some(e.into_inner().buf)
            }
        }
    }

    /// Forward a decapsulated packet that may be larger than a frame: one that fits a frame is
    /// copied into one and takes the usual way; a larger IPv4 packet without DF is sent in
    /// fragments straight from `ip`; otherwise the sender is told the link's MTU.
    fn forward_big(&mut self, ip: &mut [u8], now: Timestamp) {
        if ip.len() + FRAME_START <= FRAME_SIZE as usize {
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                return;
            };
            f.as_mut()[FRAME_START..FRAME_START + ip.len()].copy_from_slice(ip);
            if let Some(pkt) = self.window(f, FRAME_START, Some(ip.len())) {
                self.forward(pkt, now, true, false);
            }
            return;
        }
        if fwd::dec_ttl(ip).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(ip, IcmpError::TimeExceeded, now);
            return;
        }
        let Some(dst) = fwd::ip_dst(ip) else {
            return;
        };
        // no parking for these: an unresolved next hop drops the packet
        let Some(hop) = self.hop(dst, now) else {
            self.c.no_neighbour += 1;
            return;
        };
        if hop.side != Side::Protected {
            // a decapsulated packet routed back out would need the outbound SPD on a packet
            // no frame holds
            self.c.not_forwarded += 1;
            return;
        }
        // what a frame carries bounds the MTU too: a larger packet cannot be sent at all
        let mtu = usize::from(self.link_mtu(hop)).min(FRAME_SIZE as usize - FRAME_START - ETH_HDR);
        if ip[0] >> 4 == 6 || fwd::dont_fragment(ip) {
            self.icmp(ip, IcmpError::TooBig { mtu: mtu as u16 }, now);
            return;
        }
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
            // already a fragment: cutting it again would lose its offset (as `fragment`)
            self.c.not_forwarded += 1;
            return;
        }
        let hl = usize::from(ip[0] & 0x0f) * 4;
        let Some(per) = fwd::v4_fragment_size(hl, mtu) else {
            return;
        };
        self.c.fragmented += 1;
        self.send_fragments(ip, hl, per, 0, None, hop);
    }

    /// A packet another worker handed over: copy it into a frame and process it.
    fn handed(&mut self, h: Handoff, now: Timestamp) {
        self.c.handoff_rx += 1;
        let Handoff {
            buf,
            len,
            side,
            from,
        } = h;
        let buf = match buf {
            HandoffData::Frame(b) => b,
            HandoffData::Reassembled(ip) => {
                let mut big = std::mem::take(&mut self.big);
                let n = ip.len().min(big.len() - BIG_HEAD);
                big[BIG_HEAD..BIG_HEAD + n].copy_from_slice(&ip[..n]);
                self.reassembled(&mut big, n, now, true);
                self.big = big;
                self.mesh.big_in_flight.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        if let Some(mut f) = self.xsk.alloc() {
            let off = 256;
            let l = usize::from(len);
            f.as_mut()[off..off + l].copy_from_slice(&buf[..l]);
            self.packet(
                side,
                RxFrame {
                    frame: f,
                    off,
                    len: l,
                },
                now,
                true,
            );
        } else {
            self.c.no_frame += 1;
        }
        if let Some(p) = self.mesh.pools.get(usize::from(from)) {
            let _ = p.try_send(buf);
        }
    }

    fn handoff(&mut self, pkt: PacketBuf<Frame<'id>>, side: Side, to: u16, handed: bool) {
        let head = pkt.head() - ETH_HDR;
        let len = pkt.len() + ETH_HDR;
        let frame = pkt.into_inner();
        if handed || len > HANDOFF_BUF || usize::from(to) >= self.mesh.inboxes.len() {
            self.c.handoff_drop += 1;
            self.xsk.release(frame);
            return;
        }
        let Ok(mut buf) = self.pool.1.try_recv() else {
            self.c.handoff_drop += 1;
            self.xsk.release(frame);
            return;
        };
        buf[..len].copy_from_slice(&frame.as_ref()[head..head + len]);
        self.xsk.release(frame);
        if let Some(HandoffData::Frame(b)) =
            self.send_handoff(to, HandoffData::Frame(buf), len as u16, side)
        {
            let _ = self.pool.0.try_send(b);
        }
    }

    /// Park a packet whose next hop is being resolved (like the kernel's unresolved queue):
    /// sent when the answer comes, dropped (and counted `no_neighbour`) after a second or when
    /// the parking is full. Known-unreachable destinations are dropped at once.
    fn park(&mut self, dst: IpAddr, pkt: PacketBuf<Frame<'id>>, now: Timestamp, unchecked: bool) {
        if matches!(self.hops.get(&dst), Some(None)) || self.parked.len() >= PARK_MAX {
            if self.parked.len() >= PARK_MAX {
                self.c.no_neighbour += 1;
            }
            self.xsk.release(pkt.into_inner());
            return;
        }
        self.c.parked += 1;
        self.parked.push((dst, pkt, now, unchecked));
    }

    /// Send (or drop) the packets parked for `dst` now that its next hop is known.
    fn unpark(&mut self, dst: IpAddr, now: Timestamp) {
        // In arrival order: these may be ESP packets with consecutive sequence numbers, and
        // the peer's replay window must not see them shuffled.
        while let Some(i) = self.parked.iter().position(|p| p.0 == dst) {
            let (_, pkt, _, unchecked) = self.parked.remove(i);
            match self.hops.get(&dst).copied().flatten() {
                // plaintext the outbound SPD has not seen goes through it now (see
                // `forward`; the TTL was decremented before parking)
                Some(h) if unchecked && h.side == Side::Unprotected => {
                    self.forward(pkt, now, false, false)
                }
                Some(h) if pkt.len() <= usize::from(self.link_mtu(h)) => self.send(pkt, h),
                _ => {
                    self.c.no_neighbour += 1;
                    self.xsk.release(pkt.into_inner());
                }
            }
        }
    }

    /// Drop packets parked for more than a second.
    fn expire_parked(&mut self, now: Timestamp) {
        let mut i = 0;
        while i < self.parked.len() {
            if now.since(self.parked[i].2) > Duration::from_secs(1) {
                let (_, pkt, _, _) = self.parked.swap_remove(i);
                self.c.no_neighbour += 1;
                self.xsk.release(pkt.into_inner());
            } else {
                i += 1;
            }
        }
    }

    /// Look up the next hop of `dst`; on a miss ask the control thread (at most every 50 ms
    /// per destination). `None`: not known (yet), or known unreachable/local (counted).
    fn hop(&mut self, dst: IpAddr, now: Timestamp) -> Option<Hop> {
        // most packets of a burst go to the destination of the one before
        if let Some((d, h)) = self.last_hop
            && d == dst
        {
            return Some(h);
        }
        match self.hops.get(&dst) {
            Some(Some(h)) => {
                self.last_hop = Some((dst, *h));
                return Some(*h);
            }
            Some(None) => {
                self.c.not_forwarded += 1;
                return None;
            }
            None => {}
        }
        let ask = match self.pending.get(&dst) {
            Some(p) => now.since(p.asked) > Duration::from_millis(50),
            None => self.pending.len() < 4096,
        };
        if ask && self.resolve.try_send(dst).is_ok() {
            self.pending.insert(dst, PendingHop { asked: now });
        }
        None
    }

    /// Forward an IP packet (plaintext) to its destination, decrementing the TTL if asked.
    /// Plaintext that leaves by the unprotected side goes through the outbound SPD first,
    /// unless it comes from there (`checked`): a decapsulated packet routed back out (hub and
    /// spoke) is protected again or dropped by policy, an ICMP error towards a remote protected
    /// network is encrypted, and nothing leaves in clear that the SPD did not BYPASS.
    fn forward(
        &mut self,
        mut pkt: PacketBuf<Frame<'id>>,
        now: Timestamp,
        dec: bool,
        checked: bool,
    ) {
        if dec && fwd::dec_ttl(pkt.data_mut()).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(pkt.data(), IcmpError::TimeExceeded, now);
            self.xsk.release(pkt.into_inner());
            return;
        }
        let Some(dst) = fwd::ip_dst(pkt.data()) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let Some(hop) = self.hop(dst, now) else {
            self.park(dst, pkt, now, !checked);
            return;
        };
        if hop.side == Side::Unprotected && !checked {
            match self.engine.outbound(now, &mut pkt) {
                // too big after encapsulation (no path MTU known, or a bundle): the outer
                // packet is fragmented
                Verdict::Forward => self.forward_esp(pkt, now, None),
                Verdict::Bypass => self.forward(pkt, now, false, true),
                // protected again, it would not fit the path and may not be fragmented:
                // nothing was encrypted; the source is told
                Verdict::TooBig { mtu } => {
                    self.icmp(pkt.data(), IcmpError::TooBig { mtu }, now);
                    self.xsk.release(pkt.into_inner());
                }
                _ => self.xsk.release(pkt.into_inner()),
            }
            return;
        }
        let mtu = usize::from(self.link_mtu(hop));
        if pkt.len() > mtu {
            // plaintext too big for the next link: IPv4 without DF is fragmented; otherwise
            // (DF, or IPv6: routers never fragment it) the source is told
            if fwd::dont_fragment(pkt.data()) {
                self.icmp(pkt.data(), IcmpError::TooBig { mtu: mtu as u16 }, now);
                self.xsk.release(pkt.into_inner());
            } else {
                self.fragment(pkt, hop, mtu);
            }
            return;
        }
        self.send(pkt, hop);
    }

    /// Forward an ESP packet; if it outgrew the link, fragment it or tell the inner source.
    fn forward_esp(
        &mut self,
        pkt: PacketBuf<Frame<'id>>,
        now: Timestamp,
        inner: Option<(usize, usize, usize)>,
    ) {
        let Some(dst) = fwd::ip_dst(pkt.data()) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let Some(hop) = self.hop(dst, now) else {
            self.park(dst, pkt, now, false);
            return;
        };
        let mtu = usize::from(self.link_mtu(hop));
        if pkt.len() <= mtu {
            self.send(pkt, hop);
            return;
        }
        // Too big. The inner packet's start was kept (see `stage_protected`).
        if let Some((slot, quote, inner_len)) = inner {
            let overhead = pkt.len() - inner_len;
            let kept = &self.quotes[slot % BURST];
            let inner_v6 = kept[0] >> 4 == 6;
            if inner_v6 || fwd::dont_fragment(&kept[..quote]) {
                let room = mtu.saturating_sub(overhead) as u16;
                if !inner_v6 || room >= 1280 {
                    let mut q = [0u8; QUOTE_MAX];
                    let n = quote.min(q.len());
                    q[..n].copy_from_slice(&kept[..n]);
                    self.icmp(&q[..n], IcmpError::TooBig { mtu: room }, now);
                    self.xsk.release(pkt.into_inner());
                    return;
                }
            }
        }
        self.fragment(pkt, hop, mtu);
    }

    /// Fragment an outer packet (IPv4 fragments, or an IPv6 Fragment header: the gateway is
    /// the outer packet's source).
    fn fragment(&mut self, pkt: PacketBuf<Frame<'id>>, hop: Hop, mtu: usize) {
        let v6 = pkt.data()[0] >> 4 == 6;
        if !v6 && u16::from_be_bytes([pkt.data()[6], pkt.data()[7]]) & 0x3fff != 0 {
            // already a fragment: not re-fragmented here
            self.xsk.release(pkt.into_inner());
            return;
        }
        let (hdr, per) = if v6 {
            (40, (mtu.saturating_sub(48)) & !7)
        } else {
            let hl = usize::from(pkt.data()[0] & 0x0f) * 4;
            (hl, fwd::v4_fragment_size(hl, mtu).unwrap_or(0))
        };
        if per == 0 || pkt.len() <= hdr {
            self.xsk.release(pkt.into_inner());
            return;
        }
        self.c.fragmented += 1;
        self.frag_id = self.frag_id.wrapping_add(1);
        let ident = self.frag_id;
        // Fragments after the first go into new frames; the first is rewritten in place.
        if !self.send_fragments(pkt.data(), hdr, per, per, v6.then_some(ident), hop) {
            self.xsk.release(pkt.into_inner());
            return;
        }
        // The first fragment, in place: only its header changes.
        let head = pkt.head();
        let first_len = per;
        let mut frame = pkt.into_inner();
        let (start, n) = if v6 {
            // the base header moves 8 bytes left to make room for the Fragment header
            let Some(new_head) = head.checked_sub(8).filter(|&h| h >= ETH_HDR) else {
                self.xsk.release(frame);
                return;
            };
            let mut base = [0u8; 40];
            base.copy_from_slice(&frame.as_ref()[head..head + 40]);
            let buf = &mut frame.as_mut()[new_head..head + 40];
            (
                new_head,
                fwd::v6_fragment_header(buf, &base, first_len, 0, true, ident),
            )
        } else {
            let buf = &mut frame.as_mut()[head..head + hdr];
            (head, fwd::v4_fragment_header(buf, first_len, 0, true))
        };
        if let Some(p) = self.window(frame, start, n) {
            self.send(p, hop);
        }
    }

    /// Send the fragments of `ip` (a `hdr`-byte header, then the fragmentable part) that
    /// start at `from`, `per` payload bytes each, in new frames: IPv4 fragments, or with
    /// `ident` IPv6 Fragment headers. `false` when the frames ran out.
    fn send_fragments(
        &mut self,
        ip: &[u8],
        hdr: usize,
        per: usize,
        from: usize,
        ident: Option<u32>,
        hop: Hop,
    ) -> bool {
        let payload_len = ip.len().saturating_sub(hdr);
        let mut off = from;
        while off < payload_len {
            let end = (off + per).min(payload_len);
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                return false;
            };
            let out = &mut f.as_mut()[FRAME_START..];
            let part = &ip[hdr + off..hdr + end];
            let n = match ident {
                Some(id) => {
                    let mut base = [0u8; 40];
                    base.copy_from_slice(&ip[..40]);
                    fwd::v6_fragment(out, &base, part, off, end < payload_len, id)
                }
                None => fwd::v4_fragment(out, &ip[..hdr], part, off, end < payload_len),
            };
            if let Some(p) = self.window(f, FRAME_START, n) {
                self.send(p, hop);
            }
            off = end;
        }
        true
    }

    /// The packet `f[head .. head + len]`, or `None` (the frame back on the free list,
    /// counted) if `len` is `None` (building it failed) or the window does not fit.
    fn window(
        &mut self,
        f: Frame<'id>,
        head: usize,
        len: Option<usize>,
    ) -> Option<PacketBuf<Frame<'id>>> {
        match len {
            Some(n) if head + n <= FRAME_SIZE as usize => PacketBuf::new(f, head, n),
            _ => {
                self.c.no_frame += 1;
                self.xsk.release(f);
                None
            }
        }
    }

    /// Send an ICMP error about `orig` back to its source.
    fn icmp(&mut self, orig: &[u8], e: IcmpError, now: Timestamp) {
        let fam = usize::from(orig.first().is_some_and(|b| b >> 4 == 6));
        let Some(src) = self.icmp_src[fam] else {
            return;
        };
        // not about packets to multicast/broadcast
        if fwd::ip_dst(orig).is_some_and(|d| d.is_multicast()) {
            return;
        }
        if !fwd::may_draw_icmp_error(orig) {
            return;
        }
        if !self.icmp_limit.allow(now) {
            self.c.icmp_suppressed += 1;
            return;
        }
        let Some(mut f) = self.xsk.alloc() else {
            self.c.no_frame += 1;
            return;
        };
        let start = FRAME_START;
        let Some(n) = fwd::icmp_error(&mut f.as_mut()[start..], src, orig, e) else {
            self.xsk.release(f);
            return;
        };
        let Some(pkt) = self.window(f, start, Some(n)) else {
            return;
        };
        self.c.icmp_sent += 1;
        self.forward(pkt, now, false, false);
    }

    fn heartbeats(&mut self, now: Timestamp) {
        for i in 0..self.heartbeats.len() {
            if now < self.heartbeats[i].next {
                continue;
            }
            let hb = self.heartbeats[i].hb;
            self.heartbeats[i].next = now.plus(hb.interval);
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                continue;
            };
            let start = FRAME_START;
            let Some(n) =
                fwd::keepalive(&mut f.as_mut()[start..], hb.src, hb.dst, hb.sport, hb.dport)
            else {
                self.xsk.release(f);
                continue;
            };
            let Some(pkt) = self.window(f, start, Some(n)) else {
                continue;
            };
            match self.hop(hb.dst, now) {
                Some(h) => {
                    self.c.heartbeats_sent += 1;
                    self.send(pkt, h);
                }
                None => {
                    // retry soon rather than a whole interval later
                    self.heartbeats[i].next = now.plus(Duration::from_millis(100));
                    self.xsk.release(pkt.into_inner());
                }
            }
        }
    }

    /// Write the Ethernet header and queue the frame on the hop's side.
    fn send(&mut self, pkt: PacketBuf<Frame<'id>>, hop: Hop) {
        let Some(eth) = pkt.head().checked_sub(ETH_HDR) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let ethertype = if pkt.data().first().is_some_and(|b| b >> 4 == 6) {
            fwd::ETHERTYPE_IPV6
        } else {
            fwd::ETHERTYPE_IPV4
        };
        let len = pkt.len() + ETH_HDR;
        let mut frame = pkt.into_inner();
        if fwd::write_eth(
            &mut frame.as_mut()[eth..],
            hop.dst_mac,
            hop.src_mac,
            ethertype,
        )
        .is_none()
        {
            self.xsk.release(frame);
            return;
        }
        match self.xsk.send(hop.side, frame, eth, len) {
            Ok(()) => match hop.side {
                Side::Unprotected => self.c.tx_unprot += 1,
                Side::Protected => self.c.tx_prot += 1,
            },
            Err(frame) => {
                self.c.tx_full += 1;
                self.xsk.release(frame);
            }
        }
    }
}
