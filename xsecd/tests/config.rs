//! The TOML configuration: every example loads and each gateway pair is a mirror image;
//! every error names file, line and field; keys never show in errors or `Debug`.

use std::path::{Path, PathBuf};
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{CompAlg, Encap, Mode, Protocol};
use xsec_dataplane::spd::{
    Action, AddrRange, Direction, NonPolicy, PacketKey, PortSel, SaBundle, Selector,
};
use xsec_dataplane::wire::IpProtocol;
use xsecd::config::{self, Config, ConfigError, IdleMode, XdpModeCfg};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Warnings other than the one every manually keyed AES-GCM/ChaCha20 SA draws.
fn other_warnings(c: &Config) -> Vec<String> {
    c.warnings
        .iter()
        .map(|w| w.to_string())
        .filter(|w| !w.contains("is a combined mode, and RFC 4106 §2 requires automated keying"))
        .collect()
}

fn load(name: &str) -> Config {
    let c = config::load(&example(name)).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    let others = other_warnings(&c);
    assert!(others.is_empty(), "{name}: {others:?}");
    c
}

const PAIRS: &[(&str, &str)] = &[
    ("ar410-tunnel-a.toml", "ar410-tunnel-b.toml"),
    ("ar410-udp2746-a.toml", "ar410-udp2746-b.toml"),
    ("smartware-cbc-a.toml", "smartware-cbc-b.toml"),
    ("mcp-transport-a.toml", "mcp-transport-b.toml"),
    ("mcp-ah-transport-a.toml", "mcp-ah-transport-b.toml"),
    ("ar410-bundle-a.toml", "ar410-bundle-b.toml"),
];

/// xsec-ike's examples: its two configurations and secrets file are tested in
/// control/tests/examples.rs; the xsecd file beside them here.
const IKE_EXAMPLES: &[&str] = &[
    "tk800-ike-a.toml",
    "tk800-ike-b.toml",
    "tk800-ike-secrets.toml",
    "tk800-ike-xsecd.toml",
];

