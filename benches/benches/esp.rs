//! ESP encapsulation and decapsulation, one core, per packet size, against the raw crypto
//! calls on the same bytes in the same run: `engine − crypto` is the engine's own overhead.
//!
//! Each measured iteration takes one prepared packet (preparation is not timed): for encap a
//! fresh copy of the inner packet, for decap a fresh ESP packet with the next sequence number
//! (so the replay window does its real work). Sizes are those of the inner IP packet.
//! `cargo bench --bench esp`; `cargo run -p xsec-benches --bin report` prints cycles.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use xsec_benches::*;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, Spd, SpdConfig};
use xsec_dataplane::{Timestamp, Verdict};

const T0: Timestamp = Timestamp::ZERO;

/// The crypto the engine performs for one packet of `inner` bytes, done directly with the
/// same libraries on a buffer of the same layout.
struct RawCrypto {
    gcm: Option<ring::aead::LessSafeKey>,
    cbc_enc: Option<aes::Aes128Enc>,
    cbc_dec: Option<aes::Aes128Dec>,
    sha1: Option<hmac::Hmac<sha1::Sha1>>,
    sha256: Option<hmac::Hmac<sha2::Sha256>>,
}

impl RawCrypto {
    fn new(enc: EncAlg, auth: AuthAlg) -> Self {
        use aes::cipher::KeyInit as _;
        let ek = key(enc.keymat_len(), 1);
        let ak = key(auth.key_len(), 2);
        let gcm = match enc {
            EncAlg::AesGcm128 => Some(&ring::aead::AES_128_GCM),
            EncAlg::AesGcm256 => Some(&ring::aead::AES_256_GCM),
            EncAlg::ChaCha20Poly1305 => Some(&ring::aead::CHACHA20_POLY1305),
            _ => None,
        }
        .map(|a| {
            ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(a, &ek[..enc.key_len()]).expect("key"),
            )
        });
        let cbc = enc == EncAlg::AesCbc128;
        RawCrypto {
            gcm,
            cbc_enc: cbc.then(|| aes::Aes128Enc::new_from_slice(&ek).expect("key")),
            cbc_dec: cbc.then(|| aes::Aes128Dec::new_from_slice(&ek).expect("key")),
            sha1: (auth == AuthAlg::HmacSha1_96)
                .then(|| <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&ak).expect("key")),
            sha256: (auth == AuthAlg::HmacSha256_128)
                .then(|| <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&ak).expect("key")),
        }
    }

    /// `esp` = header ‖ IV ‖ payload+trailer ‖ ICV space, as the engine lays it out.
    fn seal(&self, esp: &mut [u8], iv: usize, icv: usize) {
        let n = esp.len();
        if let Some(k) = &self.gcm {
            let (head, rest) = esp.split_at_mut(8 + iv);
            let (body, tag) = rest.split_at_mut(n - 8 - iv - icv);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&head[8..16]);
            let t = k
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&head[..8]),
                    body,
                )
                .expect("seal");
            tag.copy_from_slice(t.as_ref());
            return;
        }
        use aes::cipher::{BlockCipherEncrypt, BlockModeEncrypt, InnerIvInit};
        let e = self.cbc_enc.as_ref().expect("cbc");
        let mut ivb = aes::Block::default();
        e.encrypt_block(&mut ivb);
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut esp[8 + iv..n - icv]);
        cbc::Encryptor::<&aes::Aes128Enc>::inner_iv_init(e, &ivb).encrypt_blocks(blocks);
        self.mac(esp, icv);
    }

    fn mac(&self, esp: &mut [u8], icv: usize) {
        let n = esp.len();
        let (signed, tag) = esp.split_at_mut(n - icv);
        if let Some(m) = &self.sha1 {
            let out = m.clone().chain_update(&signed[..]).finalize().into_bytes();
            tag.copy_from_slice(&out[..icv]);
        } else if let Some(m) = &self.sha256 {
            let out = m.clone().chain_update(&signed[..]).finalize().into_bytes();
            tag.copy_from_slice(&out[..icv]);
        }
    }

    fn open(&self, esp: &mut [u8], iv: usize, icv: usize) {
        let n = esp.len();
        if let Some(k) = &self.gcm {
            let (head, rest) = esp.split_at_mut(8 + iv);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&head[8..16]);
            // the tag is valid: the setup sealed the same bytes
            let _ = black_box(
                k.open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&head[..8]),
                    rest,
                )
                .is_ok(),
            );
            return;
        }
        let mut want = [0u8; 32];
        let (signed, tag) = esp.split_at(n - icv);
        if let Some(m) = &self.sha1 {
            want[..20].copy_from_slice(&m.clone().chain_update(signed).finalize().into_bytes());
        } else if let Some(m) = &self.sha256 {
            want.copy_from_slice(&m.clone().chain_update(signed).finalize().into_bytes());
        }
        black_box(subtle_eq(&want[..icv], tag));
        use aes::cipher::{BlockModeDecrypt, InnerIvInit};
        let d = self.cbc_dec.as_ref().expect("cbc");
        let mut ivb = aes::Block::default();
        ivb.copy_from_slice(&esp[8..24]);
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut esp[8 + iv..n - icv]);
        cbc::Decryptor::<&aes::Aes128Dec>::inner_iv_init(d, &ivb).decrypt_blocks(blocks);
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn esp_layout(enc: EncAlg, auth: AuthAlg, inner: usize) -> (usize, usize, usize) {
    let iv = enc.iv_len();
    let icv = if enc.is_combined() {
        16
    } else {
        auth.icv_len()
    };
    let align = enc.block_len().max(4);
    let body = (inner + 2).div_ceil(align) * align;
    (8 + iv + body + icv, iv, icv)
}

