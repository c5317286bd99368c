//! SA and policy objects of control protocol v2: what a client sends (`add-sa`,
//! `add-policy`, ...) and what `dump` answers. Keys travel as hex strings held in zeroizing
//! buffers, and are never sent back: a dump gives their lengths.

use super::store::{Endpoints, Placement, PolicyEntry, SaEntry};
use super::{Fail, bad, parse_spi};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::replay::DEFAULT_WINDOW;
use xsec_dataplane::sa::{
    CompAlg, DfMode, DscpMode, EcnMode, Encap, Lifetime, Limits, Mode, Protocol, SaConfig,
    SecretKey,
};
use xsec_dataplane::spd::selector::parse_protocol;
use xsec_dataplane::spd::{Action, AddrRange, Direction, Policy, PortSel, SaBundle, Selector};
use zeroize::Zeroizing;

/// An SPI as JSON: a number, or a string in decimal or `0x` hex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Spi {
    Num(u32),
    Text(String),
}

impl Spi {
    fn get(&self, field: &str) -> Result<u32, Fail> {
        match self {
            Spi::Num(n) => Ok(*n),
            Spi::Text(s) => parse_spi(s)
                .ok_or_else(|| bad(format!("{field}: {s:?} is not an SPI (decimal or 0x-hex)"))),
        }
    }
}

/// One SA, one direction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaSpec {
    /// The client's name for this SA (unique in the store).
    pub id: String,
    /// Label of its counters (kept across rekeys that reuse it); default: `id`.
    pub name: Option<String>,
    /// `in` or `out`.
    pub direction: String,
    pub spi: Spi,
    pub reqid: u32,
    /// `tunnel` (default) or `transport`.
    pub mode: Option<String>,
    /// `esp` (default), `ah` or `ipcomp` (then `spi` is the CPI).
    pub protocol: Option<String>,
    /// IPComp: `deflate` or `lzs`.
    pub compression: Option<String>,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    /// `none` (default), `nat-t` (UDP 4500) or `udp` (ESP-in-UDP 2746).
    pub encap: Option<String>,
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
    /// NAT keepalive / heartbeat interval of an outbound UDP-encapsulated SA (0: off).
    pub keepalive_s: Option<u64>,
    /// Required for ESP; AH takes none (or `null`).
    pub encryption: Option<String>,
    pub enc_key: Option<Zeroizing<String>>,
    /// Default `none` (combined modes).
    pub integrity: Option<String>,
    pub auth_key: Option<Zeroizing<String>>,
    #[serde(default)]
    pub allow_legacy: bool,
    #[serde(default)]
    pub esn: bool,
    pub replay_window: Option<u32>,
    pub lifetime: Option<LifetimeSpec>,
    /// Traffic selectors an inbound SA accepts after decapsulation (none: nothing).
    #[serde(default)]
    pub selectors: Vec<SelectorSpec>,
    /// `copy` (default) or 0-63.
    pub dscp: Option<Value>,
    /// `normal` (default) or `compatibility`.
    pub ecn: Option<String>,
    /// `copy` (default), `set` or `clear`.
    pub df: Option<String>,
    pub ttl: Option<u8>,
    /// Which workers hold it: a number (an outbound SA of that worker, RFC 9611: several
    /// outbound SAs of one reqid, one per worker), `"any"` (an inbound SA every worker
    /// processes, sharing one anti-replay window), or absent (the reqid's worker).
    pub worker: Option<WorkerSpec>,
}

/// `worker` of an SA: a number or `"any"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WorkerSpec {
    Num(u16),
    Text(String),
}

