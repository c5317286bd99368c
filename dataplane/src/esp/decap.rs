//! Inbound: verify and remove ESP from one packet, in place (RFC 4303 §3.4).
//!
//! Order of checks (RFC 4303 §3.4.3-§3.4.4): lengths, encapsulation, lifetime, replay
//! *check*, ICV verification and decryption, replay *commit*, trailer and padding, next
//! header, then the decapsulated packet against the SA's selectors (RFC 4301 §5.2).

use super::{settle, usable};
use crate::events::{Event, EventKind, EventQueue};
use crate::packet::PacketBuf;
use crate::replay::ReplayError;
use crate::sa::{EcnMode, Mode, Sa, SaHandle};
use crate::spd::PacketKey;
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::checksum;
use crate::wire::esp::{EspTrailer, HEADER_LEN as ESP_HDR};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the ESP packet sits in an inbound packet, as found by the classifier. Offsets are
/// from the start of the packet window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InboundEsp {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    /// Bytes of IP header (options and extension headers included) in front of ESP or UDP.
    pub ip_hdr_len: usize,
    /// Offset of the byte that names ESP or UDP (IPv4: the protocol field).
    pub nh_field: usize,
    pub esp_off: usize,
    pub esp_len: usize,
    /// (source port, destination port) when UDP-encapsulated.
    pub udp: Option<(u16, u16)>,
    /// ECN bits of the outer header.
    pub outer_ecn: u8,
    /// Which header `esp_off` points at: ESP, AH (RFC 4302) or IPComp (RFC 3173). For AH
    /// and IPComp, `esp_len` runs from that header to the end of the IP packet.
    pub kind: Header,
    /// The SA is part of a bundle: when what it decapsulates is another layer of IPsec, its
    /// selector check is left to the bundle check (set by the engine, never by the
    /// classifier: an SA outside every bundle checks its selectors on whatever it carries).
    pub defer: bool,
}

/// The IPsec header an inbound packet starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    Esp,
    Ah,
    IpComp,
}

fn be32_at(data: &[u8], at: usize) -> u32 {
    data.get(at..)
        .and_then(|d| d.first_chunk::<4>())
        .map_or(0, |b| u32::from_be_bytes(*b))
}

/// Whether a decapsulated packet carries another layer of the bundle: ESP, AH, IPComp, or
/// IP in IP (the uncompressed form of a tunnel-mode IPComp SA). Its selectors are then
/// checked on the innermost packet, with the bundle (RFC 4301 §5.2).
#[inline(always)]
pub(crate) fn next_is_layer(nh: IpProtocol) -> bool {
    matches!(nh.0, 4 | 41 | 50 | 51 | 108)
}

impl InboundEsp {
    /// The SPI (the classifier checked that the 8-byte ESP header is there).
    #[inline(always)]
    pub(crate) fn spi(&self, data: &[u8]) -> u32 {
        match self.kind {
            Header::Esp => be32_at(data, self.esp_off),
            // after next header, payload length and reserved (RFC 4302 §2)
            Header::Ah => be32_at(data, self.esp_off + 4),
            // the 16-bit CPI after next header and flags (RFC 3173 §2.2)
            Header::IpComp => be32_at(data, self.esp_off) & 0xffff,
        }
    }

    fn src_ip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.src))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.src as u32))
        }
    }
}

/// Decapsulate. On success the window holds the inner packet (tunnel) or the rebuilt
/// transport-mode packet, and the number of plaintext bytes is returned. `checked`: the ICV
/// was already checked with these ESN high bits ([`crate::crypto::Transform::verify_group`]).
#[inline]
pub(crate) fn decap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    now: Timestamp,
    events: &mut EventQueue,
    checked: Option<(Option<u32>, bool)>,
) -> Result<(usize, bool), DropReason> {
    let r = run(sa, h, pkt, o, now, events, checked);
    settle(sa, h, now, events, r)
}

