//! xsecd configurations for the lab, built in Rust so that tests can vary algorithm, mode and
//! encapsulation (schema: docs/config.md).
//!
//! [`GatewayConf`] is one gateway's file; [`Pair`] the two matching files of a scenario, with
//! the same SAs seen from outside ([`EspSa`]): `esp_tool.py` arguments and Wireshark `esp_sa`
//! lines, so that the capture of the middle link can be decrypted independently.
//!
//! SPIs: traffic A->B uses 0x1001 (0x1002 for IPv6 in transport mode), B->A 0x2001 (0x2002).
//! Keys come from a seeded generator: reproducible, and different per direction.

use std::fmt::Write as _;

use crate::topo::{Node, Wan, addr};

/// The algorithms the lab configures (those esp_tool.py and tshark both know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// AES-GCM-128, 16-byte ICV (RFC 4106): 16-byte key + 4-byte salt.
    AesGcm128,
    /// AES-CBC-128 (RFC 3602) + HMAC-SHA1-96 (RFC 2404).
    AesCbc128Sha1,
    /// AES-CBC-128 + HMAC-SHA256-128 (RFC 4868).
    AesCbc128Sha256,
    /// AES-GCM-256, 16-byte ICV (RFC 4106): 32-byte key + 4-byte salt.
    AesGcm256,
    /// ChaCha20-Poly1305 (RFC 7634): 32-byte key + 4-byte salt.
    Chacha20Poly1305,
}

impl Alg {
    /// Every algorithm the lab configures.
    pub const ALL: [Alg; 5] = [
        Alg::AesGcm128,
        Alg::AesGcm256,
        Alg::AesCbc128Sha1,
        Alg::AesCbc128Sha256,
        Alg::Chacha20Poly1305,
    ];

    /// A short name (strongSwan's proposal keywords).
    pub fn name(self) -> &'static str {
        match self {
            Alg::AesGcm128 => "aes128gcm16",
            Alg::AesGcm256 => "aes256gcm16",
            Alg::AesCbc128Sha1 => "aes128-sha1",
            Alg::AesCbc128Sha256 => "aes128-sha256",
            Alg::Chacha20Poly1305 => "chacha20poly1305",
        }
    }

    /// The algorithm of a short name.
    pub fn from_name(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == s)
    }

    /// `encryption` in the config (also esp_tool.py's `--enc`).
    pub fn encryption(self) -> &'static str {
        match self {
            Alg::AesGcm128 => "aes-gcm-128",
            Alg::AesGcm256 => "aes-gcm-256",
            Alg::Chacha20Poly1305 => "chacha20poly1305",
            Alg::AesCbc128Sha1 | Alg::AesCbc128Sha256 => "aes-cbc-128",
        }
    }

    /// `integrity` in the config (also esp_tool.py's `--auth`), `None` for AEAD.
    pub fn integrity(self) -> Option<&'static str> {
        match self {
            Alg::AesGcm128 | Alg::AesGcm256 | Alg::Chacha20Poly1305 => None,
            Alg::AesCbc128Sha1 => Some("hmac-sha1-96"),
            Alg::AesCbc128Sha256 => Some("hmac-sha256-128"),
        }
    }

    /// Encryption key bytes (AES-GCM: key + salt).
    pub fn enc_key_len(self) -> usize {
        match self {
            Alg::AesGcm128 => 20,
            Alg::AesGcm256 | Alg::Chacha20Poly1305 => 36,
            Alg::AesCbc128Sha1 | Alg::AesCbc128Sha256 => 16,
        }
    }

    pub fn auth_key_len(self) -> usize {
        match self {
            Alg::AesGcm128 | Alg::AesGcm256 | Alg::Chacha20Poly1305 => 0,
            Alg::AesCbc128Sha1 => 20,
            Alg::AesCbc128Sha256 => 32,
        }
    }

    /// The names in Wireshark 4.0's `esp_sa` table (encryption, authentication).
    pub fn wireshark(self) -> (&'static str, &'static str) {
        match self {
            Alg::AesGcm128 | Alg::AesGcm256 => ("AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
            Alg::Chacha20Poly1305 => ("ChaCha20 with Poly1305 [RFC7634]", "NULL"),
            Alg::AesCbc128Sha1 => ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]"),
            Alg::AesCbc128Sha256 => ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]"),
        }
    }
}

