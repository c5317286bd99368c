//! The TOML configuration (manual keying): `[gateway]`, `[[sa]]` pairs and `[[policy]]`
//! entries, turned directly into the engine's types ([`SaConfig`], [`SpdConfig`]).
//!
//! Contract: [`parse`] returns a whole, validated [`Config`] or a [`ConfigError`] listing
//! every problem found as `FILE:LINE: FIELD: message`, the line being that of the offending
//! key (or of its table's header when the key is missing). Nothing is half-applied. Every
//! SA has passed [`SaConfig::validate`] and the SPD has compiled, so the daemon can install
//! what it gets without another check that could fail halfway.
//!
//! Keys are [`SecretKey`](xsec_dataplane::sa::SecretKey)s: zeroized on drop, shown as
//! `<N bytes>` by `Debug`, and never quoted in an error.
//!
//! The schema is documented in `docs/config.md`; `examples/*.toml` are tested in
//! `xsecd/tests/config.rs`.

mod control;
mod error;
mod gateway;
mod policy;
pub mod reader;
mod sa;

pub use control::{ControlConfig, DEFAULT_SOCKET};
pub use error::{ConfigError, Diagnostic};
pub use gateway::{GatewayConfig, IdleMode, XdpModeCfg};
pub use sa::SaPair;

use policy::{Act, PolicyDraft};
use reader::{Fail, Table, Val};
use sa::SaDraft;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use toml::de::DeTable;
use xsec_dataplane::crypto::alg::{CONFIDENTIALITY_ONLY_WARNING, confidentiality_only};
use xsec_dataplane::sa::{Mode, Protocol};
use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, SpdConfig, SpdError};

/// A loaded configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    pub control: ControlConfig,
    /// SA pairs in file order; pair `i` has reqid `i + 1` in both directions.
    pub sas: Vec<SaPair>,
    /// Validated: `spd.compile()` succeeds.
    pub spd: SpdConfig,
    /// Things that load but are probably not meant (an SA no policy uses, no policies).
    pub warnings: Vec<Diagnostic>,
}

/// Read and parse a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    // The file holds keys: the text is kept in a buffer that is wiped when dropped.
    let text = reader::read_text(path)?;
    parse(&text, path)
}

/// Parse configuration text; `path` is only used in messages and [`Config::path`].
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let (mut cfg, warnings) =
        reader::read_document(text, path, |doc, fails| build(text, doc, fails))?;
    cfg.path = path.to_owned();
    cfg.warnings = warnings;
    Ok(cfg)
}

/// An array of tables (`[[sa]]`), each element with its path and location.
fn tables<'t, 'i>(v: Option<Val<'t, 'i>>, fails: &mut Vec<Fail>) -> Vec<Val<'t, 'i>> {
    let Some(v) = v else { return vec![] };
    match v.array() {
        Ok(els) => els,
        Err(_) => {
            let name = v.field.clone();
            fails.push(v.fail(format!(
                "expected an array of tables: write [[{name}]], one per entry"
            )));
            vec![]
        }
    }
}

/// Manually keyed combined-mode SAs warned about one by one; the rest are counted.
const COMBINED_WARNINGS: usize = 3;

