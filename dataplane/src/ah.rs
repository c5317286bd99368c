//! AH processing of one packet (RFC 4302): outbound and inbound, tunnel and transport mode,
//! IPv4 and IPv6, with HMAC-SHA1-96, HMAC-SHA-256/384/512 (RFC 4868), AES-CMAC-96 (RFC 4494)
//! and AES-GMAC (RFC 4543 §4).
//!
//! AH authenticates the whole IP packet, its header included, except the fields routers may
//! change on the way (RFC 4302 §3.3.3.1): the ICV is computed over the packet with those
//! fields and the ICV itself zeroed. The engine does that in place: it saves the bytes in
//! front of and including the AH header, zeroes the mutable fields, hashes the packet and
//! writes the saved bytes back; nothing is copied but those few header bytes.
//!
//! What counts as mutable:
//! - IPv4: TOS (DSCP and ECN), flags and fragment offset, TTL, header checksum, and every
//!   option but End of List, No Operation, the security options (130, 133, 134), Router
//!   Alert (148) and SDMDD (149) (RFC 4302 Appendix A.1), whose bytes are zeroed whole.
//! - IPv6: traffic class, flow label, hop limit; the data of hop-by-hop and destination
//!   options whose type has the "may change en route" bit (0x20, RFC 8200 §4.2); a routing
//!   header is hashed as the destination will see it — the sender puts the final
//!   destination in the destination field and sets Segments Left to 0 (types 0 and 2; a
//!   routing header of another type with segments left is dropped as malformed).
//!
//! With ESN the ICV covers the high 32 bits of the sequence number after the packet
//! (RFC 4302 §2.5.1, Appendix B), as for ESP.
//!
//! AES-GMAC (RFC 4543 §4): the Authentication Data is an 8-byte IV and the 16-byte tag
//! (IPv6: then 4 bytes of padding, erratum 3643). The tag is AES-GCM's over an empty
//! plaintext with the packet as AAD — the IV as sent, only the tag zeroed (§7: "the IV is
//! included in the additional authenticated data") — under the nonce salt ‖ IV. The IV is
//! the sequence number XOR a random per-SA mask.

use crate::crypto::ICV_GROUP;
use crate::esp::{
    Deferred, InboundEsp, decap_transport, decap_tunnel, inner_fast, report, settle,
    transport_split, usable, write_outer,
};
use crate::events::EventQueue;
use crate::packet::PacketBuf;
use crate::replay::ReplayError;
use crate::sa::{Mode, Sa, SaHandle};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::ah::{self, AhHeader, FIXED_LEN};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};

/// The most bytes of IP header (IPv6 extension headers included) in front of an AH header
/// that the ICV computation saves and restores.
const MAX_FRONT: usize = 448;
/// The saved bytes: the headers in front of AH and the AH header with the longest ICV.
const SAVE_LEN: usize = MAX_FRONT + 48;

/// IPv4 option numbers (the low 5 bits of the type) that are immutable (RFC 4302
/// Appendix A.1): EOL, NOP, Security, Extended Security, Commercial Security, Router
/// Alert, SDMDD. Every other option is zeroed for the ICV.
const IMMUTABLE_V4_OPTIONS: [u8; 7] = [0, 1, 2, 5, 6, 20, 21];

/// The bytes the ICV computation changes, to put back afterwards.
struct Saved {
    at: usize,
    len: usize,
    bytes: [u8; SAVE_LEN],
}

impl Saved {
    fn restore(&self, frame: &mut [u8]) {
        frame[self.at..self.at + self.len].copy_from_slice(&self.bytes[..self.len]);
    }
}

/// Zero the mutable fields of the IP header at `ip` (and of the extension headers in front
/// of AH at `ah`) and the Authentication Data of `icv_len` bytes but its first `iv_len` (an
/// IV, covered as sent), after saving everything from `ip` to the end of the Authentication
/// Data. `sending`: predict a routing header's final state (RFC 4302 §3.3.3.1.2.2).
fn icv_view(
    frame: &mut [u8],
    ip: usize,
    v6: bool,
    ah: usize,
    (iv_len, icv_len): (usize, usize),
    sending: bool,
) -> Result<Saved, DropReason> {
    let end = ah + FIXED_LEN + icv_len;
    if ah < ip || ah - ip > MAX_FRONT || end > frame.len() {
        return Err(DropReason::Malformed);
    }
    let mut saved = Saved {
        at: ip,
        len: end - ip,
        bytes: [0; SAVE_LEN],
    };
    saved.bytes[..saved.len].copy_from_slice(&frame[ip..end]);
    let r = if v6 {
        zero_v6(&mut frame[ip..ah], sending)
    } else {
        zero_v4(&mut frame[ip..ah])
    };
    if let Err(e) = r {
        saved.restore(frame);
        return Err(e);
    }
    frame[ah + FIXED_LEN + iv_len.min(icv_len)..end].fill(0);
    Ok(saved)
}

