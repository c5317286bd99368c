//! AF_XDP sockets for one worker: one UMEM shared by the worker's socket on the unprotected
//! interface and its socket on the protected interface, so a frame received on one side is
//! transmitted on the other without a copy.
//!
//! Frames move between four owners and are never in two at once: the worker's free list, a
//! fill ring (kernel), an RX ring → the worker's burst, a TX ring → a completion ring (kernel)
//! → the free list. [`Frame`] is the worker's handle on a frame it owns; it is the only way
//! to touch frame memory.
//!
//! Frames are branded: [`Xsk::open`] and [`Xsk::replay`] run a closure with an `Xsk<'id>`
//! whose `'id` is a fresh lifetime no other socket shares (invariant, chosen by the closure's
//! caller), and a `Frame<'id>` can only be given back to, or sent by, that `Xsk<'id>`.
//! The closure cannot return a frame or store one anywhere that outlives it, and the UMEM
//! is unmapped only after it returns, so no frame outlives its memory. Misuses do not
//! compile (see the `compile_fail` examples on [`Xsk`]).
//!
//! This is the only module of xsecd with `unsafe`: the UMEM mapping, frame access and
//! `poll(2)`. Every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::replay::{CAPTURE_MAX, ReplaySource};
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

/// Bytes per UMEM frame (aligned chunk mode: a frame's base is `addr & !(FRAME_SIZE - 1)`).
pub const FRAME_SIZE: u32 = 4096;
/// Packets taken from one RX ring per loop.
pub const BURST: usize = 64;

/// Which interface a socket is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Towards the IPsec peers (ESP).
    Unprotected = 0,
    /// Towards the protected hosts (plaintext).
    Protected = 1,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Unprotected, Side::Protected];

    pub fn other(self) -> Side {
        match self {
            Side::Unprotected => Side::Protected,
            Side::Protected => Side::Unprotected,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Unprotected => "unprotected",
            Side::Protected => "protected",
        }
    }
}

/// Sizes of one worker's rings and UMEM.
#[derive(Debug, Clone)]
pub struct XskConfig {
    /// Frames in the UMEM (shared by both sides).
    pub frames: u32,
    /// Entries in each RX, TX, fill and completion ring (a power of two).
    pub ring: u32,
    /// Force copy mode (veth supports nothing else); otherwise the kernel tries zero-copy
    /// and falls back to copy.
    pub force_copy: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frames: 8192,
            ring: 2048,
            force_copy: false,
        }
    }
}

/// An error setting up a socket, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP {what} ({iface} queue {queue}): {source}")]
pub struct XskError {
    what: &'static str,
    iface: String,
    queue: u32,
    source: std::io::Error,
}

fn errno(e: xdpilone::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.get_raw().abs())
}

/// The brand of one UMEM's frames: invariant in `'id`, so the frames of two sockets have
/// different types (`fn(&'id ()) -> &'id ()` is neither co- nor contravariant).
type Brand<'id> = PhantomData<fn(&'id ()) -> &'id ()>;

/// A frame the worker owns: a window into UMEM memory that no ring holds. `'id` names the
/// [`Xsk`] it belongs to.
#[derive(Debug)]
pub struct Frame<'id> {
    base: NonNull<u8>,
    /// Offset of the frame in the UMEM (what the rings carry, minus the in-frame offset).
    addr: u64,
    _brand: Brand<'id>,
}

impl Frame<'_> {
    /// The frame's UMEM address (its first byte).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl AsRef<[u8]> for Frame<'_> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base` points at FRAME_SIZE bytes inside the UMEM mapping (`frame_at`
        // checks the offset). The mapping outlives every Frame: a `Frame<'id>` cannot leave
        // the closure given to `Xsk::open`/`Xsk::replay`, which unmap only after it returns.
        // A Frame exists only for a frame no ring holds, so the kernel is not writing it, and
        // no other Frame aliases it: frames are created from RX descriptors and the free
        // list, each address once, and only the `Xsk<'id>` that made a frame takes it back.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), FRAME_SIZE as usize) }
    }
}

impl AsMut<[u8]> for Frame<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; `&mut self` makes this the only live view of the frame.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), FRAME_SIZE as usize) }
    }
}

