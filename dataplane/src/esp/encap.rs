//! Outbound: protect one packet with one SA, in place (RFC 4303 §3.1, §3.3).
//!
//! Tunnel mode prepends outer IP (+ UDP) + ESP header + IV in the headroom and appends
//! padding, trailer and ICV in the tailroom; the inner packet does not move. Transport mode
//! moves only the IP header (and IPv6 extension headers that stay in front of ESP) back into
//! the headroom and inserts ESP behind it.

use super::{report, settle, usable};
use crate::crypto::ICV_GROUP;
use crate::events::EventQueue;
use crate::packet::PacketBuf;
use crate::sa::{Mode, Protocol, Sa, SaHandle};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::checksum;
use crate::wire::esp::{EspTrailer, HEADER_LEN as ESP_HDR, TRAILER_LEN};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket};

/// A packet laid out, with its IV field seeded, whose encryption and ICV are left to the
/// burst ([`crate::crypto::Transform::defer_seal`]): its ESP packet is
/// `frame[esp..esp + len]`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deferred {
    pub esp: usize,
    pub len: usize,
    pub esn_hi: Option<u32>,
    /// ESP in UDP over IPv6: the offsets of the IPv6 and UDP headers and the UDP length, for
    /// the checksum once the ESP bytes are final.
    pub udp6: Option<(usize, usize, usize)>,
    /// AH instead of ESP: where the IP packet starts and whether it is IPv6; then `esp` is
    /// where the AH header starts and `len` the IP packet's length.
    pub ah: Option<(usize, bool)>,
}

impl Deferred {
    /// The last steps once the payloads are encrypted, for up to [`ICV_GROUP`] packets of `sa`
    /// (`frames[k]` holds `d[k]`): ICVs (signed together), then UDP/IPv6 checksums.
    #[inline]
    pub(crate) fn finish_group(d: &[Deferred], sa: &Sa, frames: &mut [&mut [u8]]) {
        let mut at = [(0, 0, None); ICV_GROUP];
        for (a, d) in at.iter_mut().zip(d) {
            *a = (d.esp, d.len, d.esn_hi);
        }
        let n = d.len().min(ICV_GROUP);
        sa.xform.sign_group(frames, &at[..n]);
        for (d, f) in d.iter().zip(frames.iter_mut()) {
            d.checksum(f);
        }
    }

    /// The UDP/IPv6 checksum, once the ESP bytes are final.
    pub(crate) fn checksum(&self, frame: &mut [u8]) {
        if let Some((ip, udp, len)) = self.udp6 {
            fill_udp6_checksum(frame, ip, udp, len);
        }
    }
}

/// Encapsulate `pkt` (an IP packet) with `sa`. On error the packet is left as it was. With
/// `defer`, a transform that can seal in bursts only lays the packet out and writes what is
/// left to do there (then the answer's `bool` is true). Bytes of the inner packet come back.
///
/// The record goes through a reference rather than the return value: a large return value is
/// written by small stores here and read back by wide loads in the caller straight away,
/// which the CPU cannot forward (a stall of tens of cycles per packet, seen in profiles).
#[inline]
pub(crate) fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    now: Timestamp,
    events: &mut EventQueue,
    defer: Option<&mut Deferred>,
) -> Result<(usize, bool), DropReason> {
    let r = usable(sa, h, now, events).and_then(|()| match sa.mode {
        Mode::Tunnel => tunnel(sa, h, pkt, events, defer),
        Mode::Transport => transport(sa, h, pkt, events, defer),
    });
    settle(sa, h, now, events, r)
}

/// Inner length, next header, TOS/traffic class and DF of the packet to tunnel.
#[inline(always)]
fn inner_info(data: &[u8]) -> Result<(usize, IpProtocol, u8, bool), DropReason> {
    match data.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            Ok((
                usize::from(ip.total_len()),
                IpProtocol::IPV4,
                ip.tos(),
                ip.dont_frag(),
            ))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            // IPv6 is never fragmented on path: the outer header gets DF (RFC 4301 §8.1).
            Ok((ip.total_len(), IpProtocol::IPV6, ip.traffic_class(), true))
        }
        _ => Err(DropReason::Malformed),
    }
}

#[inline(always)]
fn write_udp(u: &mut [u8], sport: u16, dport: u16, len: usize) {
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    // Zero over IPv4 (RFC 3948 §2.1); IPv6 callers fill it in after sealing.
    u[6] = 0;
    u[7] = 0;
}

