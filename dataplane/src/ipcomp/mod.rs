//! IPComp (RFC 3173): stateless per-packet compression with DEFLATE (RFC 2394, raw RFC 1951
//! through `miniz_oxide`) or LZS (RFC 2395, [`lzs`]), tunnel and transport mode.
//!
//! Outbound, a payload shorter than the algorithm's threshold, or one that does not come
//! out at least one byte shorter with the 4-byte IPComp header, is sent uncompressed
//! (RFC 3173 §2.2, "do not expand"): in transport mode the packet leaves as it came, in
//! tunnel mode it leaves as IP-in-IP under the SA's outer header (protocol 4 or 41, no
//! IPComp header), as Linux does. Inbound, the decompressor writes into a buffer the size
//! of what the frame can hold: a payload that would decompress beyond that (a compression
//! bomb, or simply too big for the frame) is a counted drop (`decompress_too_big`), never
//! an allocation; a stream that does not decode is `decompress_failed`.
//!
//! The compressor and decompressor states and the scratch buffer are allocated once per
//! engine ([`Codecs`]), on the first IPComp SA.

pub mod lzs;

use crate::esp::{
    InboundEsp, decap_transport, decap_tunnel, inner_fast, settle, transport_split, usable,
    write_outer,
};
use crate::events::EventQueue;
use crate::packet::PacketBuf;
use crate::sa::{CompAlg, Mode, Protocol, Sa, SaHandle};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Timestamp;
use crate::wire::ipcomp::{HEADER_LEN, IpCompHeader};
use crate::wire::{IpProtocol, Ipv4Packet};
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// The largest IP packet.
const MAX_PACKET: usize = 65535;
/// zlib's default level: what Linux's IPComp uses.
const DEFLATE_LEVEL: i32 = 6;

/// One engine's compression state: reused for every packet, reset in between (each packet
/// is compressed on its own, RFC 3173 §2.2).
pub struct Codecs {
    deflate: Box<CompressorOxide>,
    inflate: Box<DecompressorOxide>,
    lzs: lzs::Encoder,
    scratch: Vec<u8>,
}

impl core::fmt::Debug for Codecs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Codecs")
    }
}

impl Default for Codecs {
    fn default() -> Self {
        Self::new()
    }
}

impl Codecs {
    pub fn new() -> Self {
        // a negative window: raw DEFLATE, no zlib header (RFC 2394 §2)
        let flags = create_comp_flags_from_zip_params(DEFLATE_LEVEL, -15, 0);
        Codecs {
            deflate: Box::new(CompressorOxide::new(flags)),
            inflate: Box::new(DecompressorOxide::new()),
            lzs: lzs::Encoder::new(),
            scratch: vec![0; MAX_PACKET],
        }
    }

    /// Compress `input` into the scratch buffer; `Some(len)` if it fits in `limit` bytes.
    pub fn compress(&mut self, alg: CompAlg, input: &[u8], limit: usize) -> Option<usize> {
        let out = self.scratch.get_mut(..limit)?;
        match alg {
            CompAlg::Deflate => {
                self.deflate.reset();
                let (st, read, written) =
                    compress(&mut self.deflate, input, out, TDEFLFlush::Finish);
                (st == TDEFLStatus::Done && read == input.len()).then_some(written)
            }
            CompAlg::Lzs => self.lzs.compress(input, out),
        }
    }

    /// Decompress `input` into the scratch buffer, at most `max` bytes.
    pub fn decompress(
        &mut self,
        alg: CompAlg,
        input: &[u8],
        max: usize,
    ) -> Result<usize, DropReason> {
        let out = &mut self.scratch[..max.min(MAX_PACKET)];
        match alg {
            CompAlg::Deflate => {
                self.inflate.init();
                let (st, read, written) = decompress(
                    &mut self.inflate,
                    input,
                    out,
                    0,
                    inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
                );
                match st {
                    TINFLStatus::Done if read == input.len() => Ok(written),
                    TINFLStatus::HasMoreOutput => Err(DropReason::DecompressTooBig),
                    _ => Err(DropReason::DecompressFailed),
                }
            }
            CompAlg::Lzs => lzs::decompress(input, out).map_err(|e| match e {
                lzs::LzsError::TooLong => DropReason::DecompressTooBig,
                _ => DropReason::DecompressFailed,
            }),
        }
    }