/// ESP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tunnel,
    Transport,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tunnel => "tunnel",
            Mode::Transport => "transport",
        }
    }
}

/// How ESP travels between the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// IP protocol 50.
    None,
    /// RFC 3948 UDP encapsulation on port 4500.
    NatT,
    /// ESP-in-UDP on a given port (2746 by default).
    Udp(u16),
}

impl Encap {
    pub fn name(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::NatT => "nat-t",
            Encap::Udp(_) => "udp",
        }
    }

    /// The UDP port, if any.
    pub fn port(self) -> Option<u16> {
        match self {
            Encap::None => None,
            Encap::NatT => Some(4500),
            Encap::Udp(p) => Some(p),
        }
    }
}

/// One `[[sa]]`.
#[derive(Debug, Clone)]
pub struct SaConf {
    pub name: String,
    pub mode: Mode,
    pub local: String,
    pub remote: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub alg: Alg,
    pub enc_key_in: Vec<u8>,
    pub enc_key_out: Vec<u8>,
    pub auth_key_in: Vec<u8>,
    pub auth_key_out: Vec<u8>,
    pub encap: Encap,
    /// Heartbeat interval in seconds on UDP encapsulation (0 = off).
    pub keepalive: u32,
    /// `replay_window` (inbound); `None`: xsecd's default.
    pub replay_window: Option<u32>,
    /// AH (RFC 4302, `protocol = "ah"`) instead of ESP: integrity only, with `alg`'s HMAC
    /// (an AES-CBC + HMAC algorithm) and the `auth_key`s.
    pub ah: bool,
    /// AH's integrity algorithm instead of `alg`'s HMAC (e.g. `aes-gmac-128`, which takes a
    /// 20-byte `auth_key`: the AES key and salt).
    pub ah_integrity: Option<&'static str>,
    /// IPComp (RFC 3173, `protocol = "ipcomp"`) with this algorithm (`deflate`, `lzs`)
    /// instead of ESP: no keys, the well-known CPI both ways.
    pub ipcomp: Option<&'static str>,
}

/// A policy's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Protect(String),
    /// PROTECT with an SA bundle: the pairs in the order they are applied outbound.
    ProtectBundle(Vec<String>),
    Bypass,
    Discard,
}

/// One `[[policy]]`.
#[derive(Debug, Clone)]
pub struct PolicyConf {
    pub name: String,
    /// `out`, `in` or `both`.
    pub direction: String,
    pub local: String,
    pub remote: String,
    /// `any`, `icmp`, `tcp`, `udp`, `icmpv6` or a number.
    pub protocol: String,
    pub local_port: String,
    pub remote_port: String,
    pub action: Action,
}

impl PolicyConf {
    /// A `both` policy for any protocol and port.
    pub fn new(name: &str, local: &str, remote: &str, action: Action) -> PolicyConf {
        PolicyConf {
            name: name.to_owned(),
            direction: "both".to_owned(),
            local: local.to_owned(),
            remote: remote.to_owned(),
            protocol: "any".to_owned(),
            local_port: "any".to_owned(),
            remote_port: "any".to_owned(),
            action,
        }
    }

    pub fn protocol(mut self, p: &str) -> PolicyConf {
        self.protocol = p.to_owned();
        self
    }

    pub fn local_port(mut self, p: u16) -> PolicyConf {
        self.local_port = p.to_string();
        self
    }

    pub fn remote_port(mut self, p: u16) -> PolicyConf {
        self.remote_port = p.to_string();
        self
    }
}

