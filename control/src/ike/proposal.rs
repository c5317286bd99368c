//! Algorithms and proposals: what xsec-ike offers and accepts, written the way strongSwan
//! users write them (`aes128gcm16-prfsha256-x25519`, `aes256-sha256-modp2048`), turned into
//! SA payload proposals, and the responder's choice (RFC 7296 §2.7, §3.3.6).

use super::kdf::Prf;
use super::ke::Group;
use super::wire::{Proposal, ProtocolId, Transform, TransformType};

/// Encryption transforms (IANA transform type 1) xsec-ike and xsecd both implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// AES-CBC with a 128, 192 or 256-bit key (RFC 3602).
    AesCbc(u16),
    /// AES-GCM with a 16-byte ICV (RFC 4106 / RFC 5282), 128 or 256-bit key.
    AesGcm16(u16),
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Encr {
    pub const AES_CBC: u16 = 12;
    pub const AES_GCM_16: u16 = 20;
    pub const CHACHA20_POLY1305: u16 = 28;

    pub fn transform(self) -> Transform {
        match self {
            Encr::AesCbc(k) => Transform::new(TransformType::ENCR, Self::AES_CBC, Some(k)),
            Encr::AesGcm16(k) => Transform::new(TransformType::ENCR, Self::AES_GCM_16, Some(k)),
            Encr::ChaCha20Poly1305 => {
                Transform::new(TransformType::ENCR, Self::CHACHA20_POLY1305, None)
            }
        }
    }

    fn from_transform(t: &Transform) -> Option<Encr> {
        match (t.id, t.key_len) {
            (Self::AES_CBC, Some(k @ (128 | 192 | 256))) => Some(Encr::AesCbc(k)),
            (Self::AES_GCM_16, Some(k @ (128 | 256))) => Some(Encr::AesGcm16(k)),
            (Self::CHACHA20_POLY1305, None) => Some(Encr::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// Combined mode: no separate integrity transform.
    pub fn is_aead(self) -> bool {
        !matches!(self, Encr::AesCbc(_))
    }

    /// Bytes of keying material: the key, plus the 4-byte salt of an AEAD.
    pub fn keymat_len(self) -> usize {
        match self {
            Encr::AesCbc(k) => k as usize / 8,
            Encr::AesGcm16(k) => k as usize / 8 + 4,
            Encr::ChaCha20Poly1305 => 36,
        }
    }

    /// strongSwan's name.
    pub fn name(self) -> String {
        match self {
            Encr::AesCbc(k) => format!("aes{k}"),
            Encr::AesGcm16(k) => format!("aes{k}gcm16"),
            Encr::ChaCha20Poly1305 => "chacha20poly1305".into(),
        }
    }
}

/// Integrity transforms (IANA transform type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    HmacSha1_96,
    HmacSha256_128,
    HmacSha384_192,
    HmacSha512_256,
}

impl Integ {
    pub fn id(self) -> u16 {
        match self {
            Integ::HmacSha1_96 => 2,
            Integ::HmacSha256_128 => 12,
            Integ::HmacSha384_192 => 13,
            Integ::HmacSha512_256 => 14,
        }
    }

    fn from_id(id: u16) -> Option<Integ> {
        [
            Integ::HmacSha1_96,
            Integ::HmacSha256_128,
            Integ::HmacSha384_192,
            Integ::HmacSha512_256,
        ]
        .into_iter()
        .find(|i| i.id() == id)
    }

    pub fn key_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 20,
            Integ::HmacSha256_128 => 32,
            Integ::HmacSha384_192 => 48,
            Integ::HmacSha512_256 => 64,
        }
    }

    pub fn icv_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 12,
            Integ::HmacSha256_128 => 16,
            Integ::HmacSha384_192 => 24,
            Integ::HmacSha512_256 => 32,
        }
    }

    /// The HMAC's hash, as a PRF.
    pub fn hmac(self) -> Prf {
        match self {
            Integ::HmacSha1_96 => Prf::HmacSha1,
            Integ::HmacSha256_128 => Prf::HmacSha256,
            Integ::HmacSha384_192 => Prf::HmacSha384,
            Integ::HmacSha512_256 => Prf::HmacSha512,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Integ::HmacSha1_96 => "sha1",
            Integ::HmacSha256_128 => "sha256",
            Integ::HmacSha384_192 => "sha384",
            Integ::HmacSha512_256 => "sha512",
        }
    }
}

