//! The typed SAD/SPD store: what xsecd should be running, as objects with ids.
//!
//! Every SA is one direction, known by an id its client chose (the configuration file names
//! its pair's SAs `NAME/in` and `NAME/out`); it carries its own attributes — SPI, reqid,
//! endpoints, algorithms, keys, lifetimes, and for an inbound SA its traffic selectors.
//! Policies are ordered per direction and known by their name. Each object belongs to a
//! *client* (a tag: `config` for the configuration file, `xsec-ike`, ...): a client changes
//! only its own objects, and one that reconnects under the same tag finds them again.
//!
//! Changes are [`Op`]s applied as one batch by [`Store::apply`]: each is checked against the
//! store as the earlier ones left it, and if any is refused, the store is rolled back to
//! what it was and nothing is applied. The result, [`Applied`], says which SAs changed
//! (before and after) and whether the policies did: [`super::running`] turns it into the
//! workers' changes. Nothing here is O(number of SAs): an SA operation is a few hash-map
//! updates; a policy operation is O(policies).
//!
//! Workers: all SAs of one reqid live on the same worker, chosen when the reqid is first
//! used (the least loaded) and kept for as long as anything refers to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use xsec_dataplane::sa::{Encap, SaConfig, sa_address};
use xsec_dataplane::spd::{Action, Direction, NonPolicy, Policy, SpdConfig};

/// The client tag of the objects the configuration file defines.
pub const CONFIG_CLIENT: &str = "config";

/// One SA (one direction) as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaEntry {
    pub id: String,
    pub client: String,
    /// `cfg.name` labels the SA's counters (and survives rekeys that reuse it).
    pub cfg: SaConfig,
    /// NAT keepalive / ESP-in-UDP heartbeat interval (outbound, UDP-encapsulated).
    pub keepalive: Option<Duration>,
    /// Which workers hold it.
    pub placement: Placement,
}

/// Which workers hold an SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// The worker of its reqid (all of the reqid's SAs are there unless placed otherwise);
    /// other workers hand their packets over.
    #[default]
    Reqid,
    /// This worker: an outbound SA of a reqid that several workers each have one of (RFC
    /// 9611 per-resource SAs): the worker that receives a packet uses its own, no handoff.
    Worker(u16),
    /// Every worker (an inbound SA any worker may receive): each holds a copy; the copies
    /// share one anti-replay window, and each counts a share of the lifetime's bytes and
    /// packets.
    AnyWorker,
}

/// The worker of a [`SaDelta`] whose SA every worker holds ([`Placement::AnyWorker`]).
pub const ALL_WORKERS: u16 = u16::MAX;

/// One SPD entry; `policy.name` is its id (unique within its direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub client: String,
    pub policy: Policy,
}

/// New endpoints of an SA (`update-sa-endpoints`): `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
}

/// One change.
#[derive(Debug, Clone)]
pub enum Op {
    AddSa(SaEntry),
    /// Replace the SA of this id (same direction and SPI); state carries over when the keys
    /// and algorithms are unchanged.
    UpdateSa(SaEntry),
    DelSa(String),
    /// Move an SA to other addresses/ports (NAT rebinding, MOBIKE), keeping its state.
    UpdateSaEndpoints {
        id: String,
        endpoints: Endpoints,
    },
    /// Insert at `position` (1 = first; `None` or past the end = last).
    AddPolicy {
        dir: Direction,
        entry: PolicyEntry,
        position: Option<usize>,
    },
    /// Replace the policy of this name (selector, action), keeping its place.
    UpdatePolicy {
        dir: Direction,
        entry: PolicyEntry,
    },
    /// In one direction, or (`None`) in each where it is.
    DelPolicy {
        dir: Option<Direction>,
        name: String,
    },
    MovePolicy {
        dir: Option<Direction>,
        name: String,
        position: usize,
    },
    /// The configuration file's policies of a direction, in its order: they replace the
    /// file's previous ones where those stood (new ones follow the last of them; with none,
    /// they go last).
    SetPolicies {
        dir: Direction,
        policies: Vec<Policy>,
    },
    /// What happens to packets no policy matches (the configuration file's).
    SetDefaults {
        inbound: NonPolicy,
        outbound: NonPolicy,
    },
}