/// One gateway's configuration file.
#[derive(Debug, Clone)]
pub struct GatewayConf {
    pub unprotected: String,
    pub protected: String,
    pub queues: Vec<u16>,
    /// Worker `i`'s core (`cores` in the config); empty: not pinned.
    pub cores: Vec<usize>,
    /// `skb` or `driver`.
    pub xdp_mode: String,
    /// `adaptive` (the lab's default: two cores are shared by everything) or `busy`.
    pub idle: String,
    pub inbound_default: String,
    /// `allow_non_policy`: packets no policy matches pass, both ways.
    pub allow_non_policy: bool,
    /// `uncovered_queues`: RX queues deliberately left without a worker.
    pub uncovered_queues: Vec<u16>,
    /// More `[gateway]` lines, as written (e.g. `icmp_rate = 10`).
    pub gateway_extra: Vec<String>,
    pub stats_interval_ms: u32,
    pub sas: Vec<SaConf>,
    /// In order: the first match wins.
    pub policies: Vec<PolicyConf>,
    /// `[control] metrics = "ADDR:PORT"`: serve OpenMetrics over HTTP.
    pub metrics: Option<String>,
    /// `[control] group`: a group that may use the control socket too.
    pub control_group: Option<String>,
}

impl Default for GatewayConf {
    fn default() -> GatewayConf {
        GatewayConf {
            unprotected: "wan0".to_owned(),
            protected: "lan0".to_owned(),
            queues: vec![0],
            cores: vec![],
            xdp_mode: "skb".to_owned(),
            idle: "adaptive".to_owned(),
            inbound_default: "discard".to_owned(),
            allow_non_policy: false,
            uncovered_queues: vec![],
            gateway_extra: vec![],
            stats_interval_ms: 500,
            sas: vec![],
            policies: vec![],
            metrics: None,
            control_group: None,
        }
    }
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn key(k: &[u8]) -> String {
    q(&format!("0x{}", hex::encode(k)))
}

impl GatewayConf {
    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::from("# generated by xsec-lab\n[gateway]\n");
        let queues: Vec<String> = self.queues.iter().map(u16::to_string).collect();
        let _ = writeln!(s, "unprotected = {}", q(&self.unprotected));
        let _ = writeln!(s, "protected = {}", q(&self.protected));
        let _ = writeln!(s, "queues = [{}]", queues.join(", "));
        if !self.cores.is_empty() {
            let cores: Vec<String> = self.cores.iter().map(usize::to_string).collect();
            let _ = writeln!(s, "cores = [{}]", cores.join(", "));
        }
        let _ = writeln!(s, "xdp_mode = {}", q(&self.xdp_mode));
        let _ = writeln!(s, "idle = {}", q(&self.idle));
        if self.allow_non_policy {
            s.push_str("allow_non_policy = true\n");
        } else {
            let _ = writeln!(s, "inbound_default = {}", q(&self.inbound_default));
        }
        if !self.uncovered_queues.is_empty() {
            let u: Vec<String> = self.uncovered_queues.iter().map(u16::to_string).collect();
            let _ = writeln!(s, "uncovered_queues = [{}]", u.join(", "));
        }
        for l in &self.gateway_extra {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "stats_interval_ms = {}", self.stats_interval_ms);
        if self.metrics.is_some() || self.control_group.is_some() {
            s.push_str("\n[control]\n");
        }
        if let Some(m) = &self.metrics {
            let _ = writeln!(s, "metrics = {}", q(m));
        }
        if let Some(g) = &self.control_group {
            let _ = writeln!(s, "group = {}", q(g));
        }
        for sa in &self.sas {
            let _ = writeln!(s, "\n[[sa]]");
            let _ = writeln!(s, "name = {}", q(&sa.name));
            let _ = writeln!(s, "mode = {}", q(sa.mode.name()));
            let _ = writeln!(s, "local = {}", q(&sa.local));
            let _ = writeln!(s, "remote = {}", q(&sa.remote));
            if let Some(c) = sa.ipcomp {
                let _ = writeln!(s, "protocol = \"ipcomp\"\ncompression = {}", q(c));
                continue;
            }
            let _ = writeln!(s, "spi_in = {:#x}", sa.spi_in);
            let _ = writeln!(s, "spi_out = {:#x}", sa.spi_out);
            if sa.ah {
                s.push_str("protocol = \"ah\"\n");
            } else {
                let _ = writeln!(s, "encryption = {}", q(sa.alg.encryption()));
                let _ = writeln!(s, "enc_key_in = {}", key(&sa.enc_key_in));
                let _ = writeln!(s, "enc_key_out = {}", key(&sa.enc_key_out));
            }
            if let Some(i) = sa.ah_integrity.filter(|_| sa.ah).or(sa.alg.integrity()) {
                let _ = writeln!(s, "integrity = {}", q(i));
                let _ = writeln!(s, "auth_key_in = {}", key(&sa.auth_key_in));
                let _ = writeln!(s, "auth_key_out = {}", key(&sa.auth_key_out));
            }
            let _ = writeln!(s, "encap = {}", q(sa.encap.name()));
            if let Encap::Udp(p) = sa.encap {
                let _ = writeln!(s, "udp_local_port = {p}");
                let _ = writeln!(s, "udp_remote_port = {p}");
            }
            if sa.encap != Encap::None {
                let _ = writeln!(s, "keepalive = {}", sa.keepalive);
            }
            if let Some(w) = sa.replay_window {
                let _ = writeln!(s, "replay_window = {w}");
            }
        }
        for p in &self.policies {
            let _ = writeln!(s, "\n[[policy]]");
            let _ = writeln!(s, "name = {}", q(&p.name));
            let _ = writeln!(s, "direction = {}", q(&p.direction));
            let _ = writeln!(s, "local = {}", q(&p.local));
            let _ = writeln!(s, "remote = {}", q(&p.remote));
            let _ = writeln!(s, "protocol = {}", q(&p.protocol));
            let _ = writeln!(s, "local_port = {}", q(&p.local_port));
            let _ = writeln!(s, "remote_port = {}", q(&p.remote_port));
            match &p.action {
                Action::Protect(sa) => {
                    let _ = writeln!(s, "action = \"protect\"\nsa = {}", q(sa));
                }
                Action::ProtectBundle(sas) => {
                    let names: Vec<String> = sas.iter().map(|n| q(n)).collect();
                    let _ = writeln!(s, "action = \"protect\"\nbundle = [{}]", names.join(", "));
                }
                Action::Bypass => s.push_str("action = \"bypass\"\n"),
                Action::Discard => s.push_str("action = \"discard\"\n"),
            }
        }
        s
    }
}

