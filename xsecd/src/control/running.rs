//! The running configuration and transactional changes to it.
//!
//! Every change — `reload FILE`, `add sa`, `del policy`, `move policy`, ... — produces a
//! whole new configuration text, which is parsed and validated like a file. Only if that
//! succeeds is it compared with what runs ([`Running::prepare`]) and applied in three steps
//! (see [`Plan`]); an SA pair whose settings did not change is not touched: its sequence
//! numbers, replay window and counters go on as if nothing happened.
//!
//! Identity: an SA pair is known by its name. Its reqid (what policies point to) and its
//! worker are kept for as long as a pair of that name exists, so they survive reloads and
//! reordering. The counters of SAs that were replaced or removed are kept per name
//! ([`Retired`]) so that metrics keyed by name never go backwards.

use crate::config::{self, Config, ConfigError, Diagnostic, SaPair};
use crate::worker::{Change, Heartbeat};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xsec_dataplane::Shards;
use xsec_dataplane::sa::{Encap, Sa, SaConfig, SaStatus};
use xsec_dataplane::spd::{Action, Direction, Policy, SaBundle, Spd};
use xsec_dataplane::stats::DropCounters;
use xsec_dataplane::time::Timestamp;
use zeroize::Zeroizing;

/// What a piece of the configuration text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sa,
    Policy,
    Other,
}

/// One top-level table of the configuration text (with the comments that follow it).
#[derive(Debug, Clone)]
struct Fragment {
    kind: Kind,
    name: Option<String>,
    text: Zeroizing<String>,
}

/// The configuration text, cut into its top-level tables so that one `[[sa]]` or
/// `[[policy]]` can be added, removed or moved. Holds keys: zeroized when dropped.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    frags: Vec<Fragment>,
}

/// A header line: `[name]` or `[[name]]`, optionally followed by a comment.
fn header(line: &str) -> Option<(bool, &str)> {
    let l = line.trim();
    let l = match l.find('#') {
        Some(i) => l[..i].trim_end(),
        None => l,
    };
    let (arr, inner) = if let Some(x) = l.strip_prefix("[[").and_then(|x| x.strip_suffix("]]")) {
        (true, x)
    } else if let Some(x) = l.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        (false, x)
    } else {
        return None;
    };
    let inner = inner.trim();
    (!inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    .then_some((arr, inner))
}

/// The `name` of the single table of an `[[sa]]` or `[[policy]]` fragment.
fn fragment_name(text: &str, key: &str) -> Option<String> {
    let t: toml::Table = toml::from_str(text).ok()?;
    let arr = t.get(key)?.as_array()?;
    if arr.len() != 1 || t.len() != 1 {
        return None;
    }
    arr[0].get("name")?.as_str().map(str::to_owned)
}

impl Source {
    /// Cut `text` at its top-level headers. Header-looking lines inside multi-line strings
    /// are not headers.
    pub fn split(text: &str, path: &Path) -> Source {
        let mut frags: Vec<Fragment> = vec![];
        let mut cur = String::new();
        let mut kind = Kind::Other;
        let mut in_str: Option<&str> = None;
        let flush = |cur: &mut String, kind: Kind, frags: &mut Vec<Fragment>| {
            if cur.is_empty() {
                return;
            }
            let text = Zeroizing::new(std::mem::take(cur));
            let name = match kind {
                Kind::Sa => fragment_name(&text, "sa"),
                Kind::Policy => fragment_name(&text, "policy"),
                Kind::Other => None,
            };
            frags.push(Fragment { kind, name, text });
        };
        for line in text.split_inclusive('\n') {
            if in_str.is_none()
                && let Some((arr, name)) = header(line)
            {
                flush(&mut cur, kind, &mut frags);
                kind = match (arr, name) {
                    (true, "sa") => Kind::Sa,
                    (true, "policy") => Kind::Policy,
                    _ => Kind::Other,
                };
            }
            for delim in ["\"\"\"", "'''"] {
                let n = line.matches(delim).count();
                if n % 2 == 1 {
                    in_str = match in_str {
                        Some(d) if d == delim => None,
                        None => Some(delim),
                        other => other,
                    };
                }
            }
            cur.push_str(line);
            if !line.ends_with('\n') {
                cur.push('\n');
            }
        }
        flush(&mut cur, kind, &mut frags);
        Source {
            path: path.to_owned(),
            frags,
        }
    }

