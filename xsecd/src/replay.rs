//! The replay I/O backend: measure a worker without the kernel in the way.
//!
//! Instead of AF_XDP sockets, a worker's receive side hands it copies of frames read once from
//! a pcap file, over and over, as fast as it takes them; what it transmits is counted and
//! dropped (a null sink), optionally after keeping the first frames of each side for a pcap.
//! This is what DPDK's `net_pcap` with `infinite_rx` feeding `net_null` does for ipsec-secgw:
//! the figure is the worker's own capacity (parsing, SPD, ESP, crypto, forwarding, frame
//! handling, one copy per received frame) with no NIC, veth or kernel cost.
//!
//! `xsecd --replay-protected plain.pcap` measures encryption, `--replay-unprotected esp.pcap`
//! decryption (with `replay_window = 0` on the inbound SA: the same sequence numbers come
//! back every lap). `--replay-capture out.pcap` writes the first frames each worker sent
//! (both sides, up to [`CAPTURE_MAX`] per worker), which is how an encryption run produces
//! the ESP for a decryption run — and how a test checks the replayed output with an
//! independent ESP implementation.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::fwd::{ETH_HDR, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

/// Frames per worker kept for `--replay-capture`.
pub const CAPTURE_MAX: usize = 1024;
/// Longest frame replayed: what fits a UMEM frame behind the headroom the worker needs.
pub const FRAME_MAX: usize = 3000;
/// Frames read from one file at most (they are cycled).
pub const FRAMES_MAX: usize = 1 << 16;

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;

/// Why a replay file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct ReplayError {
    pub path: PathBuf,
    pub msg: String,
}

/// What the workers replay, per file and side (`[unprotected, protected]`), and where
/// captures go. Worker `i` replays `files[side][i mod files[side].len()]`.
#[derive(Debug, Default)]
pub struct ReplaySource {
    pub files: [Vec<Vec<Vec<u8>>>; 2],
    pub capture: Option<Capture>,
}

/// Frames kept by the workers, written as one pcap (Ethernet) when the daemon stops.
#[derive(Debug)]
pub struct Capture {
    pub path: PathBuf,
    pub frames: Mutex<Vec<Vec<u8>>>,
}

impl ReplaySource {
    /// Read the files given on the command line.
    pub fn load(
        unprotected: &[PathBuf],
        protected: &[PathBuf],
        capture: Option<&Path>,
    ) -> Result<Arc<ReplaySource>, ReplayError> {
        let read = |p: &PathBuf| -> Result<Vec<Vec<u8>>, ReplayError> {
            let fail = |msg: String| ReplayError {
                path: p.to_owned(),
                msg,
            };
            let bytes = std::fs::read(p).map_err(|e| fail(e.to_string()))?;
            let frames = read_pcap(&bytes).map_err(fail)?;
            if frames.is_empty() {
                return Err(fail("no frames".into()));
            }
            Ok(frames)
        };
        let files = [
            unprotected
                .iter()
                .map(read)
                .collect::<Result<Vec<_>, _>>()?,
            protected.iter().map(read).collect::<Result<Vec<_>, _>>()?,
        ];
        if files.iter().all(Vec::is_empty) {
            return Err(ReplayError {
                path: PathBuf::from("-"),
                msg: "replay needs --replay-unprotected or --replay-protected".into(),
            });
        }
        Ok(Arc::new(ReplaySource {
            files,
            capture: capture.map(|p| Capture {
                path: p.to_owned(),
                frames: Mutex::new(Vec::new()),
            }),
        }))
    }

    /// The frames worker `worker` replays on `side` (0 unprotected, 1 protected).
    pub fn frames(&self, side: usize, worker: usize) -> &[Vec<u8>] {
        match self.files.get(side) {
            Some(f) if !f.is_empty() => &f[worker % f.len()],
            _ => &[],
        }
    }

    /// Write the captured frames (called once, when the workers have stopped).
    pub fn write_capture(&self) -> io::Result<usize> {
        let Some(c) = &self.capture else {
            return Ok(0);
        };
        let frames = c.frames.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = io::BufWriter::new(std::fs::File::create(&c.path)?);
        write_pcap_header(&mut out, LINKTYPE_ETHERNET)?;
        for f in frames.iter() {
            write_pcap_record(&mut out, f)?;
        }
        out.flush()?;
        Ok(frames.len())
    }
}

fn rd32(b: &[u8], at: usize, swap: bool) -> Option<u32> {
    let v = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
    Some(if swap { v.swap_bytes() } else { v })
}