/// An AF_XDP socket's kernel-side counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SocketStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub tx_ring_empty: u64,
}

/// A received frame: the Ethernet frame is `frame[off .. off + len]`.
#[derive(Debug)]
pub struct RxFrame<F> {
    pub frame: F,
    pub off: usize,
    pub len: usize,
}

/// The anonymous, page-aligned memory behind a UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> std::io::Result<Area> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: an anonymous private mapping with no address hint: it aliases nothing, and
        // the pointer is only used through `Area`, which unmaps it once.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                // (Miri, which checks this module's tests, maps only private anonymous)
                if cfg!(miri) {
                    MapFlags::PRIVATE
                } else {
                    MapFlags::PRIVATE | MapFlags::POPULATE
                },
            )
        }?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Area { ptr, len })
    }
}

impl Area {
    /// The frame holding offset `addr`; `None` (and the address is not used) when the frame
    /// is not wholly inside the mapping.
    fn frame<'id>(&self, addr: u64) -> Option<Frame<'id>> {
        let base = addr & !u64::from(FRAME_SIZE - 1);
        let end = usize::try_from(base)
            .ok()?
            .checked_add(FRAME_SIZE as usize)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `base + FRAME_SIZE` is within the mapping (checked above), so the result
        // points at a whole frame inside it.
        let ptr = unsafe { self.ptr.add(base as usize) };
        Some(Frame {
            base: ptr,
            addr: base,
            _brand: PhantomData,
        })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the sockets using it were dropped
        // first (field order of `Xsk`), so the kernel no longer references it, and no Frame
        // outlives the `Xsk` (see the module docs).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One bound socket: its fill/completion rings (per device queue) and RX/TX rings.
struct Port {
    dev: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    user: User,
    _socket: Socket,
    fd: i32,
}

/// Where a worker's frames come from and go to.
// One per worker, built once and never moved on the packet path: boxing the sockets would
// only add an indirection to every ring operation.
#[allow(clippy::large_enum_variant)]
enum Io {
    /// Two AF_XDP sockets sharing the UMEM. Field order is drop order: sockets before the
    /// UMEM registration.
    Sockets { ports: [Port; 2], _umem: Umem },
    /// No sockets: received frames are copies of a pcap's, sent frames are counted and freed
    /// (see [`crate::replay`]).
    Replay(ReplayIo),
}

struct ReplayIo {
    src: Arc<ReplaySource>,
    /// Which of the files this worker replays.
    worker: usize,
    /// Per side: the next template frame.
    next: [usize; 2],
    /// The first frames sent, for `--replay-capture`.
    captured: Vec<Vec<u8>>,
}

impl Drop for ReplayIo {
    fn drop(&mut self) {
        if let Some(c) = &self.src.capture {
            c.frames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&mut self.captured);
        }
    }
}

/// Where a replayed frame starts in its UMEM frame: the headroom AF_XDP copy mode leaves
/// (XDP_PACKET_HEADROOM), which encapsulation grows into.
const REPLAY_OFF: usize = 256;

/// One worker's pair of sockets and their UMEM, branded `'id` (see the module docs).
///
/// A frame cannot be given to another socket:
/// ```compile_fail,E0521
/// # use xsecd::xsk::{Xsk, XskConfig};
/// # use std::sync::Arc;
/// # let src = Arc::new(xsecd::replay::ReplaySource { files: [vec![], vec![]], capture: None });
/// let cfg = XskConfig::default();
/// Xsk::replay(src.clone(), 0, &cfg, |a| {
///     Xsk::replay(src.clone(), 0, &cfg, |b| {
///         let f = a.alloc().unwrap();
///         b.release(f); // error: `'id` of `a` is not `'id` of `b`
///     })
/// });
/// ```
/// nor outlive the socket's closure:
/// ```compile_fail
/// # use xsecd::xsk::{Xsk, XskConfig};
/// # use std::sync::Arc;
/// # let src = Arc::new(xsecd::replay::ReplaySource { files: [vec![], vec![]], capture: None });
/// let f = Xsk::replay(src, 0, &XskConfig::default(), |x| x.alloc().unwrap());
/// ```
/// while using a frame inside it is fine:
/// ```
/// # use xsecd::xsk::{Xsk, XskConfig};
/// # use std::sync::Arc;
/// # let src = Arc::new(xsecd::replay::ReplaySource { files: [vec![], vec![]], capture: None });
/// let n = Xsk::replay(src, 0, &XskConfig::default(), |x| {
///     let mut f = x.alloc().unwrap();
///     f.as_mut()[0] = 1;
///     x.release(f);
///     x.free_frames()
/// });
/// assert_eq!(n.unwrap(), XskConfig::default().frames as usize);
/// ```
pub struct Xsk<'id> {
    // Field order is drop order: the sockets (and UMEM registration) before the memory.
    io: Io,
    area: Area,
    free: Vec<u64>,
    frames: u32,
    /// Per side: TX descriptors submitted but not yet completed.
    in_flight: [u32; 2],
    _brand: Brand<'id>,
}

