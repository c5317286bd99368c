//! `[gateway]`: interfaces, workers and the inbound default.

use super::reader::{Fail, Table, keep};
use xsec_dataplane::spd::NonPolicy;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpModeCfg {
    /// Native (driver) mode: fastest, needs XDP support in the NIC driver.
    Driver,
    /// Generic (SKB) mode: works on every interface, veth and lab namespaces included, so it
    /// is the default that never fails to attach; choose `driver` on production NICs.
    #[default]
    Skb,
}

/// What a worker does when its queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// Poll without sleeping: lowest latency, one core per worker at 100%.
    #[default]
    Busy,
    /// Back off and sleep when idle.
    Adaptive,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Interface towards the peers (ESP side).
    pub unprotected: String,
    /// Interface towards the protected hosts.
    pub protected: String,
    /// NIC RX queues, one pinned worker each.
    pub queues: Vec<u32>,
    /// Core of worker `i` is `cores[i]`; same length as `queues`.
    pub cores: Option<Vec<usize>>,
    pub xdp_mode: XdpModeCfg,
    pub idle: IdleMode,
    /// `None`: the interface's MTU.
    pub mtu: Option<u16>,
    pub stats_interval_ms: u64,
    /// RX queues deliberately left without a worker: the XDP program drops what it would
    /// hand a worker there. Every other RX queue of both interfaces must be in `queues`.
    pub uncovered_queues: Vec<u32>,
    /// Install the nftables forward guard (see `guard`).
    pub forward_guard: bool,
    /// ICMP errors a worker may send per second (token bucket; 0: none).
    pub icmp_rate: u32,
    /// Bucket size: ICMP errors a worker may send at once after a quiet period.
    pub icmp_burst: u32,
}

/// Largest MTU accepted: a 9216-byte jumbo frame, the common switch maximum.
const MTU_MAX: u16 = 9216;
/// Smallest MTU accepted: the IPv4 minimum datagram every host must take (RFC 791).
const MTU_MIN: u16 = 576;

