//! Inbound SPI allocation (`alloc-spi`): a key manager asks for an SPI before it negotiates
//! (IKE's responder picks its inbound SPI in the CREATE_CHILD_SA exchange) and installs the SA
//! with it later. An SPI is handed out only if no installed inbound SA uses it and no other
//! reservation holds it; a reservation ends when it expires or when an SA with that SPI is
//! installed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// SPIs 1-255 are reserved by IANA (RFC 4303 §2.1); 0 is never an SPI.
pub const SPI_MIN: u32 = 256;
/// How long a reservation holds by default, and at most.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(60);
pub const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Reservations held at once, all clients together.
pub const MAX_RESERVED: usize = 65_536;

/// Why no SPI was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("SPI range {lo:#x}-{hi:#x} is empty or below {SPI_MIN} (RFC 4303 §2.1)")]
    BadRange { lo: u32, hi: u32 },
    #[error("no free SPI in {lo:#x}-{hi:#x}: every one is installed or reserved")]
    Exhausted { lo: u32, hi: u32 },
    #[error("{MAX_RESERVED} SPIs are reserved already: install or let some expire")]
    TooMany,
}

/// The reservations, by SPI: when each ends.
#[derive(Debug, Default)]
pub struct Reservations {
    held: HashMap<u32, Instant>,
}

impl Reservations {
    /// Forget the reservations that ended by `now`.
    fn expire(&mut self, now: Instant) {
        self.held.retain(|_, until| *until > now);
    }

    /// Reserve an SPI in `lo..=hi` for `hold`, avoiding `installed` (the inbound SPIs of the
    /// installed SAs). `random` gives the starting point of the search, so SPIs are not
    /// predictable from one another.
    pub fn alloc(
        &mut self,
        lo: u32,
        hi: u32,
        hold: Duration,
        now: Instant,
        installed: &dyn Fn(u32) -> bool,
        random: u32,
    ) -> Result<u32, AllocError> {
        if lo < SPI_MIN || lo > hi {
            return Err(AllocError::BadRange { lo, hi });
        }
        self.expire(now);
        if self.held.len() >= MAX_RESERVED {
            return Err(AllocError::TooMany);
        }
        let span = u64::from(hi - lo) + 1;
        let start = u64::from(random) % span;
        // a random start, then the next free one: a bounded walk (at most the range, and
        // at most every reservation and installed SA plus one)
        let tries = span.min((self.held.len() as u64 + 1) << 20);
        for k in 0..tries {
            let spi = lo + ((start + k) % span) as u32;
            if !self.held.contains_key(&spi) && !installed(spi) {
                self.held.insert(spi, now + hold.min(MAX_HOLD));
                return Ok(spi);
            }
        }
        Err(AllocError::Exhausted { lo, hi })
    }

    /// An SA with this inbound SPI was installed: its reservation is used.
    pub fn used(&mut self, spi: u32) {
        self.held.remove(&spi);
    }

    /// Whether `spi` is reserved at `now`.
    pub fn is_reserved(&self, spi: u32, now: Instant) -> bool {
        self.held.get(&spi).is_some_and(|until| *until > now)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spis_are_unique_while_reserved_or_installed() {
        let mut r = Reservations::default();
        let now = Instant::now();
        let installed = |s: u32| s == 0x1001;
        let mut got = vec![];
        for i in 0..4 {
            got.push(
                r.alloc(0x1000, 0x1004, DEFAULT_HOLD, now, &installed, i)
                    .unwrap(),
            );
        }
        got.sort_unstable();
        assert_eq!(
            got,
            [0x1000, 0x1002, 0x1003, 0x1004],
            "never the installed 0x1001"
        );
        assert_eq!(
            r.alloc(0x1000, 0x1004, DEFAULT_HOLD, now, &installed, 9),
            Err(AllocError::Exhausted {
                lo: 0x1000,
                hi: 0x1004
            })
        );
        // one used by an installed SA frees nothing; one expired is handed out again
        r.used(0x1002);
        assert!(!r.is_reserved(0x1002, now));
        let later = now + DEFAULT_HOLD + Duration::from_secs(1);
        assert!(
            r.alloc(0x1000, 0x1004, DEFAULT_HOLD, later, &installed, 0)
                .is_ok()
        );
        assert_eq!(r.len(), 1, "the others expired");
    }

    #[test]
    fn ranges_below_256_or_reversed_are_refused() {
        let mut r = Reservations::default();
        let none = |_: u32| false;
        let now = Instant::now();
        assert!(matches!(
            r.alloc(1, 300, DEFAULT_HOLD, now, &none, 0),
            Err(AllocError::BadRange { .. })
        ));
        assert!(matches!(
            r.alloc(0x2000, 0x1000, DEFAULT_HOLD, now, &none, 0),
            Err(AllocError::BadRange { .. })
        ));
        let s = r
            .alloc(SPI_MIN, u32::MAX, MAX_HOLD * 2, now, &none, u32::MAX)
            .unwrap();
        assert!(s >= SPI_MIN);
        assert!(r.is_reserved(s, now + MAX_HOLD - Duration::from_secs(1)));
        assert!(
            !r.is_reserved(s, now + MAX_HOLD),
            "a hold is capped at {MAX_HOLD:?}"
        );
    }
}
