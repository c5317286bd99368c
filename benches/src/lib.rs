//! Shared helpers for xsec's criterion benchmarks and the report that turns their results
//! into cycles per packet.

use hmac::{KeyInit, Mac};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use xsec_dataplane::crypto::{AuthAlg, EncAlg};
use xsec_dataplane::sa::{SaConfig, SaHandle};
use xsec_dataplane::spd::{Direction, Selector, Spd};
use xsec_dataplane::wire::checksum;
use xsec_dataplane::{Engine, PacketBuf};

/// The algorithm pairs the ESP benchmarks cover, with their bench names.
pub const BENCH_ALGS: &[(&str, EncAlg, AuthAlg)] = &[
    ("aes128gcm16", EncAlg::AesGcm128, AuthAlg::None),
    ("aes256gcm16", EncAlg::AesGcm256, AuthAlg::None),
    ("chacha20poly1305", EncAlg::ChaCha20Poly1305, AuthAlg::None),
    ("aes128-sha1", EncAlg::AesCbc128, AuthAlg::HmacSha1_96),
    ("aes128-sha256", EncAlg::AesCbc128, AuthAlg::HmacSha256_128),
];

/// Inner packet sizes (bytes of the plaintext IP packet).
pub const SIZES: &[usize] = &[64, 512, 1420];

/// Simple IMIX by packet count: 7 × 64 B, 4 × 576 B, 1 × 1420 B.
pub const IMIX: &[usize] = &[64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 64, 576];

/// The size cases of the ESP benchmarks, labelled: each size alone, then the IMIX mix.
pub fn size_cases() -> Vec<(String, Vec<usize>)> {
    SIZES
        .iter()
        .map(|&s| (s.to_string(), vec![s]))
        .chain(std::iter::once(("imix".to_string(), IMIX.to_vec())))
        .collect()
}

/// ESP packet length, IV length and ICV length of one packet.
pub type EspLayout = (usize, usize, usize);

/// A burst of `n` inner packets and their ESP layouts, cycling through `sizes`.
pub fn burst(
    enc: EncAlg,
    auth: AuthAlg,
    sizes: &[usize],
    n: usize,
) -> (Vec<Vec<u8>>, Vec<EspLayout>) {
    let inners = (0..n)
        .map(|i| ipv4_udp(sizes[i % sizes.len()], [10, 1, 0, 10], [10, 2, 0, 10]))
        .collect();
    let layouts = (0..n)
        .map(|i| esp_layout(enc, auth, sizes[i % sizes.len()]))
        .collect();
    (inners, layouts)
}

pub const HEADROOM: usize = 128;
pub const FRAME: usize = 2048;

