//! Differential runs of the CPU-specific crypto kernels against implementations nobody here
//! wrote, over a million random cases per algorithm family: random keys, nonces/IVs, AAD
//! and ESN lengths, payload lengths from 0 to 9000 bytes (most below 1600, as on a link),
//! in bursts of 1 to 16 jobs under one key, so the lane refill and pipelining paths meet
//! every alignment of lengths. Every output must be bit-identical.
//!
//! * AES-128/256-GCM (`gcmni`): `seal_many` against ring's seal, then `open_many` of the
//!   result (and of a copy with one flipped bit, which must fail and stay as received).
//! * AES-128/192/256-CBC (`aesni`): `cbc_encrypt_many` against RustCrypto's `cbc`, and
//!   `cbc_decrypt` back.
//! * HMAC-SHA1 and HMAC-SHA-256 (`shani`): `mac`, `mac2` and `mac4` against ring's HMAC over
//!   the same bytes with the ESN high bits appended (RFC 4303 §3.3.2.1).
//!
//! The counts are a test-profile compromise: `XSEC_DIFF_CASES` raises them for a long run.
#![cfg(target_arch = "x86_64")]

use fastrand::Rng;
use xsec_dataplane::crypto::{aesni, gcmni, shani};

/// Random cases per family (default one million).
fn cases() -> usize {
    std::env::var("XSEC_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// What the cases draw, from fastrand's seeded generator: reproducible from the seed, and
/// not what any kernel uses.
trait Draw {
    fn bytes(&mut self, n: usize) -> Vec<u8>;
    /// `n` random arrays.
    fn arrays<const N: usize>(&mut self, n: usize) -> Vec<[u8; N]>;
    /// `n` random messages, each of a length `len` draws.
    fn messages(&mut self, n: usize, len: impl FnMut(&mut Rng) -> usize) -> Vec<Vec<u8>>;
    /// A payload length: mostly small packets, some full-size, a few jumbo.
    fn len(&mut self, align: usize) -> usize;
}

impl Draw for Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
    fn arrays<const N: usize>(&mut self, n: usize) -> Vec<[u8; N]> {
        (0..n)
            .map(|_| {
                let mut x = [0u8; N];
                self.fill(&mut x);
                x
            })
            .collect()
    }
    fn messages(&mut self, n: usize, mut len: impl FnMut(&mut Rng) -> usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let l = len(self);
                self.bytes(l)
            })
            .collect()
    }
    fn len(&mut self, align: usize) -> usize {
        let l = match self.usize(..1000) {
            0..=599 => self.usize(..160),
            600..=989 => self.usize(..1600),
            _ => self.usize(..9001),
        };
        l / align * align
    }
}

/// Run `cases` cases as bursts of 1..=16 jobs; `burst` gets the generator and the job count
/// and returns how many cases it ran.
fn run(seed: u64, burst: impl Fn(&mut Rng, usize) -> usize) -> usize {
    let total = cases();
    let mut rng = Rng::with_seed(seed);
    let mut done = 0;
    while done < total {
        let n = 1 + rng.usize(..16);
        done += burst(&mut rng, n.min(total - done));
    }
    done
}