    /// The whole text.
    pub fn text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        for f in &self.frags {
            s.push_str(&f.text);
        }
        s
    }

    /// Why this text cannot be edited table by table, if it cannot.
    fn editable(&self) -> Result<(), String> {
        match self
            .frags
            .iter()
            .find(|f| f.kind != Kind::Other && f.name.is_none())
        {
            Some(f) => Err(format!(
                "the running configuration has a table that cannot be edited on its own (`{}`); \
                 edit the file and use `reload`",
                f.text.lines().next().unwrap_or("").trim()
            )),
            None => Ok(()),
        }
    }

    fn position(&self, kind: Kind, name: &str) -> Option<usize> {
        self.frags
            .iter()
            .position(|f| f.kind == kind && f.name.as_deref() == Some(name))
    }

    /// Where a policy placed at `position` (1 = first, `None` or past the end = last) goes.
    fn policy_slot(&self, position: Option<usize>) -> Result<usize, Refusal> {
        let pols: Vec<usize> = self
            .frags
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == Kind::Policy)
            .map(|(i, _)| i)
            .collect();
        match position {
            Some(0) => Err(Refusal::new(
                crate::control::proto::kind::BAD_ARGS,
                "positions start at 1",
            )),
            Some(p) if p <= pols.len() => Ok(pols[p - 1]),
            _ => Ok(pols.last().map_or(self.frags.len(), |i| i + 1)),
        }
    }

    fn names(&self, kind: Kind) -> Vec<&str> {
        self.frags
            .iter()
            .filter(|f| f.kind == kind)
            .filter_map(|f| f.name.as_deref())
            .collect()
    }
}

/// A change requested over the control socket.
#[derive(Debug)]
pub enum Edit {
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

/// What runs now.
#[derive(Debug)]
pub struct Running {
    pub cfg: Config,
    pub source: Source,
    pub spd: Arc<Spd>,
    pub shards: Arc<Shards>,
    /// SA pair name → reqid.
    reqids: HashMap<String, u32>,
    next_reqid: u32,
    /// SA pair name → worker.
    pub owner: BTreeMap<String, u16>,
    pub workers: usize,
    /// (SA pair name, direction) → counters of its retired SAs.
    pub retired: BTreeMap<(String, Direction), Retired>,
    /// Changes applied since start.
    pub generation: u64,
    /// `xsecd --control PATH`: replaces `control.socket` of every configuration read.
    pub socket_override: Option<PathBuf>,
}

/// A prepared change: three rounds of per-worker [`Change`]s, then the new state.
///
/// 1. SAs that are new or replaced are installed (a replaced SA is removed and its successor
///    installed in the same step, so its SPI is never unknown);
/// 2. every worker takes the new shard map, SPD and heartbeats;
/// 3. SAs no longer configured are removed.
///
/// Until step 2, the old SPD sends nothing to a new SA; after it, nothing points to a removed
/// one.
#[derive(Debug)]
pub struct Plan {
    pub rounds: [Vec<Change>; 3],
    pub next: Running,
    /// What changed, for the answer.
    pub summary: Value,
    /// Tunnel ports and UDP-encapsulated SAs' peers for the XDP program.
    pub tunnel_ports: Vec<u16>,
    pub udp_peers: Vec<IpAddr>,
    /// Tunnel peers to resolve now.
    pub peers: Vec<IpAddr>,
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

/// Pairs compared without their line number.
fn same_pair(a: &SaPair, b: &SaPair) -> bool {
    a.name == b.name
        && a.inbound == b.inbound
        && a.outbound == b.outbound
        && a.keepalive == b.keepalive
}

impl Running {
    /// The state at start: pair `i` gets reqid `i + 1` (as parsed) and worker `i mod n`.
    pub fn new(cfg: Config, source: Source, workers: usize) -> Result<Running, String> {
        let spd = Arc::new(cfg.spd.compile().map_err(|e| format!("SPD: {e}"))?);
        let n = workers.max(1);
        let mut r = Running {
            spd,
            shards: Arc::new(Shards::default()),
            reqids: HashMap::new(),
            next_reqid: 1,
            owner: BTreeMap::new(),
            workers: n,
            retired: BTreeMap::new(),
            generation: 0,
            socket_override: None,
            source,
            cfg,
        };
        for (i, p) in r.cfg.sas.iter().enumerate() {
            r.reqids.insert(p.name.clone(), p.outbound.reqid);
            r.next_reqid = r.next_reqid.max(p.outbound.reqid + 1);
            r.owner.insert(p.name.clone(), (i % n) as u16);
        }
        r.shards = Arc::new(r.shard_map());
        Ok(r)
    }