/// The gateway of an IKE setup starts with no SA and no policy: everything between the
/// subnets is discarded until xsec-ike installs a Child SA, and the file says so.
#[test]
fn ike_gateway_example_loads_with_nothing_allowed() {
    let c = config::load(&example("tk800-ike-xsecd.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.sas.is_empty());
    assert!(c.spd.outbound.is_empty() && c.spd.inbound.is_empty());
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("no [[policy]]: all outbound traffic is discarded"),
        "{w:?}"
    );
}

#[test]
fn every_example_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(example(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = PAIRS
        .iter()
        .flat_map(|(a, b)| [a.to_string(), b.to_string()])
        .chain(IKE_EXAMPLES.iter().map(|n| n.to_string()))
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn examples_load_and_compile() {
    for (a, b) in PAIRS {
        for n in [a, b] {
            let c = load(n);
            assert_eq!(c.path, example(n));
            c.spd.compile().unwrap();
            assert!(!c.sas.is_empty());
            for p in &c.sas {
                p.inbound.validate().unwrap();
                p.outbound.validate().unwrap();
            }
        }
    }
}

/// Both ends of each example pair are mirror images: SPIs, keys, addresses, ports and
/// policy selectors crossed; same algorithms and mode.
#[test]
fn example_pairs_are_mirror_images() {
    for (an, bn) in PAIRS {
        let (a, b) = (load(an), load(bn));
        assert_eq!(a.sas.len(), b.sas.len(), "{an}");
        for (x, y) in a.sas.iter().zip(&b.sas) {
            let ctx = format!("{an} {} / {bn} {}", x.name, y.name);
            for (out, inb) in [(&x.outbound, &y.inbound), (&y.outbound, &x.inbound)] {
                assert_eq!(out.spi, inb.spi, "{ctx}");
                assert_eq!(out.enc_key, inb.enc_key, "{ctx}");
                assert_eq!(out.auth_key, inb.auth_key, "{ctx}");
                assert_eq!(
                    (out.protocol, out.enc, out.auth, out.mode),
                    (inb.protocol, inb.enc, inb.auth, inb.mode)
                );
                assert_eq!((out.local, out.remote), (inb.remote, inb.local), "{ctx}");
                match (out.encap, inb.encap) {
                    (Encap::None, Encap::None) => {}
                    (
                        Encap::Udp {
                            local_port: ol,
                            remote_port: or,
                        },
                        Encap::Udp {
                            local_port: il,
                            remote_port: ir,
                        },
                    ) => assert_eq!((ol, or), (ir, il), "{ctx}"),
                    e => panic!("{ctx}: encap differs: {e:?}"),
                }
            }
            if !matches!(x.outbound.protocol, Protocol::IpComp(_)) {
                assert_ne!(
                    (&x.outbound.enc_key, &x.outbound.auth_key),
                    (&x.inbound.enc_key, &x.inbound.auth_key),
                    "{ctx}: one key per direction"
                );
            }
            assert_eq!(x.keepalive, y.keepalive, "{ctx}");
        }
        for dir in [Direction::Outbound, Direction::Inbound] {
            let (pa, pb) = (a.spd.policies(dir), b.spd.policies(dir));
            assert_eq!(pa.len(), pb.len(), "{an} {dir}");
            for (p, q) in pa.iter().zip(pb) {
                assert_eq!(p.selector.local, q.selector.remote, "{an} {}", p.name);
                assert_eq!(p.selector.remote, q.selector.local, "{an} {}", p.name);
                assert_eq!(p.selector.proto, q.selector.proto);
                assert_eq!(p.action.disposition(), q.action.disposition());
            }
        }
    }
}

#[test]
fn ar410_tunnel_maps_onto_engine_types() {
    let c = load("ar410-tunnel-a.toml");
    let g = &c.gateway;
    assert_eq!(
        (g.unprotected.as_str(), g.protected.as_str()),
        ("wan0", "lan0")
    );
    assert_eq!(g.queues, vec![0]);
    assert_eq!(g.cores, None);
    assert_eq!(g.xdp_mode, XdpModeCfg::Skb);
    assert_eq!(g.idle, IdleMode::Busy);
    assert_eq!((g.mtu, g.stats_interval_ms), (None, 1000));
    assert_eq!(c.spd.inbound_default, NonPolicy::Discard);

    let p = &c.sas[0];
    assert_eq!((p.name.as_str(), p.line), ("to-b", 10));
    assert_eq!(p.keepalive, None);
    for (sa, dir, spi) in [
        (&p.inbound, Direction::Inbound, 0x2222),
        (&p.outbound, Direction::Outbound, 0x1111),
    ] {
        assert_eq!((sa.direction, sa.spi, sa.reqid), (dir, spi, 1));
        assert_eq!(sa.mode, Mode::Tunnel);
        assert_eq!(sa.local, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(sa.remote, Some("10.0.0.2".parse().unwrap()));
        assert_eq!((sa.enc, sa.auth), (EncAlg::AesCbc128, AuthAlg::HmacSha1_96));
        assert_eq!((sa.enc_key.len(), sa.auth_key.len()), (16, 20));
        assert_eq!((sa.encap, sa.replay_window, sa.ttl), (Encap::None, 64, 64));
    }
    assert_eq!(&p.outbound.enc_key.bytes()[..4], &[0x00, 0x11, 0x22, 0x33]);
    assert!(p.outbound.selectors.is_empty());
    assert_eq!(p.inbound.selectors.len(), 1);

    assert_eq!(c.spd.outbound.len(), 1);
    assert_eq!(c.spd.outbound, c.spd.inbound);
    let pol = &c.spd.outbound[0];
    assert_eq!(pol.action, Action::Protect(SaBundle::single(1)));
    assert_eq!(pol.selector.local, "192.168.10.0/24".parse().unwrap());
    assert_eq!(pol.selector, p.inbound.selectors[0]);
}

#[test]
fn udp2746_and_smartware() {
    let c = load("ar410-udp2746-a.toml");
    let p = &c.sas[0];
    assert_eq!(p.outbound.encap, Encap::UDP_2746);
    assert_eq!(p.inbound.encap, Encap::UDP_2746);
    assert_eq!(p.keepalive, Some(std::time::Duration::from_secs(30)));

    let c = load("smartware-cbc-a.toml");
    let p = &c.sas[0];
    assert_eq!((p.inbound.spi, p.outbound.spi), (2222, 1111));
    assert_eq!(p.outbound.enc_key.bytes(), b"EXAMPLEencKeyA2B");
    assert_eq!(p.outbound.auth_key.bytes(), b"EXAMPLEauthKeyA2B123");
}

#[test]
fn mcp_transport_policies_in_order() {
    let c = load("mcp-transport-a.toml");
    let p = &c.sas[0];
    assert_eq!(p.outbound.mode, Mode::Transport);
    assert_eq!(p.outbound.enc, EncAlg::AesGcm128);
    assert_eq!(
        (p.outbound.auth, p.outbound.auth_key.len()),
        (AuthAlg::None, 0)
    );
    assert_eq!(p.outbound.enc_key.len(), 20, "key + 4-byte salt");
    let names: Vec<&str> = c.spd.outbound.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "icmp",
            "icmpv6",
            "no-telnet-to-b",
            "no-telnet-from-b",
            "a-b"
        ]
    );
    assert_eq!(c.spd.outbound, c.spd.inbound);

    let spd = c.spd.compile().unwrap();
    let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let key = |proto, sp, dp| PacketKey::describe(Some(IpProtocol(proto)), a, sp, b, dp);
    let first = |k| spd.test(Direction::Outbound, &k).first;
    assert_eq!(first(key(1, Some(8), Some(0))), Some(0));
    assert_eq!(first(key(6, Some(40000), Some(23))), Some(2));
    assert_eq!(first(key(6, Some(23), Some(40000))), Some(3));
    assert_eq!(first(key(6, Some(40000), Some(22))), Some(4));
    assert_eq!(first(key(17, Some(53), Some(53))), Some(4));
    // Inbound telnet to us from B hits the mirrored discard.
    let k = PacketKey::describe(Some(IpProtocol::TCP), b, Some(40000), a, Some(23));
    assert_eq!(spd.test(Direction::Inbound, &k).first, Some(3));
}

const GOOD: &str = r#"[gateway]
unprotected = "wan0"
protected = "lan0"

[[sa]]
name = "branch"
mode = "tunnel"
local = "10.0.0.1"
remote = "10.0.0.2"
spi_in = 0x2222
spi_out = 0x1111
encryption = "aes-cbc-128"
integrity = "hmac-sha1-96"
enc_key_in = "0x0f0e0d0c0b0a09080706050403020100"
enc_key_out = "0x000102030405060708090a0b0c0d0e0f"
auth_key_in = "0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3"
auth_key_out = "0xc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3"

[[policy]]
name = "lan"
local = "192.168.10.0/24"
remote = "192.168.20.0/24"
action = "protect"
sa = "branch"
"#;

/// Key material of GOOD, as it is written.
const SECRETS: &[&str] = &[
    "0f0e0d0c0b0a0908",
    "0001020304050607",
    "a0a1a2a3a4a5a6a7",
    "c0c1c2c3c4c5c6c7",
];

fn parse(text: &str) -> Result<Config, ConfigError> {
    config::parse(text, Path::new("gw.toml"))
}

/// Replace the first occurrence of `from` in GOOD (which must exist).
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

/// Parse, expect an error whose first line starts with `prefix`, and check no key leaks.
#[track_caller]
fn fails(text: &str, prefix: &str) -> String {
    let e = match parse(text) {
        Ok(c) => panic!("expected an error {prefix:?}, got {c:?}"),
        Err(e) => e,
    };
    let s = e.to_string();
    assert!(s.starts_with(prefix), "expected {prefix:?}, got:\n{s}");
    for k in SECRETS {
        assert!(!s.contains(k), "key material in the error: {s}");
    }
    let d = e.diagnostics().first().expect("a diagnostic").clone();
    assert_eq!(Some(d.to_string().as_str()), s.lines().next());
    s
}

#[test]
fn good_parses_and_keys_stay_secret() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.sas[0].outbound.enc_key.bytes()[15], 0x0f);
    let dbg = format!("{c:?}");
    for k in SECRETS {
        assert!(!dbg.contains(k), "key in Debug output");
    }
    // Nor as Debug of the byte values.
    assert!(!dbg.contains("[0, 1, 2, 3"), "{dbg}");
    assert!(dbg.contains("<16 bytes>") && dbg.contains("<20 bytes>"));
}

