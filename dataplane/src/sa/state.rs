//! The per-worker state of one SA. Built from an [`SaConfig`] (key schedules and HMAC states
//! expanded, outer header fields precomputed) — this can happen on the control thread — and
//! then owned by exactly one worker, which mutates it without locks.

use super::config::{DfMode, DscpMode, EcnMode, Encap, Mode, Protocol, SaConfig, SaError};
use super::lifetime::{LifeEvent, LifeState, LimitKind};
use crate::crypto::{AuthAlg, EncAlg, Transform};
use crate::replay::{Replay, ReplayWindow, SharedReplayWindow};
use crate::spd::selector_set::SelectorSet;
use crate::spd::{Direction, PacketKey};
use crate::stats::{DropCounters, DropReason, SaDrops};
use crate::time::Timestamp;
use core::time::Duration;
use std::net::IpAddr;
use std::sync::Arc;

/// Outer addresses of a tunnel-mode SA (or a transport SA with known endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outer {
    None,
    V4 { local: [u8; 4], remote: [u8; 4] },
    V6 { local: [u8; 16], remote: [u8; 16] },
}

/// The precomputed outer header of a tunnel-mode SA: per packet only the TOS/traffic class,
/// lengths, identification, DF and checksums are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OuterTemplate {
    pub(crate) bytes: [u8; 48],
    /// IP header plus UDP header bytes: 20, 28, 40 or 48.
    pub(crate) len: u8,
    pub(crate) v6: bool,
    /// IPv4: the one's-complement sum of the constant header words.
    pub(crate) sum: u32,
    /// Outer TOS = (inner TOS & keep) | set: DSCP copied or set (RFC 4301 §5.1.2.1), ECN
    /// copied (RFC 6040 normal mode) or Not-ECT (compatibility mode).
    pub(crate) tos_keep: u8,
    pub(crate) tos_set: u8,
    /// Outer DF = (inner DF & df_copy) | df_force.
    pub(crate) df_copy: bool,
    pub(crate) df_force: bool,
}

impl OuterTemplate {
    fn new(
        outer: &Outer,
        protocol: Protocol,
        udp: Option<(u16, u16)>,
        ttl: u8,
        dscp: DscpMode,
        ecn: EcnMode,
        df: DfMode,
    ) -> Self {
        let mut b = [0u8; 48];
        let proto = if udp.is_some() {
            17
        } else {
            protocol.ip_protocol()
        };
        let (ip_len, v6, sum) = match outer {
            Outer::V4 { local, remote } => {
                b[0] = 0x45;
                b[8] = ttl;
                b[9] = proto;
                b[12..16].copy_from_slice(local);
                b[16..20].copy_from_slice(remote);
                (20, false, crate::wire::checksum::sum(&b[..20]))
            }
            Outer::V6 { local, remote } => {
                b[0] = 0x60;
                b[6] = proto;
                b[7] = ttl;
                b[8..24].copy_from_slice(local);
                b[24..40].copy_from_slice(remote);
                (40, true, 0)
            }
            Outer::None => (0, false, 0),
        };
        if let Some((lp, rp)) = udp {
            b[ip_len..ip_len + 2].copy_from_slice(&lp.to_be_bytes());
            b[ip_len + 2..ip_len + 4].copy_from_slice(&rp.to_be_bytes());
        }
        let (dscp_keep, dscp_set) = match dscp {
            DscpMode::Copy => (0xfc, 0),
            DscpMode::Set(d) => (0, d << 2),
        };
        let ecn_keep = if ecn == EcnMode::Normal { 0x03 } else { 0 };
        OuterTemplate {
            bytes: b,
            len: (ip_len + if udp.is_some() { 8 } else { 0 }) as u8,
            v6,
            sum,
            tos_keep: dscp_keep | ecn_keep,
            tos_set: dscp_set,
            df_copy: df == DfMode::Copy,
            df_force: df == DfMode::Set,
        }
    }
}

/// The soft event for the sequence number comes this many packets before the end of a 32-bit
/// space (about 16.7 M packets: seconds of warning at line rate, enough to rekey).
const SEQ_SOFT_MARGIN: u64 = 1 << 24;

