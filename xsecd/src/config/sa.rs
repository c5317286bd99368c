//! `[[sa]]`: one manually keyed SA pair (inbound + outbound) per table.
//!
//! Reading builds an [`SaDraft`]; the two [`SaConfig`]s are validated by the engine's own
//! [`SaConfig::validate`] only after the policies are read, because the inbound SA's
//! selectors come from the PROTECT policies that name it. Engine field names are mapped
//! back onto the TOML keys (`enc_key` of the inbound SA is `enc_key_in`).

use super::reader::{Fail, Locs, Res, Table, Val, keep};
use core::time::Duration;
use std::net::IpAddr;
use xsec_dataplane::crypto::{AuthAlg, CryptoError, EncAlg};
use xsec_dataplane::replay::DEFAULT_WINDOW;
use xsec_dataplane::sa::{
    CompAlg, DfMode, DscpMode, EcnMode, Encap, Lifetime, Limits, Mode, Protocol, SaConfig, SaError,
    SecretKey,
};
use xsec_dataplane::spd::Direction;
use zeroize::Zeroizing;

/// One SA pair as configured: what the daemon installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPair {
    pub name: String,
    pub inbound: SaConfig,
    pub outbound: SaConfig,
    /// Interval of the NAT keepalive / ESP-in-UDP heartbeat (RFC 3948 §2.3) on UDP
    /// encapsulation; `None` when off or not encapsulated.
    pub keepalive: Option<Duration>,
    /// Line of the `[[sa]]` header.
    pub line: usize,
}

/// An SA pair read but not yet validated.
pub(super) struct SaDraft {
    pub pair: SaPair,
    pub locs: Locs,
}

/// UDP port of the ESP-in-UDP tunnel mode of the seed appliances.
const UDP_ENCAP_PORT: u16 = 2746;
/// RFC 3948 NAT traversal port.
const NAT_T_PORT: u16 = 4500;
/// Default keepalive of `encap = "udp"`: the appliances' heartbeat.
const UDP_KEEPALIVE_S: u64 = 30;
/// Default keepalive of `encap = "nat-t"`: RFC 3948 §4 suggests 20 s.
const NAT_T_KEEPALIVE_S: u64 = 20;

/// `protocol` as written, before `compression` completes IPComp.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Esp,
    Ah,
    IpComp,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EncapKind {
    None,
    NatT,
    Udp,
}

/// Read the name alone, so that policies can tell an unknown SA from one whose table has
/// errors (and not report the same mistake twice).
pub(super) fn peek_name(v: &Val<'_, '_>) -> Option<String> {
    let mut t = v.table().ok()?;
    t.get("name")?.string().ok().map(str::to_owned)
}

