//! The key exchange against the published vectors in IKE's wire encoding
//! (`../shared/vectors/ike/ke_vectors.json`, or `XSEC_VECTORS`): RFC 3526's 2048-bit MODP
//! group, RFC 5903's P-256 and P-384, RFC 7748 §6.1's Curve25519 (two cases). From each
//! side's private value: its public value, and the same shared secret from either side.
//! Then the peer values a responder must refuse.

use std::path::PathBuf;
use xsec_ike::ike::ke::{Group, KeError, KeyPair};

fn vectors() -> serde_json::Value {
    let dir = std::env::var_os("XSEC_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ike"),
        PathBuf::from,
    );
    let f = dir.join("ke_vectors.json");
    let text = std::fs::read_to_string(&f).unwrap_or_else(|e| {
        panic!(
            "the key-exchange vectors are missing: {} ({e}); set XSEC_VECTORS to their folder",
            f.display()
        )
    });
    serde_json::from_str(&text).expect("ke_vectors.json is JSON")
}

fn hex(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("hex")
}

#[test]
fn every_offered_group_matches_the_published_vectors() {
    let all = vectors();
    let mut checked = 0;
    for (name, group) in [
        ("modp2048", Group::Modp2048),
        ("ecp256", Group::Ecp256),
        ("ecp384", Group::Ecp384),
        ("curve25519_1", Group::Curve25519),
        ("curve25519_2", Group::Curve25519),
    ] {
        let v = &all[name];
        let i = KeyPair::from_private(group, &hex(&v["seed_i"])).expect("i's private value");
        let r = KeyPair::from_private(group, &hex(&v["seed_r"])).expect("r's private value");
        assert_eq!(i.public(), hex(&v["pub_i"]), "{name}: pub_i");
        assert_eq!(r.public(), hex(&v["pub_r"]), "{name}: pub_r");
        let shared = hex(&v["shared"]);
        assert_eq!(
            i.shared(r.public()).expect("i's secret")[..],
            shared[..],
            "{name}"
        );
        assert_eq!(
            r.shared(i.public()).expect("r's secret")[..],
            shared[..],
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn fresh_pairs_agree_and_bad_peer_values_are_refused() {
    for group in [
        Group::Modp2048,
        Group::Ecp256,
        Group::Ecp384,
        Group::Curve25519,
    ] {
        let (a, b) = (
            KeyPair::generate(group).expect("a pair"),
            KeyPair::generate(group).expect("a pair"),
        );
        assert_eq!(a.public().len(), group.public_len());
        assert_ne!(a.public(), b.public());
        assert_eq!(
            a.shared(b.public()).expect("a's secret")[..],
            b.shared(a.public()).expect("b's secret")[..],
            "{group:?}"
        );
        assert_eq!(Group::from_id(group.id()), Some(group));
        // the wrong length
        let short = &b.public()[1..];
        assert!(matches!(a.shared(short), Err(KeError::Length { .. })));
    }
    let m = KeyPair::generate(Group::Modp2048).expect("a pair");
    let mut one = vec![0u8; 256];
    one[255] = 1;
    let p_minus_1 = {
        // p ends in ...ff: p - 1 ends in ...fe
        let mut v = hex::decode(xsec_ike::ike::ke::MODP2048_PRIME_HEX).expect("hex");
        v[255] = 0xfe;
        v
    };
    for bad in [vec![0u8; 256], one, p_minus_1, vec![0xff; 256]] {
        assert_eq!(m.shared(&bad), Err(KeError::Invalid(14)));
    }
    // a point that is not on P-256
    let e = KeyPair::generate(Group::Ecp256).expect("a pair");
    let mut off = e.public().to_vec();
    off[63] ^= 1;
    assert_eq!(e.shared(&off), Err(KeError::Invalid(19)));
    // Curve25519's low-order point 0 gives the all-zero secret
    let x = KeyPair::generate(Group::Curve25519).expect("a pair");
    assert_eq!(x.shared(&[0u8; 32]), Err(KeError::Invalid(31)));
}