fn build(
    text: &str,
    doc: &toml::Spanned<DeTable<'_>>,
    fails: &mut Vec<Fail>,
) -> (Option<Config>, Vec<Fail>) {
    let mut warnings = vec![];
    let mut root = Table::root(doc);
    let gateway = match root.req("gateway").and_then(|v| v.table()) {
        Ok(mut t) => {
            let g = gateway::read(&mut t, fails);
            t.finish(fails);
            g
        }
        Err(e) => {
            fails.push(e);
            None
        }
    };
    let control = match root.get("control") {
        None => Some(ControlConfig::default()),
        Some(v) => match v.table() {
            Ok(mut t) => {
                let c = control::read(&mut t, fails);
                t.finish(fails);
                c
            }
            Err(e) => {
                fails.push(e);
                None
            }
        },
    };
    let sa_vals = tables(root.get("sa"), fails);
    let policy_vals = tables(root.get("policy"), fails);
    root.finish(fails);

    // SA pairs. Names are read on their own first so that a policy naming an SA whose table
    // has errors is not reported as naming an unknown SA.
    let lines = reader::Lines::new(text);
    let names: Vec<Option<String>> = sa_vals.iter().map(sa::peek_name).collect();
    // the first SA of each name (a second one is reported by check_sa_uniqueness)
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(n) = n {
            by_name.entry(n.as_str()).or_insert(i);
        }
    }
    let mut drafts: Vec<Option<SaDraft>> = sa_vals
        .iter()
        .enumerate()
        .map(|(i, v)| match sa::read(v, i, lines.line(v.at)) {
            Ok(d) => Some(d),
            Err(f) => {
                fails.extend(f);
                None
            }
        })
        .collect();
    check_sa_uniqueness(&drafts, fails);

    // Policies.
    let policies: Vec<Option<PolicyDraft>> = policy_vals
        .iter()
        .map(|v| match policy::read(v) {
            Ok(p) => Some(p),
            Err(f) => {
                fails.extend(f);
                None
            }
        })
        .collect();
    let mut first_policy: HashMap<&str, &PolicyDraft> = HashMap::new();
    for p in policies.iter().flatten() {
        if let Some(q) = first_of(&mut first_policy, p.name.as_str(), p) {
            fails.push(p.locs.fail(
                "name",
                format!(
                    "policy name {:?} is already used by {} (line {})",
                    p.name,
                    q.locs.path,
                    lines.line(q.locs.header)
                ),
            ));
        }
    }

    // Resolve `sa = "name"` to the pair's index; give each inbound SA the selectors of the
    // policies that use it, for the post-decapsulation check (RFC 4301 §5.2). A pair no
    // policy names keeps none, so its inbound SA accepts nothing: nothing here may stand
    // in for "any".
    let mut resolved: Vec<Option<Vec<usize>>> = vec![None; policies.len()];
    let mut used = vec![false; drafts.len()];
    // (pair, selector) already given to the pair's inbound SA
    let mut seen: HashSet<(usize, Selector)> = HashSet::new();
    'policies: for (i, p) in policies.iter().enumerate() {
        let Some(p) = p else { continue };
        if p.sas.is_empty() {
            continue;
        }
        let mut idxs = vec![];
        for sa_ref in &p.sas {
            let Some(&idx) = by_name.get(sa_ref.name.as_str()) else {
                let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
                fails.push(sa_ref.fail(format!(
                    "no [[sa]] is named {:?}{}",
                    sa_ref.name,
                    if known.is_empty() {
                        " (there are no SAs)".to_owned()
                    } else {
                        format!(" (SAs: {})", known.join(", "))
                    }
                )));
                continue 'policies;
            };
            idxs.push(idx);
        }
        // A transport-mode SA carries what the policy selects only while no tunnel-mode SA
        // is inside it in the bundle (after a tunnel, it carries the gateways' packets).
        let mut inside_tunnel = false;
        let mut ok = true;
        for &idx in &idxs {
            used[idx] = true;
            let Some(d) = drafts.get_mut(idx).and_then(Option::as_mut) else {
                ok = false; // that SA has errors of its own
                continue;
            };
            let inb = &d.pair.inbound;
            if inb.mode == Mode::Transport
                && !inside_tunnel
                && let Some((key, msg)) = policy::transport_fits(&p.selector, inb.local, inb.remote)
            {
                fails.push(p.locs.fail(key, msg));
                ok = false;
                continue;
            }
            inside_tunnel |= inb.mode == Mode::Tunnel;
            if seen.insert((idx, p.selector)) {
                d.pair.inbound.selectors.push(p.selector);
            }
        }
        if ok {
            resolved[i] = Some(idxs);
        }
    }

    for d in drafts.iter().flatten() {
        sa::validate(d, fails);
    }
    for (d, used) in drafts.iter().zip(&used) {
        if let Some(d) = d
            && !used
        {
            warnings.push(d.locs.fail(
                "name",
                format!(
                    "SA pair {:?} is used by no protect policy: it is installed, but no \
                     traffic is sent through it and its inbound SA accepts nothing (it has \
                     no selectors)",
                    d.pair.name
                ),
            ));
        }
    }
    // RFC 4106 §2 (and RFC 7634 §2, RFC 4543 §3): combined modes need automated keying. A
    // manual key outlives restarts, and a restarted sender numbers from 1 again under a new
    // random IV mask: (key, nonce) pairs can repeat. Warned, not refused: the appliances
    // configure it.
    // A hub with thousands of such SAs gets the first few warnings and a count, not one
    // line per SA.
    let combined: Vec<&SaDraft> = drafts
        .iter()
        .flatten()
        .filter(|d| d.pair.outbound.enc.is_combined())
        .collect();
    for d in combined.iter().take(COMBINED_WARNINGS) {
        warnings.push(d.locs.fail(
            "encryption",
            format!(
                "{} is a combined mode, and RFC 4106 §2 requires automated keying for it: \
                 with a manual key, a restart or a key used again can repeat a nonce, which \
                 breaks its confidentiality and integrity; negotiate it with IKE, or use \
                 AES-CBC with HMAC for manual keys",
                d.pair.outbound.enc.name()
            ),
        ));
    }
    if let Some(d) = combined.get(COMBINED_WARNINGS) {
        warnings.push(d.locs.fail(
            "encryption",
            format!(
                "and {} more SA pairs from here on with a manually keyed combined mode: the \
                 same applies to each",
                combined.len() - COMBINED_WARNINGS
            ),
        ));
    }
    // Confidentiality-only ESP (allow_legacy): accepted, never silently.
    for d in drafts.iter().flatten() {
        let o = &d.pair.outbound;
        if o.protocol == Protocol::Esp && confidentiality_only(o.enc, o.auth) {
            warnings.push(d.locs.fail("integrity", CONFIDENTIALITY_ONLY_WARNING));
        }
    }
    if policy_vals.is_empty() {
        warnings.push(Fail {
            at: 0,
            field: "policy".into(),
            msg: "no [[policy]]: all outbound traffic is discarded".into(),
        });
    }

    let (Some((gateway, [inbound_default, outbound_default])), Some(control), true) =
        (gateway, control, fails.is_empty())
    else {
        return (None, warnings);
    };
    let mut spd = SpdConfig {
        inbound_default,
        outbound_default,
        ..SpdConfig::default()
    };
    let mut origin: Vec<&PolicyDraft> = vec![];
    for (p, idx) in policies.iter().flatten().zip(&resolved) {
        let action = match (p.action, idx) {
            (Act::Protect, Some(idxs)) => {
                let reqids: Option<Vec<u32>> = idxs
                    .iter()
                    .map(|i| {
                        drafts
                            .get(*i)
                            .and_then(Option::as_ref)
                            .map(|d| d.pair.outbound.reqid)
                    })
                    .collect();
                let Some(b) = reqids.and_then(|r| SaBundle::new(&r)) else {
                    continue;
                };
                Action::Protect(b)
            }
            (Act::Protect, None) => continue, // reported above
            (Act::Bypass, _) => Action::Bypass,
            (Act::Discard, _) => Action::Discard,
        };
        let policy = Policy {
            name: p.name.clone(),
            selector: p.selector,
            action,
        };
        if p.dirs.outbound() {
            spd.outbound.push(policy.clone());
        }
        if p.dirs.inbound() {
            spd.inbound.push(policy);
        }
        origin.push(p);
    }
    // The checks above cover what compiling checks; map any disagreement onto the policy.
    if let Err(e) = spd.compile() {
        let name = match &e {
            SpdError::Selector { name, .. } | SpdError::DuplicateName(name) => name.clone(),
        };
        let at = origin.iter().find(|p| p.name == name);
        fails.push(match at {
            Some(p) => p.locs.fail("name", e.to_string()),
            None => Fail {
                at: 0,
                field: "policy".into(),
                msg: e.to_string(),
            },
        });
        return (None, warnings);
    }
    let sas = drafts.into_iter().flatten().map(|d| d.pair).collect();
    let cfg = Config {
        path: PathBuf::new(),
        gateway,
        control,
        sas,
        spd,
        warnings: vec![],
    };
    (Some(cfg), warnings)
}

