//! Traffic selectors (RFC 7296 §2.9): intersection, narrowing by the responder, and the
//! initiator's check that the answer is within what it asked for.

use std::net::IpAddr;

use super::wire::TrafficSelector;

/// A selector for a whole prefix, any protocol and port.
pub fn prefix(addr: IpAddr, len: u8) -> Option<TrafficSelector> {
    let (start, end) = match addr {
        IpAddr::V4(a) => {
            if len > 32 {
                return None;
            }
            let v = u32::from(a);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (
                IpAddr::from((v & mask).to_be_bytes()),
                IpAddr::from((v | !mask).to_be_bytes()),
            )
        }
        IpAddr::V6(a) => {
            if len > 128 {
                return None;
            }
            let v = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (
                IpAddr::from((v & mask).to_be_bytes()),
                IpAddr::from((v | !mask).to_be_bytes()),
            )
        }
    };
    Some(TrafficSelector {
        ip_proto: 0,
        start_port: 0,
        end_port: 65535,
        start,
        end,
    })
}

fn key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(v) => (4, u128::from(u32::from(v))),
        IpAddr::V6(v) => (6, u128::from(v)),
    }
}

/// The selector both `a` and `b` allow, if any.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let ip_proto = match (a.ip_proto, b.ip_proto) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    if start_port > end_port {
        return None;
    }
    let (fa, sa) = key(a.start);
    let (fb, sb) = key(b.start);
    if fa != fb || key(a.end).0 != fa || key(b.end).0 != fb {
        return None;
    }
    let start = sa.max(sb);
    let end = key(a.end).1.min(key(b.end).1);
    if start > end {
        return None;
    }
    let addr = |v: u128| -> IpAddr {
        if fa == 4 {
            IpAddr::from((v as u32).to_be_bytes())
        } else {
            IpAddr::from(v.to_be_bytes())
        }
    };
    Some(TrafficSelector {
        ip_proto,
        start_port,
        end_port,
        start: addr(start),
        end: addr(end),
    })
}

/// Whether `inner` is within `outer`.
pub fn contains(outer: &TrafficSelector, inner: &TrafficSelector) -> bool {
    intersect(outer, inner).as_ref() == Some(inner)
}

/// The responder's narrowing: each of the peer's selectors intersected with each of ours,
/// duplicates removed, in the peer's order. Empty: TS_UNACCEPTABLE.
pub fn narrow(theirs: &[TrafficSelector], ours: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = vec![];
    for t in theirs {
        for o in ours {
            if let Some(i) = intersect(t, o)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
    }
    out
}

/// The initiator's check of the answer: every selector within one it proposed.
pub fn within(answer: &[TrafficSelector], proposed: &[TrafficSelector]) -> bool {
    !answer.is_empty()
        && answer
            .iter()
            .all(|a| proposed.iter().any(|p| contains(p, a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str, len: u8) -> TrafficSelector {
        prefix(s.parse().expect("ip"), len).expect("prefix")
    }

    #[test]
    fn prefixes_and_intersections() {
        let a = ts("10.1.0.0", 16);
        let b = ts("10.1.2.0", 24);
        assert_eq!(a.start, "10.1.0.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(a.end, "10.1.255.255".parse::<IpAddr>().expect("ip"));
        assert_eq!(intersect(&a, &b), Some(b));
        assert!(contains(&a, &b));
        assert!(!contains(&b, &a));
        assert_eq!(intersect(&b, &ts("10.1.3.0", 24)), None);
        assert_eq!(intersect(&a, &ts("2001:db8::", 32)), None);
        let mut udp = ts("0.0.0.0", 0);
        udp.ip_proto = 17;
        udp.start_port = 500;
        udp.end_port = 500;
        let i = intersect(&a, &udp).expect("udp 500 within 10.1/16");
        assert_eq!((i.ip_proto, i.start_port, i.end_port), (17, 500, 500));
        assert_eq!(i.start, a.start);
        let mut tcp = udp;
        tcp.ip_proto = 6;
        assert_eq!(intersect(&tcp, &udp), None);
        let v6 = ts("2001:db8:1::", 48);
        assert_eq!(
            v6.end,
            "2001:db8:1:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .expect("ip")
        );
    }

    #[test]
    fn narrowing() {
        // the peer asks for 10.0.0.0/8, we allow 10.2.0.0/24 and 10.3.0.0/24
        let got = narrow(
            &[ts("10.0.0.0", 8)],
            &[ts("10.2.0.0", 24), ts("10.3.0.0", 24)],
        );
        assert_eq!(got, vec![ts("10.2.0.0", 24), ts("10.3.0.0", 24)]);
        assert!(within(&got, &[ts("10.0.0.0", 8)]));
        assert!(!within(&got, &[ts("10.2.0.0", 24)]));
        assert!(narrow(&[ts("192.168.0.0", 16)], &[ts("10.2.0.0", 24)]).is_empty());
        assert!(!within(&[], &[ts("10.0.0.0", 8)]));
    }
}