    /// The last result of [`compress`](Self::compress) or [`decompress`](Self::decompress).
    pub fn output(&self, len: usize) -> &[u8] {
        &self.scratch[..len]
    }
}

fn alg_of(sa: &Sa) -> CompAlg {
    match sa.protocol {
        Protocol::IpComp(a) => a,
        // not reached: only IPComp SAs come here
        _ => CompAlg::Deflate,
    }
}

/// Compress `pkt` with IPComp SA `sa` (or send it as it is, when compression does not
/// help). Bytes of the payload come back.
pub(crate) fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    now: Timestamp,
    events: &mut EventQueue,
    codecs: &mut Codecs,
    stats: &mut WorkerStats,
) -> Result<usize, DropReason> {
    let r = usable(sa, h, now, events).and_then(|()| match sa.mode {
        Mode::Tunnel => tunnel(sa, pkt, codecs),
        Mode::Transport => transport(sa, pkt, codecs),
    });
    if let Ok((_, compressed)) = r {
        if compressed {
            stats.ipcomp_compressed += 1;
        } else {
            stats.ipcomp_uncompressed += 1;
        }
    }
    settle(sa, h, now, events, r).map(|(bytes, _)| bytes)
}

fn tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    pkt: &mut PacketBuf<B>,
    codecs: &mut Codecs,
) -> Result<(usize, bool), DropReason> {
    let (inner_len, nh, inner_tos, inner_df) = inner_fast(pkt.data())?;
    let t = sa.tmpl;
    let hdr = usize::from(t.len);
    if hdr != 20 && hdr != 40 {
        return Err(DropReason::NoSa);
    }
    let head = pkt.head();
    if head < hdr + HEADER_LEN {
        return Err(DropReason::NoBufferSpace);
    }
    let alg = alg_of(sa);
    let compressed = if inner_len >= alg.threshold() {
        let inner = &pkt.data()[..inner_len];
        codecs.compress(alg, inner, inner_len - HEADER_LEN - 1)
    } else {
        None
    };
    let frame = pkt.frame_mut();
    let (start, total) = match compressed {
        Some(c) => {
            let start = head - hdr - HEADER_LEN;
            let total = hdr + HEADER_LEN + c;
            write_outer(
                sa,
                &mut frame[start..start + hdr],
                total,
                inner_tos,
                inner_df,
            );
            let at = start + hdr;
            IpCompHeader::new_unchecked(&mut frame[at..at + HEADER_LEN]).emit(nh, sa.spi as u16);
            frame[at + HEADER_LEN..at + HEADER_LEN + c].copy_from_slice(codecs.output(c));
            (start, total)
        }
        None => {
            // not worth compressing: IP-in-IP under the same outer header
            let start = head - hdr;
            let total = hdr + inner_len;
            if total - if t.v6 { 40 } else { 0 } > usize::from(u16::MAX) {
                return Err(DropReason::TooBig);
            }
            let out = &mut frame[start..head];
            write_outer(sa, out, total, inner_tos, inner_df);
            if t.v6 {
                out[6] = nh.0;
            } else {
                out[9] = nh.0;
                Ipv4Packet::new_unchecked(&mut out[..20]).fill_checksum();
            }
            (start, total)
        }
    };
    pkt.set_window(start, total);
    Ok((inner_len, compressed.is_some()))
}

