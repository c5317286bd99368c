//! The control socket's request decoding (`xsecd::control::request::decode`): any bytes give
//! a request or an error of the right kind — never a panic. Not JSON, or not an object:
//! `bad-json`; a version other than 2 (or none): `version`; the `id` answered is the one
//! asked. A store operation (`add-sa`, `batch`, ...) is then turned into the store's
//! operations (SA objects, keys from hex, selectors, policies): refused as `bad-args` or
//! built, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xsecd::control::request::decode;
use xsecd::control::store_ops;

fuzz_target!(|data: &[u8]| {
    let (id, r) = decode(data);
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    match parsed {
        Some(Value::Object(o)) => {
            assert_eq!(id, o.get("id").and_then(Value::as_u64).unwrap_or(0));
            if o.get("version").and_then(Value::as_u64) != Some(2) {
                assert_eq!(r.map(|_| ()).unwrap_err().0, "version");
            } else {
                match r {
                    Err(e) => assert!(
                        ["bad-args", "unknown-command"].contains(&e.0),
                        "{e:?} for {o:?}"
                    ),
                    Ok(req) if req.is_store_op() => {
                        if let Err(e) = store_ops(req) {
                            assert_eq!(e.0, "bad-args", "{e:?}");
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
        _ => {
            assert_eq!(id, 0);
            assert_eq!(r.map(|_| ()).unwrap_err().0, "bad-json");
        }
    }
});
