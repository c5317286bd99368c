//! Authentication with a pre-shared key (RFC 7296 §2.15):
//! AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>), where the signed
//! octets are the sender's first message, the peer's nonce and prf(SK_p, the sender's ID
//! payload body).

use super::kdf::{Prf, Secret};

/// The pad RFC 7296 §2.15 mixes into the shared secret.
pub const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets one side signs: its IKE_SA_INIT message, the other side's nonce, and
/// prf(SK_px, its ID payload's body).
#[derive(Debug, Clone, Copy)]
pub struct SignedOctets<'a> {
    pub real_message: &'a [u8],
    pub peer_nonce: &'a [u8],
    /// SK_pi when the initiator signs, SK_pr when the responder does.
    pub sk_p: &'a [u8],
    /// `RestOfIDPayload`: ID type, three reserved bytes, the identification data.
    pub id_body: &'a [u8],
}

fn psk_key(prf: Prf, psk: &[u8]) -> Secret {
    prf.prf(psk, &[KEY_PAD])
}

/// The AUTH payload's data for a pre-shared key.
pub fn psk_auth(prf: Prf, psk: &[u8], o: SignedOctets<'_>) -> Secret {
    let maced_id = prf.prf(o.sk_p, &[o.id_body]);
    prf.prf(
        &psk_key(prf, psk),
        &[o.real_message, o.peer_nonce, &maced_id],
    )
}

/// Whether the peer's AUTH data is right for the pre-shared key (constant-time compare).
pub fn psk_verify(prf: Prf, psk: &[u8], o: SignedOctets<'_>, auth: &[u8]) -> bool {
    let maced_id = prf.prf(o.sk_p, &[o.id_body]);
    prf.verify(
        &psk_key(prf, psk),
        &[o.real_message, o.peer_nonce, &maced_id],
        auth,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_auth_is_the_rfc_formula_and_checks() {
        let o = SignedOctets {
            real_message: b"message one",
            peer_nonce: &[7; 32],
            sk_p: &[1; 32],
            id_body: b"\x02\0\0\0gw-a.example",
        };
        let a = psk_auth(Prf::HmacSha256, b"secret", o);
        // by hand: the inner key, the MACed ID, the outer prf
        let k = Prf::HmacSha256.prf(b"secret", &[b"Key Pad for IKEv2"]);
        let id = Prf::HmacSha256.prf(&[1; 32], &[b"\x02\0\0\0gw-a.example"]);
        let want = Prf::HmacSha256.prf(&k, &[b"message one", &[7; 32], &id]);
        assert_eq!(a[..], want[..]);
        assert!(psk_verify(Prf::HmacSha256, b"secret", o, &a));
        assert!(!psk_verify(Prf::HmacSha256, b"secreT", o, &a));
        assert!(!psk_verify(Prf::HmacSha256, b"secret", o, &a[..31]));
        let other = SignedOctets {
            id_body: b"\x02\0\0\0gw-b.example",
            ..o
        };
        assert!(!psk_verify(Prf::HmacSha256, b"secret", other, &a));
    }
}
