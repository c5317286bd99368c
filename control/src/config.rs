//! xsec-ike's TOML configuration, modelled on swanctl.conf: `[connections.NAME]` with
//! addresses, proposals, `local`/`remote` identities and `children.NAME` (selectors, mode,
//! ESP proposals, lifetimes, start action); `[secrets.NAME]` with identities and a
//! pre-shared key, in the same file or in `secrets_file`; `[ike]` for the process.
//! Errors are `FILE:LINE: FIELD: message` (xsecd's reader); secrets are never quoted.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use xsecd::config::reader::{Fail, Table, Val, keep, read_document, read_text};
use xsecd::config::{ConfigError, Diagnostic};
use zeroize::Zeroizing;

use crate::ike::config::{ChildConfig, Connection, DpdAction, Mode, Timing, parse_id};
use crate::ike::proposal::Suite;
use crate::ike::wire::{Id, TrafficSelector};

/// What a child does when the configuration is loaded (swanctl's `start_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    /// Wait for the peer (or `xsecctl ike initiate`).
    None,
    /// Initiate at once.
    Start,
    /// Install the policies now and negotiate when traffic matches them (ACQUIRE).
    Trap,
}

/// A child's settings that only the process (not the protocol core) uses.
#[derive(Debug, Clone)]
pub struct ChildSettings {
    pub name: String,
    pub start_action: StartAction,
    /// The reqid of its SAs and policies in xsecd.
    pub reqid: u32,
    /// Volume limits xsecd counts (swanctl's `rekey_bytes`, `life_bytes`,
    /// `rekey_packets`, `life_packets`): a soft limit rekeys, a hard one deletes.
    pub rekey_bytes: Option<u64>,
    pub life_bytes: Option<u64>,
    pub rekey_packets: Option<u64>,
    pub life_packets: Option<u64>,
}

/// A connection's tunnel watchdog (the branch routers' "ICMP detect"): an echo request to
/// `host` from `source` through the tunnel every `interval`, each awaited `timeout`; after
/// `tries` unanswered in a row the IKE SA is restarted. Beside DPD, not instead of it: DPD
/// sees the peer's IKE daemon, the watchdog sees the data path to a host behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    pub host: IpAddr,
    /// An address of this gateway (default: xsecd's protected interface's).
    pub source: Option<IpAddr>,
    pub interval: Duration,
    pub timeout: Duration,
    pub tries: u32,
}

/// A loaded connection.
#[derive(Debug, Clone)]
pub struct ConnEntry {
    pub conn: Arc<Connection>,
    pub children: Vec<ChildSettings>,
    pub watchdog: Option<WatchdogConfig>,
}

/// The whole file.
#[derive(Debug)]
pub struct IkeConfig {
    pub path: PathBuf,
    /// xsecd's control socket (`[ike] control`), unless the command line says otherwise.
    pub control: Option<PathBuf>,
    pub timing: Timing,
    pub cookie_threshold: usize,
    /// How many of the connections that start at once may be in negotiation together.
    pub initiate_window: usize,
    /// Our own control socket, for `xsecctl ike ...`.
    pub socket: Option<PathBuf>,
    pub conns: Vec<ConnEntry>,
    pub warnings: Vec<Diagnostic>,
}

/// First reqid xsec-ike gives children that do not name one (well above a manual file's
/// reqids, which count from 1).
pub const REQID_BASE: u32 = 0x1000;

/// A duration: integer seconds, or a number with `s`, `m`, `h` or `d`.
fn duration(v: &Val<'_, '_>) -> Result<Duration, Fail> {
    if v.is_int() {
        return v.uint(0u64, 10 * 365 * 86_400).map(Duration::from_secs);
    }
    let s = v.string()?.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| v.fail(format!("{s:?} is not a duration (30s, 5m, 1h, 1d)")))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(v.fail(format!("{s:?}: unit must be s, m, h or d"))),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

fn addr(v: &Val<'_, '_>) -> Result<Option<IpAddr>, Fail> {
    let list: Vec<String> = if v.is_str() {
        vec![v.string()?.to_owned()]
    } else {
        v.array()?
            .iter()
            .map(|e| e.string().map(str::to_owned))
            .collect::<Result<_, _>>()?
    };
    match list.as_slice() {
        [] => Ok(None),
        [one] if one == "%any" || one == "0.0.0.0" || one == "::" => Ok(None),
        [one] => one
            .parse()
            .map(Some)
            .map_err(|_| v.fail(format!("{one:?} is not an IP address (or %any)"))),
        _ => Err(v.fail("one address per connection (several are not supported yet)")),
    }
}

