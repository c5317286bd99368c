//! `[[policy]]`: SPD entries (RFC 4301 §4.4.1), in file order, first match wins.
//!
//! A policy's selector is written from this gateway's point of view (local = our side), which
//! is how the engine's [`Selector`] is oriented in both directions; so `direction = "both"`
//! puts the same selector into the outbound list and into the inbound list.

use super::reader::{Fail, Locs, Res, Val, keep};
use xsec_dataplane::spd::selector::parse_protocol;
use xsec_dataplane::spd::{AddrRange, MAX_BUNDLE, PortSel, Selector, SelectorError};
use xsec_dataplane::wire::IpProtocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dirs {
    Out,
    In,
    Both,
}

impl Dirs {
    pub fn outbound(self) -> bool {
        matches!(self, Dirs::Out | Dirs::Both)
    }

    pub fn inbound(self) -> bool {
        matches!(self, Dirs::In | Dirs::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    Protect,
    Bypass,
    Discard,
}

/// A policy read but not yet resolved against the SAs.
pub(super) struct PolicyDraft {
    pub name: String,
    pub dirs: Dirs,
    pub selector: Selector,
    pub action: Act,
    /// The SA pairs named by `sa` (one) or `bundle` (applied in that order outbound, the
    /// first innermost: e.g. IPComp, then ESP, then AH); PROTECT only.
    pub sas: Vec<Val0>,
    pub locs: Locs,
}

/// The `sa` value with its location, kept after the table is gone.
pub(super) struct Val0 {
    pub name: String,
    pub fail_at: Fail,
}

impl Val0 {
    pub fn fail(&self, msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            ..self.fail_at.clone()
        }
    }
}

pub(super) fn read(v: &Val<'_, '_>) -> Result<PolicyDraft, Vec<Fail>> {
    let mut fails = vec![];
    let mut t = v.table().map_err(|f| vec![f])?;
    let locs = t.locs();
    let f = &mut fails;

    let name = keep(
        f,
        t.req("name").and_then(|v| {
            let s = v.string()?;
            if s.is_empty() || s.len() > 64 {
                return Err(v.fail("a policy name is 1 to 64 characters long"));
            }
            Ok(s.to_owned())
        }),
    );
    let dirs = keep(
        f,
        t.get("direction").map_or(Ok(Dirs::Both), |v| {
            v.choice(&[("out", Dirs::Out), ("in", Dirs::In), ("both", Dirs::Both)])
        }),
    );
    let addr = |v: Val<'_, '_>| v.parse::<AddrRange>();
    let local = keep(f, t.req("local").and_then(addr));
    let remote = keep(f, t.req("remote").and_then(addr));
    let proto = keep(
        f,
        t.get("protocol").map_or(Ok(None), |v| {
            if v.is_int() {
                v.uint(0u8, u8::MAX).map(|p| Some(IpProtocol(p)))
            } else {
                parse_protocol(v.string()?).map_err(|e| v.fail(e.to_string()))
            }
        }),
    );
    let local_port = t.get("local_port");
    let remote_port = t.get("remote_port");
    let icmp_type = t.get("icmp_type");
    let icmp_code = t.get("icmp_code");
    let action = keep(
        f,
        t.req("action").and_then(|v| {
            v.choice(&[
                ("protect", Act::Protect),
                ("bypass", Act::Bypass),
                ("discard", Act::Discard),
            ])
        }),
    );
    let sas = match (t.get("sa"), t.get("bundle"), action) {
        (Some(v), Some(_), _) => {
            f.push(v.fail("give sa (one SA pair) or bundle (several), not both"));
            None
        }
        (Some(v), None, Some(Act::Protect)) => keep(f, v.string()).map(|s| {
            vec![Val0 {
                name: s.to_owned(),
                fail_at: v.fail(""),
            }]
        }),
        (None, Some(v), Some(Act::Protect)) => keep(f, bundle(&v)),
        (Some(v), None, Some(a)) | (None, Some(v), Some(a)) => {
            f.push(v.fail(format!(
                "only protect policies name SAs; remove {} from this {} policy",
                v.field.rsplit('.').next().unwrap_or("sa"),
                if a == Act::Bypass {
                    "bypass"
                } else {
                    "discard"
                }
            )));
            None
        }
        (None, None, Some(Act::Protect)) => {
            f.push(t.missing(
                "sa",
                "a protect policy needs the name of an [[sa]] (sa) or an SA bundle (bundle)",
            ));
            None
        }
        // No action (reported): nothing to say about sa yet.
        (_, _, None) | (None, None, _) => Some(vec![]),
    };
    t.finish(f);

    // Ports: TCP/UDP/SCTP only; ICMP type and code: ICMP/ICMPv6 only (RFC 4301 §4.4.1.1).
    let mut ports = |v: Option<Val<'_, '_>>| -> Option<PortSel> {
        let Some(v) = v else {
            return Some(PortSel::Any);
        };
        let p = proto?;
        let sel = keep(f, port(&v))?;
        if sel == PortSel::Any || sel == PortSel::Opaque {
            return Some(sel);
        }
        if p.is_some_and(|p| p.is_icmp()) {
            f.push(v.fail("ICMP has no ports; use icmp_type and icmp_code"));
            return None;
        }
        if !p.is_some_and(|p| p.has_ports()) {
            f.push(v.fail(SelectorError::PortsWithoutProtocol.to_string()));
            return None;
        }
        Some(sel)
    };
    let local_port = ports(local_port);
    let remote_port = ports(remote_port);
    let mut icmp = |v: Option<Val<'_, '_>>| -> Option<Option<PortSel>> {
        let Some(v) = v else {
            return Some(None);
        };
        let p = proto?;
        let sel = keep(f, icmp_sel(&v))?;
        if !p.is_some_and(|p| p.is_icmp()) {
            f.push(v.fail(format!(
                "{} needs protocol icmp or icmpv6",
                v.field.rsplit('.').next().unwrap_or("icmp_type")
            )));
            return None;
        }
        Some(Some(sel))
    };
    let icmp_type = icmp(icmp_type);
    let icmp_code = icmp(icmp_code);

    let (
        Some(name),
        Some(dirs),
        Some(local),
        Some(remote),
        Some(proto),
        Some(local_port),
        Some(remote_port),
        Some(icmp_type),
        Some(icmp_code),
        Some(action),
        Some(sas),
    ) = (
        name,
        dirs,
        local,
        remote,
        proto,
        local_port,
        remote_port,
        icmp_type,
        icmp_code,
        action,
        sas,
    )
    else {
        return Err(fails);
    };
    if !fails.is_empty() {
        return Err(fails);
    }
    // ICMP type in the local "port" field, code in the remote one (the engine's encoding).
    let selector = Selector {
        local,
        remote,
        proto,
        local_port: icmp_type.unwrap_or(local_port),
        remote_port: icmp_code.unwrap_or(remote_port),
    };
    if let Err(e) = selector.validate() {
        let key = match e {
            SelectorError::LocalRemoteFamily => "remote",
            SelectorError::IcmpFamily { .. } => "protocol",
            SelectorError::IcmpWithoutIcmp => "icmp_type",
            _ => "local_port",
        };
        return Err(vec![locs.fail(key, e.to_string())]);
    }
    Ok(PolicyDraft {
        name,
        dirs,
        selector,
        action,
        sas,
        locs,
    })
}

/// `bundle = ["comp", "esp", "ah"]`: 1 to 4 distinct SA pair names (RFC 4301 §4.5).
fn bundle(v: &Val<'_, '_>) -> Res<Vec<Val0>> {
    let items = v.array()?;
    if items.is_empty() || items.len() > MAX_BUNDLE {
        return Err(v.fail(format!(
            "a bundle names 1 to {MAX_BUNDLE} SA pairs, innermost (applied first) first"
        )));
    }
    let mut out: Vec<Val0> = vec![];
    for e in &items {
        let name = e.string()?.to_owned();
        if out.iter().any(|o| o.name == name) {
            return Err(e.fail(format!("{name:?} is in the bundle twice")));
        }
        out.push(Val0 {
            name,
            fail_at: e.fail(""),
        });
    }
    Ok(out)
}

/// `any`, `opaque`, a port (integer or string) or `"lo-hi"`.
fn port(v: &Val<'_, '_>) -> Res<PortSel> {
    if v.is_int() {
        return v.uint(0u16, u16::MAX).map(PortSel::port);
    }
    v.parse::<PortSel>()
}

/// An ICMP type or code: an integer 0-255 or `"lo-hi"`.
fn icmp_sel(v: &Val<'_, '_>) -> Res<PortSel> {
    if v.is_int() {
        return v.uint(0u8, u8::MAX).map(|t| PortSel::Icmp { lo: t, hi: t });
    }
    let s = v.string()?.trim();
    let bad = || v.fail(format!("{s:?}: expected 0-255 or \"lo-hi\" with lo <= hi"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim().parse::<u8>().map_err(|_| bad())?,
            b.trim().parse::<u8>().map_err(|_| bad())?,
        ),
        None => {
            let t = s.parse::<u8>().map_err(|_| bad())?;
            (t, t)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok(PortSel::Icmp { lo, hi })
}

/// RFC 4301 §4.4.1: whether a transport-mode SA with these endpoints can carry traffic of
/// this selector. The engine puts ESP between the packet's own IP header and its payload,
/// so the packet's addresses are the SA's endpoints; a wider selector would send ESP to
/// hosts that hold no SA (and the peer's inbound lookup matches its local address).
pub(super) fn transport_fits(
    sel: &Selector,
    local: Option<std::net::IpAddr>,
    remote: Option<std::net::IpAddr>,
) -> Option<(&'static str, String)> {
    for (key, range, ep) in [("local", sel.local, local), ("remote", sel.remote, remote)] {
        if let Some(a) = ep
            && range != AddrRange::host(a)
        {
            return Some((
                key,
                format!(
                    "transport mode protects only the endpoints' own traffic: {key} must be \
                     {a} (the SA's {key} address), not {range}"
                ),
            ));
        }
    }
    None
}
