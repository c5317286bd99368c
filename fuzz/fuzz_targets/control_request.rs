//! The control socket's request decoding (`xsecd::control::request::decode`): any bytes give
//! a request or an error of the right kind — never a panic. Not JSON, or not an object:
//! `bad-json`; a version other than 1 (or none): `version`; the `id` answered is the one
//! asked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xsecd::control::request::decode;

fuzz_target!(|data: &[u8]| {
    let (id, r) = decode(data);
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    match parsed {
        Some(Value::Object(o)) => {
            assert_eq!(id, o.get("id").and_then(Value::as_u64).unwrap_or(0));
            if o.get("version").and_then(Value::as_u64) != Some(1) {
                assert_eq!(r.map(|_| ()).unwrap_err().0, "version");
            } else if let Err(e) = r {
                assert!(
                    ["bad-args", "unknown-command"].contains(&e.0),
                    "{e:?} for {o:?}"
                );
            }
        }
        _ => {
            assert_eq!(id, 0);
            assert_eq!(r.map(|_| ()).unwrap_err().0, "bad-json");
        }
    }
});