fn selectors(v: &Val<'_, '_>) -> Result<Vec<TrafficSelector>, Fail> {
    let items: Vec<Val<'_, '_>> = if v.is_str() {
        vec![v.clone()]
    } else {
        v.array()?
    };
    let mut out = vec![];
    for e in items {
        let s = e.string()?.trim();
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = a
            .parse()
            .map_err(|_| e.fail(format!("{s:?} is not an address or prefix")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| e.fail(format!("{s:?}: prefix length must be 0..={max}")))?,
        };
        out.push(
            crate::ike::ts::prefix(ip, len)
                .ok_or_else(|| e.fail(format!("{s:?} is not a prefix")))?,
        );
    }
    if out.is_empty() {
        return Err(v.fail("at least one selector"));
    }
    Ok(out)
}

fn proposals(v: &Val<'_, '_>, ike: bool) -> Result<Vec<Suite>, Fail> {
    let items: Vec<Val<'_, '_>> = if v.is_str() {
        vec![v.clone()]
    } else {
        v.array()?
    };
    let mut out = vec![];
    for e in items {
        let s = e.string()?;
        out.push(Suite::parse(s.trim(), ike).map_err(|err| e.fail(format!("{s:?}: {err}")))?);
    }
    if out.is_empty() {
        return Err(v.fail("at least one proposal"));
    }
    Ok(out)
}

fn id_of(t: &mut Table<'_, '_>, fails: &mut Vec<Fail>) -> Option<Id> {
    if let Some(a) = t.get("auth") {
        match a.string() {
            Ok("psk") => {}
            Ok(other) => fails.push(a.fail(format!(
                "{other:?}: only \"psk\" is supported so far (certificates are the next step)"
            ))),
            Err(e) => fails.push(e),
        }
    }
    let v = t.get("id")?;
    match v
        .string()
        .and_then(|s| parse_id(s.trim()).map_err(|e| v.fail(e)))
    {
        Ok(id) => Some(id),
        Err(f) => {
            fails.push(f);
            None
        }
    }
}

/// A secret: the pre-shared key and the identities it is for.
struct SecretEntry {
    ids: Vec<Id>,
    psk: Zeroizing<Vec<u8>>,
}

fn read_secrets(t: &mut Table<'_, '_>, fails: &mut Vec<Fail>, out: &mut Vec<SecretEntry>) {
    for (_, v) in t.rest() {
        let mut s = match v.table() {
            Ok(s) => s,
            Err(f) => {
                fails.push(f);
                continue;
            }
        };
        let mut ids = vec![];
        if let Some(iv) = s.get("id") {
            let list: Vec<Val<'_, '_>> = if iv.is_str() {
                vec![iv.clone()]
            } else {
                match iv.array() {
                    Ok(a) => a,
                    Err(f) => {
                        fails.push(f);
                        vec![]
                    }
                }
            };
            for e in list {
                match e
                    .string()
                    .and_then(|x| parse_id(x.trim()).map_err(|m| e.fail(m)))
                {
                    Ok(id) => ids.push(id),
                    Err(f) => fails.push(f),
                }
            }
        }
        match s.req("secret").and_then(|sv| {
            let text = sv.string()?;
            if let Some(h) = text.strip_prefix("0x") {
                hex::decode(h)
                    .map(Zeroizing::new)
                    .map_err(|_| sv.fail("0x... must be hex"))
            } else if text.len() < 8 {
                Err(sv.fail(format!(
                    "a pre-shared key of {} bytes is too short (at least 8; use 20 or more random bytes)",
                    text.len()
                )))
            } else {
                Ok(Zeroizing::new(text.as_bytes().to_vec()))
            }
        }) {
            Ok(psk) => out.push(SecretEntry { ids, psk }),
            Err(f) => fails.push(f),
        }
        s.finish(fails);
    }
}

/// The key for a connection: the secret naming the most of its two identities (the
/// remote one required when the secret names any), as swanctl picks.
fn psk_for(secrets: &[SecretEntry], local: &Id, remote: Option<&Id>) -> Option<Zeroizing<Vec<u8>>> {
    let mut best: Option<(usize, &SecretEntry)> = None;
    for s in secrets {
        let score = if s.ids.is_empty() {
            0
        } else {
            let r = remote.is_some_and(|r| s.ids.contains(r));
            let l = s.ids.contains(local);
            if !r && remote.is_some() && s.ids.len() > 1 {
                continue;
            }
            if !r && !l {
                continue;
            }
            usize::from(r) * 2 + usize::from(l)
        };
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, s));
        }
    }
    best.map(|(_, s)| s.psk.clone())
}