#[test]
fn syntax_error() {
    let s = fails(
        &edit("spi_out = 0x1111", "spi_out = = 0x1111"),
        "gw.toml:11: syntax: ",
    );
    assert_eq!(s.lines().count(), 1);
    fails(
        &edit(
            "protected = \"lan0\"",
            "protected = \"lan0\"\nprotected = \"x\"",
        ),
        "gw.toml:4: syntax: duplicate key",
    );
}

#[test]
fn unknown_keys() {
    fails(
        &edit("mode = \"tunnel\"", "mode = \"tunnel\"\nbogus = true"),
        "gw.toml:8: sa[0].bogus: unknown key (expected one of: name, mode,",
    );
    // a misspelt key names what was meant, and the key it stands for is not reported missing
    let s = fails(
        &edit("[gateway]", "[gatway]"),
        "gw.toml:1: gatway: unknown key; did you mean \"gateway\"?",
    );
    assert!(!s.contains("missing"), "{s}");
    let s = fails(
        &edit("[gateway]", "[gateway]\nqueue = [1]"),
        "gw.toml:2: gateway.queue: unknown key; did you mean \"queues\"?",
    );
    assert_eq!(s.lines().count(), 1, "{s}");
    let s = fails(
        &edit("encryption = ", "encr = "),
        "gw.toml:12: sa[0].encr: unknown key; did you mean \"encryption\"?",
    );
    assert_eq!(s.lines().count(), 1, "{s}");
    // another tool's name for a key
    let s = fails(&edit("local = \"192.168.", "src = \"192.168."), "gw.toml:");
    assert!(
        s.contains("src: unknown key; did you mean \"local\"?") && !s.contains("missing"),
        "{s}"
    );
    fails(
        &edit("sa = \"branch\"\n", "sa = \"branch\"\n[policy.x]\ny = 1\n"),
        "gw.toml:25: policy[0].x: unknown key",
    );
}

#[test]
fn missing_keys_point_at_the_table() {
    fails(
        &edit("name = \"branch\"\n", ""),
        "gw.toml:5: sa[0].name: missing required key",
    );
    fails(
        &edit("spi_in = 0x2222\n", ""),
        "gw.toml:5: sa[0].spi_in: missing required key",
    );
    fails(
        &edit(
            "auth_key_out = \"0xc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3\"\n",
            "",
        ),
        "gw.toml:5: sa[0].auth_key_out: missing required key",
    );
    fails(
        &edit("local = \"10.0.0.1\"\n", ""),
        "gw.toml:5: sa[0].local: tunnel mode needs both local and remote",
    );
}

#[test]
fn bad_types() {
    fails(
        &edit("spi_in = 0x2222", "spi_in = true"),
        "gw.toml:10: sa[0].spi_in: expected an integer, found a boolean",
    );
    fails(
        &edit("protected = \"lan0\"", "protected = 3"),
        "gw.toml:3: gateway.protected: expected a string, found an integer",
    );
    fails(
        &edit("[[sa]]", "[sa]"),
        "gw.toml:5: sa: expected an array of tables: write [[sa]]",
    );
}

#[test]
fn key_errors_name_the_key_and_not_its_value() {
    // Bad hex: the digit's position, never the key.
    fails(
        &edit("0x0f0e0d0c0b0a0908", "0x0f0e0d0c0b0a09zz"),
        "gw.toml:14: sa[0].enc_key_in: not a hex digit in byte 8 of the key",
    );
    fails(
        &edit(
            "0x000102030405060708090a0b0c0d0e0f",
            "0x000102030405060708090a0b0c0d0e0",
        ),
        "gw.toml:15: sa[0].enc_key_out: odd number of hex digits (31)",
    );
    // Wrong length: the engine's check, mapped onto the TOML key of its direction.
    fails(
        &edit(
            "0x000102030405060708090a0b0c0d0e0f",
            "0x000102030405060708090a0b0c0d0e",
        ),
        "gw.toml:15: sa[0].enc_key_out: encryption key for aes128 must be 16 bytes, got 15",
    );
    fails(
        &edit(
            "0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "ascii:0123456789",
        ),
        "gw.toml:16: sa[0].auth_key_in: integrity key for sha1 must be 20 bytes, got 10",
    );
    fails(
        &edit(
            "0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "a0a1a2a3a4a5a6a7",
        ),
        "gw.toml:16: sa[0].auth_key_in: a key is \"0x\" followed by hex digits, or \"ascii:\"",
    );
}

#[test]
fn spi_errors() {
    fails(
        &edit("spi_in = 0x2222", "spi_in = 0"),
        "gw.toml:10: sa[0].spi_in: SPI 0 is reserved",
    );
    fails(
        &edit("spi_out = 0x1111", "spi_out = \"0x10\""),
        "gw.toml:11: sa[0].spi_out: SPI 16 is in the range 1-255",
    );
    fails(
        &edit("spi_out = 0x1111", "spi_out = 0x2222"),
        "gw.toml:11: sa[0].spi_out: spi_out equals spi_in",
    );
    fails(
        &edit("spi_in = 0x2222", "spi_in = 0x100000000"),
        "gw.toml:10: sa[0].spi_in: SPI 4294967296 does not fit in 32 bits",
    );
    // String SPIs: hex and decimal.
    let c = parse(&edit("spi_in = 0x2222", "spi_in = \"0x2223\"")).unwrap();
    assert_eq!(c.sas[0].inbound.spi, 0x2223);
    let c = parse(&edit("spi_in = 0x2222", "spi_in = \"1111\"")).unwrap();
    assert_eq!(c.sas[0].inbound.spi, 1111);
}

