//! The Security Policy Database (RFC 4301 §4.4.1): an ordered list of policies per direction,
//! first match wins, dispositions PROTECT (to an SA or SA bundle), BYPASS and DISCARD, with an
//! implicit DISCARD after the last entry.
//!
//! [`SpdConfig`] is the editable list; [`Spd`] is its compiled, immutable form that workers
//! share behind an `Arc` and replace whole (see [`classifier`] for the lookup structure).
//! Packets that match nothing get the configurable [`NonPolicy`] of their direction (the
//! implicit DISCARD by default, or the appliances' "allow non-policy packets"). Multicast and broadcast destinations are never
//! protected: PROTECT entries do not match them, so they fall through to the next entry.

mod classifier;
pub mod flow_cache;
pub mod selector;
pub mod selector_set;
mod starts;

pub use selector::{AddrRange, Direction, Family, PacketKey, PortSel, Selector, SelectorError};

use classifier::Table;
use core::fmt;

/// The most SAs one PROTECT policy can chain (e.g. transport ESP inside tunnel ESP).
pub const MAX_BUNDLE: usize = 4;

/// The SAs a PROTECT policy applies, innermost first. An SA is named by its `reqid` (as in
/// Linux XFRM and strongSwan): rekeying replaces the SA behind a reqid without touching the
/// SPD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaBundle {
    reqids: [u32; MAX_BUNDLE],
    len: u8,
}

impl SaBundle {
    pub fn single(reqid: u32) -> Self {
        Self {
            reqids: [reqid, 0, 0, 0],
            len: 1,
        }
    }

    /// A bundle of 1 to [`MAX_BUNDLE`] SAs, innermost first.
    pub fn new(reqids: &[u32]) -> Option<Self> {
        if reqids.is_empty() || reqids.len() > MAX_BUNDLE {
            return None;
        }
        let mut r = [0; MAX_BUNDLE];
        r[..reqids.len()].copy_from_slice(reqids);
        Some(Self {
            reqids: r,
            len: reqids.len() as u8,
        })
    }

    pub fn reqids(&self) -> &[u32] {
        &self.reqids[..usize::from(self.len)]
    }
}

/// What a policy does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Protect(SaBundle),
    Bypass,
    Discard,
}

/// The disposition of an action, without its SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    Protect,
    Bypass,
    Discard,
}

impl Action {
    pub fn disposition(&self) -> Disposition {
        match self {
            Action::Protect(_) => Disposition::Protect,
            Action::Bypass => Disposition::Bypass,
            Action::Discard => Disposition::Discard,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::Protect => "PROTECT",
            Disposition::Bypass => "BYPASS",
            Disposition::Discard => "DISCARD",
        })
    }
}

/// One SPD entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub selector: Selector,
    pub action: Action,
}

/// What happens to a packet no policy matches (per direction; for inbound, plaintext: ESP
/// for an SA is never looked up in the inbound SPD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonPolicy {
    /// RFC 4301's implicit DISCARD.
    #[default]
    Discard,
    /// Pass it ("allow non-policy packets").
    Bypass,
}

/// The editable SPD: ordered policies per direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpdConfig {
    pub outbound: Vec<Policy>,
    pub inbound: Vec<Policy>,
    pub inbound_default: NonPolicy,
    /// What happens to outbound packets no policy matches.
    pub outbound_default: NonPolicy,
}

/// Why an SPD cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdError {
    #[error("policy {name:?} ({dir}): {source}")]
    Selector {
        name: String,
        dir: Direction,
        source: SelectorError,
    },
    #[error("policy name {0:?} is used twice in the same direction")]
    DuplicateName(String),
}

