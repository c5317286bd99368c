//! Drop reasons and counters. Drops are counters, not log lines: every packet the engine does
//! not pass on has exactly one [`DropReason`], counted per worker and, where an SA is known,
//! per SA.

use core::fmt;

macro_rules! drop_reasons {
    ($( $(#[$m:meta])* $name:ident = $text:literal, )*) => {
        /// Why the engine did not pass a packet on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$m])* $name, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name),*];
            /// Number of reasons (the length of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable lower-case name, as shown by counters and `show` commands.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    /// The outer header is not a well-formed IPv4/IPv6 packet (or an ESP/UDP header is cut).
    Malformed = "malformed",
    /// An outer IP fragment: ESP is processed after reassembly (RFC 4303 §3.4.1); or transport
    /// mode asked to protect a fragment (RFC 4303 §3.1.1).
    Fragment = "fragment",
    /// No SA for the SPI (and destination), or no outbound SA behind a PROTECT policy.
    NoSa = "no_sa",
    /// The ESP packet arrived in a different encapsulation than its SA uses (raw vs UDP, port).
    EncapMismatch = "encap_mismatch",
    /// ESP lengths are inconsistent: shorter than IV + trailer + ICV, or not block aligned.
    BadLength = "bad_length",
    /// The sequence number is left of the anti-replay window (RFC 4303 §3.4.3).
    ReplayOld = "replay_old",
    /// The sequence number was already received (RFC 4303 §3.4.3).
    ReplayDuplicate = "replay_duplicate",
    /// The integrity check (ICV or AEAD tag) failed (RFC 4303 §3.4.4).
    IcvFailed = "icv_failed",
    /// Padding bytes are not 1, 2, 3, … or the pad length exceeds the payload (RFC 4303 §2.4).
    BadPadding = "bad_padding",
    /// The next header does not fit the SA's mode (e.g. not IPv4/IPv6 in tunnel mode).
    BadNextHeader = "bad_next_header",
    /// A dummy packet (next header 59, RFC 4303 §2.6): dropped silently, by design.
    Dummy = "dummy",
    /// The decapsulated packet does not match the SA's traffic selectors (RFC 4301 §5.2).
    SelectorMismatch = "selector_mismatch",
    /// The SA reached a hard lifetime (time, bytes, packets or idle).
    LifetimeExpired = "lifetime_expired",
    /// The outbound sequence number would wrap: the SA needs rekeying (RFC 4303 §3.3.3).
    SeqExhausted = "seq_exhausted",
    /// An SPD entry with disposition DISCARD matched.
    PolicyDiscard = "policy_discard",
    /// No SPD entry matched and the default is to discard (RFC 4301 §4.4.1).
    NoPolicy = "no_policy",
    /// Inbound plaintext matched a PROTECT policy: it should have arrived protected
    /// (RFC 4301 §5.2 step 3).
    UnprotectedForProtect = "unprotected_for_protect",
    /// The frame has too little headroom or tailroom for the ESP headers and trailer.
    NoBufferSpace = "no_buffer_space",
    /// The encapsulated packet would exceed 65535 bytes.
    TooBig = "too_big",
    /// The ESP packet would exceed the path MTU towards the peer and the inner packet may
    /// not be fragmented (IPv4 DF, or IPv6): nothing was encrypted (no sequence number
    /// spent); the sender is told the MTU left ([`crate::Verdict::TooBig`]).
    PathMtu = "path_mtu",
    /// RFC 6040 decapsulation: outer CE with a Not-ECT inner packet must be dropped.
    EcnDrop = "ecn_drop",
    /// UDP on an encapsulation port that is neither ESP, IKE nor a NAT-keepalive.
    BadUdpEncap = "bad_udp_encap",
    /// The SA bundle nests deeper than the engine allows.
    BundleTooDeep = "bundle_too_deep",
    /// The packet's IPsec protocol (ESP, AH or IPComp) is not its SA's.
    ProtocolMismatch = "protocol_mismatch",
    /// The IPComp payload is not a valid DEFLATE or LZS stream.
    DecompressFailed = "decompress_failed",
    /// The IPComp payload would decompress beyond what the frame holds (or the largest IP
    /// packet): a compression bomb is dropped here, never given more memory.
    DecompressTooBig = "decompress_too_big",
    /// The SAs that decapsulated the packet are not the bundle of the policy its contents
    /// match, or an outer layer's selectors were left to a bundle check no policy makes
    /// (RFC 4301 §4.5, §5.2).
    BundleMismatch = "bundle_mismatch",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters indexed by [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters(pub [u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounters {
    #[inline(always)]
    pub fn bump(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }

    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Add `o`'s counters to these (summing workers).
    pub fn add(&mut self, o: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a += b;
        }
    }

    /// Non-zero counters with their names.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n != 0)
    }
}

/// One SA's drop counters, allocated at its first drop: most SAs never drop a packet, and
/// the counters inline were 184 of an SA's 640 bytes (176 MB at a million SAs). The SAs that
/// do drop allocate once each, so this never holds more than the inline counters did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaDrops(Option<Box<DropCounters>>);

impl SaDrops {
    #[inline]
    pub fn bump(&mut self, r: DropReason) {
        self.0.get_or_insert_with(Box::default).bump(r);
    }

    /// The counters (all zero before the first drop).
    pub fn counters(&self) -> DropCounters {
        self.0.as_deref().copied().unwrap_or_default()
    }
}

/// Per-worker counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Packets encapsulated (outbound PROTECT).
    pub encap_packets: u64,
    pub encap_bytes: u64,
    /// Packets decapsulated (inbound ESP that passed every check).
    pub decap_packets: u64,
    pub decap_bytes: u64,
    /// Plaintext passed by BYPASS policies (or the inbound default).
    pub bypass_packets: u64,
    /// IKE packets handed to the control plane.
    pub punt_packets: u64,
    /// NAT-keepalives consumed.
    pub keepalives: u64,
    pub drops: DropCounters,
    /// Events lost because the event queue was full.
    pub events_lost: u64,
    /// IPComp, outbound: packets sent compressed, and sent as they were because
    /// compression would not have made them smaller (RFC 3173 §2.2).
    pub ipcomp_compressed: u64,
    pub ipcomp_uncompressed: u64,
}

impl WorkerStats {
    /// Add another worker's counters to these.
    pub fn add(&mut self, o: &WorkerStats) {
        self.encap_packets += o.encap_packets;
        self.encap_bytes += o.encap_bytes;
        self.decap_packets += o.decap_packets;
        self.decap_bytes += o.decap_bytes;
        self.bypass_packets += o.bypass_packets;
        self.punt_packets += o.punt_packets;
        self.keepalives += o.keepalives;
        self.drops.add(&o.drops);
        self.events_lost += o.events_lost;
        self.ipcomp_compressed += o.ipcomp_compressed;
        self.ipcomp_uncompressed += o.ipcomp_uncompressed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_stats_sum() {
        let mut a = WorkerStats::default();
        let mut b = WorkerStats {
            encap_packets: 3,
            decap_bytes: 7,
            events_lost: 1,
            ..WorkerStats::default()
        };
        b.drops.bump(DropReason::NoSa);
        b.drops.bump(DropReason::NoSa);
        a.drops.bump(DropReason::IcvFailed);
        a.add(&b);
        a.add(&b);
        assert_eq!((a.encap_packets, a.decap_bytes, a.events_lost), (6, 14, 2));
        assert_eq!(a.drops.get(DropReason::NoSa), 4);
        assert_eq!(a.drops.get(DropReason::IcvFailed), 1);
        assert_eq!(a.drops.total(), 5);
    }

    #[test]
    fn sa_drops_hold_nothing_until_the_first_drop() {
        let mut d = SaDrops::default();
        assert_eq!(d, SaDrops(None));
        assert_eq!(d.counters(), DropCounters::default());
        d.bump(DropReason::ReplayDuplicate);
        d.bump(DropReason::ReplayDuplicate);
        d.bump(DropReason::IcvFailed);
        let c = d.counters();
        assert_eq!(c.get(DropReason::ReplayDuplicate), 2);
        assert_eq!(c.get(DropReason::IcvFailed), 1);
        assert_eq!(c.total(), 3);
        assert_eq!(d.clone().counters(), c);
        assert!(std::mem::size_of::<SaDrops>() <= 8);
    }

    #[test]
    fn names_are_unique_and_indexed() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut c = DropCounters::default();
        c.bump(DropReason::IcvFailed);
        c.bump(DropReason::IcvFailed);
        assert_eq!(c.get(DropReason::IcvFailed), 2);
        assert_eq!(
            c.nonzero().collect::<Vec<_>>(),
            vec![(DropReason::IcvFailed, 2)]
        );
    }
}