#[inline(always)]
fn run<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    now: Timestamp,
    events: &mut EventQueue,
    checked: Option<(Option<u32>, bool)>,
) -> Result<(usize, bool), DropReason> {
    // The SA fixes the encapsulation: raw ESP for a raw SA, UDP to its port otherwise.
    match (sa.udp, o.udp) {
        (None, None) => {}
        (Some((lp, _)), Some((_, dport))) if lp == dport => {}
        _ => return Err(DropReason::EncapMismatch),
    }
    usable(sa, h, now, events)?;
    let (iv, icv) = (sa.xform.iv_len(), sa.xform.icv_len());
    if o.esp_len < ESP_HDR + iv + 2 + icv {
        return Err(DropReason::BadLength);
    }
    let base = pkt.head();
    let esp = base + o.esp_off;
    let frame = pkt.frame_mut();
    let seq_lo = frame
        .get(esp + 4..)
        .and_then(|d| d.first_chunk::<4>())
        .map(|b| u32::from_be_bytes(*b))
        .ok_or(DropReason::BadLength)?;
    let seq = sa.replay.infer(seq_lo).ok_or(DropReason::ReplayOld)?;
    sa.replay.check(seq).map_err(|e| match e {
        ReplayError::Old => DropReason::ReplayOld,
        ReplayError::Duplicate => DropReason::ReplayDuplicate,
    })?;
    sa.xform.open_checked(
        frame,
        esp,
        o.esp_len,
        sa.esn.then_some((seq >> 32) as u32),
        checked,
    )?;
    // Authenticated: now the window may move (RFC 4303 §3.4.3). A window shared with other
    // workers may have taken this number meanwhile (a replay that reached two workers).
    sa.replay.commit(seq).map_err(|e| match e {
        ReplayError::Old => DropReason::ReplayOld,
        ReplayError::Duplicate => DropReason::ReplayDuplicate,
    })?;

    let pt = esp + ESP_HDR + iv;
    let pt_end = esp + o.esp_len - icv;
    let (trailer, data_len) =
        EspTrailer::parse(&frame[pt..pt_end]).map_err(|_| DropReason::BadPadding)?;

    if let Some((sport, _)) = o.udp {
        // NAT-T: remember where authenticated traffic comes from; report a change.
        let seen = (o.src_ip(), sport);
        if sa.peer_seen != Some(seen) {
            let first = sa.peer_seen.is_none();
            sa.peer_seen = Some(seen);
            let configured = sa.info.remote.map(|r| (r, sa.udp.map_or(0, |u| u.1)));
            if !first || configured.is_some_and(|c| c != seen) {
                events.push(Event {
                    kind: EventKind::PeerChanged {
                        addr: seen.0,
                        port: seen.1,
                    },
                    spi: sa.spi,
                    reqid: sa.reqid,
                    direction: sa.dir,
                    handle: h,
                });
            }
        }
    }

    let nh = trailer.next_header;
    if nh == IpProtocol::NO_NEXT_HEADER {
        // RFC 4303 §2.6: a dummy packet for traffic-flow confidentiality.
        return Err(DropReason::Dummy);
    }
    match sa.mode {
        Mode::Tunnel => tunnel(sa, pkt, o, pt, data_len, nh),
        Mode::Transport => transport(sa, pkt, o, pt, data_len, nh),
    }
}

#[inline(always)]
pub(crate) fn tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &Sa,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    pt: usize,
    data_len: usize,
    nh: IpProtocol,
) -> Result<(usize, bool), DropReason> {
    let frame = pkt.frame_mut();
    let inner = &mut frame[pt..pt + data_len];
    // The inner header's own length bounds the packet: anything after it is TFC padding
    // (RFC 4303 §2.7), which is tolerated and removed.
    let inner_len = match (nh, inner.first_chunk::<20>()) {
        // IPv4 without options: its length at a fixed offset
        (IpProtocol::IPV4, Some(h)) if h[0] == 0x45 => {
            let n = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if n < 20 || n > data_len {
                return Err(DropReason::Malformed);
            }
            n
        }
        (IpProtocol::IPV4, _) if inner.first().map(|b| b >> 4) == Some(4) => usize::from(
            Ipv4Packet::new_checked(&*inner)
                .map_err(|_| DropReason::Malformed)?
                .total_len(),
        ),
        (IpProtocol::IPV6, _) if inner.first().map(|b| b >> 4) == Some(6) => {
            Ipv6Packet::new_checked(&*inner)
                .map_err(|_| DropReason::Malformed)?
                .total_len()
        }
        (IpProtocol::IPV4 | IpProtocol::IPV6, _) => return Err(DropReason::Malformed),
        _ => return Err(DropReason::BadNextHeader),
    };
    let inner = &mut inner[..inner_len];
    let deferred = o.defer && inner_is_layer(inner);
    if !deferred {
        check_selectors(sa, inner)?;
    }
    // An outer Not-ECT changes nothing (RFC 6040 Figure 4, first column).
    if sa.ecn == EcnMode::Normal && o.outer_ecn != 0 {
        ecn_decap(inner, o.outer_ecn)?;
    }
    pkt.set_window(pt, inner_len);
    Ok((inner_len, deferred))
}

/// Whether the inner IP packet of a tunnel carries another layer (see [`next_is_layer`]).
fn inner_is_layer(inner: &[u8]) -> bool {
    match inner.first().map(|b| b >> 4) {
        Some(4) => inner.get(9).is_some_and(|&p| next_is_layer(IpProtocol(p))),
        Some(6) => Ipv6Packet::new_checked(inner)
            .ok()
            .and_then(|ip| ip.upper_layer().ok())
            .is_some_and(|ul| ul.ah.is_some() || next_is_layer(ul.protocol)),
        _ => false,
    }
}