fn prf_from_id(id: u16) -> Option<Prf> {
    [
        Prf::HmacSha1,
        Prf::HmacSha256,
        Prf::HmacSha384,
        Prf::HmacSha512,
    ]
    .into_iter()
    .find(|p| p.transform_id() == id)
}

fn prf_name(p: Prf) -> &'static str {
    match p {
        Prf::HmacSha1 => "prfsha1",
        Prf::HmacSha256 => "prfsha256",
        Prf::HmacSha384 => "prfsha384",
        Prf::HmacSha512 => "prfsha512",
    }
}

fn group_name(g: Group) -> &'static str {
    match g {
        Group::Modp2048 => "modp2048",
        Group::Ecp256 => "ecp256",
        Group::Ecp384 => "ecp384",
        Group::Curve25519 => "x25519",
    }
}

/// One configured proposal: the algorithms acceptable for each transform type, in order
/// of preference. For an IKE SA `prf` and `groups` are required; for a Child SA `prf` is
/// empty and `groups` is the PFS group list (empty: no PFS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub encr: Vec<Encr>,
    pub integ: Vec<Integ>,
    pub prf: Vec<Prf>,
    pub groups: Vec<Group>,
    /// Extended sequence numbers acceptable (Child SA): `[false]` by default.
    pub esn: Vec<bool>,
}

/// Why a proposal string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("unknown algorithm {0:?}")]
    Unknown(String),
    #[error("{0}")]
    Incomplete(&'static str),
}

impl Suite {
    /// Parse a strongSwan-style proposal: algorithms joined by `-`, e.g.
    /// `aes128gcm16-prfsha256-x25519`, `aes256-sha256-modp2048`, `chacha20poly1305-ecp256`.
    /// For IKE (`ike = true`) an integrity `shaN` without a `prfshaN` also gives that PRF,
    /// as in strongSwan; an AEAD needs its PRF named.
    pub fn parse(s: &str, ike: bool) -> Result<Suite, ProposalError> {
        let mut su = Suite {
            encr: vec![],
            integ: vec![],
            prf: vec![],
            groups: vec![],
            esn: vec![],
        };
        for tok in s.split('-').map(str::trim) {
            match tok {
                "aes128" => su.encr.push(Encr::AesCbc(128)),
                "aes192" => su.encr.push(Encr::AesCbc(192)),
                "aes256" => su.encr.push(Encr::AesCbc(256)),
                "aes128gcm16" | "aes128gcm128" | "aes128gcm" => su.encr.push(Encr::AesGcm16(128)),
                "aes256gcm16" | "aes256gcm128" | "aes256gcm" => su.encr.push(Encr::AesGcm16(256)),
                "chacha20poly1305" => su.encr.push(Encr::ChaCha20Poly1305),
                "sha1" | "sha" => su.integ.push(Integ::HmacSha1_96),
                "sha256" | "sha2_256" => su.integ.push(Integ::HmacSha256_128),
                "sha384" | "sha2_384" => su.integ.push(Integ::HmacSha384_192),
                "sha512" | "sha2_512" => su.integ.push(Integ::HmacSha512_256),
                "prfsha1" => su.prf.push(Prf::HmacSha1),
                "prfsha256" => su.prf.push(Prf::HmacSha256),
                "prfsha384" => su.prf.push(Prf::HmacSha384),
                "prfsha512" => su.prf.push(Prf::HmacSha512),
                "modp2048" => su.groups.push(Group::Modp2048),
                "ecp256" => su.groups.push(Group::Ecp256),
                "ecp384" => su.groups.push(Group::Ecp384),
                "x25519" | "curve25519" => su.groups.push(Group::Curve25519),
                "esn" => su.esn.push(true),
                "noesn" => su.esn.push(false),
                other => return Err(ProposalError::Unknown(other.to_string())),
            }
        }
        if su.encr.is_empty() {
            return Err(ProposalError::Incomplete("no encryption algorithm"));
        }
        let aead = su.encr.iter().all(|e| e.is_aead());
        let classic = su.encr.iter().all(|e| !e.is_aead());
        if !aead && !classic {
            return Err(ProposalError::Incomplete(
                "AEAD and non-AEAD encryption in one proposal (write two proposals)",
            ));
        }
        if classic && su.integ.is_empty() {
            return Err(ProposalError::Incomplete(
                "AES-CBC needs an integrity algorithm (sha256, sha384, ...)",
            ));
        }
        if aead && !su.integ.is_empty() {
            return Err(ProposalError::Incomplete(
                "an AEAD takes no integrity algorithm (use prfshaN for the PRF)",
            ));
        }
        if ike {
            if su.prf.is_empty() {
                su.prf = su.integ.iter().map(|i| i.hmac()).collect();
            }
            if su.prf.is_empty() {
                return Err(ProposalError::Incomplete(
                    "an AEAD IKE proposal needs its PRF (prfsha256, ...)",
                ));
            }
            if su.groups.is_empty() {
                return Err(ProposalError::Incomplete(
                    "an IKE proposal needs a key exchange group (x25519, ecp256, modp2048, ...)",
                ));
            }
            if !su.esn.is_empty() {
                return Err(ProposalError::Incomplete("ESN is for ESP proposals"));
            }
        } else if !su.prf.is_empty() {
            return Err(ProposalError::Incomplete("a PRF is for IKE proposals"));
        }
        if su.esn.is_empty() {
            su.esn.push(false);
        }
        Ok(su)
    }

