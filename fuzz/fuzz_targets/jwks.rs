//! A third party's JWKS document (fetched over the network): an error or a key set, never
//! a panic; every key taken has a kind the verifier knows.
#![no_main]
use jotgate_verify::keyset::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = KeySet::from_jwks(data) {
        let _ = format!("{parsed:?}");
    }
});