struct Draft {
    name: String,
    at: Fail,
    local_addr: Option<IpAddr>,
    remote_addr: Option<IpAddr>,
    local_id: Option<Id>,
    remote_id: Option<Id>,
    ike: Vec<Suite>,
    children: Vec<(ChildConfig, ChildSettings)>,
    dpd_delay: Option<Duration>,
    dpd_action: DpdAction,
    rekey_time: Option<Duration>,
    reauth_time: Option<Duration>,
    watchdog: Option<WatchdogConfig>,
}

fn keep_in<T>(r: Result<T, Fail>, fails: &mut Vec<Fail>) -> Option<T> {
    keep(fails, r)
}

fn read_child(
    name: &str,
    v: &Val<'_, '_>,
    next_reqid: &mut u32,
    fails: &mut Vec<Fail>,
) -> Option<(ChildConfig, ChildSettings)> {
    let mut t = keep_in(v.table(), fails)?;
    let before = fails.len();
    let local_ts = t.req("local_ts").and_then(|v| selectors(&v));
    let local_ts = keep_in(local_ts, fails);
    let remote_ts = t.req("remote_ts").and_then(|v| selectors(&v));
    let remote_ts = keep_in(remote_ts, fails);
    let esp = match t.get("esp_proposals") {
        Some(v) => keep_in(proposals(&v, false), fails),
        None => Some(vec![
            Suite::parse("aes128gcm16", false).ok()?,
            Suite::parse("aes128-sha256", false).ok()?,
        ]),
    };
    let mode = match t.get("mode") {
        Some(v) => keep_in(
            v.choice(&[("tunnel", Mode::Tunnel), ("transport", Mode::Transport)]),
            fails,
        ),
        None => Some(Mode::Tunnel),
    };
    let start_action = match t.get("start_action") {
        Some(v) => keep_in(
            v.choice(&[
                ("none", StartAction::None),
                ("start", StartAction::Start),
                ("trap", StartAction::Trap),
            ]),
            fails,
        ),
        None => Some(StartAction::None),
    };
    let rekey_time = t
        .get("rekey_time")
        .and_then(|v| keep_in(duration(&v), fails));
    let life_time = t
        .get("life_time")
        .and_then(|v| keep_in(duration(&v), fails));
    let mut volume = |key: &'static str, fails: &mut Vec<Fail>| {
        t.get(key)
            .and_then(|v| keep_in(v.uint(1u64, u64::MAX >> 1), fails))
    };
    let rekey_bytes = volume("rekey_bytes", fails);
    let life_bytes = volume("life_bytes", fails);
    let rekey_packets = volume("rekey_packets", fails);
    let life_packets = volume("life_packets", fails);
    for (soft, hard, name) in [
        (rekey_bytes, life_bytes, "rekey_bytes"),
        (rekey_packets, life_packets, "rekey_packets"),
    ] {
        if let (Some(s), Some(h)) = (soft, hard)
            && s >= h
        {
            fails.push(
                t.locs()
                    .fail(name, format!("{s} is not below its life_ limit {h}")),
            );
        }
    }
    let reqid = match t.get("reqid") {
        Some(v) => keep_in(v.uint(1u32, u32::MAX), fails),
        None => {
            *next_reqid += 1;
            Some(*next_reqid - 1)
        }
    };
    t.finish(fails);
    if fails.len() > before {
        return None;
    }
    Some((
        ChildConfig {
            name: name.to_owned(),
            esp: esp?,
            local_ts: local_ts?,
            remote_ts: remote_ts?,
            mode: mode?,
            rekey_time,
            life_time,
            auto_start: start_action == Some(StartAction::Start),
        },
        ChildSettings {
            name: name.to_owned(),
            start_action: start_action?,
            reqid: reqid?,
            rekey_bytes,
            life_bytes,
            rekey_packets,
            life_packets,
        },
    ))
}

fn one_addr(v: &Val<'_, '_>) -> Result<IpAddr, Fail> {
    let s = v.string()?;
    s.trim()
        .parse()
        .map_err(|_| v.fail(format!("{s:?} is not an IP address")))
}

