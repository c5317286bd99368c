//! Interop tests: the engine against independent ESP implementations.
//!
//! * `engine_decaps_every_esp_tool_vector`: ESP packets built by scapy (`esp_tool.py
//!   vectors`) are decapsulated by the engine, byte for byte.
//! * `esp_tool_and_tshark_accept_engine_packets`: packets the engine encapsulates with every
//!   algorithm esp_tool.py knows, tunnel and transport, raw ESP and UDP 4500 / 2746, are
//!   decrypted by esp_tool.py (two decryptions: its own parser and scapy's) and by tshark.
//! * `tshark_accepts_algorithms_esp_tool_lacks`: 3DES-CBC + HMAC and IPv6 (outer and inner)
//!   checked by tshark; ChaCha20-Poly1305, AES-GMAC, AES-CMAC-96 and ESN, which tshark 4.0 lacks, by
//!   `esp_check.py` (Python `cryptography`), which also re-checks everything tshark saw.
//!
//! The programs come from the IPsec peer harness (see `lib.rs`); if they are missing the tests
//! fail and say that `cargo xtask test` installs them.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use xsec_dataplane::Timestamp;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{Encap, Mode, SaConfig};
use xsec_dataplane::spd::{Direction, Selector};
use xsec_interop_tests::{
    Harness, Rng, Run, TempDir, UAT_HEADER, crate_file, empty_engine, hex, inbound, ip_udp,
    outbound, packet_lines, payload, protect_all_engine, uat_line, unhex, wireshark_auth,
    wireshark_enc, write_pcap,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

/// The algorithm pairs esp_tool.py knows (its names).
const ESP_TOOL_ALGS: &[(&str, &str)] = &[
    ("aes-gcm-128", "none"),
    ("aes-gcm-192", "none"),
    ("aes-gcm-256", "none"),
    ("aes-cbc-128", "hmac-sha1-96"),
    ("aes-cbc-128", "hmac-sha256-128"),
    ("aes-cbc-128", "hmac-sha384-192"),
    ("aes-cbc-128", "hmac-sha512-256"),
    ("aes-cbc-192", "hmac-sha1-96"),
    ("aes-cbc-192", "hmac-sha256-128"),
    ("aes-cbc-192", "hmac-sha384-192"),
    ("aes-cbc-192", "hmac-sha512-256"),
    ("aes-cbc-256", "hmac-sha1-96"),
    ("aes-cbc-256", "hmac-sha256-128"),
    ("aes-cbc-256", "hmac-sha384-192"),
    ("aes-cbc-256", "hmac-sha512-256"),
    ("null", "hmac-sha1-96"),
    ("null", "hmac-sha256-128"),
    ("null", "hmac-sha384-192"),
    ("null", "hmac-sha512-256"),
];

/// Algorithms esp_tool.py lacks (names of esp_check.py, also accepted by the engine).
const OTHER_ALGS: &[(&str, &str)] = &[
    ("chacha20-poly1305", "none"),
    ("aes-gmac-128", "none"),
    ("aes-gmac-192", "none"),
    ("aes-gmac-256", "none"),
    ("3des-cbc", "hmac-sha1-96"),
    ("3des-cbc", "hmac-sha256-128"),
    ("3des-cbc", "hmac-sha384-192"),
    ("3des-cbc", "hmac-sha512-256"),
    // confidentiality-only ESP, accepted with allow_legacy (the appliances' "ESP
    // confidentiality")
    ("aes-cbc-128", "none"),
    ("aes-cbc-256", "none"),
    // AES-CMAC-96 (RFC 4494): Wireshark 4.0 has no AES-CMAC, so esp_check.py only
    ("aes-cbc-128", "aes-cmac-96"),
    ("null", "aes-cmac-96"),
];

const ENCAPS: &[(&str, Encap)] = &[
    ("raw", Encap::None),
    ("udp4500", Encap::NAT_T),
    ("udp2746", Encap::UDP_2746),
];

/// Where the packets of a case go: outer endpoints (tunnel) and inner hosts.
#[derive(Debug, Clone, Copy)]
struct Topo {
    name: &'static str,
    mode: Mode,
    /// Tunnel endpoints (tunnel mode); the hosts themselves in transport mode.
    outer: (&'static str, &'static str),
    inner: (&'static str, &'static str),
}

const T4IN4: Topo = Topo {
    name: "tunnel-v4-in-v4",
    mode: Mode::Tunnel,
    outer: ("10.0.0.1", "10.0.0.2"),
    inner: ("10.1.0.10", "10.2.0.10"),
};
const T6IN4: Topo = Topo {
    name: "tunnel-v6-in-v4",
    mode: Mode::Tunnel,
    outer: ("10.0.0.1", "10.0.0.2"),
    inner: ("fd01::10", "fd02::10"),
};
const T4IN6: Topo = Topo {
    name: "tunnel-v4-in-v6",
    mode: Mode::Tunnel,
    outer: ("fd00::1", "fd00::2"),
    inner: ("10.1.0.10", "10.2.0.10"),
};
const T6IN6: Topo = Topo {
    name: "tunnel-v6-in-v6",
    mode: Mode::Tunnel,
    outer: ("fd00::1", "fd00::2"),
    inner: ("fd01::10", "fd02::10"),
};
const X4: Topo = Topo {
    name: "transport-v4",
    mode: Mode::Transport,
    outer: ("10.0.0.1", "10.0.0.2"),
    inner: ("10.0.0.1", "10.0.0.2"),
};
const X6: Topo = Topo {
    name: "transport-v6",
    mode: Mode::Transport,
    outer: ("fd00::1", "fd00::2"),
    inner: ("fd00::1", "fd00::2"),
};

/// One outbound SA and the packets the engine protected with it.
#[derive(Debug)]
struct Case {
    tag: String,
    spi: u32,
    enc_name: &'static str,
    auth_name: &'static str,
    enc: EncAlg,
    auth: AuthAlg,
    enc_key: Vec<u8>,
    auth_key: Vec<u8>,
    topo: Topo,
    esn: bool,
    packets: Vec<Sent>,
}

/// One packet the engine protected.
#[derive(Debug)]
struct Sent {
    /// The plaintext IP packet given to `Engine::outbound`.
    plain: Vec<u8>,
    /// The ESP packet it made.
    esp: Vec<u8>,
    /// The sequence number it should carry (all 64 bits with ESN).
    seq: u64,
}

/// A packet and the SA it was protected with.
type Item<'a> = (&'a Case, &'a Sent);

/// The ESP packets of `items`, in order.
fn esp_packets(items: &[Item<'_>]) -> Vec<Vec<u8>> {
    items.iter().map(|(_, p)| p.esp.clone()).collect()
}

impl Case {
    /// Install an outbound SA in a fresh engine whose SPD protects everything with it and run
    /// `n` packets of different sizes through `Engine::outbound`. With `esn_start`, the SA
    /// uses ESN and its counter starts there (the first packet gets `esn_start + 1`).
    #[allow(clippy::too_many_arguments)]
    fn build(
        idx: usize,
        spi: u32,
        (enc_name, auth_name): (&'static str, &'static str),
        topo: Topo,
        (encap_name, encap): (&str, Encap),
        esn_start: Option<u64>,
        n: usize,
        rng: &mut Rng,
    ) -> Case {
        let enc: EncAlg = enc_name.parse().expect("the engine knows the algorithm");
        let auth: AuthAlg = auth_name.parse().expect("the engine knows the algorithm");
        let enc_key = rng.bytes(enc.keymat_len());
        let auth_key = rng.bytes(auth.key_len());
        let esn = esn_start.is_some();
        let tag = format!(
            "{enc_name}/{auth_name}/{}/{encap_name}{}",
            topo.name,
            if esn { "/esn" } else { "" }
        );
        let (lo, ro) = (ip(topo.outer.0), ip(topo.outer.1));
        let mut cfg = match topo.mode {
            Mode::Tunnel => SaConfig::tunnel(
                spi,
                Direction::Outbound,
                lo,
                ro,
                enc,
                &enc_key,
                auth,
                &auth_key,
            ),
            Mode::Transport => {
                SaConfig::transport(spi, Direction::Outbound, enc, &enc_key, auth, &auth_key)
            }
        };
        let reqid = u32::try_from(idx + 1).expect("few cases");
        cfg.reqid = reqid;
        cfg.encap = encap;
        cfg.esn = esn;
        cfg.allow_legacy =
            enc == EncAlg::TripleDesCbc || (auth == AuthAlg::None && !enc.is_combined());
        cfg.name = tag.clone();
        let mut engine = protect_all_engine(reqid);
        let h = engine
            .add_sa(&cfg, Timestamp::ZERO)
            .unwrap_or_else(|e| panic!("{tag}: add_sa: {e}"));
        let first = esn_start.unwrap_or(0);
        if let Some(s) = esn_start {
            engine.sa_mut(h).expect("the SA is installed").set_seq(s);
        }
        let (li, ri) = (ip(topo.inner.0), ip(topo.inner.1));
        let mut packets = Vec::with_capacity(n);
        for k in 0..n {
            // Sizes that move the padding around: the bare name, a few bytes more, a lot more.
            let extra =
                [0, 1 + (idx * 7 + k) % 23, 100 + (idx * 11 + k) % 64][k % 3] + 150 * (k / 3);
            let name = format!("xsec {tag} #{}", k + 1);
            let plain = ip_udp(
                li,
                ri,
                1111,
                5000,
                (idx * 8 + k) as u16,
                &payload(&name, name.len() + extra),
            );
            let esp = outbound(&mut engine, Timestamp::ZERO, &plain)
                .unwrap_or_else(|v| panic!("{tag}: engine.outbound: {v:?}"));
            packets.push(Sent {
                plain,
                esp,
                seq: first + 1 + k as u64,
            });
        }
        Case {
            tag,
            spi,
            enc_name,
            auth_name,
            enc,
            auth,
            enc_key,
            auth_key,
            topo,
            esn,
            packets,
        }
    }

    fn mode(&self) -> &'static str {
        self.topo.mode.name()
    }

    /// The entry of esp_tool.py's `--sa-json` file.
    fn esp_tool_sa(&self) -> Value {
        json!({
            "spi": self.spi,
            "mode": self.mode(),
            "esp_tool": ["--enc", self.enc_name, "--enc-key", hex(&self.enc_key),
                         "--auth", self.auth_name, "--auth-key", hex(&self.auth_key)],
        })
    }

    /// The entry of esp_check.py's `--sas` file.
    fn esp_check_sa(&self) -> Value {
        json!({
            "spi": self.spi, "mode": self.mode(), "esn": self.esn,
            "enc": self.enc_name, "enc_key": hex(&self.enc_key),
            "auth": self.auth_name, "auth_key": hex(&self.auth_key),
        })
    }

    /// The line of Wireshark's `esp_sa` file, if tshark can decrypt this SA.
    fn uat(&self) -> Option<String> {
        if self.esn {
            return None; // no ESN in Wireshark 4.0's esp_sa table
        }
        if self.auth == AuthAlg::None && !self.enc.is_combined() {
            // confidentiality-only ESP: no ICV for tshark_decrypt.sh's "good ICV" verdict
            // (esp_check.py decrypts and checks these)
            return None;
        }
        Some(uat_line(
            ip(self.topo.outer.0),
            ip(self.topo.outer.1),
            self.spi,
            wireshark_enc(self.enc)?,
            &self.enc_key,
            wireshark_auth(self.auth)?,
            &self.auth_key,
        ))
    }
}

/// Packets of `cases` in order, with their case and index.
fn all_packets(cases: &[Case]) -> Vec<Item<'_>> {
    cases
        .iter()
        .flat_map(|c| c.packets.iter().map(move |p| (c, p)))
        .collect()
}