fn protect_all() -> Arc<Spd> {
    let cfg = SpdConfig {
        outbound: vec![Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }],
        ..Default::default()
    };
    Arc::new(cfg.compile().expect("spd"))
}

fn bench_esp(c: &mut Criterion) {
    eprintln!("cpu: {}", cpu_features());
    for &(name, enc, auth) in BENCH_ALGS {
        let raw = RawCrypto::new(enc, auth);
        let mut g = c.benchmark_group(format!("esp/{name}"));
        for &size in SIZES {
            let inner = ipv4_udp(size, [10, 1, 0, 10], [10, 2, 0, 10]);
            g.throughput(Throughput::Bytes(size as u64));
            let (mut a, ha, mut b, hb) = engines(enc, auth, protect_all());
            let (esp_len, iv, icv) = esp_layout(enc, auth, size);

            g.bench_function(format!("encap/{size}"), |bch| {
                bch.iter_batched_ref(
                    || frame(&inner),
                    |p| assert_eq!(a.encap_with(ha, T0, p), Verdict::Forward),
                    BatchSize::SmallInput,
                )
            });
            g.bench_function(format!("crypto-seal/{size}"), |bch| {
                bch.iter_batched_ref(
                    || vec![7u8; esp_len],
                    |buf| raw.seal(buf, iv, icv),
                    BatchSize::SmallInput,
                )
            });
            g.bench_function(format!("outbound-spd/{size}"), |bch| {
                bch.iter_batched_ref(
                    || frame(&inner),
                    |p| assert_eq!(a.outbound(T0, p), Verdict::Forward),
                    BatchSize::SmallInput,
                )
            });
            g.bench_function(format!("decap/{size}"), |bch| {
                bch.iter_batched_ref(
                    || {
                        let mut p = frame(&inner);
                        a.encap_with(ha, T0, &mut p);
                        p
                    },
                    |p| assert_eq!(b.inbound(T0, p), Verdict::Forward),
                    BatchSize::SmallInput,
                )
            });
            g.bench_function(format!("crypto-open/{size}"), |bch| {
                bch.iter_batched_ref(
                    || {
                        let mut buf = vec![7u8; esp_len];
                        raw.seal(&mut buf, iv, icv);
                        buf
                    },
                    |buf| raw.open(buf, iv, icv),
                    BatchSize::SmallInput,
                )
            });
            let _ = hb;
        }
        // IMIX: 12 packets per iteration; the report divides by 12
        let imix: Vec<Vec<u8>> = IMIX
            .iter()
            .map(|&s| ipv4_udp(s, [10, 1, 0, 10], [10, 2, 0, 10]))
            .collect();
        let (mut a, ha, mut b, _) = engines(enc, auth, protect_all());
        g.throughput(Throughput::Bytes(IMIX.iter().sum::<usize>() as u64));
        g.bench_function("encap/imix", |bch| {
            bch.iter_batched_ref(
                || imix.iter().map(|p| frame(p)).collect::<Vec<_>>(),
                |ps| {
                    for p in ps.iter_mut() {
                        a.encap_with(ha, T0, p);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("decap/imix", |bch| {
            bch.iter_batched_ref(
                || {
                    imix.iter()
                        .map(|p| {
                            let mut f = frame(p);
                            a.encap_with(ha, T0, &mut f);
                            f
                        })
                        .collect::<Vec<_>>()
                },
                |ps| {
                    for p in ps.iter_mut() {
                        b.inbound(T0, p);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        let layouts: Vec<(usize, usize, usize)> =
            IMIX.iter().map(|&s| esp_layout(enc, auth, s)).collect();
        g.bench_function("crypto-seal/imix", |bch| {
            bch.iter_batched_ref(
                || layouts.iter().map(|l| vec![7u8; l.0]).collect::<Vec<_>>(),
                |bufs| {
                    for (buf, l) in bufs.iter_mut().zip(&layouts) {
                        raw.seal(buf, l.1, l.2);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("crypto-open/imix", |bch| {
            bch.iter_batched_ref(
                || {
                    layouts
                        .iter()
                        .map(|l| {
                            let mut b = vec![7u8; l.0];
                            raw.seal(&mut b, l.1, l.2);
                            b
                        })
                        .collect::<Vec<_>>()
                },
                |bufs| {
                    for (buf, l) in bufs.iter_mut().zip(&layouts) {
                        raw.open(buf, l.1, l.2);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500)).sample_size(30);
    targets = bench_esp
}
criterion_main!(benches);