impl std::fmt::Debug for Xsk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("frames", &self.frames)
            .field("free", &self.free.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Port {
    /// The kernel's counters of the socket (`XDP_STATISTICS`); zeros if it will not say.
    fn stats(&self) -> SocketStats {
        match self.user.statistics_v2() {
            Ok(st) => SocketStats {
                rx_dropped: st.rx_dropped,
                rx_ring_full: st.rx_ring_full,
                rx_fill_ring_empty: st.rx_fill_ring_empty_descs,
                rx_invalid_descs: st.rx_invalid_descs,
                tx_invalid_descs: st.tx_invalid_descs,
                tx_ring_empty: st.tx_ring_empty_descs,
            },
            Err(_) => SocketStats::default(),
        }
    }

    /// Put one descriptor on the TX ring; false when the ring is full.
    fn transmit(&mut self, addr: u64, len: usize) -> bool {
        let mut w = self.tx.transmit(1);
        let ok = w.insert_once(XdpDesc {
            addr,
            len: len as u32,
            options: 0,
        });
        if ok {
            w.commit();
        }
        ok
    }
}

/// A UMEM of `cfg.frames` frames over a fresh anonymous mapping.
fn new_umem(cfg: &XskConfig) -> Result<(Area, Umem), (&'static str, std::io::Error)> {
    let len = cfg.frames as usize * FRAME_SIZE as usize;
    let area = Area::new(len).map_err(|e| ("UMEM mmap", e))?;
    let slice = NonNull::slice_from_raw_parts(area.ptr, len);
    let umem_cfg = UmemConfig {
        fill_size: cfg.ring,
        complete_size: cfg.ring,
        frame_size: FRAME_SIZE,
        headroom: 0,
        flags: 0,
    };
    // SAFETY: `slice` is the page-aligned mapping owned by `area`; every caller stores the
    // area beside the UMEM and drops it after the UMEM and its sockets (field order).
    let umem =
        unsafe { Umem::new(umem_cfg, slice) }.map_err(|e| ("UMEM registration", errno(e)))?;
    Ok((area, umem))
}

/// Bind a socket with RX and TX rings to `queue` of `iface` on `umem`. The UMEM's own
/// socket (`first`) carries the mode flags; a socket joining a shared UMEM must bind
/// without them (it inherits them).
fn open_port(
    umem: &Umem,
    iface: &str,
    queue: u32,
    first: bool,
    cfg: &XskConfig,
) -> Result<Port, (&'static str, std::io::Error)> {
    let mut info = IfInfo::invalid();
    let cname = CString::new(iface).map_err(|_| {
        (
            "interface name",
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    info.from_name(&cname)
        .map_err(|e| ("interface lookup", errno(e)))?;
    info.set_queue(queue);
    let socket = if first {
        Socket::with_shared(&info, umem)
    } else {
        Socket::new(&info)
    }
    .map_err(|e| ("socket", errno(e)))?;
    let dev = umem
        .fq_cq(&socket)
        .map_err(|e| ("fill/completion rings", errno(e)))?;
    let bind_flags = match (first, cfg.force_copy) {
        (false, _) => 0,
        (true, false) => SocketConfig::XDP_BIND_NEED_WAKEUP,
        (true, true) => SocketConfig::XDP_BIND_NEED_WAKEUP | SocketConfig::XDP_BIND_COPY,
    };
    let sc = SocketConfig {
        rx_size: NonZeroU32::new(cfg.ring),
        tx_size: NonZeroU32::new(cfg.ring),
        bind_flags,
    };
    let user = umem
        .rx_tx(&socket, &sc)
        .map_err(|e| ("rx/tx rings", errno(e)))?;
    let rx = user.map_rx().map_err(|e| ("rx ring mmap", errno(e)))?;
    let tx = user.map_tx().map_err(|e| ("tx ring mmap", errno(e)))?;
    umem.bind(&user).map_err(|e| ("bind", errno(e)))?;
    let fd = rx.as_raw_fd();
    Ok(Port {
        dev,
        rx,
        tx,
        user,
        _socket: socket,
        fd,
    })
}

/// Every frame's address, the last first (so frames are taken from the front).
fn free_list(frames: u32) -> Vec<u64> {
    (0..frames)
        .rev()
        .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
        .collect()
}

impl Xsk<'_> {
    /// Create the UMEM, bind a socket to `queue` of each interface and run `f` with them;
    /// the sockets close and the UMEM is unmapped when `f` returns.
    pub fn open<R>(
        unprotected: &str,
        protected: &str,
        queue: u32,
        cfg: &XskConfig,
        f: impl for<'id> FnOnce(&mut Xsk<'id>) -> R,
    ) -> Result<R, XskError> {
        let fail = |iface: &str| {
            let iface = iface.to_string();
            move |(what, source)| XskError {
                what,
                iface,
                queue,
                source,
            }
        };
        let (area, umem) = new_umem(cfg).map_err(fail(unprotected))?;
        // The first socket is the UMEM's own; the second joins it (shared UMEM).
        let pu = open_port(&umem, unprotected, queue, true, cfg).map_err(fail(unprotected))?;
        let pp = open_port(&umem, protected, queue, false, cfg).map_err(fail(protected))?;
        let free = free_list(cfg.frames);
        let mut x = Xsk {
            io: Io::Sockets {
                ports: [pu, pp],
                _umem: umem,
            },
            area,
            free,
            frames: cfg.frames,
            in_flight: [0; 2],
            _brand: PhantomData,
        };
        for s in Side::BOTH {
            x.refill(s);
        }
        Ok(f(&mut x))
    }

    /// A worker without sockets that receives copies of `src`'s frames (the replay
    /// backend): the same UMEM-backed frames, free list and burst handling as with sockets;
    /// run `f` with it.
    pub fn replay<R>(
        src: Arc<ReplaySource>,
        worker: usize,
        cfg: &XskConfig,
        f: impl for<'id> FnOnce(&mut Xsk<'id>) -> R,
    ) -> Result<R, XskError> {
        let len = cfg.frames as usize * FRAME_SIZE as usize;
        let area = Area::new(len).map_err(|source| XskError {
            what: "replay memory",
            iface: "-".into(),
            queue: 0,
            source,
        })?;
        let free = free_list(cfg.frames);
        let mut x = Xsk {
            io: Io::Replay(ReplayIo {
                src,
                worker,
                next: [0; 2],
                captured: Vec::new(),
            }),
            area,
            free,
            frames: cfg.frames,
            in_flight: [0; 2],
            _brand: PhantomData,
        };
        Ok(f(&mut x))
    }
}

impl<'id> Xsk<'id> {
    /// The socket descriptor of a side (for the XSKMAP); -1 when replaying.
    pub fn fd(&self, side: Side) -> i32 {
        match &self.io {
            Io::Sockets { ports, .. } => ports[side as usize].fd,
            Io::Replay(_) => -1,
        }
    }

    /// The frame holding UMEM address `addr` (see [`Area::frame`]).
    fn frame_at(&self, addr: u64) -> Option<Frame<'id>> {
        self.area.frame(addr)
    }

    /// Take a free frame (for packets the worker builds: heartbeats, ICMP, fragments,
    /// handed-off packets).
    pub fn alloc(&mut self) -> Option<Frame<'id>> {
        let a = self.free.pop()?;
        self.frame_at(a)
    }

    /// Give a frame back to the free list.
    pub fn release(&mut self, f: Frame<'id>) {
        self.free.push(f.addr);
    }

    /// Frames on the free list.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Move completed TX frames of both sides to the free list.
    pub fn reap(&mut self) -> u32 {
        let Io::Sockets { ports, .. } = &mut self.io else {
            return 0;
        };
        let mut n = 0;
        for s in Side::BOTH {
            let p = &mut ports[s as usize];
            let mut c = p.dev.complete(self.frames);
            while let Some(a) = c.read() {
                self.free.push(a & !u64::from(FRAME_SIZE - 1));
                n += 1;
                self.in_flight[s as usize] = self.in_flight[s as usize].saturating_sub(1);
            }
            c.release();
        }
        n
    }

    /// Keep a side's fill ring stocked from the free list, leaving frames for the other side
    /// and for transmission.
    pub fn refill(&mut self, side: Side) {
        let reserve = self.frames as usize / 4;
        let Io::Sockets { ports, .. } = &mut self.io else {
            return;
        };
        let p = &mut ports[side as usize];
        let want = p.dev.pending();
        let target = self.frames / 4;
        if want >= target || self.free.len() <= reserve {
            return;
        }
        let n = (target - want).min((self.free.len() - reserve) as u32);
        let mut f = p.dev.fill(n);
        let cap = f.capacity() as usize;
        let start = self.free.len() - cap;
        let taken = f.insert(self.free[start..].iter().copied());
        f.commit();
        drop(f);
        self.free.truncate(self.free.len() - taken as usize);
        if p.dev.needs_wakeup() {
            p.dev.wake();
        }
    }

    /// Receive up to `max` packets from a side, appended to `out` (which the caller keeps
    /// with capacity for a burst, so this does not allocate).
    pub fn recv(&mut self, side: Side, out: &mut Vec<RxFrame<Frame<'id>>>, max: usize) -> usize {
        let (area, area_len) = (self.area.ptr, self.area.len);
        let p = match &mut self.io {
            Io::Sockets { ports, .. } => &mut ports[side as usize],
            Io::Replay(_) => return self.replay_recv(side, out, max),
        };
        let mut r = p.rx.receive(max as u32);
        let mut n = 0;
        while let Some(d) = r.read() {
            let base = d.addr & !u64::from(FRAME_SIZE - 1);
            let (off, len) = ((d.addr - base) as usize, d.len as usize);
            if base as usize + FRAME_SIZE as usize > area_len || off + len > FRAME_SIZE as usize {
                continue; // not ours: cannot happen with a sane kernel; never touch it
            }
            // SAFETY: the whole frame at `base` is inside the area (checked above).
            let ptr = unsafe { area.add(base as usize) };
            out.push(RxFrame {
                frame: Frame {
                    base: ptr,
                    addr: base,
                    _brand: PhantomData,
                },
                off,
                len,
            });
            n += 1;
        }
        r.release();
        n
    }

    /// The replay backend's receive: copies of the side's template frames, in turn, into
    /// free frames (keeping the same reserve as the fill rings do).
    fn replay_recv(&mut self, side: Side, out: &mut Vec<RxFrame<Frame<'id>>>, max: usize) -> usize {
        let reserve = self.frames as usize / 4;
        let Io::Replay(r) = &mut self.io else {
            return 0;
        };
        let templates = r.src.frames(side as usize, r.worker);
        let mut n = 0;
        while n < max && self.free.len() > reserve {
            let Some(t) = templates.get(r.next[side as usize]) else {
                break; // nothing to replay on this side
            };
            r.next[side as usize] = (r.next[side as usize] + 1) % templates.len();
            let Some(a) = self.free.pop() else { break };
            let Some(mut frame) = self.area.frame(a) else {
                continue;
            };
            let Some(dst) = frame.as_mut().get_mut(REPLAY_OFF..REPLAY_OFF + t.len()) else {
                self.free.push(frame.addr);
                break; // longer than a frame: refused when the file was read
            };
            dst.copy_from_slice(t);
            out.push(RxFrame {
                frame,
                off: REPLAY_OFF,
                len: t.len(),
            });
            n += 1;
        }
        n
    }

    /// Queue a frame for transmission on a side: `off..off+len` is the Ethernet frame. On a
    /// full ring the frame is handed back.
    pub fn send(
        &mut self,
        side: Side,
        f: Frame<'id>,
        off: usize,
        len: usize,
    ) -> Result<(), Frame<'id>> {
        if off
            .checked_add(len)
            .is_none_or(|end| end > FRAME_SIZE as usize)
        {
            return Err(f); // not a window of the frame
        }
        let p = match &mut self.io {
            Io::Sockets { ports, .. } => &mut ports[side as usize],
            Io::Replay(r) => {
                // the null sink: keep the first frames if asked, free the frame
                if r.src.capture.is_some() && r.captured.len() < CAPTURE_MAX {
                    r.captured
                        .push(f.as_ref().get(off..off + len).unwrap_or_default().to_vec());
                }
                self.free.push(f.addr);
                return Ok(());
            }
        };
        if !p.transmit(f.addr + off as u64, len) {
            return Err(f);
        }
        self.in_flight[side as usize] += 1;
        Ok(())
    }

    /// Push queued TX descriptors to the kernel. Copy mode moves at most 32 per `sendto`, so
    /// kick until the ring is drained (bounded).
    pub fn kick(&mut self) {
        let Io::Sockets { ports, .. } = &mut self.io else {
            return;
        };
        for s in Side::BOTH {
            let p = &mut ports[s as usize];
            for _ in 0..8 {
                if p.tx.pending() == 0 {
                    break;
                }
                p.tx.wake();
            }
        }
    }

    /// The kernel's counters of a side's socket (drops because the RX ring was full or the
    /// fill ring empty, invalid descriptors). A `getsockopt`: for snapshots, not per packet.
    pub fn socket_stats(&self, side: Side) -> SocketStats {
        match &self.io {
            Io::Sockets { ports, .. } => ports[side as usize].stats(),
            Io::Replay(_) => SocketStats::default(),
        }
    }

    /// Descriptors waiting in the RX rings.
    pub fn rx_ready(&self) -> bool {
        match &self.io {
            Io::Sockets { ports, .. } => Side::BOTH
                .iter()
                .any(|&s| ports[s as usize].rx.available() > 0),
            Io::Replay(_) => true,
        }
    }

    /// Sleep until a side has packets, `also` is readable or `timeout_ms` passes (adaptive
    /// idle mode). Returns whether `also` is readable.
    pub fn wait(&self, timeout_ms: i32, also: Option<BorrowedFd<'_>>) -> bool {
        let Io::Sockets { ports, .. } = &self.io else {
            return false;
        };
        use rustix::event::{PollFd, PollFlags};
        // SAFETY: the two descriptors belong to the sockets `ports` owns, open for as long
        // as `self` is borrowed here.
        let (u, p) = unsafe {
            (
                BorrowedFd::borrow_raw(ports[0].fd),
                BorrowedFd::borrow_raw(ports[1].fd),
            )
        };
        let mut fds = [
            PollFd::new(&u, PollFlags::IN),
            PollFd::new(&p, PollFlags::IN),
            PollFd::new(&u, PollFlags::empty()),
        ];
        let n = match also {
            Some(a) => {
                fds[2] = PollFd::from_borrowed_fd(a, PollFlags::IN);
                3
            }
            None => 2,
        };
        let timeout = rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        };
        let _ = rustix::event::poll(&mut fds[..n], Some(&timeout));
        n == 3 && fds[2].revents().contains(PollFlags::IN)
    }
}

