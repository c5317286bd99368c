//! Loading the XDP steering program and managing its maps.
//!
//! The program (`ebpf/`, checked in as `bpf/xsec_xdp.o` and embedded here) decides per frame
//! whether the dataplane worker gets it through the AF_XDP socket of its RX queue or the
//! kernel keeps it. [`XdpSteering`] loads the object, attaches `xsec_unprotected` to the
//! unprotected (WAN) interface and `xsec_protected` to the protected (LAN) one, and fills the
//! maps the program decides by:
//! - the `XskMap`s ([`XdpSteering::register_xsk`]): a queue without a socket falls back to the
//!   kernel, so every RX queue of both interfaces needs one;
//! - the tunnel ports ([`XdpSteering::set_tunnel_ports`]);
//! - the address tries ([`XdpSteering::set_protected_selectors`]) mirroring the outbound
//!   PROTECT/DISCARD policies' addresses, used for both directions.
//!
//! Dropping [`XdpSteering`] detaches both programs (aya's links belong to the `Ebpf` object).
//! Map names, sizes and layouts come from `xsec-common`, shared with the program.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, Pod};
use xsec_common::{
    COUNTER_ROWS, ClassMask, LPM_MAX_ENTRIES, LpmV4, LpmV6, MAX_QUEUES, SIDE_PROTECTED,
    SIDE_UNPROTECTED, UDP_PORTS_MAX_ENTRIES, counter_index, maps, programs,
};
use xsec_dataplane::spd::AddrRange;

/// The counter row type, re-exported for callers of [`XdpSteering::stats`].
pub use xsec_common::XdpCounters;

/// The XDP object built from `ebpf/` (see `xtask`'s eBPF build, which refreshes it).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/xsec_xdp.o");

/// How the programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native XDP, in the driver (veth supports it too).
    Driver,
    /// Generic XDP, after the kernel has built an skb: works everywhere, slower.
    Skb,
}

impl XdpMode {
    fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Driver => aya::programs::XdpMode::Driver,
            XdpMode::Skb => aya::programs::XdpMode::Skb,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Driver => "driver (native)",
            XdpMode::Skb => "skb (generic)",
        })
    }
}

/// Which interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The WAN side, where ESP arrives.
    Unprotected,
    /// The LAN side, where plaintext to protect arrives.
    Protected,
}

impl Side {
    fn index(self) -> u32 {
        match self {
            Side::Unprotected => SIDE_UNPROTECTED,
            Side::Protected => SIDE_PROTECTED,
        }
    }

    fn xsk_map(self) -> &'static str {
        match self {
            Side::Unprotected => maps::XSKS_UNPROT,
            Side::Protected => maps::XSKS_PROT,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Unprotected => "unprotected",
            Side::Protected => "protected",
        })
    }
}

/// The program's counters of one interface's RX queue, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounters {
    pub side: Side,
    pub queue: u32,
    pub counters: XdpCounters,
}