/// UDP checksum over IPv6 (mandatory, RFC 8200 §8.1) of the datagram of `len` bytes at `udp`
/// behind the IPv6 header at `ip`, computed once the ESP bytes are final.
#[inline]
fn fill_udp6_checksum(frame: &mut [u8], ip: usize, udp: usize, len: usize) {
    let ip6 = Ipv6Packet::new_unchecked(&frame[ip..ip + 40]);
    let pseudo = checksum::pseudo_v6(
        ip6.src_addr(),
        ip6.dst_addr(),
        IpProtocol::UDP.0,
        len as u32,
    );
    UdpPacket::new_unchecked(&mut frame[udp..udp + len]).fill_checksum(pseudo);
}

#[inline(always)]
fn write_esp_header(frame: &mut [u8], esp: usize, spi: u32, seq: u64) {
    frame[esp..esp + 4].copy_from_slice(&spi.to_be_bytes());
    frame[esp + 4..esp + 8].copy_from_slice(&(seq as u32).to_be_bytes());
}

/// Padding bytes 1, 2, 3, … (RFC 4303 §2.4), written as one fixed-size store; the pad
/// length and next header then overwrite their two positions.
const PAD_PATTERN: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// Bytes needed behind the payload: padding, trailer and ICV, and at least the 16 bytes of the
/// padding store.
#[inline(always)]
fn trailer_room(pad: usize, icv: usize) -> usize {
    (pad + TRAILER_LEN + icv).max(PAD_PATTERN.len())
}

/// Write padding, pad length and next header at `pt_end` (room checked by the caller).
#[inline(always)]
fn write_trailer(frame: &mut [u8], pt_end: usize, pad: usize, nh: IpProtocol) {
    if let Some(tail) = frame[pt_end..].first_chunk_mut::<16>() {
        *tail = PAD_PATTERN;
    }
    frame[pt_end + pad] = pad as u8;
    frame[pt_end + pad + 1] = nh.0;
}

/// Inner length, next header, TOS/traffic class and DF, with a fast path for IPv4 without
/// options.
#[inline(always)]
pub(crate) fn inner_fast(data: &[u8]) -> Result<(usize, IpProtocol, u8, bool), DropReason> {
    if let Some(h) = data.first_chunk::<20>()
        && h[0] == 0x45
    {
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 20 || len > data.len() {
            return Err(DropReason::Malformed);
        }
        return Ok((len, IpProtocol::IPV4, h[1], h[6] & 0x40 != 0));
    }
    inner_info(data)
}

/// Seal now, or (with `defer`, if the transform can) only seed the IV and describe the rest
/// in `defer`, which is then kept for the UDP/IPv6 checksum; `None` once sealed.
#[inline(always)]
fn seal_or_defer<'a>(
    sa: &Sa,
    frame: &mut [u8],
    esp: usize,
    esp_len: usize,
    seq: u64,
    defer: Option<&'a mut Deferred>,
) -> Result<Option<&'a mut Deferred>, DropReason> {
    if let Some(d) = defer
        && sa.xform.defer_seal(frame, esp, esp_len, seq)
    {
        *d = Deferred {
            esp,
            len: esp_len,
            esn_hi: sa.esn.then_some((seq >> 32) as u32),
            udp6: None,
            ah: None,
        };
        return Ok(Some(d));
    }
    sa.xform.seal(frame, esp, esp_len, seq, sa.esn)?;
    Ok(None)
}

/// The UDP checksum of ESP in UDP over the IPv6 header at `ip`: now, or recorded in `d` for
/// after the deferred seal.
#[inline(always)]
fn udp6_checksum(frame: &mut [u8], d: Option<&mut Deferred>, ip: usize, udp: usize, len: usize) {
    match d {
        Some(d) => d.udp6 = Some((ip, udp, len)),
        None => fill_udp6_checksum(frame, ip, udp, len),
    }
}

/// Packets an IPv6 link must carry (RFC 8200 §5): no "packet too big" may ask for less.
const IPV6_MIN_MTU: usize = 1280;