/// Read one `[[sa]]` table; `index` is its position (reqid = index + 1).
pub(super) fn read(v: &Val<'_, '_>, index: usize, line: usize) -> Result<SaDraft, Vec<Fail>> {
    let mut fails = vec![];
    let mut t = v.table().map_err(|f| vec![f])?;
    let locs = t.locs();
    let f = &mut fails;

    let name = keep(f, t.req("name").and_then(|v| name(&v)));
    let mode = keep(
        f,
        t.req("mode")
            .and_then(|v| v.choice(&[("tunnel", Mode::Tunnel), ("transport", Mode::Transport)])),
    );
    let addr = |v: Val<'_, '_>| v.parse::<IpAddr>();
    let local = keep(f, t.get("local").map(addr).transpose());
    let remote = keep(f, t.get("remote").map(addr).transpose());
    let kind = keep(
        f,
        t.get("protocol").map_or(Ok(Kind::Esp), |v| {
            v.choice(&[
                ("esp", Kind::Esp),
                ("ah", Kind::Ah),
                ("ipcomp", Kind::IpComp),
            ])
        }),
    );
    let compression = match (kind, t.get("compression")) {
        (Some(Kind::IpComp), Some(v)) => keep(
            f,
            v.choice(&[("deflate", CompAlg::Deflate), ("lzs", CompAlg::Lzs)]),
        ),
        (Some(Kind::IpComp), None) => {
            f.push(t.missing(
                "compression",
                "an IPComp SA needs compression = \"deflate\" or \"lzs\"",
            ));
            None
        }
        (_, Some(v)) => {
            f.push(v.fail("compression needs protocol = \"ipcomp\""));
            None
        }
        (_, None) => Some(CompAlg::Deflate),
    };
    let protocol = match kind {
        Some(Kind::Esp) => Some(Protocol::Esp),
        Some(Kind::Ah) => Some(Protocol::Ah),
        Some(Kind::IpComp) => compression.map(Protocol::IpComp),
        None => None,
    };
    let (spi_in, spi_out) = match protocol {
        // CPIs, both ways the algorithm's well-known one unless given (RFC 3173 §3.3)
        Some(Protocol::IpComp(alg)) => {
            let wk = u32::from(alg.well_known_cpi());
            let mut cpi = |key: &'static str| {
                keep(
                    f,
                    t.get(key)
                        .map_or(Ok(wk), |v| v.uint(1u32, u32::from(u16::MAX))),
                )
            };
            (cpi("cpi_in"), cpi("cpi_out"))
        }
        _ => (
            keep(f, t.req("spi_in").and_then(|v| spi(&v))),
            keep(f, t.req("spi_out").and_then(|v| spi(&v))),
        ),
    };
    if let (Some(i), Some(o)) = (spi_in, spi_out)
        && i == o
        && !matches!(protocol, Some(Protocol::IpComp(_)))
    {
        f.push(locs.fail(
            "spi_out",
            format!(
                "spi_out equals spi_in ({o}); give each direction its own SPI so that a \
                 reflected packet of ours never matches our inbound SA"
            ),
        ));
    }
    let enc = match (protocol, t.get("encryption")) {
        (Some(Protocol::IpComp(_)), Some(v)) => {
            f.push(
                v.fail("IPComp does not encrypt; bundle it with an ESP SA (policy bundle = [...])"),
            );
            None
        }
        (Some(Protocol::IpComp(_)), None) => Some(EncAlg::Null),
        (Some(Protocol::Ah), Some(v)) => {
            f.push(v.fail(
                "AH does not encrypt (RFC 4302): remove encryption, or use protocol = \"esp\" \
                 for confidentiality",
            ));
            None
        }
        (Some(Protocol::Ah), None) => Some(EncAlg::Null),
        // a bad protocol is reported already: no guess at what the SA needs
        (None, None) => None,
        (_, v) => keep(
            f,
            v.ok_or_else(|| t.missing("encryption", "missing required key"))
                .and_then(|v| {
                    v.parse::<EncAlg>().map_err(|e| Fail {
                        msg: format!("{}; expected e.g. {ENC_HINT}", e.msg),
                        ..e
                    })
                }),
        ),
    };
    let auth = match (protocol, t.get("integrity")) {
        (Some(Protocol::IpComp(_)), Some(v)) => {
            f.push(v.fail(
                "IPComp authenticates nothing; bundle it with an ESP or AH SA (policy \
                 bundle = [...])",
            ));
            None
        }
        (Some(Protocol::Ah), None) => {
            f.push(t.missing(
                "integrity",
                "AH needs an integrity algorithm (RFC 4302 §3.2), e.g. hmac-sha256-128",
            ));
            None
        }
        (_, v) => keep(
            f,
            v.map_or(Ok(AuthAlg::None), |v| {
                v.parse::<AuthAlg>().map_err(|e| Fail {
                    msg: format!("{}; expected e.g. {AUTH_HINT}", e.msg),
                    ..e
                })
            }),
        ),
    };
    let allow_legacy = keep(f, t.get("allow_legacy").map_or(Ok(false), |v| v.boolean()));

    // Keys: required when the algorithm takes one, refused when it takes none.
    let mut keys = |t: &mut Table<'_, '_>, key: &'static str, needed: Option<bool>, what: &str| {
        let v = t.get(key);
        match (v, needed) {
            (Some(v), Some(false)) => {
                f.push(v.fail(format!("{what} takes no key; remove {key}")));
                None
            }
            (Some(v), _) => keep(f, secret(&v)),
            (None, Some(true)) => {
                f.push(t.missing(key, "missing required key"));
                None
            }
            (None, _) => Some(SecretKey::default()),
        }
    };
    let enc_needs = enc.map(|e| e.keymat_len() > 0);
    let auth_needs = auth.map(|a| a != AuthAlg::None);
    let enc_name = enc.map_or("", EncAlg::name);
    let enc_key_in = keys(&mut t, "enc_key_in", enc_needs, enc_name);
    let enc_key_out = keys(&mut t, "enc_key_out", enc_needs, enc_name);
    let auth_key_in = keys(&mut t, "auth_key_in", auth_needs, "integrity none");
    let auth_key_out = keys(&mut t, "auth_key_out", auth_needs, "integrity none");

    let encap_kind = keep(
        f,
        t.get("encap").map_or(Ok(EncapKind::None), |v| {
            v.choice(&[
                ("none", EncapKind::None),
                ("nat-t", EncapKind::NatT),
                ("udp", EncapKind::Udp),
            ])
        }),
    );
    let mut port = |t: &mut Table<'_, '_>, key: &'static str| {
        let v = t.get(key)?;
        match encap_kind {
            Some(EncapKind::None) => {
                f.push(v.fail(format!("{key} needs encap = \"udp\" or \"nat-t\"")));
                None
            }
            _ => keep(f, v.uint(1u16, u16::MAX)),
        }
    };
    let udp_local = port(&mut t, "udp_local_port");
    let udp_remote = port(&mut t, "udp_remote_port");
    let encap = encap_kind.map(|k| {
        let default = if k == EncapKind::Udp {
            UDP_ENCAP_PORT
        } else {
            NAT_T_PORT
        };
        match k {
            EncapKind::None => Encap::None,
            _ => Encap::Udp {
                local_port: udp_local.unwrap_or(default),
                remote_port: udp_remote.unwrap_or(default),
            },
        }
    });
    let keepalive = match (t.get("keepalive"), encap_kind) {
        (Some(v), Some(EncapKind::None)) => {
            f.push(v.fail("keepalive needs encap = \"udp\" or \"nat-t\""));
            None
        }
        (Some(v), _) => keep(f, v.uint(0u64, 3600)).map(Some),
        (None, Some(EncapKind::Udp)) => Some(Some(UDP_KEEPALIVE_S)),
        (None, Some(EncapKind::NatT)) => Some(Some(NAT_T_KEEPALIVE_S)),
        (None, _) => Some(None),
    }
    .map(|s| s.filter(|&s| s > 0).map(Duration::from_secs));

    let replay_window = keep(
        f,
        t.get("replay_window")
            .map_or(Ok(DEFAULT_WINDOW), |v| v.uint(0u32, u32::MAX)),
    );
    let esn = keep(f, t.get("esn").map_or(Ok(false), |v| v.boolean()));
    let df = keep(
        f,
        t.get("df").map_or(Ok(DfMode::default()), |v| {
            v.choice(&[
                ("copy", DfMode::Copy),
                ("set", DfMode::Set),
                ("clear", DfMode::Clear),
            ])
        }),
    );
    let ttl = keep(f, t.get("ttl").map_or(Ok(64), |v| v.uint(1u8, u8::MAX)));
    let dscp = keep(
        f,
        t.get("dscp").map_or(Ok(DscpMode::Copy), |v| {
            if v.is_int() {
                v.uint(0u8, 63).map(DscpMode::Set)
            } else {
                v.choice(&[("copy", DscpMode::Copy)]).map_err(|e| Fail {
                    msg: format!("{}, or a DSCP value 0..=63", e.msg),
                    ..e
                })
            }
        }),
    );
    let ecn = keep(
        f,
        t.get("ecn").map_or(Ok(EcnMode::default()), |v| {
            v.choice(&[
                ("normal", EcnMode::Normal),
                ("compatibility", EcnMode::Compatibility),
            ])
        }),
    );
    let lifetime = match t.get("lifetime") {
        None => Some(Lifetime::default()),
        Some(v) => match v.table() {
            Ok(mut lt) => {
                let r = lifetime(&mut lt, f);
                lt.finish(f);
                r
            }
            Err(e) => {
                f.push(e);
                None
            }
        },
    };
    t.finish(f);

    if mode == Some(Mode::Tunnel) {
        for (key, a) in [("local", local), ("remote", remote)] {
            if a == Some(None) {
                f.push(t_missing(
                    &locs,
                    key,
                    "tunnel mode needs both local and remote addresses",
                ));
            }
        }
    }

    let (
        Some(protocol),
        Some(name),
        Some(mode),
        Some(local),
        Some(remote),
        Some(spi_in),
        Some(spi_out),
        Some(enc),
        Some(auth),
        Some(allow_legacy),
        Some(enc_key_in),
        Some(enc_key_out),
        Some(auth_key_in),
        Some(auth_key_out),
        Some(encap),
        Some(keepalive),
        Some(replay_window),
        Some(esn),
        Some(df),
        Some(ttl),
        Some(dscp),
        Some(ecn),
        Some(lifetime),
    ) = (
        protocol,
        name,
        mode,
        local,
        remote,
        spi_in,
        spi_out,
        enc,
        auth,
        allow_legacy,
        enc_key_in,
        enc_key_out,
        auth_key_in,
        auth_key_out,
        encap,
        keepalive,
        replay_window,
        esn,
        df,
        ttl,
        dscp,
        ecn,
        lifetime,
    )
    else {
        return Err(fails);
    };
    if !fails.is_empty() {
        return Err(fails);
    }

    let reqid = u32::try_from(index + 1).map_err(|_| vec![locs.fail("name", "too many SAs")])?;
    let sa = |direction, spi, enc_key, auth_key| SaConfig {
        name: name.clone(),
        reqid,
        protocol,
        spi,
        direction,
        mode,
        local,
        remote,
        encap,
        enc,
        enc_key,
        auth,
        auth_key,
        allow_legacy,
        replay_window,
        esn,
        lifetime,
        dscp,
        ecn,
        df,
        ttl,
        // Filled from the policies that name the pair (config/mod.rs); none means the
        // inbound SA accepts nothing.
        selectors: vec![],
    };
    Ok(SaDraft {
        pair: SaPair {
            inbound: sa(Direction::Inbound, spi_in, enc_key_in, auth_key_in),
            outbound: sa(Direction::Outbound, spi_out, enc_key_out, auth_key_out),
            name,
            keepalive,
            line,
        },
        locs,
    })
}

