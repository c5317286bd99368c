//! Lifetime accounting (RFC 4301 §4.4.2.1). Per packet the cost is two compares against
//! precomputed thresholds; crossing one takes the slow path, which raises at most one soft and
//! one hard event per SA.

use super::config::Lifetime;
use crate::time::Timestamp;
use core::fmt;

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Time,
    Bytes,
    Packets,
    /// No packet for the idle timeout.
    Idle,
    /// The outbound sequence number is close to (soft) or at (hard) its maximum.
    Sequence,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Time => "time",
            LimitKind::Bytes => "bytes",
            LimitKind::Packets => "packets",
            LimitKind::Idle => "idle",
            LimitKind::Sequence => "sequence",
        })
    }
}

/// A lifetime transition to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LifeEvent {
    Soft(LimitKind),
    Hard(LimitKind),
}

const NONE: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub(crate) struct LifeState {
    pub(crate) created: Timestamp,
    pub(crate) last_used: Timestamp,
    pub(crate) bytes: u64,
    pub(crate) packets: u64,
    pub(crate) soft_bytes: u64,
    pub(crate) hard_bytes: u64,
    pub(crate) soft_packets: u64,
    pub(crate) hard_packets: u64,
    pub(crate) soft_at: u64,
    pub(crate) hard_at: u64,
    pub(crate) idle_ns: u64,
    pub(crate) soft_fired: Option<LimitKind>,
    pub(crate) expired: Option<LimitKind>,
    /// Fast-path thresholds: the slow path runs when a counter reaches them.
    next_bytes: u64,
    next_packets: u64,
    next_time: u64,
}

fn ns(d: Option<core::time::Duration>, base: Timestamp) -> u64 {
    d.map_or(NONE, |d| base.plus(d).as_nanos())
}

impl LifeState {
    pub(crate) fn new(l: &Lifetime, now: Timestamp) -> Self {
        let mut s = LifeState {
            created: now,
            last_used: now,
            bytes: 0,
            packets: 0,
            soft_bytes: l.soft.bytes.unwrap_or(NONE),
            hard_bytes: l.hard.bytes.unwrap_or(NONE),
            soft_packets: l.soft.packets.unwrap_or(NONE),
            hard_packets: l.hard.packets.unwrap_or(NONE),
            soft_at: ns(l.soft.time, now),
            hard_at: ns(l.hard.time, now),
            idle_ns: l
                .idle
                .map_or(NONE, |d| u64::try_from(d.as_nanos()).unwrap_or(NONE)),
            soft_fired: None,
            expired: None,
            next_bytes: 0,
            next_packets: 0,
            next_time: 0,
        };
        s.rearm();
        s
    }

    /// Recompute the fast-path thresholds from the limits still pending.
    fn rearm(&mut self) {
        let soft = self.soft_fired.is_none();
        self.next_bytes = if soft {
            self.soft_bytes.min(self.hard_bytes)
        } else {
            self.hard_bytes
        };
        self.next_packets = if soft {
            self.soft_packets.min(self.hard_packets)
        } else {
            self.hard_packets
        };
        let t = if soft {
            self.soft_at.min(self.hard_at)
        } else {
            self.hard_at
        };
        let idle = if self.idle_ns == NONE {
            NONE
        } else {
            self.last_used.as_nanos().saturating_add(self.idle_ns)
        };
        self.next_time = t.min(idle);
    }

    /// Before processing a packet: is the SA still usable?
    #[inline(always)]
    pub(crate) fn usable(&mut self, now: Timestamp) -> (bool, Option<LifeEvent>) {
        if self.expired.is_some() {
            return (false, None);
        }
        if now.as_nanos() >= self.next_time {
            let ev = self.evaluate(now);
            return (self.expired.is_none(), ev);
        }
        (true, None)
    }

    /// After a packet of `bytes` bytes was processed.
    #[inline(always)]
    pub(crate) fn account(&mut self, now: Timestamp, bytes: u64) -> Option<LifeEvent> {
        self.packets += 1;
        self.bytes += bytes;
        self.last_used = now;
        if self.packets >= self.next_packets || self.bytes >= self.next_bytes {
            return self.evaluate(now);
        }
        None
    }

