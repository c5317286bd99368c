//! What the worker needs from its frames' source and sink: the AF_XDP sockets ([`Xsk`]) in
//! the daemon, memory ([`MemIo`]) in the worker's unit tests. Same loop, same logic.

use crate::xsk::{Frame, RxFrame, Side, SocketStats, Xsk};
use std::os::fd::BorrowedFd;

/// A worker's frame I/O: a pool of frames, an RX and a TX path per side.
pub trait FrameIo {
    /// A frame the worker owns while it processes it.
    type Frame: AsRef<[u8]> + AsMut<[u8]>;
    /// Receive up to `max` frames from `side`, appended to `out`.
    fn recv(&mut self, side: Side, out: &mut Vec<RxFrame<Self::Frame>>, max: usize) -> usize;
    /// Queue `f[off..off + len]` on `side`; the frame comes back when it cannot be queued.
    fn send(
        &mut self,
        side: Side,
        f: Self::Frame,
        off: usize,
        len: usize,
    ) -> Result<(), Self::Frame>;
    /// A free frame, for a packet the worker builds.
    fn alloc(&mut self) -> Option<Self::Frame>;
    /// Give a frame back.
    fn release(&mut self, f: Self::Frame);
    /// Take back frames whose transmission completed.
    fn reap(&mut self) -> u32;
    /// Give free frames to `side`'s receive path.
    fn refill(&mut self, side: Side);
    /// Push what was queued.
    fn kick(&mut self);
    /// Sleep until a side has packets, `also` is readable or `timeout_ms` passes; whether
    /// `also` is readable.
    fn wait(&self, timeout_ms: i32, also: Option<BorrowedFd<'_>>) -> bool;
    /// The kernel's counters of a side's socket.
    fn socket_stats(&self, side: Side) -> SocketStats;
}

impl<'id> FrameIo for Xsk<'id> {
    type Frame = Frame<'id>;
    fn recv(&mut self, side: Side, out: &mut Vec<RxFrame<Frame<'id>>>, max: usize) -> usize {
        Xsk::recv(self, side, out, max)
    }
    fn send(
        &mut self,
        side: Side,
        f: Frame<'id>,
        off: usize,
        len: usize,
    ) -> Result<(), Frame<'id>> {
        Xsk::send(self, side, f, off, len)
    }
    fn alloc(&mut self) -> Option<Frame<'id>> {
        Xsk::alloc(self)
    }
    fn release(&mut self, f: Frame<'id>) {
        Xsk::release(self, f);
    }
    fn reap(&mut self) -> u32 {
        Xsk::reap(self)
    }
    fn refill(&mut self, side: Side) {
        Xsk::refill(self, side);
    }
    fn kick(&mut self) {
        Xsk::kick(self);
    }
    fn wait(&self, timeout_ms: i32, also: Option<BorrowedFd<'_>>) -> bool {
        Xsk::wait(self, timeout_ms, also)
    }
    fn socket_stats(&self, side: Side) -> SocketStats {
        Xsk::socket_stats(self, side)
    }
}

/// Frames in memory, for the worker's tests: what is queued with [`MemIo::inject`] is
/// received, what the worker sends is kept in [`MemIo::sent`]; frames are counted, so a test
/// can check that none was lost.
#[cfg(test)]
#[derive(Debug)]
pub struct MemIo {
    /// Frames not held by the worker nor queued for it.
    pub free: usize,
    rx: [std::collections::VecDeque<Vec<u8>>; 2],
    /// Per side: what was sent (the Ethernet frames).
    pub sent: [Vec<Vec<u8>>; 2],
}

#[cfg(test)]
impl MemIo {
    /// Where an injected frame starts in its buffer (like AF_XDP's headroom).
    pub const HEADROOM: usize = 256;

    pub fn new(frames: usize) -> MemIo {
        MemIo {
            free: frames,
            rx: Default::default(),
            sent: Default::default(),
        }
    }

    /// Queue an Ethernet frame to be received on `side`.
    pub fn inject(&mut self, side: Side, frame: &[u8]) {
        self.rx[side as usize].push_back(frame.to_vec());
    }

    /// Take what was sent on `side`.
    pub fn take_sent(&mut self, side: Side) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent[side as usize])
    }
}

#[cfg(test)]
impl FrameIo for MemIo {
    type Frame = Box<[u8]>;
    fn recv(&mut self, side: Side, out: &mut Vec<RxFrame<Box<[u8]>>>, max: usize) -> usize {
        let mut n = 0;
        while n < max && self.free > 0 {
            let Some(pkt) = self.rx[side as usize].pop_front() else {
                break;
            };
            let mut frame = vec![0u8; crate::xsk::FRAME_SIZE as usize].into_boxed_slice();
            let len = pkt.len().min(frame.len() - Self::HEADROOM);
            frame[Self::HEADROOM..Self::HEADROOM + len].copy_from_slice(&pkt[..len]);
            self.free -= 1;
            out.push(RxFrame {
                frame,
                off: Self::HEADROOM,
                len,
            });
            n += 1;
        }
        n
    }
    fn send(&mut self, side: Side, f: Box<[u8]>, off: usize, len: usize) -> Result<(), Box<[u8]>> {
        match f.get(off..off.saturating_add(len)) {
            Some(w) => {
                self.sent[side as usize].push(w.to_vec());
                self.free += 1;
                Ok(())
            }
            None => Err(f),
        }
    }
    fn alloc(&mut self) -> Option<Box<[u8]>> {
        if self.free == 0 {
            return None;
        }
        self.free -= 1;
        Some(vec![0u8; crate::xsk::FRAME_SIZE as usize].into_boxed_slice())
    }
    fn release(&mut self, _f: Box<[u8]>) {
        self.free += 1;
    }
    fn reap(&mut self) -> u32 {
        0
    }
    fn refill(&mut self, _side: Side) {}
    fn kick(&mut self) {}
    fn wait(&self, _timeout_ms: i32, _also: Option<BorrowedFd<'_>>) -> bool {
        false
    }
    fn socket_stats(&self, _side: Side) -> SocketStats {
        SocketStats::default()
    }
}