/// Run `f` over the ICV's input, the packet `frame[ip..ip + total]` followed by the ESN high
/// bits: passed apart to an HMAC, which appends them; for AES-GMAC, whose AAD is one slice,
/// written over the 4 bytes after the packet for the call and put back.
fn over_packet<R>(
    xf: &crate::crypto::Transform,
    frame: &mut [u8],
    (ip, total): (usize, usize),
    esn_hi: Option<u32>,
    f: impl FnOnce(&[u8], Option<u32>) -> R,
) -> Result<R, DropReason> {
    let end = ip + total;
    let Some(hi) = esn_hi.filter(|_| xf.ah_esn_in_data()) else {
        return Ok(f(&frame[ip..end], esn_hi));
    };
    let tail = frame
        .get_mut(end..end + 4)
        .ok_or(DropReason::NoBufferSpace)?;
    let mut saved = [0u8; 4];
    saved.copy_from_slice(tail);
    tail.copy_from_slice(&hi.to_be_bytes());
    let r = f(&frame[ip..end + 4], None);
    frame[end..end + 4].copy_from_slice(&saved);
    Ok(r)
}

/// The IV at the start of the Authentication Data of the AH header at `ah` (empty for an
/// HMAC), copied out.
fn iv_of(frame: &[u8], ah: usize, iv_len: usize) -> Result<([u8; 8], usize), DropReason> {
    let mut iv = [0u8; 8];
    let src = frame
        .get(ah + FIXED_LEN..ah + FIXED_LEN + iv_len)
        .ok_or(DropReason::Malformed)?;
    iv[..iv_len].copy_from_slice(src);
    Ok((iv, iv_len))
}

/// IPv4 (RFC 4302 §3.3.3.1.1): `h` is the header, options included.
fn zero_v4(h: &mut [u8]) -> Result<(), DropReason> {
    if h.len() < 20 {
        return Err(DropReason::Malformed);
    }
    h[1] = 0; // TOS
    h[6] = 0; // flags, fragment offset
    h[7] = 0;
    h[8] = 0; // TTL
    h[10] = 0; // checksum
    h[11] = 0;
    let mut i = 20;
    while i < h.len() {
        match h[i] {
            0 => break, // end of list: what follows is padding
            1 => i += 1,
            t => {
                let len = usize::from(*h.get(i + 1).ok_or(DropReason::Malformed)?);
                if len < 2 || i + len > h.len() {
                    return Err(DropReason::Malformed);
                }
                if !IMMUTABLE_V4_OPTIONS.contains(&(t & 0x1f)) {
                    h[i..i + len].fill(0);
                }
                i += len;
            }
        }
    }
    Ok(())
}

/// IPv6 (RFC 4302 §3.3.3.1.2): `h` is the fixed header and the extension headers in front
/// of AH.
fn zero_v6(h: &mut [u8], sending: bool) -> Result<(), DropReason> {
    if h.len() < 40 {
        return Err(DropReason::Malformed);
    }
    // traffic class and flow label; the version stays
    h[0] &= 0xf0;
    h[1] = 0;
    h[2] = 0;
    h[3] = 0;
    h[7] = 0; // hop limit
    let mut nh = h[6];
    let mut off = 40;
    while off < h.len() {
        let len = match nh {
            0 | 43 | 60 | 139 | 140 => {
                (usize::from(*h.get(off + 1).ok_or(DropReason::Malformed)?) + 1) * 8
            }
            // AH is never applied to a fragment (RFC 4302 §3.4.1)
            44 => return Err(DropReason::Fragment),
            _ => return Err(DropReason::Malformed),
        };
        if off + len > h.len() {
            return Err(DropReason::Malformed);
        }
        match nh {
            0 | 60 => zero_v6_options(&mut h[off + 2..off + len])?,
            43 => routing_as_received(h, off, len, sending)?,
            _ => {}
        }
        nh = h[off];
        off += len;
    }
    Ok(())
}