    fn shard_map(&self) -> Shards {
        let mut s = Shards::default();
        for p in &self.cfg.sas {
            let w = self.owner.get(&p.name).copied().unwrap_or(0);
            s.inbound.insert(p.inbound.spi, w);
            s.outbound.insert(p.outbound.reqid, w);
            if let Encap::Udp { local_port, .. } = p.inbound.encap {
                s.udp_ports.push(local_port);
                s.udp_locals.extend(p.inbound.local);
            }
            match p.inbound.remote {
                Some(r) => s.peers.push(r),
                None => s.any_peer = true,
            }
        }
        s.peers.sort_unstable();
        s.peers.dedup();
        s.udp_ports.sort_unstable();
        s.udp_ports.dedup();
        s.udp_locals.sort_unstable();
        s.udp_locals.dedup();
        s
    }

    /// Heartbeats of each worker's outbound UDP-encapsulated SAs.
    pub fn heartbeats(&self) -> Vec<Vec<Heartbeat>> {
        let mut out: Vec<Vec<Heartbeat>> = vec![vec![]; self.workers];
        for p in &self.cfg.sas {
            let w = usize::from(self.owner.get(&p.name).copied().unwrap_or(0));
            if let (
                Encap::Udp {
                    local_port,
                    remote_port,
                },
                Some(iv),
                Some(src),
                Some(dst),
            ) = (
                p.outbound.encap,
                p.keepalive,
                p.outbound.local,
                p.outbound.remote,
            ) && let Some(v) = out.get_mut(w)
            {
                v.push(Heartbeat {
                    reqid: p.outbound.reqid,
                    src,
                    dst,
                    sport: local_port,
                    dport: remote_port,
                    interval: iv,
                });
            }
        }
        out
    }

