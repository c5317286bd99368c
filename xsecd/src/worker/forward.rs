//! The packet path of a worker: a burst per side through the SPD and the engine, then
//! forwarding (TTL, next hop and its parking, path MTU, fragmentation, ICMP errors), the
//! heartbeats it originates, and outer reassembly.

use super::*;
use xsec_dataplane::wire::{EtherType, EthernetFrame, Ipv4Packet};

impl<I: FrameIo> Worker<'_, I> {
    /// The IP packet of a received Ethernet frame; `None` (counted, released) for anything
    /// but IPv4 and IPv6.
    pub(super) fn ip_packet(&mut self, f: RxFrame<I::Frame>) -> Option<PacketBuf<I::Frame>> {
        let RxFrame { frame, off, len } = f;
        let et = frame
            .as_ref()
            .get(off..off + len)
            .and_then(|b| EthernetFrame::new_checked(b).ok())
            .map(|e| e.ethertype());
        if !matches!(et, Some(EtherType::IPV4 | EtherType::IPV6)) {
            self.c.non_ip += 1;
            self.xsk.release(frame);
            return None;
        }
        // `None` only if the kernel's descriptor lay outside the frame: not reached
        self.window(frame, off + ETH_HDR, Some(len - ETH_HDR))
    }

    /// A burst from the protected side: each packet is staged (TTL, what an ICMP error
    /// would quote, trace copy), the engine protects the whole burst at once
    /// ([`Engine::outbound_burst`]: multi-buffer crypto), then each packet goes on, in
    /// arrival order.
    pub(super) fn protected_burst(&mut self, rx: &mut Vec<RxFrame<I::Frame>>, now: Timestamp) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut staged = std::mem::take(&mut self.staged);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        for f in rx.drain(..) {
            let Some(pkt) = self.ip_packet(f) else {
                continue;
            };
            if let Some((pkt, st)) = self.stage_protected(pkt, batch.len(), now, false) {
                batch.push(pkt);
                staged.push(st);
            }
        }
        let n = batch.len();
        if verdicts.len() < n {
            verdicts.resize(n, Verdict::Unset);
        }
        self.engine
            .outbound_burst(now, &mut batch, &mut verdicts[..n]);
        for ((pkt, st), v) in batch.drain(..).zip(staged.drain(..)).zip(verdicts.iter()) {
            self.finish_protected(pkt, st, *v, now, false);
        }
        self.batch = batch;
        self.staged = staged;
        self.verdicts = verdicts;
    }

    /// A burst from the unprotected side: each packet staged (outer fragments reassembled,
    /// the SPI noted for a trace), the engine decapsulates the whole burst at once
    /// ([`Engine::inbound_burst`]: ICVs checked two at a time), then each goes on in order.
    pub(super) fn unprotected_burst(&mut self, rx: &mut Vec<RxFrame<I::Frame>>, now: Timestamp) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut spis = std::mem::take(&mut self.spis);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        for f in rx.drain(..) {
            let Some(pkt) = self.ip_packet(f) else {
                continue;
            };
            if let Some((pkt, spi)) = self.stage_unprotected(pkt, now, false) {
                batch.push(pkt);
                spis.push(spi);
            }
        }
        let n = batch.len();
        if verdicts.len() < n {
            verdicts.resize(n, Verdict::Unset);
        }
        self.engine
            .inbound_burst(now, &mut batch, &mut verdicts[..n]);
        for ((pkt, spi), v) in batch.drain(..).zip(spis.drain(..)).zip(verdicts.iter()) {
            self.finish_unprotected(pkt, spi, *v, now, false);
        }
        self.batch = batch;
        self.spis = spis;
        self.verdicts = verdicts;
    }

    /// Before decapsulation: outer ESP fragments go to reassembly (processed there once
    /// complete: `None`); while tracing, note the SPI.
    // inlined: its result built in place, not returned through memory and copied (the
    // copy's wide loads of the narrow stores stalled the worker: store forwarding)
    #[inline(always)]
    pub(super) fn stage_unprotected(
        &mut self,
        pkt: PacketBuf<I::Frame>,
        now: Timestamp,
        handed: bool,
    ) -> Option<(PacketBuf<I::Frame>, Option<u32>)> {
        if let Some(proto) = reasm::fragment_protocol(pkt.data()) {
            let data = pkt.data();
            let shards = self.engine.shards();
            let ours = match proto {
                // ESP and AH are processed after reassembly (RFC 4303 §3.4.1, RFC 4302
                // §3.4.1)
                50 | 51 => true,
                // UDP fragments to the gateway's end of a UDP-encapsulated SA (any worker's);
                // other UDP fragments are forwarded traffic, decided as they are
                17 => fwd::ip_dst(data)
                    .is_some_and(|d| shards.is_some_and(|s| s.udp_locals.contains(&d))),
                _ => false,
            };
            // only the SAs' peers get reassembly slots (and can evict each other's)
            let from_peer =
                fwd::ip_src(data).is_some_and(|s| shards.is_none_or(|sh| sh.fragments_from(s)));
            if ours && from_peer {
                // one worker per datagram: the NIC may spread its fragments over queues
                // (with ports in the hash, the first of a UDP datagram goes elsewhere)
                let n = self.mesh.inboxes.len();
                if n > 1 && !handed {
                    let owner =
                        reasm::datagram_hash(data).map_or(self.id, |h| (h % n as u64) as u16);
                    if owner != self.id {
                        self.handoff(pkt, Side::Unprotected, owner, false);
                        return None;
                    }
                }
                self.reassemble(pkt, now);
                return None;
            }
        }
        let spi = match &self.trace {
            Some(t) => crate::trace::esp_spi(pkt.data(), &t.filter.udp_ports),
            None => None,
        };
        Some((pkt, spi))
    }

    /// After decapsulation: the trace copy and the packet's way out.
    pub(super) fn finish_unprotected(
        &mut self,
        pkt: PacketBuf<I::Frame>,
        spi: Option<u32>,
        v: Verdict,
        now: Timestamp,
        handed: bool,
    ) {
        if let Some(t) = &mut self.trace
            && matches!(v, Verdict::Forward | Verdict::Bypass)
        {
            let spi = spi.filter(|_| v == Verdict::Forward);
            if t.wants(self.engine.spd(), Direction::Inbound, pkt.data(), spi) {
                t.copy(self.id, Direction::Inbound, pkt.data());
            }
        }
        match v {
            // the reply to one of the gateway's own probes, come through a tunnel
            Verdict::Forward if self.probes.take_reply(pkt.data(), now.as_nanos()) => {
                self.c.probe_replies += 1;
                self.xsk.release(pkt.into_inner());
            }
            // decapsulated (or bypassed plaintext): forwarded by this router
            Verdict::Forward | Verdict::Bypass => self.forward(pkt, now, true, false),
            Verdict::Handoff(w) => self.handoff(pkt, Side::Unprotected, w, handed),
            Verdict::Punt => {
                self.c.punt_dropped += 1;
                self.xsk.release(pkt.into_inner());
            }
            _ => self.xsk.release(pkt.into_inner()),
        }
    }

    /// Before protection: decrement the TTL (RFC 4301 §5.1.2.1; a handed-off packet was
    /// decremented already), keep what an ICMP error would quote in quote slot `slot` if
    /// the result could outgrow its link, copy a traced packet. `None`: dropped (released).
    // inlined: its result built in place, not returned through memory and copied (the
    // copy's wide loads of the narrow stores stalled the worker: store forwarding)
    #[inline(always)]
    pub(super) fn stage_protected(
        &mut self,
        mut pkt: PacketBuf<I::Frame>,
        slot: usize,
        now: Timestamp,
        handed: bool,
    ) -> Option<(PacketBuf<I::Frame>, Staged)> {
        if !handed && fwd::dec_ttl(pkt.data_mut()).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(pkt.data(), IcmpError::TimeExceeded, now);
            self.xsk.release(pkt.into_inner());
            return None;
        }
        let v6 = pkt.data().first().is_some_and(|b| b >> 4 == 6);
        let quote = pkt.len().min(if v6 { 1280 - 48 } else { 576 - 28 });
        // only a packet that may outgrow a link: the SAs installed say by how much at most
        let keep = pkt.len() + self.engine.max_overhead() > self.min_mtu && slot < BURST;
        if keep {
            self.quotes[slot][..quote].copy_from_slice(&pkt.data()[..quote]);
        }
        let traced = match &self.trace {
            Some(t) if t.wants(self.engine.spd(), Direction::Outbound, pkt.data(), None) => {
                Some(pkt.data().to_vec())
            }
            _ => None,
        };
        let st = Staged {
            quote: keep.then_some((slot, quote, pkt.len())),
            traced,
        };
        Some((pkt, st))
    }

    /// After protection: the trace copy (unless handed off: the owner copies it) and the
    /// packet's way out.
    pub(super) fn finish_protected(
        &mut self,
        pkt: PacketBuf<I::Frame>,
        st: Staged,
        v: Verdict,
        now: Timestamp,
        handed: bool,
    ) {
        if let (Some(ip), Some(t)) = (st.traced, &mut self.trace)
            && !matches!(v, Verdict::Handoff(_))
        {
            t.copy(self.id, Direction::Outbound, &ip);
        }
        match v {
            Verdict::Forward => self.forward_esp(pkt, now, st.quote),
            Verdict::Bypass => self.forward(pkt, now, false, true),
            // too big for the path once protected: nothing was encrypted; the sender is told
            Verdict::TooBig { mtu } => {
                self.icmp(pkt.data(), IcmpError::TooBig { mtu }, now);
                self.xsk.release(pkt.into_inner());
            }
            // the packet is unchanged except the TTL, which the owner must not decrement
            // again (`handed`)
            Verdict::Handoff(w) => self.handoff(pkt, Side::Protected, w, handed),
            _ => self.xsk.release(pkt.into_inner()),
        }
    }

    /// One received Ethernet frame.
    pub(super) fn packet(
        &mut self,
        side: Side,
        f: RxFrame<I::Frame>,
        now: Timestamp,
        handed: bool,
    ) {
        let Some(pkt) = self.ip_packet(f) else {
            return;
        };
        match side {
            Side::Unprotected => {
                if let Some((mut pkt, spi)) = self.stage_unprotected(pkt, now, handed) {
                    let v = self.engine.inbound(now, &mut pkt);
                    self.finish_unprotected(pkt, spi, v, now, handed);
                }
            }
            Side::Protected => {
                if let Some((mut pkt, st)) = self.stage_protected(pkt, 0, now, handed) {
                    let v = self.engine.outbound(now, &mut pkt);
                    self.finish_protected(pkt, st, v, now, handed);
                }
            }
        }
    }

    /// Add an outer fragment; once the datagram is complete, process it.
    pub(super) fn reassemble(&mut self, pkt: PacketBuf<I::Frame>, now: Timestamp) {
        let mut big = std::mem::take(&mut self.big);
        let out = self.reasm.add(pkt.data(), now, &mut big[BIG_HEAD..]);
        self.xsk.release(pkt.into_inner());
        if let reasm::Outcome::Done(n) = out {
            self.reassembled(&mut big, n, now, false);
        }
        self.big = big;
    }

    /// A reassembled outer packet, `big[BIG_HEAD..BIG_HEAD + n]` (up to 65,575 bytes; UMEM
    /// frames hold 4 KiB): decapsulated where it lies, then the inner packet is forwarded from
    /// there ([`Worker::forward_big`]); for an SA another worker owns, handed over whole. What
    /// is not ESP takes the inbound SPD like any plaintext; IKE (UDP/500, the non-ESP marker)
    /// is counted `punt_dropped`: IP-fragmented IKE from an SA's peer never reaches the
    /// kernel (IKE fragments itself, RFC 7383). Not traced.
    pub(super) fn reassembled(&mut self, big: &mut [u8], n: usize, now: Timestamp, handed: bool) {
        let Some(mut pkt) = PacketBuf::new(&mut *big, BIG_HEAD, n) else {
            return;
        };
        match self.engine.inbound(now, &mut pkt) {
            Verdict::Forward | Verdict::Bypass => {
                let (head, len) = (pkt.head(), pkt.len());
                self.forward_big(&mut big[head..head + len], now);
            }
            Verdict::Handoff(to) => {
                let (head, len) = (pkt.head(), pkt.len());
                self.handoff_big(&big[head..head + len], to, handed);
            }
            Verdict::Punt => self.c.punt_dropped += 1,
            _ => {}
        }
    }

    /// Forward a decapsulated packet that may be larger than a frame: one that fits a frame is
    /// copied into one and takes the usual way; a larger IPv4 packet without DF is sent in
    /// fragments straight from `ip`; otherwise the sender is told the link's MTU.
    pub(super) fn forward_big(&mut self, ip: &mut [u8], now: Timestamp) {
        if ip.len() + FRAME_START <= FRAME_SIZE as usize {
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                return;
            };
            f.as_mut()[FRAME_START..FRAME_START + ip.len()].copy_from_slice(ip);
            if let Some(pkt) = self.window(f, FRAME_START, Some(ip.len())) {
                self.forward(pkt, now, true, false);
            }
            return;
        }
        if fwd::dec_ttl(ip).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(ip, IcmpError::TimeExceeded, now);
            return;
        }
        let Some(dst) = fwd::ip_dst(ip) else {
            return;
        };
        // no parking for these: an unresolved next hop drops the packet
        let Some(hop) = self.hop(dst, now) else {
            self.c.no_neighbour += 1;
            return;
        };
        if hop.side != Side::Protected {
            // a decapsulated packet routed back out would need the outbound SPD on a packet
            // no frame holds
            self.c.not_forwarded += 1;
            return;
        }
        // what a frame carries bounds the MTU too: a larger packet cannot be sent at all
        let mtu = usize::from(self.link_mtu(hop)).min(FRAME_SIZE as usize - FRAME_START - ETH_HDR);
        if ip[0] >> 4 == 6 || fwd::dont_fragment(ip) {
            self.icmp(ip, IcmpError::TooBig { mtu: mtu as u16 }, now);
            return;
        }
        if Ipv4Packet::new_unchecked(&ip[..]).is_fragment() {
            // already a fragment: cutting it again would lose its offset (as `fragment`)
            self.c.not_forwarded += 1;
            return;
        }
        let hl = usize::from(ip[0] & 0x0f) * 4;
        let Some(per) = fwd::v4_fragment_size(hl, mtu) else {
            return;
        };
        self.c.fragmented += 1;
        self.send_fragments(ip, hl, per, 0, None, hop);
    }

    /// Park a packet whose next hop is being resolved (like the kernel's unresolved queue):
    /// sent when the answer comes, dropped (and counted `no_neighbour`) after a second or when
    /// the parking is full. Known-unreachable destinations are dropped at once.
    pub(super) fn park(
        &mut self,
        dst: IpAddr,
        pkt: PacketBuf<I::Frame>,
        now: Timestamp,
        unchecked: bool,
    ) {
        if matches!(self.hops.get(&dst), Some(None)) || self.parked.len() >= PARK_MAX {
            if self.parked.len() >= PARK_MAX {
                self.c.no_neighbour += 1;
            }
            self.xsk.release(pkt.into_inner());
            return;
        }
        self.c.parked += 1;
        self.parked.push((dst, pkt, now, unchecked));
    }

    /// Send (or drop) the packets parked for `dst` now that its next hop is known.
    pub(super) fn unpark(&mut self, dst: IpAddr, now: Timestamp) {
        // In arrival order: these may be ESP packets with consecutive sequence numbers, and
        // the peer's replay window must not see them shuffled.
        while let Some(i) = self.parked.iter().position(|p| p.0 == dst) {
            let (_, pkt, _, unchecked) = self.parked.remove(i);
            match self.hops.get(&dst).copied().flatten() {
                // plaintext the outbound SPD has not seen goes through it now (see
                // `forward`; the TTL was decremented before parking)
                Some(h) if unchecked && h.side == Side::Unprotected => {
                    self.forward(pkt, now, false, false)
                }
                Some(h) if pkt.len() <= usize::from(self.link_mtu(h)) => self.send(pkt, h),
                _ => {
                    self.c.no_neighbour += 1;
                    self.xsk.release(pkt.into_inner());
                }
            }
        }
    }

    /// Drop packets parked for more than a second.
    pub(super) fn expire_parked(&mut self, now: Timestamp) {
        let mut i = 0;
        while i < self.parked.len() {
            if now.since(self.parked[i].2) > Duration::from_secs(1) {
                let (_, pkt, _, _) = self.parked.swap_remove(i);
                self.c.no_neighbour += 1;
                self.xsk.release(pkt.into_inner());
            } else {
                i += 1;
            }
        }
    }

    /// Look up the next hop of `dst`; on a miss ask the control thread (at most every 50 ms
    /// per destination). `None`: not known (yet), or known unreachable/local (counted).
    pub(super) fn hop(&mut self, dst: IpAddr, now: Timestamp) -> Option<Hop> {
        // most packets of a burst go to the destination of the one before
        if let Some((d, h)) = self.last_hop
            && d == dst
        {
            return Some(h);
        }
        match self.hops.get(&dst) {
            Some(Some(h)) => {
                self.last_hop = Some((dst, *h));
                return Some(*h);
            }
            Some(None) => {
                self.c.not_forwarded += 1;
                return None;
            }
            None => {}
        }
        let ask = match self.pending.get(&dst) {
            Some(p) => now.since(p.asked) > Duration::from_millis(50),
            None => self.pending.len() < 4096,
        };
        if ask && self.resolve.try_send(dst).is_ok() {
            self.pending.insert(dst, PendingHop { asked: now });
        }
        None
    }

    /// Forward an IP packet (plaintext) to its destination, decrementing the TTL if asked.
    /// Plaintext that leaves by the unprotected side goes through the outbound SPD first,
    /// unless it comes from there (`checked`): a decapsulated packet routed back out (hub and
    /// spoke) is protected again or dropped by policy, an ICMP error towards a remote protected
    /// network is encrypted, and nothing leaves in clear that the SPD did not BYPASS.
    pub(super) fn forward(
        &mut self,
        mut pkt: PacketBuf<I::Frame>,
        now: Timestamp,
        dec: bool,
        checked: bool,
    ) {
        if dec && fwd::dec_ttl(pkt.data_mut()).is_err() {
            self.c.ttl_exceeded += 1;
            self.icmp(pkt.data(), IcmpError::TimeExceeded, now);
            self.xsk.release(pkt.into_inner());
            return;
        }
        let Some(dst) = fwd::ip_dst(pkt.data()) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let Some(hop) = self.hop(dst, now) else {
            self.park(dst, pkt, now, !checked);
            return;
        };
        if hop.side == Side::Unprotected && !checked {
            match self.engine.outbound(now, &mut pkt) {
                // too big after encapsulation (no path MTU known, or a bundle): the outer
                // packet is fragmented
                Verdict::Forward => self.forward_esp(pkt, now, None),
                Verdict::Bypass => self.forward(pkt, now, false, true),
                // protected again, it would not fit the path and may not be fragmented:
                // nothing was encrypted; the source is told
                Verdict::TooBig { mtu } => {
                    self.icmp(pkt.data(), IcmpError::TooBig { mtu }, now);
                    self.xsk.release(pkt.into_inner());
                }
                // the SA is another worker's: it gets the packet as if from the protected
                // side (a packet this worker built has no Ethernet header yet; the owner
                // reads only its type)
                Verdict::Handoff(w) => {
                    let v6 = pkt.data().first().is_some_and(|b| b >> 4 == 6);
                    let ethertype = if v6 {
                        fwd::ETHERTYPE_IPV6
                    } else {
                        fwd::ETHERTYPE_IPV4
                    };
                    let (eth, len) = (pkt.head().checked_sub(ETH_HDR), pkt.len());
                    let mut frame = pkt.into_inner();
                    let written = eth.and_then(|e| {
                        fwd::write_eth(&mut frame.as_mut()[e..], [0; 6], [0; 6], ethertype)
                    });
                    match (written, eth) {
                        (Some(()), Some(e)) => {
                            if let Some(p) = self.window(frame, e + ETH_HDR, Some(len)) {
                                self.handoff(p, Side::Protected, w, false);
                            }
                        }
                        _ => self.xsk.release(frame),
                    }
                }
                _ => self.xsk.release(pkt.into_inner()),
            }
            return;
        }
        let mtu = usize::from(self.link_mtu(hop));
        if pkt.len() > mtu {
            // plaintext too big for the next link: IPv4 without DF is fragmented; otherwise
            // (DF, or IPv6: routers never fragment it) the source is told
            if fwd::dont_fragment(pkt.data()) {
                self.icmp(pkt.data(), IcmpError::TooBig { mtu: mtu as u16 }, now);
                self.xsk.release(pkt.into_inner());
            } else {
                self.fragment(pkt, hop, mtu);
            }
            return;
        }
        self.send(pkt, hop);
    }

    /// Forward an ESP packet; if it outgrew the link, fragment it or tell the inner source.
    pub(super) fn forward_esp(
        &mut self,
        pkt: PacketBuf<I::Frame>,
        now: Timestamp,
        inner: Option<(usize, usize, usize)>,
    ) {
        let Some(dst) = fwd::ip_dst(pkt.data()) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let Some(hop) = self.hop(dst, now) else {
            self.park(dst, pkt, now, false);
            return;
        };
        let mtu = usize::from(self.link_mtu(hop));
        if pkt.len() <= mtu {
            self.send(pkt, hop);
            return;
        }
        // Too big. The inner packet's start was kept (see `stage_protected`).
        if let Some((slot, quote, inner_len)) = inner {
            let overhead = pkt.len() - inner_len;
            let kept = &self.quotes[slot % BURST];
            let inner_v6 = kept[0] >> 4 == 6;
            if inner_v6 || fwd::dont_fragment(&kept[..quote]) {
                let room = mtu.saturating_sub(overhead) as u16;
                if !inner_v6 || room >= 1280 {
                    let mut q = [0u8; QUOTE_MAX];
                    let n = quote.min(q.len());
                    q[..n].copy_from_slice(&kept[..n]);
                    self.icmp(&q[..n], IcmpError::TooBig { mtu: room }, now);
                    self.xsk.release(pkt.into_inner());
                    return;
                }
            }
        }
        self.fragment(pkt, hop, mtu);
    }

    /// Fragment an outer packet (IPv4 fragments, or an IPv6 Fragment header: the gateway is
    /// the outer packet's source).
    pub(super) fn fragment(&mut self, pkt: PacketBuf<I::Frame>, hop: Hop, mtu: usize) {
        let v6 = pkt.data()[0] >> 4 == 6;
        if !v6 && Ipv4Packet::new_unchecked(pkt.data()).is_fragment() {
            // already a fragment: not re-fragmented here
            self.xsk.release(pkt.into_inner());
            return;
        }
        let (hdr, per) = if v6 {
            (40, (mtu.saturating_sub(48)) & !7)
        } else {
            let hl = usize::from(pkt.data()[0] & 0x0f) * 4;
            (hl, fwd::v4_fragment_size(hl, mtu).unwrap_or(0))
        };
        if per == 0 || pkt.len() <= hdr {
            self.xsk.release(pkt.into_inner());
            return;
        }
        self.c.fragmented += 1;
        self.frag_id = self.frag_id.wrapping_add(1);
        let ident = self.frag_id;
        // Fragments after the first go into new frames; the first is rewritten in place.
        if !self.send_fragments(pkt.data(), hdr, per, per, v6.then_some(ident), hop) {
            self.xsk.release(pkt.into_inner());
            return;
        }
        // The first fragment, in place: only its header changes.
        let head = pkt.head();
        let first_len = per;
        let mut frame = pkt.into_inner();
        let (start, n) = if v6 {
            // the base header moves 8 bytes left to make room for the Fragment header
            let Some(new_head) = head.checked_sub(8).filter(|&h| h >= ETH_HDR) else {
                self.xsk.release(frame);
                return;
            };
            let mut base = [0u8; 40];
            base.copy_from_slice(&frame.as_ref()[head..head + 40]);
            let buf = &mut frame.as_mut()[new_head..head + 40];
            (
                new_head,
                fwd::v6_fragment_header(buf, &base, first_len, 0, true, ident),
            )
        } else {
            let buf = &mut frame.as_mut()[head..head + hdr];
            (head, fwd::v4_fragment_header(buf, first_len, 0, true))
        };
        if let Some(p) = self.window(frame, start, n) {
            self.send(p, hop);
        }
    }

    /// Send the fragments of `ip` (a `hdr`-byte header, then the fragmentable part) that
    /// start at `from`, `per` payload bytes each, in new frames: IPv4 fragments, or with
    /// `ident` IPv6 Fragment headers. `false` when the frames ran out.
    pub(super) fn send_fragments(
        &mut self,
        ip: &[u8],
        hdr: usize,
        per: usize,
        from: usize,
        ident: Option<u32>,
        hop: Hop,
    ) -> bool {
        let payload_len = ip.len().saturating_sub(hdr);
        let mut off = from;
        while off < payload_len {
            let end = (off + per).min(payload_len);
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                return false;
            };
            let out = &mut f.as_mut()[FRAME_START..];
            let part = &ip[hdr + off..hdr + end];
            let n = match ident {
                Some(id) => {
                    let mut base = [0u8; 40];
                    base.copy_from_slice(&ip[..40]);
                    fwd::v6_fragment(out, &base, part, off, end < payload_len, id)
                }
                None => fwd::v4_fragment(out, &ip[..hdr], part, off, end < payload_len),
            };
            if let Some(p) = self.window(f, FRAME_START, n) {
                self.send(p, hop);
            }
            off = end;
        }
        true
    }

    /// The packet `f[head .. head + len]`, or `None` (the frame back on the free list,
    /// counted) if `len` is `None` (building it failed) or the window does not fit.
    pub(super) fn window(
        &mut self,
        f: I::Frame,
        head: usize,
        len: Option<usize>,
    ) -> Option<PacketBuf<I::Frame>> {
        match len {
            Some(n) if head + n <= FRAME_SIZE as usize => PacketBuf::new(f, head, n),
            _ => {
                self.c.no_frame += 1;
                self.xsk.release(f);
                None
            }
        }
    }

    /// Send an ICMP error about `orig` back to its source.
    pub(super) fn icmp(&mut self, orig: &[u8], e: IcmpError, now: Timestamp) {
        let fam = usize::from(orig.first().is_some_and(|b| b >> 4 == 6));
        let Some(src) = self.icmp_src[fam] else {
            return;
        };
        // not about packets to multicast/broadcast
        if fwd::ip_dst(orig).is_some_and(|d| d.is_multicast()) {
            return;
        }
        if !fwd::may_draw_icmp_error(orig) {
            return;
        }
        if !self.icmp_limit.allow(now) {
            self.c.icmp_suppressed += 1;
            return;
        }
        let Some(mut f) = self.xsk.alloc() else {
            self.c.no_frame += 1;
            return;
        };
        let start = FRAME_START;
        let Some(n) = fwd::icmp_error(&mut f.as_mut()[start..], src, orig, e) else {
            self.xsk.release(f);
            return;
        };
        let Some(pkt) = self.window(f, start, Some(n)) else {
            return;
        };
        self.c.icmp_sent += 1;
        self.forward(pkt, now, false, false);
    }

    /// Originate a probe ([`crate::probe`]): built in a new frame and forwarded like a
    /// packet from the protected side, so the outbound SPD decides it (protected, bypassed or
    /// dropped).
    pub(super) fn probe(&mut self, p: Probe, now: Timestamp) {
        let Some(mut f) = self.xsk.alloc() else {
            self.c.no_frame += 1;
            return;
        };
        let n = fwd::echo_request(
            &mut f.as_mut()[FRAME_START..],
            p.src,
            p.dst,
            p.ticket.ident,
            p.ticket.seq,
            usize::from(p.size),
        );
        let Some(pkt) = self.window(f, FRAME_START, n) else {
            return;
        };
        self.c.probes_sent += 1;
        self.forward(pkt, now, false, false);
    }

    pub(super) fn heartbeats(&mut self, now: Timestamp) {
        for i in 0..self.heartbeats.len() {
            if now < self.heartbeats[i].next {
                continue;
            }
            let hb = self.heartbeats[i].hb;
            self.heartbeats[i].next = now.plus(hb.interval);
            let Some(mut f) = self.xsk.alloc() else {
                self.c.no_frame += 1;
                continue;
            };
            let start = FRAME_START;
            let Some(n) =
                fwd::keepalive(&mut f.as_mut()[start..], hb.src, hb.dst, hb.sport, hb.dport)
            else {
                self.xsk.release(f);
                continue;
            };
            let Some(pkt) = self.window(f, start, Some(n)) else {
                continue;
            };
            match self.hop(hb.dst, now) {
                Some(h) => {
                    self.c.heartbeats_sent += 1;
                    self.send(pkt, h);
                }
                None => {
                    // retry soon rather than a whole interval later
                    self.heartbeats[i].next = now.plus(Duration::from_millis(100));
                    self.xsk.release(pkt.into_inner());
                }
            }
        }
    }

    /// Write the Ethernet header and queue the frame on the hop's side.
    pub(super) fn send(&mut self, pkt: PacketBuf<I::Frame>, hop: Hop) {
        let Some(eth) = pkt.head().checked_sub(ETH_HDR) else {
            self.xsk.release(pkt.into_inner());
            return;
        };
        let ethertype = if pkt.data().first().is_some_and(|b| b >> 4 == 6) {
            fwd::ETHERTYPE_IPV6
        } else {
            fwd::ETHERTYPE_IPV4
        };
        let len = pkt.len() + ETH_HDR;
        let mut frame = pkt.into_inner();
        if fwd::write_eth(
            &mut frame.as_mut()[eth..],
            hop.dst_mac,
            hop.src_mac,
            ethertype,
        )
        .is_none()
        {
            self.xsk.release(frame);
            return;
        }
        match self.xsk.send(hop.side, frame, eth, len) {
            Ok(()) => match hop.side {
                Side::Unprotected => self.c.tx_unprot += 1,
                Side::Protected => self.c.tx_prot += 1,
            },
            Err(frame) => {
                self.c.tx_full += 1;
                self.xsk.release(frame);
            }
        }
    }
}