/// One socket on one interface queue with a UMEM of its own: what [`XskTx`] and [`XskRx`]
/// are built on.
struct Single {
    // Field order is drop order: the socket and UMEM registration before the memory.
    port: Port,
    _umem: Umem,
    area: Area,
    /// Frames that no ring holds.
    free: Vec<u64>,
}

impl Single {
    fn open(iface: &str, queue: u32, cfg: &XskConfig) -> Result<Single, XskError> {
        let fail = |(what, source)| XskError {
            what,
            iface: iface.to_string(),
            queue,
            source,
        };
        let (area, umem) = new_umem(cfg).map_err(fail)?;
        let port = open_port(&umem, iface, queue, true, cfg).map_err(fail)?;
        Ok(Single {
            port,
            _umem: umem,
            area,
            free: free_list(cfg.frames),
        })
    }
}

/// What [`XskTx::send_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// On the TX ring.
    Queued,
    /// No free frame: kick and reap, then try again.
    NoFrame,
    /// The TX ring is full: kick and reap, then try again.
    RingFull,
    /// The builder's window is not inside the frame: nothing sent.
    BadWindow,
}

/// A transmit-only AF_XDP socket on one interface queue with its own UMEM: for traffic
/// generators (`xsec-pktgen --io xdp`). No XDP program is needed to transmit; the fill ring
/// is never stocked, so nothing is received on it.
pub struct XskTx {
    s: Single,
    frames: u32,
}

