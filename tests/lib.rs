//! Helpers for xsec's interop tests (`interop.rs`): locating the IPsec peer harness and the
//! programs it needs, running them, a pcap writer, IPv4/IPv6 UDP packet builders, a seeded
//! key generator, Wireshark `esp_sa` names, and engine shortcuts.
//!
//! The harness (`esp_tool.py`, `tshark_decrypt.sh`) is found through `XSEC_HARNESS`, else at
//! `<workspace root>/../shared/harness`; Python is `/usr/bin/python3` unless `IPP_PYTHON` says
//! otherwise. Anything missing is a test failure that says `cargo xtask test` installs it:
//! these tests never skip.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::spd::{Action, NonPolicy, Policy, SaBundle, Selector, SpdConfig};
use xsec_dataplane::wire::pcap::{self, LinkType};
use xsec_dataplane::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr, checksum, udp,
};
use xsec_dataplane::{Engine, PacketBuf, Timestamp, Verdict};

/// What a missing piece of the harness tells the developer.
pub const INSTALL_HINT: &str = "`cargo xtask test` installs the interop harness and its \
     packages (python3-scapy, python3-cryptography, tshark): run the tests through it";

/// The independent ESP implementations the tests compare the engine with.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The folder holding `esp_tool.py` and `tshark_decrypt.sh`.
    pub dir: PathBuf,
    /// A Python 3 with scapy and cryptography.
    pub python: PathBuf,
}

/// The workspace root: the parent of this crate's folder.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// A file of this crate (e.g. `esp_check.py`).
pub fn crate_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn on_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

impl Harness {
    /// Find the harness, Python (with scapy and cryptography) and tshark; panic with an
    /// explanation if anything is missing.
    pub fn locate() -> Harness {
        let dir = match std::env::var_os("XSEC_HARNESS") {
            Some(d) => PathBuf::from(d),
            None => workspace_root().join("..").join("shared").join("harness"),
        };
        for f in ["esp_tool.py", "tshark_decrypt.sh"] {
            assert!(
                dir.join(f).is_file(),
                "the IPsec peer harness is missing: no {} (set XSEC_HARNESS to its folder); \
                 {INSTALL_HINT}",
                dir.join(f).display()
            );
        }
        let python = std::env::var_os("IPP_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
        // `import scapy` (the package, not scapy.all) is quick; it proves the install.
        match Command::new(&python)
            .args(["-c", "import scapy, cryptography"])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{} cannot import scapy and cryptography ({}); {INSTALL_HINT}",
                python.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run {}: {e}; {INSTALL_HINT}", python.display()),
        }
        for prog in ["tshark", "bash"] {
            assert!(
                on_path(prog).is_some(),
                "`{prog}` is not on PATH; {INSTALL_HINT}"
            );
        }
        Harness { dir, python }
    }

    /// Run `esp_tool.py ARGS`.
    pub fn esp_tool<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.join("esp_tool.py")).args(args);
        Run::exec(c)
    }

    /// Run `tshark_decrypt.sh ARGS`.
    pub fn tshark_decrypt<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut c = Command::new("bash");
        c.arg(self.dir.join("tshark_decrypt.sh")).args(args);
        Run::exec(c)
    }

    /// Run a Python script with the harness's Python.
    pub fn python_script<S: AsRef<OsStr>>(&self, script: &Path, args: &[S]) -> Run {
        let mut c = Command::new(&self.python);
        c.arg(script).args(args);
        Run::exec(c)
    }
}

/// The outcome of a finished program.
#[derive(Debug, Clone)]
pub struct Run {
    pub cmdline: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Run `c` to completion, capturing its output; panic if it cannot be started.
    pub fn exec(mut c: Command) -> Run {
        let cmdline = format!("{c:?}");
        let o = c
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}; {INSTALL_HINT}"));
        Run {
            cmdline,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}\nexit code: {:?}", self.cmdline, self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// A scratch folder under the system temp dir, removed on drop unless the test failed or
/// `XSEC_INTEROP_KEEP` is set (then it is kept, and named, for inspection).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("xsec-interop-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Write a file into the folder.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("XSEC_INTEROP_KEEP").is_some() {
            eprintln!("interop artefacts kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Write raw IP packets (IPv4 or IPv6, no link layer) to a classic pcap file with
/// LINKTYPE_RAW (101). Packet `i` is stamped 1 700 000 000 s + `i` µs: the order stays
/// visible in tshark.
pub fn write_pcap(path: &Path, packets: &[Vec<u8>]) -> io::Result<()> {
    let mut out = pcap::header(LinkType::RAW).to_vec();
    for (i, p) in (0u64..).zip(packets) {
        pcap::push_record(&mut out, 1_700_000_000_000_000 + i, p);
    }
    fs::write(path, out)
}

/// A UDP datagram with its checksum over the pseudo-header of `src`/`dst`.
fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = udp::HEADER_LEN + payload.len();
    let mut d = vec![0u8; len];
    let mut u = UdpPacket::new_unchecked(&mut d[..]);
    UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut u);
    u.payload_mut().copy_from_slice(payload);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d4)) => {
            checksum::pseudo_v4(s.octets(), d4.octets(), 17, len as u16)
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            checksum::pseudo_v6(v6(src), v6(dst), 17, len as u32)
        }
    };
    // a computed 0 is sent as 0xffff: 0 means "no checksum" (RFC 768)
    u.fill_checksum(pseudo);
    d
}