fn transport<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    pkt: &mut PacketBuf<B>,
    codecs: &mut Codecs,
) -> Result<(usize, bool), DropReason> {
    let data = pkt.data();
    let (hl, nh_field, total_len, v6) = transport_split(data)?;
    let nh = IpProtocol(data[nh_field]);
    let plen = total_len - hl;
    let alg = alg_of(sa);
    if plen < alg.threshold() {
        return Ok((plen, false));
    }
    let Some(c) = codecs.compress(alg, &data[hl..total_len], plen - HEADER_LEN - 1) else {
        return Ok((plen, false));
    };
    let head = pkt.head();
    let total = hl + HEADER_LEN + c;
    let frame = pkt.frame_mut();
    let at = head + hl;
    IpCompHeader::new_unchecked(&mut frame[at..at + HEADER_LEN]).emit(nh, sa.spi as u16);
    frame[at + HEADER_LEN..at + HEADER_LEN + c].copy_from_slice(codecs.output(c));
    frame[head + nh_field] = IpProtocol::IPCOMP.0;
    if v6 {
        frame[head + 4..head + 6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[head..head + hl]);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    }
    pkt.set_window(head, total);
    Ok((plen, true))
}

/// Decompress and remove IPComp (RFC 3173 §3). The window then holds the inner packet
/// (tunnel) or the packet with its payload decompressed (transport); the payload's bytes
/// come back, and whether the selector check was left to an inner layer.
pub(crate) fn decap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    now: Timestamp,
    events: &mut EventQueue,
    codecs: &mut Codecs,
) -> Result<(usize, bool), DropReason> {
    let r = run(sa, h, pkt, o, now, events, codecs);
    settle(sa, h, now, events, r)
}

fn run<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut Sa,
    h: SaHandle,
    pkt: &mut PacketBuf<B>,
    o: &InboundEsp,
    now: Timestamp,
    events: &mut EventQueue,
    codecs: &mut Codecs,
) -> Result<(usize, bool), DropReason> {
    if o.udp.is_some() {
        return Err(DropReason::EncapMismatch);
    }
    usable(sa, h, now, events)?;
    let base = pkt.head();
    let at = base + o.esp_off;
    let end = base + o.esp_off + o.esp_len;
    let frame = pkt.frame_mut();
    let hdr = IpCompHeader::new_checked(&frame[at..end]).map_err(|_| DropReason::BadLength)?;
    let nh = hdr.next_header();
    let room = frame.len() - base;
    let alg = alg_of(sa);
    match sa.mode {
        Mode::Tunnel => {
            // the inner packet replaces everything from the window's start
            let n = codecs.decompress(alg, hdr.payload(), room)?;
            frame[base..base + n].copy_from_slice(codecs.output(n));
            decap_tunnel(sa, pkt, o, base, n, nh)
        }
        Mode::Transport => {
            let hl = o.ip_hdr_len;
            let limit = if o.v6 { MAX_PACKET + 40 } else { MAX_PACKET } - hl;
            let n = codecs.decompress(alg, hdr.payload(), (room - hl).min(limit))?;
            frame[base + hl..base + hl + n].copy_from_slice(codecs.output(n));
            decap_transport(sa, pkt, o, base + hl, n, nh)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_roundtrip_and_bounds() {
        let mut c = Codecs::new();
        let text: Vec<u8> = b"compressible text, compressible text, compressible text. "
            .iter()
            .cycle()
            .take(1400)
            .copied()
            .collect();
        let n = c
            .compress(CompAlg::Deflate, &text, 1400)
            .expect("compresses");
        assert!(n < 200, "{n}");
        let z = c.output(n).to_vec();
        // a second packet with a fresh history gives the same bytes
        assert_eq!(c.compress(CompAlg::Deflate, &text, 1400), Some(n));
        assert_eq!(c.output(n), &z[..]);
        let m = c.decompress(CompAlg::Deflate, &z, 2000).unwrap();
        assert_eq!(c.output(m), &text[..]);
        // too little room: a counted drop, not a bigger buffer
        assert_eq!(
            c.decompress(CompAlg::Deflate, &z, 1000),
            Err(DropReason::DecompressTooBig)
        );
        assert_eq!(
            c.decompress(CompAlg::Deflate, &z[..n / 2], 2000),
            Err(DropReason::DecompressFailed)
        );
        let mut junk = z.clone();
        junk.push(0);
        assert_eq!(
            c.decompress(CompAlg::Deflate, &junk, 2000),
            Err(DropReason::DecompressFailed)
        );
        // does not fit the limit: not compressed
        assert_eq!(c.compress(CompAlg::Deflate, &text, 10), None);
    }
}
