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
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::spd::{Action, NonPolicy, Policy, SaBundle, Selector, SpdConfig};
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
/// LINKTYPE_RAW (101).
pub fn write_pcap(path: &Path, packets: &[Vec<u8>]) -> io::Result<()> {
    const LINKTYPE_RAW: u32 = 101;
    let mut out = Vec::with_capacity(24 + packets.iter().map(|p| p.len() + 16).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, microsecond timestamps
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        let len = u32::try_from(p.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
        let t = u32::try_from(i).unwrap_or(u32::MAX);
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes()); // seconds
        out.extend_from_slice(&t.to_le_bytes()); // microseconds: keeps the order visible
        out.extend_from_slice(&len.to_le_bytes()); // captured length
        out.extend_from_slice(&len.to_le_bytes()); // original length
        out.extend_from_slice(p);
    }
    fs::File::create(path)?.write_all(&out)
}

/// The Internet checksum's one's-complement sum (RFC 1071), not yet complemented.
pub fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn finish(sum: u32) -> u16 {
    !(ones_sum(&[], sum) as u16)
}

/// A UDP datagram with its checksum over the pseudo-header of `src`/`dst`.
fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d4)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d4.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            pseudo.extend_from_slice(&v6(src));
            pseudo.extend_from_slice(&v6(dst));
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
    }
    let mut c = finish(ones_sum(&d, ones_sum(&pseudo, 0)));
    if c == 0 {
        c = 0xffff; // 0 means "no checksum" (RFC 768)
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
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
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = finish(ones_sum(&p, 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
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
    let plen = u16::try_from(l4.len()).expect("packet fits in IPv6");
    let mut p = Vec::with_capacity(40 + l4.len());
    p.extend_from_slice(&(0x6000_0000u32 | (flow & 0xf_ffff)).to_be_bytes());
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
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

/// A seeded SplitMix64 generator for keys (shared with the lab's config generator).
pub use xsec_lab::config::Rng;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parse hex (an optional `0x` prefix); panics on bad input.
pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    assert!(s.len().is_multiple_of(2), "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("bad hex {s:?}"))
        })
        .collect()
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
pub fn wireshark_auth(a: AuthAlg) -> &'static str {
    match a {
        AuthAlg::None => "NULL",
        AuthAlg::HmacSha1_96 => "HMAC-SHA-1-96 [RFC2404]",
        AuthAlg::HmacSha256_128 => "HMAC-SHA-256-128 [RFC4868]",
        AuthAlg::HmacSha384_192 => "HMAC-SHA-384-192 [RFC4868]",
        AuthAlg::HmacSha512_256 => "HMAC-SHA-512-256 [RFC4868]",
        AuthAlg::HmacMd5_96 => "HMAC-MD5-96 [RFC2403]",
    }
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