/// GOOD with a second SA pair appended (lines 26-39).
fn two_sas(second: &str) -> String {
    format!("{GOOD}\n{second}")
}

const SECOND: &str = r#"[[sa]]
name = "other"
mode = "tunnel"
local = "10.0.0.1"
remote = "10.0.0.3"
spi_in = 0x3333
spi_out = 0x4444
encryption = "aes-gcm-128"
enc_key_in = "0x0102030405060708090a0b0c0d0e0f1011121314"
enc_key_out = "0x1102030405060708090a0b0c0d0e0f1011121314"
"#;

/// RFC 4301 §5.2 fails closed: the inbound SA of a pair that no policy names gets no
/// selectors (it accepts nothing); nothing substitutes "any" for it.
#[test]
fn sa_pair_no_policy_names_has_no_selectors() {
    let c = parse(&two_sas(SECOND)).unwrap();
    let (named, unnamed) = (&c.sas[0], &c.sas[1]);
    assert_eq!(
        (named.name.as_str(), unnamed.name.as_str()),
        ("branch", "other")
    );
    assert_eq!(named.inbound.selectors, vec![c.spd.outbound[0].selector]);
    assert!(unnamed.inbound.selectors.is_empty());
    assert!(unnamed.outbound.selectors.is_empty());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.to_string().contains("accepts nothing")),
        "{:?}",
        c.warnings
    );
    // The engine installs it as it is.
    xsec_dataplane::sa::Sa::new(&unnamed.inbound, xsec_dataplane::Timestamp::ZERO).unwrap();

    // A policy of "any" is how a pair says it accepts anything.
    let any = two_sas(&format!(
        "{SECOND}\n[[policy]]\nname = \"rest\"\nlocal = \"any\"\nremote = \"any\"\n\
         action = \"protect\"\nsa = \"other\"\n"
    ));
    let c = parse(&any).unwrap();
    assert_eq!(c.sas[1].inbound.selectors, vec![Selector::ANY]);
}

#[test]
fn duplicates() {
    let ok = parse(&two_sas(SECOND)).unwrap();
    assert_eq!(ok.sas.len(), 2);
    assert_eq!((ok.sas[1].inbound.reqid, ok.sas[1].outbound.reqid), (2, 2));
    // Unused: a warning, not an error.
    let others = other_warnings(&ok);
    assert_eq!(others.len(), 1, "{others:?}");
    assert!(
        others[0]
            .starts_with("gw.toml:27: sa[1].name: SA pair \"other\" is used by no protect policy"),
        "{}",
        others[0]
    );

    fails(
        &two_sas(&SECOND.replace("spi_in = 0x3333", "spi_in = 0x2222")),
        "gw.toml:31: sa[1].spi_in: inbound SPI 8738 (0x2222) is already used by sa[0] \"branch\" (line 5)",
    );
    fails(
        &two_sas(&SECOND.replace("\"other\"", "\"branch\"")),
        "gw.toml:27: sa[1].name: SA name \"branch\" is already used by sa[0]",
    );
    // The same outbound SPI towards another peer is fine; towards the same peer it is not.
    parse(&two_sas(
        &SECOND.replace("spi_out = 0x4444", "spi_out = 0x1111"),
    ))
    .unwrap();
    fails(
        &two_sas(
            &SECOND
                .replace("spi_out = 0x4444", "spi_out = 0x1111")
                .replace("10.0.0.3", "10.0.0.2"),
        ),
        "gw.toml:32: sa[1].spi_out: outbound SPI 4369 (0x1111) to the same peer",
    );
    fails(
        &format!(
            "{GOOD}\n[[policy]]\nname = \"lan\"\nlocal = \"any\"\nremote = \"any\"\naction = \"bypass\"\n"
        ),
        "gw.toml:27: policy[1].name: policy name \"lan\" is already used by policy[0] (line 19)",
    );
}

#[test]
fn policy_sa_references() {
    fails(
        &edit("sa = \"branch\"", "sa = \"brnach\""),
        "gw.toml:24: policy[0].sa: no [[sa]] is named \"brnach\" (SAs: branch)",
    );
    fails(
        &edit("sa = \"branch\"\n", ""),
        "gw.toml:19: policy[0].sa: a protect policy needs the name of an [[sa]]",
    );
    fails(
        &edit("action = \"protect\"", "action = \"bypass\""),
        "gw.toml:24: policy[0].sa: only protect policies name SAs; remove sa",
    );
    // An SA with errors of its own is not reported again as unknown.
    let s = fails(
        &edit("encryption = \"aes-cbc-128\"", "encryption = \"rot13\""),
        "gw.toml:12: sa[0].encryption: unknown encryption algorithm \"rot13\"",
    );
    assert_eq!(s.lines().count(), 1, "{s}");
}

#[test]
fn selector_errors() {
    fails(
        &edit("192.168.20.0/24", "192.168.20.0/33"),
        "gw.toml:22: policy[0].remote: prefix length 33 is longer than 32 bits",
    );
    fails(
        &edit("192.168.20.0/24", "192.168.20.0/2x"),
        "gw.toml:22: policy[0].remote: invalid address",
    );
    fails(
        &edit("192.168.20.0/24", "fd00::/64"),
        "gw.toml:22: policy[0].remote: local and remote addresses are of different IP versions",
    );
    fails(
        &edit(
            "action",
            "protocol = \"tcp\"\nlocal_port = \"2000-1000\"\naction",
        ),
        "gw.toml:24: policy[0].local_port: invalid port or range \"2000-1000\"",
    );
    fails(
        &edit("action", "protocol = \"tcp\"\nicmp_type = 8\naction"),
        "gw.toml:24: policy[0].icmp_type: icmp_type needs protocol icmp or icmpv6",
    );
    fails(
        &edit("action", "remote_port = 80\naction"),
        "gw.toml:23: policy[0].remote_port: port selectors need protocol tcp, udp or sctp",
    );
    fails(
        &edit("action", "protocol = \"icmp\"\nremote_port = 80\naction"),
        "gw.toml:24: policy[0].remote_port: ICMP has no ports; use icmp_type and icmp_code",
    );
    // ICMP type and code land in the engine's ICMP selectors.
    let c = parse(&edit(
        "action",
        "protocol = \"icmp\"\nicmp_type = 8\nicmp_code = \"0-3\"\naction",
    ))
    .unwrap();
    let s = c.spd.outbound[0].selector;
    assert_eq!(s.proto, Some(IpProtocol::ICMP));
    assert_eq!(s.local_port, PortSel::Icmp { lo: 8, hi: 8 });
    assert_eq!(s.remote_port, PortSel::Icmp { lo: 0, hi: 3 });
    // Ranges and protocol numbers.
    let c = parse(
        &edit("192.168.20.0/24", "192.168.20.5-192.168.20.9").replace(
            "action",
            "protocol = 17\nremote_port = \"1000-2000\"\naction",
        ),
    )
    .unwrap();
    let s = c.spd.outbound[0].selector;
    assert_eq!(
        s.remote,
        "192.168.20.5-192.168.20.9".parse::<AddrRange>().unwrap()
    );
    assert_eq!(s.remote_port, PortSel::Range { lo: 1000, hi: 2000 });
}

