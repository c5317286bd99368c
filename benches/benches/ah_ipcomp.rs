//! AH and IPComp in the engine.
//!
//! **AH**: cycles per packet of AH tunnel-mode protection and verification through the
//! burst API (bursts of 32, IPv4, HMAC-SHA1-96, HMAC-SHA-256-128, AES-CMAC-96 and
//! AES-128-GMAC) against the same MACs computed one packet at a time — the SHA-NI HMAC key
//! the engine uses, RustCrypto's CMAC, ring's AES-GCM over an empty plaintext — over buffers
//! of the packets' AH-protected length, paired per round on a pinned core, as `overhead`
//! does for ESP. AH adds the outer header, the mutable fields zeroed and restored and the
//! SA's state; a burst's HMAC packets are hashed together by the multi-buffer kernels (16
//! lanes of AVX-512 for SHA-1, SHA-NI pairs for SHA-256), which the single calls are not
//! (CMAC and GMAC go one packet at a time in both).
//!
//! **IPComp**: compression and decompression of one 1,400-byte payload, text-like and
//! random, with DEFLATE and LZS: ns per packet and MB/s of uncompressed bytes, and the
//! compressed size (a random payload is not compressed: what it costs to find that out).
//!
//! `cargo bench -p xsec-benches --bench ah_ipcomp [-- ROUNDS]`

use std::sync::Arc;
use std::time::Instant;
use xsec_benches::*;
use xsec_dataplane::crypto::shani::{HmacSha1Key, HmacSha256Key};
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::ipcomp::Codecs;
use xsec_dataplane::sa::{CompAlg, Protocol, SaConfig};
use xsec_dataplane::spd::{Direction, Selector, SpdConfig};
use xsec_dataplane::{Engine, PacketBuf, Timestamp, Verdict};
use xsec_lab::bench::median;

const BURST: usize = 32;
const T0: Timestamp = Timestamp::ZERO;

enum Mac {
    Sha1(HmacSha1Key),
    Sha256(HmacSha256Key),
    Cmac(Box<cmac::Cmac<aes::Aes128>>),
    /// AES-GCM key and salt: GMAC is AES-GCM over an empty plaintext.
    Gmac(Box<ring::aead::LessSafeKey>, [u8; 4]),
}

impl Mac {
    fn new(auth: AuthAlg, key: &[u8]) -> Mac {
        use cmac::KeyInit;
        match auth {
            AuthAlg::HmacSha1_96 => Mac::Sha1(HmacSha1Key::new(key).expect("SHA-NI")),
            AuthAlg::HmacSha256_128 => Mac::Sha256(HmacSha256Key::new(key).expect("SHA-NI")),
            AuthAlg::AesCmac96 => Mac::Cmac(Box::new(
                cmac::Cmac::new_from_slice(key).expect("a 16-byte key"),
            )),
            AuthAlg::AesGmac128 => {
                let k = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &key[..16])
                    .expect("a 16-byte key");
                Mac::Gmac(
                    Box::new(ring::aead::LessSafeKey::new(k)),
                    key[16..20].try_into().expect("a salt"),
                )
            }
            a => panic!("{a} is not benched"),
        }
    }

    fn mac(&self, data: &[u8], out: &mut [u8; 32]) {
        match self {
            Mac::Sha1(k) => k.mac(data, None, out),
            Mac::Sha256(k) => k.mac(data, None, out),
            Mac::Cmac(k) => {
                use cmac::Mac as _;
                let t = (**k).clone().chain_update(data).finalize().into_bytes();
                out[..16].copy_from_slice(&t);
            }
            Mac::Gmac(k, salt) => {
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(salt);
                n[4..].copy_from_slice(&data[..8]);
                let t = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(n),
                        ring::aead::Aad::from(data),
                        &mut [],
                    )
                    .expect("GMAC");
                out[..16].copy_from_slice(t.as_ref());
            }
        }
    }
}

fn ah_engines(auth: AuthAlg) -> (Engine, xsec_dataplane::sa::SaHandle, Engine) {
    let key: Vec<u8> = (0..auth.key_len() as u8).collect();
    let (l, r) = (
        "10.0.0.1".parse().expect("address"),
        "10.0.0.2".parse().expect("address"),
    );
    let mut out = SaConfig::tunnel(
        0x100,
        Direction::Outbound,
        l,
        r,
        EncAlg::Null,
        &[],
        auth,
        &key,
    );
    let mut inb = SaConfig::tunnel(
        0x100,
        Direction::Inbound,
        r,
        l,
        EncAlg::Null,
        &[],
        auth,
        &key,
    );
    out.protocol = Protocol::Ah;
    inb.protocol = Protocol::Ah;
    inb.selectors = vec![Selector::ANY];
    inb.replay_window = 0;
    let mut a = Engine::new(protect_all());
    let h = a.add_sa(&out, T0).expect("AH SA");
    let mut b = Engine::new(Arc::new(SpdConfig::default().compile().expect("SPD")));
    b.add_sa(&inb, T0).expect("AH SA");
    (a, h, b)
}

