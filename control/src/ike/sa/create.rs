//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying a Child SA (with optional PFS), a new Child
//! SA, and rekeying the IKE SA; both roles. Rekeys replace make-before-break: the rekey's
//! initiator moves its outbound traffic when the answer arrives and then deletes the old
//! Child SA; the responder installs the new inbound SA at once but moves its outbound
//! traffic only when the initiator deletes the old one (as strongSwan does), so neither
//! side sends on an SA the other has not installed. Old inbound SAs are kept a grace
//! period for packets in flight. Simultaneous rekeys of one Child SA are resolved as
//! §2.8.1 says: the exchange with the lowest nonce made the redundant SA, and its
//! initiator deletes that one.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{
    Child, ChildOffer, Ctx, Event, IkeSa, Pending, Reason, Request, Secrets, State, kex, nonce_of,
    random_bytes, sa_ke_nonce,
};
use crate::ike::config::Mode;
use crate::ike::kdf::{KeyLengths, Secret};
use crate::ike::ke::{Group, KeyPair};
use crate::ike::proposal::{Integ, check_answer, choose};
use crate::ike::sk::Protection;
use crate::ike::wire::{ExchangeType, Notify, NotifyType, Payload, ProtocolId, find_notify};

/// Work that waits for the request window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Task {
    RekeyChild(u32),
    RekeyIke,
    DeleteChild(u32),
    /// A further Child SA of this configured child.
    NewChild(String),
}

/// A CREATE_CHILD_SA exchange we started.
#[derive(Debug)]
pub(crate) enum Create {
    Child {
        offer: ChildOffer,
        ke: Option<KeyPair>,
        ni: Vec<u8>,
        /// The inbound SPI of the Child SA this rekeys.
        rekey: Option<u32>,
    },
    Ike {
        spi: [u8; 8],
        ke: KeyPair,
        ni: Vec<u8>,
    },
}

fn nonce() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

fn asked_group(n: &Notify) -> Option<Group> {
    (n.data.len() == 2)
        .then(|| u16::from_be_bytes([n.data[0], n.data[1]]))
        .and_then(Group::from_id)
}

/// The payloads of a CREATE_CHILD_SA request for a Child SA (RFC 7296 §1.3.1, §1.3.3):
/// [N(REKEY_SA)], [N(USE_TRANSPORT_MODE)], SA, Ni, [KEi], TSi, TSr.
fn child_request(
    offer: &ChildOffer,
    ni: &[u8],
    ke: Option<&KeyPair>,
    rekey: Option<u32>,
) -> Vec<Payload> {
    let mut p = vec![];
    if let Some(old) = rekey {
        p.push(Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: old.to_be_bytes().to_vec(),
            ty: NotifyType::REKEY_SA,
            data: vec![],
        }));
    }
    if offer.mode == Mode::Transport {
        p.push(Payload::Notify(Notify::new(
            NotifyType::USE_TRANSPORT_MODE,
            vec![],
        )));
    }
    p.push(offer.sa_payload());
    p.push(Payload::Nonce(ni.to_vec()));
    if let Some(k) = ke {
        p.push(Payload::Ke {
            group: k.group().id(),
            data: k.public().to_vec(),
        });
    }
    p.push(Payload::TsI(offer.tsi.clone()));
    p.push(Payload::TsR(offer.tsr.clone()));
    p
}