/// One SA as a worker holds it.
#[derive(Debug)]
pub struct Sa {
    pub(crate) spi: u32,
    /// ESP or AH.
    pub(crate) protocol: Protocol,
    pub(crate) reqid: u32,
    pub(crate) dir: Direction,
    pub(crate) mode: Mode,
    pub(crate) esn: bool,
    /// Outbound: the last sequence number sent (0 before the first packet).
    pub(crate) seq: u64,
    pub(crate) seq_max: u64,
    pub(crate) seq_soft: u64,
    pub(crate) replay: Replay,
    pub(crate) xform: Transform,
    /// (local, remote) UDP ports when ESP is UDP-encapsulated.
    pub(crate) udp: Option<(u16, u16)>,
    pub(crate) ip_id: u16,
    pub(crate) ecn: EcnMode,
    /// Tunnel mode: the outer IP (+ UDP) header with every constant field filled in.
    pub(crate) tmpl: OuterTemplate,
    pub(crate) life: LifeState,
    pub(crate) drops: SaDrops,
    /// Traffic selectors of an inbound SA (RFC 4301 §5.2), indexed when there are many;
    /// empty matches nothing. With [`Selector::ANY`](crate::spd::Selector::ANY) among them every packet matches, and
    /// decapsulation skips the upper-layer parse (the common case must not pay for it).
    pub(crate) selectors: SelectorSet,
    /// Inbound lookup also matches this destination (IPv6 flag, the address as
    /// [`ip_u128`]'s number in native byte order). Bytes, not a `u128`: that would make the
    /// whole SA 16-byte aligned and cost 15 bytes of padding here.
    pub(crate) local_match: Option<(bool, [u8; 16])>,
    /// Last authenticated outer source (address, port) of a UDP-encapsulated inbound SA.
    pub(crate) peer_seen: Option<(IpAddr, u16)>,
    /// Outbound: the MTU of the path towards the peer (0: not known), checked before a
    /// packet is encrypted ([`crate::Engine::set_path_mtu`]).
    pub(crate) path_mtu: u16,
    pub(crate) info: Arc<SaInfo>,
}

/// The descriptive part of an SA (no keys): what `show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaInfo {
    pub name: String,
    pub protocol: Protocol,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    pub encap: Encap,
    pub enc: EncAlg,
    pub auth: AuthAlg,
    pub enc_key_bits: usize,
    pub auth_key_bits: usize,
}