/// What went wrong loading the program or updating its maps.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("parsing the embedded XDP object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the embedded XDP object has no program {0:?}")]
    MissingProgram(&'static str),
    #[error("the embedded XDP object has no map {0:?}")]
    MissingMap(&'static str),
    #[error("loading XDP program {program} into the kernel: {source}")]
    Load {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching XDP program {program} to interface {interface:?} in {mode} mode: {source}")]
    Attach {
        program: &'static str,
        interface: String,
        mode: XdpMode,
        #[source]
        source: ProgramError,
    },
    #[error("the unprotected and protected interfaces are both {0:?}")]
    SameInterface(String),
    #[error("XDP map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "RX queue {queue} of the {side} interface: the XDP program steers queues 0..{max} only"
    )]
    QueueOutOfRange { side: Side, queue: u32, max: u32 },
    #[error("XDP map {map} holds at most {max} entries, {wanted} needed")]
    TooManyEntries {
        map: &'static str,
        wanted: usize,
        max: u32,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

/// The embedded object, parsed, with every map it must have.
fn object() -> Result<Ebpf, XdpError> {
    let ebpf = Ebpf::load(OBJECT).map_err(XdpError::Object)?;
    for name in maps::ALL {
        if ebpf.map(name).is_none() {
            return Err(XdpError::MissingMap(name));
        }
    }
    Ok(ebpf)
}

/// Load `program` of `ebpf` into the kernel and attach it to `interface`. The attachment
/// lives as long as `ebpf`.
fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    interface: &str,
    mode: XdpMode,
) -> Result<(), XdpError> {
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(XdpError::MissingProgram(program))?
        .try_into()
        .map_err(|source| XdpError::Load { program, source })?;
    prog.load()
        .map_err(|source| XdpError::Load { program, source })?;
    prog.attach(interface, mode.aya())
        .map_err(|source| XdpError::Attach {
            program,
            interface: interface.to_owned(),
            mode,
            source,
        })?;
    Ok(())
}

/// The loaded and attached steering program.
pub struct XdpSteering {
    ebpf: Ebpf,
    unprotected: String,
    protected: String,
    mode: XdpMode,
}

impl fmt::Debug for XdpSteering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpSteering")
            .field("unprotected", &self.unprotected)
            .field("protected", &self.protected)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl XdpSteering {
    /// Load the embedded object and attach `xsec_unprotected` on `unprotected`,
    /// `xsec_protected` on `protected`.
    ///
    /// The maps start empty: nothing but ESP, ESP-in-UDP/4500 and their fallbacks is steered
    /// until the tunnel ports and selectors are set, and no redirect succeeds until the
    /// sockets are registered. On error nothing stays attached.
    pub fn load(unprotected: &str, protected: &str, mode: XdpMode) -> Result<Self, XdpError> {
        if unprotected == protected {
            return Err(XdpError::SameInterface(unprotected.to_owned()));
        }
        let mut ebpf = object()?;
        attach(&mut ebpf, programs::UNPROTECTED, unprotected, mode)?;
        attach(&mut ebpf, programs::PROTECTED, protected, mode)?;
        Ok(XdpSteering {
            ebpf,
            unprotected: unprotected.to_owned(),
            protected: protected.to_owned(),
            mode,
        })
    }

    /// Load the embedded object and attach only `xsec_unprotected`, on `iface`: a receiver
    /// (`xsec-pktgen sink --io xdp`) that wants the UDP datagrams to its ports (see
    /// [`XdpSteering::set_tunnel_ports`]) in its AF_XDP sockets and everything else (ARP,
    /// ND, IKE) left to the kernel. Only the unprotected side's methods apply.
    pub fn load_receiver(iface: &str, mode: XdpMode) -> Result<Self, XdpError> {
        let mut ebpf = object()?;
        attach(&mut ebpf, programs::UNPROTECTED, iface, mode)?;
        Ok(XdpSteering {
            ebpf,
            unprotected: iface.to_owned(),
            protected: String::new(),
            mode,
        })
    }

    /// The interface a side is attached to.
    pub fn interface(&self, side: Side) -> &str {
        match side {
            Side::Unprotected => &self.unprotected,
            Side::Protected => &self.protected,
        }
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    fn map_data(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, XdpError> {
        self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))
    }

    /// The XSKMAP of `side`, after checking `queue` fits in it.
    fn xsk_map(
        &mut self,
        side: Side,
        queue: u32,
    ) -> Result<XskMap<&mut aya::maps::MapData>, XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange {
                side,
                queue,
                max: MAX_QUEUES,
            });
        }
        let name = side.xsk_map();
        XskMap::try_from(self.map_data(name)?).map_err(map_err(name))
    }

    /// Steer RX queue `queue` of `side`'s interface to the AF_XDP socket `socket` (bound to
    /// that interface and queue; the kernel drops frames for a socket bound elsewhere).
    pub fn register_xsk(
        &mut self,
        side: Side,
        queue: u32,
        socket: impl AsRawFd,
    ) -> Result<(), XdpError> {
        let name = side.xsk_map();
        let mut m = self.xsk_map(side, queue)?;
        m.set(queue, socket, 0).map_err(map_err(name))
    }

    /// Stop steering RX queue `queue` of `side` (its frames go back to the kernel).
    pub fn unregister_xsk(&mut self, side: Side, queue: u32) -> Result<(), XdpError> {
        let name = side.xsk_map();
        let mut m = self.xsk_map(side, queue)?;
        match m.unset(queue) {
            // Unsetting an empty slot is not an error for the caller.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            r => r.map_err(map_err(name)),
        }
    }

    /// Replace the set of UDP destination ports whose datagrams are tunnel traffic for the
    /// worker (all of them except IKE behind a non-ESP marker). UDP/500 and UDP/4500 keep
    /// their own rules whether listed or not.
    pub fn set_tunnel_ports(&mut self, ports: &[u16]) -> Result<(), XdpError> {
        let wanted: BTreeSet<u16> = ports.iter().copied().collect();
        if wanted.len() > UDP_PORTS_MAX_ENTRIES as usize {
            return Err(XdpError::TooManyEntries {
                map: maps::UDP_PORTS,
                wanted: wanted.len(),
                max: UDP_PORTS_MAX_ENTRIES,
            });
        }
        let name = maps::UDP_PORTS;
        let mut m: HashMap<&mut MapData, u16, u8> =
            HashMap::try_from(self.map_data(name)?).map_err(map_err(name))?;
        let stale: Vec<u16> = m
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(name))?
            .into_iter()
            .filter(|p| !wanted.contains(p))
            .collect();
        // Remove first: the map is small and never needs to hold old and new together.
        for p in stale {
            remove_present(m.remove(&p)).map_err(map_err(name))?;
        }
        for p in wanted {
            m.insert(p, 1, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Replace the address tries with the (local, remote) address ranges of the outbound
    /// PROTECT and DISCARD policies.
    ///
    /// The protected side steers source ∈ local and destination ∈ remote of one pair; the
    /// unprotected side steers plaintext with source ∈ remote and destination ∈ local of one
    /// pair (to be counted and dropped). A range that is not a prefix becomes the smallest
    /// covering set of prefixes; [`AddrRange::Any`] is 0/0 in both families; a pair whose
    /// two ranges are of different families can match nothing and is skipped. Pairs get one
    /// class bit each (see [`ClassMask`]): up to 64 pairs the tries are exact, beyond that a
    /// local address of one pair with a remote address of another may be steered too (the
    /// SPD in userspace still decides).
    ///
    /// The tries are updated one after the other, each by inserting before removing (unless
    /// it would overflow the map), so a frame in flight may briefly see a superset.
    pub fn set_protected_selectors(
        &mut self,
        pairs: &[(AddrRange, AddrRange)],
    ) -> Result<(), XdpError> {
        let t = SelectorTables::build(pairs);
        // Outbound: local is the source. Inbound plaintext: remote is the source.
        self.fill_trie::<LpmV4>(maps::OUT_SRC_V4, &t.local_v4)?;
        self.fill_trie::<LpmV4>(maps::OUT_DST_V4, &t.remote_v4)?;
        self.fill_trie::<LpmV6>(maps::OUT_SRC_V6, &t.local_v6)?;
        self.fill_trie::<LpmV6>(maps::OUT_DST_V6, &t.remote_v6)?;
        self.fill_trie::<LpmV4>(maps::INB_SRC_V4, &t.remote_v4)?;
        self.fill_trie::<LpmV4>(maps::INB_DST_V4, &t.local_v4)?;
        self.fill_trie::<LpmV6>(maps::INB_SRC_V6, &t.remote_v6)?;
        self.fill_trie::<LpmV6>(maps::INB_DST_V6, &t.local_v6)?;
        Ok(())
    }

    fn fill_trie<K: AddrBytes>(
        &mut self,
        name: &'static str,
        wanted: &BTreeMap<(u32, K), ClassMask>,
    ) -> Result<(), XdpError> {
        if wanted.len() > LPM_MAX_ENTRIES as usize {
            return Err(XdpError::TooManyEntries {
                map: name,
                wanted: wanted.len(),
                max: LPM_MAX_ENTRIES,
            });
        }
        let mut m: LpmTrie<&mut MapData, K, ClassMask> =
            LpmTrie::try_from(self.map_data(name)?).map_err(map_err(name))?;
        let present: Vec<(u32, K)> = m
            .keys()
            .map(|k| k.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(map_err(name))?;
        let stale: Vec<(u32, K)> = present
            .iter()
            .copied()
            .filter(|k| !wanted.contains_key(k))
            .collect();
        let added = wanted.len() - (present.len() - stale.len());
        let remove = |m: &mut LpmTrie<&mut MapData, K, ClassMask>| -> Result<(), XdpError> {
            for &(len, data) in &stale {
                remove_present(m.remove(&Key::new(len, data))).map_err(map_err(name))?;
            }
            Ok(())
        };
        let fits = present.len() + added <= LPM_MAX_ENTRIES as usize;
        if !fits {
            remove(&mut m)?;
        }
        for (&(len, data), &mask) in wanted {
            m.insert(&Key::new(len, data), mask, 0)
                .map_err(map_err(name))?;
        }
        if fits {
            remove(&mut m)?;
        }
        Ok(())
    }

    /// The program's counters per side and RX queue, summed over CPUs; rows that are all
    /// zero are left out. Queues at or above `MAX_QUEUES` are counted in the last row.
    pub fn stats(&self) -> Result<Vec<QueueCounters>, XdpError> {
        let name = maps::COUNTERS;
        let map = self.ebpf.map(name).ok_or(XdpError::MissingMap(name))?;
        let arr: PerCpuArray<&MapData, XdpCounters> =
            PerCpuArray::try_from(map).map_err(map_err(name))?;
        let mut rows = Vec::new();
        for side in [Side::Unprotected, Side::Protected] {
            for queue in 0..MAX_QUEUES {
                let idx = counter_index(side.index(), queue);
                debug_assert!(idx < COUNTER_ROWS);
                let per_cpu = arr.get(&idx, 0).map_err(map_err(name))?;
                let mut sum = XdpCounters::default();
                for c in per_cpu.iter() {
                    sum.add(c);
                }
                if !sum.is_zero() {
                    rows.push(QueueCounters {
                        side,
                        queue,
                        counters: sum,
                    });
                }
            }
        }
        Ok(rows)
    }
}

/// A removal of a key another writer already removed is fine.
fn remove_present(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        r => r,
    }
}

/// Address bytes of an LPM key (network order).
trait AddrBytes: Pod + Ord {}
impl AddrBytes for LpmV4 {}
impl AddrBytes for LpmV6 {}

/// The contents of the tries: (prefix length, address bytes) → class bits.
#[derive(Debug, Default, PartialEq, Eq)]
struct SelectorTables {
    local_v4: BTreeMap<(u32, LpmV4), ClassMask>,
    remote_v4: BTreeMap<(u32, LpmV4), ClassMask>,
    local_v6: BTreeMap<(u32, LpmV6), ClassMask>,
    remote_v6: BTreeMap<(u32, LpmV6), ClassMask>,
}

/// An inclusive range in one family, `bits` wide.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: u128,
    hi: u128,
}

