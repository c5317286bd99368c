#!/usr/bin/python3
"""ah_check.py - AH (RFC 4302) both ways with scapy's implementation, for xsec's interop tests.

    ah_check.py SPEC.json

SPEC.json:
    {"sas": [{"spi": 4096, "auth": "hmac-sha1-96", "key": "<hex>",
              "mode": "tunnel" | "transport", "outer_src": "10.0.0.1",
              "outer_dst": "10.0.0.2", "esn": false}],
     "verify": [{"sa": 0, "wire": "<hex>", "esn_hi": 0}],
     "make":   [{"sa": 0, "inner": "<hex>", "seq": 1, "esn_hi": 0}]}
auth: hmac-sha1-96 | hmac-sha256-128 | hmac-sha384-192 | hmac-sha512-256 | aes-cmac-96 |
      aes-gmac-128 | aes-gmac-192 | aes-gmac-256 (RFC 4543 §4: key ‖ 4-byte salt)

scapy has no AES-GMAC for AH; AhGmac below adds it to scapy's table from the RFC's text,
with AES-GCM from the `cryptography` package: the tag is AES-GCM's over an empty
plaintext, the AAD is the packet as scapy's zero_mutable_fields shows it but with the IV
(the first 8 bytes of the Authentication Data) kept as sent (§7: "the IV is included in
the additional authenticated data"), then the ESN high bits; the nonce is salt ‖ IV. The
IV of a packet it makes is random. For these SAs "verify" also checks that a changed IV
fails.

"verify": AH packets xsec built. scapy's SecurityAssociation(AH).decrypt checks each ICV
and removes AH; then this script's own mutable-field check: the same packet with every
mutable field changed as routers may (IPv4 TOS, flags, TTL, checksum; IPv6 traffic class,
flow label, hop limit) must still verify, and with an immutable field changed (the source
address, the AH sequence number) must not. Prints per packet
    #N ok inner=<hex>          (the packet with AH removed, as scapy rebuilds it)
    #N FAIL: <reason>
"make": scapy protects each inner packet (tunnel: under an outer header from the SA's
addresses) with the given sequence number; prints
    #N wire=<hex>
then "N passed, N failed". Exit 0 only if every packet passed.
"""
import hmac
import json
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers import ipsec
from scapy.layers.ipsec import AH, AuthAlgo, IPSecIntegrityError, SecurityAssociation
from scapy.layers.ipsec import zero_mutable_fields
from scapy.packet import raw


class AhGmac(AuthAlgo):
    """AES-GMAC as AH's integrity algorithm (RFC 4543 §4), in scapy's AuthAlgo shape."""

    IV, TAG = 8, 16

    def __init__(self, name, key_len):
        super().__init__(name, mac=None, digestmod=None, icv_size=self.IV + self.TAG,
                         key_size=(key_len + 4,))

    def tag(self, pkt, key, iv, esn_en, esn, sending):
        clone = zero_mutable_fields(pkt.copy(), sending=sending)
        clone[AH].icv = iv + b"\0" * self.TAG
        aad = raw(clone) + (struct.pack("!L", esn) if esn_en else b"")
        # empty plaintext: encrypt() returns the tag alone
        return AESGCM(key[:-4]).encrypt(key[-4:] + iv, b"", aad)

    def sign(self, pkt, key, esn_en=False, esn=0):
        iv = os.urandom(self.IV)
        pkt[AH].icv = iv + self.tag(pkt, key, iv, esn_en, esn, True)
        return pkt

    def verify(self, pkt, key, esn_en=False, esn=0):
        ah = pkt[AH]
        if len(ah.icv) != self.icv_size:  # IPv6: 4 bytes of padding after the tag
            ah.padding = ah.icv[self.icv_size:]
            ah.icv = ah.icv[:self.icv_size]
        iv, got = ah.icv[:self.IV], ah.icv[self.IV:]
        want = self.tag(pkt, key, iv, esn_en, esn, False)
        if not hmac.compare_digest(got, want):
            raise IPSecIntegrityError("pkt_icv=%r, computed_icv=%r" % (got, want))


