//! Random bytes from the operating system via aws-lc-rs, and their base64url form.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` bytes from the system CSPRNG.
pub fn bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    // aws-lc-rs' RNG only fails if the OS has no entropy source; nothing sensible can go on.
    aws_lc_rs::rand::fill(&mut out).expect("the operating system's random source failed");
    out
}

/// `n` random bytes as unpadded base64url.
pub fn token(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(bytes(n))
}