    /// The slow path: decide soft/hard transitions. Returns the most severe new event.
    #[cold]
    pub(crate) fn evaluate(&mut self, now: Timestamp) -> Option<LifeEvent> {
        if self.expired.is_some() {
            return None;
        }
        let t = now.as_nanos();
        let hard = if t >= self.hard_at {
            Some(LimitKind::Time)
        } else if self.bytes >= self.hard_bytes {
            Some(LimitKind::Bytes)
        } else if self.packets >= self.hard_packets {
            Some(LimitKind::Packets)
        } else if self.idle_ns != NONE
            && t.saturating_sub(self.last_used.as_nanos()) >= self.idle_ns
        {
            Some(LimitKind::Idle)
        } else {
            None
        };
        if let Some(k) = hard {
            self.expired = Some(k);
            return Some(LifeEvent::Hard(k));
        }
        let mut ev = None;
        if self.soft_fired.is_none() {
            let soft = if t >= self.soft_at {
                Some(LimitKind::Time)
            } else if self.bytes >= self.soft_bytes {
                Some(LimitKind::Bytes)
            } else if self.packets >= self.soft_packets {
                Some(LimitKind::Packets)
            } else {
                None
            };
            if let Some(k) = soft {
                self.soft_fired = Some(k);
                ev = Some(LifeEvent::Soft(k));
            }
        }
        self.rearm();
        ev
    }

    /// Mark the SA expired for a reason found elsewhere (sequence exhaustion).
    pub(crate) fn expire(&mut self, k: LimitKind) -> Option<LifeEvent> {
        if self.expired.is_some() {
            return None;
        }
        self.expired = Some(k);
        Some(LifeEvent::Hard(k))
    }

    /// Record a soft transition found elsewhere (sequence number close to its end).
    pub(crate) fn soft(&mut self, k: LimitKind) -> Option<LifeEvent> {
        if self.soft_fired.is_some() || self.expired.is_some() {
            return None;
        }
        self.soft_fired = Some(k);
        self.rearm();
        Some(LifeEvent::Soft(k))
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Limits;
    use super::*;
    use core::time::Duration;

    #[test]
    fn packets_soft_then_hard() {
        let l = Lifetime {
            soft: Limits {
                packets: Some(3),
                ..Default::default()
            },
            hard: Limits {
                packets: Some(5),
                ..Default::default()
            },
            idle: None,
        };
        let mut s = LifeState::new(&l, Timestamp::ZERO);
        let now = Timestamp::from_secs(1);
        let mut evs = vec![];
        for _ in 0..5 {
            assert!(s.usable(now).0);
            evs.push(s.account(now, 100));
        }
        assert_eq!(
            evs,
            vec![
                None,
                None,
                Some(LifeEvent::Soft(LimitKind::Packets)),
                None,
                Some(LifeEvent::Hard(LimitKind::Packets))
            ]
        );
        assert_eq!(s.usable(now), (false, None));
    }

    #[test]
    fn time_and_idle() {
        let l = Lifetime {
            soft: Limits {
                time: Some(Duration::from_secs(10)),
                ..Default::default()
            },
            hard: Limits {
                time: Some(Duration::from_secs(20)),
                ..Default::default()
            },
            idle: Some(Duration::from_secs(5)),
        };
        let mut s = LifeState::new(&l, Timestamp::from_secs(100));
        assert_eq!(s.usable(Timestamp::from_secs(104)), (true, None));
        s.account(Timestamp::from_secs(104), 1);
        // idle deadline moved with use: 104 + 5
        assert_eq!(s.usable(Timestamp::from_secs(108)), (true, None));
        s.account(Timestamp::from_secs(108), 1);
        assert_eq!(
            s.usable(Timestamp::from_secs(111)),
            (true, Some(LifeEvent::Soft(LimitKind::Time)))
        );
        s.account(Timestamp::from_secs(111), 1);
        assert_eq!(
            s.usable(Timestamp::from_secs(116)),
            (false, Some(LifeEvent::Hard(LimitKind::Idle)))
        );
    }

    #[test]
    fn bytes_hard_without_soft() {
        let l = Lifetime {
            hard: Limits {
                bytes: Some(1000),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = LifeState::new(&l, Timestamp::ZERO);
        assert_eq!(s.account(Timestamp::ZERO, 999), None);
        assert_eq!(
            s.account(Timestamp::ZERO, 1),
            Some(LifeEvent::Hard(LimitKind::Bytes))
        );
        assert!(!s.usable(Timestamp::ZERO).0);
    }
}