impl Span {
    fn covers(&self, o: &Span) -> bool {
        self.lo <= o.lo && o.hi <= self.hi
    }
}

const V4_ALL: Span = Span {
    lo: 0,
    hi: u32::MAX as u128,
};
const V6_ALL: Span = Span {
    lo: 0,
    hi: u128::MAX,
};

impl SelectorTables {
    fn build(pairs: &[(AddrRange, AddrRange)]) -> Self {
        // Per family: (class bit, local span, remote span) of every pair in that family.
        let mut v4: Vec<(ClassMask, Span, Span)> = Vec::new();
        let mut v6: Vec<(ClassMask, Span, Span)> = Vec::new();
        for (i, (local, remote)) in pairs.iter().enumerate() {
            let bit: ClassMask = 1 << (i % ClassMask::BITS as usize);
            let (l4, l6) = spans(local);
            let (r4, r6) = spans(remote);
            if let (Some(l), Some(r)) = (l4, r4) {
                v4.push((bit, l, r));
            }
            if let (Some(l), Some(r)) = (l6, r6) {
                v6.push((bit, l, r));
            }
        }
        let v4_key = |lo: u128, len: u32| (len, (lo as u32).to_be_bytes());
        let v6_key = |lo: u128, len: u32| (len, lo.to_be_bytes());
        SelectorTables {
            local_v4: table(&v4, |p| p.1, 32, v4_key),
            remote_v4: table(&v4, |p| p.2, 32, v4_key),
            local_v6: table(&v6, |p| p.1, 128, v6_key),
            remote_v6: table(&v6, |p| p.2, 128, v6_key),
        }
    }
}