    /// The SA payload proposal for this suite.
    pub fn proposal(&self, num: u8, protocol: ProtocolId, spi: Vec<u8>) -> Proposal {
        let mut t: Vec<Transform> = self.encr.iter().map(|e| e.transform()).collect();
        t.extend(
            self.prf
                .iter()
                .map(|p| Transform::new(TransformType::PRF, p.transform_id(), None)),
        );
        t.extend(
            self.integ
                .iter()
                .map(|i| Transform::new(TransformType::INTEG, i.id(), None)),
        );
        t.extend(
            self.groups
                .iter()
                .map(|g| Transform::new(TransformType::KE, g.id(), None)),
        );
        if protocol != ProtocolId::IKE {
            t.extend(
                self.esn
                    .iter()
                    .map(|e| Transform::new(TransformType::ESN, u16::from(*e), None)),
            );
        }
        Proposal {
            num,
            protocol,
            spi,
            transforms: t,
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.encr.iter().map(|e| e.name()).collect();
        parts.extend(self.integ.iter().map(|i| i.name().to_string()));
        parts.extend(self.prf.iter().map(|p| prf_name(*p).to_string()));
        parts.extend(self.groups.iter().map(|g| group_name(*g).to_string()));
        if self.esn.contains(&true) {
            parts.push("esn".into());
        }
        f.write_str(&parts.join("-"))
    }
}

/// The algorithms chosen for one SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    pub encr: Encr,
    pub integ: Option<Integ>,
    /// IKE SAs only.
    pub prf: Option<Prf>,
    /// IKE: the key exchange group; Child SA: the PFS group, if any.
    pub group: Option<Group>,
    pub esn: bool,
}

impl Chosen {
    /// The single-transform proposal that answers the peer's (its number and SPI given).
    pub fn proposal(&self, num: u8, protocol: ProtocolId, spi: Vec<u8>) -> Proposal {
        let mut t = vec![self.encr.transform()];
        if let Some(p) = self.prf {
            t.push(Transform::new(TransformType::PRF, p.transform_id(), None));
        }
        if let Some(i) = self.integ {
            t.push(Transform::new(TransformType::INTEG, i.id(), None));
        }
        if let Some(g) = self.group {
            t.push(Transform::new(TransformType::KE, g.id(), None));
        }
        if protocol != ProtocolId::IKE {
            t.push(Transform::new(
                TransformType::ESN,
                u16::from(self.esn),
                None,
            ));
        }
        Proposal {
            num,
            protocol,
            spi,
            transforms: t,
        }
    }
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![self.encr.name()];
        if let Some(i) = self.integ {
            parts.push(i.name().into());
        }
        if let Some(p) = self.prf {
            parts.push(prf_name(p).into());
        }
        if let Some(g) = self.group {
            parts.push(group_name(g).into());
        }
        if self.esn {
            parts.push("esn".into());
        }
        f.write_str(&parts.join("-"))
    }
}

/// The suites that offer the key exchange group `id`, with only that group: to prefer the
/// group of the peer's KE payload (no INVALID_KE_PAYLOAD round trip).
pub fn with_group(suites: &[Suite], id: u16) -> Vec<Suite> {
    suites
        .iter()
        .map(|s| Suite {
            groups: s.groups.iter().copied().filter(|g| g.id() == id).collect(),
            ..s.clone()
        })
        .filter(|s| !s.groups.is_empty())
        .collect()
}