/// Read `[gateway]`; returns the gateway settings and the SPD's defaults for packets no
/// policy matches, inbound and outbound.
pub(super) fn read(
    t: &mut Table<'_, '_>,
    fails: &mut Vec<Fail>,
) -> Option<(GatewayConfig, [NonPolicy; 2])> {
    let mut ifname = |key: &'static str| {
        let r = t.req(key).and_then(|v| {
            let s = v.string()?;
            check_ifname(s).map_err(|m| v.fail(m))?;
            Ok((s.to_owned(), v.at))
        });
        keep(fails, r)
    };
    let unprotected = ifname("unprotected");
    let protected = ifname("protected");
    if let (Some((u, _)), Some((p, at))) = (&unprotected, &protected)
        && u == p
    {
        fails.push(Fail {
            at: *at,
            field: "gateway.protected".into(),
            msg: format!("{p:?} is also the unprotected interface; they must differ"),
        });
    }

    let mut queue_list = |key: &'static str, default: Vec<u32>, min: usize| match t.get(key) {
        None => Some(default),
        Some(v) => keep(fails, v.array()).and_then(|els| {
            if els.len() < min {
                fails.push(v.fail("at least one queue is needed"));
                return None;
            }
            let mut out: Vec<u32> = vec![];
            let mut ok = true;
            for e in &els {
                match keep(fails, e.uint(0u32, u32::MAX)) {
                    Some(q) if out.contains(&q) => {
                        fails.push(e.fail(format!("queue {q} is listed twice")));
                        ok = false;
                    }
                    Some(q) => out.push(q),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };
    let queues = queue_list("queues", vec![0], 1);
    let uncovered_queues = queue_list("uncovered_queues", vec![], 0);
    if let (Some(q), Some(u), Some(v)) = (&queues, &uncovered_queues, t.get("uncovered_queues"))
        && let Some(both) = u.iter().find(|x| q.contains(x))
    {
        fails.push(v.fail(format!(
            "queue {both} is in both `queues` and `uncovered_queues`"
        )));
    }

    let idle = keep(
        fails,
        t.get("idle").map_or(Ok(IdleMode::default()), |v| {
            v.choice(&[("busy", IdleMode::Busy), ("adaptive", IdleMode::Adaptive)])
        }),
    );

    let cores = match t.get("cores") {
        None => Some(None),
        Some(v) => keep(fails, v.array()).and_then(|els| {
            let mut out: Vec<usize> = vec![];
            let mut ok = true;
            for e in &els {
                match keep(fails, e.uint(0u32, 4095)) {
                    // Two busy-polling workers on one core starve each other.
                    Some(c) if out.contains(&(c as usize)) && idle == Some(IdleMode::Busy) => {
                        fails.push(e.fail(format!(
                            "core {c} is listed twice; busy-polling workers need a core each \
                             (or set idle = \"adaptive\")"
                        )));
                        ok = false;
                    }
                    Some(c) => out.push(c as usize),
                    None => ok = false,
                }
            }
            if let Some(q) = &queues
                && ok
                && out.len() != q.len()
            {
                fails.push(v.fail(format!(
                    "{} cores for {} queues; give one core per queue",
                    out.len(),
                    q.len()
                )));
                ok = false;
            }
            ok.then_some(Some(out))
        }),
    };

    let xdp_mode = keep(
        fails,
        t.get("xdp_mode").map_or(Ok(XdpModeCfg::default()), |v| {
            v.choice(&[("driver", XdpModeCfg::Driver), ("skb", XdpModeCfg::Skb)])
        }),
    );
    let mtu = keep(
        fails,
        t.get("mtu").map(|v| v.uint(MTU_MIN, MTU_MAX)).transpose(),
    );
    // The appliances' "allow non-policy packets": what no policy matches passes, both ways
    // (off: RFC 4301's implicit DISCARD). `inbound_default` is the older, inbound-only form.
    let allow_non_policy = keep(
        fails,
        t.get("allow_non_policy").map_or(Ok(false), |v| v.boolean()),
    );
    let inbound_default = match t.get("inbound_default") {
        None => Some(None),
        Some(v) => keep(
            fails,
            v.choice(&[
                ("discard", NonPolicy::Discard),
                ("bypass", NonPolicy::Bypass),
            ]),
        )
        .and_then(|d| {
            if allow_non_policy == Some(true) && d == NonPolicy::Discard {
                fails.push(v.fail(
                    "\"discard\" contradicts allow_non_policy = true (which passes \
                     non-policy packets both ways); remove one of them",
                ));
                return None;
            }
            Some(Some(d))
        }),
    };
    let non_policy = match (allow_non_policy, inbound_default) {
        (Some(true), Some(_)) => Some([NonPolicy::Bypass, NonPolicy::Bypass]),
        (Some(false), Some(d)) => Some([d.unwrap_or_default(), NonPolicy::Discard]),
        _ => None,
    };
    let forward_guard = keep(
        fails,
        t.get("forward_guard").map_or(Ok(true), |v| v.boolean()),
    );
    let icmp_rate = keep(
        fails,
        t.get("icmp_rate")
            .map_or(Ok(100), |v| v.uint(0u32, 1_000_000)),
    );
    let icmp_burst = keep(
        fails,
        t.get("icmp_burst")
            .map_or(Ok(20), |v| v.uint(1u32, 100_000)),
    );
    let stats_interval_ms = keep(
        fails,
        t.get("stats_interval_ms")
            .map_or(Ok(1000), |v| v.uint(100u64, 3_600_000)),
    );

    Some((
        GatewayConfig {
            unprotected: unprotected?.0,
            protected: protected?.0,
            queues: queues?,
            cores: cores?,
            xdp_mode: xdp_mode?,
            idle: idle?,
            mtu: mtu?,
            stats_interval_ms: stats_interval_ms?,
            uncovered_queues: uncovered_queues?,
            forward_guard: forward_guard?,
            icmp_rate: icmp_rate?,
            icmp_burst: icmp_burst?,
        },
        non_policy?,
    ))
}

/// Linux interface names: 1 to 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
fn check_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "interface name {s:?} must be 1 to 15 characters long"
        ));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("{s:?} is not a valid interface name"));
    }
    Ok(())
}