fn write_esp_sa(path: &Path, lines: &[String]) {
    fs::write(path, format!("{UAT_HEADER}{}\n", lines.join("\n"))).expect("write esp_sa");
}

/// Run `tshark_decrypt.sh --check` and require every one of `expect` ESP packets to be
/// decrypted with a good ICV.
fn tshark_check(h: &Harness, pcap: &Path, esp_sa: &Path, expect: usize, what: &str) {
    let run = h.tshark_decrypt(&[
        pcap.as_os_str(),
        "--keys".as_ref(),
        esp_sa.as_os_str(),
        "--udp-port".as_ref(),
        "2746".as_ref(),
        "--check".as_ref(),
    ]);
    let want = format!("tshark: {expect}/{expect} ESP packets decrypted with a good ICV");
    let bad: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('#') && !l.contains(": ok ("))
        .collect();
    assert!(
        run.ok() && run.stdout.lines().any(|l| l == want),
        "{what}: tshark does not accept every engine packet (want {want:?}); packets it rejects:\n{}\n\n{run}",
        bad.join("\n")
    );
    println!("{what}: {want}");
}

/// Run tshark directly and check, for every ESP packet, the fields of the decrypted packet:
/// a good ICV, the next header, the inner addresses, the inner UDP length and the inner
/// checksums (IPv4 header, UDP), which tshark verifies over the decrypted bytes.
fn tshark_fields(dir: &TempDir, pcap: &Path, esp_sa: &Path, packets: &[Item<'_>]) {
    let conf = dir.join("wireshark");
    fs::create_dir_all(&conf).expect("mkdir");
    fs::copy(esp_sa, conf.join("esp_sa")).expect("copy esp_sa");
    let mut c = Command::new("tshark");
    c.env("WIRESHARK_CONFIG_DIR", &conf)
        .arg("-n")
        .arg("-r")
        .arg(pcap);
    for o in [
        "esp.enable_encryption_decode:TRUE",
        "esp.enable_authentication_check:TRUE",
        "ip.check_checksum:TRUE",
        "udp.check_checksum:TRUE",
    ] {
        c.args(["-o", o]);
    }
    c.args(["-d", "udp.port==2746,udpencap", "-Y", "esp", "-T", "fields"]);
    c.args([
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    const FIELDS: [&str; 14] = [
        "frame.number",
        "esp.spi",
        "esp.sequence",
        "esp.icv_good",
        "esp.protocol",
        "ip.src",
        "ip.dst",
        "ip.checksum.status",
        "ipv6.src",
        "ipv6.dst",
        "udp.srcport",
        "udp.dstport",
        "udp.length",
        "udp.checksum.status",
    ];
    for f in FIELDS {
        c.args(["-e", f]);
    }
    let run = Run::exec(c);
    assert!(run.ok(), "tshark failed:\n{run}");
    let rows: BTreeMap<usize, Vec<&str>> = run
        .stdout
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((cols.first()?.parse().ok()?, cols))
        })
        .collect();
    let last = |cols: &[&str], i: usize| -> String {
        cols.get(i)
            .and_then(|v| v.rsplit(',').next())
            .unwrap_or("")
            .to_string()
    };
    let mut failures = Vec::new();
    for (i, (case, Sent { plain, esp, seq })) in packets.iter().enumerate() {
        let n = i + 1;
        let v6 = plain[0] >> 4 == 6;
        let hl = if v6 { 40 } else { 20 };
        let (src, dst) = if v6 {
            (addr_string(&plain[8..24]), addr_string(&plain[24..40]))
        } else {
            (addr_string(&plain[12..16]), addr_string(&plain[16..20]))
        };
        let nh = match (case.topo.mode, v6) {
            (Mode::Tunnel, false) => 4,
            (Mode::Tunnel, true) => 41,
            (Mode::Transport, _) => 17,
        };
        let mut want = vec![
            (1, format!("0x{:08x}", case.spi)),
            (2, seq.to_string()),
            (3, "1".to_string()),
            (4, format!("0x{nh:02x}")),
            (11, "5000".to_string()),
            (12, (plain.len() - hl).to_string()),
            (13, "1".to_string()),
        ];
        if v6 {
            want.extend([(8, src), (9, dst)]);
        } else {
            want.extend([(5, src), (6, dst), (7, "1".to_string())]);
        }
        let problem = match rows.get(&n) {
            None => Some("tshark printed no line for this ESP packet".to_string()),
            Some(cols) => {
                let bad: Vec<String> = want
                    .iter()
                    .filter(|(i, w)| last(cols, *i) != *w)
                    .map(|(i, w)| {
                        format!(
                            "{} = {:?}, want {w}",
                            FIELDS[*i],
                            cols.get(*i).unwrap_or(&"")
                        )
                    })
                    .collect();
                (!bad.is_empty()).then(|| bad.join("; "))
            }
        };
        if let Some(p) = problem {
            failures.push(format!(
                "#{n} {} (spi 0x{:08x}): {p}\n    esp packet: {}",
                case.tag,
                case.spi,
                hex(esp)
            ));
        }
    }
    println!(
        "tshark fields: {}/{} ESP packets decrypted and checked",
        packets.len() - failures.len(),
        packets.len()
    );
    assert!(
        failures.is_empty(),
        "tshark does not decode {}/{} engine packets as expected:\n{}",
        failures.len(),
        packets.len(),
        failures.join("\n")
    );
}

/// An address as tshark prints it with -n.
fn addr_string(b: &[u8]) -> String {
    match b.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes")).to_string(),
        _ => IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes")).to_string(),
    }
}

