//! SA configuration and its validation. Errors name the field so that a config loader can
//! point at file, line and field.

use crate::crypto::{self, AuthAlg, CryptoError, EncAlg};
use crate::replay::{DEFAULT_WINDOW, MAX_WINDOW};
use crate::spd::{Direction, Selector};
use core::fmt;
use core::time::Duration;
use std::net::IpAddr;
use zeroize::Zeroizing;

/// IPsec mode (RFC 4301 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Tunnel,
    Transport,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Tunnel => "tunnel",
            Mode::Transport => "transport",
        }
    }
}

/// An IPComp compression algorithm (IANA "IPCOMP Transform Identifiers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompAlg {
    /// DEFLATE (RFC 2394): raw RFC 1951 stream, no zlib header.
    Deflate,
    /// LZS (RFC 2395, ANSI X3.241-1994).
    Lzs,
}

impl CompAlg {
    pub const fn name(self) -> &'static str {
        match self {
            CompAlg::Deflate => "deflate",
            CompAlg::Lzs => "lzs",
        }
    }

    /// The transform identifier, which is also the algorithm's well-known CPI
    /// (RFC 3173 §3.3).
    pub const fn well_known_cpi(self) -> u16 {
        match self {
            CompAlg::Deflate => 2,
            CompAlg::Lzs => 3,
        }
    }

    /// Payloads shorter than this are sent uncompressed: they rarely shrink (RFC 2394
    /// §2 and RFC 2395 §2 suggest 90 and 90 bytes).
    pub const fn threshold(self) -> usize {
        90
    }
}

impl core::str::FromStr for CompAlg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "deflate" => Ok(CompAlg::Deflate),
            "lzs" => Ok(CompAlg::Lzs),
            _ => Err(format!(
                "unknown compression algorithm {s:?}; expected \"deflate\" or \"lzs\""
            )),
        }
    }
}

/// The IPsec protocol an SA applies (RFC 4301 §4.1), or IPComp (RFC 3173).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// Encapsulating Security Payload (RFC 4303).
    #[default]
    Esp,
    /// Authentication Header (RFC 4302): integrity of the payload and of the IP header's
    /// immutable fields, no confidentiality.
    Ah,
    /// IP payload compression (RFC 3173): the SPI is the CPI. No security of its own: it is
    /// meant for bundles, inside ESP or AH.
    IpComp(CompAlg),
}

impl Protocol {
    /// The name used in configuration and `show` output.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Esp => "esp",
            Protocol::Ah => "ah",
            Protocol::IpComp(_) => "ipcomp",
        }
    }

    /// The IP protocol number that carries it.
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Protocol::Esp => 50,
            Protocol::Ah => 51,
            Protocol::IpComp(_) => 108,
        }
    }
}

/// How ESP is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// Raw ESP, IP protocol 50.
    None,
    /// ESP in UDP (RFC 3948): NAT-T on 4500, the ESP-in-UDP tunnel mode on 2746, or any port.
    Udp { local_port: u16, remote_port: u16 },
}

impl Encap {
    /// NAT traversal, UDP 4500 both ways.
    pub const NAT_T: Encap = Encap::Udp {
        local_port: 4500,
        remote_port: 4500,
    };
    /// The ESP-in-UDP tunnel mode of the seed appliances, UDP 2746 both ways.
    pub const UDP_2746: Encap = Encap::Udp {
        local_port: 2746,
        remote_port: 2746,
    };
}

/// Outer DSCP on encapsulation (RFC 4301 §5.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DscpMode {
    /// Copy the inner packet's DSCP.
    #[default]
    Copy,
    /// Write this value (0-63).
    Set(u8),
}

/// ECN handling (RFC 6040).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EcnMode {
    /// Normal mode: copy ECN out, combine outer CE into the inner packet on decapsulation.
    #[default]
    Normal,
    /// Compatibility mode: outer Not-ECT, inner ECN untouched on decapsulation.
    Compatibility,
}

/// The outer DF bit in tunnel mode (RFC 4301 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DfMode {
    /// Copy from the inner IPv4 header; set for inner IPv6.
    #[default]
    Copy,
    Set,
    Clear,
}

