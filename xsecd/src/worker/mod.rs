//! The poll-mode worker: one per NIC queue, pinned, owning one shard of the SAD.
//!
//! Loop: commands (between bursts) → completions → fill → RX burst per side → engine →
//! next hop → TX → handed-off packets → kick TX → timers and heartbeats → idle policy.
//! Nothing on the packet path locks, allocates or makes a syscall per packet; the TX kick
//! (`sendto`, needed by copy mode) is per burst.

use crate::fwd::{self, ETH_HDR, IcmpError};
use crate::probe::{Probe, ProbeBoard};
use crate::reasm::{self, Reassembler};
use crate::replay::ReplaySource;
use crate::trace::Tap;
mod forward;
mod io;
mod mesh;

pub use mesh::{HANDOFF_BUF, HANDOFF_POOL, Handoff, HandoffBuf, HandoffPool, Mesh, Waker};

use crate::xsk::{BURST, FRAME_SIZE, RxFrame, Side, SocketStats, Xsk, XskConfig};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
pub use io::FrameIo;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xsec_dataplane::sa::{Sa, SaKey, SaStatus};
use xsec_dataplane::spd::{Direction, Spd, SpdCarry};
use xsec_dataplane::stats::WorkerStats;
use xsec_dataplane::time::MonotonicClock;
use xsec_dataplane::{Engine, PacketBuf, Shards, Timestamp, Verdict};

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
///
/// `repr(C)`, each MAC inside one 8-byte half: a `Hop` travels in two registers and is
/// stored as two 8-byte words, and a MAC read back across the two cannot be
/// store-forwarded (it stalled `send` for a third of its time in perf at 64 B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Hop {
    pub src_mac: [u8; 6],
    pub mtu: u16,
    pub dst_mac: [u8; 6],
    pub side: Side,
}

/// A heartbeat / NAT keepalive this worker sends for one of its outbound SAs.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// The outbound SA that sends it.
    pub spi: u32,
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
    /// Originate an ICMP echo request through the outbound SPD ([`crate::probe`]).
    Probe(Probe),
    Stop,
}

/// The control side's end of a worker's command channel: a send also wakes the worker if it
/// sleeps in adaptive idle mode, so a change or a snapshot does not wait for the sleep to
/// end (up to a millisecond per round: a key manager's add-sa takes one to three rounds).
#[derive(Debug, Clone)]
pub struct CmdSender {
    cmds: Sender<Cmd>,
    waker: Option<Arc<Waker>>,
}

impl CmdSender {
    pub fn new(cmds: Sender<Cmd>, waker: Option<Arc<Waker>>) -> CmdSender {
        CmdSender { cmds, waker }
    }

    /// Queue `cmd` for the worker and wake it; an error if the worker is gone.
    pub fn send(&self, cmd: Cmd) -> Result<(), crossbeam_channel::SendError<Cmd>> {
        self.cmds.send(cmd)?;
        if let Some(w) = &self.waker {
            w.wake_after_queueing();
        }
        Ok(())
    }
}

/// One worker's part of a configuration change (`xsecctl reload`, `add sa`, ...), applied
/// between two bursts in this order: removals, installations, shards, SPD, heartbeats.
#[derive(Debug, Default)]
pub struct Change {
    /// SAs to remove.
    pub remove: Vec<SaKey>,
    /// SAs to install; how much each continues of the SA this change removes that it
    /// replaces, and which that is (the same SA of the store with, perhaps, new endpoints).
    pub install: Vec<(Box<Sa>, Carry, Option<SaKey>)>,
    /// Edits of the shard map (applied in order).
    pub shards: Vec<ShardEdit>,
    /// A new SPD, and which old policy's counters each of its policies continues (computed
    /// once on the control thread for every worker).
    pub spd: Option<(Arc<Spd>, Arc<SpdCarry>)>,
    /// Heartbeats to start (`Some`) or stop (`None`), by their outbound SA.
    pub heartbeats: Vec<(SaKey, Option<Heartbeat>)>,
    /// SAs to remove last, after everything else (a one-worker daemon's third round).
    pub remove_last: Vec<SaKey>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.install.is_empty()
            && self.shards.is_empty()
            && self.spd.is_none()
            && self.heartbeats.is_empty()
            && self.remove_last.is_empty()
    }
}