/// Zero the data of every option that may change en route (type bit 0x20).
fn zero_v6_options(opts: &mut [u8]) -> Result<(), DropReason> {
    let mut i = 0;
    while i < opts.len() {
        let t = opts[i];
        if t == 0 {
            i += 1; // Pad1
            continue;
        }
        let len = usize::from(*opts.get(i + 1).ok_or(DropReason::Malformed)?);
        if i + 2 + len > opts.len() {
            return Err(DropReason::Malformed);
        }
        if t & 0x20 != 0 {
            opts[i + 2..i + 2 + len].fill(0);
        }
        i += 2 + len;
    }
    Ok(())
}

/// The routing header at `off` (`len` bytes) of the packet `h` as its final destination
/// receives it. A receiver must be that destination (Segments Left 0). A sender with
/// segments left moves the last address into the destination field, the destination to
/// the front of the list, and sets Segments Left to 0 (types 0 and 2, whose addresses
/// follow an 8-byte header).
fn routing_as_received(
    h: &mut [u8],
    off: usize,
    len: usize,
    sending: bool,
) -> Result<(), DropReason> {
    let (kind, left) = (h[off + 2], h[off + 3]);
    if left == 0 {
        return Ok(());
    }
    if !sending || !matches!(kind, 0 | 2) || len < 24 {
        return Err(DropReason::Malformed);
    }
    let n = (len - 8) / 16;
    let first = off + 8;
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    let mut last = [0u8; 16];
    last.copy_from_slice(&h[first + (n - 1) * 16..first + n * 16]);
    h.copy_within(first..first + (n - 1) * 16, first + 16);
    h[first..first + 16].copy_from_slice(&dst);
    h[24..40].copy_from_slice(&last);
    h[off + 3] = 0;
    Ok(())
}

/// Compute the ICV of the packet `frame[ip..ip + total]` whose AH header (its IV, if any, in
/// place) is at `ah` into `icv` (the tag: the Authentication Data after the IV), restoring
/// every byte the computation zeroed.
#[allow(clippy::too_many_arguments)] // the packet's geometry and the SA's ICV parameters
fn compute(
    sa: &Sa,
    frame: &mut [u8],
    ip: usize,
    total: usize,
    v6: bool,
    ah: usize,
    esn_hi: Option<u32>,
    icv: &mut [u8],
    sending: bool,
) -> Result<(), DropReason> {
    let (iv, iv_len) = iv_of(frame, ah, sa.xform.ah_iv_len())?;
    let saved = icv_view(frame, ip, v6, ah, (iv_len, iv_len + icv.len()), sending)?;
    let ok = over_packet(&sa.xform, frame, (ip, total), esn_hi, |d, hi| {
        sa.xform.ah_sign(d, hi, &iv[..iv_len], icv)
    });
    saved.restore(frame);
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(DropReason::NoSa),
        Err(e) => Err(e),
    }
}

/// Protect `pkt` with AH SA `sa`. On error the packet is left as it was. Bytes of the
/// protected packet come back.
#[inline]
///
/// With `defer`, and an HMAC kernel that hashes several packets together, the packet is only
/// laid out (its ICV field zero) and `defer` says where: [`seal_group`] finishes it with the
/// other packets of its SA in the burst (then the answer's `bool` is true).
pub(crate) fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    now: Timestamp,
    events: &mut EventQueue,
    defer: Option<&mut Deferred>,
) -> Result<(usize, bool), DropReason> {
    let defer = defer.filter(|_| sa.xform.pairs());
    let r = usable(sa, h, now, events).and_then(|()| match sa.mode {
        Mode::Tunnel => tunnel(sa, h, pkt, events, defer),
        Mode::Transport => transport(sa, h, pkt, events, defer),
    });
    settle(sa, h, now, events, r)
}

fn tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    events: &mut EventQueue,
    defer: Option<&mut Deferred>,
) -> Result<(usize, bool), DropReason> {
    let (inner_len, nh, inner_tos, inner_df) = inner_fast(pkt.data())?;
    let t = sa.tmpl;
    let hdr = usize::from(t.len);
    if hdr != 20 && hdr != 40 {
        return Err(DropReason::NoSa);
    }
    let icv_len = sa.xform.icv_len();
    let ah_len = ah::header_len_for(icv_len, t.v6);
    let front = hdr + ah_len;
    let total = front + inner_len;
    if total - if t.v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    let head = pkt.head();
    if head < front {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);
    let start = head - front;
    let at = start + hdr;
    let frame = pkt.frame_mut();
    write_outer(sa, &mut frame[start..at], total, inner_tos, inner_df);
    let deferred = sign(sa, frame, (start, total, t.v6), at, ah_len, nh, seq, defer)?;
    pkt.set_window(start, total);
    Ok((inner_len, deferred))
}

