//! One IKE SA and its Child SAs: the exchanges of RFC 7296 as a state machine that takes
//! decoded messages and the time and produces messages to send and events for the driver.
//! It never touches a socket or the clock. [`super::endpoint::Endpoint`] routes datagrams
//! to it and owns its timers.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use sha1::Digest;
use zeroize::Zeroizing;

use super::auth::{SignedOctets, psk_auth, psk_verify};
use super::config::{ChildConfig, Connection, Mode, Timing};
use super::kdf::{KeyLengths, Prf, Secret};
use super::ke::{Group, KeyPair};
use super::proposal::{Chosen, Encr, Integ, Suite, check_answer, choose};
use super::sk::Protection;
use super::ts;
mod create;

use super::wire::{
    AuthMethod, Delete, ExchangeType, Header, Id, Message, Notify, NotifyType, Payload, Proposal,
    ProtocolId, TrafficSelector, VERSION, find_notify, flags,
};

/// The IKE port and the NAT-T port (RFC 7296 §2.23, RFC 3948).
pub const IKE_PORT: u16 = 500;
pub const NATT_PORT: u16 = 4500;

/// Bytes of our nonces (RFC 7296 §2.10: at least half the PRF's key size, 16 to 256).
const NONCE_LEN: usize = 32;

/// Random bytes from the system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SystemRandom reads getrandom(2), which does not fail once the pool is initialised
    if SystemRandom::new().fill(&mut b).is_err() {
        tracing::error!("the system random generator failed");
    }
    b
}

/// When to rekey an SA made `now` with lifetime `t`: a little early, spread (strongSwan's
/// rand_time), 0-10 % before, so that two ends with the same settings rarely start the same
/// rekey at once.
pub(crate) fn rekey_time(now: Instant, t: Duration) -> Instant {
    let jitter = u64::from(random_bytes::<1>()[0]) * t.as_millis() as u64 / 2550;
    now + t - Duration::from_millis(jitter)
}

/// Where inbound SPIs come from: xsecd's `alloc-spi` in the daemon, random numbers in
/// tests. `None` means none could be had (the exchange then fails with
/// TEMPORARY_FAILURE / NO_ADDITIONAL_SAS instead of inventing one).
pub trait SpiSource {
    fn inbound_spi(&mut self) -> Option<u32>;
}

/// Random SPIs above the reserved range (RFC 4303 §2.1: 1-255 are reserved).
#[derive(Debug, Default)]
pub struct RandomSpis;

impl SpiSource for RandomSpis {
    fn inbound_spi(&mut self) -> Option<u32> {
        loop {
            let s = u32::from_be_bytes(random_bytes::<4>());
            if s > 255 {
                return Some(s);
            }
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The IKE message (the driver adds the non-ESP marker on port 4500).
    pub data: Vec<u8>,
}

/// One direction's ESP keys.
pub struct EspKeys {
    pub encr: Secret,
    pub integ: Secret,
}

impl std::fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EspKeys {{ encr_len: {}, integ_len: {} }}",
            self.encr.len(),
            self.integ.len()
        )
    }
}

/// Everything the driver needs to install a Child SA pair and its policies in xsecd.
#[derive(Debug)]
pub struct ChildSaUp {
    pub ike: u64,
    pub conn: String,
    pub child: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub alg: Chosen,
    pub mode: Mode,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// UDP-encapsulated ESP (RFC 3948) on the IKE SA's ports.
    pub encap: bool,
    /// A NAT is in front of us: send NAT keepalives to hold its mapping.
    pub keepalive: bool,
    pub keys_in: EspKeys,
    pub keys_out: EspKeys,
    /// The inbound SPI of the Child SA this one replaces (a rekey).
    pub replaces: Option<u32>,
    /// Install the outbound SA now (the traffic moves to it). `false` for the responder
    /// of a rekey: [`Event::ChildSwitch`] says when.
    pub outbound_now: bool,
}

/// Why an SA went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// We deleted it (terminate, rekey, lifetime).
    Local(&'static str),
    /// The peer deleted it.
    PeerDeleted,
    /// Our requests went unanswered.
    Timeout,
    /// DPD found the peer dead.
    DeadPeer,
    /// The peer answered with an error notify.
    PeerError(NotifyType),
    /// Our check of the peer failed.
    Failed(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Local(s) => write!(f, "{s}"),
            Reason::PeerDeleted => f.write_str("deleted by the peer"),
            Reason::Timeout => f.write_str("peer not answering (retransmits exhausted)"),
            Reason::DeadPeer => f.write_str("dead peer detected"),
            Reason::PeerError(n) => write!(f, "peer answered {n}"),
            Reason::Failed(s) => f.write_str(s),
        }
    }
}

/// What happened, for the driver (install/remove SAs, log, restart).
#[derive(Debug)]
pub enum Event {
    IkeUp {
        ike: u64,
        conn: String,
        peer_id: String,
        alg: Chosen,
        local: SocketAddr,
        remote: SocketAddr,
    },
    IkeDown {
        ike: u64,
        conn: String,
        reason: Reason,
    },
    ChildUp(Box<ChildSaUp>),
    /// Move the outbound traffic to this Child SA (installed earlier without it); the
    /// outbound SA of `old_spi_out` goes.
    ChildSwitch {
        ike: u64,
        spi_in: u32,
        old_spi_out: Option<u32>,
    },
    ChildDown {
        ike: u64,
        conn: String,
        child: String,
        spi_in: u32,
        spi_out: u32,
        reason: Reason,
    },
    ChildFailed {
        ike: u64,
        conn: String,
        child: String,
        reason: Reason,
    },
    /// The IKE SA was rekeyed: its Child SAs now belong to `new`.
    IkeRekeyed {
        old: u64,
        new: u64,
        conn: String,
    },
    /// The peer authenticated with INITIAL_CONTACT: our other IKE SAs with it are stale
    /// (the endpoint removes them without a DELETE, RFC 7296 §2.4).
    InitialContact {
        ike: u64,
        conn: String,
        peer_id: String,
    },
    /// Time to authenticate again: the endpoint starts the IKE SA that replaces this one.
    Reauth {
        ike: u64,
    },
    /// The peer moved (NAT mapping changed; seen in an authenticated message).
    PeerMoved {
        ike: u64,
        remote: SocketAddr,
    },
}

/// Counters of messages the SA dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct SaStats {
    pub retransmits_sent: u64,
    pub retransmits_answered: u64,
    pub dropped_integrity: u64,
    pub dropped_message_id: u64,
    pub dropped_malformed: u64,
}

/// The world an SA acts in for one call: time, connections, SPIs, and the queues.
#[allow(missing_debug_implementations)]
pub struct Ctx<'a> {
    pub now: Instant,
    pub conns: &'a [Arc<Connection>],
    pub timing: &'a Timing,
    pub spis: &'a mut dyn SpiSource,
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
    /// IKE SAs born of a rekey, for the endpoint to take in.
    pub new_sas: &'a mut Vec<IkeSa>,
}

