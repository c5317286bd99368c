//! The measurement behind the choice of crypto crates (see dataplane/src/crypto/mod.rs):
//! one call per packet with the key state prepared once, ring against RustCrypto, at the
//! benchmark packet sizes.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use std::hint::black_box;
use std::time::Duration;
use xsec_benches::SIZES;

fn hmacs(c: &mut Criterion) {
    let mut g = c.benchmark_group("hmac");
    for &n in SIZES {
        let data = vec![0x5au8; n];
        macro_rules! pair {
            ($name:literal, $ring:expr, $rc:ty, $klen:expr) => {
                let rk = ring::hmac::Key::new($ring, &[1u8; $klen]);
                g.bench_with_input(BenchmarkId::new(concat!("ring-", $name), n), &n, |b, _| {
                    b.iter(|| black_box(ring::hmac::sign(&rk, black_box(&data))))
                });
                let hk = <hmac::Hmac<$rc> as KeyInit>::new_from_slice(&[1u8; $klen]).expect("key");
                g.bench_with_input(
                    BenchmarkId::new(concat!("rustcrypto-", $name), n),
                    &n,
                    |b, _| {
                        b.iter(|| {
                            black_box(
                                hk.clone()
                                    .chain_update(black_box(&data))
                                    .finalize()
                                    .into_bytes(),
                            )
                        })
                    },
                );
            };
        }
        pair!(
            "sha1",
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            sha1::Sha1,
            20
        );
        pair!("sha256", ring::hmac::HMAC_SHA256, sha2::Sha256, 32);
        pair!("sha384", ring::hmac::HMAC_SHA384, sha2::Sha384, 48);
        pair!("sha512", ring::hmac::HMAC_SHA512, sha2::Sha512, 64);
    }
    g.finish();
}

fn aeads(c: &mut Criterion) {
    use aes_gcm::aead::{AeadInOut, KeyInit as _};
    let mut g = c.benchmark_group("aead-seal");
    for &n in SIZES {
        let mut buf = vec![0x5au8; n];
        let rk = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &[3u8; 16]).expect("key"),
        );
        g.bench_with_input(BenchmarkId::new("ring-aes128gcm", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rk.seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key([0; 12]),
                        ring::aead::Aad::from([0u8; 8]),
                        &mut buf,
                    )
                    .expect("seal"),
                )
            })
        });
        let k = aes_gcm::Aes128Gcm::new_from_slice(&[3u8; 16]).expect("key");
        g.bench_with_input(BenchmarkId::new("rustcrypto-aes128gcm", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    k.encrypt_inout_detached(
                        &[0u8; 12].into(),
                        &[0u8; 8],
                        buf.as_mut_slice().into(),
                    )
                    .expect("seal"),
                )
            })
        });
        let rk = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[3u8; 32]).expect("key"),
        );
        g.bench_with_input(BenchmarkId::new("ring-chacha20poly1305", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    rk.seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key([0; 12]),
                        ring::aead::Aad::from([0u8; 8]),
                        &mut buf,
                    )
                    .expect("seal"),
                )
            })
        });
        let k = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&[3u8; 32]).expect("key");
        g.bench_with_input(
            BenchmarkId::new("rustcrypto-chacha20poly1305", n),
            &n,
            |b, _| {
                b.iter(|| {
                    black_box(
                        chacha20poly1305::aead::AeadInOut::encrypt_inout_detached(
                            &k,
                            &[0u8; 12].into(),
                            &[0u8; 8],
                            buf.as_mut_slice().into(),
                        )
                        .expect("seal"),
                    )
                })
            },
        );
    }
    g.finish();
}