/// Write the AH header (`ah_len` bytes at `at`) of the IP packet `frame[start..start +
/// total]` (`ip` = (start, total, IPv6)) and its ICV; or, with `defer`, leave the ICV to
/// [`seal_group`] and say so (`true`).
#[allow(clippy::too_many_arguments)] // the packet's geometry and the header's fields
fn sign(
    sa: &Sa,
    frame: &mut [u8],
    ip: (usize, usize, bool),
    at: usize,
    ah_len: usize,
    nh: IpProtocol,
    seq: u64,
    defer: Option<&mut Deferred>,
) -> Result<bool, DropReason> {
    let (start, total, v6) = ip;
    AhHeader::new_unchecked(&mut frame[at..at + ah_len]).emit(nh, ah_len, sa.spi, seq as u32);
    let esn_hi = sa.esn.then_some((seq >> 32) as u32);
    let iv_len = sa.xform.ah_iv_len();
    if iv_len > 0 {
        frame[at + FIXED_LEN..at + FIXED_LEN + iv_len].copy_from_slice(&sa.xform.ah_iv(seq));
    }
    if let Some(d) = defer {
        *d = deferred(at, total, esn_hi, start, v6);
        return Ok(true);
    }
    let tag = at + FIXED_LEN + iv_len..at + FIXED_LEN + sa.xform.icv_len();
    let mut icv = [0u8; 32];
    let icv = &mut icv[..tag.len()];
    compute(sa, frame, start, total, v6, at, esn_hi, icv, true)?;
    frame[tag].copy_from_slice(icv);
    Ok(false)
}

fn deferred(at: usize, total: usize, esn_hi: Option<u32>, start: usize, v6: bool) -> Deferred {
    Deferred {
        esp: at,
        len: total,
        esn_hi,
        udp6: None,
        ah: Some((start, v6)),
    }
}

/// Finish up to [`ICV_GROUP`] packets of `sa` laid out by [`encap`] with a deferral
/// (`frames[k]` holds `ds[k]`): their ICVs computed together. Bit `k` of the answer is set
/// for each packet finished; the others (a header that cannot be hashed) are to be dropped.
pub(crate) fn seal_group(sa: &Sa, frames: &mut [&mut [u8]], ds: &[Deferred]) -> u32 {
    let n = frames.len().min(ds.len()).min(ICV_GROUP);
    let icv_len = sa.xform.icv_len();
    if sa.xform.ah_iv_len() != 0 {
        return 0; // an HMAC's grouping only (`encap` defers only for those)
    }
    let mut saved: [Option<Saved>; ICV_GROUP] = core::array::from_fn(|_| None);
    for k in 0..n {
        if let Some((ip, v6)) = ds[k].ah {
            saved[k] = icv_view(frames[k], ip, v6, ds[k].esp, (0, icv_len), true).ok();
        }
    }
    let mut out = [[0u8; 32]; ICV_GROUP];
    let signed = {
        let mut data: [&[u8]; ICV_GROUP] = [&[]; ICV_GROUP];
        let mut esn = [None; ICV_GROUP];
        for k in 0..n {
            if let (Some(_), Some((ip, _))) = (&saved[k], ds[k].ah) {
                data[k] = frames[k].get(ip..ip + ds[k].len).unwrap_or_default();
                esn[k] = ds[k].esn_hi;
            }
        }
        let mut icv: [&mut [u8]; ICV_GROUP] = Default::default();
        for (slot, o) in icv.iter_mut().zip(out.iter_mut()) {
            *slot = &mut o[..icv_len];
        }
        sa.xform.ah_sign_group(&data[..n], &esn[..n], &mut icv[..n])
    };
    let mut ok = 0;
    for k in 0..n {
        if let Some(s) = saved[k].take() {
            s.restore(frames[k]);
            if signed {
                let at = ds[k].esp + FIXED_LEN;
                frames[k][at..at + icv_len].copy_from_slice(&out[k][..icv_len]);
                ok |= 1 << k;
            }
        }
    }
    ok
}

