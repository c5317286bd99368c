//! Every case of NIST's CAVS 17.3 IKEv2 key-derivation vectors (`ikev2.fax`, 900 cases:
//! HMAC-SHA-1/256/384/512, g^ir of 256, 2048 and 8192 bits): SKEYSEED, the IKE SA's DKM, a
//! Child SA's DKM without and with a new Diffie-Hellman, and the SKEYSEED of a rekeyed IKE
//! SA. The vectors are found through `XSEC_VECTORS`, else at `../shared/vectors/ike` beside
//! the workspace; a missing file fails the test.

use std::collections::HashMap;
use std::path::PathBuf;
use xsec_ike::ike::kdf::{KeyLengths, Prf};

fn vectors() -> String {
    let dir = std::env::var_os("XSEC_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ike"),
        PathBuf::from,
    );
    let f = dir.join("ikev2.fax");
    std::fs::read_to_string(&f).unwrap_or_else(|e| {
        panic!(
            "the NIST IKEv2 vectors are missing: {} ({e}); set XSEC_VECTORS to their folder",
            f.display()
        )
    })
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("not hex ({e}): {s}"))
}

#[test]
fn every_nist_ikev2_case() {
    let text = vectors();
    let mut prf = None;
    let mut lens: HashMap<String, usize> = HashMap::new();
    let mut case: HashMap<String, String> = HashMap::new();
    let mut checked = 0;
    let run = |prf: Prf, lens: &HashMap<String, usize>, c: &HashMap<String, String>| {
        let get = |k: &str| hex(c.get(k).unwrap_or_else(|| panic!("no {k} in {c:?}")));
        let (ni, nr, g, g_new) = (get("Ni"), get("Nr"), get("g^ir"), get("g^ir (new)"));
        let count = &c["COUNT"];
        let skeyseed = prf.skeyseed(&ni, &nr, &g);
        assert_eq!(
            skeyseed[..],
            get("SKEYSEED")[..],
            "{prf:?} COUNT {count}: SKEYSEED"
        );
        let dkm_len = lens["DKM length"] / 8;
        let (spi_i, spi_r) = (get("SPIi"), get("SPIr"));
        let dkm = prf
            .prf_plus(&skeyseed, &[&ni, &nr, &spi_i, &spi_r], dkm_len)
            .expect("DKM");
        assert_eq!(dkm[..], get("DKM")[..], "{prf:?} COUNT {count}: DKM");
        // SK_d is the DKM's first PRF-length bytes; ike_keys cuts it the same way
        let keys = prf
            .ike_keys(
                &skeyseed,
                &ni,
                &nr,
                [
                    spi_i.clone().try_into().expect("8-byte SPI"),
                    spi_r.clone().try_into().expect("8-byte SPI"),
                ],
                KeyLengths { integ: 0, encr: 0 },
            )
            .expect("IKE keys");
        assert_eq!(keys.d[..], dkm[..prf.output_len()]);
        let child_len = lens["Child SA DKM length"] / 8;
        let child = prf
            .child_keymat(&keys.d, None, &ni, &nr, child_len)
            .expect("Child SA DKM");
        assert_eq!(
            child[..],
            get("DKM(Child SA)")[..],
            "{prf:?} COUNT {count}: Child SA"
        );
        let child_dh = prf
            .child_keymat(&keys.d, Some(&g_new), &ni, &nr, child_len)
            .expect("Child SA DKM with D-H");
        assert_eq!(
            child_dh[..],
            get("DKM(Child SA D-H)")[..],
            "{prf:?} COUNT {count}: Child SA D-H"
        );
        let rekey = prf.rekey_skeyseed(&keys.d, &g_new, &ni, &nr);
        assert_eq!(
            rekey[..],
            get("SKEYSEED(Rekey)")[..],
            "{prf:?} COUNT {count}: rekey"
        );
    };
    for line in text.lines().map(str::trim).chain(std::iter::once("")) {
        if line.is_empty() {
            if let (Some(p), true) = (prf, case.contains_key("COUNT")) {
                run(p, &lens, &case);
                checked += 1;
            }
            case.clear();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            match h {
                "SHA-1" => prf = Some(Prf::HmacSha1),
                "SHA-256" => prf = Some(Prf::HmacSha256),
                "SHA-384" => prf = Some(Prf::HmacSha384),
                "SHA-512" => prf = Some(Prf::HmacSha512),
                _ => {
                    if let Some((k, v)) = h.split_once(" = ") {
                        lens.insert(k.trim().to_owned(), v.trim().parse().expect("a length"));
                    }
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(" = ") {
            case.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    assert_eq!(checked, 900, "every case of ikev2.fax");
}