/// An IPv4/UDP packet (TTL 64, DF clear) with correct header and UDP checksums.
pub fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = udp(src.into(), dst.into(), sport, dport, payload);
    let total = u16::try_from(20 + l4.len()).expect("packet fits in IPv4");
    let mut p = vec![0u8; 20];
    Ipv4Repr {
        src: src.octets(),
        dst: dst.octets(),
        protocol: IpProtocol::UDP,
        payload_len: usize::from(total) - 20,
        ttl: 64,
        tos: 0,
        ident: id,
        dont_frag: false,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
    p.extend_from_slice(&l4);
    p
}

/// An IPv6/UDP packet (hop limit 64) with a correct UDP checksum.
pub fn ipv6_udp(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flow: u32,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = udp(src.into(), dst.into(), sport, dport, payload);
    assert!(l4.len() <= usize::from(u16::MAX), "packet fits in IPv6");
    let mut p = vec![0u8; 40];
    Ipv6Repr {
        src: src.octets(),
        dst: dst.octets(),
        next_header: IpProtocol::UDP,
        payload_len: l4.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: flow & 0xf_ffff,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
    p.extend_from_slice(&l4);
    p
}

/// An IPv4 or IPv6 UDP packet; `src` and `dst` must be of the same family.
pub fn ip_udp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    id: u16,
    payload: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_udp(s, d, sport, dport, id, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_udp(s, d, sport, dport, u32::from(id), payload),
        _ => panic!("{src} and {dst} are of different IP versions"),
    }
}

/// A payload that names its test case, filled up to `len` bytes (at least the name).
pub fn payload(name: &str, len: usize) -> Vec<u8> {
    let mut p = name.as_bytes().to_vec();
    let mut i = 0u8;
    while p.len() < len {
        p.push(if p.len() == name.len() {
            b' '
        } else {
            b'a' + i % 26
        });
        i = i.wrapping_add(1);
    }
    p
}

/// The seeded generator for keys (the lab's: fastrand's, from the seed).
pub use xsec_lab::config::Rng;

/// Lower-case hex of bytes.
pub use hex::encode as hex;

/// Parse hex (an optional `0x` prefix); panics on bad input.
pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).unwrap_or_else(|e| panic!("hex {s:?}: {e}"))
}

/// The name of an encryption algorithm in Wireshark 4.0's `esp_sa` table (the strings of
/// esp_tool.py's WS_ENC and the dissector's own); `None` if the dissector has no such
/// algorithm.
pub fn wireshark_enc(e: EncAlg) -> Option<&'static str> {
    Some(match e {
        EncAlg::Null => "NULL",
        EncAlg::AesCbc128 | EncAlg::AesCbc192 | EncAlg::AesCbc256 => "AES-CBC [RFC3602]",
        EncAlg::AesGcm128 | EncAlg::AesGcm192 | EncAlg::AesGcm256 => {
            "AES-GCM with 16 octet ICV [RFC4106]"
        }
        EncAlg::TripleDesCbc => "TripleDES-CBC [RFC2451]",
        EncAlg::DesCbc => "DES-CBC [RFC2405]",
        EncAlg::ChaCha20Poly1305 | EncAlg::AesGmac128 | EncAlg::AesGmac192 | EncAlg::AesGmac256 => {
            return None;
        }
    })
}

/// The name of an integrity algorithm in Wireshark's `esp_sa` table.
pub fn wireshark_auth(a: AuthAlg) -> Option<&'static str> {
    Some(match a {
        AuthAlg::None => "NULL",
        AuthAlg::HmacSha1_96 => "HMAC-SHA-1-96 [RFC2404]",
        AuthAlg::HmacSha256_128 => "HMAC-SHA-256-128 [RFC4868]",
        AuthAlg::HmacSha384_192 => "HMAC-SHA-384-192 [RFC4868]",
        AuthAlg::HmacSha512_256 => "HMAC-SHA-512-256 [RFC4868]",
        AuthAlg::HmacMd5_96 => "HMAC-MD5-96 [RFC2403]",
        // Wireshark 4.0 has no AES-CMAC for ESP; AES-GMAC integrity is AH's
        AuthAlg::AesCmac96 | AuthAlg::AesGmac128 | AuthAlg::AesGmac192 | AuthAlg::AesGmac256 => {
            return None;
        }
    })
}

/// One line of Wireshark's `esp_sa` UAT file (every field a quoted string).
pub fn uat_line(
    src: IpAddr,
    dst: IpAddr,
    spi: u32,
    enc: &str,
    enc_key: &[u8],
    auth: &str,
    auth_key: &[u8],
) -> String {
    let proto = if src.is_ipv4() { "IPv4" } else { "IPv6" };
    let ak = if auth_key.is_empty() {
        String::new()
    } else {
        format!("0x{}", hex(auth_key))
    };
    format!(
        "\"{proto}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{enc}\",\"0x{}\",\"{auth}\",\"{ak}\"",
        hex(enc_key)
    )
}

