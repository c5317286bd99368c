//! The AES-GCM burst kernel (`crypto::gcmni`) against ring, one call per packet, on the same
//! bytes in the same process on a pinned core: seal and open of 64-, 512- and 1420-byte
//! payloads (ESP's 8-byte AAD) in bursts of 1, 8 and 32. TSC cycles per packet (ns × TSC
//! MHz), medians over rounds that run every variant once, in turn.
//!
//! `cargo bench -p xsec-benches --bench gcm [-- ROUNDS] [128|256]`

use std::hint::black_box;
use std::time::Instant;
use xsec_benches::{SIZES, cpu_features, tsc_mhz};
use xsec_dataplane::crypto::gcmni::{self, GcmJob, GcmKey};
use xsec_lab::bench::median;

/// Packets per round (a multiple of every burst size).
const ROUND: usize = 32;
const BURSTS: &[usize] = &[1, 8, 32];
/// The last columns of each half: the 256-bit-only and 128-bit-only kernels at burst 32,
/// for the design choice.
const NARROW: usize = 32;

fn nonce(i: usize) -> [u8; 12] {
    core::array::from_fn(|b| (b * 17 + i) as u8)
}

const AAD: [u8; 8] = [0, 0, 0x43, 0x21, 0, 0, 0, 7];

fn jobs<'a>(bufs: &'a mut [Vec<u8>], tags: &[[u8; 16]]) -> Vec<GcmJob<'a>> {
    bufs.iter_mut()
        .enumerate()
        .map(|(i, b)| GcmJob {
            nonce: nonce(i),
            aad: &AAD,
            data: &mut b[..],
            tag: tags[i],
        })
        .collect()
}

/// Copy `from` over `work`, packet by packet (the kernels work in place).
fn restore(work: &mut [Vec<u8>], from: &[Vec<u8>]) {
    for (w, f) in work.iter_mut().zip(from) {
        w.copy_from_slice(f);
    }
}

/// One table row: cycles per packet of ring and of each burst size, seal then open.
fn row(klen: usize, size: usize, rounds: usize, mhz: f64) {
    let kb: Vec<u8> = (0..klen as u8).map(|i| i ^ 0xa5).collect();
    let alg = if klen == 16 {
        &ring::aead::AES_128_GCM
    } else {
        &ring::aead::AES_256_GCM
    };
    let rk = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(alg, &kb).expect("key"));
    let gk = GcmKey::new(&kb).expect("AES-NI, PCLMULQDQ and AVX");
    let yk = GcmKey::new(&kb).expect("key").at_most(gcmni::Width::Ymm);
    let nk = GcmKey::new(&kb).expect("key").narrow();
    let plain: Vec<Vec<u8>> = (0..ROUND)
        .map(|i| (0..size).map(|b| (b + i) as u8).collect())
        .collect();
    // sealed packets for the open benchmarks: ring wants ciphertext ‖ tag in one buffer
    let mut sealed = plain.clone();
    let mut tags = vec![[0u8; 16]; ROUND];
    {
        let mut j = jobs(&mut sealed, &tags);
        gcmni::seal_many(&gk, &mut j);
        for (t, j) in tags.iter_mut().zip(&j) {
            *t = j.tag;
        }
    }
    let sealed_ring: Vec<Vec<u8>> = sealed
        .iter()
        .zip(&tags)
        .map(|(c, t)| [&c[..], &t[..]].concat())
        .collect();
    let mut work = plain.clone();
    let mut work_ring = sealed_ring.clone();
    let mut ok = [false; ROUND];
    // the kernels timed beside ring: each burst size, then the 256- and 128-bit-only ones
    let variants: Vec<(&GcmKey, usize)> = BURSTS
        .iter()
        .map(|&b| (&gk, b))
        .chain([(&yk, NARROW), (&nk, NARROW)])
        .collect();
    let cells = 2 * (1 + variants.len());
    let mut t: Vec<Vec<f64>> = vec![vec![]; cells];
    for round in 0..rounds + 50 {
        let mut times = vec![0f64; cells];
        // seal: ring, then each burst size and the 128-bit-only kernels
        restore(&mut work, &plain);
        let t0 = Instant::now();
        for (i, w) in work.iter_mut().enumerate() {
            let tag = rk
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce(i)),
                    ring::aead::Aad::from(AAD),
                    w,
                )
                .expect("seal");
            let _ = black_box(tag);
        }
        times[0] = t0.elapsed().as_nanos() as f64;
        for (k, &(key, b)) in variants.iter().enumerate() {
            restore(&mut work, &plain);
            let mut j = jobs(&mut work, &tags);
            let t0 = Instant::now();
            for c in j.chunks_mut(b) {
                gcmni::seal_many(key, c);
            }
            times[1 + k] = t0.elapsed().as_nanos() as f64;
            black_box(&j);
        }
        // open: ring, then the same variants
        restore(&mut work_ring, &sealed_ring);
        let t0 = Instant::now();
        for (i, w) in work_ring.iter_mut().enumerate() {
            let p = rk
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce(i)),
                    ring::aead::Aad::from(AAD),
                    w,
                )
                .expect("open");
            let _ = black_box(p);
        }
        let o = 1 + variants.len();
        times[o] = t0.elapsed().as_nanos() as f64;
        for (k, &(key, b)) in variants.iter().enumerate() {
            restore(&mut work, &sealed);
            let mut j = jobs(&mut work, &tags);
            let t0 = Instant::now();
            for (c, ok) in j.chunks_mut(b).zip(ok.chunks_mut(b)) {
                gcmni::open_many(key, c, ok);
            }
            times[o + 1 + k] = t0.elapsed().as_nanos() as f64;
            assert!(ok.iter().all(|&x| x), "every packet opens");
        }
        if round >= 50 {
            for (v, x) in t.iter_mut().zip(&times) {
                v.push(*x);
            }
        }
    }
    let cyc: Vec<String> = t
        .iter_mut()
        .map(|v| format!("{:.0}", median(v) * mhz / 1000.0 / ROUND as f64))
        .collect();
    println!("| AES-{} | {size} | {} |", klen * 8, cyc.join(" | "));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds: usize = args
        .iter()
        .find_map(|a| a.parse().ok().filter(|&r: &usize| r > 256))
        .unwrap_or(3000);
    let keys: Vec<usize> = match args.iter().find(|a| *a == "128" || *a == "256") {
        Some(a) if a == "128" => vec![16],
        Some(_) => vec![32],
        None => vec![16, 32],
    };
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(core);
    }
    let mhz = tsc_mhz().unwrap_or(0.0);
    println!("CPU: {}", cpu_features());
    println!(
        "TSC {mhz:.0} MHz; {rounds} rounds of {ROUND} packets per cell, 8-byte AAD; TSC cycles \
         per packet, medians\n"
    );
    println!(
        "kernels: {:?} (the burst columns)\n",
        GcmKey::new(&[0; 16]).map(|k| k.width())
    );
    println!(
        "| key | size | seal ring | seal burst 1 | seal burst 8 | seal burst 32 | seal 256-bit only, burst 32 | seal 128-bit only, burst 32 | open ring | open burst 1 | open burst 8 | open burst 32 | open 256-bit only, burst 32 | open 128-bit only, burst 32 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &klen in &keys {
        for &size in SIZES {
            row(klen, size, rounds, mhz);
        }
    }
}
