//! Loading the XDP steering program and managing its maps.
//!
//! The program (`ebpf/`, checked in as `bpf/xsec_xdp.o` and embedded here) decides per frame
//! whether the dataplane worker gets it through the AF_XDP socket of its RX queue or the
//! kernel keeps it. [`XdpSteering`] loads the object, attaches `xsec_unprotected` to the
//! unprotected (WAN) interface and `xsec_protected` to the protected (LAN) one, and fills the
//! maps the program decides by:
//! - the `XskMap`s ([`XdpSteering::register_xsk`]): a queue without a socket drops what the
//!   worker would have decided (fail closed), so every RX queue of both interfaces needs one
//!   or is named as left uncovered;
//! - the gateway's own addresses ([`XdpSteering::set_local_addrs`]): traffic to them keeps
//!   the kernel's path, everything else the SPD decides;
//! - the tunnel ports ([`XdpSteering::set_tunnel_ports`]) and the UDP-encapsulated SAs' peers
//!   ([`XdpSteering::set_udp_peers`], whose UDP fragments the worker reassembles).
//!
//! Dropping [`XdpSteering`] detaches both programs (aya's links belong to the `Ebpf` object).
//! Map names, sizes and layouts come from `xsec-common`, shared with the program.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, Pod};
use xsec_common::{
    AddrV4, AddrV6, COUNTER_ROWS, LOCAL_MAX_ENTRIES, MAX_QUEUES, PEERS_MAX_ENTRIES, SIDE_PROTECTED,
    SIDE_UNPROTECTED, UDP_PORTS_MAX_ENTRIES, counter_index, maps, programs,
};

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

impl QueueCounters {
    /// The row as JSON: side, queue and every counter by its name.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("side".into(), self.side.to_string().into());
        m.insert("queue".into(), self.queue.into());
        for (k, v) in self.counters.fields() {
            m.insert(k.into(), v.into());
        }
        serde_json::Value::Object(m)
    }
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
        Self::load_with(unprotected, protected, mode, |_| Ok(()))
    }

    /// [`load`](Self::load), with the maps filled by `prepare` before the programs are
    /// attached: from its first frame the program knows the gateway's addresses and ports.
    pub fn load_with(
        unprotected: &str,
        protected: &str,
        mode: XdpMode,
        prepare: impl FnOnce(&mut XdpSteering) -> Result<(), XdpError>,
    ) -> Result<Self, XdpError> {
        if unprotected == protected {
            return Err(XdpError::SameInterface(unprotected.to_owned()));
        }
        let mut x = XdpSteering {
            ebpf: object()?,
            unprotected: unprotected.to_owned(),
            protected: protected.to_owned(),
            mode,
        };
        prepare(&mut x)?;
        attach(&mut x.ebpf, programs::UNPROTECTED, unprotected, mode)?;
        attach(&mut x.ebpf, programs::PROTECTED, protected, mode)?;
        Ok(x)
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
            Err(MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
            {
                Ok(())
            }
            r => r.map_err(map_err(name)),
        }
    }

    /// Replace the set of UDP destination ports whose datagrams to the gateway are tunnel
    /// traffic for the worker (all of them except IKE behind a non-ESP marker). UDP/500 and
    /// UDP/4500 keep their own rules whether listed or not.
    pub fn set_tunnel_ports(&mut self, ports: &[u16]) -> Result<(), XdpError> {
        let wanted: BTreeSet<u16> = ports.iter().copied().collect();
        self.set_keys(maps::UDP_PORTS, UDP_PORTS_MAX_ENTRIES, &wanted)
    }

    /// Replace the gateway's own addresses (every interface's): packets to them keep the
    /// kernel's path (IKE, management, routing protocols); every other IP packet is the
    /// SPD's. An address missing here is fail-closed: its traffic goes to the worker, whose
    /// SPD does not forward it to the gateway.
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let (v4, v6) = split_families(addrs);
        self.set_keys(maps::LOCAL_V4, LOCAL_MAX_ENTRIES, &v4)?;
        self.set_keys(maps::LOCAL_V6, LOCAL_MAX_ENTRIES, &v6)
    }

    /// Replace the peers of the UDP-encapsulated SAs: their UDP fragments to the gateway go
    /// to the worker for reassembly.
    pub fn set_udp_peers(&mut self, peers: &[IpAddr]) -> Result<(), XdpError> {
        let (v4, v6) = split_families(peers);
        self.set_keys(maps::PEERS_V4, PEERS_MAX_ENTRIES, &v4)?;
        self.set_keys(maps::PEERS_V6, PEERS_MAX_ENTRIES, &v6)
    }

    /// Make the hash map `name` hold exactly `wanted` (each with value 1). Stale keys go
    /// first, so the map never needs room for old and new together.
    fn set_keys<K: Pod + Ord + Hash>(
        &mut self,
        name: &'static str,
        max: u32,
        wanted: &BTreeSet<K>,
    ) -> Result<(), XdpError> {
        if wanted.len() > max as usize {
            return Err(XdpError::TooManyEntries {
                map: name,
                wanted: wanted.len(),
                max,
            });
        }
        let mut m: HashMap<&mut MapData, K, u8> =
            HashMap::try_from(self.map_data(name)?).map_err(map_err(name))?;
        let stale: Vec<K> = m
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(name))?
            .into_iter()
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in stale {
            remove_present(m.remove(&k)).map_err(map_err(name))?;
        }
        for k in wanted {
            m.insert(k, 1, 0).map_err(map_err(name))?;
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
        Err(MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
        {
            Ok(())
        }
        Err(MapError::KeyNotFound) => Ok(()),
        r => r,
    }
}

/// Map keys per family (network byte order), without duplicates.
fn split_families(addrs: &[IpAddr]) -> (BTreeSet<AddrV4>, BTreeSet<AddrV6>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.insert(a.octets()),
            IpAddr::V6(a) => v6.insert(a.octets()),
        };
    }
    (v4, v6)
}
