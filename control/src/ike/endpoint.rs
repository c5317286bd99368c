//! The endpoint: every IKE SA of the process, keyed by our SPI. It takes datagrams and the
//! time, routes each message to its SA (or starts a responder SA for a new IKE_SA_INIT,
//! asking for a COOKIE when too many are half-open), runs the timers, and hands out what
//! to send and what happened. Sans-I/O, like quinn-proto's `Endpoint`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;

use super::config::{Connection, DpdAction, Timing};
use super::sa::{Ctx, Event, IkeSa, Reason, SpiSource, State, Transmit, random_bytes};
use super::wire::{ExchangeType, Header, Message, Notify, NotifyType, Payload, flags};

/// Endpoint counters (what `list-sas`/metrics show about messages no SA took).
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointStats {
    pub received: u64,
    pub sent: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_spi: u64,
    pub dropped_no_connection: u64,
    pub dropped_bad_cookie: u64,
    pub cookies_sent: u64,
    pub init_refused: u64,
}

/// The COOKIE secret, changed every few minutes; the previous one is still accepted.
struct CookieSecret {
    version: u8,
    secret: [u8; 32],
    previous: Option<(u8, [u8; 32])>,
    since: Instant,
}

pub struct Endpoint {
    conns: Vec<Arc<Connection>>,
    timing: Timing,
    sas: HashMap<u64, IkeSa>,
    /// Responder SAs by the peer's SPI and address, for retransmitted IKE_SA_INIT requests.
    half_open: HashMap<([u8; 8], SocketAddr), u64>,
    /// Half-open SAs above which an IKE_SA_INIT must carry a COOKIE (strongSwan's
    /// `cookie_threshold`; 0: always).
    pub cookie_threshold: usize,
    cookie: CookieSecret,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("conns", &self.conns.len())
            .field("sas", &self.sas.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const COOKIE_ROTATE: Duration = Duration::from_secs(120);

impl Endpoint {
    pub fn new(conns: Vec<Arc<Connection>>, timing: Timing, now: Instant) -> Endpoint {
        Endpoint {
            conns,
            timing,
            sas: HashMap::new(),
            half_open: HashMap::new(),
            cookie_threshold: 10,
            cookie: CookieSecret {
                version: 0,
                secret: random_bytes(),
                previous: None,
                since: now,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    pub fn connections(&self) -> &[Arc<Connection>] {
        &self.conns
    }

    /// Replace the configuration: existing IKE SAs keep the connection they were made
    /// with until they are rekeyed or restarted.
    pub fn set_connections(&mut self, conns: Vec<Arc<Connection>>) {
        self.conns = conns;
    }

    pub fn sas(&self) -> impl Iterator<Item = &IkeSa> {
        self.sas.values()
    }

    pub fn sa(&self, id: u64) -> Option<&IkeSa> {
        self.sas.get(&id)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_some() {
            self.stats.sent += 1;
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn with_ctx<R>(
        &mut self,
        now: Instant,
        spis: &mut dyn SpiSource,
        f: impl FnOnce(&mut Ctx<'_>, &mut HashMap<u64, IkeSa>) -> R,
    ) -> R {
        let mut new_sas = vec![];
        let mut ctx = Ctx {
            now,
            conns: &self.conns,
            timing: &self.timing,
            spis,
            transmits: &mut self.transmits,
            events: &mut self.events,
            new_sas: &mut new_sas,
        };
        let r = f(&mut ctx, &mut self.sas);
        for sa in new_sas {
            self.sas.insert(sa.id(), sa);
        }
        r
    }

    /// Delete the Child SA with inbound SPI `spi_in` of IKE SA `id` (queued behind any
    /// exchange under way).
    pub fn delete_child(
        &mut self,
        now: Instant,
        id: u64,
        spi_in: u32,
        spis: &mut dyn SpiSource,
    ) -> bool {
        let r = self.with_ctx(now, spis, |ctx, sas| match sas.get_mut(&id) {
            Some(sa) => sa.queue_delete_child(spi_in, ctx),
            None => false,
        });
        self.reap(now, spis);
        r
    }

    /// Rekey the IKE SA `id` (`Some(spi)`: only its Child SA with that inbound SPI).
    pub fn rekey(
        &mut self,
        now: Instant,
        id: u64,
        child: Option<u32>,
        spis: &mut dyn SpiSource,
    ) -> bool {
        let r = self.with_ctx(now, spis, |ctx, sas| match sas.get_mut(&id) {
            Some(sa) => match child {
                Some(c) => sa.rekey_child(c, ctx),
                None => sa.rekey_ike(ctx),
            },
            None => false,
        });
        self.reap(now, spis);
        r
    }

    /// The connection called `name`.
    fn conn(&self, name: &str) -> Result<Arc<Connection>, String> {
        self.conns
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| format!("no connection {name:?}"))
    }

    /// Start the connection `name` (its first child rides in IKE_AUTH). Returns the new
    /// IKE SA's handle.
    pub fn initiate(
        &mut self,
        now: Instant,
        name: &str,
        local_port: u16,
        spis: &mut dyn SpiSource,
    ) -> Result<u64, String> {
        self.initiate_child(now, name, None, local_port, spis)
    }

    /// Bring up the child `child` of connection `name` (or its default one): over the
    /// connection's established IKE SA if it has one (CREATE_CHILD_SA), else with a new IKE
    /// SA whose IKE_AUTH carries it. Returns the IKE SA's handle.
    pub fn initiate_child(
        &mut self,
        now: Instant,
        name: &str,
        child: Option<&str>,
        local_port: u16,
        spis: &mut dyn SpiSource,
    ) -> Result<u64, String> {
        let conn = self.conn(name)?;
        if let Some(c) = child
            && !conn.children.iter().any(|x| x.name == c)
        {
            return Err(format!("connection {name:?} has no child {c:?}"));
        }
        if let Some(c) = child
            && let Some(id) = self
                .sas
                .values()
                .find(|s| s.conn.name == name && s.state == super::sa::State::Established)
                .map(|s| s.id())
        {
            self.with_ctx(now, spis, |ctx, sas| {
                if let Some(sa) = sas.get_mut(&id) {
                    sa.create_child(c, ctx);
                }
            });
            return Ok(id);
        }
        self.initiate_new(now, name, child, local_port, spis)
    }

    /// A new IKE SA of connection `name`, its IKE_AUTH carrying the child `child` (or the
    /// default one).
    fn initiate_new(
        &mut self,
        now: Instant,
        name: &str,
        child: Option<&str>,
        local_port: u16,
        spis: &mut dyn SpiSource,
    ) -> Result<u64, String> {
        let conn = self.conn(name)?;
        let remote = conn
            .remote_addr
            .ok_or_else(|| format!("connection {name:?} has no remote address to initiate to"))?;
        let local = conn
            .local_addr
            .ok_or_else(|| format!("connection {name:?} has no local address to initiate from"))?;
        // INITIAL_CONTACT only for the first IKE SA with this peer
        let first = !self
            .sas
            .values()
            .any(|s| s.remote.ip() == remote && s.state != super::sa::State::Dead);
        let r = self.with_ctx(now, spis, |ctx, sas| {
            let mut sa = IkeSa::initiate(
                conn,
                child,
                SocketAddr::new(local, local_port),
                SocketAddr::new(remote, super::sa::IKE_PORT),
                ctx,
            )?;
            sa.send_initial_contact = first;
            let id = sa.id();
            sas.insert(id, sa);
            Ok(id)
        });
        if let Ok(id) = r {
            tracing::info!(conn = name, ike = id, "initiating IKE SA to {remote}");
        }
        r
    }

    /// Delete an IKE SA and its children.
    pub fn terminate(&mut self, now: Instant, id: u64, spis: &mut dyn SpiSource) -> bool {
        let found = self.with_ctx(now, spis, |ctx, sas| match sas.get_mut(&id) {
            Some(sa) => {
                sa.terminate(ctx);
                true
            }
            None => false,
        });
        self.reap(now, spis);
        found
    }

    fn cookie_for(
        &self,
        version: u8,
        secret: &[u8; 32],
        ni: &[u8],
        remote: SocketAddr,
        spi_i: &[u8; 8],
    ) -> Vec<u8> {
        let mut h = sha2::Sha256::new();
        h.update(ni);
        match remote.ip() {
            std::net::IpAddr::V4(a) => h.update(a.octets()),
            std::net::IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(spi_i);
        h.update(secret);
        let mut c = vec![version];
        c.extend_from_slice(&h.finalize());
        c
    }

    fn cookie_ok(&self, msg: &Message, ni: &[u8], remote: SocketAddr) -> bool {
        let Some(Payload::Notify(n)) = msg.payloads.first() else {
            return false;
        };
        if n.ty != NotifyType::COOKIE || n.data.is_empty() {
            return false;
        }
        let c = &self.cookie;
        let secrets = std::iter::once((c.version, c.secret)).chain(c.previous);
        for (v, s) in secrets {
            if n.data[0] == v {
                // the check is not secret-dependent timing-wise in a useful way: the cookie
                // is the attacker's own value to begin with
                return n.data == self.cookie_for(v, &s, ni, remote, &msg.header.spi_i);
            }
        }
        false
    }

    fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// Take a datagram received on `local` from `remote` (the non-ESP marker removed).
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        spis: &mut dyn SpiSource,
    ) {
        self.stats.received += 1;
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                tracing::debug!(%remote, "dropping a malformed IKE message: {e}");
                return;
            }
        };
        let h = msg.header;
        if h.exchange == ExchangeType::IKE_SA_INIT && !h.is_response() && h.spi_r == [0; 8] {
            if !h.from_initiator() || h.message_id != 0 {
                self.stats.dropped_malformed += 1;
                return;
            }
            self.on_init_request(now, &msg, data, local, remote, spis);
            self.reap(now, spis);
            return;
        }
        let ours = if h.from_initiator() { h.spi_r } else { h.spi_i };
        let id = u64::from_be_bytes(ours);
        let handled = self.with_ctx(now, spis, |ctx, sas| match sas.get_mut(&id) {
            // the I flag must say the message comes from the other role
            Some(sa) if sa.initiator != h.from_initiator() => {
                sa.handle(&msg, data, remote, local, ctx);
                true
            }
            _ => false,
        });
        if !handled {
            self.stats.dropped_unknown_spi += 1;
            tracing::debug!(%remote, "dropping an IKE message for an unknown SA");
        }
        self.initial_contact(now, spis);
        self.reauthenticate(now, spis);
        self.reap(now, spis);
    }

    /// Reauthentication, make-before-break: for each `Reauth` event a new IKE SA of the
    /// connection with the old one's children (the first in IKE_AUTH, the others in
    /// CREATE_CHILD_SA); once it is established and has made them, the old IKE SA is
    /// deleted (its Child SAs' SAs leave xsecd, the new ones are already in).
    fn reauthenticate(&mut self, now: Instant, spis: &mut dyn SpiSource) {
        let due: Vec<u64> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Reauth { ike } => Some(*ike),
                _ => None,
            })
            .collect();
        self.events.retain(|e| !matches!(e, Event::Reauth { .. }));
        for old in due {
            let Some((conn, mut kids)) = self
                .sas
                .get(&old)
                .filter(|s| s.state == State::Established)
                .map(|s| {
                    (
                        s.conn.name.clone(),
                        s.children.iter().map(|c| c.cfg.clone()).collect::<Vec<_>>(),
                    )
                })
            else {
                continue;
            };
            kids.dedup();
            tracing::info!(conn, ike = old, "reauthenticating");
            match self.initiate_new(
                now,
                &conn,
                kids.first().map(String::as_str),
                super::sa::IKE_PORT,
                spis,
            ) {
                Ok(new) => {
                    if let Some(sa) = self.sas.get_mut(&new) {
                        sa.replaces = Some(old);
                        sa.queue_children(&kids);
                    }
                }
                Err(e) => tracing::warn!(conn, "reauthentication failed to start: {e}"),
            }
        }
        let done: Vec<(u64, u64)> = self
            .sas
            .values()
            .filter(|s| s.is_idle())
            .filter_map(|s| s.replaces.map(|old| (s.id(), old)))
            .collect();
        for (new, old) in done {
            if let Some(sa) = self.sas.get_mut(&new) {
                sa.replaces = None;
            }
            tracing::info!(
                ike = new,
                "reauthenticated: deleting the IKE SA it replaces"
            );
            self.with_ctx(now, spis, |ctx, sas| {
                if let Some(sa) = sas.get_mut(&old) {
                    sa.terminate_as("reauthenticated", ctx);
                }
            });
        }
    }

    /// INITIAL_CONTACT: remove our other IKE SAs with the same peer identity on the same
    /// connection, and their Child SAs, without a DELETE (the peer has lost them).
    fn initial_contact(&mut self, now: Instant, spis: &mut dyn SpiSource) {
        let contacts: Vec<(u64, String, String)> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::InitialContact { ike, conn, peer_id } => {
                    Some((*ike, conn.clone(), peer_id.clone()))
                }
                _ => None,
            })
            .collect();
        for (ike, conn, peer) in contacts {
            let stale: Vec<u64> = self
                .sas
                .values()
                .filter(|s| {
                    s.id() != ike
                        && s.conn.name == conn
                        && s.peer_id.as_ref().is_some_and(|p| p.to_string() == peer)
                })
                .map(|s| s.id())
                .collect();
            if stale.is_empty() {
                continue;
            }
            tracing::info!(
                conn,
                "INITIAL_CONTACT from {peer}: removing {} stale IKE SA(s)",
                stale.len()
            );
            self.with_ctx(now, spis, |ctx, sas| {
                for id in stale {
                    if let Some(sa) = sas.get_mut(&id) {
                        sa.forget(Reason::Local("replaced (INITIAL_CONTACT)"), ctx);
                    }
                }
            });
        }
    }

    fn on_init_request(
        &mut self,
        now: Instant,
        msg: &Message,
        data: &[u8],
        local: SocketAddr,
        remote: SocketAddr,
        spis: &mut dyn SpiSource,
    ) {
        let h = msg.header;
        if let Some(id) = self.half_open.get(&(h.spi_i, remote)).copied() {
            self.with_ctx(now, spis, |ctx, sas| {
                if let Some(sa) = sas.get_mut(&id) {
                    sa.handle(msg, data, remote, local, ctx);
                }
            });
            return;
        }
        let Some(ni) = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        }) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if now.duration_since(self.cookie.since) > COOKIE_ROTATE {
            let c = &mut self.cookie;
            c.previous = Some((c.version, c.secret));
            c.version = c.version.wrapping_add(1);
            c.secret = random_bytes();
            c.since = now;
        }
        if self.half_open_count() >= self.cookie_threshold && !self.cookie_ok(msg, &ni, remote) {
            if msg
                .payloads
                .first()
                .is_some_and(|p| matches!(p, Payload::Notify(n) if n.ty == NotifyType::COOKIE))
            {
                self.stats.dropped_bad_cookie += 1;
            }
            let c = self.cookie_for(
                self.cookie.version,
                &self.cookie.secret,
                &ni,
                remote,
                &h.spi_i,
            );
            let hdr = Header {
                spi_r: [0; 8],
                flags: flags::RESPONSE,
                ..h
            };
            self.stats.cookies_sent += 1;
            self.transmits.push_back(Transmit {
                local,
                remote,
                data: Message::encode(&hdr, &[Payload::Notify(Notify::new(NotifyType::COOKIE, c))]),
            });
            return;
        }
        let Some(conn) = self
            .conns
            .iter()
            .find(|c| c.matches_addrs(local.ip(), remote.ip()))
            .cloned()
        else {
            self.stats.dropped_no_connection += 1;
            tracing::info!(%remote, "no connection for an IKE_SA_INIT from {remote} to {local}");
            return;
        };
        let r = self.with_ctx(now, spis, |ctx, sas| {
            IkeSa::respond_init(conn, msg, data, local, remote, ctx).map(|sa| {
                let id = sa.id();
                sas.insert(id, sa);
                id
            })
        });
        match r {
            Ok(id) => {
                self.half_open.insert((h.spi_i, remote), id);
            }
            Err(answer) => {
                self.stats.init_refused += 1;
                self.transmits.push_back(Transmit {
                    local,
                    remote,
                    data: answer,
                });
            }
        }
    }

    /// Remove dead SAs and half-open entries of SAs that are no longer half-open; restart
    /// connections whose DPD action says so.
    fn reap(&mut self, now: Instant, spis: &mut dyn SpiSource) {
        let sas = &self.sas;
        self.half_open
            .retain(|_, id| sas.get(id).is_some_and(|s| s.state == State::InitAnswered));
        let dead: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, s)| s.state == State::Dead)
            .map(|(k, _)| *k)
            .collect();
        let mut restart = vec![];
        for id in dead {
            if let Some(sa) = self.sas.remove(&id) {
                let died = self.events.iter().any(|e| {
                    matches!(e, Event::IkeDown { ike, reason: Reason::DeadPeer | Reason::Timeout, .. } if *ike == id)
                });
                if died && sa.conn.dpd_action == DpdAction::Restart && sa.conn.remote_addr.is_some()
                {
                    restart.push((sa.conn.name.clone(), sa.local.port()));
                }
            }
        }
        for (name, _) in restart {
            if let Err(e) = self.initiate(now, &name, super::sa::IKE_PORT, spis) {
                tracing::warn!(conn = name, "restart failed: {e}");
            }
        }
    }

    /// The earliest time [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .values()
            .filter_map(|s| s.next_timeout(&self.timing))
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant, spis: &mut dyn SpiSource) {
        let timing = self.timing;
        let due: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, s)| s.next_timeout(&timing).is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        self.with_ctx(now, spis, |ctx, sas| {
            for id in due {
                if let Some(sa) = sas.get_mut(&id) {
                    sa.handle_timeout(ctx);
                }
            }
        });
        self.reauthenticate(now, spis);
        self.reap(now, spis);
    }
}