/// Why a batch was refused. `index` is the operation's position in the batch (0-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {}: {reason}", index + 1)]
pub struct Refused {
    pub index: usize,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("no SA has id {0:?}")]
    NoSa(String),
    #[error("an SA with id {0:?} exists already")]
    DuplicateId(String),
    #[error("SA {id:?} is {dir} with SPI {spi:#010x} already (SA {other:?})", dir = dir.name())]
    DuplicateSpi {
        id: String,
        dir: Direction,
        spi: u32,
        other: String,
    },
    #[error("reqid {reqid} belongs to client {owner:?}")]
    ReqidTaken { reqid: u32, owner: String },
    #[error("{what} {id:?} belongs to client {owner:?}{hint}")]
    NotYours {
        what: &'static str,
        id: String,
        owner: String,
        hint: &'static str,
    },
    #[error("SA {id:?}: {field} cannot change (add a new SA instead)")]
    Immutable { id: String, field: &'static str },
    #[error("SA {id:?}: {msg}")]
    Invalid { id: String, msg: String },
    #[error("no policy is named {name:?} ({})", dir.name())]
    NoPolicy { dir: Direction, name: String },
    #[error("a {} policy named {name:?} exists already", dir.name())]
    DuplicatePolicy { dir: Direction, name: String },
    #[error("positions start at 1")]
    Position,
}

/// One reqid's users.
#[derive(Debug, Clone)]
struct ReqidUse {
    client: String,
    worker: u16,
    sas: u32,
    /// Of which outbound.
    outbound: u32,
    policies: u32,
    /// The `name` of the last SA put with this reqid (what `show policy` prints).
    name: String,
}

/// What a batch changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Each SA touched: its id, what it was before the batch and what it is now (either may
    /// be `None`), and the worker of each. Entries equal before and after are left out.
    pub sas: Vec<SaDelta>,
    /// Some policy (or a default) changed.
    pub policies: bool,
    undo: Vec<Undo>,
}

#[derive(Debug)]
pub struct SaDelta {
    pub id: String,
    pub before: Option<(SaEntry, u16)>,
    pub after: Option<(SaEntry, u16)>,
}

#[derive(Debug)]
enum Undo {
    Sa(String, Option<Box<SaEntry>>),
    Policies(Direction, Vec<PolicyEntry>),
    Defaults(NonPolicy, NonPolicy),
}

/// The store. See the module documentation.
#[derive(Debug, Clone)]
pub struct Store {
    sas: HashMap<String, SaEntry>,
    /// (direction, SPI) → ids (several only with distinct local addresses).
    by_spi: HashMap<(Direction, u32), Vec<String>>,
    reqids: HashMap<u32, ReqidUse>,
    /// Policies in order: [outbound, inbound] ([`Direction::index`]).
    policies: [Vec<PolicyEntry>; 2],
    defaults: (NonPolicy, NonPolicy),
    /// Reqids per worker (for placing new ones).
    load: Vec<usize>,
    /// Reqids whose use changed since the last [`Store::gc`].
    touched: Vec<u32>,
}