impl SpdConfig {
    pub fn policies(&self, dir: Direction) -> &[Policy] {
        match dir {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// Compile into the immutable lookup structure.
    pub fn compile(&self) -> Result<Spd, SpdError> {
        Spd::compile(self.clone())
    }
}

#[derive(Debug, Clone)]
struct DirTables {
    v4: Table<u32>,
    v6: Table<u128>,
}

impl DirTables {
    fn build(policies: &[Policy]) -> Self {
        let sels: Vec<Selector> = policies.iter().map(|p| p.selector).collect();
        let protect: Vec<bool> = policies
            .iter()
            .map(|p| matches!(p.action, Action::Protect(_)))
            .collect();
        DirTables {
            v4: Table::build(&sels, &protect, Family::V4),
            v6: Table::build(&sels, &protect, Family::V6),
        }
    }

    #[inline]
    fn lookup(&self, dir: Direction, k: &PacketKey) -> Option<u32> {
        let (l, r) = k.local_remote(dir);
        let (lp, rp) = k.ports(dir);
        if k.v6 {
            self.v6.lookup(l, r, k.proto, lp, rp, k.dst_multicast)
        } else {
            self.v4
                .lookup(l as u32, r as u32, k.proto, lp, rp, k.dst_multicast)
        }
    }

    fn all(&self, dir: Direction, k: &PacketKey) -> Vec<u32> {
        let (l, r) = k.local_remote(dir);
        let (lp, rp) = k.ports(dir);
        if k.v6 {
            self.v6.all(l, r, k.proto, lp, rp, k.dst_multicast)
        } else {
            self.v4
                .all(l as u32, r as u32, k.proto, lp, rp, k.dst_multicast)
        }
    }
}

/// The compiled SPD.
#[derive(Debug, Clone)]
pub struct Spd {
    config: SpdConfig,
    tables: [DirTables; 2],
    /// The most SAs an outbound PROTECT applies to one packet (1 with no bundle).
    deepest: usize,
}

/// Which counters a new SPD's policies continue: per direction (inbound, outbound), per new
/// policy, the old policy's index ([`Spd::carry_from`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpdCarry(pub [Vec<Option<u32>>; 2]);

impl SpdCarry {
    /// The new counters: each policy's old count, or 0.
    pub fn apply(&self, dir: Direction, old_hits: &[u64]) -> Vec<u64> {
        self.0[dir.index()]
            .iter()
            .map(|o| {
                o.and_then(|i| old_hits.get(i as usize).copied())
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Result of an SPD lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Policy `index` (in its direction's list) matched first.
    Policy { index: u32, action: &'a Action },
    /// Nothing matched; `action` is the implicit DISCARD or the inbound default.
    Default { action: Disposition },
}

/// The answer of the policy test for one described packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    /// First matching policy (index in its direction), if any.
    pub first: Option<usize>,
    /// Every matching policy in SPD order.
    pub matches: Vec<usize>,
    /// What happens to the packet.
    pub disposition: Disposition,
}

/// The policy test over port ranges: one answer per range where it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTestSplit {
    /// Inclusive local and remote "port" domain ranges.
    pub local_ports: (u32, u32),
    pub remote_ports: (u32, u32),
    pub result: PolicyTest,
}

impl Spd {
    pub fn compile(config: SpdConfig) -> Result<Spd, SpdError> {
        for dir in [Direction::Inbound, Direction::Outbound] {
            let mut names = std::collections::HashSet::new();
            for p in config.policies(dir) {
                p.selector.validate().map_err(|source| SpdError::Selector {
                    name: p.name.clone(),
                    dir,
                    source,
                })?;
                if !p.name.is_empty() && !names.insert(p.name.as_str()) {
                    return Err(SpdError::DuplicateName(p.name.clone()));
                }
            }
        }
        let tables = [
            DirTables::build(&config.inbound),
            DirTables::build(&config.outbound),
        ];
        let deepest = config
            .outbound
            .iter()
            .filter_map(|p| match &p.action {
                Action::Protect(b) => Some(b.reqids().len()),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        Ok(Spd {
            config,
            tables,
            deepest,
        })
    }

    /// The most SAs one outbound packet goes through (the longest bundle; at least 1).
    pub fn deepest_bundle(&self) -> usize {
        self.deepest
    }

    /// An SPD with no policies: everything outbound is discarded, inbound plaintext gets the
    /// default.
    pub fn empty(inbound_default: NonPolicy) -> Spd {
        let cfg = SpdConfig {
            inbound_default,
            ..SpdConfig::default()
        };
        let tables = [DirTables::build(&[]), DirTables::build(&[])];
        Spd {
            config: cfg,
            tables,
            deepest: 1,
        }
    }

    pub fn config(&self) -> &SpdConfig {
        &self.config
    }

    /// For each policy of this SPD (per direction, inbound first): the index of the policy of
    /// the same name in `old`, whose counters it continues. O(P): one hash of the old names.
    /// Computed once, off the workers, for every worker that swaps `old` for this SPD.
    pub fn carry_from(&self, old: &Spd) -> SpdCarry {
        let map = |dir: Direction| -> Vec<Option<u32>> {
            let by_name: std::collections::HashMap<&str, u32> = old
                .policies(dir)
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i as u32))
                .collect();
            self.policies(dir)
                .iter()
                .map(|p| by_name.get(p.name.as_str()).copied())
                .collect()
        };
        SpdCarry([map(Direction::Inbound), map(Direction::Outbound)])
    }

    pub fn policies(&self, dir: Direction) -> &[Policy] {
        self.config.policies(dir)
    }

    pub fn inbound_default(&self) -> NonPolicy {
        self.config.inbound_default
    }

    pub fn outbound_default(&self) -> NonPolicy {
        self.config.outbound_default
    }

    fn default_disposition(&self, dir: Direction) -> Disposition {
        let d = match dir {
            Direction::Inbound => self.config.inbound_default,
            Direction::Outbound => self.config.outbound_default,
        };
        match d {
            NonPolicy::Bypass => Disposition::Bypass,
            NonPolicy::Discard => Disposition::Discard,
        }
    }

    /// First-match lookup.
    #[inline]
    pub fn lookup(&self, dir: Direction, k: &PacketKey) -> Lookup<'_> {
        self.resolve(dir, self.first_match(dir, k))
    }

    /// Index of the first matching policy, from the compiled tables.
    #[inline]
    pub fn first_match(&self, dir: Direction, k: &PacketKey) -> Option<u32> {
        self.tables[dir.index()].lookup(dir, k)
    }

    /// The lookup answer for a first match found earlier ([`first_match`](Self::first_match)
    /// on this SPD).
    #[inline]
    pub fn resolve(&self, dir: Direction, first: Option<u32>) -> Lookup<'_> {
        match first {
            Some(index) => match self.policies(dir).get(index as usize) {
                Some(p) => Lookup::Policy {
                    index,
                    action: &p.action,
                },
                None => Lookup::Default {
                    action: Disposition::Discard,
                },
            },
            None => Lookup::Default {
                action: self.default_disposition(dir),
            },
        }
    }

    /// The same answer as [`lookup`](Self::lookup) by comparing every policy in order: the
    /// reference the compiled structure is tested against.
    pub fn lookup_linear(&self, dir: Direction, k: &PacketKey) -> Option<usize> {
        self.policies(dir).iter().position(|p| {
            p.selector.matches(dir, k)
                && !(k.dst_multicast && matches!(p.action, Action::Protect(_)))
        })
    }

    /// The policy test: first match, every match, and the resulting disposition.
    pub fn test(&self, dir: Direction, k: &PacketKey) -> PolicyTest {
        let matches: Vec<usize> = self.tables[dir.index()]
            .all(dir, k)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let first = matches.first().copied();
        let disposition = match first.and_then(|i| self.policies(dir).get(i)) {
            Some(p) => p.action.disposition(),
            None => self.default_disposition(dir),
        };
        PolicyTest {
            first,
            matches,
            disposition,
        }
    }

    /// The policy test over ranges of local and remote ports (or ICMP type and code): the
    /// ranges are cut where some policy's port selector starts or ends, and each piece gets
    /// its own answer; neighbouring pieces with the same answer are merged.
    pub fn test_ranges(
        &self,
        dir: Direction,
        k: &PacketKey,
        local: (u32, u32),
        remote: (u32, u32),
    ) -> Vec<PolicyTestSplit> {
        let t = &self.tables[dir.index()];
        let (lc, rc) = if k.v6 {
            (
                t.v6.port_cuts(false, local.0, local.1),
                t.v6.port_cuts(true, remote.0, remote.1),
            )
        } else {
            (
                t.v4.port_cuts(false, local.0, local.1),
                t.v4.port_cuts(true, remote.0, remote.1),
            )
        };
        let mut out: Vec<PolicyTestSplit> = vec![];
        for &(llo, lhi) in &lc {
            let mut row: Vec<PolicyTestSplit> = vec![];
            for &(rlo, rhi) in &rc {
                let mut key = *k;
                // place the probe in the requested orientation
                let (sp, dp) = if k.src_port >= selector::ICMP_BASE || dir == Direction::Outbound {
                    (llo, rlo)
                } else {
                    (rlo, llo)
                };
                key.src_port = sp;
                key.dst_port = dp;
                let result = self.test(dir, &key);
                match row.last_mut() {
                    Some(prev) if prev.result == result && prev.remote_ports.1 + 1 == rlo => {
                        prev.remote_ports.1 = rhi
                    }
                    _ => row.push(PolicyTestSplit {
                        local_ports: (llo, lhi),
                        remote_ports: (rlo, rhi),
                        result,
                    }),
                }
            }
            // merge with the previous local range if every remote piece agrees
            let same = {
                let prev: Vec<_> = out
                    .iter()
                    .rev()
                    .take_while(|s| s.local_ports.1 + 1 == llo)
                    .collect();
                prev.len() == row.len()
                    && prev
                        .iter()
                        .rev()
                        .zip(&row)
                        .all(|(a, b)| a.result == b.result && a.remote_ports == b.remote_ports)
            };
            if same {
                let n = row.len();
                let len = out.len();
                for s in &mut out[len - n..] {
                    s.local_ports.1 = lhi;
                }
            } else {
                out.extend(row);
            }
        }
        out
    }

    /// Bytes used by the compiled tables (both directions and families).
    pub fn memory_bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.v4.memory_bytes() + t.v6.memory_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn pol(name: &str, sel: Selector, action: Action) -> Policy {
        Policy {
            name: name.into(),
            selector: sel,
            action,
        }
    }

    fn key(proto: u8, src: &str, sp: Option<u16>, dst: &str, dp: Option<u16>) -> PacketKey {
        PacketKey::describe(
            Some(IpProtocol(proto)),
            src.parse::<IpAddr>().unwrap(),
            sp,
            dst.parse::<IpAddr>().unwrap(),
            dp,
        )
    }

    /// The seed appliance's transport policies: ICMP bypass, an explicit DISCARD, PROTECT.
    fn sample() -> Spd {
        let mut icmp = Selector::ANY;
        icmp.proto = Some(IpProtocol::ICMP);
        let mut icmp6 = Selector::ANY;
        icmp6.proto = Some(IpProtocol::ICMPV6);
        let mut telnet = Selector::addresses("10.0.0.0/8".parse().unwrap(), AddrRange::Any);
        telnet.proto = Some(IpProtocol::TCP);
        telnet.remote_port = PortSel::port(23);
        let prot = Selector::addresses(
            "10.1.0.0/24".parse().unwrap(),
            "10.2.0.0/24".parse().unwrap(),
        );
        let cfg = SpdConfig {
            outbound: vec![
                pol("icmp", icmp, Action::Bypass),
                pol("icmp6", icmp6, Action::Bypass),
                pol("no-telnet", telnet, Action::Discard),
                pol("a-b", prot, Action::Protect(SaBundle::single(7))),
            ],
            inbound: vec![pol("in-any", Selector::ANY, Action::Bypass)],
            inbound_default: NonPolicy::Discard,
            outbound_default: NonPolicy::Discard,
        };
        cfg.compile().unwrap()
    }

    #[test]
    fn first_match_wins_and_implicit_discard() {
        let spd = sample();
        let d = Direction::Outbound;
        let k = key(1, "10.1.0.5", Some(8), "10.2.0.5", Some(0));
        assert!(matches!(
            spd.lookup(d, &k),
            Lookup::Policy {
                index: 0,
                action: Action::Bypass
            }
        ));
        let k = key(6, "10.1.0.5", Some(4000), "10.2.0.5", Some(23));
        assert!(matches!(spd.lookup(d, &k), Lookup::Policy { index: 2, .. }));
        let k = key(6, "10.1.0.5", Some(4000), "10.2.0.5", Some(22));
        assert!(matches!(
            spd.lookup(d, &k),
            Lookup::Policy {
                index: 3,
                action: Action::Protect(_)
            }
        ));
        let k = key(17, "10.9.0.5", Some(4000), "10.2.0.5", Some(22));
        assert_eq!(
            spd.lookup(d, &k),
            Lookup::Default {
                action: Disposition::Discard
            }
        );
        let t = spd.test(d, &key(6, "10.1.0.5", Some(4000), "10.2.0.5", Some(23)));
        assert_eq!(
            (t.first, t.matches.clone(), t.disposition),
            (Some(2), vec![2, 3], Disposition::Discard)
        );
    }

    #[test]
    fn multicast_is_never_protected() {
        let cfg = SpdConfig {
            outbound: vec![
                pol("all", Selector::ANY, Action::Protect(SaBundle::single(1))),
                pol("rest", Selector::ANY, Action::Bypass),
            ],
            ..Default::default()
        };
        let spd2 = cfg.compile().unwrap();
        let k = key(17, "10.1.0.5", Some(1), "224.0.0.5", Some(2));
        assert!(matches!(
            spd2.lookup(Direction::Outbound, &k),
            Lookup::Policy { index: 1, .. }
        ));
        let k = key(17, "10.1.0.5", Some(1), "255.255.255.255", Some(2));
        assert!(matches!(
            spd2.lookup(Direction::Outbound, &k),
            Lookup::Policy { index: 1, .. }
        ));
        let k = key(17, "fd00::1", Some(1), "ff02::1", Some(2));
        assert!(matches!(
            spd2.lookup(Direction::Outbound, &k),
            Lookup::Policy { index: 1, .. }
        ));
        let k = key(17, "10.1.0.5", Some(1), "10.2.0.5", Some(2));
        assert!(matches!(
            spd2.lookup(Direction::Outbound, &k),
            Lookup::Policy { index: 0, .. }
        ));
    }

    #[test]
    fn inbound_default_and_families() {
        let cfg = SpdConfig {
            inbound_default: NonPolicy::Bypass,
            outbound_default: NonPolicy::Discard,
            ..Default::default()
        };
        let spd = cfg.compile().unwrap();
        let k = key(17, "fd00::1", Some(1), "fd00::2", Some(2));
        assert_eq!(
            spd.lookup(Direction::Inbound, &k),
            Lookup::Default {
                action: Disposition::Bypass
            }
        );
        assert_eq!(
            spd.lookup(Direction::Outbound, &k),
            Lookup::Default {
                action: Disposition::Discard
            }
        );
        // a v4 policy never matches v6 packets
        let spd = sample();
        let k = key(6, "fd00::1", Some(4000), "fd00::2", Some(23));
        assert_eq!(
            spd.lookup(Direction::Outbound, &k),
            Lookup::Default {
                action: Disposition::Discard
            }
        );
        let k = key(58, "fd00::1", Some(128), "fd00::2", Some(0));
        assert!(matches!(
            spd.lookup(Direction::Outbound, &k),
            Lookup::Policy { index: 1, .. }
        ));
    }

    #[test]
    fn invalid_policy_is_named() {
        let mut s = Selector::ANY;
        s.local_port = PortSel::port(80);
        let cfg = SpdConfig {
            outbound: vec![pol("web", s, Action::Bypass)],
            ..Default::default()
        };
        let e = cfg.compile().unwrap_err();
        assert!(e.to_string().contains("web"), "{e}");
        let cfg = SpdConfig {
            outbound: vec![
                pol("x", Selector::ANY, Action::Bypass),
                pol("x", Selector::ANY, Action::Discard),
            ],
            ..Default::default()
        };
        assert!(matches!(cfg.compile(), Err(SpdError::DuplicateName(_))));
    }

    /// `xsec-lab capacity --sas 1000`'s SPD: one UDP source port per SA between the same
    /// two subnets. Every flow finds its own policy, compiled or through the flow cache.
    #[test]
    fn a_thousand_port_policies_each_find_their_flow() {
        let n = 1000u16;
        let mut outbound = vec![];
        for i in 0..n {
            let mut sel = Selector::addresses(
                "10.1.0.0/24".parse().unwrap(),
                "10.2.0.0/24".parse().unwrap(),
            );
            sel.proto = Some(IpProtocol::UDP);
            sel.local_port = PortSel::port(10_000 + i);
            outbound.push(pol(
                &format!("p{i}"),
                sel,
                Action::Protect(SaBundle::single(u32::from(i) + 1)),
            ));
        }
        let cfg = SpdConfig {
            outbound,
            inbound: vec![],
            inbound_default: NonPolicy::Discard,
            outbound_default: NonPolicy::Discard,
        };
        let spd = cfg.compile().unwrap();
        let mut cache = flow_cache::FlowCache::default();
        for round in 0..2 {
            for f in 0..n {
                let k = key(17, "10.1.0.10", Some(10_000 + f), "10.2.0.10", Some(5301));
                let want = Some(usize::from(f));
                assert_eq!(spd.lookup_linear(Direction::Outbound, &k), want, "{f}");
                for got in [
                    spd.lookup(Direction::Outbound, &k),
                    cache.lookup(&spd, Direction::Outbound, &k),
                ] {
                    match got {
                        Lookup::Policy { index, .. } => {
                            assert_eq!(index as usize, usize::from(f), "flow {f}, round {round}")
                        }
                        other => panic!("flow {f}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn test_ranges_splits_where_answers_differ() {
        let spd = sample();
        let k = key(6, "10.1.0.5", Some(0), "10.2.0.5", Some(0));
        let r = spd.test_ranges(Direction::Outbound, &k, (0, 65535), (0, 65535));
        // remote ports: 0-22 protect, 23 discard, 24-65535 protect
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].remote_ports, (0, 22));
        assert_eq!(r[0].result.disposition, Disposition::Protect);
        assert_eq!(r[1].remote_ports, (23, 23));
        assert_eq!(r[1].result.disposition, Disposition::Discard);
        assert_eq!(r[2].remote_ports, (24, 65535));
        assert!(r.iter().all(|s| s.local_ports == (0, 65535)));
    }

    /// Ranges past the port domain (an ICMP "type 300") end, clipped, instead of looping.
    #[test]
    fn test_ranges_past_the_port_domain_terminate() {
        let spd = sample();
        let k = key(1, "10.1.0.5", Some(0), "10.2.0.5", Some(0));
        let base = selector::ICMP_BASE;
        let r = spd.test_ranges(
            Direction::Outbound,
            &k,
            (base + 300, base + 300),
            (base, base),
        );
        assert!(r.is_empty(), "{r:#?}");
        let r = spd.test_ranges(Direction::Outbound, &k, (base, base + 70_000), (base, base));
        assert_eq!(
            r.last().map(|s| s.local_ports.1),
            Some(selector::PORT_DOMAIN_MAX)
        );
    }

    fn arb_addr() -> impl Strategy<Value = AddrRange> {
        prop_oneof![
            Just(AddrRange::Any),
            (0u32..64, 20u8..=32).prop_map(|(a, l)| AddrRange::prefix(
                IpAddr::from([10, 0, (a / 8) as u8, (a * 31) as u8]),
                l
            )
            .unwrap()),
            (0u32..512, 0u32..64).prop_map(|(a, n)| AddrRange::V4 {
                lo: 0x0a00_0000 + a,
                hi: 0x0a00_0000 + a + n
            }),
            (0u128..64, 112u8..=128).prop_map(|(a, l)| AddrRange::prefix(
                IpAddr::from(std::net::Ipv6Addr::from((0xfd00u128 << 112) | (a << 8))),
                l
            )
            .unwrap()),
        ]
    }

    fn arb_ports() -> impl Strategy<Value = PortSel> {
        prop_oneof![
            3 => Just(PortSel::Any),
            1 => Just(PortSel::Opaque),
            3 => (0u16..100, 0u16..50).prop_map(|(a, n)| PortSel::Range { lo: a, hi: a + n }),
        ]
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            arb_addr(),
            arb_addr(),
            prop_oneof![
                Just(None),
                Just(Some(6u8)),
                Just(Some(17)),
                Just(Some(1)),
                Just(Some(58)),
                Just(Some(50))
            ],
            arb_ports(),
            arb_ports(),
            0u8..3,
            0u8..20,
            0u8..5,
        )
            .prop_map(|(l, r, proto, lp, rp, act, t, c)| {
                let proto = proto.map(IpProtocol);
                let mut s = Selector {
                    local: l,
                    remote: r,
                    proto,
                    local_port: lp,
                    remote_port: rp,
                };
                if !proto.is_some_and(|p| p.has_ports()) {
                    s.local_port = if proto.is_some_and(|p| p.is_icmp()) && t < 10 {
                        PortSel::Icmp { lo: t, hi: t + c }
                    } else {
                        PortSel::Any
                    };
                    s.remote_port = PortSel::Any;
                }
                let action = match act {
                    0 => Action::Bypass,
                    1 => Action::Discard,
                    _ => Action::Protect(SaBundle::single(1)),
                };
                Policy {
                    name: String::new(),
                    selector: s,
                    action,
                }
            })
            .prop_filter("valid", |p| p.selector.validate().is_ok())
    }

    fn arb_key() -> impl Strategy<Value = PacketKey> {
        (
            any::<bool>(),
            0u128..600,
            0u128..600,
            prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(50), Just(47)],
            0u16..160,
            0u16..160,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(v6, s, d, proto, sp, dp, opaque, mc)| {
                let base: u128 = if v6 { 0xfd00u128 << 112 } else { 0x0a00_0000 };
                let dst = if mc {
                    if v6 { 0xff02u128 << 112 } else { 0xe000_0005 }
                } else {
                    base + d * 3
                };
                let src = base + s * 5;
                let (src, dst) = (src, dst);
                let mut k = PacketKey {
                    v6,
                    src,
                    dst,
                    proto,
                    src_port: u32::from(sp),
                    dst_port: u32::from(dp),
                    dst_multicast: selector::is_multicast(v6, dst),
                };
                if IpProtocol(proto).is_icmp() {
                    k.src_port = selector::ICMP_BASE + u32::from(sp % 16);
                    k.dst_port = selector::ICMP_BASE + u32::from(dp % 4);
                } else if opaque || !IpProtocol(proto).has_ports() {
                    k.src_port = selector::OPAQUE;
                    k.dst_port = selector::OPAQUE;
                }
                k
            })
    }

    /// The compiled SPD's first match and its every match (`test`) are the linear scan's,
    /// for every key in both directions.
    fn answers_as_linear(spd: &Spd, keys: &[PacketKey]) -> Result<(), TestCaseError> {
        for k in keys {
            for dir in [Direction::Inbound, Direction::Outbound] {
                let lin = spd.lookup_linear(dir, k);
                let got = match spd.lookup(dir, k) {
                    Lookup::Policy { index, .. } => Some(index as usize),
                    Lookup::Default { .. } => None,
                };
                prop_assert_eq!(got, lin, "{:?} {:?}", dir, k);
                let all: Vec<usize> = spd
                    .policies(dir)
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.selector.matches(dir, k)
                            && !(k.dst_multicast && matches!(p.action, Action::Protect(_)))
                    })
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(spd.test(dir, k).matches, all);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn compiled_equals_linear(policies in proptest::collection::vec(arb_policy(), 0..150), keys in proptest::collection::vec(arb_key(), 50)) {
            let cfg = SpdConfig { outbound: policies.clone(), inbound: policies, inbound_default: NonPolicy::Discard, outbound_default: NonPolicy::Discard };
            let spd = cfg.compile().unwrap();
            answers_as_linear(&spd, &keys)?;
        }

        /// SPDs of thousands of policies, where the summaries span several words: the
        /// random policies sit between runs of fillers that match no key, some because their
        /// addresses lie elsewhere, some because their protocol (SCTP) never comes, so that
        /// address rows have bits in words where the protocol row has none.
        #[test]
        fn compiled_equals_linear_with_thousands(policies in proptest::collection::vec(arb_policy(), 20..40), gaps in proptest::collection::vec(100usize..450, 40), keys in proptest::collection::vec(arb_key(), 60)) {
            let mut list = vec![];
            for (i, p) in policies.into_iter().enumerate() {
                for g in 0..gaps[i] {
                    let n = list.len() as u32;
                    let mut s = if g % 2 == 0 {
                        Selector::ANY
                    } else {
                        Selector::addresses(
                            AddrRange::V4 { lo: 0xac10_0000 + n * 256, hi: 0xac10_0000 + n * 256 + 255 },
                            AddrRange::Any,
                        )
                    };
                    if g % 2 == 0 {
                        s.proto = Some(IpProtocol(132));
                    }
                    list.push(pol(&format!("filler{n}"), s, Action::Discard));
                }
                list.push(p);
            }
            let cfg = SpdConfig { outbound: list.clone(), inbound: list, inbound_default: NonPolicy::Discard, outbound_default: NonPolicy::Discard };
            let spd = cfg.compile().unwrap();
            answers_as_linear(&spd, &keys)?;
        }

        /// The flow cache gives the classifier's answers, through collisions (the keys
        /// twice, interleaved) and across an SPD change (emptied in between).
        #[test]
        fn flow_cache_equals_linear(a in proptest::collection::vec(arb_policy(), 0..60), b in proptest::collection::vec(arb_policy(), 0..60), keys in proptest::collection::vec(arb_key(), 1..40)) {
            let mut cache = flow_cache::FlowCache::default();
            for policies in [a, b] {
                let cfg = SpdConfig { outbound: policies.clone(), inbound: policies, inbound_default: NonPolicy::Bypass, outbound_default: NonPolicy::Discard };
                let spd = cfg.compile().unwrap();
                cache.clear();
                for k in keys.iter().chain(keys.iter().rev()).chain(&keys) {
                    for dir in [Direction::Inbound, Direction::Outbound] {
                        let want = spd.lookup_linear(dir, k);
                        let got = cache.lookup(&spd, dir, k);
                        let (got_i, default) = match got { Lookup::Policy { index, .. } => (Some(index as usize), None), Lookup::Default { action } => (None, Some(action)) };
                        prop_assert_eq!(got_i, want, "{:?} {:?}", dir, k);
                        if let Some(d) = default {
                            prop_assert_eq!(d, spd.default_disposition(dir));
                        }
                    }
                }
            }
            let (hits, misses) = cache.counts();
            prop_assert!(hits > 0 && misses > 0);
        }
    }
}