#[test]
fn directions() {
    let c = parse(&edit("action", "direction = \"out\"\naction")).unwrap();
    assert_eq!((c.spd.outbound.len(), c.spd.inbound.len()), (1, 0));
    let c = parse(&edit("action", "direction = \"in\"\naction")).unwrap();
    assert_eq!((c.spd.outbound.len(), c.spd.inbound.len()), (0, 1));
    fails(
        &edit("action", "direction = \"up\"\naction"),
        "gw.toml:23: policy[0].direction: unknown value \"up\"; expected one of \"out\" | \"in\" | \"both\"",
    );
}

#[test]
fn gateway_errors() {
    fails(
        &edit("[gateway]", "[gateway]\nqueues = [0, 1]\ncores = [2]"),
        "gw.toml:3: gateway.cores: 1 cores for 2 queues",
    );
    fails(
        &edit("[gateway]", "[gateway]\nqueues = [0, 0]"),
        "gw.toml:2: gateway.queues[1]: queue 0 is listed twice",
    );
    fails(
        &edit("[gateway]", "[gateway]\nqueues = [0, 1]\ncores = [2, 2]"),
        "gw.toml:3: gateway.cores[1]: core 2 is listed twice",
    );
    fails(
        &edit("protected = \"lan0\"", "protected = \"wan0\""),
        "gw.toml:3: gateway.protected: \"wan0\" is also the unprotected interface",
    );
    fails(
        &edit("[gateway]", "[gateway]\nxdp_mode = \"native\""),
        "gw.toml:2: gateway.xdp_mode: unknown value \"native\"",
    );
    fails(
        &edit("[gateway]", "[gateway]\nmtu = 100"),
        "gw.toml:2: gateway.mtu: 100 is out of range 576..=9216",
    );
    let c = parse(&edit(
        "[gateway]",
        "[gateway]\nqueues = [0, 1]\ncores = [2, 3]\nxdp_mode = \"driver\"\nidle = \"adaptive\"\n\
         mtu = 1400\ninbound_default = \"bypass\"\nstats_interval_ms = 250",
    ))
    .unwrap();
    let g = &c.gateway;
    assert_eq!(
        (g.queues.clone(), g.cores.clone()),
        (vec![0, 1], Some(vec![2, 3]))
    );
    assert_eq!(
        (g.xdp_mode, g.idle),
        (XdpModeCfg::Driver, IdleMode::Adaptive)
    );
    assert_eq!((g.mtu, g.stats_interval_ms), (Some(1400), 250));
    assert_eq!(c.spd.inbound_default, NonPolicy::Bypass);
    assert_eq!(c.spd.outbound_default, NonPolicy::Discard);
    // the fail-closed settings: defaults, then each given
    let d = parse(&edit("[gateway]", "[gateway]")).unwrap();
    assert_eq!(
        (
            d.gateway.forward_guard,
            d.gateway.uncovered_queues.clone(),
            d.gateway.icmp_rate,
            d.gateway.icmp_burst,
            d.spd.inbound_default,
            d.spd.outbound_default,
        ),
        (
            true,
            vec![],
            100,
            20,
            NonPolicy::Discard,
            NonPolicy::Discard
        )
    );
    let c = parse(&edit(
        "[gateway]",
        "[gateway]\nqueues = [0]\nuncovered_queues = [1, 2]\nforward_guard = false\n\
         icmp_rate = 0\nicmp_burst = 3\nallow_non_policy = true",
    ))
    .unwrap();
    let g = &c.gateway;
    assert_eq!(
        (
            g.uncovered_queues.clone(),
            g.forward_guard,
            g.icmp_rate,
            g.icmp_burst
        ),
        (vec![1, 2], false, 0, 3)
    );
    assert_eq!(
        (c.spd.inbound_default, c.spd.outbound_default),
        (NonPolicy::Bypass, NonPolicy::Bypass)
    );
    fails(
        &edit(
            "[gateway]",
            "[gateway]\nallow_non_policy = true\ninbound_default = \"discard\"",
        ),
        "gw.toml:3: gateway.inbound_default: \"discard\" contradicts allow_non_policy = true",
    );
    fails(
        &edit(
            "[gateway]",
            "[gateway]\nqueues = [0, 1]\nuncovered_queues = [1]",
        ),
        "gw.toml:3: gateway.uncovered_queues: queue 1 is in both `queues` and `uncovered_queues`",
    );
    fails(
        &edit("[gateway]", "[gateway]\nforward_guard = \"yes\""),
        "gw.toml:2: gateway.forward_guard:",
    );
}