/// Pick the transforms of one peer proposal that `ours` accepts, in our order of
/// preference; `None` when some transform type has no match or the proposal carries a
/// type `ours` does not use (such as a KE group in a Child SA proposal without PFS).
/// `need_group` says whether a KE transform is required (IKE SAs, and Child SAs with PFS
/// when `ours` lists groups).
pub fn choose_one(ours: &Suite, theirs: &Proposal, ike: bool) -> Option<Chosen> {
    let of = |ty: TransformType| -> Vec<&Transform> {
        theirs
            .transforms
            .iter()
            .filter(|t| t.ty == ty && !t.has_unknown_attribute())
            .collect()
    };
    let has = |ty: TransformType| theirs.transforms.iter().any(|t| t.ty == ty);
    let encr = ours.encr.iter().copied().find(|e| {
        of(TransformType::ENCR)
            .iter()
            .any(|t| Encr::from_transform(t) == Some(*e))
    })?;
    // INTEG: "NONE" (id 0) is allowed alongside an AEAD; otherwise it must match
    let integ = if encr.is_aead() {
        if of(TransformType::INTEG).iter().any(|t| t.id != 0) && !has_only_none_integ(theirs) {
            return None;
        }
        None
    } else {
        Some(ours.integ.iter().copied().find(|i| {
            of(TransformType::INTEG)
                .iter()
                .any(|t| Integ::from_id(t.id) == Some(*i))
        })?)
    };
    let prf = if ike {
        Some(ours.prf.iter().copied().find(|p| {
            of(TransformType::PRF)
                .iter()
                .any(|t| prf_from_id(t.id) == Some(*p))
        })?)
    } else {
        if has(TransformType::PRF) {
            return None;
        }
        None
    };
    let theirs_groups = of(TransformType::KE);
    // a Child SA proposal may list NONE (0) to mean "PFS optional"
    let group = if ours.groups.is_empty() {
        if theirs_groups.iter().any(|t| t.id != 0) {
            return None;
        }
        None
    } else {
        match ours
            .groups
            .iter()
            .copied()
            .find(|g| theirs_groups.iter().any(|t| t.id == g.id()))
        {
            Some(g) => Some(g),
            None => return None,
        }
    };
    let esn = if ike {
        if has(TransformType::ESN) {
            return None;
        }
        false
    } else {
        let theirs_esn: Vec<bool> = of(TransformType::ESN)
            .iter()
            .filter_map(|t| match t.id {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            })
            .collect();
        // RFC 7296 §3.3.3: ESP proposals carry ESN; a missing one means "no ESN"
        let theirs_esn = if theirs_esn.is_empty() {
            vec![false]
        } else {
            theirs_esn
        };
        ours.esn.iter().copied().find(|e| theirs_esn.contains(e))?
    };
    Some(Chosen {
        encr,
        integ,
        prf,
        group,
        esn,
    })
}

fn has_only_none_integ(p: &Proposal) -> bool {
    p.transforms
        .iter()
        .filter(|t| t.ty == TransformType::INTEG)
        .all(|t| t.id == 0)
}

/// The responder's choice among the peer's proposals for `protocol`: our proposals in our
/// order, the first peer proposal each accepts. Returns the peer's proposal (for its
/// number and SPI) and the algorithms.
pub fn choose<'a>(
    ours: &[Suite],
    theirs: &'a [Proposal],
    protocol: ProtocolId,
) -> Option<(&'a Proposal, Chosen)> {
    let ike = protocol == ProtocolId::IKE;
    for o in ours {
        for t in theirs.iter().filter(|t| t.protocol == protocol) {
            if let Some(c) = choose_one(o, t, ike) {
                return Some((t, c));
            }
        }
    }
    None
}

