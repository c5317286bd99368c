//! The per-worker ESP engine and its burst API.
//!
//! An [`Engine`] owns one worker's SA shard, a shared reference to the compiled SPD, its
//! counters and its event queue. `outbound_burst` and `inbound_burst` process a burst of
//! packets in place in caller-owned buffers and write one [`Verdict`] per packet; they never
//! allocate, lock or panic, whatever the bytes. Management calls (install/remove SAs, swap the
//! SPD, drain events, sweep timers) run between bursts.

use crate::crypto::{ICV_GROUP, Transform};
use crate::esp::{self, Deferred, Header, InboundEsp};
use crate::events::{Event, EventKind, EventQueue};
use crate::packet::PacketBuf;
use crate::sa::{Encap, Protocol, Sa, SaConfig, SaError, SaHandle, SaTable, ip_u128};
use crate::spd::flow_cache::FlowCache;
use crate::spd::{Action, Direction, Disposition, Lookup, MAX_BUNDLE, PacketKey, Spd, SpdCarry};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Timestamp;
use crate::wire::udp_encap::{UdpEncapKind, classify_udp_encap};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, checksum};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The fate of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Outbound: now ESP, to the unprotected side. Inbound: decapsulated, to the protected
    /// side (tunnel) or local delivery (transport).
    Forward,
    /// Passed unchanged (BYPASS, or the inbound default).
    Bypass,
    /// IKE (UDP 500, or the non-ESP marker on an encapsulation port): for the control plane.
    Punt,
    /// Consumed by the engine (a NAT-keepalive).
    Consumed,
    /// The SA this packet needs belongs to another worker's shard (see [`Shards`]): hand the
    /// packet, unchanged, to that worker.
    Handoff(u16),
    /// Outbound: the ESP packet would exceed the path MTU towards the peer, and the packet may
    /// not be fragmented: nothing was encrypted; tell the sender that `mtu` bytes fit
    /// (ICMP "fragmentation needed" / "packet too big"). Counted as
    /// [`DropReason::PathMtu`].
    TooBig {
        mtu: u16,
    },
    Drop(DropReason),
    /// Not processed (the verdict slice was shorter than the burst).
    #[default]
    Unset,
}

impl Verdict {
    pub fn is_drop(&self) -> bool {
        matches!(
            self,
            Verdict::Drop(_) | Verdict::TooBig { .. } | Verdict::Unset
        )
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// UDP ports always treated as ESP-in-UDP on input (4500 by default); ports of installed
    /// UDP-encapsulated SAs are added automatically.
    pub udp_encap_ports: Vec<u16>,
    /// SAs the table holds before its indexes grow.
    pub sa_capacity: usize,
    /// Events kept until drained.
    pub event_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            udp_encap_ports: vec![4500],
            sa_capacity: 1024,
            event_capacity: 4096,
        }
    }
}

/// A 65536-bit set of UDP ports with reference counts for the ports SAs add.
#[derive(Debug)]
struct PortSet {
    bits: Box<[u64; 1024]>,
    refs: BTreeMap<u16, u32>,
    fixed: Vec<u16>,
}

impl PortSet {
    fn new(fixed: &[u16]) -> Self {
        let mut s = PortSet {
            bits: Box::new([0; 1024]),
            refs: BTreeMap::new(),
            fixed: fixed.to_vec(),
        };
        for &p in fixed {
            s.set(p, true);
        }
        s
    }

    fn set(&mut self, p: u16, on: bool) {
        let (w, b) = (usize::from(p) / 64, p % 64);
        if on {
            self.bits[w] |= 1 << b;
        } else {
            self.bits[w] &= !(1 << b);
        }
    }

    #[inline(always)]
    fn contains(&self, p: u16) -> bool {
        self.bits[usize::from(p) / 64] & (1 << (p % 64)) != 0
    }

    fn add(&mut self, p: u16) {
        *self.refs.entry(p).or_default() += 1;
        self.set(p, true);
    }

    fn release(&mut self, p: u16) {
        if let Some(n) = self.refs.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&p);
                if !self.fixed.contains(&p) {
                    self.set(p, false);
                }
            }
        }
    }
}

/// Which worker owns the SAs this engine does not hold.
///
/// Each worker's engine holds one shard of the SAD. When a packet needs an SA that is not in
/// the local shard, the engine looks the SPI (inbound) or reqid (outbound) up here and answers
/// [`Verdict::Handoff`] instead of dropping it. Only consulted on a local miss.
#[derive(Debug, Clone, Default)]
pub struct Shards {
    /// Inbound SPI → owning worker.
    pub inbound: std::collections::HashMap<u32, u16>,
    /// Outbound reqid → owning worker.
    pub outbound: std::collections::HashMap<u32, u16>,
    /// UDP ports of every UDP-encapsulated inbound SA, whichever worker owns it: a worker
    /// must recognise ESP in UDP for SAs it does not hold, to hand it over.
    pub udp_ports: Vec<u16>,
    /// The gateway's addresses of every UDP-encapsulated inbound SA (where their UDP
    /// fragments are sent, to be reassembled by whichever worker receives them).
    pub udp_locals: Vec<IpAddr>,
    /// The peers of every inbound SA: outer fragments are reassembled only from them. A set,
    /// so that a tunnel coming or going is one edit however many there are.
    pub peers: std::collections::HashSet<IpAddr>,
    /// Some inbound SA has no peer address (transport mode without `remote`): fragments are
    /// reassembled from anyone.
    pub any_peer: bool,
}

impl Shards {
    /// Whether outer fragments from `src` are reassembled.
    pub fn fragments_from(&self, src: IpAddr) -> bool {
        self.any_peer || self.peers.contains(&src)
    }
}

