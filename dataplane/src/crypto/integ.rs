//! HMAC integrity (RFC 2104) truncated per RFC 2404 / RFC 4868, with the inner and outer
//! hash states precomputed once per SA: a packet costs one clone of that state. AES-CMAC-96
//! (RFC 4494) the same way: the AES key schedule and CMAC subkeys are built once per SA.

use super::AuthAlg;
use hmac::{Hmac, KeyInit, Mac};

/// Largest truncated ICV (HMAC-SHA-512-256).
pub(crate) const MAX_HMAC_ICV: usize = 32;

/// Most packets signed or checked in one group ([`Integ::sign_group`]): the lanes of the
/// 16-lane AVX-512 HMAC-SHA1 kernel.
pub(crate) const GROUP: usize = 16;

#[derive(Clone)]
pub(crate) enum Integ {
    None,
    // boxed like the rest: an SA's transform stays small (the SAD holds millions)
    Sha1(Box<Hmac<sha1::Sha1>>),
    Sha256(Box<Hmac<sha2::Sha256>>),
    Sha384(Box<Hmac<sha2::Sha384>>),
    Sha512(Box<Hmac<sha2::Sha512>>),
    AesCmac(Box<cmac::Cmac<aes::Aes128>>),
    /// HMAC-SHA1 with the SHA-NI kernel (chosen when the CPU has it).
    #[cfg(target_arch = "x86_64")]
    Sha1Ni(Box<super::shani::HmacSha1Key>),
    /// HMAC-SHA-256 with the SHA-NI kernel.
    #[cfg(target_arch = "x86_64")]
    Sha256Ni(Box<super::shani::HmacSha256Key>),
}

impl core::fmt::Debug for Integ {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Integ::None => "Integ::None",
            Integ::Sha1(_) => "Integ::Sha1(..)",
            Integ::Sha256(_) => "Integ::Sha256(..)",
            Integ::Sha384(_) => "Integ::Sha384(..)",
            Integ::Sha512(_) => "Integ::Sha512(..)",
            Integ::AesCmac(_) => "Integ::AesCmac(..)",
            #[cfg(target_arch = "x86_64")]
            Integ::Sha1Ni(_) => "Integ::Sha1Ni(..)",
            #[cfg(target_arch = "x86_64")]
            Integ::Sha256Ni(_) => "Integ::Sha256Ni(..)",
        })
    }
}

#[inline(always)]
fn mac_into<M: Mac + Clone>(m: &M, data: &[u8], esn_hi: Option<u32>, out: &mut [u8; MAX_HMAC_ICV]) {
    let mut m = m.clone();
    m.update(data);
    if let Some(hi) = esn_hi {
        // RFC 4303 §3.3.2.1: the high-order ESN bits are appended (not sent) for the ICV.
        m.update(&hi.to_be_bytes());
    }
    let full = m.finalize().into_bytes();
    let n = full.len().min(MAX_HMAC_ICV);
    out[..n].copy_from_slice(&full[..n]);
}

/// Constant-time equality of two ICVs of the same length (12 to 32 bytes): every byte is
/// XORed and ORed into one accumulator, 8 bytes at a time, with no data-dependent branch or
/// early exit; `black_box` keeps the compiler from turning the final test into a short cut.
#[inline(always)]
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    core::hint::black_box(diff) == 0
}

impl Integ {
    /// The integrity state of `alg` with `key`: the SHA-NI kernels for HMAC-SHA1 and
    /// HMAC-SHA-256 where the CPU has them, RustCrypto otherwise (same results).
    pub(crate) fn new(alg: AuthAlg, key: &[u8]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        match alg {
            AuthAlg::HmacSha1_96 => {
                if let Some(k) = super::shani::HmacSha1Key::new(key) {
                    return Some(Integ::Sha1Ni(Box::new(k)));
                }
            }
            AuthAlg::HmacSha256_128 => {
                if let Some(k) = super::shani::HmacSha256Key::new(key) {
                    return Some(Integ::Sha256Ni(Box::new(k)));
                }
            }
            _ => {}
        }
        Self::portable(alg, key)
    }