/// RFC 4301 §5.2: the decapsulated packet must match the SA's traffic selectors. An SA
/// with [`Selector::ANY`](crate::spd::Selector::ANY) among them skips the upper-layer parse;
/// one without selectors accepts nothing (no policy names it: fail closed).
#[inline(always)]
fn check_selectors(sa: &Sa, packet: &[u8]) -> Result<(), DropReason> {
    if sa.selectors.is_any() {
        return Ok(());
    }
    if sa.selectors.is_empty() {
        return Err(DropReason::SelectorMismatch);
    }
    let key = PacketKey::parse(packet).map_err(|_| DropReason::Malformed)?;
    if sa.selectors_match(&key) {
        Ok(())
    } else {
        Err(DropReason::SelectorMismatch)
    }
}

/// RFC 6040 §4.2: fold the outer ECN field into the inner one.
#[inline]
fn ecn_decap(inner: &mut [u8], outer: u8) -> Result<(), DropReason> {
    const NOT_ECT: u8 = 0;
    const ECT1: u8 = 1;
    const ECT0: u8 = 2;
    const CE: u8 = 3;
    let v4 = inner[0] >> 4 == 4;
    let cur = if v4 {
        inner[1] & 3
    } else {
        (inner[1] >> 4) & 3
    };
    let new = match (cur, outer) {
        (NOT_ECT, CE) => return Err(DropReason::EcnDrop),
        (_, CE) => CE,
        (ECT0, ECT1) => ECT1,
        _ => cur,
    };
    if new != cur {
        if v4 {
            let old = u16::from_be_bytes([inner[0], inner[1]]);
            inner[1] = (inner[1] & !3) | new;
            let c = u16::from_be_bytes([inner[10], inner[11]]);
            let c = checksum::update16(c, old, u16::from_be_bytes([inner[0], inner[1]]));
            inner[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            inner[1] = (inner[1] & !0x30) | (new << 4);
        }
    }
    Ok(())
}

pub(crate) fn transport<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &Sa,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    pt: usize,
    data_len: usize,
    nh: IpProtocol,
) -> Result<(usize, bool), DropReason> {
    let base = pkt.head();
    let hl = o.ip_hdr_len;
    let start = pt - hl;
    let total = hl + data_len;
    if !o.v6 && total > usize::from(u16::MAX) || o.v6 && total - 40 > usize::from(u16::MAX) {
        return Err(DropReason::BadLength);
    }
    let frame = pkt.frame_mut();
    frame.copy_within(base..base + hl, start);
    frame[start + o.nh_field] = nh.0;
    if o.v6 {
        frame[start + 4..start + 6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[start..start + hl]);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    }
    if sa.udp.is_some() && (nh == IpProtocol::TCP || nh == IpProtocol::UDP) {
        // RFC 3948 §3.1.2: after NAT the upper-layer checksum no longer matches the
        // addresses; recompute it over the addresses the packet now carries.
        fix_l4_checksum(&mut frame[start..start + total], hl, nh, o.v6);
    }
    let deferred = o.defer && next_is_layer(nh);
    if !deferred {
        check_selectors(sa, &frame[start..start + total])?;
    }
    pkt.set_window(start, total);
    Ok((data_len, deferred))
}

fn fix_l4_checksum(p: &mut [u8], hl: usize, nh: IpProtocol, v6: bool) {
    let l4_len = p.len() - hl;
    let off = if nh == IpProtocol::TCP { 16 } else { 6 };
    if l4_len < off + 2 {
        return;
    }
    // A zero UDP checksum over IPv4 means "none" and stays so.
    if nh == IpProtocol::UDP && !v6 && p[hl + 6] == 0 && p[hl + 7] == 0 {
        return;
    }
    p[hl + off] = 0;
    p[hl + off + 1] = 0;
    let pseudo = if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&p[8..24]);
        d.copy_from_slice(&p[24..40]);
        checksum::pseudo_v6(s, d, nh.0, l4_len as u32)
    } else {
        checksum::pseudo_v4(
            [p[12], p[13], p[14], p[15]],
            [p[16], p[17], p[18], p[19]],
            nh.0,
            l4_len as u16,
        )
    };
    let mut c = checksum::finish(checksum::add(pseudo, checksum::sum(&p[hl..])));
    if nh == IpProtocol::UDP && c == 0 {
        c = 0xffff;
    }
    p[hl + off..hl + off + 2].copy_from_slice(&c.to_be_bytes());
}