/// AES-128-CBC encryption of a burst of 32 packets: one packet at a time through RustCrypto
/// (`cbc` over `aes`, the engine's current path) against the AES-NI multi-buffer kernel of
/// `crypto::aesni` (8 packets in lockstep, 128-bit registers) and its VAES kernel (16 packets
/// in lockstep, four per 512-bit register) given 8, 12 or 16 packets per call. Per-packet
/// time =
/// reported time / 32.
#[cfg(target_arch = "x86_64")]
fn cbc_burst(c: &mut Criterion) {
    // one job per buffer, all from the same IV
    fn jobs(bufs: &mut [Vec<u8>]) -> Vec<CbcJob<'_>> {
        bufs.iter_mut()
            .map(|d| CbcJob {
                iv: [3; 16],
                data: &mut d[..],
            })
            .collect()
    }
    use aes::cipher::{BlockModeEncrypt, InnerIvInit, KeyInit as _};
    use xsec_dataplane::crypto::aesni::{
        AesNiKey, CbcJob, cbc_encrypt_many, cbc_encrypt_narrow, wide_available,
    };
    let Some(k) = AesNiKey::new(&[7u8; 16]) else {
        eprintln!("cbc-burst: no AES-NI here, skipped");
        return;
    };
    let rc = aes::Aes128Enc::new_from_slice(&[7u8; 16]).expect("key");
    let mut g = c.benchmark_group("cbc-encrypt-burst32");
    for &n in SIZES {
        let n = n / 16 * 16;
        let mut bufs = vec![vec![0x5au8; n]; 32];
        g.bench_with_input(BenchmarkId::new("rustcrypto-aes128cbc", n), &n, |b, _| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    let (blocks, _) = aes::Block::slice_as_chunks_mut(buf);
                    cbc::Encryptor::<&aes::Aes128Enc>::inner_iv_init(&rc, &[3u8; 16].into())
                        .encrypt_blocks(blocks);
                }
                black_box(&bufs);
            })
        });
        g.bench_with_input(BenchmarkId::new("aesni-multibuffer", n), &n, |b, _| {
            b.iter(|| black_box(cbc_encrypt_narrow(&k, &mut jobs(&mut bufs))))
        });
        // the VAES kernel where the CPU has it, in calls of `lanes` packets
        for lanes in [8usize, 12, 16] {
            if !wide_available() {
                break;
            }
            g.bench_with_input(BenchmarkId::new(format!("vaes-x{lanes}"), n), &n, |b, _| {
                b.iter(|| {
                    for group in bufs.chunks_mut(lanes) {
                        black_box(cbc_encrypt_many(&k, &mut jobs(group)));
                    }
                })
            });
        }
    }
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn cbc_burst(_: &mut Criterion) {}