/// The IPv4 and IPv6 spans of an address range.
fn spans(r: &AddrRange) -> (Option<Span>, Option<Span>) {
    match *r {
        AddrRange::Any => (Some(V4_ALL), Some(V6_ALL)),
        AddrRange::V4 { lo, hi } => (
            Some(Span {
                lo: lo.into(),
                hi: hi.into(),
            }),
            None,
        ),
        AddrRange::V6 { lo, hi } => (None, Some(Span { lo, hi })),
    }
}

/// One trie: every prefix of every pair's span (chosen by `side`), valued with the bits of
/// all pairs whose span covers the whole prefix. Longest-prefix match on an address then
/// returns exactly the pairs whose span contains the address: the matched prefix P lies in
/// the span's own prefix Q that holds the address (both contain it, P is the longest), so
/// the span covers P.
fn table<K: Ord>(
    pairs: &[(ClassMask, Span, Span)],
    side: impl Fn(&(ClassMask, Span, Span)) -> Span,
    bits: u32,
    key: impl Fn(u128, u32) -> (u32, K),
) -> BTreeMap<(u32, K), ClassMask> {
    let mut prefixes: BTreeSet<(u128, u32)> = BTreeSet::new();
    for p in pairs {
        let s = side(p);
        covering_prefixes(s.lo, s.hi, bits, &mut |lo, len| {
            prefixes.insert((lo, len));
        });
    }
    prefixes
        .into_iter()
        .map(|(lo, len)| {
            let prefix = Span {
                lo,
                hi: lo | host_mask(bits - len),
            };
            let mask = pairs
                .iter()
                .filter(|p| side(p).covers(&prefix))
                .fold(0, |m, p| m | p.0);
            (key(lo, len), mask)
        })
        .collect()
}

