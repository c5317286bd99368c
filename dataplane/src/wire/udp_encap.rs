//! Classification of UDP-encapsulated ESP (RFC 3948 §2), on port 4500 or any other port the
//! SA configures (e.g. 2746 for the vendor ESP-in-UDP tunnel mode).

/// What the payload of a UDP datagram on an encapsulation port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpEncapKind {
    /// ESP: the first four bytes (the SPI) are not zero (RFC 3948 §2.1).
    Esp,
    /// IKE: the four-byte non-ESP marker (zero) precedes the IKE header (RFC 3948 §2.2).
    Ike,
    /// NAT-keepalive: a single byte 0xFF (RFC 3948 §2.3).
    Keepalive,
    /// Anything else: too short for ESP or IKE.
    Invalid,
}

/// Classify the UDP payload of a datagram received on an encapsulation port.
#[inline]
pub fn classify_udp_encap(payload: &[u8]) -> UdpEncapKind {
    match payload {
        [0xff] => UdpEncapKind::Keepalive,
        [0, 0, 0, 0, ..] => UdpEncapKind::Ike,
        // An ESP header (SPI + sequence number) is 8 bytes; SPI values 1-255 are reserved
        // (RFC 4303 §2.1) but are classified as ESP here and fail the SAD lookup.
        p if p.len() >= super::esp::HEADER_LEN => UdpEncapKind::Esp,
        _ => UdpEncapKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3948_cases() {
        assert_eq!(classify_udp_encap(&[0xff]), UdpEncapKind::Keepalive);
        assert_eq!(
            classify_udp_encap(&[0, 0, 0, 0, 1, 2, 3]),
            UdpEncapKind::Ike
        );
        assert_eq!(classify_udp_encap(&[0, 0, 0, 0]), UdpEncapKind::Ike);
        assert_eq!(
            classify_udp_encap(&[0, 0, 1, 0, 0, 0, 0, 1]),
            UdpEncapKind::Esp
        );
        assert_eq!(
            classify_udp_encap(&[0, 0, 1, 0, 0, 0, 0]),
            UdpEncapKind::Invalid
        );
        assert_eq!(classify_udp_encap(&[]), UdpEncapKind::Invalid);
        assert_eq!(classify_udp_encap(&[0xff, 0xff]), UdpEncapKind::Invalid);
        assert_eq!(classify_udp_encap(&[0, 0, 0]), UdpEncapKind::Invalid);
    }
}
