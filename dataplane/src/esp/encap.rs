//! Outbound: protect one packet with one SA, in place (RFC 4303 §3.1, §3.3).
//!
//! Tunnel mode prepends outer IP (+ UDP) + ESP header + IV in the headroom and appends
//! padding, trailer and ICV in the tailroom; the inner packet does not move. Transport mode
//! moves only the IP header (and IPv6 extension headers that stay in front of ESP) back into
//! the headroom and inserts ESP behind it.

use super::report;
use crate::events::EventQueue;
use crate::packet::PacketBuf;
use crate::sa::Outer;
use crate::sa::{DfMode, DscpMode, EcnMode, Mode, Sa, SaHandle};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::checksum;
use crate::wire::esp::{EspTrailer, HEADER_LEN as ESP_HDR, TRAILER_LEN};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};

/// Encapsulate `pkt` (an IP packet) with `sa`. On error the packet is left as it was.
#[inline]
pub(crate) fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    now: Timestamp,
    events: &mut EventQueue,
) -> Result<usize, DropReason> {
    let (usable, ev) = sa.life.usable(now);
    report(events, sa, h, ev);
    let r = if !usable {
        Err(sa.expired_reason())
    } else {
        match sa.mode {
            Mode::Tunnel => tunnel(sa, h, pkt, events),
            Mode::Transport => transport(sa, h, pkt, events),
        }
    };
    match r {
        Ok(bytes) => {
            let ev = sa.life.account(now, bytes as u64);
            report(events, sa, h, ev);
            Ok(bytes)
        }
        Err(e) => {
            sa.drops.bump(e);
            Err(e)
        }
    }
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
#[allow(clippy::too_many_arguments)] // one argument per header field, inlined
fn write_ipv4(
    h: &mut [u8],
    tos: u8,
    total: usize,
    id: u16,
    df: bool,
    ttl: u8,
    proto: IpProtocol,
    src: [u8; 4],
    dst: [u8; 4],
) {
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    h[8] = ttl;
    h[9] = proto.0;
    h[10] = 0;
    h[11] = 0;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = match <&[u8; 20]>::try_from(&h[..20]) {
        Ok(h20) => checksum::finish(checksum::sum20(h20)),
        Err(_) => 0,
    };
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

#[inline(always)]
fn write_ipv6(
    h: &mut [u8],
    tc: u8,
    payload: usize,
    nh: IpProtocol,
    hops: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
) {
    h[0] = 0x60 | (tc >> 4);
    h[1] = tc << 4;
    h[2] = 0;
    h[3] = 0;
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = nh.0;
    h[7] = hops;
    h[8..24].copy_from_slice(src);
    h[24..40].copy_from_slice(dst);
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

/// UDP checksum over IPv6 (mandatory, RFC 8200 §8.1), computed once the ESP bytes are final.
#[inline]
fn fill_udp6_checksum(frame: &mut [u8], udp: usize, len: usize, src: &[u8; 16], dst: &[u8; 16]) {
    let pseudo = checksum::pseudo_v6(*src, *dst, IpProtocol::UDP.0, len as u32);
    let c = checksum::finish(checksum::add(pseudo, checksum::sum(&frame[udp..udp + len])));
    let c = if c == 0 { 0xffff } else { c };
    frame[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
}

#[inline(always)]
fn write_esp_header(frame: &mut [u8], esp: usize, spi: u32, seq: u64) {
    frame[esp..esp + 4].copy_from_slice(&spi.to_be_bytes());
    frame[esp + 4..esp + 8].copy_from_slice(&(seq as u32).to_be_bytes());
}

fn tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    events: &mut EventQueue,
) -> Result<usize, DropReason> {
    let (inner_len, nh, inner_tos, inner_df) = inner_info(pkt.data())?;
    let (iv, icv, align) = (sa.xform.iv_len(), sa.xform.icv_len(), sa.xform.align());
    let pad = EspTrailer::pad_len_for(inner_len, align);
    let esp_len = ESP_HDR + iv + inner_len + pad + TRAILER_LEN + icv;
    let (ip_hdr, v6) = match sa.outer {
        Outer::V4 { .. } => (20, false),
        Outer::V6 { .. } => (40, true),
        Outer::None => return Err(DropReason::NoSa),
    };
    let udp = if sa.udp.is_some() { 8 } else { 0 };
    let front = ip_hdr + udp + ESP_HDR + iv;
    let total = ip_hdr + udp + esp_len;
    if total - if v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    let head = pkt.head();
    // bytes after the inner packet (e.g. link padding) are reused as tailroom
    let tail_avail = pkt.tailroom() + (pkt.len() - inner_len);
    if head < front || tail_avail < pad + TRAILER_LEN + icv {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);

    let dscp = match sa.dscp {
        DscpMode::Copy => inner_tos >> 2,
        DscpMode::Set(d) => d,
    };
    // RFC 6040 §4.1: normal mode copies the inner ECN field; compatibility mode sends Not-ECT.
    let ecn = match sa.ecn {
        EcnMode::Normal => inner_tos & 3,
        EcnMode::Compatibility => 0,
    };
    let df = match sa.df {
        DfMode::Copy => inner_df,
        DfMode::Set => true,
        DfMode::Clear => false,
    };
    let start = head - front;
    let esp = start + ip_hdr + udp;
    let pt_end = head + inner_len;
    let frame = pkt.frame_mut();
    EspTrailer::emit(&mut frame[pt_end..pt_end + pad + TRAILER_LEN], nh);
    let proto = if udp != 0 {
        IpProtocol::UDP
    } else {
        IpProtocol::ESP
    };
    match &sa.outer {
        Outer::V4 { local, remote } => {
            sa.ip_id = sa.ip_id.wrapping_add(1);
            write_ipv4(
                &mut frame[start..start + 20],
                dscp << 2 | ecn,
                total,
                sa.ip_id,
                df,
                sa.ttl,
                proto,
                *local,
                *remote,
            );
        }
        Outer::V6 { local, remote } => {
            write_ipv6(
                &mut frame[start..start + 40],
                dscp << 2 | ecn,
                total - 40,
                proto,
                sa.ttl,
                local,
                remote,
            );
        }
        Outer::None => return Err(DropReason::NoSa),
    }
    if let Some((lp, rp)) = sa.udp {
        write_udp(
            &mut frame[start + ip_hdr..start + ip_hdr + 8],
            lp,
            rp,
            8 + esp_len,
        );
    }
    write_esp_header(frame, esp, sa.spi, seq);
    sa.xform.seal(frame, esp, esp_len, seq, sa.esn)?;
    if let (Some(_), Outer::V6 { local, remote }) = (sa.udp, &sa.outer) {
        fill_udp6_checksum(frame, start + 40, 8 + esp_len, local, remote);
    }
    pkt.set_window(start, total);
    Ok(inner_len)
}

fn transport<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    events: &mut EventQueue,
) -> Result<usize, DropReason> {
    let data = pkt.data();
    // (header bytes kept in front of ESP, offset of the next-header byte to rewrite,
    //  total length, IPv6?)
    let (hl, nh_field, total_len, v6) = match data.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            // RFC 4303 §3.1.1: transport mode applies to whole datagrams only.
            if ip.is_fragment() {
                return Err(DropReason::Fragment);
            }
            (ip.header_len(), 9, usize::from(ip.total_len()), false)
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(data).map_err(|_| DropReason::Malformed)?;
            let ul = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
            if ul.fragment {
                return Err(DropReason::Fragment);
            }
            (ul.esp_insert, ul.esp_insert_nh_field, ip.total_len(), true)
        }
        _ => return Err(DropReason::Malformed),
    };
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
    if head < shift || tail_avail < pad + TRAILER_LEN + icv {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);

    let start = head - shift;
    let frame = pkt.frame_mut();
    frame.copy_within(head..head + hl, start);
    let pt_end = head + total_len;
    EspTrailer::emit(&mut frame[pt_end..pt_end + pad + TRAILER_LEN], nh);
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
    sa.xform.seal(frame, esp, esp_len, seq, sa.esn)?;
    if udp != 0 && v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&frame[start + 8..start + 24]);
        dst.copy_from_slice(&frame[start + 24..start + 40]);
        fill_udp6_checksum(frame, start + hl, 8 + esp_len, &src, &dst);
    }
    pkt.set_window(start, total);
    Ok(payload)
}