/// How much of an old SA its successor continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// A new SA: nothing.
    Nothing,
    /// Same keys, other settings: sequence numbers, replay window, IVs ([`Sa::take_over`]).
    State,
    /// The same SA at other endpoints: the state and the lifetime's use so far
    /// ([`Sa::take_over_all`]).
    Everything,
}

/// One edit of a worker's shard map ([`Shards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEdit {
    /// Inbound SPI → its worker, or gone.
    Inbound(u32, Option<u16>),
    /// Outbound reqid → its worker, or gone.
    Outbound(u32, Option<u16>),
    /// A peer of inbound SAs comes (`true`) or goes.
    Peer(IpAddr, bool),
    /// The UDP endpoint sets, whole (they change only when a value comes first or goes
    /// last), and whether some inbound SA has no peer address.
    Endpoints {
        udp_ports: Vec<u16>,
        udp_locals: Vec<IpAddr>,
        any_peer: bool,
    },
}

/// What a worker did with a [`Change`].
#[derive(Debug, Default)]
pub struct ChangeReport {
    pub id: u16,
    /// Final state of every SA removed (for counters that outlive the SA).
    pub removed: Vec<SaStatus>,
    /// SAs that could not be installed or removed.
    pub errors: Vec<String>,
    /// How long the worker spent applying the change (its stall between two bursts).
    pub took: Duration,
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
    /// Echo requests this gateway originated ([`crate::probe`]: `ping`, tunnel watchdogs).
    pub probes_sent: u64,
    /// Their replies, taken after decapsulation (never forwarded).
    pub probe_replies: u64,
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
    /// How long the worker spent building this snapshot (its stall between two bursts:
    /// it grows with the SAs it holds).
    pub took: Duration,
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
    /// The probes out ([`crate::probe`]), shared with the control threads.
    pub probes: Arc<ProbeBoard>,
    /// Replay frames from memory instead of opening sockets (`crate::replay`).
    pub replay: Option<Arc<ReplaySource>>,
    /// Test hook (debug builds only, `XSECD_TEST_WORKER_PANIC`): panic once this many
    /// packets were received, to test what a dying worker leaves behind.
    pub panic_after: Option<u64>,
}

/// Reported back once the sockets are open: their descriptors for the XSKMAP.
pub type Ready = Result<(u16, u32, [i32; 2]), String>;

/// The next-hop tables' hasher: foldhash's fast hasher with a per-process random seed
/// (std's SipHash showed up in worker profiles; foldhash was faster than the hand-written
/// hasher it replaced in a one-off comparison, not kept as a benchmark). The random seed
/// keeps a sender from choosing destinations that collide (the keys are unauthenticated
/// protected-side addresses).
type HopHash = foldhash::fast::RandomState;

struct PendingHop {
    asked: Timestamp,
}

struct HeartbeatState {
    hb: Heartbeat,
    next: Timestamp,
}

struct Worker<'x, I: FrameIo> {
    id: u16,
    queue: u32,
    core: Option<usize>,
    /// The frames' source and sink: the sockets and UMEM, owned by [`Xsk::open`] for as
    /// long as the worker runs (no `I::Frame` the worker holds outlives them).
    xsk: &'x mut I,
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
    probes: Arc<ProbeBoard>,
    /// The smallest MTU of any next hop seen (or the configured one): packets that cannot
    /// outgrow it need no copy kept for an ICMP error.
    min_mtu: usize,
    reasm: Reassembler,
    /// Where a reassembled outer packet is put together and processed ([`BIG_HEAD`] bytes of
    /// room in front for a handed-off packet's outer headers).
    big: Vec<u8>,
    /// Packets waiting for a next hop: (destination, packet, since, not seen by the
    /// outbound SPD).
    parked: Vec<(IpAddr, PacketBuf<I::Frame>, Timestamp, bool)>,
    frag_id: u32,
    /// The start of each protected-side packet of a burst that could outgrow its link, for
    /// the ICMP error that would quote it (one slot per packet of the burst).
    quotes: Box<[[u8; QUOTE_MAX]; BURST]>,
    /// A protected-side burst between its stages (allocated once).
    batch: Vec<PacketBuf<I::Frame>>,
    staged: Vec<Staged>,
    spis: Vec<Option<u32>>,
    verdicts: Vec<Verdict>,
    trace: Option<Box<Tap>>,
    trace_lost: u64,
    /// A counters snapshot being built.
    snap: Option<PendingSnapshot>,
}