#[test]
fn gcm_kernels_match_ring_over_a_million_cases() {
    // no silent pass: a CPU without the kernel's instructions cannot test it
    assert!(
        gcmni::available(),
        "this CPU lacks AES-NI/PCLMULQDQ/AVX: the kernel cannot be compared here; run the tests on one that has it"
    );
    let n = run(0x5eed_0001, |rng, n| {
        let klen = if rng.bool() { 16 } else { 32 };
        let key = rng.bytes(klen);
        let alg = if klen == 16 {
            &ring::aead::AES_128_GCM
        } else {
            &ring::aead::AES_256_GCM
        };
        let ring_key =
            ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(alg, &key).expect("key"));
        let mut gk = gcmni::GcmKey::new(&key).expect("key");
        // now and then the narrower kernels (the widest the CPU has otherwise)
        match rng.usize(..4) {
            0 => gk = gk.narrow(),
            1 => gk = gk.at_most(gcmni::Width::Ymm),
            _ => {}
        }
        // the burst entry points or the one-packet ones (what the engine calls)
        let one = rng.bool();
        let nonces: Vec<[u8; 12]> = rng.arrays(n);
        let aads = rng.messages(n, |r| if r.bool() { 8 } else { 12 });
        let plain = rng.messages(n, |r| r.len(1));
        let mut ours = plain.clone();
        let mut jobs: Vec<gcmni::GcmJob<'_>> = ours
            .iter_mut()
            .zip(&nonces)
            .zip(&aads)
            .map(|((d, nonce), aad)| gcmni::GcmJob {
                nonce: *nonce,
                aad,
                data: d,
                tag: [0; 16],
            })
            .collect();
        if one {
            for j in jobs.iter_mut() {
                gcmni::seal_one(&gk, &j.nonce, j.aad, j.data, &mut j.tag);
            }
        } else {
            gcmni::seal_many(&gk, &mut jobs);
        }
        let tags: Vec<[u8; 16]> = jobs.iter().map(|j| j.tag).collect();
        drop(jobs);
        for k in 0..n {
            let mut theirs = plain[k].clone();
            let tag = ring_key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonces[k]),
                    ring::aead::Aad::from(&aads[k]),
                    &mut theirs,
                )
                .expect("seal");
            assert_eq!(
                ours[k],
                theirs,
                "ciphertext, job {k}, {} bytes",
                plain[k].len()
            );
            assert_eq!(&tags[k][..], tag.as_ref(), "tag, job {k}");
        }
        // open it all again, one job with a flipped bit
        let bad = rng.usize(..n);
        let mut jobs: Vec<gcmni::GcmJob<'_>> = ours
            .iter_mut()
            .zip(&nonces)
            .zip(&aads)
            .zip(&tags)
            .map(|(((d, nonce), aad), tag)| gcmni::GcmJob {
                nonce: *nonce,
                aad,
                data: d,
                tag: *tag,
            })
            .collect();
        let flip = rng.usize(..8 * (jobs[bad].data.len() + 16));
        if flip / 8 < jobs[bad].data.len() {
            jobs[bad].data[flip / 8] ^= 1 << (flip % 8);
        } else {
            let at = flip / 8 - jobs[bad].data.len();
            jobs[bad].tag[at] ^= 1 << (flip % 8);
        }
        let tampered = jobs[bad].data.to_vec();
        let mut ok = vec![false; n];
        let good = if one {
            let mut good = 0;
            for (j, ok) in jobs.iter_mut().zip(ok.iter_mut()) {
                *ok = gcmni::open_one(&gk, &j.nonce, j.aad, j.data, &j.tag);
                good += usize::from(*ok);
            }
            good
        } else {
            gcmni::open_many(&gk, &mut jobs, &mut ok)
        };
        drop(jobs);
        assert_eq!(good, n - 1);
        for k in 0..n {
            if k == bad {
                assert!(!ok[k], "tampered job {k} verified");
                assert_eq!(ours[k], tampered, "a rejected job must stay as received");
            } else {
                assert!(ok[k], "job {k} failed");
                assert_eq!(ours[k], plain[k], "plaintext, job {k}");
            }
        }
        n
    });
    assert!(n >= cases());
}

/// RustCrypto's CBC over whole blocks, in place.
fn rc_cbc<C>(key: &[u8], iv: &[u8; 16], data: &mut [u8], encrypt: bool)
where
    C: aes::cipher::BlockCipherEncrypt + aes::cipher::BlockCipherDecrypt + aes::cipher::KeyInit,
{
    use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit};
    let c = C::new_from_slice(key).expect("key");
    let iv = <&aes::cipher::Block<C>>::try_from(&iv[..]).expect("iv");
    let (blocks, rest) = aes::cipher::Block::<C>::slice_as_chunks_mut(data);
    assert!(rest.is_empty());
    if encrypt {
        cbc::Encryptor::<&C>::inner_iv_init(&c, iv).encrypt_blocks(blocks);
    } else {
        cbc::Decryptor::<&C>::inner_iv_init(&c, iv).decrypt_blocks(blocks);
    }
}

