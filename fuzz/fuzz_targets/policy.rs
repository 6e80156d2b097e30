//! The policy file: any text is a clear error or a policy, never a panic; a policy's
//! decision on any path is made without panicking either.
#![no_main]
use jotgate_verify::path::canonicalize;
use jotgate_verify::policy::PolicyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Key files named relative to a directory that does not exist: read errors, not reads.
    let Ok(file) = PolicyFile::parse(text, std::path::Path::new("/nonexistent-fuzz-dir")) else {
        return;
    };
    for p in ["/", "/admin/x", "/public/a/b", "/v1/orders/1"] {
        if let Ok(path) = canonicalize(p) {
            let _ = file.policy.decide("GET", &path);
        }
    }
});