/// SAs whose status a worker copies into a snapshot per loop turn: a snapshot of many SAs
/// is spread over turns, so that the worker never stops for long between bursts (60,000 SAs
/// at once stopped it for 11 ms).
const SNAPSHOT_CHUNK: u32 = 32;

/// A counters snapshot under way: the SAs of handles below `next` are in `sas`.
#[derive(Debug)]
struct PendingSnapshot {
    replies: Vec<Sender<Snapshot>>,
    sas: Vec<SaStatus>,
    /// The handle of each of `sas` (to take back an SA removed before the snapshot ends).
    handles: Vec<u32>,
    next: u32,
    /// The longest turn spent on it.
    longest: Duration,
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
    let mut w = Worker::new(xsk, &setup);
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
        let work = w.poll(&mut rx, now, &mut next_timer);
        if let Some(n) = setup.panic_after
            && w.c.rx_unprot + w.c.rx_prot >= n
        {
            panic!("worker {}: test hook: panicking after {n} packets", w.id);
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
                    Some(me) => me.sleep(w.xsk, &w.inbox, &setup.cmds, 1),
                    None => {
                        w.xsk.wait(1, None);
                    }
                }
            }
        }
    }
}

impl<'x, I: FrameIo> Worker<'x, I> {
    fn new(xsk: &'x mut I, setup: &WorkerSetup) -> Self {
        Worker {
            id: setup.id,
            queue: setup.queue,
            core: setup.core,
            xsk,
            engine: Engine::new(setup.spd.clone()),
            c: WorkerCounters::default(),
            hops: HashMap::with_capacity_and_hasher(256, HopHash::default()),
            last_hop: None,
            pending: HashMap::with_capacity_and_hasher(64, HopHash::default()),
            resolve: setup.resolve.clone(),
            events: setup.events.clone(),
            inbox: setup.inbox.clone(),
            pool: setup.pool.clone(),
            to_wake: 0,
            mesh: setup.mesh.clone(),
            icmp_src: setup.icmp_src,
            icmp_limit: fwd::IcmpLimiter::new(setup.icmp_limit.0, setup.icmp_limit.1),
            mtu: setup.mtu,
            heartbeats: Vec::new(),
            probes: setup.probes.clone(),
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
            snap: None,
        }
    }

    /// One turn of the loop: completions, fill, an RX burst per side through the engine to
    /// TX, handed-off packets, wake-ups, the TX kick and (every millisecond) the timers.
    /// Returns the packets taken.
    fn poll(
        &mut self,
        rx: &mut Vec<RxFrame<I::Frame>>,
        now: Timestamp,
        next_timer: &mut Timestamp,
    ) -> usize {
        self.c.loops += 1;
        self.xsk.reap();
        let mut work = 0;
        for side in Side::BOTH {
            self.xsk.refill(side);
            rx.clear();
            let n = self.xsk.recv(side, rx, BURST);
            work += n;
            match side {
                Side::Unprotected => self.c.rx_unprot += n as u64,
                Side::Protected => self.c.rx_prot += n as u64,
            }
            match side {
                Side::Protected => self.protected_burst(rx, now),
                Side::Unprotected => self.unprotected_burst(rx, now),
            }
        }
        for _ in 0..BURST {
            let Ok(h) = self.inbox.try_recv() else { break };
            work += 1;
            self.handed(h, now);
        }
        if self.to_wake != 0 {
            std::sync::atomic::fence(Ordering::SeqCst);
            for (i, waker) in self.mesh.wakers.iter().enumerate() {
                if self.to_wake & (1 << (i % 64)) != 0 {
                    waker.wake();
                }
            }
            self.to_wake = 0;
        }
        self.xsk.kick();
        if now >= *next_timer {
            *next_timer = now.plus(Duration::from_millis(1));
            self.engine.poll_timers(now, 64);
            self.heartbeats(now);
            self.expire_parked(now);
            self.reasm.expire(now);
            for ev in self.engine.drain_events() {
                let _ = self.events.try_send((self.id, ev));
            }
        }
        if self.snap.is_some() {
            // a snapshot under way is work: no sleeping until it is out
            self.snapshot_step(now);
            work += 1;
        }
        work
    }
}