for _bits in (128, 192, 256):
    ipsec.AUTH_ALGOS["AES-GMAC-%d" % _bits] = AhGmac("AES-GMAC-%d" % _bits, _bits // 8)

ALGS = {
    "hmac-sha1-96": "HMAC-SHA1-96",
    "hmac-sha256-128": "SHA2-256-128",
    "hmac-sha384-192": "SHA2-384-192",
    "hmac-sha512-256": "SHA2-512-256",
    "aes-cmac-96": "AES-CMAC-96",
    "aes-gmac-128": "AES-GMAC-128",
    "aes-gmac-192": "AES-GMAC-192",
    "aes-gmac-256": "AES-GMAC-256",
}


def ip_of(b):
    return IPv6(b) if b[0] >> 4 == 6 else IP(b)


def outer(sa):
    if ":" in sa["outer_src"]:
        return IPv6(src=sa["outer_src"], dst=sa["outer_dst"])
    return IP(src=sa["outer_src"], dst=sa["outer_dst"])


def security_association(sa, esn_hi, seq=1):
    return SecurityAssociation(
        AH,
        spi=sa["spi"],
        seq_num=seq,
        auth_algo=ALGS[sa["auth"]],
        auth_key=bytes.fromhex(sa["key"]),
        tunnel_header=outer(sa) if sa["mode"] == "tunnel" else None,
        esn_en=sa.get("esn", False),
        esn=esn_hi,
    )


def verifies(sa, esn_hi, b):
    try:
        return security_association(sa, esn_hi).decrypt(ip_of(b)), None
    except IPSecIntegrityError as e:
        return None, "ICV: %s" % e
    except Exception as e:  # a packet scapy cannot parse is a failure, not a crash
        return None, "%s: %s" % (type(e).__name__, e)


def with_mutable_changed(b):
    p = bytearray(b)
    if p[0] >> 4 == 6:
        p[0] = 0x60 | 0x0B  # traffic class
        p[1] = 0x85  # and flow label
        p[2], p[3] = 0x43, 0x21
        p[7] = 1  # hop limit
        return bytes(p)
    pkt = IP(bytes(p))
    pkt.tos = 0xB8
    pkt.ttl = 2
    pkt.flags = 0 if pkt.flags else "DF"
    del pkt.chksum
    return raw(pkt)


def with_immutable_changed(b):
    p = bytearray(b)
    if p[0] >> 4 == 6:
        p[8] ^= 1  # source
        return bytes(p)
    pkt = IP(bytes(p))
    pkt.src = "192.0.2.99"
    del pkt.chksum
    return raw(pkt)


def with_seq_changed(b):
    pkt = ip_of(b)
    pkt[AH].seq ^= 1
    return raw(pkt)


def with_iv_changed(b):
    """The first byte of the Authentication Data flipped: AES-GMAC's IV."""
    pkt = ip_of(b)
    icv = bytearray(pkt[AH].icv)
    icv[0] ^= 0x80
    pkt[AH].icv = bytes(icv)
    return raw(pkt)


def main():
    spec = json.load(open(sys.argv[1]))
    sas = spec["sas"]
    passed = failed = n = 0
    for item in spec.get("verify", []):
        n += 1
        sa = sas[item["sa"]]
        hi = item.get("esn_hi", 0)
        wire = bytes.fromhex(item["wire"])
        out, err = verifies(sa, hi, wire)
        if out is None:
            print("#%d FAIL: %s" % (n, err))
            failed += 1
            continue
        _, err2 = verifies(sa, hi, with_mutable_changed(wire))
        bad1, _ = verifies(sa, hi, with_immutable_changed(wire))
        bad2, _ = verifies(sa, hi, with_seq_changed(wire))
        if sa["auth"].startswith("aes-gmac") and bad2 is None:
            bad2, _ = verifies(sa, hi, with_iv_changed(wire))
        if err2 is not None:
            print("#%d FAIL: mutable fields changed, no longer verifies (%s)" % (n, err2))
            failed += 1
        elif bad1 is not None or bad2 is not None:
            print("#%d FAIL: verifies with an immutable field changed" % n)
            failed += 1
        else:
            print("#%d ok inner=%s" % (n, raw(out).hex()))
            passed += 1
    for item in spec.get("make", []):
        n += 1
        sa = sas[item["sa"]]
        inner = ip_of(bytes.fromhex(item["inner"]))
        # the sequence number through the SA: scapy's encrypt(seq_num=0) takes 0 for "unset"
        w = security_association(sa, item.get("esn_hi", 0), item["seq"]).encrypt(inner)
        print("#%d wire=%s" % (n, raw(w).hex()))
        passed += 1
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
