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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use xsec_dataplane::wire::pcap::{self, LinkType, PcapReader};

use crate::fwd::{ETH_HDR, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

/// Frames per worker kept for `--replay-capture`.
pub const CAPTURE_MAX: usize = 1024;
/// Longest frame replayed: what fits a UMEM frame behind the headroom the worker needs.
pub const FRAME_MAX: usize = 3000;
/// Frames read from one file at most (they are cycled).
pub const FRAMES_MAX: usize = 1 << 16;

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
        std::fs::write(
            &c.path,
            pcap::file(LinkType::ETHERNET, frames.iter().map(Vec::as_slice)),
        )?;
        Ok(frames.len())
    }
}

/// The frames of a pcap file (microsecond or nanosecond, either byte order), as Ethernet
/// frames: LINKTYPE_RAW packets get an Ethernet header (zero MACs; the worker does not look
/// at them). Anything else, or a truncated or oversized record, is an error naming the
/// record.
pub fn read_pcap(b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let records = PcapReader::new(b).map_err(|e| e.to_string())?;
    let link = records.link_type();
    if link != LinkType::ETHERNET && link != LinkType::RAW {
        return Err(format!(
            "link type {}: only Ethernet (1) and raw IP (101) can be replayed",
            link.0
        ));
    }
    let mut out = vec![];
    for r in records {
        let r = r.map_err(|e| e.to_string())?;
        let (n, data) = (r.number, r.data);
        if data.len() != r.orig_len as usize {
            return Err(format!(
                "record {n}: captured {} of {} bytes (a snap length cut it)",
                data.len(),
                r.orig_len
            ));
        }
        let frame = if link == LinkType::RAW {
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
    }
    Ok(out)
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

    fn file(link: LinkType, frames: &[Vec<u8>]) -> Vec<u8> {
        pcap::file(link, frames.iter().map(Vec::as_slice))
    }

    #[test]
    fn round_trip_and_raw_ip_gets_an_ethernet_header() {
        let frames = vec![frame(60), frame(1514)];
        assert_eq!(
            read_pcap(&file(LinkType::ETHERNET, &frames)).unwrap(),
            frames
        );
        let got = read_pcap(&file(LinkType::RAW, &[vec![0x60, 0, 0, 0]])).unwrap();
        assert_eq!(got[0].len(), ETH_HDR + 4);
        assert_eq!(&got[0][12..15], &[0x86, 0xdd, 0x60]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_record() {
        assert!(read_pcap(b"").unwrap_err().contains("shorter"));
        assert!(read_pcap(&[0u8; 24]).unwrap_err().contains("magic"));
        let mut b = file(LinkType::ETHERNET, &[frame(60), frame(60)]);
        b.truncate(b.len() - 1);
        assert!(
            read_pcap(&b)
                .unwrap_err()
                .starts_with("record 2: truncated")
        );
        let b = file(LinkType(113), &[frame(60)]); // Linux cooked capture
        assert!(read_pcap(&b).unwrap_err().contains("link type 113"));
        let b = file(LinkType::ETHERNET, &[frame(FRAME_MAX + 1)]);
        assert!(read_pcap(&b).unwrap_err().contains("record 1"));
        let mut b = file(LinkType::ETHERNET, &[frame(60)]);
        b[24 + 12] = 99; // orig_len != incl_len
        assert!(read_pcap(&b).unwrap_err().contains("snap length"));
        let raw = file(LinkType::RAW, &[vec![0x20, 0]]);
        assert!(read_pcap(&raw).unwrap_err().contains("not an IP packet"));
    }
}