/// `[connections.NAME.watchdog]`.
fn read_watchdog(v: &Val<'_, '_>, fails: &mut Vec<Fail>) -> Option<WatchdogConfig> {
    let mut t = keep_in(v.table(), fails)?;
    let before = fails.len();
    let host = keep_in(t.req("host").and_then(|v| one_addr(&v)), fails);
    let source = t.get("source").and_then(|v| keep_in(one_addr(&v), fails));
    let mut secs =
        |key: &'static str, default: u64, lo: u64, hi: u64, fails: &mut Vec<Fail>| match t.get(key)
        {
            None => Some(Duration::from_secs(default)),
            Some(v) => match duration(&v) {
                Ok(d) if (lo..=hi).contains(&d.as_secs()) => Some(d),
                Ok(_) => {
                    fails.push(v.fail(format!("{lo}s to {hi}s")));
                    None
                }
                Err(f) => {
                    fails.push(f);
                    None
                }
            },
        };
    let interval = secs("interval", 10, 1, 3600, fails);
    let timeout = secs("timeout", 2, 1, 10, fails);
    let tries = match t.get("tries") {
        Some(v) => keep_in(v.uint(1u32, 100), fails),
        None => Some(3),
    };
    if let (Some(h), Some(s)) = (host, source)
        && h.is_ipv6() != s.is_ipv6()
    {
        fails.push(
            t.locs()
                .fail("source", "host and source are of two address families"),
        );
    }
    if let (Some(i), Some(to)) = (interval, timeout)
        && to > i
    {
        fails.push(t.locs().fail(
            "timeout",
            format!(
                "{}s is longer than the interval ({}s)",
                to.as_secs(),
                i.as_secs()
            ),
        ));
    }
    t.finish(fails);
    if fails.len() > before {
        return None;
    }
    Some(WatchdogConfig {
        host: host?,
        source,
        interval: interval?,
        timeout: timeout?,
        tries: tries?,
    })
}

fn read_conn(
    name: &str,
    v: &Val<'_, '_>,
    next_reqid: &mut u32,
    fails: &mut Vec<Fail>,
) -> Option<Draft> {
    let mut t = keep_in(v.table(), fails)?;
    let before = fails.len();
    if let Some(ver) = t.get("version")
        && let Err(f) = ver.uint(2u8, 2)
    {
        fails.push(Fail {
            msg: format!("{}; only IKEv2 so far", f.msg),
            ..f
        });
    }
    let local_addr = t
        .get("local_addrs")
        .and_then(|v| keep_in(addr(&v), fails))
        .flatten();
    let remote_addr = t
        .get("remote_addrs")
        .and_then(|v| keep_in(addr(&v), fails))
        .flatten();
    let ike = match t.get("proposals") {
        Some(v) => keep_in(proposals(&v, true), fails).unwrap_or_default(),
        None => ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
            .iter()
            .filter_map(|p| Suite::parse(p, true).ok())
            .collect(),
    };
    let dpd_delay = t
        .get("dpd_delay")
        .and_then(|v| keep_in(duration(&v), fails))
        .filter(|d| !d.is_zero());
    let dpd_action = match t.get("dpd_action") {
        Some(v) => keep_in(
            v.choice(&[
                ("clear", DpdAction::Clear),
                ("restart", DpdAction::Restart),
                ("trap", DpdAction::Trap),
            ]),
            fails,
        )
        .unwrap_or(DpdAction::Clear),
        None => DpdAction::Clear,
    };
    let rekey_time = t
        .get("rekey_time")
        .and_then(|v| keep_in(duration(&v), fails));
    let reauth_time = t
        .get("reauth_time")
        .and_then(|v| keep_in(duration(&v), fails))
        .filter(|d| !d.is_zero());
    let mut local_id = None;
    let mut remote_id = None;
    let header = t.missing("local", "");
    match t.get("local").map(|v| v.table()) {
        Some(Ok(mut lt)) => {
            local_id = id_of(&mut lt, fails);
            lt.finish(fails);
        }
        Some(Err(f)) => fails.push(f),
        None => {}
    }
    match t.get("remote").map(|v| v.table()) {
        Some(Ok(mut rt)) => {
            remote_id = id_of(&mut rt, fails);
            rt.finish(fails);
        }
        Some(Err(f)) => fails.push(f),
        None => {}
    }
    let watchdog = t.get("watchdog").and_then(|v| read_watchdog(&v, fails));
    let mut children = vec![];
    match t.get("children").map(|v| v.table()) {
        Some(Ok(mut ct)) => {
            for (cname, cv) in ct.rest() {
                if let Some(c) = read_child(&cname, &cv, next_reqid, fails) {
                    children.push(c);
                }
            }
            ct.finish(fails);
        }
        Some(Err(f)) => fails.push(f),
        None => {}
    }
    t.finish(fails);
    if fails.len() > before {
        return None;
    }
    Some(Draft {
        name: name.to_owned(),
        at: header,
        local_addr,
        remote_addr,
        local_id,
        remote_id,
        ike,
        children,
        dpd_delay,
        dpd_action,
        rekey_time,
        reauth_time,
        watchdog,
    })
}