impl WorkerSpec {
    fn placement(&self) -> Result<Placement, Fail> {
        match self {
            WorkerSpec::Num(w) => Ok(Placement::Worker(*w)),
            WorkerSpec::Text(t) if t == "any" => Ok(Placement::AnyWorker),
            WorkerSpec::Text(t) => Err(bad(format!(
                "sa.worker: {t:?} is neither a worker number nor \"any\""
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeSpec {
    pub soft_s: Option<u64>,
    pub hard_s: Option<u64>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    pub idle_s: Option<u64>,
}

/// A traffic selector from this gateway's point of view; omitted fields are `any`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    pub local: Option<String>,
    pub remote: Option<String>,
    /// A name (`tcp`, `icmp`, ...), a number, or `any`.
    pub proto: Option<String>,
    /// A port, a range `a-b`, or `any` (ICMP: the type).
    pub local_port: Option<String>,
    /// (ICMP: the code.)
    pub remote_port: Option<String>,
}

/// One SPD entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub id: String,
    /// `out`, `in` or `both` (default).
    pub direction: Option<String>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub proto: Option<String>,
    pub local_port: Option<String>,
    pub remote_port: Option<String>,
    /// `protect`, `bypass` or `discard`.
    pub action: String,
    /// PROTECT: the reqid of its SAs (may have no SA yet: packets raise ACQUIRE).
    pub reqid: Option<u32>,
    /// PROTECT with a bundle: the reqids, outermost last.
    pub reqids: Option<Vec<u32>>,
}

fn choice<T: Copy>(field: &str, v: &str, opts: &[(&str, T)]) -> Result<T, Fail> {
    opts.iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = opts.iter().map(|(n, _)| *n).collect();
            bad(format!("{field}: {v:?} is not one of {}", names.join(", ")))
        })
}

/// Parse a direction: `in` or `out`.
pub fn direction(field: &str, v: &str) -> Result<Direction, Fail> {
    choice(
        field,
        v,
        &[("in", Direction::Inbound), ("out", Direction::Outbound)],
    )
}

fn key(field: &str, v: Option<&Zeroizing<String>>, needed: bool) -> Result<SecretKey, Fail> {
    match (v, needed) {
        (Some(h), true) => SecretKey::from_hex(h)
            .ok_or_else(|| bad(format!("{field}: not hex (0x prefix, ':' allowed)"))),
        (Some(_), false) => Err(bad(format!(
            "{field}: this algorithm takes no key; leave it out"
        ))),
        (None, true) => Err(bad(format!("{field}: missing"))),
        (None, false) => Ok(SecretKey::default()),
    }
}

impl SelectorSpec {
    pub fn selector(&self, field: &str) -> Result<Selector, Fail> {
        let addr = |f: &str, v: &Option<String>| -> Result<AddrRange, Fail> {
            v.as_deref()
                .unwrap_or("any")
                .parse::<AddrRange>()
                .map_err(|e| bad(format!("{field}.{f}: {e}")))
        };
        let port = |f: &str, v: &Option<String>| -> Result<PortSel, Fail> {
            v.as_deref()
                .unwrap_or("any")
                .parse::<PortSel>()
                .map_err(|e| bad(format!("{field}.{f}: {e}")))
        };
        let s = Selector {
            local: addr("local", &self.local)?,
            remote: addr("remote", &self.remote)?,
            proto: parse_protocol(self.proto.as_deref().unwrap_or("any"))
                .map_err(|e| bad(format!("{field}.proto: {e}")))?,
            local_port: port("local_port", &self.local_port)?,
            remote_port: port("remote_port", &self.remote_port)?,
        };
        s.validate().map_err(|e| bad(format!("{field}: {e}")))?;
        Ok(s)
    }
}

impl SaSpec {
    /// The store's SA (the store checks it against the engine's rules and the other SAs).
    pub fn entry(&self) -> Result<SaEntry, Fail> {
        let f = |name: &str| format!("sa.{name}");
        if self.id.is_empty() || self.id.len() > 128 {
            return Err(bad("sa.id: 1 to 128 characters"));
        }
        let direction = direction(&f("direction"), &self.direction)?;
        let spi = self.spi.get(&f("spi"))?;
        let mode = choice(
            &f("mode"),
            self.mode.as_deref().unwrap_or("tunnel"),
            &[("tunnel", Mode::Tunnel), ("transport", Mode::Transport)],
        )?;
        let protocol = match self.protocol.as_deref().unwrap_or("esp") {
            "ipcomp" => Protocol::IpComp(choice(
                &f("compression"),
                self.compression.as_deref().unwrap_or(""),
                &[("deflate", CompAlg::Deflate), ("lzs", CompAlg::Lzs)],
            )?),
            p => choice(
                &f("protocol"),
                p,
                &[("esp", Protocol::Esp), ("ah", Protocol::Ah)],
            )?,
        };
        if self.compression.is_some() && !matches!(protocol, Protocol::IpComp(_)) {
            return Err(bad("sa.compression: only with protocol ipcomp"));
        }
        let enc: EncAlg = match (&self.encryption, protocol) {
            (Some(e), _) => e
                .parse()
                .map_err(|e| bad(format!("{}: {e}", f("encryption"))))?,
            (None, Protocol::Ah | Protocol::IpComp(_)) => EncAlg::Null,
            (None, Protocol::Esp) => return Err(bad("sa.encryption: required for ESP")),
        };
        let auth: AuthAlg = match &self.integrity {
            Some(i) => i
                .parse()
                .map_err(|e| bad(format!("{}: {e}", f("integrity"))))?,
            None => AuthAlg::None,
        };
        let enc_key = key(&f("enc_key"), self.enc_key.as_ref(), enc.keymat_len() > 0)?;
        let auth_key = key(
            &f("auth_key"),
            self.auth_key.as_ref(),
            auth != AuthAlg::None,
        )?;
        let encap = match self.encap.as_deref().unwrap_or("none") {
            "none" => {
                if self.local_port.is_some() || self.remote_port.is_some() {
                    return Err(bad("sa.local_port/remote_port: need encap nat-t or udp"));
                }
                Encap::None
            }
            e => {
                let default = choice(&f("encap"), e, &[("nat-t", 4500u16), ("udp", 2746)])?;
                Encap::Udp {
                    local_port: self.local_port.unwrap_or(default),
                    remote_port: self.remote_port.unwrap_or(default),
                }
            }
        };
        let keepalive = match (self.keepalive_s, encap, direction) {
            (Some(0) | None, _, _) => None,
            (Some(s), Encap::Udp { .. }, Direction::Outbound) if s <= 3600 => {
                Some(Duration::from_secs(s))
            }
            _ => {
                return Err(bad(
                    "sa.keepalive_s: 1-3600, on outbound UDP-encapsulated SAs only",
                ));
            }
        };
        let l = self.lifetime.as_ref();
        let secs = |v: Option<u64>| v.map(Duration::from_secs);
        let lifetime = Lifetime {
            soft: Limits {
                time: secs(l.and_then(|l| l.soft_s)),
                bytes: l.and_then(|l| l.soft_bytes),
                packets: l.and_then(|l| l.soft_packets),
            },
            hard: Limits {
                time: secs(l.and_then(|l| l.hard_s)),
                bytes: l.and_then(|l| l.hard_bytes),
                packets: l.and_then(|l| l.hard_packets),
            },
            idle: secs(l.and_then(|l| l.idle_s)),
        };
        let selectors = self
            .selectors
            .iter()
            .enumerate()
            .map(|(i, s)| s.selector(&format!("sa.selectors[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let dscp = match &self.dscp {
            None => DscpMode::Copy,
            Some(Value::String(s)) if s == "copy" => DscpMode::Copy,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v @ 0..=63) => DscpMode::Set(v as u8),
                _ => return Err(bad("sa.dscp: \"copy\" or 0-63")),
            },
            Some(_) => return Err(bad("sa.dscp: \"copy\" or 0-63")),
        };
        let ecn = choice(
            &f("ecn"),
            self.ecn.as_deref().unwrap_or("normal"),
            &[
                ("normal", EcnMode::Normal),
                ("compatibility", EcnMode::Compatibility),
            ],
        )?;
        let df = choice(
            &f("df"),
            self.df.as_deref().unwrap_or("copy"),
            &[
                ("copy", DfMode::Copy),
                ("set", DfMode::Set),
                ("clear", DfMode::Clear),
            ],
        )?;
        if self.ttl == Some(0) {
            return Err(bad("sa.ttl: 1-255"));
        }
        Ok(SaEntry {
            placement: self
                .worker
                .as_ref()
                .map_or(Ok(Placement::Reqid), WorkerSpec::placement)?,
            id: self.id.clone(),
            client: String::new(),
            cfg: SaConfig {
                name: self.name.clone().unwrap_or_else(|| self.id.clone()),
                reqid: self.reqid,
                protocol,
                spi,
                direction,
                mode,
                local: self.local,
                remote: self.remote,
                encap,
                enc,
                enc_key,
                auth,
                auth_key,
                allow_legacy: self.allow_legacy,
                replay_window: self.replay_window.unwrap_or(DEFAULT_WINDOW),
                esn: self.esn,
                lifetime,
                dscp,
                ecn,
                df,
                ttl: self.ttl.unwrap_or(64),
                selectors,
            },
            keepalive,
        })
    }
}

impl PolicySpec {
    /// The policy, in one direction or both.
    pub fn entries(&self) -> Result<Vec<(Direction, PolicyEntry)>, Fail> {
        if self.id.is_empty() || self.id.len() > 64 {
            return Err(bad("policy.id: 1 to 64 characters"));
        }
        let dirs: &[Direction] = match self.direction.as_deref().unwrap_or("both") {
            "out" => &[Direction::Outbound],
            "in" => &[Direction::Inbound],
            "both" => &[Direction::Outbound, Direction::Inbound],
            d => {
                return Err(bad(format!(
                    "policy.direction: {d:?} is not in, out or both"
                )));
            }
        };
        let selector = SelectorSpec {
            local: self.local.clone(),
            remote: self.remote.clone(),
            proto: self.proto.clone(),
            local_port: self.local_port.clone(),
            remote_port: self.remote_port.clone(),
        }
        .selector("policy")?;
        let reqids: Vec<u32> = match (&self.reqid, &self.reqids) {
            (Some(r), None) => vec![*r],
            (None, Some(v)) => v.clone(),
            (None, None) => vec![],
            (Some(_), Some(_)) => return Err(bad("policy: give reqid or reqids, not both")),
        };
        let action =
            match (self.action.as_str(), reqids.is_empty()) {
                ("protect", false) => Action::Protect(SaBundle::new(&reqids).ok_or_else(|| {
                    bad("policy.reqids: 1 to the engine's bundle limit".to_owned())
                })?),
                ("protect", true) => return Err(bad("policy: protect needs a reqid")),
                ("bypass", true) => Action::Bypass,
                ("discard", true) => Action::Discard,
                ("bypass" | "discard", false) => {
                    return Err(bad("policy: only protect policies have a reqid"));
                }
                (a, _) => {
                    return Err(bad(format!(
                        "policy.action: {a:?} is not protect, bypass or discard"
                    )));
                }
            };
        Ok(dirs
            .iter()
            .map(|&d| {
                (
                    d,
                    PolicyEntry {
                        client: String::new(),
                        policy: Policy {
                            name: self.id.clone(),
                            selector,
                            action,
                        },
                    },
                )
            })
            .collect())
    }
}

/// `update-sa-endpoints` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSpec {
    pub id: String,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
}

impl EndpointsSpec {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            local: self.local,
            remote: self.remote,
            local_port: self.local_port,
            remote_port: self.remote_port,
        }
    }
}