/// (IPv6, the address as a number).
pub(crate) fn ip_u128(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl Sa {
    /// The most bytes this SA adds to a packet it protects: the outer header (tunnel mode)
    /// and UDP encapsulation, then ESP's header, IV, longest padding, trailer and ICV; AH's
    /// header at IPv6's alignment; IPComp's header (a payload is sent compressed only when
    /// that makes it smaller).
    pub fn max_overhead(&self) -> usize {
        let outer = match self.mode {
            Mode::Tunnel => usize::from(self.tmpl.len),
            Mode::Transport => {
                if self.udp.is_some() {
                    8
                } else {
                    0
                }
            }
        };
        let icv = self.xform.icv_len();
        outer
            + match self.protocol {
                Protocol::Esp => {
                    crate::wire::esp::HEADER_LEN + self.xform.iv_len() + self.xform.align() - 1
                        + 2
                        + icv
                }
                Protocol::Ah => crate::wire::ah::header_len_for(icv, true),
                Protocol::IpComp(_) => crate::wire::ipcomp::HEADER_LEN,
            }
    }

    /// Build the worker state. Random IV seeds come from the system CSPRNG.
    pub fn new(cfg: &SaConfig, now: Timestamp) -> Result<Sa, SaError> {
        let mut random = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).map_err(
            |_| SaError::Invalid {
                field: "enc_key",
                msg: "the system random generator failed".into(),
            },
        )?;
        Self::build(cfg, now, random)
    }

    /// Test hook (feature `test-hooks`): build with a given IV seed, for deterministic tests.
    /// Two SAs built with one key and one seed repeat their AEAD nonces; nothing that keys
    /// real traffic may call this.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn with_random(cfg: &SaConfig, now: Timestamp, random: [u8; 16]) -> Result<Sa, SaError> {
        Self::build(cfg, now, random)
    }

    fn build(cfg: &SaConfig, now: Timestamp, random: [u8; 16]) -> Result<Sa, SaError> {
        cfg.validate()?;
        let outbound = cfg.direction == Direction::Outbound;
        let ipcomp = matches!(cfg.protocol, Protocol::IpComp(_));
        let xform = if ipcomp {
            Transform::none()
        } else if cfg.protocol == Protocol::Ah {
            Transform::new_ah(cfg.auth, cfg.auth_key.bytes(), random).map_err(|source| {
                SaError::Crypto {
                    field: "auth",
                    source,
                }
            })?
        } else {
            Transform::new(
                cfg.enc,
                cfg.enc_key.bytes(),
                cfg.auth,
                cfg.auth_key.bytes(),
                outbound,
                cfg.allow_legacy,
                random,
            )
            .map_err(|source| SaError::Crypto {
                field: "enc",
                source,
            })?
        };
        let outer = match (cfg.local, cfg.remote) {
            (Some(IpAddr::V4(l)), Some(IpAddr::V4(r))) => Outer::V4 {
                local: l.octets(),
                remote: r.octets(),
            },
            (Some(IpAddr::V6(l)), Some(IpAddr::V6(r))) => Outer::V6 {
                local: l.octets(),
                remote: r.octets(),
            },
            _ => Outer::None,
        };
        let udp = match cfg.encap {
            Encap::None => None,
            Encap::Udp {
                local_port,
                remote_port,
            } => Some((local_port, remote_port)),
        };
        let seq_max = if cfg.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let info = SaInfo {
            name: cfg.name.clone(),
            protocol: cfg.protocol,
            local: cfg.local,
            remote: cfg.remote,
            encap: cfg.encap,
            enc: cfg.enc,
            auth: cfg.auth,
            enc_key_bits: cfg.enc.key_len() * 8,
            auth_key_bits: cfg.auth.key_len() * 8,
        };
        Ok(Sa {
            spi: cfg.spi,
            protocol: cfg.protocol,
            reqid: cfg.reqid,
            dir: cfg.direction,
            mode: cfg.mode,
            esn: cfg.esn,
            seq: 0,
            seq_max,
            seq_soft: seq_max.saturating_sub(SEQ_SOFT_MARGIN),
            // IPComp has no sequence numbers to check
            replay: Replay::Own(ReplayWindow::new(
                if outbound || ipcomp {
                    0
                } else {
                    cfg.replay_window
                },
                cfg.esn,
            )),
            xform,
            udp,
            ip_id: (u32::from(random[0]) << 8 | u32::from(random[1])) as u16,
            ecn: cfg.ecn,
            tmpl: OuterTemplate::new(
                &outer,
                cfg.protocol,
                udp,
                cfg.ttl,
                cfg.dscp,
                cfg.ecn,
                cfg.df,
            ),
            life: LifeState::new(&cfg.lifetime, now),
            drops: SaDrops::default(),
            selectors: SelectorSet::new(&cfg.selectors),
            local_match: cfg.local.map(ip_u128).map(|(v6, a)| (v6, a.to_ne_bytes())),
            peer_seen: None,
            path_mtu: 0,
            info: Arc::new(info),
        })
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    pub fn reqid(&self) -> u32 {
        self.reqid
    }

    pub fn direction(&self) -> Direction {
        self.dir
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The destination an inbound SA is looked up with, as [`ip_u128`] gives it.
    pub(crate) fn local_key(&self) -> Option<(bool, u128)> {
        self.local_match.map(|(v6, a)| (v6, u128::from_ne_bytes(a)))
    }

    pub fn info(&self) -> &SaInfo {
        &self.info
    }

    /// Whether an inbound packet to `dst` may use this SA (SAD lookup by SPI and destination).
    #[inline(always)]
    pub(crate) fn accepts_dst(&self, v6: bool, dst: u128) -> bool {
        match self.local_match {
            None => true,
            Some((m6, m)) => m6 == v6 && u128::from_ne_bytes(m) == dst,
        }
    }

    /// Whether a decapsulated packet matches the SA's traffic selectors (RFC 4301 §5.2).
    /// An SA without selectors matches nothing: no policy names it, so no traffic may
    /// arrive through it (fail closed); "any" is spelled [`Selector::ANY`].
    #[inline]
    pub(crate) fn selectors_match(&self, k: &PacketKey) -> bool {
        self.selectors.matches(k)
    }

    /// Take the next outbound sequence number, or refuse when it would wrap (RFC 4303
    /// §3.3.3: the counter never cycles; the SA must be rekeyed).
    #[inline(always)]
    pub(crate) fn next_seq(&mut self) -> Result<(u64, Option<LifeEvent>), DropReason> {
        if self.seq >= self.seq_max {
            return Err(DropReason::SeqExhausted);
        }
        self.seq += 1;
        let ev = if self.seq >= self.seq_soft {
            if self.seq == self.seq_max {
                self.life.expire(LimitKind::Sequence)
            } else {
                self.life.soft(LimitKind::Sequence)
            }
        } else {
            None
        };
        Ok((self.seq, ev))
    }

    /// The drop reason for a packet on an expired SA.
    #[cold]
    pub(crate) fn expired_reason(&self) -> DropReason {
        if self.life.expired == Some(LimitKind::Sequence) {
            DropReason::SeqExhausted
        } else {
            DropReason::LifetimeExpired
        }
    }

    /// Test hook (feature `test-hooks`): continue from sequence number `seq`. Moving an
    /// outbound sequence number back repeats (key, nonce) pairs.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Test hook (feature `test-hooks`): let the anti-replay window behave as if `seq` had been
    /// received (e.g. to place it just below an ESN epoch boundary).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_replay_top(&mut self, seq: u64) {
        let _ = self.replay.commit(seq);
    }

    /// Let this copy of an inbound SA use `window`, shared with the copies other workers
    /// hold (an SA any worker may receive). Its size and ESN setting must be the SA's.
    pub fn share_replay(&mut self, window: Arc<SharedReplayWindow>) {
        if self.dir == Direction::Inbound
            && window.size() == self.replay.size()
            && window.esn() == self.esn
        {
            self.replay = Replay::Shared(window);
        }
    }

    /// The window this SA's copies on other workers may share ([`Sa::share_replay`]).
    pub fn shared_replay_window(&self) -> Arc<SharedReplayWindow> {
        match &self.replay {
            Replay::Shared(w) => w.clone(),
            Replay::Own(w) => Arc::new(SharedReplayWindow::starting_at(w.size(), w.esn(), w.top())),
        }
    }

    /// Continue `old`, the SA this one replaces with the same SPI and keys (a configuration
    /// change that did not touch the cryptography): the outbound sequence number, the
    /// anti-replay window (when its size and ESN setting are unchanged, else its top), the
    /// drop counters and the last NAT-T peer carry over, and so does the IV generator's
    /// mask (same key, sequence numbers carried on: no nonce may repeat). The lifetime starts
    /// anew with this SA's limits.
    pub fn take_over(&mut self, old: &Sa) {
        if self.spi != old.spi || self.dir != old.dir {
            return;
        }
        self.xform.continue_ivs(&old.xform);
        self.seq = self.seq.max(old.seq);
        if self.replay.size() == old.replay.size() && self.esn == old.esn {
            self.replay = old.replay.clone();
        } else if old.replay.top() > 0 {
            let _ = self.replay.commit(old.replay.top());
        }
        self.drops = old.drops.clone();
        self.peer_seen = self.peer_seen.or(old.peer_seen);
        self.ip_id = old.ip_id;
    }

    /// Continue `old` entirely: [`Sa::take_over`] and the lifetime's use so far (bytes,
    /// packets, age, soft events fired), for the same SA moved to other endpoints (NAT
    /// rebinding, MOBIKE). Only when both have the same lifetime settings.
    pub fn take_over_all(&mut self, old: &Sa) {
        if self.spi != old.spi || self.dir != old.dir {
            return;
        }
        self.take_over(old);
        self.life = old.life.clone();
    }

    /// Time-driven lifetime check without traffic (called by the engine's timer sweep).
    pub(crate) fn poll(&mut self, now: Timestamp) -> Option<LifeEvent> {
        self.life.usable(now).1
    }

    /// A snapshot for `show` and tests.
    pub fn status(&self, now: Timestamp) -> SaStatus {
        let dur = |ns: u64, base: Timestamp| {
            if ns == u64::MAX {
                None
            } else {
                Some(Duration::from_nanos(ns.saturating_sub(base.as_nanos())))
            }
        };
        let lim = |v: u64| if v == u64::MAX { None } else { Some(v) };
        SaStatus {
            info: Arc::clone(&self.info),
            spi: self.spi,
            reqid: self.reqid,
            direction: self.dir,
            mode: self.mode,
            esn: self.esn,
            seq: if self.dir == Direction::Outbound {
                self.seq
            } else {
                self.replay.top()
            },
            replay_window: self.replay.size(),
            replay_received: self.replay.received_in_window(),
            age: now.since(self.life.created),
            idle: now.since(self.life.last_used),
            packets: self.life.packets,
            bytes: self.life.bytes,
            soft_time: dur(self.life.soft_at, self.life.created),
            hard_time: dur(self.life.hard_at, self.life.created),
            soft_bytes: lim(self.life.soft_bytes),
            hard_bytes: lim(self.life.hard_bytes),
            soft_packets: lim(self.life.soft_packets),
            hard_packets: lim(self.life.hard_packets),
            soft_reached: self.life.soft_fired,
            expired: self.life.expired,
            drops: self.drops.counters(),
            iv_len: self.xform.iv_len(),
            icv_len: self.xform.icv_len(),
        }
    }
}

/// What `show sa` reports. Keys appear only as their lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaStatus {
    /// Shared with the SA (a snapshot of many SAs copies no names).
    pub info: Arc<SaInfo>,
    pub spi: u32,
    pub reqid: u32,
    pub direction: Direction,
    pub mode: Mode,
    pub esn: bool,
    /// Outbound: last sequence number sent. Inbound: highest received.
    pub seq: u64,
    pub replay_window: u32,
    pub replay_received: u32,
    pub age: Duration,
    pub idle: Duration,
    pub packets: u64,
    pub bytes: u64,
    pub soft_time: Option<Duration>,
    pub hard_time: Option<Duration>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    pub soft_reached: Option<LimitKind>,
    pub expired: Option<LimitKind>,
    pub drops: DropCounters,
    pub iv_len: usize,
    pub icv_len: usize,
}