/// The path-MTU check before encryption: `Some(room)` when `data` (the packet to protect)
/// would leave as an ESP packet longer than `sa`'s known path MTU and may not be fragmented
/// (IPv4 with DF, or IPv6 while `room` is at least 1280 bytes — below that the outer packet
/// is fragmented instead, as for IPv4 without DF). `room` is the largest packet that fits,
/// what the sender is told (RFC 4301 §8.2.1). Nothing is changed and no sequence number is
/// spent, so the SA's counters count only packets that leave.
pub(crate) fn path_mtu_room(sa: &Sa, data: &[u8]) -> Option<u16> {
    if sa.protocol == Protocol::Ah {
        return crate::ah::path_mtu_room(sa, data);
    }
    let mtu = usize::from(sa.path_mtu);
    if mtu == 0 {
        return None;
    }
    let (iv, icv, align) = (sa.xform.iv_len(), sa.xform.icv_len(), sa.xform.align());
    // (bytes ahead of the encrypted part, protected payload length, bytes of the packet
    // ahead of that payload, may not be fragmented, IPv6)
    let (fixed, payload, kept, df, v6) = match sa.mode {
        Mode::Tunnel => {
            let (inner_len, nh, _, df) = inner_fast(data).ok()?;
            let hdr = usize::from(sa.tmpl.len);
            (hdr + ESP_HDR + iv, inner_len, 0, df, nh == IpProtocol::IPV6)
        }
        Mode::Transport => {
            let udp = if sa.udp.is_some() { 8 } else { 0 };
            match data.first().map(|b| b >> 4) {
                Some(4) => {
                    let ip = Ipv4Packet::new_checked(data).ok()?;
                    let hl = ip.header_len();
                    let payload = usize::from(ip.total_len()).checked_sub(hl)?;
                    (hl + udp + ESP_HDR + iv, payload, hl, ip.dont_frag(), false)
                }
                Some(6) => {
                    let ip = Ipv6Packet::new_checked(data).ok()?;
                    let hl = ip.upper_layer().ok()?.esp_insert;
                    let payload = ip.total_len().checked_sub(hl)?;
                    (hl + udp + ESP_HDR + iv, payload, hl, true, true)
                }
                _ => return None,
            }
        }
    };
    let pad = EspTrailer::pad_len_for(payload, align);
    if fixed + payload + pad + TRAILER_LEN + icv <= mtu {
        return None;
    }
    // the largest payload whose padded payload and trailer end on the alignment
    let avail = mtu.checked_sub(fixed + icv)?;
    let payload_room = (avail - avail % align.max(1)).checked_sub(TRAILER_LEN)?;
    let room = kept + payload_room;
    if !df || (v6 && room < IPV6_MIN_MTU) {
        return None;
    }
    Some(u16::try_from(room).unwrap_or(u16::MAX))
}

/// Write the outer header of tunnel-mode `sa` into `out` (the template's bytes, UDP
/// included; the UDP length is the caller's) for an outer packet of `total` bytes: TOS or
/// traffic class, length, identification, DF and checksum.
#[inline(always)]
pub(crate) fn write_outer(
    sa: &mut Sa,
    out: &mut [u8],
    total: usize,
    inner_tos: u8,
    inner_df: bool,
) {
    let t = sa.tmpl;
    match usize::from(t.len) {
        20 => out.copy_from_slice(&t.bytes[..20]),
        28 => out.copy_from_slice(&t.bytes[..28]),
        40 => out.copy_from_slice(&t.bytes[..40]),
        _ => out.copy_from_slice(&t.bytes[..48]),
    }
    let tos = (inner_tos & t.tos_keep) | t.tos_set;
    if t.v6 {
        out[0] = 0x60 | (tos >> 4);
        out[1] = tos << 4;
        out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        // DF per RFC 4301 §8.1; the checksum from the template's constant sum (RFC 1624)
        let flags: u16 = if (inner_df && t.df_copy) || t.df_force {
            0x4000
        } else {
            0
        };
        sa.ip_id = sa.ip_id.wrapping_add(1);
        out[1] = tos;
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&sa.ip_id.to_be_bytes());
        out[6..8].copy_from_slice(&flags.to_be_bytes());
        let sum = t.sum + u32::from(tos) + total as u32 + u32::from(sa.ip_id) + u32::from(flags);
        out[10..12].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    }
}

