//! Classic pcap capture files (libpcap's format; not pcapng): the one reader and writer the
//! daemon's replay backend and `xsecctl trace`, the lab and the tests share.
//!
//! ```text
//! file header (24 bytes): magic, version 2.4, time zone, sigfigs, snap length, link type
//! each record (16 bytes + data): seconds, micro- or nanoseconds, captured length, original length
//! ```
//!
//! [`PcapReader`] takes either byte order and either timestamp resolution (the magic says
//! which) and never panics: a short header, an unknown magic or a record cut off is an
//! error naming the record. [`header`] and [`push_record`] write little-endian files with
//! microsecond timestamps. Both work on bytes in memory: the callers do the file I/O.

use super::be32;

/// File header length.
pub const HEADER_LEN: usize = 24;
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 16;
/// The snap length written: a longer record keeps its first `SNAPLEN` bytes (and says how
/// long it was), as a capture tool would.
pub const SNAPLEN: u32 = 65535;

/// Microsecond magic as written by the host that wrote the file.
const MAGIC_US: u32 = 0xa1b2_c3d4;
/// Nanosecond magic.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// A pcapng Section Header Block starts with this (either byte order).
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

/// A link type (tcpdump.org's LINKTYPE_ values): what each record starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// An Ethernet II header.
    pub const ETHERNET: Self = Self(1);
    /// The IP header itself (version from the first nibble).
    pub const RAW: Self = Self(101);
    /// IPv4 only, no link header.
    pub const IPV4: Self = Self(228);
    /// IPv6 only, no link header.
    pub const IPV6: Self = Self(229);
}

/// Why bytes are not a pcap file the reader can go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file: shorter than its header")]
    ShortHeader,
    #[error("{}", magic_message(*.0))]
    Magic(u32),
    /// Record `record` (1-based) ends inside its 16-byte header.
    #[error("record {record}: truncated header")]
    RecordHeader { record: usize },
    /// Record `record` announces more bytes than the file holds.
    #[error("record {record}: truncated ({announced} bytes announced)")]
    RecordData { record: usize, announced: u32 },
}

fn magic_message(m: u32) -> String {
    if m == PCAPNG_SHB {
        "a pcapng file, not classic pcap (convert it with `editcap -F pcap`)".into()
    } else {
        format!("not a pcap file (magic {m:#010x})")
    }
}

/// One record of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapRecord<'a> {
    /// 1-based, as tcpdump and tshark number them.
    pub number: usize,
    /// Nanoseconds since the epoch (microsecond files give multiples of 1000).
    pub time_ns: u64,
    /// The packet's length on the wire; more than `data.len()` when a snap length cut it.
    pub orig_len: u32,
    /// The captured bytes, from the link-layer header on.
    pub data: &'a [u8],
}

/// The records of a pcap file in memory, in order. After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct PcapReader<'a> {
    rest: &'a [u8],
    /// The file is little-endian (the magic reads backwards).
    le: bool,
    nanos: bool,
    link: LinkType,
    read: usize,
}

impl<'a> PcapReader<'a> {
    /// Check the file header of `b`.
    pub fn new(b: &'a [u8]) -> Result<Self, PcapError> {
        let Some(h) = b.first_chunk::<HEADER_LEN>() else {
            return Err(PcapError::ShortHeader);
        };
        let magic = be32(h, 0);
        let (le, nanos) = match (magic, magic.swap_bytes()) {
            (MAGIC_US, _) => (false, false),
            (MAGIC_NS, _) => (false, true),
            (_, MAGIC_US) => (true, false),
            (_, MAGIC_NS) => (true, true),
            _ => return Err(PcapError::Magic(magic)),
        };
        let mut r = Self {
            rest: &b[HEADER_LEN..],
            le,
            nanos,
            link: LinkType(0),
            read: 0,
        };
        r.link = LinkType(r.word(h, 20));
        Ok(r)
    }

    /// The file's link type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Whether timestamps are in nanoseconds (else microseconds).
    pub fn nanosecond(&self) -> bool {
        self.nanos
    }

    /// The 32-bit word at `at` in the file's byte order (`b` holds it).
    fn word(&self, b: &[u8], at: usize) -> u32 {
        let v = be32(b, at);
        if self.le { v.swap_bytes() } else { v }
    }

    fn record(&mut self) -> Result<PcapRecord<'a>, PcapError> {
        let number = self.read + 1;
        let h = self
            .rest
            .first_chunk::<RECORD_HEADER_LEN>()
            .ok_or(PcapError::RecordHeader { record: number })?;
        let (secs, frac) = (self.word(h, 0), self.word(h, 4));
        let (incl, orig_len) = (self.word(h, 8), self.word(h, 12));
        let data =
            self.rest[RECORD_HEADER_LEN..]
                .get(..incl as usize)
                .ok_or(PcapError::RecordData {
                    record: number,
                    announced: incl,
                })?;
        self.rest = &self.rest[RECORD_HEADER_LEN + data.len()..];
        self.read = number;
        let unit = if self.nanos { 1 } else { 1000 };
        Ok(PcapRecord {
            number,
            time_ns: u64::from(secs) * 1_000_000_000 + u64::from(frac) * unit,
            orig_len,
            data,
        })
    }
}

impl<'a> Iterator for PcapReader<'a> {
    type Item = Result<PcapRecord<'a>, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.record();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// A file header: little-endian, microsecond timestamps, snap length [`SNAPLEN`].
pub fn header(link: LinkType) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_US.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // time zone and timestamp accuracy: 0
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&link.0.to_le_bytes());
    h
}

