//! What runs, and changes to it.
//!
//! The state is a typed [`Store`] of SAs and policies ([`super::store`]). A change arrives
//! either as [`Op`]s from a control client (`add-sa`, `del-policy`, `batch`, ...) or as an
//! edit of the configuration file (`reload`, `xsecctl add sa`, ...). The configuration file
//! is one client of the store like any other: its text is parsed and validated whole, then
//! compared with the store's `config` objects, and the difference is applied through the
//! same [`Op`]s ([`Running::config_ops`]). Either way the store applies the batch all or
//! nothing, and [`Running::prepare`] turns what changed into three rounds of per-worker
//! [`Change`]s (see [`Plan`]); an SA that did not change is not touched: its sequence
//! numbers, replay window and counters go on as if nothing happened.
//!
//! The cost of a change is that of what changed: an SA operation touches a few hash maps and
//! sends the workers the SA and one shard-map entry; only a policy change compiles a new SPD
//! (off the worker threads; workers swap a pointer and carry counters by index).
//!
//! The configuration file's SA pair `NAME` is the two SAs `NAME/in` and `NAME/out`; a pair
//! keeps its reqid for as long as a pair of that name exists. Counters of SAs that were
//! replaced or removed are kept per name and direction ([`Retired`]) so that metrics keyed
//! by name never go backwards.

use super::store::{self, ALL_WORKERS, Applied, CONFIG_CLIENT, Op, Placement, SaEntry, Store};
use crate::config::{self, Config, ConfigError, Diagnostic, SaPair};
use crate::control::proto::kind;
use crate::worker::{Carry, Change, Heartbeat, ShardEdit};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xsec_dataplane::Shards;
use xsec_dataplane::replay::SharedReplayWindow;
use xsec_dataplane::sa::{Encap, Sa, SaConfig, SaKey, SaStatus};
use xsec_dataplane::spd::{Action, Direction, Policy, SaBundle, Spd, SpdConfig};
use xsec_dataplane::stats::DropCounters;
use xsec_dataplane::time::Timestamp;
use zeroize::Zeroizing;

/// What a piece of the configuration text is.
/// The configuration text the daemon runs (the `config` client's objects come from it).
/// `xsecctl add/del/move` edit it as a TOML document (`toml_edit`: comments and layout are
/// kept) and the result is validated whole. Holds keys: zeroized when dropped.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    text: Zeroizing<String>,
}

/// A comment that marks the client's table while its line is looked up.
const REQUEST_MARK: &str = "# <xsec: the request's table>";

impl Source {
    pub fn new(text: &str, path: &Path) -> Source {
        Source {
            path: path.to_owned(),
            text: Zeroizing::new(text.to_owned()),
        }
    }

    /// The whole text.
    pub fn text(&self) -> Zeroizing<String> {
        self.text.clone()
    }
}

/// The `name` of a table, if it has a string one.
fn table_name(t: &toml_edit::Table) -> Option<&str> {
    t.get("name").and_then(|v| v.as_str())
}

/// The tables of `doc[key]` (an array of tables), created empty if absent.
fn tables_mut<'d>(
    doc: &'d mut toml_edit::DocumentMut,
    key: &str,
) -> Result<&'d mut toml_edit::ArrayOfTables, Refusal> {
    doc.entry(key)
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            Refusal::new(
                kind::CONFIG,
                format!("the running configuration's `{key}` is not an array of [[{key}]] tables; edit the file and use `reload`"),
            )
        })
}

/// Where a table placed at `position` (1 = first, `None` or past the end = last) goes among
/// `len` tables.
fn slot(position: Option<usize>, len: usize) -> Result<usize, Refusal> {
    match position {
        Some(0) => Err(Refusal::new(kind::BAD_ARGS, "positions start at 1")),
        Some(p) if p <= len => Ok(p - 1),
        _ => Ok(len),
    }
}

/// A change requested over the control socket: typed operations of a client, or an edit of
/// the configuration file (which becomes the `config` client's operations).
#[derive(Debug)]
pub enum Edit {
    /// A client's operations, applied as one batch.
    Ops {
        client: String,
        ops: Vec<Op>,
    },
    /// Replace everything with this text (read from `path` by the client).
    Reload {
        path: PathBuf,
        text: Zeroizing<String>,
    },
    /// Add one `[[sa]]` table.
    AddSa {
        text: Zeroizing<String>,
    },
    DelSa {
        name: String,
    },
    /// Add one `[[policy]]` table at `position` (1 = first; `None` = last).
    AddPolicy {
        text: Zeroizing<String>,
        position: Option<usize>,
    },
    DelPolicy {
        name: String,
    },
    MovePolicy {
        name: String,
        position: usize,
    },
}

/// Why a change was refused; nothing was applied.
#[derive(Debug)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Refusal {
    fn new(kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            diagnostics: vec![],
        }
    }
}

/// Counters of SAs of one name and direction that no longer run (replaced or removed).
#[derive(Debug, Clone, Default)]
pub struct Retired {
    pub packets: u64,
    pub bytes: u64,
    pub drops: DropCounters,
    /// SAs retired (each rekey or change counts one).
    pub generations: u64,
}

impl Retired {
    /// One more retired SA.
    fn add(&mut self, st: &SaStatus) {
        self.packets += st.packets;
        self.bytes += st.bytes;
        self.drops.add(&st.drops);
        self.generations += 1;
    }
}

/// Reference counts of a value several SAs share (a peer, a port): a set that knows when a
/// value comes first and goes last.
#[derive(Debug, Clone)]
struct Counted<K>(BTreeMap<K, u32>);

impl<K> Default for Counted<K> {
    fn default() -> Self {
        Counted(BTreeMap::new())
    }
}

impl<K: Ord + Copy> Counted<K> {
    /// Count `k` in (`add`) or out; whether the set of values changed.
    fn step(&mut self, k: K, add: bool) -> bool {
        if add {
            let c = self.0.entry(k).or_insert(0);
            *c += 1;
            *c == 1
        } else {
            match self.0.get_mut(&k) {
                Some(c) if *c > 1 => {
                    *c -= 1;
                    false
                }
                Some(_) => {
                    self.0.remove(&k);
                    true
                }
                None => false,
            }
        }
    }

    fn keys(&self) -> Vec<K> {
        self.0.keys().copied().collect()
    }
}

/// What the SAs' endpoints add up to: the engine's shard endpoints (inbound SAs) and the
/// XDP program's sets. Kept by counting, so that a change costs what it touches.
#[derive(Debug, Clone, Default)]
struct EndpointSets {
    udp_ports: Counted<u16>,
    udp_locals: Counted<IpAddr>,
    peers: Counted<IpAddr>,
    /// Inbound SAs without a peer address.
    any_peer: u32,
    /// Outbound UDP-encapsulation ports other than 4500.
    tunnel_ports: Counted<u16>,
    /// Peers of UDP-encapsulated SAs (either direction).
    udp_peers: Counted<IpAddr>,
}

#[derive(Debug, Clone, Default)]
struct SetsChanged {
    /// Peers of inbound SAs that came (`true`) or went.
    peers: Vec<(IpAddr, bool)>,
    shards: bool,
    tunnel_ports: bool,
    udp_peers: bool,
}

impl EndpointSets {
    fn account(&mut self, c: &SaConfig, add: bool, ch: &mut SetsChanged) {
        let udp = match c.encap {
            Encap::Udp { local_port, .. } => Some(local_port),
            Encap::None => None,
        };
        if c.direction == Direction::Inbound {
            if let Some(p) = udp {
                ch.shards |= self.udp_ports.step(p, add);
                if let Some(l) = c.local {
                    ch.shards |= self.udp_locals.step(l, add);
                }
            }
            match c.remote {
                Some(r) => {
                    if self.peers.step(r, add) {
                        ch.peers.push((r, add));
                    }
                }
                None => {
                    let before = self.any_peer > 0;
                    self.any_peer = if add {
                        self.any_peer + 1
                    } else {
                        self.any_peer.saturating_sub(1)
                    };
                    ch.shards |= before != (self.any_peer > 0);
                }
            }
        } else if let Some(p) = udp.filter(|&p| p != 4500) {
            ch.tunnel_ports |= self.tunnel_ports.step(p, add);
        }
        if udp.is_some()
            && let Some(r) = c.remote
        {
            ch.udp_peers |= self.udp_peers.step(r, add);
        }
    }

    fn shard_endpoints(&self) -> ShardEdit {
        ShardEdit::Endpoints {
            udp_ports: self.udp_ports.keys(),
            udp_locals: self.udp_locals.keys(),
            any_peer: self.any_peer > 0,
        }
    }
}

/// The configuration file's part of the state.
#[derive(Debug)]
struct ConfigState {
    cfg: Config,
    source: Source,
    /// SA pair name → reqid.
    reqids: HashMap<String, u32>,
    next_reqid: u32,
}

