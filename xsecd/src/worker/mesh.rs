//! The handoff mesh: packets a worker received for an SA another worker owns go to the
//! owner's inbox in a pooled buffer (reassembled datagrams in a heap buffer, bounded), and a
//! sleeping owner is woken through its eventfd.

use super::*;

/// Largest packet handed between workers.
pub const HANDOFF_BUF: usize = 2048;
/// A handoff buffer.
pub type HandoffBuf = Box<[u8; HANDOFF_BUF]>;
/// A worker's pool of handoff buffers: where they are returned, where they are taken.
pub type HandoffPool = (Sender<HandoffBuf>, Receiver<HandoffBuf>);
/// Handoff buffers each worker owns (4 MiB): enough to ride out the owner being off its
/// core for ~20 ms at 100 kpps, which 512 were not on 2 shared vCPUs (`handoff_drop` at
/// 0.1 Mpps in `xsec-lab ndr --workers 2 --sas 1000`).
pub const HANDOFF_POOL: usize = 2048;

/// A packet handed to the worker that owns its SA.
#[derive(Debug)]
pub struct Handoff {
    buf: HandoffData,
    len: u16,
    side: Side,
    from: u16,
}

/// Where a handed-off packet is.
#[derive(Debug)]
pub(super) enum HandoffData {
    /// An Ethernet frame in a pooled buffer of the sender's.
    Frame(HandoffBuf),
    /// A reassembled outer IP packet (up to 65,575 bytes), counted in
    /// [`Mesh::big_in_flight`] until the owner is done with it.
    Reassembled(Vec<u8>),
}

/// Reassembled packets on their way between workers at once, all workers together: each
/// holds up to 64 KiB of heap.
const BIG_IN_FLIGHT_MAX: usize = 16;

/// The channels between workers: every worker's inbox, buffer-return queue and waker.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub inboxes: Vec<Sender<Handoff>>,
    pub pools: Vec<Sender<HandoffBuf>>,
    pub wakers: Vec<Arc<Waker>>,
    /// Reassembled packets handed over and not yet processed (at most [`BIG_IN_FLIGHT_MAX`]).
    pub big_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Wakes a worker that sleeps in adaptive idle mode when another worker hands it packets:
/// its inbox is not a descriptor it polls, so without this a handed-off packet waits for the
/// sleep to time out (up to a millisecond: the p50 latency through two workers was ~1 ms).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub fn new() -> std::io::Result<Arc<Waker>> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        Ok(Arc::new(Waker {
            fd,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// After packets were queued to this worker (and a `SeqCst` fence): wake it if it sleeps
    /// (once: the first sender to see it asleep takes the flag).
    pub(super) fn wake(&self) {
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// After a command was queued for this worker (by another thread than the workers):
    /// the fence that [`Waker::wake`] expects, then the wake-up.
    pub fn wake_after_queueing(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.wake();
    }

    /// Sleep in `xsk` until packets come on a socket, a waker's write, or `timeout_ms`,
    /// unless `inbox` already holds handed-off packets or `cmds` commands.
    pub(super) fn sleep(
        &self,
        xsk: &impl FrameIo,
        inbox: &Receiver<Handoff>,
        cmds: &Receiver<super::Cmd>,
        timeout_ms: i32,
    ) {
        self.sleeping.store(true, Ordering::Relaxed);
        // a sender queues, fences (SeqCst), then reads `sleeping`; this worker sets
        // `sleeping`, fences (SeqCst), then reads the queue: with a fence on each side, one
        // of the two sees the other's write (a SeqCst store alone would not order the load
        // after it)
        std::sync::atomic::fence(Ordering::SeqCst);
        if inbox.is_empty() && cmds.is_empty() && xsk.wait(timeout_ms, Some(self.fd.as_fd())) {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.fd, &mut b);
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

impl<I: FrameIo> Worker<'_, I> {
    /// Hand a reassembled outer packet to the worker that owns its SA.
    pub(super) fn handoff_big(&mut self, ip: &[u8], to: u16, handed: bool) {
        if handed || usize::from(to) >= self.mesh.inboxes.len() {
            self.c.handoff_drop += 1;
            return;
        }
        let inflight = &self.mesh.big_in_flight;
        if inflight.fetch_add(1, Ordering::AcqRel) >= BIG_IN_FLIGHT_MAX {
            inflight.fetch_sub(1, Ordering::AcqRel);
            self.c.handoff_drop += 1;
            return;
        }
        if self
            .send_handoff(
                to,
                HandoffData::Reassembled(ip.to_vec()),
                0,
                Side::Unprotected,
            )
            .is_some()
        {
            self.mesh.big_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Put a handoff on worker `to`'s inbox (counted, its waker noted); the data comes back
    /// when the inbox is full, for the caller to return to where it came from.
    pub(super) fn send_handoff(
        &mut self,
        to: u16,
        buf: HandoffData,
        len: u16,
        side: Side,
    ) -> Option<HandoffData> {
        let h = Handoff {
            buf,
            len,
            side,
            from: self.id,
        };
        match self.mesh.inboxes[usize::from(to)].try_send(h) {
            Ok(()) => {
                self.c.handoff_tx += 1;
                // wakers of workers 64 apart share a bit: one more check, no lost wake
                self.to_wake |= 1 << (to % 64);
                None
            }
            Err(e) => {
                self.c.handoff_drop += 1;
                Some(e.into_inner().buf)
            }
        }
    }

    /// A packet another worker handed over: copy it into a frame and process it.
    pub(super) fn handed(&mut self, h: Handoff, now: Timestamp) {
        self.c.handoff_rx += 1;
        let Handoff {
            buf,
            len,
            side,
            from,
        } = h;
        let buf = match buf {
            HandoffData::Frame(b) => b,
            HandoffData::Reassembled(ip) => {
                let mut big = std::mem::take(&mut self.big);
                let n = ip.len().min(big.len() - BIG_HEAD);
                big[BIG_HEAD..BIG_HEAD + n].copy_from_slice(&ip[..n]);
                self.reassembled(&mut big, n, now, true);
                self.big = big;
                self.mesh.big_in_flight.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        if let Some(mut f) = self.xsk.alloc() {
            let off = 256;
            let l = usize::from(len);
            f.as_mut()[off..off + l].copy_from_slice(&buf[..l]);
            self.packet(
                side,
                RxFrame {
                    frame: f,
                    off,
                    len: l,
                },
                now,
                true,
            );
        } else {
            self.c.no_frame += 1;
        }
        if let Some(p) = self.mesh.pools.get(usize::from(from)) {
            let _ = p.try_send(buf);
        }
    }

    pub(super) fn handoff(&mut self, pkt: PacketBuf<I::Frame>, side: Side, to: u16, handed: bool) {
        let head = pkt.head() - ETH_HDR;
        let len = pkt.len() + ETH_HDR;
        let frame = pkt.into_inner();
        if handed || len > HANDOFF_BUF || usize::from(to) >= self.mesh.inboxes.len() {
            self.c.handoff_drop += 1;
            self.xsk.release(frame);
            return;
        }
        let Ok(mut buf) = self.pool.1.try_recv() else {
            self.c.handoff_drop += 1;
            self.xsk.release(frame);
            return;
        };
        buf[..len].copy_from_slice(&frame.as_ref()[head..head + len]);
        self.xsk.release(frame);
        if let Some(HandoffData::Frame(b)) =
            self.send_handoff(to, HandoffData::Frame(buf), len as u16, side)
        {
            let _ = self.pool.0.try_send(b);
        }
    }
}