fn tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    events: &mut EventQueue,
    defer: Option<&mut Deferred>,
) -> Result<(usize, bool), DropReason> {
    let (inner_len, nh, inner_tos, inner_df) = inner_fast(pkt.data())?;
    let (iv, icv, align) = (sa.xform.iv_len(), sa.xform.icv_len(), sa.xform.align());
    let t = sa.tmpl;
    let hdr = usize::from(t.len);
    if hdr == 0 {
        return Err(DropReason::NoSa);
    }
    let pad = EspTrailer::pad_len_for(inner_len, align);
    let esp_len = ESP_HDR + iv + inner_len + pad + TRAILER_LEN + icv;
    let front = hdr + ESP_HDR + iv;
    let total = hdr + esp_len;
    if total - if t.v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    let head = pkt.head();
    let pt_end = head + inner_len;
    // behind the packet: trailer and ICV, and at least 16 bytes for the padding store
    if head < front || pt_end + trailer_room(pad, icv) > pkt.frame().len() {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);

    let start = head - front;
    let esp = start + hdr;
    let frame = pkt.frame_mut();
    write_trailer(frame, pt_end, pad, nh);
    let out = &mut frame[start..esp];
    write_outer(sa, out, total, inner_tos, inner_df);
    if hdr == 28 || hdr == 48 {
        let u = hdr - 8;
        out[u + 4..u + 6].copy_from_slice(&((8 + esp_len) as u16).to_be_bytes());
    }
    write_esp_header(frame, esp, sa.spi, seq);
    let mut d = seal_or_defer(sa, frame, esp, esp_len, seq, defer)?;
    let deferred = d.is_some();
    if hdr == 48 {
        udp6_checksum(frame, d.take(), start, start + 40, 8 + esp_len);
    }
    pkt.set_window(start, total);
    Ok((inner_len, deferred))
}

/// Where transport mode puts its header in `data` (an IP packet): the bytes of IP header
/// kept in front of it (IPv6: after hop-by-hop, routing and fragment headers and destination
/// options before a routing header, RFC 4303 §3.1.1, RFC 4302 §3.1.1), the offset of the
/// next-header byte to rewrite, the packet's length, and whether it is IPv6. Fragments are
/// refused: transport mode applies to whole datagrams only.
#[inline]
pub(crate) fn transport_split(data: &[u8]) -> Result<(usize, usize, usize, bool), DropReason> {
    match data.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            if ip.is_fragment() {
                return Err(DropReason::Fragment);
            }
            Ok((ip.header_len(), 9, usize::from(ip.total_len()), false))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            let ul = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
            if ul.fragment {
                return Err(DropReason::Fragment);
            }
            Ok((ul.esp_insert, ul.esp_insert_nh_field, ip.total_len(), true))
        }
        _ => Err(DropReason::Malformed),
    }
}

fn transport<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    events: &mut EventQueue,
    defer: Option<&mut Deferred>,
) -> Result<(usize, bool), DropReason> {
    let data = pkt.data();
    let (hl, nh_field, total_len, v6) = transport_split(data)?;
    let nh = IpProtocol(data[nh_field]);
    let payload = total_len - hl;
    let (iv, icv, align) = (sa.xform.iv_len(), sa.xform.icv_len(), sa.xform.align());
    let pad = EspTrailer::pad_len_for(payload, align);
    let esp_len = ESP_HDR + iv + payload + pad + TRAILER_LEN + icv;
    let udp = if sa.udp.is_some() { 8 } else { 0 };
    let shift = udp + ESP_HDR + iv;
    let total = hl + udp + esp_len;
    if total - if v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    let head = pkt.head();
    let tail_avail = pkt.tailroom() + (pkt.len() - total_len);
    if head < shift || tail_avail < trailer_room(pad, icv) {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);

    let start = head - shift;
    let frame = pkt.frame_mut();
    frame.copy_within(head..head + hl, start);
    let pt_end = head + total_len;
    write_trailer(frame, pt_end, pad, nh);
    let proto = if udp != 0 {
        IpProtocol::UDP
    } else {
        IpProtocol::ESP
    };
    frame[start + nh_field] = proto.0;
    if v6 {
        frame[start + 4..start + 6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[start..start + hl]);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    }
    let esp = start + hl + udp;
    if let Some((lp, rp)) = sa.udp {
        write_udp(&mut frame[start + hl..start + hl + 8], lp, rp, 8 + esp_len);
    }
    write_esp_header(frame, esp, sa.spi, seq);
    let mut d = seal_or_defer(sa, frame, esp, esp_len, seq, defer)?;
    let deferred = d.is_some();
    if udp != 0 && v6 {
        udp6_checksum(frame, d.take(), start, start + hl, 8 + esp_len);
    }
    pkt.set_window(start, total);
    Ok((payload, deferred))
}