impl std::fmt::Debug for XskTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskTx")
            .field("frames", &self.frames)
            .field("free", &self.s.free.len())
            .finish()
    }
}

impl XskTx {
    /// Bind to `queue` of `iface` (copy mode if `cfg.force_copy`).
    pub fn open(iface: &str, queue: u32, cfg: &XskConfig) -> Result<XskTx, XskError> {
        Ok(XskTx {
            s: Single::open(iface, queue, cfg)?,
            frames: cfg.frames,
        })
    }

    /// Build a packet in a free frame and queue it: `build` writes the frame and returns the
    /// window `(off, len)` to send. No frame leaves this call, so none can outlive the UMEM
    /// or reach another socket. `Err` is `build`'s; the frame then goes back to the free list.
    pub fn send_with<E>(
        &mut self,
        build: impl FnOnce(&mut [u8]) -> Result<(usize, usize), E>,
    ) -> Result<TxOutcome, E> {
        let s = &mut self.s;
        let Some(a) = s.free.pop() else {
            return Ok(TxOutcome::NoFrame);
        };
        if a as usize + FRAME_SIZE as usize > s.area.len {
            return Ok(TxOutcome::NoFrame); // not a frame of ours: dropped from the list
        }
        // SAFETY: the whole frame at `a` is inside the area (checked above); it came off the
        // free list, so no ring holds it and nothing else refers to it; the slice does not
        // outlive this call.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(s.area.ptr.as_ptr().add(a as usize), FRAME_SIZE as usize)
        };
        let (off, len) = match build(buf) {
            Ok(w) => w,
            Err(e) => {
                s.free.push(a);
                return Err(e);
            }
        };
        if off
            .checked_add(len)
            .is_none_or(|end| end > FRAME_SIZE as usize)
        {
            s.free.push(a);
            return Ok(TxOutcome::BadWindow);
        }
        if !s.port.transmit(a + off as u64, len) {
            s.free.push(a);
            return Ok(TxOutcome::RingFull);
        }
        Ok(TxOutcome::Queued)
    }

    /// Push queued descriptors to the kernel (copy mode moves 32 per `sendto`: kick until
    /// drained, bounded) and take completed frames back. Returns the frames completed.
    pub fn kick_and_reap(&mut self) -> u32 {
        let s = &mut self.s;
        for _ in 0..64 {
            if s.port.tx.pending() == 0 {
                break;
            }
            s.port.tx.wake();
        }
        let mut n = 0;
        let mut c = s.port.dev.complete(self.frames);
        while let Some(a) = c.read() {
            s.free.push(a & !u64::from(FRAME_SIZE - 1));
            n += 1;
        }
        c.release();
        n
    }

    /// Frames on the free list.
    pub fn free_frames(&self) -> usize {
        self.s.free.len()
    }
}