/// Limits of one kind (soft or hard). `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub time: Option<Duration>,
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
}

/// SA lifetimes (RFC 4301 §4.4.2.1): the soft limit raises an event (rekey), the hard limit
/// stops the SA. Idle: the SA expires after this long without a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub soft: Limits,
    pub hard: Limits,
    pub idle: Option<Duration>,
}

/// Key bytes, zeroized on drop and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn from_slice(b: &[u8]) -> Self {
        Self(Zeroizing::new(b.to_vec()))
    }

    /// Parse hex (`0x` prefix, `:` and spaces allowed). The digits and the bytes are only
    /// ever held in zeroizing buffers of their final size.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut digits = Zeroizing::new(Vec::with_capacity(s.len()));
        digits.extend(s.bytes().filter(|c| *c != b':' && *c != b' '));
        let mut v = Zeroizing::new(vec![0u8; digits.len() / 2]);
        hex::decode_to_slice(&*digits, &mut v).ok()?;
        Some(Self(v))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// Everything needed to install one SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaConfig {
    /// A stable name (survives rekeying in counters and `show`).
    pub name: String,
    /// Links the SA to PROTECT policies (an outbound SA) or to its tunnel (inbound).
    pub reqid: u32,
    /// ESP or AH.
    pub protocol: Protocol,
    pub spi: u32,
    pub direction: Direction,
    pub mode: Mode,
    /// This gateway's address: outer source (outbound) or destination (inbound). Required in
    /// tunnel mode; in transport mode, if set, inbound lookup also matches it.
    pub local: Option<IpAddr>,
    /// The peer's address; required in tunnel mode.
    pub remote: Option<IpAddr>,
    pub encap: Encap,
    pub enc: EncAlg,
    /// Encryption key followed by the salt for combined modes.
    pub enc_key: SecretKey,
    pub auth: AuthAlg,
    pub auth_key: SecretKey,
    /// Accept 3DES (RFC 8221 legacy).
    pub allow_legacy: bool,
    /// Anti-replay window in packets (inbound); 0 disables replay protection.
    pub replay_window: u32,
    /// Extended sequence numbers (RFC 4303 §2.2.1).
    pub esn: bool,
    pub lifetime: Lifetime,
    pub dscp: DscpMode,
    pub ecn: EcnMode,
    pub df: DfMode,
    /// Outer TTL / hop limit in tunnel mode.
    pub ttl: u8,
    /// Traffic selectors: inbound packets must match one after decapsulation
    /// (RFC 4301 §5.2). Empty matches nothing — an inbound SA that no policy names
    /// accepts no traffic; write [`Selector::ANY`] for "any". Outbound SAs ignore them.
    pub selectors: Vec<Selector>,
}

impl SaConfig {
    /// A tunnel-mode SA with defaults for everything but addresses and keys. It has no
    /// selectors: as an inbound SA it accepts nothing until `selectors` is set (for
    /// example to `vec![Selector::ANY]`).
    #[allow(clippy::too_many_arguments)] // every argument is a required SA parameter
    pub fn tunnel(
        spi: u32,
        direction: Direction,
        local: IpAddr,
        remote: IpAddr,
        enc: EncAlg,
        enc_key: &[u8],
        auth: AuthAlg,
        auth_key: &[u8],
    ) -> Self {
        SaConfig {
            name: format!("{}-{spi:08x}", direction.name()),
            reqid: 1,
            protocol: Protocol::Esp,
            spi,
            direction,
            mode: Mode::Tunnel,
            local: Some(local),
            remote: Some(remote),
            encap: Encap::None,
            enc,
            enc_key: SecretKey::from_slice(enc_key),
            auth,
            auth_key: SecretKey::from_slice(auth_key),
            allow_legacy: false,
            replay_window: DEFAULT_WINDOW,
            esn: false,
            lifetime: Lifetime::default(),
            dscp: DscpMode::Copy,
            ecn: EcnMode::Normal,
            df: DfMode::Copy,
            ttl: 64,
            selectors: vec![],
        }
    }

