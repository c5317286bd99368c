//! ESP encapsulation and decapsulation, one core, per packet size, against the raw crypto
//! calls on the same bytes in the same run: `engine − crypto` is the engine's own overhead.
//!
//! Each measured iteration takes one prepared packet (preparation is not timed): for encap a
//! fresh copy of the inner packet, for decap a fresh ESP packet with the next sequence number
//! (so the replay window does its real work). Sizes are those of the inner IP packet.
//! `cargo bench --bench esp`; `cargo run -p xsec-benches --bin report` prints cycles.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xsec_benches::*;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, Spd, SpdConfig};
use xsec_dataplane::{PacketBuf, Timestamp, Verdict};

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

/// Packets per measured burst: the worker's burst size.
const BURST: usize = 32;

/// Time `work` over bursts of prepared items: `prep` fills the burst (not timed), `work`
/// processes it (timed). Returns the total for `iters` items, as criterion's `iter_custom`
/// wants. Reused buffers stay in cache, as packets fresh from the NIC do.
fn bursts<T>(
    iters: u64,
    items: &mut [T],
    mut prep: impl FnMut(&mut T),
    mut work: impl FnMut(&mut T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = (left as usize).min(items.len());
        for it in items[..n].iter_mut() {
            prep(it);
        }
        let t = Instant::now();
        for it in items[..n].iter_mut() {
            work(it);
        }
        total += t.elapsed();
        left -= n as u64;
    }
    total
}

fn reset(p: &mut PacketBuf<Vec<u8>>, inner: &[u8]) {
    p.frame_mut()[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
    p.set_window(HEADROOM, inner.len());
}

fn bench_esp(c: &mut Criterion) {
    eprintln!("cpu: {}", cpu_features());
    for &(name, enc, auth) in BENCH_ALGS {
        let raw = RawCrypto::new(enc, auth);
        let mut g = c.benchmark_group(format!("esp/{name}"));
        let cases: Vec<(String, Vec<usize>)> = SIZES
            .iter()
            .map(|&s| (s.to_string(), vec![s]))
            .chain(std::iter::once(("imix".to_string(), IMIX.to_vec())))
            .collect();
        for (label, sizes) in cases {
            // one burst slot per packet; IMIX cycles through its sizes
            let inners: Vec<Vec<u8>> = (0..BURST)
                .map(|i| ipv4_udp(sizes[i % sizes.len()], [10, 1, 0, 10], [10, 2, 0, 10]))
                .collect();
            let layouts: Vec<(usize, usize, usize)> = (0..BURST)
                .map(|i| esp_layout(enc, auth, sizes[i % sizes.len()]))
                .collect();
            let bytes: usize = inners.iter().map(Vec::len).sum::<usize>() / BURST;
            g.throughput(Throughput::Bytes(bytes as u64));
            let (mut a, ha, mut b, _) = engines(enc, auth, protect_all());
            let mut slots: Vec<(usize, PacketBuf<Vec<u8>>)> = inners
                .iter()
                .enumerate()
                .map(|(i, p)| (i, frame(p)))
                .collect();
            let mut bufs: Vec<(usize, Vec<u8>)> = layouts
                .iter()
                .enumerate()
                .map(|(i, l)| (i, vec![7u8; l.0]))
                .collect();

            g.bench_function(format!("encap/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| reset(p, &inners[*i]),
                        |(_, p)| assert_eq!(a.encap_with(ha, T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("crypto-seal/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut bufs,
                        |_| {},
                        |(i, buf)| raw.seal(buf, layouts[*i].1, layouts[*i].2),
                    )
                })
            });
            g.bench_function(format!("outbound-spd/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| reset(p, &inners[*i]),
                        |(_, p)| assert_eq!(a.outbound(T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("decap/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut slots,
                        |(i, p)| {
                            reset(p, &inners[*i]);
                            a.encap_with(ha, T0, p);
                        },
                        |(_, p)| assert_eq!(b.inbound(T0, p), Verdict::Forward),
                    )
                })
            });
            g.bench_function(format!("crypto-open/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    bursts(
                        iters,
                        &mut bufs,
                        |(i, buf)| raw.seal(buf, layouts[*i].1, layouts[*i].2),
                        |(i, buf)| raw.open(buf, layouts[*i].1, layouts[*i].2),
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500)).sample_size(30);
    targets = bench_esp
}
criterion_main!(benches);