/// Append one record of `data` taken at `time_us` (microseconds since the epoch) to `out`,
/// which holds a file begun with [`header`]. Bytes past [`SNAPLEN`] are left out.
pub fn push_record(out: &mut Vec<u8>, time_us: u64, data: &[u8]) {
    let kept = &data[..data.len().min(SNAPLEN as usize)];
    let secs = u32::try_from(time_us / 1_000_000).unwrap_or(u32::MAX);
    let orig = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&((time_us % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    out.extend_from_slice(&orig.to_le_bytes());
    out.extend_from_slice(kept);
}

/// A whole file of `packets` with zero timestamps.
pub fn file<'p>(link: LinkType, packets: impl IntoIterator<Item = &'p [u8]>) -> Vec<u8> {
    let mut out = header(link).to_vec();
    for p in packets {
        push_record(&mut out, 0, p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(b: &[u8]) -> Result<Vec<PcapRecord<'_>>, PcapError> {
        PcapReader::new(b)?.collect()
    }

    #[test]
    fn layout() {
        let mut out = header(LinkType::RAW).to_vec();
        push_record(&mut out, 1_500_000, &[0x45, 0]);
        assert_eq!(out.len(), HEADER_LEN + RECORD_HEADER_LEN + 2);
        assert_eq!(&out[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&out[4..8], &[2, 0, 4, 0]);
        assert_eq!(&out[16..20], &65535u32.to_le_bytes());
        assert_eq!(&out[20..24], &101u32.to_le_bytes());
        assert_eq!(&out[24..28], &1u32.to_le_bytes());
        assert_eq!(&out[28..32], &500_000u32.to_le_bytes());
        assert_eq!(&out[32..36], &2u32.to_le_bytes());
        assert_eq!(&out[36..40], &2u32.to_le_bytes());
        assert_eq!(&out[40..], &[0x45, 0]);
    }

    #[test]
    fn round_trip() {
        let a = [1u8; 60];
        let b = [2u8; 1514];
        let f = file(LinkType::ETHERNET, [&a[..], &b[..]]);
        let r = PcapReader::new(&f).unwrap();
        assert_eq!(r.link_type(), LinkType::ETHERNET);
        assert!(!r.nanosecond());
        let got = records(&f).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].number, got[0].data, got[0].orig_len),
            (1, &a[..], 60)
        );
        assert_eq!(
            (got[1].number, got[1].data, got[1].orig_len),
            (2, &b[..], 1514)
        );
        assert_eq!(records(&header(LinkType::RAW)).unwrap(), vec![]);
    }

    #[test]
    fn longer_than_the_snap_length_is_cut() {
        let big = vec![7u8; SNAPLEN as usize + 10];
        let f = file(LinkType::RAW, [&big[..]]);
        let got = records(&f).unwrap();
        assert_eq!(got[0].data.len(), SNAPLEN as usize);
        assert_eq!(got[0].orig_len as usize, big.len());
    }

    /// A big-endian nanosecond file, as a big-endian host's libpcap writes it.
    #[test]
    fn either_byte_order_and_resolution() {
        let mut be = vec![];
        for w in [0xa1b2_3c4d_u32, 0x0002_0004, 0, 0, 65535, 229] {
            be.extend_from_slice(&w.to_be_bytes());
        }
        for w in [3u32, 7, 2, 2] {
            be.extend_from_slice(&w.to_be_bytes());
        }
        be.extend_from_slice(&[0x60, 0]);
        let r = PcapReader::new(&be).unwrap();
        assert_eq!(r.link_type(), LinkType::IPV6);
        assert!(r.nanosecond());
        let got = records(&be).unwrap();
        assert_eq!(
            (got[0].time_ns, got[0].data),
            (3_000_000_007, &[0x60, 0][..])
        );
        // the little-endian microsecond file: 1.5 s
        let mut le = header(LinkType::ETHERNET).to_vec();
        push_record(&mut le, 1_500_000, &[1]);
        assert_eq!(records(&le).unwrap()[0].time_ns, 1_500_000_000);
        // nanosecond magic, little-endian
        le[0..4].copy_from_slice(&0xa1b2_3c4d_u32.to_le_bytes());
        assert_eq!(records(&le).unwrap()[0].time_ns, 1_000_500_000);
    }

    #[test]
    fn bad_files_are_errors_naming_the_record() {
        assert_eq!(PcapReader::new(b"").unwrap_err(), PcapError::ShortHeader);
        assert!(
            PcapReader::new(&[0u8; 24])
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut ng = [0u8; 28];
        ng[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        assert!(
            PcapReader::new(&ng)
                .unwrap_err()
                .to_string()
                .contains("pcapng")
        );
        let f = file(LinkType::ETHERNET, [&[1u8; 60][..], &[2u8; 60][..]]);
        let e = records(&f[..f.len() - 1]).unwrap_err();
        assert_eq!(
            e,
            PcapError::RecordData {
                record: 2,
                announced: 60
            }
        );
        assert_eq!(e.to_string(), "record 2: truncated (60 bytes announced)");
        let e = records(&f[..HEADER_LEN + RECORD_HEADER_LEN + 60 + 5]).unwrap_err();
        assert_eq!(e.to_string(), "record 2: truncated header");
        // after an error, nothing more
        let mut r = PcapReader::new(&f[..f.len() - 1]).unwrap();
        assert!(r.next().unwrap().is_ok());
        assert!(r.next().unwrap().is_err());
        assert!(r.next().is_none());
        // a huge announced length is an error, not an allocation or a panic
        let mut huge = header(LinkType::ETHERNET).to_vec();
        push_record(&mut huge, 0, &[1]);
        huge[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            records(&huge),
            Err(PcapError::RecordData { record: 1, .. })
        ));
    }
}