/// See [`Engine::bundled`].
fn bundled_reqids(spd: &Spd) -> std::collections::HashSet<u32> {
    spd.policies(Direction::Inbound)
        .iter()
        .filter_map(|p| match p.action {
            Action::Protect(b) if b.reqids().len() > 1 => Some(b.reqids().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The IKE port: always handed to the control plane.
const IKE_PORT: u16 = 500;

/// Packets laid out before their deferred seals are finished together.
const BATCH: usize = 64;
/// Deferred packets of one SA handed to a crypto kernel at once: enough to keep the CBC
/// lanes refilled, small enough that the per-call job arrays stay cheap to set up.
const SUB: usize = 16;

/// One worker's ESP engine.
#[derive(Debug)]
pub struct Engine {
    sad: SaTable,
    spd: Arc<Spd>,
    /// The SPD's answers by packet key; emptied with every new SPD.
    flows: FlowCache,
    hits: [Vec<u64>; 2],
    stats: WorkerStats,
    events: EventQueue,
    udp_ports: PortSet,
    sweep: usize,
    shards: Option<Arc<Shards>>,
    /// Packets of the current burst chunk whose seal is deferred: (index in the chunk, SA,
    /// what is left). Allocated once.
    deferred: Vec<(usize, SaHandle, Deferred)>,
    /// Installed inbound SAs whose ICVs bursts check in groups: none, no first pass.
    grouped_icv_sas: usize,
    /// Outbound SAs per peer address: a path MTU learnt for anything else concerns no SA.
    peers: std::collections::HashMap<IpAddr, u32>,
    /// The first pass's findings for the current inbound chunk. Allocated once.
    pre: Vec<Option<Pre>>,
    /// Per outbound policy: when it may raise its next ACQUIRE.
    acquire_next: Vec<Timestamp>,
    /// IPComp's compressor and decompressor, made with the first IPComp SA.
    codecs: Option<Box<crate::ipcomp::Codecs>>,
    /// Inbound tunnel-mode IPComp SAs by (IPv6, remote, local): whose IP-in-IP packets
    /// are their uncompressed ones.
    ipcomp_tunnels: Vec<(bool, u128, u128, SaHandle)>,
    /// Reqids that inbound PROTECT policies of the SPD name in bundles of two or more SAs:
    /// a packet that came through one of them alone is checked against the SPD too.
    bundled: std::collections::HashSet<u32>,
    /// Reqids of installed IPComp SAs, with how many: a bundle need not have used them (an
    /// uncompressed packet skips IPComp, RFC 3173 §2.2).
    ipcomp_reqids: BTreeMap<u32, u32>,
}

/// An outbound PROTECT policy without its SA raises ACQUIRE at most this often (per worker).
pub const ACQUIRE_INTERVAL: core::time::Duration = core::time::Duration::from_secs(1);

/// What an inbound burst's first pass learned about an ESP packet, for its decapsulation.
#[derive(Debug, Clone, Copy)]
struct Pre {
    esp: InboundEsp,
    h: SaHandle,
    /// The ICV checked with these ESN high bits: did it verify?
    checked: Option<(Option<u32>, bool)>,
}

/// What the inbound classifier found.
enum Inbound {
    Esp(InboundEsp),
    Ike,
    Keepalive,
    Plain,
}

impl Engine {
    pub fn new(spd: Arc<Spd>) -> Self {
        Self::with_config(spd, EngineConfig::default())
    }

    pub fn with_config(spd: Arc<Spd>, cfg: EngineConfig) -> Self {
        let hits = [
            vec![0; spd.policies(Direction::Inbound).len()],
            vec![0; spd.policies(Direction::Outbound).len()],
        ];
        Engine {
            sad: SaTable::with_capacity(cfg.sa_capacity),
            flows: FlowCache::default(),
            hits,
            stats: WorkerStats::default(),
            events: EventQueue::new(cfg.event_capacity),
            udp_ports: PortSet::new(&cfg.udp_encap_ports),
            sweep: 0,
            shards: None,
            deferred: Vec::with_capacity(BATCH),
            grouped_icv_sas: 0,
            peers: std::collections::HashMap::new(),
            pre: Vec::with_capacity(BATCH),
            acquire_next: vec![Timestamp::ZERO; spd.policies(Direction::Outbound).len()],
            codecs: None,
            ipcomp_tunnels: Vec::new(),
            bundled: bundled_reqids(&spd),
            ipcomp_reqids: BTreeMap::new(),
            spd,
        }
    }

    /// Set (or clear) the map of SAs held by other workers; takes effect for the next packet.
    pub fn set_shards(&mut self, shards: Option<Arc<Shards>>) {
        self.shards = shards;
    }

    /// The shard map in force, if any.
    pub fn shards(&self) -> Option<&Shards> {
        self.shards.as_deref()
    }

    /// The shard map to edit in place (made empty if there was none). It is copied first
    /// only if another engine shares it: give each engine its own to keep edits O(1).
    pub fn shards_mut(&mut self) -> &mut Shards {
        Arc::make_mut(self.shards.get_or_insert_with(Default::default))
    }

    /// Build and install an SA from its configuration.
    pub fn add_sa(&mut self, cfg: &SaConfig, now: Timestamp) -> Result<SaHandle, SaError> {
        self.install_sa(Sa::new(cfg, now)?)
    }

    /// Install an SA built elsewhere.
    pub fn install_sa(&mut self, sa: Sa) -> Result<SaHandle, SaError> {
        self.install_sa_as(sa, true)
    }

    /// [`install_sa`](Engine::install_sa), making an outbound SA its reqid's current one
    /// only if `current` (or the reqid has none): what replaces an SA that was not current
    /// stays behind the one that is.
    pub fn install_sa_as(&mut self, sa: Sa, current: bool) -> Result<SaHandle, SaError> {
        let port = match (sa.dir, sa.info.encap) {
            (Direction::Inbound, Encap::Udp { local_port, .. }) => Some(local_port),
            _ => None,
        };
        let grouped = Self::grouped(&sa);
        let peer = sa.info.remote.filter(|_| sa.dir == Direction::Outbound);
        let is_ipcomp = matches!(sa.protocol, Protocol::IpComp(_));
        let reqid = sa.reqid;
        let ipcomp_tunnel = match (is_ipcomp, sa.dir, sa.mode, sa.info.remote, sa.info.local) {
            (true, Direction::Inbound, crate::sa::Mode::Tunnel, Some(r), Some(l)) => {
                let ((v6, r), (_, l)) = (ip_u128(r), ip_u128(l));
                Some((v6, r, l))
            }
            _ => None,
        };
        let h = self.sad.insert_as(sa, current)?;
        if is_ipcomp {
            if self.codecs.is_none() {
                self.codecs = Some(Box::default());
            }
            *self.ipcomp_reqids.entry(reqid).or_default() += 1;
        }
        if let Some((v6, r, l)) = ipcomp_tunnel {
            self.ipcomp_tunnels.push((v6, r, l, h));
        }
        if let Some(p) = peer {
            *self.peers.entry(p).or_default() += 1;
        }
        if let Some(p) = port {
            self.udp_ports.add(p);
        }
        self.grouped_icv_sas += usize::from(grouped);
        Ok(h)
    }

    /// Whether `sa`'s ICVs are checked in groups by an inbound burst's first pass.
    fn grouped(sa: &Sa) -> bool {
        sa.dir == Direction::Inbound
            && matches!(sa.protocol, Protocol::Esp | Protocol::Ah)
            && sa.xform.pairs()
    }

    /// Remove an SA; its final state is returned.
    pub fn remove_sa(&mut self, h: SaHandle) -> Option<Sa> {
        let sa = self.sad.remove(h)?;
        self.ipcomp_tunnels.retain(|t| t.3 != h);
        if matches!(sa.protocol, Protocol::IpComp(_))
            && let Some(n) = self.ipcomp_reqids.get_mut(&sa.reqid)
        {
            *n -= 1;
            if *n == 0 {
                self.ipcomp_reqids.remove(&sa.reqid);
            }
        }
        if let Some(p) = sa.info.remote.filter(|_| sa.dir == Direction::Outbound)
            && let Some(n) = self.peers.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&p);
            }
        }
        if let (Direction::Inbound, Encap::Udp { local_port, .. }) = (sa.dir, sa.info.encap) {
            self.udp_ports.release(local_port);
        }
        if Self::grouped(&sa) {
            self.grouped_icv_sas -= 1;
        }
        Some(sa)
    }

    pub fn sad(&self) -> &SaTable {
        &self.sad
    }

    /// The MTU of the path towards `peer` (0: unknown): the outbound SAs to that peer check
    /// packets against it before they are encrypted ([`Verdict::TooBig`]).
    pub fn set_path_mtu(&mut self, peer: IpAddr, mtu: u16) {
        // most next hops the workers learn are not SA peers: no walk for those
        if self.peers.contains_key(&peer) {
            self.update_path_mtus(|p| (p == peer).then_some(mtu));
        }
    }

    /// The path MTU of one SA (0: unknown), e.g. right after installing it.
    pub fn set_sa_path_mtu(&mut self, h: SaHandle, mtu: u16) {
        if let Some(sa) = self.sad.get_mut(h) {
            sa.path_mtu = mtu;
        }
    }

    /// Set every outbound SA's path MTU from `mtu_of(peer)` (`None`: leave it).
    pub fn update_path_mtus(&mut self, mtu_of: impl Fn(IpAddr) -> Option<u16>) {
        for sa in self.sad.iter_mut() {
            if sa.dir == Direction::Outbound
                && let Some(peer) = sa.info.remote
                && let Some(m) = mtu_of(peer)
            {
                sa.path_mtu = m;
            }
        }
    }

    /// Test hook (feature `test-hooks`): mutable access to an installed SA (e.g. to move a
    /// sequence number).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn sa_mut(&mut self, h: SaHandle) -> Option<&mut Sa> {
        self.sad.get_mut(h)
    }

    /// Replace the SPD (atomically for this worker: between two bursts). A policy of the new
    /// SPD keeps the hit counter of the old policy of the same name and direction, wherever
    /// it moved; new policies start at zero.
    pub fn set_spd(&mut self, spd: Arc<Spd>) {
        let carry = spd.carry_from(&self.spd);
        self.set_spd_carrying(spd, &carry);
    }

    /// [`set_spd`](Self::set_spd) with the counters' mapping computed by the caller
    /// ([`Spd::carry_from`], once for all workers): O(P) here, no name compared.
    pub fn set_spd_carrying(&mut self, spd: Arc<Spd>, carry: &SpdCarry) {
        self.hits = [
            carry.apply(Direction::Inbound, &self.hits[0]),
            carry.apply(Direction::Outbound, &self.hits[1]),
        ];
        // a new SPD may ACQUIRE at once
        self.acquire_next.clear();
        self.acquire_next
            .resize(spd.policies(Direction::Outbound).len(), Timestamp::ZERO);
        self.bundled = bundled_reqids(&spd);
        self.spd = spd;
        self.flows.clear();
    }

    /// SPD lookups answered by the flow cache, and those that went to the classifier.
    pub fn flow_cache_counts(&self) -> (u64, u64) {
        self.flows.counts()
    }

    /// The most bytes protection can add to an outbound packet: the costliest outbound SA
    /// as many times as the longest bundle applies SAs. A packet no longer than the link
    /// MTU less this leaves no longer than the link MTU.
    #[inline]
    pub fn max_overhead(&self) -> usize {
        self.sad.max_overhead() * self.spd.deepest_bundle()
    }

    pub fn spd(&self) -> &Arc<Spd> {
        &self.spd
    }

    /// Per-policy hit counters of a direction, in SPD order.
    pub fn policy_hits(&self, dir: Direction) -> &[u64] {
        &self.hits[dir.index()]
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    pub fn drain_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain()
    }

    /// Check up to `budget` SAs for time-based lifetime transitions (soft/hard time, idle),
    /// continuing where the previous call stopped; call between bursts.
    pub fn poll_timers(&mut self, now: Timestamp, budget: usize) {
        let n = self.sad.slot_count();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            self.sweep = (self.sweep + 1) % n;
            let h = SaHandle(self.sweep as u32);
            if let Some(sa) = self.sad.get_mut(h) {
                let ev = sa.poll(now);
                esp::report(&mut self.events, sa, h, ev);
            }
        }
        self.stats.events_lost = self.events.lost();
    }

    #[inline(always)]
    fn drop(&mut self, r: DropReason) -> Verdict {
        self.stats.drops.bump(r);
        Verdict::Drop(r)
    }

    /// Encapsulate one packet with a given SA, skipping the SPD (benchmarks, bundles).
    #[inline]
    pub fn encap_with<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        h: SaHandle,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
    ) -> Verdict {
        self.encap_inner(h, now, pkt, None).0
    }

    /// [`encap_with`](Self::encap_with); with `defer`, perhaps only laid out, what is left
    /// of the seal written there (then the `bool` is true).
    #[inline(always)]
    fn encap_inner<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        h: SaHandle,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
        defer: Option<&mut Deferred>,
    ) -> (Verdict, bool) {
        let Some(sa) = self.sad.get_mut(h) else {
            return (self.drop(DropReason::NoSa), false);
        };
        let r = match (sa.protocol, self.codecs.as_deref_mut()) {
            (Protocol::Esp, _) => esp::encap(sa, h, pkt, now, &mut self.events, defer),
            (Protocol::Ah, _) => crate::ah::encap(sa, h, pkt, now, &mut self.events, defer),
            (Protocol::IpComp(_), Some(codecs)) => {
                crate::ipcomp::encap(sa, h, pkt, now, &mut self.events, codecs, &mut self.stats)
                    .map(|n| (n, false))
            }
            (Protocol::IpComp(_), None) => Err(DropReason::NoSa),
        };
        match r {
            Ok((bytes, deferred)) => {
                self.stats.encap_packets += 1;
                self.stats.encap_bytes += bytes as u64;
                (Verdict::Forward, deferred)
            }
            Err(r) => (self.drop(r), false),
        }
    }

    /// Raise ACQUIRE for outbound `policy`, whose SA `reqid` is missing, unless it did within
    /// [`ACQUIRE_INTERVAL`].
    #[cold]
    fn acquire(&mut self, policy: usize, reqid: u32, key: &PacketKey, now: Timestamp) {
        let Some(next) = self.acquire_next.get_mut(policy) else {
            return;
        };
        if now < *next {
            return;
        }
        *next = now.plus(ACQUIRE_INTERVAL);
        let addr = |a: u128| {
            if key.v6 {
                IpAddr::from(std::net::Ipv6Addr::from(a))
            } else {
                IpAddr::from(std::net::Ipv4Addr::from(a as u32))
            }
        };
        let port = |p: u32| u16::try_from(p).ok();
        let ports = match (port(key.src_port), port(key.dst_port)) {
            (Some(s), Some(d)) => Some((s, d)),
            _ => None,
        };
        self.events.push(Event {
            kind: EventKind::Acquire {
                policy: policy as u32,
                src: addr(key.src),
                dst: addr(key.dst),
                proto: key.proto,
                ports,
            },
            spi: 0,
            reqid,
            direction: Direction::Outbound,
            handle: SaHandle::NONE,
        });
    }

    /// Outbound processing of one plaintext packet from the protected side: SPD lookup, then
    /// PROTECT (encapsulate with each SA of the bundle), BYPASS or DISCARD.
    #[inline]
    pub fn outbound<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
    ) -> Verdict {
        self.outbound_inner(now, pkt, None).0
    }

    /// [`outbound`](Self::outbound); with `defer`, a packet protected by a single SA whose
    /// transform seals in bursts comes back laid out, its SA and what is left to do written
    /// there (then the `bool` is true).
    #[inline(always)]
    fn outbound_inner<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
        mut defer: Option<&mut (usize, SaHandle, Deferred)>,
    ) -> (Verdict, bool) {
        let Ok(key) = PacketKey::parse(pkt.data()) else {
            return (self.drop(DropReason::Malformed), false);
        };
        let (bundle, policy) = match self.flows.lookup(&self.spd, Direction::Outbound, &key) {
            Lookup::Policy { index, action } => {
                if let Some(c) = self.hits[1].get_mut(index as usize) {
                    *c += 1;
                }
                match *action {
                    Action::Protect(b) => (b, index as usize),
                    Action::Bypass => {
                        self.stats.bypass_packets += 1;
                        return (Verdict::Bypass, false);
                    }
                    Action::Discard => return (self.drop(DropReason::PolicyDiscard), false),
                }
            }
            Lookup::Default {
                action: Disposition::Bypass,
            } => {
                self.stats.bypass_packets += 1;
                return (Verdict::Bypass, false);
            }
            Lookup::Default { .. } => return (self.drop(DropReason::NoPolicy), false),
        };
        // a bundle's inner SAs must be sealed before the outer ones wrap them
        let single = bundle.reqids().len() == 1;
        let mut v = Verdict::Drop(DropReason::NoSa);
        for &reqid in bundle.reqids() {
            let Some(h) = self.sad.lookup_outbound(reqid) else {
                // Only the first SA of a bundle may live elsewhere: the packet is unchanged.
                if let (Some(&w), true) = (
                    self.shards.as_ref().and_then(|s| s.outbound.get(&reqid)),
                    reqid == bundle.reqids()[0],
                ) {
                    // the owner counts the hit when it processes the packet
                    if let Some(c) = self.hits[1].get_mut(policy) {
                        *c -= 1;
                    }
                    return (Verdict::Handoff(w), false);
                }
                self.acquire(policy, reqid, &key, now);
                return (self.drop(DropReason::NoSa), false);
            };
            // The path MTU is checked before anything is encrypted (single SAs: a bundle's
            // size is known only once its layers are on).
            if single
                && let Some(sa) = self.sad.get_mut(h)
                && sa.path_mtu != 0
                && pkt.len() + esp::MAX_OVERHEAD > usize::from(sa.path_mtu)
                && let Some(mtu) = esp::path_mtu_room(sa, pkt.data())
            {
                sa.drops.bump(DropReason::PathMtu);
                self.stats.drops.bump(DropReason::PathMtu);
                return (Verdict::TooBig { mtu }, false);
            }
            let (r, deferred) = match defer.as_deref_mut() {
                Some(slot) if single => {
                    slot.1 = h;
                    self.encap_inner(h, now, pkt, Some(&mut slot.2))
                }
                _ => self.encap_inner(h, now, pkt, None),
            };
            if deferred {
                return (r, true);
            }
            v = r;
            if v != Verdict::Forward {
                return (v, false);
            }
        }
        (v, false)
    }

    /// Process a burst from the protected side. Returns how many packets were not dropped.
    ///
    /// Packets whose SA uses AES-CBC on a CPU with AES-NI are laid out first and encrypted
    /// together afterwards, up to eight in lockstep per SA ([`crate::crypto::aesni`]), then
    /// signed; the bytes are the same as [`outbound`](Self::outbound) would produce one
    /// packet at a time.
    pub fn outbound_burst<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkts: &mut [PacketBuf<B>],
        verdicts: &mut [Verdict],
    ) -> usize {
        let mut ok = 0;
        let n = pkts.len().min(verdicts.len());
        let mut deferred = core::mem::take(&mut self.deferred);
        deferred.resize(BATCH, (0, SaHandle(0), Deferred::default()));
        for (pkts, verdicts) in pkts[..n]
            .chunks_mut(BATCH)
            .zip(verdicts[..n].chunks_mut(BATCH))
        {
            // a lone packet gains nothing from the multi-buffer path
            let defer = pkts.len() > 1;
            let mut m = 0;
            for (i, (p, v)) in pkts.iter_mut().zip(verdicts.iter_mut()).enumerate() {
                let slot = match deferred.get_mut(m) {
                    Some(slot) if defer => {
                        slot.0 = i;
                        Some(slot)
                    }
                    _ => None,
                };
                let (verdict, d) = self.outbound_inner(now, p, slot);
                *v = verdict;
                m += usize::from(d);
            }
            if m > 0 {
                self.seal_deferred(pkts, verdicts, &mut deferred[..m]);
            }
            ok += verdicts.iter().filter(|v| !v.is_drop()).count();
        }
        self.deferred = deferred;
        ok
    }

    /// Finish the deferred seals of a chunk: per SA, every packet's IV field and payload are
    /// CBC-encrypted together by the multi-buffer kernel, then each packet is signed.
    fn seal_deferred<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkts: &mut [PacketBuf<B>],
        verdicts: &mut [Verdict],
        deferred: &mut [(usize, SaHandle, Deferred)],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            // packets of one SA at a time (most bursts have one), in arrival order
            deferred.sort_unstable_by_key(|&(i, h, _)| (h.0, i));
            let mut rest: &[(usize, SaHandle, Deferred)] = deferred;
            while let Some(&(_, h, _)) = rest.first() {
                let m = rest.iter().take_while(|(_, x, _)| *x == h).count();
                let (group, tail) = rest.split_at(m);
                rest = tail;
                let Some(sa) = self.sad.get(h) else {
                    // not reached: an SA does not leave in the middle of a burst
                    for &(i, _, _) in group {
                        verdicts[i] = Verdict::Drop(DropReason::NoSa);
                        self.stats.drops.bump(DropReason::NoSa);
                    }
                    continue;
                };
                // the group's frames in arrival order, SUB at a time: one walk over the chunk
                let mut walk = pkts.iter_mut().enumerate();
                for sub in group.chunks(SUB) {
                    let mut frames: [&mut [u8]; SUB] = Default::default();
                    let mut ds = [Deferred::default(); SUB];
                    let mut n = 0;
                    for &(gi, _, d) in sub {
                        for (i, p) in walk.by_ref() {
                            if i == gi {
                                (frames[n], ds[n]) = (p.frame_mut(), d);
                                n += 1;
                                break;
                            }
                        }
                    }
                    if sa.protocol == Protocol::Ah {
                        // AH: the ICVs of the group together; a packet whose header cannot
                        // be hashed is dropped (not reached for what `encap` laid out)
                        let ok = crate::ah::seal_group(sa, &mut frames[..n], &ds[..n]);
                        for (k, &(i, _, _)) in sub.iter().enumerate() {
                            if ok & (1 << k) == 0 {
                                verdicts[i] = Verdict::Drop(DropReason::Malformed);
                                self.stats.drops.bump(DropReason::Malformed);
                            }
                        }
                        continue;
                    }
                    if !Self::seal_sub(sa, &mut frames[..n], &ds[..n]) {
                        // not reached: the layout makes whole blocks and the key exists
                        for &(i, _, _) in sub {
                            verdicts[i] = Verdict::Drop(DropReason::BadLength);
                            self.stats.drops.bump(DropReason::BadLength);
                        }
                    }
                }
            }
        }
        let _ = (pkts, verdicts, deferred);
    }

    /// Seal up to [`SUB`] deferred packets of `sa`; false if the kernel refused them.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn seal_sub(sa: &Sa, frames: &mut [&mut [u8]], ds: &[Deferred]) -> bool {
        use crate::crypto::aesni::{CbcJob, cbc_encrypt_many};
        // every packet's IV field and payload, encrypted together
        let icv = sa.xform.icv_len();
        let m = frames.len().min(ds.len()).min(SUB);
        let sealed = {
            let mut jobs: [CbcJob<'_>; SUB] = core::array::from_fn(|_| CbcJob {
                iv: [0; 16],
                data: &mut [],
            });
            for ((job, f), d) in jobs.iter_mut().zip(frames.iter_mut()).zip(ds) {
                if let Some(body) = f.get_mut(d.esp + 8..d.esp + d.len - icv) {
                    job.data = body;
                }
            }
            sa.xform
                .cbc_ni_key()
                .is_some_and(|k| cbc_encrypt_many(k, &mut jobs[..m]))
        };
        if sealed {
            // signed together: the hash kernels take up to ICV_GROUP packets
            for (f, d) in frames.chunks_mut(ICV_GROUP).zip(ds.chunks(ICV_GROUP)) {
                Deferred::finish_group(d, sa, f);
            }
        }
        sealed
    }

    /// Process a burst from the unprotected side. Returns how many packets were not dropped.
    ///
    /// When CBC+HMAC SAs with the SHA-NI kernels are installed, a first pass over each chunk
    /// finds every ESP packet's SA and checks those SAs' ICVs together, up to `ICV_GROUP`
    /// at a time (`Transform::verify_group`). Each packet then goes through
    /// [`inbound`](Self::inbound)'s steps as usual, reusing what the first pass found, with
    /// the same result. (AES-GCM packets are opened one at a time by the burst kernel, which
    /// measured faster than grouping them here: see `crypto::gcmni`.)
    pub fn inbound_burst<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkts: &mut [PacketBuf<B>],
        verdicts: &mut [Verdict],
    ) -> usize {
        let mut ok = 0;
        let n = pkts.len().min(verdicts.len());
        let mut pre = core::mem::take(&mut self.pre);
        pre.resize(BATCH, None);
        for (pkts, verdicts) in pkts[..n]
            .chunks_mut(BATCH)
            .zip(verdicts[..n].chunks_mut(BATCH))
        {
            let grouped = pkts.len() > 1 && self.grouped_icv_sas > 0;
            if grouped {
                self.prepass(pkts, &mut pre);
            }
            for (i, (p, v)) in pkts.iter_mut().zip(verdicts.iter_mut()).enumerate() {
                let pre = if grouped { pre[i].take() } else { None };
                *v = self.inbound_inner(now, p, pre);
                ok += usize::from(!v.is_drop());
            }
        }
        self.pre = pre;
        ok
    }

    /// The first pass of an inbound chunk: classify every packet and find its SA; check the
    /// ICVs of CBC+HMAC packets up to [`ICV_GROUP`] at a time, in the state the SAs are in
    /// now (the replay window's ESN inference is repeated at decap, and the check redone if
    /// it moved). `pre[i]` gets what was learned about packet `i`.
    fn prepass<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkts: &mut [PacketBuf<B>],
        pre: &mut [Option<Pre>],
    ) {
        // (index, SA, ESP offset in the frame, ESP length, ESN high bits)
        let mut icvs: [(usize, SaHandle, usize, usize, Option<u32>); BATCH] =
            [(0, SaHandle(0), 0, 0, None); BATCH];
        let mut m = 0;
        // AH: (index, SA, IP start, IP length, AH offset, IPv6, ESN high bits)
        #[allow(clippy::type_complexity)]
        let mut ahs: [(usize, SaHandle, usize, usize, usize, bool, Option<u32>); BATCH] =
            [(0, SaHandle(0), 0, 0, 0, false, None); BATCH];
        let mut a = 0;
        for (i, p) in pkts.iter_mut().enumerate() {
            pre[i] = None;
            let Ok(Inbound::Esp(e)) = self.classify(p) else {
                continue;
            };
            if e.kind == Header::IpComp {
                continue;
            }
            let Some(h) = self.sad.lookup_inbound(e.spi(p.data()), e.v6, e.dst) else {
                continue;
            };
            pre[i] = Some(Pre {
                esp: e,
                h,
                checked: None,
            });
            let Some(sa) = self.sad.get(h) else { continue };
            if e.kind == Header::Ah {
                if sa.protocol == Protocol::Ah && sa.xform.pairs() {
                    let at = p.head() + e.esp_off;
                    let Some(seq_lo) = p
                        .frame()
                        .get(at + 8..at + 12)
                        .and_then(|b| b.first_chunk::<4>())
                        .map(|b| u32::from_be_bytes(*b))
                    else {
                        continue;
                    };
                    if let Some(seq) = sa
                        .replay
                        .infer(seq_lo)
                        .filter(|&s| sa.replay.check(s).is_ok())
                    {
                        let hi = sa.esn.then_some((seq >> 32) as u32);
                        let len = e.esp_off + e.esp_len;
                        ahs[a] = (i, h, p.head(), len, at, e.v6, hi);
                        a += 1;
                    }
                }
                continue;
            }
            if !sa.xform.pairs() || sa.udp.map(|u| u.0) != e.udp.map(|u| u.1) {
                continue;
            }
            let esp = p.head() + e.esp_off;
            let Some(seq_lo) = p
                .frame()
                .get(esp + 4..esp + 8)
                .and_then(|b| b.first_chunk::<4>())
                .map(|b| u32::from_be_bytes(*b))
            else {
                continue;
            };
            // a replayed packet is dropped before its ICV is looked at: not worth the work
            let Some(seq) = sa
                .replay
                .infer(seq_lo)
                .filter(|&s| sa.replay.check(s).is_ok())
            else {
                continue;
            };
            icvs[m] = (i, h, esp, e.esp_len, sa.esn.then_some((seq >> 32) as u32));
            m += 1;
        }
        // ICV_GROUP at a time (a lone last one is left to `open`)
        for grp in icvs[..m].chunks(ICV_GROUP).filter(|g| g.len() > 1) {
            let n = grp.len();
            let Some(first) = self.sad.get(grp[0].1) else {
                continue;
            };
            let mut xf: [&Transform; ICV_GROUP] = [&first.xform; ICV_GROUP];
            let mut bufs: [&[u8]; ICV_GROUP] = [&[]; ICV_GROUP];
            let mut at = [(0, 0, None); ICV_GROUP];
            let mut found = 0;
            for (k, &(i, h, esp, len, hi)) in grp.iter().enumerate() {
                if let Some(sa) = self.sad.get(h) {
                    (xf[k], bufs[k], at[k]) = (&sa.xform, pkts[i].frame(), (esp, len, hi));
                    found += 1;
                }
            }
            let mut ok = [false; ICV_GROUP];
            if found == n && Transform::verify_group(&xf[..n], &bufs[..n], &at[..n], &mut ok[..n]) {
                for (k, &(i, _, _, _, hi)) in grp.iter().enumerate() {
                    if let Some(p) = pre[i].as_mut() {
                        p.checked = Some((hi, ok[k]));
                    }
                }
            }
        }
        // AH, ICV_GROUP at a time (a lone last one is left to `decap`)
        for grp in ahs[..a].chunks(ICV_GROUP).filter(|g| g.len() > 1) {
            let n = grp.len();
            let Some(first) = self.sad.get(grp[0].1) else {
                continue;
            };
            let mut xf: [&Transform; ICV_GROUP] = [&first.xform; ICV_GROUP];
            let mut at = [(0, 0, 0, false, None); ICV_GROUP];
            let mut found = 0;
            for (k, &(_, h, ip, len, ah, v6, hi)) in grp.iter().enumerate() {
                if let Some(sa) = self.sad.get(h) {
                    (xf[k], at[k]) = (&sa.xform, (ip, len, ah, v6, hi));
                    found += 1;
                }
            }
            if found != n {
                continue;
            }
            // the group's frames, in order (indices ascend): one walk over the chunk
            let mut frames: [&mut [u8]; ICV_GROUP] = Default::default();
            let mut walk = pkts.iter_mut().enumerate();
            for (k, &(gi, ..)) in grp.iter().enumerate() {
                for (i, p) in walk.by_ref() {
                    if i == gi {
                        frames[k] = p.frame_mut();
                        break;
                    }
                }
            }
            let mut ok = [None; ICV_GROUP];
            crate::ah::verify_group(&xf[..n], &mut frames[..n], &at[..n], &mut ok[..n]);
            for (k, &(i, .., hi)) in grp.iter().enumerate() {
                if let (Some(p), Some(ok)) = (pre[i].as_mut(), ok[k]) {
                    p.checked = Some((hi, ok));
                }
            }
        }
    }

    /// Inbound processing of one packet: ESP (raw or UDP-encapsulated) is decapsulated,
    /// nested ESP of an SA bundle too; IKE is punted, NAT-keepalives consumed, and plaintext
    /// is checked against the inbound SPD.
    #[inline]
    pub fn inbound<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
    ) -> Verdict {
        self.inbound_inner(now, pkt, None)
    }

    /// [`inbound`](Self::inbound), perhaps with what a burst's first pass found (`pre`).
    #[inline(always)]
    fn inbound_inner<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
        mut pre: Option<Pre>,
    ) -> Verdict {
        let mut depth = 0;
        // the reqids of the SAs that decapsulated the packet, outermost first
        let mut chain = [0u32; MAX_BUNDLE];
        // an outer layer left its selector check to the bundle check
        let mut deferred = false;
        // the innermost SA so far is IPComp, which authenticates nothing
        let mut ipcomp = false;
        loop {
            let mut checked = None;
            let (esp, found) = match pre.take() {
                Some(p) => {
                    checked = p.checked;
                    (p.esp, Some(p.h))
                }
                // The last SA checked its selectors on what it decapsulated: that is the
                // packet, whatever it carries (a host's own ESP, IKE or IP in IP included),
                // if its IP header holds together.
                None if depth > 0 && !deferred => {
                    if let Err(r) = Self::whole_ip(pkt) {
                        return self.drop(r);
                    }
                    return self.finish_layers(pkt, &chain[..depth], false, ipcomp);
                }
                None => match self.classify(pkt) {
                    Ok(Inbound::Esp(e)) => (e, None),
                    Ok(Inbound::Ike) => {
                        self.stats.punt_packets += 1;
                        return Verdict::Punt;
                    }
                    Ok(Inbound::Keepalive) => {
                        self.stats.keepalives += 1;
                        return Verdict::Consumed;
                    }
                    Ok(Inbound::Plain) if depth > 0 => {
                        // IP in IP inside a bundle: a tunnel-mode IPComp SA's uncompressed
                        // packet (RFC 3173 §2.2)
                        if deferred
                            && depth < MAX_BUNDLE
                            && let Some(reqid) = self.ipip_uncompressed(now, pkt)
                        {
                            chain[depth] = reqid;
                            depth += 1;
                            ipcomp = true;
                            deferred = false;
                            continue;
                        }
                        return self.finish_layers(pkt, &chain[..depth], deferred, ipcomp);
                    }
                    Ok(Inbound::Plain) => {
                        // a tunnel-mode IPComp SA on its own, uncompressed
                        if let Some(reqid) = self.ipip_uncompressed(now, pkt) {
                            chain[0] = reqid;
                            depth = 1;
                            ipcomp = true;
                            continue;
                        }
                        return self.plaintext(pkt);
                    }
                    Err(r) => return self.drop(r),
                },
            };
            if depth == MAX_BUNDLE {
                return self.drop(DropReason::BundleTooDeep);
            }
            let spi = esp.spi(pkt.data());
            let sa = match found {
                Some(h) => self.sad.get_mut(h).map(|sa| (h, sa)),
                None => self.sad.lookup_inbound_mut(spi, esp.v6, esp.dst),
            };
            let Some((h, sa)) = sa else {
                // Only before the first decapsulation: the packet is still as received.
                if depth == 0
                    && let Some(&w) = self.shards.as_ref().and_then(|s| s.inbound.get(&spi))
                {
                    return Verdict::Handoff(w);
                }
                return self.drop(DropReason::NoSa);
            };
            let reqid = sa.reqid;
            let esp = InboundEsp {
                defer: !self.bundled.is_empty() && self.bundled.contains(&reqid),
                ..esp
            };
            let r = match (esp.kind, sa.protocol, self.codecs.as_deref_mut()) {
                (Header::Esp, Protocol::Esp, _) => {
                    esp::decap(sa, h, pkt, &esp, now, &mut self.events, checked)
                }
                (Header::Ah, Protocol::Ah, _) => {
                    crate::ah::decap(sa, h, pkt, &esp, now, &mut self.events, checked)
                }
                (Header::IpComp, Protocol::IpComp(_), Some(codecs)) => {
                    crate::ipcomp::decap(sa, h, pkt, &esp, now, &mut self.events, codecs)
                }
                _ => {
                    sa.drops.bump(DropReason::ProtocolMismatch);
                    Err(DropReason::ProtocolMismatch)
                }
            };
            match r {
                Ok((bytes, d)) => {
                    self.stats.decap_packets += 1;
                    self.stats.decap_bytes += bytes as u64;
                    deferred = d;
                }
                Err(r) => return self.drop(r),
            }
            ipcomp = esp.kind == Header::IpComp;
            chain[depth] = reqid;
            depth += 1;
        }
    }

    /// The packet in the window is IP in IP between the ends of an inbound tunnel-mode
    /// IPComp SA: the uncompressed form of that SA's packets. Strip the outer header,
    /// account it to the SA, and give its reqid.
    fn ipip_uncompressed<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<B>,
    ) -> Option<u32> {
        if self.ipcomp_tunnels.is_empty() {
            return None;
        }
        let data = pkt.data();
        let (v6, src, dst, hl, proto) = match data.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(data).ok()?;
                (
                    false,
                    u128::from(u32::from_be_bytes(ip.src_addr())),
                    u128::from(u32::from_be_bytes(ip.dst_addr())),
                    ip.header_len(),
                    ip.protocol(),
                )
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(data).ok()?;
                (
                    true,
                    u128::from_be_bytes(ip.src_addr()),
                    u128::from_be_bytes(ip.dst_addr()),
                    40,
                    ip.next_header(),
                )
            }
            _ => return None,
        };
        if proto != IpProtocol::IPV4 && proto != IpProtocol::IPV6 {
            return None;
        }
        let &(_, _, _, h) = self
            .ipcomp_tunnels
            .iter()
            .find(|&&(t6, r, l, _)| (t6, r, l) == (v6, src, dst))?;
        let sa = self.sad.get_mut(h)?;
        let inner_len = data.len().checked_sub(hl)?;
        let (usable, ev) = sa.life.usable(now);
        esp::report(&mut self.events, sa, h, ev);
        if !usable {
            return None;
        }
        let ev = sa.life.account(now, inner_len as u64);
        esp::report(&mut self.events, sa, h, ev);
        let reqid = sa.reqid;
        let head = pkt.head();
        pkt.set_window(head + hl, inner_len);
        self.stats.decap_packets += 1;
        self.stats.decap_bytes += inner_len as u64;
        Some(reqid)
    }

    /// A decapsulated packet's IP header is consistent (IPv4: checksum and lengths; IPv6: the
    /// extension-header chain walks); link padding beyond its length is trimmed.
    fn whole_ip<B: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut PacketBuf<B>) -> Result<(), DropReason> {
        let data = pkt.data();
        let total = match data.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
                if !ip.verify_checksum() {
                    return Err(DropReason::Malformed);
                }
                usize::from(ip.total_len())
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
                ip.upper_layer().map_err(|_| DropReason::Malformed)?;
                ip.total_len()
            }
            _ => return Err(DropReason::Malformed),
        };
        if total < pkt.len() {
            let head = pkt.head();
            pkt.set_window(head, total);
        }
        Ok(())
    }

    /// The packet is out of its last layer (`chain`, outermost first): forwarded, after the
    /// bundle check when it came through more than one SA, through IPComp (which
    /// authenticates nothing), through an SA a bundle names, or when a layer left its
    /// selector check to it (`deferred`).
    fn finish_layers<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkt: &PacketBuf<B>,
        chain: &[u32],
        deferred: bool,
        ipcomp: bool,
    ) -> Verdict {
        let bundled = chain
            .first()
            .is_some_and(|r| !self.bundled.is_empty() && self.bundled.contains(r));
        if deferred || chain.len() > 1 || ipcomp || bundled {
            self.bundle_check(pkt, chain)
        } else {
            Verdict::Forward
        }
    }

    /// Whether `chain` (outermost first) is `bundle` (innermost first), but for IPComp SAs
    /// of the bundle that a packet too small or too random to compress did not use.
    fn bundle_matches(&self, bundle: &[u32], chain: &[u32]) -> bool {
        let mut used = chain.iter().rev().peekable();
        for r in bundle {
            if used.peek() == Some(&r) {
                used.next();
            } else if !self.ipcomp_reqids.contains_key(r) {
                return false;
            }
        }
        used.next().is_none()
    }

    /// RFC 4301 §4.5 and §5.2 for a packet that came through a bundle (or through an SA
    /// that authenticates nothing, IPComp): the inbound SPD entry its contents match must
    /// PROTECT with exactly the SAs that decapsulated it (`chain`, outermost first; a
    /// bundle lists them innermost first). Anything else is dropped.
    fn bundle_check<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkt: &PacketBuf<B>,
        chain: &[u32],
    ) -> Verdict {
        let Ok(key) = PacketKey::parse(pkt.data()) else {
            return self.drop(DropReason::Malformed);
        };
        let ok = match self.flows.lookup(&self.spd, Direction::Inbound, &key) {
            Lookup::Policy {
                action: Action::Protect(b),
                ..
            } => self.bundle_matches(b.reqids(), chain),
            _ => false,
        };
        if ok {
            Verdict::Forward
        } else {
            self.drop(DropReason::BundleMismatch)
        }
    }

    /// Inbound plaintext: the SPD decides (RFC 4301 §5.2 step 3).
    fn plaintext<B: AsRef<[u8]> + AsMut<[u8]>>(&mut self, pkt: &PacketBuf<B>) -> Verdict {
        let Ok(key) = PacketKey::parse(pkt.data()) else {
            return self.drop(DropReason::Malformed);
        };
        match self.flows.lookup(&self.spd, Direction::Inbound, &key) {
            Lookup::Policy { index, action } => {
                if let Some(c) = self.hits[0].get_mut(index as usize) {
                    *c += 1;
                }
                match action {
                    Action::Bypass => {
                        self.stats.bypass_packets += 1;
                        Verdict::Bypass
                    }
                    Action::Discard => self.drop(DropReason::PolicyDiscard),
                    // a bundle of IPComp alone: what did not compress comes as it was
                    Action::Protect(b)
                        if b.reqids()
                            .iter()
                            .all(|r| self.ipcomp_reqids.contains_key(r)) =>
                    {
                        self.stats.bypass_packets += 1;
                        Verdict::Bypass
                    }
                    Action::Protect(_) => self.drop(DropReason::UnprotectedForProtect),
                }
            }
            Lookup::Default {
                action: Disposition::Bypass,
            } => {
                self.stats.bypass_packets += 1;
                Verdict::Bypass
            }
            Lookup::Default { .. } => self.drop(DropReason::NoPolicy),
        }
    }

    /// Find ESP in an inbound packet. Trims link-layer padding beyond the IP length.
    #[inline(always)]
    fn classify<B: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        pkt: &mut PacketBuf<B>,
    ) -> Result<Inbound, DropReason> {
        let data = pkt.data();
        let (v6, src, dst, ip_hdr_len, nh_field, proto, total, ecn, fragment) = match data
            .first_chunk::<20>()
        {
            // Fast path: IPv4 without options, every field at a fixed offset.
            Some(h) if h[0] == 0x45 => {
                let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                if total < 20 || total > data.len() || checksum::fold(checksum::sum20(h)) != 0xffff
                {
                    return Err(DropReason::Malformed);
                }
                (
                    false,
                    u128::from(u32::from_be_bytes([h[12], h[13], h[14], h[15]])),
                    u128::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
                    20,
                    9,
                    IpProtocol(h[9]),
                    total,
                    h[1] & 3,
                    u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0,
                )
            }
            _ => match data.first().map(|b| b >> 4) {
                Some(4) => {
                    let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
                    if !ip.verify_checksum() {
                        return Err(DropReason::Malformed);
                    }
                    (
                        false,
                        u128::from(u32::from_be_bytes(ip.src_addr())),
                        u128::from(u32::from_be_bytes(ip.dst_addr())),
                        ip.header_len(),
                        9,
                        ip.protocol(),
                        usize::from(ip.total_len()),
                        ip.ecn(),
                        ip.is_fragment(),
                    )
                }
                Some(6) => {
                    let ip = Ipv6Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
                    let ul = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
                    // the walk steps over AH; AH is what an IPsec packet starts with here
                    let (offset, nh_field, protocol) = match ul.ah {
                        Some((at, nh)) => (at, nh, IpProtocol::AH),
                        None => (ul.offset, ul.nh_field, ul.protocol),
                    };
                    (
                        true,
                        u128::from_be_bytes(ip.src_addr()),
                        u128::from_be_bytes(ip.dst_addr()),
                        offset,
                        nh_field,
                        protocol,
                        ip.total_len(),
                        ip.ecn(),
                        ul.fragment,
                    )
                }
                _ => return Err(DropReason::Malformed),
            },
        };
        let esp = |esp_off: usize, esp_len: usize, udp: Option<(u16, u16)>, kind: Header| {
            Inbound::Esp(InboundEsp {
                v6,
                src,
                dst,
                ip_hdr_len,
                nh_field,
                esp_off,
                esp_len,
                udp,
                outer_ecn: ecn,
                kind,
                defer: false,
            })
        };
        let found = match proto {
            IpProtocol::ESP => {
                if fragment {
                    return Err(DropReason::Fragment);
                }
                // at least the SPI and sequence number (RFC 4303 §2)
                if total - ip_hdr_len < 8 {
                    return Err(DropReason::Malformed);
                }
                esp(ip_hdr_len, total - ip_hdr_len, None, Header::Esp)
            }
            IpProtocol::AH => {
                // AH is processed after reassembly too (RFC 4302 §3.4.1)
                if fragment {
                    return Err(DropReason::Fragment);
                }
                if total < ip_hdr_len + crate::wire::ah::FIXED_LEN {
                    return Err(DropReason::Malformed);
                }
                esp(ip_hdr_len, total - ip_hdr_len, None, Header::Ah)
            }
            IpProtocol::IPCOMP => {
                // IPComp is processed after reassembly too (RFC 3173 §3)
                if fragment {
                    return Err(DropReason::Fragment);
                }
                if total < ip_hdr_len + crate::wire::ipcomp::HEADER_LEN {
                    return Err(DropReason::Malformed);
                }
                esp(ip_hdr_len, total - ip_hdr_len, None, Header::IpComp)
            }
            IpProtocol::UDP => {
                let l4 = data.get(ip_hdr_len..total).unwrap_or_default();
                if let Some(u) = l4.first_chunk::<8>() {
                    let sport = u16::from_be_bytes([u[0], u[1]]);
                    let dport = u16::from_be_bytes([u[2], u[3]]);
                    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
                    if dport == IKE_PORT {
                        Inbound::Ike
                    } else if self.udp_ports.contains(dport)
                        || self
                            .shards
                            .as_ref()
                            .is_some_and(|s| s.udp_ports.contains(&dport))
                    {
                        if fragment {
                            return Err(DropReason::Fragment);
                        }
                        if ulen < 8 || ulen > l4.len() {
                            return Err(DropReason::Malformed);
                        }
                        match classify_udp_encap(&l4[8..ulen]) {
                            UdpEncapKind::Esp => {
                                esp(ip_hdr_len + 8, ulen - 8, Some((sport, dport)), Header::Esp)
                            }
                            UdpEncapKind::Ike => Inbound::Ike,
                            UdpEncapKind::Keepalive => Inbound::Keepalive,
                            UdpEncapKind::Invalid => return Err(DropReason::BadUdpEncap),
                        }
                    } else {
                        Inbound::Plain
                    }
                } else if fragment {
                    Inbound::Plain
                } else {
                    return Err(DropReason::Malformed);
                }
            }
            _ => Inbound::Plain,
        };
        if total < pkt.len() {
            let head = pkt.head();
            pkt.set_window(head, total);
        }
        Ok(found)
    }
}