    /// The RustCrypto state, whatever the CPU (the fallback, and the reference in tests).
    pub(crate) fn portable(alg: AuthAlg, key: &[u8]) -> Option<Self> {
        Some(match alg {
            AuthAlg::None => Integ::None,
            AuthAlg::HmacSha1_96 => Integ::Sha1(Box::new(Hmac::new_from_slice(key).ok()?)),
            AuthAlg::HmacSha256_128 => Integ::Sha256(Box::new(Hmac::new_from_slice(key).ok()?)),
            AuthAlg::HmacSha384_192 => Integ::Sha384(Box::new(Hmac::new_from_slice(key).ok()?)),
            AuthAlg::HmacSha512_256 => Integ::Sha512(Box::new(Hmac::new_from_slice(key).ok()?)),
            AuthAlg::AesCmac96 => Integ::AesCmac(Box::new(cmac::Cmac::new_from_slice(key).ok()?)),
            // MD5 is refused; AES-GMAC is AH's, a transform of its own (`Transform::new_ah`)
            AuthAlg::HmacMd5_96
            | AuthAlg::AesGmac128
            | AuthAlg::AesGmac192
            | AuthAlg::AesGmac256 => return None,
        })
    }

    /// The full (untruncated) MAC of `data` (‖ `esn_hi`) into `out`.
    #[inline]
    fn full(&self, data: &[u8], esn_hi: Option<u32>, out: &mut [u8; MAX_HMAC_ICV]) {
        match self {
            Integ::None => {}
            Integ::Sha1(m) => mac_into(&**m, data, esn_hi, out),
            Integ::Sha256(m) => mac_into(&**m, data, esn_hi, out),
            Integ::Sha384(m) => mac_into(m.as_ref(), data, esn_hi, out),
            Integ::Sha512(m) => mac_into(m.as_ref(), data, esn_hi, out),
            Integ::AesCmac(m) => mac_into(m.as_ref(), data, esn_hi, out),
            #[cfg(target_arch = "x86_64")]
            Integ::Sha1Ni(k) => k.mac(data, esn_hi, out),
            #[cfg(target_arch = "x86_64")]
            Integ::Sha256Ni(k) => k.mac(data, esn_hi, out),
        }
    }