/// Read and check a configuration file (and its secrets file).
pub fn load(path: &Path) -> Result<IkeConfig, ConfigError> {
    let text = read_text(path)?;
    parse(&text, path)
}

/// Parse configuration text; `path` names it in messages and locates `secrets_file`.
pub fn parse(text: &str, path: &Path) -> Result<IkeConfig, ConfigError> {
    let mut secrets = vec![];
    let mut secrets_file = None;
    let (mut cfg, warnings) = read_document(text, path, |doc, fails| {
        let mut root = Table::root(doc);
        let mut timing = Timing::default();
        let mut cookie_threshold = 10;
        let mut initiate_window = 32;
        let mut control = None;
        let mut socket = None;
        if let Some(v) = root.get("ike") {
            match v.table() {
                Ok(mut t) => {
                    if let Some(c) = t.get("control") {
                        match c.string() {
                            Ok(s) => control = Some(PathBuf::from(s)),
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("socket") {
                        match c.string() {
                            Ok(s) => socket = Some(PathBuf::from(s)),
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("secrets_file") {
                        match c.string() {
                            Ok(s) => secrets_file = Some((PathBuf::from(s), c.fail(""))),
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("retransmit_timeout") {
                        match duration(&c) {
                            Ok(d) if !d.is_zero() => timing.retransmit_timeout = d,
                            Ok(_) => fails.push(c.fail("must be at least 1s")),
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("retransmit_tries") {
                        match c.uint(0u32, 20) {
                            Ok(n) => timing.retransmit_tries = n,
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("initiate_window") {
                        match c.uint(1u32, 100_000) {
                            Ok(n) => initiate_window = n as usize,
                            Err(f) => fails.push(f),
                        }
                    }
                    if let Some(c) = t.get("cookie_threshold") {
                        match c.uint(0u32, 1_000_000) {
                            Ok(n) => cookie_threshold = n as usize,
                            Err(f) => fails.push(f),
                        }
                    }
                    t.finish(fails);
                }
                Err(f) => fails.push(f),
            }
        }
        let mut next_reqid = REQID_BASE;
        let mut drafts = vec![];
        match root.get("connections").map(|v| v.table()) {
            Some(Ok(mut ct)) => {
                for (name, v) in ct.rest() {
                    if let Some(d) = read_conn(&name, &v, &mut next_reqid, fails) {
                        drafts.push(d);
                    }
                }
                ct.finish(fails);
            }
            Some(Err(f)) => fails.push(f),
            None => {}
        }
        match root.get("secrets").map(|v| v.table()) {
            Some(Ok(mut st)) => {
                read_secrets(&mut st, fails, &mut secrets);
                st.finish(fails);
            }
            Some(Err(f)) => fails.push(f),
            None => {}
        }
        root.finish(fails);
        let cfg = IkeConfig {
            path: path.to_owned(),
            control,
            timing,
            cookie_threshold,
            initiate_window,
            socket,
            conns: vec![],
            warnings: vec![],
        };
        (Some((cfg, drafts)), vec![])
    })?;
    // a secrets file: its own document, its own line numbers
    if let Some((file, _at)) = secrets_file.take() {
        let file = if file.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(file)
        } else {
            file
        };
        let stext = read_text(&file)?;
        let (more, _) = read_document(&stext, &file, |doc, fails| {
            let mut root = Table::root(doc);
            let mut out = vec![];
            match root.get("secrets").map(|v| v.table()) {
                Some(Ok(mut st)) => {
                    read_secrets(&mut st, fails, &mut out);
                    st.finish(fails);
                }
                Some(Err(f)) => fails.push(f),
                None => {}
            }
            root.finish(fails);
            (Some(out), vec![])
        })?;
        secrets.extend(more);
    }
    // connections: identities, keys, uniqueness of reqids
    let (ref mut c, ref mut drafts) = cfg;
    let mut diags = vec![];
    let lines = xsecd::config::reader::Lines::new(text);
    let line_of = |f: &Fail| lines.line(f.at);
    let mut reqids = std::collections::HashSet::new();
    for d in drafts.drain(..) {
        let err = |msg: String| Diagnostic {
            path: path.to_owned(),
            line: line_of(&d.at),
            field: format!("connections.{}", d.name),
            message: msg,
        };
        let local_id = match (d.local_id.clone(), d.local_addr) {
            (Some(i), _) => i,
            (None, Some(a)) => match parse_id(&a.to_string()) {
                Ok(i) => i,
                Err(e) => {
                    diags.push(err(e));
                    continue;
                }
            },
            (None, None) => {
                diags.push(err(
                    "needs local.id or local_addrs (the identity defaults to the address)".into(),
                ));
                continue;
            }
        };
        let remote_id = d
            .remote_id
            .clone()
            .or_else(|| d.remote_addr.and_then(|a| parse_id(&a.to_string()).ok()));
        let Some(psk) = psk_for(&secrets, &local_id, remote_id.as_ref()) else {
            diags.push(err(format!(
                "no secret in [secrets] for the identities {local_id} / {}",
                remote_id
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "%any".into())
            )));
            continue;
        };
        if d.local_addr.is_none() {
            diags.push(err(
                "local_addrs is required (xsec-ike binds its sockets to it)".into(),
            ));
            continue;
        }
        if d.watchdog.is_some() && d.remote_addr.is_none() {
            diags.push(err(
                "watchdog needs remote_addrs (its restart initiates the IKE SA)".into(),
            ));
            continue;
        }
        for (_, s) in &d.children {
            if !reqids.insert(s.reqid) {
                diags.push(err(format!(
                    "child {}: reqid {} is used twice",
                    s.name, s.reqid
                )));
            }
        }
        let (children, settings): (Vec<ChildConfig>, Vec<ChildSettings>) =
            d.children.into_iter().unzip();
        c.conns.push(ConnEntry {
            conn: Arc::new(Connection {
                name: d.name.clone(),
                local_addr: d.local_addr,
                remote_addr: d.remote_addr,
                local_id,
                remote_id,
                psk,
                ike: d.ike,
                children,
                dpd_delay: d.dpd_delay,
                dpd_action: d.dpd_action,
                rekey_time: d.rekey_time,
                reauth_time: d.reauth_time,
            }),
            children: settings,
            watchdog: d.watchdog,
        });
    }
    if !diags.is_empty() {
        return Err(ConfigError::Invalid(diags));
    }
    let (mut c, _) = cfg;
    c.warnings = warnings;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ike]
retransmit_timeout = "2s"

[connections.gw-gw]
local_addrs = "10.0.0.1"
remote_addrs = ["10.0.0.2"]
proposals = ["aes256-sha256-modp2048", "aes128gcm16-prfsha256-x25519"]
dpd_delay = "30s"
dpd_action = "restart"

[connections.gw-gw.local]
auth = "psk"
id = "gw-a.example"

[connections.gw-gw.remote]
auth = "psk"
id = "gw-b.example"

[connections.gw-gw.children.net-net]
local_ts = ["10.1.0.0/24"]
remote_ts = "10.2.0.0/24"
esp_proposals = ["aes256-sha256-modp2048"]
start_action = "start"
rekey_time = "1h"

[secrets.ike-gw]
id = ["gw-a.example", "gw-b.example"]
secret = "a secret of some length"
"#;

    #[test]
    fn loads_a_swanctl_like_file() {
        let c = parse(GOOD, Path::new("ike.toml")).expect("loads");
        assert_eq!(c.conns.len(), 1);
        let e = &c.conns[0];
        assert_eq!(e.conn.name, "gw-gw");
        assert_eq!(e.conn.ike.len(), 2);
        assert_eq!(e.conn.dpd_delay, Some(Duration::from_secs(30)));
        assert_eq!(e.conn.dpd_action, DpdAction::Restart);
        assert_eq!(&e.conn.psk[..], b"a secret of some length");
        assert_eq!(e.children[0].start_action, StartAction::Start);
        assert_eq!(e.children[0].reqid, REQID_BASE);
        assert_eq!(
            e.conn.children[0].rekey_time,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(c.timing.retransmit_timeout, Duration::from_secs(2));
        // the key is not in Debug
        assert!(!format!("{c:?}").contains("a secret of some"));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD
            .replace("\"aes256-sha256-modp2048\", ", "\"aes256-md5-modp2048\", ")
            .replace("dpd_action = \"restart\"", "dpd_action = \"reboot\"")
            .replace("start_action = \"start\"", "start_acton = \"start\"");
        let e = parse(&bad, Path::new("ike.toml")).expect_err("bad");
        let text = e.to_string();
        assert!(text.contains("ike.toml:8: connections.gw-gw.proposals[0]: \"aes256-md5-modp2048\": unknown algorithm \"md5\""), "{text}");
        assert!(
            text.contains("ike.toml:10: connections.gw-gw.dpd_action: unknown value \"reboot\""),
            "{text}"
        );
        assert!(text.contains("ike.toml:24: connections.gw-gw.children.net-net.start_acton: unknown key; did you mean \"start_action\"?"), "{text}");
    }

    #[test]
    fn a_watchdog_is_read_with_defaults_and_checked() {
        let with = |extra: &str| {
            GOOD.replace(
                "[connections.gw-gw.local]",
                &format!("[connections.gw-gw.watchdog]\n{extra}\n\n[connections.gw-gw.local]"),
            )
        };
        let c = parse(&with("host = \"10.2.0.10\""), Path::new("ike.toml")).expect("loads");
        assert_eq!(
            c.conns[0].watchdog,
            Some(WatchdogConfig {
                host: "10.2.0.10".parse().unwrap(),
                source: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                tries: 3,
            })
        );
        let c = parse(
            &with("host = \"fd02::10\"\nsource = \"fd01::1\"\ninterval = 5\ntimeout = \"1s\"\ntries = 2"),
            Path::new("ike.toml"),
        )
        .expect("loads");
        let w = c.conns[0].watchdog.clone().expect("a watchdog");
        assert_eq!(
            (w.interval, w.timeout, w.tries),
            (Duration::from_secs(5), Duration::from_secs(1), 2)
        );
        assert_eq!(w.source, Some("fd01::1".parse().unwrap()));
        let e = parse(
            &with("host = \"10.2.0.10\"\nsource = \"fd01::1\"\ninterval = \"2s\"\ntimeout = \"5s\"\ntries = 0\nretry = 3"),
            Path::new("ike.toml"),
        )
        .expect_err("bad");
        let text = e.to_string();
        for want in [
            "ike.toml:14: connections.gw-gw.watchdog.source: host and source are of two address families",
            "ike.toml:16: connections.gw-gw.watchdog.timeout: 5s is longer than the interval (2s)",
            "ike.toml:17: connections.gw-gw.watchdog.tries: 0 is out of range",
            "ike.toml:18: connections.gw-gw.watchdog.retry: unknown key",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
        let e = parse(&with("source = \"10.1.0.1\""), Path::new("ike.toml")).expect_err("no host");
        assert!(
            e.to_string().contains("connections.gw-gw.watchdog.host"),
            "{e}"
        );
        let e = parse(
            &with("host = \"10.2.0.10\"").replace("remote_addrs = [\"10.0.0.2\"]\n", ""),
            Path::new("ike.toml"),
        )
        .expect_err("no remote address");
        assert!(e.to_string().contains("watchdog needs remote_addrs"), "{e}");
    }

    #[test]
    fn missing_secret_and_short_key() {
        let no_secret = GOOD.replace(
            "id = [\"gw-a.example\", \"gw-b.example\"]",
            "id = [\"x.example\", \"y.example\"]",
        );
        let e = parse(&no_secret, Path::new("ike.toml")).expect_err("no secret");
        assert!(e.to_string().contains("ike.toml:5: connections.gw-gw: no secret in [secrets] for the identities gw-a.example / gw-b.example"), "{e}");
        let short = GOOD.replace("a secret of some length", "short");
        let e = parse(&short, Path::new("ike.toml")).expect_err("short");
        assert!(
            e.to_string()
                .contains("secrets.ike-gw.secret: a pre-shared key of 5 bytes is too short"),
            "{e}"
        );
        assert!(
            !e.to_string().contains("short\""),
            "the key is not quoted: {e}"
        );
    }
}
