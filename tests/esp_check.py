#!/usr/bin/python3
"""esp_check.py - an independent ESP (RFC 4303) checker for xsec's interop tests.

It covers what the harness tools cannot: esp_tool.py (scapy) knows only AES-GCM,
AES-CBC and NULL with HMAC over IPv4 without ESN, and tshark 4.0 has no
ChaCha20-Poly1305, no AES-GMAC and no ESN.  Built on the `cryptography`
package and the standard library only, with its own pcap and IP parsers.

    esp_check.py --pcap P --sas SAS.json [--udp-port N ...]

SAS.json is a list of SAs:
    {"spi": 4096, "enc": "chacha20-poly1305", "enc_key": "<hex, key + salt>",
     "auth": "none", "auth_key": "", "mode": "tunnel" | "transport", "esn": false}
enc:  null | aes-cbc-128/192/256 | 3des-cbc | aes-gcm-128/192/256 |
      chacha20-poly1305 (RFC 7634) | aes-gmac-128/192/256 (RFC 4543)
auth: none | hmac-sha1-96 | hmac-sha256-128 | hmac-sha384-192 | hmac-sha512-256 |
      aes-cmac-96 (RFC 4494)

For every ESP packet (IPv4 or IPv6 outer, raw ESP or UDP-encapsulated on one of the
--udp-port ports, default 4500 and 2746) it checks the outer headers (IPv4 header
checksum, UDP length, UDP checksum: 0 or correct over IPv4, correct over IPv6), the ICV,
the RFC 4303 padding (1, 2, 3, ...), the pad length, the 4-byte alignment, the next
header and the inner packet (lengths, IPv4 header checksum, UDP checksum), and prints

    #N spi=0x... seq=S nh=NH padlen=P ok inner=<hex>      (S is the 64-bit number with ESN)
    #N ... FAIL: <reason>

then "N passed, N failed".  With ESN the high 32 bits are inferred per SPI as the
receiver does (RFC 4303 Appendix A): the current high half or the next one, whichever
authenticates.  Transport mode: inner is the rebuilt IP packet (ESP and UDP removed,
next header, lengths and checksum fixed).  Exit 0 only if every packet passed.
"""
import argparse
import hashlib
import hmac
import json
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

# name -> (kind, key length, salt length, IV length, block length, combined ICV length)
ENC = {
    'null': ('null', 0, 0, 0, 1, 0),
    'aes-cbc-128': ('aes-cbc', 16, 0, 16, 16, 0),
    'aes-cbc-192': ('aes-cbc', 24, 0, 16, 16, 0),
    'aes-cbc-256': ('aes-cbc', 32, 0, 16, 16, 0),
    '3des-cbc': ('3des-cbc', 24, 0, 8, 8, 0),
    'aes-gcm-128': ('aes-gcm', 16, 4, 8, 1, 16),
    'aes-gcm-192': ('aes-gcm', 24, 4, 8, 1, 16),
    'aes-gcm-256': ('aes-gcm', 32, 4, 8, 1, 16),
    'chacha20-poly1305': ('chacha', 32, 4, 8, 1, 16),
    'aes-gmac-128': ('aes-gmac', 16, 4, 8, 1, 16),
    'aes-gmac-192': ('aes-gmac', 24, 4, 8, 1, 16),
    'aes-gmac-256': ('aes-gmac', 32, 4, 8, 1, 16),
}
# name -> (hash, or 'cmac' for AES-CMAC; key length, truncated ICV length)
AUTH = {
    'none': (None, 0, 0),
    'hmac-sha1-96': (hashlib.sha1, 20, 12),
    'hmac-sha256-128': (hashlib.sha256, 32, 16),
    'hmac-sha384-192': (hashlib.sha384, 48, 24),
    'hmac-sha512-256': (hashlib.sha512, 64, 32),
    'aes-cmac-96': ('cmac', 16, 12),
}


class Fail(Exception):
    pass


class Skip(Exception):
    pass