fn selector_json(s: &Selector) -> Value {
    json!({
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "proto": s.proto.map_or("any".to_owned(), |p| p.to_string()),
        "local_port": s.local_port.to_string(),
        "remote_port": s.remote_port.to_string(),
    })
}

/// An SA as `dump` shows it: every attribute but the keys, which are given as lengths.
pub fn sa_json(e: &SaEntry, worker: Option<u16>) -> Value {
    let c = &e.cfg;
    let (encap, ports) = match c.encap {
        Encap::None => ("none", None),
        Encap::Udp {
            local_port,
            remote_port,
        } => (
            if local_port == 4500 || remote_port == 4500 {
                "nat-t"
            } else {
                "udp"
            },
            Some((local_port, remote_port)),
        ),
    };
    let l = &c.lifetime;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
    json!({
        "id": e.id,
        "client": e.client,
        "name": c.name,
        "direction": match c.direction { Direction::Inbound => "in", Direction::Outbound => "out" },
        "spi": c.spi,
        "spi_hex": format!("{:#010x}", c.spi),
        "reqid": c.reqid,
        "worker": match e.placement {
            Placement::AnyWorker => json!("any"),
            _ => json!(worker),
        },
        // placed by the client (`worker` in add-sa) rather than with its reqid
        "worker_pinned": e.placement != Placement::Reqid,
        "mode": c.mode.name(),
        "protocol": c.protocol.name(),
        "compression": match c.protocol {
            Protocol::IpComp(a) => Some(a.name()),
            _ => None,
        },
        "local": c.local,
        "remote": c.remote,
        "encap": encap,
        "local_port": ports.map(|p| p.0),
        "remote_port": ports.map(|p| p.1),
        "keepalive_s": e.keepalive.map(|d| d.as_secs()),
        "encryption": c.enc.name(),
        "enc_key_bytes": c.enc_key.len(),
        "integrity": c.auth.name(),
        "auth_key_bytes": c.auth_key.len(),
        "esn": c.esn,
        "allow_legacy": c.allow_legacy,
        "dscp": match c.dscp {
            DscpMode::Copy => json!("copy"),
            DscpMode::Set(v) => json!(v),
        },
        "ecn": match c.ecn {
            EcnMode::Normal => "normal",
            EcnMode::Compatibility => "compatibility",
        },
        "df": match c.df {
            DfMode::Copy => "copy",
            DfMode::Set => "set",
            DfMode::Clear => "clear",
        },
        "ttl": c.ttl,
        "replay_window": c.replay_window,
        "lifetime": {
            "soft_s": secs(l.soft.time), "hard_s": secs(l.hard.time),
            "soft_bytes": l.soft.bytes, "hard_bytes": l.hard.bytes,
            "soft_packets": l.soft.packets, "hard_packets": l.hard.packets,
            "idle_s": secs(l.idle),
        },
        "selectors": c.selectors.iter().map(selector_json).collect::<Vec<_>>(),
    })
}

/// A policy as `dump` shows it.
pub fn policy_json(dir: Direction, position: usize, e: &PolicyEntry) -> Value {
    let (action, reqids) = match &e.policy.action {
        Action::Bypass => ("bypass", vec![]),
        Action::Discard => ("discard", vec![]),
        Action::Protect(b) => ("protect", b.reqids().to_vec()),
    };
    let mut v = selector_json(&e.policy.selector);
    v["id"] = json!(e.policy.name);
    v["client"] = json!(e.client);
    v["direction"] = json!(match dir {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    });
    v["position"] = json!(position);
    v["action"] = json!(action);
    v["reqids"] = json!(reqids);
    v
}