fn t_missing(locs: &Locs, key: &str, msg: &str) -> Fail {
    Fail {
        at: locs.header,
        field: locs.field(key),
        msg: msg.into(),
    }
}

const ENC_HINT: &str = "aes-cbc-128, aes-cbc-256, aes-gcm-128, aes-gcm-256, chacha20poly1305";
const AUTH_HINT: &str = "hmac-sha1-96, hmac-sha256-128, hmac-sha512-256, none";

/// SA names appear in counters and `show` output: keep them short and printable.
fn name(v: &Val<'_, '_>) -> Res<String> {
    let s = v.string()?;
    if s.is_empty() || s.len() > 64 {
        return Err(v.fail("an SA name is 1 to 64 characters long"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(v.fail(format!("{s:?}: use letters, digits, '-', '_' and '.' only")));
    }
    Ok(s.to_owned())
}

/// An SPI: a TOML integer (hex literals allowed) or a string, `"0x2222"` or `"8738"`.
fn spi(v: &Val<'_, '_>) -> Res<u32> {
    let n: u64 = if v.is_str() {
        let s = v.string()?.trim();
        let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse::<u64>(),
        };
        r.map_err(|_| {
            v.fail(format!(
                "{s:?} is not an SPI (an integer, or \"0x\" and hex digits)"
            ))
        })?
    } else {
        v.uint(0u64, u64::MAX)?
    };
    // RFC 4303 §2.1: 0 is never sent, 1-255 are reserved by IANA.
    if n == 0 {
        return Err(v.fail("SPI 0 is reserved for local use and never sent (RFC 4303 §2.1)"));
    }
    if n <= 255 {
        return Err(v.fail(format!(
            "SPI {n} is in the range 1-255 reserved by IANA (RFC 4303 §2.1); use 256 or above"
        )));
    }
    u32::try_from(n).map_err(|_| v.fail(format!("SPI {n} does not fit in 32 bits")))
}

/// A key: `"0x"` and hex digits, or `"ascii:"` and the literal key. The value is never
/// quoted in a message.
fn secret(v: &Val<'_, '_>) -> Res<SecretKey> {
    let s = v.string()?;
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() {
            return Err(v.fail("empty key"));
        }
        if h.len() % 2 != 0 {
            return Err(v.fail(format!(
                "odd number of hex digits ({}); a key is whole bytes",
                h.len()
            )));
        }
        // Decoded straight into a zeroizing buffer of the final size: no copy is left behind.
        // The message names the position only, never the character (key material).
        let mut out = Zeroizing::new(vec![0u8; h.len() / 2]);
        if let Err(e) = hex::decode_to_slice(h, &mut out) {
            let at = match e {
                hex::FromHexError::InvalidHexCharacter { index, .. } => index,
                hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => 0,
            };
            return Err(v.fail(format!(
                "not a hex digit in byte {} of the key (after \"0x\")",
                at / 2 + 1
            )));
        }
        Ok(SecretKey::new(core::mem::take(&mut *out)))
    } else if let Some(a) = s.strip_prefix("ascii:") {
        if a.is_empty() {
            return Err(v.fail("empty key"));
        }
        if !a.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(v.fail("an \"ascii:\" key must be printable ASCII"));
        }
        Ok(SecretKey::from_slice(a.as_bytes()))
    } else {
        Err(v.fail(
            "a key is \"0x\" followed by hex digits, or \"ascii:\" followed by the literal key",
        ))
    }
}