/// A Child SA as the IKE SA keeps it.
#[derive(Debug, Clone)]
pub struct Child {
    pub cfg: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub alg: Chosen,
    pub mode: Mode,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub created: Instant,
    /// When to rekey it (the child's `rekey_time`), and when it dies (`life_time`).
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// Responder of its rekey: the outbound SA is not switched to it until the peer
    /// deletes the old Child SA (this inbound SPI) or the deadline passes.
    pub switch_from: Option<(u32, Instant)>,
    /// A rekey of it is under way.
    pub rekeying: bool,
}

/// The Child SA the initiator offers in IKE_AUTH.
#[derive(Debug, Clone)]
struct ChildOffer {
    cfg: String,
    spi_in: u32,
    suites: Vec<Suite>,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
    mode: Mode,
}

impl ChildOffer {
    /// The SA payload offering our suites, with our inbound SPI.
    fn sa_payload(&self) -> Payload {
        Payload::Sa(
            self.suites
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.proposal(
                        i as u8 + 1,
                        ProtocolId::ESP,
                        self.spi_in.to_be_bytes().to_vec(),
                    )
                })
                .collect(),
        )
    }
}

/// What our outstanding request was.
#[derive(Debug)]
enum Request {
    Init {
        ke: KeyPair,
        cookie: Option<Vec<u8>>,
    },
    Auth {
        child: Option<ChildOffer>,
    },
    Informational {
        what: Info,
    },
    Create(create::Create),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Info {
    Dpd,
    DeleteIke,
    DeleteChild,
}

#[derive(Debug)]
struct Pending {
    id: u32,
    bytes: Vec<u8>,
    sent: u32,
    next: Instant,
    req: Request,
}

/// Where the IKE SA is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitAnswered,
    Established,
    /// Our DELETE of the IKE SA is outstanding.
    Deleting,
    Dead,
}

/// Keys and nonces of an IKE SA once IKE_SA_INIT is through.
struct Secrets {
    prf: Prf,
    d: Secret,
    pi: Secret,
    pr: Secret,
    prot: Protection,
}

pub struct IkeSa {
    pub conn: Arc<Connection>,
    /// We are the original initiator.
    pub initiator: bool,
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: State,
    pub alg: Option<Chosen>,
    /// A NAT was detected in front of us / the peer.
    pub nat_local: bool,
    pub nat_remote: bool,
    pub peer_id: Option<Id>,
    pub children: Vec<Child>,
    pub stats: SaStats,
    pub created: Instant,
    pub last_heard: Instant,
    secrets: Option<Secrets>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The IKE_SA_INIT request and response as sent (the AUTH payloads sign them).
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    next_request: u32,
    peer_next: u32,
    pending: Option<Pending>,
    /// Our last response: (message ID, bytes), answered again to a retransmitted request.
    cached: Option<(u32, Vec<u8>)>,
    /// The child whose Child SA rides in IKE_AUTH.
    initial_child: Option<String>,
    /// Rekeyed or deleted Child SAs kept until the time given, for packets in flight.
    retiring: Vec<(Child, Instant)>,
    /// Work waiting for the request window (one exchange at a time).
    queue: VecDeque<create::Task>,
    /// Peer rekeys of our Child SAs answered while our own rekey of the same one was
    /// outstanding (RFC 7296 §2.8.1): old inbound SPI -> (the new inbound SPI, the lowest
    /// nonce of that exchange).
    collisions: std::collections::HashMap<u32, (u32, Vec<u8>)>,
    /// When to rekey the IKE SA.
    pub rekey_at: Option<Instant>,
    /// Replaced by a rekey: its deletion is no failure.
    rekeyed: bool,
    /// Send INITIAL_CONTACT in IKE_AUTH (the endpoint clears it when another IKE SA with
    /// the peer exists).
    pub send_initial_contact: bool,
    /// When to authenticate again (a new IKE SA replaces this one).
    pub reauth_at: Option<Instant>,
    /// The IKE SA this one reauthenticates: deleted once this one has its Child SAs.
    pub replaces: Option<u64>,
    /// Why we are deleting it (said when the peer's answer comes).
    closing: Option<&'static str>,
    /// The group an INVALID_KE_PAYLOAD answer names.
    wanted_group: Option<Group>,
    /// The IKE SA our answer to a rekey created, handed to the endpoint after the answer.
    successor_out: Option<Box<IkeSa>>,
}

impl std::fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSa")
            .field("conn", &self.conn.name)
            .field("initiator", &self.initiator)
            .field("spi_i", &hex::encode(self.spi_i))
            .field("spi_r", &hex::encode(self.spi_r))
            .field("state", &self.state)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