impl<I: FrameIo> Worker<'_, I> {
    fn apply(&mut self, cmd: Cmd, now: Timestamp) {
        match cmd {
            Cmd::InstallSa(sa) => {
                let _ = self.install(*sa, true);
            }
            Cmd::Apply(change, reply) => {
                let t = std::time::Instant::now();
                let mut report = self.change(*change, now);
                report.took = t.elapsed();
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
                match &mut self.snap {
                    // one under way: this asker gets it too
                    Some(p) => p.replies.push(reply),
                    None => {
                        self.snap = Some(PendingSnapshot {
                            replies: vec![reply],
                            sas: Vec::with_capacity(self.engine.sad().len()),
                            handles: Vec::with_capacity(self.engine.sad().len()),
                            next: 0,
                            longest: Duration::ZERO,
                        });
                        self.snapshot_step(now);
                    }
                }
            }
            Cmd::Probe(p) => self.probe(p, now),
            Cmd::Stop => {}
        }
    }

    /// Apply one configuration change; see [`Change`].
    fn change(&mut self, c: Change, now: Timestamp) -> ChangeReport {
        let mut report = ChangeReport {
            id: self.id,
            ..ChangeReport::default()
        };
        // the SAs removed, and whether each was its reqid's current outbound SA
        let mut gone: Vec<(Sa, bool)> = Vec::with_capacity(c.remove.len());
        for key in c.remove {
            let current = key.dir == Direction::Outbound
                && self
                    .engine
                    .sad()
                    .find(key.dir, key.spi, key.addr)
                    .is_some_and(|h| {
                        self.engine.sad().get(h).is_some_and(|sa| {
                            self.engine.sad().lookup_outbound(sa.reqid()) == Some(h)
                        })
                    });
            if let Some(sa) = self.remove(key, now, &mut report) {
                gone.push((sa, current));
            }
        }
        // each removed SA by its key: a reload replacing 10,000 pairs finds predecessors in
        // O(1), not by a scan per SA
        let by_key: HashMap<SaKey, usize> = gone
            .iter()
            .enumerate()
            .map(|(i, (o, _))| (SaKey::of(o), i))
            .collect();
        for (mut sa, carry, from) in c.install {
            let old = from.and_then(|k| by_key.get(&k)).and_then(|&i| gone.get(i));
            // a replacement takes its predecessor's place: the reqid's current outbound SA
            // only if that was
            let current = old.is_none_or(|(_, cur)| *cur);
            if carry != Carry::Nothing
                && let Some((old, _)) = old
            {
                if carry == Carry::Everything {
                    sa.take_over_all(old);
                } else {
                    sa.take_over(old);
                }
            }
            let (dir, spi) = (sa.direction(), sa.spi());
            if let Err(e) = self.install(*sa, current) {
                report.errors.push(format!(
                    "worker {}: {} SA {spi:#010x}: {e}",
                    self.id,
                    dir.name()
                ));
            }
        }
        if !c.shards.is_empty() {
            let s = self.engine.shards_mut();
            for e in c.shards {
                match e {
                    ShardEdit::Inbound(spi, Some(w)) => {
                        s.inbound.insert(spi, w);
                    }
                    ShardEdit::Inbound(spi, None) => {
                        s.inbound.remove(&spi);
                    }
                    ShardEdit::Outbound(reqid, Some(w)) => {
                        s.outbound.insert(reqid, w);
                    }
                    ShardEdit::Outbound(reqid, None) => {
                        s.outbound.remove(&reqid);
                    }
                    ShardEdit::Peer(p, true) => {
                        s.peers.insert(p);
                    }
                    ShardEdit::Peer(p, false) => {
                        s.peers.remove(&p);
                    }
                    ShardEdit::Endpoints {
                        udp_ports,
                        udp_locals,
                        any_peer,
                    } => {
                        s.udp_ports = udp_ports;
                        s.udp_locals = udp_locals;
                        s.any_peer = any_peer;
                    }
                }
            }
        }
        if let Some((spd, carry)) = c.spd {
            if let Some(t) = &mut self.trace {
                t.set_spd(&spd);
            }
            self.engine.set_spd_carrying(spd, &carry);
        }
        for (key, hb) in c.heartbeats {
            // a heartbeat that continues keeps its schedule
            let same =
                |o: &HeartbeatState| o.hb.spi == key.spi && key.addr.is_none_or(|a| a == o.hb.dst);
            let next = self.heartbeats.iter().find(|o| same(o)).map(|o| o.next);
            self.heartbeats.retain(|o| !same(o));
            if let Some(hb) = hb {
                let next = next.unwrap_or(now);
                self.heartbeats.push(HeartbeatState { next, hb });
            }
        }
        for key in c.remove_last {
            self.remove(key, now, &mut report);
        }
        report
    }

    /// The next [`SNAPSHOT_CHUNK`] SAs of the snapshot under way; sent once all are in.
    fn snapshot_step(&mut self, now: Timestamp) {
        let Some(p) = &mut self.snap else {
            return;
        };
        let t = std::time::Instant::now();
        let sad = self.engine.sad();
        let end = sad.slots();
        let stop = p.next.saturating_add(SNAPSHOT_CHUNK).min(end);
        for i in p.next..stop {
            if let Some(sa) = sad.get(xsec_dataplane::sa::SaHandle(i)) {
                p.sas.push(sa.status(now));
                p.handles.push(i);
            }
        }
        p.next = stop;
        p.longest = p.longest.max(t.elapsed());
        if stop < end {
            return;
        }
        let Some(p) = self.snap.take() else {
            return;
        };
        let snap = Snapshot {
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
            sas: p.sas,
            hits_in: self.engine.policy_hits(Direction::Inbound).to_vec(),
            hits_out: self.engine.policy_hits(Direction::Outbound).to_vec(),
            trace_lost: self.trace_lost + self.trace.as_ref().map_or(0, |t| t.lost),
            took: p.longest,
        };
        if let Some((last, rest)) = p.replies.split_last() {
            for r in rest {
                let _ = r.send(snap.clone());
            }
            let _ = last.send(snap);
        }
    }

    /// Remove an SA for a change; its final state goes into the report.
    fn remove(&mut self, key: SaKey, now: Timestamp, report: &mut ChangeReport) -> Option<Sa> {
        let Some(h) = self.engine.sad().find(key.dir, key.spi, key.addr) else {
            report.errors.push(format!(
                "worker {}: no {} SA with SPI {:#010x} to remove",
                self.id,
                key.dir.name(),
                key.spi
            ));
            return None;
        };
        let sa = self.engine.remove_sa(h)?;
        // a snapshot under way that has it already forgets it: its counters now go with
        // the removed SAs (counted once, not twice)
        if let Some(p) = &mut self.snap
            && h.0 < p.next
            && let Some(k) = p.handles.iter().position(|&x| x == h.0)
        {
            p.handles.swap_remove(k);
            p.sas.swap_remove(k);
        }
        report.removed.push(sa.status(now));
        Some(sa)
    }

    /// The MTU of a next hop's link (or the configured one, if smaller).
    fn link_mtu(&self, h: Hop) -> u16 {
        link_mtu(self.mtu, h)
    }

    /// Install an SA; an outbound one gets the MTU of the link towards its peer if the next
    /// hop is known (else when it becomes known: `Cmd::Hop`). O(1): no walk over the SAD.
    fn install(&mut self, sa: Sa, current: bool) -> Result<(), xsec_dataplane::sa::SaError> {
        let remote = sa.info().remote;
        let h = self.engine.install_sa_as(sa, current)?;
        if let Some(Some(hop)) = remote.and_then(|r| self.hops.get(&r))
            && hop.side == Side::Unprotected
        {
            let mtu = self.link_mtu(*hop);
            self.engine.set_sa_path_mtu(h, mtu);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