/// An IPv4/UDP packet of exactly `size` bytes (size ≥ 28), checksums filled in.
pub fn ipv4_udp(size: usize, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[..12].copy_from_slice(&[
        0x45,
        0,
        (size >> 8) as u8,
        size as u8,
        0,
        1,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let ulen = size - 20;
    p[20..28].copy_from_slice(&[0x04, 0x57, 0x13, 0x88, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

pub fn key(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

/// A tunnel SA pair between 10.0.0.1 and 10.0.0.2.
pub fn sa_pair(enc: EncAlg, auth: AuthAlg, spi: u32) -> (SaConfig, SaConfig) {
    let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([10, 0, 0, 1]));
    let b: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([10, 0, 0, 2]));
    let ek = key(enc.keymat_len(), 1);
    let ak = key(auth.key_len(), 2);
    let mut out = SaConfig::tunnel(spi, Direction::Outbound, a, b, enc, &ek, auth, &ak);
    let mut inb = SaConfig::tunnel(spi, Direction::Inbound, b, a, enc, &ek, auth, &ak);
    out.reqid = 1;
    inb.reqid = 1;
    // the benchmarks send billions of packets through one SA
    out.esn = true;
    inb.esn = true;
    inb.replay_window = 1024;
    // Accept any inner packet: an inbound SA without selectors accepts nothing.
    inb.selectors = vec![Selector::ANY];
    (out, inb)
}

/// Two engines with one SA each: (outbound engine, its SA, inbound engine, its SA).
pub fn engines(enc: EncAlg, auth: AuthAlg, spd: Arc<Spd>) -> (Engine, SaHandle, Engine, SaHandle) {
    let (o, i) = sa_pair(enc, auth, 0x1000);
    let mut a = Engine::new(spd);
    let mut b = Engine::new(Arc::new(Spd::empty(Default::default())));
    let ha = a
        .add_sa(&o, xsec_dataplane::Timestamp::ZERO)
        .expect("outbound SA");
    let hb = b
        .add_sa(&i, xsec_dataplane::Timestamp::ZERO)
        .expect("inbound SA");
    (a, ha, b, hb)
}

pub fn frame(data: &[u8]) -> PacketBuf<Vec<u8>> {
    PacketBuf::from_slice(vec![0u8; FRAME], HEADROOM, data).expect("packet fits the frame")
}

/// The TSC frequency in MHz, from the kernel's boot message or /proc/cpuinfo.
pub fn tsc_mhz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU features relevant to the crypto libraries, as the kernel reports them.
pub fn cpu_features() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let want = [
        "aes",
        "pclmulqdq",
        "avx",
        "avx2",
        "sha_ni",
        "vaes",
        "vpclmulqdq",
        "avx512f",
        "avx512vl",
        "bmi2",
        "adx",
    ];
    let have: Vec<&str> = want.iter().copied().filter(|f| flags.contains(f)).collect();
    format!("{model}; {}", have.join(" "))
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// The crypto the engine performs for one packet of `inner` bytes, done directly with the
/// same libraries on a buffer of the same layout (AES-GCM with the `gcmni` kernels and HMAC
/// with the SHA-NI kernels where the CPU has them, as the engine does; CBC one packet at a
/// time, as the engine's per-packet path).
#[allow(missing_debug_implementations)] // holds keys
pub struct RawCrypto {
    gcm: Option<ring::aead::LessSafeKey>,
    /// AES-GCM's kernels where the CPU has them: what the engine uses then.
    #[cfg(target_arch = "x86_64")]
    gcm_ni: Option<xsec_dataplane::crypto::gcmni::GcmKey>,
    cbc_enc: Option<aes::Aes128Enc>,
    cbc_dec: Option<aes::Aes128Dec>,
    sha1: Option<hmac::Hmac<sha1::Sha1>>,
    sha256: Option<hmac::Hmac<sha2::Sha256>>,
    /// The SHA-NI kernels, when the CPU has them: what the engine uses then.
    #[cfg(target_arch = "x86_64")]
    sha1_ni: Option<xsec_dataplane::crypto::shani::HmacSha1Key>,
    #[cfg(target_arch = "x86_64")]
    sha256_ni: Option<xsec_dataplane::crypto::shani::HmacSha256Key>,
}

/// An AEAD ESP packet's nonce (a zero salt ‖ the IV), AAD (SPI ‖ seq), payload and ICV.
#[cfg(target_arch = "x86_64")]
fn aead_parts(esp: &mut [u8], iv: usize, icv: usize) -> ([u8; 12], &[u8], &mut [u8], &mut [u8]) {
    let n = esp.len();
    let (head, rest) = esp.split_at_mut(8 + iv);
    let (body, tag) = rest.split_at_mut(n - 8 - iv - icv);
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&head[8..16]);
    (nonce, &head[..8], body, tag)
}

impl RawCrypto {
    pub fn new(enc: EncAlg, auth: AuthAlg) -> Self {
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
            #[cfg(target_arch = "x86_64")]
            gcm_ni: matches!(enc, EncAlg::AesGcm128 | EncAlg::AesGcm256)
                .then(|| xsec_dataplane::crypto::gcmni::GcmKey::new(&ek[..enc.key_len()]))
                .flatten(),
            gcm,
            cbc_enc: cbc.then(|| aes::Aes128Enc::new_from_slice(&ek).expect("key")),
            cbc_dec: cbc.then(|| aes::Aes128Dec::new_from_slice(&ek).expect("key")),
            sha1: (auth == AuthAlg::HmacSha1_96)
                .then(|| <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&ak).expect("key")),
            sha256: (auth == AuthAlg::HmacSha256_128)
                .then(|| <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&ak).expect("key")),
            #[cfg(target_arch = "x86_64")]
            sha1_ni: (auth == AuthAlg::HmacSha1_96)
                .then(|| xsec_dataplane::crypto::shani::HmacSha1Key::new(&ak))
                .flatten(),
            #[cfg(target_arch = "x86_64")]
            sha256_ni: (auth == AuthAlg::HmacSha256_128)
                .then(|| xsec_dataplane::crypto::shani::HmacSha256Key::new(&ak))
                .flatten(),
        }
    }

    /// The full HMAC of `signed` with the fastest implementation the engine would use.
    fn full_mac(&self, signed: &[u8], out: &mut [u8; 32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(k) = &self.sha1_ni {
                return k.mac(signed, None, out);
            }
            if let Some(k) = &self.sha256_ni {
                return k.mac(signed, None, out);
            }
        }
        if let Some(m) = &self.sha1 {
            out[..20].copy_from_slice(&m.clone().chain_update(signed).finalize().into_bytes());
        } else if let Some(m) = &self.sha256 {
            out.copy_from_slice(&m.clone().chain_update(signed).finalize().into_bytes());
        }
    }

    /// `esp` = header ‖ IV ‖ payload+trailer ‖ ICV space, as the engine lays it out.
    pub fn seal(&self, esp: &mut [u8], iv: usize, icv: usize) {
        let n = esp.len();
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = &self.gcm_ni {
            let (nonce, aad, body, tag) = aead_parts(esp, iv, icv);
            if let Ok(tag) = <&mut [u8; 16]>::try_from(tag) {
                xsec_dataplane::crypto::gcmni::seal_one(k, &nonce, aad, body, tag);
            }
            return;
        }
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
        let mut out = [0u8; 32];
        self.full_mac(signed, &mut out);
        tag.copy_from_slice(&out[..icv]);
    }

    pub fn open(&self, esp: &mut [u8], iv: usize, icv: usize) {
        let n = esp.len();
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = &self.gcm_ni {
            let (nonce, aad, body, tag) = aead_parts(esp, iv, icv);
            if let Ok(tag) = <&[u8; 16]>::try_from(&*tag) {
                let ok = xsec_dataplane::crypto::gcmni::open_one(k, &nonce, aad, body, tag);
                let _ = black_box(ok);
            }
            return;
        }
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
        self.full_mac(signed, &mut want);
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

pub fn esp_layout(enc: EncAlg, auth: AuthAlg, inner: usize) -> EspLayout {
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

/// An outbound SPD that protects all unicast traffic with reqid 1.
pub fn protect_all() -> Arc<Spd> {
    use xsec_dataplane::spd::{Action, Policy, SaBundle, Selector, SpdConfig};
    let cfg = SpdConfig {
        outbound: vec![Policy {
            name: "all".into(),
            selector: Selector::ANY,
            action: Action::Protect(SaBundle::single(1)),
        }],
        ..Default::default()
    };
    Arc::new(cfg.compile().unwrap_or_else(|e| panic!("spd: {e}")))
}

/// Put `inner` back at the head of a frame's packet window.
pub fn reset(p: &mut PacketBuf<Vec<u8>>, inner: &[u8]) {
    p.frame_mut()[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
    p.set_window(HEADROOM, inner.len());
}

/// The arguments of the paired benches: a number of rounds (default `rounds`) and algorithm
/// names to restrict to (cargo's own `--bench` flag is ignored). Also pins the thread to the
/// last core, as every paired bench does.
pub fn paired_bench_args(rounds: usize) -> (usize, Vec<String>) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds = args.iter().find_map(|a| a.parse().ok()).unwrap_or(rounds);
    let only = args
        .into_iter()
        .filter(|a| a.parse::<usize>().is_err())
        .collect();
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(core);
    }
    (rounds, only)
}