/// HMAC-SHA1 and HMAC-SHA-256 of one packet with ESN (`data ‖ esn_hi`): RustCrypto as
/// `crypto::integ` does it (clone of the precomputed state, update, finalize) against the
/// SHA-NI kernels of `crypto::shani`, one packet per call (`mac`), two packets with
/// different keys interleaved (`mac2`, reported per packet: half the time of a call) and four
/// (`mac4`, a quarter of the time of a call).
#[cfg(target_arch = "x86_64")]
fn hmac_shani(c: &mut Criterion) {
    use std::time::Instant;
    use xsec_dataplane::crypto::shani::{HmacSha1Key, HmacSha256Key};
    let (Some(s1), Some(s1b), Some(s1c), Some(s1d)) = (
        HmacSha1Key::new(&[1u8; 20]),
        HmacSha1Key::new(&[2u8; 20]),
        HmacSha1Key::new(&[3u8; 20]),
        HmacSha1Key::new(&[4u8; 20]),
    ) else {
        eprintln!("hmac-shani: no SHA-NI here, skipped");
        return;
    };
    let (Some(s256), Some(s256b), Some(s256c), Some(s256d)) = (
        HmacSha256Key::new(&[1u8; 32]),
        HmacSha256Key::new(&[2u8; 32]),
        HmacSha256Key::new(&[3u8; 32]),
        HmacSha256Key::new(&[4u8; 32]),
    ) else {
        eprintln!("hmac-shani: no SHA-NI here, skipped");
        return;
    };
    let esn = Some(1u32);
    let mut g = c.benchmark_group("hmac-shani");
    for &n in SIZES {
        // a, b: the packets of mac2; all four those of mac4
        let [a, b, a3, a4] = [0x5au8, 0xa5, 0x3c, 0xc3].map(|x| vec![x; n]);
        macro_rules! variants {
            ($name:literal, $rc:ty, $klen:expr, [$k:expr, $kb:expr, $kc:expr, $kd:expr], $key:ty) => {
                let hk = <hmac::Hmac<$rc> as KeyInit>::new_from_slice(&[1u8; $klen]).expect("key");
                g.bench_with_input(
                    BenchmarkId::new(concat!("rustcrypto-", $name), n),
                    &n,
                    |bch, _| {
                        bch.iter(|| {
                            let mut m = hk.clone();
                            m.update(black_box(&a));
                            if let Some(hi) = black_box(esn) {
                                m.update(&hi.to_be_bytes());
                            }
                            black_box(m.finalize().into_bytes())
                        })
                    },
                );
                g.bench_with_input(
                    BenchmarkId::new(concat!("shani-", $name), n),
                    &n,
                    |bch, _| {
                        let mut out = [0u8; 32];
                        bch.iter(|| {
                            $k.mac(black_box(&a), black_box(esn), &mut out);
                            black_box(&out);
                        })
                    },
                );
                g.bench_with_input(
                    BenchmarkId::new(concat!("shani-x2-", $name), n),
                    &n,
                    |bch, _| {
                        bch.iter_custom(|iters| {
                            let (mut oa, mut ob) = ([0u8; 32], [0u8; 32]);
                            let t = Instant::now();
                            for _ in 0..iters {
                                <$key>::mac2(
                                    [&$k, &$kb],
                                    [black_box(&a), black_box(&b)],
                                    [black_box(esn), black_box(esn)],
                                    [&mut oa, &mut ob],
                                );
                                black_box((&oa, &ob));
                            }
                            // two packets per call
                            t.elapsed() / 2
                        })
                    },
                );
                g.bench_with_input(
                    BenchmarkId::new(concat!("shani-x4-", $name), n),
                    &n,
                    |bch, _| {
                        bch.iter_custom(|iters| {
                            let mut o = [[0u8; 32]; 4];
                            let t = Instant::now();
                            for _ in 0..iters {
                                let [oa, ob, oc, od] = &mut o;
                                <$key>::mac4(
                                    [&$k, &$kb, &$kc, &$kd],
                                    [black_box(&a), black_box(&b), black_box(&a3), black_box(&a4)],
                                    [black_box(esn); 4],
                                    [oa, ob, oc, od],
                                );
                                black_box(&o);
                            }
                            // four packets per call
                            t.elapsed() / 4
                        })
                    },
                );
            };
        }
        variants!("sha1", sha1::Sha1, 20, [s1, s1b, s1c, s1d], HmacSha1Key);
        variants!(
            "sha256",
            sha2::Sha256,
            32,
            [s256, s256b, s256c, s256d],
            HmacSha256Key
        );
    }
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn hmac_shani(_: &mut Criterion) {}

/// HMAC-SHA1 and HMAC-SHA-256 of N packets with different keys in one call of the 16-lane
/// AVX-512 kernels (`crypto::shax16::mac16`), per packet: against the SHA-NI kernels four at
/// a time (`hmac-shani/shani-x4-…`, same run), what `shax16`'s cost constants say.
#[cfg(target_arch = "x86_64")]
fn hmac_x16_lanes(c: &mut Criterion) {
    use std::time::Instant;
    use xsec_dataplane::crypto::shani::{HmacSha1Key, HmacSha256Key};
    use xsec_dataplane::crypto::shax16;
    if !shax16::available() {
        eprintln!("hmac-x16-lanes: no AVX-512F/BW here, skipped");
        return;
    }
    let (Some(k1), Some(k256)) = (
        (1..=16u8)
            .map(|k| HmacSha1Key::new(&[k; 20]))
            .collect::<Option<Vec<_>>>(),
        (1..=16u8)
            .map(|k| HmacSha256Key::new(&[k; 32]))
            .collect::<Option<Vec<_>>>(),
    ) else {
        eprintln!("hmac-x16-lanes: no SHA-NI here, skipped");
        return;
    };
    let esn = [Some(1u32); 16];
    let mut g = c.benchmark_group("hmac-x16-lanes");
    for &n in SIZES {
        let data: Vec<Vec<u8>> = (0..16u8).map(|k| vec![k; n]).collect();
        let ds: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        macro_rules! variants {
            ($name:literal, $keys:expr, $key:ty) => {
                let refs: Vec<&$key> = $keys.iter().collect();
                for lanes in [4usize, 8, 12, 16] {
                    g.bench_with_input(
                        BenchmarkId::new(format!(concat!("avx512-", $name, "-x{}"), lanes), n),
                        &n,
                        |bch, _| {
                            bch.iter_custom(|iters| {
                                let mut o = [[0u8; 32]; 16];
                                let t = Instant::now();
                                for _ in 0..iters {
                                    shax16::mac16(
                                        &refs[..lanes],
                                        black_box(&ds[..lanes]),
                                        &esn[..lanes],
                                        &mut o[..lanes],
                                    );
                                    black_box(&o);
                                }
                                t.elapsed() / lanes as u32
                            })
                        },
                    );
                }
            };
        }
        variants!("sha1", k1, HmacSha1Key);
        variants!("sha256", k256, HmacSha256Key);
    }
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn hmac_x16_lanes(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1000)).sample_size(20);
    targets = hmacs, aeads, cbc_burst, hmac_shani, hmac_x16_lanes
}
criterion_main!(benches);