fn main() {
    let (rounds, _) = paired_bench_args(400);
    let mhz = tsc_mhz().unwrap_or(0.0);
    println!("CPU: {}", cpu_features());
    println!(
        "TSC {mhz:.0} MHz; {rounds} rounds of {BURST}-packet bursts; cycles per packet, medians; \
         overhead = the paired difference (median of the per-round differences)\n"
    );
    println!("## AH, tunnel mode, IPv4\n");
    println!(
        "| integrity | size | AH protect | MAC alone | **overhead out** | AH verify | MAC alone | **overhead in** |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cyc = |ns: f64| ns * mhz / 1000.0 / BURST as f64;
    for (name, auth) in [
        ("hmac-sha1-96", AuthAlg::HmacSha1_96),
        ("hmac-sha256-128", AuthAlg::HmacSha256_128),
        ("aes-cmac-96", AuthAlg::AesCmac96),
        ("aes128gmac", AuthAlg::AesGmac128),
    ] {
        let key: Vec<u8> = (0..auth.key_len() as u8).collect();
        let mac = Mac::new(auth, &key);
        for size in [64usize, 512, 1420] {
            let inner = ipv4_udp(size, [10, 1, 0, 10], [10, 2, 0, 10]);
            let (mut a, _, mut b) = ah_engines(auth);
            let mut frames: Vec<PacketBuf<Vec<u8>>> = (0..BURST).map(|_| frame(&inner)).collect();
            // what the HMAC covers: outer header + AH + inner packet
            let covered = 20 + 12 + auth.icv_len() + size;
            let bufs: Vec<Vec<u8>> = (0..BURST).map(|i| vec![i as u8; covered]).collect();
            let mut out = [0u8; 32];
            let mut verdicts = vec![Verdict::Unset; BURST];
            let (mut enc_t, mut d_out, mut dec_t, mut d_in, mut mac_t) =
                (vec![], vec![], vec![], vec![], vec![]);
            for round in 0..rounds + 50 {
                for f in frames.iter_mut() {
                    reset(f, &inner);
                }
                let t = Instant::now();
                let n = a.outbound_burst(T0, &mut frames, &mut verdicts);
                let e = t.elapsed().as_nanos() as f64;
                debug_assert_eq!(n, BURST);
                let t = Instant::now();
                for buf in &bufs {
                    mac.mac(buf, &mut out);
                    std::hint::black_box(&out);
                }
                let m = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                let n = b.inbound_burst(T0, &mut frames, &mut verdicts);
                let d = t.elapsed().as_nanos() as f64;
                debug_assert_eq!(n, BURST);
                let t = Instant::now();
                for buf in &bufs {
                    mac.mac(buf, &mut out);
                    std::hint::black_box(&out);
                }
                let m2 = t.elapsed().as_nanos() as f64;
                if round >= 50 {
                    enc_t.push(e);
                    dec_t.push(d);
                    mac_t.push(m);
                    d_out.push(e - m);
                    d_in.push(d - m2);
                }
            }
            let (e, d, m) = (median(&mut enc_t), median(&mut dec_t), median(&mut mac_t));
            println!(
                "| {name} | {size} | {:.0} | {:.0} | **{:.0}** | {:.0} | {:.0} | **{:.0}** |",
                cyc(e),
                cyc(m),
                cyc(median(&mut d_out)),
                cyc(d),
                cyc(m),
                cyc(median(&mut d_in)),
            );
        }
    }

    println!("\n## IPComp, one 1,400-byte payload\n");
    println!(
        "| algorithm | payload | compress ns | MB/s | compressed bytes | decompress ns | MB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut codecs = Codecs::new();
    let text: Vec<u8> =
        b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: text/html\r\n\r\n"
            .iter()
            .cycle()
            .take(1400)
            .copied()
            .collect();
    let mut x = 0x1234_5678u32;
    let random: Vec<u8> = (0..1400)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let n = rounds.max(100) * 4;
    for alg in [CompAlg::Deflate, CompAlg::Lzs] {
        for (label, p) in [("text", &text), ("random", &random)] {
            let mut ct = vec![];
            let mut size = None;
            for _ in 0..n {
                let t = Instant::now();
                size = codecs.compress(alg, p, p.len() - 5);
                ct.push(t.elapsed().as_nanos() as f64);
            }
            let c = median(&mut ct);
            let (dec, zlen) = match size {
                Some(z) => {
                    let stream = codecs.output(z).to_vec();
                    let mut dt = vec![];
                    for _ in 0..n {
                        let t = Instant::now();
                        let m = codecs.decompress(alg, &stream, 2048).expect("own stream");
                        std::hint::black_box(m);
                        dt.push(t.elapsed().as_nanos() as f64);
                    }
                    let d = median(&mut dt);
                    (
                        format!("{d:.0} | {:.0}", p.len() as f64 * 1000.0 / d),
                        z.to_string(),
                    )
                }
                None => ("- | -".to_owned(), "not smaller: sent as is".to_owned()),
            };
            println!(
                "| {} | {label} | {c:.0} | {:.0} | {zlen} | {dec} |",
                alg.name(),
                p.len() as f64 * 1000.0 / c,
            );
        }
    }
}