/// A receive-only AF_XDP socket on one interface queue with its own UMEM: for traffic sinks
/// (`xsec-pktgen sink --io xdp`). Every frame goes back to the fill ring as soon as the
/// caller has looked at it; nothing is transmitted.
pub struct XskRx {
    s: Single,
    queue: u32,
}

impl std::fmt::Debug for XskRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskRx")
            .field("queue", &self.queue)
            .field("free", &self.s.free.len())
            .finish()
    }
}

impl AsFd for XskRx {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `port.fd` is the descriptor of the socket `port` owns, open for as long
        // as `self` (and so the returned borrow) lives.
        unsafe { BorrowedFd::borrow_raw(self.s.port.fd) }
    }
}

impl XskRx {
    /// Bind to `queue` of `iface` and stock the fill ring. Frames arrive once an XDP
    /// program redirects them to this socket (see `XdpSteering::load_receiver`).
    pub fn open(iface: &str, queue: u32, cfg: &XskConfig) -> Result<XskRx, XskError> {
        let mut x = XskRx {
            s: Single::open(iface, queue, cfg)?,
            queue,
        };
        x.refill();
        Ok(x)
    }

    /// The queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    fn refill(&mut self) {
        let s = &mut self.s;
        if s.free.is_empty() {
            return;
        }
        let mut f = s.port.dev.fill(s.free.len() as u32);
        let cap = f.capacity() as usize;
        let start = s.free.len() - cap;
        let taken = f.insert(s.free[start..].iter().copied());
        f.commit();
        drop(f);
        s.free.truncate(s.free.len() - taken as usize);
        if s.port.dev.needs_wakeup() {
            s.port.dev.wake();
        }
    }

    /// Hand up to `max` received Ethernet frames to `each`, then give their memory back to
    /// the kernel. Returns how many there were.
    pub fn recv(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        let s = &mut self.s;
        let (area, area_len) = (s.area.ptr, s.area.len);
        let mut n = 0;
        let mut r = s.port.rx.receive(max as u32);
        while let Some(d) = r.read() {
            let base = d.addr & !u64::from(FRAME_SIZE - 1);
            let off = (d.addr - base) as usize;
            let len = d.len as usize;
            if base as usize >= area_len || off + len > FRAME_SIZE as usize {
                continue; // not a window of ours: never touch it
            }
            // SAFETY: `base` is a frame offset below the area length and `off + len` fits
            // in the frame (both checked above); the kernel handed the frame over with
            // this descriptor and gets it back only through the fill ring below, after
            // `each` returns, so nothing writes it meanwhile.
            let bytes =
                unsafe { std::slice::from_raw_parts(area.as_ptr().add(base as usize + off), len) };
            each(bytes);
            s.free.push(base);
            n += 1;
        }
        r.release();
        drop(r);
        self.refill();
        n
    }

    /// The kernel's counters of the socket (drops on a full RX ring or an empty fill ring).
    pub fn socket_stats(&self) -> SocketStats {
        self.s.port.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_only_inside_the_mapping() {
        let f = FRAME_SIZE as usize;
        let area = Area::new(2 * f).unwrap();
        let at = |a: u64| area.frame(a).map(|fr| fr.addr());
        assert_eq!(at(0), Some(0));
        assert_eq!(
            at(100),
            Some(0),
            "an address inside a frame names that frame"
        );
        assert_eq!(at(f as u64 + 7), Some(f as u64));
        assert_eq!(at(2 * f as u64), None);
        assert_eq!(at(u64::MAX), None);
        // a mapping that ends inside a frame does not give out that frame
        let short = Area::new(f + f / 2).unwrap();
        assert!(short.frame(0).is_some());
        assert!(short.frame(f as u64).is_none());
    }

    #[test]
    fn replayed_frames_are_sent_only_as_windows_of_their_frame() {
        let src = Arc::new(ReplaySource {
            files: [vec![vec![vec![0x45; 60]]], vec![]],
            capture: None,
        });
        let cfg = XskConfig {
            frames: 64,
            ring: 64,
            force_copy: false,
        };
        let r = Xsk::replay(src, 0, &cfg, |x| {
            let mut rx = Vec::new();
            assert_eq!(x.recv(Side::Unprotected, &mut rx, 8), 8);
            assert!(
                rx.iter()
                    .all(|r| r.frame.as_ref()[REPLAY_OFF] == 0x45 && r.len == 60)
            );
            let mut frames = rx.into_iter().map(|r| r.frame);
            let f = frames.next().unwrap();
            // a window past the frame's end is refused, the frame handed back
            let f = x
                .send(Side::Protected, f, FRAME_SIZE as usize - 10, 20)
                .unwrap_err();
            let f = x.send(Side::Protected, f, usize::MAX, 2).unwrap_err();
            assert!(x.send(Side::Protected, f, 0, 60).is_ok());
            for f in frames {
                x.release(f);
            }
            x.free_frames()
        });
        assert_eq!(r.unwrap(), 64, "every frame is back on the free list");
    }
}