/// The header line Wireshark writes into UAT files.
pub const UAT_HEADER: &str = "# This file is automatically generated, DO NOT MODIFY.\n";

/// An engine whose outbound SPD protects everything with the SA of `reqid`.
pub fn protect_all_engine(reqid: u32) -> Engine {
    let spd = SpdConfig {
        outbound: vec![Policy {
            name: format!("protect-{reqid}"),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(reqid)),
        }],
        inbound: vec![],
        inbound_default: NonPolicy::Discard,
        outbound_default: NonPolicy::Discard,
    }
    .compile()
    .expect("the SPD compiles");
    Engine::new(Arc::new(spd))
}

/// An engine with an empty SPD (inbound tests: ESP is classified by SPI).
pub fn empty_engine() -> Engine {
    let spd = SpdConfig::default()
        .compile()
        .expect("the empty SPD compiles");
    Engine::new(Arc::new(spd))
}

fn buf(packet: &[u8]) -> PacketBuf<Vec<u8>> {
    PacketBuf::from_slice(vec![0u8; 2048], 128, packet).expect("packet fits in a 2048-byte frame")
}

/// Outbound processing (SPD lookup + encapsulation); the ESP packet or the verdict.
pub fn outbound(engine: &mut Engine, now: Timestamp, packet: &[u8]) -> Result<Vec<u8>, Verdict> {
    let mut p = buf(packet);
    match engine.outbound(now, &mut p) {
        Verdict::Forward => Ok(p.data().to_vec()),
        v => Err(v),
    }
}

/// Inbound processing (classification + decapsulation); the inner packet or the verdict.
pub fn inbound(engine: &mut Engine, now: Timestamp, packet: &[u8]) -> Result<Vec<u8>, Verdict> {
    let mut p = buf(packet);
    match engine.inbound(now, &mut p) {
        Verdict::Forward => Ok(p.data().to_vec()),
        v => Err(v),
    }
}

/// Result lines `#N ...` of esp_tool.py / esp_check.py, keyed by packet number, with the
/// indented lines that follow each.
pub fn packet_lines(stdout: &str) -> std::collections::BTreeMap<usize, (String, Vec<String>)> {
    let mut m = std::collections::BTreeMap::new();
    let mut cur = None;
    for line in stdout.lines() {
        let n = line
            .strip_prefix('#')
            .and_then(|r| r.split(' ').next())
            .and_then(|d| d.parse::<usize>().ok());
        if let Some(n) = n {
            m.insert(n, (line.to_string(), Vec::new()));
            cur = Some(n);
        } else if line.starts_with(' ') {
            if let Some((_, extra)) = cur.and_then(|n| m.get_mut(&n)) {
                extra.push(line.trim().to_string());
            }
        } else {
            cur = None;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsec_dataplane::wire::pcap::PcapReader;

    #[test]
    fn udp_packets_have_valid_checksums() {
        let p = ipv4_udp(
            Ipv4Addr::new(10, 1, 0, 10),
            Ipv4Addr::new(10, 2, 0, 10),
            4000,
            5000,
            7,
            b"payload",
        );
        let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4");
        assert!(ip.verify_checksum());
        assert_eq!((ip.ident(), ip.ttl(), ip.dont_frag()), (7, 64, false));
        let pseudo = checksum::pseudo_v4(ip.src_addr(), ip.dst_addr(), 17, 15);
        let u = UdpPacket::new_checked(ip.payload()).expect("UDP");
        assert!(u.checksum() != 0 && u.verify_checksum(pseudo));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (4000, 5000, &b"payload"[..])
        );

        let (s, d) = (
            "fd01::10".parse().expect("ip"),
            "fd02::10".parse().expect("ip"),
        );
        let p = ipv6_udp(s, d, 4000, 5000, 0x12345, b"six");
        let ip = Ipv6Packet::new_checked(&p[..]).expect("IPv6");
        assert_eq!((ip.flow_label(), ip.hop_limit()), (0x12345, 64));
        let pseudo = checksum::pseudo_v6(ip.src_addr(), ip.dst_addr(), 17, 11);
        assert!(
            UdpPacket::new_checked(ip.payload())
                .expect("UDP")
                .verify_checksum(pseudo)
        );
    }

    #[test]
    fn pcap_of_raw_packets_keeps_their_order() {
        let dir = TempDir::new("lib-pcap");
        let path = dir.join("t.pcap");
        write_pcap(&path, &[vec![0x45, 1], vec![0x60, 2, 3]]).expect("write");
        let bytes = fs::read(&path).expect("read");
        let r = PcapReader::new(&bytes).expect("pcap");
        assert_eq!(r.link_type(), LinkType::RAW);
        let got: Vec<_> = r.map(|x| x.expect("record")).collect();
        assert_eq!(got[1].data, &[0x60, 2, 3]);
        assert_eq!(got[1].time_ns, 1_700_000_000_000_001_000);
    }
}
