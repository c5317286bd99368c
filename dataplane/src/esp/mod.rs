//! ESP processing of one packet (RFC 4303 §3): outbound encapsulation and inbound
//! decapsulation, tunnel and transport mode, IPv4 and IPv6 inside and out, raw or
//! UDP-encapsulated (RFC 3948). The engine drives these per packet of a burst.

mod decap;
mod encap;
#[cfg(test)]
mod tests;

pub(crate) use decap::{
    Header, InboundEsp, decap, transport as decap_transport, tunnel as decap_tunnel,
};
pub(crate) use encap::{Deferred, encap, inner_fast, path_mtu_room, transport_split, write_outer};

/// The most one ESP layer adds to a packet: an outer IPv6 header, UDP, the ESP header, a
/// 16-byte IV, 15 bytes of padding, the trailer and a 32-byte ICV.
pub const MAX_OVERHEAD: usize = 40 + 8 + 8 + 16 + 15 + 2 + 32;

use crate::events::{Event, EventKind, EventQueue};
use crate::sa::{Sa, SaHandle};

/// Whether `sa` may process a packet now (RFC 4301 §4.4.2.1): a transition is reported; a
/// hard limit reached is the drop reason.
#[inline(always)]
pub(crate) fn usable(
    sa: &mut Sa,
    h: SaHandle,
    now: crate::time::Timestamp,
    events: &mut EventQueue,
) -> Result<(), crate::stats::DropReason> {
    let (usable, ev) = sa.life.usable(now);
    report(events, sa, h, ev);
    if usable {
        Ok(())
    } else {
        Err(sa.expired_reason())
    }
}

/// After a packet was processed with `sa` (protected or removed, any protocol): its bytes
/// count against the lifetime (reporting a transition), or the drop counts on the SA.
#[inline(always)]
pub(crate) fn settle<T>(
    sa: &mut Sa,
    h: SaHandle,
    now: crate::time::Timestamp,
    events: &mut EventQueue,
    r: Result<(usize, T), crate::stats::DropReason>,
) -> Result<(usize, T), crate::stats::DropReason> {
    match r {
        Ok((bytes, t)) => {
            let ev = sa.life.account(now, bytes as u64);
            report(events, sa, h, ev);
            Ok((bytes, t))
        }
        Err(e) => {
            sa.drops.bump(e);
            Err(e)
        }
    }
}

/// Report a lifetime transition of `sa`.
#[inline]
pub(crate) fn report(
    events: &mut EventQueue,
    sa: &Sa,
    h: SaHandle,
    ev: Option<crate::sa::LifeEvent>,
) {
    if let Some(ev) = ev {
        let kind = match ev {
            crate::sa::LifeEvent::Soft(k) => EventKind::SoftLifetime(k),
            crate::sa::LifeEvent::Hard(k) => EventKind::HardLifetime(k),
        };
        events.push(Event {
            kind,
            spi: sa.spi,
            reqid: sa.reqid,
            direction: sa.dir,
            handle: h,
        });
    }
}