/// Check a responder's answer: exactly one proposal, one transform per type, and it must
/// be one of ours.
pub fn check_answer(ours: &[Suite], answer: &[Proposal], protocol: ProtocolId) -> Option<Chosen> {
    let [p] = answer else { return None };
    if p.protocol != protocol {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for t in &p.transforms {
        if !seen.insert(t.ty) {
            return None;
        }
    }
    let ike = protocol == ProtocolId::IKE;
    ours.iter().find_map(|o| choose_one(o, p, ike))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_strongswan_syntax() {
        let s = Suite::parse("aes128gcm16-prfsha256-x25519", true).expect("ike");
        assert_eq!(s.encr, vec![Encr::AesGcm16(128)]);
        assert_eq!(s.prf, vec![Prf::HmacSha256]);
        assert_eq!(s.groups, vec![Group::Curve25519]);
        let s = Suite::parse("aes256-sha256-modp2048", true).expect("ike");
        assert_eq!(s.integ, vec![Integ::HmacSha256_128]);
        assert_eq!(s.prf, vec![Prf::HmacSha256]);
        let s = Suite::parse("aes256-sha256-modp2048", false).expect("esp pfs");
        assert_eq!(s.groups, vec![Group::Modp2048]);
        assert!(s.prf.is_empty());
        assert_eq!(s.to_string(), "aes256-sha256-modp2048");
        assert!(Suite::parse("aes128gcm16-x25519", true).is_err());
        assert!(Suite::parse("aes128-x25519", true).is_err());
        assert!(Suite::parse("aes128-sha256", true).is_err());
        assert!(Suite::parse("3des-sha1", false).is_err());
        assert!(Suite::parse("aes128gcm16-sha256", false).is_err());
    }

    #[test]
    fn responder_picks_ours_first_and_answers_one_transform_each() {
        let ours = vec![
            Suite::parse("aes256-sha256-modp2048", true).expect("p"),
            Suite::parse("aes128gcm16-prfsha256-x25519", true).expect("p"),
        ];
        let theirs = vec![
            Suite::parse("aes128gcm16-prfsha256-x25519", true)
                .expect("p")
                .proposal(1, ProtocolId::IKE, vec![]),
            Suite::parse("aes128-aes256-sha1-sha256-modp2048-ecp256", true)
                .expect("p")
                .proposal(2, ProtocolId::IKE, vec![]),
        ];
        let (p, c) = choose(&ours, &theirs, ProtocolId::IKE).expect("match");
        assert_eq!(p.num, 2);
        assert_eq!(c.encr, Encr::AesCbc(256));
        assert_eq!(c.integ, Some(Integ::HmacSha256_128));
        assert_eq!(c.prf, Some(Prf::HmacSha256));
        assert_eq!(c.group, Some(Group::Modp2048));
        let answer = c.proposal(p.num, ProtocolId::IKE, vec![]);
        assert_eq!(
            check_answer(&ours, std::slice::from_ref(&answer), ProtocolId::IKE),
            Some(c)
        );
        // two answers, or a transform type twice, are refused
        assert_eq!(
            check_answer(&ours, &[answer.clone(), answer.clone()], ProtocolId::IKE),
            None
        );
        let mut twice = answer;
        twice.transforms.push(Encr::AesCbc(128).transform());
        assert_eq!(check_answer(&ours, &[twice], ProtocolId::IKE), None);
    }

    #[test]
    fn child_sa_pfs_and_esn() {
        let no_pfs = vec![Suite::parse("aes128gcm16", false).expect("p")];
        let pfs = Suite::parse("aes128gcm16-x25519", false).expect("p");
        let theirs_pfs = pfs.proposal(1, ProtocolId::ESP, vec![1, 2, 3, 4]);
        // we do not do PFS, they insist: no match
        assert_eq!(
            choose(&no_pfs, std::slice::from_ref(&theirs_pfs), ProtocolId::ESP),
            None
        );
        let (_, c) = choose(&[pfs], &[theirs_pfs], ProtocolId::ESP).expect("pfs");
        assert_eq!(c.group, Some(Group::Curve25519));
        assert!(!c.esn);
        let esn_only = vec![Suite::parse("aes128gcm16-esn", false).expect("p")];
        let theirs = Suite::parse("aes128gcm16-esn-noesn", false)
            .expect("p")
            .proposal(1, ProtocolId::ESP, vec![1, 2, 3, 4]);
        let (_, c) = choose(&esn_only, &[theirs], ProtocolId::ESP).expect("esn");
        assert!(c.esn);
    }

    #[test]
    fn unknown_attributes_and_key_lengths() {
        let ours = vec![Suite::parse("aes256-sha256-x25519", true).expect("p")];
        let mut p = ours[0].proposal(1, ProtocolId::IKE, vec![]);
        p.transforms[0].key_len = Some(128);
        assert_eq!(
            choose(&ours, std::slice::from_ref(&p), ProtocolId::IKE),
            None
        );
        p.transforms[0].key_len = Some(256);
        p.transforms[0].unknown_attributes = vec![0x80, 15, 0, 1];
        assert_eq!(choose(&ours, &[p], ProtocolId::IKE), None);
    }
}