/// Check up to [`ICV_GROUP`] received AH packets together: packet `k` is the IP packet
/// `frames[k][ip..ip + len]` with AH at `ah`, of transform `xf[k]`, ESN high bits `hi`
/// (as `at[k] = (ip, len, ah, v6, hi)`). `ok[k]` is the verdict of packet `k`, `None` for one
/// not checked here (a header the ICV cannot be computed over: `decap` says why).
pub(crate) fn verify_group(
    xf: &[&crate::crypto::Transform],
    frames: &mut [&mut [u8]],
    at: &[(usize, usize, usize, bool, Option<u32>)],
    verdicts: &mut [Option<bool>],
) {
    let n = xf
        .len()
        .min(frames.len())
        .min(at.len())
        .min(verdicts.len())
        .min(ICV_GROUP);
    let mut ok = [false; ICV_GROUP];
    let checked = verify_views(&xf[..n], &mut frames[..n], &at[..n], &mut ok[..n]);
    for k in 0..n {
        verdicts[k] = (checked & (1 << k) != 0).then_some(ok[k]);
    }
}

/// [`verify_group`]'s work: bit `k` of the answer is set for each packet checked.
fn verify_views(
    xf: &[&crate::crypto::Transform],
    frames: &mut [&mut [u8]],
    at: &[(usize, usize, usize, bool, Option<u32>)],
    ok: &mut [bool],
) -> u32 {
    let n = xf
        .len()
        .min(frames.len())
        .min(at.len())
        .min(ok.len())
        .min(ICV_GROUP);
    let mut saved: [Option<Saved>; ICV_GROUP] = core::array::from_fn(|_| None);
    let mut got = [[0u8; 32]; ICV_GROUP];
    for k in 0..n {
        let (ip, _, ah, v6, _) = at[k];
        let icv_len = xf[k].icv_len();
        if xf[k].ah_iv_len() != 0 {
            return 0; // an HMAC's grouping only (the prepass groups only those)
        }
        let Some(icv) = frames[k].get(ah + FIXED_LEN..ah + FIXED_LEN + icv_len) else {
            continue;
        };
        got[k][..icv_len].copy_from_slice(icv);
        saved[k] = icv_view(frames[k], ip, v6, ah, (0, icv_len), false).ok();
    }
    let checked = {
        let mut data: [&[u8]; ICV_GROUP] = [&[]; ICV_GROUP];
        let mut esn = [None; ICV_GROUP];
        let mut icv: [&[u8]; ICV_GROUP] = [&[]; ICV_GROUP];
        for k in 0..n {
            let (ip, len, _, _, hi) = at[k];
            data[k] = frames[k].get(ip..ip + len).unwrap_or_default();
            esn[k] = hi;
            icv[k] = &got[k][..xf[k].icv_len()];
        }
        crate::crypto::Transform::ah_verify_group(&xf[..n], &data[..n], &esn[..n], &icv[..n], ok)
    };
    let mut done = 0;
    for k in 0..n {
        if let Some(s) = saved[k].take() {
            s.restore(frames[k]);
            if checked {
                done |= 1 << k;
            }
        }
    }
    done
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
    let icv_len = sa.xform.icv_len();
    let ah_len = ah::header_len_for(icv_len, v6);
    let total = total_len + ah_len;
    if total - if v6 { 40 } else { 0 } > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    let head = pkt.head();
    if head < ah_len {
        return Err(DropReason::NoBufferSpace);
    }
    let (seq, ev) = sa.next_seq()?;
    report(events, sa, h, ev);
    let start = head - ah_len;
    let frame = pkt.frame_mut();
    frame.copy_within(head..head + hl, start);
    frame[start + nh_field] = IpProtocol::AH.0;
    fix_length(&mut frame[start..start + hl], v6, total);
    let at = start + hl;
    match sign(sa, frame, (start, total, v6), at, ah_len, nh, seq, defer) {
        Ok(deferred) => {
            pkt.set_window(start, total);
            Ok((total_len - hl, deferred))
        }
        Err(e) => {
            // put the packet back as it was
            frame[start + nh_field] = nh.0;
            fix_length(&mut frame[start..start + hl], v6, total_len);
            frame.copy_within(start..start + hl, head);
            Err(e)
        }
    }
}

