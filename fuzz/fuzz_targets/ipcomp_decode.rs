//! The IPComp decompressors on arbitrary bytes: LZS (xsec's own decoder, RFC 1974 format)
//! and DEFLATE (miniz_oxide), each into a bounded buffer.
//!
//! Invariants: no panic, no allocation beyond the buffer given (a stream that would expand
//! past it is `decompress_too_big`, anything malformed `decompress_failed`); whatever LZS
//! decodes, xsec's LZS encoder compresses back into a stream that decodes to the same bytes;
//! and the input itself, compressed by either algorithm, decompresses to itself.
//!
//! Input: [selector, bytes...]: selector bit0 chooses the room given (64 or 2048 bytes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use xsec_dataplane::DropReason;
use xsec_dataplane::ipcomp::{Codecs, lzs};
use xsec_dataplane::sa::CompAlg;

fn run(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let room = if sel & 1 == 0 { 64 } else { 2048 };
    CODECS.with(|c| check(&mut c.borrow_mut(), body, room));
}

thread_local! {
    // made once: the compressor's tables are large
    static CODECS: std::cell::RefCell<Codecs> = std::cell::RefCell::new(Codecs::new());
}

fn check(codecs: &mut Codecs, body: &[u8], room: usize) {
    // LZS: decode, and if it decodes, the encoder's stream decodes to the same bytes
    let mut out = vec![0u8; room];
    match lzs::decompress(body, &mut out) {
        Ok(n) => {
            let plain = out[..n].to_vec();
            let mut enc = lzs::Encoder::new();
            let mut z = vec![0u8; n * 9 / 8 + 16];
            let m = enc
                .compress(&plain, &mut z)
                .expect("9/8 of the input always fits");
            let mut back = vec![0u8; n];
            assert_eq!(lzs::decompress(&z[..m], &mut back), Ok(n));
            assert_eq!(back, plain);
        }
        Err(_) => {}
    }
    // both algorithms through the engine's codecs, bounded
    for alg in [CompAlg::Lzs, CompAlg::Deflate] {
        match codecs.decompress(alg, body, room) {
            Ok(n) => assert!(n <= room),
            Err(e) => assert!(
                matches!(
                    e,
                    DropReason::DecompressFailed | DropReason::DecompressTooBig
                ),
                "{alg:?}: {e:?}"
            ),
        }
        // the input as a payload: compressed (if it shrinks), it decompresses to itself
        if let Some(c) = codecs.compress(alg, body, body.len()) {
            let z = codecs.output(c).to_vec();
            let n = codecs
                .decompress(alg, &z, body.len())
                .unwrap_or_else(|e| panic!("{alg:?}: own stream refused: {e:?}"));
            assert_eq!(codecs.output(n), body, "{alg:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));