    /// Whether this is a SHA-NI state, which [`full_group`](Self::full_group) interleaves
    /// with others of the same algorithm.
    #[inline]
    pub(crate) fn pairs(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Integ::Sha1Ni(_) | Integ::Sha256Ni(_)) {
            return true;
        }
        false
    }

    /// The full MACs of up to [`GROUP`] messages: HMAC-SHA1 or HMAC-SHA-256 (SHA-NI keys, one
    /// algorithm for all) of seven or more in one pass of the 16-lane AVX-512 kernel where
    /// the CPU has it and it pays, the rest four at a time, their hashes interleaved when they
    /// use the same SHA-NI algorithm (keys may differ).
    #[inline]
    fn full_group(
        integ: &[&Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        out: &mut [[u8; MAX_HMAC_ICV]],
    ) {
        let n = integ.len().min(data.len()).min(esn_hi.len()).min(out.len());
        #[cfg(target_arch = "x86_64")]
        if n >= super::shax16::MIN_LANES {
            use super::shani::{HmacSha1Key, HmacSha256Key};
            let done = match integ.first() {
                Some(Integ::Sha1Ni(_)) => {
                    Self::full_group_x16::<HmacSha1Key>(integ, data, esn_hi, out, |i| match i {
                        Integ::Sha1Ni(k) => Some(&**k),
                        _ => None,
                    })
                }
                Some(Integ::Sha256Ni(_)) => {
                    Self::full_group_x16::<HmacSha256Key>(integ, data, esn_hi, out, |i| match i {
                        Integ::Sha256Ni(k) => Some(&**k),
                        _ => None,
                    })
                }
                _ => false,
            };
            if done {
                return;
            }
        }
        Self::in_fours(&integ[..n], &data[..n], &esn_hi[..n], &mut out[..n]);
    }

    /// [`full_group4`](Self::full_group4) over the messages, four at a time.
    #[inline]
    fn in_fours(
        integ: &[&Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        out: &mut [[u8; MAX_HMAC_ICV]],
    ) {
        for (((i, d), h), o) in integ
            .chunks(4)
            .zip(data.chunks(4))
            .zip(esn_hi.chunks(4))
            .zip(out.chunks_mut(4))
        {
            Self::full_group4(i, d, h, o);
        }
    }

    /// [`full_group`](Self::full_group) when every message's key is a `K` (`key` finds it)
    /// and the CPU has AVX-512: the lanes sorted by length, the shortest
    /// [`plan`](super::shax16::plan) says through the 16-lane kernel, the others four at a
    /// time through SHA-NI. `false` (nothing written) when that does not apply.
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    fn full_group_x16<'a, K: super::shax16::LaneKey + 'a>(
        integ: &[&'a Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        out: &mut [[u8; MAX_HMAC_ICV]],
        key: impl Fn(&'a Integ) -> Option<&'a K>,
    ) -> bool {
        use super::shax16;
        let n = integ
            .len()
            .min(data.len())
            .min(esn_hi.len())
            .min(out.len())
            .min(GROUP);
        let Some(first) = integ.first().and_then(|i| key(i)) else {
            return false;
        };
        if !shax16::available() || integ[..n].iter().any(|i| key(i).is_none()) {
            return false;
        }
        // lanes by increasing block count (insertion sort of at most 16 indices)
        let mut order: [usize; GROUP] = core::array::from_fn(|i| i);
        let mut blocks = [0usize; GROUP];
        for ((b, d), h) in blocks.iter_mut().zip(&data[..n]).zip(&esn_hi[..n]) {
            *b = shax16::blocks(d.len(), h.is_some());
        }
        for i in 1..n {
            let mut j = i;
            while j > 0 && blocks[order[j - 1]] > blocks[order[j]] {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        let sorted: [usize; GROUP] = core::array::from_fn(|i| blocks[order[i]]);
        let k = shax16::plan::<K>(&sorted[..n]);
        if k == 0 {
            return false;
        }
        // the lanes in that order, computed, then put back
        let ks: [&K; GROUP] =
            core::array::from_fn(|i| integ.get(order[i]).and_then(|x| key(x)).unwrap_or(first));
        let ds: [&[u8]; GROUP] =
            core::array::from_fn(|i| data.get(order[i]).copied().unwrap_or(&[]));
        let hs: [Option<u32>; GROUP] =
            core::array::from_fn(|i| esn_hi.get(order[i]).copied().flatten());
        let mut os = [[0u8; MAX_HMAC_ICV]; GROUP];
        if !shax16::mac16(&ks[..k], &ds[..k], &hs[..k], &mut os[..k]) {
            return false;
        }
        let rest: [&Integ; GROUP] =
            core::array::from_fn(|i| integ.get(order[i]).copied().unwrap_or(integ[0]));
        Self::in_fours(&rest[k..n], &ds[k..n], &hs[k..n], &mut os[k..n]);
        for (i, o) in order[..n].iter().zip(os) {
            out[*i] = o;
        }
        true
    }

    /// [`full_group`](Self::full_group) of up to four messages.
    #[inline]
    fn full_group4(
        integ: &[&Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        out: &mut [[u8; MAX_HMAC_ICV]],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::shani::{HmacSha1Key, HmacSha256Key};
            if let ([a, b, c, d], [d0, d1, d2, d3], [h0, h1, h2, h3], [o0, o1, o2, o3]) =
                (integ, data, esn_hi, &mut *out)
            {
                let (ds, hs) = ([*d0, *d1, *d2, *d3], [*h0, *h1, *h2, *h3]);
                match (*a, *b, *c, *d) {
                    (Integ::Sha1Ni(a), Integ::Sha1Ni(b), Integ::Sha1Ni(c), Integ::Sha1Ni(d)) => {
                        return HmacSha1Key::mac4([a, b, c, d], ds, hs, [o0, o1, o2, o3]);
                    }
                    (
                        Integ::Sha256Ni(a),
                        Integ::Sha256Ni(b),
                        Integ::Sha256Ni(c),
                        Integ::Sha256Ni(d),
                    ) => {
                        return HmacSha256Key::mac4([a, b, c, d], ds, hs, [o0, o1, o2, o3]);
                    }
                    _ => {}
                }
            }
        }
        let mut k = 0;
        while k < integ.len() {
            let rest = &mut out[k..];
            match (&integ[k..], rest) {
                #[cfg(target_arch = "x86_64")]
                ([Integ::Sha1Ni(a), Integ::Sha1Ni(b), ..], [o0, o1, ..]) => {
                    let (d, h) = ([data[k], data[k + 1]], [esn_hi[k], esn_hi[k + 1]]);
                    super::shani::HmacSha1Key::mac2([a, b], d, h, [o0, o1]);
                    k += 2;
                }
                #[cfg(target_arch = "x86_64")]
                ([Integ::Sha256Ni(a), Integ::Sha256Ni(b), ..], [o0, o1, ..]) => {
                    let (d, h) = ([data[k], data[k + 1]], [esn_hi[k], esn_hi[k + 1]]);
                    super::shani::HmacSha256Key::mac2([a, b], d, h, [o0, o1]);
                    k += 2;
                }
                ([a, ..], [o, ..]) => {
                    a.full(data[k], esn_hi[k], o);
                    k += 1;
                }
                _ => break,
            }
        }
    }

    /// Sign up to [`GROUP`] packets (`data[i]` ‖ `esn_hi[i]`, truncated ICV into `icv[i]`).
    #[inline]
    pub(crate) fn sign_group(
        integ: &[&Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        icv: &mut [&mut [u8]],
    ) {
        let n = integ.len().min(GROUP);
        let mut full = [[0u8; MAX_HMAC_ICV]; GROUP];
        Self::full_group(&integ[..n], &data[..n], &esn_hi[..n], &mut full[..n]);
        for (t, f) in icv.iter_mut().zip(&full[..n]) {
            let m = t.len().min(MAX_HMAC_ICV);
            t[..m].copy_from_slice(&f[..m]);
        }
    }

    /// Check up to [`GROUP`] packets' received ICVs (constant time each) into `ok`.
    #[inline]
    pub(crate) fn verify_group(
        integ: &[&Integ],
        data: &[&[u8]],
        esn_hi: &[Option<u32>],
        icv: &[&[u8]],
        ok: &mut [bool],
    ) {
        let n = integ.len().min(GROUP);
        let mut full = [[0u8; MAX_HMAC_ICV]; GROUP];
        Self::full_group(&integ[..n], &data[..n], &esn_hi[..n], &mut full[..n]);
        for ((o, f), t) in ok.iter_mut().zip(&full[..n]).zip(icv) {
            *o = t.len() <= MAX_HMAC_ICV && ct_eq(&f[..t.len()], t);
        }
    }

    /// Write the truncated ICV (`icv.len()` bytes) of `data`.
    #[inline]
    pub(crate) fn sign(&self, data: &[u8], esn_hi: Option<u32>, icv: &mut [u8]) {
        let mut full = [0u8; MAX_HMAC_ICV];
        self.full(data, esn_hi, &mut full);
        let n = icv.len().min(MAX_HMAC_ICV);
        icv[..n].copy_from_slice(&full[..n]);
    }

    /// Constant-time check of a received truncated ICV.
    #[inline]
    pub(crate) fn verify(&self, data: &[u8], esn_hi: Option<u32>, icv: &[u8]) -> bool {
        if icv.len() > MAX_HMAC_ICV {
            return false;
        }
        let mut full = [0u8; MAX_HMAC_ICV];
        self.full(data, esn_hi, &mut full);
        ct_eq(&full[..icv.len()], icv)
    }

    /// Untruncated MAC, for the RFC 2202/4231 known-answer tests.
    #[cfg(test)]
    pub(crate) fn mac_for_test(&self, data: &[u8]) -> Vec<u8> {
        let mut full = [0u8; MAX_HMAC_ICV];
        // The SHA-384/512 outputs are longer than any ICV: compute them directly.
        match self {
            Integ::Sha384(m) => {
                return m
                    .as_ref()
                    .clone()
                    .chain_update(data)
                    .finalize()
                    .into_bytes()
                    .to_vec();
            }
            Integ::Sha512(m) => {
                return m
                    .as_ref()
                    .clone()
                    .chain_update(data)
                    .finalize()
                    .into_bytes()
                    .to_vec();
            }
            _ => {}
        }
        self.full(data, None, &mut full);
        let n = match self {
            Integ::Sha1(_) => 20,
            Integ::Sha256(_) => 32,
            Integ::AesCmac(_) => 16,
            #[cfg(target_arch = "x86_64")]
            Integ::Sha1Ni(_) => 20,
            #[cfg(target_arch = "x86_64")]
            Integ::Sha256Ni(_) => 32,
            _ => 0,
        };
        full[..n].to_vec()
    }
}

#[cfg(test)]
mod ct_tests {
    use super::ct_eq;

    #[test]
    fn ct_eq_finds_every_difference() {
        for n in [12usize, 16, 24, 32] {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(ct_eq(&a, &a.clone()));
            for i in 0..n {
                for bit in 0..8 {
                    let mut b = a.clone();
                    b[i] ^= 1 << bit;
                    assert!(!ct_eq(&a, &b), "len {n} byte {i} bit {bit}");
                }
            }
            assert!(!ct_eq(&a, &a[..n - 1]));
        }
    }
}