/// Set the length of the IP packet whose header is `hdr` (IPv4: all of it, for the
/// checksum) to `total` bytes.
fn fix_length(hdr: &mut [u8], v6: bool, total: usize) {
    if v6 {
        hdr[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        let mut ip = Ipv4Packet::new_unchecked(hdr);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    }
}

/// Verify and remove AH (RFC 4302 §3.4). Order of checks: encapsulation, lifetime, lengths,
/// replay check, ICV, replay commit, then the packet as for ESP (inner header, selectors,
/// ECN in tunnel mode). On success the window holds the inner packet (tunnel) or the packet
/// without AH (transport), and its payload's byte count is returned.
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

fn run<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    now: Timestamp,
    events: &mut EventQueue,
    checked: Option<(Option<u32>, bool)>,
) -> Result<(usize, bool), DropReason> {
    if o.udp.is_some() || sa.udp.is_some() {
        return Err(DropReason::EncapMismatch);
    }
    usable(sa, h, now, events)?;
    let icv_len = sa.xform.icv_len();
    let base = pkt.head();
    let at = base + o.esp_off;
    let total = o.esp_off + o.esp_len;
    let frame = pkt.frame_mut();
    let hdr = AhHeader::new_checked(&frame[at..base + total]).map_err(|_| DropReason::BadLength)?;
    let ah_len = hdr.header_len();
    // the ICV field holds this SA's ICV and at most the padding to the alignment
    if ah_len < FIXED_LEN + icv_len || ah_len != ah::header_len_for(icv_len, o.v6) {
        return Err(DropReason::BadLength);
    }
    let nh = hdr.next_header();
    let seq = sa.replay.infer(hdr.seq()).ok_or(DropReason::ReplayOld)?;
    sa.replay.check(seq).map_err(replay_reason)?;
    let esn_hi = sa.esn.then_some((seq >> 32) as u32);
    let ok = match checked {
        // checked with the burst's other packets, under these ESN high bits
        Some((hi, ok)) if hi == esn_hi => ok,
        _ => {
            let (iv, iv_len) = iv_of(frame, at, sa.xform.ah_iv_len())?;
            let mut got = [0u8; 32];
            let tag = &mut got[..icv_len - iv_len];
            tag.copy_from_slice(&frame[at + FIXED_LEN + iv_len..at + FIXED_LEN + icv_len]);
            let saved = icv_view(frame, base, o.v6, at, (iv_len, icv_len), false)?;
            let ok = over_packet(&sa.xform, frame, (base, total), esn_hi, |d, hi| {
                sa.xform.ah_verify(d, hi, &iv[..iv_len], tag)
            });
            saved.restore(frame);
            ok?
        }
    };
    if !ok {
        return Err(DropReason::IcvFailed);
    }
    // Authenticated: now the window may move (RFC 4302 §3.4.3).
    sa.replay.commit(seq).map_err(replay_reason)?;
    let pt = at + ah_len;
    let data_len = base + total - pt;
    match sa.mode {
        Mode::Tunnel => decap_tunnel(sa, pkt, o, pt, data_len, nh),
        Mode::Transport => decap_transport(sa, pkt, o, pt, data_len, nh),
    }
}

fn replay_reason(e: ReplayError) -> DropReason {
    match e {
        ReplayError::Old => DropReason::ReplayOld,
        ReplayError::Duplicate => DropReason::ReplayDuplicate,
    }
}

/// The path-MTU check before protection (see [`crate::esp::path_mtu_room`]): `Some(room)`
/// when `data` would leave longer than `sa`'s known path MTU and may not be fragmented.
pub(crate) fn path_mtu_room(sa: &Sa, data: &[u8]) -> Option<u16> {
    let mtu = usize::from(sa.path_mtu);
    if mtu == 0 {
        return None;
    }
    let (len, v6, df) = match data.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(data).ok()?;
            (usize::from(ip.total_len()), false, ip.dont_frag())
        }
        Some(6) => (Ipv6Packet::new_checked(data).ok()?.total_len(), true, true),
        _ => return None,
    };
    let outer_v6 = match sa.mode {
        Mode::Tunnel => sa.tmpl.v6,
        Mode::Transport => v6,
    };
    let added = ah::header_len_for(sa.xform.icv_len(), outer_v6)
        + if sa.mode == Mode::Tunnel {
            usize::from(sa.tmpl.len)
        } else {
            0
        };
    if len + added <= mtu {
        return None;
    }
    let room = mtu.checked_sub(added)?;
    if !df || (v6 && room < 1280) {
        return None;
    }
    Some(u16::try_from(room).unwrap_or(u16::MAX))
}