#[test]
fn sa_options() {
    let c = parse(&edit(
        "enc_key_in",
        "encap = \"nat-t\"\nudp_local_port = 4501\nreplay_window = 0\nesn = false\n\
         df = \"clear\"\nttl = 32\ndscp = 46\necn = \"compatibility\"\nenc_key_in",
    ))
    .unwrap();
    let p = &c.sas[0];
    assert_eq!(
        p.outbound.encap,
        Encap::Udp {
            local_port: 4501,
            remote_port: 4500
        }
    );
    assert_eq!(p.keepalive, Some(std::time::Duration::from_secs(20)));
    assert_eq!((p.inbound.replay_window, p.inbound.ttl), (0, 32));
    let c = parse(&edit(
        "enc_key_in",
        "encap = \"udp\"\nkeepalive = 0\nenc_key_in",
    ))
    .unwrap();
    assert_eq!(c.sas[0].keepalive, None);
    assert_eq!(c.sas[0].inbound.encap, Encap::UDP_2746);

    fails(
        &edit("enc_key_in", "keepalive = 10\nenc_key_in"),
        "gw.toml:14: sa[0].keepalive: keepalive needs encap = \"udp\" or \"nat-t\"",
    );
    fails(
        &edit(
            "enc_key_in",
            "encap = \"udp\"\nudp_remote_port = 500\nenc_key_in",
        ),
        "gw.toml:15: sa[0].udp_remote_port: UDP 500 carries IKE",
    );
    fails(
        &edit("enc_key_in", "esn = true\nreplay_window = 0\nenc_key_in"),
        "gw.toml:15: sa[0].replay_window: ESN needs an anti-replay window",
    );
    fails(
        &edit(
            "integrity = \"hmac-sha1-96\"",
            "integrity = \"hmac-md5-96\"",
        ),
        "gw.toml:13: sa[0].integrity: md5 is refused",
    );
    fails(
        &edit("mode = \"tunnel\"", "mode = \"tunel\""),
        "gw.toml:7: sa[0].mode: unknown value \"tunel\"; expected one of \"tunnel\" | \"transport\"",
    );
    fails(
        &format!("{GOOD}\n[sa.lifetime]\nsoft_seconds = 3600\nhard_seconds = 3000\n"),
        "gw.toml:27: sa[0].lifetime.soft_seconds: the soft limit (3600) must be below the hard limit (3000)",
    );
    let c = parse(&format!(
        "{GOOD}\n[sa.lifetime]\nsoft_seconds = 3000\nhard_seconds = 3600\nsoft_bytes = 1000000\n\
         hard_packets = 5000\nidle_seconds = 600\n"
    ))
    .unwrap();
    let lt = c.sas[0].outbound.lifetime;
    assert_eq!(lt.soft.time, Some(std::time::Duration::from_secs(3000)));
    assert_eq!(lt.hard.time, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(
        (lt.soft.bytes, lt.hard.packets),
        (Some(1_000_000), Some(5000))
    );
    assert_eq!(lt.idle, Some(std::time::Duration::from_secs(600)));
}

#[test]
fn transport_selectors_must_be_the_endpoints() {
    let t = edit("mode = \"tunnel\"", "mode = \"transport\"");
    fails(
        &t,
        "gw.toml:21: policy[0].local: transport mode protects only the endpoints' own traffic: \
         local must be 10.0.0.1",
    );
    let ok = t
        .replace("192.168.10.0/24", "10.0.0.1")
        .replace("192.168.20.0/24", "10.0.0.2");
    parse(&ok).unwrap();
    // Without endpoint addresses the selectors alone decide.
    let open = t
        .replace("local = \"10.0.0.1\"\n", "")
        .replace("remote = \"10.0.0.2\"\n", "");
    parse(&open).unwrap();
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let text = edit("spi_in = 0x2222", "spi_in = 0")
        .replace("[gateway]", "[gateway]\nidle = \"lazy\"")
        .replace("sa = \"branch\"", "sa = \"branch\"\ncolour = \"red\"");
    let e = parse(&text).unwrap_err();
    let fields: Vec<(usize, &str)> = e
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (2, "gateway.idle"),
            (11, "sa[0].spi_in"),
            (26, "policy[0].colour")
        ]
    );
}

#[test]
fn read_errors_name_the_file() {
    let e = config::load(Path::new("/nonexistent/xsec.toml")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/xsec.toml: "), "{e}");
    assert!(e.diagnostics().is_empty());
}

#[test]
fn control_section() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.control, config::ControlConfig::default());
    assert_eq!(c.control.socket, Path::new(config::DEFAULT_SOCKET));
    let text = format!(
        "{GOOD}\n[control]\nsocket = \"/run/x/ctl.sock\"\ngroup = \"xsec-ops\"\nmetrics = \"127.0.0.1:9101\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.control.socket, Path::new("/run/x/ctl.sock"));
    assert_eq!(c.control.group.as_deref(), Some("xsec-ops"));
    assert_eq!(c.control.metrics, Some("127.0.0.1:9101".parse().unwrap()));
    let line = GOOD.lines().count() + 3;
    fails(
        &format!("{GOOD}\n[control]\nsocket = \"run/x.sock\"\n"),
        &format!("gw.toml:{line}: control.socket: \"run/x.sock\" must be an absolute path"),
    );
    fails(
        &format!("{GOOD}\n[control]\nsocket = \"/{}\"\n", "a".repeat(120)),
        &format!("gw.toml:{line}: control.socket: 121 bytes is too long"),
    );
    fails(
        &format!("{GOOD}\n[control]\ngroup = \"a b\"\n"),
        &format!("gw.toml:{line}: control.group: \"a b\" is not a valid group name"),
    );
    fails(
        &format!("{GOOD}\n[control]\nmetrics = \"localhost\"\n"),
        &format!("gw.toml:{line}: control.metrics: "),
    );
    fails(
        &format!("{GOOD}\n[control]\nsockett = \"/x\"\n"),
        &format!("gw.toml:{line}: control.sockett: unknown key"),
    );
    fails(
        &format!("control = 3\n{GOOD}"),
        "gw.toml:1: control: expected a table",
    );
}

/// RFC 4106 §2: a manually keyed combined mode draws a warning naming the file, line and
/// field (`xsecd --check` prints it); CBC with HMAC does not.
#[test]
fn manual_keys_for_a_combined_mode_are_warned_about() {
    let c = load("mcp-transport-a.toml");
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter().any(|w| w
            .contains("mcp-transport-a.toml:20: sa[0].encryption: aes128gcm16 is a combined mode")),
        "{w:?}"
    );
    for name in ["smartware-cbc-a.toml", "ar410-tunnel-a.toml"] {
        let c = load(name);
        assert!(c.warnings.is_empty(), "{name}: {:?}", c.warnings);
    }
}

