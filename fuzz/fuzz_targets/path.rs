//! The path canonicaliser: never panics; its output is canonical (a fixed point), starts
//! with `/`, and holds none of what servers read differently.
#![no_main]
use jotgate_verify::path::{canonicalize, require_canonical};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = canonicalize(s) else {
        return;
    };
    let out = c.as_str();
    assert!(out.starts_with('/'), "{out:?}");
    for bad in [";", "\\\\", "%2F", "%2f", "%5C", "%25", "%2E", "%2e", "//", "/./", "/../"] {
        assert!(!out.contains(bad), "{s:?} -> {out:?} holds {bad:?}");
    }
    assert!(!out.ends_with("/..") && !out.ends_with("/."), "{s:?} -> {out:?}");
    assert!(out.bytes().all(|b| b.is_ascii_graphic()), "{s:?} -> {out:?}");
    // A fixed point: the canonical spelling is accepted as is and decides the same.
    let again = require_canonical(out).unwrap_or_else(|e| panic!("{s:?} -> {out:?}: {e}"));
    assert_eq!(again, c, "{s:?}");
});
