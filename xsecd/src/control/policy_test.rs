//! `policy test`: which policies a described packet matches — the first, and every match by
//! disposition — split into port (or ICMP type/code) ranges where the answer differs. Pure:
//! the daemon runs it on its live SPD, `xsecctl policy test --config FILE` on a file's.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use xsec_dataplane::spd::selector::{ICMP_BASE, PortSel, parse_protocol};
use xsec_dataplane::spd::{Direction, PacketKey, PolicyTestSplit, Spd};
use xsec_dataplane::wire::IpProtocol;

/// The dispositions, in the order the records list them.
pub const DISPOSITIONS: [&str; 3] = ["protect", "bypass", "discard"];

/// A described packet (or a set of them, over port ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The test's name, echoed in the answer (the appliances name their tests).
    pub name: Option<String>,
    pub dir: Direction,
    /// `None`: any protocol (only policies for any protocol can match).
    pub proto: Option<IpProtocol>,
    pub local: IpAddr,
    /// Local ports, or the ICMP type: `None` for all.
    pub lports: Option<(u16, u16)>,
    pub remote: IpAddr,
    /// Remote ports, or the ICMP code: `None` for all.
    pub rports: Option<(u16, u16)>,
}

impl Probe {
    /// From the request's words: direction `in`/`out`, a protocol (`any`, a name or a
    /// number), and endpoints `A`, `A:port`, `A:lo-hi`, `A:any`, `[v6]:port`, `v6`. With
    /// ICMP the local "port" is the message type and the remote one the code (0-255).
    pub fn parse(
        dir: &str,
        proto: &str,
        local: &str,
        remote: &str,
        name: Option<&str>,
    ) -> Result<Probe, String> {
        let dir = match dir {
            "in" | "inbound" => Direction::Inbound,
            "out" | "outbound" => Direction::Outbound,
            d => return Err(format!("direction: {d:?}; expected in or out")),
        };
        let proto = parse_protocol(proto).map_err(|e| format!("proto: {e}"))?;
        let icmp = proto.is_some_and(|p| p.is_icmp());
        let (local, lports) = parse_endpoint(local).map_err(|m| format!("local: {m}"))?;
        let (remote, rports) = parse_endpoint(remote).map_err(|m| format!("remote: {m}"))?;
        if local.is_ipv6() != remote.is_ipv6() {
            return Err("remote: not of the local address's family".into());
        }
        let has_ports = proto.is_some_and(|p| p.has_ports());
        for (side, what, r) in [("local", "type", lports), ("remote", "code", rports)] {
            match r {
                Some((_, hi)) if icmp && hi > 255 => {
                    return Err(format!("{side}: an ICMP {what} is 0-255, not {hi}"));
                }
                Some(_) if !icmp && !has_ports => {
                    let p = proto.map_or("any".to_owned(), |p| p.to_string());
                    return Err(format!(
                        "{side}: protocol {p} has no ports; give the address alone"
                    ));
                }
                _ => {}
            }
        }
        Ok(Probe {
            name: name.map(str::to_owned),
            dir,
            proto,
            local,
            lports,
            remote,
            rports,
        })
    }

    fn icmp(&self) -> bool {
        self.proto.is_some_and(|p| p.is_icmp())
    }

    fn ranged(&self) -> bool {
        self.icmp() || self.proto.is_some_and(|p| p.has_ports())
    }
}

/// `A`, `A:port`, `A:lo-hi`, `A:any`, `[v6]:port`, `v6`: an address and its ports, `None`
/// for all of them. Ports are read as the configuration reads them ([`PortSel`]).
pub fn parse_endpoint(s: &str) -> Result<(IpAddr, Option<(u16, u16)>), String> {
    let s = s.trim();
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']').ok_or("missing ']'")?;
        (a, p.strip_prefix(':'))
    } else if s.matches(':').count() == 1 {
        let (a, p) = s.split_once(':').ok_or("bad address")?;
        (a, Some(p))
    } else {
        (s, None)
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let port = match port.map(PortSel::from_str) {
        None | Some(Ok(PortSel::Any)) => None,
        Some(Ok(PortSel::Range { lo, hi })) => Some((lo, hi)),
        Some(Ok(_)) | Some(Err(_)) => {
            return Err(format!(
                "{:?} is not a port, a range lo-hi or any",
                port.unwrap_or_default()
            ));
        }
    };
    Ok((ip, port))
}

