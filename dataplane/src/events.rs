//! Events the engine reports to the control plane: lifetime soft/hard transitions (rekey
//! now / SA dead), sequence-number exhaustion, and a NAT-T peer that moved. Queued in a
//! bounded buffer allocated up front; when it is full, further events are counted as lost.

use crate::sa::{LimitKind, SaHandle};
use crate::spd::Direction;
use std::collections::VecDeque;
use std::net::IpAddr;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A soft limit was reached: rekey (or, for `Sequence`, the counter nears its end).
    SoftLifetime(LimitKind),
    /// A hard limit was reached: the SA passes no more traffic. `Sequence` means the
    /// sequence number is exhausted and the SA needs rekeying.
    HardLifetime(LimitKind),
    /// Authenticated UDP-encapsulated ESP arrived from a new address or port (NAT rebinding,
    /// RFC 7296 §2.23); control decides whether to move the outbound SA.
    PeerChanged { addr: IpAddr, port: u16 },
    /// ACQUIRE (RFC 4301 §5.1, PF_KEY's SADB_ACQUIRE): an outbound packet matched PROTECT
    /// policy `policy` (its index in the outbound SPD) and no SA with the event's reqid is
    /// installed. The packet was dropped (`no_sa`); the packet's addresses, protocol and
    /// ports are there for the key manager's traffic selectors (RFC 7296 §2.9). At most one
    /// per policy per second per worker.
    Acquire {
        policy: u32,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        /// Ports of a TCP/UDP/SCTP packet; `None` otherwise.
        ports: Option<(u16, u16)>,
    },
}

/// An event about one SA (for [`EventKind::Acquire`]: about the SA that is missing; its
/// `spi` is 0 and its `handle` [`SaHandle::NONE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub spi: u32,
    pub reqid: u32,
    pub direction: Direction,
    pub handle: SaHandle,
}

/// A bounded FIFO of events.
#[derive(Debug)]
pub struct EventQueue {
    q: VecDeque<Event>,
    cap: usize,
    lost: u64,
}

impl EventQueue {
    pub fn new(cap: usize) -> Self {
        Self {
            q: VecDeque::with_capacity(cap),
            cap,
            lost: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, e: Event) {
        if self.q.len() < self.cap {
            self.q.push_back(e);
        } else {
            self.lost += 1;
        }
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.q.drain(..)
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}