    /// A transport-mode SA; like [`SaConfig::tunnel`], without selectors.
    pub fn transport(
        spi: u32,
        direction: Direction,
        enc: EncAlg,
        enc_key: &[u8],
        auth: AuthAlg,
        auth_key: &[u8],
    ) -> Self {
        SaConfig {
            mode: Mode::Transport,
            local: None,
            remote: None,
            ..Self::tunnel(
                spi,
                direction,
                IpAddr::from([0, 0, 0, 0]),
                IpAddr::from([0, 0, 0, 0]),
                enc,
                enc_key,
                auth,
                auth_key,
            )
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SaError> {
        let bad = |field: &'static str, msg: String| Err(SaError::Invalid { field, msg });
        if let Protocol::IpComp(alg) = self.protocol {
            return self.validate_ipcomp(alg);
        }
        if self.spi == 0 {
            return bad(
                "spi",
                "SPI 0 is reserved for local use and never sent (RFC 4303 §2.1)".into(),
            );
        }
        if self.spi <= 255 {
            return bad(
                "spi",
                format!(
                    "SPI {} is in the range 1-255 reserved by IANA (RFC 4303 §2.1)",
                    self.spi
                ),
            );
        }
        if self.protocol == Protocol::Ah {
            return self.validate_ah();
        }
        self.validate_common()
    }

    /// AH: integrity only (RFC 4302), never UDP-encapsulated (RFC 3948 covers ESP only).
    fn validate_ah(&self) -> Result<(), SaError> {
        let bad = |field: &'static str, msg: String| Err(SaError::Invalid { field, msg });
        if self.enc != EncAlg::Null || !self.enc_key.is_empty() {
            return bad(
                "enc",
                format!(
                    "AH does not encrypt (RFC 4302): an AH SA takes no encryption algorithm \
                     (got {}); use ESP for confidentiality",
                    self.enc
                ),
            );
        }
        if self.auth == AuthAlg::None {
            return bad(
                "auth",
                "AH needs an integrity algorithm (RFC 4302 §3.2), e.g. hmac-sha256-128".into(),
            );
        }
        if self.encap != Encap::None {
            return bad(
                "encap",
                "AH cannot be UDP-encapsulated: it covers the IP addresses a NAT rewrites \
                 (RFC 3948 encapsulates ESP only)"
                    .into(),
            );
        }
        self.validate_common()
    }

    /// IPComp (RFC 3173): a CPI instead of an SPI, no keys, no sequence numbers.
    fn validate_ipcomp(&self, alg: CompAlg) -> Result<(), SaError> {
        let bad = |field: &'static str, msg: String| Err(SaError::Invalid { field, msg });
        let cpi = self.spi;
        let wk = u32::from(alg.well_known_cpi());
        if cpi == 0 || cpi > 0xffff {
            return bad(
                "spi",
                format!("CPI {cpi} is not a 16-bit value from 1 to 65535 (RFC 3173 §3.3)"),
            );
        }
        if (1..64).contains(&cpi) && cpi != wk {
            return bad(
                "spi",
                format!(
                    "CPI {cpi} is the well-known CPI of another algorithm; {} uses {wk} \
                     (RFC 3173 §3.3)",
                    alg.name()
                ),
            );
        }
        if (64..256).contains(&cpi) {
            return bad(
                "spi",
                format!("CPI {cpi} is in the range 64-255 reserved by RFC 3173 §3.3"),
            );
        }
        if self.enc != EncAlg::Null || !self.enc_key.is_empty() {
            return bad(
                "enc",
                "IPComp takes no encryption algorithm and no key".into(),
            );
        }
        if self.auth != AuthAlg::None || !self.auth_key.is_empty() {
            return bad(
                "auth",
                "IPComp takes no integrity algorithm and no key".into(),
            );
        }
        if self.encap != Encap::None {
            return bad(
                "encap",
                "IPComp is not UDP-encapsulated; bundle it inside a UDP-encapsulated ESP SA".into(),
            );
        }
        if self.esn {
            return bad("esn", "IPComp has no sequence numbers".into());
        }
        self.validate_shape()
    }

    /// The checks shared by ESP and AH.
    fn validate_common(&self) -> Result<(), SaError> {
        let enc_check = if self.protocol == Protocol::Ah {
            crypto::alg::check_ah_algorithm(self.auth)
        } else {
            crypto::alg::check_algorithms(self.enc, self.auth, self.allow_legacy)
        };
        enc_check.map_err(|source| SaError::Crypto {
            field: if self.protocol == Protocol::Ah {
                "auth"
            } else {
                "enc"
            },
            source,
        })?;
        crypto::alg::check_enc_key(self.enc, self.enc_key.bytes()).map_err(|source| {
            SaError::Crypto {
                field: "enc_key",
                source,
            }
        })?;
        crypto::alg::check_auth_key(self.auth, self.auth_key.bytes()).map_err(|source| {
            SaError::Crypto {
                field: "auth_key",
                source,
            }
        })?;
        self.validate_shape()
    }

    /// Mode, addresses, encapsulation, window, lifetimes and the outer header: every SA.
    fn validate_shape(&self) -> Result<(), SaError> {
        let bad = |field: &'static str, msg: String| Err(SaError::Invalid { field, msg });
        match self.mode {
            Mode::Tunnel => {
                let (Some(l), Some(r)) = (self.local, self.remote) else {
                    return bad(
                        if self.local.is_none() {
                            "local"
                        } else {
                            "remote"
                        },
                        "tunnel mode needs both local and remote addresses".into(),
                    );
                };
                if l.is_ipv4() != r.is_ipv4() {
                    return bad(
                        "remote",
                        format!("local {l} and remote {r} are of different IP versions"),
                    );
                }
                for (f, a) in [("local", l), ("remote", r)] {
                    if a.is_unspecified() || a.is_multicast() {
                        return bad(f, format!("{a} cannot be a tunnel endpoint"));
                    }
                }
            }
            Mode::Transport => {
                if let (Some(l), Some(r)) = (self.local, self.remote)
                    && l.is_ipv4() != r.is_ipv4()
                {
                    return bad(
                        "remote",
                        format!("local {l} and remote {r} are of different IP versions"),
                    );
                }
            }
        }
        if let Encap::Udp {
            local_port,
            remote_port,
        } = self.encap
        {
            if local_port == 0 || remote_port == 0 {
                return bad("encap", "UDP encapsulation ports must not be 0".into());
            }
            if local_port == 500 || remote_port == 500 {
                return bad("encap", "UDP 500 carries IKE without a non-ESP marker and cannot carry ESP (RFC 3948 §2)".into());
            }
        }
        if self.replay_window > MAX_WINDOW {
            return bad(
                "replay_window",
                format!(
                    "{} exceeds the maximum of {MAX_WINDOW} packets",
                    self.replay_window
                ),
            );
        }
        if self.esn && self.replay_window == 0 && self.direction == Direction::Inbound {
            return bad("replay_window", "ESN needs an anti-replay window to infer the high sequence bits (RFC 4303 Appendix A)".into());
        }
        let l = &self.lifetime;
        let pairs: [(&'static str, Option<u128>, Option<u128>); 3] = [
            (
                "lifetime.time",
                l.soft.time.map(|d| d.as_nanos()),
                l.hard.time.map(|d| d.as_nanos()),
            ),
            (
                "lifetime.bytes",
                l.soft.bytes.map(u128::from),
                l.hard.bytes.map(u128::from),
            ),
            (
                "lifetime.packets",
                l.soft.packets.map(u128::from),
                l.hard.packets.map(u128::from),
            ),
        ];
        for (f, soft, hard) in pairs {
            if let (Some(s), Some(h)) = (soft, hard)
                && s >= h
            {
                return bad(f, "the soft limit must be below the hard limit".into());
            }
            if soft == Some(0) || hard == Some(0) {
                return bad(
                    f,
                    "a limit of 0 would expire the SA at once; leave it out for no limit".into(),
                );
            }
        }
        if l.idle == Some(Duration::ZERO) {
            return bad(
                "lifetime.idle",
                "an idle timeout of 0 would expire the SA at once".into(),
            );
        }
        if self.ttl == 0 {
            return bad("ttl", "the outer TTL must be at least 1".into());
        }
        if let DscpMode::Set(d) = self.dscp
            && d > 63
        {
            return bad("dscp", format!("DSCP {d} is out of range 0-63"));
        }
        for (i, s) in self.selectors.iter().enumerate() {
            if let Err(e) = s.validate() {
                return bad("selectors", format!("selector {}: {e}", i + 1));
            }
        }
        Ok(())
    }
}

/// Why an SA cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaError {
    #[error("{field}: {msg}")]
    Invalid { field: &'static str, msg: String },
    #[error("{field}: {source}")]
    Crypto {
        field: &'static str,
        source: CryptoError,
    },
    #[error("an SA with SPI {spi:#010x} ({dir}) is already installed")]
    Duplicate { spi: u32, dir: Direction },
    #[error("the SA table is full ({0} SAs)")]
    Full(usize),
}

impl SaError {
    /// The configuration field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SaError::Invalid { field, .. } | SaError::Crypto { field, .. } => field,
            SaError::Duplicate { .. } => "spi",
            SaError::Full(_) => "spi",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SaConfig {
        SaConfig::tunnel(
            0x1000,
            Direction::Outbound,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            EncAlg::AesGcm128,
            &[1; 20],
            AuthAlg::None,
            &[],
        )
    }

    #[test]
    fn valid_base() {
        base().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        type Case = (Box<dyn Fn(&mut SaConfig)>, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|c| c.spi = 0), "spi", "reserved"),
            (Box::new(|c| c.spi = 200), "spi", "1-255"),
            (
                Box::new(|c| c.enc_key = SecretKey::from_slice(&[1; 16])),
                "enc_key",
                "salt",
            ),
            (Box::new(|c| c.enc = EncAlg::DesCbc), "enc", "MUST NOT"),
            (
                Box::new(|c| {
                    c.enc = EncAlg::AesCbc128;
                    c.enc_key = SecretKey::from_slice(&[1; 16]);
                    c.auth = AuthAlg::HmacSha1_96;
                    c.auth_key = SecretKey::from_slice(&[1; 10]);
                }),
                "auth_key",
                "20 bytes",
            ),
            (
                Box::new(|c| c.remote = Some("fd00::1".parse().unwrap())),
                "remote",
                "different IP versions",
            ),
            (Box::new(|c| c.local = None), "local", "tunnel mode"),
            (
                Box::new(|c| c.replay_window = 1 << 20),
                "replay_window",
                "maximum",
            ),
            (
                Box::new(|c| {
                    c.direction = Direction::Inbound;
                    c.esn = true;
                    c.replay_window = 0;
                }),
                "replay_window",
                "ESN",
            ),
            (
                Box::new(|c| {
                    c.lifetime.soft.bytes = Some(10);
                    c.lifetime.hard.bytes = Some(5);
                }),
                "lifetime.bytes",
                "soft",
            ),
            (
                Box::new(|c| {
                    c.encap = Encap::Udp {
                        local_port: 500,
                        remote_port: 500,
                    }
                }),
                "encap",
                "500",
            ),
            (Box::new(|c| c.ttl = 0), "ttl", "TTL"),
            (Box::new(|c| c.dscp = DscpMode::Set(64)), "dscp", "range"),
        ];
        for (f, field, text) in cases {
            let mut c = base();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field(), field, "{e}");
            assert!(e.to_string().contains(text), "{e} should mention {text:?}");
        }
    }

    #[test]
    fn keys_are_not_printed() {
        let c = base();
        let s = format!("{c:?}");
        assert!(s.contains("<20 bytes>"), "{s}");
        assert!(!s.contains("[1, 1"), "{s}");
        assert_eq!(
            SecretKey::from_hex("0x0102:ff").unwrap().bytes(),
            &[1, 2, 255]
        );
        assert!(SecretKey::from_hex("abc").is_none());
        assert_eq!(SecretKey::from_hex(" 0A 0b ").unwrap().bytes(), &[10, 11]);
        assert!(SecretKey::from_hex("0x0g").is_none());
    }
}