class Sa:
    def __init__(self, d):
        self.spi = int(d['spi'])
        self.enc = d['enc']
        self.auth = d.get('auth') or 'none'
        if self.enc not in ENC:
            raise SystemExit('unknown enc %r' % self.enc)
        if self.auth not in AUTH:
            raise SystemExit('unknown auth %r' % self.auth)
        (self.kind, klen, slen, self.iv_len, self.block, cicv) = ENC[self.enc]
        keymat = bytes.fromhex(d.get('enc_key') or '')
        if len(keymat) != klen + slen:
            raise SystemExit('spi 0x%08x: enc_key must be %d bytes' % (self.spi, klen + slen))
        self.key, self.salt = keymat[:klen], keymat[klen:]
        self.hash, alen, aicv = AUTH[self.auth]
        self.auth_key = bytes.fromhex(d.get('auth_key') or '')
        if len(self.auth_key) != alen:
            raise SystemExit('spi 0x%08x: auth_key must be %d bytes' % (self.spi, alen))
        if cicv and self.auth != 'none':
            raise SystemExit('spi 0x%08x: %s carries its own ICV' % (self.spi, self.enc))
        self.icv_len = cicv or aicv
        self.mode = d.get('mode', 'tunnel')
        self.esn = bool(d.get('esn', False))
        self.last = 0  # highest 64-bit sequence number seen (ESN inference)


def csum(data, init=0):
    if len(data) % 2:
        data += b'\0'
    s = init + sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_ok(v6, src, dst, proto, l4):
    """UDP checksum of an IPv4/IPv6 datagram: 0 (IPv4 only) or correct."""
    if proto != 17 or len(l4) < 8:
        return True
    if struct.unpack('!H', l4[6:8])[0] == 0:
        return not v6
    pseudo = src + dst + (struct.pack('!LxxxB', len(l4), proto) if v6 else struct.pack('!xBH', proto, len(l4)))
    return csum(pseudo + l4) == 0xFFFF


