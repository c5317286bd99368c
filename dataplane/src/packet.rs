//! Packets in caller-owned buffers.
//!
//! A [`PacketBuf`] is a frame (an AF_XDP UMEM chunk, a `Vec`, a stack array) and the window
//! `[head, head + len)` that holds the L3 packet. Encapsulation grows the window into the
//! headroom (outer headers) and tailroom (ESP trailer and ICV); decapsulation shrinks it. The
//! engine never allocates or copies a packet to another buffer.

/// Headroom that lets every transform prepend its headers: outer IPv6 (40) + UDP (8) + ESP
/// header (8) + the largest IV (16), plus 14 for the Ethernet header the worker writes back,
/// rounded up.
pub const MIN_HEADROOM: usize = 96;
/// Tailroom for the largest padding (block − 1 + TFC alignment), trailer and ICV.
pub const MIN_TAILROOM: usize = 64;

/// A packet window in a frame.
#[derive(Debug, Clone)]
pub struct PacketBuf<B> {
    buf: B,
    head: usize,
    len: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> PacketBuf<B> {
    /// The packet is `buf[head .. head + len]`; `None` if that is not inside the buffer.
    pub fn new(buf: B, head: usize, len: usize) -> Option<Self> {
        let cap = buf.as_ref().len();
        if head.checked_add(len)? > cap {
            return None;
        }
        Some(Self { buf, head, len })
    }

    /// Copy `data` into `buf` at `head` (test and pktgen convenience).
    pub fn from_slice(mut buf: B, head: usize, data: &[u8]) -> Option<Self> {
        buf.as_mut()
            .get_mut(head..head.checked_add(data.len())?)?
            .copy_from_slice(data);
        Self::new(buf, head, data.len())
    }

    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buf.as_ref()[self.head..self.head + self.len]
    }

    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (self.head, self.len);
        &mut self.buf.as_mut()[h..h + l]
    }

    #[inline(always)]
    pub fn head(&self) -> usize {
        self.head
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.head
    }

    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        self.buf.as_ref().len() - self.head - self.len
    }

    /// The whole frame.
    #[inline(always)]
    pub fn frame(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline(always)]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Move the window; false (and unchanged) if it would leave the frame.
    #[inline(always)]
    pub fn set_window(&mut self, head: usize, len: usize) -> bool {
        match head.checked_add(len) {
            Some(end) if end <= self.buf.as_ref().len() => {
                self.head = head;
                self.len = len;
                true
            }
            _ => false,
        }
    }

    pub fn into_inner(self) -> B {
        self.buf
    }

    pub fn buffer(&self) -> &B {
        &self.buf
    }
}