/// Test `p` against `spd`. The answer: `{name, direction, proto, icmp, local, remote,
/// results: [{local_ports, remote_ports, first, first_position, disposition, matches,
/// by_disposition}]}` (ports `[lo, hi]`, or null for a protocol without them).
pub fn run(spd: &Spd, p: &Probe) -> Value {
    let icmp = p.icmp();
    let base = if icmp { ICMP_BASE } else { 0 };
    let full = if icmp { (0, 255) } else { (0, 65535) };
    let shift = |r: Option<(u16, u16)>| {
        let (lo, hi) = r.unwrap_or(full);
        (u32::from(lo) + base, u32::from(hi) + base)
    };
    let (src, dst) = match p.dir {
        Direction::Outbound => (p.local, p.remote),
        Direction::Inbound => (p.remote, p.local),
    };
    let probe = p.ranged().then_some(0u16);
    let key = PacketKey::describe(p.proto, src, probe, dst, probe);
    let pols = spd.policies(p.dir);
    let name = |i: usize| pols.get(i).map(|p| p.name.clone());
    let splits = if p.ranged() {
        spd.test_ranges(p.dir, &key, shift(p.lports), shift(p.rports))
    } else {
        vec![PolicyTestSplit {
            local_ports: (0, 0),
            remote_ports: (0, 0),
            result: spd.test(p.dir, &key),
        }]
    };
    let rows: Vec<Value> = splits
        .iter()
        .map(|s| {
            let r = &s.result;
            let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for &i in &r.matches {
                if let Some(pol) = pols.get(i) {
                    by.entry(pol.action.disposition().to_string().to_lowercase())
                        .or_default()
                        .push(pol.name.clone());
                }
            }
            let ports = |r: (u32, u32)| {
                if p.ranged() {
                    json!([r.0 - base, r.1 - base])
                } else {
                    Value::Null
                }
            };
            json!({
                "local_ports": ports(s.local_ports),
                "remote_ports": ports(s.remote_ports),
                "first": r.first.and_then(name),
                "first_position": r.first.map(|i| i + 1),
                "disposition": r.disposition.to_string().to_lowercase(),
                "matches": r.matches.iter().filter_map(|&i| name(i)).collect::<Vec<_>>(),
                "by_disposition": by,
            })
        })
        .collect();
    json!({
        "name": p.name,
        "direction": p.dir.name(),
        "proto": p.proto.map_or("any".to_owned(), |x| x.to_string()),
        "icmp": icmp,
        "local": p.local,
        "remote": p.remote,
        "results": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_ports_ranges_and_any() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(parse_endpoint("10.0.0.1"), Ok((a, None)));
        assert_eq!(parse_endpoint("10.0.0.1:any"), Ok((a, None)));
        assert_eq!(parse_endpoint("10.0.0.1:ANY"), Ok((a, None)));
        assert_eq!(parse_endpoint("10.0.0.1:80"), Ok((a, Some((80, 80)))));
        assert_eq!(
            parse_endpoint("10.0.0.1:1024-65535"),
            Ok((a, Some((1024, 65535))))
        );
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(parse_endpoint("[fd00::1]:any"), Ok((v6, None)));
        assert_eq!(parse_endpoint("fd00::1"), Ok((v6, None)));
        assert!(parse_endpoint("10.0.0.1:80-22").is_err());
        assert!(parse_endpoint("10.0.0.1:opaque").is_err());
        assert!(parse_endpoint("10.0.0.1:http").is_err());
        assert!(parse_endpoint("any").is_err());
    }

    #[test]
    fn icmp_types_and_codes_are_bytes() {
        let p = |l: &str, r: &str| Probe::parse("out", "icmp", l, r, None);
        assert!(p("10.0.0.1:8", "10.0.0.2:0").is_ok());
        assert!(p("10.0.0.1:any", "10.0.0.2:0-255").is_ok());
        let e = p("10.0.0.1:300", "10.0.0.2").unwrap_err();
        assert!(e.contains("ICMP type is 0-255"), "{e}");
        let e = p("10.0.0.1", "10.0.0.2:256").unwrap_err();
        assert!(e.contains("ICMP code is 0-255"), "{e}");
        let e = Probe::parse("out", "gre", "10.0.0.1:1", "10.0.0.2", None).unwrap_err();
        assert!(e.contains("has no ports"), "{e}");
        assert!(Probe::parse("up", "tcp", "10.0.0.1", "10.0.0.2", None).is_err());
        let e = Probe::parse("out", "tcp", "10.0.0.1", "fd00::2", None).unwrap_err();
        assert!(e.contains("family"), "{e}");
    }
}