/// What runs now.
#[derive(Debug)]
pub struct Running {
    /// The configuration file as last applied: its gateway and control settings, its pairs.
    pub cfg: Config,
    pub source: Source,
    /// Every SA and policy, whoever installed it.
    pub store: Store,
    pub spd: Arc<Spd>,
    sets: EndpointSets,
    reqids: HashMap<String, u32>,
    next_reqid: u32,
    pub workers: usize,
    /// (SA name, direction) → counters of its retired SAs.
    pub retired: BTreeMap<(String, Direction), Retired>,
    /// (reqid, direction) → counters of its retired SAs.
    pub retired_reqid: BTreeMap<(u32, Direction), Retired>,
    /// Changes applied since start.
    pub generation: u64,
    /// `xsecd --control PATH`: replaces `control.socket` of every configuration read.
    pub socket_override: Option<PathBuf>,
}

/// A prepared change: three rounds of per-worker [`Change`]s. The store already holds the
/// new state; [`Running::commit`] keeps it, [`Running::revert`] goes back.
///
/// 1. SAs that are new or replaced are installed (a replaced SA is removed and its successor
///    installed in the same step, so its SPI is never unknown);
/// 2. every worker takes the shard-map edits, the new SPD (if the policies changed) and its
///    heartbeat edits;
/// 3. SAs no longer configured are removed.
///
/// Until step 2, the old SPD sends nothing to a new SA; after it, nothing points to a removed
/// one.
#[derive(Debug)]
pub struct Plan {
    pub rounds: [Vec<Change>; 3],
    /// What changed, for the answer.
    pub summary: Value,
    /// The XDP program's UDP tunnel ports, (before, after), when they change.
    pub tunnel_ports: Option<(Vec<u16>, Vec<u16>)>,
    /// Peers of UDP-encapsulated SAs for the XDP program, when they change.
    pub udp_peers: Option<Vec<IpAddr>>,
    /// Tunnel peers to resolve now.
    pub peers: Vec<IpAddr>,
    /// Inbound SPIs installed (their `alloc-spi` reservations end).
    pub inbound_spis: Vec<u32>,
    pub undo: Undo,
}

/// How to take back a prepared change.
#[derive(Debug)]
pub struct Undo {
    applied: Applied,
    spd: Option<Arc<Spd>>,
    config: Option<ConfigState>,
}

/// Is `new` the same SA as `old` apart from settings that do not touch its cryptography?
fn same_keys(a: &SaConfig, b: &SaConfig) -> bool {
    a.spi == b.spi
        && a.enc == b.enc
        && a.auth == b.auth
        && a.enc_key == b.enc_key
        && a.auth_key == b.auth_key
        && a.esn == b.esn
}

/// Do `a` and `b` differ only in their endpoints (addresses, UDP ports)?
fn endpoints_only(a: &SaConfig, b: &SaConfig) -> bool {
    let mut x = b.clone();
    x.local = a.local;
    x.remote = a.remote;
    x.encap = a.encap;
    x == *a
        && matches!(
            (a.encap, b.encap),
            (Encap::Udp { .. }, Encap::Udp { .. }) | (Encap::None, Encap::None)
        )
}

/// The keepalive an outbound SA sends, if it sends one.
fn heartbeat(e: &SaEntry) -> Option<Heartbeat> {
    let c = &e.cfg;
    match (c.direction, c.encap, e.keepalive, c.local, c.remote) {
        (
            Direction::Outbound,
            Encap::Udp {
                local_port,
                remote_port,
            },
            Some(interval),
            Some(src),
            Some(dst),
        ) => Some(Heartbeat {
            spi: c.spi,
            reqid: c.reqid,
            src,
            dst,
            sport: local_port,
            dport: remote_port,
            interval,
        }),
        _ => None,
    }
}

/// A refusal of the store, as the control socket reports it.
fn refused(r: store::Refused) -> Refusal {
    use store::Reason;
    let k = match r.reason {
        Reason::NoSa(_) | Reason::NoPolicy { .. } => kind::NOT_FOUND,
        Reason::NotYours { .. } | Reason::ReqidTaken { .. } => kind::REFUSED,
        _ => kind::BAD_ARGS,
    };
    Refusal::new(k, r.to_string())
}

/// The ids of a configuration pair's two SAs.
pub fn pair_ids(name: &str) -> [String; 2] {
    [format!("{name}/in"), format!("{name}/out")]
}

impl Running {
    /// The state at start: the configuration file's SAs and policies in the store (pair `i`
    /// has reqid `i + 1` and, pairs being placed on the least loaded worker in turn, worker
    /// `i mod n`).
    pub fn new(cfg: Config, source: Source, workers: usize) -> Result<Running, String> {
        let n = workers.max(1);
        let mut r = Running {
            spd: Arc::new(
                SpdConfig::default()
                    .compile()
                    .map_err(|e| format!("SPD: {e}"))?,
            ),
            store: Store::new(n),
            sets: EndpointSets::default(),
            reqids: HashMap::new(),
            next_reqid: 1,
            workers: n,
            retired: BTreeMap::new(),
            retired_reqid: BTreeMap::new(),
            generation: 0,
            socket_override: None,
            source: source.clone(),
            cfg: cfg.clone(),
        };
        for p in &cfg.sas {
            r.reqids.insert(p.name.clone(), p.outbound.reqid);
            r.next_reqid = r.next_reqid.max(p.outbound.reqid + 1);
        }
        let mut state = ConfigState {
            cfg,
            source,
            reqids: r.reqids.clone(),
            next_reqid: r.next_reqid,
        };
        let ops = r.config_ops(&mut state);
        let applied = r
            .store
            .apply(CONFIG_CLIENT, ops)
            .map_err(|e| e.to_string())?;
        let mut ch = SetsChanged::default();
        for d in &applied.sas {
            if let Some((e, _)) = &d.after {
                r.sets.account(&e.cfg, true, &mut ch);
            }
        }
        r.spd = Arc::new(
            r.store
                .spd_config()
                .compile()
                .map_err(|e| format!("SPD: {e}"))?,
        );
        r.cfg = state.cfg;
        Ok(r)
    }

    /// The worker of each SA and every endpoint, as the workers' engines need it at start
    /// (afterwards they receive edits).
    pub fn shard_map(&self) -> Shards {
        let mut s = Shards::default();
        for e in self.store.sas() {
            let Some(w) = self.store.worker_of(e.cfg.reqid) else {
                continue;
            };
            match e.cfg.direction {
                Direction::Inbound => s.inbound.insert(e.cfg.spi, w),
                Direction::Outbound => s.outbound.insert(e.cfg.reqid, w),
            };
        }
        if let ShardEdit::Endpoints {
            udp_ports,
            udp_locals,
            any_peer,
        } = self.sets.shard_endpoints()
        {
            s.udp_ports = udp_ports;
            s.udp_locals = udp_locals;
            s.any_peer = any_peer;
        }
        s.peers = self.sets.peers.0.keys().copied().collect();
        s
    }

    /// Heartbeats of each worker's outbound UDP-encapsulated SAs (at start).
    pub fn heartbeats(&self) -> Vec<Vec<Heartbeat>> {
        let mut out: Vec<Vec<Heartbeat>> = vec![vec![]; self.workers];
        for e in self.store.sas() {
            if let (Some(hb), Some(w)) = (heartbeat(e), self.store.worker_of(e.cfg.reqid))
                && let Some(v) = out.get_mut(usize::from(w))
            {
                v.push(hb);
            }
        }
        out
    }

    /// UDP ports other than 4500 that carry ESP.
    pub fn tunnel_ports(&self) -> Vec<u16> {
        self.sets.tunnel_ports.keys()
    }

    /// Peer addresses of the UDP-encapsulated SAs (both directions' remote endpoints), whose
    /// UDP fragments the XDP program steers to the workers for reassembly.
    pub fn udp_peers(&self) -> Vec<IpAddr> {
        self.sets.udp_peers.keys()
    }

    /// The SAs to install at start, per worker.
    pub fn initial_sas(&self, now: Timestamp) -> Result<Vec<Vec<Sa>>, String> {
        let mut out: Vec<Vec<Sa>> = (0..self.workers).map(|_| vec![]).collect();
        for e in self.store.sas() {
            let w = usize::from(self.store.worker_of(e.cfg.reqid).unwrap_or(0));
            out[w].push(Sa::new(&e.cfg, now).map_err(|err| format!("SA {}: {err}", e.id))?);
        }
        Ok(out)
    }

    /// The configuration file's SA pair of this name.
    pub fn pair(&self, name: &str) -> Option<&SaPair> {
        self.cfg.sas.iter().find(|p| p.name == name)
    }