impl IkeSa {
    /// What a CREATE_CHILD_SA for `cfg` needs first: an inbound SPI, and with PFS the
    /// group (`group`, else the child's first) and our key pair. `None` (logged) when no
    /// SPI or no key could be had.
    fn child_keys(
        &self,
        cfg: &crate::ike::config::ChildConfig,
        group: Option<Group>,
        ctx: &mut Ctx<'_>,
    ) -> Option<(u32, Option<Group>, Option<KeyPair>)> {
        let Some(spi) = ctx.spis.inbound_spi() else {
            tracing::warn!(
                ike = self.id(),
                "no inbound SPI for a Child SA of {}; later",
                cfg.name
            );
            return None;
        };
        let group = group.or_else(|| cfg.esp.first().and_then(|s| s.groups.first().copied()));
        let ke = match group.map(KeyPair::generate) {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                tracing::error!(ike = self.id(), "key exchange: {e}");
                return None;
            }
            None => None,
        };
        Some((spi, group, ke))
    }

    /// Queue a rekey of the Child SA with this inbound SPI (once: a rekey under way is not
    /// started again).
    pub fn rekey_child(&mut self, spi_in: u32, ctx: &mut Ctx<'_>) -> bool {
        let Some(c) = self.children.iter().find(|c| c.spi_in == spi_in) else {
            return false;
        };
        if self.state != State::Established {
            return false;
        }
        if c.rekeying {
            return true;
        }
        if !self.queue.contains(&Task::RekeyChild(spi_in)) {
            self.queue.push_back(Task::RekeyChild(spi_in));
        }
        self.run_queue(ctx);
        true
    }

    /// Queue new Child SAs of these configured children (they start once the IKE SA is
    /// established).
    pub fn queue_children(&mut self, names: &[String]) {
        for n in names {
            let t = Task::NewChild(n.clone());
            if self.initial_child.as_deref() != Some(n.as_str()) && !self.queue.contains(&t) {
                self.queue.push_back(t);
            }
        }
    }

    /// Is our own rekey of this IKE SA under way (sent, not yet answered)?
    fn ike_rekey_pending(&self) -> bool {
        matches!(
            &self.pending,
            Some(super::Pending {
                req: Request::Create(Create::Ike { .. }),
                ..
            })
        )
    }

    /// Established, with no exchange under way and none waiting.
    pub fn is_idle(&self) -> bool {
        self.state == State::Established && self.pending.is_none() && self.queue.is_empty()
    }

    /// Queue the deletion of the Child SA with this inbound SPI.
    pub fn queue_delete_child(&mut self, spi_in: u32, ctx: &mut Ctx<'_>) -> bool {
        if self.state != State::Established || !self.children.iter().any(|c| c.spi_in == spi_in) {
            return false;
        }
        if !self.queue.contains(&Task::DeleteChild(spi_in)) {
            self.queue.push_back(Task::DeleteChild(spi_in));
        }
        self.run_queue(ctx);
        true
    }

    /// Queue a rekey of the IKE SA.
    pub fn rekey_ike(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.state != State::Established {
            return false;
        }
        if !self.queue.contains(&Task::RekeyIke) {
            self.queue.push_back(Task::RekeyIke);
        }
        self.run_queue(ctx);
        true
    }

    /// Start the next queued exchange if none is outstanding.
    pub(super) fn run_queue(&mut self, ctx: &mut Ctx<'_>) {
        while self.pending.is_none() && self.state == State::Established {
            let Some(t) = self.queue.pop_front() else {
                return;
            };
            match t {
                Task::RekeyChild(spi) => self.start_child_rekey(spi, None, ctx),
                Task::RekeyIke => self.start_ike_rekey(None, ctx),
                Task::DeleteChild(spi) => {
                    self.delete_child(spi, ctx);
                }
                Task::NewChild(name) => self.start_new_child(&name, None, ctx),
            }
        }
    }

    fn start_child_rekey(&mut self, spi_in: u32, group: Option<Group>, ctx: &mut Ctx<'_>) {
        let Some(old) = self.children.iter().find(|c| c.spi_in == spi_in).cloned() else {
            return;
        };
        let Some(cfg) = self
            .conn
            .children
            .iter()
            .find(|c| c.name == old.cfg)
            .cloned()
        else {
            return;
        };
        let Some((spi, group, ke)) = self.child_keys(&cfg, group, ctx) else {
            return;
        };
        // the PFS group asked for goes first in each proposal
        let mut suites = cfg.esp.clone();
        if let Some(g) = group {
            for s in &mut suites {
                if let Some(i) = s.groups.iter().position(|x| *x == g) {
                    s.groups.swap(0, i);
                }
            }
        }
        let offer = ChildOffer {
            cfg: cfg.name.clone(),
            spi_in: spi,
            suites,
            tsi: old.local_ts.clone(),
            tsr: old.remote_ts.clone(),
            mode: old.mode,
        };
        if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == spi_in) {
            c.rekeying = true;
        }
        let ni = nonce();
        let p = child_request(&offer, &ni, ke.as_ref(), Some(spi_in));
        tracing::info!(ike = self.id(), "rekeying CHILD_SA {spi_in:08x}_i");
        self.send_create_child(p, offer, ke, ni, Some(spi_in), ctx);
    }

    /// Send a CREATE_CHILD_SA request for a Child SA and remember what it offered.
    fn send_create_child(
        &mut self,
        p: Vec<Payload>,
        offer: ChildOffer,
        ke: Option<KeyPair>,
        ni: Vec<u8>,
        rekey: Option<u32>,
        ctx: &mut Ctx<'_>,
    ) {
        self.request(
            ExchangeType::CREATE_CHILD_SA,
            &p,
            Request::Create(Create::Child {
                offer,
                ke,
                ni,
                rekey,
            }),
            ctx,
        );
    }

    /// Queue a new Child SA of the configured child `name` (an ACQUIRE, `initiate`).
    pub fn create_child(&mut self, name: &str, ctx: &mut Ctx<'_>) -> bool {
        if self.state != State::Established || !self.conn.children.iter().any(|c| c.name == name) {
            return false;
        }
        let t = Task::NewChild(name.to_owned());
        if !self.queue.contains(&t) {
            self.queue.push_back(t);
        }
        self.run_queue(ctx);
        true
    }

    fn start_new_child(&mut self, name: &str, group: Option<Group>, ctx: &mut Ctx<'_>) {
        let Some(cfg) = self.conn.children.iter().find(|c| c.name == name).cloned() else {
            return;
        };
        let Some((spi, _, ke)) = self.child_keys(&cfg, group, ctx) else {
            return;
        };
        let offer = ChildOffer {
            cfg: cfg.name.clone(),
            spi_in: spi,
            suites: cfg.esp.clone(),
            tsi: cfg.local_ts.clone(),
            tsr: cfg.remote_ts.clone(),
            mode: cfg.mode,
        };
        let ni = nonce();
        let p = child_request(&offer, &ni, ke.as_ref(), None);
        tracing::info!(ike = self.id(), "creating a CHILD_SA of {name}");
        self.send_create_child(p, offer, ke, ni, None, ctx);
    }

    fn start_ike_rekey(&mut self, group: Option<Group>, ctx: &mut Ctx<'_>) {
        let Some(g) = group.or_else(|| self.alg.and_then(|a| a.group)) else {
            return;
        };
        let ke = match KeyPair::generate(g) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(ike = self.id(), "key exchange: {e}");
                return;
            }
        };
        let spi: [u8; 8] = random_bytes();
        let ni = nonce();
        let mut suites = self.conn.ike.clone();
        for s in &mut suites {
            if let Some(i) = s.groups.iter().position(|x| *x == g) {
                s.groups.swap(0, i);
            }
        }
        let p = vec![
            Payload::Sa(
                suites
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.proposal(i as u8 + 1, ProtocolId::IKE, spi.to_vec()))
                    .collect(),
            ),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                group: g.id(),
                data: ke.public().to_vec(),
            },
        ];
        tracing::info!(ike = self.id(), "rekeying the IKE SA");
        self.request(
            ExchangeType::CREATE_CHILD_SA,
            &p,
            Request::Create(Create::Ike { spi, ke, ni }),
            ctx,
        );
    }

    /// The answer to our CREATE_CHILD_SA.
    pub(super) fn on_create_response(&mut self, p: &[Payload], ctx: &mut Ctx<'_>) {
        let Some(Pending {
            req: Request::Create(create),
            ..
        }) = self.pending.take()
        else {
            return;
        };
        match create {
            Create::Child {
                offer,
                ke,
                ni,
                rekey,
            } => self.on_child_created(p, offer, ke, ni, rekey, ctx),
            Create::Ike { spi, ke, ni } => self.on_ike_rekeyed(p, spi, ke, ni, ctx),
        }
    }

    fn child_failed(&mut self, cfg: &str, rekey: Option<u32>, reason: Reason, ctx: &mut Ctx<'_>) {
        if let Some(old) = rekey
            && let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old)
        {
            c.rekeying = false;
            // try again in a while (the old SA still works until its hard lifetime)
            c.rekey_at = Some(ctx.now + ctx.timing.retransmit_timeout * 4);
        }
        ctx.events.push_back(Event::ChildFailed {
            ike: self.id(),
            conn: self.conn.name.clone(),
            child: cfg.to_owned(),
            reason,
        });
    }

    fn on_child_created(
        &mut self,
        p: &[Payload],
        offer: ChildOffer,
        ke: Option<KeyPair>,
        ni: Vec<u8>,
        rekey: Option<u32>,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(n) = find_notify(p, NotifyType::INVALID_KE_PAYLOAD) {
            let ours = offer
                .suites
                .iter()
                .flat_map(|s| s.groups.iter())
                .copied()
                .collect::<Vec<_>>();
            match (asked_group(n), rekey) {
                (Some(g), Some(old))
                    if ours.contains(&g) && ke.as_ref().is_none_or(|k| k.group() != g) =>
                {
                    tracing::info!(
                        ike = self.id(),
                        "the peer asks for PFS group {}; retrying",
                        g.id()
                    );
                    if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old) {
                        c.rekeying = false;
                    }
                    return self.start_child_rekey(old, Some(g), ctx);
                }
                (Some(g), None)
                    if ours.contains(&g) && ke.as_ref().is_none_or(|k| k.group() != g) =>
                {
                    return self.start_new_child(&offer.cfg, Some(g), ctx);
                }
                _ => {
                    return self.child_failed(
                        &offer.cfg,
                        rekey,
                        Reason::PeerError(NotifyType::INVALID_KE_PAYLOAD),
                        ctx,
                    );
                }
            }
        }
        if let Some(e) = super::first_error(p) {
            return self.child_failed(&offer.cfg, rekey, Reason::PeerError(e), ctx);
        }
        let mut child = match self.accept_child_answer(&offer, p) {
            Ok(c) => c,
            Err(r) => return self.child_failed(&offer.cfg, rekey, r, ctx),
        };
        let Some(nr) = nonce_of(p).cloned() else {
            return self.child_failed(
                &offer.cfg,
                rekey,
                Reason::Failed("no nonce in the answer".into()),
                ctx,
            );
        };
        let g_ir = match (child.alg.group, &ke, kex(p)) {
            (None, _, _) => None,
            (Some(g), Some(k), Some((pg, data))) if k.group() == g && pg == g.id() => {
                match k.shared(data) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        return self.child_failed(
                            &offer.cfg,
                            rekey,
                            Reason::Failed(e.to_string()),
                            ctx,
                        );
                    }
                }
            }
            _ => {
                return self.child_failed(
                    &offer.cfg,
                    rekey,
                    Reason::Failed("the answer's KE does not match the PFS group".into()),
                    ctx,
                );
            }
        };
        child.cfg = offer.cfg.clone();
        // a collision (§2.8.1): the peer rekeyed the same Child SA meanwhile
        if let Some(old) = rekey
            && let Some((their_new, their_min)) = self.collisions.remove(&old)
        {
            let our_min = if ni < nr { ni.clone() } else { nr.clone() };
            if our_min < their_min {
                // ours is redundant: delete it at the peer; the peer deletes the old one
                tracing::info!(
                    ike = self.id(),
                    "rekey collision: ours ({:08x}) is redundant",
                    child.spi_in
                );
                if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old) {
                    c.rekeying = false;
                    c.rekey_at = None;
                }
                let _ = their_new;
                self.send_delete_child(child.spi_in, ctx);
                return;
            }
            tracing::info!(
                ike = self.id(),
                "rekey collision: the peer's ({their_new:08x}) is redundant"
            );
        }
        self.child_up(
            child,
            g_ir.as_deref().map(|v| &v[..]),
            (&ni, &nr),
            true,
            rekey,
            true,
            ctx,
        );
        if let Some(old) = rekey {
            // the traffic has moved: delete the old Child SA, keep its inbound SA a while
            self.retire(old, ctx);
            self.send_delete_child(old, ctx);
        }
    }

    /// Move a Child SA to the retiring list (its ChildDown comes after the grace period).
    pub(super) fn retire(&mut self, spi_in: u32, ctx: &mut Ctx<'_>) {
        if let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) {
            let c = self.children.remove(i);
            self.retiring.push((c, ctx.now + ctx.timing.rekey_grace));
        }
    }

    fn on_ike_rekeyed(
        &mut self,
        p: &[Payload],
        spi: [u8; 8],
        ke: KeyPair,
        ni: Vec<u8>,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(n) = find_notify(p, NotifyType::INVALID_KE_PAYLOAD)
            && let Some(g) = asked_group(n)
            && g != ke.group()
            && self.conn.ike.iter().any(|s| s.groups.contains(&g))
        {
            return self.start_ike_rekey(Some(g), ctx);
        }
        if let Some(e) = super::first_error(p) {
            // later, at a random moment: after a collision both ends were refused (below),
            // and the first to try again wins
            let spread = u32::from(random_bytes::<1>()[0]);
            let later = ctx.timing.retransmit_timeout * 2
                + ctx.timing.retransmit_timeout * 2 * spread / 255;
            tracing::warn!(
                ike = self.id(),
                "IKE rekey refused: {e}; again in {} ms",
                later.as_millis()
            );
            self.rekey_at = Some(ctx.now + later);
            return;
        }
        let Some((props, (g, data), nr)) = sa_ke_nonce(p) else {
            return self.fail(
                Reason::Failed("IKE rekey answer lacks SA, Nonce or KE".into()),
                ctx,
            );
        };
        let Some(alg) = check_answer(&self.conn.ike, props, ProtocolId::IKE) else {
            return self.fail(
                Reason::Failed("IKE rekey: a proposal we did not offer".into()),
                ctx,
            );
        };
        let peer_spi: [u8; 8] = match props[0].spi.as_slice().try_into() {
            Ok(s) => s,
            Err(_) => {
                return self.fail(
                    Reason::Failed("IKE rekey: the responder's SPI is not 8 bytes".into()),
                    ctx,
                );
            }
        };
        if alg.group != Some(ke.group()) || g != ke.group().id() {
            return self.fail(Reason::Failed("IKE rekey: KE group mismatch".into()), ctx);
        }
        let nr = nr.clone();
        match self.successor(&ke, data, alg, [spi, peer_spi], ni, nr, true, ctx) {
            Ok(new) => {
                let new_id = new.id();
                ctx.events.push_back(Event::IkeRekeyed {
                    old: self.id(),
                    new: new_id,
                    conn: self.conn.name.clone(),
                });
                ctx.new_sas.push(new);
                self.rekeyed = true;
                self.send_delete_ike(ctx);
            }
            Err(e) => self.fail(Reason::Failed(e), ctx),
        }
    }

    /// The IKE SA that replaces this one (RFC 7296 §2.18): SKEYSEED = prf(SK_d (old),
    /// g^ir (new) | Ni | Nr) with the old SA's PRF, the keys with the new one; the Child SAs
    /// move to it; `we_initiated` the rekey, so we are its initiator.
    #[allow(clippy::too_many_arguments)]
    fn successor(
        &mut self,
        ke: &KeyPair,
        peer_public: &[u8],
        alg: crate::ike::proposal::Chosen,
        [ours, theirs]: [[u8; 8]; 2],
        ni: Vec<u8>,
        nr: Vec<u8>,
        we_initiated: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<IkeSa, String> {
        let old = self.secrets.as_ref().ok_or("no keys")?;
        let g = ke.shared(peer_public).map_err(|e| e.to_string())?;
        let prf = alg.prf.ok_or("no PRF")?;
        let seed = old.prf.rekey_skeyseed(&old.d, &g, &ni, &nr);
        let (spi_i, spi_r) = if we_initiated {
            (ours, theirs)
        } else {
            (theirs, ours)
        };
        let keys = prf
            .ike_keys(
                &seed,
                &ni,
                &nr,
                [spi_i, spi_r],
                KeyLengths {
                    integ: alg.integ.map(Integ::key_len).unwrap_or(0),
                    encr: alg.encr.keymat_len(),
                },
            )
            .map_err(|e| e.to_string())?;
        let secrets = Secrets {
            prf,
            d: Zeroizing::new(keys.d.to_vec()),
            pi: Zeroizing::new(keys.pi.to_vec()),
            pr: Zeroizing::new(keys.pr.to_vec()),
            prot: Protection::new(alg.encr, alg.integ, &keys, we_initiated),
        };
        // a fresh IKE SA, established with the new keys, holding the old one's children
        let mut new = IkeSa::fresh(
            self.conn.clone(),
            we_initiated,
            [spi_i, spi_r],
            (self.local, self.remote),
            ctx.now,
        );
        new.state = State::Established;
        new.alg = Some(alg);
        new.nat_local = self.nat_local;
        new.nat_remote = self.nat_remote;
        new.peer_id = self.peer_id.clone();
        new.children = std::mem::take(&mut self.children);
        new.retiring = std::mem::take(&mut self.retiring);
        new.secrets = Some(secrets);
        new.ni = ni;
        new.nr = nr;
        new.rekey_at = self.conn.rekey_time.map(|t| super::rekey_time(ctx.now, t));
        new.reauth_at = self.reauth_at;
        new.send_initial_contact = false;
        Ok(new)
    }

    /// The peer's CREATE_CHILD_SA request.
    pub(super) fn on_create_request(&mut self, id: u32, p: &[Payload], ctx: &mut Ctx<'_>) {
        let answer = match p.iter().find_map(|x| match x {
            Payload::Sa(props) => props.first().map(|pr| pr.protocol),
            _ => None,
        }) {
            Some(ProtocolId::IKE) => self.answer_ike_rekey(p, ctx),
            Some(ProtocolId::ESP) => self.answer_child(p, ctx),
            _ => Err(NotifyType::INVALID_SYNTAX),
        };
        let out = match answer {
            Ok(out) => out,
            Err(n) => {
                let data = match n {
                    // INVALID_KE_PAYLOAD carries the group we want (set by the callee)
                    NotifyType::INVALID_KE_PAYLOAD => self
                        .wanted_group
                        .take()
                        .map(|g| g.id().to_be_bytes().to_vec())
                        .unwrap_or_default(),
                    _ => vec![],
                };
                vec![Payload::Notify(Notify::new(n, data))]
            }
        };
        self.respond(ExchangeType::CREATE_CHILD_SA, id, &out, ctx);
        // the IKE SA's successor goes to the endpoint after the answer left
        if let Some(new) = self.successor_out.take() {
            ctx.events.push_back(Event::IkeRekeyed {
                old: self.id(),
                new: new.id(),
                conn: self.conn.name.clone(),
            });
            ctx.new_sas.push(*new);
        }
    }

    fn answer_child(
        &mut self,
        p: &[Payload],
        ctx: &mut Ctx<'_>,
    ) -> Result<Vec<Payload>, NotifyType> {
        let rekey = find_notify(p, NotifyType::REKEY_SA);
        let old = match rekey {
            Some(n) => {
                let spi = match n.spi.as_slice() {
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => return Err(NotifyType::INVALID_SYNTAX),
                };
                // the SPI the peer receives on: our outbound SPI
                match self.children.iter().find(|c| c.spi_out == spi) {
                    Some(c) => Some(c.clone()),
                    None => return Err(NotifyType::CHILD_SA_NOT_FOUND),
                }
            }
            None => None,
        };
        let ni = nonce_of(p).cloned().ok_or(NotifyType::INVALID_SYNTAX)?;
        let (mut child, mut answer) = self.accept_child_request(p, false, ctx)?;
        if let Some(o) = &old {
            child.cfg = o.cfg.clone();
        }
        let g_ir = match child.alg.group {
            None => None,
            Some(g) => {
                let Some((pg, data)) = kex(p) else {
                    self.wanted_group = Some(g);
                    return Err(NotifyType::INVALID_KE_PAYLOAD);
                };
                if pg != g.id() {
                    self.wanted_group = Some(g);
                    return Err(NotifyType::INVALID_KE_PAYLOAD);
                }
                let k = KeyPair::generate(g).map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
                let s: Secret = k.shared(data).map_err(|_| NotifyType::INVALID_SYNTAX)?;
                answer.push(Payload::Ke {
                    group: g.id(),
                    data: k.public().to_vec(),
                });
                Some(s)
            }
        };
        let nr = nonce();
        // Nonce after SA (RFC 7296 §1.3: SA, Nr, [KEr], TSi, TSr)
        let at = answer
            .iter()
            .position(|x| matches!(x, Payload::Sa(_)))
            .map_or(0, |i| i + 1);
        answer.insert(at, Payload::Nonce(nr.clone()));
        let replaces = old.as_ref().map(|o| o.spi_in);
        if let Some(o) = &old {
            child.switch_from = Some((o.spi_in, ctx.now + ctx.timing.rekey_grace * 2));
            // we are rekeying it too: remember, to resolve the collision (§2.8.1)
            if o.rekeying {
                let min = if ni < nr { ni.clone() } else { nr.clone() };
                self.collisions.insert(o.spi_in, (child.spi_in, min));
            }
        }
        let outbound_now = old.is_none();
        self.child_up(
            child,
            g_ir.as_deref().map(|v| &v[..]),
            (&ni, &nr),
            false,
            replaces,
            outbound_now,
            ctx,
        );
        Ok(answer)
    }

    fn answer_ike_rekey(
        &mut self,
        p: &[Payload],
        ctx: &mut Ctx<'_>,
    ) -> Result<Vec<Payload>, NotifyType> {
        let (props, (pg, data), ni) = sa_ke_nonce(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        // A collision (§2.8.2): we are rekeying this IKE SA ourselves. Answering both would
        // make two new IKE SAs, each side's Child SAs moving to another one; refusing the
        // peer's lets ours finish (strongSwan retries after a TEMPORARY_FAILURE). If both
        // ends refuse, both retry at random moments (`on_ike_rekeyed`).
        if self.ike_rekey_pending() {
            tracing::info!(
                ike = self.id(),
                "IKE rekey collision: ours is under way; TEMPORARY_FAILURE to the peer's"
            );
            return Err(NotifyType::TEMPORARY_FAILURE);
        }
        let ni = ni.clone();
        let (prop, alg) =
            choose(&self.conn.ike, props, ProtocolId::IKE).ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let g = alg.group.ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        // prefer the group of the peer's KE payload; another one costs an INVALID_KE_PAYLOAD
        let with = crate::ike::proposal::with_group(&self.conn.ike, pg);
        let (prop, alg) = match choose(&with, props, ProtocolId::IKE) {
            Some(x) => x,
            None if g.id() != pg => {
                self.wanted_group = Some(g);
                return Err(NotifyType::INVALID_KE_PAYLOAD);
            }
            None => (prop, alg),
        };
        let peer_spi: [u8; 8] = prop
            .spi
            .as_slice()
            .try_into()
            .map_err(|_| NotifyType::INVALID_SYNTAX)?;
        let group = alg.group.ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let ke = KeyPair::generate(group).map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
        let ours: [u8; 8] = random_bytes();
        let nr = nonce();
        let new = self
            .successor(&ke, data, alg, [ours, peer_spi], ni, nr.clone(), false, ctx)
            .map_err(|_| NotifyType::INVALID_SYNTAX)?;
        self.successor_out = Some(Box::new(new));
        self.rekeyed = true;
        Ok(vec![
            Payload::Sa(vec![alg.proposal(prop.num, ProtocolId::IKE, ours.to_vec())]),
            Payload::Nonce(nr),
            Payload::Ke {
                group: group.id(),
                data: ke.public().to_vec(),
            },
        ])
    }

    /// The peer deleted the Child SA it receives on `spi` (our outbound SPI): answer with
    /// ours. If it was the old SA of a rekey we answered, move the traffic to the new one.
    pub(super) fn peer_deleted_child(&mut self, spi: u32, ctx: &mut Ctx<'_>) -> Option<[u8; 4]> {
        if let Some(c) = self.retiring.iter().find(|(c, _)| c.spi_out == spi) {
            return Some(c.0.spi_in.to_be_bytes());
        }
        let i = self.children.iter().position(|c| c.spi_out == spi)?;
        let old_in = self.children[i].spi_in;
        if let Some(new) = self
            .children
            .iter_mut()
            .find(|c| c.switch_from.is_some_and(|(o, _)| o == old_in))
        {
            new.switch_from = None;
            let spi_in = new.spi_in;
            ctx.events.push_back(Event::ChildSwitch {
                ike: self.id(),
                spi_in,
                old_spi_out: Some(spi),
            });
            self.retire(old_in, ctx);
            return Some(old_in.to_be_bytes());
        }
        let c = self.children.remove(i);
        let ours = c.spi_in.to_be_bytes();
        ctx.events
            .push_back(self.child_down(c, Reason::PeerDeleted));
        Some(ours)
    }

    /// Lifetimes: rekeys due, hard expiries, switches whose DELETE never came, retired
    /// Child SAs whose grace is over.
    pub(super) fn child_timers(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut gone = vec![];
        self.retiring.retain(|(c, at)| {
            if *at <= now {
                gone.push(c.clone());
                false
            } else {
                true
            }
        });
        for c in gone {
            ctx.events
                .push_back(self.child_down(c, Reason::Local("rekeyed")));
        }
        if self.state != State::Established {
            return;
        }
        let late: Vec<(u32, u32)> = self
            .children
            .iter()
            .filter_map(|c| {
                c.switch_from
                    .filter(|(_, at)| *at <= now)
                    .map(|(old, _)| (c.spi_in, old))
            })
            .collect();
        for (new, old) in late {
            let old_out = self
                .children
                .iter()
                .find(|c| c.spi_in == old)
                .map(|c| c.spi_out);
            if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == new) {
                c.switch_from = None;
            }
            ctx.events.push_back(Event::ChildSwitch {
                ike: self.id(),
                spi_in: new,
                old_spi_out: old_out,
            });
        }
        let due: Vec<Task> = self
            .children
            .iter()
            .filter_map(|c| {
                if c.expire_at.is_some_and(|t| t <= now) {
                    Some(Task::DeleteChild(c.spi_in))
                } else if !c.rekeying && c.rekey_at.is_some_and(|t| t <= now) {
                    Some(Task::RekeyChild(c.spi_in))
                } else {
                    None
                }
            })
            .collect();
        for t in due {
            if let Task::RekeyChild(s) = t
                && let Some(c) = self.children.iter_mut().find(|c| c.spi_in == s)
            {
                c.rekey_at = None;
            }
            if !self.queue.contains(&t) {
                self.queue.push_back(t);
            }
        }
        if self.reauth_at.is_some_and(|t| t <= now) {
            self.reauth_at = None;
            ctx.events.push_back(Event::Reauth { ike: self.id() });
        }
        if self.rekey_at.is_some_and(|t| t <= now) {
            self.rekey_at = None;
            if !self.queue.contains(&Task::RekeyIke) {
                self.queue.push_back(Task::RekeyIke);
            }
        }
        self.run_queue(ctx);
    }

    /// The earliest of the Child SA timers.
    pub(super) fn child_timer(&self) -> Option<Instant> {
        let r = self.retiring.iter().map(|(_, t)| *t).min();
        if self.state != State::Established {
            return r;
        }
        let c = self
            .children
            .iter()
            .flat_map(|c| {
                [
                    c.expire_at,
                    if c.rekeying { None } else { c.rekey_at },
                    c.switch_from.map(|(_, t)| t),
                ]
            })
            .flatten()
            .min();
        [r, c, self.rekey_at, self.reauth_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether this SA's children include one configured as `cfg` with these selectors
    /// (used by tests and `list-sas`).
    pub fn child_by_spi(&self, spi_in: u32) -> Option<&Child> {
        self.children.iter().find(|c| c.spi_in == spi_in)
    }
}