/// Seeded pseudo-random numbers (keys, fuzz frames; the tests' too): fastrand's generator,
/// whose whole state is the `u64` here, so `Rng(seed)` starts a reproducible sequence.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Draw with fastrand's generator from this state, and keep the state it leaves.
    fn draw<T>(&mut self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        let mut r = fastrand::Rng::with_seed(self.0);
        let v = f(&mut r);
        self.0 = r.get_seed();
        v
    }

    pub fn next_u64(&mut self) -> u64 {
        self.draw(|r| r.u64(..))
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        self.draw(|r| {
            let mut v = vec![0; n];
            r.fill(&mut v);
            v
        })
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw(|r| r.u64(..n.max(1)))
    }
}

/// One SA as it appears on the middle link.
#[derive(Debug, Clone)]
pub struct EspSa {
    /// The SA's name in both configs.
    pub name: String,
    /// The gateway that encrypts with it.
    pub sender: Node,
    pub spi: u32,
    /// Outer source and destination as captured on the middle link (gwA is 10.0.0.1 there,
    /// also behind the NAT).
    pub src: String,
    pub dst: String,
    pub mode: Mode,
    pub alg: Alg,
    pub enc_key: Vec<u8>,
    pub auth_key: Vec<u8>,
    pub encap: Encap,
}

impl EspSa {
    /// `--spi --enc --enc-key [--auth --auth-key] --mode` for esp_tool.py.
    pub fn esp_tool_args(&self) -> Vec<String> {
        let mut v = vec![
            "--spi".to_owned(),
            format!("{:#010x}", self.spi),
            "--enc".to_owned(),
            self.alg.encryption().to_owned(),
            "--enc-key".to_owned(),
            hex::encode(&self.enc_key),
        ];
        if let Some(a) = self.alg.integrity() {
            v.extend([
                "--auth".to_owned(),
                a.to_owned(),
                "--auth-key".to_owned(),
                hex::encode(&self.auth_key),
            ]);
        }
        v.extend(["--mode".to_owned(), self.mode.name().to_owned()]);
        v
    }

