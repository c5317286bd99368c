//! The control protocol (docs/control-protocol.md): frames of a 4-byte big-endian length and
//! that many bytes of UTF-8 JSON, over a Unix stream socket.
//!
//! A request is `{"version": 2, "id": N, "command": "...", "args": {...}}`; its answer
//! carries the same `id` and either `"ok": true, "result": ...` or `"ok": false, "error":
//! {"kind": ..., "message": ...}`. Commands that stream (`trace`, `subscribe`) send
//! `{"version", "id", "stream": ...}` frames before their answer (`subscribe` never answers:
//! it streams until the client leaves).

use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The protocol version this build speaks.
pub const VERSION: u64 = 2;
/// Largest frame accepted (either way): a `reload` carries the whole configuration, and
/// 10,000 SA pairs with their policies are about 5 MB of it.
pub const MAX_FRAME: usize = 64 << 20;
/// What a frame's buffer starts at; it grows (4× at a time) as the bytes arrive, so a length
/// prefix alone allocates no more than this.
const FIRST_CHUNK: usize = 1 << 20;
/// A frame that has started must be complete within this time.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("connection idle for too long")]
    Idle,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooBig(usize),
    #[error("empty frame")]
    Empty,
    #[error("frame not complete within {} s", FRAME_TIMEOUT.as_secs())]
    Slow,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Error kinds of an answer (`error.kind`).
pub mod kind {
    pub const BAD_FRAME: &str = "bad-frame";
    pub const BAD_JSON: &str = "bad-json";
    pub const VERSION: &str = "version";
    pub const UNKNOWN_COMMAND: &str = "unknown-command";
    pub const BAD_ARGS: &str = "bad-args";
    pub const REFUSED: &str = "refused";
    pub const CONFIG: &str = "config";
    pub const NOT_FOUND: &str = "not-found";
    pub const BUSY: &str = "busy";
    pub const INTERNAL: &str = "internal";
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, v: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(v).map_err(io::Error::other)?;
    write_body(w, &body)
}

/// Write one frame of `body` (JSON text). The frame is built in a buffer wiped afterwards:
/// bodies may hold keys.
pub fn write_body(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "frame of {} bytes exceeds the {MAX_FRAME}-byte limit",
            body.len()
        )));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(4 + body.len()));
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Read one frame from a stream whose read timeout is short (the caller sets it, e.g. 1 s):
/// waits at most `idle` for a frame to start, then [`FRAME_TIMEOUT`] for it to finish.
pub fn read_frame(r: &mut impl Read, idle: Duration) -> Result<Vec<u8>, FrameError> {
    let start = Instant::now();
    let mut head = [0u8; 4];
    let mut got = 0;
    let mut first: Option<Instant> = None;
    let mut fill = |buf: &mut [u8], got: &mut usize, first: &mut Option<Instant>| {
        while *got < buf.len() {
            match r.read(&mut buf[*got..]) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    *got += n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match first {
                        Some(t) if t.elapsed() > FRAME_TIMEOUT => return Err(FrameError::Slow),
                        None if start.elapsed() > idle => return Err(FrameError::Idle),
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(())
    };
    fill(&mut head, &mut got, &mut first)?;
    let len = u32::from_be_bytes(head) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooBig(len));
    }
    // Grown as the bytes arrive; each outgrown buffer is wiped as it is dropped (frames may
    // hold keys).
    let mut body = zeroize::Zeroizing::new(vec![0u8; len.min(FIRST_CHUNK)]);
    let mut got = 0;
    loop {
        fill(&mut body, &mut got, &mut first)?;
        if body.len() == len {
            return Ok(std::mem::take(&mut *body));
        }
        let mut bigger = zeroize::Zeroizing::new(vec![0u8; body.len().saturating_mul(4).min(len)]);
        bigger[..got].copy_from_slice(&body[..got]);
        body = bigger;
    }
}

/// A request.
pub fn request(id: u64, command: &str, args: Value) -> Value {
    json!({"version": VERSION, "id": id, "command": command, "args": args})
}

/// A successful answer.
pub fn ok(id: u64, result: Value) -> Value {
    json!({"version": VERSION, "id": id, "ok": true, "result": result})
}

/// A failed answer.
pub fn error(id: u64, kind: &str, message: impl Into<String>) -> Value {
    json!({"version": VERSION, "id": id, "ok": false,
           "error": {"kind": kind, "message": message.into()}})
}

/// A streamed item of request `id`.
pub fn stream(id: u64, item: Value) -> Value {
    json!({"version": VERSION, "id": id, "stream": item})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut buf = vec![];
        write_frame(&mut buf, &request(3, "show-sa", json!({}))).unwrap();
        let body = read_frame(&mut &buf[..], Duration::from_secs(1)).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["command"], "show-sa");
        assert_eq!(v["id"], 3);

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..], Duration::from_secs(1)),
            Err(FrameError::TooBig(n)) if n == MAX_FRAME + 1
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 0][..], Duration::from_secs(1)),
            Err(FrameError::Empty)
        ));
        // truncated: the length promises more than arrives before the end
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 9, b'{'][..], Duration::from_secs(1)),
            Err(FrameError::Closed)
        ));
    }

    /// A frame larger than the first buffer (a reload of 10,000 SA pairs) arrives whole
    /// through the buffer's growth; one that stops short is an error.
    #[test]
    fn large_frames_grow_the_buffer() {
        let text: String = (0..5_000_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut buf = vec![];
        write_frame(&mut buf, &request(9, "reload", json!({ "config": text }))).unwrap();
        let body = read_frame(&mut &buf[..], Duration::from_secs(1)).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["args"]["config"].as_str(), Some(text.as_str()));
        assert!(matches!(
            read_frame(&mut &buf[..buf.len() - 1], Duration::from_secs(1)),
            Err(FrameError::Closed)
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes give a frame within the limit or an error, never a panic.
        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(f) = read_frame(&mut &b[..], Duration::from_millis(10)) {
                proptest::prop_assert!(!f.is_empty() && f.len() <= MAX_FRAME && f.len() + 4 <= b.len());
            }
        }
    }
}