/// The NAT_DETECTION_*_IP hash: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 §2.23).
pub fn nat_hash(spi_i: &[u8; 8], spi_r: &[u8; 8], addr: SocketAddr) -> Vec<u8> {
    let mut h = sha1::Sha1::new();
    h.update(spi_i);
    h.update(spi_r);
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

fn notify_of(payloads: &[Payload]) -> impl Iterator<Item = &Notify> {
    payloads.iter().filter_map(|p| match p {
        Payload::Notify(n) => Some(n),
        _ => None,
    })
}

/// The KE payload's group and data.
fn kex(p: &[Payload]) -> Option<(u16, &Vec<u8>)> {
    p.iter().find_map(|x| match x {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    })
}

fn nonce_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|x| match x {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

/// The SA payload's proposals, the KE payload's (group, data), the Nonce.
type SaKeNonce<'a> = (&'a Vec<Proposal>, (u16, &'a Vec<u8>), &'a Vec<u8>);

/// The SA, KE and Nonce payloads of an exchange that makes an IKE SA (IKE_SA_INIT, an IKE
/// SA rekey).
fn sa_ke_nonce(p: &[Payload]) -> Option<SaKeNonce<'_>> {
    let sa = p.iter().find_map(|x| match x {
        Payload::Sa(s) => Some(s),
        _ => None,
    })?;
    Some((sa, kex(p)?, nonce_of(p)?))
}

/// The identity (IDi from the initiator, else IDr) and AUTH payloads of an IKE_AUTH message.
fn id_and_auth(p: &[Payload], initiator: bool) -> Option<(&Id, AuthMethod, &Vec<u8>)> {
    let mut id = None;
    let mut auth = None;
    for x in p {
        match x {
            Payload::IdI(i) if initiator => id = Some(i),
            Payload::IdR(i) if !initiator => id = Some(i),
            Payload::Auth { method, data } => auth = Some((*method, data)),
            _ => {}
        }
    }
    let (method, data) = auth?;
    Some((id?, method, data))
}

/// The SA, TSi and TSr payloads of a Child SA request or answer.
fn child_payloads(
    p: &[Payload],
) -> Option<(&Vec<Proposal>, &Vec<TrafficSelector>, &Vec<TrafficSelector>)> {
    let mut sa = None;
    let mut tsi = None;
    let mut tsr = None;
    for x in p {
        match x {
            Payload::Sa(s) => sa = Some(s),
            Payload::TsI(t) => tsi = Some(t),
            Payload::TsR(t) => tsr = Some(t),
            _ => {}
        }
    }
    Some((sa?, tsi?, tsr?))
}

fn first_error(payloads: &[Payload]) -> Option<NotifyType> {
    notify_of(payloads).map(|n| n.ty).find(|t| t.is_error())
}

/// The suites of a child with their groups removed: the Child SA of IKE_AUTH has no KE
/// (RFC 7296 §1.2), whatever PFS the rekeys will use.
fn without_groups(s: &[Suite]) -> Vec<Suite> {
    s.iter()
        .map(|s| Suite {
            groups: vec![],
            ..s.clone()
        })
        .collect()
}

fn child_keymat(
    prf: Prf,
    d: &[u8],
    alg: &Chosen,
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    initiator: bool,
) -> Result<(EspKeys, EspKeys), String> {
    let e = alg.encr.keymat_len();
    let i = alg.integ.map(Integ::key_len).unwrap_or(0);
    let km = prf
        .child_keymat(d, g_ir, ni, nr, 2 * (e + i))
        .map_err(|e| e.to_string())?;
    let take = |at: usize, n: usize| Zeroizing::new(km[at..at + n].to_vec());
    let i_to_r = EspKeys {
        encr: take(0, e),
        integ: take(e, i),
    };
    let r_to_i = EspKeys {
        encr: take(e + i, e),
        integ: take(2 * e + i, i),
    };
    Ok(if initiator {
        (r_to_i, i_to_r)
    } else {
        (i_to_r, r_to_i)
    })
}

impl IkeSa {
    /// The SA's handle in the endpoint: our own SPI.
    pub fn id(&self) -> u64 {
        u64::from_be_bytes(if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        })
    }

    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        let mut f = 0;
        if self.initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: super::wire::PayloadType::NONE,
            version: VERSION,
            exchange,
            flags: f,
            message_id,
            length: 0,
        }
    }

    fn send(&self, ctx: &mut Ctx<'_>, data: Vec<u8>) {
        ctx.transmits.push_back(Transmit {
            local: self.local,
            remote: self.remote,
            data,
        });
    }

    fn use_natt_ports(&mut self) {
        if self.local.port() == IKE_PORT {
            self.local.set_port(NATT_PORT);
        }
        if self.remote.port() == IKE_PORT {
            self.remote.set_port(NATT_PORT);
        }
    }

    /// ESP is UDP-encapsulated when a NAT was detected, or when the peer moved IKE to
    /// port 4500 without one (strongSwan's kernel-libipsec always encapsulates).
    pub fn encap(&self) -> bool {
        self.nat_local || self.nat_remote || self.remote.port() != IKE_PORT
    }

    /// A new IKE SA before IKE_SA_INIT: `[spi_i, spi_r]`, `(local, remote)`; the original
    /// initiator's waits for the response (InitSent), the responder's for IKE_AUTH.
    fn fresh(
        conn: Arc<Connection>,
        initiator: bool,
        [spi_i, spi_r]: [[u8; 8]; 2],
        (local, remote): (SocketAddr, SocketAddr),
        now: Instant,
    ) -> IkeSa {
        IkeSa {
            conn,
            initiator,
            spi_i,
            spi_r,
            local,
            remote,
            state: if initiator {
                State::InitSent
            } else {
                State::InitAnswered
            },
            alg: None,
            nat_local: false,
            nat_remote: false,
            peer_id: None,
            children: vec![],
            stats: SaStats::default(),
            created: now,
            last_heard: now,
            secrets: None,
            ni: vec![],
            nr: vec![],
            msg1: vec![],
            msg2: vec![],
            next_request: 0,
            peer_next: 0,
            pending: None,
            cached: None,
            initial_child: None,
            retiring: vec![],
            queue: VecDeque::new(),
            collisions: Default::default(),
            rekey_at: None,
            rekeyed: false,
            wanted_group: None,
            successor_out: None,
            send_initial_contact: true,
            reauth_at: None,
            replaces: None,
            closing: None,
        }
    }

    // ---- initiator -------------------------------------------------------------------

    /// Start an IKE SA for `conn` (with its first child, if it has one).
    pub fn initiate(
        conn: Arc<Connection>,
        first_child: Option<&str>,
        local: SocketAddr,
        remote: SocketAddr,
        ctx: &mut Ctx<'_>,
    ) -> Result<IkeSa, String> {
        let group = conn
            .ike
            .first()
            .and_then(|s| s.groups.first())
            .copied()
            .ok_or("the connection has no IKE proposal")?;
        let ke = KeyPair::generate(group).map_err(|e| e.to_string())?;
        // the child asked for, else the first one that starts with its connection, else
        // the first one
        let initial_child = first_child
            .map(str::to_owned)
            .or_else(|| {
                conn.children
                    .iter()
                    .find(|c| c.auto_start)
                    .map(|c| c.name.clone())
            })
            .or_else(|| conn.children.first().map(|c| c.name.clone()));
        let mut sa = IkeSa::fresh(
            conn,
            true,
            [random_bytes(), [0; 8]],
            (local, remote),
            ctx.now,
        );
        sa.ni = random_bytes::<NONCE_LEN>().to_vec();
        sa.initial_child = initial_child;
        sa.send_init(ke, None, ctx);
        Ok(sa)
    }

    fn send_init(&mut self, ke: KeyPair, cookie: Option<Vec<u8>>, ctx: &mut Ctx<'_>) {
        let mut p = vec![];
        if let Some(c) = &cookie {
            p.push(Payload::Notify(Notify::new(NotifyType::COOKIE, c.clone())));
        }
        // the group of the KE payload first in each proposal's list
        let props = self
            .conn
            .ike
            .iter()
            .enumerate()
            .map(|(i, s)| s.proposal(i as u8 + 1, ProtocolId::IKE, vec![]))
            .collect();
        p.push(Payload::Sa(props));
        p.push(Payload::Ke {
            group: ke.group().id(),
            data: ke.public().to_vec(),
        });
        p.push(Payload::Nonce(self.ni.clone()));
        p.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            nat_hash(&self.spi_i, &[0; 8], self.local),
        )));
        p.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(&self.spi_i, &[0; 8], self.remote),
        )));
        let bytes = Message::encode(&self.header(ExchangeType::IKE_SA_INIT, false, 0), &p);
        self.msg1 = bytes.clone();
        self.next_request = 1;
        self.start_request(0, bytes, Request::Init { ke, cookie }, ctx);
    }

    fn start_request(&mut self, id: u32, bytes: Vec<u8>, req: Request, ctx: &mut Ctx<'_>) {
        self.send(ctx, bytes.clone());
        self.pending = Some(Pending {
            id,
            bytes,
            sent: 1,
            next: ctx.now + ctx.timing.backoff(0),
            req,
        });
    }

    /// Send a protected request (window size 1: only when none is outstanding).
    fn request(
        &mut self,
        exchange: ExchangeType,
        inner: &[Payload],
        req: Request,
        ctx: &mut Ctx<'_>,
    ) {
        let id = self.next_request;
        let h = self.header(exchange, false, id);
        let Some(s) = self.secrets.as_mut() else {
            return;
        };
        match s.prot.seal(&h, inner) {
            Ok(bytes) => {
                self.next_request = id.wrapping_add(1);
                self.start_request(id, bytes, req, ctx);
            }
            Err(e) => tracing::error!(ike = self.id(), "cannot protect a request: {e}"),
        }
    }

    fn respond(&mut self, exchange: ExchangeType, id: u32, inner: &[Payload], ctx: &mut Ctx<'_>) {
        let h = self.header(exchange, true, id);
        let Some(s) = self.secrets.as_mut() else {
            return;
        };
        match s.prot.seal(&h, inner) {
            Ok(bytes) => {
                self.send(ctx, bytes.clone());
                self.cached = Some((id, bytes));
            }
            Err(e) => tracing::error!(ike = self.id(), "cannot protect a response: {e}"),
        }
    }

    /// Drop the IKE SA and its Child SAs without telling the peer.
    pub fn forget(&mut self, reason: Reason, ctx: &mut Ctx<'_>) {
        self.fail(reason, ctx);
    }

    fn fail(&mut self, reason: Reason, ctx: &mut Ctx<'_>) {
        let retiring: Vec<Child> = self.retiring.drain(..).map(|(c, _)| c).collect();
        for c in std::mem::take(&mut self.children)
            .into_iter()
            .chain(retiring)
        {
            ctx.events.push_back(self.child_down(c, reason.clone()));
        }
        if self.state != State::Dead {
            ctx.events.push_back(Event::IkeDown {
                ike: self.id(),
                conn: self.conn.name.clone(),
                reason,
            });
        }
        self.state = State::Dead;
        self.pending = None;
    }

    fn on_init_response(&mut self, msg: &Message, bytes: &[u8], ctx: &mut Ctx<'_>) {
        let Some(Pending {
            req: Request::Init { ke, cookie },
            ..
        }) = self.pending.take()
        else {
            return;
        };
        let p = &msg.payloads;
        if let Some(n) = find_notify(p, NotifyType::COOKIE) {
            if cookie.is_some() || n.data.is_empty() || n.data.len() > 64 {
                return self.fail(Reason::Failed("a second COOKIE".into()), ctx);
            }
            tracing::info!(
                ike = self.id(),
                "the responder asks for a COOKIE; sending it"
            );
            return self.send_init(ke, Some(n.data.clone()), ctx);
        }
        if let Some(n) = find_notify(p, NotifyType::INVALID_KE_PAYLOAD) {
            let asked = (n.data.len() == 2)
                .then(|| u16::from_be_bytes([n.data[0], n.data[1]]))
                .and_then(Group::from_id);
            let ours = self
                .conn
                .ike
                .iter()
                .any(|s| asked.is_some_and(|g| s.groups.contains(&g)));
            match asked {
                Some(g) if ours && g != ke.group() => {
                    tracing::info!(
                        ike = self.id(),
                        "the responder asks for group {}; retrying",
                        g.id()
                    );
                    match KeyPair::generate(g) {
                        Ok(k) => return self.send_init(k, cookie, ctx),
                        Err(e) => return self.fail(Reason::Failed(e.to_string()), ctx),
                    }
                }
                _ => {
                    return self.fail(Reason::PeerError(NotifyType::INVALID_KE_PAYLOAD), ctx);
                }
            }
        }
        if let Some(e) = first_error(p) {
            return self.fail(Reason::PeerError(e), ctx);
        }
        if msg.header.spi_r == [0; 8] {
            return self.fail(Reason::Failed("responder SPI is zero".into()), ctx);
        }
        let Some((props, (group, kdata), nr)) = sa_ke_nonce(p) else {
            return self.fail(
                Reason::Failed("IKE_SA_INIT response lacks SA, KE or Nonce".into()),
                ctx,
            );
        };
        let Some(alg) = check_answer(&self.conn.ike, props, ProtocolId::IKE) else {
            return self.fail(
                Reason::Failed("the responder chose a proposal we did not offer".into()),
                ctx,
            );
        };
        if alg.group != Some(ke.group()) || group != ke.group().id() {
            return self.fail(
                Reason::Failed("the responder's KE group is not the one chosen".into()),
                ctx,
            );
        }
        self.spi_r = msg.header.spi_r;
        self.nr = nr.clone();
        self.msg2 = bytes.to_vec();
        if let Err(e) = self.derive(&ke, kdata, alg) {
            return self.fail(Reason::Failed(e), ctx);
        }
        self.detect_nat(p);
        if self.encap() {
            self.use_natt_ports();
        }
        self.state = State::AuthSent;
        self.send_auth(ctx);
    }

    fn derive(&mut self, ke: &KeyPair, peer: &[u8], alg: Chosen) -> Result<(), String> {
        let g = ke.shared(peer).map_err(|e| e.to_string())?;
        let prf = alg.prf.ok_or("no PRF chosen")?;
        let seed = prf.skeyseed(&self.ni, &self.nr, &g);
        let keys = prf
            .ike_keys(
                &seed,
                &self.ni,
                &self.nr,
                [self.spi_i, self.spi_r],
                KeyLengths {
                    integ: alg.integ.map(Integ::key_len).unwrap_or(0),
                    encr: alg.encr.keymat_len(),
                },
            )
            .map_err(|e| e.to_string())?;
        let prot = Protection::new(alg.encr, alg.integ, &keys, self.initiator);
        self.secrets = Some(Secrets {
            prf,
            d: Zeroizing::new(keys.d.to_vec()),
            pi: Zeroizing::new(keys.pi.to_vec()),
            pr: Zeroizing::new(keys.pr.to_vec()),
            prot,
        });
        self.alg = Some(alg);
        Ok(())
    }

    /// Compare the peer's NAT_DETECTION hashes with what we see (RFC 7296 §2.23).
    fn detect_nat(&mut self, p: &[Payload]) {
        let spi_r = if self.initiator { self.spi_r } else { [0; 8] };
        let src: Vec<&Notify> = notify_of(p)
            .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
            .collect();
        let dst = find_notify(p, NotifyType::NAT_DETECTION_DESTINATION_IP);
        if src.is_empty() || dst.is_none() {
            return;
        }
        let them = nat_hash(&self.spi_i, &spi_r, self.remote);
        self.nat_remote = !src.iter().any(|n| n.data == them);
        let us = nat_hash(&self.spi_i, &spi_r, self.local);
        self.nat_local = dst.is_some_and(|n| n.data != us);
    }

    fn child_offer(&self, cfg: &ChildConfig, ctx: &mut Ctx<'_>) -> Option<ChildOffer> {
        let spi_in = ctx.spis.inbound_spi()?;
        Some(ChildOffer {
            cfg: cfg.name.clone(),
            spi_in,
            suites: without_groups(&cfg.esp),
            tsi: cfg.local_ts.clone(),
            tsr: cfg.remote_ts.clone(),
            mode: cfg.mode,
        })
    }

    fn send_auth(&mut self, ctx: &mut Ctx<'_>) {
        let id = self.conn.local_id.clone();
        let Some(s) = self.secrets.as_ref() else {
            return;
        };
        let body = id.body();
        let auth = psk_auth(
            s.prf,
            &self.conn.psk,
            SignedOctets {
                real_message: &self.msg1,
                peer_nonce: &self.nr,
                sk_p: &s.pi,
                id_body: &body,
            },
        );
        let mut p = vec![Payload::IdI(id)];
        if self.send_initial_contact {
            p.push(Payload::Notify(Notify::new(
                NotifyType::INITIAL_CONTACT,
                vec![],
            )));
        }
        if let Some(r) = &self.conn.remote_id {
            p.push(Payload::IdR(r.clone()));
        }
        p.push(Payload::Auth {
            method: AuthMethod::SHARED_KEY_MIC,
            data: auth.to_vec(),
        });
        let cfg = self
            .initial_child
            .as_ref()
            .and_then(|n| self.conn.children.iter().find(|c| &c.name == n))
            .cloned();
        let offer = cfg.and_then(|c| self.child_offer(&c, ctx));
        if let Some(o) = &offer {
            if o.mode == Mode::Transport {
                p.push(Payload::Notify(Notify::new(
                    NotifyType::USE_TRANSPORT_MODE,
                    vec![],
                )));
            }
            p.push(o.sa_payload());
            p.push(Payload::TsI(o.tsi.clone()));
            p.push(Payload::TsR(o.tsr.clone()));
        }
        self.request(
            ExchangeType::IKE_AUTH,
            &p,
            Request::Auth { child: offer },
            ctx,
        );
    }

    fn on_auth_response(&mut self, p: &[Payload], ctx: &mut Ctx<'_>) {
        let Some(Pending {
            req: Request::Auth { child },
            ..
        }) = self.pending.take()
        else {
            return;
        };
        let Some((idr, method, data)) = id_and_auth(p, false) else {
            let e = first_error(p).unwrap_or(NotifyType::AUTHENTICATION_FAILED);
            return self.fail(Reason::PeerError(e), ctx);
        };
        if !self.conn.matches_peer(idr) {
            return self.fail(
                Reason::Failed(format!(
                    "the responder is {idr}, not the configured identity"
                )),
                ctx,
            );
        }
        let Some(s) = self.secrets.as_ref() else {
            return;
        };
        let body = idr.body();
        let ok = method == AuthMethod::SHARED_KEY_MIC
            && psk_verify(
                s.prf,
                &self.conn.psk,
                SignedOctets {
                    real_message: &self.msg2,
                    peer_nonce: &self.ni,
                    sk_p: &s.pr,
                    id_body: &body,
                },
                data,
            );
        if !ok {
            return self.fail(
                Reason::Failed(format!("the responder {idr} failed authentication")),
                ctx,
            );
        }
        self.peer_id = Some(idr.clone());
        self.establish(ctx);
        let Some(offer) = child else { return };
        match self.accept_child_answer(&offer, p) {
            Ok(child) => {
                let (ni, nr) = (self.ni.clone(), self.nr.clone());
                self.child_up(child, None, (&ni, &nr), true, None, true, ctx)
            }
            Err(reason) => {
                ctx.events.push_back(Event::ChildFailed {
                    ike: self.id(),
                    conn: self.conn.name.clone(),
                    child: offer.cfg.clone(),
                    reason,
                });
            }
        }
    }

    fn establish(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Established;
        self.msg1 = vec![];
        self.msg2 = vec![];
        self.rekey_at = self.conn.rekey_time.map(|t| rekey_time(ctx.now, t));
        // only a side that can reach the peer authenticates again
        self.reauth_at = self
            .conn
            .reauth_time
            .filter(|_| self.conn.remote_addr.is_some())
            .map(|t| ctx.now + t);
        // the other children that start with the connection follow in CREATE_CHILD_SA
        if self.initiator {
            for c in self.conn.children.iter().filter(|c| c.auto_start) {
                let t = create::Task::NewChild(c.name.clone());
                if self.initial_child.as_deref() != Some(c.name.as_str())
                    && !self.queue.contains(&t)
                {
                    self.queue.push_back(t);
                }
            }
        }
        if let Some(alg) = self.alg {
            ctx.events.push_back(Event::IkeUp {
                ike: self.id(),
                conn: self.conn.name.clone(),
                peer_id: self
                    .peer_id
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                alg,
                local: self.local,
                remote: self.remote,
            });
        }
    }

    /// Check the responder's Child SA: one proposal of ours, its SPI, selectors within
    /// ours, the mode we asked for.
    fn accept_child_answer(&self, o: &ChildOffer, p: &[Payload]) -> Result<Child, Reason> {
        if let Some(e) = first_error(p) {
            return Err(Reason::PeerError(e));
        }
        let Some((props, tsi, tsr)) = child_payloads(p) else {
            return Err(Reason::Failed("no Child SA in the answer".into()));
        };
        let alg = check_answer(&o.suites, props, ProtocolId::ESP).ok_or_else(|| {
            Reason::Failed("the responder chose an ESP proposal we did not offer".into())
        })?;
        let spi_out = match props[0].spi.as_slice() {
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => {
                return Err(Reason::Failed(
                    "the responder's ESP SPI is not 4 bytes".into(),
                ));
            }
        };
        if !ts::within(tsi, &o.tsi) || !ts::within(tsr, &o.tsr) {
            return Err(Reason::Failed(
                "the responder's traffic selectors are wider than ours".into(),
            ));
        }
        let transport = find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        if transport != (o.mode == Mode::Transport) {
            return Err(Reason::Failed(
                "the responder did not accept the mode".into(),
            ));
        }
        Ok(Child {
            cfg: o.cfg.clone(),
            spi_in: o.spi_in,
            spi_out,
            alg,
            mode: o.mode,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            created: Instant::now(),
            rekey_at: None,
            expire_at: None,
            switch_from: None,
            rekeying: false,
        })
    }

    /// Derive a Child SA's keys, keep it and tell the driver.
    /// Derive a Child SA's keys (from the nonces of the exchange that made it, and its new
    /// Diffie-Hellman secret if it had one), keep it and tell the driver. `we_initiated`:
    /// we were the initiator of that exchange (RFC 7296 §2.17: its keys come first).
    #[allow(clippy::too_many_arguments)]
    fn child_up(
        &mut self,
        mut child: Child,
        g_ir: Option<&[u8]>,
        (ni, nr): (&[u8], &[u8]),
        we_initiated: bool,
        replaces: Option<u32>,
        outbound_now: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(s) = self.secrets.as_ref() else {
            return;
        };
        child.created = ctx.now;
        if let Some(cfg) = self.conn.children.iter().find(|c| c.name == child.cfg) {
            child.rekey_at = cfg.rekey_time.map(|t| rekey_time(ctx.now, t));
            child.expire_at = cfg.life_time.map(|t| ctx.now + t);
        }
        let (keys_in, keys_out) =
            match child_keymat(s.prf, &s.d, &child.alg, g_ir, ni, nr, we_initiated) {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(ike = self.id(), "child keys: {e}");
                    return;
                }
            };
        ctx.events.push_back(Event::ChildUp(Box::new(ChildSaUp {
            ike: self.id(),
            conn: self.conn.name.clone(),
            child: child.cfg.clone(),
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            alg: child.alg,
            mode: child.mode,
            local_ts: child.local_ts.clone(),
            remote_ts: child.remote_ts.clone(),
            local: self.local,
            remote: self.remote,
            encap: self.encap(),
            keepalive: self.nat_local,
            keys_in,
            keys_out,
            replaces,
            outbound_now,
        })));
        self.children.push(child);
    }

    // ---- responder -------------------------------------------------------------------

    /// Answer an IKE_SA_INIT request that passed the endpoint's cookie check; `Err` holds
    /// the unprotected error response to send instead (no state is kept then).
    pub fn respond_init(
        conn: Arc<Connection>,
        msg: &Message,
        bytes: &[u8],
        local: SocketAddr,
        remote: SocketAddr,
        ctx: &mut Ctx<'_>,
    ) -> Result<IkeSa, Vec<u8>> {
        let h = msg.header;
        let err = |ty: NotifyType, data: Vec<u8>| -> Vec<u8> {
            let hdr = Header {
                spi_r: [0; 8],
                flags: flags::RESPONSE,
                ..h
            };
            Message::encode(&hdr, &[Payload::Notify(Notify::new(ty, data))])
        };
        let Some((props, (group, kdata), ni)) = sa_ke_nonce(&msg.payloads) else {
            return Err(err(NotifyType::INVALID_SYNTAX, vec![]));
        };
        // prefer a proposal whose group is the KE payload's (saves a round trip)
        let with_ke = super::proposal::with_group(&conn.ike, group);
        let chosen = choose(&with_ke, props, ProtocolId::IKE)
            .or_else(|| choose(&conn.ike, props, ProtocolId::IKE));
        let Some((prop, alg)) = chosen else {
            return Err(err(NotifyType::NO_PROPOSAL_CHOSEN, vec![]));
        };
        let Some(g) = alg.group else {
            return Err(err(NotifyType::NO_PROPOSAL_CHOSEN, vec![]));
        };
        if g.id() != group {
            return Err(err(
                NotifyType::INVALID_KE_PAYLOAD,
                g.id().to_be_bytes().to_vec(),
            ));
        }
        let ke = KeyPair::generate(g).map_err(|_| err(NotifyType::TEMPORARY_FAILURE, vec![]))?;
        let mut ike = IkeSa::fresh(
            conn,
            false,
            [h.spi_i, random_bytes()],
            (local, remote),
            ctx.now,
        );
        ike.ni = ni.clone();
        ike.nr = random_bytes::<NONCE_LEN>().to_vec();
        ike.msg1 = bytes.to_vec();
        ike.peer_next = 1;
        if ike.derive(&ke, kdata, alg).is_err() {
            return Err(err(NotifyType::INVALID_SYNTAX, vec![]));
        }
        ike.detect_nat(&msg.payloads);
        let p = vec![
            Payload::Sa(vec![alg.proposal(prop.num, ProtocolId::IKE, vec![])]),
            Payload::Ke {
                group: g.id(),
                data: ke.public().to_vec(),
            },
            Payload::Nonce(ike.nr.clone()),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                nat_hash(&ike.spi_i, &ike.spi_r, local),
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(&ike.spi_i, &ike.spi_r, remote),
            )),
        ];
        let out = Message::encode(&ike.header(ExchangeType::IKE_SA_INIT, true, 0), &p);
        ike.msg2 = out.clone();
        ike.send(ctx, out.clone());
        ike.cached = Some((0, out));
        Ok(ike)
    }

    fn on_auth_request(&mut self, id: u32, p: &[Payload], ctx: &mut Ctx<'_>) {
        let Some((idi, method, data)) = id_and_auth(p, true) else {
            self.respond(
                ExchangeType::IKE_AUTH,
                id,
                &[Payload::Notify(Notify::new(
                    NotifyType::AUTHENTICATION_FAILED,
                    vec![],
                ))],
                ctx,
            );
            return self.fail(Reason::Failed("IKE_AUTH without IDi or AUTH".into()), ctx);
        };
        // the connection: this one or another for the same addresses whose peer ID matches
        let alg = self.alg;
        let conn = ctx
            .conns
            .iter()
            .filter(|c| c.matches_addrs(self.local.ip(), self.remote.ip()) && c.matches_peer(idi))
            .find(|c| {
                alg.is_some_and(|a| {
                    check_answer(
                        &c.ike,
                        &[a.proposal(1, ProtocolId::IKE, vec![])],
                        ProtocolId::IKE,
                    )
                    .is_some()
                })
            })
            .cloned();
        let verified = match (&conn, self.secrets.as_ref()) {
            (Some(c), Some(s)) => {
                let body = idi.body();
                method == AuthMethod::SHARED_KEY_MIC
                    && psk_verify(
                        s.prf,
                        &c.psk,
                        SignedOctets {
                            real_message: &self.msg1,
                            peer_nonce: &self.nr,
                            sk_p: &s.pi,
                            id_body: &body,
                        },
                        data,
                    )
            }
            _ => false,
        };
        let Some(conn) = conn.filter(|_| verified) else {
            tracing::warn!(ike = self.id(), peer = %self.remote, "authentication of {idi} failed");
            self.respond(
                ExchangeType::IKE_AUTH,
                id,
                &[Payload::Notify(Notify::new(
                    NotifyType::AUTHENTICATION_FAILED,
                    vec![],
                ))],
                ctx,
            );
            return self.fail(
                Reason::Failed(format!("peer {idi} failed authentication")),
                ctx,
            );
        };
        self.conn = conn;
        self.peer_id = Some(idi.clone());
        let Some(s) = self.secrets.as_ref() else {
            return;
        };
        let my_id = self.conn.local_id.clone();
        let body = my_id.body();
        let my_auth = psk_auth(
            s.prf,
            &self.conn.psk,
            SignedOctets {
                real_message: &self.msg2,
                peer_nonce: &self.ni,
                sk_p: &s.pr,
                id_body: &body,
            },
        );
        let mut out = vec![
            Payload::IdR(my_id),
            Payload::Auth {
                method: AuthMethod::SHARED_KEY_MIC,
                data: my_auth.to_vec(),
            },
        ];
        let has_child = p.iter().any(|x| matches!(x, Payload::Sa(_)));
        let child = if has_child {
            match self.accept_child_request(p, true, ctx) {
                Ok((child, answer)) => {
                    out.extend(answer);
                    Some(child)
                }
                Err(n) => {
                    out.push(Payload::Notify(Notify::new(n, vec![])));
                    None
                }
            }
        } else {
            None
        };
        self.respond(ExchangeType::IKE_AUTH, id, &out, ctx);
        self.establish(ctx);
        if find_notify(p, NotifyType::INITIAL_CONTACT).is_some() {
            ctx.events.push_back(Event::InitialContact {
                ike: self.id(),
                conn: self.conn.name.clone(),
                peer_id: idi.to_string(),
            });
        }
        if let Some(c) = child {
            let (ni, nr) = (self.ni.clone(), self.nr.clone());
            self.child_up(c, None, (&ni, &nr), false, None, true, ctx);
        }
    }

    /// The responder's choice of a Child SA: a configured child whose selectors intersect
    /// the peer's, whose mode is the one asked for, and whose proposals match. Returns
    /// the child and the payloads that answer it, or the error notify.
    fn accept_child_request(
        &self,
        p: &[Payload],
        first: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(Child, Vec<Payload>), NotifyType> {
        let Some((props, tsi, tsr)) = child_payloads(p) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let transport = find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        let mut any_ts = false;
        for cfg in &self.conn.children {
            // TSi is the initiator's side: our remote
            let ni = ts::narrow(tsi, &cfg.remote_ts);
            let nr = ts::narrow(tsr, &cfg.local_ts);
            if ni.is_empty() || nr.is_empty() {
                continue;
            }
            any_ts = true;
            if transport != (cfg.mode == Mode::Transport) {
                continue;
            }
            let suites = if first {
                without_groups(&cfg.esp)
            } else {
                cfg.esp.clone()
            };
            let Some((prop, alg)) = choose(&suites, props, ProtocolId::ESP) else {
                continue;
            };
            let spi_out = match prop.spi.as_slice() {
                [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                _ => return Err(NotifyType::INVALID_SYNTAX),
            };
            let spi_in = ctx
                .spis
                .inbound_spi()
                .ok_or(NotifyType::TEMPORARY_FAILURE)?;
            let mut answer = vec![];
            if transport {
                answer.push(Payload::Notify(Notify::new(
                    NotifyType::USE_TRANSPORT_MODE,
                    vec![],
                )));
            }
            answer.push(Payload::Sa(vec![alg.proposal(
                prop.num,
                ProtocolId::ESP,
                spi_in.to_be_bytes().to_vec(),
            )]));
            answer.push(Payload::TsI(ni.clone()));
            answer.push(Payload::TsR(nr.clone()));
            return Ok((
                Child {
                    cfg: cfg.name.clone(),
                    spi_in,
                    spi_out,
                    alg,
                    mode: cfg.mode,
                    local_ts: nr,
                    remote_ts: ni,
                    created: ctx.now,
                    rekey_at: None,
                    expire_at: None,
                    switch_from: None,
                    rekeying: false,
                },
                answer,
            ));
        }
        Err(if any_ts {
            NotifyType::NO_PROPOSAL_CHOSEN
        } else {
            NotifyType::TS_UNACCEPTABLE
        })
    }

    // ---- established -----------------------------------------------------------------

    fn on_informational_request(&mut self, id: u32, p: &[Payload], ctx: &mut Ctx<'_>) {
        let mut answer = vec![];
        let mut delete_ike = false;
        for x in p {
            let Payload::Delete(d) = x else { continue };
            match d.protocol {
                ProtocolId::IKE => delete_ike = true,
                ProtocolId::ESP => {
                    let ours: Vec<[u8; 4]> = d
                        .spis
                        .iter()
                        .filter_map(|spi| self.peer_deleted_child(u32::from_be_bytes(*spi), ctx))
                        .collect();
                    if !ours.is_empty() {
                        answer.push(Payload::Delete(Delete {
                            protocol: ProtocolId::ESP,
                            spis: ours,
                        }));
                    }
                }
                _ => {}
            }
        }
        if delete_ike {
            self.respond(ExchangeType::INFORMATIONAL, id, &[], ctx);
            let r = if self.rekeyed {
                Reason::Local("rekeyed")
            } else {
                Reason::PeerDeleted
            };
            return self.fail(r, ctx);
        }
        self.respond(ExchangeType::INFORMATIONAL, id, &answer, ctx);
    }

    /// Handle a message for this SA (already routed by SPI). `bytes` is the whole message.
    pub fn handle(
        &mut self,
        msg: &Message,
        bytes: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        ctx: &mut Ctx<'_>,
    ) {
        let h = msg.header;
        if h.exchange == ExchangeType::IKE_SA_INIT {
            if h.is_response()
                && self.state == State::InitSent
                && self.pending.as_ref().is_some_and(|p| p.id == 0)
            {
                self.last_heard = ctx.now;
                self.on_init_response(msg, bytes, ctx);
            } else if !h.is_response() && h.message_id == 0 {
                // a retransmitted IKE_SA_INIT request
                if let Some((0, b)) = &self.cached {
                    self.stats.retransmits_answered += 1;
                    self.send(ctx, b.clone());
                }
            } else {
                self.stats.dropped_message_id += 1;
            }
            return;
        }
        // message IDs first (cheap), then integrity
        if h.is_response() {
            if self.pending.as_ref().is_none_or(|p| p.id != h.message_id) {
                self.stats.dropped_message_id += 1;
                return;
            }
        } else if h.message_id.wrapping_add(1) == self.peer_next {
            if let Some((id, b)) = &self.cached
                && *id == h.message_id
            {
                self.stats.retransmits_answered += 1;
                let b = b.clone();
                self.send(ctx, b);
            }
            return;
        } else if h.message_id != self.peer_next {
            self.stats.dropped_message_id += 1;
            return;
        }
        let Some(s) = self.secrets.as_ref() else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let Some(sk) = msg.sk else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let inner = match s.prot.open(bytes, sk) {
            Ok(p) => p,
            Err(super::sk::SkError::Integrity) => {
                self.stats.dropped_integrity += 1;
                return;
            }
            Err(e) => {
                tracing::debug!(ike = self.id(), "dropping a message: {e}");
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        // authenticated: the peer's address may be updated now (NAT mapping change)
        self.last_heard = ctx.now;
        if self.state == State::Established && from != self.remote && self.encap() {
            tracing::info!(ike = self.id(), "peer moved from {} to {from}", self.remote);
            self.remote = from;
            ctx.events.push_back(Event::PeerMoved {
                ike: self.id(),
                remote: from,
            });
        }
        if self.state == State::InitAnswered && (from != self.remote || to != self.local) {
            // the initiator moved to port 4500 for IKE_AUTH
            self.remote = from;
            self.local = to;
        }
        if h.is_response() {
            match h.exchange {
                ExchangeType::IKE_AUTH if self.state == State::AuthSent => {
                    self.on_auth_response(&inner, ctx)
                }
                ExchangeType::INFORMATIONAL => {
                    let what = match self.pending.take() {
                        Some(Pending {
                            req: Request::Informational { what },
                            ..
                        }) => what,
                        _ => return,
                    };
                    if what == Info::DeleteIke {
                        let r = match (self.rekeyed, self.closing) {
                            (true, _) => "rekeyed",
                            (false, Some(why)) if why != "terminated" => why,
                            _ => "deleted",
                        };
                        return self.fail(Reason::Local(r), ctx);
                    }
                }
                ExchangeType::CREATE_CHILD_SA => self.on_create_response(&inner, ctx),
                _ => {
                    self.pending = None;
                }
            }
            self.run_queue(ctx);
            return;
        }
        self.peer_next = h.message_id.wrapping_add(1);
        match (h.exchange, self.state) {
            (ExchangeType::IKE_AUTH, State::InitAnswered) => {
                self.on_auth_request(h.message_id, &inner, ctx)
            }
            (ExchangeType::INFORMATIONAL, State::Established | State::Deleting) => {
                self.on_informational_request(h.message_id, &inner, ctx)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established) => {
                self.on_create_request(h.message_id, &inner, ctx)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Deleting) => {
                // rekeyed or being deleted: no new SAs here
                self.respond(
                    ExchangeType::CREATE_CHILD_SA,
                    h.message_id,
                    &[Payload::Notify(Notify::new(
                        NotifyType::TEMPORARY_FAILURE,
                        vec![],
                    ))],
                    ctx,
                );
            }
            _ => {
                self.respond(
                    h.exchange,
                    h.message_id,
                    &[Payload::Notify(Notify::new(
                        NotifyType::INVALID_SYNTAX,
                        vec![],
                    ))],
                    ctx,
                );
            }
        }
    }

    /// Timers: retransmission with back-off and give-up, DPD, half-open expiry.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == State::Dead {
            return;
        }
        if self.state == State::InitAnswered
            && ctx.now >= self.created + ctx.timing.half_open_timeout
        {
            return self.fail(Reason::Failed("half-open IKE SA expired".into()), ctx);
        }
        let me = self.id();
        if let Some(p) = self.pending.as_mut()
            && ctx.now >= p.next
        {
            if p.sent > ctx.timing.retransmit_tries {
                let dpd = matches!(p.req, Request::Informational { what: Info::Dpd });
                let deleting = matches!(
                    p.req,
                    Request::Informational {
                        what: Info::DeleteIke
                    }
                );
                return self.fail(
                    if dpd {
                        Reason::DeadPeer
                    } else if deleting {
                        Reason::Local("deleted (peer not answering)")
                    } else {
                        Reason::Timeout
                    },
                    ctx,
                );
            }
            let bytes = p.bytes.clone();
            p.next = ctx.now + ctx.timing.backoff(p.sent);
            p.sent += 1;
            self.stats.retransmits_sent += 1;
            tracing::debug!(ike = me, "retransmit {} of request {}", p.sent - 1, p.id);
            self.send(ctx, bytes);
        }
        self.child_timers(ctx);
        if self.pending.is_none()
            && self.state == State::Established
            && let Some(d) = self.conn.dpd_delay
            && ctx.now >= self.last_heard + d
        {
            self.request(
                ExchangeType::INFORMATIONAL,
                &[],
                Request::Informational { what: Info::Dpd },
                ctx,
            );
        }
    }

    /// When [`IkeSa::handle_timeout`] next has something to do.
    pub fn next_timeout(&self, timing: &Timing) -> Option<Instant> {
        match self.state {
            State::Dead => None,
            State::InitAnswered => Some(self.created + timing.half_open_timeout),
            _ => {
                let exchange = match &self.pending {
                    Some(p) => Some(p.next),
                    None if self.state == State::Established => {
                        self.conn.dpd_delay.map(|d| self.last_heard + d)
                    }
                    None => None,
                };
                [exchange, self.child_timer()].into_iter().flatten().min()
            }
        }
    }

    /// Delete the IKE SA (and with it its children): the children are reported down at
    /// once, so their SAs leave xsecd before the peer answers.
    pub fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        self.terminate_as("terminated", ctx)
    }

    /// [`IkeSa::terminate`], saying why (`reauthenticated`, ...) in the events.
    pub fn terminate_as(&mut self, why: &'static str, ctx: &mut Ctx<'_>) {
        if self.state != State::Established {
            return self.fail(Reason::Local(why), ctx);
        }
        let retiring: Vec<Child> = self.retiring.drain(..).map(|(c, _)| c).collect();
        for c in std::mem::take(&mut self.children)
            .into_iter()
            .chain(retiring)
        {
            ctx.events.push_back(self.child_down(c, Reason::Local(why)));
        }
        self.pending = None;
        self.closing = Some(why);
        self.send_delete_ike(ctx);
    }

    /// Ask the peer to delete this IKE SA (an INFORMATIONAL with a DELETE); it is dead
    /// when the answer comes or the retransmissions give up.
    fn send_delete_ike(&mut self, ctx: &mut Ctx<'_>) {
        self.request(
            ExchangeType::INFORMATIONAL,
            &[Payload::Delete(Delete {
                protocol: ProtocolId::IKE,
                spis: vec![],
            })],
            Request::Informational {
                what: Info::DeleteIke,
            },
            ctx,
        );
        self.state = State::Deleting;
    }

    /// Ask the peer to delete the Child SA we receive on `spi_in`.
    fn send_delete_child(&mut self, spi_in: u32, ctx: &mut Ctx<'_>) {
        self.request(
            ExchangeType::INFORMATIONAL,
            &[Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: vec![spi_in.to_be_bytes()],
            })],
            Request::Informational {
                what: Info::DeleteChild,
            },
            ctx,
        );
    }

    /// The event that says Child SA `c` is gone.
    fn child_down(&self, c: Child, reason: Reason) -> Event {
        Event::ChildDown {
            ike: self.id(),
            conn: self.conn.name.clone(),
            child: c.cfg,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            reason,
        }
    }

    /// Delete one Child SA (by its inbound SPI).
    pub fn delete_child(&mut self, spi_in: u32, ctx: &mut Ctx<'_>) -> bool {
        if self.state != State::Established || self.pending.is_some() {
            return false;
        }
        let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) else {
            return false;
        };
        let c = self.children.remove(i);
        ctx.events
            .push_back(self.child_down(c, Reason::Local("deleted")));
        self.send_delete_child(spi_in, ctx);
        true
    }

    /// The encryption algorithm of the IKE SA, for `list-sas`.
    pub fn encr(&self) -> Option<Encr> {
        self.alg.map(|a| a.encr)
    }

    /// How long it has been up.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }
}