/// esp_tool.py's `vectors` (scapy-built ESP packets for 8 algorithm pairs x tunnel/transport x
/// raw ESP/UDP 4500/UDP 2746) go through one engine's `inbound`, each must come out as the
/// exact plaintext scapy encrypted.
#[test]
fn engine_decaps_every_esp_tool_vector() {
    let h = Harness::locate();
    let dir = TempDir::new("vectors");
    let run = h.esp_tool(&["vectors".as_ref(), "--out".as_ref(), dir.path().as_os_str()]);
    assert!(run.ok(), "esp_tool.py vectors failed:\n{run}");
    let text = fs::read_to_string(dir.join("vectors.json")).expect("vectors.json");
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("vectors.json is a JSON list");
    assert_eq!(
        vectors.len(),
        48,
        "esp_tool.py vectors should write 48 packets"
    );

    let mut engine = empty_engine();
    let mut work = Vec::new();
    for v in &vectors {
        let tag = v["tag"].as_str().expect("tag").to_string();
        let spi = u32::try_from(v["spi"].as_u64().expect("spi")).expect("32-bit SPI");
        let args: Vec<&str> = v["esp_tool"]
            .as_array()
            .expect("esp_tool")
            .iter()
            .map(|a| a.as_str().expect("str"))
            .collect();
        let arg: BTreeMap<&str, &str> = args
            .chunks(2)
            .map(|c| (c[0], c.get(1).copied().unwrap_or("")))
            .collect();
        let enc: EncAlg = arg["--enc"]
            .parse()
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        let auth: AuthAlg = arg["--auth"]
            .parse()
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        let (ek, ak) = (unhex(arg["--enc-key"]), unhex(arg["--auth-key"]));
        let mut cfg = match v["mode"].as_str() {
            Some("tunnel") => SaConfig::tunnel(
                spi,
                Direction::Inbound,
                ip("10.0.0.2"),
                ip("10.0.0.1"),
                enc,
                &ek,
                auth,
                &ak,
            ),
            Some("transport") => SaConfig::transport(spi, Direction::Inbound, enc, &ek, auth, &ak),
            m => panic!("{tag}: unknown mode {m:?}"),
        };
        cfg.reqid = spi;
        // Accept any inner packet: an inbound SA without selectors accepts nothing.
        cfg.selectors = vec![Selector::ANY];
        if let Some(ports) = v["udp"].as_array() {
            // esp_tool.py is the peer: its source port is our remote port.
            let port = |i: usize| u16::try_from(ports[i].as_u64().expect("port")).expect("port");
            cfg.encap = Encap::Udp {
                local_port: port(1),
                remote_port: port(0),
            };
        }
        engine
            .add_sa(&cfg, Timestamp::ZERO)
            .unwrap_or_else(|e| panic!("{tag}: add_sa: {e}"));
        work.push((
            tag,
            v["esp_packet_hex"].as_str().expect("hex"),
            v["inner_hex"].as_str().expect("hex"),
        ));
    }

    let mut failures = Vec::new();
    for (tag, esp_hex, inner_hex) in &work {
        match inbound(&mut engine, Timestamp::ZERO, &unhex(esp_hex)) {
            Ok(inner) if hex(&inner) == *inner_hex => {}
            Ok(inner) => failures.push(format!(
                "{tag}: decapsulated packet differs\n  got  {}\n  want {inner_hex}\n  esp  {esp_hex}",
                hex(&inner)
            )),
            Err(v) => failures.push(format!("{tag}: verdict {v:?}\n  esp  {esp_hex}")),
        }
    }
    let passed = work.len() - failures.len();
    println!(
        "engine decapsulated {passed}/{} esp_tool.py vectors",
        work.len()
    );
    assert!(
        failures.is_empty(),
        "engine decapsulated only {passed}/{} esp_tool.py vectors:\n{}",
        work.len(),
        failures.join("\n")
    );
}