/// SA names are unique; inbound SPIs are unique on this gateway (the inbound SAD is keyed by
/// SPI); an outbound SPI is unique per peer (the peer's inbound SAD).
fn check_sa_uniqueness(drafts: &[Option<SaDraft>], fails: &mut Vec<Fail>) {
    // the first draft of each name, inbound SPI, and (outbound SPI, peer): linear in the
    // number of SAs
    let mut names: HashMap<&str, &SaDraft> = HashMap::new();
    let mut spis_in: HashMap<u32, &SaDraft> = HashMap::new();
    let mut spis_out = HashMap::new();
    let other = |e: &SaDraft| format!("{} {:?} (line {})", e.locs.path, e.pair.name, e.pair.line);
    for d in drafts.iter().flatten() {
        let a = &d.pair;
        if let Some(e) = first_of(&mut names, a.name.as_str(), d) {
            fails.push(d.locs.fail(
                "name",
                format!("SA name {:?} is already used by {}", a.name, e.locs.path),
            ));
        }
        if let Some(e) = first_of(&mut spis_in, a.inbound.spi, d) {
            fails.push(d.locs.fail(
                "spi_in",
                format!(
                    "inbound SPI {} ({:#x}) is already used by {}",
                    a.inbound.spi,
                    a.inbound.spi,
                    other(e)
                ),
            ));
        }
        if let Some(e) = first_of(&mut spis_out, (a.outbound.spi, a.outbound.remote), d) {
            fails.push(d.locs.fail(
                "spi_out",
                format!(
                    "outbound SPI {} ({:#x}) to the same peer is already used by {}",
                    a.outbound.spi,
                    a.outbound.spi,
                    other(e)
                ),
            ));
        }
    }
}

/// Record `v` as the first under `key`, or give the one recorded before it.
fn first_of<'a, K: std::hash::Hash + Eq, V>(
    seen: &mut HashMap<K, &'a V>,
    key: K,
    v: &'a V,
) -> Option<&'a V> {
    match seen.entry(key) {
        Entry::Vacant(e) => {
            e.insert(v);
            None
        }
        Entry::Occupied(e) => Some(*e.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reader::line_of;

    #[test]
    fn line_of_offsets() {
        let t = "a\nbc\n\nd";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 6), 4);
        assert_eq!(line_of(t, 999), 4);
    }

    #[test]
    fn unknown_keys_all_reported() {
        let e = parse(
            "[gateway]\nunprotected = \"a\"\nprotected = \"b\"\nfoo = 1\n[bar]\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        let d = e.diagnostics();
        assert_eq!(d.len(), 2, "{e}");
        assert_eq!(d[0].to_string().split(": ").next(), Some("x.toml:4"));
        assert_eq!(d[0].field, "gateway.foo");
        assert_eq!((d[1].line, d[1].field.as_str()), (5, "bar"));
    }
}