/// The frames of a pcap file (microsecond or nanosecond, either byte order), as Ethernet
/// frames: LINKTYPE_RAW packets get an Ethernet header (zero MACs; the worker does not look
/// at them). Anything else, or a truncated or oversized record, is an error naming the
/// record.
pub fn read_pcap(b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let magic = rd32(b, 0, false).ok_or("not a pcap file: shorter than its header")?;
    let swap = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        _ => return Err(format!("not a pcap file (magic {magic:#010x})")),
    };
    let link = rd32(b, 20, swap).ok_or("not a pcap file: shorter than its header")?;
    if link != LINKTYPE_ETHERNET && link != LINKTYPE_RAW {
        return Err(format!(
            "link type {link}: only Ethernet (1) and raw IP (101) can be replayed"
        ));
    }
    let mut at = 24;
    let mut out = vec![];
    while at < b.len() {
        let n = out.len() + 1;
        let incl = rd32(b, at + 8, swap).ok_or(format!("record {n}: truncated header"))? as usize;
        let orig = rd32(b, at + 12, swap).ok_or(format!("record {n}: truncated header"))? as usize;
        let data = b
            .get(at + 16..at + 16 + incl)
            .ok_or(format!("record {n}: truncated ({incl} bytes announced)"))?;
        if incl != orig {
            return Err(format!(
                "record {n}: captured {incl} of {orig} bytes (a snap length cut it)"
            ));
        }
        let frame = if link == LINKTYPE_RAW {
            let et = match data.first().map(|v| v >> 4) {
                Some(4) => ETHERTYPE_IPV4,
                Some(6) => ETHERTYPE_IPV6,
                _ => return Err(format!("record {n}: not an IP packet")),
            };
            let mut f = vec![0u8; ETH_HDR];
            f[12..14].copy_from_slice(&et.to_be_bytes());
            f.extend_from_slice(data);
            f
        } else {
            data.to_vec()
        };
        if frame.len() < ETH_HDR || frame.len() > FRAME_MAX {
            return Err(format!(
                "record {n}: {} bytes (replay takes {ETH_HDR}..={FRAME_MAX})",
                frame.len()
            ));
        }
        if out.len() == FRAMES_MAX {
            return Err(format!("more than {FRAMES_MAX} frames"));
        }
        out.push(frame);
        at += 16 + incl;
    }
    Ok(out)
}

/// A pcap file header (microsecond timestamps, snap length 65535).
pub fn write_pcap_header(w: &mut impl Write, link: u32) -> io::Result<()> {
    w.write_all(&0xa1b2_c3d4_u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&link.to_le_bytes())
}

/// One record with a zero timestamp.
pub fn write_pcap_record(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let n = (data.len() as u32).to_le_bytes();
    w.write_all(&[0; 8])?;
    w.write_all(&n)?;
    w.write_all(&n)?;
    w.write_all(data)
}

/// Ethernet pcap bytes of `frames` (for tests and tools).
pub fn pcap_bytes(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![];
    let _ = write_pcap_header(&mut v, LINKTYPE_ETHERNET);
    for f in frames {
        let _ = write_pcap_record(&mut v, f);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f
    }

    #[test]
    fn round_trip_and_raw_ip_gets_an_ethernet_header() {
        let frames = vec![frame(60), frame(1514)];
        assert_eq!(read_pcap(&pcap_bytes(&frames)).unwrap(), frames);
        let mut raw = vec![];
        write_pcap_header(&mut raw, LINKTYPE_RAW).unwrap();
        write_pcap_record(&mut raw, &[0x60, 0, 0, 0]).unwrap();
        let got = read_pcap(&raw).unwrap();
        assert_eq!(got[0].len(), ETH_HDR + 4);
        assert_eq!(&got[0][12..15], &[0x86, 0xdd, 0x60]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_record() {
        assert!(read_pcap(b"").unwrap_err().contains("shorter"));
        assert!(read_pcap(&[0u8; 24]).unwrap_err().contains("magic"));
        let mut b = pcap_bytes(&[frame(60), frame(60)]);
        b.truncate(b.len() - 1);
        assert!(
            read_pcap(&b)
                .unwrap_err()
                .starts_with("record 2: truncated")
        );
        let mut b = pcap_bytes(&[frame(60)]);
        b[20] = 113; // Linux cooked capture
        assert!(read_pcap(&b).unwrap_err().contains("link type 113"));
        let b = pcap_bytes(&[frame(FRAME_MAX + 1)]);
        assert!(read_pcap(&b).unwrap_err().contains("record 1"));
        let mut b = pcap_bytes(&[frame(60)]);
        b[24 + 12] = 99; // orig_len != incl_len
        assert!(read_pcap(&b).unwrap_err().contains("snap length"));
        let mut raw = vec![];
        write_pcap_header(&mut raw, LINKTYPE_RAW).unwrap();
        write_pcap_record(&mut raw, &[0x20, 0]).unwrap();
        assert!(read_pcap(&raw).unwrap_err().contains("not an IP packet"));
    }
}
