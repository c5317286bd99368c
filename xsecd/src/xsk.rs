//! AF_XDP sockets for one worker: one UMEM shared by the worker's socket on the unprotected
//! interface and its socket on the protected interface, so a frame received on one side is
//! transmitted on the other without a copy.
//!
//! Frames move between four owners and are never in two at once: the worker's free list, a
//! fill ring (kernel), an RX ring → the worker's burst, a TX ring → a completion ring (kernel)
//! → the free list. [`Frame`] is the worker's handle on a frame it owns; it is the only way
//! to touch frame memory.
//!
//! This is the only module of xsecd with `unsafe`: the UMEM mapping, frame access and
//! `poll(2)`. Every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
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

/// A frame the worker owns: a window into UMEM memory that no ring holds.
#[derive(Debug)]
pub struct Frame {
    base: NonNull<u8>,
    /// Offset of the frame in the UMEM (what the rings carry, minus the in-frame offset).
    addr: u64,
}

impl Frame {
    /// The frame's UMEM address (its first byte).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base` points at FRAME_SIZE bytes inside the UMEM mapping, which outlives
        // every Frame (the worker drops its frames before its Xsk), and a Frame exists only
        // for a frame no ring holds, so the kernel is not writing it and no other Frame
        // aliases it (frames are created from RX descriptors and the free list, each address
        // once).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), FRAME_SIZE as usize) }
    }
}

impl AsMut<[u8]> for Frame {
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
pub struct RxFrame {
    pub frame: Frame,
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
        // SAFETY: an anonymous private mapping with no address hint; the result is checked
        // for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the sockets using it were dropped
        // first (field order of `Xsk`), so the kernel no longer references it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
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

/// One worker's pair of sockets and their UMEM.
pub struct Xsk {
    // Field order is drop order: the sockets (and UMEM registration) before the memory.
    io: Io,
    area: Area,
    free: Vec<u64>,
    frames: u32,
    /// Per side: TX descriptors submitted but not yet completed.
    in_flight: [u32; 2],
}

impl std::fmt::Debug for Xsk {
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

impl Xsk {
    /// Create the UMEM and bind a socket to `queue` of each interface.
    pub fn open(
        unprotected: &str,
        protected: &str,
        queue: u32,
        cfg: &XskConfig,
    ) -> Result<Xsk, XskError> {
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
        };
        for s in Side::BOTH {
            x.refill(s);
        }
        Ok(x)
    }

    /// A worker without sockets that receives copies of `src`'s frames (the replay
    /// backend): the same UMEM-backed frames, free list and burst handling as with sockets.
    pub fn replay(src: Arc<ReplaySource>, worker: usize, cfg: &XskConfig) -> Result<Xsk, XskError> {
        let len = cfg.frames as usize * FRAME_SIZE as usize;
        let area = Area::new(len).map_err(|source| XskError {
            what: "replay memory",
            iface: "-".into(),
            queue: 0,
            source,
        })?;
        let free = free_list(cfg.frames);
        Ok(Xsk {
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
        })
    }

    /// The socket descriptor of a side (for the XSKMAP); -1 when replaying.
    pub fn fd(&self, side: Side) -> i32 {
        match &self.io {
            Io::Sockets { ports, .. } => ports[side as usize].fd,
            Io::Replay(_) => -1,
        }
    }

    fn frame_at(&self, addr: u64) -> Frame {
        let base = addr & !u64::from(FRAME_SIZE - 1);
        debug_assert!((base as usize) < self.area.len);
        // SAFETY: `base` is a frame offset below the area length (it comes from this UMEM's
        // free list or from a descriptor the kernel returned for it), so the result stays
        // inside the mapping.
        let ptr = unsafe { self.area.ptr.add(base as usize) };
        Frame {
            base: ptr,
            addr: base,
        }
    }

    /// Take a free frame (for packets the worker builds: heartbeats, ICMP, fragments,
    /// handed-off packets).
    pub fn alloc(&mut self) -> Option<Frame> {
        let a = self.free.pop()?;
        Some(self.frame_at(a))
    }

    /// Give a frame back to the free list.
    pub fn release(&mut self, f: Frame) {
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
    pub fn recv(&mut self, side: Side, out: &mut Vec<RxFrame>, max: usize) -> usize {
        let (area, area_len) = (self.area.ptr, self.area.len);
        let p = match &mut self.io {
            Io::Sockets { ports, .. } => &mut ports[side as usize],
            Io::Replay(_) => return self.replay_recv(side, out, max),
        };
        let mut r = p.rx.receive(max as u32);
        let mut n = 0;
        while let Some(d) = r.read() {
            let base = d.addr & !u64::from(FRAME_SIZE - 1);
            if base as usize >= area_len {
                continue; // not ours: cannot happen with a sane kernel; never touch it
            }
            // SAFETY: `base` is below the area length (checked above).
            let ptr = unsafe { area.add(base as usize) };
            out.push(RxFrame {
                frame: Frame {
                    base: ptr,
                    addr: base,
                },
                off: (d.addr - base) as usize,
                len: d.len as usize,
            });
            n += 1;
        }
        r.release();
        n
    }

    /// The replay backend's receive: copies of the side's template frames, in turn, into
    /// free frames (keeping the same reserve as the fill rings do).
    fn replay_recv(&mut self, side: Side, out: &mut Vec<RxFrame>, max: usize) -> usize {
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
            let base = a & !u64::from(FRAME_SIZE - 1);
            // SAFETY: `base` comes from this area's free list, so it is a frame offset below
            // the area length.
            let ptr = unsafe { self.area.ptr.add(base as usize) };
            let mut frame = Frame {
                base: ptr,
                addr: base,
            };
            let Some(dst) = frame.as_mut().get_mut(REPLAY_OFF..REPLAY_OFF + t.len()) else {
                self.free.push(base);
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
    pub fn send(&mut self, side: Side, f: Frame, off: usize, len: usize) -> Result<(), Frame> {
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
        let fd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            fd(ports[0].fd),
            fd(ports[1].fd),
            fd(also.map_or(-1, |f| f.as_raw_fd())),
        ];
        // SAFETY: `fds` is a valid array of three pollfd for the duration of the call (a
        // negative descriptor is ignored by poll(2)).
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
        }
        fds[2].revents & libc::POLLIN != 0
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

    /// Take a free frame.
    pub fn alloc(&mut self) -> Option<Frame> {
        let a = self.s.free.pop()?;
        // SAFETY: `a` comes from this area's free list: a frame offset below its length.
        let ptr = unsafe { self.s.area.ptr.add(a as usize) };
        Some(Frame { base: ptr, addr: a })
    }

    /// Give a frame back unsent.
    pub fn release(&mut self, f: Frame) {
        self.s.free.push(f.addr);
    }

    /// Queue `f[off..off + len]` for transmission; on a full ring (or a window outside the
    /// frame) the frame is handed back.
    pub fn send(&mut self, f: Frame, off: usize, len: usize) -> Result<(), Frame> {
        if off + len > FRAME_SIZE as usize || !self.s.port.transmit(f.addr + off as u64, len) {
            return Err(f);
        }
        Ok(())
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