/// Low `k` bits set.
fn host_mask(k: u32) -> u128 {
    if k >= 128 {
        u128::MAX
    } else {
        (1u128 << k) - 1
    }
}

/// The fewest prefixes (start, length) of a `bits`-wide space whose union is exactly
/// [lo, hi]: from `lo` upwards, each time the largest aligned block that fits.
fn covering_prefixes(lo: u128, hi: u128, bits: u32, out: &mut impl FnMut(u128, u32)) {
    let mut cur = lo;
    loop {
        let mut k = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while k > 0 && cur | host_mask(k) > hi {
            k -= 1;
        }
        out(cur, bits - k);
        let end = cur | host_mask(k);
        if end >= hi {
            break;
        }
        cur = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(lo: u128, hi: u128, bits: u32) -> Vec<(u128, u32)> {
        let mut v = Vec::new();
        covering_prefixes(lo, hi, bits, &mut |a, l| v.push((a, l)));
        v
    }

    #[test]
    fn range_to_prefixes() {
        assert_eq!(prefixes(0, u32::MAX.into(), 32), vec![(0, 0)]);
        assert_eq!(prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(prefixes(5, 5, 32), vec![(5, 32)]);
        // 10.1.1.5 - 10.1.1.9 = .5/32 .6/31 .8/31
        let base = 0x0a01_0100;
        assert_eq!(
            prefixes(base + 5, base + 9, 32),
            vec![(base + 5, 32), (base + 6, 31), (base + 8, 31)]
        );
        assert_eq!(
            prefixes(1, u32::MAX.into(), 32).len(),
            32,
            "1..max needs one prefix per length"
        );
        // Every decomposition is exact and gap-free.
        for (lo, hi) in [
            (3u128, 1000u128),
            (0, 7),
            (7, 8),
            (u128::MAX - 5, u128::MAX),
        ] {
            let mut next = lo;
            for (a, len) in prefixes(lo, hi, 128) {
                assert_eq!(a, next);
                assert_eq!(a & host_mask(128 - len), 0, "aligned");
                next = (a | host_mask(128 - len)).wrapping_add(1);
            }
            assert_eq!(next, hi.wrapping_add(1));
        }
    }

    #[test]
    fn class_bits_cover_nested_ranges() {
        let r = |s: &str| s.parse::<AddrRange>().unwrap();
        let t = SelectorTables::build(&[
            (r("10.1.0.0/16"), r("10.2.0.0/16")),
            (r("10.1.1.0/24"), r("10.3.0.0/16")),
            (r("10.1.0.0/16"), r("fd00::/8")), // mixed: skipped
            (AddrRange::Any, r("fd02::/64")),
        ]);
        assert_eq!(t.local_v4[&(16, [10, 1, 0, 0])], 0b01);
        // The /24 lies inside the /16: both pairs' bits.
        assert_eq!(t.local_v4[&(24, [10, 1, 1, 0])], 0b11);
        assert_eq!(t.remote_v4[&(16, [10, 3, 0, 0])], 0b10);
        assert_eq!(t.local_v4.len(), 2);
        assert_eq!(t.local_v6[&(0, [0; 16])], 0b1000);
        assert_eq!(t.remote_v6.len(), 1);
    }
}