/// `[sa.lifetime]`: soft and hard limits (RFC 4301 §4.4.2.1) and the idle timeout.
fn lifetime(t: &mut Table<'_, '_>, f: &mut Vec<Fail>) -> Option<Lifetime> {
    // (value, the key's value for later messages)
    type Lim<'t, 'i> = Option<(u64, Val<'t, 'i>)>;
    let mut ok = true;
    let mut read = |key: &'static str| -> Lim<'_, '_> {
        let v = t.get(key)?;
        match keep(f, v.uint(0u64, u64::MAX)) {
            Some(0) => {
                f.push(
                    v.fail("a limit of 0 would expire the SA at once; leave it out for no limit"),
                );
                ok = false;
                None
            }
            Some(n) => Some((n, v)),
            None => {
                ok = false;
                None
            }
        }
    };
    let pairs = [
        (read("soft_seconds"), read("hard_seconds")),
        (read("soft_bytes"), read("hard_bytes")),
        (read("soft_packets"), read("hard_packets")),
    ];
    let idle = read("idle_seconds");
    for (soft, hard) in &pairs {
        if let (Some((s, v)), Some((h, _))) = (soft, hard)
            && s >= h
        {
            f.push(v.fail(format!(
                "the soft limit ({s}) must be below the hard limit ({h})"
            )));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let n = |x: &Lim<'_, '_>| x.as_ref().map(|(n, _)| *n);
    let secs = |x: &Lim<'_, '_>| n(x).map(Duration::from_secs);
    Some(Lifetime {
        soft: Limits {
            time: secs(&pairs[0].0),
            bytes: n(&pairs[1].0),
            packets: n(&pairs[2].0),
        },
        hard: Limits {
            time: secs(&pairs[0].1),
            bytes: n(&pairs[1].1),
            packets: n(&pairs[2].1),
        },
        idle: secs(&idle),
    })
}

/// Validate both SAs of a pair with the engine's checks; errors name the TOML key.
pub(super) fn validate(d: &SaDraft, fails: &mut Vec<Fail>) {
    let mut seen: Vec<String> = vec![];
    for sa in [&d.pair.inbound, &d.pair.outbound] {
        if let Err(e) = sa.validate() {
            let key = toml_key(&e, sa);
            let fail = d.locs.fail(&key, engine_msg(&e));
            // A shared key (encryption, local, ...) fails in both directions: say it once.
            if !seen.contains(&key) {
                seen.push(key);
                fails.push(fail);
            }
        }
    }
}

/// The message of an engine error without its engine field prefix.
fn engine_msg(e: &SaError) -> String {
    match e {
        SaError::Invalid { msg, .. } => msg.clone(),
        SaError::Crypto { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Map an engine field name onto the TOML key of this direction.
fn toml_key(e: &SaError, sa: &SaConfig) -> String {
    let dir = match sa.direction {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    match e.field() {
        "spi" if matches!(sa.protocol, Protocol::IpComp(_)) => format!("cpi_{dir}"),
        "spi" => format!("spi_{dir}"),
        "enc_key" => format!("enc_key_{dir}"),
        "auth_key" => format!("auth_key_{dir}"),
        "auth" => "integrity".into(),
        "enc" => {
            let about_integrity = match e {
                SaError::Crypto {
                    source: CryptoError::NoIntegrity { .. },
                    ..
                } => true,
                SaError::Crypto {
                    source: CryptoError::Refused { alg, .. },
                    ..
                } => {
                    (sa.auth != AuthAlg::None && *alg == sa.auth.name())
                        || (sa.auth == AuthAlg::None
                            && !sa.enc.is_combined()
                            && sa.enc != EncAlg::Null)
                }
                _ => false,
            };
            if about_integrity {
                "integrity"
            } else {
                "encryption"
            }
            .into()
        }
        "encap" => match sa.encap {
            Encap::Udp { local_port, .. } if local_port == 0 || local_port == 500 => {
                "udp_local_port".into()
            }
            Encap::Udp { .. } => "udp_remote_port".into(),
            Encap::None => "encap".into(),
        },
        "lifetime.time" => "lifetime.soft_seconds".into(),
        "lifetime.bytes" => "lifetime.soft_bytes".into(),
        "lifetime.packets" => "lifetime.soft_packets".into(),
        "lifetime.idle" => "lifetime.idle_seconds".into(),
        "selectors" => "name".into(),
        other => other.into(),
    }
}