    /// Its line in Wireshark's `esp_sa` UAT file (every field a quoted string).
    pub fn uat_line(&self) -> String {
        let proto = if self.src.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        };
        let (enc, auth) = self.alg.wireshark();
        let ak = if self.auth_key.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex::encode(&self.auth_key))
        };
        format!(
            "\"{proto}\",\"{}\",\"{}\",\"{:#010x}\",\"{enc}\",\"0x{}\",\"{auth}\",\"{ak}\"",
            self.src,
            self.dst,
            self.spi,
            hex::encode(&self.enc_key)
        )
    }
}

/// What a scenario's two gateways run.
#[derive(Debug, Clone)]
pub struct PairOptions {
    pub mode: Mode,
    pub alg: Alg,
    pub encap: Encap,
    /// Heartbeat seconds on UDP encapsulation (0 = off).
    pub keepalive: u32,
    pub wan: Wan,
    pub seed: u64,
    pub queues: Vec<u16>,
}

impl Default for PairOptions {
    fn default() -> PairOptions {
        PairOptions {
            mode: Mode::Tunnel,
            alg: Alg::AesGcm128,
            encap: Encap::None,
            keepalive: 0,
            wan: Wan::Direct,
            seed: 0x5eed,
            queues: vec![0],
        }
    }
}

/// One SA pair of a scenario: its endpoints as gwA and gwB name them, SPIs, and the policy
/// selectors (name, gwA's side, gwB's side) that use it.
struct SaPlan {
    name: &'static str,
    ep_a: &'static str,
    ep_b: &'static str,
    spi_ab: u32,
    spi_ba: u32,
    selectors: Vec<(&'static str, &'static str, &'static str)>,
}

/// The two gateway configurations of a scenario and its SAs.
#[derive(Debug, Clone)]
pub struct Pair {
    pub opts: PairOptions,
    pub a: GatewayConf,
    pub b: GatewayConf,
    pub sas: Vec<EspSa>,
}

impl Pair {
    pub fn new(opts: PairOptions) -> Pair {
        use addr::*;
        let mut rng = Rng(opts.seed);
        let mut a = GatewayConf {
            queues: opts.queues.clone(),
            ..GatewayConf::default()
        };
        let mut b = a.clone();
        let mut sas = vec![];
        let gwa_local = match opts.wan {
            Wan::Direct => GWA_WAN,
            Wan::Nat => GWA_PRIVATE,
        };
        let plan = |name, ep_a, ep_b, spi_ab, spi_ba, selectors| SaPlan {
            name,
            ep_a,
            ep_b,
            spi_ab,
            spi_ba,
            selectors,
        };
        let plans: Vec<SaPlan> = match opts.mode {
            Mode::Tunnel => vec![plan(
                "ab",
                gwa_local,
                GWB_WAN,
                0x1001,
                0x2001,
                vec![("lan-lan", NET_A, NET_B), ("lan-lan6", NET_A6, NET_B6)],
            )],
            Mode::Transport => vec![
                plan(
                    "ab",
                    HOST_A,
                    HOST_B,
                    0x1001,
                    0x2001,
                    vec![("hosts", HOST_A, HOST_B)],
                ),
                plan(
                    "ab6",
                    HOST_A6,
                    HOST_B6,
                    0x1002,
                    0x2002,
                    vec![("hosts6", HOST_A6, HOST_B6)],
                ),
            ],
        };
        for SaPlan {
            name,
            ep_a,
            ep_b,
            spi_ab,
            spi_ba,
            selectors,
        } in plans
        {
            let k_ab = rng.bytes(opts.alg.enc_key_len());
            let k_ba = rng.bytes(opts.alg.enc_key_len());
            let a_ab = rng.bytes(opts.alg.auth_key_len());
            let a_ba = rng.bytes(opts.alg.auth_key_len());
            // the address gwB sees for gwA's end: the NAT's public address in the nat lab
            let ep_a_seen = if opts.mode == Mode::Tunnel && opts.wan == Wan::Nat {
                GWA_WAN
            } else {
                ep_a
            };
            let sa = |local: &str,
                      remote: &str,
                      spi_in,
                      spi_out,
                      ki: &[u8],
                      ko: &[u8],
                      ai: &[u8],
                      ao: &[u8]| SaConf {
                name: name.to_owned(),
                mode: opts.mode,
                local: local.to_owned(),
                remote: remote.to_owned(),
                spi_in,
                spi_out,
                alg: opts.alg,
                enc_key_in: ki.to_vec(),
                enc_key_out: ko.to_vec(),
                auth_key_in: ai.to_vec(),
                auth_key_out: ao.to_vec(),
                encap: opts.encap,
                keepalive: opts.keepalive,
                replay_window: None,
                ah: false,
                ah_integrity: None,
                ipcomp: None,
            };
            a.sas
                .push(sa(ep_a, ep_b, spi_ba, spi_ab, &k_ba, &k_ab, &a_ba, &a_ab));
            b.sas.push(sa(
                ep_b, ep_a_seen, spi_ab, spi_ba, &k_ab, &k_ba, &a_ab, &a_ba,
            ));
            for (pname, la, lb) in selectors {
                let act = Action::Protect(name.to_owned());
                a.policies.push(PolicyConf::new(pname, la, lb, act.clone()));
                b.policies.push(PolicyConf::new(pname, lb, la, act));
            }
            let esp = |sender, spi, src: &str, dst: &str, k: &[u8], au: &[u8]| EspSa {
                name: name.to_owned(),
                sender,
                spi,
                src: src.to_owned(),
                dst: dst.to_owned(),
                mode: opts.mode,
                alg: opts.alg,
                enc_key: k.to_vec(),
                auth_key: au.to_vec(),
                encap: opts.encap,
            };
            sas.push(esp(Node::GwA, spi_ab, ep_a_seen, ep_b, &k_ab, &a_ab));
            sas.push(esp(Node::GwB, spi_ba, ep_b, ep_a_seen, &k_ba, &a_ba));
        }
        Pair { opts, a, b, sas }
    }