    /// UDP ports other than 4500 that carry ESP.
    pub fn tunnel_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .cfg
            .sas
            .iter()
            .filter_map(|p| match p.outbound.encap {
                Encap::Udp { local_port, .. } if local_port != 4500 => Some(local_port),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Peer addresses of the UDP-encapsulated SAs (both directions' remote endpoints), whose
    /// UDP fragments the XDP program steers to the workers for reassembly.
    pub fn udp_peers(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .cfg
            .sas
            .iter()
            .flat_map(|p| [&p.inbound, &p.outbound])
            .filter(|sa| matches!(sa.encap, Encap::Udp { .. }))
            .filter_map(|sa| sa.remote)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The SA pair a reqid belongs to.
    pub fn pair_by_reqid(&self, reqid: u32) -> Option<&SaPair> {
        self.cfg.sas.iter().find(|p| p.outbound.reqid == reqid)
    }

    /// The SAs to install at start, per worker.
    pub fn initial_sas(&self, now: Timestamp) -> Result<Vec<Vec<Sa>>, String> {
        let mut out: Vec<Vec<Sa>> = (0..self.workers).map(|_| vec![]).collect();
        for p in &self.cfg.sas {
            let w = usize::from(self.owner.get(&p.name).copied().unwrap_or(0));
            for sc in [&p.inbound, &p.outbound] {
                out[w].push(Sa::new(sc, now).map_err(|e| format!("SA {}: {e}", p.name))?);
            }
        }
        Ok(out)
    }

    /// The text a change produces, and where the client's part of it starts (its lines are
    /// reported against `<request>`).
    fn edited(&self, edit: &Edit) -> Result<(Source, Option<(usize, usize)>), Refusal> {
        let lines = |s: &str| s.lines().count();
        let mut src = self.source.clone();
        let one = |text: &str, key: &str| -> Result<(), Refusal> {
            let t: toml::Table = toml::from_str(text).map_err(|e| {
                Refusal::new(
                    crate::control::proto::kind::CONFIG,
                    format!("<request>: {}", e.message().trim_end()),
                )
            })?;
            let n = t.get(key).and_then(|v| v.as_array()).map_or(0, Vec::len);
            if n != 1 || t.len() != 1 {
                return Err(Refusal::new(
                    crate::control::proto::kind::BAD_ARGS,
                    format!("<request>: expected exactly one [[{key}]] table and nothing else"),
                ));
            }
            Ok(())
        };
        let insert = |src: &mut Source, at: usize, kind: Kind, text: &str| {
            let mut t = Zeroizing::new(text.to_owned());
            if !t.ends_with('\n') {
                t.push('\n');
            }
            let name = fragment_name(&t, if kind == Kind::Sa { "sa" } else { "policy" });
            src.frags.insert(
                at,
                Fragment {
                    kind,
                    name,
                    text: t,
                },
            );
            let start: usize = src.frags[..at].iter().map(|f| lines(&f.text)).sum();
            (start + 1, lines(text))
        };
        if !matches!(edit, Edit::Reload { .. }) {
            src.editable()
                .map_err(|m| Refusal::new(crate::control::proto::kind::CONFIG, m))?;
        }
        let not_found = |what: &str, name: &str, known: Vec<&str>| {
            Refusal::new(
                crate::control::proto::kind::NOT_FOUND,
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
        // where the table of that kind and name is in the running text
        let find = |kind: Kind, name: &str| -> Result<usize, Refusal> {
            let what = if kind == Kind::Sa {
                "SA pair"
            } else {
                "policy"
            };
            self.source
                .position(kind, name)
                .ok_or_else(|| not_found(what, name, self.source.names(kind)))
        };
        let span = match edit {
            Edit::Reload { path, text } => {
                return Ok((Source::split(text, path), None));
            }
            Edit::AddSa { text } => {
                one(text, "sa")?;
                // after the last [[sa]], else before the first [[policy]], else at the end
                let at = match src.frags.iter().rposition(|f| f.kind == Kind::Sa) {
                    Some(i) => i + 1,
                    None => src
                        .frags
                        .iter()
                        .position(|f| f.kind == Kind::Policy)
                        .unwrap_or(src.frags.len()),
                };
                Some(insert(&mut src, at, Kind::Sa, text))
            }
            Edit::DelSa { name } => {
                let i = find(Kind::Sa, name)?;
                src.frags.remove(i);
                None
            }
            Edit::AddPolicy { text, position } => {
                one(text, "policy")?;
                let at = src.policy_slot(*position)?;
                Some(insert(&mut src, at, Kind::Policy, text))
            }
            Edit::DelPolicy { name } => {
                let i = find(Kind::Policy, name)?;
                src.frags.remove(i);
                None
            }
            Edit::MovePolicy { name, position } => {
                let i = find(Kind::Policy, name)?;
                let f = src.frags.remove(i);
                let at = src.policy_slot(Some(*position))?;
                src.frags.insert(at, f);
                None
            }
        };
        Ok((src, span))
    }

    /// Validate a change and compute its plan; nothing is applied.
    pub fn prepare(&self, edit: &Edit, now: Timestamp) -> Result<Plan, Refusal> {
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
                    kind: crate::control::proto::kind::CONFIG,
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
                crate::control::proto::kind::CONFIG,
                format!(
                    "{} cannot change while xsecd runs (restart it for that); nothing was applied: {}",
                    path.display(),
                    fixed.join("; ")
                ),
            ));
        }

        // Stable reqids: a pair keeps the reqid of the running pair of its name.
        let mut reqids = self.reqids.clone();
        let mut next_reqid = self.next_reqid;
        let mut map: HashMap<u32, u32> = HashMap::new();
        for p in &mut cfg.sas {
            let r = *reqids.entry(p.name.clone()).or_insert_with(|| {
                next_reqid += 1;
                next_reqid - 1
            });
            map.insert(p.outbound.reqid, r);
            p.inbound.reqid = r;
            p.outbound.reqid = r;
        }
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
        let spd =
            Arc::new(cfg.spd.compile().map_err(|e| {
                Refusal::new(crate::control::proto::kind::CONFIG, format!("SPD: {e}"))
            })?);

        // Workers: a pair keeps its worker; a new one goes to the least loaded.
        let mut owner: BTreeMap<String, u16> = BTreeMap::new();
        let mut load = vec![0usize; self.workers];
        for p in &cfg.sas {
            if let Some(&w) = self.owner.get(&p.name) {
                owner.insert(p.name.clone(), w);
                load[usize::from(w)] += 1;
            }
        }
        for p in &cfg.sas {
            if !owner.contains_key(&p.name) {
                let w = (0..self.workers).min_by_key(|&i| (load[i], i)).unwrap_or(0);
                load[w] += 1;
                owner.insert(p.name.clone(), w as u16);
            }
        }

        // The SA difference.
        let mut rounds: [Vec<Change>; 3] = [
            (0..self.workers).map(|_| Change::default()).collect(),
            (0..self.workers).map(|_| Change::default()).collect(),
            (0..self.workers).map(|_| Change::default()).collect(),
        ];
        let (mut added, mut removed, mut changed, mut unchanged) = (vec![], vec![], vec![], 0);
        let mut peers = vec![];
        let build = |sc: &SaConfig| -> Result<Box<Sa>, Refusal> {
            Sa::new(sc, now).map(Box::new).map_err(|e| {
                Refusal::new(
                    crate::control::proto::kind::CONFIG,
                    format!("SA {} ({}): {e}", sc.name, sc.direction.name()),
                )
            })
        };
        let mut installs: Vec<(u16, Direction, u32)> = vec![];
        for p in &cfg.sas {
            let w = owner[&p.name];
            let wi = usize::from(w);
            match self.cfg.sas.iter().find(|o| o.name == p.name) {
                None => {
                    for sc in [&p.inbound, &p.outbound] {
                        rounds[0][wi].install.push((build(sc)?, false));
                        installs.push((w, sc.direction, sc.spi));
                    }
                    peers.extend(p.outbound.remote);
                    added.push(p.name.clone());
                }
                Some(o) if same_pair(o, p) => unchanged += 1,
                Some(o) => {
                    for (old, new) in [(&o.inbound, &p.inbound), (&o.outbound, &p.outbound)] {
                        if old == new {
                            continue;
                        }
                        rounds[0][wi].remove.push((old.direction, old.spi));
                        rounds[0][wi]
                            .install
                            .push((build(new)?, same_keys(old, new)));
                        installs.push((w, new.direction, new.spi));
                    }
                    if o.outbound.remote != p.outbound.remote {
                        peers.extend(p.outbound.remote);
                    }
                    changed.push(p.name.clone());
                }
            }
        }
        for o in &self.cfg.sas {
            if cfg.sas.iter().any(|p| p.name == o.name) {
                continue;
            }
            let w = self.owner.get(&o.name).copied().unwrap_or(0);
            for sc in [&o.inbound, &o.outbound] {
                // a removed SA whose SPI a new one takes on the same worker goes first
                let round = if installs.contains(&(w, sc.direction, sc.spi)) {
                    0
                } else {
                    2
                };
                rounds[round][usize::from(w)]
                    .remove
                    .push((sc.direction, sc.spi));
            }
            removed.push(o.name.clone());
        }

        // Policies unchanged (an SA-only edit): the workers keep their SPD, its flow cache
        // and counters. Changed: they swap a pointer and carry counters by index, the mapping
        // computed here once (O(P)).
        let spd_change = if spd.config() == self.spd.config() {
            None
        } else {
            Some((spd.clone(), Arc::new(spd.carry_from(&self.spd))))
        };
        let spd = if spd_change.is_none() {
            self.spd.clone()
        } else {
            spd
        };
        let mut next = Running {
            spd: spd.clone(),
            shards: Arc::new(Shards::default()),
            reqids,
            next_reqid,
            owner,
            workers: self.workers,
            retired: BTreeMap::new(), // carried over by the caller
            generation: self.generation + 1,
            socket_override: self.socket_override.clone(),
            source: src,
            cfg,
        };
        next.shards = Arc::new(next.shard_map());
        let hbs = next.heartbeats();
        for (i, (c, hb)) in rounds[1].iter_mut().zip(hbs).enumerate() {
            let _ = i;
            c.shards = Some(next.shards.clone());
            c.spd = spd_change.clone();
            c.heartbeats = Some(hb);
        }

        let policy_diff = |dir: Direction| -> Value {
            let (old, new) = (self.spd.policies(dir), spd.policies(dir));
            let names = |v: &[Policy]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            let added: Vec<String> = new
                .iter()
                .filter(|p| !old.iter().any(|o| o.name == p.name))
                .map(|p| p.name.clone())
                .collect();
            let removed: Vec<String> = old
                .iter()
                .filter(|o| !new.iter().any(|p| o.name == p.name))
                .map(|p| p.name.clone())
                .collect();
            let changed: Vec<String> = new
                .iter()
                .filter(|p| {
                    old.iter().any(|o| {
                        o.name == p.name && (o.selector != p.selector || o.action != p.action)
                    })
                })
                .map(|p| p.name.clone())
                .collect();
            let common_old: Vec<String> = names(old)
                .into_iter()
                .filter(|n| new.iter().any(|p| &p.name == n))
                .collect();
            let common_new: Vec<String> = names(new)
                .into_iter()
                .filter(|n| old.iter().any(|p| &p.name == n))
                .collect();
            json!({"added": added, "removed": removed, "changed": changed,
                   "reordered": common_old != common_new})
        };
        let summary = json!({
            "generation": next.generation,
            "sas": {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged},
            "policies": {"in": policy_diff(Direction::Inbound), "out": policy_diff(Direction::Outbound)},
            "warnings": next.cfg.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        Ok(Plan {
            rounds,
            tunnel_ports: next.tunnel_ports(),
            udp_peers: next.udp_peers(),
            peers,
            summary,
            next,
        })
    }

    /// Take over the state of a plan that was applied; counters of removed SAs are kept.
    pub fn commit(&mut self, mut next: Running, removed: &[SaStatus]) {
        next.retired = std::mem::take(&mut self.retired);
        for st in removed {
            let r = next
                .retired
                .entry((st.info.name.clone(), st.direction))
                .or_default();
            r.packets += st.packets;
            r.bytes += st.bytes;
            r.drops.add(&st.drops);
            r.generations += 1;
        }
        *self = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn running(text: &str) -> Running {
        let path = Path::new("base.toml");
        let cfg = config::parse(text, path).unwrap();
        Running::new(cfg, Source::split(text, path), 2).unwrap()
    }

    fn reload(r: &Running, text: &str) -> Result<Plan, Refusal> {
        r.prepare(
            &Edit::Reload {
                path: PathBuf::from("new.toml"),
                text: Zeroizing::new(text.to_owned()),
            },
            Timestamp::from_nanos(1),
        )
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

    #[test]
    fn split_keeps_the_text_and_finds_names() {
        let t = "# head\n[gateway]\nunprotected = \"a\"\n\n[[sa]]\nname = \"x\"\nnote = \"\"\"\n[[policy]]\n\"\"\"\n[[policy]] # c\nname = \"p\"\n";
        let s = Source::split(t, Path::new("f.toml"));
        assert_eq!(s.text().as_str(), t);
        let kinds: Vec<_> = s.frags.iter().map(|f| (f.kind, f.name.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Other, None),
                (Kind::Other, None),
                (Kind::Sa, Some("x".into())),
                (Kind::Policy, Some("p".into())),
            ]
        );
    }

    #[test]
    fn start_state_pairs_workers_and_reqids() {
        let r = running(BASE);
        assert_eq!(r.owner["v4"], 0);
        assert_eq!(r.owner["v6"], 1);
        assert_eq!(r.shards.inbound[&0x300], 1);
        assert_eq!(r.shards.outbound[&1], 0);
    }

    #[test]
    fn same_text_changes_nothing_not_even_the_spd() {
        let r = running(BASE);
        let p = reload(&r, BASE).unwrap();
        assert_eq!(counts(&p), [(0, 0), (0, 0), (0, 0)]);
        assert_eq!(p.summary["sas"]["unchanged"], 2);
        // the workers keep their SPD (its flow cache and counters): same policies
        assert!(
            p.rounds[1]
                .iter()
                .all(|c| c.spd.is_none() && c.shards.is_some())
        );
        assert!(Arc::ptr_eq(&p.next.spd, &r.spd));
    }

    /// A policy change sends the new SPD with the counters' mapping by index, computed once:
    /// a policy moved keeps its counter, a new one starts at zero.
    #[test]
    fn a_policy_change_carries_counters_by_index() {
        let r = running(BASE);
        let names: Vec<String> = r
            .spd
            .policies(Direction::Outbound)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert!(names.len() >= 2, "{names:?}");
        // the same policies, the last first
        let last = names.last().cloned().unwrap_or_default();
        let moved = Edit::MovePolicy {
            name: last.clone(),
            position: 1,
        };
        let p = r.prepare(&moved, Timestamp::ZERO).unwrap();
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
    fn new_keys_replace_one_sa_pair_only_and_restart_its_sequence() {
        let r = running(BASE);
        let text = BASE.replace(
            "0x202122232425262728292a2b2c2d2e2f20212223",
            "0xf0f1f2f3f4f5f6f7f8f9fafbfcfdfeff00000000",
        );
        let p = reload(&r, &text).unwrap();
        assert_eq!(p.summary["sas"]["changed"], json!(["v6"]));
        assert_eq!(p.summary["sas"]["unchanged"], 1);
        // only the inbound SA of v6 (its key changed), on v6's worker, replaced at once
        assert_eq!(counts(&p), [(1, 1), (0, 0), (0, 0)]);
        let c = &p.rounds[0][1];
        assert_eq!(c.remove, vec![(Direction::Inbound, 0x300)]);
        assert!(
            !c.install[0].1,
            "new keys: a new SA, no sequence carried over"
        );
        assert_eq!(p.next.owner["v6"], 1);
    }

    #[test]
    fn new_lifetime_keeps_the_sequence() {
        let r = running(BASE);
        let text = BASE.replace(
            "enc_key_out = \"0x303132333435363738393a3b3c3d3e3f30313233\"\n",
            "enc_key_out = \"0x303132333435363738393a3b3c3d3e3f30313233\"\n[sa.lifetime]\nsoft_packets = 5\nhard_packets = 10\n",
        );
        let p = reload(&r, &text).unwrap();
        assert_eq!(counts(&p), [(2, 2), (0, 0), (0, 0)]);
        assert!(p.rounds[0][1].install.iter().all(|(_, carry)| *carry));
    }

    #[test]
    fn added_pair_gets_a_fresh_reqid_and_the_least_loaded_worker_removed_pair_goes_last() {
        let r = running(BASE);
        let v4 = &BASE[BASE.find("[[sa]]").unwrap()..BASE.find("[[sa]]\nname = \"v6\"").unwrap()];
        let extra = v4
            .replace("\"v4\"", "\"w4\"")
            .replace("0x100", "0x500")
            .replace("0x200", "0x600");
        // drop v4 (and its policy), add w4 used by lan4
        let text = BASE
            .replace(v4, &extra)
            .replace("sa = \"v4\"", "sa = \"w4\"");
        let p = reload(&r, &text).unwrap();
        assert_eq!(p.summary["sas"]["added"], json!(["w4"]));
        assert_eq!(p.summary["sas"]["removed"], json!(["v4"]));
        assert_eq!(counts(&p), [(0, 2), (0, 0), (2, 0)]);
        assert_eq!(p.next.reqids["w4"], 3, "a new name never reuses a reqid");
        assert_eq!(p.next.reqids["v6"], 2);
        let w4 = p.next.cfg.sas.iter().find(|s| s.name == "w4").unwrap();
        assert_eq!(w4.outbound.reqid, 3);
        let lan4 = &p.next.spd.policies(Direction::Outbound)[0];
        assert_eq!(lan4.action, Action::Protect(SaBundle::single(3)));
        // v4 held worker 0; after it leaves, w4 takes the least-loaded worker (0)
        assert_eq!(p.next.owner["w4"], 0);
        assert_eq!(p.next.shards.inbound[&0x500], 0);
    }

    #[test]
    fn gateway_changes_and_bad_text_are_refused_whole() {
        let r = running(BASE);
        let e = reload(&r, &BASE.replace("queues = [0, 1]", "queues = [0]")).unwrap_err();
        assert!(e.message.contains("gateway.queues"), "{}", e.message);
        let e = reload(&r, &BASE.replace("spi_in = 0x300", "spi_in = 0x100")).unwrap_err();
        assert_eq!(e.diagnostics[0].field, "sa[1].spi_in");
        assert_eq!(e.diagnostics[0].path, PathBuf::from("new.toml"));
        assert_eq!(
            e.diagnostics[0].line,
            BASE[..BASE.find("spi_in = 0x300").unwrap()].lines().count() + 1
        );
    }

    #[test]
    fn live_edits_policies_and_sas() {
        let r = running(BASE);
        let now = Timestamp::from_nanos(1);
        let add = Edit::AddPolicy {
            text: Zeroizing::new("[[policy]]\nname = \"ssh\"\nlocal = \"10.1.0.0/24\"\nremote = \"any\"\nprotocol = \"tcp\"\nlocal_port = 22\naction = \"bypass\"\n".into()),
            position: Some(1),
        };
        let p = r.prepare(&add, now).unwrap();
        let names: Vec<_> = p
            .next
            .spd
            .policies(Direction::Outbound)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["ssh", "lan4", "lan6"]);
        assert_eq!(counts(&p), [(0, 0), (0, 0), (0, 0)]);

        let mv = Edit::MovePolicy {
            name: "lan4".into(),
            position: 2,
        };
        let p = r.prepare(&mv, now).unwrap();
        let names: Vec<_> = p
            .next
            .spd
            .policies(Direction::Outbound)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["lan6", "lan4"]);
        assert_eq!(p.summary["policies"]["out"]["reordered"], true);

        // an error in the request is reported against the request's own lines
        let bad = Edit::AddPolicy {
            text: Zeroizing::new("[[policy]]\nname = \"x\"\nlocal = \"10.1.0.0/24\"\nremote = \"nowhere\"\naction = \"bypass\"\n".into()),
            position: None,
        };
        let e = r.prepare(&bad, now).unwrap_err();
        assert_eq!(e.diagnostics[0].path, PathBuf::from("<request>"));
        assert_eq!(
            (e.diagnostics[0].line, e.diagnostics[0].field.as_str()),
            (4, "policy.remote")
        );

        // an SA a policy uses cannot go
        let e = r
            .prepare(&Edit::DelSa { name: "v4".into() }, now)
            .unwrap_err();
        assert!(
            e.message.contains("no [[sa]] is named \"v4\""),
            "{}",
            e.message
        );
        let e = r
            .prepare(&Edit::DelSa { name: "zz".into() }, now)
            .unwrap_err();
        assert_eq!(e.kind, crate::control::proto::kind::NOT_FOUND);
        // two tables in one request
        let two = Edit::AddSa {
            text: Zeroizing::new("[[sa]]\nname=\"a\"\n[[sa]]\nname=\"b\"\n".into()),
        };
        assert_eq!(
            r.prepare(&two, now).unwrap_err().kind,
            crate::control::proto::kind::BAD_ARGS
        );

        // remove a policy then its SA
        let p = r
            .prepare(
                &Edit::DelPolicy {
                    name: "lan6".into(),
                },
                now,
            )
            .unwrap();
        let mut r2 = running(BASE);
        r2.commit(p.next, &[]);
        let p = r2.prepare(&Edit::DelSa { name: "v6".into() }, now).unwrap();
        assert_eq!(counts(&p), [(0, 0), (0, 0), (2, 0)]);
        assert_eq!(p.rounds[2][1].remove.len(), 2);
    }

    /// A plan's state is self-consistent: every pair has a worker, the shard map agrees, the
    /// reqids are unique and every PROTECT policy points to a configured pair.
    fn consistent(p: &Plan) -> Result<(), String> {
        let n = &p.next;
        let mut seen = std::collections::HashSet::new();
        for sa in &n.cfg.sas {
            let w = *n
                .owner
                .get(&sa.name)
                .ok_or(format!("{}: no worker", sa.name))?;
            if usize::from(w) >= n.workers {
                return Err(format!("{}: worker {w} of {}", sa.name, n.workers));
            }
            if n.shards.inbound.get(&sa.inbound.spi) != Some(&w)
                || n.shards.outbound.get(&sa.outbound.reqid) != Some(&w)
            {
                return Err(format!("{}: shard map disagrees", sa.name));
            }
            if sa.inbound.reqid != sa.outbound.reqid || !seen.insert(sa.outbound.reqid) {
                return Err(format!("{}: reqid {} reused", sa.name, sa.outbound.reqid));
            }
        }
        for dir in [Direction::Inbound, Direction::Outbound] {
            for pol in n.spd.policies(dir) {
                if let Action::Protect(b) = &pol.action {
                    for r in b.reqids() {
                        if n.pair_by_reqid(*r).is_none() {
                            return Err(format!("{}: reqid {r} has no pair", pol.name));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Whatever text a reload or an edit carries, the answer is a refusal or a
        /// consistent plan: never a panic.
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
            let r = running(BASE);
            let now = Timestamp::from_nanos(1);
            let edit = match op {
                0 => Edit::Reload { path: PathBuf::from("x.toml"), text: Zeroizing::new(text) },
                1 => Edit::AddSa { text: Zeroizing::new(text) },
                2 => Edit::AddPolicy { text: Zeroizing::new(text), position: Some(2) },
                _ => Edit::DelSa { name: text.chars().take(8).collect() },
            };
            if let Ok(p) = r.prepare(&edit, now) {
                proptest::prop_assert_eq!(consistent(&p), Ok(()));
            }
        }
    }
}