def read_pcap(path):
    b = open(path, 'rb').read()
    magic = b[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        e = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        e = '>'
    else:
        raise SystemExit('%s: not a pcap file' % path)
    linktype = struct.unpack(e + 'L', b[20:24])[0] & 0x0FFFFFFF
    off, out = 24, []
    while off + 16 <= len(b):
        incl, orig = struct.unpack(e + 'LL', b[off + 8:off + 16])
        frame = b[off + 16:off + 16 + incl]
        off += 16 + incl
        if incl != orig:
            out.append(None)  # truncated capture
        elif linktype in (101, 12, 14, 228, 229):
            out.append(frame)
        elif linktype == 1 and len(frame) >= 14 and frame[12:14] in (b'\x08\x00', b'\x86\xdd'):
            out.append(frame[14:])
        else:
            out.append(b'')
    return out


def parse_outer(pkt, ports):
    """Returns (v6, ip header length incl. extension headers, offset of the next-header
    field, packet bounded by the IP length, ESP bytes, 'udp a->b' or '')."""
    if not pkt:
        raise Skip('not IP')
    v = pkt[0] >> 4
    if v == 4:
        if len(pkt) < 20:
            raise Fail('short IPv4 header')
        ihl = (pkt[0] & 15) * 4
        tot = struct.unpack('!H', pkt[2:4])[0]
        if ihl < 20 or tot < ihl or tot > len(pkt):
            raise Fail('bad IPv4 lengths ihl=%d total=%d captured=%d' % (ihl, tot, len(pkt)))
        if csum(pkt[:ihl]) != 0xFFFF:
            raise Fail('bad outer IPv4 header checksum')
        if struct.unpack('!H', pkt[6:8])[0] & 0x3FFF:
            raise Skip('IPv4 fragment')
        pkt, hl, nh_off, proto, v6 = pkt[:tot], ihl, 9, pkt[9], False
        src, dst = pkt[12:16], pkt[16:20]
    elif v == 6:
        if len(pkt) < 40:
            raise Fail('short IPv6 header')
        tot = 40 + struct.unpack('!H', pkt[4:6])[0]
        if tot > len(pkt):
            raise Fail('IPv6 payload length exceeds the capture')
        pkt = pkt[:tot]
        proto, hl, nh_off = pkt[6], 40, 6
        while proto in (0, 43, 60):
            nh_off = hl
            proto = pkt[hl]
            hl += (pkt[hl + 1] + 1) * 8
        if proto == 44:
            raise Skip('IPv6 fragment')
        v6 = True
        src, dst = pkt[8:24], pkt[24:40]
    else:
        raise Skip('not IP')
    if proto == 50:
        return v6, hl, nh_off, pkt, pkt[hl:], ''
    if proto == 17 and len(pkt) >= hl + 8:
        sport, dport, ulen = struct.unpack('!HHH', pkt[hl:hl + 6])
        if sport not in ports and dport not in ports:
            raise Skip('UDP %d->%d' % (sport, dport))
        if ulen != len(pkt) - hl:
            raise Fail('UDP length %d, datagram is %d bytes' % (ulen, len(pkt) - hl))
        if not l4_ok(v6, src, dst, 17, pkt[hl:]):
            raise Fail('bad outer UDP checksum %s' % pkt[hl + 6:hl + 8].hex())
        data = pkt[hl + 8:]
        if data == b'\xff':
            raise Skip('NAT-keepalive')
        if data[:4] == b'\0\0\0\0':
            raise Skip('IKE (non-ESP marker)')
        return v6, hl, nh_off, pkt, data, 'udp %d->%d ' % (sport, dport)
    raise Skip('IP protocol %d' % proto)


def authenticate_decrypt(sa, esp, hi):
    """Returns the plaintext (payload + padding + trailer) or raises InvalidTag."""
    hdr, body = esp[:8], esp[8:]
    iv = body[:sa.iv_len]
    ct = body[sa.iv_len:len(body) - sa.icv_len]
    icv = body[len(body) - sa.icv_len:]
    seqhi = struct.pack('!L', hi) if sa.esn else b''
    if sa.kind in ('aes-gcm', 'chacha', 'aes-gmac'):
        aad = hdr[:4] + seqhi + hdr[4:8]  # RFC 4106 §5, RFC 4543 §3.3, RFC 7634 §2.1
        nonce = sa.salt + iv
        if sa.kind == 'aes-gcm':
            return AESGCM(sa.key).decrypt(nonce, ct + icv, aad)
        if sa.kind == 'chacha':
            return ChaCha20Poly1305(sa.key).decrypt(nonce, ct + icv, aad)
        AESGCM(sa.key).decrypt(nonce, icv, aad + iv + ct)  # GMAC: all of it is AAD
        return ct
    if sa.hash is not None:  # none: confidentiality-only ESP (RFC 4303 §3.2), nothing to check
        signed = esp[:len(esp) - sa.icv_len] + seqhi
        if sa.hash == 'cmac':
            c = CMAC(algorithms.AES(sa.auth_key))
            c.update(signed)
            want = c.finalize()[:sa.icv_len]
        else:
            want = hmac.new(sa.auth_key, signed, sa.hash).digest()[:sa.icv_len]
        if not hmac.compare_digest(want, icv):
            raise InvalidTag()
    if sa.kind == 'null':
        return ct
    if len(ct) % sa.block:
        raise Fail('ciphertext length %d is not a multiple of %d' % (len(ct), sa.block))
    algo = algorithms.AES(sa.key) if sa.kind == 'aes-cbc' else algorithms.TripleDES(sa.key)
    d = Cipher(algo, modes.CBC(iv)).decryptor()
    return d.update(ct) + d.finalize()


def check_inner(v, p):
    """A decapsulated IP packet: lengths, IPv4 header checksum, UDP checksum."""
    if v == 4:
        if len(p) < 20 or p[0] >> 4 != 4:
            raise Fail('inner packet is not IPv4')
        ihl = (p[0] & 15) * 4
        if struct.unpack('!H', p[2:4])[0] != len(p):
            raise Fail('inner IPv4 total length %d, payload is %d bytes' % (struct.unpack('!H', p[2:4])[0], len(p)))
        if csum(p[:ihl]) != 0xFFFF:
            raise Fail('bad inner IPv4 header checksum')
        if not struct.unpack('!H', p[6:8])[0] & 0x3FFF and not l4_ok(False, p[12:16], p[16:20], p[9], p[ihl:]):
            raise Fail('bad inner UDP checksum')
    else:
        if len(p) < 40 or p[0] >> 4 != 6:
            raise Fail('inner packet is not IPv6')
        if 40 + struct.unpack('!H', p[4:6])[0] != len(p):
            raise Fail('inner IPv6 payload length does not match')
        if not l4_ok(True, p[8:24], p[24:40], p[6], p[40:]):
            raise Fail('bad inner UDP checksum')


def check_packet(sa, v6, hl, nh_off, pkt, esp):
    if len(esp) < 8 + sa.iv_len + 2 + sa.icv_len:
        raise Fail('ESP packet too short (%d bytes)' % len(esp))
    spi, seq = struct.unpack('!LL', esp[:8])
    if sa.esn:
        cur = sa.last >> 32
        cands = [cur, cur + 1] if cur < 0xFFFFFFFF else [cur]
        if cur > 0:
            cands.append(cur - 1)
    else:
        cands = [0]
    pt = None
    for hi in cands:
        try:
            pt = authenticate_decrypt(sa, esp, hi)
            break
        except InvalidTag:
            continue
    if pt is None:
        raise Fail('bad ICV (%s/%s%s)' % (sa.enc, sa.auth, ', ESN high bits %s' % cands if sa.esn else ''))
    seq64 = (hi << 32) | seq
    if sa.esn:
        sa.last = max(sa.last, seq64)
    elif seq == 0:
        raise Fail('sequence number 0 is never sent (RFC 4303 3.3.3)')
    if len(pt) < 2:
        raise Fail('plaintext shorter than the ESP trailer')
    if len(pt) % 4:
        raise Fail('payload + padding + trailer is %d bytes, not 4-byte aligned (RFC 4303 2.4)' % len(pt))
    padlen, nh = pt[-2], pt[-1]
    if padlen + 2 > len(pt):
        raise Fail('bad pad length %d' % padlen)
    pad = pt[len(pt) - 2 - padlen:len(pt) - 2]
    if pad != bytes(range(1, padlen + 1)):
        raise Fail('bad padding %s (RFC 4303 2.4: 1, 2, 3, ...)' % pad.hex())
    payload = pt[:len(pt) - 2 - padlen]
    if sa.mode == 'tunnel':
        if nh == 4:
            check_inner(4, payload)
        elif nh == 41:
            check_inner(6, payload)
        elif nh != 59:
            raise Fail('tunnel mode but next header %d' % nh)
        inner = payload
    else:
        hdr = bytearray(pkt[:hl])
        hdr[nh_off] = nh
        if v6:
            struct.pack_into('!H', hdr, 4, hl - 40 + len(payload))
            inner = bytes(hdr) + payload
            check_inner(6, inner)
        else:
            struct.pack_into('!H', hdr, 2, hl + len(payload))
            hdr[10:12] = b'\0\0'
            struct.pack_into('!H', hdr, 10, 0xFFFF - csum(bytes(hdr)))
            inner = bytes(hdr) + payload
            check_inner(4, inner)
    return spi, seq64, nh, padlen, inner


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--pcap', required=True)
    ap.add_argument('--sas', required=True, help='JSON list of SAs')
    ap.add_argument('--udp-port', type=int, action='append', help='ESP-in-UDP port (default 4500, 2746)')
    a = ap.parse_args()
    ports = set(a.udp_port or [4500, 2746])
    sas = {}
    for d in json.load(open(a.sas)):
        sa = Sa(d)
        sas[sa.spi] = sa
    passed = failed = 0
    for i, pkt in enumerate(read_pcap(a.pcap), 1):
        try:
            if pkt is None:
                raise Fail('truncated in the capture')
            v6, hl, nh_off, pkt, esp, encap = parse_outer(pkt, ports)
            if len(esp) < 8:
                raise Fail('ESP shorter than its header')
            spi = struct.unpack('!L', esp[:4])[0]
            if spi not in sas:
                raise Fail('spi=0x%08x: no SA' % spi)
            spi, seq, nh, padlen, inner = check_packet(sas[spi], v6, hl, nh_off, pkt, esp)
        except Skip as e:
            print('#%d skip: %s' % (i, e))
            continue
        except Fail as e:
            failed += 1
            print('#%d FAIL: %s' % (i, e))
            continue
        passed += 1
        print('#%d %s%sspi=0x%08x seq=%d nh=%d padlen=%d ok inner=%s' % (
            i, 'ipv6 ' if v6 else 'ipv4 ', encap, spi, seq, nh, padlen, inner.hex()))
    print('%d passed, %d failed' % (passed, failed))
    return 0 if passed and not failed else 1


if __name__ == '__main__':
    sys.exit(main())