    /// Put a policy for `protocol` to and from `port` between the inner subnets (v4 and v6)
    /// in front of the others on both gateways (first match wins).
    pub fn port_policy(&mut self, name: &str, protocol: &str, port: u16, action: Action) {
        use addr::*;
        let mut front_a = vec![];
        let mut front_b = vec![];
        for (v, na, nb) in [("", NET_A, NET_B), ("6", NET_A6, NET_B6)] {
            let p = |n: &str, l: &str, r: &str| {
                PolicyConf::new(&format!("{name}{v}-{n}"), l, r, action.clone()).protocol(protocol)
            };
            front_a.push(p("to", na, nb).remote_port(port));
            front_a.push(p("from", na, nb).local_port(port));
            front_b.push(p("to", nb, na).local_port(port));
            front_b.push(p("from", nb, na).remote_port(port));
        }
        front_a.append(&mut self.a.policies);
        front_b.append(&mut self.b.policies);
        self.a.policies = front_a;
        self.b.policies = front_b;
    }

    /// Put a policy for a whole protocol (e.g. `icmp`) between the inner subnets in front.
    pub fn protocol_policy(&mut self, name: &str, protocol: &str, action: Action) {
        use addr::*;
        let pa = PolicyConf::new(name, NET_A, NET_B, action.clone()).protocol(protocol);
        let pb = PolicyConf::new(name, NET_B, NET_A, action).protocol(protocol);
        self.a.policies.insert(0, pa);
        self.b.policies.insert(0, pb);
    }

    /// The SA `sender` encrypts with (`v6`: the IPv6 transport-mode SA).
    pub fn sa(&self, sender: Node, v6: bool) -> &EspSa {
        let want = if v6 && self.opts.mode == Mode::Transport {
            "ab6"
        } else {
            "ab"
        };
        self.sas
            .iter()
            .find(|s| s.sender == sender && s.name == want)
            .unwrap_or(&self.sas[0])
    }