fn dir_slot(d: Direction) -> usize {
    match d {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

/// Do two SAs of one direction and SPI take the same slot? As the engine's SAD decides it:
/// their [`sa_address`]es (an inbound SA's own address, an outbound SA's peer) are equal, or
/// either is unset. Two peers may choose the same SPI for our outbound SAs.
fn same_slot(a: &SaConfig, b: &SaConfig) -> bool {
    let (x, y) = (
        sa_address(a.direction, a.local, a.remote),
        sa_address(b.direction, b.local, b.remote),
    );
    x.is_none() || y.is_none() || x == y
}

fn bundle_reqids(p: &Policy) -> &[u32] {
    match &p.action {
        Action::Protect(b) => b.reqids(),
        _ => &[],
    }
}

impl Store {
    /// An empty store for `workers` workers.
    pub fn new(workers: usize) -> Store {
        Store {
            sas: HashMap::new(),
            by_spi: HashMap::new(),
            reqids: HashMap::new(),
            policies: [vec![], vec![]],
            defaults: (NonPolicy::default(), NonPolicy::default()),
            load: vec![0; workers.max(1)],
            touched: vec![],
        }
    }

    pub fn sa(&self, id: &str) -> Option<&SaEntry> {
        self.sas.get(id)
    }

    pub fn sas(&self) -> impl Iterator<Item = &SaEntry> {
        self.sas.values()
    }

    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// The SA of this direction and SPI (the first, if several differ by local address).
    pub fn sa_by_spi(&self, dir: Direction, spi: u32) -> Option<&SaEntry> {
        self.by_spi
            .get(&(dir, spi))
            .and_then(|ids| ids.first())
            .and_then(|id| self.sas.get(id))
    }

    /// The SA of an engine event: by direction and SPI, and among SAs that share them (two
    /// peers' outbound SAs may), the one of the event's reqid.
    pub fn sa_of_event(&self, dir: Direction, spi: u32, reqid: u32) -> Option<&SaEntry> {
        let ids = self.by_spi.get(&(dir, spi))?;
        let mut sas = ids.iter().filter_map(|id| self.sas.get(id));
        let first = sas.clone().next();
        sas.find(|e| e.cfg.reqid == reqid).or(first)
    }

    /// The worker that holds `e` ([`ALL_WORKERS`]: each of them).
    pub fn worker_of_sa(&self, e: &SaEntry) -> u16 {
        match e.placement {
            Placement::Reqid => self.worker_of(e.cfg.reqid).unwrap_or(0),
            Placement::Worker(w) => w,
            Placement::AnyWorker => ALL_WORKERS,
        }
    }

    /// The worker that holds the SAs of `reqid`.
    pub fn worker_of(&self, reqid: u32) -> Option<u16> {
        self.reqids.get(&reqid).map(|r| r.worker)
    }

    /// The name of the SAs of `reqid` (`None` when no SA uses it).
    pub fn reqid_name(&self, reqid: u32) -> Option<&str> {
        self.reqids
            .get(&reqid)
            .filter(|r| r.sas > 0)
            .map(|r| r.name.as_str())
    }

    /// Whether some outbound SA has `reqid`.
    pub fn has_outbound(&self, reqid: u32) -> bool {
        self.reqids.get(&reqid).is_some_and(|r| r.outbound > 0)
    }

    /// Whether `reqid` is in use (by an SA or a policy), and by whom.
    pub fn reqid_client(&self, reqid: u32) -> Option<&str> {
        self.reqids.get(&reqid).map(|r| r.client.as_str())
    }

    pub fn policies(&self, dir: Direction) -> &[PolicyEntry] {
        &self.policies[dir_slot(dir)]
    }

    /// The SPD as the engine compiles it.
    pub fn spd_config(&self) -> SpdConfig {
        let list = |d: Direction| {
            self.policies(d)
                .iter()
                .map(|e| e.policy.clone())
                .collect::<Vec<_>>()
        };
        SpdConfig {
            outbound: list(Direction::Outbound),
            inbound: list(Direction::Inbound),
            inbound_default: self.defaults.0,
            outbound_default: self.defaults.1,
        }
    }

    /// Apply `ops` for `client`, all or nothing.
    pub fn apply(&mut self, client: &str, ops: Vec<Op>) -> Result<Applied, Refused> {
        let mut applied = Applied::default();
        let mut first: HashMap<String, Option<(SaEntry, u16)>> = HashMap::new();
        let mut order: Vec<String> = vec![];
        for (index, op) in ops.into_iter().enumerate() {
            if let Err(reason) = self.one(client, op, &mut applied, &mut first, &mut order) {
                self.rollback(std::mem::take(&mut applied.undo));
                self.gc();
                return Err(Refused { index, reason });
            }
        }
        for id in order {
            let before = first.remove(&id).flatten();
            let after = self.sas.get(&id).map(|e| (e.clone(), self.worker_of_sa(e)));
            if before != after {
                applied.sas.push(SaDelta { id, before, after });
            }
        }
        self.gc();
        Ok(applied)
    }

    /// Undo a batch that was applied here but could not be carried out (an SA the engine
    /// refused to build): the store goes back to what it was before it.
    pub fn revert(&mut self, applied: Applied) {
        self.rollback(applied.undo);
        self.gc();
    }

    fn one(
        &mut self,
        client: &str,
        op: Op,
        applied: &mut Applied,
        first: &mut HashMap<String, Option<(SaEntry, u16)>>,
        order: &mut Vec<String>,
    ) -> Result<(), Reason> {
        let mut touch = |s: &Store, id: &str| {
            if !first.contains_key(id) {
                let before = s.sas.get(id).map(|e| (e.clone(), s.worker_of_sa(e)));
                first.insert(id.to_owned(), before);
                order.push(id.to_owned());
            }
        };
        match op {
            Op::AddSa(mut e) => {
                e.client = client.to_owned();
                if self.sas.contains_key(&e.id) {
                    return Err(Reason::DuplicateId(e.id));
                }
                self.check_sa(&e, None)?;
                touch(self, &e.id);
                let id = e.id.clone();
                self.put_sa(&id, Some(e), &mut applied.undo);
            }
            Op::UpdateSa(mut e) => {
                e.client = client.to_owned();
                let old = self.mine_sa(client, &e.id)?.clone();
                if old.cfg.direction != e.cfg.direction {
                    return Err(Reason::Immutable {
                        id: e.id,
                        field: "direction",
                    });
                }
                if old.cfg.spi != e.cfg.spi {
                    return Err(Reason::Immutable {
                        id: e.id,
                        field: "spi",
                    });
                }
                if old.cfg.reqid != e.cfg.reqid {
                    return Err(Reason::Immutable {
                        id: e.id,
                        field: "reqid",
                    });
                }
                if old.placement != e.placement {
                    return Err(Reason::Immutable {
                        id: e.id,
                        field: "worker",
                    });
                }
                self.check_sa(&e, Some(&old))?;
                touch(self, &e.id);
                let id = e.id.clone();
                self.put_sa(&id, Some(e), &mut applied.undo);
            }
            Op::DelSa(id) => {
                self.mine_sa(client, &id)?;
                touch(self, &id);
                self.put_sa(&id, None, &mut applied.undo);
            }
            Op::UpdateSaEndpoints { id, endpoints } => {
                let mut e = self.mine_sa(client, &id)?.clone();
                let old = e.clone();
                let c = &mut e.cfg;
                c.local = endpoints.local.or(c.local);
                c.remote = endpoints.remote.or(c.remote);
                match (&mut c.encap, endpoints.local_port, endpoints.remote_port) {
                    (_, None, None) => {}
                    (
                        Encap::Udp {
                            local_port,
                            remote_port,
                        },
                        l,
                        r,
                    ) => {
                        *local_port = l.unwrap_or(*local_port);
                        *remote_port = r.unwrap_or(*remote_port);
                    }
                    (Encap::None, _, _) => {
                        return Err(Reason::Invalid {
                            id,
                            msg: "ports need a UDP-encapsulated SA".into(),
                        });
                    }
                }
                self.check_sa(&e, Some(&old))?;
                touch(self, &id);
                self.put_sa(&id, Some(e), &mut applied.undo);
            }
            Op::AddPolicy {
                dir,
                mut entry,
                position,
            } => {
                entry.client = client.to_owned();
                let name = entry.policy.name.clone();
                if self.policy_index(dir, &name).is_some() {
                    return Err(Reason::DuplicatePolicy { dir, name });
                }
                self.check_policy_reqids(client, &entry.policy)?;
                let list = &self.policies[dir_slot(dir)];
                let at = match position {
                    Some(0) => return Err(Reason::Position),
                    Some(p) if p <= list.len() => p - 1,
                    _ => list.len(),
                };
                self.save_policies(dir, applied);
                self.policy_refs(&entry, 1);
                self.policies[dir_slot(dir)].insert(at, entry);
            }
            Op::UpdatePolicy { dir, mut entry } => {
                entry.client = client.to_owned();
                let i = self.mine_policy(client, dir, &entry.policy.name)?;
                self.check_policy_reqids(client, &entry.policy)?;
                self.save_policies(dir, applied);
                let old = std::mem::replace(&mut self.policies[dir_slot(dir)][i], entry.clone());
                self.policy_refs(&old, -1);
                self.policy_refs(&entry, 1);
            }
            Op::DelPolicy { dir, name } => {
                for dir in self.dirs_of(dir, &name)? {
                    let i = self.mine_policy(client, dir, &name)?;
                    self.save_policies(dir, applied);
                    let old = self.policies[dir_slot(dir)].remove(i);
                    self.policy_refs(&old, -1);
                }
            }
            Op::MovePolicy {
                dir,
                name,
                position,
            } => {
                if position == 0 {
                    return Err(Reason::Position);
                }
                for dir in self.dirs_of(dir, &name)? {
                    let i = self.mine_policy(client, dir, &name)?;
                    self.save_policies(dir, applied);
                    let list = &mut self.policies[dir_slot(dir)];
                    let e = list.remove(i);
                    let at = (position - 1).min(list.len());
                    list.insert(at, e);
                }
            }
            Op::SetPolicies { dir, policies } => {
                // refused like add/update: a name another client uses, a reqid of another's
                let owners: HashMap<&str, &str> = self.policies[dir_slot(dir)]
                    .iter()
                    .map(|e| (e.policy.name.as_str(), e.client.as_str()))
                    .collect();
                for p in &policies {
                    if owners
                        .get(p.name.as_str())
                        .is_some_and(|&owner| owner != client)
                    {
                        return Err(Reason::DuplicatePolicy {
                            dir,
                            name: p.name.clone(),
                        });
                    }
                    self.check_policy_reqids(client, p)?;
                }
                let list = &self.policies[dir_slot(dir)];
                let slots: Vec<usize> = (0..list.len())
                    .filter(|&i| list[i].client == client)
                    .collect();
                let mut next: Vec<PolicyEntry> = vec![];
                let entries = policies.into_iter().map(|policy| PolicyEntry {
                    client: client.to_owned(),
                    policy,
                });
                match slots.last() {
                    None => {
                        next.extend(list.iter().cloned());
                        next.extend(entries);
                    }
                    Some(&last) => {
                        // others' policies keep their places; ours fill our old slots in
                        // their new order, the rest after the last of them
                        let mut ours: Vec<PolicyEntry> = entries.collect();
                        let extra = ours.split_off(slots.len().min(ours.len()));
                        let mut ours = ours.into_iter();
                        for (i, e) in list.iter().enumerate() {
                            if e.client == client {
                                next.extend(ours.next());
                            } else {
                                next.push(e.clone());
                            }
                            if i == last {
                                next.extend(extra.iter().cloned());
                            }
                        }
                    }
                }
                if next != *list {
                    self.save_policies(dir, applied);
                    self.replace_policies(dir, next);
                }
            }
            Op::SetDefaults { inbound, outbound } => {
                if self.defaults != (inbound, outbound) {
                    applied
                        .undo
                        .push(Undo::Defaults(self.defaults.0, self.defaults.1));
                    self.defaults = (inbound, outbound);
                    applied.policies = true;
                }
            }
        }
        Ok(())
    }

    /// The SA of `id`, if `client` owns it.
    fn mine_sa(&self, client: &str, id: &str) -> Result<&SaEntry, Reason> {
        let e = self
            .sas
            .get(id)
            .ok_or_else(|| Reason::NoSa(id.to_owned()))?;
        if e.client != client {
            return Err(Reason::NotYours {
                what: "SA",
                id: id.to_owned(),
                owner: e.client.clone(),
                hint: hint(&e.client),
            });
        }
        Ok(e)
    }

    fn mine_policy(&self, client: &str, dir: Direction, name: &str) -> Result<usize, Reason> {
        let i = self
            .policy_index(dir, name)
            .ok_or_else(|| Reason::NoPolicy {
                dir,
                name: name.to_owned(),
            })?;
        let owner = &self.policies[dir_slot(dir)][i].client;
        if owner != client {
            return Err(Reason::NotYours {
                what: "policy",
                id: name.to_owned(),
                owner: owner.clone(),
                hint: hint(owner),
            });
        }
        Ok(i)
    }

    /// The directions an operation on policy `name` acts in: `dir`, or every one it is in.
    fn dirs_of(&self, dir: Option<Direction>, name: &str) -> Result<Vec<Direction>, Reason> {
        match dir {
            Some(d) => Ok(vec![d]),
            None => {
                let v: Vec<Direction> = [Direction::Outbound, Direction::Inbound]
                    .into_iter()
                    .filter(|&d| self.policy_index(d, name).is_some())
                    .collect();
                if v.is_empty() {
                    Err(Reason::NoPolicy {
                        dir: Direction::Outbound,
                        name: name.to_owned(),
                    })
                } else {
                    Ok(v)
                }
            }
        }
    }

    fn policy_index(&self, dir: Direction, name: &str) -> Option<usize> {
        self.policies[dir_slot(dir)]
            .iter()
            .position(|e| e.policy.name == name)
    }

    /// An SA may be put: valid, its SPI free, its reqid not another client's.
    fn check_sa(&self, e: &SaEntry, replacing: Option<&SaEntry>) -> Result<(), Reason> {
        e.cfg.validate().map_err(|err| Reason::Invalid {
            id: e.id.clone(),
            msg: err.to_string(),
        })?;
        let invalid = |msg: String| {
            Err(Reason::Invalid {
                id: e.id.clone(),
                msg,
            })
        };
        match e.placement {
            Placement::Worker(w) if usize::from(w) >= self.load.len() => {
                return invalid(format!(
                    "worker {w}: xsecd has {} worker(s), 0 to {}",
                    self.load.len(),
                    self.load.len().saturating_sub(1)
                ));
            }
            Placement::AnyWorker if e.cfg.direction != Direction::Inbound => {
                return invalid(
                    "worker \"any\" is for inbound SAs (an outbound SA is one worker's: give its number)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(ids) = self.by_spi.get(&(e.cfg.direction, e.cfg.spi)) {
            for other in ids {
                if replacing.is_some_and(|r| &r.id == other) {
                    continue;
                }
                if let Some(o) = self.sas.get(other)
                    && same_slot(&o.cfg, &e.cfg)
                {
                    return Err(Reason::DuplicateSpi {
                        id: e.id.clone(),
                        dir: e.cfg.direction,
                        spi: e.cfg.spi,
                        other: other.clone(),
                    });
                }
            }
        }
        match self.reqids.get(&e.cfg.reqid) {
            Some(r) if r.client != e.client => Err(Reason::ReqidTaken {
                reqid: e.cfg.reqid,
                owner: r.client.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn check_policy_reqids(&self, client: &str, p: &Policy) -> Result<(), Reason> {
        for &r in bundle_reqids(p) {
            if let Some(u) = self.reqids.get(&r)
                && u.client != client
            {
                return Err(Reason::ReqidTaken {
                    reqid: r,
                    owner: u.client.clone(),
                });
            }
        }
        Ok(())
    }

    /// Set or remove one SA, keeping the indexes, and log how to undo it.
    fn put_sa(&mut self, id: &str, new: Option<SaEntry>, undo: &mut Vec<Undo>) {
        let old = self.set_sa(id, new);
        undo.push(Undo::Sa(id.to_owned(), old.map(Box::new)));
    }

    fn set_sa(&mut self, id: &str, new: Option<SaEntry>) -> Option<SaEntry> {
        let old = self.sas.remove(id);
        if let Some(o) = &old {
            let key = (o.cfg.direction, o.cfg.spi);
            if let Some(ids) = self.by_spi.get_mut(&key) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.by_spi.remove(&key);
                }
            }
            self.touched.push(o.cfg.reqid);
            if let Some(r) = self.reqids.get_mut(&o.cfg.reqid) {
                r.sas = r.sas.saturating_sub(1);
                if o.cfg.direction == Direction::Outbound {
                    r.outbound = r.outbound.saturating_sub(1);
                }
            }
        }
        if let Some(n) = new {
            self.by_spi
                .entry((n.cfg.direction, n.cfg.spi))
                .or_default()
                .push(id.to_owned());
            let r = self.reqid_entry(n.cfg.reqid, &n.client);
            r.sas += 1;
            if n.cfg.direction == Direction::Outbound {
                r.outbound += 1;
            }
            r.name.clone_from(&n.cfg.name);
            self.sas.insert(id.to_owned(), n);
        }
        old
    }

    /// The use record of a reqid, made (on the least loaded worker) if it is new.
    fn reqid_entry(&mut self, reqid: u32, client: &str) -> &mut ReqidUse {
        self.touched.push(reqid);
        if !self.reqids.contains_key(&reqid) {
            let w = (0..self.load.len())
                .min_by_key(|&i| (self.load[i], i))
                .unwrap_or(0);
            self.load[w] += 1;
            self.reqids.insert(
                reqid,
                ReqidUse {
                    client: client.to_owned(),
                    worker: w as u16,
                    sas: 0,
                    outbound: 0,
                    policies: 0,
                    name: String::new(),
                },
            );
        }
        self.reqids
            .get_mut(&reqid)
            .expect("the reqid was inserted above")
    }

    fn policy_refs(&mut self, e: &PolicyEntry, delta: i32) {
        for &r in bundle_reqids(&e.policy) {
            let u = self.reqid_entry(r, &e.client);
            u.policies = u.policies.saturating_add_signed(delta);
        }
    }

    fn save_policies(&mut self, dir: Direction, applied: &mut Applied) {
        applied.policies = true;
        let saved = applied
            .undo
            .iter()
            .any(|u| matches!(u, Undo::Policies(d, _) if *d == dir));
        if !saved {
            applied
                .undo
                .push(Undo::Policies(dir, self.policies[dir_slot(dir)].clone()));
        }
    }

    fn replace_policies(&mut self, dir: Direction, next: Vec<PolicyEntry>) {
        let old = std::mem::replace(&mut self.policies[dir_slot(dir)], next);
        for e in &old {
            self.policy_refs(e, -1);
        }
        for e in self.policies[dir_slot(dir)].clone() {
            self.policy_refs(&e, 1);
        }
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Sa(id, old) => {
                    self.set_sa(&id, old.map(|b| *b));
                }
                Undo::Policies(dir, list) => self.replace_policies(dir, list),
                Undo::Defaults(i, o) => self.defaults = (i, o),
            }
        }
    }

    /// Forget reqids nothing refers to any more (of those touched since the last time).
    fn gc(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for r in touched {
            if let Some(u) = self.reqids.get(&r)
                && u.sas == 0
                && u.policies == 0
            {
                if let Some(l) = self.load.get_mut(usize::from(u.worker)) {
                    *l = l.saturating_sub(1);
                }
                self.reqids.remove(&r);
            }
        }
    }
}

fn hint(owner: &str) -> &'static str {
    if owner == CONFIG_CLIENT {
        " (the configuration file: edit it and reload)"
    } else {
        ""
    }
}

/// A valid tunnel-mode SA for tests: AES-GCM-128, any selector, name `tun`.
#[cfg(test)]
pub(crate) fn test_sa(id: &str, dir: Direction, spi: u32, reqid: u32) -> SaEntry {
    use xsec_dataplane::crypto::{AuthAlg, EncAlg};
    let mut cfg = SaConfig::tunnel(
        spi,
        dir,
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from([192, 0, 2, 2]),
        EncAlg::AesGcm128,
        &[7; 20],
        AuthAlg::None,
        &[],
    );
    cfg.reqid = reqid;
    cfg.name = "tun".into();
    cfg.selectors = vec![xsec_dataplane::spd::Selector::ANY];
    SaEntry {
        placement: Placement::Reqid,
        id: id.into(),
        client: String::new(),
        cfg,
        keepalive: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsec_dataplane::spd::{SaBundle, Selector};

    fn protect(name: &str, reqid: u32) -> Policy {
        Policy {
            name: name.into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::new(&[reqid]).unwrap()),
        }
    }

    /// SAs by id, the SPD, and each reqid's client and worker.
    type Snapshot = (Vec<(String, SaEntry)>, SpdConfig, Vec<(u32, String, u16)>);

    fn snapshot(s: &Store) -> Snapshot {
        let mut sas: Vec<_> = s.sas.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sas.sort_by(|a, b| a.0.cmp(&b.0));
        let mut r: Vec<_> = s
            .reqids
            .iter()
            .map(|(k, v)| (*k, v.client.clone(), v.worker))
            .collect();
        r.sort();
        (sas, s.spd_config(), r)
    }

    #[test]
    fn a_batch_with_one_bad_operation_changes_nothing() {
        let mut s = Store::new(2);
        s.apply(
            "ike",
            vec![Op::AddSa(test_sa("a-in", Direction::Inbound, 0x100, 1))],
        )
        .unwrap();
        let before = snapshot(&s);
        let r = s
            .apply(
                "ike",
                vec![
                    Op::AddSa(test_sa("b-in", Direction::Inbound, 0x200, 2)),
                    Op::AddPolicy {
                        dir: Direction::Outbound,
                        entry: PolicyEntry {
                            client: String::new(),
                            policy: protect("p", 2),
                        },
                        position: None,
                    },
                    Op::DelSa("a-in".into()),
                    // the SPI b-in took
                    Op::AddSa(test_sa("c-in", Direction::Inbound, 0x200, 3)),
                ],
            )
            .unwrap_err();
        assert_eq!(r.index, 3);
        assert!(matches!(r.reason, Reason::DuplicateSpi { spi: 0x200, .. }));
        assert_eq!(snapshot(&s), before);
    }

    #[test]
    fn refusals() {
        let mut s = Store::new(2);
        s.apply(
            "ike",
            vec![Op::AddSa(test_sa("a", Direction::Inbound, 0x100, 1))],
        )
        .unwrap();
        let err = |s: &mut Store, c: &str, op: Op| s.apply(c, vec![op]).unwrap_err().reason;
        assert!(matches!(
            err(
                &mut s,
                "ike",
                Op::AddSa(test_sa("a", Direction::Outbound, 9, 1))
            ),
            Reason::DuplicateId(_)
        ));
        assert!(matches!(
            err(&mut s, "ike", Op::DelSa("zz".into())),
            Reason::NoSa(_)
        ));
        assert!(matches!(
            err(
                &mut s,
                "other",
                Op::AddSa(test_sa("b", Direction::Outbound, 0x300, 1))
            ),
            Reason::ReqidTaken { reqid: 1, .. }
        ));
        assert!(matches!(
            err(&mut s, "other", Op::DelSa("a".into())),
            Reason::NotYours { .. }
        ));
        let mut spi_change = test_sa("a", Direction::Inbound, 0x101, 1);
        spi_change.cfg.name = "x".into();
        assert!(matches!(
            err(&mut s, "ike", Op::UpdateSa(spi_change)),
            Reason::Immutable { field: "spi", .. }
        ));
        let mut bad_key = test_sa("k", Direction::Inbound, 0x500, 5);
        bad_key.cfg.enc_key = xsec_dataplane::sa::SecretKey::from_slice(&[1; 5]);
        assert!(matches!(
            err(&mut s, "ike", Op::AddSa(bad_key)),
            Reason::Invalid { .. }
        ));
        // the same SPI outbound is another slot
        s.apply(
            "ike",
            vec![Op::AddSa(test_sa("a-out", Direction::Outbound, 0x100, 1))],
        )
        .unwrap();
    }

    #[test]
    fn make_before_break_keeps_both_inbound_sas_and_the_reqid_worker() {
        let mut s = Store::new(4);
        let a = s
            .apply(
                "ike",
                vec![
                    Op::AddSa(test_sa("in-1", Direction::Inbound, 0x1001, 7)),
                    Op::AddSa(test_sa("out-1", Direction::Outbound, 0x2001, 7)),
                ],
            )
            .unwrap();
        assert_eq!(a.sas.len(), 2);
        let w = s.worker_of(7).unwrap();
        s.apply(
            "ike",
            vec![Op::AddSa(test_sa("in-2", Direction::Inbound, 0x1002, 7))],
        )
        .unwrap();
        s.apply(
            "ike",
            vec![Op::AddSa(test_sa("out-2", Direction::Outbound, 0x2002, 7))],
        )
        .unwrap();
        s.apply("ike", vec![Op::DelSa("out-1".into())]).unwrap();
        assert!(s.sa("in-1").is_some() && s.sa("in-2").is_some());
        let d = s.apply("ike", vec![Op::DelSa("in-1".into())]).unwrap();
        assert_eq!(d.sas[0].before.as_ref().unwrap().1, w);
        assert!(d.sas[0].after.is_none());
        assert_eq!(s.worker_of(7), Some(w));
    }

    #[test]
    fn set_policies_keeps_other_clients_in_place() {
        let mut s = Store::new(1);
        let p = |n: &str| Policy {
            name: n.into(),
            selector: Selector::ANY,
            action: Action::Bypass,
        };
        s.apply(
            CONFIG_CLIENT,
            vec![Op::SetPolicies {
                dir: Direction::Outbound,
                policies: vec![p("c1"), p("c2")],
            }],
        )
        .unwrap();
        s.apply(
            "ike",
            vec![Op::AddPolicy {
                dir: Direction::Outbound,
                entry: PolicyEntry {
                    client: String::new(),
                    policy: p("i1"),
                },
                position: Some(2),
            }],
        )
        .unwrap();
        let names = |s: &Store| {
            s.policies(Direction::Outbound)
                .iter()
                .map(|e| e.policy.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s), ["c1", "i1", "c2"]);
        s.apply(
            CONFIG_CLIENT,
            vec![Op::SetPolicies {
                dir: Direction::Outbound,
                policies: vec![p("c2"), p("c3"), p("c1")],
            }],
        )
        .unwrap();
        assert_eq!(names(&s), ["c2", "i1", "c3", "c1"]);
        let a = s
            .apply(
                CONFIG_CLIENT,
                vec![Op::SetPolicies {
                    dir: Direction::Outbound,
                    policies: vec![p("c2"), p("c3"), p("c1")],
                }],
            )
            .unwrap();
        assert!(!a.policies, "the same list changes nothing");
        // the configuration cannot take a name the IKE client uses, nor remove its policy
        assert!(
            s.apply(
                CONFIG_CLIENT,
                vec![Op::SetPolicies {
                    dir: Direction::Outbound,
                    policies: vec![p("i1")],
                }],
            )
            .is_err()
        );
        assert!(matches!(
            s.apply(
                CONFIG_CLIENT,
                vec![Op::DelPolicy {
                    dir: Some(Direction::Outbound),
                    name: "i1".into()
                }]
            )
            .unwrap_err()
            .reason,
            Reason::NotYours { .. }
        ));
    }

    #[test]
    fn a_policy_may_name_a_reqid_with_no_sa_yet() {
        let mut s = Store::new(2);
        s.apply(
            "ike",
            vec![Op::AddPolicy {
                dir: Direction::Outbound,
                entry: PolicyEntry {
                    client: String::new(),
                    policy: protect("trap", 9),
                },
                position: None,
            }],
        )
        .unwrap();
        assert_eq!(s.reqid_client(9), Some("ike"));
        assert_eq!(s.reqid_name(9), None);
        // another client cannot put an SA under it
        assert!(
            s.apply(
                "x",
                vec![Op::AddSa(test_sa("o", Direction::Outbound, 0x900, 9))]
            )
            .is_err()
        );
        s.apply(
            "ike",
            vec![Op::DelPolicy {
                dir: None,
                name: "trap".into(),
            }],
        )
        .unwrap();
        assert_eq!(s.reqid_client(9), None, "a reqid nothing uses is forgotten");
    }

    #[test]
    fn endpoints_move_and_are_checked() {
        let mut s = Store::new(1);
        let mut e = test_sa("o", Direction::Outbound, 0x900, 9);
        e.cfg.encap = Encap::Udp {
            local_port: 4500,
            remote_port: 4500,
        };
        s.apply("ike", vec![Op::AddSa(e)]).unwrap();
        let a = s
            .apply(
                "ike",
                vec![Op::UpdateSaEndpoints {
                    id: "o".into(),
                    endpoints: Endpoints {
                        remote: Some("198.51.100.7".parse().unwrap()),
                        remote_port: Some(61000),
                        ..Endpoints::default()
                    },
                }],
            )
            .unwrap();
        let after = &a.sas[0].after.as_ref().unwrap().0.cfg;
        assert_eq!(after.remote, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(
            after.encap,
            Encap::Udp {
                local_port: 4500,
                remote_port: 61000
            }
        );
        let mut plain = test_sa("p", Direction::Outbound, 0x901, 10);
        plain.cfg.encap = Encap::None;
        s.apply("ike", vec![Op::AddSa(plain)]).unwrap();
        assert!(
            s.apply(
                "ike",
                vec![Op::UpdateSaEndpoints {
                    id: "p".into(),
                    endpoints: Endpoints {
                        local_port: Some(1),
                        ..Endpoints::default()
                    },
                }],
            )
            .is_err()
        );
    }
}
