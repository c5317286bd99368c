//! What the protocol core needs to know about a connection: addresses, identities, the
//! pre-shared key, proposals and its children. Built from the TOML file by
//! [`crate::config`], or directly by tests.

use std::net::IpAddr;
use std::time::Duration;

use super::kdf::Secret;
use super::proposal::Suite;
use super::wire::{Id, IdType, TrafficSelector};

/// Tunnel or transport mode of a Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tunnel,
    Transport,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tunnel => "tunnel",
            Mode::Transport => "transport",
        }
    }
}

/// What to do when DPD finds the peer dead (swanctl's `dpd_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdAction {
    /// Remove the SAs and do nothing more.
    Clear,
    /// Negotiate the IKE SA and its children again.
    Restart,
    /// Remove the SAs and leave trap policies, so traffic starts a new negotiation.
    Trap,
}

/// A Child SA's configuration (swanctl's `children.<name>`).
#[derive(Debug, Clone)]
pub struct ChildConfig {
    pub name: String,
    /// ESP proposals; their groups are the PFS groups of CREATE_CHILD_SA.
    pub esp: Vec<Suite>,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub mode: Mode,
    /// Rekey this long after creation (soft lifetime).
    pub rekey_time: Option<Duration>,
    /// Delete this long after creation if not rekeyed (hard lifetime).
    pub life_time: Option<Duration>,
    /// Negotiate it whenever its connection's IKE SA is initiated (swanctl's
    /// `start_action = start`); otherwise only when asked (a trap's ACQUIRE, `initiate`).
    pub auto_start: bool,
}

/// A connection (swanctl's `connections.<name>`).
pub struct Connection {
    pub name: String,
    /// Our address (None: any the peer reaches us on).
    pub local_addr: Option<IpAddr>,
    /// The peer's address (None: any; such a connection cannot be initiated).
    pub remote_addr: Option<IpAddr>,
    pub local_id: Id,
    /// The identity the peer must prove (None: any, with this connection's key).
    pub remote_id: Option<Id>,
    pub psk: Secret,
    pub ike: Vec<Suite>,
    pub children: Vec<ChildConfig>,
    pub dpd_delay: Option<Duration>,
    pub dpd_action: DpdAction,
    /// Rekey the IKE SA this long after creation.
    pub rekey_time: Option<Duration>,
    /// Authenticate again this long after creation: a new IKE SA with the same Child SAs,
    /// then the old one deleted (make-before-break; swanctl's `reauth_time`).
    pub reauth_time: Option<Duration>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("remote_addr", &self.remote_addr)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("psk_len", &self.psk.len())
            .field("ike", &self.ike)
            .field("children", &self.children)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether an IKE SA between these addresses may use this connection.
    pub fn matches_addrs(&self, local: IpAddr, remote: IpAddr) -> bool {
        self.local_addr.is_none_or(|a| a == local) && self.remote_addr.is_none_or(|a| a == remote)
    }

    /// Whether the peer's identity is the one this connection expects.
    pub fn matches_peer(&self, id: &Id) -> bool {
        self.remote_id.as_ref().is_none_or(|r| r == id)
    }
}

/// An identity as swanctl writes it: an IP address, `@fqdn` or a bare host name (FQDN),
/// `user@domain` (RFC 822), or `keyid:hex`.
pub fn parse_id(s: &str) -> Result<Id, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => Id {
                ty: IdType::IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            IpAddr::V6(a) => Id {
                ty: IdType::IPV6_ADDR,
                data: a.octets().to_vec(),
            },
        });
    }
    if let Some(h) = s.strip_prefix("keyid:") {
        return hex::decode(h)
            .map(|data| Id {
                ty: IdType::KEY_ID,
                data,
            })
            .map_err(|e| format!("keyid: {e}"));
    }
    if let Some(f) = s.strip_prefix('@') {
        if f.is_empty() {
            return Err("empty FQDN".into());
        }
        return Ok(Id {
            ty: IdType::FQDN,
            data: f.as_bytes().to_vec(),
        });
    }
    if s.is_empty() {
        return Err("empty identity".into());
    }
    if s.contains('@') {
        return Ok(Id {
            ty: IdType::RFC822_ADDR,
            data: s.as_bytes().to_vec(),
        });
    }
    Ok(Id {
        ty: IdType::FQDN,
        data: s.as_bytes().to_vec(),
    })
}

/// Retransmission of requests (strongSwan's `retransmit_timeout`, `retransmit_base`,
/// `retransmit_tries`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retransmit_timeout: Duration,
    pub retransmit_base: f64,
    pub retransmit_tries: u32,
    /// How long a half-open IKE SA (IKE_SA_INIT answered, no IKE_AUTH) is kept.
    pub half_open_timeout: Duration,
    /// How long an old inbound Child SA is kept after a rekey, for packets in flight.
    pub rekey_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            retransmit_timeout: Duration::from_secs(4),
            retransmit_base: 1.8,
            retransmit_tries: 5,
            half_open_timeout: Duration::from_secs(30),
            rekey_grace: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// When the `n`th retransmission (0: the first sending's timeout) is due.
    pub fn backoff(&self, n: u32) -> Duration {
        self.retransmit_timeout
            .mul_f64(self.retransmit_base.powi(n.min(30) as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        assert_eq!(parse_id("10.0.0.1").expect("ip").ty, IdType::IPV4_ADDR);
        assert_eq!(parse_id("2001:db8::1").expect("ip").data.len(), 16);
        let f = parse_id("@gw-a.example").expect("fqdn");
        assert_eq!(
            (f.ty, f.data.as_slice()),
            (IdType::FQDN, &b"gw-a.example"[..])
        );
        assert_eq!(parse_id("gw-a.example").expect("fqdn"), f);
        assert_eq!(
            parse_id("ops@example.org").expect("email").ty,
            IdType::RFC822_ADDR
        );
        assert_eq!(parse_id("keyid:0a0b").expect("keyid").data, vec![10, 11]);
        assert!(parse_id("keyid:zz").is_err());
        assert!(parse_id("").is_err());
        assert!(parse_id("@").is_err());
    }

    #[test]
    fn backoff_grows() {
        let t = Timing::default();
        assert_eq!(t.backoff(0), Duration::from_secs(4));
        assert!(t.backoff(1) > Duration::from_secs(7));
        assert!(t.backoff(4) > t.backoff(3));
    }
}