    /// Wireshark's `esp_sa` table for every SA of the pair.
    pub fn esp_sa_table(&self) -> String {
        let mut s = String::from("# This file is automatically generated, DO NOT MODIFY.\n");
        for sa in &self.sas {
            s.push_str(&sa.uat_line());
            s.push('\n');
        }
        s
    }

    /// The outer addresses of gwA and gwB on the middle link (where the capture runs).
    pub fn gateway_addrs(&self) -> (String, String) {
        (addr::GWA_WAN.to_owned(), addr::GWB_WAN.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_pair_mirrors_keys_and_spis() {
        let p = Pair::new(PairOptions::default());
        let (a, b) = (&p.a.sas[0], &p.b.sas[0]);
        assert_eq!((a.spi_out, a.spi_in), (0x1001, 0x2001));
        assert_eq!((b.spi_in, b.spi_out), (0x1001, 0x2001));
        assert_eq!(a.enc_key_out, b.enc_key_in);
        assert_eq!(a.enc_key_in, b.enc_key_out);
        assert_ne!(a.enc_key_in, a.enc_key_out);
        assert_eq!(a.enc_key_out.len(), 20);
        let t = p.a.to_toml();
        assert!(t.contains("spi_out = 0x1001"), "{t}");
        assert!(t.contains("encap = \"none\""), "{t}");
        assert!(!t.contains("integrity"), "{t}");
        assert!(t.contains("local = \"10.1.0.0/24\""), "{t}");
        assert_eq!(p.sa(Node::GwA, false).spi, 0x1001);
        assert!(
            p.esp_sa_table()
                .contains("\"IPv4\",\"10.0.0.1\",\"10.0.0.2\",\"0x00001001\"")
        );
    }

    #[test]
    fn nat_transport_cbc_and_policies() {
        let mut p = Pair::new(PairOptions {
            mode: Mode::Tunnel,
            alg: Alg::AesCbc128Sha256,
            encap: Encap::NatT,
            keepalive: 1,
            wan: Wan::Nat,
            ..PairOptions::default()
        });
        assert_eq!(p.a.sas[0].local, "172.16.0.2");
        assert_eq!(p.b.sas[0].remote, "10.0.0.1");
        assert_eq!(p.sa(Node::GwA, false).src, "10.0.0.1");
        p.port_policy("bypass-udp7", "udp", 7, Action::Bypass);
        assert_eq!(p.a.policies[0].remote_port, "7");
        assert_eq!(p.b.policies[0].local_port, "7");
        let t = p.b.to_toml();
        assert!(t.contains("integrity = \"hmac-sha256-128\""), "{t}");
        assert!(t.contains("encap = \"nat-t\"\nkeepalive = 1"), "{t}");
        assert!(
            p.sa(Node::GwB, false)
                .esp_tool_args()
                .contains(&"--auth-key".to_owned())
        );

        let t = Pair::new(PairOptions {
            mode: Mode::Transport,
            encap: Encap::Udp(2746),
            ..PairOptions::default()
        });
        assert_eq!(t.sas.len(), 4);
        assert_eq!(t.sa(Node::GwB, true).spi, 0x2002);
        assert_eq!(t.sa(Node::GwA, true).src, "fd01::10");
        assert!(t.a.to_toml().contains("udp_local_port = 2746"));
        assert!(t.sa(Node::GwA, true).uat_line().starts_with("\"IPv6\""));
    }

    #[test]
    fn rng_is_fastrand_from_the_seed() {
        let mut a = Rng(42);
        let mut f = fastrand::Rng::with_seed(42);
        assert_eq!(a.next_u64(), f.u64(..));
        let mut want = [0u8; 13];
        f.fill(&mut want);
        assert_eq!(a.bytes(13), want);
        assert_eq!(a.below(1000), f.u64(..1000));
        assert_eq!(Rng(7).bytes(32), Rng(7).bytes(32));
        assert_ne!(Rng(7).bytes(32), Rng(8).bytes(32));
        assert_eq!(Rng(7).below(0), 0);
    }
}