/// Thousands of manually keyed GCM SAs (a hub) draw three warnings and a count, not one
/// line each.
#[test]
fn many_combined_mode_sas_are_warned_about_once_each_for_three_then_counted() {
    let mut text = String::from("[gateway]\nunprotected = \"wan0\"\nprotected = \"lan0\"\n");
    for i in 0..10u32 {
        text.push_str(&format!(
            "\n[[sa]]\nname = \"t{i}\"\nmode = \"tunnel\"\nlocal = \"10.0.0.1\"\n\
             remote = \"10.0.0.2\"\nspi_in = {}\nspi_out = {}\nencryption = \"aes-gcm-128\"\n\
             enc_key_in = \"0x{:040x}\"\nenc_key_out = \"0x{:040x}\"\n",
            0x1000 + i,
            0x2000 + i,
            i + 1,
            i + 100
        ));
        text.push_str(&format!(
            "\n[[policy]]\nname = \"p{i}\"\nlocal = \"192.168.10.0/24\"\n\
             remote = \"172.16.{i}.0/24\"\naction = \"protect\"\nsa = \"t{i}\"\n"
        ));
    }
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 4, "{w:?}");
    for (i, w) in w.iter().take(3).enumerate() {
        assert!(
            w.contains(&format!(
                "sa[{i}].encryption: aes128gcm16 is a combined mode"
            )),
            "{w}"
        );
    }
    assert!(
        w[3].contains(
            "sa[3].encryption: and 7 more SA pairs from here on with a manually keyed combined mode"
        ),
        "{}",
        w[3]
    );
}

/// GOOD's SA as AH: `protocol = "ah"`, no encryption, HMAC-SHA1-96 keys.
fn good_ah() -> String {
    edit(
        "encryption = \"aes-cbc-128\"\nintegrity = \"hmac-sha1-96\"\n\
         enc_key_in = \"0x0f0e0d0c0b0a09080706050403020100\"\n\
         enc_key_out = \"0x000102030405060708090a0b0c0d0e0f\"\n",
        "protocol = \"ah\"\nintegrity = \"hmac-sha1-96\"\n",
    )
}

/// The AR410-style bundle: IPComp (LZS, tunnel) → ESP (transport) → AH (transport).
#[test]
fn ar410_bundle_example() {
    let c = load("ar410-bundle-a.toml");
    let kinds: Vec<(Protocol, Mode, u32)> = c
        .sas
        .iter()
        .map(|p| (p.outbound.protocol, p.outbound.mode, p.outbound.spi))
        .collect();
    assert_eq!(
        kinds,
        [
            (Protocol::IpComp(CompAlg::Lzs), Mode::Tunnel, 3),
            (Protocol::Esp, Mode::Transport, 0x3111),
            (Protocol::Ah, Mode::Transport, 0x4111),
        ]
    );
    let reqids: Vec<u32> = c.sas.iter().map(|p| p.outbound.reqid).collect();
    for dir in [Direction::Outbound, Direction::Inbound] {
        let p = &c.spd.policies(dir)[0];
        assert_eq!(
            p.action,
            Action::Protect(SaBundle::new(&reqids).unwrap()),
            "{dir}"
        );
    }
    // every inbound SA of the bundle got the policy's selector
    for p in &c.sas {
        assert_eq!(p.inbound.selectors.len(), 1, "{}", p.name);
    }
    c.spd.compile().unwrap();
}

#[test]
fn ipcomp_and_bundle_errors() {
    let base = std::fs::read_to_string(example("ar410-bundle-a.toml")).unwrap();
    let p = |t: &str| config::parse(t, Path::new("gw.toml"));
    let err = |t: &str| p(t).unwrap_err().to_string();
    let e = err(&base.replace("compression = \"lzs\"", "compression = \"lzw\""));
    assert!(
        e.contains("sa[0].compression") && e.contains("\"lzs\""),
        "{e}"
    );
    let e = err(&base.replace("compression = \"lzs\"", ""));
    assert!(
        e.contains("sa[0].compression") && e.contains("IPComp SA needs"),
        "{e}"
    );
    let e = err(&base.replace(
        "protocol = \"ipcomp\"",
        "protocol = \"ipcomp\"\ncpi_in = 200",
    ));
    assert!(e.contains("sa[0].cpi_in") && e.contains("64-255"), "{e}");
    let e = err(&base.replace(
        "protocol = \"ipcomp\"",
        "protocol = \"ipcomp\"\nencryption = \"aes-cbc-128\"",
    ));
    assert!(
        e.contains("sa[0].encryption") && e.contains("IPComp does not encrypt"),
        "{e}"
    );
    let e = err(&base.replace("\"to-b-esp\", \"to-b-ah\"]", "\"to-b-esp\", \"to-b-esp\"]"));
    assert!(
        e.contains("policy[0].bundle[2]") && e.contains("twice"),
        "{e}"
    );
    let e = err(&base.replace("\"to-b-ah\"]", "\"to-b-ahh\"]"));
    assert!(
        e.contains("policy[0].bundle[2]") && e.contains("no [[sa]] is named"),
        "{e}"
    );
    let e = err(&base.replace(
        "action = \"protect\"",
        "action = \"protect\"\nsa = \"to-b-ah\"",
    ));
    assert!(e.contains("not both"), "{e}");
    let e = err(&base.replace("bundle = []", "").replace(
        "bundle = [\"to-b-comp\", \"to-b-esp\", \"to-b-ah\"]",
        "bundle = []",
    ));
    assert!(
        e.contains("policy[0].bundle") && e.contains("1 to 4"),
        "{e}"
    );
}