#[test]
fn cbc_kernels_match_rustcrypto_over_a_million_cases() {
    // no silent pass: a CPU without the kernel's instructions cannot test it
    assert!(
        aesni::available(),
        "this CPU lacks AES-NI: the kernel cannot be compared here; run the tests on one that has it"
    );
    let n = run(0x5eed_0002, |rng, n| {
        let klen = [16, 24, 32][rng.usize(..3)];
        let key = rng.bytes(klen);
        let ak = aesni::AesNiKey::new(&key).expect("key");
        let dk = aesni::AesNiDecKey::new(&key).expect("key");
        let ivs: Vec<[u8; 16]> = rng.arrays(n);
        let plain = rng.messages(n, |r| r.len(16));
        let mut ours = plain.clone();
        let mut jobs: Vec<aesni::CbcJob<'_>> = ours
            .iter_mut()
            .zip(&ivs)
            .map(|(d, iv)| aesni::CbcJob { iv: *iv, data: d })
            .collect();
        assert!(aesni::cbc_encrypt_many(&ak, &mut jobs));
        drop(jobs);
        for k in 0..n {
            let mut theirs = plain[k].clone();
            let l = theirs.len();
            match klen {
                16 => rc_cbc::<aes::Aes128>(&key, &ivs[k], &mut theirs, true),
                24 => rc_cbc::<aes::Aes192>(&key, &ivs[k], &mut theirs, true),
                _ => rc_cbc::<aes::Aes256>(&key, &ivs[k], &mut theirs, true),
            }
            assert_eq!(
                ours[k],
                theirs,
                "ciphertext, job {k}, {l} bytes, AES-{}",
                klen * 8
            );
            // and back, on the decrypting side's kernel, checked against RustCrypto's too
            let mut back = ours[k].clone();
            assert!(aesni::cbc_decrypt(&dk, &ivs[k], &mut back));
            assert_eq!(back, plain[k], "decrypt, job {k}");
            if klen == 16 {
                let mut rc = ours[k].clone();
                rc_cbc::<aes::Aes128>(&key, &ivs[k], &mut rc, false);
                assert_eq!(rc, plain[k]);
            }
        }
        n
    });
    assert!(n >= cases());
}

/// ring's HMAC over `data` ‖ `esn_hi`.
fn ring_mac(alg: ring::hmac::Algorithm, key: &[u8], data: &[u8], hi: Option<u32>) -> Vec<u8> {
    let k = ring::hmac::Key::new(alg, key);
    let mut c = ring::hmac::Context::with_key(&k);
    c.update(data);
    if let Some(hi) = hi {
        c.update(&hi.to_be_bytes());
    }
    c.sign().as_ref().to_vec()
}

#[test]
fn hmac_kernels_match_ring_over_a_million_cases() {
    // no silent pass: a CPU without the kernel's instructions cannot test it
    assert!(
        shani::available(),
        "this CPU lacks SHA-NI: the kernel cannot be compared here; run the tests on one that has it"
    );
    let n = run(0x5eed_0003, |rng, n| {
        let n = n.min(4);
        let sha256 = rng.bool();
        // key lengths around the block size: shorter, equal, longer (hashed first)
        let keys = rng.messages(n, |r| [20, 32, 64, 65, 100][r.usize(..5)]);
        let data = rng.messages(n, |r| r.len(1));
        let his: Vec<Option<u32>> = (0..n).map(|_| (rng.bool()).then(|| rng.u32(..))).collect();
        let (alg, out_len) = if sha256 {
            (ring::hmac::HMAC_SHA256, 32)
        } else {
            (ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 20)
        };
        let mut outs = [[0u8; 32]; 4];
        // the same calls for either key type
        macro_rules! sign {
            ($K:ty) => {{
                let ks: Vec<$K> = keys.iter().map(|k| <$K>::new(k).expect("key")).collect();
                match n {
                    4 => {
                        let [o0, o1, o2, o3] = &mut outs;
                        <$K>::mac4(
                            [&ks[0], &ks[1], &ks[2], &ks[3]],
                            [&data[0], &data[1], &data[2], &data[3]],
                            [his[0], his[1], his[2], his[3]],
                            [o0, o1, o2, o3],
                        );
                    }
                    2 => {
                        let [o0, o1, ..] = &mut outs;
                        <$K>::mac2(
                            [&ks[0], &ks[1]],
                            [&data[0], &data[1]],
                            [his[0], his[1]],
                            [o0, o1],
                        );
                    }
                    _ => {
                        for k in 0..n {
                            ks[k].mac(&data[k], his[k], &mut outs[k]);
                        }
                    }
                }
            }};
        }
        if sha256 {
            sign!(shani::HmacSha256Key);
        } else {
            sign!(shani::HmacSha1Key);
        }
        for k in 0..n {
            let want = ring_mac(alg, &keys[k], &data[k], his[k]);
            assert_eq!(
                &outs[k][..out_len],
                &want[..],
                "HMAC-SHA{}, job {k} of {n}, {} bytes, ESN {:?}",
                if sha256 { "-256" } else { "1" },
                data[k].len(),
                his[k]
            );
        }
        n
    });
    assert!(n >= cases());
}
