#!/usr/bin/python3
"""ipcomp_check.py - IPComp DEFLATE (RFC 2394) with Python's zlib, for xsec's interop tests.

    ipcomp_check.py SPEC.json

SPEC.json: {"verify": [{"wire": "<hex>", "payload": "<hex>"}],
            "make":   [{"payload": "<hex>", "level": 6}]}

"verify": IPComp packets xsec built (IPv4 or IPv6, transport mode or tunnel: the IPComp
header follows the IP header). Each packet's IPComp payload is inflated with zlib as raw
DEFLATE (wbits -15: no zlib header, RFC 2394 §2) and must equal "payload" (the bytes xsec
compressed: the transport payload, or the whole inner packet in tunnel mode); the IP
header's protocol / next header must be 108 and the IPComp flags 0. Prints
    #N ok cpi=C nh=NH
    #N FAIL: <reason>
"make": raw DEFLATE of each payload at the given level (zlib's own encoder); prints
    #N deflate=<hex>
then "N passed, N failed". Exit 0 only if every packet passed.
"""
import json
import struct
import sys
import zlib


def ipcomp_of(b):
    if b[0] >> 4 == 4:
        hl = (b[0] & 15) * 4
        total = struct.unpack('!H', b[2:4])[0]
        return b[9], b[hl:total]
    nh = b[6]
    return nh, b[40:40 + struct.unpack('!H', b[4:6])[0]]


def main():
    spec = json.load(open(sys.argv[1]))
    n = passed = failed = 0
    for item in spec.get('verify', []):
        n += 1
        wire = bytes.fromhex(item['wire'])
        want = bytes.fromhex(item['payload'])
        proto, ipc = ipcomp_of(wire)
        try:
            if proto != 108:
                raise ValueError('protocol %d, not IPComp' % proto)
            nh, flags, cpi = struct.unpack('!BBH', ipc[:4])
            if flags != 0:
                raise ValueError('flags %d' % flags)
            d = zlib.decompressobj(-15)
            got = d.decompress(ipc[4:]) + d.flush()
            if not d.eof or d.unused_data:
                raise ValueError('not one complete raw DEFLATE stream')
            if got != want:
                raise ValueError('inflates to %d bytes that differ from the %d sent' % (len(got), len(want)))
            print('#%d ok cpi=%d nh=%d' % (n, cpi, nh))
            passed += 1
        except (ValueError, zlib.error) as e:
            print('#%d FAIL: %s' % (n, e))
            failed += 1
    for item in spec.get('make', []):
        n += 1
        c = zlib.compressobj(item.get('level', 6), zlib.DEFLATED, -15)
        z = c.compress(bytes.fromhex(item['payload'])) + c.flush()
        print('#%d deflate=%s' % (n, z.hex()))
        passed += 1
    print('%d passed, %d failed' % (passed, failed))
    sys.exit(0 if failed == 0 else 1)


if __name__ == '__main__':
    main()