/// The MCP-style AH pair: host-to-host transport AH with HMAC-SHA1-96, manual keys.
#[test]
fn mcp_ah_transport_example() {
    let c = load("mcp-ah-transport-a.toml");
    let sa = &c.sas[0];
    for x in [&sa.inbound, &sa.outbound] {
        assert_eq!(x.protocol, Protocol::Ah);
        assert_eq!(x.mode, Mode::Transport);
        assert_eq!((x.enc, x.auth), (EncAlg::Null, AuthAlg::HmacSha1_96));
        assert_eq!(x.auth_key.len(), 20);
    }
    assert_eq!((sa.inbound.spi, sa.outbound.spi), (0x5102, 0x5101));
}

#[test]
fn ah_sas_and_their_errors() {
    let c = parse(&good_ah()).unwrap_or_else(|e| panic!("{e}"));
    for sa in [&c.sas[0].inbound, &c.sas[0].outbound] {
        assert_eq!(sa.protocol, Protocol::Ah);
        assert_eq!((sa.enc, sa.auth), (EncAlg::Null, AuthAlg::HmacSha1_96));
        assert!(sa.enc_key.is_empty());
        sa.validate().unwrap();
    }
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // ESP stays the default
    assert_eq!(parse(GOOD).unwrap().sas[0].outbound.protocol, Protocol::Esp);

    let s = fails(
        &good_ah().replace(
            "protocol = \"ah\"\n",
            "protocol = \"ah\"\nencryption = \"aes-cbc-128\"\n",
        ),
        "gw.toml:13: sa[0].encryption: AH does not encrypt",
    );
    assert!(s.contains("RFC 4302"), "{s}");
    fails(
        &good_ah().replace("integrity = \"hmac-sha1-96\"\n", ""),
        "gw.toml:5: sa[0].integrity: AH needs an integrity algorithm",
    );
    let s = fails(
        &good_ah().replace(
            "protocol = \"ah\"\n",
            "protocol = \"ah\"\nencap = \"nat-t\"\n",
        ),
        "gw.toml:",
    );
    assert!(
        s.contains("encap") && s.contains("AH cannot be UDP-encapsulated"),
        "{s}"
    );
    let s = fails(
        &good_ah().replace("protocol = \"ah\"", "protocol = \"ipsec\""),
        "gw.toml:12: sa[0].protocol:",
    );
    assert!(s.contains("\"esp\"") && s.contains("\"ah\""), "{s}");
    let s = fails(
        &good_ah().replace("hmac-sha1-96", "hmac-md5-96"),
        "gw.toml:",
    );
    assert!(
        s.contains("sa[0].integrity") && s.contains("MUST NOT"),
        "{s}"
    );
}

/// AES-GMAC (RFC 4543 §4) is an integrity algorithm for AH only, keyed with key ‖ salt;
/// AES-CMAC-96 (RFC 4494) for both, with a 16-byte key.
#[test]
fn gmac_and_cmac_integrity() {
    // GOOD's 20-byte integrity keys are an AES-128 key and a salt
    let c =
        parse(&good_ah().replace("hmac-sha1-96", "aes128gmac")).unwrap_or_else(|e| panic!("{e}"));
    for sa in [&c.sas[0].inbound, &c.sas[0].outbound] {
        assert_eq!(sa.auth, AuthAlg::AesGmac128);
        xsec_dataplane::sa::Sa::new(sa, xsec_dataplane::Timestamp::ZERO).unwrap();
    }
    let s = fails(&good_ah().replace("hmac-sha1-96", "aes256gmac"), "gw.toml:");
    assert!(
        s.contains("auth_key") && s.contains("36 bytes (key followed by a 4-byte salt)"),
        "{s}"
    );
    let s = fails(
        &edit(
            "integrity = \"hmac-sha1-96\"\n",
            "integrity = \"aes128gmac\"\n",
        )
        .replace("encryption = \"aes-cbc-128\"", "encryption = \"null\"")
        .replace("enc_key_in = \"0x0f0e0d0c0b0a09080706050403020100\"\n", "")
        .replace("enc_key_out = \"0x000102030405060708090a0b0c0d0e0f\"\n", ""),
        "gw.toml:",
    );
    assert!(
        s.contains("sa[0].integrity") && s.contains("AH's (RFC 4543"),
        "{s}"
    );
    let s = fails(
        &good_ah().replace("hmac-sha1-96", "aes-cmac-96"),
        "gw.toml:",
    );
    assert!(s.contains("auth_key") && s.contains("16 bytes"), "{s}");
}

#[test]
fn confidentiality_only_esp_needs_allow_legacy_and_is_warned_about() {
    let no_integ = edit("integrity = \"hmac-sha1-96\"\n", "")
        .replace(
            "auth_key_in = \"0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3\"\n",
            "",
        )
        .replace(
            "auth_key_out = \"0xc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3\"\n",
            "",
        );
    let s = fails(
        &no_integ,
        "gw.toml:5: sa[0].integrity: aes128 without integrity",
    );
    assert!(
        s.contains("allow_legacy = true") && s.contains("active attacks"),
        "{s}"
    );
    let legacy = no_integ.replace(
        "encryption = \"aes-cbc-128\"\n",
        "encryption = \"aes-cbc-128\"\nallow_legacy = true\n",
    );
    let c = parse(&legacy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sas[0].outbound.auth, AuthAlg::None);
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter().any(
            |w| w.starts_with("gw.toml:5: sa[0].integrity: confidentiality-only ESP")
                && w.contains("replay")
        ),
        "{w:?}"
    );
    // 3DES: refused without the key, and the error names it
    let s = fails(
        &edit("encryption = \"aes-cbc-128\"", "encryption = \"3des\"")
            .replace(
                "enc_key_in = \"0x0f0e0d0c0b0a09080706050403020100\"",
                "enc_key_in = \"0x0f0e0d0c0b0a09080706050403020100a1a2a3a4a5a6a7a8\"",
            )
            .replace(
                "enc_key_out = \"0x000102030405060708090a0b0c0d0e0f\"",
                "enc_key_out = \"0x000102030405060708090a0b0c0d0e0fb1b2b3b4b5b6b7b8\"",
            ),
        "gw.toml:",
    );
    assert!(
        s.contains("sa[0].encryption") && s.contains("allow_legacy = true"),
        "{s}"
    );
}