/// The engine encapsulates with every algorithm esp_tool.py knows x tunnel/transport x raw
/// ESP/UDP 4500/UDP 2746, 3 packets each; esp_tool.py (own parser + scapy's
/// SecurityAssociation.decrypt) and tshark must decrypt all of them.
#[test]
fn esp_tool_and_tshark_accept_engine_packets() {
    let h = Harness::locate();
    let dir = TempDir::new("esp-tool");
    let mut rng = Rng(0x5eed_0002);
    let mut cases = Vec::new();
    for &alg in ESP_TOOL_ALGS {
        for topo in [T4IN4, X4] {
            for &encap in ENCAPS {
                let idx = cases.len();
                let spi = 0x0002_0000 + u32::try_from(idx).expect("few cases");
                cases.push(Case::build(idx, spi, alg, topo, encap, None, 3, &mut rng));
            }
        }
    }
    let packets = all_packets(&cases);
    let pcap = dir.join("engine.pcap");
    write_pcap(&pcap, &esp_packets(&packets)).expect("write pcap");
    let sas = dir.write(
        "sas.json",
        serde_json::to_string_pretty(&cases.iter().map(Case::esp_tool_sa).collect::<Vec<_>>())
            .expect("json"),
    );
    let esp_sa = dir.join("esp_sa");
    write_esp_sa(
        &esp_sa,
        &cases
            .iter()
            .map(|c| c.uat().expect("tshark knows it"))
            .collect::<Vec<_>>(),
    );

    // esp_tool.py: one run for every packet.
    let run = h.esp_tool(&[
        "decrypt".as_ref(),
        "--sa-json".as_ref(),
        sas.as_os_str(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--udp-port".as_ref(),
        "4500".as_ref(),
        "--udp-port".as_ref(),
        "2746".as_ref(),
        "--show-hex".as_ref(),
    ]);
    let lines = packet_lines(&run.stdout);
    let mut failures = Vec::new();
    for (i, (case, Sent { plain, esp, seq })) in packets.iter().enumerate() {
        let n = i + 1;
        let problem = match lines.get(&n) {
            None => Some("no output line for this packet".to_string()),
            Some((line, _)) if !line.ends_with("ok, scapy SA.decrypt agrees") => Some(line.clone()),
            Some((line, _)) if !line.contains(&format!(" seq={seq} ")) => {
                Some(format!("want seq={seq}: {line}"))
            }
            Some((line, extra)) => {
                let want = format!("inner hex: {}", hex(plain));
                (!extra.contains(&want))
                    .then(|| format!("{line}\n    {}\n    want {want}", extra.join("\n    ")))
            }
        };
        if let Some(p) = problem {
            failures.push(format!(
                "#{n} {} (spi 0x{:08x}): {p}\n    esp packet: {}",
                case.tag,
                case.spi,
                hex(esp)
            ));
        }
    }
    let passed = packets.len() - failures.len();
    println!(
        "esp_tool.py: {passed}/{} engine packets ({} SAs) decrypted",
        packets.len(),
        cases.len()
    );
    assert!(
        failures.is_empty() && run.ok(),
        "esp_tool.py accepted only {passed}/{} engine packets (exit {:?}):\n{}\n\nstderr:\n{}",
        packets.len(),
        run.code,
        failures.join("\n"),
        run.stderr
    );

    // tshark: one run for every packet.
    tshark_check(&h, &pcap, &esp_sa, packets.len(), "esp_tool algorithms");
}

/// 3DES-CBC + HMAC, IPv6 outer (tunnel fd00::1 -> fd00::2 with IPv4 and IPv6 inside, IPv6
/// transport) and IPv6 inside IPv4, checked by tshark; ChaCha20-Poly1305 (RFC 7634),
/// AES-GMAC (RFC 4543) and ESN, which tshark 4.0 cannot decrypt, checked by esp_check.py,
/// which re-checks the tshark packets too.
#[test]
fn tshark_accepts_algorithms_esp_tool_lacks() {
    let h = Harness::locate();
    let dir = TempDir::new("tshark");
    let mut rng = Rng(0x5eed_0003);
    let mut cases = Vec::new();
    let mut add = |alg, topo, encap, esn: Option<u64>, n| {
        let idx = cases.len();
        let spi = 0x0003_0000 + u32::try_from(idx).expect("few cases");
        cases.push(Case::build(idx, spi, alg, topo, encap, esn, n, &mut rng));
    };
    for &alg in OTHER_ALGS {
        for topo in [T4IN4, T6IN4, T4IN6, T6IN6, X4, X6] {
            for &encap in ENCAPS {
                add(alg, topo, encap, None, 2);
            }
        }
    }
    // IPv4-only in v4 tunnels and transport is test 2's job.
    for &alg in ESP_TOOL_ALGS {
        for topo in [T6IN4, T4IN6, T6IN6, X6] {
            for &encap in ENCAPS {
                add(alg, topo, encap, None, 2);
            }
        }
    }
    // ESN across the 2^32 boundary: sequence numbers 2^32 - 1, 2^32, 2^32 + 1.
    for alg in [
        ("aes-gcm-128", "none"),
        ("chacha20-poly1305", "none"),
        ("aes-gmac-256", "none"),
        ("aes-cbc-128", "hmac-sha256-128"),
        ("3des-cbc", "hmac-sha1-96"),
        ("null", "hmac-sha512-256"),
        ("aes-cbc-256", "aes-cmac-96"),
    ] {
        add(alg, T4IN4, ENCAPS[0], Some(0xffff_fffe), 3);
        add(alg, T6IN6, ENCAPS[1], Some(0xffff_fffe), 3);
        add(alg, X4, ENCAPS[2], Some(0xffff_fffe), 3);
    }

    // tshark: every case it has algorithms for. tshark_decrypt.sh --check cannot judge IPv4
    // inside IPv6 (it finds the inner packet by comparing the outer and inner `ip.src`, and an
    // IPv6 outer header has none): those go only through the field check, which checks every
    // tshark packet in more detail anyway.
    let ts: Vec<&Case> = cases.iter().filter(|c| c.uat().is_some()).collect();
    let esp_sa = dir.join("esp_sa");
    write_esp_sa(
        &esp_sa,
        &ts.iter().filter_map(|c| c.uat()).collect::<Vec<_>>(),
    );
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for c in &ts {
        *by_kind
            .entry(format!("{}/{}", c.enc_name, c.auth_name))
            .or_default() += c.packets.len();
    }
    let judged: Vec<Vec<u8>> = ts
        .iter()
        .filter(|c| c.topo.name != T4IN6.name)
        .flat_map(|c| c.packets.iter().map(|p| p.esp.clone()))
        .collect();
    let check_pcap = dir.join("tshark-check.pcap");
    write_pcap(&check_pcap, &judged).expect("write pcap");
    tshark_check(&h, &check_pcap, &esp_sa, judged.len(), "3DES + IPv6");
    let ts_packets: Vec<_> = ts
        .iter()
        .flat_map(|c| c.packets.iter().map(move |p| (*c, p)))
        .collect();
    let ts_pcap = dir.join("tshark-all.pcap");
    write_pcap(&ts_pcap, &esp_packets(&ts_packets)).expect("write pcap");
    tshark_fields(&dir, &ts_pcap, &esp_sa, &ts_packets);
    println!(
        "tshark checked {} packets of {} SAs: {by_kind:?}",
        ts_packets.len(),
        ts.len()
    );

    // esp_check.py: every packet, including those tshark saw.
    let packets = all_packets(&cases);
    let pcap = dir.join("all.pcap");
    write_pcap(&pcap, &esp_packets(&packets)).expect("write pcap");
    let sas = dir.write(
        "esp_check_sas.json",
        serde_json::to_string_pretty(&cases.iter().map(Case::esp_check_sa).collect::<Vec<_>>())
            .expect("json"),
    );
    let run = h.python_script(
        &crate_file("esp_check.py"),
        &[
            "--pcap".as_ref(),
            pcap.as_os_str(),
            "--sas".as_ref(),
            sas.as_os_str(),
            "--udp-port".as_ref(),
            "4500".as_ref(),
            "--udp-port".as_ref(),
            "2746".as_ref(),
        ],
    );
    let lines = packet_lines(&run.stdout);
    let mut failures = Vec::new();
    for (i, (case, Sent { plain, esp, seq })) in packets.iter().enumerate() {
        let n = i + 1;
        let problem = match lines.get(&n) {
            None => Some("no output line for this packet".to_string()),
            Some((line, _)) if !line.contains(" ok inner=") => Some(line.clone()),
            Some((line, _)) if !line.contains(&format!(" seq={seq} ")) => {
                Some(format!("want seq={seq}: {line}"))
            }
            Some((line, _)) => {
                let want = format!(" ok inner={}", hex(plain));
                (!line.ends_with(&want)).then(|| format!("{line}\n    want {want}"))
            }
        };
        if let Some(p) = problem {
            failures.push(format!(
                "#{n} {} (spi 0x{:08x}): {p}\n    esp packet: {}",
                case.tag,
                case.spi,
                hex(esp)
            ));
        }
    }
    let want = format!("{} passed, 0 failed", packets.len());
    println!(
        "esp_check.py: {}/{} engine packets ({} SAs, {} with ESN) decrypted",
        packets.len() - failures.len(),
        packets.len(),
        cases.len(),
        cases.iter().filter(|c| c.esn).count()
    );
    assert!(
        failures.is_empty() && run.ok() && run.stdout.lines().any(|l| l == want),
        "esp_check.py rejects engine packets (want {want:?}):\n{}\n\n{run}",
        failures.join("\n")
    );
}