    /// The operations that make the store's `config` objects those of `state.cfg`: the
    /// pairs get their stable reqids (a new name takes one no client uses), then SAs that
    /// went or changed SPI are deleted, new ones added, changed ones updated, and the
    /// policies and defaults set.
    fn config_ops(&self, state: &mut ConfigState) -> Vec<Op> {
        let cfg = &mut state.cfg;
        let mut map: HashMap<u32, u32> = HashMap::new();
        let mut taken: HashSet<u32> = state.reqids.values().copied().collect();
        for p in &mut cfg.sas {
            let r = match state.reqids.get(&p.name) {
                Some(&r) => r,
                None => {
                    while self
                        .store
                        .reqid_client(state.next_reqid)
                        .is_some_and(|c| c != CONFIG_CLIENT)
                        || taken.contains(&state.next_reqid)
                    {
                        state.next_reqid += 1;
                    }
                    state.next_reqid += 1;
                    state.reqids.insert(p.name.clone(), state.next_reqid - 1);
                    taken.insert(state.next_reqid - 1);
                    state.next_reqid - 1
                }
            };
            map.insert(p.outbound.reqid, r);
            p.inbound.reqid = r;
            p.outbound.reqid = r;
        }
        // names no longer configured lose their reqid (a new name never reuses one)
        let names: HashSet<&str> = cfg.sas.iter().map(|p| p.name.as_str()).collect();
        state.reqids.retain(|n, _| names.contains(n.as_str()));
        for pol in cfg
            .spd
            .outbound
            .iter_mut()
            .chain(cfg.spd.inbound.iter_mut())
        {
            if let Action::Protect(b) = &pol.action {
                let ids: Vec<u32> = b
                    .reqids()
                    .iter()
                    .map(|r| map.get(r).copied().unwrap_or(*r))
                    .collect();
                pol.action = Action::Protect(SaBundle::new(&ids).unwrap_or(*b));
            }
        }

        let mut want: HashMap<String, SaEntry> = HashMap::new();
        for p in &cfg.sas {
            let [i, o] = pair_ids(&p.name);
            for (id, sc, keepalive) in [(i, &p.inbound, None), (o, &p.outbound, p.keepalive)] {
                want.insert(
                    id.clone(),
                    SaEntry {
                        id,
                        client: CONFIG_CLIENT.into(),
                        cfg: sc.clone(),
                        keepalive,
                        placement: Placement::Reqid,
                    },
                );
            }
        }
        let (mut dels, mut adds, mut updates) = (vec![], vec![], vec![]);
        for e in self.store.sas().filter(|e| e.client == CONFIG_CLIENT) {
            match want.get(&e.id) {
                None => dels.push(Op::DelSa(e.id.clone())),
                Some(w) if w.cfg.spi != e.cfg.spi || w.cfg.direction != e.cfg.direction => {
                    dels.push(Op::DelSa(e.id.clone()));
                }
                Some(_) => {}
            }
        }
        // in the file's order: a new reqid goes to the least loaded worker, so pairs are
        // dealt to the workers round-robin as they stand in the file (pair i on worker
        // i mod N when all are new), not in the order of their names
        for id in cfg.sas.iter().flat_map(|p| pair_ids(&p.name)) {
            let Some(w) = want.get(&id) else { continue };
            match self.store.sa(&id).filter(|e| e.client == CONFIG_CLIENT) {
                Some(e) if e.cfg.spi == w.cfg.spi && e.cfg.direction == w.cfg.direction => {
                    if e != w {
                        updates.push(Op::UpdateSa(w.clone()));
                    }
                }
                _ => adds.push(Op::AddSa(w.clone())),
            }
        }
        dels.sort_unstable_by(|a, b| match (a, b) {
            (Op::DelSa(x), Op::DelSa(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
        let mut ops = dels;
        ops.append(&mut adds);
        ops.append(&mut updates);
        ops.push(Op::SetPolicies {
            dir: Direction::Outbound,
            policies: cfg.spd.outbound.clone(),
        });
        ops.push(Op::SetPolicies {
            dir: Direction::Inbound,
            policies: cfg.spd.inbound.clone(),
        });
        ops.push(Op::SetDefaults {
            inbound: cfg.spd.inbound_default,
            outbound: cfg.spd.outbound_default,
        });
        ops
    }

    /// Parse the configuration text an edit produces, checked whole (diagnostics name the
    /// file, or `<request>` for the lines a client sent) and against what cannot change.
    fn parse_edit(&self, edit: &Edit) -> Result<(Config, Source), Refusal> {
        let (src, span) = self.edited(edit)?;
        let text = src.text();
        let path = src.path.clone();
        let mut cfg = match config::parse(&text, &path) {
            Ok(c) => c,
            Err(e) => {
                let mut diags = e.diagnostics().to_vec();
                for d in &mut diags {
                    match span {
                        Some((start, len)) if d.line >= start && d.line < start + len.max(1) => {
                            d.path = PathBuf::from("<request>");
                            d.line = d.line + 1 - start;
                            // the request holds one table: its index in the whole text
                            // means nothing to the client
                            if let Some((head, rest)) = d.field.split_once('[')
                                && let Some((_, tail)) = rest.split_once(']')
                            {
                                d.field = format!("{head}{tail}");
                            }
                        }
                        Some(_) => d.path = PathBuf::from("<running configuration>"),
                        None => {}
                    }
                }
                let message = match &e {
                    ConfigError::Read { .. } => e.to_string(),
                    ConfigError::Invalid(_) => diags
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                return Err(Refusal {
                    kind: kind::CONFIG,
                    message,
                    diagnostics: diags,
                });
            }
        };

        if let Some(p) = &self.socket_override {
            cfg.control.socket = p.clone();
        }
        // What cannot change without a restart.
        let mut fixed = vec![];
        let (a, b) = (&self.cfg.gateway, &cfg.gateway);
        macro_rules! differs {
            ($($f:ident),*) => {$(
                if a.$f != b.$f {
                    fixed.push(format!("gateway.{}: {:?} → {:?}", stringify!($f), a.$f, b.$f));
                }
            )*};
        }
        differs!(
            unprotected,
            protected,
            queues,
            cores,
            xdp_mode,
            idle,
            mtu,
            stats_interval_ms
        );
        if self.cfg.control != cfg.control {
            fixed.push(format!(
                "control: {:?} → {:?}",
                self.cfg.control, cfg.control
            ));
        }
        if !fixed.is_empty() {
            return Err(Refusal::new(
                kind::CONFIG,
                format!(
                    "{} cannot change while xsecd runs (restart it for that); nothing was applied: {}",
                    path.display(),
                    fixed.join("; ")
                ),
            ));
        }

        Ok((cfg, src))
    }

    /// The text a change produces, and where the client's part of it starts (its lines are
    /// reported against `<request>`).
    fn edited(&self, edit: &Edit) -> Result<(Source, Option<(usize, usize)>), Refusal> {
        if let Edit::Reload { path, text } = edit {
            return Ok((Source::new(text, path), None));
        }
        if let Edit::Ops { .. } = edit {
            return Err(Refusal::new(kind::INTERNAL, "not a configuration edit"));
        }
        let mut doc: toml_edit::DocumentMut = self.source.text.parse().map_err(|e| {
            Refusal::new(
                kind::CONFIG,
                format!("the running configuration does not parse as a document ({e}); edit the file and use `reload`"),
            )
        })?;
        // the client's one [[key]] table, and how many lines it has
        let one = |text: &str, key: &str| -> Result<(toml_edit::Table, usize, usize), Refusal> {
            let mut d: toml_edit::DocumentMut =
                text.parse().map_err(|e: toml_edit::TomlError| {
                    Refusal::new(
                        kind::CONFIG,
                        format!("<request>: {}", e.message().trim_end()),
                    )
                })?;
            let only = d.len() == 1;
            match d.remove(key) {
                Some(toml_edit::Item::ArrayOfTables(mut a)) if only && a.len() == 1 => {
                    let mut t = a.remove(0);
                    // lines before the header in the request (comments), dropped here
                    let before = t
                        .decor()
                        .prefix()
                        .and_then(|p| p.as_str())
                        .map_or(0, |p| p.matches('\n').count());
                    // placed after the table before it in its array (toml_edit keeps a
                    // table without a position after the one visited before it)
                    t.set_position(None);
                    t.decor_mut().set_prefix("\n");
                    Ok((t, before, text.trim_end().lines().count()))
                }
                _ => Err(Refusal::new(
                    kind::BAD_ARGS,
                    format!("<request>: expected exactly one [[{key}]] table and nothing else"),
                )),
            }
        };
        let not_found = |what: &str, name: &str, a: &toml_edit::ArrayOfTables| {
            let known: Vec<&str> = a.iter().filter_map(table_name).collect();
            Refusal::new(
                kind::NOT_FOUND,
                format!(
                    "no {what} is named {name:?} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        };
        let find = |a: &toml_edit::ArrayOfTables, what: &str, name: &str| {
            a.iter()
                .position(|t| table_name(t) == Some(name))
                .ok_or_else(|| not_found(what, name, a))
        };
        // (key, index) of the client's table, the request's lines before its header, and
        // the request's length in lines
        let mut added: Option<(&str, usize, usize, usize)> = None;
        match edit {
            Edit::Reload { .. } | Edit::Ops { .. } => {}
            Edit::AddSa { text } => {
                let (t, before, n) = one(text, "sa")?;
                let sas = tables_mut(&mut doc, "sa")?;
                sas.push(t);
                added = Some(("sa", sas.len() - 1, before, n));
            }
            Edit::DelSa { name } => {
                let sas = tables_mut(&mut doc, "sa")?;
                let i = find(sas, "SA pair", name)?;
                sas.remove(i);
            }
            Edit::AddPolicy { text, position } => {
                let (t, before, n) = one(text, "policy")?;
                let pols = tables_mut(&mut doc, "policy")?;
                let at = slot(*position, pols.len())?;
                pols.insert(at, t);
                added = Some(("policy", at, before, n));
            }
            Edit::DelPolicy { name } => {
                let pols = tables_mut(&mut doc, "policy")?;
                let i = find(pols, "policy", name)?;
                pols.remove(i);
            }
            Edit::MovePolicy { name, position } => {
                let pols = tables_mut(&mut doc, "policy")?;
                let i = find(pols, "policy", name)?;
                let mut t = pols.remove(i);
                let at = slot(Some(*position), pols.len())?;
                t.set_position(None);
                pols.insert(at, t);
            }
        }
        for key in ["sa", "policy"] {
            if doc
                .get(key)
                .and_then(|i| i.as_array_of_tables())
                .is_some_and(|a| a.is_empty())
            {
                doc.remove(key);
            }
        }
        let Some((key, i, before, n)) = added else {
            return Ok((Source::new(&doc.to_string(), &self.source.path), None));
        };
        // the line of the client's table: render once with a mark before it
        fn table<'d>(
            doc: &'d mut toml_edit::DocumentMut,
            key: &str,
            i: usize,
        ) -> Option<&'d mut toml_edit::Decor> {
            doc.get_mut(key)
                .and_then(|x| x.as_array_of_tables_mut())
                .and_then(|a| a.get_mut(i))
                .map(|t| t.decor_mut())
        }
        if let Some(d) = table(&mut doc, key, i) {
            d.set_prefix(format!("\n{REQUEST_MARK}\n"));
        }
        let marked = Zeroizing::new(doc.to_string());
        let start = marked
            .lines()
            .position(|l| l == REQUEST_MARK)
            .map_or(0, |l| l + 1);
        if let Some(d) = table(&mut doc, key, i) {
            d.set_prefix("\n");
        }
        // the request's first line, where the header's line would have it
        Ok((
            Source::new(&doc.to_string(), &self.source.path),
            Some((start.saturating_sub(before), n)),
        ))
    }

    /// Validate a change, apply it to the store and compute the workers' part; the caller
    /// sends the rounds and then [`commit`](Running::commit)s — or
    /// [`revert`](Running::revert)s (a dry run). Refused: nothing changed.
    pub fn prepare(&mut self, edit: Edit, now: Timestamp) -> Result<Plan, Refusal> {
        let (client, ops, config) = match edit {
            Edit::Ops { client, ops } => (client, ops, None),
            edit => {
                let (cfg, source) = self.parse_edit(&edit)?;
                let mut state = ConfigState {
                    cfg,
                    source,
                    reqids: self.reqids.clone(),
                    next_reqid: self.next_reqid,
                };
                let ops = self.config_ops(&mut state);
                (CONFIG_CLIENT.to_owned(), ops, Some(state))
            }
        };
        let applied = self.store.apply(&client, ops).map_err(refused)?;
        match self.plan(&applied, config.is_some(), now) {
            Ok(p) => Ok(self.take(applied, p, config)),
            Err(e) => {
                self.store.revert(applied);
                Err(e)
            }
        }
    }

    /// The workers' rounds, the new SPD and the summary of what the store applied; nothing
    /// of `self` but the store is read, nothing is changed.
    fn plan(&self, applied: &Applied, config: bool, now: Timestamp) -> Result<Parts, Refusal> {
        let n = self.workers;
        let mut rounds: [Vec<Change>; 3] =
            std::array::from_fn(|_| (0..n).map(|_| Change::default()).collect::<Vec<_>>());
        let build = |id: &str, cfg: &SaConfig| -> Result<Box<Sa>, Refusal> {
            Sa::new(cfg, now)
                .map(Box::new)
                .map_err(|err| Refusal::new(kind::BAD_ARGS, format!("SA {id:?}: {err}")))
        };
        // (direction, SPI, worker) installed by this change: a removal of the same slot goes
        // in the same round, before it
        let installed: std::collections::HashSet<(SaKey, u16)> = applied
            .sas
            .iter()
            .filter_map(|d| d.after.as_ref())
            .flat_map(|(e, w)| {
                let ws: Vec<u16> = if *w == ALL_WORKERS {
                    (0..n as u16).collect()
                } else {
                    vec![(*w).min(n as u16 - 1)]
                };
                ws.into_iter().map(|w| (SaKey::of_config(&e.cfg), w))
            })
            .collect();
        let (mut added, mut removed, mut changed) = (vec![], vec![], vec![]);
        let mut peers = vec![];
        let mut inbound_spis = vec![];
        let mut hb: Vec<Vec<(SaKey, Option<Heartbeat>)>> = vec![vec![]; n];
        let mut shard_del = vec![];
        let mut shard_set = vec![];
        let mut reqids = vec![];
        // the workers that hold an SA placed at `w`
        let held_by = |w: u16| -> std::ops::Range<usize> {
            if w == ALL_WORKERS {
                0..n
            } else {
                let w = usize::from(w).min(n - 1);
                w..w + 1
            }
        };
        for d in &applied.sas {
            if let Some((o, ow)) = &d.before {
                for w in held_by(*ow) {
                    let key = SaKey::of_config(&o.cfg);
                    // the same SA of the store on the same worker: replaced in one step (its
                    // address may change: new endpoints)
                    let same_slot = d.after.as_ref().is_some_and(|(e, nw)| {
                        held_by(*nw).contains(&w)
                            && e.cfg.direction == o.cfg.direction
                            && e.cfg.spi == o.cfg.spi
                    });
                    let round = if same_slot || installed.contains(&(key, w as u16)) {
                        0
                    } else {
                        2
                    };
                    rounds[round][w].remove.push(SaKey::of_config(&o.cfg));
                    if heartbeat(o).is_some() {
                        hb[w].push((SaKey::of_config(&o.cfg), None));
                    }
                }
                match o.cfg.direction {
                    // an SA every worker holds has no owner to hand packets to
                    Direction::Inbound if *ow != ALL_WORKERS => {
                        shard_del.push(ShardEdit::Inbound(o.cfg.spi, None));
                    }
                    Direction::Inbound => {}
                    Direction::Outbound => reqids.push(o.cfg.reqid),
                }
            }
            if let Some((e, ew)) = &d.after {
                let holders = held_by(*ew);
                // copies on several workers: one anti-replay window, the lifetime's bytes
                // and packets shared out (so that together they never exceed it)
                let copies = holders.len();
                let (cfg, window) = if copies > 1 {
                    let mut c = e.cfg.clone();
                    for l in [&mut c.lifetime.soft, &mut c.lifetime.hard] {
                        let share = |v: u64| (v / copies as u64).max(1);
                        l.bytes = l.bytes.map(share);
                        l.packets = l.packets.map(share);
                    }
                    let w = Arc::new(SharedReplayWindow::new(c.replay_window, c.esn));
                    (std::borrow::Cow::Owned(c), Some(w))
                } else {
                    (std::borrow::Cow::Borrowed(&e.cfg), None)
                };
                for w in holders {
                    let carry = match &d.before {
                        Some((o, ow)) if held_by(*ow).contains(&w) && same_keys(&o.cfg, &e.cfg) => {
                            if endpoints_only(&o.cfg, &e.cfg) {
                                Carry::Everything
                            } else {
                                Carry::State
                            }
                        }
                        _ => Carry::Nothing,
                    };
                    let mut sa = build(&e.id, &cfg)?;
                    if let Some(win) = &window {
                        sa.share_replay(win.clone());
                    }
                    let from = d.before.as_ref().map(|(o, _)| SaKey::of_config(&o.cfg));
                    rounds[0][w].install.push((sa, carry, from));
                    if let Some(h) = heartbeat(e) {
                        hb[w].push((SaKey::of_config(&e.cfg), Some(h)));
                    }
                }
                match e.cfg.direction {
                    Direction::Inbound => {
                        if *ew != ALL_WORKERS {
                            let w = usize::from(*ew).min(n - 1) as u16;
                            shard_set.push(ShardEdit::Inbound(e.cfg.spi, Some(w)));
                        }
                        inbound_spis.push(e.cfg.spi);
                    }
                    Direction::Outbound => {
                        reqids.push(e.cfg.reqid);
                        if d.before
                            .as_ref()
                            .is_none_or(|(o, _)| o.cfg.remote != e.cfg.remote)
                        {
                            peers.extend(e.cfg.remote);
                        }
                    }
                }
            }
            match (&d.before, &d.after) {
                (None, Some(_)) => added.push(d.id.clone()),
                (Some(_), None) => removed.push(d.id.clone()),
                _ => changed.push(d.id.clone()),
            }
        }
        reqids.sort_unstable();
        reqids.dedup();
        let mut shards = shard_del;
        shards.append(&mut shard_set);
        for r in reqids {
            let w = self
                .store
                .has_outbound(r)
                .then(|| self.store.worker_of(r))
                .flatten();
            shards.push(ShardEdit::Outbound(r, w));
        }

        let spd = if applied.policies {
            let spd = Arc::new(
                self.store
                    .spd_config()
                    .compile()
                    .map_err(|e| Refusal::new(kind::CONFIG, format!("SPD: {e}")))?,
            );
            let carry = Arc::new(spd.carry_from(&self.spd));
            Some((spd, carry))
        } else {
            None
        };
        for (w, c) in rounds[1].iter_mut().enumerate() {
            c.shards.clone_from(&shards);
            c.spd.clone_from(&spd);
            c.heartbeats = std::mem::take(&mut hb[w]);
        }
        let unchanged = if config {
            let touched: std::collections::HashSet<&str> =
                applied.sas.iter().map(|d| d.id.as_str()).collect();
            self.store
                .sas()
                .filter(|e| e.client == CONFIG_CLIENT && !touched.contains(e.id.as_str()))
                .count()
        } else {
            0
        };
        let new_spd = spd.as_ref().map_or(&self.spd, |(s, _)| s);
        let summary = json!({
            "generation": self.generation + 1,
            "sas": {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged},
            "policies": {
                "in": policy_diff(&self.spd, new_spd, Direction::Inbound),
                "out": policy_diff(&self.spd, new_spd, Direction::Outbound),
            },
        });
        Ok(Parts {
            rounds,
            summary,
            peers,
            inbound_spis,
            spd: spd.map(|(s, _)| s),
        })
    }

    /// Take the state a plan leads to (the store has it already): endpoint sets, SPD,
    /// configuration; what it replaces is kept for [`Running::revert`].
    fn take(&mut self, applied: Applied, p: Parts, config: Option<ConfigState>) -> Plan {
        // (a few UDP ports; the peers, which may be one per tunnel, are listed only if they
        // changed)
        let old_ports = self.tunnel_ports();
        let mut ch = SetsChanged::default();
        for d in &applied.sas {
            if let Some((e, _)) = &d.before {
                self.sets.account(&e.cfg, false, &mut ch);
            }
            if let Some((e, _)) = &d.after {
                self.sets.account(&e.cfg, true, &mut ch);
            }
        }
        let mut rounds = p.rounds;
        // a peer that went and came back in one change is no edit
        for &(peer, add) in &ch.peers {
            if self.sets.peers.0.contains_key(&peer) == add {
                for c in &mut rounds[1] {
                    c.shards.push(ShardEdit::Peer(peer, add));
                }
            }
        }
        if ch.shards {
            let eps = self.sets.shard_endpoints();
            for c in &mut rounds[1] {
                c.shards.push(eps.clone());
            }
        }
        let spd = p.spd.map(|s| std::mem::replace(&mut self.spd, s));
        let mut summary = p.summary;
        let config = config.map(|mut state| {
            summary["pairs"] = pair_summary(&self.cfg, &state.cfg, &applied);
            summary["warnings"] = json!(
                state
                    .cfg
                    .warnings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
            std::mem::swap(&mut self.cfg, &mut state.cfg);
            std::mem::swap(&mut self.source, &mut state.source);
            std::mem::swap(&mut self.reqids, &mut state.reqids);
            std::mem::swap(&mut self.next_reqid, &mut state.next_reqid);
            state
        });
        Plan {
            rounds,
            summary,
            tunnel_ports: ch.tunnel_ports.then(|| (old_ports, self.tunnel_ports())),
            udp_peers: ch.udp_peers.then(|| self.udp_peers()),
            peers: p.peers,
            inbound_spis: p.inbound_spis,
            undo: Undo {
                applied,
                spd,
                config,
            },
        }
    }

    /// A plan was carried out: the generation advances; counters of removed SAs are kept.
    pub fn commit(&mut self, undo: Undo, removed: &[SaStatus]) {
        drop(undo);
        self.generation += 1;
        for st in removed {
            let by_name = self
                .retired
                .entry((st.info.name.clone(), st.direction))
                .or_default();
            by_name.add(st);
            self.retired_reqid
                .entry((st.reqid, st.direction))
                .or_default()
                .add(st);
        }
    }

    /// A plan was not carried out (a dry run, a stopping daemon): back to the state before.
    pub fn revert(&mut self, undo: Undo) {
        let mut ch = SetsChanged::default();
        for d in undo.applied.sas.iter().rev() {
            if let Some((e, _)) = &d.after {
                self.sets.account(&e.cfg, false, &mut ch);
            }
            if let Some((e, _)) = &d.before {
                self.sets.account(&e.cfg, true, &mut ch);
            }
        }
        self.store.revert(undo.applied);
        if let Some(s) = undo.spd {
            self.spd = s;
        }
        if let Some(mut state) = undo.config {
            std::mem::swap(&mut self.cfg, &mut state.cfg);
            std::mem::swap(&mut self.source, &mut state.source);
            std::mem::swap(&mut self.reqids, &mut state.reqids);
            std::mem::swap(&mut self.next_reqid, &mut state.next_reqid);
        }
    }
}

/// What [`Running::plan`] computed.
struct Parts {
    rounds: [Vec<Change>; 3],
    summary: Value,
    peers: Vec<IpAddr>,
    inbound_spis: Vec<u32>,
    spd: Option<Arc<Spd>>,
}

/// A configuration edit in the file's terms: which SA pairs were added, removed, changed.
fn pair_summary(old: &Config, new: &Config, applied: &Applied) -> Value {
    let names = |c: &Config| -> std::collections::BTreeSet<String> {
        c.sas.iter().map(|p| p.name.clone()).collect()
    };
    let (o, n) = (names(old), names(new));
    let touched: std::collections::BTreeSet<&str> = applied
        .sas
        .iter()
        .filter_map(|d| d.id.rsplit_once('/').map(|(name, _)| name))
        .collect();
    let changed: Vec<&String> = n
        .iter()
        .filter(|p| o.contains(*p) && touched.contains(p.as_str()))
        .collect();
    json!({
        "added": n.difference(&o).collect::<Vec<_>>(),
        "removed": o.difference(&n).collect::<Vec<_>>(),
        "changed": changed,
        "unchanged": n.iter().filter(|p| o.contains(*p) && !touched.contains(p.as_str())).count(),
    })
}

/// Which policies of a direction were added, removed, changed or reordered (O(P)).
fn policy_diff(old: &Spd, new: &Spd, dir: Direction) -> Value {
    let (old, new) = (old.policies(dir), new.policies(dir));
    let by_name = |v: &'_ [Policy]| -> HashMap<String, usize> {
        v.iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect()
    };
    let (o, n) = (by_name(old), by_name(new));
    let added: Vec<&str> = new
        .iter()
        .filter(|p| !o.contains_key(&p.name))
        .map(|p| p.name.as_str())
        .collect();
    let removed: Vec<&str> = old
        .iter()
        .filter(|p| !n.contains_key(&p.name))
        .map(|p| p.name.as_str())
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|p| {
            o.get(&p.name)
                .is_some_and(|&i| old[i].selector != p.selector || old[i].action != p.action)
        })
        .map(|p| p.name.as_str())
        .collect();
    let common_old = old
        .iter()
        .filter(|p| n.contains_key(&p.name))
        .map(|p| &p.name);
    let common_new = new
        .iter()
        .filter(|p| o.contains_key(&p.name))
        .map(|p| &p.name);
    json!({"added": added, "removed": removed, "changed": changed,
           "reordered": !common_old.eq(common_new)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::store::{Endpoints, PolicyEntry, test_sa};
    use xsec_dataplane::spd::Selector;

    const BASE: &str = r#"[gateway]
unprotected = "wan0"
protected = "lan0"
queues = [0, 1]

[[sa]]
name = "v4"
mode = "tunnel"
local = "10.0.0.1"
remote = "10.0.0.2"
spi_in = 0x100
spi_out = 0x200
encryption = "aes-gcm-128"
enc_key_in = "0x000102030405060708090a0b0c0d0e0f00010203"
enc_key_out = "0x101112131415161718191a1b1c1d1e1f10111213"

[[sa]]
name = "v6"
mode = "tunnel"
local = "10.0.0.1"
remote = "10.0.0.2"
spi_in = 0x300
spi_out = 0x400
encryption = "aes-gcm-128"
enc_key_in = "0x202122232425262728292a2b2c2d2e2f20212223"
enc_key_out = "0x303132333435363738393a3b3c3d3e3f30313233"

[[policy]]
name = "lan4"
local = "10.1.0.0/24"
remote = "10.2.0.0/24"
action = "protect"
sa = "v4"

[[policy]]
name = "lan6"
local = "fd01::/64"
remote = "fd02::/64"
action = "protect"
sa = "v6"
"#;

    const NOW: Timestamp = Timestamp::ZERO;

    fn running(text: &str) -> Running {
        let path = Path::new("base.toml");
        let cfg = config::parse(text, path).unwrap();
        Running::new(cfg, Source::new(text, path), 2).unwrap()
    }

    fn edit(r: &mut Running, e: Edit) -> Result<Plan, Refusal> {
        r.prepare(e, NOW)
    }

    /// Prepare and commit (as if the workers took it).
    fn done(r: &mut Running, e: Edit) -> Plan {
        let mut p = edit(r, e).unwrap();
        let undo = std::mem::replace(
            &mut p.undo,
            Undo {
                applied: Applied::default(),
                spd: None,
                config: None,
            },
        );
        r.commit(undo, &[]);
        p
    }

    fn reload(r: &mut Running, text: &str) -> Result<Plan, Refusal> {
        edit(
            r,
            Edit::Reload {
                path: PathBuf::from("new.toml"),
                text: Zeroizing::new(text.to_owned()),
            },
        )
    }

    /// (direction, SPI) of SA keys.
    fn keys(v: &[SaKey]) -> Vec<(Direction, u32)> {
        v.iter().map(|k| (k.dir, k.spi)).collect()
    }

    fn counts(p: &Plan) -> [(usize, usize); 3] {
        let f = |r: &Vec<Change>| {
            (
                r.iter().map(|c| c.remove.len()).sum(),
                r.iter().map(|c| c.install.len()).sum(),
            )
        };
        [f(&p.rounds[0]), f(&p.rounds[1]), f(&p.rounds[2])]
    }

    fn out_names(r: &Running) -> Vec<String> {
        r.spd
            .policies(Direction::Outbound)
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn ops(ops: Vec<Op>) -> Edit {
        Edit::Ops {
            client: "ike".into(),
            ops,
        }
    }

    /// The config client's edits go through toml_edit: the operator's comments and layout
    /// stay, an added [[sa]] follows the last one (not the policies), a policy goes where it
    /// is asked to and a moved one takes its comment with it; a request's error names the
    /// request's own line even after a leading comment.
    #[test]
    fn config_edits_keep_comments_and_place_tables() {
        let text = BASE
            .replace(
                "[gateway]",
                "# the site's gateway\n[gateway] # wan0 faces the ISP",
            )
            .replace(
                "[[policy]]\nname = \"lan6\"",
                "# IPv6 next\n[[policy]]\nname = \"lan6\"",
            );
        let mut r = running(&text);
        let v5 = BASE
            [BASE.find("[[sa]]\nname = \"v6\"").unwrap()..BASE.find("[[policy]]").unwrap()]
            .replace("\"v6\"", "\"v5\"")
            .replace("0x300", "0x500")
            .replace("0x400", "0x600");
        done(
            &mut r,
            Edit::AddSa {
                text: Zeroizing::new(v5),
            },
        );
        done(
            &mut r,
            Edit::MovePolicy {
                name: "lan6".into(),
                position: 1,
            },
        );
        let t = r.source.text();
        assert!(
            t.starts_with("# the site's gateway\n[gateway] # wan0 faces the ISP\n"),
            "{}",
            t.as_str()
        );
        let at = |needle: &str| {
            t.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in {}", t.as_str()))
        };
        assert!(
            at("name = \"v6\"") < at("name = \"v5\"") && at("name = \"v5\"") < at("[[policy]]")
        );
        assert!(at("# IPv6 next\n[[policy]]\nname = \"lan6\"") < at("name = \"lan4\""));
        assert_eq!(out_names(&r), ["lan6", "lan4"]);
        // the text parses back to the same configuration
        let again = config::parse(&t, Path::new("x.toml")).unwrap();
        assert_eq!(again.sas.len(), 3);
        done(&mut r, Edit::DelSa { name: "v5".into() });
        assert!(!r.source.text().contains("v5"));

        let bad = Edit::AddPolicy {
            text: Zeroizing::new("# mine\n\n[[policy]]\nname = \"x\"\nlocal = \"10.1.0.0/24\"\nremote = \"nowhere\"\naction = \"bypass\"\n".into()),
            position: Some(1),
        };
        let e = edit(&mut r, bad).unwrap_err();
        assert_eq!(e.diagnostics[0].path, PathBuf::from("<request>"));
        assert_eq!(
            (e.diagnostics[0].line, e.diagnostics[0].field.as_str()),
            (6, "policy.remote")
        );
        let two = Edit::AddPolicy {
            text: Zeroizing::new("[[policy]]\nname = \"a\"\naction = \"bypass\"\n[[policy]]\nname = \"b\"\naction = \"bypass\"\n".into()),
            position: None,
        };
        assert_eq!(edit(&mut r, two).unwrap_err().kind, kind::BAD_ARGS);
    }

    #[test]
    fn start_state_pairs_workers_and_reqids() {
        let r = running(BASE);
        assert_eq!(r.store.worker_of(1), Some(0));
        assert_eq!(r.store.worker_of(2), Some(1));
        let s = r.shard_map();
        assert_eq!(s.inbound[&0x300], 1);
        assert_eq!(s.outbound[&1], 0);
        assert_eq!(r.store.sa("v4/in").unwrap().cfg.spi, 0x100);
        assert_eq!(r.store.sa_count(), 4);
    }

    #[test]
    fn same_text_changes_nothing_not_even_the_spd() {
        let mut r = running(BASE);
        let spd = r.spd.clone();
        let p = reload(&mut r, BASE).unwrap();
        assert_eq!(counts(&p), [(0, 0), (0, 0), (0, 0)]);
        assert_eq!(p.summary["sas"]["unchanged"], 4);
        // the workers keep their SPD (its flow cache and counters): nothing is sent at all
        assert!(p.rounds.iter().flatten().all(Change::is_empty));
        assert!(Arc::ptr_eq(&r.spd, &spd));
    }

    /// A policy change sends the new SPD with the counters' mapping by index, computed once:
    /// a policy moved keeps its counter, a new one starts at zero.
    #[test]
    fn a_policy_change_carries_counters_by_index() {
        let mut r = running(BASE);
        let names = out_names(&r);
        let last = names.last().cloned().unwrap_or_default();
        let p = edit(
            &mut r,
            Edit::MovePolicy {
                name: last.clone(),
                position: 1,
            },
        )
        .unwrap();
        let (spd, carry) = p.rounds[1][0].spd.clone().expect("a new SPD");
        assert_eq!(spd.policies(Direction::Outbound)[0].name, last);
        let old_hits: Vec<u64> = (0..names.len() as u64).map(|i| 100 + i).collect();
        let new_hits = carry.apply(Direction::Outbound, &old_hits);
        for (i, pol) in spd.policies(Direction::Outbound).iter().enumerate() {
            let was = names
                .iter()
                .position(|n| *n == pol.name)
                .expect("same names");
            assert_eq!(new_hits[i], old_hits[was], "{}", pol.name);
        }
    }

    #[test]
    fn new_keys_replace_one_sa_only_and_restart_its_sequence() {
        let mut r = running(BASE);
        let text = BASE.replace(
            "0x202122232425262728292a2b2c2d2e2f20212223",
            "0xf0f1f2f3f4f5f6f7f8f9fafbfcfdfeff00000000",
        );
        let p = reload(&mut r, &text).unwrap();
        assert_eq!(p.summary["sas"]["changed"], json!(["v6/in"]));
        assert_eq!(p.summary["sas"]["unchanged"], 3);
        // only the inbound SA of v6 (its key changed), on v6's worker, replaced at once
        assert_eq!(counts(&p), [(1, 1), (0, 0), (0, 0)]);
        let c = &p.rounds[0][1];
        assert_eq!(keys(&c.remove), vec![(Direction::Inbound, 0x300)]);
        assert_eq!(
            c.install[0].1,
            Carry::Nothing,
            "new keys: nothing carried over"
        );
    }

    #[test]
    fn new_lifetime_keeps_the_sequence() {
        let mut r = running(BASE);
        let text = BASE.replace(
            "enc_key_out = \"0x303132333435363738393a3b3c3d3e3f30313233\"\n",
            "enc_key_out = \"0x303132333435363738393a3b3c3d3e3f30313233\"\n[sa.lifetime]\nsoft_packets = 5\nhard_packets = 10\n",
        );
        let p = reload(&mut r, &text).unwrap();
        assert_eq!(counts(&p), [(2, 2), (0, 0), (0, 0)]);
        assert!(
            p.rounds[0][1]
                .install
                .iter()
                .all(|(_, carry, _)| *carry == Carry::State)
        );
    }

    /// Pairs go to the workers round-robin in the file's order, whatever their names: the
    /// first pair (named so that it sorts last) on worker 0, the second on worker 1.
    #[test]
    fn pairs_are_dealt_to_workers_in_file_order() {
        let r = running(&BASE.replace("\"v4\"", "\"z4\""));
        assert_eq!(r.store.worker_of(r.reqids["z4"]), Some(0));
        assert_eq!(r.store.worker_of(r.reqids["v6"]), Some(1));
    }

    #[test]
    fn added_pair_gets_a_fresh_reqid_and_the_least_loaded_worker_removed_pair_goes_last() {
        let mut r = running(BASE);
        let v4 = &BASE[BASE.find("[[sa]]").unwrap()..BASE.find("[[sa]]\nname = \"v6\"").unwrap()];
        let extra = v4
            .replace("\"v4\"", "\"w4\"")
            .replace("0x100", "0x500")
            .replace("0x200", "0x600");
        let text = BASE
            .replace(v4, &extra)
            .replace("sa = \"v4\"", "sa = \"w4\"");
        let p = done(
            &mut r,
            Edit::Reload {
                path: PathBuf::from("new.toml"),
                text: Zeroizing::new(text),
            },
        );
        assert_eq!(p.summary["sas"]["added"], json!(["w4/in", "w4/out"]));
        assert_eq!(p.summary["sas"]["removed"], json!(["v4/in", "v4/out"]));
        assert_eq!(counts(&p), [(0, 2), (0, 0), (2, 0)]);
        assert_eq!(r.reqids["w4"], 3, "a new name never reuses a reqid");
        assert_eq!(r.reqids["v6"], 2);
        assert_eq!(r.store.sa("w4/out").unwrap().cfg.reqid, 3);
        let lan4 = &r.spd.policies(Direction::Outbound)[0];
        assert_eq!(lan4.action, Action::Protect(SaBundle::single(3)));
        // v4 held worker 0; after it leaves, w4 takes the least-loaded worker (0)
        assert_eq!(r.store.worker_of(3), Some(0));
        assert_eq!(r.shard_map().inbound[&0x500], 0);
        assert!(
            p.rounds[1][1]
                .shards
                .contains(&ShardEdit::Inbound(0x500, Some(0)))
        );
        assert!(
            p.rounds[1][1]
                .shards
                .contains(&ShardEdit::Inbound(0x100, None))
        );
    }

    #[test]
    fn gateway_changes_and_bad_text_are_refused_whole() {
        let mut r = running(BASE);
        let e = reload(&mut r, &BASE.replace("queues = [0, 1]", "queues = [0]")).unwrap_err();
        assert!(e.message.contains("gateway.queues"), "{}", e.message);
        let e = reload(&mut r, &BASE.replace("spi_in = 0x300", "spi_in = 0x100")).unwrap_err();
        assert_eq!(e.diagnostics[0].field, "sa[1].spi_in");
        assert_eq!(e.diagnostics[0].path, PathBuf::from("new.toml"));
        assert_eq!(
            e.diagnostics[0].line,
            BASE[..BASE.find("spi_in = 0x300").unwrap()].lines().count() + 1
        );
    }

    #[test]
    fn live_edits_policies_and_sas() {
        let mut r = running(BASE);
        let add = Edit::AddPolicy {
            text: Zeroizing::new("[[policy]]\nname = \"ssh\"\nlocal = \"10.1.0.0/24\"\nremote = \"any\"\nprotocol = \"tcp\"\nlocal_port = 22\naction = \"bypass\"\n".into()),
            position: Some(1),
        };
        let p = done(&mut r, add);
        assert_eq!(out_names(&r), ["ssh", "lan4", "lan6"]);
        assert_eq!(counts(&p), [(0, 0), (0, 0), (0, 0)]);
        let p = done(
            &mut r,
            Edit::MovePolicy {
                name: "lan6".into(),
                position: 1,
            },
        );
        assert_eq!(out_names(&r), ["lan6", "ssh", "lan4"]);
        assert_eq!(p.summary["policies"]["out"]["reordered"], true);

        // an error in the request is reported against the request's own lines
        let bad = Edit::AddPolicy {
            text: Zeroizing::new("[[policy]]\nname = \"x\"\nlocal = \"10.1.0.0/24\"\nremote = \"nowhere\"\naction = \"bypass\"\n".into()),
            position: None,
        };
        let e = edit(&mut r, bad).unwrap_err();
        assert_eq!(e.diagnostics[0].path, PathBuf::from("<request>"));
        assert_eq!(
            (e.diagnostics[0].line, e.diagnostics[0].field.as_str()),
            (4, "policy.remote")
        );
        // an SA a policy uses cannot go
        let e = edit(&mut r, Edit::DelSa { name: "v4".into() }).unwrap_err();
        assert!(
            e.message.contains("no [[sa]] is named \"v4\""),
            "{}",
            e.message
        );
        let e = edit(&mut r, Edit::DelSa { name: "zz".into() }).unwrap_err();
        assert_eq!(e.kind, kind::NOT_FOUND);
        let two = Edit::AddSa {
            text: Zeroizing::new("[[sa]]\nname=\"a\"\n[[sa]]\nname=\"b\"\n".into()),
        };
        assert_eq!(edit(&mut r, two).unwrap_err().kind, kind::BAD_ARGS);

        // remove a policy then its SA: the SA goes after the SPD no longer names it
        done(
            &mut r,
            Edit::DelPolicy {
                name: "lan6".into(),
            },
        );
        let p = done(&mut r, Edit::DelSa { name: "v6".into() });
        assert_eq!(counts(&p), [(0, 0), (0, 0), (2, 0)]);
        assert_eq!(p.rounds[2][1].remove.len(), 2);
    }

    /// RFC 7296 §2.8: install the new inbound SA, switch outbound, delete the old inbound
    /// later. Each step touches only its SA, on the reqid's worker, and never the SPD.
    /// Item 6: an inbound SA of worker "any" is installed on every worker (no shard entry:
    /// nobody hands its packets over), with the lifetime's bytes and packets shared out; an
    /// outbound SA pinned to a worker goes there whatever its reqid's worker; the placement
    /// cannot change and must exist.
    #[test]
    fn sas_on_any_worker_and_pinned_to_one() {
        let mut r = running(BASE);
        let mut any = test_sa("in-any", Direction::Inbound, 0xc000_0009, 60);
        any.placement = Placement::AnyWorker;
        any.cfg.lifetime.hard.packets = Some(1001);
        let p = done(&mut r, ops(vec![Op::AddSa(any.clone())]));
        assert_eq!(counts(&p), [(0, 2), (0, 0), (0, 0)]);
        for w in 0..2 {
            let (sa, carry, _) = &p.rounds[0][w].install[0];
            assert_eq!((sa.spi(), *carry), (0xc000_0009, Carry::Nothing));
            assert_eq!(sa.status(NOW).hard_packets, Some(500));
            assert!(
                !p.rounds[1][w]
                    .shards
                    .iter()
                    .any(|e| matches!(e, ShardEdit::Inbound(0xc000_0009, _))),
                "{:?}",
                p.rounds[1][w].shards
            );
        }
        let owner = r.store.worker_of(60).unwrap();
        let mut pinned = test_sa("out-w", Direction::Outbound, 0x0a00_0009, 60);
        pinned.placement = Placement::Worker(1 - owner);
        let p = done(&mut r, ops(vec![Op::AddSa(pinned.clone())]));
        assert_eq!(p.rounds[0][usize::from(1 - owner)].install.len(), 1);
        assert!(p.rounds[0][usize::from(owner)].install.is_empty());

        // refusals: no such worker, "any" outbound, a placement that changes
        let mut far = test_sa("out-far", Direction::Outbound, 0x0a00_000a, 60);
        far.placement = Placement::Worker(2);
        assert!(edit(&mut r, ops(vec![Op::AddSa(far)])).is_err());
        let mut any_out = test_sa("out-any", Direction::Outbound, 0x0a00_000b, 60);
        any_out.placement = Placement::AnyWorker;
        assert!(edit(&mut r, ops(vec![Op::AddSa(any_out)])).is_err());
        let mut moved = any.clone();
        moved.placement = Placement::Reqid;
        let e = edit(&mut r, ops(vec![Op::UpdateSa(moved)])).unwrap_err();
        assert!(e.message.contains("worker cannot change"), "{}", e.message);

        // an update of the any-worker SA replaces every copy in place; a deletion removes all
        let mut longer = any.clone();
        longer.cfg.lifetime.hard.packets = Some(4000);
        let p = done(&mut r, ops(vec![Op::UpdateSa(longer)]));
        for w in 0..2 {
            assert_eq!(
                keys(&p.rounds[0][w].remove),
                [(Direction::Inbound, 0xc000_0009)]
            );
            assert_eq!(p.rounds[0][w].install[0].1, Carry::State);
        }
        let p = done(&mut r, ops(vec![Op::DelSa("in-any".into())]));
        assert_eq!(counts(&p), [(0, 0), (0, 0), (2, 0)]);
    }

    #[test]
    fn make_before_break_steps_touch_one_sa_each() {
        let mut r = running(BASE);
        let pol = Policy {
            name: "ike-net".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(50)),
        };
        let p = done(
            &mut r,
            ops(vec![
                Op::AddSa(test_sa("in-1", Direction::Inbound, 0xc000_0001, 50)),
                Op::AddSa(test_sa("out-1", Direction::Outbound, 0x0a00_0001, 50)),
                Op::AddPolicy {
                    dir: Direction::Outbound,
                    entry: PolicyEntry {
                        client: String::new(),
                        policy: pol,
                    },
                    position: None,
                },
            ]),
        );
        let w = usize::from(r.store.worker_of(50).unwrap());
        assert_eq!(counts(&p), [(0, 2), (0, 0), (0, 0)]);
        assert!(p.rounds[1][0].spd.is_some(), "a policy was added");
        // the configuration's objects are untouched
        assert_eq!(r.store.sa_count(), 6);

        let p = done(
            &mut r,
            ops(vec![Op::AddSa(test_sa(
                "in-2",
                Direction::Inbound,
                0xc000_0002,
                50,
            ))]),
        );
        assert_eq!(counts(&p), [(0, 1), (0, 0), (0, 0)]);
        assert!(
            p.rounds[1].iter().all(|c| c.spd.is_none()),
            "an SA op leaves the SPD"
        );
        assert_eq!(
            p.rounds[1][0].shards,
            vec![ShardEdit::Inbound(0xc000_0002, Some(w as u16))]
        );
        let p = done(
            &mut r,
            ops(vec![
                Op::AddSa(test_sa("out-2", Direction::Outbound, 0x0a00_0002, 50)),
                Op::DelSa("out-1".into()),
            ]),
        );
        // the new outbound SA goes in before the old one leaves; both on the reqid's worker
        assert_eq!(p.rounds[0][w].install.len(), 1);
        assert_eq!(
            keys(&p.rounds[2][w].remove),
            vec![(Direction::Outbound, 0x0a00_0001)]
        );
        assert!(r.store.sa("in-1").is_some() && r.store.sa("in-2").is_some());
        let p = done(&mut r, ops(vec![Op::DelSa("in-1".into())]));
        assert_eq!(
            keys(&p.rounds[2][w].remove),
            vec![(Direction::Inbound, 0xc000_0001)]
        );
        assert!(
            p.rounds[1][0]
                .shards
                .contains(&ShardEdit::Inbound(0xc000_0001, None))
        );
    }

    #[test]
    fn endpoints_update_carries_everything_and_a_reload_leaves_other_clients_alone() {
        let mut r = running(BASE);
        let mut o = test_sa("out-1", Direction::Outbound, 0x0a00_0001, 50);
        o.cfg.encap = Encap::Udp {
            local_port: 4500,
            remote_port: 4500,
        };
        o.keepalive = Some(std::time::Duration::from_secs(20));
        let p = done(&mut r, ops(vec![Op::AddSa(o)]));
        let w = usize::from(r.store.worker_of(50).unwrap());
        assert!(matches!(
            p.rounds[1][w].heartbeats[..],
            [(
                SaKey {
                    spi: 0x0a00_0001,
                    ..
                },
                Some(_)
            )]
        ));
        let p = done(
            &mut r,
            ops(vec![Op::UpdateSaEndpoints {
                id: "out-1".into(),
                endpoints: Endpoints {
                    remote: Some("192.0.2.77".parse().unwrap()),
                    remote_port: Some(40000),
                    ..Endpoints::default()
                },
            }]),
        );
        assert_eq!(p.rounds[0][w].install[0].1, Carry::Everything);
        assert_eq!(
            keys(&p.rounds[0][w].remove),
            vec![(Direction::Outbound, 0x0a00_0001)]
        );
        assert_eq!(p.peers, vec!["192.0.2.77".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            p.udp_peers,
            Some(vec!["192.0.2.77".parse::<IpAddr>().unwrap()])
        );
        // a reload of the file (even one that removes everything of its own) keeps it
        let text = BASE[..BASE.find("[[sa]]").unwrap()].to_owned();
        done(
            &mut r,
            Edit::Reload {
                path: PathBuf::from("x.toml"),
                text: Zeroizing::new(text),
            },
        );
        assert_eq!(r.store.sa_count(), 1);
        assert!(r.store.sa("out-1").is_some());
    }

    #[test]
    fn a_dry_run_or_a_refused_batch_leaves_everything_as_it_was() {
        let mut r = running(BASE);
        let dump = |r: &Running| {
            let mut v: Vec<_> = r.store.sas().map(|e| (e.id.clone(), e.cfg.spi)).collect();
            v.sort();
            (
                v,
                out_names(r),
                r.tunnel_ports(),
                r.udp_peers(),
                r.shard_map().inbound.len(),
            )
        };
        let before = dump(&r);
        let mut o = test_sa("x", Direction::Outbound, 0x777, 60);
        o.cfg.encap = Encap::Udp {
            local_port: 2746,
            remote_port: 2746,
        };
        let p = edit(&mut r, ops(vec![Op::AddSa(o)])).unwrap();
        assert_eq!(r.tunnel_ports(), vec![2746]);
        r.revert(p.undo);
        assert_eq!(dump(&r), before);
        let text = BASE.replace("spi_out = 0x400", "spi_out = 0x401");
        let p = reload(&mut r, &text).unwrap();
        r.revert(p.undo);
        assert_eq!(dump(&r), before);
        assert_eq!(r.cfg.sas[1].outbound.spi, 0x400);
        // the engine refuses a key of the wrong length: nothing applied
        let mut bad = test_sa("y", Direction::Inbound, 0x778, 61);
        bad.cfg.enc_key = xsec_dataplane::sa::SecretKey::from_slice(&[1; 3]);
        assert!(
            edit(
                &mut r,
                ops(vec![
                    Op::AddSa(test_sa("z", Direction::Inbound, 0x779, 62)),
                    Op::AddSa(bad)
                ])
            )
            .is_err()
        );
        assert_eq!(dump(&r), before);
    }

    /// The state is self-consistent: every SA's reqid has a worker; the shard map agrees.
    fn consistent(r: &Running) -> Result<(), String> {
        let s = r.shard_map();
        for e in r.store.sas() {
            let w = r
                .store
                .worker_of(e.cfg.reqid)
                .ok_or(format!("{}: no worker", e.id))?;
            if usize::from(w) >= r.workers {
                return Err(format!("{}: worker {w} of {}", e.id, r.workers));
            }
            let ok = match e.cfg.direction {
                Direction::Inbound => s.inbound.get(&e.cfg.spi) == Some(&w),
                Direction::Outbound => s.outbound.get(&e.cfg.reqid) == Some(&w),
            };
            if !ok {
                return Err(format!("{}: shard map disagrees", e.id));
            }
        }
        for p in &r.cfg.sas {
            if p.inbound.reqid != p.outbound.reqid {
                return Err(format!("{}: two reqids", p.name));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Whatever text a reload or an edit carries, the answer is a refusal or a
        /// consistent state; a refusal or a revert leaves the state as it was.
        #[test]
        fn any_edit_is_refused_or_consistent(
            cuts in proptest::collection::vec((0usize..2000, 0usize..40, proptest::prelude::any::<u8>()), 0..6),
            op in 0u8..4,
        ) {
            let mut text = BASE.as_bytes().to_vec();
            for (at, len, b) in cuts {
                let at = at % text.len().max(1);
                match b % 3 {
                    0 => { text.drain(at..(at + len).min(text.len())); }
                    1 => { let piece = text[at..(at + len).min(text.len())].to_vec(); text.splice(at..at, piece); }
                    _ => { if let Some(x) = text.get_mut(at) { *x = b; } }
                }
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            let mut r = running(BASE);
            let e = match op {
                0 => Edit::Reload { path: PathBuf::from("x.toml"), text: Zeroizing::new(text) },
                1 => Edit::AddSa { text: Zeroizing::new(text) },
                2 => Edit::AddPolicy { text: Zeroizing::new(text), position: Some(2) },
                _ => Edit::DelSa { name: text.chars().take(8).collect() },
            };
            if let Ok(p) = r.prepare(e, NOW) {
                proptest::prop_assert_eq!(consistent(&r), Ok(()));
                r.revert(p.undo);
            }
            proptest::prop_assert_eq!(r.store.sa_count(), 4);
            proptest::prop_assert_eq!(consistent(&r), Ok(()));
        }
    }
}
